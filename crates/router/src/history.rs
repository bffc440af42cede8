//! [`History`]: one worker shard's recent messages per id, for resume.
//!
//! Every message pushed to an id gets a sequence number (`seq`) from the shard:
//! `seq = max(last_seq + 1, now_us)`, so seqs grow strictly across the whole shard (hence per
//! id too), follow the wall clock in microseconds, and keep growing when the clock stands still
//! or steps back. [`History::position`] is the last seq assigned: what a subscriber is told.
//!
//! The history keeps, per id, the newest `messages_max` messages, none older than `age_us`
//! (by seq, on [`History::expire`]), and at most `bytes_max` accounted bytes for the whole
//! shard (past it the shard's oldest messages go first). An id whose last message goes is
//! removed, so ids with no recent message cost nothing.
//!
//! # The gap rule
//!
//! A client resuming with `since` says "I have seen every message of this id with
//! `seq <= since`". [`History::since`] hands back the retained messages with `seq > since` and
//! says *gap* whenever a message with `seq > since` may have existed and is no longer retained.
//! A gap may be reported needlessly, but never missed. Two numbers make this exact:
//!
//! - `floor`, per id entry: every message of the id with `seq > floor` is retained. It is the
//!   newest seq the entry forgot (by count, age or the bytes cap); a new entry starts at
//!   `horizon`, which covers whatever the id forgot before the entry existed.
//! - `horizon`, per shard: every forgotten message of an id that has no entry has
//!   `seq <= horizon`. It starts at `start`, the `now_us` given to [`History::new`], and, when
//!   an entry is removed, rises to that entry's `floor`.
//!
//! Positions belong to one epoch (one server process, `start` onwards): every seq of it is
//! above `start`, so a `since` below `start` ("from the beginning", `since=0`) is the same as
//! `start` and misses nothing as long as nothing of the id was forgotten. A position the server
//! cannot place (another epoch's: [`SEQ_UNKNOWN`]) is always a gap.
//!
//! So `since(id, s)` answers gap = `s == SEQ_UNKNOWN`, else, with `s' = max(s, start)`,
//! `s' < floor` if `id` has an entry, else `s' < horizon`.
//! Forgetting always takes an id's oldest message (count eviction takes the id's oldest; age
//! expiry and the bytes cap take the shard's oldest, seqs being shard-wide), which is what
//! makes "everything above `floor` is retained" hold.
//!
//! With history off (`messages_max == 0`) nothing is stored, and `since(id, s)` answers
//! gap = `s' < position()`: a message may have gone to `id` after `s` whenever any push
//! happened after `s`.
//!
//! # Across a restart
//!
//! [`History::export`] hands out a [`Saved`]: the bookkeeping above (`start`, `last_seq`,
//! `horizon`, each entry's `floor`) and every retained message, nothing derived.
//! [`History::import`] builds a shard's history from the [`Saved`] of every shard of the
//! previous process, keeping the ids it now owns (the worker count may have changed):
//! `start` is the smallest start (every seq of the epoch is above it), `last_seq` the largest
//! (every later seq is above every restored one, whatever the clock says) and `horizon` the
//! largest (it covers what any shard forgot). A `horizon` or `floor` equal to its shard's
//! start means "nothing forgotten" and is lowered to the new start, so that merging shards
//! started a few microseconds apart adds no gap. The limits are applied again (they may have
//! changed), which may forget more, with the floors raised as usual. From one shard into one
//! shard, `since` answers exactly as before the export; merging or splitting shards may add a
//! needless gap (the largest horizon holds for every id), never miss one. A history kept with
//! history off exports `horizon = last_seq`: everything it numbered is forgotten.
//!
//! # Cost
//!
//! The age queue holds `(seq, id)` per message in seq order, so expiry and the bytes cap pop
//! from its front. Count eviction leaves its queue item behind (lazy deletion: an item is
//! *stale* when its id has no entry or `seq <= floor`); stale items are dropped when they reach
//! the front, and the queue is compacted once they outnumber the live ones, so it holds at most
//! about two items per retained message. Memory is accounted by [`message_bytes`] and
//! [`ID_OVERHEAD_BYTES`].

use std::collections::{hash_map, HashMap, VecDeque};
use std::mem::size_of;
use std::sync::Arc;

use crate::Id;

/// The `since` of a position the history cannot place (from another epoch: another node or an
/// earlier run): always answered with a gap. Every seq is above it.
pub const SEQ_UNKNOWN: u64 = 0;

/// A history handed across a restart: see "Across a restart" in the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saved {
    /// Every seq of the epoch is above it.
    pub start: u64,
    /// The last seq assigned.
    pub last_seq: u64,
    /// Every forgotten message of an id without an entry has `seq <= horizon`.
    pub horizon: u64,
    /// Ids with retained messages, in id order.
    pub entries: Vec<SavedEntry>,
}

/// One id's retained messages in a [`Saved`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedEntry {
    pub id: Id,
    /// Every message of the id with `seq > floor` is in `messages`.
    pub floor: u64,
    /// Oldest first, seqs strictly growing, never empty.
    pub messages: Vec<(u64, Arc<[u8]>)>,
}

impl Saved {
    /// Checks what [`History::import`] relies on, for histories read back from outside (a
    /// file): `0 < start <= horizon <= last_seq`; per entry, messages present, seqs strictly
    /// growing within `floor < seq <= last_seq`, `floor >= start`; no id in two entries of
    /// `saved`. The error names what is wrong.
    pub fn check_all(saved: &[Saved]) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for (n, s) in saved.iter().enumerate() {
            if !(SEQ_UNKNOWN < s.start && s.start <= s.horizon && s.horizon <= s.last_seq) {
                return Err(format!(
                    "shard {n}: start {}, horizon {}, last seq {} out of order",
                    s.start, s.horizon, s.last_seq
                ));
            }
            for e in &s.entries {
                if !seen.insert(e.id) {
                    return Err(format!("id {} saved twice", e.id));
                }
                let mut prev = e.floor;
                if e.messages.is_empty() || e.floor < s.start {
                    return Err(format!("shard {n}, id {}: bad entry", e.id));
                }
                for &(seq, _) in &e.messages {
                    if seq <= prev || seq > s.last_seq {
                        return Err(format!("shard {n}, id {}: seq {seq} out of order", e.id));
                    }
                    prev = seq;
                }
            }
        }
        Ok(())
    }
}

