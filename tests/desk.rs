//! The migration desk (issue 13), end to end through the `b2bsync` binary against the lab's
//! Samba AD and an in-process Graph emulator: `explain` and `status --accounts` answer per
//! account from the state store; `report`, `plan` and `status` behave as they promise; and
//! `rollback` can be trusted (a dry run writes nothing, a value changed since the run is left
//! alone and reported, the address of an invited user is refused without `--force`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use b2bsync::source::Directory as _;
use common::world::{Partner, Tenancy, World, status_json, text, world};
use common::{Server, admin};
use serde_json::{Value, json};

fn desk_partners() -> Vec<Partner> {
    vec![
        Partner::new(
            "adams",
            "Ana Adams",
            Some("ana.adams@fabrikam.example"),
            Tenancy::Synced,
        ),
        Partner::new(
            "chen",
            "Wei Chen",
            Some("wei.chen@northwind.example"),
            Tenancy::CloudOnly,
        ),
        Partner::new(
            "baker",
            "Bob Baker",
            Some("bob.baker@contoso-partner.example"),
            Tenancy::SyncedWithOnPremUpn,
        ),
        Partner::new(
            "ghost",
            "Gus Ghost",
            Some("gus@fabrikam.example"),
            Tenancy::Missing,
        ),
    ]
}

