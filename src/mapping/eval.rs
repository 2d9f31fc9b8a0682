//! The `map` stage (pure): applies a [`MappingSet`] to the accounts the source read. Decides
//! scope, evaluates the external-address and join expressions, and notes on-premises
//! protection. Nothing here fails as a whole: an expression that fails for one account is
//! recorded on that account and reported by `plan`.

use std::collections::{BTreeMap, HashMap};

use minijinja::value::{Value, ValueKind};
use serde::{Deserialize, Serialize};

use super::{AnchorAttribute, CloudProperty, Mapping, MappingSet, dn_under, expr, normalize_dn};
use crate::model::SourceAccount;

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

/// One in-scope account with everything its mapping says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedAccount {
    /// The state-store key: the anchor (base64), or `dn:` and the normalized DN.
    pub key: String,
    /// The mapping whose scope holds the account (the first by name if several do).
    pub mapping: String,
    /// Other mappings whose scope also holds it; not empty means blocked.
    pub also_in: Vec<String>,
    pub account: SourceAccount,
    /// The external address, trimmed.
    pub address: Result<String, AddressProblem>,
    /// Keys to join cloud users by.
    pub join_keys: Vec<JoinKey>,
    pub protection: Vec<Protection>,
    /// An expression (`scope.when`, `join.cloud_only.source`) failed for this account.
    pub mapping_error: Option<String>,
}

/// The state-store key of an account: its anchor, else its normalized DN.
pub fn account_key(account: &SourceAccount) -> String {
    match account.anchor() {
        Some(a) => a.as_str().to_string(),
        None => format!("dn:{}", normalize_dn(&account.dn)),
    }
}

/// The values of an attribute by the mapping's name: from `attributes` (case-insensitive),
/// else from the typed field the source adapter fills for well-known attributes.
pub fn attribute_values(account: &SourceAccount, name: &str) -> Vec<String> {
    if let Some((_, v)) = account
        .attributes
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
    {
        return v.clone();
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
        normalize_dn(entry) == normalize_dn(&account.dn)
    } else {
        account
            .account_name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(entry))
    }
}

/// Maps what each mapping's searches returned: `found` holds `(mapping name, account)` pairs
/// (an account found by two mappings appears twice). Accounts out of scope (outside the base
/// DNs, not on a non-empty allow list, `scope.when` false) are dropped. Sorted by key.
pub fn map_accounts(set: &MappingSet, found: Vec<(String, SourceAccount)>) -> Vec<MappedAccount> {
    // Compile once per mapping. Load already compiled each expression, so a failure here is
    // unexpected; it is reported on every account of that mapping rather than panicking.
    struct Compiled<'m> {
        mapping: &'m Mapping,
        address: Result<minijinja::Expression<'m, 'static>, String>,
        when: Option<Result<minijinja::Expression<'m, 'static>, String>>,
        join: Option<Result<minijinja::Expression<'m, 'static>, String>>,
    }
    let compiled: HashMap<&str, Compiled<'_>> = set
        .mappings()
        .iter()
        .map(|m| {
            let c = |src: &str| {
                m.env()
                    .compile_expression_owned(src.to_string())
                    .map_err(|e| e.to_string())
            };
            (
                m.name.as_str(),
                Compiled {
                    mapping: m,
                    address: c(&m.address),
                    when: m.scope.when.as_deref().map(c),
                    join: m.join.cloud_only.as_ref().map(|p| c(&p.source)),
                },
            )
        })
        .collect();

    // key -> (mapping names, the account, failures)
    let mut by_key: BTreeMap<String, (Vec<String>, SourceAccount, Option<String>)> =
        BTreeMap::new();
    for (name, account) in found {
        let Some(c) = compiled.get(name.as_str()) else {
            continue;
        };
        let m = c.mapping;
        if !m.scope.base_dns.iter().any(|b| dn_under(&account.dn, b)) {
            continue;
        }
        if !m.scope.allow.is_empty() && !m.scope.allow.iter().any(|e| matches_entry(e, &account)) {
            continue;
        }
        let mut failure = None;
        if let Some(when) = &c.when {
            let result = when
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|e| e.eval(context(m, &account)).map_err(|e| e.to_string()));
            match result {
                Ok(v) if !v.is_true() => continue,
                Ok(_) => {}
                Err(e) => failure = Some(format!("scope.when: {e}")),
            }
        }
        let key = account_key(&account);
        let entry = by_key
            .entry(key)
            .or_insert_with(|| (Vec::new(), account, None));
        if !entry.0.contains(&name) {
            entry.0.push(name);
        }
        if entry.2.is_none() {
            entry.2 = failure;
        }
    }

    by_key
        .into_iter()
        .filter_map(|(key, (mut names, account, failure))| {
            names.sort();
            let primary = names.first()?.clone();
            let c = compiled.get(primary.as_str())?;
            let m = c.mapping;
            let ctx = context(m, &account);
            let address = match &c.address {
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
                AnchorAttribute::ObjectGuid => account.object_guid.as_ref(),
                AnchorAttribute::ConsistencyGuid => account.anchor(),
            };
            if let Some(a) = anchor {
                join_keys.push(JoinKey {
                    property: CloudProperty::OnPremisesImmutableId,
                    value: a.as_str().to_string(),
                    cloud_only: false,
                });
            }
            if let (Some(pair), Some(e)) = (&m.join.cloud_only, &c.join) {
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
                let g_norm = normalize_dn(g);
                if account.member_of.iter().any(|d| normalize_dn(d) == g_norm) {
                    protection.push(Protection::ProtectedGroup { group: g.clone() });
                }
            }
            for d in &m.scope.deny {
                if matches_entry(d, &account) {
                    protection.push(Protection::DenyList { entry: d.clone() });
                }
            }
            protection.sort();
            Some(MappedAccount {
                key,
                mapping: primary,
                also_in: names.into_iter().skip(1).collect(),
                account,
                address,
                join_keys,
                protection,
                mapping_error,
            })
        })
        .collect()
}

/// Maps accounts from one combined search: each account is offered to every mapping whose
/// base DNs contain its DN. Only correct when the mappings' filters were all applied (or are
/// equal); otherwise run [`MappingSet::searches`] and use [`map_accounts`].
pub fn map_by_base(set: &MappingSet, accounts: Vec<SourceAccount>) -> Vec<MappedAccount> {
    let mut found = Vec::new();
    for a in accounts {
        for m in set.mappings() {
            if m.scope.base_dns.iter().any(|b| dn_under(&a.dn, b)) {
                found.push((m.name.clone(), a.clone()));
            }
        }
    }
    map_accounts(set, found)
}

/// The comparison form of a join value: lower case, and for the anchor the canonical base64.
pub fn normalize_key(property: CloudProperty, value: &str) -> String {
    match property {
        CloudProperty::OnPremisesImmutableId => crate::model::Anchor::from_base64(value.trim())
            .map_or_else(|| value.trim().to_string(), |a| a.as_str().to_string()),
        _ => value.trim().to_lowercase(),
    }
}
