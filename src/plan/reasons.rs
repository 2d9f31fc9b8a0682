//! Why an account cannot move ([`BlockReason`], and its kind [`ReasonCode`]) and what is
//! worth knowing about it ([`Warning`]): each with its text (`Display`) and its fix (`help`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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
    /// The AD account has a mailbox in on-premises Exchange, or a remote mailbox (its
    /// Exchange attributes say so; `kind` names which).
    #[serde(rename = "onprem_mailbox")]
    OnPremMailbox { kind: String },
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
    /// An invitation of this account was answered with something other than its
    /// conversion (another `invitedUser.id`, perhaps a new guest; or a malformed answer).
    InvitationAnswerMismatch { answer: String },
}

impl BlockReason {
    /// The reason's kind.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            BlockReason::NoCloudUser { .. } => ReasonCode::NoCloudUser,
            BlockReason::SeveralCloudUsers { .. } => ReasonCode::SeveralCloudUsers,
            BlockReason::CloudUserShared { .. } => ReasonCode::CloudUserShared,
            BlockReason::CloudUserChanged { .. } => ReasonCode::CloudUserChanged,
            BlockReason::InSeveralScopes { .. } => ReasonCode::InSeveralScopes,
            BlockReason::MappingFailed { .. } => ReasonCode::MappingFailed,
            BlockReason::OnPremisesUserPrincipalName { .. } => {
                ReasonCode::OnPremisesUserPrincipalName
            }
            BlockReason::RoleHolder { .. } => ReasonCode::RoleHolder,
            BlockReason::Mailbox => ReasonCode::Mailbox,
            BlockReason::OnPremMailbox { .. } => ReasonCode::OnPremMailbox,
            BlockReason::NoAddress => ReasonCode::NoAddress,
            BlockReason::InvalidAddress { .. } => ReasonCode::InvalidAddress,
            BlockReason::AddressInVerifiedDomain { .. } => ReasonCode::AddressInVerifiedDomain,
            BlockReason::AddressInUse { .. } => ReasonCode::AddressInUse,
            BlockReason::AddressShared { .. } => ReasonCode::AddressShared,
            BlockReason::AdminCount => ReasonCode::AdminCount,
            BlockReason::ProtectedGroup { .. } => ReasonCode::ProtectedGroup,
            BlockReason::DenyList { .. } => ReasonCode::DenyList,
            BlockReason::Disabled { .. } => ReasonCode::Disabled,
            BlockReason::InvitationAnswerMismatch { .. } => ReasonCode::InvitationAnswerMismatch,
        }
    }

    /// The snake_case code (reports, summaries).
    pub fn code(&self) -> &'static str {
        self.reason_code().code()
    }

    /// What to do about it.
    pub fn help(&self) -> String {
        match self {
            BlockReason::NoCloudUser { kind_hint } => no_cloud_user_help(kind_hint),
            _ => self.reason_code().help(),
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
            BlockReason::OnPremMailbox { kind } => {
                write!(f, "the account has an Exchange {kind}")
            }
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
            BlockReason::InvitationAnswerMismatch { answer } => write!(
                f,
                "an invitation of this account was not answered as its conversion: {answer}"
            ),
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
    /// `randomize_password = "after_sign_in"`: accepted, but `signInActivity` shows no
    /// successful sign-in since the acceptance (`since`, RFC 3339) yet.
    AwaitingSignIn { since: Option<String> },
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
            Warning::AwaitingSyncLong { .. } => "the sync engine (Entra Connect or Cloud Sync) has not flowed AD `mail` to the cloud yet: check that its sync cycle runs and that the account is in its scope (Cloud Sync: the provisioning logs; it syncs every few minutes, and a first full cycle takes hours)".to_string(),
            Warning::InvitationPending { .. } => "the partner has not accepted: contact them, or raise `policy.reinvite_max`".to_string(),
            Warning::AddressChanged { .. } => "the invitation went to the old address; re-invitations use the address the cloud user shows".to_string(),
            Warning::ReinviteImpossible { .. } => "re-invite this user by hand, or fix the cause".to_string(),
            Warning::NoInvitationEmail => "`send_message = false`: Microsoft sends no email; deliver the redeem URL (Graph returns it, apply records it) yourself".to_string(),
            Warning::DirectoryMailChanged { .. } => "AD is the source of authority for a synced user: restore AD `mail` to the invited address, or the sync engine will change the cloud `mail` the partner signs in with".to_string(),
            Warning::AwaitingSignIn { .. } => "`[policy] randomize_password = \"after_sign_in\"`: the on-premises password is randomized once the partner signs in with the external account (Entra reports `signInActivity` with a delay of hours); ask the partner to sign in, or choose another policy value".to_string(),
            Warning::MailDiffers { .. } => "Microsoft's current guidance invites with the address in User.Mail (and the partner must redeem with an account of that domain): add `mail` to `write.cloud_only`".to_string(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = match self {
            Warning::AwaitingSyncLong { minutes } => {
                format!("waiting {minutes} minutes for the sync engine to flow `mail`")
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
            Warning::AwaitingSignIn { since } => format!(
                "waiting for the partner's first external sign-in since {}",
                since.as_deref().unwrap_or("the acceptance")
            ),
            Warning::MailDiffers { mail } => format!(
                "invited while `mail` is {}",
                mail.as_deref()
                    .map_or("empty".to_string(), |m| format!("`{m}`"))
            ),
        };
        f.write_str(&message)
    }
}

/// A reason with its text and help, as reports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explained<T> {
    pub reason: T,
    pub message: String,
    pub help: String,
}

/// The kind of a [`BlockReason`], without its details: what the state store and the
/// summaries keep (as [`ReasonCode::code`]) and what a report can explain without the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonCode {
    NoCloudUser,
    SeveralCloudUsers,
    CloudUserShared,
    CloudUserChanged,
    InSeveralScopes,
    MappingFailed,
    OnPremisesUserPrincipalName,
    RoleHolder,
    Mailbox,
    OnPremMailbox,
    NoAddress,
    InvalidAddress,
    AddressInVerifiedDomain,
    AddressInUse,
    AddressShared,
    AdminCount,
    ProtectedGroup,
    DenyList,
    Disabled,
    InvitationAnswerMismatch,
}

