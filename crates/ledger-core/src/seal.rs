//! Tamper evidence for the log: signed seals over hash-chained events.
//!
//! Every event of a partition is hashed (SHA-256 of its canonical JSON) and chained
//! to the one before it: `chain(o) = SHA-256(chain(o − 1) ‖ offset ‖ hash(event))`.
//! The sealer writes the chain down in *runs*: a [`Seal`] lists the events it read
//! since its previous seal (offset, id, hash), the chain value before the first and
//! after the last, and is signed with the seal key. Seals are append-only: each one
//! covers new events only, so sealing costs the same whatever the log's size, and the
//! tail of the log is sealed within a second.
//!
//! The chain value at an offset depends on the log alone, so two sealers, or one that
//! restarted, write seals that agree wherever they overlap. [`ChainCheck`] walks the
//! log beside the seals and names what does not match: an event whose bytes changed
//! (*edited*), a sealed event the log no longer has (*dropped*), an event no seal lists
//! inside the sealed range (*inserted*), events in another order (*reordered*), a seal
//! whose signature or chain does not verify, and offsets no seal covers between sealed
//! ones. What it cannot see is in `docs/THREAT_MODEL.md`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Event, EventId, Timestamp};

/// Most events in one seal.
pub const MAX_SEAL_RUN: usize = 1024;

/// A SHA-256 value, written as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(Sha256::digest(bytes).into())
    }

    /// The hash of an event: over its canonical JSON, so any change of a field shows.
    pub fn of_event(event: &Event) -> Hash {
        Hash::of(&event.to_json())
    }

    /// The chain value after `offset`, whose event hashes to `event`.
    pub fn link(&self, offset: u64, event: &Hash) -> Hash {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(offset.to_be_bytes());
        h.update(event.0);
        Hash(h.finalize().into())
    }

    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<Hash> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Hash(out))
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Display for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex()[..16])
    }
}

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Hash::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// One sealed event: where it is, which it is, and what it hashed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealEntry {
    pub offset: u64,
    pub event_id: EventId,
    pub hash: Hash,
}

/// A signed statement: "partition P held exactly these events at these offsets, and
/// the chain ran from `prev_chain` to `chain` over them".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub partition: u32,
    /// The chain value before the first entry (that of the offset before it; all
    /// zeros when the partition had nothing sealed before).
    pub prev_chain: Hash,
    /// Consecutive offsets, at least one.
    pub entries: Vec<SealEntry>,
    /// The chain value after the last entry.
    pub chain: Hash,
    pub sealed_at: Timestamp,
    /// The seal key that signed it.
    pub kid: String,
    /// Ed25519 over [`Seal::signed_bytes`], base64url.
    pub signature: String,
}

impl Seal {
    /// What the signature covers: the seal as canonical JSON without its signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let unsigned = Seal {
            signature: String::new(),
            ..self.clone()
        };
        serde_json::to_vec(&unsigned).unwrap_or_default()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Seal, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The first and last offsets covered (`(0, 0)` for a seal with no entries, which
    /// the sealer never writes).
    pub fn range(&self) -> (u64, u64) {
        match (self.entries.first(), self.entries.last()) {
            (Some(first), Some(last)) => (first.offset, last.offset),
            _ => (0, 0),
        }
    }

    /// Whether the entries are consecutive offsets and the chain follows from them.
    fn consistent(&self) -> bool {
        !self.entries.is_empty()
            && self
                .entries
                .windows(2)
                .all(|w| w[1].offset == w[0].offset + 1)
            && self
                .entries
                .iter()
                .fold(self.prev_chain, |c, e| c.link(e.offset, &e.hash))
                == self.chain
    }
}

/// Signs seals (the sealer holds the private key).
pub trait SealSigner: Send + Sync + std::fmt::Debug {
    fn kid(&self) -> &str;
    /// An Ed25519 signature over `bytes`, base64url.
    fn sign(&self, bytes: &[u8]) -> String;
}

/// Checks seal signatures (auditors hold the public keys).
pub trait SealVerifier {
    fn verify(&self, kid: &str, bytes: &[u8], signature: &str) -> bool;
}

/// Builds one partition's seals as events arrive, in offset order: each seal covers
/// the events pushed since the one before.
#[derive(Debug, Clone)]
pub struct SealBuilder {
    partition: u32,
    /// The next offset expected; `None` before the first event of a fresh partition.
    next: Option<u64>,
    /// The chain value before the first pending entry.
    prev_chain: Hash,
    pending: Vec<SealEntry>,
    chain: Hash,
}

