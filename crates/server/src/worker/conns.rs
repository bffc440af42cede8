//! The holder of sockets: the worker's rings, one 32-byte [`Conn`] per slot of their fixed-file
//! tables, and the bookkeeping of what is in flight on each. A slot names its ring
//! (`slot / ring_files`, see [`Rings`]); the rings are opened lazily, each once the ones before
//! are full ([`Conns::admitting_ring`]). Knows nothing of ids, requests or messages:
//! completions come back as small results ([`Received`], [`Sent`], [`Watched`]) that the loop
//! acts on, and bytes go out through one [`Conns::write`].
//!
//! Per-role state lives in the other components, keyed by slot; [`Conns::close`] returns what
//! the connection was so that the loop can ask each of them to forget it.

use std::collections::VecDeque;

use ahash::AHashMap;
use comet_http as http;
use comet_ring::{Completion, Rings, WBuf};
use comet_router::{ConnRef, Id};

use crate::user_data::{pack, Op};

/// Connection states. Transitions:
/// `Free -> Request` (accepted on the public listener) `-> Subscribing` (logins sent to remote
/// owners) `-> Streaming` (every owner acknowledged: the response head and messages flow);
/// `Free -> Publisher` (accepted on the publish listener);
/// `Streaming -> Request` (a kept-alive long-poll, answered, waits for its next poll);
/// `Request | Publisher | Streaming -> Draining` (a last response or the stream's end is
/// written, then the connection closes; input is ignored);
/// any `-> Closing` (the socket shut down, operations cancelled) `-> Free` (slot closed, once
/// nothing is in flight).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Free,
    Request,
    /// A resume waiting in line for `--resume-rate` (`admit.rs`): its request is complete,
    /// it is read only to notice a close.
    Queued,
    Publisher,
    Subscribing,
    Streaming,
    Draining,
    Closing,
}

impl State {
    /// Logged in (or logging in) as its ids.
    pub fn subscribed(self) -> bool {
        matches!(self, State::Subscribing | State::Streaming)
    }
}

/// Bits of `Conn::inflight`: the operation is submitted and its final completion not yet seen.
pub const RECV: u8 = 1;
pub const WATCH: u8 = 2;
pub const SEND: u8 = 4;

/// Bits of `Conn::flags`.
/// The connection's ids and positions are in the streams' table (a stream of several ids).
pub const IDS: u8 = 1;
/// Something was framed for the connection since the last heartbeat round.
const ACTIVE: u8 = 2;
/// Kept open after a long-poll's answer, for the next poll.
pub const KEPT: u8 = 4;
/// Accepted on the publish listener during shutdown (a health check): it does not hold the
/// worker's exit.
pub const LATE: u8 = 8;

/// One connection slot. Kept at 32 bytes (see the test below).
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    /// Incremented on every accept into this slot; part of every `user_data` and `ConnRef`.
    pub gen: u32,
    pub state: State,
    /// Which of `RECV | WATCH | SEND` are in flight.
    pub inflight: u8,
    /// Cancel requests, the shutdown and a reset's SO_LINGER (see `end`) in flight.
    cancels: u8,
    pub format: http::Format,
    /// Messages framed for this connection so far: the `N` of `Recvd msg #N`.
    pub msg_count: u32,
    /// Logins still waiting for a remote owner's acknowledgement.
    pub acks: u16,
    /// `IDS | ACTIVE | KEPT | LATE`.
    pub flags: u8,
    /// Counts the deadlines set on this connection (wrapping): only the latest one's entry
    /// acts when it expires (see [`Conns::expired`]).
    deadline_tag: u8,
    /// The write buffer the kernel is sending from, if any.
    sending: Option<WBuf>,
    /// Bytes waiting for the next send.
    pending: Option<WBuf>,
    /// The id a subscriber is logged in as, when it has one id (without `IDS`).
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
        deadline_tag: 0,
        sending: None,
        pending: None,
        id: 0,
    };
}

