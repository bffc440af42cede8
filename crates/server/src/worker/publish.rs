//! Publish-API connections: keep-alive, pipelined `POST /send/<id>`, `POST /send` (batch),
//! `POST /disconnect/<id>`, `GET /metrics`, `GET /healthz` and `GET /readyz`. No I/O here: a [`PubConn`] is fed the bytes
//! received ([`PubConn::received`], [`PubConn::process`]) and returns [`Effect`]s for the loop
//! to carry out; the owners' counts come back through [`PubConn::answered`], and the answers
//! go out through [`PubConn::write_ready`].
//!
//! Answers must go out in request order, but a publish is answered only when the owner of its
//! id has counted the connections it reached, which may be another worker. So each publish
//! connection keeps a queue of replies in request order; a reply is written once it and every
//! reply before it are complete.
//!
//! Backpressure: at most `PIPELINE_MAX` replies may be outstanding and at most
//! `--queue-bytes-max` bytes of answers unsent; past either, the connection stops reading
//! and resumes when both are below half. So a publisher that floods, or that never reads its
//! answers, holds bounded memory here and in the mailboxes.

use std::collections::VecDeque;
use std::sync::Arc;

use ahash::AHashMap;
use comet_http::{self as http, Body, ChunkedDecoder, Endpoint, Listener, Method, Parsed, NO_CORS};
use comet_router::{parse_id, Id};
use serde::Serialize;

use crate::config::Config;

/// Outstanding replies per publish connection, at most.
pub const PIPELINE_MAX: usize = 1024;

/// What a request asks of the loop. `reply` names the request's place in the reply queue.
#[derive(Debug)]
pub enum Effect {
    /// Publish `msg` to `id`; the owner's count comes back to [`PubConn::answered`]. Offer it
    /// to the cluster first ([`PubConn::cluster`]); on JetStream store it, answered by
    /// [`PubConn::stored`] or [`PubConn::unstored`] first. `msg_id`: from `Idempotency-Key`.
    Publish {
        id: Id,
        msg: Arc<[u8]>,
        reply: u32,
        msg_id: Option<String>,
    },
    /// End every connection of `id`; the owner's count comes back to [`PubConn::answered`].
    Disconnect { id: Id, reply: u32 },
    /// Render /metrics into the reply ([`PubConn::metrics`]).
    Metrics { reply: u32, head_only: bool },
    /// Answer /readyz with the worker's readiness ([`PubConn::text`]).
    Ready { reply: u32, head_only: bool },
}

/// Every publish connection of the worker, by slot.
#[derive(Default)]
pub struct Publishers {
    conns: AHashMap<u32, PubConn>,
    /// Set at shutdown: connections accepted from now on answer health checks and /metrics,
    /// refuse the rest (503), and close after each answer.
    shutting_down: bool,
}

impl Publishers {
    pub fn accepted(&mut self, slot: u32, now_ms: u64) {
        let mut p = PubConn::new(now_ms);
        p.shutting_down = self.shutting_down;
        self.conns.insert(slot, p);
    }

    pub fn shut_down(&mut self) {
        self.shutting_down = true;
    }

    pub fn get_mut(&mut self, slot: u32) -> Option<&mut PubConn> {
        self.conns.get_mut(&slot)
    }

    pub fn forget(&mut self, slot: u32) {
        self.conns.remove(&slot);
    }

    /// Publish connections stuck in a request past the request timeout (`true`: answer 408),
    /// or idle past the idle timeout (`false`: close quietly).
    pub fn expired(&self, now_ms: u64, cfg: &Config, out: &mut Vec<(u32, bool)>) {
        for (&slot, p) in &self.conns {
            let limit = if p.in_request() {
                cfg.request_timeout_ms
            } else if p.replies.is_empty() {
                cfg.idle_timeout_ms
            } else {
                continue; // waiting on owners, not on the peer
            };
            if now_ms.saturating_sub(p.since_ms) >= limit {
                out.push((slot, p.in_request()));
            }
        }
    }
}

