//! Rows 1 and 2: revocation lookups in-process, and full validations (EdDSA
//! signature, claims, revocation) with and without the cache of verified tokens.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ledger_core::{
    EVENT_SCHEMA_VERSION, Event, EventKind, Generation, RevocationScope, RevokeReason, SessionId,
    SessionIssued, SessionRevokedAll, SessionWindow, Subject, Timestamp,
};
use ledger_token::{AccessTokenIssuer, AccessTokenValidator, MintAccess, SigningKeys};
use ledger_validator::{Introspection, Introspector, RevocationView, Verdict};

use crate::ALLOCATOR;
use crate::report::progress;

/// A view holding `revoked` revoked families, and what it cost.
#[derive(Debug)]
pub struct Population {
    pub view: Arc<RevocationView>,
    pub revoked: Vec<SessionId>,
    /// Bytes the allocator handed out for the view and kept (counted).
    pub counted_bytes: usize,
    /// Heap bytes the view reports for itself (exact size accounting).
    pub accounted_bytes: usize,
    pub build: Duration,
}

pub const SUBJECTS: usize = 10_000;

pub fn subject(i: usize) -> String {
    format!("user-{}", i % SUBJECTS)
}

/// A family-scope signout event, as the API appends it.
pub fn revocation_event(id: SessionId, subject: &str, now: Timestamp) -> Event {
    Event {
        event_id: ledger_clock::new_event_id(),
        schema_version: EVENT_SCHEMA_VERSION,
        session_id: Some(id),
        subject: Subject::parse(subject).expect("bench subjects (`user-<n>`) are valid"),
        generation: Some(Generation::INITIAL),
        occurred_at: now,
        region: "bench".into(),
        trace_context: None,
        kind: EventKind::SessionRevokedAll(SessionRevokedAll {
            scope: RevocationScope::Family,
            reason: RevokeReason::Logout,
            revoked_at: now,
            keep_until: now.saturating_add(Duration::from_secs(3600)),
            session: Some(SessionWindow {
                started_at: now.saturating_sub(Duration::from_secs(60)),
                expires_at: now.saturating_add(Duration::from_secs(30 * 86_400)),
            }),
            replayed_generation: None,
            replayed_rotated_at: None,
        }),
    }
}

/// Builds a caught-up view of `n` revoked families through the feeder's entry point
/// (`apply` of log events), counting what the allocator kept.
pub fn populate(n: usize, now: Timestamp) -> Population {
    progress(&format!("building a view of {n} revoked families"));
    let revoked: Vec<SessionId> = (0..n).map(|_| ledger_clock::new_session_id()).collect();
    let started = Instant::now();
    let before = ALLOCATOR.allocated();
    let view = Arc::new(RevocationView::new(Duration::from_secs(3600)));
    for (c, chunk) in revoked.chunks(100_000).enumerate() {
        let events: Vec<Event> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| revocation_event(*id, &subject(c * 100_000 + i), now))
            .collect();
        view.apply_events(&events);
    }
    view.apply(&[], vec![], Some(0), Some(ledger_clock::now()));
    let counted_bytes = ALLOCATOR.allocated().saturating_sub(before);
    let build = started.elapsed();
    let accounted_bytes = view.heap_bytes();
    progress(&format!(
        "view of {n} revoked families built in {build:?}: {counted_bytes} bytes counted, {accounted_bytes} accounted"
    ));
    Population {
        view,
        revoked,
        counted_bytes,
        accounted_bytes,
        build,
    }
}

/// A login event of a live family.
fn login_event(id: SessionId, subject: &str, now: Timestamp) -> Event {
    let later = |s| now.saturating_add(Duration::from_secs(s));
    Event {
        event_id: ledger_clock::new_event_id(),
        schema_version: EVENT_SCHEMA_VERSION,
        session_id: Some(id),
        subject: Subject::parse(subject).expect("bench subjects (`user-<n>`) are valid"),
        generation: Some(Generation::INITIAL),
        occurred_at: now,
        region: "bench".into(),
        trace_context: None,
        kind: EventKind::SessionIssued(SessionIssued {
            client_id: Some("bench".into()),
            claims: Default::default(),
            session: SessionWindow {
                started_at: now,
                expires_at: later(30 * 86_400),
            },
            access_jti: ledger_clock::new_event_id().to_string(),
            access_expires_at: later(900),
            refresh_expires_at: later(86_400),
            retain_until: later(86_400 + 40),
        }),
    }
}

