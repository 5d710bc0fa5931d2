//! Given histories recorded under the current policy, when backtested under a
//! candidate, then these changes.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;
use crate::testing::at;
use crate::{Command, DecideContext, Projection, decide};

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;

fn policy(grace: u64, idle: u64, max: u64) -> Policy {
    Policy {
        access_ttl: Duration::from_secs(5 * MINUTE),
        refresh_idle_ttl: Duration::from_secs(idle),
        session_max_ttl: Duration::from_secs(max),
        refresh_grace: Duration::from_secs(grace),
        clock_leeway: Duration::from_secs(5),
        skew_margin: Duration::from_secs(5),
    }
}

/// Grace 30 s, idle 1 h, deadline 8 h.
fn current() -> Policy {
    policy(30, HOUR, 8 * HOUR)
}

/// Grace 10 s, idle 30 min, deadline 4 h.
fn strict() -> Policy {
    policy(10, 30 * MINUTE, 4 * HOUR)
}

/// Grace 60 s, idle 2 h, deadline 12 h.
fn loose() -> Policy {
    policy(60, 2 * HOUR, 12 * HOUR)
}

/// One family's history, every event produced by `decide` as the API would.
struct Given {
    projection: Projection,
    policy: Policy,
    session: SessionId,
    events: Vec<Event>,
}

impl Given {
    fn login(secs: u64) -> Given {
        Given::login_with(current(), secs)
    }

    fn login_with(policy: Policy, secs: u64) -> Given {
        let session = crate::testing::session_id();
        let open = Command::Open {
            session_id: session,
            subject: Subject::parse("alice").unwrap(),
            client_id: None,
            claims: serde_json::Map::new(),
            access_jti: "jti-0".into(),
        };
        let mut g = Given {
            projection: Projection::new(),
            policy,
            session,
            events: Vec::new(),
        };
        g.run(open, secs);
        g
    }

    fn run(&mut self, command: Command, secs: u64) -> &mut Self {
        let ctx = DecideContext {
            now: at(secs),
            policy: &self.policy,
            region: "test",
            trace_context: None,
            event_id: crate::testing::event_id(),
        };
        let state = self.projection.family(&self.session);
        let subject = state.and_then(|s| self.projection.subject_revocation(&s.subject));
        let events = decide(state, subject, command, &ctx).unwrap();
        assert!(!events.is_empty(), "no event at {secs}");
        for e in &events {
            self.projection.apply(e);
        }
        self.events.extend(events);
        self
    }

    /// Presents generation `generation` at `secs`.
    fn refresh(&mut self, generation: u64, secs: u64) -> &mut Self {
        let command = Command::Refresh {
            session_id: self.session,
            presented: Generation::new(generation),
            access_jti: format!("jti-{secs}"),
        };
        self.run(command, secs)
    }

    /// Presents the head at `secs`.
    fn rotate(&mut self, secs: u64) -> &mut Self {
        let head = self.projection.family(&self.session).unwrap().head.unwrap();
        self.refresh(head.generation.get(), secs)
    }

    fn logout(&mut self, secs: u64) -> &mut Self {
        let command = Command::Revoke {
            session_id: self.session,
            reason: RevokeReason::Logout,
        };
        self.run(command, secs)
    }

    fn last_kind(&self) -> &EventKind {
        &self.events.last().unwrap().kind
    }
}

fn backtest(events: &[Event], candidate: Policy, as_of: Timestamp) -> BacktestReport {
    let mut b = Backtest::new(current(), candidate).unwrap();
    events.iter().for_each(|e| b.push(e));
    b.finish(as_of)
}

/// The only change the report names.
fn only_change(report: &BacktestReport) -> &Divergence {
    assert_eq!(report.divergences.len(), 1, "{report:#?}");
    &report.divergences[0]
}

#[test]
fn a_grace_retry_past_the_candidate_grace_is_revoked_for_reuse() {
    let mut g = Given::login(0);
    g.rotate(600).refresh(0, 600 + 20).logout(700);
    assert!(matches!(g.last_kind(), EventKind::SessionRevokedAll(_)));

    let report = backtest(&g.events, strict(), at(HOUR));

    let d = only_change(&report);
    assert_eq!(d.session_id, g.session);
    assert_eq!(d.at, at(620));
    assert_eq!(
        d.change,
        Change::RevokedForReuse {
            presented: Generation::INITIAL,
            rotated_at: at(600),
        }
    );
    assert_eq!(report.counts.revoked_for_reuse, 1);
}

