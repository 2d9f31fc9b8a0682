//! Settles actions that a crash left journaled as `started` but never `done` or `failed`,
//! by reading the world before recording an outcome, so that the journal tells the truth:
//! a write that reached the directory or the cloud is journaled `done` (and `rollback` finds
//! it), one that did not is journaled `failed` and planned again if still needed.
//!
//! - An invitation counts as sent when the cloud user shows it, so a crash between the call
//!   and the journal never leads to a second invitation.
//! - An address write (AD `mail`, the cloud's `mail`/`otherMails`, `userType`) is `done` when
//!   the attribute holds the planned value now, `failed` when it still holds the value from
//!   before, and `failed` as changed by someone else otherwise.
//! - A password randomization is `done` when the directory says the password changed
//!   (`pwdLastSet`, `pwdChangedTime`) at or after the journal's `started` time; when the
//!   directory does not say, the outcome is unknown and the randomization is planned again
//!   (randomizing twice has the same effect as once).
//! - A sign-in session revocation is `done` when the cloud user's
//!   `signInSessionsValidFromDateTime` is in the second the call began or later (never
//!   revoked again), `failed` otherwise (revoked once by the next plan).
//!
//! A read that fails leaves the action unfinished (never guessed) and stops the run before
//! any write. [`settle`] is also what `apply` uses to read back an invitation whose answer
//! was lost within the same run.

use std::collections::HashMap;

use serde_json::Value;

use crate::cloud::Cloud;
use crate::model::{CloudUser, Lifecycle};
use crate::source::{Directory, PasswordChanged};
use crate::state::{AccountRecord, Action, JournalEntry, Phase, Store, Values};

/// What reconciliation decided, for the run summary and the logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Interrupted actions that took effect (an invitation the cloud shows, a value the
    /// directory or the cloud holds, a password changed since the call began): journaled
    /// `done`, never repeated.
    pub confirmed: usize,
    /// Interrupted actions that did not take effect, were changed by someone else since, or
    /// whose outcome cannot be read: journaled `failed`, planned again if still needed.
    pub released: usize,
    /// Of `released`, those whose outcome could not be read (a directory that does not say
    /// when a password changed): planned again, which is harmless for these idempotent
    /// writes.
    pub unknown: usize,
    /// Each verdict, in the order they were journaled.
    pub verdicts: Vec<Settled>,
}

/// The verdict on one interrupted action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub action_key: String,
    pub action: Action,
    pub account: String,
    pub verdict: Verdict,
}

/// What reading the world said about an action whose outcome was not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It took effect: the reason, as read.
    Done(String),
    /// The world still shows the value from before the call.
    NotDone(String),
    /// The world shows neither the planned value nor the one from before.
    ChangedElsewhere(String),
    /// The world does not tell.
    Unknown(String),
}

impl Verdict {
    /// `done`, `failed`, `changed` or `unknown`, for logs and tests.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Done(_) => "done",
            Verdict::NotDone(_) => "failed",
            Verdict::ChangedElsewhere(_) => "changed",
            Verdict::Unknown(_) => "unknown",
        }
    }

    /// Why, as read from the world.
    pub fn why(&self) -> &str {
        match self {
            Verdict::Done(w)
            | Verdict::NotDone(w)
            | Verdict::ChangedElsewhere(w)
            | Verdict::Unknown(w) => w,
        }
    }

    /// The text the journal keeps with the verdict.
    fn journal_text(&self) -> String {
        match self {
            Verdict::Done(why) => format!("reconciled: took effect: {why}"),
            Verdict::NotDone(why) => {
                format!("reconciled: did not take effect: {why}; planned again if still needed")
            }
            Verdict::ChangedElsewhere(why) => {
                format!("reconciled: changed by someone else: {why}; planned again if still needed")
            }
            Verdict::Unknown(why) => {
                format!("reconciled: outcome unknown: {why}; planned again if still needed")
            }
        }
    }
}

/// One action whose outcome is to be read from the world.
#[derive(Debug, Clone, Copy)]
pub struct Pending<'a> {
    /// The journal's action (`set_directory_mail`, `rollback_set_cloud_address`, ...).
    pub action: Action,
    /// The journal's before- and after-values.
    pub before: Option<&'a Values>,
    pub after: Option<&'a Values>,
    /// When the call began (the `started` record).
    pub started: jiff::Timestamp,
    /// Where to read when the journal values do not say (older records): the account's DN
    /// and cloud user id from the state store.
    pub dn: Option<&'a str>,
    pub cloud_id: Option<&'a str>,
}