impl SealBuilder {
    /// Resumes after `last` (the partition's newest seal), or starts afresh.
    pub fn resume(partition: u32, last: Option<&Seal>) -> SealBuilder {
        let chain = last.map_or_else(Hash::default, |s| s.chain);
        SealBuilder {
            partition,
            next: last.map(|s| s.range().1 + 1),
            prev_chain: chain,
            pending: Vec::new(),
            chain,
        }
    }

    /// The next offset this builder expects: everything before it is sealed or
    /// pending.
    pub fn next_offset(&self) -> Option<u64> {
        self.next
    }

    /// Adds the event at `offset`; an offset before [`SealBuilder::next_offset`] is
    /// already sealed and is ignored.
    pub fn push(&mut self, offset: u64, event: &Event) {
        if self.next.is_some_and(|next| offset < next) {
            return;
        }
        let hash = Hash::of_event(event);
        self.chain = self.chain.link(offset, &hash);
        self.pending.push(SealEntry {
            offset,
            event_id: event.event_id,
            hash,
        });
        self.next = Some(offset + 1);
    }

    /// Events pushed since the last seal.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The pending events as a signed seal, or `None` when there are none. The builder
    /// then starts the next seal from this one's chain value: write the seal before
    /// pushing more (retrying until it is stored).
    pub fn seal(&mut self, signer: &dyn SealSigner, now: Timestamp) -> Option<Seal> {
        if self.pending.is_empty() {
            return None;
        }
        let mut seal = Seal {
            partition: self.partition,
            prev_chain: self.prev_chain,
            entries: std::mem::take(&mut self.pending),
            chain: self.chain,
            sealed_at: now,
            kid: signer.kid().to_owned(),
            signature: String::new(),
        };
        seal.signature = signer.sign(&seal.signed_bytes());
        self.prev_chain = self.chain;
        Some(seal)
    }
}

/// Why a sealer must not resume from a partition's newest seal: continuing would
/// sign a chain that contradicts the log, or a seal it did not write.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResumeRefused {
    #[error(
        "the newest seal of partition {partition} (offsets {first}-{last}) does not verify with the seal keys"
    )]
    BadSignature {
        partition: u32,
        first: u64,
        last: u64,
    },
    #[error(
        "the newest seal of partition {partition} (offsets {first}-{last}) does not follow from its own entries"
    )]
    BrokenChain {
        partition: u32,
        first: u64,
        last: u64,
    },
    #[error(
        "partition {partition} offset {offset}: the log's event differs from the newest seal's"
    )]
    Differs { partition: u32, offset: u64 },
    #[error(
        "partition {partition}: the log has no event at offset {offset}, which the newest seal lists"
    )]
    Missing { partition: u32, offset: u64 },
}

/// Checks a partition's newest seal before a sealer resumes from it: the signature
/// (with the sealer's own public keys), the chain over the seal's entries, and then,
/// fed the log from the seal's first offset, that the log holds exactly those events,
/// recomputing the chain value from the log.
#[derive(Debug, Clone)]
pub struct ResumeCheck {
    seal: Seal,
    /// The next offset expected, and the chain value before it (from the log).
    next: u64,
    chain: Hash,
    /// Whether any record of the partition was seen.
    started: bool,
    done: bool,
}

impl ResumeCheck {
    /// Checks the seal itself; then feed the log with [`ResumeCheck::observe`].
    pub fn new(seal: &Seal, verifier: &dyn SealVerifier) -> Result<ResumeCheck, ResumeRefused> {
        let (partition, (first, last)) = (seal.partition, seal.range());
        if !verifier.verify(&seal.kid, &seal.signed_bytes(), &seal.signature) {
            return Err(ResumeRefused::BadSignature {
                partition,
                first,
                last,
            });
        }
        if !seal.consistent() {
            return Err(ResumeRefused::BrokenChain {
                partition,
                first,
                last,
            });
        }
        Ok(ResumeCheck {
            seal: seal.clone(),
            next: first,
            chain: seal.prev_chain,
            started: false,
            done: false,
        })
    }

