//! The property that lets an incremental run plan only some accounts: over random worlds
//! (accounts with colliding addresses, synced and cloud-only users, some holding the same
//! addresses, some progress) and random changes between runs, the plan an incremental run
//! makes (through the state store's indexes) gives every account it lists exactly the
//! outcome and actions of a full read's plan of the same world, and lists every account
//! that the full plan moves or whose state it changes. Seeded, so a failure names its seed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use super::*;
use crate::apply::fakes::{FakeCloud, FakeDirectory};
use crate::model::Anchor;

const BASE: &str = "OU=Partners,DC=lab,DC=example,DC=com";
const TIER0: &str = "CN=Tier0,OU=Groups,DC=lab,DC=example,DC=com";
const SEEDS: u64 = 120;
const ROUNDS: usize = 4;

/// splitmix64: small, seeded, good enough to pick cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// An address from a small pool: collisions are frequent.
    fn address(&mut self) -> String {
        format!("a{}@fabrikam.example", self.below(6))
    }
}

fn dn(n: usize) -> String {
    format!("CN=Partner {n},{BASE}")
}

fn anchor(n: usize) -> Anchor {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&(n as u64 + 1).to_le_bytes());
    Anchor::from_bytes(&bytes)
}

fn account(rng: &mut Rng, n: usize) -> SourceAccount {
    let address = rng.address();
    let mut attributes = BTreeMap::new();
    if rng.chance(85) {
        attributes.insert("otherMailbox".to_string(), vec![address.clone()]);
    }
    // Some accounts have no anchor: they join cloud-only users by employee id.
    let anchored = rng.chance(75);
    if !anchored || rng.chance(20) {
        attributes.insert("employeeID".to_string(), vec![format!("e{}", rng.below(5))]);
    }
    SourceAccount {
        dn: dn(n),
        object_guid: anchored.then(|| anchor(n)),
        account_name: Some(format!("p.{n}")),
        display_name: Some(format!("Partner {n}")),
        mail: rng.chance(40).then(|| address.clone()),
        user_account_control: Some(if rng.chance(10) { 514 } else { 512 }),
        member_of: if rng.chance(8) {
            vec![TIER0.to_string()]
        } else {
            Vec::new()
        },
        attributes: attributes.into(),
        ..SourceAccount::default()
    }
}

fn external_state(rng: &mut Rng) -> Option<String> {
    match rng.below(4) {
        0 => Some("PendingAcceptance".into()),
        1 => Some("Accepted".into()),
        _ => None,
    }
}

/// A user synced from account `n` (its anchor), or a cloud-only one with an employee id.
fn user(rng: &mut Rng, id: usize, synced_from: Option<usize>) -> CloudUser {
    let mut user = CloudUser {
        id: format!("u-{id:03}"),
        user_principal_name: format!("user{id}@lab.example.com"),
        mail: rng.chance(60).then(|| rng.address()),
        other_mails: if rng.chance(25) {
            vec![rng.address()]
        } else {
            Vec::new()
        },
        external_user_state: external_state(rng),
        roles: if rng.chance(5) {
            vec!["Helpdesk Administrator".into()]
        } else {
            Vec::new()
        },
        ..CloudUser::default()
    };
    match synced_from {
        Some(n) => {
            user.on_premises_sync_enabled = Some(true);
            user.on_premises_immutable_id = Some(anchor(n).as_str().to_string());
        }
        None => user.employee_id = Some(format!("e{}", rng.below(5))),
    }
    user
}

struct World {
    directory: FakeDirectory,
    cloud: FakeCloud,
    inputs: Inputs,
    store: Mutex<Store>,
    dir: tempfile::TempDir,
    accounts: usize,
    users: usize,
    /// Accounts deleted from the directory.
    deleted: BTreeSet<usize>,
}

