//! Ready-made histories for the tests of the crates around the core (feature
//! `testing`). Every event comes from [`decide`](crate::decide), so fixtures can never
//! describe a history the rules would not produce.

use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

use crate::ports::{LogRecord, Position};
use crate::{
    Command, DecideContext, Event, EventId, Policy, Projection, RevokeReason, SessionId, Subject,
    Timestamp, decide,
};

/// The instant the rule tests count from (2023-11-14T22:13:20Z), in microseconds.
const T0: i64 = 1_700_000_000_000_000;

/// `secs` seconds after the rule tests' fixed start.
pub fn at(secs: u64) -> Timestamp {
    Timestamp::from_unix_micros(T0).saturating_add(std::time::Duration::from_secs(secs))
}

/// `secs` seconds before the rule tests' fixed start.
pub fn before(secs: u64) -> Timestamp {
    Timestamp::from_unix_micros(T0).saturating_sub(std::time::Duration::from_secs(secs))
}

/// The short policy the rule tests use: access tokens 60 s, refresh idle 1 h, session
/// deadline 4 h, grace 10 s, leeway and margin 5 s.
pub fn short_policy() -> Policy {
    use std::time::Duration;
    Policy {
        access_ttl: Duration::from_secs(60),
        refresh_idle_ttl: Duration::from_secs(3600),
        session_max_ttl: Duration::from_secs(4 * 3600),
        refresh_grace: Duration::from_secs(10),
        clock_leeway: Duration::from_secs(5),
        skew_margin: Duration::from_secs(5),
    }
}

/// A session id no other call in this process returns. Counted, not drawn: fixtures
/// read no clock and draw no randomness, so [`SessionId::created_at`] is `None`.
pub fn session_id() -> SessionId {
    SessionId::from_uuid(next_uuid())
}

/// An event id no other call in this process returns (counted, like [`session_id`]).
pub fn event_id() -> EventId {
    EventId::from_uuid(next_uuid())
}

fn next_uuid() -> Uuid {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    Uuid::from_u128(u128::from(NEXT.fetch_add(1, Ordering::Relaxed)))
}

fn ctx(now: Timestamp, policy: &Policy) -> DecideContext<'_> {
    DecideContext {
        now,
        policy,
        region: "test",
        trace_context: None,
        event_id: event_id(),
    }
}

/// `subject` logs in at `now` (default policy): the family and its `SessionIssued`.
pub fn login(subject: &str, now: Timestamp) -> (SessionId, Event) {
    let policy = Policy::default();
    let id = session_id();
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

/// What every reader of the log relies on for any bytes: the decoder's fast path reads
/// them as the general reader does; and for any it accepts, the event survives a round
/// trip, and it folds into a projection (twice, as a redelivery
/// would) that can be digested, queried at `now` and pruned, all without a panic.
/// Shared by the property tests and the fuzz target; `Err` says what broke.
pub fn decoded_event_holds(bytes: &[u8], now: Timestamp) -> Result<(), String> {
    let decoded = Event::from_json(bytes);
    let general = Event::from_json_general(bytes);
    if decoded.as_ref().ok() != general.as_ref().ok() {
        return Err(format!(
            "the fast path and the general reader differ: {decoded:?} against {general:?}"
        ));
    }
    let Ok(event) = decoded else {
        return Ok(());
    };
    let again = Event::from_json(&event.to_json());
    if again.as_ref().ok() != Some(&event) {
        return Err(format!(
            "an accepted event must survive a round trip: {event:?} came back as {again:?}"
        ));
    }
    let mut projection = Projection::new();
    projection.apply(&event);
    projection.apply(&event);
    let _ = projection.digest();
    for family in projection.families() {
        let _ = projection.status(&family.session_id, now);
    }
    projection.prune(now);
    let _ = event.partition_key();
    Ok(())
}
