//! One worker: a thread that drives one io_uring ring, owns the connections accepted on it and
//! one shard of the id table.
//!
//! The loop: wait for completions, copy a bounded batch out and dispatch each, repeat until the
//! completion queue is empty; then read the mailbox; then flush (doorbells to the workers we
//! mailed, accept arming against the admission cap, gauges). Nothing blocks but the wait.
//!
//! A connection is a 32-byte [`Conn`] in `conns`, indexed by its slot in the ring's fixed-file
//! table. Per-state extras live in side tables keyed by slot, so that an idle subscriber costs
//! its slot and its table entry only: `partial` (a request head split over reads, a WebSocket
//! frame split over reads), `pubs` (publish connections, see `publish.rs`), `positions`
//! (connections logged in as several ids, and long-polls), `polls` (long-polls).
//!
//! Positions: the owner of an id numbers its messages (`History::push`) and keeps a short
//! history. A login carries the client's position; the owner answers with what the history
//! holds after it (or a gap), and the id's position. The subscriber's worker writes the gap,
//! the replay, then the position, then live messages, which come from the same owner after
//! its answer, so nothing is missed or repeated between replay and live.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use ahash::AHashMap;
use comet_http as http;
use comet_http::Pos;
use comet_ring::{Completion, Ring, Sent, WBuf};
use comet_router::{shard_of, ConnRef, History, Id, Subscribers};

use crate::config::{Config, SlowConsumer};
use crate::metrics::{CloseReason, Stats};
use crate::public::{decide, Action, Subscribe};
use crate::publish::PubConn;
use crate::shared::{Ack, Mail, ReplyTo, Shared};
use crate::token::{decode, token, Op};

/// Completions copied out of the queue per batch.
const CQE_BATCH: usize = 256;
/// Period of the timer that expires requests and idle connections.
const TICK_MS: u64 = 250;
/// Listener indices (the `slot` of an Accept token).
pub const PUBLIC: usize = 0;
pub const PUBLISH: usize = 1;

/// Connection states. Transitions:
/// `Free -> Request` (accepted on the public listener) `-> Subscribing` (logins sent to remote
/// owners) `-> Streaming` (every owner acknowledged: the response head and messages flow);
/// `Free -> Publisher` (accepted on the publish listener);
/// `Request | Publisher | Streaming -> Draining` (a last response or the stream's end is
/// written, then the connection closes; input is ignored);
/// any `-> Closing` (operations are being cancelled) `-> Free` (slot closed, once nothing is in
/// flight).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Free,
    Request,
    Publisher,
    Subscribing,
    Streaming,
    Draining,
    Closing,
}

/// Bits of `Conn::inflight`: the operation is submitted and its final completion not yet seen.
pub const RECV: u8 = 1;
pub const POLL: u8 = 2;
pub const SEND: u8 = 4;

/// Bits of `Conn::flags`.
/// The connection's ids and positions are in `positions` (several ids, or a long-poll).
const IDS: u8 = 1;
/// Something was framed for the connection since the last heartbeat round.
const ACTIVE: u8 = 2;
/// A long-poll on the `ready_polls` list.
const READY: u8 = 4;
/// Kept open after a long-poll's answer, for the next poll.
const KEPT: u8 = 8;

/// Largest client frame: only control frames are read, so this bounds what a WebSocket
/// connection may hold of unread input.
const WS_FRAME_MAX: usize = 4096;

/// A long-poll waiting for its answer.
struct PollState {
    /// The answer's messages, JSON (`events::poll_item`).
    items: Vec<u8>,
    count: usize,
    gap: Vec<Id>,
    keep_alive: bool,
    allow_origin: Box<[u8]>,
    deadline_ms: u64,
}
/// One connection slot. Kept at 32 bytes (see the test below).
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    /// Incremented on every accept into this slot; part of every token and `ConnRef`.
    pub gen: u32,
    pub state: State,
    /// Which of `RECV | POLL | SEND` are in flight.
    pub inflight: u8,
    /// Cancel requests in flight.
    pub cancels: u8,
    pub format: http::Format,
    /// Messages framed for this connection so far: the `N` of `Recvd msg #N`.
    pub msg_count: u32,
    /// Logins still waiting for a remote owner's acknowledgement.
    pub acks: u16,
    /// `IDS | ACTIVE | READY | KEPT`.
    pub flags: u8,
    /// The write buffer the kernel is sending from, if any.
    pub sending: Option<WBuf>,
    /// Bytes waiting for the next send.
    pub pending: Option<WBuf>,
    /// The id this connection is logged in as, when not `multi`.
    pub id: Id,
}

impl Conn {
    const FREE: Conn = Conn {
        gen: 0,
        state: State::Free,
        inflight: 0,
        cancels: 0,
        format: http::Format::Chunked,
        msg_count: 0,
        acks: 0,
        flags: 0,
        sending: None,
        pending: None,
        id: 0,
    };
}

pub struct Worker {
    pub index: usize,
    pub cfg: Arc<Config>,
    pub shared: Arc<Shared>,
    inbox: Receiver<Mail>,
    pub ring: Ring,
    listeners: [RawFd; 2],
    /// True exactly when a multishot accept is armed on the listener.
    accept_armed: [bool; 2],
    /// True while a cancel of the armed accept is in flight.
    accept_cancelling: [bool; 2],
    pub conns: Vec<Conn>,
    /// Slots not `Free`.
    live: usize,
    /// This worker's shard of the id table.
    subs: Subscribers,
    /// Ids and the client's position in each, for connections with `IDS`.
    positions: AHashMap<u32, Box<[(Id, u64)]>>,
    polls: AHashMap<u32, PollState>,
    /// (slot, gen, deadline_ms) of long-polls, in deadline order.
    poll_deadlines: VecDeque<(u32, u32, u64)>,
    /// Long-polls with something to answer, answered at the end of the iteration.
    ready_polls: Vec<u32>,
    partial: AHashMap<u32, Vec<u8>>,
    /// This worker's shard of the message history.
    history: History,
    pub pubs: AHashMap<u32, PubConn>,
    /// (slot, gen, deadline_ms) of connections in `Request` or `Draining`, in deadline order
    /// (every deadline is `now + request_timeout_ms`, so pushing at the back keeps the order).
    deadlines: VecDeque<(u32, u32, u64)>,
    start: Instant,
    /// The wall clock at `start`.
    start_unix_us: u64,
    pub now_ms: u64,
    /// Wall clock, microseconds since the Unix epoch: sequence numbers and token expiry.
    unix_us: u64,
    /// When the next heartbeat round is due.
    next_beat_ms: u64,
    /// Workers mailed during this iteration, to ring at its end.
    wake: Vec<usize>,
    wake_marked: Vec<bool>,
    /// Set on SIGINT/SIGTERM: the time after which every connection is closed at once.
    shutdown_deadline: Option<u64>,
    scratch: Vec<ConnRef>,
    pos_scratch: Vec<u64>,
    /// A WebSocket's unparsed input while its frames are decoded.
    ws_input: Vec<u8>,
    cqes: Vec<Completion>,
    /// The way into the cluster bridge, when the node is in a cluster.
    cluster: Option<comet_cluster::Publisher>,
}

