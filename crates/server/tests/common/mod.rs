//! Helpers for the integration tests: start the real `comet` binary on ephemeral ports, and
//! talk raw HTTP/1.1 bytes to it with read timeouts.
//!
//! Layout: `Server` (the child process: start, signal, stop), `Client` (one TCP connection
//! with a receive buffer: heads, chunks, bodies, EOF), then shorthands for what most tests do
//! (`subscribe`, `Publisher`, `metrics`, `eventually`).
//!
//! Every wait is bounded by `TIMEOUT` and ends on an event (bytes, EOF, process exit); the
//! only polling is `eventually`, for effects the server does not announce (a close being
//! processed), and `Server::wait`, because std has no wait-with-timeout for a child.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod nats;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest any single wait may take: generous, for a loaded two-core machine.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Start-up of a debug build under load can be slow.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `comet serve`, stopped with SIGINT (then SIGKILL) on drop.
pub struct Server {
    child: Child,
    pub public: SocketAddr,
    pub publish: SocketAddr,
    pub workers: usize,
    /// Everything the server wrote to stderr (its log), shown when a test fails.
    log: Arc<Mutex<Vec<u8>>>,
    /// The thread copying stderr into `log`; it ends when the server exits.
    log_reader: Option<JoinHandle<()>>,
}

impl Server {
    /// `comet serve --listen 127.0.0.1:0 --publish-listen 127.0.0.1:0 <args>`, once it has
    /// printed its ready line.
    pub fn start(args: &[&str]) -> Server {
        Server::start_env(args, &[])
    }

    /// The same with environment variables (`COMET_*`) set for the server.
    /// A listener given in `args` replaces the default one (a flag may be given once).
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_comet"));
        command.arg("serve");
        for flag in ["--listen", "--publish-listen"] {
            if !args.contains(&flag) {
                command.args([flag, "127.0.0.1:0"]);
            }
        }
        let mut child = command
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn comet");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        let log_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        // The reader keeps draining stdout after the ready line so the server never writes
        // into a closed pipe.
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = ready_tx.send(line);
            }
            for _ in lines {}
        });
        let line = match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                let log = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
                panic!("comet printed no ready line ({e}); exit {status:?}; log:\n{log}");
            }
        };
        let (public, publish, workers) = parse_ready_line(&line);
        Server {
            child,
            public,
            publish,
            workers,
            log,
            log_reader: Some(log_reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` ("INT", "TERM", ...) to the server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal} failed: {status}");
    }

    /// Waits for the server to exit, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` and returns the exit status, which must come within `TIMEOUT`. Fails if
    /// any thread of the server panicked.
    pub fn stop(&mut self, signal: &str) -> ExitStatus {
        self.signal(signal);
        let Some(status) = self.wait(TIMEOUT) else {
            panic!("comet still running {TIMEOUT:?} after SIG{signal}");
        };
        self.assert_no_panic();
        status
    }

    /// After exit: the whole log has been read, and no thread panicked (a worker's panic may
    /// otherwise go unnoticed when the process still exits 0).
    fn assert_no_panic(&mut self) {
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
        let log = self.log();
        assert!(!log.contains("panicked"), "comet panicked:\n{log}");
    }

    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-s", "INT", &self.pid().to_string()])
                .status();
            if self.wait(TIMEOUT).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("---- comet log ----\n{}", self.log());
        } else {
            self.assert_no_panic();
        }
    }
}

/// `comet: listening public=ADDR publish=ADDR workers=N`
fn parse_ready_line(line: &str) -> (SocketAddr, SocketAddr, usize) {
    let rest = line
        .strip_prefix("comet: listening ")
        .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
    let field = |key: &str| {
        rest.split(' ')
            .find_map(|kv| kv.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in ready line {line:?}"))
    };
    (
        field("public=").parse().expect("public address"),
        field("publish=").parse().expect("publish address"),
        field("workers=").parse().expect("worker count"),
    )
}

/// A response head.
#[derive(Debug)]
pub struct Head {
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: u8,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The value of header `name` (case-insensitive), if present once or more.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length")
            .map(|v| v.parse().expect("numeric Content-Length"))
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }
}

