//! /metrics: the counters each worker keeps, and the one writer of the Prometheus text format
//! (0.0.4) that renders them together with the cluster bridge's, the process's and the kernel's.
//!
//! Layout: `metrics/stats.rs` (`Counter` and `Gauge`, one worker's values; `CloseReason` and
//! `Transport`, label values; `Histogram`, publish-to-write latency; `Stats`, one worker's set
//! and its recording methods), this file (`render`: a scrape, every family in order),
//! `metrics/text.rs` (`Text`: the writer).
//!
//! Recording stays what it was before this module: a worker writes only its own [`Stats`] (its
//! own cache lines), with a plain load and store, no read-modify-write, no lock, no allocation.
//! A scrape reads every worker's values with `Relaxed` loads and sums what has no `worker`
//! label (the histogram) at render time.
//!
//! Why a small writer of our own and not the `prometheus-client` crate (0.26, the official
//! Rust client). comet could use none of its metric types: its `Counter` is an atomic
//! read-modify-write and its labelled `Family` a map behind a lock, where recording here must
//! stay a plain store on the worker's own line. What would be left is its text encoder behind a
//! custom `Collector` over these atomics, which was measured against [`Text`] rendering the same
//! families for 4 workers (scratch binary, comet's release profile: fat LTO, one codegen unit;
//! the 2-core build machine):
//! - compile: 7 crates comet does not otherwise build (prometheus-client and its derive macro,
//!   dtoa, parking_lot, parking_lot_core, lock_api, scopeguard): 2.4 s more for a clean release
//!   build, and 0.7 s more on every release rebuild of the binary (4.4 s against 3.7 s);
//! - binary: +41 KiB stripped (392,592 B against 350,512 B);
//! - a scrape: 2 allocations against 1 (both render into one buffer: a wash);
//! - output: it writes OpenMetrics only (counters declared without `_total`, a `# EOF`
//!   trailer; client_rust issue #51), so /metrics would have to change its content type, and
//!   `promtool check metrics` reads its text as 18 problems (this writer's: none).
//!
//! [`Text`] writes exactly the subset comet uses (counters, gauges, one histogram; help text and
//! label values escaped) and its test pins the output byte for byte. The histogram is not
//! `hdrhistogram` either: Prometheus wants fixed buckets, and recording must stay two stores.

use std::fmt::Display;
use std::sync::atomic::Ordering::Relaxed;

use crate::memstats::{KernelMem, Process};
use crate::shared::Shared;

mod stats;
mod text;

pub use stats::{CloseReason, Stats};
use stats::{Transport, LATENCY_BOUNDS_US};
use text::{Kind, Text};

/// How a family's samples are read from one worker's [`Stats`].
type Get = fn(&Stats) -> u64;

