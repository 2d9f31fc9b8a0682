//! The `plan` stage (pure, deterministic, secret-free): decides, for every account in scope,
//! where it stands in the lifecycle (docs/architecture.md) and which actions move it forward.
//!
//! Like atuin's `operations()`, the output is data: a sorted, serializable [`Plan`] of typed
//! [`Action`]s plus one [`AccountOutcome`] per account, with a typed [`BlockReason`] and a
//! `help:` text for every account that cannot move. The same inputs always give the same plan
//! (byte for byte, as JSON). A plan never holds a password: `RandomizePassword` only names the
//! account; `apply` generates the value and drops it after the LDAP modify.
//!
//! An account never moves backwards: facts recorded in its [`Progress`] (an invitation sent,
//! a password randomized) hold even when the cloud does not show them yet, so a second run
//! never sends a second invitation because Graph is slow to show `PendingAcceptance`.
//!
//! Actions of one account carry increasing `seq` numbers and must run in that order; when one
//! fails, `apply` skips the rest of that account's actions (a cloud-only account's address is
//! written and its invitation sent in the same run, the invitation only after the write).

use std::cell::OnceCell;
use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::join::Joined;
use crate::mapping::{InvitationSettings, MappingSet, UserType};
use crate::model::{AccountKind, Lifecycle, Progress};

mod carry;
mod decide;
mod progress;
mod reasons;

pub use carry::{Carried, CarriedBy};
use decide::{Context, shared_addresses};
pub use progress::progress_after;
pub use reasons::{BlockReason, Explained, ReasonCode, Side, UnknownReasonCode, Warning};

/// Version of the plan's JSON schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Redirect URL used when neither the config nor the mapping sets one (Microsoft's example).
pub const DEFAULT_REDIRECT_URL: &str = "https://myapps.microsoft.com";

/// When the on-premises password is set to an unknown random value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RandomizeWhen {
    /// Once `externalUserState` is `Accepted` (default: the user can always sign in somehow).
    #[default]
    AfterAcceptance,
    /// As soon as the invitation is sent (stops internal sign-in earlier).
    AfterInvitation,
    /// Once the cloud user's `signInActivity` shows a successful sign-in after the
    /// acceptance (Microsoft's advice: make the internal password unknown once the external
    /// sign-in works). Reading `signInActivity` needs `AuditLog.Read.All`.
    AfterSignIn,
    /// Never (another process handles the on-premises account).
    Never,
}

/// The `[policy]` section of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub randomize_password: RandomizeWhen,
    /// Re-invite (`resetRedemption`) when an invitation is pending this many days.
    pub reinvite_after_days: u32,
    /// At most this many re-invitations per account.
    pub reinvite_max: u32,
    /// Warn when a synced account waits for Entra Connect longer than this.
    pub awaiting_sync_warn_minutes: u32,
    /// Warn when an invitation is pending longer than this many days.
    pub pending_warn_days: u32,
    /// Revoke the cloud user's sign-in sessions once the on-premises password of a
    /// converted account is randomized.
    pub revoke_sessions: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            randomize_password: RandomizeWhen::AfterAcceptance,
            reinvite_after_days: 14,
            reinvite_max: 2,
            awaiting_sync_warn_minutes: 120,
            pending_warn_days: 30,
            revoke_sessions: true,
        }
    }
}

/// Facts about the tenant beyond its users.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// The tenant's verified domains (an external address may not be in one).
    pub verified_domains: Vec<String>,
    /// Addresses held by objects other than users (contacts, groups), when the cloud reads them.
    pub other_addresses: Vec<OtherAddress>,
}

/// An address held by a non-user object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherAddress {
    pub object_id: String,
    pub attribute: String,
    pub address: String,
}

/// An invitation, exactly as `apply` sends it to `POST /invitations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// `invitedUser.id`: the existing user to convert.
    pub user_id: String,
    /// `invitedUserEmailAddress`.
    pub email: String,
    pub redirect_url: String,
    pub send_message: bool,
    pub message_language: Option<String>,
    pub message_body: Option<String>,
    pub cc: Option<String>,
    /// 1 for the first invitation, 2 for the first re-invitation, ...
    pub attempt: u32,
}

