//! `session-ledger explain --token TOKEN [--at TIME]`: was a token acceptable at an
//! instant, and why. The signature (or MAC) is checked against the key the token names,
//! from the key directory, which keeps retired keys; the verdict itself comes from
//! [`ledger_core::explain()`], over the family's events read from the log.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use ledger_core::{Event, Explanation, Subject, Timestamp, TokenFacts};
use ledger_token::{
    AccessTokenValidator, KeyDir, KeyTime, RefreshTokenError, RefreshTokens, TokenError,
};
use serde_json::json;

use crate::Settings;
use crate::run::Ports;

/// What the token is, once read and checked against its key.
#[derive(Debug)]
enum Checked {
    /// Signature or MAC good: the facts to judge.
    Verified {
        facts: TokenFacts,
        subject: Option<String>,
        key: KeyNote,
    },
    /// Signature or MAC bad, unknown key, or a token this service never mints:
    /// nothing else is decided.
    Forged { kind: &'static str, reason: String },
    /// Signed with a key of ours but for another issuer or audience.
    Refused {
        kind: &'static str,
        rule: &'static str,
        reason: String,
        key: KeyNote,
    },
}

/// The key a verified token names and where it stands in the key directory.
#[derive(Debug)]
struct KeyNote {
    kind: &'static str,
    kid: String,
    created_at: Option<Timestamp>,
    superseded_at: Option<Timestamp>,
    /// For access tokens: the signing key that was current at `iat`.
    current_at_iat: Option<String>,
}

impl KeyNote {
    fn new(kind: &'static str, kid: &str, times: &[KeyTime], iat: Option<Timestamp>) -> KeyNote {
        let index = times.iter().position(|k| k.kid == kid);
        // `iat` has whole seconds: a key created within that second counts as current.
        let current_at_iat = iat.and_then(|iat| {
            times
                .iter()
                .rev()
                .find(|k| k.created_at.unix_seconds() <= iat.unix_seconds())
                .map(|k| k.kid.clone())
        });
        KeyNote {
            kind,
            kid: kid.to_owned(),
            created_at: index.map(|i| times[i].created_at),
            superseded_at: index.and_then(|i| times.get(i + 1)).map(|k| k.created_at),
            current_at_iat,
        }
    }

    fn text(&self, checked: &str) -> String {
        let mut text = format!("{checked} with {} key {}", self.kind, self.kid);
        match (self.created_at, self.superseded_at) {
            (Some(from), Some(until)) => text.push_str(&format!(" (current {from} to {until})")),
            (Some(from), None) => text.push_str(&format!(" (current since {from})")),
            _ => {}
        }
        match &self.current_at_iat {
            Some(kid) if *kid == self.kid => text.push_str("; the current key at iat"),
            Some(kid) => text.push_str(&format!("; NOT the current key at iat ({kid} was)")),
            None if self.kind == "signing" => {
                text.push_str("; NOT the current key at iat (no key existed yet)");
            }
            None => {}
        }
        text
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "kind": self.kind,
            "kid": self.kid,
            "created_at": self.created_at,
            "superseded_at": self.superseded_at,
            "current_at_iat": self.current_at_iat.as_ref().map(|k| *k == self.kid),
        })
    }
}

