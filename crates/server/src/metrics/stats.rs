//! One worker's counters and how it records into them: a plain load and store on its own
//! cache lines (see the module above for why), and the label values they are kept by.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use comet_http as http;

/// A monotonic count only its worker writes: a plain load and store (no `lock` prefix, no
/// contention); /metrics reads it from another thread.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed) + n, Relaxed);
    }
    /// Mirrors a count kept elsewhere (the ring's, the history's).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down, written only by its worker.
#[derive(Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
    #[inline]
    pub fn inc(&self) {
        self.set(self.get() + 1);
    }
    #[inline]
    pub fn dec(&self) {
        self.set(self.get() - 1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Why a connection ended: the `reason` label of `comet_connections_closed_total`. Each
/// connection is counted once, when the server decides that it ends: at once
/// (`Worker::close_conn`), or when it begins to send its last bytes (`Worker::enter_draining`;
/// its close later counts nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed or hung up: a read of 0 bytes, a hang-up seen while watching a stream,
    /// a WebSocket close frame, a publisher's end of input (once its answers are sent).
    Eof,
    /// The server sent a last answer and closed: a HEAD, OPTIONS or demo-page request, a
    /// long-poll without keep-alive, a publish request with `Connection: close` or refused
    /// (the publish listener's 4xx count here, not in `protocol`).
    Answered,
    /// A socket error: a failed read, send or watch.
    Error,
    /// The client broke the protocol: a subscribe request refused with 4xx (bad input, token,
    /// origin, unknown path), a bad WebSocket frame (close 1002/1003/1007/1009), bytes after a
    /// stream's request.
    Protocol,
    /// A deadline passed: a request not complete in time (408), an idle publish connection
    /// (`--idle-timeout-ms`), a kept-alive long-poll connection with no next poll.
    Timeout,
    /// A subscriber that stopped reading: cut at its queue bound (`--slow-consumer disconnect`),
    /// or its socket could not take a heartbeat.
    SlowConsumer,
    /// `POST /disconnect/<id>`.
    Disconnect,
    /// SIGINT or SIGTERM.
    Shutdown,
    /// The subscriber's token expired (`exp`): the stream ended (SSE `event: expired`,
    /// WebSocket close 4001) or the long-poll was answered 401.
    Expired,
}

impl CloseReason {
    pub const ALL: [CloseReason; 9] = [
        CloseReason::Eof,
        CloseReason::Answered,
        CloseReason::Error,
        CloseReason::Protocol,
        CloseReason::Timeout,
        CloseReason::SlowConsumer,
        CloseReason::Disconnect,
        CloseReason::Shutdown,
        CloseReason::Expired,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Eof => "eof",
            CloseReason::Answered => "answered",
            CloseReason::Error => "error",
            CloseReason::Protocol => "protocol",
            CloseReason::Timeout => "timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Disconnect => "disconnect",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Expired => "expired",
        }
    }

    /// The reason a watched stream ends, from its readiness poll's result: an error, a hang-up
    /// (the client closed), or readable without a hang-up (the client sent bytes on a one-way
    /// stream).
    pub fn of_watch(result: i32) -> CloseReason {
        if result < 0 || result & i32::from(libc::POLLERR) != 0 {
            CloseReason::Error
        } else if result & i32::from(libc::POLLRDHUP | libc::POLLHUP) != 0 {
            CloseReason::Eof
        } else {
            CloseReason::Protocol
        }
    }
}

/// How a subscriber receives messages: the `transport` label of `comet_subscribers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `/test/<id>`: the seed's chunked HTML text (or raw, for HTTP/1.0).
    Test,
    /// `/events/<id>`: Server-Sent Events.
    Sse,
    /// `/ws/<id>`: WebSocket.
    Ws,
    /// `/poll/<id>`: long-poll.
    Poll,
}

impl Transport {
    pub const ALL: [Transport; 4] = [
        Transport::Test,
        Transport::Sse,
        Transport::Ws,
        Transport::Poll,
    ];

    pub fn of(format: http::Format) -> Transport {
        match format {
            http::Format::Chunked | http::Format::Raw => Transport::Test,
            http::Format::Sse | http::Format::SseRaw => Transport::Sse,
            http::Format::Ws => Transport::Ws,
            http::Format::Poll => Transport::Poll,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Transport::Test => "test",
            Transport::Sse => "sse",
            Transport::Ws => "ws",
            Transport::Poll => "poll",
        }
    }
}

/// Upper bounds of `comet_publish_to_write_seconds`, in microseconds: 1, 2.5, 5 per decade
/// from 10 µs (one loop iteration that routes and frames locally) to 1 s (something stuck).
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000,
];

const _: () = {
    let mut i = 1;
    while i < LATENCY_BOUNDS_US.len() {
        assert!(
            LATENCY_BOUNDS_US[i - 1] < LATENCY_BOUNDS_US[i],
            "bounds ascend"
        );
        i += 1;
    }
};

/// A latency histogram with the fixed [`LATENCY_BOUNDS_US`], written by one worker.
#[derive(Default)]
pub struct Histogram {
    /// Observations per bucket, not cumulative: bucket `i` holds values in
    /// `(bound[i-1], bound[i]]`, the last one those above every bound. Cumulated when rendered.
    pub(super) buckets: [Counter; LATENCY_BOUNDS_US.len() + 1],
    pub(super) sum_us: Counter,
}