/// One change, with what apply needs and the before/after values for the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// Synced user: LDAP modify of AD `mail` (Entra Connect flows it to the cloud).
    SetDirectoryMail {
        dn: String,
        from: Option<String>,
        to: String,
    },
    /// Cloud-only user: PATCH `otherMails` and/or `mail`. A `*_to` of `None` leaves the
    /// attribute alone.
    SetCloudAddress {
        user_id: String,
        other_mails_from: Vec<String>,
        other_mails_to: Option<Vec<String>>,
        mail_from: Option<String>,
        mail_to: Option<String>,
    },
    /// `POST /invitations` with `invitedUser.id`: converts the user (one-way).
    Invite(Invitation),
    /// The same with `resetRedemption: true`.
    Reinvite(Invitation),
    /// Set the on-premises password to an unknown random value (generated by apply, never
    /// stored). Never touches `userAccountControl`.
    RandomizePassword {
        dn: String,
        account_name: Option<String>,
        /// The account's display name: AD refuses a password holding any of its tokens.
        #[serde(default)]
        display_name: Option<String>,
    },
    /// `POST /users/{id}/revokeSignInSessions` after the password of a converted account was
    /// randomized: its refresh tokens and session cookies stop working. Idempotent.
    RevokeSessions { user_id: String },
    /// PATCH `userType` (Guest activates MAU billing).
    SetUserType {
        user_id: String,
        from: Option<String>,
        to: UserType,
    },
}

/// The guard's categories of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    AddressWrites,
    Invitations,
    Reinvitations,
    PasswordRandomizations,
    SessionRevocations,
    UserTypeChanges,
}

impl Category {
    /// The snake_case name (config keys, messages).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::AddressWrites => "address_writes",
            Category::Invitations => "invitations",
            Category::Reinvitations => "reinvitations",
            Category::PasswordRandomizations => "password_randomizations",
            Category::SessionRevocations => "session_revocations",
            Category::UserTypeChanges => "user_type_changes",
        }
    }
}

impl Op {
    /// The snake_case name of the operation.
    pub fn name(&self) -> &'static str {
        match self {
            Op::SetDirectoryMail { .. } => "set_directory_mail",
            Op::SetCloudAddress { .. } => "set_cloud_address",
            Op::Invite(_) => "invite",
            Op::Reinvite(_) => "reinvite",
            Op::RandomizePassword { .. } => "randomize_password",
            Op::RevokeSessions { .. } => "revoke_sessions",
            Op::SetUserType { .. } => "set_user_type",
        }
    }

    /// The guard category.
    pub fn category(&self) -> Category {
        match self {
            Op::SetDirectoryMail { .. } | Op::SetCloudAddress { .. } => Category::AddressWrites,
            Op::Invite(_) => Category::Invitations,
            Op::Reinvite(_) => Category::Reinvitations,
            Op::RandomizePassword { .. } => Category::PasswordRandomizations,
            Op::RevokeSessions { .. } => Category::SessionRevocations,
            Op::SetUserType { .. } => Category::UserTypeChanges,
        }
    }

    /// Whether a retry after an unknown outcome could repeat a visible effect (an email).
    pub fn non_idempotent(&self) -> bool {
        matches!(self, Op::Invite(_) | Op::Reinvite(_))
    }

    /// Whether the effect cannot be undone: an accepted conversion is one-way (the B2B
    /// credentials stay; going back means deleting the user), and a randomized password
    /// is unknown to everyone.
    pub fn irreversible(&self) -> bool {
        matches!(
            self,
            Op::Invite(_) | Op::Reinvite(_) | Op::RandomizePassword { .. }
        )
    }
}

/// One planned action for one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// The account's state-store key.
    pub account: String,
    /// Order within the account, from 0.
    pub seq: u32,
    pub op: Op,
}

impl Action {
    /// Stable key for the journal: `account/seq/op`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.account, self.seq, self.op.name())
    }
}

