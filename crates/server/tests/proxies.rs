//! The README's reverse-proxy set-ups (`deploy/nginx.conf`, `deploy/haproxy.cfg`,
//! `deploy/Caddyfile`), run as committed against the real comet: each proxy terminates TLS
//! (a certificate made here with `openssl`) and a subscriber on SSE, on WebSocket and on
//! long-poll through it gets a message published straight to comet, promptly (a proxy that
//! buffered the stream would hold it back), and then a second one.
//!
//! Each file is read from `deploy/` and only its placeholders are swapped (ports, addresses,
//! certificate paths: `substitute` fails if one is missing), inside the few top-level lines a
//! proxy needs to run unprivileged in the foreground from a temporary directory. The proxy is a
//! child process, killed by its pid on drop.
//!
//! Every test is `#[ignore = "needs <proxy>"]`: `bash tools/test.sh` installs nginx, haproxy,
//! caddy and openssl and runs them; without them they fail saying how to install them.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{publish, require, Server, TIMEOUT};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

/// The host name in the committed files, and in the test certificate.
const HOST: &str = "push.example.com";
/// How long a message may take through a proxy: far more than an unbuffered hop on loopback
/// needs, far less than a buffering proxy would hold a small message back.
const PROMPT: Duration = Duration::from_secs(2);
/// The id subscribed to.
const ID: u64 = 5;

/// A fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("comet-proxy-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `path` as text for a config file.
fn text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// A certificate authority and a certificate for `HOST` it signed (webpki, the client's
/// verifier, refuses a self-signed certificate that is its own CA).
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// Certificate then key, in one file (HAProxy's form).
    both: PathBuf,
}

fn openssl(dir: &TempDir, args: &[&str]) {
    let output = Command::new(require("openssl", "openssl"))
        .current_dir(&dir.0)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn make_certs(dir: &TempDir) -> Certs {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let days = ["-days", "2"];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &days,
            &["-keyout", "ca.key", "-out", "ca.pem"],
            &["-subj", "/CN=comet test CA"],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            &["req"][..],
            &ec,
            &["-keyout", "key.pem", "-out", "cert.csr", "-subj"],
            &[&format!("/CN={HOST}")],
        ]
        .concat(),
    );
    std::fs::write(dir.join("san.cnf"), format!("subjectAltName=DNS:{HOST}\n")).unwrap();
    openssl(
        dir,
        &[
            &[
                "x509", "-req", "-in", "cert.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            ][..],
            &["-CAcreateserial", "-out", "cert.pem", "-extfile", "san.cnf"],
            &days,
        ]
        .concat(),
    );
    let mut both = std::fs::read(dir.join("cert.pem")).unwrap();
    both.extend(std::fs::read(dir.join("key.pem")).unwrap());
    std::fs::write(dir.join("both.pem"), both).unwrap();
    Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        both: dir.join("both.pem"),
    }
}

/// A port free on loopback now (the proxy binds it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The committed file `deploy/<name>` with each `(placeholder, value)` swapped; fails when a
/// placeholder is gone, so the test cannot drift from the file.
fn deploy_file(name: &str, swaps: &[(&str, String)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(name);
    let mut text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    // The publish API must never be proxied.
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        assert!(
            !line.contains("8001"),
            "{name} proxies the publish port: {line}"
        );
    }
    // The README shows the file without its comments: the tested file is the documented one.
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(readme).expect("read README.md");
    assert!(
        readme.contains(&without_comments(&text)),
        "README.md (\"Deploying\") does not show deploy/{name} as it is:\n{}",
        without_comments(&text)
    );
    for (placeholder, value) in swaps {
        assert!(
            text.contains(placeholder),
            "deploy/{name} no longer has {placeholder:?}: update the file or this test"
        );
        text = text.replace(placeholder, value);
    }
    text
}

/// A config file's lines without its comment lines, runs of blank lines made one.
fn without_comments(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        if line.trim().is_empty() && (out.is_empty() || out.ends_with("\n\n")) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_end().to_owned()
}

/// A proxy child process, killed by its pid on drop; its output goes to `log`.
struct Proxy {
    child: Child,
    log: PathBuf,
    /// Where clients connect: TLS.
    https: SocketAddr,
    /// Plain HTTP, where the file has a redirect listener.
    http: Option<SocketAddr>,
}

