//! The refresh-token parser on any input: it refuses or parses, never panics.
#![no_main]

use std::sync::LazyLock;

use ledger_token::RefreshTokens;
use libfuzzer_sys::fuzz_target;

static TOKENS: LazyLock<RefreshTokens> = LazyLock::new(|| {
    RefreshTokens::new(vec![("k1".into(), [7; 32]), ("k2".into(), [9; 32])])
        .expect("two 32-byte keys with distinct ids are valid")
});

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let _ = TOKENS.parse(&token);
    let _ = RefreshTokens::key_id(&token);
});
