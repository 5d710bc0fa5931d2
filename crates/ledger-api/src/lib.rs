//! The API: opens sessions, refreshes and revokes them, by deciding with the core and
//! appending the events to the log before answering (D1, I1).
//!
//! - [`SessionService`]: the use cases, over the ports; no HTTP in it.
//! - [`FamilyView`]: the families in memory, from the log, for refreshes behind a fence.
//! - [`http`]: the actix-web listener (RFC 6749 token endpoint, RFC 7009 revocation,
//!   JWKS, the service endpoints).

pub mod http;
mod recent;
mod service;
mod view;

pub use service::{Grant, OpenSession, ServiceConfig, SessionError, SessionService, SessionView};
pub use view::{FamilyView, FamilyViewConfig};
