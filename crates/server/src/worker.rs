//! One worker: a thread that drives one io_uring ring, owns the connections accepted on it and
//! one shard of the id table.
//!
//! The loop: wait for completions, copy a bounded batch out and dispatch each, repeat until the
//! completion queue is empty; then read the mailbox; then flush (doorbells to the workers we
//! mailed, accept arming against the admission cap, gauges). Nothing blocks but the wait.
//!
//! A connection is a 32-byte [`Conn`] in `conns`, indexed by its slot in the ring's fixed-file
//! table. Per-state extras live in side tables keyed by slot, so that an idle subscriber costs
//! its slot and its table entry only: `partial` (a request head split over reads), `pubs`
//! (publish connections, see `publish.rs`), `multi_ids` (connections logged in as several ids).

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use ahash::AHashMap;
use comet_http as http;
use comet_ring::{Completion, Ring, Sent, WBuf};
use comet_router::{shard_of, ConnRef, Id, Subscribers};

use crate::config::Config;
use crate::public::{decide, Action};
use crate::publish::PubConn;
use crate::shared::{Mail, ReplyTo, Shared, Stats};
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
    /// True exactly when the connection is logged in as several ids (kept in `multi_ids`).
    pub multi: bool,
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
        multi: false,
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
    subscribers: usize,
    /// This worker's shard of the id table.
    subs: Subscribers,
    multi_ids: AHashMap<u32, Box<[Id]>>,
    partial: AHashMap<u32, Vec<u8>>,
    pub pubs: AHashMap<u32, PubConn>,
    /// (slot, gen, deadline_ms) of connections in `Request` or `Draining`, in deadline order
    /// (every deadline is `now + request_timeout_ms`, so pushing at the back keeps the order).
    deadlines: VecDeque<(u32, u32, u64)>,
    start: Instant,
    pub now_ms: u64,
    /// Workers mailed during this iteration, to ring at its end.
    wake: Vec<usize>,
    wake_marked: Vec<bool>,
    /// Set on SIGINT/SIGTERM: the time after which every connection is closed at once.
    shutdown_deadline: Option<u64>,
    scratch: Vec<ConnRef>,
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
            subscribers: 0,
            subs: Subscribers::new(),
            multi_ids: AHashMap::new(),
            partial: AHashMap::new(),
            pubs: AHashMap::new(),
            deadlines: VecDeque::new(),
            start: Instant::now(),
            now_ms: 0,
            wake: Vec::with_capacity(workers),
            wake_marked: vec![false; workers],
            shutdown_deadline: None,
            scratch: Vec::new(),
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
            self.now_ms = self.start.elapsed().as_millis() as u64;
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
                    Stats::add(&self.stats().accept_errors, 1);
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
        Stats::add(&self.stats().accepted, 1);
        self.ring.recv_multi(slot, token(Op::Recv, slot, gen));
        if listener == PUBLIC {
            self.deadlines
                .push_back((slot, gen, self.now_ms + self.cfg.request_timeout_ms));
        } else {
            self.pubs.insert(slot, PubConn::new(self.now_ms));
        }
        if self.shutdown_deadline.is_some() {
            self.close_conn(slot);
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
                    Stats::add(&self.stats().accept_paused, 1);
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
                State::Subscribing | State::Streaming => {
                    // A stream is one-way: bytes after the subscribe request end it.
                    self.ring.reads.recycle(bid);
                    self.close_conn(slot);
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
                    _ => self.close_conn(slot),
                },
                libc::ENOBUFS | libc::ECANCELED => {} // re-armed below if still reading
                _ => self.close_conn(slot),
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
                decide(head, &self.cfg)
            }
            None => decide(data, &self.cfg),
        };
        if let Action::NeedMore = action {
            // The head is split over reads: keep its bytes (at most header_bytes_max, beyond
            // which `decide` answers 431).
            self.partial
                .insert(slot, stored.unwrap_or_else(|| data.to_vec()));
        }
        self.ring.reads.recycle(bid);
        Stats::add(
            &self.stats().requests,
            u64::from(!matches!(action, Action::NeedMore)),
        );
        match action {
            Action::NeedMore => {}
            Action::Subscribe { ids, format } => self.subscribe(slot, ids, format),
            Action::Head { format } => {
                self.respond_and_close(slot, |out| {
                    http::stream_head(out, format, b"*");
                });
            }
            Action::Reject { error, head_only } => {
                Stats::add(&self.stats().bad_requests, 1);
                self.respond_and_close(slot, |out| http::error_response(out, &error, head_only));
            }
        }
    }

    fn on_poll(&mut self, slot: u32, gen: u32, c: Completion) {
        let conn = self.conn_mut(slot, gen);
        conn.inflight &= !POLL;
        if c.result != -libc::ECANCELED {
            // Readable or hung up: either way a subscriber stream ends here.
            self.close_conn(slot);
        }
        self.finish_if_done(slot);
    }

    // ---- subscribers --------------------------------------------------------------------

    fn subscribe(&mut self, slot: u32, ids: Vec<Id>, format: http::Format) {
        let cref = self.conn_ref(slot);
        let head = self.ring.writes.alloc();
        http::stream_head(self.ring.writes.get_mut(head), format, b"*");
        let conn = &mut self.conns[slot as usize];
        conn.state = State::Subscribing;
        conn.format = format;
        conn.pending = Some(head);
        // Stop reading; watch for the peer's close with the cheapest armed request.
        conn.inflight |= POLL;
        self.ring.poll_read(slot, token(Op::Poll, slot, cref.gen()));
        self.stop_recv(slot);
        let mut acks: u16 = 0;
        for &id in &ids {
            let owner = shard_of(id, self.cfg.workers);
            if owner == self.index {
                self.login_local(id, cref);
            } else {
                self.mail(owner, Mail::Login { id, conn: cref });
                acks += 1;
            }
        }
        let conn = &mut self.conns[slot as usize];
        conn.acks = acks;
        if let [id] = ids[..] {
            conn.id = id;
        } else {
            conn.multi = true;
            self.multi_ids.insert(slot, ids.into_boxed_slice());
        }
        self.subscribers += 1;
        if acks == 0 {
            self.start_streaming(slot);
        }
    }

    fn start_streaming(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        conn.state = State::Streaming;
        if conn.sending.is_none() && conn.pending.is_some() {
            self.start_send(slot);
        }
    }

    fn login_local(&mut self, id: Id, conn: ConnRef) {
        self.subs.login(id, conn);
    }

    fn logout_all(&mut self, slot: u32) {
        let conn = self.conns[slot as usize];
        let cref = ConnRef::new(self.index, slot, conn.gen);
        let ids = if conn.multi {
            self.multi_ids.remove(&slot).expect("multi-id set")
        } else {
            Box::new([conn.id])
        };
        for &id in ids.iter() {
            let owner = shard_of(id, self.cfg.workers);
            if owner == self.index {
                self.subs.logout(id, cref);
            } else {
                self.mail(owner, Mail::Logout { id, conn: cref });
            }
        }
    }

    /// Frames `msg` for one local subscriber, or cuts the subscriber if its queue is full.
    fn deliver(&mut self, conn_ref: ConnRef, msg: &[u8]) {
        let slot = conn_ref.slot();
        let Some(conn) = self.conns.get(slot as usize) else {
            unreachable!("delivery to a slot never used");
        };
        if conn.gen != conn_ref.gen()
            || !matches!(conn.state, State::Subscribing | State::Streaming)
        {
            Stats::add(&self.stats().stale, 1);
            return;
        }
        let queued = conn.sending.map_or(0, |b| self.ring.writes.unsent(b))
            + conn.pending.map_or(0, |b| self.ring.writes.unsent(b));
        if queued + msg.len() > self.cfg.queue_bytes_max {
            // Slow consumer: the documented policy is to disconnect it (it reconnects).
            Stats::add(&self.stats().slow_disconnects, 1);
            Stats::add(&self.stats().dropped, 1);
            self.close_conn(slot);
            return;
        }
        let conn = &mut self.conns[slot as usize];
        let buf = *conn.pending.get_or_insert_with(|| self.ring.writes.alloc());
        conn.msg_count += 1;
        // Each connection numbers its messages, so the bytes differ per connection: the
        // message is framed (copied) per connection, which costs far less than the send.
        http::frame_message(
            self.ring.writes.get_mut(buf),
            conn.format,
            u64::from(conn.msg_count),
            msg,
        );
        let start = conn.state == State::Streaming && conn.sending.is_none();
        Stats::add(&self.stats().delivered, 1);
        if start {
            self.start_send(slot);
        }
    }

    /// Routes a message for `id`, owned by this worker: hands it to every connection logged in
    /// as `id` and returns how many there were.
    fn route(&mut self, id: Id, msg: &Arc<[u8]>) -> u32 {
        debug_assert_eq!(shard_of(id, self.cfg.workers), self.index);
        Stats::add(&self.stats().published, 1);
        let mut targets = std::mem::take(&mut self.scratch);
        targets.clear();
        targets.extend_from_slice(self.subs.get(id));
        for &conn in &targets {
            if conn.worker() == self.index {
                self.deliver(conn, msg);
            } else {
                self.mail(
                    conn.worker(),
                    Mail::Deliver {
                        conn,
                        msg: msg.clone(),
                    },
                );
            }
        }
        let n = targets.len() as u32;
        self.scratch = targets;
        n
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
        if owner == self.index {
            let n = self.route(id, &msg);
            self.on_reply(reply, n);
        } else {
            self.mail(owner, Mail::Publish { id, msg, reply });
        }
    }

    // ---- writes -------------------------------------------------------------------------

    pub fn start_send(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        debug_assert!(conn.sending.is_none());
        let buf = conn.pending.take().expect("nothing to send");
        conn.sending = Some(buf);
        conn.inflight |= SEND;
        let gen = conn.gen;
        self.ring.send(slot, buf, token(Op::Send, slot, gen));
    }

    fn on_send(&mut self, slot: u32, gen: u32, c: Completion) {
        let conn = self.conn_mut(slot, gen);
        conn.inflight &= !SEND;
        let buf = conn
            .sending
            .take()
            .expect("send completion without a buffer");
        let state = conn.state;
        if c.result <= 0 {
            self.ring.writes.abort(buf);
            self.close_conn(slot);
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
        let has_pending = self.conns[slot as usize].pending.is_some();
        match state {
            State::Streaming | State::Draining | State::Publisher if has_pending => {
                self.start_send(slot)
            }
            State::Draining => self.close_conn(slot),
            State::Publisher => self.publisher_sent(slot),
            _ => {}
        }
        self.finish_if_done(slot);
    }

    /// Writes a last response with `write` and closes the connection once it is sent.
    pub fn respond_and_close(&mut self, slot: u32, write: impl FnOnce(&mut Vec<u8>)) {
        let conn = &mut self.conns[slot as usize];
        let buf = *conn.pending.get_or_insert_with(|| self.ring.writes.alloc());
        write(self.ring.writes.get_mut(buf));
        self.enter_draining(slot);
    }

    /// Close once what is queued is sent; a peer that never reads is cut at the deadline.
    pub fn enter_draining(&mut self, slot: u32) {
        self.partial.remove(&slot);
        let conn = &mut self.conns[slot as usize];
        conn.state = State::Draining;
        let (gen, sending, pending) = (conn.gen, conn.sending, conn.pending);
        self.deadlines
            .push_back((slot, gen, self.now_ms + self.cfg.request_timeout_ms));
        // Nothing allocates a pending buffer without writing to it (a raw stream's end at
        // shutdown is the close itself, so no buffer is made for it).
        debug_assert!(pending.is_none_or(|buf| self.ring.writes.unsent(buf) > 0));
        match (sending, pending) {
            (Some(_), _) => {} // on_send continues
            (None, Some(_)) => self.start_send(slot),
            (None, None) => self.close_conn(slot),
        }
    }

    // ---- close --------------------------------------------------------------------------

    /// Logs the connection out of every id, drops its extras and cancels what is in flight;
    /// the slot is closed once nothing is (`finish_if_done`).
    pub fn close_conn(&mut self, slot: u32) {
        let conn = self.conns[slot as usize];
        match conn.state {
            State::Free | State::Closing => return,
            State::Subscribing | State::Streaming => {
                self.logout_all(slot);
                self.subscribers -= 1;
            }
            _ => {}
        }
        if conn.multi {
            self.multi_ids.remove(&slot);
        }
        self.partial.remove(&slot);
        self.pubs.remove(&slot);
        let conn = &mut self.conns[slot as usize];
        if let Some(buf) = conn.pending.take() {
            self.ring.writes.free(buf);
        }
        conn.state = State::Closing;
        conn.multi = false;
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
        Stats::add(&self.stats().closed, 1);
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
                Mail::Login { id, conn } => {
                    self.login_local(id, conn);
                    self.mail(conn.worker(), Mail::LoginAck { conn });
                }
                Mail::LoginAck { conn } => {
                    let slot = conn.slot();
                    let c = &mut self.conns[slot as usize];
                    if c.gen == conn.gen() && c.state == State::Subscribing {
                        c.acks -= 1;
                        if c.acks == 0 {
                            self.start_streaming(slot);
                        }
                    }
                }
                Mail::Logout { id, conn } => {
                    self.subs.logout(id, conn);
                }
                Mail::Publish { id, msg, reply } => {
                    let n = self.route(id, &msg);
                    self.mail(
                        reply.conn.worker(),
                        Mail::Reply {
                            to: reply,
                            connections: n,
                        },
                    );
                }
                Mail::Reply { to, connections } => self.on_reply(to, connections),
                Mail::Deliver { conn, msg } => self.deliver(conn, &msg),
                Mail::Remote { id, msg } => {
                    self.route(id, &msg);
                }
            }
        }
    }

    /// End of an iteration: ring the workers we mailed, manage accepts, publish gauges.
    fn flush(&mut self) {
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
        Stats::set(&stats.connections, self.live as u64);
        Stats::set(&stats.subscribers, self.subscribers as u64);
        Stats::set(&stats.ids, self.subs.ids() as u64);
        Stats::set(&stats.write_buffers, self.ring.writes.used() as u64);
        Stats::set(&stats.sq_full_flushes, self.ring.stats.sq_full_flushes);
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
                State::Request => {
                    Stats::add(&self.stats().timeouts, 1);
                    let error = http::Error::new(
                        http::Status::REQUEST_TIMEOUT,
                        "request not complete in time",
                    );
                    self.respond_and_close(slot, |out| http::error_response(out, &error, false));
                }
                State::Draining => self.close_conn(slot),
                _ => {}
            }
        }
        self.expire_publishers();
        if let Some(deadline) = self.shutdown_deadline {
            if now >= deadline {
                for slot in 0..self.conns.len() as u32 {
                    self.close_conn(slot);
                }
            }
        }
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
                State::Streaming => {
                    // End the stream properly so clients see a complete response (a raw
                    // HTTP/1.0 stream ends with the close itself).
                    let format = conn.format;
                    if format.is_chunked() {
                        let buf = *conn.pending.get_or_insert_with(|| self.ring.writes.alloc());
                        http::stream_end(self.ring.writes.get_mut(buf), format);
                    }
                    self.logout_all(slot);
                    self.subscribers -= 1;
                    self.enter_draining(slot);
                }
                State::Free | State::Closing | State::Draining => {}
                _ => self.close_conn(slot),
            }
        }
    }
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
