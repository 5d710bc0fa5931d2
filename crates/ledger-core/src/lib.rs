//! The domain of Session Ledger, with no I/O.
//!
//! A *family* is one login session: an initial access/refresh token pair and every
//! generation produced by refreshing it. This crate holds the events that describe a
//! family's life ([`Event`]), the state they project to ([`FamilyState`],
//! [`Projection`]), the policy knobs ([`Policy`]), the decisions ([`decide`]), why a
//! token was or was not acceptable at a given instant ([`explain()`]) and what another
//! policy would have changed ([`backtest`]).
//!
//! Adapters (the embedded store, Kafka, the CQL database) implement the traits in
//! [`ports`]; nothing here knows about them.

pub mod backtest;
mod decide;
mod event;
mod explain;
mod family;
#[cfg(test)]
mod fuzz;
mod ids;
mod policy;
pub mod ports;
mod projection;
pub mod revocation;
pub mod seal;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod timestamp;

pub use decide::{
    Command, DecideContext, DomainError, decide, decide_revoke_unseen, decide_subject_revoke,
};
pub use event::{
    EVENT_SCHEMA_VERSION, Event, EventKind, RevocationScope, RevokeReason, SessionIssued,
    SessionRefreshed, SessionRevokedAll, SessionWindow, TraceContext,
};
pub use explain::{Citation, Explanation, Rule, TokenFacts, explain};
pub use family::{FamilyState, Head, Revocation, SubjectRevocation};
pub use ids::{EventId, Generation, IdError, SessionId, Subject};
pub use policy::{Policy, PolicyError};
pub use projection::{FamilyStatus, Projection, RevocationCheck};
pub use revocation::{RevocationRecord, revocation_key};
pub use timestamp::Timestamp;
