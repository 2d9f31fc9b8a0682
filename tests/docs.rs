//! The documentation's example files and claims, checked so they never go stale: the example
//! config loads; the systemd units parse as unit files; the Task Scheduler XML is well formed;
//! the Kubernetes manifests parse (serde_yaml_ng; the XML with roxmltree); every b2bsync command
//! line in them is one the CLI accepts; the config embedded in the ConfigMap and the
//! environment overrides of the units load; relative links and anchors in `docs/` resolve;
//! the exit-code table matches `cli::Exit`; and every command's `--help` has examples that
//! parse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use b2bsync::cli::{Cli, Exit};
use b2bsync::config::Config;
use clap::{CommandFactory, Parser};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Checks that `args` (after the program name) is a command line b2bsync accepts.
fn assert_cli_accepts(origin: &str, args: &[String]) {
    let mut argv = vec!["b2bsync".to_string()];
    argv.extend(args.iter().cloned());
    if let Err(e) = Cli::try_parse_from(&argv) {
        panic!("{origin}: b2bsync rejects {argv:?}:\n{e}");
    }
}

/// Splits a command line on whitespace, honouring double quotes (enough for our examples).
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// The arguments after the b2bsync program in a command line, up to a shell redirection.
/// `cmd.exe /c "..."` lines lose their outer quotes first, as cmd does.
fn b2bsync_args(origin: &str, line: &str) -> Vec<String> {
    let line = match line.split_once("/c ") {
        Some((_, command)) if command.starts_with("\"\"") && command.ends_with('"') => {
            &command[1..command.len() - 1]
        }
        _ => line,
    };
    let words = split_words(line);
    let at = words
        .iter()
        .position(|w| {
            let name = w.rsplit(['/', '\\']).next().unwrap_or(w);
            name == "b2bsync" || name == "b2bsync.exe"
        })
        .unwrap_or_else(|| panic!("{origin}: no b2bsync program in `{line}`"));
    words[at + 1..]
        .iter()
        .take_while(|w| !w.starts_with('>') && !w.starts_with("2>") && *w != "&")
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The example configuration

const EXAMPLE_CONFIG: &str = "docs/examples/b2bsync.toml";

fn load_config(origin: &str, path: &Path, text: &str, env: &[(String, String)]) -> Config {
    Config::from_text(path, text, env.iter().cloned()).unwrap_or_else(|e| {
        panic!(
            "{origin}: the config does not load: {e}\nhelp: {}",
            e.help()
        )
    })
}

#[test]
fn the_example_config_loads_and_uses_no_inline_secret() {
    let text = read(EXAMPLE_CONFIG);
    let config = load_config(EXAMPLE_CONFIG, &root().join(EXAMPLE_CONFIG), &text, &[]);
    assert!(config.ldap.url.starts_with("ldaps://"));
    assert!(config.ldap.password_file.is_some() || config.ldap.password_env.is_some());
    assert!(config.graph.private_key_file.is_some());
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        assert!(
            !["password", "client_secret", "bind_password"].contains(&key)
                && !line.contains("BEGIN "),
            "a secret in {EXAMPLE_CONFIG}: {line}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// systemd

/// A unit file: section -> key -> values (a key may repeat).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// Parses a unit file as systemd does (systemd.syntax(7)): `[Section]` headers, `Key=Value`
/// lines, `#`/`;` comments, backslash continuations. Anything else is an error.
fn parse_unit(origin: &str, text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section: Option<String> = None;
    let mut lines = text.lines().enumerate();
    while let Some((n, raw)) = lines.next() {
        let mut line = raw.trim().to_string();
        while line.ends_with('\\') {
            line.pop();
            let (_, next) = lines
                .next()
                .unwrap_or_else(|| panic!("{origin}:{}: continuation at end of file", n + 1));
            line.push(' ');
            line.push_str(next.trim());
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            unit.entry(name.to_string()).or_default();
            section = Some(name.to_string());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            panic!("{origin}:{}: not `Key=Value`: {raw}", n + 1);
        };
        let key = key.trim();
        assert!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()),
            "{origin}:{}: bad key `{key}`",
            n + 1
        );
        let section = section
            .as_ref()
            .unwrap_or_else(|| panic!("{origin}:{}: a key before any [Section]", n + 1));
        unit.get_mut(section)
            .unwrap()
            .entry(key.to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    unit
}

fn one<'a>(unit: &'a Unit, origin: &str, section: &str, key: &str) -> &'a str {
    let values = unit
        .get(section)
        .and_then(|s| s.get(key))
        .unwrap_or_else(|| panic!("{origin}: [{section}] {key}= missing"));
    assert_eq!(values.len(), 1, "{origin}: [{section}] {key}= repeated");
    &values[0]
}

#[test]
fn the_systemd_units_parse_and_run_a_valid_command() {
    let service_file = "docs/examples/systemd/b2bsync.service";
    let service = parse_unit(service_file, &read(service_file));
    assert_eq!(
        service.keys().collect::<Vec<_>>(),
        ["Install", "Service", "Unit"]
    );
    assert_eq!(one(&service, service_file, "Service", "Type"), "oneshot");
    let exec = one(&service, service_file, "Service", "ExecStart");
    let args = b2bsync_args(service_file, exec);
    assert_cli_accepts(service_file, &args);
    assert_eq!(args.last().map(String::as_str), Some("run"));
    let post = one(&service, service_file, "Service", "ExecStopPost");
    let post_args = b2bsync_args(service_file, post);
    assert_cli_accepts(service_file, &post_args);
    assert!(post_args.iter().any(|a| a == "--html"));
    assert!(
        one(&service, service_file, "Service", "SuccessExitStatus")
            .split_whitespace()
            .any(|c| c == (Exit::Locked as u8).to_string()),
        "a run that finds the lock taken is not a failure"
    );
    assert!(
        service["Service"]
            .get("LoadCredential")
            .is_some_and(|v| v.len() >= 2)
    );

    // The environment overrides it sets load against the example config.
    let env: Vec<(String, String)> = service["Service"]["Environment"]
        .iter()
        .map(|e| {
            let (k, v) = e.split_once('=').expect("Environment=KEY=VALUE");
            (
                k.to_string(),
                v.replace("%d", "/run/credentials/b2bsync.service"),
            )
        })
        .collect();
    assert!(env.iter().all(|(k, _)| k.starts_with("B2BSYNC__")));
    let config = load_config(
        service_file,
        &root().join(EXAMPLE_CONFIG),
        &read(EXAMPLE_CONFIG),
        &env,
    );
    assert_eq!(
        config.ldap.password_file.as_deref(),
        Some(Path::new("/run/credentials/b2bsync.service/ldap-password"))
    );
    assert_eq!(
        config.state.path,
        PathBuf::from("/var/lib/b2bsync/b2bsync.db")
    );

    let timer_file = "docs/examples/systemd/b2bsync.timer";
    let timer = parse_unit(timer_file, &read(timer_file));
    assert_eq!(
        timer.keys().collect::<Vec<_>>(),
        ["Install", "Timer", "Unit"]
    );
    assert!(!one(&timer, timer_file, "Timer", "OnCalendar").is_empty());
    assert_eq!(one(&timer, timer_file, "Timer", "Unit"), "b2bsync.service");
    assert_eq!(
        one(&timer, timer_file, "Install", "WantedBy"),
        "timers.target"
    );
}

// ---------------------------------------------------------------------------------------------
// Windows Task Scheduler

/// Parses XML with roxmltree, which checks well-formedness (one root, nesting, quoted unique
/// attributes, known entities) and refuses DTDs.
fn parse_xml<'a>(origin: &str, text: &'a str) -> roxmltree::Document<'a> {
    roxmltree::Document::parse(text.trim_start_matches('\u{feff}'))
        .unwrap_or_else(|e| panic!("{origin}: not well-formed XML: {e}"))
}

