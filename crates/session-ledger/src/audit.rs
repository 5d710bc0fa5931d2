//! Tools for auditors: they read the same log the projector reads, with the same
//! backend configuration as the services, and never write to the serving path.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use ledger_core::ports::{Position, StartFrom};
use ledger_core::{Event, FamilyStatus, Projection, SessionId, Timestamp};

use crate::run::Ports;
use crate::{Backend, Settings};

/// What `replay` found.
#[derive(Debug)]
pub struct ReplayReport {
    pub events: u64,
    pub projection: Projection,
    pub elapsed: Duration,
    /// Where the replay stopped: the next offset per partition.
    pub end: Vec<Position>,
}

/// Folds the log (from `from`, the first offset of every partition, through `to` when
/// given) into a projection in memory, reporting progress on stderr.
pub async fn replay(
    settings: &Settings,
    from: Option<u64>,
    to: Option<u64>,
) -> anyhow::Result<ReplayReport> {
    let ports = Ports::open(settings).await?;
    let start = match from {
        None => StartFrom::Beginning,
        Some(offset) => {
            let partitions = match &settings.backend {
                Backend::Embedded => 1,
                Backend::Kafka(k) => u32::try_from(k.partitions).unwrap_or(1),
            };
            StartFrom::Positions(
                (0..partitions)
                    .map(|partition| Position { partition, offset })
                    .collect(),
            )
        }
    };
    let mut reader = ports.source.reader(start).await?;
    let mut projection = Projection::new();
    let mut events = 0u64;
    let started = Instant::now();
    let mut last_report = Instant::now();
    // The last poll waits to learn that the log has ended: not part of the rate.
    let mut elapsed = Duration::ZERO;
    loop {
        let batch = reader.poll(10_000, Duration::from_millis(500)).await?;
        if batch.is_empty() {
            break;
        }
        elapsed = started.elapsed();
        let mut past_end = false;
        for record in &batch {
            if to.is_some_and(|to| record.position.offset > to) {
                past_end = true;
                continue;
            }
            projection.apply(&record.event);
            events += 1;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            let rate = events as f64 / started.elapsed().as_secs_f64();
            let eta = reader
                .lag()
                .map(|lag| format!(", about {:.0} s to go", lag as f64 / rate.max(1.0)))
                .unwrap_or_default();
            eprintln!("replay: {events} events, {rate:.0} events/s{eta}");
            last_report = Instant::now();
        }
        if past_end && reader.lag() == Some(0) {
            break;
        }
    }
    Ok(ReplayReport {
        events,
        projection,
        elapsed,
        end: reader.positions(),
    })
}

