//! Several domain controllers (issue 14): `[ldap] urls` whose first DC does not answer, a
//! DC stopped in the middle of a run, and a read from another DC than last time, against the
//! lab's two Samba DCs of one domain (scripts/samba-up.sh and scripts/samba-dc2-up.sh; the
//! second is `AD_DC2_LDAPS_URL` in lab.env). Accounts are created on the first DC and copied
//! to the second with `samba-tool drs replicate`, as AD's own replication would within minutes.
//!
//! Only the second DC is ever stopped (and started again), so that the first, which every
//! other test uses, stays up.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use b2bsync::state::{Phase, Store};
use common::lab_var;
use common::world::{Partner, Tenancy, World, assert_each_invited_once, text, world};
use serde_json::{Value, json};

/// Synced partners with an external address: each run writes AD `mail` and invites them.
fn partners(n: usize) -> Vec<Partner> {
    (0..n)
        .map(|i| {
            Partner::new(
                &format!("f{i:02}"),
                &format!("Failover Partner {i}"),
                Some(&format!("f{i:02}@fabrikam.example")),
                Tenancy::Synced,
            )
        })
        .collect()
}

/// Points the world's configuration at `urls` instead of its single `url`.
fn use_urls(w: &World, urls: &[String]) {
    let path = w.config_path();
    let text = std::fs::read_to_string(&path).expect("config");
    let one = format!("url = \"{}\"", lab_var("AD_LDAPS_URL"));
    let list: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let line = format!("urls = [{}]", list.join(", "));
    let text = match text.lines().find(|l| l.starts_with("urls = [")) {
        Some(old) => text.replacen(old, &line, 1),
        None => {
            assert!(text.contains(&one), "{text}");
            text.replacen(&one, &line, 1)
        }
    };
    std::fs::write(&path, text).expect("write config");
}

/// The sync cycle carries the AD `mail` written to the cloud; the next run invites each
/// partner once.
async fn invited_after_the_sync_cycle(w: &World, expected: usize) {
    w.connect_cycle().await;
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_each_invited_once(w, expected).await;
}

fn dc1() -> String {
    lab_var("AD_LDAPS_URL")
}

fn dc2() -> String {
    lab_var("AD_DC2_LDAPS_URL")
}

/// Copies the domain's changes from one DC to the other now (`drs replicate` on the
/// receiving DC's database).
fn replicate(to_dc2: bool) {
    let (dest, src, conf) = if to_dc2 {
        (
            lab_var("AD_DC2_ADDR"),
            lab_var("AD_ADDR"),
            lab_var("AD_DC2_SAMBA_CONF"),
        )
    } else {
        (
            lab_var("AD_ADDR"),
            lab_var("AD_DC2_ADDR"),
            lab_var("AD_SAMBA_CONF"),
        )
    };
    let out = Command::new("samba-tool")
        .args(["drs", "replicate", &dest, &src, &lab_var("AD_BASE_DN")])
        .args(["--local", "-s", &conf])
        .output()
        .expect("samba-tool");
    assert!(
        out.status.success(),
        "replication {src} -> {dest} failed: {}",
        text(&out)
    );
}

