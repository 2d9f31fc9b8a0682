//! One pass of the pipeline, stage by stage: read both sides (in parallel, in full or by
//! their changes), map, join, plan, guard, apply, save. `plan`, `apply`, `run` and `check`
//! are built from these steps; the stages themselves live in their own modules.

#[cfg(test)]
mod equivalence;
pub mod incremental;
pub mod reads;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::apply::{self, Journal, Outcome};
use crate::cloud::{self, Cloud};
use crate::guard::{self, Limits, Verdict};
use crate::join;
use crate::mapping::{self, InvitationSettings, MappingSet};
use crate::model::{CloudUser, Progress, SourceAccount};
use crate::plan::{self, Plan, Policy, Tenant};
use crate::source::{self, Directory};
use crate::state::{RunLock, Store};

pub use reads::{ReadSummary, Reads, Refresh, observe, observe_changes, persist};

/// Why a run cannot proceed. Per-account problems are never errors: they are in the plan.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Mapping(#[from] mapping::Errors),
    #[error("reading the directory: {0}")]
    Source(#[from] source::Error),
    #[error("reading Microsoft Graph: {0}")]
    Cloud(#[from] cloud::Error),
    #[error("state store: {0}")]
    State(#[from] crate::state::Error),
    #[error("reconciling interrupted actions: {0}")]
    Reconcile(#[from] apply::reconcile::Error),
    #[error(
        "the directory returned no account in scope, but the state store knows {known}: refusing to treat that as `nothing to do`"
    )]
    EmptySource { known: usize },
}

impl Error {
    /// One line telling the admin what to do.
    pub fn help(&self) -> String {
        match self {
            Error::Mapping(_) => "fix the mapping file at the position shown; `b2bsync check` lists every problem".into(),
            Error::Source(e) => e.help(),
            Error::Cloud(e) => e.help(),
            Error::State(e) => e.help().to_string(),
            Error::Reconcile(e) => e.help(),
            Error::EmptySource { .. } => {
                "check the mapping's base DNs and filter and the service account's read rights; if the partners really are gone, move the state file aside".into()
            }
        }
    }
}

/// What the configuration decides besides the connections.
pub struct Inputs {
    pub mappings: MappingSet,
    pub limits: Limits,
    pub policy: Policy,
    pub invitation: InvitationSettings,
    /// Verified domains from the config, instead of reading them from Graph.
    pub verified_domains: Option<Vec<String>>,
    /// `[reads]`: incremental reads and the scheduled full read.
    pub reads: Reads,
    /// Read both sides in full this run, whatever the marks say (`--full`).
    pub force_full_read: bool,
    /// Names what is read (directory URL, Graph URL, tenant): when it changes, the stored
    /// snapshot is of something else and the next read is full.
    pub read_identity: String,
}

/// Both sides as read now.
pub struct Observed {
    /// Accounts in scope, each with the name of the mapping whose search found it (none
    /// when [`Observed::partial`]).
    pub found: Vec<(String, SourceAccount)>,
    /// Every cloud user (none when [`Observed::partial`]).
    pub users: Vec<CloudUser>,
    pub tenant: Tenant,
    /// What the read changes in the state store's snapshot ([`persist`] writes it).
    pub refresh: Refresh,
    pub summary: ReadSummary,
    /// Only the changes were read and kept (in `refresh`): the run plans the accounts they
    /// touch ([`incremental`]), not everyone.
    pub partial: bool,
}

impl Observed {
    /// Whether the read found no account in scope: everyone held was read and none found,
    /// or (only the changes given) every search was read in full and found none.
    pub fn found_no_one(&self) -> bool {
        if self.partial {
            self.refresh.found_nothing_in_full()
        } else {
            self.found.is_empty()
        }
    }
}

/// The pure middle: map, join, plan.
pub fn compute(
    observed: Observed,
    inputs: &Inputs,
    progress: &BTreeMap<String, Progress>,
    now: jiff::Timestamp,
) -> Result<Plan, Error> {
    if observed.found.is_empty() && !progress.is_empty() {
        return Err(Error::EmptySource {
            known: progress.len(),
        });
    }
    let mapped = mapping::map_accounts(&inputs.mappings, observed.found);
    let joined = join::join(mapped, observed.users);
    let plan = plan::plan(
        joined,
        &inputs.mappings,
        progress,
        &observed.tenant,
        &inputs.policy,
        &inputs.invitation,
        now,
    );
    log_decisions(&plan);
    Ok(plan)
}

/// One debug event per account: where it stands, where its actions take it, and why it is
/// held back. Cheap when debug is off (the level is checked once).
fn log_decisions(plan: &Plan) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let mut actions: BTreeMap<&str, usize> = BTreeMap::new();
    for action in &plan.actions {
        *actions.entry(action.account.as_str()).or_default() += 1;
    }
    for account in &plan.accounts {
        let reason = account.reasons.first().map(|r| r.reason.code());
        let detail = account.reasons.first().map(|r| r.message.as_str());
        let warning = account.warnings.first().map(|w| w.message.as_str());
        let actions = actions.get(account.key.as_str()).copied().unwrap_or(0);
        tracing::debug!(
            account = %account.name(),
            mapping = %account.mapping,
            state = %account.state,
            next = %account.next,
            actions,
            reason,
            detail,
            warning,
            "Plan decision."
        );
    }
}