impl Proxy {
    fn start(mut command: Command, dir: &TempDir, https: u16, http: Option<u16>) -> Proxy {
        let log = dir.join("proxy.log");
        let out = std::fs::File::create(&log).expect("proxy log");
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn the proxy");
        let mut proxy = Proxy {
            child,
            log,
            https: ([127, 0, 0, 1], https).into(),
            http: http.map(|port| ([127, 0, 0, 1], port).into()),
        };
        // Started once its ports accept (polled with a deadline: a proxy announces nothing).
        let deadline = Instant::now() + TIMEOUT;
        for addr in std::iter::once(proxy.https).chain(proxy.http) {
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Ok(Some(status)) = proxy.child.try_wait() {
                    panic!("the proxy exited ({status}):\n{}", proxy.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "the proxy does not accept on {addr}:\n{}",
                    proxy.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        proxy
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- proxy log ----\n{}", self.log());
        }
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `addr` for `HOST`, trusting only the test CA.
fn tls_connect(addr: SocketAddr, certs: &Certs) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&certs.ca).expect("the CA certificate"))
        .expect("a usable CA");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect to the proxy");
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(TIMEOUT)).unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from(HOST).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("a TLS client");
    rustls::StreamOwned::new(conn, tcp)
}

/// An HTTP/1.1 response read from any stream: the head, then its body as it arrives
/// (de-chunked when chunked).
struct Reader<S> {
    stream: S,
    raw: Vec<u8>,
    body: Vec<u8>,
    chunked: bool,
    head: String,
}

impl<S: Read + Write> Reader<S> {
    fn request(mut stream: S, path: &str) -> Reader<S> {
        // Browsers offer compression: a proxy that compressed a stream would hold it back.
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAccept-Encoding: gzip, br\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .expect("send the request");
        stream.flush().unwrap();
        Reader {
            stream,
            raw: Vec::new(),
            body: Vec::new(),
            chunked: false,
            head: String::new(),
        }
    }

    /// Reads more bytes, failing at `deadline` (the socket's timeout is longer).
    fn fill(&mut self, what: &str, deadline: Instant) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => panic!(
                    "EOF while waiting for {what}; body so far: {:?}",
                    String::from_utf8_lossy(&self.body)
                ),
                Ok(n) => {
                    self.raw.extend_from_slice(&buf[..n]);
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "waiting for {what}: {e}; body so far: {:?}",
                    String::from_utf8_lossy(&self.body)
                ),
            }
            assert!(Instant::now() < deadline, "not within the deadline: {what}");
        }
    }

    /// The status line and headers (lower-case names), once they are complete.
    fn head(&mut self) -> u16 {
        let deadline = Instant::now() + TIMEOUT;
        let end = loop {
            if let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            self.fill("a response head", deadline);
        };
        self.head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
        self.raw.drain(..end + 4);
        self.chunked = self.head.contains("\r\ntransfer-encoding: chunked");
        let status = self.head.split(' ').nth(1).expect("a status");
        status.parse().expect("a numeric status")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    }

    /// Moves what has arrived into `body`, undoing chunked framing.
    fn decode(&mut self) {
        if !self.chunked {
            self.body.append(&mut self.raw);
            return;
        }
        while let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") {
            let size_line = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|e| panic!("chunk size {size_line:?}: {e}"));
            let total = line_end + 2 + size + 2;
            if self.raw.len() < total {
                return;
            }
            self.body
                .extend_from_slice(&self.raw[line_end + 2..line_end + 2 + size]);
            self.raw.drain(..total);
        }
    }

    /// Waits until the body holds `needle`, at most until `deadline`; consumes the body up to
    /// and including it.
    fn expect(&mut self, needle: &str, deadline: Instant) {
        loop {
            self.decode();
            if let Some(at) = self
                .body
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
            {
                self.body.drain(..at + needle.len());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} did not come through in time; body so far: {:?}",
                String::from_utf8_lossy(&self.body)
            );
            self.fill(needle, deadline);
        }
    }

    /// The whole body of a response with Content-Length or chunked framing.
    fn whole_body(&mut self, deadline: Instant) -> String {
        if let Some(len) = self.header("content-length") {
            let len: usize = len.parse().expect("a Content-Length");
            while self.raw.len() < len {
                self.fill("the body", deadline);
            }
            return String::from_utf8_lossy(&self.raw[..len]).into_owned();
        }
        assert!(self.chunked, "no framing: {}", self.head);
        loop {
            self.decode();
            if self.raw.starts_with(b"0\r\n\r\n") {
                return String::from_utf8_lossy(&self.body).into_owned();
            }
            self.fill("the last chunk", deadline);
        }
    }
}

