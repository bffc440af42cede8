//! What workers share with whoever renders /metrics (`metrics.rs`): the per-worker counters,
//! the cluster bridge's counters, and the allocator's baseline. (Mail between workers is
//! `worker::post`.)

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::metrics::Stats;

pub struct Shared {
    pub stats: Vec<Stats>,
    /// The cluster bridge's counters, when the node is in a cluster.
    pub cluster: Option<Arc<comet_cluster::Stats>>,
    /// The allocator's bytes in use once the server had started, before any connection.
    pub heap_baseline: AtomicU64,
}
