//! A real browser against the real server: headless Chromium (Debian's `chromium`, installed by
//! `.ci/run` and `tools/setup.sh`) loads a page served from another origin, as our users' sites
//! are, and receives messages over EventSource and over WebSocket, also after the server closes
//! the connections and the browser reconnects (resume: no loss, no duplicate); and the `--demo`
//! page lists a message.
//!
//! Chromium is driven over the DevTools protocol (CDP): one WebSocket (tungstenite) to the
//! browser, one flattened session per page. Every step is one `Runtime.evaluate` of a promise
//! that resolves once the page's state satisfies a condition, or rejects after `WAIT_MS` with
//! that state: no sleeps. A failing step panics with the page's state, its console and errors;
//! `common::Server` then prints comet's log and `Chromium` the browser's.
//!
//! Every test is `#[ignore = "needs chromium"]`: a plain `cargo test` lists them as ignored;
//! `bash tools/test.sh` installs chromium and runs them (`-- --include-ignored`), and without
//! chromium in PATH they fail saying how to install it.

mod common;

use common::{json_number, post, publish, request, Server};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::handshake::HandshakeError;
use tungstenite::{Message, WebSocket};

/// How long an in-page wait may take before it rejects. EventSource's reconnection delay in
/// Chromium is about 3 s, so a resume step takes a few seconds.
const WAIT_MS: u64 = 20_000;
/// How long a CDP command may go unanswered: longer than any in-page wait, so that the page's
/// own timeout (which carries its state) reports first.
const CDP_TIMEOUT: Duration = Duration::from_secs(40);
/// Chromium's start-up (until it prints its DevTools address), on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The id the cross-origin page subscribes to.
const ID: u64 = 4242;
/// The id the demo page subscribes to (`/?id=77`).
const DEMO_ID: u64 = 77;

/// Flags for a headless Chromium on a machine with no network beyond loopback, running as root
/// (hence `--no-sandbox`); without the background-networking flags Chromium keeps trying to
/// reach Google's hosts.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
];

/// The subscriber page, served by `serve_page` from another origin than comet's. Its query
/// string holds comet's public address (`comet=127.0.0.1:PORT`) and the id. It records every
/// message of both transports in `window.state`, reconnects its WebSocket by itself with
/// `?since=<last position>` (EventSource reconnects by itself with `Last-Event-ID`), and offers
/// `waitFor(name, predicate, ms)`: a promise of a copy of the state once `predicate(state)`
/// holds, rejected with the state after `ms`, or at once when something fatal happened.
const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>comet browser test</title></head>
<body>
<p>comet browser test: a subscriber on another origin</p>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const comet = params.get("comet");
const id = params.get("id");
const state = {
  sse: { opens: 0, errors: 0, messages: [], ids: [], gaps: [] },
  ws: { opens: 0, errors: 0, closes: [], urls: [], frames: [], messages: [], gaps: [], bad: [], since: null },
  fatal: null,
};
window.state = state;

const waiters = new Set();
function changed() {
  for (const check of [...waiters]) check();
}
window.waitFor = (name, predicate, ms = 20000) => new Promise((resolve, reject) => {
  const timer = setTimeout(() => finish(`timed out after ${ms} ms waiting for ${name}`), ms);
  function finish(error) {
    clearTimeout(timer);
    waiters.delete(check);
    const copy = JSON.parse(JSON.stringify(state));
    if (error === null) resolve(copy);
    else reject(new Error(`${error}; state: ${JSON.stringify(copy)}`));
  }
  function check() {
    let ok;
    try { ok = predicate(state); } catch (e) { return finish(`predicate for ${name} threw ${e}`); }
    if (ok) return finish(null);
    if (state.fatal !== null) finish(`fatal while waiting for ${name}: ${state.fatal}`);
  }
  waiters.add(check);
  check();
});