fn json_of(out: &std::process::Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn explain(w: &World, account: &str) -> Value {
    json_of(&w.b2bsync(&["explain", account, "--format", "json"]))
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_and_the_account_list_answer_per_account_from_the_state_store() {
    let w = world(&desk_partners(), "").await;
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A synced partner whose address is in AD, by its sAMAccountName in another case.
    let adams = explain(&w, &w.sam("adams").to_uppercase());
    assert_eq!(adams["state"], "awaiting_sync", "{adams}");
    assert_eq!(adams["kind"], "synced", "{adams}");
    assert_eq!(adams["account_name"], w.sam("adams").as_str(), "{adams}");
    assert!(adams["anchor"].is_string(), "{adams}");
    assert!(
        adams["next_step"]
            .as_str()
            .unwrap()
            .starts_with("waiting for the sync cycle (Entra Connect or Cloud Sync) since "),
        "{adams}"
    );
    let timeline = adams["timeline"].as_array().unwrap();
    assert!(
        timeline.iter().any(|e| e["action"] == "set_directory_mail"
            && e["phase"] == "done"
            && e["after"]
                .as_str()
                .is_some_and(|a| a.contains("ana.adams@fabrikam.example"))),
        "{adams}"
    );
    // The same account by its external address, its DN and its cloud object id.
    let dn = adams["dn"].as_str().unwrap().to_string();
    let cloud_id = adams["cloud_id"].as_str().unwrap().to_string();
    for q in ["ANA.ADAMS@fabrikam.example", &dn.to_lowercase(), &cloud_id] {
        assert_eq!(explain(&w, q)["key"], adams["key"], "{q}");
    }

    // A cloud-only partner, invited in the first run, by its UPN: named by the UPN.
    let upn = format!("{}@lab.example.com", w.sam("chen"));
    let chen = explain(&w, &upn);
    assert_eq!(chen["state"], "invited", "{chen}");
    assert_eq!(chen["kind"], "cloud_only", "{chen}");
    assert_eq!(chen["upn"], upn.as_str(), "{chen}");
    assert!(
        chen["account"].as_str().unwrap().starts_with(&upn),
        "{chen}"
    );
    let invite = chen["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "invite" && e["phase"] == "done")
        .unwrap_or_else(|| panic!("no invitation in the timeline: {chen}"));
    assert!(invite["request_id"].is_string(), "{invite}");
    assert!(invite["run_id"].is_string(), "{invite}");

    // A blocked partner: the reason and its fix.
    let out = w.b2bsync(&["explain", &w.sam("baker")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = stdout(&out);
    assert!(shown.contains("state:      blocked"), "{shown}");
    assert!(
        shown.contains("reason:     on_premises_user_principal_name"),
        "{shown}"
    );
    assert!(shown.contains("help:       "), "{shown}");
    assert!(
        shown.contains("next step:  none until the reason"),
        "{shown}"
    );

    // Unknown: an error with help, and a non-zero exit.
    let out = w.b2bsync(&["explain", "nobody-at-all"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("error: no account") && stderr(&out).contains("help:"),
        "{}",
        text(&out)
    );

    // The per-account list: one row per account, with what explain says.
    let list = json_of(&w.b2bsync(&["status", "--accounts", "--format", "json"]));
    let rows = list["accounts"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{list}");
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no row named {name}: {list}"))
    };
    let chen_row = row(&upn);
    assert_eq!(chen_row["state"], "invited");
    assert_eq!(chen_row["partner_domain"], "northwind.example");
    assert!(chen_row["invited_at"].is_string(), "{chen_row}");
    assert!(chen_row["accepted_at"].is_null(), "{chen_row}");
    let baker_row = rows
        .iter()
        .find(|r| r["state"] == "blocked")
        .expect("baker's row");
    assert_eq!(baker_row["reason"], "on_premises_user_principal_name");
    assert!(baker_row["help"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(
        row(&format!("{}@lab.example.com", w.sam("adams")))["dn"],
        dn.as_str()
    );
    let domains: Vec<(&str, u64)> = list["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["partner_domain"].as_str().unwrap_or("-"),
                d["accounts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(domains.contains(&("northwind.example", 1)), "{domains:?}");

    // Filters.
    let invited = json_of(&w.b2bsync(&[
        "status",
        "--accounts",
        "--state",
        "invited",
        "--format",
        "json",
    ]));
    assert_eq!(invited["accounts"], json!([chen_row.clone()]));
    let fabrikam = json_of(&w.b2bsync(&[
        "status",
        "--accounts",
        "--domain",
        "FABRIKAM.example",
        "--format",
        "json",
    ]));
    let fab_rows = fabrikam["accounts"].as_array().unwrap();
    assert!(!fab_rows.is_empty(), "{fabrikam}");
    assert!(
        fab_rows
            .iter()
            .all(|r| r["partner_domain"] == "fabrikam.example"),
        "{fabrikam}"
    );
    let out = w.b2bsync(&["status", "--accounts", "--state", "nonsense"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));

    // CSV and table.
    let csv = stdout(&w.b2bsync(&["status", "--accounts", "--format", "csv"]));
    assert!(
        csv.starts_with("name,dn,state,reason,help,partner_domain,invited_at,accepted_at,password_randomized_at,"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 5, "{csv}");
    let table = stdout(&w.b2bsync(&["status", "--accounts"]));
    assert!(
        table.contains("per partner domain") && table.contains("4 accounts"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn report_plan_and_status_do_what_they_promise() {
    let w = world(&desk_partners(), "").await;
    let first = w.b2bsync(&["run"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    // Nothing changed in between: the second run has nothing to do.
    let second = w.b2bsync(&["run"]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let status = status_json(&w.b2bsync(&["status", "--format", "json"]));
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{status}");
    let (run1, run2) = (
        runs[0]["id"].as_str().unwrap(),
        runs[1]["id"].as_str().unwrap(),
    );

    // `report` after a no-op run shows the last run that changed something, and says so.
    let out = w.b2bsync(&["report", "--format", "json"]);
    let rows = json_of(&out);
    assert!(
        stderr(&out).contains(&format!(
            "the latest run {run2} changed nothing; showing run {run1}"
        )),
        "{}",
        text(&out)
    );
    assert!(
        rows.as_array().unwrap().iter().all(|r| r["run_id"] == run1),
        "{rows}"
    );
    // Accounts are named as everywhere: the human name and the DN.
    assert!(
        rows.as_array().unwrap().iter().any(|r| r["account"]
            .as_str()
            .is_some_and(|a| a.starts_with(&format!("{}@lab.example.com (CN=", w.sam("adams"))))),
        "{rows}"
    );
    // A run that changed nothing: the CSV header and a note.
    let out = w.b2bsync(&["report", run2, "--format", "csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        stdout(&out),
        "seq,at,run_id,account,action,phase,before,after,request_id,client_request_id,error,action_key,account_key\n"
    );
    assert!(stderr(&out).contains("changed nothing"), "{}", text(&out));
    // An unknown run is a usage error with help, not an empty success.
    let out = w.b2bsync(&["report", "no-such-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stdout(&out).is_empty(), "{}", text(&out));
    assert!(stderr(&out).contains("help:"), "{}", text(&out));
    // `--format table` is a table, not CSV.
    let table = stdout(&w.b2bsync(&["report", run1, "--format", "table"]));
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("at ") && header.contains("account") && !header.contains(','),
        "{table}"
    );
    assert!(table.contains("set_directory_mail"), "{table}");

    // `status` table: the reasons with their fixes.
    let out = w.b2bsync(&["status"]);
    let shown = stdout(&out);
    let blocked = shown
        .split("blocked because\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no blocked section: {shown}"));
    let mut lines = blocked.lines();
    assert!(
        lines
            .next()
            .is_some_and(|l| l.contains("on_premises_user_principal_name")),
        "{shown}"
    );
    assert!(
        lines
            .next()
            .is_some_and(|l| l.trim_start().starts_with("help: ") && l.len() > 20),
        "{shown}"
    );
    // `status --json` as DESIGN writes it.
    let alias = w.b2bsync(&["status", "--json"]);
    assert_eq!(alias.status.code(), Some(0), "{}", text(&alias));
    assert_eq!(status_json(&alias)["states"], status["states"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_over_a_threshold_exits_4_as_run_does() {
    let w = world(
        &desk_partners(),
        "[limits]\naddress_writes = { max_count = 1, max_percent = 100.0 }\n",
    )
    .await;
    let plan = w.b2bsync(&["plan"]);
    assert_eq!(plan.status.code(), Some(4), "{}", text(&plan));
    let run = w.b2bsync(&["run"]);
    assert_eq!(run.status.code(), Some(4), "{}", text(&run));
    let threshold = |out: &std::process::Output| -> Vec<String> {
        stderr(out)
            .lines()
            .filter(|l| l.starts_with("error: over threshold: "))
            .map(str::to_string)
            .collect()
    };
    assert!(!threshold(&plan).is_empty(), "{}", text(&plan));
    assert_eq!(threshold(&plan), threshold(&run));
    // The plan is still shown, and nothing was written.
    assert!(stdout(&plan).starts_with("plan: "), "{}", text(&plan));
    assert_eq!(w.ad_mail("adams").await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_dry_runs_compares_before_it_sets_and_refuses_invited_addresses() {
    let w = world(
        &[
            Partner::new(
                "adams",
                "Ana Adams",
                Some("ana@fabrikam.example"),
                Tenancy::Synced,
            ),
            Partner::new(
                "dubois",
                "Élodie Dubois",
                Some("elodie@lafayette.example"),
                Tenancy::Synced,
            ),
            Partner::new(
                "chen",
                "Wei Chen",
                Some("wei@northwind.example"),
                Tenancy::CloudOnly,
            ),
        ],
        "",
    )
    .await;
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = status_json(&w.b2bsync(&["status", "--format", "json"]));
    let run = status["runs"][0]["id"].as_str().unwrap().to_string();
    let journal = |w: &World| {
        let out = w.b2bsync(&["report", &run, "--format", "csv"]);
        stdout(&out)
    };
    let before = journal(&w);

    // A dry run reads and says, and writes nothing: no run, no journal record, no value.
    let out = w.b2bsync(&["rollback", &run, "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = stdout(&out);
    assert_eq!(
        said.lines()
            .filter(|l| l.starts_with("would_revert"))
            .count(),
        2,
        "{said}"
    );
    assert!(
        said.lines()
            .any(|l| l.starts_with("refused") && l.contains("set_cloud_address")),
        "{said}"
    );
    assert!(said.contains("nothing was written"), "{said}");
    assert_eq!(
        w.ad_mail("adams").await.as_deref(),
        Some("ana@fabrikam.example")
    );
    assert_eq!(w.cloud_user("chen").await["mail"], "wei@northwind.example");
    let after = status_json(&w.b2bsync(&["status", "--format", "json"]));
    assert_eq!(after["runs"].as_array().unwrap().len(), 1, "{after}");
    assert_eq!(journal(&w), before);

    // An administrator changes dubois' address after the run.
    let dn = w.dns[&w.sam("dubois")].clone();
    admin(Server::Samba)
        .set_mail(&dn, Some("elodie.new@lafayette.example"))
        .await
        .expect("admin writes mail");

    // Rollback: adams goes back; dubois is left alone and reported; chen is refused.
    let out = w.b2bsync(&["rollback", &run]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = stdout(&out);
    assert_eq!(w.ad_mail("adams").await, None, "{said}");
    assert_eq!(
        w.ad_mail("dubois").await.as_deref(),
        Some("elodie.new@lafayette.example"),
        "{said}"
    );
    assert!(
        said.lines()
            .any(|l| l.starts_with("conflict") && l.contains("left alone")),
        "{said}"
    );
    assert!(
        said.lines()
            .any(|l| l.starts_with("refused") && l.contains("invited") && l.contains("--force")),
        "{said}"
    );
    assert_eq!(w.cloud_user("chen").await["mail"], "wei@northwind.example");
    assert!(
        said.contains("the next scheduled run writes the address again"),
        "{said}"
    );

    // --force reverts the invited user's address too, with a warning.
    let out = w.b2bsync(&["rollback", &run, "--force"]);
    let said = stdout(&out);
    assert!(
        said.lines().any(|l| l.starts_with("reverted")
            && l.contains("set_cloud_address")
            && l.contains("warning: the account is invited")),
        "{said}"
    );
    let chen = w.cloud_user("chen").await;
    assert_eq!(chen["mail"], Value::Null, "{said}");
    assert_eq!(chen["otherMails"], json!([]), "{said}");
    // dubois' address is still the administrator's.
    assert_eq!(
        w.ad_mail("dubois").await.as_deref(),
        Some("elodie.new@lafayette.example")
    );
    assert_eq!(out.status.code(), Some(2), "the conflict remains: {said}");
}
