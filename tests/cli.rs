//! The command line itself, without servers: usage errors exit 3 with a `help:` line (never
//! clap's 2, which means "some actions failed" to a scheduler), and every command's `--help`
//! answers with examples.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

fn b2bsync(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_b2bsync"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn usage_errors_exit_3_with_help() {
    for args in [
        &["--bogus"][..],
        &[][..],
        &["run", "--no-such-flag"][..],
        &["frobnicate"][..],
    ] {
        let out = b2bsync(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("help:"),
            "{args:?}"
        );
    }
}

#[test]
fn every_command_answers_help_with_examples() {
    for cmd in [
        "check", "plan", "apply", "run", "status", "report", "rollback",
    ] {
        let out = b2bsync(&[cmd, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{cmd}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Examples:"), "{cmd}: {text}");
    }
    let out = b2bsync(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes:"));
}
