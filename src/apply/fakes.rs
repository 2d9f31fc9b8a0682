//! In-memory stand-ins for the directory and the cloud, for the unit tests of `apply`,
//! `reconcile` and `rollback`: each keeps its entries or users in a map, applies writes to
//! them as the real servers would, and can be told to fail reads or to lose the answer of
//! an invitation it has processed. Compiled for tests only.

use std::collections::HashMap;
use std::sync::Mutex;

use secrecy::SecretString;

use crate::apply::journal_values;
use crate::cloud::{self, Cloud, Invitation, InvitationSent, RequestIds, UserPatch};
use crate::model::{CloudUser, Lifecycle, Progress, SourceAccount};
use crate::plan::Op;
use crate::source::{self, Directory, SearchScope};
use crate::state::{Phase, Store};

/// The current time as AD writes `pwdLastSet`: a FILETIME.
pub fn filetime(t: jiff::Timestamp) -> String {
    let ticks = (i128::from(t.as_second()) + 11_644_473_600) * 10_000_000
        + i128::from(t.subsec_nanosecond() / 100);
    ticks.to_string()
}

/// A directory of entries by DN.
#[derive(Default)]
pub struct FakeDirectory {
    pub entries: Mutex<HashMap<String, SourceAccount>>,
    /// Every read fails (a directory that went away).
    pub unreachable: Mutex<bool>,
}

impl FakeDirectory {
    pub fn with(entries: Vec<SourceAccount>) -> FakeDirectory {
        FakeDirectory {
            entries: Mutex::new(entries.into_iter().map(|a| (a.dn.clone(), a)).collect()),
            unreachable: Mutex::new(false),
        }
    }

    pub fn get(&self, dn: &str) -> SourceAccount {
        self.entries.lock().unwrap()[dn].clone()
    }

    pub fn update(&self, dn: &str, f: impl FnOnce(&mut SourceAccount)) {
        f(self.entries.lock().unwrap().get_mut(dn).unwrap());
    }
}

fn unreachable_directory() -> source::Error {
    source::Error::Connect {
        url: "ldaps://fake".into(),
        reason: "connection refused".into(),
    }
}

impl Directory for FakeDirectory {
    async fn accounts(&self, _scope: &SearchScope) -> Result<Vec<SourceAccount>, source::Error> {
        Ok(self.entries.lock().unwrap().values().cloned().collect())
    }

    async fn entry(&self, dn: &str) -> Result<Option<SourceAccount>, source::Error> {
        if *self.unreachable.lock().unwrap() {
            return Err(unreachable_directory());
        }
        Ok(self.entries.lock().unwrap().get(dn).cloned())
    }

    async fn set_mail(&self, dn: &str, mail: Option<&str>) -> Result<(), source::Error> {
        self.update(dn, |a| a.mail = mail.map(str::to_string));
        Ok(())
    }

    async fn set_password(&self, dn: &str, _password: &SecretString) -> Result<(), source::Error> {
        self.update(dn, |a| {
            a.password_changed = Some(filetime(jiff::Timestamp::now()));
        });
        Ok(())
    }
}

/// A tenant of users by id that records each invitation it processes.
#[derive(Default)]
pub struct FakeCloud {
    pub users: Mutex<HashMap<String, CloudUser>>,
    /// Invitations processed, by user id.
    pub invitations: Mutex<HashMap<String, usize>>,
    /// Invitations are processed, then the answer is lost (a dropped connection).
    pub lose_answers: Mutex<bool>,
    /// Invitations are lost before the service sees them.
    pub drop_requests: Mutex<bool>,
    /// Invitations are refused with a `Retry-After` past the maximum wait.
    pub wait_too_long: Mutex<bool>,
}

impl FakeCloud {
    pub fn with(users: Vec<CloudUser>) -> FakeCloud {
        FakeCloud {
            users: Mutex::new(users.into_iter().map(|u| (u.id.clone(), u)).collect()),
            ..FakeCloud::default()
        }
    }

    pub fn get(&self, id: &str) -> CloudUser {
        self.users.lock().unwrap()[id].clone()
    }

    pub fn invitations(&self, id: &str) -> usize {
        self.invitations
            .lock()
            .unwrap()
            .get(id)
            .copied()
            .unwrap_or(0)
    }
}

fn dropped() -> cloud::Error {
    cloud::Error::Transport {
        url: "https://graph.fake/v1.0/invitations".into(),
        reason: "connection reset (HTTP/2 GOAWAY)".into(),
    }
}

impl Cloud for FakeCloud {
    async fn users(&self) -> Result<Vec<CloudUser>, cloud::Error> {
        Ok(self.users.lock().unwrap().values().cloned().collect())
    }

