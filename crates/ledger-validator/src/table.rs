//! The hot structure of the revocation view: one compact open-addressing table of
//! family entries, written by one writer at a time and read lock-free.
//!
//! Each slot is four `AtomicU64` words (32 bytes): the session id (two words), one
//! instant (the family's start while it is live, the revocation instant once it is
//! revoked) and a meta word (the entry's expiry in milliseconds, rounded up; the kind;
//! the revocation reason; the Robin Hood probe distance). The table is kept between
//! half and seven eighths full, so an entry costs 37 to 64 bytes (plus the filter).
//!
//! Readers never lock and never write shared memory: they validate what they read
//! with a sequence counter (a seqlock) and retry in the rare case a write overlapped.
//! Robin Hood probing (with backward-shift deletion) keeps probes short for hits
//! and misses alike; the sequence counter is what makes moving entries safe while
//! readers probe. A small Bloom filter of the revoked ids (about 1.5 bytes per slot,
//! small enough to stay in the CPU's cache) answers most lookups of families that
//! are not revoked without touching the slots at all.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

use ledger_core::{RevokeReason, SessionId, Timestamp};

/// What the view keeps about one family: only what `check` needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyEntry {
    /// Not revoked. `started_at` decides whether a subject-wide revocation covers it.
    Live {
        started_at: Timestamp,
        /// Until when the family matters (D5), rounded up to the millisecond.
        retain_until: Timestamp,
    },
    /// Revoked: every token of the family is refused until the entry expires.
    Revoked {
        at: Timestamp,
        reason: RevokeReason,
        /// Until when the entry is kept (D5), rounded up to the millisecond.
        keep_until: Timestamp,
    },
}

impl FamilyEntry {
    /// The instant after which no token the entry governs can be accepted.
    pub fn until(self) -> Timestamp {
        match self {
            FamilyEntry::Live { retain_until, .. } => retain_until,
            FamilyEntry::Revoked { keep_until, .. } => keep_until,
        }
    }

    pub fn is_revoked(self) -> bool {
        matches!(self, FamilyEntry::Revoked { .. })
    }

    /// The join of two views of one family (D4): revoked stays revoked, the first
    /// revocation names the reason, expiries only grow.
    pub fn join(self, other: FamilyEntry) -> FamilyEntry {
        use FamilyEntry::{Live, Revoked};
        match (self, other) {
            (
                Live {
                    started_at: a,
                    retain_until: ua,
                },
                Live {
                    started_at: b,
                    retain_until: ub,
                },
            ) => Live {
                started_at: a.min(b),
                retain_until: ua.max(ub),
            },
            (
                Live { retain_until, .. },
                Revoked {
                    at,
                    reason,
                    keep_until,
                },
            )
            | (
                Revoked {
                    at,
                    reason,
                    keep_until,
                },
                Live { retain_until, .. },
            ) => Revoked {
                at,
                reason,
                keep_until: keep_until.max(retain_until),
            },
            (
                Revoked {
                    at: a,
                    reason: ra,
                    keep_until: ka,
                },
                Revoked {
                    at: b,
                    reason: rb,
                    keep_until: kb,
                },
            ) => {
                let (at, reason) = (a, ra).min((b, rb));
                Revoked {
                    at,
                    reason,
                    keep_until: ka.max(kb),
                }
            }
        }
    }
}

/// Bytes of one slot.
pub const SLOT_BYTES: usize = WORDS * 8;
const WORDS: usize = 4;

/// Grow when an insert would make the table fuller than this.
const MAX_LOAD: f64 = 0.875;
/// Load right after growing, shrinking or bulk building.
const TARGET_LOAD: f64 = 0.6;
/// Shrink when pruning leaves the table emptier than this.
const MIN_LOAD: f64 = 0.5;
const MIN_CAPACITY: usize = 64;
/// A probe distance past this means a pathological key set: grow instead.
const MAX_DISTANCE: u64 = 4096;

// Meta word layout.
const UNTIL_BITS: u32 = 42;
const UNTIL_MASK: u64 = (1 << UNTIL_BITS) - 1;
const KIND_SHIFT: u32 = 42;
const KIND_LIVE: u64 = 1;
const KIND_REVOKED: u64 = 2;
const REASON_SHIFT: u32 = 44;
const DIST_SHIFT: u32 = 48;