pub struct PubConn {
    /// Received bytes not yet consumed; `cursor` is where the next unconsumed byte is.
    input: Vec<u8>,
    cursor: usize,
    /// A request whose head was parsed and whose body is still arriving.
    req: Option<PendingReq>,
    replies: VecDeque<Reply>,
    /// Sequence number the next reply gets; the front reply's is `next_seq - replies.len()`.
    next_seq: u32,
    /// True exactly when reading is stopped by backpressure.
    paused: bool,
    /// True once no more requests are read: the peer closed its side, or a reply closes.
    stopped: bool,
    /// Last time this connection made progress (bytes in, a reply out).
    since_ms: u64,
    /// Accepted during shutdown (see [`Publishers::shut_down`]).
    shutting_down: bool,
}

struct PendingReq {
    target: Target,
    keep_alive: bool,
    head_only: bool,
    body: BodyState,
    data: Vec<u8>,
    /// `Idempotency-Key`, checked.
    key: Option<Box<str>>,
}

enum Target {
    Send(Id),
    Disconnect(Id),
    Batch,
    Metrics,
    Health,
    Ready,
    Reject(http::Error),
}

enum BodyState {
    Length(usize),
    Chunked(ChunkedDecoder),
}

struct Reply {
    /// Owner answers still to come.
    waiting: u32,
    connections: u64,
    what: ReplyWhat,
    close: bool,
    /// In a cluster: whether every message went to the other nodes too.
    cluster: Option<bool>,
    /// JetStream: the stream seq of a single publish, and whether the stream had it already.
    seq: Option<u64>,
    duplicate: bool,
    /// JetStream: why a message of it was not stored (answered 503).
    unstored: Option<String>,
}

enum ReplyWhat {
    /// `{"id":..,"connections":N}` (a publish, or a disconnect).
    Id(Id),
    Batch(u32),
    Bytes(Vec<u8>),
}

/// The JSON answer of a publish or a disconnect (`id`), or of a batch (`messages`).
#[derive(Serialize)]
struct Answer {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<u32>,
    connections: u64,
    /// Present only in a cluster: true when the message (every message of a batch) went to
    /// the other nodes, false when the copy was dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<bool>,
    /// JetStream: the message's stream seq (a single publish).
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    /// JetStream: the stream had this `Idempotency-Key` already (stored and delivered once).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// `Retry-After` of a publish the cluster could not store, in seconds.
pub const RETRY_AFTER_S: &str = "1";

impl PubConn {
    fn new(now_ms: u64) -> PubConn {
        PubConn {
            input: Vec::new(),
            cursor: 0,
            req: None,
            replies: VecDeque::new(),
            next_seq: 0,
            paused: false,
            stopped: false,
            since_ms: now_ms,
            shutting_down: false,
        }
    }

    /// True exactly when reading is stopped by backpressure.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Reading is wanted (not paused by backpressure, not stopped).
    pub fn wants_input(&self) -> bool {
        !self.paused && !self.stopped
    }

    pub fn received(&mut self, data: &[u8], now_ms: u64) {
        if self.stopped {
            return; // nothing after a closing answer, an EOF or the shutdown is read
        }
        self.input.extend_from_slice(data);
        self.since_ms = now_ms;
    }

    /// The peer closed its side: what was received is still answered, then the connection
    /// closes.
    pub fn eof(&mut self) {
        self.stopped = true;
    }

    /// Shutdown: every request read so far (and processed) is still answered, then the
    /// connection closes; a request not complete yet is dropped unanswered, so a publisher
    /// that sends it again (to the next process) publishes it once. Closing at once would lose
    /// answers to publishes already made, and their senders would publish them twice.
    pub fn end(&mut self) {
        self.stopped = true;
        self.req = None;
        self.input = Vec::new();
        self.cursor = 0;
    }

    fn in_request(&self) -> bool {
        self.req.is_some() || self.cursor < self.input.len()
    }

    /// Nothing more to read or answer: the connection closes.
    pub fn done(&self) -> bool {
        self.stopped && self.replies.is_empty() && !self.in_request()
    }

