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
//! # Numbered by a stream (a cluster on JetStream)
//!
//! In a cluster whose backplane is a JetStream stream, a message's seq is its stream sequence,
//! given, not drawn from the clock: [`History::joined`] starts a history for a node that joins
//! a stream whose last sequence is `last_seq` (every message up to it is unknown here: the
//! horizon), [`History::push_at`] records a message with its stream seq (seqs arrive in stream
//! order; one at or below the position is a repeat and is dropped), and [`History::advance`]
//! moves the position to the stream's head once every message up to it has been routed (the
//! shard's ids had nothing in between). Age is then not readable from a seq: the caller
//! remembers which seq was the head when, and calls [`History::expire_below`]. The gap rule
//! is unchanged; a gap the memory cannot rule out may still be ruled out by the stream (the
//! caller asks it).
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

    /// A history for a node joining a stream whose last seq is `last_seq` (see "Numbered by a
    /// stream" in the module doc): the stream's seqs start above 1 (position 0 and 1 both mean
    /// "from the beginning"), everything up to `last_seq` is unknown here (`horizon`), and
    /// messages come with their seqs ([`History::push_at`]). Allocates nothing.
    pub fn joined(cfg: HistoryConfig, last_seq: u64) -> History {
        let mut h = History::new(cfg, SEQ_UNKNOWN + 1);
        h.last_seq = h.last_seq.max(last_seq);
        h.horizon = h.last_seq;
        h
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
        self.record(id, msg, seq);
        seq
    }

    /// Records a message for `id` numbered elsewhere (its stream seq), as [`History::push`]
    /// does; false, and nothing recorded, when `seq` is not above the position (a repeat).
    pub fn push_at(&mut self, id: Id, msg: &Arc<[u8]>, seq: u64) -> bool {
        if seq <= self.last_seq {
            return false;
        }
        self.record(id, msg, seq);
        true
    }

    /// Moves the position to `seq` (if above it) without a message: every message up to `seq`
    /// of the shard's ids has been recorded, so later ones are above it.
    pub fn advance(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    fn record(&mut self, id: Id, msg: &Arc<[u8]>, seq: u64) {
        self.last_seq = seq;
        if self.cfg.messages_max == 0 {
            return;
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
        if now_us > self.cfg.age_us {
            self.expire_below(now_us - self.cfg.age_us);
        }
    }

    /// Forgets every message with `seq < limit`, oldest first (a history numbered by a stream
    /// expires by the seq that was the head `age` ago), and gives back memory as
    /// [`History::expire`] does.
    pub fn expire_below(&mut self, limit: u64) {
        while let Some(seq) = self.oldest() {
            if seq >= limit {
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

    /// The limits it keeps.
    pub fn config(&self) -> HistoryConfig {
        self.cfg
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
#[path = "history_tests.rs"]
mod tests;
