//! When a publisher sends a publish again: comet answers `503` with `Retry-After` while its
//! cluster cannot store a message (JetStream down or unreachable), and a publish whose
//! connection was lost may or may not have been stored. Either is sent again, with the same
//! `Idempotency-Key` (so the stream stores it once), after [`delay`]. Pure: the caller draws
//! the jitter and keeps the clock.

use std::time::Duration;

/// The first backoff step, doubled at each attempt up to [`BACKOFF_MAX`].
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How long to wait before attempt `attempt + 1` (`attempt` counts the tries made, from 1),
/// or `None` once `attempts_max` tries were made: the longer of the server's `Retry-After`
/// and an exponential backoff, stretched by `jitter` in `[0, 1)` by up to half, so that many
/// publishers told the same `Retry-After` do not come back at the same instant.
pub fn delay(
    attempt: u32,
    attempts_max: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Option<Duration> {
    if attempt >= attempts_max {
        return None;
    }
    let exp = attempt.saturating_sub(1).min(16);
    let backoff = BACKOFF_FIRST.saturating_mul(1 << exp).min(BACKOFF_MAX);
    let base = backoff.max(retry_after.unwrap_or(Duration::ZERO));
    Some(base.mul_f64(1.0 + jitter.clamp(0.0, 1.0) / 2.0))
}

/// Whether an answer's status means "send it again later": 503 (not stored now). Other
/// errors are final.
pub fn retryable(status: u16) -> bool {
    status == 503
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_and_honours_retry_after() {
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis());
        assert_eq!(ms(delay(1, 10, None, 0.0)), Some(100));
        assert_eq!(ms(delay(2, 10, None, 0.0)), Some(200));
        assert_eq!(ms(delay(4, 10, None, 0.0)), Some(800));
        assert_eq!(ms(delay(9, 10, None, 0.0)), Some(5_000), "capped");
        let after = Some(Duration::from_secs(1));
        assert_eq!(
            ms(delay(1, 10, after, 0.0)),
            Some(1_000),
            "Retry-After wins"
        );
        assert_eq!(
            ms(delay(9, 10, after, 0.0)),
            Some(5_000),
            "the backoff wins"
        );
        assert_eq!(
            ms(delay(1, 10, after, 0.999_999)),
            Some(1_499),
            "jitter: up to half"
        );
        assert_eq!(delay(10, 10, after, 0.0), None, "bounded");
        assert_eq!(delay(1, 0, None, 0.0), None, "retries off");
        assert!(retryable(503) && !retryable(400) && !retryable(200));
    }
}