    fn push_reply(&mut self, waiting: u32, what: ReplyWhat, close: bool) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.replies.push_back(Reply {
            waiting,
            connections: 0,
            what,
            close,
            cluster: None,
            seq: None,
            duplicate: false,
            unstored: None,
        });
        seq
    }

    fn reply_mut(&mut self, seq: u32) -> &mut Reply {
        let front_seq = self.next_seq.wrapping_sub(self.replies.len() as u32);
        &mut self.replies[seq.wrapping_sub(front_seq) as usize]
    }

    /// Queues an error answer that closes the connection; nothing after it is read.
    fn reject(&mut self, error: &http::Error, head_only: bool) {
        self.stopped = true;
        let mut out = Vec::new();
        http::error_response_for(&mut out, error, head_only, NO_CORS);
        self.push_reply(0, ReplyWhat::Bytes(out), true);
    }

    /// Parses every complete request received, in order, and pushes what each asks onto
    /// `effects`. `unsent`: bytes of answers not yet sent. Returns how many requests were
    /// complete and how many of them were rejected; after it, check [`PubConn::wants_input`]
    /// (backpressure may have paused it).
    pub fn process(
        &mut self,
        cfg: &Config,
        unsent: usize,
        effects: &mut Vec<Effect>,
    ) -> (u64, u64) {
        let (mut requests, mut rejected) = (0, 0);
        while !self.stopped {
            if self.replies.len() >= PIPELINE_MAX || unsent >= cfg.queue_bytes_max {
                self.paused = true;
                break;
            }
            if self.req.is_none() && (self.cursor == self.input.len() || !self.parse_head(cfg)) {
                break;
            }
            let req = self.req.as_mut().expect("a request in progress");
            let input = &self.input[self.cursor..];
            match &mut req.body {
                BodyState::Length(remaining) => {
                    let take = (*remaining).min(input.len());
                    req.data.extend_from_slice(&input[..take]);
                    self.cursor += take;
                    *remaining -= take;
                    if *remaining > 0 {
                        break;
                    }
                }
                BodyState::Chunked(decoder) => match decoder.feed(input, &mut req.data) {
                    Ok((used, done)) => {
                        self.cursor += used;
                        if !done {
                            break;
                        }
                    }
                    Err(error) => {
                        req.target = Target::Reject(error);
                        self.stopped = true;
                    }
                },
            }
            let req = self.req.take().expect("a request in progress");
            requests += 1;
            rejected += u64::from(!self.dispatch(req, effects));
        }
        // Compact: drop consumed bytes once per batch, not per request.
        self.input.drain(..self.cursor);
        self.cursor = 0;
        if self.stopped {
            self.input = Vec::new();
        }
        (requests, rejected)
    }