/// Runs one of the lab's dc2 scripts against this lab (its directory and addresses).
fn dc2_script(name: &str, args: &[&str]) -> std::process::Output {
    Command::new(format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR")))
        .args(args)
        .env("B2BSYNC_LAB", lab_var("LAB_DIR"))
        .env("LAB_AD_ADDR", lab_var("AD_ADDR"))
        .env("LAB_AD_DC2_ADDR", lab_var("AD_DC2_ADDR"))
        .output()
        .expect("run lab script")
}

/// Starts the second DC again when dropped (also when the test fails), so that the next
/// test finds the lab as it was.
struct Dc2Restarts;

impl Drop for Dc2Restarts {
    fn drop(&mut self) {
        let out = dc2_script("samba-dc2-up.sh", &["--start"]);
        if !out.status.success() {
            eprintln!("could not start the second DC again: {}", text(&out));
        }
    }
}

/// The run's log events (JSON lines) whose message contains `message`.
fn events<'a>(log: &'a str, message: &'a str) -> impl Iterator<Item = Value> + 'a {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(move |e| e["message"].as_str().is_some_and(|m| m.contains(message)))
}

/// Whether the run logged `message` with `field` containing `value`.
fn logged(log: &str, message: &str, field: &str, value: &str) -> bool {
    events(log, message).any(|e| e[field].as_str().is_some_and(|v| v.contains(value)))
}

/// Directory writes a run made, from its debug log.
fn ldap_writes(log: &str) -> usize {
    events(log, "LDAP write done").count()
}

// Issue 14: `urls` whose first DC refuses connections: the run uses the next.
#[tokio::test(flavor = "multi_thread")]
async fn urls_whose_first_dc_refuses_connections_use_the_next() {
    let w = world(&partners(2), "").await;
    // A port nothing listens on: the connection is refused at once.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("ldaps://127.0.0.1:{}", l.local_addr().expect("addr").port())
    };
    use_urls(&w, &[closed.clone(), dc1()]);
    let out = w.b2bsync(&["run"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        logged(&log, "does not answer", "url", &closed),
        "the refused DC is logged: {log}"
    );
    assert!(
        logged(&log, "Using this domain controller", "url", &dc1()),
        "the DC used is logged: {log}"
    );
    for sam in ["f00", "f01"] {
        assert_eq!(
            w.ad_mail(sam).await.as_deref(),
            Some(format!("{sam}@fabrikam.example").as_str())
        );
    }
    invited_after_the_sync_cycle(&w, 2).await;
}

// Issue 14: incremental marks are per DC: after incremental reads from dc1, a read from dc2
// is full, says why, and (replication having caught up) sends nothing again.
//
// Both two-DC scenarios run in one test, one after the other: the second stops dc2, which the
// first reads from.
#[tokio::test(flavor = "multi_thread")]
async fn two_dcs_marks_per_dc_then_a_dc_stopped_in_the_middle_of_a_run() {
    a_read_from_another_dc_than_last_time_is_full_and_says_why().await;
    a_dc_stopped_in_the_middle_of_a_run().await;
}

async fn a_read_from_another_dc_than_last_time_is_full_and_says_why() {
    let w = world(&partners(2), "").await;
    // The same DCs throughout (the read identity names the set, not the order): dc1 first.
    use_urls(&w, &[dc1(), dc2()]);
    let first = w.b2bsync(&["run"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let second = w.b2bsync(&["run"]);
    let log = text(&second);
    assert_eq!(second.status.code(), Some(0), "{log}");
    assert!(
        logged(&log, "read the directory", "read", "changes"),
        "the second run on dc1 reads only the changes: {log}"
    );
    // dc2 now holds the partners and what the first run wrote.
    replicate(true);
    use_urls(&w, &[dc2(), dc1()]);
    let third = w.b2bsync(&["run"]);
    let log = text(&third);
    assert_eq!(third.status.code(), Some(0), "{log}");
    assert!(
        logged(&log, "Using this domain controller", "url", &dc2()),
        "{log}"
    );
    assert!(
        logged(
            &log,
            "reading the directory in full",
            "why",
            "belongs to another database"
        ),
        "the full read says why: {log}"
    );
    assert!(logged(&log, "read the directory", "read", "full"), "{log}");
    assert_eq!(ldap_writes(&log), 0, "nothing written again: {log}");
    invited_after_the_sync_cycle(&w, 2).await;
}

// Issue 14: the DC a run reads from stops before the run writes: the run goes on against the
// other DC (or stops cleanly), the journal tells the truth, and the next run sends nothing
// twice.
async fn a_dc_stopped_in_the_middle_of_a_run() {
    const N: usize = 4;
    let w = world(&partners(N), "[apply]\nconcurrency = 1\n").await;
    replicate(true);
    use_urls(&w, &[dc2(), dc1()]);
    // Slow Graph answers: the run spends seconds between its directory read and its writes.
    w.control(
        reqwest::Method::POST,
        "/faults",
        Some(json!({ "latencyMs": [500, 700], "rate": 0.0, "kinds": [] })),
    )
    .await;
    let restart = Dc2Restarts;
    let mut child = w
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            // The directory is read (a few entries, milliseconds) while Graph answers
            // slowly: once the delta link's answer is logged, the run has read dc2 and has
            // two more slow Graph reads (roles, users) before its first write. Waiting for
            // the end of the reads instead left dc2 about 20 ms to stop in, which it did
            // not always (the writes were all done on dc2).
            if line.contains("Graph request answered") && line.contains("/users/delta") {
                let _ = tx.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the run read the directory and asked Graph for the delta link");
    let stopped = Instant::now();
    let down = dc2_script("samba-dc2-down.sh", &[]);
    assert!(down.status.success(), "{}", text(&down));
    eprintln!("dc2 stopped in {:?}", stopped.elapsed());
    let status = child.wait().expect("wait");
    let log = reader.join().expect("log");
    // It goes on against dc1: exit 0, or 2 when the write in flight as dc2 stopped has an
    // outcome only the next run can settle (exit 2: some actions failed or need a human);
    // or it stops with a help line.
    let went_on = matches!(status.code(), Some(0) | Some(2));
    assert!(
        went_on || log.contains("help:"),
        "the run goes on or stops with a help line: {:?} {log}",
        status.code()
    );
    assert!(
        logged(&log, "Using this domain controller", "url", &dc2()),
        "the run began on dc2: {log}"
    );
    if went_on {
        assert!(
            logged(&log, "Using this domain controller", "url", &dc1()),
            "the run went on against dc1: {log}"
        );
    }

    // The journal: every write that was started ended done or failed, or is open only
    // when its outcome is unknown; every done directory write is on dc1 now (dc2 is down).
    let store = Store::open(&w.dir.path().join("state/b2bsync.db")).expect("state");
    let entries = store.journal_entries(None).expect("journal");
    for e in entries.iter().filter(|e| e.phase == Phase::Started) {
        let ended = entries.iter().any(|x| {
            x.action_key == e.action_key && matches!(x.phase, Phase::Done | Phase::Failed)
        });
        assert!(ended || log.contains("outcome unknown"), "{e:?}\n{log}");
    }
    drop(store);

    // The next run (dc2 still down) settles what is open, finishes, and sends nothing twice.
    let next = w.b2bsync(&["run"]);
    let next_log = text(&next);
    assert_eq!(next.status.code(), Some(0), "{next_log}");
    // Its mark is dc2's: the read from dc1 is full, and says why.
    assert!(
        logged(
            &next_log,
            "reading the directory in full",
            "why",
            "belongs to another database"
        ),
        "{next_log}"
    );
    let again = w.b2bsync(&["run"]);
    let again_log = text(&again);
    assert_eq!(again.status.code(), Some(0), "{again_log}");
    assert_eq!(ldap_writes(&again_log), 0, "converged: {again_log}");
    for i in 0..N {
        let sam = format!("f{i:02}");
        assert_eq!(
            w.ad_mail(&sam).await.as_deref(),
            Some(format!("{sam}@fabrikam.example").as_str()),
            "{sam} on dc1"
        );
    }
    invited_after_the_sync_cycle(&w, N).await;
    drop(restart);
}
