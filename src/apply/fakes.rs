//! In-memory stand-ins for the directory and the cloud (the two I/O traits), for the
//! millisecond tests of `apply`, `reconcile`, `rollback`, `pipeline::observe` and
//! `pipeline::reads::confirm`, and for integration tests that need no server (feature
//! `fakes`). Each keeps its entries or users in a map and applies writes to them as the real
//! servers would; each change moves a change counter, so incremental reads (a directory
//! read by its changes, Graph `/users/delta`) see exactly what changed. They can be told to
//! fail reads or writes, to lose the answer of an invitation they processed, to ask for a
//! wait past the maximum, or to take a moment per write (to watch concurrency). Every call
//! is logged in order. The real-server tests stay: these only make the fast tier possible.
//! Compiled for tests, and with the `fakes` feature; never part of the connector.

// Test support: a poisoned lock or a write to an entry a test did not create is the test's
// own mistake, and panicking names it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::apply::journal_values;
use crate::cloud::{self, Cloud, Invitation, InvitationSent, RequestIds, UserChanges, UserPatch};
use crate::model::{CloudUser, Lifecycle, Progress, SourceAccount};
use crate::plan::Op;
use crate::source::{self, Directory, Position, Read, SearchScope};
use crate::state::{Phase, Store};

/// The current time as AD writes `pwdLastSet`: a FILETIME.
pub fn filetime(t: jiff::Timestamp) -> String {
    let ticks = (i128::from(t.as_second()) + 11_644_473_600) * 10_000_000
        + i128::from(t.subsec_nanosecond() / 100);
    ticks.to_string()
}

/// The server name of the fake directory's change positions.
pub const FAKE_SERVER: &str = "fake-dc";

/// The link prefix of the fake cloud's delta links.
const DELTA: &str = "fake-delta:";

/// Calls in flight, and the most seen at once.
#[derive(Default)]
pub struct InFlight {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl InFlight {
    /// The most calls that were in flight at the same time.
    pub fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    /// Counts one call in flight for `delay`.
    async fn hold(&self, delay: Duration) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A change counter: each change gets the next number, and each key its last one.
#[derive(Default)]
struct Changes {
    last: u64,
    of: HashMap<String, u64>,
    /// Keys removed, with the number of their removal.
    removed: Vec<(u64, String)>,
}

impl Changes {
    fn touch(&mut self, key: &str) {
        self.last += 1;
        self.of.insert(key.to_string(), self.last);
    }

    fn remove(&mut self, key: &str) {
        self.last += 1;
        self.of.remove(key);
        self.removed.push((self.last, key.to_string()));
    }

    fn since(&self, from: u64) -> impl Iterator<Item = &String> {
        self.of
            .iter()
            .filter(move |(_, n)| **n > from)
            .map(|(k, _)| k)
    }
}

/// A directory of entries by DN.
#[derive(Default)]
pub struct FakeDirectory {
    pub entries: Mutex<HashMap<String, SourceAccount>>,
    /// Every read fails (a directory that went away).
    pub unreachable: Mutex<bool>,
    /// Writes to these DNs fail (the service account lacks the right).
    pub refuse_writes: Mutex<HashSet<String>>,
    /// Writes to these DNs take effect, but their answer is lost: the connection to the
    /// domain controller broke after the request went out.
    pub lose_answers: Mutex<HashSet<String>>,
    /// Every password set, in order: for tests that prove where a password goes.
    pub passwords: Mutex<Vec<String>>,
    /// Every call, in order (`set_mail <dn>`, `read full`, `read changes`, ...).
    pub calls: Mutex<Vec<String>>,
    /// How long each write takes.
    pub delay: Mutex<Duration>,
    /// Writes in flight.
    pub in_flight: InFlight,
    /// The directory cannot tell its changes (and why): every read is full, without a mark.
    pub no_marks: Mutex<Option<String>>,
    changes: Mutex<Changes>,
    /// Entries deleted, with the number of their change: a read of the changes lists them.
    departed: Mutex<Vec<(u64, source::Departed)>>,
}

impl FakeDirectory {
    pub fn with(entries: Vec<SourceAccount>) -> FakeDirectory {
        let directory = FakeDirectory::default();
        for entry in entries {
            directory.put(entry);
        }
        directory
    }

    pub fn get(&self, dn: &str) -> SourceAccount {
        self.entries.lock().unwrap()[dn].clone()
    }