if (!comet || !id) {
  state.fatal = "the page needs ?comet=<host:port>&id=<id>";
} else {
  const es = new EventSource(`http://${comet}/events/${id}`);
  es.onopen = () => { state.sse.opens++; changed(); };
  es.onmessage = (e) => {
    state.sse.messages.push(e.data);
    state.sse.ids.push(e.lastEventId);
    changed();
  };
  es.addEventListener("gap", (e) => { state.sse.gaps.push(e.data); changed(); });
  es.onerror = () => {
    state.sse.errors++;
    if (es.readyState === EventSource.CLOSED) {
      state.fatal = "EventSource closed for good: an HTTP error, a wrong Content-Type or CORS (see the console)";
    }
    changed();
  };

  function connectWs() {
    const since = state.ws.since === null ? "" : `?since=${encodeURIComponent(state.ws.since)}`;
    const url = `ws://${comet}/ws/${id}${since}`;
    state.ws.urls.push(url);
    const ws = new WebSocket(url);
    ws.onopen = () => { state.ws.opens++; changed(); };
    ws.onmessage = (e) => {
      let frame;
      try { frame = JSON.parse(e.data); } catch (err) { state.ws.bad.push(String(e.data)); changed(); return; }
      state.ws.frames.push(frame);
      if (Array.isArray(frame.gap)) {
        state.ws.gaps.push(frame.gap);
      } else if (typeof frame.since === "string") {
        state.ws.since = frame.since;
        if ("data" in frame) state.ws.messages.push(frame.data);
      } else {
        state.ws.bad.push(e.data);
      }
      changed();
    };
    ws.onerror = () => { state.ws.errors++; changed(); };
    ws.onclose = (e) => {
      state.ws.closes.push({ code: e.code, reason: e.reason, clean: e.wasClean });
      if (state.ws.closes.length >= 20) {
        state.fatal = "the WebSocket closed 20 times";
      } else {
        setTimeout(connectWs, 200);
      }
      changed();
    };
  }
  connectWs();
}
</script>
</body>
</html>
"#;

/// Path to `chromium`; fails the test when it is not installed.
fn chromium() -> PathBuf {
    common::require("chromium", "chromium")
}

/// A headless Chromium in its own process group, with a fresh profile; on drop the whole
/// group is killed and the profile removed.
struct Chromium {
    child: Child,
    profile: PathBuf,
    /// Everything Chromium wrote to stderr, shown when a test fails.
    log: Arc<Mutex<Vec<u8>>>,
    /// The browser's DevTools WebSocket address (`ws://127.0.0.1:PORT/devtools/browser/...`).
    devtools: String,
}

impl Chromium {
    fn launch(binary: &Path) -> Chromium {
        static PROFILES: AtomicU64 = AtomicU64::new(0);
        let profile = std::env::temp_dir().join(format!(
            "comet-browser-test-{}-{}",
            std::process::id(),
            PROFILES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir(&profile)
            .unwrap_or_else(|e| panic!("create {}: {e}", profile.display()));
        let mut child = Command::new(binary)
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own group, so that drop kills its helper processes too, and nothing else.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut line = Vec::new();
            while matches!(stderr.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line);
                if let Some(at) = text.find("DevTools listening on ") {
                    let address = text[at + "DevTools listening on ".len()..].trim();
                    let _ = address_tx.send(address.to_owned());
                }
                sink.lock().unwrap().extend_from_slice(&line);
                line.clear();
            }
        });
        let mut chromium = Chromium {
            child,
            profile,
            log,
            devtools: String::new(),
        };
        match address_rx.recv_timeout(START_TIMEOUT) {
            Ok(address) => chromium.devtools = address,
            Err(e) => panic!(
                "chromium printed no DevTools address ({e}); exit {:?}; log:\n{}",
                chromium.child.try_wait(),
                chromium.log()
            ),
        }
        chromium
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // After `Browser.close` (see `Browser`'s drop) Chromium ends its helpers and exits; it
        // is given a few seconds to, watched through /proc without reaping it. Then whatever is
        // left of its group is killed, before the leader is reaped, so that the group's id
        // cannot have been reused.
        let deadline = Instant::now() + Duration::from_secs(5);
        let stat = format!("/proc/{}/stat", self.child.id());
        let exited = || {
            std::fs::read_to_string(&stat)
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
                .unwrap_or(true)
        };
        while !exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Helpers may still be dying and writing into the profile: a few tries.
        for _ in 0..50 {
            if std::fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail = &log[log.len().saturating_sub(8000)..];
            eprintln!("---- chromium log (tail) ----\n{tail}");
        }
    }
}

