//! resumetest against a small fake comet that implements the resume model in memory (every
//! message kept, positions from one global counter), and against two broken variants: one
//! that ignores `Last-Event-ID`, one that replays one message too many. The correct one must
//! pass with nothing lost; each broken one must make resumetest fail with the right count.
//!
//! Every (re)subscription waits 30 ms before it is registered, so that messages are always
//! published while a subscriber is away and must come from the history.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[path = "../../testsupport/harness.rs"]
mod harness;

use harness::{read_message, serve_each};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Correct,
    IgnoresLastEventId,
    ReplaysOneTooMany,
}

/// (position, body)
type Message = (u64, String);

#[derive(Default)]
struct State {
    /// The last position handed out, for every id.
    seq: u64,
    /// Per id: every message (position, body) and the live subscribers.
    ids: HashMap<u64, (Vec<Message>, Vec<Sender<Message>>)>,
    /// Per id: the source addresses its subscriptions came from.
    sources: HashMap<u64, HashSet<IpAddr>>,
}

type Shared = Arc<Mutex<State>>;

/// The `<id>` of a request line `<method> <prefix><id> HTTP/1.1`.
fn path_id(request_line: &str, prefix: &str) -> u64 {
    request_line
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.strip_prefix(prefix))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{request_line:?}: no {prefix}<id>"))
}

