//! Memory benchmark of the pure middle (map, join, plan) over a no-change run: builds N
//! synthetic OpenLDAP-like accounts and N matching cloud-only users that are already converted
//! (`Accepted`, the address in `mail` and `otherMails`), a state progress map with every
//! account `done`, then runs `mapping::map_accounts`, `join::join` and `plan::plan` exactly as
//! `pipeline::compute` chains them, printing `VmRSS` and `VmHWM` (from `/proc/self/status`)
//! after each stage. Not part of the product; no I/O besides reading `/proc`.
//!
//! Usage: `cargo run --release --example bench_memory [--threads] [--mixed] [--out PLAN.json]
//! [N]` (N defaults to 100,000; `--out` writes the plan as JSON, to compare two builds;
//! `--mixed` leaves some users unconverted, some accounts without an address or a cloud user,
//! so the plan has actions and blocked accounts too). The
//! mapping is the one `scripts/bench.sh` writes for its no-change run. With `--threads`, the
//! accounts and users are built on two other threads, as the tokio workers that decode LDAP
//! and Graph responses allocate them in a real run (glibc then serves them from other arenas).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use b2bsync::join;
use b2bsync::mapping::{self, InvitationSettings, Mapping, MappingSet};
use b2bsync::model::{Anchor, CloudUser, Lifecycle, Progress, SourceAccount};
use b2bsync::plan::{self, Policy, RandomizeWhen, Tenant};

const BULK_BASE: &str = "ou=Bulk,dc=lab,dc=example,dc=com";
const UPN_DOMAIN: &str = "bench.example.com";
const EXTERNAL_DOMAIN: &str = "bulk-partner.example";

/// The no-change run's mapping from `scripts/bench.sh` (`write_config`).
fn mapping_text() -> String {
    format!(
        r#"description = "Benchmark: generated OpenLDAP accounts, joined to cloud-only users by UPN"
address = "lower(trim(otherMailbox))"
[source]
attributes = ["uid", "otherMailbox"]
multi_valued = []
[scope]
base_dns = ["{BULK_BASE}"]
filter = "(objectClass=inetOrgPerson)"
[join]
anchor = "objectGUID"
[join.cloud_only]
source = "uid ~ '@{UPN_DOMAIN}'"
cloud = "userPrincipalName"
[write]
cloud_only = ["otherMails", "mail"]
[invitation]
send_message = false
"#
    )
}

fn uid(i: usize) -> String {
    format!("bulk{i:06}")
}

/// A deterministic 16-byte "entryUUID" for account `i`.
fn uuid_bytes(i: usize) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(i as u64).to_be_bytes());
    b[8..].copy_from_slice(&(i as u64 ^ 0x5a5a_5a5a_5a5a_5a5a).to_le_bytes());
    b
}

fn uuid_text(i: usize) -> String {
    let b = uuid_bytes(i);
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// One account as the LDAP adapter builds it from an OpenLDAP bulk entry: the typed fields,
/// plus every attribute the searches ask for (the core ones and the mapping's) that the
/// entry has, under the mapping's spelling.
fn source_account(i: usize, attribute_names: &[String], mixed: bool) -> SourceAccount {
    let uid = uid(i);
    let display = format!("Bulk User {i:06}");
    let upn = format!("{uid}@{UPN_DOMAIN}");
    let mail = format!("{uid}@{UPN_DOMAIN}");
    let external = format!("{uid}@{EXTERNAL_DOMAIN}");
    // As the LDAP adapter does: a map per entry, packed once complete.
    let mut attributes = BTreeMap::new();
    for name in attribute_names {
        let value = match name.to_ascii_lowercase().as_str() {
            "entryuuid" => uuid_text(i),
            "uid" => uid.clone(),
            "userprincipalname" => upn.clone(),
            "displayname" => display.clone(),
            "mail" => mail.clone(),
            "useraccountcontrol" => "512".to_string(),
            "othermailbox" if mixed && i.is_multiple_of(13) => continue,
            "othermailbox" => external.clone(),
            _ => continue,
        };
        attributes.insert(name.clone(), vec![value]);
    }
    SourceAccount {
        dn: format!("uid={uid},{BULK_BASE}"),
        object_guid: Some(Anchor::from_bytes(&uuid_bytes(i))),
        consistency_guid: None,
        account_name: Some(uid),
        user_principal_name: Some(upn),
        display_name: Some(display),
        mail: Some(mail),
        user_account_control: Some(512),
        admin_count: false,
        locked: false,
        member_of: Vec::new(),
        password_changed: None,
        attributes: attributes.into(),
        exchange: None,
    }
}

/// The converted cloud-only user of account `i`, as the Graph adapter builds it.
fn cloud_user(i: usize, mixed: bool) -> CloudUser {
    let uid = uid(i);
    let external = format!("{uid}@{EXTERNAL_DOMAIN}");
    if mixed && i.is_multiple_of(10) {
        return CloudUser {
            id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, uid.as_bytes()).to_string(),
            user_principal_name: format!("{uid}@{UPN_DOMAIN}"),
            display_name: Some(format!("Bulk User {i:06}")),
            user_type: Some("Member".to_string()),
            account_enabled: Some(true),
            ..CloudUser::default()
        };
    }
    CloudUser {
        id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, uid.as_bytes()).to_string(),
        user_principal_name: format!("{uid}@{UPN_DOMAIN}"),
        display_name: Some(format!("Bulk User {i:06}")),
        mail: Some(external.clone()),
        other_mails: vec![external],
        user_type: Some("Member".to_string()),
        account_enabled: Some(true),
        external_user_state: Some("Accepted".to_string()),
        external_user_state_change: Some("2026-01-05T10:00:00Z".to_string()),
        ..CloudUser::default()
    }
}

