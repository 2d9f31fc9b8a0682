//! Settles actions that a crash left journaled as `started` but never `done` or `failed`,
//! by reading the world before anything is repeated: an invitation counts as sent when the
//! cloud user shows it, so a crash between the call and the journal never leads to a second
//! invitation; every other write is idempotent and is simply planned again if still needed.

use crate::cloud::Cloud;
use crate::model::Lifecycle;
use crate::state::{Phase, Store};

/// What reconciliation decided.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Interrupted invitations the cloud shows as sent.
    pub confirmed: usize,
    /// Interrupted actions that did not happen (or are idempotent): planned again if needed.
    pub released: usize,
}

/// Reconciles every unfinished action of earlier runs, recording the verdict in the journal
/// under `run_id`.
pub async fn reconcile<C: Cloud + Sync>(
    store: &std::sync::Mutex<Store>,
    cloud: &C,
    run_id: &str,
) -> Result<Reconciled, Error> {
    let (unfinished, mut accounts) = {
        let guard = store.lock().unwrap_or_else(|p| p.into_inner());
        let unfinished = guard.unfinished()?;
        // Read once, and only when there is something to settle.
        let accounts: std::collections::HashMap<String, crate::state::AccountRecord> =
            if unfinished.is_empty() {
                Default::default()
            } else {
                guard
                    .accounts()?
                    .into_iter()
                    .map(|a| (a.key.clone(), a))
                    .collect()
            };
        (unfinished, accounts)
    };
    let mut result = Reconciled::default();
    for entry in unfinished {
        let invitation = entry.action == "invite" || entry.action == "reinvite";
        let mut confirmed = false;
        if invitation {
            let user_id = entry
                .after
                .as_deref()
                .and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok())
                .and_then(|v| v.get("userId").and_then(|u| u.as_str()).map(str::to_string));
            if let Some(user_id) = user_id
                && let Some(user) = cloud.user(&user_id).await?
            {
                let state = user.external_user_state.as_deref();
                let changed_since = user
                    .external_user_state_change
                    .as_deref()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .zip(entry.at.parse::<jiff::Timestamp>().ok())
                    // The service stamps the change when it processes the call; allow a
                    // minute of clock skew between this host and the service.
                    .is_some_and(|(changed, started)| {
                        changed.as_second() + 60 >= started.as_second()
                    });
                confirmed = match entry.action.as_str() {
                    "invite" => matches!(state, Some("PendingAcceptance" | "Accepted")),
                    _ => state == Some("PendingAcceptance") && changed_since,
                };
            }
        }
        let guard = store.lock().unwrap_or_else(|p| p.into_inner());
        if confirmed {
            guard.journal(
                run_id,
                &entry.action_key,
                &entry.action,
                &entry.account_key,
                Phase::Done,
                entry.before.as_deref(),
                entry.after.as_deref(),
                None,
                None,
                Some("reconciled: the cloud shows the invitation"),
            )?;
            if let Some(record) = accounts.get_mut(&entry.account_key) {
                let p = &mut record.progress;
                if p.invited_at
                    .as_deref()
                    .is_none_or(|t| t < entry.at.as_str())
                {
                    p.invitations_sent += 1;
                    p.invited_at = Some(entry.at.clone());
                }
                p.state = p.state.max(Lifecycle::Invited);
                guard.save_account(
                    &record.key,
                    record.dn.as_deref(),
                    record.kind.as_deref(),
                    record.reason.as_deref(),
                    &record.progress,
                )?;
            }
            tracing::warn!(action = %entry.action_key, "an interrupted invitation was sent: recorded, not repeated");
            result.confirmed += 1;
        } else {
            guard.journal(
                run_id,
                &entry.action_key,
                &entry.action,
                &entry.account_key,
                Phase::Failed,
                entry.before.as_deref(),
                None,
                None,
                None,
                Some(
                    "reconciled: interrupted before it took effect; planned again if still needed",
                ),
            )?;
            tracing::warn!(action = %entry.action_key, "an interrupted action did not take effect: released");
            result.released += 1;
        }
    }
    Ok(result)
}

/// Reconciliation could not read the cloud or write the store; nothing was repeated.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cloud(#[from] crate::cloud::Error),
    #[error(transparent)]
    State(#[from] crate::state::Error),
}

impl Error {
    /// One line telling the admin what to do.
    pub fn help(&self) -> String {
        match self {
            Error::Cloud(e) => e.help(),
            Error::State(e) => e.help().to_string(),
        }
    }
}