/// The open-addressing table. All methods take `&self`; the `insert`, `update`,
/// `remove*` methods must only be called by one thread at a time (the view holds a
/// writer lock around them), while `get` may run on any number of threads at once.
#[derive(Debug)]
pub struct FamilyTable {
    slots: Box<[AtomicU64]>,
    capacity: usize,
    seeds: [u64; 2],
    /// Even when no write is in progress.
    version: AtomicU64,
    len: AtomicUsize,
    revoked: AtomicUsize,
    /// A blocked Bloom filter of the revoked ids: one 64-bit word per id, three bits.
    /// Bits are only ever set (a new table starts a new filter), so a clear bit is
    /// proof the family is not revoked, read without the sequence counter.
    filter: Box<[AtomicU64]>,
}

/// An insert that did not fit: the table must grow first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl FamilyTable {
    /// An empty table sized for `entries` at the target load.
    pub fn with_entries(entries: usize) -> Self {
        let capacity = capacity_for(entries);
        let random = RandomState::new();
        let seed = |n: u64| {
            let mut h = random.build_hasher();
            h.write_u64(n);
            h.finish()
        };
        FamilyTable {
            slots: (0..capacity * WORDS).map(|_| AtomicU64::new(0)).collect(),
            filter: (0..filter_words(capacity))
                .map(|_| AtomicU64::new(0))
                .collect(),
            capacity,
            seeds: [seed(1), seed(2) | 1],
            version: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            revoked: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn revoked(&self) -> usize {
        self.revoked.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Heap bytes of the slots (exact: one boxed slice of `capacity` slots).
    pub fn heap_bytes(&self) -> usize {
        self.capacity * SLOT_BYTES + self.filter.len() * 8
    }

    /// Whether `entries` fit without passing the maximum load.
    pub fn fits(&self, entries: usize) -> bool {
        entries as f64 <= self.capacity as f64 * MAX_LOAD
    }

    /// Whether `entries` fill the table at least to the minimum load (small tables
    /// are exempt).
    pub fn dense_enough(&self, entries: usize) -> bool {
        self.capacity <= capacity_for(MIN_CAPACITY)
            || entries as f64 >= self.capacity as f64 * MIN_LOAD
    }

    /// The entry of a family. Lock-free: retries only if a write overlapped.
    pub fn get(&self, id: &SessionId) -> Option<FamilyEntry> {
        let key = key_of(id);
        loop {
            let before = self.version.load(Ordering::Acquire);
            if before & 1 == 0 {
                let found = self.probe(key);
                fence(Ordering::Acquire);
                if self.version.load(Ordering::Relaxed) == before {
                    return found.map(|(_, time, meta)| decode(time, meta));
                }
            }
            std::hint::spin_loop();
        }
    }

    /// Where `key` is, with its time and meta words (possibly torn: validate after).
    fn probe(&self, key: [u64; 2]) -> Option<(usize, u64, u64)> {
        let mut i = self.home(key);
        let mut distance = 0u64;
        loop {
            let base = i * WORDS;
            let meta = self.slots[base + 3].load(Ordering::Relaxed);
            // Robin Hood: once a resident is closer to its home than we are to ours,
            // the key cannot be further on.
            if meta == 0 || meta >> DIST_SHIFT < distance || distance > MAX_DISTANCE {
                return None;
            }
            if self.slots[base].load(Ordering::Relaxed) == key[0]
                && self.slots[base + 1].load(Ordering::Relaxed) == key[1]
            {
                return Some((i, self.slots[base + 2].load(Ordering::Relaxed), meta));
            }
            i = self.next(i);
            distance += 1;
        }
    }

    fn hash(&self, key: [u64; 2]) -> u64 {
        folded_multiply(
            folded_multiply(key[0] ^ self.seeds[0], 0x9E37_79B9_7F4A_7C15) ^ key[1],
            self.seeds[1],
        )
    }

    fn home(&self, key: [u64; 2]) -> usize {
        // Fast range reduction: no power-of-two capacity needed.
        ((u128::from(self.hash(key)) * self.capacity as u128) >> 64) as usize
    }

    /// The filter word of a key and the three bits it sets there.
    fn filter_bits(&self, key: [u64; 2]) -> (usize, u64) {
        let h = folded_multiply(self.hash(key), 0xD6E8_FEB8_6659_FD93);
        let word = ((u128::from(h) * self.filter.len() as u128) >> 64) as usize;
        let bits = (1u64 << (h & 63)) | (1u64 << ((h >> 6) & 63)) | (1u64 << ((h >> 12) & 63));
        (word, bits)
    }

    /// `false` proves the family is not revoked (as of this table); `true` means it
    /// may be. Plain loads only.
    pub fn maybe_revoked(&self, id: &SessionId) -> bool {
        let (word, bits) = self.filter_bits(key_of(id));
        self.filter[word].load(Ordering::Acquire) & bits == bits
    }

    /// Marks a key revoked in the filter, before the slot says so.
    fn mark_revoked(&self, key: [u64; 2]) {
        let (word, bits) = self.filter_bits(key);
        self.filter[word].fetch_or(bits, Ordering::Release);
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.capacity { 0 } else { i + 1 }
    }

    /// Joins `entry` into the family's entry, inserting it when absent.
    /// Writer only. `Err(Full)` when the table must grow first (nothing changed).
    pub fn upsert(&self, id: &SessionId, entry: FamilyEntry) -> Result<(), Full> {
        let key = key_of(id);
        if let Some((i, time, meta)) = self.probe(key) {
            let old = decode(time, meta);
            let new = old.join(entry);
            if new != old {
                let (time, new_meta) = encode(new);
                if new.is_revoked() {
                    self.mark_revoked(key);
                }
                let _write = self.begin_write();
                self.slots[i * WORDS + 2].store(time, Ordering::Relaxed);
                self.slots[i * WORDS + 3].store(
                    new_meta | (meta & !((1 << DIST_SHIFT) - 1)),
                    Ordering::Relaxed,
                );
                if new.is_revoked() && !old.is_revoked() {
                    self.revoked.fetch_add(1, Ordering::Relaxed);
                }
            }
            return Ok(());
        }
        if !self.fits(self.len() + 1) {
            return Err(Full);
        }
        self.insert_absent(key, entry)
    }

    /// Robin Hood insert of a key known to be absent.
    fn insert_absent(&self, key: [u64; 2], entry: FamilyEntry) -> Result<(), Full> {
        // Check the probe length first, so a refusal changes nothing.
        let mut i = self.home(key);
        let mut distance = 0u64;
        loop {
            let meta = self.slots[i * WORDS + 3].load(Ordering::Relaxed);
            if meta == 0 || meta >> DIST_SHIFT < distance {
                break;
            }
            i = self.next(i);
            distance += 1;
            if distance > MAX_DISTANCE {
                return Err(Full);
            }
        }
        let (time, meta) = encode(entry);
        if entry.is_revoked() {
            self.mark_revoked(key);
        }
        let mut carried = [key[0], key[1], time, meta];
        let mut i = self.home(key);
        let mut distance = 0u64;
        let _write = self.begin_write();
        loop {
            let base = i * WORDS;
            let resident = self.slots[base + 3].load(Ordering::Relaxed);
            if resident == 0 {
                self.store_slot(i, carried, distance);
                break;
            }
            let resident_distance = resident >> DIST_SHIFT;
            if resident_distance < distance {
                let displaced = [
                    self.slots[base].load(Ordering::Relaxed),
                    self.slots[base + 1].load(Ordering::Relaxed),
                    self.slots[base + 2].load(Ordering::Relaxed),
                    resident,
                ];
                self.store_slot(i, carried, distance);
                carried = displaced;
                distance = resident_distance;
            }
            i = self.next(i);
            distance += 1;
        }
        self.len.fetch_add(1, Ordering::Relaxed);
        if entry.is_revoked() {
            self.revoked.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn store_slot(&self, i: usize, words: [u64; 4], distance: u64) {
        let base = i * WORDS;
        let meta = (words[3] & ((1 << DIST_SHIFT) - 1)) | (distance << DIST_SHIFT);
        self.slots[base].store(words[0], Ordering::Relaxed);
        self.slots[base + 1].store(words[1], Ordering::Relaxed);
        self.slots[base + 2].store(words[2], Ordering::Relaxed);
        self.slots[base + 3].store(meta, Ordering::Relaxed);
    }

    /// Removes every entry that expired at `now` (D5). Writer only.
    pub fn remove_expired(&self, now: Timestamp) -> usize {
        let now_ms = now_millis(now);
        let expired: Vec<[u64; 2]> = (0..self.capacity)
            .filter_map(|i| {
                let base = i * WORDS;
                let meta = self.slots[base + 3].load(Ordering::Relaxed);
                (meta != 0 && meta & UNTIL_MASK <= now_ms).then(|| {
                    [
                        self.slots[base].load(Ordering::Relaxed),
                        self.slots[base + 1].load(Ordering::Relaxed),
                    ]
                })
            })
            .collect();
        for key in &expired {
            self.remove_key(*key);
        }
        expired.len()
    }

    /// Backward-shift deletion: later entries of the run move one slot closer home.
    fn remove_key(&self, key: [u64; 2]) {
        let Some((mut i, _, meta)) = self.probe(key) else {
            return;
        };
        let _write = self.begin_write();
        loop {
            let j = self.next(i);
            let next_meta = self.slots[j * WORDS + 3].load(Ordering::Relaxed);
            if next_meta == 0 || next_meta >> DIST_SHIFT == 0 {
                for w in 0..WORDS {
                    self.slots[i * WORDS + w].store(0, Ordering::Relaxed);
                }
                break;
            }
            let words = [
                self.slots[j * WORDS].load(Ordering::Relaxed),
                self.slots[j * WORDS + 1].load(Ordering::Relaxed),
                self.slots[j * WORDS + 2].load(Ordering::Relaxed),
                next_meta,
            ];
            self.store_slot(i, words, (next_meta >> DIST_SHIFT) - 1);
            i = j;
        }
        self.len.fetch_sub(1, Ordering::Relaxed);
        if (meta >> KIND_SHIFT) & 0b11 == KIND_REVOKED {
            self.revoked.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Every entry, in slot order. Writer only (no concurrent writes while it runs).
    pub fn entries(&self) -> impl Iterator<Item = (SessionId, FamilyEntry)> + '_ {
        (0..self.capacity).filter_map(|i| {
            let base = i * WORDS;
            let meta = self.slots[base + 3].load(Ordering::Relaxed);
            (meta != 0).then(|| {
                let key = [
                    self.slots[base].load(Ordering::Relaxed),
                    self.slots[base + 1].load(Ordering::Relaxed),
                ];
                let time = self.slots[base + 2].load(Ordering::Relaxed);
                (id_of(key), decode(time, meta))
            })
        })
    }

    /// A copy of this table with the entries `keep` accepts, sized for `entries`.
    /// Writer only.
    pub fn rebuilt(&self, entries: usize, keep: impl Fn(&FamilyEntry) -> bool) -> FamilyTable {
        let mut size = entries;
        loop {
            let table = FamilyTable::with_entries(size);
            if self
                .entries()
                .filter(|(_, entry)| keep(entry))
                .all(|(id, entry)| table.upsert(&id, entry).is_ok())
            {
                return table;
            }
            size = size.saturating_mul(2);
        }
    }

    fn begin_write(&self) -> WriteGuard<'_> {
        let v = self.version.load(Ordering::Relaxed);
        self.version.store(v.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        WriteGuard {
            version: &self.version,
            end: v.wrapping_add(2),
        }
    }
}

/// Ends a write section (makes the version even again) when dropped.
struct WriteGuard<'a> {
    version: &'a AtomicU64,
    end: u64,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.version.store(self.end, Ordering::Release);
    }
}

fn capacity_for(entries: usize) -> usize {
    ((entries as f64 / TARGET_LOAD).ceil() as usize).max(MIN_CAPACITY)
}

/// About twelve filter bits per slot (ten to fifteen per entry): about 1–2 % false
/// positives when every entry is revoked, fewer otherwise.
fn filter_words(capacity: usize) -> usize {
    (capacity * 12).div_ceil(64).max(8)
}

fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

fn key_of(id: &SessionId) -> [u64; 2] {
    let b = id.as_bytes();
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&b[..8]);
    lo.copy_from_slice(&b[8..]);
    [u64::from_be_bytes(hi), u64::from_be_bytes(lo)]
}

fn id_of(key: [u64; 2]) -> SessionId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&key[0].to_be_bytes());
    b[8..].copy_from_slice(&key[1].to_be_bytes());
    SessionId::from_uuid(uuid::Uuid::from_bytes(b))
}

