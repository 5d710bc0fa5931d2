//! A validator cut off from Kafka fails closed within its staleness bound and recovers
//! by itself; under load, no acknowledged signout is lost and no token is issued
//! without its event (I1).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ledger_core::ports::{LogSource, StartFrom};
use ledger_core::{EventKind, SessionId};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, Process, TestApp, app_at, backend_env, jti_of, services, str_field};
use crate::{RestartKafka, SERIAL};

const MAX_STALENESS: Duration = Duration::from_secs(3);

/// api, projector and validator as separate processes on a topic and keyspace of their
/// own, with a short staleness bound and delivery timeout.
fn deployment(dir: &std::path::Path) -> (HashMap<String, String>, [Process; 3], TestApp) {
    let mut env = backend_env(Backend::Kafka, dir);
    env.insert("LEDGER_VALIDATOR_MAX_STALENESS".into(), "3s".into());
    env.insert("LEDGER_KAFKA_DELIVERY_TIMEOUT".into(), "3s".into());
    let api = Process::spawn("api", &env, &[]);
    let projector = Process::spawn("projector", &env, &[("LEDGER_INSTANCE_ID", "projector-0")]);
    let validator = Process::spawn("validator", &env, &[]);
    let mut app = app_at(api.api.as_deref(), validator.validator.as_deref());
    // A validator that stops answering fails the test with that error, not a hang.
    app.client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    (env, [api, projector, validator], app)
}

