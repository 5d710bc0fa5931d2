use std::sync::Arc;

use arc_swap::ArcSwap;
use ledger_core::Timestamp;
use ledger_token::{AccessClaims, AccessTokenValidator, TokenError, VerificationKeys};
use sha2::{Digest, Sha256};

use crate::cache::{Verified, VerifiedCache};
use crate::{RevocationView, Verdict};

/// How many verified tokens an [`Introspector`] remembers by default.
pub const DEFAULT_TOKEN_CACHE: usize = 65_536;

/// Longest token worth hashing for the cache; longer ones are refused by validation.
const MAX_CACHED_TOKEN_LEN: usize = 8 * 1024;

/// The outcome of introspecting an access token.
#[derive(Clone, Debug, PartialEq)]
pub enum Introspection {
    /// Shared with the cache of verified tokens.
    Active(Arc<AccessClaims>),
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
///
/// A token whose signature and claims verified is remembered by the SHA-256 of the
/// whole token string, so presenting it again skips the EdDSA verification. The
/// entry is used only before the token's `exp` (after it, validation proper decides,
/// with its leeway), is dropped when the keys change, and the cache is bounded. The
/// revocation check is never cached: every call asks the view.
#[derive(Debug, Clone)]
pub struct Introspector {
    tokens: Arc<ArcSwap<AccessTokenValidator>>,
    view: Arc<RevocationView>,
    cache: Arc<VerifiedCache>,
    /// Signalled when a token names a key this validator does not know: a rotation
    /// may have happened, so whoever keeps the keys fresh should look now.
    unknown_key: Arc<tokio::sync::Notify>,
}

impl Introspector {
    /// With a cache of [`DEFAULT_TOKEN_CACHE`] verified tokens.
    pub fn new(tokens: AccessTokenValidator, view: Arc<RevocationView>) -> Self {
        Self::with_token_cache(tokens, view, DEFAULT_TOKEN_CACHE)
    }

