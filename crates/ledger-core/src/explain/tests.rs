//! Given a history, when a token is explained at an instant, then a verdict, its rule
//! and the events it cites.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;
use crate::testing::{at, before, short_policy as policy};
use crate::{Projection, Subject, decide_subject_revoke};

/// A family's history, built by [`decide`] as the API builds it, plus the subject-wide
/// revocations of the log.
struct Given {
    projection: Projection,
    policy: Policy,
    session: SessionId,
    subject: Subject,
    family: Vec<Event>,
    subjects: Vec<Event>,
}

impl Given {
    fn login_at(secs: u64) -> Given {
        Given::login_as("alice", secs)
    }

    fn login_as(subject: &str, secs: u64) -> Given {
        let mut g = Given {
            projection: Projection::new(),
            policy: policy(),
            session: crate::testing::session_id(),
            subject: Subject::parse(subject).unwrap(),
            family: Vec::new(),
            subjects: Vec::new(),
        };
        let open = Command::Open {
            session_id: g.session,
            subject: g.subject.clone(),
            client_id: Some("web".into()),
            claims: serde_json::Map::new(),
            access_jti: "jti-0".into(),
        };
        g.run(open, secs);
        g
    }

    fn ctx(&self, secs: u64) -> DecideContext<'_> {
        DecideContext {
            now: at(secs),
            policy: &self.policy,
            region: "test",
            trace_context: None,
            event_id: crate::testing::event_id(),
        }
    }

    fn run(&mut self, command: Command, secs: u64) -> Vec<Event> {
        let state = self.projection.family(&self.session);
        let subject = self.projection.subject_revocation(&self.subject);
        let events = decide(state, subject, command, &self.ctx(secs)).unwrap();
        for e in &events {
            self.projection.apply(e);
            self.family.push(e.clone());
        }
        events
    }

    fn refreshed(mut self, generation: u64, secs: u64) -> Given {
        let refresh = Command::Refresh {
            session_id: self.session,
            presented: Generation::new(generation),
            access_jti: format!("jti-r{generation}-{secs}"),
        };
        self.run(refresh, secs);
        self
    }

    /// Refreshed every 50 minutes: idle never runs out, and the head minted at 3 h 20
    /// min (generation 4) is capped at the 4 h deadline.
    fn sliding(self) -> Given {
        [(0, 3000), (1, 6000), (2, 9000), (3, 12000)]
            .into_iter()
            .fold(self, |g, (generation, secs)| g.refreshed(generation, secs))
    }

    fn signed_out(mut self, secs: u64) -> Given {
        let revoke = Command::Revoke {
            session_id: self.session,
            reason: RevokeReason::Logout,
        };
        self.run(revoke, secs);
        self
    }

    fn signed_out_everywhere(mut self, secs: u64) -> Given {
        let event =
            decide_subject_revoke(self.subject.clone(), RevokeReason::Admin, &self.ctx(secs));
        self.projection.apply(&event);
        self.subjects.push(event);
        self
    }

    fn when(&self, token: &TokenFacts, instant: Timestamp) -> Explanation {
        explain(token, &self.family, &self.subjects, &self.policy, instant)
    }

    fn refresh_token(&self, generation: u64) -> TokenFacts {
        TokenFacts::Refresh {
            session_id: self.session,
            generation: Generation::new(generation),
        }
    }

    /// The access token the `n`th event of the family handed out, as its claims say.
    fn access_token(&self, n: usize) -> TokenFacts {
        let e = &self.family[n];
        let (jti, exp) = match &e.kind {
            EventKind::SessionIssued(i) => (i.access_jti.clone(), i.access_expires_at),
            EventKind::SessionRefreshed(r) => (r.access_jti.clone(), r.access_expires_at),
            EventKind::SessionRevokedAll(_) => panic!("a revocation mints nothing"),
        };
        TokenFacts::Access {
            session_id: self.session,
            jti,
            issued_at: Timestamp::from_unix_seconds(e.occurred_at.unix_seconds()),
            expires_at: exp,
        }
    }
}

fn cited_types(e: &Explanation) -> Vec<&'static str> {
    e.cited.iter().map(|c| c.event_type).collect()
}

#[test]
fn refresh_token_before_its_rotation_is_the_head() {
    let g = Given::login_at(0).refreshed(0, 100);
    let e = g.when(&g.refresh_token(0), at(99));
    assert!(e.acceptable);
    assert_eq!(
        e.rule,
        Rule::Rotate {
            generation: Generation::new(0)
        }
    );
    assert_eq!(e.rule.to_string(), "rotate: generation 0 was the head");
    assert_eq!(cited_types(&e), ["SessionIssued"]);
    assert_eq!(e.cited[0].event_id, g.family[0].event_id);
}

