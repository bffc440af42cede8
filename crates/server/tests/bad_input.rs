//! Bad input gets a clear answer (a status, a one-line reason, `Connection: close`, then
//! close) and never disturbs other connections.

mod common;

use common::{
    error_for, expect_error, get, post, post_send, publish, request, seed_msg, subscribe, Client,
    Publisher, Server,
};

#[test]
fn bad_ids_get_400() {
    let server = Server::start(&["--ids-per-connection-max", "4"]);
    for path in [
        "/test/abc",
        "/test/",
        "/test",
        "/test/18446744073709551616",
        "/test/99999999999999999999999",
        "/test/-1",
        "/test/1,,2",
        "/test/1,abc",
        "/test/1,2,",
        "/test/1,2,3,4,5",
        "/events/x",
        "/events/",
    ] {
        let reason = error_for(server.public, &get(path), 400).text();
        assert!(!reason.is_empty(), "{path}");
    }
    // The edges that are fine: the largest u64, and as many distinct ids as allowed.
    subscribe(server.public, "/test/18446744073709551615");
    subscribe(server.public, "/test/1,2,3,4,4,4");

    for id in ["abc", "", "18446744073709551616", "1,2"] {
        error_for(server.publish, &post_send(id, b"msg"), 400);
    }
}

#[test]
fn unknown_paths_get_404() {
    let server = Server::start(&[]);
    for path in ["/", "/nope", "/tests/1", "/metrics"] {
        error_for(server.public, &get(path), 404);
    }
    // The public listener cannot publish.
    error_for(server.public, &post_send("1", b"sneaky"), 404);
    error_for(server.public, &post("/send", b"1 sneaky\n"), 404);
    for path in ["/", "/test/1", "/events/1", "/sendx", "/metricsx"] {
        error_for(server.publish, &get(path), 404);
    }
}

#[test]
fn wrong_methods_get_405_with_allow() {
    let server = Server::start(&[]);
    let cases = [
        (server.public, post("/test/1", b""), "GET, HEAD"),
        (
            server.public,
            b"DELETE /events/1 HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            "GET, HEAD",
        ),
        (server.publish, get("/send/1"), "POST"),
        (server.publish, get("/send"), "POST"),
        (server.publish, post("/metrics", b""), "GET, HEAD"),
    ];
    for (addr, req, allow) in cases {
        let response = error_for(addr, &req, 405);
        assert_eq!(
            response.head.header("allow"),
            Some(allow),
            "{:?}",
            String::from_utf8_lossy(&req)
        );
    }
}

#[test]
fn oversized_headers_get_431() {
    let server = Server::start(&["--header-bytes-max", "1024"]);
    let pad = "p".repeat(2000);
    let public = format!("GET /test/1 HTTP/1.1\r\nHost: localhost\r\nX-Pad: {pad}\r\n\r\n");
    error_for(server.public, public.as_bytes(), 431);
    let publish = format!(
        "POST /send/1 HTTP/1.1\r\nHost: localhost\r\nX-Pad: {pad}\r\nContent-Length: 2\r\n\r\nhi"
    );
    error_for(server.publish, publish.as_bytes(), 431);
    // A head that never ends is rejected once it passes the limit, not at the timeout.
    let endless = format!("GET /test/1 HTTP/1.1\r\nHost: localhost\r\nX-Pad: {pad}");
    error_for(server.public, endless.as_bytes(), 431);
    // Under the limit is fine.
    let small = format!(
        "GET /test/1 HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(500)
    );
    let mut client = Client::connect(server.public);
    client.write(small.as_bytes());
    assert_eq!(client.read_head().status, 200);
}

#[test]
fn oversized_bodies_get_413() {
    let server = Server::start(&["--body-bytes-max", "100"]);
    // Known from Content-Length alone: the body need not be sent.
    error_for(
        server.publish,
        b"POST /send/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 101\r\n\r\n",
        413,
    );
    error_for(server.publish, &post("/send", &[b'x'; 101]), 413);
    // Chunked: found out while decoding.
    let mut chunked =
        b"POST /send/1 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"32\r\n");
        chunked.extend_from_slice(&[b'y'; 50]);
        chunked.extend_from_slice(b"\r\n");
    }
    error_for(server.publish, &chunked, 413);
    // At the limit is fine.
    let mut subscriber = subscribe(server.public, "/test/1");
    let msg = "z".repeat(100);
    assert_eq!(publish(&server, 1, &msg), 1);
    subscriber.expect_chunk(&seed_msg(1, &msg));
}

