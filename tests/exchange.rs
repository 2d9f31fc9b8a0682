//! On-premises Exchange against the lab's Samba AD, whose schema carries Exchange's
//! recipient attributes (scripts/samba-exchange-schema.ldif): a partner with an on-premises
//! mailbox and one with a remote mailbox are blocked `onprem_mailbox` and get no write on
//! either side; a mail user and a plain partner next to them convert.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::world::{Partner, Tenancy, blocked_reasons, status_json, text, world};
use serde_json::{Value, json};

/// A mailbox GUID as Exchange stores it (16 bytes).
const MAILBOX_GUID: [u8; 16] = [
    0x48, 0xaf, 0x33, 0x93, 0x9e, 0xb0, 0xd2, 0x11, 0xaa, 0x06, 0x00, 0xc0, 0x4f, 0x8e, 0xed, 0xd8,
];

fn partners() -> Vec<Partner> {
    vec![
        Partner::new(
            "onprem",
            "Olga Onprem",
            Some("olga@fabrikam.example"),
            Tenancy::Synced,
        )
        .with_attribute("msExchRecipientTypeDetails", "1")
        .with_attribute("msExchMailboxGuid", MAILBOX_GUID.to_vec()),
        Partner::new(
            "remote",
            "Rémi Remote",
            Some("remi@fabrikam.example"),
            Tenancy::Synced,
        )
        .with_attribute("msExchRecipientTypeDetails", "2147483648")
        .with_attribute("msExchRemoteRecipientType", "4")
        .with_attribute(
            "targetAddress",
            "SMTP:remote@labexample.mail.onmicrosoft.com",
        ),
        Partner::new(
            "mailuser",
            "Mia Mailuser",
            Some("mia@fabrikam.example"),
            Tenancy::Synced,
        )
        .with_attribute("msExchRecipientTypeDetails", "128")
        .with_attribute("targetAddress", "SMTP:mia@fabrikam.example"),
        Partner::new(
            "plain",
            "Paul Plain",
            Some("paul@fabrikam.example"),
            Tenancy::Synced,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn on_premises_and_remote_mailboxes_are_blocked_and_their_neighbours_convert() {
    let w = world(&partners(), "").await;

    let plan_path = w.dir.path().join("plan.json");
    let out = w.b2bsync(&["plan", "--out", plan_path.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan: Value =
        serde_json::from_slice(&std::fs::read(&plan_path).expect("plan")).expect("plan json");
    let blocked_kind = |sam: &str| -> Option<String> {
        let accounts = plan["accounts"].as_array().expect("accounts");
        let account = accounts
            .iter()
            .find(|a| a["account_name"] == w.sam(sam))
            .unwrap_or_else(|| panic!("{sam} not in {plan:#}"));
        account["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["reason"]["code"] == "onprem_mailbox")
            .map(|r| r["message"].as_str().unwrap_or_default().to_string())
    };
    let onprem = blocked_kind("onprem").unwrap_or_else(|| panic!("onprem blocked: {plan:#}"));
    assert!(onprem.contains("on-premises UserMailbox"), "{onprem}");
    let remote = blocked_kind("remote").expect("remote blocked");
    assert!(
        remote.contains("remote mailbox (RemoteUserMailbox)"),
        "{remote}"
    );
    assert_eq!(blocked_kind("mailuser"), None, "a mail user is no mailbox");
    assert_eq!(blocked_kind("plain"), None);

    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Blocked: no AD mail, nothing in the cloud.
    for sam in ["onprem", "remote"] {
        assert_eq!(w.ad_mail(sam).await, None, "{sam}: no AD write");
        let user = w.cloud_user(sam).await;
        assert_eq!(user["otherMails"], json!([]), "{sam}: {user:#}");
        assert_eq!(user["externalUserState"], Value::Null, "{sam}: {user:#}");
    }
    // Their neighbours are staged.
    assert_eq!(
        w.ad_mail("mailuser").await.as_deref(),
        Some("mia@fabrikam.example")
    );
    assert_eq!(
        w.ad_mail("plain").await.as_deref(),
        Some("paul@fabrikam.example")
    );

    // After Entra Connect's cycle the neighbours are invited; the mailboxes still are not.
    w.connect_cycle().await;
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let invited: Vec<String> = w.invitations().await.into_iter().map(|(u, _)| u).collect();
    assert_eq!(invited.len(), 2, "{invited:?}");
    for sam in ["mailuser", "plain"] {
        assert!(invited.contains(&w.ids[&w.sam(sam)]), "{sam}: {invited:?}");
    }

    let status = status_json(&w.b2bsync(&["status", "--format", "json"]));
    assert!(
        blocked_reasons(&status).contains(&"onprem_mailbox".to_string()),
        "{status:#}"
    );
    let count = status["blocked"]
        .as_array()
        .expect("blocked")
        .iter()
        .find(|b| b["reason"] == "onprem_mailbox")
        .and_then(|b| b["accounts"].as_u64());
    assert_eq!(count, Some(2), "{status:#}");
}
