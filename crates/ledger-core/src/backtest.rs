//! Replays recorded histories under a candidate policy and says what would have changed.
//!
//! The log holds outcomes, not requests: a rotation, a grace retry, a reuse revocation,
//! a signout. The backtest takes each family's events in order and asks, for every
//! recorded outcome, what [`decide`](crate::decide) would have answered to the same
//! request at the same instant under the **current** policy and under the
//! **candidate**. Both are taken to have been in force for the family's whole life:
//! its deadline is `started_at + session_max_ttl` and a refresh token minted at `p` is
//! usable while `now < min(p + refresh_idle_ttl, deadline)`.
//!
//! Notation for one family: `p` is when the head generation was minted (the last
//! rotation, or the login), `E(P) = min(p + P.refresh_idle_ttl, started_at +
//! P.session_max_ttl)` is when the session ends under policy `P` if nothing else
//! happens, and its *cause* is `idle` or `deadline`, whichever bound is smaller (the
//! deadline on a tie).
//!
//! | recorded at `t` | what the candidate changes |
//! |---|---|
//! | rotation of the head | `t ≥ E(candidate)`: **ended earlier**, at `E(candidate)` |
//! | grace retry of head−1, rotated at `r` | `t ≥ deadline`: **ended earlier**; else `t − r ≥ grace`: **revoked for reuse** at `t` |
//! | reuse of head−1, rotated at `r` | `t − r < grace` and `t < deadline`: **not revoked** (a grace retry) |
//! | reuse of an older generation, signout, admin revocation, subject revocation | nothing by itself: it ends the family at `t` (see below) |
//!
//! In the table `grace`, `deadline` and `E` are the candidate's. Each recorded outcome
//! is first checked against the current policy by the same rules (see *inconsistent*
//! below).
//!
//! After the last event (or at the revocation that ended the family at `T`; without
//! one, `T` is the `as_of` instant the backtest is run for), the session ended at
//! `min(E(P), T)` under each policy. When the two instants differ the session **ended
//! earlier** under the candidate (at its `E`, with its cause), or **ended later**
//! (from the current `E`, with the current cause; until the candidate's `E`, the
//! revocation at `T`, or still live at `as_of`). Differences that lie entirely after
//! `as_of` are not reported: nothing has happened yet in either world.
//!
//! A subject-wide revocation ends, at its instant, every family of the subject that
//! started at or before it, exactly like a signout of each.
//!
//! What the backtest cannot know:
//! - What a client would have done after the histories part. A client refused or
//!   revoked under the candidate would have logged in again; one still allowed would
//!   have refreshed again, in requests the log never saw (refused refreshes leave no
//!   event). So only a family's **first** divergence is reported, and the family is not
//!   evaluated past it.
//! - Requests refused under the current policy: they left no event. A session that
//!   ends later under the candidate may in fact have been used again in that time.
//! - The policy actually in force when an event was written. A family whose recorded
//!   outcomes the current policy would not have produced (written under another
//!   policy, or events missing from the log) is counted as *inconsistent* and not
//!   evaluated, so a candidate equal to the current policy reports no change.
//! - A family whose login is not in the log (past its retention) is counted as
//!   *incomplete* and not evaluated.

use std::collections::HashMap;

use crate::{
    Command, DecideContext, Event, EventId, EventKind, FamilyState, Generation, Head, Policy,
    PolicyError, RevocationScope, RevokeReason, SessionId, SessionWindow, Subject, Timestamp,
    decide,
};

/// Why a session ended: its newest refresh token went unused too long, or it reached
/// the absolute deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndCause {
    Idle,
    Deadline,
}

impl EndCause {
    pub fn as_str(self) -> &'static str {
        match self {
            EndCause::Idle => "idle",
            EndCause::Deadline => "deadline",
        }
    }
}

/// What the candidate policy changes in one family's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A grace retry under the current policy is reuse under the candidate: the family
    /// is revoked (`reuse_detected`) at the divergence.
    RevokedForReuse {
        presented: Generation,
        /// When the presented generation was rotated away.
        rotated_at: Timestamp,
    },
    /// A reuse revocation under the current policy is a grace retry under the
    /// candidate: the family is not revoked.
    NotRevoked {
        presented: Generation,
        rotated_at: Timestamp,
    },
    /// The candidate ends the session at the divergence.
    EndedEarlier {
        cause: EndCause,
        /// The recorded refresh the candidate would have refused, when there is one.
        refused_at: Option<Timestamp>,
        /// When the session ended under the current policy; `None` when it went on
        /// (a refresh was refused) or is still live at `as_of`.
        current_end: Option<Timestamp>,
    },
    /// The current policy ended the session at the divergence, by `cause`; the
    /// candidate keeps it usable longer.
    EndedLater {
        cause: EndCause,
        /// When it ends under the candidate; `None` when still live at `as_of`.
        candidate_end: Option<Timestamp>,
    },
}

