//! The binary's command line: the commands it offers and how it refuses a bad
//! configuration. The service's behaviour is tested across crates in the workspace's
//! `tests/`, on this same binary (`cargo test --workspace` builds it for them because
//! this test runs it).
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn session_ledger(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_session-ledger"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn help_names_every_command_and_the_configuration_variables() {
    let out = session_ledger(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let commands = [
        "dev",
        "api",
        "projector",
        "validator",
        "replay",
        "history",
        "explain",
        "backtest",
        "keys",
    ];
    for command in commands {
        assert!(
            help.lines()
                .any(|l| l.split_whitespace().next() == Some(command)),
            "`{command}` is not in the help: {help}"
        );
    }
    assert!(help.contains("LEDGER_DATA_DIR"), "{help}");
}

#[test]
fn a_bad_variable_is_named_and_the_process_exits_2() {
    let out = session_ledger(&["dev"], &[("LEDGER_SEALER", "sometimes")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("session-ledger: configuration error: LEDGER_SEALER: "),
        "{stderr}"
    );
}