/// The memory a view keeps per family on a realistic mix: `n` families, one in
/// `one_revoked_in` signed out, the others live (the view keeps both: a live entry
/// anchors subject-wide revocations). Returns (bytes counted by the allocator,
/// revoked families).
pub fn mixed_memory(n: usize, one_revoked_in: usize, now: Timestamp) -> (usize, usize) {
    progress(&format!(
        "building a view of {n} families, one in {one_revoked_in} revoked"
    ));
    let before = ALLOCATOR.allocated();
    let view = RevocationView::new(Duration::from_secs(3600));
    let mut revoked = 0;
    for start in (0..n).step_by(100_000) {
        let events: Vec<Event> = (start..(start + 100_000).min(n))
            .map(|i| {
                let id = ledger_clock::new_session_id();
                if i % one_revoked_in == 0 {
                    revoked += 1;
                    revocation_event(id, &subject(i), now)
                } else {
                    login_event(id, &subject(i), now)
                }
            })
            .collect();
        view.apply_events(&events);
    }
    view.apply(&[], vec![], Some(0), Some(ledger_clock::now()));
    let counted = ALLOCATOR.allocated().saturating_sub(before);
    drop(view);
    (counted, revoked)
}

/// What one lookup asks: a family, its subject's index.
#[derive(Clone, Copy, Debug)]
pub struct Query {
    pub id: SessionId,
    pub subject: u32,
}

/// One in `one_in` of revoked families, the others of families the view never heard
/// of (active tokens).
pub fn queries(population: &Population, n: usize, one_in: usize) -> Vec<Query> {
    let mut rng = 0x2545_F491_4F6C_DD1D_u64;
    (0..n)
        .map(|i| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let id = if i % one_in == 0 && !population.revoked.is_empty() {
                population.revoked[(rng % population.revoked.len() as u64) as usize]
            } else {
                ledger_clock::new_session_id()
            };
            Query {
                id,
                subject: (rng % SUBJECTS as u64) as u32,
            }
        })
        .collect()
}

#[derive(Debug)]
pub struct Throughput {
    pub operations: u64,
    pub elapsed: Duration,
    pub threads: usize,
    /// How many answers said revoked (a sanity check: about half).
    pub revoked: u64,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }

    pub fn per_core(&self) -> f64 {
        self.per_second() / self.threads as f64
    }
}

/// `RevocationView::check` (`shared`) or a `ViewReader` per thread on `threads`
/// threads for `seconds`.
pub fn lookups(
    view: &RevocationView,
    queries: &[Query],
    threads: usize,
    seconds: f64,
    shared: bool,
) -> Throughput {
    let subjects: Vec<String> = (0..SUBJECTS).map(subject).collect();
    let now = ledger_clock::now();
    let issued_at = now.saturating_sub(Duration::from_secs(10));
    let total = AtomicU64::new(0);
    let revoked = AtomicU64::new(0);
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (total, revoked, subjects) = (&total, &revoked, &subjects);
            s.spawn(move || {
                let mut i = t * queries.len() / threads;
                let (mut done, mut bad) = (0u64, 0u64);
                let mut reader = view.reader();
                let begun = Instant::now();
                while begun.elapsed() < budget {
                    for _ in 0..4096 {
                        let q = queries[i];
                        let subject = &subjects[q.subject as usize];
                        let v = if shared {
                            view.check(q.id, subject, issued_at, now)
                        } else {
                            reader.check(q.id, subject, issued_at, now)
                        };
                        bad +=
                            u64::from(matches!(std::hint::black_box(v), Verdict::Revoked { .. }));
                        i += 1;
                        if i == queries.len() {
                            i = 0;
                        }
                    }
                    done += 4096;
                }
                total.fetch_add(done, Ordering::Relaxed);
                revoked.fetch_add(bad, Ordering::Relaxed);
            });
        }
    });
    Throughput {
        operations: total.into_inner(),
        elapsed: started.elapsed(),
        threads,
        revoked: revoked.into_inner(),
    }
}

/// Access tokens signed like the API's, with their `jti`.
#[derive(Debug)]
pub struct Tokens {
    pub validator: AccessTokenValidator,
    /// (token, jti, whether its family is revoked)
    pub tokens: Vec<(String, String, bool)>,
}

