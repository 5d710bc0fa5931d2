//! Backtesting a policy: reads the whole log, as `replay` does, and evaluates every
//! family under the configured policy and a candidate (the same policy with the grace,
//! idle or maximum lifetime changed). The rules are `ledger_core::backtest`'s; this
//! module reads the log and renders the report.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use ledger_core::backtest::{Backtest, BacktestReport, Change, Divergence};
use ledger_core::ports::{LogSource, StartFrom};
use ledger_core::{Policy, Timestamp};

use crate::scan::{Flow, scan};

/// The parts of the policy a candidate changes; `None` keeps the configured value.
#[derive(Clone, Copy, Debug, Default)]
pub struct Overrides {
    pub grace: Option<Duration>,
    pub idle: Option<Duration>,
    pub max: Option<Duration>,
}

impl Overrides {
    pub fn apply(&self, current: &Policy) -> Policy {
        Policy {
            refresh_grace: self.grace.unwrap_or(current.refresh_grace),
            refresh_idle_ttl: self.idle.unwrap_or(current.refresh_idle_ttl),
            session_max_ttl: self.max.unwrap_or(current.session_max_ttl),
            ..current.clone()
        }
    }
}

/// The backtest of `current` against `candidate`, before it reads anything: fails
/// when the candidate is not a valid policy.
pub fn prepare(current: &Policy, candidate: &Policy) -> anyhow::Result<Backtest> {
    Backtest::new(current.clone(), candidate.clone()).context("the candidate policy")
}

/// Reads the log from the beginning of every partition into `backtest`, reporting
/// progress on stderr.
pub async fn backtest(
    source: &dyn LogSource,
    mut backtest: Backtest,
) -> anyhow::Result<BacktestReport> {
    scan(source, StartFrom::Beginning, "backtest", |record| {
        backtest.push(&record.event);
        Ok(Flow::Continue)
    })
    .await?;
    Ok(backtest.finish(ledger_clock::now()))
}

fn policy_line(p: &Policy) -> String {
    format!(
        "grace {}, idle {}, max {}",
        humantime::format_duration(p.refresh_grace),
        humantime::format_duration(p.refresh_idle_ttl),
        humantime::format_duration(p.session_max_ttl)
    )
}

/// The report as text: a header, the counts, then the diverging families.
pub fn write_table(
    out: &mut impl Write,
    report: &BacktestReport,
    current: &Policy,
    candidate: &Policy,
    limit: usize,
) -> std::io::Result<()> {
    let c = &report.counts;
    writeln!(out, "current:    {}", policy_line(current))?;
    writeln!(out, "candidate:  {}", policy_line(candidate))?;
    writeln!(out, "as of:      {}", report.as_of)?;
    writeln!(
        out,
        "events:     {} ({} families evaluated; {} without their login, {} not written under the current policy; {} subject revocations)",
        report.events,
        report.families,
        report.incomplete,
        report.inconsistent,
        report.subject_revocations
    )?;
    writeln!(out)?;
    writeln!(out, "{:<48} {:>9}", "under the candidate", "families")?;
    for (what, n) in [
        ("revoked for reuse (was a grace retry)", c.revoked_for_reuse),
        ("not revoked (was revoked for reuse)", c.not_revoked),
        ("ended earlier: idle", c.ended_earlier_idle),
        ("ended earlier: deadline", c.ended_earlier_deadline),
        ("ended later: idle", c.ended_later_idle),
        ("ended later: deadline", c.ended_later_deadline),
        ("total", c.total()),
    ] {
        writeln!(out, "{what:<48} {n:>9}")?;
    }
    if report.divergences.is_empty() {
        return Ok(());
    }
    let shown = report.divergences.len().min(limit);
    writeln!(out)?;
    writeln!(
        out,
        "first {shown} of {} diverging families (only a family's first divergence is evaluated):",
        report.divergences.len()
    )?;
    writeln!(out, "{:<32} {:<36}  change", "at", "session")?;
    for d in report.divergences.iter().take(limit) {
        writeln!(
            out,
            "{:<32} {:<36}  {}",
            d.at.to_rfc3339(),
            d.session_id,
            describe(d)
        )?;
    }
    Ok(())
}

fn seconds(from: Timestamp, to: Timestamp) -> String {
    format!("{:.1} s", to.duration_since(from).as_secs_f64())
}

/// One divergence in words.
fn describe(d: &Divergence) -> String {
    match &d.change {
        Change::RevokedForReuse {
            presented,
            rotated_at,
        } => format!(
            "revoked for reuse: generation {presented} presented {} after its rotation (was a grace retry)",
            seconds(*rotated_at, d.at)
        ),
        Change::NotRevoked {
            presented,
            rotated_at,
        } => format!(
            "not revoked: generation {presented} presented {} after its rotation is a grace retry (was revoked for reuse)",
            seconds(*rotated_at, d.at)
        ),
        Change::EndedEarlier {
            cause,
            refused_at,
            current_end,
        } => {
            let mut text = format!("ended earlier ({})", cause.as_str());
            if let Some(t) = refused_at {
                text.push_str(&format!("; would have refused the refresh at {t}"));
            }
            match current_end {
                Some(t) => text.push_str(&format!("; the current policy ended it at {t}")),
                None if refused_at.is_none() => {
                    text.push_str("; still live under the current policy")
                }
                None => {}
            }
            text
        }
        Change::EndedLater {
            cause,
            candidate_end,
        } => match candidate_end {
            Some(t) => format!(
                "ended later: the current policy ended it ({}), the candidate at {t}",
                cause.as_str()
            ),
            None => format!(
                "ended later: the current policy ended it ({}), still live under the candidate",
                cause.as_str()
            ),
        },
    }
}