// A directory's password change time is compared with the `started` record to the whole
// second: OpenLDAP's `pwdChangedTime` (and some Samba versions' `pwdLastSet`) keep whole
// seconds, rounded down, so a reset that began at 12:00:07.85 reads as changed at 12:00:07.
// No allowance is made for a directory clock running ahead of this host: that would count a
// change made just before the call as the randomization and leave a known password in
// place; a directory clock running behind only costs a second randomization.

/// How much clock skew between this host and the service the invitation check allows: the
/// service stamps `externalUserStateChangeDateTime` when it processes the call.
const INVITATION_SKEW_SECS: i64 = 60;

/// The attributes an address write compares, as JSON values: a value the record does not
/// have (absent or null) is `null`.
fn attribute(values: Option<&Values>, name: &str) -> Value {
    let Some(values) = values else {
        return Value::Null;
    };
    let text = |v: Option<&str>| v.map_or(Value::Null, |v| Value::String(v.to_string()));
    match name {
        "mail" => text(values.mail()),
        "userType" => text(values.user_type()),
        "otherMails" => values.other_mails().map_or(Value::Null, |list| {
            Value::Array(list.iter().cloned().map(Value::String).collect())
        }),
        _ => Value::Null,
    }
}

/// Whether a record sets an attribute (has a non-null value for it).
fn sets(values: Option<&Values>, name: &str) -> bool {
    !attribute(values, name).is_null()
}

/// Reads the world for one action and says whether it took effect. Errors reading are
/// returned, never guessed.
pub async fn settle<D: Directory + Sync, C: Cloud + Sync>(
    pending: &Pending<'_>,
    directory: &D,
    cloud: &C,
) -> Result<Verdict, Error> {
    let (before, after) = (pending.before, pending.after);
    // A rollback record's values are the original's swapped: the attributes it touched
    // are the ones the original set.
    let (rollback, kind) = match pending.action.undoes() {
        Some(kind) => (true, kind),
        None => (false, pending.action),
    };
    // Newer records name their target; older ones rely on the state store.
    let named = |field: fn(&Values) -> Option<&String>| {
        after
            .and_then(field)
            .or_else(|| before.and_then(field))
            .cloned()
    };
    let dn = named(|v| v.dn.as_ref()).or_else(|| pending.dn.map(str::to_string));
    let user_id = named(|v| v.user_id.as_ref()).or_else(|| pending.cloud_id.map(str::to_string));
    match kind {
        Action::Invite | Action::Reinvite if !rollback => {
            let Some(user_id) = user_id else {
                return Ok(Verdict::Unknown(
                    "the journal does not name the user".into(),
                ));
            };
            Ok(match cloud.user(&user_id).await? {
                None => Verdict::NotDone("the cloud user no longer exists".into()),
                Some(user) => invitation_verdict(kind, &user, pending.started),
            })
        }
        Action::SetDirectoryMail => {
            let Some(dn) = dn else {
                return Ok(Verdict::Unknown(
                    "the journal does not name the entry".into(),
                ));
            };
            let Some(entry) = directory.entry(&dn).await? else {
                return Ok(Verdict::Unknown(format!("no entry at `{dn}` any more")));
            };
            let now = entry.mail.map_or(Value::Null, Value::String);
            Ok(compare(
                &[(
                    "mail",
                    &now,
                    &attribute(before, "mail"),
                    &attribute(after, "mail"),
                )],
                "the directory's mail",
            ))
        }
        Action::SetCloudAddress | Action::SetUserType => {
            let Some(user_id) = user_id else {
                return Ok(Verdict::Unknown(
                    "the journal does not name the cloud user".into(),
                ));
            };
            let Some(user) = cloud.user(&user_id).await? else {
                return Ok(Verdict::NotDone("the cloud user no longer exists".into()));
            };
            let now = cloud_values(&user);
            // The attributes the original call set: non-null in its after-value (for a
            // rollback record, the original's after-value is this record's before-value).
            let touched = if rollback { before } else { after };
            let rows: Vec<(&str, &Value, Value, Value)> = ["mail", "otherMails", "userType"]
                .into_iter()
                .filter(|name| sets(touched, name))
                .filter_map(|name| {
                    now.get(name).map(|current| {
                        (
                            name,
                            current,
                            attribute(before, name),
                            attribute(after, name),
                        )
                    })
                })
                .collect();
            let rows: Vec<(&str, &Value, &Value, &Value)> = rows
                .iter()
                .map(|(name, current, before, after)| (*name, *current, before, after))
                .collect();
            Ok(compare(&rows, "the cloud user"))
        }
        Action::RandomizePassword if !rollback => {
            let Some(dn) = dn else {
                return Ok(Verdict::Unknown(
                    "the journal does not name the entry".into(),
                ));
            };
            let Some(entry) = directory.entry(&dn).await? else {
                return Ok(Verdict::Unknown(format!("no entry at `{dn}` any more")));
            };
            Ok(password_verdict(
                entry.password_changed.as_deref(),
                pending.started,
            ))
        }
        Action::RevokeSessions if !rollback => {
            let Some(user_id) = user_id else {
                return Ok(Verdict::Unknown(
                    "the journal does not name the cloud user".into(),
                ));
            };
            Ok(match cloud.sessions_valid_from(&user_id).await? {
                None => Verdict::NotDone("the cloud user no longer exists".into()),
                Some(valid_from) => sessions_verdict(valid_from.as_deref(), pending.started),
            })
        }
        other => Ok(Verdict::Unknown(format!(
            "b2bsync cannot read the effect of `{other}`"
        ))),
    }
}

