//! `ledger-bench`: one run, one table. Measures Session Ledger's revocation lookups,
//! validations, HTTP introspection, refresh, revocation propagation, projector and
//! replay on this machine, next to the approach it replaces — a `jti` blacklist in a
//! real Redis on loopback, run by this same program on the same token set and at the
//! same concurrency. `scripts/bench.sh` builds it, starts Redis, runs it and stops
//! Redis; `docs/BENCHMARKS.md` records a run.
//!
//! Figures go to stdout (the table); progress goes to stderr.

mod baseline;
mod inprocess;
mod log;
mod report;
mod service;
mod ssf;
mod stages;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cap::Cap;
use clap::Parser;

use crate::report::{Table, duration, progress, rate, ratio};

/// Counts every byte the program holds, to measure what the revocation view keeps; the
/// allocator underneath is the one `session-ledger` ships with.
#[global_allocator]
static ALLOCATOR: Cap<mimalloc::MiMalloc> = Cap::new(mimalloc::MiMalloc, usize::MAX);

#[derive(Parser, Debug)]
#[command(name = "ledger-bench", about, long_about = None)]
struct Cli {
    /// The baseline's Redis (`scripts/redis.sh start` prints one). Without it the
    /// baseline column says "not run".
    #[arg(long, env = "LEDGER_BENCH_REDIS")]
    redis: Option<String>,
    /// Revoked families in the in-process view (and keys in the Redis blacklist).
    #[arg(long, default_value_t = 1_000_000)]
    families: usize,
    /// The larger in-process view; 0 skips it.
    #[arg(long, default_value_t = 10_000_000)]
    large_families: usize,
    /// Also load the larger count into Redis and measure it there.
    #[arg(long)]
    redis_large: bool,
    /// Seconds each timed phase runs.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Threads for the in-process phases (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Worker threads of this program's async runtime, which runs the HTTP and Redis
    /// clients (and the service's own tasks; its HTTP servers have their own threads).
    /// One leaves the cores to the servers: on 2 cores more only adds scheduling delay.
    #[arg(long, default_value_t = 1)]
    runtime_threads: usize,
    /// Concurrent connections of the HTTP load and of the Redis baseline.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Distinct access tokens for the fresh-token validations.
    #[arg(long, default_value_t = 20_000)]
    tokens: usize,
    /// Working set of the repeated-token validations.
    #[arg(long, default_value_t = 1_000)]
    hot_tokens: usize,
    /// Sessions (tokens) the HTTP introspection load cycles through.
    #[arg(long, default_value_t = 256)]
    sessions: usize,
    /// Clients refreshing concurrently.
    #[arg(long, default_value_t = 16)]
    refresh_concurrency: usize,
    /// Signouts timed for propagation.
    #[arg(long, default_value_t = 200)]
    propagation_samples: usize,
    /// Events written to the embedded log for the projector and replay rows.
    #[arg(long, default_value_t = 300_000)]
    events: usize,
    /// Also measure rows 4 to 6 on Kafka + CQL (e.g. 127.0.0.1:9092, with
    /// `scripts/services.sh up`); `--cql` names the CQL contact points.
    #[arg(long, env = "LEDGER_BENCH_KAFKA")]
    kafka: Option<String>,
    #[arg(long, default_value = "127.0.0.1:9042")]
    cql: String,
    /// Events for the Kafka → CQL projector row.
    #[arg(long, default_value_t = 60_000)]
    kafka_events: usize,
    /// Only these rows: `kafka-refresh` is row 4 on Kafka + CQL alone, in every
    /// setting of the fence (needs `--kafka`); `embedded-refresh` is row 4 on the
    /// embedded backend in both settings of `LEDGER_API_VIEW`; `projector` is rows 6
    /// and 7 (the projector on Kafka → CQL too with `--kafka`, and replay); `replay` is
    /// `session-ledger replay`'s code alone on `--events` events, embedded and, with
    /// `--kafka`, on a Kafka topic too (no CQL needed).
    #[arg(long, value_enum)]
    only: Option<Only>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    KafkaRefresh,
    EmbeddedRefresh,
    Projector,
    Replay,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cli.threads.unwrap_or(cores);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.runtime_threads.max(1))
        .enable_all()
        .build()?;
    let started = std::time::Instant::now();
    let (table, redis_version) = runtime.block_on(run(&cli, cores, threads))?;
    println!(
        "Machine: {cores} cores, {} GiB memory; in-process phases on {threads} threads; \
         HTTP and Redis at {} connections from a {}-thread client runtime; baseline Redis {}. \
         Whole run: {}.\n",
        memory_gib(),
        cli.concurrency,
        cli.runtime_threads.max(1),
        redis_version.as_deref().unwrap_or("not run"),
        duration(started.elapsed())
    );
    print!("{}", table.render());
    Ok(())
}