/// SSE, WebSocket and long-poll through the proxy at `proxy.https`, with messages published
/// straight to comet.
fn streams_through(proxy: &Proxy, server: &Server, certs: &Certs) {
    // SSE: the head comes once the subscription is in place; then the position event.
    let mut sse = Reader::request(tls_connect(proxy.https, certs), &format!("/events/{ID}"));
    assert_eq!(sse.head(), 200, "SSE through the proxy: {}", sse.head);
    assert!(
        sse.header("content-type")
            .is_some_and(|v| v.starts_with("text/event-stream")),
        "{}",
        sse.head
    );
    sse.expect("id: ", Instant::now() + TIMEOUT);
    sse.expect("\n\n", Instant::now() + TIMEOUT);

    // WebSocket: the upgrade passes through; the first frame is the position.
    let request = format!("wss://{HOST}/ws/{ID}")
        .into_client_request()
        .unwrap();
    let (mut ws, response) = tungstenite::client::client(request, tls_connect(proxy.https, certs))
        .unwrap_or_else(|e| panic!("WebSocket handshake through the proxy: {e}"));
    assert_eq!(response.status().as_u16(), 101);
    let first = ws_text(&mut ws, Instant::now() + TIMEOUT);
    let position: serde_json::Value = serde_json::from_str(&first).expect("JSON");
    let since = position["since"].as_str().expect("a position").to_owned();

    // Long-poll from that position: held until the message comes.
    let mut poll = Reader::request(
        tls_connect(proxy.https, certs),
        &format!("/poll/{ID}?since={since}"),
    );

    for msg in ["first", "second"] {
        let reached = publish(server, ID, msg);
        // The SSE and WebSocket subscribers at least (the poll may still be on its way).
        assert!(reached >= 2, "published to {reached} connections");
        let deadline = Instant::now() + PROMPT;
        sse.expect(&format!("data: {msg}\n"), deadline);
        let frame = ws_text(&mut ws, deadline);
        assert!(frame.contains(&format!("\"data\":\"{msg}\"")), "{frame}");
        if msg == "first" {
            assert_eq!(
                poll.head(),
                200,
                "long-poll through the proxy: {}",
                poll.head
            );
            let body = poll.whole_body(deadline);
            assert!(body.contains("\"data\":\"first\""), "{body}");
        }
    }
}

/// The next text frame, skipping pings, by `deadline`.
fn ws_text(ws: &mut tungstenite::WebSocket<Tls>, deadline: Instant) -> String {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no WebSocket message in time");
        ws.get_ref().sock.set_read_timeout(Some(left)).unwrap();
        match ws.read() {
            Ok(Message::Text(text)) => return text.as_str().to_owned(),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(other) => panic!("expected a text frame, got {other:?}"),
            Err(e) => panic!("WebSocket read through the proxy: {e}"),
        }
    }
}

/// A plain-HTTP request to the redirect listener: a redirect to https.
fn redirects_to_https(http: SocketAddr) {
    let mut reader = Reader::request(
        TcpStream::connect_timeout(&http, TIMEOUT).unwrap(),
        "/events/5",
    );
    reader.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(reader.head(), 301, "{}", reader.head);
    let location = reader.header("location").unwrap_or_default().to_owned();
    assert!(
        location.starts_with(&format!("https://{HOST}")),
        "{}",
        reader.head
    );
}

