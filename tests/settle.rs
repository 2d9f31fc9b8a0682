//! Reading the world to settle an interrupted write, against the real servers (issue 10):
//! `Directory::entry` reads an entry by DN whatever the scope, and what it reads after a
//! real `mail` write and a real password reset is what reconciliation judges by: Samba's
//! `pwdLastSet` (a FILETIME) and OpenLDAP's `pwdChangedTime` (written by the ppolicy overlay
//! the lab loads) both fall at or after the moment the reset began, so an interrupted reset
//! that reached the server is found `done`, and one that did not is not.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use b2bsync::apply::reconcile::{Pending, settle};
use b2bsync::cloud::{self, Cloud, Invitation, InvitationSent, RequestIds, UserPatch};
use b2bsync::model::CloudUser;
use b2bsync::source::{Directory, PasswordChanged, password};
use b2bsync::state::{Action, Values};
use common::world::{OLD_PASSWORD, Partner, Tenancy, world};
use common::{Server, admin, new_ou, service};

/// A Samba account of a test world, and an OpenLDAP entry in an OU of the test's own.
async fn one_account_each() -> (common::world::World, Vec<(Server, String)>) {
    let w = world(
        &[Partner::new(
            "settle",
            "Settle Test",
            None,
            Tenancy::Missing,
        )],
        "",
    )
    .await;
    let samba_dn = w.dns.values().next().expect("dn").clone();
    let (_, ou) = new_ou(Server::OpenLdap, "settle").await;
    let uid = common::unique("settle.");
    let openldap_dn = format!("uid={uid},{ou}");
    let mut ldap = admin(Server::OpenLdap).connect().await.expect("admin");
    ldap.add(
        &openldap_dn,
        vec![
            ("objectClass", HashSet::from(["inetOrgPerson"])),
            ("uid", HashSet::from([uid.as_str()])),
            ("cn", HashSet::from([uid.as_str()])),
            ("sn", HashSet::from(["Settle"])),
            ("userPassword", HashSet::from([OLD_PASSWORD])),
        ],
    )
    .await
    .and_then(|r| r.success())
    .expect("add");
    let _ = ldap.unbind().await;
    (
        w,
        vec![(Server::Samba, samba_dn), (Server::OpenLdap, openldap_dn)],
    )
}

/// Directory writes are settled without Graph: any call to it fails the test.
struct NoCloud;

impl Cloud for NoCloud {
    async fn users(&self) -> Result<Vec<CloudUser>, cloud::Error> {
        panic!("no Graph call expected")
    }

    async fn user(&self, _id: &str) -> Result<Option<CloudUser>, cloud::Error> {
        panic!("no Graph call expected")
    }

    async fn sessions_valid_from(&self, _id: &str) -> Result<Option<Option<String>>, cloud::Error> {
        panic!("no Graph call expected")
    }

    async fn verified_domains(&self) -> Result<Vec<String>, cloud::Error> {
        panic!("no Graph call expected")
    }

    async fn update_user(&self, _id: &str, _patch: &UserPatch) -> Result<RequestIds, cloud::Error> {
        panic!("no Graph call expected")
    }

    async fn invite(&self, _invitation: &Invitation) -> Result<InvitationSent, cloud::Error> {
        panic!("no Graph call expected")
    }

    async fn revoke_sessions(&self, _id: &str) -> Result<RequestIds, cloud::Error> {
        panic!("no Graph call expected")
    }
}

/// The verdict reconciliation gives an action `started` at that moment whose after-value
/// is `after`: `done`, `failed`, `changed` or `unknown`.
async fn verdict(
    svc: &b2bsync::source::LdapDirectory,
    action: &str,
    after: &str,
    started: jiff::Timestamp,
) -> &'static str {
    let before: Values = serde_json::from_str(r#"{"mail":null}"#).unwrap();
    let after: Values = serde_json::from_str(after).unwrap();
    let pending = Pending {
        action: Action::parse(action).unwrap(),
        before: Some(&before),
        after: Some(&after),
        started,
        dn: None,
        cloud_id: None,
    };
    let verdict = settle(&pending, svc, &NoCloud).await.unwrap();
    eprintln!("{action} started {started}: {verdict:?}");
    verdict.as_str()
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_that_reached_either_server_are_read_back_as_done() {
    let (w, accounts) = one_account_each().await;
    for (server, dn) in accounts {
        let svc = service(server);
        let after_mail =
            serde_json::json!({ "mail": "settle@fabrikam.example", "dn": dn }).to_string();
        let after_password = serde_json::json!({ "password": "randomized", "dn": dn }).to_string();

        // Before the write: it did not take effect.
        let before = jiff::Timestamp::now();
        let mail = "set_directory_mail";
        assert_eq!(verdict(&svc, mail, &after_mail, before).await, "failed");
        svc.set_mail(&dn, Some("settle@fabrikam.example"))
            .await
            .unwrap();
        assert_eq!(verdict(&svc, mail, &after_mail, before).await, "done");

        // The reset: the change time falls at or after the moment it began (to the second:
        // some directories keep whole seconds), and not after it ended.
        let started = jiff::Timestamp::now();
        svc.set_password(
            &dn,
            &password::generate(password::DEFAULT_LENGTH, "settle", None).unwrap(),
        )
        .await
        .unwrap();
        let ended = jiff::Timestamp::now();
        let entry = svc.entry(&dn).await.unwrap().expect("the entry");
        let raw = entry.password_changed.expect("a password change time");
        let Some(PasswordChanged::At(changed)) = PasswordChanged::parse(&raw) else {
            panic!("{server:?}: unreadable change time {raw}");
        };
        assert!(
            changed.as_second() >= started.as_second() && changed <= ended,
            "{server:?}: changed {changed}, reset from {started} to {ended}"
        );
        eprintln!("{server:?}: password change time {raw} ({changed}), reset began {started}");
        let reset = "randomize_password";
        assert_eq!(verdict(&svc, reset, &after_password, started).await, "done");
        // A reset that began after that change (killed before it reached the server) is
        // not taken for done.
        let later = ended + jiff::SignedDuration::from_secs(5);
        assert_eq!(verdict(&svc, reset, &after_password, later).await, "failed");

        // An entry that is not there reads as none, not as an error.
        let gone = format!("cn=not-there,{}", server.partners_dn());
        assert!(svc.entry(&gone).await.unwrap().is_none());
    }
    drop(w);
}
