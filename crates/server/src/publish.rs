//! Publish-API connections: keep-alive, pipelined `POST /send/<id>`, `POST /send` (batch) and
//! `GET /metrics`.
//!
//! Answers must go out in request order, but a publish is answered only when the owner of its
//! id has counted the connections it reached, which may be another worker. So each publish
//! connection keeps a queue of replies in request order; a reply is written once it and every
//! reply before it are complete.
//!
//! Backpressure: at most `PIPELINE_MAX` replies may be outstanding and at most
//! `queue_bytes_max` bytes of answers unsent; past either, the connection stops reading (its
//! recv is cancelled) and resumes when both are below half. So a publisher that floods, or
//! that never reads its answers, holds bounded memory here and in the mailboxes.

use std::collections::VecDeque;
use std::sync::Arc;

use comet_http::{self as http, Body, ChunkedDecoder, Endpoint, Listener, Method, Parsed};
use comet_router::{parse_id, Id};

use crate::metrics::CloseReason;
use crate::shared::ReplyTo;
use crate::worker::{State, Worker};

/// Outstanding replies per publish connection, at most.
pub const PIPELINE_MAX: usize = 1024;

pub struct PubConn {
    /// Received bytes not yet consumed; `pos` is where the next unconsumed byte is.
    pub input: Vec<u8>,
    pos: usize,
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
    pub since_ms: u64,
}

struct PendingReq {
    target: Target,
    keep_alive: bool,
    head_only: bool,
    body: BodyState,
    data: Vec<u8>,
}

enum Target {
    Send(Id),
    Disconnect(Id),
    Batch,
    Metrics,
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
}

enum ReplyWhat {
    /// `{"id":..,"connections":N}` (a publish, or a disconnect).
    Id(Id),
    Batch(u32),
    Bytes(Vec<u8>),
}

impl PubConn {
    pub fn new(now_ms: u64) -> PubConn {
        PubConn {
            input: Vec::new(),
            pos: 0,
            req: None,
            replies: VecDeque::new(),
            next_seq: 0,
            paused: false,
            stopped: false,
            since_ms: now_ms,
        }
    }

    pub fn wants_input(&self) -> bool {
        !self.paused && !self.stopped
    }

    /// Queues an error answer that closes the connection; nothing after it is read.
    fn reject(&mut self, error: &http::Error, head_only: bool) {
        self.stopped = true;
        let mut out = Vec::new();
        http::error_response(&mut out, error, head_only);
        self.replies.push_back(Reply {
            waiting: 0,
            connections: 0,
            what: ReplyWhat::Bytes(out),
            close: true,
            cluster: None,
        });
    }

    fn has_request_in_progress(&self) -> bool {
        self.req.is_some() || self.pos < self.input.len()
    }
}

