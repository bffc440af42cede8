//! What workers share: one mailbox per worker (an unbounded lock-free MPSC channel), the
//! doorbell flags that decide when a MSG_RING wake is needed, the rings' descriptors, and the
//! per-worker counters that /metrics reads (`metrics.rs`).
//!
//! Doorbell protocol (no lost wake-up, at most one wake in flight per worker):
//! - a sender pushes mail, then at the end of its loop iteration swaps the target's `ringing`
//!   flag to true; only if it was false does it submit a MSG_RING to the target's ring;
//! - the target, on the doorbell completion, stores false *then* drains its mailbox.
//!
//! So `ringing == true` means a doorbell completion is in flight or unhandled, and any mail
//! pushed after the target's store is either seen by that drain or rings again.
//!
//! Mailboxes are unbounded, but what fills them is bounded elsewhere: each publish connection
//! has at most `PIPELINE_MAX` publishes outstanding, and each publish fans out to the
//! connections logged in as its id. The exception is the cluster bridge (`cluster.rs`): it
//! never waits on a worker, so a stalled worker's mailbox grows with what NATS brings rather
//! than making the node a slow consumer that NATS cuts off.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use comet_router::{ConnRef, Id};

use crate::metrics::Stats;

/// Where the answer to a publish goes: a publish connection, and the request's sequence number
/// on it.
#[derive(Clone, Copy, Debug)]
pub struct ReplyTo {
    pub conn: ConnRef,
    pub seq: u32,
}

/// The owner's answer to a login: the id's position, and what the history holds after the
/// client's position (with `gap` when it no longer reaches back that far).
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
    /// publish connection's worker's `unix_us`), for `comet_publish_to_write_seconds`.
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
    /// A message for one connection, to the worker that holds it (`published_us` as in
    /// `Publish`).
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
    /// A message for `id` from the cluster, to its owner (from the bridge thread; no reply).
    /// Its latency is measured from the owner's drain of the mailbox: the bridge has no
    /// worker clock.
    Remote {
        id: Id,
        msg: Arc<[u8]>,
    },
}

pub struct Shared {
    pub mailboxes: Vec<Sender<Mail>>,
    pub ringing: Vec<Padded<AtomicBool>>,
    /// Each worker stores its ring descriptor here before the start barrier.
    pub ring_fds: Vec<AtomicI32>,
    pub stats: Vec<Stats>,
    /// The cluster bridge's counters, when the node is in a cluster.
    pub cluster: Option<Arc<comet_cluster::Stats>>,
    /// The allocator's bytes in use once the server had started, before any connection.
    pub heap_baseline: AtomicU64,
}

#[repr(align(64))]
#[derive(Default)]
pub struct Padded<T>(pub T);