/// Limits of one shard's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Messages kept per id; 0 turns history off (seqs are still assigned).
    pub messages_max: usize,
    /// A message is dropped by [`History::expire`] once `seq + age_us < now_us`.
    pub age_us: u64,
    /// Accounted bytes ([`History::bytes`]) per shard; past it the shard's oldest messages are
    /// forgotten. A message bigger than this is forgotten as soon as it is pushed.
    pub bytes_max: usize,
}

/// One retained message: its seq and its bytes (shared with the fan-out, not copied).
type Message = (u64, Arc<[u8]>);

/// Per-message bytes besides the payload allocation: the slot in the id's deque (seq 8 + fat
/// `Arc` pointer 16 = 24) plus the slot in the age queue (seq 8 + id 8 = 16).
pub const MESSAGE_OVERHEAD_BYTES: usize = 24 + 16;

/// The payload allocation: `Arc`'s header (strong and weak counts, 8 + 8) plus the bytes,
/// rounded up to the allocator's 16-byte granule.
const ARC_HEADER_BYTES: usize = 16;
const ALLOCATION_GRANULE_BYTES: usize = 16;

/// Per-id bytes: the map slot (id 8 + [`Entry`] 40 = 48) times 1.5 for the map's load-factor
/// slack (72), its control bytes (8, rounded up), and the malloc header of the id's deque
/// buffer (16).
pub const ID_OVERHEAD_BYTES: usize = 72 + 8 + 16;

const _: () = assert!(size_of::<Message>() == 24);
const _: () = assert!(size_of::<(u64, Id)>() == 16);
const _: () = assert!(size_of::<Id>() + size_of::<Entry>() == 48);

/// Stale age-queue items tolerated beyond the live count before compacting, so that a shard
/// with few messages does not compact on every count eviction.
const STALE_SLACK: usize = 64;

/// Accounted bytes of one retained message with a payload of `len` bytes. A payload shared by
/// several ids (one publish to many ids) is counted once per id: an overestimate.
pub fn message_bytes(len: usize) -> usize {
    MESSAGE_OVERHEAD_BYTES + (ARC_HEADER_BYTES + len).next_multiple_of(ALLOCATION_GRANULE_BYTES)
}

/// One id's retained messages.
#[derive(Debug)]
struct Entry {
    /// Every message of the id with `seq > floor` is in `messages` (see the module doc).
    floor: u64,
    /// Oldest first; never empty (an entry whose last message goes is removed).
    messages: VecDeque<Message>,
}

impl Entry {
    /// True when the age-queue item `(seq, this id)` still stands for a retained message.
    fn holds(&self, seq: u64) -> bool {
        seq > self.floor
    }
}

/// One worker shard's message history: seqs, retained messages per id, and the gap rule (see
/// the module doc). Used from the shard's thread only; the caller supplies the clock.
#[derive(Debug)]
pub struct History {
    cfg: HistoryConfig,
    entries: HashMap<Id, Entry, ahash::RandomState>,
    /// `(seq, id)` per retained message, in seq order, plus `stale` items left by count
    /// eviction.
    age: VecDeque<(u64, Id)>,
    /// Items of `age` that no longer stand for a retained message.
    stale: usize,
    /// The `now_us` given to [`History::new`]: every seq is above it.
    start: u64,
    /// The last seq assigned: [`History::position`].
    last_seq: u64,
    /// Every forgotten message of an id without an entry has `seq <= horizon`.
    horizon: u64,
    messages: usize,
    bytes: usize,
    evicted: u64,
}

impl History {
    /// An empty history. `now_us` is the wall clock in microseconds since the Unix epoch: the
    /// first position (at least 1, above [`SEQ_UNKNOWN`]). Allocates nothing.
    pub fn new(cfg: HistoryConfig, now_us: u64) -> History {
        let now_us = now_us.max(SEQ_UNKNOWN + 1);
        History {
            cfg,
            entries: HashMap::default(),
            age: VecDeque::new(),
            stale: 0,
            start: now_us,
            last_seq: now_us,
            horizon: now_us,
            messages: 0,
            bytes: 0,
            evicted: 0,
        }
    }

    /// What a restart hands to [`History::import`]: the retained messages (shared, not copied)
    /// and the gap bookkeeping.
    pub fn export(&self) -> Saved {
        let mut entries: Vec<SavedEntry> = self
            .entries
            .iter()
            .map(|(&id, entry)| SavedEntry {
                id,
                floor: entry.floor,
                messages: entry.messages.iter().cloned().collect(),
            })
            .collect();
        entries.sort_unstable_by_key(|e| e.id);
        // With history off nothing was kept: every seq assigned is forgotten.
        let horizon = if self.cfg.messages_max == 0 {
            self.last_seq
        } else {
            self.horizon
        };
        Saved {
            start: self.start,
            last_seq: self.last_seq,
            horizon,
            entries,
        }
    }

