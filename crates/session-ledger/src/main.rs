//! `session-ledger`: revocable JWT sessions. `dev` runs everything in one process on
//! the embedded backend; `api`, `projector` and `validator` run one role each.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use session_ledger::config::VARIABLES;
use session_ledger::{Roles, Settings, start};

mod telemetry;

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
        /// First offset to read in every partition (default: the beginning).
        #[arg(long)]
        from: Option<u64>,
        /// Last offset to read in every partition.
        #[arg(long)]
        to: Option<u64>,
        /// Compare with the live projection; exit 1 naming the first difference.
        #[arg(long)]
        verify: bool,
    },
    /// One session's timeline from the log.
    History {
        #[arg(long)]
        session: String,
        #[arg(long, default_value = "table", value_parser = ["table", "json", "ndjson"])]
        format: String,
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
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
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
            let overrides = session_ledger::backtest::Overrides { grace, idle, max };
            return audit(async {
                session_ledger::backtest::run_backtest(&settings, overrides, limit, &format).await
            });
        }
        Command::Keys { command } => {
            telemetry::init_logs_only();
            return keys(&settings, command);
        }
        Command::Replay { from, to, verify } => {
            telemetry::init_logs_only();
            return audit(async {
                session_ledger::audit::run_replay(&settings, from, to, verify).await
            });
        }
        Command::History { session, format } => {
            telemetry::init_logs_only();
            return audit(async {
                session_ledger::audit::run_history(&settings, &session, &format)
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
    println!("ready");
    if running.service_token_generated && running.api_addr.is_some() {
        println!(
            "service token (generated; set LEDGER_SERVICE_TOKEN to choose one): {}",
            running.service_token
        );
    }
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
