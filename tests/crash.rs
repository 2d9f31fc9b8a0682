//! Exactly once across crashes: `b2bsync run` is killed with SIGKILL at random moments of
//! each phase of the lifecycle (address staging and cloud-only invitations; synced
//! invitations; password randomization), over a plan of a few hundred actions against the
//! real Samba AD and the emulator (with latency, so kills land in the middle of `apply`).
//! After each phase is finally let to finish, the emulator's records must show every
//! invitation exactly once, and at the end every eligible account must be done with its old
//! password refused by the AD.
//!
//! Then the journal is checked against the world (issue 10): every AD `mail`, cloud
//! `otherMails` and password that changed has a `done` for its write, whichever run's
//! reconciliation found it; and `rollback` of every run, newest first, puts every address
//! back to its value from before, as read from the AD and the emulator's tenant.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use std::collections::{BTreeMap, BTreeSet};

use b2bsync::model::SourceAccount;
use b2bsync::source::{Directory, SearchScope};
use b2bsync::state::{Action, JournalEntry, Phase, Store};
use common::world::{
    World, assert_each_invited_once, count, eligible_partners, status_json, text, world,
};
use common::{Server, service};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Synced and cloud-only partners each; the plan has 2 × N address writes, 2 × N
/// invitations and 2 × N password resets.
const N: usize = 60;
/// Kills aimed at per phase; the test needs at least `MIN_KILLS` to have landed in all.
const KILLS_PER_PHASE: usize = 9;
const MIN_KILLS: usize = 20;

