use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use base64::Engine;
use ledger_api::http::ApiState;
use ledger_api::{ServiceConfig, SessionService};
use ledger_core::ports::{
    EventLog, HistorySource, LogEnd, LogSource, ProjectionStore, SealStore, SsfStore,
};
use ledger_embedded::Embedded;
use ledger_http::{Credentials, Scope};
use ledger_kafka::{KafkaConfig, KafkaFence, KafkaLog, KafkaLogEnd};
use ledger_projector::{Projector, ProjectorConfig, Sealer, SealerConfig};
use ledger_scylla::{ScyllaConfig, ScyllaStore};
use ledger_token::{AccessTokenIssuer, AccessTokenValidator, KeyDir};
use ledger_validator::http::{StreamEndpoint, ValidatorState};
use ledger_validator::stream::{RevocationStream, StreamConfig};
use ledger_validator::{
    FeederConfig, Introspector, JwksConfig, JwksRefresher, RevocationView, ViewFeeder,
};
use rand::RngCore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{ApiView, Backend, Settings};

/// With `LEDGER_API_FENCE=off`: how long a refresh after a start waits for the
/// projector to pass the end of its family's partition (once per partition; `503`
/// after it).
const STARTUP_FENCE: std::time::Duration = std::time::Duration::from_secs(3);

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
    /// The status listener of a projector-only process.
    pub projector_addr: Option<SocketAddr>,
    /// Credentials `dev` generated because none was set: (variable, token).
    pub generated_credentials: Vec<(&'static str, String)>,
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
    let (credentials, generated_credentials) = credentials(&settings, roles)?;
    let ports = Ports::open(&settings).await?;
    let keys = KeyDir::new(settings.data_dir.join("keys"));
    let ssf = ssf_transmitter(&settings, &ports, &keys)?;
    let mut assembly = Assembly {
        settings,
        ports,
        keys,
        credentials,
        ssf,
        shutdown: CancellationToken::new(),
        tasks: JoinSet::new(),
    };
    let projector_addr = if roles.projector {
        assembly.projector(!roles.api && !roles.validator).await?
    } else {
        None
    };
    let api_addr = match roles.api {
        true => Some(assembly.api().await?),
        false => None,
    };
    let validator_addr = match roles.validator {
        true => Some(assembly.validator().await?),
        false => None,
    };
    Ok(Running {
        api_addr,
        validator_addr,
        projector_addr,
        generated_credentials,
        shutdown: assembly.shutdown,
        tasks: assembly.tasks,
    })
}

