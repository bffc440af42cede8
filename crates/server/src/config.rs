//! `comet serve` flags and the limits derived from them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Every flag also reads `COMET_<FLAG>` and the config file (settings.rs); a flag wins over its
/// variable, a variable over the file.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// A TOML file with settings of this command: keys are the long flag names
    /// (`history-messages = 32`). A flag or a COMET_* variable wins over the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Subscriber (public) listener.
    #[arg(long, default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,
    /// Publish API and /metrics listener; loopback by default so the public port cannot publish.
    /// Another address needs --publish-secret (or --insecure-publish).
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub publish_listen: SocketAddr,
    /// Allow a --publish-listen address other than loopback without --publish-secret: for a
    /// network where something else (a firewall, a private container network) keeps the
    /// publish port away from everyone who must not publish.
    #[arg(long)]
    pub insecure_publish: bool,
    /// Worker threads, each with its own io_uring rings, listeners and shard of the id table.
    /// Default: one per CPU. A worker drives as many rings as its share of --connections-max
    /// needs (each ring's fixed-file table is bounded by RLIMIT_NOFILE): see kernel-tuning.md.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Connections the server holds at most, shared equally by the workers; past it accepting
    /// stops and connections wait in the listen backlog. It bounds how many rings a worker may
    /// open. Default: 1,048,576, or one full ring per worker if that is more.
    #[arg(long)]
    pub connections_max: Option<u64>,
    /// Test-only: fixed-file slots per ring (default: the open-files limit, at most 1,048,576),
    /// so that tests can spread a few hundred connections over many rings
    /// (`COMET_RING_FILES=128 COMET_BACKLOG=16`). Not for production: more, smaller rings only
    /// cost more.
    #[arg(long, hide = true, alias = "files-per-worker")]
    pub ring_files: Option<u32>,
    /// listen(2) backlog of each listener (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = 1024)]
    pub backlog: u32,
    /// Submission queue entries of each worker's first ring (the completion queue gets 4x); its
    /// other rings (past the open-files limit) get a quarter. The rings' memory is resident:
    /// 1024 entries cost ~130 KiB per ring. A full queue is flushed early, not an error.
    #[arg(long, default_value_t = 1024)]
    pub ring_entries: u32,
    /// Provided read buffers per ring (a power of two) and their size in bytes. They are shared
    /// by every connection of the ring and handed back as soon as a read is parsed, so a few
    /// suffice; each is touched once the ring has cycled through it (64 x 4 KiB = 256 KiB).
    #[arg(long, default_value_t = 64)]
    pub read_buffers: u16,
    #[arg(long, default_value_t = 4096)]
    pub read_buffer_size: u32,
    /// Largest request head (request line and headers); larger gets 431.
    #[arg(long, default_value_t = 8192)]
    pub header_bytes_max: usize,
    /// Largest publish body; larger gets 413.
    #[arg(long, default_value_t = 65536)]
    pub body_bytes_max: usize,
    /// Most distinct ids one subscriber connection may log in as (`/test/1,2,3`).
    #[arg(long, default_value_t = 64)]
    pub ids_per_connection_max: usize,
    /// A request must be complete this long after its connection became ready for it;
    /// otherwise 408 and close.
    #[arg(long, default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// A keep-alive publish connection with nothing in progress is closed after this.
    #[arg(long, default_value_t = 300_000)]
    pub idle_timeout_ms: u64,
    /// Bytes a subscriber may have waiting (sent to the kernel but unsent, plus queued) before it
    /// counts as a slow consumer (see --slow-consumer).
    #[arg(long, default_value_t = 256 * 1024)]
    pub queue_bytes_max: usize,
    /// Messages a subscriber may have waiting before it counts as a slow consumer.
    #[arg(long, default_value_t = 1024)]
    pub queue_messages_max: usize,
    /// What happens to a slow consumer: `disconnect` (it resumes from the history) or
    /// `drop-oldest` (its oldest queued messages are dropped, counted).
    #[arg(long, value_enum, default_value_t = SlowConsumer::Disconnect)]
    pub slow_consumer: SlowConsumer,
    /// Messages kept per id for resume (0 turns history and resume off).
    #[arg(long, default_value_t = 32)]
    pub history_messages: usize,
    /// Age past which a message leaves the history.
    #[arg(long, default_value_t = 120_000)]
    pub history_age_ms: u64,
    /// History bytes at most, for the whole server (each worker gets an equal share); past its
    /// share a worker forgets its oldest messages first.
    #[arg(long, default_value_t = 128 << 20)]
    pub history_bytes_max: usize,
    /// A stream that sent nothing for this long gets a heartbeat (SSE comment, WebSocket ping);
    /// 0 turns heartbeats off.
    #[arg(long, default_value_t = 15_000)]
    pub heartbeat_ms: u64,
    /// Data a peer leaves unacknowledged this long fails its connection (TCP_USER_TIMEOUT on
    /// the listeners, inherited by every accepted socket, with the retransmission timeout
    /// capped at a quarter of this, TCP_RTO_MAX_MS): with heartbeats on, a peer that vanished
    /// without a FIN is freed within 2 x --heartbeat-ms + 1.25 x this (README, Dead peers);
    /// 0 keeps the kernel's retransmission limit (~15 minutes).
    #[arg(long, default_value_t = 30_000)]
    pub unacked_timeout_ms: u64,
    /// Heartbeats on the seed's `/test/` streams too (a chunk holding one newline).
    #[arg(long)]
    pub test_heartbeats: bool,
    /// How long a long-poll (`/poll/<id>`) waits for a message before answering with none.
    #[arg(long, default_value_t = 30_000)]
    pub poll_timeout_ms: u64,
    /// Subscribe requests carrying a position (resumes) admitted per second, the node's
    /// workers together; past it they wait in line (up to 5 s) and beyond that get 503 with
    /// Retry-After. 0: no limit.
    #[arg(long, default_value_t = 10_000)]
    pub resume_rate: u64,
    /// Subscribers need a JWT (HS256) signed with this secret; off when not set.
    #[arg(long)]
    pub auth_secret: Option<String>,
    /// Publish-API requests need `Authorization: Bearer <secret>`; off when not set.
    #[arg(long)]
    pub publish_secret: Option<String>,
    /// Web origins whose pages may subscribe: `*` or a comma-separated list
    /// (`https://app.example,https://www.example`). Requests without Origin are allowed.
    #[arg(long, default_value = "*")]
    pub allowed_origins: String,
    /// Serve a demo page at `/` on the subscriber port.
    #[arg(long)]
    pub demo: bool,
    /// On SIGINT/SIGTERM, how long open streams get to receive their final chunk.
    #[arg(long, default_value_t = 2_000)]
    pub shutdown_timeout_ms: u64,
    /// Log lines on stderr: `text` (coloured only when stderr is a terminal) or `json` (one
    /// object per line). RUST_LOG filters them (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub cluster: crate::cluster::ClusterArgs,
    /// Web origins allowed to call the publish API (comma-separated); a publish request that
    /// carries any other `Origin` gets 403. Default: none (no web page may publish).
    #[arg(long)]
    pub publish_allowed_origins: Option<String>,
    /// Host names the publish API answers to besides localhost and IP addresses
    /// (comma-separated, `name` or `name:port`); any other `Host` gets 403 (DNS rebinding).
    #[arg(long)]
    pub publish_hosts: Option<String>,
    /// `/metrics` needs `Authorization: Bearer <secret>` with this secret, and the publish
    /// secret no longer opens it (a scraper cannot publish). Unset: `/metrics` takes the
    /// publish secret.
    #[arg(long, env = "COMET_METRICS_SECRET", hide_env_values = true)]
    pub metrics_secret: Option<String>,
    /// Serve `/healthz` and `/readyz` on the subscriber port too (always on the publish port).
    #[arg(long)]
    pub public_health: bool,
    /// Keep positions across a graceful restart: on SIGINT/SIGTERM the epoch and every id's
    /// history are saved to DIR/comet.state, and loaded at the next start (the file is then
    /// renamed comet.state.loaded, so that a later crash cannot bring stale positions back).
    /// A file that fails its checks stops the start. Single node only: not with --cluster.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowConsumer {
    Disconnect,
    DropOldest,
}

