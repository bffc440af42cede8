//! The worker's two listeners (subscribers and the publish API) and admission. Accepts are
//! armed on one ring at a time (the admitting ring, which the loop picks: see
//! `Conns::admitting_ring`) while that ring holds fewer connections than its admission cap,
//! and accepted sockets go straight into that ring's fixed-file table. A full table makes the
//! kernel accept the next connection and close it at once (ENFILE), so no accept may take more
//! connections than the ring has room for:
//!
//! - While the ring has plenty of room (more than `Config::accept_singles_zone`), each listener
//!   has one multishot accept, cancelled when the room falls to the zone. A multishot accept
//!   takes whatever is queued when it runs, and under a connect storm it posts completions
//!   faster than the loop reaches its room check; the zone (the listen backlog and a full
//!   completion queue) absorbs what it takes before its cancel lands.
//! - In the zone, one-shot accepts, never more in flight than the ring has free slots: each
//!   takes exactly one connection, so the table fills to its cap and never past it (the 1M
//!   connect storms lost a connection on about half of the rings to ENFILE before this:
//!   results/1m/2026-11-29-rings-faults*).
//!
//! An accept armed on a ring the loop has moved away from completes there, within the room it
//! was armed for. Nothing new is armed on a listener while one of its accepts is being
//! cancelled (see [`Accept::manage`]).

use std::os::fd::RawFd;

use comet_http::Listener;
use comet_ring::{Completion, Rings};

use crate::user_data::{pack, Op};

/// Both listeners, in the order of `Listener as usize`.
const LISTENERS: [Listener; 2] = [Listener::Public, Listener::Publish];

/// One-shot accepts in flight per listener at most: they are re-armed once per loop iteration,
/// so this bounds the accept rate in a ring's last slots: 64 slowed a 1M connect storm to
/// 168 s once heartbeats made iterations long (a run stopped, not committed).
const SHOTS_MAX: u32 = 256;

/// The generation field of an accept's `user_data`: multishot or one-shot.
const MULTI: u32 = 0;
const ONCE: u32 = 1;

/// What an accept's completion brought.
pub enum Accepted {
    /// A connection, placed in this fixed-file slot.
    Slot(u32),
    /// The accept was cancelled (admission cap or shutdown): nothing to do.
    Cancelled,
    /// The accept failed with this errno (counted; the accept is re-armed at the end of the
    /// iteration if it ended).
    Failed(i32),
}

pub struct Accept {
    listeners: [RawFd; 2],
    /// The ring a multishot accept is armed on for each listener, exactly while one is (and
    /// not being cancelled).
    armed: [Option<usize>; 2],
    /// The ring whose multishot accept for the listener is being cancelled, until its last
    /// completion. A connection it takes meanwhile is accepted into its ring, within the zone.
    leaving: [Option<usize>; 2],
    /// Per listener: the ring its one-shot accepts are in flight on, and how many (one ring
    /// at a time, so that accepts waiting for connections never spread over rings).
    shots: [Option<(usize, u32)>; 2],
    /// Per listener: its one-shot accepts are being cancelled; nothing is armed on it until
    /// the last of them completed.
    stopping: [bool; 2],
    /// The ring accepts were last armed on (the loop keeps it while it has room).
    current: Option<usize>,
}

/// The `user_data` slot field of an accept: the ring it is armed on and the listener.
fn accept_slot(ring: usize, listener: usize) -> u32 {
    (ring as u32) << 1 | listener as u32
}

impl Accept {
    /// `listeners` in the order of [`Listener`].
    pub fn new(listeners: [RawFd; 2]) -> Accept {
        Accept {
            listeners,
            armed: [None; 2],
            leaving: [None; 2],
            shots: [None; 2],
            stopping: [false; 2],
            current: None,
        }
    }

    /// The ring and the listener an accept's `user_data` slot names.
    pub fn ring_and_listener(slot: u32) -> (usize, Listener) {
        ((slot >> 1) as usize, LISTENERS[(slot & 1) as usize])
    }

