//! Seals over a generated log: a clean log checks out; each kind of tampering is
//! named.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::testing::at;

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
    let now = at(0);
    (1u64..)
        .zip((0..n).map(|i| crate::testing::login(&format!("user-{i}"), now).1))
        .collect()
}

/// Seals for `log`, as the sealer writes them: a seal every `every` events (the
/// sealer seals what it read each second, at most [`MAX_SEAL_RUN`] at a time).
fn seal_every(log: &[(u64, Event)], every: usize) -> Vec<Seal> {
    let mut builder = SealBuilder::resume(0, None);
    let mut seals = Vec::new();
    for (offset, event) in log {
        builder.push(*offset, event);
        if builder.pending() == every {
            seals.extend(builder.seal(&KEY, at(1)));
        }
    }
    seals.extend(builder.seal(&KEY, at(1)));
    seals
}

fn seal(log: &[(u64, Event)]) -> Vec<Seal> {
    seal_every(log, 4)
}

fn check(seals: Vec<Seal>, log: &[(u64, Event)]) -> ChainReport {
    let mut check = ChainCheck::new(seals, &KEY);
    for (offset, event) in log {
        check.observe(0, *offset, event);
    }
    check.finish()
}

#[test]
fn an_untouched_log_matches_its_seals() {
    let log = log(2500);
    let seals = seal_every(&log, MAX_SEAL_RUN);
    assert_eq!(seals.len(), 3);
    let report = check(seals, &log);
    assert_eq!(report.findings, vec![]);
    assert_eq!(report.sealed, 2500);
    assert_eq!(report.unsealed_tail, 0);
    assert_eq!(report.heads.len(), 1);
}