/// An invitation took effect when the cloud shows it: for a first one, the user is pending
/// or has accepted; for a re-invitation, pending again since the call began.
pub(crate) fn invitation_verdict(
    action: Action,
    user: &CloudUser,
    started: jiff::Timestamp,
) -> Verdict {
    let state = user.external_user_state.as_deref();
    let changed_since = user
        .external_user_state_change
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_some_and(|changed| {
            changed.as_second().saturating_add(INVITATION_SKEW_SECS) >= started.as_second()
        });
    let shown = match action {
        Action::Invite => matches!(state, Some("PendingAcceptance" | "Accepted")),
        _ => state == Some("PendingAcceptance") && changed_since,
    };
    let state = state.unwrap_or("no external state");
    if shown {
        Verdict::Done(format!("the cloud shows the invitation ({state})"))
    } else {
        Verdict::NotDone(format!("the cloud does not show the invitation ({state})"))
    }
}

/// The cloud user's address attributes as the journal writes them.
fn cloud_values(user: &CloudUser) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert(
        "mail".into(),
        user.mail.clone().map_or(Value::Null, Value::String),
    );
    m.insert(
        "otherMails".into(),
        Value::Array(
            user.other_mails
                .iter()
                .cloned()
                .map(Value::String)
                .collect(),
        ),
    );
    m.insert(
        "userType".into(),
        user.user_type.clone().map_or(Value::Null, Value::String),
    );
    m
}

/// A value normalized for comparison: addresses compare case-insensitively, lists as sets,
/// and an empty list is no value.
fn normalized(value: Option<&Value>) -> Value {
    match value {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => Value::String(s.to_lowercase()),
        Some(Value::Array(items)) if items.is_empty() => Value::Null,
        Some(Value::Array(items)) => {
            let mut v: Vec<String> = items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_lowercase))
                .collect();
            v.sort();
            v.dedup();
            Value::Array(v.into_iter().map(Value::String).collect())
        }
        Some(other) => other.clone(),
    }
}

/// Each row: attribute, value now, before-value, planned value. `done` when every attribute
/// holds its planned value, `failed` when every one holds its before-value, changed by
/// someone else otherwise. Addresses are not secret, so the values are named.
fn compare(rows: &[(&str, &Value, &Value, &Value)], what: &str) -> Verdict {
    if rows.is_empty() {
        return Verdict::Unknown("the journal does not say which attributes were written".into());
    }
    let now: Vec<String> = rows
        .iter()
        .map(|(name, current, _, _)| format!("{name} is {current}"))
        .collect();
    let now = now.join(", ");
    if rows
        .iter()
        .all(|(_, current, _, planned)| normalized(Some(current)) == normalized(Some(planned)))
    {
        Verdict::Done(format!("{what} holds the planned value ({now})"))
    } else if rows
        .iter()
        .all(|(_, current, before, _)| normalized(Some(current)) == normalized(Some(before)))
    {
        Verdict::NotDone(format!("{what} still holds the value from before ({now})"))
    } else {
        Verdict::ChangedElsewhere(format!("{what} holds neither value ({now})"))
    }
}

/// A password randomization took effect when the directory's password change time is in
/// the second the call began or later.
fn password_verdict(raw: Option<&str>, started: jiff::Timestamp) -> Verdict {
    let Some(raw) = raw else {
        return Verdict::Unknown(
            "the directory does not say when the password changed (no pwdLastSet or pwdChangedTime)"
                .into(),
        );
    };
    match PasswordChanged::parse(raw) {
        None => Verdict::Unknown(format!("the password change time `{raw}` cannot be read")),
        Some(PasswordChanged::Never) => {
            Verdict::NotDone("pwdLastSet is 0 (never set, or must change at next logon)".into())
        }
        Some(PasswordChanged::At(changed)) => {
            if changed.as_second() >= started.as_second() {
                Verdict::Done(format!(
                    "the password changed at {changed}, when or after the call began ({started})"
                ))
            } else {
                Verdict::NotDone(format!(
                    "the password last changed at {changed}, before the call began at {started}"
                ))
            }
        }
    }
}

