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
    /// object to resolve the flattened `type`/`data`): the envelope is read once, the
    /// payload straight into its type.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Wire<'a> {
            event_id: EventId,
            schema_version: u32,
            session_id: Option<SessionId>,
            subject: Subject,
            generation: Option<Generation>,
            occurred_at: Timestamp,
            region: String,
            #[serde(default)]
            trace_context: Option<TraceContext>,
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            data: &'a serde_json::value::RawValue,
        }
        let wire: Wire<'_> = serde_json::from_slice(bytes)?;
        let data = wire.data.get();
        let kind = match wire.kind.as_ref() {
            "SessionIssued" => EventKind::SessionIssued(serde_json::from_str(data)?),
            "SessionRefreshed" => EventKind::SessionRefreshed(serde_json::from_str(data)?),
            "SessionRevokedAll" => EventKind::SessionRevokedAll(serde_json::from_str(data)?),
            other => {
                return Err(serde::de::Error::unknown_variant(
                    other,
                    &["SessionIssued", "SessionRefreshed", "SessionRevokedAll"],
                ));
            }
        };
        Ok(Event {
            event_id: wire.event_id,
            schema_version: wire.schema_version,
            session_id: wire.session_id,
            subject: wire.subject,
            generation: wire.generation,
            occurred_at: wire.occurred_at,
            region: wire.region,
            trace_context: wire.trace_context,
            kind,
        })
    }
}