/// `VmRSS` and `VmHWM` in MB.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Meter {
    last: u64,
}

impl Meter {
    fn stage(&mut self, name: &str) {
        let (rss, hwm) = memory();
        let added = i128::from(rss) - i128::from(self.last);
        println!("{name:<28} VmRSS {rss:>5} MB ({added:>+5})   VmHWM {hwm:>5} MB");
        self.last = rss;
    }
}

fn main() -> anyhow::Result<()> {
    let mut n = 100_000usize;
    let mut threads = false;
    let mut mixed = false;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--threads" => threads = true,
            "--mixed" => mixed = true,
            "--out" => out = args.next(),
            _ => {
                n = arg
                    .parse()
                    .context("usage: bench_memory [--threads] [--mixed] [--out PLAN.json] [N]")?;
            }
        }
    }
    let mapping = Mapping::parse(Path::new("mappings/bulk.toml"), &mapping_text())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let set = MappingSet::from_mappings(vec![mapping]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let attribute_names = set.attributes();
    let name = set
        .mappings()
        .first()
        .map(|m| m.name.clone())
        .context("no mapping")?;

    let mut meter = Meter { last: 0 };
    meter.stage("start");

    let build_found = move || -> Vec<(String, SourceAccount)> {
        (1..=n)
            .map(|i| (name.clone(), source_account(i, &attribute_names, mixed)))
            .collect()
    };
    let build_users = move || -> Vec<CloudUser> {
        (1..=n)
            .filter(|i| !(mixed && i.is_multiple_of(17)))
            .map(|i| cloud_user(i, mixed))
            .collect()
    };
    let (found, users) = if threads {
        let found = std::thread::spawn(build_found);
        let found = found
            .join()
            .map_err(|_| anyhow::anyhow!("account thread panicked"))?;
        meter.stage("source accounts");
        let users = std::thread::spawn(build_users)
            .join()
            .map_err(|_| anyhow::anyhow!("user thread panicked"))?;
        meter.stage("cloud users");
        (found, users)
    } else {
        let found = build_found();
        meter.stage("source accounts");
        let users = build_users();
        meter.stage("cloud users");
        (found, users)
    };

    // The state store's progress map after a seeded run: every converted account done.
    let progress: BTreeMap<String, Progress> = (1..=n)
        .filter(|i| !(mixed && (i.is_multiple_of(10) || i.is_multiple_of(17))))
        .map(|i| {
            let a = source_account(i, &[], mixed);
            let u = cloud_user(i, mixed);
            let key = a
                .object_guid
                .as_ref()
                .map_or_else(String::new, |g| g.as_str().to_string());
            let progress = Progress {
                state: Lifecycle::Done,
                cloud_id: Some(u.id),
                address: u.mail,
                ..Progress::default()
            };
            (key, progress)
        })
        .collect();
    meter.stage("progress map");

    let mapped = mapping::map_accounts(&set, found);
    meter.stage("mapping::map_accounts");
    let joined = join::join(mapped, users);
    meter.stage("join::join");
    let policy = Policy {
        randomize_password: RandomizeWhen::Never,
        ..Policy::default()
    };
    let tenant = Tenant {
        verified_domains: vec![UPN_DOMAIN.to_string()],
        other_addresses: Vec::new(),
    };
    let now: jiff::Timestamp = "2026-11-23T12:00:00Z".parse()?;
    let plan = plan::plan(
        joined,
        &set,
        &progress,
        &tenant,
        &policy,
        &InvitationSettings::default(),
        now,
    );
    meter.stage("plan::plan");

    println!(
        "accounts {}, actions {}, done {}, fingerprint {}",
        plan.accounts.len(),
        plan.actions.len(),
        plan.summary
            .states
            .get(&Lifecycle::Done)
            .copied()
            .unwrap_or(0),
        plan.fingerprint
    );
    if let Some(path) = out {
        std::fs::write(&path, serde_json::to_vec_pretty(&plan)?)
            .with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}
