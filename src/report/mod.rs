//! What b2bsync tells people: the migration funnel (`status`), what a run changed (`report`),
//! as a terminal table, CSV, JSON or one self-contained HTML page ([`html`]). Files are written
//! atomically (temp file + rename) and owner-only. Reports come from the state store alone,
//! carry no secret, and never touch the network.
//!
//! Values come from the directory and the tenant, so they are treated as hostile where they
//! are shown: every CSV cell that a spreadsheet would run as a formula is prefixed with `'`
//! ([`csv_cell`]), and control characters never reach a terminal raw ([`terminal_safe`]).

pub mod chart;
pub mod explain;
pub mod history;
pub mod html;
pub mod pending;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::apply::{Outcome, reconcile::Reconciled};
use crate::model::Lifecycle;
use crate::plan::{Op, Plan, ReasonCode};
use crate::state::{AccountRecord, Action, JournalEntry, Phase, RunRecord, Values};

/// Exit codes, stable for schedulers (Task Scheduler's "Last Run Result", systemd's
/// `SuccessExitStatus=`), documented in docs/operations.md ("Exit codes"). A run's code is
/// stored with it, so the reports say what it meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Everything done.
    Ok = 0,
    /// The run failed and could not proceed.
    Failed = 1,
    /// Finished, but some actions failed or need a human.
    Partial = 2,
    /// The configuration or a mapping is invalid.
    InvalidConfig = 3,
    /// The plan is over a threshold; nothing was written.
    OverThreshold = 4,
    /// Another run holds the lock.
    Locked = 5,
}

impl Exit {
    /// The code a run stored, when it is one of these.
    pub fn from_code(code: i64) -> Option<Exit> {
        Some(match code {
            0 => Exit::Ok,
            1 => Exit::Failed,
            2 => Exit::Partial,
            3 => Exit::InvalidConfig,
            4 => Exit::OverThreshold,
            5 => Exit::Locked,
            _ => return None,
        })
    }

    /// What the code means, in a few words.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Failed => "failed",
            Exit::Partial => "some actions failed or need a human",
            Exit::InvalidConfig => "invalid configuration or mapping",
            Exit::OverThreshold => "over a threshold, nothing written",
            Exit::Locked => "another run held the lock",
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// Every lifecycle state in funnel order.
pub const FUNNEL: [Lifecycle; 8] = [
    Lifecycle::Unmatched,
    Lifecycle::Blocked,
    Lifecycle::NeedsAddress,
    Lifecycle::AwaitingSync,
    Lifecycle::Ready,
    Lifecycle::Invited,
    Lifecycle::Accepted,
    Lifecycle::Done,
];

/// The funnel's states, then `gone` (accounts that left the directory's scope), which
/// reports show only when some account is.
fn reported_states() -> impl Iterator<Item = &'static Lifecycle> {
    FUNNEL.iter().chain(std::iter::once(&Lifecycle::Gone))
}

/// The migration funnel, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Accounts per lifecycle state, every state present (zero included), funnel order.
    pub states: Vec<StateCount>,
    /// Blocked accounts per reason, most frequent first, each with its fix.
    pub blocked: Vec<ReasonCount>,
    /// Unmatched accounts per reason (no cloud user, several, ...), most frequent first.
    pub unmatched: Vec<ReasonCount>,
    /// Every invitation still pending (state `invited`), by how long it has waited. Every
    /// bucket is present, zero included; `date_unknown` only when an invitation has no date.
    pub invitations_by_age: Vec<AgeBucket>,
    /// Invitations pending for `pending_days` days or more, longest first.
    pub pending_invitations: Vec<PendingInvitation>,
    pub pending_days: i64,
    pub total: usize,
    /// Every run, oldest first, with what it changed (see [`count_changes`]).
    pub runs: Vec<RunView>,
    /// How each side was read: its snapshot and its last and next full read (empty until a
    /// run has read; filled in by the caller, which knows `[reads]`).
    pub reads: Vec<crate::pipeline::reads::ReadState>,
    /// Progress over time from the journal, and the projection (filled in by the caller,
    /// which reads the journal run by run: [`history::Builder`]).
    pub history: history::History,
    /// Sign-in sessions revoked after the password randomization (issue 19).
    pub sessions: Sessions,
    /// The tenant and the directory the report describes (filled in by the caller, which
    /// knows the configuration).
    pub about: About,
    /// Every account, for the HTML report's per-account section (filled in by the caller;
    /// not in `status --format json`: `status --accounts --format json` has them).
    #[serde(skip)]
    pub accounts: AccountList,
}

/// What a report describes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct About {
    /// `[graph] tenant`.
    pub tenant: String,
    /// The directory's URL and the mappings' search bases.
    pub directory: String,
}

/// What the state store records of sign-in session revocations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sessions {
    /// Accounts whose cloud user's sign-in sessions b2bsync revoked.
    pub revoked: usize,
    /// Accounts whose password b2bsync randomized and whose sessions it has not revoked
    /// (the policy is off, the revocation failed, or the account is blocked since).
    pub not_revoked: usize,
    /// The latest revocation.
    pub last_revoked_at: Option<jiff::Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateCount {
    pub state: Lifecycle,
    pub accounts: usize,
}

/// How many accounts one reason holds back, and what fixes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    /// The reason's code, as `plan::BlockReason::code()` gives it (`unknown` if none was kept).
    pub reason: String,
    pub accounts: usize,
    /// The fix, from [`reason_help`]; `None` for a code this build does not know.
    pub help: Option<String>,
}

/// Pending invitations that have waited a given number of days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgeBucket {
    /// A stable key (`under_7_days`, `7_to_13_days`, ...).
    pub bucket: &'static str,
    /// The same in words, for people.
    pub label: &'static str,
    /// Inclusive lower bound in whole days (`None` for `date_unknown`).
    pub min_days: Option<i64>,
    /// Exclusive upper bound in whole days (`None`: no upper bound).
    pub max_days: Option<i64>,
    pub invitations: usize,
}

/// The age buckets of pending invitations: key, label, from (inclusive), to (exclusive).
const AGE_BUCKETS: [(&str, &str, i64, Option<i64>); 4] = [
    ("under_7_days", "under 7 days", 0, Some(7)),
    ("7_to_13_days", "7 to 13 days", 7, Some(14)),
    ("14_to_29_days", "14 to 29 days", 14, Some(30)),
    ("30_days_or_more", "30 days or more", 30, None),
];

