//! The directory goes away in the middle of a run: a private OpenLDAP instance (its own lab
//! directory and ports, so the shared lab is untouched) is restarted while `b2bsync run` is
//! randomizing passwords. The run stops cleanly or finishes (exit 0 or 2), every action it
//! started has a journal outcome, and the next scheduled run completes the rest.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use b2bsync::source::{Flavour, LdapDirectory, LdapSettings};
use common::world::text;
use graph_emulator::{self as emulator, App, Tenant, User};
use secrecy::SecretString;
use serde_json::Value;

const N: usize = 2000;
const SECRET: &str = "ldap-restart-secret";
const CLIENT_ID: &str = "5e5e5e5e-0000-4000-8000-00000000b2b5";

fn lab_script(lab: &Path, script: &str, args: &[&str]) {
    let out = std::process::Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join(script),
    )
    .args(args)
    .env("B2BSYNC_LAB", lab)
    .env("LAB_OL_LDAP_PORT", "5389")
    .env("LAB_OL_LDAPS_PORT", "5636")
    .output()
    .expect("lab script");
    assert!(out.status.success(), "{script}: {}", text(&out));
}

fn lab_env(lab: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(lab.join("lab.env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

/// Actions whose last journal record is `started`: begun and never settled.
fn unsettled(db: &Path) -> usize {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT COUNT(*) FROM (SELECT action_key, phase FROM journal j WHERE seq = (SELECT MAX(seq) FROM journal WHERE action_key = j.action_key)) WHERE phase = 'started'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap() as usize
}

fn done_records(db: &Path) -> usize {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    conn.query_row(
        "SELECT COUNT(*) FROM journal WHERE phase = 'done'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap_or(0) as usize
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_restarted_mid_run_leaves_nothing_half_done() {
    let lab = tempfile::tempdir().unwrap();
    lab_script(lab.path(), "openldap-up.sh", &["--bulk", &N.to_string()]);
    let env = lab_env(lab.path());
    let stop = scopeguard(lab.path().to_path_buf());

    let users: Vec<User> = (1..=N)
        .map(|i| {
            let uid = format!("bulk{i:06}");
            User {
                id: uuid::Uuid::new_v4().to_string(),
                user_principal_name: format!("{uid}@labexample.onmicrosoft.com"),
                mail: Some(format!("{uid}@bulk-partner.example")),
                other_mails: vec![format!("{uid}@bulk-partner.example")],
                external_user_state: Some("Accepted".into()),
                ..User::default()
            }
        })
        .collect();
    let tenant = Tenant {
        tenant_id: uuid::Uuid::new_v4().to_string(),
        initial_domain: "labexample.onmicrosoft.com".into(),
        verified_domains: vec!["lab.example.com".into()],
        apps: vec![App {
            app_id: CLIENT_ID.into(),
            client_secrets: vec![SECRET.into()],
            permissions: vec![
                "User.ReadWrite.All".into(),
                "Organization.Read.All".into(),
                "RoleManagement.Read.Directory".into(),
            ],
            ..App::default()
        }],
        users,
    };
    let emu = emulator::spawn(emulator::Options::new(
        "127.0.0.1:0".parse().unwrap(),
        tenant,
    ))
    .await
    .expect("emulator");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("graph-ca.pem"), &emu.ca_pem).unwrap();
    std::fs::create_dir(dir.path().join("mappings")).unwrap();
    std::fs::write(
        dir.path().join("mappings/bulk.toml"),
        format!(
            r#"address = "lower(otherMailbox)"
[source]
attributes = ["uid", "otherMailbox"]
[scope]
base_dns = ["ou=Bulk,{base}"]
filter = "(objectClass=inetOrgPerson)"
[join]
anchor = "objectGUID"
[join.cloud_only]
source = "uid ~ '@labexample.onmicrosoft.com'"
cloud = "userPrincipalName"
"#,
            base = env["OL_BASE_DN"]
        ),
    )
    .unwrap();
    let config = dir.path().join("b2bsync.toml");
    std::fs::write(
        &config,
        format!(
            r#"[ldap]
url = "{url}"
bind_dn = "{admin}"
password_env = "RST_LDAP_PASSWORD"
ca_file = "{ca}"
flavour = "generic"

[graph]
tenant = "{tenant}"
client_id = "{CLIENT_ID}"
auth = "client_secret"
client_secret_env = "RST_GRAPH_SECRET"
authority = "{base}"
graph_url = "{base}"
resource = "https://graph.microsoft.com"
ca_file = "graph-ca.pem"

[policy]
# The test counts the directory's writes; sign-in session revocations (Graph) would blur it.
revoke_sessions = false

[limits]
min_count_for_percent = 100000
password_randomizations = {{ max_count = 100000 }}

[apply]
concurrency = 2
"#,
            url = env["OL_LDAPS_URL"],
            admin = env["OL_ADMIN_DN"],
            ca = env["LAB_CA"],
            tenant = emu.tenant_id,
            base = emu.base_url,
        ),
    )
    .unwrap();
    let command = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_b2bsync"));
        c.arg("--config")
            .arg(&config)
            .arg("run")
            .env("RST_LDAP_PASSWORD", &env["OL_ADMIN_PASSWORD"])
            .env("RST_GRAPH_SECRET", SECRET);
        c
    };
    let db = dir.path().join("b2bsync.db");

    // Run 1: restart slapd once the run has randomized some passwords.
    let mut child = command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while done_records(&db) < 50 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the restart could land"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run made no progress"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let before_restart = done_records(&db);
    lab_script(lab.path(), "openldap-restart.sh", &["--down-for", "1"]);
    let out = child.wait_with_output().unwrap();
    let first = out.status.code();
    assert!(
        matches!(first, Some(0 | 2)),
        "run 1 under the restart: {}",
        text(&out)
    );
    let after_first = done_records(&db);
    assert!(
        after_first < N,
        "the restart landed after the run: {before_restart} / {after_first} of {N} done"
    );
    assert_eq!(unsettled(&db), 0, "actions left started without an outcome");

    // The next scheduled run finishes the job.
    let out = command().output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(unsettled(&db), 0);
    let status: Value = serde_json::from_slice(
        &std::process::Command::new(env!("CARGO_BIN_EXE_b2bsync"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "status",
                "--format",
                "json",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let done = status["states"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["state"] == "done")
        .unwrap()["accounts"]
        .as_u64();
    assert_eq!(done, Some(N as u64), "{status:#}");
    // The old password of the first and the last account no longer binds.
    let settings = LdapSettings {
        url: env["OL_LDAPS_URL"].clone(),
        failover_urls: Vec::new(),
        starttls: false,
        ca_file: Some(env["LAB_CA"].clone().into()),
        bind_dn: env["OL_ADMIN_DN"].clone(),
        password: SecretString::from(env["OL_ADMIN_PASSWORD"].clone()),
        allow_cleartext: false,
        flavour: Flavour::Generic,
        page_size: 1000,
        timeout: Duration::from_secs(10),
        change_overlap: Duration::from_secs(60),
        kerberos: None,
    };
    let dirx = LdapDirectory::new(settings).unwrap();
    for i in [1, N] {
        let dn = format!("uid=bulk{i:06},ou=Bulk,{}", env["OL_BASE_DN"]);
        assert!(
            !dirx
                .try_bind(
                    &dn,
                    &SecretString::from(env["LAB_PARTNER_PASSWORD"].clone())
                )
                .await
                .unwrap(),
            "{dn}"
        );
    }
    eprintln!(
        "ldap restart: {before_restart} done before the restart, {after_first} after run 1 (exit {first:?}), {N} after run 2"
    );
    drop(stop);
}

/// Stops the private slapd when the test ends, passed or failed.
struct StopOnDrop(std::path::PathBuf);

fn scopeguard(lab: std::path::PathBuf) -> StopOnDrop {
    StopOnDrop(lab)
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/openldap-down.sh"),
        )
        .env("B2BSYNC_LAB", &self.0)
        .env("LAB_OL_LDAP_PORT", "5389")
        .env("LAB_OL_LDAPS_PORT", "5636")
        .output();
    }
}
