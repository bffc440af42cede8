//! Unit and property tests of `history.rs`.

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

#[test]
fn a_joined_history_records_stream_seqs_and_knows_nothing_before_the_join() {
    let mut h = History::joined(cfg(4, 1_000_000, usize::MAX), 100);
    assert_eq!(h.position(), 100);
    // Everything up to the join is unknown here: a gap, for an id with or without an entry.
    assert_eq!(since(&h, 7, 50), (vec![], true));
    assert_eq!(since(&h, 7, 100), (vec![], false));
    assert!(h.push_at(7, &msg("a"), 103));
    assert!(!h.push_at(7, &msg("again"), 103), "a repeat is dropped");
    assert!(
        !h.push_at(8, &msg("late"), 102),
        "below the position: a repeat"
    );
    h.advance(110); // other shards' messages: nothing of ours up to 110
    assert!(h.push_at(8, &msg("b"), 111));
    assert_eq!(since(&h, 7, 99), (vec![103], true));
    assert_eq!(since(&h, 7, 100), (vec![103], false));
    assert_eq!(
        since(&h, 7, 0),
        (vec![103], true),
        "from the beginning: before the join"
    );
    assert_eq!(since(&h, 8, 105), (vec![111], false));
    assert_eq!(h.position(), 111);
    h.advance(105); // never backwards
    assert_eq!(h.position(), 111);
    // Expiry by seq: 103 goes, 111 stays.
    h.expire_below(104);
    assert_eq!(since(&h, 7, 100), (vec![], true));
    assert_eq!(since(&h, 8, 100), (vec![111], false));
    // A stream that starts empty (comet starts it at seq 2): 0 and 1 are the beginning.
    let mut h = History::joined(cfg(4, 1_000_000, usize::MAX), 1);
    assert!(h.push_at(3, &msg("first"), 2));
    assert_eq!(since(&h, 3, 1), (vec![2], false));
}

#[derive(Clone, Debug)]
enum StreamOp {
    /// A message for `id`, `skip` seqs after the last (other shards' messages between).
    Push {
        id: Id,
        skip: u64,
        len: usize,
    },
    Advance {
        skip: u64,
    },
    Expire {
        back: u64,
    },
    Since {
        id: Id,
        at: prop::sample::Index,
        delta: i64,
    },
}

fn stream_op() -> impl Strategy<Value = StreamOp> {
    prop_oneof![
        6 => (0..4u64, 0..3u64, 0..40usize)
            .prop_map(|(id, skip, len)| StreamOp::Push { id, skip, len }),
        1 => (0..4u64).prop_map(|skip| StreamOp::Advance { skip }),
        1 => (0..30u64).prop_map(|back| StreamOp::Expire { back }),
        4 => (0..5u64, any::<prop::sample::Index>(), -2..=2i64)
            .prop_map(|(id, at, delta)| StreamOp::Since { id, at, delta }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// A history numbered by a stream: `since` returns the id's retained messages after `s`
    /// in order, and says gap whenever a message of the id after `s` is not returned, or `s`
    /// is before the join (the stream may have held anything then) or unknown; none at the
    /// position.
    #[test]
    fn a_stream_numbered_history_never_misses_a_gap(
        cfg in config(),
        joined in 1..20u64,
        ops in prop::collection::vec(stream_op(), 0..120),
    ) {
        let mut h = History::joined(cfg, joined);
        let mut seq = joined;
        let mut pushed: Vec<(Id, u64)> = Vec::new();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                StreamOp::Push { id, skip, len } => {
                    seq += 1 + skip;
                    let payload: Arc<[u8]> = vec![n as u8; len].into();
                    prop_assert!(h.push_at(id, &payload, seq));
                    prop_assert!(!h.push_at(id, &payload, seq));
                    pushed.push((id, seq));
                }
                StreamOp::Advance { skip } => {
                    seq += skip;
                    h.advance(seq);
                }
                StreamOp::Expire { back } => h.expire_below(seq.saturating_sub(back)),
                StreamOp::Since { id, at, delta } => {
                    let mut points = vec![SEQ_UNKNOWN, 1, joined, h.position()];
                    points.extend(pushed.iter().map(|p| p.1));
                    let s = at.get(&points).saturating_add_signed(delta);
                    let (out, gap) = since(&h, id, s);
                    prop_assert!(out.windows(2).all(|w| w[0] < w[1]));
                    prop_assert!(out.iter().all(|&q| q > s && pushed.contains(&(id, q))));
                    let missed = pushed.iter().any(|&(i, q)| i == id && q > s && !out.contains(&q));
                    if missed || s == SEQ_UNKNOWN || s < joined {
                        prop_assert!(gap, "gap missed for id {} since {}", id, s);
                    }
                    if s >= h.position() {
                        prop_assert!(!gap, "gap at the position for id {}", id);
                    }
                }
            }
            prop_assert_eq!(h.position(), seq);
        }
    }
}

/// [`History::export`] and [`History::import`]: a restart keeps every answer.
mod restart_tests {
    use super::*;
    use crate::shard_of;

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
