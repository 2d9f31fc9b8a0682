//! The lifecycle against a generic LDAP server (OpenLDAP, 389 Directory Server): shared by
//! tests/lifecycle_openldap.rs and tests/lifecycle_389ds.rs.

use std::collections::HashSet;

use graph_emulator::{self as emulator, App, Tenant, User};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::world::text;
use super::{Server, admin, lab_ca, service, unique};

const SECRET: &str = "openldap-lifecycle-secret";
const CLIENT_ID: &str = "0f0e0d0c-0000-4000-8000-00000000b2b5";
const OLD: &str = "Old-OpenLDAP-2026!";

/// The whole lifecycle against a generic LDAP `server`: three partners converted, a
/// locked one (`lock`: the flavour's lock attribute and value) blocked, the old passwords
/// refused, then one converted partner renamed (its DN changes, its anchor does not): the
/// next plan has nothing to do and `status` still counts each partner once.
pub async fn generic_lifecycle(server: Server, lock: (&str, &str)) {
    let ou_name = unique("lc");
    let ou = format!("ou={ou_name},{}", server.partners_dn());
    let mut ldap = admin(server).connect().await.expect("admin");
    ldap.add(
        &ou,
        vec![
            ("objectClass", HashSet::from(["organizationalUnit"])),
            ("ou", HashSet::from([ou_name.as_str()])),
        ],
    )
    .await
    .and_then(|r| r.success())
    .expect("ou");
    let names = ["olga", "otto", "oscar"];
    let mut dns = Vec::new();
    for n in names.iter().copied().chain(["lucy"]) {
        let uid = format!("{ou_name}.{n}");
        let dn = format!("uid={uid},{ou}");
        let mail = format!("{n}@contoso-partner.example");
        ldap.add(
            &dn,
            vec![
                (
                    "objectClass",
                    HashSet::from(["inetOrgPerson", "extensibleObject"]),
                ),
                ("uid", HashSet::from([uid.as_str()])),
                ("cn", HashSet::from([n])),
                ("sn", HashSet::from([n])),
                ("otherMailbox", HashSet::from([mail.as_str()])),
                ("userPassword", HashSet::from([OLD])),
            ],
        )
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("add {dn}: {e}"));
        dns.push((uid, dn));
    }
    // The fourth partner is locked the flavour's way: blocked, never invited or reset.
    let (_, locked_dn) = dns.pop().expect("four partners");
    ldap.modify(
        &locked_dn,
        vec![ldap3::Mod::Add(lock.0, HashSet::from([lock.1]))],
    )
    .await
    .and_then(|r| r.success())
    .unwrap_or_else(|e| panic!("lock {locked_dn}: {e}"));
    let _ = ldap.unbind().await;

    let users: Vec<User> = dns
        .iter()
        .map(|(uid, dn)| (uid.clone(), dn.clone()))
        .chain([(format!("{ou_name}.lucy"), locked_dn.clone())])
        .collect::<Vec<_>>()
        .iter()
        .map(|(uid, _)| User {
            id: uuid::Uuid::new_v4().to_string(),
            user_principal_name: format!("{uid}@labexample.onmicrosoft.com"),
            display_name: Some(uid.clone()),
            ..User::default()
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
                "User.Invite.All".into(),
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
    let mapping = |anchor: &str| {
        format!(
            r#"description = "partners in a generic LDAP directory"
address = "lower(otherMailbox)"

[source]
attributes = ["uid", "otherMailbox"]

[scope]
base_dns = ["{ou}"]
filter = "(objectClass=inetOrgPerson)"

[join]
anchor = "{anchor}"

[join.cloud_only]
source = "uid ~ '@labexample.onmicrosoft.com'"
cloud = "userPrincipalName"

[write]
synced = ["mail"]
cloud_only = ["otherMails", "mail"]
"#
        )
    };
    let mapping_file = dir.path().join("mappings/generic.toml");
    // The server's own anchor, by name.
    let (anchor, marks) = match server {
        Server::Ds389 => ("nsUniqueId", "by modifyTimestamp with 60 s overlap"),
        _ => ("entryUUID", "by entryCSN"),
    };
    std::fs::write(&mapping_file, mapping(anchor)).unwrap();
    let config = dir.path().join("b2bsync.toml");
    std::fs::write(
        &config,
        format!(
            r#"[ldap]
url = "{url}"
bind_dn = "{svc}"
password_env = "OL_TEST_LDAP_PASSWORD"
ca_file = "{ca}"
flavour = "generic"

[graph]
tenant = "{tenant}"
client_id = "{CLIENT_ID}"
auth = "client_secret"
client_secret_env = "OL_TEST_GRAPH_SECRET"
authority = "{base}"
graph_url = "{base}"
resource = "https://graph.microsoft.com"
ca_file = "graph-ca.pem"
"#,
            url = server.ldaps_url(),
            svc = server.service_bind(),
            ca = lab_ca().display(),
            tenant = emu.tenant_id,
            base = emu.base_url,
        ),
    )
    .unwrap();
    let b2bsync = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_b2bsync"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env(
                "OL_TEST_LDAP_PASSWORD",
                server.service_password().expose_secret(),
            )
            .env("OL_TEST_GRAPH_SECRET", SECRET)
            .output()
            .unwrap()
    };
    let http = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(emu.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let tenant_dump = || async {
        http.get(format!("{}/_emulator/tenant", emu.base_url))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };

    // check prints what the server can do, and refuses an anchor it does not have, naming
    // the place in the mapping file.
    let out = b2bsync(&["check"]);
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        printed.contains(&format!("incremental reads: {marks}")),
        "{printed}"
    );
    assert!(printed.contains(&format!("anchor: {anchor}")), "{printed}");
    std::fs::write(&mapping_file, mapping("objectGUID")).unwrap();
    let out = b2bsync(&["check"]);
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert_ne!(out.status.code(), Some(0), "{printed}");
    assert!(
        printed.contains(
            "generic.toml:12:10: join.anchor `objectGUID` is not an attribute of this directory"
        ) && printed.contains(&format!("`{anchor}`")),
        "{printed}"
    );
    std::fs::write(&mapping_file, mapping(anchor)).unwrap();

    // Run 1: addresses PATCHed and invitations sent.
    let out = b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = tenant_dump().await;
    assert_eq!(t["invitations"].as_array().unwrap().len(), names.len());
    let lucy = format!("{ou_name}.lucy@");
    for u in t["users"].as_array().unwrap() {
        if u["userPrincipalName"].as_str().unwrap().starts_with(&lucy) {
            // The locked partner: blocked, left as it was.
            assert!(u["externalUserState"].is_null(), "{u}");
            continue;
        }
        assert_eq!(u["externalUserState"], "PendingAcceptance");
        assert!(
            u["otherMails"][0]
                .as_str()
                .unwrap()
                .ends_with("@contoso-partner.example")
        );
        let id = u["id"].as_str().unwrap();
        http.post(format!("{}/_emulator/users/{id}/accept", emu.base_url))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
    }
    // The old password still works until the run after acceptance.
    let svc = service(server);
    assert!(
        svc.try_bind(&dns[0].1, &SecretString::from(OLD))
            .await
            .unwrap()
    );

    // Run 2: password modify (RFC 3062) for every accepted partner.
    let out = b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for (_, dn) in &dns {
        assert!(
            !svc.try_bind(dn, &SecretString::from(OLD)).await.unwrap(),
            "{dn}: old password still binds"
        );
    }
    // Nothing left to do, and each converted partner counted once as done.
    let settled = || {
        let out = b2bsync(&["plan"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("0 actions"),
            "{}",
            text(&out)
        );
        let status: Value =
            serde_json::from_slice(&b2bsync(&["status", "--format", "json"]).stdout).unwrap();
        let done = status["states"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["state"] == "done")
            .cloned()
            .unwrap();
        assert_eq!(done["accounts"], json!(names.len()), "{status}");
    };
    settled();
    // The locked partner was never invited and keeps its password.
    let t = tenant_dump().await;
    assert_eq!(t["invitations"].as_array().unwrap().len(), names.len());
    let csv = dir.path().join("plan.csv");
    let out = b2bsync(&["plan", "--csv", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = std::fs::read_to_string(&csv).unwrap();
    assert!(
        plan.lines()
            .any(|l| l.contains(".lucy") && l.contains("disabled")),
        "the locked partner is blocked as disabled:\n{plan}"
    );

    // A rename: the DN changes, the anchor does not. Nothing to do, no second randomization.
    let mut ldap = admin(server).connect().await.expect("admin");
    let renamed_rdn = format!("cn={}-renamed", names[0]);
    ldap.modifydn(&dns[0].1, &renamed_rdn, false, None)
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("rename {}: {e}", dns[0].1));
    let _ = ldap.unbind().await;
    // Before and after a run: no second invitation or randomization, no second row.
    settled();
    let out = b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    settled();
    assert_eq!(
        tenant_dump().await["invitations"].as_array().unwrap().len(),
        names.len()
    );

    // A change between runs, seen by the next incremental run: the locked partner is
    // unlocked, and the next scheduled run, reading only the directory's changes, invites her.
    let mut ldap = admin(server).connect().await.expect("admin");
    ldap.modify(&locked_dn, vec![ldap3::Mod::Delete(lock.0, HashSet::new())])
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("unlock {locked_dn}: {e}"));
    let _ = ldap.unbind().await;
    let out = b2bsync(&["--log-format", "json", "run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let read = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "read both sides")
        .unwrap_or_else(|| panic!("no `read both sides` line in:\n{stderr}"));
    assert_eq!(read["searches_incremental"], 1, "{read}");
    assert_eq!(read["searches_full"], 0, "{read}");
    let invited = tenant_dump().await["invitations"].as_array().unwrap().len();
    assert_eq!(invited, names.len() + 1, "the unlocked partner is invited");
}
