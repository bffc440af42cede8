//! One worker: a thread that drives its io_uring rings (one, and more as they fill: each
//! ring's fixed-file table is bounded by RLIMIT_NOFILE), holds the connections accepted on them
//! and owns one shard of the id table.
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
//! - `admit`: resume admission (`--resume-rate`): a token bucket and a line. No I/O.
//! - `publish`: publish-API connections. No I/O.
//!
//! The loop: wait for completions on all the rings at once (the thread sleeps on the first;
//! the others signal it through an eventfd, see `comet_ring::rings`), copy a bounded batch out
//! of the rings and dispatch each, repeat until no ring has any; then read the mailbox; then
//! flush (long-poll answers, doorbells to the workers mailed, accept arming on the admitting
//! ring against the admission caps, gauges). Nothing blocks but the wait, and a ring without
//! work is not entered.

mod accept;
mod admit;
mod clock;
mod conns;
mod expiry;
mod holder;
mod long_poll;
mod owner;
pub mod post;
mod publish;
mod request;
mod shard;
mod stream;
mod ws;

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Barrier};

use comet_http::{self as http, Listener};
use comet_ring::{Completion, Rings};
use comet_router::{ConnRef, History, Id, Saved};

use crate::config::Config;
use crate::metrics::{CloseReason, Stats};
use crate::shared::Shared;
use crate::user_data::{pack, unpack, Op};
use accept::{Accept, Accepted};
use conns::{State, RECV, SEND, WATCH};
use holder::Holder;
use owner::Owner;
use post::{Boxes, Mail, Post, ReplyTo};
use publish::Effect;
use shard::Shard;

/// Completions copied out of the queue per batch.
const CQE_BATCH: usize = 256;
/// Connections a shutdown ends per loop iteration: one send each, a secondary ring's
/// submission queue (a quarter of the default `--ring-entries`), a few milliseconds of the
/// kernel's work on loopback.
const SHUTDOWN_SLICE: usize = 1024;
/// Connections cut per loop iteration past `--shutdown-timeout-ms`: each makes ~3 completions
/// (a cancel per operation in flight, the close), and a secondary ring's completion queue
/// holds 1,024 at the defaults.
const CUT_SLICE: usize = 256;
/// Period of the timer that expires requests and idle connections, and sends a slice of the
/// heartbeats.
const TICK_MS: u64 = 250;

