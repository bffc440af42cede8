//! /metrics as a scraper sees it, on the real binary: the families' names and labels, and
//! that they move with what clients do.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{
    closed, error_for, eventually, get, metrics, post, samples, seed_msg, subscribe, total_where,
    Client, Publisher, Server,
};

const ID: u64 = 7;
const WORKERS: usize = 2;
const TRANSPORTS: [&str; 4] = ["test", "sse", "ws", "poll"];
const REASONS: [&str; 9] = [
    "eof",
    "answered",
    "error",
    "protocol",
    "timeout",
    "slow_consumer",
    "disconnect",
    "shutdown",
    "expired",
];
const LATENCY: &str = "comet_publish_to_write_seconds";

/// The sample of an unlabelled family, as a float (`process_*` and `_sum` have fractions).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

fn subscribers(text: &str, transport: &str) -> u64 {
    total_where(text, "comet_subscribers", "transport", transport)
}

fn delivered(text: &str) -> u64 {
    common::total(text, "comet_messages_delivered_total")
}

/// A WebSocket subscriber on a raw connection, its handshake answer consumed.
fn ws_subscribe(server: &Server, path: &str) -> Client {
    let mut client = Client::connect(server.public);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: comet.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    client.write(request.as_bytes());
    assert_eq!(client.read_head().status, 101);
    client
}

/// The next server frame's payload (unmasked, under 126 bytes: what this test publishes).
fn ws_text(client: &mut Client) -> String {
    let header = client.read_exact(2);
    assert_eq!(header[0], 0x81, "a final text frame");
    assert!(header[1] < 126, "a short frame");
    String::from_utf8(client.read_exact(usize::from(header[1]))).unwrap()
}

/// Checks the histogram's shape: cumulative buckets ending at `+Inf` = `_count`; returns
/// `_count`.
fn latency_count(text: &str) -> u64 {
    let buckets = samples(text, &format!("{LATENCY}_bucket"));
    assert_eq!(buckets.len(), 17, "16 bounds and +Inf:\n{text}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    let (last_le, last) = buckets.last().unwrap();
    assert_eq!(last_le, "le=\"+Inf\"");
    assert_eq!(buckets[0].0, "le=\"0.00001\"");
    assert_eq!(buckets[15].0, "le=\"1\"");
    let count = value(text, &format!("{LATENCY}_count")) as u64;
    assert_eq!(*last, count);
    assert!(value(text, &format!("{LATENCY}_sum")) >= 0.0);
    count
}

/// Build info and the `process_*` figures: present and sane.
fn check_process(text: &str) {
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(text, &format!("comet_build_info{{version=\"{version}\"}}")),
        1.0
    );
    assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
    assert!(value(text, "process_cpu_seconds_total") >= 0.0);
    let resident = value(text, "process_resident_memory_bytes");
    assert!(resident > f64::from(1 << 20), "{resident}");
    assert!(value(text, "process_virtual_memory_bytes") >= resident);
    let open = value(text, "process_open_fds");
    assert!(open >= 3.0, "{open}");
    assert!(value(text, "process_max_fds") >= open);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = value(text, "process_start_time_seconds");
    // Started before this scrape (boot time is in whole seconds), within the test's time.
    assert!(
        start <= now + 1.0 && start > now - 600.0,
        "{start} vs {now}"
    );
}

/// 1. Scrape: build info and process figures are there; every worker has a sample for every
///    transport and every reason, all 0.
/// 2. Subscribe with the seed format, SSE and WebSocket: each transport's gauge counts one.
/// 3. Publish three messages; each subscriber reads them; the histogram counted each framed
///    message (9), as many as `comet_messages_delivered_total` moved.
/// 4. End connections in three ways: the SSE client hangs up (`eof`), `POST /disconnect/7`
///    ends the other two (`disconnect`), a request for an unknown path (`protocol`).
/// 5. The gauges are back to 0 and each reason moved by exactly that; the process's start time
///    did not move and its CPU time did not go back.
#[test]
fn families_appear_and_move() {
    let server = Server::start(&["--workers", &WORKERS.to_string()]);

    // 1.
    let before = metrics(&server);
    check_process(&before);
    assert_eq!(samples(&before, "comet_subscribers").len(), WORKERS * 4);
    for transport in TRANSPORTS {
        assert_eq!(subscribers(&before, transport), 0, "{transport}");
    }
    assert_eq!(
        samples(&before, "comet_connections_closed_total").len(),
        WORKERS * REASONS.len()
    );
    for reason in REASONS {
        assert!(
            before.contains(&format!("reason=\"{reason}\"")),
            "no {reason} in:\n{before}"
        );
    }
    assert_eq!(latency_count(&before), 0);

    // 2.
    let mut test = subscribe(server.public, &format!("/test/{ID}"));
    let mut sse = subscribe(server.public, &format!("/events/{ID}"));
    sse.expect_position();
    let mut ws = ws_subscribe(&server, &format!("/ws/{ID}"));
    assert!(ws_text(&mut ws).starts_with("{\"since\":"), "the position");
    let streaming = metrics(&server);
    for (transport, n) in [("test", 1), ("sse", 1), ("ws", 1), ("poll", 0)] {
        assert_eq!(subscribers(&streaming, transport), n, "{transport}");
    }

    // 3.
    let mut publisher = Publisher::connect(&server);
    for i in 1..=3 {
        let msg = format!("m{i}");
        assert_eq!(publisher.send(ID, &msg), 3);
        test.expect_chunk(&seed_msg(i, &msg));
        assert_eq!(sse.next_event().unwrap().data.as_deref(), Some(&msg[..]));
        assert!(ws_text(&mut ws).contains(&format!("\"data\":\"{msg}\"")));
    }
    let published = metrics(&server);
    assert_eq!(latency_count(&published), 9, "{published}");
    assert_eq!(delivered(&published) - delivered(&before), 9);

    // 4.
    let ends = |text: &str| REASONS.map(|reason| closed(text, reason));
    let ended_before = ends(&published);
    drop(sse);
    eventually("the SSE hang-up is counted", || {
        closed(&metrics(&server), "eof") == ended_before[0] + 1
    });
    publisher
        .client
        .write(&post(&format!("/disconnect/{ID}"), b""));
    let answer = publisher.client.read_response();
    assert_eq!(
        answer.text(),
        format!("{{\"id\":{ID},\"connections\":2}}\n")
    );
    assert_eq!(test.read_chunk(), None, "the last chunk");
    test.expect_eof();
    error_for(server.public, &get("/nope"), 404);

    // 5.
    eventually("every subscriber gone", || {
        let text = metrics(&server);
        TRANSPORTS.iter().all(|t| subscribers(&text, t) == 0)
    });
    let after = metrics(&server);
    let ended_after = ends(&after);
    let moved: Vec<(&str, u64)> = REASONS
        .iter()
        .zip(ended_after.iter().zip(ended_before))
        .map(|(reason, (after, before))| (*reason, after - before))
        .filter(|&(reason, n)| n > 0 && reason != "answered") // each scrape ends as answered
        .collect();
    assert_eq!(
        moved,
        [("eof", 1), ("protocol", 1), ("disconnect", 2)],
        "{after}"
    );
    assert!(closed(&after, "answered") > ended_before[1], "the scrapes");
    check_process(&after);
    assert_eq!(
        value(&after, "process_start_time_seconds"),
        value(&before, "process_start_time_seconds")
    );
    assert!(
        value(&after, "process_cpu_seconds_total") >= value(&before, "process_cpu_seconds_total")
    );
    drop(ws);
}
