//! Plans proportional to the change: an incremental run plans only the accounts a change
//! can touch, against the state store's indexes (`state::index`), instead of decoding both
//! snapshots.
//!
//! An account's decision depends on its own rows (every search that holds it), the cloud
//! users its join keys match and the other accounts matching those users (the join's
//! conflicts), the cloud users holding its address and the other accounts mapping to it (the
//! uniqueness rules), its progress and the orphans whose progress may carry over to it, and
//! the run's inputs (mappings, policy, verified domains, `now`). So a run considers:
//!
//! * the accounts read changed or gone, and the users read changed or gone;
//! * every account sharing an address or a join value with one of them, before or after
//!   the change (the index is asked before and after the snapshot is written);
//! * every account whose plan is not settled: its last plan had actions, a warning or a
//!   state that moves with time (invited, awaiting sync, ...), or its progress changed
//!   since (a trigger on `accounts` marks it), or the run that planned it stopped before
//!   writing.
//!
//! For those, it loads their rows, the users they join or whose addresses they map to, and
//! the accounts joining those users or sharing those addresses, and runs the same pure
//! map, join and plan over that neighbourhood: each considered account sees exactly what a
//! full plan would show it, so its outcome is the full plan's. A change of the run's inputs
//! changes the index fingerprint: that run plans everyone (and rebuilds the indexes).

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::{Error, Inputs, lock};
use crate::join;
use crate::mapping::{self, CloudProperty, MappedAccount, MappingSet, eval::normalized_key};
use crate::model::{CloudUser, Lifecycle, Progress, SourceAccount};
use crate::plan::{self, AccountOutcome, Plan, Tenant};
use crate::state::{IndexRow, Store};

/// The watermark holding the fingerprint of what the indexes were written for.
pub(super) const INDEX_MARK: &str = "index";

/// Bumped when the index rows change meaning: the next run plans everyone and rewrites them.
const INDEX_FORMAT: &str = "1";

const ADDRESS: &str = "address";
const ROLES: &str = "roles";
const SCOPE: &str = "scope";

/// The cloud properties some mapping joins by (the anchor always).
pub(super) fn join_properties(mappings: &MappingSet) -> BTreeSet<CloudProperty> {
    let mut properties = BTreeSet::from([CloudProperty::OnPremisesImmutableId]);
    for m in mappings.mappings() {
        if let Some(pair) = &m.join.cloud_only {
            properties.insert(pair.cloud);
        }
    }
    properties
}

/// What the indexes and the settled plans were made for: b2bsync's version, the mappings,
/// the policy, the invitation settings, the verified domains, the join properties and what
/// is read. A different fingerprint
/// means every account is planned again.
pub(super) fn fingerprint(inputs: &Inputs, verified_domains: &[String]) -> String {
    let mut h = Sha256::new();
    let mut part = |s: &str| {
        h.update(s.as_bytes());
        h.update([0]);
    };
    part(INDEX_FORMAT);
    part(super::SNAPSHOT_FORMAT);
    // Another version may plan differently: the first run after an upgrade plans everyone.
    part(env!("CARGO_PKG_VERSION"));
    part(&inputs.read_identity);
    for m in inputs.mappings.mappings() {
        part(&m.name);
        part(&m.fingerprint);
    }
    part(&serde_json::to_string(&inputs.policy).unwrap_or_default());
    part(&serde_json::to_string(&inputs.invitation).unwrap_or_default());
    let mut domains = verified_domains.to_vec();
    domains.sort();
    part(&domains.join(","));
    for p in join_properties(&inputs.mappings) {
        part(p.as_str());
    }
    format!("{:x}", h.finalize())
}

/// The index rows of a mapped (in-scope) account.
fn account_rows(m: &MappedAccount) -> Vec<IndexRow> {
    let mut rows = Vec::new();
    if let Ok(address) = &m.address {
        let key = plan::address_key(address);
        if !key.is_empty() {
            rows.push((ADDRESS.to_string(), key));
        }
    }
    for k in &m.join_keys {
        rows.push((k.property.as_str().to_string(), k.value.clone()));
    }
    if rows.is_empty() {
        rows.push((SCOPE.to_string(), String::new()));
    }
    rows
}

