//! The delivery check for one id: the publisher numbers the messages of each id 1, 2, 3, ...
//! (body `<id>:<n>`), and a subscriber must see every n exactly once, in order, across all its
//! reconnections. Pure: no I/O, no time. Its memory is bounded: at most [`MISSING_MAX`]
//! skipped numbers are remembered (a skipped number still missing when older ones are forgotten
//! is counted then), so a day-long run costs what a minute does.

use std::collections::BTreeMap;

use serde::Serialize;

/// Counts for one id (or, summed, for the run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Distinct messages received (duplicates not counted).
    pub received: u64,
    /// Messages skipped with no gap notice before the next message, never received.
    pub lost: u64,
    /// Messages received again after they had been received.
    pub duplicated: u64,
    /// Messages that arrived after a later one (counted in `received`, not in `lost`).
    pub reordered: u64,
    /// `event: gap` notices.
    pub gaps: u64,
    /// Messages skipped after a gap notice (announced losses, allowed by the resume model).
    pub gap_skipped: u64,
    /// Messages whose publish failed, so they were never expected (not in `lost`).
    pub not_published: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.received += o.received;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.gaps += o.gaps;
        self.gap_skipped += o.gap_skipped;
        self.not_published += o.not_published;
    }
}

/// Skipped numbers remembered per id, in case they arrive late (reordered); past this the
/// oldest is counted as lost (or announced) for good.
pub const MISSING_MAX: usize = 1024;

#[derive(Clone, Debug)]
pub struct Checker {
    /// The next n expected.
    next: u64,
    /// A gap notice arrived since the last message: the next skip is announced.
    gap_pending: bool,
    /// Skipped numbers not (yet) received, and whether a gap notice announced each.
    missing: BTreeMap<u64, bool>,
    /// Entries of `missing` with no gap notice (`false`).
    missing_unannounced: u64,
    counts: Counts,
}

impl Checker {
    /// A subscriber that was streaming before message `first` was published: every n from
    /// `first` on must arrive.
    pub fn expecting(first: u64) -> Self {
        Checker {
            next: first.max(1),
            gap_pending: false,
            missing: BTreeMap::new(),
            missing_unannounced: 0,
            counts: Counts::default(),
        }
    }

    /// The highest n such that every n up to it was received or skipped (what a waiting
    /// caller compares with the last n published).
    pub fn last(&self) -> u64 {
        self.next.saturating_sub(1)
    }

    /// Counts so far, for progress lines: `lost` holds the skipped numbers not (yet)
    /// received and not announced, which a late arrival can still take back.
    pub fn progress(&self) -> Counts {
        Counts {
            lost: self.counts.lost + self.missing_unannounced,
            ..self.counts
        }
    }

    fn insert_missing(&mut self, n: u64, announced: bool) {
        if self.missing.insert(n, announced) == Some(false) {
            self.missing_unannounced -= 1;
        }
        if !announced {
            self.missing_unannounced += 1;
        }
        while self.missing.len() > MISSING_MAX {
            let (_, announced) = self.missing.pop_first().expect("not empty");
            self.count_missing(announced);
        }
    }

    /// One skipped number given up for good.
    fn count_missing(&mut self, announced: bool) {
        if announced {
            self.counts.gap_skipped += 1;
        } else {
            self.missing_unannounced -= 1;
            self.counts.lost += 1;
        }
    }

    pub fn gap(&mut self) {
        self.counts.gaps += 1;
        self.gap_pending = true;
    }

    pub fn message(&mut self, n: u64) {
        if n >= self.next {
            let announced = std::mem::take(&mut self.gap_pending);
            // Only the newest MISSING_MAX of a huge skip are remembered.
            let from = self.next.max(n.saturating_sub(MISSING_MAX as u64));
            self.count_missing_new(announced, from - self.next);
            for skipped in from..n {
                self.insert_missing(skipped, announced);
            }
            self.next = n + 1;
            self.counts.received += 1;
        } else if let Some(announced) = self.missing.remove(&n) {
            if !announced {
                self.missing_unannounced -= 1;
            }
            self.counts.received += 1;
            self.counts.reordered += 1;
        } else {
            self.counts.duplicated += 1;
        }
    }

    /// `count` skipped numbers counted at once, never remembered.
    fn count_missing_new(&mut self, announced: bool, count: u64) {
        if announced {
            self.counts.gap_skipped += count;
        } else {
            self.counts.lost += count;
        }
    }