#[test]
#[ignore = "needs nginx"]
fn nginx_streams_sse_websocket_and_long_poll() {
    let nginx = require("nginx", "nginx");
    let dir = TempDir::new("nginx");
    let certs = make_certs(&dir);
    let server = Server::start(&[]);
    let (https, http) = (free_port(), free_port());
    let site = deploy_file(
        "nginx.conf",
        &[
            (
                "server 127.0.0.1:8000;",
                format!("server {};", server.public),
            ),
            ("    listen [::]:80;\n", String::new()),
            ("    listen [::]:443 ssl http2;\n", String::new()),
            ("listen 80;", format!("listen 127.0.0.1:{http};")),
            (
                "listen 443 ssl http2;",
                format!("listen 127.0.0.1:{https} ssl http2;"),
            ),
            ("/etc/ssl/comet/fullchain.pem", text(&certs.cert).into()),
            ("/etc/ssl/comet/privkey.pem", text(&certs.key).into()),
        ],
    );
    std::fs::write(dir.join("comet.conf"), site).unwrap();
    // What nginx.conf and Debian's packaging would otherwise provide, in the temp dir: one
    // process in the foreground, temp files and pid here.
    let d = text(&dir.0);
    let main = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log stderr notice;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
         include {d}/comet.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let mut command = Command::new(nginx);
    command.args(["-p", d, "-e", "stderr", "-c", text(&dir.join("nginx.conf"))]);
    let proxy = Proxy::start(command, &dir, https, Some(http));
    streams_through(&proxy, &server, &certs);
    redirects_to_https(proxy.http.unwrap());
}

#[test]
#[ignore = "needs haproxy"]
fn haproxy_streams_sse_websocket_and_long_poll() {
    let haproxy = require("haproxy", "haproxy");
    let dir = TempDir::new("haproxy");
    let certs = make_certs(&dir);
    let server = Server::start(&[]);
    let (https, http) = (free_port(), free_port());
    let sections = deploy_file(
        "haproxy.cfg",
        &[
            (
                "bind :443 ssl crt /etc/ssl/comet/comet.pem",
                format!("bind 127.0.0.1:{https} ssl crt {}", text(&certs.both)),
            ),
            ("bind :80\n", format!("bind 127.0.0.1:{http}\n")),
            (
                "server comet1 127.0.0.1:8000",
                format!("server comet1 {}", server.public),
            ),
        ],
    );
    // Debian's haproxy.cfg keeps its own `global` section; the test's logs to stderr.
    let config = format!("global\n    log stderr format raw local0\n\n{sections}");
    std::fs::write(dir.join("haproxy.cfg"), config).unwrap();
    let mut command = Command::new(haproxy);
    command.args(["-db", "-f", text(&dir.join("haproxy.cfg"))]);
    let proxy = Proxy::start(command, &dir, https, Some(http));
    streams_through(&proxy, &server, &certs);
    redirects_to_https(proxy.http.unwrap());
}

#[test]
#[ignore = "needs caddy"]
fn caddy_streams_sse_websocket_and_long_poll() {
    let caddy = require("caddy", "caddy");
    let dir = TempDir::new("caddy");
    let certs = make_certs(&dir);
    let server = Server::start(&[]);
    let https = free_port();
    // In place of automatic HTTPS (Let's Encrypt cannot reach a test), the test certificate,
    // on loopback; no admin endpoint, no port-80 redirect listener.
    let site = deploy_file(
        "Caddyfile",
        &[
            (
                &format!("{HOST} {{\n"),
                format!(
                    "{HOST} {{\n\tbind 127.0.0.1\n\ttls {} {}\n",
                    text(&certs.cert),
                    text(&certs.key)
                ),
            ),
            (
                "reverse_proxy 127.0.0.1:8000",
                format!("reverse_proxy {}", server.public),
            ),
        ],
    );
    let config = format!(
        "{{\n\tadmin off\n\tauto_https disable_redirects\n\thttps_port {https}\n}}\n\n{site}"
    );
    std::fs::write(dir.join("Caddyfile"), config).unwrap();
    let mut command = Command::new(caddy);
    command
        .args([
            "run",
            "--adapter",
            "caddyfile",
            "--config",
            text(&dir.join("Caddyfile")),
        ])
        // Caddy keeps its state under the home directory: the temp dir's.
        .env("HOME", &dir.0)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"));
    let proxy = Proxy::start(command, &dir, https, None);
    streams_through(&proxy, &server, &certs);
}
