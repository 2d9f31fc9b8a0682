//! Carrying an account's progress over to its new key, so that one account is never two.
//!
//! The state store keys an account by its anchor, or by its DN when it has none. Two things
//! change that key while the account lives on: a DN-keyed account is renamed or moved (its
//! DN changes), and an account first keyed by its DN gets an anchor (a directory whose anchor
//! attribute b2bsync did not read before, such as 389 Directory Server's `nsUniqueId`). Left
//! alone, the new key would start the lifecycle again: a second invitation, or a second
//! password randomization of an account already converted, and a stale row in `status`.
//!
//! An account read now whose key has no progress takes over the progress of a key the store
//! remembers but this read did not find (an orphan) when exactly one such orphan is the same
//! account: its DN key equals the account's DN, or it was joined to the same cloud user. An
//! ambiguous match (two orphans, or two accounts claiming one) carries nothing over: the
//! account then starts as any new account does, and its join and address checks still stand
//! between it and a write (an invitation already sent shows on the cloud user).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::join::Joined;
use crate::model::{AccountKey, Dn, Progress};

/// One account whose progress moves from the key the store remembers to its key now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    /// The key the store remembers (no account of this read has it).
    pub from: String,
    /// The account's key now.
    pub to: String,
    /// Why the two are one account.
    pub by: CarriedBy,
}

/// What makes the remembered key and the new one the same account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CarriedBy {
    /// The remembered key is the account's DN (the account now has an anchor).
    Dn,
    /// Both were joined to the same cloud user (a DN-keyed account renamed or moved).
    CloudUser,
}

/// The carries for this read: sorted by `to`, each orphan and each account at most once.
pub fn carry_over(joined: &Joined, progress: &BTreeMap<String, Progress>) -> Vec<Carried> {
    if progress.is_empty() {
        return Vec::new();
    }
    let current: BTreeSet<String> = joined.accounts.iter().map(|a| a.key.to_string()).collect();
    let orphans: Vec<(&String, &Progress)> = progress
        .iter()
        .filter(|(k, _)| !current.contains(k.as_str()))
        .collect();
    if orphans.is_empty() {
        return Vec::new();
    }
    // Every candidate pairing, then only those unique on both sides.
    let mut pairs: Vec<Carried> = Vec::new();
    for (account, outcome) in joined.iter() {
        let to = account.key.to_string();
        if progress.contains_key(&to) {
            continue;
        }
        let dn_key = AccountKey::Dn(Dn::new(&account.account.dn)).to_string();
        let by_dn: Vec<&String> = orphans
            .iter()
            .filter(|(k, _)| **k == dn_key)
            .map(|(k, _)| *k)
            .collect();
        let (candidates, by) = if by_dn.is_empty() {
            let Some(user_id) = joined.user(outcome).map(|u| u.id.as_str()) else {
                continue;
            };
            let same_user: Vec<&String> = orphans
                .iter()
                .filter(|(_, p)| p.cloud_id.as_deref() == Some(user_id))
                .map(|(k, _)| *k)
                .collect();
            (same_user, CarriedBy::CloudUser)
        } else {
            (by_dn, CarriedBy::Dn)
        };
        if let [from] = candidates.as_slice() {
            pairs.push(Carried {
                from: (*from).clone(),
                to,
                by,
            });
        }
    }
    // An orphan claimed by two accounts is ambiguous: neither takes it.
    let mut claims: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &pairs {
        *claims.entry(p.from.as_str()).or_default() += 1;
    }
    let contested: BTreeSet<String> = claims
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| k.to_string())
        .collect();
    pairs.retain(|p| !contested.contains(&p.from));
    pairs.sort_by(|a, b| a.to.cmp(&b.to));
    pairs
}

/// `progress` with each carried entry moved from its old key to its new one.
pub fn moved(
    progress: &BTreeMap<String, Progress>,
    carried: &[Carried],
) -> BTreeMap<String, Progress> {
    let mut out = progress.clone();
    for c in carried {
        if let Some(p) = out.remove(&c.from) {
            out.insert(c.to.clone(), p);
        }
    }
    out
}
