//! The Graph client's pacer against the throttling emulator (issue 5): invitations beyond
//! the invitation manager's burst wait in b2bsync instead of being refused, and every user is
//! invited exactly once. Not a timed test: it counts 429s and invitations, never seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use b2bsync::cloud::token::Credential;
use b2bsync::cloud::{Cloud, GraphClient, GraphSettings, Invitation};
use futures_util::StreamExt as _;
use graph_emulator::{self as emulator, App, Options, Running, Tenant, User};
use secrecy::SecretString;
use serde_json::Value;

const CLIENT_ID: &str = "6b1c2a4e-0000-4000-8000-0000000pace1";
const SECRET: &str = "pacing-test-secret";
/// Emulator windows 5 times shorter: the invitation manager allows 150 per second.
const TIME_SCALE: f64 = 0.2;
const USERS: usize = 600;

fn tenant() -> Tenant {
    Tenant {
        tenant_id: "7d1f0c3a-0000-4000-8000-0000000pace0".into(),
        initial_domain: "pacing.onmicrosoft.com".into(),
        verified_domains: vec!["pacing.example".into()],
        apps: vec![App {
            app_id: CLIENT_ID.into(),
            display_name: Some("pacing test".into()),
            client_secrets: vec![SECRET.into()],
            permissions: vec!["User.ReadWrite.All".into(), "User.Invite.All".into()],
            ..App::default()
        }],
        users: (0..USERS)
            .map(|i| User {
                id: format!("c0000000-0000-4000-8000-{i:012}"),
                user_principal_name: format!("partner{i:04}@pacing.example"),
                display_name: Some(format!("Partner {i:04}")),
                // The external address is staged already: only invitations are paced here.
                other_mails: vec![format!("partner{i:04}@home.example")],
                user_type: Some("Member".into()),
                account_enabled: Some(true),
                ..User::default()
            })
            .collect(),
    }
}

fn client(emu: &Running, dir: &std::path::Path, budget_time_scale: f64) -> GraphClient {
    client_with(emu, dir, budget_time_scale, 6)
}

fn client_with(
    emu: &Running,
    dir: &std::path::Path,
    budget_time_scale: f64,
    max_attempts: u32,
) -> GraphClient {
    let ca = dir.join("graph-ca.pem");
    std::fs::write(&ca, &emu.ca_pem).unwrap();
    let mut settings = GraphSettings::new(&emu.base_url, &emu.base_url, &emu.tenant_id, CLIENT_ID);
    settings.resource = emulator::DEFAULT_GRAPH_RESOURCE.into();
    settings.ca_file = Some(ca);
    settings.budget_time_scale = budget_time_scale;
    settings.max_attempts = max_attempts;
    GraphClient::new(settings, Credential::Secret(SecretString::from(SECRET))).unwrap()
}

/// Invites `users` with 64 in flight; returns the emulator's request log.
async fn invite_all(
    emu: &Running,
    graph: &GraphClient,
    users: std::ops::Range<usize>,
) -> Vec<Value> {
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(emu.ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let control = |path: &str| format!("{}/_emulator/{path}", emu.base_url);
    http.post(control("throttle/reset")).send().await.unwrap();
    http.delete(control("requests")).send().await.unwrap();
    let results: Vec<_> = futures_util::stream::iter(users)
        .map(|i| async move {
            graph
                .invite(&Invitation {
                    user_id: format!("c0000000-0000-4000-8000-{i:012}"),
                    email: format!("partner{i:04}@home.example"),
                    redirect_url: "https://myapps.microsoft.com".into(),
                    send_message: false,
                    message_body: None,
                    message_language: None,
                    cc: None,
                    reset_redemption: false,
                })
                .await
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    let log: Value = http
        .get(control("requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    log["value"].as_array().unwrap().clone()
}

fn throttled(log: &[Value]) -> usize {
    log.iter().filter(|r| r["status"] == 429).count()
}

fn invited_once(log: &[Value], expected: usize) {
    let mut per_user: HashMap<&str, usize> = HashMap::new();
    for r in log
        .iter()
        .filter(|r| r["path"] == "/v1.0/invitations" && r["status"] == 201)
    {
        *per_user
            .entry(r["invitedUserId"].as_str().unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(per_user.len(), expected, "every user invited");
    assert!(per_user.values().all(|n| *n == 1), "nobody invited twice");
}

#[tokio::test]
async fn invitations_past_the_burst_wait_in_the_pacer_instead_of_drawing_429s() {
    let mut opts = Options::new("127.0.0.1:0".parse().unwrap(), tenant());
    opts.time_scale = TIME_SCALE;
    let emu = emulator::spawn(opts).await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Paced at the emulator's scale: 300 invitations, twice the burst of 150.
    let paced = client(&emu, dir.path(), TIME_SCALE);
    let log = invite_all(&emu, &paced, 0..300).await;
    invited_once(&log, 300);
    let paced_429s = throttled(&log);
    assert!(
        paced_429s <= 15,
        "the pacer keeps 429s rare: {paced_429s} in {} requests",
        log.len()
    );

    // A client whose pacer believes the windows are far shorter does not hold back: the
    // service refuses it again and again (six attempts are not enough for it), and with
    // enough attempts it still invites everybody exactly once.
    let unpaced = client_with(&emu, dir.path(), 1e-6, 1000);
    let log = invite_all(&emu, &unpaced, 300..USERS).await;
    invited_once(&log, 300);
    assert!(
        throttled(&log) > paced_429s,
        "without pacing the service throttles: {} vs {paced_429s}",
        throttled(&log)
    );
    emu.shutdown().await;
}