    /// Parses the next request head; false when it is not complete yet.
    fn parse_head(&mut self, cfg: &Config) -> bool {
        let head = match http::parse_request(&self.input[self.cursor..], &cfg.limits) {
            Parsed::Partial => return false,
            Parsed::Invalid(error) => {
                self.stopped = true;
                self.req = Some(PendingReq {
                    target: Target::Reject(error),
                    keep_alive: false,
                    head_only: false,
                    body: BodyState::Length(0),
                    data: Vec::new(),
                    key: None,
                });
                return true;
            }
            Parsed::Complete(head) => head,
        };
        let id_target = |id: &[u8], make: fn(Id) -> Target| match parse_id(id) {
            Ok(id) => make(id),
            Err(e) => Target::Reject(http::Error::new(http::Status::BAD_REQUEST, e.to_string())),
        };
        let endpoint = http::route(Listener::Publish, head.method, head.path);
        // /metrics has its own secret when one is set, so that a scraper cannot publish and a
        // publisher cannot scrape.
        let secret = match endpoint {
            // Health checks need no secret: they tell nothing but up or not.
            Ok(Endpoint::Health | Endpoint::Ready) => None,
            Ok(Endpoint::Metrics) => cfg.metrics_secret.as_ref().or(cfg.publish_secret.as_ref()),
            _ => cfg.publish_secret.as_ref(),
        };
        let authorized =
            secret.is_none_or(|secret| crate::auth::bearer_matches(head.authorization, secret));
        let forbidden = |reason| Target::Reject(http::Error::new(http::Status::FORBIDDEN, reason));
        // Checked whatever the mode, so that a publisher learns of a bad key before it matters.
        let (key, bad_key) = match head.idempotency_key.map(|k| comet_cluster::msg_id(k, None)) {
            Some(Ok(key)) => (Some(key), None),
            Some(Err(why)) => (None, Some(why)),
            None => (None, None),
        };
        let target = match endpoint {
            // A page that resolved its own name to this host (DNS rebinding) sends that name.
            _ if !host_allowed(head.host, &cfg.publish_hosts) => forbidden(
                "Host not allowed: use localhost, an IP address, or a name of --publish-hosts",
            ),
            // A browser sends Origin with every cross-origin request that could publish.
            _ if !origin_allowed(head.origin, &cfg.publish_origins) => forbidden(
                "requests from web pages are refused (Origin not in --publish-allowed-origins)",
            ),
            _ if !authorized => Target::Reject(
                http::Error::new(
                    http::Status::UNAUTHORIZED,
                    "the publish API needs Authorization: Bearer <secret>",
                )
                .with_header("WWW-Authenticate", "Bearer"),
            ),
            Ok(Endpoint::Health) => Target::Health,
            Ok(Endpoint::Ready) => Target::Ready,
            Ok(Endpoint::Metrics) => Target::Metrics,
            Ok(Endpoint::Send(_) | Endpoint::SendBatch | Endpoint::Disconnect(_))
                if self.shutting_down =>
            {
                Target::Reject(http::Error::new(
                    http::Status::SERVICE_UNAVAILABLE,
                    "shutting down",
                ))
            }
            Ok(Endpoint::Send(_) | Endpoint::SendBatch) if bad_key.is_some() => Target::Reject(
                http::Error::new(http::Status::BAD_REQUEST, bad_key.unwrap_or_default()),
            ),
            Ok(Endpoint::Send(id)) => id_target(id, Target::Send),
            Ok(Endpoint::Disconnect(id)) => id_target(id, Target::Disconnect),
            Ok(Endpoint::SendBatch) => Target::Batch,
            Ok(_) => unreachable!("the publish listener routes no streams"),
            Err(error) => Target::Reject(error),
        };
        let body = match head.body {
            Body::None => BodyState::Length(0),
            Body::Length(n) => BodyState::Length(n),
            Body::Chunked => BodyState::Chunked(ChunkedDecoder::new(cfg.limits.body_bytes_max)),
        };
        // At shutdown a connection answers one request and closes: it must not hold the exit.
        let keep_alive = head.keep_alive && !self.shutting_down;
        let head_only = head.method == Method::Head;
        self.cursor += head.head_len;
        if head.expect_continue {
            // The client waits for this before sending the body. It takes a place in the
            // reply queue so it goes out after earlier answers.
            self.push_reply(0, ReplyWhat::Bytes(http::CONTINUE.to_vec()), false);
        }
        self.req = Some(PendingReq {
            target,
            keep_alive,
            head_only,
            body,
            data: Vec::new(),
            key: key.map(String::into_boxed_str),
        });
        true
    }

