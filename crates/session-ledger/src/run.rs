use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use anyhow::Context;
use base64::Engine;
use ledger_api::http::ApiState;
use ledger_api::{ServiceConfig, SessionService};
use ledger_core::Timestamp;
use ledger_embedded::Embedded;
use ledger_http::ServiceCredential;
use ledger_projector::{Projector, ProjectorConfig};
use ledger_token::{AccessTokenIssuer, AccessTokenValidator, KeyDir};
use ledger_validator::http::ValidatorState;
use ledger_validator::{FeederConfig, Introspector, RevocationView, ViewFeeder};
use rand::RngCore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Settings;

/// Which roles a process runs (`dev` runs all three).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    pub projector: bool,
    pub validator: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        api: true,
        projector: true,
        validator: true,
    };
}

/// A started process: its bound addresses and its tasks.
#[derive(Debug)]
pub struct Running {
    pub api_addr: Option<SocketAddr>,
    pub validator_addr: Option<SocketAddr>,
    /// The service credential in force (generated when `dev` had none).
    pub service_token: String,
    pub service_token_generated: bool,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Running {
    /// Waits until a task fails (returning its error) or shutdown completes.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        while let Some(done) = self.tasks.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.shutdown.cancel();
                    return Err(e);
                }
                Err(e) => {
                    self.shutdown.cancel();
                    return Err(anyhow::anyhow!("task panicked: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Stops every role gracefully and waits for them.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Opens the backend and keys under the data directory and starts `roles`.
pub async fn start(settings: Settings, roles: Roles) -> anyhow::Result<Running> {
    let (service_token, generated) = match &settings.service_token {
        Some(t) => (t.clone(), false),
        None if roles == Roles::ALL => (generate_token(), true),
        None => {
            settings.require_service_token()?;
            unreachable!("require_service_token fails when there is none")
        }
    };
    let credential = ServiceCredential::new(&service_token);
    let embedded = Embedded::open(&settings.data_dir)
        .with_context(|| format!("opening the data directory {}", settings.data_dir.display()))?;
    let keys = KeyDir::new(settings.data_dir.join("keys"));
    let (signing, refresh_tokens) = keys
        .load_or_create()
        .with_context(|| format!("loading keys from {}", keys.path().display()))?;
    let access_validator = AccessTokenValidator::new(
        signing.verification_keys(),
        &settings.issuer,
        &settings.audience,
        settings.policy.clock_leeway,
    );

    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut running = Running {
        api_addr: None,
        validator_addr: None,
        service_token,
        service_token_generated: generated,
        shutdown: shutdown.clone(),
        tasks: JoinSet::new(),
    };

    if roles.projector {
        let projector = Projector::new(
            Arc::new(embedded.clone()),
            Arc::new(embedded.clone()),
            ProjectorConfig::default(),
        );
        let token = shutdown.clone();
        tasks.spawn(async move { projector.run(token).await.context("projector") });
        let store = embedded.clone();
        let token = shutdown.clone();
        tasks.spawn(async move {
            // The embedded store has no TTL: reclaim expired rows now and then.
            loop {
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
                match store.prune(Timestamp::now()).await {
                    Ok(n) if n > 0 => tracing::debug!(rows = n, "pruned expired projection rows"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "pruning failed"),
                }
            }
        });
    }

    if roles.api {
        let service = SessionService::new(
            Arc::new(embedded.clone()),
            Arc::new(embedded.clone()),
            Arc::new(embedded.clone()),
            AccessTokenIssuer::new(signing.clone(), &settings.issuer, &settings.audience),
            access_validator.clone(),
            refresh_tokens,
            ServiceConfig {
                policy: settings.policy.clone(),
                region: settings.region.clone(),
                read_your_writes: settings.read_your_writes,
            },
        );
        let state = ApiState {
            service: Arc::new(service),
            credential: credential.clone(),
        };
        let server = HttpServer::new(move || {
            App::new()
                .configure(ledger_api::http::configure(state.clone()))
                .default_service(web::to(ledger_http::not_found))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(5)
        .bind(settings.api_addr)
        .with_context(|| format!("api: cannot listen on {}", settings.api_addr))?;
        let addr = first_addr(&server.addrs(), "api")?;
        spawn_server(server.run(), "api", &shutdown, &mut tasks);
        tracing::info!(%addr, "api listening");
        running.api_addr = Some(addr);
    }

    if roles.validator {
        let view = Arc::new(RevocationView::new(settings.validator_max_staleness));
        let feeder = ViewFeeder::new(
            view.clone(),
            Arc::new(embedded.clone()),
            Arc::new(embedded.clone()),
            FeederConfig::default(),
        );
        let token = shutdown.clone();
        tasks.spawn(async move { feeder.run(token).await.context("validator feed") });
        let state = ValidatorState {
            introspector: Introspector::new(access_validator, view),
            credential,
        };
        let server = HttpServer::new(move || {
            App::new()
                .configure(ledger_validator::http::configure(state.clone()))
                .default_service(web::to(ledger_http::not_found))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(5)
        .bind(settings.validator_addr)
        .with_context(|| format!("validator: cannot listen on {}", settings.validator_addr))?;
        let addr = first_addr(&server.addrs(), "validator")?;
        spawn_server(server.run(), "validator", &shutdown, &mut tasks);
        tracing::info!(%addr, "validator listening");
        running.validator_addr = Some(addr);
    }

    running.tasks = tasks;
    Ok(running)
}

/// Runs a bound server until shutdown.
fn spawn_server(
    server: actix_web::dev::Server,
    name: &'static str,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) {
    let handle = server.handle();
    let token = shutdown.clone();
    tasks.spawn(async move {
        token.cancelled().await;
        handle.stop(true).await;
        Ok(())
    });
    tasks.spawn(async move { server.await.with_context(|| format!("{name} server")) });
}

fn first_addr(addrs: &[SocketAddr], name: &str) -> anyhow::Result<SocketAddr> {
    addrs
        .first()
        .copied()
        .with_context(|| format!("{name}: no address bound"))
}

fn generate_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
