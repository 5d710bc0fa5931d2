//! `SessionService` over the embedded adapter: the use cases without HTTP.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ledger_api::{OpenSession, ServiceConfig, SessionError, SessionService};
use ledger_core::ports::{BackendError, EventLog};
use ledger_core::{Event, Policy};
use ledger_embedded::{CurrentProjection, Embedded};
use ledger_token::{AccessTokenIssuer, AccessTokenValidator, KeyDir};

mod view;

/// The embedded log, which can be told to stop acknowledging appends (`down`: a
/// retry can help) or to refuse them (`refusing`: it cannot).
#[derive(Debug)]
struct Log {
    inner: Embedded,
    down: AtomicBool,
    refusing: AtomicBool,
}

#[async_trait]
impl EventLog for Log {
    async fn append(&self, events: &[Event]) -> Result<(), BackendError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BackendError::unavailable("the log is down"));
        }
        if self.refusing.load(Ordering::SeqCst) {
            return Err(BackendError::other("the log refuses the record"));
        }
        self.inner.append(events).await
    }
}

struct Fixture {
    service: Arc<SessionService>,
    log: Arc<Log>,
    policy: Policy,
    dir: tempfile::TempDir,
}

/// The projector's consumer group; no projector runs in these tests, so the store
/// holds nothing the service did not read from the log itself.
const PROJECTOR: &str = "projector";

impl Fixture {
    fn new(policy: Policy) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log {
            inner: Embedded::open(&dir.path().join("data")).unwrap(),
            down: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
        });
        let service = Arc::new(service_over(&dir, &log, &policy));
        Fixture {
            service,
            log,
            policy,
            dir,
        }
    }

    /// Another service over the same log, keys and store, as after the process was
    /// killed and started again: nothing of the first one's memory.
    fn restarted(&self) -> SessionService {
        service_over(&self.dir, &self.log, &self.policy)
    }

    fn appended(&self) -> i64 {
        self.log.inner.last_offset()
    }

    async fn login(&self, subject: &str) -> ledger_api::Grant {
        let request = OpenSession {
            subject: subject.into(),
            ..OpenSession::default()
        };
        self.service.open(request, None).await.unwrap()
    }
}

/// A `SessionService` wired as the binary wires it on the embedded backend.
fn service_over(dir: &tempfile::TempDir, log: &Arc<Log>, policy: &Policy) -> SessionService {
    let (signing, refresh_tokens) = KeyDir::new(dir.path().join("keys"))
        .load_or_create()
        .unwrap();
    let validator = AccessTokenValidator::new(
        signing.verification_keys(),
        "issuer",
        "audience",
        policy.clock_leeway,
    );
    SessionService::new(
        log.clone(),
        Arc::new(CurrentProjection::new(log.inner.clone(), PROJECTOR)),
        Arc::new(log.inner.clone()),
        AccessTokenIssuer::new(signing, "issuer", "audience"),
        validator,
        refresh_tokens,
        ServiceConfig {
            policy: policy.clone(),
            region: "test".into(),
            read_your_writes: Duration::from_secs(60),
            abort_after_append: false,
        },
    )
}

fn policy(grace: Duration) -> Policy {
    Policy {
        refresh_grace: grace,
        ..Policy::default()
    }
}

fn is_invalid_grant(result: &Result<ledger_api::Grant, SessionError>) -> bool {
    matches!(result, Err(SessionError::InvalidGrant(_)))
}