    /// Adds or replaces an entry; its change mark moves.
    pub fn put(&self, entry: SourceAccount) {
        self.changes.lock().unwrap().touch(&entry.dn);
        self.entries.lock().unwrap().insert(entry.dn.clone(), entry);
    }

    /// Changes an entry; its change mark moves.
    pub fn update(&self, dn: &str, f: impl FnOnce(&mut SourceAccount)) {
        f(self.entries.lock().unwrap().get_mut(dn).unwrap());
        self.changes.lock().unwrap().touch(dn);
    }

    /// Deletes an entry; a read of the changes since lists it as departed.
    pub fn remove(&self, dn: &str) {
        let entry = self.entries.lock().unwrap().remove(dn);
        let mut changes = self.changes.lock().unwrap();
        changes.remove(dn);
        self.departed.lock().unwrap().push((
            changes.last,
            source::Departed {
                dn: dn.to_string(),
                anchor: entry.and_then(|e| e.object_guid),
            },
        ));
    }

    /// Changes an entry without moving its change mark, as AD group membership does (a
    /// back link: `memberOf` changes, `uSNChanged` on the member does not).
    pub fn update_silently(&self, dn: &str, f: impl FnOnce(&mut SourceAccount)) {
        f(self.entries.lock().unwrap().get_mut(dn).unwrap());
    }

    /// The calls made so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn check(&self) -> Result<(), source::Error> {
        if *self.unreachable.lock().unwrap() {
            return Err(unreachable_directory());
        }
        Ok(())
    }

    fn in_scope(&self, scope: &SearchScope, dns: Option<&[String]>) -> Vec<SourceAccount> {
        let entries = self.entries.lock().unwrap();
        let mut found: Vec<SourceAccount> = entries
            .values()
            .filter(|a| dns.is_none_or(|dns| dns.contains(&a.dn)))
            .filter(|a| {
                let dn = a.dn.to_ascii_lowercase();
                scope
                    .base_dns
                    .iter()
                    .any(|base| dn.ends_with(&base.to_ascii_lowercase()))
            })
            .cloned()
            .collect();
        found.sort_by(|a, b| a.dn.cmp(&b.dn));
        found
    }

    async fn write(
        &self,
        call: String,
        dn: &str,
        f: impl FnOnce(&mut SourceAccount),
    ) -> Result<(), source::Error> {
        self.log(call);
        let delay = *self.delay.lock().unwrap();
        self.in_flight.hold(delay).await;
        if self.refuse_writes.lock().unwrap().contains(dn) {
            return Err(source::Error::Connect {
                url: "ldaps://fake".into(),
                reason: format!("insufficient access rights on {dn}"),
            });
        }
        self.update(dn, f);
        if self.lose_answers.lock().unwrap().contains(dn) {
            return Err(source::Error::Write {
                operation: "fake write",
                dn: dn.to_string(),
                rc: 80,
                message: "connection reset by peer".into(),
            });
        }
        Ok(())
    }
}

fn unreachable_directory() -> source::Error {
    source::Error::Connect {
        url: "ldaps://fake".into(),
        reason: "connection refused".into(),
    }
}

impl Directory for FakeDirectory {
    async fn accounts(&self, scope: &SearchScope) -> Result<Vec<SourceAccount>, source::Error> {
        self.check()?;
        self.log("accounts".into());
        Ok(self.in_scope(scope, None))
    }

    async fn read(
        &self,
        scope: &SearchScope,
        since: Option<&Position>,
    ) -> Result<Read, source::Error> {
        self.check()?;
        let changes = self.changes.lock().unwrap();
        let position = Position {
            server: FAKE_SERVER.into(),
            mark: changes.last.to_string(),
        };
        if let Some(why) = self.no_marks.lock().unwrap().clone() {
            drop(changes);
            self.log("read full".into());
            return Ok(Read::Full {
                accounts: self.in_scope(scope, None),
                position: None,
                fell_back: Some(format!("incremental reads are off: {why}")),
            });
        }
        let from = since
            .filter(|p| p.server == FAKE_SERVER)
            .and_then(|p| p.mark.parse::<u64>().ok());
        match from {
            Some(from) => {
                let dns: Vec<String> = changes.since(from).cloned().collect();
                drop(changes);
                self.log("read changes".into());
                let departed = self
                    .departed
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(n, _)| *n > from)
                    .map(|(_, d)| d.clone())
                    .collect();
                Ok(Read::Changes {
                    changed: self.in_scope(scope, Some(&dns)),
                    departed,
                    position,
                })
            }
            None => {
                drop(changes);
                self.log("read full".into());
                Ok(Read::Full {
                    accounts: self.in_scope(scope, None),
                    position: Some(position),
                    fell_back: None,
                })
            }
        }
    }