/// One process's roles while they are put together: what they share, and the tasks
/// they spawn.
struct Assembly {
    settings: Settings,
    ports: Ports,
    keys: KeyDir,
    credentials: Credentials,
    ssf: Option<Ssf>,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Assembly {
    /// The projector and what runs beside it (revocation topic, SSF fan-out and push,
    /// sealer, pruner); with `serve_status`, its own status listener (the address).
    async fn projector(&mut self, serve_status: bool) -> anyhow::Result<Option<SocketAddr>> {
        let Assembly {
            settings,
            ports,
            keys,
            ssf,
            shutdown,
            tasks,
            ..
        } = self;
        let projector = Projector::new(
            ports.source.clone(),
            ports.store.clone(),
            ProjectorConfig {
                group: projector_group(settings),
                abort_before_commit: settings.abort_before_commit,
                ..ProjectorConfig::default()
            },
        );
        let stats = projector.stats();
        let token = shutdown.clone();
        tasks.spawn(async move { projector.run(token).await.context("projector") });
        if let Backend::Kafka(k) = &settings.backend {
            let mut config = KafkaConfig::new(&k.brokers, &k.revocations_topic);
            config.partitions = k.partitions;
            config.replication_factor = k.replication_factor;
            config.delivery_timeout = k.delivery_timeout;
            let topic = ledger_kafka::RevocationTopic::connect(config)
                .await
                .with_context(|| {
                    format!("creating the revocation topic {}", k.revocations_topic)
                })?;
            let publisher = ledger_kafka::RevocationPublisher::new(
                topic,
                ports.source.clone(),
                format!("revocations.{}.{}", k.topic, k.revocations_topic),
            );
            let token = shutdown.clone();
            tasks.spawn(async move { publisher.run(token).await.context("revocation topic") });
        }
        if let Some((transmitter, store, _)) = &ssf {
            let fanout = ledger_ssf::delivery::Fanout::new(
                transmitter.clone(),
                ports.source.clone(),
                store.clone(),
                fanout_group(settings),
            );
            let token = shutdown.clone();
            tasks.spawn(async move { fanout.run(token).await.context("ssf fan-out") });
            let pusher = ledger_ssf::delivery::Pusher::new(
                transmitter.clone(),
                store.clone(),
                ledger_ssf::delivery::PushConfig::default(),
            );
            let token = shutdown.clone();
            tasks.spawn(async move { pusher.run(token).await.context("ssf push") });
        }
        let mut sealer_health = None;
        if settings.sealer {
            let signer = keys
                .seal_keys_or_create()
                .with_context(|| format!("loading seal keys from {}", keys.path().display()))?;
            let verifier = Arc::new(signer.public_keys());
            let sealer = Sealer::new(
                ports.source.clone(),
                ports.seals.clone(),
                Arc::new(signer),
                verifier,
                SealerConfig {
                    log_keeps_everything: ports.embedded.is_some(),
                    ..SealerConfig::default()
                },
            );
            sealer_health = Some(sealer.health());
            let token = shutdown.clone();
            tasks.spawn(async move { sealer.run(token).await.context("sealer") });
        }
        // The embedded store has no TTL: the projector's process prunes it.
        let pruner = ports.embedded.clone().map(|store| {
            let pruner =
                ledger_embedded::Pruner::new(store, ledger_embedded::Pruner::DEFAULT_EVERY);
            let status = pruner.status();
            let token = shutdown.clone();
            tasks.spawn(async move {
                pruner.run(token).await;
                Ok(())
            });
            status
        });
        // Its own listener for probes and metrics, when no other role serves them.
        if serve_status {
            let server = HttpServer::new(move || {
                let (stats, sealer) = (stats.clone(), sealer_health.clone());
                let pruner = pruner.clone();
                let sealer_ready = sealer.clone();
                App::new()
                    .route("/metrics", web::get().to(ledger_http::metrics::handler))
                    .route("/healthz", web::get().to(ledger_http::healthz))
                    .route(
                        "/readyz",
                        web::get().to(move || {
                            let refused = sealer_ready.as_ref().and_then(|h| h.refused());
                            async move { projector_ready(refused) }
                        }),
                    )
                    .route(
                        "/v1/status",
                        web::get().to(move || {
                            let (stats, sealer) = (stats.clone(), sealer.clone());
                            let pruner = pruner.clone();
                            async move {
                                projector_status(&stats, sealer.as_deref(), pruner.as_deref())
                            }
                        }),
                    )
                    .default_service(web::to(ledger_http::not_found))
            })
            .workers(1)
            .disable_signals()
            .shutdown_timeout(5)
            .bind(settings.projector_addr)
            .with_context(|| format!("projector: cannot listen on {}", settings.projector_addr))?;
            let addr = first_addr(&server.addrs(), "projector")?;
            spawn_server(server.run(), "projector", shutdown, tasks);
            tracing::info!(%addr, "projector status listening");
            return Ok(Some(addr));
        }
        Ok(None)
    }

    /// The API: the session service over the log (with its view or fence) and its
    /// listener (the address).
    async fn api(&mut self) -> anyhow::Result<SocketAddr> {
        let Assembly {
            settings,
            ports,
            keys,
            credentials,
            ssf,
            shutdown,
            tasks,
        } = self;
        let (signing, refresh_tokens) = keys
            .load_or_create()
            .with_context(|| format!("loading keys from {}", keys.path().display()))?;
        let access_validator = AccessTokenValidator::new(
            signing.verification_keys(),
            &settings.issuer,
            &settings.audience,
            settings.policy.clock_leeway,
        );
        // On the embedded backend the API decides on the log's end, not on what the
        // projector has stored so far (which lags it after a crash).
        let store: Arc<dyn ProjectionStore> = match &ports.embedded {
            Some(embedded) => Arc::new(ledger_embedded::CurrentProjection::new(
                embedded.clone(),
                projector_group(settings),
            )),
            None => ports.store.clone(),
        };
        let mut service = SessionService::new(
            ports.log.clone(),
            store,
            ports.history.clone(),
            AccessTokenIssuer::new(signing, &settings.issuer, &settings.audience),
            access_validator,
            refresh_tokens,
            ServiceConfig {
                policy: settings.policy.clone(),
                region: settings.region.clone(),
                read_your_writes: settings.read_your_writes,
                abort_after_append: settings.abort_after_append,
            },
        );
        // Without the fence, one instance trusts the projection and its own recent
        // writes; after a restart it has forgotten those, so it waits for each
        // partition once (`STARTUP_FENCE`) before it decides on it.
        if let (None, Some(log)) = (settings.api_fence, &ports.kafka) {
            let fence = KafkaFence::open(log.config(), &projector_group(settings), STARTUP_FENCE)
                .await
                .context("opening the projection fence")?;
            service = service.with_fence(Arc::new(fence.once_per_partition()));
        }
        if let Some(wait) = settings.api_fence {
            let view = |end: Arc<dyn LogEnd>| {
                Arc::new(ledger_api::FamilyView::new(
                    ports.source.clone(),
                    end,
                    ports.store.clone(),
                    ledger_api::FamilyViewConfig::new(projector_group(settings), wait),
                ))
            };
            let view = match (&settings.api_view, &ports.kafka, &ports.embedded) {
                (ApiView::Log, Some(log), _) => Some(view(Arc::new(
                    KafkaLogEnd::open(log.config(), wait)
                        .await
                        .context("opening the end of the log for the api's view")?,
                ))),
                (ApiView::Log, None, Some(embedded)) => Some(view(Arc::new(embedded.clone()))),
                (ApiView::Store, Some(log), _) => {
                    let fence = KafkaFence::open(log.config(), &projector_group(settings), wait)
                        .await
                        .context("opening the projection fence")?;
                    service = service.with_fence(Arc::new(fence));
                    None
                }
                // The embedded store read above is already as of the end of the log.
                (ApiView::Store, None, _) | (ApiView::Log, None, None) => None,
            };
            if let Some(view) = view {
                let token = shutdown.clone();
                let running = view.clone();
                tasks.spawn(async move { running.run(token).await.context("api view") });
                service = service.with_view(view);
            }
        }
        let state = ApiState {
            service: Arc::new(service),
            credentials: credentials.clone(),
        };
        let ssf_state =
            ssf.as_ref().map(
                |(transmitter, store, receivers)| ledger_ssf::http::SsfState {
                    transmitter: transmitter.clone(),
                    store: store.clone(),
                    receivers: receivers.clone(),
                },
            );
        let server = HttpServer::new(move || {
            let mut app = App::new()
                .wrap(from_fn(|req, next| {
                    ledger_http::metrics::observe("api", req, next)
                }))
                .configure(ledger_api::http::configure(state.clone()));
            if let Some(ssf) = ssf_state.clone() {
                app = app.configure(ledger_ssf::http::configure(ssf));
            }
            app.default_service(web::to(ledger_http::not_found))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(5)
        .bind(settings.api_addr)
        .with_context(|| format!("api: cannot listen on {}", settings.api_addr))?;
        let addr = first_addr(&server.addrs(), "api")?;
        spawn_server(server.run(), "api", shutdown, tasks);
        tracing::info!(%addr, "api listening");
        Ok(addr)
    }

    /// The validator: its view fed from the log, JWKS, the revocation stream, and its
    /// listener (the address).
    async fn validator(&mut self) -> anyhow::Result<SocketAddr> {
        let Assembly {
            settings,
            ports,
            keys,
            credentials,
            shutdown,
            tasks,
            ..
        } = self;
        let view = Arc::new(RevocationView::new(settings.validator_max_staleness));
        let feeder = ViewFeeder::new(
            view.clone(),
            ports.source.clone(),
            ports.store.clone(),
            FeederConfig {
                projector_group: projector_group(settings),
                abort_before_commit: settings.abort_before_commit,
                ..FeederConfig::default()
            },
        );
        let token = shutdown.clone();
        tasks.spawn(async move { feeder.run(token).await.context("validator feed") });
        let verification = match &settings.jwks_url {
            Some(url) => JwksRefresher::initial_keys(url, JwksConfig::default(), shutdown).await?,
            None => keys
                .signing_keys()
                .with_context(|| {
                    format!(
                        "the validator verifies with the API's keys: share {} or set LEDGER_JWKS_URL",
                        keys.path().display()
                    )
                })?
                .verification_keys(),
        };
        let introspector = Introspector::new(
            AccessTokenValidator::new(
                verification,
                &settings.issuer,
                &settings.audience,
                settings.policy.clock_leeway,
            ),
            view,
        );
        let jwks = settings.jwks_url.clone().map(|url| {
            let refresher = JwksRefresher::new(url, introspector.clone(), JwksConfig::default());
            let status = refresher.status();
            let token = shutdown.clone();
            tasks.spawn(async move {
                refresher.run(token).await;
                Ok(())
            });
            status
        });
        let revocation_stream = match &settings.backend {
            Backend::Embedded => StreamEndpoint::Served(RevocationStream::new(
                ports.source.clone(),
                shutdown.clone(),
                StreamConfig::default(),
            )),
            Backend::Kafka(k) => StreamEndpoint::Elsewhere(format!(
                "the revocation stream is served on the embedded backend only; on kafka, \
                 read the compacted topic {} (the same records, keyed by family id or \
                 subject:<subject>)",
                k.revocations_topic
            )),
        };
        let state = ValidatorState {
            introspector,
            credentials: credentials.clone(),
            revocation_stream,
            jwks,
        };
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(|req, next| {
                    ledger_http::metrics::observe("validator", req, next)
                }))
                .configure(ledger_validator::http::configure(state.clone()))
                .default_service(web::to(ledger_http::not_found))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(5)
        .bind(settings.validator_addr)
        .with_context(|| format!("validator: cannot listen on {}", settings.validator_addr))?;
        let addr = first_addr(&server.addrs(), "validator")?;
        spawn_server(server.run(), "validator", shutdown, tasks);
        tracing::info!(%addr, "validator listening");
        Ok(addr)
    }
}

/// The Shared Signals transmitter, when receivers are configured: it signs with an
/// RS256 key kept in the key directory and keeps streams in the projection store.
type Ssf = (
    ledger_ssf::Transmitter,
    Arc<dyn SsfStore>,
    ledger_ssf::http::ReceiverCredentials,
);

fn ssf_transmitter(
    settings: &Settings,
    ports: &Ports,
    keys: &KeyDir,
) -> anyhow::Result<Option<Ssf>> {
    let Some(receivers) = settings.ssf_receivers.clone() else {
        return Ok(None);
    };
    let Some(store) = ports.ssf.clone() else {
        anyhow::bail!("LEDGER_SSF_RECEIVER_TOKENS: this backend has no store for SSF streams");
    };
    let signer = ledger_ssf::SetSigner::load_or_create(keys.path())
        .with_context(|| format!("loading the SET signing key from {}", keys.path().display()))?;
    Ok(Some((
        ledger_ssf::Transmitter::new(&settings.issuer, signer),
        store,
        receivers,
    )))
}

/// The bearer credentials both listeners know: the login service's
/// (`LEDGER_LOGIN_TOKEN`) and resource servers' (`LEDGER_INTROSPECT_TOKENS`), plus the
/// deprecated `LEDGER_SERVICE_TOKEN` granting both. A role serving endpoints needs its
/// credential set; `dev` generates what is missing (returned, to be printed).
fn credentials(
    settings: &Settings,
    roles: Roles,
) -> anyhow::Result<(Credentials, Vec<(&'static str, String)>)> {
    let mut credentials = Credentials::new();
    let mut generated = Vec::new();
    if let Some(token) = &settings.service_token {
        tracing::warn!(
            "LEDGER_SERVICE_TOKEN is deprecated: it both opens sessions and introspects; \
             set LEDGER_LOGIN_TOKEN for the login service and LEDGER_INTROSPECT_TOKENS for \
             resource servers"
        );
        credentials
            .grant(token, Scope::Login)
            .grant(token, Scope::Introspect);
    }
    if let Some(token) = &settings.login_token {
        credentials.grant(token, Scope::Login);
    }
    for token in &settings.introspect_tokens {
        credentials.grant(token, Scope::Introspect);
    }
    for (needed, scope, var) in [
        (roles.api, Scope::Login, "LEDGER_LOGIN_TOKEN"),
        (
            roles.validator,
            Scope::Introspect,
            "LEDGER_INTROSPECT_TOKENS",
        ),
    ] {
        if !needed || credentials.grants(scope) {
            continue;
        }
        if roles != Roles::ALL {
            return Err(crate::ConfigError::Missing { var }.into());
        }
        let token = generate_token();
        credentials.grant(&token, scope);
        generated.push((var, token));
    }
    Ok((credentials, generated))
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

/// `503` while the sealer refuses to seal (its newest seal disagrees with its keys
/// or the log): the status and readiness say why.
fn projector_status(
    stats: &ledger_projector::ProjectorStats,
    sealer: Option<&ledger_projector::SealerHealth>,
    pruner: Option<&ledger_embedded::PrunerStatus>,
) -> actix_web::HttpResponse {
    use std::sync::atomic::Ordering::Relaxed;
    let lag = stats.lag.load(Relaxed);
    let refused = sealer.and_then(|h| h.refused());
    let sealer = match (sealer, &refused) {
        (None, _) => serde_json::json!({ "state": "off" }),
        (Some(h), None) => serde_json::json!({ "state": h.state() }),
        (Some(_), Some(why)) => serde_json::json!({ "state": "refused", "reason": why }),
    };
    let mut response = if refused.is_some() {
        actix_web::HttpResponse::ServiceUnavailable()
    } else {
        actix_web::HttpResponse::Ok()
    };
    let mut body = serde_json::json!({
        "ready": refused.is_none(),
        "events_applied": stats.events_applied.load(Relaxed),
        "batches_written": stats.batches_written.load(Relaxed),
        "backend_errors": stats.write_errors.load(Relaxed),
        "lag": (lag != u64::MAX).then_some(lag),
        "sealer": sealer,
    });
    if let Some(pruner) = pruner {
        body["pruner"] = pruner.report();
    }
    response.json(body)
}

fn projector_ready(sealer_refused: Option<String>) -> actix_web::HttpResponse {
    match sealer_refused {
        None => actix_web::HttpResponse::Ok().json(serde_json::json!({ "ready": true })),
        Some(why) => actix_web::HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "ready": false, "sealer": why })),
    }
}

/// The projector's consumer group: one per (topic, keyspace), so a projection into a
/// new keyspace starts from the beginning of the log and unrelated deployments sharing
/// a cluster never rebalance each other.
/// The projector's consumer group (its checkpoint) for these settings.
pub(crate) fn projector_group(settings: &Settings) -> String {
    match &settings.backend {
        Backend::Embedded => ledger_projector::DEFAULT_GROUP.to_owned(),
        Backend::Kafka(k) => format!(
            "{}.{}.{}",
            ledger_projector::DEFAULT_GROUP,
            k.topic,
            k.keyspace
        ),
    }
}

/// The SSF fan-out's consumer group: on Kafka one per (topic, keyspace) like the
/// projector's, since the queues it fills live in the keyspace. Several projector
/// processes share it, so each revocation is queued by the one reading its partition.
pub(crate) fn fanout_group(settings: &Settings) -> String {
    match &settings.backend {
        Backend::Embedded => ledger_ssf::delivery::FANOUT_GROUP.to_owned(),
        Backend::Kafka(k) => format!(
            "{}.{}.{}",
            ledger_ssf::delivery::FANOUT_GROUP,
            k.topic,
            k.keyspace
        ),
    }
}

/// The log and store behind the ports, per the configured backend.
pub(crate) struct Ports {
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) source: Arc<dyn LogSource>,
    pub(crate) store: Arc<dyn ProjectionStore>,
    pub(crate) history: Arc<dyn HistorySource>,
    pub(crate) seals: Arc<dyn SealStore>,
    /// Shared Signals streams and queues, in the projection store.
    pub(crate) ssf: Option<Arc<dyn SsfStore>>,
    /// Set for the embedded backend, which has no TTL and is pruned by the projector.
    embedded: Option<Embedded>,
    /// Set for the Kafka backend.
    kafka: Option<KafkaLog>,
}

