//! Real clients through the real binary (README, "Real clients: resume, auth, WebSocket,
//! long-poll, heartbeats"): subscriber tokens, the publish secret and allowed origins; resume
//! from a position on SSE, WebSocket and long-poll, and the gap notice when the history no
//! longer reaches back; heartbeats; the WebSocket protocol (pings, closes, bad frames); slow
//! consumers under both policies; `POST /disconnect/<id>`; the history and memory families of
//! /metrics.
//!
//! WebSocket clients are tungstenite where a well-behaved client will do, and raw bytes on a
//! `common::Client` where a test sends what tungstenite would not (unmasked or oversized
//! frames) or needs to see the TCP end (EOF) after a close frame.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{
    error_for, get, metrics, post, publish, request, samples, subscribe, total, Client, Event,
    Head, Publisher, Response, Server, TIMEOUT,
};
use serde_json::{json, Value};
use tungstenite::handshake::HandshakeError;
use tungstenite::{ClientRequestBuilder, Message, WebSocket};

/// The id most tests subscribe to.
const ID: u64 = 7;
/// The subscriber tokens' secret (`--auth-secret`).
const SECRET: &str = "s";

// ---- helpers ------------------------------------------------------------------------------

use common::{jwt as token, now_s};

/// `GET <path>` with extra header lines (`Name: value`).
fn get_with(path: &str, headers: &[&str]) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
    for header in headers {
        req.push_str(header);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Opens a stream with extra headers and consumes its head, which must be `200` chunked.
fn subscribe_with(addr: SocketAddr, path: &str, headers: &[&str]) -> (Client, Head) {
    let mut client = Client::connect(addr);
    client.write(&get_with(path, headers));
    let head = client.read_head();
    assert_eq!(head.status, 200, "subscribing to {path}: {head:?}");
    assert!(head.is_chunked(), "{head:?}");
    (client, head)
}

/// The next SSE event must be message `data` (no event name); returns its position (its seq,
/// for a connection with one id).
fn expect_message(client: &mut Client, data: &str) -> u64 {
    let event = client.next_event().expect("an event, not the stream's end");
    assert_eq!(event.event, None, "{event:?}");
    assert_eq!(event.data.as_deref(), Some(data), "{event:?}");
    event.seq()
}

/// The next SSE event must be the gap notice for `ids`.
fn expect_gap(client: &mut Client, ids: &[u64]) {
    let event = client
        .next_event()
        .expect("a gap notice, not the stream's end");
    assert_eq!(
        event,
        Event {
            id: None,
            event: Some("gap".into()),
            data: Some(json!({ "gap": ids }).to_string()),
        }
    );
}

/// A position without its epoch: `3f2a9c1e:17,4` -> `17,4`. Every position the server writes
/// carries the epoch (checked here); the tests compare and send back the numbers, which the
/// server takes as its own.
trait PositionNumbers {
    /// `Client::expect_position` without the epoch.
    fn expect_position_numbers(&mut self) -> String;
}

impl PositionNumbers for Client {
    fn expect_position_numbers(&mut self) -> String {
        unepoch(&self.expect_position())
    }
}

fn unepoch(pos: &str) -> String {
    let (epoch, seqs) = pos
        .split_once(':')
        .unwrap_or_else(|| panic!("no epoch in {pos:?}"));
    assert!(
        epoch.len() == 8 && epoch.bytes().all(|b| b.is_ascii_hexdigit()),
        "epoch of {pos:?}"
    );
    seqs.to_owned()
}

/// The same for the `since` field of a JSON message, if it has one.
fn unepoch_json(mut value: Value) -> Value {
    if let Some(since) = value.get("since").and_then(Value::as_str) {
        value["since"] = Value::String(unepoch(since));
    }
    value
}

/// A long-poll answer: `200 application/json`, keep-alive; its body as JSON (`since` without
/// its epoch).
fn poll_body(response: &Response) -> Value {
    assert_eq!(response.status(), 200, "{response:?}");
    assert!(
        response
            .head
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{response:?}"
    );
    assert_ne!(response.head.header("connection"), Some("close"));
    unepoch_json(
        serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("poll body {:?}: {e}", response.text())),
    )
}

/// One long-poll on `client` (a keep-alive connection); its body.
fn poll(client: &mut Client, path: &str) -> Value {
    client.write(&get(path));
    poll_body(&client.read_response())
}

/// A long-poll answer's JSON for messages `(seq, data)` of `ID`.
fn poll_answer(since: u64, gap: &[u64], messages: &[(u64, &str)]) -> Value {
    let messages: Vec<Value> = messages
        .iter()
        .map(|&(seq, data)| json!({"id": ID, "seq": seq, "data": data}))
        .collect();
    json!({"since": since.to_string(), "gap": gap, "messages": messages})
}

type Ws = WebSocket<TcpStream>;

/// A WebSocket handshake with tungstenite: the socket, or the refusal's status.
fn ws_try(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    let uri = format!("ws://{addr}{path}").parse().expect("a URI");
    let mut req = ClientRequestBuilder::new(uri);
    for &(name, value) in headers {
        req = req.with_header(name, value);
    }
    match tungstenite::client(req, stream) {
        Ok((ws, response)) => {
            assert_eq!(response.status().as_u16(), 101);
            Ok(ws)
        }
        Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("WebSocket handshake for {path}: {e}"),
    }
}

fn ws_connect(addr: SocketAddr, path: &str) -> Ws {
    ws_try(addr, path, &[]).unwrap_or_else(|status| panic!("{path}: handshake got {status}"))
}

