//! Operating comet (README: "Publishing", "Auth and origins"): the publish port refuses web
//! pages (`Origin`) and foreign `Host`s (DNS rebinding) and sends no CORS headers; a metrics
//! secret apart from the publish secret; `/healthz` and `/readyz` on the publish port and with
//! `--public-health` on the subscriber port, ready or not (cluster link down, shutting down);
//! token expiry on SSE, WebSocket and long-poll, and the resume with a new token that loses
//! nothing.

mod common;

use std::net::{SocketAddr, TcpListener};

use common::now_s;
use common::{
    error_for, get, metrics, post_send, request, subscribe, total, Client, Publisher, Response,
    Server, TIMEOUT,
};
use serde_json::{json, Value};

const ID: u64 = 7;
/// The subscriber tokens' secret (`--auth-secret`).
const SECRET: &str = "s";

/// A subscriber token for `ID`, expiring at `exp`.
fn token(exp: u64) -> String {
    common::jwt(SECRET, json!({"sub": ID.to_string(), "exp": exp}))
}

/// A request with the given head lines (`Name: value`, CRLF-terminated each), `Connection: close`.
fn raw(method: &str, path: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn assert_no_cors(response: &Response) {
    for (name, _) in &response.head.headers {
        assert!(
            !name.to_ascii_lowercase().starts_with("access-control") && name != "Vary",
            "a CORS header on a publish answer: {response:?}"
        );
    }
}

// ---- the publish port ---------------------------------------------------------------------

/// With the defaults: a request from a web page (`Origin`) and one naming another host are
/// refused `403` and publish nothing; loopback names and addresses are answered; no answer of
/// the publish port carries a CORS header.
#[test]
fn the_publish_port_refuses_web_pages_and_foreign_hosts() {
    let server = Server::start(&[]);
    let mut sse = subscribe(server.public, "/events/7");
    sse.expect_position();

    let page = "Host: localhost\r\nOrigin: https://evil.example\r\n";
    let refused = error_for(server.publish, &raw("POST", "/send/7", page, "x"), 403);
    assert!(refused.text().contains("Origin"), "{refused:?}");
    assert_no_cors(&refused);
    // A rebinding page's request names the attacker's host.
    for host in [
        "evil.example",
        "evil.example:8001",
        "localhost.evil.example",
    ] {
        let headers = format!("Host: {host}\r\n");
        let refused = error_for(server.publish, &raw("POST", "/send/7", &headers, "x"), 403);
        assert!(refused.text().contains("Host"), "{refused:?}");
        assert_no_cors(&refused);
        error_for(server.publish, &raw("GET", "/metrics", &headers, ""), 403);
    }

    // Loopback names and addresses, with or without the port.
    let port = server.publish.port();
    for host in [
        "localhost".to_owned(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "[::1]".to_owned(),
    ] {
        let answer = request(
            server.publish,
            &raw("POST", "/send/7", &format!("Host: {host}\r\n"), &host),
        );
        assert_eq!(answer.status(), 200, "{host}: {answer:?}");
        assert_no_cors(&answer);
        let event = sse.next_event().expect("the stream goes on");
        assert_eq!(
            event.data.as_deref(),
            Some(host.as_str()),
            "nothing refused got through before"
        );
    }
    for path in ["/metrics", "/nope"] {
        let answer = request(server.publish, &raw("GET", path, "Host: localhost\r\n", ""));
        assert_no_cors(&answer);
    }
}

/// Listed origins and hosts are answered; others still are not.
#[test]
fn listed_origins_and_hosts_are_answered() {
    let server = Server::start(&[
        "--publish-allowed-origins",
        "https://admin.example",
        "--publish-hosts",
        "comet.internal",
    ]);
    let admin = "Host: localhost\r\nOrigin: https://admin.example\r\n";
    let answer = request(server.publish, &raw("POST", "/send/7", admin, "x"));
    assert_eq!(answer.status(), 200, "{answer:?}");
    assert_no_cors(&answer);
    let other = "Host: localhost\r\nOrigin: https://evil.example\r\n";
    error_for(server.publish, &raw("POST", "/send/7", other, "x"), 403);
    let named = "Host: comet.internal:8001\r\n";
    let answer = request(server.publish, &raw("POST", "/send/7", named, "x"));
    assert_eq!(answer.status(), 200, "{answer:?}");
    error_for(
        server.publish,
        &raw("POST", "/send/7", "Host: evil.example\r\n", "x"),
        403,
    );
}

/// `--metrics-secret`: /metrics takes it and only it; publishing takes the publish secret and
/// only it (a scraper cannot publish).
#[test]
fn a_metrics_secret_opens_metrics_and_nothing_else() {
    let server = Server::start(&["--publish-secret", "pub", "--metrics-secret", "met"]);
    let bearer = |secret: &str| format!("Host: localhost\r\nAuthorization: Bearer {secret}\r\n");
    let scrape =
        |secret: &str| request(server.publish, &raw("GET", "/metrics", &bearer(secret), ""));
    let send = |secret: &str| {
        request(
            server.publish,
            &raw("POST", "/send/7", &bearer(secret), "x"),
        )
    };
    let answer = scrape("met");
    assert_eq!(answer.status(), 200, "{answer:?}");
    assert!(answer.text().contains("comet_connections"), "{answer:?}");
    assert_eq!(scrape("pub").status(), 401);
    assert_eq!(send("met").status(), 401);
    assert_eq!(send("pub").status(), 200);
    let answer = scrape("nothing");
    assert_eq!(answer.head.header("www-authenticate"), Some("Bearer"));
    // Health checks need neither.
    let health = request(
        server.publish,
        &raw("GET", "/healthz", "Host: localhost\r\n", ""),
    );
    assert_eq!((health.status(), health.text().as_str()), (200, "ok\n"));
}

// ---- health and readiness -----------------------------------------------------------------

fn health(addr: SocketAddr, path: &str) -> Response {
    let answer = request(addr, &raw("GET", path, "Host: localhost\r\n", ""));
    assert!(
        answer
            .head
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/plain")),
        "{answer:?}"
    );
    answer
}

/// `/healthz` and `/readyz` on the publish port, keep-alive, HEAD too; on the subscriber port
/// only with `--public-health`.
#[test]
fn health_and_readiness_on_either_port() {
    let server = Server::start(&[]);
    let mut client = Client::connect(server.publish);
    for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        client.write(&get(path));
        let answer = client.read_response();
        assert_eq!((answer.status(), answer.text().as_str()), (200, body));
        assert_no_cors(&answer);
    }
    client.write(b"HEAD /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let head = client.read_head();
    assert_eq!((head.status, head.content_length()), (200, Some(6)));
    client.expect_eof();
    // Not on the subscriber port by default.
    error_for(server.public, &get("/healthz"), 404);
    error_for(server.public, &get("/readyz"), 404);

    let server = Server::start(&["--public-health", "--auth-secret", SECRET]);
    for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let answer = health(server.public, path);
        assert_eq!(
            (answer.status(), answer.text().as_str()),
            (200, body),
            "{path}"
        );
        let answer = health(server.publish, path);
        assert_eq!(
            (answer.status(), answer.text().as_str()),
            (200, body),
            "{path}"
        );
    }
}

/// In a cluster whose NATS cannot be reached, the node is alive but not ready.
#[test]
fn readiness_needs_the_cluster_link() {
    // A port nobody listens on: bound, then freed.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let nats = format!("nats://127.0.0.1:{port}");
    // Core NATS: a node starts without NATS (on JetStream it waits for the stream).
    let server = Server::start(&["--cluster", &nats, "--cluster-core", "--public-health"]);
    for addr in [server.publish, server.public] {
        assert_eq!(health(addr, "/healthz").status(), 200);
        let answer = health(addr, "/readyz");
        assert_eq!(answer.status(), 503, "{answer:?}");
        assert_eq!(answer.text(), "not linked to the cluster (NATS)\n");
    }
}

/// 1. One worker; a stream whose client never reads holds unsent bytes (its queue overflows:
///    drop-oldest counts it), and a reading stream shows when shutdown begins.
/// 2. SIGTERM: the reading stream gets its last chunk; the held one cannot, so the worker keeps
///    running (up to the long timeouts).
/// 3. Meanwhile the publish port answers: `/healthz` 200, `/readyz` 503 shutting down, `/send`
///    503, one request per connection.
/// 4. The held client goes away: the server exits 0.
#[test]
fn readiness_is_503_during_shutdown() {
    let mut server = Server::start(&[
        "--workers",
        "1",
        "--shutdown-timeout-ms",
        "60000",
        "--request-timeout-ms",
        "60000",
        "--slow-consumer",
        "drop-oldest",
        "--queue-messages-max",
        "8",
        "--queue-bytes-max",
        "4096",
    ]);
    let held = subscribe(server.public, "/events/7");
    let mut reader = subscribe(server.public, "/events/8");
    reader.expect_position();
    let mut publisher = Publisher::connect(&server);
    let big = "x".repeat(3000);
    let mut sent = 0;
    while total(&metrics(&server), "comet_messages_dropped_oldest_total") < 16 {
        for _ in 0..16 {
            publisher.send(ID, &big);
        }
        sent += 16;
        assert!(sent < 8000, "the held stream never filled its socket");
    }

    server.signal("TERM");
    reader.expect_retry(); // the reconnect hint
    assert_eq!(reader.read_chunk(), None, "the reading stream's last chunk");
    reader.expect_eof();
    let answer = health(server.publish, "/healthz");
    assert_eq!((answer.status(), answer.text().as_str()), (200, "ok\n"));
    let answer = health(server.publish, "/readyz");
    assert_eq!(
        (answer.status(), answer.text().as_str()),
        (503, "shutting down\n")
    );
    assert_eq!(answer.head.header("connection"), Some("close"));
    let answer = request(server.publish, &post_send("7", b"late"));
    assert_eq!(answer.status(), 503, "{answer:?}");

    drop(held);
    let status = server
        .wait(TIMEOUT)
        .expect("exit once the held stream is gone");
    assert!(status.success(), "{status}");
}

// ---- token expiry -------------------------------------------------------------------------

/// One server frame: (opcode, payload).
fn read_frame(client: &mut Client) -> (u8, Vec<u8>) {
    let head = client.read_exact(2);
    assert_eq!(head[0] & 0xf0, 0x80, "FIN and no RSV bits: {head:?}");
    let len = match head[1] & 0x7f {
        126 => u16::from_be_bytes(client.read_exact(2).try_into().unwrap()) as usize,
        127 => u64::from_be_bytes(client.read_exact(8).try_into().unwrap()) as usize,
        n => usize::from(n),
    };
    (head[0] & 0x0f, client.read_exact(len))
}

/// The next WebSocket text frame as JSON.
fn ws_json(client: &mut Client) -> Value {
    let (opcode, payload) = read_frame(client);
    assert_eq!(
        opcode,
        1,
        "a text frame: {:?}",
        String::from_utf8_lossy(&payload)
    );
    serde_json::from_slice(&payload).expect("JSON")
}

/// A WebSocket on a raw connection; its first frame (the position) is consumed.
fn ws(addr: SocketAddr, path: &str) -> Client {
    let mut client = Client::connect(addr);
    client.write(
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    );
    let head = client.read_head();
    assert_eq!(head.status, 101, "{head:?}");
    assert!(ws_json(&mut client)["since"].is_string());
    client
}

/// 1. A token for `ID` that expires in 3 s; an SSE stream, a WebSocket and a long-poll with it.
/// 2. A message reaches both streams; the long-poll waits after it.
/// 3. At `exp` (not before): SSE gets `event: expired` then its last chunk and EOF; the
///    WebSocket a close 4001 `token expired` then EOF; the long-poll `401` with the
///    invalid_token challenge. The old token is refused from then on.
/// 4. A message is published while they are gone.
/// 5. Each reconnects with a new token from its position (`Last-Event-ID`, `?since=`) and gets
///    that message: nothing is lost.
#[test]
fn a_subscription_ends_when_its_token_expires_and_resumes_with_a_new_one() {
    let server = Server::start(&["--auth-secret", SECRET]);
    let exp = now_s() + 3;
    let old = token(exp);

    let mut sse = subscribe(server.public, &format!("/events/7?token={old}"));
    sse.expect_position();
    let mut socket = ws(server.public, &format!("/ws/7?token={old}"));
    assert_eq!(common::publish(&server, ID, "before"), 2);
    let event = sse.next_event().expect("a message");
    assert_eq!(event.data.as_deref(), Some("before"));
    let seen = event.id.expect("a position");
    let msg = ws_json(&mut socket);
    assert_eq!(msg["data"], "before");
    assert_eq!(
        msg["since"],
        seen.as_str(),
        "one position on every transport"
    );
    let mut poll = Client::connect(server.public);
    poll.write(&get(&format!("/poll/7?token={old}&since={seen}")));

    let event = sse.next_event().expect("the expired event");
    assert!(now_s() >= exp, "ended before its token expired");
    assert_eq!(event.event.as_deref(), Some("expired"), "{event:?}");
    assert_eq!(event.data.as_deref(), Some(r#"{"reason":"token expired"}"#));
    assert_eq!(sse.read_chunk(), None, "the last chunk");
    sse.expect_eof();

    let (opcode, payload) = read_frame(&mut socket);
    assert_eq!(opcode, 8, "a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4001);
    assert_eq!(&payload[2..], b"token expired");
    socket.expect_eof();

    let answer = poll.read_response();
    assert_eq!(answer.status(), 401, "{answer:?}");
    assert_eq!(
        answer.head.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token", error_description="token expired""#)
    );
    assert_eq!(answer.head.header("connection"), Some("close"));
    poll.expect_eof();
    error_for(server.public, &get(&format!("/events/7?token={old}")), 401);

    common::publish(&server, ID, "while away");
    let new = token(now_s() + 600);

    let mut req = format!("GET /events/7?token={new} HTTP/1.1\r\nHost: localhost\r\n");
    req.push_str(&format!("Last-Event-ID: {seen}\r\n\r\n"));
    let mut sse = Client::connect(server.public);
    sse.write(req.as_bytes());
    assert_eq!(sse.read_head().status, 200);
    let event = sse.next_event().expect("the message missed");
    assert_eq!(event.data.as_deref(), Some("while away"), "{event:?}");

    let mut socket = Client::connect(server.public);
    socket.write(
        format!(
            "GET /ws/7?token={new}&since={seen} HTTP/1.1\r\nHost: localhost\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(socket.read_head().status, 101);
    assert_eq!(ws_json(&mut socket)["data"], "while away");

    let answer = request(
        server.public,
        &get(&format!("/poll/7?token={new}&since={seen}")),
    );
    assert_eq!(answer.status(), 200, "{answer:?}");
    let body: Value = serde_json::from_slice(&answer.body).expect("JSON");
    assert_eq!(body["gap"], json!([]));
    assert_eq!(body["messages"][0]["data"], "while away", "{body}");
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(1), "{body}");

    // Streams with the new token are not ended with the old one's expiry.
    assert_eq!(common::publish(&server, ID, "still here"), 2);
    assert_eq!(
        sse.next_event().expect("a message").data.as_deref(),
        Some("still here")
    );
    let msg = ws_json(&mut socket);
    assert_eq!(
        msg.as_object().map(|m| m.len()),
        Some(1),
        "the position: {msg}"
    );
    assert_eq!(ws_json(&mut socket)["data"], "still here");
}