async fn run(cli: &Cli, cores: usize, threads: usize) -> anyhow::Result<(Table, Option<String>)> {
    let mut table = Table::default();
    if cli.only == Some(Only::KafkaRefresh) {
        let brokers = cli
            .kafka
            .as_deref()
            .context("--only kafka-refresh needs --kafka")?;
        kafka_refresh_rows(&mut table, cli, brokers).await?;
        return Ok((table, None));
    }
    if cli.only == Some(Only::EmbeddedRefresh) {
        for &(env, setting) in &EMBEDDED_REFRESH {
            let app = service::App::start_embedded_with(env).await?;
            refresh_row(&mut table, &app, cli, setting).await?;
            app.stop().await?;
        }
        return Ok((table, None));
    }
    if cli.only == Some(Only::Projector) {
        projector_rows(&mut table, cli, threads).await?;
        return Ok((table, None));
    }
    if cli.only == Some(Only::Replay) {
        replay_rows(&mut table, cli).await?;
        return Ok((table, None));
    }
    let redis = match &cli.redis {
        Some(url) => Some(baseline::Redis::connect(url).await?),
        None => {
            progress("no --redis: the baseline is not run");
            None
        }
    };
    let not_run = || "not run (no --redis)".to_owned();

    // Row 1: in-process lookups at the default size, and the Redis baseline.
    let now = ledger_clock::now();
    let population = inprocess::populate(cli.families, now);
    let queries = inprocess::queries(&population, 1 << 20, 2);
    progress(&format!(
        "lookups on {threads} threads for {} s",
        cli.seconds
    ));
    let lookups = inprocess::lookups(&population.view, &queries, threads, cli.seconds, false);
    let shared = inprocess::lookups(&population.view, &queries, threads, cli.seconds, true);
    let tokens = inprocess::mint(&population, cli.tokens, threads);

    let mut redis_exists = None;
    let mut redis_bytes = None;
    if let Some(redis) = &redis {
        let mut keys: Vec<String> = population.revoked.iter().map(|id| id.to_string()).collect();
        keys.extend(
            tokens
                .tokens
                .iter()
                .filter(|t| t.2)
                .map(|(_, jti, _)| jti.clone()),
        );
        redis_bytes = Some(
            redis
                .load_blacklist(&keys, Duration::from_secs(3600))
                .await?,
        );
        drop(keys);
        let query_keys: Arc<Vec<String>> =
            Arc::new(queries.iter().map(|q| q.id.to_string()).collect());
        progress(&format!(
            "Redis EXISTS at {} connections for {} s",
            cli.concurrency, cli.seconds
        ));
        redis_exists = Some(
            redis
                .exists(query_keys, cli.concurrency, cli.seconds)
                .await?,
        );
    }
    let redis_per_core = redis_exists.as_ref().map(|l| l.per_second() / cores as f64);
    table.push(
        "1",
        format!(
            "revocation lookups in-process, {} revoked families (half the lookups hit one)",
            cli.families
        ),
        lookup_figures(&lookups, &shared),
        redis_exists.as_mut().map_or_else(not_run, |l| {
            format!(
                "{} per core ({} total; {})",
                rate(l.per_second() / cores as f64, "EXISTS"),
                rate(l.per_second(), "EXISTS"),
                l.latencies.p50_p99()
            )
        }),
        redis_per_core.map_or("—".into(), |r| {
            format!(
                "{} (shared `check`: {}); in-process call vs network round trip",
                ratio(lookups.per_core(), r),
                ratio(shared.per_core(), r)
            )
        }),
    );
    check_half(lookups.revoked, lookups.operations, "lookups")?;
    check_half(shared.revoked, shared.operations, "lookups")?;
    if let Some(l) = &redis_exists {
        check_half(l.hits, l.operations, "Redis EXISTS")?;
    }
    let mostly_live = inprocess::queries(&population, 1 << 20, 100);
    let live_reader =
        inprocess::lookups(&population.view, &mostly_live, threads, cli.seconds, false);
    let live_shared =
        inprocess::lookups(&population.view, &mostly_live, threads, cli.seconds, true);
    check_share(live_reader.revoked, live_reader.operations, 0.01, "lookups")?;
    check_share(live_shared.revoked, live_shared.operations, 0.01, "lookups")?;
    // The same mix against Redis: its own run, its own hit share.
    let mut redis_live = None;
    if let Some(redis) = &redis {
        let keys: Arc<Vec<String>> =
            Arc::new(mostly_live.iter().map(|q| q.id.to_string()).collect());
        progress(&format!(
            "Redis EXISTS, 1 in 100 revoked, at {} connections for {} s",
            cli.concurrency, cli.seconds
        ));
        let load = redis.exists(keys, cli.concurrency, cli.seconds).await?;
        check_share(load.hits, load.operations, 0.01, "Redis EXISTS")?;
        redis_live = Some(load);
    }
    drop(mostly_live);
    table.push(
        "1",
        format!(
            "revocation lookups in-process, {} revoked families (1 lookup in 100 hits one)",
            cli.families
        ),
        format!(
            "{}; {:.2} % of answers revoked",
            lookup_figures(&live_reader, &live_shared),
            100.0 * live_reader.revoked as f64 / live_reader.operations.max(1) as f64
        ),
        redis_live.as_mut().map_or_else(not_run, |l| {
            format!(
                "{} per core ({} total; {}); {:.2} % of EXISTS hit",
                rate(l.per_second() / cores as f64, "EXISTS"),
                rate(l.per_second(), "EXISTS"),
                l.latencies.p50_p99(),
                100.0 * l.hits as f64 / l.operations.max(1) as f64
            )
        }),
        redis_live.as_ref().map_or("—".into(), |l| {
            let r = l.per_second() / cores as f64;
            format!(
                "{} (shared `check`: {}); in-process call vs network round trip",
                ratio(live_reader.per_core(), r),
                ratio(live_shared.per_core(), r)
            )
        }),
    );
    table.push(
        "1",
        format!("memory per revoked family, {} families", cli.families),
        format!(
            "{:.1} B counted by the allocator ({:.1} B by size accounting)",
            population.counted_bytes as f64 / cli.families as f64,
            population.accounted_bytes as f64 / cli.families as f64
        ),
        redis_bytes.map_or_else(not_run, |b| {
            format!("{b:.1} B (used_memory growth per key)")
        }),
        redis_bytes.map_or("—".into(), |b| {
            ratio(b, population.counted_bytes as f64 / cli.families as f64)
                .replace('×', "× smaller")
        }),
    );

    let (mixed_bytes, mixed_revoked) = inprocess::mixed_memory(cli.families, 3, now);
    table.push(
        "1",
        format!(
            "memory per family, {} families of which {} revoked (1 in 3; the others live)",
            cli.families, mixed_revoked
        ),
        format!(
            "{:.1} B per family counted by the allocator ({:.1} MB in all)",
            mixed_bytes as f64 / cli.families as f64,
            mixed_bytes as f64 / 1e6
        ),
        redis_bytes.map_or_else(not_run, |b| {
            format!(
                "{:.1} MB: only the {mixed_revoked} revoked ids ({b:.1} B per key, as measured above)",
                b * mixed_revoked as f64 / 1e6
            )
        }),
        redis_bytes.map_or("—".into(), |b| {
            let redis_total = b * mixed_revoked as f64;
            if redis_total >= mixed_bytes as f64 {
                ratio(redis_total, mixed_bytes as f64).replace('×', "× smaller")
            } else {
                ratio(mixed_bytes as f64, redis_total).replace('×', "× larger")
            }
        }),
    );

    // Row 2: full validations, against verify + EXISTS.
    progress(&format!("validating {} fresh tokens", tokens.tokens.len()));
    let fresh = inprocess::validations_fresh(&population.view, &tokens, threads);
    check_half(fresh.revoked, fresh.operations, "fresh validations")?;
    progress(&format!(
        "validating a working set of {} tokens for {} s",
        cli.hot_tokens, cli.seconds
    ));
    let repeated = inprocess::validations_repeated(
        &population.view,
        &tokens,
        cli.hot_tokens,
        threads,
        cli.seconds,
    );
    let mut verify_exists = None;
    if let Some(redis) = &redis {
        progress("baseline: JWT verification + Redis EXISTS per token");
        let shared = Arc::new(
            tokens
                .tokens
                .iter()
                .map(|t| (t.0.clone(), t.1.clone(), t.2))
                .collect::<Vec<_>>(),
        );
        // The verification is CPU work: give the baseline a worker per core, as a
        // resource server would have.
        let validator = Arc::new(tokens.validator.clone());
        let load = tokio::task::block_in_place(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cores)
                .enable_all()
                .build()?
                .block_on(redis.verify_then_exists(validator, shared, cli.concurrency))
        })?;
        check_half(load.hits, load.operations, "baseline blacklist hits")?;
        verify_exists = Some(load);
    }
    let baseline_validation = verify_exists
        .as_ref()
        .map(|l| l.per_second() / cores as f64);
    let baseline_text = || {
        verify_exists.as_ref().map_or_else(not_run, |l| {
            format!(
                "{} per core: EdDSA verify + claims, then EXISTS jti",
                rate(l.per_second() / cores as f64, "validations")
            )
        })
    };
    table.push(
        "2",
        format!(
            "full validations, fresh tokens (EdDSA verify + claims + revocation), {} tokens",
            tokens.tokens.len()
        ),
        format!("{} per core", rate(fresh.per_core(), "validations")),
        baseline_text(),
        baseline_validation.map_or("—".into(), |b| ratio(fresh.per_core(), b)),
    );
    table.push(
        "2",
        format!(
            "full validations, repeated tokens (verified-token cache + revocation), {} tokens",
            cli.hot_tokens
        ),
        format!("{} per core", rate(repeated.per_core(), "validations")),
        verify_exists.as_ref().map_or_else(not_run, |l| {
            format!(
                "{} per core: the fresh-token figure — this baseline has no verified-token cache, every call verifies",
                rate(l.per_second() / cores as f64, "validations")
            )
        }),
        baseline_validation.map_or("—".into(), |b| ratio(repeated.per_core(), b)),
    );
    drop(tokens);
    drop(queries);
    drop(population);

    // Row 1 again, at the larger size.
    if cli.large_families > 0 {
        let large = inprocess::populate(cli.large_families, now);
        let queries = inprocess::queries(&large, 1 << 20, 2);
        progress(&format!(
            "lookups on {threads} threads for {} s",
            cli.seconds
        ));
        let lookups = inprocess::lookups(&large.view, &queries, threads, cli.seconds, false);
        let shared = inprocess::lookups(&large.view, &queries, threads, cli.seconds, true);
        check_half(lookups.revoked, lookups.operations, "lookups")?;
        check_half(shared.revoked, shared.operations, "lookups")?;
        let mut large_exists = None;
        let mut large_bytes = None;
        if let (Some(redis), true) = (&redis, cli.redis_large) {
            let keys: Vec<String> = large.revoked.iter().map(|id| id.to_string()).collect();
            large_bytes = Some(
                redis
                    .load_blacklist(&keys, Duration::from_secs(3600))
                    .await?,
            );
            drop(keys);
            let query_keys = Arc::new(queries.iter().map(|q| q.id.to_string()).collect());
            large_exists = Some(
                redis
                    .exists(query_keys, cli.concurrency, cli.seconds)
                    .await?,
            );
        }
        let skipped = || "not run (add --redis-large)".to_owned();
        table.push(
            "1",
            format!(
                "revocation lookups in-process, {} revoked families",
                cli.large_families
            ),
            lookup_figures(&lookups, &shared),
            large_exists.as_mut().map_or_else(skipped, |l| {
                format!(
                    "{} per core ({})",
                    rate(l.per_second() / cores as f64, "EXISTS"),
                    l.latencies.p50_p99()
                )
            }),
            large_exists.as_ref().map_or("—".into(), |l| {
                ratio(lookups.per_core(), l.per_second() / cores as f64)
            }),
        );
        table.push(
            "1",
            format!("memory per revoked family, {} families", cli.large_families),
            format!(
                "{:.1} B counted by the allocator ({:.1} B by size accounting); built in {}",
                large.counted_bytes as f64 / cli.large_families as f64,
                large.accounted_bytes as f64 / cli.large_families as f64,
                duration(large.build)
            ),
            large_bytes.map_or_else(skipped, |b| {
                format!("{b:.1} B (used_memory growth per key)")
            }),
            "—",
        );
    }

    // Rows 3 to 5: the service over HTTP.
    let app = service::App::start().await?;
    let sessions = service::sessions(&app, cli.sessions).await?;
    let sessions_ids: Vec<String> = sessions.iter().map(|s| s.0.clone()).collect();
    let access: Arc<Vec<String>> = Arc::new(sessions.into_iter().map(|s| s.1).collect());
    progress(&format!(
        "HTTP introspection at {} connections for {} s",
        cli.concurrency, cli.seconds
    ));
    let mut http = service::introspection_load(&app, access, cli.concurrency, cli.seconds).await?;
    anyhow::ensure!(
        http.errors == 0,
        "{} introspections were not active",
        http.errors
    );
    table.push(
        "3",
        format!(
            "HTTP introspection (RFC 7662, keep-alive, hyper client in-process), {} connections",
            cli.concurrency
        ),
        format!(
            "{}, {}",
            rate(http.per_second(), "req"),
            http.latencies.p50_p99()
        ),
        redis_exists.as_mut().map_or_else(not_run, |l| {
            format!(
                "{} EXISTS over loopback, {}",
                rate(l.per_second(), "req"),
                l.latencies.p50_p99()
            )
        }),
        redis_exists
            .as_ref()
            .map_or("—".into(), |l| ratio(http.per_second(), l.per_second())),
    );
    let ids: Arc<Vec<String>> = Arc::new(sessions_ids);
    progress(&format!(
        "HTTP revocation lookups at {} connections for {} s",
        cli.concurrency, cli.seconds
    ));
    let mut lookups_http = service::lookup_load(&app, ids, cli.concurrency, cli.seconds).await?;
    anyhow::ensure!(
        lookups_http.errors == 0,
        "{} lookups of live sessions said revoked",
        lookups_http.errors
    );
    table.push(
        "3",
        format!(
            "revocation lookups over HTTP (GET /v1/revocations/{{id}}, keep-alive, hyper client in-process), {} connections — like for like with Redis EXISTS",
            cli.concurrency
        ),
        format!(
            "{}, {}",
            rate(lookups_http.per_second(), "req"),
            lookups_http.latencies.p50_p99()
        ),
        redis_exists.as_mut().map_or_else(not_run, |l| {
            format!(
                "{} EXISTS over the same loopback, same client runtime, {}",
                rate(l.per_second(), "req"),
                l.latencies.p50_p99()
            )
        }),
        redis_exists.as_ref().map_or("—".into(), |l| {
            ratio(lookups_http.per_second(), l.per_second())
        }),
    );
    service_rows(&mut table, &app, cli, EMBEDDED_REFRESH[0].1, "embedded").await?;
    app.stop().await?;
    for &(env, setting) in &EMBEDDED_REFRESH[1..] {
        let app = service::App::start_embedded_with(env).await?;
        refresh_row(&mut table, &app, cli, setting).await?;
        app.stop().await?;
    }

    // Row 8: an instance of its own, so the other rows run without a transmitter.
    let app = service::App::start_with_ssf(None).await?;
    ssf_row(&mut table, &app, cli, "embedded").await?;
    app.stop().await?;

    if let Some(brokers) = &cli.kafka {
        let app = service::App::start_on_kafka(brokers, &cli.cql).await?;
        // Let the validator bootstrap before measuring.
        service::sessions(&app, 8).await?;
        service_rows(
            &mut table,
            &app,
            cli,
            KAFKA_REFRESH[0].1,
            "on Kafka, the validator tailing the topic",
        )
        .await?;
        app.stop().await?;
        // The other settings of the fence: what each costs a refresh.
        for &(env, setting) in &KAFKA_REFRESH[1..] {
            let app = service::App::start_on_kafka_with(brokers, &cli.cql, env).await?;
            service::sessions(&app, 8).await?;
            refresh_row(&mut table, &app, cli, setting).await?;
            app.stop().await?;
        }
        let app = service::App::start_with_ssf(Some((brokers, &cli.cql))).await?;
        ssf_row(
            &mut table,
            &app,
            cli,
            "on Kafka + Cassandra, the fan-out tailing the topic",
        )
        .await?;
        app.stop().await?;
    }
    projector_rows(&mut table, cli, threads).await?;
    Ok((table, redis.map(|r| r.version)))
}

