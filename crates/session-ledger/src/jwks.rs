//! Validators' copy of the API's verification keys, read from `LEDGER_JWKS_URL`.
//!
//! The URL is https (plain http only for a loopback address, or with
//! `LEDGER_JWKS_ALLOW_HTTP=1`; checked in [`crate::config`]); redirects are not
//! followed, so the keys come from the configured origin only; the body is bounded.

use std::time::Duration;

use anyhow::Context;
use ledger_token::VerificationKeys;

/// Largest JWKS body read: a key set of a few keys is well under 2 KB.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// Reads and parses the JWK Set at `url`.
pub async fn fetch(url: &str) -> anyhow::Result<VerificationKeys> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut response = client.get(url).send().await?;
    let status = response.status();
    if status.is_redirection() {
        anyhow::bail!("the jwks answered {status}: redirects are not followed");
    }
    if !status.is_success() {
        anyhow::bail!("the jwks answered {status}");
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        anyhow::bail!("the jwks body exceeds {MAX_JWKS_BYTES} bytes");
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            anyhow::bail!("the jwks body exceeds {MAX_JWKS_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    let jwks: serde_json::Value = serde_json::from_slice(&body).context("the jwks is not JSON")?;
    Ok(VerificationKeys::from_jwks(&jwks)?)
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
}
