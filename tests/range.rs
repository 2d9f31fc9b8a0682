//! Large multi-valued attributes are read completely: a group with 1,600 members, more than
//! AD's MaxValRange of 1,500, is read through the same `accounts()` path the pipeline uses.
//!
//! Note: Samba 4.17 does not cap the values of a read (AD answers `member;range=0-1499` and
//! expects the client to ask for the rest; Samba returns all 1,600 at once), so against Samba
//! this proves the values are complete, not the continuation loop; the adapter's handling of
//! `;range=` answers is covered by the unit tests in `src/source/ldap.rs`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use b2bsync::source::{Directory, SearchScope};
use common::{Server, admin, service};

#[tokio::test(flavor = "multi_thread")]
async fn reads_every_value_of_an_attribute_of_more_than_1500_values() {
    let server = Server::Samba;
    let (ou_name, ou) = common::new_ou(server, "range").await;
    let mut ldap = admin(server).connect().await.expect("admin");
    let members = 1600;
    let mut dns = Vec::with_capacity(members);
    for i in 0..members {
        let dn = format!("CN=m{i:04},{ou}");
        ldap.add(&dn, vec![("objectClass", HashSet::from(["contact"]))])
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("{dn}: {e}"));
        dns.push(dn);
    }
    let group = format!("CN=big-group,{ou}");
    ldap.add(
        &group,
        vec![
            ("objectClass", HashSet::from(["group"])),
            ("sAMAccountName", HashSet::from([ou_name.as_str()])),
        ],
    )
    .await
    .and_then(|r| r.success())
    .expect("group");
    for chunk in dns.chunks(400) {
        let values: HashSet<&str> = chunk.iter().map(String::as_str).collect();
        ldap.modify(&group, vec![ldap3::Mod::Add("member", values)])
            .await
            .and_then(|r| r.success())
            .expect("members");
    }
    let _ = ldap.unbind().await;

    let scope = SearchScope {
        base_dns: vec![ou.clone()],
        filter: "(objectClass=group)".into(),
        attributes: vec!["member".into()],
        protected_groups: vec![],
    };
    let accounts = service(server).accounts(&scope).await.expect("read");
    assert_eq!(accounts.len(), 1);
    let read: HashSet<&str> = accounts[0]
        .attributes
        .get("member")
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(read.len(), members, "values lost past the first range");
    assert!(
        dns.iter()
            .all(|d| read.iter().any(|r| r.eq_ignore_ascii_case(d)))
    );
}