    /// Ends the check: `published` is the last n published for this id, `failed` the numbers
    /// whose publish failed. Everything up to `published` not received is lost (or announced).
    pub fn finish(mut self, published: u64, failed: &[u64]) -> Counts {
        let announced = std::mem::take(&mut self.gap_pending);
        let tail = self.next..=published;
        let mut tail_count = (published + 1).saturating_sub(self.next);
        for n in failed {
            if tail.contains(n) {
                tail_count -= 1;
                self.counts.not_published += 1;
            } else if self.missing.remove(n).is_some() {
                self.counts.not_published += 1;
            }
        }
        self.count_missing_new(announced, tail_count);
        for announced in std::mem::take(&mut self.missing).into_values() {
            self.count_missing_new(announced, 1);
        }
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mut c: Checker, steps: &[Option<u64>], published: u64, failed: &[u64]) -> Counts {
        for step in steps {
            match step {
                Some(n) => c.message(*n),
                None => c.gap(),
            }
        }
        c.finish(published, failed)
    }

    fn counts(received: u64, lost: u64, duplicated: u64) -> Counts {
        Counts {
            received,
            lost,
            duplicated,
            ..Counts::default()
        }
    }

    #[test]
    fn in_order_exactly_once() {
        let all: Vec<_> = (1..=5).map(Some).collect();
        assert_eq!(run(Checker::expecting(1), &all, 5, &[]), counts(5, 0, 0));
    }

    #[test]
    fn losses_duplicates_and_the_tail() {
        // 3 skipped, 4 twice, 6..=7 never arrive.
        let steps = [Some(1), Some(2), Some(4), Some(4), Some(5)];
        assert_eq!(run(Checker::expecting(1), &steps, 7, &[]), counts(4, 3, 1));
        // The first message missing counts; so does everything when nothing arrived.
        assert_eq!(
            run(Checker::expecting(1), &[Some(2)], 2, &[]),
            counts(1, 1, 0)
        );
        assert_eq!(run(Checker::expecting(1), &[], 3, &[]), counts(0, 3, 0));
        // Starting later: what came before is not expected.
        assert_eq!(
            run(Checker::expecting(5), &[Some(5), Some(6)], 6, &[]),
            counts(2, 0, 0)
        );
    }

    #[test]
    fn late_messages_are_reordered_not_lost() {
        let steps = [Some(1), Some(3), Some(2), Some(2)];
        let c = run(Checker::expecting(1), &steps, 3, &[]);
        assert_eq!(
            c,
            Counts {
                reordered: 1,
                ..counts(3, 0, 1)
            }
        );
    }

    #[test]
    fn gaps_announce_the_next_skip_only() {
        // The gap covers 2..=3; 5 is skipped without a notice.
        let steps = [Some(1), None, Some(4), Some(6)];
        let c = run(Checker::expecting(1), &steps, 6, &[]);
        assert_eq!(
            c,
            Counts {
                gaps: 1,
                gap_skipped: 2,
                ..counts(3, 1, 0)
            }
        );
        // A gap notice with no message after it covers the tail.
        let c = run(Checker::expecting(1), &[Some(1), None], 3, &[]);
        assert_eq!(
            c,
            Counts {
                gaps: 1,
                gap_skipped: 2,
                ..counts(1, 0, 0)
            }
        );
    }

    #[test]
    fn memory_is_bounded_and_progress_counts_what_is_missing() {
        let mut c = Checker::expecting(1);
        c.message(1);
        c.message(4); // 2, 3 missing
        assert_eq!(c.progress().lost, 2);
        c.message(2); // late: reordered, no longer missing
        assert_eq!(c.progress().lost, 1);
        assert_eq!(c.progress().reordered, 1);
        // A skip far larger than what is remembered: the oldest are counted at once.
        let far = 4 + 3 * MISSING_MAX as u64;
        c.message(far);
        assert!(c.missing.len() <= MISSING_MAX);
        assert_eq!(c.progress().lost, far - 1 - 3);
        c.gap();
        c.message(far + 2 * MISSING_MAX as u64); // announced: not lost
        assert!(c.missing.len() <= MISSING_MAX);
        let counts = c.finish(far + 2 * MISSING_MAX as u64 + 1, &[]);
        assert_eq!(counts.lost, far - 4 + 1);
        assert_eq!(counts.gap_skipped, 2 * MISSING_MAX as u64 - 1);
        assert_eq!(counts.received, 5);
    }

    #[test]
    fn failed_publishes_are_not_expected() {
        let steps = [Some(1), Some(3)];
        let c = run(Checker::expecting(1), &steps, 4, &[2, 4]);
        assert_eq!(
            c,
            Counts {
                not_published: 2,
                ..counts(2, 0, 0)
            }
        );
        assert_eq!(Checker::expecting(1).last(), 0);
        let mut k = Checker::expecting(1);
        k.message(1);
        k.message(2);
        assert_eq!(k.last(), 2);
    }
}
