//! The `comet` binary: `comet serve` runs the push server, `comet send` publishes from a shell.
//!
//! Layout: `config` (flags and derived limits), `worker` (one io_uring loop per thread and its
//! components: connections, accept, mail between workers, the id shard, requests, streams,
//! WebSocket input, long-polls, publish connections; see its module doc), `public` (what a
//! subscriber request asks for; pure), `shared` (what /metrics reads), `metrics` (the
//! workers' counters and the /metrics writer), `user_data` (the
//! `user_data` layout of ring operations), `send` (the `comet send` client),
//! `cluster` (the `--cluster*` flags and the bridge's way into the workers' mailboxes; the
//! bridge itself is the `comet-cluster` crate), `auth` (subscriber tokens, the publish secret;
//! pure), `memstats` (the kernel's and the process's figures for /metrics), `demo` (the
//! `--demo` page), `mint` (`comet token`), `settings` (flags from `COMET_*` variables and the
//! config file), `state` (`--state-dir`: the epoch and the histories across a graceful
//! restart).
#![forbid(unsafe_code)]

mod auth;
mod cluster;
mod config;
mod demo;
mod memstats;
mod metrics;
mod mint;
mod public;
mod send;
mod settings;
mod shared;
mod state;
mod user_data;
mod worker;

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Arc, Barrier};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use socket2::{Domain, Protocol, Socket, Type};

use config::{Config, LogFormat, ServeArgs};
use metrics::Stats;
use shared::Shared;
use worker::post::Boxes;

/// How often the allocator's free pages are handed back to the kernel (`malloc_trim`).
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Blocks this large or larger are mapped apart by the allocator (glibc's default at start,
/// fixed so that it does not rise: `comet_ring::sys::fix_mmap_threshold`).
const MMAP_THRESHOLD: usize = 128 * 1024;

// The system allocator (glibc malloc), not jemalloc: measured here, it held less memory for
// this workload at every scale we ran (results/alloc/2026-11-26/summary.md).

#[derive(Parser)]
#[command(
    version,
    about = "A push server for a million long-lived HTTP streaming connections"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Publish one message to every connection logged in as <ID>.
    Send(send::SendArgs),
    /// Print a subscriber token (JWT HS256) for <IDS>, for trying --auth-secret from a shell.
    Token(mint::TokenArgs),
}

fn main() {
    let cli = settings::matches(
        settings::with_env(Cli::command()),
        std::env::args_os().collect(),
    )
    .and_then(|matches| Cli::from_arg_matches(&matches))
    .unwrap_or_else(|e| e.exit());
    let log_format = match &cli.command {
        Command::Serve(args) => args.log_format,
        Command::Send(_) | Command::Token(_) => LogFormat::Text,
    };
    init_logging(log_format);
    let code = match cli.command {
        Command::Serve(args) => match serve(&args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("comet: {e}");
                1
            }
        },
        Command::Send(args) => send::run(&args),
        Command::Token(args) => mint::run(&args),
    };
    std::process::exit(code);
}

/// Log lines to stderr, filtered by RUST_LOG (default `info`). Colour only on a terminal: in a
/// file or a journal the escape codes are noise.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn listener(addr: SocketAddr, backlog: u32, unacked_ms: u64) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    // One listener per worker on the same port: the kernel spreads connections by 4-tuple hash.
    socket.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY: a message is one small write that must not wait.
    socket.set_tcp_nodelay(true)?;
    // And TCP_USER_TIMEOUT: a peer that vanished without a FIN (a phone off the network, a
    // dropped NAT entry) leaves the next heartbeat unacknowledged; the kernel then fails the
    // socket after this long instead of retransmitting for ~15 minutes (tcp_retries2).
    if unacked_ms > 0 {
        socket.set_tcp_user_timeout(Some(std::time::Duration::from_millis(unacked_ms)))?;
        // The kernel counts that time only from the first retransmission (or window probe),
        // which waits one retransmission timeout, and a peer whose ACKs once came late (a
        // congested link, a client host that was overloaded) can have one of a minute or two:
        // measured at 1M, silent peers held on up to 169 s instead of ~60. Capping it bounds
        // the wait and gives a peer that is alive but losing packets more tries within the
        // timeout. Before Linux 6.15 (no TCP_RTO_MAX_MS) the bound is the kernel's 120 s.
        let cap = rto_max_ms(unacked_ms);
        if let Err(e) = comet_ring::sys::set_tcp_rto_max_ms(&socket, cap) {
            tracing::warn!(error = %e, "cannot cap the retransmission timeout (TCP_RTO_MAX_MS needs Linux 6.15): a dead peer may hold its slot up to 120 s longer");
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket)
}

