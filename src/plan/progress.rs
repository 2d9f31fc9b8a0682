//! What the state store records of an account once `apply` ran its actions.

use jiff::Timestamp;

use super::{AccountOutcome, Op};
use crate::model::{Lifecycle, Progress};

/// The progress to store for an account after `apply` ran its actions: `succeeded` are the
/// operations that succeeded (in order), `invitation_id` the id Graph returned for an
/// invitation among them.
pub fn progress_after(
    prev: Option<&Progress>,
    outcome: &AccountOutcome,
    succeeded: &[&Op],
    invitation_id: Option<&str>,
    now: Timestamp,
) -> Progress {
    let mut p = prev.cloned().unwrap_or_default();
    let mut state = outcome.state;
    for op in succeeded {
        match op {
            Op::SetDirectoryMail { to, .. } => {
                state = state.max(Lifecycle::AwaitingSync);
                p.address = Some(to.clone());
                p.address_staged_at = Some(now);
            }
            Op::SetCloudAddress { .. } => {
                state = state.max(Lifecycle::Ready);
                p.address = outcome.address.clone();
                p.address_staged_at = Some(now);
            }
            Op::Invite(inv) | Op::Reinvite(inv) => {
                state = state.max(Lifecycle::Invited);
                p.address = Some(inv.email.clone());
                p.invited_at = Some(now);
                p.invitations_sent += 1;
                if let Some(id) = invitation_id {
                    p.invitation_id = Some(id.to_string());
                }
            }
            Op::RandomizePassword { .. } => {
                p.password_randomized_at = Some(now);
                if state >= Lifecycle::Accepted {
                    state = Lifecycle::Done;
                }
            }
            Op::RevokeSessions { .. } => {
                p.sessions_revoked_at = Some(now);
            }
            Op::SetUserType { .. } => {}
        }
    }
    if state == Lifecycle::Accepted && p.password_randomized_at.is_some() {
        state = Lifecycle::Done;
    }
    // Start the awaiting-sync clock when the address was already in AD (set by hand).
    if state == Lifecycle::AwaitingSync && p.address_staged_at.is_none() {
        p.address_staged_at = Some(now);
    }
    if state >= Lifecycle::Accepted && p.accepted_at.is_none() {
        // Read `Accepted` for the first time now, or recorded by a build before accepted_at.
        let first_seen = prev.is_none_or(|q| q.state < Lifecycle::Accepted);
        p.accepted_at = plausible_acceptance(outcome.accepted_change, p.invited_at, now)
            .or(first_seen.then_some(now));
    }
    p.state = state;
    if outcome.cloud_id.is_some() {
        p.cloud_id = outcome.cloud_id.clone();
    }
    if p.address.is_none() {
        p.address = outcome.address.clone();
    }
    p
}

/// The cloud's acceptance time when it is plausible: not in the future and not before the
/// invitation b2bsync sent (when it knows one). Otherwise `None`, and the time b2bsync read
/// `Accepted` stands in.
pub fn plausible_acceptance(
    change: Option<Timestamp>,
    invited_at: Option<Timestamp>,
    now: Timestamp,
) -> Option<Timestamp> {
    change.filter(|t| *t <= now && invited_at.is_none_or(|i| *t >= i))
}
