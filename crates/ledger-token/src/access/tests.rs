use super::*;

const NOW: i64 = 1_700_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_seconds(NOW + secs)
}

struct Fixture {
    issuer: AccessTokenIssuer,
    validator: AccessTokenValidator,
    subject: Subject,
    session: SessionId,
}

fn fixture() -> Fixture {
    let keys = SigningKeys::generate();
    let validator = AccessTokenValidator::new(
        keys.verification_keys(),
        "https://issuer.test",
        "api",
        Duration::from_secs(5),
    );
    Fixture {
        issuer: AccessTokenIssuer::new(keys, "https://issuer.test", "api"),
        validator,
        subject: Subject::parse("alice").unwrap(),
        session: ledger_clock::new_session_id(),
    }
}

impl Fixture {
    fn mint(&self, exp_in: i64) -> String {
        let extra = serde_json::Map::from_iter([
            ("scope".to_owned(), "read".into()),
            ("iss".to_owned(), "https://evil".into()),
        ]);
        self.issuer.mint(&MintAccess {
            subject: &self.subject,
            session_id: self.session,
            jti: "jti-1",
            issued_at: at(0),
            expires_at: at(exp_in),
            client_id: Some("web"),
            extra: &extra,
        })
    }
}

fn b64(v: &serde_json::Value) -> String {
    B64.encode(serde_json::to_vec(v).unwrap())
}

fn segments(token: &str) -> (serde_json::Value, serde_json::Value, String) {
    let mut it = token.split('.');
    let h = serde_json::from_slice(&B64.decode(it.next().unwrap()).unwrap()).unwrap();
    let c = serde_json::from_slice(&B64.decode(it.next().unwrap()).unwrap()).unwrap();
    (h, c, it.next().unwrap().to_owned())
}

#[test]
fn a_minted_token_validates_with_all_claims() {
    let f = fixture();
    let token = f.mint(60);
    let (header, _, _) = segments(&token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], f.issuer.keys().current_kid());
    let claims = f.validator.validate(&token, at(1)).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.sid, f.session.to_string());
    assert_eq!(claims.aud, "api");
    assert_eq!(claims.client_id.as_deref(), Some("web"));
    assert_eq!(claims.extra["scope"], "read");
    assert_eq!(
        claims.iss, "https://issuer.test",
        "reserved claims cannot be overridden"
    );
}

#[test]
fn expiry_honours_the_bounded_leeway() {
    let f = fixture();
    let token = f.mint(60);
    assert!(f.validator.validate(&token, at(64)).is_ok());
    assert_eq!(
        f.validator.validate(&token, at(65)),
        Err(TokenError::Expired)
    );
}

