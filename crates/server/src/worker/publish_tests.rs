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
        b"POST /send/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\
          POST /send/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nyou",
    );
    let replies: Vec<(Id, u32, Vec<u8>)> = effects
        .into_iter()
        .map(|e| match e {
            Effect::Publish { id, msg, reply } => (id, reply, msg.to_vec()),
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
    let req = b"POST /send/9 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
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
        "POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
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
fn a_batch_is_answered_once_every_owner_counted() {
    let mut p = PubConn::new(0);
    let body = "1 a\n2 b\n3 c\n";
    let req = format!(
        "POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
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
    let one = b"POST /send/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx";
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
        b"POST /send/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\nx\
          GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
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
        b"POST /send/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer no\r\nContent-Length: 1\r\n\r\nx",
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