/// A recv's completion, for the loop.
pub enum Received {
    /// Bytes in provided buffer `bid`: read them with [`Conns::read`], then [`Conns::recycle`].
    Bytes { bid: u16, len: usize, state: State },
    /// The peer closed its side.
    Eof(State),
    /// No read buffer was free, or the recv was cancelled: re-arm if still reading.
    Stopped(State),
    /// The socket failed.
    Failed,
}

/// A send's completion, for the loop.
pub enum Sent {
    /// More is on its way (the rest of a partial send, or what queued up behind it).
    Busy,
    /// Everything was sent and nothing waits; the connection is in this state.
    Idle(State),
    /// The send failed (`stalled: false`), or a heartbeat did not fit: the peer stopped
    /// reading (`stalled: true`).
    Failed { stalled: bool },
}

/// A watch's (POLL_ADD) completion.
pub enum Watched {
    Cancelled,
    /// The poll's result: its revents (readable, hung up) or a negative errno.
    Ready(i32),
}

/// What [`Conns::close`] found, for the components to forget the connection.
#[derive(Clone, Copy)]
pub struct Closed {
    pub conn: ConnRef,
    pub state: State,
    pub flags: u8,
    pub format: http::Format,
    pub id: Id,
}

pub struct Conns {
    worker: usize,
    rings: Rings,
    slots: Vec<Conn>,
    /// Slots not `Free`.
    live: usize,
    /// Slots not `Free`, per ring (the fixed-file entries each ring's table has in use).
    ring_live: Vec<usize>,
    /// Connections a ring admits at most, and the worker in all (see `Config`).
    ring_cap: usize,
    worker_cap: usize,
    /// After a ring failed to open: no new attempt before this time.
    open_retry_ms: u64,
    /// Static bytes in flight other than a heartbeat (a stream's last bytes at shutdown, see
    /// [`Conns::send_last_static`]), by slot.
    static_sends: AHashMap<u32, &'static [u8]>,
    /// (slot, gen, deadline tag, deadline_ms) of connections in `Request` or `Draining`, in
    /// deadline order (every deadline is `now + request_timeout_ms`, so pushing at the back
    /// keeps the order).
    deadlines: VecDeque<(u32, u32, u8, u64)>,
}

/// Deadline entries whose room the queue always keeps (see [`Conns::trim`]).
const DEADLINES_KEPT: usize = 1024;

impl Conns {
    pub fn new(worker: usize, rings: Rings, ring_cap: usize, worker_cap: usize) -> Conns {
        Conns {
            worker,
            ring_live: vec![0; rings.len()],
            rings,
            // Grown to the highest slot the kernel hands out, not reserved up front.
            slots: Vec::new(),
            live: 0,
            ring_cap,
            worker_cap,
            open_retry_ms: 0,
            static_sends: AHashMap::new(),
            deadlines: VecDeque::new(),
        }
    }

    /// The rings, for the loop's own operations (accepts, timers, doorbells, the wait).
    pub fn rings(&mut self) -> &mut Rings {
        &mut self.rings
    }

    pub fn rings_ref(&self) -> &Rings {
        &self.rings
    }

    pub fn live(&self) -> usize {
        self.live
    }

    /// The ring that should accept a listener's next connections and the connections it may
    /// still take: `booked` (where the listener's one-shot accepts wait) until it is full, even
    /// with all its room reserved, so that they stay on one ring; else `current` (the one
    /// accepting now) while it has room; else the first ring with room; else a new ring
    /// (created here, its eventfd poll with `wake_user_data`). `reserved(ring)`: slots held
    /// for accepts in flight there. `None` when the worker holds
    /// its cap, or every ring is at its cap and no other may be opened: the admission policy
    /// then applies (accepting stops; connections wait in the listen backlog). A ring that
    /// fails to open (no memory, say) is tried again a second later (`now_ms`).
    pub fn admitting_ring(
        &mut self,
        booked: Option<usize>,
        current: Option<usize>,
        reserved: impl Fn(usize) -> usize,
        wake_user_data: u64,
        now_ms: u64,
    ) -> Option<(usize, usize)> {
        if self.live >= self.worker_cap {
            return None;
        }
        let room = |r: usize| {
            self.ring_cap
                .saturating_sub(self.ring_live[r] + reserved(r))
        };
        if let Some(ring) = booked.filter(|&r| self.ring_live[r] < self.ring_cap) {
            return Some((ring, room(ring)));
        }
        if let Some(ring) = current.filter(|&r| room(r) > 0) {
            return Some((ring, room(ring)));
        }
        if let Some(ring) = (0..self.ring_live.len()).find(|&r| room(r) > 0) {
            return Some((ring, room(ring)));
        }
        if !self.rings.can_add() || now_ms < self.open_retry_ms {
            return None;
        }
        match self.rings.add(wake_user_data) {
            Ok(ring) => {
                self.ring_live.push(0);
                tracing::debug!(worker = self.worker, ring, "ring opened");
                Some((ring, self.ring_cap))
            }
            Err(e) => {
                // Not fatal: the worker serves with the rings it has meanwhile.
                let worker = self.worker;
                tracing::warn!(worker, "opening ring {}: {e}", self.rings.len());
                self.open_retry_ms = now_ms + 1000;
                None
            }
        }
    }

