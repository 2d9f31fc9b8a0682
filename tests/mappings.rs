//! Loads every shipped mapping in `mappings/`, alone and as a set, and runs the lab's
//! partner fixture (`tests/fixtures/partners.json`) through map + join + plan with them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use b2bsync::join::join;
use b2bsync::mapping::{Mapping, MappingSet};
use b2bsync::model::{AccountKind, Anchor, Attributes, CloudUser, Lifecycle, SourceAccount};
use b2bsync::plan::{Policy, Tenant, plan};

fn mappings_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings")
}

fn shipped() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(mappings_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_mapping_loads_alone() {
    let files = shipped();
    assert!(files.len() >= 2, "mappings/ should ship annotated examples");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        match Mapping::parse(&f, &text) {
            Err(e) => panic!("{} does not load:\n{e}", f.display()),
            Ok(m) => assert!(
                m.warnings.is_empty(),
                "the shipped examples should load without warnings: {:#?}",
                m.warnings
            ),
        }
    }
}

#[test]
fn the_shipped_mappings_load_together_with_disjoint_scopes() {
    let set = MappingSet::load_dir(&mappings_dir()).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = set.mappings().iter().map(|m| m.name.as_str()).collect();
    assert!(names.contains(&"partners"), "{names:?}");
    assert!(names.contains(&"vendors-table"), "{names:?}");
    let attributes = set.attributes();
    for a in [
        "otherMailbox",
        "extensionAttribute10",
        "objectGUID",
        "memberOf",
    ] {
        assert!(
            attributes.iter().any(|x| x == a),
            "{a} missing from {attributes:?}"
        );
    }
    assert!(set.searches().len() >= 2);
    let vendors = set.get("vendors-table").unwrap();
    assert_eq!(
        vendors.tables()["vendors"].get("V.JONES"),
        Some("Jo.Jones@northwind.example")
    );
}

/// The accounts of the lab fixture, as the source adapter would read them from AD.
fn lab_accounts() -> Vec<SourceAccount> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/partners.json");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let base = fixture["ad_base_dn"].as_str().unwrap();
    let suffix = fixture["upn_suffix"].as_str().unwrap();
    fixture["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let sam = a["sam"].as_str().unwrap();
            let container = a["container"].as_str().unwrap();
            let ad = fixture["containers"][container]["ad"].as_str().unwrap();
            let mut attributes = Attributes::new();
            attributes.insert("sAMAccountName".to_string(), vec![sam.to_string()]);
            let upn = format!("{sam}@{suffix}");
            attributes.insert("userPrincipalName".to_string(), vec![upn.clone()]);
            if let Some(m) = a["external_mail"].as_str() {
                attributes.insert("otherMailbox".to_string(), vec![m.to_string()]);
            }
            let n = u8::try_from(i + 1).unwrap();
            SourceAccount {
                dn: format!("CN={},{ad},{base}", a["cn"].as_str().unwrap()),
                object_guid: Some(Anchor::from_bytes(&[n; 16])),
                consistency_guid: None,
                account_name: Some(sam.to_string()),
                user_principal_name: Some(upn),
                display_name: a["display_name"].as_str().map(str::to_string),
                mail: a["mail"].as_str().map(str::to_string),
                user_account_control: Some(if a["enabled"].as_bool().unwrap() {
                    0x200
                } else {
                    0x202
                }),
                admin_count: a["admin_count"].as_u64() == Some(1),
                locked: false,
                member_of: vec![],
                password_changed: None,
                attributes,
                exchange: None,
            }
        })
        .collect()
}

#[test]
fn the_lab_partners_plan_as_the_fixture_says() {
    let set = MappingSet::load_dir(&mappings_dir()).unwrap_or_else(|e| panic!("{e}"));
    let accounts = lab_accounts();
    // Entra Connect synced every account: one synced cloud user per anchor.
    let users: Vec<CloudUser> = accounts
        .iter()
        .map(|a| CloudUser {
            id: format!("id-{}", a.account_name.as_deref().unwrap()),
            user_principal_name: a.user_principal_name.clone().unwrap(),
            mail: a.mail.clone(),
            on_premises_sync_enabled: Some(true),
            on_premises_immutable_id: Some(a.object_guid.as_ref().unwrap().as_str().to_string()),
            account_enabled: Some(a.user_account_control != Some(0x202)),
            ..CloudUser::default()
        })
        .collect();
    let mapped = b2bsync::mapping::eval::map_by_base(&set, accounts);
    let joined = join(mapped, users);
    let tenant = Tenant {
        verified_domains: vec!["lab.example.com".into()],
        other_addresses: vec![],
    };
    let now = "2026-11-23T12:00:00Z".parse().unwrap();
    let p = plan(
        joined,
        &set,
        &BTreeMap::new(),
        &tenant,
        &Policy::default(),
        &Default::default(),
        now,
    );
    let by_name = |n: &str| {
        p.accounts
            .iter()
            .find(|o| o.account_name.as_deref() == Some(n))
            .unwrap_or_else(|| panic!("{n} not in the plan"))
    };
    let codes =
        |n: &str| -> Vec<&str> { by_name(n).reasons.iter().map(|r| r.reason.code()).collect() };
    // Out of scope: CN=Users and OU=Staff.
    assert!(p.accounts.iter().all(|o| o.mapping == "partners"));
    assert_eq!(p.accounts.len(), 11);
    for n in ["p.adams", "p.baker", "p.chen", "p.evans", "p.dubois"] {
        assert_eq!(by_name(n).state, Lifecycle::NeedsAddress, "{n}");
        assert_eq!(by_name(n).kind, Some(AccountKind::Synced));
    }
    assert_eq!(codes("p.nomail"), vec!["no_address"]);
    assert_eq!(codes("p.admin"), vec!["admin_count"]);
    assert!(codes("p.disabled").contains(&"disabled"));
    assert_eq!(codes("p.dup1"), vec!["address_shared"]);
    assert_eq!(codes("p.dup2"), vec!["address_shared"]);
    assert_eq!(codes("p.verified"), vec!["address_in_verified_domain"]);
    assert_eq!(p.actions.len(), 5);
}

#[test]
fn the_documented_config_sections_deserialize() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sections {
        invitation: b2bsync::mapping::InvitationSettings,
        policy: Policy,
        limits: b2bsync::guard::Limits,
    }
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/mapping.md"))
            .unwrap();
    let section = doc.split("## Related config sections").nth(1).unwrap();
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    let s: Sections = toml::from_str(block).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.policy, Policy::default());
    assert_eq!(s.limits, b2bsync::guard::Limits::default());
    assert_eq!(s.invitation.send_message, Some(true));
}