/// The families with one sample per worker (`worker` label), in the order they are written.
const PER_WORKER: &[(&str, Kind, &str, Get)] = &[
    (
        "comet_connections",
        Kind::Gauge,
        "Open connections (subscribers, publishers, requests in progress).",
        |s| s.connections.get(),
    ),
    (
        "comet_rings",
        Kind::Gauge,
        "io_uring rings the worker drives: each holds up to the open-files limit of sockets in its fixed-file table; more are opened as they fill.",
        |s| s.rings.get(),
    ),
    (
        "comet_ids",
        Kind::Gauge,
        "Logged-in ids in this worker's shard.",
        |s| s.ids.get(),
    ),
    (
        "comet_connections_accepted_total",
        Kind::Counter,
        "Connections accepted.",
        |s| s.accepted.get(),
    ),
    (
        "comet_accept_errors_total",
        Kind::Counter,
        "Failed accepts (ENFILE means a connection was dropped by a full table).",
        |s| s.accept_errors.get(),
    ),
    (
        "comet_accept_paused_total",
        Kind::Counter,
        "Times accepting stopped at the admission cap.",
        |s| s.accept_paused.get(),
    ),
    (
        "comet_requests_total",
        Kind::Counter,
        "HTTP requests handled.",
        |s| s.requests.get(),
    ),
    (
        "comet_bad_requests_total",
        Kind::Counter,
        "Requests answered with a 4xx/5xx error.",
        |s| s.bad_requests.get(),
    ),
    (
        "comet_messages_published_total",
        Kind::Counter,
        "Messages routed by this worker's shard.",
        |s| s.published.get(),
    ),
    (
        "comet_messages_delivered_total",
        Kind::Counter,
        "Messages queued to a subscriber connection of this worker.",
        |s| s.delivered.get(),
    ),
    (
        "comet_messages_dropped_total",
        Kind::Counter,
        "Messages not delivered because their connection was cut as a slow consumer.",
        |s| s.dropped.get(),
    ),
    (
        "comet_messages_dropped_oldest_total",
        Kind::Counter,
        "Queued messages dropped for slow consumers (--slow-consumer drop-oldest).",
        |s| s.dropped_oldest.get(),
    ),
    (
        "comet_stale_deliveries_total",
        Kind::Counter,
        "Messages for connections that closed while the message was on its way.",
        |s| s.stale.get(),
    ),
    (
        "comet_heartbeats_total",
        Kind::Counter,
        "Heartbeats sent to idle streams (SSE comments, WebSocket pings).",
        |s| s.heartbeats.get(),
    ),
    (
        "comet_resume_gaps_total",
        Kind::Counter,
        "Resumes whose position the history no longer reached (the client was told).",
        |s| s.resume_gaps.get(),
    ),
    (
        "comet_resume_catch_up_gaps_total",
        Kind::Counter,
        "JetStream: resumes from a position this node had not reached within 2 s, answered \
         with a gap (part of comet_resume_gaps_total).",
        |s| s.resume_catch_up_gaps.get(),
    ),
    (
        "comet_resume_stream_gaps_total",
        Kind::Counter,
        "JetStream: resumes that needed the stream and could not get it within 10 s (link \
         down, fetches failing), answered from memory with a gap (part of \
         comet_resume_gaps_total).",
        |s| s.resume_stream_gaps.get(),
    ),
    (
        "comet_resumes_queued_total",
        Kind::Counter,
        "Resumes that waited in line for --resume-rate.",
        |s| s.resumes_queued.get(),
    ),
    (
        "comet_resumes_refused_total",
        Kind::Counter,
        "Resumes refused with 503 (the line of --resume-rate was full, or shutdown).",
        |s| s.resumes_refused.get(),
    ),
    (
        "comet_auth_failures_total",
        Kind::Counter,
        "Subscribe requests refused by token (401/403) or origin (403).",
        |s| s.auth_failures.get(),
    ),
    (
        "comet_polls_answered_total",
        Kind::Counter,
        "Long-polls answered (with messages or at the timeout).",
        |s| s.polls_answered.get(),
    ),
    (
        "comet_history_ids",
        Kind::Gauge,
        "Ids with messages in this worker's history.",
        |s| s.history_ids.get(),
    ),
    (
        "comet_history_messages",
        Kind::Gauge,
        "Messages in this worker's history.",
        |s| s.history_messages.get(),
    ),
    (
        "comet_history_bytes",
        Kind::Gauge,
        "Bytes this worker's history holds (payloads and bookkeeping).",
        |s| s.history_bytes.get(),
    ),
    (
        "comet_history_evicted_total",
        Kind::Counter,
        "Messages forgotten before their age (per-id count or --history-bytes-max).",
        |s| s.history_evicted.get(),
    ),
    (
        "comet_write_buffers",
        Kind::Gauge,
        "Write buffers in use (connections with data in flight).",
        |s| s.write_buffers.get(),
    ),
    (
        "comet_write_buffers_kept_bytes",
        Kind::Gauge,
        "Bytes the free write buffers keep for reuse (given back 5-10 s after a burst).",
        |s| s.write_buffers_kept_bytes.get(),
    ),
    (
        "comet_read_buffers_resident_bytes",
        Kind::Gauge,
        "Bytes of the rings' read buffers in memory (read every 5 s; a ring quiet for 5 s gives its pages back).",
        |s| s.read_buffers_resident_bytes.get(),
    ),
    (
        "comet_sq_full_flushes_total",
        Kind::Counter,
        "Times a full submission queue was flushed early (not an error).",
        |s| s.sq_full_flushes.get(),
    ),
];

