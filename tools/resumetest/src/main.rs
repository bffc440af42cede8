//! resumetest: do SSE subscribers that lose their connection and come back with
//! `Last-Event-ID` get every message exactly once, in order?
//!
//! N subscribers (ids first-id .. first-id+N-1) each hold one `GET /events/<id>` stream
//! and parse it ([`sse`]). Once every first connection has given its initial position line
//! (`id: <pos>` alone), a publisher sends `--rate` messages per second for `--duration` over
//! one keep-alive, pipelined connection to `POST /send/<id>`, round-robin over the ids, body
//! `<id>:<n>` with n counting 1, 2, 3, ... per id; it reads every answer. Meanwhile the subscribers drop their own TCP connections at random times
//! (`--reconnects` in all, spread evenly over the subscribers, at uniformly random moments of the
//! publishing window; by RST, FIN or either at random), stay away a random moment below
//! `--away-max` (so that messages are published meanwhile) and reconnect with
//! `Last-Event-ID: <the last id seen>`. The first connection starts without it and gets the
//! server's initial position line. With `--churn P` instead, each subscriber drops once every
//! 100/P minutes from its own phase, so that P % of them drop and resume every minute, evenly
//! spread: a soak test's churn, as long as the run lasts, in constant memory.
//!
//! A gap notice is *explained* when the messages it skips could have left comet's history
//! (`--history-messages`, `--history-age`: comet's settings): more than that many messages were
//! published for the id since the last one the subscriber received, or that last one is older
//! than the age. Otherwise it is counted in `gaps_unexplained`, a failure.
//!
//! Each subscriber checks its ids' numbers ([`check`]): `lost` (a number skipped with no
//! `event: gap` before the next message, or never received), `duplicated`, `reordered`,
//! `gaps`. At the end it waits (at most `--drain`) until every subscriber has seen the last
//! number published for its id, prints a summary and one JSON line, and exits 1 if anything
//! was lost, duplicated or reordered, a gap was unexplained or a publish failed; 2 if the run
//! could not be set up. Every `--stats-interval` it prints a progress line (`t=...`).
//!
//! A few threads (`--threads`, one per CPU by default) drive the subscribers, each with one
//! epoll ([`subscriber`]), connecting from several loopback source addresses
//! (`--source-addrs`): tens of thousands work. A resume is timed twice, to the head read and to
//! the head's arrival in the socket (the kernel's receive time, without the client's own
//! delays); each time goes into a shared histogram, so memory does not grow with the run.
//!
//! A cluster: `--target` and `--publish` take several addresses (comet nodes). Subscriber k
//! starts on node k mod nodes and, when its node closes its stream or refuses it (a deploy, a
//! crash), reconnects to a random other node with its last position. With `--attempts-max`
//! above 1 (or several publish addresses) the publisher sends each message with an
//! `Idempotency-Key` and sends it again after a 503 or a lost connection (on the next node),
//! after `Retry-After` or a backoff; the next message of that id waits for it, so each id's
//! order holds. A message counts as published once answered 200.

mod check;
mod sse;
mod subscriber;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use fastrand::Rng;
use hdrhistogram::Histogram;
use serde::Serialize;
use tools_common::clock::Schedule;
use tools_common::latency::{new_histogram, Percentiles};
use tools_common::response::Answer;
use tools_common::sock::loopback_source;

use check::Counts;

/// Longest the publisher sleeps or blocks in one read.
const POLL: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Subscribers per source address when they are chosen automatically (`--source-addrs`): few
/// enough that the address's ports stay mostly free, TIME_WAITs of reconnects included.
const SUBSCRIBERS_PER_SOURCE: usize = 1_000;
/// How long the retrying publisher waits for a batch's answers before it takes the connection
/// as lost (a stored publish is answered within JetStream's 2 s ack timeout).
const PUBLISH_ANSWER_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DropMode {
    /// Close with SO_LINGER 0: the server sees a reset.
    Rst,
    /// shutdown() then close: the server sees end of file.
    Fin,
    /// Either, at random per drop.
    Mixed,
}

