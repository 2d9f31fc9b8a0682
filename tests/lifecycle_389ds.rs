//! The lifecycle with 389 Directory Server as the source (issue 18): partners converted
//! with RFC 3062 password modify, the old password refused; a partner locked with
//! `nsAccountLock: true` blocked; a renamed partner (same `nsUniqueId`, new DN) left alone,
//! never randomized twice.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::Server;

#[tokio::test(flavor = "multi_thread")]
async fn ds389_partners_convert_and_a_locked_one_is_blocked() {
    common::generic::generic_lifecycle(Server::Ds389, ("nsAccountLock", "true")).await;
}
