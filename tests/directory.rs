//! The LDAP adapter against the real lab servers: Samba AD DC and OpenLDAP slapd, as
//! `scripts/lab-up.sh` starts them. Binds over LDAPS and StartTLS, cleartext refusal, CA
//! validation, paged search past the server's size limit, the `unicodePwd` reset on AD and
//! the RFC 3062 password modify on OpenLDAP with the old password refused afterwards, and the
//! service account's delegation.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use b2bsync::source::{Directory, Error, Flavour, LdapDirectory, SearchScope, password};
use common::{Server, admin, lab_var, service, settings, unique};
use ldap3::{Mod, Scope};
use secrecy::{ExposeSecret, SecretString};

const SERVERS: [Server; 2] = [Server::Samba, Server::OpenLdap];

fn partners_scope(server: Server) -> SearchScope {
    SearchScope {
        base_dns: vec![server.partners_dn()],
        filter: match server {
            Server::Samba => "(&(objectCategory=person)(objectClass=user))".into(),
            Server::OpenLdap | Server::Ds389 => "(objectClass=inetOrgPerson)".into(),
        },
        attributes: vec!["otherMailbox".into(), "givenName".into(), "sn".into()],
        protected_groups: vec![],
    }
}

/// Creates a throwaway partner account (as the directory admin) with a known password and
/// returns its DN. Each test makes its own, so tests never disturb each other or the seeds.
async fn throwaway_partner(server: Server, password: &str) -> String {
    let name = unique("t.");
    let mut ldap = admin(server)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dn = match server {
        Server::Samba => {
            let dn = format!("CN={name},{}", server.partners_dn());
            let pwd: Vec<u8> = format!("\"{password}\"")
                .encode_utf16()
                .flat_map(|u| u.to_le_bytes())
                .collect();
            let upn = format!("{name}@lab.example.com");
            let attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = vec![
                (b"objectClass".to_vec(), HashSet::from([b"user".to_vec()])),
                (
                    b"sAMAccountName".to_vec(),
                    HashSet::from([name.clone().into_bytes()]),
                ),
                (
                    b"userPrincipalName".to_vec(),
                    HashSet::from([upn.into_bytes()]),
                ),
                (b"unicodePwd".to_vec(), HashSet::from([pwd])),
                (
                    b"userAccountControl".to_vec(),
                    HashSet::from([b"512".to_vec()]),
                ),
            ];
            ldap.add(&dn, attrs)
                .await
                .and_then(|r| r.success())
                .unwrap_or_else(|e| panic!("add {dn}: {e}"));
            dn
        }
        Server::OpenLdap | Server::Ds389 => {
            let dn = format!("uid={name},{}", server.partners_dn());
            let attrs: Vec<(&str, HashSet<&str>)> = vec![
                ("objectClass", HashSet::from(["inetOrgPerson"])),
                ("uid", HashSet::from([name.as_str()])),
                ("cn", HashSet::from([name.as_str()])),
                ("sn", HashSet::from(["Throwaway"])),
                ("userPassword", HashSet::from([password])),
            ];
            ldap.add(&dn, attrs)
                .await
                .and_then(|r| r.success())
                .unwrap_or_else(|e| panic!("add {dn}: {e}"));
            dn
        }
    };
    let _ = ldap.unbind().await;
    dn
}

#[tokio::test]
async fn binds_over_ldaps_and_starttls_on_both_servers() {
    for server in SERVERS {
        for starttls in [false, true] {
            let dir = LdapDirectory::new(settings(
                server,
                starttls,
                server.service_bind(),
                server.service_password(),
            ))
            .unwrap_or_else(|e| panic!("{e}"));
            let mut ldap = dir.connect().await.unwrap_or_else(|e| {
                panic!("{server:?} starttls={starttls}: {e}\nhelp: {}", e.help())
            });
            assert!(!ldap.is_closed());
            let _ = ldap.unbind().await;
        }
    }
}

#[tokio::test]
async fn detects_the_directory_flavour() {
    for server in SERVERS {
        let flavour = service(server)
            .flavour()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(flavour, server.flavour(), "{server:?}");
        assert_ne!(flavour, Flavour::Auto);
    }
}

