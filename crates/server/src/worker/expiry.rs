//! Token expiry: a subscriber that subscribed with a token (`--auth-secret`) is ended at the
//! token's `exp`. The token is checked once, at subscribe time, and nothing of it is kept on
//! the connection: its slot stays 32 bytes. Each such connection has one entry here,
//! `(exp_s, slot, gen)` (16 bytes) in a min-heap; connections without a token cost nothing.
//!
//! An entry is not removed when its connection closes earlier (a heap has no cheap removal):
//! the loop checks an entry that comes due against the connection in its slot and drops it if
//! that is another one or is no longer subscribed. So that closed connections cannot make the
//! heap grow without bound (a client reconnecting often with long-lived tokens), the loop
//! compacts it once it has doubled since the last compaction: amortised O(1) per entry, and at
//! most twice the live entries plus `COMPACT_MIN`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Entries below which the heap is never compacted.
const COMPACT_MIN: usize = 1024;

pub struct Expiry {
    /// `(exp_s, slot, gen)`, soonest first.
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// The heap is compacted once it holds this many entries.
    compact_at: usize,
}

impl Default for Expiry {
    fn default() -> Expiry {
        Expiry {
            heap: BinaryHeap::new(),
            compact_at: COMPACT_MIN,
        }
    }
}

impl Expiry {
    /// The connection in `slot` (generation `gen`) is to end at `exp_s` (seconds since the
    /// Unix epoch; a token is expired from that second on).
    pub fn add(&mut self, slot: u32, gen: u32, exp_s: u64) {
        self.heap.push(Reverse((exp_s, slot, gen)));
    }

    /// The next entry due at `now_s`, as `(slot, gen, exp_s)`; the caller checks it still names
    /// a live subscriber.
    pub fn due(&mut self, now_s: u64) -> Option<(u32, u32, u64)> {
        let &Reverse((exp_s, slot, gen)) = self.heap.peek()?;
        if exp_s > now_s {
            return None;
        }
        self.heap.pop();
        Some((slot, gen, exp_s))
    }

    pub fn wants_compaction(&self) -> bool {
        self.heap.len() >= self.compact_at
    }

    /// Keeps the entries for which `live(slot, gen, exp_s)` holds.
    pub fn compact(&mut self, live: impl Fn(u32, u32, u64) -> bool) {
        self.heap
            .retain(|&Reverse((exp_s, slot, gen))| live(slot, gen, exp_s));
        self.compact_at = (2 * self.heap.len()).max(COMPACT_MIN);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_due_in_expiry_order_from_their_second_on() {
        let mut e = Expiry::default();
        e.add(1, 1, 30);
        e.add(2, 7, 10);
        e.add(3, 1, 20);
        e.add(4, 1, 20);
        assert_eq!(e.due(9), None);
        assert_eq!(e.due(10), Some((2, 7, 10)));
        assert_eq!(e.due(10), None);
        let mut at_20 = [e.due(25).unwrap(), e.due(25).unwrap()];
        at_20.sort();
        assert_eq!(at_20, [(3, 1, 20), (4, 1, 20)]);
        assert_eq!(e.due(29), None);
        assert_eq!(e.due(u64::MAX), Some((1, 1, 30)));
        assert_eq!(e.due(u64::MAX), None);
    }

    #[test]
    fn compaction_keeps_live_entries_and_bounds_the_heap() {
        let mut e = Expiry::default();
        // Connections come and go on a few slots, each with a token valid for an hour: only
        // the current generation of each slot is live.
        let slots = 10u32;
        let mut gens = vec![0u32; slots as usize];
        for i in 0..100_000u32 {
            let slot = i % slots;
            gens[slot as usize] += 1;
            e.add(slot, gens[slot as usize], 3600 + u64::from(i));
            if e.wants_compaction() {
                e.compact(|slot, gen, _| gens[slot as usize] == gen);
            }
            assert!(e.len() <= 2 * COMPACT_MIN, "{}", e.len());
        }
        e.compact(|slot, gen, _| gens[slot as usize] == gen);
        assert_eq!(e.len(), slots as usize);
        let mut due = Vec::new();
        while let Some((slot, gen, _)) = e.due(u64::MAX) {
            due.push((slot, gen));
        }
        due.sort();
        let live: Vec<(u32, u32)> = (0..slots).map(|s| (s, gens[s as usize])).collect();
        assert_eq!(due, live);
    }
}
