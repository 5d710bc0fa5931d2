//! The form parser on any body and content type: a form or a 4xx in the error shape
//! (`ledger_http::testing::form_holds`, which the property tests check too).
#![no_main]

use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 4] = [
    Some("application/x-www-form-urlencoded"),
    Some("application/x-www-form-urlencoded; charset=utf-8"),
    Some("application/json"),
    None,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(pick) % CONTENT_TYPES.len()];
    if let Err(broken) = ledger_http::testing::form_holds(content_type, body) {
        panic!("{broken}");
    }
});