    async fn accounts_by_anchor(
        &self,
        scope: &SearchScope,
        anchors: &[crate::model::Anchor],
    ) -> Result<Vec<SourceAccount>, source::Error> {
        self.check()?;
        self.log(format!("accounts_by_anchor {}", anchors.len()));
        Ok(self
            .in_scope(scope, None)
            .into_iter()
            .filter(|a| a.anchor().is_some_and(|x| anchors.contains(x)))
            .collect())
    }

    async fn entry(&self, dn: &str) -> Result<Option<SourceAccount>, source::Error> {
        self.check()?;
        Ok(self.entries.lock().unwrap().get(dn).cloned())
    }

    async fn set_mail(&self, dn: &str, mail: Option<&str>) -> Result<(), source::Error> {
        self.write(format!("set_mail {dn}"), dn, |a| {
            a.mail = mail.map(str::to_string)
        })
        .await
    }

    async fn set_password(&self, dn: &str, password: &SecretString) -> Result<(), source::Error> {
        self.passwords
            .lock()
            .unwrap()
            .push(password.expose_secret().to_string());
        self.write(format!("set_password {dn}"), dn, |a| {
            a.password_changed = Some(filetime(jiff::Timestamp::now()));
        })
        .await
    }
}

/// A tenant of users by id that records each invitation it processes and keeps a delta.
pub struct FakeCloud {
    pub users: Mutex<HashMap<String, CloudUser>>,
    /// The verified domains (`contoso.example` unless set).
    pub domains: Mutex<Vec<String>>,
    /// Invitations processed, by user id.
    pub invitations: Mutex<HashMap<String, usize>>,
    /// Invitations are processed, then the answer is lost (a dropped connection).
    pub lose_answers: Mutex<bool>,
    /// Invitations are lost before the service sees them.
    pub drop_requests: Mutex<bool>,
    /// Invitations are refused with a `Retry-After` past the maximum wait.
    pub wait_too_long: Mutex<bool>,
    /// Sign-in session revocations, by user id.
    pub revocations: Mutex<HashMap<String, usize>>,
    /// Revocations fail (a 503 the retries did not outlast).
    pub fail_revocations: Mutex<bool>,
    /// Each user's `signInSessionsValidFromDateTime`, set by a revocation.
    pub sessions_valid_from: Mutex<HashMap<String, String>>,
    /// Revocations take effect, then their answer is lost (a dropped connection).
    pub lose_revocation_answers: Mutex<bool>,
    /// Every call, in order (`update_user <id>`, `invite <id>`, `users`, `users_since`, ...).
    pub calls: Mutex<Vec<String>>,
    /// How long each write takes.
    pub delay: Mutex<Duration>,
    /// Writes in flight.
    pub in_flight: InFlight,
    changes: Mutex<Changes>,
}

impl Default for FakeCloud {
    fn default() -> Self {
        FakeCloud {
            users: Mutex::default(),
            domains: Mutex::new(vec!["contoso.example".into()]),
            invitations: Mutex::default(),
            lose_answers: Mutex::default(),
            drop_requests: Mutex::default(),
            wait_too_long: Mutex::default(),
            revocations: Mutex::default(),
            fail_revocations: Mutex::default(),
            sessions_valid_from: Mutex::default(),
            lose_revocation_answers: Mutex::default(),
            calls: Mutex::default(),
            delay: Mutex::default(),
            in_flight: InFlight::default(),
            changes: Mutex::default(),
        }
    }
}

impl FakeCloud {
    pub fn with(users: Vec<CloudUser>) -> FakeCloud {
        let cloud = FakeCloud::default();
        for user in users {
            cloud.put(user);
        }
        cloud
    }

    pub fn get(&self, id: &str) -> CloudUser {
        self.users.lock().unwrap()[id].clone()
    }

    /// Adds or replaces a user; the delta shows it.
    pub fn put(&self, user: CloudUser) {
        self.changes.lock().unwrap().touch(&user.id);
        self.users.lock().unwrap().insert(user.id.clone(), user);
    }

    /// Deletes a user; the delta shows it removed.
    pub fn remove(&self, id: &str) {
        self.changes.lock().unwrap().remove(id);
        self.users.lock().unwrap().remove(id);
    }

