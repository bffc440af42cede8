//! Nodes joined through a real `nats-server -js` (JetStream, file storage; started here on
//! free ports): one position space for the cluster. A client resumes on another node, on a
//! restarted node, after JetStream itself restarted; a publish is answered once stored, 503
//! while it cannot be; an `Idempotency-Key` makes a retried publish deliver once; a plain NATS
//! publish is captured by the stream and delivered with a seq.
//!
//! Every test is `#[ignore = "needs nats-server"]`: a plain `cargo test` lists them as ignored;
//! `bash tools/test.sh` installs nats-server and runs them (`-- --include-ignored`), and without
//! nats-server they fail saying how to install it.

mod common;

use common::nats::{gauge, nats_pub, wait_connected, Nats};
use common::{eventually, position_seq, post, request, Client, Event, Response, Server};

/// A node on JetStream (the default), once linked.
fn node(nats: &Nats) -> Server {
    node_with(nats, &[])
}

fn node_with(nats: &Nats, extra: &[&str]) -> Server {
    let url = nats.url();
    let mut args = vec!["--workers", "2", "--cluster", &url];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    wait_connected(&server, 1);
    server
}

/// `POST /send/<id>` with an optional `Idempotency-Key`.
fn send_with(server: &Server, id: u64, msg: &str, key: Option<&str>) -> Response {
    let key = key
        .map(|k| format!("Idempotency-Key: {k}\r\n"))
        .unwrap_or_default();
    let bytes = format!(
        "POST /send/{id} HTTP/1.1\r\nHost: localhost\r\n{key}Content-Length: {}\r\n\r\n{msg}",
        msg.len()
    );
    let mut client = Client::connect(server.publish);
    client.write(bytes.as_bytes());
    client.read_response()
}

/// A stored publish: its seq (the stream's), from the answer
/// `{"id":..,"connections":N,"cluster":true,"seq":S}`.
fn send(server: &Server, id: u64, msg: &str) -> u64 {
    let answer = send_with(server, id, msg, None);
    stored_seq(&answer)
}

fn stored_seq(answer: &Response) -> u64 {
    assert_eq!(answer.status(), 200, "{answer:?}");
    let text = answer.text();
    assert!(text.contains("\"cluster\":true"), "{text}");
    common::json_number(&text, "seq")
}

/// An SSE subscriber of `id` on `server`, from `since` (`Last-Event-ID`) if given; returns the
/// stream after its `retry:`.
fn events(server: &Server, id: u64, since: Option<&str>) -> Client {
    let header = since
        .map(|s| format!("Last-Event-ID: {s}\r\n"))
        .unwrap_or_default();
    let mut client = Client::connect(server.public);
    client
        .write(format!("GET /events/{id} HTTP/1.1\r\nHost: localhost\r\n{header}\r\n").as_bytes());
    let head = client.read_head();
    assert_eq!(head.status, 200, "{head:?}");
    client.expect_retry();
    client
}

/// The next `n` events with data, as (seq, data); fails on a gap or anything else.
fn messages(client: &mut Client, n: usize) -> Vec<(u64, String)> {
    (0..n)
        .map(|_| {
            let event = client.next_event().expect("an event");
            assert_eq!(event.event, None, "{event:?}");
            (event.seq(), event.data.clone().expect("data"))
        })
        .collect()
}

/// After a resume: the replayed messages, then the position; no gap.
fn resumed(client: &mut Client, n: usize) -> (Vec<(u64, String)>, String) {
    let replay = messages(client, n);
    let chunk = String::from_utf8(client.read_chunk().expect("the position")).unwrap();
    let event = Event::parse(&chunk);
    assert!(
        event.data.is_none() && event.event.is_none(),
        "the position after the replay, not {chunk:?}"
    );
    (replay, event.id.expect("an id"))
}