/// Rows 6 and 7: the projector (on Kafka → CQL with `--kafka`, and embedded) and
/// replay.
async fn projector_rows(table: &mut Table, cli: &Cli, threads: usize) -> anyhow::Result<()> {
    if let Some(brokers) = &cli.kafka {
        let kafka = log::kafka_projector(brokers, &cli.cql, cli.kafka_events).await?;
        table.push(
            "6",
            format!(
                "projector, Kafka → Cassandra ({} events; appended with acks=all at {})",
                kafka.events,
                rate(kafka.events as f64 / kafka.append.as_secs_f64(), "events")
            ),
            rate(
                kafka.events as f64 / kafka.projector.as_secs_f64(),
                "events",
            ),
            "—",
            "—",
        );
    }

    // Rows 6 and 7: projector and replay on the embedded log.
    let figures = log::projector_and_replay(cli.events, threads).await?;
    table.push(
        "6",
        format!(
            "projector, embedded log → embedded store ({} events, {} families)",
            figures.events, figures.families
        ),
        rate(
            figures.events as f64 / figures.projector.as_secs_f64(),
            "events",
        ),
        "—",
        "—",
    );
    table.push(
        "7",
        format!(
            "replay: read the embedded log, decode, fold into a Projection ({} events; state equals the projector's: {})",
            figures.events,
            if figures.digests_match { "yes" } else { "NO" }
        ),
        format!(
            "{} with `session-ledger replay`'s code; {} with the log split among {} reader threads and merged; {} with a bare one-reader loop (of which the fold alone: {})",
            rate(
                figures.events as f64 / figures.replay_tool.as_secs_f64(),
                "events"
            ),
            rate(
                figures.events as f64 / figures.replay_parallel.as_secs_f64(),
                "events"
            ),
            figures.readers,
            rate(figures.events as f64 / figures.replay.as_secs_f64(), "events"),
            rate(figures.events as f64 / figures.fold.as_secs_f64(), "events")
        ),
        "—",
        "—",
    );
    Ok(())
}

