//! Rows 3 to 5: the real service started in-process (`session_ledger::start`, every
//! role, embedded backend, port 0, a temporary data directory), driven over HTTP/1.1
//! keep-alive connections by a Rust client (hyper) inside this program.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use session_ledger::{Roles, Running, Settings, start};
use tokio::net::TcpStream;

use crate::report::{Latencies, progress};

/// The login service's credential (opens sessions).
const LOGIN_TOKEN: &str = "bench-login-token-0123456789";
/// A resource server's credential (introspects).
const INTROSPECT_TOKEN: &str = "bench-introspect-token-0123456789";

/// The service, running in this process.
#[derive(Debug)]
pub struct App {
    pub api: SocketAddr,
    pub validator: SocketAddr,
    running: Running,
    _data: tempfile::TempDir,
}

impl App {
    pub async fn start() -> anyhow::Result<App> {
        Self::start_with(&[]).await
    }

    /// Starts with the Shared Signals transmitter on, for one receiver
    /// ([`crate::ssf::RECEIVER_TOKEN`]).
    /// On the embedded backend, or on Kafka + CQL given (brokers, CQL nodes).
    pub async fn start_with_ssf(kafka: Option<(&str, &str)>) -> anyhow::Result<App> {
        let mut env = kafka.map(kafka_env).unwrap_or_default();
        env.push((
            "LEDGER_SSF_RECEIVER_TOKENS",
            format!("bench={}", crate::ssf::RECEIVER_TOKEN),
        ));
        Self::start_with(&env).await
    }

