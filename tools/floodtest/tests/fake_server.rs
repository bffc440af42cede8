//! floodtest against a tiny fake streaming server: each connection gets a header block, a few
//! stamped messages (split into odd-sized writes), then the terminating chunk.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{SystemTime, UNIX_EPOCH};

#[path = "../../testsupport/harness.rs"]
mod harness;

use harness::{read_message, serve_each};

const MESSAGES_PER_CONN: u64 = 3;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn serve_one(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some(request) = read_message(&mut reader) else {
        return;
    };
    stream_to(stream, &request.first_line);
}

/// Answers the request whose first line is `first_line` with a stream of a few messages.
fn stream_to(mut stream: TcpStream, first_line: &str) {
    let sse = first_line.starts_with("GET /events/");
    let mut out = Vec::new();
    let content_type = if sse {
        "text/event-stream"
    } else {
        "text/html; charset=utf-8"
    };
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    for n in 1..=MESSAGES_PER_CONN {
        let msg = format!("ts={} xxxxxxxx", now_us());
        let data = if sse {
            format!("id: {n}\ndata: {msg}\n\n")
        } else {
            format!("Recvd msg #{n}: '{msg}'<br/>")
        };
        write!(out, "{:x}\r\n{data}\r\n", data.len()).unwrap();
    }
    out.extend_from_slice(b"0\r\n\r\n");
    // Odd-sized writes with TCP_NODELAY so the client sees many split points.
    stream.set_nodelay(true).unwrap();
    for piece in out.chunks(7) {
        if stream.write_all(piece).is_err() {
            return;
        }
    }
}

fn run_floodtest(args: &[&str]) -> serde_json::Value {
    harness::run_json(env!("CARGO_BIN_EXE_floodtest"), args)
}

fn check(summary: &serde_json::Value, conns: u64) {
    let c = &summary["counters"];
    assert_eq!(c["connected"], conns, "{summary}");
    assert_eq!(c["closed"], conns);
    assert_eq!(c["closed_graceful"], conns);
    assert_eq!(c["messages"], conns * MESSAGES_PER_CONN);
    assert_eq!(c["messages_unstamped"], 0);
    assert_eq!(summary["errors"], 0);
    assert_eq!(summary["latency_us"]["count"], conns * MESSAGES_PER_CONN);
}

#[test]
fn one_process_html_stream() {
    let addr = serve_each(serve_one);
    let s = run_floodtest(&[
        "--target",
        &addr,
        "-n",
        "50",
        "--rate",
        "0",
        "--duration",
        "20s",
    ]);
    check(&s, 50);
    assert_eq!(s["procs"], 1);
}

