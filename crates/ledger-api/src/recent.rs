//! Read your own writes: what this instance appended lately, joined over the store's
//! answers so a refresh right after login works before the projector caught up.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ledger_core::{FamilyState, SubjectRevocation};

/// Projected state that only moves forward: two views join into one (D4).
pub(crate) trait Join: Clone {
    fn join(&mut self, other: &Self);
}

impl Join for FamilyState {
    fn join(&mut self, other: &Self) {
        self.merge(other);
    }
}

impl Join for SubjectRevocation {
    fn join(&mut self, other: &Self) {
        self.merge(other);
    }
}

/// Recent writes by key, each trusted for `window` after its last write.
#[derive(Debug)]
pub(crate) struct RecentWrites<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    window: Duration,
    writes: AtomicU64,
}

impl<K: Hash + Eq, V: Join> RecentWrites<K, V> {
    pub(crate) fn new(window: Duration) -> Self {
        RecentWrites {
            entries: Mutex::new(HashMap::new()),
            window,
            writes: AtomicU64::new(0),
        }
    }

    pub(crate) fn remember(&self, key: K, value: V) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .entry(key)
            .and_modify(|(v, at)| {
                v.join(&value);
                *at = now;
            })
            .or_insert((value, now));
        // Amortised clean-up: entries past the window are dead weight.
        if self
            .writes
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(256)
        {
            entries.retain(|_, (_, at)| at.elapsed() < self.window);
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.window)
            .map(|(v, _)| v.clone())
    }

    /// The stored state joined with this instance's recent write of it.
    pub(crate) fn over(&self, key: &K, stored: Option<V>) -> Option<V> {
        match (stored, self.get(key)) {
            (Some(mut s), Some(r)) => {
                s.join(&r);
                Some(s)
            }
            (s, r) => s.or(r),
        }
    }
}