#[test]
fn a_grace_retry_just_inside_the_candidate_grace_is_unchanged() {
    let mut g = Given::login(0);
    g.rotate(600).refresh(0, 609).logout(700);

    let report = backtest(&g.events, strict(), at(HOUR));

    assert_eq!(report.counts, Counts::default(), "{report:#?}");
    assert_eq!(report.families, 1);
}

#[test]
fn a_reuse_within_the_candidate_grace_is_not_revoked() {
    let mut g = Given::login(0);
    g.rotate(600).refresh(0, 600 + 45);
    let EventKind::SessionRevokedAll(r) = g.last_kind() else {
        panic!("expected a reuse revocation");
    };
    assert_eq!(r.reason, RevokeReason::ReuseDetected);

    let report = backtest(&g.events, loose(), at(HOUR));

    let d = only_change(&report);
    assert_eq!(d.at, at(645));
    assert_eq!(
        d.change,
        Change::NotRevoked {
            presented: Generation::INITIAL,
            rotated_at: at(600),
        }
    );
}

#[test]
fn a_reuse_of_an_older_generation_stays_revoked_whatever_the_grace() {
    let mut g = Given::login(0);
    g.rotate(600).rotate(1200).refresh(0, 1201);

    let report = backtest(&g.events, loose(), at(HOUR));

    assert_eq!(report.counts, Counts::default(), "{report:#?}");
}

#[test]
fn a_rotation_after_the_candidate_idle_means_the_session_ended_earlier() {
    let mut g = Given::login(0);
    g.rotate(45 * MINUTE).logout(46 * MINUTE);

    let report = backtest(&g.events, strict(), at(2 * HOUR));

    let d = only_change(&report);
    assert_eq!(d.at, at(30 * MINUTE));
    assert_eq!(
        d.change,
        Change::EndedEarlier {
            cause: EndCause::Idle,
            refused_at: Some(at(45 * MINUTE)),
            current_end: None,
        }
    );
}

#[test]
fn a_rotation_past_the_candidate_deadline_means_the_session_ended_earlier() {
    let mut g = Given::login(0);
    for step in 1..=13 {
        g.rotate(step * 20 * MINUTE);
    }

    let report = backtest(&g.events, strict(), at(24 * HOUR));

    let d = only_change(&report);
    assert_eq!(d.at, at(4 * HOUR));
    assert_eq!(
        d.change,
        Change::EndedEarlier {
            cause: EndCause::Deadline,
            refused_at: Some(at(4 * HOUR)),
            current_end: None,
        }
    );
}

#[test]
fn a_signout_after_the_candidate_idle_means_the_session_ended_earlier() {
    let mut g = Given::login(0);
    g.logout(40 * MINUTE);

    let report = backtest(&g.events, strict(), at(2 * HOUR));

    let d = only_change(&report);
    assert_eq!(d.at, at(30 * MINUTE));
    assert_eq!(
        d.change,
        Change::EndedEarlier {
            cause: EndCause::Idle,
            refused_at: None,
            current_end: Some(at(40 * MINUTE)),
        }
    );
}

#[test]
fn a_session_that_went_idle_lasts_longer_under_a_longer_idle() {
    let mut g = Given::login(0);
    g.rotate(10 * MINUTE);

    let ended = backtest(&g.events, loose(), at(5 * HOUR));
    let live = backtest(&g.events, loose(), at(2 * HOUR));

    let d = only_change(&ended);
    assert_eq!(d.at, at(70 * MINUTE));
    assert_eq!(
        d.change,
        Change::EndedLater {
            cause: EndCause::Idle,
            candidate_end: Some(at(130 * MINUTE)),
        }
    );
    assert_eq!(
        only_change(&live).change,
        Change::EndedLater {
            cause: EndCause::Idle,
            candidate_end: None,
        }
    );
}

#[test]
fn a_live_session_already_ended_under_a_shorter_idle() {
    let g = Given::login(0);

    let report = backtest(&g.events, strict(), at(40 * MINUTE));
    let not_yet = backtest(&g.events, strict(), at(20 * MINUTE));

    assert_eq!(
        only_change(&report).change,
        Change::EndedEarlier {
            cause: EndCause::Idle,
            refused_at: None,
            current_end: None,
        }
    );
    assert_eq!(not_yet.counts, Counts::default());
}