/// A DevTools protocol connection to the browser. Events that arrive while waiting for
/// something else are kept, for `wait_event` and the failure report.
struct Cdp {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    events: Vec<Value>,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let authority = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected DevTools address {url:?}"));
        let stream = TcpStream::connect(authority)
            .unwrap_or_else(|e| panic!("connect to DevTools at {authority}: {e}"));
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(CDP_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(CDP_TIMEOUT)).unwrap();
        let ws = match tungstenite::client::client(url, stream) {
            Ok((ws, _)) => ws,
            Err(HandshakeError::Failure(e)) => panic!("DevTools handshake with {url}: {e}"),
            Err(HandshakeError::Interrupted(_)) => panic!("DevTools handshake interrupted"),
        };
        Cdp {
            ws,
            next_id: 1,
            events: Vec::new(),
        }
    }

    /// The next message from the browser, at most until `deadline`.
    fn read(&mut self, deadline: Instant) -> Result<Value, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("chromium did not answer in time".to_owned());
            }
            self.ws.get_mut().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    return serde_json::from_str(text.as_str())
                        .map_err(|e| format!("DevTools sent bad JSON ({e}): {text}"))
                }
                Ok(Message::Close(frame)) => return Err(format!("DevTools closed: {frame:?}")),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(format!("DevTools connection: {e}")),
            }
        }
    }

    /// Runs `method` (in `session`, or on the browser) and returns its result.
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.ws
            .send(Message::text(command.to_string()))
            .map_err(|e| format!("send {method} to DevTools: {e}"))?;
        let deadline = Instant::now() + CDP_TIMEOUT;
        loop {
            let message = self
                .read(deadline)
                .map_err(|e| format!("waiting for the answer to {method}: {e}"))?;
            if message["id"] == json!(id) {
                return match message.get("error") {
                    Some(error) => Err(format!("{method} failed: {error}")),
                    None => Ok(message["result"].clone()),
                };
            }
            if message.get("method").is_some() {
                self.events.push(message);
            }
        }
    }

    /// The first event of `session` that satisfies `wanted`, kept or yet to come.
    fn wait_event(
        &mut self,
        session: &str,
        what: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let ours = |event: &Value| event["sessionId"] == json!(session) && wanted(event);
        if let Some(at) = self.events.iter().position(ours) {
            return Ok(self.events.remove(at));
        }
        let deadline = Instant::now() + CDP_TIMEOUT;
        loop {
            let message = self
                .read(deadline)
                .map_err(|e| format!("waiting for {what}: {e}"))?;
            if ours(&message) {
                return Ok(message);
            }
            if message.get("method").is_some() {
                self.events.push(message);
            }
        }
    }
}

/// A page (tab) of the browser: its flattened CDP session.
struct Page {
    session: String,
    url: String,
}

/// Chromium and the DevTools connection to it (dropped first, then the browser is killed).
struct Browser {
    cdp: Cdp,
    _chromium: Chromium,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A graceful close, so that Chromium reaps its own helpers; not waited for here.
        let close = json!({"id": 0, "method": "Browser.close"});
        let _ = self.cdp.ws.send(Message::text(close.to_string()));
    }
}

impl Browser {
    fn launch(binary: &Path) -> Browser {
        let chromium = Chromium::launch(binary);
        Browser {
            cdp: Cdp::connect(&chromium.devtools),
            _chromium: chromium,
        }
    }

    /// Opens a new page on `url` and returns once its DOM is loaded (its inline scripts ran).
    fn open(&mut self, url: &str) -> Page {
        self.try_open(url)
            .unwrap_or_else(|e| panic!("opening {url} in chromium: {e}"))
    }

