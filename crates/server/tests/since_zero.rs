//! `?since=0` means "from the beginning": while the history holds every message an id has had
//! since the server started, a client resuming from 0 (or any position of this server from
//! before the id's first message) gets those messages and no gap notice, on SSE and long-poll.
//! (It was answered with a gap: the history took its own start as "unknown before this".)

mod common;

use common::{get, metrics, publish, subscribe, total, Client, Server};
use serde_json::Value;

/// A long-poll on a fresh connection: its JSON body.
fn poll(server: &Server, path: &str) -> Value {
    let mut client = Client::connect(server.public);
    client.write(&get(path));
    let response = client.read_response();
    assert_eq!(response.status(), 200, "{response:?}");
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("poll body {:?}: {e}", response.text()))
}

/// The data of the messages of a long-poll answer.
fn poll_messages(body: &Value) -> Vec<&str> {
    body["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {body}"))
        .iter()
        .map(|m| m["data"].as_str().expect("a data string"))
        .collect()
}

/// An SSE subscription from `since`: the data of the events before its position (a gap notice
/// would be an event named `gap`), then the position it ends with.
fn sse_replay(server: &Server, path: &str, count: usize) -> Vec<String> {
    let mut sse = subscribe(server.public, path);
    let mut seen = Vec::new();
    for _ in 0..count {
        let event = sse.next_event().expect("an event, not the stream's end");
        assert_eq!(event.event, None, "{path}: {event:?}");
        seen.push(event.data.expect("data"));
    }
    // Then the position alone, not another event.
    sse.expect_position();
    seen
}

#[test]
fn since_zero_replays_everything_without_a_gap() {
    let server = Server::start(&["--poll-timeout-ms", "200"]);
    assert_eq!(publish(&server, 5, "only"), 0);

    let body = poll(&server, "/poll/5?since=0");
    assert_eq!(body["gap"], serde_json::json!([]), "{body}");
    assert_eq!(poll_messages(&body), ["only"]);
    assert_eq!(sse_replay(&server, "/events/5?since=0", 1), ["only"]);

    publish(&server, 5, "second");
    // The same with this server's epoch, and as Last-Event-ID.
    let epoch = body["since"]
        .as_str()
        .and_then(|pos| pos.split_once(':'))
        .expect("<epoch>:<seq>")
        .0
        .to_owned();
    let body = poll(&server, &format!("/poll/5?since={epoch}:0"));
    assert_eq!(body["gap"], serde_json::json!([]), "{body}");
    assert_eq!(poll_messages(&body), ["only", "second"]);
    let mut sse = Client::connect(server.public);
    sse.write(b"GET /events/5 HTTP/1.1\r\nHost: comet.test\r\nLast-Event-ID: 0\r\n\r\n");
    assert_eq!(sse.read_head().status, 200);
    for data in ["only", "second"] {
        let event = sse.next_event().expect("an event");
        assert_eq!(
            (event.event.as_deref(), event.data.as_deref()),
            (None, Some(data))
        );
    }

    // An id that never had a message: nothing, no gap (the poll waits out its timeout).
    let body = poll(&server, "/poll/6?since=0");
    assert_eq!(body["gap"], serde_json::json!([]), "{body}");
    assert_eq!(poll_messages(&body), Vec::<&str>::new());

    assert_eq!(total(&metrics(&server), "comet_resume_gaps_total"), 0);
}

/// Once a message of the id has been forgotten, "from the beginning" has missed it: a gap.
#[test]
fn since_zero_is_a_gap_once_the_history_forgot() {
    let server = Server::start(&["--history-messages", "1"]);
    publish(&server, 5, "first");
    publish(&server, 5, "second");
    let body = poll(&server, "/poll/5?since=0");
    assert_eq!(body["gap"], serde_json::json!([5]), "{body}");
    assert_eq!(poll_messages(&body), ["second"]);
    let mut sse = subscribe(server.public, "/events/5?since=0");
    let event = sse.next_event().expect("a gap notice");
    assert_eq!(event.event.as_deref(), Some("gap"), "{event:?}");
}