impl Ports {
    pub(crate) async fn open(settings: &Settings) -> anyhow::Result<Ports> {
        match &settings.backend {
            Backend::Embedded => {
                let embedded = Embedded::open(&settings.data_dir).with_context(|| {
                    format!("opening the data directory {}", settings.data_dir.display())
                })?;
                Ok(Ports {
                    log: Arc::new(embedded.clone()),
                    source: Arc::new(embedded.clone()),
                    store: Arc::new(embedded.clone()),
                    history: Arc::new(embedded.clone()),
                    seals: Arc::new(embedded.clone()),
                    ssf: Some(Arc::new(embedded.clone())),
                    embedded: Some(embedded),
                    kafka: None,
                })
            }
            Backend::Kafka(k) => {
                let mut kafka = KafkaConfig::new(&k.brokers, &k.topic);
                kafka.remote_topics = k.remote_topics.clone();
                kafka.partitions = k.partitions;
                kafka.replication_factor = k.replication_factor;
                kafka.delivery_timeout = k.delivery_timeout;
                kafka.group_instance_id = k.instance_id.clone();
                let log = Arc::new(
                    KafkaLog::connect(kafka)
                        .await
                        .with_context(|| format!("connecting to kafka at {}", k.brokers))?,
                );
                let mut cql = ScyllaConfig::new(k.scylla_nodes.clone(), &k.keyspace);
                cql.replication = k.replication.clone();
                let store = Arc::new(ScyllaStore::connect(cql).await.with_context(|| {
                    format!("connecting to the CQL database at {:?}", k.scylla_nodes)
                })?);
                Ok(Ports {
                    kafka: Some((*log).clone()),
                    log: log.clone(),
                    source: log,
                    store: store.clone(),
                    history: store.clone(),
                    seals: store.clone(),
                    ssf: Some(store),
                    embedded: None,
                })
            }
        }
    }
}

fn generate_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
