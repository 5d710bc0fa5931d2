use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// Why an identifier taken from outside was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("session id must be a UUID")]
    SessionId,
    #[error("subject must not be empty")]
    EmptySubject,
    #[error("subject must be at most {max} bytes", max = Subject::MAX_LEN)]
    SubjectTooLong,
    #[error("subject must not contain control characters")]
    SubjectControlChar,
}

/// Identifies a session family; it is also the `sid` claim and the Kafka partition key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(Uuid);

impl SessionId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Uuid::try_parse(s)
            .map(SessionId)
            .map_err(|_| IdError::SessionId)
    }

    pub const fn from_uuid(id: Uuid) -> Self {
        SessionId(id)
    }

    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    pub const fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// When the id was generated (millisecond precision), for time-ordered ids
    /// (UUIDv7, as `ledger_clock::new_session_id` makes); `None` for other UUID versions.
    pub fn created_at(&self) -> Option<crate::Timestamp> {
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        let micros = i64::try_from(secs).ok()?.checked_mul(1_000_000)? + i64::from(nanos / 1_000);
        Some(crate::Timestamp::from_unix_micros(micros))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The user a session belongs to (`sub`), as named by the login service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Subject(String);

impl Subject {
    pub const MAX_LEN: usize = 255;

    /// The subject recorded for a family revoked before its login was seen: a signout
    /// with a refresh token names the family, not the user. In a join it gives way
    /// to the real subject ([`crate::FamilyState::merge`]); logins may not use it.
    pub const UNKNOWN: &'static str = "(unknown)";

    pub fn unknown() -> Self {
        Subject(Self::UNKNOWN.to_owned())
    }

    pub fn is_unknown(&self) -> bool {
        self.0 == Self::UNKNOWN
    }

    pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        if s.trim().is_empty() {
            return Err(IdError::EmptySubject);
        }
        if s.len() > Self::MAX_LEN {
            return Err(IdError::SubjectTooLong);
        }
        if s.chars().any(char::is_control) {
            return Err(IdError::SubjectControlChar);
        }
        Ok(Subject(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Subject::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many times a family's refresh token was rotated: 0 at login, then 1, 2, …
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Generation(u64);

impl Generation {
    pub const INITIAL: Generation = Generation(0);

    pub const fn new(n: u64) -> Self {
        Generation(n)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    pub const fn next(self) -> Self {
        Generation(self.0.saturating_add(1))
    }

    pub const fn previous(self) -> Option<Self> {
        match self.0.checked_sub(1) {
            Some(n) => Some(Generation(n)),
            None => None,
        }
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Identifies one event. Deterministic where a retry must not create a second event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    /// The namespace deterministic event ids are derived in (UUIDv5).
    const NAMESPACE: Uuid = Uuid::from_u128(0x6c65_6467_6572_4000_8000_7365_7373_696f);

    /// The id every instance derives for the same fact, e.g. "family F rotated to
    /// generation 7", so duplicates from concurrent or retried requests collapse.
    pub fn derived(session: SessionId, what: &str, generation: Generation) -> Self {
        let mut name = Vec::with_capacity(16 + what.len() + 8);
        name.extend_from_slice(session.as_bytes());
        name.extend_from_slice(what.as_bytes());
        name.extend_from_slice(&generation.get().to_be_bytes());
        EventId(Uuid::new_v5(&Self::NAMESPACE, &name))
    }

    pub const fn from_uuid(id: Uuid) -> Self {
        EventId(id)
    }

    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_rejects_empty_long_and_control() {
        assert_eq!(Subject::parse(""), Err(IdError::EmptySubject));
        assert_eq!(Subject::parse("  "), Err(IdError::EmptySubject));
        assert_eq!(
            Subject::parse("a".repeat(256)),
            Err(IdError::SubjectTooLong)
        );
        assert_eq!(Subject::parse("a\nb"), Err(IdError::SubjectControlChar));
        assert_eq!(Subject::parse("alice").unwrap().as_str(), "alice");
    }

    #[test]
    fn derived_event_ids_are_stable_and_distinct() {
        let s = SessionId::from_uuid(Uuid::from_u128(7));
        let a = EventId::derived(s, "refreshed", Generation::new(3));
        assert_eq!(a, EventId::derived(s, "refreshed", Generation::new(3)));
        assert_ne!(a, EventId::derived(s, "refreshed", Generation::new(4)));
        assert_ne!(a, EventId::derived(s, "revoked", Generation::new(3)));
    }

    #[test]
    fn time_ordered_ids_know_when_they_were_made() {
        let v7 = uuid::Builder::from_unix_timestamp_millis(1_700_000_000_123, &[7; 10]);
        assert_eq!(
            SessionId::from_uuid(v7.into_uuid()).created_at(),
            Some(crate::Timestamp::from_unix_micros(1_700_000_000_123_000))
        );
        assert_eq!(SessionId::from_uuid(Uuid::from_u128(7)).created_at(), None);
        assert_eq!(SessionId::from_uuid(Uuid::nil()).created_at(), None);
    }

    #[test]
    fn session_id_parse() {
        assert!(SessionId::parse("not-a-uuid").is_err());
        let s = SessionId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_002a));
        assert_eq!(SessionId::parse(&s.to_string()).unwrap(), s);
    }
}
