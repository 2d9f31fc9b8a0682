//! `b2bsync status --html` opened in a real browser: builds a state store directly (no
//! servers), runs `status --format json` and `status --html`, loads the page in headless
//! Chromium (Debian's `chromium`), and checks that the rendered DOM shows exactly the numbers
//! the JSON gives, with every reason's fix and every DN escaped. It also takes a screenshot
//! (kept in `target/tmp/report_html/` for people to look at).
//!
//! Chromium missing is a failure, never a skip: run `scripts/install-chromium.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use b2bsync::model::{Lifecycle, Progress};
use b2bsync::state::{Phase, Store};
use serde_json::Value;

/// A DN with every character HTML cares about.
const NASTY_DN: &str = "CN=O'Brien <script>alert(1)</script> & \"Sons\",OU=Partners,DC=lab";
const NASTY_SUMMARY: &str = "run x: <b>not bold</b> & \"quoted\"; 1 failed";

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("B2BSYNC_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "headless Chromium is needed to check the HTML report and was not found in PATH \
         (nor B2BSYNC_CHROMIUM): run scripts/install-chromium.sh (as root), then rerun"
    );
}

/// Runs a command with a deadline; the browser must not hang the test suite.
fn run_with_deadline(cmd: &mut Command, deadline: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    // Drain both pipes in threads so a chatty browser cannot block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut b).ok();
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut b).ok();
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("{cmd:?} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Headless Chromium with everything that could reach the network or a profile turned off.
fn browser(profile: &Path) -> Command {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

fn ago(days: f64) -> jiff::Timestamp {
    let now = jiff::Timestamp::now().as_second();
    jiff::Timestamp::from_second(now - (days * 86_400.0) as i64).unwrap()
}

/// A state store with accounts in every state but one (`ready` stays zero on purpose),
/// several reasons, pending invitations of every age, and three runs.
fn seed(path: &Path) -> Store {
    let store = Store::open(path).unwrap();
    let mut n = 0;
    // Days ago each accepted account accepted, last first: the `accepted` one 1.5 days ago,
    // the `done` ones 30.5, 10.5, 5.5 and 3.5 days ago (4 in the last 14 days).
    let mut acceptances = vec![3.5, 5.5, 10.5, 30.5, 1.5];
    let mut add =
        |state: Lifecycle, reason: Option<&str>, dn: Option<&str>, invited: Option<f64>| {
            n += 1;
            let key = format!("anchor{n:03}");
            let dn = dn
                .map(str::to_string)
                .unwrap_or_else(|| format!("CN=Partner {n},OU=Partners,DC=lab,DC=example,DC=com"));
            // Two partner domains, so the page draws one small chart per domain.
            let domain = if n % 2 == 0 {
                "fabrikam.example"
            } else {
                "contoso.example"
            };
            let p = Progress {
                state,
                address: Some(format!("partner{n}@{domain}")),
                invited_at: invited.map(ago),
                invitations_sent: u32::from(invited.is_some()),
                accepted_at: (state >= Lifecycle::Accepted)
                    .then(|| acceptances.pop().map(ago))
                    .flatten(),
                ..Progress::default()
            };
            store
                .save_account(&key, Some(&dn), Some("synced"), reason, &p)
                .unwrap();
        };
    for _ in 0..2 {
        add(Lifecycle::Unmatched, Some("no_cloud_user"), None, None);
    }
    add(
        Lifecycle::Unmatched,
        Some("several_cloud_users"),
        None,
        None,
    );
    for _ in 0..3 {
        add(
            Lifecycle::Blocked,
            Some("on_premises_user_principal_name"),
            None,
            None,
        );
    }
    add(Lifecycle::Blocked, Some("mailbox"), Some(NASTY_DN), None);
    add(Lifecycle::Blocked, Some("mailbox"), None, None);
    add(Lifecycle::Blocked, Some("role_holder"), None, None);
    add(Lifecycle::Blocked, None, None, None);
    add(Lifecycle::NeedsAddress, None, None, None);
    add(Lifecycle::AwaitingSync, None, None, None);
    add(Lifecycle::AwaitingSync, None, None, None);
    for days in [0.5, 2.5, 9.5, 20.5, 45.5, 100.5] {
        add(Lifecycle::Invited, None, None, Some(days));
    }
    add(Lifecycle::Invited, None, Some(NASTY_DN), Some(31.5));
    add(Lifecycle::Accepted, None, None, Some(12.5));
    for _ in 0..4 {
        add(Lifecycle::Done, None, None, Some(40.5));
    }

    let journal = |run: &str, n: u32, action: &str, phase: Phase| {
        let key = format!("anchor{n:03}");
        let action_key = format!("{action}:{key}");
        let action = b2bsync::state::Action::parse(action).unwrap();
        store
            .journal(
                run,
                &action_key,
                action,
                &key,
                phase,
                None,
                None,
                None,
                None,
                None,
            )
            .unwrap();
    };
    // Run 1: addresses written (accounts 12 to 14), one failed (account 11).
    let r1 = store.begin_run("run").unwrap();
    for n in 12..=14 {
        journal(&r1, n, "set_directory_mail", Phase::Started);
        journal(&r1, n, "set_directory_mail", Phase::Done);
    }
    journal(&r1, 11, "set_cloud_address", Phase::Started);
    journal(&r1, 11, "set_cloud_address", Phase::Failed);
    store.finish_run(&r1, 2, NASTY_SUMMARY).unwrap();
    // Run 2: invitations; the process died during the third (no end recorded).
    let r2 = store.begin_run("run").unwrap();
    for n in 14..=15 {
        journal(&r2, n, "invite", Phase::Started);
        journal(&r2, n, "invite", Phase::Done);
    }
    journal(&r2, 16, "invite", Phase::Started);
    // Run 3: reconciles run 2's invitation, randomizes passwords.
    let r3 = store.begin_run("run").unwrap();
    journal(&r3, 16, "invite", Phase::Done);
    for n in 22..=25 {
        journal(&r3, n, "randomize_password", Phase::Started);
        journal(&r3, n, "randomize_password", Phase::Done);
    }
    store
        .finish_run(&r3, 0, "run 3: randomize_password x4; reconciled 1")
        .unwrap();
    // Run 4: stopped by the guard.
    let r4 = store.begin_run("apply").unwrap();
    store
        .finish_run(&r4, 4, "stopped before any write: 1 threshold(s) exceeded")
        .unwrap();
    store
}

fn config(dir: &Path, state: &Path) -> PathBuf {
    let path = dir.join("b2bsync.toml");
    std::fs::write(
        &path,
        format!(
            r#"# status never connects: [ldap] and [graph] only have to parse.
[ldap]
url = "ldaps://127.0.0.1:636"
bind_dn = "svc@lab.example.com"
password_env = "B2BSYNC_TEST_UNSET_LDAP_PASSWORD"

[graph]
tenant = "00000000-0000-0000-0000-000000000000"
client_id = "00000000-0000-0000-0000-000000000001"
auth = "client_secret"
client_secret_env = "B2BSYNC_TEST_UNSET_GRAPH_SECRET"

[state]
path = "{}"
"#,
            state.display().to_string().replace('\\', "\\\\")
        ),
    )
    .unwrap();
    path
}

fn b2bsync(config: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_b2bsync"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "b2bsync {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every number the page shows, by its `data-n` key, as the browser's DOM has it.
fn page_numbers(dom: &str) -> BTreeMap<String, u64> {
    let mut found = BTreeMap::new();
    let mut rest = dom;
    while let Some(at) = rest.find("data-n=\"") {
        rest = &rest[at + 8..];
        let end = rest.find('"').unwrap();
        let key = decode(&rest[..end]);
        let open = rest.find('>').unwrap();
        let close = rest.find('<').unwrap();
        let value: u64 = rest[open + 1..close]
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{key}: `{}`: {e}", &rest[open + 1..close]));
        assert!(
            found.insert(key.clone(), value).is_none(),
            "{key} shown twice"
        );
        rest = &rest[close..];
    }
    found
}

/// The numbers the JSON gives, under the keys the page uses.
fn json_numbers(status: &Value) -> BTreeMap<String, u64> {
    let mut want = BTreeMap::new();
    let num = |v: &Value| v.as_u64().unwrap();
    let total = num(&status["total"]);
    want.insert("total".into(), total);
    want.insert("states.total".into(), total);
    let mut by_state = BTreeMap::new();
    for s in status["states"].as_array().unwrap() {
        let state = s["state"].as_str().unwrap().to_string();
        by_state.insert(state.clone(), num(&s["accounts"]));
        want.insert(format!("state.{state}"), num(&s["accounts"]));
    }
    for list in ["blocked", "unmatched"] {
        let mut sum = 0;
        for r in status[list].as_array().unwrap() {
            sum += num(&r["accounts"]);
            want.insert(
                format!("{list}.{}", r["reason"].as_str().unwrap()),
                num(&r["accounts"]),
            );
        }
        want.insert(format!("{list}.total"), sum);
    }
    let mut pending = 0;
    for b in status["invitations_by_age"].as_array().unwrap() {
        pending += num(&b["invitations"]);
        want.insert(
            format!("age.{}", b["bucket"].as_str().unwrap()),
            num(&b["invitations"]),
        );
    }
    want.insert("age.total".into(), pending);
    want.insert(
        "pending.long".into(),
        status["pending_invitations"].as_array().unwrap().len() as u64,
    );
    let runs = status["runs"].as_array().unwrap();
    want.insert("runs.total".into(), runs.len() as u64);
    for r in runs {
        let id = r["id"].as_str().unwrap();
        if let Some(code) = r["exit_code"].as_u64() {
            want.insert(format!("run.{id}.exit"), code);
        }
        for c in r["changes"].as_array().unwrap() {
            let action = c["action"].as_str().unwrap();
            want.insert(format!("run.{id}.{action}.done"), num(&c["done"]));
            for what in ["failed", "interrupted", "reconciled"] {
                if num(&c[what]) > 0 {
                    want.insert(format!("run.{id}.{action}.{what}"), num(&c[what]));
                }
            }
        }
    }
    // The summary tiles, derived from the states.
    let st = |s: &str| by_state[s];
    want.insert("tile.done".into(), st("done"));
    want.insert("tile.pending".into(), pending);
    want.insert(
        "tile.in_progress".into(),
        st("needs_address") + st("awaiting_sync") + st("ready") + st("accepted"),
    );
    want.insert("tile.held".into(), st("blocked") + st("unmatched"));
    want
}

/// The numbers of the per-account section, from `status --accounts --format json`.
fn account_numbers(list: &Value) -> BTreeMap<String, u64> {
    let mut want = BTreeMap::new();
    want.insert(
        "accounts.total".into(),
        list["accounts"].as_array().unwrap().len() as u64,
    );
    for d in list["domains"].as_array().unwrap() {
        let domain = d["partner_domain"].as_str().unwrap_or("(no address yet)");
        want.insert(format!("domain.{domain}"), d["accounts"].as_u64().unwrap());
    }
    want
}

/// The text of each `data-field` of the `<tr data-account="KEY">` row in `dom`.
fn account_row(dom: &str, key: &str) -> BTreeMap<String, String> {
    let at = dom
        .find(&format!("<tr data-account=\"{key}\""))
        .unwrap_or_else(|| panic!("no row for account {key}"));
    let row = &dom[at..at + dom[at..].find("</tr>").unwrap()];
    let mut fields = BTreeMap::new();
    let mut rest = row;
    while let Some(f) = rest.find("data-field=\"") {
        rest = &rest[f + 12..];
        let name = rest[..rest.find('"').unwrap()].to_string();
        let open = rest.find('>').unwrap();
        let close = rest.find('<').unwrap();
        fields.insert(name, decode(&rest[open + 1..close]));
        rest = &rest[close..];
    }
    fields
}

/// Undoes the escaping Chromium's DOM serializer applies to text and attribute values.
fn decode(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The `data-*` attributes of every `<tag ...>` element in `dom`, in document order.
fn marks(dom: &str, tag: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{tag} ");
    let mut found = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find(&open) {
        rest = &rest[at + open.len()..];
        let end = rest.find('>').unwrap();
        let mut attrs = BTreeMap::new();
        let mut inside = &rest[..end];
        while let Some(d) = inside.find("data-") {
            inside = &inside[d + 5..];
            let eq = inside.find("=\"").unwrap();
            let name = inside[..eq].to_string();
            inside = &inside[eq + 2..];
            let close = inside.find('"').unwrap();
            attrs.insert(name, decode(&inside[..close]));
            inside = &inside[close + 1..];
        }
        found.push(attrs);
    }
    found
}

/// The dots a progress chart should have, from the JSON's `history` points: one per point
/// and series it counts, sorted as [`sorted`] sorts the page's.
fn json_dots(points: &Value) -> Vec<BTreeMap<String, String>> {
    let mut dots = Vec::new();
    for p in points.as_array().unwrap() {
        for c in p["counts"].as_array().unwrap() {
            dots.push(BTreeMap::from([
                ("step".to_string(), c[0].as_str().unwrap().to_string()),
                ("run".to_string(), p["run"].as_str().unwrap().to_string()),
                (
                    "source".to_string(),
                    p["source"].as_str().unwrap().to_string(),
                ),
                ("count".to_string(), c[1].as_u64().unwrap().to_string()),
            ]));
        }
    }
    sorted(dots)
}

fn sorted(mut marks: Vec<BTreeMap<String, String>>) -> Vec<BTreeMap<String, String>> {
    marks.sort();
    marks
}

#[test]
fn the_html_report_renders_the_numbers_of_the_json_report() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").join("b2bsync.db");
    drop(seed(&state));
    let config = config(dir.path(), &state);

    let json: Value =
        serde_json::from_slice(&b2bsync(&config, &["status", "--format", "json"]).stdout)
            .expect("status --format json");
    // The fixture covers what the page has to show.
    assert_eq!(json["total"], 25, "{json:#}");
    assert!(json["blocked"].as_array().unwrap().len() >= 4);
    assert_eq!(json["runs"].as_array().unwrap().len(), 4);

    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report_html");
    std::fs::create_dir_all(&out_dir).unwrap();
    let page = out_dir.join("status.html");
    let written = b2bsync(&config, &["status", "--html", page.to_str().unwrap()]);
    assert!(
        written.stdout.is_empty(),
        "--html alone prints nothing on stdout"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&page).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the report is owner-only, mode {mode:o}");
    }
    let source = std::fs::read_to_string(&page).unwrap();
    for forbidden in [
        "http://", "https://", "<script", "<link", "<img", "@import", "url(",
    ] {
        assert!(
            !source.contains(forbidden),
            "the page must be self-contained, found `{forbidden}`"
        );
    }

    let url = format!("file://{}", page.display());
    let profile = tempfile::tempdir().unwrap();
    let dom = run_with_deadline(
        browser(profile.path()).arg("--dump-dom").arg(&url),
        Duration::from_secs(90),
    );
    assert!(
        dom.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8(dom.stdout).unwrap();
    assert!(
        dom.contains("b2bsync migration status"),
        "Chromium did not render the page: {dom}"
    );

    // Every number of the JSON is on the page, and the page shows no other number.
    let shown = page_numbers(&dom);
    let mut want = json_numbers(&json);
    let accounts: Value = serde_json::from_slice(
        &b2bsync(&config, &["status", "--accounts", "--format", "json"]).stdout,
    )
    .expect("status --accounts --format json");
    want.extend(account_numbers(&accounts));
    assert_eq!(shown, want, "page (left) and JSON (right) differ");

    // The progress chart: one dot per run and series, with the JSON's counts. Runs 1, 3 and
    // 4 ended and recorded the accounts per lifecycle state (the seed saved every account
    // first, so each shows today's funnel); run 2 never ended, so its point is rebuilt from
    // the journal, which had taken accounts 12 and 13 to `staged`, 14 and 15 to `invited`.
    let history = &json["history"];
    let all = &history["all"];
    assert_eq!(all.as_array().unwrap().len(), 4, "{history:#}");
    let sources: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["recorded", "journal", "recorded", "recorded"]);
    assert_eq!(
        &all[1]["counts"],
        &serde_json::json!([["staged", 2], ["invited", 2], ["done", 0]])
    );
    let funnel: Vec<Value> = json["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| serde_json::json!([s["state"], s["accounts"]]))
        .collect();
    assert_eq!(all[3]["counts"], Value::Array(funnel), "{history:#}");
    let dom_charts = |name: &str| -> String {
        let at = dom
            .find(&format!("data-chart=\"progress\" data-label=\"{name}\""))
            .unwrap_or_else(|| panic!("no progress chart for {name}"));
        let end = dom[at..].find("</svg>").unwrap();
        dom[at..at + end].to_string()
    };
    let all_chart = dom_charts("every account");
    assert_eq!(
        sorted(marks(&format!("<x {all_chart}"), "circle")),
        json_dots(all)
    );
    // Small multiples: one chart per partner domain, with that domain's counts.
    let domains = history["domains"].as_array().unwrap();
    assert_eq!(domains.len(), 2, "{history:#}");
    for d in domains {
        let name = d["domain"].as_str().unwrap();
        assert!(dom.contains(&format!("<figure data-domain=\"{name}\"")));
        let chart = dom_charts(name);
        assert_eq!(
            sorted(marks(&format!("<x {chart}"), "circle")),
            json_dots(&d["points"]),
            "{name}"
        );
    }
    // Invitations sent, accepted and conversions per day: every series, the JSON's counts;
    // the acceptances are those of the accounts' accepted_at.
    let mut bars = Vec::new();
    let accepted: u64 = history["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["accepted"].as_u64().unwrap())
        .sum();
    assert_eq!(accepted, 5, "{history:#}");
    for d in history["days"].as_array().unwrap() {
        for what in ["invited", "accepted", "converted"] {
            bars.push(BTreeMap::from([
                ("day".to_string(), d["day"].as_str().unwrap().to_string()),
                ("series".to_string(), what.to_string()),
                ("count".to_string(), d[what].as_u64().unwrap().to_string()),
            ]));
        }
    }
    assert_eq!(marks(&dom, "rect"), bars);
    assert!(!bars.is_empty());
    // The projection, with its assumption: 4 acceptances in the last 14 days, 11 accounts in
    // progress (needs_address 1, awaiting_sync 2, invited 7, accepted 1): 39 days.
    assert_eq!(history["projection"]["remaining"], 11);
    assert_eq!(history["projection"]["basis"], "acceptances");
    assert_eq!(history["projection"]["accepted_recently"], 4);
    let projection = history["projection"]["text"].as_str().unwrap();
    assert!(
        projection.contains("acceptance rate of the last 14 days (4 accounts, 0.3 per day)"),
        "{projection}"
    );
    assert!(projection.contains("would be done by"), "{projection}");
    assert!(projection.contains("assumes"), "{projection}");
    assert!(
        decode(&dom).contains(projection),
        "the projection is on the page"
    );

    // Every reason's fix is shown, and text from the store arrives as text, not markup.
    let text = decode(&dom);
    for list in ["blocked", "unmatched"] {
        for r in json[list].as_array().unwrap() {
            if let Some(help) = r["help"].as_str() {
                assert!(text.contains(help), "fix of {} not shown", r["reason"]);
            }
        }
    }
    assert!(
        json["blocked"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["reason"] == "unknown" && r["help"].is_null())
    );
    assert!(!dom.contains("<script"), "a DN became markup");
    assert!(!dom.contains("<b>"), "a run summary became markup");
    assert!(text.contains(NASTY_DN), "the DN is shown as written");
    assert!(
        text.contains(NASTY_SUMMARY),
        "the run summary is shown as written"
    );
    for p in json["pending_invitations"].as_array().unwrap() {
        assert!(text.contains(p["dn"].as_str().unwrap()));
    }

    // A screenshot, for people: a real PNG of the requested size.
    let shot = out_dir.join("status.png");
    let _ = std::fs::remove_file(&shot);
    let taken = run_with_deadline(
        browser(profile.path())
            .arg(format!("--screenshot={}", shot.display()))
            .arg("--window-size=1280,3000")
            .arg(&url),
        Duration::from_secs(90),
    );
    assert!(
        taken.status.success(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&taken.stderr)
    );
    let png = std::fs::read(&shot).expect("the screenshot file");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 3000));
    // An empty white page compresses to a few kilobytes; this one has text and bars.
    assert!(
        png.len() > 50_000,
        "the screenshot looks empty: {} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}

/// The per-account section (issue 13) shows every row of `status --accounts --format json`,
/// the page names the tenant and the directory it describes, and its bars are shares of the
/// total.
#[test]
fn the_html_report_lists_every_account_as_status_accounts_does() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").join("b2bsync.db");
    let store = seed(&state);
    store
        .save_names(
            "anchor022",
            &b2bsync::model::Names {
                account_name: Some("p.done".into()),
                upn: Some("done.partner@lab.example.com".into()),
            },
        )
        .unwrap();
    store
        .save_names(
            "anchor001",
            &b2bsync::model::Names {
                account_name: Some("p.unmatched".into()),
                upn: None,
            },
        )
        .unwrap();
    drop(store);
    let config = config(dir.path(), &state);
    let list: Value = serde_json::from_slice(
        &b2bsync(&config, &["status", "--accounts", "--format", "json"]).stdout,
    )
    .expect("status --accounts --format json");
    let rows = list["accounts"].as_array().unwrap();
    assert_eq!(rows.len(), 25, "{list:#}");

    let page = dir.path().join("status.html");
    b2bsync(&config, &["status", "--html", page.to_str().unwrap()]);
    let profile = tempfile::tempdir().unwrap();
    let dom = run_with_deadline(
        browser(profile.path())
            .arg("--dump-dom")
            .arg(format!("file://{}", page.display())),
        Duration::from_secs(90),
    );
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8(dom.stdout).unwrap();

    let day = |v: &Value| {
        v.as_str().map_or(String::new(), |t| {
            let t: jiff::Timestamp = t.parse().unwrap();
            t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
        })
    };
    for r in rows {
        let key = r["key"].as_str().unwrap();
        let shown = account_row(&dom, key);
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let name = match r["name"].as_str().unwrap() {
            "" => "-".to_string(),
            n => n.to_string(),
        };
        let want = BTreeMap::from([
            ("name".to_string(), name),
            ("dn".to_string(), s(&r["dn"])),
            ("state".to_string(), s(&r["state"])),
            ("partner_domain".to_string(), s(&r["partner_domain"])),
            ("invited".to_string(), day(&r["invited_at"])),
            ("accepted".to_string(), day(&r["accepted_at"])),
            ("randomized".to_string(), day(&r["password_randomized_at"])),
        ]);
        let mut shown_without_reason = shown.clone();
        let reason = shown_without_reason.remove("reason");
        assert_eq!(shown_without_reason, want, "account {key}");
        assert_eq!(reason.as_deref(), r["reason"].as_str(), "account {key}");
    }
    let text = decode(&dom);
    assert!(text.contains("done.partner@lab.example.com"));
    assert!(text.contains(NASTY_DN) && !dom.contains("<script"));
    // Counts per partner domain, as the JSON has them.
    let shown = page_numbers(&dom);
    for (k, v) in account_numbers(&list) {
        assert_eq!(shown.get(&k), Some(&v), "{k}");
    }

    // The tenant and the directory the page describes.
    assert!(
        dom.contains("data-about=\"tenant\">00000000-0000-0000-0000-000000000000<"),
        "the tenant is not named"
    );
    assert!(
        dom.contains("data-about=\"directory\">ldaps://127.0.0.1:636"),
        "the directory is not named"
    );
    // Bars are shares of the total (25 accounts): 4 done is 16 %, 7 invited 28 %.
    for (state, width) in [("done", "16.0"), ("invited", "28.0"), ("ready", "0.0")] {
        let at = dom
            .find(&format!("<tr data-state=\"{state}\""))
            .unwrap_or_else(|| panic!("no funnel row {state}"));
        let row = &dom[at..at + dom[at..].find("</tr>").unwrap()];
        assert!(
            row.contains(&format!("width: {width}%")) || row.contains(&format!("width:{width}%")),
            "{state}: {row}"
        );
    }
}

/// `[report] template` (relative to the configuration file) replaces the built-in page; a
/// copy starts from `status --print-template`; a broken copy is a configuration error (exit
/// 3) naming file:line:column, with a `help:` line.
#[test]
fn an_admin_template_replaces_the_page_and_a_broken_one_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").join("b2bsync.db");
    drop(seed(&state));
    let config = config(dir.path(), &state);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[report]\ntemplate = \"branding/status.html.j2\"\n");
    std::fs::write(&config, text).unwrap();

    let built_in = String::from_utf8(b2bsync(&config, &["status", "--print-template"]).stdout)
        .expect("the template is UTF-8");
    assert!(built_in.contains("{{ n(\"total\", total) }}"), "{built_in}");
    let copy = built_in.replace(
        "<h1>b2bsync migration status</h1>",
        "<h1>Contoso &amp; partners: migration</h1>",
    );
    assert_ne!(copy, built_in);
    std::fs::create_dir(dir.path().join("branding")).unwrap();
    let template = dir.path().join("branding").join("status.html.j2");
    std::fs::write(&template, &copy).unwrap();

    let page = dir.path().join("status.html");
    b2bsync(&config, &["status", "--html", page.to_str().unwrap()]);
    let source = std::fs::read_to_string(&page).unwrap();
    assert!(source.contains("<h1>Contoso &amp; partners: migration</h1>"));
    // The copy still escapes what comes from the store.
    assert!(!source.contains("<script"));
    assert!(source.contains("data-n=\"states.total\">25<"));

    // Every kind of error names line and column: an unknown filter, a syntax error, an
    // undefined name (strict mode) and an error only rendering finds. The page written
    // before stays as it was.
    for (broken, at, says) in [
        (
            "<!DOCTYPE html>\n<p>\n<p>{{ total | totl }}</p>\n",
            "3:15",
            "totl",
        ),
        (
            "<p>\n\n{% for x in %}</p>\n",
            "3:13",
            "unexpected end of block",
        ),
        ("<p>\n  {{ totl }}\n", "2:6", "`totl` is undefined"),
        (
            "\n{% for x in total %}{{ x }}{% endfor %}",
            "2:13",
            "not iterable",
        ),
    ] {
        std::fs::write(&template, broken).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_b2bsync"))
            .arg("--config")
            .arg(&config)
            .args(["status", "--html", page.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(
            stderr.contains(&format!("{}:{at}: ", template.display())),
            "{broken:?}: {stderr}"
        );
        assert!(stderr.contains(says), "{broken:?}: {stderr}");
        assert!(stderr.contains("help:"), "{stderr}");
        assert_eq!(std::fs::read_to_string(&page).unwrap(), source);
    }
}
