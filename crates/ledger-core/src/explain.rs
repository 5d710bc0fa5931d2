//! Why a token was, or was not, acceptable at a given instant, and which events say so.
//!
//! A refresh token is judged by [`decide`] itself, folded over the events that had
//! occurred by then, so the explanation cannot disagree with what the API would have
//! answered. An access token is judged like the validator judges it: lifetime (with
//! the clock leeway) first, then the family's revocation or a subject-wide one
//! covering it.

use std::fmt;
use std::time::Duration;

use crate::{
    Command, DecideContext, DomainError, Event, EventId, EventKind, FamilyState, Generation,
    Policy, RevocationScope, RevokeReason, SessionId, SubjectRevocation, Timestamp, decide,
};

/// What a token says about itself, once its signature or MAC has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenFacts {
    /// `rt1.<kid>.<family ‖ generation>.<mac>`.
    Refresh {
        session_id: SessionId,
        generation: Generation,
    },
    /// The claims of an access token that matter here (`sid`, `jti`, `iat`, `exp`).
    Access {
        session_id: SessionId,
        jti: String,
        issued_at: Timestamp,
        expires_at: Timestamp,
    },
}

impl TokenFacts {
    pub fn session_id(&self) -> SessionId {
        match self {
            TokenFacts::Refresh { session_id, .. } | TokenFacts::Access { session_id, .. } => {
                *session_id
            }
        }
    }
}

/// The verdict on one token at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub acceptable: bool,
    /// The rule that decides.
    pub rule: Rule,
    /// The events the rule rests on, oldest first.
    pub cited: Vec<Citation>,
}

/// One event an explanation rests on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Citation {
    pub event_id: EventId,
    pub event_type: &'static str,
    pub occurred_at: Timestamp,
    /// What the event has to do with the verdict.
    pub role: String,
}

/// The rule that decides a verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// No event at or before the instant had minted the token; `minted_at` is when
    /// one did, if the log holds it.
    NotYetIssued { minted_at: Option<Timestamp> },
    /// A refresh token of the head generation: presenting it rotates.
    Rotate { generation: Generation },
    /// The generation just rotated away, within the grace window: same successor.
    GraceRetry {
        generation: Generation,
        rotated_at: Timestamp,
        since: Duration,
        grace: Duration,
    },
    /// A rotated-away generation outside the grace window: presenting it revokes the
    /// family.
    Reuse {
        generation: Generation,
        head: Generation,
        rotated_at: Option<Timestamp>,
        since: Option<Duration>,
        grace: Duration,
    },
    /// The head refresh token was idle past its lifetime.
    RefreshExpired { at: Timestamp },
    /// The session's absolute deadline had passed.
    PastDeadline { deadline: Timestamp },
    /// An access token within its lifetime, of a family nothing had revoked.
    Active { expires_at: Timestamp },
    /// An access token past `exp` plus the clock leeway.
    AccessExpired {
        expires_at: Timestamp,
        leeway: Duration,
    },
    FamilyRevoked {
        at: Timestamp,
        reason: RevokeReason,
        event: EventId,
    },
    /// A revocation of every family of the subject that started by `at`.
    SubjectRevoked {
        at: Timestamp,
        reason: RevokeReason,
        event: EventId,
    },
}

impl Rule {
    /// A stable name for machines.
    pub fn code(&self) -> &'static str {
        match self {
            Rule::NotYetIssued { .. } => "not_yet_issued",
            Rule::Rotate { .. } => "rotate",
            Rule::GraceRetry { .. } => "grace_retry",
            Rule::Reuse { .. } => "reuse",
            Rule::RefreshExpired { .. } => "refresh_expired",
            Rule::PastDeadline { .. } => "past_deadline",
            Rule::Active { .. } => "active",
            Rule::AccessExpired { .. } => "access_expired",
            Rule::FamilyRevoked { .. } => "family_revoked",
            Rule::SubjectRevoked { .. } => "subject_revoked",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::NotYetIssued {
                minted_at: Some(at),
            } => write!(f, "not yet issued: minted at {at}"),
            Rule::NotYetIssued { minted_at: None } => {
                write!(f, "not yet issued: no event had minted it")
            }
            Rule::Rotate { generation } => {
                write!(f, "rotate: generation {generation} was the head")
            }
            Rule::GraceRetry {
                generation,
                since,
                grace,
                ..
            } => write!(
                f,
                "grace retry of generation {generation}, rotated {} before (grace {})",
                human(*since),
                human(*grace)
            ),
            Rule::Reuse {
                generation,
                head,
                since,
                grace,
                ..
            } => {
                match since {
                    Some(since) if generation.next() == *head => write!(
                        f,
                        "reuse: generation {generation} was rotated {} before, past the {} grace",
                        human(*since),
                        human(*grace)
                    )?,
                    Some(since) => write!(
                        f,
                        "reuse: generation {generation} was rotated {} before and generation \
                         {head} is the head",
                        human(*since)
                    )?,
                    None => write!(
                        f,
                        "reuse: generation {generation} was rotated away, generation {head} is \
                         the head"
                    )?,
                }
                write!(f, " → the family would be revoked")
            }
            Rule::RefreshExpired { at } => {
                write!(f, "expired at {at} (refresh token idle past its lifetime)")
            }
            Rule::PastDeadline { deadline } => write!(f, "past the session deadline {deadline}"),
            Rule::Active { expires_at } => {
                write!(f, "active: not expired (exp {expires_at}), not revoked")
            }
            Rule::AccessExpired { expires_at, leeway } => {
                write!(f, "expired at {expires_at} (leeway {})", human(*leeway))
            }
            Rule::FamilyRevoked { at, reason, event } => write!(
                f,
                "family revoked at {at} ({}) by event {event}",
                reason.as_str()
            ),
            Rule::SubjectRevoked { at, reason, event } => write!(
                f,
                "signed out everywhere at {at} ({}) by subject revocation event {event}",
                reason.as_str()
            ),
        }
    }
}

