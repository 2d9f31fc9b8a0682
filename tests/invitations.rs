//! Invitation answers and what b2bsync keeps of them (issue 13), end to end with the real
//! binary against the lab's Samba AD and the Graph emulator: an answer naming another user
//! stops the run's invitations and blocks the account; redeem links of invitations sent
//! without Microsoft's email are kept in the state store only and exported on demand; the
//! default redirect URL names the tenant.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::world::{World, cloud_partners, status_json, text, world};
use serde_json::{Value, json};

/// `POST /invitations` requests the emulator logged (answered or not).
async fn invitation_posts(w: &World) -> Vec<Value> {
    let log = w.control(reqwest::Method::GET, "/requests", None).await;
    log["value"]
        .as_array()
        .expect("request log")
        .iter()
        .filter(|r| {
            r["method"] == "POST" && r["path"].as_str().unwrap_or("").ends_with("/invitations")
        })
        .cloned()
        .collect()
}

/// The mapping file with its `[invitation]` section replaced by `section`.
fn set_invitation_section(w: &World, section: &str) {
    let path = w.dir.path().join("mappings/partners.toml");
    let text = std::fs::read_to_string(&path).expect("mapping");
    let start = text.find("[invitation]").expect("invitation section");
    std::fs::write(&path, format!("{}{section}", &text[..start])).expect("write mapping");
}