#[test]
fn a_restarted_sealer_and_a_second_sealer_agree_with_the_first() {
    let log = log(30);
    let whole = seal(&log);
    // Sealed up to offset 11, then the sealer restarts from its newest seal.
    let first = seal(&log[..11]);
    let mut builder = SealBuilder::resume(0, first.last());
    assert_eq!(builder.next_offset(), Some(12));
    // The reader may hand it events it already sealed: they are skipped.
    for (offset, event) in &log[5..] {
        builder.push(*offset, event);
    }
    let resumed: Vec<Seal> = first.into_iter().chain(builder.seal(&KEY, at(1))).collect();
    assert_eq!(resumed.last().unwrap().chain, whole.last().unwrap().chain);
    // Both sets of seals at once (two sealers on one log) check out too.
    let both: Vec<Seal> = resumed.into_iter().chain(whole).collect();
    assert_eq!(check(both, &log).findings, vec![]);
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
    let forged = crate::testing::login("mallory", at(0)).1;
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
    let log = log(12);
    // Seals of offsets 1-4, 5-8, 9-12.
    let mut forged = seal(&log);
    // The middle seal signed again by another key: the signature fails.
    forged[1].signature = TestKey("other").sign(&forged[1].signed_bytes());
    let report = check(forged, &log);
    assert!(report.findings.contains(&ChainFinding::BadSignature {
        partition: 0,
        first: 5,
        last: 8
    }));

    // The middle seal removed altogether leaves a gap.
    let mut gap = seal(&log);
    gap.remove(1);
    let report = check(gap, &log);
    assert!(report.findings.contains(&ChainFinding::MissingSeal {
        partition: 0,
        first: 5,
        last: 8
    }));

    // A seal whose entry was changed and re-signed by the right key, but whose chain
    // was not recomputed.
    let mut broken = seal(&log);
    broken[0].entries[0].hash = Hash::of(b"something else");
    broken[0].signature = KEY.sign(&broken[0].signed_bytes());
    let report = check(broken, &log);
    assert!(report.findings.contains(&ChainFinding::BrokenChain {
        partition: 0,
        first: 1,
        last: 4
    }));

    // A first seal that does not start the chain from zero: something came before it.
    let mut headless = seal(&log);
    headless.remove(0);
    let report = check(headless, &log[4..]);
    assert!(report.findings.contains(&ChainFinding::BrokenChain {
        partition: 0,
        first: 5,
        last: 8
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

fn resume(seal: &Seal, log: &[(u64, Event)]) -> Result<bool, ResumeRefused> {
    let mut check = ResumeCheck::new(seal, &KEY)?;
    let mut done = false;
    for (offset, event) in log {
        done = check.observe(*offset, event)?;
    }
    Ok(done)
}

#[test]
fn a_sealer_resumes_only_from_a_seal_the_log_and_its_keys_agree_with() {
    let log = log(10);
    let seals = seal(&log);
    let newest = seals.last().unwrap().clone();
    assert_eq!(newest.range(), (9, 10));
    assert_eq!(resume(&newest, &log), Ok(true));
    // Retention took the seal's first event: the rest is still checked.
    assert_eq!(resume(&newest, &log[9..]), Ok(true));

    // Signed with another key, or altered after signing.
    let forged = seal_every(&log, 4)
        .into_iter()
        .map(|mut s| {
            s.signature = TestKey("not-the-seal-key").sign(&s.signed_bytes());
            s
        })
        .next_back()
        .unwrap();
    assert!(matches!(
        ResumeCheck::new(&forged, &KEY),
        Err(ResumeRefused::BadSignature { .. })
    ));
    let mut altered = newest.clone();
    altered.chain = Hash::of(b"another head");
    assert!(matches!(
        ResumeCheck::new(&altered, &KEY),
        Err(ResumeRefused::BadSignature { .. })
    ));
    // Signed by the key but not following from its entries.
    altered.signature = KEY.sign(&altered.signed_bytes());
    assert!(matches!(
        ResumeCheck::new(&altered, &KEY),
        Err(ResumeRefused::BrokenChain { .. })
    ));

    // The log under the seal was edited, or lost an event.
    let mut edited = log.clone();
    edited[9].1.subject = crate::Subject::parse("mallory").unwrap();
    assert_eq!(
        resume(&newest, &edited),
        Err(ResumeRefused::Differs {
            partition: 0,
            offset: 10
        })
    );
    let mut dropped = log.clone();
    dropped.remove(8);
    assert_eq!(
        resume(&newest, &dropped),
        Err(ResumeRefused::Missing {
            partition: 0,
            offset: 9
        })
    );
    // The log ends before the seal does.
    assert_eq!(resume(&newest, &log[..9]), Ok(false));
}

fn check_anchored(seals: Vec<Seal>, log: &[(u64, Event)], anchors: &[Anchor]) -> ChainReport {
    let mut check = ChainCheck::new(seals, &KEY).with_anchors(anchors);
    for (offset, event) in log {
        check.observe(0, *offset, event);
    }
    check.finish()
}

#[test]
fn anchors_catch_a_rewritten_and_resealed_head() {
    let log = log(12);
    let report = check_anchored(seal(&log), &log, &[]);
    let anchors = report.log_heads.clone();
    assert_eq!(anchors.len(), 1);
    assert_eq!(anchors[0].offset, 12);
    assert_eq!(
        (anchors[0].partition, anchors[0].offset, anchors[0].chain),
        report.heads[0]
    );
    // Printed and read back as `partition offset chain` lines.
    let text: String = anchors.iter().map(|a| format!("{a}\n")).collect();
    assert_eq!(
        Anchor::parse_lines(&format!("# recorded\n\n{text}")),
        Ok(anchors.clone())
    );
    assert!(Anchor::parse_lines("0 12").is_err());

    // The same log, anchored: intact. A log grown since: still intact.
    let mut grown = log.clone();
    grown.extend(self::log(3).into_iter().map(|(o, e)| (o + 12, e)));
    assert_eq!(
        check_anchored(seal(&grown), &grown, &anchors).findings,
        vec![]
    );

    // Someone with the seal key rewrites the newest events and seals the result
    // afresh: the seals check out, the anchor does not.
    let mut rewritten = log.clone();
    rewritten[10].1.subject = crate::Subject::parse("mallory").unwrap();
    let report = check_anchored(seal(&rewritten), &rewritten, &anchors);
    assert!(
        matches!(report.findings.as_slice(), [ChainFinding::AnchorMismatch { anchor, .. }] if *anchor == anchors[0]),
        "{:?}",
        report.findings
    );
    // The head cut together with its seals.
    let cut = &log[..10];
    let report = check_anchored(seal(cut), cut, &anchors);
    assert!(
        matches!(
            report.findings.as_slice(),
            [ChainFinding::AnchorMissing { .. }]
        ),
        "{:?}",
        report.findings
    );
}
