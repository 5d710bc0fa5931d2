//! Log events to Security Event Tokens (RFC 8417), with no I/O: the claims of a CAEP
//! `session-revoked` SET for a revocation, and of an SSF verification SET.
//!
//! A SET is a pure function of (issuer, stream, event): its `jti` is derived from the
//! stream and the source event, `iat` is the event's time, and RS256 signatures are
//! deterministic, so a redelivered log event yields the very same SET.

use ledger_core::{Event, EventKind, RevocationScope, RevokeReason};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{SESSION_REVOKED, VERIFICATION};

/// Namespace of the derived `jti`s (UUID v5).
const JTI_NAMESPACE: Uuid = Uuid::from_u128(0x6c1e_5d2b_9a47_4f0e_8e3c_51a0_77d2_c9f4);

/// The `jti` of the SET of `event` on `stream_id`.
pub fn jti(stream_id: &str, event: &Event) -> String {
    Uuid::new_v5(
        &JTI_NAMESPACE,
        format!("{stream_id}/{}", event.event_id).as_bytes(),
    )
    .to_string()
}

/// The subject identifiers a stream can name (RFC 9493 `iss_sub` or `opaque`): a
/// user by (issuer, subject), or a session by family id.
pub fn subject_matches(subject: &Value, issuer: &str, event: &Event) -> bool {
    match subject.get("format").and_then(Value::as_str) {
        Some("iss_sub") => {
            subject.get("iss").and_then(Value::as_str) == Some(issuer)
                && subject.get("sub").and_then(Value::as_str) == Some(event.subject.as_str())
        }
        Some("opaque") => {
            let id = subject.get("id").and_then(Value::as_str);
            id == Some(event.subject.as_str())
                || event
                    .session_id
                    .is_some_and(|s| id == Some(s.to_string().as_str()))
        }
        _ => false,
    }
}

/// Whether a subject identifier is one this transmitter understands.
pub fn subject_supported(subject: &Value) -> bool {
    match subject.get("format").and_then(Value::as_str) {
        Some("iss_sub") => {
            subject.get("iss").and_then(Value::as_str).is_some()
                && subject.get("sub").and_then(Value::as_str).is_some()
        }
        Some("opaque") => subject.get("id").and_then(Value::as_str).is_some(),
        _ => false,
    }
}

/// The claims of the `session-revoked` SET for a revocation event; `None` for any
/// other event. `sub_id` is a complex subject: `session` (opaque family id) for a
/// family, and always `user` (`iss_sub`).
pub fn session_revoked(issuer: &str, stream_id: &str, aud: &Value, event: &Event) -> Option<Value> {
    let EventKind::SessionRevokedAll(r) = &event.kind else {
        return None;
    };
    let user = json!({"format": "iss_sub", "iss": issuer, "sub": event.subject.as_str()});
    let sub_id = match (r.scope, event.session_id) {
        (RevocationScope::Family, Some(id)) => json!({
            "format": "complex",
            "session": {"format": "opaque", "id": id.to_string()},
            "user": user,
        }),
        _ => json!({"format": "complex", "user": user}),
    };
    let (initiating_entity, admin, user_text) = match (r.reason, r.scope) {
        (RevokeReason::Logout, _) => ("user", "the user signed out", "You signed out."),
        (RevokeReason::ReuseDetected, _) => (
            "policy",
            "refresh token reuse detected: a rotated-away refresh token was presented again",
            "Your session was ended for your protection.",
        ),
        (RevokeReason::Admin, RevocationScope::Subject) => (
            "admin",
            "every session of the user was revoked",
            "Your sessions were ended.",
        ),
        (RevokeReason::Admin, RevocationScope::Family) => (
            "admin",
            "the session was revoked",
            "Your session was ended.",
        ),
    };
    Some(json!({
        "iss": issuer,
        "jti": jti(stream_id, event),
        "iat": r.revoked_at.unix_seconds(),
        "aud": aud,
        "txn": event.event_id.to_string(),
        "sub_id": sub_id,
        "events": {
            SESSION_REVOKED: {
                "event_timestamp": r.revoked_at.unix_seconds(),
                "initiating_entity": initiating_entity,
                "reason_admin": {"en": admin},
                "reason_user": {"en": user_text},
            }
        }
    }))
}

/// The claims of a verification SET (SSF §8.1.4.1): `sub_id` names the stream.
pub fn verification(
    issuer: &str,
    stream_id: &str,
    aud: &Value,
    state: Option<&str>,
    iat: i64,
) -> Value {
    let mut body = serde_json::Map::new();
    if let Some(state) = state {
        body.insert("state".into(), Value::String(state.to_owned()));
    }
    json!({
        "iss": issuer,
        "jti": Uuid::new_v4().to_string(),
        "iat": iat,
        "aud": aud,
        "sub_id": {"format": "opaque", "id": stream_id},
        "events": { VERIFICATION: Value::Object(body) },
    })
}

#[cfg(test)]
mod tests {
    use ledger_core::testing::{at, login_and_logout};

    use super::*;

    #[test]
    fn a_logout_becomes_one_session_revoked_event_about_the_session_and_user() {
        let (id, events) = login_and_logout("alice", at(100));
        let aud = json!("partner");
        assert!(session_revoked("https://ledger", "s1", &aud, &events[0]).is_none());
        let claims = session_revoked("https://ledger", "s1", &aud, &events[1]).expect("a SET");
        assert_eq!(claims["iss"], "https://ledger");
        assert_eq!(claims["aud"], "partner");
        assert_eq!(claims["txn"], events[1].event_id.to_string());
        assert_eq!(claims["sub_id"]["format"], "complex");
        assert_eq!(claims["sub_id"]["session"]["id"], id.to_string());
        assert_eq!(claims["sub_id"]["user"]["sub"], "alice");
        assert!(claims.get("sub").is_none() && claims.get("exp").is_none());
        let events_claim = claims["events"].as_object().expect("events");
        assert_eq!(events_claim.len(), 1, "one event per SET");
        assert_eq!(events_claim[SESSION_REVOKED]["initiating_entity"], "user");
        // Same stream and event, same jti; another stream, another jti.
        assert_eq!(claims["jti"], jti("s1", &events[1]));
        assert_ne!(jti("s1", &events[1]), jti("s2", &events[1]));
    }

    #[test]
    fn subjects_match_by_user_or_session() {
        let (id, events) = login_and_logout("alice", at(100));
        let e = &events[1];
        let user = json!({"format": "iss_sub", "iss": "https://ledger", "sub": "alice"});
        assert!(subject_matches(&user, "https://ledger", e));
        assert!(!subject_matches(&user, "https://other", e));
        let session = json!({"format": "opaque", "id": id.to_string()});
        assert!(subject_matches(&session, "https://ledger", e));
        assert!(!subject_matches(
            &json!({"format": "email", "email": "a@b"}),
            "x",
            e
        ));
        assert!(!subject_supported(
            &json!({"format": "email", "email": "a@b"})
        ));
        assert!(subject_supported(&session));
    }
}
