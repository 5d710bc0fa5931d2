//! The JWKS refresher: a validator's copy of the API's verification keys, read from a
//! URL (`LEDGER_JWKS_URL`) and re-read periodically and whenever the [`Introspector`]
//! reports a token naming a key not seen yet, so rotation reaches validators without a
//! restart.
//!
//! The URL is https (plain http only for a loopback address, or when configured so;
//! checked by the binary's configuration); redirects are not followed, so the keys
//! come from the configured origin only; the body is bounded.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ledger_core::Timestamp;
use ledger_token::{KeyError, VerificationKeys};
use tokio_util::sync::CancellationToken;

use crate::Introspector;

/// Largest JWKS body read: a key set of a few keys is well under 2 KB.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// Why the JWK Set could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("the jwks answered {0}: redirects are not followed")]
    Redirect(reqwest::StatusCode),
    #[error("the jwks answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the jwks body exceeds {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("the jwks is not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("stopped while waiting for the jwks")]
    Stopped,
}

/// Reads and parses the JWK Set at `url`.
pub async fn fetch(url: &str) -> Result<VerificationKeys, JwksError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut response = client.get(url).send().await?;
    let status = response.status();
    if status.is_redirection() {
        return Err(JwksError::Redirect(status));
    }
    if !status.is_success() {
        return Err(JwksError::Status(status));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        return Err(JwksError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let jwks: serde_json::Value = serde_json::from_slice(&body).map_err(JwksError::NotJson)?;
    Ok(VerificationKeys::from_jwks(&jwks)?)
}

/// How often the refresher reads the JWKS.
#[derive(Clone, Copy, Debug)]
pub struct JwksConfig {
    /// How often validators re-read the JWKS.
    pub refresh: Duration,
    /// The least time between two reads prompted by unknown key ids.
    pub min_interval: Duration,
    /// Between two tries of the first read, while the API comes up.
    pub retry: Duration,
}

impl Default for JwksConfig {
    fn default() -> Self {
        JwksConfig {
            refresh: Duration::from_secs(30),
            min_interval: Duration::from_secs(2),
            retry: Duration::from_secs(1),
        }
    }
}

/// How the refresher is doing: reads done and failed, when the keys were last read,
/// and the last failure (cleared by the next good read).
#[derive(Debug, Default)]
pub struct JwksStatus {
    refreshed: AtomicU64,
    failed: AtomicU64,
    last: Mutex<LastRead>,
}

#[derive(Clone, Debug, Default)]
struct LastRead {
    /// The last good read.
    at: Option<Timestamp>,
    /// Why the last read failed, unless a read succeeded since.
    error: Option<String>,
}

impl JwksStatus {
    /// Good reads since start, the first one included.
    pub fn refreshed(&self) -> u64 {
        self.refreshed.load(Ordering::Relaxed)
    }

    /// Failed reads since start (the keys in use were kept).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Why the last read failed, unless a read succeeded since.
    pub fn last_error(&self) -> Option<String> {
        self.last().error
    }

    /// When the keys were last read.
    pub fn last_refreshed_at(&self) -> Option<Timestamp> {
        self.last().at
    }

    /// The refresher's part of the validator's `/v1/status`.
    pub fn report(&self) -> serde_json::Value {
        let last = self.last();
        serde_json::json!({
            "refreshed": self.refreshed(),
            "failed": self.failed(),
            "last_refreshed_at": last.at,
            "last_error": last.error,
        })
    }

    fn last(&self) -> LastRead {
        self.last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn record(&self, result: Result<(), &JwksError>, now: Timestamp) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match result {
            Ok(()) => {
                self.refreshed.fetch_add(1, Ordering::Relaxed);
                *last = LastRead {
                    at: Some(now),
                    error: None,
                };
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                last.error = Some(e.to_string());
            }
        }
    }
}

/// Keeps an [`Introspector`]'s verification keys in step with the JWKS at a URL.
#[derive(Debug)]
pub struct JwksRefresher {
    url: String,
    introspector: Introspector,
    config: JwksConfig,
    status: std::sync::Arc<JwksStatus>,
}

impl JwksRefresher {
    /// The keys to start with: a validator starts only once it has them, so this
    /// retries (every `config.retry`) while the API comes up, until `shutdown`.
    pub async fn initial_keys(
        url: &str,
        config: JwksConfig,
        shutdown: &CancellationToken,
    ) -> Result<VerificationKeys, JwksError> {
        loop {
            match fetch(url).await {
                Ok(keys) => return Ok(keys),
                Err(e) => tracing::warn!(error = %e, %url, "waiting for the jwks"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return Err(JwksError::Stopped),
                () = tokio::time::sleep(config.retry) => {}
            }
        }
    }

    pub fn new(url: impl Into<String>, introspector: Introspector, config: JwksConfig) -> Self {
        JwksRefresher {
            url: url.into(),
            introspector,
            config,
            status: std::sync::Arc::default(),
        }
    }

    pub fn status(&self) -> std::sync::Arc<JwksStatus> {
        self.status.clone()
    }

    /// Re-reads the JWKS every `config.refresh`, and at once (at most every
    /// `config.min_interval`) when a token names a key not seen yet, until `shutdown`.
    /// A failed read keeps the keys in use.
    pub async fn run(self, shutdown: CancellationToken) {
        let url = &self.url;
        loop {
            let last = tokio::time::Instant::now();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.refresh) => {}
                () = self.introspector.unknown_key_presented() => {
                    tokio::time::sleep_until(last + self.config.min_interval).await;
                }
            }
            match fetch(url).await {
                Ok(keys) => {
                    self.status.record(Ok(()), ledger_clock::now());
                    if self.introspector.set_keys(keys) {
                        tracing::info!(%url, "verification keys changed");
                    }
                }
                Err(e) => {
                    self.status.record(Err(&e), ledger_clock::now());
                    tracing::warn!(error = %e, %url, "jwks refresh failed; keeping the keys in use");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An HTTP/1.1 server on a loopback port answering each request with
    /// `answer(path)` (the whole response, head included); returns its base URL.
    async fn serve(answer: fn(&str) -> Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let _ = stream.write_all(&answer(&path)).await;
                });
            }
        });
        format!("http://{addr}")
    }

    fn ok(body: &[u8]) -> Vec<u8> {
        let mut response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(body);
        response
    }

    fn jwks() -> Vec<u8> {
        ledger_token::SigningKeys::generate()
            .verification_keys()
            .jwks()
            .to_string()
            .into_bytes()
    }

    #[tokio::test]
    async fn a_jwks_is_read_from_where_it_is_configured_only() {
        let base = serve(|path| match path {
            "/jwks.json" => ok(&jwks()),
            // Elsewhere, to a key set the configured origin does not publish.
            _ => b"HTTP/1.1 302 Found\r\nlocation: /jwks.json\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
        })
        .await;
        let keys = fetch(&format!("{base}/jwks.json")).await.unwrap();
        assert_eq!(keys.kids().count(), 1);
        let err = fetch(&format!("{base}/moved")).await.unwrap_err();
        assert!(
            err.to_string().contains("redirects are not followed"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_oversized_jwks_is_refused() {
        // Announced: refused before reading it.
        let base = serve(|_| ok(&vec![b' '; MAX_JWKS_BYTES + 1])).await;
        let err = fetch(&format!("{base}/jwks.json")).await.unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
        // Not announced (chunked, no length): refused once it grows past the cap.
        let base = serve(|_| {
            let chunk = vec![b' '; 16 * 1024];
            let mut response =
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                    .to_vec();
            for _ in 0..(MAX_JWKS_BYTES / chunk.len() + 2) {
                response.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                response.extend_from_slice(&chunk);
                response.extend_from_slice(b"\r\n");
            }
            response.extend_from_slice(b"0\r\n\r\n");
            response
        })
        .await;
        let err = fetch(&format!("{base}/jwks.json")).await.unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }

    #[test]
    fn the_status_keeps_the_last_good_read_through_a_failure_and_clears_the_error() {
        let status = JwksStatus::default();
        let at = Timestamp::from_unix_seconds(1_700_000_000);
        status.record(Ok(()), at);
        status.record(
            Err(&JwksError::Status(reqwest::StatusCode::BAD_GATEWAY)),
            Timestamp::from_unix_seconds(1_700_000_030),
        );
        let report = status.report();
        assert_eq!(report["refreshed"], 1, "{report}");
        assert_eq!(report["failed"], 1, "{report}");
        assert_eq!(status.last_refreshed_at(), Some(at));
        assert_eq!(report["last_error"], "the jwks answered 502 Bad Gateway");
        status.record(Ok(()), Timestamp::from_unix_seconds(1_700_000_060));
        assert_eq!(status.last_error(), None);
        assert_eq!(
            status.last_refreshed_at(),
            Some(Timestamp::from_unix_seconds(1_700_000_060))
        );
    }
}
