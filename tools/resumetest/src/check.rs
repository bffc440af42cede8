//! The delivery check for one id: the publisher numbers the messages of each id 1, 2, 3, ...
//! (body `<id>:<n>`), and a subscriber must see every n exactly once, in order, across all its
//! reconnections. Pure: no I/O, no time.

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

#[derive(Clone, Debug)]
pub struct Checker {
    /// The next n expected.
    next: u64,
    /// A gap notice arrived since the last message: the next skip is announced.
    gap_pending: bool,
    /// Skipped numbers not (yet) received, and whether a gap notice announced each.
    missing: BTreeMap<u64, bool>,
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
            counts: Counts::default(),
        }
    }

    /// The highest n such that every n up to it was received or skipped (what a waiting
    /// caller compares with the last n published).
    pub fn last(&self) -> u64 {
        self.next.saturating_sub(1)
    }

    pub fn gap(&mut self) {
        self.counts.gaps += 1;
        self.gap_pending = true;
    }

    pub fn message(&mut self, n: u64) {
        if n >= self.next {
            let announced = std::mem::take(&mut self.gap_pending);
            for skipped in self.next..n {
                self.missing.insert(skipped, announced);
            }
            self.next = n + 1;
            self.counts.received += 1;
        } else if self.missing.remove(&n).is_some() {
            self.counts.received += 1;
            self.counts.reordered += 1;
        } else {
            self.counts.duplicated += 1;
        }
    }

    /// Ends the check: `published` is the last n published for this id, `failed` the numbers
    /// whose publish failed. Everything up to `published` not received is lost (or announced).
    pub fn finish(mut self, published: u64, failed: &[u64]) -> Counts {
        let announced = std::mem::take(&mut self.gap_pending);
        for skipped in self.next..=published {
            self.missing.insert(skipped, announced);
        }
        for n in failed {
            if self.missing.remove(n).is_some() {
                self.counts.not_published += 1;
            }
        }
        for announced in self.missing.values() {
            if *announced {
                self.counts.gap_skipped += 1;
            } else {
                self.counts.lost += 1;
            }
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
