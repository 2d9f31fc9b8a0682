//! The documentation's example files and claims, checked so they never go stale: the example
//! config loads; the systemd units parse as unit files; the Task Scheduler XML is well formed;
//! the Kubernetes manifests parse (a small YAML subset parser below); every b2bsync command
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
use serde_json::{Map, Value};

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

/// An XML element: name, attributes, children, text.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attributes: BTreeMap<String, String>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn child(&self, name: &str) -> &Element {
        self.children
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("<{}> has no <{name}>", self.name))
    }

    fn path(&self, names: &[&str]) -> &Element {
        names.iter().fold(self, |e, n| e.child(n))
    }
}

fn xml_unescape(origin: &str, s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find(';')
            .unwrap_or_else(|| panic!("{origin}: unterminated entity in `{s}`"));
        let entity = &rest[at + 1..at + end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or_else(|| panic!("{origin}: bad entity &{e};")),
            e if e.starts_with('#') => e[1..]
                .parse()
                .ok()
                .and_then(char::from_u32)
                .unwrap_or_else(|| panic!("{origin}: bad entity &{e};")),
            e => panic!("{origin}: unknown entity &{e};"),
        };
        out.push(c);
        rest = &rest[at + end + 1..];
    }
    assert!(!rest.contains('<'), "{origin}: a raw `<` in text");
    out.push_str(rest);
    out
}

/// A small well-formedness checker and parser (no DTDs, no namespaces resolved): one root
/// element, properly nested and closed tags, quoted unique attributes, known entities only.
fn parse_xml(origin: &str, text: &str) -> Element {
    let mut rest = text.trim_start_matches('\u{feff}');
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut roots = 0;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<?") {
            let end = after
                .find("?>")
                .unwrap_or_else(|| panic!("{origin}: unterminated <?"));
            rest = &after[end + 2..];
        } else if let Some(after) = rest.strip_prefix("<!--") {
            let end = after
                .find("-->")
                .unwrap_or_else(|| panic!("{origin}: unterminated comment"));
            assert!(
                !after[..end].contains("--"),
                "{origin}: `--` inside a comment"
            );
            rest = &after[end + 3..];
        } else if let Some(after) = rest.strip_prefix("</") {
            let end = after
                .find('>')
                .unwrap_or_else(|| panic!("{origin}: unterminated end tag"));
            let name = after[..end].trim();
            let element = stack.pop().unwrap();
            assert_eq!(
                element.name, name,
                "{origin}: </{name}> closes <{}>",
                element.name
            );
            assert!(!stack.is_empty(), "{origin}: </{name}> without a start tag");
            stack.last_mut().unwrap().children.push(element);
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('<') {
            let end = after
                .find('>')
                .unwrap_or_else(|| panic!("{origin}: unterminated start tag"));
            let mut tag = &after[..end];
            let empty = tag.ends_with('/');
            if empty {
                tag = &tag[..tag.len() - 1];
            }
            let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
            let mut element = Element {
                name: tag[..name_end].to_string(),
                ..Element::default()
            };
            assert!(
                element
                    .name
                    .chars()
                    .all(|c| c.is_alphanumeric() || ":_-.".contains(c))
                    && !element.name.is_empty(),
                "{origin}: bad element name `{}`",
                element.name
            );
            let mut attrs = tag[name_end..].trim();
            while !attrs.is_empty() {
                let eq = attrs
                    .find('=')
                    .unwrap_or_else(|| panic!("{origin}: attribute without value in <{tag}>"));
                let key = attrs[..eq].trim().to_string();
                let value_part = attrs[eq + 1..].trim_start();
                let quote = value_part.chars().next().unwrap_or(' ');
                assert!(
                    quote == '"' || quote == '\'',
                    "{origin}: unquoted attribute {key}"
                );
                let close = value_part[1..]
                    .find(quote)
                    .unwrap_or_else(|| panic!("{origin}: unterminated attribute {key}"));
                let value = xml_unescape(origin, &value_part[1..1 + close]);
                assert!(
                    element.attributes.insert(key.clone(), value).is_none(),
                    "{origin}: attribute {key} repeated"
                );
                attrs = value_part[close + 2..].trim_start();
            }
            if stack.len() == 1 {
                roots += 1;
            }
            if empty {
                stack.last_mut().unwrap().children.push(element);
            } else {
                stack.push(element);
            }
            rest = &after[end + 1..];
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            let text = xml_unescape(origin, &rest[..end]);
            if stack.len() == 1 {
                assert!(text.trim().is_empty(), "{origin}: text outside the root");
            } else {
                stack.last_mut().unwrap().text.push_str(&text);
            }
            rest = &rest[end..];
        }
    }
    assert_eq!(
        stack.len(),
        1,
        "{origin}: <{}> is never closed",
        stack.last().unwrap().name
    );
    assert_eq!(roots, 1, "{origin}: exactly one root element");
    stack.pop().unwrap().children.pop().unwrap()
}