impl Worker {
    /// Parses and dispatches every complete request in the input, in order.
    pub fn process_publish(&mut self, slot: u32) {
        loop {
            let queued = self.unsent_bytes(slot);
            let Some(p) = self.pubs.get_mut(&slot) else {
                return;
            };
            if p.stopped {
                break;
            }
            if p.replies.len() >= PIPELINE_MAX || queued >= self.cfg.queue_bytes_max {
                p.paused = true;
                self.stop_recv(slot);
                break;
            }
            if p.req.is_none() {
                if p.pos == p.input.len() {
                    break;
                }
                match http::parse_request(&p.input[p.pos..], &self.cfg.limits) {
                    Parsed::Partial => break,
                    Parsed::Invalid(error) => {
                        p.req = Some(PendingReq {
                            target: Target::Reject(error),
                            keep_alive: false,
                            head_only: false,
                            body: BodyState::Length(0),
                            data: Vec::new(),
                        });
                        p.stopped = true;
                    }
                    Parsed::Complete(head) => {
                        let head_only = head.method == Method::Head;
                        let id_target = |id: &[u8], make: fn(Id) -> Target| match parse_id(id) {
                            Ok(id) => make(id),
                            Err(e) => Target::Reject(http::Error::new(
                                http::Status::BAD_REQUEST,
                                e.to_string(),
                            )),
                        };
                        let authorized = self.cfg.publish_secret.as_deref().is_none_or(|secret| {
                            crate::auth::bearer_matches(head.authorization, secret)
                        });
                        let target = match http::route(Listener::Publish, head.method, head.path) {
                            _ if !authorized => Target::Reject(
                                http::Error::new(
                                    http::Status::UNAUTHORIZED,
                                    "the publish API needs Authorization: Bearer <secret>",
                                )
                                .with_header("WWW-Authenticate", "Bearer"),
                            ),
                            Ok(Endpoint::Send(id)) => id_target(id, Target::Send),
                            Ok(Endpoint::Disconnect(id)) => id_target(id, Target::Disconnect),
                            Ok(Endpoint::SendBatch) => Target::Batch,
                            Ok(Endpoint::Metrics) => Target::Metrics,
                            Ok(_) => unreachable!("the publish listener routes no streams"),
                            Err(error) => Target::Reject(error),
                        };
                        let body = match head.body {
                            Body::None => BodyState::Length(0),
                            Body::Length(n) => BodyState::Length(n),
                            Body::Chunked => BodyState::Chunked(ChunkedDecoder::new(
                                self.cfg.limits.body_bytes_max,
                            )),
                        };
                        p.pos += head.head_len;
                        if head.expect_continue {
                            // The client waits for this before sending the body. It takes a
                            // place in the reply queue so it goes out after earlier answers.
                            p.next_seq = p.next_seq.wrapping_add(1);
                            p.replies.push_back(Reply {
                                waiting: 0,
                                connections: 0,
                                what: ReplyWhat::Bytes(http::CONTINUE.to_vec()),
                                close: false,
                                cluster: None,
                            });
                        }
                        p.req = Some(PendingReq {
                            target,
                            keep_alive: head.keep_alive,
                            head_only,
                            body,
                            data: Vec::new(),
                        });
                    }
                }
            }
            let req = p.req.as_mut().expect("a request in progress");
            let input = &p.input[p.pos..];
            match &mut req.body {
                BodyState::Length(remaining) => {
                    let take = (*remaining).min(input.len());
                    req.data.extend_from_slice(&input[..take]);
                    p.pos += take;
                    *remaining -= take;
                    if *remaining > 0 {
                        break;
                    }
                }
                BodyState::Chunked(decoder) => match decoder.feed(input, &mut req.data) {
                    Ok((used, done)) => {
                        p.pos += used;
                        if !done {
                            break;
                        }
                    }
                    Err(error) => {
                        req.target = Target::Reject(error);
                        p.stopped = true;
                    }
                },
            }
            let req = p.req.take().expect("a request in progress");
            self.dispatch(slot, req);
        }
        if let Some(p) = self.pubs.get_mut(&slot) {
            // Compact: drop consumed bytes once per batch, not per request.
            p.input.drain(..p.pos);
            p.pos = 0;
            if p.stopped {
                p.input = Vec::new();
            }
        }
        self.flush_replies(slot);
    }

