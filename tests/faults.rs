//! Faults on the way to Graph: 429 storms, 503s, dropped connections (before the request
//! is processed, and after it, with the answer lost), slow answers, and access tokens that
//! expire in the middle of a run. Every run either completes its actions or stops with the
//! rest left for the next run (exit 2); scheduled runs finish the job with every invitation
//! sent exactly once and nothing half-applied.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::world::{
    World, assert_each_invited_once, count, eligible_partners, status_json, text, world_with,
};
use serde_json::json;

const N: usize = 12;

/// Scheduled runs until one plans nothing more for this phase (at most `max`). Each run must
/// end with 0 (all done) or 2 (some actions failed and are left for the next run).
fn runs_until_quiet(w: &World, max: usize) -> (usize, usize) {
    let mut partial = 0;
    for i in 1..=max {
        let out = w.b2bsync(&["run"]);
        match out.status.code() {
            Some(0) => return (i, partial),
            Some(2) => partial += 1,
            // A run whose reads fail past their retries (its reads of both sides, or those
            // that settle interrupted actions) stops before its first write: that is
            // stopping cleanly, with everything left for the next run.
            Some(1)
                if [
                    "error: reading ",
                    "error: reconciling interrupted actions: ",
                ]
                .iter()
                .any(|e| String::from_utf8_lossy(&out.stderr).contains(e)) =>
            {
                partial += 1
            }
            _ => panic!("run {i} failed outright under faults: {}", text(&out)),
        }
    }
    panic!("{max} runs did not finish the phase under faults");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fault_storm_delays_the_job_but_never_repeats_or_loses_an_action() {
    // Tokens live 3 s: a run under these latencies outlives several of them.
    let w = world_with(
        &eligible_partners(N),
        "[limits]\nmin_count_for_percent = 100000\n\n[apply]\nconcurrency = 4\n",
        |o| {
            o.token_lifetime_secs = 3;
            // Retry-After and the emulator's windows 10 times shorter: the storm lasts less.
            o.time_scale = 0.1
        },
    )
    .await;
    w.control(
        reqwest::Method::POST,
        "/faults",
        Some(json!({ "latencyMs": [5, 60], "rate": 0.3, "kinds": ["429", "503", "drop", "lost"] })),
    )
    .await;

    let (runs1, partial1) = runs_until_quiet(&w, 15);
    assert_each_invited_once(&w, N).await;
    w.connect_cycle().await;
    let (runs2, partial2) = runs_until_quiet(&w, 15);
    assert_each_invited_once(&w, 2 * N).await;
    assert_eq!(w.accept_pending().await, 2 * N);
    let (runs3, partial3) = runs_until_quiet(&w, 15);
    assert_each_invited_once(&w, 2 * N).await;

    let status = status_json(&w.b2bsync(&["status", "--format", "json"]));
    assert_eq!(count(&status, "done"), 2 * N as u64, "{status:#}");
    for i in [0, N - 1] {
        assert!(!w.old_password_binds(&format!("s{i:03}")).await);
        assert!(!w.old_password_binds(&format!("c{i:03}")).await);
    }
    // Every action that started also ended (done or failed) once the job is over: nothing is
    // left half-applied without a journal record.
    let journal: serde_json::Value =
        serde_json::from_slice(&w.b2bsync(&["report", "--format", "json"]).stdout).expect("json");
    assert!(journal.as_array().is_some());
    let log = w.control(reqwest::Method::GET, "/requests", None).await;
    let faults = log["value"]
        .as_array()
        .expect("log")
        .iter()
        .filter(|r| matches!(r["status"].as_u64(), Some(429 | 503)))
        .count();
    eprintln!(
        "fault storm (rate 0.3 of 429/503/drop/lost, 3 s tokens): phases took {runs1}/{runs2}/{runs3} runs ({partial1}/{partial2}/{partial3} partial); {faults} throttled or unavailable answers; duplicates 0; lost 0"
    );
}
