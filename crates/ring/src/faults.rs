//! Deterministic fault injection (cargo feature `faults`; test builds only).
//!
//! With `COMET_FAULTS=<seed>:<rate>[:<kinds>]` in the environment (`rate` a probability, `0.05`;
//! `kinds` a comma-separated subset of `sq,dry,recv,poll,short,eagain,reset,accept,msg`, all
//! by default),
//! each
//! [`crate::Ring`] draws from a seeded generator (the seed mixed with the ring's creation
//! index) at every decision point below and, with probability `rate`, makes the kernel's answer
//! one it could legally have given instead. The schedule of decisions is fixed by the seed; which
//! operation meets which decision also depends on the kernel's timing, so a seed reproduces a run
//! closely, not byte for byte. Without the variable, or without the feature, nothing changes: every
//! hook sits behind `#[cfg(feature = "faults")]` and the feature-off build has none of this code.
//!
//! What is injected, per operation, and why the kernel could have produced it:
//!
//! | operation | injected | how | why it is legal |
//! |---|---|---|---|
//! | any submission | the submission queue is full | `push` takes the flush path (`sq_full_flushes` counts it) or, one time in four, the path where the kernel refused the flush (EBUSY: the entry waits in the backlog) | the queue holds `sq_entries`; a busy loop fills it |
//! | recv (multishot or one-shot, provided buffers) | `-ENOBUFS` | a dry spell: for 1 to 16 drains every buffer handed back is held instead of returned to the kernel, so the kernel itself runs out and answers `-ENOBUFS` (the data stays in the socket) | it is the kernel's own answer |
//! | multishot recv, a completion with `MORE` | `-ECANCELED` as its last completion | the ring cancels the request itself (ASYNC_CANCEL, user_data [`FAULT_CANCEL`], whose completion is swallowed); the data completions before it pass unchanged | the kernel's own answer; a multishot may end at any completion (no `MORE`), and the caller must re-arm |
//! | multishot recv, as above | `-ECONNRESET` as its last completion | the same cancel, and its `-ECANCELED` is reported as `-ECONNRESET` | a peer's RST ends a recv with `-ECONNRESET`; data received before it was delivered |
//! | recv, its last completion (no `MORE`) | `-ECONNRESET` | the result is replaced; a provided buffer it held is recycled here (the caller never sees it) | an RST purges the receive queue: a recv after it gets `-ECONNRESET`, whatever was queued |
//! | poll (readiness watch) | `POLLERR \| POLLHUP` | the revents of a completed poll are replaced | a reset socket polls as error and hang-up |
//! | send (write buffer or static bytes) | a short write | the length submitted is cut to 1..len-1 bytes, so the kernel really sends fewer and says so | a stream socket may take part of a send; the caller must send the rest |
//! | send | `-EAGAIN` | not submitted; a completion with `-EAGAIN` is posted instead (nothing was sent) | the answer for a socket that cannot take bytes now without blocking (non-blocking or with a send timeout) |
//! | send | `-ECONNRESET` | not submitted; a completion with `-ECONNRESET` is posted (nothing sent) | the peer reset the connection |
//! | multishot accept, a completion with `MORE` | `-EMFILE`, `-ENFILE`, `-ECONNABORTED` or `-ENOBUFS` as its last completion | the ring cancels the accept itself and reports its `-ECANCELED` as the error; the connection that completion brought passes unchanged | a multishot accept ends on its first error: descriptor limits (EMFILE, ENFILE: no free fixed-file slot), a peer that reset before accept (ECONNABORTED), no memory (ENOBUFS) |
//! | MSG_RING (a doorbell to another worker) | `-EOVERFLOW` | not submitted; its failure completion (with the caller's own user_data) is posted | the target ring's completion queue was full, so the message could not be posted there |
//!
//! Not injected: `-ECANCELED` on sends, polls and one-shot recvs (only a cancel the caller asked
//! for produces it there); a failed accept in place of one that brought a connection (the
//! kernel installed that socket in the fixed-file table: rewriting it would leak the slot);
//! errors on timers, cancels, closes and MSG_RING.
//!
//! At the ring's end the feature checks that every provided buffer handed to the caller came
//! back (`ReadBufs`'s count of buffers out) and prints what was injected (`comet faults: ...`), so that a
//! test can tell a faults build from another.

