use serde::{Deserialize, Serialize};

use crate::{EventId, Generation, SessionId, Subject, Timestamp};

/// The version of the envelope and payload shapes in `schemas/`.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// One fact in a family's life, as appended to the log (D1, D2).
///
/// **API boundary**: this is the public contract consumers read; its JSON shape is
/// pinned by `schemas/` and checked in tests. Add fields, never change their meaning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: EventId,
    pub schema_version: u32,
    /// The family. Absent only for a revocation of every family of a subject.
    pub session_id: Option<SessionId>,
    pub subject: Subject,
    /// The family's newest generation once this event is applied.
    pub generation: Option<Generation>,
    pub occurred_at: Timestamp,
    /// Where the event was appended (multi-region deployments merge logs).
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<TraceContext>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// W3C trace context of the request that caused the event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EventKind {
    SessionIssued(SessionIssued),
    SessionRefreshed(SessionRefreshed),
    SessionRevokedAll(SessionRevokedAll),
}

/// When a session began and its absolute deadline. Every family event carries it, so
/// the state is whole whichever event arrives first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionWindow {
    pub started_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A login: generation 0 of a new family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionIssued {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Extra claims the login service asked to put in every access token.
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
    pub session: SessionWindow,
    pub access_jti: String,
    pub access_expires_at: Timestamp,
    pub refresh_expires_at: Timestamp,
    /// Until when the family's state matters (D5): the latest expiry of any of its
    /// tokens plus leeway and skew margin.
    pub retain_until: Timestamp,
}

/// A refresh: generation `previous_generation` was presented and `generation` (in the
/// envelope) is the head. A grace retry re-issues the same head with a new access token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRefreshed {
    pub previous_generation: Generation,
    /// When the head generation was minted (for a grace retry: the original rotation).
    pub rotated_at: Timestamp,
    pub grace_retry: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub session: SessionWindow,
    pub access_jti: String,
    pub access_expires_at: Timestamp,
    pub refresh_expires_at: Timestamp,
    pub retain_until: Timestamp,
}

/// Every token of one family, or of every family a subject had, is dead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRevokedAll {
    pub scope: RevocationScope,
    pub reason: RevokeReason,
    /// For subject scope: every family that started at or before this instant.
    pub revoked_at: Timestamp,
    /// Until when the entry must be kept: no token it governs is acceptable after it.
    pub keep_until: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionWindow>,
    /// For reuse: the generation that was presented again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_generation: Option<Generation>,
    /// For reuse: when that generation had been rotated away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_rotated_at: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationScope {
    Family,
    Subject,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// The user signed out (RFC 7009 revocation).
    Logout,
    /// A rotated-away refresh token was presented again (RFC 9700 §4.14.2).
    ReuseDetected,
    /// An operator or the login service revoked it.
    Admin,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::ReuseDetected => "reuse_detected",
            RevokeReason::Admin => "admin",
        }
    }
}

impl Event {
    pub fn event_type(&self) -> &'static str {
        match self.kind {
            EventKind::SessionIssued(_) => "SessionIssued",
            EventKind::SessionRefreshed(_) => "SessionRefreshed",
            EventKind::SessionRevokedAll(_) => "SessionRevokedAll",
        }
    }

    /// The log partition key: the family id, or the subject for subject-wide events,
    /// so one family's events stay in order.
    pub fn partition_key(&self) -> String {
        match self.session_id {
            Some(id) => Self::family_key(id),
            None => Self::subject_key(&self.subject),
        }
    }

    /// The partition key of a family's events.
    pub fn family_key(id: SessionId) -> String {
        id.to_string()
    }

    /// The partition key of a subject-wide event.
    pub fn subject_key(subject: &Subject) -> String {
        format!("subject:{subject}")
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads an event. Faster than the derived `Deserialize` (which buffers the whole
    /// object to resolve the flattened `type`/`data`): one pass over the bytes. The
    /// payload is read straight into its type when `type` comes before `data` (as
    /// this crate writes it); otherwise it is kept as raw JSON until `type` is known.
    ///
    /// The bytes are checked to be UTF-8 once, as a whole, rather than string by
    /// string; bytes that are not (which the JSON this crate writes never are) take the
    /// byte reader, which reads them exactly as before.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::read(serde_json::de::StrRead::new(text)),
            Err(_) => Self::read(serde_json::de::SliceRead::new(bytes)),
        }
    }

    fn read<'de, R: serde_json::de::Read<'de>>(read: R) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::new(read);
        let event = serde::Deserializer::deserialize_map(&mut de, wire::EventVisitor)?;
        de.end()?;
        Ok(event)
    }
}