/// The first place one family's history parts under the candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    pub session_id: SessionId,
    pub subject: Subject,
    /// When the two histories part.
    pub at: Timestamp,
    pub change: Change,
}

/// How many families diverge, by kind of change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub revoked_for_reuse: u64,
    pub not_revoked: u64,
    pub ended_earlier_idle: u64,
    pub ended_earlier_deadline: u64,
    pub ended_later_idle: u64,
    pub ended_later_deadline: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.revoked_for_reuse
            + self.not_revoked
            + self.ended_earlier_idle
            + self.ended_earlier_deadline
            + self.ended_later_idle
            + self.ended_later_deadline
    }

    fn add(&mut self, change: &Change) {
        let n = match change {
            Change::RevokedForReuse { .. } => &mut self.revoked_for_reuse,
            Change::NotRevoked { .. } => &mut self.not_revoked,
            Change::EndedEarlier { cause, .. } => match cause {
                EndCause::Idle => &mut self.ended_earlier_idle,
                EndCause::Deadline => &mut self.ended_earlier_deadline,
            },
            Change::EndedLater { cause, .. } => match cause {
                EndCause::Idle => &mut self.ended_later_idle,
                EndCause::Deadline => &mut self.ended_later_deadline,
            },
        };
        *n += 1;
    }
}

/// What [`Backtest::finish`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BacktestReport {
    pub as_of: Timestamp,
    /// Events read, duplicates included.
    pub events: u64,
    /// Families evaluated.
    pub families: u64,
    /// Families whose login is not in the log; not evaluated.
    pub incomplete: u64,
    /// Families whose recorded outcomes the current policy would not have produced;
    /// not evaluated.
    pub inconsistent: u64,
    /// Subject-wide revocations read (each ends the families it covers).
    pub subject_revocations: u64,
    pub counts: Counts,
    /// One per diverging family, earliest first.
    pub divergences: Vec<Divergence>,
}

/// Collects a log's events, then evaluates every family under both policies.
#[derive(Debug)]
pub struct Backtest {
    current: Policy,
    candidate: Policy,
    events: u64,
    families: HashMap<SessionId, FamilyLog>,
    subjects: HashMap<Subject, Vec<Timestamp>>,
    subject_revocations: u64,
}

#[derive(Debug)]
struct FamilyLog {
    subject: Subject,
    steps: Vec<Step>,
}

/// The part of an event the backtest needs.
#[derive(Clone, Copy, Debug)]
struct Step {
    at: Timestamp,
    event_id: EventId,
    kind: StepKind,
}

#[derive(Clone, Copy, Debug)]
enum StepKind {
    Issued {
        window: SessionWindow,
    },
    Rotated {
        presented: Generation,
    },
    GraceRetry {
        presented: Generation,
        rotated_at: Timestamp,
    },
    Reused {
        presented: Option<Generation>,
        rotated_at: Option<Timestamp>,
    },
    Ended,
}

impl StepKind {
    /// Order of events recorded in the same microsecond.
    fn rank(self) -> u8 {
        match self {
            StepKind::Issued { .. } => 0,
            StepKind::Rotated { .. } | StepKind::GraceRetry { .. } => 1,
            StepKind::Reused { .. } | StepKind::Ended => 2,
        }
    }
}

/// One family's evaluation.
enum Verdict {
    Same,
    Incomplete,
    Inconsistent,
    Diverges { at: Timestamp, change: Change },
}

impl Backtest {
    /// Both policies must be valid (a grace shorter than the idle ttl, …).
    pub fn new(current: Policy, candidate: Policy) -> Result<Self, PolicyError> {
        current.validate()?;
        candidate.validate()?;
        Ok(Backtest {
            current,
            candidate,
            events: 0,
            families: HashMap::new(),
            subjects: HashMap::new(),
            subject_revocations: 0,
        })
    }