#[test]
fn malformed_http_gets_400_and_close() {
    let server = Server::start(&[]);
    let garbage: [&[u8]; 8] = [
        b"GARBAGE\r\n\r\n",
        b"GET /test/1 HTTP/1.1\r\n\r\n", // HTTP/1.1 without Host
        b"GET /test/1 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /test/1 FTP/1.0\r\nHost: a\r\n\r\n",
        b"GET /test/1 HTTP/1.1\r\nHost a\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
        // A TLS ClientHello: rejected from its first bytes, not at the timeout.
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET /test/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc", // a body
    ];
    for bytes in garbage {
        error_for(server.public, bytes, 400);
    }
    let publish_garbage: [&[u8]; 5] = [
        b"GARBAGE\r\n\r\n",
        b"POST /send/1 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx", // no Host
        b"POST /send/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: nope\r\n\r\n",
        b"POST /send/1 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ];
    for bytes in publish_garbage {
        error_for(server.publish, bytes, 400);
    }
}

/// After a bad request on a keep-alive publish connection, the good answers before it still
/// come, in order, then the error, then close.
#[test]
fn a_bad_request_ends_a_pipeline_after_earlier_answers() {
    let server = Server::start(&[]);
    let mut client = Client::connect(server.publish);
    let mut bytes = post_send("1", b"first");
    bytes.extend_from_slice(b"GARBAGE\r\n\r\n");
    bytes.extend_from_slice(&post_send("1", b"never"));
    client.write(&bytes);
    let first = client.read_response();
    assert_eq!(first.status(), 200, "{first:?}");
    assert_eq!(first.text(), "{\"id\":1,\"connections\":0}\n");
    expect_error(&mut client, 400, "GARBAGE after a good publish");
}

/// A client that sends part of a request and stalls gets 408 and is closed.
#[test]
fn stalled_requests_time_out() {
    let server = Server::start(&["--request-timeout-ms", "500"]);
    let mut partial = Client::connect(server.public);
    partial.write(b"GET /test/1 HTTP/1.1\r\nHo");
    expect_error(&mut partial, 408, "a partial subscribe head");

    // Nothing at all: closed too (a 408 or a bare close are both fine).
    let mut silent = Client::connect(server.public);
    let rest = String::from_utf8_lossy(&silent.read_to_end()).into_owned();
    assert!(
        rest.is_empty() || rest.starts_with("HTTP/1.1 408 "),
        "silent client got {rest:?}"
    );

    // On the publish listener: a stalled head, and a stalled body.
    for bytes in [
        &b"POST /send/1 HTTP/1.1\r\nHost: localhost\r\nContent-Le"[..],
        b"POST /send/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nabc",
    ] {
        let mut client = Client::connect(server.publish);
        client.write(bytes);
        let rest = String::from_utf8_lossy(&client.read_to_end()).into_owned();
        assert!(
            rest.is_empty() || rest.starts_with("HTTP/1.1 408 "),
            "stalled publisher got {rest:?}"
        );
    }

    // The server is still fine.
    let mut subscriber = subscribe(server.public, "/test/2");
    assert_eq!(publish(&server, 2, "still here"), 1);
    subscriber.expect_chunk(&seed_msg(1, "still here"));
}

/// While other clients send garbage, oversized heads, stall mid-request or say nothing, a
/// subscriber on the same server still receives its messages and new clients are served.
#[test]
fn noisy_neighbours_do_not_disturb_a_subscriber() {
    let server = Server::start(&["--workers", "2", "--header-bytes-max", "1024"]);
    let mut subscriber = subscribe(server.public, "/test/1");

    // Stalled clients stay open for the default 10 s request timeout: all of this happens
    // while they are stalled.
    let mut stalled_subscribe = Client::connect(server.public);
    stalled_subscribe.write(b"GET /test/1 HTTP/1.1\r\nHost: localhost\r\n");
    let mut stalled_publish = Client::connect(server.publish);
    stalled_publish.write(
        b"POST /send/1 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    );
    let silent: Vec<Client> = (0..8).map(|_| Client::connect(server.public)).collect();

    let mut garbage = Client::connect(server.public);
    garbage.write(&[0xffu8; 3000]);
    let mut huge = Client::connect(server.public);
    huge.write(format!("GET /test/1 HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(5000)).as_bytes());
    let mut chatty = subscribe(server.public, "/test/1");
    chatty.write(b"unexpected");

    let mut publisher = Publisher::connect(&server);
    let reached = publisher.send(1, "through the noise");
    assert!(
        (1..=2).contains(&reached),
        "the chatty subscriber may or may not be gone yet: {reached}"
    );
    subscriber.expect_chunk(&seed_msg(1, "through the noise"));

    let garbage_answer = garbage.read_response();
    assert_eq!(garbage_answer.status(), 400, "{garbage_answer:?}");
    let huge_answer = huge.read_response();
    assert_eq!(huge_answer.status(), 431, "{huge_answer:?}");

    let mut late = subscribe(server.public, "/test/1");
    assert!(publisher.send(1, "again") >= 2);
    subscriber.expect_chunk(&seed_msg(2, "again"));
    late.expect_chunk(&seed_msg(1, "again"));
    drop(silent);
    let response = request(
        server.publish,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(response.status(), 200);
}