    /// One past the highest slot ever used.
    pub fn len(&self) -> u32 {
        self.slots.len() as u32
    }

    pub fn get(&self, slot: u32) -> &Conn {
        &self.slots[slot as usize]
    }

    pub fn get_mut(&mut self, slot: u32) -> &mut Conn {
        &mut self.slots[slot as usize]
    }

    /// The connection an operation's completion belongs to. A slot is reused only once nothing
    /// is in flight on it, so the generation always matches.
    fn check(&mut self, slot: u32, gen: u32) -> &mut Conn {
        let conn = &mut self.slots[slot as usize];
        assert_eq!(conn.gen, gen, "completion for a reused slot");
        conn
    }

    pub fn conn_ref(&self, slot: u32) -> ConnRef {
        ConnRef::new(self.worker, slot, self.slots[slot as usize].gen)
    }

    /// The connection `conn` names, if it is still the one in its slot.
    pub fn current(&self, conn: ConnRef) -> Option<&Conn> {
        let c = self.slots.get(conn.slot() as usize)?;
        (c.gen == conn.gen()).then_some(c)
    }

    // ---- accept and deadlines -----------------------------------------------------------

    /// A new connection in `slot` (handed out by the kernel), reading in `state`.
    pub fn accepted(&mut self, slot: u32, state: State) {
        if slot as usize >= self.slots.len() {
            self.slots.resize(slot as usize + 1, Conn::FREE);
        }
        let conn = &mut self.slots[slot as usize];
        assert_eq!(
            conn.state,
            State::Free,
            "the kernel handed out a slot in use"
        );
        let gen = conn.gen.wrapping_add(1);
        *conn = Conn {
            gen,
            state,
            inflight: RECV,
            ..Conn::FREE
        };
        self.live += 1;
        self.ring_live[self.rings.ring_of(slot)] += 1;
        self.rings.recv_multi(slot, pack(Op::Recv, slot, gen));
    }

    /// The connection must reach its next step by `deadline_ms` (see [`Conns::expired`]); this
    /// deadline replaces any it had.
    pub fn deadline(&mut self, slot: u32, deadline_ms: u64) {
        let conn = &mut self.slots[slot as usize];
        conn.deadline_tag = conn.deadline_tag.wrapping_add(1);
        self.deadlines
            .push_back((slot, conn.gen, conn.deadline_tag, deadline_ms));
    }

    /// The next connection whose deadline passed at `now_ms`, if it is still the connection and
    /// the deadline it was set for. A replaced deadline does not act: the request deadline of a
    /// stream that subscribed and then began draining would otherwise cut its drain short.
    pub fn expired(&mut self, now_ms: u64) -> Option<u32> {
        while let Some(&(slot, gen, tag, deadline)) = self.deadlines.front() {
            if deadline > now_ms {
                return None;
            }
            self.deadlines.pop_front();
            let conn = &self.slots[slot as usize];
            if conn.gen == gen && conn.deadline_tag == tag {
                return Some(slot);
            }
        }
        None
    }

    // ---- reads --------------------------------------------------------------------------

