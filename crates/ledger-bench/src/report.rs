//! The one table the benchmark prints, and how figures are formatted.

use std::fmt::Write as _;
use std::time::Duration;

/// One line of the table.
#[derive(Debug)]
pub struct Row {
    pub id: &'static str,
    pub what: String,
    pub ours: String,
    pub baseline: String,
    pub ratio: String,
}

#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Row>,
}

impl Table {
    pub fn push(
        &mut self,
        id: &'static str,
        what: impl Into<String>,
        ours: impl Into<String>,
        baseline: impl Into<String>,
        ratio: impl Into<String>,
    ) {
        let row = Row {
            id,
            what: what.into(),
            ours: ours.into(),
            baseline: baseline.into(),
            ratio: ratio.into(),
        };
        progress(&format!(
            "{} {}: {} | {} | {}",
            row.id, row.what, row.ours, row.baseline, row.ratio
        ));
        self.rows.push(row);
    }

    /// A Markdown table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| # | measurement | Session Ledger | baseline: Redis jti blacklist | ours / baseline |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by_key(|r| r.id);
        for r in rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                r.id, r.what, r.ours, r.baseline, r.ratio
            );
        }
        out
    }
}

/// A progress line on stderr.
pub fn progress(line: &str) {
    eprintln!("[ledger-bench] {line}");
}

/// `12.3 M/s`, `45.6 k/s`, `789 /s` (with the unit after).
pub fn rate(per_second: f64, unit: &str) -> String {
    if per_second >= 1e6 {
        format!("{:.2} M {unit}/s", per_second / 1e6)
    } else if per_second >= 1e4 {
        format!("{:.1} k {unit}/s", per_second / 1e3)
    } else {
        format!("{per_second:.0} {unit}/s")
    }
}

/// A duration with a unit suited to its size.
pub fn duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

/// `123×` (or `0.45×`).
pub fn ratio(ours: f64, baseline: f64) -> String {
    if baseline <= 0.0 || !ours.is_finite() {
        return "—".into();
    }
    let r = ours / baseline;
    if r >= 10.0 {
        format!("{r:.0}×")
    } else {
        format!("{r:.2}×")
    }
}

/// Latency samples, in nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub fn with_capacity(n: usize) -> Self {
        Latencies(Vec::with_capacity(n))
    }

    pub fn record(&mut self, d: Duration) {
        self.0.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `q` quantile (0..=1); zero when empty.
    pub fn quantile(&mut self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        self.0.sort_unstable();
        let i = ((self.0.len() as f64 * q) as usize).min(self.0.len() - 1);
        Duration::from_nanos(self.0[i])
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.0.iter().copied().max().unwrap_or(0))
    }

    /// `p50 X / p99 Y`.
    pub fn p50_p99(&mut self) -> String {
        format!(
            "p50 {} / p99 {}",
            duration(self.quantile(0.5)),
            duration(self.quantile(0.99))
        )
    }
}
