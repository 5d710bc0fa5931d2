//! The auditors' tools over the ports: they read the same log the projector reads and
//! never write to the serving path. Each function takes the ports it needs
//! (`ledger_core::ports`) and returns a report value; opening the ports from the
//! configuration and choosing where the output goes is the binary's part.
//!
//! - [`scan`]: one loop reading the whole log, with a progress line on stderr.
//! - [`replay`]: folds a range of the log ([`Range`], [`Bound`]) into a projection;
//!   the seals' chain check and the wait for the projector's checkpoint.
//! - [`history`]: a subject's events (an auditor's scan of the log) and the timeline.
//! - [`explain`]: the verdict on a token checked by `ledger_token::forensics`.
//! - [`backtest`]: the log under the current and a candidate policy.

pub mod backtest;
pub mod explain;
pub mod history;
pub mod replay;
pub mod scan;

pub use replay::{Bound, Range, ReplayReport};