    fn try_open(&mut self, url: &str) -> Result<Page, String> {
        let cdp = &mut self.cdp;
        let target = cdp.call(None, "Target.createTarget", json!({"url": "about:blank"}))?;
        let attached = cdp.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        )?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no sessionId in {attached}"))?
            .to_owned();
        let s = Some(session.as_str());
        // Console messages, exceptions and network errors (CORS) are kept for the report.
        cdp.call(s, "Runtime.enable", json!({}))?;
        cdp.call(s, "Log.enable", json!({}))?;
        cdp.call(s, "Page.enable", json!({}))?;
        cdp.call(
            s,
            "Page.setLifecycleEventsEnabled",
            json!({"enabled": true}),
        )?;
        let navigated = cdp.call(s, "Page.navigate", json!({"url": url}))?;
        if let Some(error) = navigated.get("errorText") {
            return Err(format!("navigation failed: {error}"));
        }
        let loader = navigated["loaderId"].clone();
        cdp.wait_event(&session, "DOMContentLoaded", |event| {
            event["method"] == "Page.lifecycleEvent"
                && event["params"]["name"] == "DOMContentLoaded"
                && event["params"]["loaderId"] == loader
        })?;
        Ok(Page {
            session,
            url: url.to_owned(),
        })
    }

    /// Evaluates `expression` in `page`, awaiting it if it is a promise; its value as JSON, or
    /// the exception (a rejected promise's error) as text.
    fn eval(&mut self, page: &Page, expression: &str) -> Result<Value, String> {
        let result = self.cdp.call(
            Some(&page.session),
            "Runtime.evaluate",
            json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
        )?;
        if let Some(details) = result.get("exceptionDetails") {
            let exception = &details["exception"];
            let text = exception["description"]
                .as_str()
                .or(exception["value"].as_str())
                .or(details["text"].as_str())
                .unwrap_or("an exception");
            return Err(text.to_owned());
        }
        Ok(result["result"]["value"].clone())
    }

    /// One test step: evaluates `expression` (a promise that settles within `WAIT_MS`) and
    /// returns its value; on failure panics with the error and the page's console and errors.
    fn step(&mut self, page: &Page, what: &str, expression: &str) -> Value {
        match self.eval(page, expression) {
            Ok(value) => value,
            Err(error) => panic!(
                "step failed: {what}\n  page: {}\n  error: {error}\n  page console and errors:\n{}",
                page.url,
                self.console(page)
            ),
        }
    }

    /// What `page` logged: console calls, uncaught exceptions and browser log entries (network
    /// errors, CORS refusals), one per line.
    fn console(&self, page: &Page) -> String {
        let mut lines = String::new();
        for event in &self.cdp.events {
            if event["sessionId"] != json!(page.session) {
                continue;
            }
            let params = &event["params"];
            let line = match event["method"].as_str() {
                Some("Runtime.consoleAPICalled") => {
                    let args: Vec<String> = params["args"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| {
                            a["value"]
                                .as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| a["description"].to_string())
                        })
                        .collect();
                    format!("console.{}: {}", params["type"], args.join(" "))
                }
                Some("Runtime.exceptionThrown") => format!(
                    "exception: {}",
                    params["exceptionDetails"]["exception"]["description"]
                ),
                Some("Log.entryAdded") => format!(
                    "log {} {}: {} {}",
                    params["entry"]["source"],
                    params["entry"]["level"],
                    params["entry"]["text"],
                    params["entry"]["url"]
                ),
                _ => continue,
            };
            lines.push_str("    ");
            lines.push_str(&line);
            lines.push('\n');
        }
        if lines.is_empty() {
            lines.push_str("    (nothing)\n");
        }
        lines
    }
}

/// Serves `html` at `/page` (any query) on an ephemeral loopback port: another origin than
/// comet's. One thread per connection, since Chromium may open idle spare connections.
fn serve_page(html: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer_page_request(stream, html));
        }
    });
    address
}

fn answer_page_request(mut stream: TcpStream, html: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(n) if n > 0 && head.len() < 65536 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("");
    let (status, body) = if path == "/page" || path.starts_with("/page?") {
        ("200 OK", html)
    } else {
        ("404 Not Found", "not found\n")
    };
    let kind = if status.starts_with("200") {
        "text/html; charset=utf-8"
    } else {
        "text/plain"
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// `waitFor(<what>, <predicate>, WAIT_MS)` on the test page, as an expression.
fn wait_for(what: &str, predicate: &str) -> String {
    format!(
        "waitFor({}, {predicate}, {WAIT_MS})",
        serde_json::to_string(what).unwrap()
    )
}

/// A promise that resolves once the JavaScript `condition` holds in the page, checked at once
/// and on every DOM change (a MutationObserver), or rejects with the page's HTML after
/// `WAIT_MS`: for pages that are not ours (the demo page).
fn dom_wait(what: &str, condition: &str) -> String {
    let what = serde_json::to_string(what).unwrap();
    format!(
        r#"new Promise((resolve, reject) => {{
  const holds = () => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }};
  const done = (error) => {{
    observer.disconnect();
    clearTimeout(timer);
    if (error) reject(error); else resolve(true);
  }};
  const observer = new MutationObserver(() => {{ if (holds()) done(null); }});
  const timer = setTimeout(() => done(new Error("timed out after {WAIT_MS} ms waiting for " + {what}
    + "; page: " + document.documentElement.outerHTML.slice(0, 4000))), {WAIT_MS});
  observer.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});
  if (holds()) done(null);
}})"#
    )
}

