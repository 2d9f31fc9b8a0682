//! The whole conversion lifecycle, end to end, through the `b2bsync` binary: the real Samba
//! AD of the lab and an in-process Graph emulator, over several scheduled runs.
//!
//! Each test makes its own OU under `OU=Partners` (the service account's delegation is
//! inherited) with its own accounts, and a tenant that matches them, so tests never disturb
//! each other or the seeds.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Output;

use b2bsync::emulator::{self, App, Tenant, User};
use b2bsync::source::{Directory, SearchScope};
use common::{Server, admin, lab_ca, lab_var, service, unique};
use secrecy::SecretString;
use serde_json::{Value, json};

const SECRET: &str = "lifecycle-test-secret";
const CLIENT_ID: &str = "6b1c2a4e-0000-4000-8000-00000000b2b5";
const OLD_PASSWORD: &str = "Partner-Old-2026!x";

/// One partner account the test creates.
struct Partner {
    sam: &'static str,
    display: &'static str,
    external: Option<&'static str>,
    /// How the tenant holds it.
    cloud: Tenancy,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tenancy {
    /// Synced by Entra Connect (anchor join).
    Synced,
    /// Synced, but Entra Connect wrote onPremisesUserPrincipalName (blocked).
    SyncedWithOnPremUpn,
    /// Synced, holds a directory role (blocked).
    SyncedRoleHolder,
    /// Cloud-only, joined by userPrincipalName.
    CloudOnly,
    /// Cloud-only with an Exchange mailbox (blocked).
    CloudOnlyMailbox,
    /// No cloud user at all (unmatched).
    Missing,
}

const PARTNERS: &[Partner] = &[
    Partner {
        sam: "adams",
        display: "Ana Adams",
        external: Some("ana.adams@fabrikam.example"),
        cloud: Tenancy::Synced,
    },
    Partner {
        sam: "dubois",
        display: "Élodie Dubois",
        external: Some("Elodie.Dubois@Lafayette.example"),
        cloud: Tenancy::Synced,
    },
    Partner {
        sam: "chen",
        display: "Wei Chen",
        external: Some("wei.chen@northwind.example"),
        cloud: Tenancy::CloudOnly,
    },
    Partner {
        sam: "baker",
        display: "Bob Baker",
        external: Some("bob.baker@contoso-partner.example"),
        cloud: Tenancy::SyncedWithOnPremUpn,
    },
    Partner {
        sam: "roleholder",
        display: "Rita Role",
        external: Some("rita@fabrikam.example"),
        cloud: Tenancy::SyncedRoleHolder,
    },
    Partner {
        sam: "evans",
        display: "Eve Evans",
        external: Some("eve.evans@fabrikam.example"),
        cloud: Tenancy::CloudOnlyMailbox,
    },
    Partner {
        sam: "verified",
        display: "Vera Fied",
        external: Some("vera@lab.example.com"),
        cloud: Tenancy::Synced,
    },
    Partner {
        sam: "nomail",
        display: "No Mail",
        external: None,
        cloud: Tenancy::Synced,
    },
    Partner {
        sam: "ghost",
        display: "Gus Ghost",
        external: Some("gus@fabrikam.example"),
        cloud: Tenancy::Missing,
    },
];

/// A test's world: its OU in Samba, its emulator, its config directory.
struct World {
    ou: String,
    prefix: String,
    dir: tempfile::TempDir,
    emulator: emulator::Running,
    http: reqwest::Client,
    /// sAMAccountName → DN.
    dns: BTreeMap<String, String>,
    /// sAMAccountName → cloud user id.
    ids: BTreeMap<String, String>,
}

impl World {
    fn sam(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("b2bsync.toml")
    }

    /// Runs the b2bsync binary with this world's config.
    fn b2bsync(&self, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_b2bsync"))
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env("LIFECYCLE_LDAP_PASSWORD", lab_var("AD_SVC_PASSWORD"))
            .env("LIFECYCLE_GRAPH_SECRET", SECRET)
            .env("B2BSYNC_LOG", "b2bsync=debug")
            .output()
            .expect("run b2bsync")
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(
            method,
            format!("{}/_emulator{path}", self.emulator.base_url),
        );
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("control API");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert!(status.is_success(), "control {path}: {status} {text}");
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("json")
        }
    }

