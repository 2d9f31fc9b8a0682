//! The lifecycle with a generic LDAP directory (the lab's OpenLDAP) as the source:
//! cloud-only partners joined by an expression over `uid`, their address PATCHed, invited,
//! accepted, and their on-premises password randomized with the RFC 3062 password modify
//! operation (not AD's `unicodePwd`), the old password then refused by slapd.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use common::world::text;
use common::{Server, admin, lab_ca, lab_var, service, unique};
use graph_emulator::{self as emulator, App, Tenant, User};
use secrecy::SecretString;
use serde_json::{Value, json};

const SECRET: &str = "openldap-lifecycle-secret";
const CLIENT_ID: &str = "0f0e0d0c-0000-4000-8000-00000000b2b5";
const OLD: &str = "Old-OpenLDAP-2026!";

#[tokio::test(flavor = "multi_thread")]
async fn generic_ldap_partners_convert_with_password_modify() {
    let server = Server::OpenLdap;
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
    for n in names {
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
    let _ = ldap.unbind().await;

    let users: Vec<User> = dns
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
    std::fs::write(
        dir.path().join("mappings/generic.toml"),
        format!(
            r#"description = "partners in a generic LDAP directory"
address = "lower(otherMailbox)"

[source]
attributes = ["uid", "otherMailbox"]

[scope]
base_dns = ["{ou}"]
filter = "(objectClass=inetOrgPerson)"

[join]
anchor = "objectGUID"

[join.cloud_only]
source = "uid ~ '@labexample.onmicrosoft.com'"
cloud = "userPrincipalName"

[write]
synced = ["mail"]
cloud_only = ["otherMails", "mail"]
"#
        ),
    )
    .unwrap();
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
            url = lab_var("OL_LDAPS_URL"),
            svc = lab_var("OL_SVC_DN"),
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
            .env("OL_TEST_LDAP_PASSWORD", lab_var("OL_SVC_PASSWORD"))
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

    // Run 1: addresses PATCHed and invitations sent.
    let out = b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = tenant_dump().await;
    assert_eq!(t["invitations"].as_array().unwrap().len(), names.len());
    for u in t["users"].as_array().unwrap() {
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
        .unwrap();
    assert_eq!(done["accounts"], json!(names.len()));
}