/// Every node of the cluster writes the stream's epoch; seqs are the stream's, the same
/// everywhere.
fn epoch_of(pos: &str) -> &str {
    pos.split_once(':').expect("<epoch>:<seq>").0
}

/// 1. Nodes A and B; a subscriber on A gets m1..m3 (published on A, on B, and straight to
///    NATS: the stream captures a plain publish and numbers it).
/// 2. It leaves with its last position; m4, m5 are published meanwhile. A publish is answered
///    once the stream stored it, not once B routed it: B's own subscriber getting m5 says B's
///    memory holds it (a resume answered before would get m4, m5 live, after the position).
/// 3. It resumes on B: m4, m5 exactly, then the position, then live m6; no gap, nothing twice.
/// 4. A node C started after all this (nothing in its memory) answers the same resume from
///    the stream (a fetch), over SSE and long-poll, and `since=0` with every message.
#[test]
#[ignore = "needs nats-server"]
fn a_position_from_one_node_resumes_on_another() {
    let nats = Nats::jetstream();
    let a = node(&nats);
    let b = node(&nats);
    let mut on_a = events(&a, 7, None);
    let start = on_a.expect_position();
    let mut on_b_live = events(&b, 7, None);
    let s1 = send(&a, 7, "m1");
    let s2 = send(&b, 7, "m2");
    nats_pub(&nats, "comet.user.7", "m3");
    let got = messages(&mut on_a, 3);
    assert_eq!(got[0], (s1, "m1".to_string()));
    assert_eq!(got[1], (s2, "m2".to_string()));
    assert_eq!(got[2].1, "m3");
    assert!(s1 < s2 && s2 < got[2].0, "{got:?}");
    let epoch = epoch_of(&start).to_string();
    let last = format!("{epoch}:{}", got[2].0);
    drop(on_a);

    let s4 = send(&a, 7, "m4");
    let s5 = send(&b, 7, "m5");
    let live = messages(&mut on_b_live, 5);
    assert_eq!(live[4], (s5, "m5".to_string()), "{live:?}");
    let mut on_b = events(&b, 7, Some(&last));
    let (replay, pos) = resumed(&mut on_b, 2);
    assert_eq!(replay, [(s4, "m4".to_string()), (s5, "m5".to_string())]);
    assert_eq!(pos, format!("{epoch}:{s5}"), "one epoch for the cluster");
    let s6 = send(&a, 7, "m6");
    assert_eq!(messages(&mut on_b, 1), [(s6, "m6".to_string())]);

    let c = node(&nats);
    let mut on_c = events(&c, 7, Some(&last));
    let (replay, _) = resumed(&mut on_c, 3);
    let seqs: Vec<u64> = replay.iter().map(|m| m.0).collect();
    assert_eq!(seqs, [s4, s5, s6]);
    let mut from_zero = events(&c, 7, Some("0"));
    let (replay, _) = resumed(&mut from_zero, 6);
    let data: Vec<&str> = replay.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(data, ["m1", "m2", "m3", "m4", "m5", "m6"]);
    // A long-poll on C from the same position: the same messages, from the stream.
    let poll = request(
        c.public,
        format!("GET /poll/7?since={last} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(poll.status(), 200, "{poll:?}");
    let body: serde_json::Value = serde_json::from_str(&poll.text()).expect("JSON");
    let seqs: Vec<u64> = body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [s4, s5, s6], "{body}");
    assert_eq!(body["gap"], serde_json::json!([]), "{body}");
    assert!(gauge(&c, "comet_cluster_fetches_total") >= 3);
    // Nothing more came, and no gap: the next event is the next message.
    send(&b, 7, "m7");
    assert_eq!(messages(&mut on_c, 1)[0].1, "m7");
    assert_eq!(messages(&mut from_zero, 1)[0].1, "m7");
}

/// A client whose position is ahead of the node (it saw, on a node further along the stream,
/// a message this one has not routed yet) is answered once the node gets there: its stream
/// then starts after that message, with no gap and nothing twice. A position the node does not
/// reach within 2 s is answered with a gap.
#[test]
#[ignore = "needs nats-server"]
fn a_position_ahead_of_the_node_is_answered_once_the_node_gets_there() {
    let nats = Nats::jetstream();
    let a = node(&nats);
    let mut first = events(&a, 21, None);
    let epoch = epoch_of(&first.expect_position()).to_string();
    let s1 = send(&a, 21, "one");
    assert_eq!(messages(&mut first, 1), [(s1, "one".to_string())]);
    // The next message will be s1 + 1: a client claims it saw it already.
    let mut ahead = Client::connect(a.public);
    ahead.write(
        format!(
            "GET /events/21 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {epoch}:{}\r\n\r\n",
            s1 + 1
        )
        .as_bytes(),
    );
    // Its head comes only once its login is answered: not before s1 + 1 exists here.
    assert!(ahead
        .unread_within(std::time::Duration::from_millis(300))
        .is_empty());
    let s2 = send(&a, 21, "two");
    assert_eq!(s2, s1 + 1);
    assert_eq!(ahead.read_head().status, 200);
    ahead.expect_retry();
    assert_eq!(ahead.expect_position(), format!("{epoch}:{s2}"));
    let s3 = send(&a, 21, "three");
    assert_eq!(messages(&mut ahead, 1), [(s3, "three".to_string())]);
    // Far ahead: told of a gap after the wait.
    let mut far = events(&a, 21, Some(&format!("{epoch}:{}", s3 + 1000)));
    let gap = far.next_event().expect("a gap");
    assert_eq!(gap.event.as_deref(), Some("gap"), "{gap:?}");
}

/// 1. Nodes A and B keeping 256 messages per id; a subscriber on A; a publisher on B sends
///    200 messages, one at a time.
/// 2. After 50 of them A is killed (SIGKILL) and started again.
/// 3. The subscriber resumes on the new A with its last position: every message after it,
///    in order, once, no gap; then the rest live.
#[test]
#[ignore = "needs nats-server"]
fn a_node_restarted_mid_stream_resumes_its_clients() {
    let nats = Nats::jetstream();
    let keep = ["--history-messages", "256"];
    let mut a = node_with(&nats, &keep);
    let b = node_with(&nats, &keep);
    let mut sub = events(&a, 9, None);
    let epoch = epoch_of(&sub.expect_position()).to_string();
    let mut seqs = Vec::new();
    let mut last = String::new();
    let mut seen = 0;
    for n in 0..200 {
        seqs.push(send(&b, 9, &format!("n{n}")));
        if n == 49 {
            // The subscriber has read some of them; the rest are in the stream.
            let got = messages(&mut sub, 30);
            seen = got.len();
            last = format!("{epoch}:{}", got.last().unwrap().0);
            a.kill();
            a = node_with(&nats, &keep);
        }
    }
    let mut again = events(&a, 9, Some(&last));
    let (replay, pos) = resumed(&mut again, 200 - seen);
    let expected: Vec<(u64, String)> = seqs
        .iter()
        .enumerate()
        .skip(seen)
        .map(|(n, &seq)| (seq, format!("n{n}")))
        .collect();
    assert_eq!(replay, expected);
    assert_eq!(position_seq(&pos), seqs[199]);
}

/// 1. A node; 20 publishes stored (acknowledged).
/// 2. nats-server is killed (SIGKILL) and started again on the same file storage.
/// 3. A node started afterwards resumes `since=0` with all 20, same epoch; the first node,
///    linked again, delivers a publish made after the restart.
#[test]
#[ignore = "needs nats-server"]
fn nothing_acknowledged_is_lost_when_jetstream_restarts() {
    let mut nats = Nats::jetstream();
    let a = node(&nats);
    let mut live = events(&a, 11, None);
    let epoch = epoch_of(&live.expect_position()).to_string();
    let seqs: Vec<u64> = (0..20).map(|n| send(&a, 11, &format!("k{n}"))).collect();
    assert_eq!(messages(&mut live, 20).len(), 20);
    nats.restart();
    wait_connected(&a, 1);

    let b = node(&nats);
    let mut sub = events(&b, 11, Some("0"));
    let (replay, pos) = resumed(&mut sub, 20);
    let got: Vec<u64> = replay.iter().map(|m| m.0).collect();
    assert_eq!(got, seqs);
    assert_eq!(epoch_of(&pos), epoch, "the same stream, the same epoch");
    // Publishes are stored again once the link is back (retry on 503 meanwhile).
    let after = eventually_stored(&a, 11, "after");
    assert_eq!(messages(&mut live, 1), [(after, "after".to_string())]);
    assert_eq!(messages(&mut sub, 1), [(after, "after".to_string())]);
}

/// Publishes `msg` until it is stored (a 503 is retried, as a publisher should).
fn eventually_stored(server: &Server, id: u64, msg: &str) -> u64 {
    let key = format!("retry-{id}-{}", msg.replace(' ', "-"));
    let mut seq = None;
    eventually(&format!("{msg} stored"), || {
        let answer = send_with(server, id, msg, Some(&key));
        if answer.status() == 503 {
            return false;
        }
        seq = Some(stored_seq(&answer));
        true
    });
    seq.expect("stored")
}

/// While NATS is down a publish is answered 503 with Retry-After (single and batch), never
/// dropped silently; once it is back, 200.
#[test]
#[ignore = "needs nats-server"]
fn a_publish_during_a_nats_outage_is_answered_503() {
    let mut nats = Nats::jetstream();
    let a = node(&nats);
    nats.kill();
    wait_connected(&a, 0);
    let answer = send_with(&a, 5, "lost?", None);
    assert_eq!(answer.status(), 503, "{answer:?}");
    assert_eq!(answer.head.header("Retry-After"), Some("1"), "{answer:?}");
    assert!(answer.text().contains("not stored"), "{}", answer.text());
    let batch = request(a.publish, &post("/send", b"5 one\n6 two\n"));
    assert_eq!(batch.status(), 503, "{batch:?}");
    assert!(gauge(&a, "comet_cluster_publish_failed_total") >= 3);
    // `comet send` tries again while it gets 503: started during the outage, it succeeds once
    // NATS is back (its key makes the tries one message).
    let comet_send = std::process::Command::new(env!("CARGO_BIN_EXE_comet"))
        .args([
            "send",
            "--to",
            &a.publish.to_string(),
            "--attempts-max",
            "40",
        ])
        .args(["5", "from comet send"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run comet send");
    nats.restart();
    let mut sub = events(&a, 5, Some("0"));
    let output = comet_send.wait_with_output().expect("comet send ends");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("503"), "it was told 503 at first: {said}");
    let seq = eventually_stored(&a, 5, "back");
    let got = messages(&mut sub, 2);
    assert_eq!(got[0].1, "from comet send", "{got:?}");
    assert_eq!(got[1], (seq, "back".to_string()));
}

/// 1. A node has stored messages for ids 31 and 32; a node C started afterwards holds none of
///    them in memory, so a resume on C needs the stream.
/// 2. nats-server is killed. A resume of 31 on C is not answered while the stream cannot be
///    asked (a gap would come at once), and once nats-server is back it gets what it missed,
///    with no gap: a NATS restart is not a gap.
/// 3. nats-server is killed again and stays down: a resume of 32 is answered after 10 s from
///    C's memory, with a gap.
#[test]
#[ignore = "needs nats-server"]
fn a_resume_during_a_nats_outage_waits_for_the_link() {
    let mut nats = Nats::jetstream();
    let a = node(&nats);
    let mut live = events(&a, 31, None);
    let epoch = epoch_of(&live.expect_position()).to_string();
    let s1 = send(&a, 31, "one");
    let s2 = send(&a, 31, "two");
    send(&a, 32, "lost to C");
    assert_eq!(messages(&mut live, 2)[1], (s2, "two".to_string()));
    let c = node(&nats);
    let resume = |id: u64| {
        let mut client = Client::connect(c.public);
        let since = format!("{epoch}:{s1}");
        client.write(
            format!("GET /events/{id} HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {since}\r\n\r\n")
                .as_bytes(),
        );
        client
    };

    nats.kill();
    wait_connected(&c, 0);
    let mut waits = resume(31);
    assert!(waits
        .unread_within(std::time::Duration::from_millis(500))
        .is_empty());
    nats.restart();
    assert_eq!(waits.read_head().status, 200);
    waits.expect_retry();
    let (replay, _) = resumed(&mut waits, 1);
    assert_eq!(replay, [(s2, "two".to_string())]);

    wait_connected(&c, 1);
    nats.kill();
    wait_connected(&c, 0);
    let started = std::time::Instant::now();
    let mut gives_up = resume(32);
    assert!(!gives_up
        .unread_within(std::time::Duration::from_secs(15))
        .is_empty());
    assert!(started.elapsed() >= std::time::Duration::from_secs(9));
    assert_eq!(gives_up.read_head().status, 200);
    gives_up.expect_retry();
    let gap = gives_up.next_event().expect("a gap");
    assert_eq!(gap.event.as_deref(), Some("gap"), "{gap:?}");
}

/// A publish being stored when SIGTERM comes is answered once JetStream acknowledged it: the
/// link to NATS stays up until every stream and publish connection has ended. (It used to be
/// cut first: the acknowledgement never came, the publish was closed unanswered at
/// `--shutdown-timeout-ms`, and its sender published it again.)
#[test]
#[ignore = "needs nats-server"]
fn a_publish_being_stored_at_sigterm_is_answered() {
    let nats = Nats::jetstream();
    let mut a = node_with(&nats, &["--shutdown-timeout-ms", "60000"]);
    let mut sub = events(&a, 5, None);
    sub.expect_position();
    let requests =
        |server: &Server| common::total(&common::metrics(server), "comet_requests_total");
    let before = requests(&a);

    // JetStream cannot acknowledge while frozen: the publish is read, then waits.
    nats.pause();
    let mut publisher = Client::connect(a.publish);
    let body = "last words";
    publisher.write(
        format!(
            "POST /send/5 HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    // Read once counted (each metrics request counts one more).
    let mut asked = 0;
    eventually("the publish is read", || {
        asked += 1;
        requests(&a) > before + asked
    });
    a.signal("TERM");
    // The shutdown has begun once the stream is ended.
    sub.read_to_end();
    nats.resume();
    let answer = publisher.read_response();
    assert!(stored_seq(&answer) > 0, "{answer:?}");
    publisher.expect_eof();
    assert!(a.stop("TERM").success());
}

/// The same `Idempotency-Key` twice: stored once (the second answer says `duplicate`, with the
/// first one's seq), delivered once. A batch retried with its key stores only its lines once.
#[test]
#[ignore = "needs nats-server"]
fn a_retried_publish_with_the_same_key_is_delivered_once() {
    let nats = Nats::jetstream();
    let a = node(&nats);
    let b = node(&nats);
    let mut sub = events(&a, 3, None);
    sub.expect_position();
    let first = send_with(&a, 3, "pay", Some("order-1"));
    let seq = stored_seq(&first);
    assert!(!first.text().contains("duplicate"), "{}", first.text());
    // Retried on another node, as a publisher behind a load balancer may.
    let again = send_with(&b, 3, "pay", Some("order-1"));
    assert_eq!(stored_seq(&again), seq);
    assert!(
        again.text().contains("\"duplicate\":true"),
        "{}",
        again.text()
    );
    let other = send(&a, 3, "next");
    assert_eq!(
        messages(&mut sub, 2),
        [(seq, "pay".to_string()), (other, "next".to_string())]
    );
    let batch = |server: &Server| {
        let body = b"3 b1\n3 b2\n";
        let bytes = format!(
            "POST /send HTTP/1.1\r\nHost: localhost\r\nIdempotency-Key: batch-1\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let mut client = Client::connect(server.publish);
        client.write(&[bytes.as_bytes(), body].concat());
        client.read_response()
    };
    assert_eq!(batch(&a).status(), 200);
    let retried = batch(&b);
    assert_eq!(retried.status(), 200);
    assert!(
        retried.text().contains("\"duplicate\":true"),
        "{}",
        retried.text()
    );
    let last = send(&b, 3, "end");
    let got = messages(&mut sub, 3);
    let data: Vec<&str> = got.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(data, ["b1", "b2", "end"]);
    assert_eq!(got[2].0, last);
    // A key that cannot be a message id is refused.
    let bad = send_with(&a, 3, "x", Some("two words"));
    assert_eq!(bad.status(), 400, "{bad:?}");
}

/// `--cluster` needs JetStream: against a server without it, comet exits 1 and says so;
/// `--cluster-core` runs on core NATS.
#[test]
#[ignore = "needs nats-server"]
fn jetstream_is_required_unless_core_nats_is_asked_for() {
    let nats = Nats::start(&[]);
    let stderr = common::refused_start(&["--cluster", &nats.url()]);
    assert!(
        stderr.contains("no JetStream") && stderr.contains("--cluster-core"),
        "{stderr}"
    );
    let core = Server::start(&["--cluster", &nats.url(), "--cluster-core"]);
    wait_connected(&core, 1);
    let answer = request(core.publish, &post("/send/1", b"hi"));
    assert_eq!(answer.status(), 200, "{answer:?}");
    assert!(!answer.text().contains("seq"), "{}", answer.text());
}

/// Three JetStream servers in a NATS cluster and a stream with three replicas
/// (`--cluster-replicas 3`): nodes A and B each know every server; with one server killed the
/// stream keeps storing (two of three), and B's subscriber gets every message once, in order.
/// Known flaky, so `tools/test.sh` leaves it out (see there): nats-server 2.9 sometimes never
/// places B's replacement consumer after the server that held it died.
#[test]
#[ignore = "needs nats-server; known flaky, left out by tools/test.sh"]
fn a_stream_with_three_replicas_survives_a_server() {
    let ports = [
        common::nats::free_port(),
        common::nats::free_port(),
        common::nats::free_port(),
    ];
    let routes = ports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut servers: Vec<Nats> = ports
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            Nats::jetstream_with(&[
                "--server_name".into(),
                format!("js{i}"),
                "--cluster_name".into(),
                "comet-js".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{p}"),
                "--routes".into(),
                routes.clone(),
            ])
        })
        .collect();
    let urls = servers.iter().map(Nats::url).collect::<Vec<_>>().join(",");
    let start = |first: &str| {
        // Each node first tries its own server (async-nats picks at random among the list).
        let list = format!("{first},{urls}");
        Server::start(&[
            "--workers",
            "2",
            "--cluster",
            &list,
            "--cluster-replicas",
            "3",
        ])
    };
    let a = start(&servers[0].url());
    let b = start(&servers[1].url());
    wait_connected(&a, 1);
    wait_connected(&b, 1);
    let mut sub = events(&b, 31, None);
    sub.expect_position();
    let s1 = send(&a, 31, "before");
    assert_eq!(messages(&mut sub, 1), [(s1, "before".to_string())]);
    servers[2].kill();
    let s2 = eventually_stored(&a, 31, "one server down");
    let s3 = eventually_stored(&b, 31, "still");
    assert_eq!(
        messages(&mut sub, 2),
        [
            (s2, "one server down".to_string()),
            (s3, "still".to_string())
        ]
    );
}
