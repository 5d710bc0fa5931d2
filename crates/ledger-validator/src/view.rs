use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use ledger_core::ports::{LogRecord, Position};
use ledger_core::{
    FamilyState, Projection, RevocationCheck, RevokeReason, SessionId, Subject, Timestamp,
};

/// The answer to "may a token of this family, issued at this time, be accepted?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Active,
    Revoked {
        reason: RevokeReason,
        at: Timestamp,
    },
    /// The view is older than the configured bound: fail closed (I7).
    Stale {
        age: Duration,
    },
}

/// What a view has applied, for `/v1/status` and readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewStatus {
    pub bootstrapped: bool,
    /// Next offset to apply per partition.
    pub positions: Vec<Position>,
    pub lag: Option<u64>,
    /// The last time the view had applied everything in the log.
    pub caught_up_at: Option<Timestamp>,
    pub families: usize,
    pub subjects: usize,
}

/// In-memory revocation state fed by the log.
///
/// **Invariant**: only moves forward (the projection is a join), so a feeder may apply
/// overlapping or duplicated batches.
#[derive(Debug)]
pub struct RevocationView {
    state: RwLock<Projection>,
    max_staleness: Duration,
    bootstrapped: AtomicBool,
    caught_up_at: AtomicI64,
    lag: AtomicU64,
    positions: Mutex<Vec<Position>>,
}

impl RevocationView {
    pub fn new(max_staleness: Duration) -> Self {
        RevocationView {
            state: RwLock::new(Projection::new()),
            max_staleness,
            bootstrapped: AtomicBool::new(false),
            caught_up_at: AtomicI64::new(i64::MIN),
            lag: AtomicU64::new(u64::MAX),
            positions: Mutex::new(Vec::new()),
        }
    }

    /// Whether a token of family `session_id`, for `subject`, issued at `issued_at`,
    /// is still good as far as revocation goes.
    pub fn check(
        &self,
        session_id: SessionId,
        subject: &str,
        issued_at: Timestamp,
        now: Timestamp,
    ) -> Verdict {
        if let Some(age) = self.staleness(now) {
            return Verdict::Stale { age };
        }
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let check = match state.family(&session_id) {
            Some(family) => RevocationCheck::of(family, state.subject_revocation(&family.subject)),
            // The family is not (yet) known: only a subject-wide revocation can apply,
            // judged by the token's own issue time.
            None => Subject::parse(subject)
                .ok()
                .and_then(|s| state.subject_revocation(&s))
                .filter(|r| issued_at <= r.revoked_at)
                .map(|r| RevocationCheck {
                    at: r.revoked_at,
                    reason: r.reason,
                    keep_until: r.keep_until,
                }),
        };
        match check {
            Some(c) => Verdict::Revoked {
                reason: c.reason,
                at: c.at,
            },
            None => Verdict::Active,
        }
    }