/// The report as JSON (`--format json`).
pub fn to_json(
    report: &BacktestReport,
    current: &Policy,
    candidate: &Policy,
    limit: usize,
) -> serde_json::Value {
    use serde_json::json;
    let policy = |p: &Policy| {
        json!({
            "refresh_grace_seconds": p.refresh_grace.as_secs_f64(),
            "refresh_idle_ttl_seconds": p.refresh_idle_ttl.as_secs_f64(),
            "session_max_ttl_seconds": p.session_max_ttl.as_secs_f64(),
        })
    };
    let c = &report.counts;
    let divergences: Vec<_> = report
        .divergences
        .iter()
        .take(limit)
        .map(|d| {
            let mut v = json!({
                "session_id": d.session_id.to_string(),
                "subject": d.subject.as_str(),
                "at": d.at.to_rfc3339(),
            });
            let detail = match &d.change {
                Change::RevokedForReuse {
                    presented,
                    rotated_at,
                } => json!({
                    "change": "revoked_for_reuse",
                    "presented_generation": presented.get(),
                    "rotated_at": rotated_at.to_rfc3339(),
                }),
                Change::NotRevoked {
                    presented,
                    rotated_at,
                } => json!({
                    "change": "not_revoked",
                    "presented_generation": presented.get(),
                    "rotated_at": rotated_at.to_rfc3339(),
                }),
                Change::EndedEarlier {
                    cause,
                    refused_at,
                    current_end,
                } => json!({
                    "change": "ended_earlier",
                    "cause": cause.as_str(),
                    "refused_at": refused_at.map(Timestamp::to_rfc3339),
                    "current_end": current_end.map(Timestamp::to_rfc3339),
                }),
                Change::EndedLater {
                    cause,
                    candidate_end,
                } => json!({
                    "change": "ended_later",
                    "cause": cause.as_str(),
                    "candidate_end": candidate_end.map(Timestamp::to_rfc3339),
                }),
            };
            if let (Some(v), serde_json::Value::Object(detail)) = (v.as_object_mut(), detail) {
                v.extend(detail);
            }
            v
        })
        .collect();
    json!({
        "as_of": report.as_of.to_rfc3339(),
        "current": policy(current),
        "candidate": policy(candidate),
        "events": report.events,
        "families": report.families,
        "incomplete": report.incomplete,
        "inconsistent": report.inconsistent,
        "subject_revocations": report.subject_revocations,
        "counts": {
            "revoked_for_reuse": c.revoked_for_reuse,
            "not_revoked": c.not_revoked,
            "ended_earlier_idle": c.ended_earlier_idle,
            "ended_earlier_deadline": c.ended_earlier_deadline,
            "ended_later_idle": c.ended_later_idle,
            "ended_later_deadline": c.ended_later_deadline,
            "total": c.total(),
        },
        "divergences": divergences,
        "divergences_omitted": report.divergences.len().saturating_sub(limit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_of(events: &[ledger_core::Event], candidate: &Policy) -> BacktestReport {
        let mut b = Backtest::new(Policy::default(), candidate.clone()).unwrap();
        events.iter().for_each(|e| b.push(e));
        b.finish(ledger_clock::now())
    }

    #[test]
    fn overrides_change_only_what_they_name() {
        let current = Policy::default();
        let grace = Duration::from_secs(5);
        let candidate = Overrides {
            grace: Some(grace),
            ..Overrides::default()
        }
        .apply(&current);
        assert_eq!(
            candidate,
            Policy {
                refresh_grace: grace,
                ..current
            }
        );
    }

    #[test]
    fn the_table_and_json_name_each_diverging_family() {
        // Unused since a login two hours ago: live under a day's idle, ended under 30 min.
        let start = ledger_clock::now().saturating_sub(Duration::from_secs(7200));
        let (id, login) = ledger_core::testing::login("alice", start);
        let candidate = Overrides {
            idle: Some(Duration::from_secs(1800)),
            ..Overrides::default()
        }
        .apply(&Policy::default());
        let report = report_of(&[login], &candidate);
        assert_eq!(report.counts.ended_earlier_idle, 1);

        let mut table = Vec::new();
        write_table(&mut table, &report, &Policy::default(), &candidate, 20).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(
            table.contains("candidate:  grace 30s, idle 30m, max 30days"),
            "{table}"
        );
        assert!(
            table.contains(&format!(
                "{id}  ended earlier (idle); still live under the current policy"
            )),
            "{table}"
        );

        let json = to_json(&report, &Policy::default(), &candidate, 0);
        assert_eq!(json["counts"]["ended_earlier_idle"], 1);
        assert_eq!(json["divergences"].as_array().unwrap().len(), 0);
        assert_eq!(json["divergences_omitted"], 1);
        let json = to_json(&report, &Policy::default(), &candidate, 1);
        assert_eq!(json["divergences"][0]["change"], "ended_earlier");
        assert_eq!(json["divergences"][0]["session_id"], id.to_string());
    }
}
