//! Property tests on random and structured-random input for the token parsers: none
//! may panic, whatever it is given (I8). They run in the normal test suite for a
//! bounded number of cases (`PROPTEST_CASES`, default [`CASES`]; set it higher for a
//! longer run).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, Header};
use ledger_core::{Generation, Timestamp};
use proptest::prelude::*;

use crate::{AccessTokenValidator, RefreshTokens, SigningKeys};

const CASES: u32 = 4096;

/// One key pair for every case (generating one per case would dominate the run).
static KEYS: std::sync::LazyLock<SigningKeys> = std::sync::LazyLock::new(SigningKeys::generate);

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CASES);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, nested a few levels, with the numbers that break arithmetic.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        prop_oneof![Just(i64::MAX), Just(i64::MIN), Just(0), Just(-1)]
            .prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,24}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Claims objects: the names the validator reads, each with any value, plus others.
fn claims() -> impl Strategy<Value = serde_json::Value> {
    let names = [
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
        "scope",
    ];
    (
        prop::collection::vec((prop::sample::select(names.to_vec()), json()), 0..12),
        any::<bool>(),
    )
        .prop_map(|(pairs, plausible)| {
            let mut m = serde_json::Map::new();
            if plausible {
                // Mostly right, so the random values reach the later checks.
                let sid = ledger_clock::new_session_id().to_string();
                for (k, v) in [
                    ("iss", "https://issuer.test".into()),
                    ("aud", "api".into()),
                    ("sub", "alice".into()),
                    ("sid", sid.into()),
                    ("jti", "j".into()),
                    ("iat", 1_700_000_000.into()),
                    ("exp", 1_700_000_600.into()),
                ] {
                    m.insert(k.to_owned(), v);
                }
            }
            for (k, v) in pairs {
                m.insert(k.to_owned(), v);
            }
            serde_json::Value::Object(m)
        })
}

fn validator(keys: &SigningKeys) -> AccessTokenValidator {
    AccessTokenValidator::new(
        keys.verification_keys(),
        "https://issuer.test",
        "api",
        std::time::Duration::from_secs(5),
    )
}

fn any_instant() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        any::<i64>().prop_map(Timestamp::from_unix_micros),
        (0i64..4_000_000_000).prop_map(Timestamp::from_unix_seconds),
    ]
}

/// Runs every entry point of the access-token parser on `token`.
fn check_access(validator: &AccessTokenValidator, token: &str, now: Timestamp) {
    let _ = validator.validate(token, now);
    if let Ok(claims) = validator.verify_ignoring_time(token) {
        let _ = claims.session_id();
    }
    let _ = AccessTokenValidator::key_id(token);
}

/// Runs every entry point of the refresh-token parser on `token`.
fn check_refresh(tokens: &RefreshTokens, token: &str) {
    let _ = tokens.parse(token);
    let _ = RefreshTokens::key_id(token);
}

fn refresh_tokens() -> RefreshTokens {
    RefreshTokens::new(vec![("k1".into(), [7; 32]), ("k2".into(), [9; 32])])
        .expect("two 32-byte keys with distinct ids are valid")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn refresh_parser_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_refresh(&refresh_tokens(), &String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn refresh_parser_survives_structured_tokens(
        prefix in prop_oneof![Just("rt1".to_owned()), ".{0,4}"],
        kid in prop_oneof![Just("k1".to_owned()), Just("k2".to_owned()), "[^.]{0,8}"],
        payload in prop::collection::vec(any::<u8>(), 0..40),
        tag in prop::collection::vec(any::<u8>(), 0..40),
        extra in prop::collection::vec("[a-zA-Z0-9_.=+/-]{0,6}", 0..3),
    ) {
        let mut token = format!("{prefix}.{kid}.{}.{}", B64.encode(payload), B64.encode(tag));
        for e in extra {
            token.push('.');
            token.push_str(&e);
        }
        check_refresh(&refresh_tokens(), &token);
    }

    #[test]
    fn refresh_parser_survives_mutated_valid_tokens(
        generation in any::<u64>(),
        at in any::<prop::sample::Index>(),
        with in any::<char>(),
        cut in any::<bool>(),
    ) {
        let tokens = refresh_tokens();
        let valid = tokens.mint(ledger_clock::new_session_id(), Generation::new(generation));
        prop_assert_eq!(tokens.parse(&valid).map(|(_, g)| g), Ok(Generation::new(generation)));
        let mut chars: Vec<char> = valid.chars().collect();
        let i = at.index(chars.len());
        if cut { chars.truncate(i) } else { chars[i] = with }
        check_refresh(&tokens, &chars.into_iter().collect::<String>());
    }

    #[test]
    fn access_parser_survives_any_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        now in any_instant(),
    ) {
        let keys = &*KEYS;
        check_access(&validator(keys), &String::from_utf8_lossy(&bytes), now);
    }

    #[test]
    fn access_parser_survives_any_header_and_claims(
        header in prop_oneof![json(), json().prop_map(|h| {
            let mut m = serde_json::Map::new();
            m.insert("alg".into(), "EdDSA".into());
            m.insert("typ".into(), "at+jwt".into());
            if let serde_json::Value::Object(extra) = h {
                m.extend(extra);
            }
            serde_json::Value::Object(m)
        })],
        claims in claims(),
        signature in prop::collection::vec(any::<u8>(), 0..80),
        now in any_instant(),
    ) {
        let keys = &*KEYS;
        let token = format!(
            "{}.{}.{}",
            B64.encode(serde_json::to_vec(&header).unwrap_or_default()),
            B64.encode(serde_json::to_vec(&claims).unwrap_or_default()),
            B64.encode(signature),
        );
        check_access(&validator(keys), &token, now);
    }

    /// Correctly signed tokens with any claims: past the signature, every claim check
    /// meets hostile values (huge, negative, wrong types).
    #[test]
    fn access_parser_survives_signed_tokens_with_any_claims(
        claims in claims(),
        now in any_instant(),
    ) {
        let keys = &*KEYS;
        let (kid, key) = keys.current();
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(kid.to_owned());
        let token = jsonwebtoken::encode(&header, &claims, key).unwrap_or_default();
        check_access(&validator(keys), &token, now);
    }
}
