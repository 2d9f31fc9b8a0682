//! Incremental reads against the real servers and the emulator: AD by `uSNChanged` on the
//! same DC (`invocationId`), OpenLDAP by `entryCSN`, 389 Directory Server by
//! `modifyTimestamp` with an overlap (it has no `entryCSN`), Graph by `/users/delta`; a full read
//! when a mark cannot be trusted or is forced; the accounts about to be written are read
//! again, since AD group membership moves no mark on the member.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use b2bsync::model::SourceAccount;
use b2bsync::source::{Departed, Directory, LdapDirectory, Position, Read, SearchScope};
use common::world::{Partner, Tenancy, text, world};
use common::{Server, admin, service, settings};
use ldap3::Mod;
use serde_json::Value;

/// The `read both sides` line of a run's JSON log.
/// The last read of both sides a run made (the one it planned from).
fn read_line(out: &std::process::Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "read both sides")
        .unwrap_or_else(|| panic!("no `read both sides` line in:\n{stderr}"))
}

fn names(accounts: &[SourceAccount]) -> Vec<String> {
    let mut v: Vec<String> = accounts
        .iter()
        .filter_map(|a| a.account_name.clone())
        .collect();
    v.sort();
    v
}

async fn modify(server: Server, dn: &str, attr: &str, value: &str) {
    let mut ldap = admin(server).connect().await.expect("admin bind");
    ldap.modify(dn, vec![Mod::Replace(attr, HashSet::from([value]))])
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("modify {dn}: {e}"));
    let _ = ldap.unbind().await;
}

/// Three accounts `a`, `b`, `c` in `ou`: (account name, DN) each.
async fn add_accounts(server: Server, name: &str, ou: &str) -> Vec<(String, String)> {
    let mut ldap = admin(server).connect().await.expect("admin bind");
    let mut dns = Vec::new();
    for n in ["a", "b", "c"] {
        let (account, dn, attributes) = match server {
            Server::Samba => {
                let sam = format!("{}{n}", &name[..12]);
                let dn = format!("CN={sam},{ou}");
                let attributes = vec![
                    (
                        "objectClass".to_string(),
                        HashSet::from(["user".to_string()]),
                    ),
                    ("sAMAccountName".to_string(), HashSet::from([sam.clone()])),
                ];
                (sam, dn, attributes)
            }
            Server::OpenLdap | Server::Ds389 => {
                let uid = format!("{name}.{n}");
                let dn = format!("uid={uid},{ou}");
                let attributes = vec![
                    (
                        "objectClass".to_string(),
                        HashSet::from(["inetOrgPerson".to_string()]),
                    ),
                    ("uid".to_string(), HashSet::from([uid.clone()])),
                    ("cn".to_string(), HashSet::from([n.to_string()])),
                    ("sn".to_string(), HashSet::from([n.to_string()])),
                ];
                (uid, dn, attributes)
            }
        };
        ldap.add(&dn, attributes)
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("add {dn}: {e}"));
        dns.push((account, dn));
    }
    let _ = ldap.unbind().await;
    dns
}