    pub fn on_recv(&mut self, slot: u32, gen: u32, c: Completion) -> Received {
        let conn = self.check(slot, gen);
        if !c.more() {
            conn.inflight &= !RECV;
        }
        let state = conn.state;
        if c.result > 0 {
            let bid = c.buffer().expect("recv data without a provided buffer");
            return Received::Bytes {
                bid,
                len: c.result as usize,
                state,
            };
        }
        if let Some(bid) = c.buffer() {
            self.rings.recycle(slot, bid);
        }
        match -c.result {
            0 => Received::Eof(state),
            libc::ENOBUFS | libc::ECANCELED => Received::Stopped(state),
            _ => Received::Failed,
        }
    }

    /// The bytes of a [`Received::Bytes`] on `slot`.
    pub fn read(&self, slot: u32, bid: u16, len: usize) -> &[u8] {
        self.rings.read(slot, bid, len)
    }

    /// Hands a read buffer of `slot`'s ring back to the kernel.
    pub fn recycle(&mut self, slot: u32, bid: u16) {
        self.rings.recycle(slot, bid);
    }

    /// Arms a multishot recv unless one is armed.
    pub fn read_on(&mut self, slot: u32) {
        let conn = &mut self.slots[slot as usize];
        if conn.inflight & RECV == 0 {
            conn.inflight |= RECV;
            let gen = conn.gen;
            self.rings.recv_multi(slot, pack(Op::Recv, slot, gen));
        }
    }

    /// Reads once (a WebSocket's control frame), after a watch saw it readable.
    pub fn read_once(&mut self, slot: u32) {
        let conn = &mut self.slots[slot as usize];
        debug_assert!(conn.inflight & RECV == 0);
        conn.inflight |= RECV;
        let gen = conn.gen;
        self.rings.recv_once(slot, pack(Op::Recv, slot, gen));
    }

    /// Cancels the multishot recv of `slot` if it is armed.
    pub fn read_off(&mut self, slot: u32) {
        let conn = &mut self.slots[slot as usize];
        if conn.inflight & RECV != 0 {
            conn.cancels += 1;
            let gen = conn.gen;
            self.rings
                .cancel(slot, pack(Op::Recv, slot, gen), pack(Op::Cancel, slot, gen));
        }
    }

    /// Watches for readability or a hang-up with the cheapest armed request (a one-shot
    /// POLL_ADD), unless a watch or a recv is in flight.
    pub fn watch(&mut self, slot: u32) {
        let conn = &mut self.slots[slot as usize];
        if conn.inflight & (WATCH | RECV) == 0 {
            conn.inflight |= WATCH;
            let gen = conn.gen;
            self.rings.poll_read(slot, pack(Op::Watch, slot, gen));
        }
    }

    /// Stops reading and watches instead: a stream reads nothing after its request (or only
    /// the control frames of a WebSocket, once the watch sees them).
    pub fn watch_instead(&mut self, slot: u32) {
        let conn = &mut self.slots[slot as usize];
        if conn.inflight & WATCH == 0 {
            conn.inflight |= WATCH;
            let gen = conn.gen;
            self.rings.poll_read(slot, pack(Op::Watch, slot, gen));
        }
        self.read_off(slot);
    }

    pub fn on_watch(&mut self, slot: u32, gen: u32, c: Completion) -> Watched {
        let conn = self.check(slot, gen);
        conn.inflight &= !WATCH;
        match c.result {
            r if r == -libc::ECANCELED => Watched::Cancelled,
            r => Watched::Ready(r),
        }
    }

    pub fn on_cancel(&mut self, slot: u32, gen: u32) {
        self.check(slot, gen).cancels -= 1;
        self.finish_if_done(slot);
    }

    // ---- writes -------------------------------------------------------------------------

    /// Appends bytes with `write` to what the connection has waiting, and sends them unless a
    /// send is in flight or the stream is still subscribing (its head waits for every owner).
    pub fn write(&mut self, slot: u32, write: impl FnOnce(&mut Vec<u8>)) {
        let conn = &mut self.slots[slot as usize];
        let buf = *conn
            .pending
            .get_or_insert_with(|| self.rings.writes.alloc());
        write(self.rings.writes.get_mut(buf));
        self.send_if_idle(slot);
    }