impl Worker {
    pub fn new(
        index: usize,
        cfg: Arc<Config>,
        shared: Arc<Shared>,
        inbox: Receiver<Mail>,
        ring: Ring,
        listeners: [RawFd; 2],
        cluster: Option<comet_cluster::Publisher>,
    ) -> Worker {
        let workers = cfg.workers;
        let unix_us = unix_us();
        let history = History::new(cfg.history, unix_us);
        let next_beat_ms = cfg.heartbeat_ms;
        Worker {
            index,
            cfg,
            shared,
            inbox,
            ring,
            listeners,
            accept_armed: [false; 2],
            accept_cancelling: [false; 2],
            // Grown to the highest slot the kernel hands out, not reserved up front.
            conns: Vec::new(),
            live: 0,
            subs: Subscribers::new(),
            positions: AHashMap::new(),
            polls: AHashMap::new(),
            poll_deadlines: VecDeque::new(),
            ready_polls: Vec::new(),
            partial: AHashMap::new(),
            history,
            pubs: AHashMap::new(),
            deadlines: VecDeque::new(),
            start: Instant::now(),
            start_unix_us: unix_us,
            now_ms: 0,
            unix_us,
            next_beat_ms,
            wake: Vec::with_capacity(workers),
            wake_marked: vec![false; workers],
            shutdown_deadline: None,
            scratch: Vec::new(),
            pos_scratch: Vec::new(),
            ws_input: Vec::new(),
            cqes: Vec::with_capacity(CQE_BATCH),
            cluster,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats[self.index]
    }

    /// Runs until shutdown completes. `done` keeps every ring open until all workers have left
    /// their loops, so that no MSG_RING targets a closed ring descriptor.
    pub fn run(mut self, shutdown_fd: RawFd, done: &Barrier) {
        self.ring.tick_every(TICK_MS, token(Op::Tick, 0, 0));
        self.ring.poll_fd(shutdown_fd, token(Op::Shutdown, 0, 0));
        self.flush();
        loop {
            if let Err(e) = self.ring.submit_and_wait(1) {
                tracing::error!(worker = self.index, "io_uring_enter failed: {e}");
                std::process::exit(1);
            }
            // One clock read per iteration: the wall clock follows the monotonic one from start.
            let elapsed = self.start.elapsed();
            self.now_ms = elapsed.as_millis() as u64;
            self.unix_us = self.start_unix_us + elapsed.as_micros() as u64;
            loop {
                let mut cqes = std::mem::take(&mut self.cqes);
                self.ring.drain(&mut cqes, CQE_BATCH);
                let empty = cqes.is_empty();
                for c in &cqes {
                    self.complete(*c);
                }
                self.cqes = cqes;
                if empty {
                    break;
                }
            }
            self.drain_mail();
            self.flush();
            if self.shutdown_deadline.is_some()
                && self.live == 0
                && self.accept_armed == [false, false]
            {
                break;
            }
        }
        // Paired counts: every connection accepted was counted closed once, for one reason.
        assert_eq!(self.stats().accepted.get(), self.stats().closed_total());
        tracing::debug!(worker = self.index, "worker stopped");
        done.wait();
    }

    fn complete(&mut self, c: Completion) {
        let (op, slot, gen) = decode(c.user_data);
        match op {
            Op::Accept => self.on_accept(slot as usize, c),
            Op::Recv => self.on_recv(slot, gen, c),
            Op::Poll => self.on_poll(slot, gen, c),
            Op::Send => self.on_send(slot, gen, c),
            Op::Cancel => {
                let conn = self.conn_mut(slot, gen);
                conn.cancels -= 1;
                self.finish_if_done(slot);
            }
            Op::Close => {
                // Only failures post a completion (skip-success).
                tracing::warn!(
                    worker = self.index,
                    slot,
                    "close failed: errno {}",
                    -c.result
                );
            }
            Op::Doorbell => {
                // Store before draining: see the doorbell protocol in shared.rs.
                self.shared.ringing[self.index]
                    .0
                    .store(false, std::sync::atomic::Ordering::SeqCst);
            }
            Op::DoorbellFailed => {
                let target = slot as usize;
                tracing::warn!(
                    worker = self.index,
                    target,
                    "MSG_RING failed: errno {}",
                    -c.result
                );
                self.shared.ringing[target]
                    .0
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                self.mark_wake(target);
            }
            Op::Tick => {
                if !c.more() {
                    self.ring.tick_every(TICK_MS, token(Op::Tick, 0, 0));
                }
                self.on_tick();
            }
            Op::Shutdown => self.begin_shutdown(),
            Op::Ignore => {}
        }
    }

    /// The connection an operation's completion belongs to. A slot is reused only once nothing
    /// is in flight on it, so the generation always matches.
    fn conn_mut(&mut self, slot: u32, gen: u32) -> &mut Conn {
        let conn = &mut self.conns[slot as usize];
        assert_eq!(conn.gen, gen, "completion for a reused slot");
        conn
    }

    pub fn conn_ref(&self, slot: u32) -> ConnRef {
        ConnRef::new(self.index, slot, self.conns[slot as usize].gen)
    }

    // ---- accept -------------------------------------------------------------------------

    fn on_accept(&mut self, listener: usize, c: Completion) {
        if !c.more() {
            self.accept_armed[listener] = false;
            self.accept_cancelling[listener] = false;
        }
        if c.result < 0 {
            match -c.result {
                libc::ECANCELED => {}
                errno => {
                    self.stats().accept_errors.add(1);
                    tracing::warn!(
                        worker = self.index,
                        listener,
                        "accept failed: errno {errno}"
                    );
                }
            }
            return;
        }
        let slot = c.result as u32;
        if slot as usize >= self.conns.len() {
            self.conns.resize(slot as usize + 1, Conn::FREE);
        }
        let conn = &mut self.conns[slot as usize];
        assert_eq!(
            conn.state,
            State::Free,
            "the kernel handed out a slot in use"
        );
        let gen = conn.gen.wrapping_add(1);
        *conn = Conn {
            gen,
            state: if listener == PUBLIC {
                State::Request
            } else {
                State::Publisher
            },
            inflight: RECV,
            ..Conn::FREE
        };
        self.live += 1;
        self.stats().accepted.add(1);
        self.ring.recv_multi(slot, token(Op::Recv, slot, gen));
        if listener == PUBLIC {
            self.deadlines
                .push_back((slot, gen, self.now_ms + self.cfg.request_timeout_ms));
        } else {
            self.pubs.insert(slot, PubConn::new(self.now_ms));
        }
        if self.shutdown_deadline.is_some() {
            self.close_conn(slot, CloseReason::Shutdown);
        }
    }

    /// Arms or cancels the accepts: armed while below the admission cap and not shutting down.
    fn manage_accepts(&mut self) {
        let open = self.shutdown_deadline.is_none() && self.live < self.cfg.admission_cap;
        for l in [PUBLIC, PUBLISH] {
            if open && !self.accept_armed[l] {
                self.ring
                    .accept_multi(self.listeners[l], token(Op::Accept, l as u32, 0));
                self.accept_armed[l] = true;
            } else if !open && self.accept_armed[l] && !self.accept_cancelling[l] {
                if self.shutdown_deadline.is_none() {
                    self.stats().accept_paused.add(1);
                }
                self.ring
                    .cancel(token(Op::Accept, l as u32, 0), token(Op::Ignore, 0, 0));
                self.accept_cancelling[l] = true;
            }
        }
    }

    // ---- reads --------------------------------------------------------------------------

    fn on_recv(&mut self, slot: u32, gen: u32, c: Completion) {
        let conn = self.conn_mut(slot, gen);
        if !c.more() {
            conn.inflight &= !RECV;
        }
        let state = conn.state;
        if c.result > 0 {
            let bid = c.buffer().expect("recv data without a provided buffer");
            let len = c.result as usize;
            match state {
                State::Request => self.on_request_bytes(slot, bid, len),
                State::Publisher => {
                    let data = self.ring.reads.get(bid, len);
                    let p = self.pubs.get_mut(&slot).expect("publisher state");
                    p.input.extend_from_slice(data);
                    p.since_ms = self.now_ms;
                    self.ring.reads.recycle(bid);
                    self.process_publish(slot);
                }
                State::Subscribing | State::Streaming
                    if self.conns[slot as usize].format == http::Format::Ws =>
                {
                    self.on_ws_bytes(slot, bid, len);
                }
                State::Subscribing | State::Streaming => {
                    // A stream is one-way: bytes after the subscribe request end it.
                    self.ring.reads.recycle(bid);
                    self.close_conn(slot, CloseReason::Protocol);
                }
                State::Draining | State::Closing => self.ring.reads.recycle(bid),
                State::Free => unreachable!("recv on a free slot"),
            }
        } else {
            if let Some(bid) = c.buffer() {
                self.ring.reads.recycle(bid);
            }
            match -c.result {
                0 => match state {
                    State::Publisher => self.on_publisher_eof(slot),
                    // The peer may half-close and still read our last response.
                    State::Draining | State::Closing => {}
                    _ => self.close_conn(slot, CloseReason::Eof),
                },
                // A WebSocket's request recv was cancelled, or no read buffer was free: it
                // waits for readability (again).
                libc::ENOBUFS | libc::ECANCELED
                    if self.conns[slot as usize].format == http::Format::Ws =>
                {
                    self.watch_ws(slot)
                }
                libc::ENOBUFS | libc::ECANCELED => {} // re-armed below if still reading
                _ => self.close_conn(slot, CloseReason::Error),
            }
        }
        self.rearm_recv(slot);
        self.finish_if_done(slot);
    }

    /// Re-arms the multishot recv of a connection that still reads and has none armed.
    pub fn rearm_recv(&mut self, slot: u32) {
        let conn = &self.conns[slot as usize];
        let reading = match conn.state {
            State::Request => true,
            State::Publisher => self.pubs.get(&slot).is_some_and(|p| p.wants_input()),
            _ => false,
        };
        if reading && conn.inflight & RECV == 0 {
            let gen = conn.gen;
            self.conns[slot as usize].inflight |= RECV;
            self.ring.recv_multi(slot, token(Op::Recv, slot, gen));
        }
    }

    /// Cancels the multishot recv of `slot` if it is armed.
    pub fn stop_recv(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if conn.inflight & RECV != 0 {
            conn.cancels += 1;
            let gen = conn.gen;
            self.ring
                .cancel(token(Op::Recv, slot, gen), token(Op::Cancel, slot, gen));
        }
    }

    fn on_request_bytes(&mut self, slot: u32, bid: u16, len: usize) {
        let data = self.ring.reads.get(bid, len);
        let mut stored = self.partial.remove(&slot);
        let action = match stored.as_mut() {
            Some(head) => {
                head.extend_from_slice(data);
                decide(head, &self.cfg, self.unix_us / 1_000_000)
            }
            None => decide(data, &self.cfg, self.unix_us / 1_000_000),
        };
        if let Action::NeedMore = action {
            // The head is split over reads: keep its bytes (at most header_bytes_max, beyond
            // which `decide` answers 431).
            self.partial
                .insert(slot, stored.unwrap_or_else(|| data.to_vec()));
        }
        self.ring.reads.recycle(bid);
        self.stats()
            .requests
            .add(u64::from(!matches!(action, Action::NeedMore)));
        match action {
            Action::NeedMore => {}
            Action::Subscribe(sub) => self.subscribe(slot, *sub),
            Action::Head {
                format,
                allow_origin,
            } => {
                self.respond_and_close(slot, CloseReason::Answered, |out| {
                    http::stream_head(out, format, &allow_origin);
                });
            }
            Action::Preflight { allow_origin } => {
                self.respond_and_close(slot, CloseReason::Answered, |out| {
                    http::preflight_response(out, &allow_origin)
                });
            }
            Action::Demo { head_only } => {
                self.respond_and_close(slot, CloseReason::Answered, |out| {
                    http::response(
                        out,
                        http::Status::OK,
                        "text/html; charset=utf-8",
                        crate::demo::PAGE.as_bytes(),
                        true,
                        head_only,
                    )
                });
            }
            Action::Reject {
                error,
                head_only,
                allow_origin,
            } => {
                self.stats().bad_requests.add(1);
                if matches!(error.status.0, 401 | 403) {
                    self.stats().auth_failures.add(1);
                }
                self.respond_and_close(slot, CloseReason::Protocol, |out| {
                    http::error_response_for(out, &error, head_only, &allow_origin)
                });
            }
        }
    }

    fn on_poll(&mut self, slot: u32, gen: u32, c: Completion) {
        let conn = self.conn_mut(slot, gen);
        conn.inflight &= !POLL;
        let ws = conn.format == http::Format::Ws
            && matches!(conn.state, State::Subscribing | State::Streaming);
        match c.result {
            r if r == -libc::ECANCELED => {}
            // The request's recv is still being cancelled: its end re-arms the watch.
            r if ws && r > 0 && conn.inflight & RECV != 0 => {}
            r if ws && r > 0 => {
                // A WebSocket client sent a frame (or closed): read it; EOF closes in on_recv.
                conn.inflight |= RECV;
                self.ring.recv_once(slot, token(Op::Recv, slot, gen));
            }
            // Readable or hung up: either way any other subscriber stream ends here.
            r => self.close_conn(slot, CloseReason::of_watch(r)),
        }
        self.finish_if_done(slot);
    }

    /// Watches a WebSocket for the client's next frame with the cheapest armed request.
    fn watch_ws(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if matches!(conn.state, State::Subscribing | State::Streaming)
            && conn.inflight & (POLL | RECV) == 0
        {
            conn.inflight |= POLL;
            let gen = conn.gen;
            self.ring.poll_read(slot, token(Op::Poll, slot, gen));
        }
    }

    /// Client frames of a WebSocket: pings are answered, a close is echoed and ends the
    /// stream, anything else closes with a code (see http::ws::decode).
    fn on_ws_bytes(&mut self, slot: u32, bid: u16, len: usize) {
        // The worker's scratch buffer, not one per read: a pong every heartbeat period from
        // every WebSocket client would otherwise allocate each time.
        let mut input = std::mem::take(&mut self.ws_input);
        input.clear();
        if let Some(head) = self.partial.remove(&slot) {
            input.extend_from_slice(&head);
        }
        input.extend_from_slice(self.ring.reads.get(bid, len));
        self.ring.reads.recycle(bid);
        let mut used = 0;
        loop {
            match http::ws::decode(&input[used..], WS_FRAME_MAX) {
                http::ws::Decoded::NeedMore => break,
                http::ws::Decoded::Frame { consumed, event } => {
                    used += consumed;
                    match event {
                        http::ws::ClientEvent::Ping(payload) => {
                            self.write_frame(slot, |out| http::ws::pong(out, payload.as_bytes()));
                        }
                        http::ws::ClientEvent::Pong => {}
                        http::ws::ClientEvent::Close { code } => {
                            self.write_frame(slot, |out| http::ws::close_reply(out, code));
                            self.finish_stream(slot, CloseReason::Eof);
                            break;
                        }
                    }
                }
                http::ws::Decoded::Fail { code, reason } => {
                    self.write_frame(slot, |out| http::ws::close(out, code, reason));
                    self.finish_stream(slot, CloseReason::Protocol);
                    break;
                }
            }
        }
        let streaming = matches!(
            self.conns[slot as usize].state,
            State::Subscribing | State::Streaming
        );
        if streaming && used < input.len() {
            // A frame split over reads: at most a control frame's header and payload.
            self.partial.insert(slot, input[used..].to_vec());
        }
        self.ws_input = input;
        self.watch_ws(slot);
    }

    /// Appends a non-message frame (a gap, a position, a pong, a close) and sends it if the
    /// line is idle.
    fn write_frame(&mut self, slot: u32, write: impl FnOnce(&mut Vec<u8>)) {
        let conn = &mut self.conns[slot as usize];
        let buf = *conn.pending.get_or_insert_with(|| self.ring.writes.alloc());
        write(self.ring.writes.get_mut(buf));
        if conn.state == State::Streaming && conn.inflight & SEND == 0 {
            self.start_send(slot);
        }
    }

    // ---- subscribers --------------------------------------------------------------------

    fn subscribe(&mut self, slot: u32, sub: Subscribe) {
        let Subscribe {
            ids,
            format,
            since,
            allow_origin,
            ws_key,
            keep_alive,
        } = sub;
        let cref = self.conn_ref(slot);
        let gen = cref.gen();
        let conn = &mut self.conns[slot as usize];
        conn.state = State::Subscribing;
        conn.format = format;
        if format == http::Format::Poll {
            // A long-poll keeps its recv (the answer may be followed by the next poll): bytes
            // before the answer end it, as for a stream.
            let deadline_ms = self.now_ms + self.cfg.poll_timeout_ms;
            self.polls.insert(
                slot,
                PollState {
                    items: Vec::new(),
                    count: 0,
                    gap: Vec::new(),
                    keep_alive,
                    allow_origin,
                    deadline_ms,
                },
            );
            self.poll_deadlines.push_back((slot, gen, deadline_ms));
        } else {
            let head = self.ring.writes.alloc();
            let out = self.ring.writes.get_mut(head);
            match &ws_key {
                Some(key) => {
                    http::ws::handshake_response(out, key, &allow_origin, &*allow_origin != b"*")
                }
                None => http::stream_head(out, format, &allow_origin),
            }
            let conn = &mut self.conns[slot as usize];
            conn.pending = Some(head);
            // Stop reading; watch for the peer's close (or a WebSocket frame) with the
            // cheapest armed request.
            conn.inflight |= POLL;
            self.ring.poll_read(slot, token(Op::Poll, slot, gen));
            self.stop_recv(slot);
        }
        // Several ids, or a long-poll (answered with a position even without messages): keep
        // each id's position. Until its owner answers, an id's position is the client's, or a
        // second ago (the owner's clock may lag ours a little: a resume from there may repeat
        // messages from before the login, but misses none after it).
        let table = ids.len() > 1 || format == http::Format::Poll;
        if table {
            let start = self.unix_us.saturating_sub(1_000_000);
            let entries: Box<[(Id, u64)]> = ids
                .iter()
                .enumerate()
                .map(|(i, &id)| (id, since.as_ref().map_or(start, |s| s[i])))
                .collect();
            self.positions.insert(slot, entries);
        }
        let mut acks: u16 = 0;
        let mut local = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let since = since.as_ref().map(|s| s[i]);
            let owner = shard_of(id, self.cfg.workers);
            if owner == self.index {
                local.push((id, since));
            } else {
                self.mail(
                    owner,
                    Mail::Login {
                        id,
                        conn: cref,
                        since,
                    },
                );
                acks += 1;
            }
        }
        let conn = &mut self.conns[slot as usize];
        conn.acks = acks;
        conn.id = ids[0];
        if table {
            conn.flags |= IDS;
        }
        self.stats().subscribed(format);
        for (id, since) in local {
            if self.conns[slot as usize].state != State::Subscribing {
                break; // cut as a slow consumer by an earlier id's replay: logged out already
            }
            let ack = self.login_owner(id, cref, since);
            self.on_login_ack(slot, id, ack);
        }
        // (A replay may have cut the connection as a slow consumer.)
        if acks == 0 && self.conns[slot as usize].state == State::Subscribing {
            self.start_streaming(slot);
        }
    }

