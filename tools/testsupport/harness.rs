//! What the tools' tests share: running a tool for the JSON summary it prints last, and the
//! pieces of their small fake servers (a listener with a thread per connection, reading one
//! HTTP message). Each test crate includes this file with `#[path]` and uses what it needs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::BufRead;
use std::net::{TcpListener, TcpStream};
use std::process::Command;

/// Runs a tool (`env!("CARGO_BIN_EXE_<name>")`) to its end; returns its exit code and the JSON
/// on its last stdout line. Its output goes to stderr, which the test harness shows on failure.
pub fn run_tool(bin: &str, args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(bin).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().expect("a summary line");
    let json = serde_json::from_str(last).expect("summary JSON");
    (out.status.code().expect("an exit code"), json)
}

/// [`run_tool`] for a run that must succeed; returns the JSON summary.
pub fn run_json(bin: &str, args: &[&str]) -> serde_json::Value {
    let (code, json) = run_tool(bin, args);
    assert_eq!(code, 0, "{bin} failed: {json}");
    json
}

/// Listens on a port the kernel picks and hands every connection to `handle` on a thread of
/// its own; returns the address.
pub fn serve_each<F>(handle: F) -> String
where
    F: Fn(TcpStream) + Clone + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let stream = stream.unwrap();
            let handle = handle.clone();
            std::thread::spawn(move || handle(stream));
        }
    });
    addr
}

/// One HTTP request or response: its first line (with the CRLF), its headers (lower-cased
/// names, trimmed values) and its Content-Length body (none without one).
pub struct Message {
    pub first_line: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// Reads one message; `None` when the stream ends or fails before its head is complete.
pub fn read_message(reader: &mut impl BufRead) -> Option<Message> {
    let mut first_line = String::new();
    if reader.read_line(&mut first_line).ok()? == 0 {
        return None;
    }
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let length = headers
        .get("content-length")
        .map_or(0, |v| v.parse().expect("a numeric content-length"));
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    Some(Message {
        first_line,
        headers,
        body: String::from_utf8(body).unwrap(),
    })
}
