//! The subscribers: `--threads` threads (one per CPU by default), each driving its share of the
//! subscribers with one mio poll (epoll) and a timer heap. Subscriber k belongs to thread
//! k mod threads.
//!
//! Why not a thread per subscriber (as this tool did first): when a node of a cluster stops,
//! a third of the subscribers reconnect at once, and 10,000 threads made runnable together on
//! two cores (which also run the nodes and nats-server) delay the reading of every head. The
//! larger delay then was the connects' own (`results/rolling/2026-11-30-30k-epoll`): see
//! `tools_common::sock` for the source addresses that cure it.
//!
//! One subscriber is a [`Sub`]: a state machine fed by its socket's readiness
//! ([`Sub::on_event`]) and by its one deadline ([`Sub::deadline`], [`Sub::tick`]): the moment
//! to (re)connect, the connect timeout, the wait for the initial position, the next drop.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use fastrand::Rng;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use tools_common::clock::epoch_s;
use tools_common::jwt::{Signer, TOKEN_LIFETIME_S};
use tools_common::sock::{recv_timestamped, set_timestamp_ns, start_connect};

use crate::check::{self, Checker};
use crate::{parse_body, report_progress, sse, ConnStats, DropMode, Drops, Opts, Shared};

/// Longest a thread waits in one poll, so that it notices the end of the run and the start of
/// publishing (which sets the drops' moments).
const POLL_MAX: Duration = Duration::from_millis(100);
/// Per thread; comet's messages here are a few dozen bytes.
const READ_BUFFER_SIZE: usize = 16 * 1024;
/// How much older than `--history-age` a subscriber's last message must be for a gap to be
/// explained by the age: it was received a little after the next one was published.
const AGE_SLACK: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a first connection waits for the initial position line before it counts as ready
/// without one.
const POSITION_WAIT: Duration = Duration::from_secs(1);
/// After a failed connect, and after a refused stream (without `--follow-retry`): do not spin.
const CONNECT_ERROR_WAIT: Duration = Duration::from_millis(50);
const REFUSED_WAIT: Duration = Duration::from_millis(100);

/// A thread's subscribers, finished: (k, result).
pub type Finished = Vec<(usize, SubResult)>;

/// What one subscriber ends with.
pub struct SubResult {
    pub checker: Checker,
    pub stats: ConnStats,
}

/// What a thread's subscribers share: the run's settings and the thread's scratch space.
struct Cx<'a> {
    opts: &'a Opts,
    shared: &'a Shared,
    registry: &'a Registry,
    ready: &'a mpsc::Sender<usize>,
    signer: Option<Signer>,
    buf: Vec<u8>,
    items: Vec<sse::Item>,
}

struct Conn {
    stream: TcpStream,
    /// The request; `written` bytes of it are sent (it goes once the connect completes), then
    /// freed: a stream holds no buffer of its own (the thread's read buffer serves all).
    request: Vec<u8>,
    written: usize,
    connected: bool,
    parser: sse::Parser,
    streaming: bool,
    /// Opened with Last-Event-ID.
    resuming: bool,
    /// A position-only block arrived on this connection: what follows is live.
    positioned: bool,
    opened_at: Instant,
    /// The same moment on the wall clock, which the kernel's receive times use.
    opened_wall: SystemTime,
    /// A resuming connection's first read: the kernel's receive time of its first byte (the
    /// head's), None when none came; unset until that read.
    first_arrival: Option<Option<SystemTime>>,
}

/// How a connection ended, for [`Sub::close`].
enum End {
    /// The client dropped it (a scheduled drop), by reset or by FIN.
    Drop { rst: bool },
    /// The server closed, cut or refused it, or it broke.
    Server,
    /// The connect failed.
    ConnectFailed,
}

pub struct Sub {
    k: usize,
    id: u64,
    schedule: Drops,
    /// The drop schedule and the choice of node need spread, not secrecy.
    rng: Rng,
    checker: Checker,
    stats: ConnStats,
    /// What this subscriber last added to the shared progress sums.
    reported: check::Counts,
    /// When the last message arrived (or the subscriber started): for explaining gaps.
    last_message_at: Instant,
    last_event_id: Option<String>,
    conn: Option<Conn>,
    /// With no connection: when to open the next one.
    open_at: Instant,
    /// Ready (publishing may start) once the first connection has given a position.
    ready_sent: bool,
    head_at: Option<Instant>,
    next_drop: usize,
    /// The current connection was lost (until its successor streams).
    lost: bool,
    /// The last drop's reconnect has not streamed yet (see `Shared::drops_left`).
    resume_due: bool,
    /// The reconnection time from the stream's last `retry:` (`--follow-retry`).
    retry: Duration,
    /// The node this subscriber uses; another one, at random, after its node closed or refused.
    node: usize,
    nodes: usize,
    /// The source address its connections are bound to (`--source-addrs`).
    source: Option<Ipv4Addr>,
    /// The moment the thread's timer heap holds for this subscriber; other entries are stale.
    wake_at: Option<Instant>,
}

