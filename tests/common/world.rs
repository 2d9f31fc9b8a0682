//! A test's own world for end-to-end runs of the `b2bsync` binary: an OU under
//! `OU=Partners` of the lab's Samba AD with its own partner accounts, an in-process Graph
//! emulator whose tenant matches them, and a config directory. Tests never share a world,
//! so they never disturb each other or the seeds.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Output;

use b2bsync::source::{Directory, SearchScope};
use graph_emulator::{self as emulator, App, Tenant, User};
use secrecy::SecretString;
use serde_json::{Value, json};

use super::{Server, admin, lab_ca, lab_var, service, unique};

pub const SECRET: &str = "world-test-graph-secret";
pub const CLIENT_ID: &str = "6b1c2a4e-0000-4000-8000-00000000b2b5";
pub const OLD_PASSWORD: &str = "Partner-Old-2026!x";

/// How the tenant holds a partner.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tenancy {
    /// Synced by Entra Connect (anchor join).
    Synced,
    /// Synced, but Entra Connect wrote onPremisesUserPrincipalName (blocked until the rule
    /// change clears it).
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

/// One partner account a test creates.
#[derive(Clone, Debug)]
pub struct Partner {
    pub sam: String,
    pub display: String,
    pub external: Option<String>,
    pub tenancy: Tenancy,
    /// More attributes the account is created with (name, value), such as Exchange's.
    pub extra: Vec<(String, Vec<u8>)>,
}

impl Partner {
    pub fn new(sam: &str, display: &str, external: Option<&str>, tenancy: Tenancy) -> Partner {
        Partner {
            sam: sam.into(),
            display: display.into(),
            external: external.map(str::to_string),
            tenancy,
            extra: Vec::new(),
        }
    }

    /// The partner, created with one more attribute value.
    pub fn with_attribute(mut self, name: &str, value: impl Into<Vec<u8>>) -> Partner {
        self.extra.push((name.to_string(), value.into()));
        self
    }
}

/// A test's world.
pub struct World {
    pub ou: String,
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub emulator: emulator::Running,
    pub http: reqwest::Client,
    /// sAMAccountName → DN.
    pub dns: BTreeMap<String, String>,
    /// sAMAccountName → cloud user id.
    pub ids: BTreeMap<String, String>,
}

/// Fails unless the emulator recorded exactly one successful invitation for each of
/// `expected` users: none sent twice, none lost.
pub async fn assert_each_invited_once(w: &World, expected: usize) {
    let mut per_user: BTreeMap<String, usize> = BTreeMap::new();
    for (user, _) in w.invitations().await {
        *per_user.entry(user).or_default() += 1;
    }
    let twice: Vec<_> = per_user.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "invitations sent more than once: {twice:?}"
    );
    assert_eq!(per_user.len(), expected, "invitations lost");
}

/// `n` synced partners `s000..` and `n` cloud-only partners `c000..`, all eligible.
pub fn eligible_partners(n: usize) -> Vec<Partner> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(Partner::new(
            &format!("s{i:03}"),
            &format!("Synced Partner {i}"),
            Some(&format!("synced{i}@fabrikam.example")),
            Tenancy::Synced,
        ));
        v.push(Partner::new(
            &format!("c{i:03}"),
            &format!("Cloud Partner {i}"),
            Some(&format!("cloud{i}@northwind.example")),
            Tenancy::CloudOnly,
        ));
    }
    v
}

/// `n` cloud-only partners `c0..`: each is staged and invited in one run.
pub fn cloud_partners(n: usize) -> Vec<Partner> {
    (0..n)
        .map(|i| {
            Partner::new(
                &format!("c{i}"),
                &format!("Cloud Partner {i}"),
                Some(&format!("cloud{i}@northwind.example")),
                Tenancy::CloudOnly,
            )
        })
        .collect()
}

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn status_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status json: {e}\n{}", text(out)))
}

