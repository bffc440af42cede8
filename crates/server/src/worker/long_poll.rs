//! Long-polls (`/poll/<ids>`): each collects what its ids' owners send until it has something
//! (or its timeout passes), and is then answered with one JSON body and logged out. No I/O
//! here: the loop writes the [`Answer`].
//!
//! A long-poll is always answered with a position, so it keeps each id's position here: the
//! client's (or a second ago, until the owner answers), then the owner's, then the seq of each
//! message answered. A message is never answered twice: one a previous poll missed may come
//! both late (from that poll's login) and in this poll's replay.

use std::collections::VecDeque;
use std::sync::Arc;

use ahash::AHashMap;
use comet_http::{self as http, Pos};
use comet_router::Id;

struct Poll {
    gen: u32,
    /// Each id and the position in it.
    ids: Box<[(Id, u64)]>,
    /// The answer's messages, JSON (`events::poll_item`).
    items: Vec<u8>,
    count: usize,
    gap: Vec<Id>,
    keep_alive: bool,
    allow_origin: Box<[u8]>,
    deadline_ms: u64,
    /// On the ready list.
    ready: bool,
    /// When the poll's token expires before its timeout: then it is answered 401.
    exp_s: Option<u64>,
}

/// What a message did to a long-poll.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Added,
    /// Answered before, or not for this poll.
    Stale,
    /// The answer holds `--queue-messages-max` messages: the rest waits in the history for the
    /// next poll (the position stays at the last message answered).
    Full,
}

/// A long-poll's answer, for the loop to write.
pub struct Answer {
    /// `{"since":..,"gap":[..],"messages":[..]}`.
    pub body: Vec<u8>,
    pub keep_alive: bool,
    pub allow_origin: Box<[u8]>,
    /// To log out of.
    pub ids: Box<[(Id, u64)]>,
}

impl Answer {
    /// The answer as an HTTP response (`200 application/json`).
    pub fn write(&self, out: &mut Vec<u8>) {
        let (ok, json) = (http::Status::OK, "application/json");
        let close = !self.keep_alive;
        http::response_for(out, ok, json, &self.body, close, false, &self.allow_origin)
    }
}

pub struct LongPolls {
    polls: AHashMap<u32, Poll>,
    /// (slot, gen, deadline_ms), in deadline order (every deadline is now + the timeout).
    deadlines: VecDeque<(u32, u32, u64)>,
    /// Long-polls with something to answer, answered at the end of the iteration.
    ready: Vec<u32>,
    messages_max: usize,
    timeout_ms: u64,
    pos_scratch: Vec<u64>,
}

impl LongPolls {
    pub fn new(messages_max: usize, timeout_ms: u64) -> LongPolls {
        LongPolls {
            polls: AHashMap::new(),
            deadlines: VecDeque::new(),
            ready: Vec::new(),
            messages_max,
            timeout_ms,
            pos_scratch: Vec::new(),
        }
    }