/// Starts `b2bsync run` in the background, its output discarded.
fn spawn_run(w: &World) -> std::process::Child {
    w.command(&["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn")
}

/// Runs `b2bsync run` again and again, SIGKILLing each after a random delay, until `kills`
/// runs were killed mid-flight or one finished on its own; then lets one run finish.
/// Returns the number of runs killed before they ended.
fn crash_phase(w: &World, rng: &mut rand::rngs::StdRng, kills: usize, max_ms: u64) -> usize {
    let mut killed = 0;
    while killed < kills {
        let mut child = spawn_run(w);
        let delay = Duration::from_millis(rng.random_range(100..max_ms));
        let started = Instant::now();
        let mut finished = false;
        while started.elapsed() < delay {
            if child.try_wait().expect("wait").is_some() {
                finished = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if finished {
            break;
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        killed += 1;
    }
    let out = w.b2bsync(&["run"]);
    assert!(
        matches!(out.status.code(), Some(0)),
        "the run after the crashes failed: {}",
        text(&out)
    );
    killed
}

/// Every partner account of the world as the AD holds it now, by sAMAccountName.
async fn ad_accounts(w: &World) -> BTreeMap<String, SourceAccount> {
    let scope = SearchScope {
        base_dns: vec![w.ou.clone()],
        filter: "(&(objectCategory=person)(objectClass=user))".into(),
        attributes: vec![],
        protected_groups: vec![],
    };
    service(Server::Samba)
        .accounts(&scope)
        .await
        .expect("read the AD")
        .into_iter()
        .filter_map(|a| Some((a.account_name.clone()?, a)))
        .collect()
}

/// The whole journal and the accounts' DNs and cloud ids by account key, from the state
/// store (no run is active when it is read).
fn journal(w: &World) -> (Vec<JournalEntry>, BTreeMap<String, (String, String)>) {
    let store = Store::open(&w.dir.path().join("state/b2bsync.db")).expect("state store");
    let accounts = store
        .accounts()
        .expect("accounts")
        .into_iter()
        .map(|a| {
            let ids = (
                a.dn.unwrap_or_default().to_lowercase(),
                a.progress.cloud_id.unwrap_or_default(),
            );
            (a.key, ids)
        })
        .collect();
    (store.journal_entries(None).expect("journal"), accounts)
}

/// The accounts (DN, lower case) and cloud users that have a `done` for `action`.
fn done_for(
    entries: &[JournalEntry],
    accounts: &BTreeMap<String, (String, String)>,
    action: &str,
) -> BTreeSet<String> {
    entries
        .iter()
        .filter(|e| e.phase == Phase::Done && e.action.as_str() == action)
        .filter_map(|e| accounts.get(&e.account_key))
        .flat_map(|(dn, id)| [dn.clone(), id.clone()])
        .collect()
}

/// The journal tells the truth: every address and password the world shows changed has a
/// `done` for its write. Returns how many of those `done`s a reconciliation recorded.
async fn assert_journal_matches_world(
    w: &World,
    passwords_before: &BTreeMap<String, Option<String>>,
) -> usize {
    let (entries, accounts) = journal(w);
    let ad = ad_accounts(w).await;
    let tenant = w.control(reqwest::Method::GET, "/tenant", None).await;
    let mail_done = done_for(&entries, &accounts, "set_directory_mail");
    let cloud_done = done_for(&entries, &accounts, "set_cloud_address");
    let password_done = done_for(&entries, &accounts, "randomize_password");
    let mut missing = Vec::new();
    for i in 0..N {
        let sam = w.sam(&format!("s{i:03}"));
        let account = &ad[&sam];
        let dn = account.dn.to_lowercase();
        if account.mail.as_deref() == Some(format!("synced{i}@fabrikam.example").as_str())
            && !mail_done.contains(&dn)
        {
            missing.push(format!("{sam}: AD mail holds the address, no done"));
        }
    }
    for i in 0..N {
        let sam = w.sam(&format!("c{i:03}"));
        let id = &w.ids[&sam];
        let user = tenant["users"]
            .as_array()
            .and_then(|u| u.iter().find(|u| u["id"] == json!(id)))
            .expect("user");
        let shows = user["otherMails"]
            .as_array()
            .is_some_and(|m| m.contains(&json!(format!("cloud{i}@northwind.example"))));
        if shows && !cloud_done.contains(id) {
            missing.push(format!("{sam}: otherMails holds the address, no done"));
        }
    }
    for (sam, account) in &ad {
        if passwords_before.get(sam) != Some(&account.password_changed)
            && !password_done.contains(&account.dn.to_lowercase())
        {
            missing.push(format!("{sam}: pwdLastSet changed, no done"));
        }
    }
    assert!(
        missing.is_empty(),
        "writes the journal does not show done: {missing:#?}"
    );
    entries
        .iter()
        .filter(|e| {
            e.phase == Phase::Done
                && e.action != Action::Invite
                && e.error
                    .as_deref()
                    .is_some_and(|t| t.starts_with("reconciled:"))
        })
        .count()
}

/// `rollback` of every run, newest first: each must end 0, and afterwards every address is
/// back to its value from before (none: the world's accounts start without `mail` and
/// `otherMails`), as the AD and the emulator's tenant show.
async fn assert_rollback_restores_every_address(w: &World) -> usize {
    let store = Store::open(&w.dir.path().join("state/b2bsync.db")).expect("state store");
    let runs: Vec<String> = store
        .runs()
        .expect("runs")
        .into_iter()
        .filter(|r| r.command == "run")
        .map(|r| r.id)
        .collect();
    drop(store);
    let mut reverted = 0;
    for run in runs.iter().rev() {
        // --force: the cloud-only partners are invited, and their addresses go back too.
        let out = w.b2bsync(&["rollback", run, "--force"]);
        assert_eq!(out.status.code(), Some(0), "rollback {run}: {}", text(&out));
        reverted += String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("reverted"))
            .count();
    }
    for (sam, account) in ad_accounts(w).await {
        assert_eq!(account.mail, None, "{sam}: AD mail not restored");
    }
    let tenant = w.control(reqwest::Method::GET, "/tenant", None).await;
    for i in 0..N {
        let id = &w.ids[&w.sam(&format!("c{i:03}"))];
        let user = tenant["users"]
            .as_array()
            .and_then(|u| u.iter().find(|u| u["id"] == json!(id)))
            .expect("user");
        assert_eq!(
            user["otherMails"],
            json!([]),
            "c{i:03}: otherMails not restored"
        );
        assert_eq!(user["mail"], Value::Null, "c{i:03}: mail not restored");
    }
    reverted
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_any_moment_never_repeats_or_loses_an_action() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("crash test seed: {seed} (CRASH_SEED={seed} reproduces the kill times)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let w = world(
        &eligible_partners(N),
        "[limits]\nmin_count_for_percent = 100000\naddress_writes = { max_count = 1000 }\ninvitations = { max_count = 1000 }\npassword_randomizations = { max_count = 1000 }\n\n[apply]\nconcurrency = 2\n",
    )
    .await;
    // 40-120 ms per Graph request: a run lasts long enough for kills to land mid-apply.
    w.control(
        reqwest::Method::POST,
        "/faults",
        Some(json!({ "latencyMs": [40, 120], "rate": 0.0, "kinds": [] })),
    )
    .await;

    // Phase 1: AD mail for the synced partners, otherMails + invitations for cloud-only ones.
    let mut killed = crash_phase(&w, &mut rng, KILLS_PER_PHASE, 1200);
    assert_each_invited_once(&w, N).await;
    for i in [0, N / 2, N - 1] {
        assert_eq!(
            w.ad_mail(&format!("s{i:03}")).await,
            Some(format!("synced{i}@fabrikam.example"))
        );
    }

    // Phase 2: after an Entra Connect cycle, the synced partners are invited.
    w.connect_cycle().await;
    killed += crash_phase(&w, &mut rng, KILLS_PER_PHASE, 1000);
    assert_each_invited_once(&w, 2 * N).await;

    // Phase 3: after acceptance, every on-premises password is randomized.
    assert_eq!(w.accept_pending().await, 2 * N);
    let passwords_before: BTreeMap<String, Option<String>> = ad_accounts(&w)
        .await
        .into_iter()
        .map(|(sam, a)| (sam, a.password_changed))
        .collect();
    killed += crash_phase(&w, &mut rng, KILLS_PER_PHASE, 1200);
    assert_each_invited_once(&w, 2 * N).await;

    let status = status_json(&w.b2bsync(&["status", "--format", "json"]));
    assert_eq!(count(&status, "done"), 2 * N as u64, "{status:#}");
    for i in [0, N / 3, N - 1] {
        assert!(!w.old_password_binds(&format!("s{i:03}")).await);
        assert!(!w.old_password_binds(&format!("c{i:03}")).await);
    }
    // A last run has nothing left to do.
    let out = w.b2bsync(&["plan"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 actions"),
        "{}",
        text(&out)
    );
    let reconciled_done = assert_journal_matches_world(&w, &passwords_before).await;
    let reverted = assert_rollback_restores_every_address(&w).await;
    assert_eq!(reverted, 2 * N, "one address write per partner to undo");
    eprintln!(
        "crash trials: {killed} runs killed mid-flight; duplicates 0; lost 0; {} invitations; {reconciled_done} writes found done by reconciliation; {reverted} addresses rolled back",
        2 * N
    );
    assert!(
        killed >= MIN_KILLS,
        "too few kills landed before the run ended ({killed}); the test proves little"
    );
}

/// The journal's `revoke_sessions` records of the account whose cloud user is `user_id`.
fn revocation_records(w: &World, user_id: &str) -> Vec<JournalEntry> {
    let (entries, accounts) = journal(w);
    entries
        .into_iter()
        .filter(|e| {
            e.action == Action::RevokeSessions
                && accounts
                    .get(&e.account_key)
                    .is_some_and(|(_, id)| id == user_id)
        })
        .collect()
}

/// The emulator's `lost` fault on one user's `revokeSignInSessions` only: the revocation is
/// processed, then its connection closes unanswered.
async fn lose_revocation_answers(w: &World, user_id: &str) {
    w.control(
        reqwest::Method::POST,
        "/faults",
        Some(json!({
            "rate": 1.0,
            "kinds": ["lost"],
            "pathPrefix": format!("/v1.0/users/{user_id}/revokeSignInSessions"),
        })),
    )
    .await;
}

// Issue 19: "surviving a crash between randomization and revocation". A revocation the
// service processed whose answer never reached b2bsync (SIGKILL while it waited to read it
// back) is settled by the next run by reading signInSessionsValidFromDateTime, not by a
// second POST; one whose answer is lost in a run that lives on is read back in that run.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_the_revocation_and_its_answer_never_revokes_twice() {
    use common::world::{Partner, Tenancy};
    let partners: Vec<Partner> = (0..2)
        .map(|i| {
            Partner::new(
                &format!("c{i:03}"),
                &format!("Cloud Partner {i}"),
                Some(&format!("cloud{i}@northwind.example")),
                Tenancy::CloudOnly,
            )
        })
        .collect();
    let w = world(&partners, "").await;
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_each_invited_once(&w, 2).await;
    let (first, second) = (w.ids[&w.sam("c000")].clone(), w.ids[&w.sam("c001")].clone());
    let accept = |id: String| {
        let w = &w;
        async move {
            w.control(
                reqwest::Method::POST,
                &format!("/users/{id}/accept"),
                Some(json!({})),
            )
            .await
        }
    };

    // c000 accepts; the run randomizes its password and revokes its sessions; the service
    // processes the revocation, the answer is lost, and b2bsync is killed while it waits to
    // read it back.
    accept(first.clone()).await;
    lose_revocation_answers(&w, &first).await;
    let mut child = spawn_run(&w);
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.revocations().await.is_empty() {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run ended before the revocation reached the service"
        );
        assert!(Instant::now() < deadline, "no revocation within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert_eq!(w.revocations().await, ["c000"]);
    let records = revocation_records(&w, &first);
    assert_eq!(
        records.iter().map(|e| e.phase).collect::<Vec<_>>(),
        [Phase::Started],
        "the kill must land between the call and its record: {records:#?}"
    );
    assert!(!w.old_password_binds("c000").await, "randomized before");

    // The next run reads the user back, journals the revocation done with what it read, and
    // does not POST it again.
    w.control(reqwest::Method::DELETE, "/faults", None).await;
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(w.revocations().await, ["c000"], "revoked once");
    let records = revocation_records(&w, &first);
    let done: Vec<&JournalEntry> = records.iter().filter(|e| e.phase == Phase::Done).collect();
    assert_eq!(done.len(), 1, "{records:#?}");
    let why = done[0].error.as_deref().unwrap_or_default();
    assert!(
        why.starts_with("reconciled: took effect: signInSessionsValidFromDateTime is"),
        "{why}"
    );
    assert!(
        records.iter().all(|e| e.phase != Phase::Failed),
        "{records:#?}"
    );

    // c001 accepts; its revocation's answer is lost in a run that lives on: read back in
    // that run, recorded done, not sent again.
    accept(second.clone()).await;
    lose_revocation_answers(&w, &second).await;
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    w.control(reqwest::Method::DELETE, "/faults", None).await;
    assert_eq!(w.revocations().await, ["c000", "c001"]);
    let records = revocation_records(&w, &second);
    assert_eq!(
        records.iter().map(|e| e.phase).collect::<Vec<_>>(),
        [Phase::Started, Phase::Done],
        "{records:#?}"
    );
    let why = records[1].error.as_deref().unwrap_or_default();
    assert!(
        why.contains("answer lost") && why.contains("signInSessionsValidFromDateTime is"),
        "{why}"
    );

    // Nothing is left to revoke: a last run sends nothing.
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(w.revocations().await, ["c000", "c001"]);
    let status = status_json(&w.b2bsync(&["status", "--format", "json"]));
    assert_eq!(status["sessions"]["revoked"], 2, "{status:#}");
    assert_eq!(count(&status, "done"), 2, "{status:#}");
}