/// `--only replay`: `session-ledger replay`'s code over the same events, in the
/// embedded log and, with `--kafka`, in a fresh Kafka topic.
async fn replay_rows(table: &mut Table, cli: &Cli) -> anyhow::Result<()> {
    let figures = log::replay_alone(cli.events, cli.kafka.as_deref()).await?;
    let rate_of = |elapsed: std::time::Duration| {
        rate(figures.events as f64 / elapsed.as_secs_f64(), "events")
    };
    let kafka = match (&figures.kafka, &figures.kafka_append) {
        (Some(replay), Some(append)) => format!(
            "; Kafka ({} partitions, appended with acks=all at {}): {}; same state: {}",
            log::KAFKA_PARTITIONS,
            rate_of(*append),
            rate_of(*replay),
            if figures.same_state { "yes" } else { "NO" }
        ),
        _ => String::new(),
    };
    table.push(
        "7",
        format!(
            "replay with `session-ledger replay`'s code: read, decode, fold into a Projection ({} events, {} families)",
            figures.events, figures.families
        ),
        format!("embedded: {}{kafka}", rate_of(figures.embedded)),
        "—",
        "—",
    );
    Ok(())
}

/// Rows 4 and 5 on a running service: refresh load, then revocation propagation.
async fn service_rows(
    table: &mut Table,
    app: &service::App,
    cli: &Cli,
    refresh_setting: &str,
    propagation_setting: &str,
) -> anyhow::Result<()> {
    refresh_row(table, app, cli, refresh_setting).await?;
    let mut propagation = service::propagation(app, cli.propagation_samples).await?;
    table.push(
        "5",
        format!(
            "revocation propagation, signout response → validator answers inactive ({} signouts, {propagation_setting})",
            propagation.len()
        ),
        format!(
            "{}, max {}",
            propagation.p50_p99(),
            duration(propagation.max())
        ),
        "—",
        "—",
    );
    Ok(())
}

