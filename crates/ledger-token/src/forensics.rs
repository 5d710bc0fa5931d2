//! Token forensics for auditors: read a token, check its signature or MAC with the key
//! its `kid` names in a key directory (retired keys included), and say where that key
//! stands in the directory's history. Nothing here decides whether the token was
//! acceptable: that is `ledger_core::explain`, over the family's events.

use std::path::PathBuf;
use std::time::Duration;

use ledger_core::{Timestamp, TokenFacts};
use serde_json::json;

use crate::{
    AccessTokenValidator, KeyDir, KeyError, KeyTime, RefreshTokenError, RefreshTokens, TokenError,
};

/// What the token is, once read and checked against its key.
#[derive(Debug)]
pub enum Checked {
    /// Signature or MAC good: the facts to judge.
    Verified(Verified),
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

/// A token whose signature or MAC verified.
#[derive(Debug)]
pub struct Verified {
    pub facts: TokenFacts,
    /// The access token's `sub` (a refresh token names none).
    pub subject: Option<String>,
    pub key: KeyNote,
}

/// Why a token could not be examined at all.
#[derive(Debug, thiserror::Error)]
pub enum ForensicsError {
    #[error("unreadable token: neither a refresh token nor a JWT")]
    Unreadable,
    /// The key directory could not be read.
    #[error("reading the keys in {}", path.display())]
    Keys {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error(transparent)]
    Claims(#[from] TokenError),
}

/// The key a verified token names and where it stands in the key directory.
#[derive(Debug)]
pub struct KeyNote {
    kind: &'static str,
    kid: String,
    created_at: Option<Timestamp>,
    superseded_at: Option<Timestamp>,
    /// For access tokens: the signing key that was current at `iat`.
    current_at_iat: Option<String>,
}

impl KeyNote {
    pub fn new(
        kind: &'static str,
        kid: &str,
        times: &[KeyTime],
        iat: Option<Timestamp>,
    ) -> KeyNote {
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

    /// The key in words, after `checked` ("signature verified", "MAC verified").
    pub fn text(&self, checked: &str) -> String {
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

    pub fn json(&self) -> serde_json::Value {
        json!({
            "kind": self.kind,
            "kid": self.kid,
            "created_at": self.created_at,
            "superseded_at": self.superseded_at,
            "current_at_iat": self.current_at_iat.as_ref().map(|k| *k == self.kid),
        })
    }
}

/// Reads the token and checks its signature or MAC with the key its `kid` names in
/// `dir`. `Err` when it cannot even be read as one of this service's tokens: anything
/// shaped like one (a refresh token's four parts, a JWT header naming a key) that does
/// not verify is forged or garbled.
pub fn check(
    dir: &KeyDir,
    issuer: &str,
    audience: &str,
    token: &str,
) -> Result<Checked, ForensicsError> {
    let keys_error = |source| ForensicsError::Keys {
        path: dir.path().to_owned(),
        source,
    };
    if let Some(kid) = RefreshTokens::key_id(token) {
        let keys = dir.refresh_keys().map_err(keys_error)?;
        let times = dir.refresh_key_times().map_err(keys_error)?;
        let forged = |reason: &str| Checked::Forged {
            kind: "refresh",
            reason: format!("{reason} (key {kid})"),
        };
        return match keys.parse(token) {
            Ok((session_id, generation)) => Ok(Checked::Verified(Verified {
                facts: TokenFacts::Refresh {
                    session_id,
                    generation,
                },
                subject: None,
                key: KeyNote::new("refresh", kid, &times, None),
            })),
            Err(RefreshTokenError::BadMac) => Ok(forged("bad MAC")),
            Err(RefreshTokenError::UnknownKey) => Ok(forged("no such refresh key")),
            Err(RefreshTokenError::Malformed) => Ok(forged("malformed")),
        };
    }
    let kid = AccessTokenValidator::key_id(token).ok_or(ForensicsError::Unreadable)?;
    let keys = dir.signing_keys().map_err(keys_error)?;
    let times = dir.signing_key_times().map_err(keys_error)?;
    let validator = AccessTokenValidator::new(
        keys.all_verification_keys(),
        issuer,
        audience,
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
            Ok(Checked::Verified(Verified {
                facts: TokenFacts::Access {
                    session_id,
                    jti: claims.jti,
                    issued_at,
                    expires_at: Timestamp::from_unix_seconds(claims.exp),
                },
                subject: Some(claims.sub),
                key: KeyNote::new("signing", &kid, &times, Some(issued_at)),
            }))
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
