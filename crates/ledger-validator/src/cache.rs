//! A bounded cache of access tokens whose signature and claims were already verified,
//! keyed by the SHA-256 of the whole token, so a token presented again skips the
//! EdDSA verification. It never caches a revocation answer: only "this exact string
//! is a token we signed, with these claims".

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ledger_core::SessionId;
use ledger_token::AccessClaims;

/// SHA-256 of a token.
pub(crate) type TokenDigest = [u8; 32];

/// Verified claims, and until when they may be reused.
#[derive(Clone, Debug)]
pub(crate) struct Verified {
    pub claims: Arc<AccessClaims>,
    pub session_id: SessionId,
    /// When the token was verified (whole seconds): a clock that went back past it
    /// does not reuse the entry.
    pub verified_at: i64,
    /// The token's `exp`: the entry is not used at or after it (validation proper
    /// then decides, with its leeway).
    pub expires_at: i64,
    /// The key generation it was verified under; key rotation invalidates.
    pub generation: u64,
}

/// Sharded, bounded, expiring map from token digest to verified claims.
#[derive(Debug)]
pub(crate) struct VerifiedCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    generation: AtomicU64,
}

type Shard = HashMap<TokenDigest, Verified, BuildHasherDefault<DigestHasher>>;

const SHARDS: usize = 64;

impl VerifiedCache {
    /// A cache holding at most about `capacity` tokens (0 disables it).
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS);
        VerifiedCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            generation: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.per_shard > 0
    }

    /// The current key generation (read it *before* verifying a token).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Forgets everything (the verification keys changed).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for shard in &self.shards {
            lock(shard).clear();
        }
    }

    /// The verified claims of the token with this digest, if cached and still usable
    /// at `now_s` (seconds).
    pub fn get(&self, digest: &TokenDigest, now_s: i64) -> Option<Verified> {
        if !self.enabled() {
            return None;
        }
        let generation = self.generation();
        let mut shard = lock(&self.shards[shard_of(digest)]);
        let hit = shard.get(digest)?;
        if now_s < hit.expires_at && now_s >= hit.verified_at && hit.generation == generation {
            return Some(hit.clone());
        }
        shard.remove(digest);
        None
    }

    pub fn insert(&self, digest: TokenDigest, verified: Verified) {
        if !self.enabled() || verified.generation != self.generation() {
            return;
        }
        let mut shard = lock(&self.shards[shard_of(&digest)]);
        if shard.len() >= self.per_shard && !shard.contains_key(&digest) {
            let now_s = verified.verified_at;
            shard.retain(|_, v| v.expires_at > now_s);
            if shard.len() >= self.per_shard {
                // Still full of live tokens: drop an arbitrary eighth (the map's
                // order is the digests', i.e. random).
                let drop: Vec<TokenDigest> = shard
                    .keys()
                    .take(self.per_shard.div_ceil(8))
                    .copied()
                    .collect();
                for d in &drop {
                    shard.remove(d);
                }
            }
        }
        shard.insert(digest, verified);
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

fn shard_of(digest: &TokenDigest) -> usize {
    usize::from(digest[31]) % SHARDS
}

/// The keys are SHA-256 digests already: hashing them again is wasted work, so the
/// map uses their first eight bytes.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its bytes (a length prefix may come first: skip it).
        if bytes.len() >= 8 {
            let mut first = [0u8; 8];
            first.copy_from_slice(&bytes[..8]);
            self.0 = u64::from_le_bytes(first);
        }
    }

    fn write_usize(&mut self, _len: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(expires_at: i64, generation: u64) -> Verified {
        Verified {
            claims: Arc::new(AccessClaims {
                iss: "i".into(),
                aud: "a".into(),
                sub: "s".into(),
                sid: ledger_clock::new_session_id().to_string(),
                jti: "j".into(),
                iat: 0,
                exp: expires_at,
                nbf: None,
                client_id: None,
                extra: Default::default(),
            }),
            session_id: ledger_clock::new_session_id(),
            verified_at: 100,
            expires_at,
            generation,
        }
    }

    fn digest(n: u32) -> TokenDigest {
        use sha2::Digest;
        sha2::Sha256::digest(n.to_le_bytes()).into()
    }

    #[test]
    fn entries_are_used_until_exp_and_not_at_it() {
        let cache = VerifiedCache::new(100);
        cache.insert(digest(1), verified(200, 0));
        assert!(cache.get(&digest(1), 150).is_some());
        assert!(cache.get(&digest(1), 199).is_some());
        assert!(cache.get(&digest(1), 200).is_none());
        // And it is gone, not merely skipped.
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_clock_that_went_back_does_not_reuse_an_entry() {
        let cache = VerifiedCache::new(100);
        cache.insert(digest(1), verified(200, 0));
        assert!(cache.get(&digest(1), 99).is_none());
    }

    #[test]
    fn invalidation_drops_entries_and_refuses_late_inserts() {
        let cache = VerifiedCache::new(100);
        let generation = cache.generation();
        cache.insert(digest(1), verified(200, generation));
        cache.invalidate();
        assert!(cache.get(&digest(1), 150).is_none());
        // Verified under the old keys, inserted after the rotation: refused.
        cache.insert(digest(2), verified(200, generation));
        assert!(cache.get(&digest(2), 150).is_none());
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let cache = VerifiedCache::new(640);
        for n in 0..10_000 {
            cache.insert(digest(n), verified(1_000, 0));
        }
        assert!(cache.len() <= cache.capacity(), "{}", cache.len());
        assert!(cache.len() > cache.capacity() / 2, "{}", cache.len());
    }

    #[test]
    fn a_disabled_cache_holds_nothing() {
        let cache = VerifiedCache::new(0);
        cache.insert(digest(1), verified(200, 0));
        assert!(cache.get(&digest(1), 150).is_none());
        assert_eq!(cache.len(), 0);
    }
}
