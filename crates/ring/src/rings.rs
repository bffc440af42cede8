//! [`Rings`]: the rings one thread drives, seen as one table of slots.
//!
//! A ring's fixed-file table is bounded by RLIMIT_NOFILE, so a thread that must hold more
//! sockets than that drives several rings. Slot `s` of the set is index `s % files` in the
//! table of ring `s / files` (`files`: the table size, the same for every ring), so a slot
//! names its ring and operations on connections take the set's slot.
//!
//! Ring 0, the primary, is the one the thread sleeps on; the others (secondaries, created by
//! [`Rings::add`] when the caller needs them) have one eventfd registered, which the kernel
//! signals when it posts a completion on one of them or queues deferred task work there (the
//! first item of an empty list, and the ring's task-run flag is set). Before it sleeps, the
//! thread arms a one-shot poll on that eventfd on the primary, so it sleeps on all its rings in
//! one wait and wakes when any needs it. [`Rings::wait`]:
//! 1. submits what each secondary has queued; a secondary with completions, or with deferred
//!    work the kernel left for later, or a caller that asked not to block, means no sleep;
//! 2. otherwise, unless the poll is armed already, empties the eventfd, looks at the
//!    secondaries once more (a signal the emptying consumed was sent after the flag it stands
//!    for was set: the eventfd's lock orders the two), and arms the poll: a signal after the
//!    emptying completes it at once;
//! 3. sleeps on the primary (submitting the poll), then runs the deferred work of every
//!    secondary that has some, which posts their completions.
//!
//! The caller drains every ring ([`Rings::drain`]) and, on the poll's completion, calls
//! [`Rings::woken`]: the poll is armed again only before the next sleep. So a busy thread
//! that does not sleep pays nothing for the eventfd, and its own entries on the secondaries
//! (which post completions, and so signal it) wake it at most once, if the poll was armed.
//! An idle thread sleeps: nothing is signalled while no ring has work.
//!
//! A secondary with work is entered at most twice per wait (to submit before the sleep, to run
//! its deferred work after), one without is not entered. Silencing the eventfd while awake
//! (IORING_CQ_EVENTFD_DISABLED) instead would not do: the kernel reads that flag after setting
//! the task-run flag with no barrier between the two on every architecture, so a wake could be
//! lost. Measured: results/rings.
//!
//! The rings share one pool of write buffers (a connection's buffers move to no other ring, but
//! one pool keeps one bound on the buffers kept for reuse whatever the number of rings).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::{sys, Completion, Config, Ring, RingStats, WBuf, WriteBufs};

pub struct Rings {
    /// Ring 0 is the primary. Declared before `writes` and `wake`, so dropped before them: no
    /// ring outlives the write pool its sends read, or the eventfd its poll watches.
    rings: Vec<Ring>,
    pub writes: WriteBufs,
    config: Config,
    rings_max: usize,
    /// Registered with every secondary; created with the first one.
    wake: Option<OwnedFd>,
    /// The user_data of the primary's poll on `wake`.
    wake_user_data: u64,
    /// True from the poll's arming to its completion ([`Rings::woken`]).
    wake_armed: bool,
}

/// The smallest submission queue of a secondary ring.
const SECONDARY_SQ_MIN: u32 = 64;

impl Rings {
    /// The primary ring, and room for `rings_max` rings of `config` in all. Create it on the
    /// thread that will drive it (each ring is single-issuer).
    pub fn new(config: Config, rings_max: usize) -> io::Result<Rings> {
        assert!(rings_max >= 1);
        assert!(
            (config.files as u64) * (rings_max as u64) <= u64::from(u32::MAX),
            "slots of the set must fit a u32"
        );
        Ok(Rings {
            rings: vec![Ring::new(config)?],
            writes: WriteBufs::default(),
            config,
            rings_max,
            wake: None,
            wake_user_data: 0,
            wake_armed: false,
        })
    }

    /// Rings set up so far.
    pub fn len(&self) -> usize {
        self.rings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }

    /// True while another ring may be added.
    pub fn can_add(&self) -> bool {
        self.rings.len() < self.rings_max
    }