/// Waits (up to `wait`) until the projector's committed positions reach `end`;
/// `Some(events still to commit)` when they did not.
async fn await_projector(
    ports: &Ports,
    settings: &Settings,
    end: &[Position],
    wait: Duration,
) -> anyhow::Result<Option<u64>> {
    let group = crate::run::projector_group(settings);
    let deadline = Instant::now() + wait;
    loop {
        let committed = ports
            .source
            .committed(&group)
            .await
            .context("reading the projector's checkpoint")?;
        let behind: u64 = end
            .iter()
            .map(|e| {
                let done = committed
                    .iter()
                    .find(|c| c.partition == e.partition)
                    .map_or(0, |c| c.offset);
                e.offset.saturating_sub(done)
            })
            .sum();
        if behind == 0 {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Ok(Some(behind));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first family or subject where two projections differ, in words.
pub fn first_difference(replayed: &Projection, live: &Projection) -> Option<String> {
    for f in replayed.families() {
        match live.family(&f.session_id) {
            None => {
                return Some(format!(
                    "family {} is in the replay but not live",
                    f.session_id
                ));
            }
            Some(l) if l != f => {
                return Some(format!(
                    "family {} differs: replay {} vs live {}",
                    f.session_id,
                    serde_json::to_string(f).unwrap_or_default(),
                    serde_json::to_string(l).unwrap_or_default()
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(l) = live
        .families()
        .find(|l| replayed.family(&l.session_id).is_none())
    {
        return Some(format!(
            "family {} is live but not in the replay",
            l.session_id
        ));
    }
    for s in replayed.subjects() {
        if live.subject_revocation(&s.subject) != Some(s) {
            return Some(format!("subject revocation of {} differs", s.subject));
        }
    }
    if let Some(l) = live
        .subjects()
        .find(|l| replayed.subject_revocation(&l.subject).is_none())
    {
        return Some(format!(
            "subject revocation of {} is live but not in the replay",
            l.subject
        ));
    }
    None
}

/// `session-ledger replay`: prints the digest and counts; with `verify`, compares with
/// the live projection and fails naming the first difference (I5).
pub async fn run_replay(
    settings: &Settings,
    from: Option<u64>,
    to: Option<u64>,
    verify: bool,
    wait: Duration,
) -> anyhow::Result<bool> {
    let mut report = replay(settings, from, to).await?;
    // What the live store no longer keeps (past retention) is not compared.
    report.projection.prune(Timestamp::now());
    let now = Timestamp::now();
    let revoked = report
        .projection
        .families()
        .filter(|f| {
            matches!(
                FamilyStatus::of(f, report.projection.subject_revocation(&f.subject), now),
                FamilyStatus::Revoked { .. }
            )
        })
        .count();
    let mut out = std::io::stdout().lock();
    writeln!(out, "events:        {}", report.events)?;
    writeln!(
        out,
        "families:      {} ({revoked} revoked)",
        report.projection.families().len()
    )?;
    writeln!(
        out,
        "subject revocations: {}",
        report.projection.subjects().len()
    )?;
    writeln!(out, "digest:        {}", report.projection.digest())?;
    writeln!(
        out,
        "rate:          {:.0} events/s",
        report.events as f64 / report.elapsed.as_secs_f64().max(1e-9)
    )?;
    if !verify {
        return Ok(true);
    }
    let ports = Ports::open(settings).await?;
    // The live projection is comparable once the projector has committed everything
    // the replay read (it writes before it commits, so then it holds all of it).
    if let Some(behind) = await_projector(&ports, settings, &report.end, wait).await? {
        writeln!(
            out,
            "verify:        NOT COMPARABLE: the projector is {behind} events behind the log \
             after {} s; run it and try again",
            wait.as_secs()
        )?;
        return Ok(false);
    }
    let live = ports
        .store
        .snapshot()
        .await
        .context("reading the live projection")?;
    match first_difference(&report.projection, &live) {
        None => {
            writeln!(
                out,
                "verify:        the live projection matches ({})",
                live.digest()
            )?;
            Ok(true)
        }
        Some(difference) => {
            writeln!(out, "verify:        MISMATCH: {difference}")?;
            Ok(false)
        }
    }
}

/// `session-ledger history --session ID`: the family's events, as a table, a JSON
/// array or NDJSON (each line an event as in `schemas/`).
pub async fn run_history(settings: &Settings, session: &str, format: &str) -> anyhow::Result<()> {
    let id = SessionId::parse(session).context("--session must be a session id (UUID)")?;
    let ports = Ports::open(settings).await?;
    let events = ports.history.history(id).await?;
    anyhow::ensure!(!events.is_empty(), "no events for session {id}");
    let mut out = std::io::stdout().lock();
    match format {
        "json" => writeln!(out, "{}", serde_json::to_string_pretty(&events)?)?,
        "ndjson" => {
            for e in &events {
                out.write_all(&e.to_json())?;
                writeln!(out)?;
            }
        }
        _ => {
            writeln!(
                out,
                "{:<32} {:<18} {:>4}  detail",
                "occurred_at", "event", "gen"
            )?;
            for e in &events {
                writeln!(
                    out,
                    "{:<32} {:<18} {:>4}  {}",
                    e.occurred_at.to_rfc3339(),
                    e.event_type(),
                    e.generation.map_or("-".into(), |g| g.to_string()),
                    detail(e)
                )?;
            }
        }
    }
    Ok(())
}

fn detail(e: &Event) -> String {
    use ledger_core::EventKind;
    match &e.kind {
        EventKind::SessionIssued(i) => format!(
            "login{}, session until {}",
            i.client_id
                .as_deref()
                .map(|c| format!(" by {c}"))
                .unwrap_or_default(),
            i.session.expires_at
        ),
        EventKind::SessionRefreshed(r) if r.grace_retry => format!(
            "grace retry of generation {}, same successor (rotated at {})",
            r.previous_generation, r.rotated_at
        ),
        EventKind::SessionRefreshed(r) => {
            format!("rotated from generation {}", r.previous_generation)
        }
        EventKind::SessionRevokedAll(r) => {
            let mut text = format!(
                "revoked ({}), kept until {}",
                r.reason.as_str(),
                r.keep_until
            );
            if let Some(g) = r.replayed_generation {
                text.push_str(&format!("; generation {g} presented again"));
                if let Some(at) = r.replayed_rotated_at {
                    let after = e.occurred_at.duration_since(at);
                    text.push_str(&format!(" {:.1} s after its rotation", after.as_secs_f64()));
                }
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_difference_is_named() {
        let now = Timestamp::now();
        let (id, events) = ledger_core::testing::login_and_logout("alice", now);
        let mut live = Projection::new();
        events.iter().for_each(|e| live.apply(e));
        let mut replayed = Projection::new();
        replayed.apply(&events[0]);
        let difference = first_difference(&replayed, &live).unwrap();
        assert!(
            difference.starts_with(&format!("family {id} differs")),
            "{difference}"
        );
        replayed.apply(&events[1]);
        assert_eq!(first_difference(&replayed, &live), None);
        let (other, extra) = ledger_core::testing::login("bob", now);
        live.apply(&extra);
        let difference = first_difference(&replayed, &live).unwrap();
        assert_eq!(
            difference,
            format!("family {other} is live but not in the replay")
        );
    }
}
