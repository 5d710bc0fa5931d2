use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use ledger_core::ports::{LogRecord, Position};
use ledger_core::{
    Event, EventKind, FamilyState, Projection, RevocationCheck, RevocationScope, RevokeReason,
    SessionId, Timestamp,
};
use sha2::{Digest, Sha256};

use crate::table::{FamilyEntry, FamilyTable};

/// The answer to "may a token of this family, issued at this time, be accepted?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Active,
    Revoked {
        reason: RevokeReason,
        at: Timestamp,
    },
    /// The view is older than the configured bound: fail closed (I7).
    Stale {
        age: Duration,
    },
}

/// What a view has applied, for `/v1/status` and readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewStatus {
    pub bootstrapped: bool,
    /// Next offset to apply per partition.
    pub positions: Vec<Position>,
    pub lag: Option<u64>,
    /// The last time the view had applied everything in the log.
    pub caught_up_at: Option<Timestamp>,
    /// Families held (live and revoked).
    pub families: usize,
    /// Of those, revoked.
    pub revoked: usize,
    pub subjects: usize,
    /// Heap bytes of the family table (exact) and the subject map (estimated).
    pub heap_bytes: usize,
    /// Why the latest attempt to read the log failed, until a read succeeds again.
    pub tail_error: Option<String>,
}

/// Subject-wide revocations by subject: few, copied on write.
type SubjectMap = HashMap<Box<str>, RevocationCheck>;

/// In-memory revocation state fed by the log (D6), built for lookups on every request.
///
/// It keeps only what [`RevocationView::check`] needs: per family one 32-byte slot
/// (id; the start while live, the revocation instant, reason and expiry once revoked)
/// in a compact open-addressing table, and the few subject-wide revocations in a map.
/// Lookups are lock-free: the table is swapped with `arc-swap` when it grows or
/// shrinks, and readers validate each probe with a sequence counter instead of taking
/// a lock. Writes (the feeder, `bootstrap`, `prune`) are serialised by a writer lock
/// that readers never touch.
///
/// Entries expire by D5: a family's entry goes once no token it governs can be
/// accepted (`retain_until` / `keep_until`, rounded up to the millisecond), at the
/// next [`RevocationView::prune`]; events whose entry already expired are not stored.
///
/// **Invariant**: only moves forward (entries are joined, as in the projection), so a
/// feeder may apply overlapping or duplicated batches.
#[derive(Debug)]
pub struct RevocationView {
    families: ArcSwap<FamilyTable>,
    subjects: ArcSwap<SubjectMap>,
    /// Whether `subjects` is non-empty: lets `check` skip it on the common path.
    any_subjects: AtomicBool,
    /// Serialises writers; readers never take it.
    writer: Mutex<()>,
    max_staleness: Duration,
    bootstrapped: AtomicBool,
    caught_up_at: AtomicI64,
    lag: AtomicU64,
    positions: Mutex<Vec<Position>>,
    tail_error: Mutex<Option<String>>,
}

/// One thread's handle on a [`RevocationView`], for the hottest loops.
///
/// [`RevocationView::check`] takes an `arc-swap` guard per call, whose two atomic
/// read-modify-writes also stop the CPU from overlapping one lookup's cache miss with
/// the next. A reader instead keeps the current table and only re-reads the pointer
/// (a plain load) on each check, so a thread's lookups are nothing but loads. It
/// answers exactly like the view. Keep one per thread; an idle reader keeps the table
/// it last saw alive (after the view swapped in a bigger one) until its next check or
/// until it is dropped.
pub struct ViewReader<'a> {
    view: &'a RevocationView,
    families: arc_swap::Cache<&'a ArcSwap<FamilyTable>, Arc<FamilyTable>>,
}

impl std::fmt::Debug for ViewReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewReader").finish_non_exhaustive()
    }
}

impl ViewReader<'_> {
    /// [`RevocationView::check`], through this thread's cached table pointer.
    pub fn check(
        &mut self,
        session_id: SessionId,
        subject: &str,
        issued_at: Timestamp,
        now: Timestamp,
    ) -> Verdict {
        let table = self.families.load();
        self.view
            .check_in(table, session_id, subject, issued_at, now)
    }
}

/// What one event changes in the view.
enum Change<'a> {
    Family(SessionId, FamilyEntry),
    Subject(&'a str, RevocationCheck),
}

