//! The `plan` stage (pure, deterministic, secret-free): decides, for every account in scope,
//! where it stands in the lifecycle of DESIGN section 2 and which actions move it forward.
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

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::join::{JoinOutcome, Joined};
use crate::mapping::{
    AddressProblem, InvitationSettings, MappedAccount, Mapping, MappingSet, Protection, UserType,
};
use crate::model::{AccountKey, AccountKind, CloudUser, Email, Lifecycle, Progress, lowercase};

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
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            randomize_password: RandomizeWhen::AfterAcceptance,
            reinvite_after_days: 14,
            reinvite_max: 2,
            awaiting_sync_warn_minutes: 120,
            pending_warn_days: 30,
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

/// Where a disabled account is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    OnPremises,
    Cloud,
}

/// Why an account cannot move forward. Each has a [`BlockReason::help`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum BlockReason {
    /// No cloud user matches the join keys.
    NoCloudUser { kind_hint: String },
    /// Several cloud users match.
    SeveralCloudUsers { user_ids: Vec<String> },
    /// The matching cloud user is matched by other accounts too.
    CloudUserShared {
        user_id: String,
        accounts: Vec<String>,
    },
    /// The account was joined to another cloud user in an earlier run.
    CloudUserChanged { was: String, now: String },
    /// The account is in the scope of several mapping files.
    InSeveralScopes { mappings: Vec<String> },
    /// An expression failed for this account.
    MappingFailed { message: String },
    /// The cloud user has `onPremisesUserPrincipalName` (conversion is refused).
    OnPremisesUserPrincipalName { value: String },
    /// The cloud user holds directory roles.
    RoleHolder { roles: Vec<String> },
    /// The cloud user has an Exchange mailbox.
    Mailbox,
    /// The mapping yields no address.
    NoAddress,
    /// The mapped address breaks the invitation address rules.
    InvalidAddress { address: String, problem: String },
    /// The address is in one of the tenant's verified domains.
    AddressInVerifiedDomain { address: String, domain: String },
    /// Another object holds the address.
    AddressInUse {
        address: String,
        object_id: String,
        attribute: String,
    },
    /// Other accounts map to the same address.
    AddressShared {
        address: String,
        accounts: Vec<String>,
    },
    /// `adminCount=1` on-premises.
    AdminCount,
    /// Member of a protected group.
    ProtectedGroup { group: String },
    /// On the mapping's deny list.
    DenyList { entry: String },
    /// The account is disabled.
    Disabled { side: Side },
}

