//! The worker as owner of a shard of ids: logins and logouts, routing a message to every
//! connection logged in as its id, wherever that connection is held. It owns the [`Shard`]
//! (tables, history) and the [`Post`] (mail to the other workers): a target held by another
//! worker gets mail; one held here is handed back to the loop, which holds the sockets.
//!
//! In a cluster on JetStream ([`Stream`]) the history is numbered by the stream, and a resume
//! may wait, never the worker: a login whose position the history cannot answer without a gap
//! asks the stream for what is missing (the bridge fetches it) and is answered when that comes
//! back; a login whose position is ahead of this node (from a node further along the stream)
//! is answered once this node has caught up to it. Until then the connection is not logged
//! in: what arrives meanwhile goes to the history and into its answer. A logout cancels it.

use std::collections::VecDeque;
use std::sync::Arc;

use ahash::AHashMap;
use comet_router::{shard_of, ConnRef, Id, SEQ_UNKNOWN};

use super::post::{Ack, Mail, Post, ReplyTo};
use super::shard::Shard;

/// How long a login whose position is ahead of this node waits for the node to catch up
/// before it is answered with a gap.
const CATCH_UP_MS: u64 = 2_000;

/// How long a resume that needs the stream waits for it while it cannot be asked (the link to
/// NATS is down, or the fetch failed) before it is answered from this node's memory, with an
/// honest gap. Longer than a NATS restart (`just bench-rolling`: about 2 s, and the link's
/// reconnect), so a deploy of nats-server gives no gap.
pub const FETCH_WAIT_MS: u64 = 10_000;

/// How often the resumes waiting for the link are looked at (each look goes over all of them).
const UNFETCHED_SCAN_MS: u64 = 50;

/// Where a login's answer comes from.
pub enum Here {
    /// Another worker owns the id (it answers by mail).
    NotMine,
    Now(Ack),
    /// This worker owns it and answers later by mail (JetStream: a fetch, a catch-up).
    Later,
}

pub struct Owner {
    index: usize,
    workers: usize,
    shard: Shard,
    post: Post,
    /// The JetStream link, in a cluster on JetStream.
    stream: Option<Stream>,
    /// Late answers to logins of connections held by this worker, for the loop (`next_mail`,
    /// `next_ready`).
    ready: VecDeque<(ConnRef, Id, Ack)>,
}

/// The owner's side of a cluster on JetStream.
pub struct Stream {
    publisher: comet_cluster::Publisher,
    /// Logins waiting for a fetch: the client's position, this shard's position when the
    /// fetch was asked (the stream answers up to it, the history has what came after) and
    /// until when (ms) a failed fetch may be asked again.
    fetching: AHashMap<(Id, ConnRef), (u64, u64, u64)>,
    /// Logins whose fetch could not be asked or failed: the client's position and until when
    /// (ms) they wait for the link ([`FETCH_WAIT_MS`]); asked again once it is up.
    unfetched: AHashMap<(Id, ConnRef), (u64, u64)>,
    /// When `unfetched` is looked at next (ms).
    unfetched_scan_ms: u64,
    /// Logins waiting for this node to reach the client's position, and until when (ms).
    /// Checked after every drain of the mailbox: kept apart from `fetching`, which may hold
    /// thousands during a mass resume.
    waiting: AHashMap<(Id, ConnRef), (u64, u64)>,
    /// `(when, position)` once per tick: the history expires by the seq that was the
    /// position `age` ago.
    marks: VecDeque<(u64, u64)>,
    age_us: u64,
    /// Logins answered with a gap because this node did not reach their position in time
    /// (`waiting`), or the stream could not be asked in time (`unfetched`).
    catch_up_gaps: u64,
    stream_gaps: u64,
}

impl Stream {
    pub fn new(publisher: comet_cluster::Publisher, age_us: u64) -> Stream {
        Stream {
            publisher,
            fetching: AHashMap::new(),
            unfetched: AHashMap::new(),
            unfetched_scan_ms: 0,
            waiting: AHashMap::new(),
            marks: VecDeque::new(),
            age_us,
            catch_up_gaps: 0,
            stream_gaps: 0,
        }
    }
}

impl Owner {
    pub fn new(
        index: usize,
        workers: usize,
        shard: Shard,
        post: Post,
        stream: Option<Stream>,
    ) -> Owner {
        Owner {
            index,
            workers,
            shard,
            post,
            stream,
            ready: VecDeque::new(),
        }
    }

    /// In a cluster on JetStream.
    pub fn on_stream(&self) -> bool {
        self.stream.is_some()
    }

    fn owns(&self, id: Id) -> bool {
        shard_of(id, self.workers) == self.index
    }