/// Was `token` acceptable at `at`, and why?
///
/// `family_events` are the events of the token's family (its history);
/// `subject_events` may hold any subject-wide revocations, of any subject: only those
/// of the family's subject count. Only events that occurred at or before `at` are
/// folded in; later ones are consulted only to say when a token not yet issued was.
pub fn explain(
    token: &TokenFacts,
    family_events: &[Event],
    subject_events: &[Event],
    policy: &Policy,
    at: Timestamp,
) -> Explanation {
    let session_id = token.session_id();
    let family: Vec<&Event> = family_events
        .iter()
        .filter(|e| e.session_id == Some(session_id))
        .collect();
    let known = Known::fold(&family, subject_events, at);
    match token {
        TokenFacts::Refresh { generation, .. } => {
            explain_refresh(&known, &family, session_id, *generation, policy, at)
        }
        TokenFacts::Access {
            jti,
            issued_at,
            expires_at,
            ..
        } => explain_access(&known, &family, jti, *issued_at, *expires_at, policy, at),
    }
}

/// What was known at the instant: the family's events and the subject revocations
/// that cover it, folded as the projection folds them.
struct Known<'a> {
    events: Vec<&'a Event>,
    state: Option<FamilyState>,
    /// Subject revocations covering the family, oldest first.
    covering: Vec<&'a Event>,
    subject_revocation: Option<SubjectRevocation>,
}

impl<'a> Known<'a> {
    fn fold(family: &[&'a Event], subject_events: &'a [Event], at: Timestamp) -> Known<'a> {
        let events: Vec<&Event> = family
            .iter()
            .copied()
            .filter(|e| e.occurred_at <= at)
            .collect();
        let mut state: Option<FamilyState> = None;
        for e in &events {
            if let Some(s) = FamilyState::from_event(e) {
                match &mut state {
                    Some(state) => state.merge(&s),
                    None => state = Some(s),
                }
            }
        }
        let mut covering: Vec<&Event> = Vec::new();
        let mut subject_revocation: Option<SubjectRevocation> = None;
        if let Some(state) = &state {
            for e in subject_events.iter().filter(|e| e.occurred_at <= at) {
                let Some(r) = SubjectRevocation::from_event(e) else {
                    continue;
                };
                if r.subject != state.subject {
                    continue;
                }
                if state.is_covered_by(&r) {
                    covering.push(e);
                }
                match &mut subject_revocation {
                    Some(s) => s.merge(&r),
                    None => subject_revocation = Some(r),
                }
            }
        }
        covering.sort_by_key(|e| (e.occurred_at, e.event_id));
        Known {
            events,
            state,
            covering,
            subject_revocation,
        }
    }

    /// The revocation that applies at the instant: the family's own first, as
    /// [`decide`] and the validator check it.
    fn revocation(&self) -> Option<(Rule, Citation)> {
        let state = self.state.as_ref()?;
        if let Some(revoked) = &state.revoked {
            // The event the projection's merge keeps as the family's revocation.
            let event = self
                .events
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::SessionRevokedAll(r) if r.scope == RevocationScope::Family => {
                        Some((e, r))
                    }
                    _ => None,
                })
                .min_by_key(|(e, r)| {
                    (
                        r.revoked_at,
                        r.reason,
                        r.replayed_generation,
                        r.replayed_rotated_at,
                        e.event_id,
                    )
                })
                .map(|(e, _)| *e)?;
            let rule = Rule::FamilyRevoked {
                at: revoked.at,
                reason: revoked.reason,
                event: event.event_id,
            };
            let role = format!("revoked the family ({})", revoked.reason.as_str());
            return Some((rule, cite(event, role)));
        }
        let event = *self.covering.first()?;
        let r = SubjectRevocation::from_event(event)?;
        let rule = Rule::SubjectRevoked {
            at: r.revoked_at,
            reason: r.reason,
            event: event.event_id,
        };
        let role = format!(
            "revoked every family of {} started by {} ({})",
            r.subject,
            r.revoked_at,
            r.reason.as_str()
        );
        Some((rule, cite(event, role)))
    }
}

