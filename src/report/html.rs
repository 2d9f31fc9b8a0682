//! The migration report as one self-contained HTML page (`status --html FILE`): the funnel,
//! the block reasons with their fixes, pending invitations by age, and every run with what it
//! changed. Pure: renders a [`Status`] to a string, nothing else.
//!
//! The page loads nothing (no scripts, no external style sheets, fonts or images) so it opens
//! from a file share or an email attachment and can be archived for auditors. Every value from
//! the state store is escaped: DNs and run summaries may contain `<`, `&` and quotes. Each
//! number carries a `data-n` attribute naming what it counts, so a test can compare the page
//! with `status --format json`.

use std::fmt::Write as _;

use super::{ActionCount, FUNNEL, ReasonCount, Status};
use crate::model::Lifecycle;

/// Escapes text for HTML element content and double- or single-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// What a state means, in the words of the lifecycle table.
fn state_meaning(state: Lifecycle) -> &'static str {
    match state {
        Lifecycle::Unmatched => "in scope on-premises, no cloud user joined (or several)",
        Lifecycle::Blocked => "a precondition fails: see the reasons and fixes below",
        Lifecycle::NeedsAddress => "joined; the external address is not staged yet",
        Lifecycle::AwaitingSync => "AD holds the address; waiting for Entra Connect",
        Lifecycle::Ready => "the cloud shows the address; to be invited",
        Lifecycle::Invited => "invitation sent; waiting for the partner to accept",
        Lifecycle::Accepted => "accepted; on-premises password not yet randomized",
        Lifecycle::Done => "converted; on-premises password randomized (or not applicable)",
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
        Lifecycle::Invited => "wait",
        Lifecycle::Done => "done",
    }
}

/// The meaning of a stored exit code ([`super::Exit`]).
fn exit_meaning(code: i64) -> &'static str {
    super::Exit::from_code(code).map_or("unknown exit code", super::Exit::meaning)
}

/// A number cell or span tagged with what it counts.
fn n(key: &str, value: impl std::fmt::Display) -> String {
    format!(
        "<span class=\"n\" data-n=\"{}\">{value}</span>",
        escape(key)
    )
}

