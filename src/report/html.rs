//! The migration report as one self-contained HTML page (`status --html FILE`): the funnel,
//! the block reasons with their fixes, pending invitations by age, and every run with what it
//! changed. Pure: renders a [`Status`] to a string, nothing else.
//!
//! The page is a minijinja template, `status.html.j2` next to this file, compiled into the
//! binary; `[report] template` points at an admin's copy instead (branding, language). The
//! template gets the data as a serializable context ([`Page`]) and the environment escapes
//! every value for HTML unless the template marks it safe: DNs and run summaries may contain
//! `<`, `&` and quotes. `n(key, value)` writes a number with a `data-n` attribute naming what
//! it counts, so a test can compare the page with `status --format json`.
//!
//! The page loads nothing (no scripts, no external style sheets, fonts or images) so it opens
//! from a file share or an email attachment and can be archived for auditors.

use std::path::{Path, PathBuf};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use super::history::History;
use super::{ActionCount, FUNNEL, ReasonCount, Status, chart};
use crate::model::Lifecycle;

/// The built-in template (`b2bsync status --print-template` prints it).
pub const TEMPLATE: &str = include_str!("status.html.j2");

/// The name the built-in template is known by in errors.
const BUILT_IN: &str = "status.html.j2 (built in)";

/// Where the page's template comes from.
#[derive(Debug, Clone, Copy)]
pub enum Template<'a> {
    /// The one compiled into the binary.
    BuiltIn,
    /// An admin's copy (`[report] template`): its path, for errors, and its text.
    File { path: &'a Path, text: &'a str },
}

/// A template that does not compile or render.
#[derive(Debug, thiserror::Error)]
#[error("{location}: the report template is invalid: {detail}")]
pub struct Error {
    /// `file:line:column`, `file:line`, or the file alone when minijinja gives no position.
    pub location: String,
    pub detail: String,
    pub path: Option<PathBuf>,
}

impl Error {
    pub fn help(&self) -> String {
        match &self.path {
            Some(p) => format!(
                "fix the template at the position shown, or remove `[report] template` to use \
                 the built-in page (`b2bsync status --print-template > {}` starts a copy again)",
                p.display()
            ),
            None => {
                "the built-in template is broken: this is a bug in b2bsync, please report it".into()
            }
        }
    }

    fn new(e: &minijinja::Error, template: Template<'_>) -> Error {
        let (name, path, text) = match template {
            Template::BuiltIn => (BUILT_IN.to_string(), None, TEMPLATE),
            Template::File { path, text } => {
                (path.display().to_string(), Some(path.to_path_buf()), text)
            }
        };
        let location = match position(e, text) {
            Some((line, col)) => format!("{name}:{line}:{col}"),
            None => match e.line() {
                Some(line) => format!("{name}:{line}"),
                None => name,
            },
        };
        let detail = e
            .detail()
            .map_or_else(|| e.kind().to_string(), str::to_string);
        Error {
            location,
            detail,
            path,
        }
    }
}

/// Where an error stands, as 1-based line and column (in characters). minijinja (with its
/// `debug` feature and debug mode on) gives the byte range of the failing expression or tag
/// for syntax errors, unknown filters, tests and functions, undefined values in strict mode
/// and errors at render time; the column is where that range starts. When an error has no
/// range but names an unknown filter, test or function, the column is where that name first
/// stands as a whole word on the error's line.
fn position(e: &minijinja::Error, text: &str) -> Option<(usize, usize)> {
    if let Some(start) = e.range().map(|r| r.start).filter(|&s| s <= text.len())
        && text.is_char_boundary(start)
    {
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = text[line_start..start].chars().count() + 1;
        return Some((line, col));
    }
    let line = e.line()?;
    Some((line, name_column(e, text, line)?))
}

/// The column of the unknown filter, test or function an error names, on `line`.
fn name_column(e: &minijinja::Error, text: &str, line: usize) -> Option<usize> {
    use minijinja::ErrorKind;
    if !matches!(
        e.kind(),
        ErrorKind::UnknownFilter | ErrorKind::UnknownTest | ErrorKind::UnknownFunction
    ) {
        return None;
    }
    let source_line = text.lines().nth(line.checked_sub(1)?)?;
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    // The detail reads "filter NAME is unknown", "test NAME is unknown" or "NAME is unknown".
    let detail = e.detail()?.strip_suffix(" is unknown")?;
    let name = detail.rsplit(' ').next().filter(|w| !w.is_empty())?;
    source_line
        .match_indices(name)
        .find(|&(at, _)| {
            let before = source_line[..at].chars().next_back();
            let after = source_line[at + name.len()..].chars().next();
            !before.is_some_and(ident) && !after.is_some_and(ident)
        })
        .map(|(at, _)| source_line[..at].chars().count() + 1)
}

