//! resumetest against a small fake comet that implements the resume model in memory (every
//! message kept, positions from one global counter), and against two broken variants: one
//! that ignores `Last-Event-ID`, one that replays one message too many. The correct one must
//! pass with nothing lost; each broken one must make resumetest fail with the right count.
//!
//! Every (re)subscription waits 30 ms before it is registered, so that messages are always
//! published while a subscriber is away and must come from the history.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

type Shared = Arc<Mutex<State>>;

/// Reads a request head; returns the request line and the headers, lower-cased names.
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<(String, HashMap<String, String>)> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).ok()? == 0 {
        return None;
    }
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some((request_line, headers));
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
}

fn chunk(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

fn subscriber(stream: TcpStream, state: Shared, mode: Mode) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some((request_line, headers)) = read_head(&mut reader) else {
        return;
    };
    let id: u64 = request_line
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.strip_prefix("/events/"))
        .and_then(|id| id.parse().ok())
        .expect("GET /events/<id>");
    let since: Option<u64> = headers.get("last-event-id").map(|v| v.parse().unwrap());
    let mut out = stream;
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

fn publisher(stream: TcpStream, state: Shared) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    while let Some((request_line, headers)) = read_head(&mut reader) {
        let id: u64 = request_line
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.strip_prefix("/send/"))
            .and_then(|id| id.parse().ok())
            .expect("POST /send/<id>");
        let mut body = vec![0u8; headers["content-length"].parse().unwrap()];
        reader.read_exact(&mut body).unwrap();
        let body = String::from_utf8(body).unwrap();
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

/// Starts the fake on two ports; returns (subscriber address, publish address).
fn start_fake(mode: Mode) -> (String, String) {
    let state = Shared::default();
    let public = TcpListener::bind("127.0.0.1:0").unwrap();
    let publish = TcpListener::bind("127.0.0.1:0").unwrap();
    let addrs = (
        public.local_addr().unwrap().to_string(),
        publish.local_addr().unwrap().to_string(),
    );
    let s = Arc::clone(&state);
    std::thread::spawn(move || {
        for stream in public.incoming() {
            let s = Arc::clone(&s);
            std::thread::spawn(move || subscriber(stream.unwrap(), s, mode));
        }
    });
    std::thread::spawn(move || {
        for stream in publish.incoming() {
            let s = Arc::clone(&state);
            std::thread::spawn(move || publisher(stream.unwrap(), s));
        }
    });
    addrs
}

/// Runs resumetest (5 ids, 500 msg/s for 2 s, 40 reconnects); returns its exit code and JSON.
fn resumetest(mode: Mode) -> (i32, serde_json::Value) {
    let (public, publish) = start_fake(mode);
    let out = Command::new(env!("CARGO_BIN_EXE_resumetest"))
        .args(["--target", &public, "--publish", &publish])
        .args(["--subscribers", "5", "--rate", "500", "--duration", "2s"])
        .args(["--reconnects", "40", "--drain", "5s", "--seed", "42"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let json = serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap();
    (out.status.code().unwrap(), json)
}

#[test]
fn a_correct_server_loses_nothing() {
    let (code, s) = resumetest(Mode::Correct);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["published"], 1000, "{s}");
    assert_eq!(s["received"], 1000, "{s}");
    for zero in ["lost", "duplicated", "reordered", "gaps", "unfinished"] {
        assert_eq!(s[zero], 0, "{zero}: {s}");
    }
    assert_eq!(s["reconnects"], 40, "{s}");
    assert_eq!(s["resumed_without_id"], 0, "{s}");
    assert_eq!(s["connect_errors"], 0, "{s}");
    assert_eq!(s["no_initial_position"], 0, "{s}");
    // Each connection gets a heartbeat and a position 30 ms after its head, unless it was
    // dropped before: 5 first connections and at most 40 resumes.
    let positions = s["positions"].as_u64().unwrap();
    assert!((5..=45).contains(&positions), "{s}");
    assert_eq!(s["heartbeats"], positions, "{s}");
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