/// A complete response: head and body (de-chunked).
#[derive(Debug)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One Server-Sent Event: its `id:`, `event:` and `data:` lines (data lines joined by `\n`).
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
}

impl Event {
    pub fn parse(text: &str) -> Event {
        let mut event = Event {
            id: None,
            event: None,
            data: None,
        };
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                event.id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("event: ") {
                event.event = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                match &mut event.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(v);
                    }
                    None => event.data = Some(v.to_string()),
                }
            }
        }
        event
    }

    /// The event's id (`<epoch>:<seq>`) as one sequence number.
    pub fn seq(&self) -> u64 {
        position_seq(self.id.as_deref().expect("an id"))
    }
}

/// The milliseconds of an SSE block that is a `retry:` field alone (`retry: 1234\n\n`).
pub fn retry_ms(block: &str) -> Option<u64> {
    block
        .strip_prefix("retry: ")?
        .strip_suffix("\n\n")?
        .parse()
        .ok()
}

/// The sequence number of a one-id position `<epoch>:<seq>`.
pub fn position_seq(pos: &str) -> u64 {
    let (_epoch, seq) = pos.split_once(':').expect("<epoch>:<seq>");
    seq.parse().expect("a number")
}

/// One TCP connection to the server, with the bytes received and not yet consumed.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    /// True once the peer closed (EOF or reset).
    closed: bool,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Client::with(stream)
    }

    /// A client whose receive buffer is `bytes` (SO_RCVBUF, set before connecting: the kernel
    /// doubles it), so that a stream it does not read fills with little data.
    pub fn connect_with_recv_buffer(addr: SocketAddr, bytes: usize) -> Client {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        socket
            .connect_timeout(&addr.into(), TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Client::with(socket.into())
    }

    fn with(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }

    /// This end's address (its port names the connection to the server).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.stream
            .local_addr()
            .expect("a connected socket's address")
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write {} bytes: {e}", bytes.len()));
    }

    /// Reads once more into the buffer; returns false at EOF (or reset). Panics when nothing
    /// arrives within `TIMEOUT`, naming `what` was awaited.
    fn fill(&mut self, what: &str) -> bool {
        if self.closed {
            return false;
        }
        let mut tmp = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    self.closed = true;
                    return false;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!(
                        "nothing for {TIMEOUT:?} while waiting for {what}; unread: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    )
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    self.closed = true;
                    return false;
                }
                Err(e) => panic!("read while waiting for {what}: {e}"),
            }
        }
    }

    fn eof_panic(&self, what: &str) -> ! {
        panic!(
            "connection closed while waiting for {what}; unread: {:?}",
            String::from_utf8_lossy(&self.buf)
        )
    }

    /// Consumes exactly `n` bytes.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            if !self.fill("more bytes") {
                self.eof_panic(&format!("{n} bytes"));
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Consumes bytes up to and including the first CRLF; returns the line without it.
    pub fn read_line(&mut self) -> Vec<u8> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..end].to_vec();
                self.buf.drain(..end + 2);
                return line;
            }
            if !self.fill("a CRLF-terminated line") {
                self.eof_panic("a CRLF-terminated line");
            }
        }
    }

    /// Consumes bytes up to and including the first blank line of an SSE stream sent without
    /// chunked framing (HTTP/1.0); returns the event's text with its final newlines.
    pub fn read_raw_event(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                return String::from_utf8(event).expect("UTF-8 event");
            }
            if !self.fill("an SSE event") {
                self.eof_panic("an SSE event");
            }
        }
    }

    /// The next SSE event with data, or a named event, of a chunked stream: positions alone
    /// (`id:` and nothing else) and heartbeats (`:`) are skipped. None at the stream's end.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            let chunk = String::from_utf8(self.read_chunk()?).expect("UTF-8 event");
            let event = Event::parse(&chunk);
            if event.data.is_some() || event.event.is_some() {
                return Some(event);
            }
        }
    }

    /// The next position-only event (`id: <pos>` and nothing else) of a chunked SSE stream,
    /// failing on anything else; the `retry:` that opens a stream is skipped.
    pub fn expect_position(&mut self) -> String {
        let mut chunk = String::from_utf8(self.read_chunk().expect("a position")).unwrap();
        if retry_ms(&chunk).is_some() {
            chunk = String::from_utf8(self.read_chunk().expect("a position")).unwrap();
        }
        let event = Event::parse(&chunk);
        assert!(
            event.data.is_none() && event.event.is_none(),
            "not a position: {chunk:?}"
        );
        event.id.expect("an id line")
    }

    /// The next chunk of an SSE stream must be a `retry:` field alone (the reconnect delay the
    /// server tells the client, jittered per connection); returns its milliseconds.
    pub fn expect_retry(&mut self) -> u64 {
        let chunk = String::from_utf8(self.read_chunk().expect("a retry: field")).unwrap();
        retry_ms(&chunk).unwrap_or_else(|| panic!("not a retry: field alone: {chunk:?}"))
    }

    /// Consumes a response head.
    pub fn read_head(&mut self) -> Head {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let head = Head {
                        version: response.version.expect("version"),
                        status: response.code.expect("status"),
                        reason: response.reason.unwrap_or("").to_owned(),
                        headers: response
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_owned(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                    };
                    self.buf.drain(..len);
                    return head;
                }
                Ok(httparse::Status::Partial) => {
                    if !self.fill("a response head") {
                        self.eof_panic("a response head");
                    }
                }
                Err(e) => panic!(
                    "malformed response head ({e}): {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Consumes one chunk of a chunked body: `Some(data)`, or `None` for the last chunk
    /// (`0\r\n\r\n`, no trailers).
    pub fn read_chunk(&mut self) -> Option<Vec<u8>> {
        let line = self.read_line();
        let line = String::from_utf8(line).expect("ASCII chunk-size line");
        let size = usize::from_str_radix(line.trim(), 16)
            .unwrap_or_else(|e| panic!("chunk-size line {line:?}: {e}"));
        if size == 0 {
            let trailer = self.read_line();
            assert!(trailer.is_empty(), "unexpected trailer {trailer:?}");
            return None;
        }
        let data = self.read_exact(size);
        let crlf = self.read_exact(2);
        assert_eq!(crlf, b"\r\n", "chunk data not followed by CRLF");
        Some(data)
    }

    /// Consumes one chunk and checks it is the UTF-8 text `expected`.
    pub fn expect_chunk(&mut self, expected: &str) {
        match self.read_chunk() {
            Some(data) => assert_eq!(String::from_utf8_lossy(&data), expected),
            None => panic!("stream ended while waiting for chunk {expected:?}"),
        }
    }

    /// Consumes everything up to EOF.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill("EOF") {}
        std::mem::take(&mut self.buf)
    }

    /// Checks that the server closes the connection without sending anything more.
    pub fn expect_eof(&mut self) {
        let rest = self.read_to_end();
        assert!(
            rest.is_empty(),
            "expected EOF, got {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// Consumes a whole response: Content-Length body, chunked body, or body until EOF.
    pub fn read_response(&mut self) -> Response {
        let head = self.read_head();
        let body = if let Some(n) = head.content_length() {
            self.read_exact(n)
        } else if head.is_chunked() {
            let mut body = Vec::new();
            while let Some(chunk) = self.read_chunk() {
                body.extend_from_slice(&chunk);
            }
            body
        } else {
            self.read_to_end()
        };
        Response { head, body }
    }
}

/// `GET <path> HTTP/1.1` with a Host header.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

/// `POST /send/<id>` with a Content-Length body, keep-alive.
pub fn post_send(id: &str, msg: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST /send/{id} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        msg.len()
    )
    .into_bytes();
    req.extend_from_slice(msg);
    req
}

/// `POST <path>` with a Content-Length body, keep-alive.
pub fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// Sends one request on a fresh connection and reads the answer.
pub fn request(addr: SocketAddr, bytes: &[u8]) -> Response {
    let mut client = Client::connect(addr);
    client.write(bytes);
    client.read_response()
}

/// Checks an error answer to `what` (the request, for the failure message): `status`, a
/// one-line text/plain reason, `Connection: close`, and then the server closes.
pub fn expect_error(client: &mut Client, status: u16, what: &str) -> Response {
    let response = client.read_response();
    let text = response.text();
    let head = &response.head;
    assert_eq!(head.status, status, "answer to {what}: {response:?}");
    assert!(
        head.header("content-type")
            .is_some_and(|v| v.starts_with("text/plain")),
        "answer to {what}: {head:?}"
    );
    assert_eq!(
        head.header("connection"),
        Some("close"),
        "answer to {what}: {head:?}"
    );
    assert!(
        text.ends_with('\n') && text.trim_end().lines().count() == 1 && !text.trim().is_empty(),
        "the reason for {what} should be one non-empty line: {text:?}"
    );
    client.expect_eof();
    response
}

/// Sends `bytes` on a fresh connection and checks the error answer (see `expect_error`).
pub fn error_for(addr: SocketAddr, bytes: &[u8], status: u16) -> Response {
    let mut client = Client::connect(addr);
    client.write(bytes);
    expect_error(
        &mut client,
        status,
        &format!("{:?}", String::from_utf8_lossy(bytes)),
    )
}

/// Opens a stream (`/test/...` or `/events/...`) and consumes its head, which the server sends
/// only once the login is effective: a publish after this returns reaches the stream.
pub fn subscribe(addr: SocketAddr, path: &str) -> Client {
    let mut client = Client::connect(addr);
    client.write(&get(path));
    let head = client.read_head();
    assert_eq!(head.status, 200, "subscribing to {path}: {head:?}");
    assert_eq!(head.version, 1, "{head:?}");
    assert!(head.is_chunked(), "{head:?}");
    client
}

/// The seed's chunk text for message number `n`.
pub fn seed_msg(n: u64, msg: &str) -> String {
    format!("Recvd msg #{n}: '{msg}'<br/>")
}

/// A keep-alive connection to the publish API.
pub struct Publisher {
    pub client: Client,
}

impl Publisher {
    pub fn connect(server: &Server) -> Publisher {
        Publisher {
            client: Client::connect(server.publish),
        }
    }

    /// Publishes `msg` to `id`; returns how many connections it reached.
    pub fn send(&mut self, id: u64, msg: &str) -> u64 {
        self.client
            .write(&post_send(&id.to_string(), msg.as_bytes()));
        let response = self.client.read_response();
        assert_eq!(response.status(), 200, "publish answer: {response:?}");
        assert_eq!(
            response.text(),
            format!(
                "{{\"id\":{id},\"connections\":{}}}\n",
                json_number(&response.text(), "connections")
            )
        );
        json_number(&response.text(), "connections")
    }
}

/// Publishes on a fresh connection; returns how many connections `msg` reached.
pub fn publish(server: &Server, id: u64, msg: &str) -> u64 {
    Publisher::connect(server).send(id, msg)
}

/// The number after `"key":` in a one-line JSON object.
pub fn json_number(body: &str, key: &str) -> u64 {
    let pattern = format!("\"{key}\":");
    let start = body
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {key} in {body:?}"))
        + pattern.len();
    let digits: String = body[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number for {key} in {body:?}"))
}

/// `GET /metrics` on a fresh connection: the Prometheus text.
pub fn metrics(server: &Server) -> String {
    let response = request(
        server.publish,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(response.status(), 200, "{response:?}");
    response.text()
}

/// Samples of metric `name` as (labels, value); labels is what is between the braces.
pub fn samples(text: &str, name: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let labels = match series.strip_prefix(name)? {
                "" => "",
                rest => rest.strip_prefix('{')?.strip_suffix('}')?,
            };
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of label `label` in a sample's labels (`a="x",b="y"`; comet's label values hold
/// no commas or quotes).
pub fn label<'a>(labels: &'a str, label: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        pair.strip_prefix(label)?
            .strip_prefix("=\"")?
            .strip_suffix('"')
    })
}

/// Metric `name` per worker, indexed by its `worker` label, summed over its other labels.
pub fn per_worker(text: &str, name: &str) -> Vec<u64> {
    let mut values = Vec::new();
    for (labels, value) in samples(text, name) {
        let worker: usize = label(&labels, "worker")
            .unwrap_or_else(|| panic!("{name} labels {labels:?}"))
            .parse()
            .expect("numeric worker label");
        if values.len() <= worker {
            values.resize(worker + 1, 0);
        }
        values[worker] += value;
    }
    assert!(!values.is_empty(), "no {name} samples in:\n{text}");
    values
}

/// Metric `name` summed over workers.
pub fn total(text: &str, name: &str) -> u64 {
    per_worker(text, name).iter().sum()
}

/// Metric `name` summed over the samples whose label `key` is `value` (over workers, say).
pub fn total_where(text: &str, name: &str, key: &str, value: &str) -> u64 {
    samples(text, name)
        .iter()
        .filter(|(labels, _)| label(labels, key) == Some(value))
        .map(|(_, v)| v)
        .sum()
}

/// `comet_connections_closed_total` for one reason, summed over workers.
pub fn closed(text: &str, reason: &str) -> u64 {
    total_where(text, "comet_connections_closed_total", "reason", reason)
}

/// Retries `check` until it holds, at most `TIMEOUT`: for effects the server does not announce
/// (a closed connection being logged out).
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !check() {
        assert!(Instant::now() < deadline, "not within {TIMEOUT:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Client {
    /// The bytes received and not yet consumed, after waiting at most `wait` for some to
    /// arrive when none are buffered (empty: nothing came). Nothing is consumed. For checks that
    /// the server sends nothing, after an event has shown that it would have by now; keep `wait`
    /// short. Panics if the connection closes meanwhile.
    pub fn unread_within(&mut self, wait: Duration) -> &[u8] {
        if self.buf.is_empty() && !self.closed {
            self.stream.set_read_timeout(Some(wait)).unwrap();
            let mut tmp = [0u8; 16 * 1024];
            match self.stream.read(&mut tmp) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => self.closed = true,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => panic!("read: {e}"),
            }
            self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        }
        assert!(
            !self.closed || !self.buf.is_empty(),
            "the connection closed while waiting {wait:?} for bytes"
        );
        &self.buf
    }
}

/// `comet serve --listen 127.0.0.1:0 --publish-listen 127.0.0.1:0`, for a test to add to and run
/// itself ([`Server::start`] starts one and waits for its ready line).
pub fn serve_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_comet"));
    command.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--publish-listen",
        "127.0.0.1:0",
    ]);
    command
}

