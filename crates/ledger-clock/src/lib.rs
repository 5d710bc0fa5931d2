//! The system clock and fresh ids: the only place in Session Ledger that reads them.
//!
//! `ledger-core` reads no clock and draws no randomness: its decisions take the instant
//! and the event ids they need from their caller (`DecideContext`). Callers get them
//! here: [`now`] for the instant, [`new_session_id`] and [`new_event_id`] for ids no
//! command determines.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::SystemTime;

use ledger_core::{EventId, SessionId, Timestamp};
use uuid::Uuid;

/// The system clock (shifted by [`set_test_clock_offset`], which is zero unless a
/// clock-skew test set it).
pub fn now() -> Timestamp {
    let now = Timestamp::from_system_time(SystemTime::now());
    Timestamp::from_unix_micros(
        now.unix_micros()
            .saturating_add(TEST_CLOCK_OFFSET_MICROS.load(Ordering::Relaxed)),
    )
}

/// A new, time-ordered session id (UUIDv7): [`SessionId::created_at`] tells when it
/// was made.
pub fn new_session_id() -> SessionId {
    SessionId::from_uuid(Uuid::now_v7())
}

/// A new, time-ordered event id (UUIDv7), for the events whose id nothing in the
/// command determines.
pub fn new_event_id() -> EventId {
    EventId::from_uuid(Uuid::now_v7())
}

/// What [`now`] adds to the system clock: zero, except in clock-skew tests.
static TEST_CLOCK_OFFSET_MICROS: AtomicI64 = AtomicI64::new(0);

/// **Test only.** Makes [`now`] run `micros` ahead of the system clock (behind when
/// negative) for the whole process, as if the host's clock were off: the fault suite
/// runs a validator skewed against the API this way. The binary sets it from
/// `LEDGER_TEST_CLOCK_OFFSET`, which release builds refuse.
pub fn set_test_clock_offset(micros: i64) {
    TEST_CLOCK_OFFSET_MICROS.store(micros, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_know_when_they_were_made() {
        let before = now();
        let id = new_session_id();
        let made = id.created_at().unwrap();
        assert!(
            made.unix_micros() >= before.unix_micros() - 1_000,
            "{made} < {before}"
        );
        assert!(made <= now());
        assert_eq!(SessionId::from_uuid(Uuid::nil()).created_at(), None);
    }

    #[test]
    fn fresh_ids_are_distinct_and_ordered() {
        let (a, b) = (new_session_id(), new_session_id());
        assert!(a < b, "{a} !< {b}");
        let (e, f) = (new_event_id(), new_event_id());
        assert!(e < f, "{e} !< {f}");
    }
}
