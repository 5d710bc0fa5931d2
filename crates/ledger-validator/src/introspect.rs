use std::sync::{Arc, RwLock};

use ledger_core::Timestamp;
use ledger_token::{AccessClaims, AccessTokenValidator, TokenError, VerificationKeys};

use crate::{RevocationView, Verdict};

/// The outcome of introspecting an access token.
#[derive(Clone, Debug, PartialEq)]
pub enum Introspection {
    Active(Box<AccessClaims>),
    /// Bad token: signature, claims, type, expiry, …
    Invalid(TokenError),
    /// A good token of a revoked family.
    Revoked(Verdict),
    /// The revocation view is too old to vouch for the token (fail closed).
    Stale(Verdict),
}

impl Introspection {
    pub fn is_active(&self) -> bool {
        matches!(self, Introspection::Active(_))
    }

    /// Why the token is not active, for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Introspection::Active(_) => "active",
            Introspection::Invalid(_) => "invalid_token",
            Introspection::Revoked(_) => "revoked",
            Introspection::Stale(_) => "stale_view",
        }
    }
}

/// Signature and claims (D8), then revocation state (D6).
#[derive(Debug, Clone)]
pub struct Introspector {
    tokens: Arc<RwLock<AccessTokenValidator>>,
    view: Arc<RevocationView>,
}

impl Introspector {
    pub fn new(tokens: AccessTokenValidator, view: Arc<RevocationView>) -> Self {
        Introspector {
            tokens: Arc::new(RwLock::new(tokens)),
            view,
        }
    }

    pub fn view(&self) -> &Arc<RevocationView> {
        &self.view
    }

    /// Installs new verification keys (rotation) without a restart.
    pub fn set_keys(&self, keys: VerificationKeys) {
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .set_keys(keys);
    }

    pub fn introspect(&self, token: &str, now: Timestamp) -> Introspection {
        let claims = {
            let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
            tokens.validate(token, now)
        };
        let claims = match claims {
            Ok(c) => c,
            Err(e) => return Introspection::Invalid(e),
        };
        let Ok(session_id) = claims.session_id() else {
            return Introspection::Invalid(TokenError::Malformed("sid"));
        };
        let issued_at = Timestamp::from_unix_seconds(claims.iat);
        match self.view.check(session_id, &claims.sub, issued_at, now) {
            Verdict::Active => Introspection::Active(Box::new(claims)),
            v @ Verdict::Revoked { .. } => Introspection::Revoked(v),
            v @ Verdict::Stale { .. } => Introspection::Stale(v),
        }
    }
}
