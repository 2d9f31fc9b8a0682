//! Executes a plan's actions against the directory and the cloud: accounts concurrently
//! within a limit, each account's actions in order (a failed step skips the rest of that
//! account), every action journaled `started` before the call and `done`/`failed` after, and
//! the account's progress saved as soon as its actions end, so a crash at any point leaves a
//! record the next run reconciles from ([`reconcile()`]).

#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
pub mod reconcile;
pub mod rollback;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt as _;
use serde::Serialize;

use crate::cloud::{self, Cloud, UserPatch};
use crate::model::Progress;
use crate::plan::{self, AccountOutcome, Action, Op, Plan};
use crate::source::{self, Directory, password};
use crate::state::{self, Phase, Store, Values};

pub use reconcile::reconcile;

/// How `apply` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Accounts worked on at the same time.
    pub concurrency: usize,
    /// Length of the random on-premises passwords.
    pub password_length: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: 8,
            password_length: password::DEFAULT_LENGTH,
        }
    }
}

/// What happened to one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Done,
    Failed {
        error: String,
        help: String,
    },
    /// Not tried: an earlier action of the same account failed, or a server asked for a
    /// wait past the maximum and the run started no further action.
    Skipped,
}

/// One action's result, for the run summary and `--json` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionResult {
    pub key: String,
    pub account: String,
    pub op: &'static str,
    #[serde(flatten)]
    pub status: Status,
    pub request_id: Option<String>,
}

/// Everything `apply` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub actions: Vec<ActionResult>,
}

impl Outcome {
    pub fn count(&self, f: impl Fn(&Status) -> bool) -> usize {
        self.actions.iter().filter(|a| f(&a.status)).count()
    }

    pub fn done(&self) -> usize {
        self.count(|s| matches!(s, Status::Done))
    }

    pub fn failed(&self) -> usize {
        self.count(|s| matches!(s, Status::Failed { .. }))
    }

    pub fn skipped(&self) -> usize {
        self.count(|s| matches!(s, Status::Skipped))
    }
}

/// The journal of one run, shared by the concurrent account tasks.
///
/// Every record is committed (and synced) before `Journal::record` returns, exactly as
/// with one transaction per record; records that concurrent accounts hand in while a commit
/// is being synced share the next commit (group commit), on a connection of its own in a
/// writer thread, so one fsync serves many accounts and the account tasks keep running
/// meanwhile. Without that connection every record is written directly, one by one.
pub struct Journal<'a> {
    pub store: &'a Mutex<Store>,
    pub run_id: &'a str,
    writer: Option<GroupCommit>,
}

/// One write the journal makes: a record, or an account's progress.
enum Write {
    Record {
        action_key: String,
        action: state::Action,
        account_key: String,
        phase: Phase,
        // Boxed: the values are large next to the other variant, and often absent.
        before: Option<Box<Values>>,
        after: Option<Box<Values>>,
        request_id: Option<String>,
        client_request_id: Option<String>,
        error: Option<String>,
    },
    Progress {
        key: String,
        dn: String,
        kind: Option<String>,
        reason: Option<&'static str>,
        progress: Progress,
    },
    /// An invitation's redeem link, for the account's row (saved after its progress).
    RedeemUrl { key: String, url: String },
}