#[derive(Parser, Debug, Clone)]
#[command(
    about = "SSE subscribers that keep dropping and resuming with Last-Event-ID, under a \
                   steady publish rate; checks every message arrives exactly once, in order"
)]
struct Opts {
    /// The server's subscriber address (comma-separated: several nodes of a cluster).
    #[arg(long, default_value = "127.0.0.1:8000", value_delimiter = ',')]
    target: Vec<SocketAddr>,
    /// The server's publish address (comma-separated: several nodes, used in turn when one
    /// fails).
    #[arg(long, default_value = "127.0.0.1:8001", value_delimiter = ',')]
    publish: Vec<SocketAddr>,
    /// Tries per message at most: above 1 a 503 or a lost publish connection is retried with
    /// the same Idempotency-Key (a cluster on JetStream).
    #[arg(long, default_value_t = 1)]
    attempts_max: u32,
    /// Subscribers, one connection and one id each.
    #[arg(short = 'n', long, default_value_t = 20)]
    subscribers: u64,
    /// Threads that drive the subscribers (each with one epoll); 0: one per CPU.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Source addresses to spread the subscribers' connections over, 127.0.0.2 onwards
    /// (subscriber k on the (k mod N)-th): Linux's search for a free source port slows down with
    /// tens of thousands of connections to one address (`results/restart/2026-11-30-15k-*`).
    /// Default: with every target on 127.0.0.0/8, one per 1,000 subscribers; 0: the kernel's
    /// choice.
    #[arg(long)]
    source_addrs: Option<u32>,
    #[arg(long, default_value_t = 1)]
    first_id: u64,
    /// Messages per second, all ids together.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long to publish (e.g. 60s, 10m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Client-side drops and reconnects, all subscribers together, at random moments of the
    /// publishing window.
    #[arg(long, default_value_t = 1000)]
    reconnects: u64,
    /// Churn instead of --reconnects: this percentage of the subscribers drops and resumes
    /// every minute (each one once every 100/churn minutes, phases spread evenly).
    #[arg(long)]
    churn: Option<f64>,
    /// Open the first connections at most this many per second (0: all at once).
    #[arg(long, default_value_t = 0.0)]
    connect_rate: f64,
    /// comet's --history-messages: a gap is explained when more messages than this were
    /// published for the id since the last one received.
    #[arg(long, default_value_t = 32)]
    history_messages: u64,
    /// comet's --history-age-ms: a gap is explained when the last message received is older.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    history_age: Duration,
    /// Time between progress lines.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    stats_interval: Duration,
    /// How a subscriber drops its connection.
    #[arg(long = "drop", value_enum, default_value_t = DropMode::Mixed)]
    drop_mode: DropMode,
    /// After a drop, a subscriber stays away for a uniformly random time below this before it
    /// reconnects, so that messages are published while it is away and must come from the
    /// history (0 = reconnect at once).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    away_max: Duration,
    /// After the server ends, cuts or refuses a stream, wait the reconnection time its last
    /// `retry:` field gave (1 s before any) before reconnecting, as EventSource does: comet
    /// spreads a deploy's reconnects that way. Without it, reconnect at once (a client that
    /// ignores the hint: the worst case for the server).
    #[arg(long)]
    follow_retry: bool,
    /// How long to wait, after publishing, for every subscriber to see its last message.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// How long to wait for every subscriber's first stream before publishing.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ready_timeout: Duration,
    /// Publish requests in flight at most (pipelining depth).
    #[arg(long, default_value_t = 256)]
    pipeline_max: u64,
    /// Random seed for the drop schedule (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Subscribe with `Authorization: Bearer <jwt>`, HS256 with this secret, `sub` the id (for
    /// a comet started with `--auth-secret`).
    #[arg(long)]
    jwt_secret: Option<String>,
    /// Publish with `Authorization: Bearer <secret>` (comet's `--publish-secret`).
    #[arg(long)]
    publish_secret: Option<String>,
    /// Write the final JSON line here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// When each subscriber drops its connection, relative to the start of publishing: `total`
/// drops split as evenly as possible over `subscribers`, each at a uniformly random moment of
/// `window`, sorted per subscriber.
fn drop_schedule(
    total: u64,
    subscribers: usize,
    window: Duration,
    rng: &mut Rng,
) -> Vec<Vec<Duration>> {
    let n = subscribers as u64;
    (0..n)
        .map(|k| {
            let count = total / n + u64::from(k < total % n);
            let mut times: Vec<Duration> = (0..count).map(|_| window.mul_f64(rng.f64())).collect();
            times.sort_unstable();
            times
        })
        .collect()
}

/// When one subscriber drops, relative to the start of publishing.
#[derive(Clone, Debug, PartialEq)]
enum Drops {
    /// These moments (sorted).
    At(Vec<Duration>),
    /// `first`, then every `period`, while inside `window`.
    Every {
        first: Duration,
        period: Duration,
        window: Duration,
    },
}

impl Drops {
    /// The moment of drop `i` (0-based), None past the last one.
    fn get(&self, i: usize) -> Option<Duration> {
        match self {
            Drops::At(times) => times.get(i).copied(),
            Drops::Every {
                first,
                period,
                window,
            } => {
                let t = *first + period.mul_f64(i as f64);
                (t < *window).then_some(t)
            }
        }
    }