/// The strings of a JSON array.
fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("not a string: {v}"))
                .to_owned()
        })
        .collect()
}

/// The harness alone, without comet: Chromium starts, DevTools answers, the page loads from the
/// page server, evaluation works, and a wait that cannot succeed rejects with the page's state.
#[test]
#[ignore = "needs chromium"]
fn harness_drives_a_page() {
    let binary = chromium();
    let origin = serve_page(PAGE);
    let mut browser = Browser::launch(&binary);
    // No comet parameters: the page reports that as fatal, and waits reject at once.
    let page = browser.open(&format!("http://{origin}/page"));
    let title = browser.eval(&page, "document.title").unwrap();
    assert_eq!(title, json!("comet browser test"));
    let state = browser
        .eval(&page, "state.sse.opens + state.ws.opens")
        .unwrap();
    assert_eq!(state, json!(0));
    let error = browser
        .eval(&page, &wait_for("nothing", "s => false"))
        .unwrap_err();
    assert!(
        error.contains("fatal") && error.contains("\"opens\":0"),
        "{error}"
    );
    // A wait that resolves, and one that times out, against a "comet" that accepts nothing
    // (connections stay in its backlog, so neither transport fails nor opens).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = listener.local_addr().unwrap();
    let page = browser.open(&format!("http://{origin}/page?comet={silent}&id=1"));
    let value = browser
        .eval(
            &page,
            "waitFor('the URLs', s => s.ws.urls.length > 0, 5000)",
        )
        .unwrap();
    assert_eq!(value["ws"]["urls"][0], json!(format!("ws://{silent}/ws/1")));
    let waited = browser
        .eval(&page, "waitFor('never', s => false, 100)")
        .unwrap_err();
    assert!(
        waited.contains("timed out after 100 ms waiting for never"),
        "{waited}"
    );
}

/// A page on another origin subscribes with EventSource and with WebSocket; both get every
/// message once and in order, also across `POST /disconnect` with messages published while
/// they reconnect (EventSource resumes with Last-Event-ID, the page's WebSocket with `?since=`).
#[test]
#[ignore = "needs chromium"]
fn cross_origin_page_receives_and_resumes_over_eventsource_and_websocket() {
    let binary = chromium();
    let server = Server::start(&["--demo", "--heartbeat-ms", "1000"]);
    let origin = serve_page(PAGE);
    assert_ne!(origin, server.public);
    let mut browser = Browser::launch(&binary);
    let page = browser.open(&format!(
        "http://{origin}/page?comet={}&id={ID}",
        server.public
    ));

    // EventSource's open fires once the server sent its head, after the subscription took
    // effect; the WebSocket's first frame is its position.
    browser.step(
        &page,
        "both transports open",
        &wait_for(
            "EventSource open, WebSocket open with its first position",
            "s => s.sse.opens >= 1 && s.ws.opens >= 1 && s.ws.since !== null",
        ),
    );
    assert_eq!(
        publish(&server, ID, "m1"),
        2,
        "m1 should reach the page's two connections"
    );
    publish(&server, ID, "m2");
    let state = browser.step(
        &page,
        "m1 and m2 on both transports",
        &wait_for(
            "m1, m2 on both",
            "s => s.sse.messages.length >= 2 && s.ws.messages.length >= 2",
        ),
    );
    assert_eq!(strings(&state["sse"]["messages"]), ["m1", "m2"], "{state}");
    assert_eq!(strings(&state["ws"]["messages"]), ["m1", "m2"], "{state}");

    // The server closes both connections; messages published right away, while the browser
    // is disconnected or reconnecting, come from the history on resume.
    let answer = request(server.publish, &post(&format!("/disconnect/{ID}"), b""));
    assert_eq!(answer.status(), 200, "{answer:?}");
    assert_eq!(
        json_number(&answer.text(), "connections"),
        2,
        "{}",
        answer.text()
    );
    publish(&server, ID, "m3");
    publish(&server, ID, "m4");
    let state = browser.step(
        &page,
        "both transports reconnect and get m3, m4",
        &wait_for(
            "reconnections and m3, m4 on both",
            "s => s.sse.opens >= 2 && s.ws.opens >= 2 \
             && s.sse.messages.length >= 4 && s.ws.messages.length >= 4",
        ),
    );
    let all = ["m1", "m2", "m3", "m4"];
    assert_eq!(strings(&state["sse"]["messages"]), all, "{state}");
    assert_eq!(strings(&state["ws"]["messages"]), all, "{state}");
    assert_eq!(state["sse"]["gaps"], json!([]), "{state}");
    assert_eq!(state["ws"]["gaps"], json!([]), "{state}");
    assert_eq!(state["ws"]["bad"], json!([]), "{state}");
    assert_eq!(
        state["ws"]["closes"][0]["code"],
        json!(1000),
        "POST /disconnect closes WebSockets with 1000: {state}"
    );
    let urls = strings(&state["ws"]["urls"]);
    assert!(
        urls[1].contains("?since="),
        "the WebSocket should resume with ?since=: {state}"
    );

    // One more message after the resume: it comes once on each new connection, so nothing
    // was duplicated late either.
    assert_eq!(
        publish(&server, ID, "m5"),
        2,
        "m5 should reach the page's two new connections"
    );
    let state = browser.step(
        &page,
        "m5 on both transports",
        &wait_for(
            "m5 on both",
            "s => s.sse.messages.length >= 5 && s.ws.messages.length >= 5",
        ),
    );
    let all = ["m1", "m2", "m3", "m4", "m5"];
    assert_eq!(strings(&state["sse"]["messages"]), all, "{state}");
    assert_eq!(strings(&state["ws"]["messages"]), all, "{state}");

    // The README's frames: a message frame is {"id","seq","since","data"} with, for one id,
    // since = seq; seqs grow; SSE's event id is the same position.
    let frames: Vec<&Value> = state["ws"]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f.get("data").is_some())
        .collect();
    assert_eq!(frames.len(), 5, "{state}");
    let mut last_seq = 0;
    for (frame, sse_id) in frames.iter().zip(strings(&state["sse"]["ids"])) {
        assert_eq!(frame["id"], json!(ID), "{frame}");
        let seq = frame["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("seq: {frame}"));
        assert!(seq > last_seq, "seqs should grow: {state}");
        last_seq = seq;
        // A one-id position is `<epoch>:<seq>`, the same on both transports.
        let since = frame["since"].as_str().unwrap_or_default();
        assert_eq!(
            since.split_once(':').map(|p| p.1),
            Some(&*seq.to_string()),
            "{frame}"
        );
        assert_eq!(sse_id, since, "SSE id and WebSocket since: {state}");
    }
}

