//! The event decoder on any bytes: whatever it accepts survives a round trip and
//! folds into a projection.
#![no_main]

use ledger_core::{Event, Projection};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = Event::from_json(data) else {
        return;
    };
    let again = Event::from_json(&event.to_json()).ok();
    assert_eq!(
        again.as_ref(),
        Some(&event),
        "an accepted event survives a round trip"
    );
    let mut projection = Projection::new();
    projection.apply(&event);
    projection.apply(&event);
    let _ = projection.digest();
    for family in projection.families() {
        let _ = projection.status(&family.session_id, ledger_clock::now());
    }
    projection.prune(ledger_clock::now());
    let _ = event.partition_key();
});
