//! The ids this worker owns (`shard_of(id) == index`): who is logged in as each (the subscriber
//! table) and what each was sent lately (the history). Knows nothing of sockets: a connection
//! is a [`ConnRef`], which may live on any worker.
//!
//! Positions: the owner numbers each id's messages (`History::push`) and keeps a short history.
//! A login carries the client's position; the owner answers with what the history holds after
//! it (or a gap) and the id's position, so that the subscriber's worker can write the gap, the
//! replay, the position and then the live messages, which come from this same owner after its
//! answer: nothing is missed or repeated between replay and live.

use std::sync::Arc;

use comet_router::{ConnRef, History, Id, Subscribers};

use super::post::Ack;

pub struct Shard {
    subs: Subscribers,
    history: History,
}

impl Shard {
    /// A shard with no one logged in and `history` (new, or restored by `--state-dir`).
    pub fn new(history: History) -> Shard {
        Shard {
            subs: Subscribers::new(),
            history,
        }
    }

    /// Logs `conn` in as `id` and answers with what it missed since `since`.
    pub fn login(&mut self, id: Id, conn: ConnRef, since: Option<u64>) -> Ack {
        self.subs.login(id, conn);
        let mut replay = Vec::new();
        let gap = since.is_some_and(|s| self.history.since(id, s, &mut replay));
        Ack {
            pos: self.history.position(),
            gap,
            replay,
        }
    }

    pub fn logout(&mut self, id: Id, conn: ConnRef) {
        self.subs.logout(id, conn);
    }

    /// Numbers a message for `id`, keeps it in the history and returns its seq and every
    /// connection logged in as `id`.
    pub fn route(&mut self, id: Id, msg: &Arc<[u8]>, now_us: u64) -> (u64, &[ConnRef]) {
        let seq = self.history.push(id, msg, now_us);
        (seq, self.subs.get(id))
    }

    /// Keeps a message numbered by the stream (`seq`) in the history and returns every
    /// connection logged in as `id`; `None` for a repeat (at or below the position).
    pub fn route_at(&mut self, id: Id, msg: &Arc<[u8]>, seq: u64) -> Option<&[ConnRef]> {
        self.history
            .push_at(id, msg, seq)
            .then(|| self.subs.get(id))
    }

    /// Logs `conn` in as `id`, its answer computed by the caller (a resume answered with the
    /// stream's help).
    pub fn subscribe(&mut self, id: Id, conn: ConnRef) {
        self.subs.login(id, conn);
    }

    pub fn history_mut(&mut self) -> &mut History {
        &mut self.history
    }

    /// Every connection logged in as `id`.
    pub fn logged_in(&self, id: Id) -> &[ConnRef] {
        self.subs.get(id)
    }

    /// Forgets messages past their age.
    pub fn expire(&mut self, now_us: u64) {
        self.history.expire(now_us);
    }

    /// Logged-in ids.
    pub fn ids(&self) -> usize {
        self.subs.ids()
    }

    pub fn history(&self) -> &History {
        &self.history
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comet_router::HistoryConfig;

    fn shard() -> Shard {
        let cfg = HistoryConfig {
            messages_max: 4,
            age_us: 60_000_000,
            bytes_max: 1 << 20,
        };
        Shard::new(History::new(cfg, 1_000_000))
    }

    fn msg(text: &str) -> Arc<[u8]> {
        Arc::from(text.as_bytes())
    }

    #[test]
    fn a_message_reaches_exactly_the_connections_logged_in_as_its_id() {
        let mut s = shard();
        let (a, b, c) = (
            ConnRef::new(0, 1, 1),
            ConnRef::new(1, 2, 1),
            ConnRef::new(0, 3, 1),
        );
        s.login(7, a, None);
        s.login(7, b, None);
        s.login(8, c, None);
        let (_, targets) = s.route(7, &msg("hi"), 2_000_000);
        assert_eq!(targets, &[a, b]);
        s.logout(7, a);
        let (_, targets) = s.route(7, &msg("again"), 2_000_001);
        assert_eq!(targets, &[b]);
        s.logout(7, b);
        s.logout(8, c);
        assert_eq!(s.ids(), 0);
        assert!(s.route(7, &msg("nobody"), 2_000_002).1.is_empty());
    }

    #[test]
    fn a_login_replays_what_came_after_its_position_and_answers_the_head() {
        let mut s = shard();
        let (first, _) = s.route(5, &msg("one"), 2_000_000);
        let (second, _) = s.route(5, &msg("two"), 2_000_001);
        assert!(second > first);
        let ack = s.login(5, ConnRef::new(0, 1, 1), Some(first));
        assert!(!ack.gap);
        assert_eq!(ack.replay.len(), 1);
        assert_eq!(ack.replay[0].0, second);
        assert_eq!(&*ack.replay[0].1, b"two");
        assert!(ack.pos >= second);
        // A login without a position gets no replay.
        let ack = s.login(5, ConnRef::new(0, 2, 1), None);
        assert!(!ack.gap && ack.replay.is_empty());
    }

    #[test]
    fn a_position_the_history_no_longer_reaches_is_a_gap() {
        let mut s = shard();
        let (first, _) = s.route(5, &msg("0"), 2_000_000);
        for i in 1..10u64 {
            s.route(5, &msg("x"), 2_000_000 + i);
        }
        let ack = s.login(5, ConnRef::new(0, 1, 1), Some(first));
        assert!(ack.gap, "4 kept of 10: the client missed some");
        assert_eq!(ack.replay.len(), 4);
    }

    #[test]
    fn messages_past_their_age_expire() {
        let mut s = shard();
        s.route(5, &msg("old"), 2_000_000);
        assert_eq!(s.history().messages(), 1);
        s.expire(2_000_000 + 61_000_000);
        assert_eq!(s.history().messages(), 0);
    }
}
