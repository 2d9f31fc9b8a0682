//! The fast tier of the pipeline: `observe` (full and incremental reads of both sides),
//! `reads::confirm` (accounts about to be written read again) and a run's session (its
//! lock, record, ends and progress events) against the in-memory fakes and a temporary
//! store. Milliseconds; the same stages against Samba,
//! OpenLDAP and the emulator are in `tests/incremental.rs` and `tests/lifecycle.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use super::*;
use crate::apply::fakes::{FakeCloud, FakeDirectory};
use crate::mapping::Mapping;
use crate::model::{AccountKey, Anchor, Dn, Lifecycle};

const BASE: &str = "OU=Partners,DC=lab,DC=example,DC=com";
const TIER0: &str = "CN=Tier0,OU=Groups,DC=lab,DC=example,DC=com";

/// Three partners, each converted already (accepted): the plan randomizes their passwords.
struct World {
    directory: FakeDirectory,
    cloud: FakeCloud,
    inputs: Inputs,
    store: Mutex<Store>,
    dir: tempfile::TempDir,
}

fn dn(n: u8) -> String {
    format!("CN=Partner {n},{BASE}")
}

fn anchor(n: u8) -> Anchor {
    Anchor::from_bytes(&[n + 1; 16])
}

fn world() -> World {
    let mut accounts = Vec::new();
    let mut users = Vec::new();
    for n in 0..3u8 {
        let address = format!("p{n}@fabrikam.example");
        accounts.push(SourceAccount {
            dn: dn(n),
            object_guid: Some(anchor(n)),
            account_name: Some(format!("p.{n}")),
            display_name: Some(format!("Partner {n}")),
            mail: Some(address.clone()),
            user_account_control: Some(512),
            attributes: BTreeMap::from([("otherMailbox".to_string(), vec![address.clone()])])
                .into(),
            ..SourceAccount::default()
        });
        users.push(CloudUser {
            id: format!("u-{n}"),
            user_principal_name: format!("p.{n}@lab.example.com"),
            mail: Some(address),
            on_premises_sync_enabled: Some(true),
            on_premises_immutable_id: Some(anchor(n).as_str().to_string()),
            external_user_state: Some("Accepted".into()),
            ..CloudUser::default()
        });
    }
    let inputs = inputs_of(
        &format!(
            r#"address = "lower(trim(otherMailbox))"
[source]
attributes = ["otherMailbox"]
[scope]
base_dns = ["{BASE}"]
protected_groups = ["{TIER0}"]
[join]
anchor = "objectGUID"
"#
        ),
        None,
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(&dir.path().join("state.db")).unwrap_or_else(|e| panic!("{e}"));
    let cloud = FakeCloud::with(users);
    *cloud.domains.lock().unwrap_or_else(|p| p.into_inner()) = vec!["lab.example.com".into()];
    World {
        directory: FakeDirectory::with(accounts),
        cloud,
        inputs,
        store: Mutex::new(store),
        dir,
    }
}

impl World {
    /// Reads both sides and saves the snapshot and marks, as a run does before any write.
    async fn observe(&self) -> Observed {
        let observed = observe(&self.inputs, &self.directory, &self.cloud, &self.store)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        save_read(&self.store, &self.inputs, &observed);
        observed
    }

    fn plan(&self, observed: Observed) -> Plan {
        let progress = lock(&self.store)
            .progress()
            .unwrap_or_else(|e| panic!("{e}"));
        compute(observed, &self.inputs, &progress, jiff::Timestamp::now())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `session` over this world.
    async fn run(
        &self,
        session: &Session,
        allow_over_threshold: bool,
        reviewed: Option<&Plan>,
        events: &(dyn Fn(Event) + Sync),
    ) -> RunResult {
        session
            .run(
                &self.inputs,
                &self.directory,
                &self.cloud,
                &apply::Options::default(),
                allow_over_threshold,
                reviewed,
                events,
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Forgets the calls logged so far.
    fn forget_calls(&self) {
        self.directory
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.cloud
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// The accounts a plan writes, by DN, and the reasons it blocks any.
fn acting(plan: &Plan) -> (Vec<String>, Vec<&'static str>) {
    let keys: std::collections::BTreeSet<&str> =
        plan.actions.iter().map(|a| a.account.as_str()).collect();
    let mut written: Vec<String> = plan
        .accounts
        .iter()
        .filter(|a| keys.contains(a.key.as_str()))
        .map(|a| a.dn.clone())
        .collect();
    written.sort();
    let blocked = plan
        .accounts
        .iter()
        .flat_map(|a| a.reasons.iter().map(|r| r.reason.code()))
        .collect();
    (written, blocked)
}

/// How a second read goes after a first full one has been saved.
struct ReadCase {
    name: &'static str,
    between: fn(&mut World),
    /// Directory read by changes; Graph read by delta.
    source_incremental: bool,
    cloud_incremental: bool,
    /// Entries and users the servers returned.
    entries_read: usize,
    users_read: usize,
    /// Accounts and users the later stages see.
    accounts: usize,
    users: usize,
}

impl ReadCase {
    /// Both sides read in full again: every account and user.
    fn full(name: &'static str, between: fn(&mut World)) -> ReadCase {
        ReadCase {
            name,
            between,
            source_incremental: false,
            cloud_incremental: false,
            entries_read: 3,
            users_read: 3,
            accounts: 3,
            users: 3,
        }
    }
}

#[tokio::test]
async fn observe_reads_in_full_first_then_only_changes_and_always_sees_everything() {
    let cases = [
        ReadCase {
            name: "nothing changed",
            between: |_| {},
            source_incremental: true,
            cloud_incremental: true,
            entries_read: 0,
            users_read: 0,
            accounts: 3,
            users: 3,
        },
        ReadCase {
            name: "an account and a user changed",
            between: |w| {
                w.directory
                    .update(&dn(1), |a| a.display_name = Some("Renamed".into()));
                let mut user = w.cloud.get("u-2");
                user.display_name = Some("Renamed".into());
                w.cloud.put(user);
            },
            source_incremental: true,
            cloud_incremental: true,
            entries_read: 1,
            users_read: 1,
            accounts: 3,
            users: 3,
        },
        ReadCase {
            name: "a user was deleted",
            between: |w| w.cloud.remove("u-0"),
            source_incremental: true,
            cloud_incremental: true,
            entries_read: 0,
            users_read: 1,
            accounts: 3,
            users: 2,
        },
        ReadCase::full("--full", |w| w.inputs.force_full_read = true),
        ReadCase::full("incremental reads off", |w| {
            w.inputs.reads.incremental = false
        }),
        ReadCase::full("the scheduled full read is due", |w| {
            w.inputs.reads.full_every_hours = 0
        }),
    ];
    for case in cases {
        let mut w = world();
        let first = w.observe().await;
        assert_eq!(
            (
                first.summary.searches_full,
                first.summary.searches_incremental
            ),
            (1, 0),
            "{}: the first read is full",
            case.name
        );
        assert!(!first.summary.cloud_incremental, "{}", case.name);
        assert_eq!((first.found.len(), first.users.len()), (3, 3));
        (case.between)(&mut w);
        w.forget_calls();
        let second = w.observe().await;
        let s = &second.summary;
        assert_eq!(
            (
                s.searches_incremental == 1,
                s.cloud_incremental,
                s.entries_read,
                s.users_read
            ),
            (
                case.source_incremental,
                case.cloud_incremental,
                case.entries_read,
                case.users_read
            ),
            "{}: {s:?}",
            case.name
        );
        assert_eq!(second.refresh.source_incremental(), case.source_incremental);
        assert_eq!(
            (second.found.len(), second.users.len()),
            (case.accounts, case.users),
            "{}",
            case.name
        );
        let read = if case.source_incremental {
            "read changes"
        } else {
            "read full"
        };
        assert_eq!(w.directory.calls(), [read], "{}", case.name);
        let cloud_read = if case.cloud_incremental {
            "users_since"
        } else {
            "users"
        };
        assert_eq!(w.cloud.calls(), [cloud_read], "{}", case.name);
        // What changed is what the later stages see.
        if case.name == "an account and a user changed" {
            let renamed = second.found.iter().find(|(_, a)| a.dn == dn(1));
            assert_eq!(
                renamed.and_then(|(_, a)| a.display_name.as_deref()),
                Some("Renamed")
            );
        }
    }
}

/// What a change that moves no change mark does to the run about to write.
struct ConfirmCase {
    name: &'static str,
    silently: fn(&FakeDirectory),
    /// Accounts that differ when read again.
    differing: usize,
    /// Accounts the plan computed again writes, and why it holds any back.
    written: Vec<String>,
    blocked: Vec<&'static str>,
}

#[tokio::test]
async fn confirm_reads_accounts_about_to_be_written_again_and_a_changed_one_is_planned_again() {
    let cases = [
        ConfirmCase {
            name: "nothing changed",
            silently: |_| {},
            differing: 0,
            written: vec![dn(0), dn(1), dn(2)],
            blocked: vec![],
        },
        ConfirmCase {
            name: "an account joined a protected group",
            silently: |d| d.update_silently(&dn(1), |a| a.member_of.push(TIER0.into())),
            differing: 1,
            written: vec![dn(0), dn(2)],
            blocked: vec!["protected_group"],
        },
        ConfirmCase {
            name: "an account got adminCount",
            silently: |d| d.update_silently(&dn(2), |a| a.admin_count = true),
            differing: 1,
            written: vec![dn(0), dn(1)],
            blocked: vec!["admin_count"],
        },
    ];
    for case in cases {
        let w = world();
        w.observe().await;
        (case.silently)(&w.directory);
        // The incremental read does not see it: the plan would write every account.
        let observed = w.observe().await;
        assert!(observed.refresh.source_incremental(), "{}", case.name);
        let plan = w.plan(observed);
        assert_eq!(acting(&plan).0, vec![dn(0), dn(1), dn(2)], "{}", case.name);
        w.forget_calls();
        let differing = reads::confirm(&w.inputs, &w.directory, &w.store, &plan)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(differing, case.differing, "{}", case.name);
        // One search for every account with an anchor, not one per account.
        assert_eq!(
            w.directory.calls(),
            ["accounts_by_anchor 3"],
            "{}",
            case.name
        );
        // The snapshot now holds the account as it is: planned again, it is held back.
        let plan = w.plan(w.observe().await);
        let (written, blocked) = acting(&plan);
        assert_eq!(written, case.written, "{}", case.name);
        assert_eq!(blocked, case.blocked, "{}", case.name);
    }
}

#[tokio::test]
async fn a_run_whose_account_joined_a_protected_group_plans_again_and_never_writes_it() {
    let w = world();
    // An earlier read left marks (and wrote nothing).
    w.observe().await;
    w.directory
        .update_silently(&dn(1), |a| a.member_of.push(TIER0.into()));
    let session =
        Session::begin(&w.dir.path().join("state.db"), "run").unwrap_or_else(|e| panic!("{e}"));
    let result = w.run(&session, false, None, &|_| {}).await;
    let RunEnd::Applied(outcome) = result.end else {
        panic!("not applied");
    };
    // Two randomizations, each followed by its sign-in session revocation.
    assert_eq!(outcome.done(), 4);
    assert_eq!(w.cloud.revocations.lock().map(|r| r.len()).unwrap_or(0), 2);
    let written: Vec<String> = w
        .directory
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("set_password"))
        .collect();
    assert_eq!(
        written,
        [
            format!("set_password {}", dn(0)),
            format!("set_password {}", dn(2))
        ]
    );
    // Read by changes, read again by anchor, then read and planned again.
    let reads: Vec<String> = w
        .directory
        .calls()
        .into_iter()
        .filter(|c| !c.starts_with("set_"))
        .collect();
    assert_eq!(
        reads,
        [
            "read full",
            "read changes",
            "accounts_by_anchor 3",
            "read changes"
        ]
    );
    let progress = lock(&w.store).progress().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(progress[anchor(1).as_str()].state, Lifecycle::Blocked);
    assert!(
        result
            .plan
            .actions
            .iter()
            .all(|a| a.account != anchor(1).as_str())
    );
}

#[tokio::test]
async fn a_full_read_compared_page_by_page_gives_only_what_it_changed_and_an_empty_one_saves_nothing()
 {
    let mut w = world();
    let session =
        Session::begin(&w.dir.path().join("state.db"), "run").unwrap_or_else(|e| panic!("{e}"));
    // The first run reads everyone, keeps the indexes and randomizes the passwords; the
    // second reads those writes back.
    w.run(&session, false, None, &|_| {}).await;
    drop(session);
    let session =
        Session::begin(&w.dir.path().join("state.db"), "run").unwrap_or_else(|e| panic!("{e}"));
    w.run(&session, false, None, &|_| {}).await;
    drop(session);
    // A change no mark shows (a group joined), then a full read.
    w.directory
        .update_silently(&dn(1), |a| a.member_of.push(TIER0.into()));
    w.inputs.force_full_read = true;
    w.forget_calls();
    let observed = observe_changes(&w.inputs, &w.directory, &w.cloud, &w.store)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let s = &observed.summary;
    assert_eq!(
        (
            s.searches_full,
            s.entries_read,
            s.cloud_incremental,
            s.users_read
        ),
        (1, 3, false, 3)
    );
    assert_eq!(w.directory.calls(), ["read full"]);
    assert_eq!(w.cloud.calls(), ["users"]);
    // Nothing is held whole: only what differs from the snapshot.
    assert!(observed.partial);
    assert_eq!((observed.found.len(), observed.users.len()), (0, 0));
    assert!(!observed.refresh.source_incremental());
    assert_eq!(
        observed.refresh.changed(),
        (vec![anchor(1).as_str()], Vec::<&str>::new())
    );
    // A run with a full read plans that account alone, and writes no one.
    let session =
        Session::begin(&w.dir.path().join("state.db"), "run").unwrap_or_else(|e| panic!("{e}"));
    let result = w.run(&session, false, None, &|_| {}).await;
    drop(session);
    assert!(result.plan.actions.is_empty(), "{:?}", result.plan.actions);
    let planned: Vec<&str> = result
        .plan
        .accounts
        .iter()
        .map(|a| a.key.as_str())
        .collect();
    assert_eq!(planned, [anchor(1).as_str()]);
    assert_eq!(result.plan.summary.unchanged, 2);

    // Everyone gone from a full read: refused before anything is saved.
    for n in 0..3 {
        w.directory.remove(&dn(n));
    }
    let session =
        Session::begin(&w.dir.path().join("state.db"), "run").unwrap_or_else(|e| panic!("{e}"));
    let err = session
        .run(
            &w.inputs,
            &w.directory,
            &w.cloud,
            &apply::Options::default(),
            false,
            None,
            &|_| {},
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("an empty read was accepted"));
    assert!(matches!(err, Error::EmptySource { known: 3 }), "{err}");
    let side = source_side(&w.inputs.mappings.searches()[0]);
    let store = lock(&w.store);
    assert_eq!(store.snapshot_len(&side).unwrap_or(0), 3);
    let gone = store
        .accounts()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|a| a.gone_at.is_some())
        .count();
    assert_eq!(gone, 0);
}

/// How a run ends, and what it wrote: (case, `[limits]` allow, flag, reviewed plan stale,
/// end, passwords set).
#[tokio::test]
async fn a_session_ends_applied_stale_or_over_threshold_and_holds_the_lock() {
    let cases = [
        ("within the limits", false, false, false, "applied", 3),
        ("over a threshold", false, false, false, "over", 0),
        (
            "over, allowed for this run",
            false,
            true,
            false,
            "applied",
            3,
        ),
        (
            "over, allowed by [limits]",
            true,
            false,
            false,
            "applied",
            3,
        ),
        ("a stale reviewed plan", true, false, true, "stale", 0),
    ];
    for (name, limits_allow, flag, stale, end, written) in cases {
        let mut w = world();
        w.inputs.limits.allow_over_threshold = limits_allow;
        if name != "within the limits" {
            w.inputs.limits.password_randomizations.max_count = 1;
        }
        let reviewed = stale.then(|| Plan {
            schema_version: 1,
            generated_at: String::new(),
            fingerprint: "reviewed yesterday".into(),
            mappings: Vec::new(),
            actions: Vec::new(),
            accounts: Vec::new(),
            summary: plan::Summary::default(),
            carried: Vec::new(),
        });
        let path = w.dir.path().join("state.db");
        let session = Session::begin(&path, "run").unwrap_or_else(|e| panic!("{e}"));
        // A second run is refused while this one holds the lock.
        assert!(matches!(
            Session::begin(&path, "run"),
            Err(crate::state::Error::Locked { .. })
        ));
        let events = Mutex::new(Vec::new());
        let record = |e: Event| events.lock().unwrap_or_else(|p| p.into_inner()).push(e);
        let result = w.run(&session, flag, reviewed.as_ref(), &record).await;
        let got = match &result.end {
            RunEnd::Applied(_) => "applied",
            RunEnd::Stale => "stale",
            RunEnd::OverThreshold(verdict) => {
                assert!(!verdict.exceeded.is_empty(), "{name}");
                "over"
            }
        };
        assert_eq!(got, end, "{name}");
        assert_eq!(
            w.directory.passwords.lock().map(|p| p.len()).unwrap_or(0),
            written,
            "{name}"
        );
        let events = events.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut expected = vec![Event::Reading];
        if end == "applied" {
            // Three randomizations, each followed by its revocation (its own guard category).
            expected.push(Event::Applying { actions: 6 });
            expected.extend([Event::ActionEnded; 6]);
        }
        assert_eq!(events, expected, "{name}");
        let run_id = session.run_id().to_string();
        session
            .finish(0, "summary")
            .unwrap_or_else(|e| panic!("{e}"));
        let runs = lock(&w.store).runs().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            runs.iter()
                .any(|r| r.id == run_id && r.summary.as_deref() == Some("summary")),
            "{name}"
        );
        // The lock went with the session.
        assert!(Session::begin(&path, "run").is_ok(), "{name}");
    }
}

#[tokio::test]
async fn a_run_moves_progress_remembered_under_the_dn_to_the_anchor_before_any_write() {
    let w = world();
    // An earlier b2bsync, which did not read these accounts' anchors, keyed them by DN and
    // finished their conversion.
    let earlier = jiff::Timestamp::from_second(1_790_000_000).unwrap_or_else(|e| panic!("{e}"));
    for n in 0..3u8 {
        let key = AccountKey::Dn(Dn::new(&dn(n))).to_string();
        let done = Progress {
            state: Lifecycle::Done,
            cloud_id: Some(format!("u-{n}")),
            invitations_sent: 1,
            password_randomized_at: Some(earlier),
            sessions_revoked_at: Some(earlier),
            ..Progress::default()
        };
        lock(&w.store)
            .save_account(&key, Some(&dn(n)), Some("synced"), None, &done)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let path = w.dir.path().join("state.db");
    let session = Session::begin(&path, "run").unwrap_or_else(|e| panic!("{e}"));
    let result = w.run(&session, false, None, &|_| {}).await;
    session.finish(0, "x").unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(result.plan.carried.len(), 3, "{:?}", result.plan.carried);
    assert!(
        result
            .plan
            .carried
            .iter()
            .all(|c| c.by == plan::CarriedBy::Dn),
        "{:?}",
        result.plan.carried
    );
    // The review says so before anything is written.
    let review = crate::report::plan_text(&result.plan);
    assert!(
        review.contains("key changed, progress carried over (3)"),
        "{review}"
    );
    // No second randomization: the conversion the DN-keyed rows remember still holds.
    assert!(result.plan.actions.is_empty(), "{:?}", result.plan.actions);
    assert_eq!(
        w.directory.passwords.lock().map(|p| p.len()).unwrap_or(9),
        0
    );
    // One row per account, under its anchor; none left under the DN.
    let progress = lock(&w.store).progress().unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<String> = progress.keys().cloned().collect();
    let mut anchors: Vec<String> = (0..3u8).map(|n| anchor(n).as_str().to_string()).collect();
    anchors.sort();
    assert_eq!(keys, anchors);
    assert!(
        progress
            .values()
            .all(|p| p.password_randomized_at == Some(earlier))
    );
}

#[tokio::test]
async fn a_directory_that_cannot_tell_its_changes_is_read_in_full_and_status_says_why() {
    let w = world();
    *w.directory
        .no_marks
        .lock()
        .unwrap_or_else(|p| p.into_inner()) =
        Some("the schema has neither entryCSN nor modifyTimestamp".into());
    for _ in 0..2 {
        let observed = w.observe().await;
        assert!(!observed.refresh.source_incremental());
        assert_eq!(observed.found.len(), 3);
    }
    let calls = w
        .directory
        .calls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert_eq!(
        calls.iter().filter(|c| c.as_str() == "read full").count(),
        2,
        "{calls:?}"
    );
    let states =
        reads::read_states(&lock(&w.store), &w.inputs.reads).unwrap_or_else(|e| panic!("{e}"));
    let source = states
        .iter()
        .find(|s| s.side.starts_with("source:"))
        .unwrap_or_else(|| panic!("no source side in {states:?}"));
    assert_eq!(
        source.incremental_off.as_deref(),
        Some("incremental reads are off: the schema has neither entryCSN nor modifyTimestamp")
    );
    assert!(source.last_full_read.is_some());
    assert_eq!(source.full_read_due, None);
    let mut status = crate::report::status(&[], Vec::new(), 14, jiff::Timestamp::now());
    status.reads = states.clone();
    let text = crate::report::status_text(&status);
    assert!(
        text.contains("every read is full")
            && text.contains("the schema has neither entryCSN nor modifyTimestamp"),
        "{text}"
    );

    // Once the directory tells its changes again, reads go back to changes after one full read.
    *w.directory
        .no_marks
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = None;
    assert!(!w.observe().await.refresh.source_incremental());
    assert!(w.observe().await.refresh.source_incremental());
    let states =
        reads::read_states(&lock(&w.store), &w.inputs.reads).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        states.iter().all(|s| s.incremental_off.is_none()),
        "{states:?}"
    );
}

/// The inputs of a test run: one mapping (`mappings/partners.toml` with this text), no
/// threshold, the default policy and invitation.
pub(super) fn inputs_of(mapping: &str, verified_domains: Option<Vec<String>>) -> Inputs {
    let mapping = Mapping::parse(Path::new("mappings/partners.toml"), mapping)
        .unwrap_or_else(|e| panic!("{e}"));
    Inputs {
        mappings: MappingSet::from_mappings(vec![mapping]).unwrap_or_else(|e| panic!("{e}")),
        limits: Limits {
            allow_over_threshold: true,
            ..Limits::default()
        },
        policy: Policy::default(),
        invitation: InvitationSettings::default(),
        verified_domains,
        reads: Reads::default(),
        force_full_read: false,
        read_identity: "fake".into(),
    }
}

/// Saves a read (snapshot, marks, indexes) as a run does before it plans.
pub(super) fn save_read(store: &std::sync::Mutex<Store>, inputs: &Inputs, observed: &Observed) {
    persist(store, inputs, observed, &mut Default::default()).unwrap_or_else(|e| panic!("{e}"));
}
