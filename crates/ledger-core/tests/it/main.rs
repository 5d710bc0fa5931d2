#![allow(clippy::unwrap_used)]

mod histories;
mod projection_props;
mod schemas;