/// The retransmission timeout cap for `--unacked-timeout-ms` `unacked_ms`: a quarter of it,
/// within what TCP_RTO_MAX_MS takes (1 s to 120 s).
fn rto_max_ms(unacked_ms: u64) -> u32 {
    (unacked_ms / 4).clamp(1_000, 120_000) as u32
}

/// One listener per worker for `addr`; with port 0 the first picks the port and the rest share it.
fn listeners(
    mut addr: SocketAddr,
    workers: usize,
    backlog: u32,
    unacked_ms: u64,
) -> std::io::Result<(Vec<Socket>, SocketAddr)> {
    if addr.port() != 0 {
        // SO_REUSEPORT would let a second server join this port silently and take a share of
        // its connections. A plain bind fails while anyone listens there: probe with one.
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into()).map_err(|e| {
            std::io::Error::new(e.kind(), format!("{addr} is in use (another server?): {e}"))
        })?;
    }
    let mut sockets = Vec::with_capacity(workers);
    for _ in 0..workers {
        let socket = listener(addr, backlog, unacked_ms)
            .map_err(|e| std::io::Error::new(e.kind(), format!("listen on {addr}: {e}")))?;
        if addr.port() == 0 {
            addr = socket
                .local_addr()?
                .as_socket()
                .expect("an inet listener address");
        }
        sockets.push(socket);
    }
    Ok((sockets, addr))
}