/// What a state means, in the words of the lifecycle table.
fn state_meaning(state: Lifecycle) -> &'static str {
    match state {
        Lifecycle::Unmatched => "in scope on-premises, no cloud user joined (or several)",
        Lifecycle::Blocked => "a precondition fails: see the reasons and fixes below",
        Lifecycle::NeedsAddress => "joined; the external address is not staged yet",
        Lifecycle::AwaitingSync => "AD holds the address; waiting for the sync cycle",
        Lifecycle::Ready => "the cloud shows the address; to be invited",
        Lifecycle::Invited => "invitation sent; waiting for the partner to accept",
        Lifecycle::Accepted => "accepted; on-premises password not yet randomized",
        Lifecycle::Done => "converted; on-premises password randomized (or not applicable)",
        Lifecycle::Gone => {
            "left the directory's scope (deleted, moved out or filtered out); nothing is written for it"
        }
    }
}

/// The bar colour class of a state.
fn state_class(state: Lifecycle) -> &'static str {
    match state {
        Lifecycle::Unmatched | Lifecycle::Blocked => "stop",
        Lifecycle::NeedsAddress
        | Lifecycle::AwaitingSync
        | Lifecycle::Ready
        | Lifecycle::Accepted => "work",
        Lifecycle::Invited | Lifecycle::Gone => "wait",
        Lifecycle::Done => "done",
    }
}

/// The meaning of a stored exit code ([`super::Exit`]).
fn exit_meaning(code: i64) -> &'static str {
    super::Exit::from_code(code).map_or("unknown exit code", super::Exit::meaning)
}

/// Width of a bar in percent of `max` (the total it is a share of), at least a sliver when the value is not zero, as the
/// text of a CSS percentage (`12.5`).
fn width(value: usize, max: usize) -> String {
    if value == 0 || max == 0 {
        return "0.0".into();
    }
    // Counts stay far below 2^52, so the conversions are exact.
    format!("{:.1}", (value as f64 / max as f64 * 100.0).max(0.8))
}

