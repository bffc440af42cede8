//! Graceful shutdown: on SIGINT or SIGTERM the server ends every stream properly, closes
//! every connection and exits 0.

mod common;

use std::net::TcpStream;

use common::{
    get, metrics, publish, seed_msg, subscribe, total, Client, Publisher, Server, TIMEOUT,
};

/// 1. Open a chunked stream, an SSE stream, an idle keep-alive publisher and a client stalled
///    mid-request; check the streams are live.
/// 2. Send `signal`.
/// 3. The streams receive their last chunk (`0\r\n\r\n`) then EOF, the SSE stream a jittered
///    `retry:` before it (a reconnect hint); the others get EOF; the process exits 0 and its
///    ports refuse connections.
fn graceful_shutdown(signal: &str) {
    let mut server = Server::start(&["--workers", "2"]);
    let mut chunked = subscribe(server.public, "/test/1");
    let mut sse = subscribe(server.public, "/events/1");
    assert_eq!(publish(&server, 1, "live"), 2);
    chunked.expect_chunk(&seed_msg(1, "live"));
    assert_eq!(sse.next_event().unwrap().data.as_deref(), Some("live"));

    let mut publisher = Client::connect(server.publish);
    publisher.write(&common::post_send("9", b"x"));
    assert_eq!(publisher.read_response().status(), 200);
    let mut stalled = Client::connect(server.public);
    stalled.write(b"GET /test/2 HTTP/1.1\r\n");

    let (public, publish_addr) = (server.public, server.publish);
    let status = server.stop(signal);
    assert!(status.success(), "exit status after SIG{signal}: {status}");

    assert_eq!(chunked.read_chunk(), None, "last chunk of /test/1");
    chunked.expect_eof();
    let retry = sse.expect_retry();
    assert!((1_000..=2_000).contains(&retry), "retry: {retry}");
    assert_eq!(sse.read_chunk(), None, "last chunk of /events/1");
    sse.expect_eof();
    publisher.expect_eof();
    let rest = String::from_utf8_lossy(&stalled.read_to_end()).into_owned();
    assert!(
        rest.is_empty() || rest.starts_with("HTTP/1.1 503 "),
        "a stalled request at shutdown got {rest:?}"
    );
    for addr in [public, publish_addr] {
        assert!(
            TcpStream::connect(addr).is_err(),
            "{addr} still accepts after exit"
        );
    }
}

#[test]
fn sigterm_ends_streams_and_exits_0() {
    graceful_shutdown("TERM");
}

#[test]
fn sigint_ends_streams_and_exits_0() {
    graceful_shutdown("INT");
}

#[test]
fn an_idle_server_exits_0() {
    let mut server = Server::start(&[]);
    let status = server.stop("TERM");
    assert!(status.success(), "{status}");
}

/// An HTTP/1.0 stream (no chunked framing) has no last chunk: at shutdown it gets EOF (after a
/// `retry:` on SSE, which also opens the stream).
#[test]
fn http_1_0_streams_at_shutdown_get_eof_and_exit_0() {
    let mut server = Server::start(&["--workers", "2"]);
    let mut raw = Client::connect(server.public);
    raw.write(b"GET /test/1 HTTP/1.0\r\n\r\n");
    assert_eq!(raw.read_head().status, 200);
    let mut raw_sse = Client::connect(server.public);
    raw_sse.write(b"GET /events/1 HTTP/1.0\r\n\r\n");
    assert_eq!(raw_sse.read_head().status, 200);
    assert_eq!(publish(&server, 1, "live"), 2);
    let line = seed_msg(1, "live");
    assert_eq!(raw.read_exact(line.len()), line.as_bytes());
    assert!(
        common::retry_ms(&raw_sse.read_raw_event()).is_some(),
        "retry: first"
    );
    assert!(
        raw_sse.read_raw_event().starts_with("id: "),
        "the position next"
    );
    let event = raw_sse.read_raw_event();
    assert!(event.ends_with("\ndata: live\n\n"), "{event:?}");

    let status = server.stop("TERM");
    assert!(status.success(), "exit status: {status}");
    raw.expect_eof();
    assert!(
        common::retry_ms(&raw_sse.read_raw_event()).is_some(),
        "retry: last"
    );
    raw_sse.expect_eof();
}