/// The `--demo` page, opened in the browser, subscribes and lists a published message.
#[test]
#[ignore = "needs chromium"]
fn demo_page_lists_a_published_message() {
    let binary = chromium();
    let server = Server::start(&["--demo", "--heartbeat-ms", "1000"]);
    let mut browser = Browser::launch(&binary);
    let page = browser.open(&format!("http://{}/?id={DEMO_ID}", server.public));
    // The demo page sets data-state="open" on <body> once its EventSource is open.
    browser.step(
        &page,
        "the demo page connects",
        &dom_wait(
            "body[data-state=open]",
            "document.body && document.body.dataset.state === 'open'",
        ),
    );
    let reached = publish(&server, DEMO_ID, "hello demo");
    assert!(
        reached >= 1,
        "the demo page's EventSource should be a connection of id {DEMO_ID}"
    );
    browser.step(
        &page,
        "the demo page lists the message",
        &dom_wait(
            "an <li> holding 'hello demo' in #messages",
            "[...document.querySelectorAll('#messages li')].some(li => li.textContent.includes('hello demo'))",
        ),
    );
}

/// A TCP proxy standing in for a load balancer: each new connection goes to the backend of
/// the moment; [`Balancer::switch`] sends the next ones elsewhere (connections already made
/// stay where they are, until their backend closes them).
struct Balancer {
    addr: SocketAddr,
    backend: Arc<Mutex<SocketAddr>>,
}

impl Balancer {
    fn start(backend: SocketAddr) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the balancer");
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(Mutex::new(backend));
        let current = backend.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let to = *current.lock().unwrap();
                std::thread::spawn(move || Balancer::pipe(client, to));
            }
        });
        Balancer { addr, backend }
    }

    /// Copies bytes both ways until either side closes, then closes both.
    fn pipe(client: TcpStream, to: SocketAddr) {
        let Ok(server) = TcpStream::connect(to) else {
            return;
        };
        let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone())
        else {
            return;
        };
        let up = std::thread::spawn(move || {
            let _ = std::io::copy(&mut client_in, &mut server_out);
            let _ = server_out.shutdown(std::net::Shutdown::Write);
        });
        let (mut server_in, mut client_out) = (server, client);
        let _ = std::io::copy(&mut server_in, &mut client_out);
        let _ = client_out.shutdown(std::net::Shutdown::Both);
        let _ = server_in.shutdown(std::net::Shutdown::Both);
        let _ = up.join();
    }

    fn switch(&self, backend: SocketAddr) {
        *self.backend.lock().unwrap() = backend;
    }
}

