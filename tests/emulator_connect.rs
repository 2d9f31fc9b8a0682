//! The emulator's Entra Connect cycle (control API, `docs/emulator.md`) against the lab's real
//! Samba AD DC: anchors matched by `onPremisesImmutableId` = base64(objectGUID), attributes
//! flowed, the `onPremisesUserPrincipalName` rule switch (contract §1.4 P1).
//!
//! Needs the directory test bed, which `scripts/test.sh` starts (by hand: `scripts/lab-up.sh`,
//! then `. /tmp/b2bsync-lab/lab.env`). Without the lab's variables the test fails rather than
//! passing silently or being skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use graph_emulator::{self as emulator, Options, Tenant, User};
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

/// Only the seeded partners (`p.*`): other tests create and change their own accounts under
/// `OU=Partners` at the same time, and must not move this test's counts.
const SEEDS_FILTER: &str = "(&(objectClass=user)(!(objectClass=computer))(sAMAccountName=p.*))";

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set; run scripts/lab-up.sh and source lab.env"))
}

struct Account {
    guid: Vec<u8>,
    dn: String,
    attrs: std::collections::HashMap<String, Vec<String>>,
}

impl Account {
    fn attr(&self, name: &str) -> Option<String> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.first().cloned())
    }
}

async fn read_partners() -> Vec<Account> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(env("LAB_CA")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let settings = LdapConnSettings::new().set_config(Arc::new(config));
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &env("AD_LDAPS_URL"))
        .await
        .unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind(&env("AD_SVC_BIND"), &env("AD_SVC_PASSWORD"))
        .await
        .unwrap()
        .success()
        .unwrap();
    let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(100)),
    ];
    let attrs = vec![
        "objectGUID",
        "mail",
        "displayName",
        "givenName",
        "sn",
        "sAMAccountName",
        "userPrincipalName",
        "userAccountControl",
    ];
    let mut search = ldap
        .streaming_search_with(
            adapters,
            &env("AD_PARTNERS_DN"),
            Scope::Subtree,
            SEEDS_FILTER,
            attrs,
        )
        .await
        .unwrap();
    let mut accounts = Vec::new();
    while let Some(entry) = search.next().await.unwrap() {
        let entry = SearchEntry::construct(entry);
        let guid = entry
            .bin_attrs
            .get("objectGUID")
            .and_then(|v| v.first().cloned())
            .or_else(|| {
                entry
                    .attrs
                    .get("objectGUID")
                    .and_then(|v| v.first())
                    .map(|s| s.as_bytes().to_vec())
            })
            .unwrap();
        accounts.push(Account {
            guid,
            dn: entry.dn,
            attrs: entry.attrs,
        });
    }
    search.finish().await.success().unwrap();
    accounts
}

/// Control API Connect cycle: matches by base64(objectGUID), flows mail, names,
/// accountEnabled, sAMAccountName, DN and onPremisesUserPrincipalName; the rule switch clears
/// onPremisesUserPrincipalName; a repeated cycle changes nothing.
#[tokio::test]
async fn connect_cycle_flows_attributes_from_samba_ad() {
    let accounts = read_partners().await;
    assert!(!accounts.is_empty(), "the lab has partner accounts");
    let mut tenant: Tenant = Tenant::from_json_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tenant-contract.json"
    ))
    .unwrap();
    for (i, account) in accounts.iter().enumerate() {
        tenant.users.push(User {
            id: format!("d0000000-0000-4000-8000-{i:012}"),
            user_principal_name: format!("synced{i}@contoso.example"),
            display_name: Some("stale".into()),
            mail: Some(format!("stale{i}@old.example")),
            on_premises_sync_enabled: Some(true),
            on_premises_immutable_id: Some(STANDARD.encode(&account.guid)),
            ..User::default()
        });
    }
    let emu = emulator::spawn(Options::new("127.0.0.1:0".parse().unwrap(), tenant))
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(emu.ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let cycle = |write_upn: bool| {
        let http = http.clone();
        let url = format!("{}/_emulator/connect/cycle", emu.base_url);
        async move {
            let body = json!({
                "ldapUrl": env("AD_LDAPS_URL"), "bindDn": env("AD_SVC_BIND"), "password": env("AD_SVC_PASSWORD"),
                "caFile": env("LAB_CA"), "baseDn": env("AD_PARTNERS_DN"), "anchor": "objectGUID",
                "filter": SEEDS_FILTER,
                "writeOnPremisesUserPrincipalName": write_upn,
            });
            let response = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let counts = cycle(true).await;
    assert_eq!(counts["read"], accounts.len());
    assert_eq!(counts["matched"], accounts.len());
    assert_eq!(counts["updated"], accounts.len());
    let dump: Value = http
        .get(format!("{}/_emulator/tenant", emu.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for account in &accounts {
        let id = STANDARD.encode(&account.guid);
        let user = dump["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["onPremisesImmutableId"] == id.as_str())
            .unwrap();
        assert_eq!(
            user["mail"].as_str().map(str::to_owned),
            account.attr("mail"),
            "{}",
            account.dn
        );
        assert_eq!(
            user["displayName"].as_str().map(str::to_owned),
            account.attr("displayName")
        );
        assert_eq!(
            user["surname"].as_str().map(str::to_owned),
            account.attr("sn")
        );
        assert_eq!(
            user["onPremisesSamAccountName"].as_str().map(str::to_owned),
            account.attr("sAMAccountName")
        );
        assert_eq!(user["onPremisesDistinguishedName"], account.dn.as_str());
        assert_eq!(
            user["onPremisesUserPrincipalName"]
                .as_str()
                .map(str::to_owned),
            account.attr("userPrincipalName")
        );
        let uac: u32 = account.attr("userAccountControl").unwrap().parse().unwrap();
        assert_eq!(user["accountEnabled"], uac & 2 == 0);
    }
    let with_upn = accounts
        .iter()
        .filter(|a| a.attr("userPrincipalName").is_some())
        .count();
    let cleared = cycle(false).await;
    assert_eq!(cleared["updated"], with_upn);
    let dump: Value = http
        .get(format!("{}/_emulator/tenant", emu.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let synced = dump["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["id"].as_str().unwrap().starts_with("d0000000"));
    assert!(synced.clone().count() == accounts.len());
    assert!(
        synced
            .into_iter()
            .all(|u| u["onPremisesUserPrincipalName"].is_null())
    );
    let again = cycle(false).await;
    assert_eq!(again["updated"], 0);
    assert_eq!(again["unchanged"], accounts.len());
}