#[tokio::test]
async fn cleartext_bind_is_refused_by_b2bsync_and_by_both_servers() {
    for server in SERVERS {
        let mut s = settings(
            server,
            false,
            server.service_bind(),
            server.service_password(),
        );
        s.url = server.ldap_url();
        // b2bsync refuses before any byte leaves the machine...
        assert!(matches!(
            LdapDirectory::new(s.clone()),
            Err(Error::CleartextBind { .. })
        ));
        // ...and even when a lab allows it, both servers refuse a cleartext simple bind.
        s.allow_cleartext = true;
        let dir = LdapDirectory::new(s).unwrap_or_else(|e| panic!("{e}"));
        match dir.connect().await {
            Err(Error::Bind { rc, .. }) => {
                let expected = if server == Server::Samba { 8 } else { 13 };
                assert_eq!(rc, expected, "{server:?}");
            }
            other => panic!(
                "{server:?}: cleartext bind was not refused: {:?}",
                other.map(|_| ())
            ),
        }
    }
}

#[tokio::test]
async fn password_operations_refuse_a_connection_without_tls() {
    let server = Server::OpenLdap;
    let mut s = settings(
        server,
        false,
        server.service_bind(),
        server.service_password(),
    );
    s.url = server.ldap_url();
    s.allow_cleartext = true;
    let dir = LdapDirectory::new(s).unwrap_or_else(|e| panic!("{e}"));
    let pw = password::generate(24, "x", None).unwrap();
    let err = dir
        .set_password(&format!("uid=p.adams,{}", server.partners_dn()), &pw)
        .await
        .expect_err("a password reset without TLS must be refused");
    assert!(matches!(err, Error::PasswordWithoutTls { .. }), "{err}");
    assert!(err.help().contains("LDAPS or StartTLS"));
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let other_ca = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("other-ca.pem");
    std::fs::write(&path, other_ca.cert.pem()).unwrap_or_else(|e| panic!("{e}"));
    for server in SERVERS {
        let mut s = settings(
            server,
            false,
            server.service_bind(),
            server.service_password(),
        );
        s.ca_file = Some(path.clone());
        let dir = LdapDirectory::new(s).unwrap_or_else(|e| panic!("{e}"));
        let err = dir
            .connect()
            .await
            .err()
            .unwrap_or_else(|| panic!("{server:?}: untrusted certificate accepted"));
        assert!(matches!(err, Error::Connect { .. }), "{server:?}: {err}");
    }
}

#[tokio::test]
async fn reads_every_seeded_partner_with_anchor_and_attributes() {
    for server in SERVERS {
        let accounts = service(server)
            .accounts(&partners_scope(server))
            .await
            .unwrap_or_else(|e| panic!("{server:?}: {e}"));
        let by_name = |n: &str| {
            accounts
                .iter()
                .find(|a| a.account_name.as_deref() == Some(n))
                .unwrap_or_else(|| panic!("{server:?}: {n} not read"))
        };
        let adams = by_name("p.adams");
        assert!(adams.object_guid.is_some(), "{server:?}: no anchor");
        assert_eq!(
            adams.first("otherMailbox"),
            Some("ana.adams@fabrikam.example")
        );
        let dubois = by_name("p.dubois");
        assert_eq!(dubois.display_name.as_deref(), Some("Élodie Dubois"));
        assert!(by_name("p.nomail").first("otherMailbox").is_none());
        assert_eq!(
            by_name("p.dup1").first("otherMailbox"),
            by_name("p.dup2").first("otherMailbox")
        );
        if server == Server::Samba {
            assert!(by_name("p.admin").admin_count);
            assert!(by_name("p.disabled").disabled());
            assert!(!adams.disabled());
            assert!(adams.user_principal_name.is_some());
        }
        // Scoped to the OU: accounts elsewhere are not read.
        assert!(
            accounts
                .iter()
                .all(|a| a.account_name.as_deref() != Some("outside.user"))
        );
        assert!(
            accounts
                .iter()
                .all(|a| a.account_name.as_deref() != Some("s.internal"))
        );
        // Anchors are unique.
        let anchors: HashSet<_> = accounts
            .iter()
            .filter_map(|a| a.object_guid.clone())
            .collect();
        assert_eq!(anchors.len(), accounts.len(), "{server:?}");
    }
}