impl BlockReason {
    /// The snake_case code (reports, summaries).
    pub fn code(&self) -> &'static str {
        match self {
            BlockReason::NoCloudUser { .. } => "no_cloud_user",
            BlockReason::SeveralCloudUsers { .. } => "several_cloud_users",
            BlockReason::CloudUserShared { .. } => "cloud_user_shared",
            BlockReason::CloudUserChanged { .. } => "cloud_user_changed",
            BlockReason::InSeveralScopes { .. } => "in_several_scopes",
            BlockReason::MappingFailed { .. } => "mapping_failed",
            BlockReason::OnPremisesUserPrincipalName { .. } => "on_premises_user_principal_name",
            BlockReason::RoleHolder { .. } => "role_holder",
            BlockReason::Mailbox => "mailbox",
            BlockReason::NoAddress => "no_address",
            BlockReason::InvalidAddress { .. } => "invalid_address",
            BlockReason::AddressInVerifiedDomain { .. } => "address_in_verified_domain",
            BlockReason::AddressInUse { .. } => "address_in_use",
            BlockReason::AddressShared { .. } => "address_shared",
            BlockReason::AdminCount => "admin_count",
            BlockReason::ProtectedGroup { .. } => "protected_group",
            BlockReason::DenyList { .. } => "deny_list",
            BlockReason::Disabled { .. } => "disabled",
        }
    }

    /// What to do about it.
    pub fn help(&self) -> String {
        match self {
            BlockReason::NoCloudUser { kind_hint } => format!(
                "no cloud user matches ({kind_hint}); a synced account appears after the next Entra Connect cycle, a cloud-only one needs the `join.cloud_only` pair to match"
            ),
            BlockReason::SeveralCloudUsers { .. } => "several cloud users match this account: make the `join.cloud_only` pair unique, or remove the duplicate cloud user".to_string(),
            BlockReason::CloudUserShared { .. } => "other accounts match the same cloud user: fix the join values so each account matches its own user".to_string(),
            BlockReason::CloudUserChanged { .. } => "the account joined a different cloud user in an earlier run: check which one is right; to accept the new one, clear the account's state (`b2bsync status` shows it)".to_string(),
            BlockReason::InSeveralScopes { .. } => "the account is in the scope of several mapping files: narrow `scope.base_dns`, `scope.filter` or `scope.when`, or use `scope.deny` in all but one".to_string(),
            BlockReason::MappingFailed { .. } => "fix the expression in the mapping file (`b2bsync check` evaluates it), or the attribute value it trips on".to_string(),
            BlockReason::OnPremisesUserPrincipalName { .. } => "Entra ID refuses to convert users with onPremisesUserPrincipalName: change the Entra Connect sync rule that writes it (see docs/operations.md, \"The Entra Connect rule change\"), then run a sync cycle".to_string(),
            BlockReason::RoleHolder { .. } => "an app cannot change or convert a directory-role holder: remove the role assignments (or convert this user by hand as a Privileged Role Administrator)".to_string(),
            BlockReason::Mailbox => "the user has an Exchange mailbox, whose address cannot be changed to an external one: change it in Exchange first (or remove the mailbox), then rerun".to_string(),
            BlockReason::NoAddress => "the mapping yields no external address for this account: set the source attribute (or the lookup table row) the `address` expression reads".to_string(),
            BlockReason::InvalidAddress { .. } => "the external address is not one Graph accepts as invitedUserEmailAddress: correct the source value, or clean it in the `address` expression (trim, lower, normalize_diacritics)".to_string(),
            BlockReason::AddressInVerifiedDomain { .. } => "the external address is in one of the tenant's verified domains; Entra ID refuses such a conversion: use the partner's own address".to_string(),
            BlockReason::AddressInUse { .. } => "another object already uses this address (mail, otherMails or proxyAddresses): remove it there (often a stale guest or contact), or correct the mapping".to_string(),
            BlockReason::AddressShared { .. } => "several accounts map to the same external address: every partner needs their own address; correct the source values".to_string(),
            BlockReason::AdminCount => "adminCount=1: AD protects this (once) privileged account and b2bsync never touches it; if it is no longer privileged, clear adminCount after checking its ACL".to_string(),
            BlockReason::ProtectedGroup { .. } => "members of the mapping's protected groups are never touched: remove the account from the group, or the group from `scope.protected_groups`".to_string(),
            BlockReason::DenyList { .. } => "the account is on the mapping's deny list (`scope.deny`): remove it there to migrate it".to_string(),
            BlockReason::Disabled { .. } => "the account is disabled: a disabled partner is not invited. Enable it if the partner still needs access; otherwise leave it (or remove it from scope)".to_string(),
        }
    }
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockReason::NoCloudUser { .. } => write!(f, "no cloud user matches"),
            BlockReason::SeveralCloudUsers { user_ids } => {
                write!(f, "several cloud users match: {}", user_ids.join(", "))
            }
            BlockReason::CloudUserShared { user_id, accounts } => write!(
                f,
                "cloud user {user_id} is also matched by {}",
                accounts.join(", ")
            ),
            BlockReason::CloudUserChanged { was, now } => {
                write!(f, "joined cloud user {was} before, now {now}")
            }
            BlockReason::InSeveralScopes { mappings } => {
                write!(
                    f,
                    "in the scope of several mappings: {}",
                    mappings.join(", ")
                )
            }
            BlockReason::MappingFailed { message } => write!(f, "mapping failed: {message}"),
            BlockReason::OnPremisesUserPrincipalName { value } => {
                write!(
                    f,
                    "the cloud user has onPremisesUserPrincipalName `{value}`"
                )
            }
            BlockReason::RoleHolder { roles } => {
                write!(
                    f,
                    "the cloud user holds directory roles: {}",
                    roles.join(", ")
                )
            }
            BlockReason::Mailbox => write!(f, "the cloud user has an Exchange mailbox"),
            BlockReason::NoAddress => write!(f, "the mapping yields no external address"),
            BlockReason::InvalidAddress { address, problem } => {
                write!(f, "invalid external address `{address}`: {problem}")
            }
            BlockReason::AddressInVerifiedDomain { address, domain } => write!(
                f,
                "external address `{address}` is in the verified domain `{domain}`"
            ),
            BlockReason::AddressInUse {
                address,
                object_id,
                attribute,
            } => write!(f, "`{address}` is already the {attribute} of {object_id}"),
            BlockReason::AddressShared { address, accounts } => write!(
                f,
                "`{address}` is also the external address of {}",
                accounts.join(", ")
            ),
            BlockReason::AdminCount => write!(f, "adminCount=1 (AD-protected account)"),
            BlockReason::ProtectedGroup { group } => write!(f, "member of protected group {group}"),
            BlockReason::DenyList { entry } => write!(f, "on the deny list as `{entry}`"),
            BlockReason::Disabled { side } => match side {
                Side::OnPremises => write!(f, "the account is disabled on-premises"),
                Side::Cloud => write!(f, "the cloud user is disabled"),
            },
        }
    }
}

