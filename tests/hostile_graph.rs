//! The Graph client against hostile servers (issue 10): the emulator's hostile faults
//! (links to another origin or over http, paging loops, huge `Retry-After` and `expires_in`,
//! a redirecting token endpoint, oversized bodies) and a hostile HTTPS server of the test's
//! own that records whether a token or a secret ever reached it. Every call is bounded by
//! a timeout: a panic or a hang is a failure, and each refusal is a typed error with help.
// See: #10
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::time::Duration;

use b2bsync::cloud::token::Credential;
use b2bsync::cloud::{self, Cloud, Error, GraphClient, GraphSettings, LinkKind};
use common::hostile::{Answer, Hostile, Plain};
use graph_emulator::{self as emulator, App, Options, Running, Tenant, User};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};

const CLIENT_ID: &str = "6b1c2a4e-0000-4000-8000-00000000h051";
const SECRET: &str = "hostile-test-secret";
/// Past one page of 999: `users()` follows one nextLink.
const USERS: usize = 1000;
/// Long enough for a loaded machine, far shorter than any hang (a 120 s retry wait).
const BOUND: Duration = Duration::from_secs(30);

fn tenant() -> Tenant {
    Tenant {
        tenant_id: "7d1f0c3a-0000-4000-8000-00000000h050".into(),
        initial_domain: "hostile.onmicrosoft.com".into(),
        verified_domains: vec!["hostile.example".into()],
        apps: vec![App {
            app_id: CLIENT_ID.into(),
            display_name: Some("hostile test".into()),
            client_secrets: vec![SECRET.into()],
            permissions: vec![
                "User.ReadWrite.All".into(),
                "RoleManagement.Read.Directory".into(),
                "Organization.Read.All".into(),
            ],
            ..App::default()
        }],
        users: (0..USERS)
            .map(|i| User {
                id: format!("c0000000-0000-4000-8000-{i:012}"),
                user_principal_name: format!("partner{i:04}@hostile.example"),
                ..User::default()
            })
            .collect(),
    }
}

/// The emulator, and a directory for CA files.
struct Lab {
    emu: Running,
    dir: tempfile::TempDir,
}

async fn lab() -> Lab {
    let emu = emulator::spawn(Options {
        tenant: tenant(),
        ..Options::default()
    })
    .await
    .unwrap();
    Lab {
        emu,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Lab {
    /// Settings for the emulator, trusting its CA and `also_trusted` (so that a hostile
    /// server is reachable over TLS and only the client's own checks can keep the token).
    fn settings(&self, also_trusted: &[&str]) -> GraphSettings {
        let mut settings = GraphSettings::new(
            &self.emu.base_url,
            &self.emu.base_url,
            &self.emu.tenant_id,
            CLIENT_ID,
        );
        settings.resource = emulator::DEFAULT_GRAPH_RESOURCE.into();
        let ca = self
            .dir
            .path()
            .join(format!("ca-{}.pem", also_trusted.len()));
        let mut bundle = self.emu.ca_pem.clone();
        for pem in also_trusted {
            bundle.push_str(pem);
        }
        std::fs::write(&ca, bundle).unwrap();
        settings.ca_file = Some(ca);
        settings
    }

    fn client(&self, also_trusted: &[&str]) -> GraphClient {
        GraphClient::new(self.settings(also_trusted), secret()).unwrap()
    }

    async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.emu.ca_pem.as_bytes()).unwrap()])
            .build()
            .unwrap();
        let mut request = http.request(method, format!("{}/_emulator/{path}", self.emu.base_url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    /// A client trusting the emulator only, with `max_attempts` per request.
    fn client_with_attempts(&self, max_attempts: u32) -> GraphClient {
        let mut settings = self.settings(&[]);
        settings.max_attempts = max_attempts;
        GraphClient::new(settings, secret()).unwrap()
    }

    /// How many requests for users (lists, delta) the emulator received.
    async fn user_requests(&self) -> usize {
        self.log()
            .await
            .iter()
            .filter(|r| r["path"].as_str().unwrap().starts_with("/v1.0/users"))
            .count()
    }

    async fn faults(&self, spec: Value) {
        self.control(Method::POST, "faults", Some(spec)).await;
    }

    /// The Graph and token requests the emulator received.
    async fn log(&self) -> Vec<Value> {
        let log = self.control(Method::GET, "requests", None).await;
        log["value"].as_array().unwrap().clone()
    }
}

fn secret() -> Credential {
    Credential::Secret(SecretString::from(SECRET))
}

/// `call` within [`BOUND`]: a hang fails the test instead of the run.
async fn bounded<T>(call: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, call)
        .await
        .expect("the call hung past the bound")
}

