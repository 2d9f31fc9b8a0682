//! Nothing leaks: the generated passwords, the LDAP bind password, the Graph client secret
//! and the access tokens appear in no log line at any level (trace included, for every
//! crate), no plan, report, journal, state file or error message.
//!
//! Two tests: one drives the pipeline in-process over small in-memory fakes of the two I/O
//! traits, so it can see every password `apply` generated and search the captured trace
//! logs and the state file for them; the other runs the real binary against the lab's Samba
//! AD and the emulator with `B2BSYNC_LOG=trace` and searches every output it wrote.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use b2bsync::apply;
use b2bsync::apply::fakes::{FakeCloud, FakeDirectory};
use b2bsync::mapping::{Mapping, MappingSet};
use b2bsync::model::{Anchor, CloudUser, SourceAccount};
use b2bsync::pipeline::{self, Inputs};
use common::world::{Partner, SECRET, Tenancy, text, world};

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn read_all(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(read_all(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Whether `haystack` holds a JWT: a base64url header starting `eyJ` (`{"`), a dot, and a
/// payload starting `eyJ` too. Three random base64 characters in a binary state store can
/// spell `eyJ` (anchors and ids are base64); a header, a dot and a payload cannot by chance.
fn contains_jwt(haystack: &[u8]) -> bool {
    let b64url = |c: &u8| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_';
    haystack.windows(3).enumerate().any(|(i, w)| {
        if w != b"eyJ" {
            return false;
        }
        let header = haystack[i..].iter().take_while(|c| b64url(c)).count();
        header >= 10 && haystack[i + header..].starts_with(b".eyJ")
    })
}

#[test]
fn a_jwt_is_found_and_random_base64_is_not() {
    assert!(contains_jwt(
        b"x Bearer eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwcyJ9.c2ln y"
    ));
    assert!(!contains_jwt(b"anchor=eyJ4kQ2mZ0aBxw== id=eyJ.eyJ"));
}

#[test]
fn generated_passwords_never_leave_the_directory_call() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .json()
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let n = 40;
    let mut accounts = Vec::new();
    let mut users = Vec::new();
    for i in 0..n {
        let anchor = Anchor::from_bytes(uuid::Uuid::new_v4().as_bytes());
        accounts.push(SourceAccount {
            dn: format!("CN=Partner {i},OU=Partners,DC=lab,DC=example,DC=com"),
            object_guid: Some(anchor.clone()),
            consistency_guid: None,
            account_name: Some(format!("p.{i}")),
            user_principal_name: Some(format!("p.{i}@lab.example.com")),
            display_name: Some(format!("Partner {i}")),
            mail: Some(format!("p{i}@fabrikam.example")),
            user_account_control: Some(512),
            admin_count: false,
            locked: false,
            member_of: vec![],
            password_changed: None,
            attributes: BTreeMap::from([(
                "otherMailbox".to_string(),
                vec![format!("p{i}@fabrikam.example")],
            )])
            .into(),
            exchange: None,
        });
        users.push(CloudUser {
            id: format!("00000000-0000-4000-8000-{i:012}"),
            user_principal_name: format!("p.{i}@lab.example.com"),
            mail: Some(format!("p{i}@fabrikam.example")),
            on_premises_sync_enabled: Some(true),
            on_premises_immutable_id: Some(anchor.as_str().to_string()),
            external_user_state: Some("Accepted".into()),
            ..CloudUser::default()
        });
    }
    let mapping = Mapping::parse(
        Path::new("mappings/partners.toml"),
        r#"address = "lower(trim(otherMailbox))"
[source]
attributes = ["otherMailbox"]
[scope]
base_dns = ["OU=Partners,DC=lab,DC=example,DC=com"]
[join]
anchor = "objectGUID"
"#,
    )
    .expect("mapping");
    let inputs = Inputs {
        mappings: MappingSet::from_mappings(vec![mapping]).expect("set"),
        limits: b2bsync::guard::Limits {
            allow_over_threshold: true,
            ..Default::default()
        },
        policy: Default::default(),
        invitation: Default::default(),
        verified_domains: None,
        reads: Default::default(),
        force_full_read: false,
        read_identity: "fake".into(),
    };
    // Every password the fake directory was asked to set is kept, to be looked for below.
    let directory = FakeDirectory::with(accounts);
    // A tenant where every user has already accepted: the plan randomizes every password.
    let cloud = FakeCloud::with(users);
    *cloud.domains.lock().unwrap() = vec!["lab.example.com".into()];
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let session = pipeline::Session::begin(&db, "run").unwrap();
    let run_id = session.run_id().to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime
        .block_on(session.run(
            &inputs,
            &directory,
            &cloud,
            &apply::Options::default(),
            true,
            None,
            &|_| {},
        ))
        .expect("run");
    let pipeline::RunEnd::Applied(outcome) = result.end else {
        panic!("not applied");
    };
    // Each randomization is followed by its sign-in session revocation (issue 19).
    assert_eq!(
        outcome.done(),
        2 * n,
        "every password randomized, every session revoked"
    );
    assert_eq!(cloud.revocations.lock().unwrap().len(), n);
    let passwords = directory.passwords.lock().unwrap().clone();
    assert_eq!(passwords.len(), n);
    let unique: std::collections::HashSet<_> = passwords.iter().collect();
    assert_eq!(unique.len(), n, "every password is different");
    drop(session);

    let logs = capture.0.lock().unwrap().clone();
    assert!(
        logs.len() > 1000,
        "trace logging captured little: the test proves nothing"
    );
    let plan_json = serde_json::to_vec(&result.plan).unwrap();
    let report = b2bsync::report::run_summary(&run_id, &result.plan, &outcome, &result.reconciled);
    let files = read_all(dir.path());
    for pw in &passwords {
        assert!(
            !contains(&logs, pw),
            "a generated password is in the trace logs"
        );
        assert!(
            !contains(&files, pw),
            "a generated password is in the state store"
        );
        assert!(
            !contains(&plan_json, pw),
            "a generated password is in the plan"
        );
        assert!(
            !report.contains(pw.as_str()),
            "a generated password is in the report"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_in_any_output_of_a_whole_lifecycle_at_trace_level() {
    let partners = vec![
        Partner::new(
            "adams",
            "Ana Adams",
            Some("ana@fabrikam.example"),
            Tenancy::Synced,
        ),
        Partner::new(
            "chen",
            "Wei Chen",
            Some("wei@northwind.example"),
            Tenancy::CloudOnly,
        ),
        Partner::new(
            "evans",
            "Eve Evans",
            Some("eve@fabrikam.example"),
            Tenancy::CloudOnlyMailbox,
        ),
    ];
    let w = world(&partners, "").await;
    let ldap_password = common::lab_var("AD_SVC_PASSWORD");
    let mut outputs: Vec<u8> = Vec::new();
    let mut run = |args: &[&str]| {
        let out = w
            .command(args)
            .arg("-vv")
            .env("B2BSYNC_LOG", "trace")
            .output()
            .expect("run");
        assert!(matches!(out.status.code(), Some(0 | 2)), "{}", text(&out));
        outputs.extend(&out.stdout);
        outputs.extend(&out.stderr);
    };
    let plan_json = w.dir.path().join("plan.json");
    let plan_csv = w.dir.path().join("plan.csv");
    run(&["check"]);
    run(&[
        "plan",
        "--out",
        plan_json.to_str().unwrap(),
        "--csv",
        plan_csv.to_str().unwrap(),
    ]);
    run(&["run"]);
    w.connect_cycle().await;
    run(&["run"]);
    w.accept_pending().await;
    run(&["run"]);
    run(&["status", "--format", "json"]);
    run(&["report", "--format", "json"]);
    // A bad secret's error message must not echo it either.
    let out = w
        .command(&["check"])
        .env("WORLD_GRAPH_SECRET", "wrong-secret-value-123")
        .output()
        .expect("run");
    outputs.extend(&out.stdout);
    outputs.extend(&out.stderr);
    assert!(
        contains(&outputs, "trace") || contains(&outputs, "TRACE"),
        "trace logging was not on"
    );
    // The scan covers the troubleshooting events: each Graph request, the token requests,
    // each LDAP search and write, each plan decision.
    for event in [
        "Graph request answered.",
        "Token requested.",
        "LDAP search done.",
        "LDAP write done.",
        "Plan decision.",
    ] {
        assert!(
            contains(&outputs, event),
            "no '{event}' event at trace level"
        );
    }
    let files = read_all(w.dir.path());
    for (name, secret) in [
        ("the Graph client secret", SECRET),
        ("the LDAP bind password", ldap_password.as_str()),
        ("a wrong client secret", "wrong-secret-value-123"),
    ] {
        assert!(!contains(&outputs, secret), "{name} is in the output");
        assert!(
            !contains(&files, secret),
            "{name} is in a file b2bsync wrote"
        );
    }
    // An access token is a JWT: its header and payload always start with `eyJ`.
    assert!(!contains_jwt(&outputs), "an access token is in the output");
    assert!(
        !contains_jwt(&files),
        "an access token is in a file b2bsync wrote"
    );
    for sam in ["adams", "chen"] {
        assert!(!w.old_password_binds(sam).await, "{sam} was not randomized");
    }
}
