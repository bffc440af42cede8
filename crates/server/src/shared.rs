//! What workers share with whoever renders /metrics: the per-worker counters, the cluster
//! bridge's counters, and the allocator's baseline. (Mail between workers is `worker::post`.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counters of one worker, written only by that worker (so plain load + store, no atomic
/// read-modify-write) and read by whoever renders /metrics. On its own cache line.
#[derive(Default)]
#[repr(align(64))]
pub struct Stats {
    pub connections: AtomicU64,
    pub subscribers: AtomicU64,
    pub ids: AtomicU64,
    pub accepted: AtomicU64,
    pub closed: AtomicU64,
    pub accept_errors: AtomicU64,
    pub accept_paused: AtomicU64,
    pub requests: AtomicU64,
    pub bad_requests: AtomicU64,
    pub timeouts: AtomicU64,
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub slow_disconnects: AtomicU64,
    pub dropped: AtomicU64,
    pub stale: AtomicU64,
    pub write_buffers: AtomicU64,
    pub sq_full_flushes: AtomicU64,
    pub dropped_oldest: AtomicU64,
    pub heartbeats: AtomicU64,
    pub resume_gaps: AtomicU64,
    pub auth_failures: AtomicU64,
    pub ws_close_errors: AtomicU64,
    pub polls_answered: AtomicU64,
    pub history_ids: AtomicU64,
    pub history_messages: AtomicU64,
    pub history_bytes: AtomicU64,
    pub history_evicted: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
    pub fn set(counter: &AtomicU64, v: u64) {
        counter.store(v, Ordering::Relaxed);
    }
}

pub struct Shared {
    pub stats: Vec<Stats>,
    /// The cluster bridge's counters, when the node is in a cluster.
    pub cluster: Option<Arc<comet_cluster::Stats>>,
    /// The allocator's bytes in use once the server had started, before any connection.
    pub heap_baseline: AtomicU64,
}

impl Shared {
    /// Renders the Prometheus text exposition of every worker's counters.
    pub fn render_metrics(&self, out: &mut Vec<u8>) {
        use std::fmt::Write;
        let mut s = String::with_capacity(4096);
        type Get = fn(&Stats) -> &AtomicU64;
        let families: &[(&str, &str, &str, Get)] = &[
            (
                "comet_connections",
                "gauge",
                "Open connections (subscribers, publishers, requests in progress).",
                |s| &s.connections,
            ),
            (
                "comet_subscribers",
                "gauge",
                "Connections streaming messages.",
                |s| &s.subscribers,
            ),
            (
                "comet_ids",
                "gauge",
                "Logged-in ids in this worker's shard.",
                |s| &s.ids,
            ),
            (
                "comet_connections_accepted_total",
                "counter",
                "Connections accepted.",
                |s| &s.accepted,
            ),
            (
                "comet_connections_closed_total",
                "counter",
                "Connections closed.",
                |s| &s.closed,
            ),
            (
                "comet_accept_errors_total",
                "counter",
                "Failed accepts (ENFILE means a connection was dropped by a full table).",
                |s| &s.accept_errors,
            ),
            (
                "comet_accept_paused_total",
                "counter",
                "Times accepting stopped at the admission cap.",
                |s| &s.accept_paused,
            ),
            (
                "comet_requests_total",
                "counter",
                "HTTP requests handled.",
                |s| &s.requests,
            ),
            (
                "comet_bad_requests_total",
                "counter",
                "Requests answered with a 4xx/5xx error.",
                |s| &s.bad_requests,
            ),
            (
                "comet_request_timeouts_total",
                "counter",
                "Connections closed for an incomplete request or idleness.",
                |s| &s.timeouts,
            ),
            (
                "comet_messages_published_total",
                "counter",
                "Messages routed by this worker's shard.",
                |s| &s.published,
            ),
            (
                "comet_messages_delivered_total",
                "counter",
                "Messages queued to a subscriber connection of this worker.",
                |s| &s.delivered,
            ),
            (
                "comet_messages_dropped_total",
                "counter",
                "Messages not delivered because their connection was cut as a slow consumer.",
                |s| &s.dropped,
            ),
            (
                "comet_slow_disconnects_total",
                "counter",
                "Subscribers disconnected as slow consumers (--slow-consumer disconnect).",
                |s| &s.slow_disconnects,
            ),
            (
                "comet_messages_dropped_oldest_total",
                "counter",
                "Queued messages dropped for slow consumers (--slow-consumer drop-oldest).",
                |s| &s.dropped_oldest,
            ),
            (
                "comet_heartbeats_total",
                "counter",
                "Heartbeats sent to idle streams (SSE comments, WebSocket pings).",
                |s| &s.heartbeats,
            ),
            (
                "comet_resume_gaps_total",
                "counter",
                "Resumes whose position the history no longer reached (the client was told).",
                |s| &s.resume_gaps,
            ),
            (
                "comet_auth_failures_total",
                "counter",
                "Subscribe requests refused by token (401/403) or origin (403).",
                |s| &s.auth_failures,
            ),
            (
                "comet_websocket_protocol_errors_total",
                "counter",
                "WebSocket connections closed for a bad client frame (1002/1003/1007/1009).",
                |s| &s.ws_close_errors,
            ),
            (
                "comet_polls_answered_total",
                "counter",
                "Long-polls answered (with messages or at the timeout).",
                |s| &s.polls_answered,
            ),
            (
                "comet_history_ids",
                "gauge",
                "Ids with messages in this worker's history.",
                |s| &s.history_ids,
            ),
            (
                "comet_history_messages",
                "gauge",
                "Messages in this worker's history.",
                |s| &s.history_messages,
            ),
            (
                "comet_history_bytes",
                "gauge",
                "Bytes this worker's history holds (payloads and bookkeeping).",
                |s| &s.history_bytes,
            ),
            (
                "comet_history_evicted_total",
                "counter",
                "Messages forgotten before their age (per-id count or --history-bytes-max).",
                |s| &s.history_evicted,
            ),
            (
                "comet_stale_deliveries_total",
                "counter",
                "Messages for connections that closed while the message was on its way.",
                |s| &s.stale,
            ),
            (
                "comet_write_buffers",
                "gauge",
                "Write buffers in use (connections with data in flight).",
                |s| &s.write_buffers,
            ),
            (
                "comet_sq_full_flushes_total",
                "counter",
                "Times a full submission queue was flushed early (not an error).",
                |s| &s.sq_full_flushes,
            ),
        ];
        for (name, kind, help, get) in families {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (w, stats) in self.stats.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "{name}{{worker=\"{w}\"}} {}",
                    get(stats).load(Ordering::Relaxed)
                );
            }
        }
        if let Some(cluster) = &self.cluster {
            cluster.render(&mut s);
        }
        let connections: u64 = self
            .stats
            .iter()
            .map(|s| s.connections.load(Ordering::Relaxed))
            .sum();
        crate::memstats::render(
            &mut s,
            comet_ring::sys::heap_in_use(),
            self.heap_baseline.load(Ordering::Relaxed),
            connections,
            &crate::memstats::kernel_snapshot(),
        );
        let rss = crate::rss_bytes().unwrap_or(0);
        let _ = writeln!(
            s,
            "# HELP comet_process_resident_memory_bytes Resident set size of the process.\n# TYPE comet_process_resident_memory_bytes gauge\ncomet_process_resident_memory_bytes {rss}"
        );
        out.extend_from_slice(s.as_bytes());
    }
}
