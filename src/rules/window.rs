//! A sliding window of weights in time buckets, stored sparsely.
//!
//! A window over `span_ms` keeps buckets `span_ms / BUCKETS` wide and only the buckets
//! that received something, so a group that saw one event costs one bucket. Sums cover
//! the current bucket and the whole buckets before it inside the span; the result can
//! undercount the oldest edge by at most one bucket width, which is the price of
//! constant memory per group.

use std::collections::VecDeque;

/// Buckets per span: the window's resolution.
pub const BUCKETS: i64 = 30;

#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    width_ms: i64,
    span_buckets: i64,
    /// (bucket index, summed weight), ascending by index.
    buckets: VecDeque<(i64, f64)>,
}

impl Window {
    pub fn new(span_ms: i64) -> Self {
        let width_ms = (span_ms / BUCKETS).max(1);
        Self {
            width_ms,
            span_buckets: (span_ms + width_ms - 1) / width_ms,
            buckets: VecDeque::new(),
        }
    }

    /// Adds `weight` at `at_ms`. Out-of-order times are placed in their own bucket.
    pub fn add(&mut self, at_ms: i64, weight: f64) {
        let index = at_ms.div_euclid(self.width_ms);
        match self.buckets.back_mut() {
            Some((last, sum)) if *last == index => *sum += weight,
            Some((last, _)) if *last > index => {
                match self.buckets.binary_search_by(|(i, _)| i.cmp(&index)) {
                    Ok(found) => self.buckets[found].1 += weight,
                    Err(at) => self.buckets.insert(at, (index, weight)),
                }
            }
            _ => self.buckets.push_back((index, weight)),
        }
    }

    /// Sum of the weights within the span ending at `now_ms`, after dropping older buckets.
    pub fn sum(&mut self, now_ms: i64) -> f64 {
        let current = now_ms.div_euclid(self.width_ms);
        let oldest = current - self.span_buckets + 1;
        while self.buckets.front().is_some_and(|(i, _)| *i < oldest) {
            self.buckets.pop_front();
        }
        self.buckets
            .iter()
            .filter(|(i, _)| *i <= current)
            .map(|(_, w)| w)
            .sum()
    }

    /// Sum over the last `span_ms` only (`span_ms` at most this window's span).
    pub fn sum_recent(&self, now_ms: i64, span_ms: i64) -> f64 {
        let current = now_ms.div_euclid(self.width_ms);
        let oldest = current - (span_ms / self.width_ms).max(1) + 1;
        self.buckets
            .iter()
            .filter(|(i, _)| *i >= oldest && *i <= current)
            .map(|(_, w)| w)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slides_and_forgets() {
        let mut w = Window::new(60_000);
        w.add(0, 1.0);
        w.add(30_000, 2.0);
        w.add(59_000, 3.0);
        assert_eq!(w.sum(59_999), 6.0);
        assert_eq!(w.sum(61_000), 5.0, "the bucket at 0 left the span");
        assert_eq!(w.sum(200_000), 0.0);
        assert!(w.is_empty());
    }

    #[test]
    fn out_of_order_additions_land_in_their_bucket() {
        let mut w = Window::new(60_000);
        w.add(50_000, 1.0);
        w.add(10_000, 1.0);
        w.add(50_500, 1.0);
        assert_eq!(w.sum(59_000), 3.0);
        assert_eq!(w.sum_recent(59_000, 20_000), 2.0);
    }
}