#[tokio::test]
async fn paged_search_reads_past_the_servers_size_limit() {
    let server = Server::OpenLdap;
    let expected: usize = lab_var("OL_BULK_COUNT")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        expected > 1000,
        "the bulk OU must exceed the 1,000-entry size limit"
    );
    let base = format!("ou=Bulk,{}", server.base_dn());
    // Without paging the server stops at 1,000 entries, as AD does...
    let mut ldap = service(server)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let result = ldap
        .search(
            &base,
            Scope::Subtree,
            "(objectClass=inetOrgPerson)",
            vec!["uid"],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result.1.rc, 4, "a non-paged search must hit the size limit");
    assert_eq!(result.0.len(), 1000);
    // ...and the adapter's paged search reads them all.
    let scope = SearchScope {
        base_dns: vec![base],
        filter: "(objectClass=inetOrgPerson)".into(),
        attributes: vec![],
        protected_groups: vec![],
    };
    let accounts = service(server)
        .accounts(&scope)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(accounts.len(), expected);
    // A full read handed over a page at a time: never more than a page held, the same
    // accounts in the end.
    struct Sizes(Vec<usize>, Vec<String>);
    impl b2bsync::source::Pages for Sizes {
        fn page(
            &mut self,
            accounts: Vec<b2bsync::model::SourceAccount>,
        ) -> std::ops::ControlFlow<()> {
            self.0.push(accounts.len());
            self.1.extend(accounts.into_iter().map(|a| a.dn));
            std::ops::ControlFlow::Continue(())
        }
        fn restart(&mut self) {
            self.0.clear();
            self.1.clear();
        }
    }
    let mut pages = Sizes(Vec::new(), Vec::new());
    let read = service(server)
        .read_pages(&scope, None, &mut pages)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let b2bsync::source::Read::Full { accounts: held, .. } = read else {
        panic!("not a full read");
    };
    assert!(
        held.is_empty(),
        "a paged read holds {} accounts",
        held.len()
    );
    assert_eq!(pages.0.len(), expected.div_ceil(1000), "{:?}", pages.0);
    assert!(pages.0.iter().all(|&n| n <= 1000), "{:?}", pages.0);
    let mut paged = pages.1;
    paged.sort();
    let mut whole: Vec<String> = accounts.into_iter().map(|a| a.dn).collect();
    whole.sort();
    assert_eq!(paged, whole);
    // A taker that cannot keep a page stops the read there.
    struct Refuse(usize);
    impl b2bsync::source::Pages for Refuse {
        fn page(
            &mut self,
            accounts: Vec<b2bsync::model::SourceAccount>,
        ) -> std::ops::ControlFlow<()> {
            self.0 += 1;
            assert!(accounts.len() <= 1000);
            std::ops::ControlFlow::Break(())
        }
        fn restart(&mut self) {}
    }
    let mut refuse = Refuse(0);
    let err = service(server)
        .read_pages(&scope, None, &mut refuse)
        .await
        .expect_err("a refused page stops the read");
    assert!(
        matches!(err, Error::Stopped { accounts: 1000, .. }),
        "{err:?}"
    );
    assert!(err.help().contains("state store"), "{}", err.help());
    assert_eq!(refuse.0, 1, "no page is handed over after the refusal");
}

