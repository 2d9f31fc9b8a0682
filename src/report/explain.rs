//! `explain ACCOUNT`: everything the state store knows of one account, for the helpdesk's
//! "what about this partner?": its state, kind and join, the reason it is held back and the
//! fix, the next step and what it waits for, and its timeline from the journal. Pure: finds
//! and describes from the store's rows, never contacts a server.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{JournalRow, account_name, reason_help, terminal_safe};
use crate::model::{Lifecycle, Names};
use crate::state::{AccountRecord, JournalEntry};

/// An account that cannot be told apart.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no account in the state store is known as {0:?}")]
    Unknown(String),
    #[error("{query:?} names {} accounts: {}", candidates.len(), candidates.join("; "))]
    Ambiguous {
        query: String,
        candidates: Vec<String>,
    },
}

impl Error {
    /// One line telling the admin what to do.
    pub fn help(&self) -> String {
        match self {
            Error::Unknown(_) => "pass a sAMAccountName, UPN, DN, external address or cloud object id of an account in scope; `b2bsync status --accounts` lists them (an account a run has not planned yet is not in the state store: run `b2bsync run` first)".into(),
            Error::Ambiguous { .. } => {
                "pass the DN or the cloud object id of the account you mean".into()
            }
        }
    }
}

/// Everything `explain` says of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// `name (DN)`, as everywhere ([`crate::model::AccountName`]).
    pub account: String,
    pub key: String,
    pub dn: Option<String>,
    /// `sAMAccountName` (AD) or `uid`.
    pub account_name: Option<String>,
    pub state: Lifecycle,
    /// `synced` or `cloud_only`; `None` before it is joined.
    pub kind: Option<String>,
    /// The source anchor the account is joined by (`None` when it is keyed by DN).
    pub anchor: Option<String>,
    pub cloud_id: Option<String>,
    pub upn: Option<String>,
    /// The external address staged.
    pub address: Option<String>,
    pub reason: Option<String>,
    /// The reason's fix.
    pub help: Option<String>,
    /// The next step, and when it can happen.
    pub next_step: String,
    pub invited_at: Option<jiff::Timestamp>,
    pub invitations_sent: u32,
    pub password_randomized_at: Option<jiff::Timestamp>,
    pub sessions_revoked_at: Option<jiff::Timestamp>,
    /// Every journal record of the account, oldest first.
    pub timeline: Vec<JournalRow>,
}

/// The account `query` names: its key, DN, sAMAccountName, UPN, external address or cloud
/// object id, compared case-insensitively (as AD and Entra ID compare them).
pub fn find<'a>(
    accounts: &'a [AccountRecord],
    names: &BTreeMap<String, Names>,
    query: &str,
) -> Result<&'a AccountRecord, Error> {
    let q = query.trim();
    let is = |v: Option<&str>| v.is_some_and(|v| !v.is_empty() && v.eq_ignore_ascii_case(q));
    let found: Vec<&AccountRecord> = accounts
        .iter()
        .filter(|a| {
            let n = names.get(&a.key);
            a.key == q
                || is(a.dn.as_deref())
                || is(a.progress.address.as_deref())
                || is(a.progress.cloud_id.as_deref())
                || is(n.and_then(|n| n.account_name.as_deref()))
                || is(n.and_then(|n| n.upn.as_deref()))
        })
        .collect();
    match found.as_slice() {
        [] => Err(Error::Unknown(q.to_string())),
        [one] => Ok(one),
        many => Err(Error::Ambiguous {
            query: q.to_string(),
            candidates: many
                .iter()
                .map(|a| account_name(&a.key, a.dn.as_deref(), names).to_string())
                .collect(),
        }),
    }
}