/// One run and what it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunView {
    #[serde(flatten)]
    pub run: RunRecord,
    /// Per action kind, from the run's journal records; empty when nothing was attempted.
    pub changes: Vec<ActionCount>,
}

/// What one run did with one kind of action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionCount {
    /// The action kind (`invite`, `set_directory_mail`, ...).
    pub action: String,
    /// Started in this run and done.
    pub done: usize,
    /// Started in this run and failed.
    pub failed: usize,
    /// Started in this run with no outcome recorded: the run stopped during the call. The
    /// next run reconciles it.
    pub interrupted: usize,
    /// Actions of an earlier, interrupted run that this run settled (done or released).
    pub reconciled: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingInvitation {
    pub key: String,
    pub dn: Option<String>,
    pub invited_at: jiff::Timestamp,
    pub days: i64,
}

/// Builds the funnel from the store's rows.
pub fn status(
    accounts: &[AccountRecord],
    runs: Vec<RunRecord>,
    pending_days: i64,
    now: jiff::Timestamp,
) -> Status {
    let mut per_state: BTreeMap<Lifecycle, usize> = FUNNEL.iter().map(|s| (*s, 0)).collect();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut unmatched: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_age = [0usize; AGE_BUCKETS.len()];
    let mut undated = 0usize;
    let mut pending = Vec::new();
    let mut sessions = Sessions::default();
    for a in accounts {
        let state = a.state_now();
        *per_state.entry(state).or_default() += 1;
        match (
            a.progress.password_randomized_at,
            a.progress.sessions_revoked_at,
        ) {
            (_, Some(t)) => {
                sessions.revoked += 1;
                sessions.last_revoked_at = sessions.last_revoked_at.max(Some(t));
            }
            (Some(_), None) => sessions.not_revoked += 1,
            (None, None) => {}
        }
        let reason = || a.reason.clone().unwrap_or_else(|| "unknown".into());
        match state {
            Lifecycle::Blocked => *reasons.entry(reason()).or_default() += 1,
            Lifecycle::Unmatched => *unmatched.entry(reason()).or_default() += 1,
            _ => {}
        }
        if state != Lifecycle::Invited {
            continue;
        }
        let Some(t) = a.progress.invited_at else {
            undated += 1;
            continue;
        };
        // A clock running behind the service can put the invitation in the future: 0 days.
        let days = ((now.as_second() - t.as_second()) / 86_400).max(0);
        let bucket = AGE_BUCKETS
            .iter()
            .position(|(_, _, from, to)| days >= *from && to.is_none_or(|to| days < to))
            .unwrap_or(AGE_BUCKETS.len() - 1);
        by_age[bucket] += 1;
        if days >= pending_days {
            pending.push(PendingInvitation {
                key: a.key.clone(),
                dn: a.dn.clone(),
                invited_at: t,
                days,
            });
        }
    }
    let mut invitations_by_age: Vec<AgeBucket> = AGE_BUCKETS
        .iter()
        .zip(by_age)
        .map(|((bucket, label, from, to), invitations)| AgeBucket {
            bucket,
            label,
            min_days: Some(*from),
            max_days: *to,
            invitations,
        })
        .collect();
    if undated > 0 {
        invitations_by_age.push(AgeBucket {
            bucket: "date_unknown",
            label: "date unknown",
            min_days: None,
            max_days: None,
            invitations: undated,
        });
    }
    pending.sort_by(|a, b| b.days.cmp(&a.days).then(a.key.cmp(&b.key)));
    Status {
        states: reported_states()
            .map(|s| StateCount {
                state: *s,
                accounts: per_state.get(s).copied().unwrap_or(0),
            })
            .filter(|c| c.state != Lifecycle::Gone || c.accounts > 0)
            .collect(),
        blocked: reason_counts(reasons),
        unmatched: reason_counts(unmatched),
        invitations_by_age,
        pending_invitations: pending,
        pending_days,
        total: accounts.len(),
        runs: runs
            .into_iter()
            .map(|run| RunView {
                run,
                changes: Vec::new(),
            })
            .collect(),
        reads: Vec::new(),
        history: history::History::default(),
        sessions,
        about: About::default(),
        accounts: AccountList::default(),
    }
}

/// One account as `status --accounts` lists it, from the state store alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountRow {
    /// How people know it: UPN or account name ([`crate::model::AccountName::human`]); empty
    /// when the store has neither yet (a store written before names were kept).
    pub name: String,
    pub dn: Option<String>,
    pub state: Lifecycle,
    /// The block or unmatched reason's code, for a held-back account.
    pub reason: Option<String>,
    /// The reason's fix.
    pub help: Option<String>,
    /// The domain of the external address (lowercase); `None` until an address is known.
    pub partner_domain: Option<String>,
    pub invited_at: Option<jiff::Timestamp>,
    /// When the partner accepted (see `Progress::accepted_at`); `None` until then.
    pub accepted_at: Option<jiff::Timestamp>,
    pub password_randomized_at: Option<jiff::Timestamp>,
    /// `synced` or `cloud_only`, once joined.
    pub kind: Option<String>,
    pub cloud_id: Option<String>,
    pub key: String,
    /// When a run first found it gone from the directory's scope (state `gone`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gone_at: Option<jiff::Timestamp>,
}

/// How many accounts one partner domain has, per state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainCount {
    /// `None`: accounts without an external address yet.
    pub partner_domain: Option<String>,
    pub accounts: usize,
    /// Per state, funnel order, states with no account left out.
    pub states: Vec<StateCount>,
}

/// `status --accounts`: every account that passes the filters, and the counts per partner
/// domain of those accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccountList {
    pub accounts: Vec<AccountRow>,
    pub domains: Vec<DomainCount>,
}

/// Which accounts `status --accounts` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountFilter {
    pub state: Option<Lifecycle>,
    /// A partner domain, compared case-insensitively.
    pub domain: Option<String>,
}