#[test]
fn not_yet_valid_is_refused() {
    let f = fixture();
    let token = f.mint(60);
    assert_eq!(
        f.validator.validate(&token, at(-6)),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn alg_none_is_refused() {
    let f = fixture();
    let (mut h, c, _) = segments(&f.mint(60));
    h["alg"] = "none".into();
    let forged = format!("{}.{}.", b64(&h), b64(&c));
    assert_eq!(
        f.validator.validate(&forged, at(1)),
        Err(TokenError::Algorithm("none".into()))
    );
}

#[test]
fn hs256_keyed_with_the_public_key_is_refused() {
    use hmac::{Hmac, Mac};
    let f = fixture();
    let (mut h, c, _) = segments(&f.mint(60));
    h["alg"] = "HS256".into();
    let jwks = f.issuer.keys().jwks();
    let public = B64.decode(jwks["keys"][0]["x"].as_str().unwrap()).unwrap();
    let input = format!("{}.{}", b64(&h), b64(&c));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&public).unwrap();
    mac.update(input.as_bytes());
    let forged = format!("{input}.{}", B64.encode(mac.finalize().into_bytes()));
    assert!(matches!(
        f.validator.validate(&forged, at(1)),
        Err(TokenError::Algorithm(_))
    ));
}

#[test]
fn a_tampered_payload_is_refused() {
    let f = fixture();
    let (h, mut c, sig) = segments(&f.mint(60));
    c["sub"] = "mallory".into();
    let forged = format!("{}.{}.{sig}", b64(&h), b64(&c));
    assert_eq!(
        f.validator.validate(&forged, at(1)),
        Err(TokenError::Signature)
    );
}

#[test]
fn unknown_kid_and_missing_kid_are_refused() {
    let f = fixture();
    let other = fixture();
    assert_eq!(
        f.validator.validate(&other.mint(60), at(1)),
        Err(TokenError::UnknownKey)
    );
    let (mut h, c, sig) = segments(&f.mint(60));
    h.as_object_mut().unwrap().remove("kid");
    let no_kid = format!("{}.{}.{sig}", b64(&h), b64(&c));
    assert_eq!(
        f.validator.validate(&no_kid, at(1)),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn key_bearing_headers_are_refused() {
    let f = fixture();
    for param in ["jku", "x5u", "jwk", "x5c", "crit"] {
        let (mut h, c, sig) = segments(&f.mint(60));
        h[param] = "https://attacker.test/keys".into();
        let token = format!("{}.{}.{sig}", b64(&h), b64(&c));
        assert_eq!(
            f.validator.validate(&token, at(1)),
            Err(TokenError::ForbiddenHeader(param)),
            "{param}"
        );
    }
}

#[test]
fn wrong_typ_is_refused() {
    let f = fixture();
    let (mut h, c, sig) = segments(&f.mint(60));
    h["typ"] = "JWT".into();
    let token = format!("{}.{}.{sig}", b64(&h), b64(&c));
    assert_eq!(f.validator.validate(&token, at(1)), Err(TokenError::Type));
}

#[test]
fn wrong_audience_and_issuer_are_refused() {
    let f = fixture();
    let token = f.mint(60);
    let keys = f.issuer.keys().verification_keys();
    let aud =
        AccessTokenValidator::new(keys.clone(), "https://issuer.test", "other", Duration::ZERO);
    assert_eq!(aud.validate(&token, at(1)), Err(TokenError::Audience));
    let iss = AccessTokenValidator::new(keys, "https://other.test", "api", Duration::ZERO);
    assert_eq!(iss.validate(&token, at(1)), Err(TokenError::Issuer));
}

#[test]
fn garbage_and_huge_tokens_are_refused() {
    let f = fixture();
    assert!(matches!(
        f.validator.validate("", at(1)),
        Err(TokenError::Malformed(_))
    ));
    assert!(matches!(
        f.validator.validate("a.b.c", at(1)),
        Err(TokenError::Malformed(_))
    ));
    assert!(matches!(
        f.validator.validate("a.b.c.d", at(1)),
        Err(TokenError::Malformed(_))
    ));
    assert_eq!(
        f.validator.validate(&"a".repeat(1 << 20), at(1)),
        Err(TokenError::TooLong)
    );
}

#[test]
fn a_string_exp_is_not_treated_as_absent() {
    let f = fixture();
    let (_, mut c, _) = segments(&f.mint(60));
    c["exp"] = "never".into();
    // Properly signed, so only the claim itself can make it fail.
    let (kid, key) = f.issuer.keys().current();
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid.to_owned());
    let token = jsonwebtoken::encode(&header, &c, key).unwrap();
    assert!(matches!(
        f.validator.validate(&token, at(1)),
        Err(TokenError::Malformed(_))
    ));
    c["exp"] = (NOW + 60).into();
    let token = jsonwebtoken::encode(&header, &c, key).unwrap();
    assert!(
        f.validator.validate(&token, at(1)).is_ok(),
        "the control case validates"
    );
}

#[test]
fn verifying_ignoring_time_still_checks_the_signature() {
    let f = fixture();
    let token = f.mint(60);
    assert_eq!(
        f.validator.validate(&token, at(65)),
        Err(TokenError::Expired)
    );
    let claims = f.validator.verify_ignoring_time(&token).unwrap();
    assert_eq!(claims.exp, at(60).unix_seconds());
    assert_eq!(
        AccessTokenValidator::key_id(&token).as_deref(),
        Some(f.issuer.keys().current_kid())
    );
    let mut forged = token.into_bytes();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(
        f.validator.verify_ignoring_time(&forged),
        Err(TokenError::Signature)
    );
}