impl Sub {
    pub fn new(
        opts: &Opts,
        k: usize,
        schedule: Drops,
        seed: u64,
        open_at: Instant,
        source: Option<Ipv4Addr>,
    ) -> Sub {
        Sub {
            k,
            id: opts.first_id + k as u64,
            schedule,
            rng: Rng::with_seed(seed),
            checker: Checker::expecting(1),
            stats: ConnStats::default(),
            reported: check::Counts::default(),
            last_message_at: Instant::now(),
            last_event_id: None,
            conn: None,
            open_at,
            ready_sent: false,
            head_at: None,
            next_drop: 0,
            lost: false,
            resume_due: false,
            retry: Duration::from_secs(1),
            node: k % opts.target.len(),
            nodes: opts.target.len(),
            source,
            wake_at: None,
        }
    }

    /// The next moment something is due for this subscriber without an event from its socket.
    /// A drop that is due but not possible yet (the connection does not stream, or no position
    /// yet) waits for the event that makes it possible, not for a timer.
    fn deadline(&self, start: Option<Instant>, now: Instant) -> Option<Instant> {
        let Some(c) = &self.conn else {
            return Some(self.open_at);
        };
        if !c.connected {
            return Some(c.opened_at + CONNECT_TIMEOUT);
        }
        let position = (!self.ready_sent)
            .then(|| self.head_at.map(|at| at + POSITION_WAIT))
            .flatten();
        let drop = self.drop_due(start).filter(|&due| due > now);
        match (position, drop) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn drop_due(&self, start: Option<Instant>) -> Option<Instant> {
        start.and_then(|start| self.schedule.get(self.next_drop).map(|d| start + d))
    }

    /// Does what is due at `now`.
    fn tick(&mut self, cx: &mut Cx, token: Token, now: Instant) {
        match &self.conn {
            None if now >= self.open_at => self.open(cx, token, now),
            Some(c) if !c.connected && now >= c.opened_at + CONNECT_TIMEOUT => {
                self.connect_failed(cx, &io::Error::from(io::ErrorKind::TimedOut), now);
            }
            _ => {}
        }
        if !self.ready_sent && self.head_at.is_some_and(|at| now >= at + POSITION_WAIT) {
            // No position after the head: a message published from now on must still arrive
            // (comet sends the head once the login is effective), but this is not the model.
            if self.stats.no_initial_position == 0 {
                eprintln!(
                    "resumetest: subscriber {}: no position line after the head",
                    self.id
                );
            }
            self.stats.no_initial_position += 1;
            self.mark_ready(cx);
        }
        self.maybe_drop(cx, now);
    }

    fn mark_ready(&mut self, cx: &Cx) {
        if !self.ready_sent {
            self.ready_sent = true;
            let _ = cx.ready.send(self.k);
        }
    }

    /// Drops the connection if a drop is due: only a streaming connection, and only once there
    /// is a position to resume from.
    fn maybe_drop(&mut self, cx: &mut Cx, now: Instant) {
        let Some(due) = self.drop_due(cx.shared.start.get().copied()) else {
            return;
        };
        let streaming = self.conn.as_ref().is_some_and(|c| c.streaming);
        if now < due || !streaming || self.last_event_id.is_none() {
            return;
        }
        let rst = match cx.opts.drop_mode {
            DropMode::Rst => true,
            DropMode::Fin => false,
            DropMode::Mixed => self.rng.bool(),
        };
        if rst {
            self.stats.drops_rst += 1;
        } else {
            self.stats.drops_fin += 1;
        }
        self.close(cx, End::Drop { rst });
        self.stats.reconnects += 1;
        cx.shared.reconnects.fetch_add(1, Ordering::Relaxed);
        self.next_drop += 1;
        self.lost = true;
        self.resume_due = true;
        self.open_at = now + cx.opts.away_max.mul_f64(self.rng.f64());
    }

    fn open(&mut self, cx: &mut Cx, token: Token, now: Instant) {
        let request = match self.request(cx) {
            Ok(r) => r,
            Err(e) => return self.connect_failed(cx, &io::Error::other(e), now),
        };
        let target = cx.opts.target[self.node];
        // Not the loop's `now`: other subscribers' opens may have come first in this turn.
        let (opened_at, opened_wall) = (Instant::now(), SystemTime::now());
        let resuming = self.last_event_id.is_some();
        let stream = connect(target, self.source, resuming).and_then(|mut stream| {
            stream.set_nodelay(true)?;
            cx.registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
            Ok(stream)
        });
        match stream {
            Ok(stream) => {
                if self.lost && self.last_event_id.is_none() {
                    self.stats.resumed_without_id += 1;
                }
                self.conn = Some(Conn {
                    stream,
                    request,
                    written: 0,
                    connected: false,
                    parser: sse::Parser::new(),
                    streaming: false,
                    resuming,
                    positioned: false,
                    opened_at,
                    opened_wall,
                    first_arrival: None,
                });
            }
            Err(e) => self.connect_failed(cx, &e, now),
        }
    }

    fn request(&self, cx: &Cx) -> Result<Vec<u8>, String> {
        let (id, target) = (self.id, cx.opts.target[self.node]);
        let mut request =
            format!("GET /events/{id} HTTP/1.1\r\nHost: {target}\r\nAccept: text/event-stream\r\n");
        if let Some(last) = &self.last_event_id {
            request.push_str(&format!("Last-Event-ID: {last}\r\n"));
        }
        if let Some(signer) = &cx.signer {
            let token = signer.sign(&[&id.to_string()], epoch_s() + TOKEN_LIFETIME_S)?;
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str("\r\n");
        Ok(request.into_bytes())
    }

    fn connect_failed(&mut self, cx: &mut Cx, e: &io::Error, now: Instant) {
        if self.stats.connect_errors == 0 {
            eprintln!("resumetest: subscriber {}: connect: {e}", self.id);
        }
        self.stats.connect_errors += 1;
        self.close(cx, End::ConnectFailed);
        self.elsewhere();
        self.open_at = now
            + if cx.opts.follow_retry {
                self.retry
            } else {
                CONNECT_ERROR_WAIT
            };
    }

    /// Another node, at random, after this one closed or refused.
    fn elsewhere(&mut self) {
        let nodes = self.nodes;
        if nodes > 1 {
            self.node = (self.node + 1 + self.rng.usize(..nodes - 1)) % nodes;
        }
    }

    fn close(&mut self, cx: &Cx, end: End) {
        let Some(mut c) = self.conn.take() else {
            return;
        };
        let _ = cx.registry.deregister(&mut c.stream);
        match end {
            End::Drop { rst: true } => {
                let _ = socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
            }
            End::Drop { rst: false } => {
                let _ = c.stream.shutdown(Shutdown::Both);
            }
            End::Server | End::ConnectFailed => {}
        }
    }

    /// The stream ended on the server's side (close, reset, final chunk, refusal, bad framing):
    /// reconnect, to another node.
    fn server_ended(&mut self, cx: &mut Cx, now: Instant) {
        let was_streaming = self.conn.as_ref().is_some_and(|c| c.streaming);
        self.close(cx, End::Server);
        self.lost = true;
        self.elsewhere();
        self.open_at = if cx.opts.follow_retry {
            now + self.retry
        } else if was_streaming {
            now
        } else {
            now + REFUSED_WAIT
        };
    }

    /// Its socket is ready (`closed`: the event says it was reset or hung up): completes the
    /// connect, sends the request, reads what came.
    fn on_event(&mut self, cx: &mut Cx, closed: bool, now: Instant) {
        let Some(c) = self.conn.as_mut() else {
            return;
        };
        if !c.connected {
            match c.stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.connect_failed(cx, &e, now),
            }
            match c.stream.peer_addr() {
                Ok(_) => c.connected = true,
                // Still connecting, unless it was closed before it connected.
                Err(e) if e.kind() == io::ErrorKind::NotConnected && !closed => return,
                Err(e) => return self.connect_failed(cx, &e, now),
            }
        }
        while c.written < c.request.len() {
            match c.stream.write(&c.request[c.written..]) {
                Ok(n) => c.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.server_ended(cx, now),
            }
        }
        if !c.request.is_empty() {
            c.request = Vec::new();
            c.written = 0;
        }
        // Edge-triggered: read until the socket has nothing more.
        loop {
            let Some(c) = self.conn.as_mut() else {
                return;
            };
            let read = if c.resuming && c.first_arrival.is_none() {
                recv_timestamped(c.stream.as_fd(), &mut cx.buf).map(|(n, at)| {
                    c.first_arrival = Some(at);
                    n
                })
            } else {
                c.stream.read(&mut cx.buf)
            };
            match read {
                Ok(0) => {
                    self.count_server_close(cx);
                    return self.server_ended(cx, now);
                }
                Ok(n) => self.received(cx, n, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.count_server_close(cx);
                    return self.server_ended(cx, now);
                }
            }
        }
    }

    fn count_server_close(&mut self, cx: &Cx) {
        self.stats.server_closes += 1;
        cx.shared.server_closes.fetch_add(1, Ordering::Relaxed);
    }

    /// `cx.buf[..n]` arrived on the connection.
    fn received(&mut self, cx: &mut Cx, n: usize, now: Instant) {
        let Some(c) = self.conn.as_mut() else {
            return;
        };
        let mut items = std::mem::take(&mut cx.items);
        items.clear();
        let fed = c.parser.feed(&cx.buf[..n], &mut items);
        let mut end = false;
        for item in items.drain(..) {
            end |= self.item(cx, item, now);
        }
        cx.items = items;
        let shared = cx.shared;
        shared.last[self.k].store(self.checker.last(), Ordering::Relaxed);
        let now_counts = self.checker.progress();
        report_progress(shared, &self.reported, &now_counts);
        self.reported = now_counts;
        if fed.is_err() {
            self.stats.framing_errors += 1;
            end = true;
        }
        if end {
            self.server_ended(cx, now);
        } else {
            self.maybe_drop(cx, now);
        }
    }

    /// One parsed item; true when the stream is over.
    fn item(&mut self, cx: &Cx, item: sse::Item, now: Instant) -> bool {
        let shared = cx.shared;
        let Some(c) = self.conn.as_mut() else {
            return true;
        };
        match item {
            sse::Item::Head { status: 200 } => {
                c.streaming = true;
                self.lost = false;
                if c.resuming {
                    // Read the clock again: `now` is the loop's, taken before this event's turn.
                    let us = c.opened_at.elapsed().as_micros() as u64;
                    if let Ok(mut h) = shared.resume_us.lock() {
                        h.saturating_record(us);
                    }
                    match c.first_arrival.flatten() {
                        Some(at) => {
                            let since = at.duration_since(c.opened_wall).unwrap_or_default();
                            if let Ok(mut h) = shared.resume_arrival_us.lock() {
                                h.saturating_record(since.as_micros() as u64);
                            }
                        }
                        None => self.stats.resumes_unstamped += 1,
                    }
                }
                if self.resume_due {
                    // After the record: the end of the run counts this resume.
                    self.resume_due = false;
                    shared.drops_left.fetch_sub(1, Ordering::Relaxed);
                }
                self.head_at.get_or_insert(now);
            }
            sse::Item::Head { status } => {
                if self.stats.status_errors == 0 {
                    eprintln!("resumetest: subscriber {}: status {status}", self.id);
                }
                self.stats.status_errors += 1;
                return true;
            }
            sse::Item::Event(event) => {
                if event.id.is_some() {
                    self.last_event_id.clone_from(&event.id);
                    self.mark_ready(cx);
                }
                match (event.event.as_str(), &event.data) {
                    ("gap", _) => self.gap(cx),
                    ("" | "message", Some(data)) => match parse_body(data) {
                        Some((for_id, n)) if for_id == self.id => {
                            let c = self.conn.as_ref().expect("a connection");
                            if c.resuming && !c.positioned {
                                self.stats.replayed += 1;
                            }
                            self.checker.message(n);
                            self.last_message_at = now;
                            shared.received.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(_) => self.stats.foreign += 1,
                        None => self.stats.malformed += 1,
                    },
                    (_, None) => {
                        self.stats.positions += 1;
                        if let Some(c) = self.conn.as_mut() {
                            c.positioned = true;
                        }
                    }
                    (_, Some(_)) => self.stats.malformed += 1,
                }
            }
            sse::Item::Comment => self.stats.heartbeats += 1,
            sse::Item::Retry(ms) => self.retry = Duration::from_millis(ms),
            sse::Item::End => {
                self.count_server_close(cx);
                return true;
            }
        }
        false
    }

    /// A gap notice: explained when the history's limits could have dropped what it skips.
    fn gap(&mut self, cx: &Cx) {
        self.checker.gap();
        let (opts, shared) = (cx.opts, cx.shared);
        let behind = shared.published[self.k]
            .load(Ordering::Relaxed)
            .saturating_sub(self.checker.last());
        let silent = self.last_message_at.elapsed();
        if behind <= opts.history_messages && silent + AGE_SLACK < opts.history_age {
            if self.stats.gaps_unexplained == 0 {
                eprintln!(
                    "resumetest: subscriber {}: a gap with {behind} messages published since the last received, {:.1} s ago",
                    self.id,
                    silent.as_secs_f64()
                );
            }
            self.stats.gaps_unexplained += 1;
            shared.gaps_unexplained.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn finish(self) -> (usize, SubResult) {
        (
            self.k,
            SubResult {
                checker: self.checker,
                stats: self.stats,
            },
        )
    }
}

/// Starts a non-blocking connect, from `source` (any port) when given; with `stamped`, the
/// socket reports its receive times (SO_TIMESTAMPNS) before anything can arrive.
fn connect(target: SocketAddr, source: Option<Ipv4Addr>, stamped: bool) -> io::Result<TcpStream> {
    let stream = start_connect(target, source.map(|ip| SocketAddrV4::new(ip, 0)))?;
    if stamped {
        set_timestamp_ns(stream.as_fd())?;
    }
    Ok(TcpStream::from_std(stream))
}

/// One subscriber thread: drives `subs` until `shared.stop`. Returns them, finished.
pub fn run_thread(
    opts: &Opts,
    shared: &Shared,
    ready: &mpsc::Sender<usize>,
    mut subs: Vec<Sub>,
) -> io::Result<Finished> {
    let mut poll = Poll::new()?;
    let registry = poll.registry().try_clone()?;
    let mut events = Events::with_capacity(1024);
    let mut cx = Cx {
        opts,
        shared,
        registry: &registry,
        ready,
        signer: opts.jwt_secret.as_deref().map(Signer::new),
        buf: vec![0u8; READ_BUFFER_SIZE],
        items: Vec::new(),
    };
    let mut timers = BinaryHeap::new();
    let mut start = None;
    let now = Instant::now();
    for (i, sub) in subs.iter_mut().enumerate() {
        rearm(sub, i, &mut timers, start, now);
    }
    let mut due = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if start.is_none() {
            if let Some(&at) = shared.start.get() {
                // Publishing started: the drops have moments now.
                start = Some(at);
                for (i, sub) in subs.iter_mut().enumerate() {
                    rearm(sub, i, &mut timers, start, now);
                }
            }
        }
        let wait = timers
            .peek()
            .map_or(POLL_MAX, |Reverse((at, _))| {
                at.saturating_duration_since(now)
            })
            .min(POLL_MAX);
        poll_events(&mut poll, &mut events, wait)?;
        let now = Instant::now();
        for event in events.iter() {
            let i = event.token().0;
            let closed = event.is_error() || event.is_write_closed();
            subs[i].on_event(&mut cx, closed, now);
            rearm(&mut subs[i], i, &mut timers, start, now);
        }
        while let Some(&Reverse((at, i))) = timers.peek() {
            if at > now {
                break;
            }
            timers.pop();
            if subs[i].wake_at == Some(at) {
                subs[i].wake_at = None;
                due.push(i);
            }
        }
        for i in due.drain(..) {
            subs[i].tick(&mut cx, Token(i), now);
            rearm(&mut subs[i], i, &mut timers, start, now);
        }
    }
    for sub in &mut subs {
        sub.close(&cx, End::Server);
    }
    Ok(subs.into_iter().map(Sub::finish).collect())
}

fn poll_events(poll: &mut Poll, events: &mut Events, wait: Duration) -> io::Result<()> {
    match poll.poll(events, Some(wait)) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            events.clear();
            Ok(())
        }
        r => r,
    }
}

/// Puts the subscriber's deadline in the heap when it changed.
fn rearm(
    sub: &mut Sub,
    i: usize,
    timers: &mut BinaryHeap<Reverse<(Instant, usize)>>,
    start: Option<Instant>,
    now: Instant,
) {
    let at = sub.deadline(start, now);
    if at != sub.wake_at {
        sub.wake_at = at;
        if let Some(at) = at {
            timers.push(Reverse((at, i)));
        }
    }
}
