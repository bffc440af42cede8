//! floodtest: opens N streaming ("comet") connections at a fixed rate, holds them, and reports
//! the seed's `Stats: {Connected, Closed, Chunks}` each second with errors and delivery latency.
//!
//! # Layout
//!
//! - [`parse`]: the incremental response parser (headers, chunked, SSE, `ts=` stamps); pure.
//! - [`flood`]: the single-threaded mio loop over a vector of small connection slots.
//! - [`report`]: counters, histograms, the child-to-parent frame format and the summary.
//! - this file: the CLI, splitting the run over child processes (one process may hold only
//!   ~20,000 descriptors here), aggregating their reports, printing.
//!
//! Latency is `receive time - ts`, both read from the system clock of the same machine; msggen
//! starts each message with `ts=<unix epoch microseconds> `.

mod flood;
mod parse;
mod report;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use tools_common::clock::epoch_s;
use tools_common::latency::{new_histogram, Percentiles};

use flood::{Plan, Sources, Targets};
use parse::Framing;
use report::{Counters, Report, Summary};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PathKind {
    /// `GET /test/<id>`: chunked HTML, one message per chunk (the seed's stream).
    Test,
    /// `GET /events/<id>`: Server-Sent Events.
    Events,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Open and hold many streaming connections; report chunks and latency")]
struct Opts {
    /// The server's subscriber address.
    #[arg(long, default_value = "127.0.0.1:8000")]
    target: SocketAddr,
    /// Connections to open (ids first-id .. first-id+N-1). Ignored with --urls.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    connections: u64,
    /// Connections opened per second, all processes together; 0 = as fast as --pending-max allows.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Which stream each connection requests (`--path-kind` is the same option).
    #[arg(long, alias = "path-kind", value_enum, default_value_t = PathKind::Test)]
    path: PathKind,
    #[arg(long, default_value_t = 1)]
    first_id: u64,
    /// A file of URLs (`http://IP:PORT/path`), one connection per line, as in the seed.
    #[arg(long)]
    urls: Option<PathBuf>,
    /// How long to run (e.g. 90s, 10m, 24h); the run also ends when every connection has ended.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Source addresses, e.g. `127.0.0.2-127.0.0.40` or `127.0.0.2,127.0.0.3`. Default: none
    /// below --per-source-addr connections, else 127.0.0.2 onwards, enough for the count.
    #[arg(long)]
    source_addrs: Option<String>,
    /// Explicit source ports `LO-HI` (default: the kernel picks at connect time per address).
    #[arg(long)]
    source_ports: Option<String>,
    /// Connections per source address when addresses are chosen automatically. Default: 40 %
    /// of the ephemeral port range. The kernel's search for a free port slows sharply as an
    /// address fills: with 25,000 of 28,232 ports in use, connect() took ~7.5 ms each (seen with
    /// strace during a stalled 1M run here).
    #[arg(long)]
    per_source_addr: Option<u64>,
    /// Processes (default: ceil(N / --per-proc)); each holds its share in one epoll loop.
    #[arg(long)]
    procs: Option<u64>,
    /// Connections per process when --procs is not given (the open-files limit is 20000 here).
    #[arg(long, default_value_t = 19_000)]
    per_proc: u64,
    /// Connections in progress (connect or headers outstanding) per process at most.
    #[arg(long, default_value_t = 1000)]
    pending_max: u64,
    /// Try a failed attempt again (connect refused or timed out, a reset or a close before the
    /// header block, a 503; not another status: the server's answer stands) after a random delay between half and 1.5x this
    /// many ms, as a browser's EventSource does; each failure still counts in `errors`, each new
    /// attempt in `retries`. 0: a failed connection stays failed. An established stream that
    /// ends is not reopened.
    #[arg(long, default_value_t = 0)]
    retry_ms: u64,
    /// Write the final summary JSON here too (it is always printed as the last stdout line).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write one TSV row per second (for tools/plot).
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// Sign an HS256 JWT with this secret for each connection (`{"sub":"<id>","exp":now+1h}`,
    /// or `"ids"` for a URL naming several) and send it as `Authorization: Bearer <jwt>`; for a
    /// comet started with `--auth-secret`. Signed per connection, never kept.
    #[arg(long)]
    jwt_secret: Option<String>,
    /// Internal: run share `START:COUNT` and write binary reports to stdout.
    #[arg(long, hide = true)]
    child: Option<String>,
}

fn parse_addr_list(s: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut addrs = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad address or range {part:?}");
        match part.split_once('-') {
            Some((lo, hi)) => {
                let lo: Ipv4Addr = lo.trim().parse().map_err(|_| bad())?;
                let hi: Ipv4Addr = hi.trim().parse().map_err(|_| bad())?;
                if u32::from(lo) > u32::from(hi) {
                    return Err(bad());
                }
                addrs.extend((u32::from(lo)..=u32::from(hi)).map(Ipv4Addr::from));
            }
            None => addrs.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(addrs)
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("bad port range {s:?} (LO-HI)");
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// The whole run, as every process derives it from the same options.
struct Setup {
    total: u64,
    urls: Option<Vec<flood::Url>>,
    sources: Sources,
}

fn setup(opts: &Opts) -> Result<Setup, String> {
    let urls = match &opts.urls {
        None => None,
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let urls = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(flood::parse_url)
                .collect::<Result<Vec<_>, _>>()?;
            Some(urls)
        }
    };
    let total = urls.as_ref().map_or(opts.connections, |u| u.len() as u64);
    let per_source_addr = opts
        .per_source_addr
        .unwrap_or_else(|| tools_common::sock::ephemeral_ports() * 2 / 5)
        .max(1);
    let addrs = match &opts.source_addrs {
        Some(list) => parse_addr_list(list)?,
        None if total > per_source_addr => {
            let n = total.div_ceil(per_source_addr) as u32;
            (0..n).map(tools_common::sock::loopback_source).collect()
        }
        None => Vec::new(),
    };
    let ports = opts
        .source_ports
        .as_deref()
        .map(parse_port_range)
        .transpose()?;
    if ports.is_some() && addrs.is_empty() {
        return Err("--source-ports needs source addresses".into());
    }
    Ok(Setup {
        total,
        urls,
        sources: Sources { addrs, ports },
    })
}

fn plan_for(opts: &Opts, setup: &Setup, first_index: u64, count: u64) -> Plan {
    let targets = match &setup.urls {
        Some(urls) => {
            let range = first_index as usize..(first_index + count) as usize;
            Targets::Urls(urls[range].to_vec())
        }
        None => Targets::Ids {
            addr: opts.target,
            prefix: match opts.path {
                PathKind::Test => "/test/",
                PathKind::Events => "/events/",
            },
            first_id: opts.first_id,
        },
    };
    let share = if setup.total == 0 {
        0.0
    } else {
        count as f64 / setup.total as f64
    };
    Plan {
        targets,
        framing: match opts.path {
            PathKind::Test => Framing::ChunkPerMessage,
            PathKind::Events => Framing::Sse,
        },
        first_index,
        count,
        rate: opts.rate * share,
        pending_max: opts.pending_max,
        duration: opts.duration,
        sources: setup.sources.clone(),
        jwt_secret: opts.jwt_secret.clone(),
        retry: (opts.retry_ms > 0).then(|| Duration::from_millis(opts.retry_ms)),
    }
}

/// Child mode: run one share, write binary reports to stdout, stop when stdin closes.
fn run_child(opts: &Opts, setup: &Setup, share: &str) -> Result<(), String> {
    let (start, count) = share
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| format!("bad --child {share:?}"))?;
    let plan = plan_for(opts, setup, start, count);
    let stop = Arc::new(AtomicBool::new(false));
    register_signals(&stop);
    let mut out = io::stdout().lock();
    let mut write_failed = false;
    flood::run(&plan, &stop, true, &mut |report| {
        if !write_failed && report::write_frame(&mut out, &report).is_err() {
            write_failed = true; // the parent is gone; stdin EOF will stop us too
        }
    })
    .map_err(|e| format!("flood loop: {e}"))
}

fn register_signals(stop: &Arc<AtomicBool>) {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(stop)).expect("register signal");
    }
}

