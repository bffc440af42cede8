//! What workers share with whoever renders /metrics (`metrics.rs`): the per-worker counters,
//! the cluster bridge's counters, and the allocator's baseline. (Mail between workers is
//! `worker::post`.)

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use crate::metrics::Stats;

pub struct Shared {
    pub stats: Vec<Stats>,
    /// The cluster bridge's counters, when the node is in a cluster.
    pub cluster: Option<Arc<comet_cluster::Stats>>,
    /// The allocator's bytes in use once the server had started, before any connection.
    pub heap_baseline: AtomicU64,
    /// Shutdown: the workers that still have connections. A worker leaves its loop only once
    /// none has: until then it answers the others' mail (a publish's count, a login), which
    /// their last connections may wait for.
    pub busy_workers: AtomicUsize,
}