    async fn cloud_user(&self, sam: &str) -> Value {
        let tenant = self.control(reqwest::Method::GET, "/tenant", None).await;
        let id = &self.ids[&self.sam(sam)];
        tenant["users"]
            .as_array()
            .and_then(|users| users.iter().find(|u| u["id"] == json!(id)))
            .cloned()
            .unwrap_or_else(|| panic!("user {sam} not in the tenant"))
    }

    async fn invitations_sent(&self) -> Vec<String> {
        let log = self.control(reqwest::Method::GET, "/requests", None).await;
        log["value"]
            .as_array()
            .expect("log")
            .iter()
            .filter(|r| {
                r["method"] == "POST"
                    && r["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("/v1.0/invitations"))
            })
            .filter(|r| r["status"].as_u64() == Some(201))
            .map(|r| r.to_string())
            .collect()
    }

    async fn connect_cycle(&self) -> Value {
        self.control(
            reqwest::Method::POST,
            "/connect/cycle",
            Some(json!({
                "ldapUrl": lab_var("AD_LDAPS_URL"),
                "bindDn": lab_var("AD_ADMIN_BIND"),
                "password": lab_var("AD_ADMIN_PASSWORD"),
                "caFile": lab_ca().display().to_string(),
                "baseDn": self.ou,
                "writeOnPremisesUserPrincipalName": false,
            })),
        )
        .await
    }

    async fn accept_pending(&self) -> usize {
        let tenant = self.control(reqwest::Method::GET, "/tenant", None).await;
        let mut n = 0;
        for u in tenant["users"].as_array().expect("users") {
            if u["externalUserState"] == "PendingAcceptance" {
                let id = u["id"].as_str().expect("id");
                self.control(
                    reqwest::Method::POST,
                    &format!("/users/{id}/accept"),
                    Some(json!({})),
                )
                .await;
                n += 1;
            }
        }
        n
    }

    async fn ad_mail(&self, sam: &str) -> Option<String> {
        let server = Server::Samba;
        let scope = SearchScope {
            base_dns: vec![self.ou.clone()],
            filter: format!("(sAMAccountName={})", self.sam(sam)),
            attributes: vec![],
        };
        let accounts = service(server).accounts(&scope).await.expect("read");
        accounts.first().and_then(|a| a.mail.clone())
    }

    async fn old_password_binds(&self, sam: &str) -> bool {
        let dn = &self.dns[&self.sam(sam)];
        service(Server::Samba)
            .try_bind(dn, &SecretString::from(OLD_PASSWORD))
            .await
            .expect("bind attempt")
    }
}

fn status_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status json: {e}\n{}", text(out)))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn count(status: &Value, state: &str) -> u64 {
    status["states"]
        .as_array()
        .and_then(|s| s.iter().find(|c| c["state"] == state))
        .and_then(|c| c["accounts"].as_u64())
        .unwrap_or(0)
}