    pub fn invitations(&self, id: &str) -> usize {
        self.invitations
            .lock()
            .unwrap()
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    /// The calls made so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    async fn hold(&self) {
        let delay = *self.delay.lock().unwrap();
        self.in_flight.hold(delay).await;
    }

    fn link(&self) -> String {
        format!("{DELTA}{}", self.changes.lock().unwrap().last)
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
        self.log("users".into());
        let mut users: Vec<CloudUser> = self.users.lock().unwrap().values().cloned().collect();
        users.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(users)
    }

    async fn delta_link(&self) -> Result<Option<String>, cloud::Error> {
        Ok(Some(self.link()))
    }

    async fn users_since(&self, link: &str, _known: usize) -> Result<UserChanges, cloud::Error> {
        self.log("users_since".into());
        let Some(from) = link.strip_prefix(DELTA).and_then(|n| n.parse::<u64>().ok()) else {
            return Err(cloud::Error::Graph {
                path: "GET /users/delta".into(),
                status: 410,
                code: "resyncRequired".into(),
                message: format!("not a delta link of this tenant: {link}"),
                request_id: None,
                retry_after: None,
            });
        };
        let changes = self.changes.lock().unwrap();
        let users = self.users.lock().unwrap();
        let changed = changes
            .since(from)
            .filter_map(|id| users.get(id).cloned())
            .collect();
        let removed = changes
            .removed
            .iter()
            .filter(|(n, _)| *n > from)
            .map(|(_, id)| id.clone())
            .collect();
        let roles = users
            .values()
            .filter(|u| !u.roles.is_empty())
            .map(|u| (u.id.clone(), u.roles.clone()))
            .collect();
        Ok(UserChanges {
            changed,
            removed,
            delta_link: format!("{DELTA}{}", changes.last),
            roles,
        })
    }

    async fn user(&self, id: &str) -> Result<Option<CloudUser>, cloud::Error> {
        Ok(self.users.lock().unwrap().get(id).cloned())
    }

    async fn sessions_valid_from(&self, id: &str) -> Result<Option<Option<String>>, cloud::Error> {
        if !self.users.lock().unwrap().contains_key(id) {
            return Ok(None);
        }
        Ok(Some(
            self.sessions_valid_from.lock().unwrap().get(id).cloned(),
        ))
    }

    async fn verified_domains(&self) -> Result<Vec<String>, cloud::Error> {
        Ok(self.domains.lock().unwrap().clone())
    }

    async fn update_user(&self, id: &str, patch: &UserPatch) -> Result<RequestIds, cloud::Error> {
        self.log(format!("update_user {id}"));
        self.hold().await;
        {
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
        }
        self.changes.lock().unwrap().touch(id);
        Ok(RequestIds::default())
    }

    async fn revoke_sessions(&self, id: &str) -> Result<RequestIds, cloud::Error> {
        self.log(format!("revoke_sessions {id}"));
        self.hold().await;
        if *self.fail_revocations.lock().unwrap() {
            return Err(cloud::Error::Graph {
                path: format!("POST /users/{id}/revokeSignInSessions"),
                status: 503,
                code: "serviceNotAvailable".into(),
                message: "The service is temporarily unavailable.".into(),
                request_id: None,
                retry_after: None,
            });
        }
        *self
            .revocations
            .lock()
            .unwrap()
            .entry(id.to_owned())
            .or_default() += 1;
        self.sessions_valid_from.lock().unwrap().insert(
            id.to_owned(),
            jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
        );
        if *self.lose_revocation_answers.lock().unwrap() {
            return Err(dropped());
        }
        Ok(RequestIds::default())
    }

    async fn invite(&self, invitation: &Invitation) -> Result<InvitationSent, cloud::Error> {
        self.log(format!("invite {}", invitation.user_id));
        self.hold().await;
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
        self.changes.lock().unwrap().touch(&invitation.user_id);
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
    let (before, after) = journal_values(op);
    interrupted_record(crate::apply::kind(op), before, after, state)
}

/// A store in which run `run-a` journaled `action` with these values as started, and the
/// account's row.
pub fn interrupted_record(
    action: crate::state::Action,
    before: Option<crate::state::Values>,
    after: Option<crate::state::Values>,
    state: Lifecycle,
) -> (tempfile::TempDir, Mutex<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let key = format!("{ACCOUNT}/0/{action}");
    store
        .journal(
            "run-a",
            &key,
            action,
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