#[test]
fn three_processes_sse_stream() {
    let addr = serve_each(serve_one);
    let dir = std::env::temp_dir().join(format!("floodtest-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("summary.json");
    let stats = dir.join("stats.tsv");
    let s = run_floodtest(&[
        "--target",
        &addr,
        "-n",
        "60",
        "--rate",
        "500",
        "--path",
        "events",
        "--procs",
        "3",
        "--duration",
        "20s",
        "--json",
        json.to_str().unwrap(),
        "--stats-file",
        stats.to_str().unwrap(),
    ]);
    check(&s, 60);
    assert_eq!(s["procs"], 3);
    let from_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(from_file, s);
    assert!(std::fs::read_to_string(&stats)
        .unwrap()
        .starts_with("# elapsed_s"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn urls_file_and_source_addresses() {
    let addr = serve_each(serve_one);
    let dir = std::env::temp_dir().join(format!("floodtest-urls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let urls = dir.join("urls.txt");
    let text: String = (1..=20)
        .map(|i| format!("http://{addr}/test/{i}\n"))
        .collect();
    std::fs::write(&urls, text).unwrap();
    let s = run_floodtest(&[
        "--urls",
        urls.to_str().unwrap(),
        "--rate",
        "0",
        "--source-addrs",
        "127.0.0.2-127.0.0.4",
        "--duration",
        "20s",
    ]);
    check(&s, 20);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With `--jwt-secret`, every request carries `Authorization: Bearer <jwt>`: HS256 with that
/// secret, `sub` the connection's id, `exp` about an hour ahead.
#[test]
fn jwt_secret_sends_a_token_per_connection() {
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = serve_each(move |mut stream: TcpStream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let request = read_message(&mut reader).expect("a request");
        let auth = request.headers.get("authorization").cloned();
        tx.send((request.first_line, auth)).unwrap();
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
    });
    let s = run_floodtest(&[
        "--target",
        &addr,
        "-n",
        "5",
        "--first-id",
        "70",
        "--path-kind",
        "events",
        "--jwt-secret",
        "s3cret",
        "--rate",
        "0",
        "--duration",
        "20s",
    ]);
    assert_eq!(s["counters"]["connected"], 5, "{s}");
    let now = now_us() / 1_000_000;
    let mut subs: Vec<u64> = (0..5)
        .map(|_| {
            let (request_line, auth) = rx.recv().unwrap();
            let token = auth
                .as_deref()
                .and_then(|a| a.strip_prefix("Bearer "))
                .expect("a bearer token");
            let claims = jsonwebtoken::decode::<serde_json::Value>(
                token,
                &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
                &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
            )
            .expect("a valid HS256 token")
            .claims;
            let exp = claims["exp"].as_u64().unwrap();
            assert!((now + 3500..=now + 3700).contains(&exp), "{claims}");
            let sub = claims["sub"].as_str().unwrap();
            assert!(request_line.starts_with(&format!("GET /events/{sub} ")));
            sub.parse().unwrap()
        })
        .collect();
    subs.sort_unstable();
    assert_eq!(subs, [70, 71, 72, 73, 74]);
}

/// `--retry-ms`: each connection's first attempt gets a `503` (as from a server shedding a
/// reconnect storm); with retries every one is made again and streams, without them every one
/// stays failed. A `404` (ids from 41 on) is an answer: never made again.
#[test]
fn retry_ms_makes_a_failed_attempt_again() {
    let first_attempts =
        std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let addr = serve_each(move |mut stream: TcpStream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let Some(request) = read_message(&mut reader) else {
            return;
        };
        let id: u64 = request
            .first_line
            .split_whitespace()
            .nth(1)
            .and_then(|path| path.rsplit('/').next())
            .and_then(|id| id.parse().ok())
            .unwrap();
        if id > 40 {
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            return;
        }
        if first_attempts
            .lock()
            .unwrap()
            .insert(request.first_line.clone())
        {
            let _ = stream.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
            );
            return;
        }
        stream_to(stream, &request.first_line);
    });
    let run = |first_id: &str, retry_ms: &str| {
        run_floodtest(&[
            "--target",
            &addr,
            "-n",
            "20",
            "--first-id",
            first_id,
            "--rate",
            "0",
            "--duration",
            "20s",
            "--retry-ms",
            retry_ms,
        ])
    };
    let s = run("1", "50");
    let c = &s["counters"];
    assert_eq!(c["errors_status"], 20, "{s}");
    assert_eq!(c["retries"], 20, "{s}");
    assert_eq!(c["connected"], 20, "{s}");
    assert_eq!(c["closed_graceful"], 20, "{s}");
    assert_eq!(c["messages"], 20 * MESSAGES_PER_CONN, "{s}");
    // Ids not asked for before, so that their first attempt fails too.
    let s = run("21", "0");
    let c = &s["counters"];
    assert_eq!(c["errors_status"], 20, "{s}");
    assert_eq!(c["retries"], 0, "{s}");
    assert_eq!(c["connected"], 0, "{s}");
    let s = run("41", "50");
    let c = &s["counters"];
    assert_eq!(c["errors_status"], 20, "{s}");
    assert_eq!(c["retries"], 0, "{s}");
    assert_eq!(c["connected"], 0, "{s}");
}