/// Something worth knowing that does not stop the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Warning {
    /// AD holds the address, the cloud not yet, for longer than the policy allows.
    AwaitingSyncLong { minutes: i64 },
    /// The invitation is pending for a long time.
    InvitationPending { days: i64, reinvitations_left: u32 },
    /// The mapping now yields a different address than the one invited.
    AddressChanged { invited: String, mapped: String },
    /// A re-invitation is due but cannot be sent.
    ReinviteImpossible { why: String },
    /// The invitation is sent without Microsoft's email.
    NoInvitationEmail,
    /// A cloud-only user is invited while `mail` does not hold the address.
    MailDiffers { mail: Option<String> },
    /// A synced account was invited, and AD `mail` no longer holds the invited address.
    DirectoryMailChanged {
        invited: String,
        directory: Option<String>,
    },
}

impl Warning {
    /// What to do about it.
    pub fn help(&self) -> String {
        match self {
            Warning::AwaitingSyncLong { .. } => "Entra Connect has not flowed AD `mail` to the cloud yet: check that the sync cycle runs and that the account is in its scope".to_string(),
            Warning::InvitationPending { .. } => "the partner has not accepted: contact them, or raise `policy.reinvite_max`".to_string(),
            Warning::AddressChanged { .. } => "the invitation went to the old address; re-invitations use the address the cloud user shows".to_string(),
            Warning::ReinviteImpossible { .. } => "re-invite this user by hand, or fix the cause".to_string(),
            Warning::NoInvitationEmail => "`send_message = false`: Microsoft sends no email; deliver the redeem URL (Graph returns it, apply records it) yourself".to_string(),
            Warning::DirectoryMailChanged { .. } => "AD is the source of authority for a synced user: restore AD `mail` to the invited address, or Entra Connect will change the cloud `mail` the partner signs in with".to_string(),
            Warning::MailDiffers { .. } => "Microsoft's current guidance invites with the address in User.Mail (and the partner must redeem with an account of that domain): add `mail` to `write.cloud_only`".to_string(),
        }
    }
}

/// A reason with its text and help, as reports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explained<T> {
    pub reason: T,
    pub message: String,
    pub help: String,
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
}

/// Counts for the report and the guard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub accounts: usize,
    pub states: BTreeMap<Lifecycle, usize>,
    pub reasons: BTreeMap<String, usize>,
    pub actions: BTreeMap<Category, usize>,
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
}

fn eq_ci(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| a.trim().eq_ignore_ascii_case(b))
}

/// An address as an index key: trimmed, lower case, `smtp:` prefix removed. Borrowed when
/// the address already is in that form.
fn address_key(a: &str) -> Cow<'_, str> {
    let a = a.trim();
    let a = match a.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("smtp:") => &a[5..],
        _ => a,
    };
    lowercase(a)
}

fn parse_time(s: Option<&str>) -> Option<Timestamp> {
    s.and_then(|s| s.parse::<Timestamp>().ok())
}

/// The furthest stage that the recorded facts prove (never backwards).
fn recorded_stage(prev: Option<&Progress>) -> Lifecycle {
    let Some(p) = prev else {
        return Lifecycle::Unmatched;
    };
    let mut stage = Lifecycle::Unmatched;
    if p.invitations_sent > 0 || p.invited_at.is_some() || p.invitation_id.is_some() {
        stage = Lifecycle::Invited;
    }
    if matches!(
        p.state,
        Lifecycle::Invited | Lifecycle::Accepted | Lifecycle::Done
    ) {
        stage = stage.max(p.state);
    }
    stage
}

/// What the cloud shows about the user's external identity.
fn observed_stage(user: &CloudUser) -> Lifecycle {
    match user.external_user_state.as_deref() {
        Some(s) if s.eq_ignore_ascii_case("Accepted") => Lifecycle::Accepted,
        Some(s) if s.eq_ignore_ascii_case("PendingAcceptance") => Lifecycle::Invited,
        // A guest created by an invitation is already external.
        _ if user
            .creation_type
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("Invitation")) =>
        {
            Lifecycle::Accepted
        }
        _ => Lifecycle::Unmatched,
    }
}

