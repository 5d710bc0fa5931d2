//! The event decoder on any bytes: its fast path reads what the general reader reads,
//! and whatever it accepts survives a round trip and folds into a projection.
#![no_main]

use ledger_core::{Event, Projection, Timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = Event::from_json(data);
    let general = Event::from_json_general(data);
    assert_eq!(
        decoded.as_ref().ok(),
        general.as_ref().ok(),
        "the fast path and the general reader differ"
    );
    let Ok(event) = decoded else {
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
        let _ = projection.status(&family.session_id, Timestamp::now());
    }
    projection.prune(Timestamp::now());
    let _ = event.partition_key();
});
