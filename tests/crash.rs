//! Exactly once across crashes: `b2bsync run` is killed with SIGKILL at random moments of
//! each phase of the lifecycle (address staging and cloud-only invitations; synced
//! invitations; password randomization), over a plan of a few hundred actions against the
//! real Samba AD and the emulator (with latency, so kills land in the middle of `apply`).
//! After each phase is finally let to finish, the emulator's records must show every
//! invitation exactly once, and at the end every eligible account must be done with its old
//! password refused by the AD.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::world::{
    World, assert_each_invited_once, count, eligible_partners, status_json, text, world,
};
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Synced and cloud-only partners each; the plan has 2 × N address writes, 2 × N
/// invitations and 2 × N password resets.
const N: usize = 60;
/// Kills aimed at per phase; the test needs at least `MIN_KILLS` to have landed in all.
const KILLS_PER_PHASE: usize = 9;
const MIN_KILLS: usize = 20;

/// Runs `b2bsync run` again and again, SIGKILLing each after a random delay, until `kills`
/// runs were killed mid-flight or one finished on its own; then lets one run finish.
/// Returns the number of runs killed before they ended.
fn crash_phase(w: &World, rng: &mut rand::rngs::StdRng, kills: usize, max_ms: u64) -> usize {
    let mut killed = 0;
    while killed < kills {
        let mut child = w
            .command(&["run"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
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
    eprintln!(
        "crash trials: {killed} runs killed mid-flight; duplicates 0; lost 0; {} invitations",
        2 * N
    );
    assert!(
        killed >= MIN_KILLS,
        "too few kills landed before the run ended ({killed}); the test proves little"
    );
}
