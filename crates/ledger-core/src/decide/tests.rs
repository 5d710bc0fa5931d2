//! Given events, when a command, then events (or an error).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;
use crate::testing::{at, short_policy as policy};
use crate::{EventKind, FamilyStatus, Projection};

/// A family's history so far and the policy it runs under.
struct Given {
    projection: Projection,
    policy: Policy,
    session: SessionId,
    subject: Subject,
}

impl Given {
    fn login_at(secs: u64) -> Given {
        Given::login_with(policy(), secs)
    }

    fn login_with(policy: Policy, secs: u64) -> Given {
        let mut g = Given {
            projection: Projection::new(),
            policy,
            session: crate::testing::session_id(),
            subject: Subject::parse("alice").unwrap(),
        };
        let open = Command::Open {
            session_id: g.session,
            subject: g.subject.clone(),
            client_id: Some("web".into()),
            claims: serde_json::Map::new(),
            access_jti: "jti-0".into(),
        };
        g.then_ok(open, secs);
        g
    }

    fn when(&self, command: Command, secs: u64) -> Result<Vec<Event>, DomainError> {
        let ctx = DecideContext {
            now: at(secs),
            policy: &self.policy,
            region: "test",
            trace_context: None,
            event_id: crate::testing::event_id(),
        };
        let state = self.projection.family(&self.session);
        let subject = self.projection.subject_revocation(&self.subject);
        decide(state, subject, command, &ctx)
    }

    /// Runs the command and applies what it produced, like the API does.
    fn then_ok(&mut self, command: Command, secs: u64) -> Vec<Event> {
        let events = self.when(command, secs).unwrap();
        for e in &events {
            self.projection.apply(e);
        }
        events
    }

    fn refresh(&self, generation: u64) -> Command {
        Command::Refresh {
            session_id: self.session,
            presented: Generation::new(generation),
            access_jti: format!("jti-r{generation}"),
        }
    }

    fn head(&self) -> Generation {
        self.projection
            .family(&self.session)
            .unwrap()
            .head
            .unwrap()
            .generation
    }
}

fn refreshed(events: &[Event]) -> (&Event, &SessionRefreshed) {
    assert_eq!(events.len(), 1, "{events:?}");
    match &events[0].kind {
        EventKind::SessionRefreshed(r) => (&events[0], r),
        other => panic!("expected SessionRefreshed, got {other:?}"),
    }
}

fn revoked(events: &[Event]) -> &SessionRevokedAll {
    assert_eq!(events.len(), 1, "{events:?}");
    match &events[0].kind {
        EventKind::SessionRevokedAll(r) => r,
        other => panic!("expected SessionRevokedAll, got {other:?}"),
    }
}

#[test]
fn login_issues_generation_zero_with_its_expiries() {
    let g = Given::login_at(0);
    let family = g.projection.family(&g.session).unwrap();
    assert_eq!(g.head(), Generation::INITIAL);
    assert_eq!(family.access_expires_at, at(60));
    assert_eq!(family.head.unwrap().refresh_expires_at, at(3600));
    assert_eq!(family.window.expires_at, at(4 * 3600));
    assert_eq!(family.retain_until, at(3600 + 10));
    assert_eq!(family.client_id.as_deref(), Some("web"));
}

#[test]
fn login_twice_with_the_same_id_is_refused() {
    let g = Given::login_at(0);
    let again = Command::Open {
        session_id: g.session,
        subject: g.subject.clone(),
        client_id: None,
        claims: serde_json::Map::new(),
        access_jti: "x".into(),
    };
    assert_eq!(g.when(again, 1), Err(DomainError::SessionExists));
}

#[test]
fn refreshing_the_head_rotates_to_the_next_generation() {
    let mut g = Given::login_at(0);
    let events = g.then_ok(g.refresh(0), 100);
    let (event, r) = refreshed(&events);
    assert_eq!(event.generation, Some(Generation::new(1)));
    assert_eq!(r.previous_generation, Generation::new(0));
    assert!(!r.grace_retry);
    assert_eq!(r.rotated_at, at(100));
    assert_eq!(r.access_expires_at, at(160));
    assert_eq!(r.refresh_expires_at, at(3700));
    assert_eq!(g.head(), Generation::new(1));
}

#[test]
fn a_rotation_has_the_same_event_id_on_every_instance() {
    let g = Given::login_at(0);
    let a = g.when(g.refresh(0), 100).unwrap();
    let b = g.when(g.refresh(0), 101).unwrap();
    assert_eq!(a[0].event_id, b[0].event_id);
}