/// The settings row 4 measures on the embedded backend: (environment, description).
const EMBEDDED_REFRESH: [(&[(&str, &str)], &str); 2] = [
    (
        &[],
        "POST /oauth2/token, embedded backend, one fsync per group commit; the API's own view of the log in memory (LEDGER_API_VIEW=log, the default)",
    ),
    (
        &[("LEDGER_API_VIEW", "store")],
        "POST /oauth2/token, embedded backend as above; reading the store joined with the unprojected events per refresh (LEDGER_API_VIEW=store)",
    ),
];

/// The settings of the fence row 4 measures on Kafka: (environment, description).
const KAFKA_REFRESH: [(&[(&str, &str)], &str); 3] = [
    (
        &[],
        "on Kafka, acks=all, idempotent producer, + Cassandra; fence on, the API's own view of the log (LEDGER_API_VIEW=log, the default)",
    ),
    (
        &[("LEDGER_API_VIEW", "store")],
        "on Kafka + Cassandra as above; fence on, waiting for the projector's checkpoint, then reading Cassandra (LEDGER_API_VIEW=store)",
    ),
    (
        &[("LEDGER_API_FENCE", "off")],
        "on Kafka + Cassandra as above, LEDGER_API_FENCE=off: one API instance, no wait, reading Cassandra",
    ),
];

