//! Histograms of fixed buckets held in atomics, for figures a shard publishes per batch.
//!
//! Recording is one bucket increment and one addition to the sum: no allocation, no lock, no
//! label formatting, so the shard thread records every batch. The gateway reads the buckets at
//! scrape time and writes them in Prometheus' text format (cumulative `le` buckets).

use std::sync::atomic::{AtomicU64, Ordering};

/// Commands per durable batch: powers of two up to 16,384 (a batch holds at most
/// `2 * batch_size_max - 1` commands; `batch_size_max` is 8,189 by default).
pub const BATCH_SIZE_BOUNDS: [u64; 15] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384];

/// Time of one durable storage write (RocksDB write with sync), in microseconds: 50 µs to 1 s.
pub const FSYNC_MICROSECONDS_BOUNDS: [u64; 14] = [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000];

/// A histogram with fixed upper bounds (inclusive) and one more bucket for larger values.
pub struct FixedHistogram {
    bounds: &'static [u64],
    /// Observations per bucket (not cumulative): `bounds.len() + 1` cells, the last for values
    /// above every bound.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// What a histogram held when it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Upper bounds, ascending.
    pub bounds: &'static [u64],
    /// Cumulative counts: `cumulative[i]` observations were at most `bounds[i]`; the last cell
    /// (one more than the bounds) is every observation.
    pub cumulative: Vec<u64>,
    /// The sum of the observed values (wrapping only after 2^64 units).
    pub sum: u64,
}

impl HistogramSnapshot {
    /// Every observation (the `+Inf` bucket).
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

impl FixedHistogram {
    /// A histogram over `bounds`, which must ascend strictly.
    pub fn new(bounds: &'static [u64]) -> FixedHistogram {
        assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]), "histogram bounds must ascend strictly");
        FixedHistogram { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum: AtomicU64::new(0) }
    }

    /// Counts one observation of `value`.
    pub fn record(&self, value: u64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Reads the buckets (each with a relaxed load: a batch recorded meanwhile may be counted in
    /// the buckets and not yet in the sum, which a scrape tolerates).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0u64;
        let cumulative = self
            .counts
            .iter()
            .map(|count| {
                running = running.wrapping_add(count.load(Ordering::Relaxed));
                running
            })
            .collect();
        HistogramSnapshot { bounds: self.bounds, cumulative, sum: self.sum.load(Ordering::Relaxed) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static BOUNDS: [u64; 3] = [1, 10, 100];

    fn check(values: &[u64], cumulative: &[u64], sum: u64) {
        let histogram = FixedHistogram::new(&BOUNDS);
        for value in values {
            histogram.record(*value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.cumulative, cumulative, "{values:?}");
        assert_eq!(snapshot.sum, sum, "{values:?}");
        assert_eq!(snapshot.count(), values.len() as u64);
    }

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_holds_them() {
        check(&[], &[0, 0, 0, 0], 0);
        check(&[0, 1], &[2, 2, 2, 2], 1);
        check(&[2, 10], &[0, 2, 2, 2], 12);
        check(&[11, 100], &[0, 0, 2, 2], 111);
        check(&[101, u32::MAX as u64], &[0, 0, 0, 2], 101 + u32::MAX as u64);
        check(&[1, 5, 50, 500], &[1, 2, 3, 4], 556);
    }

    #[test]
    fn the_shipped_bounds_ascend() {
        FixedHistogram::new(&BATCH_SIZE_BOUNDS);
        FixedHistogram::new(&FSYNC_MICROSECONDS_BOUNDS);
    }
}
