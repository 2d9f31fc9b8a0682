//! Deciding one account: where it stands, why it is blocked, and the ordered operations that
//! move it forward. [`Context::decide`] checks, in order, the preconditions every account
//! needs (one mapping, one cloud user, the same as before), the guards that stop every
//! action (protection, disabled), then either what follows an invitation (re-invitations,
//! the password, the user type) or what precedes it (the cloud user's preconditions, the
//! address rules, and staging the address where the account's kind needs it).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;

use super::{
    AccountOutcome, BlockReason, DEFAULT_REDIRECT_URL, Explained, Invitation, Op, Policy,
    RandomizeWhen, Side, Tenant, Warning,
};
use crate::join::JoinOutcome;
use crate::mapping::{
    AddressProblem, InvitationSettings, MappedAccount, Mapping, MappingSet, Protection, UserType,
    WriteTargets,
};
use crate::model::{AccountKey, AccountKind, CloudUser, Email, Lifecycle, Progress, lowercase};

fn eq_ci(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| a.trim().eq_ignore_ascii_case(b))
}

/// An address as an index key: trimmed, lower case, `smtp:` prefix removed. Borrowed when
/// the address already is in that form.
pub(super) fn address_key(a: &str) -> Cow<'_, str> {
    let a = a.trim();
    let a = match a.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("smtp:") => &a[5..],
        _ => a,
    };
    lowercase(a)
}

/// A time the cloud reports (e.g. `externalUserStateChangeDateTime`); `None` when it does
/// not parse.
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
pub(super) struct Context<'a> {
    pub(super) users: &'a [CloudUser],
    pub(super) mappings: &'a MappingSet,
    pub(super) progress: &'a BTreeMap<String, Progress>,
    pub(super) tenant: &'a Tenant,
    pub(super) policy: &'a Policy,
    pub(super) defaults: &'a InvitationSettings,
    pub(super) now: Timestamp,
    /// Every address held by a cloud user or another object: (address key, object id,
    /// attribute), sorted by address key, in the order read for one key. Built when an
    /// account first needs it: only accounts not invited yet do, none in a run with nothing
    /// to do.
    pub(super) holders: OnceCell<Vec<(Cow<'a, str>, &'a str, &'static str)>>,
    /// Address key → the accounts mapping to it, (key, a name an admin recognizes), for the
    /// addresses that several accounts map to.
    pub(super) claims: HashMap<String, Vec<(AccountKey, String)>>,
}

/// What every step after the join needs of one account.
struct Subject<'x> {
    m: &'x MappedAccount,
    mapping: Option<&'x Mapping>,
    user: &'x CloudUser,
    prev: Option<&'x Progress>,
    /// The on-premises password was randomized in an earlier run.
    randomized: bool,
    /// The cloud user's sign-in sessions were revoked in an earlier run.
    revoked: bool,
}

/// The outcome of an account that stops at `state` for `reasons`, without actions.
fn finish(
    mut out: AccountOutcome,
    state: Lifecycle,
    reasons: Vec<BlockReason>,
) -> (AccountOutcome, Vec<Op>) {
    out.state = state;
    out.next = state;
    out.reasons = Context::explain(reasons);
    (out, Vec::new())
}

/// On-premises protection and disabled accounts: each stops every action.
fn guards(m: &MappedAccount, user: &CloudUser) -> Vec<BlockReason> {
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
    guards
}

/// Randomizing the account's on-premises password (apply generates it).
fn randomize_password(m: &MappedAccount) -> Op {
    Op::RandomizePassword {
        dn: m.account.dn.clone(),
        account_name: m.account.account_name.clone(),
        display_name: m.account.display_name.clone(),
    }
}