    fn start_streaming(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        conn.state = State::Streaming;
        if conn.format == http::Format::Poll {
            self.poll_maybe_ready(slot);
        } else if conn.inflight & SEND == 0 && conn.pending.is_some() {
            self.start_send(slot);
        }
    }

    /// On the owner of `id`: logs `conn` in and answers with what it missed since `since`.
    fn login_owner(&mut self, id: Id, conn: ConnRef, since: Option<u64>) -> Ack {
        self.subs.login(id, conn);
        let mut replay = Vec::new();
        let gap = since.is_some_and(|s| self.history.since(id, s, &mut replay));
        Ack {
            pos: self.history.position(),
            gap,
            replay,
        }
    }

    /// The owner of `id` logged the connection in: write the gap, the replay and the position
    /// (each only if the connection is still waiting for this answer).
    fn on_login_ack(&mut self, slot: u32, id: Id, ack: Ack) {
        let Ack {
            pos,
            mut gap,
            mut replay,
        } = ack;
        let format = self.conns[slot as usize].format;
        if matches!(format, http::Format::Chunked | http::Format::Raw) {
            return; // the seed's format has no positions (and never resumes)
        }
        if format == http::Format::Poll {
            // An answer holds at most --queue-messages-max messages (deliver_local stops
            // there); the rest waits in the history for the next poll, so the position moves
            // to the owner's only if the whole replay went in.
            if gap {
                self.stats().resume_gaps.add(1);
                self.polls.get_mut(&slot).expect("poll state").gap.push(id);
            }
            for (seq, msg) in &replay {
                self.deliver_local(slot, id, *seq, msg, None);
            }
            if self.polls[&slot].count < self.cfg.queue_messages_max {
                self.set_position(slot, id, pos);
            }
            self.poll_maybe_ready(slot);
            return;
        }
        // On a stream, a replay counts against the connection's queue bounds like live
        // messages: if it does not fit, its oldest part is left out and the client is told (a
        // gap).
        let (bytes_max, messages_max) = self.queue_room(slot);
        let mut bytes = 0;
        let mut keep = 0;
        for (_, msg) in replay.iter().rev() {
            bytes += msg.len() + 64;
            if bytes > bytes_max || keep + 1 > messages_max {
                break;
            }
            keep += 1;
        }
        if keep < replay.len() {
            gap = true;
            replay.drain(..replay.len() - keep);
        }
        if gap {
            self.stats().resume_gaps.add(1);
            self.write_frame(slot, |out| http::frame_gap(out, format, &[id]));
        }
        for (seq, msg) in &replay {
            self.deliver_local(slot, id, *seq, msg, None);
        }
        if self.conns[slot as usize].state != State::Subscribing {
            return; // cut as a slow consumer by its replay
        }
        self.set_position(slot, id, pos);
        let mut pos_list = std::mem::take(&mut self.pos_scratch);
        self.position_list(slot, pos, &mut pos_list);
        let epoch = self.cfg.epoch;
        self.write_frame(slot, |out| {
            http::frame_position(
                out,
                format,
                Pos {
                    epoch,
                    seqs: &pos_list,
                },
            )
        });
        self.pos_scratch = pos_list;
    }

