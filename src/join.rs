//! The `join` stage (pure): pairs each mapped on-premises account with the cloud user it
//! stands for.
//!
//! Cloud users are indexed once per property in hash maps, so joining is linear in the number
//! of accounts and users (100,000 of each take a fraction of a second). An account's join keys
//! come from its mapping (see `mapping::eval`): the anchor against `onPremisesImmutableId`
//! (any user), and the cloud-only pair against its property (cloud-only users only, so a
//! synced user is never taken over by a UPN that happens to match).
//!
//! Each account ends up joined to exactly one user, unmatched, or in conflict: it matches
//! several users, or the user it matches is also matched by another account. A conflict is
//! never resolved by guessing; `plan` reports it.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::mapping::eval::normalize_key;
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

/// One account with its join outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedAccount {
    pub mapped: MappedAccount,
    pub outcome: JoinOutcome,
}

impl JoinedAccount {
    /// The joined cloud user, if any.
    pub fn user<'a>(&self, joined: &'a Joined) -> Option<&'a CloudUser> {
        match self.outcome {
            JoinOutcome::Joined { user, .. } => joined.users.get(user),
            _ => None,
        }
    }
}

/// The result of a join: every account (sorted by key) and every cloud user read (the plan
/// needs all of them to find addresses used by other objects).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Joined {
    pub accounts: Vec<JoinedAccount>,
    pub users: Vec<CloudUser>,
}

/// The values of a cloud property on a user, normalized as join keys are.
fn property_values(user: &CloudUser, property: CloudProperty) -> Vec<String> {
    let one = |v: Option<&String>| v.map(|s| normalize_key(property, s)).into_iter().collect();
    match property {
        CloudProperty::Id => vec![normalize_key(property, &user.id)],
        CloudProperty::UserPrincipalName => {
            vec![normalize_key(property, &user.user_principal_name)]
        }
        CloudProperty::Mail => one(user.mail.as_ref()),
        CloudProperty::OtherMails => user
            .other_mails
            .iter()
            .map(|m| normalize_key(property, m))
            .collect(),
        CloudProperty::EmployeeId => one(user.employee_id.as_ref()),
        CloudProperty::OnPremisesSamAccountName => one(user.on_premises_sam_account_name.as_ref()),
        CloudProperty::OnPremisesImmutableId => one(user.on_premises_immutable_id.as_ref()),
    }
}

/// Joins mapped accounts to cloud users. Deterministic: the output does not depend on the
/// order of either input (accounts come out sorted by key, users sorted by id).
pub fn join(mut accounts: Vec<MappedAccount>, mut users: Vec<CloudUser>) -> Joined {
    accounts.sort_by(|a, b| a.key.cmp(&b.key));
    users.sort_by(|a, b| a.id.cmp(&b.id));

    // Index only the properties some account joins by.
    let properties: HashSet<CloudProperty> = accounts
        .iter()
        .flat_map(|a| a.join_keys.iter().map(|k| k.property))
        .collect();
    // One map per property, so a lookup borrows the key instead of building a tuple.
    let mut index: HashMap<CloudProperty, HashMap<String, Vec<usize>>> = HashMap::new();
    for property in properties {
        let by_value = index.entry(property).or_default();
        by_value.reserve(users.len());
        for (i, u) in users.iter().enumerate() {
            for v in property_values(u, property) {
                if !v.is_empty() {
                    by_value.entry(v).or_default().push(i);
                }
            }
        }
    }

    // Candidates per account.
    let candidates: Vec<Vec<usize>> = accounts
        .iter()
        .map(|a| {
            let mut c: Vec<usize> = a
                .join_keys
                .iter()
                .filter_map(|k| {
                    index
                        .get(&k.property)
                        .and_then(|by_value| by_value.get(k.value.as_str()))
                        .map(|v| (k, v))
                })
                .flat_map(|(k, v)| {
                    v.iter()
                        .copied()
                        .filter(|i| !k.cloud_only || users[*i].kind() == AccountKind::CloudOnly)
                })
                .collect();
            c.sort_unstable();
            c.dedup();
            c
        })
        .collect();

    // Which accounts claim each user.
    let mut claims: HashMap<usize, Vec<usize>> = HashMap::with_capacity(users.len());
    for (a, c) in candidates.iter().enumerate() {
        for u in c {
            claims.entry(*u).or_default().push(a);
        }
    }

    let outcomes: Vec<JoinOutcome> = candidates
        .iter()
        .enumerate()
        .map(|(a, c)| match c.as_slice() {
            [] => JoinOutcome::Unmatched,
            [u] => {
                let claimants = claims.get(u).map_or(&[][..], Vec::as_slice);
                if claimants.len() > 1 {
                    JoinOutcome::SharedUser {
                        user_id: users[*u].id.clone(),
                        accounts: claimants
                            .iter()
                            .filter(|x| **x != a)
                            .map(|x| accounts[*x].key.clone())
                            .collect(),
                    }
                } else {
                    JoinOutcome::Joined {
                        user: *u,
                        kind: users[*u].kind(),
                    }
                }
            }
            several => JoinOutcome::SeveralUsers {
                user_ids: several.iter().map(|u| users[*u].id.clone()).collect(),
            },
        })
        .collect();

    Joined {
        accounts: accounts
            .into_iter()
            .zip(outcomes)
            .map(|(mapped, outcome)| JoinedAccount { mapped, outcome })
            .collect(),
        users,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::mapping::{AddressProblem, JoinKey};
    use crate::model::SourceAccount;

    fn account(key: &str, keys: &[(CloudProperty, &str, bool)]) -> MappedAccount {
        MappedAccount {
            key: key.to_string(),
            mapping: "m".to_string(),
            also_in: vec![],
            account: SourceAccount {
                dn: format!("CN={key},OU=P,DC=x"),
                object_guid: None,
                consistency_guid: None,
                account_name: Some(key.to_string()),
                user_principal_name: None,
                display_name: None,
                mail: None,
                user_account_control: None,
                admin_count: false,
                member_of: vec![],
                password_changed: None,
                attributes: Default::default(),
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
        let o: Vec<_> = j.accounts.iter().map(|a| a.outcome.clone()).collect();
        assert_eq!(
            o,
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
            j.accounts[0].outcome,
            JoinOutcome::SeveralUsers {
                user_ids: vec!["u1".into(), "u2".into()]
            }
        );
        assert_eq!(
            j.accounts[1].outcome,
            JoinOutcome::SharedUser {
                user_id: "u3".into(),
                accounts: vec!["c".into()]
            }
        );
        assert_eq!(
            j.accounts[2].outcome,
            JoinOutcome::SharedUser {
                user_id: "u3".into(),
                accounts: vec!["b".into()]
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
            j.accounts
                .iter()
                .all(|a| matches!(a.outcome, JoinOutcome::Joined { .. }))
        );
        // Generous bound for an unoptimized test build on a shared machine; the release
        // build is far below a second.
        assert!(took.as_secs() < 10, "join took {took:?}");
    }
}
