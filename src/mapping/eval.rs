//! The `map` stage (pure): applies a [`MappingSet`] to the accounts the source read. Decides
//! scope, evaluates the external-address and join expressions, and notes on-premises
//! protection. Nothing here fails as a whole: an expression that fails for one account is
//! recorded on that account and reported by `plan`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use minijinja::value::{Value, ValueKind};
use serde::{Deserialize, Serialize};

use super::{AnchorAttribute, CloudProperty, Mapping, MappingSet, expr};
use crate::model::{AccountKey, Anchor, Dn, SourceAccount, lowercase};

/// A value an account is joined by: cloud users whose `property` equals `value`
/// (case-insensitive; `value` is lower case) are candidates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JoinKey {
    pub property: CloudProperty,
    pub value: String,
    /// Only cloud-only users may match this key (the cloud-only pair); anchor keys match
    /// any user.
    pub cloud_only: bool,
}

/// Why an account has no usable external address from its mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum AddressProblem {
    /// The expression yielded nothing (none, an empty string, an empty list).
    Missing,
    /// The expression failed for this account.
    Failed { message: String },
}

/// Why an account must never be touched on-premises.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "protection", rename_all = "snake_case")]
pub enum Protection {
    /// `adminCount=1`: AD's AdminSDHolder protects it (it is, or was, privileged).
    AdminCount,
    /// Member of a group in `scope.protected_groups`.
    ProtectedGroup { group: String },
    /// Listed in `scope.deny`.
    DenyList { entry: String },
}

/// What the later stages need of an on-premises account once its mapping was applied. The
/// attribute values and the rest of the entry are dropped with the [`SourceAccount`]: at
/// 100,000 accounts they would be most of the run's memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountFacts {
    /// Distinguished name, as the server returned it.
    pub dn: String,
    /// `sAMAccountName` (AD) or `uid` (generic LDAP).
    pub account_name: Option<String>,
    /// `displayName` (AD refuses a password holding one of its tokens).
    pub display_name: Option<String>,
    /// `mail` as it is now in the directory.
    pub mail: Option<String>,
    /// AD marks the account disabled.
    pub disabled: bool,
    /// The on-premises or remote Exchange mailbox its Exchange attributes describe
    /// ([`crate::model::ExchangeRecipient::mailbox`]).
    pub onprem_mailbox: Option<String>,
}

impl From<SourceAccount> for AccountFacts {
    fn from(account: SourceAccount) -> Self {
        AccountFacts {
            disabled: account.disabled(),
            onprem_mailbox: account.exchange.as_ref().and_then(|x| x.mailbox()),
            dn: account.dn,
            account_name: account.account_name,
            display_name: account.display_name,
            mail: account.mail,
        }
    }
}

/// One in-scope account with everything its mapping says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedAccount {
    /// The state-store key: the anchor, or the normalized DN.
    pub key: AccountKey,
    /// The mapping whose scope holds the account (the first by name if several do).
    pub mapping: String,
    /// Other mappings whose scope also holds it; not empty means blocked.
    pub also_in: Vec<String>,
    pub account: AccountFacts,
    /// The external address, trimmed.
    pub address: Result<String, AddressProblem>,
    /// Keys to join cloud users by.
    pub join_keys: Vec<JoinKey>,
    pub protection: Vec<Protection>,
    /// An expression (`scope.when`, `join.cloud_only.source`) failed for this account.
    pub mapping_error: Option<String>,
}

/// The values of an attribute by the mapping's name: from `attributes` (case-insensitive),
/// else from the typed field the source adapter fills for well-known attributes.
pub fn attribute_values(account: &SourceAccount, name: &str) -> Vec<String> {
    if let Some((_, v)) = account
        .attributes
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
    {
        return v.map(str::to_string).collect();
    }
    let field = match name.to_ascii_lowercase().as_str() {
        "samaccountname" | "uid" => account.account_name.clone(),
        "userprincipalname" => account.user_principal_name.clone(),
        "displayname" => account.display_name.clone(),
        "mail" => account.mail.clone(),
        "distinguishedname" => Some(account.dn.clone()),
        "useraccountcontrol" => account.user_account_control.map(|u| u.to_string()),
        "admincount" => account.admin_count.then(|| "1".to_string()),
        "memberof" => return account.member_of.clone(),
        _ => None,
    };
    field.into_iter().collect()
}

/// The expression context of one account: every declared attribute, a string (first value)
/// or none, or a list for `multi_valued` ones.
fn context(mapping: &Mapping, account: &SourceAccount) -> Value {
    let mut ctx = BTreeMap::new();
    for a in &mapping.attributes {
        let values = attribute_values(account, a);
        let v = if mapping.multi_valued.contains(a) {
            Value::from(values)
        } else {
            values
                .into_iter()
                .next()
                .map_or(Value::from(()), Value::from)
        };
        ctx.insert(Mapping::variable_name(a), v);
    }
    Value::from(ctx)
}

