//! One worker: a thread that drives one io_uring ring, holds the connections accepted on it and
//! owns one shard of the id table.
//!
//! Layout: the loop (this file) owns the components and is the only one that calls across
//! them; each component owns its state and is called from here, returning values the loop acts
//! on (a cut connection, an answer to write, effects to carry out).
//! - `conns`: the ring and the connection slots: what is in flight, reads, writes, deadlines,
//!   heartbeats, close. The holder of sockets.
//! - `accept`: the listeners and admission.
//! - `owner`: the worker as owner of a shard of ids: logins, logouts, routing to connections
//!   here or (by mail) on other workers. It owns `shard` (subscriber table and history; no
//!   sockets) and `post` (mailboxes and doorbells between workers and from the cluster bridge).
//! - `request`: requests on the subscriber listener until their head is complete.
//! - `stream`: subscriber streams: positions, framing, the slow-consumer policy.
//! - `ws`: a WebSocket client's control frames.
//! - `long_poll`: long-polls collecting their answer. No I/O.
//! - `expiry`: when subscribers' tokens expire (a heap of slots); checked on the tick.
//! - `publish`: publish-API connections. No I/O.
//!
//! The loop: wait for completions, copy a bounded batch out and dispatch each, repeat until the
//! completion queue is empty; then read the mailbox; then flush (long-poll answers, doorbells to
//! the workers mailed, accept arming against the admission cap, gauges). Nothing blocks but the
//! wait.

mod accept;
mod conns;
mod expiry;
mod long_poll;
mod owner;
pub mod post;
mod publish;
mod request;
mod shard;
mod stream;
mod ws;

use std::os::fd::RawFd;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use comet_http::{self as http, Listener};
use comet_ring::{Completion, Ring};
use comet_router::{ConnRef, Id};

use crate::config::Config;
use crate::public::{Action, Subscribe};
use crate::shared::{Shared, Stats};
use crate::user_data::{pack, unpack, Op};
use accept::{Accept, Accepted};
use conns::{Closed, Conns, Received, Sent, State, Watched, IDS, KEPT, LATE, RECV};
use expiry::Expiry;
use long_poll::{Answer, LongPolls};
use owner::Owner;
use post::{Ack, Boxes, Mail, Post, ReplyTo};
use publish::{Effect, Publishers};
use request::Requests;
use shard::Shard;
use stream::{End, Logins, Streams};
use ws::{Input, WsInput};

/// Completions copied out of the queue per batch.
const CQE_BATCH: usize = 256;
/// Period of the timer that expires requests and idle connections.
const TICK_MS: u64 = 250;
/// The content type of health checks.
const TEXT: &str = "text/plain; charset=utf-8";

/// The worker's clocks, read once per loop iteration.
struct Clock {
    start: Instant,
    /// The wall clock at `start`.
    start_unix_us: u64,
    now_ms: u64,
    /// Wall clock, microseconds since the Unix epoch: sequence numbers and token expiry. It
    /// follows the monotonic clock from `start`.
    unix_us: u64,
}

pub struct Worker {
    index: usize,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    conns: Conns,
    accept: Accept,
    owner: Owner,
    requests: Requests,
    streams: Streams,
    ws: WsInput,
    polls: LongPolls,
    pubs: Publishers,
    expiry: Expiry,
    clock: Clock,
    /// Connections logged in as their ids (streams and long-polls).
    subscribers: usize,
    /// When the next heartbeat round is due.
    next_beat_ms: u64,
    /// Set on SIGINT/SIGTERM: the time after which every connection is closed at once.
    shutdown_deadline: Option<u64>,
    /// Open connections accepted during shutdown (`LATE`): health checks on the publish port,
    /// which must not hold the worker's exit.
    late: usize,
    cqes: Vec<Completion>,
    /// Scratch: the connections a message goes to; the effects of publish requests.
    targets: Vec<ConnRef>,
    effects: Vec<Effect>,
    expired: Vec<(u32, bool)>,
    /// The way into the cluster bridge, when the node is in a cluster.
    cluster: Option<comet_cluster::Publisher>,
}