pub const ISSUER: &str = "https://ledger.bench";
pub const AUDIENCE: &str = "resource-servers";

/// Mints `n` tokens on `threads` threads: half of revoked families, half of live ones.
pub fn mint(population: &Population, n: usize, threads: usize) -> Tokens {
    progress(&format!("minting {n} access tokens"));
    let keys = SigningKeys::generate();
    let validator = AccessTokenValidator::new(
        keys.verification_keys(),
        ISSUER,
        AUDIENCE,
        Duration::from_secs(10),
    );
    let issuer = AccessTokenIssuer::new(keys, ISSUER, AUDIENCE);
    let now = ledger_clock::now();
    let per_thread = n.div_ceil(threads.max(1));
    let mut tokens = Vec::with_capacity(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let issuer = &issuer;
                s.spawn(move || {
                    let extra =
                        serde_json::Map::from_iter([("scope".to_owned(), "orders:read".into())]);
                    (t * per_thread..((t + 1) * per_thread).min(n))
                        .map(|i| {
                            let revoked = i % 2 == 0 && !population.revoked.is_empty();
                            let id = if revoked {
                                population.revoked[i / 2 % population.revoked.len()]
                            } else {
                                ledger_clock::new_session_id()
                            };
                            let jti = ledger_clock::new_session_id().to_string();
                            let sub = Subject::parse(subject(i))
                                .expect("bench subjects (`user-<n>`) are valid");
                            let token = issuer.mint(&MintAccess {
                                subject: &sub,
                                session_id: id,
                                jti: &jti,
                                issued_at: now,
                                expires_at: now.saturating_add(Duration::from_secs(900)),
                                client_id: Some("bench"),
                                extra: &extra,
                            });
                            (token, jti, revoked)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            tokens.extend(h.join().unwrap_or_default());
        }
    });
    Tokens { validator, tokens }
}

/// Each token introspected once (every one a cache miss: signature verified).
pub fn validations_fresh(
    view: &Arc<RevocationView>,
    tokens: &Tokens,
    threads: usize,
) -> Throughput {
    let introspector = Introspector::new(tokens.validator.clone(), view.clone());
    let per_thread = tokens.tokens.len().div_ceil(threads);
    let revoked = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for chunk in tokens.tokens.chunks(per_thread) {
            let (introspector, revoked) = (&introspector, &revoked);
            s.spawn(move || {
                let mut bad = 0;
                for (token, _, _) in chunk {
                    bad += u64::from(!introspected_active(introspector, token));
                }
                revoked.fetch_add(bad, Ordering::Relaxed);
            });
        }
    });
    Throughput {
        operations: tokens.tokens.len() as u64,
        elapsed: started.elapsed(),
        threads,
        revoked: revoked.into_inner(),
    }
}

/// A working set of `hot` tokens presented again and again for `seconds`.
pub fn validations_repeated(
    view: &Arc<RevocationView>,
    tokens: &Tokens,
    hot: usize,
    threads: usize,
    seconds: f64,
) -> Throughput {
    let introspector = Introspector::new(tokens.validator.clone(), view.clone());
    let hot = &tokens.tokens[..hot.min(tokens.tokens.len())];
    for (token, _, _) in hot {
        introspected_active(&introspector, token);
    }
    let total = AtomicU64::new(0);
    let revoked = AtomicU64::new(0);
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (introspector, total, revoked) = (&introspector, &total, &revoked);
            s.spawn(move || {
                let mut i = t * hot.len() / threads;
                let (mut done, mut bad) = (0u64, 0u64);
                let begun = Instant::now();
                while begun.elapsed() < budget {
                    for _ in 0..256 {
                        bad += u64::from(!introspected_active(introspector, &hot[i].0));
                        i = (i + 1) % hot.len();
                    }
                    done += 256;
                }
                total.fetch_add(done, Ordering::Relaxed);
                revoked.fetch_add(bad, Ordering::Relaxed);
            });
        }
    });
    Throughput {
        operations: total.into_inner(),
        elapsed: started.elapsed(),
        threads,
        revoked: revoked.into_inner(),
    }
}

fn introspected_active(introspector: &Introspector, token: &str) -> bool {
    match introspector.introspect(token, ledger_clock::now()) {
        Introspection::Active(_) => true,
        Introspection::Revoked(_) => false,
        other => panic!("benchmark token not accepted: {other:?}"),
    }
}