    /// Slots of each ring's fixed-file table.
    pub fn files(&self) -> u32 {
        self.config.files
    }

    /// Adds a secondary ring and returns its index. The first one creates the eventfd, which
    /// the primary polls with `wake_user_data` before each sleep (its completion goes to
    /// [`Rings::woken`]).
    pub fn add(&mut self, wake_user_data: u64) -> io::Result<usize> {
        assert!(
            self.can_add(),
            "ring {} of {}",
            self.rings.len(),
            self.rings_max
        );
        // A secondary ring carries its share of the thread's connections and nothing else (no
        // timers, doorbells or the eventfd), so a quarter of the primary's queues: at a million
        // connections, 50 rings each keep ~100 KiB less resident (5 MB), and a burst larger
        // than its queues is only submitted in more batches.
        let secondary = Config {
            sq_entries: (self.config.sq_entries / 4).max(SECONDARY_SQ_MIN),
            ..self.config
        };
        let ring = Ring::new(secondary)?;
        if self.wake.is_none() {
            self.wake = Some(sys::eventfd()?);
            self.wake_user_data = wake_user_data;
        }
        let wake = self.wake.as_ref().expect("the eventfd");
        ring.register_eventfd(wake.as_raw_fd())?;
        self.rings.push(ring);
        Ok(self.rings.len() - 1)
    }

    /// The primary's poll on the eventfd completed: it is armed again before the next sleep
    /// (see the protocol in the module doc).
    pub fn woken(&mut self) {
        self.wake_armed = false;
    }

    /// Ring `index` (0: the primary, which timers, doorbells and the shutdown poll use).
    pub fn ring(&mut self, index: usize) -> &mut Ring {
        &mut self.rings[index]
    }

    pub fn primary(&mut self) -> &mut Ring {
        &mut self.rings[0]
    }

    /// Gives back the read buffers' pages of every ring that was quiet since the last call
    /// ([`Ring::trim_reads`]); returns the bytes given back.
    pub fn trim_reads(&mut self) -> usize {
        self.rings.iter_mut().map(Ring::trim_reads).sum()
    }

    /// Bytes of every ring's read buffers in memory ([`crate::ReadBufs::resident`]: a mincore
    /// call per ring).
    pub fn reads_resident(&self) -> usize {
        self.rings
            .iter()
            .map(|r| r.reads.resident().unwrap_or(0))
            .sum()
    }

    /// The set's slot of index `local` in ring `ring`'s table (what an accept on that ring
    /// returned).
    pub fn slot(&self, ring: usize, local: u32) -> u32 {
        debug_assert!(local < self.config.files && ring < self.rings.len());
        ring as u32 * self.config.files + local
    }

    /// The ring that holds slot `slot`.
    pub fn ring_of(&self, slot: u32) -> usize {
        (slot / self.config.files) as usize
    }

    /// The ring of `slot` and its index in that ring's table.
    fn at(&mut self, slot: u32) -> (&mut Ring, u32) {
        let files = self.config.files;
        (&mut self.rings[(slot / files) as usize], slot % files)
    }

    // ---- operations on a slot (see the same names on `Ring`) ----------------------------

    pub fn recv_multi(&mut self, slot: u32, user_data: u64) {
        let (ring, local) = self.at(slot);
        ring.recv_multi(local, user_data);
    }

    pub fn recv_once(&mut self, slot: u32, user_data: u64) {
        let (ring, local) = self.at(slot);
        ring.recv_once(local, user_data);
    }

    pub fn poll_read(&mut self, slot: u32, user_data: u64) {
        let (ring, local) = self.at(slot);
        ring.poll_read(local, user_data);
    }

    /// [`Ring::send`] from the shared pool.
    pub fn send(&mut self, slot: u32, buf: WBuf, user_data: u64, last: bool) {
        let files = self.config.files;
        let ring = &mut self.rings[(slot / files) as usize];
        // The pool outlives every ring of the set (field order), so a frozen buffer stays
        // valid until its completion whatever ring sends it.
        ring.send(&mut self.writes, slot % files, buf, user_data, last);
    }