    /// Takes one event of the log, in any order across families.
    pub fn push(&mut self, event: &Event) {
        self.events += 1;
        let kind = match &event.kind {
            EventKind::SessionIssued(e) => StepKind::Issued { window: e.session },
            EventKind::SessionRefreshed(e) if e.grace_retry => StepKind::GraceRetry {
                presented: e.previous_generation,
                rotated_at: e.rotated_at,
            },
            EventKind::SessionRefreshed(e) => StepKind::Rotated {
                presented: e.previous_generation,
            },
            EventKind::SessionRevokedAll(e) if e.scope == RevocationScope::Subject => {
                self.subject_revocations += 1;
                self.subjects
                    .entry(event.subject.clone())
                    .or_default()
                    .push(e.revoked_at);
                return;
            }
            EventKind::SessionRevokedAll(e) if e.reason == RevokeReason::ReuseDetected => {
                StepKind::Reused {
                    presented: e.replayed_generation,
                    rotated_at: e.replayed_rotated_at,
                }
            }
            EventKind::SessionRevokedAll(_) => StepKind::Ended,
        };
        let Some(session_id) = event.session_id else {
            return;
        };
        self.families
            .entry(session_id)
            .or_insert_with(|| FamilyLog {
                subject: event.subject.clone(),
                steps: Vec::new(),
            })
            .steps
            .push(Step {
                at: event.occurred_at,
                event_id: event.event_id,
                kind,
            });
    }

    /// Evaluates every family; `as_of` is the instant the backtest is run for (now),
    /// at or after the last event.
    pub fn finish(self, as_of: Timestamp) -> BacktestReport {
        let mut report = BacktestReport {
            as_of,
            events: self.events,
            families: 0,
            incomplete: 0,
            inconsistent: 0,
            subject_revocations: self.subject_revocations,
            counts: Counts::default(),
            divergences: Vec::new(),
        };
        for (session_id, mut family) in self.families {
            let subject_cutoffs = self.subjects.get(&family.subject).map(Vec::as_slice);
            match evaluate(
                session_id,
                &family.subject,
                &mut family.steps,
                subject_cutoffs.unwrap_or_default(),
                &self.current,
                &self.candidate,
                as_of,
            ) {
                Verdict::Incomplete => report.incomplete += 1,
                Verdict::Inconsistent => report.inconsistent += 1,
                Verdict::Same => report.families += 1,
                Verdict::Diverges { at, change } => {
                    report.families += 1;
                    report.counts.add(&change);
                    report.divergences.push(Divergence {
                        session_id,
                        subject: family.subject,
                        at,
                        change,
                    });
                }
            }
        }
        report.divergences.sort_by_key(|d| (d.at, d.session_id));
        report
    }
}

/// When a session ends under `policy` if nothing else happens, and why: its head
/// minted at `minted` stops being usable, by the same bound `decide` gives it.
fn natural_end(policy: &Policy, window: SessionWindow, minted: Timestamp) -> (Timestamp, EndCause) {
    let deadline = policy.deadline(window.started_at);
    let end = policy.refresh_expiry(minted, deadline);
    let cause = if end == deadline {
        EndCause::Deadline
    } else {
        EndCause::Idle
    };
    (end, cause)
}

/// What [`decide`] answers to a refresh, reduced to what the backtest compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Rotated,
    GraceRetry,
    Reused,
    /// Idle expiry or the deadline (or a generation the family never had).
    Refused,
}

/// One family as the backtest reconstructs it at a step, before its end: the policy
/// under which it is judged was in force for its whole life.
struct Family<'a> {
    session_id: SessionId,
    subject: &'a Subject,
    window: SessionWindow,
    head: Generation,
    /// When the head was minted.
    minted: Timestamp,
}

impl Family<'_> {
    /// Asks [`decide`] what a refresh of `presented` at `at` gets under `policy`: the
    /// backtest holds no refresh rule of its own.
    fn answer(&self, policy: &Policy, presented: Generation, at: Timestamp) -> Answer {
        let deadline = policy.deadline(self.window.started_at);
        let state = FamilyState {
            session_id: self.session_id,
            subject: self.subject.clone(),
            window: SessionWindow {
                started_at: self.window.started_at,
                expires_at: deadline,
            },
            client_id: None,
            claims: None,
            head: Some(Head {
                generation: self.head,
                rotated_at: self.minted,
                refresh_expires_at: policy.refresh_expiry(self.minted, deadline),
            }),
            access_expires_at: Timestamp::UNIX_EPOCH,
            retain_until: Timestamp::UNIX_EPOCH,
            revoked: None,
        };
        let command = Command::Refresh {
            session_id: self.session_id,
            presented,
            access_jti: String::new(),
        };
        // A what-if decision: its events are never appended, so their id is derived
        // from the question rather than drawn.
        let ctx = DecideContext {
            now: at,
            policy,
            region: "",
            trace_context: None,
            event_id: EventId::derived(self.session_id, "backtest", presented),
        };
        match decide(Some(&state), None, command, &ctx) {
            Ok(events) => match events.first().map(|e| &e.kind) {
                Some(EventKind::SessionRefreshed(e)) if e.grace_retry => Answer::GraceRetry,
                Some(EventKind::SessionRefreshed(_)) => Answer::Rotated,
                Some(EventKind::SessionRevokedAll(_)) => Answer::Reused,
                _ => Answer::Refused,
            },
            Err(_) => Answer::Refused,
        }
    }
}

