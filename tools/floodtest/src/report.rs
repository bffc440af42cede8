//! Counters and latency histograms a flood loop reports once a second, their wire format from
//! a child process to its parent, and the run summary.
//!
//! Wire format on the child's stdout, one frame per report:
//! `len: u32 LE` (bytes that follow), `final: u8`, `COUNTER_COUNT` x `u64 LE` cumulative
//! counters, then the interval latency histogram in hdrhistogram's V2 serialization.

use std::io::{self, Read, Write};

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::Serialize;
use tools_common::latency::Percentiles;

/// Cumulative counts of one flood loop (or, summed, of the whole run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Sockets created and connect() started.
    pub opened: u64,
    /// Streams that got `200` and a complete header block (the seed's `Connected`).
    pub connected: u64,
    /// Established streams that ended afterwards, gracefully or not (the seed's `Closed`).
    pub closed: u64,
    /// Of `closed`: ended with the terminating chunk (server's graceful shutdown).
    pub closed_graceful: u64,
    /// Non-empty chunks received (the seed's `Chunks`).
    pub chunks: u64,
    /// Messages received (one per chunk for /test, one per event for /events).
    pub messages: u64,
    /// Messages without a `ts=` stamp (not in the latency histogram).
    pub messages_unstamped: u64,
    /// Socket creation, bind or connect failed.
    pub errors_connect: u64,
    /// EOF or reset before the header block was complete.
    pub errors_early_close: u64,
    /// A status other than 200.
    pub errors_status: u64,
    /// Malformed status line or chunked/SSE framing.
    pub errors_framing: u64,
    /// A read error (reset) on an established stream.
    pub errors_read: u64,
    /// Failed attempts tried again (`--retry-ms`); each failure also counts in its error.
    pub retries: u64,
}

pub const COUNTER_COUNT: usize = 13;

impl Counters {
    fn to_array(self) -> [u64; COUNTER_COUNT] {
        [
            self.opened,
            self.connected,
            self.closed,
            self.closed_graceful,
            self.chunks,
            self.messages,
            self.messages_unstamped,
            self.errors_connect,
            self.errors_early_close,
            self.errors_status,
            self.errors_framing,
            self.errors_read,
            self.retries,
        ]
    }

    fn from_array(a: [u64; COUNTER_COUNT]) -> Self {
        Counters {
            opened: a[0],
            connected: a[1],
            closed: a[2],
            closed_graceful: a[3],
            chunks: a[4],
            messages: a[5],
            messages_unstamped: a[6],
            errors_connect: a[7],
            errors_early_close: a[8],
            errors_status: a[9],
            errors_framing: a[10],
            errors_read: a[11],
            retries: a[12],
        }
    }

    pub fn add(&mut self, other: &Counters) {
        let mut a = self.to_array();
        for (x, y) in a.iter_mut().zip(other.to_array()) {
            *x += y;
        }
        *self = Counters::from_array(a);
    }

    pub fn errors(&self) -> u64 {
        self.errors_connect
            + self.errors_early_close
            + self.errors_status
            + self.errors_framing
            + self.errors_read
    }

    /// Streams established and not ended.
    pub fn open(&self) -> u64 {
        self.connected - self.closed
    }
}

/// One report from a flood loop: cumulative counters and the latencies recorded since the
/// previous report.
#[derive(Clone, Debug)]
pub struct Report {
    pub counters: Counters,
    pub latency: Histogram<u64>,
    /// The loop has stopped; this is its last report.
    pub last: bool,
}

pub fn write_frame(out: &mut impl Write, report: &Report) -> io::Result<()> {
    let mut body = Vec::with_capacity(256);
    body.push(u8::from(report.last));
    for v in report.counters.to_array() {
        body.extend_from_slice(&v.to_le_bytes());
    }
    V2Serializer::new()
        .serialize(&report.latency, &mut body)
        .map_err(|e| io::Error::other(format!("histogram serialization: {e:?}")))?;
    out.write_all(&(body.len() as u32).to_le_bytes())?;
    out.write_all(&body)?;
    out.flush()
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame(input: &mut impl Read) -> io::Result<Option<Report>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut body)?;
    let counters_end = 1 + 8 * COUNTER_COUNT;
    if body.len() < counters_end {
        return Err(io::Error::other("short report frame"));
    }
    let mut a = [0u64; COUNTER_COUNT];
    for (k, v) in a.iter_mut().enumerate() {
        let at = 1 + 8 * k;
        *v = u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    }
    let latency: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &body[counters_end..])
        .map_err(|e| io::Error::other(format!("histogram deserialization: {e:?}")))?;
    Ok(Some(Report {
        counters: Counters::from_array(a),
        latency,
        last: body[0] != 0,
    }))
}

/// The run's final summary, printed as one JSON line and optionally written to a file.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub tool: &'static str,
    pub target_connections: u64,
    pub procs: u32,
    pub elapsed_s: f64,
    /// Seconds from start until every target connection was established (None if never).
    pub all_connected_s: Option<f64>,
    /// Most streams open at one time, as seen at report times.
    pub peak_open: u64,
    pub counters: Counters,
    pub errors: u64,
    pub latency_us: Percentiles,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tools_common::latency::new_histogram;

    #[test]
    fn frame_round_trip() {
        let mut latency = new_histogram();
        for v in [1u64, 250, 300, 1_000_000] {
            latency.record(v).unwrap();
        }
        let counters = Counters::from_array(std::array::from_fn(|k| k as u64 * 7 + 1));
        let report = Report {
            counters,
            latency: latency.clone(),
            last: true,
        };
        let mut wire = Vec::new();
        write_frame(&mut wire, &report).unwrap();
        write_frame(&mut wire, &report).unwrap();
        let mut input = &wire[..];
        for _ in 0..2 {
            let back = read_frame(&mut input).unwrap().unwrap();
            assert_eq!(back.counters, counters);
            assert!(back.last);
            assert_eq!(back.latency, latency);
        }
        assert!(read_frame(&mut input).unwrap().is_none());
    }

    #[test]
    fn counters_add() {
        let mut a = Counters {
            connected: 3,
            closed: 1,
            errors_read: 2,
            ..Counters::default()
        };
        a.add(&a.clone());
        assert_eq!(a.connected, 6);
        assert_eq!(a.open(), 4);
        assert_eq!(a.errors(), 4);
    }
}