/// What the next run does with an account in `a`'s state, and what it waits for.
fn next_step(a: &AccountRecord) -> String {
    let p = &a.progress;
    let when = |t: Option<jiff::Timestamp>| {
        t.map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| "an unrecorded time".into())
    };
    let address = p.address.as_deref().unwrap_or("the mapped address");
    let cloud_only = a.kind.as_deref() == Some("cloud_only");
    match a.state_now() {
        Lifecycle::Gone => format!(
            "nothing: the account left the directory's scope {} (deleted, moved out of the base DNs, or no longer matching the filter); if it comes back with the same anchor (a Recycle Bin restore), its lifecycle resumes where it stood ({})",
            when(a.gone_at),
            p.state
        ),
        Lifecycle::Unmatched => "none until a cloud user joins: the next `plan` or `run` reads the tenant's users again and joins by the anchor (fix the reason below first)".into(),
        Lifecycle::Blocked => "none until the reason below is fixed: the next `plan` or `run` reads the directory and the tenant again and re-checks every precondition".into(),
        Lifecycle::NeedsAddress if cloud_only => format!(
            "the next run writes {address} to the cloud user's otherMails and mail (Graph)"
        ),
        Lifecycle::NeedsAddress => format!(
            "the next run writes {address} to AD mail; the invitation follows once the sync engine (Entra Connect or Cloud Sync) carries it to the cloud"
        ),
        Lifecycle::AwaitingSync => format!(
            "waiting for the sync cycle (Entra Connect or Cloud Sync) since {}: AD mail holds {address}; the first run after the cycle reads the cloud user and invites it (`plan` reads the tenant to see whether the cycle ran)",
            when(p.address_staged_at)
        ),
        Lifecycle::Ready => format!("the next run invites {address}"),
        Lifecycle::Invited => format!(
            "waiting for the partner to accept the invitation sent {} ({} sent); each run reads externalUserState and re-invites when the policy says",
            when(p.invited_at),
            p.invitations_sent
        ),
        Lifecycle::Accepted => "the next run randomizes the on-premises password (as `[policy] randomize_password` says) and converts the account".into(),
        Lifecycle::Done => format!(
            "nothing: converted{}",
            p.password_randomized_at
                .map(|t| format!("; on-premises password randomized {}", when(Some(t))))
                .unwrap_or_default()
        ),
    }
}

/// Explains `a` from its stored row, names and journal records.
pub fn explain(
    a: &AccountRecord,
    names: &BTreeMap<String, Names>,
    journal: Vec<JournalEntry>,
) -> Explanation {
    let n = names.get(&a.key);
    let held = matches!(a.progress.state, Lifecycle::Blocked | Lifecycle::Unmatched);
    let reason = a.reason.clone().filter(|_| held);
    let dn_keyed = a.key.starts_with("dn:");
    let timeline = journal
        .into_iter()
        .map(|e| JournalRow::of(e, String::new()))
        .collect();
    Explanation {
        account: account_name(&a.key, a.dn.as_deref(), names).to_string(),
        key: a.key.clone(),
        dn: a.dn.clone(),
        account_name: n.and_then(|n| n.account_name.clone()),
        state: a.progress.state,
        kind: a.kind.clone(),
        anchor: (!dn_keyed).then(|| a.key.clone()),
        cloud_id: a.progress.cloud_id.clone(),
        upn: n.and_then(|n| n.upn.clone()),
        address: a.progress.address.clone(),
        help: reason.as_deref().and_then(reason_help),
        reason,
        next_step: next_step(a),
        invited_at: a.progress.invited_at,
        invitations_sent: a.progress.invitations_sent,
        password_randomized_at: a.progress.password_randomized_at,
        sessions_revoked_at: a.progress.sessions_revoked_at,
        timeline,
    }
}