impl Write {
    fn apply(&self, store: &Store, run_id: &str) -> Result<(), crate::state::Error> {
        match self {
            Write::Record {
                action_key,
                action,
                account_key,
                phase,
                before,
                after,
                request_id,
                client_request_id,
                error,
            } => store.journal(
                run_id,
                action_key,
                *action,
                account_key,
                *phase,
                before.as_deref(),
                after.as_deref(),
                request_id.as_deref(),
                client_request_id.as_deref(),
                error.as_deref(),
            ),
            Write::Progress {
                key,
                dn,
                kind,
                reason,
                progress,
            } => store.save_account(key, Some(dn), kind.as_deref(), *reason, progress),
            Write::RedeemUrl { key, url } => store.set_redeem_url(key, url),
        }
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<(), crate::state::Error>>;

/// The writer thread of the group commit and the channel to it.
struct GroupCommit {
    sender: Option<std::sync::mpsc::Sender<(Write, Reply)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Most writes in one commit.
const GROUP_MAX: usize = 1024;

impl GroupCommit {
    fn start(path: std::path::PathBuf, run_id: String) -> Option<GroupCommit> {
        let (sender, receiver) = std::sync::mpsc::channel::<(Write, Reply)>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<bool>();
        let thread = std::thread::Builder::new()
            .name("b2bsync-journal".into())
            .spawn(move || {
                let mut store = match Store::open(&path) {
                    Ok(store) => {
                        let _ = ready_tx.send(true);
                        store
                    }
                    Err(e) => {
                        tracing::debug!("journal writes one by one: {e}");
                        let _ = ready_tx.send(false);
                        return;
                    }
                };
                while let Ok(first) = receiver.recv() {
                    let mut group = vec![first];
                    while group.len() < GROUP_MAX {
                        match receiver.try_recv() {
                            Ok(next) => group.push(next),
                            Err(_) => break,
                        }
                    }
                    let together = store.transaction(|s| {
                        for (write, _) in &group {
                            write.apply(s, &run_id)?;
                        }
                        Ok(())
                    });
                    if together.is_ok() {
                        for (_, reply) in group {
                            let _ = reply.send(Ok(()));
                        }
                    } else {
                        // One bad write must not fail the others: each in a transaction of
                        // its own, so an answer is Ok only once its own commit succeeded.
                        for (write, reply) in group {
                            let _ = reply.send(store.transaction(|s| write.apply(s, &run_id)));
                        }
                    }
                }
            })
            .ok()?;
        if ready_rx.recv().unwrap_or(false) {
            Some(GroupCommit {
                sender: Some(sender),
                thread: Some(thread),
            })
        } else {
            let _ = thread.join();
            None
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has answered every write.
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<'a> Journal<'a> {
    /// The journal of `run_id` in `store`, with group commit when a second connection to
    /// the same file can be opened.
    pub fn new(store: &'a Mutex<Store>, run_id: &'a str) -> Journal<'a> {
        let path = {
            let guard = store.lock().unwrap_or_else(|p| p.into_inner());
            guard.path().to_path_buf()
        };
        Journal {
            store,
            run_id,
            writer: GroupCommit::start(path, run_id.to_string()),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, crate::state::Error>,
    ) -> Result<T, crate::state::Error> {
        // A poisoned lock means another task panicked while writing; the store itself is
        // transactional, so continuing with it is safe.
        let guard = self.store.lock().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Commits `write`: through the writer thread, or directly.
    async fn commit(&self, write: Write) -> Result<(), crate::state::Error> {
        if let Some(sender) = self.writer.as_ref().and_then(|w| w.sender.as_ref()) {
            let (reply, answer) = tokio::sync::oneshot::channel();
            match sender.send((write, reply)) {
                Ok(()) => {
                    if let Ok(result) = answer.await {
                        return result;
                    }
                    // The writer thread is gone without an answer: whether the write was
                    // committed is unknown, so it is not repeated and counts as failed.
                    return Err(crate::state::Error::Open {
                        path: std::path::PathBuf::from("journal writer"),
                        reason: "the journal writer stopped".into(),
                    });
                }
                Err(std::sync::mpsc::SendError((write, _))) => {
                    return self.with(|s| write.apply(s, self.run_id));
                }
            }
        }
        self.with(|s| write.apply(s, self.run_id))
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        action: &Action,
        phase: Phase,
        before: Option<&Values>,
        after: Option<&Values>,
        ids: Option<&cloud::RequestIds>,
        error: Option<&str>,
    ) -> Result<(), crate::state::Error> {
        self.commit(Write::Record {
            action_key: action.key(),
            action: kind(&action.op),
            account_key: action.account.clone(),
            phase,
            before: before.cloned().map(Box::new),
            after: after.cloned().map(Box::new),
            request_id: ids.and_then(|i| i.request_id.clone()),
            client_request_id: ids.map(|i| i.client_request_id.clone()),
            error: error.map(str::to_string),
        })
        .await
    }
}

/// The journal's name for an operation: the kind whose text is `op.name()`.
pub fn kind(op: &Op) -> state::Action {
    match op {
        Op::SetDirectoryMail { .. } => state::Action::SetDirectoryMail,
        Op::SetCloudAddress { .. } => state::Action::SetCloudAddress,
        Op::Invite(_) => state::Action::Invite,
        Op::Reinvite(_) => state::Action::Reinvite,
        Op::RandomizePassword { .. } => state::Action::RandomizePassword,
        Op::RevokeSessions { .. } => state::Action::RevokeSessions,
        Op::SetUserType { .. } => state::Action::SetUserType,
    }
}

/// The before and after values the journal keeps for an operation (never a password).
pub fn journal_values(op: &Op) -> (Option<Values>, Option<Values>) {
    match op {
        // The after-value names the target (`dn`, `userId`), so that reconciliation reads
        // the right entry even when the crash came before the account's row was saved.
        Op::SetDirectoryMail { dn, from, to } => (
            Some(Values {
                mail: Some(from.clone()),
                ..Values::default()
            }),
            Some(Values {
                mail: Some(Some(to.clone())),
                dn: Some(dn.clone()),
                ..Values::default()
            }),
        ),
        Op::SetCloudAddress {
            user_id,
            other_mails_from,
            other_mails_to,
            mail_from,
            mail_to,
        } => (
            Some(Values {
                mail: Some(mail_from.clone()),
                other_mails: Some(Some(other_mails_from.clone())),
                ..Values::default()
            }),
            Some(Values {
                mail: Some(mail_to.clone()),
                other_mails: Some(other_mails_to.clone()),
                user_id: Some(user_id.clone()),
                ..Values::default()
            }),
        ),
        Op::Invite(inv) | Op::Reinvite(inv) => (
            None,
            Some(Values {
                user_id: Some(inv.user_id.clone()),
                email: Some(inv.email.clone()),
                attempt: Some(inv.attempt),
                ..Values::default()
            }),
        ),
        Op::RandomizePassword { dn, .. } => (
            None,
            Some(Values {
                password: Some("randomized".into()),
                dn: Some(dn.clone()),
                ..Values::default()
            }),
        ),
        Op::RevokeSessions { user_id } => (
            None,
            Some(Values {
                user_id: Some(user_id.clone()),
                ..Values::default()
            }),
        ),
        Op::SetUserType { user_id, from, to } => (
            Some(Values {
                user_type: Some(from.clone()),
                ..Values::default()
            }),
            Some(Values {
                user_type: Some(Some(to.as_str().to_string())),
                user_id: Some(user_id.clone()),
                ..Values::default()
            }),
        ),
    }
}

/// What a successful operation returned that the progress needs.
struct Effect {
    ids: Option<cloud::RequestIds>,
    invitation_id: Option<String>,
    /// The answer was lost and the effect was read back instead: what the read showed.
    read_back: Option<String>,
    /// The invitation's `inviteRedeemUrl`, kept when Microsoft sends no email (the admin
    /// delivers it). Goes to the state store only, never to a log or the journal.
    redeem_url: Option<String>,
}

impl Effect {
    fn of(ids: Option<cloud::RequestIds>, invitation_id: Option<String>) -> Effect {
        Effect {
            ids,
            invitation_id,
            read_back: None,
            redeem_url: None,
        }
    }
}

/// The longest redeem link kept (Graph's are a few hundred characters).
const MAX_REDEEM_URL: usize = 4096;

/// A redeem link worth keeping: https, bounded, no whitespace or control characters (the
/// answer is untrusted and the link ends up in a file an admin opens).
fn usable_redeem_url(url: &str) -> bool {
    url.len() <= MAX_REDEEM_URL
        && url.starts_with("https://")
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// What a run shares across its concurrent accounts to stop work: a server asking for a
/// wait past the maximum stops every action; an invitation answered with something else than
/// the conversion asked for stops every further invitation. The first invitation of a run
/// goes alone, so a service (or a proxy, or an SDK) that answers wrongly is caught after
/// exactly one invitation.
#[derive(Default)]
struct Gates {
    halted: AtomicBool,
    invitations_stopped: AtomicBool,
    /// `true` once an invitation of this run was answered as asked.
    invitation_verified: tokio::sync::Mutex<bool>,
}

/// The waits before each read that settles, within the run, an action whose answer was
/// lost (a connection dropped after the request may have been sent): about 7 s in all, as
/// the service may take a moment to show what it processed.
pub const SETTLE_WAITS: [std::time::Duration; 3] = [
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(2),
    std::time::Duration::from_secs(4),
];

/// Reads back an action whose answer was lost, after each of `waits`, until the world shows
/// it took effect. `None`: it never showed, or could not be read; the caller then does what
/// it would have done without the read (an invitation stays unfinished for the next run's
/// reconciliation, which reads again before anything is sent twice).
async fn read_back<D: Directory + Sync, C: Cloud + Sync>(
    pending: &reconcile::Pending<'_>,
    directory: &D,
    cloud: &C,
    waits: &[std::time::Duration],
) -> Option<String> {
    for wait in waits {
        tokio::time::sleep(*wait).await;
        match reconcile::settle(pending, directory, cloud).await {
            Ok(reconcile::Verdict::Done(why)) => return Some(why),
            Ok(verdict) => {
                tracing::debug!(
                    action = %pending.action,
                    verdict = verdict.as_str(),
                    why = verdict.why(),
                    "Read back an action whose answer was lost; not shown yet."
                );
            }
            Err(e) => {
                tracing::debug!(action = %pending.action, error = %e, "Could not read back an action whose answer was lost.");
            }
        }
    }
    None
}

/// A failed operation: message and help.
struct OpError {
    message: String,
    help: String,
    /// The call may have taken effect (the connection broke after the request was sent).
    unknown_outcome: bool,
    /// The service asked for a wait past [`cloud::MAX_WAIT`]: no further action of this run
    /// is started, and the next run continues.
    halts_run: bool,
    /// An invitation answer that is not the conversion asked for (what came back): no
    /// further invitation is sent in this run, and the account is blocked.
    bad_answer: Option<String>,
    /// The ids of the answer, when one came.
    ids: Option<cloud::RequestIds>,
}

impl OpError {
    /// An invitation answered with something other than the conversion of `user_id`.
    fn bad_invitation_answer(
        user_id: &str,
        what: String,
        ids: Option<cloud::RequestIds>,
    ) -> OpError {
        OpError {
            message: format!(
                "the invitation of user {user_id} was not answered as its conversion: {what}; no further invitation is sent in this run and the account is blocked"
            ),
            help: crate::plan::ReasonCode::InvitationAnswerMismatch.help(),
            unknown_outcome: false,
            halts_run: false,
            bad_answer: Some(what),
            ids,
        }
    }
}

impl From<source::Error> for OpError {
    fn from(e: source::Error) -> Self {
        OpError {
            help: e.help(),
            message: e.to_string(),
            unknown_outcome: e.outcome_unknown(),
            halts_run: false,
            bad_answer: None,
            ids: None,
        }
    }
}

impl From<cloud::Error> for OpError {
    fn from(e: cloud::Error) -> Self {
        OpError {
            help: e.help(),
            message: e.to_string(),
            unknown_outcome: matches!(e, cloud::Error::Transport { .. }),
            halts_run: matches!(e, cloud::Error::WaitTooLong { .. }),
            bad_answer: None,
            ids: None,
        }
    }
}

impl From<password::Error> for OpError {
    fn from(e: password::Error) -> Self {
        OpError {
            help: e.help(),
            message: e.to_string(),
            unknown_outcome: false,
            halts_run: false,
            bad_answer: None,
            ids: None,
        }
    }
}

async fn execute_op<D: Directory + Sync, C: Cloud + Sync>(
    op: &Op,
    directory: &D,
    cloud: &C,
    options: &Options,
) -> Result<Effect, OpError> {
    match op {
        Op::SetDirectoryMail { dn, to, .. } => {
            directory.set_mail(dn, Some(to)).await?;
            Ok(Effect::of(None, None))
        }
        Op::SetCloudAddress {
            user_id,
            other_mails_to,
            mail_to,
            ..
        } => {
            let patch = UserPatch {
                mail: mail_to.clone(),
                other_mails: other_mails_to.clone(),
                ..UserPatch::default()
            };
            let ids = cloud.update_user(user_id, &patch).await?;
            Ok(Effect::of(Some(ids), None))
        }
        Op::Invite(inv) | Op::Reinvite(inv) => {
            let invitation = cloud::Invitation {
                user_id: inv.user_id.clone(),
                email: inv.email.clone(),
                redirect_url: inv.redirect_url.clone(),
                send_message: inv.send_message,
                message_body: inv.message_body.clone(),
                message_language: inv.message_language.clone(),
                cc: inv.cc.clone(),
                reset_redemption: matches!(op, Op::Reinvite(_)),
            };
            let sent = match cloud.invite(&invitation).await {
                Ok(sent) => sent,
                // A 201 whose body does not read: something was created, but what is unknown.
                Err(e @ cloud::Error::Decode { .. }) => {
                    return Err(OpError::bad_invitation_answer(
                        &inv.user_id,
                        format!("an answer b2bsync cannot read ({e})"),
                        None,
                    ));
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(problem) = sent.problem(&inv.user_id) {
                let what = format!("{problem} ({})", sent.described());
                return Err(OpError::bad_invitation_answer(
                    &inv.user_id,
                    what,
                    Some(sent.ids),
                ));
            }
            let redeem_url = match sent.redeem_url {
                Some(url) if !inv.send_message && usable_redeem_url(&url) => Some(url),
                Some(_) if !inv.send_message => {
                    tracing::warn!(user_id = %inv.user_id, "The invitation's redeem link is not an https link b2bsync keeps; it is dropped (not shown).");
                    None
                }
                _ => None,
            };
            Ok(Effect {
                redeem_url,
                ..Effect::of(Some(sent.ids), Some(sent.invitation_id))
            })
        }
        Op::RandomizePassword {
            dn,
            account_name,
            display_name,
        } => {
            let name = account_name.as_deref().unwrap_or_default();
            let mut last = None;
            // A policy rejection (a stricter fine-grained policy) gets one fresh try.
            for _ in 0..2 {
                let secret =
                    password::generate(options.password_length, name, display_name.as_deref())?;
                match directory.set_password(dn, &secret).await {
                    Ok(()) => return Ok(Effect::of(None, None)),
                    Err(e @ source::Error::PasswordPolicy { .. }) => last = Some(e),
                    Err(e) => return Err(e.into()),
                }
                // `secret` is dropped (and zeroed) here, before anything else happens.
            }
            Err(last.map(OpError::from).unwrap_or_else(|| OpError {
                message: "password reset failed".into(),
                help: "check the directory's password policy".into(),
                unknown_outcome: false,
                halts_run: false,
                bad_answer: None,
                ids: None,
            }))
        }
        Op::RevokeSessions { user_id } => {
            let ids = cloud.revoke_sessions(user_id).await?;
            Ok(Effect::of(Some(ids), None))
        }
        Op::SetUserType { user_id, to, .. } => {
            let patch = UserPatch {
                user_type: Some(to.as_str().to_string()),
                ..UserPatch::default()
            };
            let ids = cloud.update_user(user_id, &patch).await?;
            Ok(Effect::of(Some(ids), None))
        }
    }
}

/// Runs one account's actions in order and saves its progress.
#[allow(clippy::too_many_arguments)]
async fn run_account<D: Directory + Sync, C: Cloud + Sync>(
    actions: Vec<&Action>,
    outcome: Option<&AccountOutcome>,
    previous: Option<&Progress>,
    directory: &D,
    cloud: &C,
    journal: &Journal<'_>,
    options: &Options,
    now: jiff::Timestamp,
    settle_waits: &[std::time::Duration],
    gates: &Gates,
    ended: &(dyn Fn() + Sync),
) -> Vec<ActionResult> {
    let mut results = Vec::with_capacity(actions.len());
    // Every log line about the account names it as people know it.
    let name = match outcome {
        Some(o) => o.name().to_string(),
        None => actions
            .first()
            .map(|a| a.account.clone())
            .unwrap_or_default(),
    };
    let mut succeeded: Vec<&Op> = Vec::new();
    let mut invitation_id = None;
    let mut redeem_url = None;
    let mut bad_answer = None;
    let mut failed = false;
    for action in actions {
        let key = action.key();
        let invites = matches!(action.op, Op::Invite(_) | Op::Reinvite(_));
        // Until an invitation of this run was answered as asked, invitations go one at a
        // time: this one holds the gate until its answer is checked.
        let mut alone = None;
        if invites && !failed && !gates.halted.load(Ordering::Relaxed) {
            let verified = gates.invitation_verified.lock().await;
            if !*verified {
                alone = Some(verified);
            }
        }
        if failed
            || gates.halted.load(Ordering::Relaxed)
            || (invites && gates.invitations_stopped.load(Ordering::Relaxed))
        {
            results.push(ActionResult {
                key,
                account: action.account.clone(),
                op: action.op.name(),
                status: Status::Skipped,
                request_id: None,
            });
            continue;
        }
        let (before, after) = journal_values(&action.op);
        let started = jiff::Timestamp::now();
        if let Err(e) = journal
            .record(
                action,
                Phase::Started,
                before.as_ref(),
                after.as_ref(),
                None,
                None,
            )
            .await
        {
            // Without the `started` record a crash could hide this call: do not make it.
            failed = true;
            results.push(ActionResult {
                key,
                account: action.account.clone(),
                op: action.op.name(),
                status: Status::Failed {
                    error: e.to_string(),
                    help: e.help().to_string(),
                },
                request_id: None,
            });
            continue;
        }
        let result = match execute_op(&action.op, directory, cloud, options).await {
            // The request may have been processed with its answer lost: read the world
            // before giving up on it (a dropped connection fails every call in flight).
            Err(e) if e.unknown_outcome => {
                let pending = reconcile::Pending {
                    action: kind(&action.op),
                    before: before.as_ref(),
                    after: after.as_ref(),
                    started,
                    dn: None,
                    cloud_id: None,
                };
                match read_back(&pending, directory, cloud, settle_waits).await {
                    Some(why) => {
                        tracing::warn!(account = %name, action = %key, op = action.op.name(), error = %e.message, shown = %why, "The answer was lost, but the call took effect: recorded, not repeated.");
                        Ok(Effect {
                            ids: None,
                            invitation_id: None,
                            redeem_url: None,
                            read_back: Some(format!(
                                "answer lost ({}); read back: {why}",
                                e.message
                            )),
                        })
                    }
                    None => Err(e),
                }
            }
            other => other,
        };
        match result {
            Ok(effect) => {
                let request_id = effect.ids.as_ref().and_then(|i| i.request_id.clone());
                if let Err(e) = journal
                    .record(
                        action,
                        Phase::Done,
                        before.as_ref(),
                        after.as_ref(),
                        effect.ids.as_ref(),
                        effect.read_back.as_deref(),
                    )
                    .await
                {
                    tracing::error!(account = %name, action = %key, "the journal could not record a finished action: {e}");
                }
                tracing::info!(account = %name, action = %key, op = action.op.name(), request_id = request_id.as_deref(), "done");
                ended();
                if let Some(mut verified) = alone.take() {
                    *verified = true;
                }
                if effect.invitation_id.is_some() {
                    invitation_id = effect.invitation_id;
                }
                if effect.redeem_url.is_some() {
                    redeem_url = effect.redeem_url;
                }
                succeeded.push(&action.op);
                results.push(ActionResult {
                    key,
                    account: action.account.clone(),
                    op: action.op.name(),
                    status: Status::Done,
                    request_id,
                });
            }
            Err(mut e) => {
                failed = true;
                if let Some(what) = &e.bad_answer {
                    gates.invitations_stopped.store(true, Ordering::Relaxed);
                    tracing::error!(
                        action = %key,
                        account = %name,
                        request_id = e.ids.as_ref().and_then(|i| i.request_id.as_deref()),
                        answer = %what,
                        "An invitation was not answered as the conversion asked for: no further invitation is sent in this run, and the account is blocked until an admin checks it."
                    );
                    bad_answer = Some(what.clone());
                }
                drop(alone.take());
                if e.halts_run && !gates.halted.swap(true, Ordering::Relaxed) {
                    tracing::warn!(account = %name, action = %key, error = %e.message, "A server asked for a wait past the maximum: no further action is started in this run; the next run continues where it stopped.");
                }
                if e.unknown_outcome && action.op.non_idempotent() {
                    // Whether the service processed it is unknown: the `started` record
                    // stays open, and the next run's reconciliation reads the cloud before
                    // anything is sent again.
                    e.message = format!(
                        "{} (outcome unknown: the cloud did not show it within this run; the next run checks again before repeating anything)",
                        e.message
                    );
                } else if let Err(j) = journal
                    .record(
                        action,
                        Phase::Failed,
                        before.as_ref(),
                        None,
                        e.ids.as_ref(),
                        Some(&e.message),
                    )
                    .await
                {
                    tracing::error!(account = %name, action = %key, "the journal could not record a failed action: {j}");
                }
                tracing::warn!(account = %name, action = %key, op = action.op.name(), "failed: {}", e.message);
                ended();
                results.push(ActionResult {
                    key,
                    account: action.account.clone(),
                    op: action.op.name(),
                    status: Status::Failed {
                        error: e.message,
                        help: e.help,
                    },
                    request_id: e.ids.and_then(|i| i.request_id),
                });
            }
        }
    }
    if let Some(outcome) = outcome {
        let mut progress =
            plan::progress_after(previous, outcome, &succeeded, invitation_id.as_deref(), now);
        let mut reason = outcome.reasons.first().map(|r| r.reason.code());
        if let Some(what) = bad_answer {
            // Never carried on as if converted: blocked until an admin clears it.
            progress.state = crate::model::Lifecycle::Blocked;
            progress.invitation_mismatch = Some(what);
            reason = Some(plan::ReasonCode::InvitationAnswerMismatch.code());
        }
        let kind = outcome.kind.map(|k| k.to_string());
        let saved = journal
            .commit(Write::Progress {
                key: outcome.key.clone(),
                dn: outcome.dn.clone(),
                kind,
                reason,
                progress,
            })
            .await;
        if let Err(e) = saved {
            tracing::error!(account = %name, "cannot save the account's progress: {e}");
        } else if let Some(url) = redeem_url {
            let key = outcome.key.clone();
            if let Err(e) = journal.commit(Write::RedeemUrl { key, url }).await {
                tracing::error!(account = %name, "cannot save the invitation's redeem link: {e}");
            }
        }
    }
    results
}

/// Executes every action of `plan`. Per-account failures are data in the [`Outcome`]; the
/// caller decides the exit code. An action whose answer is lost is read back after each of
/// [`SETTLE_WAITS`]. `ended` is called as each action ends, done or failed (for progress).
#[allow(clippy::too_many_arguments)]
pub async fn execute<D: Directory + Sync, C: Cloud + Sync>(
    plan: &Plan,
    previous: &BTreeMap<String, Progress>,
    directory: &D,
    cloud: &C,
    journal: &Journal<'_>,
    options: &Options,
    now: jiff::Timestamp,
    ended: &(dyn Fn() + Sync),
) -> Outcome {
    let mut by_account: BTreeMap<&str, Vec<&Action>> = BTreeMap::new();
    for action in &plan.actions {
        by_account
            .entry(action.account.as_str())
            .or_default()
            .push(action);
    }
    let outcomes: BTreeMap<&str, &AccountOutcome> =
        plan.accounts.iter().map(|a| (a.key.as_str(), a)).collect();
    let gates = Gates::default();
    let tasks = by_account.into_iter().map(|(account, mut actions)| {
        actions.sort_by_key(|a| a.seq);
        run_account(
            actions,
            outcomes.get(account).copied(),
            previous.get(account),
            directory,
            cloud,
            journal,
            options,
            now,
            &SETTLE_WAITS,
            &gates,
            ended,
        )
    });
    let mut results: Vec<ActionResult> = futures_util::stream::iter(tasks)
        .buffer_unordered(options.concurrency.max(1))
        .flat_map(futures_util::stream::iter)
        .collect()
        .await;
    results.sort_by(|a, b| a.key.cmp(&b.key));
    Outcome { actions: results }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> Write {
        Write::Record {
            action_key: format!("invite:account-{n}"),
            action: state::Action::Invite,
            account_key: format!("account-{n}"),
            phase: Phase::Started,
            before: None,
            after: Some(Box::default()),
            request_id: None,
            client_request_id: None,
            error: None,
        }
    }

    fn invite_action() -> Action {
        Action {
            account: "anchor-1".into(),
            seq: 0,
            op: Op::Invite(fakes::invitation()),
        }
    }

    /// Runs one invitation against `cloud`, reading a lost answer back without waiting.
    async fn invite_once(cloud: &fakes::FakeCloud) -> (Vec<ActionResult>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store =
            Mutex::new(Store::open(&dir.path().join("state.db")).unwrap_or_else(|e| panic!("{e}")));
        let journal = Journal::new(&store, "run-1");
        let action = invite_action();
        let results = run_account(
            vec![&action],
            None,
            None,
            &fakes::FakeDirectory::default(),
            cloud,
            &journal,
            &Options::default(),
            jiff::Timestamp::now(),
            &[std::time::Duration::ZERO; 2],
            &Gates::default(),
            &|| {},
        )
        .await;
        drop(journal);
        let guard = store.lock().unwrap_or_else(|p| p.into_inner());
        let phases = guard
            .journal_entries(Some("run-1"))
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|e| format!("{} {}", e.phase, e.error.unwrap_or_default()))
            .collect();
        (results, phases)
    }

    #[tokio::test]
    async fn an_invitation_whose_answer_is_lost_is_read_back_and_journaled_done_once() {
        let mut user = crate::model::CloudUser {
            id: "u-1".into(),
            ..Default::default()
        };
        user.mail = Some("ana@fabrikam.example".into());
        let cloud = fakes::FakeCloud::with(vec![user]);
        // The service processes the invitation, then the connection drops.
        *cloud.lose_answers.lock().unwrap_or_else(|p| p.into_inner()) = true;
        let (results, phases) = invite_once(&cloud).await;
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].status, Status::Done, "{results:?}");
        assert_eq!(cloud.invitations("u-1"), 1, "sent once, never twice");
        assert_eq!(phases.len(), 2, "{phases:?}");
        assert!(phases[0].starts_with("started"));
        assert!(
            phases[1].starts_with("done") && phases[1].contains("answer lost"),
            "{phases:?}"
        );
    }

    #[tokio::test]
    async fn an_invitation_lost_before_the_service_saw_it_stays_unfinished() {
        let cloud = fakes::FakeCloud::with(vec![crate::model::CloudUser {
            id: "u-1".into(),
            ..Default::default()
        }]);
        *cloud
            .drop_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = true;
        let (results, phases) = invite_once(&cloud).await;
        assert!(
            matches!(&results[0].status, Status::Failed { error, .. } if error.contains("outcome unknown")),
            "{results:?}"
        );
        assert_eq!(cloud.invitations("u-1"), 0);
        // Reading no change cannot prove the request was not processed in flight: the
        // `started` record stays open for the next run's reconciliation, not sent again.
        assert_eq!(phases, vec!["started ".to_string()]);
    }

    #[tokio::test]
    async fn a_wait_past_the_maximum_stops_the_run_from_starting_further_actions() {
        let users = ["u-1", "u-2"].map(|id| crate::model::CloudUser {
            id: id.into(),
            ..Default::default()
        });
        let cloud = fakes::FakeCloud::with(users.to_vec());
        *cloud
            .wait_too_long
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = true;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store =
            Mutex::new(Store::open(&dir.path().join("state.db")).unwrap_or_else(|e| panic!("{e}")));
        let journal = Journal::new(&store, "run-1");
        let first = invite_action();
        let mut second = invite_action();
        second.account = "anchor-2".into();
        if let Op::Invite(inv) = &mut second.op {
            inv.user_id = "u-2".into();
        }
        let gates = Gates::default();
        let mut results = Vec::new();
        for action in [&first, &second] {
            results.extend(
                run_account(
                    vec![action],
                    None,
                    None,
                    &fakes::FakeDirectory::default(),
                    &cloud,
                    &journal,
                    &Options::default(),
                    jiff::Timestamp::now(),
                    &[],
                    &gates,
                    &|| {},
                )
                .await,
            );
        }
        drop(journal);
        assert!(gates.halted.load(Ordering::Relaxed));
        assert!(
            matches!(&results[0].status, Status::Failed { error, .. } if error.contains("5-minute maximum")),
            "{results:?}"
        );
        assert_eq!(results[1].status, Status::Skipped, "{results:?}");
        // The second account was never journaled as started, so nothing is left to settle.
        let guard = store.lock().unwrap_or_else(|p| p.into_inner());
        let entries = guard
            .journal_entries(Some("run-1"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            entries.iter().all(|e| e.account_key != "anchor-2"),
            "{entries:?}"
        );
    }

    #[test]
    fn journal_values_store_the_same_text_and_kind_as_before() {
        let mut half_address = fakes::set_cloud_address();
        if let Op::SetCloudAddress {
            other_mails_to,
            mail_from,
            ..
        } = &mut half_address
        {
            *other_mails_to = None;
            *mail_from = Some("Old \"quoted\" <x@y>".into());
        }
        // Each operation with the text earlier builds stored (`serde_json::json!`, keys in
        // byte order), before and after.
        let cases: [(Op, Option<&str>, &str); 8] = [
            (
                fakes::set_mail(),
                Some(r#"{"mail":"old@contoso.example"}"#),
                r#"{"dn":"CN=p.adams,OU=Partners,DC=lab","mail":"ana@fabrikam.example"}"#,
            ),
            (
                Op::SetDirectoryMail {
                    dn: "CN=x".into(),
                    from: None,
                    to: "a@b".into(),
                },
                Some(r#"{"mail":null}"#),
                r#"{"dn":"CN=x","mail":"a@b"}"#,
            ),
            (
                fakes::set_cloud_address(),
                Some(r#"{"mail":null,"otherMails":[]}"#),
                r#"{"mail":"ana@fabrikam.example","otherMails":["ana@fabrikam.example"],"userId":"u-1"}"#,
            ),
            (
                half_address,
                Some(r#"{"mail":"Old \"quoted\" <x@y>","otherMails":[]}"#),
                r#"{"mail":"ana@fabrikam.example","otherMails":null,"userId":"u-1"}"#,
            ),
            (
                Op::Invite(fakes::invitation()),
                None,
                r#"{"attempt":1,"email":"ana@fabrikam.example","userId":"u-1"}"#,
            ),
            (
                Op::Reinvite(fakes::invitation()),
                None,
                r#"{"attempt":1,"email":"ana@fabrikam.example","userId":"u-1"}"#,
            ),
            (
                fakes::randomize(),
                None,
                r#"{"dn":"CN=p.adams,OU=Partners,DC=lab","password":"randomized"}"#,
            ),
            (
                Op::SetUserType {
                    user_id: fakes::USER.into(),
                    from: None,
                    to: crate::mapping::UserType::Guest,
                },
                Some(r#"{"userType":null}"#),
                r#"{"userId":"u-1","userType":"Guest"}"#,
            ),
        ];
        for (op, before_text, after_text) in cases {
            let (before, after) = journal_values(&op);
            assert_eq!(before.as_ref().map(Values::to_json).as_deref(), before_text);
            assert_eq!(
                after.as_ref().map(Values::to_json).as_deref(),
                Some(after_text)
            );
            assert_eq!(kind(&op).as_str(), op.name());
            // Read back, the text gives the same values.
            let read =
                |t: &str| serde_json::from_str::<Values>(t).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(before_text.map(read), before, "{op:?}");
            assert_eq!(Some(read(after_text)), after, "{op:?}");
        }
    }

    /// The fast tier of `execute`: a plan run against the in-memory fakes and a temporary
    /// store. Returns the results by action key and the journal's records as
    /// `phase action_key`.
    async fn execute_plan(
        actions: Vec<Action>,
        directory: &fakes::FakeDirectory,
        cloud: &fakes::FakeCloud,
        concurrency: usize,
    ) -> (Vec<(String, Status)>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store =
            Mutex::new(Store::open(&dir.path().join("state.db")).unwrap_or_else(|e| panic!("{e}")));
        let journal = Journal::new(&store, "run-1");
        let plan = Plan {
            schema_version: 1,
            generated_at: String::new(),
            fingerprint: String::new(),
            mappings: Vec::new(),
            actions,
            accounts: Vec::new(),
            summary: plan::Summary::default(),
            carried: Vec::new(),
        };
        let options = Options {
            concurrency,
            ..Options::default()
        };
        let outcome = execute(
            &plan,
            &BTreeMap::new(),
            directory,
            cloud,
            &journal,
            &options,
            jiff::Timestamp::now(),
            &|| {},
        )
        .await;
        drop(journal);
        let records = store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .journal_entries(Some("run-1"))
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|e| format!("{} {}", e.phase, e.action_key))
            .collect();
        let results = outcome
            .actions
            .into_iter()
            .map(|a| (a.key, a.status))
            .collect();
        (results, records)
    }

    /// Account `n`: its entry's DN, its cloud user's id and its key.
    fn nth(n: usize) -> (String, String, String) {
        (
            format!("CN=p{n},OU=Partners,DC=lab"),
            format!("u-{n}"),
            format!("anchor-{n}"),
        )
    }

    /// A directory and a tenant holding accounts `0..n`.
    fn world(n: usize) -> (fakes::FakeDirectory, fakes::FakeCloud) {
        let (entries, users) = (0..n)
            .map(|i| {
                let (dn, id, _) = nth(i);
                let entry = crate::model::SourceAccount {
                    dn,
                    ..Default::default()
                };
                let user = crate::model::CloudUser {
                    id,
                    ..Default::default()
                };
                (entry, user)
            })
            .unzip();
        (
            fakes::FakeDirectory::with(entries),
            fakes::FakeCloud::with(users),
        )
    }

    /// Account `n`'s action number `seq`: `mail` (AD mail), `cloud` (the cloud address),
    /// `password` (randomize it), `revoke` (sign-in sessions) or `invite`.
    fn step(n: usize, seq: u32, what: &str) -> Action {
        let (dn, id, account) = nth(n);
        let op = match what {
            "mail" => Op::SetDirectoryMail {
                dn,
                from: None,
                to: format!("p{n}@fabrikam.example"),
            },
            "cloud" => Op::SetCloudAddress {
                user_id: id,
                other_mails_from: Vec::new(),
                other_mails_to: Some(vec![format!("p{n}@fabrikam.example")]),
                mail_from: None,
                mail_to: Some(format!("p{n}@fabrikam.example")),
            },
            "password" => Op::RandomizePassword {
                dn,
                account_name: Some(format!("p{n}")),
                display_name: None,
            },
            "revoke" => Op::RevokeSessions { user_id: id },
            _ => Op::Invite(crate::plan::Invitation {
                user_id: id,
                ..fakes::invitation()
            }),
        };
        Action { account, seq, op }
    }

    fn status_names(results: &[(String, Status)]) -> Vec<&'static str> {
        results
            .iter()
            .map(|(_, s)| match s {
                Status::Done => "done",
                Status::Failed { .. } => "failed",
                Status::Skipped => "skipped",
            })
            .collect()
    }

    // Issue 14: a domain controller that went away while a write was in flight.
    #[tokio::test]
    async fn a_directory_write_whose_connection_broke_is_read_back_and_not_sent_again() {
        let (directory, cloud) = world(2);
        let (lost, _, _) = nth(0);
        directory.lose_answers.lock().unwrap().insert(lost.clone());
        let actions = vec![step(0, 0, "mail"), step(1, 0, "mail")];
        let (results, records) = execute_plan(actions, &directory, &cloud, 1).await;
        // The write took effect; reading the entry back shows it: done, sent once.
        assert_eq!(status_names(&results), ["done", "done"]);
        assert_eq!(
            directory.calls(),
            [
                format!("set_mail {lost}"),
                "set_mail CN=p1,OU=Partners,DC=lab".to_string()
            ]
        );
        assert_eq!(
            records,
            [
                "started anchor-0/0/set_directory_mail",
                "done anchor-0/0/set_directory_mail",
                "started anchor-1/0/set_directory_mail",
                "done anchor-1/0/set_directory_mail",
            ]
        );
        assert_eq!(
            directory.get(&lost).mail.as_deref(),
            Some("p0@fabrikam.example")
        );
    }

    #[tokio::test]
    async fn an_accounts_actions_run_in_order_whatever_the_plan_lists_first() {
        let (directory, cloud) = world(1);
        // Listed out of order: the cloud address (seq 1) before the AD mail (seq 0).
        let actions = vec![
            step(0, 1, "cloud"),
            step(0, 0, "mail"),
            step(0, 2, "invite"),
        ];
        let (results, records) = execute_plan(actions, &directory, &cloud, 4).await;
        assert_eq!(status_names(&results), ["done"; 3]);
        assert_eq!(directory.calls(), ["set_mail CN=p0,OU=Partners,DC=lab"]);
        assert_eq!(cloud.calls(), ["update_user u-0", "invite u-0"]);
        assert_eq!(
            records,
            [
                "started anchor-0/0/set_directory_mail",
                "done anchor-0/0/set_directory_mail",
                "started anchor-0/1/set_cloud_address",
                "done anchor-0/1/set_cloud_address",
                "started anchor-0/2/invite",
                "done anchor-0/2/invite",
            ]
        );
        assert_eq!(
            directory.get("CN=p0,OU=Partners,DC=lab").mail.as_deref(),
            Some("p0@fabrikam.example")
        );
    }

    #[tokio::test]
    async fn a_failed_step_skips_the_rest_of_its_account_only() {
        let (directory, cloud) = world(2);
        directory
            .refuse_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(nth(0).0);
        let actions = vec![
            step(0, 0, "mail"),
            step(0, 1, "cloud"),
            step(0, 2, "invite"),
            step(1, 0, "mail"),
            step(1, 1, "cloud"),
        ];
        let (results, records) = execute_plan(actions, &directory, &cloud, 1).await;
        assert_eq!(
            status_names(&results),
            ["failed", "skipped", "skipped", "done", "done"],
            "{results:?}"
        );
        // The skipped steps were never called nor journaled as started.
        assert_eq!(cloud.calls(), ["update_user u-1"]);
        assert!(
            records
                .iter()
                .all(|r| !r.contains("anchor-0/1") && !r.contains("anchor-0/2")),
            "{records:?}"
        );
        assert!(records.contains(&"failed anchor-0/0/set_directory_mail".to_string()));
    }

    /// Issue 19: the revocation is journaled like every write, after the randomization; a
    /// failed one is journaled `failed` and leaves the randomization done.
    #[tokio::test]
    async fn a_revocation_is_journaled_after_the_randomization_and_may_fail_alone() {
        let (directory, cloud) = world(1);
        let actions = vec![step(0, 0, "password"), step(0, 1, "revoke")];
        let (results, records) = execute_plan(actions, &directory, &cloud, 1).await;
        assert_eq!(status_names(&results), ["done", "done"]);
        assert_eq!(cloud.calls(), ["revoke_sessions u-0"]);
        assert_eq!(
            cloud.revocations.lock().unwrap_or_else(|p| p.into_inner())["u-0"],
            1
        );
        assert_eq!(
            records,
            [
                "started anchor-0/0/randomize_password",
                "done anchor-0/0/randomize_password",
                "started anchor-0/1/revoke_sessions",
                "done anchor-0/1/revoke_sessions",
            ]
        );

        let (directory, cloud) = world(1);
        *cloud
            .fail_revocations
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = true;
        let actions = vec![step(0, 0, "password"), step(0, 1, "revoke")];
        let (results, records) = execute_plan(actions, &directory, &cloud, 1).await;
        assert_eq!(status_names(&results), ["done", "failed"]);
        assert!(
            cloud
                .revocations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
        );
        assert_eq!(
            records[2..],
            [
                "started anchor-0/1/revoke_sessions",
                "failed anchor-0/1/revoke_sessions",
            ]
        );
    }

    #[tokio::test]
    async fn accounts_run_concurrently_up_to_the_limit() {
        // (concurrency, accounts, most writes in flight at once)
        let cases = [(1, 4, 1), (2, 4, 2), (8, 4, 4)];
        for (concurrency, accounts, most) in cases {
            let (directory, cloud) = world(accounts);
            *cloud.delay.lock().unwrap_or_else(|p| p.into_inner()) =
                std::time::Duration::from_millis(20);
            // Two steps each: within an account they never overlap.
            let actions = (0..accounts)
                .flat_map(|n| [step(n, 0, "cloud"), step(n, 1, "invite")])
                .collect();
            let (results, _) = execute_plan(actions, &directory, &cloud, concurrency).await;
            assert!(
                results.iter().all(|(_, s)| *s == Status::Done),
                "{results:?}"
            );
            assert_eq!(
                cloud.in_flight.most(),
                most,
                "concurrency {concurrency}, {accounts} accounts"
            );
        }
    }

    #[tokio::test]
    async fn a_wait_past_the_maximum_halts_the_run_and_leaves_nothing_started() {
        let (directory, cloud) = world(3);
        *cloud
            .wait_too_long
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = true;
        let actions = vec![
            step(0, 0, "invite"),
            step(1, 0, "invite"),
            step(1, 1, "cloud"),
            step(2, 0, "mail"),
        ];
        let (results, records) = execute_plan(actions, &directory, &cloud, 1).await;
        assert_eq!(
            status_names(&results),
            ["failed", "skipped", "skipped", "skipped"],
            "{results:?}"
        );
        assert!(
            matches!(&results[0].1, Status::Failed { error, .. } if error.contains("5-minute maximum"))
        );
        assert_eq!(cloud.calls(), ["invite u-0"]);
        assert!(directory.calls().is_empty());
        assert_eq!(
            records,
            ["started anchor-0/0/invite", "failed anchor-0/0/invite"]
        );
    }

    #[tokio::test]
    async fn concurrent_records_share_commits_and_all_land_before_they_return() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store =
            Mutex::new(Store::open(&dir.path().join("state.db")).unwrap_or_else(|e| panic!("{e}")));
        let journal = Journal::new(&store, "run-1");
        assert!(journal.writer.is_some(), "the group commit must be in use");
        let writes = (0..200).map(|n| journal.commit(record(n)));
        let results = futures_util::future::join_all(writes).await;
        assert!(results.iter().all(Result::is_ok));
        // Every write was committed before its commit() returned: readable at once from
        // the run's own connection.
        let entries = journal
            .with(|s| s.journal_entries(Some("run-1")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(entries.len(), 200);
        drop(journal);
        let entries = store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .journal_entries(None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(entries.len(), 200);
    }
}
