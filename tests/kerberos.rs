//! Kerberos binds (`[ldap] bind = "gssapi"`) against the lab's Samba AD DC and its KDC, with
//! the keytab `scripts/samba-up.sh` exports for svc-b2bsync (`AD_SVC_KEYTAB`): `check` and
//! runs that convert partners, password randomization over LDAPS included, with no password
//! anywhere in the configuration or the environment; password resets refused over a
//! Kerberos-sealed `ldap://` connection; a missing or wrong keytab failing with the fix.
//!
//! No test changes svc-b2bsync's password: the keytab holds keys derived from it.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::lab_var;
use common::world::{Partner, Tenancy, World, text, world};

/// One cloud-only partner: staged in the cloud, invited by the first run.
fn partners() -> Vec<Partner> {
    vec![Partner::new(
        "kcloud",
        "Kim Cloud",
        Some("kim@northwind.example"),
        Tenancy::CloudOnly,
    )]
}

/// One synced partner: her address goes to AD `mail`, over the Kerberos bind.
fn synced_partner() -> Vec<Partner> {
    vec![Partner::new(
        "ksync",
        "Kim Sync",
        Some("kim@northwind.example"),
        Tenancy::Synced,
    )]
}

/// Switches the world's config from its simple bind to a Kerberos one with `keytab`, over
/// `url` (the lab's LDAPS URL unless told).
fn use_kerberos(w: &World, keytab: &Path, url: Option<&str>) {
    let path = w.config_path();
    let config = std::fs::read_to_string(&path).unwrap();
    let mut out = String::new();
    for line in config.lines() {
        if line.starts_with("bind_dn = ") || line.starts_with("password_env = ") {
            continue;
        }
        if line == "[ldap]" {
            out.push_str(&format!(
                "[ldap]\nbind = \"gssapi\"\nkeytab = \"{}\"\nprincipal = \"svc-b2bsync@{}\"\nspn_host = \"{}\"\n",
                keytab.display(),
                lab_var("AD_REALM"),
                lab_var("AD_DC_FQDN"),
            ));
            continue;
        }
        if let Some(url) = url
            && line.starts_with("url = \"ldap")
        {
            out.push_str(&format!("url = \"{url}\"\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(
        !out.contains("password_env") && !out.contains("bind_dn"),
        "{out}"
    );
    std::fs::write(&path, out).unwrap();
}

/// Runs b2bsync with no LDAP password in its environment, the lab's krb5.conf, and a
/// credential cache that does not exist (so only the keytab can supply tickets).
fn run(w: &World, args: &[&str]) -> Output {
    w.command(args)
        .env_remove("WORLD_LDAP_PASSWORD")
        .env("KRB5_CONFIG", lab_var("LAB_KRB5_CONFIG"))
        .env("KRB5CCNAME", format!("FILE:{}", cache(w).display()))
        .output()
        .expect("run b2bsync")
}

fn cache(w: &World) -> PathBuf {
    w.dir.path().join("krb5cc-unused")
}

fn all(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The lab's keytab, checked to be there and private.
fn lab_keytab() -> PathBuf {
    let keytab = PathBuf::from(lab_var("AD_SVC_KEYTAB"));
    let meta = std::fs::metadata(&keytab).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\nhelp: scripts/samba-up.sh exports it (samba-tool domain exportkeytab)",
            keytab.display()
        )
    });
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        meta.permissions().mode() & 0o077,
        0,
        "the lab keytab is private"
    );
    keytab
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keytab_checks_and_converts_a_partner_with_no_password_configured() {
    let w = world(&synced_partner(), "").await;
    use_kerberos(&w, &lab_keytab(), None);

    let out = run(&w, &["check"]);
    let check = all(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let principal = format!("svc-b2bsync@{}", lab_var("AD_REALM"));
    assert!(
        check.contains(&format!(
            "ok    ldap bind: {} as Kerberos principal {principal} (keytab ",
            lab_var("AD_LDAPS_URL")
        )) && check.contains("over TLS (LDAPS)"),
        "{check}"
    );
    assert!(
        check.contains("ok    ldap rights: may write mail"),
        "{check}"
    );
    assert!(check.contains("all checks passed"), "{check}");
    assert!(!check.contains(&lab_var("AD_SVC_PASSWORD")), "{check}");

    // Run 1: the synced partner's address is written to AD mail over the Kerberos bind.
    let out = run(&w, &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        w.ad_mail("ksync").await.as_deref(),
        Some("kim@northwind.example"),
        "mail written over the Kerberos bind"
    );
    assert!(w.invitations().await.is_empty());
    // The sync cycle carries it to the cloud; run 2 invites her.
    w.connect_cycle().await;
    let out = run(&w, &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(w.invitations().await.len(), 1);
    assert!(w.old_password_binds("ksync").await);

    // She accepts; run 3 randomizes her on-premises password over LDAPS.
    assert_eq!(w.accept_pending().await, 1);
    let out = run(&w, &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !w.old_password_binds("ksync").await,
        "the old password still binds after a randomization over the Kerberos bind"
    );
    assert_eq!(w.revocations().await, ["ksync"]);
    assert!(
        !cache(&w).exists(),
        "the tickets live in the process's memory cache, not in KRB5CCNAME"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kerberos_sealed_plain_ldap_connection_never_resets_a_password() {
    let w = world(&partners(), "").await;
    use_kerberos(&w, &lab_keytab(), Some(&lab_var("AD_LDAP_URL")));

    // check binds (reads are sealed by Kerberos) but fails the TLS rule, with the fix.
    let out = run(&w, &["check"]);
    let check = all(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        check.contains("ok    ldap bind:") && check.contains("sealed by Kerberos, without TLS"),
        "{check}"
    );
    assert!(
        check.contains(
            "FAIL  ldap tls: refusing to reset a password over an unencrypted connection"
        ),
        "{check}"
    );
    assert!(
        check.contains("help: password operations always need LDAPS or StartTLS (a Kerberos-sealed ldap:// connection is not enough)"),
        "{check}"
    );

    // A run converts up to the randomization, which it refuses: the password still binds.
    let out = run(&w, &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(w.invitations().await.len(), 1, "{}", text(&out));
    assert_eq!(w.accept_pending().await, 1);
    let out = run(&w, &["run"]);
    let log = all(&out);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        log.contains("refusing to reset a password over an unencrypted connection"),
        "{log}"
    );
    assert!(
        log.contains("password operations always need LDAPS or StartTLS"),
        "{log}"
    );
    assert!(
        w.old_password_binds("kcloud").await,
        "a password was reset without TLS"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_wrong_keytab_fails_with_the_fix_and_no_secret() {
    let w = world(&partners(), "").await;
    let cases: Vec<(&str, PathBuf, &str, &str)> = vec![
        (
            "missing",
            w.dir.path().join("missing.keytab"),
            "cannot use the keytab",
            "help: export a keytab for the service account",
        ),
        (
            "text",
            write_text_keytab(&w),
            "not a keytab",
            "help: export a keytab",
        ),
        (
            "wrong keys",
            write_wrong_keytab(&w),
            "Kerberos bind to",
            "help: check the keytab or the credential cache",
        ),
    ];
    for (what, keytab, error, help) in cases {
        use_kerberos_fresh(&w, &keytab);
        let out = run(&w, &["check"]);
        let check = all(&out);
        eprintln!("--- check with a {what} keytab\n{check}");
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        assert!(
            check.contains("FAIL  ldap bind: ") && check.contains(error),
            "{what}: {check}"
        );
        assert!(check.contains(help), "{what}: {check}");
        for secret in [lab_var("AD_SVC_PASSWORD"), WRONG_PASSWORD.to_string()] {
            assert!(!check.contains(&secret), "{what}: a secret in {check}");
        }
        // A run stops before anything is read or written, with the same fix.
        let out = run(&w, &["run"]);
        let log = all(&out);
        assert_ne!(out.status.code(), Some(0), "{what}: {}", text(&out));
        assert!(log.contains(error) && log.contains(help), "{what}: {log}");
    }
    assert_eq!(w.ad_mail("kcloud").await, None, "nothing written");
    assert!(w.invitations().await.is_empty(), "nothing invited");
}

const WRONG_PASSWORD: &str = "Not-The-Svc-Password-2026!";

/// Rewrites the config as the world made it, then switches it to `keytab`.
fn use_kerberos_fresh(w: &World, keytab: &Path) {
    let path = w.config_path();
    let original = w.dir.path().join("b2bsync.toml.simple");
    if !original.exists() {
        std::fs::copy(&path, &original).unwrap();
    }
    std::fs::copy(&original, &path).unwrap();
    use_kerberos(w, keytab, None);
}

fn write_text_keytab(w: &World) -> PathBuf {
    let path = w.dir.path().join("text.keytab");
    std::fs::write(&path, "svc-b2bsync secret\n").unwrap();
    private(&path);
    path
}

/// A real keytab for svc-b2bsync whose keys come from another password (as after a password
/// change that nobody re-exported), made with MIT's ktutil.
fn write_wrong_keytab(w: &World) -> PathBuf {
    use std::io::Write;
    let path = w.dir.path().join("wrong.keytab");
    let principal = format!("svc-b2bsync@{}", lab_var("AD_REALM"));
    let mut child = std::process::Command::new("ktutil")
        .env("KRB5_CONFIG", lab_var("LAB_KRB5_CONFIG"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("ktutil: {e}\nhelp: install krb5-user (scripts/lab-up.sh does)")
        });
    let script = format!(
        "addent -password -p {principal} -k 1 -e aes256-cts-hmac-sha1-96\n{WRONG_PASSWORD}\nwkt {}\nquit\n",
        path.display()
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && path.exists(),
        "ktutil: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    private(&path);
    path
}

fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
