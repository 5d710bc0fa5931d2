//! Tokens of Session Ledger.
//!
//! - Access tokens: JWTs signed with Ed25519 (`alg: EdDSA`, `typ: at+jwt`, a `kid`),
//!   following RFC 9068 and the checks of RFC 8725 ([`AccessTokenIssuer`],
//!   [`AccessTokenValidator`]).
//! - Refresh tokens: opaque strings naming (family, generation) with an HMAC; the
//!   successor of a generation is the same string every time (D3) ([`RefreshTokens`]).
//! - Keys: generated into a directory on first start, kept across restarts, rotated
//!   with overlap ([`KeyDir`], [`SigningKeys`], [`VerificationKeys`]).
//! - Seal keys: sign the log's seals, for tamper evidence ([`SealKeys`]).
//! - Forensics: which key a token names and whether it verifies, for auditors
//!   ([`forensics::check`]).

mod access;
pub mod forensics;
#[cfg(test)]
mod fuzz;
mod keys;
mod refresh;
mod seal;

pub use access::{
    AccessClaims, AccessTokenIssuer, AccessTokenValidator, MintAccess, RESERVED_CLAIMS, TokenError,
};
pub use keys::{KeyDir, KeyError, KeyTime, SigningKeys, VerificationKeys};
pub use refresh::{RefreshTokenError, RefreshTokens};
pub use seal::SealKeys;
