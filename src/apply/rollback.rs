//! Undoes what a run changed where that can be undone: the address attributes (AD `mail`,
//! the cloud's `mail` and `otherMails`) and `userType` go back to the before-values the
//! journal recorded. An invitation cannot be taken back (the conversion is one-way once
//! accepted, and the email is sent), and a randomized password cannot be restored (nobody
//! ever knew it): those are listed with the reason. Every undo is itself journaled.
//!
//! What a run wrote is what its journal shows `done`, plus the actions it left `started`
//! (a crash) that a later reconciliation found had taken effect: that verdict is the next
//! record of the same action key, journaled under the reconciling run. Rollback reconciles
//! first, so it finds them even when no run came after the crash. A reconciliation's
//! verdict on another run's action is that run's write, not the reconciling run's. Before
//! writing a value back, the attribute is read: an attribute that no longer holds what the
//! run wrote is left alone and reported as a conflict (compare-and-set).
//!
//! The address of an account already invited (or accepted, or done) is not reverted without
//! `force`: the invitation went to it, and the guest is known by it. `dry_run` reads the
//! current values and says what would be reverted, and writes nothing at all: no
//! reconciliation, no journal record.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Journal;
use super::reconcile::{Pending, Verdict, settle};
use crate::cloud::{Cloud, UserPatch};
use crate::model::Lifecycle;
use crate::source::Directory;
use crate::state::{Action, JournalEntry, Phase, Store, Values};

/// What rollback did or could not do for one journaled action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Undo {
    pub action_key: String,
    pub action: Action,
    pub account: String,
    pub result: UndoResult,
    pub detail: String,
}

impl Undo {
    /// Whether the action wrote an address (AD `mail`, the cloud's `mail`/`otherMails`): the
    /// next scheduled run writes it again unless the mapping or the scope changes.
    pub fn is_address(&self) -> bool {
        is_address(self.action)
    }
}

fn is_address(action: Action) -> bool {
    matches!(action, Action::SetDirectoryMail | Action::SetCloudAddress)
}

/// How a rollback runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Read the current values and say what would be reverted; write nothing.
    pub dry_run: bool,
    /// Revert the address of an account already invited or accepted too.
    pub force: bool,
}

/// What became of one action in a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UndoResult {
    /// The value from before is back (written now, or already there).
    Reverted,
    /// Dry run: the attribute still holds what the run wrote; a rollback would write the
    /// value from before.
    WouldRevert,
    /// The attribute was changed since the run: left alone (compare-and-set).
    Conflict,
    /// The address of an account already invited or accepted: left alone without `force`.
    Refused,
    /// It could not be read or written back.
    Failed,
    /// It has no inverse (an invitation, a randomized password).
    Irreversible,
}

impl UndoResult {
    /// `reverted`, `would_revert`, `conflict`, `refused`, `failed` or `irreversible`.
    pub fn as_str(self) -> &'static str {
        match self {
            UndoResult::Reverted => "reverted",
            UndoResult::WouldRevert => "would_revert",
            UndoResult::Conflict => "conflict",
            UndoResult::Refused => "refused",
            UndoResult::Failed => "failed",
            UndoResult::Irreversible => "irreversible",
        }
    }
}

impl std::fmt::Display for UndoResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Through `pad`, so that width and alignment in format strings apply.
        f.pad(self.as_str())
    }
}