/// A revocation took effect when the user's `signInSessionsValidFromDateTime` is in the
/// second the call began or later (Graph keeps whole seconds). No allowance is made for a
/// service clock running behind this host: that would only cost a second revocation, while
/// one running ahead could take an older revocation for this one.
fn sessions_verdict(raw: Option<&str>, started: jiff::Timestamp) -> Verdict {
    let Some(raw) = raw else {
        return Verdict::NotDone(
            "the cloud user has no signInSessionsValidFromDateTime (never revoked)".into(),
        );
    };
    // Untrusted text: shown only after it parses, so nothing else reaches the journal.
    match raw.parse::<jiff::Timestamp>() {
        Err(_) => Verdict::NotDone(
            "the cloud user's signInSessionsValidFromDateTime cannot be read".into(),
        ),
        Ok(from) if from.as_second() >= started.as_second() => Verdict::Done(format!(
            "signInSessionsValidFromDateTime is {from}, when or after the call began ({started})"
        )),
        Ok(from) => Verdict::NotDone(format!(
            "signInSessionsValidFromDateTime is {from}, before the call began at {started}"
        )),
    }
}

/// Records in an account's progress what a confirmed action did, as `apply` would have.
fn progress_after_done(record: &mut AccountRecord, entry: &JournalEntry) {
    let p = &mut record.progress;
    let at = entry.at;
    match entry.action {
        Action::Invite | Action::Reinvite => {
            // The later invitation wins: a journaled one older than the recorded one was
            // already counted.
            if p.invited_at.is_none_or(|t| t < at) {
                p.invitations_sent = p.invitations_sent.saturating_add(1);
                p.invited_at = Some(at);
            }
            p.state = p.state.max(Lifecycle::Invited);
        }
        Action::SetDirectoryMail | Action::SetCloudAddress => {
            let after = entry.after.as_ref();
            let address = after
                .and_then(Values::mail)
                .map(str::to_string)
                .or_else(|| {
                    after
                        .and_then(Values::other_mails)
                        .and_then(|list| list.last())
                        .cloned()
                });
            if address.is_some() {
                p.address = address;
            }
            if p.address_staged_at.is_none() {
                p.address_staged_at = Some(at);
            }
        }
        Action::RandomizePassword => {
            p.password_randomized_at = Some(at);
            if p.state >= Lifecycle::Accepted {
                p.state = Lifecycle::Done;
            }
        }
        Action::RevokeSessions => p.sessions_revoked_at = Some(at),
        Action::SetUserType
        | Action::RollbackSetDirectoryMail
        | Action::RollbackSetCloudAddress
        | Action::RollbackSetUserType => {}
    }
}

/// Reconciles every unfinished action of earlier runs, reading the world for each and
/// recording the verdict in the journal under `run_id`.
pub async fn reconcile<D: Directory + Sync, C: Cloud + Sync>(
    store: &std::sync::Mutex<Store>,
    directory: &D,
    cloud: &C,
    run_id: &str,
) -> Result<Reconciled, Error> {
    let (unfinished, mut accounts, names) = {
        let guard = store.lock().unwrap_or_else(|p| p.into_inner());
        let unfinished = guard.unfinished()?;
        // Read once, and only when there is something to settle.
        let (accounts, names): (HashMap<String, AccountRecord>, _) = if unfinished.is_empty() {
            (HashMap::new(), Default::default())
        } else {
            let accounts = guard
                .accounts()?
                .into_iter()
                .map(|a| (a.key.clone(), a))
                .collect();
            (accounts, guard.names()?)
        };
        (unfinished, accounts, names)
    };
    let mut result = Reconciled::default();
    for entry in unfinished {
        let record = accounts.get(&entry.account_key);
        let pending = Pending {
            action: entry.action,
            before: entry.before.as_ref(),
            after: entry.after.as_ref(),
            started: entry.at,
            dn: record.and_then(|r| r.dn.as_deref()),
            cloud_id: record.and_then(|r| r.progress.cloud_id.as_deref()),
        };
        let verdict = settle(&pending, directory, cloud).await?;
        let text = verdict.journal_text();
        let guard = store.lock().unwrap_or_else(|p| p.into_inner());
        if let Verdict::Done(_) = verdict {
            guard.journal(
                run_id,
                &entry.action_key,
                entry.action,
                &entry.account_key,
                Phase::Done,
                entry.before.as_ref(),
                entry.after.as_ref(),
                None,
                None,
                Some(&text),
            )?;
            if let Some(record) = accounts.get_mut(&entry.account_key) {
                progress_after_done(record, &entry);
                guard.save_account(
                    &record.key,
                    record.dn.as_deref(),
                    record.kind.as_deref(),
                    record.reason.as_deref(),
                    &record.progress,
                )?;
            }
            result.confirmed = result.confirmed.saturating_add(1);
        } else {
            guard.journal(
                run_id,
                &entry.action_key,
                entry.action,
                &entry.account_key,
                Phase::Failed,
                entry.before.as_ref(),
                None,
                None,
                None,
                Some(&text),
            )?;
            result.released = result.released.saturating_add(1);
            if let Verdict::Unknown(_) = verdict {
                result.unknown = result.unknown.saturating_add(1);
            }
        }
        drop(guard);
        let dn = accounts
            .get(&entry.account_key)
            .and_then(|r| r.dn.as_deref());
        tracing::debug!(
            account = %crate::model::AccountName::stored(&entry.account_key, dn, &names),
            action = %entry.action_key,
            verdict = verdict.as_str(),
            why = verdict.why(),
            "Reconciled an interrupted action."
        );
        result.verdicts.push(Settled {
            action_key: entry.action_key,
            action: entry.action,
            account: entry.account_key,
            verdict,
        });
    }
    if !result.verdicts.is_empty() {
        tracing::warn!(
            confirmed = result.confirmed,
            released = result.released,
            unknown = result.unknown,
            "Settled the actions an earlier run left unfinished."
        );
    }
    Ok(result)
}