fn serve(args: &ServeArgs) -> Result<(), String> {
    // A panic is a broken invariant (an assert): end the whole process loudly rather than
    // leave the other workers serving half a table, or waiting for a worker that is gone.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
    // Large blocks mapped apart, so that what a burst frees goes back whole (see the function).
    comet_ring::sys::fix_mmap_threshold(MMAP_THRESHOLD);
    // A ring's fixed-file table is bounded by the soft open-files limit: raise it to the hard.
    let nofile =
        comet_ring::sys::raise_nofile_limit().map_err(|e| format!("raising RLIMIT_NOFILE: {e}"))?;
    let mut cfg = Config::new(args, nofile)?;
    // listen(2) silently keeps at most net.core.somaxconn of --backlog.
    if let Some(somaxconn) = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    {
        let kept = cfg.cap_backlog(args.backlog, somaxconn);
        if kept < args.backlog {
            tracing::warn!(
                backlog = args.backlog,
                somaxconn,
                "the kernel keeps listen queues of at most net.core.somaxconn: raise it to \
                 --backlog to absorb reconnect storms (kernel-tuning.md)"
            );
        }
    }
    let cluster_options = args.cluster.options(&cfg.history)?;
    if args.state_dir.is_some() && cluster_options.is_some() {
        // Messages published on other nodes while this one is down never reach its history:
        // a restored epoch would hide that loss from resuming clients.
        return Err(
            "--state-dir keeps a single node's positions; it cannot be used with \
                    --cluster (messages published elsewhere while this node is down would be \
                    missed without a gap notice)"
                .into(),
        );
    }
    let restored = match &args.state_dir {
        Some(dir) => {
            state::prepare(dir)?;
            state::load(dir)?
        }
        None => None,
    };
    if let Some(restored) = &restored {
        cfg.epoch = restored.epoch;
    }
    // The bridge joins the cluster before the workers exist: on JetStream the stream names the
    // epoch and says where each worker's history starts. The outbound queue exists before the
    // workers (each gets a publisher); the bridge routes once their rings do, so that it can
    // ring them.
    let (publisher, mut bridge, joined) = match cluster_options {
        Some(options) => {
            let servers = options.servers.join(",");
            let (publisher, outbox) = comet_cluster::channel(options.stream.is_some());
            let (bridge, joined) = comet_cluster::Cluster::start(options, outbox)?;
            if let Some(epoch) = joined.epoch {
                cfg.epoch = epoch;
            }
            tracing::info!(servers, "cluster bridge started");
            (Some(publisher), Some(bridge), joined)
        }
        None => (None, None, comet_cluster::Joined::default()),
    };
    let cfg = Arc::new(cfg);
    let workers = cfg.workers;
    let (public, public_addr) =
        listeners(args.listen, workers, args.backlog, args.unacked_timeout_ms)
            .map_err(|e| e.to_string())?;
    let (publish, publish_addr) = listeners(
        args.publish_listen,
        workers,
        args.backlog,
        args.unacked_timeout_ms,
    )
    .map_err(|e| e.to_string())?;
    // Bound: from here the process serves, and its state file must not outlive it (a crash
    // must start a new epoch). A start that failed before this point keeps the file.
    let restored = match (&args.state_dir, restored) {
        (Some(dir), Some(restored)) => {
            let moved = state::consume(dir)?;
            let (epoch, shards) = (format!("{:08x}", restored.epoch), restored.shards.len());
            let ids: usize = restored.shards.iter().map(|s| s.entries.len()).sum();
            let moved = moved.display();
            tracing::info!(epoch, shards, ids, "state restored; file moved to {moved}");
            Some(Arc::new(restored.shards))
        }
        _ => None,
    };
    let save = args.state_dir.is_some();
    let shutdown = comet_ring::sys::eventfd().map_err(|e| format!("eventfd: {e}"))?;

    let (boxes, inboxes) = Boxes::new(workers);
    let boxes = Arc::new(boxes);
    let shared = Arc::new(Shared {
        stats: (0..workers).map(|_| Stats::default()).collect(),
        cluster: publisher.as_ref().map(|p| p.stats().clone()),
        heap_baseline: std::sync::atomic::AtomicU64::new(0),
        busy_workers: std::sync::atomic::AtomicUsize::new(workers),
    });

    // Each worker creates its ring on its own thread (single issuer), reports, then waits for
    // every other ring to exist before it may ring them.
    let start = Arc::new(Barrier::new(workers + 1));
    // Shutdown: every worker and the main thread meet at `left` once the workers have left
    // their loops, and at `done` once the cluster bridge has stopped (see `Worker::run`).
    let left = Arc::new(Barrier::new(workers + 1));
    let done = Arc::new(Barrier::new(workers + 1));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut threads = Vec::with_capacity(workers);
    for (index, inbox) in inboxes.into_iter().enumerate() {
        let cfg = cfg.clone();
        let shared = shared.clone();
        let boxes = boxes.clone();
        let start = start.clone();
        let (left, done) = (left.clone(), done.clone());
        let ready = ready_tx.clone();
        let publisher = publisher.clone();
        let restored = restored.clone();
        let fds = [public[index].as_raw_fd(), publish[index].as_raw_fd()];
        let shutdown_fd = shutdown.as_raw_fd();
        let thread = std::thread::Builder::new()
            .name(format!("comet-w{index}"))
            .spawn(move || {
                // The primary ring now; the others once it fills (Conns::admitting_ring).
                let config = comet_ring::Config {
                    sq_entries: cfg.ring_entries,
                    files: cfg.ring_files,
                    read_bufs: cfg.read_buffers,
                    read_buf_size: cfg.read_buffer_size,
                };
                let mut rings = match comet_ring::Rings::new(config, cfg.rings_max) {
                    Ok(rings) => rings,
                    Err(e) => {
                        let _ = ready.send(Err(format!("worker {index}: io_uring set-up: {e}")));
                        return None;
                    }
                };
                boxes.set_ring_fd(index, rings.primary().fd());
                let _ = ready.send(Ok(()));
                start.wait();
                // The ids this worker owns now, whatever the worker count was.
                let history = match (restored, joined.epoch) {
                    (Some(saved), _) => {
                        let owns = |id| comet_router::shard_of(id, workers) == index;
                        Some(comet_router::History::import(cfg.history, &saved, owns))
                    }
                    // JetStream: the stream numbers the messages, from where it stood.
                    (None, Some(_)) => {
                        Some(comet_router::History::joined(cfg.history, joined.last_seq))
                    }
                    (None, None) => None,
                };
                let worker = worker::Worker::new(
                    index, cfg, shared, boxes, inbox, rings, fds, publisher, history,
                );
                worker.run(shutdown_fd, (&left, &done), save)
            })
            .map_err(|e| format!("spawning a worker: {e}"))?;
        threads.push(thread);
    }
    drop(ready_tx);
    // Each worker imports what it owns; this copy would keep every restored message alive.
    drop(restored);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a worker died during set-up".into()),
        }
    }
    if let Some(bridge) = bridge.as_mut() {
        let mailer =
            cluster::Mailer::new(boxes.clone()).map_err(|e| format!("cluster bell: {e}"))?;
        bridge.run(Box::new(mailer));
    }
    let cluster = bridge;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| format!("signals: {e}"))?;
    start.wait();
    shared.heap_baseline.store(
        comet_ring::sys::heap_in_use().unwrap_or(0),
        std::sync::atomic::Ordering::Relaxed,
    );
    tracing::info!(
        workers,
        ring_files = cfg.ring_files,
        ring_cap = cfg.ring_cap,
        rings_max = cfg.rings_max,
        worker_cap = cfg.worker_cap,
        "comet started"
    );
    println!("comet: listening public={public_addr} publish={publish_addr} workers={workers}");
    let _ = std::io::stdout().flush();

    // Memory a burst used and freed goes back to the kernel within TRIM_EVERY (the write
    // buffers' own pool gives back its idle buffers on the workers' timer first).
    std::thread::Builder::new()
        .name("comet-trim".into())
        .spawn(|| loop {
            std::thread::sleep(TRIM_EVERY);
            comet_ring::sys::release_free_memory();
        })
        .map_err(|e| format!("spawning the trim thread: {e}"))?;
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "shutting down");
    }
    let stopping = std::time::Instant::now();
    comet_ring::sys::eventfd_signal(&shutdown).map_err(|e| format!("eventfd: {e}"))?;
    // The bridge runs until every stream has ended: a publish being stored when the signal
    // came gets its acknowledgement, and so its answer.
    left.wait();
    let ms = stopping.elapsed().as_millis() as u64;
    tracing::info!(ms, "every stream ended");
    // It rings the workers' rings: they stay open until `done`.
    if let Some(bridge) = cluster {
        bridge.stop();
    }
    done.wait();
    // A worker's panic aborts the process (the hook above): a join fails only then.
    let shards: Vec<_> = threads
        .into_iter()
        .filter_map(|thread| thread.join().ok().flatten())
        .collect();
    drop((public, publish));
    if let Some(dir) = &args.state_dir {
        let epoch = cfg.epoch;
        let (path, bytes) = state::save(dir, &state::State { epoch, shards })?;
        let (path, epoch) = (path.display(), format!("{epoch:08x}"));
        tracing::info!(epoch, bytes, "state saved to {path}");
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listener caps the retransmission timeout at a quarter of the unacked timeout, and
    /// accepted sockets inherit the cap with TCP_USER_TIMEOUT; no cap without an unacked timeout.
    #[test]
    fn accepted_sockets_inherit_the_rto_cap() {
        assert_eq!(rto_max_ms(30_000), 7_500);
        assert_eq!(rto_max_ms(2_000), 1_000);
        assert_eq!(rto_max_ms(3_600_000), 120_000);
        let socket = listener("127.0.0.1:0".parse().unwrap(), 16, 30_000).unwrap();
        assert_eq!(comet_ring::sys::tcp_rto_max_ms(&socket).unwrap(), 7_500);
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        socket.set_nonblocking(false).unwrap();
        let (accepted, _) = socket.accept().unwrap();
        assert_eq!(comet_ring::sys::tcp_rto_max_ms(&accepted).unwrap(), 7_500);
        assert_eq!(
            accepted.tcp_user_timeout().unwrap(),
            Some(std::time::Duration::from_secs(30))
        );
        let plain = listener("127.0.0.1:0".parse().unwrap(), 16, 0).unwrap();
        let kernel = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rto_max_ms").unwrap();
        assert_eq!(
            comet_ring::sys::tcp_rto_max_ms(&plain).unwrap(),
            kernel.trim().parse::<u32>().unwrap()
        );
    }
}