/// Creates the OU, the accounts, the matching tenant and the config.
async fn world(limits: &str) -> World {
    let server = Server::Samba;
    let prefix = unique("lc").chars().take(8).collect::<String>() + ".";
    let ou = format!(
        "OU={},{}",
        prefix.trim_end_matches('.'),
        server.partners_dn()
    );
    let mut ldap = admin(server).connect().await.expect("admin bind");
    ldap.add(
        &ou,
        vec![("objectClass", HashSet::from(["organizationalUnit"]))],
    )
    .await
    .and_then(|r| r.success())
    .expect("create OU");
    for p in PARTNERS {
        let sam = format!("{prefix}{}", p.sam);
        let dn = format!("CN={sam},{ou}");
        let pwd: Vec<u8> = format!("\"{OLD_PASSWORD}\"")
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        let upn = format!("{sam}@lab.example.com");
        let mut attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = vec![
            (b"objectClass".to_vec(), HashSet::from([b"user".to_vec()])),
            (
                b"sAMAccountName".to_vec(),
                HashSet::from([sam.clone().into_bytes()]),
            ),
            (
                b"userPrincipalName".to_vec(),
                HashSet::from([upn.into_bytes()]),
            ),
            (
                b"displayName".to_vec(),
                HashSet::from([p.display.as_bytes().to_vec()]),
            ),
            (b"unicodePwd".to_vec(), HashSet::from([pwd])),
            (
                b"userAccountControl".to_vec(),
                HashSet::from([b"512".to_vec()]),
            ),
        ];
        if let Some(ext) = p.external {
            attrs.push((
                b"otherMailbox".to_vec(),
                HashSet::from([ext.as_bytes().to_vec()]),
            ));
        }
        ldap.add(&dn, attrs)
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("add {dn}: {e}"));
    }
    let _ = ldap.unbind().await;

    // Read the anchors back as b2bsync will.
    let scope = SearchScope {
        base_dns: vec![ou.clone()],
        filter: "(&(objectCategory=person)(objectClass=user))".into(),
        attributes: vec![],
    };
    let accounts = service(server)
        .accounts(&scope)
        .await
        .expect("read accounts");
    assert_eq!(accounts.len(), PARTNERS.len());
    let mut dns = BTreeMap::new();
    let mut ids = BTreeMap::new();
    let mut users = Vec::new();
    for p in PARTNERS {
        let sam = format!("{prefix}{}", p.sam);
        let account = accounts
            .iter()
            .find(|a| a.account_name.as_deref() == Some(sam.as_str()))
            .expect("account");
        dns.insert(sam.clone(), account.dn.clone());
        if p.cloud == Tenancy::Missing {
            continue;
        }
        let id = uuid::Uuid::new_v4().to_string();
        ids.insert(sam.clone(), id.clone());
        let synced = matches!(
            p.cloud,
            Tenancy::Synced | Tenancy::SyncedWithOnPremUpn | Tenancy::SyncedRoleHolder
        );
        users.push(User {
            id,
            user_principal_name: format!("{sam}@lab.example.com"),
            display_name: Some(p.display.to_string()),
            on_premises_sync_enabled: synced.then_some(true),
            on_premises_immutable_id: synced
                .then(|| account.anchor().expect("anchor").as_str().to_string()),
            on_premises_sam_account_name: synced.then(|| sam.clone()),
            on_premises_user_principal_name: (p.cloud == Tenancy::SyncedWithOnPremUpn)
                .then(|| format!("{sam}@lab.example.com")),
            roles: if p.cloud == Tenancy::SyncedRoleHolder {
                vec!["User Administrator".into()]
            } else {
                vec![]
            },
            mailbox: p.cloud == Tenancy::CloudOnlyMailbox,
            ..User::default()
        });
    }
    let tenant = Tenant {
        tenant_id: uuid::Uuid::new_v4().to_string(),
        initial_domain: "labexample.onmicrosoft.com".into(),
        verified_domains: vec![
            "lab.example.com".into(),
            "labexample.onmicrosoft.com".into(),
        ],
        apps: vec![App {
            app_id: CLIENT_ID.into(),
            display_name: Some("b2bsync".into()),
            client_secrets: vec![SECRET.into()],
            certificates: vec![],
            permissions: vec![
                "User.ReadWrite.All".into(),
                "User.Invite.All".into(),
                "Organization.Read.All".into(),
                "RoleManagement.Read.Directory".into(),
            ],
        }],
        users,
    };
    let emulator = emulator::spawn(emulator::Options::new(
        "127.0.0.1:0".parse().expect("addr"),
        tenant,
    ))
    .await
    .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("graph-ca.pem"), &emulator.ca_pem).expect("ca");
    let mappings = dir.path().join("mappings");
    std::fs::create_dir(&mappings).expect("mappings dir");
    std::fs::write(
        mappings.join("partners.toml"),
        format!(
            r#"description = "lifecycle test"
address = "lower(trim(otherMailbox))"

[source]
attributes = ["sAMAccountName", "userPrincipalName", "otherMailbox"]

[scope]
base_dns = ["{ou}"]
filter = "(&(objectCategory=person)(objectClass=user))"

[join]
anchor = "ms-DS-ConsistencyGuid"

[join.cloud_only]
source = "userPrincipalName"
cloud = "userPrincipalName"

[write]
synced = ["mail"]
cloud_only = ["otherMails", "mail"]

[invitation]
redirect_url = "https://myapps.microsoft.com/"
send_message = true
"#
        ),
    )
    .expect("mapping");
    std::fs::write(
        dir.path().join("b2bsync.toml"),
        format!(
            r#"[ldap]
url = "{ldaps}"
bind_dn = "{svc}"
password_env = "LIFECYCLE_LDAP_PASSWORD"
ca_file = "{ca}"

[graph]
tenant = "{tenant}"
client_id = "{CLIENT_ID}"
auth = "client_secret"
client_secret_env = "LIFECYCLE_GRAPH_SECRET"
authority = "{base}"
graph_url = "{base}"
resource = "https://graph.microsoft.com"
ca_file = "graph-ca.pem"

[state]
path = "state/b2bsync.db"

{limits}
"#,
            ldaps = lab_var("AD_LDAPS_URL"),
            svc = lab_var("AD_SVC_BIND"),
            ca = lab_ca().display(),
            tenant = emulator.tenant_id,
            base = emulator.base_url,
        ),
    )
    .expect("config");
    let http = reqwest::Client::builder()
        .tls_certs_only(
            reqwest::Certificate::from_pem_bundle(emulator.ca_pem.as_bytes()).expect("ca"),
        )
        .build()
        .expect("http");
    World {
        ou,
        prefix,
        dir,
        emulator,
        http,
        dns,
        ids,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn converts_synced_and_cloud_only_partners_over_scheduled_runs() {
    let w = world("").await;

    // Run 1: AD mail for the synced partners, otherMails + mail for the cloud-only one, and
    // the cloud-only one is invited at once (its cloud user shows the address right away).
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        w.ad_mail("adams").await.as_deref(),
        Some("ana.adams@fabrikam.example")
    );
    assert_eq!(
        w.ad_mail("dubois").await.as_deref(),
        Some("elodie.dubois@lafayette.example")
    );
    let chen = w.cloud_user("chen").await;
    assert_eq!(chen["otherMails"], json!(["wei.chen@northwind.example"]));
    assert_eq!(chen["externalUserState"], "PendingAcceptance");
    assert_eq!(w.invitations_sent().await.len(), 1);
    // Blocked accounts got no write.
    assert_eq!(
        w.ad_mail("baker").await,
        None,
        "onPremisesUserPrincipalName blocks"
    );
    assert_eq!(
        w.ad_mail("roleholder").await,
        None,
        "role holders are never touched"
    );
    assert_eq!(
        w.ad_mail("verified").await,
        None,
        "verified-domain address blocks"
    );
    assert_eq!(
        w.cloud_user("evans").await["otherMails"],
        json!([]),
        "mailbox blocks"
    );
    // Synced users are not invited before the cloud shows the address.
    assert_eq!(
        w.cloud_user("adams").await["externalUserState"],
        Value::Null
    );

    // After run 1, the funnel names every block.
    let status = status_json(&w.b2bsync(&["status", "--format", "json"]));
    let reasons: Vec<&str> = status["blocked"]
        .as_array()
        .expect("blocked")
        .iter()
        .filter_map(|b| b["reason"].as_str())
        .collect();
    for expected in [
        "on_premises_user_principal_name",
        "role_holder",
        "mailbox",
        "address_in_verified_domain",
        "no_address",
    ] {
        assert!(
            reasons.contains(&expected),
            "{expected} missing from {reasons:?}"
        );
    }
    assert_eq!(count(&status, "awaiting_sync"), 2, "{status:#}");
    assert_eq!(count(&status, "invited"), 1, "{status:#}");

    // A second run before Entra Connect ran: waiting, nothing sent twice.
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(w.invitations_sent().await.len(), 1);

    // The admin changes the Entra Connect rule so it no longer writes
    // onPremisesUserPrincipalName; the next cycle clears it and carries AD mail to the
    // synced cloud users.
    let cycle = w.connect_cycle().await;
    assert!(cycle["updated"].as_u64().unwrap_or(0) >= 2, "{cycle}");
    assert_eq!(
        w.cloud_user("adams").await["mail"],
        "ana.adams@fabrikam.example"
    );

    assert_eq!(
        w.cloud_user("baker").await["onPremisesUserPrincipalName"],
        Value::Null
    );

    // Run 2: the synced partners are invited; the unblocked one gets its address staged.
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        w.ad_mail("baker").await.as_deref(),
        Some("bob.baker@contoso-partner.example")
    );
    assert_eq!(w.invitations_sent().await.len(), 3);
    assert_eq!(
        w.cloud_user("adams").await["externalUserState"],
        "PendingAcceptance"
    );
    assert_eq!(
        w.cloud_user("dubois").await["externalUserState"],
        "PendingAcceptance"
    );
    // Passwords are untouched until acceptance (the default policy).
    assert!(w.old_password_binds("adams").await);

    // Everyone accepts.
    assert_eq!(w.accept_pending().await, 3);

    // Run 3: on-premises passwords randomized for the accepted ones.
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for sam in ["adams", "dubois", "chen"] {
        assert!(
            !w.old_password_binds(sam).await,
            "{sam}: the old password still binds"
        );
    }
    // Blocked, unmatched and not yet converted accounts keep their password.
    for sam in ["baker", "roleholder", "evans", "ghost", "verified"] {
        assert!(
            w.old_password_binds(sam).await,
            "{sam}: a blocked account was touched"
        );
    }

    // Run 4: nothing left to do, nothing sent again.
    let out = w.b2bsync(&["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 actions"),
        "{}",
        text(&out)
    );
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(w.invitations_sent().await.len(), 3);

    let out = w.b2bsync(&["status", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = status_json(&out);
    assert_eq!(count(&status, "done"), 3, "{status:#}");
    assert_eq!(count(&status, "unmatched"), 1, "{status:#}");
    assert_eq!(count(&status, "blocked"), 4, "{status:#}");
    assert_eq!(
        count(&status, "awaiting_sync"),
        1,
        "baker waits for the next cycle: {status:#}"
    );

    // The journal has every write, and no secret.
    let out = w.b2bsync(&["report", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let journal = String::from_utf8_lossy(&out.stdout);
    assert!(!journal.contains(SECRET));
    assert!(!journal.contains(OLD_PASSWORD));
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_tell_schedulers_what_happened() {
    // Over threshold: at most one address write allowed; the plan has three.
    let w = world("[limits]\naddress_writes = { max_count = 1, max_percent = 100.0 }\n").await;
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("help:"),
        "{}",
        text(&out)
    );
    assert_eq!(
        w.ad_mail("adams").await,
        None,
        "nothing may be written over a threshold"
    );
    assert!(w.invitations_sent().await.is_empty());
    // The override lets it through.
    let out = w.b2bsync(&["run", "--allow-over-threshold"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Another run holds the lock.
    let lock_path = w.dir.path().join("state/b2bsync.db.lock");
    let held =
        b2bsync::state::RunLock::acquire(&w.dir.path().join("state/b2bsync.db")).expect("lock");
    assert!(lock_path.exists());
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    drop(held);

    // An invalid config names file, line and column.
    let bad = w.dir.path().join("bad.toml");
    std::fs::write(&bad, "[ldap]\nurl = \"ldaps://x\"\nbind_dnn = \"y\"\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_b2bsync"))
        .args(["--config", bad.to_str().expect("utf8"), "plan"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:3:1"), "{stderr}");
    assert!(stderr.contains("help:"), "{stderr}");

    // A stale reviewed plan is refused.
    let plan_path = w.dir.path().join("plan.json");
    let out = w.b2bsync(&["plan", "--out", plan_path.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    w.connect_cycle().await; // the world changes after the review
    let out = w.b2bsync(&["apply", "--plan", plan_path.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stale"),
        "{}",
        text(&out)
    );
}