    /// A history with `cfg` holding what `saved` (every shard of the previous process, checked
    /// by [`Saved::check_all`]) kept of the ids for which `owns` is true; see "Across a
    /// restart" in the module doc. Panics if `saved` is empty.
    pub fn import(cfg: HistoryConfig, saved: &[Saved], owns: impl Fn(Id) -> bool) -> History {
        debug_assert_eq!(Saved::check_all(saved), Ok(()));
        let start = saved.iter().map(|s| s.start).min().expect("a saved shard");
        let last_seq = saved
            .iter()
            .map(|s| s.last_seq)
            .max()
            .expect("a saved shard");
        // "Nothing forgotten" (equal to the shard's start) stays so from the new start.
        let lower = |value: u64, shard_start: u64| {
            if value == shard_start {
                start
            } else {
                value
            }
        };
        let horizon = saved
            .iter()
            .map(|s| lower(s.horizon, s.start))
            .max()
            .expect("a saved shard");
        let mut h = History::new(cfg, start);
        h.last_seq = last_seq;
        h.horizon = horizon;
        if cfg.messages_max == 0 {
            h.horizon = last_seq;
            h.check();
            return h;
        }
        for s in saved {
            for e in s.entries.iter().filter(|e| owns(e.id)) {
                for &(seq, ref msg) in &e.messages {
                    h.age.push_back((seq, e.id));
                    h.bytes += message_bytes(msg.len());
                }
                h.messages += e.messages.len();
                h.bytes += ID_OVERHEAD_BYTES;
                let entry = Entry {
                    floor: lower(e.floor, s.start),
                    messages: e.messages.iter().cloned().collect(),
                };
                let before = h.entries.insert(e.id, entry);
                assert!(before.is_none(), "id {} saved twice", e.id);
            }
        }
        // Shards numbered independently: their seqs interleave (and may be equal).
        h.age.make_contiguous().sort_unstable();
        // The limits may have changed: the count per id, then the bytes cap.
        for entry in h.entries.values_mut() {
            while entry.messages.len() > cfg.messages_max {
                let (seq, msg) = entry.messages.pop_front().expect("over the count");
                entry.floor = seq;
                h.messages -= 1;
                h.bytes -= message_bytes(msg.len());
                h.evicted += 1;
                h.stale += 1;
            }
        }
        h.compact();
        while h.bytes > cfg.bytes_max && h.oldest().is_some() {
            h.forget_oldest();
            h.evicted += 1;
        }
        h.check();
        h
    }

    /// Assigns the next seq, `max(position() + 1, now_us)`, to a message for `id`, records the
    /// message unless history is off, enforces the count and bytes limits, and returns the seq.
    pub fn push(&mut self, id: Id, msg: &Arc<[u8]>, now_us: u64) -> u64 {
        let seq = now_us.max(self.last_seq + 1);
        self.last_seq = seq;
        if self.cfg.messages_max == 0 {
            return seq;
        }
        let entry = match self.entries.entry(id) {
            hash_map::Entry::Occupied(entry) => entry.into_mut(),
            hash_map::Entry::Vacant(vacant) => {
                self.bytes += ID_OVERHEAD_BYTES;
                vacant.insert(Entry {
                    floor: self.horizon,
                    messages: VecDeque::new(),
                })
            }
        };
        entry.messages.push_back((seq, Arc::clone(msg)));
        self.age.push_back((seq, id));
        self.messages += 1;
        self.bytes += message_bytes(msg.len());

        if entry.messages.len() > self.cfg.messages_max {
            // The id's oldest goes; its age-queue item becomes stale (seq <= floor).
            let (old_seq, old) = entry
                .messages
                .pop_front()
                .expect("over the count, not empty");
            entry.floor = old_seq;
            self.messages -= 1;
            self.bytes -= message_bytes(old.len());
            self.evicted += 1;
            self.stale += 1;
            if self.stale > self.messages + STALE_SLACK {
                self.compact();
            }
        }

        while self.bytes > self.cfg.bytes_max {
            if self.oldest().is_none() {
                break;
            }
            self.forget_oldest();
            self.evicted += 1;
        }
        self.check();
        seq
    }

    /// The last seq assigned (initially the `now_us` given to [`History::new`]); every later
    /// push gets a bigger one. This is the current position a subscriber is told.
    pub fn position(&self) -> u64 {
        self.last_seq
    }

    /// What a client that has seen everything of `id` up to `since` missed: appends the
    /// retained messages of `id` with `seq > since` to `out`, oldest first, and returns true if
    /// there is a gap: messages with `seq > since` may have existed that are not retained, or
    /// `since` is [`SEQ_UNKNOWN`].
    pub fn since(&self, id: Id, since: u64, out: &mut Vec<(u64, Arc<[u8]>)>) -> bool {
        if since == SEQ_UNKNOWN {
            // Nothing to compare with: hand back what is retained, and say so.
            if let Some(entry) = self.entries.get(&id) {
                out.extend(entry.messages.iter().cloned());
            }
            return true;
        }
        // No seq of this epoch is below its start: "before the start" is "at the start".
        let since = since.max(self.start);
        if self.cfg.messages_max == 0 {
            return since < self.last_seq;
        }
        match self.entries.get(&id) {
            None => since < self.horizon,
            Some(entry) => {
                let first = entry.messages.partition_point(|&(seq, _)| seq <= since);
                out.extend(entry.messages.range(first..).cloned());
                since < entry.floor
            }
        }
    }

    /// Forgets the messages older than the age limit (`seq + age_us < now_us`), oldest first,
    /// and gives back memory the shard no longer needs. Meant for a periodic timer; amortised
    /// O(expired).
    pub fn expire(&mut self, now_us: u64) {
        while let Some(seq) = self.oldest() {
            if seq.saturating_add(self.cfg.age_us) >= now_us {
                break;
            }
            self.forget_oldest();
        }
        // Shrink only when mostly empty, to at twice the length, so that a shard oscillating
        // around one size does not reallocate on every tick.
        if self.entries.capacity() > 64 && self.entries.len() * 4 < self.entries.capacity() {
            self.entries.shrink_to(self.entries.len() * 2);
        }
        if self.age.capacity() > 64 && self.age.len() * 4 < self.age.capacity() {
            self.age.shrink_to(self.age.len() * 2);
        }
        self.check();
    }

