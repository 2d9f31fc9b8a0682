//! What b2bsync tells people: the migration funnel (`status`), what a run changed (`report`),
//! as a terminal table, CSV or JSON. Files are written atomically (temp file + rename) and
//! owner-only. Reports come from the state store alone and carry no secret.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::apply::{Outcome, reconcile::Reconciled};
use crate::model::Lifecycle;
use crate::plan::{Op, Plan};
use crate::state::{AccountRecord, JournalEntry, RunRecord};

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

/// The migration funnel, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Accounts per lifecycle state, every state present (zero included), funnel order.
    pub states: Vec<StateCount>,
    /// Blocked accounts per reason, most frequent first.
    pub blocked: Vec<ReasonCount>,
    /// Invitations pending for more than `pending_days` days.
    pub pending_invitations: Vec<PendingInvitation>,
    pub pending_days: i64,
    pub total: usize,
    pub runs: Vec<RunRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateCount {
    pub state: Lifecycle,
    pub accounts: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    pub reason: String,
    pub accounts: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingInvitation {
    pub key: String,
    pub dn: Option<String>,
    pub invited_at: String,
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
    let mut pending = Vec::new();
    for a in accounts {
        *per_state.entry(a.progress.state).or_default() += 1;
        if a.progress.state == Lifecycle::Blocked {
            let reason = a.reason.clone().unwrap_or_else(|| "unknown".into());
            *reasons.entry(reason).or_default() += 1;
        }
        if a.progress.state == Lifecycle::Invited
            && let Some(at) = &a.progress.invited_at
            && let Ok(t) = at.parse::<jiff::Timestamp>()
        {
            let days = (now.as_second() - t.as_second()) / 86_400;
            if days >= pending_days {
                pending.push(PendingInvitation {
                    key: a.key.clone(),
                    dn: a.dn.clone(),
                    invited_at: at.clone(),
                    days,
                });
            }
        }
    }
    let mut blocked: Vec<ReasonCount> = reasons
        .into_iter()
        .map(|(reason, accounts)| ReasonCount { reason, accounts })
        .collect();
    blocked.sort_by(|a, b| b.accounts.cmp(&a.accounts).then(a.reason.cmp(&b.reason)));
    pending.sort_by(|a, b| b.days.cmp(&a.days).then(a.key.cmp(&b.key)));
    Status {
        states: FUNNEL
            .iter()
            .map(|s| StateCount {
                state: *s,
                accounts: per_state.get(s).copied().unwrap_or(0),
            })
            .collect(),
        blocked,
        pending_invitations: pending,
        pending_days,
        total: accounts.len(),
        runs,
    }
}

/// The funnel as a plain-text table for a terminal or a log.
pub fn status_text(s: &Status) -> String {
    let mut out = String::new();
    out.push_str(&format!("{:<15} {:>8}\n", "state", "accounts"));
    for c in &s.states {
        out.push_str(&format!("{:<15} {:>8}\n", c.state.as_str(), c.accounts));
    }
    out.push_str(&format!("{:<15} {:>8}\n", "total", s.total));
    if !s.blocked.is_empty() {
        out.push_str("\nblocked because\n");
        for b in &s.blocked {
            out.push_str(&format!("  {:>6}  {}\n", b.accounts, b.reason));
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
                p.dn.as_deref().unwrap_or(&p.key)
            ));
        }
    }
    out
}

/// The funnel as CSV: `state,accounts` rows.
pub fn status_csv(s: &Status) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["state", "accounts"])?;
    for c in &s.states {
        w.write_record([c.state.as_str(), &c.accounts.to_string()])?;
    }
    csv_text(w)
}

/// Journal records as CSV, one row per record.
pub fn journal_csv(entries: &[JournalEntry]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for e in entries {
        w.serialize(e)?;
    }
    csv_text(w)
}

fn csv_text(w: csv::Writer<Vec<u8>>) -> Result<String, csv::Error> {
    let bytes = w
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// One line describing an operation: what changes, from what, to what.
fn describe_op(op: &Op) -> String {
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
    match op {
        Op::SetDirectoryMail { dn, from, to } => format!("{dn}: AD mail {} -> {to}", show(from)),
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
            format!("user {user_id}: {}", parts.join(", "))
        }
        Op::Invite(inv) => format!(
            "user {}: invite {} (redirect {})",
            inv.user_id, inv.email, inv.redirect_url
        ),
        Op::Reinvite(inv) => format!(
            "user {}: re-invite {} (attempt {})",
            inv.user_id, inv.email, inv.attempt
        ),
        Op::RandomizePassword { dn, .. } => {
            format!("{dn}: on-premises password -> random, unknown")
        }
        Op::SetUserType { user_id, from, to } => {
            format!("user {user_id}: userType {} -> {}", show(from), to.as_str())
        }
    }
}

/// The plan as a change review: actions grouped by kind, then blocked accounts grouped by
/// reason with the fix, then the funnel the plan leads to.
pub fn plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    let mut by_op: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for a in &plan.actions {
        by_op
            .entry(a.op.name())
            .or_default()
            .push(describe_op(&a.op));
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
    let mut blocked: BTreeMap<&str, Vec<(String, String, String)>> = BTreeMap::new();
    for acct in &plan.accounts {
        if let Some(r) = acct.reasons.first()
            && matches!(acct.state, Lifecycle::Blocked | Lifecycle::Unmatched)
        {
            blocked.entry(r.reason.code()).or_default().push((
                acct.account_name.clone().unwrap_or_else(|| acct.dn.clone()),
                r.message.clone(),
                r.help.clone(),
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
        w.write_record([
            acct.account_name.as_deref().unwrap_or(&acct.key),
            &acct.dn,
            &acct.kind.map(|k| k.to_string()).unwrap_or_default(),
            acct.state.as_str(),
            acct.next.as_str(),
            &ops.get(acct.key.as_str())
                .map(|o| o.join(" "))
                .unwrap_or_default(),
            reason.map(|r| r.message.as_str()).unwrap_or_default(),
            reason.map(|r| r.help.as_str()).unwrap_or_default(),
        ])?;
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
        text.push_str(&format!(
            " Reconciled {} interrupted action(s) of an earlier run ({} confirmed, none repeated).",
            reconciled.confirmed + reconciled.released,
            reconciled.confirmed
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
            updated_at: "2026-11-01T00:00:00Z".into(),
            progress: Progress {
                state,
                invited_at: invited_at.map(str::to_string),
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
                accounts: 2
            }
        );
        assert_eq!(s.pending_invitations.len(), 1);
        assert_eq!(s.pending_invitations[0].days, 22);
        let text = status_text(&s);
        assert!(text.contains("blocked because"));
        let csv = status_csv(&s).expect("csv");
        assert!(csv.starts_with("state,accounts\nunmatched,0\n"), "{csv}");
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
}