/// Changes the first account's `displayName`, takes the second out of the filter
/// (`description=gone`), and reads the changes since `position`.
async fn change_and_remove(
    server: Server,
    dir: &LdapDirectory,
    scope: &SearchScope,
    dns: &[(String, String)],
    position: &Position,
) -> (Vec<SourceAccount>, Vec<Departed>, Position) {
    modify(server, &dns[0].1, "displayName", "Changed").await;
    modify(server, &dns[1].1, "description", "gone").await;
    match dir.read(scope, Some(position)).await.expect("read") {
        Read::Changes {
            changed,
            departed,
            position,
        } => (changed, departed, position),
        Read::Full { fell_back, .. } => {
            panic!("the same database reads by changes, not in full: {fell_back:?}")
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ad_reads_only_what_changed_on_the_same_dc_and_sees_accounts_leave_the_filter() {
    let server = Server::Samba;
    let (name, ou) = common::new_ou(server, "inc").await;
    let dns = add_accounts(server, &name, &ou).await;
    let scope = SearchScope {
        base_dns: vec![ou.clone()],
        filter: "(&(objectClass=user)(!(description=gone)))".into(),
        attributes: vec!["description".into()],
        protected_groups: vec![],
    };
    let dir = service(server);

    let Read::Full {
        accounts,
        position: Some(position),
        fell_back: None,
    } = dir.read(&scope, None).await.expect("full read")
    else {
        panic!("a first read is full and marks the DC's position");
    };
    assert_eq!(accounts.len(), 3);
    assert!(position.mark.parse::<u64>().is_ok(), "{position:?}");
    assert!(!position.server.is_empty());

    // Nothing changed in the OU: nothing read (other tests change other OUs meanwhile).
    // AD also lists every user deleted anywhere in the domain since the mark (other tests
    // delete theirs meanwhile): only this OU's count here.
    let in_ou = |departed: Vec<Departed>| -> Vec<Departed> {
        departed
            .into_iter()
            .filter(|d| {
                d.dn.to_ascii_lowercase()
                    .ends_with(&ou.to_ascii_lowercase())
            })
            .collect()
    };
    let Read::Changes {
        changed, departed, ..
    } = dir.read(&scope, Some(&position)).await.expect("read")
    else {
        panic!("the same DC reads by changes");
    };
    let departed = in_ou(departed);
    assert!(
        changed.is_empty() && departed.is_empty(),
        "{changed:?} {departed:?}"
    );

    // One account changes, one leaves the filter.
    let (changed, departed, next) = change_and_remove(server, &dir, &scope, &dns, &position).await;
    let departed = in_ou(departed);
    assert_eq!(names(&changed), vec![dns[0].0.clone()]);
    assert_eq!(changed[0].display_name.as_deref(), Some("Changed"));
    assert_eq!(departed.len(), 1, "{departed:?}");
    assert!(departed[0].dn.eq_ignore_ascii_case(&dns[1].1));
    assert!(
        departed[0].anchor.is_some(),
        "departed accounts carry their anchor"
    );
    assert!(next.mark.parse::<u64>().unwrap() > position.mark.parse::<u64>().unwrap());

    // A mark from another DC (or a restored database) is not trusted: a full read, saying why.
    let foreign = Position {
        server: "AAAAAAAAAAAAAAAAAAAAAA==".into(),
        mark: next.mark.clone(),
    };
    let Read::Full {
        accounts,
        fell_back: Some(why),
        ..
    } = dir.read(&scope, Some(&foreign)).await.expect("read")
    else {
        panic!("another DC's mark means a full read");
    };
    assert_eq!(accounts.len(), 2, "the departed account is out of scope");
    assert!(why.contains("another database"), "{why}");

    // A mark from this DC that is not a USN (a hand-edited state file) is a full read too.
    let garbled = Position {
        server: next.server.clone(),
        mark: "not-a-usn".into(),
    };
    let Read::Full {
        fell_back: Some(why),
        ..
    } = dir.read(&scope, Some(&garbled)).await.expect("read")
    else {
        panic!("an unreadable mark means a full read");
    };
    assert!(why.contains("cannot be read from"), "{why}");

    // Re-reading one account by DN sees what its mark does not show.
    let again = dir
        .account(&scope, &dns[2].1)
        .await
        .expect("read one")
        .expect("in scope");
    assert_eq!(again.account_name.as_deref(), Some(dns[2].0.as_str()));
    assert_eq!(
        dir.account(&scope, &dns[1].1).await.expect("read one"),
        None,
        "out of the filter reads as gone"
    );
    // And by anchor, many in one search: the departed one is not returned.
    let anchors = vec![
        again.anchor().expect("anchor").clone(),
        departed[0].anchor.clone().expect("anchor"),
    ];
    let by_anchor = dir
        .accounts_by_anchor(&scope, &anchors)
        .await
        .expect("read by anchor");
    assert_eq!(names(&by_anchor), vec![dns[2].0.clone()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn openldap_reads_by_entry_csn_with_the_overlap() {
    let server = Server::OpenLdap;
    let (name, ou) = common::new_ou(server, "inc").await;
    let dns = add_accounts(server, &name, &ou).await;
    let scope = SearchScope {
        base_dns: vec![ou.clone()],
        filter: "(&(objectClass=inetOrgPerson)(!(description=gone)))".into(),
        attributes: vec![],
        protected_groups: vec![],
    };
    // No overlap: the next read starts at the highest entryCSN seen (this test's clock and
    // the lab server's are the same).
    let mut s = settings(
        server,
        false,
        server.service_bind(),
        server.service_password(),
    );
    s.change_overlap = Duration::ZERO;
    let dir = LdapDirectory::new(s).expect("settings");
    let Read::Full {
        accounts,
        position: Some(position),
        ..
    } = dir.read(&scope, None).await.expect("full read")
    else {
        panic!("a first read is full and marks the position");
    };
    assert_eq!(accounts.len(), 3);
    assert!(position.mark.contains('#'), "an entryCSN: {position:?}");

    let (changed, departed, next) = change_and_remove(server, &dir, &scope, &dns, &position).await;
    // The entry holding the last mark is read again (`>=`); nothing else unchanged is.
    let got = names(&changed);
    assert!(got.contains(&dns[0].0), "{got:?}");
    assert!(got.len() <= 2 && !got.contains(&dns[1].0), "{got:?}");
    assert_eq!(departed.len(), 1, "{departed:?}");
    assert!(departed[0].dn.eq_ignore_ascii_case(&dns[1].1));
    assert!(next.mark > position.mark);

    // Read again by anchor (entryUUID), many in one search.
    let anchors: Vec<_> = accounts
        .iter()
        .filter_map(|a| a.anchor().cloned())
        .collect();
    let by_anchor = dir
        .accounts_by_anchor(&scope, &anchors)
        .await
        .expect("read by anchor");
    let got = names(&by_anchor);
    assert_eq!(
        got,
        vec![dns[0].0.clone(), dns[2].0.clone()],
        "b left the filter"
    );

    // With the default overlap of a minute, the same read reaches back over these writes.
    let wide = service(server);
    let Read::Changes { changed, .. } = wide.read(&scope, Some(&position)).await.expect("read")
    else {
        panic!("reads by changes");
    };
    assert!(names(&changed).contains(&dns[0].0));
}

#[tokio::test(flavor = "multi_thread")]
async fn ds389_has_no_entry_csn_and_reads_by_modify_timestamp_with_the_overlap() {
    let server = Server::Ds389;
    let (name, ou) = common::new_ou(server, "inc").await;
    let dns = add_accounts(server, &name, &ou).await;
    let scope = SearchScope {
        base_dns: vec![ou.clone()],
        filter: "(&(objectClass=inetOrgPerson)(!(description=gone)))".into(),
        attributes: vec!["displayName".into()],
        protected_groups: vec![],
    };
    let dir = service(server);
    let caps = dir.server().await.expect("capabilities");
    assert_eq!(
        caps.capabilities.change_mark.to_string(),
        "by modifyTimestamp with 60 s overlap"
    );
    let Read::Full {
        accounts,
        position: Some(position),
        fell_back: None,
    } = dir.read(&scope, None).await.expect("full read")
    else {
        panic!("a first read is full and marks the position");
    };
    assert_eq!(accounts.len(), 3);
    assert!(
        accounts.iter().all(|a| a.anchor().is_some()),
        "every 389-ds entry has nsUniqueId"
    );
    // A generalized time a minute before the read (the accounts are newer than that).
    assert!(
        position.mark.len() == 15 && position.mark.ends_with('Z'),
        "{position:?}"
    );
    assert!(position.server.starts_with("nsUniqueId:"), "{position:?}");

    // A change between runs is seen by the next incremental read (before this fix 389-ds
    // answered `(entryCSN>=…)` with nothing, silently).
    let (changed, departed, next) = change_and_remove(server, &dir, &scope, &dns, &position).await;
    let a = changed
        .iter()
        .find(|x| x.account_name.as_deref() == Some(dns[0].0.as_str()))
        .unwrap_or_else(|| panic!("the changed account is read: {:?}", names(&changed)));
    assert_eq!(a.first("displayName"), Some("Changed"));
    assert!(!names(&changed).contains(&dns[1].0));
    assert!(
        departed
            .iter()
            .any(|d| d.dn.eq_ignore_ascii_case(&dns[1].1)),
        "{departed:?}"
    );
    assert!(next.mark >= position.mark);

    // Read again by anchor (nsUniqueId), many in one search.
    let anchors: Vec<_> = accounts
        .iter()
        .filter_map(|a| a.anchor().cloned())
        .collect();
    let by_anchor = dir
        .accounts_by_anchor(&scope, &anchors)
        .await
        .expect("read by anchor");
    assert_eq!(
        names(&by_anchor),
        vec![dns[0].0.clone(), dns[2].0.clone()],
        "b left the filter"
    );

    // A mark of another kind (an OpenLDAP CSN) is never used as a timestamp: read in full.
    let csn = Position {
        server: position.server.clone(),
        mark: "20261201000000.000000Z#000000#000#000000".into(),
    };
    let Read::Full {
        fell_back: Some(why),
        ..
    } = dir.read(&scope, Some(&csn)).await.expect("read")
    else {
        panic!("a CSN mark is not read from on 389-ds");
    };
    assert!(why.contains("cannot be read from"), "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ds389_protected_group_members_are_found_without_member_of() {
    let server = Server::Ds389;
    let group = common::lab_var("DS_PROTECTED_GROUP_DN");
    let partners = server.partners_dn();
    let scope = SearchScope {
        base_dns: vec![partners.clone()],
        filter: "(uid=p.admin)".into(),
        attributes: vec![],
        protected_groups: vec![group.clone()],
    };
    let dir = service(server);
    // The MemberOf plugin is off: the member's entry does not show the group...
    assert_eq!(
        dir.member_of_maintained(&group).await.expect("read"),
        Some(false)
    );
    // ...yet the reader puts it in member_of by reading the group's members.
    let accounts = dir.accounts(&scope).await.expect("read");
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].member_of, vec![group.clone()]);
    let unprotected = SearchScope {
        protected_groups: vec![],
        ..scope
    };
    assert!(
        dir.accounts(&unprotected).await.expect("read")[0]
            .member_of
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_runs_read_changes_only_and_never_write_an_account_that_became_protected() {
    let partners = [
        Partner::new(
            "adams",
            "Ana Adams",
            Some("ana@fabrikam.example"),
            Tenancy::CloudOnly,
        ),
        Partner::new(
            "baker",
            "Bo Baker",
            Some("bo@fabrikam.example"),
            Tenancy::Synced,
        ),
        Partner::new("chen", "Wei Chen", None, Tenancy::Synced),
    ];
    let w = world(&partners, "").await;
    // A protected group of this world (empty for now) in the mapping.
    let group = format!("CN={}protected,{}", w.prefix, w.ou);
    let mut ldap = admin(Server::Samba).connect().await.expect("admin");
    ldap.add(&group, vec![("objectClass", HashSet::from(["group"]))])
        .await
        .and_then(|r| r.success())
        .expect("group");
    let mapping = w.dir.path().join("mappings/partners.toml");
    let text_before = std::fs::read_to_string(&mapping).expect("read");
    std::fs::write(
        &mapping,
        text_before.replace(
            "filter = \"(&(objectCategory=person)(objectClass=user))\"",
            &format!(
                "filter = \"(&(objectCategory=person)(objectClass=user))\"\nprotected_groups = [\"{group}\"]"
            ),
        ),
    )
    .expect("write");
    let run = |extra: &[&str]| {
        let mut args = vec!["--log-format", "json", "run"];
        args.extend_from_slice(extra);
        let out = w.b2bsync(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        out
    };
    let users_listed = |log: &Value| {
        log["value"]
            .as_array()
            .expect("log")
            .iter()
            .filter(|r| {
                r["method"] == "GET"
                    && r["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("/v1.0/users?") || p == "/v1.0/users")
            })
            .count()
    };

    // Run 1: everything is read in full; baker's AD mail and adams' cloud address are
    // written, adams is invited.
    let out = run(&[]);
    let read = read_line(&out);
    assert_eq!(read["searches_full"], 1, "{read}");
    assert_eq!(read["cloud_incremental"], false, "{read}");
    assert_eq!(read["entries_read"], 3, "{read}");

    // Run 2: only what run 1 changed comes back: baker (AD mail) and adams (the PATCH and
    // the invitation).
    w.control(reqwest::Method::DELETE, "/requests", None).await;
    let out = run(&[]);
    let read = read_line(&out);
    assert_eq!(read["searches_incremental"], 1, "{read}");
    assert_eq!(read["cloud_incremental"], true, "{read}");
    assert_eq!(read["entries_read"], 1, "baker's mail: {read}");
    assert_eq!(read["users_read"], 1, "adams: {read}");
    let log = w.control(reqwest::Method::GET, "/requests", None).await;
    assert_eq!(users_listed(&log), 0, "no full user list: {log:#}");

    // Run 3: nothing changed, nothing read.
    let out = run(&[]);
    let read = read_line(&out);
    assert_eq!(read["entries_read"], 0, "{read}");
    assert_eq!(read["users_read"], 0, "{read}");

    // chen gets an address on-premises: one entry read, and its AD mail is written.
    let chen_dn = w.dns[&w.sam("chen")].clone();
    modify(
        Server::Samba,
        &chen_dn,
        "otherMailbox",
        "wei@northwind.example",
    )
    .await;
    let out = run(&[]);
    let read = read_line(&out);
    assert_eq!(read["entries_read"], 1, "{read}");
    assert_eq!(
        w.ad_mail("chen").await.as_deref(),
        Some("wei@northwind.example")
    );

    // adams accepts (a cloud change) and, in AD, joins the protected group: membership is a
    // back link and moves no mark on adams. The run would randomize adams' password; it
    // reads adams again first, sees the group, and blocks instead.
    assert_eq!(w.accept_pending().await, 1);
    let adams_dn = w.dns[&w.sam("adams")].clone();
    ldap.modify(
        &group,
        vec![Mod::Add("member", HashSet::from([adams_dn.as_str()]))],
    )
    .await
    .and_then(|r| r.success())
    .expect("add member");
    let _ = ldap.unbind().await;
    let out = run(&[]);
    let read = read_line(&out);
    assert_eq!(read["searches_incremental"], 1, "{read}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("changed without moving its change mark"),
        "{stderr}"
    );
    assert!(
        w.old_password_binds("adams").await,
        "a protected account's password is never touched"
    );
    let status = common::world::status_json(&w.b2bsync(&["status", "--format", "json"]));
    let reasons = common::world::blocked_reasons(&status);
    assert!(reasons.iter().any(|r| r == "protected_group"), "{status:#}");
    // `status` says how each side is read: its snapshot, its last and next full read.
    let reads = status["reads"].as_array().expect("reads");
    assert_eq!(reads.len(), 2, "{status:#}");
    let cloud = reads
        .iter()
        .find(|r| r["side"] == "cloud:users")
        .expect("cloud side");
    assert_eq!(cloud["rows"], 3);
    let last: jiff::Timestamp = cloud["last_full_read"].as_str().unwrap().parse().unwrap();
    let due: jiff::Timestamp = cloud["full_read_due"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        due.duration_since(last),
        jiff::SignedDuration::from_hours(24)
    );
    let table = text(&w.b2bsync(&["status"]));
    assert!(
        table.contains("cloud:users: 3 in the snapshot, last full read"),
        "{table}"
    );

    // baker's cloud user is deleted: delta says `@removed`, and baker is unmatched again.
    let baker_id = w.ids[&w.sam("baker")].clone();
    w.control(reqwest::Method::DELETE, &format!("/users/{baker_id}"), None)
        .await;
    let out = run(&[]);
    let read = read_line(&out);
    assert_eq!(read["cloud_incremental"], true, "{read}");
    assert_eq!(read["users_read"], 1, "the removal: {read}");
    let status = common::world::status_json(&w.b2bsync(&["status", "--format", "json"]));
    assert_eq!(common::world::count(&status, "unmatched"), 1, "{status:#}");

    // adams leaves the protected group: again no mark moves on adams, so no read of the
    // changes sees it. `--full` reads everything, whatever the marks say: each entry is
    // compared with the snapshot as it comes, adams alone differs, and the run plans adams
    // (and what is pending), not everyone: adams' password is randomized now.
    let mut ldap = admin(Server::Samba).connect().await.expect("admin");
    ldap.modify(
        &group,
        vec![Mod::Delete("member", HashSet::from([adams_dn.as_str()]))],
    )
    .await
    .and_then(|r| r.success())
    .expect("remove member");
    let _ = ldap.unbind().await;
    let out = run(&["--full"]);
    let read = read_line(&out);
    assert_eq!(read["searches_full"], 1, "{read}");
    assert_eq!(read["cloud_incremental"], false, "{read}");
    assert_eq!(read["entries_read"], 3, "{read}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = |message: &str| {
        stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == message)
            .unwrap_or_else(|| panic!("no `{message}` line in:\n{stderr}"))
    };
    let directory = line("read the directory");
    assert_eq!(
        (
            directory["accounts"].as_u64(),
            directory["changed"].as_u64()
        ),
        (Some(3), Some(1)),
        "{directory}"
    );
    let planned = line("planned the accounts a change touches");
    assert!(
        planned["unchanged"].as_u64().unwrap_or(0) >= 1,
        "a full read plans only what it changed and what is pending: {planned}"
    );
    assert!(
        !w.old_password_binds("adams").await,
        "adams, no longer protected, is randomized"
    );

    // A delta link Graph no longer knows: the users are read in full, and the run goes on.
    let db = w.dir.path().join("state/b2bsync.db");
    let conn = rusqlite::Connection::open(&db).expect("open state");
    let mark: String = conn
        .query_row(
            "SELECT value FROM watermarks WHERE source = 'cloud:users'",
            [],
            |r| r.get(0),
        )
        .expect("cloud mark");
    let mut mark: Value = serde_json::from_str(&mark).expect("json");
    let link = mark["delta_link"].as_str().expect("link").to_string();
    let broken = format!(
        "{}x",
        &link[..link.find("$deltatoken=").expect("token") + 12]
    );
    mark["delta_link"] = Value::String(broken);
    conn.execute(
        "UPDATE watermarks SET value = ?1 WHERE source = 'cloud:users'",
        [mark.to_string()],
    )
    .expect("update");
    drop(conn);
    let out = run(&[]);
    let read = read_line(&out);
    assert_eq!(read["cloud_incremental"], false, "{read}");
    assert_eq!(read["searches_incremental"], 1, "{read}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("full read of the users"), "{stderr}");

    // A snapshot that no longer decodes (another version wrote it) costs a full read of that
    // side, not a failed run.
    let conn = rusqlite::Connection::open(&db).expect("open state");
    conn.execute_batch(
        "UPDATE snapshot SET data = '{\"written_by\":\"another version\"}'
         WHERE key = (SELECT key FROM snapshot WHERE side LIKE 'source:%' LIMIT 1);
         UPDATE snapshot SET data = '[]' WHERE side = 'cloud:users';",
    )
    .expect("corrupt");
    drop(conn);
    let out = run(&[]);
    let read = read_line(&out);
    assert_eq!(read["searches_full"], 1, "{read}");
    assert_eq!(read["entries_read"], 3, "{read}");
    assert_eq!(read["cloud_incremental"], false, "{read}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not decode"), "{stderr}");
    // And the run after it reads changes again.
    let read = read_line(&run(&[]));
    assert_eq!(read["searches_incremental"], 1, "{read}");
    assert_eq!(read["cloud_incremental"], true, "{read}");
}