    /// Logs `conn` in as each of `ids` that another worker owns (by mail; each answers
    /// `Mail::LoginAck`); returns how many answers to wait for.
    pub fn login_elsewhere(&mut self, ids: &[Id], since: Option<&[u64]>, conn: ConnRef) -> u16 {
        let mut mailed = 0;
        for (i, &id) in ids.iter().enumerate() {
            if !self.owns(id) {
                let since = since.map(|s| s[i]);
                let owner = shard_of(id, self.workers);
                self.post.send(owner, Mail::Login { id, conn, since });
                mailed += 1;
            }
        }
        mailed
    }

    /// Logs `conn` in as `id` if this worker owns it: the owner's answer now, or later (by
    /// mail, `Mail::LoginAck`), or not this worker's id.
    pub fn login_here(&mut self, id: Id, conn: ConnRef, since: Option<u64>, now_ms: u64) -> Here {
        if !self.owns(id) {
            return Here::NotMine;
        }
        match self.login(id, conn, since, now_ms) {
            Some(ack) => Here::Now(ack),
            None => Here::Later,
        }
    }

    /// The answer to a login, or `None` when it waits (on JetStream: a fetch, or this node
    /// catching up; answered by `Mail::LoginAck`).
    fn login(&mut self, id: Id, conn: ConnRef, since: Option<u64>, now_ms: u64) -> Option<Ack> {
        let (Some(stream), Some(s)) = (self.stream.as_mut(), since) else {
            return Some(self.shard.login(id, conn, since));
        };
        let history = self.shard.history();
        let position = history.position();
        if s == SEQ_UNKNOWN {
            return Some(self.shard.login(id, conn, since));
        }
        if s > position {
            // From a node further along the stream: answered once this one is there.
            stream.waiting.insert((id, conn), (s, now_ms + CATCH_UP_MS));
            return None;
        }
        let mut replay = Vec::new();
        let gap = history.since(id, s, &mut replay);
        if gap && history.config().messages_max > 0 {
            self.ask_stream(id, conn, s, now_ms + FETCH_WAIT_MS);
            return None;
        }
        self.shard.subscribe(id, conn);
        Some(Ack {
            pos: position,
            gap,
            replay,
        })
    }

    /// JetStream: asks the stream for what `id` had after `since` (a resume this node's memory
    /// does not reach back for). When it cannot be asked now (the link is down, the queue is
    /// full), the login waits in `unfetched` until `deadline_ms`.
    fn ask_stream(&mut self, id: Id, conn: ConnRef, since: u64, deadline_ms: u64) {
        let stream = self.stream.as_mut().expect("on a stream");
        let position = self.shard.history().position();
        let ticket = crate::cluster::fetch_ticket(conn);
        if stream.publisher.fetch(id, since, position, ticket) {
            let asked = (since, position, deadline_ms);
            stream.fetching.insert((id, conn), asked);
        } else {
            stream.unfetched.insert((id, conn), (since, deadline_ms));
        }
    }