    pub fn send_static(&mut self, slot: u32, bytes: &'static [u8], user_data: u64, last: bool) {
        let (ring, local) = self.at(slot);
        ring.send_static(local, bytes, user_data, last);
    }

    /// Cancels the request `target` made on `slot` (a cancel must go to the request's ring).
    pub fn cancel(&mut self, slot: u32, target: u64, user_data: u64) {
        let (ring, _) = self.at(slot);
        ring.cancel(target, user_data);
    }

    pub fn shutdown_slot(&mut self, slot: u32, write: bool, user_data: u64) {
        let (ring, local) = self.at(slot);
        ring.shutdown_slot(local, write, user_data);
    }

    pub fn linger_zero(&mut self, slot: u32, user_data: u64) {
        let (ring, local) = self.at(slot);
        ring.linger_zero(local, user_data);
    }

    pub fn close_slot(&mut self, slot: u32, user_data: u64) {
        let (ring, local) = self.at(slot);
        ring.close_slot(local, user_data);
    }

    /// The bytes a recv on `slot` put in provided buffer `bid` (of the slot's ring).
    pub fn read(&self, slot: u32, bid: u16, len: usize) -> &[u8] {
        self.rings[(slot / self.config.files) as usize]
            .reads
            .get(bid, len)
    }

    /// Gives buffer `bid` of `slot`'s ring back to the kernel.
    pub fn recycle(&mut self, slot: u32, bid: u16) {
        let (ring, _) = self.at(slot);
        ring.reads.recycle(bid);
    }

    // ---- the loop -------------------------------------------------------------------------

    /// Submits what every ring has queued and, if `block`, sleeps until some ring has
    /// completions; then runs the deferred work of the secondaries (steps 1 to 3 of the module
    /// doc). An interrupted wait returns normally.
    pub fn wait(&mut self, block: bool) -> io::Result<()> {
        let Rings {
            rings,
            wake,
            wake_user_data,
            wake_armed,
            ..
        } = self;
        let (primary, secondaries) = rings.split_first_mut().expect("the primary");
        // 1.
        let mut ready = !block;
        for ring in secondaries.iter_mut() {
            if ring.wants_enter() {
                ring.submit_and_wait(0)?;
            }
            // Still wanting an enter: task work the kernel left for later (it runs a bounded
            // batch per enter and sets the task-run flag again) or a backlog; neither signals.
            ready |= ring.has_completions() || ring.wants_enter();
        }
        // 2.
        if let Some(wake) = wake.as_ref().filter(|_| !ready && !*wake_armed) {
            sys::eventfd_clear(wake)?;
            for ring in secondaries.iter_mut() {
                ready |= ring.has_completions() || ring.wants_enter();
            }
            if !ready {
                // The eventfd is owned by `self` and outlives the primary (field order).
                primary.poll_fd(wake.as_raw_fd(), *wake_user_data);
                *wake_armed = true;
            }
        }
        // 3. (The primary's own deferred work is run without sleeping, see `submit_and_wait`.)
        let ready = ready || primary.has_deferred_work();
        primary.submit_and_wait(if ready { 0 } else { 1 })?;
        for ring in secondaries.iter_mut() {
            if ring.wants_enter() {
                ring.submit_and_wait(0)?;
            }
        }
        Ok(())
    }

    /// Copies up to `max` completions from the rings, the primary first, into `out` (after
    /// clearing it). Empty when no ring has any.
    pub fn drain(&mut self, out: &mut Vec<Completion>, max: usize) {
        out.clear();
        for ring in &mut self.rings {
            if out.len() >= max {
                break;
            }
            ring.drain_more(out, max);
        }
    }

    /// The reactor's counters, summed over the rings.
    pub fn stats(&self) -> RingStats {
        RingStats {
            sq_full_flushes: self.rings.iter().map(|r| r.stats.sq_full_flushes).sum(),
        }
    }

    /// The eventfd's descriptor, once a secondary exists (for tests).
    pub fn wake_fd(&self) -> Option<RawFd> {
        self.wake.as_ref().map(|w| w.as_raw_fd())
    }
}
