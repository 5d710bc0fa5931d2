use serde::{Deserialize, Serialize};

use crate::{EventId, Generation, SessionId, Subject, Timestamp};

mod canonical;

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

    /// Reads an event: what [`Event::from_json_general`] reads, faster. JSON in the
    /// shape [`Event::to_json`] writes is read as a template, without the general
    /// machinery (see `canonical`); anything else, and every error, is the general
    /// reader's.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        match std::str::from_utf8(bytes) {
            Ok(text) => match canonical::read(text) {
                Some(event) => Ok(event),
                None => Self::read(serde_json::de::StrRead::new(text)),
            },
            Err(_) => Self::read(serde_json::de::SliceRead::new(bytes)),
        }
    }

    /// Reads an event in any form: fields in any order, unknown fields ignored. Faster
    /// than the derived `Deserialize` (which buffers the whole object to resolve the
    /// flattened `type`/`data`): one pass over the bytes. The payload is read straight
    /// into its type when `type` comes before `data` (as this crate writes it);
    /// otherwise it is kept as raw JSON until `type` is known.
    ///
    /// The bytes are checked to be UTF-8 once, as a whole, rather than string by
    /// string; bytes that are not (which the JSON this crate writes never are) take the
    /// byte reader, which reads them exactly as before. [`Event::from_json`] is the
    /// same reader with a fast path; this one is public for the tests and fuzz targets
    /// that compare the two.
    #[doc(hidden)]
    pub fn from_json_general(bytes: &[u8]) -> Result<Self, serde_json::Error> {
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
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

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
    fn claims_survive_a_round_trip_to_the_last_bit() {
        let (_, mut events) = login_and_logout("alice", at(100));
        let EventKind::SessionIssued(issued) = &mut events[0].kind else {
            panic!("a login starts with SessionIssued");
        };
        // Numbers across the whole range (a fixed xorshift sequence of bit patterns):
        // a reader that rounds any of them differently changes the event.
        let mut bits: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..20_000 {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            let x = f64::from_bits(bits);
            if x.is_finite() {
                issued
                    .claims
                    .insert(format!("n{i}"), serde_json::Value::from(x));
            }
        }
        let again = Event::from_json(&events[0].to_json()).unwrap();
        assert_eq!(again, events[0]);
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

    /// Any event, with the values the writer must escape or the readers may refuse.
    fn any_event() -> impl Strategy<Value = Event> {
        let uuid = any::<u128>().prop_map(uuid::Uuid::from_u128);
        // Years 0000 to 9999, as RFC 3339 can write them.
        let time = (-62_167_219_200_000_000i64..253_402_300_800_000_000)
            .prop_map(Timestamp::from_unix_micros);
        let text = prop_oneof![
            "[a-z0-9:@.-]{0,12}",
            ".{0,8}",
            Just("\"quoted\" \\ back/slash".to_owned()),
            Just("tab\tnew\nline\u{7}".to_owned()),
            Just("é ü 日本 🦀".to_owned()),
        ];
        let window =
            (time.clone(), time.clone()).prop_map(|(started_at, expires_at)| SessionWindow {
                started_at,
                expires_at,
            });
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            text.clone().prop_map(serde_json::Value::from),
        ];
        let value = leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(text_key(), inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        let claims = prop::collection::btree_map(text_key(), value, 0..4)
            .prop_map(|m| m.into_iter().collect::<serde_json::Map<_, _>>());
        let issued = (
            prop::option::of(text.clone()),
            claims,
            window.clone(),
            text.clone(),
            [time.clone(), time.clone(), time.clone()],
        )
            .prop_map(|(client_id, claims, session, access_jti, [a, r, keep])| {
                EventKind::SessionIssued(SessionIssued {
                    client_id,
                    claims,
                    session,
                    access_jti,
                    access_expires_at: a,
                    refresh_expires_at: r,
                    retain_until: keep,
                })
            });
        let refreshed = (
            any::<u64>(),
            any::<bool>(),
            prop::option::of(text.clone()),
            window.clone(),
            text.clone(),
            [time.clone(), time.clone(), time.clone(), time.clone()],
        )
            .prop_map(
                |(previous, grace_retry, client_id, session, access_jti, [rot, a, r, keep])| {
                    EventKind::SessionRefreshed(SessionRefreshed {
                        previous_generation: Generation::new(previous),
                        rotated_at: rot,
                        grace_retry,
                        client_id,
                        session,
                        access_jti,
                        access_expires_at: a,
                        refresh_expires_at: r,
                        retain_until: keep,
                    })
                },
            );
        let revoked = (
            prop::sample::select(vec![RevocationScope::Family, RevocationScope::Subject]),
            prop::sample::select(vec![
                RevokeReason::Logout,
                RevokeReason::ReuseDetected,
                RevokeReason::Admin,
            ]),
            [time.clone(), time.clone()],
            prop::option::of(window),
            prop::option::of(any::<u64>().prop_map(Generation::new)),
            prop::option::of(time.clone()),
        )
            .prop_map(
                |(scope, reason, [at, keep], session, generation, rotated)| {
                    EventKind::SessionRevokedAll(SessionRevokedAll {
                        scope,
                        reason,
                        revoked_at: at,
                        keep_until: keep,
                        session,
                        replayed_generation: generation,
                        replayed_rotated_at: rotated,
                    })
                },
            );
        let trace =
            prop::option::of((text.clone(), prop::option::of(text.clone()))).prop_map(|t| {
                t.map(|(traceparent, tracestate)| TraceContext {
                    traceparent,
                    tracestate,
                })
            });
        (
            (uuid.clone(), any::<u32>(), prop::option::of(uuid)),
            text.clone()
                .prop_filter_map("a subject", |s| Subject::parse(s).ok()),
            prop::option::of(any::<u64>().prop_map(Generation::new)),
            time,
            text,
            trace,
            prop_oneof![issued, refreshed, revoked],
        )
            .prop_map(
                |(
                    (event_id, schema_version, session_id),
                    subject,
                    generation,
                    occurred_at,
                    region,
                    trace_context,
                    kind,
                )| Event {
                    event_id: EventId::from_uuid(event_id),
                    schema_version,
                    session_id: session_id.map(SessionId::from_uuid),
                    subject,
                    generation,
                    occurred_at,
                    region,
                    trace_context,
                    kind,
                },
            )
    }

    fn text_key() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z_]{0,6}", ".{0,4}"]
    }

    /// One edit of a JSON text, by characters so that it stays a `str`.
    #[derive(Clone, Debug)]
    enum Edit {
        Delete(prop::sample::Index),
        Insert(prop::sample::Index, char),
        Replace(prop::sample::Index, char),
        /// Copies a stretch of the text elsewhere (a repeated key, a repeated value).
        Copy(prop::sample::Index, prop::sample::Index, usize),
        /// Inserts a token right after one of the occurrences of a structural
        /// character: where a value, a key or a string's content starts or ends.
        After(prop::sample::Index, char, &'static str),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let c = prop_oneof![
            prop::sample::select(
                " \t\n\r\"\\,:{}[]0123456789-+.eEnultrfaxZT\u{0}\u{1f}\u{7f}é日"
                    .chars()
                    .collect::<Vec<_>>()
            ),
            any::<char>(),
        ];
        prop_oneof![
            1 => any::<prop::sample::Index>().prop_map(Edit::Delete),
            1 => (any::<prop::sample::Index>(), c.clone()).prop_map(|(i, c)| Edit::Insert(i, c)),
            1 => (any::<prop::sample::Index>(), c).prop_map(|(i, c)| Edit::Replace(i, c)),
            1 => (
                any::<prop::sample::Index>(),
                any::<prop::sample::Index>(),
                1usize..40
            )
                .prop_map(|(from, to, len)| Edit::Copy(from, to, len)),
            4 => (
                any::<prop::sample::Index>(),
                prop::sample::select(vec![':', ':', ':', ',', '{', '}', '"', '[', 'Z', 'T']),
                prop::sample::select(vec![
                    "0", "00", "1", "-", "-0", ".0", "e1", "E+0", " ", "\n", "\t", "null",
                    "true", "\\u0041", "\\\"", "\\n", "\\/", "\u{1}", "\u{7f}", "é",
                    ".5", "+01:00", "x", "\"x\":1,", ",\"x\":1", "\"claims\":{},", "{}",
                ]),
            )
                .prop_map(|(i, anchor, token)| Edit::After(i, anchor, token)),
        ]
    }

    fn apply(text: &str, edits: &[Edit]) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        for edit in edits {
            if chars.is_empty() {
                break;
            }
            match edit {
                Edit::Delete(i) => {
                    chars.remove(i.index(chars.len()));
                }
                Edit::Insert(i, c) => chars.insert(i.index(chars.len() + 1), *c),
                Edit::Replace(i, c) => {
                    let i = i.index(chars.len());
                    chars[i] = *c;
                }
                Edit::Copy(from, to, len) => {
                    let from = from.index(chars.len());
                    let piece: Vec<char> = chars[from..].iter().take(*len).copied().collect();
                    let to = to.index(chars.len() + 1);
                    chars.splice(to..to, piece);
                }
                Edit::After(i, anchor, token) => {
                    let at: Vec<usize> =
                        (0..chars.len()).filter(|&j| chars[j] == *anchor).collect();
                    if !at.is_empty() {
                        let j = at[i.index(at.len())] + 1;
                        chars.splice(j..j, token.chars());
                    }
                }
            }
        }
        chars.into_iter().collect()
    }

    /// The fast path of `from_json` gives what the general reader gives, or steps aside.
    fn same_as_the_general_reader(text: &str) -> Result<(), TestCaseError> {
        let general = Event::from_json_general(text.as_bytes());
        if let Some(fast) = canonical::read(text) {
            prop_assert_eq!(Some(&fast), general.as_ref().ok(), "{}", text);
        }
        prop_assert_eq!(
            Event::from_json(text.as_bytes()).ok(),
            general.ok(),
            "{}",
            text
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 2048,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever is written reads back whole, through the fast path when it is
        /// free of escapes (as the events this service writes are).
        #[test]
        fn every_event_reads_back(event in any_event()) {
            let json = event.to_json();
            let text = std::str::from_utf8(&json).unwrap();
            prop_assert_eq!(&Event::from_json(&json).unwrap(), &event);
            prop_assert_eq!(&Event::from_json_general(&json).unwrap(), &event);
            if !text.contains('\\') {
                prop_assert_eq!(canonical::read(text), Some(event.clone()), "{}", text);
            }
            same_as_the_general_reader(text)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 8192,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Near misses of the canonical shape: reordered, repeated, missing or extra
        /// bytes. Read exactly as the general reader reads them (or refused by both).
        #[test]
        fn edited_events_read_as_the_general_reader_reads_them(
            event in any_event(),
            edits in prop::collection::vec(edit(), 1..4),
        ) {
            let json = event.to_json();
            let text = apply(std::str::from_utf8(&json).unwrap(), &edits);
            same_as_the_general_reader(&text)?;
        }
    }

    /// Events of every kind and variant as `decide` writes them, with and without
    /// each optional field.
    fn written_events() -> Vec<Event> {
        use crate::testing::{at, login, short_policy};
        use crate::{Command, DecideContext, Projection, decide, decide_subject_revoke};
        let policy = short_policy();
        let ctx = |now| DecideContext {
            now,
            policy: &policy,
            region: "eu-1",
            trace_context: None,
            event_id: crate::testing::event_id(),
        };
        let (id, issued) = login("alice", at(0));
        let mut state = Projection::new();
        state.apply(&issued);
        let mut events = vec![issued];
        let refresh = |presented, jti: &str| Command::Refresh {
            session_id: id,
            presented: Generation::new(presented),
            access_jti: jti.into(),
        };
        for (presented, secs) in [(0, 10), (0, 12), (0, 100)] {
            // A rotation, a grace retry, then a reuse.
            let new = decide(
                state.family(&id),
                None,
                refresh(presented, "j"),
                &ctx(at(secs)),
            );
            for e in new.unwrap_or_default() {
                state.apply(&e);
                events.push(e);
            }
        }
        events.push(decide_subject_revoke(
            Subject::parse("bob").unwrap(),
            RevokeReason::Admin,
            &ctx(at(200)),
        ));
        events.extend(sample());
        // A login with a client and claims, its refresh with the client, and a trace
        // context without a state.
        let mut with_client = events[0].clone();
        if let EventKind::SessionIssued(e) = &mut with_client.kind {
            e.client_id = Some("web".into());
            e.claims = serde_json::json!({"scope": "a b", "roles": ["x", {"y": 1}], "n": -2.5})
                .as_object()
                .cloned()
                .unwrap();
        }
        with_client.trace_context = Some(TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: None,
        });
        events.push(with_client);
        let mut refreshed = events[1].clone();
        if let EventKind::SessionRefreshed(e) = &mut refreshed.kind {
            e.client_id = Some("web".into());
        }
        events.push(refreshed);
        events
    }

    #[test]
    fn the_events_this_service_writes_take_the_fast_path() {
        let events = written_events();
        let kinds: std::collections::BTreeSet<_> = events
            .iter()
            .map(|e| match &e.kind {
                EventKind::SessionRevokedAll(r) => {
                    format!("{:?} {:?}", r.scope, r.reason)
                }
                other => format!("{other:?}").split('(').next().unwrap().to_owned(),
            })
            .collect();
        assert_eq!(kinds.len(), 5, "{kinds:?}");
        assert!(
            events.iter().any(|e| matches!(&e.kind,
                EventKind::SessionRefreshed(r) if r.grace_retry)),
            "a grace retry"
        );
        for event in &events {
            let json = event.to_json();
            let text = std::str::from_utf8(&json).unwrap();
            assert_eq!(canonical::read(text).as_ref(), Some(event), "{text}");
        }
    }

    /// Every text one edit away from an event as written: each character deleted, and
    /// each of a list of tokens inserted at each position. All are read exactly as
    /// the general reader reads them, or refused by both.
    #[test]
    fn one_edit_from_a_written_event_reads_as_the_general_reader_reads_it() {
        const TOKENS: &[&str] = &[
            "0", "1", "-", ".", "e", " ", "\n", "\"", "\\", "\\\"", "\\u0041", ",", ":", "{", "}",
            "[", "]", "n", "null", "x", "Z", "\u{1}", "\u{7f}", "é", "+01:00", "\"x\":1,",
            ",\"x\":1",
        ];
        let mut accepted = 0;
        for event in written_events() {
            let json = String::from_utf8(event.to_json()).unwrap();
            let mut at: Vec<usize> = json.char_indices().map(|(i, _)| i).collect();
            at.push(json.len());
            for (k, &i) in at.iter().enumerate() {
                if let Some(&next) = at.get(k + 1) {
                    let deleted = format!("{}{}", &json[..i], &json[next..]);
                    same_as_the_general_reader(&deleted).unwrap();
                }
                for token in TOKENS {
                    let inserted = format!("{}{token}{}", &json[..i], &json[i..]);
                    same_as_the_general_reader(&inserted).unwrap();
                    accepted += usize::from(canonical::read(&inserted).is_some());
                }
            }
        }
        // Edits inside strings (ids, times and names the types still accept) keep
        // many of them on the fast path: the comparison is not vacuous.
        assert!(accepted > 1_000, "{accepted}");
    }

    #[test]
    fn claims_as_deep_as_the_general_reader_allows_and_no_deeper() {
        let event = &sample()[0];
        let json = String::from_utf8(event.to_json()).unwrap();
        for depth in 100..140 {
            let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let claims = format!("\"claims\":{{\"x\":{deep}}}");
            let text = json.replacen("\"claims\":{}", &claims, 1);
            assert_ne!(text, json);
            let general = Event::from_json_general(text.as_bytes());
            assert_eq!(
                Event::from_json(text.as_bytes()).ok(),
                general.as_ref().ok().cloned(),
                "depth {depth}"
            );
            if depth > 130 {
                assert!(general.is_err(), "depth {depth}");
            }
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
