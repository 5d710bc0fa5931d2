//! The event decoder on any bytes: whatever it accepts survives a round trip and
//! folds into a projection (`ledger_core::testing::decoded_event_holds`, which the
//! property tests check too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = ledger_core::testing::decoded_event_holds(data, ledger_clock::now()) {
        panic!("{broken}");
    }
});
