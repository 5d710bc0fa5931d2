//! Where a refresh's time goes: the API's per-stage histograms
//! (`ledger_api_refresh_stage_seconds`), read from this process's metrics registry
//! before and after a load, so the figures are that load's alone.

use std::collections::BTreeMap;

/// The stages in the order a refresh goes through them.
const ORDER: [&str; 7] = ["lock", "end", "fence", "read", "decide", "append", "mint"];
const METRIC: &str = "ledger_api_refresh_stage_seconds";

/// One stage's histogram: observations, total seconds, cumulative bucket counts
/// (upper bound, count).
type Stage = (u64, f64, Vec<(f64, u64)>);

/// Every stage's histogram at one instant.
#[derive(Clone, Debug, Default)]
pub struct Snapshot(BTreeMap<String, Stage>);

impl Snapshot {
    pub fn take() -> Snapshot {
        let mut stages = BTreeMap::new();
        for family in prometheus::gather() {
            if family.name() != METRIC {
                continue;
            }
            for metric in family.get_metric() {
                let Some(stage) = metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "stage")
                    .map(|l| l.value().to_owned())
                else {
                    continue;
                };
                let h = metric.get_histogram();
                let buckets = h
                    .get_bucket()
                    .iter()
                    .map(|b| (b.upper_bound(), b.cumulative_count()))
                    .collect();
                stages.insert(stage, (h.get_sample_count(), h.get_sample_sum(), buckets));
            }
        }
        Snapshot(stages)
    }

    /// What happened since `before`: per stage, the mean and the bucket bound under
    /// which 99 % of the observations fell, in milliseconds.
    pub fn since(&self, before: &Snapshot) -> String {
        let mut parts = Vec::new();
        for stage in ORDER {
            let Some((count, sum, buckets)) = self.0.get(stage) else {
                continue;
            };
            let (count0, sum0, buckets0) = before.0.get(stage).cloned().unwrap_or_default();
            let n = count.saturating_sub(count0);
            if n == 0 {
                continue;
            }
            let mean = (sum - sum0) / n as f64 * 1e3;
            let wanted = (n as f64 * 0.99).ceil() as u64;
            let p99 = buckets
                .iter()
                .enumerate()
                .find(|(i, (_, c))| c.saturating_sub(buckets0.get(*i).map_or(0, |b| b.1)) >= wanted)
                .map_or_else(
                    || "> 4 s".to_owned(),
                    |(_, (bound, _))| format!("≤ {}", ms(*bound * 1e3)),
                );
            parts.push(format!("{stage} {} ({p99})", ms(mean)));
        }
        if parts.is_empty() {
            return "no refresh recorded".into();
        }
        format!("mean per refresh (p99 bucket): {}", parts.join(", "))
    }
}

fn ms(v: f64) -> String {
    if v < 0.1 {
        format!("{:.0} µs", v * 1e3)
    } else {
        format!("{v:.2} ms")
    }
}