    /// Room left in the connection's queue: (bytes, messages).
    fn queue_room(&self, slot: u32) -> (usize, usize) {
        let (bytes, messages) = self.queued(slot);
        (
            self.cfg.queue_bytes_max.saturating_sub(bytes),
            self.cfg.queue_messages_max.saturating_sub(messages),
        )
    }

    /// What the connection has waiting: (bytes, messages).
    fn queued(&self, slot: u32) -> (usize, usize) {
        let conn = &self.conns[slot as usize];
        let w = &self.ring.writes;
        let bytes =
            conn.sending.map_or(0, |b| w.unsent(b)) + conn.pending.map_or(0, |b| w.unsent(b));
        let messages =
            conn.sending.map_or(0, |b| w.records(b)) + conn.pending.map_or(0, |b| w.records(b));
        (bytes, messages)
    }

    /// Records the owner's position for `id` after its answer: everything of `id` up to it
    /// was replayed, told as a gap, or routed before the login; every later message comes
    /// live (positions only exist for connections with `IDS`).
    fn set_position(&mut self, slot: u32, id: Id, pos: u64) {
        if self.conns[slot as usize].flags & IDS != 0 {
            let entries = self.positions.get_mut(&slot).expect("positions");
            if let Some(entry) = entries.iter_mut().find(|e| e.0 == id) {
                entry.1 = pos;
            }
        }
    }