/// Shared, read-only facts for deciding every account.
struct Context<'a> {
    users: &'a [CloudUser],
    mappings: &'a MappingSet,
    progress: &'a BTreeMap<String, Progress>,
    tenant: &'a Tenant,
    policy: &'a Policy,
    defaults: &'a InvitationSettings,
    now: Timestamp,
    /// Every address held by a cloud user or another object: (address key, object id,
    /// attribute), sorted by address key, in the order read for one key. Built when an
    /// account first needs it: only accounts not invited yet do, none in a run with nothing
    /// to do.
    holders: OnceCell<Vec<(Cow<'a, str>, &'a str, &'static str)>>,
    /// Address key → the accounts mapping to it, (key, a name an admin recognizes), for the
    /// addresses that several accounts map to.
    claims: HashMap<String, Vec<(AccountKey, String)>>,
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

    let mut summary = Summary {
        accounts: accounts.len(),
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
    }
}

/// Every address held by a cloud user (`mail`, `otherMails`, SMTP `proxyAddresses`, a UPN
/// with `@`) or by another object of the tenant, for [`Context::holders`].
fn holders<'a>(
    users: &'a [CloudUser],
    tenant: &'a Tenant,
) -> Vec<(Cow<'a, str>, &'a str, &'static str)> {
    let mut holders = Vec::new();
    for u in users {
        let mut add = |a: &'a str, attr: &'static str| {
            let k = address_key(a);
            if !k.is_empty() {
                holders.push((k, u.id.as_str(), attr));
            }
        };
        if let Some(m) = &u.mail {
            add(m, "mail");
        }
        for m in &u.other_mails {
            add(m, "otherMails");
        }
        for p in &u.proxy_addresses {
            let is_smtp = p.get(..5).is_some_and(|x| x.eq_ignore_ascii_case("smtp:"));
            if is_smtp || !p.contains(':') {
                add(p, "proxyAddresses");
            }
        }
        if u.user_principal_name.contains('@') {
            add(&u.user_principal_name, "userPrincipalName");
        }
    }
    for o in &tenant.other_addresses {
        let attr: &'static str = match o.attribute.as_str() {
            "mail" => "mail",
            "otherMails" => "otherMails",
            _ => "proxyAddresses",
        };
        holders.push((address_key(&o.address), o.object_id.as_str(), attr));
    }
    // Stable: for one address, the holders stay in the order read.
    holders.sort_by(|a, b| a.0.cmp(&b.0));
    holders
}