/// The reasons of the blocked accounts in `status --format json`.
pub fn blocked_reasons(status: &Value) -> Vec<String> {
    status["blocked"]
        .as_array()
        .expect("blocked")
        .iter()
        .filter_map(|b| b["reason"].as_str().map(str::to_string))
        .collect()
}

pub fn count(status: &Value, state: &str) -> u64 {
    status["states"]
        .as_array()
        .and_then(|s| s.iter().find(|c| c["state"] == state))
        .and_then(|c| c["accounts"].as_u64())
        .unwrap_or(0)
}

impl World {
    pub fn sam(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("b2bsync.toml")
    }

    /// The b2bsync command with this world's config and secrets in its environment.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_b2bsync"));
        cmd.arg("--config")
            .arg(self.config_path())
            .args(args)
            .env("WORLD_LDAP_PASSWORD", lab_var("AD_SVC_PASSWORD"))
            .env("WORLD_GRAPH_SECRET", SECRET)
            .env("B2BSYNC_LOG", "b2bsync=debug");
        cmd
    }

    /// Runs b2bsync to completion.
    pub fn b2bsync(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run b2bsync")
    }

    pub async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
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

    pub async fn cloud_user(&self, sam: &str) -> Value {
        let tenant = self.control(reqwest::Method::GET, "/tenant", None).await;
        let id = &self.ids[&self.sam(sam)];
        tenant["users"]
            .as_array()
            .and_then(|users| users.iter().find(|u| u["id"] == json!(id)))
            .cloned()
            .unwrap_or_else(|| panic!("user {sam} not in the tenant"))
    }

    /// Sign-in session revocations the emulator recorded, as sAMAccountNames (with the
    /// test's prefix removed), sorted; an unknown user id is kept as it is.
    pub async fn revocations(&self) -> Vec<String> {
        let tenant = self.control(reqwest::Method::GET, "/tenant", None).await;
        let mut sams: Vec<String> = tenant["revocations"]
            .as_array()
            .expect("revocations")
            .iter()
            .map(|r| {
                let id = r["userId"].as_str().unwrap_or_default();
                self.ids
                    .iter()
                    .find(|(_, v)| v.as_str() == id)
                    .map(|(sam, _)| sam.strip_prefix(&self.prefix).unwrap_or(sam).to_string())
                    .unwrap_or_else(|| id.to_string())
            })
            .collect();
        sams.sort();
        sams
    }

    /// Successful invitations as the emulator recorded them: (invited user id, reset).
    pub async fn invitations(&self) -> Vec<(String, bool)> {
        let tenant = self.control(reqwest::Method::GET, "/tenant", None).await;
        tenant["invitations"]
            .as_array()
            .expect("invitations")
            .iter()
            .map(|i| {
                (
                    i["invitedUserId"].as_str().unwrap_or_default().to_string(),
                    i["resetRedemption"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    }

    pub async fn connect_cycle(&self) -> Value {
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

    pub async fn accept_pending(&self) -> usize {
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

    pub async fn ad_mail(&self, sam: &str) -> Option<String> {
        let scope = SearchScope {
            base_dns: vec![self.ou.clone()],
            filter: format!("(sAMAccountName={})", self.sam(sam)),
            attributes: vec![],
            protected_groups: vec![],
        };
        let accounts = service(Server::Samba).accounts(&scope).await.expect("read");
        accounts.first().and_then(|a| a.mail.clone())
    }

    pub async fn old_password_binds(&self, sam: &str) -> bool {
        let dn = &self.dns[&self.sam(sam)];
        service(Server::Samba)
            .try_bind(dn, &SecretString::from(OLD_PASSWORD))
            .await
            .expect("bind attempt")
    }
}

/// Creates the OU, the accounts, the matching tenant and the config. `extra_config` is
/// appended to b2bsync.toml (e.g. `[limits]` or `[apply]` sections).
pub async fn world(partners: &[Partner], extra_config: &str) -> World {
    world_with(partners, extra_config, |_| {}).await
}

/// [`world`], with a chance to change the emulator's options (token lifetime, time scale).
pub async fn world_with(
    partners: &[Partner],
    extra_config: &str,
    tweak: impl FnOnce(&mut emulator::Options),
) -> World {
    let server = Server::Samba;
    let prefix = unique("w").chars().take(8).collect::<String>() + ".";
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
    let pwd: Vec<u8> = format!("\"{OLD_PASSWORD}\"")
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    for p in partners {
        let sam = format!("{prefix}{}", p.sam);
        let dn = format!("CN={sam},{ou}");
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
            (b"unicodePwd".to_vec(), HashSet::from([pwd.clone()])),
            (
                b"userAccountControl".to_vec(),
                HashSet::from([b"512".to_vec()]),
            ),
        ];
        if let Some(ext) = &p.external {
            attrs.push((
                b"otherMailbox".to_vec(),
                HashSet::from([ext.as_bytes().to_vec()]),
            ));
        }
        for (name, value) in &p.extra {
            attrs.push((name.as_bytes().to_vec(), HashSet::from([value.clone()])));
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
        protected_groups: vec![],
    };
    let accounts = service(server)
        .accounts(&scope)
        .await
        .expect("read accounts");
    assert_eq!(accounts.len(), partners.len());
    let mut dns = BTreeMap::new();
    let mut ids = BTreeMap::new();
    let mut users = Vec::new();
    for p in partners {
        let sam = format!("{prefix}{}", p.sam);
        let account = accounts
            .iter()
            .find(|a| a.account_name.as_deref() == Some(sam.as_str()))
            .expect("account");
        dns.insert(sam.clone(), account.dn.clone());
        if p.tenancy == Tenancy::Missing {
            continue;
        }
        let id = uuid::Uuid::new_v4().to_string();
        ids.insert(sam.clone(), id.clone());
        let synced = matches!(
            p.tenancy,
            Tenancy::Synced | Tenancy::SyncedWithOnPremUpn | Tenancy::SyncedRoleHolder
        );
        users.push(User {
            id,
            user_principal_name: format!("{sam}@lab.example.com"),
            display_name: Some(p.display.clone()),
            on_premises_sync_enabled: synced.then_some(true),
            on_premises_immutable_id: synced
                .then(|| account.anchor().expect("anchor").as_str().to_string()),
            on_premises_sam_account_name: synced.then(|| sam.clone()),
            on_premises_user_principal_name: (p.tenancy == Tenancy::SyncedWithOnPremUpn)
                .then(|| format!("{sam}@lab.example.com")),
            roles: if p.tenancy == Tenancy::SyncedRoleHolder {
                vec!["User Administrator".into()]
            } else {
                vec![]
            },
            mailbox: p.tenancy == Tenancy::CloudOnlyMailbox,
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
            ..App::default()
        }],
        users,
    };
    let mut options = emulator::Options::new("127.0.0.1:0".parse().expect("addr"), tenant);
    tweak(&mut options);
    let emulator = emulator::spawn(options).await.expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("graph-ca.pem"), &emulator.ca_pem).expect("ca");
    let mappings = dir.path().join("mappings");
    std::fs::create_dir(&mappings).expect("mappings dir");
    std::fs::write(
        mappings.join("partners.toml"),
        format!(
            r#"description = "test world"
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
password_env = "WORLD_LDAP_PASSWORD"
ca_file = "{ca}"

[graph]
tenant = "{tenant}"
client_id = "{CLIENT_ID}"
auth = "client_secret"
client_secret_env = "WORLD_GRAPH_SECRET"
authority = "{base}"
graph_url = "{base}"
resource = "https://graph.microsoft.com"
ca_file = "graph-ca.pem"

[state]
path = "state/b2bsync.db"

{extra_config}
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