use std::collections::HashMap;

use crate::Completion;

/// The user_data of the ring's own cancels; their completions never reach the caller.
pub const FAULT_CANCEL: u64 = u64::MAX;

/// What the ring submitted under a user_data, for the operations whose completions it may
/// rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Recv,
    Poll,
    Accept,
}

/// How the submission of one entry goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Push {
    Normal,
    /// As if the queue were full: flush, then push.
    Flush,
    /// As if the queue were full and the kernel refused the flush: into the backlog.
    Backlog,
}

/// How a send goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Send {
    /// Submitted with this length.
    Submit(u32),
    /// Not submitted: a completion with this (negative) result is posted.
    Fail(i32),
}

/// Counts of what was injected.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultStats {
    pub sq_full: u64,
    pub dry_spells: u64,
    pub enobufs_seen: u64,
    pub recv_cancelled: u64,
    pub recv_reset: u64,
    pub poll_reset: u64,
    pub send_short: u64,
    pub send_eagain: u64,
    pub send_reset: u64,
    pub accept_failed: u64,
    pub msg_ring_failed: u64,
}

impl FaultStats {
    pub fn total(&self) -> u64 {
        self.sq_full
            + self.dry_spells
            + self.recv_cancelled
            + self.recv_reset
            + self.poll_reset
            + self.send_short
            + self.send_eagain
            + self.send_reset
            + self.accept_failed
            + self.msg_ring_failed
    }
}

pub(crate) struct Faults {
    seed: u64,
    /// Generator state (splitmix64).
    state: u64,
    /// The chance of a fault per decision, in parts of 2^32.
    rate: u64,
    /// The kinds injected ([`KINDS`], one bit each).
    kinds_on: u32,
    /// Operations in flight whose completions may be rewritten, by user_data.
    kinds: HashMap<u64, Kind>,
    /// Multishot recvs the ring cancelled: the errno their `-ECANCELED` is reported as.
    doomed: HashMap<u64, i32>,
    /// Completions decided at submission (failed sends), posted before the kernel's.
    pub(crate) posted: Vec<Completion>,
    /// Drains left in the current dry spell (0: none).
    dry_drains: u32,
    pub stats: FaultStats,
}

/// The kinds of fault, by name, in the order of their bits.
pub const KINDS: [&str; 9] = [
    "sq", "dry", "recv", "poll", "short", "eagain", "reset", "accept", "msg",
];
const SQ: u32 = 1;
const DRY: u32 = 2;
const RECV: u32 = 4;
const POLL: u32 = 8;
const SHORT: u32 = 16;
const EAGAIN: u32 = 32;
const RESET: u32 = 64;
const ACCEPT: u32 = 128;
const MSG: u32 = 256;
const ALL: u32 = 511;