/// The partner domain of an external address, lowercase.
pub fn partner_domain(address: Option<&str>) -> Option<String> {
    let (_, domain) = address?.rsplit_once('@')?;
    (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

/// The per-account list of the store's rows that pass `filter`, sorted by name then key.
pub fn account_list(
    accounts: &[AccountRecord],
    names: &BTreeMap<String, crate::model::Names>,
    filter: &AccountFilter,
) -> AccountList {
    let mut rows: Vec<AccountRow> = accounts
        .iter()
        .map(|a| {
            let state = a.state_now();
            let held = matches!(state, Lifecycle::Blocked | Lifecycle::Unmatched);
            let reason = a.reason.clone().filter(|_| held);
            AccountRow {
                name: account_name(&a.key, a.dn.as_deref(), names)
                    .human()
                    .unwrap_or_default()
                    .to_string(),
                dn: a.dn.clone(),
                state,
                gone_at: a.gone_at,
                help: reason.as_deref().and_then(reason_help),
                reason,
                partner_domain: partner_domain(a.progress.address.as_deref()),
                invited_at: a.progress.invited_at,
                accepted_at: a.progress.accepted_at,
                password_randomized_at: a.progress.password_randomized_at,
                kind: a.kind.clone(),
                cloud_id: a.progress.cloud_id.clone(),
                key: a.key.clone(),
            }
        })
        .filter(|r| filter.state.is_none_or(|s| r.state == s))
        .filter(|r| {
            filter.domain.as_deref().is_none_or(|d| {
                r.partner_domain
                    .as_deref()
                    .is_some_and(|p| p.eq_ignore_ascii_case(d.trim_start_matches('@')))
            })
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.key.cmp(&b.key)));
    let mut per_domain: BTreeMap<Option<String>, BTreeMap<Lifecycle, usize>> = BTreeMap::new();
    for r in &rows {
        *per_domain
            .entry(r.partner_domain.clone())
            .or_default()
            .entry(r.state)
            .or_default() += 1;
    }
    let domains = per_domain
        .into_iter()
        .map(|(partner_domain, states)| DomainCount {
            partner_domain,
            accounts: states.values().sum(),
            states: reported_states()
                .filter_map(|s| {
                    states.get(s).map(|n| StateCount {
                        state: *s,
                        accounts: *n,
                    })
                })
                .collect(),
        })
        .collect();
    AccountList {
        accounts: rows,
        domains,
    }
}

/// The CSV columns of `status --accounts`.
const ACCOUNT_COLUMNS: [&str; 13] = [
    "name",
    "dn",
    "state",
    "reason",
    "help",
    "partner_domain",
    "invited_at",
    "accepted_at",
    "password_randomized_at",
    "kind",
    "cloud_id",
    "key",
    "gone_at",
];

fn account_cells(r: &AccountRow) -> [String; 13] {
    let t = |t: Option<jiff::Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    [
        r.name.clone(),
        o(&r.dn),
        r.state.as_str().to_string(),
        o(&r.reason),
        o(&r.help),
        o(&r.partner_domain),
        t(r.invited_at),
        t(r.accepted_at),
        t(r.password_randomized_at),
        o(&r.kind),
        o(&r.cloud_id),
        r.key.clone(),
        t(r.gone_at),
    ]
}

/// `status --accounts --format csv`: one row per account, the header always.
pub fn accounts_csv(list: &AccountList) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(ACCOUNT_COLUMNS)?;
    for r in &list.accounts {
        write_cells(&mut w, account_cells(r).iter().map(String::as_str))?;
    }
    csv_text(w)
}

/// `status --accounts` as a table: one line per account, then the counts per partner domain.
pub fn accounts_text(list: &AccountList) -> String {
    let day = |t: Option<jiff::Timestamp>| {
        t.map(|t| t.strftime("%Y-%m-%d").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let mut out = format!(
        "{:<28} {:<13} {:<24} {:<22} {:<10} {:<10} {:<10} dn\n",
        "name", "state", "reason", "partner domain", "invited", "accepted", "randomized"
    );
    for r in &list.accounts {
        out.push_str(&format!(
            "{:<28} {:<13} {:<24} {:<22} {:<10} {:<10} {:<10} {}\n",
            terminal_safe(if r.name.is_empty() { "-" } else { &r.name }),
            r.state.as_str(),
            match r.gone_at {
                Some(t) => format!("since {}", day(Some(t))),
                None => terminal_safe(r.reason.as_deref().unwrap_or("-")).to_string(),
            },
            terminal_safe(r.partner_domain.as_deref().unwrap_or("-")),
            day(r.invited_at),
            day(r.accepted_at),
            day(r.password_randomized_at),
            terminal_safe(r.dn.as_deref().unwrap_or(&r.key)),
        ));
    }
    out.push_str(&format!("{} accounts\n", list.accounts.len()));
    if !list.domains.is_empty() {
        out.push_str("\nper partner domain\n");
        for d in &list.domains {
            let states: Vec<String> = d
                .states
                .iter()
                .map(|c| format!("{}={}", c.state.as_str(), c.accounts))
                .collect();
            out.push_str(&format!(
                "  {:>6}  {}: {}\n",
                d.accounts,
                terminal_safe(d.partner_domain.as_deref().unwrap_or("(no address yet)")),
                states.join(" ")
            ));
        }
    }
    out
}

/// Reason counts, most frequent first, each with its fix.
fn reason_counts(counts: BTreeMap<String, usize>) -> Vec<ReasonCount> {
    let mut out: Vec<ReasonCount> = counts
        .into_iter()
        .map(|(reason, accounts)| ReasonCount {
            help: reason_help(&reason),
            reason,
            accounts,
        })
        .collect();
    out.sort_by(|a, b| b.accounts.cmp(&a.accounts).then(a.reason.cmp(&b.reason)));
    out
}

/// The fix for a block reason, from the code the state store keeps (`BlockReason::code()`).
/// The text is `ReasonCode::help()`, which `BlockReason::help()` gives too, so it never drifts
/// from what `plan` prints; `None` for a code this build does not know (a newer b2bsync wrote
/// the store).
pub fn reason_help(code: &str) -> Option<String> {
    code.parse::<ReasonCode>().ok().map(ReasonCode::help)
}

/// What the journal records of one run say it did, per action kind (sorted by name).
/// An action counts once, by its last record in the run: `done`, `failed`, or still
/// `started` (interrupted). Records of actions that did not start in this run are
/// reconciliations of an earlier run's interrupted actions.
pub fn count_changes(entries: &[JournalEntry]) -> Vec<ActionCount> {
    // action key -> (kind, started in this run, last phase)
    let mut actions: BTreeMap<&str, (Action, bool, Phase)> = BTreeMap::new();
    for e in entries {
        let slot = actions
            .entry(e.action_key.as_str())
            .or_insert((e.action, false, e.phase));
        slot.1 |= e.phase == Phase::Started;
        slot.2 = e.phase;
    }
    let mut per_kind: BTreeMap<&str, ActionCount> = BTreeMap::new();
    for (kind, started, last) in actions.into_values() {
        let kind = kind.as_str();
        let c = per_kind.entry(kind).or_insert_with(|| ActionCount {
            action: kind.to_string(),
            done: 0,
            failed: 0,
            interrupted: 0,
            reconciled: 0,
        });
        if !started {
            c.reconciled += 1;
        } else {
            match last {
                Phase::Done => c.done += 1,
                Phase::Failed => c.failed += 1,
                Phase::Started => c.interrupted += 1,
            }
        }
    }
    per_kind.into_values().collect()
}

/// The funnel as a plain-text table for a terminal or a log.
pub fn status_text(s: &Status) -> String {
    let mut out = String::new();
    out.push_str(&format!("{:<15} {:>8}\n", "state", "accounts"));
    for c in &s.states {
        out.push_str(&format!("{:<15} {:>8}\n", c.state.as_str(), c.accounts));
    }
    out.push_str(&format!("{:<15} {:>8}\n", "total", s.total));
    if s.sessions.revoked + s.sessions.not_revoked > 0 {
        let last = s
            .sessions
            .last_revoked_at
            .map(|t| format!(", last {}", t.strftime("%Y-%m-%d %H:%M UTC")))
            .unwrap_or_default();
        out.push_str(&format!(
            "\nsign-in sessions revoked for {} accounts{last}; not revoked after the randomization: {}\n",
            s.sessions.revoked, s.sessions.not_revoked
        ));
    }
    for (title, list) in [("blocked", &s.blocked), ("unmatched", &s.unmatched)] {
        if list.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{title} because\n"));
        for b in list {
            out.push_str(&format!(
                "  {:>6}  {}\n",
                b.accounts,
                terminal_safe(&b.reason)
            ));
            let help = b.help.as_deref().unwrap_or(
                "this b2bsync does not know the reason code: run `b2bsync plan` to see it",
            );
            out.push_str(&format!("          help: {}\n", terminal_safe(help)));
        }
    }
    if s.invitations_by_age.iter().any(|b| b.invitations > 0) {
        out.push_str("\ninvitations pending by age\n");
        for b in &s.invitations_by_age {
            out.push_str(&format!("  {:>6}  {}\n", b.invitations, b.label));
        }
    }
    if !s.pending_invitations.is_empty() {
        out.push_str(&format!(
            "\ninvitations pending for {} days or more\n",
            s.pending_days
        ));
        for p in &s.pending_invitations {
            out.push_str(&format!(
                "  {:>4} days  {}\n",
                p.days,
                terminal_safe(p.dn.as_deref().unwrap_or(&p.key))
            ));
        }
    }
    if !s.reads.is_empty() {
        out.push_str(
            "
reads (the next run reads changes only, until the full read is due)
",
        );
        for r in &s.reads {
            let when = |t: Option<jiff::Timestamp>| {
                t.map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_else(|| "unknown".into())
            };
            match &r.incremental_off {
                Some(why) => out.push_str(&format!(
                    "  {}: every read is full (last {}): {}\n",
                    terminal_safe(&r.side),
                    when(r.last_full_read),
                    terminal_safe(why)
                )),
                None => out.push_str(&format!(
                    "  {}: {} in the snapshot, last full read {}, next due {}\n",
                    terminal_safe(&r.side),
                    r.rows,
                    when(r.last_full_read),
                    when(r.full_read_due)
                )),
            }
        }
    }
    out
}

/// The funnel as CSV: `state,accounts` rows.
pub fn status_csv(s: &Status) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["state", "accounts"])?;
    for c in &s.states {
        write_cells(&mut w, [c.state.as_str(), &c.accounts.to_string()])?;
    }
    csv_text(w)
}

/// Journal records as CSV, one row per record.
pub fn journal_csv(entries: &[JournalRow]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    // The header even without rows: a file with only the header says "nothing", a 0-byte
    // one looks like a failure.
    w.write_record(JournalRow::COLUMNS)?;
    for e in entries {
        write_cells(&mut w, e.cells().iter().map(String::as_str))?;
    }
    csv_text(w)
}

/// Journal records as a table for a terminal: time, account, action, phase, before -> after.
pub fn journal_text(entries: &[JournalRow]) -> String {
    let mut out = format!(
        "{:<20} {:<40} {:<26} {:<8} change\n",
        "at", "account", "action", "phase"
    );
    for e in entries {
        let at = e.at.get(..19).unwrap_or(&e.at).replace('T', " ");
        let change = match (&e.before, &e.after, &e.error) {
            (_, _, Some(err)) => format!("error: {err}"),
            (before, Some(after), None) => {
                format!("{} -> {after}", before.as_deref().unwrap_or("(nothing)"))
            }
            (Some(before), None, None) => format!("was {before}"),
            (None, None, None) => String::new(),
        };
        let account = if e.account.is_empty() {
            &e.account_key
        } else {
            &e.account
        };
        out.push_str(&format!(
            "{at:<20} {:<40} {:<26} {:<8} {}\n",
            terminal_safe(account),
            e.action,
            e.phase,
            terminal_safe(&change)
        ));
    }
    out.push_str(&format!("{} journal records\n", entries.len()));
    out
}

/// A journal record with the account it concerns named as an auditor recognizes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalRow {
    pub seq: i64,
    pub at: String,
    pub run_id: String,
    /// The account as people know it: UPN or account name, and DN (empty when the state
    /// store no longer knows the account).
    pub account: String,
    pub action: String,
    pub phase: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
    pub error: Option<String>,
    pub action_key: String,
    pub account_key: String,
}