/// A time as `2026-11-23 17:20:11 UTC`.
fn utc(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// How long a run took, when it finished: `0.4 s`, `12 s`, `3 min 5 s`, `2 h 4 min`.
fn duration(start: jiff::Timestamp, end: Option<jiff::Timestamp>) -> Option<String> {
    let end = end?;
    let ms = (end.as_millisecond() - start.as_millisecond()).max(0);
    let secs = ms / 1000;
    Some(if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if secs < 60 {
        format!("{secs} s")
    } else if secs < 3600 {
        format!("{} min {} s", secs / 60, secs % 60)
    } else {
        format!("{} h {} min", secs / 3600, secs % 3600 / 60)
    })
}

fn percent(value: usize, total: usize) -> String {
    if total == 0 {
        return "–".into();
    }
    format!("{:.1} %", value as f64 / total as f64 * 100.0)
}

/// Everything the template sees. Field names are the template's vocabulary: renaming one
/// breaks admins' copies, so add fields rather than rename them.
#[derive(Debug, Serialize)]
pub struct Page {
    /// `2026-11-23 17:20 UTC`.
    pub generated: String,
    /// Accounts in scope.
    pub total: usize,
    pub tiles: Tiles,
    /// Every lifecycle state in funnel order, zeros included.
    pub funnel: Vec<FunnelRow>,
    /// Blocked, then unmatched accounts by reason.
    pub reasons: Vec<Reasons>,
    /// Pending invitations by age.
    pub ages: Vec<AgeRow>,
    /// `--pending-days`.
    pub pending_days: i64,
    /// Invitations pending `pending_days` or more, longest first.
    pub long: Vec<LongRow>,
    /// Runs, newest first.
    pub runs: Vec<RunRow>,
    /// Progress over time, from the journal.
    pub history: HistoryView,
    /// `[graph] tenant`: the tenant the page describes.
    pub tenant: String,
    /// The directory the page describes: its URL and the mappings' search bases.
    pub directory: String,
    /// One row per account (the first [`ACCOUNT_ROWS`], by name).
    pub accounts: Vec<AccountView>,
    /// Every account the state store holds (the list may show fewer).
    pub accounts_total: usize,
    /// Accounts per partner domain.
    pub partner_domains: Vec<DomainView>,
}

/// Most accounts the page lists one by one; `status --accounts --format csv` lists them all.
pub const ACCOUNT_ROWS: usize = 5000;

/// One account of the per-account section.
#[derive(Debug, Serialize)]
pub struct AccountView {
    pub key: String,
    /// UPN or account name; `-` when the store has neither yet.
    pub name: String,
    pub dn: String,
    pub state: &'static str,
    pub class: &'static str,
    pub reason: String,
    pub help: String,
    pub partner_domain: String,
    pub invited: String,
    pub accepted: String,
    pub randomized: String,
}

/// One partner domain's count.
#[derive(Debug, Serialize)]
pub struct DomainView {
    /// `(no address yet)` for accounts without one.
    pub domain: String,
    pub accounts: usize,
    /// `invited=3 done=2`.
    pub states: String,
}

/// The charts (inline SVG, already escaped and marked safe) and the projection.
#[derive(Debug, Serialize)]
pub struct HistoryView {
    /// Accounts per step at the end of each run, every account together; `None` before
    /// the first run.
    pub progress: Option<Value>,
    /// The same per partner domain (small multiples), when there are several domains.
    pub domains: Vec<DomainChart>,
    /// Invitations sent and accounts converted per day; `None` when none was.
    pub days: Option<Value>,
    /// The projection and its assumption, in one sentence.
    pub projection: String,
}

#[derive(Debug, Serialize)]
pub struct DomainChart {
    pub domain: String,
    pub chart: Value,
}

#[derive(Debug, Serialize)]
pub struct Tiles {
    pub done: usize,
    /// `12.5 %` of the accounts in scope.
    pub done_share: String,
    pub pending: usize,
    pub in_progress: usize,
    pub held: usize,
}

#[derive(Debug, Serialize)]
pub struct FunnelRow {
    pub state: &'static str,
    pub meaning: &'static str,
    /// `stop`, `work`, `wait` or `done`.
    pub class: &'static str,
    /// The bar's width in percent of the accounts in scope.
    pub width: String,
    pub accounts: usize,
    pub share: String,
}

#[derive(Debug, Serialize)]
pub struct Reasons {
    /// `blocked` or `unmatched`.
    pub key: &'static str,
    pub title: &'static str,
    /// What to say when no account is held back.
    pub empty: &'static str,
    pub total: usize,
    pub list: Vec<ReasonRow>,
}

#[derive(Debug, Serialize)]
pub struct ReasonRow {
    pub reason: String,
    pub accounts: usize,
    pub help: String,
}

#[derive(Debug, Serialize)]
pub struct AgeRow {
    pub bucket: &'static str,
    pub label: &'static str,
    pub class: &'static str,
    pub width: String,
    pub invitations: usize,
}

#[derive(Debug, Serialize)]
pub struct LongRow {
    /// The DN, or the anchor when the DN is unknown.
    pub account: String,
    pub invited: String,
    pub days: i64,
}

#[derive(Debug, Serialize)]
pub struct RunRow {
    pub id: String,
    pub started: String,
    pub took: Option<String>,
    pub command: String,
    /// `None` while running or after a crash.
    pub exit_code: Option<i64>,
    pub exit_meaning: &'static str,
    pub changes: Vec<ChangeRow>,
    pub summary: String,
}

#[derive(Debug, Serialize)]
pub struct ChangeRow {
    pub action: String,
    pub done: usize,
    /// Failed, interrupted and reconciled counts that are not zero.
    pub others: Vec<OtherCount>,
}

#[derive(Debug, Serialize)]
pub struct OtherCount {
    pub what: &'static str,
    pub count: usize,
    /// Shown as a problem (failed, interrupted).
    pub bad: bool,
}

impl Page {
    /// The context of the page for `s`, generated at `now`.
    pub fn new(s: &Status, now: jiff::Timestamp) -> Page {
        let count = |state: Lifecycle| {
            s.states
                .iter()
                .find(|c| c.state == state)
                .map_or(0, |c| c.accounts)
        };
        let pending: usize = s.invitations_by_age.iter().map(|b| b.invitations).sum();
        let funnel = FUNNEL
            .iter()
            .map(|&state| FunnelRow {
                state: state.as_str(),
                meaning: state_meaning(state),
                class: state_class(state),
                width: width(count(state), s.total),
                accounts: count(state),
                share: percent(count(state), s.total),
            })
            .collect();
        let ages = s
            .invitations_by_age
            .iter()
            .map(|b| AgeRow {
                bucket: b.bucket,
                label: b.label,
                class: match b.min_days {
                    Some(d) if d >= 30 => "stop",
                    Some(d) if d >= 14 => "work",
                    _ => "wait",
                },
                width: width(b.invitations, pending),
                invitations: b.invitations,
            })
            .collect();
        Page {
            generated: now.strftime("%Y-%m-%d %H:%M UTC").to_string(),
            total: s.total,
            tiles: Tiles {
                done: count(Lifecycle::Done),
                done_share: percent(count(Lifecycle::Done), s.total),
                pending,
                in_progress: count(Lifecycle::NeedsAddress)
                    + count(Lifecycle::AwaitingSync)
                    + count(Lifecycle::Ready)
                    + count(Lifecycle::Accepted),
                held: count(Lifecycle::Blocked) + count(Lifecycle::Unmatched),
            },
            funnel,
            reasons: vec![
                reasons(
                    "blocked",
                    "Blocked accounts by reason",
                    "No account is blocked.",
                    &s.blocked,
                ),
                reasons(
                    "unmatched",
                    "Unmatched accounts by reason",
                    "Every account in scope is joined to its cloud user.",
                    &s.unmatched,
                ),
            ],
            ages,
            pending_days: s.pending_days,
            long: s
                .pending_invitations
                .iter()
                .map(|p| LongRow {
                    account: p.dn.clone().unwrap_or_else(|| p.key.clone()),
                    invited: utc(p.invited_at),
                    days: p.days,
                })
                .collect(),
            runs: s
                .runs
                .iter()
                .rev()
                .map(|r| RunRow {
                    id: r.run.id.clone(),
                    started: utc(r.run.started_at),
                    took: duration(r.run.started_at, r.run.finished_at),
                    command: r.run.command.clone(),
                    exit_code: r.run.exit_code,
                    exit_meaning: r.run.exit_code.map_or("", exit_meaning),
                    changes: r.changes.iter().map(change).collect(),
                    summary: r.run.summary.clone().unwrap_or_default(),
                })
                .collect(),
            history: history_view(&s.history),
            tenant: s.about.tenant.clone(),
            directory: s.about.directory.clone(),
            accounts: s
                .accounts
                .accounts
                .iter()
                .take(ACCOUNT_ROWS)
                .map(account_view)
                .collect(),
            accounts_total: s.accounts.accounts.len(),
            partner_domains: s
                .accounts
                .domains
                .iter()
                .map(|d| DomainView {
                    domain: d
                        .partner_domain
                        .clone()
                        .unwrap_or_else(|| "(no address yet)".into()),
                    accounts: d.accounts,
                    states: d
                        .states
                        .iter()
                        .map(|c| format!("{}={}", c.state.as_str(), c.accounts))
                        .collect::<Vec<_>>()
                        .join(" "),
                })
                .collect(),
        }
    }
}

fn account_view(r: &super::AccountRow) -> AccountView {
    let day = |t: Option<jiff::Timestamp>| t.map(utc).unwrap_or_default();
    AccountView {
        key: r.key.clone(),
        name: if r.name.is_empty() {
            "-".into()
        } else {
            r.name.clone()
        },
        dn: r.dn.clone().unwrap_or_default(),
        state: r.state.as_str(),
        class: state_class(r.state),
        reason: r.reason.clone().unwrap_or_default(),
        help: r.help.clone().unwrap_or_default(),
        partner_domain: r.partner_domain.clone().unwrap_or_default(),
        invited: day(r.invited_at),
        accepted: day(r.accepted_at),
        randomized: day(r.password_randomized_at),
    }
}

fn history_view(h: &History) -> HistoryView {
    let safe = Value::from_safe_string;
    HistoryView {
        progress: (!h.all.is_empty()).then(|| safe(chart::progress(&h.all, "every account"))),
        domains: h
            .domains
            .iter()
            .map(|d| {
                let domain = d.domain.clone().unwrap_or_default();
                DomainChart {
                    chart: safe(chart::progress(&d.points, &domain)),
                    domain,
                }
            })
            .collect(),
        days: (!h.days.is_empty()).then(|| safe(chart::per_day(&h.days))),
        projection: h
            .projection
            .as_ref()
            .map(|p| p.text.clone())
            .unwrap_or_default(),
    }
}

fn reasons(
    key: &'static str,
    title: &'static str,
    empty: &'static str,
    list: &[ReasonCount],
) -> Reasons {
    Reasons {
        key,
        title,
        empty,
        total: list.iter().map(|r| r.accounts).sum(),
        list: list
            .iter()
            .map(|r| ReasonRow {
                reason: r.reason.clone(),
                accounts: r.accounts,
                help: r.help.clone().unwrap_or_else(|| {
                    "this b2bsync does not know the reason code: run `b2bsync plan` to see the \
                     reason"
                        .into()
                }),
            })
            .collect(),
    }
}

/// The changes of one kind of action in a run: `invite 3 done, 1 failed`.
fn change(c: &ActionCount) -> ChangeRow {
    ChangeRow {
        action: c.action.clone(),
        done: c.done,
        others: [
            ("failed", c.failed, true),
            ("interrupted", c.interrupted, true),
            ("reconciled", c.reconciled, false),
        ]
        .into_iter()
        .filter(|&(_, count, _)| count > 0)
        .map(|(what, count, bad)| OtherCount { what, count, bad })
        .collect(),
    }
}

/// `n(key, value)` in templates: a number tagged with what it counts. The key is escaped; the
/// result is marked safe so auto-escaping keeps the tag.
fn number(key: &str, value: Value) -> Value {
    let key = escape(key);
    let value = escape(&value.to_string());
    Value::from_safe_string(format!("<span class=\"n\" data-n=\"{key}\">{value}</span>"))
}

/// Escapes text for HTML content and quoted attributes, as minijinja's auto-escaping does.
fn escape(text: &str) -> String {
    minijinja::HtmlEscape(text).to_string()
}

/// Renders the page of `s` with `template`. `now` is the time shown as "generated".
pub fn render(s: &Status, now: jiff::Timestamp, template: Template<'_>) -> Result<String, Error> {
    let (name, text) = match template {
        Template::BuiltIn => (BUILT_IN, TEMPLATE),
        Template::File { text, .. } => ("status.html", text),
    };
    let mut env = Environment::empty();
    // Every value is escaped for HTML, whatever the template file is called.
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Debug mode keeps the byte range of every error, for its line and column.
    env.set_debug(true);
    // Block tags on their own line leave no blank line behind. The builder fails only on
    // clashing delimiters, and these are the defaults.
    if let Ok(syntax) = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.add_function("n", number);
    env.add_filter("length", minijinja::filters::length);
    env.add_test("none", minijinja::tests::is_none);
    env.add_template(name, text)
        .map_err(|e| Error::new(&e, template))?;
    let page = Page::new(s, now);
    env.get_template(name)
        .and_then(|t| t.render(minijinja::value::Serde(&page)))
        .map_err(|e| Error::new(&e, template))
}

/// Renders the page with the built-in template.
pub fn status_html(s: &Status, now: jiff::Timestamp) -> Result<String, Error> {
    render(s, now, Template::BuiltIn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Progress;
    use crate::report::status;
    use crate::state::{AccountRecord, RunRecord};

    #[test]
    fn text_from_the_store_is_escaped() {
        let now: jiff::Timestamp = "2026-11-23T00:00:00Z".parse().expect("time");
        let rows = vec![AccountRecord {
            key: "k".into(),
            dn: Some("CN=<script>&\"x\",OU=P".into()),
            kind: None,
            reason: None,
            updated_at: "2026-11-01T00:00:00Z"
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
            gone_at: None,
            progress: Progress {
                state: Lifecycle::Invited,
                invited_at: Some(
                    "2026-10-01T00:00:00Z"
                        .parse()
                        .unwrap_or_else(|e| panic!("{e}")),
                ),
                ..Progress::default()
            },
        }];
        let runs = vec![RunRecord {
            id: "r1".into(),
            command: "run".into(),
            started_at: "2026-11-22T00:00:00Z"
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
            finished_at: None,
            exit_code: Some(2),
            summary: Some("failed <b>x</b> & 'y'".into()),
            state_counts: None,
        }];
        let page = status_html(&status(&rows, runs, 14, now), now).expect("page");
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert!(page.contains("CN=&lt;script&gt;&amp;&quot;x&quot;,OU=P"));
        assert!(page.contains("failed &lt;b&gt;x&lt;&#x2f;b&gt; &amp; &#x27;y&#x27;"));
        assert!(page.contains("data-n=\"run.r1.exit\">2<"));
        assert!(!page.contains("http://") && !page.contains("https://"));
    }

    #[test]
    fn every_state_has_a_number_even_zero() {
        let now: jiff::Timestamp = "2026-11-23T00:00:00Z".parse().expect("time");
        let page = status_html(&status(&[], vec![], 14, now), now).expect("page");
        for state in FUNNEL {
            assert!(
                page.contains(&format!("data-n=\"state.{}\">0<", state.as_str())),
                "{state}"
            );
        }
        assert!(page.contains("No run yet."));
    }

    #[test]
    fn an_admin_template_is_escaped_by_default() {
        let now: jiff::Timestamp = "2026-11-23T00:00:00Z".parse().expect("time");
        let mut s = status(&[], vec![], 14, now);
        s.blocked.push(ReasonCount {
            reason: "<i>x</i>".into(),
            accounts: 2,
            help: None,
        });
        let path = Path::new("/etc/b2bsync/mine.j2");
        let text = "{% for r in reasons %}{{ r.list[0].reason if r.list else '-' }} {{ n(r.key, r.total) }};{% endfor %}";
        let page = render(&s, now, Template::File { path, text }).expect("page");
        assert_eq!(
            page,
            "&lt;i&gt;x&lt;&#x2f;i&gt; <span class=\"n\" data-n=\"blocked\">2</span>;\
             - <span class=\"n\" data-n=\"unmatched\">0</span>;"
        );
    }

    #[test]
    fn a_broken_template_says_file_line_and_column() {
        let now: jiff::Timestamp = "2026-11-23T00:00:00Z".parse().expect("time");
        let s = status(&[], vec![], 14, now);
        let path = Path::new("/etc/b2bsync/mine.j2");
        // (template, line:column, what the error says): every kind of error gives both.
        let cases = [
            // An unknown filter: where its name stands.
            (
                "<p>\n<p>{{ total | nosuchfilter }}</p>\n",
                "2:15",
                "nosuchfilter",
            ),
            // Syntax errors.
            (
                "<p>\n\n{% for x in %}</p>\n",
                "3:13",
                "unexpected end of block",
            ),
            ("<p>{{ total }\n", "1:13", "unexpected `}`"),
            // An unclosed block: where the input ends (its last token).
            (
                "{% if total %}\n<p>open</p>\n",
                "2:1",
                "unexpected end of input",
            ),
            // An unknown test and an unknown function.
            (
                "<p>\n  {% if total is nosuchtest %}x{% endif %}",
                "2:18",
                "nosuchtest",
            ),
            ("\n\n   {{ nosuchfunction(1) }}", "3:7", "nosuchfunction"),
            // An undefined variable is an error in strict mode, not an empty string; so is
            // an attribute of one.
            ("{{ totl }}", "1:4", "`totl` is undefined"),
            (
                "<ul>\n  <li>{{ tiles.nosuch.x }}</li>",
                "2:15",
                "`tiles.nosuch` is undefined",
            ),
            // Errors only rendering finds: an invalid operation, a loop over a number.
            ("<p>\n{{ total + \"x\" }}", "2:4", "unsupported types"),
            (
                "\n{% for x in total %}{{ x }}{% endfor %}",
                "2:13",
                "not iterable",
            ),
        ];
        for (text, at, says) in cases {
            let e = render(&s, now, Template::File { path, text }).expect_err(text);
            assert_eq!(
                e.location,
                format!("/etc/b2bsync/mine.j2:{at}"),
                "{text:?}: {e}"
            );
            assert!(e.to_string().to_lowercase().contains(says), "{text:?}: {e}");
            assert!(e.help().contains("--print-template"), "{}", e.help());
        }
    }
}
