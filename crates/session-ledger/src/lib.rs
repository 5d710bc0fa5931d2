//! The `session-ledger` binary's wiring: configuration, backends and the three roles
//! (api, projector, validator), so tests can start the real thing in-process.

pub mod audit;
pub mod backtest;
pub mod config;
pub mod explain;
mod run;

pub use config::{ApiView, Backend, ConfigError, KafkaSettings, Settings};
pub use run::{Roles, Running, start};
