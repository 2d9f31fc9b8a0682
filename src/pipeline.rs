//! One pass of the pipeline, stage by stage: read both sides (in parallel, in full or by
//! their changes), map, join, plan, guard, apply, save. `plan`, `apply`, `run` and `check`
//! are built from these steps; the stages themselves live in their own modules.

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
use crate::state::Store;

pub use reads::{ReadSummary, Reads, Refresh, observe, persist};

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
    /// Accounts in scope, each with the name of the mapping whose search found it.
    pub found: Vec<(String, SourceAccount)>,
    pub users: Vec<CloudUser>,
    pub tenant: Tenant,
    /// What the read changes in the state store's snapshot ([`persist`] writes it).
    pub refresh: Refresh,
    pub summary: ReadSummary,
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
            account = account.account_name.as_deref().unwrap_or(&account.key),
            dn = %account.dn,
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

/// What one `run` (or `apply`) did.
pub struct RunResult {
    pub plan: Plan,
    pub verdict: Verdict,
    /// `None` when the guard stopped the run before any write.
    pub outcome: Option<Outcome>,
    pub reconciled: apply::reconcile::Reconciled,
}

/// Reconcile, read, plan, guard, apply and save: one scheduled run. `reviewed`, when given,
/// is a plan an admin reviewed; it must match the fresh plan exactly (its fingerprint), or
/// the run stops before any write.
#[allow(clippy::too_many_arguments)]
pub async fn run<D: Directory + Sync, C: Cloud + Sync>(
    inputs: &Inputs,
    directory: &D,
    cloud: &C,
    store: &std::sync::Mutex<Store>,
    run_id: &str,
    options: &apply::Options,
    allow_over_threshold: bool,
    reviewed: Option<&Plan>,
) -> Result<RunResult, Error> {
    let reconciled = apply::reconcile(store, directory, cloud, run_id).await?;
    let progress = lock(store).progress()?;
    let now = jiff::Timestamp::now();
    let observed = observe(inputs, directory, cloud, store).await?;
    persist(store, &observed)?;
    let source_incremental = observed.refresh.source_incremental();
    let mut plan = compute(observed, inputs, &progress, now)?;
    // Accounts about to be written are read again when the directory was read by its
    // changes: some changes (AD group membership) move no mark on the account itself.
    if source_incremental
        && !plan.actions.is_empty()
        && reads::confirm(inputs, directory, store, &plan).await? > 0
    {
        let observed = observe(inputs, directory, cloud, store).await?;
        persist(store, &observed)?;
        plan = compute(observed, inputs, &progress, now)?;
    }
    if let Some(reviewed) = reviewed
        && reviewed.fingerprint != plan.fingerprint
    {
        return Ok(RunResult {
            verdict: Verdict {
                exceeded: Vec::new(),
                allowed: false,
            },
            plan,
            outcome: None,
            reconciled,
        });
    }
    let verdict = guard::check(&plan, &inputs.limits, allow_over_threshold);
    if !verdict.allowed {
        return Ok(RunResult {
            plan,
            verdict,
            outcome: None,
            reconciled,
        });
    }
    let journal = Journal::new(store, run_id);
    tracing::info!(actions = plan.actions.len(), "applying the plan");
    let outcome = apply::execute(&plan, &progress, directory, cloud, &journal, options, now).await;
    // Ends the journal's writer thread and closes its connection.
    drop(journal);
    // Accounts without actions still record where they stand (for `status`).
    let with_actions: std::collections::HashSet<&str> =
        plan.actions.iter().map(|a| a.account.as_str()).collect();
    {
        let mut guard = lock(store);
        guard.transaction(|s| {
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
    }
    Ok(RunResult {
        plan,
        verdict,
        outcome: Some(outcome),
        reconciled,
    })
}

fn lock(store: &std::sync::Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    // A panic in another task while holding the lock leaves SQLite consistent (transactions).
    store.lock().unwrap_or_else(|p| p.into_inner())
}