    /// A completion of an accept on `ring` for `listener` (`gen`: from its `user_data`); a
    /// slot it brings is an index in that ring's table.
    pub fn on_complete(
        &mut self,
        ring: usize,
        listener: Listener,
        gen: u32,
        c: Completion,
    ) -> Accepted {
        let l = listener as usize;
        if gen == ONCE {
            match &mut self.shots[l] {
                Some((r, n)) if *r == ring && *n > 1 => *n -= 1,
                Some((r, 1)) if *r == ring => {
                    self.shots[l] = None;
                    self.stopping[l] = false;
                }
                other => panic!("a one-shot accept on ring {ring} ended, with {other:?} armed"),
            }
        } else if !c.more() {
            if self.leaving[l] == Some(ring) {
                self.leaving[l] = None;
            } else {
                assert_eq!(
                    self.armed[l],
                    Some(ring),
                    "an accept that was not armed ended"
                );
                self.armed[l] = None;
            }
        }
        if c.result >= 0 {
            return Accepted::Slot(c.result as u32);
        }
        // accept(2) and io_uring's accept with a fixed-file slot:
        match -c.result {
            // Our own cancel (admission cap reached, or shutdown).
            libc::ECANCELED => Accepted::Cancelled,
            // ENFILE: the fixed-file table is full; the kernel closed the connection it took
            // (admission exists to keep this from happening). EMFILE: the process's
            // descriptor limit. ENOBUFS/ENOMEM: no memory for the socket. ECONNABORTED: the
            // peer reset before accept. EPERM: a firewall rule. EINTR/EAGAIN: retried by the
            // next arming. None is fatal: each is counted and the accept armed again.
            errno => Accepted::Failed(errno),
        }
    }

    /// The ring accepting now, if any.
    pub fn admitting(&self) -> Option<usize> {
        self.current
    }

    /// The ring `listener`'s one-shot accepts wait on, if any: it stays with that ring.
    pub fn booked(&self, listener: Listener) -> Option<usize> {
        self.shots[listener as usize].map(|(ring, _)| ring)
    }

    /// One-shot accepts in flight on `ring` (each holds a slot of its table in reserve).
    pub fn reserved(&self, ring: usize) -> usize {
        self.shots
            .iter()
            .flatten()
            .filter(|(r, _)| *r == ring)
            .map(|(_, n)| *n as usize)
            .sum()
    }

    /// Arms the accepts of `listener` on the ring `want` names, with `room`: the connections
    /// that ring may still take besides the one-shot accepts already in flight there; `zone`:
    /// at or below this room, one-shot accepts. Cancels an accept armed elsewhere, or a
    /// multishot accept in the zone, or every accept of a listener that is closed (`None`).
    /// True when an accept was cancelled because the listener closed (no ring has room, or
    /// shutdown began).
    ///
    /// A listener with an accept being cancelled gets nothing new until its last completion
    /// came. The kernel wakes one accept per connection (accept polls are exclusive waiters),
    /// and a wake taken by an accept being cancelled is lost with it: the connection stays
    /// queued with the other accept asleep (seen here: a client stalled until the next
    /// connection came). An accept armed later takes what is queued at once.
    pub fn manage(
        &mut self,
        rings: &mut Rings,
        listener: Listener,
        want: Option<(usize, usize)>,
        zone: usize,
    ) -> bool {
        let i = listener as usize;
        if self.leaving[i].is_some() {
            return false; // until the cancelled accept's last completion
        }
        let multi = want.is_some_and(|(_, room)| room > zone);
        let ring = want.map(|(ring, _)| ring);
        if let Some(armed) = self.armed[i].filter(|&r| Some(r) != ring || !multi) {
            let target = pack(Op::Accept, accept_slot(armed, i), MULTI);
            rings.ring(armed).cancel(target, pack(Op::Ignore, 0, 0));
            self.leaving[i] = Some(armed);
            self.armed[i] = None;
            return want.is_none();
        }
        let Some((ring, room)) = want else {
            return match self.shots[i] {
                Some((booked, _)) if !self.stopping[i] => {
                    let target = pack(Op::Accept, accept_slot(booked, i), ONCE);
                    rings
                        .ring(booked)
                        .cancel_all(target, pack(Op::Ignore, 0, 0));
                    self.stopping[i] = true;
                    true
                }
                _ => false,
            };
        };
        if self.stopping[i] || self.armed[i].is_some() {
            return false;
        }
        let shots = match self.shots[i] {
            // Not before those on another ring completed (the loop keeps a listener on the ring
            // its one-shot accepts wait on while that ring has a free slot).
            Some((booked, _)) if booked != ring => return false,
            Some((_, n)) => n,
            None if multi => {
                let user_data = pack(Op::Accept, accept_slot(ring, i), MULTI);
                rings.ring(ring).accept_multi(self.listeners[i], user_data);
                self.armed[i] = Some(ring);
                self.current = Some(ring);
                return false;
            }
            None => 0,
        };
        let more = (SHOTS_MAX - shots).min(room.min(SHOTS_MAX as usize) as u32);
        if more == 0 {
            return false;
        }
        let user_data = pack(Op::Accept, accept_slot(ring, i), ONCE);
        for _ in 0..more {
            rings.ring(ring).accept_once(self.listeners[i], user_data);
        }
        self.shots[i] = Some((ring, shots + more));
        self.current = Some(ring);
        false
    }

    /// No accept is armed or being cancelled (so no new connection can arrive).
    pub fn idle(&self) -> bool {
        self.armed == [None, None] && self.leaving == [None, None] && self.shots == [None, None]
    }
}
