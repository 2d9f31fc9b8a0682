//! The `join` stage (pure): pairs each mapped on-premises account with the cloud user it
//! stands for.
//!
//! Cloud users are indexed once per property (a sorted list of normalized values, borrowed
//! from the users where they already are in comparison form), so joining takes
//! O((accounts + users) log users) time and little memory beyond its inputs (100,000 of each
//! take a fraction of a second). An account's join keys come from its mapping (see
//! `mapping::eval`): the anchor against `onPremisesImmutableId` (any user), and the
//! cloud-only pair against its property (cloud-only users only, so a synced user is never
//! taken over by a UPN that happens to match).
//!
//! Each account ends up joined to exactly one user, unmatched, or in conflict: it matches
//! several users, or the user it matches is also matched by another account. A conflict is
//! never resolved by guessing; `plan` reports it.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::mapping::eval::normalized_key;
use crate::mapping::{CloudProperty, MappedAccount};
use crate::model::{AccountKind, CloudUser};

/// How one account joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "join", rename_all = "snake_case")]
pub enum JoinOutcome {
    /// Joined to exactly one cloud user (index into [`Joined::users`]).
    Joined { user: usize, kind: AccountKind },
    /// No cloud user matches.
    Unmatched,
    /// Several cloud users match this account (their ids, sorted).
    SeveralUsers { user_ids: Vec<String> },
    /// The one matching cloud user is also matched by other accounts (their keys, sorted).
    SharedUser {
        user_id: String,
        accounts: Vec<String>,
    },
}

/// The result of a join: every account (sorted by key), how each joined, and every cloud
/// user read (the plan needs all of them to find addresses used by other objects).
///
/// Accounts and outcomes are two lists of the same length (`outcomes[i]` is how
/// `accounts[i]` joined) rather than one list of pairs, so the join never holds the mapped
/// accounts twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Joined {
    pub accounts: Vec<MappedAccount>,
    pub outcomes: Vec<JoinOutcome>,
    pub users: Vec<CloudUser>,
}

impl Joined {
    /// Each account with its outcome.
    pub fn iter(&self) -> impl Iterator<Item = (&MappedAccount, &JoinOutcome)> {
        self.accounts.iter().zip(&self.outcomes)
    }

    /// The cloud user an outcome joined, if any.
    pub fn user(&self, outcome: &JoinOutcome) -> Option<&CloudUser> {
        match outcome {
            JoinOutcome::Joined { user, .. } => self.users.get(*user),
            _ => None,
        }
    }
}

/// Every user's values of one property, normalized as join keys are, sorted, each with the
/// user's index: a lookup is a binary search.
struct PropertyIndex<'u> {
    property: CloudProperty,
    values: Vec<(Cow<'u, str>, usize)>,
}

impl<'u> PropertyIndex<'u> {
    fn new(users: &'u [CloudUser], property: CloudProperty) -> Self {
        let mut values = Vec::with_capacity(users.len());
        for (i, u) in users.iter().enumerate() {
            for v in property_values(u, property) {
                let key = normalized_key(property, v);
                if !key.is_empty() {
                    values.push((key, i));
                }
            }
        }
        values.sort_unstable();
        PropertyIndex { property, values }
    }

    /// The indexes of the users whose value equals `key` (already normalized).
    fn users<'k>(&'k self, key: &'k str) -> impl Iterator<Item = usize> + 'k {
        let from = self.values.partition_point(|(v, _)| v.as_ref() < key);
        self.values[from..]
            .iter()
            .take_while(move |(v, _)| v.as_ref() == key)
            .map(|(_, i)| *i)
    }
}

/// A cloud user's values of one property, as read (not normalized).
pub(crate) fn property_values(u: &CloudUser, property: CloudProperty) -> Vec<&str> {
    match property {
        CloudProperty::Id => vec![u.id.as_str()],
        CloudProperty::UserPrincipalName => vec![u.user_principal_name.as_str()],
        CloudProperty::Mail => u.mail.iter().map(String::as_str).collect(),
        CloudProperty::OtherMails => u.other_mails.iter().map(String::as_str).collect(),
        CloudProperty::EmployeeId => u.employee_id.iter().map(String::as_str).collect(),
        CloudProperty::OnPremisesSamAccountName => u
            .on_premises_sam_account_name
            .iter()
            .map(String::as_str)
            .collect(),
        CloudProperty::OnPremisesImmutableId => u
            .on_premises_immutable_id
            .iter()
            .map(String::as_str)
            .collect(),
    }
}

