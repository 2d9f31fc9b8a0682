//! Shared set-up for the integration tests: the lab's servers as `scripts/lab-up.sh` started
//! them (read from the environment that `scripts/test.sh` exports), and small helpers.
//!
//! A missing server is a failure, never a skip: every accessor panics with the command that
//! starts the lab.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

pub mod generic;
pub mod hostile;
pub mod world;

use b2bsync::source::{Flavour, LdapDirectory, LdapSettings};
use secrecy::SecretString;

/// Reads a variable that `scripts/lab-up.sh` writes into `$LAB/lab.env`.
pub fn lab_var(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the directory lab is not running.\n\
             help: run the tests with scripts/test.sh, which starts Samba AD, OpenLDAP and the emulator"
        ),
    }
}

/// Which lab server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Samba,
    OpenLdap,
    /// 389 Directory Server (`scripts/389ds-up.sh`).
    Ds389,
}

impl Server {
    fn prefix(self) -> &'static str {
        match self {
            Server::Samba => "AD",
            Server::OpenLdap => "OL",
            Server::Ds389 => "DS",
        }
    }

    pub fn ldaps_url(self) -> String {
        lab_var(&format!("{}_LDAPS_URL", self.prefix()))
    }

    pub fn ldap_url(self) -> String {
        lab_var(&format!("{}_LDAP_URL", self.prefix()))
    }

    pub fn base_dn(self) -> String {
        lab_var(&format!("{}_BASE_DN", self.prefix()))
    }

    pub fn partners_dn(self) -> String {
        lab_var(&format!("{}_PARTNERS_DN", self.prefix()))
    }

    /// The least-privilege service account b2bsync binds as.
    pub fn service_bind(self) -> String {
        match self {
            Server::Samba => lab_var("AD_SVC_BIND"),
            Server::OpenLdap => lab_var("OL_SVC_DN"),
            Server::Ds389 => lab_var("DS_SVC_DN"),
        }
    }

    pub fn service_password(self) -> SecretString {
        SecretString::from(lab_var(&format!("{}_SVC_PASSWORD", self.prefix())))
    }

    /// The directory's administrator, used only by tests to set up throwaway accounts.
    pub fn admin_bind(self) -> String {
        match self {
            Server::Samba => lab_var("AD_ADMIN_BIND"),
            Server::OpenLdap => lab_var("OL_ADMIN_DN"),
            Server::Ds389 => lab_var("DS_ADMIN_DN"),
        }
    }

    pub fn admin_password(self) -> SecretString {
        SecretString::from(lab_var(&format!("{}_ADMIN_PASSWORD", self.prefix())))
    }

    pub fn flavour(self) -> Flavour {
        match self {
            Server::Samba => Flavour::ActiveDirectory,
            Server::OpenLdap | Server::Ds389 => Flavour::Generic,
        }
    }
}

pub fn lab_ca() -> PathBuf {
    PathBuf::from(lab_var("LAB_CA"))
}

/// Settings for LDAPS (or StartTLS on the plain port) as the given account.
pub fn settings(
    server: Server,
    starttls: bool,
    bind: String,
    password: SecretString,
) -> LdapSettings {
    LdapSettings {
        url: if starttls {
            server.ldap_url()
        } else {
            server.ldaps_url()
        },
        failover_urls: Vec::new(),
        starttls,
        ca_file: Some(lab_ca()),
        bind_dn: bind,
        password,
        allow_cleartext: false,
        flavour: Flavour::Auto,
        page_size: 1000,
        timeout: Duration::from_secs(10),
        change_overlap: Duration::from_secs(60),
        kerberos: None,
    }
}

/// The service account over LDAPS.
pub fn service(server: Server) -> LdapDirectory {
    LdapDirectory::new(settings(
        server,
        false,
        server.service_bind(),
        server.service_password(),
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The administrator over LDAPS (test set-up only).
pub fn admin(server: Server) -> LdapDirectory {
    LdapDirectory::new(settings(
        server,
        false,
        server.admin_bind(),
        server.admin_password(),
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A short random suffix so tests never collide with each other or with earlier runs.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// A fresh OU of the test's own under the server's partners' OU, created as the
/// administrator; returns its name and DN.
pub async fn new_ou(server: Server, prefix: &str) -> (String, String) {
    let name = unique(prefix);
    let (dn, attributes) = match server {
        Server::Samba => (
            format!("OU={name},{}", server.partners_dn()),
            vec![(
                "objectClass",
                std::collections::HashSet::from(["organizationalUnit"]),
            )],
        ),
        Server::OpenLdap | Server::Ds389 => (
            format!("ou={name},{}", server.partners_dn()),
            vec![
                (
                    "objectClass",
                    std::collections::HashSet::from(["organizationalUnit"]),
                ),
                ("ou", std::collections::HashSet::from([name.as_str()])),
            ],
        ),
    };
    let mut ldap = admin(server).connect().await.expect("admin bind");
    ldap.add(&dn, attributes)
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("create {dn}: {e}"));
    let _ = ldap.unbind().await;
    (name, dn)
}
