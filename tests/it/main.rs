//! The service over real HTTP on port 0, on the embedded backend.
#![allow(clippy::unwrap_used)]

mod audit;
mod crash;
mod credentials;
mod explain;
mod fence_off;
mod full_restart;
mod input;
mod lifecycle;
mod restart;
mod revocation_stream;
mod revocation_topic;
mod shutdown;
mod signout;
mod skew;
mod ssf;
mod status;
mod tamper;

use ledger_tests::helpers;

/// Runs each contract test in `lifecycle` against one backend.
macro_rules! contract {
    ($backend:expr => $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                crate::lifecycle::$name($backend).await;
            }
        )*
    };
}

macro_rules! contract_suite {
    ($backend:expr) => {
        contract!($backend =>
            login_refresh_introspect_signout_introspect,
            sixteen_concurrent_refreshes_yield_one_successor,
            signout_kills_every_generation,
            reuse_after_grace_revokes_the_family_and_says_why,
            retry_within_grace_gets_the_same_successor,
            subject_revoke_signs_out_everywhere_but_not_later_logins,
            jwks_publishes_the_signing_key,
            trace_context_reaches_the_log,
            the_log_is_sealed_and_its_chain_checks_out,
            auditors_tools_read_the_same_log,
        );
    };
}

/// The embedded backend (SQLite), as `session-ledger dev` runs it.
mod embedded {
    contract_suite!(crate::helpers::Backend::Embedded);
}

/// Apache Kafka as the log and Cassandra (CQL) as the projection: the services
/// `scripts/services.sh` starts. These fail, never skip, when the services are down.
mod kafka {
    contract_suite!(crate::helpers::Backend::Kafka);
}