fn explain_refresh(
    known: &Known<'_>,
    family: &[&Event],
    session_id: SessionId,
    generation: Generation,
    policy: &Policy,
    at: Timestamp,
) -> Explanation {
    // A what-if decision: its events are never appended, so their id is derived from
    // the question, and the verdict depends on the log and the instant alone.
    let ctx = DecideContext {
        now: at,
        policy,
        region: "explain",
        trace_context: None,
        event_id: EventId::derived(session_id, "explain", generation),
    };
    let command = Command::Refresh {
        session_id,
        presented: generation,
        access_jti: String::new(),
    };
    let minted = |g: Generation| minting_of(&known.events, g);
    let minted_role = |g: Generation| format!("minted generation {g}");
    let decision = decide(
        known.state.as_ref(),
        known.subject_revocation.as_ref(),
        command,
        &ctx,
    );
    match decision {
        Ok(events) => {
            let produced = events.first().map(|e| (&e.kind, e.generation));
            match produced {
                Some((EventKind::SessionRefreshed(r), _)) if r.grace_retry => {
                    let successor = generation.next();
                    let mut cited = cite_some(minted(generation), minted_role(generation));
                    cited.extend(cite_some(
                        minted(successor),
                        format!("rotated generation {generation} away (to {successor})"),
                    ));
                    acceptable(
                        Rule::GraceRetry {
                            generation,
                            rotated_at: r.rotated_at,
                            since: at.duration_since(r.rotated_at),
                            grace: policy.refresh_grace,
                        },
                        cited,
                    )
                }
                Some((EventKind::SessionRefreshed(_), _)) => acceptable(
                    Rule::Rotate { generation },
                    cite_some(minted(generation), minted_role(generation)),
                ),
                Some((EventKind::SessionRevokedAll(r), head)) => {
                    let head = head.unwrap_or(generation);
                    let successor = generation.next();
                    let rotated_at = r
                        .replayed_rotated_at
                        .or_else(|| minted(successor).map(|e| e.occurred_at));
                    let mut cited = cite_some(minted(generation), minted_role(generation));
                    cited.extend(cite_some(
                        minted(successor),
                        format!("rotated generation {generation} away (to {successor})"),
                    ));
                    if head != successor {
                        cited.extend(cite_some(
                            minted(head),
                            format!("minted generation {head}, the head"),
                        ));
                    }
                    not_acceptable(
                        Rule::Reuse {
                            generation,
                            head,
                            rotated_at,
                            since: rotated_at.map(|r| at.duration_since(r)),
                            grace: policy.refresh_grace,
                        },
                        cited,
                    )
                }
                // A refresh produces one event, a refresh or a revocation; nothing
                // else can come back, and nothing is not a refresh to accept.
                Some((EventKind::SessionIssued(_), _)) | None => not_yet_issued(family, generation),
            }
        }
        Err(DomainError::Revoked { .. }) => match known.revocation() {
            Some((rule, citation)) => not_acceptable(rule, vec![citation]),
            None => not_yet_issued(family, generation),
        },
        Err(DomainError::SessionExpired) => {
            let deadline = known.state.as_ref().map_or(at, |s| s.window.expires_at);
            not_acceptable(
                Rule::PastDeadline { deadline },
                cite_some(
                    issued_event(&known.events),
                    format!("opened the session, deadline {deadline}"),
                ),
            )
        }
        Err(DomainError::RefreshExpired) => {
            let expired_at = known
                .state
                .as_ref()
                .and_then(|s| s.head)
                .map_or(at, |h| h.refresh_expires_at);
            not_acceptable(
                Rule::RefreshExpired { at: expired_at },
                cite_some(
                    minted(generation),
                    format!("minted generation {generation}, usable until {expired_at}"),
                ),
            )
        }
        Err(
            DomainError::UnknownSession | DomainError::StateBehind | DomainError::SessionExists,
        ) => not_yet_issued(family, generation),
    }
}

