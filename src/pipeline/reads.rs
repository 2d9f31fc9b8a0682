//! Reading both sides for a run: in full, or only what changed since the last run (AD
//! `uSNChanged` on the same DC, LDAP `entryCSN`, Graph `/users/delta`) applied to the
//! snapshot the state store keeps of each side, with a full read on a schedule and whenever
//! a change mark cannot be trusted.
//!
//! [`observe`] gives every account and every user (the `plan` command, and a run that must
//! see everyone): an incremental read only changes how they are obtained. A run asks for
//! [`observe_changes`] instead: when the indexes are of the same inputs, it gives only the
//! changes (a full read is compared with the snapshot page by page as it comes, and only
//! what differs is kept), and the run plans the accounts they touch (`pipeline::incremental`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::{ControlFlow, Range};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::incremental::Seeds;
use super::{CLOUD_SIDE, Error, Inputs, Observed, SNAPSHOT_FORMAT, lock, source_side};
use crate::cloud::{self, Cloud};
use crate::mapping::Search;
use crate::model::{AccountKey, Anchor, CloudUser, Dn, SourceAccount};
use crate::plan::Tenant;
use crate::source::{self, Directory, Position, Read};
use crate::state::Store;

/// `[reads]`: how a run reads both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reads {
    /// Read only what changed since the last run, applied to the snapshot in the state
    /// store. Off: every run reads both sides in full.
    pub incremental: bool,
    /// Hours after the last full read of a side when the next run reads it in full again
    /// (the scheduled full reconcile). It catches what change marks never show: accounts
    /// deleted or moved out of the base DN, and AD group membership, whose changes move no
    /// mark on the member (accounts about to be written are read again anyway).
    pub full_every_hours: u32,
}

impl Default for Reads {
    fn default() -> Self {
        Reads {
            incremental: true,
            full_every_hours: 24,
        }
    }
}

/// The stored mark of one directory search.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SourceMark {
    fingerprint: String,
    position: Position,
    full_at: jiff::Timestamp,
}

/// The stored mark of the cloud's users.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CloudMark {
    fingerprint: String,
    delta_link: String,
    full_at: jiff::Timestamp,
    users: usize,
}

/// How one side was read, and what the snapshot needs to match it.
#[derive(Debug)]
enum Update<T> {
    /// Read in full: the snapshot is replaced by these rows of [`Observed`].
    Full { rows: Range<usize> },
    /// Read by changes: these rows are written and these keys deleted.
    Changes {
        put: Vec<(String, T)>,
        delete: Vec<String>,
    },
}

/// One directory search's part of a refresh.
#[derive(Debug)]
struct SourceUpdate {
    side: String,
    /// The search's mapping.
    mapping: String,
    /// Every account of this search in [`Observed::found`] (when the read gives everyone).
    rows: Range<usize>,
    update: Update<SourceAccount>,
    /// Read in full (whether compared page by page or held in [`Observed::found`]), and how
    /// many accounts the read found.
    read_full: bool,
    rows_read: usize,
    mark: Option<SourceMark>,
    /// Why no mark is kept, when the directory cannot tell its changes (for `status`).
    incremental_off: Option<String>,
}

/// What is stored for a search whose directory cannot tell its changes: when it was last
/// read (in full, as every read of it is) and why. No [`SourceMark`] decodes from it, so the
/// next read is full too.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NoMark {
    full_at: jiff::Timestamp,
    incremental_off: String,
}

/// What a read changes in the state store's snapshot and watermarks; written by
/// [`persist`] (never by `plan`, which writes nothing).
#[derive(Debug)]
pub struct Refresh {
    sources: Vec<SourceUpdate>,
    cloud: Update<CloudUser>,
    cloud_mark: Option<CloudMark>,
    /// The indexes: rebuilt from everyone read (with the fingerprint of the inputs they are
    /// for), kept up to date with the changes, or not kept (incremental reads off).
    index: IndexUpdate,
}

/// What [`persist`] does to the indexes.
#[derive(Debug)]
enum IndexUpdate {
    Rebuild { fingerprint: String },
    Changes,
    Off,
}

impl Refresh {
    /// Whether any directory search was read by its changes (then the accounts about to be
    /// written are read again before any write).
    pub fn source_incremental(&self) -> bool {
        self.sources.iter().any(|s| !s.read_full)
    }

    /// Whether every directory search was read in full and found nothing: then the read
    /// must not be saved (it would empty the snapshot) when the store knows accounts.
    pub fn found_nothing_in_full(&self) -> bool {
        self.sources.iter().all(|s| s.read_full && s.rows_read == 0)
    }

    /// The accounts (keys) and users (ids) read changed or gone.
    pub fn changed(&self) -> (Vec<&str>, Vec<&str>) {
        let mut accounts = Vec::new();
        for source in &self.sources {
            if let Update::Changes { put, delete } = &source.update {
                accounts.extend(put.iter().map(|(k, _)| k.as_str()));
                accounts.extend(delete.iter().map(String::as_str));
            }
        }
        let mut users = Vec::new();
        if let Update::Changes { put, delete } = &self.cloud {
            users.extend(put.iter().map(|(k, _)| k.as_str()));
            users.extend(delete.iter().map(String::as_str));
        }
        (accounts, users)
    }
}