/// The index rows of accounts one search read, by key; out-of-scope accounts have none.
/// Mapped a few thousand at a time, so a full read is not held twice.
pub(super) fn source_rows<'a>(
    mappings: &MappingSet,
    found: impl Iterator<Item = (&'a str, &'a SourceAccount)>,
) -> Vec<(String, Vec<IndexRow>)> {
    const CHUNK: usize = 4096;
    let mut out = Vec::new();
    let mut chunk: Vec<(String, SourceAccount)> = Vec::with_capacity(CHUNK);
    let mut flush = |chunk: &mut Vec<(String, SourceAccount)>| {
        for m in mapping::map_accounts(mappings, std::mem::take(chunk)) {
            out.push((m.key.to_string(), account_rows(&m)));
        }
    };
    for (mapping, account) in found {
        chunk.push((mapping.to_string(), account.clone()));
        if chunk.len() == CHUNK {
            flush(&mut chunk);
        }
    }
    flush(&mut chunk);
    out
}

/// The index rows of a cloud user: the addresses it holds, its values of the join
/// properties, and whether it holds a role.
pub(super) fn user_rows(user: &CloudUser, properties: &BTreeSet<CloudProperty>) -> Vec<IndexRow> {
    let mut rows: Vec<IndexRow> = plan::held_addresses(user)
        .into_iter()
        .map(|a| (ADDRESS.to_string(), a))
        .collect();
    for p in properties {
        for v in join::property_values(user, *p) {
            let key = normalized_key(*p, v);
            if !key.is_empty() {
                rows.push((p.as_str().to_string(), key.into_owned()));
            }
        }
    }
    if !user.roles.is_empty() {
        rows.push((ROLES.to_string(), String::new()));
    }
    rows
}

/// The users holding a role, as the index knows them.
pub(super) fn role_holders(store: &Store) -> Result<Vec<String>, crate::state::Error> {
    store.users_with(ROLES, "")
}

/// What a change touches: accounts and users read changed, and the index rows (addresses,
/// join values) through which it reaches other accounts.
#[derive(Debug, Default, Clone)]
pub struct Seeds {
    pub accounts: BTreeSet<String>,
    pub users: BTreeSet<String>,
    rows: BTreeSet<IndexRow>,
}

impl Seeds {
    /// Adds the index rows of the seeds as the store holds them now: call it before and
    /// after the change is written, so both the old and the new values are followed.
    pub fn gather(&mut self, store: &Store) -> Result<(), crate::state::Error> {
        let is_join = |kind: &str| kind != ADDRESS && kind != ROLES && kind != SCOPE;
        for key in &self.accounts {
            for (kind, value) in store.source_index_of(key)? {
                if is_join(&kind) {
                    // The users this key matches: their other claimants are touched too.
                    for id in store.users_with(&kind, &value)? {
                        self.rows.extend(
                            store
                                .cloud_index_of(&id)?
                                .into_iter()
                                .filter(|(k, _)| is_join(k)),
                        );
                    }
                }
                self.rows.insert((kind, value));
            }
        }
        for id in &self.users {
            self.rows.extend(store.cloud_index_of(id)?);
        }
        Ok(())
    }

    /// Every account to plan: the seeds, the accounts sharing an address or a join value
    /// with them, and the accounts whose plan is not settled.
    pub fn considered(&self, store: &Store) -> Result<BTreeSet<String>, crate::state::Error> {
        let mut keys = self.touched(store)?;
        keys.extend(store.unsettled()?);
        Ok(keys)
    }

    /// The seeds and the accounts sharing an address or a join value with them: those whose
    /// plan a change may have moved.
    pub fn touched(&self, store: &Store) -> Result<BTreeSet<String>, crate::state::Error> {
        let mut keys = self.accounts.clone();
        for (kind, value) in &self.rows {
            if kind != ROLES && kind != SCOPE {
                keys.extend(store.accounts_with(kind, value)?);
            }
        }
        Ok(keys)
    }
}