mod wire {
    use std::fmt;

    use serde::Deserialize;
    use serde::de::{self, IgnoredAny, MapAccess, Visitor};
    use serde_json::value::RawValue;

    use super::{
        Event, EventKind, SessionIssued, SessionRefreshed, SessionRevokedAll, TraceContext,
    };

    const TYPES: &[&str] = &["SessionIssued", "SessionRefreshed", "SessionRevokedAll"];

    #[derive(Deserialize)]
    #[serde(field_identifier, rename_all = "snake_case")]
    enum Field {
        EventId,
        SchemaVersion,
        SessionId,
        Subject,
        Generation,
        OccurredAt,
        Region,
        TraceContext,
        Type,
        Data,
        #[serde(other)]
        Other,
    }

    #[derive(Clone, Copy)]
    enum Type {
        Issued,
        Refreshed,
        RevokedAll,
    }

    /// The event type, read without copying its name.
    impl<'de> Deserialize<'de> for Type {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Type, D::Error> {
            d.deserialize_str(TypeVisitor)
        }
    }

    struct TypeVisitor;

    impl Visitor<'_> for TypeVisitor {
        type Value = Type;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: de::Error>(self, name: &str) -> Result<Type, E> {
            match name {
                "SessionIssued" => Ok(Type::Issued),
                "SessionRefreshed" => Ok(Type::Refreshed),
                "SessionRevokedAll" => Ok(Type::RevokedAll),
                other => Err(de::Error::unknown_variant(other, TYPES)),
            }
        }
    }

    impl Type {
        fn payload<'de, A: MapAccess<'de>>(self, map: &mut A) -> Result<EventKind, A::Error> {
            Ok(match self {
                Type::Issued => EventKind::SessionIssued(map.next_value::<SessionIssued>()?),
                Type::Refreshed => {
                    EventKind::SessionRefreshed(map.next_value::<SessionRefreshed>()?)
                }
                Type::RevokedAll => {
                    EventKind::SessionRevokedAll(map.next_value::<SessionRevokedAll>()?)
                }
            })
        }

        fn payload_of_raw<E: de::Error>(self, raw: &RawValue) -> Result<EventKind, E> {
            let json = raw.get();
            let kind = match self {
                Type::Issued => serde_json::from_str(json).map(EventKind::SessionIssued),
                Type::Refreshed => serde_json::from_str(json).map(EventKind::SessionRefreshed),
                Type::RevokedAll => serde_json::from_str(json).map(EventKind::SessionRevokedAll),
            };
            kind.map_err(de::Error::custom)
        }
    }

    pub(super) struct EventVisitor;

    /// Sets a field once; a second occurrence is an error, as with derived impls.
    fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
        if slot.replace(value).is_some() {
            return Err(de::Error::duplicate_field(name));
        }
        Ok(())
    }

    impl<'de> Visitor<'de> for EventVisitor {
        type Value = Event;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an event object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
            let mut event_id = None;
            let mut schema_version = None;
            let mut session_id = None;
            let mut subject = None;
            let mut generation = None;
            let mut occurred_at = None;
            let mut region = None;
            let mut trace_context: Option<Option<TraceContext>> = None;
            let mut kind_type: Option<Type> = None;
            let mut kind: Option<EventKind> = None;
            let mut raw: Option<&'de RawValue> = None;
            while let Some(field) = map.next_key::<Field>()? {
                match field {
                    Field::EventId => once(&mut event_id, map.next_value()?, "event_id")?,
                    Field::SchemaVersion => {
                        once(&mut schema_version, map.next_value()?, "schema_version")?
                    }
                    Field::SessionId => once(&mut session_id, map.next_value()?, "session_id")?,
                    Field::Subject => once(&mut subject, map.next_value()?, "subject")?,
                    Field::Generation => once(&mut generation, map.next_value()?, "generation")?,
                    Field::OccurredAt => once(&mut occurred_at, map.next_value()?, "occurred_at")?,
                    Field::Region => once(&mut region, map.next_value()?, "region")?,
                    Field::TraceContext => {
                        once(&mut trace_context, map.next_value()?, "trace_context")?
                    }
                    Field::Type => once(&mut kind_type, map.next_value()?, "type")?,
                    Field::Data => {
                        if kind.is_some() || raw.is_some() {
                            return Err(de::Error::duplicate_field("data"));
                        }
                        match kind_type {
                            Some(t) => kind = Some(t.payload(&mut map)?),
                            None => raw = Some(map.next_value()?),
                        }
                    }
                    Field::Other => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            let kind_type = kind_type.ok_or_else(|| de::Error::missing_field("type"))?;
            let kind = match (kind, raw) {
                (Some(kind), _) => kind,
                (None, Some(raw)) => kind_type.payload_of_raw(raw)?,
                (None, None) => return Err(de::Error::missing_field("data")),
            };
            Ok(Event {
                event_id: event_id.ok_or_else(|| de::Error::missing_field("event_id"))?,
                schema_version: schema_version
                    .ok_or_else(|| de::Error::missing_field("schema_version"))?,
                session_id: session_id.flatten(),
                subject: subject.ok_or_else(|| de::Error::missing_field("subject"))?,
                generation: generation.flatten(),
                occurred_at: occurred_at.ok_or_else(|| de::Error::missing_field("occurred_at"))?,
                region: region.ok_or_else(|| de::Error::missing_field("region"))?,
                trace_context: trace_context.flatten(),
                kind,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{at, login_and_logout};

    fn sample() -> Vec<Event> {
        let (_, mut events) = login_and_logout("alice", at(100));
        events[0].trace_context = Some(TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: Some("k=v".into()),
        });
        events
    }

    #[test]
    fn the_one_pass_reader_agrees_with_the_derived_one() {
        for event in sample() {
            let json = event.to_json();
            let derived: Event = serde_json::from_slice(&json).unwrap();
            assert_eq!(Event::from_json(&json).unwrap(), derived);
            assert_eq!(derived, event);
        }
    }

    #[test]
    fn data_before_type_and_unknown_members_are_read_too() {
        for event in sample() {
            let mut v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&event.to_json()).unwrap();
            let data = v.remove("data").unwrap();
            let kind = v.remove("type").unwrap();
            let mut reordered = serde_json::Map::new();
            reordered.insert("data".into(), data);
            reordered.insert("x_future".into(), serde_json::json!({"a": [1, 2]}));
            reordered.extend(v);
            reordered.insert("type".into(), kind);
            let json = serde_json::to_vec(&reordered).unwrap();
            assert_eq!(Event::from_json(&json).unwrap(), event);
        }
    }

    #[test]
    fn malformed_events_are_refused() {
        let json = String::from_utf8(sample()[0].to_json()).unwrap();
        let cases = [
            json.replace("SessionIssued", "SessionExploded"),
            json.replace("\"region\"", "\"regio\""),
            json.replacen("{", "{\"subject\":\"x\",", 1),
            format!("{json} trailing"),
            json.replace("\"data\"", "\"dat\""),
        ];
        for case in cases {
            assert!(Event::from_json(case.as_bytes()).is_err(), "{case}");
        }
    }
}