/// The first child element of `node` named `name` (local name).
fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> roxmltree::Node<'a, 'i> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
        .unwrap_or_else(|| panic!("<{}> has no <{name}>", node.tag_name().name()))
}

fn path<'a, 'i>(node: roxmltree::Node<'a, 'i>, names: &[&str]) -> roxmltree::Node<'a, 'i> {
    names.iter().fold(node, |n, name| child(n, name))
}

/// The text directly inside an element (entities decoded).
fn text(node: roxmltree::Node<'_, '_>) -> String {
    node.children()
        .filter(roxmltree::Node::is_text)
        .filter_map(|t| t.text())
        .collect()
}

#[test]
fn the_task_scheduler_xml_is_well_formed_and_runs_a_valid_command() {
    let origin = "docs/examples/windows/b2bsync-task.xml";
    let source = read(origin);
    let doc = parse_xml(origin, &source);
    let task = doc.root_element();
    assert_eq!(task.tag_name().name(), "Task");
    assert_eq!(
        task.tag_name().namespace(),
        Some("http://schemas.microsoft.com/windows/2004/02/mit/task")
    );
    assert_eq!(
        text(path(task, &["Settings", "MultipleInstancesPolicy"])),
        "IgnoreNew"
    );
    assert_eq!(
        text(path(
            task,
            &["Triggers", "CalendarTrigger", "Repetition", "Interval"]
        )),
        "PT30M"
    );
    let exec = path(task, &["Actions", "Exec"]);
    assert!(text(child(exec, "Command")).ends_with("cmd.exe"));
    let arguments = text(child(exec, "Arguments"));
    let args = b2bsync_args(origin, &arguments);
    assert_cli_accepts(origin, &args);
    assert_eq!(args.last().map(String::as_str), Some("run"));
    assert!(
        arguments.contains(">>") && arguments.contains("2>&1"),
        "the output goes to a log file"
    );
}