/// Which web origins may subscribe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origins {
    Any,
    Only(Vec<Vec<u8>>),
}

impl Origins {
    fn parse(text: &str) -> Result<Origins, String> {
        if text.trim() == "*" {
            return Ok(Origins::Any);
        }
        let list: Vec<Vec<u8>> = text
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').as_bytes().to_vec())
            .filter(|o| !o.is_empty())
            .collect();
        if list.is_empty() || list.iter().any(|o| o.contains(&b'*') || !o.contains(&b':')) {
            return Err(format!(
                "--allowed-origins must be * or a list of origins like https://app.example, got {text:?}"
            ));
        }
        Ok(Origins::Only(list))
    }

    /// The `Access-Control-Allow-Origin` value for a request with `origin`, or `None` when
    /// the origin may not subscribe. A request without an Origin header is not from a page.
    pub fn allow<'a>(&self, origin: Option<&'a [u8]>) -> Option<&'a [u8]> {
        match (self, origin) {
            (Origins::Any, _) | (Origins::Only(_), None) => Some(b"*"),
            (Origins::Only(list), Some(origin)) => list
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin))
                .then_some(origin),
        }
    }
}

/// Everything a worker needs to know, fixed at start.
#[derive(Clone, Debug)]
pub struct Config {
    pub workers: usize,
    /// Fixed-file slots of each ring's table.
    pub ring_files: u32,
    /// Connections a ring admits at most: its table size less a few slots of slack. Its last
    /// `accept_singles_zone` slots are taken by one-shot accepts, never more in flight than
    /// free slots, so no accept overfills the table (a full table drops a connection).
    pub ring_cap: usize,
    /// A ring with less room than this accepts with one-shot accepts (exactly one connection
    /// each) rather than a multishot accept: the listen backlog and a full completion queue,
    /// what a multishot accept may still take between the room check and its cancel.
    pub accept_singles_zone: usize,
    /// Connections a worker admits at most (its share of `--connections-max`).
    pub worker_cap: usize,
    /// Rings a worker may open: enough for `worker_cap` at `ring_cap` each.
    pub rings_max: usize,
    pub ring_entries: u32,
    pub read_buffers: u16,
    pub read_buffer_size: u32,
    pub limits: comet_http::Limits,
    pub ids_per_connection_max: usize,
    pub request_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub queue_bytes_max: usize,
    pub queue_messages_max: usize,
    pub slow_consumer: SlowConsumer,
    pub shutdown_timeout_ms: u64,
    pub history: comet_router::HistoryConfig,
    pub heartbeat_ms: u64,
    pub test_heartbeats: bool,
    pub poll_timeout_ms: u64,
    /// Resumes admitted per second by each worker (its share of `--resume-rate`); 0: no
    /// limit.
    pub resume_rate_per_worker: u64,
    pub auth: Option<crate::auth::Auth>,
    pub publish_secret: Option<Vec<u8>>,
    pub origins: Origins,
    pub demo: bool,
    /// Drawn at start: written in every position, so that a position from another node or an
    /// earlier run is recognised (and answered with a gap) rather than compared.
    pub epoch: u32,
    /// `--publish-allowed-origins`, without trailing `/`.
    pub publish_origins: Vec<Vec<u8>>,
    /// `--publish-hosts`.
    pub publish_hosts: Vec<Vec<u8>>,
    pub metrics_secret: Option<Vec<u8>>,
    pub public_health: bool,
}