    /// A poll for `ids` on `slot`; `since` is the client's position per id, `start` the
    /// position of an id without one.
    #[allow(clippy::too_many_arguments)]
    pub fn begin(
        &mut self,
        slot: u32,
        gen: u32,
        ids: &[Id],
        since: Option<&[u64]>,
        start: u64,
        keep_alive: bool,
        allow_origin: Box<[u8]>,
        now_ms: u64,
    ) {
        let deadline_ms = now_ms + self.timeout_ms;
        let ids = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, since.map_or(start, |s| s[i])))
            .collect();
        self.polls.insert(
            slot,
            Poll {
                gen,
                ids,
                items: Vec::new(),
                count: 0,
                gap: Vec::new(),
                keep_alive,
                allow_origin,
                deadline_ms,
                ready: false,
                exp_s: None,
            },
        );
        self.deadlines.push_back((slot, gen, deadline_ms));
    }

    pub fn deliver(&mut self, slot: u32, id: Id, seq: u64, msg: &[u8]) -> Delivery {
        let Some(p) = self.polls.get_mut(&slot) else {
            return Delivery::Stale;
        };
        let Some(entry) = p.ids.iter_mut().find(|e| e.0 == id) else {
            return Delivery::Stale;
        };
        if seq <= entry.1 {
            return Delivery::Stale;
        }
        if p.count >= self.messages_max {
            return Delivery::Full;
        }
        entry.1 = seq;
        http::poll_item(&mut p.items, id, seq, msg);
        p.count += 1;
        Delivery::Added
    }

    /// The owner of `id` logged the poll in: its gap, its replay (as far as the answer has
    /// room) and, if the whole replay went in, its position. Returns how many messages went in.
    pub fn login_ack(
        &mut self,
        slot: u32,
        id: Id,
        gap: bool,
        replay: &[(u64, Arc<[u8]>)],
        pos: u64,
    ) -> u64 {
        if gap {
            if let Some(p) = self.polls.get_mut(&slot) {
                p.gap.push(id);
            }
        }
        let mut added = 0;
        for (seq, msg) in replay {
            added += u64::from(self.deliver(slot, id, *seq, msg) == Delivery::Added);
        }
        if let Some(p) = self.polls.get_mut(&slot) {
            if p.count < self.messages_max {
                if let Some(entry) = p.ids.iter_mut().find(|e| e.0 == id) {
                    entry.1 = pos;
                }
            }
        }
        added
    }

    /// Queues the poll for its answer if it has one to give (messages, a gap, or its timeout
    /// passed) and `logged_in` (every owner has answered).
    pub fn maybe_ready(&mut self, slot: u32, now_ms: u64, logged_in: bool) {
        let Some(p) = self.polls.get_mut(&slot) else {
            return;
        };
        let has = p.count > 0 || !p.gap.is_empty() || p.deadline_ms <= now_ms;
        if logged_in && has && !p.ready {
            p.ready = true;
            self.ready.push(slot);
        }
    }

    /// The polls queued for an answer (give the list back with [`LongPolls::put_back`]).
    pub fn take_ready(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.ready)
    }

    pub fn put_back(&mut self, mut ready: Vec<u32>) {
        ready.clear();
        self.ready = ready;
    }

    /// The next poll whose timeout passed at `now_ms` (to be made ready).
    pub fn expired(&mut self, now_ms: u64) -> Option<u32> {
        while let Some(&(slot, gen, deadline)) = self.deadlines.front() {
            if deadline > now_ms {
                return None;
            }
            self.deadlines.pop_front();
            if self
                .polls
                .get(&slot)
                .is_some_and(|p| p.gen == gen && p.deadline_ms == deadline)
            {
                return Some(slot);
            }
        }
        None
    }

    /// The poll's token expires at `exp_s`, before its timeout: at `exp_s` it is answered 401.
    pub fn set_expiry(&mut self, slot: u32, exp_s: u64) {
        if let Some(p) = self.polls.get_mut(&slot) {
            p.exp_s = Some(exp_s);
        }
    }

    /// The expiry of the poll on `slot` (see [`LongPolls::set_expiry`]); a later poll on the
    /// same connection has its own.
    pub fn expiry(&self, slot: u32) -> Option<u64> {
        self.polls.get(&slot).and_then(|p| p.exp_s)
    }

    /// `Access-Control-Allow-Origin` for the answer of the poll on `slot`.
    pub fn allow_origin(&self, slot: u32) -> Option<&[u8]> {
        self.polls.get(&slot).map(|p| &*p.allow_origin)
    }

    /// The answer of a poll queued by [`LongPolls::maybe_ready`], which is forgotten.
    pub fn answer(&mut self, slot: u32, epoch: u32) -> Option<Answer> {
        if !self.polls.get(&slot).is_some_and(|p| p.ready) {
            return None;
        }
        let p = self.polls.remove(&slot).expect("a ready poll");
        let mut pos = std::mem::take(&mut self.pos_scratch);
        pos.clear();
        pos.extend(p.ids.iter().map(|e| e.1));
        let mut body = Vec::with_capacity(p.items.len() + 64);
        http::poll_body(&mut body, Pos { epoch, seqs: &pos }, &p.gap, &p.items);
        self.pos_scratch = pos;
        Some(Answer {
            body,
            keep_alive: p.keep_alive,
            allow_origin: p.allow_origin,
            ids: p.ids,
        })
    }

    /// Forgets the poll of a closed connection; its ids, to log out of.
    pub fn forget(&mut self, slot: u32) -> Option<Box<[(Id, u64)]>> {
        self.polls.remove(&slot).map(|p| p.ids)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.polls.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polls() -> LongPolls {
        LongPolls::new(2, 30_000)
    }

    fn body(a: &Answer) -> serde_json::Value {
        serde_json::from_slice(&a.body).unwrap()
    }

    #[test]
    fn a_poll_is_answered_once_it_has_a_message_and_every_owner_answered() {
        let mut p = polls();
        p.begin(4, 1, &[7], None, 100, true, Box::new(*b"*"), 0);
        p.maybe_ready(4, 0, true);
        assert!(p.take_ready().is_empty(), "nothing to answer yet");
        assert_eq!(p.deliver(4, 7, 150, b"hi"), Delivery::Added);
        p.maybe_ready(4, 0, false);
        assert!(p.answer(4, 1).is_none(), "an owner has not answered");
        p.maybe_ready(4, 0, true);
        let ready = p.take_ready();
        assert_eq!(ready, [4]);
        p.put_back(ready);
        let a = p.answer(4, 0xab).unwrap();
        let v = body(&a);
        assert_eq!(v["since"], "000000ab:150");
        assert_eq!(v["messages"][0]["data"], "hi");
        assert_eq!(v["gap"], serde_json::json!([]));
        assert!(a.keep_alive);
        assert_eq!(&*a.ids, &[(7, 150)]);
        assert_eq!(p.len(), 0, "an answered poll is forgotten");
    }

    #[test]
    fn a_message_is_answered_once_and_a_full_answer_leaves_the_rest() {
        let mut p = polls();
        p.begin(1, 1, &[7, 8], Some(&[10, 20]), 0, false, Box::new(*b"*"), 0);
        assert_eq!(p.deliver(1, 7, 10, b"old"), Delivery::Stale);
        assert_eq!(p.deliver(1, 9, 30, b"other id"), Delivery::Stale);
        assert_eq!(p.deliver(1, 7, 11, b"a"), Delivery::Added);
        assert_eq!(p.deliver(1, 7, 11, b"a again"), Delivery::Stale);
        assert_eq!(p.deliver(1, 8, 21, b"b"), Delivery::Added);
        assert_eq!(p.deliver(1, 8, 22, b"c"), Delivery::Full);
        p.maybe_ready(1, 0, true);
        let v = body(&p.answer(1, 1).unwrap());
        assert_eq!(
            v["since"], "00000001:11,21",
            "the position stops at the last answered"
        );
        assert_eq!(v["messages"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn an_owner_answer_brings_its_gap_replay_and_position() {
        let mut p = polls();
        p.begin(1, 1, &[7], Some(&[5]), 0, false, Box::new(*b"*"), 0);
        let replay = [(6, Arc::from(&b"x"[..]))];
        assert_eq!(p.login_ack(1, 7, true, &replay, 9), 1);
        p.maybe_ready(1, 0, true);
        let v = body(&p.answer(1, 1).unwrap());
        assert_eq!(v["gap"], serde_json::json!([7]));
        assert_eq!(v["since"], "00000001:9");
        assert_eq!(v["messages"][0]["seq"], 6);
    }

    #[test]
    fn a_poll_with_nothing_is_answered_at_its_timeout() {
        let mut p = polls();
        p.begin(3, 2, &[7], None, 100, false, Box::new(*b"*"), 1_000);
        assert_eq!(p.expired(30_999), None);
        assert_eq!(p.expired(31_000), Some(3));
        p.maybe_ready(3, 31_000, true);
        let v = body(&p.answer(3, 1).unwrap());
        assert_eq!(v["messages"], serde_json::json!([]));
        assert_eq!(v["since"], "00000001:100");
    }

    #[test]
    fn a_forgotten_poll_neither_expires_nor_answers() {
        let mut p = polls();
        p.begin(3, 2, &[7], None, 100, false, Box::new(*b"*"), 0);
        assert_eq!(p.forget(3).as_deref(), Some(&[(7, 100)][..]));
        assert_eq!(p.expired(u64::MAX), None);
        assert!(p.answer(3, 1).is_none());
        assert_eq!(p.deliver(3, 7, 200, b"late"), Delivery::Stale);
    }
}
