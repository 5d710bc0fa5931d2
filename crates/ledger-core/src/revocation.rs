//! The public revocation record: what the revocation topic (and its Server-Sent Events
//! mirror) carries for each revocation, derived from a `SessionRevokedAll` event.
//!
//! **API boundary**: the JSON shape is pinned by `schemas/revocation.schema.json`.
//! A record is a pure function of its event, so a redelivered event yields the same
//! key and the same bytes (consumers see each revocation once after compaction).

use serde::{Deserialize, Serialize};

use crate::{
    Event, EventId, EventKind, RevocationScope, RevokeReason, SessionId, Subject, Timestamp,
};

/// The prefix of subject-wide keys. Family keys are bare UUIDs, which never contain
/// a colon, so the two kinds of key cannot collide.
pub const SUBJECT_KEY_PREFIX: &str = "subject:";

/// One revocation in force until `keep_until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// The family revoked; absent for a subject-wide revocation.
    pub family_id: Option<SessionId>,
    pub subject: Subject,
    pub scope: RevocationScope,
    pub reason: RevokeReason,
    /// For subject scope: every family that started at or before this instant.
    pub revoked_at: Timestamp,
    /// No token this record governs is acceptable after it; the record is then
    /// withdrawn (a tombstone on the topic).
    pub keep_until: Timestamp,
    pub region: String,
    /// The `SessionRevokedAll` event this record was derived from.
    pub source_event_id: EventId,
}

impl RevocationRecord {
    /// The record of a revocation event; `None` for any other event.
    pub fn from_event(event: &Event) -> Option<Self> {
        let EventKind::SessionRevokedAll(r) = &event.kind else {
            return None;
        };
        let family_id = match r.scope {
            RevocationScope::Family => Some(event.session_id?),
            RevocationScope::Subject => None,
        };
        Some(RevocationRecord {
            family_id,
            subject: event.subject.clone(),
            scope: r.scope,
            reason: r.reason,
            revoked_at: r.revoked_at,
            keep_until: r.keep_until,
            region: event.region.clone(),
            source_event_id: event.event_id,
        })
    }

    /// The compaction key: the family id, or `subject:<subject>`.
    pub fn key(&self) -> String {
        revocation_key(self.family_id, &self.subject)
    }

    /// Whether the record still governs tokens at `now`.
    pub fn in_force(&self, now: Timestamp) -> bool {
        now < self.keep_until
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The key of a family's revocation, or of a subject's when `family` is `None`.
pub fn revocation_key(family: Option<SessionId>, subject: &Subject) -> String {
    match family {
        Some(id) => id.to_string(),
        None => format!("{SUBJECT_KEY_PREFIX}{subject}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{at, login_and_logout};

    #[test]
    fn a_logout_maps_to_a_family_record_keyed_by_the_family() {
        let (id, events) = login_and_logout("alice", at(0));
        assert!(RevocationRecord::from_event(&events[0]).is_none());
        let record = RevocationRecord::from_event(&events[1]).expect("a revocation");
        assert_eq!(record.key(), id.to_string());
        assert_eq!(record.family_id, Some(id));
        assert_eq!(record.reason, RevokeReason::Logout);
        assert_eq!(record.source_event_id, events[1].event_id);
        // Redelivery: same bytes.
        assert_eq!(
            RevocationRecord::from_event(&events[1]).map(|r| r.to_json()),
            Some(record.to_json())
        );
        assert_eq!(
            RevocationRecord::from_json(&record.to_json()).ok(),
            Some(record.clone())
        );
        assert!(record.in_force(at(0)));
        assert!(!record.in_force(record.keep_until));
    }

    #[test]
    fn subject_keys_carry_a_prefix_no_family_key_has() {
        let subject = Subject::parse("3f1c2a9e-0000-4000-8000-000000000000").expect("subject");
        let key = revocation_key(None, &subject);
        assert_eq!(key, "subject:3f1c2a9e-0000-4000-8000-000000000000");
        assert!(SessionId::parse(&key).is_err());
    }
}