    /// The connection's position as written to the client: each id's position, or `single`
    /// for a connection with one id and no table.
    fn position_list(&self, slot: u32, single: u64, out: &mut Vec<u64>) {
        out.clear();
        if self.conns[slot as usize].flags & IDS != 0 {
            out.extend(self.positions[&slot].iter().map(|e| e.1));
        } else {
            out.push(single);
        }
    }

    fn logout_all(&mut self, slot: u32) {
        let conn = self.conns[slot as usize];
        let cref = ConnRef::new(self.index, slot, conn.gen);
        if conn.flags & IDS != 0 {
            self.conns[slot as usize].flags &= !IDS;
            let entries = self.positions.remove(&slot).expect("positions");
            for &(id, _) in entries.iter() {
                self.logout(id, cref);
            }
        } else {
            self.logout(conn.id, cref);
        }
    }

    fn logout(&mut self, id: Id, conn: ConnRef) {
        let owner = shard_of(id, self.cfg.workers);
        if owner == self.index {
            self.subs.logout(id, conn);
        } else {
            self.mail(owner, Mail::Logout { id, conn });
        }
    }

    /// Frames message `seq` of `id` for one local subscriber, applying the slow-consumer
    /// policy when its queue is full. `published_us`: when its publish reached comet.
    fn deliver(&mut self, conn_ref: ConnRef, id: Id, seq: u64, msg: &[u8], published_us: u64) {
        let slot = conn_ref.slot();
        let Some(conn) = self.conns.get(slot as usize) else {
            unreachable!("delivery to a slot never used");
        };
        if conn.gen != conn_ref.gen() {
            self.stats().stale.add(1);
            return;
        }
        self.deliver_local(slot, id, seq, msg, Some(published_us));
    }

    /// `published_us`: when a live message's publish reached comet; `None` for a replay.
    fn deliver_local(
        &mut self,
        slot: u32,
        id: Id,
        seq: u64,
        msg: &[u8],
        published_us: Option<u64>,
    ) {
        let conn = self.conns[slot as usize];
        if !matches!(conn.state, State::Subscribing | State::Streaming) {
            // Closed while the message was on its way (or cut during a replay).
            self.stats().stale.add(1);
            return;
        }
        if conn.flags & IDS != 0 {
            // Never twice on one connection: a message a long-poll's previous answer missed
            // may come both late (from its old login) and in the replay.
            let entries = self.positions.get_mut(&slot).expect("positions");
            let Some(entry) = entries.iter_mut().find(|e| e.0 == id) else {
                self.stats().stale.add(1);
                return;
            };
            if seq <= entry.1 {
                self.stats().stale.add(1);
                return;
            }
            if conn.format == http::Format::Poll
                && self.polls[&slot].count >= self.cfg.queue_messages_max
            {
                // A full answer: the rest waits in the history for the next poll (the
                // position stays at the last message answered).
                return;
            }
            entry.1 = seq;
        }
        if conn.format == http::Format::Poll {
            let p = self.polls.get_mut(&slot).expect("poll state");
            http::poll_item(&mut p.items, id, seq, msg);
            p.count += 1;
            self.stats().delivered(published_us, self.unix_us);
            self.poll_maybe_ready(slot);
            return;
        }
        if !self.make_room(slot, msg.len()) {
            return;
        }
        let mut pos = std::mem::take(&mut self.pos_scratch);
        let seed_format = matches!(conn.format, http::Format::Chunked | http::Format::Raw);
        if !seed_format {
            self.position_list(slot, seq, &mut pos);
        }
        let conn = &mut self.conns[slot as usize];
        let buf = *conn.pending.get_or_insert_with(|| self.ring.writes.alloc());
        conn.flags |= ACTIVE;
        let out = self.ring.writes.get_mut(buf);
        let start = out.len();
        match conn.format {
            http::Format::Chunked | http::Format::Raw => {
                // Each connection numbers its messages, so the bytes differ per connection:
                // the message is framed (copied) per connection, which costs far less than
                // the send.
                conn.msg_count += 1;
                http::frame_message(out, conn.format, u64::from(conn.msg_count), msg);
            }
            format => {
                let pos = Pos {
                    epoch: self.cfg.epoch,
                    seqs: &pos,
                };
                http::frame_event(out, format, id, seq, pos, msg)
            }
        }
        self.ring.writes.mark_record(buf, start);
        self.pos_scratch = pos;
        let conn = &self.conns[slot as usize];
        let start = conn.state == State::Streaming && conn.inflight & SEND == 0;
        self.stats().delivered(published_us, self.unix_us);
        if start {
            self.start_send(slot);
        }
    }