/// Every error an admin sees carries a help line and no control character.
fn assert_admin_error(err: &Error) {
    assert!(!err.help().is_empty(), "{err:?}");
    let shown = format!("{err}\nhelp: {}", err.help());
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\n'),
        "{shown:?}"
    );
}

/// Which kind of link `err` refused, if it is a refused link.
fn refused(err: &Error) -> Option<LinkKind> {
    match err {
        Error::UntrustedLink { kind, .. } => Some(*kind),
        _ => None,
    }
}

/// A hostile server that answers every request with a bearer token and a page of users,
/// as a Graph that an attacker runs would.
async fn fake_graph() -> Hostile {
    Hostile::start(|_| {
        Answer::json(
            200,
            json!({"access_token": "x.e30.x", "expires_in": 3599, "value": []}),
        )
    })
    .await
}

// --- 0. A read whose pages cannot be kept stops there -----------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_read_stops_at_the_page_its_taker_refuses() {
    let lab = lab().await;
    let graph = lab.client(&[]);
    lab.control(Method::DELETE, "requests", None).await;
    let mut pages = Vec::new();
    let err = bounded(graph.users_pages(&mut |page| {
        pages.push(page.len());
        std::ops::ControlFlow::Break(())
    }))
    .await
    .unwrap_err();
    assert!(matches!(&err, Error::Stopped { users: 999, .. }), "{err:?}");
    assert_admin_error(&err);
    assert_eq!(pages, [999]);
    // The second page (one more user) is never asked for.
    let log = lab.control(Method::GET, "requests", None).await;
    let listed = log["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/v1.0/users?"))
        })
        .count();
    assert_eq!(listed, 1, "{log:#}");
}

