//! `[policy] randomize_password = "after_sign_in"` (issue 13), end to end with the real binary
//! against the lab's Samba AD and the Graph emulator: accepted partners keep their on-premises
//! password until the emulator records a successful sign-in, then exactly the one who signed
//! in is randomized; `check` names `AuditLog.Read.All` when the policy needs it.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::world::{cloud_partners, text, world_with};
use serde_json::json;

const POLICY: &str = "[policy]\nrandomize_password = \"after_sign_in\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn after_sign_in_randomizes_only_the_partner_who_signed_in() {
    let w = world_with(&cloud_partners(2), POLICY, |o| {
        o.tenant.apps[0]
            .permissions
            .push("AuditLog.Read.All".into());
    })
    .await;
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(w.accept_pending().await, 2);

    // Accepted, no sign-in: nobody is randomized, and the plan says what it waits for.
    let plan = w.b2bsync(&["plan"]);
    let shown = text(&plan);
    assert_eq!(plan.status.code(), Some(0), "{shown}");
    assert_eq!(
        shown
            .matches("waiting for the partner's first external sign-in since")
            .count(),
        2,
        "{shown}"
    );
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for sam in ["c0", "c1"] {
        assert!(w.old_password_binds(sam).await, "{sam} randomized early");
    }
    assert!(w.revocations().await.is_empty());

    // c0 signs in: the next run randomizes c0 only, and a later run nothing more.
    let id = w.ids[&w.sam("c0")].clone();
    w.control(
        reqwest::Method::POST,
        &format!("/users/{id}/sign-in"),
        Some(json!({})),
    )
    .await;
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!w.old_password_binds("c0").await, "c0 not randomized");
    assert!(
        w.old_password_binds("c1").await,
        "c1 randomized without a sign-in"
    );
    assert_eq!(w.revocations().await, vec!["c0".to_string()]);
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(w.revocations().await, vec!["c0".to_string()]);
    assert!(w.old_password_binds("c1").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_audit_log_read_all_when_the_policy_needs_it() {
    let w = world_with(&cloud_partners(2), POLICY, |_| {}).await;
    let out = w.b2bsync(&["check"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("FAIL  graph permissions") && shown.contains("missing: AuditLog.Read.All"),
        "{shown}"
    );
    assert!(
        shown.contains("help: grant the application permission(s) AuditLog.Read.All"),
        "{shown}"
    );
}
