use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::decide::revocation_reason;
use crate::{Event, FamilyState, RevokeReason, SessionId, Subject, SubjectRevocation, Timestamp};

/// The revocation state of many families: what the projector writes to the store and
/// what a validator holds in memory. A function of the set of events applied (I5).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    families: BTreeMap<SessionId, FamilyState>,
    subjects: BTreeMap<Subject, SubjectRevocation>,
}

/// Where a family stands at a given instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyStatus {
    Active,
    Revoked {
        at: Timestamp,
        reason: RevokeReason,
    },
    /// Past the absolute deadline, or idle past the refresh token's expiry.
    Expired,
}

impl FamilyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FamilyStatus::Active => "active",
            FamilyStatus::Revoked { .. } => "revoked",
            FamilyStatus::Expired => "expired",
        }
    }

    /// The status of `state`, counting a subject-wide revocation that covers it.
    pub fn of(
        state: &FamilyState,
        subject_revocation: Option<&SubjectRevocation>,
        now: Timestamp,
    ) -> FamilyStatus {
        if let Some(check) = RevocationCheck::of(state, subject_revocation) {
            return FamilyStatus::Revoked {
                at: check.at,
                reason: check.reason,
            };
        }
        let usable_until = state
            .head
            .map_or(Timestamp::UNIX_EPOCH, |h| h.refresh_expires_at)
            .max(state.access_expires_at)
            .min(state.window.expires_at);
        if now >= usable_until {
            FamilyStatus::Expired
        } else {
            FamilyStatus::Active
        }
    }
}

/// A revocation that applies to a family: when, why, and until when it is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevocationCheck {
    pub at: Timestamp,
    pub reason: RevokeReason,
    pub keep_until: Timestamp,
}

impl RevocationCheck {
    pub fn of(
        state: &FamilyState,
        subject_revocation: Option<&SubjectRevocation>,
    ) -> Option<RevocationCheck> {
        revocation_reason(state, subject_revocation)?;
        if let Some(r) = &state.revoked {
            return Some(RevocationCheck {
                at: r.at,
                reason: r.reason,
                keep_until: r.keep_until,
            });
        }
        subject_revocation.map(|r| RevocationCheck {
            at: r.revoked_at,
            reason: r.reason,
            keep_until: r.keep_until,
        })
    }
}

impl Projection {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one event in. Idempotent and order-insensitive.
    pub fn apply(&mut self, event: &Event) {
        if let Some(family) = FamilyState::from_event(event) {
            // The event's state is built for this call: a new family keeps it as is.
            match self.families.entry(family.session_id) {
                Entry::Occupied(mut existing) => existing.get_mut().merge(&family),
                Entry::Vacant(slot) => {
                    slot.insert(family);
                }
            }
        } else if let Some(subject) = SubjectRevocation::from_event(event) {
            self.merge_subject(&subject);
        }
    }

    pub fn merge_family(&mut self, family: &FamilyState) {
        match self.families.get_mut(&family.session_id) {
            Some(existing) => existing.merge(family),
            None => {
                self.families.insert(family.session_id, family.clone());
            }
        }
    }

    pub fn merge_subject(&mut self, subject: &SubjectRevocation) {
        match self.subjects.get_mut(&subject.subject) {
            Some(existing) => existing.merge(subject),
            None => {
                self.subjects
                    .insert(subject.subject.clone(), subject.clone());
            }
        }
    }

    /// Merges another projection in (e.g. one batch into the whole).
    pub fn merge(&mut self, other: &Projection) {
        for f in other.families.values() {
            self.merge_family(f);
        }
        for s in other.subjects.values() {
            self.merge_subject(s);
        }
    }

    pub fn family(&self, id: &SessionId) -> Option<&FamilyState> {
        self.families.get(id)
    }

    pub fn subject_revocation(&self, subject: &Subject) -> Option<&SubjectRevocation> {
        self.subjects.get(subject)
    }

    pub fn families(&self) -> impl ExactSizeIterator<Item = &FamilyState> {
        self.families.values()
    }

    pub fn subjects(&self) -> impl ExactSizeIterator<Item = &SubjectRevocation> {
        self.subjects.values()
    }

    pub fn is_empty(&self) -> bool {
        self.families.is_empty() && self.subjects.is_empty()
    }

    pub fn status(&self, id: &SessionId, now: Timestamp) -> Option<FamilyStatus> {
        let family = self.families.get(id)?;
        Some(FamilyStatus::of(
            family,
            self.subjects.get(&family.subject),
            now,
        ))
    }

    /// Drops what no token can need any more (D5); returns how many entries went.
    pub fn prune(&mut self, now: Timestamp) -> usize {
        let before = self.families.len() + self.subjects.len();
        self.families.retain(|_, f| f.retain_until > now);
        self.subjects.retain(|_, s| s.keep_until > now);
        before - self.families.len() - self.subjects.len()
    }

    /// A hex SHA-256 of the whole state, for comparing a replay with the live view.
    ///
    /// The SHA-256 of the state's JSON, hashed as it is written rather than written
    /// out whole first (hundreds of megabytes for a large log).
    pub fn digest(&self) -> String {
        use std::io::Write;
        let mut out = std::io::BufWriter::with_capacity(1 << 16, HashWriter(Sha256::new()));
        // Writing plain data with string keys to a hasher cannot fail.
        let _ = serde_json::to_writer(&mut out, self);
        let _ = out.flush();
        let (HashWriter(hasher), _) = out.into_parts();
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The first family or subject where `self` (a replay) and `live` differ, in words;
    /// `None` when they hold the same state.
    pub fn first_difference(&self, live: &Projection) -> Option<String> {
        for f in self.families() {
            match live.family(&f.session_id) {
                None => {
                    return Some(format!(
                        "family {} is in the replay but not live",
                        f.session_id
                    ));
                }
                Some(l) if l != f => {
                    return Some(format!(
                        "family {} differs: replay {} vs live {}",
                        f.session_id,
                        serde_json::to_string(f).unwrap_or_default(),
                        serde_json::to_string(l).unwrap_or_default()
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(l) = live
            .families()
            .find(|l| self.family(&l.session_id).is_none())
        {
            return Some(format!(
                "family {} is live but not in the replay",
                l.session_id
            ));
        }
        for s in self.subjects() {
            if live.subject_revocation(&s.subject) != Some(s) {
                return Some(format!("subject revocation of {} differs", s.subject));
            }
        }
        if let Some(l) = live
            .subjects()
            .find(|l| self.subject_revocation(&l.subject).is_none())
        {
            return Some(format!(
                "subject revocation of {} is live but not in the replay",
                l.subject
            ));
        }
        None
    }
}

/// Feeds what is written to it to a SHA-256.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_difference_is_named() {
        let now = crate::testing::at(0);
        let (id, events) = crate::testing::login_and_logout("alice", now);
        let mut live = Projection::new();
        events.iter().for_each(|e| live.apply(e));
        let mut replayed = Projection::new();
        replayed.apply(&events[0]);
        let difference = replayed.first_difference(&live).unwrap();
        assert!(
            difference.starts_with(&format!("family {id} differs")),
            "{difference}"
        );
        replayed.apply(&events[1]);
        assert_eq!(replayed.first_difference(&live), None);
        let (other, extra) = crate::testing::login("bob", now);
        live.apply(&extra);
        let difference = replayed.first_difference(&live).unwrap();
        assert_eq!(
            difference,
            format!("family {other} is live but not in the replay")
        );
    }
}