    /// [`Conns::write`] of one message: a record the slow-consumer policy may drop, and
    /// activity that spares the connection the next heartbeat.
    pub fn write_message(&mut self, slot: u32, write: impl FnOnce(&mut Conn, &mut Vec<u8>)) {
        let conn = &mut self.slots[slot as usize];
        conn.flags |= ACTIVE;
        let buf = *conn
            .pending
            .get_or_insert_with(|| self.rings.writes.alloc());
        let out = self.rings.writes.get_mut(buf);
        let start = out.len();
        write(conn, out);
        self.rings.writes.mark_record(buf, start);
        self.send_if_idle(slot);
    }

    fn send_if_idle(&mut self, slot: u32) {
        let conn = &self.slots[slot as usize];
        if conn.state != State::Subscribing && conn.inflight & SEND == 0 && conn.pending.is_some() {
            self.start_send(slot);
        }
    }

    /// A subscriber every owner acknowledged: its head and what queued up behind it go out.
    pub fn streaming(&mut self, slot: u32) {
        let conn = &mut self.slots[slot as usize];
        conn.state = State::Streaming;
        // Its head goes now: the stream's first heartbeat is a period away, not at the next
        // visit of its slice.
        conn.flags |= ACTIVE;
        self.send_if_idle(slot);
    }

    /// Sends `bytes` as the connection's last output from static memory, without a write
    /// buffer (at shutdown a million streams each end with a few dozen bytes: a buffer each
    /// was hundreds of MB at once). False when something is queued or in flight: the caller
    /// writes through a buffer, behind it.
    pub fn send_last_static(&mut self, slot: u32, bytes: &'static [u8]) -> bool {
        let conn = &mut self.slots[slot as usize];
        if conn.pending.is_some() || conn.inflight & SEND != 0 {
            return false;
        }
        conn.inflight |= SEND;
        let gen = conn.gen;
        self.static_sends.insert(slot, bytes);
        self.rings
            .send_static(slot, bytes, pack(Op::Send, slot, gen), true);
        true
    }

