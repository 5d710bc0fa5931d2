//! Two regions on the real binary: each its own Kafka cluster (east 127.0.0.1:9092,
//! west 127.0.0.1:9192), its own keyspace and its own `session-ledger dev`, linked by
//! MirrorMaker 2 (`scripts/services.sh up --regions 2`). A test binary of its own
//! because it stops and starts MirrorMaker, which no other test binary uses.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use ledger_tests::helpers::{
    Process, TestApp, app_at, env_or, run_tool, services, str_field, test_env,
};
use reqwest::StatusCode;
use serde_json::Value;

const EAST: &str = "east";
const WEST: &str = "west";
/// How long a test waits for replication in the ordinary case (MirrorMaker finds a
/// new topic within its 2 s refresh, then copies within milliseconds).
const REPLICATION: Duration = Duration::from_secs(60);

/// How the link between the regions is cut (`LEDGER_REGION_CUT_MODE`): `stop` stops
/// MirrorMaker, which then starts again from its committed positions (a JVM start-up
/// and its Connect groups forming); `pause` freezes it with SIGSTOP, as a network
/// partition would, and lets it go on where it was.
#[derive(Clone, Copy)]
enum CutMode {
    Stop,
    Pause,
}

impl CutMode {
    fn from_env() -> Self {
        match env_or("LEDGER_REGION_CUT_MODE", "stop").as_str() {
            "stop" => Self::Stop,
            "pause" => Self::Pause,
            other => panic!("LEDGER_REGION_CUT_MODE is `stop` or `pause`, not {other:?}"),
        }
    }

    fn cut(self) -> RestoreLink {
        services(match self {
            Self::Stop => "stop-mirror",
            Self::Pause => "pause-mirror",
        });
        RestoreLink(self)
    }
}

/// Restores the link however the test ends, so it is up for what follows.
struct RestoreLink(CutMode);

impl Drop for RestoreLink {
    fn drop(&mut self) {
        services(match self.0 {
            CutMode::Stop => "start-mirror",
            CutMode::Pause => "resume-mirror",
        });
    }
}