/// Whether an account's outcome stays as it is until something it depends on changes: no
/// action, no warning, and a state that does not move with time.
pub fn settled(outcome: &AccountOutcome, has_actions: bool) -> bool {
    !has_actions
        && outcome.warnings.is_empty()
        && matches!(
            outcome.state,
            Lifecycle::Done | Lifecycle::Blocked | Lifecycle::Unmatched
        )
}

/// The rows of these accounts, from every search's snapshot, with the search's mapping.
fn rows_of<'k>(
    store: &Store,
    sides: &[(String, String)],
    keys: impl Iterator<Item = &'k String>,
) -> Result<Vec<(String, SourceAccount)>, Error> {
    let mut found = Vec::new();
    for key in keys {
        for (side, mapping) in sides {
            if let Some(account) = store.snapshot_row::<SourceAccount>(side, key)? {
                found.push((mapping.clone(), account));
            }
        }
    }
    Ok(found)
}

/// The plan of the considered accounts (those still in scope), computed over their
/// neighbourhood, with the progress it was computed from.
pub fn plan(
    store: &std::sync::Mutex<Store>,
    inputs: &Inputs,
    considered: &BTreeSet<String>,
    tenant: &Tenant,
    now: jiff::Timestamp,
) -> Result<(Plan, BTreeMap<String, Progress>), Error> {
    let store = lock(store);
    let sides: Vec<(String, String)> = inputs
        .mappings
        .searches()
        .iter()
        .map(|s| (super::source_side(s), s.mapping.clone()))
        .collect();
    let mut any = false;
    for (side, _) in &sides {
        any |= store.snapshot_has_rows(side)?;
    }
    if !any && store.progress_len()? > 0 {
        return Err(Error::EmptySource {
            known: store.progress_len()?,
        });
    }
    let core = mapping::map_accounts(
        &inputs.mappings,
        rows_of(&store, &sides, considered.iter())?,
    );

    // The users the considered accounts join or whose addresses they map to, and the
    // accounts that join those users or map to those addresses.
    let mut user_ids: BTreeSet<String> = BTreeSet::new();
    let mut neighbours: BTreeSet<String> = BTreeSet::new();
    for m in &core {
        for k in &m.join_keys {
            for id in store.users_with(k.property.as_str(), &k.value)? {
                for (kind, value) in store.cloud_index_of(&id)? {
                    if kind != ADDRESS && kind != ROLES {
                        neighbours.extend(store.accounts_with(&kind, &value)?);
                    }
                }
                user_ids.insert(id);
            }
        }
        if let Ok(address) = &m.address {
            let key = plan::address_key(address);
            user_ids.extend(store.users_with(ADDRESS, &key)?);
            neighbours.extend(store.accounts_with(ADDRESS, &key)?);
        }
    }
    let mut keys: BTreeSet<String> = core.iter().map(|m| m.key.to_string()).collect();
    drop(core);
    neighbours.retain(|k| !keys.contains(k));
    keys.extend(neighbours);
    let mapped = mapping::map_accounts(&inputs.mappings, rows_of(&store, &sides, keys.iter())?);
    let mut users = Vec::with_capacity(user_ids.len());
    for id in &user_ids {
        if let Some(user) = store.snapshot_row::<CloudUser>(super::CLOUD_SIDE, id)? {
            users.push(user);
        }
    }
    let orphans = store.orphans()?;
    let progress = store.progress_of(keys.iter().chain(&orphans).map(String::as_str))?;
    let in_scope = store.indexed_accounts()?;
    drop(store);

    let joined = join::join(mapped, users);
    let full = plan::plan(
        joined,
        &inputs.mappings,
        &progress,
        tenant,
        &inputs.policy,
        &inputs.invitation,
        now,
    );
    let kept = full
        .accounts
        .iter()
        .filter(|a| considered.contains(&a.key))
        .count();
    let plan = full.restrict(
        considered,
        in_scope.saturating_sub(kept),
        &inputs.mappings,
        now,
    );
    tracing::info!(
        considered = plan.accounts.len(),
        neighbourhood = keys.len(),
        unchanged = plan.summary.unchanged,
        "planned the accounts a change touches"
    );
    Ok((plan, progress))
}
