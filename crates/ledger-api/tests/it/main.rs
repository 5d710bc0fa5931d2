//! `SessionService` over the embedded adapter: the use cases without HTTP.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ledger_api::{OpenSession, ServiceConfig, SessionError, SessionService};
use ledger_core::ports::{BackendError, EventLog};
use ledger_core::{Event, Policy};
use ledger_embedded::Embedded;
use ledger_token::{AccessTokenIssuer, AccessTokenValidator, KeyDir};

mod view;

/// The embedded log, which can be told to stop acknowledging appends.
#[derive(Debug)]
struct Log {
    inner: Embedded,
    down: AtomicBool,
}

#[async_trait]
impl EventLog for Log {
    async fn append(&self, events: &[Event]) -> Result<(), BackendError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable("the log is down".into()));
        }
        self.inner.append(events).await
    }
}

struct Fixture {
    service: Arc<SessionService>,
    log: Arc<Log>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(policy: Policy) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(&dir.path().join("data")).unwrap();
        let (signing, refresh_tokens) = KeyDir::new(dir.path().join("keys"))
            .load_or_create()
            .unwrap();
        let validator = AccessTokenValidator::new(
            signing.verification_keys(),
            "issuer",
            "audience",
            policy.clock_leeway,
        );
        let log = Arc::new(Log {
            inner: store.clone(),
            down: AtomicBool::new(false),
        });
        let store = Arc::new(store);
        let service = SessionService::new(
            log.clone(),
            store.clone(),
            store,
            AccessTokenIssuer::new(signing, "issuer", "audience"),
            validator,
            refresh_tokens,
            ServiceConfig {
                policy,
                region: "test".into(),
                read_your_writes: Duration::from_secs(60),
                abort_after_append: false,
            },
        );
        Fixture {
            service: Arc::new(service),
            log,
            _dir: dir,
        }
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