/// Reads the token and checks its signature or MAC with the key its `kid` names.
/// `Err` when it cannot even be read as one of this service's tokens: anything shaped
/// like one (a refresh token's four parts, a JWT header naming a key) that does not
/// verify is forged or garbled.
fn check(dir: &KeyDir, settings: &Settings, token: &str) -> anyhow::Result<Checked> {
    let unreadable = || anyhow::anyhow!("unreadable token: neither a refresh token nor a JWT");
    if let Some(kid) = RefreshTokens::key_id(token) {
        let keys = dir.refresh_keys().with_context(|| keys_context(dir))?;
        let times = dir.refresh_key_times().with_context(|| keys_context(dir))?;
        let forged = |reason: &str| Checked::Forged {
            kind: "refresh",
            reason: format!("{reason} (key {kid})"),
        };
        return match keys.parse(token) {
            Ok((session_id, generation)) => Ok(Checked::Verified {
                facts: TokenFacts::Refresh {
                    session_id,
                    generation,
                },
                subject: None,
                key: KeyNote::new("refresh", kid, &times, None),
            }),
            Err(RefreshTokenError::BadMac) => Ok(forged("bad MAC")),
            Err(RefreshTokenError::UnknownKey) => Ok(forged("no such refresh key")),
            Err(RefreshTokenError::Malformed) => Ok(forged("malformed")),
        };
    }
    let kid = AccessTokenValidator::key_id(token).ok_or_else(unreadable)?;
    let keys = dir.signing_keys().with_context(|| keys_context(dir))?;
    let times = dir.signing_key_times().with_context(|| keys_context(dir))?;
    let validator = AccessTokenValidator::new(
        keys.all_verification_keys(),
        &settings.issuer,
        &settings.audience,
        Duration::ZERO,
    );
    let forged = |reason: String| Checked::Forged {
        kind: "access",
        reason: format!("{reason} (key {kid})"),
    };
    match validator.verify_ignoring_time(token) {
        Ok(claims) => {
            let session_id = claims.session_id()?;
            let issued_at = Timestamp::from_unix_seconds(claims.iat);
            Ok(Checked::Verified {
                facts: TokenFacts::Access {
                    session_id,
                    jti: claims.jti,
                    issued_at,
                    expires_at: Timestamp::from_unix_seconds(claims.exp),
                },
                subject: Some(claims.sub),
                key: KeyNote::new("signing", &kid, &times, Some(issued_at)),
            })
        }
        Err(e @ (TokenError::Issuer | TokenError::Audience)) => Ok(Checked::Refused {
            kind: "access",
            rule: if e == TokenError::Issuer {
                "wrong_issuer"
            } else {
                "wrong_audience"
            },
            reason: format!("{e}: not a token of this issuer for this audience"),
            key: KeyNote::new("signing", &kid, &times, None),
        }),
        Err(TokenError::Signature) => Ok(forged("bad signature".into())),
        Err(TokenError::UnknownKey) => Ok(forged("no such signing key".into())),
        // A JWT header naming a key, then something this service never signs.
        Err(e) => Ok(forged(e.to_string())),
    }
}

fn keys_context(dir: &KeyDir) -> String {
    format!(
        "reading the keys in {} (mount the service's key directory there, or pass --keys)",
        dir.path().display()
    )
}

/// The subject-wide revocations of `subject`: events with no family, found by reading
/// the whole log (they are not part of any family's history).
async fn subject_revocations(ports: &Ports, subject: &Subject) -> anyhow::Result<Vec<Event>> {
    let mut events = crate::audit::subject_events(ports, subject).await?;
    events.retain(|e| e.session_id.is_none());
    Ok(events)
}

/// How `explain` prints its report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    #[default]
    Text,
    Json,
}

/// `session-ledger explain`: prints the verdict (first line), the token, the key and
/// the events that decide; `Ok(true)` when the token was acceptable at the instant.
pub async fn run_explain(
    settings: &Settings,
    token: &str,
    at: Option<Timestamp>,
    keys: Option<&Path>,
    format: ReportFormat,
) -> anyhow::Result<bool> {
    let at = at.unwrap_or_else(Timestamp::now);
    let dir = KeyDir::new(keys.map_or_else(|| settings.data_dir.join("keys"), Path::to_path_buf));
    let checked = check(&dir, settings, token.trim())?;
    let report = match checked {
        Checked::Verified {
            facts,
            subject,
            key,
        } => {
            let ports = Ports::open(settings).await?;
            let session_id = facts.session_id();
            let family = ports.history.history(session_id).await?;
            let first = family
                .first()
                .with_context(|| format!("no events for session {session_id}"))?;
            let subjects = subject_revocations(&ports, &first.subject).await?;
            let explanation =
                ledger_core::explain(&facts, &family, &subjects, &settings.policy, at);
            let subject = subject.unwrap_or_else(|| first.subject.to_string());
            Report::Explained {
                facts,
                subject,
                key,
                explanation,
            }
        }
        Checked::Forged { kind, reason } => Report::Forged { kind, reason },
        Checked::Refused {
            kind,
            rule,
            reason,
            key,
        } => Report::Refused {
            kind,
            rule,
            reason,
            key,
        },
    };
    let mut out = std::io::stdout().lock();
    if format == ReportFormat::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report.json(at))?)?;
    } else {
        out.write_all(report.text(at, settings).as_bytes())?;
    }
    Ok(report.acceptable())
}

#[derive(Debug)]
enum Report {
    Explained {
        facts: TokenFacts,
        subject: String,
        key: KeyNote,
        explanation: Explanation,
    },
    Forged {
        kind: &'static str,
        reason: String,
    },
    Refused {
        kind: &'static str,
        rule: &'static str,
        reason: String,
        key: KeyNote,
    },
}

impl Report {
    fn acceptable(&self) -> bool {
        matches!(self, Report::Explained { explanation, .. } if explanation.acceptable)
    }