// --- 1. The token follows no link to another host or over http -------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_link_to_another_host_is_refused_and_that_host_never_sees_the_token() {
    let lab = lab().await;
    let other = fake_graph().await;
    let port = lab.emu.addr.port();
    for origin in [
        other.base_url.clone(),
        // Same port, other host name (the emulator's certificate covers it).
        format!("https://localhost:{port}"),
    ] {
        lab.faults(json!({"linkOrigin": origin, "pathPrefix": "/v1.0/users"}))
            .await;
        let graph = lab.client(&[&other.ca_pem]);
        let err = bounded(graph.users()).await.unwrap_err();
        assert!(
            matches!(&err, Error::UntrustedLink { kind: LinkKind::Next, link, .. } if link.starts_with(&origin)),
            "{origin}: {err:?}"
        );
        assert!(!err.to_string().contains("skiptoken"), "{err}");
        assert_admin_error(&err);
    }
    assert!(other.requests().is_empty(), "{:?}", other.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_link_over_http_is_refused_and_the_listener_receives_nothing() {
    let lab = lab().await;
    let plain = Plain::start().await;
    lab.faults(json!({"linkOrigin": plain.url, "pathPrefix": "/v1.0/users"}))
        .await;
    let err = bounded(lab.client(&[]).users()).await.unwrap_err();
    assert_eq!(refused(&err), Some(LinkKind::Next), "{err:?}");
    // The same host and port over http is just as refused.
    let same = lab.emu.base_url.replace("https://", "http://");
    lab.faults(json!({"linkOrigin": same, "pathPrefix": "/v1.0/users"}))
        .await;
    let err = bounded(lab.client(&[]).users()).await.unwrap_err();
    assert!(matches!(err, Error::UntrustedLink { .. }), "{err:?}");
    assert_eq!(plain.received(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_links_elsewhere_are_never_returned_for_storing_nor_followed() {
    let lab = lab().await;
    let other = fake_graph().await;
    let plain = Plain::start().await;
    let graph = lab.client(&[&other.ca_pem]);
    for origin in [other.base_url.as_str(), plain.url.as_str()] {
        lab.faults(json!({"linkOrigin": origin, "pathPrefix": "/v1.0/users/delta"}))
            .await;
        // `$deltatoken=latest` answers with a deltaLink elsewhere: not returned.
        let err = bounded(graph.delta_link()).await.unwrap_err();
        assert_eq!(refused(&err), Some(LinkKind::Delta), "{err:?}");
        assert!(!err.stored_link_unusable());
        // A full delta round from a good link: its pages (100 users each) link elsewhere.
        let first = format!("{}/v1.0/users/delta?$select=id", lab.emu.base_url);
        let err = bounded(graph.users_since(&first, USERS)).await.unwrap_err();
        assert_eq!(refused(&err), Some(LinkKind::Next), "{err:?}");
        assert_admin_error(&err);
    }
    assert!(other.requests().is_empty());
    assert_eq!(plain.received(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_delta_link_elsewhere_is_dropped_before_anything_is_sent() {
    let lab = lab().await;
    let other = fake_graph().await;
    let plain = Plain::start().await;
    let graph = lab.client(&[&other.ca_pem]);
    lab.control(Method::DELETE, "requests", None).await;
    for stored in [
        format!("{}/v1.0/users/delta?$deltatoken=stolen", other.base_url),
        format!("{}/v1.0/users/delta?$deltatoken=stolen", plain.url),
        "not a link".to_string(),
    ] {
        let err = bounded(graph.users_since(&stored, USERS))
            .await
            .unwrap_err();
        // The caller (pipeline::reads) branches on this: drop the link, read every user.
        assert!(err.stored_link_unusable(), "{stored}: {err:?}");
        assert!(!err.to_string().contains("stolen"), "{err}");
        assert_admin_error(&err);
    }
    assert!(other.requests().is_empty());
    assert_eq!(plain.received(), (0, 0));
    // Not even a token was asked for: the link is refused before any request.
    assert!(lab.log().await.is_empty());
}

// --- 2. Cleartext endpoints are refused -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_graph_url_or_authority_is_refused_before_anything_is_sent() {
    let lab = lab().await;
    let plain = Plain::start().await;
    for (graph_url, authority, setting) in [
        (plain.url.clone(), lab.emu.base_url.clone(), "graph_url"),
        (lab.emu.base_url.clone(), plain.url.clone(), "authority"),
    ] {
        let mut settings = lab.settings(&[]);
        settings.graph_url = graph_url;
        settings.authority = authority;
        let err = match GraphClient::new(settings, secret()) {
            Ok(_) => panic!("{setting} over http was accepted"),
            Err(err) => err,
        };
        assert!(
            matches!(err, Error::Cleartext { setting: s, .. } if s == setting),
            "{err:?}"
        );
        assert!(err.help().contains("https://"));
    }
    assert_eq!(plain.received(), (0, 0));
}

// --- 3. The token request follows no redirect -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_from_the_token_endpoint_is_an_error_and_the_secret_goes_nowhere() {
    let lab = lab().await;
    let other = fake_graph().await;
    let target = format!("{}/steal/oauth2/v2.0/token?code=leak", other.base_url);
    lab.faults(json!({"tokenRedirect": target})).await;
    let graph = lab.client(&[&other.ca_pem]);
    let err = bounded(graph.token_roles()).await.unwrap_err();
    let Error::Redirected {
        status, location, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(*status, 307);
    assert_eq!(
        location,
        &format!("{}/steal/oauth2/v2.0/token", other.base_url)
    );
    assert!(!err.to_string().contains("leak"));
    assert_admin_error(&err);
    assert!(other.requests().is_empty(), "{:?}", other.requests());
    // Graph calls fail the same way (the token is needed first), and are not retried.
    let err = bounded(graph.users()).await.unwrap_err();
    assert!(matches!(err, Error::Redirected { .. }), "{err:?}");
    assert!(!other.received_credential());
}

// --- 4. Server numbers neither panic nor hang --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_retry_after_fails_the_request_cleanly_without_waiting() {
    let lab = lab().await;
    let huge = [
        "1e30",
        "99999999999999999999",
        "1e19",
        "100000000",
        "Tue, 31 Dec 2999 23:59:59 GMT",
    ];
    for kind in ["429", "503"] {
        for value in huge {
            lab.faults(json!({"rate": 1.0, "kinds": [kind], "retryAfter": value, "pathPrefix": "/v1.0/users"}))
                .await;
            let started = std::time::Instant::now();
            let err = bounded(lab.client(&[]).users()).await.unwrap_err();
            let Error::WaitTooLong { status, asked, .. } = &err else {
                panic!("{kind} {value}: {err:?}");
            };
            assert_eq!(status.to_string(), kind);
            assert_eq!(asked, value);
            assert!(err.to_string().contains("5-minute maximum"), "{err}");
            assert_admin_error(&err);
            // Failed at the first answer: no retry, no pause.
            assert!(started.elapsed() < Duration::from_secs(10));
        }
    }
    // The token endpoint's Retry-After is held to the same maximum.
    lab.faults(json!({"rate": 1.0, "kinds": ["429"], "retryAfter": "1e30", "pathPrefix": format!("/{}/oauth2", lab.emu.tenant_id)}))
        .await;
    let err = bounded(lab.client(&[]).token_roles()).await.unwrap_err();
    assert!(
        matches!(err, Error::WaitTooLong { status: 429, .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_within_the_maximum_is_honoured_and_the_retries_are_bounded() {
    let lab = lab().await;
    lab.faults(
        json!({"rate": 1.0, "kinds": ["503"], "retryAfter": "0.2", "pathPrefix": "/v1.0/users"}),
    )
    .await;
    lab.control(Method::DELETE, "requests", None).await;
    let graph = lab.client_with_attempts(3);
    let started = std::time::Instant::now();
    let err = bounded(graph.users()).await.unwrap_err();
    assert_eq!(err.status(), Some(503), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    let tries = lab.user_requests().await;
    assert_eq!(tries, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_retried_a_bounded_number_of_times() {
    let lab = lab().await;
    lab.faults(json!({"rate": 1.0, "kinds": ["drop"], "pathPrefix": "/v1.0/users"}))
        .await;
    lab.control(Method::DELETE, "requests", None).await;
    let graph = lab.client_with_attempts(2);
    let err = bounded(graph.users()).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    let tries = lab.user_requests().await;
    assert_eq!(tries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_token_lifetimes_and_throttle_percentages_are_clamped_not_fatal() {
    let lab = lab().await;
    for expires_in in [
        json!(18446744073709551615u64),
        json!("18446744073709551615"),
        json!(1e300),
        json!(-5),
    ] {
        lab.faults(json!({"expiresIn": expires_in, "limitPercentage": "1e308"}))
            .await;
        let graph = lab.client(&[]);
        bounded(graph.token_roles())
            .await
            .unwrap_or_else(|e| panic!("{expires_in}: {e}"));
        // The cached token is used again, and a percentage far past 1.8 only slows pacing.
        let users = bounded(graph.users())
            .await
            .unwrap_or_else(|e| panic!("{expires_in}: {e}"));
        assert_eq!(users.len(), USERS);
    }
}

// --- 7. Unbounded answers ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_link_loop_is_refused_at_the_first_repeat() {
    let lab = lab().await;
    lab.faults(json!({"nextLinkLoop": true, "pathPrefix": "/v1.0/users"}))
        .await;
    lab.control(Method::DELETE, "requests", None).await;
    let graph = lab.client(&[]);
    let err = bounded(graph.users()).await.unwrap_err();
    assert!(matches!(err, Error::LinkLoop { .. }), "{err:?}");
    assert_admin_error(&err);
    let first = format!("{}/v1.0/users/delta?$select=id", lab.emu.base_url);
    let err = bounded(graph.users_since(&first, USERS)).await.unwrap_err();
    assert!(matches!(err, Error::LinkLoop { .. }), "{err:?}");
    // The first page twice at most (the emulator may spell the link differently once).
    let pages = lab.user_requests().await;
    assert!(pages <= 4, "{pages}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_past_the_body_cap_is_refused() {
    let lab = lab().await;
    let over = cloud::MAX_BODY_BYTES as u64 + 1024 * 1024;
    lab.faults(json!({"bodyBytes": over, "pathPrefix": "/v1.0/users"}))
        .await;
    let err = bounded(lab.client(&[]).users()).await.unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { limit, .. } if limit == cloud::MAX_BODY_BYTES),
        "{err:?}"
    );
    assert_admin_error(&err);
    // Just under the cap is read (padding is whitespace before the JSON).
    lab.faults(json!({"bodyBytes": 4 * 1024 * 1024, "pathPrefix": "/v1.0/organization"}))
        .await;
    bounded(lab.client(&[]).verified_domains()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_ids_from_graph_are_percent_encoded_in_the_members_path() {
    let graph = Hostile::start(|req| {
        if req.path.contains("/oauth2/v2.0/token") {
            return Answer::json(200, json!({"access_token": "x.e30.x", "expires_in": 3599}));
        }
        if req.path.starts_with("/v1.0/directoryRoles?") {
            return Answer::json(
                200,
                json!({"value": [{"id": "../../users/x?$select=all#", "displayName": "Odd"}]}),
            );
        }
        Answer::json(200, json!({"value": []}))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &graph.ca_pem).unwrap();
    let mut settings = GraphSettings::new(&graph.base_url, &graph.base_url, "t", CLIENT_ID);
    settings.ca_file = Some(ca);
    let client = GraphClient::new(settings, secret()).unwrap();
    bounded(client.users()).await.unwrap();
    let members: Vec<String> = graph
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.contains("/members"))
        .collect();
    assert_eq!(
        members,
        ["/v1.0/directoryRoles/..%2F..%2Fusers%2Fx%3F%24select%3Dall%23/members?$select=id"]
    );
}

// --- 8. Small findings ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_failure_at_the_token_endpoint_keeps_its_cause() {
    let lab = lab().await;
    let untrusted = fake_graph().await;
    let mut settings = lab.settings(&[]);
    settings.authority = untrusted.base_url.clone();
    let graph = GraphClient::new(settings, secret()).unwrap();
    let err = bounded(graph.token_roles()).await.unwrap_err();
    let Error::Transport { reason, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(reason.contains("certificate"), "{reason}");
    assert!(untrusted.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_without_a_pem_certificate_is_refused_naming_the_file() {
    let lab = lab().await;
    for (name, content) in [
        ("empty.pem", &b""[..]),
        ("der.cer", &[0x30, 0x82, 0x01, 0x0a][..]),
        ("notes.txt", &b"this is not a certificate\n"[..]),
    ] {
        let path = lab.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let mut settings = lab.settings(&[]);
        settings.ca_file = Some(path.clone());
        let err = match GraphClient::new(settings, secret()) {
            Ok(_) => panic!("{name} was taken as a trust store"),
            Err(err) => err,
        };
        assert!(
            matches!(&err, Error::CaFile { path: p, .. } if p == &path),
            "{err:?}"
        );
        assert!(err.to_string().contains(name), "{err}");
        assert!(err.help().contains("PEM"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_sequences_in_server_errors_never_reach_the_message() {
    let lab = lab().await;
    let escape = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[31mred\u{202e}";
    lab.faults(
        json!({"rate": 1.0, "kinds": ["503"], "errorMessage": escape, "pathPrefix": "/v1.0/users"}),
    )
    .await;
    let err = bounded(lab.client_with_attempts(1).users())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pwned"), "{err}");
    assert_admin_error(&err);
    // The token endpoint's error and description, from a hostile authority.
    let authority = Hostile::start(move |_| {
        Answer::json(
            400,
            json!({"error": format!("invalid_client{escape}"), "error_description": format!("AADSTS7000215: bad{escape}\r\nTrace ID: x"), "error_codes": [7000215]}),
        )
    })
    .await;
    let mut settings = lab.settings(&[&authority.ca_pem]);
    settings.authority = authority.base_url.clone();
    let err = bounded(GraphClient::new(settings, secret()).unwrap().token_roles())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Token { status: 400, .. }), "{err:?}");
    assert!(err.to_string().contains("AADSTS7000215: bad"), "{err}");
    assert!(!err.to_string().contains("Trace ID"), "{err}");
    assert_admin_error(&err);
}

// --- 1, end to end: a stored delta link elsewhere costs a full read, never the token ----

/// Whether the runs since the last call read the users in full (a GET of `/v1.0/users?…`)
/// rather than by their delta; forgets the emulator's request log.
async fn users_listed(w: &common::world::World) -> bool {
    let log = w.control(Method::GET, "/requests", None).await;
    w.control(Method::DELETE, "/requests", None).await;
    log["value"].as_array().unwrap().iter().any(|r| {
        r["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/v1.0/users?"))
    })
}

/// The cloud's stored delta link in the state store at `db`, replaced by `replace` first
/// when given.
fn stored_delta_link(db: &std::path::Path, replace: Option<&str>) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    let text: String = conn
        .query_row(
            "SELECT value FROM watermarks WHERE source = 'cloud:users'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mut mark: Value = serde_json::from_str(&text).unwrap();
    if let Some(link) = replace {
        mark["delta_link"] = Value::String(link.to_string());
        conn.execute(
            "UPDATE watermarks SET value = ?1 WHERE source = 'cloud:users'",
            [mark.to_string()],
        )
        .unwrap();
    }
    mark["delta_link"].as_str().unwrap().to_string()
}

// Needs the directory lab (scripts/lab-up.sh; `source $LAB/lab.env`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_a_stored_delta_link_elsewhere_reads_in_full_and_sends_it_nothing() {
    use common::world::{eligible_partners, text, world};
    let w = world(&eligible_partners(1), "").await;
    let other = fake_graph().await;
    let run = || {
        let out = w.b2bsync(&["run"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        out
    };
    run();
    assert!(users_listed(&w).await);
    let db = w.dir.path().join("state/b2bsync.db");
    let good = stored_delta_link(&db, None);
    let rest = good.strip_prefix(&w.emulator.base_url).unwrap();
    stored_delta_link(&db, Some(&format!("{}{rest}", other.base_url)));

    let out = run();
    assert!(users_listed(&w).await);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stored delta link is dropped"), "{stderr}");
    assert!(other.requests().is_empty(), "{:?}", other.requests());
    // The full read stored a link of the configured Graph again: the next run reads changes.
    assert!(stored_delta_link(&db, None).starts_with(&w.emulator.base_url));
    run();
    assert!(!users_listed(&w).await);
}
