//! Latency histograms and their percentiles, in microseconds: floodtest's delivery latency and
//! resumetest's time to resume. A histogram costs the same however many values it holds, and
//! histograms of several processes add up exactly (floodtest sends its children's to the parent).

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency recorded, in microseconds: an hour. Larger values are recorded as this.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// A histogram of microseconds, 1 us to an hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// Percentiles of a histogram in microseconds (the field names are the tools' JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    /// Rounded to 0.1 us.
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    /// All zero for an empty histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    /// `p50=0.123ms p90=... max=...` (floodtest's per-second line); `none` when empty.
    pub fn human(&self) -> String {
        if self.count == 0 {
            return "none".to_string();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "p50={:.3}ms p90={:.3}ms p99={:.3}ms p99.9={:.3}ms max={:.3}ms",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_data() {
        // 1..=1000 us once each: every percentile is a value below 2048, held exactly.
        let mut h = new_histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(
            p,
            Percentiles {
                count: 1000,
                mean: 500.5,
                p50: 500,
                p90: 900,
                p99: 990,
                p999: 999,
                max: 1000,
            }
        );
        assert_eq!(
            p.human(),
            "p50=0.500ms p90=0.900ms p99=0.990ms p99.9=0.999ms max=1.000ms"
        );
    }

    #[test]
    fn large_values_keep_three_digits_and_saturate_at_the_bound() {
        let mut h = new_histogram();
        h.record(123_456).unwrap();
        let p = Percentiles::of(&h);
        assert!(p.p50.abs_diff(123_456) <= 123, "{p:?}");
        h.saturating_record(u64::MAX);
        assert!(Percentiles::of(&h).max.abs_diff(LATENCY_MAX_US) <= LATENCY_MAX_US / 1000);
    }

    #[test]
    fn histograms_add_up() {
        let (mut a, mut b) = (new_histogram(), new_histogram());
        (1..=500).for_each(|v| a.record(v).unwrap());
        (501..=1000).for_each(|v| b.record(v).unwrap());
        a.add(&b).unwrap();
        assert_eq!(Percentiles::of(&a).p90, 900);
    }

    #[test]
    fn empty_is_zero_and_none() {
        let p = Percentiles::of(&new_histogram());
        assert_eq!(p, Percentiles::default());
        assert_eq!(p.human(), "none");
    }
}
