//! Workspace-wide tests: checks that span crates live here, beside the crates they
//! check, not inside any one of them. The behaviour tests (`it`, `outage`,
//! `cassandra_outage`, `regions`) run the service as its users do and share
//! `helpers`.

// Test support: a failed unwrap is a failed test, with its message.
#[allow(clippy::unwrap_used)]
pub mod helpers;
