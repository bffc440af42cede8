//! Mail between workers: one mailbox per worker (an unbounded lock-free MPSC channel) and a
//! doorbell (a MSG_RING to the worker's ring) that wakes it.
//!
//! Doorbell protocol (no lost wake-up, at most one wake in flight per worker), written once in
//! [`Wake`] and used by the workers and by the cluster bridge (`crate::cluster::Mailer`):
//! - a sender pushes mail and marks the target; at the end of its loop iteration it swaps the
//!   target's `ringing` flag to true, and only if it was false does it ring the target;
//! - the target, on the doorbell completion, stores false *then* drains its mailbox.
//!
//! So `ringing == true` means a doorbell completion is in flight or unhandled, and any mail
//! pushed after the target's store is either seen by that drain or rings again.
//!
//! Mailboxes are unbounded, but what fills them is bounded elsewhere: each publish connection
//! has at most `publish::PIPELINE_MAX` publishes outstanding, and each publish fans out to the
//! connections logged in as its id. The exception is the cluster bridge: it never waits on a
//! worker, so a stalled worker's mailbox grows with what NATS brings rather than making the
//! node a slow consumer that NATS cuts off.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use comet_router::{ConnRef, Id};

/// Where the answer to a publish goes: a publish connection, and the request's sequence number
/// on it.
#[derive(Clone, Copy, Debug)]
pub struct ReplyTo {
    pub conn: ConnRef,
    pub seq: u32,
}

/// The owner's answer to a login: the id's position, and what the history holds after the
/// client's position (with `gap` when it no longer reaches back that far).
#[derive(Debug)]
pub struct Ack {
    pub pos: u64,
    pub gap: bool,
    pub replay: Vec<(u64, Arc<[u8]>)>,
}

/// Messages between workers.
pub enum Mail {
    /// Log `conn` in as `id` on the owner of `id`, which answers `LoginAck`; `since` is the
    /// client's position for `id`, if it resumes.
    Login {
        id: Id,
        conn: ConnRef,
        since: Option<u64>,
    },
    LoginAck {
        conn: ConnRef,
        id: Id,
        ack: Ack,
    },
    Logout {
        id: Id,
        conn: ConnRef,
    },
    /// A message for `id`, to its owner. `published_us`: when the publish reached comet (the
    /// publish-to-write histogram).
    Publish {
        id: Id,
        msg: Arc<[u8]>,
        reply: ReplyTo,
        published_us: u64,
    },
    /// The owner's count of connections the message was handed to.
    Reply {
        to: ReplyTo,
        connections: u32,
    },
    /// A message for one connection, to the worker that holds it.
    Deliver {
        conn: ConnRef,
        id: Id,
        seq: u64,
        msg: Arc<[u8]>,
        published_us: u64,
    },
    /// Close every connection logged in as `id`, to its owner (`POST /disconnect/<id>`).
    Disconnect {
        id: Id,
        reply: ReplyTo,
    },
    /// Close one connection, to the worker that holds it.
    DisconnectConn {
        conn: ConnRef,
    },
    /// A message for `id` from the cluster, to its owner (from the bridge thread; no reply);
    /// `seq`: its stream sequence on JetStream.
    Remote {
        id: Id,
        msg: Arc<[u8]>,
        seq: Option<u64>,
    },
    /// JetStream: a publish of `to` (a message for `id`) stored or not, from the bridge to the
    /// worker holding the publish connection.
    Stored {
        to: ReplyTo,
        id: Id,
        result: Result<comet_cluster::Stored, comet_cluster::Unstored>,
    },
    /// JetStream: how many connections are logged in as `id`, for a stored publish's answer,
    /// to the owner of `id` (answered by `Reply`).
    Count {
        id: Id,
        reply: ReplyTo,
    },
    /// JetStream: what the stream holds of `id` for the resume of `conn`, from the bridge to
    /// the owner of `id`.
    Fetched {
        id: Id,
        conn: ConnRef,
        result: Option<comet_cluster::Fetched>,
    },
}

/// Every worker's mailbox and doorbell, shared by the workers and the cluster bridge.
pub struct Boxes {
    mailboxes: Vec<Sender<Mail>>,
    ringing: Vec<Padded<AtomicBool>>,
    /// Each worker stores its ring descriptor here before the start barrier.
    ring_fds: Vec<AtomicI32>,
}

#[repr(align(64))]
#[derive(Default)]
struct Padded<T>(T);

impl Boxes {
    /// Mailboxes for `workers` workers, and the receiving end of each.
    pub fn new(workers: usize) -> (Boxes, Vec<Receiver<Mail>>) {
        let (senders, inboxes) = (0..workers).map(|_| std::sync::mpsc::channel()).unzip();
        let boxes = Boxes {
            mailboxes: senders,
            ringing: (0..workers).map(|_| Padded::default()).collect(),
            ring_fds: (0..workers).map(|_| AtomicI32::new(-1)).collect(),
        };
        (boxes, inboxes)
    }

