//! The command line itself, without servers: usage errors exit 3 with a `help:` line (never
//! clap's 2, which means "some actions failed" to a scheduler), and every command's `--help`
//! answers with examples.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
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

/// A config directory whose servers do not answer: LDAP on port 9 of loopback refuses at once,
/// and the Graph certificate does not exist, so every command fails fast, after the checks
/// that happen before any connection.
struct Offline {
    dir: tempfile::TempDir,
}

impl Offline {
    fn new() -> Offline {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("mappings")).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/partners.toml"),
            dir.path().join("mappings/partners.toml"),
        )
        .unwrap();
        std::fs::write(dir.path().join("bind.pw"), "not-a-real-password\n").unwrap();
        std::fs::write(
            dir.path().join("b2bsync.toml"),
            r#"[ldap]
url = "ldaps://127.0.0.1:9"
bind_dn = "svc@lab.example.com"
password_file = "bind.pw"
timeout_secs = 2

[graph]
tenant = "00000000-0000-4000-8000-000000000000"
client_id = "c"
auth = "certificate"
certificate_file = "missing-cert.pem"
private_key_file = "missing-key.pem"
authority = "https://127.0.0.1:9"
graph_url = "https://127.0.0.1:9"
verified_domains = ["lab.example.com"]

[state]
path = "state/b2bsync.db"
"#,
        )
        .unwrap();
        let o = Offline { dir };
        o.chmod("b2bsync.toml", 0o600);
        o.chmod("bind.pw", 0o600);
        o
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn chmod(&self, name: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(name), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn b2bsync(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_b2bsync"))
            .arg("--config")
            .arg(self.path("b2bsync.toml"))
            .args(args)
            .env_remove("B2BSYNC_LOG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

// See: issue 10, finding 8 (a world-writable config was used).
#[cfg(unix)]
#[test]
fn a_world_writable_config_is_refused_with_exit_3_and_help() {
    let o = Offline::new();
    o.chmod("b2bsync.toml", 0o666);
    let config = o.path("b2bsync.toml");
    let (code, _, stderr) = o.b2bsync(&["run"]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("writable by anyone") && stderr.contains("mode 0666"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("help: chmod 600 {}", config.display())),
        "{stderr}"
    );
    assert!(
        !o.path("state").exists(),
        "the refused run created the state store"
    );
    let (code, stdout, _) = o.b2bsync(&["check"]);
    assert_eq!(code, Some(3), "{stdout}");
    assert!(
        stdout.contains("FAIL  config") && stdout.contains("help: chmod 600"),
        "{stdout}"
    );
}

// See: issue 10, finding 8 (secret files readable by others got no warning).
#[cfg(unix)]
#[test]
fn loose_config_and_secret_files_are_warned_about_by_check_and_at_run_start() {
    let o = Offline::new();
    o.chmod("b2bsync.toml", 0o644);
    o.chmod("bind.pw", 0o640);
    let pw = o.path("bind.pw");

    let (_, stdout, _) = o.b2bsync(&["check"]);
    assert!(
        stdout.contains(&format!(
            "warn  permissions: [ldap] password_file {} is readable or writable by group or others (mode 0640)\n      help: chmod 600 {}",
            pw.display(),
            pw.display()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("warn  permissions: config "), "{stdout}");
    assert!(!stdout.contains("not-a-real-password"), "{stdout}");

    // The run stops at the missing Graph certificate, but warns first.
    let (code, _, stderr) = o.b2bsync(&["run"]);
    assert_eq!(code, Some(3), "{stderr}");
    let warning = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "WARN" && v["file"] == pw.display().to_string())
        .unwrap_or_else(|| panic!("no warning about {}:\n{stderr}", pw.display()));
    assert_eq!(warning["mode"], "0640", "{warning}");
    assert_eq!(
        warning["help"],
        format!("chmod 600 {}", pw.display()),
        "{warning}"
    );
    assert!(!stderr.contains("not-a-real-password"), "{stderr}");

    // Owner-only files: no warning.
    o.chmod("b2bsync.toml", 0o600);
    o.chmod("bind.pw", 0o600);
    let (_, stdout, _) = o.b2bsync(&["check"]);
    assert!(!stdout.contains("warn  permissions"), "{stdout}");
}

// See: issue 10, finding 5 (a table could read any file and print its first line).
#[cfg(unix)]
#[test]
fn a_mapping_table_outside_the_mapping_directory_is_refused_without_quoting_it() {
    let o = Offline::new();
    let marker = "first-line-of-a-secret";
    std::fs::write(o.path("secret.txt"), format!("{marker}\n")).unwrap();
    let mapping = o.path("mappings/partners.toml");
    let text = std::fs::read_to_string(&mapping).unwrap();
    for file in [
        o.path("secret.txt").display().to_string(),
        "../secret.txt".into(),
    ] {
        let with_table = format!("{text}\n[tables.leak]\nfile = \"{file}\"\n");
        std::fs::write(&mapping, &with_table).unwrap();
        let line = with_table.lines().count();
        let (code, stdout, _) = o.b2bsync(&["check"]);
        assert_eq!(code, Some(3), "{stdout}");
        assert!(
            stdout.contains(&format!("{}:{line}:8: table `leak`", mapping.display())),
            "{file}: {stdout}"
        );
        assert!(!stdout.contains(marker), "{file} leaked: {stdout}");
    }
}