    fn text(&self, at: Timestamp, settings: &Settings) -> String {
        match self {
            Report::Forged { kind, reason } => {
                format!("forged or garbled: {reason}\ntoken:   {kind} token\n")
            }
            Report::Refused {
                kind, reason, key, ..
            } => format!(
                "not acceptable at {at}: {reason}\ntoken:   {kind} token\nkey:     {}\n",
                key.text("signature verified")
            ),
            Report::Explained {
                facts,
                subject,
                key,
                explanation,
            } => {
                let verdict = if explanation.acceptable {
                    "acceptable"
                } else {
                    "not acceptable"
                };
                let checked = match facts {
                    TokenFacts::Refresh { .. } => "MAC verified",
                    TokenFacts::Access { .. } => "signature verified",
                };
                let policy = &settings.policy;
                let mut text = format!(
                    "{verdict} at {at}: {}\ntoken:   {}\nkey:     {}\npolicy:  refresh grace {}, \
                     clock leeway {} (this configuration)\n",
                    explanation.rule,
                    token_text(facts, subject),
                    key.text(checked),
                    humantime::format_duration(policy.refresh_grace),
                    humantime::format_duration(policy.clock_leeway),
                );
                if !explanation.cited.is_empty() {
                    text.push_str("events:\n");
                }
                for c in &explanation.cited {
                    text.push_str(&format!(
                        "  {:<27}  {:<17}  {}  {}\n",
                        c.occurred_at.to_rfc3339(),
                        c.event_type,
                        c.event_id,
                        c.role
                    ));
                }
                text
            }
        }
    }

    fn json(&self, at: Timestamp) -> serde_json::Value {
        match self {
            Report::Forged { kind, reason } => json!({
                "verdict": "forged_or_garbled",
                "acceptable": false,
                "at": at,
                "rule": "forged_or_garbled",
                "reason": reason,
                "token": { "kind": kind },
            }),
            Report::Refused {
                kind,
                rule,
                reason,
                key,
            } => json!({
                "verdict": "not_acceptable",
                "acceptable": false,
                "at": at,
                "rule": rule,
                "reason": reason,
                "token": { "kind": kind },
                "key": key.json(),
            }),
            Report::Explained {
                facts,
                subject,
                key,
                explanation,
            } => json!({
                "verdict": if explanation.acceptable { "acceptable" } else { "not_acceptable" },
                "acceptable": explanation.acceptable,
                "at": at,
                "rule": explanation.rule.code(),
                "reason": explanation.rule.to_string(),
                "token": token_json(facts, subject),
                "key": key.json(),
                "events": explanation.cited.iter().map(|c| json!({
                    "event_id": c.event_id,
                    "type": c.event_type,
                    "occurred_at": c.occurred_at,
                    "role": c.role,
                })).collect::<Vec<_>>(),
            }),
        }
    }
}

fn token_text(facts: &TokenFacts, subject: &str) -> String {
    match facts {
        TokenFacts::Refresh {
            session_id,
            generation,
        } => format!("refresh token of session {session_id} ({subject}), generation {generation}"),
        TokenFacts::Access {
            session_id,
            jti,
            issued_at,
            expires_at,
        } => format!(
            "access token of session {session_id} ({subject}), jti {jti}, iat {issued_at}, exp \
             {expires_at}"
        ),
    }
}

fn token_json(facts: &TokenFacts, subject: &str) -> serde_json::Value {
    match facts {
        TokenFacts::Refresh {
            session_id,
            generation,
        } => json!({
            "kind": "refresh",
            "session_id": session_id,
            "subject": subject,
            "generation": generation,
        }),
        TokenFacts::Access {
            session_id,
            jti,
            issued_at,
            expires_at,
        } => json!({
            "kind": "access",
            "session_id": session_id,
            "subject": subject,
            "jti": jti,
            "iat": issued_at,
            "exp": expires_at,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, secs: i64) -> KeyTime {
        KeyTime {
            kid: kid.into(),
            created_at: Timestamp::from_unix_micros(secs * 1_000_000 + 500_000),
        }
    }

    #[test]
    fn a_key_is_current_from_its_creation_to_the_next_one() {
        let times = [key("k1", 100), key("k2", 200)];
        let iat = |secs| Some(Timestamp::from_unix_seconds(secs));
        // Created half-way through second 200: a token of that second counts.
        let note = KeyNote::new("signing", "k2", &times, iat(200));
        assert_eq!(note.current_at_iat.as_deref(), Some("k2"));
        assert!(note.text("verified").ends_with("; the current key at iat"));
        let note = KeyNote::new("signing", "k1", &times, iat(250));
        assert_eq!(note.superseded_at, Some(times[1].created_at));
        assert!(
            note.text("verified")
                .ends_with("; NOT the current key at iat (k2 was)")
        );
        let note = KeyNote::new("signing", "k2", &times, iat(150));
        assert!(
            note.text("verified")
                .contains("NOT the current key at iat (k1 was)")
        );
        let note = KeyNote::new("signing", "k1", &times, iat(50));
        assert!(note.text("verified").contains("no key existed yet"));
    }
}
