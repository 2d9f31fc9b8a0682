//! Undoes what a run changed where that can be undone: the address attributes (AD `mail`,
//! the cloud's `mail` and `otherMails`) and `userType` go back to the before-values the
//! journal recorded. An invitation cannot be taken back (the conversion is one-way once
//! accepted, and the email is sent), and a randomized password cannot be restored (nobody
//! ever knew it): those are listed with the reason. Every undo is itself journaled.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::Journal;
use crate::cloud::{Cloud, UserPatch};
use crate::source::Directory;
use crate::state::{JournalEntry, Phase, Store};

/// What rollback did or could not do for one journaled action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Undo {
    pub action_key: String,
    pub action: String,
    pub account: String,
    /// `reverted`, `failed` or `irreversible`.
    pub result: &'static str,
    pub detail: String,
}

/// A rollback that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("run {0} is not in the journal")]
    UnknownRun(String),
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
            Error::State(e) => e.help().to_string(),
        }
    }
}

fn field(json: Option<&str>, name: &str) -> Option<Value> {
    json.and_then(|t| serde_json::from_str::<Value>(t).ok())
        .and_then(|v| v.get(name).cloned())
}

/// The inverse of one done action, or why there is none.
enum Inverse {
    DirectoryMail { dn: String, mail: Option<String> },
    Cloud { user_id: String, patch: UserPatch },
    None(&'static str),
}

fn inverse(entry: &JournalEntry, dn: Option<&str>, cloud_id: Option<&str>) -> Inverse {
    let text = |v: Option<Value>| v.and_then(|v| v.as_str().map(str::to_string));
    match entry.action.as_str() {
        "set_directory_mail" => match dn {
            Some(dn) => Inverse::DirectoryMail {
                dn: dn.to_string(),
                mail: text(field(entry.before.as_deref(), "mail")),
            },
            None => Inverse::None("the account is no longer in the state store"),
        },
        "set_cloud_address" | "set_user_type" => {
            let Some(user_id) = cloud_id else {
                return Inverse::None("the account's cloud user is not in the state store");
            };
            let before = entry.before.as_deref();
            let after = entry.after.as_deref();
            let mut patch = UserPatch::default();
            if entry.action == "set_user_type" {
                patch.user_type = text(field(before, "userType"));
                if patch.user_type.is_none() {
                    return Inverse::None("userType had no value before");
                }
            } else {
                // Only what the run changed goes back.
                if field(after, "otherMails").is_some_and(|v| !v.is_null()) {
                    patch.other_mails = field(before, "otherMails")
                        .and_then(|v| serde_json::from_value(v).ok())
                        .or(Some(Vec::new()));
                }
                if field(after, "mail").is_some_and(|v| !v.is_null()) {
                    patch.mail = text(field(before, "mail"));
                    patch.clear_mail = patch.mail.is_none();
                }
            }
            Inverse::Cloud {
                user_id: user_id.to_string(),
                patch,
            }
        }
        "invite" | "reinvite" => Inverse::None(
            "an invitation cannot be taken back: the email is sent and an accepted conversion is one-way (to go back, the user must be deleted and recreated)",
        ),
        "randomize_password" => Inverse::None(
            "the previous password cannot be restored (b2bsync never knew it); an administrator can set a new one",
        ),
        _ => Inverse::None("unknown action"),
    }
}

/// Reverts the done actions of `run` (newest first), journaling each under `new_run`.
pub async fn rollback<D: Directory + Sync, C: Cloud + Sync>(
    store: &std::sync::Mutex<Store>,
    run: &str,
    new_run: &str,
    directory: &D,
    cloud: &C,
) -> Result<Vec<Undo>, Error> {
    let (entries, accounts) = {
        let guard = store.lock().unwrap_or_else(|p| p.into_inner());
        let entries = guard.journal_entries(Some(run))?;
        let accounts: BTreeMap<String, (Option<String>, Option<String>)> = guard
            .accounts()?
            .into_iter()
            .map(|a| (a.key, (a.dn, a.progress.cloud_id)))
            .collect();
        (entries, accounts)
    };
    if entries.is_empty() {
        return Err(Error::UnknownRun(run.to_string()));
    }
    let journal = Journal::new(store, new_run);
    let mut undos = Vec::new();
    let done: Vec<&JournalEntry> = entries.iter().rev().filter(|e| e.phase == "done").collect();
    for entry in done {
        let (dn, cloud_id) = accounts
            .get(&entry.account_key)
            .map(|(d, c)| (d.as_deref(), c.as_deref()))
            .unwrap_or((None, None));
        let key = format!("rollback/{}", entry.action_key);
        let record = |phase: Phase, error: Option<&str>| {
            journal.with(|s| {
                s.journal(
                    new_run,
                    &key,
                    &format!("rollback_{}", entry.action),
                    &entry.account_key,
                    phase,
                    entry.after.as_deref(),
                    entry.before.as_deref(),
                    None,
                    None,
                    error,
                )
            })
        };
        let result = match inverse(entry, dn, cloud_id) {
            Inverse::None(why) => {
                undos.push(Undo {
                    action_key: entry.action_key.clone(),
                    action: entry.action.clone(),
                    account: dn.unwrap_or(&entry.account_key).to_string(),
                    result: "irreversible",
                    detail: why.to_string(),
                });
                continue;
            }
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
        };
        let account = dn.unwrap_or(&entry.account_key).to_string();
        match result {
            Ok(()) => {
                record(Phase::Done, None)?;
                undos.push(Undo {
                    action_key: entry.action_key.clone(),
                    action: entry.action.clone(),
                    account,
                    result: "reverted",
                    detail: format!("back to {}", entry.before.as_deref().unwrap_or("(nothing)")),
                });
            }
            Err((message, help)) => {
                record(Phase::Failed, Some(&message))?;
                undos.push(Undo {
                    action_key: entry.action_key.clone(),
                    action: entry.action.clone(),
                    account,
                    result: "failed",
                    detail: format!("{message}; help: {help}"),
                });
            }
        }
    }
    Ok(undos)
}
