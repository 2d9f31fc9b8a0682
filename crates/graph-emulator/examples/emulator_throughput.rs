//! How many invitations a second the emulator serves (issue 12, item 3): the smallest time
//! scale at which its throttling still means something is the one where it can serve a
//! window's limit within the scaled window.
//!
//! `cargo run -p graph-emulator --example emulator_throughput [-- USERS [REQUESTS [IN_FLIGHT]]]`
//!
//! Starts an in-process emulator with `USERS` cloud-only users whose external address is
//! staged (default 10,000), a time scale so small that throttling never binds, and sends
//! `REQUESTS` conversion invitations (default 3,000) over HTTPS, `IN_FLIGHT` at a time (32),
//! then the same number of `GET /users/{id}` for comparison. The client runs in the same
//! process and shares the cores: the figures are a floor.

use std::time::Instant;

use futures_util::StreamExt as _;
use graph_emulator::{App, Options, Tenant, User};
use serde_json::{Value, json};

const APP: &str = "7e000000-0000-4000-8000-000000000001";
const SECRET: &str = "throughput-secret";

fn tenant(users: usize) -> Tenant {
    Tenant {
        tenant_id: "7e000000-0000-4000-8000-0000000000aa".into(),
        initial_domain: "throughput.onmicrosoft.com".into(),
        verified_domains: vec!["throughput.example".into()],
        apps: vec![App {
            app_id: APP.into(),
            client_secrets: vec![SECRET.into()],
            permissions: vec!["User.ReadWrite.All".into()],
            ..App::default()
        }],
        users: (0..users)
            .map(|i| User {
                id: format!("7e000000-0000-4000-8000-{i:012}"),
                user_principal_name: format!("user{i:06}@throughput.example"),
                other_mails: vec![format!("user{i:06}@home.example")],
                ..User::default()
            })
            .collect(),
    }
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Sends `count` requests, `in_flight` at a time; returns how many got `expected` and the
/// seconds it took.
async fn timed(
    count: usize,
    in_flight: usize,
    expected: u16,
    request: impl Fn(usize) -> reqwest::RequestBuilder,
) -> (usize, f64) {
    let started = Instant::now();
    let statuses: Vec<u16> = futures_util::stream::iter(0..count)
        .map(|i| {
            let sent = request(i).send();
            async move { sent.await.map(|r| r.status().as_u16()).unwrap_or(0) }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let matched = statuses.iter().filter(|s| **s == expected).count();
    (matched, started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let users = arg(1, 10_000);
    let requests = arg(2, 3_000).min(users);
    let in_flight = arg(3, 32);
    let emu = graph_emulator::spawn(Options {
        tenant: tenant(users),
        time_scale: 1e-9,
        ..Options::default()
    })
    .await?;
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(emu.ca_pem.as_bytes())?])
        .build()?;
    let token: Value = http
        .post(emu.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let graph = emu.graph_url();

    let invitation = |i: usize| {
        let body = json!({
            "invitedUserEmailAddress": format!("user{i:06}@home.example"),
            "inviteRedirectUrl": "https://myapps.microsoft.com",
            "invitedUser": {"id": format!("7e000000-0000-4000-8000-{i:012}")},
        });
        http.post(format!("{graph}/invitations"))
            .bearer_auth(&token)
            .json(&body)
    };
    let (created, invitations) = timed(requests, in_flight, 201, invitation).await;
    let read = |i: usize| {
        http.get(format!("{graph}/users/7e000000-0000-4000-8000-{i:012}"))
            .bearer_auth(&token)
    };
    let (read, gets) = timed(requests, in_flight, 200, read).await;

    println!(
        "{users} users, {in_flight} in flight: {created} of {requests} invitations created in {invitations:.2} s = {:.0}/s; {read} GET /users/{{id}} in {gets:.2} s = {:.0}/s",
        created as f64 / invitations,
        read as f64 / gets,
    );
    emu.shutdown().await;
    Ok(())
}