/// The next text message as JSON (`since` without its epoch), skipping pings and pongs.
fn ws_next(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("a WebSocket message") {
            Message::Text(text) => {
                return unepoch_json(
                    serde_json::from_str(text.as_str()).unwrap_or_else(|e| panic!("{text:?}: {e}")),
                )
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The first message of a WebSocket stream must be the position alone; returns it.
fn ws_position(ws: &mut Ws) -> String {
    let first = ws_next(ws);
    let pos = first["since"].as_str().expect("a position").to_owned();
    assert_eq!(first, json!({ "since": pos }));
    pos
}

/// The next message must be `data` for `ID`, with a position that is its seq; returns the seq.
fn ws_expect_message(ws: &mut Ws, data: &str) -> u64 {
    let msg = ws_next(ws);
    let seq = msg["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("a seq in {msg}"));
    assert_eq!(
        msg,
        json!({"id": ID, "seq": seq, "since": seq.to_string(), "data": data})
    );
    seq
}

/// `Sec-WebSocket-Key` of RFC 6455's example, and its `Sec-WebSocket-Accept`.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn ws_handshake(path: &str, version: &str, headers: &[&str]) -> Vec<u8> {
    let mut all = vec![
        "Upgrade: websocket".to_owned(),
        "Connection: Upgrade".to_owned(),
        format!("Sec-WebSocket-Key: {WS_KEY}"),
        format!("Sec-WebSocket-Version: {version}"),
    ];
    all.extend(headers.iter().map(|h| h.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    get_with(path, &all)
}

/// A WebSocket on a raw connection: the handshake answer is checked and the first frame (the
/// position) consumed.
fn raw_ws(addr: SocketAddr, path: &str) -> Client {
    let mut client = Client::connect(addr);
    client.write(&ws_handshake(path, "13", &[]));
    let head = client.read_head();
    assert_eq!(head.status, 101, "{head:?}");
    assert_eq!(head.header("sec-websocket-accept"), Some(WS_ACCEPT));
    let (opcode, payload) = read_frame(&mut client);
    assert_eq!(opcode, 1, "a text frame");
    let first: Value = serde_json::from_slice(&payload).expect("JSON");
    assert!(first["since"].is_string(), "{first}");
    client
}

/// One server frame: (opcode, payload). Server frames are final and unmasked.
fn read_frame(client: &mut Client) -> (u8, Vec<u8>) {
    let head = client.read_exact(2);
    assert_eq!(head[0] & 0xf0, 0x80, "FIN and no RSV bits: {head:?}");
    assert_eq!(head[1] & 0x80, 0, "a server frame is not masked");
    let len = match head[1] & 0x7f {
        126 => u16::from_be_bytes(client.read_exact(2).try_into().unwrap()) as usize,
        127 => u64::from_be_bytes(client.read_exact(8).try_into().unwrap()) as usize,
        n => usize::from(n),
    };
    (head[0] & 0x0f, client.read_exact(len))
}

/// The next frame must be a close with `code` (and a UTF-8 reason), then the server closes.
fn expect_close(client: &mut Client, code: u16, what: &str) {
    let (opcode, payload) = read_frame(client);
    assert_eq!(opcode, 8, "{what}: a close frame, got {payload:?}");
    assert!(payload.len() >= 2, "{what}: a close code");
    assert_eq!(
        u16::from_be_bytes([payload[0], payload[1]]),
        code,
        "{what}: reason {:?}",
        String::from_utf8_lossy(&payload[2..])
    );
    assert!(std::str::from_utf8(&payload[2..]).is_ok());
    client.expect_eof();
}

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame: `first` is the FIN/RSV/opcode byte.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = client_frame_header(first, payload.len());
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    frame
}

/// The header of a masked client frame of `len` bytes, mask key included.
fn client_frame_header(first: u8, len: usize) -> Vec<u8> {
    let mut frame = vec![first];
    match len {
        0..=125 => frame.push(0x80 | len as u8),
        126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame
}

// ---- auth and origins ---------------------------------------------------------------------

/// `--auth-secret`: every transport needs a valid token for the ids of the path, in the query
/// or in `Authorization: Bearer`; the refusals say why.
#[test]
fn subscriber_tokens() {
    let server = Server::start(&["--auth-secret", SECRET]);
    let public = server.public;
    let exp = now_s() + 600;
    let good = token(SECRET, json!({"sub": "7", "exp": exp}));
    let bearer = format!("Authorization: Bearer {good}");

    let r = error_for(public, &get("/events/7"), 401);
    assert_eq!(r.head.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.text(), "missing token\n");

    let forged = token("not-the-secret", json!({"sub": "7", "exp": exp}));
    let r = error_for(public, &get(&format!("/events/7?token={forged}")), 401);
    assert_eq!(r.head.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.text(), "invalid token: bad signature\n");

    let expired = token(SECRET, json!({"sub": "7", "exp": now_s() - 60}));
    let r = error_for(
        public,
        &get_with("/events/7", &[&format!("Authorization: Bearer {expired}")]),
        401,
    );
    assert_eq!(r.text(), "token expired\n");
    assert_eq!(
        r.head.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token", error_description="token expired""#)
    );

    let for_8 = token(SECRET, json!({"sub": "8", "exp": exp}));
    let r = error_for(public, &get(&format!("/events/7?token={for_8}")), 403);
    assert_eq!(r.text(), "token does not allow id 7\n");
    // A token for 7 does not open 7 and 8 together.
    let r = error_for(public, &get(&format!("/events/7,8?token={good}")), 403);
    assert_eq!(r.text(), "token does not allow id 8\n");

    // WebSocket and long-poll refuse the same way.
    assert_eq!(ws_try(public, "/ws/7", &[]).err(), Some(401));
    assert_eq!(
        ws_try(public, &format!("/ws/7?token={expired}"), &[]).err(),
        Some(401)
    );
    assert_eq!(
        ws_try(public, &format!("/ws/7?token={for_8}"), &[]).err(),
        Some(403)
    );
    error_for(public, &get("/poll/7"), 401);
    error_for(public, &get(&format!("/poll/7?token={for_8}")), 403);

    // Valid, in the query and in the header, on every transport.
    let (mut sse_query, _) = subscribe_with(public, &format!("/events/7?token={good}"), &[]);
    let (mut sse_header, _) = subscribe_with(public, "/events/7", &[&bearer]);
    let pos = sse_query.expect_position_numbers();
    assert_eq!(sse_header.expect_position_numbers(), pos);
    let mut ws_query = ws_try(public, &format!("/ws/7?token={good}"), &[]).expect("101");
    let mut ws_header = ws_try(
        public,
        "/ws/7",
        &[("Authorization", &format!("Bearer {good}"))],
    )
    .expect("101");
    assert_eq!(ws_position(&mut ws_query), pos);
    assert_eq!(ws_position(&mut ws_header), pos);
    // A token may list ids; it opens any subset of them.
    let several = token(SECRET, json!({"ids": [7, "9"], "exp": exp}));
    let (mut sse_ids, _) = subscribe_with(public, &format!("/events/9,7?token={several}"), &[]);
    sse_ids.expect_position_numbers();

    assert_eq!(publish(&server, ID, "hi"), 5);
    let seq = expect_message(&mut sse_query, "hi");
    assert_eq!(expect_message(&mut sse_header, "hi"), seq);
    assert_eq!(ws_expect_message(&mut ws_query, "hi"), seq);
    assert_eq!(ws_expect_message(&mut ws_header, "hi"), seq);
    let event = sse_ids.next_event().expect("an event");
    assert_eq!(event.data.as_deref(), Some("hi"));

    let answer = poll_answer(seq, &[], &[(seq, "hi")]);
    let mut poller = Client::connect(public);
    assert_eq!(
        poll(&mut poller, &format!("/poll/7?since={pos}&token={good}")),
        answer
    );
    poller.write(&get_with(&format!("/poll/7?since={pos}"), &[&bearer]));
    assert_eq!(poll_body(&poller.read_response()), answer);

    assert_eq!(
        total(&metrics(&server), "comet_auth_failures_total"),
        10,
        "every refusal above is counted"
    );
}

/// `--publish-secret`: every request on the publish listener needs it; subscribers do not.
#[test]
fn publish_secret() {
    let server = Server::start(&["--publish-secret", "p"]);
    let send = |authorization: Option<&str>, msg: &str| {
        let header = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        format!(
            "POST /send/7 HTTP/1.1\r\nHost: localhost\r\n{header}Content-Length: {}\r\n\r\n{msg}",
            msg.len()
        )
        .into_bytes()
    };
    let mut sse = subscribe(server.public, "/events/7");
    sse.expect_position_numbers();

    for bad in [None, Some("Bearer wrong"), Some("Bearer p2"), Some("p")] {
        let r = error_for(server.publish, &send(bad, "refused"), 401);
        assert_eq!(r.head.header("www-authenticate"), Some("Bearer"), "{bad:?}");
    }
    let r = request(server.publish, &send(Some("Bearer p"), "allowed"));
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.text(), "{\"id\":7,\"connections\":1}\n");
    // Only the authorised message went out.
    expect_message(&mut sse, "allowed");

    error_for(server.publish, &get("/metrics"), 401);
    error_for(server.publish, &post("/disconnect/7", b""), 401);
    let r = request(
        server.publish,
        &get_with(
            "/metrics",
            &["Authorization: Bearer p", "Connection: close"],
        ),
    );
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(total(&r.text(), "comet_messages_published_total"), 1);
}

/// `--allowed-origins`: another origin gets 403 on every transport; a listed one gets its
/// origin back with `Vary: Origin`; no Origin (not a page) is allowed with `*`.
#[test]
fn allowed_origins() {
    let server = Server::start(&["--allowed-origins", "https://a.example"]);
    let public = server.public;
    let evil = "Origin: https://b.example";
    let good = "Origin: https://a.example";

    let r = error_for(public, &get_with("/events/7", &[evil]), 403);
    assert_eq!(r.text(), "origin not allowed\n");
    error_for(public, &ws_handshake("/ws/7", "13", &[evil]), 403);
    error_for(public, &get_with("/poll/7", &[evil]), 403);
    error_for(public, &get_with("/test/7", &[evil]), 403);

    let (mut sse, head) = subscribe_with(public, "/events/7", &[good]);
    assert_eq!(
        head.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    assert_eq!(head.header("vary"), Some("Origin"));
    sse.expect_position_numbers();

    let mut ws = Client::connect(public);
    ws.write(&ws_handshake("/ws/7", "13", &[good]));
    let head = ws.read_head();
    assert_eq!(head.status, 101, "{head:?}");
    assert_eq!(head.header("sec-websocket-accept"), Some(WS_ACCEPT));
    assert_eq!(
        head.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    assert_eq!(head.header("vary"), Some("Origin"));

    let (_plain, head) = subscribe_with(public, "/events/7", &[]);
    assert_eq!(head.header("access-control-allow-origin"), Some("*"));
    assert_eq!(head.header("vary"), None);

    let preflight = |origin: &str| {
        format!(
            "OPTIONS /events/7 HTTP/1.1\r\nHost: localhost\r\n{origin}\r\n\
             Access-Control-Request-Method: GET\r\n\
             Access-Control-Request-Headers: authorization, last-event-id\r\n\r\n"
        )
        .into_bytes()
    };
    let r = request(public, &preflight(good));
    assert_eq!(r.status(), 204, "{r:?}");
    let allowed = r.head.header("access-control-allow-headers").unwrap_or("");
    for header in ["authorization", "last-event-id"] {
        assert!(
            allowed
                .split(',')
                .any(|h| h.trim().eq_ignore_ascii_case(header)),
            "{header} in {allowed:?}"
        );
    }
    assert!(r
        .head
        .header("access-control-allow-methods")
        .is_some_and(|m| m.split(',').any(|m| m.trim() == "GET")));
    assert_eq!(
        r.head.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    assert_eq!(r.head.header("vary"), Some("Origin"));
    assert!(r.body.is_empty());
    error_for(public, &preflight(evil), 403);
}

// ---- resume -------------------------------------------------------------------------------

/// SSE: a client that reconnects with `Last-Event-ID` (or `?since=`, which wins) gets exactly
/// what it missed, then the position, then the live stream.
#[test]
fn sse_resume() {
    let server = Server::start(&[]);
    let mut publisher = Publisher::connect(&server);
    let mut sse = subscribe(server.public, "/events/7");
    let start: u64 = sse.expect_position_numbers().parse().expect("a number");
    publisher.send(ID, "a");
    publisher.send(ID, "b\nsecond line");
    let a = expect_message(&mut sse, "a");
    let b = expect_message(&mut sse, "b\nsecond line");
    assert!(start < a && a < b, "positions grow: {start} {a} {b}");
    drop(sse);

    publisher.send(ID, "c");
    publisher.send(ID, "d");
    let (mut sse, _) = subscribe_with(
        server.public,
        "/events/7",
        &[&format!("Last-Event-ID: {b}")],
    );
    let c = expect_message(&mut sse, "c");
    let d = expect_message(&mut sse, "d");
    assert!(b < c && c < d, "{b} {c} {d}");
    assert_eq!(sse.expect_position_numbers(), d.to_string());
    // Once the old stream is logged out, the new one is the only one.
    eventually_subscribers(&server, 1);
    assert_eq!(publisher.send(ID, "e"), 1);
    let e = expect_message(&mut sse, "e");

    // `?since=` resumes the same way, and wins over Last-Event-ID.
    let mut since = subscribe(server.public, &format!("/events/7?since={a}"));
    expect_message(&mut since, "b\nsecond line");
    expect_message(&mut since, "c");
    expect_message(&mut since, "d");
    expect_message(&mut since, "e");
    assert_eq!(since.expect_position_numbers(), e.to_string());
    let (mut both, _) = subscribe_with(
        server.public,
        &format!("/events/7?since={d}"),
        &[&format!("Last-Event-ID: {a}")],
    );
    assert_eq!(expect_message(&mut both, "e"), e);
    assert_eq!(both.expect_position_numbers(), e.to_string());

    // Up to date: the position only, then live; nothing is sent twice.
    let mut current = subscribe(server.public, &format!("/events/7?since={e}"));
    assert_eq!(current.expect_position_numbers(), e.to_string());
    publisher.send(ID, "f");
    for client in [&mut sse, &mut since, &mut both, &mut current] {
        expect_message(client, "f");
    }
}

/// WebSocket: `{"since"}` first, messages with their position; `?since=` resumes.
#[test]
fn websocket_resume() {
    let server = Server::start(&[]);
    let mut publisher = Publisher::connect(&server);
    let mut ws = ws_connect(server.public, "/ws/7");
    let start: u64 = ws_position(&mut ws).parse().expect("a number");
    publisher.send(ID, "a");
    publisher.send(ID, "b \"quoted\"\n");
    let a = ws_expect_message(&mut ws, "a");
    let b = ws_expect_message(&mut ws, "b \"quoted\"\n");
    assert!(start < a && a < b, "{start} {a} {b}");
    drop(ws);

    publisher.send(ID, "c");
    publisher.send(ID, "d");
    let mut ws = ws_connect(server.public, &format!("/ws/7?since={b}"));
    let c = ws_expect_message(&mut ws, "c");
    let d = ws_expect_message(&mut ws, "d");
    assert!(b < c && c < d, "{b} {c} {d}");
    assert_eq!(ws_position(&mut ws), d.to_string());
    eventually_subscribers(&server, 1);
    assert_eq!(publisher.send(ID, "e"), 1);
    ws_expect_message(&mut ws, "e");
}

/// A position as numbers, one per id.
fn position(text: &str) -> Vec<u64> {
    text.split(',')
        .map(|p| p.parse().unwrap_or_else(|_| panic!("position {text:?}")))
        .collect()
}

/// Several ids on one connection: the position is one number per id, in the path's order;
/// a resume from it gets what each id missed, and a resume from the final position nothing.
#[test]
fn resume_with_several_ids() {
    let server = Server::start(&["--workers", "4"]);
    let mut publisher = Publisher::connect(&server);
    let mut sse = subscribe(server.public, "/events/7,8");
    // One position per id (each id's owner answers the login on its own: the first
    // position may hold a placeholder for an id whose owner has not answered yet).
    let start = position(&sse.expect_position_numbers());
    assert_eq!(start.len(), 2);
    publisher.send(7, "a");
    let event = sse.next_event().expect("a");
    let a = position(&unepoch(event.id.as_deref().expect("an id")));
    assert_eq!(event.data.as_deref(), Some("a"));
    publisher.send(8, "b");
    let event = sse.next_event().expect("b");
    let b = position(&unepoch(event.id.as_deref().expect("an id")));
    assert_eq!((b[0], event.data.as_deref()), (a[0], Some("b")));
    assert!(a[0] > start[0] && b[1] > a[1], "{start:?} {a:?} {b:?}");
    drop(sse);

    publisher.send(8, "c8");
    publisher.send(7, "c7");
    let missed = format!("{},{}", b[0], b[1]);
    // SSE: both missed messages (in any order across ids), then a position covering both.
    let (mut sse, _) = subscribe_with(
        server.public,
        "/events/7,8",
        &[&format!("Last-Event-ID: {missed}")],
    );
    let mut got: Vec<String> = (0..2)
        .map(|_| sse.next_event().and_then(|e| e.data).expect("a message"))
        .collect();
    got.sort();
    assert_eq!(got, ["c7", "c8"]);
    let end = position(&sse.expect_position_numbers());
    assert!(end[0] > b[0] && end[1] > b[1], "{b:?} {end:?}");

    // WebSocket, the same.
    let mut ws = ws_connect(server.public, &format!("/ws/7,8?since={missed}"));
    let mut got = Vec::new();
    while got.len() < 2 {
        let msg = ws_next(&mut ws);
        if msg.get("data").is_some() {
            got.push((msg["id"].as_u64().expect("an id"), msg["data"].clone()));
        } else {
            // The position after the first owner's answer.
            assert!(msg["since"].is_string(), "{msg}");
        }
    }
    got.sort_by_key(|m| m.0);
    assert_eq!(got, [(7, json!("c7")), (8, json!("c8"))]);
    let ws_end = ws_next(&mut ws);
    assert_eq!(ws_end, json!({"since": format!("{},{}", end[0], end[1])}));

    // Long-poll, the same; then, from the final position, only what comes next.
    let mut poller = Client::connect(server.public);
    let body = poll(&mut poller, &format!("/poll/7,8?since={missed}"));
    let mut got: Vec<&str> = body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["data"].as_str().expect("data"))
        .collect();
    got.sort();
    assert_eq!(got, ["c7", "c8"]);
    assert_eq!(body["gap"], json!([]));
    assert_eq!(body["since"], json!(format!("{},{}", end[0], end[1])));
    let mut current = subscribe(
        server.public,
        &format!("/events/7,8?since={},{}", end[0], end[1]),
    );
    assert_eq!(position(&current.expect_position_numbers()), end);
    publisher.send(8, "live");
    assert_eq!(
        current.next_event().and_then(|e| e.data).as_deref(),
        Some("live")
    );
}

/// Long-poll without news: held until `--poll-timeout-ms`, then no messages and the same
/// position; the connection is kept for the next poll, which gets what came meanwhile at once.
#[test]
fn long_poll_timeout_and_keep_alive() {
    let server = Server::start(&["--poll-timeout-ms", "300"]);
    let mut client = Client::connect(server.public);
    let started = Instant::now();
    let first = poll(&mut client, "/poll/7");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "answered after {:?}, before the timeout",
        started.elapsed()
    );
    let since: u64 = first["since"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a position in {first}"));
    assert_eq!(first, poll_answer(since, &[], &[]));

    let started = Instant::now();
    let second = poll(&mut client, &format!("/poll/7?since={since}"));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(second, poll_answer(since, &[], &[]));

    // What came between two polls is in the next one, at once.
    let mut sse = subscribe(server.public, "/events/7");
    sse.expect_position_numbers();
    publish(&server, ID, "a");
    let a = expect_message(&mut sse, "a");
    assert!(a > since);
    let third = poll(&mut client, &format!("/poll/7?since={since}"));
    assert_eq!(third, poll_answer(a, &[], &[(a, "a")]));
}

/// A kept-alive connection with no next poll is closed after `--request-timeout-ms`, quietly
/// (no 408 that a client could take for the answer to a request it is sending).
#[test]
fn an_idle_kept_alive_poll_connection_is_closed_quietly() {
    let server = Server::start(&["--poll-timeout-ms", "100", "--request-timeout-ms", "300"]);
    let mut client = Client::connect(server.public);
    let first = poll(&mut client, "/poll/7");
    assert_eq!(first["messages"], json!([]));
    assert_eq!(client.read_to_end(), b"", "closed without a word");
}

/// Long-poll with news: `?since=` answers at once with what was missed; a poll that is up to
/// date waits and is woken by the next message.
#[test]
fn long_poll_resume_and_wake() {
    let server = Server::start(&["--poll-timeout-ms", "8000"]);
    let mut sse = subscribe(server.public, "/events/7");
    let start = sse.expect_position_numbers();
    let mut publisher = Publisher::connect(&server);
    publisher.send(ID, "a");
    publisher.send(ID, "b");
    let a = expect_message(&mut sse, "a");
    let b = expect_message(&mut sse, "b");

    let mut client = Client::connect(server.public);
    let started = Instant::now();
    let missed = poll(&mut client, &format!("/poll/7?since={start}"));
    assert_eq!(missed, poll_answer(b, &[], &[(a, "a"), (b, "b")]));
    assert!(started.elapsed() < Duration::from_secs(4), "not at once");

    client.write(&get(&format!("/poll/7?since={b}")));
    eventually_subscribers(&server, 2);
    assert_eq!(
        client.unread_within(Duration::from_millis(200)),
        b"",
        "the poll answered with nothing new"
    );
    let started = Instant::now();
    let waker = std::thread::spawn(move || publisher.send(ID, "c"));
    let woken = poll_body(&client.read_response());
    assert!(started.elapsed() < Duration::from_secs(4), "woken late");
    assert_eq!(waker.join().expect("publisher thread"), 2);
    let c = expect_message(&mut sse, "c");
    assert_eq!(woken, poll_answer(c, &[], &[(c, "c")]));
}

/// A poll answer holds at most `--queue-messages-max` messages; the rest wait in the history
/// for the next poll: a client that polls on from each answer's position gets every message
/// once, in order, and no gap while the history holds them.
#[test]
fn long_poll_answers_in_parts() {
    let server = Server::start(&["--queue-messages-max", "2", "--poll-timeout-ms", "8000"]);
    let mut sse = subscribe(server.public, "/events/7");
    let start = sse.expect_position_numbers();
    // (A stream would be cut as a slow consumer by the batch below.)
    drop(sse);
    eventually_subscribers(&server, 0);
    let mut client = Client::connect(server.public);
    client.write(&get(&format!("/poll/7?since={start}")));
    eventually_subscribers(&server, 1);
    // One batch: the five messages reach the waiting poll together.
    let batch = request(
        server.publish,
        &post("/send", b"7 m1\n7 m2\n7 m3\n7 m4\n7 m5\n"),
    );
    assert_eq!(batch.text(), "{\"messages\":5,\"connections\":5}\n");

    let mut got = Vec::new();
    let mut seqs = Vec::new();
    let mut body = poll_body(&client.read_response());
    loop {
        assert_eq!(body["gap"], json!([]), "{body}");
        let messages = body["messages"].as_array().expect("messages").clone();
        assert!(messages.len() <= 2, "{body}");
        for m in &messages {
            got.push(m["data"].as_str().expect("data").to_owned());
            seqs.push(m["seq"].as_u64().expect("a seq"));
        }
        if got.len() >= 5 {
            break;
        }
        assert!(
            !messages.is_empty(),
            "an empty answer after {got:?}: {body}"
        );
        let since = body["since"].as_str().expect("a position").to_owned();
        body = poll(&mut client, &format!("/poll/7?since={since}"));
    }
    assert_eq!(
        got,
        ["m1", "m2", "m3", "m4", "m5"],
        "every message once, in order"
    );
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

/// The same across ids: an answer filled by one id's replay leaves the other id's messages
/// for the next poll (the position must not move past them).
#[test]
fn long_poll_answers_in_parts_across_ids() {
    let server = Server::start(&["--queue-messages-max", "2", "--poll-timeout-ms", "300"]);
    // A position before the messages below, for both ids (one number applies to every id).
    let start = {
        let mut client = Client::connect(server.public);
        let body = poll(&mut client, "/poll/7,8");
        *position(body["since"].as_str().expect("a position"))
            .iter()
            .max()
            .expect("two ids")
    };
    let mut publisher = Publisher::connect(&server);
    for (id, msg) in [(7, "a1"), (7, "a2"), (8, "b1"), (8, "b2")] {
        publisher.send(id, msg);
    }
    let mut client = Client::connect(server.public);
    let mut got = Vec::new();
    let mut since = start.to_string();
    for _ in 0..4 {
        let body = poll(&mut client, &format!("/poll/7,8?since={since}"));
        assert_eq!(body["gap"], json!([]), "{body}");
        let messages = body["messages"].as_array().expect("messages");
        if messages.is_empty() {
            break;
        }
        got.extend(
            messages
                .iter()
                .map(|m| m["data"].as_str().unwrap().to_owned()),
        );
        since = body["since"].as_str().expect("a position").to_owned();
    }
    got.sort();
    assert_eq!(got, ["a1", "a2", "b1", "b2"], "every message once");
}

fn eventually_subscribers(server: &Server, n: u64) {
    common::eventually(&format!("{n} subscribers"), || {
        total(&metrics(server), "comet_subscribers") == n
    });
}

// ---- gaps ---------------------------------------------------------------------------------

/// `--history-messages 2`: a client that missed 5 messages is told of the gap, then gets the
/// last 2, on every transport; a position older than the server's start is a gap too.
#[test]
fn gap_when_the_history_does_not_reach_back() {
    let server = Server::start(&["--history-messages", "2"]);
    let mut watcher = subscribe(server.public, "/events/7");
    let start = watcher.expect_position_numbers();
    let mut publisher = Publisher::connect(&server);
    let mut seqs = Vec::new();
    for i in 1..=5 {
        let msg = format!("m{i}");
        publisher.send(ID, &msg);
        seqs.push(expect_message(&mut watcher, &msg));
    }
    let (m4, m5) = (seqs[3], seqs[4]);

    let (mut sse, _) = subscribe_with(
        server.public,
        "/events/7",
        &[&format!("Last-Event-ID: {start}")],
    );
    expect_gap(&mut sse, &[ID]);
    assert_eq!(expect_message(&mut sse, "m4"), m4);
    assert_eq!(expect_message(&mut sse, "m5"), m5);
    assert_eq!(sse.expect_position_numbers(), m5.to_string());

    let mut ws = ws_connect(server.public, &format!("/ws/7?since={start}"));
    assert_eq!(ws_next(&mut ws), json!({"gap": [ID]}));
    assert_eq!(ws_expect_message(&mut ws, "m4"), m4);
    assert_eq!(ws_expect_message(&mut ws, "m5"), m5);
    assert_eq!(ws_position(&mut ws), m5.to_string());

    let mut client = Client::connect(server.public);
    assert_eq!(
        poll(&mut client, &format!("/poll/7?since={start}")),
        poll_answer(m5, &[ID], &[(m4, "m4"), (m5, "m5")])
    );

    // Inside the window: no gap.
    let mut inside = subscribe(server.public, &format!("/events/7?since={}", seqs[2]));
    expect_message(&mut inside, "m4");

    // From before anything this server numbered: a gap for an id whose history forgot
    // something; none for an id that never had a message (since_zero.rs has the rest).
    let mut old = subscribe(server.public, "/events/7?since=1");
    expect_gap(&mut old, &[ID]);
    expect_message(&mut old, "m4");
    let mut fresh = subscribe(server.public, "/events/9?since=1");
    fresh.expect_position_numbers();
    let mut ws = ws_connect(server.public, "/ws/9?since=1");
    ws_position(&mut ws);

    assert_eq!(total(&metrics(&server), "comet_resume_gaps_total"), 4);
}

/// `--history-age-ms`: past its age a message leaves the history, and a client that missed it
/// is told of the gap.
#[test]
fn gap_after_the_history_age() {
    let server = Server::start(&["--history-age-ms", "300"]);
    let mut sse = subscribe(server.public, "/events/7");
    let start = sse.expect_position_numbers();
    publish(&server, ID, "old");
    expect_message(&mut sse, "old");
    common::eventually("the message leaves the history", || {
        total(&metrics(&server), "comet_history_messages") == 0
    });
    let mut resumed = subscribe(server.public, &format!("/events/7?since={start}"));
    expect_gap(&mut resumed, &[ID]);
    resumed.expect_position_numbers();
}

/// A position carries the server's epoch: one from another server (another node, or before a
/// restart) cannot be compared with this one's numbers, so the client is told of a gap (and
/// gets what the history holds), on every transport.
#[test]
fn a_position_from_another_server_is_a_gap() {
    let server = Server::start(&[]);
    let mut sse = subscribe(server.public, "/events/7");
    let pos = sse.expect_position();
    let (epoch, seq) = pos.split_once(':').expect("<epoch>:<seq>");
    let other = if epoch == "00000000" {
        "00000001"
    } else {
        "00000000"
    };
    let foreign = format!("{other}:{seq}");
    publish(&server, ID, "after");
    expect_message(&mut sse, "after");
    // The same numbers with this server's epoch: nothing missed.
    let (mut same, _) = subscribe_with(
        server.public,
        "/events/7",
        &[&format!("Last-Event-ID: {pos}")],
    );
    let event = same.next_event().expect("the message after the position");
    assert_eq!(event.data.as_deref(), Some("after"));
    // Another server's: a gap, then what the history holds.
    let (mut sse, _) = subscribe_with(
        server.public,
        "/events/7",
        &[&format!("Last-Event-ID: {foreign}")],
    );
    expect_gap(&mut sse, &[ID]);
    assert_eq!(
        sse.next_event().and_then(|e| e.data).as_deref(),
        Some("after")
    );
    let mut ws = ws_connect(server.public, &format!("/ws/7?since={foreign}"));
    assert_eq!(ws_next(&mut ws), json!({ "gap": [ID] }));
    let mut client = Client::connect(server.public);
    let body = poll(&mut client, &format!("/poll/7?since={foreign}"));
    assert_eq!(body["gap"], json!([ID]));
    // A restarted server has a new epoch: the old position is a gap there too.
    drop(server);
    let restarted = Server::start(&[]);
    let mut sse = subscribe(restarted.public, &format!("/events/7?since={pos}"));
    expect_gap(&mut sse, &[ID]);
}

// ---- heartbeats ---------------------------------------------------------------------------

/// `--heartbeat-ms`: idle SSE streams get a `:` comment, WebSockets a ping, and the seed's
/// `/test/` streams nothing unless `--test-heartbeats`.
#[test]
fn heartbeats_on_idle_streams() {
    // One worker: every stream is in the same heartbeat rounds.
    let server = Server::start(&["--heartbeat-ms", "200", "--workers", "1"]);
    let mut test = subscribe(server.public, "/test/7");
    let mut sse = subscribe(server.public, "/events/7");
    sse.expect_position_numbers();
    let mut ws = ws_connect(server.public, "/ws/7");
    ws_position(&mut ws);
    sse.expect_chunk(":\n\n");
    // A second round, which began after /test/7 had logged in.
    sse.expect_chunk(":\n\n");
    match ws.read().expect("a ping") {
        Message::Ping(payload) => assert!(payload.is_empty(), "{payload:?}"),
        other => panic!("expected a ping, got {other:?}"),
    }
    assert_eq!(
        test.unread_within(Duration::from_millis(300)),
        b"",
        "/test/ got a heartbeat without --test-heartbeats"
    );
    assert!(total(&metrics(&server), "comet_heartbeats_total") >= 3);

    let server = Server::start(&["--heartbeat-ms", "200", "--test-heartbeats"]);
    let mut test = subscribe(server.public, "/test/7");
    test.expect_chunk("\n");
    test.expect_chunk("\n");
}

// ---- WebSocket protocol -------------------------------------------------------------------

#[test]
fn websocket_pings_and_closes() {
    let server = Server::start(&[]);
    let mut ws = ws_connect(server.public, "/ws/7");
    ws_position(&mut ws);
    ws.send(Message::Ping(tungstenite::Bytes::from_static(
        b"are you there",
    )))
    .expect("send a ping");
    match ws.read().expect("a pong") {
        Message::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    // The stream goes on after a ping.
    assert_eq!(publish(&server, ID, "after the ping"), 1);
    ws_expect_message(&mut ws, "after the ping");

    let mut raw = raw_ws(server.public, "/ws/7");
    raw.write(&client_frame(0x89, b""));
    assert_eq!(read_frame(&mut raw), (0x0a, Vec::new()));
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice("bye \u{e9}".as_bytes());
    raw.write(&client_frame(0x88, &close));
    expect_close(&mut raw, 1000, "client close 1000");

    let mut raw = raw_ws(server.public, "/ws/7");
    raw.write(&client_frame(0x88, &4001u16.to_be_bytes()));
    expect_close(&mut raw, 4001, "client close 4001");

    common::eventually("the closed sockets are logged out", || {
        publish(&server, ID, "x") == 1
    });
    assert_eq!(common::closed(&metrics(&server), "protocol"), 0);
}

#[test]
fn websocket_bad_frames_close_with_a_code() {
    let server = Server::start(&[]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("an unmasked frame", vec![0x81, 0x02, b'h', b'i'], 1002),
        ("an unmasked close", vec![0x88, 0x02, 0x03, 0xe8], 1002),
        ("reserved bits", client_frame(0xc1, b"x"), 1002),
        ("an unknown opcode", client_frame(0x83, b""), 1002),
        ("a fragmented ping", client_frame(0x09, b""), 1002),
        (
            "a ping over 125 bytes",
            client_frame_header(0x89, 126),
            1002,
        ),
        ("a close code of 1 byte", client_frame(0x88, &[3]), 1002),
        (
            "a close reason not UTF-8",
            client_frame(0x88, &[0x03, 0xe8, 0xff]),
            1007,
        ),
        ("a text frame", client_frame(0x81, b"hello"), 1003),
        ("a binary frame", client_frame(0x82, &[1, 2, 3]), 1003),
        (
            "a frame over 4096 bytes",
            client_frame_header(0x82, 5000),
            1009,
        ),
    ];
    for (what, bytes, code) in &cases {
        let mut raw = raw_ws(server.public, "/ws/7");
        raw.write(bytes);
        expect_close(&mut raw, *code, what);
    }
    assert_eq!(
        common::closed(&metrics(&server), "protocol"),
        cases.len() as u64
    );
}

#[test]
fn websocket_handshake_errors() {
    let server = Server::start(&[]);
    let r = error_for(server.public, &ws_handshake("/ws/7", "8", &[]), 426);
    assert_eq!(r.head.header("sec-websocket-version"), Some("13"));
    let no_key = get_with(
        "/ws/7",
        &[
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
        ],
    );
    error_for(server.public, &no_key, 400);
    error_for(server.public, &get("/ws/7"), 400);
}

// ---- slow consumers -----------------------------------------------------------------------

const SLOW_FLAGS: [&str; 4] = ["--queue-messages-max", "8", "--queue-bytes-max", "4096"];
/// A message fills most of `--queue-bytes-max` 4096: two never fit together.
const BIG: usize = 3000;
/// Far more than loopback's socket buffers hold for a reader that never reads.
const FLOOD_MAX: usize = 8000;
/// Resident memory the server stays under.
const RSS_MAX: u64 = 64 << 20;

fn big_message(i: usize) -> String {
    let mut msg = format!("m{i:05} ");
    msg.extend(std::iter::repeat_n('x', BIG - msg.len()));
    msg
}

/// Publishes big messages to `ID` one at a time, each read by `reader` before the next goes
/// out (so the reader never has more than one queued), until `done(metrics)`; returns how
/// many went out.
fn flood_until(server: &Server, reader: &mut Client, done: impl Fn(&str) -> bool) -> usize {
    let mut publisher = Publisher::connect(server);
    for i in 0..FLOOD_MAX {
        let msg = big_message(i);
        assert!(publisher.send(ID, &msg) >= 1);
        let event = reader.next_event().expect("the reader's stream goes on");
        assert_eq!(event.data.as_deref(), Some(msg.as_str()), "message {i}");
        if i % 16 == 15 && done(&metrics(server)) {
            return i + 1;
        }
    }
    panic!("not done after {FLOOD_MAX} messages:\n{}", metrics(server));
}

/// The `data:` of the SSE events in `bytes` (a chunked stream, maybe cut anywhere), in order.
fn events_in(bytes: &[u8]) -> Vec<String> {
    let mut events = Vec::new();
    let mut rest = bytes;
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..end]).expect("ASCII chunk size");
        let size = usize::from_str_radix(size, 16).expect("hex chunk size");
        let Some(chunk) = rest.get(end + 2..end + 2 + size) else {
            break;
        };
        if size == 0 {
            break;
        }
        let event = Event::parse(std::str::from_utf8(chunk).expect("UTF-8"));
        events.extend(event.data);
        rest = rest.get(end + 4 + size..).unwrap_or(&[]);
    }
    events
}

fn rss(server: &Server) -> u64 {
    let text = metrics(server);
    samples(&text, "process_resident_memory_bytes")
        .first()
        .unwrap_or_else(|| panic!("no RSS in:\n{text}"))
        .1
}

/// Default policy: a subscriber that stops reading is cut once its queue is full, and the
/// other subscriber of the id gets every message.
#[test]
fn slow_consumer_is_disconnected() {
    let server = Server::start(&SLOW_FLAGS);
    let mut slow = subscribe(server.public, "/events/7");
    let mut reader = subscribe(server.public, "/events/7");
    reader.expect_position_numbers();
    let sent = flood_until(&server, &mut reader, |m| {
        common::closed(m, "slow_consumer") > 0
    });
    let text = metrics(&server);
    assert_eq!(common::closed(&text, "slow_consumer"), 1, "{text}");
    assert!(rss(&server) < RSS_MAX);

    // The slow one got the beginning, in order, then EOF.
    let got = events_in(&slow.read_to_end());
    assert!(
        !got.is_empty() && got.len() < sent,
        "{} of {sent}",
        got.len()
    );
    for (i, data) in got.iter().enumerate() {
        assert_eq!(data, &big_message(i));
    }
    // The reader is still there.
    assert_eq!(publish(&server, ID, "after"), 1);
    expect_message(&mut reader, "after");
}

/// `--slow-consumer drop-oldest`: the slow subscriber stays, losing its oldest queued
/// messages; the other subscriber gets every message.
#[test]
fn slow_consumer_drops_oldest() {
    let mut flags = SLOW_FLAGS.to_vec();
    flags.extend(["--slow-consumer", "drop-oldest"]);
    let server = Server::start(&flags);
    let mut slow = subscribe(server.public, "/events/7");
    slow.expect_position_numbers();
    let mut reader = subscribe(server.public, "/events/7");
    reader.expect_position_numbers();
    let sent = flood_until(&server, &mut reader, |m| {
        total(m, "comet_messages_dropped_oldest_total") > 0
    });
    assert_eq!(
        publish(&server, ID, "last"),
        2,
        "the slow one is still there"
    );
    expect_message(&mut reader, "last");
    let text = metrics(&server);
    assert_eq!(common::closed(&text, "slow_consumer"), 0, "{text}");
    assert!(rss(&server) < RSS_MAX);

    // The slow one reads now: messages in order with some missing, then the newest.
    let mut got = Vec::new();
    loop {
        let event = slow.next_event().expect("the slow stream goes on");
        let data = event.data.expect("a message");
        if data == "last" {
            break;
        }
        got.push(data);
    }
    assert!(got.len() < sent, "{} of {sent}: nothing dropped", got.len());
    let index = |data: &String| -> usize { data[1..6].parse().expect("a numbered message") };
    for pair in got.windows(2) {
        assert!(index(&pair[0]) < index(&pair[1]), "out of order");
    }
    for data in &got {
        assert_eq!(data, &big_message(index(data)));
    }
}

// ---- disconnect, metrics ------------------------------------------------------------------

/// `POST /disconnect/<id>` ends every stream of the id properly and only those.
#[test]
fn disconnect_ends_the_streams_of_an_id() {
    let server = Server::start(&[]);
    let mut sse = subscribe(server.public, "/events/7");
    sse.expect_position_numbers();
    let mut test = subscribe(server.public, "/test/7");
    let mut ws = raw_ws(server.public, "/ws/7");
    let mut other = subscribe(server.public, "/events/8");
    other.expect_position_numbers();

    let r = request(server.publish, &post("/disconnect/7", b""));
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.text(), "{\"id\":7,\"connections\":3}\n");
    assert_eq!(sse.read_chunk(), None, "the last chunk");
    sse.expect_eof();
    assert_eq!(test.read_chunk(), None, "the last chunk");
    test.expect_eof();
    expect_close(&mut ws, 1000, "disconnect");

    assert_eq!(publish(&server, 8, "still here"), 1);
    expect_message(&mut other, "still here");
    common::eventually("7 has no connections left", || {
        publish(&server, ID, "x") == 0
    });
    let r = request(server.publish, &post("/disconnect/9", b""));
    assert_eq!(r.text(), "{\"id\":9,\"connections\":0}\n");
}

#[test]
fn metrics_has_history_and_memory_families() {
    let server = Server::start(&[]);
    let mut sse = subscribe(server.public, "/events/7");
    sse.expect_position_numbers();
    for msg in ["one", "two", "three"] {
        publish(&server, ID, msg);
        expect_message(&mut sse, msg);
    }
    let text = metrics(&server);
    for name in [
        "comet_history_bytes",
        "comet_history_ids",
        "comet_history_messages",
        "comet_heap_bytes",
        "comet_heap_baseline_bytes",
        "comet_kernel_tcp_sockets",
        "process_resident_memory_bytes",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} gauge\n")),
            "no {name} in:\n{text}"
        );
    }
    assert_eq!(total(&text, "comet_history_ids"), 1);
    assert_eq!(total(&text, "comet_history_messages"), 3);
    assert!(total(&text, "comet_history_bytes") >= "onetwothree".len() as u64);
    let value = |name: &str| samples(&text, name).first().map(|s| s.1);
    assert!(value("comet_heap_bytes").is_some() && value("comet_heap_baseline_bytes").is_some());
    assert!(!text.contains("per_connection") && !text.contains("per_socket"));
    // At least the subscriber's and the metrics request's sockets, both ends.
    assert!(value("comet_kernel_tcp_sockets").is_some_and(|n| n >= 2));
}
