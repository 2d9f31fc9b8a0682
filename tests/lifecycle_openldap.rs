//! The lifecycle with a generic LDAP directory (the lab's OpenLDAP) as the source:
//! cloud-only partners joined by an expression over `uid`, their address PATCHed, invited,
//! accepted, and their on-premises password randomized with the RFC 3062 password modify
//! operation (not AD's `unicodePwd`), the old password then refused by slapd; a partner
//! locked by ppolicy's `pwdAccountLockedTime` blocked; a renamed partner left alone.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::Server;

#[tokio::test(flavor = "multi_thread")]
async fn generic_ldap_partners_convert_with_password_modify() {
    common::generic::generic_lifecycle(Server::OpenLdap, ("pwdAccountLockedTime", "000001010000Z"))
        .await;
}