    fn count(&self) -> u64 {
        (0..).take_while(|&i| self.get(i).is_some()).count() as u64
    }
}

/// Churn: `percent_per_minute` % of `subscribers` drop every minute. Each drops once a period
/// (100 / percent minutes), subscriber k first at `period * (k + u) / subscribers` with u
/// uniform in [0, 1), so that the drops spread evenly over every minute.
fn churn_schedule(
    percent_per_minute: f64,
    subscribers: usize,
    window: Duration,
    rng: &mut Rng,
) -> Vec<Drops> {
    let period = Duration::from_secs(60).mul_f64(100.0 / percent_per_minute);
    (0..subscribers)
        .map(|k| Drops::Every {
            first: period.mul_f64((k as f64 + rng.f64()) / subscribers as f64),
            period,
            window,
        })
        .collect()
}

/// `<id>:<n>` -> (id, n).
fn parse_body(data: &str) -> Option<(u64, u64)> {
    let (id, n) = data.split_once(':')?;
    Some((id.parse().ok()?, n.parse().ok()?))
}

/// What all threads share.
struct Shared {
    /// Set once every subscriber streams: the start of publishing and of the drop schedule.
    start: OnceLock<Instant>,
    stop: AtomicBool,
    /// Per subscriber: `Checker::last()`, for the final wait.
    last: Vec<AtomicU64>,
    /// Progress, for the per-second line.
    received: AtomicU64,
    reconnects: AtomicU64,
    /// Scheduled drops not done yet, or done and not resumed yet: a drop waits until its
    /// connection streams, and leaves this count once its reconnect streams again (head 200,
    /// its resume time recorded). Counted down at the drop itself, the end of the run could
    /// come while a subscriber that had every message was still away, its resume never made.
    drops_left: AtomicU64,
    /// Per subscriber: the last n the publisher sent, for explaining gaps.
    published: Vec<AtomicU64>,
    /// Progress sums over the subscribers (see `Checker::progress`).
    duplicated: AtomicU64,
    reordered: AtomicU64,
    gaps: AtomicU64,
    gaps_unexplained: AtomicU64,
    lost_so_far: AtomicI64,
    server_closes: AtomicU64,
    /// Resume times (connect to head), microseconds.
    resume_us: Mutex<Histogram<u64>>,
    /// The same to the head's arrival in the client's socket (the kernel's receive time), so
    /// without the client's own delays in reading it.
    resume_arrival_us: Mutex<Histogram<u64>>,
}

/// Connection-level counts of one subscriber (or, summed, of all).
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct ConnStats {
    /// Client-side drops, each followed by a reconnect.
    reconnects: u64,
    drops_rst: u64,
    drops_fin: u64,
    /// Streams the server ended (EOF, reset, final chunk); resumed like a drop.
    server_closes: u64,
    /// Gap notices the history's limits do not explain (see the crate doc): failures.
    gaps_unexplained: u64,
    /// Reconnects made with no id seen yet (they cannot resume; should be 0).
    resumed_without_id: u64,
    connect_errors: u64,
    /// Answers other than 200 (the subscriber retries after 100 ms).
    status_errors: u64,
    framing_errors: u64,
    /// Blocks with an id and no data: positions.
    positions: u64,
    /// Subscribers whose first connection gave no position within a second of the head.
    no_initial_position: u64,
    /// Comment lines: heartbeats.
    heartbeats: u64,
    /// Messages a resuming connection got before its position line: replayed from the history.
    replayed: u64,
    /// Resumes whose head came without a kernel receive time (not in `resume_arrival_ms`).
    resumes_unstamped: u64,
    /// Data that is not `<id>:<n>`.
    malformed: u64,
    /// `<id>:<n>` for another id.
    foreign: u64,
}

impl ConnStats {
    fn add(&mut self, o: &ConnStats) {
        self.reconnects += o.reconnects;
        self.drops_rst += o.drops_rst;
        self.drops_fin += o.drops_fin;
        self.server_closes += o.server_closes;
        self.gaps_unexplained += o.gaps_unexplained;
        self.resumed_without_id += o.resumed_without_id;
        self.connect_errors += o.connect_errors;
        self.status_errors += o.status_errors;
        self.framing_errors += o.framing_errors;
        self.positions += o.positions;
        self.no_initial_position += o.no_initial_position;
        self.heartbeats += o.heartbeats;
        self.replayed += o.replayed;
        self.resumes_unstamped += o.resumes_unstamped;
        self.malformed += o.malformed;
        self.foreign += o.foreign;
    }
}

/// Adds what changed between two of one subscriber's progress counts to the shared sums.
fn report_progress(shared: &Shared, before: &check::Counts, now: &check::Counts) {
    let add = |sum: &AtomicU64, a: u64, b: u64| {
        if b != a {
            sum.fetch_add(b.saturating_sub(a), Ordering::Relaxed);
        }
    };
    add(&shared.duplicated, before.duplicated, now.duplicated);
    add(&shared.reordered, before.reordered, now.reordered);
    add(&shared.gaps, before.gaps, now.gaps);
    if now.lost != before.lost {
        shared
            .lost_so_far
            .fetch_add(now.lost as i64 - before.lost as i64, Ordering::Relaxed);
    }
}

/// Whether a read error only means that the read timeout passed (or a signal came) first.
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

#[derive(Debug, Default)]
struct PubResult {
    sent: u64,
    accepted: u64,
    /// Deliveries the answers promised (sum of `connections`).
    connections: u64,
    /// (subscriber, n) of every message not answered 200, or not answered at all.
    failed: Vec<(usize, u64)>,
    unanswered: u64,
    /// Per subscriber: the last n sent.
    last: Vec<u64>,
    lag_max_ms: f64,
    error: Option<String>,
    /// Messages sent again (after a 503 or a lost connection).
    retried: u64,
    /// Publish connections lost (a node stopping), each followed by a switch to the next node.
    conn_lost: u64,
}

/// A message waiting to be sent again: its number, tries made, when.
#[derive(Clone, Copy, Debug)]
struct Again {
    n: u64,
    attempt: u32,
    at: Instant,
}

/// One publish request of a batch: subscriber, number, try.
type Try = (usize, u64, u32);

/// The publisher with retries (`--attempts-max` above 1, or several publish addresses):
/// batches of pipelined requests on one connection, each batch's answers read before the next;
/// a 503 or a lost connection puts the message back for its id (the id's next message waits
/// for it), the connection moves on to the next node. Simple rather than fast: a batch waits a
/// round trip, which at a few thousand messages a second leaves the schedule on time.
fn publisher_retrying(opts: &Opts, start: Instant, shared: &Shared, seed: u64) -> PubResult {
    let subscribers = opts.subscribers as usize;
    let mut result = PubResult {
        last: vec![0; subscribers],
        ..PubResult::default()
    };
    let mut rng = Rng::with_seed(seed);
    let mut again: Vec<Option<Again>> = vec![None; subscribers];
    let mut node = 0;
    let mut conn: Option<TcpStream> = None;
    let total = (opts.rate * opts.duration.as_secs_f64()).round() as u64;
    let schedule = Schedule::new(opts.rate, Some(total));
    let mut slot = 0u64;
    let mut lag_max = Duration::ZERO;
    let drain_end = |now: Instant| now + opts.drain;
    let mut draining_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let mut batch: Vec<Try> = Vec::new();
        if slot < total {
            let elapsed = start.elapsed();
            let due = schedule.due(elapsed);
            if slot >= due {
                thread::sleep(schedule.at(slot).saturating_sub(elapsed).min(POLL));
                continue;
            }
            lag_max = lag_max.max(elapsed.saturating_sub(schedule.at(slot)));
            let end = due.min(slot + opts.pipeline_max);
            for s in slot..end {
                let k = (s % opts.subscribers) as usize;
                match again[k] {
                    // Not due yet: this id skips its turn (its next message waits).
                    Some(a) if a.at > now => {}
                    Some(a) => {
                        again[k] = None;
                        batch.push((k, a.n, a.attempt + 1));
                    }
                    None => {
                        let n = result.last[k] + 1;
                        result.last[k] = n;
                        shared.published[k].store(n, Ordering::Relaxed);
                        result.sent += 1;
                        batch.push((k, n, 1));
                    }
                }
            }
            slot = end;
        } else {
            // Publishing is over: send what is due again until none is left or the drain ends.
            let until = *draining_until.get_or_insert_with(|| drain_end(now));
            let waiting: Vec<usize> = (0..subscribers).filter(|&k| again[k].is_some()).collect();
            if waiting.is_empty() || now >= until {
                for k in waiting {
                    let a = again[k].take().expect("waiting");
                    result.failed.push((k, a.n));
                }
                break;
            }
            for k in waiting {
                let a = again[k].expect("waiting");
                if a.at <= now && batch.len() < opts.pipeline_max as usize {
                    again[k] = None;
                    batch.push((k, a.n, a.attempt + 1));
                }
            }
            if batch.is_empty() {
                thread::sleep(POLL / 10);
                continue;
            }
        }
        if batch.is_empty() {
            continue;
        }
        result.retried += batch.iter().filter(|t| t.2 > 1).count() as u64;
        let outcome = publish_batch(opts, &mut conn, &mut node, &batch, seed);
        let now = Instant::now();
        let attempts_max = opts.attempts_max;
        let mut put_back = |t: Try, retry_after: Option<u64>, failed: &mut Vec<(usize, u64)>| {
            let (k, n, attempt) = t;
            let after = retry_after.map(Duration::from_secs);
            match tools_common::retry::delay(attempt, attempts_max, after, rng.f64()) {
                Some(delay) => {
                    again[k] = Some(Again {
                        n,
                        attempt,
                        at: now + delay,
                    })
                }
                None => failed.push((k, n)),
            }
        };
        let mut answered = 0;
        for (t, answer) in batch.iter().zip(&outcome.answers) {
            answered += 1;
            match answer.status {
                200 => {
                    result.accepted += 1;
                    result.connections += answer.connections;
                }
                status if tools_common::retry::retryable(status) => {
                    put_back(*t, answer.retry_after_s, &mut result.failed)
                }
                status => {
                    if result.failed.is_empty() {
                        eprintln!("resumetest: publish answered {status}");
                    }
                    result.failed.push((t.0, t.1));
                }
            }
        }
        if answered < batch.len() {
            // The connection was lost: the rest may or may not be stored; their keys make a
            // second copy harmless.
            result.conn_lost += 1;
            for t in &batch[answered..] {
                put_back(*t, None, &mut result.failed);
            }
        }
    }
    result.lag_max_ms = lag_max.as_secs_f64() * 1000.0;
    result
}

