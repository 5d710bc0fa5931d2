//! Tamper evidence for the log: signed seals over hash-chained events.
//!
//! Every event of a partition is hashed (SHA-256 of its canonical JSON) and chained
//! to the one before it: `chain(o) = SHA-256(chain(o − 1) ‖ offset ‖ hash(event))`.
//! The sealer groups a partition's offsets in blocks of [`SEAL_BLOCK`]; a block's
//! [`Seal`] lists each event's offset, id and hash, the chain value before the block
//! and after it, and is signed with the seal key. A block is re-sealed as it fills, so
//! the tail of the log is sealed within seconds, not only once a block is full.
//!
//! [`ChainCheck`] walks the log beside the seals and names what does not match: an
//! event whose bytes changed (*edited*), a sealed event the log no longer has
//! (*dropped*), an event no seal lists inside the sealed range (*inserted*), events in
//! another order (*reordered*), a seal whose signature or chain does not verify, and a
//! block with no seal between sealed ones. What it cannot see is in
//! `docs/THREAT_MODEL.md`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Event, EventId, Timestamp};

/// Offsets per seal block.
pub const SEAL_BLOCK: u64 = 1024;

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

/// A signed statement: "partition P, block B held exactly these events".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub partition: u32,
    pub block: u64,
    /// The chain value before the block's first entry (that of the last event sealed
    /// before it; all zeros when nothing was).
    pub prev_chain: Hash,
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

    /// The last offset this seal covers, when it has entries.
    pub fn last_offset(&self) -> Option<u64> {
        self.entries.last().map(|e| e.offset)
    }

    /// Recomputes the chain from `prev_chain` over the entries.
    fn computed_chain(&self) -> Hash {
        self.entries
            .iter()
            .fold(self.prev_chain, |c, e| c.link(e.offset, &e.hash))
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

/// Builds seals for one partition as events arrive, in offset order.
#[derive(Debug, Clone)]
pub struct SealBuilder {
    partition: u32,
    block: u64,
    prev_chain: Hash,
    entries: Vec<SealEntry>,
    chain: Hash,
}

impl SealBuilder {
    /// Resumes after `last` (the newest seal of the partition), or starts afresh.
    pub fn resume(partition: u32, last: Option<&Seal>) -> SealBuilder {
        match last {
            Some(seal) => SealBuilder {
                partition,
                block: seal.block,
                prev_chain: seal.prev_chain,
                entries: seal.entries.clone(),
                chain: seal.chain,
            },
            None => SealBuilder {
                partition,
                block: 0,
                prev_chain: Hash::default(),
                entries: Vec::new(),
                chain: Hash::default(),
            },
        }
    }

    /// The next offset this builder expects (everything before it is sealed or in
    /// the open block).
    pub fn next_offset(&self) -> Option<u64> {
        self.entries.last().map(|e| e.offset + 1)
    }

    /// Adds the event at `offset`. When it starts a new block, the finished block's
    /// seal contents are returned first (sign them with [`SealBuilder::sign`]).
    pub fn push(&mut self, offset: u64, event: &Event) -> Option<SealBuilder> {
        let block = offset / SEAL_BLOCK;
        let mut finished = None;
        if block != self.block {
            if !self.entries.is_empty() {
                finished = Some(self.clone());
                self.prev_chain = self.chain;
            }
            self.block = block;
            self.entries.clear();
        }
        let hash = Hash::of_event(event);
        self.chain = self.chain.link(offset, &hash);
        self.entries.push(SealEntry {
            offset,
            event_id: event.event_id,
            hash,
        });
        finished
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The open (or finished) block as a signed seal.
    pub fn sign(&self, signer: &dyn SealSigner, now: Timestamp) -> Seal {
        let mut seal = Seal {
            partition: self.partition,
            block: self.block,
            prev_chain: self.prev_chain,
            entries: self.entries.clone(),
            chain: self.chain,
            sealed_at: now,
            kid: signer.kid().to_owned(),
            signature: String::new(),
        };
        seal.signature = signer.sign(&seal.signed_bytes());
        seal
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
    BadSignature { partition: u32, block: u64 },
    /// A seal whose chain values do not follow from its entries or its predecessor.
    BrokenChain { partition: u32, block: u64 },
    /// No seal for a block between sealed blocks.
    MissingSeal { partition: u32, block: u64 },
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
            ChainFinding::BadSignature { partition, block } => write!(
                f,
                "BAD SIGNATURE: the seal of partition {partition} block {block} does not verify"
            ),
            ChainFinding::BrokenChain { partition, block } => write!(
                f,
                "BROKEN CHAIN: the seal of partition {partition} block {block} does not \
                 follow from its entries or the block before it"
            ),
            ChainFinding::MissingSeal { partition, block } => write!(
                f,
                "MISSING SEAL: partition {partition} block {block} has no seal between \
                 sealed blocks"
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
    pub findings: Vec<ChainFinding>,
}

/// One partition's seals, flattened in log order, with a cursor.
#[derive(Debug, Default)]
struct PartitionCheck {
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
    report: ChainReport,
}

impl ChainCheck {
    /// Checks the seals themselves (signatures, chain links, gaps) and prepares to
    /// walk the log.
    pub fn new(mut seals: Vec<Seal>, verifier: &dyn SealVerifier) -> ChainCheck {
        seals.sort_by_key(|s| (s.partition, s.block));
        let mut check = ChainCheck::default();
        check.report.seals = seals.len() as u64;
        let mut previous: Option<&Seal> = None;
        for seal in &seals {
            let (partition, block) = (seal.partition, seal.block);
            if !verifier.verify(&seal.kid, &seal.signed_bytes(), &seal.signature) {
                check
                    .report
                    .findings
                    .push(ChainFinding::BadSignature { partition, block });
                continue;
            }
            let in_block = seal.entries.iter().all(|e| e.offset / SEAL_BLOCK == block);
            let ordered = seal.entries.windows(2).all(|w| w[0].offset < w[1].offset);
            let follows = match previous.filter(|p| p.partition == partition) {
                Some(p) => p.chain == seal.prev_chain,
                None => true,
            };
            if !in_block || !ordered || !follows || seal.computed_chain() != seal.chain {
                check
                    .report
                    .findings
                    .push(ChainFinding::BrokenChain { partition, block });
            }
            if let Some(p) = previous.filter(|p| p.partition == partition) {
                for missing in p.block + 1..block {
                    check.report.findings.push(ChainFinding::MissingSeal {
                        partition,
                        block: missing,
                    });
                }
            }
            if let Some(last) = seal.last_offset() {
                match check.report.heads.last_mut() {
                    Some(head) if head.0 == partition => *head = (partition, last, seal.chain),
                    _ => check.report.heads.push((partition, last, seal.chain)),
                }
            }
            let part = check.partitions.entry(partition).or_default();
            for entry in &seal.entries {
                part.index
                    .entry(entry.event_id)
                    .or_default()
                    .push(part.entries.len());
                part.entries.push(entry.clone());
            }
            previous = Some(seal);
        }
        check
    }

    /// The next record of the log.
    pub fn observe(&mut self, partition: u32, offset: u64, event: &Event) {
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
