//! `session-ledger`: revocable JWT sessions. `dev` runs everything in one process on
//! the embedded backend; `api`, `projector` and `validator` run one role each.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ledger_core::Timestamp;
use session_ledger::audit::{Bound, HistoryFormat, HistoryOf, Range, ReplayOptions};
use session_ledger::backtest::BacktestFormat;
use session_ledger::config::VARIABLES;
use session_ledger::explain::ReportFormat;
use session_ledger::{Roles, Settings, start};

mod telemetry;

/// Events, tokens and HTTP bodies are many small allocations freed on other threads
/// than the one that made them; mimalloc's per-thread heaps avoid glibc's arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "session-ledger", version, about, after_help = config_help())]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Api, projector and validator in one process on the embedded backend.
    Dev,
    /// The HTTP API: sessions, token refresh, revocation, JWKS.
    Api,
    /// Builds the revocation state from the log.
    Projector,
    /// Answers revocation lookups and introspection (RFC 7662).
    Validator,
    /// Rebuilds the projection from the log in memory; prints its digest and counts.
    Replay {
        /// First event: an offset (in every partition) or an RFC 3339 time.
        #[arg(long)]
        from: Option<Bound>,
        /// Last event: an offset (in every partition) or an RFC 3339 time.
        #[arg(long)]
        to: Option<Bound>,
        /// Compare with the live projection once the projector has caught up with the
        /// log; exit 1 naming the first difference.
        #[arg(long, conflicts_with_all = ["from", "to"])]
        verify: bool,
        /// Check the log against its signed seals; exit 1 naming every edited,
        /// dropped or inserted event.
        #[arg(long, conflicts_with_all = ["from", "to"])]
        verify_chain: bool,
        /// The seal keys' public JWK Set (`keys export-seal-jwks`) for
        /// `--verify-chain`; default: the key directory's `seal/`.
        #[arg(long, value_name = "FILE", requires = "verify_chain")]
        seal_jwks: Option<std::path::PathBuf>,
        /// Anchors recorded on an earlier audit (`partition offset chain` lines, as the
        /// `anchor:` lines of `--verify-chain` print them): the log's chain value at
        /// each must still be the recorded one, which catches a rewritten or cut head.
        #[arg(long = "anchor", value_name = "FILE", requires = "verify_chain")]
        anchors: Option<std::path::PathBuf>,
        /// How long `--verify` waits for the projector to catch up.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
        /// Write the replayed events to this new file as NDJSON (`-`: standard output,
        /// the report then goes to standard error).
        #[arg(long, value_name = "FILE")]
        export: Option<std::path::PathBuf>,
        /// Also write the replayed projection into a fresh store: a data directory
        /// (embedded) or a keyspace (CQL).
        #[arg(long, value_name = "DIR|KEYSPACE")]
        into: Option<String>,
    },
    /// A session's timeline, or a subject's sessions, from the log.
    History {
        /// One session (family) by id.
        #[arg(long, required_unless_present = "subject", conflicts_with = "subject")]
        session: Option<String>,
        /// Every session of a subject, and its subject-wide revocations.
        #[arg(long)]
        subject: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: HistoryFormat,
    },
    /// Was a token acceptable at an instant, and why: the verdict first, then the rule
    /// that decides, the key it was signed with and the events the verdict rests on.
    /// Exit 0 when acceptable, 1 when not (forged tokens included), 2 on an error.
    Explain {
        /// An access token (JWT) or a refresh token (`rt1.…`); `-` reads it from stdin.
        #[arg(long)]
        token: String,
        /// The instant to judge at, RFC 3339 [default: now].
        #[arg(long, value_parser = parse_instant)]
        at: Option<Timestamp>,
        /// The key directory holding every key ever used, retired ones included
        /// [default: $LEDGER_DATA_DIR/keys, where the services keep theirs; mount the
        /// production key directory there or name it here].
        #[arg(long)]
        keys: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t)]
        format: ReportFormat,
    },
    /// Replays the log under another policy and reports what would change: families
    /// revoked for reuse or not, sessions ending earlier or later.
    Backtest {
        /// Candidate refresh grace (e.g. 30s; default: the configured one).
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<Duration>,
        /// Candidate refresh idle ttl (e.g. 1h).
        #[arg(long, value_parser = humantime::parse_duration)]
        idle: Option<Duration>,
        /// Candidate absolute session lifetime (e.g. 30days).
        #[arg(long, value_parser = humantime::parse_duration)]
        max: Option<Duration>,
        /// How many diverging families to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value_t)]
        format: BacktestFormat,
    },
    /// Key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Adds a new access-token signing key; the previous one stays published in the
    /// JWKS so tokens it signed stay valid. Restart the services to use it.
    RotateSigning,
    /// Adds a new refresh-token MAC key; tokens under older keys still verify.
    RotateRefresh,
    /// Adds a new seal key (signs the log's seals from the projector's next start);
    /// seals under older keys still verify.
    RotateSeal,
    /// Prints the seal keys' public JWK Set: what auditors need for
    /// `replay --verify-chain --seal-jwks`, and nothing that could sign a seal.
    ExportSealJwks,
}

