//! The worker as holder of sockets: the connections accepted on its ring and what each is
//! doing (a request, a stream, a WebSocket, a long-poll, a publish connection), with the
//! clock they run on. Logins and logouts go to the [`Owner`] it is handed; the publish API's
//! requests are carried out by the loop (`mod.rs`), which is told when a publish connection's
//! input moved or its output drained.

use std::sync::Arc;

use comet_http::{self as http, Listener};
use comet_ring::{Completion, Rings};
use comet_router::{ConnRef, Id};

use super::admit::{Admission, Offer};
use super::clock::Clock;
use super::conns::{Closed, Conns, Received, Sent, State, Watched, IDS, KEPT, LATE, RECV};
use super::expiry::Expiry;
use super::long_poll::{self, Answer, LongPolls};
use super::owner::{Here, Owner};
use super::post::Ack;
use super::publish::Publishers;
use super::request::{answer, Requests};
use super::stream::{End, Logins, Streams};
use super::ws::{Input, WsInput};
use super::TICK_MS;
use crate::config::Config;
use crate::metrics::{CloseReason, Stats};
use crate::public::{Action, Subscribe};
use crate::shared::Shared;

pub struct Holder {
    index: usize,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    pub(super) conns: Conns,
    requests: Requests,
    streams: Streams,
    ws: WsInput,
    polls: LongPolls,
    pub(super) pubs: Publishers,
    expiry: Expiry,
    clock: Clock,
    /// Ticks so far: tick `t` visits the slots `s` with `s % slices == t % slices` for
    /// heartbeats (`slices`: ticks per heartbeat period).
    beat_tick: u64,
    /// When the write-buffer pool next gives back what it did not need.
    next_trim_ms: u64,
    /// Set on SIGINT/SIGTERM: a connection accepted from now on is closed at once (on the
    /// publish port: answers one request, see `mod.rs`).
    shutting_down: bool,
    /// During shutdown, the slots below this one have been ended or closed (see
    /// [`Holder::end_next`]).
    ending: u32,
    /// Past the shutdown timeout: the slots below this one have been cut in the current pass
    /// ([`Holder::cut_next`]); `None` between passes.
    cutting: Option<u32>,
    /// Open connections accepted during shutdown (`LATE`): health checks on the publish port,
    /// which must not hold the worker's exit.
    late: usize,
    /// Resumes admitted at `--resume-rate`, and those waiting in line.
    admission: Admission<(ConnRef, Subscribe)>,
}

impl Holder {
    pub fn new(index: usize, cfg: Arc<Config>, shared: Arc<Shared>, rings: Rings) -> Holder {
        let clock = Clock::new();
        let admission = Admission::new(cfg.resume_rate_per_worker, clock.now_ms());
        Holder {
            index,
            conns: Conns::new(index, rings, cfg.ring_cap, cfg.worker_cap),
            requests: Requests::default(),
            streams: Streams::new(&cfg),
            ws: WsInput::default(),
            polls: LongPolls::new(cfg.queue_messages_max, cfg.poll_timeout_ms),
            pubs: Publishers::default(),
            expiry: Expiry::default(),
            clock,
            beat_tick: 0,
            next_trim_ms: TRIM_MS,
            shutting_down: false,
            ending: 0,
            cutting: None,
            late: 0,
            admission,
            cfg,
            shared,
        }
    }

    fn stats(&self) -> &Stats {
        &self.shared.stats[self.index]
    }

    pub fn clock(&mut self) -> &mut Clock {
        &mut self.clock
    }

    /// A connection accepted into `slot` on `listener`.
    pub fn accepted(&mut self, owner: &mut Owner, listener: Listener, slot: u32) {
        let now = self.clock.now_ms();
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
        if self.shutting_down {
            match listener {
                Listener::Public => self.close(owner, slot, CloseReason::Shutdown),
                Listener::Publish => {
                    self.conns.get_mut(slot).flags |= LATE;
                    self.late += 1;
                }
            }
        }
    }