    /// Makes room for one more message of `len` bytes by the slow-consumer policy; false when
    /// the message is not to be queued (the connection was cut, or the message dropped).
    fn make_room(&mut self, slot: u32, len: usize) -> bool {
        let fits = |(bytes, messages): (usize, usize), cfg: &Config| {
            bytes + len <= cfg.queue_bytes_max && messages < cfg.queue_messages_max
        };
        if fits(self.queued(slot), &self.cfg) {
            return true;
        }
        match self.cfg.slow_consumer {
            SlowConsumer::Disconnect => {
                // The client resumes from the history: nothing inside its window is lost.
                self.stats().dropped.add(1);
                self.close_conn(slot, CloseReason::SlowConsumer);
                false
            }
            SlowConsumer::DropOldest => {
                // Drop the oldest queued (not in flight) messages, half the queue at a time
                // so that the copying is paid once per many messages.
                while let Some(buf) = self.conns[slot as usize].pending {
                    let queued = self.ring.writes.records(buf);
                    if queued == 0 {
                        break;
                    }
                    self.ring.writes.drop_records(buf, queued.div_ceil(2));
                    self.stats().dropped_oldest.add(queued.div_ceil(2) as u64);
                    if fits(self.queued(slot), &self.cfg) {
                        return true;
                    }
                }
                // What is in flight alone fills the queue: the new message is the one dropped.
                self.stats().dropped_oldest.add(1);
                false
            }
        }
    }

    /// Routes a message for `id`, owned by this worker: numbers it, keeps it in the history,
    /// hands it to every connection logged in as `id` and returns how many there were.
    /// `published_us`: when the publish reached comet.
    fn route(&mut self, id: Id, msg: &Arc<[u8]>, published_us: u64) -> u32 {
        debug_assert_eq!(shard_of(id, self.cfg.workers), self.index);
        self.stats().published.add(1);
        let seq = self.history.push(id, msg, self.unix_us);
        let mut targets = std::mem::take(&mut self.scratch);
        targets.clear();
        targets.extend_from_slice(self.subs.get(id));
        for &conn in &targets {
            if conn.worker() == self.index {
                self.deliver(conn, id, seq, msg, published_us);
            } else {
                self.mail(
                    conn.worker(),
                    Mail::Deliver {
                        conn,
                        id,
                        seq,
                        msg: msg.clone(),
                        published_us,
                    },
                );
            }
        }
        let n = targets.len() as u32;
        self.scratch = targets;
        n
    }

    /// `POST /disconnect/<id>` on the owner of `id`: ends every connection logged in as `id`.
    fn disconnect_id(&mut self, id: Id) -> u32 {
        let mut targets = std::mem::take(&mut self.scratch);
        targets.clear();
        targets.extend_from_slice(self.subs.get(id));
        for &conn in &targets {
            if conn.worker() == self.index {
                self.disconnect_conn(conn);
            } else {
                self.mail(conn.worker(), Mail::DisconnectConn { conn });
            }
        }
        let n = targets.len() as u32;
        self.scratch = targets;
        n
    }

    fn disconnect_conn(&mut self, conn: ConnRef) {
        let slot = conn.slot();
        let c = &self.conns[slot as usize];
        if c.gen == conn.gen() && matches!(c.state, State::Subscribing | State::Streaming) {
            self.end_stream(slot, http::ws::code::NORMAL);
        }
    }

    /// Disconnects the connections of `id` on behalf of a publish request; the count comes
    /// back to `reply`.
    pub fn disconnect(&mut self, id: Id, reply: ReplyTo) {
        let owner = shard_of(id, self.cfg.workers);
        if owner == self.index {
            let n = self.disconnect_id(id);
            self.on_reply(reply, n);
        } else {
            self.mail(owner, Mail::Disconnect { id, reply });
        }
    }

    /// Ends a subscriber's stream properly (the last chunk, a WebSocket close with `ws_code`;
    /// a raw stream ends with the close itself), then closes once it is sent.
    fn end_stream(&mut self, slot: u32, ws_code: u16) {
        let format = self.conns[slot as usize].format;
        let reason = if ws_code == http::ws::code::GOING_AWAY {
            CloseReason::Shutdown
        } else {
            CloseReason::Disconnect
        };
        match format {
            http::Format::Ws => self.write_frame(slot, |out| {
                let reason = if ws_code == http::ws::code::GOING_AWAY {
                    "server shutting down"
                } else {
                    "disconnected by the server"
                };
                http::ws::close(out, ws_code, reason)
            }),
            http::Format::Chunked | http::Format::Sse => {
                self.write_frame(slot, |out| http::stream_end(out, format))
            }
            http::Format::Raw | http::Format::SseRaw => {}
            http::Format::Poll => {
                self.close_conn(slot, reason);
                return;
            }
        }
        self.finish_stream(slot, reason);
    }

    /// Logs a stream out and closes it once what is queued is sent.
    fn finish_stream(&mut self, slot: u32, reason: CloseReason) {
        self.logout_all(slot);
        self.stats().unsubscribed(self.conns[slot as usize].format);
        self.enter_draining(slot, reason);
    }

    // ---- long-poll ----------------------------------------------------------------------

    /// Queues a long-poll for its answer once every owner has answered and it has something.
    fn poll_maybe_ready(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        let now = self.now_ms;
        let has = self
            .polls
            .get(&slot)
            .is_some_and(|p| p.count > 0 || !p.gap.is_empty() || p.deadline_ms <= now);
        if conn.state == State::Streaming && has && conn.flags & READY == 0 {
            conn.flags |= READY;
            self.ready_polls.push(slot);
        }
    }

    /// Answers a long-poll with what it collected (maybe nothing, at its timeout), then
    /// waits for the next request on the connection or closes it.
    fn answer_poll(&mut self, slot: u32) {
        let Some(p) = self.polls.remove(&slot) else {
            return;
        };
        let mut pos = std::mem::take(&mut self.pos_scratch);
        self.position_list(slot, 0, &mut pos);
        let mut body = Vec::with_capacity(p.items.len() + 64);
        let epoch = self.cfg.epoch;
        http::poll_body(&mut body, Pos { epoch, seqs: &pos }, &p.gap, &p.items);
        self.pos_scratch = pos;
        self.stats().polls_answered.add(1);
        self.logout_all(slot);
        self.stats().unsubscribed(http::Format::Poll);
        let conn = &mut self.conns[slot as usize];
        conn.flags = 0;
        let buf = *conn.pending.get_or_insert_with(|| self.ring.writes.alloc());
        http::response_for(
            self.ring.writes.get_mut(buf),
            http::Status::OK,
            "application/json",
            &body,
            !p.keep_alive,
            false,
            &p.allow_origin,
        );
        if !p.keep_alive || conn.inflight & RECV == 0 {
            self.enter_draining(slot, CloseReason::Answered);
            return;
        }
        conn.state = State::Request;
        conn.flags |= KEPT;
        let gen = conn.gen;
        if conn.inflight & SEND == 0 {
            self.start_send(slot);
        }
        self.deadlines
            .push_back((slot, gen, self.now_ms + self.cfg.request_timeout_ms));
    }