#[test]
fn the_xml_checker_rejects_broken_xml() {
    for broken in [
        "<a><b></a></b>",
        "<a>",
        "<a x=1></a>",
        "<a>&nbsp;</a>",
        "<a></a><b></b>",
        "<a x='1' x='2'></a>",
        "<a>1 < 2</a>",
    ] {
        let result = std::panic::catch_unwind(|| {
            parse_xml("test", broken);
        });
        assert!(result.is_err(), "accepted: {broken}");
    }
    let source = "<?xml version='1.0'?><!-- c --><a k=\"&amp;\"><b/>x &lt; y</a>";
    let ok = parse_xml("test", source);
    assert_eq!(ok.root_element().attribute("k"), Some("&"));
    assert_eq!(text(ok.root_element()), "x < y");
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

/// Parses every document of a YAML stream with serde_yaml_ng (YAML 1.2 through libyaml), into
/// its own `Value` first, which refuses duplicate keys, then into JSON values for the
/// assertions.
fn parse_yaml(origin: &str, text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| {
            let yaml = serde_yaml_ng::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{origin}: {e}"));
            serde_json::to_value(yaml).unwrap_or_else(|e| panic!("{origin}: {e}"))
        })
        .collect()
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[k],
    })
}

#[test]
fn the_kubernetes_manifests_parse_and_hang_together() {
    let origin = "docs/examples/kubernetes/cronjob.yaml";
    let docs = parse_yaml(origin, &read(origin));
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "PersistentVolumeClaim", "CronJob"]);
    for d in &docs {
        assert!(d["apiVersion"].is_string() && d["metadata"]["name"].is_string());
    }

    let cron = &docs[2];
    assert_eq!(cron["apiVersion"], "batch/v1");
    let schedule = get(cron, "spec.schedule").as_str().unwrap();
    assert_eq!(
        schedule.split_whitespace().count(),
        5,
        "a 5-field cron schedule"
    );
    assert_eq!(get(cron, "spec.concurrencyPolicy"), "Forbid");
    assert_eq!(get(cron, "spec.jobTemplate.spec.backoffLimit"), 0);
    let pod = get(cron, "spec.jobTemplate.spec.template.spec");
    assert_eq!(pod["restartPolicy"], "Never");
    let container = &pod["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_cli_accepts(origin, &args);
    assert_eq!(args.last().map(String::as_str), Some("run"));

    // Every mount names a volume, and every volume is mounted.
    let volumes: Vec<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    let mounts: BTreeMap<&str, &str> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
            )
        })
        .collect();
    let mut mounted: Vec<&str> = mounts.keys().copied().collect();
    let mut declared = volumes.clone();
    mounted.sort();
    declared.sort();
    assert_eq!(mounted, declared);
    let claim = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .unwrap();
    assert_eq!(docs[1]["metadata"]["name"], claim);
    let config_map = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap();
    assert_eq!(config_map["configMap"]["name"], docs[0]["metadata"]["name"]);

    // The embedded config loads with the container's overrides, and its paths live on mounts.
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let config_path = Path::new(&args[1]);
    let file_name = config_path.file_name().unwrap().to_str().unwrap();
    let text = docs[0]["data"][file_name].as_str().unwrap();
    let config = load_config(origin, config_path, text, &env);
    let on_a_mount = |p: &Path| mounts.values().any(|m| p.starts_with(m));
    assert!(on_a_mount(&config.state.path), "state on a volume");
    assert!(on_a_mount(&config.mappings.dir), "mappings on a volume");
    assert!(on_a_mount(config.ldap.password_file.as_deref().unwrap()));
    assert!(on_a_mount(
        config.graph.private_key_file.as_deref().unwrap()
    ));
    assert_eq!(
        config.state.path.parent().unwrap(),
        Path::new(mounts["state"]),
        "the state file (and its lock beside it) on the persistent volume"
    );
}

