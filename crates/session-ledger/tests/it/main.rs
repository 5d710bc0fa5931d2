//! The service over real HTTP on port 0, on the embedded backend.
#![allow(clippy::unwrap_used)]

mod helpers;
mod input;
mod lifecycle;
mod restart;