#[test]
fn refresh_token_inside_the_grace_window_is_a_grace_retry() {
    let g = Given::login_at(0).refreshed(0, 100);
    for secs in [100, 109] {
        let e = g.when(&g.refresh_token(0), at(secs));
        assert!(e.acceptable, "{secs}: {e:?}");
        assert_eq!(
            e.rule,
            Rule::GraceRetry {
                generation: Generation::new(0),
                rotated_at: at(100),
                since: Duration::from_secs(secs - 100),
                grace: Duration::from_secs(10),
            }
        );
        assert_eq!(cited_types(&e), ["SessionIssued", "SessionRefreshed"]);
    }
    let e = g.when(&g.refresh_token(0), at(109));
    assert_eq!(
        e.rule.to_string(),
        "grace retry of generation 0, rotated 9 s before (grace 10 s)"
    );
}

#[test]
fn refresh_token_after_the_grace_window_is_reuse() {
    let g = Given::login_at(0).refreshed(0, 100);
    let e = g.when(&g.refresh_token(0), at(280));
    assert!(!e.acceptable);
    assert_eq!(
        e.rule,
        Rule::Reuse {
            generation: Generation::new(0),
            head: Generation::new(1),
            rotated_at: Some(at(100)),
            since: Some(Duration::from_secs(180)),
            grace: Duration::from_secs(10),
        }
    );
    assert_eq!(
        e.rule.to_string(),
        "reuse: generation 0 was rotated 3 min before, past the 10 s grace → the family would \
         be revoked"
    );
    assert_eq!(e.cited[1].event_id, g.family[1].event_id);
    // The first instant past the window, exactly as `decide` draws it.
    assert!(!g.when(&g.refresh_token(0), at(110)).acceptable);
}

#[test]
fn an_older_generation_is_reuse_even_inside_the_window() {
    let g = Given::login_at(0).refreshed(0, 100).refreshed(1, 101);
    let e = g.when(&g.refresh_token(0), at(102));
    assert!(!e.acceptable);
    assert!(
        matches!(e.rule, Rule::Reuse { head, .. } if head == Generation::new(2)),
        "{e:?}"
    );
    assert_eq!(
        cited_types(&e),
        ["SessionIssued", "SessionRefreshed", "SessionRefreshed"]
    );
}

#[test]
fn a_token_explained_before_the_login_was_not_yet_issued() {
    let g = Given::login_at(0).refreshed(0, 100);
    for token in [g.refresh_token(0), g.access_token(0)] {
        let e = g.when(&token, before(1));
        assert!(!e.acceptable);
        assert_eq!(
            e.rule,
            Rule::NotYetIssued {
                minted_at: Some(at(0))
            }
        );
        assert_eq!(cited_types(&e), ["SessionIssued"]);
    }
    // A later generation, before the rotation that minted it.
    let e = g.when(&g.refresh_token(1), at(50));
    assert_eq!(
        e.rule,
        Rule::NotYetIssued {
            minted_at: Some(at(100))
        }
    );
    assert_eq!(e.cited[0].event_id, g.family[1].event_id);
}

#[test]
fn refresh_token_just_before_and_just_after_the_session_deadline() {
    let g = Given::login_at(0).sliding();
    let deadline = at(4 * 3600);
    let e = g.when(
        &g.refresh_token(4),
        deadline.saturating_sub(Duration::from_micros(1)),
    );
    assert!(e.acceptable, "{e:?}");
    let e = g.when(&g.refresh_token(4), deadline);
    assert!(!e.acceptable);
    assert_eq!(e.rule, Rule::PastDeadline { deadline });
    assert_eq!(
        e.rule.to_string(),
        format!("past the session deadline {deadline}")
    );
    assert_eq!(cited_types(&e), ["SessionIssued"]);
}

#[test]
fn access_token_just_before_and_just_after_the_session_deadline() {
    let g = Given::login_at(0).sliding().refreshed(4, 4 * 3600 - 20);
    let token = g.access_token(5);
    let deadline = at(4 * 3600);
    // Accepted until the deadline plus the validators' leeway, as they judge it.
    let e = g.when(&token, at(4 * 3600 + 4));
    assert!(e.acceptable, "{e:?}");
    assert_eq!(
        e.rule,
        Rule::Active {
            expires_at: deadline
        }
    );
    let e = g.when(&token, at(4 * 3600 + 5));
    assert!(!e.acceptable);
    assert_eq!(e.rule, Rule::PastDeadline { deadline });
    assert_eq!(cited_types(&e), ["SessionIssued", "SessionRefreshed"]);
}

#[test]
fn idle_refresh_token_expires() {
    let g = Given::login_at(0);
    assert!(g.when(&g.refresh_token(0), at(3599)).acceptable);
    let e = g.when(&g.refresh_token(0), at(3600));
    assert_eq!(e.rule, Rule::RefreshExpired { at: at(3600) });
}