/// The creation index of each ring, mixed into its seed.
static RINGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Faults {
    /// From `COMET_FAULTS=<seed>:<rate>`; `None` without it. Panics on a malformed value: a test
    /// that asked for faults must not run without them.
    pub(crate) fn from_env() -> Option<Faults> {
        let value = std::env::var("COMET_FAULTS").ok()?;
        let (seed, rate, kinds) = parse(&value).unwrap_or_else(|| {
            panic!(
                "COMET_FAULTS={value:?}: expected <seed>:<rate>[:<kinds>], as 7:0.05 or \
                 7:0.05:short,eagain (kinds: {KINDS:?})"
            )
        });
        let index = RINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut faults = Faults::new(seed, rate, index);
        faults.kinds_on = kinds;
        Some(faults)
    }

    pub(crate) fn new(seed: u64, rate: f64, ring_index: u64) -> Faults {
        let seed = seed ^ ring_index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Faults {
            seed,
            state: seed,
            rate: (rate.clamp(0.0, 1.0) * (1u64 << 32) as f64) as u64,
            kinds_on: ALL,
            kinds: HashMap::new(),
            doomed: HashMap::new(),
            posted: Vec::new(),
            dry_drains: 0,
            stats: FaultStats::default(),
        }
    }

    fn next(&mut self) -> u64 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `rate` when a kind of `kinds` is on. The generator advances
    /// either way, so that turning kinds off does not shift the others' schedule.
    fn hit(&mut self, kinds: u32) -> bool {
        (self.next() >> 32) < self.rate && self.kinds_on & kinds != 0
    }

    /// A number in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(crate) fn push(&mut self) -> Push {
        if !self.hit(SQ) {
            return Push::Normal;
        }
        self.stats.sq_full += 1;
        if self.below(4) == 0 {
            Push::Backlog
        } else {
            Push::Flush
        }
    }

    pub(crate) fn track(&mut self, user_data: u64, kind: Kind) {
        self.kinds.insert(user_data, kind);
    }

    pub(crate) fn send(&mut self, user_data: u64, len: u32) -> Send {
        if !self.hit(SHORT | EAGAIN | RESET) {
            return Send::Submit(len);
        }
        // Half short writes, a quarter each of the errors, among the kinds that are on.
        let weights = [(SHORT, 2), (EAGAIN, 1), (RESET, 1)];
        let on = |k: u32| self.kinds_on & k != 0;
        let sum: u64 = weights.iter().filter(|w| on(w.0)).map(|w| w.1).sum();
        let mut pick = self.below(sum);
        let mut kind = SHORT;
        for (k, w) in weights.into_iter().filter(|w| self.kinds_on & w.0 != 0) {
            if pick < w {
                kind = k;
                break;
            }
            pick -= w;
        }
        match kind {
            SHORT if len > 1 => {
                self.stats.send_short += 1;
                Send::Submit(1 + self.below(u64::from(len) - 1) as u32)
            }
            SHORT => Send::Submit(len),
            EAGAIN => {
                self.stats.send_eagain += 1;
                self.post(user_data, -libc::EAGAIN);
                Send::Fail(-libc::EAGAIN)
            }
            _ => {
                self.stats.send_reset += 1;
                self.post(user_data, -libc::ECONNRESET);
                Send::Fail(-libc::ECONNRESET)
            }
        }
    }

    /// True when a MSG_RING is failed instead of submitted (its completion is posted).
    pub(crate) fn msg_ring(&mut self, own_user_data: u64) -> bool {
        if !self.hit(MSG) {
            return false;
        }
        self.stats.msg_ring_failed += 1;
        self.post(own_user_data, -libc::EOVERFLOW);
        true
    }

    fn post(&mut self, user_data: u64, result: i32) {
        self.posted.push(Completion {
            user_data,
            result,
            flags: 0,
        });
    }

    /// Once per drain: true while a dry spell lasts (buffers handed back are held).
    pub(crate) fn dry(&mut self) -> bool {
        if self.dry_drains > 0 {
            self.dry_drains -= 1;
        } else if self.hit(DRY) {
            self.stats.dry_spells += 1;
            self.dry_drains = 1 + self.below(16) as u32;
        }
        self.dry_drains > 0
    }

    /// What to do with a completion of the kernel before the caller sees it.
    pub(crate) fn rewrite(&mut self, c: &mut Completion) -> Rewrite {
        if c.user_data == FAULT_CANCEL {
            return Rewrite::Swallow;
        }
        let Some(&kind) = self.kinds.get(&c.user_data) else {
            return Rewrite::Keep;
        };
        let more = io_uring::cqueue::more(c.flags);
        if !more {
            self.kinds.remove(&c.user_data);
        }
        match kind {
            Kind::Recv => {
                if c.result == -libc::ENOBUFS {
                    self.stats.enobufs_seen += 1;
                }
                if !more {
                    if let Some(errno) = self.doomed.remove(&c.user_data) {
                        if c.result == -libc::ECANCELED {
                            c.result = -errno;
                        }
                        return Rewrite::Keep;
                    }
                    if c.result >= 0 && self.hit(RESET) {
                        self.stats.recv_reset += 1;
                        let bid = io_uring::cqueue::buffer_select(c.flags);
                        c.result = -libc::ECONNRESET;
                        c.flags = 0;
                        return bid.map_or(Rewrite::Keep, Rewrite::Recycle);
                    }
                    return Rewrite::Keep;
                }
                if !self.doomed.contains_key(&c.user_data) && self.hit(RECV | RESET) {
                    let cancel = match (self.kinds_on & RECV != 0, self.kinds_on & RESET != 0) {
                        (true, true) => self.below(2) == 0,
                        (cancel, _) => cancel,
                    };
                    let errno = if cancel {
                        self.stats.recv_cancelled += 1;
                        libc::ECANCELED
                    } else {
                        self.stats.recv_reset += 1;
                        libc::ECONNRESET
                    };
                    self.doomed.insert(c.user_data, errno);
                    return Rewrite::Cancel;
                }
                Rewrite::Keep
            }
            Kind::Accept => {
                if !more {
                    if let Some(errno) = self.doomed.remove(&c.user_data) {
                        if c.result == -libc::ECANCELED {
                            c.result = -errno;
                        }
                    }
                } else if !self.doomed.contains_key(&c.user_data) && self.hit(ACCEPT) {
                    self.stats.accept_failed += 1;
                    let errnos = [
                        libc::EMFILE,
                        libc::ENFILE,
                        libc::ECONNABORTED,
                        libc::ENOBUFS,
                    ];
                    let errno = errnos[self.below(4) as usize];
                    self.doomed.insert(c.user_data, errno);
                    return Rewrite::Cancel;
                }
                Rewrite::Keep
            }
            Kind::Poll => {
                if c.result > 0 && self.hit(POLL) {
                    self.stats.poll_reset += 1;
                    c.result = (libc::POLLERR | libc::POLLHUP) as i32;
                }
                Rewrite::Keep
            }
        }
    }

    pub(crate) fn summary(&self) -> String {
        let s = &self.stats;
        format!(
            "comet faults: seed={} injected={} sq_full={} dry_spells={} enobufs_seen={} \
             recv_cancelled={} recv_reset={} poll_reset={} send_short={} send_eagain={} \
             send_reset={} accept_failed={} msg_ring_failed={}",
            self.seed,
            s.total(),
            s.sq_full,
            s.dry_spells,
            s.enobufs_seen,
            s.recv_cancelled,
            s.recv_reset,
            s.poll_reset,
            s.send_short,
            s.send_eagain,
            s.send_reset,
            s.accept_failed,
            s.msg_ring_failed
        )
    }
}

