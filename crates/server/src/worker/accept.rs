//! The worker's two listeners (subscribers and the publish API) and admission: a multishot
//! accept is armed on each, on one ring at a time (the admitting ring, which the loop picks:
//! see `Conns::admitting_ring`), while that ring holds fewer connections than its admission
//! cap; it is cancelled past it, and armed on the next ring once the cancel completed, so that
//! no ring's fixed-file table fills (a full table makes the kernel accept the next connection
//! and close it at once). Accepted sockets go straight into the admitting ring's table.

use std::os::fd::RawFd;

use comet_http::Listener;
use comet_ring::{Completion, Rings};

use crate::user_data::{pack, Op};

/// Both listeners, in the order of `Listener as usize`.
const LISTENERS: [Listener; 2] = [Listener::Public, Listener::Publish];

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
    /// The ring whose accept for the listener is being cancelled, until its last completion
    /// (no other accept is armed on the listener meanwhile, see `manage`). A connection it
    /// takes meanwhile is accepted into its ring, within that ring's margin.
    leaving: [Option<usize>; 2],
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
        }
    }

    /// The ring and the listener an accept's `user_data` slot names.
    pub fn ring_and_listener(slot: u32) -> (usize, Listener) {
        ((slot >> 1) as usize, LISTENERS[(slot & 1) as usize])
    }

    /// A completion of the accept on `ring` for `listener`; a slot it brings is an index in
    /// that ring's table.
    pub fn on_complete(&mut self, ring: usize, listener: Listener, c: Completion) -> Accepted {
        let l = listener as usize;
        if !c.more() {
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
        // accept(2) and io_uring's multishot accept with a fixed-file slot:
        match -c.result {
            // Our own cancel (admission cap reached, or shutdown).
            libc::ECANCELED => Accepted::Cancelled,
            // ENFILE: the fixed-file table is full; the kernel closed the connection it took
            // (the admission cap exists to keep this from happening). EMFILE: the process's
            // descriptor limit. ENOBUFS/ENOMEM: no memory for the socket. ECONNABORTED: the
            // peer reset before accept. EPERM: a firewall rule. EINTR/EAGAIN: retried by the
            // next arming. None is fatal: each is counted and the accept armed again.
            errno => Accepted::Failed(errno),
        }
    }

    /// The ring accepting now, if any.
    pub fn admitting(&self) -> Option<usize> {
        self.armed[0].or(self.armed[1])
    }

    /// Arms the accept of each listener on the ring `open` names for it (in the order of
    /// [`Listener`]); cancels an accept armed elsewhere or on a listener that is closed (`None`).
    /// True when an armed accept was cancelled because its listener closed (no ring has room, or
    /// shutdown began).
    ///
    /// Moving to another ring arms the new accept only once the old one's last completion came:
    /// never two on one listener. The kernel wakes one accept per connection (accept polls are
    /// exclusive waiters), and a wake taken by an accept being cancelled is lost with it: the
    /// connection stays queued with the other accept asleep (seen here: a client stalled until
    /// the next connection came). An accept armed later takes what is queued at once.
    pub fn manage(&mut self, rings: &mut Rings, open: [Option<usize>; 2]) -> bool {
        let mut paused = false;
        for l in LISTENERS {
            let i = l as usize;
            let want = open[i];
            if self.leaving[i].is_some() {
                continue; // until the cancelled accept's last completion
            }
            if let Some(ring) = self.armed[i].filter(|&r| Some(r) != want) {
                let target = pack(Op::Accept, accept_slot(ring, i), 0);
                rings.ring(ring).cancel(target, pack(Op::Ignore, 0, 0));
                self.leaving[i] = Some(ring);
                self.armed[i] = None;
                paused |= want.is_none();
                continue;
            }
            if let Some(want) = want.filter(|_| self.armed[i].is_none()) {
                let user_data = pack(Op::Accept, accept_slot(want, i), 0);
                rings.ring(want).accept_multi(self.listeners[i], user_data);
                self.armed[i] = Some(want);
            }
        }
        paused
    }

    /// No accept is armed or being cancelled (so no new connection can arrive).
    pub fn idle(&self) -> bool {
        self.armed == [None, None] && self.leaving == [None, None]
    }
}