/// How a run read, for the log and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReadSummary {
    /// Directory searches read in full / by their changes.
    pub searches_full: usize,
    pub searches_incremental: usize,
    /// Directory entries the server returned.
    pub entries_read: usize,
    /// Whether Graph's users were read by `/users/delta`.
    pub cloud_incremental: bool,
    /// Users Graph returned (all of them, or the changed and removed ones).
    pub users_read: usize,
}

/// Where one side's reads stand, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadState {
    /// `cloud:users`, or `source:{mapping}:{base DN}`.
    pub side: String,
    /// Rows of the snapshot the next incremental read applies its changes to.
    pub rows: usize,
    /// When the side was last read in full.
    pub last_full_read: Option<jiff::Timestamp>,
    /// When the scheduled full read is due (`[reads] full_every_hours` after the last one).
    pub full_read_due: Option<jiff::Timestamp>,
    /// Why every read of this side is full (the directory cannot tell its changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incremental_off: Option<String>,
}

/// Where every side's reads stand: its snapshot and its last and next full read.
pub fn read_states(store: &Store, reads: &Reads) -> Result<Vec<ReadState>, crate::state::Error> {
    let every = jiff::SignedDuration::from_hours(i64::from(reads.full_every_hours));
    let mut out = Vec::new();
    for (side, value) in store.watermarks()? {
        if side != CLOUD_SIDE && !side.starts_with("source:") {
            continue;
        }
        let stored = serde_json::from_str::<serde_json::Value>(&value).ok();
        let last_full_read = stored
            .as_ref()
            .and_then(|v| v.get("full_at")?.as_str()?.parse::<jiff::Timestamp>().ok());
        let incremental_off = stored
            .as_ref()
            .and_then(|v| Some(v.get("incremental_off")?.as_str()?.to_string()));
        out.push(ReadState {
            rows: store.snapshot_len(&side)?,
            full_read_due: last_full_read
                .filter(|_| incremental_off.is_none())
                .and_then(|t| t.checked_add(every).ok()),
            last_full_read,
            incremental_off,
            side,
        });
    }
    Ok(out)
}

