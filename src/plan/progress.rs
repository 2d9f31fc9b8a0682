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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    // Issue 17: the cloud's acceptance time only when it could be true.
    #[test]
    fn an_acceptance_time_is_the_clouds_when_plausible() {
        let now = t("2026-11-23T12:00:00Z");
        let invited = Some(t("2026-11-20T09:00:00Z"));
        let cases = [
            // (cloud's time, recorded)
            (Some("2026-11-21T10:00:00Z"), Some("2026-11-21T10:00:00Z")),
            (Some("2026-11-20T09:00:00Z"), Some("2026-11-20T09:00:00Z")),
            // Before the invitation, or in the future: not believed.
            (Some("2026-11-19T10:00:00Z"), None),
            (Some("2026-11-24T10:00:00Z"), None),
            (None, None),
        ];
        for (change, want) in cases {
            assert_eq!(
                plausible_acceptance(change.map(t), invited, now),
                want.map(t),
                "{change:?}"
            );
        }
        // Without a known invitation, any past time is plausible.
        let past = Some(t("2026-01-01T00:00:00Z"));
        assert_eq!(plausible_acceptance(past, None, now), past);
    }

    #[test]
    fn accepted_at_is_set_once_when_accepted_is_first_read() {
        let now = t("2026-11-23T12:00:00Z");
        let prev = Progress {
            state: Lifecycle::Invited,
            invited_at: Some(t("2026-11-20T09:00:00Z")),
            ..Progress::default()
        };
        let mut outcome = AccountOutcome::undecided(Lifecycle::Accepted, Lifecycle::Accepted);
        // The cloud's time in the future: the time of the read stands in.
        outcome.accepted_change = Some(t("2026-12-01T00:00:00Z"));
        let p = progress_after(Some(&prev), &outcome, &[], None, now);
        assert_eq!(p.accepted_at, Some(now));
        // A later run keeps it.
        let later = t("2026-11-24T12:00:00Z");
        let q = progress_after(Some(&p), &outcome, &[], None, later);
        assert_eq!(q.accepted_at, Some(now));
        // A plausible cloud time wins over the read.
        outcome.accepted_change = Some(t("2026-11-22T08:00:00Z"));
        let p = progress_after(Some(&prev), &outcome, &[], None, now);
        assert_eq!(p.accepted_at, Some(t("2026-11-22T08:00:00Z")));
        // Still invited: none.
        let invited = AccountOutcome::undecided(Lifecycle::Invited, Lifecycle::Invited);
        assert_eq!(
            progress_after(Some(&prev), &invited, &[], None, now).accepted_at,
            None
        );
    }
}
