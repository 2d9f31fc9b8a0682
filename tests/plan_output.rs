//! What `plan` shows of hostile directory values, against the lab's Samba AD and the Graph
//! emulator: control characters never reach the terminal raw, and each account the plan holds
//! back is one `debug` event naming the account (as everywhere: its UPN and its DN) and the
//! reason.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::world::{Partner, Tenancy, world};

// See: issue 10, finding 8 (ESC sequences from the directory reached the terminal).
#[tokio::test(flavor = "multi_thread")]
async fn plan_escapes_control_characters_and_logs_each_blocked_account() {
    let evil = "evil\u{1b}[2J\u{1b}]0;pwned\u{7}@fabrikam.example";
    let w = world(
        &[
            Partner::new(
                "baker",
                "Bo Baker",
                Some("bo@fabrikam.example"),
                Tenancy::Synced,
            ),
            Partner::new("evil", "Eve Vil", Some(evil), Tenancy::Synced),
        ],
        "",
    )
    .await;
    let out = w.b2bsync(&["plan"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        !stdout.chars().any(|c| c.is_control() && c != '\n'),
        "a control character reached stdout: {stdout:?}"
    );
    assert!(stdout.contains("blocked: invalid_address (1)"), "{stdout}");
    assert!(
        stdout.contains("evil\\u{1b}[2j\\u{1b}]0;pwned\\u{7}@"),
        "{stdout}"
    );

    let sam = w.sam("evil");
    // Named as everywhere: the joined cloud user's UPN, then the DN.
    let named = |v: &serde_json::Value, sam: &str| {
        v["account"].as_str().is_some_and(|a| {
            a.to_ascii_lowercase()
                .starts_with(&format!("{sam}@lab.example.com (cn="))
        })
    };
    let event = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "DEBUG" && named(v, &sam) && v["message"] == "Plan decision.")
        .unwrap_or_else(|| panic!("no debug event for {sam}:\n{stderr}"));
    assert_eq!(event["reason"], "invalid_address", "{event}");
    assert_eq!(event["state"], "blocked", "{event}");
    assert!(!stderr.contains('\u{1b}'), "a raw ESC in the logs");
    let baker = w.sam("baker");
    let event = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| named(v, &baker) && v["message"] == "Plan decision.")
        .unwrap_or_else(|| panic!("no decision event for {baker}:\n{stderr}"));
    assert!(
        event["reason"].is_null(),
        "an account that is not held back was logged with a reason: {event}"
    );
}