/// Joins mapped accounts to cloud users. Deterministic: the output does not depend on the
/// order of either input (accounts come out sorted by key, users sorted by id).
pub fn join(mut accounts: Vec<MappedAccount>, mut users: Vec<CloudUser>) -> Joined {
    // A stable sort takes a scratch copy of half the list even when it is sorted already (as
    // `map_accounts` leaves the accounts).
    if !accounts.is_sorted_by(|a, b| a.key <= b.key) {
        accounts.sort_by(|a, b| a.key.cmp(&b.key));
    }
    if !users.is_sorted_by(|a, b| a.id <= b.id) {
        users.sort_by(|a, b| a.id.cmp(&b.id));
    }
    let outcomes = outcomes(&accounts, &users);
    Joined {
        accounts,
        outcomes,
        users,
    }
}

fn outcomes(accounts: &[MappedAccount], users: &[CloudUser]) -> Vec<JoinOutcome> {
    // Index only the properties some account joins by.
    let mut properties: Vec<CloudProperty> = Vec::new();
    for k in accounts.iter().flat_map(|a| &a.join_keys) {
        if !properties.contains(&k.property) {
            properties.push(k.property);
        }
    }
    let index: Vec<PropertyIndex<'_>> = properties
        .into_iter()
        .map(|p| PropertyIndex::new(users, p))
        .collect();

    // Candidates per account, one after the other: account `a`'s are
    // `candidates[ends[a - 1]..ends[a]]`, sorted, without duplicates.
    let mut candidates: Vec<usize> = Vec::with_capacity(accounts.len());
    let mut ends: Vec<usize> = Vec::with_capacity(accounts.len());
    let mut scratch: Vec<usize> = Vec::new();
    for a in accounts {
        scratch.clear();
        for k in &a.join_keys {
            let Some(by_value) = index.iter().find(|i| i.property == k.property) else {
                continue;
            };
            scratch.extend(
                by_value
                    .users(&k.value)
                    .filter(|i| !k.cloud_only || users[*i].kind() == AccountKind::CloudOnly),
            );
        }
        scratch.sort_unstable();
        scratch.dedup();
        candidates.extend_from_slice(&scratch);
        ends.push(candidates.len());
    }
    let of = |a: usize| {
        let from = if a == 0 { 0 } else { ends[a - 1] };
        &candidates[from..ends[a]]
    };

    // How many accounts claim each user; the claimants themselves only of users claimed
    // more than once (rare: a conflict).
    let mut claim_count = vec![0usize; users.len()];
    for u in &candidates {
        claim_count[*u] += 1;
    }
    let mut claimants: HashMap<usize, Vec<usize>> = HashMap::new();
    for a in 0..accounts.len() {
        for u in of(a) {
            if claim_count[*u] > 1 {
                claimants.entry(*u).or_default().push(a);
            }
        }
    }

    (0..accounts.len())
        .map(|a| match of(a) {
            [] => JoinOutcome::Unmatched,
            [u] => match claimants.get(u) {
                Some(claimants) => JoinOutcome::SharedUser {
                    user_id: users[*u].id.clone(),
                    accounts: claimants
                        .iter()
                        .filter(|x| **x != a)
                        .map(|x| accounts[*x].key.to_string())
                        .collect(),
                },
                None => JoinOutcome::Joined {
                    user: *u,
                    kind: users[*u].kind(),
                },
            },
            several => JoinOutcome::SeveralUsers {
                user_ids: several.iter().map(|u| users[*u].id.clone()).collect(),
            },
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::mapping::eval::normalize_key;
    use crate::mapping::{AccountFacts, AddressProblem, JoinKey};
    use crate::model::{AccountKey, Dn};

    fn account(key: &str, keys: &[(CloudProperty, &str, bool)]) -> MappedAccount {
        MappedAccount {
            key: AccountKey::Dn(Dn::new(key)),
            mapping: "m".to_string(),
            also_in: vec![],
            account: AccountFacts {
                dn: format!("CN={key},OU=P,DC=x"),
                account_name: Some(key.to_string()),
                ..AccountFacts::default()
            },
            address: Err(AddressProblem::Missing),
            join_keys: keys
                .iter()
                .map(|(p, v, c)| JoinKey {
                    property: *p,
                    value: normalize_key(*p, v),
                    cloud_only: *c,
                })
                .collect(),
            protection: vec![],
            mapping_error: None,
        }
    }

    fn user(id: &str, upn: &str, immutable: Option<&str>) -> CloudUser {
        CloudUser {
            id: id.to_string(),
            user_principal_name: upn.to_string(),
            on_premises_immutable_id: immutable.map(str::to_string),
            on_premises_sync_enabled: immutable.map(|_| true),
            ..CloudUser::default()
        }
    }

    #[test]
    fn joins_by_anchor_and_by_pair() {
        let upn = CloudProperty::UserPrincipalName;
        let anchor = CloudProperty::OnPremisesImmutableId;
        let j = join(
            vec![
                account("a", &[(anchor, "AAAAAAAAAAAAAAAAAAAAAA==", false)]),
                account("b", &[(upn, "B@x.example", true)]),
                account("c", &[(upn, "nobody@x.example", true)]),
                // A synced user is not taken by a UPN match.
                account("d", &[(upn, "a@x.example", true)]),
            ],
            vec![
                user("u2", "b@x.example", None),
                user("u1", "a@x.example", Some("AAAAAAAAAAAAAAAAAAAAAA==")),
            ],
        );
        assert_eq!(
            j.outcomes,
            vec![
                JoinOutcome::Joined {
                    user: 0,
                    kind: AccountKind::Synced
                },
                JoinOutcome::Joined {
                    user: 1,
                    kind: AccountKind::CloudOnly
                },
                JoinOutcome::Unmatched,
                JoinOutcome::Unmatched,
            ]
        );
        assert_eq!(j.users[0].id, "u1");
    }

    #[test]
    fn conflicts_are_reported_for_every_account_involved() {
        let mail = CloudProperty::Mail;
        let mut u1 = user("u1", "one@x.example", None);
        u1.mail = Some("shared@p.example".into());
        let mut u2 = user("u2", "two@x.example", None);
        u2.mail = Some("Shared@p.example".into());
        let mut u3 = user("u3", "three@x.example", None);
        u3.mail = Some("three@p.example".into());
        let j = join(
            vec![
                account("a", &[(mail, "shared@p.example", true)]),
                account("b", &[(mail, "three@p.example", true)]),
                account("c", &[(mail, "THREE@p.example", true)]),
            ],
            vec![u1, u2, u3],
        );
        assert_eq!(
            j.outcomes[0],
            JoinOutcome::SeveralUsers {
                user_ids: vec!["u1".into(), "u2".into()]
            }
        );
        assert_eq!(
            j.outcomes[1],
            JoinOutcome::SharedUser {
                user_id: "u3".into(),
                accounts: vec!["dn:c".into()]
            }
        );
        assert_eq!(
            j.outcomes[2],
            JoinOutcome::SharedUser {
                user_id: "u3".into(),
                accounts: vec!["dn:b".into()]
            }
        );
    }

    #[test]
    fn scales_to_a_hundred_thousand() {
        let upn = CloudProperty::UserPrincipalName;
        let n = 100_000;
        let accounts: Vec<_> = (0..n)
            .map(|i| {
                account(
                    &format!("k{i:06}"),
                    &[(upn, &format!("u{i}@x.example"), true)],
                )
            })
            .collect();
        let users: Vec<_> = (0..n)
            .map(|i| user(&format!("id{i:06}"), &format!("u{i}@x.example"), None))
            .collect();
        let t = std::time::Instant::now();
        let j = join(accounts, users);
        let took = t.elapsed();
        assert!(
            j.outcomes
                .iter()
                .all(|o| matches!(o, JoinOutcome::Joined { .. }))
        );
        // Generous bound for an unoptimized test build on a shared machine; the release
        // build is far below a second.
        assert!(took.as_secs() < 10, "join took {took:?}");
    }
}