/// The kernel's bound on a fixed-file table.
const FILES_KERNEL_MAX: u32 = 1 << 20;
/// Slots of a ring's table never admitted into (see `Config::ring_cap`).
const ADMISSION_SLACK: u32 = 64;
/// The default `--connections-max` (unless one full ring per worker is more).
const CONNECTIONS_DEFAULT: u64 = 1 << 20;

impl Config {
    /// The kernel keeps a listen queue of at most `somaxconn` (net.core.somaxconn) whatever
    /// `--backlog` asks: the one-shot zone need only cover the queue it keeps. Returns the
    /// backlog the kernel will use.
    pub fn cap_backlog(&mut self, backlog: u32, somaxconn: u32) -> u32 {
        let kept = backlog.min(somaxconn);
        self.accept_singles_zone = (kept + 4 * self.ring_entries) as usize;
        kept
    }

    pub fn new(args: &ServeArgs, nofile_limit: u64) -> Result<Config, String> {
        let workers = args
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if workers == 0 || workers > comet_router::ConnRef::WORKERS_MAX {
            return Err(format!(
                "--workers must be 1..={}",
                comet_router::ConnRef::WORKERS_MAX
            ));
        }
        let limit = u32::try_from(nofile_limit.min(FILES_KERNEL_MAX as u64)).unwrap_or(u32::MAX);
        let files = args.ring_files.unwrap_or(limit);
        if files > limit {
            return Err(format!(
                "--ring-files {files} is over the open-files limit {limit} (see kernel-tuning.md)"
            ));
        }
        if files <= ADMISSION_SLACK {
            return Err(format!(
                "a ring of {files} files leaves no room past its {ADMISSION_SLACK} slots of slack"
            ));
        }
        let ring_cap = u64::from(files - ADMISSION_SLACK);
        // Rings a worker needs for its share; each ring's slots follow the previous ring's in
        // the worker's table, which a ConnRef (and a user_data) must be able to name.
        let slots_max = comet_router::ConnRef::SLOTS_MAX as u64;
        let addressable = workers as u64 * (slots_max / u64::from(files)) * ring_cap;
        let connections = match args.connections_max {
            Some(0) => return Err("--connections-max must be at least 1".into()),
            Some(n) => n,
            // The default, within what the workers can address (tiny test rings).
            None => CONNECTIONS_DEFAULT
                .max(workers as u64 * ring_cap)
                .min(addressable),
        };
        let worker_cap = connections.div_ceil(workers as u64);
        let rings_max = worker_cap.div_ceil(ring_cap);
        if rings_max * u64::from(files) > slots_max {
            return Err(format!(
                "--connections-max {connections} needs {rings_max} rings of {files} slots per \
                 worker, over the {slots_max} slots a worker can address: use more --workers"
            ));
        }
        if !args.read_buffers.is_power_of_two() || args.read_buffers > 32768 {
            return Err("--read-buffers must be a power of two, at most 32768".into());
        }
        if !args.ring_entries.is_power_of_two() || !(64..=32768).contains(&args.ring_entries) {
            return Err("--ring-entries must be a power of two in 64..=32768".into());
        }
        if args.read_buffer_size < 512 {
            return Err("--read-buffer-size must be at least 512".into());
        }
        if args.ids_per_connection_max == 0 {
            return Err("--ids-per-connection-max must be at least 1".into());
        }
        if args.queue_messages_max == 0 || args.queue_bytes_max == 0 {
            return Err("--queue-messages-max and --queue-bytes-max must be at least 1".into());
        }
        let secret = |name: &str, value: &Option<String>| match value.as_deref() {
            Some("") => Err(format!("{name} is empty")),
            other => Ok(other.map(|s| s.as_bytes().to_vec())),
        };
        let auth_secret = secret("--auth-secret", &args.auth_secret)?;
        let publish_secret = secret("--publish-secret", &args.publish_secret)?;
        check_publish_listen(
            args.publish_listen,
            publish_secret.is_some(),
            args.insecure_publish,
        )?;
        let metrics_secret = secret("--metrics-secret", &args.metrics_secret)?;
        let publish_origins = match &args.publish_allowed_origins {
            None => Vec::new(),
            Some(text) => match Origins::parse(text).map_err(|e| e.replace("--", "--publish-"))? {
                Origins::Only(list) => list,
                Origins::Any => return Err("--publish-allowed-origins takes no *".into()),
            },
        };
        let publish_hosts = (args.publish_hosts.as_deref().unwrap_or(""))
            .split(',')
            .map(|h| h.trim().as_bytes().to_vec())
            .filter(|h| !h.is_empty())
            .collect();
        Ok(Config {
            workers,
            ring_files: files,
            ring_cap: ring_cap as usize,
            // The completion queue is 4x the submission queue (comet-ring). Capped by the
            // kernel's somaxconn at start (`cap_backlog`).
            accept_singles_zone: (args.backlog + 4 * args.ring_entries) as usize,
            worker_cap: worker_cap as usize,
            rings_max: rings_max as usize,
            ring_entries: args.ring_entries,
            read_buffers: args.read_buffers,
            read_buffer_size: args.read_buffer_size,
            limits: comet_http::Limits {
                header_bytes_max: args.header_bytes_max,
                body_bytes_max: args.body_bytes_max,
                ..comet_http::Limits::default()
            },
            ids_per_connection_max: args.ids_per_connection_max,
            request_timeout_ms: args.request_timeout_ms.max(1),
            idle_timeout_ms: args.idle_timeout_ms.max(1),
            queue_bytes_max: args.queue_bytes_max,
            queue_messages_max: args.queue_messages_max,
            slow_consumer: args.slow_consumer,
            shutdown_timeout_ms: args.shutdown_timeout_ms,
            history: comet_router::HistoryConfig {
                messages_max: args.history_messages,
                age_us: args.history_age_ms.saturating_mul(1000),
                bytes_max: (args.history_bytes_max / workers).max(1),
            },
            heartbeat_ms: args.heartbeat_ms,
            test_heartbeats: args.test_heartbeats,
            poll_timeout_ms: args.poll_timeout_ms.max(1),
            resume_rate_per_worker: args.resume_rate.div_ceil(workers as u64),
            auth: auth_secret.map(|s| crate::auth::Auth::new(&s)),
            publish_secret,
            origins: Origins::parse(&args.allowed_origins)?,
            demo: args.demo,
            epoch: random_u32(),
            publish_origins,
            publish_hosts,
            metrics_secret,
            public_health: args.public_health,
        })
    }
}

