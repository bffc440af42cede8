//! The publish API through the real binary: keep-alive and pipelining, chunked bodies, the
//! batch endpoint, `comet send`, and /metrics.

mod common;

use std::process::Command;

use common::{
    expect_error, json_number, metrics, post, post_send, publish, samples, seed_msg, subscribe,
    total, Client, Server,
};

/// Many publishes written at once on one keep-alive connection are answered in request order,
/// each with its own count, even though their ids' owners answer in any order.
#[test]
fn pipelined_publishes_are_answered_in_order() {
    let server = Server::start(&["--workers", "2"]);
    // Id 1: nobody; id 2: one connection; id 3: two.
    let mut two = subscribe(server.public, "/test/2");
    let mut three = [
        subscribe(server.public, "/test/3"),
        subscribe(server.public, "/test/3"),
    ];
    let mut client = Client::connect(server.publish);
    for round in 0..2 {
        let mut bytes = Vec::new();
        for i in 0..30u64 {
            bytes.extend_from_slice(&post_send(
                &(1 + i % 3).to_string(),
                format!("m{i}").as_bytes(),
            ));
            if i == 15 {
                bytes.extend_from_slice(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
            }
        }
        if round == 0 {
            client.write(&bytes);
        } else {
            // The same requests cut at arbitrary places.
            for piece in bytes.chunks(7) {
                client.write(piece);
            }
        }
        for i in 0..30u64 {
            let response = client.read_response();
            assert_eq!(response.status(), 200, "request {i}: {response:?}");
            let id = 1 + i % 3;
            assert_eq!(
                response.text(),
                format!("{{\"id\":{id},\"connections\":{}}}\n", id - 1),
                "request {i}"
            );
            if i == 15 {
                let metrics = client.read_response();
                assert_eq!(metrics.status(), 200);
                assert!(metrics.text().contains("comet_connections"), "{metrics:?}");
            }
        }
    }
    for round in 0..2u64 {
        for i in (0..30u64).filter(|i| i % 3 == 1) {
            let n = round * 10 + i / 3 + 1;
            two.expect_chunk(&seed_msg(n, &format!("m{i}")));
        }
        for i in (0..30u64).filter(|i| i % 3 == 2) {
            let n = round * 10 + i / 3 + 1;
            for subscriber in &mut three {
                subscriber.expect_chunk(&seed_msg(n, &format!("m{i}")));
            }
        }
    }
}

#[test]
fn chunked_request_body() {
    let server = Server::start(&[]);
    let mut subscriber = subscribe(server.public, "/test/4");
    let mut client = Client::connect(server.publish);
    client.write(b"POST /send/4 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
    client.write(b"5\r\nHello\r\n");
    client.write(b"6;note=ext\r\n World\r\n");
    client.write(b"0\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status(), 200, "{response:?}");
    assert_eq!(response.text(), "{\"id\":4,\"connections\":1}\n");
    subscriber.expect_chunk(&seed_msg(1, "Hello World"));

    // The connection stays usable after a chunked body.
    client.write(&post_send("4", b"next"));
    assert_eq!(
        json_number(&client.read_response().text(), "connections"),
        1
    );
    subscriber.expect_chunk(&seed_msg(2, "next"));
}

#[test]
fn expect_100_continue() {
    let server = Server::start(&[]);
    let mut subscriber = subscribe(server.public, "/test/4");
    let mut client = Client::connect(server.publish);
    client.write(
        b"POST /send/4 HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    let interim = client.read_head();
    assert_eq!(interim.status, 100, "{interim:?}");
    client.write(b"hello");
    let response = client.read_response();
    assert_eq!(response.text(), "{\"id\":4,\"connections\":1}\n");
    subscriber.expect_chunk(&seed_msg(1, "hello"));
}

#[test]
fn connection_close_and_http_1_0_publishers_are_closed_after_the_answer() {
    let server = Server::start(&[]);
    for head in [
        "POST /send/1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
        "POST /send/1 HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
    ] {
        let mut client = Client::connect(server.publish);
        client.write(head.as_bytes());
        let response = client.read_response();
        assert_eq!(response.status(), 200, "{head:?}: {response:?}");
        assert_eq!(response.text(), "{\"id\":1,\"connections\":0}\n");
        client.expect_eof();
    }
}

/// `POST /send`: one `<id> <message>` per line. Order is kept per id (one owner each), not
/// across ids (owners run in parallel).
#[test]
fn batch_publish() {
    let server = Server::start(&["--workers", "2"]);
    let mut ten = subscribe(server.public, "/test/10");
    let mut eleven = subscribe(server.public, "/test/11");
    let mut both = subscribe(server.public, "/test/10,11");
    let body = b"10 hello\n11 world\n\n10 again, with spaces\r\n12 nobody";
    let response = common::request(server.publish, &post("/send", body));
    assert_eq!(response.status(), 200, "{response:?}");
    assert_eq!(
        response.head.header("content-type"),
        Some("application/json")
    );
    assert_eq!(response.text(), "{\"messages\":4,\"connections\":6}\n");

    ten.expect_chunk(&seed_msg(1, "hello"));
    ten.expect_chunk(&seed_msg(2, "again, with spaces"));
    eleven.expect_chunk(&seed_msg(1, "world"));
    let mut got: Vec<(u64, String)> = (0..3)
        .map(|_| {
            let chunk = String::from_utf8(both.read_chunk().expect("a chunk")).unwrap();
            let rest = chunk.strip_prefix("Recvd msg #").expect("seed format");
            let (n, rest) = rest.split_once(": '").expect("seed format");
            let msg = rest.strip_suffix("'<br/>").expect("seed format");
            (n.parse().unwrap(), msg.to_owned())
        })
        .collect();
    let position = |msg: &str| got.iter().position(|(_, m)| m == msg).unwrap();
    assert!(
        position("hello") < position("again, with spaces"),
        "{got:?}"
    );
    got.sort();
    let numbers: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [1, 2, 3]);
    let mut messages: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
    messages.sort();
    assert_eq!(messages, ["again, with spaces", "hello", "world"]);
}

/// A bad line rejects the whole batch: 400 naming the line, and nothing is sent.
#[test]
fn batch_with_a_bad_line_sends_nothing() {
    let server = Server::start(&[]);
    let mut subscriber = subscribe(server.public, "/test/20");
    for (body, line) in [
        (&b"20 fine\nno-space-here\n"[..], 2),
        (b"20 fine\n20 fine too\nabc not an id\n", 3),
        (b"18446744073709551616 too big\n", 1),
        (b"\n\n20 ok\n x\n", 4),
    ] {
        let mut client = Client::connect(server.publish);
        client.write(&post("/send", body));
        let response = expect_error(&mut client, 400, &String::from_utf8_lossy(body));
        assert!(
            response.text().starts_with(&format!("line {line}: ")),
            "{:?}: {:?}",
            String::from_utf8_lossy(body),
            response.text()
        );
    }
    assert_eq!(publish(&server, 20, "first real"), 1);
    subscriber.expect_chunk(&seed_msg(1, "first real"));
}

fn comet_send(server: &Server, id: &str, msg: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_comet"))
        .args(["send", "--to", &server.publish.to_string(), id, msg])
        .env("NO_COLOR", "1")
        .output()
        .expect("run comet send")
}

#[test]
fn comet_send_command() {
    let server = Server::start(&[]);
    let nobody = comet_send(&server, "77", "anyone?");
    assert!(nobody.status.success(), "{nobody:?}");
    assert_eq!(
        String::from_utf8_lossy(&nobody.stdout),
        "sent to 77 (0 connections)\n"
    );

    let mut first = subscribe(server.public, "/test/77");
    let one = comet_send(&server, "77", "hi <there>");
    assert!(one.status.success(), "{one:?}");
    assert_eq!(
        String::from_utf8_lossy(&one.stdout),
        "sent to 77 (1 connection)\n"
    );
    first.expect_chunk(&seed_msg(1, "hi &lt;there&gt;"));

    let mut second = subscribe(server.public, "/test/77");
    let two = comet_send(&server, "77", "both");
    assert_eq!(
        String::from_utf8_lossy(&two.stdout),
        "sent to 77 (2 connections)\n"
    );
    first.expect_chunk(&seed_msg(2, "both"));
    second.expect_chunk(&seed_msg(1, "both"));

    let bad = comet_send(&server, "abc", "x");
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("400"),
        "{bad:?}"
    );
}

#[test]
fn metrics_counters_move() {
    let server = Server::start(&["--workers", "2"]);
    let before = metrics(&server);
    for name in [
        "comet_connections",
        "comet_ids",
        "comet_messages_published_total",
        "comet_messages_delivered_total",
        "comet_messages_dropped_total",
        "comet_requests_total",
        "comet_bad_requests_total",
    ] {
        assert!(
            before.contains(&format!("# TYPE {name} ")),
            "no {name} in:\n{before}"
        );
        assert_eq!(
            samples(&before, name).len(),
            2,
            "one {name} sample per worker:\n{before}"
        );
    }
    // Per worker and transport.
    assert_eq!(
        samples(&before, "comet_subscribers").len(),
        2 * 4,
        "{before}"
    );
    let rss = samples(&before, "process_resident_memory_bytes");
    assert_eq!(rss.len(), 1, "{before}");
    assert!(rss[0].1 > 1 << 20, "RSS {rss:?}");
    assert_eq!(total(&before, "comet_subscribers"), 0);
    assert_eq!(total(&before, "comet_ids"), 0);

    let mut a = subscribe(server.public, "/test/30");
    let mut b = subscribe(server.public, "/test/30,31");
    for i in 1..=3 {
        assert_eq!(publish(&server, 30, &format!("n{i}")), 2);
    }
    assert_eq!(publish(&server, 32, "nobody"), 0);
    for i in 1..=3 {
        a.expect_chunk(&seed_msg(i, &format!("n{i}")));
        b.expect_chunk(&seed_msg(i, &format!("n{i}")));
    }
    common::error_for(server.publish, &post_send("abc", b"x"), 400);

    let after = metrics(&server);
    let delta = |name: &str| total(&after, name) - total(&before, name);
    assert_eq!(delta("comet_messages_published_total"), 4, "{after}");
    assert_eq!(delta("comet_messages_delivered_total"), 6, "{after}");
    assert_eq!(delta("comet_bad_requests_total"), 1, "{after}");
    assert!(delta("comet_requests_total") >= 5, "{after}");
    assert_eq!(total(&after, "comet_subscribers"), 2, "{after}");
    assert_eq!(total(&after, "comet_ids"), 2, "{after}");
    assert!(total(&after, "comet_connections") >= 2, "{after}");

    // HEAD /metrics: the head only.
    let mut client = Client::connect(server.publish);
    client.write(b"HEAD /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let head = client.read_head();
    assert_eq!(head.status, 200);
    assert!(
        head.header("content-type")
            .is_some_and(|v| v.starts_with("text/plain")),
        "{head:?}"
    );
    client.expect_eof();
}

/// A publisher that pipelines past the outstanding-answer bound is paused and resumed, and its
/// messages still reach their subscribers in request order. Two workers, ids on both: answers
/// from the other worker pile up (the pause), and answers counted on the publisher's own worker
/// arrive while earlier requests' publishes are being carried out, which is when a resume
/// could read later requests out of turn.
#[test]
fn a_paused_and_resumed_publisher_keeps_its_order() {
    use std::io::{Read, Write};
    const N: u64 = 4000; // per id; past PIPELINE_MAX (1024) outstanding answers
                         // A burst of a thousand publishes is framed in one loop iteration: the subscribers' queue
                         // bounds are raised so that they are not cut as slow consumers.
    let server = Server::start(&[
        "--workers",
        "2",
        "--queue-messages-max",
        "100000",
        "--queue-bytes-max",
        "100000000",
    ]);
    // Ids 1..=4: owned by both workers (the shard hash spreads them).
    let ids = [1u64, 2, 3, 4];
    let readers: Vec<_> = ids
        .iter()
        .map(|&id| {
            let mut sub = subscribe(server.public, &format!("/test/{id}"));
            // Read as it comes.
            std::thread::spawn(move || {
                for i in 1..=N {
                    sub.expect_chunk(&seed_msg(i, &format!("{id}:{i}")));
                }
            })
        })
        .collect();
    let stream = std::net::TcpStream::connect(server.publish).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        for i in 1..=N {
            for id in ids {
                let msg = format!("{id}:{i}");
                bytes.extend_from_slice(&post_send(&id.to_string(), msg.as_bytes()));
            }
        }
        writer.write_all(&bytes).unwrap();
    });
    // Every answer counts one subscriber.
    let answer = b",\"connections\":1}";
    let (mut answers, mut tail, mut buf) = (0, Vec::new(), [0u8; 65536]);
    let mut reader = stream;
    while answers < N * ids.len() as u64 {
        let n = reader.read(&mut buf).expect("answers");
        assert!(n > 0, "closed after {answers} answers");
        tail.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(at) = tail[start..]
            .windows(answer.len())
            .position(|w| w == answer)
        {
            answers += 1;
            start += at + answer.len();
        }
        tail.drain(..start);
    }
    writing.join().unwrap();
    for reader in readers {
        reader.join().expect("every message, in order");
    }
}