fn world(rng: &mut Rng) -> World {
    let accounts_n = 4 + rng.below(9);
    let accounts: Vec<SourceAccount> = (0..accounts_n).map(|n| account(rng, n)).collect();
    let mut users = Vec::new();
    for n in 0..accounts_n {
        // Most accounts have their synced user; a few two (a conflict), a few none.
        let copies = match rng.below(10) {
            0 => 0,
            1 => 2,
            _ => 1,
        };
        for _ in 0..copies {
            let id = users.len();
            users.push(user(rng, id, Some(n)));
        }
    }
    for _ in 0..2 + rng.below(5) {
        let id = users.len();
        users.push(user(rng, id, None));
    }
    let inputs = super::tests::inputs_of(
        &format!(
            r#"address = "lower(trim(otherMailbox))"
[source]
attributes = ["otherMailbox", "employeeID"]
[scope]
base_dns = ["{BASE}"]
protected_groups = ["{TIER0}"]
[join]
anchor = "objectGUID"
[join.cloud_only]
source = "employeeID"
cloud = "employeeId"
"#
        ),
        Some(vec!["lab.example.com".into()]),
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(&dir.path().join("state.db")).unwrap_or_else(|e| panic!("{e}"));
    let users_n = users.len();
    World {
        directory: FakeDirectory::with(accounts),
        cloud: FakeCloud::with(users),
        inputs,
        store: Mutex::new(store),
        dir,
        accounts: accounts_n,
        users: users_n,
        deleted: BTreeSet::new(),
    }
}

impl World {
    /// One random change on either side, as between two scheduled runs.
    fn change(&mut self, rng: &mut Rng) -> String {
        let account = rng.below(self.accounts);
        let users: Vec<String> = {
            let map = self.cloud.users.lock().unwrap_or_else(|p| p.into_inner());
            map.keys()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let some_user = users.get(rng.below(users.len())).cloned();
        let what = rng.below(11);
        if self.deleted.contains(&account) && matches!(what, 0 | 1 | 3 | 4 | 10) {
            return "nothing".into();
        }
        match what {
            0 | 1 => {
                let address = rng.address();
                self.directory.update(&dn(account), |a| {
                    a.attributes
                        .insert("otherMailbox".to_string(), vec![address.clone()]);
                });
                format!("account {account} maps to {address}")
            }
            2 => {
                let n = self.accounts;
                self.accounts += 1;
                let new = self::account(rng, n);
                self.directory.put(new);
                if rng.chance(60) {
                    let id = self.users;
                    self.users += 1;
                    let synced = user(rng, id, Some(n));
                    self.cloud.put(synced);
                }
                format!("account {n} added")
            }
            3 => {
                let address = rng.address();
                self.directory
                    .update(&dn(account), |a| a.mail = Some(address.clone()));
                format!("account {account} has AD mail {address}")
            }
            4 => {
                self.directory.update(&dn(account), |a| {
                    if a.member_of.is_empty() {
                        a.member_of.push(TIER0.to_string());
                    } else {
                        a.member_of.clear();
                    }
                });
                format!("account {account} joined or left the protected group")
            }
            5 => {
                let Some(id) = some_user else {
                    return "nothing".into();
                };
                let mut u = self.cloud.get(&id);
                let address = rng.address();
                if rng.chance(50) {
                    u.mail = Some(address.clone());
                } else {
                    u.other_mails = vec![address.clone()];
                }
                self.cloud.put(u);
                format!("user {id} holds {address}")
            }
            6 => {
                let Some(id) = some_user else {
                    return "nothing".into();
                };
                self.cloud.remove(&id);
                format!("user {id} deleted")
            }
            7 => {
                let Some(id) = some_user else {
                    return "nothing".into();
                };
                let mut u = self.cloud.get(&id);
                u.external_user_state = Some("Accepted".into());
                u.external_user_state_change = Some("2026-01-01T00:00:00Z".into());
                self.cloud.put(u);
                format!("user {id} accepted")
            }
            8 => {
                let id = self.users;
                self.users += 1;
                let synced_from = rng.chance(40).then(|| rng.below(self.accounts));
                let u = user(rng, id, synced_from);
                self.cloud.put(u);
                format!("user {id} added (synced from {synced_from:?})")
            }
            10 => {
                self.directory.remove(&dn(account));
                self.deleted.insert(account);
                format!("account {account} deleted")
            }
            _ => {
                // Roles are read whole every run: no delta shows them.
                let Some(id) = some_user else {
                    return "nothing".into();
                };
                let mut map = self.cloud.users.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(u) = map.get_mut(&id) {
                    if u.roles.is_empty() {
                        u.roles = vec!["Global Reader".into()];
                    } else {
                        u.roles.clear();
                    }
                }
                format!("user {id} roles changed")
            }
        }
    }

    /// The plan of a full read of the world as it is now (nothing stored).
    async fn full_plan(&mut self) -> Plan {
        self.inputs.force_full_read = true;
        let observed = observe(&self.inputs, &self.directory, &self.cloud, &self.store)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.inputs.force_full_read = false;
        let progress = lock(&self.store)
            .progress()
            .unwrap_or_else(|e| panic!("{e}"));
        compute(observed, &self.inputs, &progress, jiff::Timestamp::now())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A run stopped right after its read was saved: the snapshot, its marks and its
    /// indexes are written, nothing was planned or applied.
    async fn stopped_after_saving(&self) {
        let observed = observe_changes(&self.inputs, &self.directory, &self.cloud, &self.store)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        super::tests::save_read(&self.store, &self.inputs, &observed);
    }

    /// One scheduled run: reads (incrementally when it can), plans, applies.
    async fn run(&self) -> Plan {
        let session = Session::begin(&self.dir.path().join("state.db"), "run")
            .unwrap_or_else(|e| panic!("{e}"));
        let result = session
            .run(
                &self.inputs,
                &self.directory,
                &self.cloud,
                &apply::Options::default(),
                true,
                None,
                &|_| {},
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        session.finish(0, "").unwrap_or_else(|e| panic!("{e}"));
        result.plan
    }
}

fn actions_of<'p>(plan: &'p Plan, key: &str) -> Vec<&'p plan::Action> {
    plan.actions.iter().filter(|a| a.account == key).collect()
}

#[tokio::test]
async fn an_incremental_plan_agrees_with_the_full_plan_for_every_account_it_considers() {
    let mut partial_plans = 0;
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        let mut w = world(&mut rng);
        // The first run reads in full, applies, and fills the snapshot and its indexes.
        w.run().await;
        let mut history = Vec::new();
        for round in 0..ROUNDS {
            for _ in 0..1 + rng.below(3) {
                history.push(w.change(&mut rng));
            }
            let stored: BTreeMap<String, Progress> =
                lock(&w.store).progress().unwrap_or_else(|e| panic!("{e}"));
            // Now and then a run stops (kill -9) right after saving what it read: the next
            // run reads nothing new, and must still plan every account the change touched.
            if rng.chance(15) {
                let full_read = rng.chance(50);
                history.push(format!(
                    "a run (full read: {full_read}) stopped after saving"
                ));
                w.inputs.force_full_read = full_read;
                w.stopped_after_saving().await;
                w.inputs.force_full_read = false;
            }
            let full = w.full_plan().await;
            // Now and then a scheduled full read (`run --full`): it catches what no change
            // mark shows (group membership), and rewrites only the rows of what changed,
            // which the later incremental rounds rely on.
            let full_read = rng.chance(20);
            if full_read {
                history.push("a full read".into());
                w.inputs.force_full_read = true;
            }
            let inc = w.run().await;
            w.inputs.force_full_read = false;
            let why = format!("seed {seed}, round {round}, after {history:?}");
            // A full read is compared with the snapshot page by page, and plans only what it
            // changed (and what is unsettled), like a read of the changes.
            if inc.summary.unchanged > 0 {
                partial_plans += 1;
            }
            assert_eq!(
                inc.accounts.len() + inc.summary.unchanged,
                full.accounts.len(),
                "{why}: accounts in scope"
            );
            let full_by_key: BTreeMap<&str, &plan::AccountOutcome> =
                full.accounts.iter().map(|a| (a.key.as_str(), a)).collect();
            let listed: BTreeSet<&str> = inc.accounts.iter().map(|a| a.key.as_str()).collect();
            for outcome in &inc.accounts {
                let key = outcome.key.as_str();
                assert_eq!(
                    Some(&outcome),
                    full_by_key.get(key),
                    "{why}: outcome of {key}"
                );
                assert_eq!(
                    actions_of(&inc, key),
                    actions_of(&full, key),
                    "{why}: actions of {key}"
                );
            }
            for outcome in &full.accounts {
                let key = outcome.key.as_str();
                let moves = !actions_of(&full, key).is_empty();
                let changed = stored.get(key).map(|p| p.state) != Some(outcome.state);
                assert!(
                    !(moves || changed) || listed.contains(key),
                    "{why}: {key} ({}, {} action(s), stored {:?}) is not in the incremental plan",
                    outcome.state,
                    actions_of(&full, key).len(),
                    stored.get(key).map(|p| p.state)
                );
            }
            // An account the store remembers is gone exactly when the full plan lacks it.
            let in_scope: BTreeSet<&str> = full.accounts.iter().map(|a| a.key.as_str()).collect();
            for record in lock(&w.store).accounts().unwrap_or_else(|e| panic!("{e}")) {
                assert_eq!(
                    record.gone_at.is_some(),
                    !in_scope.contains(record.key.as_str()),
                    "{why}: {} gone_at {:?}",
                    record.key,
                    record.gone_at
                );
            }
            let inc_carried: Vec<_> = inc.carried.iter().collect();
            let full_carried: Vec<_> = full
                .carried
                .iter()
                .filter(|c| listed.contains(c.to.as_str()))
                .collect();
            assert_eq!(inc_carried, full_carried, "{why}: carried progress");
        }
    }
    // The property is about incremental plans: most rounds must have been one.
    assert!(
        partial_plans * 2 >= (SEEDS as usize) * ROUNDS,
        "only {partial_plans} incremental plans"
    );
}