impl Worker {
    /// `listeners` in the order of [`Listener`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        cfg: Arc<Config>,
        shared: Arc<Shared>,
        boxes: Arc<Boxes>,
        inbox: Receiver<Mail>,
        ring: Ring,
        listeners: [RawFd; 2],
        cluster: Option<comet_cluster::Publisher>,
    ) -> Worker {
        let unix_us = unix_us();
        Worker {
            index,
            conns: Conns::new(index, ring),
            accept: Accept::new(listeners),
            owner: Owner::new(
                index,
                cfg.workers,
                Shard::new(cfg.history, unix_us),
                Post::new(index, boxes, inbox),
            ),
            requests: Requests::default(),
            streams: Streams::new(&cfg),
            ws: WsInput::default(),
            polls: LongPolls::new(cfg.queue_messages_max, cfg.poll_timeout_ms),
            pubs: Publishers::default(),
            expiry: Expiry::default(),
            clock: Clock {
                start: Instant::now(),
                start_unix_us: unix_us,
                now_ms: 0,
                unix_us,
            },
            subscribers: 0,
            next_beat_ms: cfg.heartbeat_ms,
            shutdown_deadline: None,
            late: 0,
            cqes: Vec::with_capacity(CQE_BATCH),
            targets: Vec::new(),
            effects: Vec::new(),
            expired: Vec::new(),
            cluster,
            cfg,
            shared,
        }
    }

    fn stats(&self) -> &Stats {
        &self.shared.stats[self.index]
    }

    /// Runs until shutdown completes. `done` keeps every ring open until all workers have left
    /// their loops, so that no MSG_RING targets a closed ring descriptor.
    pub fn run(mut self, shutdown_fd: RawFd, done: &Barrier) {
        let ring = self.conns.ring();
        ring.tick_every(TICK_MS, pack(Op::Tick, 0, 0));
        ring.poll_fd(shutdown_fd, pack(Op::Shutdown, 0, 0));
        self.flush();
        loop {
            if let Err(e) = self.conns.ring().submit_and_wait(1) {
                tracing::error!(worker = self.index, "io_uring_enter failed: {e}");
                std::process::exit(1);
            }
            let elapsed = self.clock.start.elapsed();
            self.clock.now_ms = elapsed.as_millis() as u64;
            self.clock.unix_us = self.clock.start_unix_us + elapsed.as_micros() as u64;
            loop {
                let mut cqes = std::mem::take(&mut self.cqes);
                self.conns.ring().drain(&mut cqes, CQE_BATCH);
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
            if self.shutdown_deadline.is_some() && self.conns.live() == 0 && self.accept.idle() {
                break;
            }
        }
        tracing::debug!(worker = self.index, "worker stopped");
        done.wait();
    }

    fn complete(&mut self, c: Completion) {
        let (op, slot, gen) = unpack(c.user_data);
        match op {
            Op::Accept => self.on_accept(Accept::listener(slot), c),
            Op::Recv => self.on_recv(slot, gen, c),
            Op::Watch => self.on_watch(slot, gen, c),
            Op::Send => self.on_send(slot, gen, c),
            Op::Cancel => self.conns.on_cancel(slot, gen),
            Op::Close => {
                // Only failures post a completion (skip-success).
                let errno = -c.result;
                tracing::warn!(worker = self.index, slot, "close failed: errno {errno}");
            }
            Op::Doorbell => self.owner.post().doorbell(),
            Op::DoorbellFailed => {
                let (target, errno) = (slot as usize, -c.result);
                tracing::warn!(
                    worker = self.index,
                    target,
                    "MSG_RING failed: errno {errno}"
                );
                self.owner.post().doorbell_failed(target);
            }
            Op::Tick => {
                if !c.more() {
                    self.conns.ring().tick_every(TICK_MS, pack(Op::Tick, 0, 0));
                }
                self.on_tick();
            }
            Op::Shutdown => self.begin_shutdown(),
            Op::Ignore => {}
        }
    }

    // ---- connections --------------------------------------------------------------------

    fn on_accept(&mut self, listener: Listener, c: Completion) {
        let slot = match self.accept.on_complete(listener, c) {
            Accepted::Slot(slot) => slot,
            Accepted::Cancelled => return,
            Accepted::Failed(errno) => {
                Stats::add(&self.stats().accept_errors, 1);
                let worker = self.index;
                tracing::warn!(worker, ?listener, "accept failed: errno {errno}");
                return;
            }
        };
        Stats::add(&self.stats().accepted, 1);
        let now = self.clock.now_ms;
        match listener {
            Listener::Public => {
                self.conns.accepted(slot, State::Request);
                self.conns.deadline(slot, now + self.cfg.request_timeout_ms);
            }
            Listener::Publish => {
                self.conns.accepted(slot, State::Publisher);
                self.pubs.accepted(slot, now);
            }
        }
        if self.shutdown_deadline.is_some() {
            match listener {
                Listener::Public => self.close(slot),
                Listener::Publish => {
                    self.conns.get_mut(slot).flags |= LATE;
                    self.late += 1;
                }
            }
        }
    }

    fn on_recv(&mut self, slot: u32, gen: u32, c: Completion) {
        let ws = self.conns.get(slot).format == http::Format::Ws;
        match self.conns.on_recv(slot, gen, c) {
            Received::Bytes { bid, len, state } => {
                let data = self.conns.read(bid, len);
                match state {
                    State::Request => {
                        let now_s = self.clock.unix_us / 1_000_000;
                        let action = self.requests.feed(slot, data, &self.cfg, now_s);
                        self.conns.recycle(bid);
                        self.on_request(slot, action);
                    }
                    State::Publisher => {
                        let p = self.pubs.get_mut(slot).expect("publisher state");
                        p.received(data, self.clock.now_ms);
                        self.conns.recycle(bid);
                        self.process_publish(slot);
                    }
                    State::Subscribing | State::Streaming if ws => {
                        self.ws.feed(slot, data);
                        self.conns.recycle(bid);
                        self.on_ws_input(slot);
                    }
                    State::Subscribing | State::Streaming => {
                        // A stream is one-way: bytes after the subscribe request end it.
                        self.conns.recycle(bid);
                        self.close(slot);
                    }
                    State::Draining | State::Closing => self.conns.recycle(bid),
                    State::Free => unreachable!("recv on a free slot"),
                }
            }
            Received::Eof(State::Publisher) => {
                // What was received is still answered; then the connection closes.
                if let Some(p) = self.pubs.get_mut(slot) {
                    p.eof();
                }
                self.flush_replies(slot);
            }
            // The peer may half-close and still read our last response.
            Received::Eof(State::Draining | State::Closing) => {}
            Received::Eof(_) | Received::Failed => self.close(slot),
            // A WebSocket's request recv was cancelled, or no read buffer was free: it waits
            // for readability (again). Others are re-armed below if still reading.
            Received::Stopped(state) => {
                if ws && state.subscribed() {
                    self.conns.watch(slot);
                }
            }
        }
        self.rearm_recv(slot);
        self.conns.finish_if_done(slot);
    }

    /// Re-arms the multishot recv of a connection that still reads.
    fn rearm_recv(&mut self, slot: u32) {
        let reading = match self.conns.get(slot).state {
            State::Request => true,
            State::Publisher => self.pubs.get_mut(slot).is_some_and(|p| p.wants_input()),
            _ => false,
        };
        if reading {
            self.conns.read_on(slot);
        }
    }

    fn on_watch(&mut self, slot: u32, gen: u32, c: Completion) {
        let watched = self.conns.on_watch(slot, gen, c);
        let conn = self.conns.get(slot);
        let ws = conn.format == http::Format::Ws && conn.state.subscribed();
        match watched {
            Watched::Cancelled => {}
            // The request's recv is still being cancelled: its end re-arms the watch.
            Watched::Readable if ws && conn.inflight & RECV != 0 => {}
            // A WebSocket client sent a frame (or closed): read it; EOF closes in on_recv.
            Watched::Readable if ws => self.conns.read_once(slot),
            // Readable or hung up: either way any other subscriber stream ends here.
            Watched::Readable | Watched::Closed => self.close(slot),
        }
        self.conns.finish_if_done(slot);
    }

    fn on_send(&mut self, slot: u32, gen: u32, c: Completion) {
        match self.conns.on_send(slot, gen, c) {
            Sent::Busy => {}
            Sent::Failed | Sent::Idle(State::Draining) => self.close(slot),
            Sent::Idle(State::Publisher) => self.resume_publisher(slot),
            Sent::Idle(_) => {}
        }
        self.conns.finish_if_done(slot);
    }

    fn on_ws_input(&mut self, slot: u32) {
        match self.ws.process(&mut self.conns, slot) {
            Input::Open => self.conns.watch(slot),
            Input::Closed => self.finish_stream(slot),
            Input::ProtocolError => {
                Stats::add(&self.stats().ws_close_errors, 1);
                self.finish_stream(slot);
            }
        }
    }

    /// Writes a last response with `write` and closes the connection once it is sent.
    fn respond_and_close(&mut self, slot: u32, write: impl FnOnce(&mut Vec<u8>)) {
        self.conns.write(slot, write);
        self.drain(slot);
    }

    /// Closes once what is queued is sent; input is ignored from now on.
    fn drain(&mut self, slot: u32) {
        self.requests.forget(slot);
        self.ws.forget(slot);
        self.pubs.forget(slot);
        let deadline = self.clock.now_ms + self.cfg.request_timeout_ms;
        if self.conns.drain(slot, deadline) {
            self.close(slot);
        }
    }

    /// The one way to close: the slot is closed once nothing is in flight, and every component
    /// forgets the connection.
    fn close(&mut self, slot: u32) {
        let Some(closed) = self.conns.close(slot) else {
            return;
        };
        if closed.state.subscribed() {
            self.log_out(slot, closed);
        }
        if closed.flags & LATE != 0 {
            self.late -= 1;
        }
        self.requests.forget(slot);
        self.ws.forget(slot);
        self.pubs.forget(slot);
        Stats::add(&self.stats().closed, 1);
    }

    // ---- subscribers --------------------------------------------------------------------

    fn on_request(&mut self, slot: u32, action: Action) {
        if !matches!(action, Action::NeedMore) {
            Stats::add(&self.stats().requests, 1);
        }
        match action {
            Action::NeedMore => {}
            Action::Subscribe(sub) => self.subscribe(slot, *sub),
            Action::Head {
                format,
                allow_origin,
            } => self.respond_and_close(slot, |out| {
                http::stream_head(out, format, &allow_origin);
            }),
            Action::Preflight { allow_origin } => {
                self.respond_and_close(slot, |out| http::preflight_response(out, &allow_origin));
            }
            Action::Demo { head_only } => self.respond_and_close(slot, |out| {
                let page = crate::demo::PAGE.as_bytes();
                let html = "text/html; charset=utf-8";
                http::response(out, http::Status::OK, html, page, true, head_only)
            }),
            Action::Health { head_only } => self.respond_and_close(slot, |out| {
                http::response(out, http::Status::OK, TEXT, b"ok\n", true, head_only)
            }),
            Action::Ready { head_only } => {
                let (status, body) = self.readiness();
                self.respond_and_close(slot, |out| {
                    http::response(out, status, TEXT, body, true, head_only)
                });
            }
            Action::Reject {
                error,
                head_only,
                allow_origin,
            } => {
                Stats::add(&self.stats().bad_requests, 1);
                if matches!(error.status.0, 401 | 403) {
                    Stats::add(&self.stats().auth_failures, 1);
                }
                self.respond_and_close(slot, |out| {
                    http::error_response_for(out, &error, head_only, &allow_origin)
                });
            }
        }
    }

    fn subscribe(&mut self, slot: u32, sub: Subscribe) {
        let Subscribe {
            ids,
            format,
            since,
            allow_origin,
            ws_key,
            keep_alive,
            exp_s,
        } = sub;
        let cref = self.conns.conn_ref(slot);
        let conn = self.conns.get_mut(slot);
        conn.state = State::Subscribing;
        conn.format = format;
        // Until its owner answers, an id's position is the client's, or a second ago (the
        // owner's clock may lag ours a little: a resume from there may repeat messages from
        // before the login, but misses none after it).
        let start = self.clock.unix_us.saturating_sub(1_000_000);
        let since = since.as_deref();
        if format == http::Format::Poll {
            // A long-poll keeps its recv (the answer may be followed by the next poll): bytes
            // before the answer end it, as for a stream.
            let now = self.clock.now_ms;
            let (gen, origin) = (cref.gen(), allow_origin);
            self.polls
                .begin(slot, gen, &ids, since, start, keep_alive, origin, now);
            // A poll answers by its timeout: only a token expiring before that ends it (the
            // next poll brings its token again).
            let timeout_us = self.cfg.poll_timeout_ms.saturating_mul(1000);
            let before_timeout =
                |e: &u64| e.saturating_mul(1_000_000) < self.clock.unix_us + timeout_us;
            if let Some(exp_s) = exp_s.filter(before_timeout) {
                self.polls.set_expiry(slot, exp_s);
                self.expiry.add(slot, gen, exp_s);
            }
        } else {
            self.conns.write(slot, |out| match &ws_key {
                Some(key) => {
                    http::ws::handshake_response(out, key, &allow_origin, &*allow_origin != b"*")
                }
                None => http::stream_head(out, format, &allow_origin),
            });
            self.conns.watch_instead(slot);
            self.streams
                .begin(&mut self.conns, slot, &ids, since, start);
            if let Some(exp_s) = exp_s {
                self.expiry.add(slot, cref.gen(), exp_s);
            }
        }
        self.subscribers += 1;
        let acks = self.owner.login_elsewhere(&ids, since, cref);
        self.conns.get_mut(slot).acks = acks;
        for (i, &id) in ids.iter().enumerate() {
            if self.conns.get(slot).state != State::Subscribing {
                break; // cut as a slow consumer by an earlier id's replay: logged out already
            }
            if let Some(ack) = self.owner.login_here(id, cref, since.map(|s| s[i])) {
                self.on_login_ack(slot, id, ack);
            }
        }
        if acks == 0 && self.conns.get(slot).state == State::Subscribing {
            self.start_streaming(slot);
        }
    }

    /// Every owner answered: the stream's head and what queued up go out; a long-poll with
    /// something to answer is answered.
    fn start_streaming(&mut self, slot: u32) {
        self.conns.streaming(slot);
        if self.conns.get(slot).format == http::Format::Poll {
            self.polls.maybe_ready(slot, self.clock.now_ms, true);
        }
    }

    /// The owner of `id` logged the connection in: its gap, replay and position.
    fn on_login_ack(&mut self, slot: u32, id: Id, ack: Ack) {
        let stats = &self.shared.stats[self.index];
        let conn = self.conns.get(slot);
        if conn.format == http::Format::Poll {
            Stats::add(&stats.resume_gaps, u64::from(ack.gap));
            let added = self
                .polls
                .login_ack(slot, id, ack.gap, &ack.replay, ack.pos);
            Stats::add(&stats.delivered, added);
            let streaming = conn.state == State::Streaming;
            self.polls.maybe_ready(slot, self.clock.now_ms, streaming);
        } else if !self
            .streams
            .login_ack(&mut self.conns, slot, id, ack, stats)
        {
            self.close(slot);
        }
    }

    /// Logs a subscriber out of every id it holds.
    fn log_out(&mut self, slot: u32, conn: Closed) {
        self.subscribers -= 1;
        let logins = if conn.format == http::Format::Poll {
            match self.polls.forget(slot) {
                Some(ids) => Logins::Many(ids),
                None => return, // answered: logged out then
            }
        } else {
            self.conns.get_mut(slot).flags &= !IDS;
            self.streams.end(slot, conn.flags, conn.id)
        };
        for id in logins.ids() {
            self.owner.logout(id, conn.conn);
        }
    }

    /// Ends a subscriber's stream properly (the last chunk, a WebSocket close, see [`End`]),
    /// then closes once it is sent.
    fn end_stream(&mut self, slot: u32, why: End) {
        if self.conns.get(slot).format == http::Format::Poll {
            self.close(slot);
            return;
        }
        Streams::write_end(&mut self.conns, slot, why);
        self.finish_stream(slot);
    }

    /// A token's `exp` came for the connection in `slot`, generation `gen`, if it is still
    /// subscribed with that token: a stream ends (SSE `event: expired`, WebSocket close 4001),
    /// a long-poll is answered `401`. The client resumes from its position with a new token.
    fn expire_token(&mut self, slot: u32, gen: u32, exp_s: u64) {
        let cref = ConnRef::new(self.index, slot, gen);
        let Some(conn) = self.conns.current(cref).filter(|c| c.state.subscribed()) else {
            return; // gone, or a kept-alive long-poll between polls
        };
        if conn.format != http::Format::Poll {
            Streams::write_end(&mut self.conns, slot, End::Expired);
            self.finish_stream(slot);
            return;
        }
        if self.polls.expiry(slot) != Some(exp_s) {
            return; // a later poll on the connection, with its own token
        }
        let allow_origin: Box<[u8]> = self.polls.allow_origin(slot).unwrap_or(b"*").into();
        let expired = crate::auth::AuthError::Expired;
        let mut error = http::Error::new(http::Status::UNAUTHORIZED, expired.reason());
        if let Some(challenge) = expired.www_authenticate() {
            error = error.with_header("WWW-Authenticate", challenge);
        }
        let conn = self.conns.describe(slot);
        self.log_out(slot, conn);
        self.respond_and_close(slot, |out| {
            http::error_response_for(out, &error, false, &allow_origin)
        });
    }

    /// Logs a stream out and closes it once what is queued is sent.
    fn finish_stream(&mut self, slot: u32) {
        let conn = self.conns.describe(slot);
        self.log_out(slot, conn);
        self.drain(slot);
    }

    /// A message for `conn`, which this worker holds.
    fn deliver(&mut self, conn: ConnRef, id: Id, seq: u64, msg: &Arc<[u8]>) {
        let slot = conn.slot();
        let stats = &self.shared.stats[self.index];
        let Some(c) = self.conns.current(conn).filter(|c| c.state.subscribed()) else {
            // Closed while the message was on its way (or cut during a replay).
            Stats::add(&stats.stale, 1);
            return;
        };
        if c.format == http::Format::Poll {
            let streaming = c.state == State::Streaming;
            match self.polls.deliver(slot, id, seq, msg) {
                long_poll::Delivery::Added => {
                    Stats::add(&stats.delivered, 1);
                    self.polls.maybe_ready(slot, self.clock.now_ms, streaming);
                }
                long_poll::Delivery::Stale => Stats::add(&stats.stale, 1),
                long_poll::Delivery::Full => {}
            }
        } else if !self
            .streams
            .deliver(&mut self.conns, slot, id, seq, msg, stats)
        {
            self.close(slot);
        }
    }

    /// Answers a long-poll (maybe with nothing, at its timeout), then waits for the next
    /// request on the connection or closes it.
    fn answer_poll(&mut self, slot: u32, answer: Answer) {
        Stats::add(&self.stats().polls_answered, 1);
        let cref = self.conns.conn_ref(slot);
        self.subscribers -= 1;
        for &(id, _) in answer.ids.iter() {
            self.owner.logout(id, cref);
        }
        let Answer {
            body,
            keep_alive,
            allow_origin,
            ..
        } = answer;
        self.conns.get_mut(slot).flags = 0;
        self.conns.write(slot, |out| {
            let json = "application/json";
            let ok = http::Status::OK;
            http::response_for(out, ok, json, &body, !keep_alive, false, &allow_origin)
        });
        let conn = self.conns.get_mut(slot);
        if !keep_alive || conn.inflight & RECV == 0 {
            self.drain(slot);
            return;
        }
        conn.state = State::Request;
        conn.flags |= KEPT;
        let deadline = self.clock.now_ms + self.cfg.request_timeout_ms;
        self.conns.deadline(slot, deadline);
    }

    // ---- routing ------------------------------------------------------------------------

    /// Routes a message for `id`, owned by this worker, and returns how many connections it
    /// went to.
    fn route(&mut self, id: Id, msg: &Arc<[u8]>) -> u32 {
        Stats::add(&self.stats().published, 1);
        // Copied out: a delivery may close a connection, which logs it out of the table.
        let mut here = std::mem::take(&mut self.targets);
        here.clear();
        let (seq, n) = self.owner.route(id, msg, self.clock.unix_us, &mut here);
        for &conn in &here {
            self.deliver(conn, id, seq, msg);
        }
        self.targets = here;
        n
    }

    /// `POST /disconnect/<id>` on the owner of `id`: ends every connection logged in as `id`.
    fn disconnect_id(&mut self, id: Id) -> u32 {
        let mut here = std::mem::take(&mut self.targets);
        here.clear();
        let n = self.owner.disconnect(id, &mut here);
        for &conn in &here {
            self.disconnect_conn(conn);
        }
        self.targets = here;
        n
    }

    fn disconnect_conn(&mut self, conn: ConnRef) {
        if self
            .conns
            .current(conn)
            .is_some_and(|c| c.state.subscribed())
        {
            self.end_stream(conn.slot(), End::Disconnected);
        }
    }

    fn drain_mail(&mut self) {
        while let Some(mail) = self.owner.next_mail() {
            match mail {
                Mail::LoginAck { conn, id, ack } => {
                    let slot = conn.slot();
                    let current = self.conns.current(conn);
                    if current.is_some_and(|c| c.state == State::Subscribing) {
                        self.on_login_ack(slot, id, ack);
                        let c = self.conns.get_mut(slot);
                        if c.state == State::Subscribing {
                            c.acks -= 1;
                            if c.acks == 0 {
                                self.start_streaming(slot);
                            }
                        }
                    }
                }
                Mail::Publish { id, msg, reply } => {
                    let n = self.route(id, &msg);
                    self.owner.reply(reply, n);
                }
                Mail::Disconnect { id, reply } => {
                    let n = self.disconnect_id(id);
                    self.owner.reply(reply, n);
                }
                Mail::Reply { to, connections } => self.on_reply(to, connections),
                Mail::Deliver { conn, id, seq, msg } => self.deliver(conn, id, seq, &msg),
                Mail::DisconnectConn { conn } => self.disconnect_conn(conn),
                Mail::Remote { id, msg } => {
                    self.route(id, &msg);
                }
                Mail::Login { .. } | Mail::Logout { .. } => unreachable!("the owner's mail"),
            }
        }
    }

    // ---- publish API --------------------------------------------------------------------

    /// Parses what a publish connection sent and carries out what its requests ask.
    fn process_publish(&mut self, slot: u32) {
        let unsent = self.conns.queued(slot).0;
        let Some(p) = self.pubs.get_mut(slot) else {
            return;
        };
        let mut effects = std::mem::take(&mut self.effects);
        let (requests, rejected) = p.process(&self.cfg, unsent, &mut effects);
        if p.paused() {
            self.conns.read_off(slot);
        }
        let stats = &self.shared.stats[self.index];
        Stats::add(&stats.requests, requests);
        Stats::add(&stats.bad_requests, rejected);
        let cref = self.conns.conn_ref(slot);
        for effect in effects.drain(..) {
            match effect {
                Effect::Publish { id, msg, reply } => {
                    // The copy for the other nodes is offered first, without waiting.
                    let sent = self.cluster.as_ref().map(|c| c.offer(id, &msg));
                    if let Some(p) = self.pubs.get_mut(slot) {
                        p.cluster(reply, sent);
                    }
                    self.publish(
                        id,
                        msg,
                        ReplyTo {
                            conn: cref,
                            seq: reply,
                        },
                    );
                }
                Effect::Disconnect { id, reply } => self.disconnect(
                    id,
                    ReplyTo {
                        conn: cref,
                        seq: reply,
                    },
                ),
                Effect::Metrics { reply, head_only } => {
                    let mut body = Vec::new();
                    self.shared.render_metrics(&mut body);
                    if let Some(p) = self.pubs.get_mut(slot) {
                        p.metrics(reply, &body, head_only);
                    }
                }
                Effect::Ready { reply, head_only } => {
                    let (status, body) = self.readiness();
                    if let Some(p) = self.pubs.get_mut(slot) {
                        p.text(reply, status, body, head_only);
                    }
                }
            }
        }
        self.effects = effects;
        self.flush_replies(slot);
    }

    /// Publishes `msg` to `id` (local connections; the cluster copy is the caller's); the
    /// count comes back to `reply`, at once when this worker owns `id`.
    fn publish(&mut self, id: Id, msg: Arc<[u8]>, reply: ReplyTo) {
        if !self.owner.forward(id, Some(&msg), reply) {
            let n = self.route(id, &msg);
            self.on_reply(reply, n);
        }
    }

    fn disconnect(&mut self, id: Id, reply: ReplyTo) {
        if !self.owner.forward(id, None, reply) {
            let n = self.disconnect_id(id);
            self.on_reply(reply, n);
        }
    }

    /// An owner counted the connections a publish reached.
    fn on_reply(&mut self, to: ReplyTo, connections: u32) {
        if self.conns.current(to.conn).is_none() {
            return; // the publisher left
        }
        let slot = to.conn.slot();
        if let Some(p) = self.pubs.get_mut(slot) {
            if p.answered(to.seq, connections) {
                self.flush_replies(slot);
                self.resume_publisher(slot);
            }
        }
    }

    /// Writes every complete reply at the front of the queue; closes the connection after a
    /// closing reply, or once nothing more is to be read or answered.
    fn flush_replies(&mut self, slot: u32) {
        let Some(p) = self.pubs.get_mut(slot) else {
            return;
        };
        let mut close = false;
        if p.ready() {
            let now = self.clock.now_ms;
            self.conns
                .write(slot, |out| close = p.write_ready(out, now));
        }
        if close || p.done() {
            self.drain(slot);
        }
    }

    /// Reads again from a publisher paused by backpressure once its answers went out.
    fn resume_publisher(&mut self, slot: u32) {
        let unsent = self.conns.queued(slot).0;
        let Some(p) = self.pubs.get_mut(slot) else {
            return;
        };
        if p.resume(unsent, &self.cfg) {
            self.process_publish(slot);
            if self.conns.get(slot).state == State::Publisher {
                self.rearm_recv(slot);
            }
        }
    }

    /// The answer to `/readyz`: `200 ready` while the workers run and, in a cluster, the link
    /// to NATS is up (subscribed); `503` with the reason otherwise. The workers run: this one
    /// answers, the others started before any request was accepted (every ring exists before
    /// a worker serves), and a worker that stops either aborts the process or is shutting
    /// down, as this one then is too.
    fn readiness(&self) -> (http::Status, &'static [u8]) {
        let unavailable = http::Status::SERVICE_UNAVAILABLE;
        if self.shutdown_deadline.is_some() {
            return (unavailable, b"shutting down\n");
        }
        if self.shared.cluster.as_ref().is_some_and(|c| !c.connected()) {
            return (unavailable, b"not linked to the cluster (NATS)\n");
        }
        (http::Status::OK, b"ready\n")
    }

    // ---- end of iteration, time, shutdown -----------------------------------------------

    /// End of an iteration: answer long-polls, ring the workers we mailed, manage accepts,
    /// publish gauges.
    fn flush(&mut self) {
        let ready = self.polls.take_ready();
        for &slot in &ready {
            let conn = self.conns.get(slot);
            if conn.state == State::Streaming && conn.format == http::Format::Poll {
                if let Some(answer) = self.polls.answer(slot, self.cfg.epoch) {
                    self.answer_poll(slot, answer);
                }
            }
        }
        self.polls.put_back(ready);
        let ring = self.conns.ring();
        self.owner.post().flush(|fd, target| {
            let failed = pack(Op::DoorbellFailed, target as u32, 0);
            ring.msg_ring(fd, 0, pack(Op::Doorbell, 0, 0), failed);
            true
        });
        let admit = self.conns.live() < self.cfg.admission_cap;
        let open = match self.shutdown_deadline {
            None => [admit, admit],
            // While streams are still being ended, the publish port answers health checks
            // (`/readyz`: 503); what it accepts now does not hold the exit.
            Some(deadline) => {
                let ending = self.conns.live() > self.late;
                [false, admit && ending && self.clock.now_ms < deadline]
            }
        };
        if self.accept.manage(self.conns.ring(), open) && self.shutdown_deadline.is_none() {
            Stats::add(&self.stats().accept_paused, 1);
        }
        let stats = &self.shared.stats[self.index];
        let ring = self.conns.ring_ref();
        let (ids, history) = (self.owner.shard().ids(), self.owner.shard().history());
        Stats::set(&stats.connections, self.conns.live() as u64);
        Stats::set(&stats.subscribers, self.subscribers as u64);
        Stats::set(&stats.ids, ids as u64);
        Stats::set(&stats.write_buffers, ring.writes.used() as u64);
        Stats::set(&stats.sq_full_flushes, ring.stats.sq_full_flushes);
        Stats::set(&stats.history_ids, history.ids() as u64);
        Stats::set(&stats.history_messages, history.messages() as u64);
        Stats::set(&stats.history_bytes, history.bytes() as u64);
        Stats::set(&stats.history_evicted, history.evicted());
    }

    fn on_tick(&mut self) {
        let now = self.clock.now_ms;
        while let Some(slot) = self.conns.expired(now) {
            let conn = self.conns.get(slot);
            match conn.state {
                // A kept-alive connection with no next request: closed quietly (an answer
                // nobody asked for could be read as the answer to a request in flight).
                State::Request if conn.flags & KEPT != 0 && !self.requests.started(slot) => {
                    self.close(slot)
                }
                State::Request => {
                    Stats::add(&self.stats().timeouts, 1);
                    let error = http::Error::new(
                        http::Status::REQUEST_TIMEOUT,
                        "request not complete in time",
                    );
                    self.respond_and_close(slot, |out| http::error_response(out, &error, false));
                }
                State::Draining => self.close(slot),
                _ => {}
            }
        }
        while let Some(slot) = self.polls.expired(now) {
            // Answered with what it has (nothing) once every owner has answered.
            let streaming = self.conns.get(slot).state == State::Streaming;
            self.polls.maybe_ready(slot, now, streaming);
        }
        if self.cfg.heartbeat_ms > 0 && now >= self.next_beat_ms {
            self.next_beat_ms = now + self.cfg.heartbeat_ms;
            let test_heartbeats = self.cfg.test_heartbeats;
            let sent = self.conns.heartbeats(|format| match format {
                http::Format::Sse | http::Format::SseRaw | http::Format::Ws => true,
                http::Format::Chunked | http::Format::Raw => test_heartbeats,
                http::Format::Poll => false,
            });
            Stats::add(&self.stats().heartbeats, sent);
        }
        self.owner.expire(self.clock.unix_us);
        self.expire_publishers();
        self.expire_tokens();
        if self
            .shutdown_deadline
            .is_some_and(|deadline| now >= deadline)
        {
            for slot in 0..self.conns.len() {
                self.close(slot);
            }
        }
    }

    /// Ends the subscribers whose token expired; forgets the entries of connections gone.
    fn expire_tokens(&mut self) {
        let now_s = self.clock.unix_us / 1_000_000;
        while let Some((slot, gen, exp_s)) = self.expiry.due(now_s) {
            self.expire_token(slot, gen, exp_s);
        }
        if self.expiry.wants_compaction() {
            let (conns, polls) = (&self.conns, &self.polls);
            self.expiry.compact(|slot, gen, exp_s| {
                let conn = conns.get(slot);
                conn.gen == gen
                    && conn.state.subscribed()
                    && (conn.format != http::Format::Poll || polls.expiry(slot) == Some(exp_s))
            });
        }
    }

    /// Closes publish connections stuck in a request past the request timeout (408), or idle
    /// past the idle timeout.
    fn expire_publishers(&mut self) {
        let mut expired = std::mem::take(&mut self.expired);
        self.pubs
            .expired(self.clock.now_ms, &self.cfg, &mut expired);
        for (slot, in_request) in expired.drain(..) {
            if self.conns.get(slot).state != State::Publisher {
                continue;
            }
            Stats::add(&self.stats().timeouts, 1);
            if in_request {
                let error = http::Error::new(
                    http::Status::REQUEST_TIMEOUT,
                    "request not complete in time",
                );
                self.pubs.forget(slot);
                self.respond_and_close(slot, |out| {
                    http::error_response_for(out, &error, false, http::NO_CORS)
                });
            } else {
                self.close(slot);
            }
        }
        self.expired = expired;
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(self.clock.now_ms + self.cfg.shutdown_timeout_ms);
        self.pubs.shut_down();
        for slot in 0..self.conns.len() {
            match self.conns.get(slot).state {
                // End the stream properly so clients see a complete response.
                State::Streaming => self.end_stream(slot, End::Shutdown),
                State::Free | State::Closing | State::Draining => {}
                _ => self.close(slot),
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
