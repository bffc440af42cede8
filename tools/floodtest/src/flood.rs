//! The flood loop: one thread, one epoll instance (mio), a vector of small connection slots and
//! one shared read buffer. It opens its share of the connections at a fixed rate, holds them,
//! parses what arrives, and hands a [`Report`] to its caller once a second.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use tools_common::clock::{epoch_s, epoch_us, Schedule};
use tools_common::jwt::{Signer, TOKEN_LIFETIME_S};
use tools_common::latency::new_histogram;

use crate::parse::{Event, Framing, StreamParser};
use crate::report::{Counters, Report};

/// One shared buffer for every read of this loop: idle connections own no buffer.
const READ_BUFFER_SIZE: usize = 64 * 1024;
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
const STDIN_TOKEN: Token = Token(usize::MAX);

/// Where connection `index` (global, 0-based) goes.
#[derive(Clone, Debug)]
pub enum Targets {
    /// `GET <prefix><first_id + index>` to one address.
    Ids {
        addr: SocketAddr,
        prefix: &'static str,
        first_id: u64,
    },
    /// One URL per connection (only this share's, indexed by local index).
    Urls(Vec<Url>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub addr: SocketAddr,
    pub path: String,
}

/// Parses `http://IP:PORT/path` (no DNS: load tests address IPs).
pub fn parse_url(s: &str) -> Result<Url, String> {
    let rest = s
        .strip_prefix("http://")
        .ok_or_else(|| format!("{s}: only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let addr = authority
        .parse::<SocketAddr>()
        .or_else(|_| format!("{authority}:80").parse::<SocketAddr>())
        .map_err(|_| format!("{s}: host must be IP or IP:PORT"))?;
    Ok(Url {
        addr,
        path: path.to_string(),
    })
}

/// Source addresses and ports, assigned by global connection index so that child processes
/// never collide: address `addrs[index % n]`, port `lo + index / n` when ports are explicit,
/// else chosen by the kernel at connect time (IP_BIND_ADDRESS_NO_PORT), which lets each
/// source address use the whole ephemeral range.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub addrs: Vec<Ipv4Addr>,
    pub ports: Option<(u16, u16)>,
}

impl Sources {
    pub fn for_index(&self, index: u64) -> Result<Option<SocketAddrV4>, String> {
        if self.addrs.is_empty() {
            return Ok(None);
        }
        let n = self.addrs.len() as u64;
        let ip = self.addrs[(index % n) as usize];
        let port = match self.ports {
            None => 0,
            Some((lo, hi)) => {
                let port = u64::from(lo) + index / n;
                if port > u64::from(hi) {
                    return Err(format!(
                        "connection {index}: source ports {lo}-{hi} x {n} addresses exhausted"
                    ));
                }
                port as u16
            }
        };
        Ok(Some(SocketAddrV4::new(ip, port)))
    }
}

/// One process's (or thread's) share of the run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub targets: Targets,
    pub framing: Framing,
    /// Global index of this share's first connection.
    pub first_index: u64,
    pub count: u64,
    /// Connections opened per second; 0 = as fast as `pending_max` allows.
    pub rate: f64,
    /// Connections in progress (connect or headers outstanding) at most.
    pub pending_max: u64,
    pub duration: Duration,
    pub sources: Sources,
    /// With a secret, every request carries `Authorization: Bearer <jwt>` (HS256) for its ids.
    pub jwt_secret: Option<String>,
    /// An attempt that fails before its stream starts is made again after a random delay
    /// between half and 1.5x this (a browser's EventSource reconnects so); None: never.
    pub retry: Option<Duration>,
}

/// The ids a subscribe path names: the last path segment (before any `?`), split on commas.
pub fn path_ids(path: &str) -> Vec<&str> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let last = path.rsplit('/').next().unwrap_or("");
    last.split(',').filter(|s| !s.is_empty()).collect()
}

/// Connection phases. NotOpened -> Connecting (socket created, connect in flight) ->
/// Requested (request written, waiting for the header block) -> Streaming (200 received) ->
/// Done (closed, by either side, or failed; the socket is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Requested,
    Streaming,
    Done,
}

/// One slot per connection: the socket (a std stream in non-blocking mode, registered with
/// epoll by its fd: 4 bytes), the parser and the phase. Dropping the socket closes it, which
/// also removes it from the epoll set.
struct Conn {
    stream: Option<TcpStream>,
    parser: StreamParser,
    phase: Phase,
}