    fn dispatch(&mut self, slot: u32, req: PendingReq) {
        self.stats().requests.add(1);
        let conn = self.conn_ref(slot);
        let p = self.pubs.get_mut(&slot).expect("publisher state");
        let seq = p.next_seq;
        p.next_seq = p.next_seq.wrapping_add(1);
        let close = !req.keep_alive;
        if close {
            p.stopped = true;
        }
        let reply_to = ReplyTo { conn, seq };
        match req.target {
            Target::Reject(error) => {
                p.reject(&error, req.head_only);
                self.stats().bad_requests.add(1);
            }
            Target::Metrics => {
                let mut body = Vec::new();
                crate::metrics::render(&self.shared, &mut body);
                let mut out = Vec::new();
                http::response(
                    &mut out,
                    http::Status::OK,
                    "text/plain; version=0.0.4",
                    &body,
                    close,
                    req.head_only,
                );
                let p = self.pubs.get_mut(&slot).expect("publisher state");
                p.replies.push_back(Reply {
                    waiting: 0,
                    connections: 0,
                    what: ReplyWhat::Bytes(out),
                    close,
                    cluster: None,
                });
            }
            Target::Send(id) => {
                let msg: Arc<[u8]> = Arc::from(req.data);
                let cluster = self.to_cluster(id, &msg);
                let p = self.pubs.get_mut(&slot).expect("publisher state");
                p.replies.push_back(Reply {
                    waiting: 1,
                    connections: 0,
                    what: ReplyWhat::Id(id),
                    close,
                    cluster,
                });
                self.publish(id, msg, reply_to);
            }
            Target::Disconnect(id) => {
                p.replies.push_back(Reply {
                    waiting: 1,
                    connections: 0,
                    what: ReplyWhat::Id(id),
                    close,
                    cluster: None,
                });
                self.disconnect(id, reply_to);
            }
            Target::Batch => {
                // Validate the whole batch first: a bad line rejects it and nothing is sent.
                let mut messages = Vec::new();
                let mut error = None;
                for line in http::batch_lines(&req.data) {
                    match line {
                        Ok((line, id, msg)) => match parse_id(id) {
                            Ok(id) => messages.push((id, msg)),
                            Err(e) => {
                                error = Some(format!("line {line}: {e}"));
                                break;
                            }
                        },
                        Err(line) => {
                            error = Some(format!("line {line}: expected '<id> <message>'"));
                            break;
                        }
                    }
                }
                if let Some(reason) = error {
                    p.reject(&http::Error::new(http::Status::BAD_REQUEST, reason), false);
                    self.stats().bad_requests.add(1);
                    return;
                }
                let owned: Vec<(Id, Arc<[u8]>)> = messages
                    .into_iter()
                    .map(|(id, msg)| (id, Arc::from(msg)))
                    .collect();
                let mut cluster = None;
                for (id, msg) in &owned {
                    if let Some(sent) = self.to_cluster(*id, msg) {
                        cluster = Some(cluster.unwrap_or(true) && sent);
                    }
                }
                let p = self.pubs.get_mut(&slot).expect("publisher state");
                p.replies.push_back(Reply {
                    waiting: owned.len() as u32,
                    connections: 0,
                    what: ReplyWhat::Batch(owned.len() as u32),
                    close,
                    cluster,
                });
                for (id, msg) in owned {
                    self.publish(id, msg, reply_to);
                }
            }
        }
    }

    /// An owner counted the connections a publish reached.
    pub fn on_reply(&mut self, to: ReplyTo, connections: u32) {
        let slot = to.conn.slot();
        let conn = &self.conns[slot as usize];
        if conn.gen != to.conn.gen() {
            return; // the publisher left
        }
        let Some(p) = self.pubs.get_mut(&slot) else {
            return;
        };
        let front_seq = p.next_seq.wrapping_sub(p.replies.len() as u32);
        let index = to.seq.wrapping_sub(front_seq) as usize;
        let reply = &mut p.replies[index];
        reply.waiting -= 1;
        reply.connections += u64::from(connections);
        if index == 0 && reply.waiting == 0 {
            self.flush_replies(slot);
            self.maybe_resume(slot);
        }
    }