/// `comet serve --listen 127.0.0.1:0 --publish-listen 127.0.0.1:0 <args>` that must refuse to
/// start: exit code 1 and nothing on stdout (it never reported listening); returns its stderr.
pub fn refused_start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let output = serve_command().args(args).output().expect("run comet");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "it must not report listening");
    stderr
}

/// The path of `program`, which a test needs (it is `#[ignore = "needs <program>"]`, so it runs
/// only when asked to, as `tools/test.sh` does). Missing, the test fails saying how to install
/// it: a test that cannot run must not pass.
pub fn require(program: &str, package: &str) -> std::path::PathBuf {
    // Daemons (nginx, haproxy) live in /usr/sbin, which a user's PATH may leave out.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]);
    let found = dirs.map(|dir| dir.join(program)).find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "{program} is not installed, and this test needs it: run `bash tools/test.sh` \
             (it installs what the tests need), or `sudo apt-get install {package}`"
        )
    })
}

/// Seconds since the Unix epoch (token expiry).
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A subscriber token: a JWT (HS256) with `claims`, signed with `secret`.
pub fn jwt(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode a token")
}

/// A fresh, empty folder for `--state-dir`, unique to the test (`name`) and the test process;
/// it does not exist yet (comet creates it).
pub fn state_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("comet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl Server {
    /// SIGKILL: a crash. Waits for the exit.
    pub fn kill(&mut self) {
        self.signal("KILL");
        assert!(self.wait(TIMEOUT).is_some(), "comet survived SIGKILL");
    }
}