/// The explanation for a terminal.
pub fn explain_text(x: &Explanation) -> String {
    let safe = |v: &str| terminal_safe(v).into_owned();
    let opt = |v: &Option<String>| v.as_deref().map_or_else(|| "-".to_string(), safe);
    let at = |t: Option<jiff::Timestamp>| {
        t.map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let mut out = String::new();
    out.push_str(&format!("account:    {}\n", safe(&x.account)));
    out.push_str(&format!("state:      {}\n", x.state));
    out.push_str(&format!(
        "kind:       {}\n",
        x.kind.as_deref().map_or("- (not joined)", |k| match k {
            "cloud_only" => "cloud-only",
            other => other,
        })
    ));
    out.push_str(&format!(
        "join:       anchor {}, cloud user {}, UPN {}\n",
        opt(&x.anchor),
        opt(&x.cloud_id),
        opt(&x.upn)
    ));
    out.push_str(&format!("address:    {}\n", opt(&x.address)));
    if let Some(reason) = &x.reason {
        out.push_str(&format!("reason:     {}\n", safe(reason)));
        out.push_str(&format!(
            "help:       {}\n",
            x.help.as_deref().map_or_else(
                || "this b2bsync does not know the reason code: run `b2bsync plan` to see it"
                    .to_string(),
                safe
            )
        ));
    }
    out.push_str(&format!("next step:  {}\n", safe(&x.next_step)));
    out.push_str(&format!(
        "invited:    {} ({} sent)\n",
        at(x.invited_at),
        x.invitations_sent
    ));
    out.push_str(&format!("randomized: {}\n", at(x.password_randomized_at)));
    out.push_str(&format!(
        "\ntimeline ({} journal records)\n",
        x.timeline.len()
    ));
    for e in &x.timeline {
        let change = match (&e.before, &e.after) {
            (b, Some(a)) => format!("{} -> {a}", b.as_deref().unwrap_or("(nothing)")),
            (Some(b), None) => format!("was {b}"),
            (None, None) => String::new(),
        };
        out.push_str(&format!(
            "  {}  run {}  {} {}  {}{}{}\n",
            e.at.get(..19).unwrap_or(&e.at).replace('T', " "),
            e.run_id,
            e.action,
            e.phase,
            safe(&change),
            e.request_id
                .as_deref()
                .map(|r| format!("  request-id {}", safe(r)))
                .unwrap_or_default(),
            e.error
                .as_deref()
                .map(|r| format!("  error: {}", safe(r)))
                .unwrap_or_default(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Progress;

    fn row(key: &str, dn: &str, state: Lifecycle, address: Option<&str>) -> AccountRecord {
        AccountRecord {
            key: key.into(),
            dn: Some(dn.into()),
            kind: Some("synced".into()),
            reason: None,
            updated_at: "2026-11-23T00:00:00Z".parse().expect("time"),
            gone_at: None,
            progress: Progress {
                state,
                address: address.map(str::to_string),
                ..Progress::default()
            },
        }
    }

    #[test]
    fn an_account_is_found_by_any_of_its_names_and_an_ambiguous_one_lists_the_candidates() {
        let rows = vec![
            row(
                "a1",
                "CN=Ana,OU=P",
                Lifecycle::Done,
                Some("ana@fabrikam.example"),
            ),
            row(
                "b1",
                "CN=Bob,OU=P",
                Lifecycle::Invited,
                Some("shared@x.example"),
            ),
            row(
                "c1",
                "CN=Cy,OU=P",
                Lifecycle::Ready,
                Some("shared@x.example"),
            ),
        ];
        let names: BTreeMap<String, Names> = [(
            "a1".to_string(),
            Names {
                account_name: Some("p.adams".into()),
                upn: Some("ana@corp.example".into()),
            },
        )]
        .into();
        for q in [
            "P.ADAMS",
            "ana@corp.example",
            "cn=ana,ou=p",
            "Ana@Fabrikam.example",
            "a1",
        ] {
            assert_eq!(
                find(&rows, &names, q).map(|a| a.key.as_str()).ok(),
                Some("a1"),
                "{q}"
            );
        }
        let err = find(&rows, &names, "shared@x.example").expect_err("ambiguous");
        assert!(
            matches!(&err, Error::Ambiguous { candidates, .. } if candidates.len() == 2),
            "{err}"
        );
        assert!(err.to_string().contains("CN=Bob,OU=P") && !err.help().is_empty());
        assert!(matches!(
            find(&rows, &names, "nobody"),
            Err(Error::Unknown(_))
        ));
    }

    #[test]
    fn the_next_step_of_an_account_awaiting_sync_names_the_cycle_it_waits_for() {
        let mut a = row(
            "a1",
            "CN=Ana,OU=P",
            Lifecycle::AwaitingSync,
            Some("ana@f.example"),
        );
        a.progress.address_staged_at = Some("2026-11-23T10:32:00Z".parse().expect("time"));
        let x = explain(&a, &BTreeMap::new(), vec![]);
        assert!(
            x.next_step
                .starts_with("waiting for the sync cycle (Entra Connect or Cloud Sync) since 2026-11-23 10:32 UTC"),
            "{}",
            x.next_step
        );
        assert_eq!(x.reason, None);
        let text = explain_text(&x);
        assert!(text.contains("state:      awaiting_sync"), "{text}");
    }
}