/// Where one account stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountOutcome {
    pub key: String,
    pub mapping: String,
    pub dn: String,
    pub account_name: Option<String>,
    pub kind: Option<AccountKind>,
    pub cloud_id: Option<String>,
    /// The joined cloud user's `userPrincipalName` (how a cloud-only account is named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    /// The external address the mapping yields (when valid).
    pub address: Option<String>,
    /// The state now, as observed.
    pub state: Lifecycle,
    /// The furthest stage the account reached (never `blocked`/`unmatched` once it moved).
    pub stage: Lifecycle,
    /// The state once every action of this account succeeded.
    pub next: Lifecycle,
    pub reasons: Vec<Explained<BlockReason>>,
    pub warnings: Vec<Explained<Warning>>,
    /// When the cloud says the user accepted (`externalUserStateChangeDateTime` of a user
    /// that shows `Accepted`), for the progress's `accepted_at`; not part of the plan's JSON.
    #[serde(skip)]
    pub accepted_change: Option<jiff::Timestamp>,
}

impl AccountOutcome {
    /// How people know the account ([`crate::model::AccountName`]).
    pub fn name(&self) -> crate::model::AccountName<'_> {
        crate::model::AccountName {
            upn: self.upn.as_deref(),
            account_name: self.account_name.as_deref(),
            dn: Some(&self.dn),
            key: &self.key,
        }
    }

    /// An outcome with nothing but its state (and where it goes: nowhere) and its stage:
    /// no key, names, user, address, reason or warning yet.
    pub(crate) fn undecided(state: Lifecycle, stage: Lifecycle) -> Self {
        AccountOutcome {
            key: String::new(),
            mapping: String::new(),
            dn: String::new(),
            account_name: None,
            kind: None,
            cloud_id: None,
            upn: None,
            address: None,
            state,
            stage,
            next: state,
            reasons: Vec::new(),
            warnings: Vec::new(),
            accepted_change: None,
        }
    }
}

/// Counts for the report and the guard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub accounts: usize,
    pub states: BTreeMap<Lifecycle, usize>,
    pub reasons: BTreeMap<String, usize>,
    pub actions: BTreeMap<Category, usize>,
    /// Accounts in scope that an incremental run did not plan again: nothing touched them
    /// since their last plan, which had no action and a settled state (they are not in
    /// `accounts`; `status` shows their last state).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unchanged: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A mapping the plan used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingRef {
    pub name: String,
    pub path: String,
    pub fingerprint: String,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub schema_version: u32,
    /// The `now` the plan was computed for (RFC 3339).
    pub generated_at: String,
    /// sha256 over mappings, actions and outcomes: two plans with the same fingerprint agree.
    pub fingerprint: String,
    pub mappings: Vec<MappingRef>,
    /// Sorted by account key, then `seq`.
    pub actions: Vec<Action>,
    /// Sorted by account key.
    pub accounts: Vec<AccountOutcome>,
    pub summary: Summary,
    /// Accounts whose progress the store remembers under another key (a DN-keyed account
    /// renamed, an account that now has an anchor); `run` moves it before any write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carried: Vec<Carried>,
}

/// Computes the plan. Pure: no I/O, no clock (`now` is an input), no randomness.
///
/// * `joined`: the output of [`crate::join::join`];
/// * `progress`: what the state store remembers, by account key;
/// * `tenant`: verified domains and non-user addresses;
/// * `policy`, `defaults`: the config's `[policy]` and `[invitation]`.
pub fn plan(
    joined: Joined,
    mappings: &MappingSet,
    progress: &BTreeMap<String, Progress>,
    tenant: &Tenant,
    policy: &Policy,
    defaults: &InvitationSettings,
    now: Timestamp,
) -> Plan {
    let carried = carry::carry_over(&joined, progress);
    let moved;
    let progress = if carried.is_empty() {
        progress
    } else {
        moved = carry::moved(progress, &carried);
        &moved
    };
    let Joined {
        accounts: joined_accounts,
        outcomes,
        users,
    } = joined;
    let ctx = Context {
        users: &users,
        mappings,
        progress,
        tenant,
        policy,
        defaults,
        now,
        holders: OnceCell::new(),
        claims: shared_addresses(&joined_accounts),
    };

    // Each account is consumed as it is decided: the outcome takes over its strings.
    let mut accounts = Vec::with_capacity(joined_accounts.len());
    let mut actions = Vec::new();
    for (m, join) in joined_accounts.into_iter().zip(outcomes) {
        let (outcome, ops) = ctx.decide(m, &join);
        for (seq, op) in ops.into_iter().enumerate() {
            actions.push(Action {
                account: outcome.key.clone(),
                seq: u32::try_from(seq).unwrap_or(u32::MAX),
                op,
            });
        }
        accounts.push(outcome);
    }
    drop(ctx);
    drop(users);
    // The join sorted the accounts already; a stable sort would still take a scratch copy.
    if !accounts.is_sorted_by(|a, b| a.key <= b.key) {
        accounts.sort_by(|a, b| a.key.cmp(&b.key));
    }
    actions.sort_by(|a, b| a.account.cmp(&b.account).then(a.seq.cmp(&b.seq)));

    assemble(mappings, actions, accounts, carried, 0, now)
}