/// Milliseconds since the epoch, rounded up, clamped to what the meta word holds.
fn until_millis(t: Timestamp) -> u64 {
    let micros = t.unix_micros().max(0);
    let ms = micros.div_euclid(1000) + i64::from(micros.rem_euclid(1000) != 0);
    ms.unsigned_abs().min(UNTIL_MASK)
}

/// The largest whole millisecond not after `now`: an entry with `until <= now` expired.
fn now_millis(now: Timestamp) -> u64 {
    now.unix_micros()
        .max(0)
        .div_euclid(1000)
        .unsigned_abs()
        .min(UNTIL_MASK)
}

fn reason_code(reason: RevokeReason) -> u64 {
    match reason {
        RevokeReason::Logout => 0,
        RevokeReason::ReuseDetected => 1,
        RevokeReason::Admin => 2,
    }
}

fn reason_of(code: u64) -> RevokeReason {
    match code {
        0 => RevokeReason::Logout,
        1 => RevokeReason::ReuseDetected,
        _ => RevokeReason::Admin,
    }
}

/// The time word and the meta word (distance zero) of an entry.
fn encode(entry: FamilyEntry) -> (u64, u64) {
    match entry {
        FamilyEntry::Live {
            started_at,
            retain_until,
        } => (
            started_at.unix_micros() as u64,
            until_millis(retain_until) | (KIND_LIVE << KIND_SHIFT),
        ),
        FamilyEntry::Revoked {
            at,
            reason,
            keep_until,
        } => (
            at.unix_micros() as u64,
            until_millis(keep_until)
                | (KIND_REVOKED << KIND_SHIFT)
                | (reason_code(reason) << REASON_SHIFT),
        ),
    }
}

