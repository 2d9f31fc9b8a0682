//! The plan of a small, fixed, mixed world must stay the same byte for byte: its JSON's sha256
//! was recorded once, and a refactoring of the pure middle (map, join, plan) that changes a
//! single byte of any plan (an order, a key, a reason, the fingerprint) fails here.
//!
//! The world is built in memory and run through `mapping::map_accounts`, `join::join` and
//! `plan::plan` exactly as `pipeline::compute` chains them: synced and cloud-only accounts,
//! every block reason the pure middle can reach, accounts at each lifecycle state, addresses
//! that differ only in case, and a fixed `now`. When a change of the plan is intended, check
//! the new plan (the test prints its summary) and record the new hash.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use b2bsync::join;
use b2bsync::mapping::{self, InvitationSettings, Mapping, MappingSet};
use b2bsync::model::{Anchor, Attributes, CloudUser, Lifecycle, Progress, SourceAccount};
use b2bsync::plan::{self, OtherAddress, Plan, Policy, Tenant};
use sha2::{Digest, Sha256};

/// sha256 of `serde_json::to_vec_pretty(&plan)`, recorded at the commit before the identity
/// types (issue 11), and again when each joined account's outcome gained the cloud user's
/// `upn` (issue 13: accounts are named the same way everywhere).
const GOLDEN_SHA256: &str = "961a036e7abd33e27a5ab41acd612eff75d840b6323706868f449107435b2cc7";

const NOW: &str = "2026-11-23T12:00:00Z";

const PARTNERS: &str = r#"
address = "lower(trim(otherMailbox))"
[source]
attributes = ["otherMailbox", "sAMAccountName"]
[scope]
base_dns = ["OU=Partners,DC=corp,DC=example"]
deny = ["denied"]
protected_groups = ["CN=Protected,OU=Groups,DC=corp,DC=example"]
[join]
anchor = "ms-DS-ConsistencyGuid"
[invitation]
redirect_url = "https://myapps.microsoft.com/?tenantid=00000000-0000-0000-0000-000000000001"
user_type = "Guest"
"#;

const CLOUD: &str = r#"
address = "lower(trim(otherMailbox))"
[source]
attributes = ["otherMailbox", "sAMAccountName"]
[scope]
base_dns = ["OU=Cloud,DC=corp,DC=example"]
[join]
anchor = "objectGUID"
[join.cloud_only]
source = "sAMAccountName ~ '@cloud.example'"
cloud = "userPrincipalName"
[write]
cloud_only = ["otherMails"]
[invitation]
send_message = false
"#;

const OVERLAP: &str = r#"
address = "lower(trim(otherMailbox))"
[source]
attributes = ["otherMailbox"]
[scope]
base_dns = ["OU=Sub,OU=Cloud,DC=corp,DC=example"]
[join]
anchor = "objectGUID"
"#;

fn guid(n: u8) -> Anchor {
    let mut b = [0u8; 16];
    b[0] = n;
    b[15] = 0xa5 ^ n;
    Anchor::from_bytes(&b)
}

fn days_ago(days: i64) -> jiff::Timestamp {
    let now: jiff::Timestamp = NOW.parse().unwrap();
    now.checked_sub(jiff::SignedDuration::from_hours(24 * days))
        .unwrap()
}

/// An on-premises account: `name` under `ou`, anchor `n` (0: none), its `otherMailbox`
/// (the external address source) and its AD `mail`.
fn account(name: &str, ou: &str, n: u8, other: Option<&str>, mail: Option<&str>) -> SourceAccount {
    let mut attributes = BTreeMap::new();
    if let Some(o) = other {
        attributes.insert("otherMailbox".to_string(), vec![o.to_string()]);
    }
    attributes.insert("sAMAccountName".to_string(), vec![name.to_string()]);
    SourceAccount {
        dn: format!("CN={name},{ou}"),
        object_guid: (n != 0).then(|| guid(n)),
        account_name: Some(name.to_string()),
        display_name: Some(format!("User {name}")),
        mail: mail.map(str::to_string),
        user_account_control: Some(512),
        attributes: Attributes::from(attributes),
        ..SourceAccount::default()
    }
}

/// A synced cloud user for anchor `n`.
fn synced(n: u8, mail: Option<&str>) -> CloudUser {
    CloudUser {
        id: format!("00000000-0000-0000-0001-{n:012}"),
        user_principal_name: format!("u{n}@corp.example"),
        display_name: Some(format!("User {n}")),
        mail: mail.map(str::to_string),
        user_type: Some("Member".to_string()),
        account_enabled: Some(true),
        on_premises_sync_enabled: Some(true),
        on_premises_immutable_id: Some(guid(n).as_str().to_string()),
        ..CloudUser::default()
    }
}