impl RevocationView {
    pub fn new(max_staleness: Duration) -> Self {
        RevocationView {
            families: ArcSwap::from_pointee(FamilyTable::with_entries(0)),
            subjects: ArcSwap::from_pointee(SubjectMap::new()),
            any_subjects: AtomicBool::new(false),
            writer: Mutex::new(()),
            max_staleness,
            bootstrapped: AtomicBool::new(false),
            caught_up_at: AtomicI64::new(i64::MIN),
            lag: AtomicU64::new(u64::MAX),
            positions: Mutex::new(Vec::new()),
            tail_error: Mutex::new(None),
        }
    }

    /// Whether a token of family `session_id`, for `subject`, issued at `issued_at`,
    /// is still good as far as revocation goes. Lock-free; allocation-free.
    ///
    /// `subject` is the token's `sub`: a subject-wide revocation covers the family
    /// when the family started at or before it (judged by the token's issue time when
    /// the family is not known yet).
    pub fn check(
        &self,
        session_id: SessionId,
        subject: &str,
        issued_at: Timestamp,
        now: Timestamp,
    ) -> Verdict {
        self.check_in(&self.families.load(), session_id, subject, issued_at, now)
    }

    /// A handle for one thread's lookups that skips even `arc-swap`'s guard: see
    /// [`ViewReader`].
    pub fn reader(&self) -> ViewReader<'_> {
        ViewReader {
            view: self,
            families: arc_swap::Cache::new(&self.families),
        }
    }

    fn check_in(
        &self,
        table: &FamilyTable,
        session_id: SessionId,
        subject: &str,
        issued_at: Timestamp,
        now: Timestamp,
    ) -> Verdict {
        if let Some(age) = self.staleness(now) {
            return Verdict::Stale { age };
        }
        // The common case: not revoked by itself (the filter proves it without
        // touching the table) and no subject-wide revocation of this subject.
        if !table.maybe_revoked(&session_id) && self.subject_revocation(subject).is_none() {
            return Verdict::Active;
        }
        let started_at = match table.get(&session_id) {
            Some(FamilyEntry::Revoked { at, reason, .. }) => {
                return Verdict::Revoked { reason, at };
            }
            Some(FamilyEntry::Live { started_at, .. }) => started_at,
            None => issued_at,
        };
        match self.subject_revocation(subject) {
            Some(r) if started_at <= r.at => Verdict::Revoked {
                reason: r.reason,
                at: r.at,
            },
            _ => Verdict::Active,
        }
    }

    /// The family's own revocation entry, if it is revoked.
    ///
    /// A subject-wide revocation is not seen here (the view does not keep each
    /// family's subject); [`RevocationView::revocation_for`] takes the subject.
    pub fn revocation(&self, session_id: SessionId) -> Option<RevocationCheck> {
        match self.families.load().get(&session_id)? {
            FamilyEntry::Revoked {
                at,
                reason,
                keep_until,
            } => Some(RevocationCheck {
                at,
                reason,
                keep_until,
            }),
            FamilyEntry::Live { .. } => None,
        }
    }

    /// The revocation that applies to a known family of `subject`: its own, or a
    /// subject-wide one that covers it.
    pub fn revocation_for(&self, session_id: SessionId, subject: &str) -> Option<RevocationCheck> {
        match self.families.load().get(&session_id)? {
            FamilyEntry::Revoked {
                at,
                reason,
                keep_until,
            } => Some(RevocationCheck {
                at,
                reason,
                keep_until,
            }),
            FamilyEntry::Live { started_at, .. } => self
                .subject_revocation(subject)
                .filter(|r| started_at <= r.at),
        }
    }

    /// A subject-wide revocation of `subject`, if any.
    pub fn subject_revocation(&self, subject: &str) -> Option<RevocationCheck> {
        if !self.any_subjects.load(Ordering::Acquire) {
            return None;
        }
        self.subjects.load().get(subject).copied()
    }

    /// What the view holds about a family.
    pub fn family(&self, session_id: SessionId) -> Option<FamilyEntry> {
        self.families.load().get(&session_id)
    }

    /// `Some(age)` when the view is older than the bound (or was never caught up).
    pub fn staleness(&self, now: Timestamp) -> Option<Duration> {
        let at = self.caught_up_at.load(Ordering::Acquire);
        if at == i64::MIN {
            return Some(Duration::MAX);
        }
        let age = now.duration_since(Timestamp::from_unix_micros(at));
        (age > self.max_staleness).then_some(age)
    }

    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// Merges a snapshot from the store in (bootstrap).
    pub fn bootstrap(&self, snapshot: Projection) {
        let _writer = self.write_lock();
        let now = ledger_clock::now();
        let mut table = self.families.load_full();
        let needed = table.len() + snapshot.families().len();
        if !table.fits(needed) {
            table = self.publish(table.rebuilt(needed, |_| true));
        }
        for family in snapshot.families() {
            self.upsert(&mut table, family.session_id, entry_of_state(family), now);
        }
        if !snapshot.is_empty() {
            let mut subjects = (**self.subjects.load()).clone();
            for s in snapshot.subjects() {
                merge_subject(
                    &mut subjects,
                    s.subject.as_str(),
                    RevocationCheck {
                        at: s.revoked_at,
                        reason: s.reason,
                        keep_until: s.keep_until,
                    },
                );
            }
            self.publish_subjects(subjects);
        }
        self.bootstrapped.store(true, Ordering::Release);
    }

    /// Applies records read from the log; `lag` is what the reader still has to read,
    /// `caught_up_at` the reader's proof ([`LogReader::caught_up_at`]): the view holds
    /// every event acknowledged before it once these records are applied. Neither an
    /// empty batch nor a zero lag counts: only that proof keeps the view fresh.
    ///
    /// [`LogReader::caught_up_at`]: ledger_core::ports::LogReader::caught_up_at
    pub fn apply(
        &self,
        records: &[LogRecord],
        positions: Vec<Position>,
        lag: Option<u64>,
        caught_up_at: Option<Timestamp>,
    ) {
        self.apply_events(records.iter().map(|r| &r.event));
        *self.positions.lock().unwrap_or_else(|p| p.into_inner()) = positions;
        self.lag.store(lag.unwrap_or(u64::MAX), Ordering::Relaxed);
        if let Some(at) = caught_up_at {
            // Only forward: the records are applied before the instant is published.
            self.caught_up_at
                .fetch_max(at.unix_micros(), Ordering::AcqRel);
        }
    }

    /// Folds events in (without moving the applied positions). Idempotent and
    /// order-insensitive, like [`Projection::apply`].
    pub fn apply_events<'a>(&self, events: impl IntoIterator<Item = &'a Event>) {
        let mut events = events.into_iter().peekable();
        if events.peek().is_none() {
            return;
        }
        let _writer = self.write_lock();
        let now = ledger_clock::now();
        let mut table = self.families.load_full();
        let mut subjects: Option<SubjectMap> = None;
        for event in events {
            match change_of(event) {
                Some(Change::Family(id, entry)) => self.upsert(&mut table, id, entry, now),
                Some(Change::Subject(subject, r)) => merge_subject(
                    subjects.get_or_insert_with(|| (**self.subjects.load()).clone()),
                    subject,
                    r,
                ),
                None => {}
            }
        }
        if let Some(subjects) = subjects {
            self.publish_subjects(subjects);
        }
    }

    /// Joins one family entry in; grows the table (a new one, swapped in) when full.
    fn upsert(
        &self,
        table: &mut Arc<FamilyTable>,
        id: SessionId,
        entry: FamilyEntry,
        now: Timestamp,
    ) {
        // Nothing it governs can be accepted any more: not worth a slot (D5).
        if entry.until() <= now && table.get(&id).is_none() {
            return;
        }
        while table.upsert(&id, entry).is_err() {
            let grown = table.rebuilt(table.len() + 1, |_| true);
            *table = self.publish(grown);
        }
    }

    fn publish(&self, table: FamilyTable) -> Arc<FamilyTable> {
        let table = Arc::new(table);
        self.families.store(table.clone());
        table
    }

    fn publish_subjects(&self, subjects: SubjectMap) {
        let any = !subjects.is_empty();
        self.subjects.store(Arc::new(subjects));
        self.any_subjects.store(any, Ordering::Release);
    }

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops entries past retention (D5); returns how many went.
    pub fn prune(&self, now: Timestamp) -> usize {
        let _writer = self.write_lock();
        let table = self.families.load_full();
        let expired = table.entries().filter(|(_, e)| e.until() <= now).count();
        if expired > 0 {
            let left = table.len() - expired;
            if expired > table.len() / 4 || !table.dense_enough(left) {
                // Cheaper to copy what stays than to delete one by one.
                self.publish(table.rebuilt(left, |e| e.until() > now));
            } else {
                table.remove_expired(now);
            }
        }
        let subjects = self.subjects.load_full();
        let mut kept = (*subjects).clone();
        kept.retain(|_, r| r.keep_until > now);
        let gone = subjects.len() - kept.len();
        if gone > 0 {
            self.publish_subjects(kept);
        }
        expired + gone
    }

    pub fn status(&self) -> ViewStatus {
        let table = self.families.load();
        let at = self.caught_up_at.load(Ordering::Acquire);
        let lag = self.lag.load(Ordering::Relaxed);
        ViewStatus {
            bootstrapped: self.bootstrapped.load(Ordering::Acquire),
            positions: self
                .positions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            lag: (lag != u64::MAX).then_some(lag),
            caught_up_at: (at != i64::MIN).then(|| Timestamp::from_unix_micros(at)),
            families: table.len(),
            revoked: table.revoked(),
            subjects: self.subjects.load().len(),
            heap_bytes: self.heap_bytes(),
            tail_error: self
                .tail_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Records why reading the log failed (`None` once a read succeeded), for
    /// `/v1/status`.
    pub fn set_tail_error(&self, error: Option<String>) {
        *self.tail_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// Heap bytes held: the family table exactly (`capacity × 32`), the subject map
    /// estimated (hashbrown buckets plus the subject strings).
    pub fn heap_bytes(&self) -> usize {
        let subjects = self.subjects.load();
        let bucket = std::mem::size_of::<(Box<str>, RevocationCheck)>() + 1;
        self.families.load().heap_bytes()
            + subjects.capacity() * bucket
            + subjects.keys().map(|k| k.len()).sum::<usize>()
    }

    /// A hex SHA-256 of what the view holds (families in id order, then subjects), to
    /// compare two views, e.g. a live one with one built by replay.
    pub fn digest(&self) -> String {
        let _writer = self.write_lock();
        let mut families: Vec<(SessionId, FamilyEntry)> = self.families.load().entries().collect();
        families.sort_unstable_by_key(|(id, _)| *id);
        let mut subjects: Vec<(Box<str>, RevocationCheck)> = self
            .subjects
            .load()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        subjects.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut h = Sha256::new();
        for (id, e) in families {
            h.update(id.as_bytes());
            let (kind, time, until, reason) = match e {
                FamilyEntry::Live {
                    started_at,
                    retain_until,
                } => (0u8, started_at, retain_until, 0u8),
                FamilyEntry::Revoked {
                    at,
                    reason,
                    keep_until,
                } => (1, at, keep_until, reason as u8 + 1),
            };
            h.update([kind, reason]);
            h.update(time.unix_micros().to_be_bytes());
            h.update(until.unix_micros().to_be_bytes());
        }
        for (subject, r) in subjects {
            h.update((subject.len() as u64).to_be_bytes());
            h.update(subject.as_bytes());
            h.update([r.reason as u8]);
            h.update(r.at.unix_micros().to_be_bytes());
            h.update(r.keep_until.unix_micros().to_be_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What an event changes; mirrors `FamilyState::from_event` and
/// `SubjectRevocation::from_event` without building either.
fn change_of(event: &Event) -> Option<Change<'_>> {
    match &event.kind {
        EventKind::SessionIssued(e) => Some(Change::Family(
            event.session_id?,
            FamilyEntry::Live {
                started_at: e.session.started_at,
                retain_until: e.retain_until,
            },
        )),
        EventKind::SessionRefreshed(e) => Some(Change::Family(
            event.session_id?,
            FamilyEntry::Live {
                started_at: e.session.started_at,
                retain_until: e.retain_until,
            },
        )),
        EventKind::SessionRevokedAll(e) => match e.scope {
            RevocationScope::Family => {
                e.session?;
                Some(Change::Family(
                    event.session_id?,
                    FamilyEntry::Revoked {
                        at: e.revoked_at,
                        reason: e.reason,
                        keep_until: e.keep_until,
                    },
                ))
            }
            RevocationScope::Subject => Some(Change::Subject(
                event.subject.as_str(),
                RevocationCheck {
                    at: e.revoked_at,
                    reason: e.reason,
                    keep_until: e.keep_until,
                },
            )),
        },
    }
}

fn entry_of_state(family: &FamilyState) -> FamilyEntry {
    match &family.revoked {
        Some(r) => FamilyEntry::Revoked {
            at: r.at,
            reason: r.reason,
            keep_until: r.keep_until.max(family.retain_until),
        },
        None => FamilyEntry::Live {
            started_at: family.window.started_at,
            retain_until: family.retain_until,
        },
    }
}

/// The join of subject-wide revocations (as `SubjectRevocation::merge`).
fn merge_subject(subjects: &mut SubjectMap, subject: &str, r: RevocationCheck) {
    match subjects.get_mut(subject) {
        Some(existing) => {
            if (r.at, r.reason) > (existing.at, existing.reason) {
                existing.at = r.at;
                existing.reason = r.reason;
            }
            existing.keep_until = existing.keep_until.max(r.keep_until);
        }
        None => {
            subjects.insert(subject.into(), r);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ledger_core::{
        Command, DecideContext, Event, Policy, RevokeReason, SessionId, Subject, Timestamp, decide,
        decide_subject_revoke,
    };

    use super::{RevocationView, Verdict};

    use ledger_core::testing::records;

    fn login_and_logout(now: Timestamp) -> (SessionId, Vec<Event>) {
        ledger_core::testing::login_and_logout("alice", now)
    }

    #[test]
    fn a_view_that_never_caught_up_fails_closed() {
        let view = RevocationView::new(Duration::from_secs(5));
        let now = ledger_clock::now();
        let verdict = view.check(ledger_clock::new_session_id(), "alice", now, now);
        assert!(matches!(verdict, Verdict::Stale { .. }), "{verdict:?}");
    }

    #[test]
    fn an_empty_poll_or_a_zero_lag_does_not_make_a_view_fresh() {
        let view = RevocationView::new(Duration::from_secs(5));
        let now = ledger_clock::now();
        let (id, events) = login_and_logout(now);
        view.bootstrap(ledger_core::Projection::new());
        // A reader cut off from the log returns nothing and may report a stale lag.
        view.apply(&[], vec![], Some(0), None);
        view.apply(&records(&events[..1]), vec![], Some(0), None);
        let verdict = view.check(id, "alice", now, now);
        assert!(matches!(verdict, Verdict::Stale { .. }), "{verdict:?}");
        // A proof older than the bound keeps it stale.
        let old = Timestamp::from_unix_micros(now.unix_micros() - 6_000_000);
        view.apply(&[], vec![], Some(0), Some(old));
        let verdict = view.check(id, "alice", now, now);
        assert!(matches!(verdict, Verdict::Stale { .. }), "{verdict:?}");
        // A fresh proof, after the records it covers, makes it answer; it never moves back.
        view.apply(&records(&events[1..]), vec![], Some(0), Some(now));
        view.apply(&[], vec![], Some(0), Some(old));
        let verdict = view.check(id, "alice", now, now);
        assert!(matches!(verdict, Verdict::Revoked { .. }), "{verdict:?}");
    }

    #[test]
    fn a_view_older_than_the_bound_fails_closed_and_says_how_old() {
        let view = RevocationView::new(Duration::from_secs(5));
        let now = ledger_clock::now();
        let (id, events) = login_and_logout(now);
        view.apply(
            &records(&events[..1]),
            vec![],
            Some(0),
            Some(ledger_clock::now()),
        );
        assert_eq!(view.check(id, "alice", now, now), Verdict::Active);
        let later = now.saturating_add(Duration::from_secs(6));
        match view.check(id, "alice", now, later) {
            Verdict::Stale { age } => assert!(age >= Duration::from_secs(5), "{age:?}"),
            other => panic!("expected stale, got {other:?}"),
        }
    }

    #[test]
    fn revocations_apply_and_duplicates_are_harmless() {
        let view = RevocationView::new(Duration::from_secs(5));
        let now = ledger_clock::now();
        let (id, events) = login_and_logout(now);
        let all = records(&events);
        view.apply(&all, vec![], Some(0), Some(ledger_clock::now()));
        view.apply(&all, vec![], Some(0), Some(ledger_clock::now()));
        match view.check(id, "alice", now, now) {
            Verdict::Revoked { reason, .. } => assert_eq!(reason, RevokeReason::Logout),
            other => panic!("expected revoked, got {other:?}"),
        }
        assert!(view.revocation(id).is_some());
    }

    #[test]
    fn a_subject_revocation_covers_unknown_families_issued_before_it() {
        let view = RevocationView::new(Duration::from_secs(5));
        let now = ledger_clock::now();
        let policy = Policy::default();
        let ctx = DecideContext {
            now,
            policy: &policy,
            region: "t",
            trace_context: None,
            event_id: ledger_clock::new_event_id(),
        };
        let event =
            decide_subject_revoke(Subject::parse("bob").unwrap(), RevokeReason::Admin, &ctx);
        view.apply(
            &records(&[event]),
            vec![],
            Some(0),
            Some(ledger_clock::now()),
        );
        let before = now.saturating_sub(Duration::from_secs(1));
        let after = now.saturating_add(Duration::from_secs(1));
        let unknown = ledger_clock::new_session_id();
        assert!(matches!(
            view.check(unknown, "bob", before, now),
            Verdict::Revoked { .. }
        ));
        assert_eq!(view.check(unknown, "bob", after, now), Verdict::Active);
        assert_eq!(view.check(unknown, "carol", before, now), Verdict::Active);
    }

    /// Histories of a few families of two subjects: logins, refreshes, signouts,
    /// reuse, and a subject-wide revocation in the middle.
    fn histories(now: Timestamp, seed: u64) -> Vec<Event> {
        let policy = Policy::default();
        let mut rng = seed | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut projection = ledger_core::Projection::new();
        let mut all = Vec::new();
        let mut ids = Vec::new();
        for step in 0..40u64 {
            let ctx = DecideContext {
                now: now.saturating_add(Duration::from_millis(step)),
                policy: &policy,
                region: "t",
                trace_context: None,
                event_id: ledger_clock::new_event_id(),
            };
            let subject = if next() % 2 == 0 { "alice" } else { "bob" };
            let command = match next() % 6 {
                0 | 1 => {
                    let id = ledger_clock::new_session_id();
                    ids.push(id);
                    Command::Open {
                        session_id: id,
                        subject: Subject::parse(subject).unwrap(),
                        client_id: None,
                        claims: Default::default(),
                        access_jti: format!("j{step}"),
                    }
                }
                2 | 3 if !ids.is_empty() => {
                    let id = ids[(next() % ids.len() as u64) as usize];
                    let head = projection
                        .family(&id)
                        .and_then(|f| f.head)
                        .map(|h| h.generation)
                        .unwrap_or_default();
                    let presented = if next() % 4 == 0 {
                        head.previous().unwrap_or(head)
                    } else {
                        head
                    };
                    Command::Refresh {
                        session_id: id,
                        presented,
                        access_jti: format!("j{step}"),
                    }
                }
                4 if !ids.is_empty() => Command::Revoke {
                    session_id: ids[(next() % ids.len() as u64) as usize],
                    reason: RevokeReason::Logout,
                },
                5 if step == 20 => {
                    let e = decide_subject_revoke(
                        Subject::parse(subject).unwrap(),
                        RevokeReason::Admin,
                        &ctx,
                    );
                    projection.apply(&e);
                    all.push(e);
                    continue;
                }
                _ => continue,
            };
            let (family, subject_revocation) = match &command {
                Command::Open { .. } => (None, None),
                Command::Refresh { session_id, .. } | Command::Revoke { session_id, .. } => {
                    let f = projection.family(session_id);
                    (f, f.and_then(|f| projection.subject_revocation(&f.subject)))
                }
            };
            if let Ok(events) = decide(family, subject_revocation, command, &ctx) {
                for e in &events {
                    projection.apply(e);
                }
                all.extend(events);
            }
        }
        all
    }

    #[test]
    fn any_order_with_duplicates_gives_the_same_view_and_the_projection_answers() {
        let now = ledger_clock::now();
        for seed in 1..40u64 {
            let events = histories(now, seed);
            let mut projection = ledger_core::Projection::new();
            for e in &events {
                projection.apply(e);
            }
            let in_order = RevocationView::new(Duration::from_secs(60));
            in_order.apply(
                &records(&events),
                vec![],
                Some(0),
                Some(ledger_clock::now()),
            );

            // Reversed, every third event twice, in two batches.
            let mut shuffled: Vec<Event> = events.iter().rev().cloned().collect();
            shuffled.extend(events.iter().step_by(3).cloned());
            let (a, b) = shuffled.split_at(shuffled.len() / 2);
            let other = RevocationView::new(Duration::from_secs(60));
            other.apply(&records(b), vec![], None, None);
            other.apply(&records(a), vec![], Some(0), Some(ledger_clock::now()));
            assert_eq!(in_order.digest(), other.digest(), "seed {seed}");

            // Bootstrapping from the projection gives the same view again.
            let booted = RevocationView::new(Duration::from_secs(60));
            booted.bootstrap(projection.clone());
            booted.apply(&[], vec![], Some(0), Some(ledger_clock::now()));
            assert_eq!(in_order.digest(), booted.digest(), "seed {seed}");

            for family in projection.families() {
                let expected = ledger_core::RevocationCheck::of(
                    family,
                    projection.subject_revocation(&family.subject),
                );
                let got = in_order.check(
                    family.session_id,
                    family.subject.as_str(),
                    family.window.started_at,
                    now,
                );
                match (expected, got) {
                    (None, Verdict::Active) => {}
                    (Some(e), Verdict::Revoked { reason, at }) => {
                        assert_eq!((e.reason, e.at), (reason, at), "seed {seed}");
                    }
                    (e, g) => panic!("seed {seed}: projection says {e:?}, view says {g:?}"),
                }
                assert_eq!(
                    in_order
                        .revocation_for(family.session_id, family.subject.as_str())
                        .map(|r| (r.at, r.reason)),
                    expected.map(|r| (r.at, r.reason))
                );
            }
            let status = in_order.status();
            assert_eq!(status.families, projection.families().len());
            assert_eq!(status.subjects, projection.subjects().len());
        }
    }

    #[test]
    fn pruning_drops_exactly_the_entries_past_their_expiry() {
        let now = ledger_clock::now();
        let view = RevocationView::new(Duration::from_secs(5));
        let (id, events) = login_and_logout(now);
        view.apply(
            &records(&events),
            vec![],
            Some(0),
            Some(ledger_clock::now()),
        );
        let keep_until = view.revocation(id).unwrap().keep_until;
        assert_eq!(
            view.prune(keep_until.saturating_sub(Duration::from_millis(1))),
            0
        );
        assert!(view.revocation(id).is_some());
        assert_eq!(view.prune(keep_until), 1);
        assert!(view.family(id).is_none());
        assert_eq!(view.status().families, 0);
    }

    #[test]
    fn many_families_grow_and_shrink_the_table_and_stay_compact() {
        let now = ledger_clock::now();
        let view = RevocationView::new(Duration::from_secs(5));
        let mut ids = Vec::new();
        let mut events = Vec::new();
        for _ in 0..20_000 {
            let (id, e) = login_and_logout(now);
            ids.push(id);
            events.extend(e);
        }
        view.apply(
            &records(&events),
            vec![],
            Some(0),
            Some(ledger_clock::now()),
        );
        let status = view.status();
        assert_eq!((status.families, status.revoked), (20_000, 20_000));
        assert!(status.heap_bytes <= 64 * 20_000, "{}", status.heap_bytes);
        assert!(ids.iter().all(|id| view.revocation(*id).is_some()));
        let far = now.saturating_add(Duration::from_secs(400 * 24 * 3600));
        assert_eq!(view.prune(far), 20_000);
        assert!(view.status().heap_bytes < 64 * 1_000);
    }

    #[test]
    fn a_reader_answers_like_the_view_across_table_swaps() {
        let now = ledger_clock::now();
        let view = RevocationView::new(Duration::from_secs(5));
        let mut reader = view.reader();
        let (first, events) = login_and_logout(now);
        view.apply(
            &records(&events),
            vec![],
            Some(0),
            Some(ledger_clock::now()),
        );
        assert!(matches!(
            reader.check(first, "alice", now, now),
            Verdict::Revoked { .. }
        ));
        // Enough families to grow (and so swap) the table several times.
        let mut events = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..2_000 {
            let (id, e) = login_and_logout(now);
            ids.push(id);
            events.extend(e);
        }
        view.apply(
            &records(&events),
            vec![],
            Some(0),
            Some(ledger_clock::now()),
        );
        for id in ids.iter().chain([&first]) {
            assert_eq!(
                reader.check(*id, "alice", now, now),
                view.check(*id, "alice", now, now)
            );
            assert!(matches!(
                reader.check(*id, "alice", now, now),
                Verdict::Revoked { .. }
            ));
        }
        assert_eq!(
            reader.check(ledger_clock::new_session_id(), "alice", now, now),
            Verdict::Active
        );
    }
}