    /// Where to read the partition from: the offset before the seal's first, whose
    /// presence shows a gap after it is not retention.
    pub fn read_from(&self) -> u64 {
        self.seal.range().0.saturating_sub(1)
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next record of the partition, in offset order. `Ok(true)` once the log was
    /// found to hold the whole seal, chain value included.
    ///
    /// The first record may come after the seal's first offset: the log's head was
    /// removed (retention), and what remains is checked against the seal's entries.
    pub fn observe(&mut self, offset: u64, event: &Event) -> Result<bool, ResumeRefused> {
        let partition = self.seal.partition;
        let (first, last) = self.seal.range();
        if self.done {
            return Ok(true);
        }
        if offset < self.next {
            self.started = true;
            return Ok(false);
        }
        if offset > self.next {
            if self.started || offset > last {
                return Err(ResumeRefused::Missing {
                    partition,
                    offset: self.next,
                });
            }
            // Retention removed the seal's first events: resume the chain from the
            // seal's own value before `offset`.
            let skipped = usize::try_from(offset - first).unwrap_or(usize::MAX);
            self.chain = self.seal.entries[..skipped]
                .iter()
                .fold(self.seal.prev_chain, |c, e| c.link(e.offset, &e.hash));
            self.next = offset;
        }
        self.started = true;
        let index = usize::try_from(offset - first).unwrap_or(usize::MAX);
        let hash = Hash::of_event(event);
        let sealed = &self.seal.entries[index];
        if sealed.event_id != event.event_id || sealed.hash != hash {
            return Err(ResumeRefused::Differs { partition, offset });
        }
        self.chain = self.chain.link(offset, &hash);
        self.next = offset + 1;
        if offset == last {
            if self.chain != self.seal.chain {
                return Err(ResumeRefused::Differs { partition, offset });
            }
            self.done = true;
        }
        Ok(self.done)
    }

    /// The log ends (the reader caught up) before the seal's last offset.
    pub fn log_ended(&self) -> ResumeRefused {
        ResumeRefused::Missing {
            partition: self.seal.partition,
            offset: self.next,
        }
    }

    /// Whether no record of the seal's range was seen at all.
    pub fn nothing_seen(&self) -> bool {
        !self.started
    }
}

/// A chain value recorded outside the system: "partition P's chain after offset O was
/// C". `replay --verify-chain --anchor FILE` checks the log still produces it, which
/// catches a rewritten or cut head even when its seals were rewritten too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub partition: u32,
    pub offset: u64,
    pub chain: Hash,
}

impl Anchor {
    /// Reads `partition offset chain` lines; blank lines and `#` comments are skipped.
    pub fn parse_lines(text: &str) -> Result<Vec<Anchor>, String> {
        let mut anchors = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || {
                format!(
                    "line {}: expected `partition offset chain`, got {line:?}",
                    n + 1
                )
            };
            let mut parts = line.split_whitespace();
            let (Some(p), Some(o), Some(c), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            anchors.push(Anchor {
                partition: p.parse().map_err(|_| bad())?,
                offset: o.parse().map_err(|_| bad())?,
                chain: Hash::from_hex(c).ok_or_else(bad)?,
            });
        }
        Ok(anchors)
    }
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.partition,
            self.offset,
            self.chain.to_hex()
        )
    }
}

/// What [`ChainCheck`] found wrong, each naming the event or seal concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainFinding {
    /// The event's bytes differ from what was sealed.
    Edited {
        partition: u32,
        offset: u64,
        event_id: EventId,
        sealed: Hash,
        found: Hash,
    },
    /// A sealed event is no longer in the log.
    Dropped {
        partition: u32,
        offset: u64,
        event_id: EventId,
    },
    /// An event inside the sealed range that no seal lists.
    Inserted {
        partition: u32,
        offset: u64,
        event_id: EventId,
    },
    /// A sealed event found after one sealed later than it.
    Reordered {
        partition: u32,
        offset: u64,
        event_id: EventId,
    },
    /// A seal whose signature does not verify with the seal keys.
    BadSignature {
        partition: u32,
        first: u64,
        last: u64,
    },
    /// A seal whose chain values do not follow from its entries or from the seal
    /// before it, or that contradicts another seal.
    BrokenChain {
        partition: u32,
        first: u64,
        last: u64,
    },
    /// Offsets no seal covers, between sealed ones.
    MissingSeal {
        partition: u32,
        first: u64,
        last: u64,
    },
    /// The log's chain value at an anchored offset is not the one recorded.
    AnchorMismatch { anchor: Anchor, found: Hash },
    /// The log no longer reaches an anchored offset (a cut tail).
    AnchorMissing { anchor: Anchor },
}