/// `--only kafka-refresh`: row 4 on Kafka + CQL in every setting of the fence, each on
/// a service (topic, keyspace) of its own.
async fn kafka_refresh_rows(table: &mut Table, cli: &Cli, brokers: &str) -> anyhow::Result<()> {
    for &(env, setting) in &KAFKA_REFRESH {
        let app = service::App::start_on_kafka_with(brokers, &cli.cql, env).await?;
        service::sessions(&app, 8).await?;
        refresh_row(table, &app, cli, setting).await?;
        app.stop().await?;
    }
    Ok(())
}

/// Row 4 on a running service: refresh load.
async fn refresh_row(
    table: &mut Table,
    app: &service::App,
    cli: &Cli,
    refresh_setting: &str,
) -> anyhow::Result<()> {
    progress(&format!(
        "refresh ({refresh_setting}) at {} clients for {} s",
        cli.refresh_concurrency, cli.seconds
    ));
    let before = stages::Snapshot::take();
    let mut refresh = service::refresh_load(app, cli.refresh_concurrency, cli.seconds).await?;
    let stages = stages::Snapshot::take().since(&before);
    table.push(
        "4",
        format!(
            "refresh end to end ({refresh_setting}), {} clients",
            cli.refresh_concurrency
        ),
        format!(
            "{}, {}; {stages}",
            rate(refresh.per_second(), "req"),
            refresh.latencies.p50_p99()
        ),
        "—",
        "—",
    );
    Ok(())
}

