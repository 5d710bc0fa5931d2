//! The access-token parser on any input: as a whole token, and as a header and claims
//! (split at the first 0xff byte) put together with any signature.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ledger_core::Timestamp;
use ledger_token::{AccessTokenValidator, SigningKeys};
use libfuzzer_sys::fuzz_target;

static VALIDATOR: LazyLock<AccessTokenValidator> = LazyLock::new(|| {
    AccessTokenValidator::new(
        SigningKeys::generate().verification_keys(),
        "https://issuer.test",
        "api",
        Duration::from_secs(5),
    )
});

fn check(token: &str) {
    let _ = VALIDATOR.validate(token, Timestamp::from_unix_seconds(1_700_000_000));
    if let Ok(claims) = VALIDATOR.verify_ignoring_time(token) {
        let _ = claims.session_id();
    }
    let _ = AccessTokenValidator::key_id(token);
}

fuzz_target!(|data: &[u8]| {
    check(&String::from_utf8_lossy(data));
    let (header, rest) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let (claims, signature) = rest.split_at(rest.len() / 2);
    check(&format!(
        "{}.{}.{}",
        B64.encode(header),
        B64.encode(claims),
        B64.encode(signature)
    ));
});
