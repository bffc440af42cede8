//! msggen against a fake publish API that answers every pipelined request, single or batch.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[path = "../../testsupport/harness.rs"]
mod harness;

use harness::{read_message, serve_each};

/// Answers each request with connections = 2 per message; counts stamped messages.
fn serve(mut stream: TcpStream, stamped: &AtomicU64) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    while let Some(request) = read_message(&mut reader) {
        let body = request.body;
        let answer = if request.first_line.starts_with("POST /send/") {
            assert!(body.starts_with("ts="), "{body}");
            stamped.fetch_add(1, Ordering::Relaxed);
            r#"{"id":1,"connections":2}"#.to_string()
        } else {
            assert!(request.first_line.starts_with("POST /send "));
            let lines = body.lines().count() as u64;
            for line in body.lines() {
                let (id, msg) = line.split_once(' ').unwrap();
                assert!(id.parse::<u64>().unwrap() >= 1);
                assert!(msg.starts_with("ts="));
            }
            stamped.fetch_add(lines, Ordering::Relaxed);
            format!(r#"{{"messages":{lines},"connections":{}}}"#, lines * 2)
        };
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        )
        .unwrap();
    }
}

fn start() -> (String, Arc<AtomicU64>) {
    let stamped = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&stamped);
    let addr = serve_each(move |stream| serve(stream, &counter));
    (addr, stamped)
}

fn run(args: &[&str]) -> serde_json::Value {
    harness::run_json(env!("CARGO_BIN_EXE_msggen"), args)
}

#[test]
fn seed_generators_with_count() {
    let (addr, stamped) = start();
    // 10 generators every 10 ms, 20 messages each: 200 messages at 1000/s.
    let s = run(&[
        "--target",
        &addr,
        "--generators",
        "10",
        "--interval-ms",
        "10",
        "--count",
        "20",
        "--max-id",
        "50",
        "--duration",
        "30s",
    ]);
    assert_eq!(s["sent"], 200, "{s}");
    assert_eq!(s["accepted"], 200);
    assert_eq!(s["failed"], 0);
    assert_eq!(s["connections"], 400);
    assert_eq!(s["unanswered"], 0);
    assert_eq!(stamped.load(Ordering::Relaxed), 200);
    assert!(s["send_s"].as_f64().unwrap() < 5.0);
}

#[test]
fn batch_rate_mode() {
    let (addr, stamped) = start();
    let s = run(&[
        "--target",
        &addr,
        "--rate",
        "20000",
        "--duration",
        "1s",
        "--batch",
        "100",
        "--size",
        "100",
    ]);
    let sent = s["sent"].as_u64().unwrap();
    assert!(sent > 10_000, "{s}");
    assert_eq!(s["accepted"], sent);
    assert_eq!(s["connections"], sent * 2);
    assert_eq!(stamped.load(Ordering::Relaxed), sent);
}

/// A publish API whose cluster cannot store a key's first try: 503 with Retry-After: 0, then
/// 200 for the same key. msggen sends each refused request again, with its key, once.
#[test]
fn a_503_is_sent_again_with_the_same_key() {
    let tries: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>> = Arc::default();
    let seen = Arc::clone(&tries);
    let addr = serve_each(move |mut stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        while let Some(request) = read_message(&mut reader) {
            let key = request
                .headers
                .get("idempotency-key")
                .cloned()
                .expect("a key on every request");
            let n = {
                let mut tries = seen.lock().unwrap();
                let n = tries.entry(key).or_default();
                *n += 1;
                *n
            };
            let answer = if n == 1 {
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 3\r\n\r\nno\n"
                    .to_string()
            } else {
                let body = r#"{"id":1,"connections":1}"#;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            };
            stream.write_all(answer.as_bytes()).unwrap();
        }
    });
    let s = run(&["--target", &addr, "--rate", "200", "--duration", "1s"]);
    let sent = s["sent"].as_u64().unwrap();
    assert!(sent >= 150, "{s}");
    assert_eq!(s["accepted"], sent, "{s}");
    assert_eq!(s["retried"], sent, "{s}");
    assert_eq!(s["failed"], 0, "{s}");
    let tries = tries.lock().unwrap();
    assert_eq!(tries.len() as u64, sent);
    assert!(tries.values().all(|&n| n == 2), "each key twice");
}