    async fn user(&self, id: &str) -> Result<Option<CloudUser>, cloud::Error> {
        Ok(self.users.lock().unwrap().get(id).cloned())
    }

    async fn verified_domains(&self) -> Result<Vec<String>, cloud::Error> {
        Ok(vec!["contoso.example".into()])
    }

    async fn update_user(&self, id: &str, patch: &UserPatch) -> Result<RequestIds, cloud::Error> {
        let mut users = self.users.lock().unwrap();
        let user = users.get_mut(id).unwrap();
        if let Some(m) = &patch.mail {
            user.mail = Some(m.clone());
        }
        if patch.clear_mail {
            user.mail = None;
        }
        if let Some(o) = &patch.other_mails {
            user.other_mails = o.clone();
        }
        if let Some(t) = &patch.user_type {
            user.user_type = Some(t.clone());
        }
        Ok(RequestIds::default())
    }

    async fn invite(&self, invitation: &Invitation) -> Result<InvitationSent, cloud::Error> {
        if *self.drop_requests.lock().unwrap() {
            return Err(dropped());
        }
        if *self.wait_too_long.lock().unwrap() {
            return Err(cloud::Error::WaitTooLong {
                url: "https://graph.fake/v1.0/invitations".into(),
                status: 429,
                asked: "100000000".into(),
                request_id: None,
            });
        }
        {
            let mut users = self.users.lock().unwrap();
            let user = users.get_mut(&invitation.user_id).unwrap();
            user.external_user_state = Some("PendingAcceptance".into());
            user.external_user_state_change = Some(jiff::Timestamp::now().to_string());
            *self
                .invitations
                .lock()
                .unwrap()
                .entry(invitation.user_id.clone())
                .or_default() += 1;
        }
        if *self.lose_answers.lock().unwrap() {
            return Err(dropped());
        }
        Ok(InvitationSent {
            invitation_id: format!("inv-{}", invitation.user_id),
            user_id: invitation.user_id.clone(),
            status: "PendingAcceptance".into(),
            redeem_url: None,
            ids: RequestIds::default(),
        })
    }
}

pub const DN: &str = "CN=p.adams,OU=Partners,DC=lab";
pub const USER: &str = "u-1";
pub const ACCOUNT: &str = "anchor-1";

pub fn account(mail: Option<&str>, password_changed: Option<String>) -> SourceAccount {
    SourceAccount {
        dn: DN.into(),
        mail: mail.map(str::to_string),
        password_changed,
        ..SourceAccount::default()
    }
}

pub fn user(mail: Option<&str>, other_mails: &[&str]) -> CloudUser {
    CloudUser {
        id: USER.into(),
        mail: mail.map(str::to_string),
        other_mails: other_mails.iter().map(|m| m.to_string()).collect(),
        ..CloudUser::default()
    }
}

/// A store in which run `run-a` journaled `op` as started, and the account's row.
pub fn interrupted(op: &Op, state: Lifecycle) -> (tempfile::TempDir, Mutex<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let (before, after) = journal_values(op);
    let key = format!("{ACCOUNT}/0/{}", op.name());
    store
        .journal(
            "run-a",
            &key,
            crate::apply::kind(op),
            ACCOUNT,
            Phase::Started,
            before.as_ref(),
            after.as_ref(),
            None,
            None,
            None,
        )
        .unwrap();
    let progress = Progress {
        state,
        cloud_id: Some(USER.into()),
        ..Progress::default()
    };
    store
        .save_account(ACCOUNT, Some(DN), Some("synced"), None, &progress)
        .unwrap();
    (dir, Mutex::new(store))
}

pub fn set_mail() -> Op {
    Op::SetDirectoryMail {
        dn: DN.into(),
        from: Some("old@contoso.example".into()),
        to: "ana@fabrikam.example".into(),
    }
}

pub fn set_cloud_address() -> Op {
    Op::SetCloudAddress {
        user_id: USER.into(),
        other_mails_from: vec![],
        other_mails_to: Some(vec!["ana@fabrikam.example".into()]),
        mail_from: None,
        mail_to: Some("ana@fabrikam.example".into()),
    }
}

pub fn randomize() -> Op {
    Op::RandomizePassword {
        dn: DN.into(),
        account_name: Some("p.adams".into()),
        display_name: None,
    }
}

pub fn invitation() -> crate::plan::Invitation {
    crate::plan::Invitation {
        user_id: USER.into(),
        email: "ana@fabrikam.example".into(),
        redirect_url: "https://myapps.microsoft.com".into(),
        send_message: true,
        message_language: None,
        message_body: None,
        cc: None,
        attempt: 1,
    }
}