impl std::fmt::Display for ChainFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainFinding::Edited {
                partition,
                offset,
                event_id,
                sealed,
                found,
            } => write!(
                f,
                "EDITED: event {event_id} at partition {partition} offset {offset} hashes to \
                 {found}, sealed as {sealed}"
            ),
            ChainFinding::Dropped {
                partition,
                offset,
                event_id,
            } => write!(
                f,
                "DROPPED: event {event_id}, sealed at partition {partition} offset {offset}, \
                 is not in the log"
            ),
            ChainFinding::Inserted {
                partition,
                offset,
                event_id,
            } => write!(
                f,
                "INSERTED: event {event_id} at partition {partition} offset {offset} is in \
                 no seal"
            ),
            ChainFinding::Reordered {
                partition,
                offset,
                event_id,
            } => write!(
                f,
                "REORDERED: event {event_id} at partition {partition} offset {offset} comes \
                 after events sealed after it"
            ),
            ChainFinding::BadSignature {
                partition,
                first,
                last,
            } => write!(
                f,
                "BAD SIGNATURE: the seal of partition {partition} offsets {first}-{last} \
                 does not verify"
            ),
            ChainFinding::BrokenChain {
                partition,
                first,
                last,
            } => write!(
                f,
                "BROKEN CHAIN: the seal of partition {partition} offsets {first}-{last} \
                 does not follow from its entries or the seal before it"
            ),
            ChainFinding::MissingSeal {
                partition,
                first,
                last,
            } => write!(
                f,
                "MISSING SEAL: partition {partition} offsets {first}-{last} have no seal \
                 between sealed ones"
            ),
            ChainFinding::AnchorMismatch { anchor, found } => write!(
                f,
                "ANCHOR MISMATCH: partition {} offset {}: the log's chain is {}, the anchor \
                 recorded {}",
                anchor.partition,
                anchor.offset,
                found.to_hex(),
                anchor.chain.to_hex()
            ),
            ChainFinding::AnchorMissing { anchor } => write!(
                f,
                "ANCHOR MISSING: partition {} offset {} is anchored but the log does not \
                 reach it",
                anchor.partition, anchor.offset
            ),
        }
    }
}

/// The outcome of a chain check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// Events read from the log.
    pub events: u64,
    /// Events that matched their seal.
    pub sealed: u64,
    /// Events after the newest seal (not sealed yet).
    pub unsealed_tail: u64,
    /// Sealed events before the first event still in the log: gone by retention (or
    /// dropped from the head; see the threat model).
    pub before_log_start: u64,
    pub seals: u64,
    /// Per partition, the newest seal's last offset and chain value: record them
    /// outside the system (a ticket, write-once storage) to anchor the tail.
    pub heads: Vec<(u32, u64, Hash)>,
    /// Per partition, the chain value the log itself produces after its last event
    /// read: what to record as anchors (`partition offset chain`).
    pub log_heads: Vec<Anchor>,
    /// Anchors checked against the log, and those before the log's first event
    /// (retention), which only the seals' values could be compared with.
    pub anchors_checked: u64,
    pub anchors_before_log_start: u64,
    pub findings: Vec<ChainFinding>,
}

/// One partition's chain as the log produces it, and its anchors.
#[derive(Debug, Default)]
struct LogChain {
    /// The chain value after the last offset read, and that offset.
    chain: Option<(u64, Hash)>,
    /// Anchors of this partition not reached yet, by offset.
    anchors: BTreeMap<u64, Anchor>,
}

/// One partition's seals, flattened in log order, with a cursor.
#[derive(Debug, Default)]
struct PartitionCheck {
    /// The chain value after each sealed offset (parallel to `entries`), and before
    /// the first.
    chains: Vec<Hash>,
    first_prev: Hash,
    entries: Vec<SealEntry>,
    /// Event id → indexes into `entries` (an id can repeat: a retried append).
    index: HashMap<EventId, Vec<usize>>,
    cursor: usize,
    started: bool,
}

/// Walks the log beside the seals: feed every record in log order (partitions may
/// interleave), then [`ChainCheck::finish`].
#[derive(Debug, Default)]
pub struct ChainCheck {
    partitions: BTreeMap<u32, PartitionCheck>,
    logs: BTreeMap<u32, LogChain>,
    report: ChainReport,
}