    /// The static bytes a send without a write buffer is sending: a stream's last bytes
    /// ([`Conns::send_last_static`]) or else a heartbeat.
    fn static_bytes(&self, slot: u32, format: http::Format) -> &'static [u8] {
        match self.static_sends.get(&slot) {
            Some(&bytes) => bytes,
            None => http::heartbeat(format),
        }
    }

    fn start_send(&mut self, slot: u32) {
        let conn = &mut self.slots[slot as usize];
        debug_assert!(conn.inflight & SEND == 0);
        let buf = conn.pending.take().expect("nothing to send");
        conn.sending = Some(buf);
        conn.inflight |= SEND;
        let (gen, last) = (conn.gen, conn.state == State::Draining);
        self.rings.send(slot, buf, pack(Op::Send, slot, gen), last);
    }

    pub fn on_send(&mut self, slot: u32, gen: u32, c: Completion) -> Sent {
        let conn = self.check(slot, gen);
        conn.inflight &= !SEND;
        // EAGAIN (a socket that cannot take bytes now) and EINTR: nothing was sent; the same
        // bytes go again, unless the connection is closing (its send was being cancelled).
        if matches!(-c.result, libc::EAGAIN | libc::EINTR) && conn.state != State::Closing {
            conn.inflight |= SEND;
            let (format, last) = (conn.format, conn.state == State::Draining);
            match conn.sending {
                Some(buf) => {
                    let rest = self.rings.writes.complete(buf, 0);
                    debug_assert_eq!(rest, comet_ring::Sent::Partial);
                    self.rings.send(slot, buf, pack(Op::Send, slot, gen), last);
                }
                None => {
                    let bytes = self.static_bytes(slot, format);
                    self.rings
                        .send_static(slot, bytes, pack(Op::Send, slot, gen), last);
                }
            }
            return Sent::Busy;
        }
        let Some(buf) = conn.sending.take() else {
            // A heartbeat or a stream's last bytes, sent from static memory. A socket that
            // cannot take them whole has a peer that stopped reading long ago (nothing else
            // was queued): cut it.
            let format = conn.format;
            let len = self.static_bytes(slot, format).len();
            self.static_sends.remove(&slot);
            if c.result < len as i32 {
                return Sent::Failed {
                    stalled: c.result >= 0,
                };
            }
            return self.after_send(slot);
        };
        if c.result <= 0 {
            self.rings.writes.abort(buf);
            return Sent::Failed { stalled: false };
        }
        if self.rings.writes.complete(buf, c.result as usize) == comet_ring::Sent::Partial {
            let conn = &mut self.slots[slot as usize];
            conn.sending = Some(buf);
            conn.inflight |= SEND;
            let last = conn.state == State::Draining;
            self.rings.send(slot, buf, pack(Op::Send, slot, gen), last);
            return Sent::Busy;
        }
        self.after_send(slot)
    }

    /// A send completed whole: send what queued up behind it.
    fn after_send(&mut self, slot: u32) -> Sent {
        let conn = &self.slots[slot as usize];
        match conn.state {
            // A subscriber's output waits for its logins (and a closing one has none).
            state @ (State::Closing | State::Subscribing) => Sent::Idle(state),
            _ if conn.pending.is_some() => {
                self.start_send(slot);
                Sent::Busy
            }
            state => Sent::Idle(state),
        }
    }

    /// Gives back what a burst left and the last period did not need: free write buffers
    /// (`WriteBufs::trim`), the read buffers of rings that were quiet (`Rings::trim_reads`),
    /// and the deadline queue's room past twice what it holds. A million connects in 30 s left
    /// that queue room for 262,144 entries per worker (its peak: the connects of one
    /// `--request-timeout-ms`), 12 MB in all at idle, never used again.
    pub fn trim(&mut self) {
        self.rings.writes.trim();
        self.rings.trim_reads();
        let keep = 2 * self.deadlines.len().max(DEADLINES_KEPT);
        if self.deadlines.capacity() > 2 * keep {
            self.deadlines.shrink_to(keep);
        }
    }

    /// What the connection has waiting: (bytes, messages).
    pub fn queued(&self, slot: u32) -> (usize, usize) {
        let conn = &self.slots[slot as usize];
        let w = &self.rings.writes;
        let bytes =
            conn.sending.map_or(0, |b| w.unsent(b)) + conn.pending.map_or(0, |b| w.unsent(b));
        let messages =
            conn.sending.map_or(0, |b| w.records(b)) + conn.pending.map_or(0, |b| w.records(b));
        (bytes, messages)
    }

    /// Drops the oldest half of the messages waiting (not in flight); how many were dropped (0
    /// when none waits).
    pub fn drop_oldest(&mut self, slot: u32) -> usize {
        let Some(buf) = self.slots[slot as usize].pending else {
            return 0;
        };
        let half = self.rings.writes.records(buf).div_ceil(2);
        self.rings.writes.drop_records(buf, half);
        half
    }

    /// A heartbeat to every stream of the slots `first`, `first + stride`, ... that `beats`
    /// and was sent nothing since its last visit; returns how many were sent.
    pub fn heartbeats(
        &mut self,
        first: u32,
        stride: usize,
        beats: impl Fn(http::Format) -> bool,
    ) -> u64 {
        let mut sent = 0;
        for slot in (first..self.slots.len() as u32).step_by(stride) {
            let conn = &mut self.slots[slot as usize];
            if conn.state != State::Streaming {
                continue;
            }
            if conn.flags & ACTIVE != 0 {
                conn.flags &= !ACTIVE;
            } else if beats(conn.format) && conn.pending.is_none() && conn.inflight & SEND == 0 {
                conn.inflight |= SEND;
                let (format, gen) = (conn.format, conn.gen);
                self.rings.send_static(
                    slot,
                    http::heartbeat(format),
                    pack(Op::Send, slot, gen),
                    false,
                );
                sent += 1;
            }
        }
        sent
    }

    // ---- end ----------------------------------------------------------------------------

    /// Closes once what is queued is sent (input is ignored from now on); `true` when nothing
    /// is queued, so the caller closes at once. A peer that never reads is cut at
    /// `deadline_ms`, if given.
    pub fn drain(&mut self, slot: u32, deadline_ms: Option<u64>) -> bool {
        let conn = &mut self.slots[slot as usize];
        conn.state = State::Draining;
        let (sending, pending) = (conn.inflight & SEND != 0, conn.pending);
        if let Some(deadline_ms) = deadline_ms {
            self.deadline(slot, deadline_ms);
        }
        // Nothing allocates a pending buffer without writing to it (a raw stream's end at
        // shutdown is the close itself, so no buffer is made for it).
        debug_assert!(pending.is_none_or(|buf| self.rings.writes.unsent(buf) > 0));
        match (sending, pending) {
            (true, _) => false, // on_send continues
            (false, Some(_)) => {
                self.start_send(slot);
                false
            }
            (false, None) => true,
        }
    }

    /// What [`Conns::close`] would report for `slot`.
    pub fn describe(&self, slot: u32) -> Closed {
        let conn = &self.slots[slot as usize];
        Closed {
            conn: ConnRef::new(self.worker, slot, conn.gen),
            state: conn.state,
            flags: conn.flags,
            format: conn.format,
            id: conn.id,
        }
    }

    /// Drops what the connection has queued, shuts the socket down and cancels what that does
    /// not end; the slot is closed once nothing is in flight. `None` if it was closing
    /// already.
    pub fn close(&mut self, slot: u32) -> Option<Closed> {
        self.end(slot, false)
    }

    /// As [`Conns::close`], but the connection ends with a reset: nothing queued is sent, and
    /// neither end's kernel has a close handshake to make. For a stream cut at the shutdown
    /// timeout, which ends as in a crash anyway.
    pub fn reset(&mut self, slot: u32) -> Option<Closed> {
        self.end(slot, true)
    }

    fn end(&mut self, slot: u32, reset: bool) -> Option<Closed> {
        let conn = &mut self.slots[slot as usize];
        if matches!(conn.state, State::Free | State::Closing) {
            return None;
        }
        let closed = self.describe(slot);
        let conn = &mut self.slots[slot as usize];
        if let Some(buf) = conn.pending.take() {
            self.rings.writes.free(buf);
        }
        conn.state = State::Closing;
        conn.flags = 0;
        let gen = conn.gen;
        // Shut the socket down first: the peer gets a FIN behind what is queued (with a last
        // send's held-back segment, see `comet_ring::Ring::send`), also when the close that
        // follows finds unread input and resets the connection; and a watch (a one-shot poll)
        // completes by itself, woken by the state change. A cancel would be a lookup in the
        // ring's hash of armed requests, which has at most 256 buckets (about 80 requests deep
        // at 20k connections a ring): it was 15 % of comet's CPU while a shutdown ended 1M
        // streams (results/1m/2026-11-30-shutdown-perf). A reset shuts the reading side only,
        // which sends nothing, after SO_LINGER 0 has made the close an RST.
        if reset {
            conn.cancels += 1;
            self.rings.linger_zero(slot, pack(Op::Cancel, slot, gen));
        }
        conn.cancels += 1;
        self.rings
            .shutdown_slot(slot, !reset, pack(Op::Cancel, slot, gen));
        // A recv or a send is cancelled by its user_data: the kernel finds it by hash.
        // Cancelling by descriptor instead scans every armed request of the ring, which at 15k
        // connections per ring made closing them all quadratic (minutes at 1M).
        for (bit, op) in [(RECV, Op::Recv), (SEND, Op::Send)] {
            if conn.inflight & bit != 0 {
                conn.cancels += 1;
                self.rings
                    .cancel(slot, pack(op, slot, gen), pack(Op::Cancel, slot, gen));
            }
        }
        self.finish_if_done(slot);
        Some(closed)
    }

    /// Frees a closing slot once nothing is in flight on it.
    pub fn finish_if_done(&mut self, slot: u32) {
        let conn = &mut self.slots[slot as usize];
        if conn.state == State::Closing && conn.inflight == 0 && conn.cancels == 0 {
            debug_assert!(conn.sending.is_none() && conn.pending.is_none());
            conn.state = State::Free;
            let gen = conn.gen;
            self.rings.close_slot(slot, pack(Op::Close, slot, gen));
            self.live -= 1;
            self.ring_live[self.rings.ring_of(slot)] -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker's connections on one small ring. Nothing is submitted: the recv `accepted`
    /// queues never reaches the kernel.
    fn small_conns() -> Conns {
        let config = comet_ring::Config {
            sq_entries: 64,
            files: 16,
            read_bufs: 4,
            read_buf_size: 512,
        };
        Conns::new(0, Rings::new(config, 1).unwrap(), 16, 16)
    }

    #[test]
    fn a_replaced_deadline_does_not_act() {
        let mut conns = small_conns();
        conns.accepted(3, State::Request);
        conns.deadline(3, 100); // the request's
        conns.accepted(5, State::Request);
        conns.deadline(5, 150);
        conns.deadline(3, 200); // answered at 100, kept alive: the next request's
        assert_eq!(
            conns.expired(120),
            None,
            "slot 3's first deadline was replaced"
        );
        assert_eq!(conns.expired(199), Some(5));
        assert_eq!(conns.expired(199), None);
        assert_eq!(conns.expired(200), Some(3));
    }

    /// At shutdown a drain gets no deadline of its own (`--shutdown-timeout-ms` bounds it):
    /// ending a million streams queued an entry each for `--request-timeout-ms`.
    #[test]
    fn a_drain_without_a_deadline_queues_none() {
        let mut conns = small_conns();
        conns.accepted(3, State::Request);
        assert!(conns.drain(3, None), "nothing queued: closes at once");
        assert_eq!(conns.deadlines.len(), 0);
        conns.accepted(5, State::Request);
        assert!(conns.drain(5, Some(100)));
        assert_eq!(conns.expired(99), None);
        assert_eq!(conns.expired(100), Some(5));
    }

    /// A stream's close waits for its watch and its shutdown; a reset's also for the
    /// SO_LINGER it sets first. The slot is free only once all of them completed.
    #[test]
    fn a_close_and_a_reset_free_the_slot_once_all_they_started_completed() {
        let watch_ended = |conns: &mut Conns, slot: u32| {
            let gen = conns.get(slot).gen;
            let c = Completion {
                user_data: pack(Op::Watch, slot, gen),
                result: (libc::POLLIN | libc::POLLRDHUP) as i32,
                flags: 0,
            };
            assert!(matches!(conns.on_watch(slot, gen, c), Watched::Ready(_)));
        };
        let mut conns = small_conns();
        for (slot, reset, cancels) in [(3, false, 1), (5, true, 2)] {
            conns.accepted(slot, State::Streaming);
            conns.get_mut(slot).inflight = WATCH;
            let closed = if reset {
                conns.reset(slot)
            } else {
                conns.close(slot)
            };
            assert!(closed.is_some());
            watch_ended(&mut conns, slot);
            for _ in 0..cancels {
                assert_eq!(conns.get(slot).state, State::Closing, "slot {slot}");
                let gen = conns.get(slot).gen;
                conns.on_cancel(slot, gen);
            }
            assert_eq!(conns.get(slot).state, State::Free, "slot {slot}");
        }
    }

    /// The deadline queue's room follows what it holds once a burst has passed.
    #[test]
    fn a_burst_of_deadlines_gives_its_room_back() {
        let mut conns = small_conns();
        conns.accepted(3, State::Request);
        for ms in 0..100_000 {
            conns.deadline(3, ms);
        }
        assert!(conns.deadlines.capacity() >= 100_000);
        conns.trim();
        assert!(conns.deadlines.capacity() >= 100_000, "still held: kept");
        while conns.expired(99_990).is_some() {}
        assert_eq!(conns.deadlines.len(), 9);
        conns.trim();
        let room = conns.deadlines.capacity();
        assert!((9..=4 * DEADLINES_KEPT).contains(&room), "{room}");
        assert_eq!(
            conns.expired(100_000),
            Some(3),
            "the latest deadline still acts"
        );
    }

    #[test]
    fn a_connection_slot_is_32_bytes() {
        assert!(
            std::mem::size_of::<Conn>() <= 32,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }
}