struct BatchOutcome {
    /// The answers read, in request order (fewer than the batch when the connection was lost).
    answers: Vec<Answer>,
}

/// Writes `batch` as pipelined requests on the current publish connection (connecting to the
/// current node first; on failure the next node is used next time) and reads their answers.
fn publish_batch(
    opts: &Opts,
    conn: &mut Option<TcpStream>,
    node: &mut usize,
    batch: &[Try],
    seed: u64,
) -> BatchOutcome {
    let mut outcome = BatchOutcome {
        answers: Vec::with_capacity(batch.len()),
    };
    let target = opts.publish[*node];
    let lost = |conn: &mut Option<TcpStream>, node: &mut usize| {
        *conn = None;
        *node = (*node + 1) % opts.publish.len();
    };
    if conn.is_none() {
        match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                let _ = s.set_read_timeout(Some(PUBLISH_ANSWER_WAIT));
                *conn = Some(s);
            }
            Err(_) => {
                lost(conn, node);
                thread::sleep(POLL);
                return outcome;
            }
        }
    }
    let auth = opts
        .publish_secret
        .as_ref()
        .map(|s| format!("Authorization: Bearer {s}\r\n"))
        .unwrap_or_default();
    let mut out = Vec::with_capacity(batch.len() * 160);
    for &(k, n, _) in batch {
        let id = opts.first_id + k as u64;
        let body = format!("{id}:{n}");
        out.extend_from_slice(
            format!(
                "POST /send/{id} HTTP/1.1\r\nHost: {target}\r\n{auth}\
                 Idempotency-Key: rt-{seed:x}-{id}-{n}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    let stream = conn.as_ref().expect("connected");
    if (&*stream).write_all(&out).is_err() {
        lost(conn, node);
        return outcome;
    }
    let mut input = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while outcome.answers.len() < batch.len() {
        let mut used = 0;
        while outcome.answers.len() < batch.len() {
            match Answer::parse(&input[used..]) {
                Ok(Some(answer)) => {
                    used += answer.consumed;
                    outcome.answers.push(answer);
                }
                Ok(None) => break,
                Err(_) => {
                    lost(conn, node);
                    return outcome;
                }
            }
        }
        input.drain(..used);
        if outcome.answers.len() == batch.len() {
            break;
        }
        let stream = conn.as_ref().expect("connected");
        match (&*stream).read(&mut buf) {
            Ok(0) | Err(_) => {
                lost(conn, node);
                return outcome;
            }
            Ok(n) => input.extend_from_slice(&buf[..n]),
        }
    }
    outcome
}

/// Reads every answer, attributing them in order to the requests the writer announced.
fn read_answers(
    mut stream: TcpStream,
    announced: &mpsc::Receiver<(usize, u64)>,
    answered: &AtomicU64,
    drain: Duration,
    result: &mut PubResult,
) {
    let mut pending: VecDeque<(usize, u64)> = VecDeque::new();
    let mut input = Vec::with_capacity(64 * 1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut writer_done_at: Option<Instant> = None;
    let _ = stream.set_read_timeout(Some(POLL));
    loop {
        loop {
            match announced.try_recv() {
                Ok(request) => pending.push_back(request),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    writer_done_at.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        if let Some(at) = writer_done_at {
            if pending.is_empty() {
                return;
            }
            if at.elapsed() > drain {
                result.unanswered += pending.len() as u64;
                result.failed.extend(pending.drain(..));
                return;
            }
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => {
                result.error = Some("the publish connection was closed".into());
                0
            }
            Ok(n) => n,
            Err(e) if timed_out(&e) => continue,
            Err(e) => {
                result.error = Some(format!("publish connection: {e}"));
                0
            }
        };
        if n == 0 {
            // Whatever was not answered will never be; the writer notices the dead socket.
            while let Ok(request) = announced.recv_timeout(drain) {
                pending.push_back(request);
            }
            result.unanswered += pending.len() as u64;
            result.failed.extend(pending.drain(..));
            return;
        }
        input.extend_from_slice(&buf[..n]);
        let mut used = 0;
        loop {
            match Answer::parse(&input[used..]) {
                Ok(Some(answer)) => {
                    used += answer.consumed;
                    let request = match pending.pop_front() {
                        Some(r) => r,
                        None => match announced.recv_timeout(Duration::from_secs(1)) {
                            Ok(r) => r,
                            Err(_) => {
                                result.error = Some("an answer to no request".into());
                                return;
                            }
                        },
                    };
                    answered.fetch_add(1, Ordering::Relaxed);
                    if answer.status == 200 {
                        result.accepted += 1;
                        result.connections += answer.connections;
                    } else {
                        if result.failed.is_empty() {
                            eprintln!("resumetest: publish answered {}", answer.status);
                        }
                        result.failed.push(request);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    result.error = Some(e);
                    result.unanswered += pending.len() as u64;
                    result.failed.extend(pending.drain(..));
                    return;
                }
            }
        }
        input.drain(..used);
    }
}

/// Publishes `rate * duration` messages from `start`, round-robin over the subscribers' ids.
fn publisher(opts: &Opts, start: Instant, shared: &Shared) -> PubResult {
    let subscribers = opts.subscribers as usize;
    let mut result = PubResult {
        last: vec![0; subscribers],
        ..PubResult::default()
    };
    let target = opts.publish[0];
    let stream = match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            result.error = Some(format!("connect {target}: {e}"));
            return result;
        }
    };
    let _ = stream.set_nodelay(true);
    let reader_stream = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            result.error = Some(format!("publish socket: {e}"));
            return result;
        }
    };
    let (tx, rx) = mpsc::channel();
    let answered = Arc::new(AtomicU64::new(0));
    let reader = {
        let answered = Arc::clone(&answered);
        let drain = opts.drain;
        thread::spawn(move || {
            let mut r = PubResult::default();
            read_answers(reader_stream, &rx, &answered, drain, &mut r);
            r
        })
    };
    let total = (opts.rate * opts.duration.as_secs_f64()).round() as u64;
    let auth = opts
        .publish_secret
        .as_ref()
        .map(|s| format!("Authorization: Bearer {s}\r\n"))
        .unwrap_or_default();
    let mut out = Vec::with_capacity(64 * 1024);
    let mut sent = 0u64;
    let mut lag_max = Duration::ZERO;
    let schedule = Schedule::new(opts.rate, Some(total));
    while sent < total {
        let elapsed = start.elapsed();
        let due = schedule.due(elapsed);
        if sent >= due {
            thread::sleep(schedule.at(sent).saturating_sub(elapsed));
            continue;
        }
        lag_max = lag_max.max(elapsed.saturating_sub(schedule.at(sent)));
        let in_flight = sent - answered.load(Ordering::Relaxed);
        let end = due.min(sent + opts.pipeline_max.saturating_sub(in_flight));
        if end == sent {
            thread::sleep(Duration::from_millis(1));
            continue;
        }
        out.clear();
        for m in sent..end {
            let k = (m % opts.subscribers) as usize;
            let id = opts.first_id + k as u64;
            let n = m / opts.subscribers + 1;
            let body = format!("{id}:{n}");
            out.extend_from_slice(
                format!(
                    "POST /send/{id} HTTP/1.1\r\nHost: {target}\r\n{auth}Content-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
            result.last[k] = n;
            shared.published[k].store(n, Ordering::Relaxed);
            let _ = tx.send((k, n));
        }
        if let Err(e) = (&stream).write_all(&out) {
            result.error = Some(format!("publish connection: {e}"));
            sent = end;
            break;
        }
        sent = end;
    }
    result.sent = sent;
    result.lag_max_ms = lag_max.as_secs_f64() * 1000.0;
    drop(tx);
    match reader.join() {
        Ok(r) => {
            result.accepted = r.accepted;
            result.connections = r.connections;
            result.failed = r.failed;
            result.unanswered = r.unanswered;
            if result.error.is_none() {
                result.error = r.error;
            }
        }
        Err(_) => result.error = Some("the answer reader panicked".into()),
    }
    result
}

#[derive(Debug, Serialize)]
struct Summary {
    tool: &'static str,
    published: u64,
    received: u64,
    lost: u64,
    duplicated: u64,
    gaps: u64,
    reconnects: u64,
    reordered: u64,
    gap_skipped: u64,
    publish_sent: u64,
    publish_failed: u64,
    publish_unanswered: u64,
    /// Messages sent again after a 503 or a lost publish connection (counted once per try).
    publish_retried: u64,
    /// Publish connections lost (to a node that stopped).
    publish_conn_lost: u64,
    /// Deliveries the publish answers promised (a message published while its subscriber was
    /// reconnecting is promised to no connection, and still must arrive from the history).
    publish_connections: u64,
    publish_lag_max_ms: f64,
    /// Subscribers that had not seen their last message when the drain ended.
    unfinished: u64,
    subscribers: u64,
    target_rate: f64,
    duration_s: f64,
    elapsed_s: f64,
    resume_ms: ResumeMs,
    /// Connect to the head's arrival in the socket (kernel receive time).
    resume_arrival_ms: ResumeMs,
    history_messages: u64,
    history_age_s: f64,
    churn_percent_per_minute: Option<f64>,
    #[serde(flatten)]
    conn: ConnStats,
}

/// Resume times (connect to head) in milliseconds, as the summary prints them.
#[derive(Debug, Serialize)]
struct ResumeMs {
    count: u64,
    p50: f64,
    p99: f64,
    max: f64,
}

impl ResumeMs {
    fn of_us(histogram: &Histogram<u64>) -> Self {
        let p = Percentiles::of(histogram);
        let ms = |us: u64| us as f64 / 1000.0;
        ResumeMs {
            count: p.count,
            p50: ms(p.p50),
            p99: ms(p.p99),
            max: ms(p.max),
        }
    }
}

fn main() {
    let opts = Opts::parse();
    if opts.subscribers == 0 || opts.rate <= 0.0 || opts.churn.is_some_and(|c| c <= 0.0) {
        eprintln!("resumetest: --subscribers, --rate and --churn must be positive");
        std::process::exit(2);
    }
    match run(&opts) {
        Ok(failed) => std::process::exit(i32::from(failed)),
        Err(e) => {
            eprintln!("resumetest: {e}");
            std::process::exit(2);
        }
    }
}

/// Runs the test; Ok(true) when something was lost, duplicated, reordered or not published.
fn run(opts: &Opts) -> Result<bool, String> {
    let subscribers = opts.subscribers as usize;
    let seed = opts.seed.unwrap_or_else(|| fastrand::u64(..));
    let mut rng = Rng::with_seed(seed);
    let schedules: Vec<Drops> = match opts.churn {
        Some(churn) => churn_schedule(churn, subscribers, opts.duration, &mut rng),
        None => drop_schedule(opts.reconnects, subscribers, opts.duration, &mut rng)
            .into_iter()
            .map(Drops::At)
            .collect(),
    };
    let drops_total: u64 = schedules.iter().map(Drops::count).sum();
    let shared = Arc::new(Shared {
        start: OnceLock::new(),
        stop: AtomicBool::new(false),
        last: (0..subscribers).map(|_| AtomicU64::new(0)).collect(),
        received: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        drops_left: AtomicU64::new(drops_total),
        published: (0..subscribers).map(|_| AtomicU64::new(0)).collect(),
        duplicated: AtomicU64::new(0),
        reordered: AtomicU64::new(0),
        gaps: AtomicU64::new(0),
        gaps_unexplained: AtomicU64::new(0),
        lost_so_far: AtomicI64::new(0),
        server_closes: AtomicU64::new(0),
        resume_us: Mutex::new(new_histogram()),
        resume_arrival_us: Mutex::new(new_histogram()),
    });
    println!(
        "resumetest: {subscribers} subscribers on /events/{}..{}, {} msg/s for {:?}, {drops_total} client-side reconnects ({:?}{}), seed {seed}",
        opts.first_id,
        opts.first_id + opts.subscribers - 1,
        opts.rate,
        opts.duration,
        opts.drop_mode,
        opts.churn
            .map(|c| format!(", churn {c} % a minute"))
            .unwrap_or_default()
    );
    let threads_n = match opts.threads {
        0 => thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(subscribers.max(1));
    let loopback = opts.target.iter().all(|t| t.ip().is_loopback());
    let sources = opts.source_addrs.unwrap_or(if loopback {
        subscribers.div_ceil(SUBSCRIBERS_PER_SOURCE) as u32
    } else {
        0
    });
    // Subscriber k opens its first connection at k / --connect-rate seconds, on thread
    // k mod threads.
    let first_open = Instant::now();
    let mut shares: Vec<Vec<subscriber::Sub>> = (0..threads_n).map(|_| Vec::new()).collect();
    for (k, schedule) in schedules.into_iter().enumerate() {
        let at = if opts.connect_rate > 0.0 {
            first_open + Duration::from_secs_f64(k as f64 / opts.connect_rate)
        } else {
            first_open
        };
        let source = (sources > 0).then(|| loopback_source(k as u32 % sources));
        let sub = subscriber::Sub::new(opts, k, schedule, rng.u64(..), at, source);
        shares[k % threads_n].push(sub);
    }
    let (ready_tx, ready_rx) = mpsc::channel();
    let threads: Vec<_> = shares
        .into_iter()
        .map(|subs| {
            let opts = opts.clone();
            let shared = Arc::clone(&shared);
            let ready = ready_tx.clone();
            thread::spawn(move || subscriber::run_thread(&opts, &shared, &ready, subs))
        })
        .collect();
    drop(ready_tx);
    let stop_all = |threads: Vec<thread::JoinHandle<io::Result<subscriber::Finished>>>| {
        shared.stop.store(true, Ordering::Relaxed);
        let mut results = Vec::with_capacity(subscribers);
        for t in threads {
            let done = t
                .join()
                .map_err(|_| "a subscriber thread panicked".to_string())?
                .map_err(|e| format!("a subscriber thread: {e}"))?;
            results.extend(done);
        }
        results.sort_unstable_by_key(|(k, _)| *k);
        Ok::<_, String>(results.into_iter().map(|(_, r)| r).collect::<Vec<_>>())
    };
    let ready_deadline = Instant::now() + opts.ready_timeout;
    let mut ready = 0;
    while ready < subscribers {
        match ready_rx.recv_timeout(ready_deadline.saturating_duration_since(Instant::now())) {
            Ok(_) => ready += 1,
            Err(_) => {
                stop_all(threads)?;
                return Err(format!(
                    "only {ready} of {subscribers} subscribers streaming after {:?}",
                    opts.ready_timeout
                ));
            }
        }
    }
    let start = Instant::now();
    shared.start.set(start).expect("set once");
    println!("all {subscribers} subscribers streaming; publishing");
    let publisher = {
        let opts = opts.clone();
        let shared = Arc::clone(&shared);
        let retrying = opts.attempts_max > 1 || opts.publish.len() > 1;
        thread::spawn(move || {
            if retrying {
                publisher_retrying(&opts, start, &shared, seed)
            } else {
                publisher(&opts, start, &shared)
            }
        })
    };
    let interval = opts.stats_interval.max(Duration::from_millis(100));
    let mut next_tick = start + interval;
    while !publisher.is_finished() {
        thread::sleep(Duration::from_millis(20));
        if Instant::now() >= next_tick {
            next_tick += interval;
            println!("{}", progress_line(&shared, start));
        }
    }
    let published = publisher
        .join()
        .map_err(|_| "the publisher panicked".to_string())?;
    if let Some(e) = &published.error {
        eprintln!("resumetest: publisher: {e}");
    }
    // Wait for the last scheduled drops and their resumes, and for every subscriber to reach
    // the last number published for its id.
    let drain_deadline = Instant::now() + opts.drain;
    let caught_up = |k: usize| shared.last[k].load(Ordering::Relaxed) >= published.last[k];
    while (shared.drops_left.load(Ordering::Relaxed) > 0 || !(0..subscribers).all(caught_up))
        && Instant::now() < drain_deadline
    {
        thread::sleep(Duration::from_millis(20));
    }
    let unfinished = (0..subscribers).filter(|&k| !caught_up(k)).count() as u64;
    let results = stop_all(threads)?;
    let elapsed = start.elapsed();

    let mut counts = Counts::default();
    let mut conn = ConnStats::default();
    for (k, r) in results.into_iter().enumerate() {
        let failed: Vec<u64> = published
            .failed
            .iter()
            .filter(|(s, _)| *s == k)
            .map(|(_, n)| *n)
            .collect();
        counts.add(&r.checker.finish(published.last[k], &failed));
        conn.add(&r.stats);
    }
    println!("{}", progress_line(&shared, start));
    let resume_ms = |h: &Mutex<Histogram<u64>>| match h.lock() {
        Ok(h) => Ok(ResumeMs::of_us(&h)),
        Err(_) => Err("a subscriber panicked holding a resume histogram".to_string()),
    };
    let (resume_ms, resume_arrival_ms) = (
        resume_ms(&shared.resume_us)?,
        resume_ms(&shared.resume_arrival_us)?,
    );
    let summary = Summary {
        tool: "resumetest",
        published: published.accepted,
        received: counts.received,
        lost: counts.lost,
        duplicated: counts.duplicated,
        gaps: counts.gaps,
        reconnects: conn.reconnects,
        reordered: counts.reordered,
        gap_skipped: counts.gap_skipped,
        publish_sent: published.sent,
        publish_failed: published.failed.len() as u64,
        publish_unanswered: published.unanswered,
        publish_retried: published.retried,
        publish_conn_lost: published.conn_lost,
        publish_connections: published.connections,
        publish_lag_max_ms: (published.lag_max_ms * 1000.0).round() / 1000.0,
        unfinished,
        subscribers: opts.subscribers,
        target_rate: opts.rate,
        duration_s: opts.duration.as_secs_f64(),
        elapsed_s: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        resume_ms,
        resume_arrival_ms,
        history_messages: opts.history_messages,
        history_age_s: opts.history_age.as_secs_f64(),
        churn_percent_per_minute: opts.churn,
        conn,
    };
    let failed = summary.lost > 0
        || summary.duplicated > 0
        || summary.reordered > 0
        || summary.conn.gaps_unexplained > 0
        || summary.publish_failed > 0
        || published.error.is_some();
    print_summary(&summary, failed);
    let json = serde_json::to_string(&summary).map_err(|e| e.to_string())?;
    if let Some(path) = &opts.json {
        std::fs::write(path, format!("{json}\n"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!("{json}");
    Ok(failed)
}

/// `t=<s>s received=... lost_so_far=...`: the shared sums, one line (the soak's log).
fn progress_line(shared: &Shared, start: Instant) -> String {
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    format!(
        "t={:.0}s received={} reconnects={} server_closes={} gaps={} gaps_unexplained={} lost_so_far={} duplicated={} reordered={}",
        start.elapsed().as_secs_f64(),
        n(&shared.received),
        n(&shared.reconnects),
        n(&shared.server_closes),
        n(&shared.gaps),
        n(&shared.gaps_unexplained),
        shared.lost_so_far.load(Ordering::Relaxed),
        n(&shared.duplicated),
        n(&shared.reordered),
    )
}

fn print_summary(s: &Summary, failed: bool) {
    let c = &s.conn;
    println!(
        "published {} (sent {}, failed {}, unanswered {}, retried {}, connections lost {}; deliveries promised by the answers {}, max send lag {:.1} ms)",
        s.published, s.publish_sent, s.publish_failed, s.publish_unanswered, s.publish_retried, s.publish_conn_lost, s.publish_connections, s.publish_lag_max_ms
    );
    println!(
        "received {}: lost {}, duplicated {}, reordered {}, gaps {} (unexplained by the history's limits {}; messages skipped after a gap notice {}), subscribers not caught up {}",
        s.received, s.lost, s.duplicated, s.reordered, s.gaps, c.gaps_unexplained, s.gap_skipped, s.unfinished
    );
    println!(
        "reconnects {} (rst {}, fin {}), server closes {}, resumed without an id {}, connect errors {}, non-200 {}, framing errors {}",
        s.reconnects, c.drops_rst, c.drops_fin, c.server_closes, c.resumed_without_id, c.connect_errors, c.status_errors, c.framing_errors
    );
    println!(
        "resuming connections, connect to head: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({}); replayed from the history {}; positions {}, heartbeats {}, malformed {}, foreign {}",
        s.resume_ms.p50, s.resume_ms.p99, s.resume_ms.max, s.resume_ms.count, c.replayed, c.positions, c.heartbeats, c.malformed, c.foreign
    );
    let a = &s.resume_arrival_ms;
    println!(
        "resuming connections, connect to the head's arrival (kernel receive time): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({}; without a receive time {})",
        a.p50, a.p99, a.max, a.count, c.resumes_unstamped
    );
    if failed {
        println!("FAIL: messages lost, duplicated or reordered, a gap inside the history window, or publishing failed");
    } else if s.gap_skipped > 0 || s.unfinished > 0 {
        println!(
            "OK: nothing lost silently; {} messages announced lost by gap notices (outside the history)",
            s.gap_skipped
        );
    } else {
        println!("OK: every message exactly once, in order");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spreads_every_drop_over_the_window() {
        let mut rng = Rng::with_seed(7);
        let window = Duration::from_secs(60);
        let s = drop_schedule(1000, 20, window, &mut rng);
        assert_eq!(s.len(), 20);
        assert!(s.iter().all(|t| t.len() == 50));
        let s = drop_schedule(23, 5, window, &mut rng);
        assert_eq!(s.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5, 5, 4, 4]);
        let all: Vec<Duration> = drop_schedule(10_000, 4, window, &mut rng)
            .into_iter()
            .flat_map(|t| {
                assert!(t.windows(2).all(|w| w[0] <= w[1]), "sorted");
                t
            })
            .collect();
        assert!(all.iter().all(|t| *t < window));
        let first_half = all.iter().filter(|t| **t < window / 2).count();
        assert!((4500..5500).contains(&first_half), "{first_half}");
    }

    #[test]
    fn churn_spreads_drops_evenly_over_every_minute() {
        let mut rng = Rng::with_seed(3);
        let window = Duration::from_secs(600);
        // 5 % of 1000 a minute: each drops every 20 minutes, so once or not at all in 10.
        let s = churn_schedule(5.0, 1000, window, &mut rng);
        let total: u64 = s.iter().map(Drops::count).sum();
        assert!((499..=501).contains(&total), "{total}");
        for minute in 0..10 {
            let (from, to) = (
                Duration::from_secs(60 * minute),
                Duration::from_secs(60 * (minute + 1)),
            );
            let in_minute = s
                .iter()
                .flat_map(|d| (0..).map_while(|i| d.get(i)))
                .filter(|t| (from..to).contains(t))
                .count();
            assert!(
                (49..=51).contains(&in_minute),
                "minute {minute}: {in_minute}"
            );
        }
        // 200 % a minute: each drops twice a minute, forever in constant memory.
        let d = &churn_schedule(200.0, 10, Duration::from_secs(86_400), &mut rng)[0];
        assert_eq!(d.count(), 2 * 1440);
        assert_eq!(
            d.get(1).unwrap() - d.get(0).unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(Drops::At(vec![Duration::ZERO]).count(), 1);
    }

    /// The bodies resumetest publishes (the answers: tools_common::response).
    #[test]
    fn bodies_and_answers() {
        assert_eq!(parse_body("17:42"), Some((17, 42)));
        assert_eq!(parse_body("17:"), None);
        assert_eq!(parse_body("hello"), None);
    }
}