    /// Starts on the embedded backend with `settings` added.
    pub async fn start_embedded_with(settings: &[(&'static str, &str)]) -> anyhow::Result<App> {
        let env: Vec<_> = settings.iter().map(|&(k, v)| (k, v.to_owned())).collect();
        Self::start_with(&env).await
    }

    /// Starts on Kafka + CQL (a topic and keyspace of its own) with `settings` added.
    pub async fn start_on_kafka_with(
        brokers: &str,
        cql_nodes: &str,
        settings: &[(&'static str, &str)],
    ) -> anyhow::Result<App> {
        let mut env = kafka_env((brokers, cql_nodes));
        env.extend(settings.iter().map(|&(k, v)| (k, v.to_owned())));
        Self::start_with(&env).await
    }

    /// Starts on Kafka + CQL (a topic and keyspace of its own).
    pub async fn start_on_kafka(brokers: &str, cql_nodes: &str) -> anyhow::Result<App> {
        Self::start_with(&kafka_env((brokers, cql_nodes))).await
    }

    async fn start_with(extra: &[(&'static str, String)]) -> anyhow::Result<App> {
        let data = tempfile::tempdir()?;
        let mut env = HashMap::from([
            ("LEDGER_API_ADDR", "127.0.0.1:0".to_owned()),
            ("LEDGER_VALIDATOR_ADDR", "127.0.0.1:0".to_owned()),
            ("LEDGER_PROJECTOR_ADDR", "127.0.0.1:0".to_owned()),
            ("LEDGER_DATA_DIR", data.path().display().to_string()),
            ("LEDGER_LOGIN_TOKEN", LOGIN_TOKEN.to_owned()),
            ("LEDGER_INTROSPECT_TOKENS", INTROSPECT_TOKEN.to_owned()),
        ]);
        env.extend(extra.iter().cloned());
        let settings = Settings::from_lookup(|k| env.get(k).cloned())?;
        let running = start(settings, Roles::ALL).await?;
        let api = running.api_addr.context("api did not start")?;
        let validator = running.validator_addr.context("validator did not start")?;
        progress(&format!(
            "service started: api {api}, validator {validator}"
        ));
        Ok(App {
            api,
            validator,
            running,
            _data: data,
        })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.running.stop().await
    }
}

/// The settings of a service on Kafka + CQL with a topic and keyspace of its own.
fn kafka_env((brokers, cql_nodes): (&str, &str)) -> Vec<(&'static str, String)> {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    vec![
        ("LEDGER_BACKEND", "kafka".to_owned()),
        ("LEDGER_KAFKA_BROKERS", brokers.to_owned()),
        ("LEDGER_SCYLLA_NODES", cql_nodes.to_owned()),
        ("LEDGER_KAFKA_TOPIC", format!("bench-{unique}")),
        ("LEDGER_SCYLLA_KEYSPACE", format!("bench_{unique}")),
    ]
}

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            host: addr.to_string(),
        })
    }

    async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        service: bool,
        body: String,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = Request::post(path).header(header::CONTENT_TYPE, content_type);
        if service {
            let token = if path.starts_with("/oauth2/introspect") {
                INTROSPECT_TOKEN
            } else {
                LOGIN_TOKEN
            };
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(request, body).await
    }

    /// Sends a request built by the caller (its `Host` header is added here).
    pub async fn send(
        &mut self,
        request: hyper::http::request::Builder,
        body: String,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let request = request
            .header(header::HOST, &self.host)
            .body(Full::new(Bytes::from(body)))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// `POST /v1/sessions`: (session id, access token, refresh token).
    pub async fn login(&mut self, subject: &str) -> anyhow::Result<(String, String, String)> {
        let body = serde_json::json!({ "subject": subject, "client_id": "bench" }).to_string();
        let (status, body) = self
            .post("/v1/sessions", "application/json", true, body)
            .await?;
        if status != StatusCode::CREATED {
            bail!(
                "login answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        Ok((
            field(&v, "session_id")?,
            field(&v, "access_token")?,
            field(&v, "refresh_token")?,
        ))
    }

    /// `POST /oauth2/token` (refresh): the next refresh token.
    pub async fn refresh(&mut self, refresh_token: &str) -> anyhow::Result<String> {
        let body = format!("grant_type=refresh_token&refresh_token={refresh_token}");
        let (status, body) = self
            .post(
                "/oauth2/token",
                "application/x-www-form-urlencoded",
                false,
                body,
            )
            .await?;
        if status != StatusCode::OK {
            bail!(
                "refresh answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        field(&v, "refresh_token")
    }

    /// `POST /oauth2/revoke`.
    pub async fn revoke(&mut self, token: &str) -> anyhow::Result<()> {
        let (status, body) = self
            .post(
                "/oauth2/revoke",
                "application/x-www-form-urlencoded",
                false,
                format!("token={token}"),
            )
            .await?;
        if status != StatusCode::OK {
            bail!(
                "revoke answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// `POST /oauth2/introspect`: whether the token is active.
    pub async fn introspect(&mut self, token: &str) -> anyhow::Result<bool> {
        let (status, body) = self
            .post(
                "/oauth2/introspect",
                "application/x-www-form-urlencoded",
                true,
                format!("token={token}"),
            )
            .await?;
        if status != StatusCode::OK {
            bail!(
                "introspect answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        // `{"active":true,…}` or `{"active":false}`: no need to parse the rest.
        Ok(body.starts_with(b"{\"active\":true"))
    }
}

impl Conn {
    /// `GET /v1/revocations/{id}`: whether the family is revoked.
    pub async fn lookup(&mut self, session_id: &str) -> anyhow::Result<bool> {
        self.sender.ready().await?;
        let request = Request::get(format!("/v1/revocations/{session_id}"))
            .header(header::HOST, &self.host)
            .header(header::AUTHORIZATION, format!("Bearer {INTROSPECT_TOKEN}"))
            .body(Full::new(Bytes::new()))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status != StatusCode::OK {
            bail!(
                "lookup answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        Ok(v["revoked"] == true)
    }
}

fn field(v: &serde_json::Value, name: &str) -> anyhow::Result<String> {
    v[name]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {name} in {v}"))
}

#[derive(Debug)]
pub struct HttpLoad {
    pub requests: u64,
    pub elapsed: Duration,
    pub latencies: Latencies,
    /// Answers that were not the expected one (inactive tokens, revoked lookups).
    pub errors: u64,
}

impl HttpLoad {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Opens `n` sessions (for their tokens), on 16 connections.
pub async fn sessions(app: &App, n: usize) -> anyhow::Result<Vec<(String, String, String)>> {
    progress(&format!("opening {n} sessions through the api"));
    let mut workers = tokio::task::JoinSet::new();
    let per = n.div_ceil(16);
    for w in 0..16 {
        let api = app.api;
        workers.spawn(async move {
            let mut conn = Conn::open(api).await?;
            let mut out = Vec::new();
            for i in w * per..((w + 1) * per).min(n) {
                out.push(conn.login(&format!("user-{i}")).await?);
            }
            anyhow::Ok(out)
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(done) = workers.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

/// Row 3: `concurrency` connections introspecting `tokens` round robin for `seconds`.
pub async fn introspection_load(
    app: &App,
    tokens: Arc<Vec<String>>,
    concurrency: usize,
    seconds: f64,
) -> anyhow::Result<HttpLoad> {
    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        conns.push(Conn::open(app.validator).await?);
    }
    // Warm up (and check the answers are the expected ones).
    for (i, conn) in conns.iter_mut().enumerate() {
        if !conn.introspect(&tokens[i % tokens.len()]).await? {
            bail!("a live session's token was not active");
        }
    }
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for (w, mut conn) in conns.into_iter().enumerate() {
        let tokens = tokens.clone();
        workers.spawn(async move {
            let mut lat = Latencies::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut i = w;
            let begun = Instant::now();
            while begun.elapsed() < budget {
                let t = Instant::now();
                let active = conn.introspect(&tokens[i % tokens.len()]).await?;
                lat.record(t.elapsed());
                errors += u64::from(!active);
                i += 1;
            }
            anyhow::Ok((lat, errors))
        });
    }
    let mut latencies = Latencies::default();
    let mut errors = 0;
    while let Some(done) = workers.join_next().await {
        let (lat, e) = done??;
        latencies.merge(lat);
        errors += e;
    }
    Ok(HttpLoad {
        requests: latencies.len() as u64,
        elapsed: started.elapsed(),
        latencies,
        errors,
    })
}

/// Row 3, like for like with Redis `EXISTS`: `concurrency` connections asking
/// `GET /v1/revocations/{id}` of `ids` round robin for `seconds` (a lookup of one
/// family over the network, answered from the validator's view).
pub async fn lookup_load(
    app: &App,
    ids: Arc<Vec<String>>,
    concurrency: usize,
    seconds: f64,
) -> anyhow::Result<HttpLoad> {
    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        conns.push(Conn::open(app.validator).await?);
    }
    for (i, conn) in conns.iter_mut().enumerate() {
        conn.lookup(&ids[i % ids.len()]).await?;
    }
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for (w, mut conn) in conns.into_iter().enumerate() {
        let ids = ids.clone();
        workers.spawn(async move {
            let mut lat = Latencies::with_capacity(1 << 16);
            let mut revoked = 0u64;
            let mut i = w;
            let begun = Instant::now();
            while begun.elapsed() < budget {
                let t = Instant::now();
                revoked += u64::from(conn.lookup(&ids[i % ids.len()]).await?);
                lat.record(t.elapsed());
                i += 1;
            }
            anyhow::Ok((lat, revoked))
        });
    }
    let mut latencies = Latencies::default();
    let mut errors = 0;
    while let Some(done) = workers.join_next().await {
        let (lat, revoked) = done??;
        latencies.merge(lat);
        errors += revoked;
    }
    Ok(HttpLoad {
        requests: latencies.len() as u64,
        elapsed: started.elapsed(),
        latencies,
        errors,
    })
}

/// Row 4: `concurrency` clients, each refreshing its own session over and over.
pub async fn refresh_load(app: &App, concurrency: usize, seconds: f64) -> anyhow::Result<HttpLoad> {
    let sessions = sessions(app, concurrency).await?;
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for (_, _, refresh) in sessions {
        let api = app.api;
        workers.spawn(async move {
            let mut conn = Conn::open(api).await?;
            let mut lat = Latencies::with_capacity(1 << 12);
            let mut current = refresh;
            let begun = Instant::now();
            while begun.elapsed() < budget {
                let t = Instant::now();
                current = conn.refresh(&current).await?;
                lat.record(t.elapsed());
            }
            anyhow::Ok(lat)
        });
    }
    let mut latencies = Latencies::default();
    while let Some(done) = workers.join_next().await {
        latencies.merge(done??);
    }
    Ok(HttpLoad {
        requests: latencies.len() as u64,
        elapsed: started.elapsed(),
        latencies,
        errors: 0,
    })
}

/// Row 5: for each of `samples` sessions, the time from the signout response to
/// the first introspection answering inactive (polled back to back on a warm
/// connection, so the resolution is one introspection round trip).
pub async fn propagation(app: &App, samples: usize) -> anyhow::Result<Latencies> {
    let sessions = sessions(app, samples).await?;
    progress(&format!(
        "measuring revocation propagation over {samples} signouts"
    ));
    let mut api = Conn::open(app.api).await?;
    let mut validator = Conn::open(app.validator).await?;
    let mut latencies = Latencies::with_capacity(samples);
    for (_, access, refresh) in sessions {
        if !validator.introspect(&access).await? {
            bail!("a live session's token was not active before signout");
        }
        api.revoke(&refresh).await?;
        let signed_out = Instant::now();
        loop {
            if !validator.introspect(&access).await? {
                latencies.record(signed_out.elapsed());
                break;
            }
            if signed_out.elapsed() > Duration::from_secs(30) {
                bail!("the validator still accepts a signed-out token after 30 s");
            }
        }
    }
    Ok(latencies)
}
