//! The domain of Session Ledger, with no I/O.
//!
//! A *family* is one login session: an initial access/refresh token pair and every
//! generation produced by refreshing it. This crate holds the events that describe a
//! family's life ([`Event`]), the state they project to ([`FamilyState`],
//! [`Projection`]), the policy knobs ([`Policy`]) and the decisions ([`decide`]);
//! [`backtest`] replays recorded histories under another policy.
//!
//! Adapters (the embedded store, Kafka, the CQL database) implement the traits in
//! [`ports`]; nothing here knows about them.

pub mod backtest;
mod decide;
mod event;
mod family;
mod ids;
mod policy;
pub mod ports;
mod projection;
#[cfg(feature = "testing")]
pub mod testing;
mod timestamp;

pub use decide::{Command, DecideContext, DomainError, decide, decide_subject_revoke};
pub use event::{
    EVENT_SCHEMA_VERSION, Event, EventKind, RevocationScope, RevokeReason, SessionIssued,
    SessionRefreshed, SessionRevokedAll, SessionWindow, TraceContext,
};
pub use family::{FamilyState, Head, Revocation, SubjectRevocation};
pub use ids::{EventId, Generation, IdError, SessionId, Subject};
pub use policy::{Policy, PolicyError};
pub use projection::{FamilyStatus, Projection, RevocationCheck};
pub use timestamp::Timestamp;