/// A cloud-only user whose UPN is `name@cloud.example`.
fn cloud_only(id: u32, name: &str, mail: Option<&str>, other: &[&str]) -> CloudUser {
    CloudUser {
        id: format!("00000000-0000-0000-0002-{id:012}"),
        user_principal_name: format!("{name}@cloud.example"),
        display_name: Some(format!("User {name}")),
        mail: mail.map(str::to_string),
        other_mails: other.iter().map(|s| s.to_string()).collect(),
        user_type: Some("Member".to_string()),
        account_enabled: Some(true),
        ..CloudUser::default()
    }
}

const P: &str = "OU=Partners,DC=corp,DC=example";
const C: &str = "OU=Cloud,DC=corp,DC=example";

/// The inputs of `pipeline::compute`: mappings, what the searches found, the cloud users,
/// the state store's progress and the tenant.
type World = (
    MappingSet,
    Vec<(String, SourceAccount)>,
    Vec<CloudUser>,
    BTreeMap<String, Progress>,
    Tenant,
);

fn world() -> World {
    let set = MappingSet::from_mappings(vec![
        Mapping::parse(Path::new("mappings/partners.toml"), PARTNERS).unwrap(),
        Mapping::parse(Path::new("mappings/cloud.toml"), CLOUD).unwrap(),
        Mapping::parse(Path::new("mappings/overlap.toml"), OVERLAP).unwrap(),
    ])
    .unwrap();
    let mut accounts: Vec<SourceAccount> = Vec::new();
    let mut users: Vec<CloudUser> = Vec::new();
    let mut progress: BTreeMap<String, Progress> = BTreeMap::new();
    let key = |n: u8| guid(n).as_str().to_string();

    // Synced, moving through the lifecycle.
    accounts.push(account(
        "ready",
        P,
        1,
        Some("Ready@P.example"),
        Some("ready@p.example"),
    ));
    users.push(synced(1, Some("READY@p.example")));
    accounts.push(account(
        "needs",
        P,
        2,
        Some("needs@p.example"),
        Some("needs@corp.example"),
    ));
    users.push(synced(2, Some("needs@corp.example")));
    accounts.push(account(
        "await",
        P,
        3,
        Some("await@p.example"),
        Some("Await@P.Example"),
    ));
    users.push(synced(3, Some("await@corp.example")));
    progress.insert(
        key(3),
        Progress {
            state: Lifecycle::AwaitingSync,
            address: Some("await@p.example".into()),
            address_staged_at: Some(days_ago(1)),
            ..Progress::default()
        },
    );
    accounts.push(account(
        "pending",
        P,
        4,
        Some("pending@p.example"),
        Some("pending@p.example"),
    ));
    users.push(CloudUser {
        external_user_state: Some("PendingAcceptance".into()),
        ..synced(4, Some("Pending@p.example"))
    });
    progress.insert(
        key(4),
        Progress {
            state: Lifecycle::Invited,
            cloud_id: Some(synced(4, None).id),
            address: Some("pending@p.example".into()),
            invited_at: Some(days_ago(40)),
            invitations_sent: 1,
            invitation_id: Some("inv-4".into()),
            ..Progress::default()
        },
    );
    accounts.push(account(
        "pendrole",
        P,
        5,
        Some("pendrole@p.example"),
        Some("pendrole@p.example"),
    ));
    users.push(CloudUser {
        external_user_state: Some("PendingAcceptance".into()),
        roles: vec!["Helpdesk Administrator".into()],
        ..synced(5, Some("pendrole@p.example"))
    });
    progress.insert(
        key(5),
        Progress {
            state: Lifecycle::Invited,
            invited_at: Some(days_ago(20)),
            invitations_sent: 3,
            ..Progress::default()
        },
    );
    accounts.push(account(
        "moved",
        P,
        6,
        Some("moved-new@p.example"),
        Some("moved@p.example"),
    ));
    users.push(CloudUser {
        external_user_state: Some("PendingAcceptance".into()),
        ..synced(6, Some("moved@p.example"))
    });
    progress.insert(
        key(6),
        Progress {
            state: Lifecycle::Invited,
            address: Some("moved@p.example".into()),
            invited_at: Some(days_ago(15)),
            invitations_sent: 1,
            ..Progress::default()
        },
    );
    accounts.push(account(
        "accepted",
        P,
        7,
        Some("accepted@p.example"),
        Some("accepted@p.example"),
    ));
    users.push(CloudUser {
        external_user_state: Some("Accepted".into()),
        ..synced(7, Some("accepted@p.example"))
    });
    accounts.push(account(
        "done",
        P,
        8,
        Some("done@p.example"),
        Some("done@p.example"),
    ));
    users.push(CloudUser {
        external_user_state: Some("Accepted".into()),
        user_type: Some("Guest".into()),
        ..synced(8, Some("done@p.example"))
    });
    progress.insert(
        key(8),
        Progress {
            state: Lifecycle::Done,
            password_randomized_at: Some(days_ago(2)),
            invitations_sent: 1,
            ..Progress::default()
        },
    );
    accounts.push(account(
        "drift",
        P,
        9,
        Some("drift@p.example"),
        Some("other@p.example"),
    ));
    users.push(CloudUser {
        external_user_state: Some("Accepted".into()),
        ..synced(9, Some("drift@p.example"))
    });
    progress.insert(
        key(9),
        Progress {
            state: Lifecycle::Accepted,
            address: Some("drift@p.example".into()),
            invitations_sent: 1,
            ..Progress::default()
        },
    );

    // Synced, blocked.
    let mut admin = account("admin", P, 10, Some("admin@p.example"), None);
    admin.admin_count = true;
    accounts.push(admin);
    users.push(synced(10, None));
    let mut grouped = account("grouped", P, 11, Some("grouped@p.example"), None);
    grouped.member_of = vec!["cn=protected, ou=groups, dc=corp, dc=example".into()];
    accounts.push(grouped);
    users.push(synced(11, None));
    accounts.push(account("DENIED", P, 12, Some("denied@p.example"), None));
    users.push(synced(12, None));
    let mut off = account("off", P, 13, Some("off@p.example"), None);
    off.user_account_control = Some(514);
    accounts.push(off);
    users.push(synced(13, None));
    accounts.push(account("cloudoff", P, 14, Some("cloudoff@p.example"), None));
    users.push(CloudUser {
        account_enabled: Some(false),
        ..synced(14, None)
    });
    accounts.push(account("opupn", P, 15, Some("opupn@p.example"), None));
    users.push(CloudUser {
        on_premises_user_principal_name: Some("opupn@corp.example".into()),
        ..synced(15, None)
    });
    accounts.push(account("roles", P, 16, Some("roles@p.example"), None));
    users.push(CloudUser {
        roles: vec!["User Administrator".into(), "Global Reader".into()],
        ..synced(16, None)
    });
    accounts.push(account("mailbox", P, 17, Some("mailbox@p.example"), None));
    users.push(CloudUser {
        has_mailbox: true,
        ..synced(17, None)
    });
    accounts.push(account("noaddr", P, 18, None, None));
    users.push(synced(18, None));
    accounts.push(account("invalid", P, 19, Some("not an@address"), None));
    users.push(synced(19, None));
    accounts.push(account("verified", P, 20, Some("x@sub.corp.example"), None));
    users.push(synced(20, None));
    accounts.push(account("inuse", P, 21, Some("taken@p.example"), None));
    users.push(synced(21, None));
    users.push(cloud_only(900, "holder", None, &["Taken@P.example"]));
    accounts.push(account("sharedA", P, 22, Some("Shared@P.example"), None));
    users.push(synced(22, None));
    accounts.push(account("sharedB", P, 23, Some("shared@p.example"), None));
    users.push(synced(23, None));
    accounts.push(account("changed", P, 24, Some("changed@p.example"), None));
    users.push(synced(24, None));
    progress.insert(
        key(24),
        Progress {
            state: Lifecycle::NeedsAddress,
            cloud_id: Some("00000000-0000-0000-0009-000000000024".into()),
            ..Progress::default()
        },
    );
    accounts.push(account("nouser", P, 25, Some("nouser@p.example"), None));
    accounts.push(account("contact", P, 26, Some("contact@p.example"), None));
    users.push(synced(26, None));
    accounts.push(account("proxied", P, 27, Some("proxied@p.example"), None));
    users.push(synced(27, None));
    users.push(CloudUser {
        proxy_addresses: vec!["SMTP:Proxied@P.example".into(), "x500:/o=x".into()],
        ..cloud_only(901, "proxyholder", None, &[])
    });
    // Outside the scope: a base DN that only ends like the scope's.
    accounts.push(account(
        "xpartner",
        "OU=XPartners,DC=corp,DC=example",
        28,
        Some("x@p.example"),
        None,
    ));
    users.push(synced(28, None));

    // Cloud-only.
    accounts.push(account("c-new", C, 40, Some("C-New@Q.example"), None));
    users.push(cloud_only(40, "c-new", Some("c-new@cloud.example"), &[]));
    accounts.push(account("c-ready", C, 41, Some("c-ready@q.example"), None));
    users.push(cloud_only(
        41,
        "c-ready",
        Some("c-ready@q.example"),
        &["C-READY@q.example"],
    ));
    accounts.push(account(
        "c-noanchor",
        C,
        0,
        Some("c-noanchor@q.example"),
        None,
    ));
    users.push(cloud_only(42, "c-noanchor", None, &[]));
    accounts.push(account("c-twice", C, 43, Some("c-twice@q.example"), None));
    users.push(cloud_only(43, "c-twice", None, &[]));
    users.push(synced(43, None));
    accounts.push(account("c-dup", C, 44, Some("c-dup1@q.example"), None));
    accounts.push(account(
        "c-dup",
        "OU=Other,OU=Cloud,DC=corp,DC=example",
        45,
        Some("c-dup2@q.example"),
        None,
    ));
    users.push(cloud_only(44, "c-dup", None, &[]));
    accounts.push(account(
        "c-accepted",
        C,
        46,
        Some("c-accepted@q.example"),
        None,
    ));
    users.push(CloudUser {
        external_user_state: Some("Accepted".into()),
        ..cloud_only(
            46,
            "c-accepted",
            Some("c-accepted@q.example"),
            &["c-accepted@q.example"],
        )
    });
    progress.insert(
        "dn:cn=c-gone,ou=cloud,dc=corp,dc=example".into(),
        Progress {
            state: Lifecycle::Invited,
            invitations_sent: 1,
            ..Progress::default()
        },
    );
    accounts.push(account(
        "c-sub",
        "OU=Sub,OU=Cloud,DC=corp,DC=example",
        47,
        Some("c-sub@q.example"),
        None,
    ));
    users.push(cloud_only(47, "c-sub", None, &[]));
    accounts.push(account("c-guest", C, 48, None, None));
    users.push(CloudUser {
        creation_type: Some("Invitation".into()),
        ..cloud_only(48, "c-guest", Some("c-guest@q.example"), &[])
    });

    // Every search returns every account (a search from the root): the mapping's scope
    // decides which are in.
    let found = set
        .mappings()
        .iter()
        .flat_map(|m| accounts.iter().map(|a| (m.name.clone(), a.clone())))
        .collect();
    let tenant = Tenant {
        verified_domains: vec!["corp.example".into(), "cloud.example".into()],
        other_addresses: vec![OtherAddress {
            object_id: "contact-1".into(),
            attribute: "mail".into(),
            address: "CONTACT@p.example".into(),
        }],
    };
    (set, found, users, progress, tenant)
}

