//! The harness the behaviour tests share: the service in-process on port 0
//! (`spawn_app`), the real binary as child processes (`Process`, `run_tool`), and the
//! backing services of `scripts/services.sh`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::Value;
use session_ledger::{Roles, Running, Settings, start};

/// The login service's credential (`LEDGER_LOGIN_TOKEN`).
pub const LOGIN_TOKEN: &str = "test-login-token-0123456789";
/// A resource server's credential (one of `LEDGER_INTROSPECT_TOKENS`).
pub const INTROSPECT_TOKEN: &str = "test-introspect-token-0123456789";

#[derive(Debug)]
pub struct TestApp {
    pub api: String,
    pub validator: String,
    pub client: reqwest::Client,
    pub running: Option<Running>,
    /// Keeps the data directory of an in-process app alive as long as the app.
    pub _data: Option<tempfile::TempDir>,
}

/// Environment for a test instance: ports 0, a fresh data directory.
pub fn test_env(dir: &std::path::Path) -> HashMap<String, String> {
    HashMap::from([
        ("LEDGER_API_ADDR".into(), "127.0.0.1:0".into()),
        ("LEDGER_VALIDATOR_ADDR".into(), "127.0.0.1:0".into()),
        ("LEDGER_PROJECTOR_ADDR".into(), "127.0.0.1:0".into()),
        ("LEDGER_DATA_DIR".into(), dir.display().to_string()),
        ("LEDGER_LOGIN_TOKEN".into(), LOGIN_TOKEN.into()),
        (
            "LEDGER_INTROSPECT_TOKENS".into(),
            format!("another-resource-server-0123,{INTROSPECT_TOKEN}"),
        ),
        ("LEDGER_ISSUER".into(), "https://ledger.test".into()),
        ("LEDGER_AUDIENCE".into(), "resource-servers".into()),
    ])
}

/// The workspace's root directory (where `scripts/` and `docs/` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace root")
        .to_owned()
}

/// The variable `name` from the test's environment, or `default`.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The `session-ledger` binary of the build these tests belong to:
/// `target/<profile>/session-ledger`, beside the `deps/` directory that holds the
/// test binary (where cargo puts a package's binaries). `cargo test --workspace`
/// builds it with everything else (`session-ledger` has a test of its own that runs
/// it); when it is missing, as after `cargo test -p ledger-tests` on a fresh target
/// directory, it is built here, once per test binary, with the same profile.
pub fn ledger_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let test_exe = std::env::current_exe().expect("the test binary knows its path");
        let mut dir = test_exe
            .parent()
            .expect("the test binary sits in a directory")
            .to_owned();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let bin = dir.join(format!("session-ledger{}", std::env::consts::EXE_SUFFIX));
        if !bin.exists() {
            build_ledger_bin(&dir);
            assert!(
                bin.exists(),
                "cargo built session-ledger, but not at {}",
                bin.display()
            );
        }
        bin
    })
}

/// `cargo build -p session-ledger --bin session-ledger` into the target directory
/// and profile of `profile_dir` (`target/debug`, `target/release`, …).
fn build_ledger_bin(profile_dir: &Path) {
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory sits in a target directory");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "{} is missing: building it (profile {profile})",
        profile_dir.join("session-ledger").display()
    );
    let mut build = std::process::Command::new(&cargo);
    // What cargo set for this test binary (its package's name, manifest, …) is not the
    // caller's environment: build scripts that watch such variables would run again,
    // here and in the next outer build.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_the_test = name.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref());
        if set_for_the_test {
            build.env_remove(name.as_ref());
        }
    }
    let status = build
        .args(["build", "-p", "session-ledger", "--bin", "session-ledger"])
        .args(["--profile", profile])
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "`cargo build -p session-ledger --bin session-ledger --profile {profile}` \
             failed ({status}); the tests that run the binary need it"
        ),
        Err(err) => panic!(
            "could not run {} to build session-ledger ({err}); build it first: \
             cargo build -p session-ledger",
            cargo.to_string_lossy()
        ),
    }
}