/// The plan of these decisions: counts, mappings and fingerprint.
fn assemble(
    mappings: &MappingSet,
    actions: Vec<Action>,
    accounts: Vec<AccountOutcome>,
    carried: Vec<Carried>,
    unchanged: usize,
    now: Timestamp,
) -> Plan {
    let mut summary = Summary {
        accounts: accounts.len(),
        unchanged,
        ..Summary::default()
    };
    for o in &accounts {
        *summary.states.entry(o.state).or_default() += 1;
        for r in &o.reasons {
            *summary
                .reasons
                .entry(r.reason.code().to_string())
                .or_default() += 1;
        }
    }
    for a in &actions {
        *summary.actions.entry(a.op.category()).or_default() += 1;
    }
    let mapping_refs: Vec<MappingRef> = mappings
        .mappings()
        .iter()
        .map(|m| MappingRef {
            name: m.name.clone(),
            path: m.path.clone(),
            fingerprint: m.fingerprint.clone(),
        })
        .collect();
    let fingerprint = fingerprint(&mapping_refs, &actions, &accounts);
    Plan {
        schema_version: SCHEMA_VERSION,
        generated_at: now.to_string(),
        fingerprint,
        mappings: mapping_refs,
        actions,
        accounts,
        summary,
        carried,
    }
}

impl Plan {
    /// The plan of only the accounts in `keep` (what an incremental run considered), with
    /// `unchanged` accounts in scope left out; counts and fingerprint are of what is kept.
    pub fn restrict(
        self,
        keep: &std::collections::BTreeSet<String>,
        unchanged: usize,
        mappings: &MappingSet,
        now: Timestamp,
    ) -> Plan {
        let actions = self
            .actions
            .into_iter()
            .filter(|a| keep.contains(&a.account))
            .collect();
        let accounts = self
            .accounts
            .into_iter()
            .filter(|a| keep.contains(&a.key))
            .collect();
        let carried = self
            .carried
            .into_iter()
            .filter(|c| keep.contains(&c.to))
            .collect();
        assemble(mappings, actions, accounts, carried, unchanged, now)
    }
}

/// An address as the uniqueness checks compare it: trimmed, lower case, no `smtp:`.
pub(crate) fn address_key(address: &str) -> String {
    decide::address_key(address).into_owned()
}

/// Every address a cloud user holds, as the uniqueness checks see them ([`address_key`]).
pub(crate) fn held_addresses(user: &crate::model::CloudUser) -> Vec<String> {
    decide::holders(std::slice::from_ref(user), &Tenant::default())
        .into_iter()
        .map(|(a, _, _)| a.into_owned())
        .collect()
}

/// sha256 over what a plan decides: the mappings, every action, and per account its key,
/// states, cloud id, address and reason codes (not the help texts, which may be reworded).
fn fingerprint(mappings: &[MappingRef], actions: &[Action], accounts: &[AccountOutcome]) -> String {
    /// Feeds serde_json's output straight into the hash, without a buffer.
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hashing(Sha256::new());
    // Serializing these plain structs cannot fail; a failure would only weaken the
    // fingerprint, never the plan.
    let _ = serde_json::to_writer(&mut h, mappings);
    let _ = serde_json::to_writer(&mut h, actions);
    for o in accounts {
        let codes: Vec<&str> = o.reasons.iter().map(|r| r.reason.code()).collect();
        let _ = serde_json::to_writer(
            &mut h,
            &(&o.key, o.state, o.next, &o.cloud_id, &o.address, codes),
        );
    }
    format!("{:x}", h.0.finalize())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
