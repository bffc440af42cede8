//! Clocks. The wall clock for what crosses processes: msggen stamps each message with it and
//! floodtest subtracts it on receipt (both on one machine), tokens expire by it, stats rows
//! carry it. Pacing uses the monotonic clock, as an argument: [`Schedule`] is pure.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (0 if the clock is set before it).
pub fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Seconds since the Unix epoch (0 if the clock is set before it).
pub fn epoch_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Evenly spaced events: event `j` (from 0) is due `j / rate` seconds after the start, so
/// however late a sender wakes, it catches up to the same total.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Events per second.
    rate: f64,
    /// Events in all; None = unbounded.
    limit: Option<u64>,
}

impl Schedule {
    /// `rate` must be positive and finite: a tool that means "as fast as possible" does not
    /// pace at all.
    pub fn new(rate: f64, limit: Option<u64>) -> Self {
        assert!(rate.is_finite() && rate > 0.0, "schedule rate {rate}");
        Schedule { rate, limit }
    }

    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// How many events are due `elapsed` after the start (event 0 is due at once).
    pub fn due(&self, elapsed: Duration) -> u64 {
        let due = ((elapsed.as_secs_f64() * self.rate) as u64).saturating_add(1);
        self.limit.map_or(due, |limit| due.min(limit))
    }

    /// When event `j` is due, after the start.
    pub fn at(&self, j: u64) -> Duration {
        Duration::from_secs_f64(j as f64 / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_schedule() {
        // The seed's 100 generators every 100 ms: 1000 msg/s.
        let s = Schedule::new(100.0 * 1000.0 / 100.0, None);
        assert_eq!(s.due(Duration::ZERO), 1);
        assert_eq!(s.due(Duration::from_millis(999)), 1000);
        assert_eq!(s.due(Duration::from_secs(10)), 10_001);
        assert_eq!(s.at(1000), Duration::from_secs(1));
        let bounded = Schedule::new(1000.0, Some(5));
        assert_eq!(bounded.due(Duration::from_secs(1)), 5);
        assert_eq!(bounded.limit(), Some(5));
    }

    #[test]
    fn due_and_at_agree() {
        // Event j is due from at(j) on (to within float rounding), at a rate that is not a
        // round number.
        let s = Schedule::new(333.0, None);
        let us = Duration::from_micros(1);
        for j in [1u64, 2, 3, 332, 333, 334, 99_999] {
            assert_eq!(s.due(s.at(j) + us), j + 1, "event {j}");
            assert_eq!(s.due(s.at(j) - us), j, "event {j}");
        }
        // A late wake-up sees every missed event due at once, never more than the limit.
        let s = Schedule::new(1e9, Some(7));
        assert_eq!(s.due(Duration::from_secs(3600 * 24 * 365)), 7);
    }

    #[test]
    #[should_panic(expected = "schedule rate")]
    fn a_zero_rate_is_refused() {
        Schedule::new(0.0, None);
    }

    #[test]
    fn wall_clock_units_agree() {
        let (s, us) = (epoch_s(), epoch_us());
        assert!(s > 1_700_000_000, "{s}"); // after November 2023
        assert!((us / 1_000_000).abs_diff(s) <= 1, "{us} us vs {s} s");
    }
}