#[test]
fn the_task_scheduler_xml_is_well_formed_and_runs_a_valid_command() {
    let origin = "docs/examples/windows/b2bsync-task.xml";
    let task = parse_xml(origin, &read(origin));
    assert_eq!(task.name, "Task");
    assert_eq!(
        task.attributes["xmlns"],
        "http://schemas.microsoft.com/windows/2004/02/mit/task"
    );
    assert_eq!(
        task.path(&["Settings", "MultipleInstancesPolicy"]).text,
        "IgnoreNew"
    );
    assert_eq!(
        task.path(&["Triggers", "CalendarTrigger", "Repetition", "Interval"])
            .text,
        "PT30M"
    );
    let exec = task.path(&["Actions", "Exec"]);
    assert!(exec.child("Command").text.ends_with("cmd.exe"));
    let arguments = &exec.child("Arguments").text;
    let args = b2bsync_args(origin, arguments);
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
        let result = std::panic::catch_unwind(|| parse_xml("test", broken));
        assert!(result.is_err(), "accepted: {broken}");
    }
    let ok = parse_xml(
        "test",
        "<?xml version='1.0'?><!-- c --><a k=\"&amp;\"><b/>x &lt; y</a>",
    );
    assert_eq!(ok.attributes["k"], "&");
    assert_eq!(ok.text, "x < y");
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

struct YamlLine {
    number: usize,
    indent: usize,
    text: String,
}

/// Parses the YAML subset Kubernetes manifests are usually written in: block mappings,
/// block sequences (`- item`, `- key: value`), plain and quoted scalars, `|` block scalars,
/// comments, several documents separated by `---`. Flow collections, anchors, tags and
/// multi-line plain scalars are refused, so a structural mistake never passes silently.
fn parse_yaml(origin: &str, text: &str) -> Vec<Value> {
    let mut documents = Vec::new();
    let mut current: Vec<(usize, &str)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_end() == "---" {
            documents.push(std::mem::take(&mut current));
        } else {
            current.push((n + 1, line));
        }
    }
    documents.push(current);
    documents
        .into_iter()
        .filter_map(|raw| {
            let mut lines = Vec::new();
            let mut i = 0;
            while i < raw.len() {
                let (number, line) = raw[i];
                assert!(!line.contains('\t'), "{origin}:{number}: a tab");
                let trimmed = line.trim_start();
                let indent = line.len() - trimmed.len();
                i += 1;
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                let text = strip_comment(trimmed);
                // A block scalar: keep its lines raw, joined, as the value.
                if text.ends_with(": |") || text.ends_with(": |-") {
                    let keep_newline = text.ends_with('|');
                    let mut block = Vec::new();
                    while i < raw.len() {
                        let (_, l) = raw[i];
                        let l_indent = l.len() - l.trim_start().len();
                        if !l.trim().is_empty() && l_indent <= indent {
                            break;
                        }
                        block.push(l);
                        i += 1;
                    }
                    while block.last().is_some_and(|l| l.trim().is_empty()) {
                        block.pop();
                    }
                    let cut = block
                        .iter()
                        .filter(|l| !l.trim().is_empty())
                        .map(|l| l.len() - l.trim_start().len())
                        .min()
                        .unwrap_or(0);
                    let mut value = block
                        .iter()
                        .map(|l| if l.len() >= cut { &l[cut..] } else { "" })
                        .collect::<Vec<_>>()
                        .join("\n");
                    if keep_newline {
                        value.push('\n');
                    }
                    let key = &text[..text.rfind(": |").unwrap()];
                    lines.push(YamlLine {
                        number,
                        indent,
                        text: format!("{key}: \u{0}{value}"),
                    });
                    continue;
                }
                lines.push(YamlLine {
                    number,
                    indent,
                    text: text.to_string(),
                });
            }
            if lines.is_empty() {
                return None;
            }
            let mut at = 0;
            let value = yaml_node(origin, &mut lines, &mut at, 0);
            if at < lines.len() {
                panic!(
                    "{origin}:{}: unexpected indentation or content: {}",
                    lines[at].number, lines[at].text
                );
            }
            Some(value)
        })
        .collect()
}

fn strip_comment(text: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && previous == ' ' => return text[..i].trim_end(),
            None => {}
        }
        previous = c;
    }
    text.trim_end()
}

