//! memlog: one line per interval in the seed's `mochimem.log` layout,
//! `date<TAB>epoch<TAB>rss_kb<TAB>connections`, followed by extra columns:
//! kernel TCP sockets in use and allocated, TCP memory pages (from /proc/net/sockstat), slab KB
//! (/proc/meminfo `Slab:`), the process's CPU seconds (utime + stime), and from /metrics the
//! server's open descriptors (`process_open_fds`; sockets in io_uring fixed-file tables are not
//! among them), its heap (`comet_heap_bytes`, what its allocator holds for it) and its message
//! history (`comet_history_bytes`), both in KB: what tells a leak from a cache filling up or
//! from the allocator's own growth when RSS rises.
//!
//! Every source is O(1) in the number of connections: /proc/PID/status, /proc/PID/stat,
//! /proc/net/sockstat, /proc/meminfo and the server's `GET /metrics` (the sum of its
//! `comet_connections` samples). No netstat, ss or /proc/net/tcp scans: at a million sockets
//! those take seconds and disturb what they measure. A value that cannot be read is `NaN`
//! (gnuplot skips it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use tools_common::clock::epoch_s;
use tools_common::response::Head;

#[derive(Parser, Debug)]
#[command(about = "Log server RSS, connections and kernel socket memory once per interval")]
struct Opts {
    /// Process whose RSS and CPU to log; memlog exits when it exits.
    #[arg(long)]
    pid: Option<u32>,
    /// Where the server answers `GET /metrics` (its publish address).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    #[arg(long, default_value_t = 5.0)]
    interval_s: f64,
    /// Stop after this long (e.g. 10m); without it, runs until --pid exits.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Append lines to this file instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

const HEADER: &str =
    "# date\tepoch\trss_kb\tconnections\ttcp_inuse\ttcp_alloc\ttcp_mem_pages\tslab_kb\tcpu_s\topen_fds\theap_kb\thistory_kb";

/// /proc reports CPU time in USER_HZ ticks, 100 per second on every Linux architecture.
const USER_HZ: f64 = 100.0;

/// The value of a `Key:   123 kB` line in /proc/PID/status or /proc/meminfo.
fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TcpSockstat {
    inuse: u64,
    orphan: u64,
    tw: u64,
    alloc: u64,
    /// Pages of memory the kernel charges to TCP (4 KiB each).
    mem_pages: u64,
}

/// Parses the `TCP:` line of /proc/net/sockstat:
/// `TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1`.
fn parse_sockstat(text: &str) -> Option<TcpSockstat> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut stat = TcpSockstat::default();
    let mut words = line["TCP:".len()..].split_whitespace();
    while let (Some(key), Some(value)) = (words.next(), words.next()) {
        let value: u64 = value.parse().ok()?;
        match key {
            "inuse" => stat.inuse = value,
            "orphan" => stat.orphan = value,
            "tw" => stat.tw = value,
            "alloc" => stat.alloc = value,
            "mem" => stat.mem_pages = value,
            _ => {}
        }
    }
    Some(stat)
}

/// utime + stime in ticks from /proc/PID/stat (fields 14 and 15; the command name in
/// parentheses may itself contain spaces and parentheses, so count from the last `)`).
fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // after ")" the fields are numbered from 3 (state): utime is field 14 -> index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Sum of every `comet_connections` sample (one per worker) in Prometheus text.
fn metrics_connections(text: &str) -> Option<u64> {
    metric_sum(text, "comet_connections")
}

/// Sum of every sample of the metric `name` (one per worker, or a single one).
fn metric_sum(text: &str, name: &str) -> Option<u64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if rest.starts_with('{') {
            rest.rsplit_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None // another metric with this prefix, e.g. comet_connections_total
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()) {
            if let Ok(v) = v.parse::<f64>() {
                sum += v;
                found = true;
            }
        }
    }
    found.then_some(sum as u64)
}

/// `GET /metrics`, answer body as text; bounded by short timeouts.
fn fetch_metrics(addr: SocketAddr) -> Option<String> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut input = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).ok()?;
        input.extend_from_slice(&buf[..n]);
        // A malformed head will not mend with more bytes: no sample.
        if let Some(head) = Head::parse(&input).ok()? {
            if head.status != 200 {
                return None;
            }
            let body = &input[head.len..];
            match head.content_length {
                Some(length) if body.len() >= length => {
                    return String::from_utf8(body[..length].to_vec()).ok();
                }
                // Without a length the body runs to the close (Connection: close was asked).
                None if n == 0 => return String::from_utf8(body.to_vec()).ok(),
                _ => {}
            }
        }
        if n == 0 {
            return None;
        }
    }
}

