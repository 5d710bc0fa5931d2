use serde::{Deserialize, Serialize};

use crate::{
    Event, EventKind, Generation, RevocationScope, RevokeReason, SessionId, SessionWindow, Subject,
    Timestamp,
};

/// What is known about one family: the join of every event of it (D4).
///
/// **Invariant**: [`FamilyState::merge`] is commutative, associative and idempotent, so
/// the state is a function of the *set* of events: duplicates, replays, reordering and
/// merges between regions all converge (I5). `apply` holds no business rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FamilyState {
    pub session_id: SessionId,
    pub subject: Subject,
    pub window: SessionWindow,
    pub client_id: Option<String>,
    /// The login's extra claims; `None` until `SessionIssued` has been seen.
    pub claims: Option<serde_json::Map<String, serde_json::Value>>,
    /// The newest generation; `None` when only a revocation of the family is known.
    pub head: Option<Head>,
    /// The latest `exp` of any access token of the family.
    pub access_expires_at: Timestamp,
    /// Until when the state matters (D5); the store's TTL.
    pub retain_until: Timestamp,
    pub revoked: Option<Revocation>,
}

/// The newest generation and when it stops being usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub generation: Generation,
    /// When this generation was minted (the previous one was rotated away).
    pub rotated_at: Timestamp,
    pub refresh_expires_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub at: Timestamp,
    pub reason: RevokeReason,
    pub keep_until: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_generation: Option<Generation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_rotated_at: Option<Timestamp>,
}

/// "Every family of this subject that started at or before `revoked_at` is revoked."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectRevocation {
    pub subject: Subject,
    pub revoked_at: Timestamp,
    pub reason: RevokeReason,
    pub keep_until: Timestamp,
}

impl FamilyState {
    /// The state a single family event describes; `None` for subject-wide events.
    pub fn from_event(event: &Event) -> Option<FamilyState> {
        let session_id = event.session_id?;
        let generation = event.generation.unwrap_or_default();
        let state = match &event.kind {
            EventKind::SessionIssued(e) => FamilyState {
                session_id,
                subject: event.subject.clone(),
                window: e.session,
                client_id: e.client_id.clone(),
                claims: Some(e.claims.clone()),
                head: Some(Head {
                    generation,
                    rotated_at: e.session.started_at,
                    refresh_expires_at: e.refresh_expires_at,
                }),
                access_expires_at: e.access_expires_at,
                retain_until: e.retain_until,
                revoked: None,
            },
            EventKind::SessionRefreshed(e) => FamilyState {
                session_id,
                subject: event.subject.clone(),
                window: e.session,
                client_id: e.client_id.clone(),
                claims: None,
                head: Some(Head {
                    generation,
                    rotated_at: e.rotated_at,
                    refresh_expires_at: e.refresh_expires_at,
                }),
                access_expires_at: e.access_expires_at,
                retain_until: e.retain_until,
                revoked: None,
            },
            EventKind::SessionRevokedAll(e) => {
                if e.scope != RevocationScope::Family {
                    return None;
                }
                let window = e.session?;
                FamilyState {
                    session_id,
                    subject: event.subject.clone(),
                    window,
                    client_id: None,
                    claims: None,
                    head: None,
                    access_expires_at: Timestamp::UNIX_EPOCH,
                    retain_until: e.keep_until,
                    revoked: Some(Revocation {
                        at: e.revoked_at,
                        reason: e.reason,
                        keep_until: e.keep_until,
                        replayed_generation: e.replayed_generation,
                        replayed_rotated_at: e.replayed_rotated_at,
                    }),
                }
            }
        };
        Some(state)
    }

    /// The join of two views of the same family (D4).
    pub fn merge(&mut self, other: &FamilyState) {
        debug_assert_eq!(self.session_id, other.session_id);
        // A revocation recorded before the login was seen does not know the subject.
        if self.subject.is_unknown()
            || (!other.subject.is_unknown() && other.subject < self.subject)
        {
            self.subject = other.subject.clone();
        }
        self.window = SessionWindow {
            started_at: self.window.started_at.min(other.window.started_at),
            expires_at: self.window.expires_at.min(other.window.expires_at),
        };
        self.client_id = match (self.client_id.take(), &other.client_id) {
            (Some(a), Some(b)) => Some(a.min(b.clone())),
            (a, b) => a.or_else(|| b.clone()),
        };
        self.claims = match (self.claims.take(), &other.claims) {
            // One family has one login; should two ever meet, the choice is still
            // order-independent.
            (Some(a), Some(b)) if a != *b => {
                let (ka, kb) = (serde_json::to_string(&a), serde_json::to_string(b));
                Some(if kb.ok() < ka.ok() { b.clone() } else { a })
            }
            (a, b) => a.or_else(|| b.clone()),
        };
        self.head = match (self.head, other.head) {
            (Some(a), Some(b)) => Some(merge_head(a, b)),
            (a, b) => a.or(b),
        };
        self.access_expires_at = self.access_expires_at.max(other.access_expires_at);
        self.retain_until = self.retain_until.max(other.retain_until);
        self.revoked = match (self.revoked.take(), &other.revoked) {
            (Some(a), Some(b)) => Some(merge_revocation(a, b)),
            (a, b) => a.or_else(|| b.clone()),
        };
    }

    /// Whether a subject-wide revocation covers this family.
    pub fn is_covered_by(&self, subject: &SubjectRevocation) -> bool {
        subject.subject == self.subject && self.window.started_at <= subject.revoked_at
    }
}

fn merge_head(a: Head, b: Head) -> Head {
    use std::cmp::Ordering;
    match a.generation.cmp(&b.generation) {
        Ordering::Greater => a,
        Ordering::Less => b,
        // The same generation minted twice (two instances raced): the earliest wins.
        Ordering::Equal => Head {
            generation: a.generation,
            rotated_at: a.rotated_at.min(b.rotated_at),
            refresh_expires_at: a.refresh_expires_at.min(b.refresh_expires_at),
        },
    }
}

fn merge_revocation(a: Revocation, b: &Revocation) -> Revocation {
    let keep_until = a.keep_until.max(b.keep_until);
    // The first revocation names the reason; later ones only extend the entry. Ties
    // (two instances detecting reuse at the same instant) break on every field, so
    // the result does not depend on the order of arrival.
    let key = |r: &Revocation| (r.at, r.reason, r.replayed_generation, r.replayed_rotated_at);
    let mut first = if key(b) < key(&a) { b.clone() } else { a };
    first.keep_until = keep_until;
    first
}

impl SubjectRevocation {
    pub fn from_event(event: &Event) -> Option<SubjectRevocation> {
        match &event.kind {
            EventKind::SessionRevokedAll(e) if e.scope == RevocationScope::Subject => {
                Some(SubjectRevocation {
                    subject: event.subject.clone(),
                    revoked_at: e.revoked_at,
                    reason: e.reason,
                    keep_until: e.keep_until,
                })
            }
            _ => None,
        }
    }

    /// The join: the later cut-off covers every family the earlier one did.
    pub fn merge(&mut self, other: &SubjectRevocation) {
        if (other.revoked_at, other.reason) > (self.revoked_at, self.reason) {
            self.revoked_at = other.revoked_at;
            self.reason = other.reason;
        }
        self.keep_until = self.keep_until.max(other.keep_until);
    }
}