    /// Offers a copy of a message published on this node to the other nodes, without waiting.
    /// `None` when the node is alone; `Some(false)` when the copy was dropped (link down or
    /// bridge queue full: counted by the bridge's stats).
    pub fn to_cluster(&self, id: Id, msg: &Arc<[u8]>) -> Option<bool> {
        self.cluster.as_ref().map(|c| c.offer(id, msg))
    }

    /// Publishes `msg` to `id` on behalf of a publish request; the count comes back to
    /// `reply` (at once when this worker owns `id`). Local connections only: the cluster copy
    /// is the caller's (`to_cluster`).
    pub fn publish(&mut self, id: Id, msg: Arc<[u8]>, reply: ReplyTo) {
        let owner = shard_of(id, self.cfg.workers);
        let published_us = self.unix_us;
        if owner == self.index {
            let n = self.route(id, &msg, published_us);
            self.on_reply(reply, n);
        } else {
            self.mail(
                owner,
                Mail::Publish {
                    id,
                    msg,
                    reply,
                    published_us,
                },
            );
        }
    }

    // ---- writes -------------------------------------------------------------------------

    pub fn start_send(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        debug_assert!(conn.inflight & SEND == 0);
        let buf = conn.pending.take().expect("nothing to send");
        conn.sending = Some(buf);
        conn.inflight |= SEND;
        let gen = conn.gen;
        self.ring.send(slot, buf, token(Op::Send, slot, gen));
    }

    fn on_send(&mut self, slot: u32, gen: u32, c: Completion) {
        let conn = self.conn_mut(slot, gen);
        conn.inflight &= !SEND;
        let state = conn.state;
        let Some(buf) = conn.sending.take() else {
            // A heartbeat, sent from static bytes. A socket that cannot take it whole has a
            // peer that stopped reading long ago (nothing else was queued): cut it.
            if c.result < http::heartbeat(conn.format).len() as i32 {
                let reason = if c.result < 0 {
                    CloseReason::Error
                } else {
                    CloseReason::SlowConsumer
                };
                self.close_conn(slot, reason);
            } else {
                self.after_send(slot, state);
            }
            self.finish_if_done(slot);
            return;
        };
        if c.result <= 0 {
            self.ring.writes.abort(buf);
            self.close_conn(slot, CloseReason::Error);
            self.finish_if_done(slot);
            return;
        }
        if self.ring.writes.complete(buf, c.result as usize) == Sent::Partial {
            let conn = &mut self.conns[slot as usize];
            conn.sending = Some(buf);
            conn.inflight |= SEND;
            self.ring.send(slot, buf, token(Op::Send, slot, gen));
            return;
        }
        self.after_send(slot, state);
        self.finish_if_done(slot);
    }

    /// A send completed whole: send what queued up behind it, or close a draining connection.
    fn after_send(&mut self, slot: u32, state: State) {
        let has_pending = self.conns[slot as usize].pending.is_some();
        match state {
            State::Streaming | State::Draining | State::Publisher | State::Request
                if has_pending =>
            {
                self.start_send(slot)
            }
            // (A draining connection's close was counted when it began to drain.)
            State::Draining => self.close_conn(slot, CloseReason::Answered),
            State::Publisher => self.publisher_sent(slot),
            _ => {}
        }
    }

    /// Writes a last response with `write` and closes the connection once it is sent.
    pub fn respond_and_close(
        &mut self,
        slot: u32,
        reason: CloseReason,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let conn = &mut self.conns[slot as usize];
        let buf = *conn.pending.get_or_insert_with(|| self.ring.writes.alloc());
        write(self.ring.writes.get_mut(buf));
        self.enter_draining(slot, reason);
    }

    /// Close once what is queued is sent; a peer that never reads is cut at the deadline. The
    /// close is counted now, for `reason`: the later `close_conn` of a draining connection
    /// counts nothing.
    pub fn enter_draining(&mut self, slot: u32, reason: CloseReason) {
        self.partial.remove(&slot);
        if self.conns[slot as usize].state != State::Draining {
            self.stats().closed(reason);
        }
        let conn = &mut self.conns[slot as usize];
        conn.state = State::Draining;
        let (gen, sending, pending) = (conn.gen, conn.inflight & SEND != 0, conn.pending);
        self.deadlines
            .push_back((slot, gen, self.now_ms + self.cfg.request_timeout_ms));
        // Nothing allocates a pending buffer without writing to it (a raw stream's end at
        // shutdown is the close itself, so no buffer is made for it).
        debug_assert!(pending.is_none_or(|buf| self.ring.writes.unsent(buf) > 0));
        match (sending, pending) {
            (true, _) => {} // on_send continues
            (false, Some(_)) => self.start_send(slot),
            (false, None) => self.close_conn(slot, reason),
        }
    }

    // ---- close --------------------------------------------------------------------------

    /// Logs the connection out of every id, drops its extras and cancels what is in flight;
    /// the slot is closed once nothing is (`finish_if_done`). Counts the close for `reason`,
    /// unless the connection was draining (counted when it began to, see `enter_draining`).
    pub fn close_conn(&mut self, slot: u32, reason: CloseReason) {
        let conn = self.conns[slot as usize];
        match conn.state {
            State::Free | State::Closing => return,
            State::Subscribing | State::Streaming => {
                self.logout_all(slot);
                self.stats().unsubscribed(conn.format);
            }
            _ => {}
        }
        if conn.state != State::Draining {
            self.stats().closed(reason);
        }
        if conn.flags & IDS != 0 {
            self.positions.remove(&slot);
        }
        self.partial.remove(&slot);
        self.pubs.remove(&slot);
        self.polls.remove(&slot);
        let conn = &mut self.conns[slot as usize];
        if let Some(buf) = conn.pending.take() {
            self.ring.writes.free(buf);
        }
        conn.state = State::Closing;
        conn.flags = 0;
        // Cancel each operation by its user_data: the kernel finds it by hash. Cancelling by
        // descriptor instead scans every armed request of the ring, which at 15k connections
        // per ring made closing them all quadratic (minutes at 1M).
        let gen = conn.gen;
        for (bit, op) in [(RECV, Op::Recv), (POLL, Op::Poll), (SEND, Op::Send)] {
            if conn.inflight & bit != 0 {
                conn.cancels += 1;
                self.ring
                    .cancel(token(op, slot, gen), token(Op::Cancel, slot, gen));
            }
        }
        self.finish_if_done(slot);
    }

    fn finish_if_done(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if conn.state == State::Closing && conn.inflight == 0 && conn.cancels == 0 {
            debug_assert!(conn.sending.is_none() && conn.pending.is_none());
            conn.state = State::Free;
            let gen = conn.gen;
            self.ring.close_slot(slot, token(Op::Close, slot, gen));
            self.live -= 1;
        }
    }

    // ---- mail ---------------------------------------------------------------------------

    pub fn mail(&mut self, worker: usize, mail: Mail) {
        debug_assert_ne!(worker, self.index, "mail to self");
        // A send fails only when the target has stopped (shutdown): nothing to do then.
        let _ = self.shared.mailboxes[worker].send(mail);
        self.mark_wake(worker);
    }

