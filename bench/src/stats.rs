//! Medians, percentiles and the few numbers a table row needs.

use std::time::Duration;

/// The seed of the order in which an interleaved benchmark calls its modules or stacks
/// (a new shuffle for each round or user), so that every run uses the same orders.
pub const ORDER_SEED: u64 = 13;

/// Latencies of one measured phase, in the order they finished.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<Duration>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: &Samples) {
        self.0.extend_from_slice(&other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p`-th percentile (0..=100), nearest rank; zero when empty.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn median(&self) -> Duration {
        self.percentile(50.0)
    }
}

/// The median of plain numbers (per-round throughputs, per-round differences).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A 95 % interval for the median of `values`, by bootstrap (2,000 resamples, a fixed seed
/// so a run's table is reproducible from its samples).
pub fn median_interval(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut medians: Vec<f64> = (0..2000)
        .map(|_| {
            let resample: Vec<f64> = (0..values.len())
                .map(|_| values[(next() % values.len() as u64) as usize])
                .collect();
            median(&resample)
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    (medians[50], medians[1949])
}

/// The differences `a − b`, in µs, of the pairs where both were measured.
pub fn paired_us(
    pairs: impl IntoIterator<Item = (Option<Duration>, Option<Duration>)>,
) -> Vec<f64> {
    pairs
        .into_iter()
        .filter_map(|(a, b)| Some((a?.as_nanos() as f64 - b?.as_nanos() as f64) / 1e3))
        .collect()
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let s = Samples((1..=100).map(Duration::from_millis).collect());
        assert_eq!(s.median(), Duration::from_millis(50));
        assert_eq!(s.percentile(99.0), Duration::from_millis(99));
        assert_eq!(s.percentile(100.0), Duration::from_millis(100));
        assert_eq!(Samples::default().median(), Duration::ZERO);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let us = |n| Some(Duration::from_micros(n));
        assert_eq!(
            paired_us([
                (us(900), us(1000)),
                (None, us(5)),
                (us(5), None),
                (us(30), us(10))
            ]),
            [-100.0, 20.0]
        );
        let (lo, hi) = median_interval(&(0..101).map(f64::from).collect::<Vec<_>>());
        assert!(
            lo < 50.0 && hi > 50.0 && lo > 30.0 && hi < 70.0,
            "{lo} {hi}"
        );
    }
}
