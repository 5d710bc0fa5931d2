//! The Rust event types against the public JSON Schemas in `schemas/` (D2).

use std::path::Path;

use jsonschema::{Resource, Validator};
use ledger_core::{Event, EventKind, TraceContext};
use serde_json::Value;

use crate::histories::{Op, Step, run};

fn validator() -> Validator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let mut envelope = None;
    let mut options = jsonschema::options().should_validate_formats(true);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let id = schema["$id"].as_str().unwrap().to_owned();
        if id.ends_with("/envelope.schema.json") {
            envelope = Some(schema.clone());
        }
        options = options.with_resource(id, Resource::from_contents(schema).unwrap());
    }
    options.build(&envelope.expect("envelope schema")).unwrap()
}

/// A history that produces every event type and variant.
fn every_kind_of_event() -> Vec<Event> {
    let s = |op, advance_secs| Step {
        op,
        instance: 0,
        advance_secs,
    };
    let mut events = run(&[
        s(Op::Login { family: 0 }, 0),
        s(Op::Refresh { family: 0, back: 0 }, 10),
        s(Op::Refresh { family: 0, back: 1 }, 1), // grace retry
        s(Op::Refresh { family: 0, back: 1 }, 30), // reuse
        s(Op::Login { family: 1 }, 0),
        s(Op::Revoke { family: 1 }, 5), // logout
        s(Op::RevokeSubject, 1),
    ]);
    let mut traced = events[0].clone();
    traced.trace_context = Some(TraceContext {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        tracestate: Some("vendor=1".into()),
    });
    events.push(traced);
    events
}

#[test]
fn every_event_type_validates_against_its_schema() {
    let validator = validator();
    let events = every_kind_of_event();
    let mut types = std::collections::BTreeSet::new();
    for event in &events {
        let json: Value = serde_json::from_slice(&event.to_json()).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{json:#}\n{errors:#?}");
        types.insert(event.event_type());
        // And the JSON reads back as the same event.
        assert_eq!(&Event::from_json(&event.to_json()).unwrap(), event);
    }
    assert_eq!(types.len(), 3, "{types:?}");
    let grace = events
        .iter()
        .any(|e| matches!(&e.kind, EventKind::SessionRefreshed(r) if r.grace_retry));
    assert!(grace, "history must include a grace retry");
}

#[test]
fn schema_rejects_what_the_types_would_not_produce() {
    let validator = validator();
    let event = &every_kind_of_event()[0];
    let good: Value = serde_json::from_slice(&event.to_json()).unwrap();

    let mut wrong_version = good.clone();
    wrong_version["schema_version"] = 2.into();
    assert!(!validator.is_valid(&wrong_version));

    let mut unknown_field = good.clone();
    unknown_field["data"]["surprise"] = true.into();
    assert!(!validator.is_valid(&unknown_field));

    let mut no_session = good.clone();
    no_session["session_id"] = Value::Null;
    assert!(!validator.is_valid(&no_session));

    let mut bad_time = good;
    bad_time["occurred_at"] = "yesterday".into();
    assert!(!validator.is_valid(&bad_time));
}

#[test]
fn event_json_shape_is_stable() {
    let event = &every_kind_of_event()[0];
    let json: Value = serde_json::from_slice(&event.to_json()).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "data",
            "event_id",
            "generation",
            "occurred_at",
            "region",
            "schema_version",
            "session_id",
            "subject",
            "type"
        ]
    );
    let data: Vec<&str> = json["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        data,
        [
            "access_expires_at",
            "access_jti",
            "claims",
            "client_id",
            "refresh_expires_at",
            "retain_until",
            "session"
        ]
    );
}

#[test]
fn revocation_records_validate_against_their_schema() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let schema: Value =
        serde_json::from_slice(&std::fs::read(dir.join("revocation.schema.json")).unwrap())
            .unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let records: Vec<_> = every_kind_of_event()
        .iter()
        .filter_map(ledger_core::RevocationRecord::from_event)
        .collect();
    let scopes: std::collections::BTreeSet<_> =
        records.iter().map(|r| format!("{:?}", r.scope)).collect();
    assert_eq!(scopes.len(), 2, "family and subject records: {scopes:?}");
    for record in &records {
        let json: Value = serde_json::from_slice(&record.to_json()).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{json:#}\n{errors:#?}");
    }
    // A family record without its family is not one.
    let mut bad: Value = serde_json::from_slice(&records[0].to_json()).unwrap();
    bad["family_id"] = Value::Null;
    assert!(!validator.is_valid(&bad), "{bad:#}");
}
