//! The per-core io_uring reactor of comet. It knows nothing of HTTP or ids.
//!
//! Layout:
//! - [`Ring`] (this file): one io_uring instance with a sparse fixed-file table (accepted sockets
//!   live there as direct descriptors and never take a regular fd), the operations comet submits,
//!   and the completion drain. Every operation carries an opaque `user_data` chosen by the caller.
//! - [`reads`]: the provided buffer ring that multishot recv draws from, so an idle connection
//!   owns no read buffer.
//! - [`writes`]: the pool of write buffers. A buffer handed to the kernel is frozen until its send
//!   completes; the pool enforces that, so nothing above this crate needs `unsafe`.
//! - [`rings`]: [`Rings`], the rings one thread drives as one table of slots (slot = ring x files
//!   per ring + index in that ring's table), with the write pool they share and the eventfd that
//!   lets the thread sleep on all of them at once.
//!
//! - [`faults`] (cargo feature `faults`, test builds only): completions rewritten from a seeded
//!   schedule into other answers the kernel could have given (`COMET_FAULTS=<seed>:<rate>`).
//!
//! All `unsafe` of comet lives in this crate, and each block says who keeps the memory the
//! kernel reads or writes alive until the operation completes.

#[cfg(feature = "faults")]
pub mod faults;
pub mod reads;
pub mod rings;
pub mod sys;
pub mod writes;

use std::io;
use std::os::fd::RawFd;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

pub use reads::ReadBufs;
pub use rings::Rings;
pub use writes::{Sent, WBuf, WriteBufs};

/// The buffer group id of the one provided buffer ring each [`Ring`] registers.
const READ_GROUP: u16 = 0;

/// Sizes of one ring, all fixed at set-up.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Submission queue entries; the completion queue gets four times as many.
    pub sq_entries: u32,
    /// Slots in the fixed-file table: the most sockets this ring can hold at once.
    /// Bounded by RLIMIT_NOFILE (per ring) and by the kernel's 1 << 20.
    pub files: u32,
    /// Provided read buffers (a power of two, at most 32768) and their size in bytes.
    pub read_bufs: u16,
    pub read_buf_size: u32,
}

/// Items of deferred task work the kernel runs in one enter that does not wait
/// (`IO_LOCAL_TW_DEFAULT_MAX` in io_uring/io_uring.c).
const KERNEL_TASK_WORK_PER_ENTER: usize = 20;

/// One completion, copied out of the completion queue so that handling it never holds the queue.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub user_data: u64,
    pub result: i32,
    pub flags: u32,
}

impl Completion {
    /// True when the multishot request that posted this is still armed and will post again.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer that holds this completion's data, if the kernel picked one.
    pub fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// Counters of the reactor itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct RingStats {
    /// Times a full submission queue was flushed early to make room (not an error).
    pub sq_full_flushes: u64,
}

/// The flags of a send. `last`: the socket is shut down once these bytes are sent, so they go
/// with MSG_MORE: the kernel holds a partial last segment back, and the shutdown's FIN goes out
/// in it: one segment fewer per connection that ends (counted in crates/ring/tests/loopback.rs).
fn send_flags(last: bool) -> i32 {
    if last {
        libc::MSG_NOSIGNAL | libc::MSG_MORE
    } else {
        libc::MSG_NOSIGNAL
    }
}

/// SO_LINGER on with a zero timeout: the close of a socket with it is a reset (see
/// [`Ring::linger_zero`]).
static LINGER_ZERO: libc::linger = libc::linger {
    l_onoff: 1,
    l_linger: 0,
};

pub struct Ring {
    ring: IoUring,
    pub reads: ReadBufs,
    /// The interval of the multishot tick timer. Boxed: the kernel reads it when the timeout is
    /// (re)armed, so its address must not change while the ring lives.
    tick: Box<types::Timespec>,
    pub stats: RingStats,
    /// Entries that found the submission queue full while the kernel refused a flush (EBUSY).
    /// Rare and short: it is emptied by the next `submit_and_wait`.
    backlog: Vec<squeue::Entry>,
    /// The fault schedule, when the feature is on and `COMET_FAULTS` is set.
    #[cfg(feature = "faults")]
    faults: Option<Box<faults::Faults>>,
}