impl JournalRow {
    /// The row of a journal record, its account named `account`.
    pub fn of(e: JournalEntry, account: String) -> JournalRow {
        JournalRow {
            account,
            seq: e.seq,
            at: e.at.to_string(),
            run_id: e.run_id,
            action: e.action.as_str().to_string(),
            phase: e.phase.as_str().to_string(),
            before: e.before.as_ref().map(Values::to_json),
            after: e.after.as_ref().map(Values::to_json),
            request_id: e.request_id,
            client_request_id: e.client_request_id,
            error: e.error,
            action_key: e.action_key,
            account_key: e.account_key,
        }
    }

    /// The CSV header: the field names, in order.
    const COLUMNS: [&'static str; 13] = [
        "seq",
        "at",
        "run_id",
        "account",
        "action",
        "phase",
        "before",
        "after",
        "request_id",
        "client_request_id",
        "error",
        "action_key",
        "account_key",
    ];

    /// The row's cells in [`JournalRow::COLUMNS`] order (an absent value is empty).
    fn cells(&self) -> [String; 13] {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        [
            self.seq.to_string(),
            self.at.clone(),
            self.run_id.clone(),
            self.account.clone(),
            self.action.clone(),
            self.phase.clone(),
            opt(&self.before),
            opt(&self.after),
            opt(&self.request_id),
            opt(&self.client_request_id),
            opt(&self.error),
            self.action_key.clone(),
            self.account_key.clone(),
        ]
    }
}