/// `--at`: an RFC 3339 instant.
fn parse_instant(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(text)
        .map_err(|e| format!("expected an RFC 3339 time (2026-11-29T10:00:00Z): {e}"))
}

fn config_help() -> String {
    let mut help = String::from("Configuration (environment):\n");
    for (name, default, what) in VARIABLES {
        help.push_str(&format!("  {name:<32} {what} [default: {default}]\n"));
    }
    help
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("session-ledger: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let roles = match cli.command {
        Command::Dev => Roles::ALL,
        Command::Api => Roles {
            api: true,
            projector: false,
            validator: false,
        },
        Command::Projector => Roles {
            api: false,
            projector: true,
            validator: false,
        },
        Command::Validator => Roles {
            api: false,
            projector: false,
            validator: true,
        },
        Command::Backtest {
            grace,
            idle,
            max,
            limit,
            format,
        } => {
            telemetry::init_logs_only();
            let overrides = ledger_audit::backtest::Overrides { grace, idle, max };
            return audit(async {
                session_ledger::backtest::run_backtest(&settings, overrides, limit, format).await
            });
        }
        Command::Keys { command } => {
            telemetry::init_logs_only();
            return keys(&settings, command);
        }
        Command::Replay {
            from,
            to,
            verify,
            verify_chain,
            seal_jwks,
            anchors,
            wait,
            export,
            into,
        } => {
            telemetry::init_logs_only();
            let options = ReplayOptions {
                range: Range { from, to },
                verify,
                verify_chain,
                seal_jwks,
                anchors,
                wait,
                export,
                into,
            };
            return audit(async { session_ledger::audit::run_replay(&settings, options).await });
        }
        Command::Explain {
            token,
            at,
            keys,
            format,
        } => {
            telemetry::init_logs_only();
            return audit(async {
                let token = read_token(token)?;
                session_ledger::explain::run_explain(&settings, &token, at, keys.as_deref(), format)
                    .await
            });
        }
        Command::History {
            session,
            subject,
            format,
        } => {
            telemetry::init_logs_only();
            let of = match (session, subject) {
                (Some(session), _) => HistoryOf::Session(session),
                (None, Some(subject)) => HistoryOf::Subject(subject),
                (None, None) => unreachable!("clap requires --session or --subject"),
            };
            return audit(async {
                session_ledger::audit::run_history(&settings, of, format)
                    .await
                    .map(|()| true)
            });
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("session-ledger: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let telemetry = telemetry::init(settings.otlp_endpoint.as_deref())?;
        let result = run(settings, roles).await;
        telemetry.shutdown();
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-ledger: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings, roles: Roles) -> anyhow::Result<()> {
    if settings.test_clock_offset_micros != 0 {
        // Test only (debug builds): this process's clock is skewed on purpose.
        ledger_clock::set_test_clock_offset(settings.test_clock_offset_micros);
        tracing::warn!(
            offset_micros = settings.test_clock_offset_micros,
            "LEDGER_TEST_CLOCK_OFFSET in force: this process's clock is skewed for a test"
        );
    }
    let mut running = start(settings, roles).await?;
    if let Some(addr) = running.api_addr {
        println!("api listening on http://{addr}");
    }
    if let Some(addr) = running.validator_addr {
        println!("validator listening on http://{addr}");
    }
    if let Some(addr) = running.projector_addr {
        println!("projector status listening on http://{addr}");
    }
    for (var, token) in &running.generated_credentials {
        let what = match *var {
            "LEDGER_LOGIN_TOKEN" => "login token (POST /v1/sessions)",
            _ => "introspect token (POST /oauth2/introspect)",
        };
        println!("{what} (generated; set {var} to choose one): {token}");
    }
    println!("ready");
    let shutdown = running.shutdown_token();
    tokio::spawn(async move {
        terminated().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    running.wait().await
}

/// Runs an auditor's tool: exit 0 when it succeeded, 1 when it found a difference,
/// 2 on an error.
fn audit(task: impl Future<Output = anyhow::Result<bool>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("session-ledger: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(task) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("session-ledger: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The token itself, or standard input's first line for `-` (keeps it out of `ps`).
fn read_token(token: String) -> anyhow::Result<String> {
    if token != "-" {
        return Ok(token);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM (what container runtimes send).
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn keys(settings: &Settings, command: KeysCommand) -> ExitCode {
    let dir = ledger_token::KeyDir::new(settings.data_dir.join("keys"));
    let added = match command {
        KeysCommand::RotateSigning => dir.load_or_create().and_then(|_| dir.add_signing_key()),
        KeysCommand::RotateRefresh => dir.load_or_create().and_then(|_| dir.add_refresh_key()),
        KeysCommand::RotateSeal => dir.add_seal_key(),
        KeysCommand::ExportSealJwks => {
            return match dir.seal_keys() {
                Ok(keys) => {
                    println!("{:#}", keys.public_keys().jwks());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("session-ledger: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    match added {
        Ok(kid) => {
            println!("added key {kid} in {}", dir.path().display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("session-ledger: {e}");
            ExitCode::FAILURE
        }
    }
}