/// Strings of a value: a string, or the non-empty strings of a list; trimmed.
fn strings(v: &Value) -> Vec<String> {
    match v.kind() {
        ValueKind::String => v
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .into_iter()
            .collect(),
        ValueKind::Seq | ValueKind::Iterable => v
            .try_iter()
            .map(|i| i.flat_map(|x| strings(&x)).collect())
            .unwrap_or_default(),
        ValueKind::Number => vec![v.to_string()],
        _ => Vec::new(),
    }
}

fn matches_entry(entry: &str, account: &SourceAccount) -> bool {
    if entry.contains('=') {
        Dn::new(entry) == Dn::new(&account.dn)
    } else {
        account
            .account_name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(entry))
    }
}

/// Whether an account is in a mapping's scope.
enum InScope {
    No,
    /// In scope; `failure`: `scope.when` failed, which keeps the account in scope, blocked.
    Yes {
        failure: Option<String>,
    },
}

/// The expressions of a mapping, compiled once. Load already compiled each one, so a failure
/// here is unexpected; it is reported on every account of that mapping rather than panicking.
struct Compiled<'m> {
    mapping: &'m Mapping,
    address: Result<minijinja::Expression<'m, 'static>, String>,
    when: Option<Result<minijinja::Expression<'m, 'static>, String>>,
    disabled: Option<Result<minijinja::Expression<'m, 'static>, String>>,
    join: Option<Result<minijinja::Expression<'m, 'static>, String>>,
}

impl<'m> Compiled<'m> {
    fn new(m: &'m Mapping) -> Self {
        let c = |src: &str| {
            m.env()
                .compile_expression_owned(src.to_string())
                .map_err(|e| e.to_string())
        };
        Compiled {
            mapping: m,
            address: c(&m.address),
            when: m.scope.when.as_deref().map(c),
            disabled: m.scope.disabled.as_deref().map(c),
            join: m.join.cloud_only.as_ref().map(|p| c(&p.source)),
        }
    }

    /// Whether the account is in this mapping's scope.
    fn scope(&self, account: &SourceAccount) -> InScope {
        let m = self.mapping;
        let dn = Dn::new(&account.dn);
        if !m.scope.base_dns.iter().any(|b| dn.is_under(&Dn::new(b))) {
            return InScope::No;
        }
        if !m.scope.allow.is_empty() && !m.scope.allow.iter().any(|e| matches_entry(e, account)) {
            return InScope::No;
        }
        let Some(when) = &self.when else {
            return InScope::Yes { failure: None };
        };
        let result = when
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|e| e.eval(context(m, account)).map_err(|e| e.to_string()));
        match result {
            Ok(v) if !v.is_true() => InScope::No,
            Ok(_) => InScope::Yes { failure: None },
            Err(e) => InScope::Yes {
                failure: Some(format!("scope.when: {e}")),
            },
        }
    }

    /// Everything the mapping says about one in-scope account; consumes the account and keeps
    /// only the [`AccountFacts`].
    fn map(
        &self,
        key: AccountKey,
        names: Vec<String>,
        account: SourceAccount,
        failure: Option<String>,
    ) -> MappedAccount {
        let m = self.mapping;
        let ctx = context(m, &account);
        let address = match &self.address {
            Err(e) => Err(AddressProblem::Failed { message: e.clone() }),
            Ok(e) => match e.eval(ctx.clone()) {
                Err(e) => Err(AddressProblem::Failed {
                    message: e.to_string(),
                }),
                Ok(v) if expr::is_empty(&v) => Err(AddressProblem::Missing),
                Ok(v) => strings(&v)
                    .into_iter()
                    .next()
                    .ok_or(AddressProblem::Missing),
            },
        };
        let mut mapping_error = failure;
        let mut join_keys = Vec::new();
        let anchor = match m.join.anchor {
            AnchorAttribute::ObjectGuid => account.object_guid.clone(),
            AnchorAttribute::ConsistencyGuid => account.anchor().cloned(),
            // A generic server's anchor by name: its text value, when the account has one.
            named => named.text_attribute().and_then(|attribute| {
                account
                    .first(attribute)
                    .and_then(|v| named.name().from_text(v))
            }),
        };
        if let Some(a) = &anchor {
            join_keys.push(JoinKey {
                property: CloudProperty::OnPremisesImmutableId,
                value: a.as_str().to_string(),
                cloud_only: false,
            });
        }
        if let (Some(pair), Some(e)) = (&m.join.cloud_only, &self.join) {
            match e
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|e| e.eval(ctx).map_err(|e| e.to_string()))
            {
                Ok(v) => {
                    for s in strings(&v) {
                        join_keys.push(JoinKey {
                            property: pair.cloud,
                            value: normalize_key(pair.cloud, &s),
                            cloud_only: true,
                        });
                    }
                }
                Err(e) => {
                    mapping_error.get_or_insert(format!("join.cloud_only.source: {e}"));
                }
            }
        }
        join_keys.sort();
        join_keys.dedup();
        let mut protection = Vec::new();
        if account.admin_count {
            protection.push(Protection::AdminCount);
        }
        for g in &m.scope.protected_groups {
            let group = Dn::new(g);
            if account.member_of.iter().any(|d| Dn::new(d) == group) {
                protection.push(Protection::ProtectedGroup { group: g.clone() });
            }
        }
        for d in &m.scope.deny {
            if matches_entry(d, &account) {
                protection.push(Protection::DenyList { entry: d.clone() });
            }
        }
        protection.sort();
        // `scope.disabled` decides instead of the flavour's mark; when it fails the account
        // counts as disabled (blocked, never invited) and the failure is reported.
        let disabled = match &self.disabled {
            None => account.disabled(),
            Some(e) => match e
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|e| e.eval(context(m, &account)).map_err(|e| e.to_string()))
            {
                Ok(v) => v.is_true(),
                Err(e) => {
                    mapping_error.get_or_insert(format!("scope.disabled: {e}"));
                    true
                }
            },
        };
        // `names` is sorted: the first is the primary mapping, this one.
        let mut names = names.into_iter();
        let mapping = names.next().unwrap_or_else(|| m.name.clone());
        MappedAccount {
            key,
            mapping,
            also_in: names.collect(),
            account: AccountFacts {
                disabled,
                ..AccountFacts::from(account)
            },
            address,
            join_keys,
            protection,
            mapping_error,
        }
    }
}

