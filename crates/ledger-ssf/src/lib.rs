//! An OpenID Shared Signals Framework 1.0 transmitter that sends CAEP 1.0
//! `session-revoked` events for the ledger's revocations.
//!
//! - [`set`] maps log events to Security Event Tokens (RFC 8417) with no I/O.
//! - [`keys`] holds the RS256 key SETs are signed with (published at `jwks_uri`).
//! - [`stream`] is a stream's configuration, as stored and as shown to its receiver.
//! - [`http`] serves discovery, stream management, status, subjects, verification
//!   and polling (RFC 8936).
//! - [`delivery`] turns the log into per-stream queues ([`delivery::Fanout`]) and
//!   pushes them (RFC 8935, [`delivery::Pusher`]).
//!
//! Streams and queues live in the projection store behind
//! [`ledger_core::ports::SsfStore`]; a queue is its stream's durable position.

pub mod delivery;
pub mod http;
pub mod keys;
pub mod set;
pub mod stream;

use std::sync::Arc;

pub use keys::SetSigner;

/// The CAEP event this transmitter emits.
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// The SSF verification event (always delivered, never requested).
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
/// RFC 8935 push delivery.
pub const PUSH: &str = "urn:ietf:rfc:8935";
/// RFC 8936 poll delivery.
pub const POLL: &str = "urn:ietf:rfc:8936";

/// What the transmitter's parts share: the issuer, the signing key, and a wake-up for
/// deliveries when a queue grew in this process (other processes poll the store).
#[derive(Clone, Debug)]
pub struct Transmitter {
    pub issuer: String,
    pub signer: Arc<SetSigner>,
    pub queued: Arc<tokio::sync::Notify>,
}

impl Transmitter {
    pub fn new(issuer: impl Into<String>, signer: SetSigner) -> Self {
        Transmitter {
            issuer: issuer.into(),
            signer: Arc::new(signer),
            queued: Arc::new(tokio::sync::Notify::new()),
        }
    }
}