impl Ring {
    /// Sets up a ring for the calling thread only (single issuer, task work deferred to our own
    /// waits): create it on the thread that will drive it. The task-run flag tells the thread
    /// when deferred work waits on a ring it is not sleeping on ([`Ring::wants_enter`]).
    pub fn new(config: Config) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(config.sq_entries * 4)
            .build(config.sq_entries)?;
        ring.submitter().register_files_sparse(config.files)?;
        let reads = ReadBufs::new(&ring, READ_GROUP, config.read_bufs, config.read_buf_size)?;
        Ok(Ring {
            ring,
            reads,
            tick: Box::new(types::Timespec::new()),
            stats: RingStats::default(),
            backlog: Vec::new(),
            #[cfg(feature = "faults")]
            faults: faults::Faults::from_env().map(Box::new),
        })
    }

    /// The ring's own descriptor: the target of [`Ring::msg_ring`] from other rings.
    pub fn fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.ring.as_raw_fd()
    }

    /// Queues an entry, flushing the submission queue to the kernel first if it is full.
    ///
    /// # Safety
    /// Every buffer or descriptor the entry points to must stay valid until its completion.
    unsafe fn push(&mut self, entry: squeue::Entry) {
        #[cfg(feature = "faults")]
        let forced = self
            .faults
            .as_mut()
            .map_or(faults::Push::Normal, |f| f.push());
        #[cfg(feature = "faults")]
        if forced == faults::Push::Backlog {
            // As if the queue were full and the kernel refused the flush (EBUSY).
            self.stats.sq_full_flushes += 1;
            self.backlog.push(entry);
            return;
        }
        if self.backlog.is_empty() {
            #[cfg(not(feature = "faults"))]
            let forced_full = false;
            #[cfg(feature = "faults")]
            let forced_full = forced == faults::Push::Flush;
            // SAFETY: the caller guarantees the entry's memory outlives the operation.
            if !forced_full && unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // A full queue is flushed, not an error.
            self.stats.sq_full_flushes += 1;
            match self.ring.submit() {
                Ok(_) => {
                    // SAFETY: as above.
                    if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                        return;
                    }
                }
                // EBUSY: the kernel holds overflowed completions; they are drained before
                // the backlog is retried in `submit_and_wait`.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EINTR)) => {}
                Err(e) => panic!("io_uring_enter failed while flushing a full queue: {e}"),
            }
        }
        self.backlog.push(entry);
    }

    /// Moves entries that found the submission queue full into it, oldest first.
    fn flush_backlog(&mut self) {
        let mut moved = 0;
        for entry in &self.backlog {
            // SAFETY: each entry's memory was guaranteed by the caller of `push` to outlive the
            // operation; waiting in the backlog does not change that.
            if unsafe { self.ring.submission().push(entry) }.is_err() {
                break;
            }
            moved += 1;
        }
        self.backlog.drain(..moved);
    }

    /// Multishot accept on a listening socket; each connection goes straight into a free slot
    /// of the fixed-file table and the completion's result is that slot.
    pub fn accept_multi(&mut self, listener: RawFd, user_data: u64) {
        #[cfg(feature = "faults")]
        self.track(user_data, faults::Kind::Accept);
        let e = opcode::AcceptMulti::new(types::Fd(listener))
            .allocate_file_index(true)
            .build()
            .user_data(user_data);
        // SAFETY: no memory is handed over; the listener fd is owned by the caller, who keeps it
        // open until this request's final completion (or the ring's end).
        unsafe { self.push(e) }
    }

    /// One accept into a free fixed-file slot (allocated by the kernel): exactly one connection,
    /// for a table's last free slots, where a multishot accept could take more connections
    /// than there are slots before its cancel lands (a full table makes the kernel close the
    /// connection it took). Not tracked by the fault schedule, which fails multishot accepts.
    pub fn accept_once(&mut self, listener: RawFd, user_data: u64) {
        let e = opcode::Accept::new(
            types::Fd(listener),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .file_index(Some(types::DestinationSlot::auto_target()))
        .build()
        .user_data(user_data);
        // SAFETY: no memory is handed over (no peer address is asked for); the listener fd is
        // owned by the caller, who keeps it open until this request completes (or the ring's
        // end).
        unsafe { self.push(e) }
    }

    /// Multishot recv on a fixed-file slot, drawing buffers from the provided buffer ring.
    pub fn recv_multi(&mut self, slot: u32, user_data: u64) {
        #[cfg(feature = "faults")]
        self.track(user_data, faults::Kind::Recv);
        let e = opcode::RecvMulti::new(types::Fixed(slot), READ_GROUP)
            .build()
            .user_data(user_data);
        // SAFETY: the buffers are the provided ring's, which lives as long as the ring.
        unsafe { self.push(e) }
    }

    /// One-shot recv into a provided buffer: for a connection that is read rarely (a
    /// WebSocket's control frames) and otherwise watched by `poll_read`.
    pub fn recv_once(&mut self, slot: u32, user_data: u64) {
        #[cfg(feature = "faults")]
        self.track(user_data, faults::Kind::Recv);
        let e = opcode::Recv::new(types::Fixed(slot), std::ptr::null_mut(), 0)
            .buf_group(READ_GROUP)
            .build()
            .flags(io_uring::squeue::Flags::BUFFER_SELECT)
            .user_data(user_data);
        // Length 0: the kernel uses the whole provided buffer.
        // SAFETY: the kernel picks a buffer of the provided ring, which lives as long as the ring.
        unsafe { self.push(e) }
    }

    /// One-shot poll for readability or hang-up: the cheapest armed request that notices a
    /// close (no buffer, ~263 B of kernel memory against ~855 B for a multishot recv).
    pub fn poll_read(&mut self, slot: u32, user_data: u64) {
        #[cfg(feature = "faults")]
        self.track(user_data, faults::Kind::Poll);
        let mask = (libc::POLLIN | libc::POLLRDHUP) as u32;
        let e = opcode::PollAdd::new(types::Fixed(slot), mask)
            .build()
            .user_data(user_data);
        // SAFETY: no memory is handed over.
        unsafe { self.push(e) }
    }

    /// One-shot poll on a regular descriptor (an eventfd, say).
    pub fn poll_fd(&mut self, fd: RawFd, user_data: u64) {
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(user_data);
        // SAFETY: no memory is handed over; the caller keeps `fd` open while the poll is armed.
        unsafe { self.push(e) }
    }

    /// Sends the unsent part of a write buffer of `writes` on a fixed-file slot. The buffer is
    /// frozen (the pool refuses to hand it out for writing) until [`WriteBufs::complete`] is
    /// called with this send's result. Crate-private: the pool must outlive the send, which
    /// [`Rings`] guarantees by owning both (see its `send`). `last`: see [`send_flags`].
    pub(crate) fn send(
        &mut self,
        writes: &mut WriteBufs,
        slot: u32,
        buf: WBuf,
        user_data: u64,
        last: bool,
    ) {
        let (ptr, len) = writes.freeze(buf);
        #[cfg(feature = "faults")]
        let Some(len) = self.fault_send(user_data, len) else {
            return;
        };
        let e = opcode::Send::new(types::Fixed(slot), ptr, len)
            .flags(send_flags(last))
            .build()
            .user_data(user_data);
        // SAFETY: `ptr..ptr+len` is the heap storage of a Vec owned by `writes`; `freeze` marked
        // it in flight, and the pool neither grows, shrinks nor frees a frozen buffer until
        // `complete`, which the caller calls only on this send's completion. The pool itself
        // outlives this ring: both belong to one `Rings`, which drops its rings first.
        unsafe { self.push(e) }
    }

    /// Sends bytes that live for the whole program (a heartbeat): no write buffer needed.
    /// `last`: see [`send_flags`].
    pub fn send_static(&mut self, slot: u32, bytes: &'static [u8], user_data: u64, last: bool) {
        let len = u32::try_from(bytes.len()).expect("a small static message");
        #[cfg(feature = "faults")]
        let Some(len) = self.fault_send(user_data, len) else {
            return;
        };
        let e = opcode::Send::new(types::Fixed(slot), bytes.as_ptr(), len)
            .flags(send_flags(last))
            .build()
            .user_data(user_data);
        // SAFETY: the bytes are 'static: they outlive any operation.
        unsafe { self.push(e) }
    }

    /// Cancels the request submitted with `target` as its user_data.
    pub fn cancel(&mut self, target: u64, user_data: u64) {
        let e = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data);
        // SAFETY: no memory is handed over.
        unsafe { self.push(e) }
    }

    /// Cancels every request with `user_data` `target` (one-shot accepts share theirs).
    pub fn cancel_all(&mut self, target: u64, user_data: u64) {
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(target).all())
            .build()
            .user_data(user_data);
        // SAFETY: no memory is handed over.
        unsafe { self.push(e) }
    }

    /// Shuts a fixed-file socket down (IORING_OP_SHUTDOWN): its reading side, and with `write`
    /// its writing side too, when the peer gets a FIN after what is queued (in the same segment
    /// as a last send's held-back bytes, see [`send_flags`]). Either way a poll armed on the
    /// socket completes by itself, woken by the state change (so it needs no cancel).
    pub fn shutdown_slot(&mut self, slot: u32, write: bool, user_data: u64) {
        let how = if write {
            libc::SHUT_RDWR
        } else {
            libc::SHUT_RD
        };
        let e = opcode::Shutdown::new(types::Fixed(slot), how)
            .build()
            .user_data(user_data);
        // SAFETY: no memory is handed over.
        unsafe { self.push(e) }
    }

    /// Makes the close of a fixed-file socket a reset: SO_LINGER with a zero timeout, set
    /// through IORING_OP_URING_CMD (Linux 6.7 and later). What is unsent is dropped, the peer
    /// gets an RST instead of a FIN, and neither end has a close handshake to make. On an older
    /// kernel the operation fails and the close stays an ordinary one.
    pub fn linger_zero(&mut self, slot: u32, user_data: u64) {
        let e = opcode::SetSockOpt::new(
            types::Fixed(slot),
            libc::SOL_SOCKET as u32,
            libc::SO_LINGER as u32,
            (&raw const LINGER_ZERO).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        )
        .build()
        .user_data(user_data);
        // SAFETY: the option's value is a static, which outlives the operation.
        unsafe { self.push(e) }
    }

    /// Closes a fixed-file slot; the slot is free for the next accept once this executes.
    /// `skip_success`: post no completion unless the close fails.
    pub fn close_slot(&mut self, slot: u32, user_data: u64) {
        let e = opcode::Close::new(types::Fixed(slot))
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(user_data);
        // SAFETY: no memory is handed over.
        unsafe { self.push(e) }
    }

    /// Posts a completion with `user_data` and `result` on another ring (IORING_OP_MSG_RING):
    /// the cross-core doorbell. No completion is posted here unless it fails, and then with
    /// `own_user_data`.
    pub fn msg_ring(&mut self, target: RawFd, result: i32, user_data: u64, own_user_data: u64) {
        #[cfg(feature = "faults")]
        if self
            .faults
            .as_mut()
            .is_some_and(|f| f.msg_ring(own_user_data))
        {
            return;
        }
        let e = opcode::MsgRingData::new(types::Fd(target), result, user_data, None)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(own_user_data);
        // SAFETY: no memory is handed over; the target ring's fd is kept open by its owner
        // until every worker has stopped (see the server's shutdown order).
        unsafe { self.push(e) }
    }

    /// Arms a multishot timer that completes every `interval_ms` until cancelled.
    pub fn tick_every(&mut self, interval_ms: u64, user_data: u64) {
        *self.tick = types::Timespec::new()
            .sec(interval_ms / 1000)
            .nsec(((interval_ms % 1000) * 1_000_000) as u32);
        let e = opcode::Timeout::new(&*self.tick)
            .flags(types::TimeoutFlags::MULTISHOT)
            .build()
            .user_data(user_data);
        // SAFETY: `self.tick` is boxed and owned by the ring, so it outlives the timeout.
        unsafe { self.push(e) }
    }

    /// Submits what is queued and waits until at least `want` completions are ready.
    /// An interrupted wait returns normally: the caller drains and calls again.
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        self.flush_backlog();
        // Entries still in the backlog mean the queue is full: submit them without sleeping.
        let want = if self.backlog.is_empty() { want } else { 0 };
        // Completions posted by the fault schedule are waiting: do not sleep either.
        #[cfg(feature = "faults")]
        let want = match &self.faults {
            Some(f) if !f.posted.is_empty() => 0,
            _ => want,
        };
        let mut entered = self.ring.submit_and_wait(want);
        // Deferred task work (the completions of polled requests: a client's hang-up seen by
        // a watch, a cancel, a timer) runs only in an enter that asks for completions, and
        // then at most [`KERNEL_TASK_WORK_PER_ENTER`] items (40 when it also submits) unless
        // the enter waits for more. With one enter per ring per loop
        // iteration, a burst of 500k hang-ups at shutdown came back 20 at a time and the
        // worker's own timer waited behind them for tens of seconds. So a ring that still has
        // some is entered again, without waiting, until it has none or its completion queue
        // could be full. (Asking for more completions with a zero timeout instead makes the
        // enter wait until they come while work keeps trickling in: measured, it stalled a
        // 1M shutdown.)
        if want == 0 {
            let room = {
                let cq = self.ring.completion();
                cq.capacity() - cq.len()
            };
            for _ in 0..room / KERNEL_TASK_WORK_PER_ENTER {
                if entered.is_err() || !self.has_deferred_work() {
                    break;
                }
                entered = self.ring.submit_and_wait(0);
            }
        }
        match entered {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// True when the kernel holds deferred task work for this ring (the task-run flag): an
    /// enter that asks for completions runs it and posts what it completes.
    pub fn has_deferred_work(&mut self) -> bool {
        self.ring.submission().taskrun()
    }

    /// True when an `io_uring_enter` on this ring has something to do: entries to submit (or
    /// waiting in the backlog), deferred task work to run (which posts completions), or
    /// overflowed completions to flush back into the queue.
    pub fn wants_enter(&mut self) -> bool {
        if !self.backlog.is_empty() {
            return true;
        }
        let sq = self.ring.submission();
        !sq.is_empty() || sq.taskrun() || sq.cq_overflow()
    }

    /// True when completions wait in the queue (or, with faults, were posted by the schedule).
    pub fn has_completions(&mut self) -> bool {
        #[cfg(feature = "faults")]
        if self.faults.as_ref().is_some_and(|f| !f.posted.is_empty()) {
            return true;
        }
        let mut cq = self.ring.completion();
        cq.sync();
        !cq.is_empty()
    }

    /// Gives back the pages of this ring's read buffers if the ring has been quiet since the
    /// last call ([`ReadBufs::trim`]); not while completions (which may name a filled buffer)
    /// wait in the queue or in the kernel's overflow list. Returns the bytes given back.
    pub fn trim_reads(&mut self) -> usize {
        if self.has_completions() || self.ring.submission().cq_overflow() {
            return 0;
        }
        self.reads.trim()
    }

    /// Makes the kernel signal `eventfd` whenever it posts a completion on this ring, or queues
    /// task work that will post one (the first item of an empty list): how a thread asleep on
    /// another ring learns that this one needs it.
    pub(crate) fn register_eventfd(&self, eventfd: RawFd) -> io::Result<()> {
        self.ring.submitter().register_eventfd(eventfd)
    }

    /// Copies up to `max` completions into `out` (after clearing it), so that handling them
    /// never borrows the completion queue.
    pub fn drain(&mut self, out: &mut Vec<Completion>, max: usize) {
        out.clear();
        self.drain_more(out, max);
    }

    /// [`Ring::drain`] without clearing `out`: appends until `out` holds `max` completions.
    pub fn drain_more(&mut self, out: &mut Vec<Completion>, max: usize) {
        #[cfg(feature = "faults")]
        if self.faults.is_some() {
            self.drain_faults(out, max);
            return;
        }
        let mut ran_out = false;
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in cq.take(max.saturating_sub(out.len())) {
            if cqueue::buffer_select(cqe.flags()).is_some() {
                self.reads.taken();
            }
            ran_out |= cqe.result() == -libc::ENOBUFS;
            out.push(Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
                flags: cqe.flags(),
            });
        }
        // A recv found no buffer (or another operation no memory: more buffers are harmless).
        if ran_out {
            self.reads.grow();
        }
    }
}