#[test]
fn access_token_expires_after_exp_and_the_leeway() {
    let g = Given::login_at(0);
    assert!(g.when(&g.access_token(0), at(64)).acceptable);
    let e = g.when(&g.access_token(0), at(65));
    assert!(!e.acceptable);
    assert_eq!(
        e.rule,
        Rule::AccessExpired {
            expires_at: at(60),
            leeway: Duration::from_secs(5)
        }
    );
}

#[test]
fn access_token_before_and_after_its_family_signout() {
    let g = Given::login_at(0).signed_out(30);
    let token = g.access_token(0);
    let e = g.when(&token, at(29));
    assert!(e.acceptable);
    assert_eq!(cited_types(&e), ["SessionIssued"]);
    for secs in [30, 31] {
        let e = g.when(&token, at(secs));
        assert!(!e.acceptable);
        let revocation = g.family[1].event_id;
        assert_eq!(
            e.rule,
            Rule::FamilyRevoked {
                at: at(30),
                reason: RevokeReason::Logout,
                event: revocation
            }
        );
        assert_eq!(cited_types(&e), ["SessionIssued", "SessionRevokedAll"]);
        assert_eq!(
            e.rule.to_string(),
            format!(
                "family revoked at {} (logout) by event {revocation}",
                at(30)
            )
        );
    }
    // The refresh token is refused for the same reason, by `decide`.
    let e = g.when(&g.refresh_token(0), at(31));
    assert_eq!(e.rule.code(), "family_revoked");
}

#[test]
fn access_token_after_a_subject_revocation() {
    let g = Given::login_at(0).signed_out_everywhere(40);
    let token = g.access_token(0);
    assert!(g.when(&token, at(39)).acceptable);
    let e = g.when(&token, at(40));
    assert!(!e.acceptable);
    let revocation = g.subjects[0].event_id;
    assert_eq!(
        e.rule,
        Rule::SubjectRevoked {
            at: at(40),
            reason: RevokeReason::Admin,
            event: revocation
        }
    );
    assert_eq!(e.cited.last().unwrap().event_id, revocation);
    assert_eq!(
        g.when(&g.refresh_token(0), at(41)).rule.code(),
        "subject_revoked"
    );
}

#[test]
fn a_subject_revocation_spares_later_logins_and_other_subjects() {
    let earlier = Given::login_at(0).signed_out_everywhere(40);
    let mut later = Given::login_at(50);
    later.subject = earlier.subject.clone();
    later.subjects = earlier.subjects.clone();
    assert!(later.when(&later.access_token(0), at(60)).acceptable);

    let mut bob = Given::login_as("bob", 0);
    bob.subjects = earlier.subjects.clone();
    assert!(bob.when(&bob.access_token(0), at(45)).acceptable);
}

#[test]
fn events_of_other_families_are_ignored() {
    let g = Given::login_at(0);
    let other = Given::login_at(0).signed_out(10);
    let mixed: Vec<Event> = g.family.iter().chain(&other.family).cloned().collect();
    let e = explain(&g.access_token(0), &mixed, &[], &g.policy, at(20));
    assert!(e.acceptable, "{e:?}");
}

#[test]
fn durations_read_naturally() {
    assert_eq!(human(Duration::from_millis(850)), "850 ms");
    assert_eq!(human(Duration::from_secs(12)), "12 s");
    assert_eq!(human(Duration::from_millis(12_500)), "12.5 s");
    assert_eq!(human(Duration::from_secs(200)), "3 min 20 s");
    assert_eq!(human(Duration::from_secs(7500)), "2 h 5 min");
}

#[test]
fn refresh_verdicts_agree_with_decide_on_the_history_so_far() {
    let g = Given::login_at(0)
        .refreshed(0, 100)
        .refreshed(1, 300)
        .signed_out(500);
    for secs in (0..600).step_by(3) {
        // What the API would have held at that instant, built independently.
        let mut so_far = Projection::new();
        g.family
            .iter()
            .filter(|e| e.occurred_at <= at(secs))
            .for_each(|e| so_far.apply(e));
        for generation in 0..4 {
            let refresh = Command::Refresh {
                session_id: g.session,
                presented: Generation::new(generation),
                access_jti: "j".into(),
            };
            let decided = decide(so_far.family(&g.session), None, refresh, &g.ctx(secs));
            let rotates = matches!(
                decided.as_deref(),
                Ok([Event {
                    kind: EventKind::SessionRefreshed(_),
                    ..
                }])
            );
            let e = g.when(&g.refresh_token(generation), at(secs));
            assert_eq!(
                e.acceptable, rotates,
                "generation {generation} at {secs}: {e:?}"
            );
        }
    }
}
