//! End to end against the real `comet` binary: 200 `/test` and 50 `/events` subscribers, one
//! stamped message to each id, and every message must arrive.
//!
//! The binary: see `tools/testsupport/comet.rs` (`$COMET_BIN`, else the one this run built).
//!
//! Steps:
//! 1. start `comet serve` on port 0 and read its `comet: listening` line for the addresses;
//! 2. start two floodtests and read their per-second `Stats:` lines until every subscriber
//!    is connected (an event, not a sleep);
//! 3. publish one message per id over one keep-alive connection and sum `connections`;
//! 4. read `Stats:` lines until every message arrived, stop floodtest with SIGTERM; its JSON
//!    summary must count every message, stamped, with no error. (--duration only bounds a
//!    failing run.)

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[path = "../../testsupport/comet.rs"]
mod comet;
#[path = "../../testsupport/harness.rs"]
mod harness;

use comet::{comet_bin, start_comet};

/// Starts floodtest; returns it and a channel of its stdout lines.
fn start_flood(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_floodtest"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout: ChildStdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for a per-second `Stats:` line that satisfies `done`.
fn wait_stats(rx: &mpsc::Receiver<String>, done: impl Fn(&str) -> bool) {
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("floodtest reports every second");
        if line.starts_with("Stats: ") && done(&line) {
            return;
        }
    }
}

/// Stops floodtest with SIGTERM (it then prints its summary) and returns the summary.
fn summary(child: &mut Child, rx: &mpsc::Receiver<String>) -> serde_json::Value {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
    let last = rx.iter().last().expect("summary line");
    serde_json::from_str(&last).expect("summary JSON")
}

/// POSTs one message to each id over one keep-alive connection; returns the connections sum.
fn publish(addr: &str, ids: impl Iterator<Item = u64>) -> u64 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut delivered = 0;
    for id in ids {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros();
        let body = format!("ts={ts} hello <&> world");
        // One write per request: several small writes would meet Nagle and delayed ACKs.
        let request = format!(
            "POST /send/{id} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let answer = harness::read_message(&mut reader).expect("an answer");
        assert!(
            answer.first_line.starts_with("HTTP/1.1 200"),
            "{}",
            answer.first_line
        );
        let answer: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        delivered += answer["connections"].as_u64().unwrap();
    }
    delivered
}

#[test]
fn real_comet_200_html_and_50_sse_subscribers() {
    let bin = comet_bin();
    let server = start_comet(&bin);
    let common = [
        "--target",
        &server.public,
        "--rate",
        "0",
        "--duration",
        "60s",
    ];
    let (mut html, html_rx) = start_flood(&[&common[..], &["-n", "200"]].concat());
    let (mut sse, sse_rx) = start_flood(
        &[
            &common[..],
            &["-n", "50", "--path", "events", "--first-id", "1001"],
        ]
        .concat(),
    );
    wait_stats(&html_rx, |l| l.starts_with("Stats: {200,"));
    wait_stats(&sse_rx, |l| l.starts_with("Stats: {50,"));
    let delivered = publish(&server.publish, (1..=200).chain(1001..=1050));
    assert_eq!(delivered, 250);
    wait_stats(&html_rx, |l| l.contains(" msgs=200 "));
    wait_stats(&sse_rx, |l| l.contains(" msgs=50 "));
    for (child, rx, n) in [(&mut html, &html_rx, 200u64), (&mut sse, &sse_rx, 50)] {
        let s = summary(child, rx);
        let c = &s["counters"];
        assert_eq!(c["connected"], n, "{s}");
        assert_eq!(c["messages"], n, "{s}");
        assert_eq!(c["messages_unstamped"], 0, "{s}");
        assert_eq!(s["errors"], 0, "{s}");
        assert_eq!(s["latency_us"]["count"], n, "{s}");
    }
}