/// Reconciliation could not read the world or write the store; nothing was repeated, and
/// the actions not yet settled stay unfinished for the next run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cloud(#[from] crate::cloud::Error),
    #[error(transparent)]
    Source(#[from] crate::source::Error),
    #[error(transparent)]
    State(#[from] crate::state::Error),
}

impl Error {
    /// One line telling the admin what to do.
    pub fn help(&self) -> String {
        match self {
            Error::Cloud(e) => e.help(),
            Error::Source(e) => e.help(),
            Error::State(e) => e.help().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::apply::fakes::{
        ACCOUNT, FakeCloud, FakeDirectory, account, filetime, interrupted, invitation, randomize,
        set_cloud_address, set_mail, user,
    };
    use crate::model::Progress;
    use crate::plan::Op;

    /// Reconciles under `run-b`; returns the one verdict and the journal's last record.
    async fn settle_one(
        store: &Mutex<Store>,
        directory: &FakeDirectory,
        cloud: &FakeCloud,
    ) -> (Verdict, JournalEntry) {
        let r = reconcile(store, directory, cloud, "run-b").await.unwrap();
        assert_eq!(r.verdicts.len(), 1, "{r:?}");
        let last = store.lock().unwrap().journal_entries(None).unwrap();
        let last = last.last().unwrap().clone();
        assert_eq!(last.run_id, "run-b");
        assert!(store.lock().unwrap().unfinished().unwrap().is_empty());
        (r.verdicts[0].verdict.clone(), last)
    }

    #[tokio::test]
    async fn an_interrupted_ad_mail_write_is_judged_by_the_mail_ad_holds_now() {
        let cases = [
            // (AD mail now, verdict, journal phase)
            (Some("Ana@Fabrikam.example"), "done", "done"),
            (Some("old@contoso.example"), "failed", "failed"),
            (Some("someone@else.example"), "changed", "failed"),
            (None, "changed", "failed"),
        ];
        for (now, verdict, phase) in cases {
            let (_d, store) = interrupted(&set_mail(), Lifecycle::NeedsAddress);
            let directory = FakeDirectory::with(vec![account(now, None)]);
            let (v, last) = settle_one(&store, &directory, &FakeCloud::default()).await;
            assert_eq!(
                (v.as_str(), last.phase.as_str()),
                (verdict, phase),
                "{now:?}: {v:?}"
            );
            let text = last.error.unwrap_or_default();
            match verdict {
                "done" => assert!(
                    last.after
                        .is_some_and(|a| a.mail() == Some("ana@fabrikam.example"))
                ),
                "failed" => assert!(text.contains("did not take effect"), "{text}"),
                _ => {
                    // Addresses are not secret: the value found is named.
                    let found = now.unwrap_or("null");
                    assert!(text.contains("changed by someone else"), "{text}");
                    assert!(text.contains(found), "{text}");
                }
            }
        }
    }

    #[tokio::test]
    async fn an_interrupted_cloud_address_write_is_judged_by_the_user_read_now() {
        let cases: [(Option<&str>, &[&str], &str); 4] = [
            (
                Some("ana@fabrikam.example"),
                &["ANA@fabrikam.example"],
                "done",
            ),
            (None, &[], "failed"),
            // Half of it: someone else's doing (a PATCH is all or nothing).
            (None, &["ana@fabrikam.example"], "changed"),
            (Some("x@y.example"), &["x@y.example"], "changed"),
        ];
        for (mail, other, verdict) in cases {
            let (_d, store) = interrupted(&set_cloud_address(), Lifecycle::NeedsAddress);
            let cloud = FakeCloud::with(vec![user(mail, other)]);
            let (v, _) = settle_one(&store, &FakeDirectory::default(), &cloud).await;
            assert_eq!(v.as_str(), verdict, "{mail:?} {other:?}: {v:?}");
        }
    }

    #[tokio::test]
    async fn an_interrupted_password_reset_is_judged_by_the_change_time() {
        const MINUTE: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);
        // (the change time the directory shows, from the time the call began; verdict)
        type Changed = fn(jiff::Timestamp) -> Option<String>;
        let cases: [(Changed, &str); 6] = [
            // AD pwdLastSet after the call began: it took effect.
            (|began| Some(filetime(began + MINUTE)), "done"),
            // Samba/OpenLDAP whole seconds: a change in the second the call began counts.
            (
                |began| {
                    Some(filetime(
                        jiff::Timestamp::from_second(began.as_second()).unwrap(),
                    ))
                },
                "done",
            ),
            // OpenLDAP pwdChangedTime (generalized time), after.
            (
                |began| Some((began + MINUTE).strftime("%Y%m%d%H%M%SZ").to_string()),
                "done",
            ),
            // Changed before the call: not this write, even within a minute.
            (
                |began| Some(filetime(began - jiff::SignedDuration::from_secs(30))),
                "failed",
            ),
            (|_| Some("0".to_string()), "failed"),
            // No change time at all (OpenLDAP without ppolicy, or never changed).
            (|_| None, "unknown"),
        ];
        for (changed, verdict) in cases {
            let (_d, store) = interrupted(&randomize(), Lifecycle::Accepted);
            // The time the interrupted call began, as its journal record holds it (a test
            // that took the time before the record was written failed across a second).
            let began = store.lock().unwrap().unfinished().unwrap()[0].at;
            let changed = changed(began);
            let directory = FakeDirectory::with(vec![account(None, changed.clone())]);
            let (v, last) = settle_one(&store, &directory, &FakeCloud::default()).await;
            assert_eq!(v.as_str(), verdict, "{changed:?}: {v:?}");
            let progress = store.lock().unwrap().progress().unwrap()[ACCOUNT].clone();
            if verdict == "done" {
                assert_eq!(last.phase, Phase::Done);
                assert!(progress.password_randomized_at.is_some());
                assert_eq!(progress.state, Lifecycle::Done, "not planned again");
            } else {
                assert_eq!(last.phase, Phase::Failed);
                assert!(progress.password_randomized_at.is_none(), "planned again");
            }
        }
    }

    // Issue 19: a revocation left `started` by a crash is read back, never assumed.
    #[tokio::test]
    async fn an_interrupted_revocation_is_judged_by_the_sessions_valid_from_time() {
        /// A time as Graph writes it: whole seconds.
        fn graph(t: jiff::Timestamp) -> Option<String> {
            Some(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        }
        const MINUTE: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);
        // (user exists, signInSessionsValidFromDateTime from the time the call began, verdict)
        type ValidFrom = fn(jiff::Timestamp) -> Option<String>;
        let cases: [(bool, ValidFrom, &str); 6] = [
            (true, |began| graph(began + MINUTE), "done"),
            // Graph's whole seconds: a revocation in the second the call began counts.
            (true, graph, "done"),
            // An older revocation (before this call) is not this one.
            (true, |began| graph(began - MINUTE), "failed"),
            (true, |_| None, "failed"),
            (true, |_| Some("\u{1b}[31mnot a time".to_string()), "failed"),
            (false, |_| None, "failed"),
        ];
        for (exists, valid_from, verdict) in cases {
            let op = Op::RevokeSessions {
                user_id: crate::apply::fakes::USER.into(),
            };
            let (_d, store) = interrupted(&op, Lifecycle::Done);
            // The time the interrupted call began, as its journal record holds it (a test
            // that took the time before the record was written failed across a second).
            let began = store.lock().unwrap().unfinished().unwrap()[0].at;
            let valid_from = valid_from(began);
            let cloud = FakeCloud::with(if exists {
                vec![user(None, &[])]
            } else {
                vec![]
            });
            if let Some(t) = &valid_from {
                cloud
                    .sessions_valid_from
                    .lock()
                    .unwrap()
                    .insert(crate::apply::fakes::USER.into(), t.clone());
            }
            let (v, last) = settle_one(&store, &FakeDirectory::default(), &cloud).await;
            assert_eq!(v.as_str(), verdict, "{valid_from:?}: {v:?}");
            assert!(!v.why().contains('\u{1b}'), "{v:?}");
            assert!(
                cloud.calls().iter().all(|c| !c.starts_with("revoke")),
                "never POSTed"
            );
            let progress = store.lock().unwrap().progress().unwrap()[ACCOUNT].clone();
            if verdict == "done" {
                assert_eq!(last.phase, Phase::Done);
                let text = last.error.unwrap_or_default();
                assert!(
                    text.contains("signInSessionsValidFromDateTime is"),
                    "{text}"
                );
                assert!(progress.sessions_revoked_at.is_some());
            } else {
                assert_eq!(last.phase, Phase::Failed);
                assert!(progress.sessions_revoked_at.is_none(), "planned again");
            }
        }
    }

    #[test]
    fn a_confirmed_invitation_counts_only_when_later_than_the_recorded_one() {
        // Both spellings are RFC 3339; as text, "…00.5Z" sorts before "…00Z".
        let cases = [
            // (recorded, journaled, counted)
            ("2026-12-01T10:00:00Z", "2026-12-01T10:00:00.5Z", true),
            ("2026-12-01T10:00:00.5Z", "2026-12-01T10:00:00Z", false),
            ("2026-12-01T10:00:00.5Z", "2026-12-01T10:00:00.500Z", false),
            ("2026-12-01T11:00:00+01:00", "2026-12-01T10:00:00.1Z", true),
        ];
        let time = |t: &str| t.parse::<jiff::Timestamp>().unwrap();
        for (recorded, journaled, counted) in cases {
            let mut record = AccountRecord {
                key: ACCOUNT.into(),
                dn: None,
                kind: None,
                reason: None,
                updated_at: time(recorded),
                gone_at: None,
                progress: Progress {
                    state: Lifecycle::Invited,
                    invited_at: Some(time(recorded)),
                    invitations_sent: 1,
                    ..Progress::default()
                },
            };
            let entry = JournalEntry {
                seq: 1,
                run_id: "run-a".into(),
                action_key: "k/invite".into(),
                action: Action::Reinvite,
                account_key: ACCOUNT.into(),
                phase: Phase::Started,
                before: None,
                after: None,
                request_id: None,
                client_request_id: None,
                error: None,
                at: time(journaled),
            };
            progress_after_done(&mut record, &entry);
            let p = &record.progress;
            let expected = if counted {
                (2, time(journaled))
            } else {
                (1, time(recorded))
            };
            assert_eq!(
                (p.invitations_sent, p.invited_at),
                (expected.0, Some(expected.1)),
                "{recorded} then {journaled}"
            );
        }
    }

    #[tokio::test]
    async fn a_read_that_fails_leaves_the_action_unfinished() {
        let (_d, store) = interrupted(&set_mail(), Lifecycle::NeedsAddress);
        let directory = FakeDirectory::with(vec![account(Some("ana@fabrikam.example"), None)]);
        *directory.unreachable.lock().unwrap() = true;
        let err = reconcile(&store, &directory, &FakeCloud::default(), "run-b")
            .await
            .expect_err("the directory cannot be read");
        assert!(matches!(err, Error::Source(_)), "{err}");
        assert!(!err.help().is_empty());
        let open = store.lock().unwrap().unfinished().unwrap();
        assert_eq!(open.len(), 1, "not guessed: still unfinished");
        // Once the directory answers, the same action is settled.
        *directory.unreachable.lock().unwrap() = false;
        let r = reconcile(&store, &directory, &FakeCloud::default(), "run-c")
            .await
            .unwrap();
        assert_eq!((r.confirmed, r.released), (1, 0));
    }

    /// One interrupted action and the world a later run finds.
    struct Case {
        name: &'static str,
        action: Action,
        values: (Option<Values>, Option<Values>),
        users: Vec<CloudUser>,
        entries: Vec<crate::model::SourceAccount>,
        /// `done`, `failed`, `changed` or `unknown`.
        verdict: &'static str,
    }

    #[tokio::test]
    async fn every_kind_of_interrupted_action_is_judged_by_what_the_world_shows() {
        let ago = |hours: i64| {
            (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(hours)).to_string()
        };
        let invited = |state: Option<&str>, changed: Option<String>| {
            let mut u = user(None, &[]);
            u.external_user_state = state.map(str::to_string);
            u.external_user_state_change = changed;
            u
        };
        let typed = |t: Option<&str>| {
            let mut u = user(None, &[]);
            u.user_type = t.map(str::to_string);
            u
        };
        let invite = crate::apply::journal_values(&Op::Invite(invitation()));
        let user_type = crate::apply::journal_values(&Op::SetUserType {
            user_id: crate::apply::fakes::USER.into(),
            from: Some("Member".into()),
            to: crate::mapping::UserType::Guest,
        });
        let (mail_before, mail_after) = crate::apply::journal_values(&set_mail());
        // An undo of an AD mail write: the original's values swapped.
        let undo_mail = (mail_after.clone(), mail_before.clone());
        let cases = [
            Case {
                name: "an invitation the cloud shows pending",
                action: Action::Invite,
                values: invite.clone(),
                users: vec![invited(Some("PendingAcceptance"), Some(ago(0)))],
                entries: vec![],
                verdict: "done",
            },
            Case {
                name: "an invitation already accepted",
                action: Action::Invite,
                values: invite.clone(),
                users: vec![invited(Some("Accepted"), Some(ago(1)))],
                entries: vec![],
                verdict: "done",
            },
            Case {
                name: "an invitation the cloud does not show",
                action: Action::Invite,
                values: invite.clone(),
                users: vec![invited(None, None)],
                entries: vec![],
                verdict: "failed",
            },
            Case {
                name: "an invitation to a user since deleted",
                action: Action::Invite,
                values: invite.clone(),
                users: vec![],
                entries: vec![],
                verdict: "failed",
            },
            Case {
                name: "a re-invitation pending again since the call",
                action: Action::Reinvite,
                values: invite.clone(),
                users: vec![invited(Some("PendingAcceptance"), Some(ago(0)))],
                entries: vec![],
                verdict: "done",
            },
            Case {
                name: "a re-invitation pending since before the call",
                action: Action::Reinvite,
                values: invite.clone(),
                users: vec![invited(Some("PendingAcceptance"), Some(ago(48)))],
                entries: vec![],
                verdict: "failed",
            },
            Case {
                name: "a userType write the cloud holds",
                action: Action::SetUserType,
                values: user_type.clone(),
                users: vec![typed(Some("guest"))],
                entries: vec![],
                verdict: "done",
            },
            Case {
                name: "a userType write that did not land",
                action: Action::SetUserType,
                values: user_type.clone(),
                users: vec![typed(Some("Member"))],
                entries: vec![],
                verdict: "failed",
            },
            Case {
                name: "an undo of an AD mail write that landed",
                action: Action::RollbackSetDirectoryMail,
                values: undo_mail.clone(),
                users: vec![],
                entries: vec![account(Some("old@contoso.example"), None)],
                verdict: "done",
            },
            Case {
                name: "an undo of an AD mail write that did not land",
                action: Action::RollbackSetDirectoryMail,
                values: undo_mail,
                users: vec![],
                entries: vec![account(Some("ana@fabrikam.example"), None)],
                verdict: "failed",
            },
            Case {
                name: "an AD mail write whose entry is gone",
                action: Action::SetDirectoryMail,
                values: (mail_before, mail_after),
                users: vec![],
                entries: vec![],
                verdict: "unknown",
            },
        ];
        for case in cases {
            let (before, after) = case.values;
            let (_d, store) = crate::apply::fakes::interrupted_record(
                case.action,
                before,
                after,
                Lifecycle::Ready,
            );
            let directory = FakeDirectory::with(case.entries);
            let cloud = FakeCloud::with(case.users);
            let (v, last) = settle_one(&store, &directory, &cloud).await;
            assert_eq!(v.as_str(), case.verdict, "{}: {v:?}", case.name);
            let phase = if case.verdict == "done" {
                Phase::Done
            } else {
                Phase::Failed
            };
            assert_eq!(last.phase, phase, "{}", case.name);
            assert_eq!(last.action, case.action, "{}", case.name);
        }
    }

    #[tokio::test]
    async fn an_interrupted_invitation_the_cloud_shows_is_confirmed_and_counted() {
        let (_d, store) = interrupted(&Op::Invite(invitation()), Lifecycle::Ready);
        let mut shown = user(None, &[]);
        shown.external_user_state = Some("PendingAcceptance".into());
        let cloud = FakeCloud::with(vec![shown]);
        let (v, last) = settle_one(&store, &FakeDirectory::default(), &cloud).await;
        assert_eq!(v.as_str(), "done");
        assert_eq!(last.phase, Phase::Done);
        let progress = store.lock().unwrap().progress().unwrap()[ACCOUNT].clone();
        assert_eq!(progress.state, Lifecycle::Invited);
        assert_eq!(progress.invitations_sent, 1);
    }
}