impl ChainCheck {
    /// Checks the seals themselves (signatures, chain links, gaps) and prepares to
    /// walk the log.
    pub fn new(mut seals: Vec<Seal>, verifier: &dyn SealVerifier) -> ChainCheck {
        seals.sort_by_key(|s| (s.partition, s.range()));
        let mut check = ChainCheck::default();
        check.report.seals = seals.len() as u64;
        // Per partition: every sealed offset with its entry and the chain after it.
        let mut sealed: BTreeMap<u32, BTreeMap<u64, (SealEntry, Hash)>> = BTreeMap::new();
        let mut trusted = Vec::new();
        for seal in &seals {
            let (partition, (first, last)) = (seal.partition, seal.range());
            if !verifier.verify(&seal.kid, &seal.signed_bytes(), &seal.signature) {
                check.report.findings.push(ChainFinding::BadSignature {
                    partition,
                    first,
                    last,
                });
                continue;
            }
            let offsets = sealed.entry(partition).or_default();
            let mut chain = seal.prev_chain;
            let mut agrees = seal.consistent();
            for entry in &seal.entries {
                chain = chain.link(entry.offset, &entry.hash);
                let known = offsets
                    .entry(entry.offset)
                    .or_insert((entry.clone(), chain));
                agrees &= *known == (entry.clone(), chain);
            }
            if !agrees {
                check.report.findings.push(ChainFinding::BrokenChain {
                    partition,
                    first,
                    last,
                });
            }
            trusted.push(seal);
        }
        // Each seal follows the chain where the offset before it is sealed; the first
        // seal of a partition starts it from zero.
        for seal in trusted {
            let (partition, (first, last)) = (seal.partition, seal.range());
            let offsets = &sealed[&partition];
            let before = first.checked_sub(1).and_then(|o| offsets.get(&o));
            let starts = offsets.keys().next() == Some(&first);
            let linked = match before {
                Some((_, chain)) => *chain == seal.prev_chain,
                None => !starts || seal.prev_chain == Hash::default(),
            };
            if !linked {
                check.report.findings.push(ChainFinding::BrokenChain {
                    partition,
                    first,
                    last,
                });
            }
        }
        for (&partition, offsets) in &sealed {
            let mut previous: Option<u64> = None;
            let part = check.partitions.entry(partition).or_default();
            if let Some((first, _)) = offsets.iter().next()
                && let Some(seal) = seals
                    .iter()
                    .find(|s| s.partition == partition && s.range().0 == *first)
            {
                part.first_prev = seal.prev_chain;
            }
            for (&offset, (entry, chain)) in offsets {
                part.chains.push(*chain);
                if let Some(p) = previous.filter(|&p| offset > p + 1) {
                    check.report.findings.push(ChainFinding::MissingSeal {
                        partition,
                        first: p + 1,
                        last: offset - 1,
                    });
                }
                previous = Some(offset);
                part.index
                    .entry(entry.event_id)
                    .or_default()
                    .push(part.entries.len());
                part.entries.push(entry.clone());
            }
            if let Some((&offset, (_, chain))) = offsets.iter().next_back() {
                check.report.heads.push((partition, offset, *chain));
            }
        }
        check
    }

    /// Checks the log's own chain values against `anchors` as it walks the log.
    pub fn with_anchors(mut self, anchors: &[Anchor]) -> ChainCheck {
        for anchor in anchors {
            self.logs
                .entry(anchor.partition)
                .or_default()
                .anchors
                .insert(anchor.offset, *anchor);
        }
        self
    }

    /// The chain value before the log's first record at `offset`: from the seals
    /// when they cover the offset before it (the head went by retention), else zero
    /// (the partition's beginning).
    fn chain_before(&self, partition: u32, offset: u64) -> Hash {
        let Some(part) = self.partitions.get(&partition) else {
            return Hash::default();
        };
        let at = part.entries.partition_point(|e| e.offset < offset);
        match at.checked_sub(1) {
            Some(i) if part.entries[i].offset + 1 == offset => part.chains[i],
            _ if part.entries.get(at).is_some_and(|e| e.offset == offset) => part.first_prev,
            _ => Hash::default(),
        }
    }