    /// Ids with at least one retained message.
    pub fn ids(&self) -> usize {
        self.entries.len()
    }

    /// Retained messages, all ids together.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Accounted bytes: [`message_bytes`] per retained message plus [`ID_OVERHEAD_BYTES`] per
    /// id with an entry. Checked against `bytes_max`.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Messages forgotten before their age, by the count limit or the bytes cap, in total.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The seq of the shard's oldest retained message, after dropping the stale age-queue
    /// items in front of it; `None` when nothing is retained.
    fn oldest(&mut self) -> Option<u64> {
        while let Some(&(seq, id)) = self.age.front() {
            if self.entries.get(&id).is_some_and(|entry| entry.holds(seq)) {
                return Some(seq);
            }
            self.age.pop_front();
            self.stale -= 1;
        }
        None
    }

    /// Forgets the message at the front of the age queue, which [`History::oldest`] has just
    /// found live; removes its id's entry if it was the last message, raising the horizon.
    fn forget_oldest(&mut self) {
        let (seq, id) = self.age.pop_front().expect("oldest() found a live front");
        let entry = self
            .entries
            .get_mut(&id)
            .expect("a live item has its entry");
        let (front_seq, msg) = entry.messages.pop_front().expect("entries are never empty");
        assert_eq!(
            front_seq, seq,
            "age queue and id {id} disagree on the oldest message"
        );
        entry.floor = seq;
        self.messages -= 1;
        self.bytes -= message_bytes(msg.len());
        if entry.messages.is_empty() {
            self.entries.remove(&id);
            self.bytes -= ID_OVERHEAD_BYTES;
            self.horizon = self.horizon.max(seq);
        } else if entry.messages.capacity() > 8
            && entry.messages.len() * 4 <= entry.messages.capacity()
        {
            entry.messages.shrink_to(entry.messages.len() * 2);
        }
    }

    /// Drops every stale item of the age queue. O(queue length), paid once the stale items
    /// outnumber the live ones, so amortised O(1) per count eviction.
    fn compact(&mut self) {
        let entries = &self.entries;
        self.age
            .retain(|(seq, id)| entries.get(id).is_some_and(|entry| entry.holds(*seq)));
        self.stale = 0;
    }