pub struct Worker {
    index: usize,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    holder: Holder,
    accept: Accept,
    owner: Owner,
    /// Set on SIGINT/SIGTERM: the time after which every connection is closed at once.
    shutdown_deadline: Option<u64>,
    /// Shutdown: this worker's connections have all ended (counted out of `busy_workers`).
    finished: bool,
    /// Shutdown: `--shutdown-timeout-ms` passed, and what was open is being closed.
    cut: bool,
    cqes: Vec<Completion>,
    /// Scratch: the connections a message goes to; the effects of publish requests.
    targets: Vec<ConnRef>,
    effects: Vec<Effect>,
    expired: Vec<(u32, bool)>,
    /// The publish connection whose requests are being carried out.
    publishing: Option<u32>,
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
        rings: Rings,
        listeners: [RawFd; 2],
        cluster: Option<comet_cluster::Publisher>,
        history: Option<History>,
    ) -> Worker {
        let mut holder = Holder::new(index, cfg.clone(), shared.clone(), rings);
        let history =
            history.unwrap_or_else(|| History::new(cfg.history, holder.clock().unix_us()));
        let shard = Shard::new(history);
        // On JetStream the history is numbered by the stream (the caller joined it).
        let stream = cluster
            .as_ref()
            .filter(|c| c.on_stream())
            .map(|c| owner::Stream::new(c.clone(), cfg.history.age_us));
        let post = Post::new(index, boxes, inbox);
        Worker {
            index,
            holder,
            accept: Accept::new(listeners),
            owner: Owner::new(index, cfg.workers, shard, post, stream),
            shutdown_deadline: None,
            finished: false,
            cut: false,
            cqes: Vec::with_capacity(CQE_BATCH),
            targets: Vec::new(),
            effects: Vec::new(),
            expired: Vec::new(),
            publishing: None,
            cluster,
            cfg,
            shared,
        }
    }

    fn stats(&self) -> &Stats {
        &self.shared.stats[self.index]
    }

    /// Runs until shutdown completes. `left` says this worker has left its loop (every stream
    /// ended); `done` keeps every ring open until the main thread lets them close, once all
    /// workers have left their loops and the cluster bridge has stopped, so that no MSG_RING
    /// targets a closed ring descriptor. With `save`, returns the shard's history for
    /// `--state-dir`, taken once every stream has ended.
    pub fn run(
        mut self,
        shutdown_fd: RawFd,
        (left, done): (&Barrier, &Barrier),
        save: bool,
    ) -> Option<Saved> {
        // Timers, doorbells and the shutdown poll live on the primary ring.
        let ring = self.holder.conns.rings().primary();
        ring.tick_every(TICK_MS, pack(Op::Tick, 0, 0));
        ring.poll_fd(shutdown_fd, pack(Op::Shutdown, 0, 0));
        self.flush();
        // While a shutdown still has streams to end, the loop does not sleep.
        let mut ending = false;
        loop {
            if let Err(e) = self.holder.conns.rings().wait(!ending) {
                tracing::error!(worker = self.index, "waiting on the rings failed: {e}");
                std::process::exit(1);
            }
            self.holder.clock().advance();
            loop {
                let mut cqes = std::mem::take(&mut self.cqes);
                self.holder.conns.rings().drain(&mut cqes, CQE_BATCH);
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
            ending = self.shutdown_deadline.is_some()
                && self.holder.end_next(&mut self.owner, SHUTDOWN_SLICE);
            ending |= self.holder.cut_next(&mut self.owner, CUT_SLICE);
            if self.shutdown_deadline.is_some()
                && !self.finished
                && self.holder.conns.live() == 0
                && self.accept.idle()
            {
                self.finished = true;
                let busy = self.shared.busy_workers.fetch_sub(1, Ordering::SeqCst) - 1;
                if busy == 0 {
                    self.owner.post().wake_others();
                }
            }
            self.flush();
            if self.finished && self.shared.busy_workers.load(Ordering::SeqCst) == 0 {
                break;
            }
        }
        // Paired across the worker's life: every connection accepted was counted closed once.
        let stats = self.stats();
        assert_eq!(
            stats.accepted.get(),
            stats.closed_total(),
            "accepted vs closed"
        );
        tracing::debug!(worker = self.index, "worker stopped");
        left.wait();
        let saved = save.then(|| self.owner.shard().history().export());
        done.wait();
        saved
    }

    fn complete(&mut self, c: Completion) {
        let (op, slot, gen) = unpack(c.user_data);
        match op {
            Op::Accept => {
                let (ring, listener) = Accept::ring_and_listener(slot);
                self.on_accept(ring, listener, gen, c)
            }
            Op::Recv => {
                if self.holder.on_recv(&mut self.owner, slot, gen, c) {
                    self.process_publish(slot);
                }
            }
            Op::Watch => self.holder.on_watch(&mut self.owner, slot, gen, c),
            Op::Send => {
                if self.holder.on_send(&mut self.owner, slot, gen, c) {
                    self.resume_publisher(slot);
                }
            }
            Op::Cancel => self.holder.conns.on_cancel(slot, gen),
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
                    let primary = self.holder.conns.rings().primary();
                    primary.tick_every(TICK_MS, pack(Op::Tick, 0, 0));
                }
                self.on_tick();
            }
            Op::Rings => self.holder.conns.rings().woken(),
            Op::Shutdown => self.begin_shutdown(),
            Op::Ignore => {}
        }
    }

    fn on_accept(&mut self, ring: usize, listener: Listener, gen: u32, c: Completion) {
        match self.accept.on_complete(ring, listener, gen, c) {
            Accepted::Slot(local) => {
                let slot = self.holder.conns.rings_ref().slot(ring, local);
                self.stats().accepted.add(1);
                self.holder.accepted(&mut self.owner, listener, slot);
            }
            Accepted::Cancelled => {}
            Accepted::Failed(errno) => {
                self.stats().accept_errors.add(1);
                let worker = self.index;
                tracing::warn!(worker, ?listener, "accept failed: errno {errno}");
            }
        }
    }

    // ---- routing ------------------------------------------------------------------------

    /// Routes a message for `id`, owned by this worker, published at `published_us`, and
    /// returns how many connections it went to.
    fn route(&mut self, id: Id, msg: &Arc<[u8]>, published_us: u64) -> u32 {
        self.route_at(id, msg, published_us, None)
    }

    /// [`Worker::route`] for a message numbered by the stream (`stream_seq`, JetStream); a
    /// repeat goes nowhere.
    fn route_at(
        &mut self,
        id: Id,
        msg: &Arc<[u8]>,
        published_us: u64,
        stream_seq: Option<u64>,
    ) -> u32 {
        // Copied out: a delivery may close a connection, which logs it out of the table.
        let mut here = std::mem::take(&mut self.targets);
        here.clear();
        let now_us = self.holder.clock().unix_us();
        let times = (now_us, published_us);
        let Some((seq, n)) = self.owner.route(id, msg, times, stream_seq, &mut here) else {
            self.targets = here;
            return 0;
        };
        self.stats().published.add(1);
        for &conn in &here {
            let owner = &mut self.owner;
            self.holder.deliver(owner, conn, id, seq, msg, published_us);
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
            self.holder.disconnect_conn(&mut self.owner, conn);
        }
        self.targets = here;
        n
    }

    fn drain_mail(&mut self) {
        // JetStream: the head read before the drain is routed once the drain is done.
        let head = self.owner.head();
        let now_ms = self.holder.clock().now_ms();
        while let Some(mail) = self.owner.next_mail(now_ms) {
            match mail {
                Mail::LoginAck { conn, id, ack } => {
                    self.holder.login_acked(&mut self.owner, conn, id, ack)
                }
                Mail::Publish {
                    id,
                    msg,
                    reply,
                    published_us,
                } => {
                    let n = self.route(id, &msg, published_us);
                    self.owner.reply(reply, n);
                }
                Mail::Disconnect { id, reply } => {
                    let n = self.disconnect_id(id);
                    self.owner.reply(reply, n);
                }
                Mail::Reply { to, connections } => self.on_reply(to, connections),
                Mail::Deliver {
                    conn,
                    id,
                    seq,
                    msg,
                    published_us,
                } => {
                    let owner = &mut self.owner;
                    self.holder
                        .deliver(owner, conn, id, seq, &msg, published_us)
                }
                Mail::DisconnectConn { conn } => self.holder.disconnect_conn(&mut self.owner, conn),
                Mail::Remote { id, msg, seq } => {
                    // From the cluster: its latency starts when this owner drains it.
                    let now_us = self.holder.clock().unix_us();
                    self.route_at(id, &msg, now_us, seq);
                }
                Mail::Stored { to, id, result } => self.on_stored(to, id, result),
                Mail::Login { .. }
                | Mail::Logout { .. }
                | Mail::Count { .. }
                | Mail::Fetched { .. } => unreachable!("the owner's mail"),
            }
        }
        if let Some(head) = head {
            self.owner.caught_up(head, now_ms);
            // Answers to logins held here, from the catch-up (later mail waits for the next
            // drain).
            while let Some((conn, id, ack)) = self.owner.next_ready() {
                self.holder.login_acked(&mut self.owner, conn, id, ack)
            }
        }
    }

    /// JetStream: a publish was stored (answered with the count of connections logged in as
    /// its id here, which get it from the stream) or not (503).
    fn on_stored(
        &mut self,
        to: ReplyTo,
        id: Id,
        result: Result<comet_cluster::Stored, comet_cluster::Unstored>,
    ) {
        if self.holder.conns.current(to.conn).is_none() {
            return; // the publisher left
        }
        let slot = to.conn.slot();
        match result {
            Ok(stored) => {
                if let Some(p) = self.holder.pubs.get_mut(slot) {
                    p.stored(to.seq, stored.seq, stored.duplicate);
                }
                if let Some(n) = self.owner.count(id, to) {
                    self.on_reply(to, n);
                }
            }
            Err(why) => self.on_unstored(to, &why),
        }
    }

    fn on_unstored(&mut self, to: ReplyTo, why: &comet_cluster::Unstored) {
        let slot = to.conn.slot();
        let ready = self
            .holder
            .pubs
            .get_mut(slot)
            .is_some_and(|p| p.unstored(to.seq, &why.to_string()));
        if ready {
            self.flush_replies(slot);
            self.resume_publisher(slot);
        }
    }

    // ---- publish API --------------------------------------------------------------------

    /// Parses what a publish connection sent and carries out what its requests ask.
    fn process_publish(&mut self, slot: u32) {
        // An answer counted here while the effects are carried out may lift backpressure:
        // the requests after the pause are read by this loop, after every earlier request's
        // effects, never from inside them (publishes keep their order).
        self.publishing = Some(slot);
        while self.process_publish_once(slot) {}
        self.publishing = None;
        if self.holder.conns.get(slot).state == State::Publisher {
            self.holder.rearm_recv(slot);
        }
    }

    /// One pass of [`Worker::process_publish`]; true when backpressure was lifted meanwhile.
    fn process_publish_once(&mut self, slot: u32) -> bool {
        let unsent = self.holder.conns.queued(slot).0;
        let Some(p) = self.holder.pubs.get_mut(slot) else {
            return false;
        };
        let mut effects = std::mem::take(&mut self.effects);
        let (requests, rejected) = p.process(&self.cfg, unsent, &mut effects);
        if p.paused() {
            self.holder.conns.read_off(slot);
        }
        let stats = &self.shared.stats[self.index];
        stats.requests.add(requests);
        stats.bad_requests.add(rejected);
        let conn = self.holder.conns.conn_ref(slot);
        for effect in effects.drain(..) {
            match effect {
                Effect::Publish {
                    id,
                    msg,
                    reply,
                    msg_id,
                } if self.owner.on_stream() => {
                    // JetStream: answered once stored; every node, this one too, gets it
                    // from the stream.
                    let to = ReplyTo { conn, seq: reply };
                    let ticket = crate::cluster::publish_ticket(to);
                    let cluster = self.cluster.as_ref().expect("on a stream");
                    if let Err(why) = cluster.store(id, &msg, msg_id, ticket) {
                        self.on_unstored(to, &why);
                    }
                }
                Effect::Publish { id, msg, reply, .. } => {
                    // The copy for the other nodes is offered first, without waiting.
                    let sent = self.cluster.as_ref().map(|c| c.offer(id, &msg));
                    if let Some(p) = self.holder.pubs.get_mut(slot) {
                        p.cluster(reply, sent);
                    }
                    self.publish(id, msg, ReplyTo { conn, seq: reply });
                }
                Effect::Disconnect { id, reply } => {
                    self.disconnect(id, ReplyTo { conn, seq: reply })
                }
                Effect::Ready { reply, head_only } => {
                    let (status, body) = self.holder.readiness();
                    if let Some(p) = self.holder.pubs.get_mut(slot) {
                        p.text(reply, status, body, head_only);
                    }
                }
                Effect::Metrics { reply, head_only } => {
                    let mut body = Vec::new();
                    crate::metrics::render(&self.shared, &mut body);
                    if let Some(p) = self.holder.pubs.get_mut(slot) {
                        p.metrics(reply, &body, head_only);
                    }
                }
            }
        }
        self.effects = effects;
        self.flush_replies(slot);
        let unsent = self.holder.conns.queued(slot).0;
        self.holder
            .pubs
            .get_mut(slot)
            .is_some_and(|p| p.resume(unsent, &self.cfg))
    }

    /// Publishes `msg` to `id` (local connections; the cluster copy is the caller's); the
    /// count comes back to `reply`, at once when this worker owns `id`.
    fn publish(&mut self, id: Id, msg: Arc<[u8]>, reply: ReplyTo) {
        let published_us = self.holder.clock().unix_us();
        if !self.owner.forward(id, Some(&msg), reply, published_us) {
            let n = self.route(id, &msg, published_us);
            self.on_reply(reply, n);
        }
    }

    fn disconnect(&mut self, id: Id, reply: ReplyTo) {
        if !self.owner.forward(id, None, reply, 0) {
            let n = self.disconnect_id(id);
            self.on_reply(reply, n);
        }
    }

    /// An owner counted the connections a publish reached.
    fn on_reply(&mut self, to: ReplyTo, connections: u32) {
        if self.holder.conns.current(to.conn).is_none() {
            return; // the publisher left
        }
        let slot = to.conn.slot();
        if let Some(p) = self.holder.pubs.get_mut(slot) {
            if p.answered(to.seq, connections) {
                self.flush_replies(slot);
                self.resume_publisher(slot);
            }
        }
    }

    /// Writes every complete reply at the front of the queue; closes the connection after a
    /// closing reply, or once nothing more is to be read or answered.
    fn flush_replies(&mut self, slot: u32) {
        let now = self.holder.clock().now_ms();
        let Some(p) = self.holder.pubs.get_mut(slot) else {
            return;
        };
        let mut close = false;
        if p.ready() {
            let conns = &mut self.holder.conns;
            conns.write(slot, |out| close = p.write_ready(out, now));
        }
        if close || p.done() {
            // Without a closing answer, the publisher ended its input, or the shutdown did.
            let reason = if close {
                CloseReason::Answered
            } else if self.shutdown_deadline.is_some() {
                CloseReason::Shutdown
            } else {
                CloseReason::Eof
            };
            self.holder.drain(&mut self.owner, slot, reason);
        }
    }

    /// Reads again from a publisher paused by backpressure once its answers went out.
    fn resume_publisher(&mut self, slot: u32) {
        if self.publishing == Some(slot) {
            return; // process_publish reads on once the effects are carried out
        }
        let unsent = self.holder.conns.queued(slot).0;
        let Some(p) = self.holder.pubs.get_mut(slot) else {
            return;
        };
        if p.resume(unsent, &self.cfg) {
            self.process_publish(slot);
        }
    }

    // ---- end of iteration, time, shutdown -----------------------------------------------

    /// End of an iteration: answer long-polls, ring the workers we mailed, manage accepts,
    /// publish gauges.
    fn flush(&mut self) {
        self.holder.answer_polls(&mut self.owner);
        let ring = self.holder.conns.rings().primary();
        self.owner.post().flush(|fd, target| {
            let failed = pack(Op::DoorbellFailed, target as u32, 0);
            ring.msg_ring(fd, 0, pack(Op::Doorbell, 0, 0), failed);
            true
        });
        let live = self.holder.conns.live();
        let now = self.holder.clock().now_ms();
        // Each listener's ring with room (opened here when every other is full), the public
        // listener's first: the publish listener's room is what the public one left.
        let zone = self.cfg.accept_singles_zone;
        for listener in [Listener::Public, Listener::Publish] {
            let open = match self.shutdown_deadline {
                None => true,
                // While streams are still being ended, the publish port answers health checks
                // (`/readyz`: 503); what it accepts now does not hold the exit.
                Some(deadline) => {
                    let ending = live > self.holder.late();
                    listener == Listener::Publish && ending && now < deadline
                }
            };
            let accept = &self.accept;
            let want = self
                .holder
                .conns
                .admitting_ring(
                    accept.booked(listener),
                    accept.admitting(),
                    |ring| accept.reserved(ring),
                    pack(Op::Rings, 0, 0),
                    now,
                )
                .filter(|_| open);
            let rings = self.holder.conns.rings();
            if self.accept.manage(rings, listener, want, zone) && self.shutdown_deadline.is_none() {
                self.stats().accept_paused.add(1);
            }
        }
        self.holder.gauges();
        let stats = &self.shared.stats[self.index];
        let (ids, history) = (self.owner.shard().ids(), self.owner.shard().history());
        stats.ids.set(ids as u64);
        stats.history_ids.set(history.ids() as u64);
        stats.history_messages.set(history.messages() as u64);
        stats.history_bytes.set(history.bytes() as u64);
        stats.history_evicted.set(history.evicted());
        if let Some((catch_up, stream)) = self.owner.gaps_given_up() {
            stats.resume_catch_up_gaps.set(catch_up);
            stats.resume_stream_gaps.set(stream);
        }
    }

    fn on_tick(&mut self) {
        self.holder.tick(&mut self.owner);
        self.owner.expire(self.holder.clock().unix_us());
        // JetStream: logins waiting for this node to catch up time out here if no mail came.
        self.drain_mail();
        self.expire_publishers();
        let now = self.holder.clock().now_ms();
        if self
            .shutdown_deadline
            .is_some_and(|deadline| now >= deadline)
        {
            if !self.cut {
                self.cut = true;
                self.log_cut();
            }
            self.holder.begin_cut();
        }
    }

    /// Says what `--shutdown-timeout-ms` found still open, by state and what each waits for
    /// (`Draining(watch+send)`: its last bytes are being sent; `Closing(watch)`: the cancel of
    /// its watch is on its way), before it is cut.
    fn log_cut(&self) {
        let conns = &self.holder.conns;
        if conns.live() == 0 {
            return;
        }
        // Counted by (state, operations in flight); named once, for the log.
        let mut counts: Vec<((State, u8), usize)> = Vec::new();
        for slot in 0..conns.len() {
            let c = conns.get(slot);
            if c.state == State::Free {
                continue;
            }
            let key = (c.state, c.inflight);
            match counts.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => *n += 1,
                None => counts.push((key, 1)),
            }
        }
        let open: Vec<(String, usize)> = counts
            .into_iter()
            .map(|((state, inflight), n)| {
                let waits = [(RECV, "recv"), (WATCH, "watch"), (SEND, "send")]
                    .into_iter()
                    .filter(|(bit, _)| inflight & bit != 0)
                    .map(|(_, name)| name)
                    .collect::<Vec<_>>();
                (format!("{state:?}({})", waits.join("+")), n)
            })
            .collect();
        let worker = self.index;
        tracing::warn!(
            worker,
            ?open,
            "shutdown timeout: closing what is still open"
        );
    }

    /// Closes publish connections stuck in a request past the request timeout (408), or idle
    /// past the idle timeout.
    fn expire_publishers(&mut self) {
        let mut expired = std::mem::take(&mut self.expired);
        let now = self.holder.clock().now_ms();
        self.holder.pubs.expired(now, &self.cfg, &mut expired);
        for (slot, in_request) in expired.drain(..) {
            if self.holder.conns.get(slot).state != State::Publisher {
                continue;
            }
            if in_request {
                self.holder.pubs.forget(slot);
                let error = http::Error::new(
                    http::Status::REQUEST_TIMEOUT,
                    "request not complete in time",
                );
                let timeout = CloseReason::Timeout;
                self.holder
                    .respond_and_close(&mut self.owner, slot, timeout, |out| {
                        http::error_response_for(out, &error, false, http::NO_CORS)
                    });
            } else {
                self.holder
                    .close(&mut self.owner, slot, CloseReason::Timeout);
            }
        }
        self.expired = expired;
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(self.holder.clock().now_ms() + self.cfg.shutdown_timeout_ms);
        self.holder.pubs.shut_down();
        self.holder.begin_shutdown();
        // Publish connections answer what they read, then close (`PubConn::end`); reading
        // stops now (bytes the kernel still holds are not read: their senders try again).
        for slot in 0..self.holder.conns.len() {
            if self.holder.conns.get(slot).state != State::Publisher {
                continue;
            }
            if let Some(p) = self.holder.pubs.get_mut(slot) {
                p.end();
            }
            self.holder.conns.read_off(slot);
            self.flush_replies(slot);
        }
    }
}