fn evaluate(
    session_id: SessionId,
    subject: &Subject,
    steps: &mut Vec<Step>,
    subject_cutoffs: &[Timestamp],
    current: &Policy,
    candidate: &Policy,
    as_of: Timestamp,
) -> Verdict {
    steps.sort_by_key(|s| (s.at, s.kind.rank(), s.event_id));
    steps.dedup_by_key(|s| s.event_id);
    let Some((first, rest)) = steps.split_first() else {
        return Verdict::Incomplete;
    };
    let StepKind::Issued { window } = first.kind else {
        return Verdict::Incomplete;
    };
    // A subject-wide revocation ends the family like a signout.
    let subject_end = subject_cutoffs
        .iter()
        .copied()
        .filter(|&at| window.started_at <= at)
        .min();
    let mut family = Family {
        session_id,
        subject,
        window,
        head: Generation::INITIAL,
        minted: first.at,
    };
    let mut ended_at = None;
    for step in rest {
        if subject_end.is_some_and(|end| end < step.at) {
            break;
        }
        let t = step.at;
        let (candidate_end, candidate_cause) = natural_end(candidate, window, family.minted);
        let ended_earlier = Verdict::Diverges {
            at: candidate_end,
            change: Change::EndedEarlier {
                cause: candidate_cause,
                refused_at: Some(t),
                current_end: None,
            },
        };
        // Each recorded outcome must be what `decide` answers under the current
        // policy; otherwise the family was written under another one.
        match step.kind {
            StepKind::Issued { .. } => return Verdict::Inconsistent,
            StepKind::Rotated { presented } => {
                if family.answer(current, presented, t) != Answer::Rotated {
                    return Verdict::Inconsistent;
                }
                if family.answer(candidate, presented, t) != Answer::Rotated {
                    return ended_earlier;
                }
                family.head = family.head.next();
                family.minted = t;
            }
            StepKind::GraceRetry {
                presented,
                rotated_at,
            } => {
                if rotated_at != family.minted
                    || family.answer(current, presented, t) != Answer::GraceRetry
                {
                    return Verdict::Inconsistent;
                }
                match family.answer(candidate, presented, t) {
                    Answer::GraceRetry => {}
                    Answer::Reused => {
                        return Verdict::Diverges {
                            at: t,
                            change: Change::RevokedForReuse {
                                presented,
                                rotated_at,
                            },
                        };
                    }
                    Answer::Rotated | Answer::Refused => return ended_earlier,
                }
            }
            StepKind::Reused {
                presented,
                rotated_at,
            } => {
                let Some(presented) = presented else {
                    return Verdict::Inconsistent;
                };
                // The event names when the presented generation was rotated away
                // exactly when it is the head's predecessor.
                let recorded = match rotated_at {
                    Some(r) => presented.next() == family.head && r == family.minted,
                    None => presented.next() < family.head,
                };
                if !recorded || family.answer(current, presented, t) != Answer::Reused {
                    return Verdict::Inconsistent;
                }
                if let Some(rotated_at) = rotated_at
                    && family.answer(candidate, presented, t) == Answer::GraceRetry
                {
                    return Verdict::Diverges {
                        at: t,
                        change: Change::NotRevoked {
                            presented,
                            rotated_at,
                        },
                    };
                }
                ended_at = Some(t);
                break;
            }
            StepKind::Ended => {
                ended_at = Some(t);
                break;
            }
        }
    }
    let minted = family.minted;
    // The tail: how the session ended (or not yet) under each policy.
    let revoked_at = match (ended_at, subject_end) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let cutoff = revoked_at.unwrap_or(as_of);
    let (current_end, current_cause) = natural_end(current, window, minted);
    let (candidate_end, candidate_cause) = natural_end(candidate, window, minted);
    let (current_end, candidate_end) = (current_end.min(cutoff), candidate_end.min(cutoff));
    let live = |end: Timestamp| revoked_at.is_none() && end >= as_of;
    if candidate_end < current_end {
        Verdict::Diverges {
            at: candidate_end,
            change: Change::EndedEarlier {
                cause: candidate_cause,
                refused_at: None,
                current_end: (!live(current_end)).then_some(current_end),
            },
        }
    } else if current_end < candidate_end {
        Verdict::Diverges {
            at: current_end,
            change: Change::EndedLater {
                cause: current_cause,
                candidate_end: (!live(candidate_end)).then_some(candidate_end),
            },
        }
    } else {
        Verdict::Same
    }
}

#[cfg(test)]
mod tests;
