//! msggen: publishes stamped messages to comet's publish API at a steady rate.
//!
//! The seed's `start(Num, Interval, Max)` runs `Num` generators, each sending one message to a
//! random id in 1..Max every `Interval` ms. Generator `g` fires at `g * I / G + k * I`, so all
//! of them together are one evenly spaced stream at `G * 1000 / I` messages per second; that
//! is what this tool sends, over a few keep-alive connections with pipelined requests (or the
//! batch endpoint with `--batch`), rather than one connection per generator.
//!
//! Every message starts with `ts=<unix epoch microseconds> ` (the time it was generated), which
//! floodtest turns into delivery latency.
//!
//! A request answered `503` (comet in a cluster whose JetStream cannot store it now), or lost
//! with its connection, is sent again after `Retry-After` or a backoff (`tools_common::retry`),
//! at most `--attempts-max` tries in all; each request carries an `Idempotency-Key`, so a
//! retried one is stored once.
//!
//! # Layout
//!
//! - [`encode_single`], [`encode_batch`]: request bytes (pure).
//! - `run`: one mio loop over the publish connections.
//!
//! From `tools_common`: the schedule of due messages (`clock::Schedule`), the clock the stamps
//! come from, and the publish answers' parser (`response::Answer`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;
use tools_common::clock::{epoch_s, epoch_us, Schedule};
use tools_common::response::Answer;
use tools_common::retry;