/// What a run tells whoever shows its progress (the CLI's bar on a terminal). Nothing in
/// the run depends on who listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The run began: interrupted actions are settled and both sides are read.
    Reading,
    /// The plan passed the guard and is applied: this many actions.
    Applying { actions: usize },
    /// One action ended, done or failed (a skipped one never started).
    ActionEnded,
}

/// How a run ended, when it could proceed at all.
#[derive(Debug)]
pub enum RunEnd {
    /// The plan was applied: what each action did.
    Applied(Outcome),
    /// The reviewed plan no longer matches the fresh one: nothing was written.
    Stale,
    /// The plan is over a threshold: nothing was written.
    OverThreshold(Verdict),
}

/// What one `run` (or `apply`) did.
pub struct RunResult {
    /// The plan as computed now (for a stale reviewed plan: the fresh one).
    pub plan: Plan,
    pub end: RunEnd,
    pub reconciled: apply::reconcile::Reconciled,
}

/// One run that may write: it holds the run lock (a second run is refused, not queued) and
/// the run's record in the state store, from [`Session::begin`] to [`Session::finish`].
pub struct Session {
    store: std::sync::Mutex<Store>,
    run_id: String,
    // Released when the session is dropped, after the run's end is recorded.
    _lock: RunLock,
}

impl Session {
    /// Takes the lock beside the state store without waiting, opens the store and records
    /// the start of a run of `command`.
    pub fn begin(
        state_path: &std::path::Path,
        command: &str,
    ) -> Result<Session, crate::state::Error> {
        let lock = RunLock::acquire(state_path)?;
        let store = Store::open(state_path)?;
        let run_id = store.begin_run(command)?;
        Ok(Session {
            store: std::sync::Mutex::new(store),
            run_id,
            _lock: lock,
        })
    }

    /// The run's id (a UUIDv7).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The state store, for what the run does besides [`Session::run`] (a rollback).
    pub fn store(&self) -> &std::sync::Mutex<Store> {
        &self.store
    }

    /// Records the run's end: its exit code and summary. The lock is released after.
    pub fn finish(self, exit_code: i64, summary: &str) -> Result<(), crate::state::Error> {
        lock(&self.store).finish_run(&self.run_id, exit_code, summary)
    }

    /// Reconcile, read, plan, guard, apply and save: one scheduled run. `reviewed`, when
    /// given, is a plan an admin reviewed; it must match the fresh plan exactly (its
    /// fingerprint), or the run stops before any write. `allow_over_threshold` is the
    /// command line's override; `[limits] allow_over_threshold` is applied by the guard.
    #[allow(clippy::too_many_arguments)]
    pub async fn run<D: Directory + Sync, C: Cloud + Sync>(
        &self,
        inputs: &Inputs,
        directory: &D,
        cloud: &C,
        options: &apply::Options,
        allow_over_threshold: bool,
        reviewed: Option<&Plan>,
        events: &(dyn Fn(Event) + Sync),
    ) -> Result<RunResult, Error> {
        events(Event::Reading);
        let store = &self.store;
        let run_id = self.run_id.as_str();
        let reconciled = apply::reconcile(store, directory, cloud, run_id).await?;
        let now = jiff::Timestamp::now();
        // A reviewed plan lists everyone: so must the fresh one it is compared with.
        let everyone = reviewed.is_some();
        let (mut plan, mut progress, source_incremental) = read_and_plan(
            store,
            inputs,
            directory,
            cloud,
            everyone,
            incremental::Seeds::default(),
            now,
        )
        .await?;
        // Accounts about to be written are read again when the directory was read by its
        // changes: some changes (AD group membership) move no mark on the account itself.
        if source_incremental && !plan.actions.is_empty() {
            // What the accounts confirmed touch, as the index holds them before.
            let mut seeds = incremental::Seeds::default();
            seeds.accounts = plan.actions.iter().map(|a| a.account.clone()).collect();
            seeds.gather(&lock(store))?;
            if reads::confirm(inputs, directory, store, &plan).await? > 0 {
                (plan, progress, _) =
                    read_and_plan(store, inputs, directory, cloud, everyone, seeds, now).await?;
            }
        }
        // Until this plan is applied and saved, the accounts it does not settle stay
        // unsettled: a run stopped here plans them again next time. (One it settles had its
        // inputs unchanged since a plan that settled it, or `persist` unsettled it.)
        let (_, unsettled) = settled_or_not(&plan);
        lock(store).transaction(|s| s.unsettle(unsettled))?;
        let end = 'end: {
            if reviewed.is_some_and(|r| r.fingerprint != plan.fingerprint) {
                break 'end RunEnd::Stale;
            }
            let verdict = guard::check(&plan, &inputs.limits, allow_over_threshold);
            if !verdict.allowed {
                break 'end RunEnd::OverThreshold(verdict);
            }
            let progress = if plan.carried.is_empty() {
                progress
            } else {
                carry_over(store, &plan)?
            };
            let journal = Journal::new(store, run_id);
            tracing::info!(actions = plan.actions.len(), "applying the plan");
            events(Event::Applying {
                actions: plan.actions.len(),
            });
            let ended = || events(Event::ActionEnded);
            let outcome = apply::execute(
                &plan, &progress, directory, cloud, &journal, options, now, &ended,
            )
            .await;
            // Ends the journal's writer thread and closes its connection.
            drop(journal);
            save_accounts_without_actions(store, &plan, &progress, now)?;
            save_names(store, &plan)?;
            mark_gone(store, &plan, now)?;
            settle(store, &plan)?;
            tracing::info!("saved the accounts");
            RunEnd::Applied(outcome)
        };
        Ok(RunResult {
            plan,
            end,
            reconciled,
        })
    }
}