#[cfg(feature = "faults")]
impl Ring {
    /// What was injected so far (`None` without `COMET_FAULTS`).
    pub fn fault_stats(&self) -> Option<faults::FaultStats> {
        self.faults.as_ref().map(|f| f.stats)
    }

    fn track(&mut self, user_data: u64, kind: faults::Kind) {
        if let Some(f) = &mut self.faults {
            f.track(user_data, kind);
        }
    }

    /// The length to submit a send with, or `None` when the schedule failed it (its completion
    /// is posted by `drain`; the write buffer stays frozen until the caller handles it).
    fn fault_send(&mut self, user_data: u64, len: u32) -> Option<u32> {
        match self.faults.as_mut().map(|f| f.send(user_data, len)) {
            None => Some(len),
            Some(faults::Send::Submit(len)) => Some(len),
            Some(faults::Send::Fail(_)) => None,
        }
    }

    /// [`Ring::drain`] through the fault schedule.
    fn drain_faults(&mut self, out: &mut Vec<Completion>, max: usize) {
        let Some(f) = self.faults.as_mut() else {
            return;
        };
        if f.dry() {
            self.reads.dry = true;
        } else if self.reads.dry {
            self.reads.end_dry_spell();
        }
        let f = self.faults.as_mut().expect("faults");
        let posted = f.posted.len().min(max.saturating_sub(out.len()));
        out.extend(f.posted.drain(..posted));
        let mut cancels = Vec::new();
        let mut recycle = Vec::new();
        let mut ran_out = false;
        {
            let mut cq = self.ring.completion();
            cq.sync();
            while out.len() < max {
                let Some(cqe) = cq.next() else { break };
                let mut c = Completion {
                    user_data: cqe.user_data(),
                    result: cqe.result(),
                    flags: cqe.flags(),
                };
                if c.buffer().is_some() {
                    self.reads.taken();
                }
                // As the kernel answered, before the schedule rewrites it.
                ran_out |= c.result == -libc::ENOBUFS;
                match f.rewrite(&mut c) {
                    faults::Rewrite::Keep => out.push(c),
                    faults::Rewrite::Recycle(bid) => {
                        recycle.push(bid);
                        out.push(c);
                    }
                    faults::Rewrite::Cancel => {
                        cancels.push(c.user_data);
                        out.push(c);
                    }
                    faults::Rewrite::Swallow => {}
                }
            }
        }
        for bid in recycle {
            self.reads.recycle(bid);
        }
        if ran_out {
            self.reads.grow();
        }
        for target in cancels {
            self.cancel(target, faults::FAULT_CANCEL);
        }
    }
}

