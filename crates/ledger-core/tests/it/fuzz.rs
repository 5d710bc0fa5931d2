//! Property tests on random and structured-random input for the event decoder (what
//! every consumer of the log runs on each record): it may refuse, never panic, and what
//! it accepts folds into a projection without panicking either. Bounded by
//! `PROPTEST_CASES` (default `CASES`; set it higher for a longer run).

use ledger_core::{Event, Projection, Timestamp};
use proptest::prelude::*;
use serde_json::Value;

const CASES: u32 = 4096;

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

/// Any JSON value, with the numbers and strings that break arithmetic and parsers.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![Just(u64::MAX), Just(0), Just(1 << 53)].prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            Just("9999-12-31T23:59:59.999999999Z".to_owned()),
            Just("0000-01-01T00:00:00Z".to_owned()),
            Just("+275760-09-13T00:00:00Z".to_owned()),
            "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            ".{0,16}",
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Valid events of every type, as JSON values.
fn valid_events() -> Vec<Value> {
    use ledger_core::{Command, DecideContext, Policy, RevokeReason, SessionId, Subject, decide};
    let policy = Policy::default();
    let ctx = DecideContext {
        now: Timestamp::now(),
        policy: &policy,
        region: "fuzz",
        trace_context: None,
        event_id: ledger_core::EventId::random(),
    };
    let session_id = SessionId::generate();
    let open = Command::Open {
        session_id,
        subject: Subject::parse("alice").unwrap(),
        client_id: Some("web".into()),
        claims: serde_json::Map::new(),
        access_jti: "j0".into(),
    };
    let mut events = decide(None, None, open, &ctx).unwrap();
    let mut projection = Projection::new();
    events.iter().for_each(|e| projection.apply(e));
    let revoke = Command::Revoke {
        session_id,
        reason: RevokeReason::Logout,
    };
    events.extend(decide(projection.family(&session_id), None, revoke, &ctx).unwrap());
    events.push(ledger_core::decide_subject_revoke(
        Subject::parse("bob").unwrap(),
        RevokeReason::Admin,
        &ctx,
    ));
    events
        .iter()
        .map(|e| serde_json::from_slice(&e.to_json()).unwrap())
        .collect()
}

/// Replaces the value at a random path of `v` (or adds a field) with `with`.
fn mutate(v: &mut Value, path: &[prop::sample::Index], with: Value) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            let key = map.keys().nth(path[0].index(map.len())).cloned().unwrap();
            if path.len() > 1 && (map[&key].is_object() || map[&key].is_array()) {
                mutate(map.get_mut(&key).unwrap(), &path[1..], with);
            } else {
                map.insert(key, with);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = path[0].index(items.len());
            if path.len() > 1 {
                mutate(&mut items[i], &path[1..], with);
            } else {
                items[i] = with;
            }
        }
        other => *other = with,
    }
}

/// Decodes `bytes`; whatever decodes is re-encoded and folded into a projection. The
/// decoder's fast path reads it as the general reader does.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let decoded = Event::from_json(bytes);
    let general = Event::from_json_general(bytes);
    prop_assert_eq!(
        decoded.as_ref().ok(),
        general.as_ref().ok(),
        "the fast path and the general reader differ"
    );
    if let Ok(event) = decoded {
        let again = Event::from_json(&event.to_json()).ok();
        prop_assert_eq!(
            again.as_ref(),
            Some(&event),
            "an accepted event must survive a round trip"
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
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn event_decoder_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes)?;
    }

    #[test]
    fn event_decoder_survives_mutated_events(
        which in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(
            (prop::collection::vec(any::<prop::sample::Index>(), 1..4), json()),
            1..4,
        ),
    ) {
        let events = valid_events();
        let mut event = events[which.index(events.len())].clone();
        for (path, with) in mutations {
            mutate(&mut event, &path, with);
        }
        check(&serde_json::to_vec(&event).unwrap())?;
    }

    #[test]
    fn timestamps_parse_or_refuse(s in prop_oneof![
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?(Z|[+-][0-9]{2}:[0-9]{2})?",
        ".{0,40}",
    ]) {
        if let Ok(t) = Timestamp::parse_rfc3339(&s) {
            let _ = t.to_rfc3339();
        }
    }
}
