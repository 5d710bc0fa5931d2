//! Timelines: a subject's events found by scanning the log, and the table `history`
//! prints (one timeline per family).

use std::io::Write;

use ledger_core::ports::{LogSource, StartFrom};
use ledger_core::{Event, EventKind, SessionId, Subject};

use crate::scan::{Flow, scan};

/// Every event of `subject`, in log order: the log is read from its start (an
/// auditor's scan; nothing indexes events by subject on the serving path).
pub async fn subject_events(
    source: &dyn LogSource,
    subject: &Subject,
) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::new();
    scan(source, StartFrom::Beginning, "history", |record| {
        if record.event.subject == *subject {
            events.push(record.event.clone());
        }
        Ok(Flow::Continue)
    })
    .await?;
    Ok(events)
}

/// The subject-wide revocations of `subject`: events with no family, found by reading
/// the whole log (they are not part of any family's history).
pub async fn subject_revocations(
    source: &dyn LogSource,
    subject: &Subject,
) -> anyhow::Result<Vec<Event>> {
    let mut events = subject_events(source, subject).await?;
    events.retain(|e| e.session_id.is_none());
    Ok(events)
}

/// `events` as a table: one timeline per family in order of login, subject-wide events
/// last; with `headings`, each timeline is named (a subject's history).
pub fn write_table(out: &mut impl Write, events: &[Event], headings: bool) -> std::io::Result<()> {
    let mut families: Vec<Option<SessionId>> = Vec::new();
    for e in events {
        if !families.contains(&e.session_id) {
            families.push(e.session_id);
        }
    }
    families.sort_by_key(|f| f.is_none());
    for (i, family) in families.iter().enumerate() {
        if headings {
            if i > 0 {
                writeln!(out)?;
            }
            match family {
                Some(id) => writeln!(out, "session {id}")?,
                None => writeln!(out, "every session of the subject")?,
            }
        }
        writeln!(
            out,
            "{:<32} {:<18} {:>4}  detail",
            "occurred_at", "event", "gen"
        )?;
        for e in events.iter().filter(|e| e.session_id == *family) {
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
    Ok(())
}

/// What an event did, in words.
pub fn detail(e: &Event) -> String {
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