struct Flood<'a> {
    plan: &'a Plan,
    poll: Poll,
    conns: Vec<Conn>,
    counters: Counters,
    latency: hdrhistogram::Histogram<u64>,
    /// Connections in Connecting or Requested.
    pending: u64,
    /// Connections not Done.
    active: u64,
    request: Vec<u8>,
    /// Built once from `plan.jwt_secret`; tokens are signed per connection, into `request`.
    signer: Option<Signer>,
    /// Failed attempts waiting for their retry (`plan.retry`), earliest first.
    retry_at: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Jitter for the retries, seeded by the share so that runs repeat.
    rng: fastrand::Rng,
}

impl Flood<'_> {
    fn target(&self, local: usize) -> (SocketAddr, String) {
        match &self.plan.targets {
            Targets::Ids {
                addr,
                prefix,
                first_id,
            } => (
                *addr,
                format!(
                    "{prefix}{}",
                    first_id + self.plan.first_index + local as u64
                ),
            ),
            Targets::Urls(urls) => (urls[local].addr, urls[local].path.clone()),
        }
    }

    fn open(&mut self, local: usize) {
        self.counters.opened += 1;
        let global = self.plan.first_index + local as u64;
        let (addr, _) = self.target(local);
        let source = match self.plan.sources.for_index(global) {
            Ok(source) => source,
            Err(e) => {
                eprintln!("floodtest: {e}");
                self.counters.errors_connect += 1;
                return; // no retry: the same index gets the same source
            }
        };
        let registered = tools_common::sock::start_connect(addr, source).and_then(|stream| {
            self.poll.registry().register(
                &mut SourceFd(&stream.as_raw_fd()),
                Token(local),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match registered {
            Ok(stream) => {
                let conn = &mut self.conns[local];
                conn.stream = Some(stream);
                conn.phase = Phase::Connecting;
                // A retry starts over (the failed attempt may have parsed a status line).
                conn.parser = StreamParser::new(self.plan.framing);
                self.pending += 1;
                self.active += 1;
            }
            Err(e) => {
                if self.counters.errors_connect == 0 {
                    eprintln!("floodtest: connect {addr} from {source:?}: {e}");
                }
                self.counters.errors_connect += 1;
                self.schedule_retry(local);
            }
        }
    }

    /// Queues connection `local` for another attempt, when the plan retries.
    fn schedule_retry(&mut self, local: usize) {
        if let Some(retry) = self.plan.retry {
            let delay = retry.mul_f64(0.5 + self.rng.f64());
            self.retry_at.push(Reverse((Instant::now() + delay, local)));
        }
    }

    /// Drops the socket; `error` says which counter the failure goes to (None = a close of an
    /// established stream). A failed attempt is made again (`plan.retry`).
    fn close(&mut self, local: usize, error: Option<fn(&mut Counters) -> &mut u64>) {
        self.end(local, error, true);
    }

    /// [`Flood::close`], with a failure retried only when `retry`.
    fn end(&mut self, local: usize, error: Option<fn(&mut Counters) -> &mut u64>, retry: bool) {
        let conn = &mut self.conns[local];
        debug_assert!(conn.phase != Phase::Done);
        conn.stream = None;
        let was = std::mem::replace(&mut conn.phase, Phase::Done);
        self.active -= 1;
        if was == Phase::Streaming {
            self.counters.closed += 1;
        } else {
            self.pending -= 1;
        }
        if let Some(counter) = error {
            *counter(&mut self.counters) += 1;
            if retry && was != Phase::Streaming {
                self.schedule_retry(local);
            }
        }
    }

    fn on_writable(&mut self, local: usize, event: &mio::event::Event) {
        let conn = &mut self.conns[local];
        let stream = conn.stream.as_mut().expect("connecting slot has a socket");
        match stream.take_error() {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => return self.close(local, Some(|c| &mut c.errors_connect)),
        }
        if let Err(e) = stream.peer_addr() {
            if e.kind() == io::ErrorKind::NotConnected && !event.is_error() {
                return; // spurious wake-up: connect still in progress
            }
            return self.close(local, Some(|c| &mut c.errors_connect));
        }
        let (addr, path) = self.target(local);
        self.request.clear();
        write!(
            self.request,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n"
        )
        .expect("write to Vec");
        if let Some(signer) = &self.signer {
            let exp = epoch_s() + TOKEN_LIFETIME_S;
            match signer.sign(&path_ids(&path), exp) {
                Ok(token) => {
                    write!(self.request, "Authorization: Bearer {token}\r\n").expect("write to Vec")
                }
                Err(e) => {
                    eprintln!("floodtest: {e}");
                    return self.close(local, Some(|c| &mut c.errors_connect));
                }
            }
        }
        self.request.extend_from_slice(b"\r\n");
        let stream = self.conns[local].stream.as_mut().expect("socket");
        match stream.write(&self.request) {
            // A fresh socket's send buffer always takes a request of a few hundred bytes whole.
            Ok(n) if n == self.request.len() => self.conns[local].phase = Phase::Requested,
            _ => self.close(local, Some(|c| &mut c.errors_connect)),
        }
    }

    fn on_readable(&mut self, local: usize, buf: &mut [u8]) {
        loop {
            let conn = &mut self.conns[local];
            let Some(stream) = conn.stream.as_mut() else {
                return;
            };
            let n = match stream.read(buf) {
                Ok(0) => {
                    let error: Option<fn(&mut Counters) -> &mut u64> =
                        if conn.phase == Phase::Streaming {
                            None
                        } else {
                            Some(|c| &mut c.errors_early_close)
                        };
                    return self.close(local, error);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    let error: Option<fn(&mut Counters) -> &mut u64> =
                        if conn.phase == Phase::Streaming {
                            Some(|c| &mut c.errors_read)
                        } else {
                            Some(|c| &mut c.errors_early_close)
                        };
                    return self.close(local, error);
                }
            };
            let now_us = epoch_us();
            let counters = &mut self.counters;
            let latency = &mut self.latency;
            let mut status = None;
            let mut ended = false;
            let fed = conn.parser.feed(&buf[..n], &mut |event| match event {
                Event::Headers { status: s } => status = Some(s),
                Event::Chunk => counters.chunks += 1,
                Event::Message { ts_us } => {
                    counters.messages += 1;
                    match ts_us {
                        Some(ts) => latency.saturating_record(now_us.saturating_sub(ts)),
                        None => counters.messages_unstamped += 1,
                    }
                }
                Event::End => ended = true,
            });
            match status {
                Some(200) => {
                    conn.phase = Phase::Streaming;
                    self.pending -= 1;
                    self.counters.connected += 1;
                }
                // 503: the server sheds load (comet's resume admission, a shutdown) and the
                // attempt is made again; any other status is an answer, as for an EventSource,
                // which gives up on it.
                Some(s) => return self.end(local, Some(|c| &mut c.errors_status), s == 503),
                None => {}
            }
            if fed.is_err() {
                return self.close(local, Some(|c| &mut c.errors_framing));
            }
            if ended {
                self.counters.closed_graceful += 1;
                return self.close(local, None);
            }
        }
    }

    fn report(&mut self, last: bool) -> Report {
        Report {
            counters: self.counters,
            latency: std::mem::replace(&mut self.latency, new_histogram()),
            last,
        }
    }
}

/// Runs the plan until its duration ends, `stop` is set, every connection has ended, or (with
/// `watch_stdin`) stdin reaches end of file (the parent process asks its children to stop by
/// closing their stdin, and a child whose parent died stops the same way).
pub fn run(
    plan: &Plan,
    stop: &AtomicBool,
    watch_stdin: bool,
    on_report: &mut dyn FnMut(Report),
) -> io::Result<()> {
    let count = usize::try_from(plan.count).expect("count fits usize");
    let mut flood = Flood {
        plan,
        poll: Poll::new()?,
        conns: Vec::with_capacity(count),
        counters: Counters::default(),
        latency: new_histogram(),
        pending: 0,
        active: 0,
        request: Vec::with_capacity(512),
        signer: plan.jwt_secret.as_deref().map(Signer::new),
        retry_at: BinaryHeap::new(),
        rng: fastrand::Rng::with_seed(plan.first_index),
    };
    flood.conns.extend((0..count).map(|_| Conn {
        stream: None,
        parser: StreamParser::new(plan.framing),
        phase: Phase::Done,
    }));
    if watch_stdin {
        flood
            .poll
            .registry()
            .register(&mut SourceFd(&0), STDIN_TOKEN, Interest::READABLE)?;
    }
    let mut buf = vec![0u8; READ_BUFFER_SIZE];
    let mut events = Events::with_capacity(1024);
    // Opening is paced only at a positive rate; 0 opens as fast as `pending_max` allows.
    let pace = (plan.rate > 0.0).then(|| Schedule::new(plan.rate, Some(plan.count)));
    let start = Instant::now();
    let deadline = start + plan.duration;
    let mut next_report = start + REPORT_INTERVAL;
    let mut opened = 0usize;
    let mut all_connected_reported = false;
    let mut stdin_closed = false;
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) || stdin_closed || now >= deadline {
            break;
        }
        let due = pace.map_or(count, |pace| pace.due(now.duration_since(start)) as usize);
        while let Some(&Reverse((at, local))) = flood.retry_at.peek() {
            if at > now || flood.pending >= plan.pending_max {
                break;
            }
            flood.retry_at.pop();
            flood.counters.retries += 1;
            flood.open(local);
        }
        while opened < due && flood.pending < plan.pending_max {
            flood.open(opened);
            opened += 1;
        }
        if opened == count && flood.active == 0 && flood.retry_at.is_empty() {
            break; // everything opened has ended
        }
        if !all_connected_reported && flood.counters.connected == plan.count {
            all_connected_reported = true;
            on_report(flood.report(false));
        }
        if now >= next_report {
            on_report(flood.report(false));
            next_report += REPORT_INTERVAL;
        }
        let mut wake = next_report.min(deadline);
        if let Some(pace) = pace {
            if opened < count && flood.pending < plan.pending_max {
                wake = wake.min(start + pace.at(opened as u64));
            }
        }
        if let Some(&Reverse((at, _))) = flood.retry_at.peek() {
            if flood.pending < plan.pending_max {
                wake = wake.min(at);
            }
        }
        match flood
            .poll
            .poll(&mut events, Some(wake.saturating_duration_since(now)))
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == STDIN_TOKEN {
                // Readable stdin means a read will not block; EOF (or an error) means stop.
                stdin_closed = !matches!(io::stdin().read(&mut buf), Ok(n) if n > 0);
                continue;
            }
            let local = event.token().0;
            if flood.conns[local].phase == Phase::Connecting {
                if !(event.is_writable() || event.is_error() || event.is_write_closed()) {
                    continue;
                }
                flood.on_writable(local, event);
            }
            if matches!(
                flood.conns[local].phase,
                Phase::Requested | Phase::Streaming
            ) {
                flood.on_readable(local, &mut buf);
            }
        }
    }
    on_report(flood.report(true));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_slot_is_small() {
        assert!(std::mem::size_of::<Conn>() <= 40);
    }

    /// The ids a token names (the tokens themselves: tools_common::jwt).
    #[test]
    fn tokens_name_the_path_ids() {
        assert_eq!(path_ids("/events/42"), ["42"]);
        assert_eq!(path_ids("/events/1,2,3?since=5"), ["1", "2", "3"]);
    }

    #[test]
    fn url_parsing() {
        assert_eq!(
            parse_url("http://127.0.0.1:8000/test/5").unwrap(),
            Url {
                addr: "127.0.0.1:8000".parse().unwrap(),
                path: "/test/5".into()
            }
        );
        assert_eq!(
            parse_url("http://127.0.0.2").unwrap().addr,
            "127.0.0.2:80".parse().unwrap()
        );
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http://localhost:80/").is_err());
    }

    #[test]
    fn sources_by_index() {
        let none = Sources::default();
        assert_eq!(none.for_index(5).unwrap(), None);
        let two = Sources {
            addrs: vec![Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)],
            ports: Some((10000, 10001)),
        };
        assert_eq!(
            two.for_index(0).unwrap(),
            Some("127.0.0.2:10000".parse().unwrap())
        );
        assert_eq!(
            two.for_index(3).unwrap(),
            Some("127.0.0.3:10001".parse().unwrap())
        );
        assert!(two.for_index(4).is_err());
        let no_port = Sources { ports: None, ..two };
        assert_eq!(no_port.for_index(4).unwrap().unwrap().port(), 0);
    }
}