#[test]
fn sliding_session_keeps_going_until_the_absolute_deadline() {
    let mut g = Given::login_at(0);
    let mut generation = 0;
    let mut t = 0;
    // Refresh every 50 minutes: idle never runs out, the deadline does.
    while t + 3000 < 4 * 3600 {
        t += 3000;
        g.then_ok(g.refresh(generation), t);
        generation += 1;
    }
    let family = g.projection.family(&g.session).unwrap();
    assert_eq!(family.head.unwrap().refresh_expires_at, at(4 * 3600));
    assert_eq!(
        g.when(g.refresh(generation), 4 * 3600),
        Err(DomainError::SessionExpired)
    );
}

#[test]
fn access_token_never_outlives_the_deadline() {
    let long_idle = Policy {
        refresh_idle_ttl: Duration::from_secs(5 * 3600),
        ..policy()
    };
    let mut g = Given::login_with(long_idle, 0);
    let events = g.then_ok(g.refresh(0), 4 * 3600 - 20);
    let (_, r) = refreshed(&events);
    assert_eq!(r.access_expires_at, at(4 * 3600));
}

#[test]
fn idle_refresh_token_expires() {
    let g = Given::login_at(0);
    assert_eq!(g.when(g.refresh(0), 3600), Err(DomainError::RefreshExpired));
    assert!(g.when(g.refresh(0), 3599).is_ok());
}

#[test]
fn previous_generation_within_grace_gets_the_same_successor() {
    let mut g = Given::login_at(0);
    g.then_ok(g.refresh(0), 100);
    let events = g.then_ok(g.refresh(0), 109);
    let (event, r) = refreshed(&events);
    assert!(r.grace_retry);
    assert_eq!(event.generation, Some(Generation::new(1)));
    assert_eq!(
        r.rotated_at,
        at(100),
        "a retry does not move the rotation time"
    );
    assert_eq!(r.refresh_expires_at, at(3700));
    assert_eq!(r.access_expires_at, at(169));
    assert_eq!(g.head(), Generation::new(1), "a retry is not counted twice");
}

#[test]
fn previous_generation_after_grace_is_reuse() {
    let mut g = Given::login_at(0);
    g.then_ok(g.refresh(0), 100);
    let events = g.then_ok(g.refresh(0), 110);
    let r = revoked(&events);
    assert_eq!(r.reason, RevokeReason::ReuseDetected);
    assert_eq!(r.scope, RevocationScope::Family);
    assert_eq!(r.replayed_generation, Some(Generation::new(0)));
    assert_eq!(r.replayed_rotated_at, Some(at(100)));
    assert_eq!(events[0].generation, Some(Generation::new(1)));
    // Everything of the family is now refused, the newest generation included.
    assert_eq!(
        g.when(g.refresh(1), 111),
        Err(DomainError::Revoked {
            reason: RevokeReason::ReuseDetected
        })
    );
}

#[test]
fn older_generations_are_reuse_at_any_time() {
    let mut g = Given::login_at(0);
    g.then_ok(g.refresh(0), 100);
    g.then_ok(g.refresh(1), 101);
    let events = g.when(g.refresh(0), 102).unwrap();
    let r = revoked(&events);
    assert_eq!(r.reason, RevokeReason::ReuseDetected);
    assert_eq!(r.replayed_generation, Some(Generation::new(0)));
    assert_eq!(r.replayed_rotated_at, None);
}

#[test]
fn reuse_keeps_the_entry_until_every_token_expired() {
    let mut g = Given::login_at(0);
    g.then_ok(g.refresh(0), 100);
    let events = g.then_ok(g.refresh(0), 200);
    // The head refresh token (minted at 100) lives until 3700; margin 10s.
    assert_eq!(revoked(&events).keep_until, at(3710));
}

#[test]
fn a_generation_ahead_of_the_state_asks_for_a_retry() {
    let g = Given::login_at(0);
    assert_eq!(g.when(g.refresh(5), 10), Err(DomainError::StateBehind));
}

#[test]
fn signout_revokes_once_and_is_idempotent() {
    let mut g = Given::login_at(0);
    let revoke = Command::Revoke {
        session_id: g.session,
        reason: RevokeReason::Logout,
    };
    let events = g.then_ok(revoke.clone(), 30);
    let r = revoked(&events);
    assert_eq!(r.reason, RevokeReason::Logout);
    assert_eq!(r.revoked_at, at(30));
    assert_eq!(r.keep_until, at(3610));
    assert!(g.when(revoke, 31).unwrap().is_empty());
    assert_eq!(
        g.when(g.refresh(0), 32),
        Err(DomainError::Revoked {
            reason: RevokeReason::Logout
        })
    );
    assert_eq!(
        g.projection.status(&g.session, at(32)),
        Some(FamilyStatus::Revoked {
            at: at(30),
            reason: RevokeReason::Logout
        })
    );
}

#[test]
fn signout_of_an_unknown_session_changes_nothing() {
    let g = Given::login_at(0);
    let other = Command::Revoke {
        session_id: crate::testing::session_id(),
        reason: RevokeReason::Logout,
    };
    let ctx = DecideContext {
        now: at(1),
        policy: &g.policy,
        region: "test",
        trace_context: None,
        event_id: crate::testing::event_id(),
    };
    assert!(decide(None, None, other, &ctx).unwrap().is_empty());
}

