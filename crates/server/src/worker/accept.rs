//! The worker's two listeners (subscribers and the publish API) and admission: a multishot
//! accept is armed on each while the worker holds fewer connections than its admission cap,
//! and cancelled past it, so that the ring's fixed-file table never fills (a full table makes
//! the kernel accept the next connection and close it at once).

use std::os::fd::RawFd;

use comet_http::Listener;
use comet_ring::{Completion, Ring};

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
    /// True exactly when a multishot accept is armed on the listener.
    armed: [bool; 2],
    /// True while a cancel of the armed accept is in flight.
    cancelling: [bool; 2],
}

impl Accept {
    /// `listeners` in the order of [`Listener`].
    pub fn new(listeners: [RawFd; 2]) -> Accept {
        Accept {
            listeners,
            armed: [false; 2],
            cancelling: [false; 2],
        }
    }

    /// The listener an accept's `user_data` slot names.
    pub fn listener(slot: u32) -> Listener {
        LISTENERS[slot as usize]
    }

    pub fn on_complete(&mut self, listener: Listener, c: Completion) -> Accepted {
        let l = listener as usize;
        if !c.more() {
            self.armed[l] = false;
            self.cancelling[l] = false;
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

    /// Arms the accept of each listener while it is `open` (in the order of [`Listener`]),
    /// cancels it otherwise; true when an armed accept was cancelled (the admission cap was
    /// reached, or shutdown began).
    pub fn manage(&mut self, ring: &mut Ring, open: [bool; 2]) -> bool {
        let mut cancelled = false;
        for l in LISTENERS {
            let i = l as usize;
            let open = open[i];
            if open && !self.armed[i] {
                ring.accept_multi(self.listeners[i], pack(Op::Accept, i as u32, 0));
                self.armed[i] = true;
            } else if !open && self.armed[i] && !self.cancelling[i] {
                ring.cancel(pack(Op::Accept, i as u32, 0), pack(Op::Ignore, 0, 0));
                self.cancelling[i] = true;
                cancelled = true;
            }
        }
        cancelled
    }

    /// No accept is armed (so no new connection can arrive).
    pub fn idle(&self) -> bool {
        self.armed == [false, false]
    }
}