/// A stored publish on a node on JetStream (its answer carries the stream's seq).
fn stored(server: &Server, id: u64, msg: &str) {
    let answer = request(
        server.publish,
        &common::post_send(&id.to_string(), msg.as_bytes()),
    );
    assert_eq!(answer.status(), 200, "{answer:?}");
    assert!(answer.text().contains("\"seq\":"), "{}", answer.text());
}

/// Two nodes on JetStream behind a balancer. A page subscribes (EventSource and WebSocket)
/// through it, to node A. The balancer then sends new connections to B and A is stopped
/// (SIGTERM, a deploy): both transports reconnect by themselves, now to B, with their last
/// position (A's, the cluster's: one epoch), and get what was published meanwhile on B, once,
/// with no gap; then live messages once.
#[test]
#[ignore = "needs chromium and nats-server"]
fn a_page_resumes_on_another_node_when_its_node_goes_away() {
    let binary = chromium();
    let nats = common::nats::Nats::jetstream();
    let url = nats.url();
    let node = || {
        Server::start(&[
            "--workers",
            "2",
            "--cluster",
            &url,
            "--heartbeat-ms",
            "1000",
        ])
    };
    let mut a = node();
    let b = node();
    let balancer = Balancer::start(a.public);
    let origin = serve_page(PAGE);
    let mut browser = Browser::launch(&binary);
    let page = browser.open(&format!(
        "http://{origin}/page?comet={}&id={ID}",
        balancer.addr
    ));
    browser.step(
        &page,
        "both transports open on node A",
        &wait_for(
            "EventSource open, WebSocket open with its first position",
            "s => s.sse.opens >= 1 && s.ws.opens >= 1 && s.ws.since !== null",
        ),
    );
    stored(&b, ID, "m1");
    stored(&a, ID, "m2");
    browser.step(
        &page,
        "m1 and m2 on both transports",
        &wait_for(
            "m1, m2 on both",
            "s => s.sse.messages.length >= 2 && s.ws.messages.length >= 2",
        ),
    );

    balancer.switch(b.public);
    assert!(a.stop("TERM").success());
    stored(&b, ID, "m3");
    stored(&b, ID, "m4");
    let state = browser.step(
        &page,
        "both transports come back on node B and get m3, m4",
        &wait_for(
            "reconnections and m3, m4 on both",
            "s => s.sse.opens >= 2 && s.ws.opens >= 2 \
             && s.sse.messages.length >= 4 && s.ws.messages.length >= 4",
        ),
    );
    let all = ["m1", "m2", "m3", "m4"];
    assert_eq!(strings(&state["sse"]["messages"]), all, "{state}");
    assert_eq!(strings(&state["ws"]["messages"]), all, "{state}");
    assert_eq!(state["sse"]["gaps"], json!([]), "{state}");
    assert_eq!(state["ws"]["gaps"], json!([]), "{state}");
    assert_eq!(
        state["ws"]["closes"][0]["code"],
        json!(1012),
        "a node that stops closes WebSockets with 1012: {state}"
    );
    stored(&b, ID, "m5");
    let state = browser.step(
        &page,
        "m5 once on both transports",
        &wait_for(
            "m5 on both",
            "s => s.sse.messages.length >= 5 && s.ws.messages.length >= 5",
        ),
    );
    let all = ["m1", "m2", "m3", "m4", "m5"];
    assert_eq!(strings(&state["sse"]["messages"]), all, "{state}");
    assert_eq!(strings(&state["ws"]["messages"]), all, "{state}");
    // One epoch for the cluster: the positions from A and from B share it, and grow.
    let ids = strings(&state["sse"]["ids"]);
    let epochs: std::collections::HashSet<&str> =
        ids.iter().map(|i| i.split_once(':').unwrap().0).collect();
    assert_eq!(epochs.len(), 1, "{ids:?}");
    let seqs: Vec<u64> = ids
        .iter()
        .map(|i| i.split_once(':').unwrap().1.parse().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}
