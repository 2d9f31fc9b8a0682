//! Accounts that leave the scope between two runs, against the lab's Samba AD: one deleted
//! (read from Deleted Objects with the show-deleted control) and one moved out of the base
//! DN are seen by the next incremental run, shown as `gone` with when they left, and get no
//! write; the one moved back resumes where it stood.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use common::world::{Partner, Tenancy, count, status_json, text, world};
use common::{Server, admin};
use serde_json::Value;

/// The `read both sides` line of a run's JSON log.
fn read_line(out: &std::process::Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "read both sides")
        .unwrap_or_else(|| panic!("no `read both sides` line in:\n{stderr}"))
}

fn partner(sam: &str, name: &str) -> Partner {
    Partner::new(
        sam,
        name,
        Some(&format!("{sam}@fabrikam.example")),
        Tenancy::Synced,
    )
}

/// `status --accounts --format json`'s row of `sam`.
fn row(w: &common::world::World, sam: &str) -> Value {
    let out = w.b2bsync(&["status", "--accounts", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    list["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|a| a["dn"].as_str().is_some_and(|d| d.contains(&w.sam(sam))))
        .cloned()
        .unwrap_or_else(|| panic!("{sam} not in {list:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_and_moved_out_accounts_are_gone_after_an_incremental_run() {
    let w = world(
        &[
            partner("deleted", "Dora Deleted"),
            partner("moved", "Max Moved"),
            partner("kept", "Kim Kept"),
        ],
        "",
    )
    .await;
    let run = || {
        let out = w.b2bsync(&["--log-format", "json", "run"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        out
    };

    // Run 1 (full): every AD mail is written; Entra Connect carries it to the cloud.
    let read = read_line(&run());
    assert_eq!(read["searches_full"], 1, "{read}");
    for sam in ["deleted", "moved", "kept"] {
        assert!(w.ad_mail(sam).await.is_some(), "{sam}");
    }
    w.connect_cycle().await;

    // Between runs: one partner is deleted, one moved out of the base DN.
    let mut ldap = admin(Server::Samba).connect().await.expect("admin bind");
    let deleted_dn = w.dns[&w.sam("deleted")].clone();
    ldap.delete(&deleted_dn)
        .await
        .and_then(|r| r.success())
        .expect("delete");
    let elsewhere = format!(
        "OU={}-out,{}",
        w.prefix.trim_end_matches('.'),
        common::lab_var("AD_BASE_DN")
    );
    ldap.add(
        &elsewhere,
        vec![("objectClass", HashSet::from(["organizationalUnit"]))],
    )
    .await
    .and_then(|r| r.success())
    .expect("create OU");
    let moved_dn = w.dns[&w.sam("moved")].clone();
    let moved_rdn = format!("CN={}", w.sam("moved"));
    ldap.modifydn(&moved_dn, &moved_rdn, true, Some(&elsewhere))
        .await
        .and_then(|r| r.success())
        .expect("move out");

    // Run 2 reads the changes only: both are gone, kept is invited, they are not.
    let read = read_line(&run());
    assert_eq!(read["searches_incremental"], 1, "{read}");
    assert_eq!(read["searches_full"], 0, "{read}");
    let invited: Vec<String> = w.invitations().await.into_iter().map(|(u, _)| u).collect();
    assert_eq!(invited, vec![w.ids[&w.sam("kept")].clone()]);
    for sam in ["deleted", "moved"] {
        let r = row(&w, sam);
        assert_eq!(r["state"], "gone", "{r:#}");
        let at: jiff::Timestamp = r["gone_at"]
            .as_str()
            .expect("gone_at")
            .parse()
            .expect("time");
        assert!(
            (jiff::Timestamp::now() - at).get_seconds().abs() < 600,
            "{r:#}"
        );
    }
    let status = status_json(&w.b2bsync(&["status", "--format", "json"]));
    assert_eq!(count(&status, "gone"), 2, "{status:#}");
    assert_eq!(count(&status, "invited"), 1, "{status:#}");

    // Run 3: still gone, and still nothing written for them.
    w.control(reqwest::Method::DELETE, "/requests", None).await;
    run();
    let log = w.control(reqwest::Method::GET, "/requests", None).await;
    let touched: Vec<&Value> = log["value"]
        .as_array()
        .expect("log")
        .iter()
        .filter(|r| r["method"] != "GET")
        .filter(|r| {
            ["deleted", "moved"].iter().any(|s| {
                r["path"]
                    .as_str()
                    .is_some_and(|p| p.contains(&w.ids[&w.sam(s)]))
                    || r["invitedUserId"].as_str() == Some(w.ids[&w.sam(s)].as_str())
            })
        })
        .collect();
    assert!(touched.is_empty(), "{touched:#?}");
    assert_eq!(row(&w, "deleted")["state"], "gone");

    // The moved partner comes back (the same objectGUID, as after a Recycle Bin restore):
    // it is no longer gone, and its lifecycle resumes: it is invited.
    let out_dn = format!("{moved_rdn},{elsewhere}");
    ldap.modifydn(&out_dn, &moved_rdn, true, Some(&w.ou))
        .await
        .and_then(|r| r.success())
        .expect("move back");
    let read = read_line(&run());
    assert_eq!(read["searches_incremental"], 1, "{read}");
    let r = row(&w, "moved");
    assert_eq!(r["state"], "invited", "{r:#}");
    assert!(r.get("gone_at").is_none_or(Value::is_null), "{r:#}");
    assert_eq!(w.invitations().await.len(), 2);
    let _ = ldap.delete(&elsewhere).await;
    let _ = ldap.unbind().await;
}
