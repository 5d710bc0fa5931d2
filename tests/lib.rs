//! Workspace-wide tests: checks that span crates live here, beside the crates they
//! check, not inside any one of them.