#[test]
fn only_the_first_divergence_of_a_family_is_reported() {
    let mut g = Given::login(0);
    // Reuse under the candidate at 620 s, then a rotation it would have refused.
    g.rotate(600).refresh(0, 620).rotate(600 + 50 * MINUTE);

    let report = backtest(&g.events, strict(), at(24 * HOUR));

    assert!(matches!(
        only_change(&report).change,
        Change::RevokedForReuse { .. }
    ));
}

#[test]
fn a_subject_revocation_ends_the_families_it_covers() {
    let mut g = Given::login(0);
    g.rotate(10 * MINUTE);
    let ctx = DecideContext {
        now: at(20 * MINUTE),
        policy: &g.policy,
        region: "test",
        trace_context: None,
        event_id: crate::testing::event_id(),
    };
    let everywhere =
        crate::decide_subject_revoke(Subject::parse("alice").unwrap(), RevokeReason::Admin, &ctx);
    let events = [g.events.clone(), vec![everywhere]].concat();

    // Revoked at 20 min: neither a 30 min nor a 2 h idle changes anything.
    let strict_report = backtest(&events, strict(), at(24 * HOUR));
    let loose_report = backtest(&events, loose(), at(24 * HOUR));
    // Without it the session went idle at 70 min, and lasts longer under 2 h.
    let without = backtest(&g.events, loose(), at(24 * HOUR));

    assert_eq!(
        strict_report.counts,
        Counts::default(),
        "{strict_report:#?}"
    );
    assert_eq!(loose_report.counts, Counts::default(), "{loose_report:#?}");
    assert_eq!(loose_report.subject_revocations, 1);
    assert_eq!(without.counts.ended_later_idle, 1);
}

#[test]
fn a_history_the_current_policy_would_not_have_written_is_inconsistent() {
    // Written under a 60 s grace: a retry 45 s after the rotation.
    let mut g = Given::login_with(loose(), 0);
    g.rotate(600).refresh(0, 645);

    let report = backtest(&g.events, strict(), at(HOUR));

    assert_eq!(report.inconsistent, 1);
    assert_eq!(report.families, 0);
    assert!(report.divergences.is_empty());
}

#[test]
fn a_family_without_its_login_is_incomplete() {
    let mut g = Given::login(0);
    g.rotate(600).refresh(0, 620);

    let report = backtest(&g.events[1..], strict(), at(HOUR));

    assert_eq!(report.incomplete, 1);
    assert!(report.divergences.is_empty());
}

#[test]
fn duplicates_and_order_across_families_do_not_matter() {
    let mut g = Given::login(0);
    g.rotate(600).refresh(0, 620);
    let mut events = [g.events.clone(), g.events.clone()].concat();
    events.reverse();

    let report = backtest(&events, strict(), at(HOUR));

    assert_eq!(report.events, 6);
    assert_eq!(report.counts.revoked_for_reuse, 1, "{report:#?}");
}

#[test]
fn the_candidate_must_be_a_valid_policy() {
    let grace_longer_than_idle = policy(2 * HOUR, HOUR, 8 * HOUR);
    assert!(matches!(
        Backtest::new(current(), grace_longer_than_idle),
        Err(PolicyError::GraceTooLong { .. })
    ));
}

/// As of 30 days after the first login.
const AS_OF: u64 = 30 * 24 * HOUR;

