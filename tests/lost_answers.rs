//! An invitation whose answer is lost (the connection dropped after the service processed
//! it, as one dropped HTTP/2 connection does to every call in flight on it) is settled in the
//! same run: b2bsync reads the user back, journals the invitation `done` and never sends it
//! again, instead of leaving it for the next scheduled run. Against the real Samba AD and the
//! emulator with its `lost` fault on every invitation.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::world::{assert_each_invited_once, count, eligible_partners, status_json, text, world};
use serde_json::json;

const N: usize = 6;

// See: issue 10 ("one dropped HTTP/2 connection fails every invitation in flight on it").
#[tokio::test(flavor = "multi_thread")]
async fn invitations_whose_answers_are_lost_are_settled_in_the_same_run() {
    let w = world(
        &eligible_partners(N),
        "[limits]\nmin_count_for_percent = 100000\n",
    )
    .await;
    // Every invitation is processed by the service, then its connection closes unanswered.
    w.control(
        reqwest::Method::POST,
        "/faults",
        Some(json!({ "rate": 1.0, "kinds": ["lost"], "pathPrefix": "/v1.0/invitations" })),
    )
    .await;

    // Run 1: the cloud-only partners' addresses are staged and they are invited; every
    // answer is lost. A closing connection also drops the other calls in flight on it before
    // the service sees them, so some invitations may really not have been sent.
    let out = w.b2bsync(&["run"]);
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}", text(&out));
    let processed: BTreeSet<String> = w.invitations().await.into_iter().map(|(u, _)| u).collect();
    assert!(!processed.is_empty(), "no invitation reached the service");

    // The journal says what reached the world, within run 1: every invitation the service
    // processed is `done` (read back), every other one has no `done`.
    let report = w.b2bsync(&["report", "--format", "json"]);
    let report_text = String::from_utf8_lossy(&report.stdout).to_string();
    let rows: serde_json::Value = serde_json::from_str(&report_text).expect("report json");
    let invites: Vec<&serde_json::Value> = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["action"] == "invite")
        .collect();
    let user_of = |r: &serde_json::Value| -> String {
        let after: serde_json::Value =
            serde_json::from_str(r["after"].as_str().unwrap_or("{}")).expect("after json");
        after["userId"].as_str().unwrap_or_default().to_string()
    };
    let done: BTreeSet<String> = invites
        .iter()
        .filter(|r| r["phase"] == "done")
        .map(|r| user_of(r))
        .collect();
    assert_eq!(
        done, processed,
        "journal done vs the service's record:\n{report_text}"
    );
    assert!(
        invites
            .iter()
            .filter(|r| r["phase"] == "done")
            .all(|r| r["error"]
                .as_str()
                .unwrap_or_default()
                .contains("read back")),
        "{report_text}"
    );
    let status = status_json(&w.b2bsync(&["status", "--format", "json"]));
    assert_eq!(
        count(&status, "invited"),
        processed.len() as u64,
        "{status:#}"
    );

    // The next run, with the faults gone, sends only what the service never saw, once.
    w.control(reqwest::Method::DELETE, "/faults", None).await;
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_each_invited_once(&w, N).await;
    let status = status_json(&w.b2bsync(&["status", "--format", "json"]));
    assert_eq!(count(&status, "invited"), N as u64, "{status:#}");
}