/// Width of a bar in percent of `max`, at least a sliver when the value is not zero.
fn width(value: usize, max: usize) -> f64 {
    if value == 0 || max == 0 {
        return 0.0;
    }
    // Counts stay far below 2^52, so the conversions are exact.
    (value as f64 / max as f64 * 100.0).max(0.8)
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

const STYLE: &str = r#"
:root { --ink: #1d2430; --muted: #5b6575; --line: #d9dee7; --bg: #f6f7f9;
  --stop: #c2413b; --work: #d68a1a; --wait: #2f6fbf; --done: #2e8b57; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; font: 14px/1.45 "DejaVu Sans", "Segoe UI", Arial, sans-serif;
  color: var(--ink); background: var(--bg); }
h1 { font-size: 22px; margin: 0 0 2px; }
h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
p.sub, .muted { color: var(--muted); }
p.sub { margin: 0 0 16px; }
code, .mono { font-family: "DejaVu Sans Mono", Consolas, monospace; font-size: 12.5px; }
.tiles { display: flex; gap: 12px; flex-wrap: wrap; }
.tile { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 16px; min-width: 150px; }
.tile .big { font-size: 26px; font-weight: 700; display: block; }
.tile.done .big { color: var(--done); } .tile.stop .big { color: var(--stop); }
.tile.wait .big { color: var(--wait); } .tile.work .big { color: var(--work); }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #eef1f5; font-weight: 600; font-size: 13px; }
td code { white-space: nowrap; }
td.mono, td .mono, .summary, td.help { overflow-wrap: anywhere; }
td.num, th.num { text-align: right; white-space: nowrap; width: 1%; }
td.bar { width: 38%; }
.track { background: #eef1f5; border-radius: 3px; height: 14px; }
.fill { height: 14px; border-radius: 3px; }
.fill.stop { background: var(--stop); } .fill.work { background: var(--work); }
.fill.wait { background: var(--wait); } .fill.done { background: var(--done); }
.chip { display: inline-block; margin: 0 6px 3px 0; padding: 1px 7px; border-radius: 10px;
  background: #eef1f5; white-space: nowrap; font-size: 12.5px; }
.chip .bad { color: var(--stop); font-weight: 600; }
.exit0 { color: var(--done); } .exit2, .exit4 { color: var(--work); } .exit1, .exit3, .exit5 { color: var(--stop); }
.summary { white-space: pre-wrap; font-size: 12.5px; max-width: 70ch; }
.none { color: var(--muted); font-style: italic; }
@media print { body { background: #fff; } }
"#;

/// Renders the whole page. `now` is the time shown as "generated".
pub fn status_html(s: &Status, now: jiff::Timestamp) -> String {
    let mut out = String::new();
    let generated = now.strftime("%Y-%m-%d %H:%M UTC").to_string();
    let count = |state: Lifecycle| {
        s.states
            .iter()
            .find(|c| c.state == state)
            .map_or(0, |c| c.accounts)
    };
    let pending: usize = s.invitations_by_age.iter().map(|b| b.invitations).sum();
    let held = count(Lifecycle::Blocked) + count(Lifecycle::Unmatched);
    let in_progress = count(Lifecycle::NeedsAddress)
        + count(Lifecycle::AwaitingSync)
        + count(Lifecycle::Ready)
        + count(Lifecycle::Accepted);

    // Writing to a String cannot fail; `let _ =` keeps the `fmt::Result` out of the way.
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <title>b2bsync migration status, {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&generated)
    );
    let _ = write!(
        out,
        "<h1>b2bsync migration status</h1>\n<p class=\"sub\">Generated {} from the state store \
         (no network). {} accounts in scope.</p>\n",
        escape(&generated),
        n("total", s.total)
    );

    // Tiles: the four numbers people ask first.
    let _ = write!(
        out,
        "<div class=\"tiles\">\n\
         <div class=\"tile done\"><span class=\"big\">{}</span>converted ({})</div>\n\
         <div class=\"tile wait\"><span class=\"big\">{}</span>invitations pending</div>\n\
         <div class=\"tile work\"><span class=\"big\">{}</span>in progress</div>\n\
         <div class=\"tile stop\"><span class=\"big\">{}</span>blocked or unmatched</div>\n</div>\n",
        n("tile.done", count(Lifecycle::Done)),
        escape(&percent(count(Lifecycle::Done), s.total)),
        n("tile.pending", pending),
        n("tile.in_progress", in_progress),
        n("tile.held", held),
    );

    // The funnel: every state, zeros included.
    let max = s.states.iter().map(|c| c.accounts).max().unwrap_or(0);
    out.push_str(
        "<h2 id=\"funnel\">Accounts per lifecycle state</h2>\n<table class=\"funnel\">\n\
         <tr><th>state</th><th>means</th><th class=\"bar\"></th><th class=\"num\">accounts</th>\
         <th class=\"num\">share</th></tr>\n",
    );
    for state in FUNNEL {
        let accounts = count(state);
        let _ = writeln!(
            out,
            "<tr data-state=\"{name}\"><td><code>{name}</code></td><td class=\"muted\">{}</td>\
             <td class=\"bar\"><div class=\"track\"><div class=\"fill {}\" style=\"width:{:.1}%\">\
             </div></div></td><td class=\"num\">{}</td><td class=\"num muted\">{}</td></tr>",
            escape(state_meaning(state)),
            state_class(state),
            width(accounts, max),
            n(&format!("state.{}", state.as_str()), accounts),
            escape(&percent(accounts, s.total)),
            name = state.as_str(),
        );
    }
    let _ = write!(
        out,
        "<tr><th>total</th><th></th><th></th><th class=\"num\">{}</th><th></th></tr>\n</table>\n",
        n("states.total", s.total)
    );

    reasons(
        &mut out,
        "blocked",
        "Blocked accounts by reason",
        "No account is blocked.",
        &s.blocked,
    );
    reasons(
        &mut out,
        "unmatched",
        "Unmatched accounts by reason",
        "Every account in scope is joined to its cloud user.",
        &s.unmatched,
    );

    // Pending invitations by age.
    out.push_str("<h2 id=\"pending\">Invitations pending, by age</h2>\n");
    let max = s
        .invitations_by_age
        .iter()
        .map(|b| b.invitations)
        .max()
        .unwrap_or(0);
    out.push_str(
        "<table class=\"ages\">\n<tr><th>waiting</th><th class=\"bar\"></th>\
         <th class=\"num\">invitations</th></tr>\n",
    );
    for b in &s.invitations_by_age {
        let class = match b.min_days {
            Some(d) if d >= 30 => "stop",
            Some(d) if d >= 14 => "work",
            _ => "wait",
        };
        let _ = writeln!(
            out,
            "<tr data-bucket=\"{}\"><td>{}</td><td class=\"bar\"><div class=\"track\">\
             <div class=\"fill {class}\" style=\"width:{:.1}%\"></div></div></td>\
             <td class=\"num\">{}</td></tr>",
            escape(b.bucket),
            escape(b.label),
            width(b.invitations, max),
            n(&format!("age.{}", b.bucket), b.invitations),
        );
    }
    let _ = write!(
        out,
        "<tr><th>total</th><th></th><th class=\"num\">{}</th></tr>\n</table>\n",
        n("age.total", pending)
    );
    let _ = writeln!(
        out,
        "<h2 id=\"long\">Invitations pending {} days or more: {}</h2>",
        s.pending_days,
        n("pending.long", s.pending_invitations.len())
    );
    if s.pending_invitations.is_empty() {
        out.push_str("<p class=\"none\">None.</p>\n");
    } else {
        out.push_str(
            "<table class=\"long\">\n<tr><th>account</th><th>invited</th>\
             <th class=\"num\">days</th></tr>\n",
        );
        for p in &s.pending_invitations {
            let _ = writeln!(
                out,
                "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"num\">{}</td></tr>",
                escape(p.dn.as_deref().unwrap_or(&p.key)),
                escape(&utc(p.invited_at)),
                p.days,
            );
        }
        out.push_str("</table>\n");
    }

    // Runs, newest first.
    let _ = writeln!(
        out,
        "<h2 id=\"runs\">Runs: {}</h2>",
        n("runs.total", s.runs.len())
    );
    if s.runs.is_empty() {
        out.push_str("<p class=\"none\">No run yet.</p>\n");
    } else {
        out.push_str(
            "<table class=\"runs\">\n<tr><th>started</th><th>command</th><th>exit</th>\
             <th>changes (from the journal)</th><th>summary</th></tr>\n",
        );
        for r in s.runs.iter().rev() {
            let run = &r.run;
            let exit = match run.exit_code {
                Some(code) => format!(
                    "<span class=\"exit{code}\">{} {}</span>",
                    n(&format!("run.{}.exit", run.id), code),
                    escape(exit_meaning(code))
                ),
                None => "<span class=\"exit1\">not finished</span><br><span class=\"muted\">\
                     still running, or stopped (the next run reconciles it)</span>"
                    .into(),
            };
            let took = duration(run.started_at, run.finished_at)
                .map(|d| format!(", took {}", escape(&d)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "<tr data-run=\"{}\"><td><span class=\"mono\">{}</span>{took}<br>\
                 <span class=\"muted mono\">{}</span></td><td>{}</td><td>{exit}</td><td>{}</td>\
                 <td><div class=\"summary\">{}</div></td></tr>",
                escape(&run.id),
                escape(&utc(run.started_at)),
                escape(&run.id),
                escape(&run.command),
                changes(&run.id, &r.changes),
                escape(run.summary.as_deref().unwrap_or("")),
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str(
        "<p class=\"muted\">b2bsync status --html. Numbers are those of \
         <code>b2bsync status --format json</code> at the same time.</p>\n</body>\n</html>\n",
    );
    out
}

/// One table of reasons with their counts and fixes.
fn reasons(out: &mut String, key: &str, title: &str, empty: &str, list: &[ReasonCount]) {
    let total: usize = list.iter().map(|r| r.accounts).sum();
    let _ = writeln!(
        out,
        "<h2 id=\"{key}\">{}: {}</h2>",
        escape(title),
        n(&format!("{key}.total"), total)
    );
    if list.is_empty() {
        let _ = writeln!(out, "<p class=\"none\">{}</p>", escape(empty));
        return;
    }
    out.push_str(
        "<table class=\"reasons\">\n<tr><th>reason</th><th class=\"num\">accounts</th>\
         <th>how to fix it</th></tr>\n",
    );
    for r in list {
        let help = r.help.as_deref().unwrap_or(
            "this b2bsync does not know the reason code: run `b2bsync plan` to see the reason",
        );
        let _ = writeln!(
            out,
            "<tr data-reason=\"{code}\"><td><code>{code}</code></td><td class=\"num\">{}</td>\
             <td class=\"help\">{}</td></tr>",
            n(&format!("{key}.{}", r.reason), r.accounts),
            escape(help),
            code = escape(&r.reason),
        );
    }
    out.push_str("</table>\n");
}

/// The changes of one run as chips: `invite 3 done, 1 failed`.
fn changes(run_id: &str, list: &[ActionCount]) -> String {
    if list.is_empty() {
        return "<span class=\"none\">nothing attempted</span>".into();
    }
    let mut out = String::new();
    for c in list {
        let key = |what: &str| format!("run.{run_id}.{}.{what}", c.action);
        let mut parts = vec![format!("{} done", n(&key("done"), c.done))];
        for (what, value) in [
            ("failed", c.failed),
            ("interrupted", c.interrupted),
            ("reconciled", c.reconciled),
        ] {
            if value > 0 {
                let class = if what == "reconciled" {
                    ""
                } else {
                    " class=\"bad\""
                };
                parts.push(format!(
                    "<span{class}>{} {what}</span>",
                    n(&key(what), value)
                ));
            }
        }
        let _ = write!(
            out,
            "<span class=\"chip\"><code>{}</code> {}</span>",
            escape(&c.action),
            parts.join(", ")
        );
    }
    out
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
        }];
        let page = status_html(&status(&rows, runs, 14, now), now);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert!(page.contains("CN=&lt;script&gt;&amp;&quot;x&quot;,OU=P"));
        assert!(page.contains("failed &lt;b&gt;x&lt;/b&gt; &amp; &#39;y&#39;"));
        assert!(page.contains("data-n=\"run.r1.exit\">2<"));
        assert!(!page.contains("http://") && !page.contains("https://"));
    }

    #[test]
    fn every_state_has_a_number_even_zero() {
        let now: jiff::Timestamp = "2026-11-23T00:00:00Z".parse().expect("time");
        let page = status_html(&status(&[], vec![], 14, now), now);
        for state in FUNNEL {
            assert!(
                page.contains(&format!("data-n=\"state.{}\">0<", state.as_str())),
                "{state}"
            );
        }
        assert!(page.contains("No run yet."));
    }
}