    fn mark_wake(&mut self, worker: usize) {
        if !self.wake_marked[worker] {
            self.wake_marked[worker] = true;
            self.wake.push(worker);
        }
    }

    fn drain_mail(&mut self) {
        while let Ok(mail) = self.inbox.try_recv() {
            match mail {
                Mail::Login { id, conn, since } => {
                    let ack = self.login_owner(id, conn, since);
                    self.mail(conn.worker(), Mail::LoginAck { conn, id, ack });
                }
                Mail::LoginAck { conn, id, ack } => {
                    let slot = conn.slot();
                    let c = &self.conns[slot as usize];
                    if c.gen == conn.gen() && c.state == State::Subscribing {
                        self.on_login_ack(slot, id, ack);
                        let c = &mut self.conns[slot as usize];
                        if c.state == State::Subscribing {
                            c.acks -= 1;
                            if c.acks == 0 {
                                self.start_streaming(slot);
                            }
                        }
                    }
                }
                Mail::Logout { id, conn } => {
                    self.subs.logout(id, conn);
                }
                Mail::Publish {
                    id,
                    msg,
                    reply,
                    published_us,
                } => {
                    let n = self.route(id, &msg, published_us);
                    self.mail(
                        reply.conn.worker(),
                        Mail::Reply {
                            to: reply,
                            connections: n,
                        },
                    );
                }
                Mail::Reply { to, connections } => self.on_reply(to, connections),
                Mail::Deliver {
                    conn,
                    id,
                    seq,
                    msg,
                    published_us,
                } => self.deliver(conn, id, seq, &msg, published_us),
                Mail::Disconnect { id, reply } => {
                    let n = self.disconnect_id(id);
                    self.mail(
                        reply.conn.worker(),
                        Mail::Reply {
                            to: reply,
                            connections: n,
                        },
                    );
                }
                Mail::DisconnectConn { conn } => self.disconnect_conn(conn),
                Mail::Remote { id, msg } => {
                    self.route(id, &msg, self.unix_us);
                }
            }
        }
    }

    /// End of an iteration: ring the workers we mailed, manage accepts, publish gauges.
    fn flush(&mut self) {
        let mut ready = std::mem::take(&mut self.ready_polls);
        for &slot in &ready {
            let conn = &mut self.conns[slot as usize];
            if conn.flags & READY != 0 {
                conn.flags &= !READY;
                if conn.state == State::Streaming && conn.format == http::Format::Poll {
                    self.answer_poll(slot);
                }
            }
        }
        ready.clear();
        self.ready_polls = ready;
        for i in 0..self.wake.len() {
            let target = self.wake[i];
            self.wake_marked[target] = false;
            let was_ringing = self.shared.ringing[target]
                .0
                .swap(true, std::sync::atomic::Ordering::SeqCst);
            if !was_ringing {
                self.ring.msg_ring(
                    self.shared.ring_fds[target].load(std::sync::atomic::Ordering::Relaxed),
                    0,
                    token(Op::Doorbell, 0, 0),
                    token(Op::DoorbellFailed, target as u32, 0),
                );
            }
        }
        self.wake.clear();
        self.manage_accepts();
        let stats = &self.shared.stats[self.index];
        stats.connections.set(self.live as u64);
        stats.ids.set(self.subs.ids() as u64);
        stats.write_buffers.set(self.ring.writes.used() as u64);
        stats.sq_full_flushes.set(self.ring.stats.sq_full_flushes);
        stats.history_ids.set(self.history.ids() as u64);
        stats.history_messages.set(self.history.messages() as u64);
        stats.history_bytes.set(self.history.bytes() as u64);
        stats.history_evicted.set(self.history.evicted());
    }

    // ---- time ---------------------------------------------------------------------------

    fn on_tick(&mut self) {
        let now = self.now_ms;
        while let Some(&(slot, gen, deadline)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let conn = &self.conns[slot as usize];
            if conn.gen != gen {
                continue;
            }
            match conn.state {
                // A kept-alive connection with no next request: closed quietly (an answer
                // nobody asked for could be read as the answer to a request in flight).
                State::Request if conn.flags & KEPT != 0 && !self.partial.contains_key(&slot) => {
                    self.close_conn(slot, CloseReason::Timeout)
                }
                State::Request => {
                    let error = http::Error::new(
                        http::Status::REQUEST_TIMEOUT,
                        "request not complete in time",
                    );
                    self.respond_and_close(slot, CloseReason::Timeout, |out| {
                        http::error_response(out, &error, false)
                    });
                }
                // (Counted when it began to drain, for its own reason.)
                State::Draining => self.close_conn(slot, CloseReason::Timeout),
                _ => {}
            }
        }
        while let Some(&(slot, gen, deadline)) = self.poll_deadlines.front() {
            if deadline > now {
                break;
            }
            self.poll_deadlines.pop_front();
            if self.conns[slot as usize].gen == gen
                && self
                    .polls
                    .get(&slot)
                    .is_some_and(|p| p.deadline_ms == deadline)
            {
                // Answered with what it has (nothing) once every owner has answered.
                self.poll_maybe_ready(slot);
            }
        }
        if self.cfg.heartbeat_ms > 0 && now >= self.next_beat_ms {
            self.next_beat_ms = now + self.cfg.heartbeat_ms;
            self.heartbeats();
        }
        self.history.expire(self.unix_us);
        self.expire_publishers();
        if let Some(deadline) = self.shutdown_deadline {
            if now >= deadline {
                for slot in 0..self.conns.len() as u32 {
                    self.close_conn(slot, CloseReason::Shutdown);
                }
            }
        }
    }

    /// A heartbeat to every stream that was sent nothing since the last round.
    fn heartbeats(&mut self) {
        let mut sent = 0;
        for slot in 0..self.conns.len() as u32 {
            let conn = &mut self.conns[slot as usize];
            if conn.state != State::Streaming {
                continue;
            }
            let beats = match conn.format {
                http::Format::Sse | http::Format::SseRaw | http::Format::Ws => true,
                http::Format::Chunked | http::Format::Raw => self.cfg.test_heartbeats,
                http::Format::Poll => false,
            };
            if conn.flags & ACTIVE != 0 {
                conn.flags &= !ACTIVE;
            } else if beats && conn.pending.is_none() && conn.inflight & SEND == 0 {
                conn.inflight |= SEND;
                let (format, gen) = (conn.format, conn.gen);
                self.ring
                    .send_static(slot, http::heartbeat(format), token(Op::Send, slot, gen));
                sent += 1;
            }
        }
        self.stats().heartbeats.add(sent);
    }

    // ---- shutdown -----------------------------------------------------------------------

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(self.now_ms + self.cfg.shutdown_timeout_ms);
        for slot in 0..self.conns.len() as u32 {
            let conn = &mut self.conns[slot as usize];
            match conn.state {
                // End the stream properly so clients see a complete response.
                State::Streaming => self.end_stream(slot, http::ws::code::GOING_AWAY),
                State::Free | State::Closing | State::Draining => {}
                _ => self.close_conn(slot, CloseReason::Shutdown),
            }
        }
    }
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_slot_is_32_bytes() {
        assert!(
            std::mem::size_of::<Conn>() <= 32,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }
}
