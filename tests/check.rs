//! `b2bsync check` tells the truth without side effects: a healthy set-up passes every line,
//! and each broken one fails with one line saying what is wrong and a `help:` line saying
//! how to fix it. Nothing is written to the directory or the tenant.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::world::{Partner, Tenancy, World, text, world, world_with};

fn partners() -> Vec<Partner> {
    vec![Partner::new(
        "adams",
        "Ana Adams",
        Some("ana@fabrikam.example"),
        Tenancy::Synced,
    )]
}

fn check(w: &World) -> (Option<i32>, String) {
    let out = w.b2bsync(&["check"]);
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn edit_config(w: &World, from: &str, to: &str) {
    let path = w.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from} not in the config");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_set_up_passes_every_check_and_writes_nothing() {
    let w = world(&partners(), "").await;
    let (code, out) = check(&w);
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "ok    config",
        "ok    mappings",
        "ok    ldap bind",
        "ok    ldap scope",
        "ok    ldap rights: may write mail",
        "ok    graph token",
        "ok    graph permissions",
        "ok    graph users",
        "all checks passed",
    ] {
        assert!(out.contains(line), "missing `{line}` in:\n{out}");
    }
    assert_eq!(
        w.ad_mail("adams").await,
        None,
        "check wrote to the directory"
    );
    let log = w.control(reqwest::Method::GET, "/requests", None).await;
    let writes = log["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["method"] != "GET" && !r["path"].as_str().unwrap_or_default().contains("/oauth2/")
        })
        .count();
    assert_eq!(writes, 0, "check wrote to the tenant: {log}");
    assert!(
        !w.dir.path().join("state").exists(),
        "check created the state store"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_set_ups_each_fail_with_the_fix() {
    // 1. A wrong client secret.
    let w = world(&partners(), "").await;
    let out = w
        .command(&["check"])
        .env("WORLD_GRAPH_SECRET", "not-the-secret")
        .output()
        .unwrap();
    let text_out = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text_out.contains("FAIL  graph token") && text_out.contains("AADSTS7000215"),
        "{text_out}"
    );
    assert!(
        text_out.contains("help: the client secret is wrong or expired"),
        "{text_out}"
    );
    eprintln!("--- check with a wrong client secret\n{text_out}");

    // 2. The app lacks User.Invite.All and RoleManagement.Read.Directory.
    let w = world_with(&partners(), "", |o| {
        o.tenant.apps[0].permissions =
            vec!["User.ReadWrite.All".into(), "Organization.Read.All".into()];
    })
    .await;
    let (code, out) = check(&w);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL  graph permissions")
            && out.contains("missing: RoleManagement.Read.Directory"),
        "{out}"
    );
    assert!(
        out.contains("help: grant the application permission(s) RoleManagement.Read.Directory"),
        "{out}"
    );
    eprintln!("--- check with a missing permission\n{out}");

    // 3. The LDAP server's certificate is not from the configured CA, and the scope points
    //    where the service account has no delegation.
    let w = world(&partners(), "").await;
    let other = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        other.path(),
        rcgen::generate_simple_self_signed(vec!["x".into()])
            .unwrap()
            .cert
            .pem(),
    )
    .unwrap();
    let ca_line = format!("ca_file = \"{}\"", common::lab_ca().display());
    edit_config(
        &w,
        &ca_line,
        &format!("ca_file = \"{}\"", other.path().display()),
    );
    let (code, out) = check(&w);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL  ldap bind")
            && out
                .contains("help: check the host, the port, the firewall, and that the certificate"),
        "{out}"
    );
    eprintln!("--- check with the wrong CA file\n{out}");
    edit_config(
        &w,
        &format!("ca_file = \"{}\"", other.path().display()),
        &ca_line,
    );
    let mapping = w.dir.path().join("mappings/partners.toml");
    let staff = format!("OU=Staff,{}", common::lab_var("AD_BASE_DN"));
    std::fs::write(
        &mapping,
        std::fs::read_to_string(&mapping)
            .unwrap()
            .replace(&w.ou, &staff),
    )
    .unwrap();
    let (code, out) = check(&w);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL  ldap rights") && out.contains("help: delegate `Write mail`"),
        "{out}"
    );
    eprintln!("--- check with a scope outside the delegation\n{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_finds_the_blockers_before_anyone_is_invited() {
    let mut partners = partners();
    for (sam, address) in [
        ("baker", "bo@fabrikam.example"),
        ("chen", "wei@northwind.example"),
    ] {
        partners.push(Partner::new(
            sam,
            sam,
            Some(address),
            Tenancy::SyncedWithOnPremUpn,
        ));
    }
    let w = world_with(&partners, "", |o| {
        o.tenant.apps[0].permissions.push("Policy.Read.All".into());
    })
    .await;
    // Every account but adams is on the deny list: rights are tested on adams.
    let mapping = w.dir.path().join("mappings/partners.toml");
    let denied = format!(
        "[scope]\ndeny = [\"{}\", \"{}\"]",
        w.sam("baker"),
        w.sam("chen")
    );
    std::fs::write(
        &mapping,
        std::fs::read_to_string(&mapping)
            .unwrap()
            .replacen("[scope]", &denied, 1),
    )
    .unwrap();
    let (code, out) = check(&w);
    // A warning: the plan blocks just those two and converts the others.
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warn  onPremisesUserPrincipalName: 2 account(s) in scope")
            && out.contains(
                "help: Entra ID refuses to convert users with onPremisesUserPrincipalName"
            ),
        "{out}"
    );
    let adams = &w.dns[&w.sam("adams")];
    assert!(
        out.contains(&format!(
            "ok    ldap rights: may write mail on {adams} (not protected"
        )),
        "{out}"
    );
    assert!(
        out.contains("ok    invitation policy: allowInvitesFrom = everyone"),
        "{out}"
    );
    eprintln!("--- check with two onPremisesUserPrincipalName users\n{out}");

    // Nobody may invite.
    w.control(
        reqwest::Method::POST,
        "/authorization-policy",
        Some(serde_json::json!({"allowInvitesFrom": "none"})),
    )
    .await;
    let (code, out) = check(&w);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL  invitation policy: allowInvitesFrom = none")
            && out.contains("help: in the Entra admin center, External Identities"),
        "{out}"
    );
    eprintln!("--- check with allowInvitesFrom = none\n{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_says_when_the_invitation_policy_cannot_be_read() {
    // The world's app has no Policy.Read.All: a warning, not a failure.
    let w = world(&partners(), "").await;
    let (code, out) = check(&w);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warn  invitation policy: could not be read")
            && out.contains("Policy.Read.All"),
        "{out}"
    );
    assert!(
        out.contains("ok    onPremisesUserPrincipalName: no account in scope"),
        "{out}"
    );
}