/// Reads both sides (by their changes unless `everyone`) and plans; whether the directory
/// was read by its changes. A stored snapshot row that no longer decodes (another version
/// wrote it) met while planning only the changes costs a read and a plan of everyone.
async fn read_and_plan<D: Directory + Sync, C: Cloud + Sync>(
    store: &std::sync::Mutex<Store>,
    inputs: &Inputs,
    directory: &D,
    cloud: &C,
    everyone: bool,
    seeds: incremental::Seeds,
    now: jiff::Timestamp,
) -> Result<(Plan, BTreeMap<String, Progress>, bool), Error> {
    if !everyone {
        let observed = observe_changes(inputs, directory, cloud, store).await?;
        let source_incremental = observed.refresh.source_incremental();
        match plan_read(store, inputs, observed, seeds.clone(), now) {
            Err(Error::State(crate::state::Error::Value(why))) => {
                tracing::warn!(%why, "a stored snapshot row does not decode; reading and planning everyone");
            }
            other => return other.map(|(plan, progress)| (plan, progress, source_incremental)),
        }
    }
    let observed = observe(inputs, directory, cloud, store).await?;
    let source_incremental = observed.refresh.source_incremental();
    let (plan, progress) = plan_read(store, inputs, observed, seeds, now)?;
    Ok((plan, progress, source_incremental))
}

/// Saves what a read changed and plans: everyone, or (after a read of only the changes) the
/// accounts the changes and `seeds` touch. The progress the plan was computed from.
fn plan_read(
    store: &std::sync::Mutex<Store>,
    inputs: &Inputs,
    observed: Observed,
    mut seeds: incremental::Seeds,
    now: jiff::Timestamp,
) -> Result<(Plan, BTreeMap<String, Progress>), Error> {
    // Before anything is saved: an empty read must not empty the snapshot, nor mark every
    // account gone.
    if observed.found_no_one() {
        let known = lock(store).progress_len()?;
        if known > 0 {
            return Err(Error::EmptySource { known });
        }
    }
    if !observed.partial {
        persist(store, inputs, &observed, &mut seeds)?;
        tracing::info!("saved the snapshots");
        let progress = lock(store).progress()?;
        let plan = compute(observed, inputs, &progress, now)?;
        tracing::info!(actions = plan.actions.len(), "planned");
        return Ok((plan, progress));
    }
    let (accounts, users) = observed.refresh.changed();
    seeds
        .accounts
        .extend(accounts.into_iter().map(str::to_string));
    seeds.users.extend(users.into_iter().map(str::to_string));
    // persist follows the seeds before and after the write: the values changed from and to.
    persist(store, inputs, &observed, &mut seeds)?;
    tracing::info!("saved the changes");
    let considered = seeds.considered(&lock(store))?;
    lock(store).transaction(|s| s.unsettle(considered.iter().map(String::as_str)))?;
    let (plan, progress) = incremental::plan(store, inputs, &considered, &observed.tenant, now)?;
    log_decisions(&plan);
    Ok((plan, progress))
}

