//! The worker's clocks, read once per loop iteration: milliseconds since start (deadlines,
//! timeouts) and the wall clock in microseconds (sequence numbers, token expiry), which
//! follows the monotonic clock from start so that one reading gives both.

use std::time::Instant;

pub struct Clock {
    start: Instant,
    /// The wall clock at `start`.
    start_unix_us: u64,
    now_ms: u64,
    unix_us: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Clock {
            start: Instant::now(),
            start_unix_us: unix_us,
            now_ms: 0,
            unix_us,
        }
    }

    /// Reads the clock, once per loop iteration.
    pub fn advance(&mut self) {
        let elapsed = self.start.elapsed();
        self.now_ms = elapsed.as_millis() as u64;
        self.unix_us = self.start_unix_us + elapsed.as_micros() as u64;
    }

    /// Milliseconds since the worker started, as of this iteration.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Microseconds since the Unix epoch, as of this iteration.
    pub fn unix_us(&self) -> u64 {
        self.unix_us
    }
}