fn explain_access(
    known: &Known<'_>,
    family: &[&Event],
    jti: &str,
    issued_at: Timestamp,
    expires_at: Timestamp,
    policy: &Policy,
    at: Timestamp,
) -> Explanation {
    let minting = family
        .iter()
        .copied()
        .filter(|e| access_jti(e) == Some(jti))
        .min_by_key(|e| (e.occurred_at, e.event_id));
    let minted_at = minting.map_or(issued_at, |e| e.occurred_at);
    let minted_role = format!("minted this access token (jti {jti})");
    let Some(state) = known.state.as_ref().filter(|_| at >= minted_at) else {
        return not_acceptable(
            Rule::NotYetIssued {
                minted_at: minting.map(|e| e.occurred_at),
            },
            cite_some(minting, minted_role),
        );
    };
    // The validator's lifetime check: whole seconds, `exp` plus the leeway.
    let leeway = policy.clock_leeway;
    let leeway_s = i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX);
    if at.unix_seconds() >= expires_at.unix_seconds().saturating_add(leeway_s) {
        let capped = expires_at.unix_seconds() >= state.window.expires_at.unix_seconds();
        if capped {
            let mut cited = cite_some(
                issued_event(&known.events),
                format!("opened the session, deadline {}", state.window.expires_at),
            );
            if let Some(m) = minting.filter(|m| !is_issued(m)) {
                cited.push(cite(m, minted_role));
            }
            return not_acceptable(
                Rule::PastDeadline {
                    deadline: state.window.expires_at,
                },
                cited,
            );
        }
        return not_acceptable(
            Rule::AccessExpired { expires_at, leeway },
            cite_some(minting, minted_role),
        );
    }
    if let Some((rule, citation)) = known.revocation() {
        let mut cited = cite_some(minting, minted_role);
        cited.push(citation);
        return not_acceptable(rule, cited);
    }
    acceptable(Rule::Active { expires_at }, cite_some(minting, minted_role))
}

/// The refresh token of `generation` did not exist at the instant.
fn not_yet_issued(family: &[&Event], generation: Generation) -> Explanation {
    let later = minting_of(family, generation);
    not_acceptable(
        Rule::NotYetIssued {
            minted_at: later.map(|e| e.occurred_at),
        },
        cite_some(later, format!("minted generation {generation}")),
    )
}

/// The event that minted the refresh token of `generation`: the login for 0, the
/// rotation to it otherwise (a grace retry hands out the same token again).
fn minting_of<'a>(events: &[&'a Event], generation: Generation) -> Option<&'a Event> {
    events
        .iter()
        .copied()
        .filter(|e| e.generation == Some(generation))
        .filter(|e| match &e.kind {
            EventKind::SessionIssued(_) => true,
            EventKind::SessionRefreshed(r) => !r.grace_retry,
            EventKind::SessionRevokedAll(_) => false,
        })
        .min_by_key(|e| (e.occurred_at, e.event_id))
}

fn issued_event<'a>(events: &[&'a Event]) -> Option<&'a Event> {
    events.iter().copied().find(|e| is_issued(e))
}

fn is_issued(e: &Event) -> bool {
    matches!(e.kind, EventKind::SessionIssued(_))
}

fn access_jti(e: &Event) -> Option<&str> {
    match &e.kind {
        EventKind::SessionIssued(i) => Some(&i.access_jti),
        EventKind::SessionRefreshed(r) => Some(&r.access_jti),
        EventKind::SessionRevokedAll(_) => None,
    }
}

fn cite(event: &Event, role: String) -> Citation {
    Citation {
        event_id: event.event_id,
        event_type: event.event_type(),
        occurred_at: event.occurred_at,
        role,
    }
}

fn cite_some(event: Option<&Event>, role: String) -> Vec<Citation> {
    event.map(|e| cite(e, role)).into_iter().collect()
}

fn acceptable(rule: Rule, cited: Vec<Citation>) -> Explanation {
    explanation(true, rule, cited)
}

fn not_acceptable(rule: Rule, cited: Vec<Citation>) -> Explanation {
    explanation(false, rule, cited)
}

fn explanation(acceptable: bool, rule: Rule, mut cited: Vec<Citation>) -> Explanation {
    cited.sort_by_key(|c| (c.occurred_at, c.event_id));
    cited.dedup_by_key(|c| c.event_id);
    Explanation {
        acceptable,
        rule,
        cited,
    }
}

/// `850 ms`, `12 s`, `12.5 s`, `3 min 20 s`, `2 h 5 min`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 && d.subsec_micros() > 0 {
        return format!("{} ms", d.as_millis());
    }
    if secs < 60 {
        return if d.subsec_millis() == 0 {
            format!("{secs} s")
        } else {
            format!("{:.1} s", d.as_secs_f64())
        };
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, s) {
        (0, 0) => format!("{m} min"),
        (0, _) => format!("{m} min {s} s"),
        _ if m == 0 => format!("{h} h"),
        _ => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests;