/// `2025-11-26T10:00:00Z` from seconds since the epoch (civil-from-days, proleptic Gregorian).
fn iso_utc(epoch_s: u64) -> String {
    let days = (epoch_s / 86_400) as i64;
    let secs = epoch_s % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn or_nan<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "NaN".to_string(), |v| v.to_string())
}

/// One line, or None when --pid no longer exists.
fn sample(opts: &Opts) -> Option<String> {
    let (rss_kb, cpu_s) = match opts.pid {
        Some(pid) => {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| parse_stat_cpu_ticks(&s))
                .map(|t| format!("{:.2}", t as f64 / USER_HZ));
            (kb_field(&status, "VmRSS"), cpu)
        }
        None => (None, None),
    };
    let metrics = opts.metrics.and_then(fetch_metrics);
    let connections = metrics.as_deref().and_then(metrics_connections);
    let metric = |name: &str| metrics.as_deref().and_then(|m| metric_sum(m, name));
    let open_fds = metric("process_open_fds");
    let heap_kb = metric("comet_heap_bytes").map(|b| b / 1024);
    let history_kb = metric("comet_history_bytes").map(|b| b / 1024);
    let tcp = std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|s| parse_sockstat(&s));
    let slab_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| kb_field(&m, "Slab"));
    let epoch = epoch_s();
    Some(format!(
        "{}\t{epoch}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        iso_utc(epoch),
        or_nan(rss_kb),
        or_nan(connections),
        or_nan(tcp.map(|t| t.inuse)),
        or_nan(tcp.map(|t| t.alloc)),
        or_nan(tcp.map(|t| t.mem_pages)),
        or_nan(slab_kb),
        or_nan(cpu_s),
        or_nan(open_fds),
        or_nan(heap_kb),
        or_nan(history_kb),
    ))
}

fn main() {
    let opts = Opts::parse();
    if opts.pid.is_none() && opts.duration.is_none() {
        eprintln!("memlog: give --pid (runs until it exits) or --duration");
        std::process::exit(2);
    }
    let mut out: Box<dyn Write> = match &opts.out {
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("memlog: {}: {e}", path.display());
                std::process::exit(2);
            }
        },
        None => Box::new(std::io::stdout()),
    };
    let interval = Duration::from_secs_f64(opts.interval_s.max(0.01));
    let start = Instant::now();
    let _ = writeln!(out, "{HEADER}");
    for tick in 1u32.. {
        let Some(line) = sample(&opts) else {
            break; // the process is gone
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break;
        }
        let next = start + interval * tick;
        if opts.duration.is_some_and(|d| next > start + d) {
            break;
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat() {
        let text = "sockets: used 1234\nTCP: inuse 20005 orphan 1 tw 37 alloc 20010 mem 5021\nUDP: inuse 3 mem 2\n";
        assert_eq!(
            parse_sockstat(text),
            Some(TcpSockstat {
                inuse: 20005,
                orphan: 1,
                tw: 37,
                alloc: 20010,
                mem_pages: 5021
            })
        );
        assert_eq!(parse_sockstat("UDP: inuse 3\n"), None);
        // The live file parses too.
        let live = std::fs::read_to_string("/proc/net/sockstat").unwrap();
        assert!(parse_sockstat(&live).is_some());
    }

    #[test]
    fn meminfo_and_status() {
        let meminfo =
            "MemTotal:       24000000 kB\nSlab:             123456 kB\nSReclaimable:      1 kB\n";
        assert_eq!(kb_field(meminfo, "Slab"), Some(123456));
        assert_eq!(kb_field(meminfo, "Sla"), None);
        let status = "Name:\tcomet\nVmRSS:\t    7412 kB\n";
        assert_eq!(kb_field(status, "VmRSS"), Some(7412));
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(kb_field(&own, "VmRSS").unwrap() > 0);
    }

    #[test]
    fn cpu_ticks() {
        let stat =
            "4242 (co m) et)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat_cpu_ticks(&own).is_some());
    }

    #[test]
    fn metrics() {
        let text = "# HELP comet_connections Open subscriber connections.\n# TYPE comet_connections gauge\ncomet_connections{worker=\"0\"} 5000\ncomet_connections{worker=\"1\"} 5001\ncomet_connections_total 99\ncomet_connections_closed_total{worker=\"0\",reason=\"eof\"} 3\nprocess_resident_memory_bytes 1234\n";
        assert_eq!(metrics_connections(text), Some(10001));
        assert_eq!(metrics_connections("comet_connections 7\n"), Some(7));
        assert_eq!(metrics_connections("other 1\n"), None);
        let text = "process_open_fds 42\nprocess_open_fds_max 9\n";
        assert_eq!(metric_sum(text, "process_open_fds"), Some(42));
    }

    #[test]
    fn dates() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_utc(1_764_151_234), "2025-11-26T10:00:34Z");
    }
}
