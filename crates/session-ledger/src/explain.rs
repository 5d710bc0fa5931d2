//! `session-ledger explain --token TOKEN [--at TIME]`: was a token acceptable at an
//! instant, and why. `ledger_token::forensics` checks the signature (or MAC) against
//! the key the token names, from the key directory, which keeps retired keys;
//! `ledger_audit::explain` reads the family's events and gives the verdict.

use std::io::Write;
use std::path::Path;

use ledger_audit::explain::Report;
use ledger_core::Timestamp;
use ledger_token::KeyDir;
use ledger_token::forensics::{self, ForensicsError};

use crate::Settings;
use crate::run::Ports;

/// How `explain` prints its report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    #[default]
    Text,
    Json,
}

/// `session-ledger explain`: prints the verdict (first line), the token, the key and
/// the events that decide; `Ok(true)` when the token was acceptable at the instant.
pub async fn run_explain(
    settings: &Settings,
    token: &str,
    at: Option<Timestamp>,
    keys: Option<&Path>,
    format: ReportFormat,
) -> anyhow::Result<bool> {
    let at = at.unwrap_or_else(ledger_clock::now);
    let dir = KeyDir::new(keys.map_or_else(|| settings.data_dir.join("keys"), Path::to_path_buf));
    let checked = forensics::check(&dir, &settings.issuer, &settings.audience, token.trim())
        .map_err(|e| match e {
            ForensicsError::Keys { path, source } => anyhow::Error::new(source).context(format!(
                "reading the keys in {} (mount the service's key directory there, or pass --keys)",
                path.display()
            )),
            e => e.into(),
        })?;
    let report = match Report::unverified(checked) {
        Ok(report) => report,
        Err(verified) => {
            let ports = Ports::open(settings).await?;
            ledger_audit::explain::explain(
                &*ports.history,
                &*ports.source,
                *verified,
                &settings.policy,
                at,
            )
            .await?
        }
    };
    let mut out = std::io::stdout().lock();
    if format == ReportFormat::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report.json(at))?)?;
    } else {
        out.write_all(report.text(at, &settings.policy).as_bytes())?;
    }
    Ok(report.acceptable())
}