/// What [`Faults::rewrite`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rewrite {
    /// Hand it to the caller (maybe rewritten in place).
    Keep,
    /// Hand it to the caller, and give this buffer (which it no longer carries) back.
    Recycle(u16),
    /// Hand it to the caller, and cancel the request (a doomed multishot).
    Cancel,
    /// The ring's own: drop it.
    Swallow,
}

/// `<seed>:<rate>[:<kinds>]`.
fn parse(value: &str) -> Option<(u64, f64, u32)> {
    let mut fields = value.split(':');
    let seed = fields.next()?.parse().ok()?;
    let rate: f64 = fields.next()?.parse().ok()?;
    let kinds = match fields.next() {
        None => ALL,
        Some(names) => names.split(',').try_fold(0, |bits, name| {
            let i = KINDS.iter().position(|k| *k == name)?;
            Some(bits | 1 << i)
        })?,
    };
    let valid = (0.0..=1.0).contains(&rate) && fields.next().is_none();
    valid.then_some((seed, rate, kinds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seed_and_rate() {
        assert_eq!(parse("7:0.05"), Some((7, 0.05, ALL)));
        assert_eq!(parse("7:0.5:short,eagain"), Some((7, 0.5, SHORT | EAGAIN)));
        assert_eq!(
            parse("7:0.5:sq,dry,recv,poll,reset,accept,msg"),
            Some((7, 0.5, ALL & !SHORT & !EAGAIN))
        );
        assert_eq!(parse("7:0.5:nope"), None);
        assert_eq!(parse("7:0.5:sq:x"), None);
        assert_eq!(parse("7"), None);
        assert_eq!(parse("7:2"), None);
        assert_eq!(parse("x:0.1"), None);
    }

    #[test]
    fn a_seed_fixes_the_schedule() {
        let draw = |seed| {
            let mut f = Faults::new(seed, 0.3, 0);
            (0..64).map(|_| f.push()).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn rate_zero_injects_nothing_and_rate_one_everything() {
        let mut none = Faults::new(3, 0.0, 0);
        let mut all = Faults::new(3, 1.0, 0);
        for _ in 0..1000 {
            assert_eq!(none.push(), Push::Normal);
            assert_ne!(all.push(), Push::Normal);
            assert_eq!(none.send(1, 100), Send::Submit(100));
            assert_ne!(all.send(1, 100), Send::Submit(100));
        }
    }

    #[test]
    fn kinds_off_are_never_injected() {
        let mut f = Faults::new(9, 1.0, 0);
        f.kinds_on = SHORT | EAGAIN;
        for _ in 0..1000 {
            assert_eq!(f.push(), Push::Normal);
            assert!(!f.dry());
            match f.send(1, 100) {
                Send::Submit(n) => assert!(n < 100),
                Send::Fail(e) => assert_eq!(e, -libc::EAGAIN),
            }
        }
        assert_eq!(f.stats.send_reset, 0);
    }

    #[test]
    fn short_sends_are_shorter_and_not_empty() {
        let mut f = Faults::new(5, 1.0, 0);
        for _ in 0..1000 {
            if let Send::Submit(n) = f.send(1, 10) {
                assert!((1..10).contains(&n), "{n}");
            }
        }
        // A one-byte send cannot be shortened: it goes whole or fails.
        for _ in 0..100 {
            assert!(matches!(f.send(1, 1), Send::Submit(1) | Send::Fail(_)));
        }
    }

    #[test]
    fn a_doomed_recv_ends_with_the_chosen_errno() {
        let mut f = Faults::new(11, 1.0, 0);
        f.track(42, Kind::Recv);
        let more = 2; // IORING_CQE_F_MORE
        let mut data = Completion {
            user_data: 42,
            result: 10,
            flags: more,
        };
        assert_eq!(f.rewrite(&mut data), Rewrite::Cancel);
        assert_eq!(data.result, 10, "data before the cancel passes unchanged");
        let errno = f.doomed[&42];
        let mut last = Completion {
            user_data: 42,
            result: -libc::ECANCELED,
            flags: 0,
        };
        assert_eq!(f.rewrite(&mut last), Rewrite::Keep);
        assert_eq!(last.result, -errno);
        assert!(f.kinds.is_empty() && f.doomed.is_empty());
        let mut own = Completion {
            user_data: FAULT_CANCEL,
            result: 0,
            flags: 0,
        };
        assert_eq!(f.rewrite(&mut own), Rewrite::Swallow);
    }

    #[test]
    fn a_reset_last_recv_gives_its_buffer_back() {
        let mut f = Faults::new(13, 1.0, 0);
        f.track(7, Kind::Recv);
        // IORING_CQE_F_BUFFER, buffer id 3 above IORING_CQE_BUFFER_SHIFT (16).
        let buffer = 1 | (3 << 16);
        let mut c = Completion {
            user_data: 7,
            result: 5,
            flags: buffer,
        };
        assert_eq!(f.rewrite(&mut c), Rewrite::Recycle(3));
        assert_eq!(c.result, -libc::ECONNRESET);
        assert_eq!(c.flags, 0);
    }
}