#[derive(Parser, Debug, Clone)]
#[command(about = "Send stamped messages to random ids through comet's publish API")]
struct Opts {
    /// The server's publish address.
    #[arg(long, default_value = "127.0.0.1:8001")]
    target: SocketAddr,
    /// Generators (the seed's Num).
    #[arg(long, default_value_t = 100)]
    generators: u64,
    /// Milliseconds between two messages of one generator (the seed's Interval).
    #[arg(long, default_value_t = 100.0)]
    interval_ms: f64,
    /// Messages per generator; 0 = until --duration ends.
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Ids are drawn uniformly from 1..=max-id (the seed's Max).
    #[arg(long, default_value_t = 10_000)]
    max_id: u64,
    /// Messages per second in all; replaces --generators/--interval-ms.
    #[arg(long)]
    rate: Option<f64>,
    /// How long to send (e.g. 60s, 10m, 24h).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Message size in bytes (the stamp counts; at least the stamp is sent).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Keep-alive connections to the publish port.
    #[arg(long, default_value_t = 2)]
    conns: usize,
    /// Requests in flight per connection at most (pipelining depth).
    #[arg(long, default_value_t = 256)]
    pipeline_max: usize,
    /// Use `POST /send` with up to this many `<id> <message>` lines per request (0 = one
    /// `POST /send/<id>` per message).
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// How long to wait for outstanding answers after sending stops.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Random seed for ids (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Write the final summary JSON here too (it is always printed as the last stdout line).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write one TSV row per second.
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// Tries per request at most: a 503 (or a lost connection) is retried after Retry-After
    /// or a backoff, with the same Idempotency-Key (1 = never retry).
    #[arg(long, default_value_t = 10)]
    attempts_max: u32,
}

/// Appends the message text: `ts=<us> ` then `x` up to `size` bytes.
fn write_message(out: &mut Vec<u8>, ts_us: u64, size: usize) {
    let start = out.len();
    write!(out, "ts={ts_us} ").expect("write to Vec");
    let filler = size.saturating_sub(out.len() - start);
    out.resize(out.len() + filler, b'x');
}

/// The `Idempotency-Key` header line, if any.
fn key_header(key: Option<&str>) -> String {
    key.map(|k| format!("Idempotency-Key: {k}\r\n"))
        .unwrap_or_default()
}

/// `POST /send/<id>` with the message as body.
fn encode_single(
    out: &mut Vec<u8>,
    host: &str,
    key: Option<&str>,
    id: u64,
    ts_us: u64,
    size: usize,
) {
    let mut body = Vec::with_capacity(size.max(24));
    write_message(&mut body, ts_us, size);
    write!(
        out,
        "POST /send/{id} HTTP/1.1\r\nHost: {host}\r\n{}Content-Length: {}\r\n\r\n",
        key_header(key),
        body.len()
    )
    .expect("write to Vec");
    out.extend_from_slice(&body);
}

/// `POST /send` with one `<id> <message>` line per message.
fn encode_batch(
    out: &mut Vec<u8>,
    host: &str,
    key: Option<&str>,
    ids: &[u64],
    ts_us: u64,
    size: usize,
) {
    let mut body = Vec::with_capacity(ids.len() * (size + 12));
    for &id in ids {
        write!(body, "{id} ").expect("write to Vec");
        write_message(&mut body, ts_us, size);
        body.push(b'\n');
    }
    write!(
        out,
        "POST /send HTTP/1.1\r\nHost: {host}\r\n{}Content-Length: {}\r\n\r\n",
        key_header(key),
        body.len()
    )
    .expect("write to Vec");
    out.extend_from_slice(&body);
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Totals {
    /// Messages written to a connection.
    sent: u64,
    /// Messages the server answered 2xx for.
    accepted: u64,
    /// Messages answered otherwise, or lost with their connection, after every try.
    failed: u64,
    /// Messages sent again (after a 503 or a lost connection).
    retried: u64,
    /// Sum of "connections" over the answers: deliveries the server promised.
    connections: u64,
    requests: u64,
}

#[derive(Debug, Serialize)]
struct Summary {
    tool: &'static str,
    target_rate: f64,
    elapsed_s: f64,
    send_s: f64,
    #[serde(flatten)]
    totals: Totals,
    /// Messages due but not sent because every connection was at --pipeline-max.
    behind_at_end: u64,
    /// Most the sender fell behind its schedule, in ms.
    lag_max_ms: f64,
    /// Requests without an answer when the run ended.
    unanswered: u64,
}

struct Conn {
    stream: TcpStream,
    connected: bool,
    out: Vec<u8>,
    input: Vec<u8>,
    /// Each request in flight, oldest first.
    in_flight: VecDeque<Request>,
    dead: bool,
}

/// A request as sent, to send again if it must be.
struct Request {
    /// Messages it carries.
    messages: u32,
    /// Its bytes (kept only when it may be retried).
    bytes: Vec<u8>,
    /// Tries made.
    attempt: u32,
}

/// Requests to send again, each when due.
#[derive(Default)]
struct Retries {
    queue: VecDeque<(Instant, Request)>,
    attempts_max: u32,
    rng: fastrand::Rng,
}

impl Retries {
    /// Queues `request` again, or counts it failed once its tries are spent.
    fn again(&mut self, request: Request, retry_after_s: Option<u64>, totals: &mut Totals) {
        let after = retry_after_s.map(Duration::from_secs);
        let delay = if request.bytes.is_empty() {
            None
        } else {
            retry::delay(request.attempt, self.attempts_max, after, self.rng.f64())
        };
        match delay {
            Some(delay) => {
                totals.retried += u64::from(request.messages);
                self.queue.push_back((Instant::now() + delay, request));
            }
            None => totals.failed += u64::from(request.messages),
        }
    }

    /// The next request due by `now`.
    fn due(&mut self, now: Instant) -> Option<Request> {
        let i = self.queue.iter().position(|(at, _)| *at <= now)?;
        self.queue.remove(i).map(|(_, r)| r)
    }

    fn next_at(&self) -> Option<Instant> {
        self.queue.iter().map(|(at, _)| *at).min()
    }
}

impl Conn {
    fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what is there and settles every complete answer.
    fn read(&mut self, totals: &mut Totals, retries: &mut Retries) -> io::Result<()> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let mut used = 0;
        while let Some(answer) = Answer::parse(&self.input[used..]).map_err(io::Error::other)? {
            used += answer.consumed;
            let request = self
                .in_flight
                .pop_front()
                .ok_or_else(|| io::Error::other("answer without a request"))?;
            let messages = u64::from(request.messages);
            if (200..300).contains(&answer.status) {
                totals.accepted += messages;
                totals.connections += answer.connections;
            } else if retry::retryable(answer.status) {
                retries.again(request, answer.retry_after_s, totals);
            } else {
                totals.failed += messages;
            }
        }
        self.input.drain(..used);
        Ok(())
    }
}

fn main() {
    let opts = Opts::parse();
    match run(&opts) {
        Ok(summary) => {
            let json = serde_json::to_string(&summary).expect("summary serializes");
            if let Some(path) = &opts.json {
                if let Err(e) = std::fs::write(path, format!("{json}\n")) {
                    eprintln!("msggen: {}: {e}", path.display());
                }
            }
            println!("{json}");
            if summary.totals.failed > 0 || summary.unanswered > 0 {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("msggen: {e}");
            std::process::exit(1);
        }
    }
}

fn run(opts: &Opts) -> Result<Summary, String> {
    let rate = opts
        .rate
        .unwrap_or(opts.generators as f64 * 1000.0 / opts.interval_ms);
    if !rate.is_finite()
        || rate <= 0.0
        || opts.max_id == 0
        || opts.conns == 0
        || opts.pipeline_max == 0
    {
        return Err("rate, --max-id, --conns and --pipeline-max must be positive".into());
    }
    let schedule = Schedule::new(rate, (opts.count > 0).then(|| opts.count * opts.generators));
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    // Ids need to be spread, not secret.
    let mut rng = fastrand::Rng::with_seed(opts.seed.unwrap_or_else(|| fastrand::u64(..)));
    let host = opts.target.to_string();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut conns = Vec::with_capacity(opts.conns);
    for k in 0..opts.conns {
        let mut stream = TcpStream::connect(opts.target).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        poll.registry()
            .register(
                &mut stream,
                Token(k),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| e.to_string())?;
        conns.push(Conn {
            stream,
            connected: false,
            out: Vec::new(),
            input: Vec::new(),
            in_flight: VecDeque::new(),
            dead: false,
        });
    }
    let mut stats_file = match &opts.stats_file {
        Some(path) => {
            let mut f =
                BufWriter::new(File::create(path).map_err(|e| format!("{}: {e}", path.display()))?);
            writeln!(
                f,
                "# elapsed_s\tepoch_s\tsent\taccepted\tfailed\tconnections\tsent_per_s"
            )
            .map_err(|e| e.to_string())?;
            Some(f)
        }
        None => None,
    };
    let mut totals = Totals::default();
    let mut retries = Retries {
        attempts_max: opts.attempts_max,
        rng: fastrand::Rng::with_seed(rng.u64(..)),
        ..Retries::default()
    };
    // Keys unique to this run: a retried request is stored once.
    let run_key = rng.u64(..);
    let mut requests_made = 0u64;
    let mut events = Events::with_capacity(64);
    let mut ids = Vec::new();
    let start = Instant::now();
    let send_end = start + opts.duration;
    let mut drain_end = None;
    let mut next_report = start + Duration::from_secs(1);
    let mut previous_sent = 0;
    let mut generated = 0u64;
    let mut lag_max = Duration::ZERO;
    let mut send_s = 0.0;
    let batch_max = opts.batch.max(1);
    let mut behind_at_end = 0;
    loop {
        let now = Instant::now();
        let sending = drain_end.is_none();
        if sending
            && (now >= send_end
                || stop.load(Ordering::Relaxed)
                || schedule.limit() == Some(generated))
        {
            send_s = now.duration_since(start).as_secs_f64();
            behind_at_end = schedule.due(now.duration_since(start)) - generated;
            drain_end = Some(now + opts.drain);
        }
        let in_flight: usize = conns.iter().map(|c| c.in_flight.len()).sum();
        if let Some(end) = drain_end {
            let idle = in_flight == 0 && retries.queue.is_empty();
            if idle || now >= end || conns.iter().all(|c| c.dead) {
                break;
            }
        }
        // Requests due again go first, on the least busy live connection.
        while let Some(k) = (0..conns.len())
            .filter(|&k| {
                let c = &conns[k];
                c.connected && !c.dead && c.in_flight.len() < opts.pipeline_max
            })
            .min_by_key(|&k| conns[k].in_flight.len())
        {
            let Some(mut request) = retries.due(now) else {
                break;
            };
            request.attempt += 1;
            let conn = &mut conns[k];
            conn.out.extend_from_slice(&request.bytes);
            conn.in_flight.push_back(request);
            totals.requests += 1;
            if let Err(e) = conn.flush() {
                fail(conn, &mut totals, &mut retries, &e);
            }
        }
        if conns.iter().all(|c| c.dead) {
            return Err("every publish connection failed".into());
        }
        if drain_end.is_none() {
            let due = schedule.due(now.duration_since(start));
            if due > generated + 1 {
                lag_max = lag_max.max(now.duration_since(start + schedule.at(generated)));
            }
            while generated < due {
                let Some(k) = (0..conns.len())
                    .filter(|&k| {
                        let c = &conns[k];
                        c.connected && !c.dead && c.in_flight.len() < opts.pipeline_max
                    })
                    .min_by_key(|&k| conns[k].in_flight.len())
                else {
                    break; // every connection is full: we are behind schedule
                };
                let ts_us = epoch_us();
                let n = if opts.batch == 0 {
                    1
                } else {
                    (due - generated).min(batch_max as u64) as usize
                };
                let conn = &mut conns[k];
                requests_made += 1;
                let retrying = opts.attempts_max > 1;
                let key = retrying.then(|| format!("mg-{run_key:x}-{requests_made}"));
                let mut bytes = Vec::new();
                if opts.batch == 0 {
                    let id = rng.u64(1..=opts.max_id);
                    encode_single(&mut bytes, &host, key.as_deref(), id, ts_us, opts.size);
                } else {
                    ids.clear();
                    ids.extend((0..n).map(|_| rng.u64(1..=opts.max_id)));
                    encode_batch(&mut bytes, &host, key.as_deref(), &ids, ts_us, opts.size);
                }
                conn.out.extend_from_slice(&bytes);
                conn.in_flight.push_back(Request {
                    messages: n as u32,
                    bytes: if retrying { bytes } else { Vec::new() },
                    attempt: 1,
                });
                generated += n as u64;
                totals.sent += n as u64;
                totals.requests += 1;
                if let Err(e) = conn.flush() {
                    fail(conn, &mut totals, &mut retries, &e);
                }
            }
        }
        if now >= next_report {
            next_report += Duration::from_secs(1);
            let per_s = totals.sent - previous_sent;
            previous_sent = totals.sent;
            println!(
                "msggen: sent={} (+{per_s}/s) accepted={} failed={} connections={} in_flight={in_flight}",
                totals.sent, totals.accepted, totals.failed, totals.connections
            );
            if let Some(f) = stats_file.as_mut() {
                writeln!(
                    f,
                    "{:.1}\t{}\t{}\t{}\t{}\t{}\t{per_s}",
                    now.duration_since(start).as_secs_f64(),
                    epoch_s(),
                    totals.sent,
                    totals.accepted,
                    totals.failed,
                    totals.connections
                )
                .and_then(|()| f.flush())
                .map_err(|e| e.to_string())?;
            }
        }
        let mut wake = next_report;
        if let Some(at) = retries.next_at() {
            wake = wake.min(at);
        }
        if let Some(end) = drain_end {
            wake = wake.min(end);
        } else {
            wake = wake.min(send_end).min(start + schedule.at(generated));
        }
        match poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        }
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            if conn.dead {
                continue;
            }
            if event.is_writable() && !conn.connected {
                match conn.stream.take_error() {
                    Ok(None) if conn.stream.peer_addr().is_ok() => conn.connected = true,
                    Ok(None) if !event.is_error() => {}
                    Ok(Some(e)) | Err(e) => return Err(format!("connect {}: {e}", opts.target)),
                    Ok(None) => return Err(format!("connect {}: failed", opts.target)),
                }
            }
            let result = if event.is_writable() {
                conn.flush()
            } else {
                Ok(())
            }
            .and_then(|()| {
                if event.is_readable() {
                    conn.read(&mut totals, &mut retries)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = result {
                fail(conn, &mut totals, &mut retries, &e);
            }
        }
    }
    let unanswered = conns.iter().map(|c| c.in_flight.len()).sum::<usize>() + retries.queue.len();
    let summary = Summary {
        tool: "msggen",
        target_rate: rate,
        elapsed_s: (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        send_s: (send_s * 1000.0).round() / 1000.0,
        totals,
        behind_at_end,
        lag_max_ms: (lag_max.as_secs_f64() * 1e6).round() / 1000.0,
        unanswered: unanswered as u64,
    };
    println!(
        "msggen: done: sent={} accepted={} failed={} connections={} unanswered={} lag_max_ms={}",
        totals.sent,
        totals.accepted,
        totals.failed,
        totals.connections,
        unanswered,
        summary.lag_max_ms
    );
    Ok(summary)
}

/// A connection failed: what it carried is sent again on another (or counts as failed when it
/// may not be), and it takes no more requests.
fn fail(conn: &mut Conn, totals: &mut Totals, retries: &mut Retries, error: &io::Error) {
    eprintln!("msggen: publish connection failed: {error}");
    for request in conn.in_flight.drain(..) {
        retries.again(request, None, totals);
    }
    conn.dead = true;
    conn.out.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_has_stamp_and_size() {
        let mut m = Vec::new();
        write_message(&mut m, 1_764_151_234_567_890, 64);
        assert_eq!(m.len(), 64);
        assert!(m.starts_with(b"ts=1764151234567890 xxx"));
        let mut short = Vec::new();
        write_message(&mut short, 5, 1);
        assert_eq!(short, b"ts=5 ");
    }

    #[test]
    fn requests() {
        let mut out = Vec::new();
        encode_single(&mut out, "h:1", None, 42, 7, 10);
        assert_eq!(
            out,
            b"POST /send/42 HTTP/1.1\r\nHost: h:1\r\nContent-Length: 10\r\n\r\nts=7 xxxxx"
        );
        out.clear();
        encode_batch(&mut out, "h:1", Some("k-1"), &[1, 23], 7, 6);
        assert_eq!(
            out,
            b"POST /send HTTP/1.1\r\nHost: h:1\r\nIdempotency-Key: k-1\r\nContent-Length: 19\r\n\r\n1 ts=7 x\n23 ts=7 x\n"
        );
    }
}