#[tokio::test]
async fn a_refresh_rotates_and_a_retry_within_grace_gets_the_same_successor() {
    let app = Fixture::new(policy(Duration::from_secs(60)));
    let login = app.login("alice").await;
    let next = app
        .service
        .refresh(&login.refresh_token, None)
        .await
        .unwrap();
    assert_ne!(next.refresh_token, login.refresh_token);
    assert_eq!(next.session_id, login.session_id);
    let retry = app
        .service
        .refresh(&login.refresh_token, None)
        .await
        .unwrap();
    assert_eq!(retry.refresh_token, next.refresh_token);
    assert_ne!(retry.access_token, next.access_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_refreshes_converge_on_one_successor() {
    let app = Fixture::new(policy(Duration::from_secs(60)));
    let login = app.login("bob").await;
    let refreshes: Vec<_> = (0..16)
        .map(|_| {
            let service = app.service.clone();
            let token = login.refresh_token.clone();
            tokio::spawn(async move { service.refresh(&token, None).await })
        })
        .collect();
    let mut successors = std::collections::BTreeSet::new();
    for refresh in refreshes {
        successors.insert(refresh.await.unwrap().unwrap().refresh_token);
    }
    assert_eq!(successors.len(), 1, "{successors:?}");
}

#[tokio::test]
async fn reuse_after_grace_revokes_the_family() {
    let app = Fixture::new(policy(Duration::ZERO));
    let login = app.login("carol").await;
    let next = app
        .service
        .refresh(&login.refresh_token, None)
        .await
        .unwrap();
    assert!(is_invalid_grant(
        &app.service.refresh(&login.refresh_token, None).await
    ));
    // The thief's replay revoked the family: the legitimate head is refused too.
    assert!(is_invalid_grant(
        &app.service.refresh(&next.refresh_token, None).await
    ));
    let view = app.service.session(login.session_id).await.unwrap();
    let revocation = view.state.revoked.unwrap();
    assert_eq!(revocation.reason.as_str(), "reuse_detected");
}

/// A signout acknowledged just before a crash is in the log only (no projector has
/// stored it): the restarted service refuses the family's refresh tokens all the same,
/// and still rotates a live family it has never seen.
#[tokio::test]
async fn after_a_restart_a_signout_the_store_lacks_is_enforced() {
    let app = Fixture::new(policy(Duration::from_secs(60)));
    let dead = app.login("erin").await;
    let live = app.login("frank").await;
    app.service
        .revoke_token(&dead.refresh_token, None, None)
        .await
        .unwrap();

    let restarted = app.restarted();
    assert!(is_invalid_grant(
        &restarted.refresh(&dead.refresh_token, None).await
    ));
    let next = restarted.refresh(&live.refresh_token, None).await.unwrap();
    assert_eq!(next.session_id, live.session_id);
}

#[tokio::test]
async fn signout_with_an_old_token_refuses_every_generation() {
    let app = Fixture::new(policy(Duration::from_secs(60)));
    let login = app.login("dave").await;
    let next = app
        .service
        .refresh(&login.refresh_token, None)
        .await
        .unwrap();
    app.service
        .revoke_token(&login.access_token, Some("access_token"), None)
        .await
        .unwrap();
    assert!(is_invalid_grant(
        &app.service.refresh(&next.refresh_token, None).await
    ));
    assert!(is_invalid_grant(
        &app.service.refresh(&login.refresh_token, None).await
    ));
}

#[tokio::test]
async fn no_token_without_an_acknowledged_event() {
    let app = Fixture::new(policy(Duration::from_secs(60)));
    let login = app.login("erin").await;
    let before = app.appended();
    app.log.down.store(true, Ordering::SeqCst);
    let request = OpenSession {
        subject: "frank".into(),
        ..OpenSession::default()
    };
    assert!(matches!(
        app.service.open(request, None).await,
        Err(SessionError::Unavailable(_))
    ));
    assert!(matches!(
        app.service.refresh(&login.refresh_token, None).await,
        Err(SessionError::Unavailable(_))
    ));
    assert_eq!(app.appended(), before);
    // Nothing was issued for the refresh: once the log is back, the same token is
    // still the head and rotates.
    app.log.down.store(false, Ordering::SeqCst);
    let next = app
        .service
        .refresh(&login.refresh_token, None)
        .await
        .unwrap();
    assert_ne!(next.refresh_token, login.refresh_token);
}

#[tokio::test]
async fn a_refusal_no_retry_can_fix_is_not_unavailable_and_issues_nothing() {
    let app = Fixture::new(policy(Duration::from_secs(60)));
    let login = app.login("heidi").await;
    let before = app.appended();
    app.log.refusing.store(true, Ordering::SeqCst);
    let request = OpenSession {
        subject: "ivan".into(),
        ..OpenSession::default()
    };
    assert!(matches!(
        app.service.open(request, None).await,
        Err(SessionError::Internal(_))
    ));
    assert!(matches!(
        app.service.refresh(&login.refresh_token, None).await,
        Err(SessionError::Internal(_))
    ));
    assert_eq!(app.appended(), before);
}

#[tokio::test]
async fn bad_input_is_refused_and_appends_nothing() {
    let app = Fixture::new(policy(Duration::from_secs(60)));
    let login = app.login("grace").await;
    let before = app.appended();
    let empty = OpenSession::default();
    assert!(matches!(
        app.service.open(empty, None).await,
        Err(SessionError::InvalidRequest(_))
    ));
    let mut forged = login.refresh_token.clone();
    forged.push('x');
    assert!(is_invalid_grant(&app.service.refresh(&forged, None).await));
    assert!(is_invalid_grant(
        &app.service.refresh("not a token", None).await
    ));
    assert_eq!(app.appended(), before);
    // The forged token revoked nothing.
    app.service
        .refresh(&login.refresh_token, None)
        .await
        .unwrap();
}
