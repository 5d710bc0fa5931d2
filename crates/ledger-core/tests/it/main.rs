#![allow(clippy::unwrap_used)]

mod fuzz;
mod histories;
mod projection_props;
mod schemas;