    /// The chain over the log itself, and the anchors it passes.
    fn follow_log(&mut self, partition: u32, offset: u64, event: &Event) {
        let before = match self.logs.get(&partition).and_then(|l| l.chain) {
            Some((_, chain)) => chain,
            None => {
                let start = self.chain_before(partition, offset);
                // Anchors before the log's first event (retention): only the seals
                // remember those chain values.
                let log = self.logs.entry(partition).or_default();
                let early: Vec<Anchor> = log.anchors.range(..offset).map(|(_, a)| *a).collect();
                for anchor in early {
                    log.anchors.remove(&anchor.offset);
                    self.report.anchors_before_log_start += 1;
                    let sealed = self.partitions.get(&partition).and_then(|p| {
                        let i = p.entries.binary_search_by_key(&anchor.offset, |e| e.offset);
                        i.ok().map(|i| p.chains[i])
                    });
                    if let Some(found) = sealed.filter(|c| *c != anchor.chain) {
                        self.report
                            .findings
                            .push(ChainFinding::AnchorMismatch { anchor, found });
                    }
                }
                start
            }
        };
        let chain = before.link(offset, &Hash::of_event(event));
        let log = self.logs.entry(partition).or_default();
        log.chain = Some((offset, chain));
        // Anchors skipped over (their offset is not in the log any more) or reached.
        let due: Vec<Anchor> = log.anchors.range(..=offset).map(|(_, a)| *a).collect();
        for anchor in due {
            log.anchors.remove(&anchor.offset);
            self.report.anchors_checked += 1;
            if anchor.offset != offset {
                self.report
                    .findings
                    .push(ChainFinding::AnchorMissing { anchor });
            } else if anchor.chain != chain {
                self.report.findings.push(ChainFinding::AnchorMismatch {
                    anchor,
                    found: chain,
                });
            }
        }
    }

    /// The next record of the log.
    pub fn observe(&mut self, partition: u32, offset: u64, event: &Event) {
        self.follow_log(partition, offset, event);
        self.report.events += 1;
        let report = &mut self.report;
        let Some(part) = self.partitions.get_mut(&partition) else {
            report.unsealed_tail += 1;
            return;
        };
        if !part.started {
            // Sealed events before the first one the log still has: gone by retention.
            let gone = part
                .entries
                .iter()
                .take_while(|e| e.offset < offset)
                .count();
            report.before_log_start += gone as u64;
            part.cursor = gone;
            part.started = true;
        }
        let hash = Hash::of_event(event);
        let event_id = event.event_id;
        // Where this event was sealed, at or after the cursor.
        let found = part
            .index
            .get(&event_id)
            .and_then(|at| at.iter().copied().find(|&i| i >= part.cursor));
        match found {
            Some(i) => {
                for skipped in &part.entries[part.cursor..i] {
                    report.findings.push(ChainFinding::Dropped {
                        partition,
                        offset: skipped.offset,
                        event_id: skipped.event_id,
                    });
                }
                let sealed = &part.entries[i];
                if sealed.hash == hash {
                    report.sealed += 1;
                } else {
                    report.findings.push(ChainFinding::Edited {
                        partition,
                        offset,
                        event_id,
                        sealed: sealed.hash,
                        found: hash,
                    });
                }
                part.cursor = i + 1;
            }
            None if part.index.contains_key(&event_id) => {
                report.findings.push(ChainFinding::Reordered {
                    partition,
                    offset,
                    event_id,
                });
            }
            None if part.cursor < part.entries.len() => {
                report.findings.push(ChainFinding::Inserted {
                    partition,
                    offset,
                    event_id,
                });
            }
            None => report.unsealed_tail += 1,
        }
    }

    /// Sealed events never seen are dropped (a truncated tail included).
    pub fn finish(mut self) -> ChainReport {
        for (&partition, log) in &self.logs {
            if let Some((offset, chain)) = log.chain {
                self.report.log_heads.push(Anchor {
                    partition,
                    offset,
                    chain,
                });
            }
            for anchor in log.anchors.values() {
                self.report.anchors_checked += 1;
                self.report
                    .findings
                    .push(ChainFinding::AnchorMissing { anchor: *anchor });
            }
        }
        for (&partition, part) in &self.partitions {
            for missing in &part.entries[part.cursor..] {
                self.report.findings.push(ChainFinding::Dropped {
                    partition,
                    offset: missing.offset,
                    event_id: missing.event_id,
                });
            }
        }
        self.report
    }
}

#[cfg(test)]
mod tests;