    pub fn workers(&self) -> usize {
        self.mailboxes.len()
    }

    /// Where worker `index`'s doorbell rings (before the workers start).
    pub fn set_ring_fd(&self, index: usize, fd: RawFd) {
        self.ring_fds[index].store(fd, Ordering::Relaxed);
    }

    /// Puts `mail` in `worker`'s mailbox; the caller marks it in its [`Wake`].
    pub fn put(&self, worker: usize, mail: Mail) {
        // A send fails only when the target has stopped (shutdown): nothing to do then.
        let _ = self.mailboxes[worker].send(mail);
    }

    /// On worker `index`'s doorbell completion, before it drains its mailbox.
    pub fn answered(&self, index: usize) {
        self.ringing[index].0.store(false, Ordering::SeqCst);
    }
}

/// The workers to ring at the end of an iteration, each once.
pub struct Wake {
    list: Vec<usize>,
    marked: Vec<bool>,
}

impl Wake {
    pub fn new(workers: usize) -> Wake {
        Wake {
            list: Vec::with_capacity(workers),
            marked: vec![false; workers],
        }
    }

    pub fn mark(&mut self, worker: usize) {
        if !self.marked[worker] {
            self.marked[worker] = true;
            self.list.push(worker);
        }
    }

    /// Rings every marked worker whose doorbell is not ringing already: `ring(fd, worker)`
    /// returns false when the ring could not be submitted, and the flag is put back.
    pub fn flush(&mut self, boxes: &Boxes, mut ring: impl FnMut(RawFd, usize) -> bool) {
        for target in self.list.drain(..) {
            self.marked[target] = false;
            if boxes.ringing[target].0.swap(true, Ordering::SeqCst) {
                continue;
            }
            let fd = boxes.ring_fds[target].load(Ordering::Relaxed);
            if !ring(fd, target) {
                boxes.ringing[target].0.store(false, Ordering::SeqCst);
            }
        }
    }
}

/// A worker's side of the post: its own mailbox and the workers it mailed.
pub struct Post {
    index: usize,
    boxes: Arc<Boxes>,
    inbox: Receiver<Mail>,
    wake: Wake,
}

impl Post {
    pub fn new(index: usize, boxes: Arc<Boxes>, inbox: Receiver<Mail>) -> Post {
        let wake = Wake::new(boxes.workers());
        Post {
            index,
            boxes,
            inbox,
            wake,
        }
    }

    pub fn send(&mut self, worker: usize, mail: Mail) {
        debug_assert_ne!(worker, self.index, "mail to self");
        self.boxes.put(worker, mail);
        self.wake.mark(worker);
    }

    /// The next mail waiting, if any.
    pub fn recv(&mut self) -> Option<Mail> {
        self.inbox.try_recv().ok()
    }

    /// Our doorbell rang: store before draining (see the protocol above).
    pub fn doorbell(&self) {
        self.boxes.answered(self.index);
    }

    /// Our MSG_RING to `target` failed: ring again at the end of this iteration.
    pub fn doorbell_failed(&mut self, target: usize) {
        self.boxes.answered(target);
        self.wake.mark(target);
    }

    /// Rings every other worker at the end of this iteration, mail or not.
    pub fn wake_others(&mut self) {
        for worker in (0..self.boxes.workers()).filter(|&w| w != self.index) {
            self.wake.mark(worker);
        }
    }

    /// End of an iteration: `ring(fd, target)` each worker mailed, once.
    pub fn flush(&mut self, ring: impl FnMut(RawFd, usize) -> bool) {
        self.wake.flush(&self.boxes, ring);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_rung_once_until_it_answers() {
        let (boxes, inboxes) = Boxes::new(3);
        let mut wake = Wake::new(3);
        let mut rung = Vec::new();
        wake.mark(1);
        wake.mark(1);
        wake.mark(2);
        wake.flush(&boxes, |_, t| {
            rung.push(t);
            true
        });
        assert_eq!(rung, [1, 2]);
        // Still ringing: no second doorbell until the target stores false.
        wake.mark(1);
        wake.flush(&boxes, |_, t| {
            rung.push(t);
            true
        });
        assert_eq!(rung, [1, 2]);
        boxes.answered(1);
        wake.mark(1);
        wake.flush(&boxes, |_, t| {
            rung.push(t);
            true
        });
        assert_eq!(rung, [1, 2, 1]);
        drop(inboxes);
    }

    #[test]
    fn a_failed_ring_is_tried_again_at_the_next_flush() {
        let (boxes, _inboxes) = Boxes::new(2);
        let mut wake = Wake::new(2);
        wake.mark(1);
        wake.flush(&boxes, |_, _| false);
        let mut rung = 0;
        wake.mark(1);
        wake.flush(&boxes, |_, _| {
            rung += 1;
            true
        });
        assert_eq!(rung, 1);
    }
}