enum Msg {
    Report(usize, Box<Report>),
    /// A source of reports ended (child exited or thread finished).
    Gone(usize),
}

fn main() {
    let opts = Opts::parse();
    let setup = match setup(&opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("floodtest: {e}");
            std::process::exit(2);
        }
    };
    if let Some(share) = &opts.child {
        if let Err(e) = run_child(&opts, &setup, share) {
            eprintln!("floodtest child: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = run_parent(&opts, &setup) {
        eprintln!("floodtest: {e}");
        std::process::exit(1);
    }
}

fn run_parent(opts: &Opts, setup: &Setup) -> Result<(), String> {
    let total = setup.total;
    let procs = opts
        .procs
        .unwrap_or_else(|| total.div_ceil(opts.per_proc.max(1)))
        .clamp(1, total.max(1));
    let stop = Arc::new(AtomicBool::new(false));
    register_signals(&stop);
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut children: Vec<(Child, Option<ChildStdin>)> = Vec::new();
    let mut thread = None;
    let start = Instant::now();
    if procs == 1 {
        let plan = plan_for(opts, setup, 0, total);
        let stop = Arc::clone(&stop);
        let tx = tx.clone();
        thread = Some(std::thread::spawn(move || {
            let result = flood::run(&plan, &stop, false, &mut |report| {
                let _ = tx.send(Msg::Report(0, Box::new(report)));
            });
            let _ = tx.send(Msg::Gone(0));
            result
        }));
    } else {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let args: Vec<String> = std::env::args().skip(1).collect();
        for k in 0..procs {
            let first = total * k / procs;
            let count = total * (k + 1) / procs - first;
            let mut child = Command::new(&exe)
                .args(&args)
                .arg("--child")
                .arg(format!("{first}:{count}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("spawn child {k}: {e}"))?;
            let mut stdout = child.stdout.take().expect("piped stdout");
            let stdin = child.stdin.take();
            let tx = tx.clone();
            let index = k as usize;
            std::thread::spawn(move || {
                loop {
                    match report::read_frame(&mut stdout) {
                        Ok(Some(report)) => {
                            if tx.send(Msg::Report(index, Box::new(report))).is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            eprintln!("floodtest: child {index}: {e}");
                            break;
                        }
                    }
                }
                let _ = tx.send(Msg::Gone(index));
            });
            children.push((child, stdin));
        }
    }
    drop(tx);
    let summary = aggregate(opts, total, procs, start, &stop, &rx, &mut children)?;
    for (mut child, stdin) in children {
        drop(stdin);
        let _ = child.wait();
    }
    if let Some(thread) = thread {
        thread
            .join()
            .map_err(|_| "flood thread panicked".to_string())?
            .map_err(|e| format!("flood loop: {e}"))?;
    }
    print_summary(opts, &summary)
}

fn aggregate(
    opts: &Opts,
    total: u64,
    procs: u64,
    start: Instant,
    stop: &AtomicBool,
    rx: &mpsc::Receiver<Msg>,
    children: &mut [(Child, Option<ChildStdin>)],
) -> Result<Summary, String> {
    let sources = procs as usize;
    let mut latest = vec![Counters::default(); sources];
    let mut last_seen = vec![false; sources];
    let mut gone = vec![false; sources];
    let mut total_latency = new_histogram();
    let mut interval_latency = new_histogram();
    let mut all_connected_s = None;
    let mut peak_open = 0;
    let mut previous_messages = 0;
    let mut stats_file = match &opts.stats_file {
        Some(path) => {
            let mut f =
                BufWriter::new(File::create(path).map_err(|e| format!("{}: {e}", path.display()))?);
            writeln!(f, "# elapsed_s\tepoch_s\tconnected\tclosed\topen\tchunks\tmessages\terrors\tmessages_per_s\tp50_us\tp90_us\tp99_us\tp999_us\tmax_us\tretries")
                .map_err(|e| e.to_string())?;
            Some(f)
        }
        None => None,
    };
    let mut stopping = false;
    let mut next_tick = start + Duration::from_secs(1);
    while gone.iter().any(|g| !g) {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Msg::Report(k, report)) => {
                latest[k] = report.counters;
                last_seen[k] |= report.last;
                total_latency
                    .add(&report.latency)
                    .map_err(|e| format!("histogram: {e:?}"))?;
                interval_latency
                    .add(&report.latency)
                    .map_err(|e| format!("histogram: {e:?}"))?;
                let connected: u64 = latest.iter().map(|c| c.connected).sum();
                if all_connected_s.is_none() && total > 0 && connected >= total {
                    all_connected_s = Some(start.elapsed().as_secs_f64());
                }
            }
            Ok(Msg::Gone(k)) => {
                gone[k] = true;
                if !last_seen[k] {
                    eprintln!("floodtest: WARNING: process {k} ended without its final report");
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if stop.load(Ordering::Relaxed) && !stopping {
            stopping = true;
            for (_, stdin) in children.iter_mut() {
                stdin.take(); // EOF on the child's stdin: it stops and sends its last report
            }
        }
        if Instant::now() >= next_tick {
            next_tick += Duration::from_secs(1);
            let mut sum = Counters::default();
            latest.iter().for_each(|c| sum.add(c));
            peak_open = peak_open.max(sum.open());
            let p = Percentiles::of(&interval_latency);
            let per_s = sum.messages - previous_messages;
            previous_messages = sum.messages;
            println!(
                "Stats: {{{},{},{}}} open={} msgs={} (+{}/s) errors={} latency {}",
                sum.connected,
                sum.closed,
                sum.chunks,
                sum.open(),
                sum.messages,
                per_s,
                sum.errors(),
                p.human()
            );
            if let Some(f) = stats_file.as_mut() {
                writeln!(
                    f,
                    "{:.1}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    start.elapsed().as_secs_f64(),
                    epoch_s(),
                    sum.connected,
                    sum.closed,
                    sum.open(),
                    sum.chunks,
                    sum.messages,
                    sum.errors(),
                    per_s,
                    p.p50,
                    p.p90,
                    p.p99,
                    p.p999,
                    p.max,
                    sum.retries
                )
                .and_then(|()| f.flush())
                .map_err(|e| e.to_string())?;
            }
            interval_latency.reset();
        }
    }
    let mut sum = Counters::default();
    latest.iter().for_each(|c| sum.add(c));
    Ok(Summary {
        tool: "floodtest",
        target_connections: total,
        procs: procs as u32,
        elapsed_s: (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        all_connected_s: all_connected_s.map(|s| (s * 1000.0).round() / 1000.0),
        peak_open: peak_open.max(sum.open()),
        errors: sum.errors(),
        counters: sum,
        latency_us: Percentiles::of(&total_latency),
    })
}

fn print_summary(opts: &Opts, summary: &Summary) -> Result<(), String> {
    let c = &summary.counters;
    println!(
        "Final: {{{},{},{}}} target={} peak_open={} all_connected_s={} messages={} unstamped={} errors={} (connect={} early_close={} status={} framing={} read={}) retries={} graceful_closes={}",
        c.connected,
        c.closed,
        c.chunks,
        summary.target_connections,
        summary.peak_open,
        summary
            .all_connected_s
            .map_or_else(|| "never".to_string(), |s| format!("{s:.3}")),
        c.messages,
        c.messages_unstamped,
        summary.errors,
        c.errors_connect,
        c.errors_early_close,
        c.errors_status,
        c.errors_framing,
        c.errors_read,
        c.retries,
        c.closed_graceful,
    );
    println!("Latency: {}", summary.latency_us.human());
    let json = serde_json::to_string(summary).map_err(|e| e.to_string())?;
    if let Some(path) = &opts.json {
        std::fs::write(path, format!("{json}\n"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!("{json}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lists() {
        let a = parse_addr_list("127.0.0.2-127.0.0.4,127.0.0.9").unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a[2], Ipv4Addr::new(127, 0, 0, 4));
        assert_eq!(a[3], Ipv4Addr::new(127, 0, 0, 9));
        assert!(parse_addr_list("127.0.0.5-127.0.0.4").is_err());
        assert_eq!(parse_port_range("10000-60000").unwrap(), (10000, 60000));
        assert!(parse_port_range("0-5").is_err());
    }

    #[test]
    fn automatic_sources_cover_the_count() {
        let opts = Opts::parse_from(["floodtest", "-n", "1000000"]);
        let s = setup(&opts).unwrap();
        let per_addr = tools_common::sock::ephemeral_ports() * 2 / 5;
        assert_eq!(
            s.sources.addrs.len() as u64,
            1_000_000_u64.div_ceil(per_addr)
        );
        let explicit =
            Opts::parse_from(["floodtest", "-n", "1000000", "--per-source-addr", "25000"]);
        assert_eq!(setup(&explicit).unwrap().sources.addrs.len(), 40);
        assert_eq!(s.sources.addrs[0], Ipv4Addr::new(127, 0, 0, 2));
        let small = setup(&Opts::parse_from(["floodtest", "-n", "10000"])).unwrap();
        assert!(small.sources.addrs.is_empty());
    }
}