#[tokio::test]
async fn samba_unicodepwd_reset_makes_the_old_password_fail() {
    let server = Server::Samba;
    let old = "Old-Throwaway-2026!";
    let dn = throwaway_partner(server, old).await;
    let svc = service(server);
    let old_secret = SecretString::from(old);
    assert!(
        svc.try_bind(&dn, &old_secret)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    let new = password::generate(password::DEFAULT_LENGTH, "t.", None).unwrap();
    svc.set_password(&dn, &new)
        .await
        .unwrap_or_else(|e| panic!("{e}\nhelp: {}", e.help()));
    assert!(
        !svc.try_bind(&dn, &old_secret)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        "old password still binds"
    );
    assert!(
        svc.try_bind(&dn, &new)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        "new password does not bind"
    );
}

#[tokio::test]
async fn samba_rejects_a_weak_password_as_a_policy_error() {
    let server = Server::Samba;
    let dn = throwaway_partner(server, "Old-Throwaway-2026!").await;
    let err = service(server)
        .set_password(&dn, &SecretString::from("abc"))
        .await
        .expect_err("complexity is on");
    assert!(matches!(err, Error::PasswordPolicy { .. }), "{err}");
    assert!(
        !err.to_string().contains("abc\""),
        "the password must not reach the message"
    );
}

#[tokio::test]
async fn openldap_password_modify_makes_the_old_password_fail() {
    let server = Server::OpenLdap;
    let old = "Old-Throwaway-2026!";
    let dn = throwaway_partner(server, old).await;
    let svc = service(server);
    let old_secret = SecretString::from(old);
    assert!(
        svc.try_bind(&dn, &old_secret)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    let new = password::generate(password::DEFAULT_LENGTH, "t.", None).unwrap();
    svc.set_password(&dn, &new)
        .await
        .unwrap_or_else(|e| panic!("{e}\nhelp: {}", e.help()));
    assert!(
        !svc.try_bind(&dn, &old_secret)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    assert!(
        svc.try_bind(&dn, &new)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    assert_ne!(new.expose_secret(), old);
}

#[tokio::test]
async fn service_account_writes_mail_only_inside_the_partners_ou() {
    for server in SERVERS {
        let dn = throwaway_partner(server, "Old-Throwaway-2026!").await;
        let svc = service(server);
        svc.set_mail(&dn, Some("new.address@fabrikam.example"))
            .await
            .unwrap_or_else(|e| panic!("{server:?}: {e}"));
        let mut ldap = svc.connect().await.unwrap_or_else(|e| panic!("{e}"));
        let (entries, _) = ldap
            .search(&dn, Scope::Base, "(objectClass=*)", vec!["mail"])
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("{e}"));
        let entry = ldap3::SearchEntry::construct(
            entries
                .into_iter()
                .next()
                .unwrap_or_else(|| panic!("no entry")),
        );
        assert_eq!(
            entry.attrs.get("mail"),
            Some(&vec!["new.address@fabrikam.example".to_string()])
        );
        svc.set_mail(&dn, None)
            .await
            .unwrap_or_else(|e| panic!("{server:?}: clear: {e}"));

        // Outside the delegated OU the same write is refused.
        let staff = match server {
            Server::Samba => format!("CN=Sam Internal,OU=Staff,{}", server.base_dn()),
            Server::OpenLdap | Server::Ds389 => {
                format!("uid=s.internal,ou=Staff,{}", server.base_dn())
            }
        };
        let err = svc
            .set_mail(&staff, Some("x@fabrikam.example"))
            .await
            .expect_err("write outside the OU must be refused");
        assert_eq!(err.rc(), Some(50), "{server:?}: {err}");
        assert!(err.help().contains("delegate"));
    }
}

#[tokio::test]
async fn samba_refuses_a_reset_outside_the_partners_ou() {
    let server = Server::Samba;
    let staff = format!("CN=Sam Internal,OU=Staff,{}", server.base_dn());
    let err = service(server)
        .set_password(&staff, &password::generate(24, "s.internal", None).unwrap())
        .await
        .expect_err("reset outside the OU must be refused");
    assert_eq!(err.rc(), Some(50), "{err}");
    // The admin can still do what the service account cannot (the refusal is delegation).
    let mut ldap = admin(server)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ok = ldap
        .modify(
            &staff,
            vec![Mod::Replace(
                "description",
                HashSet::from(["checked by tests"]),
            )],
        )
        .await
        .and_then(|r| r.success());
    assert!(ok.is_ok(), "{ok:?}");
}