/// After a plan was applied and saved: its settled accounts are planned again only when a
/// change touches them (saving marked every saved account unsettled).
fn settle(store: &std::sync::Mutex<Store>, plan: &Plan) -> Result<(), Error> {
    let (settled, _) = settled_or_not(plan);
    lock(store).transaction(|s| s.settle(settled))?;
    Ok(())
}

/// The keys of the plan's accounts whose outcome is settled (`incremental::settled`), and
/// of the others.
fn settled_or_not(plan: &Plan) -> (Vec<&str>, Vec<&str>) {
    let acting: std::collections::HashSet<&str> =
        plan.actions.iter().map(|a| a.account.as_str()).collect();
    let (mut settled, mut not) = (Vec::new(), Vec::new());
    for a in &plan.accounts {
        if incremental::settled(a, acting.contains(a.key.as_str())) {
            settled.push(a.key.as_str());
        } else {
            not.push(a.key.as_str());
        }
    }
    (settled, not)
}

/// Moves the progress of accounts the plan recognised under a new key (`Plan::carried`) in
/// the store, before any write, and returns the progress as the plan saw it.
fn carry_over(
    store: &std::sync::Mutex<Store>,
    plan: &Plan,
) -> Result<BTreeMap<String, Progress>, Error> {
    for c in &plan.carried {
        tracing::info!(
            from = %c.from,
            to = %c.to,
            by = ?c.by,
            "The account's key changed; its progress carries over to the new key."
        );
    }
    let moves: Vec<(&str, &str)> = plan
        .carried
        .iter()
        .map(|c| (c.from.as_str(), c.to.as_str()))
        .collect();
    let mut store = lock(store);
    store.rekey(&moves)?;
    if plan.summary.unchanged == 0 {
        return Ok(store.progress()?);
    }
    Ok(store.progress_of(plan.accounts.iter().map(|a| a.key.as_str()))?)
}

/// Accounts without actions still record where they stand (for `status`).
fn save_accounts_without_actions(
    store: &std::sync::Mutex<Store>,
    plan: &Plan,
    progress: &BTreeMap<String, Progress>,
    now: jiff::Timestamp,
) -> Result<(), Error> {
    let with_actions: std::collections::HashSet<&str> =
        plan.actions.iter().map(|a| a.account.as_str()).collect();
    lock(store).transaction(|s| {
        for account in plan
            .accounts
            .iter()
            .filter(|a| !with_actions.contains(a.key.as_str()))
        {
            let p = plan::progress_after(progress.get(&account.key), account, &[], None, now);
            let reason = account.reasons.first().map(|r| r.reason.code());
            let kind = account.kind.map(|k| k.to_string());
            s.save_account(&account.key, Some(&account.dn), kind.as_deref(), reason, &p)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Every account of the plan keeps the names people know it by (`explain`, `status
/// --accounts`), beside the progress saved above.
fn save_names(store: &std::sync::Mutex<Store>, plan: &Plan) -> Result<(), Error> {
    lock(store).transaction(|s| {
        for account in &plan.accounts {
            let names = crate::model::Names {
                account_name: account.account_name.clone(),
                upn: account.upn.clone(),
            };
            s.save_names(&account.key, &names)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Accounts the store knows that this run did not find in scope are gone (deleted, moved
/// out or filtered out); one found again is back, and its lifecycle resumes
/// (docs/operations.md). While the indexes are kept, `persist` marks them with the index, in
/// its transaction; without them (incremental reads off) every account is compared with the
/// plan, which lists everyone then.
fn mark_gone(
    store: &std::sync::Mutex<Store>,
    plan: &Plan,
    now: jiff::Timestamp,
) -> Result<(), Error> {
    if lock(store).watermark(incremental::INDEX_MARK)?.is_some() {
        return Ok(());
    }
    let present: std::collections::HashSet<&str> =
        plan.accounts.iter().map(|a| a.key.as_str()).collect();
    let (left, back) = lock(store).mark_gone(&present, now)?;
    if left > 0 || back > 0 {
        tracing::info!(
            gone = left,
            back,
            "accounts left or came back to the directory's scope"
        );
    }
    Ok(())
}

/// Bumped when the snapshot's rows change shape: every stored mark is then ignored.
const SNAPSHOT_FORMAT: &str = "1";

/// The snapshot side (and watermark name) of the cloud's users.
const CLOUD_SIDE: &str = "cloud:users";

/// The snapshot side (and watermark name) of one directory search.
fn source_side(search: &mapping::Search) -> String {
    format!(
        "source:{}:{}",
        search.mapping,
        crate::model::Dn::new(&search.base_dn)
    )
}

fn lock(store: &std::sync::Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    // A panic in another task while holding the lock leaves SQLite consistent (transactions).
    store.lock().unwrap_or_else(|p| p.into_inner())
}
