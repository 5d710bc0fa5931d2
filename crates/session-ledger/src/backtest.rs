//! `session-ledger backtest`: reads the whole log, as `replay` does, and evaluates
//! every family under the configured policy and a candidate (the same policy with
//! `--grace`, `--idle` or `--max` changed). `ledger_audit::backtest` reads and renders;
//! this module opens the log and prints.

use std::io::Write;

use ledger_audit::backtest::{Overrides, backtest, prepare, to_json, write_table};

use crate::Settings;
use crate::run::Ports;

/// How `backtest` prints its report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BacktestFormat {
    #[default]
    Table,
    Json,
}

/// `session-ledger backtest`: the counts per kind of change and the first `limit`
/// diverging families, as a table or JSON.
pub async fn run_backtest(
    settings: &Settings,
    overrides: Overrides,
    limit: usize,
    format: BacktestFormat,
) -> anyhow::Result<bool> {
    let current = &settings.policy;
    let candidate = overrides.apply(current);
    let prepared = prepare(current, &candidate)?;
    let ports = Ports::open(settings).await?;
    let report = backtest(&*ports.source, prepared).await?;
    let mut out = std::io::stdout().lock();
    if format == BacktestFormat::Json {
        let json = to_json(&report, current, &candidate, limit);
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    } else {
        write_table(&mut out, &report, current, &candidate, limit)?;
    }
    Ok(true)
}