/// Names each record's account as people know it ([`crate::model::AccountName`]: its UPN or
/// account name and its DN) from the state store's accounts and names.
pub fn journal_rows(
    entries: Vec<JournalEntry>,
    accounts: &[AccountRecord],
    names: &BTreeMap<String, crate::model::Names>,
) -> Vec<JournalRow> {
    let dns: BTreeMap<&str, Option<&str>> = accounts
        .iter()
        .map(|a| (a.key.as_str(), a.dn.as_deref()))
        .collect();
    entries
        .into_iter()
        .map(|e| {
            let account = match dns.get(e.account_key.as_str()) {
                Some(dn) => account_name(&e.account_key, *dn, names).to_string(),
                None => String::new(),
            };
            JournalRow::of(e, account)
        })
        .collect()
}

/// How people know the account `key` of the state store, from its DN and its stored names.
pub fn account_name<'a>(
    key: &'a str,
    dn: Option<&'a str>,
    names: &'a BTreeMap<String, crate::model::Names>,
) -> crate::model::AccountName<'a> {
    crate::model::AccountName::stored(key, dn, names)
}

/// A CSV cell as spreadsheet tools should get it: a value starting with `=`, `+`, `-`, `@`, a
/// tab or a carriage return is prefixed with `'`, so Excel, LibreOffice and Google Sheets show
/// it as text instead of evaluating it as a formula (OWASP, "CSV injection"). Every CSV
/// b2bsync writes goes through this.
pub fn csv_cell(value: &str) -> Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// Writes one record with every cell through [`csv_cell`].
fn write_cells<'a>(
    w: &mut csv::Writer<Vec<u8>>,
    cells: impl IntoIterator<Item = &'a str>,
) -> Result<(), csv::Error> {
    w.write_record(
        cells
            .into_iter()
            .map(csv_cell)
            .collect::<Vec<_>>()
            .iter()
            .map(|c| c.as_bytes()),
    )
}

/// A value from the directory or the tenant made safe for a terminal: control characters
/// (ESC sequences, CR, LF, BEL, ...) and the invisible bidirectional overrides are shown as
/// `\u{..}` escapes instead of acting on the terminal or reordering the line.
pub fn terminal_safe(value: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !value.chars().any(unsafe_char) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The help line for a report file that could not be written: a full disk gets its own.
pub fn write_help(path: &Path, error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded
    ) {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        format!(
            "the disk holding {} is full; free space and run again; nothing was lost: the file is written to a temporary file and renamed only when complete, so an earlier {} is untouched, and the state store is unchanged",
            dir.display(),
            path.display()
        )
    } else {
        "check that the directory exists and is writable".to_string()
    }
}

fn csv_text(w: csv::Writer<Vec<u8>>) -> Result<String, csv::Error> {
    let bytes = w
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// What an operation changes, from what, to what, and on which object (the account itself is
/// named by the caller, [`crate::model::AccountName`]).
fn describe_op(op: &Op) -> String {
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
    match op {
        Op::SetDirectoryMail { from, to, .. } => format!("AD mail {} -> {to}", show(from)),
        Op::SetCloudAddress {
            user_id,
            other_mails_from,
            other_mails_to,
            mail_from,
            mail_to,
        } => {
            let mut parts = Vec::new();
            if let Some(to) = other_mails_to {
                parts.push(format!("otherMails {:?} -> {:?}", other_mails_from, to));
            }
            if let Some(to) = mail_to {
                parts.push(format!("mail {} -> {to}", show(mail_from)));
            }
            format!("{} (cloud user {user_id})", parts.join(", "))
        }
        Op::Invite(inv) => format!(
            "invite {} (redirect {}; cloud user {})",
            inv.email, inv.redirect_url, inv.user_id
        ),
        Op::Reinvite(inv) => format!(
            "re-invite {} (attempt {}; cloud user {})",
            inv.email, inv.attempt, inv.user_id
        ),
        Op::RandomizePassword { .. } => "on-premises password -> random, unknown".to_string(),
        Op::RevokeSessions { user_id } => format!(
            "revoke sign-in sessions (refresh tokens, session cookies; cloud user {user_id})"
        ),
        Op::SetUserType { user_id, from, to } => format!(
            "userType {} -> {} (cloud user {user_id})",
            show(from),
            to.as_str()
        ),
    }
}

/// The plan as a change review: actions grouped by kind, then blocked accounts grouped by
/// reason with the fix, then the funnel the plan leads to.
pub fn plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    let outcomes: BTreeMap<&str, &crate::plan::AccountOutcome> =
        plan.accounts.iter().map(|a| (a.key.as_str(), a)).collect();
    let mut by_op: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for a in &plan.actions {
        let name = match outcomes.get(a.account.as_str()) {
            Some(o) => o.name().to_string(),
            None => a.account.clone(),
        };
        by_op
            .entry(a.op.name())
            .or_default()
            .push(terminal_safe(&format!("{name}: {}", describe_op(&a.op))).into_owned());
    }
    out.push_str(&format!(
        "plan: {} accounts in scope, {} actions\n",
        plan.accounts.len(),
        plan.actions.len()
    ));
    for (op, lines) in &by_op {
        out.push_str(&format!("\n{op} ({})\n", lines.len()));
        for l in lines {
            out.push_str(&format!("  {l}\n"));
        }
    }
    if !plan.carried.is_empty() {
        // Written to the store by `run` before any action: say so in the review.
        out.push_str(&format!(
            "\nkey changed, progress carried over ({})\n",
            plan.carried.len()
        ));
        for c in &plan.carried {
            let name = match outcomes.get(c.to.as_str()) {
                Some(o) => o.name().to_string(),
                None => c.to.clone(),
            };
            let by = match c.by {
                crate::plan::CarriedBy::Dn => "its DN-keyed record",
                crate::plan::CarriedBy::CloudUser => "the record joined to the same cloud user",
            };
            out.push_str(&format!(
                "  {}\n",
                terminal_safe(&format!("{name}: was {} ({by})", c.from))
            ));
        }
    }
    let mut blocked: BTreeMap<&str, Vec<(String, String, String)>> = BTreeMap::new();
    for acct in &plan.accounts {
        if let Some(r) = acct.reasons.first()
            && matches!(acct.state, Lifecycle::Blocked | Lifecycle::Unmatched)
        {
            blocked.entry(r.reason.code()).or_default().push((
                terminal_safe(&acct.name().to_string()).into_owned(),
                terminal_safe(&r.message).into_owned(),
                terminal_safe(&r.help).into_owned(),
            ));
        }
    }
    for (code, accounts) in &blocked {
        out.push_str(&format!("\nblocked: {code} ({})\n", accounts.len()));
        for (name, message, _) in accounts {
            out.push_str(&format!("  {name}: {message}\n"));
        }
        if let Some((_, _, help)) = accounts.first() {
            out.push_str(&format!("  help: {help}\n"));
        }
    }
    let mut next: BTreeMap<Lifecycle, usize> = BTreeMap::new();
    for acct in &plan.accounts {
        *next.entry(acct.next).or_default() += 1;
    }
    out.push_str("\nafter this plan:");
    for state in FUNNEL {
        if let Some(n) = next.get(&state) {
            out.push_str(&format!(" {}={n}", state.as_str()));
        }
    }
    out.push('\n');
    out
}