/// Seventy families in seven kinds of ten, recorded under [`current`], interleaved in
/// time as a log holds them. Family `k` of a kind takes the `k`-th value of its list;
/// logins are spread by a seeded generator.
fn generated_history() -> Vec<Event> {
    // Grace retries, seconds after the rotation.
    const RETRY: [u64; 10] = [1, 3, 5, 8, 9, 10, 12, 20, 25, 29];
    // Reuses of head-1, seconds after the rotation (past the current 30 s grace).
    const REUSE: [u64; 10] = [30, 31, 40, 45, 59, 60, 61, 90, 120, 600];
    // Reuses of an older generation, seconds after the second rotation.
    const OLD_REUSE: [u64; 10] = [1, 5, 10, 29, 30, 60, 120, 300, 599, 600];
    // Minutes from login to the one rotation.
    const IDLE_GAP: [u64; 10] = [5, 10, 20, 29, 30, 31, 45, 50, 55, 59];
    // Rotations every 20 minutes, then a signout.
    const ACTIVE: [u64; 10] = [6, 9, 11, 12, 13, 15, 18, 20, 22, 23];
    // Rotations every 20 minutes, then silence.
    const SILENT: [u64; 10] = [0, 1, 3, 6, 10, 11, 12, 15, 20, 22];
    // Minutes before `AS_OF` of a login never used again.
    const RECENT: [u64; 10] = [5, 10, 20, 29, 31, 35, 40, 50, 59, 70];

    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next_login = || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % (24 * HOUR)
    };
    let mut events = Vec::new();
    for k in 0..10 {
        let s = next_login();
        let mut g = Given::login(s);
        g.rotate(s + 600)
            .refresh(0, s + 600 + RETRY[k])
            .logout(s + 600 + RETRY[k] + 60);
        events.append(&mut g.events);

        let s = next_login();
        let mut g = Given::login(s);
        g.rotate(s + 600).refresh(0, s + 600 + REUSE[k]);
        events.append(&mut g.events);

        let s = next_login();
        let mut g = Given::login(s);
        g.rotate(s + 600)
            .rotate(s + 1200)
            .refresh(0, s + 1200 + OLD_REUSE[k]);
        events.append(&mut g.events);

        let s = next_login();
        let mut g = Given::login(s);
        let rotated = s + IDLE_GAP[k] * MINUTE;
        g.rotate(rotated).logout(rotated + 60);
        events.append(&mut g.events);

        let s = next_login();
        let mut g = Given::login(s);
        for step in 1..=ACTIVE[k] {
            g.rotate(s + step * 20 * MINUTE);
        }
        g.logout(s + ACTIVE[k] * 20 * MINUTE + 60);
        events.append(&mut g.events);

        let s = next_login();
        let mut g = Given::login(s);
        for step in 1..=SILENT[k] {
            g.rotate(s + step * 20 * MINUTE);
        }
        events.append(&mut g.events);

        let mut g = Given::login(AS_OF - RECENT[k] * MINUTE);
        events.append(&mut g.events);
    }
    events.sort_by_key(|e| e.occurred_at);
    events
}

#[test]
fn a_generated_history_under_a_stricter_candidate() {
    let events = generated_history();

    let report = backtest(&events, strict(), at(AS_OF));

    assert_eq!(
        (report.families, report.inconsistent, report.incomplete),
        (70, 0, 0)
    );
    assert_eq!(
        report.counts,
        Counts {
            // Retries 10, 12, 20, 25 and 29 s after the rotation.
            revoked_for_reuse: 5,
            not_revoked: 0,
            // Rotations 30, 31, 45, 50, 55 and 59 min after login (6); silent after
            // 0..200 min (5); recent logins unused for 31..70 min (6).
            ended_earlier_idle: 17,
            // Active past 4 h (7); silent from 220 min on (5).
            ended_earlier_deadline: 12,
            ended_later_idle: 0,
            ended_later_deadline: 0,
        },
        "{report:#?}"
    );
    assert_eq!(report.divergences.len(), 34);
    assert!(report.divergences.is_sorted_by_key(|d| d.at));
}

#[test]
fn a_generated_history_under_a_looser_candidate() {
    let events = generated_history();

    let report = backtest(&events, loose(), at(AS_OF));

    assert_eq!(
        (report.families, report.inconsistent, report.incomplete),
        (70, 0, 0)
    );
    assert_eq!(
        report.counts,
        Counts {
            revoked_for_reuse: 0,
            // Reuses 30, 31, 40, 45 and 59 s after the rotation.
            not_revoked: 5,
            ended_earlier_idle: 0,
            ended_earlier_deadline: 0,
            // Every silent family but the last (9), and the login unused for 70 min,
            // still live under a 2 h idle (1).
            ended_later_idle: 10,
            // The silent family last rotated at 440 min hit the 8 h deadline.
            ended_later_deadline: 1,
        },
        "{report:#?}"
    );
    let still_live = report
        .divergences
        .iter()
        .filter(|d| {
            matches!(
                d.change,
                Change::EndedLater {
                    candidate_end: None,
                    ..
                }
            )
        })
        .count();
    assert_eq!(still_live, 1);
}

#[test]
fn the_current_policy_as_candidate_changes_nothing() {
    let events = generated_history();

    let report = backtest(&events, current(), at(AS_OF));

    assert_eq!(report.families, 70);
    assert_eq!(report.counts, Counts::default());
    assert!(report.divergences.is_empty());
}