/// Maps what each mapping's searches returned: `found` holds `(mapping name, account)` pairs
/// (an account found by two mappings appears twice). Accounts out of scope (outside the base
/// DNs, not on a non-empty allow list, `scope.when` false) are dropped. Sorted by key.
///
/// Each account is consumed as soon as it is mapped, so the entries read (their attribute
/// values above all) and the mapped accounts are not held twice.
pub fn map_accounts(
    set: &MappingSet,
    mut found: Vec<(String, SourceAccount)>,
) -> Vec<MappedAccount> {
    let compiled: HashMap<&str, Compiled<'_>> = set
        .mappings()
        .iter()
        .map(|m| (m.name.as_str(), Compiled::new(m)))
        .collect();

    // (key, index into `found`, failure of `scope.when`) of every account in scope; the
    // others are dropped at once.
    let mut in_scope: Vec<(AccountKey, usize, Option<String>)> = Vec::new();
    for (i, slot) in found.iter_mut().enumerate() {
        let (name, account) = &*slot;
        match compiled.get(name.as_str()).map(|c| c.scope(account)) {
            Some(InScope::Yes { failure }) => in_scope.push((AccountKey::of(account), i, failure)),
            Some(InScope::No) | None => *slot = Default::default(),
        }
    }
    // By key, then in the order read: an account found by several mappings is mapped once,
    // from its first copy, by the first mapping by name.
    in_scope.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));

    // At most one per entry in scope, exactly that unless some account was found twice:
    // growing the list by doubling would hold it one and a half times over.
    let mut mapped = Vec::with_capacity(in_scope.len());
    let mut entries = in_scope.into_iter().peekable();
    while let Some((key, first, mut failure)) = entries.next() {
        let (name, account) = std::mem::take(&mut found[first]);
        let mut names = vec![name];
        while let Some((_, i, f)) = entries.next_if(|e| e.0 == key) {
            // Another search's copy of the same account: only its mapping's name is kept.
            let (other, _) = std::mem::take(&mut found[i]);
            if !names.contains(&other) {
                names.push(other);
            }
            if failure.is_none() {
                failure = f;
            }
        }
        names.sort();
        let Some(c) = names.first().and_then(|n| compiled.get(n.as_str())) else {
            continue;
        };
        mapped.push(c.map(key, names, account, failure));
    }
    mapped
}

/// Maps accounts from one combined search: each account is offered to every mapping whose
/// base DNs contain its DN. Only correct when the mappings' filters were all applied (or are
/// equal); otherwise run [`MappingSet::searches`] and use [`map_accounts`].
pub fn map_by_base(set: &MappingSet, accounts: Vec<SourceAccount>) -> Vec<MappedAccount> {
    let mut found = Vec::new();
    for a in accounts {
        let dn = Dn::new(&a.dn);
        for m in set.mappings() {
            if m.scope.base_dns.iter().any(|b| dn.is_under(&Dn::new(b))) {
                found.push((m.name.clone(), a.clone()));
            }
        }
    }
    map_accounts(set, found)
}

/// The comparison form of a join value: lower case, and for the anchor the canonical base64.
pub fn normalize_key(property: CloudProperty, value: &str) -> String {
    normalized_key(property, value).into_owned()
}

/// [`normalize_key`], borrowing `value` when it already is in comparison form (the join
/// indexes every cloud user's value, most of which are).
pub(crate) fn normalized_key(property: CloudProperty, value: &str) -> Cow<'_, str> {
    let value = value.trim();
    match property {
        CloudProperty::OnPremisesImmutableId => match Anchor::from_base64(value) {
            Some(a) if a.as_str() != value => Cow::Owned(a.as_str().to_string()),
            _ => Cow::Borrowed(value),
        },
        _ => lowercase(value),
    }
}