    /// A complete request: its reply takes its place in the queue; false when it was
    /// rejected.
    fn dispatch(&mut self, req: PendingReq, effects: &mut Vec<Effect>) -> bool {
        let close = !req.keep_alive;
        if close {
            self.stopped = true;
        }
        match req.target {
            Target::Reject(error) => {
                self.reject(&error, req.head_only);
                return false;
            }
            Target::Metrics => {
                let reply = self.push_reply(1, ReplyWhat::Bytes(Vec::new()), close);
                let head_only = req.head_only;
                effects.push(Effect::Metrics { reply, head_only });
            }
            Target::Health => {
                let reply = self.push_reply(1, ReplyWhat::Bytes(Vec::new()), close);
                self.text(reply, http::Status::OK, b"ok\n", req.head_only);
            }
            Target::Ready => {
                let reply = self.push_reply(1, ReplyWhat::Bytes(Vec::new()), close);
                let head_only = req.head_only;
                effects.push(Effect::Ready { reply, head_only });
            }
            Target::Send(id) => {
                let reply = self.push_reply(1, ReplyWhat::Id(id), close);
                let msg = Arc::from(req.data);
                let msg_id = req.key.map(String::from);
                effects.push(Effect::Publish {
                    id,
                    msg,
                    reply,
                    msg_id,
                });
            }
            Target::Disconnect(id) => {
                let reply = self.push_reply(1, ReplyWhat::Id(id), close);
                effects.push(Effect::Disconnect { id, reply });
            }
            Target::Batch => {
                // Validate the whole batch first: a bad line rejects it and nothing is sent.
                let mut messages = Vec::new();
                for line in http::batch_lines(&req.data) {
                    let reason = match line {
                        Ok((line, id, msg)) => match parse_id(id) {
                            Ok(id) => {
                                messages.push((id, msg));
                                continue;
                            }
                            Err(e) => format!("line {line}: {e}"),
                        },
                        Err(line) => format!("line {line}: expected '<id> <message>'"),
                    };
                    self.reject(&http::Error::new(http::Status::BAD_REQUEST, reason), false);
                    return false;
                }
                let count = messages.len() as u32;
                let reply = self.push_reply(count, ReplyWhat::Batch(count), close);
                for (line, (id, msg)) in messages.into_iter().enumerate() {
                    let msg = Arc::from(msg);
                    // Each line its own id: a retried batch stores only what is missing.
                    let msg_id = req.key.as_deref().map(|key| format!("{key}:{}", line + 1));
                    effects.push(Effect::Publish {
                        id,
                        msg,
                        reply,
                        msg_id,
                    });
                }
            }
        }
        true
    }

    /// Whether a message of reply `reply` went to the other nodes (`None` alone).
    pub fn cluster(&mut self, reply: u32, sent: Option<bool>) {
        if let Some(sent) = sent {
            let r = self.reply_mut(reply);
            r.cluster = Some(r.cluster.unwrap_or(true) && sent);
        }
    }

    /// JetStream: a message of reply `reply` was stored as `seq` (`duplicate`: it was already);
    /// its count of connections follows ([`PubConn::answered`]).
    pub fn stored(&mut self, reply: u32, seq: u64, duplicate: bool) {
        let r = self.reply_mut(reply);
        r.cluster = Some(true);
        r.duplicate |= duplicate;
        if matches!(r.what, ReplyWhat::Id(_)) {
            r.seq = Some(seq);
        }
    }

    /// JetStream: a message of reply `reply` was not stored: the answer is 503 with
    /// Retry-After (a batch as a whole: send it again, with an `Idempotency-Key` to store
    /// only what is missing). True when the front reply is complete.
    pub fn unstored(&mut self, reply: u32, why: &str) -> bool {
        let r = self.reply_mut(reply);
        r.waiting -= 1;
        r.unstored.get_or_insert_with(|| why.to_string());
        self.ready()
    }

    /// The /metrics answer of reply `reply`: `body` as a response.
    pub fn metrics(&mut self, reply: u32, body: &[u8], head_only: bool) {
        let r = self.reply_mut(reply);
        let mut out = Vec::new();
        let text = "text/plain; version=0.0.4";
        http::response_for(
            &mut out,
            http::Status::OK,
            text,
            body,
            r.close,
            head_only,
            NO_CORS,
        );
        r.what = ReplyWhat::Bytes(out);
        r.waiting = 0;
    }

    /// The answer of reply `reply`: `body` as text/plain with `status`.
    pub fn text(&mut self, reply: u32, status: http::Status, body: &[u8], head_only: bool) {
        let r = self.reply_mut(reply);
        let mut out = Vec::new();
        let text = "text/plain; charset=utf-8";
        http::response_for(&mut out, status, text, body, r.close, head_only, NO_CORS);
        r.what = ReplyWhat::Bytes(out);
        r.waiting = 0;
    }

    /// An owner counted the connections a message of reply `reply` reached; true when the
    /// front reply is complete (answers can be written).
    pub fn answered(&mut self, reply: u32, connections: u32) -> bool {
        let r = self.reply_mut(reply);
        r.waiting -= 1;
        r.connections += u64::from(connections);
        self.ready()
    }

