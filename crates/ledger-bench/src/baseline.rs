//! The baseline: a `jti` blacklist in a real `redis-server` on loopback, written with
//! expiry (`SET jti 1 EX ttl`), one `EXISTS` per check, over a pool of connections
//! (one per concurrent worker, as a pooled client hands them out).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ledger_token::AccessTokenValidator;
use redis::aio::MultiplexedConnection;

use crate::report::{Latencies, progress};

#[derive(Debug)]
pub struct Redis {
    client: redis::Client,
    pub version: String,
}

#[derive(Debug)]
pub struct Load {
    pub operations: u64,
    pub elapsed: Duration,
    pub latencies: Latencies,
    /// Checks that found the key.
    pub hits: u64,
}

impl Load {
    pub fn per_second(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }
}

impl Redis {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).with_context(|| format!("redis url {url}"))?;
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut con)
            .await?;
        let version = info_field(&info, "redis_version").unwrap_or("?").to_owned();
        Ok(Redis { client, version })
    }

    async fn connection(&self) -> anyhow::Result<MultiplexedConnection> {
        Ok(self.client.get_multiplexed_async_connection().await?)
    }

    /// Empties the server, then writes the blacklist: `SET key 1 EX ttl` per key,
    /// pipelined. Returns the server's memory growth per key.
    pub async fn load_blacklist(&self, keys: &[String], ttl: Duration) -> anyhow::Result<f64> {
        progress(&format!(
            "writing {} keys to the Redis blacklist",
            keys.len()
        ));
        // Loading and emptying a million keys outlasts the client's default response
        // timeout (a second run finds the previous run's keys to flush).
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let mut con = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("FLUSHALL").query_async::<()>(&mut con).await?;
        let before = self.used_memory(&mut con).await?;
        for chunk in keys.chunks(10_000) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("SET")
                    .arg(k)
                    .arg(1)
                    .arg("EX")
                    .arg(ttl.as_secs())
                    .ignore();
            }
            pipe.query_async::<()>(&mut con).await?;
        }
        let after = self.used_memory(&mut con).await?;
        Ok((after.saturating_sub(before)) as f64 / keys.len().max(1) as f64)
    }

    async fn used_memory(&self, con: &mut MultiplexedConnection) -> anyhow::Result<u64> {
        let info: String = redis::cmd("INFO").arg("memory").query_async(con).await?;
        info_field(&info, "used_memory")
            .and_then(|v| v.parse().ok())
            .context("INFO memory has no used_memory")
    }

    /// `concurrency` workers, each with its own connection, one `EXISTS` per check,
    /// cycling through `keys`, for `seconds`.
    pub async fn exists(
        &self,
        keys: Arc<Vec<String>>,
        concurrency: usize,
        seconds: f64,
    ) -> anyhow::Result<Load> {
        let budget = Duration::from_secs_f64(seconds);
        let mut workers = tokio::task::JoinSet::new();
        let mut cons = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            cons.push(self.connection().await?);
        }
        let started = Instant::now();
        for (w, mut con) in cons.into_iter().enumerate() {
            let keys = keys.clone();
            workers.spawn(async move {
                let mut lat = Latencies::with_capacity(1 << 16);
                let mut i = w * keys.len() / concurrency.max(1);
                let mut hits = 0u64;
                let begun = Instant::now();
                while begun.elapsed() < budget {
                    let t = Instant::now();
                    let n: i64 = redis::cmd("EXISTS")
                        .arg(&keys[i])
                        .query_async(&mut con)
                        .await?;
                    lat.record(t.elapsed());
                    hits += u64::from(n > 0);
                    i = (i + 1) % keys.len();
                }
                anyhow::Ok((lat, hits))
            });
        }
        collect(workers, started).await
    }

    /// What a resource server does today per request: verify the JWT (EdDSA +
    /// claims), then `EXISTS jti` in the blacklist. Each token once.
    pub async fn verify_then_exists(
        &self,
        validator: Arc<AccessTokenValidator>,
        tokens: Arc<Vec<(String, String, bool)>>,
        concurrency: usize,
    ) -> anyhow::Result<Load> {
        let per_worker = tokens.len().div_ceil(concurrency.max(1));
        let mut workers = tokio::task::JoinSet::new();
        let mut cons = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            cons.push(self.connection().await?);
        }
        let started = Instant::now();
        for (w, mut con) in cons.into_iter().enumerate() {
            let (validator, tokens) = (validator.clone(), tokens.clone());
            workers.spawn(async move {
                let mut lat = Latencies::with_capacity(per_worker);
                let mut hits = 0u64;
                let end = ((w + 1) * per_worker).min(tokens.len());
                for (token, _, _) in tokens.get(w * per_worker..end).unwrap_or_default() {
                    let t = Instant::now();
                    let claims = validator
                        .validate(token, ledger_clock::now())
                        .map_err(|e| anyhow::anyhow!("benchmark token refused: {e}"))?;
                    let n: i64 = redis::cmd("EXISTS")
                        .arg(&claims.jti)
                        .query_async(&mut con)
                        .await?;
                    lat.record(t.elapsed());
                    hits += u64::from(n > 0);
                }
                anyhow::Ok((lat, hits))
            });
        }
        collect(workers, started).await
    }
}

async fn collect(
    mut workers: tokio::task::JoinSet<anyhow::Result<(Latencies, u64)>>,
    started: Instant,
) -> anyhow::Result<Load> {
    let mut latencies = Latencies::default();
    let mut hits = 0;
    while let Some(done) = workers.join_next().await {
        let (lat, h) = done??;
        latencies.merge(lat);
        hits += h;
    }
    Ok(Load {
        operations: latencies.len() as u64,
        elapsed: started.elapsed(),
        latencies,
        hits,
    })
}

fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}