fn compute() -> Plan {
    let (set, found, users, progress, tenant) = world();
    let mapped = mapping::map_accounts(&set, found);
    let joined = join::join(mapped, users);
    plan::plan(
        joined,
        &set,
        &progress,
        &tenant,
        &Policy::default(),
        &InvitationSettings::default(),
        NOW.parse().unwrap(),
    )
}

#[test]
fn the_plan_of_a_mixed_world_stays_byte_for_byte_the_same() {
    let plan = compute();
    let json = serde_json::to_vec_pretty(&plan).unwrap();
    // To see what changed: write the plan out and diff it against the last commit's.
    if let Some(path) = std::env::var_os("PLAN_GOLDEN_OUT") {
        std::fs::write(path, &json).unwrap();
    }
    let sha: String = Sha256::digest(&json)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!(
        "accounts {}, actions {}, fingerprint {}\nstates {:?}\nreasons {:?}\nactions {:?}",
        plan.accounts.len(),
        plan.actions.len(),
        plan.fingerprint,
        plan.summary.states,
        plan.summary.reasons,
        plan.summary.actions,
    );
    assert_eq!(sha, GOLDEN_SHA256, "the plan JSON changed");
}

#[test]
fn the_world_reaches_every_block_reason_and_state() {
    let plan = compute();
    let reasons: BTreeSet<&str> = plan.summary.reasons.keys().map(String::as_str).collect();
    for code in [
        "no_cloud_user",
        "several_cloud_users",
        "cloud_user_shared",
        "cloud_user_changed",
        "in_several_scopes",
        "on_premises_user_principal_name",
        "role_holder",
        "mailbox",
        "no_address",
        "invalid_address",
        "address_in_verified_domain",
        "address_in_use",
        "address_shared",
        "admin_count",
        "protected_group",
        "deny_list",
        "disabled",
    ] {
        assert!(reasons.contains(code), "no account is blocked by {code}");
    }
    let states: BTreeSet<Lifecycle> = plan.summary.states.keys().copied().collect();
    for state in b2bsync::report::FUNNEL {
        assert!(states.contains(&state), "no account is {state}");
    }
    assert!(
        plan.accounts
            .iter()
            .all(|a| a.account_name.as_deref() != Some("xpartner")),
        "OU=XPartners is not under OU=Partners"
    );
}