    /// Writes every complete reply at the front of the queue.
    fn flush_replies(&mut self, slot: u32) {
        let Some(p) = self.pubs.get_mut(&slot) else {
            return;
        };
        let mut close = false;
        let mut out_buf = self.conns[slot as usize].pending;
        while p.replies.front().is_some_and(|r| r.waiting == 0) {
            let reply = p.replies.pop_front().expect("front reply");
            let buf = *out_buf.get_or_insert_with(|| self.ring.writes.alloc());
            let out = self.ring.writes.get_mut(buf);
            match reply.what {
                ReplyWhat::Id(id) => {
                    let body = format!(
                        "{{\"id\":{id},\"connections\":{}{}}}\n",
                        reply.connections,
                        cluster_field(reply.cluster)
                    );
                    json(out, &body, reply.close);
                }
                ReplyWhat::Batch(messages) => {
                    let body = format!(
                        "{{\"messages\":{messages},\"connections\":{}{}}}\n",
                        reply.connections,
                        cluster_field(reply.cluster)
                    );
                    json(out, &body, reply.close);
                }
                ReplyWhat::Bytes(bytes) => out.extend_from_slice(&bytes),
            }
            p.since_ms = self.now_ms;
            if reply.close {
                close = true;
                break;
            }
        }
        let done = p.stopped && p.replies.is_empty() && !p.has_request_in_progress();
        self.conns[slot as usize].pending = out_buf;
        if close || done {
            // Done without a closing reply: the publisher ended its input (on_publisher_eof).
            let reason = if close {
                CloseReason::Answered
            } else {
                CloseReason::Eof
            };
            self.enter_draining(slot, reason);
            return;
        }
        let conn = &self.conns[slot as usize];
        if conn.inflight & crate::worker::SEND == 0 && conn.pending.is_some() {
            self.start_send(slot);
        }
    }

    /// A send finished on a publish connection with nothing queued behind it.
    pub fn publisher_sent(&mut self, slot: u32) {
        self.maybe_resume(slot);
    }

    fn maybe_resume(&mut self, slot: u32) {
        let queued = self.unsent_bytes(slot);
        let Some(p) = self.pubs.get_mut(&slot) else {
            return;
        };
        if p.paused && p.replies.len() < PIPELINE_MAX / 2 && queued < self.cfg.queue_bytes_max / 2 {
            p.paused = false;
            self.process_publish(slot);
            if self.conns[slot as usize].state == State::Publisher {
                self.rearm_recv(slot);
            }
        }
    }

    pub fn on_publisher_eof(&mut self, slot: u32) {
        let p = self.pubs.get_mut(&slot).expect("publisher state");
        p.stopped = true;
        // What was received is still answered; then the connection closes.
        self.flush_replies(slot);
    }

    /// Closes publish connections stuck in a request past the request timeout, or idle past
    /// the idle timeout.
    pub fn expire_publishers(&mut self) {
        let now = self.now_ms;
        let mut expired = Vec::new();
        for (&slot, p) in &self.pubs {
            let limit = if p.has_request_in_progress() {
                self.cfg.request_timeout_ms
            } else if p.replies.is_empty() {
                self.cfg.idle_timeout_ms
            } else {
                continue; // waiting on owners, not on the peer
            };
            if now.saturating_sub(p.since_ms) >= limit
                && self.conns[slot as usize].state == State::Publisher
            {
                expired.push((slot, p.has_request_in_progress()));
            }
        }
        for (slot, in_request) in expired {
            if in_request {
                let error = http::Error::new(
                    http::Status::REQUEST_TIMEOUT,
                    "request not complete in time",
                );
                self.pubs.remove(&slot);
                self.respond_and_close(slot, CloseReason::Timeout, |out| {
                    http::error_response(out, &error, false)
                });
            } else {
                self.close_conn(slot, CloseReason::Timeout);
            }
        }
    }

    fn unsent_bytes(&self, slot: u32) -> usize {
        let conn = &self.conns[slot as usize];
        conn.sending.map_or(0, |b| self.ring.writes.unsent(b))
            + conn.pending.map_or(0, |b| self.ring.writes.unsent(b))
    }
}

/// The answer's `"cluster"` field: present only in a cluster; true when the message (every
/// message of a batch) went to the other nodes, false when the copy was dropped.
fn cluster_field(cluster: Option<bool>) -> &'static str {
    match cluster {
        None => "",
        Some(true) => ",\"cluster\":true",
        Some(false) => ",\"cluster\":false",
    }
}

fn json(out: &mut Vec<u8>, body: &str, close: bool) {
    http::response(
        out,
        http::Status::OK,
        "application/json",
        body.as_bytes(),
        close,
        false,
    );
}