/// A rollback that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("run {0} is not in the journal")]
    UnknownRun(String),
    #[error("reconciling interrupted actions before the rollback: {0}")]
    Reconcile(#[from] super::reconcile::Error),
    #[error(transparent)]
    State(#[from] crate::state::Error),
}

impl Error {
    /// One line telling the admin what to do.
    pub fn help(&self) -> String {
        match self {
            Error::UnknownRun(_) => {
                "list the runs with `b2bsync status --format json` (field runs) and pass one id"
                    .into()
            }
            Error::Reconcile(e) => e.help(),
            Error::State(e) => e.help().to_string(),
        }
    }
}

/// The inverse of one done action, or why there is none.
enum Inverse {
    DirectoryMail { dn: String, mail: Option<String> },
    Cloud { user_id: String, patch: UserPatch },
    None(&'static str),
}

fn inverse(entry: &JournalEntry, dn: Option<&str>, cloud_id: Option<&str>) -> Inverse {
    let before = entry.before.as_ref();
    let after = entry.after.as_ref();
    // Newer records name their target; older ones rely on the state store.
    let dn = after.and_then(|v| v.dn.clone()).or(dn.map(str::to_string));
    let cloud_id = after
        .and_then(|v| v.user_id.clone())
        .or(cloud_id.map(str::to_string));
    match entry.action {
        Action::SetDirectoryMail => match dn {
            Some(dn) => Inverse::DirectoryMail {
                dn,
                mail: before.and_then(Values::mail).map(str::to_string),
            },
            None => Inverse::None("the account is no longer in the state store"),
        },
        Action::SetCloudAddress | Action::SetUserType => {
            let Some(user_id) = cloud_id else {
                return Inverse::None("the account's cloud user is not in the state store");
            };
            let mut patch = UserPatch::default();
            if entry.action == Action::SetUserType {
                patch.user_type = before.and_then(Values::user_type).map(str::to_string);
                if patch.user_type.is_none() {
                    return Inverse::None("userType had no value before");
                }
            } else {
                // Only what the run changed goes back.
                if after.and_then(Values::other_mails).is_some() {
                    patch.other_mails = Some(
                        before
                            .and_then(Values::other_mails)
                            .map(<[String]>::to_vec)
                            .unwrap_or_default(),
                    );
                }
                if after.and_then(Values::mail).is_some() {
                    patch.mail = before.and_then(Values::mail).map(str::to_string);
                    patch.clear_mail = patch.mail.is_none();
                }
            }
            Inverse::Cloud { user_id, patch }
        }
        Action::Invite | Action::Reinvite => Inverse::None(
            "an invitation cannot be taken back: the email is sent and an accepted conversion is one-way (to go back, the user must be deleted and recreated)",
        ),
        Action::RandomizePassword => Inverse::None(
            "the previous password cannot be restored (b2bsync never knew it); an administrator can set a new one",
        ),
        Action::RevokeSessions => {
            Inverse::None("revoked sign-in sessions cannot be restored; the user signs in again")
        }
        Action::RollbackSetDirectoryMail
        | Action::RollbackSetCloudAddress
        | Action::RollbackSetUserType => Inverse::None("unknown action"),
    }
}

/// Reverts the done actions of `run` (newest first), journaling each under `new_run`; with
/// `options.dry_run`, only says what it would revert (`new_run` is then unused).
pub async fn rollback<D: Directory + Sync, C: Cloud + Sync>(
    store: &std::sync::Mutex<Store>,
    run: &str,
    new_run: &str,
    directory: &D,
    cloud: &C,
    options: Options,
) -> Result<Vec<Undo>, Error> {
    {
        let guard = lock(store);
        if guard.journal_entries(Some(run))?.is_empty() {
            // A run that wrote nothing (it stopped before its first write, or had nothing
            // to do) has nothing to undo; a run that never was is an error.
            return if guard.runs()?.iter().any(|r| r.id == run) {
                Ok(Vec::new())
            } else {
                Err(Error::UnknownRun(run.to_string()))
            };
        }
    }
    // Settle what a crash left unfinished, so that its writes are found below. A dry run
    // writes nothing: it sees only what earlier runs settled.
    if !options.dry_run {
        super::reconcile(store, directory, cloud, new_run).await?;
    }
    let (done, accounts) = {
        let guard = lock(store);
        let done = written(&guard, run)?;
        let names = guard.names()?;
        let accounts: BTreeMap<String, Target> = guard
            .accounts()?
            .into_iter()
            .map(|a| {
                let name =
                    crate::model::AccountName::stored(&a.key, a.dn.as_deref(), &names).to_string();
                let target = Target {
                    dn: a.dn,
                    cloud_id: a.progress.cloud_id,
                    state: a.progress.state,
                    name,
                };
                (a.key, target)
            })
            .collect();
        (done, accounts)
    };
    let journal = (!options.dry_run).then(|| Journal::new(store, new_run));
    let mut undos = Vec::new();
    for entry in done.iter().rev() {
        let target = accounts.get(&entry.account_key);
        let dn = target.and_then(|t| t.dn.as_deref());
        let cloud_id = target.and_then(|t| t.cloud_id.as_deref());
        let key = format!("rollback/{}", entry.action_key);
        let undo_action = entry.action.rollback();
        let record = |phase: Phase, error: Option<&str>| {
            let (Some(action), Some(journal)) = (undo_action, &journal) else {
                // `revert` records only actions with an inverse, which all have an undo; a
                // dry run records nothing.
                return Ok(());
            };
            journal.with(|s| {
                s.journal(
                    new_run,
                    &key,
                    action,
                    &entry.account_key,
                    phase,
                    entry.after.as_ref(),
                    entry.before.as_ref(),
                    None,
                    None,
                    error,
                )
            })
        };
        let account = target.map_or_else(|| entry.account_key.clone(), |t| t.name.clone());
        let undo = |result: UndoResult, detail: String| Undo {
            action_key: entry.action_key.clone(),
            action: entry.action,
            account: account.clone(),
            result,
            detail,
        };
        let inverse = match inverse(entry, dn, cloud_id) {
            Inverse::None(why) => {
                undos.push(undo(UndoResult::Irreversible, why.to_string()));
                continue;
            }
            inverse => inverse,
        };
        let invited = target.is_some_and(|t| t.state >= Lifecycle::Invited);
        let warning = if invited && is_address(entry.action) {
            let state = target.map_or(Lifecycle::Invited, |t| t.state);
            if !options.force {
                undos.push(undo(
                    UndoResult::Refused,
                    format!(
                        "the account is {state}: the invitation went to this address and the guest is known by it; left alone; help: `rollback {run} --force` reverts it anyway"
                    ),
                ));
                continue;
            }
            format!(
                "warning: the account is {state} and the invitation went to this address; reverted because of --force; "
            )
        } else {
            String::new()
        };
        let pending = Pending {
            action: entry.action,
            before: entry.before.as_ref(),
            after: entry.after.as_ref(),
            started: entry.at,
            dn,
            cloud_id,
        };
        if let Still::No { result, detail } = still_written(&pending, directory, cloud).await {
            undos.push(undo(result, detail));
            continue;
        }
        let before = entry
            .before
            .as_ref()
            .map_or_else(|| "(nothing)".to_string(), Values::to_json);
        if options.dry_run {
            undos.push(undo(
                UndoResult::WouldRevert,
                format!("{warning}still what the run wrote; would go back to {before}"),
            ));
            continue;
        }
        match revert(inverse, &record, directory, cloud).await? {
            Ok(()) => {
                record(Phase::Done, None)?;
                undos.push(undo(
                    UndoResult::Reverted,
                    format!("{warning}back to {before}"),
                ));
            }
            Err((message, help)) => {
                record(Phase::Failed, Some(&message))?;
                undos.push(undo(UndoResult::Failed, format!("{message}; help: {help}")));
            }
        }
    }
    Ok(undos)
}

/// What rollback needs of an account from the state store.
struct Target {
    dn: Option<String>,
    cloud_id: Option<String>,
    state: Lifecycle,
    /// How people know it ([`crate::model::AccountName`]).
    name: String,
}

fn lock(store: &std::sync::Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    // A panic elsewhere while holding the lock leaves SQLite consistent (transactions).
    store.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `done` records of what `run` wrote, oldest first: its own `done` records, and for
/// each action it left `started`, a later reconciliation's `done` verdict. A `done` that
/// `run` recorded as the reconciliation of another run's action belongs to that run.
fn written(store: &Store, run: &str) -> Result<Vec<JournalEntry>, Error> {
    let entries = store.journal_entries(Some(run))?;
    let mut last: BTreeMap<&str, &JournalEntry> = BTreeMap::new();
    let mut own = std::collections::BTreeSet::new();
    for e in &entries {
        if e.phase == Phase::Started {
            own.insert(e.action_key.as_str());
        }
        last.insert(e.action_key.as_str(), e);
    }
    let mut done: Vec<JournalEntry> = entries
        .iter()
        .filter(|e| e.phase == Phase::Done && own.contains(e.action_key.as_str()))
        .cloned()
        .collect();
    for entry in last.values() {
        if entry.phase == Phase::Started
            && let Some(verdict) = store.next_record(&entry.action_key, entry.seq)?
            && verdict.phase == Phase::Done
        {
            // In the run's own order: where its `started` record was.
            done.push(JournalEntry {
                seq: entry.seq,
                ..verdict
            });
        }
    }
    done.sort_by_key(|e| e.seq);
    Ok(done)
}

/// Whether an attribute still holds what the run wrote, so that writing back the value
/// from before restores it and overwrites nobody's change.
enum Still {
    Yes,
    No { result: UndoResult, detail: String },
}

async fn still_written<D: Directory + Sync, C: Cloud + Sync>(
    pending: &Pending<'_>,
    directory: &D,
    cloud: &C,
) -> Still {
    match settle(pending, directory, cloud).await {
        // Holds the run's value, or the world cannot tell (the write then says).
        Ok(Verdict::Done(_) | Verdict::Unknown(_)) => Still::Yes,
        Ok(Verdict::NotDone(why)) => Still::No {
            result: UndoResult::Reverted,
            detail: format!("already back: {why}; nothing written"),
        },
        Ok(Verdict::ChangedElsewhere(why)) => Still::No {
            result: UndoResult::Conflict,
            detail: format!(
                "changed since the run: {why}; left alone; help: set the value by hand if it should go back"
            ),
        },
        Err(e) => Still::No {
            result: UndoResult::Failed,
            detail: format!("cannot read the current value: {e}; help: {}", e.help()),
        },
    }
}

/// Writes one inverse back, journaled `started` before and `done`/`failed` after by
/// `record`. Returns the call's error as (message, help).
async fn revert<D: Directory + Sync, C: Cloud + Sync>(
    inverse: Inverse,
    record: &impl Fn(Phase, Option<&str>) -> Result<(), crate::state::Error>,
    directory: &D,
    cloud: &C,
) -> Result<Result<(), (String, String)>, Error> {
    Ok(match inverse {
        Inverse::None(_) => Ok(()),
        Inverse::DirectoryMail { dn, mail } => {
            record(Phase::Started, None)?;
            directory
                .set_mail(&dn, mail.as_deref())
                .await
                .map_err(|e| (e.to_string(), e.help()))
        }
        Inverse::Cloud { user_id, patch } => {
            record(Phase::Started, None)?;
            cloud
                .update_user(&user_id, &patch)
                .await
                .map(|_| ())
                .map_err(|e| (e.to_string(), e.help()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::fakes::{
        DN, FakeCloud, FakeDirectory, USER, account, interrupted, set_cloud_address, set_mail, user,
    };

    #[tokio::test]
    async fn rollback_of_a_crashed_run_restores_the_write_a_later_run_confirmed() {
        // Run A wrote AD mail and was killed before journaling `done`.
        let (_d, store) = interrupted(&set_mail(), Lifecycle::NeedsAddress);
        let directory = FakeDirectory::with(vec![account(Some("ana@fabrikam.example"), None)]);
        let cloud = FakeCloud::default();
        // Run B reconciles it: `done`, under run B's id.
        let r = super::super::reconcile(&store, &directory, &cloud, "run-b")
            .await
            .unwrap();
        assert_eq!(r.confirmed, 1);
        // Rolling back B does not touch what A wrote.
        let undos = rollback(
            &store,
            "run-b",
            "rb-1",
            &directory,
            &cloud,
            Options::default(),
        )
        .await
        .unwrap();
        assert!(undos.is_empty(), "{undos:?}");
        assert_eq!(
            directory.get(DN).mail.as_deref(),
            Some("ana@fabrikam.example")
        );
        // Rolling back A restores the address A wrote.
        let undos = rollback(
            &store,
            "run-a",
            "rb-2",
            &directory,
            &cloud,
            Options::default(),
        )
        .await
        .unwrap();
        assert_eq!(undos.len(), 1, "{undos:?}");
        assert_eq!(undos[0].result, UndoResult::Reverted, "{undos:?}");
        assert_eq!(
            directory.get(DN).mail.as_deref(),
            Some("old@contoso.example")
        );
    }

    #[tokio::test]
    async fn rollback_right_after_a_crash_settles_first_and_restores() {
        let (_d, store) = interrupted(&set_cloud_address(), Lifecycle::NeedsAddress);
        let cloud = FakeCloud::with(vec![user(
            Some("ana@fabrikam.example"),
            &["ana@fabrikam.example"],
        )]);
        let undos = rollback(
            &store,
            "run-a",
            "rb-1",
            &FakeDirectory::default(),
            &cloud,
            Options::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            undos.iter().map(|u| u.result).collect::<Vec<_>>(),
            vec![UndoResult::Reverted]
        );
        let now = cloud.get(USER);
        assert_eq!(now.mail, None);
        assert!(now.other_mails.is_empty());
        // Nothing is left unfinished: the rollback journaled its verdict and its undo.
        assert!(store.lock().unwrap().unfinished().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_run_that_wrote_nothing_has_nothing_to_undo_and_an_unknown_one_is_an_error() {
        let (_d, store) = interrupted(&set_mail(), Lifecycle::NeedsAddress);
        let quiet = store.lock().unwrap().begin_run("run").unwrap();
        let (directory, cloud) = (FakeDirectory::default(), FakeCloud::default());
        let undos = rollback(
            &store,
            &quiet,
            "rb-1",
            &directory,
            &cloud,
            Options::default(),
        )
        .await;
        assert!(undos.is_ok_and(|u| u.is_empty()));
        let err = rollback(
            &store,
            "no-such-run",
            "rb-2",
            &directory,
            &cloud,
            Options::default(),
        )
        .await
        .expect_err("unknown run");
        assert!(matches!(err, Error::UnknownRun(_)) && !err.help().is_empty());
    }

    #[tokio::test]
    async fn rollback_leaves_an_address_changed_since_the_run_alone() {
        let (_d, store) = wrote_mail(Lifecycle::NeedsAddress);
        // An admin set another address since.
        let directory = FakeDirectory::with(vec![account(Some("new@fabrikam.example"), None)]);
        let undos = rollback(
            &store,
            "run-a",
            "rb-1",
            &directory,
            &FakeCloud::default(),
            Options::default(),
        )
        .await
        .unwrap();
        assert_eq!(undos.len(), 1);
        assert_eq!(undos[0].result, UndoResult::Conflict);
        assert!(undos[0].detail.contains("left alone") && undos[0].detail.contains("help:"));
        assert_eq!(
            directory.get(DN).mail.as_deref(),
            Some("new@fabrikam.example")
        );
    }

    /// A store whose run `run-a` wrote AD mail (`done`), the account in `state`.
    fn wrote_mail(state: Lifecycle) -> (tempfile::TempDir, std::sync::Mutex<Store>) {
        let (d, store) = interrupted(&set_mail(), state);
        store
            .lock()
            .unwrap()
            .journal(
                "run-a",
                &format!("{}/0/set_directory_mail", crate::apply::fakes::ACCOUNT),
                Action::SetDirectoryMail,
                crate::apply::fakes::ACCOUNT,
                Phase::Done,
                Some(&Values {
                    mail: Some(Some("old@contoso.example".into())),
                    ..Values::default()
                }),
                Some(&Values {
                    mail: Some(Some("ana@fabrikam.example".into())),
                    ..Values::default()
                }),
                None,
                None,
                None,
            )
            .unwrap();
        (d, store)
    }

    #[tokio::test]
    async fn a_dry_run_says_what_it_would_revert_and_writes_nothing() {
        let (_d, store) = wrote_mail(Lifecycle::AwaitingSync);
        let directory = FakeDirectory::with(vec![account(Some("ana@fabrikam.example"), None)]);
        let records = store.lock().unwrap().journal_entries(None).unwrap().len();
        let dry = Options {
            dry_run: true,
            force: false,
        };
        let undos = rollback(&store, "run-a", "", &directory, &FakeCloud::default(), dry)
            .await
            .unwrap();
        assert_eq!(undos.len(), 1, "{undos:?}");
        assert_eq!(undos[0].result, UndoResult::WouldRevert, "{undos:?}");
        assert!(undos[0].detail.contains("old@contoso.example"), "{undos:?}");
        assert_eq!(
            directory.get(DN).mail.as_deref(),
            Some("ana@fabrikam.example")
        );
        // No journal record: no undo, no reconciliation verdict.
        let store = store.lock().unwrap();
        assert_eq!(store.journal_entries(None).unwrap().len(), records);
    }

    #[tokio::test]
    async fn the_address_of_an_invited_account_goes_back_only_with_force() {
        let (_d, store) = wrote_mail(Lifecycle::Invited);
        let directory = FakeDirectory::with(vec![account(Some("ana@fabrikam.example"), None)]);
        let cloud = FakeCloud::default();
        let undos = rollback(
            &store,
            "run-a",
            "rb-1",
            &directory,
            &cloud,
            Options::default(),
        )
        .await
        .unwrap();
        assert_eq!(undos.len(), 1, "{undos:?}");
        assert_eq!(undos[0].result, UndoResult::Refused, "{undos:?}");
        assert!(undos[0].detail.contains("--force"), "{undos:?}");
        assert_eq!(
            directory.get(DN).mail.as_deref(),
            Some("ana@fabrikam.example")
        );
        let force = Options {
            dry_run: false,
            force: true,
        };
        let undos = rollback(&store, "run-a", "rb-2", &directory, &cloud, force)
            .await
            .unwrap();
        assert_eq!(undos[0].result, UndoResult::Reverted, "{undos:?}");
        assert!(undos[0].detail.starts_with("warning: "), "{undos:?}");
        assert_eq!(
            directory.get(DN).mail.as_deref(),
            Some("old@contoso.example")
        );
    }
}