/// A scrape: the Prometheus text of every family, appended to `out`. Reads the allocator,
/// /proc/self and the kernel's socket figures now (a few small reads).
pub fn render(shared: &Shared, out: &mut Vec<u8>) {
    let heap = comet_ring::sys::heap_in_use();
    let baseline = shared.heap_baseline.load(Relaxed);
    let cluster = shared.cluster.as_ref().map(|c| c.snapshot());
    let kernel = crate::memstats::kernel_snapshot();
    let process = crate::memstats::process_snapshot();
    // About 12 KiB with 4 workers: one allocation, not a growth by doubling.
    out.reserve(16 * 1024);
    write_all(
        &mut Text::new(out),
        &shared.stats,
        cluster.as_ref(),
        heap.map(|h| (h, baseline)),
        &kernel,
        &process,
    );
}

/// Every family, from values already read: the workers' stats, the bridge's snapshot (in a
/// cluster), the heap now and at start-up (when the allocator tells), the kernel's and the
/// process's figures (families whose source was unreadable are left out).
fn write_all(
    t: &mut Text,
    stats: &[Stats],
    cluster: Option<&comet_cluster::Snapshot>,
    heap: Option<(u64, u64)>,
    kernel: &KernelMem,
    process: &Process,
) {
    t.family(
        "comet_build_info",
        Kind::Gauge,
        "Always 1; the labels say which build is running.",
    );
    t.sample(
        "comet_build_info",
        &[("version", &env!("CARGO_PKG_VERSION"))],
        1u64,
    );

    for (name, kind, help, get) in PER_WORKER {
        t.family(name, *kind, help);
        for (w, s) in stats.iter().enumerate() {
            t.sample(name, &[("worker", &w)], get(s));
        }
    }
    t.family(
        "comet_subscribers",
        Kind::Gauge,
        "Connections streaming messages (or waiting in a long-poll), by transport.",
    );
    for (w, s) in stats.iter().enumerate() {
        for transport in Transport::ALL {
            let labels: [(&str, &dyn Display); 2] =
                [("worker", &w), ("transport", &transport.label())];
            t.sample(
                "comet_subscribers",
                &labels,
                s.subscribers[transport as usize].get(),
            );
        }
    }
    t.family(
        "comet_connections_closed_total",
        Kind::Counter,
        "Connections closed, by the reason the server ended them (see the README).",
    );
    for (w, s) in stats.iter().enumerate() {
        for reason in CloseReason::ALL {
            let labels: [(&str, &dyn Display); 2] = [("worker", &w), ("reason", &reason.label())];
            let closed = s.closed[reason as usize].get();
            t.sample("comet_connections_closed_total", &labels, closed);
        }
    }

    // One histogram for the node: the workers' buckets summed.
    let mut buckets = [0u64; LATENCY_BOUNDS_US.len() + 1];
    let mut sum_us = 0u64;
    for s in stats {
        for (total, bucket) in buckets.iter_mut().zip(&s.publish_to_write.buckets) {
            *total += bucket.get();
        }
        sum_us += s.publish_to_write.sum_us.get();
    }
    t.histogram(
        "comet_publish_to_write_seconds",
        "From a publish reaching comet to its message framed for a subscriber (live messages; \
         resolution: one loop iteration).",
        &LATENCY_BOUNDS_US.map(|us| us as f64 / 1e6),
        &buckets,
        sum_us as f64 / 1e6,
    );

    if let Some(c) = cluster {
        let families: [(&str, Kind, &str, u64); 12] = [
            (
                "comet_cluster_connected",
                Kind::Gauge,
                "1 while the NATS link is up and subscribed.",
                u64::from(c.connected),
            ),
            (
                "comet_cluster_reconnects_total",
                Kind::Counter,
                "Connections to NATS after the first.",
                c.reconnects,
            ),
            (
                "comet_cluster_messages_in_total",
                Kind::Counter,
                "Messages received from NATS and handed to a worker.",
                c.messages_in,
            ),
            (
                "comet_cluster_messages_out_total",
                Kind::Counter,
                "Messages published to NATS for the other nodes.",
                c.messages_out,
            ),
            (
                "comet_cluster_publish_failed_total",
                Kind::Counter,
                "Publishes the cluster did not take: core NATS, delivered locally only (link down \
                 or queue full); JetStream, answered 503 (not stored).",
                c.publish_failed,
            ),
            (
                "comet_cluster_slow_consumer_total",
                Kind::Counter,
                "Times NATS messages were dropped because the bridge fell behind.",
                c.slow_consumer,
            ),
            (
                "comet_cluster_bad_subjects_total",
                Kind::Counter,
                "Messages on a subject that is not <prefix>.user.<id>.",
                c.bad_subjects,
            ),
            (
                "comet_cluster_stream_head",
                Kind::Gauge,
                "JetStream: the stream seq of the last message handed to the workers.",
                c.head,
            ),
            (
                "comet_cluster_stored_total",
                Kind::Counter,
                "JetStream: publishes the stream acknowledged (answered 200).",
                c.stored,
            ),
            (
                "comet_cluster_duplicates_total",
                Kind::Counter,
                "JetStream: stored publishes whose Idempotency-Key the stream had already.",
                c.duplicates,
            ),
            (
                "comet_cluster_fetches_total",
                Kind::Counter,
                "JetStream: resumes answered with messages fetched from the stream.",
                c.fetches,
            ),
            (
                "comet_cluster_fetch_failed_total",
                Kind::Counter,
                "JetStream: fetches that could not be asked or answered (the resume waits for the link, up to 10 s, then gets a gap).",
                c.fetch_failed,
            ),
        ];
        for (name, kind, help, value) in families {
            t.single(name, kind, help, value);
        }
    }

    // Memory: the parts, never a ratio (a ratio of sums cannot be aggregated or graphed over
    // other windows); per connection is (comet_heap_bytes - comet_heap_baseline_bytes) /
    // sum(comet_connections).
    if let Some((heap, baseline)) = heap {
        t.single(
            "comet_heap_bytes",
            Kind::Gauge,
            "Bytes the allocator has handed out and not freed (glibc mallinfo2 uordblks + hblkhd).",
            heap,
        );
        t.single(
            "comet_heap_baseline_bytes",
            Kind::Gauge,
            "comet_heap_bytes once the server had started, before any connection.",
            baseline,
        );
    }
    let kernel_families = [
        (
            "comet_kernel_tcp_sockets",
            "TCP sockets in use in this network namespace, all processes (sockstat inuse, \
             IPv4 + IPv6).",
            kernel.tcp_sockets,
        ),
        (
            "comet_kernel_tcp_buffer_bytes",
            "Bytes charged to TCP socket buffers, machine-wide (sockstat TCP mem pages x page \
             size).",
            kernel.tcp_buffer_bytes,
        ),
        (
            "comet_kernel_socket_slab_bytes",
            "Bytes of the TCP, TCPv6 and sock_inode_cache slab caches, machine-wide (needs root).",
            kernel.slab_bytes,
        ),
    ];
    for (name, help, value) in kernel_families {
        if let Some(value) = value {
            t.single(name, Kind::Gauge, help, value);
        }
    }

    // The standard process families (the names every Prometheus client library exports).
    if let Some(v) = process.cpu_seconds {
        t.single(
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
            v,
        );
    }
    let process_gauges = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            process.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            process.virtual_bytes,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors (sockets in io_uring fixed-file tables are not \
             among them: see comet_connections).",
            process.open_fds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors (the soft RLIMIT_NOFILE).",
            process.max_fds,
        ),
    ];
    for (name, help, value) in process_gauges {
        if let Some(value) = value {
            t.single(name, Kind::Gauge, help, value);
        }
    }
    if let Some(v) = process.start_time_seconds {
        t.single(
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
            v,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comet_http as http;

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn every_family_from_given_values() {
        let stats: Vec<Stats> = (0..2).map(|_| Stats::default()).collect();
        stats[0].closed(CloseReason::Eof);
        stats[1].closed(CloseReason::Eof);
        stats[1].closed(CloseReason::SlowConsumer);
        stats[1].subscribed(http::Format::Ws);
        stats[0].delivered(Some(100), 120);
        stats[1].delivered(Some(100), 400);
        let cluster = comet_cluster::Snapshot {
            connected: true,
            reconnects: 2,
            ..Default::default()
        };
        let kernel = KernelMem {
            tcp_sockets: Some(7),
            tcp_buffer_bytes: None,
            slab_bytes: Some(4096),
        };
        let process = Process {
            cpu_seconds: Some(1.5),
            resident_bytes: Some(1 << 20),
            ..Default::default()
        };
        let mut out = Vec::new();
        write_all(
            &mut Text::new(&mut out),
            &stats,
            Some(&cluster),
            Some((3000, 1000)),
            &kernel,
            &process,
        );
        let text = std::str::from_utf8(&out).unwrap();
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            sample(text, &format!("comet_build_info{{version=\"{version}\"}}")),
            Some("1")
        );
        assert_eq!(
            sample(
                text,
                r#"comet_connections_closed_total{worker="1",reason="eof"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                text,
                r#"comet_connections_closed_total{worker="1",reason="slow_consumer"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(text, r#"comet_subscribers{worker="1",transport="ws"}"#),
            Some("1")
        );
        assert_eq!(
            sample(text, r#"comet_subscribers{worker="0",transport="ws"}"#),
            Some("0")
        );
        assert_eq!(
            sample(
                text,
                r#"comet_publish_to_write_seconds_bucket{le="0.000025"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(text, r#"comet_publish_to_write_seconds_bucket{le="+Inf"}"#),
            Some("2")
        );
        assert_eq!(
            sample(text, "comet_publish_to_write_seconds_count"),
            Some("2")
        );
        assert_eq!(
            sample(text, "comet_publish_to_write_seconds_sum"),
            Some("0.00032")
        );
        assert_eq!(sample(text, "comet_cluster_connected"), Some("1"));
        assert_eq!(sample(text, "comet_cluster_reconnects_total"), Some("2"));
        assert_eq!(sample(text, "comet_heap_bytes"), Some("3000"));
        assert_eq!(sample(text, "comet_heap_baseline_bytes"), Some("1000"));
        assert_eq!(sample(text, "comet_kernel_tcp_sockets"), Some("7"));
        assert_eq!(sample(text, "comet_kernel_socket_slab_bytes"), Some("4096"));
        assert_eq!(sample(text, "process_cpu_seconds_total"), Some("1.5"));
        assert_eq!(
            sample(text, "process_resident_memory_bytes"),
            Some("1048576")
        );
        // What could not be read is left out, not written as 0.
        assert!(!text.contains("comet_kernel_tcp_buffer_bytes"), "{text}");
        assert!(!text.contains("process_open_fds"), "{text}");
        // Every sample's family is declared once, before it.
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(declared.insert(name.to_owned()), "{name} twice");
            } else if !line.starts_with('#') {
                let series = line.split([' ', '{']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| series.strip_suffix(s).filter(|f| declared.contains(*f)))
                    .unwrap_or(series);
                assert!(declared.contains(family), "{series} undeclared");
            }
        }
        assert!(text.ends_with('\n'));
    }
}