fn yaml_node(origin: &str, lines: &mut [YamlLine], at: &mut usize, min_indent: usize) -> Value {
    let Some(first) = lines.get(*at) else {
        return Value::Null;
    };
    if first.indent < min_indent {
        return Value::Null;
    }
    let indent = first.indent;
    if first.text == "-" || first.text.starts_with("- ") {
        let mut items = Vec::new();
        while *at < lines.len() && lines[*at].indent == indent {
            let line = &mut lines[*at];
            let Some(rest) = line
                .text
                .strip_prefix("- ")
                .or((line.text == "-").then_some(""))
            else {
                break;
            };
            let rest = rest.trim_start().to_string();
            if rest.is_empty() {
                *at += 1;
                items.push(yaml_node(origin, lines, at, indent + 1));
            } else if is_mapping_entry(&rest) {
                // `- key: value`: a mapping whose first entry sits after the dash.
                line.indent = indent + 2;
                line.text = rest;
                items.push(yaml_node(origin, lines, at, indent + 2));
            } else {
                *at += 1;
                items.push(yaml_scalar(origin, line_number(lines, *at - 1), &rest));
            }
        }
        return Value::Array(items);
    }
    let mut map = Map::new();
    while *at < lines.len() && lines[*at].indent == indent {
        let number = lines[*at].number;
        let text = lines[*at].text.clone();
        assert!(
            is_mapping_entry(&text),
            "{origin}:{number}: expected `key: value`, found `{text}`"
        );
        let (key, value) = text.split_once(':').unwrap();
        let key = key.trim().to_string();
        assert!(
            !key.is_empty() && !key.contains(' ') || key.starts_with('"'),
            "{origin}:{number}: bad key `{key}`"
        );
        *at += 1;
        let value = value.trim_start();
        let node = if let Some(block) = value.strip_prefix('\u{0}') {
            Value::String(block.to_string())
        } else if value.is_empty() {
            match lines.get(*at) {
                Some(next) if next.indent > indent => yaml_node(origin, lines, at, indent + 1),
                // A sequence may sit at the same indentation as its key.
                Some(next) if next.indent == indent && next.text.starts_with("- ") => {
                    yaml_node(origin, lines, at, indent)
                }
                _ => Value::Null,
            }
        } else {
            yaml_scalar(origin, number, value)
        };
        assert!(
            map.insert(key.clone(), node).is_none(),
            "{origin}:{number}: key `{key}` repeated"
        );
    }
    Value::Object(map)
}

fn line_number(lines: &[YamlLine], at: usize) -> usize {
    lines[at].number
}

fn is_mapping_entry(text: &str) -> bool {
    if text.starts_with('"') || text.starts_with('\'') {
        return false;
    }
    text.ends_with(':') || text.contains(": ")
}

fn yaml_scalar(origin: &str, number: usize, text: &str) -> Value {
    for refused in ['{', '[', '&', '*', '!', '>', '|'] {
        assert!(
            !text.starts_with(refused),
            "{origin}:{number}: `{refused}` is outside the YAML subset these examples use"
        );
    }
    if let Some(inner) = text.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .unwrap_or_else(|| panic!("{origin}:{number}: unterminated string"));
        return Value::String(inner.replace("\\\"", "\"").replace("\\\\", "\\"));
    }
    if let Some(inner) = text.strip_prefix('\'') {
        let inner = inner
            .strip_suffix('\'')
            .unwrap_or_else(|| panic!("{origin}:{number}: unterminated string"));
        return Value::String(inner.replace("''", "'"));
    }
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" | "~" => Value::Null,
        _ => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(text.to_string())),
    }
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
fn the_yaml_parser_rejects_what_it_does_not_understand() {
    for broken in [
        "a: 1\n  b: 2\n",
        "a:\n\tb: 1\n",
        "a: {b: 1}\n",
        "a: 1\na: 2\n",
        "- a\nb: 1\n",
    ] {
        let result = std::panic::catch_unwind(|| parse_yaml("test", broken));
        assert!(result.is_err(), "accepted: {broken:?}");
    }
    let docs = parse_yaml(
        "test",
        "a:\n  - x: 1\n    y: \"two # not a comment\"\n  - plain # comment\nb: |\n  line 1\n\n  line 2\n---\nc: true\n",
    );
    assert_eq!(docs[0]["a"][0]["x"], 1);
    assert_eq!(docs[0]["a"][0]["y"], "two # not a comment");
    assert_eq!(docs[0]["a"][1], "plain");
    assert_eq!(docs[0]["b"], "line 1\n\nline 2\n");
    assert_eq!(docs[1]["c"], true);
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
