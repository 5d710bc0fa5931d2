//! Ready-made histories for the tests of the crates around the core (feature
//! `testing`). Every event comes from [`decide`](crate::decide), so fixtures can never
//! describe a history the rules would not produce.

use crate::ports::{LogRecord, Position};
use crate::{
    Command, DecideContext, Event, Policy, Projection, RevokeReason, SessionId, Subject, Timestamp,
    decide,
};

fn ctx(now: Timestamp, policy: &Policy) -> DecideContext<'_> {
    DecideContext {
        now,
        policy,
        region: "test",
        trace_context: None,
    }
}

/// `subject` logs in at `now` (default policy): the family and its `SessionIssued`.
pub fn login(subject: &str, now: Timestamp) -> (SessionId, Event) {
    let policy = Policy::default();
    let id = SessionId::generate();
    let open = Command::Open {
        session_id: id,
        subject: Subject::parse(subject).expect("a valid test subject"),
        client_id: None,
        claims: serde_json::Map::new(),
        access_jti: format!("jti-{id}"),
    };
    let mut events = decide(None, None, open, &ctx(now, &policy)).expect("a fresh login");
    (id, events.remove(0))
}

/// `subject` logs in and signs out at `now`: `SessionIssued`, `SessionRevokedAll`.
pub fn login_and_logout(subject: &str, now: Timestamp) -> (SessionId, Vec<Event>) {
    let policy = Policy::default();
    let (id, issued) = login(subject, now);
    let mut state = Projection::new();
    state.apply(&issued);
    let revoke = Command::Revoke {
        session_id: id,
        reason: RevokeReason::Logout,
    };
    let revoked =
        decide(state.family(&id), None, revoke, &ctx(now, &policy)).expect("a live family");
    (id, [vec![issued], revoked].concat())
}

/// `events` as read from a one-partition log, at offsets 1, 2, …
pub fn records(events: &[Event]) -> Vec<LogRecord> {
    (1u64..)
        .zip(events)
        .map(|(offset, e)| LogRecord {
            position: Position {
                partition: 0,
                offset,
            },
            event: e.clone(),
        })
        .collect()
}