    /// JetStream: the stream's answer for a resume of `conn` as `id`.
    pub fn fetched(
        &mut self,
        id: Id,
        conn: ConnRef,
        result: Option<comet_cluster::Fetched>,
        now_ms: u64,
    ) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let Some((since, upto, deadline_ms)) = stream.fetching.remove(&(id, conn)) else {
            return; // logged out meanwhile
        };
        let Some(fetched) = result else {
            if now_ms < deadline_ms {
                // Not answered (the link went down meanwhile, say): asked again with the link.
                stream.unfetched.insert((id, conn), (since, deadline_ms));
            } else {
                self.answer_from_memory(id, conn, since);
            }
            return;
        };
        // The stream up to `upto`, the history after it.
        let history = self.shard.history();
        let mut replay = fetched.messages;
        let mut tail = Vec::new();
        let gap = history.since(id, upto, &mut tail);
        replay.extend(tail);
        let ack = Ack {
            pos: history.position(),
            gap: fetched.gap || gap,
            replay,
        };
        self.shard.subscribe(id, conn);
        self.answer(id, conn, ack);
    }

    /// A resume the stream could not answer in time: what this node's memory has after
    /// `since`, with a gap where it does not reach back.
    fn answer_from_memory(&mut self, id: Id, conn: ConnRef, since: u64) {
        let history = self.shard.history();
        let mut replay = Vec::new();
        let gap = history.since(id, since, &mut replay);
        let ack = Ack {
            pos: history.position(),
            gap,
            replay,
        };
        if let Some(stream) = self.stream.as_mut() {
            stream.stream_gaps += u64::from(gap);
        }
        self.shard.subscribe(id, conn);
        self.answer(id, conn, ack);
    }

    /// JetStream: (catch-up, stream) waits given up with a gap so far (see [`Stream`]).
    pub fn gaps_given_up(&self) -> Option<(u64, u64)> {
        self.stream
            .as_ref()
            .map(|s| (s.catch_up_gaps, s.stream_gaps))
    }

    /// JetStream: the resumes waiting for the link are asked again once it is up, and those
    /// past their deadline are answered from memory. At most once per [`UNFETCHED_SCAN_MS`]:
    /// there may be thousands during an outage.
    fn retry_unfetched(&mut self, now_ms: u64) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        if stream.unfetched.is_empty() || now_ms < stream.unfetched_scan_ms {
            return;
        }
        stream.unfetched_scan_ms = now_ms + UNFETCHED_SCAN_MS;
        let linked = stream.publisher.stats().connected();
        let due: Vec<((Id, ConnRef), (u64, u64))> = stream
            .unfetched
            .iter()
            .filter(|(_, &(_, deadline_ms))| linked || now_ms >= deadline_ms)
            .map(|(&key, &value)| (key, value))
            .collect();
        for ((id, conn), (since, deadline_ms)) in due {
            let stream = self.stream.as_mut().expect("on a stream");
            stream.unfetched.remove(&(id, conn));
            if now_ms >= deadline_ms {
                self.answer_from_memory(id, conn, since);
            } else {
                self.ask_stream(id, conn, since, deadline_ms);
            }
        }
    }

    /// Hands a login's late answer to the worker holding the connection.
    fn answer(&mut self, id: Id, conn: ConnRef, ack: Ack) {
        if conn.worker() == self.index {
            self.ready.push_back((conn, id, ack));
        } else {
            self.post
                .send(conn.worker(), Mail::LoginAck { conn, id, ack });
        }
    }

    /// A late answer to a login of a connection held here.
    pub fn next_ready(&mut self) -> Option<(ConnRef, Id, Ack)> {
        self.ready.pop_front()
    }

    /// JetStream, after the mailbox was drained: every message up to `head` (read before the
    /// drain) has been routed, so the history's position moves there, and the logins waiting
    /// for this node to catch up are answered once it has (or, past their deadline, with a
    /// gap); the resumes waiting for the link to ask the stream are asked again.
    pub fn caught_up(&mut self, head: u64, now_ms: u64) {
        if self.stream.is_none() {
            return;
        }
        self.shard.history_mut().advance(head);
        self.retry_unfetched(now_ms);
        let stream = self.stream.as_mut().expect("on a stream");
        if stream.waiting.is_empty() {
            return;
        }
        let position = self.shard.history().position();
        let due: Vec<(Id, ConnRef, u64)> = stream
            .waiting
            .iter()
            .filter(|(_, &(since, deadline_ms))| since <= position || now_ms >= deadline_ms)
            .map(|(&(id, conn), &(since, _))| (id, conn, since))
            .collect();
        for (id, conn, since) in due {
            let stream = self.stream.as_mut().expect("on a stream");
            stream.waiting.remove(&(id, conn));
            if since <= position {
                if let Some(ack) = self.login(id, conn, Some(since), now_ms) {
                    self.answer(id, conn, ack);
                }
            } else {
                // This node did not reach the client's position in time: tell rather than
                // repeat what the client may have seen.
                stream.catch_up_gaps += 1;
                self.shard.subscribe(id, conn);
                let ack = Ack {
                    pos: position,
                    gap: true,
                    replay: Vec::new(),
                };
                self.answer(id, conn, ack);
            }
        }
    }

    /// The JetStream head as the bridge last stored it (read before draining the mailbox).
    pub fn head(&self) -> Option<u64> {
        self.stream.as_ref().map(|s| s.publisher.stats().head())
    }

    /// Logs `conn` out of `id` here, or cancels its waiting login.
    fn unsubscribe(&mut self, id: Id, conn: ConnRef) {
        if let Some(stream) = self.stream.as_mut() {
            let key = (id, conn);
            if stream.fetching.remove(&key).is_some()
                || stream.unfetched.remove(&key).is_some()
                || stream.waiting.remove(&key).is_some()
            {
                return;
            }
        }
        self.shard.logout(id, conn);
    }

    pub fn logout(&mut self, id: Id, conn: ConnRef) {
        if self.owns(id) {
            self.unsubscribe(id, conn);
        } else {
            let owner = shard_of(id, self.workers);
            self.post.send(owner, Mail::Logout { id, conn });
        }
    }

    /// Routes a message for `id`, owned here, published at `published_us`: numbers it, keeps
    /// it in the history, mails it to the targets held by other workers and appends those held
    /// here to `here`. Returns its seq and how many connections it went to.
    /// `stream_seq`: the message's seq from the stream (JetStream); `None` for a repeat.
    pub fn route(
        &mut self,
        id: Id,
        msg: &Arc<[u8]>,
        (now_us, published_us): (u64, u64),
        stream_seq: Option<u64>,
        here: &mut Vec<ConnRef>,
    ) -> Option<(u64, u32)> {
        debug_assert!(self.owns(id));
        let (seq, targets) = match stream_seq {
            Some(seq) => (seq, self.shard.route_at(id, msg, seq)?),
            None => self.shard.route(id, msg, now_us),
        };
        for &conn in targets {
            if conn.worker() == self.index {
                here.push(conn);
            } else {
                let msg = msg.clone();
                let mail = Mail::Deliver {
                    conn,
                    id,
                    seq,
                    msg,
                    published_us,
                };
                self.post.send(conn.worker(), mail);
            }
        }
        Some((seq, targets.len() as u32))
    }

    /// JetStream: a stored publish's count of connections logged in as `id`: at once when
    /// this worker owns it, else by mail (`Mail::Reply`). Returns the count when known now.
    pub fn count(&mut self, id: Id, reply: ReplyTo) -> Option<u32> {
        if self.owns(id) {
            return Some(self.shard.logged_in(id).len() as u32);
        }
        let owner = shard_of(id, self.workers);
        self.post.send(owner, Mail::Count { id, reply });
        None
    }

    /// `POST /disconnect/<id>`, owned here: mails the connections held by other workers,
    /// appends those held here to `here`, and returns how many there were.
    pub fn disconnect(&mut self, id: Id, here: &mut Vec<ConnRef>) -> u32 {
        let targets = self.shard.logged_in(id);
        for &conn in targets {
            if conn.worker() == self.index {
                here.push(conn);
            } else {
                self.post.send(conn.worker(), Mail::DisconnectConn { conn });
            }
        }
        targets.len() as u32
    }

    /// A publish (`msg`) or a disconnect (`None`) for an id another worker owns goes there;
    /// false when this worker owns it (the caller routes it).
    /// `published_us`: when the publish reached comet.
    pub fn forward(
        &mut self,
        id: Id,
        msg: Option<&Arc<[u8]>>,
        reply: ReplyTo,
        published_us: u64,
    ) -> bool {
        if self.owns(id) {
            return false;
        }
        let owner = shard_of(id, self.workers);
        let mail = match msg {
            Some(msg) => Mail::Publish {
                id,
                msg: msg.clone(),
                reply,
                published_us,
            },
            None => Mail::Disconnect { id, reply },
        };
        self.post.send(owner, mail);
        true
    }

    /// The count for a publish or a disconnect that came by mail.
    pub fn reply(&mut self, to: ReplyTo, connections: u32) {
        self.post
            .send(to.conn.worker(), Mail::Reply { to, connections });
    }

    /// The next mail that needs the loop; logins and logouts for ids owned here are handled
    /// on the way.
    pub fn next_mail(&mut self, now_ms: u64) -> Option<Mail> {
        loop {
            if let Some((conn, id, ack)) = self.ready.pop_front() {
                return Some(Mail::LoginAck { conn, id, ack });
            }
            match self.post.recv()? {
                Mail::Login { id, conn, since } => {
                    if let Some(ack) = self.login(id, conn, since, now_ms) {
                        self.post
                            .send(conn.worker(), Mail::LoginAck { conn, id, ack });
                    }
                }
                Mail::Logout { id, conn } => self.unsubscribe(id, conn),
                Mail::Count { id, reply } => {
                    let connections = self.shard.logged_in(id).len() as u32;
                    self.reply(reply, connections);
                }
                Mail::Fetched { id, conn, result } => self.fetched(id, conn, result, now_ms),
                mail => return Some(mail),
            }
        }
    }

    pub fn post(&mut self) -> &mut Post {
        &mut self.post
    }

    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// Forgets messages past their age: by the clock (seqs are times), or on JetStream by the
    /// position recorded at each tick.
    pub fn expire(&mut self, now_us: u64) {
        let Some(stream) = self.stream.as_mut() else {
            self.shard.expire(now_us);
            return;
        };
        let history = self.shard.history_mut();
        stream.marks.push_back((now_us, history.position()));
        let mut limit = None;
        while let Some(&(at, position)) = stream.marks.front() {
            if at.saturating_add(stream.age_us) >= now_us {
                break;
            }
            limit = Some(position + 1);
            stream.marks.pop_front();
        }
        if let Some(limit) = limit {
            history.expire_below(limit);
        }
    }
}