    /// With a cache of about `capacity` verified tokens (0: every call verifies).
    pub fn with_token_cache(
        tokens: AccessTokenValidator,
        view: Arc<RevocationView>,
        capacity: usize,
    ) -> Self {
        Introspector {
            tokens: Arc::new(ArcSwap::from_pointee(tokens)),
            view,
            cache: Arc::new(VerifiedCache::new(capacity)),
            unknown_key: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Resolves when a token with an unknown `kid` was presented since the last call.
    pub async fn unknown_key_presented(&self) {
        self.unknown_key.notified().await;
    }

    pub fn view(&self) -> &Arc<RevocationView> {
        &self.view
    }

    /// Installs new verification keys (rotation) without a restart. When the set
    /// changed, tokens verified under the previous keys are verified again; the same
    /// set again (a periodic re-read) keeps the cache. True when the set changed.
    pub fn set_keys(&self, keys: VerificationKeys) -> bool {
        if *self.tokens.load().keys() == keys {
            return false;
        }
        let mut tokens = AccessTokenValidator::clone(&self.tokens.load());
        tokens.set_keys(keys);
        self.tokens.store(Arc::new(tokens));
        self.cache.invalidate();
        true
    }

    /// How many verified tokens are cached now.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    pub fn introspect(&self, token: &str, now: Timestamp) -> Introspection {
        let verified = match self.verify(token, now) {
            Ok(v) => v,
            Err(e) => {
                if e == TokenError::UnknownKey {
                    self.unknown_key.notify_one();
                }
                return Introspection::Invalid(e);
            }
        };
        let issued_at = Timestamp::from_unix_seconds(verified.claims.iat);
        match self
            .view
            .check(verified.session_id, &verified.claims.sub, issued_at, now)
        {
            Verdict::Active => Introspection::Active(verified.claims),
            v @ Verdict::Revoked { .. } => Introspection::Revoked(v),
            v @ Verdict::Stale { .. } => Introspection::Stale(v),
        }
    }

    /// Signature and claims, from the cache when this exact token verified before.
    fn verify(&self, token: &str, now: Timestamp) -> Result<Verified, TokenError> {
        let now_s = now.unix_seconds();
        let digest = (self.cache.enabled() && token.len() <= MAX_CACHED_TOKEN_LEN)
            .then(|| <[u8; 32]>::from(Sha256::digest(token.as_bytes())));
        if let Some(hit) = digest.and_then(|d| self.cache.get(&d, now_s)) {
            return Ok(hit);
        }
        let generation = self.cache.generation();
        let claims = self.tokens.load().validate(token, now)?;
        let session_id = claims
            .session_id()
            .map_err(|_| TokenError::Malformed("sid"))?;
        let verified = Verified {
            expires_at: claims.exp,
            claims: Arc::new(claims),
            session_id,
            verified_at: now_s,
            generation,
        };
        if let Some(d) = digest {
            self.cache.insert(d, verified.clone());
        }
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ledger_core::{
        Command, DecideContext, Policy, Projection, RevokeReason, SessionId, Subject, decide,
    };
    use ledger_token::{AccessTokenIssuer, MintAccess, SigningKeys};

    use super::*;

    const ISS: &str = "https://issuer.test";
    const AUD: &str = "api";

    struct Fixture {
        issuer: AccessTokenIssuer,
        introspector: Introspector,
        now: Timestamp,
        session: SessionId,
        events: Vec<ledger_core::Event>,
    }

    /// A caught-up view that knows one live family of alice.
    fn fixture(leeway: Duration) -> Fixture {
        let keys = SigningKeys::generate();
        let validator = AccessTokenValidator::new(keys.verification_keys(), ISS, AUD, leeway);
        let view = Arc::new(RevocationView::new(Duration::from_secs(3600)));
        let now = Timestamp::from_unix_seconds(ledger_clock::now().unix_seconds());
        let (session, issued) = ledger_core::testing::login("alice", now);
        let events = vec![issued];
        view.apply(
            &records(&events),
            vec![],
            Some(0),
            Some(ledger_clock::now()),
        );
        Fixture {
            issuer: AccessTokenIssuer::new(keys, ISS, AUD),
            introspector: Introspector::new(validator, view),
            now,
            session,
            events,
        }
    }

    use ledger_core::testing::records;

    impl Fixture {
        fn mint(&self, jti: &str, lifetime: Duration) -> String {
            self.issuer.mint(&MintAccess {
                subject: &Subject::parse("alice").unwrap(),
                session_id: self.session,
                jti,
                issued_at: self.now,
                expires_at: self.now.saturating_add(lifetime),
                client_id: None,
                extra: &Default::default(),
            })
        }

        /// Replaces the validator by one that knows no key, *without* telling the
        /// cache: only a cache hit can then make a token active.
        fn forget_keys_behind_the_cache(&self) {
            let other = SigningKeys::generate();
            let blind =
                AccessTokenValidator::new(other.verification_keys(), ISS, AUD, Duration::ZERO);
            self.introspector.tokens.store(Arc::new(blind));
        }

        fn revoke(&self) {
            let policy = Policy::default();
            let ctx = DecideContext {
                now: self.now,
                policy: &policy,
                region: "t",
                trace_context: None,
                event_id: ledger_clock::new_event_id(),
            };
            let mut p = Projection::new();
            for e in &self.events {
                p.apply(e);
            }
            let revoke = Command::Revoke {
                session_id: self.session,
                reason: RevokeReason::Logout,
            };
            let revoked = decide(p.family(&self.session), None, revoke, &ctx).unwrap();
            self.introspector.view().apply(
                &records(&revoked),
                vec![],
                Some(0),
                Some(ledger_clock::now()),
            );
        }
    }

    #[test]
    fn a_repeated_token_is_served_from_the_cache() {
        let f = fixture(Duration::ZERO);
        let token = f.mint("j1", Duration::from_secs(60));
        assert!(f.introspector.introspect(&token, f.now).is_active());
        assert_eq!(f.introspector.cached_tokens(), 1);
        f.forget_keys_behind_the_cache();
        assert!(f.introspector.introspect(&token, f.now).is_active());
    }

    #[test]
    fn a_cached_entry_expires_with_the_token() {
        let f = fixture(Duration::ZERO);
        let token = f.mint("j1", Duration::from_secs(60));
        assert!(f.introspector.introspect(&token, f.now).is_active());
        let at_exp = f.now.saturating_add(Duration::from_secs(60));
        assert_eq!(
            f.introspector.introspect(&token, at_exp),
            Introspection::Invalid(TokenError::Expired)
        );
        // Within the leeway, validation proper (not the cache) still accepts it.
        let f = fixture(Duration::from_secs(30));
        let token = f.mint("j1", Duration::from_secs(60));
        assert!(f.introspector.introspect(&token, f.now).is_active());
        f.forget_keys_behind_the_cache();
        let after_exp = f.now.saturating_add(Duration::from_secs(61));
        assert!(
            !f.introspector.introspect(&token, after_exp).is_active(),
            "past exp the cached verification must not be used"
        );
    }

    #[test]
    fn a_revocation_after_caching_is_seen_at_once() {
        let f = fixture(Duration::ZERO);
        let token = f.mint("j1", Duration::from_secs(60));
        assert!(f.introspector.introspect(&token, f.now).is_active());
        f.revoke();
        match f.introspector.introspect(&token, f.now) {
            Introspection::Revoked(Verdict::Revoked { reason, .. }) => {
                assert_eq!(reason, RevokeReason::Logout)
            }
            other => panic!("expected revoked, got {other:?}"),
        }
    }

    #[test]
    fn a_different_token_with_the_same_prefix_does_not_hit() {
        let f = fixture(Duration::ZERO);
        let token = f.mint("j1", Duration::from_secs(60));
        assert!(f.introspector.introspect(&token, f.now).is_active());
        // Same header and claims, another signature.
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
        let forged = format!("{signed}.{flipped}{}", &signature[1..]);
        assert_eq!(
            f.introspector.introspect(&forged, f.now),
            Introspection::Invalid(TokenError::Signature)
        );
        // A longer string that starts with the whole good token.
        let extended = format!("{token}A");
        assert!(!f.introspector.introspect(&extended, f.now).is_active());
        assert_eq!(f.introspector.cached_tokens(), 1);
    }

    #[test]
    fn new_keys_drop_cached_verifications() {
        let f = fixture(Duration::ZERO);
        let token = f.mint("j1", Duration::from_secs(60));
        assert!(f.introspector.introspect(&token, f.now).is_active());
        f.introspector
            .set_keys(SigningKeys::generate().verification_keys());
        assert_eq!(f.introspector.cached_tokens(), 0);
        assert_eq!(
            f.introspector.introspect(&token, f.now),
            Introspection::Invalid(TokenError::UnknownKey)
        );
    }

    #[test]
    fn the_same_key_set_again_keeps_cached_verifications() {
        let f = fixture(Duration::ZERO);
        let token = f.mint("j1", Duration::from_secs(60));
        assert!(f.introspector.introspect(&token, f.now).is_active());
        // A periodic JWKS re-read returns the same keys (a fresh copy of them).
        assert!(!f.introspector.set_keys(f.issuer.keys().verification_keys()));
        assert_eq!(f.introspector.cached_tokens(), 1);
        // The same key id with another public key is a change.
        let rotated = SigningKeys::generate().verification_keys();
        assert!(f.introspector.set_keys(rotated));
        assert_eq!(f.introspector.cached_tokens(), 0);
    }

    #[test]
    fn a_stale_view_fails_closed_even_for_a_cached_token() {
        let f = fixture(Duration::ZERO);
        let token = f.mint("j1", Duration::from_secs(7200));
        assert!(f.introspector.introspect(&token, f.now).is_active());
        let later = f.now.saturating_add(Duration::from_secs(3601));
        assert!(matches!(
            f.introspector.introspect(&token, later),
            Introspection::Stale(_)
        ));
    }

    #[tokio::test]
    async fn an_unknown_key_asks_for_fresh_keys_and_a_known_one_does_not() {
        let f = fixture(Duration::ZERO);
        let token = f.mint("j1", Duration::from_secs(60));
        assert!(f.introspector.introspect(&token, f.now).is_active());
        let quiet = tokio::time::timeout(
            Duration::from_millis(50),
            f.introspector.unknown_key_presented(),
        );
        assert!(
            quiet.await.is_err(),
            "a known key must not ask for a refresh"
        );

        f.introspector
            .set_keys(SigningKeys::generate().verification_keys());
        assert_eq!(
            f.introspector.introspect(&token, f.now),
            Introspection::Invalid(TokenError::UnknownKey)
        );
        // The signal was stored: the key keeper wakes even though it was not waiting.
        tokio::time::timeout(
            Duration::from_secs(5),
            f.introspector.unknown_key_presented(),
        )
        .await
        .expect("an unknown kid asks for fresh keys");
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        fn config() -> ProptestConfig {
            let cases = std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(1024);
            ProptestConfig {
                cases,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        proptest! {
            #![proptest_config(config())]

            /// Correctly signed tokens with any time claims, checked at any instant,
            /// through the cache and against a revoked family: never a panic, and
            /// never active once revoked.
            #[test]
            fn introspection_survives_any_time_claims(
                iat in any::<i64>(),
                exp in any::<i64>(),
                now in any::<i64>(),
                leeway in 0u64..600,
            ) {
                let f = fixture(Duration::from_secs(leeway));
                let token = f.issuer.mint(&MintAccess {
                    subject: &Subject::parse("alice").unwrap(),
                    session_id: f.session,
                    jti: "j",
                    issued_at: Timestamp::from_unix_micros(iat),
                    expires_at: Timestamp::from_unix_micros(exp),
                    client_id: None,
                    extra: &Default::default(),
                });
                let now = Timestamp::from_unix_micros(now);
                let _ = f.introspector.introspect(&token, now);
                let _ = f.introspector.introspect(&token, now);
                f.revoke();
                prop_assert!(!f.introspector.introspect(&token, now).is_active());
            }
        }
    }
}
