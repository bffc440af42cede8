//! Unit tests of `publish.rs`: publish connections fed bytes, without a ring.

use super::*;

fn run(p: &mut PubConn, bytes: &[u8]) -> Vec<Effect> {
    let cfg = Config::for_tests();
    let mut effects = Vec::new();
    p.received(bytes, 0);
    p.process(&cfg, 0, &mut effects);
    effects
}

fn written(p: &mut PubConn) -> String {
    let mut out = Vec::new();
    p.write_ready(&mut out, 0);
    String::from_utf8(out).unwrap()
}

#[test]
fn pipelined_publishes_are_answered_in_request_order() {
    let mut p = PubConn::new(0);
    let effects = run(
        &mut p,
        b"POST /send/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nhi\
          POST /send/2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nyou",
    );
    let replies: Vec<(Id, u32, Vec<u8>)> = effects
        .into_iter()
        .map(|e| match e {
            Effect::Publish { id, msg, reply, .. } => (id, reply, msg.to_vec()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(replies[0], (1, 0, b"hi".to_vec()));
    assert_eq!(replies[1], (2, 1, b"you".to_vec()));
    // The second owner answers first: nothing goes out until the first has.
    assert!(!p.answered(1, 5));
    assert_eq!(written(&mut p), "");
    assert!(p.answered(0, 2));
    let out = written(&mut p);
    let first = out.find(r#"{"id":1,"connections":2}"#).unwrap();
    let second = out.find(r#"{"id":2,"connections":5}"#).unwrap();
    assert!(first < second, "{out}");
    assert!(!p.done());
}

#[test]
fn a_body_split_over_reads_is_one_publish() {
    let mut p = PubConn::new(0);
    let req = b"POST /send/9 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    for split in 1..req.len() {
        let mut p2 = PubConn::new(0);
        let mut effects = run(&mut p2, &req[..split]);
        effects.extend(run(&mut p2, &req[split..]));
        assert_eq!(effects.len(), 1, "split at {split}");
        match &effects[0] {
            Effect::Publish { id: 9, msg, .. } => assert_eq!(&**msg, b"hello"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(run(&mut p, req).len(), 1);
}

#[test]
fn a_bad_batch_line_rejects_the_whole_batch_and_stops_reading() {
    let mut p = PubConn::new(0);
    let body = "1 a\nx b\n";
    let req = format!(
        "POST /send HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert!(run(&mut p, req.as_bytes()).is_empty(), "nothing is sent");
    assert!(!p.wants_input());
    let out = written(&mut p);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("line 2"), "{out}");
    assert!(p.done());
}

#[test]
fn at_shutdown_what_was_read_is_answered_and_a_partial_request_dropped() {
    let mut p = PubConn::new(0);
    let effects = run(
        &mut p,
        b"POST /send/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nhi\
          POST /send/2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nyo",
    );
    assert_eq!(effects.len(), 1, "the second is not complete");
    p.end();
    assert!(!p.done(), "the first is not answered yet");
    // What comes after the end is not read.
    assert!(run(&mut p, b"u").is_empty());
    assert!(p.answered(0, 1));
    let out = written(&mut p);
    assert!(out.contains(r#"{"id":1,"connections":1}"#), "{out}");
    assert!(!out.contains(r#""id":2"#), "{out}");
    assert!(p.done(), "then it closes");
}

#[test]
fn a_batch_is_answered_once_every_owner_counted() {
    let mut p = PubConn::new(0);
    let body = "1 a\n2 b\n3 c\n";
    let req = format!(
        "POST /send HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let effects = run(&mut p, req.as_bytes());
    assert_eq!(effects.len(), 3);
    p.cluster(0, Some(true));
    p.cluster(0, Some(false));
    assert!(!p.answered(0, 1));
    assert!(!p.answered(0, 1));
    assert!(p.answered(0, 1));
    let out = written(&mut p);
    assert!(
        out.contains(r#"{"messages":3,"connections":3,"cluster":false}"#),
        "{out}"
    );
}

#[test]
fn a_publisher_that_floods_is_paused_then_resumed() {
    let cfg = Config::for_tests();
    let mut p = PubConn::new(0);
    let one = b"POST /send/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\nx";
    let mut effects = Vec::new();
    for _ in 0..PIPELINE_MAX + 10 {
        p.received(one, 0);
    }
    p.process(&cfg, 0, &mut effects);
    assert_eq!(effects.len(), PIPELINE_MAX);
    assert!(!p.wants_input(), "paused at PIPELINE_MAX outstanding");
    assert!(!p.resume(0, &cfg), "still outstanding");
    for reply in 0..PIPELINE_MAX as u32 {
        p.answered(reply, 0);
    }
    let mut out = Vec::new();
    p.write_ready(&mut out, 0);
    assert!(p.resume(0, &cfg));
    effects.clear();
    p.process(&cfg, 0, &mut effects);
    assert_eq!(effects.len(), 10, "the rest is read after resuming");
}

#[test]
fn metrics_and_expect_continue_take_their_place_in_order() {
    let mut p = PubConn::new(0);
    let effects = run(
        &mut p,
        b"POST /send/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\nx\
          GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let Effect::Metrics { reply, .. } = effects[1] else {
        panic!("{effects:?}");
    };
    p.metrics(reply, b"m 1\n", false);
    let out = written(&mut p);
    assert!(out.starts_with("HTTP/1.1 100 Continue"), "{out}");
    assert!(!out.contains("m 1"), "waits for the publish's answer");
    p.answered(1, 0);
    let mut out = Vec::new();
    assert!(p.write_ready(&mut out, 0), "the metrics answer closes");
    let out = String::from_utf8(out).unwrap();
    assert!(out.find("connections").unwrap() < out.find("m 1").unwrap());
}

#[test]
fn a_wrong_secret_is_refused() {
    let cfg = Config::for_tests_with(&["--publish-secret", "s3"]);
    let mut p = PubConn::new(0);
    let mut effects = Vec::new();
    p.received(
        b"POST /send/1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer no\r\nContent-Length: 1\r\n\r\nx",
        0,
    );
    assert_eq!(p.process(&cfg, 0, &mut effects), (1, 1));
    assert!(effects.is_empty());
    assert!(written(&mut p).starts_with("HTTP/1.1 401"));
}

#[test]
fn expiry_distinguishes_a_stalled_request_from_an_idle_connection() {
    let cfg = Config::for_tests();
    let mut pubs = Publishers::default();
    pubs.accepted(1, 0);
    pubs.accepted(2, 0);
    pubs.get_mut(2)
        .unwrap()
        .received(b"POST /send/1 HTTP/1.1\r\n", 0);
    let mut out = Vec::new();
    pubs.expired(cfg.request_timeout_ms, &cfg, &mut out);
    assert_eq!(out, [(2, true)]);
    out.clear();
    pubs.expired(cfg.idle_timeout_ms, &cfg, &mut out);
    out.sort();
    assert_eq!(out, [(1, false), (2, true)]);
}

/// The status of the one answer to `req` under `flags`, and the answer.
fn answer(flags: &[&str], req: &str) -> (u16, String) {
    let cfg = Config::for_tests_with(flags);
    let mut p = PubConn::new(0);
    let mut effects = Vec::new();
    p.received(req.as_bytes(), 0);
    p.process(&cfg, 0, &mut effects);
    for effect in effects {
        match effect {
            Effect::Publish { reply, .. } | Effect::Disconnect { reply, .. } => {
                p.answered(reply, 0);
            }
            Effect::Metrics { reply, head_only } => p.metrics(reply, b"m 1\n", head_only),
            Effect::Ready { reply, head_only } => {
                p.text(reply, http::Status::OK, b"ready\n", head_only)
            }
        }
    }
    let out = written(&mut p);
    (out[9..12].parse().unwrap(), out)
}

fn get(path: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n")
}

#[test]
fn hosts_other_than_loopback_addresses_and_listed_names_are_refused() {
    for host in [
        "localhost",
        "LOCALHOST:8001",
        "127.0.0.1",
        "127.1.2.3:8001",
        "[::1]",
        "[::1]:8001",
        "10.0.0.5:8001",
        "[fd00::5]:80",
    ] {
        let req = get("/metrics", &format!("Host: {host}\r\n"));
        assert_eq!(answer(&[], &req).0, 200, "{host}");
    }
    for host in [
        "evil.example",
        "evil.example:8001",
        "localhost.evil.example",
        "127.0.0.1.evil.example",
        "::1",
        "[::1",
        "localhost:x",
        "localhost:",
        "",
    ] {
        let req = get("/metrics", &format!("Host: {host}\r\n"));
        let (status, out) = answer(&[], &req);
        assert_eq!(status, 403, "{host}: {out}");
        assert!(out.contains("Host not allowed"), "{out}");
    }
    let listed = ["--publish-hosts", "comet.internal, push.example:8001"];
    for (host, status) in [
        ("comet.internal", 200),
        ("Comet.Internal:9000", 200),
        ("push.example:8001", 200),
        ("push.example:8002", 403),
        ("push.example", 403),
        ("evil.example", 403),
    ] {
        let req = get("/metrics", &format!("Host: {host}\r\n"));
        assert_eq!(answer(&listed, &req).0, status, "{host}");
    }
    // HTTP/1.0 without Host: not a browser.
    assert_eq!(answer(&[], "GET /metrics HTTP/1.0\r\n\r\n").0, 200);
}

#[test]
fn requests_with_an_origin_are_refused_unless_it_is_listed() {
    let publish = |origin: &str| {
        format!(
            "POST /send/1 HTTP/1.1\r\nHost: localhost\r\n{origin}\
             Content-Length: 1\r\nConnection: close\r\n\r\nx"
        )
    };
    assert_eq!(answer(&[], &publish("")).0, 200);
    let (status, out) = answer(&[], &publish("Origin: https://evil.example\r\n"));
    assert_eq!(status, 403, "{out}");
    assert!(out.contains("Origin"), "{out}");
    assert_eq!(answer(&[], &publish("Origin: null\r\n")).0, 403);
    let listed = ["--publish-allowed-origins", "https://admin.example/"];
    let origin = "Origin: https://admin.example\r\n";
    assert_eq!(answer(&listed, &publish(origin)).0, 200);
    let other = "Origin: https://evil.example\r\n";
    assert_eq!(answer(&listed, &publish(other)).0, 403);
    assert!(Config::for_tests_with(&[]).publish_origins.is_empty());
}

#[test]
fn publish_answers_carry_no_cors_header() {
    let send = "POST /send/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\
                Connection: close\r\n\r\nx";
    for req in [
        send.to_owned(),
        get("/metrics", "Host: localhost\r\n"),
        get("/nope", "Host: localhost\r\n"),
        get("/metrics", "Host: evil.example\r\n"),
        get(
            "/metrics",
            "Host: localhost\r\nOrigin: https://evil.example\r\n",
        ),
    ] {
        let (_, out) = answer(&[], &req);
        assert!(!out.contains("Access-Control"), "{out}");
    }
}

#[test]
fn a_metrics_secret_opens_metrics_only_and_the_publish_secret_no_longer_does() {
    let both = ["--publish-secret", "pub", "--metrics-secret", "met"];
    let send = |secret: &str| {
        format!(
            "POST /send/1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {secret}\r\n\
             Content-Length: 1\r\nConnection: close\r\n\r\nx"
        )
    };
    let metrics = |secret: &str| {
        get(
            "/metrics",
            &format!("Host: localhost\r\nAuthorization: Bearer {secret}\r\n"),
        )
    };
    assert_eq!(answer(&both, &send("pub")).0, 200);
    assert_eq!(answer(&both, &send("met")).0, 401);
    assert_eq!(answer(&both, &metrics("met")).0, 200);
    assert_eq!(answer(&both, &metrics("pub")).0, 401);
    // Without a metrics secret, /metrics takes the publish secret.
    let publish_only = ["--publish-secret", "pub"];
    assert_eq!(answer(&publish_only, &metrics("pub")).0, 200);
    assert_eq!(answer(&publish_only, &metrics("met")).0, 401);
    // A metrics secret alone leaves publishing open.
    let metrics_only = ["--metrics-secret", "met"];
    assert_eq!(answer(&metrics_only, &send("x")).0, 200);
    assert_eq!(answer(&metrics_only, &metrics("x")).0, 401);
    assert_eq!(answer(&metrics_only, &metrics("met")).0, 200);
}

#[test]
fn hosts_split_into_name_and_port() {
    assert_eq!(split_host(b"a:1"), Some((&b"a"[..], Some(&b"1"[..]))));
    assert_eq!(
        split_host(b"[::1]:80"),
        Some((&b"[::1]"[..], Some(&b"80"[..])))
    );
    assert_eq!(split_host(b"[::1]"), Some((&b"[::1]"[..], None)));
    for bad in [&b""[..], b":80", b"a:", b"a:b", b"::1", b"[::1]x", b"[::1"] {
        assert_eq!(split_host(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn health_checks_need_no_secret_but_obey_host_and_origin() {
    let flags = ["--publish-secret", "pub", "--metrics-secret", "met"];
    let (status, out) = answer(&flags, &get("/healthz", "Host: localhost\r\n"));
    assert_eq!(status, 200);
    assert!(out.ends_with("\r\n\r\nok\n"), "{out}");
    assert!(!out.contains("Access-Control"), "{out}");
    let (status, out) = answer(&flags, &get("/readyz", "Host: localhost\r\n"));
    assert_eq!(status, 200);
    assert!(out.ends_with("\r\n\r\nready\n"), "{out}");
    assert_eq!(
        answer(&flags, &get("/readyz", "Host: evil.example\r\n")).0,
        403
    );
    let page = "Host: localhost\r\nOrigin: https://evil.example\r\n";
    assert_eq!(answer(&flags, &get("/healthz", page)).0, 403);
}

#[test]
fn at_shutdown_a_connection_answers_health_and_metrics_refuses_publishing_and_closes() {
    let cfg = Config::for_tests();
    let mut pubs = Publishers::default();
    pubs.shut_down();
    pubs.accepted(1, 0);
    let p = pubs.get_mut(1).unwrap();
    let mut effects = Vec::new();
    p.received(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", 0);
    p.process(&cfg, 0, &mut effects);
    let out = written(p);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("Connection: close\r\n"), "{out}");
    assert!(p.done(), "one answer, then close");
    pubs.accepted(2, 0);
    let p = pubs.get_mut(2).unwrap();
    p.received(
        b"POST /send/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\nx",
        0,
    );
    p.process(&cfg, 0, &mut effects);
    assert!(effects.is_empty(), "nothing is published");
    assert!(written(p).starts_with("HTTP/1.1 503 "));
}

#[test]
fn a_stored_publish_answers_its_seq_and_an_unstored_one_503() {
    let mut p = PubConn::new(0);
    let effects = run(
        &mut p,
        b"POST /send/1 HTTP/1.1\r\nHost: localhost\r\nIdempotency-Key: k-1\r\nContent-Length: 1\r\n\r\nx\
          POST /send/2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\ny\
          POST /send/3 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\nz",
    );
    let ids: Vec<Option<String>> = effects
        .iter()
        .map(|e| match e {
            Effect::Publish { msg_id, .. } => msg_id.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, [Some("k-1".to_string()), None, None]);
    assert!(
        !p.unstored(2, "the link to NATS is down"),
        "waits for the first"
    );
    p.stored(0, 17, true);
    assert!(p.answered(0, 2));
    p.stored(1, 18, false);
    assert!(p.answered(1, 0));
    let out = written(&mut p);
    assert!(
        out.contains(r#"{"id":1,"connections":2,"cluster":true,"seq":17,"duplicate":true}"#),
        "{out}"
    );
    assert!(
        out.contains(r#"{"id":2,"connections":0,"cluster":true,"seq":18}"#),
        "{out}"
    );
    let third = &out[out.rfind("HTTP/1.1").unwrap()..];
    assert!(
        third.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{out}"
    );
    assert!(third.contains("\r\nRetry-After: 1\r\n"), "{third}");
    assert!(
        !third.contains("Connection: close"),
        "the connection stays: {third}"
    );
    assert!(
        third.ends_with("not stored, send it again: the link to NATS is down\n"),
        "{third:?}"
    );
    assert!(!p.done());
}

#[test]
fn a_batch_with_a_key_gives_each_line_its_own_id_and_one_unstored_line_503s_it() {
    let mut p = PubConn::new(0);
    let body = "1 a\n2 b\n";
    let req = format!(
        "POST /send HTTP/1.1\r\nHost: localhost\r\nIdempotency-Key: b7\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let ids: Vec<Option<String>> = run(&mut p, req.as_bytes())
        .into_iter()
        .map(|e| match e {
            Effect::Publish { msg_id, .. } => msg_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, [Some("b7:1".to_string()), Some("b7:2".to_string())]);
    p.stored(0, 5, false);
    assert!(!p.answered(0, 1));
    assert!(p.unstored(0, "JetStream did not store it: timed out"));
    assert!(written(&mut p).starts_with("HTTP/1.1 503"));
}

#[test]
fn a_key_that_cannot_be_a_message_id_is_refused() {
    let mut p = PubConn::new(0);
    let effects = run(
        &mut p,
        b"POST /send/1 HTTP/1.1\r\nHost: localhost\r\nIdempotency-Key: a b\r\nContent-Length: 1\r\n\r\nx",
    );
    assert!(effects.is_empty());
    let out = written(&mut p);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("Idempotency-Key"), "{out}");
}
