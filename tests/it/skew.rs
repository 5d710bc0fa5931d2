//! Clock skew: validators whose clocks run ahead of and behind the API's by the
//! leeway + 5 s (`LEDGER_TEST_CLOCK_OFFSET`, test builds only), on Kafka + CQL.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use session_ledger::{Roles, Settings, start};

use crate::helpers::{Backend, LOGIN_TOKEN, Process, TestApp, app_at, backend_env, str_field};

const LEEWAY: u64 = 5;
/// Leeway + 5 s.
const SKEW: u64 = LEEWAY + 5;

fn claim(access_token: &str, name: &str) -> i64 {
    crate::helpers::access_claims(access_token)[name]
        .as_i64()
        .unwrap()
}

/// The monotonic instant at which the (unskewed) system clock reads `unix_seconds`.
fn instant_at(unix_seconds: i64) -> Instant {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let at = Duration::from_secs(u64::try_from(unix_seconds).unwrap());
    match at.checked_sub(now) {
        Some(ahead) => Instant::now() + ahead,
        None => Instant::now() - (now - at),
    }
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(at.into()).await;
}

/// The validator's answer for each token.
async fn answers(app: &TestApp, tokens: &[&str]) -> Vec<bool> {
    let mut out = Vec::new();
    for t in tokens {
        out.push(app.introspect(t).await["active"] == true);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_skewed_by_more_than_the_leeway_accept_no_revoked_or_expired_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = backend_env(Backend::Kafka, dir.path());
    env.extend([
        // Refresh tokens live no longer than access tokens, so nothing but the
        // access tokens' expiry keeps the revocation entries.
        ("LEDGER_ACCESS_TTL".to_owned(), "15s".to_owned()),
        ("LEDGER_REFRESH_IDLE_TTL".to_owned(), "15s".to_owned()),
        ("LEDGER_CLOCK_LEEWAY".to_owned(), format!("{LEEWAY}s")),
        ("LEDGER_REFRESH_GRACE".to_owned(), "2s".to_owned()),
    ]);
    let settings = Settings::from_lookup(|k| env.get(k).cloned()).unwrap();
    let running = start(
        settings,
        Roles {
            api: true,
            projector: true,
            validator: false,
        },
    )
    .await
    .unwrap();
    let api = format!("http://{}", running.api_addr.unwrap());
    let ahead_offset = format!("+{SKEW}s");
    let behind_offset = format!("-{SKEW}s");
    let ahead = Process::spawn(
        "validator",
        &env,
        &[("LEDGER_TEST_CLOCK_OFFSET", ahead_offset.as_str())],
    );
    let ahead_app = app_at(Some(&api), ahead.validator.as_deref());
    ahead_app.await_ready().await;

    // One session signed out, one of a subject signed out everywhere, and a live one
    // (the control), minted last so that its expiry is the latest.
    let signed_out = ahead_app.login("sid").await;
    let everywhere = ahead_app.login("sam").await;
    let live = ahead_app.login("lena").await;
    let response = ahead_app
        .revoke(str_field(&signed_out, "refresh_token"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = ahead_app
        .client
        .post(format!("{api}/v1/subjects/sam/revoke"))
        .bearer_auth(LOGIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let tokens = [
        str_field(&live, "access_token"),
        str_field(&signed_out, "access_token"),
        str_field(&everywhere, "access_token"),
    ];
    let exp = claim(tokens[0], "exp");
    assert!(tokens.iter().all(|t| claim(t, "exp") <= exp));

    // Ahead: its clock passes the expiry early; until then only the control is active.
    let until = instant_at(exp + i64::try_from(LEEWAY).unwrap() - i64::try_from(SKEW).unwrap());
    ahead_app.await_active(tokens[0], true).await;
    ahead_app.await_active(tokens[1], false).await;
    ahead_app.await_active(tokens[2], false).await;
    assert!(Instant::now() < until, "too slow to see the control active");
    assert_eq!(answers(&ahead_app, &tokens).await, [true, false, false]);
    sleep_until(instant_at(exp)).await;
    assert_eq!(
        answers(&ahead_app, &tokens).await,
        [false, false, false],
        "the ahead validator accepts an expired token"
    );

    // Behind: it still accepts the control until its own clock passes exp + leeway,
    // i.e. leeway + skew after exp. The worst moment is after every unskewed party
    // considers the tokens dead (exp + leeway), when nothing but the revocation
    // entries' skew margin keeps the revocations: restart it then, so that it
    // bootstraps from the store, and it must still refuse both revoked tokens.
    let leeway = i64::try_from(LEEWAY).unwrap();
    sleep_until(instant_at(exp + leeway + 1)).await;
    let behind = Process::spawn(
        "validator",
        &env,
        &[("LEDGER_TEST_CLOCK_OFFSET", behind_offset.as_str())],
    );
    let behind_app = app_at(Some(&api), behind.validator.as_deref());
    behind_app.await_ready().await;
    let still_valid = instant_at(exp + leeway + i64::try_from(SKEW).unwrap() - 1);
    assert!(
        Instant::now() < still_valid,
        "the behind validator was too slow to start"
    );
    while Instant::now() < still_valid {
        assert_eq!(
            answers(&behind_app, &tokens).await,
            [true, false, false],
            "the behind validator accepts a revoked token"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And past exp + leeway by its own clock, nothing.
    sleep_until(instant_at(exp + leeway + i64::try_from(SKEW).unwrap() + 1)).await;
    assert_eq!(
        answers(&behind_app, &tokens).await,
        [false, false, false],
        "the behind validator accepts a token past exp + leeway by its own clock"
    );
    running.stop().await.unwrap();
}
