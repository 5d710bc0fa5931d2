//! Revocation lookups (D6), as a library and over HTTP.
//!
//! - [`RevocationView`]: the in-memory revocation state a Rust service embeds; answers
//!   with a [`Verdict`] and fails closed when its view is older than the bound (I7).
//! - [`ViewFeeder`]: bootstraps the view from the store, then tails the log.
//! - [`Introspector`]: the full check (signature, claims, revocation).
//! - [`jwks`]: the [`JwksRefresher`], which keeps the introspector's keys in step with
//!   the API's published JWKS.
//! - [`http`]: the RFC 7662 listener, a thin layer over the above.
//! - [`stream`]: the public revocation stream as Server-Sent Events (embedded log).

mod cache;
mod feeder;
pub mod http;
mod introspect;
pub mod jwks;
pub mod stream;
mod table;
mod view;

pub use feeder::{FeederConfig, ViewFeeder};
pub use introspect::{DEFAULT_TOKEN_CACHE, Introspection, Introspector};
pub use jwks::{JwksConfig, JwksRefresher, JwksStatus};
pub use table::FamilyEntry;
pub use view::{RevocationView, Verdict, ViewReader, ViewStatus};