impl ReasonCode {
    /// Every code, in the order of [`BlockReason`]'s variants.
    pub const ALL: [ReasonCode; 20] = [
        ReasonCode::NoCloudUser,
        ReasonCode::SeveralCloudUsers,
        ReasonCode::CloudUserShared,
        ReasonCode::CloudUserChanged,
        ReasonCode::InSeveralScopes,
        ReasonCode::MappingFailed,
        ReasonCode::OnPremisesUserPrincipalName,
        ReasonCode::RoleHolder,
        ReasonCode::Mailbox,
        ReasonCode::OnPremMailbox,
        ReasonCode::NoAddress,
        ReasonCode::InvalidAddress,
        ReasonCode::AddressInVerifiedDomain,
        ReasonCode::AddressInUse,
        ReasonCode::AddressShared,
        ReasonCode::AdminCount,
        ReasonCode::ProtectedGroup,
        ReasonCode::DenyList,
        ReasonCode::Disabled,
        ReasonCode::InvitationAnswerMismatch,
    ];

    /// The snake_case code (reports, summaries, the state store).
    pub fn code(self) -> &'static str {
        match self {
            ReasonCode::NoCloudUser => "no_cloud_user",
            ReasonCode::SeveralCloudUsers => "several_cloud_users",
            ReasonCode::CloudUserShared => "cloud_user_shared",
            ReasonCode::CloudUserChanged => "cloud_user_changed",
            ReasonCode::InSeveralScopes => "in_several_scopes",
            ReasonCode::MappingFailed => "mapping_failed",
            ReasonCode::OnPremisesUserPrincipalName => "on_premises_user_principal_name",
            ReasonCode::RoleHolder => "role_holder",
            ReasonCode::Mailbox => "mailbox",
            ReasonCode::OnPremMailbox => "onprem_mailbox",
            ReasonCode::NoAddress => "no_address",
            ReasonCode::InvalidAddress => "invalid_address",
            ReasonCode::AddressInVerifiedDomain => "address_in_verified_domain",
            ReasonCode::AddressInUse => "address_in_use",
            ReasonCode::AddressShared => "address_shared",
            ReasonCode::AdminCount => "admin_count",
            ReasonCode::ProtectedGroup => "protected_group",
            ReasonCode::DenyList => "deny_list",
            ReasonCode::Disabled => "disabled",
            ReasonCode::InvitationAnswerMismatch => "invitation_answer_mismatch",
        }
    }

    /// What to do about it, for any account with this reason. [`BlockReason::help`] says the
    /// same, with the values it has where they help.
    pub fn help(self) -> String {
        match self {
            ReasonCode::NoCloudUser => no_cloud_user_help("`b2bsync plan` shows the values looked for"),
            ReasonCode::SeveralCloudUsers => "several cloud users match this account: make the `join.cloud_only` pair unique, or remove the duplicate cloud user".to_string(),
            ReasonCode::CloudUserShared => "other accounts match the same cloud user: fix the join values so each account matches its own user".to_string(),
            ReasonCode::CloudUserChanged => "the account joined a different cloud user in an earlier run: check which one is right; to accept the new one, clear the account's state (`b2bsync status` shows it)".to_string(),
            ReasonCode::InSeveralScopes => "the account is in the scope of several mapping files: narrow `scope.base_dns`, `scope.filter` or `scope.when`, or use `scope.deny` in all but one".to_string(),
            ReasonCode::MappingFailed => "fix the expression in the mapping file (`b2bsync check` evaluates it), or the attribute value it trips on".to_string(),
            ReasonCode::OnPremisesUserPrincipalName => "Entra ID refuses to convert users with onPremisesUserPrincipalName: change the sync rule that writes it (Entra Connect: an outbound rule, Cloud Sync: the attribute mapping; see docs/operations.md, \"The Entra Connect rule change\" and \"Entra Cloud Sync\"), then run a sync cycle".to_string(),
            ReasonCode::RoleHolder => "an app cannot change or convert a directory-role holder: remove the role assignments (or convert this user by hand as a Privileged Role Administrator)".to_string(),
            ReasonCode::Mailbox => "the user has an Exchange mailbox, whose address cannot be changed to an external one: change it in Exchange first (or remove the mailbox), then rerun".to_string(),
            ReasonCode::OnPremMailbox => "the AD account has an on-premises or remote Exchange mailbox, and an external `mail` on it would break mail routing: remove the mailbox, or mail-enable the account as a mail user (MailUser) first, then run again".to_string(),
            ReasonCode::NoAddress => "the mapping yields no external address for this account: set the source attribute (or the lookup table row) the `address` expression reads".to_string(),
            ReasonCode::InvalidAddress => "the external address is not one Graph accepts as invitedUserEmailAddress: correct the source value, or clean it in the `address` expression (trim, lower, normalize_diacritics)".to_string(),
            ReasonCode::AddressInVerifiedDomain => "the external address is in one of the tenant's verified domains; Entra ID refuses such a conversion: use the partner's own address".to_string(),
            ReasonCode::AddressInUse => "another object already uses this address (mail, otherMails or proxyAddresses): remove it there (often a stale guest or contact), or correct the mapping".to_string(),
            ReasonCode::AddressShared => "several accounts map to the same external address: every partner needs their own address; correct the source values".to_string(),
            ReasonCode::AdminCount => "adminCount=1: AD protects this (once) privileged account and b2bsync never touches it; if it is no longer privileged, clear adminCount after checking its ACL".to_string(),
            ReasonCode::ProtectedGroup => "members of the mapping's protected groups are never touched: remove the account from the group, or the group from `scope.protected_groups`".to_string(),
            ReasonCode::DenyList => "the account is on the mapping's deny list (`scope.deny`): remove it there to migrate it".to_string(),
            ReasonCode::Disabled => "the account is disabled: a disabled partner is not invited. Enable it if the partner still needs access; otherwise leave it (or remove it from scope)".to_string(),
            ReasonCode::InvitationAnswerMismatch => "the service (or a proxy or SDK in between) did not convert the user asked for: find the user named by invitedUser.id in the answer (`b2bsync status` and the journal keep it, with the request-id), delete it if it is a new guest, and fix what changes the request; then `b2bsync invitations --clear-mismatch ACCOUNT` lets the next run invite again".to_string(),
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A text that is no [`ReasonCode::code`] (a newer build's, or none).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a block reason code of this build")]
pub struct UnknownReasonCode(pub String);

impl FromStr for ReasonCode {
    type Err = UnknownReasonCode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ReasonCode::ALL
            .into_iter()
            .find(|c| c.code() == text)
            .ok_or_else(|| UnknownReasonCode(text.to_string()))
    }
}

fn no_cloud_user_help(kind_hint: &str) -> String {
    format!(
        "no cloud user matches ({kind_hint}); a synced account appears after the next sync cycle (Entra Connect or Cloud Sync), a cloud-only one needs the `join.cloud_only` pair to match"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_and_is_unique() {
        for (i, code) in ReasonCode::ALL.into_iter().enumerate() {
            assert_eq!(code.code().parse::<ReasonCode>().unwrap(), code);
            assert_eq!(code.to_string(), code.code());
            assert!(ReasonCode::ALL[..i].iter().all(|c| c.code() != code.code()));
        }
        assert!("from_a_newer_build".parse::<ReasonCode>().is_err());
    }

    #[test]
    fn the_serialized_code_is_the_reason_code() {
        // Plans, reports and the state store read the serialized `code` back as a ReasonCode.
        for r in [
            BlockReason::OnPremMailbox {
                kind: "remote mailbox".into(),
            },
            BlockReason::OnPremisesUserPrincipalName {
                value: "p@corp.example".into(),
            },
            BlockReason::Mailbox,
            BlockReason::NoAddress,
        ] {
            let json = serde_json::to_value(&r).unwrap();
            assert_eq!(json["code"], r.code(), "{json}");
        }
    }

    #[test]
    fn a_reason_gives_its_code_and_its_help() {
        let r = BlockReason::ProtectedGroup { group: "g".into() };
        assert_eq!(r.code(), "protected_group");
        assert_eq!(r.help(), ReasonCode::ProtectedGroup.help());
        let r = BlockReason::NoCloudUser {
            kind_hint: "looked for x".into(),
        };
        assert!(r.help().contains("(looked for x)"));
        assert!(ReasonCode::NoCloudUser.help().contains("`b2bsync plan`"));
    }

    #[test]
    fn a_warning_displays_its_message() {
        let w = Warning::MailDiffers { mail: None };
        assert_eq!(w.to_string(), "invited while `mail` is empty");
        let w = Warning::AwaitingSyncLong { minutes: 180 };
        assert_eq!(
            w.to_string(),
            "waiting 180 minutes for the sync engine to flow `mail`"
        );
    }
}