/// The addresses that several accounts map to, each with those accounts (key and a name an
/// admin recognizes), in account order.
fn shared_addresses(accounts: &[MappedAccount]) -> HashMap<String, Vec<(AccountKey, String)>> {
    let mut claims: Vec<(Cow<'_, str>, usize)> = accounts
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.address.as_ref().ok().map(|addr| (address_key(addr), i)))
        .collect();
    claims.sort_unstable();
    let mut shared = HashMap::new();
    for run in claims.chunk_by(|a, b| a.0 == b.0).filter(|r| r.len() > 1) {
        let claimants = run
            .iter()
            .map(|(_, i)| {
                let a = &accounts[*i];
                let label = a
                    .account
                    .account_name
                    .clone()
                    .unwrap_or_else(|| a.account.dn.clone());
                (a.key.clone(), label)
            })
            .collect();
        shared.insert(run[0].0.to_string(), claimants);
    }
    shared
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

impl Context<'_> {
    fn explain(reasons: Vec<BlockReason>) -> Vec<Explained<BlockReason>> {
        reasons
            .into_iter()
            .map(|r| Explained {
                message: r.to_string(),
                help: r.help(),
                reason: r,
            })
            .collect()
    }

    fn warn(w: Warning) -> Explained<Warning> {
        let message = match &w {
            Warning::AwaitingSyncLong { minutes } => {
                format!("waiting {minutes} minutes for Entra Connect to flow `mail`")
            }
            Warning::InvitationPending {
                days,
                reinvitations_left,
            } => format!(
                "invitation pending for {days} days ({reinvitations_left} re-invitations left)"
            ),
            Warning::AddressChanged { invited, mapped } => {
                format!("invited as `{invited}`, the mapping now yields `{mapped}`")
            }
            Warning::ReinviteImpossible { why } => {
                format!("re-invitation due but impossible: {why}")
            }
            Warning::NoInvitationEmail => "invited without Microsoft's email".to_string(),
            Warning::DirectoryMailChanged { invited, directory } => format!(
                "invited as `{invited}`, AD `mail` is now {}",
                directory
                    .as_deref()
                    .map_or("empty".to_string(), |d| format!("`{d}`"))
            ),
            Warning::MailDiffers { mail } => format!(
                "invited while `mail` is {}",
                mail.as_deref()
                    .map_or("empty".to_string(), |m| format!("`{m}`"))
            ),
        };
        Explained {
            message,
            help: w.help(),
            reason: w,
        }
    }

    fn age_seconds(&self, since: Option<Timestamp>) -> Option<i64> {
        since.map(|t| self.now.as_second() - t.as_second())
    }

    fn invitation(
        &self,
        m: Option<&Mapping>,
        user_id: &str,
        email: &str,
        attempt: u32,
    ) -> Invitation {
        let s = match m {
            Some(m) => m.invitation_for(email, self.defaults),
            None => self.defaults.clone(),
        };
        Invitation {
            user_id: user_id.to_string(),
            email: email.to_string(),
            redirect_url: s
                .redirect_url
                .unwrap_or_else(|| DEFAULT_REDIRECT_URL.to_string()),
            send_message: s.send_message.unwrap_or(true),
            message_language: s.language,
            message_body: s.message_body,
            cc: s.cc,
            attempt,
        }
    }

    fn user_type_target(&self, m: Option<&Mapping>, address: Option<&str>) -> Option<UserType> {
        match m {
            Some(m) => {
                m.invitation_for(address.unwrap_or_default(), self.defaults)
                    .user_type
            }
            None => self.defaults.user_type,
        }
    }

    /// Decides one account: its outcome and its ordered operations. The outcome takes over
    /// the account's key, mapping name, DN, account name and address instead of copying them.
    fn decide(&self, m: MappedAccount, join: &JoinOutcome) -> (AccountOutcome, Vec<Op>) {
        let (mut out, ops) = self.decide_account(&m, join);
        out.key = m.key.to_string();
        out.mapping = m.mapping;
        out.dn = m.account.dn;
        out.account_name = m.account.account_name;
        out.address = m.address.ok().filter(|a| Email::parse(a).is_ok());
        (out, ops)
    }

    /// [`Context::decide`], leaving the fields it moves in empty.
    fn decide_account(&self, m: &MappedAccount, join: &JoinOutcome) -> (AccountOutcome, Vec<Op>) {
        let mapping = self.mappings.get(&m.mapping);
        let prev = self.progress.get(&m.key.to_string());
        let recorded = recorded_stage(prev);
        let mut out = AccountOutcome {
            key: String::new(),
            mapping: String::new(),
            dn: String::new(),
            account_name: None,
            kind: None,
            cloud_id: None,
            address: None,
            state: Lifecycle::Blocked,
            stage: recorded,
            next: Lifecycle::Blocked,
            reasons: Vec::new(),
            warnings: Vec::new(),
        };
        let finish = |mut out: AccountOutcome, state: Lifecycle, reasons: Vec<BlockReason>| {
            out.state = state;
            out.next = state;
            out.reasons = Context::explain(reasons);
            (out, Vec::new())
        };

        if !m.also_in.is_empty() {
            let mut all = vec![m.mapping.clone()];
            all.extend(m.also_in.iter().cloned());
            return finish(
                out,
                Lifecycle::Blocked,
                vec![BlockReason::InSeveralScopes { mappings: all }],
            );
        }
        if let Some(message) = &m.mapping_error {
            return finish(
                out,
                Lifecycle::Blocked,
                vec![BlockReason::MappingFailed {
                    message: message.clone(),
                }],
            );
        }
        let user = match join {
            JoinOutcome::Joined { user, kind } => {
                out.kind = Some(*kind);
                self.users.get(*user)
            }
            JoinOutcome::Unmatched => {
                let hint = m
                    .join_keys
                    .iter()
                    .map(|k| format!("{} = {}", k.property.as_str(), k.value))
                    .collect::<Vec<_>>()
                    .join(", ");
                let hint = if hint.is_empty() {
                    "the account has no anchor and no cloud-only join value".to_string()
                } else {
                    format!("looked for {hint}")
                };
                return finish(
                    out,
                    Lifecycle::Unmatched,
                    vec![BlockReason::NoCloudUser { kind_hint: hint }],
                );
            }
            JoinOutcome::SeveralUsers { user_ids } => {
                return finish(
                    out,
                    Lifecycle::Unmatched,
                    vec![BlockReason::SeveralCloudUsers {
                        user_ids: user_ids.clone(),
                    }],
                );
            }
            JoinOutcome::SharedUser { user_id, accounts } => {
                return finish(
                    out,
                    Lifecycle::Unmatched,
                    vec![BlockReason::CloudUserShared {
                        user_id: user_id.clone(),
                        accounts: accounts.clone(),
                    }],
                );
            }
        };
        let Some(user) = user else {
            return finish(out, Lifecycle::Unmatched, Vec::new());
        };
        let kind = user.kind();
        out.cloud_id = Some(user.id.clone());
        if let Some(was) = prev.and_then(|p| p.cloud_id.as_ref())
            && *was != user.id
        {
            return finish(
                out,
                Lifecycle::Blocked,
                vec![BlockReason::CloudUserChanged {
                    was: was.clone(),
                    now: user.id.clone(),
                }],
            );
        }

        // On-premises protection and disabled accounts stop every action.
        let mut guards: Vec<BlockReason> = m
            .protection
            .iter()
            .map(|p| match p {
                Protection::AdminCount => BlockReason::AdminCount,
                Protection::ProtectedGroup { group } => BlockReason::ProtectedGroup {
                    group: group.clone(),
                },
                Protection::DenyList { entry } => BlockReason::DenyList {
                    entry: entry.clone(),
                },
            })
            .collect();
        if m.account.disabled {
            guards.push(BlockReason::Disabled {
                side: Side::OnPremises,
            });
        } else if user.account_enabled == Some(false) {
            guards.push(BlockReason::Disabled { side: Side::Cloud });
        }

        let randomized = prev.is_some_and(|p| p.password_randomized_at.is_some());
        let stage = recorded.max(observed_stage(user));
        out.stage = stage;
        let accepted_done =
            |randomized: bool| randomized || self.policy.randomize_password == RandomizeWhen::Never;

        if stage >= Lifecycle::Invited {
            let mut ops = Vec::new();
            let converted_stage = if stage >= Lifecycle::Accepted && accepted_done(randomized) {
                Lifecycle::Done
            } else {
                stage
            };
            out.stage = converted_stage;
            if converted_stage == Lifecycle::Done {
                out.state = Lifecycle::Done;
                out.next = Lifecycle::Done;
                if guards.is_empty() {
                    self.user_type_op(mapping, user, &mut ops);
                }
                return (out, ops);
            }
            if !guards.is_empty() {
                return finish(out, Lifecycle::Blocked, guards);
            }
            out.state = stage;
            out.next = stage;
            self.drift(m, user, prev, &mut out);
            let want_password = match self.policy.randomize_password {
                RandomizeWhen::Never => false,
                RandomizeWhen::AfterAcceptance => stage >= Lifecycle::Accepted,
                RandomizeWhen::AfterInvitation => true,
            };
            if stage == Lifecycle::Invited {
                self.pending(m, mapping, user, prev, &mut out, &mut ops);
            }
            if want_password && !randomized {
                ops.push(Op::RandomizePassword {
                    dn: m.account.dn.clone(),
                    account_name: m.account.account_name.clone(),
                    display_name: m.account.display_name.clone(),
                });
                if stage >= Lifecycle::Accepted {
                    out.next = Lifecycle::Done;
                }
            }
            if stage >= Lifecycle::Accepted {
                self.user_type_op(mapping, user, &mut ops);
            }
            return (out, ops);
        }

        // Not invited yet: every precondition of DESIGN section 2.
        let mut reasons = guards;
        if let Some(v) = &user.on_premises_user_principal_name {
            reasons.push(BlockReason::OnPremisesUserPrincipalName { value: v.clone() });
        }
        if !user.roles.is_empty() {
            let mut roles = user.roles.clone();
            roles.sort();
            reasons.push(BlockReason::RoleHolder { roles });
        }
        if user.has_mailbox {
            reasons.push(BlockReason::Mailbox);
        }
        let address = match &m.address {
            Err(AddressProblem::Missing) => {
                reasons.push(BlockReason::NoAddress);
                None
            }
            Err(AddressProblem::Failed { message }) => {
                reasons.push(BlockReason::MappingFailed {
                    message: format!("address: {message}"),
                });
                None
            }
            Ok(addr) => {
                let before = reasons.len();
                let email = self.address_reasons(&m.key, user, addr, &mut reasons);
                email.filter(|_| reasons.len() == before)
            }
        };
        let Some(address) = address.filter(|_| reasons.is_empty()) else {
            return finish(out, Lifecycle::Blocked, reasons);
        };

        let mut ops = Vec::new();
        let invite = |ops: &mut Vec<Op>, out: &mut AccountOutcome| {
            let inv = self.invitation(mapping, &user.id, address.as_str(), 1);
            if !inv.send_message {
                out.warnings.push(Context::warn(Warning::NoInvitationEmail));
            }
            ops.push(Op::Invite(inv));
            out.next = Lifecycle::Invited;
            if self.policy.randomize_password == RandomizeWhen::AfterInvitation && !randomized {
                ops.push(Op::RandomizePassword {
                    dn: m.account.dn.clone(),
                    account_name: m.account.account_name.clone(),
                    display_name: m.account.display_name.clone(),
                });
            }
        };
        match kind {
            AccountKind::Synced => {
                // AD is the source of authority: the address must be in AD `mail` too, or
                // the next Entra Connect cycle would overwrite the cloud `mail` again.
                if !address.is_in(m.account.mail.as_deref()) {
                    out.state = Lifecycle::NeedsAddress;
                    out.next = Lifecycle::AwaitingSync;
                    ops.push(Op::SetDirectoryMail {
                        dn: m.account.dn.clone(),
                        from: m.account.mail.clone(),
                        to: address.to_string(),
                    });
                } else if address.is_in(user.mail.as_deref()) {
                    out.state = Lifecycle::Ready;
                    invite(&mut ops, &mut out);
                } else {
                    out.state = Lifecycle::AwaitingSync;
                    out.next = Lifecycle::AwaitingSync;
                    let limit = i64::from(self.policy.awaiting_sync_warn_minutes) * 60;
                    let since = parse_time(prev.and_then(|p| p.address_staged_at.as_deref()));
                    if let Some(age) = self.age_seconds(since).filter(|a| *a >= limit) {
                        out.warnings.push(Context::warn(Warning::AwaitingSyncLong {
                            minutes: age / 60,
                        }));
                    }
                }
            }
            AccountKind::CloudOnly => {
                let w = mapping.map_or(
                    crate::mapping::WriteTargets {
                        cloud_only_other_mails: true,
                        cloud_only_mail: false,
                    },
                    |m| m.write,
                );
                let has_other = user.other_mails.iter().any(|x| address.is(x));
                let has_mail = address.is_in(user.mail.as_deref());
                let need_other = w.cloud_only_other_mails && !has_other;
                let need_mail = w.cloud_only_mail && !has_mail;
                if need_other || need_mail {
                    out.state = Lifecycle::NeedsAddress;
                    let mut to = user.other_mails.clone();
                    if need_other {
                        to.push(address.to_string());
                    }
                    ops.push(Op::SetCloudAddress {
                        user_id: user.id.clone(),
                        other_mails_from: user.other_mails.clone(),
                        other_mails_to: need_other.then_some(to),
                        mail_from: user.mail.clone(),
                        mail_to: need_mail.then(|| address.to_string()),
                    });
                } else {
                    out.state = Lifecycle::Ready;
                }
                if !w.cloud_only_mail && !has_mail {
                    out.warnings.push(Context::warn(Warning::MailDiffers {
                        mail: user.mail.clone(),
                    }));
                }
                // Graph applies the PATCH at once: the invitation follows in the same run.
                invite(&mut ops, &mut out);
            }
        }
        (out, ops)
    }

    /// The address preconditions: valid, not in a verified domain, not held by another
    /// object, not mapped for another account. The address, when it is valid.
    fn address_reasons(
        &self,
        key: &AccountKey,
        user: &CloudUser,
        addr: &str,
        reasons: &mut Vec<BlockReason>,
    ) -> Option<Email> {
        let email = match Email::parse(addr) {
            Ok(email) => email,
            Err(e) => {
                reasons.push(BlockReason::InvalidAddress {
                    address: addr.to_string(),
                    problem: e.to_string(),
                });
                return None;
            }
        };
        if let Some(v) = self
            .tenant
            .verified_domains
            .iter()
            .find(|v| email.is_in_domain(v))
        {
            reasons.push(BlockReason::AddressInVerifiedDomain {
                address: addr.to_string(),
                domain: v.clone(),
            });
        }
        let k = address_key(addr);
        let holders = self
            .holders
            .get_or_init(|| holders(self.users, self.tenant));
        let from = holders.partition_point(|(a, _, _)| *a < k);
        if let Some((_, object_id, attribute)) = holders[from..]
            .iter()
            .take_while(|(a, _, _)| *a == k)
            .find(|(_, id, _)| *id != user.id)
        {
            reasons.push(BlockReason::AddressInUse {
                address: addr.to_string(),
                object_id: (*object_id).to_string(),
                attribute: (*attribute).to_string(),
            });
        }
        if let Some(others) = self.claims.get(k.as_ref()) {
            let mut others: Vec<String> = others
                .iter()
                .filter(|(k, _)| k != key)
                .map(|(_, label)| label.clone())
                .collect();
            others.sort();
            if !others.is_empty() {
                reasons.push(BlockReason::AddressShared {
                    address: addr.to_string(),
                    accounts: others,
                });
            }
        }
        Some(email)
    }

    /// An invited account: re-invite when due, warn when pending long.
    fn pending(
        &self,
        m: &MappedAccount,
        mapping: Option<&Mapping>,
        user: &CloudUser,
        prev: Option<&Progress>,
        out: &mut AccountOutcome,
        ops: &mut Vec<Op>,
    ) {
        let sent = prev.map_or(1, |p| p.invitations_sent.max(1));
        let reinvites_done = sent - 1;
        let invited_at = parse_time(prev.and_then(|p| p.invited_at.as_deref()))
            .or_else(|| parse_time(user.external_user_state_change.as_deref()));
        let Some(age) = self.age_seconds(invited_at) else {
            return;
        };
        let days = age / 86_400;
        let invited_address = prev.and_then(|p| p.address.clone());
        if let (Some(inv), Ok(mapped)) = (&invited_address, &m.address)
            && !inv.eq_ignore_ascii_case(mapped)
        {
            out.warnings.push(Context::warn(Warning::AddressChanged {
                invited: inv.clone(),
                mapped: mapped.clone(),
            }));
        }
        let left = self.policy.reinvite_max.saturating_sub(reinvites_done);
        if days >= i64::from(self.policy.pending_warn_days) {
            out.warnings.push(Context::warn(Warning::InvitationPending {
                days,
                reinvitations_left: left,
            }));
        }
        if days < i64::from(self.policy.reinvite_after_days) || left == 0 {
            return;
        }
        // Reset redemption needs the address in mail or otherMails: the mapped address when
        // the cloud shows it, else the address invited last time. Never an address that
        // merely happens to be in `mail` (it may be an internal one).
        let email = [m.address.as_ref().ok().cloned(), invited_address]
            .into_iter()
            .flatten()
            .find(|a| user.shows_address(a));
        if !user.roles.is_empty() {
            out.warnings
                .push(Context::warn(Warning::ReinviteImpossible {
                    why: "app-only calls cannot reset the redemption of a role holder".to_string(),
                }));
            return;
        }
        let Some(email) = email.and_then(|e| Email::parse(&e).ok()) else {
            out.warnings
                .push(Context::warn(Warning::ReinviteImpossible {
                    why: "the cloud user shows no valid external address".to_string(),
                }));
            return;
        };
        ops.push(Op::Reinvite(self.invitation(
            mapping,
            &user.id,
            email.as_str(),
            sent + 1,
        )));
    }

    /// A synced, invited account whose AD `mail` no longer holds the invited address: the
    /// next Entra Connect cycle will change the cloud `mail` the partner redeems with.
    fn drift(
        &self,
        m: &MappedAccount,
        user: &CloudUser,
        prev: Option<&Progress>,
        out: &mut AccountOutcome,
    ) {
        if user.kind() != AccountKind::Synced {
            return;
        }
        let invited = prev
            .and_then(|p| p.address.clone())
            .or_else(|| user.mail.clone());
        if let Some(invited) = invited
            && !eq_ci(m.account.mail.as_deref(), &invited)
        {
            out.warnings
                .push(Context::warn(Warning::DirectoryMailChanged {
                    invited,
                    directory: m.account.mail.clone(),
                }));
        }
    }

    fn user_type_op(&self, mapping: Option<&Mapping>, user: &CloudUser, ops: &mut Vec<Op>) {
        if let Some(to) = self.user_type_target(mapping, user.mail.as_deref())
            && !eq_ci(user.user_type.as_deref(), to.as_str())
        {
            ops.push(Op::SetUserType {
                user_id: user.id.clone(),
                from: user.user_type.clone(),
                to,
            });
        }
    }
}

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
    let now = now.to_string();
    let mut state = outcome.state;
    for op in succeeded {
        match op {
            Op::SetDirectoryMail { to, .. } => {
                state = state.max(Lifecycle::AwaitingSync);
                p.address = Some(to.clone());
                p.address_staged_at = Some(now.clone());
            }
            Op::SetCloudAddress { .. } => {
                state = state.max(Lifecycle::Ready);
                p.address = outcome.address.clone();
                p.address_staged_at = Some(now.clone());
            }
            Op::Invite(inv) | Op::Reinvite(inv) => {
                state = state.max(Lifecycle::Invited);
                p.address = Some(inv.email.clone());
                p.invited_at = Some(now.clone());
                p.invitations_sent += 1;
                if let Some(id) = invitation_id {
                    p.invitation_id = Some(id.to_string());
                }
            }
            Op::RandomizePassword { .. } => {
                p.password_randomized_at = Some(now.clone());
                if state >= Lifecycle::Accepted {
                    state = Lifecycle::Done;
                }
            }
            Op::SetUserType { .. } => {}
        }
    }
    if state == Lifecycle::Accepted && p.password_randomized_at.is_some() {
        state = Lifecycle::Done;
    }
    // Start the awaiting-sync clock when the address was already in AD (set by hand).
    if state == Lifecycle::AwaitingSync && p.address_staged_at.is_none() {
        p.address_staged_at = Some(now.clone());
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
