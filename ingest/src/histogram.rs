//! Latency histograms for `/metrics`: fixed buckets, lock-free, rendered as Prometheus
//! `_bucket{le=…}` / `_sum` / `_count` series, so a scraper (or the serve benchmark) can read
//! the server's own percentiles of request, log and flush times.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: fine around the 1–50 ms an acknowledgement takes,
/// coarse beyond.
const BOUNDS: [f64; 20] = [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Counts of observed durations per bucket (non-cumulative; rendering accumulates), their
/// sum and their number.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let i = BOUNDS.iter().position(|b| secs <= *b).unwrap_or(BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Appends the series of metric `name` with `labels` (e.g. `route="/v1/events"`, or empty);
    /// the caller writes the `# TYPE name histogram` line once per name.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = BOUNDS.get(i).map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::default();
        for ms in [1, 1, 4, 30, 20_000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut out = String::new();
        h.render(&mut out, "t_seconds", "route=\"/x\"");
        assert!(out.contains("t_seconds_bucket{route=\"/x\",le=\"0.0005\"} 0\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{route=\"/x\",le=\"0.001\"} 2\n"), "1 ms is in the 1 ms bucket: {out}");
        assert!(out.contains("t_seconds_bucket{route=\"/x\",le=\"0.005\"} 3\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{route=\"/x\",le=\"0.03\"} 4\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{route=\"/x\",le=\"10\"} 4\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{route=\"/x\",le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("t_seconds_sum{route=\"/x\"} 20.036\n"), "{out}");
        assert!(out.contains("t_seconds_count{route=\"/x\"} 5\n"), "{out}");
        let mut bare = String::new();
        Histogram::default().render(&mut bare, "u_seconds", "");
        assert!(bare.contains("u_seconds_bucket{le=\"+Inf\"} 0\n") && bare.contains("u_seconds_count 0\n"), "{bare}");
    }
}
