//! Resume admission: after a deploy or a crash, a node's clients come back at once, each with a
//! position to resume from (a replay, maybe a fetch from the cluster's stream). A worker admits
//! them at `--resume-rate` (its share, a token bucket refilled on the tick) so that live
//! delivery does not stall; the rest wait in line, in order, and are admitted as tokens come. A
//! line longer than [`WAIT_MAX_MS`] worth of tokens is full: a resume that finds it full is
//! refused (503 with Retry-After). Subscribes without a position are not counted: they cost a
//! login, not a replay.
//!
//! No I/O and no clock: the caller gives `now_ms` and carries out what comes back.

use std::collections::VecDeque;

/// The longest a resume may wait in line, ms: below the request timeout's default (10 s), as
/// a waiting request holds its connection.
pub const WAIT_MAX_MS: u64 = 5_000;
/// Tokens at most in the bucket: a quarter second of the rate (one tick), so that an admitted
/// burst is at most what the rate allows per tick.
const BURST_MS: u64 = 250;

/// What happens to a resume offered now.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer<T> {
    /// Admitted now: carry it out.
    Now(T),
    /// In line: it comes back from [`Admission::release`].
    Queued,
    /// The line is full: answer 503 + Retry-After.
    Refused(T),
}

/// One worker's resume admission (see the module doc). `T`: what waits (the request).
pub struct Admission<T> {
    /// Tokens per ms (the worker's share of `--resume-rate`); 0: no limit.
    rate_per_ms: f64,
    tokens: f64,
    burst: f64,
    last_ms: u64,
    line: VecDeque<T>,
    line_max: usize,
}

impl<T> Admission<T> {
    /// `rate_per_s` resumes a second for this worker; 0 admits everything.
    pub fn new(rate_per_s: u64, now_ms: u64) -> Admission<T> {
        let rate_per_ms = rate_per_s as f64 / 1000.0;
        let burst = (rate_per_ms * BURST_MS as f64).max(1.0);
        Admission {
            rate_per_ms,
            tokens: burst,
            burst,
            last_ms: now_ms,
            line: VecDeque::new(),
            line_max: (rate_per_ms * WAIT_MAX_MS as f64).ceil() as usize,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed as f64 * self.rate_per_ms).min(self.burst);
    }

    /// A resume arrives.
    pub fn offer(&mut self, now_ms: u64, item: T) -> Offer<T> {
        if self.rate_per_ms == 0.0 {
            return Offer::Now(item);
        }
        self.refill(now_ms);
        // Those in line go first.
        if self.line.is_empty() && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Offer::Now(item);
        }
        if self.line.len() >= self.line_max {
            return Offer::Refused(item);
        }
        self.line.push_back(item);
        Offer::Queued
    }

    /// The resumes in line admitted by now, oldest first, appended to `out`.
    pub fn release(&mut self, now_ms: u64, out: &mut Vec<T>) {
        self.refill(now_ms);
        while self.tokens >= 1.0 {
            let Some(item) = self.line.pop_front() else {
                break;
            };
            self.tokens -= 1.0;
            out.push(item);
        }
    }

    /// Resumes waiting in line.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.line.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_at_the_rate_in_order_and_the_rest_refused() {
        // 40 a second: 10 at once (a quarter second), then 10 per 250 ms; 200 may wait (5 s).
        let mut a = Admission::new(40, 0);
        let mut now = Vec::new();
        let mut refused = Vec::new();
        for n in 0..300 {
            match a.offer(0, n) {
                Offer::Now(n) => now.push(n),
                Offer::Queued => {}
                Offer::Refused(n) => refused.push(n),
            }
        }
        assert_eq!(now, (0..10).collect::<Vec<_>>());
        assert_eq!(a.waiting(), 200);
        assert_eq!(refused, (210..300).collect::<Vec<_>>());
        let mut out = Vec::new();
        a.release(100, &mut out);
        assert_eq!(out, [10, 11, 12, 13], "4 tokens in 100 ms");
        out.clear();
        a.release(5_100, &mut out);
        assert_eq!(out.len(), 10, "the bucket holds a quarter second at most");
        assert_eq!(out[0], 14);
        // A newcomer waits behind the line even with a token free.
        out.clear();
        a.release(5_200, &mut out);
        assert_eq!(a.offer(5_200, 999), Offer::Queued);
    }

    #[test]
    fn no_rate_admits_everything() {
        let mut a = Admission::new(0, 0);
        for n in 0..10_000 {
            assert_eq!(a.offer(0, n), Offer::Now(n));
        }
        let mut out = Vec::new();
        a.release(1, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_low_rate_still_admits_one() {
        let mut a = Admission::new(1, 0);
        assert_eq!(a.offer(0, 1), Offer::Now(1));
        assert_eq!(a.offer(0, 2), Offer::Queued);
        let mut out = Vec::new();
        a.release(999, &mut out);
        assert!(out.is_empty());
        a.release(1_000, &mut out);
        assert_eq!(out, [2]);
        assert_eq!(a.waiting(), 0);
    }
}