#[cfg(feature = "faults")]
impl Drop for Ring {
    fn drop(&mut self) {
        let Some(f) = &self.faults else { return };
        eprintln!("{}", f.summary());
        if !std::thread::panicking() {
            assert_eq!(
                self.reads.out(),
                0,
                "read buffers handed out and never recycled"
            );
        }
    }
}

/// A ring that only rings other rings' doorbells (IORING_OP_MSG_RING), for a thread that is not
/// a worker (the cluster bridge). Not single-issuer: it may be created on one thread and used
/// on another, by one thread at a time (`&mut self`).
pub struct Bell {
    ring: IoUring,
}

impl Bell {
    pub fn new() -> io::Result<Bell> {
        // One request at a time: `ring` waits for its completion before returning.
        Ok(Bell {
            ring: IoUring::builder().build(2)?,
        })
    }

    /// Posts a completion with `user_data` (and result 0) on the ring `target`, and waits for
    /// the posting to finish (MSG_RING completes inline: one system call).
    pub fn ring(&mut self, target: RawFd, user_data: u64) -> io::Result<()> {
        let e = opcode::MsgRingData::new(types::Fd(target), 0, user_data, None)
            .build()
            .user_data(0);
        // SAFETY: no memory is handed over; the caller keeps `target` open until this returns
        // (we wait for the completion below).
        unsafe { self.ring.submission().push(&e) }
            .map_err(|_| io::Error::other("doorbell queue full"))?;
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
        let result = self
            .ring
            .completion()
            .next()
            .map(|cqe| cqe.result())
            .ok_or_else(|| io::Error::other("no doorbell completion"))?;
        if result < 0 {
            return Err(io::Error::from_raw_os_error(-result));
        }
        Ok(())
    }
}