fn decode(time: u64, meta: u64) -> FamilyEntry {
    let time = Timestamp::from_unix_micros(time as i64);
    let until = Timestamp::from_unix_micros(((meta & UNTIL_MASK) as i64).saturating_mul(1000));
    if (meta >> KIND_SHIFT) & 0b11 == KIND_REVOKED {
        FamilyEntry::Revoked {
            at: time,
            reason: reason_of((meta >> REASON_SHIFT) & 0b11),
            keep_until: until,
        }
    } else {
        FamilyEntry::Live {
            started_at: time,
            retain_until: until,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn live(started: i64, until: i64) -> FamilyEntry {
        FamilyEntry::Live {
            started_at: Timestamp::from_unix_micros(started),
            retain_until: Timestamp::from_unix_micros(until * 1000),
        }
    }

    fn revoked(at: i64, reason: RevokeReason, until: i64) -> FamilyEntry {
        FamilyEntry::Revoked {
            at: Timestamp::from_unix_micros(at),
            reason,
            keep_until: Timestamp::from_unix_micros(until * 1000),
        }
    }

    #[test]
    fn entries_round_trip_through_the_words() {
        for e in [
            live(1_700_000_000_123_456, 1_700_000_100_000),
            revoked(1_700_000_000_000_001, RevokeReason::ReuseDetected, 1),
            revoked(5, RevokeReason::Admin, 1_800_000_000_000),
            revoked(5, RevokeReason::Logout, 7),
        ] {
            let (time, meta) = encode(e);
            assert_eq!(decode(time, meta), e);
        }
    }

    #[test]
    fn expiries_round_up_to_the_millisecond() {
        assert_eq!(until_millis(Timestamp::from_unix_micros(1_000)), 1);
        assert_eq!(until_millis(Timestamp::from_unix_micros(1_001)), 2);
        assert_eq!(now_millis(Timestamp::from_unix_micros(1_999)), 1);
    }

    #[test]
    fn join_keeps_revocations_and_the_first_reason() {
        let l = live(10, 100);
        let r1 = revoked(20, RevokeReason::Logout, 50);
        let r2 = revoked(15, RevokeReason::Admin, 200);
        assert_eq!(l.join(r1), revoked(20, RevokeReason::Logout, 100));
        assert_eq!(r1.join(l), l.join(r1));
        assert_eq!(r1.join(r2), revoked(15, RevokeReason::Admin, 200));
        assert_eq!(live(10, 5).join(live(3, 9)), live(3, 9));
    }

    #[test]
    fn inserts_growth_lookups_and_pruning_agree_with_a_hash_map() {
        let mut table = FamilyTable::with_entries(0);
        let mut model = HashMap::new();
        let ids: Vec<SessionId> = (0..5_000).map(|_| ledger_clock::new_session_id()).collect();
        for (n, id) in ids.iter().enumerate() {
            let n = n as i64;
            let entry = if n % 3 == 0 {
                revoked(n, RevokeReason::Logout, n + 1)
            } else {
                live(n, n + 1)
            };
            while table.upsert(id, entry).is_err() {
                table = table.rebuilt(table.len() * 2, |_| true);
            }
            model.insert(*id, entry);
            assert!(table.len() as f64 <= table.capacity() as f64 * MAX_LOAD);
        }
        // Update some in place.
        for id in ids.iter().step_by(7) {
            let update = revoked(1, RevokeReason::Admin, 10_000);
            table.upsert(id, update).unwrap();
            let joined = model[id].join(update);
            model.insert(*id, joined);
        }
        assert_eq!(table.len(), model.len());
        for (id, e) in &model {
            assert_eq!(table.get(id), Some(*e));
        }
        assert_eq!(table.get(&ledger_clock::new_session_id()), None);
        for (id, e) in &model {
            assert!(
                !e.is_revoked() || table.maybe_revoked(id),
                "no false negatives"
            );
        }
        let strangers = 10_000;
        let false_positives = (0..strangers)
            .filter(|_| table.maybe_revoked(&ledger_clock::new_session_id()))
            .count();
        assert!(
            false_positives < strangers / 20,
            "{false_positives} false positives"
        );
        assert_eq!(
            table.revoked(),
            model.values().filter(|e| e.is_revoked()).count()
        );
        // Prune everything that expired by 2.5 s.
        let now = Timestamp::from_unix_micros(2_500 * 1000);
        let removed = table.remove_expired(now);
        model.retain(|_, e| e.until() > now);
        assert_eq!(removed, 5_000 - model.len());
        assert_eq!(table.len(), model.len());
        for id in &ids {
            assert_eq!(table.get(id), model.get(id).copied());
        }
        let entries: HashMap<_, _> = table.entries().collect();
        assert_eq!(entries, model);
        let smaller = table.rebuilt(model.len(), |_| true);
        assert!(smaller.capacity() <= table.capacity());
        for id in &ids {
            assert_eq!(smaller.get(id), model.get(id).copied());
        }
    }

    #[test]
    fn readers_see_every_present_entry_while_a_writer_moves_entries() {
        let table = std::sync::Arc::new(FamilyTable::with_entries(4_000));
        let stable: Vec<SessionId> = (0..1_000).map(|_| ledger_clock::new_session_id()).collect();
        for id in &stable {
            table
                .upsert(id, revoked(1, RevokeReason::Logout, 1))
                .unwrap();
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (table, stable, stop) = (table.clone(), stable.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rounds = 0;
                while !stop.load(Ordering::Relaxed) || rounds == 0 {
                    for id in &stable {
                        assert!(table.get(id).is_some_and(FamilyEntry::is_revoked));
                    }
                    rounds += 1;
                }
                rounds
            })
        };
        // Churn: insert and delete other keys, which shifts the stable ones around.
        for round in 0..20 {
            let churn: Vec<SessionId> =
                (0..1_500).map(|_| ledger_clock::new_session_id()).collect();
            for id in &churn {
                table.upsert(id, live(round, 1)).unwrap();
            }
            for id in &churn {
                table.remove_key(key_of(id));
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        assert_eq!(table.len(), stable.len());
    }
}