fn journal(w: &World) -> Vec<Value> {
    let out = w.b2bsync(&["report", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("journal json")
        .as_array()
        .expect("rows")
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invitation_answered_with_another_user_stops_invitations_and_blocks_the_account() {
    let w = world(&cloud_partners(3), "").await;
    w.control(
        reqwest::Method::POST,
        "/faults",
        Some(json!({"rate": 0.0, "kinds": [], "invitationNewGuest": true})),
    )
    .await;

    let out = w.b2bsync(&["run"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    // Exactly one invitation went out, and it created a guest instead of converting.
    let posts = invitation_posts(&w).await;
    assert_eq!(posts.len(), 1, "{posts:#?}");
    let requested = posts[0]["invitedUserId"]
        .as_str()
        .expect("requested id")
        .to_string();
    let recorded = w.invitations().await;
    assert_eq!(recorded.len(), 1);
    assert_ne!(
        recorded[0].0, requested,
        "the fault answers with a new guest"
    );
    // Loud: an error-level log line, the summary, a help line.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"level\":\"ERROR\"") || stderr.contains("ERROR"),
        "no error-level log line:\n{shown}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("no further invitation is sent in this run"),
        "{shown}"
    );
    assert!(
        stdout.contains(&recorded[0].0),
        "the summary names what came back:\n{shown}"
    );
    assert!(stdout.contains("help: "), "{shown}");

    // Blocked with the reason, the others not invited (no invite done in the journal).
    let status = status_json(&w.b2bsync(&["status", "--format", "json"]));
    let reasons: Vec<&str> = status["blocked"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["invitation_answer_mismatch"], "{status:#}");
    let rows = journal(&w);
    let invites: Vec<&Value> = rows.iter().filter(|r| r["action"] == "invite").collect();
    assert!(invites.iter().all(|r| r["phase"] != "done"), "{invites:#?}");
    let failed: Vec<&&Value> = invites.iter().filter(|r| r["phase"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{invites:#?}");
    // Journaled truthfully: what came back, with the answer's request-id.
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains(&recorded[0].0), "{error}");
    assert_eq!(
        failed[0]["request_id"], posts[0]["requestId"],
        "{:#}",
        failed[0]
    );
    let blocked_key = failed[0]["account_key"].as_str().unwrap().to_string();

    // The next run (the service behaves again) invites the others, not the blocked one.
    w.control(reqwest::Method::DELETE, "/faults", None).await;
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let posts = invitation_posts(&w).await;
    assert_eq!(posts.len(), 3, "{posts:#?}");
    assert_eq!(
        posts
            .iter()
            .filter(|p| p["invitedUserId"] == json!(requested))
            .count(),
        1,
        "the blocked account was invited again"
    );
    let status = status_json(&w.b2bsync(&["status", "--format", "json"]));
    assert_eq!(status["blocked"][0]["reason"], "invitation_answer_mismatch");
    assert_eq!(common::world::count(&status, "invited"), 2, "{status:#}");

    // An admin checked it: cleared, the account is decided afresh (no longer that reason).
    let out = w.b2bsync(&["invitations", "--clear-mismatch", &blocked_key]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = w.b2bsync(&["invitations", "--clear-mismatch", &blocked_key]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "nothing left to clear:\n{}",
        text(&out)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("help: "));
    let out = w.b2bsync(&["plan"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("not answered as its conversion"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redeem_links_are_kept_and_exported_but_never_logged() {
    let w = world(&cloud_partners(2), "").await;
    set_invitation_section(
        &w,
        "[invitation]\nredirect_url = \"https://myapps.microsoft.com/\"\nsend_message = false\n",
    );
    let out = w
        .command(&["run"])
        .arg("-vv")
        .env("B2BSYNC_LOG", "trace")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tenant = w.control(reqwest::Method::GET, "/tenant", None).await;
    let mut expected: Vec<String> = tenant["invitations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["inviteRedeemUrl"].as_str().unwrap().to_string())
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 2);

    let file = w.dir.path().join("links.csv");
    let export = w.b2bsync(&["invitations", "--pending", "--out", file.to_str().unwrap()]);
    assert_eq!(export.status.code(), Some(0), "{}", text(&export));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let csv = std::fs::read_to_string(&file).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("account,dn,partner_address,invited_at,link")
    );
    let mut links: Vec<String> = lines
        .map(|l| l.rsplit(',').next().unwrap().to_string())
        .collect();
    links.sort();
    assert_eq!(links, expected);
    for address in ["cloud0@northwind.example", "cloud1@northwind.example"] {
        assert!(csv.contains(address), "{csv}");
    }
    let json = w.b2bsync(&["invitations", "--pending", "--format", "json"]);
    let rows: Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(rows.as_array().unwrap().len(), 2);

    // Never in the logs of the run, nor in the plan, the journal or the status.
    let mut outputs = [out.stdout, out.stderr].concat();
    for args in [
        &["plan"][..],
        &["status", "--format", "json"],
        &["report", "--format", "json"],
    ] {
        let o = w
            .command(args)
            .env("B2BSYNC_LOG", "trace")
            .output()
            .unwrap();
        outputs.extend(o.stdout);
        outputs.extend(o.stderr);
    }
    let outputs = String::from_utf8_lossy(&outputs);
    assert!(outputs.contains("TRACE") || outputs.contains("\"level\":\"TRACE\""));
    for link in &expected {
        assert!(
            !outputs.contains(link.as_str()),
            "a redeem link is in the output"
        );
        let ticket = link.split("ticket").nth(1).unwrap();
        assert!(
            !outputs.contains(ticket),
            "a redeem ticket is in the output"
        );
    }

    // Accepted: no longer pending, and the export keeps its header.
    w.accept_pending().await;
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let export = w.b2bsync(&["invitations", "--pending", "--format", "csv"]);
    assert_eq!(
        String::from_utf8_lossy(&export.stdout),
        "account,dn,partner_address,invited_at,link\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_redirect_url_names_the_tenant() {
    let w = world(&cloud_partners(1), "").await;
    set_invitation_section(&w, "[invitation]\nsend_message = true\n");
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tenant = w.control(reqwest::Method::GET, "/tenant", None).await;
    let invitations = tenant["invitations"].as_array().unwrap();
    assert_eq!(invitations.len(), 1);
    assert_eq!(
        invitations[0]["inviteRedirectUrl"],
        format!(
            "https://myapps.microsoft.com/?tenantid={}",
            w.emulator.tenant_id
        )
    );
}