#[test]
fn the_yaml_parser_rejects_broken_yaml() {
    for broken in [
        "a: 1\n  b: 2\n",
        "a:\n\tb: 1\n",
        "a: 1\na: 2\n",
        "- a\nb: 1\n",
    ] {
        let result = std::panic::catch_unwind(|| parse_yaml("test", broken));
        assert!(result.is_err(), "accepted: {broken:?}");
    }
    let docs = parse_yaml(
        "test",
        "a:\n  - x: 1\n    y: \"two # not a comment\"\n  - plain # comment\nb: |\n  line 1\n\n  line 2\n---\nc: true\nd: {e: 1}\n",
    );
    assert_eq!(docs[0]["a"][0]["x"], 1);
    assert_eq!(docs[0]["a"][0]["y"], "two # not a comment");
    assert_eq!(docs[0]["a"][1], "plain");
    assert_eq!(docs[0]["b"], "line 1\n\nline 2\n");
    assert_eq!(docs[1]["c"], true);
    // Flow collections are YAML too (the hand-written subset parser refused them).
    assert_eq!(docs[1]["d"]["e"], 1);
}

// ---------------------------------------------------------------------------------------------
// The documents themselves

/// GitHub's anchor for a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> Vec<String> {
    let mut fenced = false;
    markdown
        .lines()
        .filter(|l| {
            if l.starts_with("```") {
                fenced = !fenced;
            }
            !fenced && l.starts_with('#')
        })
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

/// Documents other branches write, linked from here before they are merged.
const WRITTEN_ELSEWHERE: [&str; 1] = ["docs/emulator.md"];

#[test]
fn relative_links_in_the_docs_resolve() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    assert!(files.len() >= 3);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap();
            let target = &rest[..end];
            rest = &rest[end..];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let relative = resolved
                .strip_prefix(root())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            if !resolved.exists() {
                assert!(
                    WRITTEN_ELSEWHERE.contains(&relative.as_str()),
                    "{name}: broken link `{target}`"
                );
                continue;
            }
            if !anchor.is_empty() && resolved.extension().is_some_and(|x| x == "md") {
                let headings = anchors(&std::fs::read_to_string(&resolved).unwrap());
                assert!(
                    headings.iter().any(|h| h == anchor),
                    "{name}: `{target}`: no heading with anchor #{anchor} (has {headings:?})"
                );
            }
        }
    }
}

#[test]
fn the_exit_code_table_matches_the_cli() {
    let operations = read("docs/operations.md");
    let section = operations
        .split("## Exit codes")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let documented: Vec<u8> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter_map(|c| c.parse().ok())
        .collect();
    let codes = [
        Exit::Ok,
        Exit::Failed,
        Exit::Partial,
        Exit::InvalidConfig,
        Exit::OverThreshold,
        Exit::Locked,
    ];
    // A new Exit variant fails to compile here until the table (and this list) knows it.
    for e in codes {
        match e {
            Exit::Ok
            | Exit::Failed
            | Exit::Partial
            | Exit::InvalidConfig
            | Exit::OverThreshold
            | Exit::Locked => {}
        }
    }
    assert_eq!(documented, codes.map(|e| e as u8).to_vec());
}

#[test]
fn every_command_has_help_examples_that_parse() {
    let cli = Cli::command();
    let mut commands = 0;
    for command in cli.get_subcommands() {
        commands += 1;
        let name = command.get_name();
        let after = command
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        let examples: Vec<&str> = after
            .lines()
            .skip_while(|l| !l.starts_with("Examples:"))
            .skip(1)
            .map(str::trim)
            .filter(|l| l.starts_with("b2bsync "))
            .collect();
        assert!(
            !examples.is_empty(),
            "`b2bsync help {name}` has no examples"
        );
        for example in examples {
            if example.contains("...") {
                continue; // an elided argument, e.g. a run id
            }
            let args = b2bsync_args(&format!("help {name}"), example);
            assert_cli_accepts(&format!("`b2bsync help {name}`"), &args);
        }
    }
    assert!(commands >= 6);
}
