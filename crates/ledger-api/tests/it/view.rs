//! Refreshes decided from the API's own view of the log: instances that share a log
//! but no projector agree, and a view that cannot prove it is current refuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ledger_api::{
    FamilyView, FamilyViewConfig, OpenSession, ServiceConfig, SessionError, SessionService,
};
use ledger_core::ports::{BackendError, LogEnd, Position};
use ledger_embedded::Embedded;
use ledger_token::{AccessTokenIssuer, AccessTokenValidator, KeyDir};
use tokio_util::sync::CancellationToken;

use crate::{is_invalid_grant, policy};

/// The embedded log's end, slowed down, counted, and able to fail.
#[derive(Debug)]
struct End {
    log: Embedded,
    asked: AtomicUsize,
    down: AtomicBool,
}

#[async_trait]
impl LogEnd for End {
    async fn end(&self) -> Result<Vec<Position>, BackendError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        if self.down.load(Ordering::SeqCst) {
            return Err(BackendError::unavailable("the log is down"));
        }
        LogEnd::end(&self.log).await
    }
}

/// Instances on one embedded log, each with a view of its own; no projector runs, so
/// the store stays empty and every state comes from the log.
struct Instances {
    services: Vec<Arc<SessionService>>,
    ends: Vec<Arc<End>>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Instances {
    fn new(n: usize, grace: Duration) -> Instances {
        let dir = tempfile::tempdir().unwrap();
        let log = Embedded::open(&dir.path().join("data")).unwrap();
        let (signing, refresh_tokens) = KeyDir::new(dir.path().join("keys"))
            .load_or_create()
            .unwrap();
        let shutdown = CancellationToken::new();
        let (mut services, mut ends) = (Vec::new(), Vec::new());
        for i in 0..n {
            let store = Arc::new(log.clone());
            let end = Arc::new(End {
                log: log.clone(),
                asked: AtomicUsize::new(0),
                down: AtomicBool::new(false),
            });
            let view = Arc::new(FamilyView::new(
                store.clone(),
                end.clone(),
                store.clone(),
                FamilyViewConfig::new("projector", Duration::from_secs(2)),
            ));
            tokio::spawn(view.clone().run(shutdown.clone()));
            let policy = policy(grace);
            let validator = AccessTokenValidator::new(
                signing.verification_keys(),
                "issuer",
                "audience",
                policy.clock_leeway,
            );
            let service = SessionService::new(
                store.clone(),
                store.clone(),
                store,
                AccessTokenIssuer::new(signing.clone(), "issuer", "audience"),
                validator,
                refresh_tokens.clone(),
                ServiceConfig {
                    policy,
                    region: format!("instance-{i}"),
                    read_your_writes: Duration::from_secs(60),
                    abort_after_append: false,
                },
            )
            .with_view(view);
            services.push(Arc::new(service));
            ends.push(end);
        }
        Instances {
            services,
            ends,
            shutdown,
            _dir: dir,
        }
    }

    async fn login(&self, i: usize, subject: &str) -> ledger_api::Grant {
        let request = OpenSession {
            subject: subject.into(),
            ..OpenSession::default()
        };
        self.services[i].open(request, None).await.unwrap()
    }
}

impl Drop for Instances {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_without_a_projector_see_each_others_logins_and_signouts() {
    let app = Instances::new(2, Duration::from_secs(60));
    let login = app.login(0, "alice").await;
    // The other instance never saw the login and the store is empty: the log says it.
    let next = app.services[1]
        .refresh(&login.refresh_token, None)
        .await
        .unwrap();
    app.services[0]
        .revoke_token(&next.refresh_token, None, None)
        .await
        .unwrap();
    assert!(is_invalid_grant(
        &app.services[1].refresh(&next.refresh_token, None).await
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_on_two_instances_converge_on_one_successor() {
    let app = Instances::new(2, Duration::from_secs(60));
    let login = app.login(0, "bob").await;
    let refreshes: Vec<_> = (0..16)
        .map(|i| {
            let service = app.services[i % 2].clone();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_on_another_instance_revokes_the_family() {
    let app = Instances::new(2, Duration::ZERO);
    let login = app.login(0, "carol").await;
    let next = app.services[0]
        .refresh(&login.refresh_token, None)
        .await
        .unwrap();
    // The rotated-away token on the other instance: reuse, the family is revoked.
    assert!(is_invalid_grant(
        &app.services[1].refresh(&login.refresh_token, None).await
    ));
    assert!(is_invalid_grant(
        &app.services[0].refresh(&next.refresh_token, None).await
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_that_cannot_ask_where_the_log_ends_refuses_to_decide() {
    let app = Instances::new(1, Duration::from_secs(60));
    let login = app.login(0, "dave").await;
    app.ends[0].down.store(true, Ordering::SeqCst);
    assert!(matches!(
        app.services[0].refresh(&login.refresh_token, None).await,
        Err(SessionError::Unavailable(_))
    ));
    app.ends[0].down.store(false, Ordering::SeqCst);
    app.services[0]
        .refresh(&login.refresh_token, None)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_in_flight_share_one_request_for_the_end_of_the_log() {
    let app = Instances::new(1, Duration::from_secs(60));
    let mut tokens = Vec::new();
    for i in 0..32 {
        tokens.push(app.login(0, &format!("user-{i}")).await.refresh_token);
    }
    let before = app.ends[0].asked.load(Ordering::SeqCst);
    let refreshes: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let service = app.services[0].clone();
            tokio::spawn(async move { service.refresh(&token, None).await })
        })
        .collect();
    for refresh in refreshes {
        refresh.await.unwrap().unwrap();
    }
    let asked = app.ends[0].asked.load(Ordering::SeqCst) - before;
    assert!(asked < 8, "32 refreshes asked for the end {asked} times");
}
