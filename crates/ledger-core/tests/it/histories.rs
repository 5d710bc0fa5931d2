//! Generates realistic histories: several API instances deciding on their own (possibly
//! stale) views of a few families, as happens with concurrent requests and regions.

use std::time::Duration;

use ledger_core::{
    Command, DecideContext, Event, EventId, Generation, Policy, Projection, RevokeReason,
    SessionId, Subject, Timestamp, decide, decide_subject_revoke,
};
use uuid::Uuid;

#[derive(Clone, Debug)]
pub enum Op {
    Login {
        family: usize,
    },
    Refresh {
        family: usize,
        back: u64,
    },
    Revoke {
        family: usize,
    },
    RevokeSubject,
    /// Instance `instance` catches up with everything appended so far.
    Sync,
}

#[derive(Clone, Debug)]
pub struct Step {
    pub op: Op,
    pub instance: usize,
    pub advance_secs: u64,
}

pub fn policy() -> Policy {
    Policy {
        access_ttl: Duration::from_secs(60),
        refresh_idle_ttl: Duration::from_secs(600),
        session_max_ttl: Duration::from_secs(3600),
        refresh_grace: Duration::from_secs(5),
        clock_leeway: Duration::from_secs(1),
        skew_margin: Duration::from_secs(1),
    }
}

/// Runs the steps through `decide` on two instances' views; returns every event. The
/// families are ids 1 to 3; each step's event id is its number, past those.
pub fn run(steps: &[Step]) -> Vec<Event> {
    let policy = policy();
    let families: Vec<SessionId> = (1..=3)
        .map(|n| SessionId::from_uuid(Uuid::from_u128(n)))
        .collect();
    let subject = Subject::parse("alice").unwrap();
    let mut views = [Projection::new(), Projection::new()];
    let mut log: Vec<Event> = Vec::new();
    let mut now = Timestamp::from_unix_seconds(1_700_000_000);
    for (n, step) in (1u128 << 64..).zip(steps) {
        now = now.saturating_add(Duration::from_secs(step.advance_secs));
        let instance = step.instance % views.len();
        let view = &views[instance];
        let ctx = DecideContext {
            now,
            policy: &policy,
            region: if instance == 0 { "eu" } else { "us" },
            trace_context: None,
            event_id: EventId::from_uuid(Uuid::from_u128(n)),
        };
        let family_of = |i: usize| families[i % families.len()];
        let command = match &step.op {
            Op::Sync => {
                for e in &log {
                    views[instance].apply(e);
                }
                continue;
            }
            Op::RevokeSubject => {
                let e = decide_subject_revoke(subject.clone(), RevokeReason::Admin, &ctx);
                views[instance].apply(&e);
                log.push(e);
                continue;
            }
            Op::Login { family } => Command::Open {
                session_id: family_of(*family),
                subject: subject.clone(),
                client_id: Some("c".into()),
                claims: serde_json::Map::new(),
                access_jti: format!("j{}", log.len()),
            },
            Op::Refresh { family, back } => {
                let id = family_of(*family);
                let head = view
                    .family(&id)
                    .and_then(|f| f.head)
                    .map_or(0, |h| h.generation.get());
                Command::Refresh {
                    session_id: id,
                    presented: Generation::new(head.saturating_sub(*back)),
                    access_jti: format!("j{}", log.len()),
                }
            }
            Op::Revoke { family } => Command::Revoke {
                session_id: family_of(*family),
                reason: RevokeReason::Logout,
            },
        };
        let state = view.family(&session_of(&command));
        let subject_revocation = view.subject_revocation(&subject);
        if let Ok(events) = decide(state, subject_revocation, command, &ctx) {
            for e in events {
                views[instance].apply(&e);
                log.push(e);
            }
        }
    }
    log
}

fn session_of(command: &Command) -> SessionId {
    match command {
        Command::Open { session_id, .. }
        | Command::Refresh { session_id, .. }
        | Command::Revoke { session_id, .. } => *session_id,
    }
}