    /// A recv completed; true when a publish connection's input moved (the loop processes
    /// it).
    pub fn on_recv(&mut self, owner: &mut Owner, slot: u32, gen: u32, c: Completion) -> bool {
        let ws = self.conns.get(slot).format == http::Format::Ws;
        let mut publisher = false;
        match self.conns.on_recv(slot, gen, c) {
            Received::Bytes { bid, len, state } => {
                let data = self.conns.read(slot, bid, len);
                match state {
                    State::Request => {
                        let now_s = self.clock.unix_us() / 1_000_000;
                        let action = self.requests.feed(slot, data, &self.cfg, now_s);
                        self.conns.recycle(slot, bid);
                        self.on_request(owner, slot, action);
                    }
                    State::Publisher => {
                        let p = self.pubs.get_mut(slot).expect("publisher state");
                        p.received(data, self.clock.now_ms());
                        self.conns.recycle(slot, bid);
                        publisher = true;
                    }
                    State::Subscribing | State::Streaming if ws => {
                        self.ws.feed(slot, data);
                        self.conns.recycle(slot, bid);
                        self.on_ws_input(owner, slot);
                    }
                    State::Subscribing | State::Streaming => {
                        // A stream is one-way: bytes after the subscribe request end it.
                        self.conns.recycle(slot, bid);
                        self.close(owner, slot, CloseReason::Protocol);
                    }
                    State::Queued => {
                        // Nothing may follow a subscribe request.
                        self.conns.recycle(slot, bid);
                        self.close(owner, slot, CloseReason::Protocol);
                    }
                    State::Draining | State::Closing => self.conns.recycle(slot, bid),
                    State::Free => unreachable!("recv on a free slot"),
                }
            }
            Received::Eof(State::Publisher) => {
                // What was received is still answered; then the connection closes.
                if let Some(p) = self.pubs.get_mut(slot) {
                    p.eof();
                }
                publisher = true;
            }
            // The peer may half-close and still read our last response.
            Received::Eof(State::Draining | State::Closing) => {}
            Received::Eof(_) => self.close(owner, slot, CloseReason::Eof),
            Received::Failed => self.close(owner, slot, CloseReason::Error),
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
        publisher
    }

    /// Re-arms the multishot recv of a connection that still reads.
    pub fn rearm_recv(&mut self, slot: u32) {
        let reading = match self.conns.get(slot).state {
            State::Request | State::Queued => true,
            State::Publisher => self.pubs.get_mut(slot).is_some_and(|p| p.wants_input()),
            _ => false,
        };
        if reading {
            self.conns.read_on(slot);
        }
    }

    pub fn on_watch(&mut self, owner: &mut Owner, slot: u32, gen: u32, c: Completion) {
        let watched = self.conns.on_watch(slot, gen, c);
        let conn = self.conns.get(slot);
        let ws = conn.format == http::Format::Ws && conn.state.subscribed();
        match watched {
            Watched::Cancelled => {}
            // The request's recv is still being cancelled: its end re-arms the watch.
            Watched::Ready(r) if ws && r > 0 && conn.inflight & RECV != 0 => {}
            // A WebSocket client sent a frame (or closed): read it; EOF closes in on_recv.
            Watched::Ready(r) if ws && r > 0 => self.conns.read_once(slot),
            // Readable or hung up: either way any other subscriber stream ends here.
            Watched::Ready(r) => self.close(owner, slot, CloseReason::of_watch(r)),
        }
        self.conns.finish_if_done(slot);
    }

    /// A send completed; true when a publish connection sent all it had (the loop may
    /// resume reading it).
    pub fn on_send(&mut self, owner: &mut Owner, slot: u32, gen: u32, c: Completion) -> bool {
        let mut publisher = false;
        match self.conns.on_send(slot, gen, c) {
            Sent::Busy => {}
            Sent::Failed { stalled: true } => self.close(owner, slot, CloseReason::SlowConsumer),
            Sent::Failed { stalled: false } => self.close(owner, slot, CloseReason::Error),
            // Counted when it began draining.
            Sent::Idle(State::Draining) => self.close(owner, slot, CloseReason::Answered),
            Sent::Idle(State::Publisher) => publisher = true,
            Sent::Idle(_) => {}
        }
        self.conns.finish_if_done(slot);
        publisher
    }

    fn on_ws_input(&mut self, owner: &mut Owner, slot: u32) {
        match self.ws.process(&mut self.conns, slot) {
            Input::Open => self.conns.watch(slot),
            Input::Closed => self.finish_stream(owner, slot, CloseReason::Eof),
            Input::ProtocolError => self.finish_stream(owner, slot, CloseReason::Protocol),
        }
    }

    /// Writes a last response with `write` and closes the connection once it is sent.
    pub fn respond_and_close(
        &mut self,
        owner: &mut Owner,
        slot: u32,
        reason: CloseReason,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        self.conns.write(slot, write);
        self.drain(owner, slot, reason);
    }

    /// Closes once what is queued is sent; input is ignored from now on. The connection is
    /// counted as closed for `reason` now, not again when it closes.
    pub fn drain(&mut self, owner: &mut Owner, slot: u32, reason: CloseReason) {
        if self.conns.get(slot).state != State::Draining {
            self.stats().closed(reason);
        }
        self.requests.forget(slot);
        self.ws.forget(slot);
        self.pubs.forget(slot);
        // At shutdown `--shutdown-timeout-ms` bounds every drain: a deadline each would queue
        // an entry per stream ended for `--request-timeout-ms` (+12 MB of heap while a million
        // streams ended, results/1m/2026-11-30-close-fin-netns1).
        let deadline =
            (!self.shutting_down).then(|| self.clock.now_ms() + self.cfg.request_timeout_ms);
        if self.conns.drain(slot, deadline) {
            self.close(owner, slot, reason);
        }
    }

    /// The one way to close: the slot is closed once nothing is in flight, and every component
    /// forgets the connection. Counted for `reason` unless it was counted when it began
    /// draining.
    pub fn close(&mut self, owner: &mut Owner, slot: u32, reason: CloseReason) {
        self.end(owner, slot, reason, false);
    }

    /// [`Holder::close`], with a reset when `reset` (see [`Conns::reset`]).
    fn end(&mut self, owner: &mut Owner, slot: u32, reason: CloseReason, reset: bool) {
        let closed = if reset {
            self.conns.reset(slot)
        } else {
            self.conns.close(slot)
        };
        let Some(closed) = closed else {
            return;
        };
        if closed.state != State::Draining {
            self.stats().closed(reason);
        }
        if closed.state.subscribed() {
            self.log_out(owner, slot, closed);
        }
        if closed.flags & LATE != 0 {
            self.late -= 1;
        }
        self.requests.forget(slot);
        self.ws.forget(slot);
        self.pubs.forget(slot);
    }

    // ---- subscribers --------------------------------------------------------------------

    fn on_request(&mut self, owner: &mut Owner, slot: u32, action: Action) {
        let stats = &self.shared.stats[self.index];
        match action {
            Action::NeedMore => return,
            Action::Subscribe(sub) => self.admit(owner, slot, *sub),
            action => {
                let mut reason = CloseReason::Answered;
                if let Action::Reject { error, .. } = &action {
                    stats.bad_requests.add(1);
                    let auth = matches!(error.status.0, 401 | 403);
                    stats.auth_failures.add(u64::from(auth));
                    reason = CloseReason::Protocol;
                }
                let ready = self.readiness();
                self.respond_and_close(owner, slot, reason, |out| answer(out, action, ready));
            }
        }
        self.stats().requests.add(1);
    }

    /// A subscribe with a position (a resume) goes through `--resume-rate`: now, in line, or
    /// refused (503); one without goes on at once.
    fn admit(&mut self, owner: &mut Owner, slot: u32, sub: Subscribe) {
        if sub.since.is_none() {
            return self.subscribe(owner, slot, sub);
        }
        let cref = self.conns.conn_ref(slot);
        match self.admission.offer(self.clock.now_ms(), (cref, sub)) {
            Offer::Now((_, sub)) => self.subscribe(owner, slot, sub),
            Offer::Queued => {
                self.stats().resumes_queued.add(1);
                self.conns.get_mut(slot).state = State::Queued;
            }
            Offer::Refused(_) => self.refuse_resume(owner, slot),
        }
    }

    /// 503 with Retry-After to a resume that cannot be taken now.
    fn refuse_resume(&mut self, owner: &mut Owner, slot: u32) {
        self.stats().resumes_refused.add(1);
        let reason = CloseReason::Answered;
        self.respond_and_close(owner, slot, reason, |out| {
            http::unavailable_response(out, "too many resumes at once: come back later", "1", true)
        });
    }

    /// The tick: resumes in line whose turn came (and whose connection is still there).
    fn admit_queued(&mut self, owner: &mut Owner) {
        let mut due = Vec::new();
        self.admission.release(self.clock.now_ms(), &mut due);
        for (cref, sub) in due {
            if self
                .conns
                .current(cref)
                .is_some_and(|c| c.state == State::Queued)
            {
                self.subscribe(owner, cref.slot(), sub);
            }
        }
    }

    fn subscribe(&mut self, owner: &mut Owner, slot: u32, sub: Subscribe) {
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
        let start = self.clock.unix_us().saturating_sub(1_000_000);
        let since = since.as_deref();
        if format == http::Format::Poll {
            // A long-poll keeps its recv (the answer may be followed by the next poll): bytes
            // before the answer end it, as for a stream.
            let now = self.clock.now_ms();
            let (gen, origin) = (cref.gen(), allow_origin);
            self.polls
                .begin(slot, gen, &ids, since, start, keep_alive, origin, now);
            // A poll answers by its timeout: only a token expiring before that ends it (the
            // next poll brings its token again).
            let timeout_us = self.cfg.poll_timeout_ms.saturating_mul(1000);
            let before_timeout =
                |e: &u64| e.saturating_mul(1_000_000) < self.clock.unix_us() + timeout_us;
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
        self.stats().subscribed(format);
        let acks = owner.login_elsewhere(&ids, since, cref);
        self.conns.get_mut(slot).acks = acks;
        let now_ms = self.clock.now_ms();
        for (i, &id) in ids.iter().enumerate() {
            if self.conns.get(slot).state != State::Subscribing {
                break; // cut as a slow consumer by an earlier id's replay: logged out already
            }
            match owner.login_here(id, cref, since.map(|s| s[i]), now_ms) {
                Here::Now(ack) => self.on_login_ack(owner, slot, id, ack),
                // Owned here, answered by mail (JetStream: a fetch or a catch-up).
                Here::Later => self.conns.get_mut(slot).acks += 1,
                Here::NotMine => {}
            }
        }
        let conn = self.conns.get(slot);
        if conn.acks == 0 && conn.state == State::Subscribing {
            self.start_streaming(slot);
        }
    }

    /// Every owner answered: the stream's head and what queued up go out; a long-poll with
    /// something to answer is answered.
    pub fn start_streaming(&mut self, slot: u32) {
        self.conns.streaming(slot);
        if self.conns.get(slot).format == http::Format::Poll {
            self.polls.maybe_ready(slot, self.clock.now_ms(), true);
        }
    }

    /// The owner of `id` logged the connection in: its gap, replay and position.
    fn on_login_ack(&mut self, owner: &mut Owner, slot: u32, id: Id, ack: Ack) {
        let stats = &self.shared.stats[self.index];
        let conn = self.conns.get(slot);
        if conn.format == http::Format::Poll {
            stats.resume_gaps.add(u64::from(ack.gap));
            let added = self
                .polls
                .login_ack(slot, id, ack.gap, &ack.replay, ack.pos);
            stats.replayed(added);
            let streaming = conn.state == State::Streaming;
            self.polls.maybe_ready(slot, self.clock.now_ms(), streaming);
        } else if !self
            .streams
            .login_ack(&mut self.conns, slot, id, ack, stats)
        {
            self.close(owner, slot, CloseReason::SlowConsumer);
        }
    }

    /// Logs a subscriber out of every id it holds.
    fn log_out(&mut self, owner: &mut Owner, slot: u32, conn: Closed) {
        self.stats().unsubscribed(conn.format);
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
            owner.logout(id, conn.conn);
        }
    }

    /// Ends a subscriber's stream properly (the last chunk, a WebSocket close, see [`End`]),
    /// then closes once it is sent.
    pub fn end_stream(&mut self, owner: &mut Owner, slot: u32, why: End) {
        let reason = match why {
            End::Shutdown => CloseReason::Shutdown,
            End::Disconnected => CloseReason::Disconnect,
            End::Expired => CloseReason::Expired,
        };
        if self.conns.get(slot).format == http::Format::Poll {
            self.close(owner, slot, reason);
            return;
        }
        self.streams.write_end(&mut self.conns, slot, why);
        self.finish_stream(owner, slot, reason);
    }

    /// A token's `exp` came for the connection in `slot`, generation `gen`, if it is still
    /// subscribed with that token: a stream ends (SSE `event: expired`, WebSocket close 4001),
    /// a long-poll is answered `401`. The client resumes from its position with a new token.
    fn expire_token(&mut self, owner: &mut Owner, slot: u32, gen: u32, exp_s: u64) {
        let cref = ConnRef::new(self.index, slot, gen);
        let Some(conn) = self.conns.current(cref).filter(|c| c.state.subscribed()) else {
            return; // gone, or a kept-alive long-poll between polls
        };
        if conn.format != http::Format::Poll {
            self.end_stream(owner, slot, End::Expired);
            return;
        }
        if self.polls.expiry(slot) != Some(exp_s) {
            return; // a later poll on the connection, with its own token
        }
        let allow_origin: Box<[u8]> = self.polls.allow_origin(slot).unwrap_or(b"*").into();
        let error = crate::auth::AuthError::Expired.http_error();
        let conn = self.conns.describe(slot);
        self.log_out(owner, slot, conn);
        self.respond_and_close(owner, slot, CloseReason::Expired, |out| {
            http::error_response_for(out, &error, false, &allow_origin)
        });
    }

    /// Ends the subscribers whose token expired; forgets the entries of connections gone.
    fn expire_tokens(&mut self, owner: &mut Owner) {
        let now_s = self.clock.unix_us() / 1_000_000;
        while let Some((slot, gen, exp_s)) = self.expiry.due(now_s) {
            self.expire_token(owner, slot, gen, exp_s);
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

    /// The answer to `/readyz`: `200 ready` while the workers run and, in a cluster, the link
    /// to NATS is up (subscribed); `503` with the reason otherwise. The workers run: this one
    /// answers, the others started before any request was accepted (every ring exists before
    /// a worker serves), and a worker that stops either aborts the process or is shutting
    /// down, as this one then is too.
    pub fn readiness(&self) -> (http::Status, &'static [u8]) {
        let unavailable = http::Status::SERVICE_UNAVAILABLE;
        if self.shutting_down {
            return (unavailable, b"shutting down\n");
        }
        if self.shared.cluster.as_ref().is_some_and(|c| !c.connected()) {
            return (unavailable, b"not linked to the cluster (NATS)\n");
        }
        (http::Status::OK, b"ready\n")
    }

    /// Open connections accepted during shutdown.
    pub fn late(&self) -> usize {
        self.late
    }

    /// Logs a stream out and closes it once what is queued is sent.
    fn finish_stream(&mut self, owner: &mut Owner, slot: u32, reason: CloseReason) {
        let conn = self.conns.describe(slot);
        self.log_out(owner, slot, conn);
        self.drain(owner, slot, reason);
    }

    /// A message for `conn`, which this worker holds; `published_us`: when its publish reached
    /// comet (for the publish-to-write histogram).
    pub fn deliver(
        &mut self,
        owner: &mut Owner,
        conn: ConnRef,
        id: Id,
        seq: u64,
        msg: &Arc<[u8]>,
        published_us: u64,
    ) {
        let slot = conn.slot();
        let stats = &self.shared.stats[self.index];
        let Some(c) = self.conns.current(conn).filter(|c| c.state.subscribed()) else {
            // Closed while the message was on its way (or cut during a replay).
            stats.stale.add(1);
            return;
        };
        let now_us = self.clock.unix_us();
        if c.format == http::Format::Poll {
            let streaming = c.state == State::Streaming;
            match self.polls.deliver(slot, id, seq, msg) {
                long_poll::Delivery::Added => {
                    stats.delivered(Some(published_us), now_us);
                    self.polls.maybe_ready(slot, self.clock.now_ms(), streaming);
                }
                long_poll::Delivery::Stale => stats.stale.add(1),
                long_poll::Delivery::Full => {}
            }
            return;
        }
        let live = Some((published_us, now_us));
        if !self
            .streams
            .deliver(&mut self.conns, slot, (id, seq, msg), live, stats)
        {
            self.close(owner, slot, CloseReason::SlowConsumer);
        }
    }

    /// Answers a long-poll (maybe with nothing, at its timeout), then waits for the next
    /// request on the connection or closes it.
    pub fn answer_poll(&mut self, owner: &mut Owner, slot: u32, answer: Answer) {
        self.stats().polls_answered.add(1);
        self.stats().unsubscribed(http::Format::Poll);
        let cref = self.conns.conn_ref(slot);
        for &(id, _) in answer.ids.iter() {
            owner.logout(id, cref);
        }
        self.conns.get_mut(slot).flags = 0;
        self.conns.write(slot, |out| answer.write(out));
        let conn = self.conns.get_mut(slot);
        if !answer.keep_alive || conn.inflight & RECV == 0 {
            self.drain(owner, slot, CloseReason::Answered);
            return;
        }
        conn.state = State::Request;
        conn.flags |= KEPT;
        let deadline = self.clock.now_ms() + self.cfg.request_timeout_ms;
        self.conns.deadline(slot, deadline);
    }

    pub fn disconnect_conn(&mut self, owner: &mut Owner, conn: ConnRef) {
        if self
            .conns
            .current(conn)
            .is_some_and(|c| c.state.subscribed())
        {
            self.end_stream(owner, conn.slot(), End::Disconnected);
        }
    }

    /// The owner of `id` answered a login by mail.
    pub fn login_acked(&mut self, owner: &mut Owner, conn: ConnRef, id: Id, ack: Ack) {
        let slot = conn.slot();
        let current = self.conns.current(conn);
        if !current.is_some_and(|c| c.state == State::Subscribing) {
            return; // closed, or cut meanwhile
        }
        self.on_login_ack(owner, slot, id, ack);
        let c = self.conns.get_mut(slot);
        if c.state == State::Subscribing {
            c.acks -= 1;
            if c.acks == 0 {
                self.start_streaming(slot);
            }
        }
    }

    /// End of an iteration: answers the long-polls that have their answer.
    pub fn answer_polls(&mut self, owner: &mut Owner) {
        let ready = self.polls.take_ready();
        for &slot in &ready {
            let conn = self.conns.get(slot);
            if conn.state == State::Streaming && conn.format == http::Format::Poll {
                if let Some(answer) = self.polls.answer(slot, self.cfg.epoch) {
                    self.answer_poll(owner, slot, answer);
                }
            }
        }
        self.polls.put_back(ready);
    }

    /// The timer: requests past their deadline, long-polls past their timeout, heartbeats.
    pub fn tick(&mut self, owner: &mut Owner) {
        self.admit_queued(owner);
        let now = self.clock.now_ms();
        while let Some(slot) = self.conns.expired(now) {
            let conn = self.conns.get(slot);
            match conn.state {
                // A kept-alive connection with no next request: closed quietly (an answer
                // nobody asked for could be read as the answer to a request in flight).
                State::Request if conn.flags & KEPT != 0 && !self.requests.started(slot) => {
                    self.close(owner, slot, CloseReason::Timeout)
                }
                State::Request => {
                    self.respond_and_close(owner, slot, CloseReason::Timeout, request_timeout);
                }
                // Counted when it began draining.
                State::Draining => self.close(owner, slot, CloseReason::Timeout),
                _ => {}
            }
        }
        while let Some(slot) = self.polls.expired(now) {
            // Answered with what it has (nothing) once every owner has answered.
            let streaming = self.conns.get(slot).state == State::Streaming;
            self.polls.maybe_ready(slot, now, streaming);
        }
        // At shutdown every stream is ended or cut within --shutdown-timeout-ms: a heartbeat
        // would only compete with the ends (63,000 a second at 1M SSE streams).
        if self.cfg.heartbeat_ms > 0 && !self.shutting_down {
            // Each tick visits its slice of the slots, so every stream is visited once a period
            // and the heartbeats of a million streams are spread over the period: all at once,
            // they queued ~500k sends per worker in one tick and held up deliveries for seconds
            // (results/1m/2026-11-29-rings-faults).
            let slices = (self.cfg.heartbeat_ms / TICK_MS).max(1);
            let phase = (self.beat_tick % slices) as u32;
            self.beat_tick += 1;
            let test_heartbeats = self.cfg.test_heartbeats;
            let sent = self
                .conns
                .heartbeats(phase, slices as usize, |format| match format {
                    http::Format::Sse | http::Format::SseRaw | http::Format::Ws => true,
                    http::Format::Chunked | http::Format::Raw => test_heartbeats,
                    http::Format::Poll => false,
                });
            self.stats().heartbeats.add(sent);
        }
        self.expire_tokens(owner);
        if now >= self.next_trim_ms {
            self.next_trim_ms = now + TRIM_MS;
            self.conns.trim();
            let resident = self.conns.rings_ref().reads_resident();
            self.stats()
                .read_buffers_resident_bytes
                .set(resident as u64);
        }
    }

    /// SIGINT/SIGTERM: from now on every stream ends properly and other connections close, a
    /// slice per loop iteration ([`Holder::end_next`]).
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
    }

    /// Ends the next streams of a shutdown and closes the next other connections, at most
    /// `budget` of them; true while slots remain. In slices, so that the loop reaps the
    /// completions (the sends, the closes) as they come and the timer keeps ticking: ending
    /// half a million streams in one pass kept a worker from its loop for 36 s at 1M
    /// (results/1m/2026-11-30-quiet-nofaults), so `--shutdown-timeout-ms` (checked on the
    /// tick) did not hold, and their completions queued past the completion queue.
    pub fn end_next(&mut self, owner: &mut Owner, budget: usize) -> bool {
        let mut done = 0;
        while self.ending < self.conns.len() && done < budget {
            let slot = self.ending;
            self.ending += 1;
            match self.conns.get(slot).state {
                // End the stream properly so clients see a complete response.
                State::Streaming => self.end_stream(owner, slot, End::Shutdown),
                // Answered, then closed: the worker's `begin_shutdown`.
                State::Free | State::Closing | State::Draining | State::Publisher => continue,
                _ => self.close(owner, slot, CloseReason::Shutdown),
            }
            done += 1;
        }
        self.ending < self.conns.len()
    }

    /// The shutdown timeout passed: everything still open is to be cut, in slices
    /// ([`Holder::cut_next`]), and no more streams ended properly. Called on every tick past
    /// the timeout; a pass that has finished starts again (for connections accepted since).
    pub fn begin_cut(&mut self) {
        self.ending = self.conns.len();
        self.cutting.get_or_insert(0);
    }

    /// Cuts the next open connections of a pass begun by [`Holder::begin_cut`], at most
    /// `budget` of them; true while the pass has slots left. In slices, like `end_next`: each
    /// cut is a cancel per operation in flight and a close, ~3 completions, and cutting half a
    /// million at once queued them past the completion queue and the submissions behind them
    /// in memory (+22 MB at 1M, results/1m/2026-11-30-read-trim-faults).
    pub fn cut_next(&mut self, owner: &mut Owner, budget: usize) -> bool {
        let Some(mut slot) = self.cutting else {
            return false;
        };
        let mut done = 0;
        while slot < self.conns.len() && done < budget {
            let state = self.conns.get(slot).state;
            if !matches!(state, State::Free | State::Closing) {
                // A stream not ended by now ends as in a crash (its client resumes): a reset
                // is the cheapest end for both kernels. Anything else (a publisher's answers,
                // a stream's last bytes being taken) still goes out before the FIN.
                let reset = state == State::Streaming;
                self.end(owner, slot, CloseReason::Shutdown, reset);
                done += 1;
            }
            slot += 1;
        }
        let more = slot < self.conns.len();
        self.cutting = more.then_some(slot);
        more
    }

    /// This worker's connection gauges for /metrics.
    pub fn gauges(&self) {
        let stats = self.stats();
        let rings = self.conns.rings_ref();
        stats.connections.set(self.conns.live() as u64);
        stats.rings.set(rings.len() as u64);
        stats.write_buffers.set(rings.writes.used() as u64);
        stats
            .write_buffers_kept_bytes
            .set(rings.writes.kept_bytes() as u64);
        stats.sq_full_flushes.set(rings.stats().sq_full_flushes);
    }
}

/// How often what a burst left is given back (`Conns::trim`): the free write buffers the
/// period did not need, the read buffers' pages of rings quiet for a whole period, the deadline
/// queue's spare room; released 5-10 s after the burst ends.
const TRIM_MS: u64 = 5_000;

/// A 408 answer: the request was not complete in time.
pub fn request_timeout(out: &mut Vec<u8>) {
    let error = http::Error::new(
        http::Status::REQUEST_TIMEOUT,
        "request not complete in time",
    );
    http::error_response(out, &error, false);
}
