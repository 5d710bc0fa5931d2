//! Seals over a generated log: a clean log checks out; each kind of tampering is
//! named.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::Timestamp;

/// Signs with SHA-256(key ‖ bytes): enough to tell a right key from a wrong one here;
/// the service signs with Ed25519.
#[derive(Debug)]
struct TestKey(&'static str);

impl SealSigner for TestKey {
    fn kid(&self) -> &str {
        self.0
    }
    fn sign(&self, bytes: &[u8]) -> String {
        Hash::of(&[self.0.as_bytes(), bytes].concat()).to_hex()
    }
}

impl SealVerifier for TestKey {
    fn verify(&self, kid: &str, bytes: &[u8], signature: &str) -> bool {
        kid == self.0 && self.sign(bytes) == signature
    }
}

const KEY: TestKey = TestKey("seal-key");

/// `n` events at offsets 1..=n of partition 0.
fn log(n: usize) -> Vec<(u64, Event)> {
    let now = Timestamp::now();
    (1u64..)
        .zip((0..n).map(|i| crate::testing::login(&format!("user-{i}"), now).1))
        .collect()
}

/// Seals for `log`, as the sealer writes them: one per block, the open block too.
fn seal(log: &[(u64, Event)]) -> Vec<Seal> {
    let mut builder = SealBuilder::resume(0, None);
    let mut seals = Vec::new();
    for (offset, event) in log {
        if let Some(done) = builder.push(*offset, event) {
            seals.push(done.sign(&KEY, Timestamp::now()));
        }
    }
    seals.push(builder.sign(&KEY, Timestamp::now()));
    seals
}

fn check(seals: Vec<Seal>, log: &[(u64, Event)]) -> ChainReport {
    let mut check = ChainCheck::new(seals, &KEY);
    for (offset, event) in log {
        check.observe(0, *offset, event);
    }
    check.finish()
}

#[test]
fn an_untouched_log_matches_its_seals_across_blocks() {
    let log = log(2500);
    let seals = seal(&log);
    assert_eq!(seals.len(), 3);
    let report = check(seals, &log);
    assert_eq!(report.findings, vec![]);
    assert_eq!(report.sealed, 2500);
    assert_eq!(report.unsealed_tail, 0);
}

#[test]
fn resuming_from_the_newest_seal_continues_the_same_chain() {
    let log = log(1500);
    let whole = seal(&log);
    // Sealed up to 1100, then the sealer restarts from its newest seal.
    let first = seal(&log[..1100]);
    let mut builder = SealBuilder::resume(0, first.last());
    assert_eq!(builder.next_offset(), Some(1101));
    let mut seals = first[..first.len() - 1].to_vec();
    for (offset, event) in &log[1100..] {
        if let Some(done) = builder.push(*offset, event) {
            seals.push(done.sign(&KEY, Timestamp::now()));
        }
    }
    seals.push(builder.sign(&KEY, Timestamp::now()));
    let chains = |s: &[Seal]| s.iter().map(|s| s.chain).collect::<Vec<_>>();
    assert_eq!(chains(&seals), chains(&whole));
    assert_eq!(check(seals, &log).findings, vec![]);
}

#[test]
fn an_edited_event_is_named() {
    let mut log = log(10);
    let seals = seal(&log);
    let (offset, event) = &mut log[4];
    event.subject = crate::Subject::parse("mallory").unwrap();
    let (offset, id) = (*offset, event.event_id);
    let report = check(seals, &log);
    assert!(
        matches!(report.findings.as_slice(),
            [ChainFinding::Edited { offset: o, event_id, .. }] if *o == offset && *event_id == id),
        "{:?}",
        report.findings
    );
}

#[test]
fn a_dropped_event_is_named_in_the_middle_and_at_the_tail() {
    let mut log = log(10);
    let seals = seal(&log);
    let (middle, _) = log.remove(5);
    let (tail, _) = log.pop().unwrap();
    let report = check(seals, &log);
    let dropped: Vec<u64> = report
        .findings
        .iter()
        .map(|f| match f {
            ChainFinding::Dropped { offset, .. } => *offset,
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(dropped, vec![middle, tail]);
}

#[test]
fn an_inserted_event_is_named_even_when_it_shifts_the_offsets() {
    let log = log(10);
    let seals = seal(&log);
    let forged = crate::testing::login("mallory", Timestamp::now()).1;
    let id = forged.event_id;
    // Inserted at offset 4; everything after moves up by one.
    let mut tampered: Vec<(u64, Event)> = log[..3].to_vec();
    tampered.push((4, forged));
    tampered.extend(log[3..].iter().map(|(o, e)| (o + 1, e.clone())));
    let report = check(seals, &tampered);
    assert_eq!(
        report.findings,
        vec![ChainFinding::Inserted {
            partition: 0,
            offset: 4,
            event_id: id
        }]
    );
    assert_eq!(report.sealed, 10);
}

#[test]
fn events_after_the_newest_seal_are_reported_unsealed_not_tampered() {
    let log = log(10);
    let seals = seal(&log[..7]);
    let report = check(seals, &log);
    assert_eq!(report.findings, vec![]);
    assert_eq!((report.sealed, report.unsealed_tail), (7, 3));
}

#[test]
fn a_forged_seal_a_rewritten_seal_and_a_missing_seal_are_named() {
    let log = log(3000);
    let mut seals = seal(&log);
    // Re-sealing block 1 with another key: the signature fails.
    seals[1] = SealBuilder::resume(0, Some(&seals[1])).sign(&TestKey("other"), Timestamp::now());
    let report = check(seals.clone(), &log);
    assert!(report.findings.contains(&ChainFinding::BadSignature {
        partition: 0,
        block: 1
    }));

    // Removing block 1's seal altogether leaves a gap.
    let mut gap = seal(&log);
    gap.remove(1);
    let report = check(gap, &log);
    assert!(report.findings.contains(&ChainFinding::MissingSeal {
        partition: 0,
        block: 1
    }));

    // A seal whose entries were changed and re-signed by the right key but whose chain
    // was not recomputed.
    let mut broken = seal(&log);
    broken[0].entries[0].hash = Hash::of(b"something else");
    broken[0].signature = KEY.sign(&broken[0].signed_bytes());
    let report = check(broken, &log);
    assert!(report.findings.contains(&ChainFinding::BrokenChain {
        partition: 0,
        block: 0
    }));
}

#[test]
fn events_gone_from_the_head_are_counted_not_named() {
    let log = log(10);
    let seals = seal(&log);
    let report = check(seals, &log[3..]);
    assert_eq!(report.findings, vec![]);
    assert_eq!(report.before_log_start, 3);
}

#[test]
fn a_seal_survives_its_json() {
    let seals = seal(&log(3));
    let back = Seal::from_json(&seals[0].to_json()).unwrap();
    assert_eq!(back, seals[0]);
}