/// Row 8 on a service started with the transmitter on.
async fn ssf_row(
    table: &mut Table,
    app: &service::App,
    cli: &Cli,
    setting: &str,
) -> anyhow::Result<()> {
    let mut push = ssf::push_latency(app, cli.propagation_samples).await?;
    table.push(
        "8",
        format!(
            "SSF push delivery, signout response → session-revoked SET received by a push receiver on loopback ({} signouts, one at a time, {setting})",
            push.len()
        ),
        format!("{}, max {}", push.p50_p99(), duration(push.max())),
        "—",
        "—",
    );
    Ok(())
}

fn lookup_figures(reader: &inprocess::Throughput, shared: &inprocess::Throughput) -> String {
    format!(
        "{} per core with a `ViewReader` per thread ({} per lookup); {} per core through the shared `check`",
        rate(reader.per_core(), "lookups"),
        duration(Duration::from_secs_f64(1.0 / reader.per_core())),
        rate(shared.per_core(), "lookups"),
    )
}

/// About `share` of the answers must say revoked (within a half of it either way):
/// otherwise the run measured the wrong mix.
fn check_share(revoked: u64, total: u64, share: f64, what: &str) -> anyhow::Result<()> {
    let got = revoked as f64 / total.max(1) as f64;
    anyhow::ensure!(
        (share * 0.5..=share * 1.5).contains(&got),
        "{what}: {revoked} of {total} answers were revoked; expected about {:.1} %",
        share * 100.0
    );
    Ok(())
}

/// About half the answers must say revoked: otherwise the run measured the wrong thing.
fn check_half(revoked: u64, total: u64, what: &str) -> anyhow::Result<()> {
    let share = revoked as f64 / total.max(1) as f64;
    anyhow::ensure!(
        (0.4..=0.6).contains(&share),
        "{what}: {revoked} of {total} answers were revoked; expected about half"
    );
    Ok(())
}

fn memory_gib() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.1}", kb / 1024.0 / 1024.0))
}