/// A second server on the same port refuses to start (SO_REUSEPORT would otherwise let it take
/// a share of the first one's connections).
#[test]
fn a_second_server_on_a_port_in_use_refuses_to_start() {
    let server = Server::start(&["--workers", "2"]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_comet"))
        .args(["serve", "--workers", "1", "--publish-listen", "127.0.0.1:0"])
        .args(["--listen", &server.public.to_string()])
        .output()
        .expect("run comet");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is in use"), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "it must not report listening");
}

/// Reconnect hints: every SSE stream opens with a `retry:` drawn per connection in
/// [1000, 2000] ms on a small server (the window grows with the connection count), and gets
/// another before its end at shutdown; a WebSocket is closed with 1012 (service restart).
#[test]
fn shutdown_tells_clients_to_come_back_spread_out() {
    let mut server = Server::start(&["--workers", "2"]);
    let mut streams: Vec<_> = (0..12)
        .map(|_| subscribe(server.public, "/events/1"))
        .collect();
    let opening: Vec<u64> = streams.iter_mut().map(Client::expect_retry).collect();
    assert!(
        opening.iter().all(|ms| (1_000..=2_000).contains(ms)),
        "{opening:?}"
    );
    let mut ws = Client::connect(server.public);
    ws.write(
        b"GET /ws/1 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_eq!(ws.read_head().status, 101);
    for sse in &mut streams {
        sse.expect_position();
    }

    assert!(server.stop("TERM").success());
    let closing: Vec<u64> = streams.iter_mut().map(Client::expect_retry).collect();
    assert!(
        closing.iter().all(|ms| (1_000..=2_000).contains(ms)),
        "{closing:?}"
    );
    let mut all = [opening, closing].concat();
    all.sort_unstable();
    all.dedup();
    assert!(all.len() > 12, "the same retry for everyone: {all:?}");
    for sse in &mut streams {
        assert_eq!(sse.read_chunk(), None, "the last chunk");
    }
    // The WebSocket: its position first, then the close frame with 1012.
    let rest = ws.read_to_end();
    let close = rest
        .windows(2)
        .position(|w| w[0] == 0x88)
        .map(|at| &rest[at..])
        .expect("a close frame");
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1012, "{close:?}");
    assert_eq!(&close[4..], b"service restart");
}

/// Past `--shutdown-timeout-ms`, what could not end is cut (in slices of the loop, over every
/// ring) and the process exits 0: 300 streams whose clients never read, so their last chunk
/// cannot be sent, on rings of 128 slots (five rings), beside a reading stream that gets its
/// last chunk.
#[test]
fn the_shutdown_timeout_cuts_what_cannot_end() {
    const HELD: usize = 300;
    let mut server = Server::start_env(
        &[
            "--workers",
            "1",
            "--shutdown-timeout-ms",
            "500",
            "--slow-consumer",
            "drop-oldest",
            "--queue-messages-max",
            "4",
            "--queue-bytes-max",
            "8192",
        ],
        &[("COMET_RING_FILES", "128"), ("COMET_BACKLOG", "16")],
    );
    let held: Vec<Client> = (0..HELD)
        .map(|_| {
            let mut client = Client::connect_with_recv_buffer(server.public, 4096);
            client.write(&get("/events/7"));
            assert_eq!(client.read_head().status, 200);
            client
        })
        .collect();
    let mut reader = subscribe(server.public, "/events/8");
    reader.expect_position();
    assert!(total(&metrics(&server), "comet_rings") >= 5);
    // Every held stream fills its socket, then its queue drops its oldest messages.
    let mut publisher = Publisher::connect(&server);
    let big = "x".repeat(3000);
    let mut sent = 0;
    while total(&metrics(&server), "comet_messages_dropped_oldest_total") < HELD as u64 {
        for _ in 0..8 {
            publisher.send(7, &big);
        }
        sent += 8;
        assert!(sent < 2000, "the held streams never filled");
    }

    server.signal("TERM");
    reader.expect_retry();
    assert_eq!(reader.read_chunk(), None, "the reading stream's last chunk");
    reader.expect_eof();
    // The held clients never read: only the cut lets the process exit.
    let status = server
        .wait(TIMEOUT)
        .expect("exit once the timeout has cut the held streams");
    assert!(status.success(), "{status}");
    let log = server.log();
    assert!(
        log.contains("shutdown timeout: closing what is still open"),
        "{log}"
    );
    drop(held);
}
