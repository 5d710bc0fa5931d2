//! Was a token acceptable at an instant, and why: the verdict of
//! [`ledger_core::explain()`] over the family's events, on a token that
//! `ledger_token::forensics` verified, with the report's text and JSON forms.

use anyhow::Context;
use ledger_core::ports::{HistorySource, LogSource};
use ledger_core::{Explanation, Policy, Timestamp, TokenFacts};
use ledger_token::forensics::{Checked, KeyNote, Verified};
use serde_json::json;

use crate::history::subject_revocations;

/// What `explain` says about a token.
#[derive(Debug)]
pub enum Report {
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

/// Judges a verified token at `at` under `policy`: reads its family's events and the
/// subject-wide revocations of its subject.
pub async fn explain(
    history: &dyn HistorySource,
    source: &dyn LogSource,
    verified: Verified,
    policy: &Policy,
    at: Timestamp,
) -> anyhow::Result<Report> {
    let Verified {
        facts,
        subject,
        key,
    } = verified;
    let session_id = facts.session_id();
    let family = history.history(session_id).await?;
    let first = family
        .first()
        .with_context(|| format!("no events for session {session_id}"))?;
    let subjects = subject_revocations(source, &first.subject).await?;
    let explanation = ledger_core::explain(&facts, &family, &subjects, policy, at);
    let subject = subject.unwrap_or_else(|| first.subject.to_string());
    Ok(Report::Explained {
        facts,
        subject,
        key,
        explanation,
    })
}

impl Report {
    /// The report on a token that did not verify (nothing in the log can change it);
    /// a verified token is handed back, to be judged by [`explain`].
    pub fn unverified(checked: Checked) -> Result<Report, Box<Verified>> {
        match checked {
            Checked::Verified(verified) => Err(Box::new(verified)),
            Checked::Forged { kind, reason } => Ok(Report::Forged { kind, reason }),
            Checked::Refused {
                kind,
                rule,
                reason,
                key,
            } => Ok(Report::Refused {
                kind,
                rule,
                reason,
                key,
            }),
        }
    }

    pub fn acceptable(&self) -> bool {
        matches!(self, Report::Explained { explanation, .. } if explanation.acceptable)
    }

    /// The report as text: the verdict (first line), the token, the key and the events
    /// that decide; `policy` is the configuration the verdict was reached under.
    pub fn text(&self, at: Timestamp, policy: &Policy) -> String {
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

    /// The report as JSON (`--format json`).
    pub fn json(&self, at: Timestamp) -> serde_json::Value {
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