    /// The front reply is complete.
    pub fn ready(&self) -> bool {
        self.replies.front().is_some_and(|r| r.waiting == 0)
    }

    /// Writes every complete reply at the front of the queue to `out`; true when one of them
    /// closes the connection.
    pub fn write_ready(&mut self, out: &mut Vec<u8>, now_ms: u64) -> bool {
        while self.ready() {
            let reply = self.replies.pop_front().expect("front reply");
            let answer = |id, messages| Answer {
                id,
                messages,
                connections: reply.connections,
                cluster: reply.cluster,
                seq: reply.seq,
                duplicate: reply.duplicate,
            };
            if let Some(why) = &reply.unstored {
                let why = format!("not stored, send it again: {why}");
                http::unavailable_response(out, &why, RETRY_AFTER_S, reply.close);
                self.since_ms = now_ms;
                if reply.close {
                    return true;
                }
                continue;
            }
            match reply.what {
                ReplyWhat::Id(id) => json(out, &answer(Some(id), None), reply.close),
                ReplyWhat::Batch(n) => json(out, &answer(None, Some(n)), reply.close),
                ReplyWhat::Bytes(bytes) => out.extend_from_slice(&bytes),
            }
            self.since_ms = now_ms;
            if reply.close {
                return true;
            }
        }
        false
    }

    /// Lifts backpressure once fewer than half the replies are outstanding and fewer than half
    /// the answer bytes unsent; true when reading should resume.
    pub fn resume(&mut self, unsent: usize, cfg: &Config) -> bool {
        if self.paused && self.replies.len() < PIPELINE_MAX / 2 && unsent < cfg.queue_bytes_max / 2
        {
            self.paused = false;
            return true;
        }
        false
    }
}

fn json(out: &mut Vec<u8>, answer: &Answer, close: bool) {
    let mut body = serde_json::to_vec(answer).expect("a JSON answer");
    body.push(b'\n');
    let json = "application/json";
    http::response_for(out, http::Status::OK, json, &body, close, false, NO_CORS);
}

/// Whether the publish API answers a request with this `Host`: `localhost`, an IP address, or a
/// name of `--publish-hosts` (`name` matches it on any port, `name:port` on that port only),
/// case-insensitive. A page that rebinds its own DNS name to this host sends that name, never
/// an IP address. A request without Host (HTTP/1.0: never from a browser) is answered.
fn host_allowed(host: Option<&[u8]>, hosts: &[Vec<u8>]) -> bool {
    let Some(host) = host else {
        return true;
    };
    let Some((name, _port)) = split_host(host) else {
        return false;
    };
    let text = std::str::from_utf8(name).unwrap_or("");
    let ip = match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => text.parse::<std::net::Ipv4Addr>().is_ok(),
    };
    ip || name.eq_ignore_ascii_case(b"localhost")
        || hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host) || h.eq_ignore_ascii_case(name))
}

/// `name[:port]` or `[v6][:port]` as (name, port); `None` when malformed (a port that is not
/// digits, an IPv6 address without brackets).
fn split_host(host: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (name, rest) = if host.first() == Some(&b'[') {
        let end = host.iter().position(|&b| b == b']')?;
        host.split_at(end + 1)
    } else {
        let colon = host.iter().position(|&b| b == b':').unwrap_or(host.len());
        host.split_at(colon)
    };
    let port = match rest {
        [] => None,
        [b':', port @ ..] if !port.is_empty() && port.iter().all(u8::is_ascii_digit) => Some(port),
        _ => return None,
    };
    (!name.is_empty()).then_some((name, port))
}

/// A request without `Origin` is not from a web page; one with it must come from an origin of
/// `--publish-allowed-origins`.
fn origin_allowed(origin: Option<&[u8]>, origins: &[Vec<u8>]) -> bool {
    origin.is_none_or(|origin| origins.iter().any(|o| o.eq_ignore_ascii_case(origin)))
}

#[cfg(test)]
#[path = "publish_tests.rs"]
mod tests;