    /// Cheap invariants, on in release too.
    fn check(&self) {
        assert_eq!(
            self.age.len(),
            self.messages + self.stale,
            "age queue out of step"
        );
        assert!(
            self.messages >= self.entries.len(),
            "an entry without messages"
        );
        assert!(
            self.start <= self.horizon && self.horizon <= self.last_seq,
            "horizon outside start..=position"
        );
        if self.messages == 0 {
            assert_eq!(self.bytes, 0, "bytes left with no message");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(messages_max: usize, age_us: u64, bytes_max: usize) -> HistoryConfig {
        HistoryConfig {
            messages_max,
            age_us,
            bytes_max,
        }
    }

    fn msg(text: &str) -> Arc<[u8]> {
        Arc::from(text.as_bytes())
    }

    /// `since` as (seqs returned, gap).
    fn since(h: &History, id: Id, since: u64) -> (Vec<u64>, bool) {
        let mut out = Vec::new();
        let gap = h.since(id, since, &mut out);
        (out.iter().map(|&(seq, _)| seq).collect(), gap)
    }

    #[test]
    fn seq_follows_the_clock_and_never_repeats() {
        let mut h = History::new(cfg(8, 1_000, usize::MAX), 1_000);
        assert_eq!(h.position(), 1_000);
        // Clock behind the start, then standing still, then going back, then jumping ahead.
        assert_eq!(h.push(1, &msg("a"), 500), 1_001);
        assert_eq!(h.push(2, &msg("b"), 2_000), 2_000);
        assert_eq!(h.push(1, &msg("c"), 2_000), 2_001);
        assert_eq!(h.push(2, &msg("d"), 1_500), 2_002);
        assert_eq!(h.push(1, &msg("e"), 9_000), 9_000);
        assert_eq!(h.position(), 9_000);
        assert_eq!(since(&h, 1, 1_000), (vec![1_001, 2_001, 9_000], false));
    }

    #[test]
    fn count_eviction_raises_the_floor() {
        let mut h = History::new(cfg(2, 1_000_000, usize::MAX), 5);
        for now in [10, 20, 30] {
            h.push(1, &msg("x"), now);
        }
        assert_eq!((h.ids(), h.messages(), h.evicted()), (1, 2, 1));
        // 10 was forgotten: a client at 5 may have missed it.
        assert_eq!(since(&h, 1, 5), (vec![20, 30], true));
        assert_eq!(since(&h, 1, 9), (vec![20, 30], true));
        assert_eq!(since(&h, 1, 10), (vec![20, 30], false));
        assert_eq!(since(&h, 1, 25), (vec![30], false));
    }

    #[test]
    fn since_between_and_after_retained_seqs() {
        let mut h = History::new(cfg(8, 1_000_000, usize::MAX), 100);
        let mut out = Vec::new();
        h.push(1, &msg("a"), 200);
        h.push(1, &msg("b"), 300);
        h.push(1, &msg("c"), 400);
        let gap = h.since(1, 250, &mut out);
        assert!(!gap);
        assert_eq!(out, vec![(300, msg("b")), (400, msg("c"))]);
        assert_eq!(since(&h, 1, 300), (vec![400], false));
        // At or past the last seq: nothing, and no gap.
        assert_eq!(since(&h, 1, 400), (vec![], false));
        assert_eq!(since(&h, 1, 10_000), (vec![], false));
        // From the start, or before it (nothing of this epoch came before it): everything,
        // no gap.
        assert_eq!(since(&h, 1, 100), (vec![200, 300, 400], false));
        assert_eq!(since(&h, 1, 99), (vec![200, 300, 400], false));
        assert_eq!(since(&h, 1, 1), (vec![200, 300, 400], false));
        // Another epoch's position: everything, and a gap.
        assert_eq!(since(&h, 1, SEQ_UNKNOWN), (vec![200, 300, 400], true));
        // An id with no messages: no gap, except from another epoch.
        assert_eq!(since(&h, 2, 100), (vec![], false));
        assert_eq!(since(&h, 2, 1), (vec![], false));
        assert_eq!(since(&h, 2, SEQ_UNKNOWN), (vec![], true));
    }

    /// `/poll/5?since=0` once 5 has had its only message: that message and no gap (it was
    /// answered with a gap when the start of the history meant "unknown before this").
    #[test]
    fn since_zero_is_the_beginning_not_a_gap() {
        let mut h = History::new(cfg(32, 120_000_000, usize::MAX), 1_700_000_000_000_000);
        let seq = h.push(5, &msg("only"), 1_700_000_000_000_500);
        assert_eq!(since(&h, 5, 1), (vec![seq], false));
        // Once something of the id is forgotten, "from the beginning" has a gap.
        h.expire(seq + 120_000_001);
        assert_eq!(since(&h, 5, 1), (vec![], true));
    }

    #[test]
    fn age_expiry_forgets_the_old_without_counting_evictions() {
        let mut h = History::new(cfg(8, 100, usize::MAX), 0);
        h.push(1, &msg("a"), 1_000);
        h.push(2, &msg("b"), 1_050);
        h.push(1, &msg("c"), 1_080);
        h.expire(1_100); // 1_000 + 100 == 1_100: still kept.
        assert_eq!(h.messages(), 3);
        h.expire(1_101);
        assert_eq!((h.ids(), h.messages(), h.evicted()), (2, 2, 0));
        assert_eq!(since(&h, 1, 1), (vec![1_080], true));
        assert_eq!(since(&h, 1, 1_000), (vec![1_080], false));
        h.expire(10_000);
        assert_eq!(
            (h.ids(), h.messages(), h.bytes(), h.evicted()),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn horizon_covers_removed_entries() {
        let mut h = History::new(cfg(8, 100, usize::MAX), 0);
        h.push(1, &msg("a"), 1_000);
        h.push(2, &msg("b"), 1_050);
        h.expire(1_120); // Id 1 is removed; horizon = 1_000.
        assert_eq!(h.ids(), 1);
        assert_eq!(since(&h, 1, 999), (vec![], true));
        assert_eq!(since(&h, 1, 1_000), (vec![], false));
        // The horizon is shard-wide: an id that never had a message is unknown below it too.
        assert_eq!(since(&h, 3, 999), (vec![], true));
        assert_eq!(since(&h, 3, 1_000), (vec![], false));
        // Id 2's entry has its own floor (0: nothing forgotten, shard started at 0).
        assert_eq!(since(&h, 2, 500), (vec![1_050], false));
        // A new entry for id 1 inherits the horizon as its floor.
        h.push(1, &msg("c"), 1_130);
        assert_eq!(since(&h, 1, 999), (vec![1_130], true));
        assert_eq!(since(&h, 1, 1_000), (vec![1_130], false));
    }

    #[test]
    fn bytes_cap_forgets_the_shards_oldest() {
        let one = message_bytes(10);
        let mut h = History::new(cfg(8, 1_000_000, 2 * ID_OVERHEAD_BYTES + 3 * one), 0);
        let ten: Arc<[u8]> = Arc::from(&[7u8; 10][..]);
        h.push(1, &ten, 10);
        h.push(2, &ten, 20);
        h.push(1, &ten, 30);
        assert_eq!(h.bytes(), 2 * ID_OVERHEAD_BYTES + 3 * one);
        assert_eq!(h.evicted(), 0);
        h.push(2, &ten, 40); // Over by one message: 10 (id 1) goes.
        assert_eq!((h.ids(), h.messages(), h.evicted()), (2, 3, 1));
        assert_eq!(since(&h, 1, 1), (vec![30], true));
        assert_eq!(since(&h, 1, 10), (vec![30], false));
        assert_eq!(since(&h, 2, 1), (vec![20, 40], false));
        // Two more for id 2: 20 (id 2) and then 30 (id 1, its last: entry removed) go.
        h.push(2, &ten, 50);
        h.push(2, &ten, 60);
        assert_eq!((h.ids(), h.messages(), h.evicted()), (1, 3, 3));
        assert_eq!(since(&h, 1, 29), (vec![], true));
        assert_eq!(since(&h, 1, 30), (vec![], false));
        assert_eq!(since(&h, 2, 20), (vec![40, 50, 60], false));
    }

    #[test]
    fn a_message_over_the_cap_is_forgotten_at_once() {
        let mut h = History::new(cfg(8, 1_000_000, 100), 0);
        let seq = h.push(1, &Arc::from(&[0u8; 200][..]), 10);
        assert_eq!(seq, 10);
        assert_eq!(
            (h.ids(), h.messages(), h.bytes(), h.evicted()),
            (0, 0, 0, 1)
        );
        assert_eq!(since(&h, 1, 9), (vec![], true));
        assert_eq!(since(&h, 1, 10), (vec![], false));
    }

    #[test]
    fn bytes_are_accounted() {
        let mut h = History::new(cfg(8, 100, usize::MAX), 0);
        h.push(1, &msg(""), 10);
        assert_eq!(h.bytes(), ID_OVERHEAD_BYTES + message_bytes(0));
        assert_eq!(message_bytes(0), 56);
        assert_eq!(message_bytes(16), 72);
        assert_eq!(message_bytes(17), 88);
        h.push(1, &msg("abc"), 20);
        h.push(2, &msg("abcd"), 30);
        assert_eq!(
            h.bytes(),
            2 * ID_OVERHEAD_BYTES + message_bytes(0) + message_bytes(3) + message_bytes(4)
        );
        h.expire(1_000);
        assert_eq!(h.bytes(), 0);
    }

    #[test]
    fn history_off_assigns_seqs_and_answers_conservatively() {
        let mut h = History::new(cfg(0, 1_000, usize::MAX), 100);
        assert_eq!(since(&h, 1, 100), (vec![], false));
        assert_eq!(since(&h, 1, 99), (vec![], false));
        assert_eq!(since(&h, 1, SEQ_UNKNOWN), (vec![], true));
        assert_eq!(h.push(1, &msg("a"), 200), 200);
        assert_eq!(h.push(1, &msg("b"), 150), 201);
        assert_eq!(
            (h.ids(), h.messages(), h.bytes(), h.evicted()),
            (0, 0, 0, 0)
        );
        assert_eq!(since(&h, 1, 200), (vec![], true));
        assert_eq!(since(&h, 2, 200), (vec![], true));
        assert_eq!(since(&h, 2, 201), (vec![], false));
    }

    #[test]
    fn age_queue_stays_bounded_under_count_eviction() {
        let mut h = History::new(cfg(1, u64::MAX, usize::MAX), 0);
        for now in 1..10_000 {
            h.push(now % 3, &msg("x"), now);
            assert!(h.age.len() <= 2 * h.messages() + STALE_SLACK + 1);
        }
        assert_eq!(h.messages(), 3);
        assert_eq!(h.evicted(), 9_999 - 3);
    }

    #[test]
    fn memory_is_given_back() {
        let mut h = History::new(cfg(4, 10, usize::MAX), 0);
        for id in 0..10_000 {
            h.push(id, &msg("x"), 100);
        }
        // A burst runs ahead of the clock: seqs 100..10_100.
        assert_eq!(h.position(), 10_099);
        h.expire(100_000);
        assert_eq!((h.ids(), h.messages(), h.bytes()), (0, 0, 0));
        assert!(
            h.entries.capacity() <= 64 + 64,
            "map kept {}",
            h.entries.capacity()
        );
        assert!(h.age.capacity() <= 64, "queue kept {}", h.age.capacity());
    }

    /// The reference: every push with its fate, and the limits applied by brute force.
    struct Model {
        cfg: HistoryConfig,
        start: u64,
        last_seq: u64,
        /// In push order, which is seq order: (id, seq, payload, retained).
        pushed: Vec<(Id, u64, Arc<[u8]>, bool)>,
        evicted: u64,
    }

    impl Model {
        fn retained(&self) -> impl Iterator<Item = &(Id, u64, Arc<[u8]>, bool)> {
            self.pushed.iter().filter(|m| m.3)
        }

        fn ids(&self) -> usize {
            let mut ids: Vec<Id> = self.retained().map(|m| m.0).collect();
            ids.sort_unstable();
            ids.dedup();
            ids.len()
        }

        fn bytes(&self) -> usize {
            self.retained()
                .map(|m| message_bytes(m.2.len()))
                .sum::<usize>()
                + self.ids() * ID_OVERHEAD_BYTES
        }

        fn push(&mut self, id: Id, payload: Arc<[u8]>, now: u64) -> u64 {
            let seq = now.max(self.last_seq + 1);
            self.last_seq = seq;
            let on = self.cfg.messages_max > 0;
            self.pushed.push((id, seq, payload, on));
            if !on {
                return seq;
            }
            let of_id: Vec<usize> = (0..self.pushed.len())
                .filter(|&i| self.pushed[i].3 && self.pushed[i].0 == id)
                .collect();
            if of_id.len() > self.cfg.messages_max {
                self.pushed[of_id[0]].3 = false;
                self.evicted += 1;
            }
            while self.bytes() > self.cfg.bytes_max {
                let oldest = self.pushed.iter().position(|m| m.3).unwrap();
                self.pushed[oldest].3 = false;
                self.evicted += 1;
            }
            seq
        }

        fn expire(&mut self, now: u64) {
            for m in &mut self.pushed {
                if m.1.saturating_add(self.cfg.age_us) < now {
                    m.3 = false;
                }
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push {
            id: Id,
            len: usize,
            dt: i64,
        },
        Expire {
            dt: i64,
        },
        Since {
            id: Id,
            at: prop::sample::Index,
            delta: i64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..4u64, 0..40usize, -3..10i64).prop_map(|(id, len, dt)| Op::Push { id, len, dt }),
            1 => (0..40i64).prop_map(|dt| Op::Expire { dt }),
            4 => (0..5u64, any::<prop::sample::Index>(), -2..=2i64)
                .prop_map(|(id, at, delta)| Op::Since { id, at, delta }),
        ]
    }

    fn config() -> impl Strategy<Value = HistoryConfig> {
        (
            0..5usize,
            0..60u64,
            prop_oneof![0..1_200usize, Just(usize::MAX)],
        )
            .prop_map(|(messages_max, age_us, bytes_max)| cfg(messages_max, age_us, bytes_max))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Against the model: the counters agree, `since` returns exactly the retained
        /// messages after `s` in order (none twice, none skipped), and reports a gap whenever
        /// a message of the id after `s` is not returned or `s` is before the start.
        #[test]
        fn since_is_exact_and_gaps_are_never_missed(
            cfg in config(),
            ops in prop::collection::vec(op(), 0..120),
        ) {
            let start = 1_000u64;
            let mut now = start as i64;
            let mut h = History::new(cfg, start);
            let mut model = Model { cfg, start, last_seq: start, pushed: Vec::new(), evicted: 0 };
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Push { id, len, dt } => {
                        now = (now + dt).max(0);
                        let payload: Arc<[u8]> = vec![n as u8; len].into();
                        let seq = h.push(id, &payload, now as u64);
                        prop_assert_eq!(seq, model.push(id, payload, now as u64));
                    }
                    Op::Expire { dt } => {
                        now += dt;
                        h.expire(now as u64);
                        model.expire(now as u64);
                    }
                    Op::Since { id, at, delta } => {
                        let mut points = vec![SEQ_UNKNOWN, model.start, h.position()];
                        points.extend(model.pushed.iter().map(|m| m.1));
                        let s = at.get(&points).saturating_add_signed(delta);
                        let mut out = Vec::new();
                        let gap = h.since(id, s, &mut out);
                        let expected: Vec<(u64, Arc<[u8]>)> = model
                            .retained()
                            .filter(|m| m.0 == id && m.1 > s)
                            .map(|m| (m.1, Arc::clone(&m.2)))
                            .collect();
                        prop_assert_eq!(&out, &expected);
                        let missed = model.pushed.iter().any(|m| m.0 == id && m.1 > s && !m.3);
                        if missed || s == SEQ_UNKNOWN {
                            prop_assert!(gap, "gap missed for id {} since {}", id, s);
                        }
                        let forgotten = model.pushed.iter().any(|m| !m.3);
                        if s == SEQ_UNKNOWN {
                            // Checked above.
                        } else if cfg.messages_max == 0 {
                            prop_assert_eq!(gap, s.max(model.start) < h.position());
                        } else if s >= h.position() {
                            prop_assert!(!gap, "gap at the position for id {}", id);
                        } else if !forgotten {
                            // Every message of this epoch is retained: no position of it,
                            // however early (since=0), has missed anything.
                            prop_assert!(!gap, "false gap for id {} since {}", id, s);
                        }
                    }
                }
                prop_assert_eq!(h.position(), model.last_seq);
                prop_assert_eq!(h.messages(), model.retained().count());
                prop_assert_eq!(h.ids(), model.ids());
                prop_assert_eq!(h.bytes(), model.bytes());
                prop_assert_eq!(h.evicted(), model.evicted);
                prop_assert!(h.age.len() <= 2 * h.messages() + STALE_SLACK + 1);
            }
        }
    }
}

/// [`History::export`] and [`History::import`]: a restart keeps every answer.
#[cfg(test)]
mod restart_tests {
    use super::*;
    use crate::shard_of;
    use proptest::prelude::*;

    fn cfg(messages_max: usize, age_us: u64, bytes_max: usize) -> HistoryConfig {
        HistoryConfig {
            messages_max,
            age_us,
            bytes_max,
        }
    }

    fn msg(text: &str) -> Arc<[u8]> {
        Arc::from(text.as_bytes())
    }

    fn answer(h: &History, id: Id, since: u64) -> (Vec<Message>, bool) {
        let mut out = Vec::new();
        let gap = h.since(id, since, &mut out);
        (out, gap)
    }

    /// Every position worth asking about: unknown, 0, each shard's start and position, every
    /// seq pushed, and their neighbours.
    fn points(seqs: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let mut points = vec![SEQ_UNKNOWN, 1];
        for seq in seqs {
            points.extend([seq.saturating_sub(1), seq, seq + 1]);
        }
        points.sort_unstable();
        points.dedup();
        points
    }

    #[test]
    fn a_restored_shard_answers_as_before_and_numbers_past_it() {
        let mut h = History::new(cfg(2, 1_000_000, usize::MAX), 100);
        let a = h.push(1, &msg("a"), 200);
        h.push(1, &msg("b"), 300);
        h.push(1, &msg("c"), 400); // a is forgotten: floor 200
        h.push(2, &msg("d"), 500);
        let saved = h.export();
        assert_eq!(saved.entries.len(), 2);
        assert_eq!(Saved::check_all(std::slice::from_ref(&saved)), Ok(()));
        let mut back = History::import(h.cfg, std::slice::from_ref(&saved), |_| true);
        assert_eq!(back.export(), saved);
        for id in 0..3 {
            for s in points([100, a, 300, 400, 500]) {
                assert_eq!(answer(&back, id, s), answer(&h, id, s), "id {id} since {s}");
            }
        }
        assert_eq!(
            (back.ids(), back.messages(), back.bytes(), back.position()),
            (h.ids(), h.messages(), h.bytes(), h.position())
        );
        // The clock went back across the restart: the next seq is still above all restored.
        assert_eq!(back.push(2, &msg("e"), 50), 501);
        // A shard that owns neither id still numbers past every restored position.
        let empty = History::import(h.cfg, &[saved], |_| false);
        assert_eq!((empty.ids(), empty.position()), (0, 500));
        assert_eq!(answer(&empty, 7, 500), (vec![], false));
    }

    #[test]
    fn tighter_limits_on_import_forget_the_oldest_and_say_so() {
        let mut h = History::new(cfg(4, 1_000_000, usize::MAX), 100);
        for now in [200, 300, 400] {
            h.push(1, &msg("x"), now);
        }
        let back = History::import(cfg(1, 1_000_000, usize::MAX), &[h.export()], |_| true);
        assert_eq!((back.messages(), back.evicted()), (1, 2));
        assert!(answer(&back, 1, 200).1);
        assert_eq!(answer(&back, 1, 300), (vec![(400, msg("x"))], false));
        // History turned off: nothing kept, every earlier position is a gap.
        let off = History::import(cfg(0, 1_000_000, usize::MAX), &[h.export()], |_| true);
        assert_eq!((off.messages(), off.position()), (0, 400));
        assert!(answer(&off, 1, 300).1);
        assert!(!answer(&off, 1, 400).1);
    }

    #[test]
    fn bad_saved_histories_are_named() {
        let good = Saved {
            start: 10,
            last_seq: 30,
            horizon: 10,
            entries: vec![SavedEntry {
                id: 1,
                floor: 10,
                messages: vec![(20, msg("a")), (30, msg("b"))],
            }],
        };
        assert_eq!(Saved::check_all(std::slice::from_ref(&good)), Ok(()));
        let e = Saved::check_all(&[good.clone(), good.clone()]).unwrap_err();
        assert!(e.contains("id 1 saved twice"), "{e}");
        let mut bad = good.clone();
        bad.entries[0].messages.reverse();
        assert!(Saved::check_all(&[bad])
            .unwrap_err()
            .contains("out of order"));
        let mut bad = good.clone();
        bad.horizon = 31;
        assert!(Saved::check_all(&[bad]).is_err());
        let mut bad = good;
        bad.entries[0].messages.clear();
        assert!(Saved::check_all(&[bad]).is_err());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push { id: Id, len: usize, dt: i64 },
        Expire { dt: i64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..6u64, 0..40usize, -3..10i64).prop_map(|(id, len, dt)| Op::Push { id, len, dt }),
            1 => (0..40i64).prop_map(|dt| Op::Expire { dt }),
        ]
    }

    fn config() -> impl Strategy<Value = HistoryConfig> {
        (
            0..5usize,
            0..60u64,
            prop_oneof![0..1_200usize, Just(usize::MAX)],
        )
            .prop_map(|(messages_max, age_us, bytes_max)| cfg(messages_max, age_us, bytes_max))
    }

    /// Runs `ops` on `shards` histories started a little apart, each id on its owner; returns
    /// them, every seq pushed and the clock at the end.
    fn run(cfg: HistoryConfig, shards: usize, ops: &[Op]) -> (Vec<History>, Vec<u64>, i64) {
        let mut hs: Vec<History> = (0..shards)
            .map(|n| History::new(cfg, 1_000 + 3 * n as u64))
            .collect();
        let (mut now, mut seqs) = (1_000i64, Vec::new());
        for (n, op) in ops.iter().enumerate() {
            match *op {
                Op::Push { id, len, dt } => {
                    now = (now + dt).max(0);
                    let payload: Arc<[u8]> = vec![n as u8; len].into();
                    seqs.push(hs[shard_of(id, shards)].push(id, &payload, now as u64));
                }
                Op::Expire { dt } => {
                    now += dt;
                    hs.iter_mut().for_each(|h| h.expire(now as u64));
                }
            }
        }
        (hs, seqs, now)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        /// One shard out, one shard in: every `since` answer, counter and position is the
        /// same, the export of the import is the export, and both go on alike.
        #[test]
        fn export_then_import_is_the_same_history(
            cfg in config(),
            ops in prop::collection::vec(op(), 0..100),
            more in prop::collection::vec(op(), 0..20),
        ) {
            let (mut hs, seqs, mut now) = run(cfg, 1, &ops);
            let mut h = hs.remove(0);
            let saved = h.export();
            prop_assert_eq!(Saved::check_all(std::slice::from_ref(&saved)), Ok(()));
            let mut back = History::import(cfg, std::slice::from_ref(&saved), |_| true);
            let mut export = back.export();
            prop_assert_eq!(&export, &saved);
            let mut all = points(seqs.iter().copied().chain([h.start, h.position()]));
            for (n, op) in more.iter().enumerate() {
                for h in [&mut h, &mut back] {
                    match *op {
                        Op::Push { id, len, dt } => {
                            let payload: Arc<[u8]> = vec![n as u8; len].into();
                            let seq = h.push(id, &payload, (now + dt).max(0) as u64);
                            all.extend([seq, seq + 1]);
                        }
                        Op::Expire { dt } => h.expire((now + dt) as u64),
                    }
                }
                let (Op::Push { dt, .. } | Op::Expire { dt }) = *op;
                now = (now + dt).max(0);
            }
            for id in 0..7 {
                for &s in &all {
                    prop_assert_eq!(answer(&back, id, s), answer(&h, id, s), "id {} since {}", id, s);
                }
            }
            prop_assert_eq!(
                (back.ids(), back.messages(), back.bytes(), back.position()),
                (h.ids(), h.messages(), h.bytes(), h.position())
            );
            export = back.export();
            prop_assert_eq!(export, h.export());
        }

        /// `shards` shards out, `into` shards in (the worker count changed): each id's new
        /// owner hands back what its old owner did, or less with a gap; never misses a gap;
        /// numbers past every restored seq; and adds no gap while nothing was forgotten.
        #[test]
        fn a_changed_worker_count_misses_no_gap(
            cfg in config(),
            shards in 1..4usize,
            into in 1..4usize,
            ops in prop::collection::vec(op(), 0..100),
        ) {
            let (hs, seqs, _) = run(cfg, shards, &ops);
            let saved: Vec<Saved> = hs.iter().map(History::export).collect();
            prop_assert_eq!(Saved::check_all(&saved), Ok(()));
            let mut back: Vec<History> = (0..into)
                .map(|n| History::import(cfg, &saved, |id| shard_of(id, into) == n))
                .collect();
            let forgot = cfg.messages_max == 0
                || hs.iter().any(|h| h.evicted() > 0 || h.horizon > h.start
                    || h.entries.values().any(|e| e.floor > h.start));
            let all = points(seqs.iter().copied().chain(hs.iter().map(|h| h.start)));
            for id in 0..7 {
                let (old, new) = (&hs[shard_of(id, shards)], &back[shard_of(id, into)]);
                for &s in &all {
                    let (was, was_gap) = answer(old, id, s);
                    let (now, gap) = answer(new, id, s);
                    prop_assert!(was.ends_with(&now), "id {} since {}", id, s);
                    if was_gap || now.len() < was.len() {
                        prop_assert!(gap, "gap missed: id {} since {}", id, s);
                    }
                    if !forgot && cfg.bytes_max == usize::MAX {
                        prop_assert_eq!(gap, was_gap, "needless gap: id {} since {}", id, s);
                    }
                }
            }
            let last = seqs.iter().copied().max().unwrap_or(0);
            for h in &mut back {
                prop_assert!(h.push(99, &msg("next"), 0) > last);
            }
        }
    }
}