/// Runs `scripts/services.sh <command>` with the inherited environment: a private
/// set of services in development (`LEDGER_SERVICES_HOME`, `LEDGER_CQL_PORT`, …), the
/// default one in CI.
pub fn services(command: &str) {
    let script = workspace_root().join("scripts/services.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(command)
        .status()
        .unwrap();
    assert!(status.success(), "scripts/services.sh {command} failed");
}

/// Runs `session-ledger <args>` (an auditor's tool) to completion: exit code, stdout.
pub fn run_tool(env: &HashMap<String, String>, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(ledger_bin())
        .args(args)
        .envs(env)
        .env("LEDGER_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Waits (bounded) until `replay --verify-chain` finds the log's `events` events all
/// sealed and the chain intact (the sealer seals what it read every second).
pub async fn await_sealed(env: &HashMap<String, String>, events: u64) {
    let sealed = format!("{events} events sealed, 0 after the newest seal");
    let start = std::time::Instant::now();
    loop {
        let env = env.clone();
        let (code, out) =
            tokio::task::spawn_blocking(move || run_tool(&env, &["replay", "--verify-chain"]))
                .await
                .unwrap();
        assert_eq!(code, 0, "{out}");
        if out.contains(&sealed) {
            assert!(out.contains("chain:         intact"), "{out}");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the log was never fully sealed: {out}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Kafka,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_on(Backend::Embedded, &[]).await
}

/// Environment for a test instance on `backend`; on Kafka a topic and a keyspace of
/// its own.
pub fn backend_env(backend: Backend, dir: &std::path::Path) -> HashMap<String, String> {
    let mut env = test_env(dir);
    if backend == Backend::Kafka {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        env.extend([
            ("LEDGER_BACKEND".into(), "kafka".into()),
            (
                "LEDGER_KAFKA_BROKERS".into(),
                env_or("LEDGER_KAFKA_BROKERS", "127.0.0.1:9092"),
            ),
            (
                "LEDGER_SCYLLA_NODES".into(),
                env_or("LEDGER_SCYLLA_NODES", "127.0.0.1:9042"),
            ),
            (
                "LEDGER_KAFKA_TOPIC".into(),
                format!("session-events-{unique}"),
            ),
            ("LEDGER_SCYLLA_KEYSPACE".into(), format!("ledger_{unique}")),
            ("LEDGER_KAFKA_PARTITIONS".into(), "3".into()),
        ]);
    }
    env
}

/// Starts api, projector and validator in-process with extra variables.
pub async fn spawn_app_on(backend: Backend, vars: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut env = backend_env(backend, dir.path());
    for (k, v) in vars {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    spawn_app_with(dir, &env).await
}

/// Starts api, projector and validator in-process on `env`, keeping `dir` alive.
pub async fn spawn_app_with(dir: tempfile::TempDir, env: &HashMap<String, String>) -> TestApp {
    let settings = Settings::from_lookup(|k| env.get(k).cloned()).unwrap();
    let running = start(settings, Roles::ALL).await.unwrap();
    let app = TestApp {
        api: format!("http://{}", running.api_addr.unwrap()),
        validator: format!("http://{}", running.validator_addr.unwrap()),
        client: reqwest::Client::new(),
        running: Some(running),
        _data: Some(dir),
    };
    app.await_ready().await;
    app
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.shutdown_token().cancel();
        }
    }
}

impl TestApp {
    /// Waits (bounded) until both listeners report ready: the validator has
    /// bootstrapped its view, as a load balancer would wait.
    pub async fn await_ready(&self) {
        let start = std::time::Instant::now();
        for url in [
            format!("{}/readyz", self.api),
            format!("{}/readyz", self.validator),
        ] {
            loop {
                let ready = self
                    .client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::OK);
                if ready {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "{url} never became ready"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    pub async fn login(&self, subject: &str) -> Value {
        let response = self
            .open(&serde_json::json!({ "subject": subject, "client_id": "web" }))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    pub async fn open(&self, body: &Value) -> Response {
        self.client
            .post(format!("{}/v1/sessions", self.api))
            .bearer_auth(LOGIN_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.try_refresh(refresh_token).await.unwrap()
    }

    pub async fn try_refresh(&self, refresh_token: &str) -> reqwest::Result<Response> {
        self.client
            .post(format!("{}/oauth2/token", self.api))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
    }

    pub async fn refresh_ok(&self, refresh_token: &str) -> Value {
        let response = self.refresh(refresh_token).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn revoke(&self, token: &str) -> Response {
        self.client
            .post(format!("{}/oauth2/revoke", self.api))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
    }

    pub async fn introspect(&self, access_token: &str) -> Value {
        let response = self
            .client
            .post(format!("{}/oauth2/introspect", self.validator))
            .bearer_auth(INTROSPECT_TOKEN)
            .form(&[("token", access_token)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    pub async fn session(&self, id: &str) -> Response {
        self.client
            .get(format!("{}/v1/sessions/{id}", self.api))
            .bearer_auth(LOGIN_TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// `GET /v1/sessions/{id}`, expected to succeed.
    pub async fn status(&self, id: &str) -> Value {
        let response = self.session(id).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Waits (bounded) until a session's history holds `n` events; returns their types.
    pub async fn await_history(&self, id: &str, n: usize) -> Vec<String> {
        let start = std::time::Instant::now();
        loop {
            let status = self.status(id).await;
            let types: Vec<String> = status["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["type"].as_str().unwrap().to_owned())
                .collect();
            if types.len() >= n {
                return types;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "history stuck at {types:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (bounded) until the validator's answer for `token` is `active`.
    pub async fn await_active(&self, token: &str, active: bool) -> Duration {
        let start = std::time::Instant::now();
        loop {
            if self.introspect(token).await["active"] == active {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "validator never answered active={active}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

pub fn str_field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

/// A `session-ledger` child process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Process {
    pub child: std::process::Child,
    pub api: Option<String>,
    pub validator: Option<String>,
    /// The status listener of `session-ledger projector` (read by the outage tests).
    pub projector: Option<String>,
}

impl Process {
    /// Runs `session-ledger <command>` and waits until it printed `ready`.
    pub fn spawn(command: &str, env: &HashMap<String, String>, extra: &[(&str, &str)]) -> Process {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(ledger_bin())
            .arg(command)
            .env("LEDGER_LOG", "warn")
            .envs(env)
            .envs(extra.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut api, mut validator, mut projector) = (None, None, None);
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("session-ledger {command} exited before it was ready"))
                .unwrap();
            if let Some(a) = line.strip_prefix("api listening on ") {
                api = Some(a.to_owned());
            } else if let Some(v) = line.strip_prefix("validator listening on ") {
                validator = Some(v.to_owned());
            } else if let Some(p) = line.strip_prefix("projector status listening on ") {
                projector = Some(p.to_owned());
            } else if line == "ready" {
                break;
            }
        }
        Process {
            child,
            api,
            validator,
            projector,
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test app over processes or in-process roles, addressed by URL only.
pub fn app_at(api: Option<&str>, validator: Option<&str>) -> TestApp {
    TestApp {
        api: api.unwrap_or_default().to_owned(),
        validator: validator.unwrap_or_default().to_owned(),
        client: reqwest::Client::new(),
        running: None,
        _data: None,
    }
}

/// The claims of an access token, read without checking it (tests look at `jti`,
/// `exp`, … of tokens the service handed out).
pub fn access_claims(access_token: &str) -> Value {
    use base64::Engine;
    let payload = access_token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// The `jti` of an access token the service handed out.
pub fn jti_of(access_token: &str) -> String {
    access_claims(access_token)["jti"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The CQL projection store of a service started with `env`, in `keyspace`.
pub async fn store_of(env: &HashMap<String, String>, keyspace: &str) -> ledger_scylla::ScyllaStore {
    let nodes = env["LEDGER_SCYLLA_NODES"]
        .split(',')
        .map(str::to_owned)
        .collect();
    ledger_scylla::ScyllaStore::connect(ledger_scylla::ScyllaConfig::new(nodes, keyspace))
        .await
        .unwrap()
}