impl Histogram {
    #[inline]
    pub fn observe_us(&self, us: u64) {
        let bucket = LATENCY_BOUNDS_US.partition_point(|&bound| bound < us);
        self.buckets[bucket].add(1);
        self.sum_us.add(us);
    }
}

/// Counters of one worker, written only by that worker and read by whoever renders /metrics.
/// On its own cache lines, so that no two workers write one line.
#[derive(Default)]
#[repr(align(64))]
pub struct Stats {
    pub connections: Gauge,
    /// io_uring rings (fixed-file tables) the worker has opened.
    pub rings: Gauge,
    /// Indexed by `Transport as usize`.
    pub(super) subscribers: [Gauge; Transport::ALL.len()],
    pub ids: Gauge,
    pub accepted: Counter,
    /// Indexed by `CloseReason as usize`.
    pub(super) closed: [Counter; CloseReason::ALL.len()],
    pub accept_errors: Counter,
    pub accept_paused: Counter,
    pub requests: Counter,
    pub bad_requests: Counter,
    pub published: Counter,
    pub(super) delivered: Counter,
    pub dropped: Counter,
    pub stale: Counter,
    pub write_buffers: Gauge,
    pub write_buffers_kept_bytes: Gauge,
    pub read_buffers_resident_bytes: Gauge,
    pub sq_full_flushes: Counter,
    pub dropped_oldest: Counter,
    pub heartbeats: Counter,
    pub resume_gaps: Counter,
    pub resume_catch_up_gaps: Counter,
    pub resume_stream_gaps: Counter,
    pub resumes_queued: Counter,
    pub resumes_refused: Counter,
    pub auth_failures: Counter,
    pub polls_answered: Counter,
    pub history_ids: Gauge,
    pub history_messages: Gauge,
    pub history_bytes: Gauge,
    pub history_evicted: Counter,
    pub(super) publish_to_write: Histogram,
}

impl Stats {
    pub fn closed(&self, reason: CloseReason) {
        self.closed[reason as usize].add(1);
    }

    /// Connections closed for every reason: with `accepted`, the pair that must balance once
    /// a worker has no connection left.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().map(Counter::get).sum()
    }

    pub fn subscribed(&self, format: http::Format) {
        self.subscribers[Transport::of(format) as usize].inc();
    }

    pub fn unsubscribed(&self, format: http::Format) {
        self.subscribers[Transport::of(format) as usize].dec();
    }

    /// A message framed for one subscriber at `now_us`. `published_us` is when its publish
    /// reached comet (`Worker::unix_us` of the worker that took it); `None` for a replay from
    /// the history, whose age says nothing about delivery latency.
    #[inline]
    pub fn delivered(&self, published_us: Option<u64>, now_us: u64) {
        self.delivered.add(1);
        if let Some(published_us) = published_us {
            // Workers' clocks may differ by a little: a negative latency counts as 0.
            self.observe_publish_to_write_us(now_us.saturating_sub(published_us));
        }
    }

    /// Messages framed from the history (a resume's replay): delivered, but their age says
    /// nothing about delivery latency.
    pub fn replayed(&self, n: u64) {
        self.delivered.add(n);
    }

    #[inline]
    pub fn observe_publish_to_write_us(&self, us: u64) {
        self.publish_to_write.observe_us(us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds() {
        let h = Histogram::default();
        for us in [0, 10, 11, 1_000_000, 1_000_001, u64::MAX / 2] {
            h.observe_us(us);
        }
        let counts: Vec<u64> = h.buckets.iter().map(Counter::get).collect();
        assert_eq!(counts[0], 2, "0 and 10 are <= 10 µs");
        assert_eq!(counts[1], 1, "11 µs");
        assert_eq!(counts[LATENCY_BOUNDS_US.len() - 1], 1, "1 s is <= 1 s");
        assert_eq!(counts[LATENCY_BOUNDS_US.len()], 2, "above every bound");
        assert_eq!(counts.iter().sum::<u64>(), 6);
    }

    #[test]
    fn delivered_records_live_messages_only() {
        let s = Stats::default();
        s.delivered(None, 5_000_000);
        s.delivered(Some(4_999_970), 5_000_000);
        // A publisher's clock a little ahead of the subscriber's: 0, not an underflow.
        s.delivered(Some(5_000_100), 5_000_000);
        assert_eq!(s.delivered.get(), 3);
        let counts: Vec<u64> = s
            .publish_to_write
            .buckets
            .iter()
            .map(Counter::get)
            .collect();
        assert_eq!(counts[0], 1, "0 µs");
        assert_eq!(counts[2], 1, "30 µs is in (25, 50]");
        assert_eq!(counts.iter().sum::<u64>(), 2);
        assert_eq!(s.publish_to_write.sum_us.get(), 30);
    }

    #[test]
    fn watch_results() {
        let r = |bits: libc::c_short| i32::from(bits);
        assert_eq!(CloseReason::of_watch(-libc::ECONNRESET), CloseReason::Error);
        assert_eq!(
            CloseReason::of_watch(r(libc::POLLIN | libc::POLLERR)),
            CloseReason::Error
        );
        assert_eq!(
            CloseReason::of_watch(r(libc::POLLIN | libc::POLLRDHUP)),
            CloseReason::Eof
        );
        assert_eq!(CloseReason::of_watch(r(libc::POLLHUP)), CloseReason::Eof);
        assert_eq!(
            CloseReason::of_watch(r(libc::POLLIN)),
            CloseReason::Protocol
        );
    }

    #[test]
    fn stats_fit_their_cache_lines() {
        assert_eq!(std::mem::align_of::<Stats>(), 64);
    }
}