/// Changes when what a search reads changes: then its snapshot is of something else.
fn source_fingerprint(inputs: &Inputs, search: &Search) -> String {
    let mut attributes = search.attributes.clone();
    attributes.sort();
    let mut h = Sha256::new();
    for part in [
        SNAPSHOT_FORMAT,
        inputs.read_identity.as_str(),
        search.base_dn.as_str(),
        search.filter.as_str(),
        attributes.join(",").as_str(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("{:x}", h.finalize())
}

/// Whether the plan needs the users' `signInActivity`, which only a full read returns.
fn signs_in(inputs: &Inputs) -> bool {
    inputs.policy.randomize_password == crate::plan::RandomizeWhen::AfterSignIn
}

fn cloud_fingerprint(inputs: &Inputs) -> String {
    let mut h = Sha256::new();
    h.update(SNAPSHOT_FORMAT.as_bytes());
    h.update([0]);
    h.update(inputs.read_identity.as_bytes());
    h.update([0]);
    h.update(crate::cloud::graph::USER_SELECT.as_bytes());
    h.update([0]);
    // `signInActivity` is not tracked by `/users/delta`: with `after_sign_in` every run
    // reads the users in full (see `read`).
    h.update([u8::from(signs_in(inputs))]);
    format!("{:x}", h.finalize())
}

/// Whether a stored mark may be read from: incremental reads on, not forced full, the same
/// fingerprint, and the last full read recent enough.
fn usable(
    inputs: &Inputs,
    fingerprint: &str,
    stored: &str,
    full_at: jiff::Timestamp,
    now: jiff::Timestamp,
) -> bool {
    let every = jiff::SignedDuration::from_hours(i64::from(inputs.reads.full_every_hours));
    inputs.reads.incremental
        && !inputs.force_full_read
        && fingerprint == stored
        && now.duration_since(full_at) < every
        && now >= full_at
}

fn decode<T: for<'de> Deserialize<'de>>(store: &Store, name: &str) -> Result<Option<T>, Error> {
    // A mark that does not decode (written by another version) only costs a full read.
    Ok(store
        .watermark(name)?
        .and_then(|text| serde_json::from_str(&text).ok()))
}

/// Reads the directory (every mapping's searches, one after the other) and Graph (users and
/// verified domains) at the same time, each side in full or by its changes; gives every
/// account and every user (changes are applied to the stored snapshot).
pub async fn observe<D: Directory + Sync, C: Cloud + Sync>(
    inputs: &Inputs,
    directory: &D,
    cloud: &C,
    store: &std::sync::Mutex<Store>,
) -> Result<Observed, Error> {
    read(inputs, directory, cloud, store, false).await
}

/// [`observe`], but when the indexes are of these inputs, gives only the changes
/// ([`Observed::partial`]): a side read by its changes gives them, and a side read in full
/// is compared with its snapshot page by page as it comes. Nothing is
/// held or decoded whole.
pub async fn observe_changes<D: Directory + Sync, C: Cloud + Sync>(
    inputs: &Inputs,
    directory: &D,
    cloud: &C,
    store: &std::sync::Mutex<Store>,
) -> Result<Observed, Error> {
    read(inputs, directory, cloud, store, true).await
}

async fn read<D: Directory + Sync, C: Cloud + Sync>(
    inputs: &Inputs,
    directory: &D,
    cloud: &C,
    store: &std::sync::Mutex<Store>,
    changes_only: bool,
) -> Result<Observed, Error> {
    let now = jiff::Timestamp::now();
    let searches = inputs.mappings.searches();
    let (source_marks, cloud_mark) = {
        let store = lock(store);
        let mut marks = Vec::new();
        for search in &searches {
            let fingerprint = source_fingerprint(inputs, search);
            let mark: Option<SourceMark> = decode(&store, &source_side(search))?;
            let mark =
                mark.filter(|m| usable(inputs, &fingerprint, &m.fingerprint, m.full_at, now));
            marks.push((fingerprint, mark));
        }
        let fingerprint = cloud_fingerprint(inputs);
        let mark: Option<CloudMark> = decode(&store, CLOUD_SIDE)?;
        let mark = mark.filter(|m| {
            !signs_in(inputs) && usable(inputs, &fingerprint, &m.fingerprint, m.full_at, now)
        });
        (marks, (fingerprint, mark))
    };
    // The verified domains first: with them, whether the indexes are of these inputs.
    let verified_domains: Vec<String> = match &inputs.verified_domains {
        Some(list) => list.iter().map(|d| d.to_ascii_lowercase()).collect(),
        None => cloud.verified_domains().await?,
    };
    let fingerprint = super::incremental::fingerprint(inputs, &verified_domains);
    // Only the changes are given (`partial`) when the indexes are of these inputs: a side
    // read by its changes gives them, and a side read in full is compared with the snapshot
    // as its pages come, so that it gives its changes too and is never held whole.
    let partial = changes_only
        && inputs.reads.incremental
        && lock(store)
            .watermark(super::incremental::INDEX_MARK)?
            .as_deref()
            == Some(fingerprint.as_str());

    let read_source = async {
        let mut reads = Vec::new();
        for (search, (_, mark)) in searches.iter().zip(&source_marks) {
            let scope = search.scope();
            let since = mark.as_ref().map(|m| &m.position);
            let read = if partial {
                let side = source_side(search);
                let mut compare = Compare::begin(store, &side)?;
                let read = directory.read_pages(&scope, since, &mut compare).await;
                compare.finish(read)?
            } else {
                (directory.read(&scope, since).await?, Vec::new())
            };
            reads.push(read);
        }
        Ok::<_, Error>(reads)
    };
    let read_cloud = async {
        let (fingerprint, mark) = &cloud_mark;
        let compare = partial.then_some(store);
        if let Some(mark) = mark {
            match cloud.users_since(&mark.delta_link, mark.users).await {
                Ok(changes) => {
                    return Ok(CloudRead::Changes(changes, mark.clone()));
                }
                Err(e) if e.resync_required() => {
                    tracing::warn!(error = %e, "Graph asks for a full read of the users; reading them all");
                }
                // Not for this Graph root: dropped, and replaced by the full read's link.
                Err(e) if e.stored_link_unusable() => {
                    tracing::warn!(error = %e, "The stored delta link is dropped; reading every user.");
                }
                Err(e) => return Err(e.into()),
            }
        }
        full_cloud_read(cloud, fingerprint, now, compare).await
    };
    let (reads, cloud_read) = tokio::join!(read_source, read_cloud);
    let reads = reads?;
    let cloud_read = cloud_read?;
    let index = if !inputs.reads.incremental {
        IndexUpdate::Off
    } else if partial {
        IndexUpdate::Changes
    } else {
        IndexUpdate::Rebuild { fingerprint }
    };

    let mut summary = ReadSummary::default();
    let mut found: Vec<(String, SourceAccount)> = Vec::new();
    let mut sources = Vec::new();
    for ((search, (fingerprint, mark)), (read, differ)) in
        searches.iter().zip(source_marks).zip(reads)
    {
        let side = source_side(search);
        // Changes need the snapshot they apply to; one that no longer decodes (written by
        // another version) means this search is read again in full.
        let (read, rows) = match read {
            Read::Changes { .. } if partial => (read, Vec::new()),
            Read::Changes { .. } => {
                let loaded = decoded(lock(store).snapshot(&side))?;
                match loaded {
                    Some(rows) => (read, rows),
                    None => (directory.read(&search.scope(), None).await?, Vec::new()),
                }
            }
            full => (full, Vec::new()),
        };
        let new_mark = |position: Option<Position>, full_at| {
            position.map(|position| SourceMark {
                fingerprint: fingerprint.clone(),
                position,
                full_at,
            })
        };
        match read {
            Read::Full {
                accounts,
                position,
                fell_back,
            } => {
                if let Some(why) = &fell_back {
                    tracing::warn!(mapping = %search.mapping, base = %search.base_dn, %why, "reading the directory in full");
                }
                let mark = new_mark(position, now);
                let incremental_off = fell_back.filter(|_| mark.is_none());
                let start = found.len();
                // Compared page by page: only what differs, as a read of the changes gives.
                // Otherwise held whole, in `found`.
                let (update, rows_read) = if partial {
                    let (delete, rows_read) = lock(store).not_read(&side)?;
                    tracing::info!(mapping = %search.mapping, base = %search.base_dn, read = "full", accounts = rows_read, changed = differ.len(), departed = delete.len(), "read the directory");
                    let update = Update::Changes {
                        put: differ,
                        delete,
                    };
                    (update, rows_read)
                } else {
                    tracing::info!(mapping = %search.mapping, base = %search.base_dn, read = "full", accounts = accounts.len(), "read the directory");
                    let rows_read = accounts.len();
                    found.extend(accounts.into_iter().map(|a| (search.mapping.clone(), a)));
                    let update = Update::Full {
                        rows: start..found.len(),
                    };
                    (update, rows_read)
                };
                summary.searches_full += 1;
                summary.entries_read += rows_read;
                sources.push(SourceUpdate {
                    side,
                    mapping: search.mapping.clone(),
                    rows: start..found.len(),
                    update,
                    read_full: true,
                    rows_read,
                    mark,
                    incremental_off,
                });
            }
            Read::Changes {
                changed,
                departed,
                position,
            } => {
                summary.searches_incremental += 1;
                // Departed entries count when known: an AD read also lists every user
                // deleted or moved anywhere in the domain since the mark (source::deleted).
                summary.entries_read += changed.len();
                let rows_read = changed.len();
                let full_at = mark.map(|m| m.full_at).unwrap_or(now);
                let start = found.len();
                let (put, delete) = if partial {
                    // Only the changes: each compared with its stored row, none decoded whole.
                    let store = lock(store);
                    let mut delete = Vec::new();
                    for gone in departed {
                        let key =
                            AccountKey::from_parts(gone.anchor.as_ref(), &gone.dn).to_string();
                        if store.snapshot_row::<SourceAccount>(&side, &key)?.is_some() {
                            delete.push(key);
                        }
                    }
                    let mut put: Vec<(String, SourceAccount)> = Vec::new();
                    for account in changed {
                        let key = AccountKey::of(&account).to_string();
                        delete.retain(|k| *k != key);
                        put.retain(|(k, _)| *k != key);
                        if store.snapshot_row::<SourceAccount>(&side, &key)?.as_ref()
                            != Some(&account)
                        {
                            put.push((key, account));
                        }
                    }
                    tracing::info!(mapping = %search.mapping, base = %search.base_dn, read = "changes", changed = put.len(), departed = delete.len(), "read the directory");
                    (put, delete)
                } else {
                    let mut merged: BTreeMap<String, SourceAccount> = rows.into_iter().collect();
                    let mut delete = Vec::new();
                    for gone in departed {
                        let key =
                            AccountKey::from_parts(gone.anchor.as_ref(), &gone.dn).to_string();
                        if merged.remove(&key).is_some() {
                            delete.push(key);
                        }
                    }
                    let mut put = Vec::new();
                    for account in changed {
                        let key = AccountKey::of(&account).to_string();
                        if merged.get(&key) != Some(&account) {
                            put.push((key.clone(), account.clone()));
                        }
                        merged.insert(key, account);
                    }
                    tracing::info!(mapping = %search.mapping, base = %search.base_dn, read = "changes", changed = put.len(), departed = delete.len(), accounts = merged.len(), "read the directory");
                    found.extend(merged.into_values().map(|a| (search.mapping.clone(), a)));
                    (put, delete)
                };
                summary.entries_read += delete.len();
                sources.push(SourceUpdate {
                    side,
                    mapping: search.mapping.clone(),
                    rows: start..found.len(),
                    update: Update::Changes { put, delete },
                    read_full: false,
                    rows_read,
                    mark: new_mark(Some(position), full_at),
                    incremental_off: None,
                });
            }
        }
    }

    // As for the directory: changes need a snapshot that decodes, or the users are read whole.
    let (cloud_read, cloud_rows) = match cloud_read {
        CloudRead::Changes(..) if partial => (cloud_read, Vec::new()),
        CloudRead::Changes(..) => {
            let loaded = decoded(lock(store).snapshot(CLOUD_SIDE))?;
            match loaded {
                Some(rows) => (cloud_read, rows),
                None => (
                    full_cloud_read(cloud, &cloud_mark.0, now, None).await?,
                    Vec::new(),
                ),
            }
        }
        full => (full, Vec::new()),
    };
    let (users, cloud, cloud_mark) = match cloud_read {
        CloudRead::Compared(put, mark) => {
            let (delete, users) = lock(store).not_read(CLOUD_SIDE)?;
            tracing::info!(
                read = "full",
                users,
                changed = put.len(),
                removed = delete.len(),
                "read Microsoft Graph"
            );
            summary.users_read = users;
            (Vec::new(), Update::Changes { put, delete }, mark)
        }
        CloudRead::Full(users, mark) => {
            tracing::info!(read = "full", users = users.len(), "read Microsoft Graph");
            summary.users_read = users.len();
            let rows = 0..users.len();
            (users, Update::Full { rows }, mark)
        }
        CloudRead::Changes(changes, mark) if partial => {
            summary.cloud_incremental = true;
            summary.users_read = changes.changed.len() + changes.removed.len();
            let UserChanges { put, delete, users } = user_changes(
                &lock(store),
                changes.changed,
                changes.removed,
                &changes.roles,
                mark.users,
            )?;
            tracing::info!(
                read = "changes",
                changed = put.len(),
                removed = delete.len(),
                users,
                "read Microsoft Graph"
            );
            let mark = CloudMark {
                delta_link: changes.delta_link,
                users,
                ..mark
            };
            (Vec::new(), Update::Changes { put, delete }, Some(mark))
        }
        CloudRead::Changes(changes, mark) => {
            summary.cloud_incremental = true;
            summary.users_read = changes.changed.len() + changes.removed.len();
            let mut merged: HashMap<String, CloudUser> = cloud_rows.into_iter().collect();
            let mut delete = Vec::new();
            for id in changes.removed {
                if merged.remove(&id).is_some() {
                    delete.push(id);
                }
            }
            // Rows to write: users the delta returned changed, and users whose roles changed.
            let mut touched = std::collections::HashSet::new();
            for user in changes.changed {
                if merged.get(&user.id) != Some(&user) {
                    touched.insert(user.id.clone());
                }
                merged.insert(user.id.clone(), user);
            }
            // Role membership is read whole every run: it changes users the delta does not.
            let mut users: Vec<CloudUser> = merged.into_values().collect();
            for user in &mut users {
                let roles = changes.roles.get(&user.id).cloned().unwrap_or_default();
                if user.roles != roles {
                    user.roles = roles;
                    touched.insert(user.id.clone());
                }
            }
            users.sort_by(|a, b| a.id.cmp(&b.id));
            let put: Vec<(String, CloudUser)> = users
                .iter()
                .filter(|u| touched.contains(&u.id))
                .map(|u| (u.id.clone(), u.clone()))
                .collect();
            tracing::info!(
                read = "changes",
                changed = put.len(),
                removed = delete.len(),
                users = users.len(),
                "read Microsoft Graph"
            );
            let mark = CloudMark {
                delta_link: changes.delta_link,
                users: users.len(),
                ..mark
            };
            (users, Update::Changes { put, delete }, Some(mark))
        }
    };
    tracing::info!(
        searches_full = summary.searches_full,
        searches_incremental = summary.searches_incremental,
        entries_read = summary.entries_read,
        cloud_incremental = summary.cloud_incremental,
        users_read = summary.users_read,
        "read both sides"
    );
    Ok(Observed {
        found,
        users,
        tenant: Tenant {
            verified_domains,
            other_addresses: Vec::new(),
        },
        refresh: Refresh {
            sources,
            cloud,
            cloud_mark,
            index,
        },
        summary,
        partial,
    })
}

/// The users to write and the ids to delete for a delta read, each compared with its stored
/// row, and how many users there are now. Role membership is read whole every run: a user
/// whose roles changed is written too (the stored role holders are in the index).
fn user_changes(
    store: &Store,
    changed: Vec<CloudUser>,
    removed: Vec<String>,
    roles: &HashMap<String, Vec<String>>,
    known: usize,
) -> Result<UserChanges, Error> {
    let mut users = known;
    let mut delete = Vec::new();
    for id in removed {
        if store.snapshot_row::<CloudUser>(CLOUD_SIDE, &id)?.is_some() {
            users = users.saturating_sub(1);
            delete.push(id);
        }
    }
    let mut put: BTreeMap<String, CloudUser> = BTreeMap::new();
    for mut user in changed {
        user.roles = roles.get(&user.id).cloned().unwrap_or_default();
        delete.retain(|d| *d != user.id);
        let stored = store.snapshot_row::<CloudUser>(CLOUD_SIDE, &user.id)?;
        if stored.is_none() && !put.contains_key(&user.id) {
            users += 1;
        }
        if stored.as_ref() != Some(&user) {
            put.insert(user.id.clone(), user);
        } else {
            put.remove(&user.id);
        }
    }
    let mut holders: std::collections::BTreeSet<String> = roles.keys().cloned().collect();
    holders.extend(super::incremental::role_holders(store)?);
    for id in holders {
        if put.contains_key(&id) || delete.contains(&id) {
            continue;
        }
        let Some(mut user) = store.snapshot_row::<CloudUser>(CLOUD_SIDE, &id)? else {
            continue;
        };
        let now = roles.get(&id).cloned().unwrap_or_default();
        if user.roles != now {
            user.roles = now;
            put.insert(id, user);
        }
    }
    Ok(UserChanges {
        put: put.into_iter().collect(),
        delete,
        users,
    })
}

/// What a delta read of the users changes in the snapshot.
struct UserChanges {
    /// Users to write, by id.
    put: Vec<(String, CloudUser)>,
    /// Ids to delete.
    delete: Vec<String>,
    /// How many users there are now.
    users: usize,
}

/// Snapshot rows, or `None` (with a warning) when they do not decode.
fn decoded<T>(
    rows: Result<Vec<(String, T)>, crate::state::Error>,
) -> Result<Option<Vec<(String, T)>>, Error> {
    match rows {
        Ok(rows) => Ok(Some(rows)),
        Err(crate::state::Error::Value(why)) => {
            tracing::warn!(%why, "the stored snapshot does not decode; reading in full");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Every user (or, with `compare`, the users that differ from the snapshot, compared page by
/// page as they come), and
/// the delta link the next run reads the changes from. The link is taken before the read:
/// what changes during it is read again next time.
async fn full_cloud_read<C: Cloud + Sync>(
    cloud: &C,
    fingerprint: &str,
    now: jiff::Timestamp,
    compare: Option<&std::sync::Mutex<Store>>,
) -> Result<CloudRead, Error> {
    let link = match cloud.delta_link().await {
        Ok(link) => link,
        Err(e) => {
            tracing::warn!(error = %e, "no delta link for the users: the next run reads them in full too");
            None
        }
    };
    let mark = |users: usize| {
        link.map(|delta_link| CloudMark {
            fingerprint: fingerprint.to_string(),
            delta_link,
            full_at: now,
            users,
        })
    };
    let Some(store) = compare else {
        let users = cloud.users().await?;
        let mark = mark(users.len());
        return Ok(CloudRead::Full(users, mark));
    };
    let mut compare = Compare::begin(store, CLOUD_SIDE)?;
    let count = cloud
        .users_pages(&mut |page| compare.take(page.into_iter().map(|u| (u.id.clone(), u))))
        .await;
    let (count, differ) = compare.finish(count)?;
    Ok(CloudRead::Compared(differ, mark(count)))
}

/// One side's full read compared with its snapshot page by page as it comes
/// (`Store::compare_page`), keeping only the rows that differ; the first error of the
/// store stops the read and is the one returned.
struct Compare<'a, T> {
    store: &'a std::sync::Mutex<Store>,
    side: &'a str,
    differ: Vec<(String, T)>,
    error: Option<crate::state::Error>,
}

impl<'a, T: Serialize> Compare<'a, T> {
    fn begin(store: &'a std::sync::Mutex<Store>, side: &'a str) -> Result<Self, Error> {
        lock(store).compare_begin(side)?;
        Ok(Compare {
            store,
            side,
            differ: Vec::new(),
            error: None,
        })
    }

    /// Compares one page; `Break` when the store failed.
    fn take(&mut self, rows: impl IntoIterator<Item = (String, T)>) -> ControlFlow<()> {
        match lock(self.store).compare_page(self.side, rows) {
            Ok(rows) => {
                self.differ.extend(rows);
                ControlFlow::Continue(())
            }
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }

    /// What the read gave, with the rows that differ. The store's error comes first: it
    /// is why the read stopped.
    fn finish<R, E: Into<Error>>(self, read: Result<R, E>) -> Result<(R, Vec<(String, T)>), Error> {
        if let Some(e) = self.error {
            return Err(e.into());
        }
        Ok((read.map_err(Into::into)?, self.differ))
    }
}

impl source::Pages for Compare<'_, SourceAccount> {
    fn page(&mut self, accounts: Vec<SourceAccount>) -> ControlFlow<()> {
        self.take(
            accounts
                .into_iter()
                .map(|account| (AccountKey::of(&account).to_string(), account)),
        )
    }

    fn restart(&mut self) {
        self.differ.clear();
        if let Err(e) = lock(self.store).compare_begin(self.side) {
            self.error.get_or_insert(e);
        }
    }
}

/// What the cloud read returned.
enum CloudRead {
    Full(Vec<CloudUser>, Option<CloudMark>),
    /// Every user compared with the snapshot as the pages came: those that differ.
    Compared(Vec<(String, CloudUser)>, Option<CloudMark>),
    Changes(cloud::UserChanges, CloudMark),
}

/// Writes what a read changed into the snapshot, its indexes and the watermarks, in one
/// transaction: after a crash the snapshot and its marks agree, and the next run reads from
/// there. A full read writes only the rows that differ from the stored ones. Every account
/// the change may touch (`seeds`, followed through the index before and after the write) is
/// marked unsettled in the same transaction, so a run stopped after it still plans them.
pub fn persist(
    store: &std::sync::Mutex<Store>,
    inputs: &Inputs,
    observed: &Observed,
    seeds: &mut Seeds,
) -> Result<(), Error> {
    let refresh = &observed.refresh;
    let mut store = lock(store);
    store.transaction(|s| {
        // Per search, the keys written and the keys deleted.
        let mut source_changes = Vec::with_capacity(refresh.sources.len());
        for source in &refresh.sources {
            let change = match &source.update {
                Update::Full { rows } => {
                    let found = observed.found.get(rows.clone()).unwrap_or_default();
                    s.replace_snapshot(
                        &source.side,
                        found
                            .iter()
                            .map(|(_, account)| (AccountKey::of(account).to_string(), account)),
                    )?
                }
                Update::Changes { put, delete } => {
                    for key in delete {
                        s.delete_snapshot(&source.side, key)?;
                    }
                    for (key, account) in put {
                        s.put_snapshot(&source.side, key, account)?;
                    }
                    (put.iter().map(|(k, _)| k.clone()).collect(), delete.clone())
                }
            };
            source_changes.push(change);
            match (&source.mark, &source.incremental_off) {
                (Some(mark), _) => s.set_watermark(&source.side, &to_json(mark)?)?,
                (None, Some(why)) => {
                    let no_mark = NoMark {
                        full_at: jiff::Timestamp::now(),
                        incremental_off: why.clone(),
                    };
                    s.set_watermark(&source.side, &to_json(&no_mark)?)?
                }
                (None, None) => s.clear_watermark(&source.side)?,
            }
        }
        let cloud_change = match &refresh.cloud {
            Update::Full { rows } => s.replace_snapshot(
                CLOUD_SIDE,
                observed
                    .users
                    .get(rows.clone())
                    .unwrap_or_default()
                    .iter()
                    .map(|user| (user.id.clone(), user)),
            )?,
            Update::Changes { put, delete } => {
                for key in delete {
                    s.delete_snapshot(CLOUD_SIDE, key)?;
                }
                for (key, user) in put {
                    s.put_snapshot(CLOUD_SIDE, key, user)?;
                }
                (put.iter().map(|(k, _)| k.clone()).collect(), delete.clone())
            }
        };
        match &refresh.cloud_mark {
            Some(mark) => s.set_watermark(CLOUD_SIDE, &to_json(mark)?)?,
            None => s.clear_watermark(CLOUD_SIDE)?,
        }
        persist_index(
            s,
            &inputs.mappings,
            observed,
            &source_changes,
            &cloud_change,
            seeds,
        )
    })?;
    Ok(())
}

/// The keys (or ids) one side's write changed: written, deleted.
type Changed = (Vec<String>, Vec<String>);

/// The indexes' part of [`persist`], in its transaction. A rebuild for other inputs (the
/// fingerprint changed) rewrites every row and unsettles everyone; otherwise only the rows
/// of what the write changed are rewritten.
fn persist_index(
    s: &Store,
    mappings: &crate::mapping::MappingSet,
    observed: &Observed,
    source_changes: &[Changed],
    cloud_change: &Changed,
    seeds: &mut Seeds,
) -> Result<(), crate::state::Error> {
    use super::incremental::{INDEX_MARK, source_rows, user_rows};
    let refresh = &observed.refresh;
    let properties = super::incremental::join_properties(mappings);
    match &refresh.index {
        IndexUpdate::Off => {
            // Not kept while every read is full: the next incremental run rebuilds them.
            s.clear_watermark(INDEX_MARK)?;
            return Ok(());
        }
        IndexUpdate::Rebuild { fingerprint }
            if s.watermark(INDEX_MARK)?.as_deref() != Some(fingerprint.as_str()) =>
        {
            for source in &refresh.sources {
                s.clear_source_index(&source.side)?;
                let found = observed.found.get(source.rows.clone()).unwrap_or_default();
                for (key, rows) in source_rows(mappings, found.iter().map(|(m, a)| (m.as_str(), a)))
                {
                    s.put_source_index(&source.side, &key, &rows)?;
                    // Planned by the next incremental run unless a plan of it is applied.
                    s.unsettle([key.as_str()])?;
                }
            }
            s.clear_cloud_index()?;
            for user in &observed.users {
                s.put_cloud_index(&user.id, &user_rows(user, &properties))?;
            }
            s.set_watermark(INDEX_MARK, fingerprint)?;
            log_gone(s.mark_gone_by_index(jiff::Timestamp::now())?);
            return Ok(());
        }
        IndexUpdate::Rebuild { .. } | IndexUpdate::Changes => {}
    }
    // The indexes are of these inputs: only what changed moves, as for a read of the changes.
    for (written, deleted) in source_changes {
        seeds
            .accounts
            .extend(written.iter().chain(deleted).cloned());
    }
    let (written_users, deleted_users) = cloud_change;
    seeds
        .users
        .extend(written_users.iter().chain(deleted_users).cloned());
    // Before the write: the values changed from.
    seeds.gather(s)?;
    for (source, (written, deleted)) in refresh.sources.iter().zip(source_changes) {
        for key in written.iter().chain(deleted) {
            s.put_source_index(&source.side, key, &[])?;
        }
        let written: BTreeSet<&str> = written.iter().map(String::as_str).collect();
        let accounts: Vec<(&str, &SourceAccount)> = match &source.update {
            Update::Changes { put, .. } => put
                .iter()
                .map(|(_, a)| (source.mapping.as_str(), a))
                .collect(),
            Update::Full { rows } => observed
                .found
                .get(rows.clone())
                .unwrap_or_default()
                .iter()
                .filter(|(_, a)| written.contains(AccountKey::of(a).to_string().as_str()))
                .map(|(m, a)| (m.as_str(), a))
                .collect(),
        };
        for (key, rows) in source_rows(mappings, accounts.into_iter()) {
            s.put_source_index(&source.side, &key, &rows)?;
        }
    }
    for id in deleted_users {
        s.put_cloud_index(id, &[])?;
    }
    let written_users: BTreeSet<&str> = written_users.iter().map(String::as_str).collect();
    let users: Vec<&CloudUser> = match &refresh.cloud {
        Update::Changes { put, .. } => put.iter().map(|(_, u)| u).collect(),
        Update::Full { rows } => observed
            .users
            .get(rows.clone())
            .unwrap_or_default()
            .iter()
            .filter(|u| written_users.contains(u.id.as_str()))
            .collect(),
    };
    for user in users {
        s.put_cloud_index(&user.id, &user_rows(user, &properties))?;
    }
    // After the write: the values changed to.
    seeds.gather(s)?;
    let touched = seeds.touched(s)?;
    s.unsettle(touched.iter().map(String::as_str))?;
    log_gone(s.mark_gone_of(
        seeds.accounts.iter().map(String::as_str),
        jiff::Timestamp::now(),
    )?);
    Ok(())
}

/// Accounts that left the directory's scope (deleted, moved or filtered out) or came back
/// (docs/operations.md): marked with the index, in its transaction.
fn log_gone((left, back): (usize, usize)) {
    if left > 0 || back > 0 {
        tracing::info!(
            gone = left,
            back,
            "accounts left or came back to the directory's scope"
        );
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String, crate::state::Error> {
    serde_json::to_string(value).map_err(|e| crate::state::Error::Value(e.to_string()))
}

/// Reads again, from the directory, every account the plan is about to write (in pages, by
/// anchor: about one search per hundred accounts), and puts the
/// ones that differ from the snapshot into it. Returns how many differed: then the plan must
/// be computed again. Some changes move no change mark on the account (AD group membership
/// is a back link), and a protected account must never be written.
pub async fn confirm<D: Directory + Sync>(
    inputs: &Inputs,
    directory: &D,
    store: &std::sync::Mutex<Store>,
    plan: &crate::plan::Plan,
) -> Result<usize, Error> {
    let acting: std::collections::BTreeSet<&str> =
        plan.actions.iter().map(|a| a.account.as_str()).collect();
    let searches = inputs.mappings.searches();
    let targets: Vec<(&crate::plan::AccountOutcome, &Search)> = plan
        .accounts
        .iter()
        .filter(|a| acting.contains(a.key.as_str()))
        .filter_map(|account| {
            let dn = Dn::new(&account.dn);
            searches
                .iter()
                .find(|s| s.mapping == account.mapping && dn.is_under(&Dn::new(&s.base_dn)))
                .map(|search| (account, search))
        })
        .collect();
    // Per search: the accounts with an anchor are read again in pages, by anchor; the few
    // without one (keyed by DN) one by one.
    let mut differing = 0;
    for search in &searches {
        let mine: Vec<&crate::plan::AccountOutcome> = targets
            .iter()
            .filter(|(_, s)| std::ptr::eq(*s, search))
            .map(|(a, _)| *a)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let scope = search.scope();
        // The plan's keys were made from accounts read: an unreadable one has no anchor.
        let keys: Vec<Option<AccountKey>> = mine.iter().map(|a| a.key.parse().ok()).collect();
        let anchors: Vec<Anchor> = keys
            .iter()
            .filter_map(|k| k.as_ref()?.anchor().cloned())
            .collect();
        let mut fresh: HashMap<String, SourceAccount> = if anchors.is_empty() {
            HashMap::new()
        } else {
            directory
                .accounts_by_anchor(&scope, &anchors)
                .await?
                .into_iter()
                .map(|a| (AccountKey::of(&a).to_string(), a))
                .collect()
        };
        let side = source_side(search);
        for (account, key) in mine.into_iter().zip(&keys) {
            let now = match key.as_ref().and_then(AccountKey::anchor) {
                Some(_) => fresh.remove(&account.key),
                None => directory.account(&scope, &account.dn).await?,
            };
            let guard = lock(store);
            let stored: Option<SourceAccount> = guard.snapshot_row(&side, &account.key)?;
            if now == stored {
                continue;
            }
            differing += 1;
            tracing::info!(account = %account.key, dn = %account.dn, "the account changed without moving its change mark; planning again");
            // The index follows the snapshot, and the next plan considers the account (and,
            // through the index, what it touches).
            guard.put_source_index(&side, &account.key, &[])?;
            guard.unsettle([account.key.as_str()])?;
            match now {
                Some(now) => {
                    // A renamed account (its DN key changed) is written under its new key.
                    let key = AccountKey::of(&now).to_string();
                    if key != account.key {
                        guard.delete_snapshot(&side, &account.key)?;
                    }
                    guard.put_snapshot(&side, &key, &now)?;
                    let found = std::iter::once((search.mapping.as_str(), &now));
                    for (key, rows) in super::incremental::source_rows(&inputs.mappings, found) {
                        guard.put_source_index(&side, &key, &rows)?;
                    }
                    guard.unsettle([key.as_str()])?;
                }
                None => guard.delete_snapshot(&side, &account.key)?,
            }
        }
    }
    Ok(differing)
}