async fn readyz(app: &TestApp) -> (StatusCode, Value) {
    let response = app
        .client
        .get(format!("{}/readyz", app.validator))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn validator_status(app: &TestApp) -> Value {
    app.client
        .get(format!("{}/v1/status", app.validator))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Stops the broker off the runtime (the script waits for it to exit).
async fn stop_kafka() -> RestartKafka {
    let restart = RestartKafka;
    let started = Instant::now();
    tokio::task::spawn_blocking(|| services("stop-kafka"))
        .await
        .unwrap();
    eprintln!("the broker took {:?} to stop", started.elapsed());
    restart
}

async fn start_kafka(restart: RestartKafka) {
    tokio::task::spawn_blocking(move || drop(restart))
        .await
        .unwrap();
}

/// Once the broker is gone, within the staleness bound (+ 2 s) the validator refuses
/// `live` and is not ready, and says why; it stays so while the broker is away.
async fn assert_fails_closed(app: &TestApp, live: &str, stopped_at: Instant) {
    let deadline = stopped_at + MAX_STALENESS + Duration::from_secs(2);
    loop {
        let active = app.introspect(live).await["active"] == true;
        let (ready, _) = readyz(app).await;
        if !active && ready == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        if Instant::now() >= deadline {
            panic!(
                "{:?} after the broker was cut off the validator still answers active={active}, readyz {ready}; status {}",
                stopped_at.elapsed(),
                validator_status(app).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "validator failed closed {:?} after the broker was cut off",
        stopped_at.elapsed()
    );
    let (_, body) = readyz(app).await;
    assert_eq!(body["reason"], "stale", "{body}");
    let status = validator_status(app).await;
    assert_eq!(status["stale"], true, "{status}");
    // It stays closed: an idle poll does not make it fresh again.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if app.introspect(live).await["active"] != false {
            panic!(
                "the validator opened again {:?} after the broker was cut off; status {}",
                stopped_at.elapsed(),
                validator_status(app).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the status names the read error.
    loop {
        let status = validator_status(app).await;
        if status["tail_error"].is_string() {
            break;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(15),
            "the status never named the read error ({:?} after the cut): {status}",
            stopped_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until the validator is ready again after the broker came back.
async fn await_recovered(app: &TestApp) -> Duration {
    let start = Instant::now();
    loop {
        if readyz(app).await.0 == StatusCode::OK {
            return start.elapsed();
        }
        if start.elapsed() >= Duration::from_secs(90) {
            panic!(
                "the validator never recovered; status {}",
                validator_status(app).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGCONTs the broker however the test ends.
struct ResumeKafka;

impl Drop for ResumeKafka {
    fn drop(&mut self) {
        services("resume-kafka");
    }
}

/// Cuts the validator off (a hung broker, then a stopped one), checks it fails closed
/// within the bound, heals the broker and checks it recovers with nothing lost.
async fn cut_off_and_heal(app: &TestApp, live: &Value, signed_out: &Value, hung: bool) {
    let live_token = str_field(live, "access_token");
    let stopped_at = if hung {
        let resume = ResumeKafka;
        services("pause-kafka");
        let paused_at = Instant::now();
        assert_fails_closed(app, live_token, paused_at).await;
        drop(resume);
        paused_at
    } else {
        let restart = stop_kafka().await;
        let stopped_at = Instant::now();
        assert_fails_closed(app, live_token, stopped_at).await;
        start_kafka(restart).await;
        stopped_at
    };
    let recovered = await_recovered(app).await;
    eprintln!(
        "validator ready again {recovered:?} after the broker was back ({:?} after the cut, hung: {hung})",
        stopped_at.elapsed()
    );
    // Nothing lost, nothing stuck: the old answers hold, and the log flows again.
    assert_eq!(app.introspect(live_token).await["active"], true);
    assert_eq!(
        app.introspect(str_field(signed_out, "access_token")).await["active"],
        false
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let late = loop {
        let response = app.open(&json!({"subject": "late"})).await;
        if response.status() == StatusCode::CREATED {
            break response.json::<Value>().await.unwrap();
        }
        assert!(Instant::now() < deadline, "the API never recovered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        app.revoke(str_field(&late, "refresh_token")).await.status(),
        StatusCode::OK
    );
    app.await_active(str_field(&late, "access_token"), false)
        .await;
    // The read error clears once the reader reads again. A broker that has just
    // restarted may still refuse a watermark request or two (its partitions loading),
    // so the status is watched for a while, not read once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = validator_status(app).await;
        if status["tail_error"].is_null() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the validator still reports a read error 30 s after it recovered: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_cut_off_from_kafka_fails_closed_and_recovers_by_itself() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (_env, _processes, app) = deployment(dir.path());
    app.await_ready().await;
    let live = app.login("live").await;
    let signed_out = app.login("signed-out").await;
    assert_eq!(
        app.revoke(str_field(&signed_out, "refresh_token"))
            .await
            .status(),
        StatusCode::OK
    );
    app.await_active(str_field(&signed_out, "access_token"), false)
        .await;
    app.await_active(str_field(&live, "access_token"), true)
        .await;

    // A hung broker: connections stay open, nothing answers, no error reaches the
    // reader's queue; then a stopped one.
    cut_off_and_heal(&app, &live, &signed_out, true).await;
    cut_off_and_heal(&app, &live, &signed_out, false).await;
}

/// What the load saw the API answer.
#[derive(Default)]
struct Observed {
    /// (family, access-token jti) of every access token the API returned.
    issued: Vec<(String, String)>,
    /// The access tokens of every family whose signout was acknowledged.
    signed_out: Vec<Vec<String>>,
    /// Answers that were neither a success nor 503 (with Retry-After).
    unexpected: Vec<String>,
    /// Successes after the broker came back.
    after_restart: usize,
}

/// One client: login, refresh, and sign out every other family, until `stop`.
async fn client_loop(
    app: TestApp,
    worker: usize,
    (stop, restarted, successes): (Arc<AtomicBool>, Arc<AtomicBool>, Arc<AtomicUsize>),
) -> Observed {
    let mut seen = Observed::default();
    let mut n = 0usize;
    let check = |response: &reqwest::Response, what: &str, seen: &mut Observed| -> bool {
        let status = response.status();
        if status.is_success() {
            if restarted.load(Ordering::Relaxed) {
                seen.after_restart += 1;
                successes.fetch_add(1, Ordering::Relaxed);
            }
            return true;
        }
        if status != StatusCode::SERVICE_UNAVAILABLE
            || !response.headers().contains_key("retry-after")
        {
            seen.unexpected.push(format!("{what}: {status}"));
        }
        false
    };
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let login = app
            .open(&json!({"subject": format!("load-{worker}-{n}")}))
            .await;
        if !check(&login, "login", &mut seen) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let login: Value = login.json().await.unwrap();
        let sid = str_field(&login, "session_id").to_owned();
        let mut tokens = vec![str_field(&login, "access_token").to_owned()];
        seen.issued.push((sid.clone(), jti_of(&tokens[0])));
        let refreshed = app.refresh(str_field(&login, "refresh_token")).await;
        let refresh_token = if check(&refreshed, "refresh", &mut seen) {
            let body: Value = refreshed.json().await.unwrap();
            let access = str_field(&body, "access_token").to_owned();
            seen.issued.push((sid.clone(), jti_of(&access)));
            tokens.push(access);
            str_field(&body, "refresh_token").to_owned()
        } else {
            str_field(&login, "refresh_token").to_owned()
        };
        if n.is_multiple_of(2) {
            let revoked = app.revoke(&refresh_token).await;
            if check(&revoked, "signout", &mut seen) {
                seen.signed_out.push(tokens);
            }
        }
    }
    seen
}

/// Every (family, jti) of an access-token event in the log, read to its end.
async fn issued_in_log(env: &HashMap<String, String>) -> HashSet<(String, String)> {
    let mut config =
        ledger_kafka::KafkaConfig::new(&env["LEDGER_KAFKA_BROKERS"], &env["LEDGER_KAFKA_TOPIC"]);
    config.partitions = 3;
    let log = ledger_kafka::KafkaLog::connect(config).await.unwrap();
    let started = ledger_clock::now();
    let mut reader = log.reader(StartFrom::Beginning).await.unwrap();
    let mut issued = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Read until the reader proves it reached the end as of after the test's last call.
    while reader.caught_up_at().is_none_or(|at| at < started) {
        assert!(Instant::now() < deadline, "never read the log to its end");
        for record in reader.poll(1000, Duration::from_millis(200)).await.unwrap() {
            let family = record.event.session_id.map(|s: SessionId| s.to_string());
            let jti = match &record.event.kind {
                EventKind::SessionIssued(e) => Some(e.access_jti.clone()),
                EventKind::SessionRefreshed(e) => Some(e.access_jti.clone()),
                EventKind::SessionRevokedAll(_) => None,
            };
            if let (Some(family), Some(jti)) = (family, jti) {
                issued.insert((family, jti));
            }
        }
    }
    issued
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_stopped_and_restarted_under_load_loses_no_signout_and_issues_nothing_unlogged() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _processes, app) = deployment(dir.path());
    app.await_ready().await;
    let live = app.login("live").await;
    app.await_active(str_field(&live, "access_token"), true)
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let restarted = Arc::new(AtomicBool::new(false));
    let successes = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let client = app_at(Some(&app.api), Some(&app.validator));
            let flags = (stop.clone(), restarted.clone(), successes.clone());
            tokio::spawn(client_loop(client, w, flags))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let restart = stop_kafka().await;
    let stopped_at = Instant::now();
    assert_fails_closed(&app, str_field(&live, "access_token"), stopped_at).await;
    start_kafka(restart).await;
    restarted.store(true, Ordering::Relaxed);
    let recovered = await_recovered(&app).await;
    let recovered_at = Instant::now();
    eprintln!("validator ready {recovered:?} after kafka was up again, under load");
    // Let the load run on the recovered service until the API answers it again.
    let deadline = Instant::now() + Duration::from_secs(90);
    while successes.load(Ordering::Relaxed) < 20 {
        assert!(
            Instant::now() < deadline,
            "the API never answered after kafka came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "the API answered again {recovered:?} + {:?} after kafka was up",
        recovered_at.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    let mut seen = Observed::default();
    for w in workers {
        let o = w.await.unwrap();
        seen.issued.extend(o.issued);
        seen.signed_out.extend(o.signed_out);
        seen.unexpected.extend(o.unexpected);
        seen.after_restart += o.after_restart;
    }
    assert!(
        seen.unexpected.is_empty(),
        "answers other than success or 503 + Retry-After: {:?}",
        seen.unexpected
    );
    assert!(
        seen.after_restart > 0,
        "the API never answered after kafka came back"
    );
    assert!(!seen.signed_out.is_empty(), "no signout was acknowledged");
    eprintln!(
        "{} access tokens issued, {} signouts acknowledged, {} successes after the restart",
        seen.issued.len(),
        seen.signed_out.len(),
        seen.after_restart
    );

    // No acknowledged signout lost: every token of those families refused.
    for tokens in &seen.signed_out {
        for token in tokens {
            app.await_active(token, false).await;
        }
    }
    // No token without its event (I1).
    let logged = issued_in_log(&env).await;
    let unlogged: Vec<_> = seen
        .issued
        .iter()
        .filter(|t| !logged.contains(*t))
        .collect();
    assert!(
        unlogged.is_empty(),
        "{} access tokens have no event in the log: {:?}",
        unlogged.len(),
        &unlogged[..unlogged.len().min(5)]
    );
    assert_eq!(
        app.introspect(str_field(&live, "access_token")).await["active"],
        true
    );
}