fn chunk(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

fn subscriber(mut out: TcpStream, state: &Shared, mode: Mode) {
    let mut reader = BufReader::new(out.try_clone().unwrap());
    let Some(request) = read_message(&mut reader) else {
        return;
    };
    let id = path_id(&request.first_line, "/events/");
    if let Ok(peer) = out.peer_addr() {
        let mut state = state.lock().unwrap();
        state.sources.entry(id).or_default().insert(peer.ip());
    }
    let since: Option<u64> = request
        .headers
        .get("last-event-id")
        .map(|v| v.parse().unwrap());
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    std::thread::sleep(Duration::from_millis(30));
    let (tx, rx) = mpsc::channel();
    {
        let mut state = state.lock().unwrap();
        let current = state.seq;
        let (history, subscribers) = state.ids.entry(id).or_default();
        let mut first = Vec::new();
        let replay_from = match (since, mode) {
            (Some(since), Mode::Correct) => Some(since),
            (Some(since), Mode::ReplaysOneTooMany) => Some(since - 1),
            _ => None,
        };
        if let Some(since) = replay_from {
            for (seq, body) in history.iter().filter(|(seq, _)| *seq > since) {
                first.extend(chunk(&format!("id: {seq}\ndata: {body}\n\n")));
            }
        }
        first.extend(chunk(&format!(":\n\nid: {current}\n\n")));
        if out.write_all(&first).is_err() {
            return;
        }
        subscribers.push(tx);
    }
    for (seq, body) in rx {
        if out
            .write_all(&chunk(&format!("id: {seq}\ndata: {body}\n\n")))
            .is_err()
        {
            return;
        }
    }
}

fn publisher(mut out: TcpStream, state: &Shared) {
    let mut reader = BufReader::new(out.try_clone().unwrap());
    while let Some(request) = read_message(&mut reader) {
        let id = path_id(&request.first_line, "/send/");
        let body = request.body;
        let connections = {
            let mut state = state.lock().unwrap();
            state.seq += 1;
            let seq = state.seq;
            let (history, subscribers) = state.ids.entry(id).or_default();
            history.push((seq, body.clone()));
            subscribers.retain(|tx| tx.send((seq, body.clone())).is_ok());
            subscribers.len()
        };
        let answer = format!("{{\"id\":{id},\"connections\":{connections}}}");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if out.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Starts the fake on two ports; returns (subscriber address, publish address, its state).
fn start_fake(mode: Mode) -> (String, String, Shared) {
    let state = Shared::default();
    let (s, p) = (Arc::clone(&state), Arc::clone(&state));
    (
        serve_each(move |stream| subscriber(stream, &s, mode)),
        serve_each(move |stream| publisher(stream, &p)),
        state,
    )
}

/// Per id, the source addresses its subscriptions came from.
fn sources(state: &Shared) -> HashMap<u64, HashSet<IpAddr>> {
    state.lock().unwrap().sources.clone()
}

/// Runs resumetest (5 ids, 500 msg/s for 2 s, 40 reconnects); returns its exit code and JSON.
fn resumetest(mode: Mode) -> (i32, serde_json::Value) {
    let (public, publish, _) = start_fake(mode);
    resumetest_with(&public, &publish, &["--subscribers", "5"])
}

fn resumetest_with(target: &str, publish: &str, more: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec![
        "--target",
        target,
        "--publish",
        publish,
        "--rate",
        "500",
        "--duration",
        "2s",
        "--reconnects",
        "40",
        "--drain",
        "5s",
        "--seed",
        "42",
    ];
    args.extend_from_slice(more);
    harness::run_tool(env!("CARGO_BIN_EXE_resumetest"), &args)
}

/// A passing run: exit 0, the 1000 messages published all received, nothing lost, duplicated,
/// reordered or announced as a gap, every subscriber caught up.
fn assert_all_arrived(code: i32, s: &serde_json::Value) {
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["published"], 1000, "{s}");
    assert_eq!(s["received"], 1000, "{s}");
    for zero in ["lost", "duplicated", "reordered", "gaps", "unfinished"] {
        assert_eq!(s[zero], 0, "{zero}: {s}");
    }
}

#[test]
fn a_correct_server_loses_nothing() {
    let (code, s) = resumetest(Mode::Correct);
    assert_all_arrived(code, &s);
    assert_eq!(s["reconnects"], 40, "{s}");
    assert_eq!(s["resumed_without_id"], 0, "{s}");
    assert_eq!(s["connect_errors"], 0, "{s}");
    assert_eq!(s["no_initial_position"], 0, "{s}");
    // Each connection gets a heartbeat and a position 30 ms after its head, unless it was
    // dropped before: 5 first connections and at most 40 resumes.
    let positions = s["positions"].as_u64().unwrap();
    assert!((5..=45).contains(&positions), "{s}");
    assert_eq!(s["heartbeats"], positions, "{s}");
    // Every resume is timed twice: to the head's arrival (kernel receive time) and to its
    // reading; the arrival comes first.
    let (read, arrival) = (&s["resume_ms"], &s["resume_arrival_ms"]);
    let unstamped = s["resumes_unstamped"].as_u64().unwrap();
    assert_eq!(read["count"], 40, "{s}");
    assert_eq!(arrival["count"].as_u64().unwrap() + unstamped, 40, "{s}");
    assert!(unstamped < 40, "{s}");
    assert!(
        arrival["max"].as_f64().unwrap() <= read["max"].as_f64().unwrap() + 1.0,
        "{s}"
    );
}

#[test]
fn ignoring_last_event_id_loses_messages() {
    let (code, s) = resumetest(Mode::IgnoresLastEventId);
    assert_eq!(code, 1, "{s}");
    let lost = s["lost"].as_u64().unwrap();
    assert!(lost > 0, "{s}");
    assert_eq!(s["received"].as_u64().unwrap() + lost, 1000, "{s}");
    assert_eq!(s["duplicated"], 0, "{s}");
}

#[test]
fn replaying_too_much_duplicates() {
    let (code, s) = resumetest(Mode::ReplaysOneTooMany);
    assert_eq!(code, 1, "{s}");
    assert_eq!(s["lost"], 0, "{s}");
    assert_eq!(s["received"], 1000, "{s}");
    // Each resume replays the message the client last saw again, unless that was a position.
    assert!(s["duplicated"].as_u64().unwrap() > 0, "{s}");
}

/// One thread drives every subscriber; half of them start on a node that refuses connections
/// (a closed port): each fails its connect once, moves to the live node and loses nothing.
#[test]
fn a_refused_connect_moves_the_subscriber_to_another_node() {
    let (public, publish, _) = start_fake(Mode::Correct);
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let (code, s) = resumetest_with(
        &format!("{dead},{public}"),
        &publish,
        &["--subscribers", "6", "--threads", "1"],
    );
    assert_all_arrived(code, &s);
    // Subscribers 0, 2 and 4 start on the dead node; client drops reconnect to the same node.
    assert_eq!(s["connect_errors"], 3, "{s}");
    assert_eq!(s["reconnects"], 40, "{s}");
}

/// `--source-addrs 3`: subscriber k connects from 127.0.0.(2 + k mod 3), every time; by default
/// (a few subscribers on loopback) all from 127.0.0.2.
#[test]
fn subscribers_connect_from_their_source_address() {
    let ip = |last: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
    let (public, publish, state) = start_fake(Mode::Correct);
    let (code, s) = resumetest_with(
        &public,
        &publish,
        &["--subscribers", "6", "--source-addrs", "3"],
    );
    assert_eq!(code, 0, "{s}");
    let seen = sources(&state);
    assert_eq!(seen.len(), 6, "{seen:?}");
    for (id, ips) in &seen {
        let want = ip(2 + ((id - 1) % 3) as u8);
        assert_eq!(ips, &HashSet::from([want]), "id {id}");
    }

    let (public, publish, state) = start_fake(Mode::Correct);
    let (code, s) = resumetest_with(&public, &publish, &["--subscribers", "2"]);
    assert_eq!(code, 0, "{s}");
    let all: HashSet<IpAddr> = sources(&state).into_values().flatten().collect();
    assert_eq!(all, HashSet::from([ip(2)]));
}
