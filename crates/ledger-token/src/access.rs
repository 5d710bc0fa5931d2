use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Verifier};
use jsonwebtoken::{Algorithm, Header};
use ledger_core::{SessionId, Subject, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{SigningKeys, VerificationKeys};

/// Longest token accepted for parsing; anything longer is refused before decoding.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Header parameters that would make a verifier fetch or trust a key from the token
/// itself (RFC 8725 §3.10), and `crit`, whose extensions this verifier understands none of.
const FORBIDDEN_HEADER_PARAMS: [&str; 5] = ["jku", "jwk", "x5u", "x5c", "crit"];

/// The claims of an access token (RFC 9068 plus `sid`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub sid: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The login service's extra claims.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl AccessClaims {
    pub fn session_id(&self) -> Result<SessionId, TokenError> {
        SessionId::parse(&self.sid).map_err(|_| TokenError::Malformed("sid is not a session id"))
    }
}

/// Why an access token is not acceptable. Validators answer "not active" for all of
/// them; the variant says why, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token too long")]
    TooLong,
    #[error("algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("token type must be at+jwt")]
    Type,
    #[error("header parameter {0} is not accepted")]
    ForbiddenHeader(&'static str),
    #[error("unknown key id")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
}

/// What to put in a new access token.
#[derive(Clone, Debug)]
pub struct MintAccess<'a> {
    pub subject: &'a Subject,
    pub session_id: SessionId,
    pub jti: &'a str,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub client_id: Option<&'a str>,
    pub extra: &'a serde_json::Map<String, serde_json::Value>,
}

/// Signs access tokens with the current key.
#[derive(Clone, Debug)]
pub struct AccessTokenIssuer {
    keys: SigningKeys,
    issuer: String,
    audience: String,
}

/// Claim names the login service may not set through `claims`: they are ours.
pub const RESERVED_CLAIMS: [&str; 11] = [
    "iss",
    "aud",
    "sub",
    "sid",
    "jti",
    "iat",
    "exp",
    "nbf",
    "client_id",
    "typ",
    "cnf",
];

impl AccessTokenIssuer {
    pub fn new(keys: SigningKeys, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        AccessTokenIssuer {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
        }
    }

    pub fn keys(&self) -> &SigningKeys {
        &self.keys
    }

    pub fn mint(&self, m: &MintAccess<'_>) -> String {
        let (kid, key) = self.keys.current();
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(kid.to_owned());
        let mut extra = m.extra.clone();
        extra.retain(|k, _| !RESERVED_CLAIMS.contains(&k.as_str()));
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: m.subject.as_str().to_owned(),
            sid: m.session_id.to_string(),
            jti: m.jti.to_owned(),
            iat: m.issued_at.unix_seconds(),
            exp: m.expires_at.unix_seconds(),
            nbf: None,
            client_id: m.client_id.map(str::to_owned),
            extra,
        };
        // Signing plain JSON with a key that loaded cannot fail.
        jsonwebtoken::encode(&header, &claims, key).unwrap_or_default()
    }
}

/// Validates access tokens (D8): algorithm pinned to EdDSA for every key, `typ`
/// checked, keys only from the configured set, required claims, bounded leeway.
#[derive(Clone, Debug)]
pub struct AccessTokenValidator {
    keys: VerificationKeys,
    issuer: String,
    audience: String,
    leeway: Duration,
}

impl AccessTokenValidator {
    pub fn new(
        keys: VerificationKeys,
        issuer: impl Into<String>,
        audience: impl Into<String>,
        leeway: Duration,
    ) -> Self {
        AccessTokenValidator {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
            leeway,
        }
    }

    pub fn set_keys(&mut self, keys: VerificationKeys) {
        self.keys = keys;
    }

    /// The keys tokens are verified with.
    pub fn keys(&self) -> &VerificationKeys {
        &self.keys
    }

    pub fn validate(&self, token: &str, now: Timestamp) -> Result<AccessClaims, TokenError> {
        let claims = self.verify_ignoring_time(token)?;
        let now_s = now.unix_seconds();
        let leeway = i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX);
        if now_s >= claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if claims.iat > now_s.saturating_add(leeway)
            || claims
                .nbf
                .is_some_and(|nbf| nbf > now_s.saturating_add(leeway))
        {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    /// Everything [`Self::validate`] checks but `exp`, `iat` and `nbf`: for auditors
    /// who judge a token's time against an instant of their choosing.
    pub fn verify_ignoring_time(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let header = raw_header(token)?;
        match header.get("alg").and_then(|a| a.as_str()) {
            Some("EdDSA") => {}
            Some(other) => return Err(TokenError::Algorithm(other.chars().take(16).collect())),
            None => return Err(TokenError::Malformed("no alg")),
        }
        let typ = header.get("typ").and_then(|t| t.as_str()).unwrap_or("");
        if !typ.eq_ignore_ascii_case("at+jwt") && !typ.eq_ignore_ascii_case("application/at+jwt") {
            return Err(TokenError::Type);
        }
        if let Some(p) = FORBIDDEN_HEADER_PARAMS
            .into_iter()
            .find(|p| header.contains_key(*p))
        {
            return Err(TokenError::ForbiddenHeader(p));
        }
        let kid = header
            .get("kid")
            .and_then(|k| k.as_str())
            .ok_or(TokenError::UnknownKey)?;
        let key = self.keys.get(kid).ok_or(TokenError::UnknownKey)?;

        // The signature first: nothing of the claims is read before it verified.
        let (signing_input, signature) = token
            .rsplit_once('.')
            .ok_or(TokenError::Malformed("not three segments"))?;
        let mut raw = [0u8; 64];
        match B64.decode_slice(signature, &mut raw) {
            Ok(64) => {}
            Ok(_) | Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
                return Err(TokenError::Signature);
            }
            Err(_) => return Err(TokenError::Malformed("signature is not base64url")),
        }
        key.verify(signing_input.as_bytes(), &Signature::from_bytes(&raw))
            .map_err(|_| TokenError::Signature)?;
        let payload = signing_input
            .split_once('.')
            .map(|(_, payload)| payload)
            .ok_or(TokenError::Malformed("not three segments"))?;
        let json = B64
            .decode(payload)
            .map_err(|_| TokenError::Malformed("claims are not base64url"))?;
        // Every required claim is a field: a missing or mistyped one (a string `exp`)
        // fails here.
        let claims: AccessClaims =
            serde_json::from_slice(&json).map_err(|_| TokenError::Malformed("claims"))?;
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer);
        }
        if claims.aud != self.audience {
            return Err(TokenError::Audience);
        }
        if claims.jti.is_empty() || claims.sub.is_empty() {
            return Err(TokenError::Malformed("empty jti or sub"));
        }
        claims.session_id()?;
        Ok(claims)
    }

    /// The `kid` an access token's header names, unverified.
    pub fn key_id(token: &str) -> Option<String> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let header = raw_header(token).ok()?;
        header.get("kid")?.as_str().map(str::to_owned)
    }
}

/// The JOSE header as raw JSON, so parameters the JWT library ignores are seen too.
fn raw_header(token: &str) -> Result<serde_json::Map<String, serde_json::Value>, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three segments"));
    };
    let bytes = B64
        .decode(header)
        .map_err(|_| TokenError::Malformed("header is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed("header is not a JSON object"))
}

#[cfg(test)]
mod tests;