/// Every address held by a cloud user (`mail`, `otherMails`, SMTP `proxyAddresses`, a UPN
/// with `@`) or by another object of the tenant, for [`Context::holders`].
pub(super) fn holders<'a>(
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
pub(super) fn shared_addresses(
    accounts: &[MappedAccount],
) -> HashMap<String, Vec<(AccountKey, String)>> {
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

impl<'a> Context<'a> {
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
        Explained {
            message: w.to_string(),
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
    pub(super) fn decide(&self, m: MappedAccount, join: &JoinOutcome) -> (AccountOutcome, Vec<Op>) {
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
        let prev = self.progress.get(&m.key.to_string());
        let recorded = recorded_stage(prev);
        let mut out = AccountOutcome::undecided(Lifecycle::Blocked, recorded);
        let user = match self.joined_user(m, join, prev, &mut out) {
            Ok(user) => user,
            Err((state, reasons)) => return finish(out, state, reasons),
        };
        // An invitation answered with another user (a new guest?) is never carried on as if
        // converted, nor sent again blindly: blocked until an admin clears it.
        if let Some(answer) = prev.and_then(|p| p.invitation_mismatch.as_ref()) {
            let reason = BlockReason::InvitationAnswerMismatch {
                answer: answer.clone(),
            };
            return finish(out, Lifecycle::Blocked, vec![reason]);
        }
        let subject = Subject {
            m,
            mapping: self.mappings.get(&m.mapping),
            user,
            prev,
            randomized: prev.is_some_and(|p| p.password_randomized_at.is_some()),
            revoked: prev.is_some_and(|p| p.sessions_revoked_at.is_some()),
        };
        // On-premises protection and disabled accounts stop every action.
        let guards = guards(m, user);
        let stage = recorded.max(observed_stage(user));
        out.stage = stage;
        if observed_stage(user) == Lifecycle::Accepted {
            out.accepted_change = parse_time(user.external_user_state_change.as_deref());
        }
        if stage >= Lifecycle::Invited {
            self.after_invitation(&subject, guards, stage, out)
        } else {
            self.before_invitation(&subject, guards, out)
        }
    }

    /// The cloud user the account joined, when its mapping and its join leave exactly one
    /// that it joined before too; else the state and reasons it stops at.
    fn joined_user(
        &self,
        m: &MappedAccount,
        join: &JoinOutcome,
        prev: Option<&Progress>,
        out: &mut AccountOutcome,
    ) -> Result<&'a CloudUser, (Lifecycle, Vec<BlockReason>)> {
        if !m.also_in.is_empty() {
            let mut all = vec![m.mapping.clone()];
            all.extend(m.also_in.iter().cloned());
            return Err((
                Lifecycle::Blocked,
                vec![BlockReason::InSeveralScopes { mappings: all }],
            ));
        }
        if let Some(message) = &m.mapping_error {
            return Err((
                Lifecycle::Blocked,
                vec![BlockReason::MappingFailed {
                    message: message.clone(),
                }],
            ));
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
                return Err((
                    Lifecycle::Unmatched,
                    vec![BlockReason::NoCloudUser { kind_hint: hint }],
                ));
            }
            JoinOutcome::SeveralUsers { user_ids } => {
                return Err((
                    Lifecycle::Unmatched,
                    vec![BlockReason::SeveralCloudUsers {
                        user_ids: user_ids.clone(),
                    }],
                ));
            }
            JoinOutcome::SharedUser { user_id, accounts } => {
                return Err((
                    Lifecycle::Unmatched,
                    vec![BlockReason::CloudUserShared {
                        user_id: user_id.clone(),
                        accounts: accounts.clone(),
                    }],
                ));
            }
        };
        let Some(user) = user else {
            return Err((Lifecycle::Unmatched, Vec::new()));
        };
        out.cloud_id = Some(user.id.clone());
        out.upn = Some(user.user_principal_name.clone());
        if let Some(was) = prev.and_then(|p| p.cloud_id.as_ref())
            && *was != user.id
        {
            return Err((
                Lifecycle::Blocked,
                vec![BlockReason::CloudUserChanged {
                    was: was.clone(),
                    now: user.id.clone(),
                }],
            ));
        }
        Ok(user)
    }

    /// `revoke_sessions` for a converted account whose password b2bsync randomized (in this
    /// run, as the action before, or earlier), unless the policy turns it off or it was done.
    fn revoke_op(&self, s: &Subject<'_>, ops: &mut Vec<Op>) {
        if self.policy.revoke_sessions && !s.revoked {
            ops.push(Op::RevokeSessions {
                user_id: s.user.id.clone(),
            });
        }
    }

    /// An account invited (by an earlier run, or as the cloud shows): re-invitations, the
    /// password, the user type; `guards` stop every action.
    fn after_invitation(
        &self,
        s: &Subject<'_>,
        guards: Vec<BlockReason>,
        stage: Lifecycle,
        mut out: AccountOutcome,
    ) -> (AccountOutcome, Vec<Op>) {
        let mut ops = Vec::new();
        let accepted_done = s.randomized || self.policy.randomize_password == RandomizeWhen::Never;
        let converted_stage = if stage >= Lifecycle::Accepted && accepted_done {
            Lifecycle::Done
        } else {
            stage
        };
        out.stage = converted_stage;
        if converted_stage == Lifecycle::Done {
            out.state = Lifecycle::Done;
            out.next = Lifecycle::Done;
            if guards.is_empty() {
                // A randomization recorded without its revocation (a crash between the two,
                // or a failed revocation): revoke now.
                if s.randomized {
                    self.revoke_op(s, &mut ops);
                }
                self.user_type_op(s.mapping, s.user, &mut ops);
            }
            return (out, ops);
        }
        if !guards.is_empty() {
            return finish(out, Lifecycle::Blocked, guards);
        }
        out.state = stage;
        out.next = stage;
        self.drift(s.m, s.user, s.prev, &mut out);
        let want_password = match self.policy.randomize_password {
            RandomizeWhen::Never => false,
            RandomizeWhen::AfterAcceptance => stage >= Lifecycle::Accepted,
            RandomizeWhen::AfterSignIn => {
                stage >= Lifecycle::Accepted && self.signed_in_since_acceptance(s, &mut out)
            }
            RandomizeWhen::AfterInvitation => true,
        };
        if stage == Lifecycle::Invited {
            self.pending(s.m, s.mapping, s.user, s.prev, &mut out, &mut ops);
        }
        if want_password && !s.randomized {
            ops.push(randomize_password(s.m));
            if stage >= Lifecycle::Accepted {
                out.next = Lifecycle::Done;
                self.revoke_op(s, &mut ops);
            }
        }
        if stage >= Lifecycle::Accepted {
            self.user_type_op(s.mapping, s.user, &mut ops);
        }
        (out, ops)
    }

    /// `after_sign_in`: whether the cloud user's last successful sign-in is at or after the
    /// acceptance (`accepted_at`, else the invitation time) and not in the future. When not
    /// (no sign-in read, unparseable, too early), the account waits with a warning saying so.
    fn signed_in_since_acceptance(&self, s: &Subject<'_>, out: &mut AccountOutcome) -> bool {
        if s.randomized {
            return true;
        }
        let since = s
            .prev
            .and_then(|p| p.accepted_at.or(p.invited_at))
            .or(out.accepted_change);
        // Graph's sign-in times have whole seconds; the acceptance may have been recorded
        // with a fraction (when b2bsync first read it), so a sign-in in that same second
        // counts: compare from the start of the acceptance's second.
        let from = since.and_then(|t| jiff::Timestamp::from_second(t.as_second()).ok());
        let signed_in = parse_time(s.user.last_successful_sign_in.as_deref());
        let ok = match (from, signed_in) {
            (Some(since), Some(at)) => at >= since && at <= self.now,
            _ => false,
        };
        if !ok {
            out.warnings.push(Context::warn(Warning::AwaitingSignIn {
                since: since.map(|t| t.to_string()),
            }));
        }
        ok
    }

    /// An account not invited yet: every precondition of the lifecycle (docs/architecture.md),
    /// then the address is staged where the account's kind needs it and the invitation
    /// follows when it can.
    fn before_invitation(
        &self,
        s: &Subject<'_>,
        guards: Vec<BlockReason>,
        mut out: AccountOutcome,
    ) -> (AccountOutcome, Vec<Op>) {
        let (m, user) = (s.m, s.user);
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
        if let Some(kind) = &m.account.onprem_mailbox {
            reasons.push(BlockReason::OnPremMailbox { kind: kind.clone() });
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
        match user.kind() {
            AccountKind::Synced => self.synced_address(s, &address, &mut out, &mut ops),
            AccountKind::CloudOnly => self.cloud_only_address(s, &address, &mut out, &mut ops),
        }
        (out, ops)
    }

    /// A synced account: AD is the source of authority, so the address must be in AD `mail`
    /// too, or the next Entra Connect cycle would overwrite the cloud `mail` again. The
    /// invitation waits until the cloud shows it.
    fn synced_address(
        &self,
        s: &Subject<'_>,
        address: &Email,
        out: &mut AccountOutcome,
        ops: &mut Vec<Op>,
    ) {
        let (m, user) = (s.m, s.user);
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
            self.invite(s, address, ops, out);
        } else {
            out.state = Lifecycle::AwaitingSync;
            out.next = Lifecycle::AwaitingSync;
            let limit = i64::from(self.policy.awaiting_sync_warn_minutes) * 60;
            let since = s.prev.and_then(|p| p.address_staged_at);
            if let Some(age) = self.age_seconds(since).filter(|a| *a >= limit) {
                out.warnings.push(Context::warn(Warning::AwaitingSyncLong {
                    minutes: age / 60,
                }));
            }
        }
    }

    /// A cloud-only account: the address is PATCHed where the mapping writes it, and Graph
    /// applies the PATCH at once, so the invitation follows in the same run.
    fn cloud_only_address(
        &self,
        s: &Subject<'_>,
        address: &Email,
        out: &mut AccountOutcome,
        ops: &mut Vec<Op>,
    ) {
        let user = s.user;
        let w = s.mapping.map_or(
            WriteTargets {
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
        self.invite(s, address, ops, out);
    }

    /// The first invitation, and the password when the policy randomizes it at once.
    fn invite(
        &self,
        s: &Subject<'_>,
        address: &Email,
        ops: &mut Vec<Op>,
        out: &mut AccountOutcome,
    ) {
        let inv = self.invitation(s.mapping, &s.user.id, address.as_str(), 1);
        if !inv.send_message {
            out.warnings.push(Context::warn(Warning::NoInvitationEmail));
        }
        ops.push(Op::Invite(inv));
        out.next = Lifecycle::Invited;
        if self.policy.randomize_password == RandomizeWhen::AfterInvitation && !s.randomized {
            ops.push(randomize_password(s.m));
        }
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
        let invited_at = prev
            .and_then(|p| p.invited_at)
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