#[test]
fn subject_revoke_covers_earlier_sessions_only() {
    let mut g = Given::login_at(0);
    let ctx = DecideContext {
        now: at(50),
        policy: &g.policy,
        region: "test",
        trace_context: None,
        event_id: crate::testing::event_id(),
    };
    let event = decide_subject_revoke(g.subject.clone(), RevokeReason::Admin, &ctx);
    assert_eq!(event.session_id, None);
    g.projection.apply(&event);
    assert_eq!(
        g.when(g.refresh(0), 51),
        Err(DomainError::Revoked {
            reason: RevokeReason::Admin
        })
    );
    // Kept as long as the longest-lived token minted before it: idle ttl + margin.
    let entry = g.projection.subject_revocation(&g.subject).unwrap();
    assert_eq!(entry.keep_until, at(50 + 3600 + 10));

    // A login in the same microsecond as the revocation is not covered by it.
    let later = crate::testing::session_id();
    let open = Command::Open {
        session_id: later,
        subject: g.subject.clone(),
        client_id: None,
        claims: serde_json::Map::new(),
        access_jti: "j".into(),
    };
    let events = decide(None, Some(entry), open, &ctx).unwrap();
    g.projection.apply(&events[0]);
    assert_eq!(
        g.projection.status(&later, at(50)),
        Some(FamilyStatus::Active)
    );
}

#[test]
fn status_turns_expired_when_nothing_is_usable() {
    let g = Given::login_at(0);
    assert_eq!(
        g.projection.status(&g.session, at(3599)),
        Some(FamilyStatus::Active)
    );
    assert_eq!(
        g.projection.status(&g.session, at(3600)),
        Some(FamilyStatus::Expired)
    );
}

#[test]
fn sixteen_concurrent_refreshes_converge_on_one_successor() {
    let mut g = Given::login_at(0);
    let mut heads = std::collections::BTreeSet::new();
    for i in 0..16 {
        let events = g.then_ok(g.refresh(0), 100 + i / 4);
        let (event, _) = refreshed(&events);
        heads.insert(event.generation.unwrap());
    }
    assert_eq!(heads.len(), 1);
    assert_eq!(g.head(), Generation::new(1));
}

#[test]
fn signout_of_a_family_not_seen_yet_revokes_it_whichever_event_comes_first() {
    let g = Given::login_at(0);
    let ctx = DecideContext {
        now: at(40),
        policy: &g.policy,
        region: "test",
        trace_context: None,
        event_id: crate::testing::event_id(),
    };
    // A refresh token names the family, not the user.
    let unseen = decide_revoke_unseen(g.session, None, RevokeReason::Logout, &ctx);
    assert!(unseen.subject.is_unknown());
    let r = revoked(std::slice::from_ref(&unseen));
    assert_eq!(r.revoked_at, at(40));
    assert!(r.keep_until >= at(40).saturating_add(g.policy.refresh_idle_ttl));

    let mut revoked_first = Projection::new();
    revoked_first.apply(&unseen);
    revoked_first.merge(&g.projection);
    let mut login_first = g.projection.clone();
    login_first.apply(&unseen);
    assert_eq!(revoked_first, login_first);
    assert_eq!(revoked_first.digest(), login_first.digest());
    let family = login_first.family(&g.session).unwrap();
    assert_eq!(family.subject, g.subject, "the real subject wins the join");
    assert_eq!(
        family.window,
        g.projection.family(&g.session).unwrap().window
    );
    assert_eq!(
        login_first.status(&g.session, at(41)),
        Some(FamilyStatus::Revoked {
            at: at(40),
            reason: RevokeReason::Logout
        })
    );
}

#[test]
fn decide_is_a_pure_function_of_state_command_and_context() {
    let mut g = Given::login_at(0);
    g.then_ok(g.refresh(0), 10);
    // A grace retry: the one event whose id nothing in the command determines.
    let ctx = DecideContext {
        now: at(11),
        policy: &g.policy,
        region: "test",
        trace_context: None,
        event_id: crate::testing::event_id(),
    };
    let state = g.projection.family(&g.session);
    let subject = g.projection.subject_revocation(&g.subject);
    let first = decide(state, subject, g.refresh(0), &ctx).unwrap();
    let again = decide(state, subject, g.refresh(0), &ctx).unwrap();
    assert_eq!(first, again);
    assert_eq!(first[0].event_id, ctx.event_id);
    // Subject-wide and unseen revocations take it too.
    assert_eq!(
        decide_subject_revoke(g.subject.clone(), RevokeReason::Logout, &ctx).event_id,
        ctx.event_id
    );
}