    /// The revocation entry of a family, if it is revoked.
    pub fn revocation(&self, session_id: SessionId) -> Option<RevocationCheck> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let family = state.family(&session_id)?;
        RevocationCheck::of(family, state.subject_revocation(&family.subject))
    }

    pub fn family(&self, session_id: SessionId) -> Option<FamilyState> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.family(&session_id).cloned()
    }

    /// `Some(age)` when the view is older than the bound (or was never caught up).
    pub fn staleness(&self, now: Timestamp) -> Option<Duration> {
        let at = self.caught_up_at.load(Ordering::Acquire);
        if at == i64::MIN {
            return Some(Duration::MAX);
        }
        let age = now.duration_since(Timestamp::from_unix_micros(at));
        (age > self.max_staleness).then_some(age)
    }

    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// Replaces the state with a snapshot from the store (bootstrap).
    pub fn bootstrap(&self, snapshot: Projection) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.merge(&snapshot);
        self.bootstrapped.store(true, Ordering::Release);
    }

    /// Applies records read from the log; `lag` is what the reader still has to read.
    pub fn apply(&self, records: &[LogRecord], positions: Vec<Position>, lag: Option<u64>) {
        if !records.is_empty() {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            for r in records {
                state.apply(&r.event);
            }
        }
        *self.positions.lock().unwrap_or_else(|p| p.into_inner()) = positions;
        self.lag.store(lag.unwrap_or(u64::MAX), Ordering::Relaxed);
        // An empty poll means the reader reached the end of the log.
        if records.is_empty() || lag == Some(0) {
            self.caught_up_at
                .store(Timestamp::now().unix_micros(), Ordering::Release);
        }
    }

    /// Drops entries past retention; returns how many went.
    pub fn prune(&self, now: Timestamp) -> usize {
        self.state
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .prune(now)
    }

    pub fn status(&self) -> ViewStatus {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let at = self.caught_up_at.load(Ordering::Acquire);
        let lag = self.lag.load(Ordering::Relaxed);
        ViewStatus {
            bootstrapped: self.bootstrapped.load(Ordering::Acquire),
            positions: self
                .positions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            lag: (lag != u64::MAX).then_some(lag),
            caught_up_at: (at != i64::MIN).then(|| Timestamp::from_unix_micros(at)),
            families: state.families().len(),
            subjects: state.subjects().len(),
        }
    }

    /// The digest of the state held (to compare with a replay).
    pub fn digest(&self) -> String {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .digest()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ledger_core::ports::{LogRecord, Position};
    use ledger_core::{
        Command, DecideContext, Event, Policy, RevokeReason, SessionId, Subject, Timestamp, decide,
        decide_subject_revoke,
    };

    use super::{RevocationView, Verdict};

    fn records(events: &[Event]) -> Vec<LogRecord> {
        events
            .iter()
            .enumerate()
            .map(|(i, e)| LogRecord {
                position: Position {
                    partition: 0,
                    offset: i as u64 + 1,
                },
                event: e.clone(),
            })
            .collect()
    }

    fn login_and_logout(now: Timestamp) -> (SessionId, Vec<Event>) {
        let policy = Policy::default();
        let ctx = DecideContext {
            now,
            policy: &policy,
            region: "t",
            trace_context: None,
        };
        let id = SessionId::generate();
        let open = Command::Open {
            session_id: id,
            subject: Subject::parse("alice").unwrap(),
            client_id: None,
            claims: Default::default(),
            access_jti: "j".into(),
        };
        let issued = decide(None, None, open, &ctx).unwrap();
        let mut p = ledger_core::Projection::new();
        p.apply(&issued[0]);
        let revoke = Command::Revoke {
            session_id: id,
            reason: RevokeReason::Logout,
        };
        let revoked = decide(p.family(&id), None, revoke, &ctx).unwrap();
        (id, [issued, revoked].concat())
    }

    #[test]
    fn a_view_that_never_caught_up_fails_closed() {
        let view = RevocationView::new(Duration::from_secs(5));
        let now = Timestamp::now();
        let verdict = view.check(SessionId::generate(), "alice", now, now);
        assert!(matches!(verdict, Verdict::Stale { .. }), "{verdict:?}");
    }

    #[test]
    fn a_view_older_than_the_bound_fails_closed_and_says_how_old() {
        let view = RevocationView::new(Duration::from_secs(5));
        let now = Timestamp::now();
        let (id, events) = login_and_logout(now);
        view.apply(&records(&events[..1]), vec![], Some(0));
        assert_eq!(view.check(id, "alice", now, now), Verdict::Active);
        let later = now.saturating_add(Duration::from_secs(6));
        match view.check(id, "alice", now, later) {
            Verdict::Stale { age } => assert!(age >= Duration::from_secs(5), "{age:?}"),
            other => panic!("expected stale, got {other:?}"),
        }
    }

    #[test]
    fn revocations_apply_and_duplicates_are_harmless() {
        let view = RevocationView::new(Duration::from_secs(5));
        let now = Timestamp::now();
        let (id, events) = login_and_logout(now);
        let all = records(&events);
        view.apply(&all, vec![], Some(0));
        view.apply(&all, vec![], Some(0));
        match view.check(id, "alice", now, now) {
            Verdict::Revoked { reason, .. } => assert_eq!(reason, RevokeReason::Logout),
            other => panic!("expected revoked, got {other:?}"),
        }
        assert!(view.revocation(id).is_some());
    }

    #[test]
    fn a_subject_revocation_covers_unknown_families_issued_before_it() {
        let view = RevocationView::new(Duration::from_secs(5));
        let now = Timestamp::now();
        let policy = Policy::default();
        let ctx = DecideContext {
            now,
            policy: &policy,
            region: "t",
            trace_context: None,
        };
        let event =
            decide_subject_revoke(Subject::parse("bob").unwrap(), RevokeReason::Admin, &ctx);
        view.apply(&records(&[event]), vec![], Some(0));
        let before = now.saturating_sub(Duration::from_secs(1));
        let after = now.saturating_add(Duration::from_secs(1));
        let unknown = SessionId::generate();
        assert!(matches!(
            view.check(unknown, "bob", before, now),
            Verdict::Revoked { .. }
        ));
        assert_eq!(view.check(unknown, "bob", after, now), Verdict::Active);
        assert_eq!(view.check(unknown, "carol", before, now), Verdict::Active);
    }
}