/// The plan as CSV: one row per account with its state, next state, action and reason.
pub fn plan_csv(plan: &Plan) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "account", "dn", "kind", "state", "next", "actions", "reason", "help",
    ])?;
    let mut ops: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for a in &plan.actions {
        ops.entry(a.account.as_str()).or_default().push(a.op.name());
    }
    for acct in &plan.accounts {
        let reason = acct.reasons.first();
        write_cells(
            &mut w,
            [
                acct.name().human().unwrap_or(&acct.key),
                &acct.dn,
                &acct.kind.map(|k| k.to_string()).unwrap_or_default(),
                acct.state.as_str(),
                acct.next.as_str(),
                &ops.get(acct.key.as_str())
                    .map(|o| o.join(" "))
                    .unwrap_or_default(),
                reason.map(|r| r.message.as_str()).unwrap_or_default(),
                reason.map(|r| r.help.as_str()).unwrap_or_default(),
            ],
        )?;
    }
    csv_text(w)
}

/// The one paragraph at the end of every run.
pub fn run_summary(
    run_id: &str,
    plan: &Plan,
    outcome: &Outcome,
    reconciled: &Reconciled,
) -> String {
    let mut done: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &outcome.actions {
        if matches!(a.status, crate::apply::Status::Done) {
            *done.entry(a.op).or_default() += 1;
        }
    }
    let changes = if done.is_empty() {
        "nothing needed changing".to_string()
    } else {
        done.iter()
            .map(|(op, n)| format!("{op} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let blocked = plan
        .accounts
        .iter()
        .filter(|a| a.state == Lifecycle::Blocked)
        .count();
    let finished = plan
        .accounts
        .iter()
        .filter(|a| a.next == Lifecycle::Done)
        .count();
    let mut text = format!(
        "run {run_id}: {} accounts in scope; {changes}; {} failed, {} skipped; {blocked} blocked; {finished} done.",
        plan.accounts.len(),
        outcome.failed(),
        outcome.skipped()
    );
    if reconciled.confirmed + reconciled.released > 0 {
        let unreadable = if reconciled.unknown > 0 {
            format!(", {} of them unreadable", reconciled.unknown)
        } else {
            String::new()
        };
        text.push_str(&format!(
            " Reconciled {} interrupted action(s) of an earlier run after reading the world: {} took effect (journaled done, never repeated), {} did not and are planned again if still needed{unreadable}.",
            reconciled.confirmed + reconciled.released,
            reconciled.confirmed,
            reconciled.released,
        ));
    }
    for a in &outcome.actions {
        if let crate::apply::Status::Failed { error, help } = &a.status {
            text.push_str(&format!("\n  failed {}: {error}\n  help: {help}", a.key));
        }
    }
    text
}

/// Writes `contents` to `path` atomically (temp file in the same directory, then rename),
/// readable by the owner only.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Progress;
    use crate::plan::{BlockReason, Side};

    fn record(
        key: &str,
        state: Lifecycle,
        reason: Option<&str>,
        invited_at: Option<&str>,
    ) -> AccountRecord {
        AccountRecord {
            key: key.into(),
            dn: Some(format!("CN={key}")),
            kind: Some("synced".into()),
            reason: reason.map(str::to_string),
            updated_at: "2026-11-01T00:00:00Z"
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
            gone_at: None,
            progress: Progress {
                state,
                invited_at: invited_at.map(|t| t.parse().unwrap_or_else(|e| panic!("{e}"))),
                ..Progress::default()
            },
        }
    }

    #[test]
    fn funnel_counts_every_state_and_reason() {
        let now: jiff::Timestamp = "2026-11-23T00:00:00Z".parse().expect("time");
        let rows = vec![
            record("a", Lifecycle::Done, None, None),
            record("b", Lifecycle::Blocked, Some("mailbox"), None),
            record("c", Lifecycle::Blocked, Some("mailbox"), None),
            record("d", Lifecycle::Blocked, Some("admin_role"), None),
            record("e", Lifecycle::Invited, None, Some("2026-11-01T00:00:00Z")),
            record("f", Lifecycle::Invited, None, Some("2026-11-22T00:00:00Z")),
        ];
        let s = status(&rows, vec![], 14, now);
        assert_eq!(s.total, 6);
        assert_eq!(s.states.len(), 8);
        let count = |st| s.states.iter().find(|c| c.state == st).map(|c| c.accounts);
        assert_eq!(count(Lifecycle::Blocked), Some(3));
        assert_eq!(count(Lifecycle::Ready), Some(0));
        assert_eq!(
            s.blocked[0],
            ReasonCount {
                reason: "mailbox".into(),
                accounts: 2,
                help: Some(BlockReason::Mailbox.help()),
            }
        );
        assert_eq!(s.pending_invitations.len(), 1);
        assert_eq!(s.pending_invitations[0].days, 22);
        let ages: Vec<(&str, usize)> = s
            .invitations_by_age
            .iter()
            .map(|b| (b.bucket, b.invitations))
            .collect();
        assert_eq!(
            ages,
            vec![
                ("under_7_days", 1),
                ("7_to_13_days", 0),
                ("14_to_29_days", 1),
                ("30_days_or_more", 0)
            ]
        );
        let text = status_text(&s);
        assert!(text.contains("blocked because"));
        let csv = status_csv(&s).expect("csv");
        assert!(csv.starts_with("state,accounts\nunmatched,0\n"), "{csv}");
    }

    #[test]
    fn invitation_ages_fall_in_half_open_buckets() {
        let now: jiff::Timestamp = "2026-11-30T12:00:00Z".parse().expect("time");
        let at = |days: i64| {
            let t = now.as_second() - days * 86_400;
            jiff::Timestamp::from_second(t).expect("time").to_string()
        };
        let rows: Vec<AccountRecord> = [0, 6, 7, 13, 14, 29, 30, 400, -2]
            .iter()
            .enumerate()
            .map(|(i, d)| record(&format!("k{i}"), Lifecycle::Invited, None, Some(&at(*d))))
            .chain([
                record("undated", Lifecycle::Invited, None, None),
                record("accepted", Lifecycle::Accepted, None, Some(&at(40))),
            ])
            .collect();
        let s = status(&rows, vec![], 30, now);
        let ages: Vec<(&str, usize)> = s
            .invitations_by_age
            .iter()
            .map(|b| (b.bucket, b.invitations))
            .collect();
        assert_eq!(
            ages,
            vec![
                ("under_7_days", 3),
                ("7_to_13_days", 2),
                ("14_to_29_days", 2),
                ("30_days_or_more", 2),
                ("date_unknown", 1)
            ]
        );
        assert_eq!(s.pending_invitations.len(), 2, "30 and 400 days");
    }

    #[test]
    fn unmatched_accounts_are_counted_by_reason() {
        let now: jiff::Timestamp = "2026-11-23T00:00:00Z".parse().expect("time");
        let rows = vec![
            record("a", Lifecycle::Unmatched, Some("no_cloud_user"), None),
            record("b", Lifecycle::Unmatched, Some("no_cloud_user"), None),
            record("c", Lifecycle::Unmatched, None, None),
        ];
        let s = status(&rows, vec![], 14, now);
        assert!(s.blocked.is_empty());
        assert_eq!(s.unmatched[0].reason, "no_cloud_user");
        assert_eq!(s.unmatched[0].accounts, 2);
        assert!(
            s.unmatched[0]
                .help
                .as_deref()
                .is_some_and(|h| h.contains("next sync cycle"))
        );
        assert_eq!(s.unmatched[1].reason, "unknown");
        assert_eq!(s.unmatched[1].help, None);
    }

    /// Every `BlockReason` the plan can give, one of each. The `match` has no wildcard, so a new
    /// variant fails to compile here until `reason_help` knows its code.
    fn every_block_reason() -> Vec<BlockReason> {
        let all = vec![
            BlockReason::NoCloudUser {
                kind_hint: "h".into(),
            },
            BlockReason::SeveralCloudUsers { user_ids: vec![] },
            BlockReason::CloudUserShared {
                user_id: "u".into(),
                accounts: vec![],
            },
            BlockReason::CloudUserChanged {
                was: "a".into(),
                now: "b".into(),
            },
            BlockReason::InSeveralScopes { mappings: vec![] },
            BlockReason::MappingFailed {
                message: "m".into(),
            },
            BlockReason::OnPremisesUserPrincipalName { value: "v".into() },
            BlockReason::RoleHolder { roles: vec![] },
            BlockReason::Mailbox,
            BlockReason::NoAddress,
            BlockReason::InvalidAddress {
                address: "a".into(),
                problem: "p".into(),
            },
            BlockReason::AddressInVerifiedDomain {
                address: "a".into(),
                domain: "d".into(),
            },
            BlockReason::AddressInUse {
                address: "a".into(),
                object_id: "o".into(),
                attribute: "mail".into(),
            },
            BlockReason::AddressShared {
                address: "a".into(),
                accounts: vec![],
            },
            BlockReason::OnPremMailbox {
                kind: "on-premises UserMailbox".into(),
            },
            BlockReason::AdminCount,
            BlockReason::ProtectedGroup { group: "g".into() },
            BlockReason::DenyList { entry: "e".into() },
            BlockReason::Disabled { side: Side::Cloud },
            BlockReason::InvitationAnswerMismatch { answer: "a".into() },
        ];
        for r in &all {
            match r {
                BlockReason::NoCloudUser { .. }
                | BlockReason::SeveralCloudUsers { .. }
                | BlockReason::CloudUserShared { .. }
                | BlockReason::CloudUserChanged { .. }
                | BlockReason::InSeveralScopes { .. }
                | BlockReason::MappingFailed { .. }
                | BlockReason::OnPremisesUserPrincipalName { .. }
                | BlockReason::RoleHolder { .. }
                | BlockReason::Mailbox
                | BlockReason::OnPremMailbox { .. }
                | BlockReason::NoAddress
                | BlockReason::InvalidAddress { .. }
                | BlockReason::AddressInVerifiedDomain { .. }
                | BlockReason::AddressInUse { .. }
                | BlockReason::AddressShared { .. }
                | BlockReason::AdminCount
                | BlockReason::ProtectedGroup { .. }
                | BlockReason::DenyList { .. }
                | BlockReason::Disabled { .. }
                | BlockReason::InvitationAnswerMismatch { .. } => {}
            }
        }
        all
    }

    #[test]
    fn every_block_reason_code_has_its_help() {
        for r in every_block_reason() {
            let help = reason_help(r.code()).unwrap_or_else(|| panic!("no help for {}", r.code()));
            if !matches!(r, BlockReason::NoCloudUser { .. }) {
                assert_eq!(help, r.help(), "{}", r.code());
            }
        }
        assert_eq!(reason_help("from_a_newer_build"), None);
    }

    fn entry(seq: i64, key: &str, action: &str, phase: Phase) -> JournalEntry {
        JournalEntry {
            seq,
            run_id: "r".into(),
            action_key: key.into(),
            action: Action::parse(action).unwrap_or_else(|| panic!("{action}")),
            account_key: "acct".into(),
            phase,
            before: None,
            after: None,
            request_id: None,
            client_request_id: None,
            error: None,
            at: "2026-11-23T00:00:00Z"
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
        }
    }

    #[test]
    fn changes_count_each_action_once_by_its_last_record() {
        let entries = vec![
            entry(1, "i1", "invite", Phase::Started),
            entry(2, "i1", "invite", Phase::Done),
            entry(3, "i2", "invite", Phase::Started),
            entry(4, "i2", "invite", Phase::Failed),
            entry(5, "i3", "invite", Phase::Started),
            entry(6, "old", "invite", Phase::Done),
            entry(7, "m1", "set_directory_mail", Phase::Started),
            entry(8, "m1", "set_directory_mail", Phase::Done),
        ];
        let c = count_changes(&entries);
        assert_eq!(
            c,
            vec![
                ActionCount {
                    action: "invite".into(),
                    done: 1,
                    failed: 1,
                    interrupted: 1,
                    reconciled: 1
                },
                ActionCount {
                    action: "set_directory_mail".into(),
                    done: 1,
                    failed: 0,
                    interrupted: 0,
                    reconciled: 0
                },
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn atomic_writes_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("report.csv");
        write_atomic(&path, b"x").expect("write");
        write_atomic(&path, b"y").expect("rewrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"y");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0);
    }

    /// A plan with one blocked account and one address write, whose directory values are
    /// `name`, `dn` and `address`.
    fn hostile_plan(name: &str, dn: &str, address: &str) -> Plan {
        use crate::plan::{AccountOutcome, Action, Explained, Summary};
        Plan {
            schema_version: 1,
            generated_at: "2026-11-23T00:00:00Z".into(),
            fingerprint: "f".into(),
            mappings: vec![],
            actions: vec![Action {
                account: "k2".into(),
                seq: 0,
                op: Op::SetDirectoryMail {
                    dn: dn.into(),
                    from: None,
                    to: address.into(),
                },
            }],
            accounts: vec![
                AccountOutcome {
                    key: "k1".into(),
                    mapping: "partners".into(),
                    dn: dn.into(),
                    account_name: Some(name.into()),
                    kind: None,
                    cloud_id: None,
                    upn: None,
                    address: None,
                    state: Lifecycle::Blocked,
                    stage: Lifecycle::Blocked,
                    next: Lifecycle::Blocked,
                    reasons: vec![Explained {
                        reason: BlockReason::Mailbox,
                        message: format!("{address} has a mailbox"),
                        help: BlockReason::Mailbox.help(),
                    }],
                    warnings: vec![],
                    accepted_change: None,
                },
                AccountOutcome {
                    key: "k2".into(),
                    mapping: "partners".into(),
                    dn: dn.into(),
                    account_name: Some(name.into()),
                    kind: None,
                    cloud_id: None,
                    upn: None,
                    address: Some(address.into()),
                    state: Lifecycle::NeedsAddress,
                    stage: Lifecycle::NeedsAddress,
                    next: Lifecycle::AwaitingSync,
                    reasons: vec![],
                    warnings: vec![],
                    accepted_change: None,
                },
            ],
            summary: Summary::default(),
            carried: vec![],
        }
    }

    // See: issue 10, finding 8 (the plan CSV wrote `=...` cells raw).
    #[test]
    fn every_csv_neutralizes_cells_a_spreadsheet_would_run() {
        for (raw, shown) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+1+1", "'+1+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(csv_cell(raw), shown, "{raw:?}");
        }

        let formula = "=cmd|' /C calc'!A0";
        let plan = hostile_plan(formula, "@CN=x,OU=P", "-1+x@fabrikam.example");
        let csv = plan_csv(&plan).expect("csv");
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
        assert_eq!(&rows[0][0], "'=cmd|' /C calc'!A0", "{csv}");
        assert_eq!(&rows[0][1], "'@CN=x,OU=P", "{csv}");
        assert_eq!(&rows[0][6], "'-1+x@fabrikam.example has a mailbox", "{csv}");
        for row in &rows {
            for cell in row {
                assert!(
                    !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                    "{cell:?}"
                );
            }
        }

        let rows = vec![JournalRow {
            seq: 1,
            at: "2026-11-23T00:00:00Z".into(),
            run_id: "r".into(),
            account: "=1+1".into(),
            action: "set_directory_mail".into(),
            phase: "done".into(),
            before: None,
            after: Some("+x@fabrikam.example".into()),
            request_id: None,
            client_request_id: None,
            error: Some("@error".into()),
            action_key: "k/0/set_directory_mail".into(),
            account_key: "k".into(),
        }];
        let csv = journal_csv(&rows).expect("csv");
        assert_eq!(
            csv,
            "seq,at,run_id,account,action,phase,before,after,request_id,client_request_id,error,action_key,account_key\n\
             1,2026-11-23T00:00:00Z,r,'=1+1,set_directory_mail,done,,'+x@fabrikam.example,,,'@error,k/0/set_directory_mail,k\n"
        );
        assert_eq!(
            journal_csv(&[]).expect("csv"),
            format!("{}\n", JournalRow::COLUMNS.join(","))
        );
    }

    // See: issue 10, finding 8 (ESC sequences from the directory reached the terminal).
    #[test]
    fn the_plan_and_status_tables_escape_control_characters() {
        let name = "evil\u{1b}[2J\u{1b}]0;pwned\u{7}";
        let dn = "CN=x\rhelp: run rm -rf,OU=P";
        let plan = hostile_plan(name, dn, "a\u{202e}moc.elpmaxe@b");
        let text = plan_text(&plan);
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
            "{text:?}"
        );
        assert!(
            text.contains("evil\\u{1b}[2J\\u{1b}]0;pwned\\u{7}"),
            "{text}"
        );
        assert!(text.contains("CN=x\\u{d}help: run rm -rf"), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("help: run")), "{text}");

        let now: jiff::Timestamp = "2026-11-23T00:00:00Z".parse().expect("time");
        let mut row = record("k", Lifecycle::Invited, None, Some("2026-10-01T00:00:00Z"));
        row.dn = Some(format!("CN={name}"));
        let mut blocked = record("b", Lifecycle::Blocked, Some("x\u{1b}[31m"), None);
        blocked.dn = None;
        let s = status(&[row, blocked], vec![], 14, now);
        let text = status_text(&s);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("CN=evil\\u{1b}[2J"), "{text}");
        assert_eq!(terminal_safe("Ana Adams"), "Ana Adams");
        assert_eq!(terminal_safe("Zoë\tX"), "Zoë\\u{9}X");
    }

    // See: issue 10, finding 8 (a full disk got the wrong help).
    #[test]
    fn a_full_disk_gets_its_own_help_when_writing_a_report() {
        let path = Path::new("/srv/reports/plan.csv");
        for e in [
            std::io::Error::from(std::io::ErrorKind::StorageFull),
            std::io::Error::from_raw_os_error(28), // ENOSPC
        ] {
            let help = write_help(path, &e);
            assert!(
                help.starts_with("the disk holding /srv/reports is full; free space and run again; nothing was lost:"),
                "{e}: {help}"
            );
        }
        let help = write_help(
            path,
            &std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert_eq!(help, "check that the directory exists and is writable");
    }
}