#[cfg(test)]
impl Config {
    /// The configuration of `comet serve` with these flags, for unit tests.
    pub fn for_tests_with(args: &[&str]) -> Config {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let cli = Cli::parse_from(std::iter::once("comet").chain(args.iter().copied()));
        Config::new(&cli.serve, 20_000).expect("a valid test configuration")
    }

    /// The defaults of `comet serve`, for unit tests.
    pub fn for_tests() -> Config {
        Config::for_tests_with(&[])
    }
}

/// A publish listener others can reach, without a secret, lets anyone who reaches it publish
/// to every subscriber and disconnect them: refused unless `--insecure-publish` says something
/// else keeps it private.
fn check_publish_listen(addr: SocketAddr, secret: bool, insecure: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || secret || insecure {
        return Ok(());
    }
    Err(format!(
        "--publish-listen {addr} is not a loopback address and no --publish-secret is set: \
         anyone who can reach it could publish to every subscriber. Set a secret \
         (--publish-secret or COMET_PUBLISH_SECRET; publishers send Authorization: Bearer \
         <secret>), or listen on 127.0.0.1, or pass --insecure-publish if a firewall or a \
         private network already keeps the port from everyone else"
    ))
}

/// A random number without a dependency: std's per-process random hash keys, over the clock.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rings a worker may open follow from --connections-max and the open-files limit
    /// (20,000 here), not from the backlog; nobody computes them. The one-shot zone follows from
    /// the backlog and the completion queue.
    #[test]
    fn rings_per_worker_are_derived() {
        let cfg = Config::for_tests_with(&["--workers", "2"]);
        assert_eq!(cfg.ring_files, 20_000);
        assert_eq!(cfg.ring_cap, 20_000 - 64);
        assert_eq!(cfg.accept_singles_zone, 1024 + 4 * 1024);
        assert_eq!(cfg.worker_cap, 1 << 19);
        assert_eq!(cfg.rings_max, (1usize << 19).div_ceil(19_936));
        assert_eq!(cfg.rings_max, 27);
        let deep = Config::for_tests_with(&["--workers", "2", "--backlog", "4096"]);
        assert_eq!(
            (deep.ring_cap, deep.rings_max),
            (cfg.ring_cap, cfg.rings_max)
        );
        // A backlog past the kernel's somaxconn is cut to it, and so is the zone.
        let mut capped = Config::for_tests_with(&["--workers", "2", "--backlog", "32768"]);
        assert_eq!(capped.accept_singles_zone, 32768 + 4 * 1024);
        assert_eq!(capped.cap_backlog(32768, 4096), 4096);
        assert_eq!(capped.accept_singles_zone, 4096 + 4 * 1024);
        let small = Config::for_tests_with(&["--workers", "1", "--connections-max", "1000"]);
        assert_eq!((small.worker_cap, small.rings_max), (1000, 1));
        // The test-only small tables: 64 connections a ring.
        let tiny =
            Config::for_tests_with(&["--workers", "1", "--ring-files", "128", "--backlog", "16"]);
        assert_eq!(tiny.ring_cap, 64);
        assert!(tiny.rings_max * 128 <= comet_router::ConnRef::SLOTS_MAX);
        // Past what a worker's slots can name, the start is refused.
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let cli = Cli::parse_from(["comet", "--workers", "1", "--connections-max", "100000000"]);
        let e = Config::new(&cli.serve, 20_000).unwrap_err();
        assert!(e.contains("use more --workers"), "{e}");
    }

    #[test]
    fn publish_listen_beyond_loopback_needs_a_secret() {
        let addr = |text: &str| text.parse::<SocketAddr>().unwrap();
        for loopback in ["127.0.0.1:8001", "127.0.0.2:8001", "[::1]:8001"] {
            assert_eq!(check_publish_listen(addr(loopback), false, false), Ok(()));
        }
        for open in ["0.0.0.0:8001", "10.0.0.5:8001", "[::]:8001"] {
            let e = check_publish_listen(addr(open), false, false).unwrap_err();
            assert!(
                e.contains("--publish-secret") && e.contains("--insecure-publish"),
                "{e}"
            );
            assert_eq!(check_publish_listen(addr(open), true, false), Ok(()));
            assert_eq!(check_publish_listen(addr(open), false, true), Ok(()));
        }
    }

    #[test]
    fn origins() {
        assert_eq!(Origins::parse("*").unwrap(), Origins::Any);
        let only = Origins::parse("https://a.example, http://b.example:8080/").unwrap();
        assert_eq!(only.allow(None), Some(&b"*"[..]));
        assert_eq!(
            only.allow(Some(b"https://a.example")),
            Some(&b"https://a.example"[..])
        );
        assert_eq!(
            only.allow(Some(b"http://b.example:8080")),
            Some(&b"http://b.example:8080"[..])
        );
        assert_eq!(only.allow(Some(b"https://evil.example")), None);
        assert_eq!(only.allow(Some(b"null")), None);
        assert_eq!(Origins::Any.allow(Some(b"https://x")), Some(&b"*"[..]));
        for bad in ["", "a.example", "https://*.example"] {
            assert!(Origins::parse(bad).is_err(), "{bad}");
        }
    }
}