/// The environment of one region: its cluster, its keyspace, its own topic and the
/// other region's, as MirrorMaker names it. Both regions share one key directory
/// (the API replicas of every region hold the same signing and MAC keys).
fn region_env(
    region: &str,
    other: &str,
    unique: &str,
    keys: &Path,
    vars: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut env = test_env(keys);
    let brokers = if region == EAST {
        env_or("LEDGER_KAFKA_BROKERS", "127.0.0.1:9092")
    } else {
        env_or("LEDGER_WEST_KAFKA_BROKERS", "127.0.0.1:9192")
    };
    let topic = format!("regional-{unique}");
    env.extend([
        ("LEDGER_BACKEND".into(), "kafka".into()),
        ("LEDGER_REGION".into(), region.into()),
        ("LEDGER_KAFKA_BROKERS".into(), brokers),
        (
            "LEDGER_SCYLLA_NODES".into(),
            env_or("LEDGER_SCYLLA_NODES", "127.0.0.1:9042"),
        ),
        ("LEDGER_KAFKA_TOPIC".into(), topic.clone()),
        (
            "LEDGER_KAFKA_REMOTE_TOPICS".into(),
            format!("{other}.{topic}"),
        ),
        (
            "LEDGER_SCYLLA_KEYSPACE".into(),
            format!("ledger_{region}_{unique}"),
        ),
        ("LEDGER_KAFKA_PARTITIONS".into(), "3".into()),
        ("LEDGER_REFRESH_GRACE".into(), "5s".into()),
    ]);
    for (k, v) in vars {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    env
}

struct Region {
    env: HashMap<String, String>,
    app: TestApp,
    _process: Process,
}

fn start_region(env: HashMap<String, String>) -> Region {
    let process = Process::spawn("dev", &env, &[]);
    let app = app_at(process.api.as_deref(), process.validator.as_deref());
    Region {
        env,
        app,
        _process: process,
    }
}

async fn two_regions() -> (Region, Region, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let unique = uuid::Uuid::new_v4().simple().to_string();
    // East first: it creates the shared keys; west reads them.
    let east = start_region(region_env(EAST, WEST, &unique, keys.path(), &[]));
    let west = start_region(region_env(WEST, EAST, &unique, keys.path(), &[]));
    east.app.await_ready().await;
    west.app.await_ready().await;
    (east, west, keys)
}

/// Waits (bounded) until `region`'s API knows the session at `generation` or later.
async fn await_generation(region: &TestApp, session: &str, generation: u64, within: Duration) {
    let start = Instant::now();
    loop {
        let response = region.session(session).await;
        if response.status() == StatusCode::OK {
            let body: Value = response.json().await.unwrap();
            if body["generation"].as_u64().unwrap() >= generation {
                return;
            }
        }
        assert!(
            start.elapsed() < within,
            "session {session} never reached generation {generation} in this region"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until the validator answers `active` for the token.
async fn await_active(region: &TestApp, token: &str, active: bool, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if region.introspect(token).await["active"] == active {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "validator never answered active={active}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn status_of(response: reqwest::Response) -> (StatusCode, bool, Value) {
    let status = response.status();
    let retry_after = response.headers().contains_key("retry-after");
    (status, retry_after, response.json().await.unwrap())
}

/// `session-ledger replay --verify` in a region: the digest of its log (its own topic
/// and the mirrored one) once its live projection matches it.
fn verified_digest(env: &HashMap<String, String>) -> Option<String> {
    let (code, out) = run_tool(env, &["replay", "--verify", "--wait", "10s"]);
    if code != 0 || !out.contains("the live projection matches") {
        return None;
    }
    out.lines()
        .find_map(|l| l.strip_prefix("digest:"))
        .map(|d| d.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_agree_on_refreshes_revocations_and_converge_after_a_link_cut() {
    let (east, west, _keys) = two_regions().await;

    // The link carries this test's topics (MirrorMaker finds them within seconds).
    let login = east.app.login("ada").await;
    let session = str_field(&login, "session_id").to_owned();
    await_generation(&west.app, &session, 0, REPLICATION).await;

    // Signout in east is enforced by west's validator (I2 across regions).
    let access = str_field(&login, "access_token").to_owned();
    await_active(&west.app, &access, true, REPLICATION).await;
    let response = east.app.revoke(str_field(&login, "refresh_token")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let propagation = await_active(&west.app, &access, false, Duration::from_secs(10)).await;
    println!("signout in east -> active:false in west after {propagation:?}");
    propagation_samples(&east, &west).await;

    // Login in east, refresh in west: a rotation, recorded in west's log.
    let login = east.app.login("grace").await;
    let (session, rt0) = (
        str_field(&login, "session_id").to_owned(),
        str_field(&login, "refresh_token").to_owned(),
    );
    await_generation(&west.app, &session, 0, REPLICATION).await;
    let rotated = west.app.refresh_ok(&rt0).await;
    let rt1 = str_field(&rotated, "refresh_token").to_owned();
    assert_ne!(rt1, rt0);
    // A retry of the same token in east, within grace, gets the same successor
    // (whether or not east has seen west's rotation yet: successors are deterministic).
    let retried = east.app.refresh_ok(&rt0).await;
    assert_eq!(retried["refresh_token"], rt1, "{retried}");
    // Once east has seen the rotation and grace is over, rt0 in east is reuse: the
    // family is revoked in both regions.
    await_generation(&east.app, &session, 1, REPLICATION).await;
    tokio::time::sleep(Duration::from_millis(5100)).await; // LEDGER_REFRESH_GRACE=5s
    let (status, _, body) = status_of(east.app.refresh(&rt0).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    let west_access = str_field(&rotated, "access_token");
    await_active(&west.app, west_access, false, REPLICATION).await;
    let (status, _, body) = status_of(west.app.refresh(&rt1).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let revoked = west.app.status(&session).await;
    assert_eq!(
        revoked["revocation"]["reason"], "reuse_detected",
        "{revoked}"
    );

    link_cut(&east, &west).await;
}

/// The link cut while both regions take logins, refreshes and signouts; restored,
/// both regions reach the same projection and enforce every acknowledged signout.
async fn link_cut(east: &Region, west: &Region) {
    let mode = CutMode::from_env();
    let restore = mode.cut();
    let cut_at = Instant::now();

    let mut signed_out: Vec<String> = Vec::new();
    let mut acknowledged = 0;
    let mut still_active: Vec<String> = Vec::new();
    for (region, other, name) in [(east, west, EAST), (west, east, WEST)] {
        for i in 0..8 {
            let login = region.app.login(&format!("{name}-user{i}")).await;
            let rotated = region
                .app
                .refresh_ok(str_field(&login, "refresh_token"))
                .await;
            if i % 2 == 0 {
                let response = region
                    .app
                    .revoke(str_field(&rotated, "refresh_token"))
                    .await;
                assert_eq!(response.status(), StatusCode::OK);
                acknowledged += 1;
                signed_out.push(str_field(&rotated, "access_token").to_owned());
                signed_out.push(str_field(&login, "access_token").to_owned());
            } else {
                still_active.push(str_field(&rotated, "access_token").to_owned());
            }
            // The other region has not seen this family: it says "retry", never
            // "invalid", and issues nothing.
            if i == 1 {
                let (status, retry_after, body) = status_of(
                    other
                        .app
                        .refresh(str_field(&rotated, "refresh_token"))
                        .await,
                )
                .await;
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
                assert!(retry_after);
                assert!(body.get("refresh_token").is_none(), "{body}");
            }
        }
    }
    // Each region enforces its own signouts during the cut.
    for token in &signed_out[..8] {
        await_active(&east.app, token, false, Duration::from_secs(10)).await;
    }
    for token in &signed_out[8..] {
        await_active(&west.app, token, false, Duration::from_secs(10)).await;
    }
    // A longer cut (`LEDGER_REGION_CUT`, e.g. 60s from `scripts/bench.sh --regions`):
    // traffic in both regions until it is over.
    let cut: Duration = humantime::parse_duration(&env_or("LEDGER_REGION_CUT", "0s")).unwrap();
    let mut i = 0;
    while cut_at.elapsed() < cut {
        let region = if i % 2 == 0 { east } else { west };
        let login = region.app.login(&format!("cut{i}")).await;
        let rotated = region
            .app
            .refresh_ok(str_field(&login, "refresh_token"))
            .await;
        let response = region
            .app
            .revoke(str_field(&rotated, "refresh_token"))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        acknowledged += 1;
        signed_out.push(str_field(&rotated, "access_token").to_owned());
        i += 1;
    }
    println!(
        "link cut for {:?} with traffic ({} signouts acknowledged during the cut)",
        cut_at.elapsed(),
        acknowledged
    );

    let restored_at = Instant::now();
    drop(restore);
    let link_restored = restored_at.elapsed();

    // Both regions converge on one projection: each region's replay of its log
    // matches its live projection, and the two digests are equal.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (e, w) = (east.env.clone(), west.env.clone());
        let (de, dw) =
            tokio::task::spawn_blocking(move || (verified_digest(&e), verified_digest(&w)))
                .await
                .unwrap();
        if let (Some(de), Some(dw)) = (&de, &dw)
            && de == dw
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "regions never converged: east {de:?}, west {dw:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "converged {:?} after the link was restored ({}: {link_restored:?})",
        restored_at.elapsed(),
        match mode {
            CutMode::Stop => "MirrorMaker start-up",
            CutMode::Pause => "MirrorMaker resumed",
        }
    );
    // Every acknowledged signout is enforced in both regions; nothing else is.
    for region in [east, west] {
        for token in &signed_out {
            await_active(&region.app, token, false, Duration::from_secs(10)).await;
        }
        let active: BTreeSet<bool> =
            futures::future::join_all(still_active.iter().map(|t| region.app.introspect(t)))
                .await
                .iter()
                .map(|v| v["active"] == true)
                .collect();
        assert_eq!(active, BTreeSet::from([true]));
    }
}

/// More signouts in east, each timed from east's answer to west's `active: false`
/// (`LEDGER_REGION_SAMPLES`, default 20; `scripts/bench.sh --regions` asks for more).
/// Prints the spread; the only bound asserted is the generous one of `await_active`.
async fn propagation_samples(east: &Region, west: &Region) {
    let n: usize = env_or("LEDGER_REGION_SAMPLES", "20").parse().unwrap();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let login = east.app.login(&format!("sample{i}")).await;
        let access = str_field(&login, "access_token");
        // Known in west first, so the figure is the signout's trip alone.
        await_active(&west.app, access, true, REPLICATION).await;
        let response = east.app.revoke(str_field(&login, "refresh_token")).await;
        assert_eq!(response.status(), StatusCode::OK);
        samples.push(await_active(&west.app, access, false, Duration::from_secs(10)).await);
    }
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    println!(
        "cross-region revocation propagation over {n} signouts: p50 {:?} p99 {:?} max {:?} (min {:?})",
        at(0.50),
        at(0.99),
        samples[samples.len() - 1],
        samples[0]
    );
}

/// Two API instances of one region behind no sticky routing (`session-ledger dev` and a
/// second `session-ledger api` on the same topic and keyspace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_instances_in_one_region_agree() {
    let keys = tempfile::tempdir().unwrap();
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let env = region_env(EAST, WEST, &unique, keys.path(), &[]);
    let first = Process::spawn("dev", &env, &[]);
    let second = Process::spawn("api", &env, &[]);
    let a = app_at(first.api.as_deref(), first.validator.as_deref());
    let b = app_at(second.api.as_deref(), first.validator.as_deref());
    a.await_ready().await;

    // 16 concurrent refreshes of one token, split across both: one successor.
    let login = a.login("tabs").await;
    let rt0 = str_field(&login, "refresh_token").to_owned();
    let answers = futures::future::join_all((0..16).map(|i| {
        let (app, rt0) = (if i % 2 == 0 { &a } else { &b }, rt0.clone());
        async move { status_of(app.refresh(&rt0).await).await }
    }))
    .await;
    let successors: BTreeSet<String> = answers
        .iter()
        .map(|(status, _, body)| {
            assert_eq!(*status, StatusCode::OK, "{body}");
            str_field(body, "refresh_token").to_owned()
        })
        .collect();
    assert_eq!(successors.len(), 1, "{successors:?}");
    let rt1 = successors.into_iter().next().unwrap();

    // Signout on one instance, then a refresh on the other at once: refused.
    for i in 0..5 {
        let (signs_out, refreshes) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let login = a.login(&format!("leaver{i}")).await;
        let rotated = signs_out
            .refresh_ok(str_field(&login, "refresh_token"))
            .await;
        let response = signs_out.revoke(str_field(&rotated, "access_token")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let (status, _, body) = status_of(
            refreshes
                .refresh(str_field(&rotated, "refresh_token"))
                .await,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "refreshed after signout: {body}"
        );
        assert_eq!(body["error"], "invalid_grant");
    }

    // Reuse across instances: rt1 rotated away on b; after grace, rt1 on a revokes the
    // family, and b refuses the newest token too.
    let rotated = b.refresh_ok(&rt1).await;
    tokio::time::sleep(Duration::from_millis(5100)).await; // LEDGER_REFRESH_GRACE=5s
    let (status, _, body) = status_of(a.refresh(&rt1).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) = status_of(b.refresh(str_field(&rotated, "refresh_token")).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    await_active(
        &a,
        str_field(&rotated, "access_token"),
        false,
        Duration::from_secs(10),
    )
    .await;
    let session = a.status(str_field(&login, "session_id")).await;
    assert_eq!(
        session["revocation"]["reason"], "reuse_detected",
        "{session}"
    );
}
