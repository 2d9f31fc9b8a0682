//! The command line: parses arguments (clap), sets up logging, runs one command and turns its
//! outcome into the exit codes of `report::Exit` (docs/operations.md, "Exit codes").

mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::apply;
use crate::apply::rollback::UndoResult;
use crate::cloud::token::Credential;
use crate::cloud::{Cloud, GraphClient, GraphSettings};
use crate::config::{AuthMethod, Config};
use crate::mapping::MappingSet;
use crate::pipeline::{self, Inputs, RunEnd};
use crate::plan::Plan;
use crate::report;
use crate::source::rights::Rights;
use crate::source::{Directory, LdapDirectory};
use crate::state::Store;

pub use crate::report::Exit;

/// A failure that ends the command: what happened, how to fix it, and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
    pub help: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>, help: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
            help: help.into(),
        }
    }
}

impl From<crate::config::Error> for Failure {
    fn from(e: crate::config::Error) -> Self {
        Failure::new(Exit::InvalidConfig, e.to_string(), e.help())
    }
}

impl From<crate::state::Error> for Failure {
    fn from(e: crate::state::Error) -> Self {
        let exit = if matches!(e, crate::state::Error::Locked { .. }) {
            Exit::Locked
        } else {
            Exit::Failed
        };
        Failure::new(exit, e.to_string(), e.help())
    }
}

/// Moves partner accounts with internal credentials onto Microsoft Entra B2B collaboration.
#[derive(Debug, Parser)]
#[command(
    name = "b2bsync",
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  b2bsync check\n  b2bsync plan --out plan.json --csv plan.csv\n  b2bsync apply --plan plan.json\n  b2bsync --log-format json run\n  b2bsync status --html status.html\n\nExit codes: 0 ok, 1 failed, 2 some actions failed or need a human, 3 invalid config or mapping, 4 over a threshold (nothing written), 5 another run holds the lock.\nDocumentation: docs/operations.md"
)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        default_value = "b2bsync.toml",
        env = "B2BSYNC_CONFIG"
    )]
    pub config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// More detail in the logs (-v debug, -vv trace). Secrets never appear at any level.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human on a terminal, JSON lines otherwise.
    Auto,
    Human,
    /// One JSON object per line, for a SIEM.
    Json,
}

/// Output format of `status` and `report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Checks everything without changing anything: config and mappings, the LDAP bind over
    /// TLS and one page of accounts, a Graph token and its permissions, one page of users.
    #[command(
        after_help = "Examples:\n  b2bsync check\n  b2bsync --config /etc/b2bsync/b2bsync.toml check"
    )]
    Check,
    /// The dry run: reads both sides and shows what `run` would do. Never writes.
    #[command(
        after_help = "Examples:\n  b2bsync plan\n  b2bsync plan --out plan.json --csv plan.csv"
    )]
    Plan {
        /// Write the plan as JSON (for `apply --plan` and reviews).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write the actions and blocked accounts as CSV.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Read both sides in full, whatever the stored change marks say (the scheduled
        /// full read, on demand).
        #[arg(long)]
        full: bool,
    },
    /// Executes a reviewed plan (refused if the world changed since), or plans afresh and
    /// applies.
    #[command(
        after_help = "Examples:\n  b2bsync apply --plan plan.json\n  b2bsync apply\n  b2bsync apply --plan plan.json --allow-over-threshold"
    )]
    Apply {
        /// A plan written by `plan --out`; applied only if a fresh plan is identical.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Apply even if a threshold of `[limits]` is exceeded.
        #[arg(long)]
        allow_over_threshold: bool,
        /// Read both sides in full, whatever the stored change marks say (the scheduled
        /// full read, on demand).
        #[arg(long)]
        full: bool,
    },
    /// Plan, guard and apply in one go, for schedulers. Takes the single-instance lock.
    #[command(
        after_help = "Examples:\n  b2bsync run\n  b2bsync --log-format json run\n  b2bsync run --allow-over-threshold"
    )]
    Run {
        /// Apply even if a threshold of `[limits]` is exceeded.
        #[arg(long)]
        allow_over_threshold: bool,
        /// Read both sides in full, whatever the stored change marks say (the scheduled
        /// full read, on demand).
        #[arg(long)]
        full: bool,
    },
    /// Undoes what a run changed where that can be undone: AD `mail`, the cloud's `mail`,
    /// `otherMails` and `userType` go back to the journal's before-values. Invitations and
    /// password randomizations cannot be undone; they are listed with the reason.
    #[command(after_help = "Examples:\n  b2bsync rollback 01a2095f-0c4e-7d1b-9a53-6f3e2d1c0b9a")]
    Rollback {
        /// The run id (from `status --format json` or `report`).
        run: String,
        /// Show what would be reverted, reading the current values, and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also revert the address of an account already invited or accepted.
        #[arg(long)]
        force: bool,
    },
    /// The migration funnel from the state store: accounts per state, blocked and unmatched
    /// reasons with their fixes, invitations pending by age, and what each run changed.
    /// No network.
    #[command(
        after_help = "Examples:\n  b2bsync status\n  b2bsync status --format json\n  b2bsync status --format csv > funnel.csv\n  b2bsync status --html /srv/reports/b2bsync.html\n  b2bsync status --pending-days 30 --html status.html --format table\n  b2bsync status --print-template > status.html.j2\n  b2bsync status --accounts --state invited --domain fabrikam.example\n  b2bsync status --accounts --format csv > accounts.csv"
    )]
    Status {
        /// Output on stdout [default: table, or nothing when --html is given].
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// The same as `--format json`.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// One row per account (name, DN, state, reason, partner domain, invited, accepted,
        /// randomized) and the counts per partner domain, instead of the funnel.
        #[arg(long)]
        accounts: bool,
        /// With --accounts: only accounts in this state.
        #[arg(long, value_name = "STATE", requires = "accounts", value_parser = parse_state)]
        state: Option<crate::model::Lifecycle>,
        /// With --accounts: only accounts whose external address is in this partner domain.
        #[arg(long, value_name = "PARTNER_DOMAIN", requires = "accounts")]
        domain: Option<String>,
        /// Invitations pending at least this many days are listed.
        #[arg(long, default_value_t = 14)]
        pending_days: i64,
        /// Write the report to FILE as one self-contained HTML page (atomically, owner-only).
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Print the built-in template of the HTML page and exit: the start of a copy for
        /// `[report] template`.
        #[arg(long, exclusive = true)]
        print_template: bool,
    },
    /// Everything the state store knows of one account: state, kind, join, the reason it is
    /// held back and the fix, the next step and what it waits for, and every write of the
    /// journal. No network.
    #[command(
        after_help = "Examples:\n  b2bsync explain p.baker\n  b2bsync explain bob.baker@contoso-partner.example\n  b2bsync explain \"CN=Bob Baker,OU=Partners,DC=corp,DC=example\" --format json"
    )]
    Explain {
        /// sAMAccountName, UPN, DN, external address or cloud object id (case-insensitive).
        account: String,
        /// `table` (text) or `json`.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// What a run changed, from the journal (the latest run when RUN is not given).
    #[command(
        after_help = "Examples:\n  b2bsync report\n  b2bsync report 0193... --format json\n  b2bsync report --out last-run.csv"
    )]
    Report {
        run: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Write to this file (atomically, owner-only) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Invitations from the state store. `--pending`: those sent without Microsoft's email
    /// (`send_message = false`) and not accepted yet, with the redeem link to deliver.
    /// `--clear-mismatch`: lets the next run invite an account again after its invitation
    /// was answered with another user and an admin checked it. No network.
    #[command(
        after_help = "Examples:\n  b2bsync invitations --pending\n  b2bsync invitations --pending --out links.csv\n  b2bsync invitations --pending --format json\n  b2bsync invitations --clear-mismatch 1MOyofblGAcpOktcbX6PkA=="
    )]
    Invitations {
        /// List the invitations waiting for their partner, with their redeem links.
        #[arg(long, required_unless_present = "clear_mismatch")]
        pending: bool,
        /// Output format [default: csv with --out, else table].
        #[arg(long, value_enum, requires = "pending")]
        format: Option<Format>,
        /// Write to this file (atomically, owner-only: it holds redeem links) instead of stdout.
        #[arg(long, requires = "pending")]
        out: Option<PathBuf>,
        /// The account (its state-store key, as `status` and the journal show it) whose
        /// invitation mismatch an admin has checked.
        #[arg(long, value_name = "ACCOUNT", conflicts_with = "pending")]
        clear_mismatch: Option<String>,
    },
}

/// A lifecycle state as `--state` takes it (`invited`, `awaiting_sync`, ...).
fn parse_state(text: &str) -> Result<crate::model::Lifecycle, String> {
    report::FUNNEL
        .iter()
        .copied()
        .find(|s| s.as_str().eq_ignore_ascii_case(text.trim()))
        .ok_or_else(|| {
            let all: Vec<&str> = report::FUNNEL.iter().map(|s| s.as_str()).collect();
            format!("unknown state; one of: {}", all.join(", "))
        })
}

/// Sets up `tracing` on stderr.
pub fn init_logging(format: LogFormat, verbose: u8) {
    use std::io::IsTerminal;
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("B2BSYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("b2bsync={level},warn")));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // Log lines go through the progress bar's writer, so they print above it; the bar itself
    // is hidden unless stderr is a terminal.
    let lines = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(progress::Writer)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .compact()
            .with_writer(progress::Writer)
            .with_filter(filter)
            .boxed()
    };
    let result = tracing_subscriber::registry().with(lines).try_init();
    // Already initialised (tests call this more than once): keep the first subscriber.
    let _ = result;
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    init_logging(cli.log_format, cli.verbose);
    // A Kerberos keytab reaches the GSSAPI library through the environment, which only a new
    // process gets without `unsafe`: start again with it, before any thread exists. A config
    // that does not load is reported by the command itself.
    if let Ok(config) = Config::load(&cli.config)
        && config.ldap.bind == crate::config::BindMethod::Gssapi
        && let Some(keytab) = &config.ldap.keytab
        && let Some(e) = crate::source::gssapi::exec_with_keytab(keytab)
    {
        return fail(Failure::new(
            Exit::Failed,
            format!(
                "cannot start b2bsync again with the keytab {}: {e}",
                keytab.display()
            ),
            "check that the b2bsync program can be run by this user (it starts itself once more with KRB5_CLIENT_KTNAME set)",
        ));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(Failure::new(
                Exit::Failed,
                format!("cannot start the async runtime: {e}"),
                "check the process's thread and memory limits",
            ));
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(exit) => exit.into(),
        Err(f) => fail(f),
    }
}

fn fail(f: Failure) -> ExitCode {
    eprintln!("error: {}", f.message);
    eprintln!("help: {}", f.help);
    f.exit.into()
}

/// The configuration, the mappings and the settings derived from them.
fn load_inputs(config: &Config, full: bool) -> Result<Inputs, Failure> {
    let mappings = MappingSet::load_dir(&config.mappings.dir).map_err(|e| {
        Failure::new(
            Exit::InvalidConfig,
            e.to_string(),
            "fix the mapping file at the position shown; docs/mapping.md describes every key",
        )
    })?;
    Ok(Inputs {
        mappings,
        limits: config.limits.clone(),
        policy: config.policy.clone(),
        invitation: config.invitation.clone(),
        verified_domains: config.graph.verified_domains.clone(),
        reads: config.reads.clone(),
        force_full_read: full,
        // The set of DCs, not their order: which DC a mark belongs to is in the mark itself
        // (invocationId), so reordering `urls` or failing over keeps the snapshot.
        read_identity: format!(
            "{}\n{}\n{}",
            read_urls(&config.ldap),
            config.graph.graph_url,
            config.graph.tenant
        ),
    })
}

/// The directory URLs as the read identity names them: sorted, each once; one URL stays as
/// it was, so a store written before `urls` existed keeps its snapshot.
fn read_urls(ldap: &crate::config::LdapConfig) -> String {
    let mut urls = ldap.all_urls();
    urls.sort();
    urls.dedup();
    urls.join(" ")
}

fn directory(config: &Config) -> Result<LdapDirectory, Failure> {
    let settings = config.ldap_settings()?;
    LdapDirectory::new(settings)
        .map_err(|e| Failure::new(Exit::InvalidConfig, e.to_string(), e.help()))
}

fn cloud(config: &Config) -> Result<GraphClient, Failure> {
    let g = &config.graph;
    let credential = match g.auth {
        AuthMethod::ClientSecret => Credential::Secret(config.client_secret()?),
        AuthMethod::Certificate => {
            let (Some(cert), Some(key)) = (&g.certificate_file, &g.private_key_file) else {
                return Err(Failure::new(
                    Exit::InvalidConfig,
                    "[graph] auth = \"certificate\" needs certificate_file and private_key_file",
                    "set both paths in [graph]",
                ));
            };
            Credential::certificate(cert, key)
                .map_err(|e| Failure::new(Exit::InvalidConfig, e.to_string(), e.help()))?
        }
        AuthMethod::WorkloadIdentity => {
            let file = g
                .federated_token_file
                .clone()
                .or_else(|| std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from))
                .ok_or_else(|| {
                    Failure::new(
                        Exit::InvalidConfig,
                        "no federated token file for the workload identity",
                        "set [graph] federated_token_file, or run where AZURE_FEDERATED_TOKEN_FILE is set (AKS workload identity)",
                    )
                })?;
            Credential::FederatedTokenFile(file)
        }
        AuthMethod::ManagedIdentity => {
            Credential::ManagedIdentity(crate::cloud::token::ManagedIdentity::from_environment(
                g.managed_identity_endpoint.as_deref(),
                g.managed_identity_client_id.as_deref(),
            ))
        }
    };
    let mut settings = GraphSettings::new(&g.graph_url, &g.authority, &g.tenant, &g.client_id);
    settings.ca_file = g.ca_file.clone();
    settings.sign_in_activity =
        config.policy.randomize_password == crate::plan::RandomizeWhen::AfterSignIn;
    if let Some(resource) = &g.resource {
        settings.resource = resource.trim_end_matches('/').to_string();
    }
    GraphClient::new(settings, credential)
        .map_err(|e| Failure::new(Exit::InvalidConfig, e.to_string(), e.help()))
}

fn pipeline_failure(e: pipeline::Error) -> Failure {
    let exit = match e {
        pipeline::Error::Mapping(_) => Exit::InvalidConfig,
        _ => Exit::Failed,
    };
    Failure::new(exit, e.to_string(), e.help())
}

fn write_file(path: &std::path::Path, text: &str) -> Result<(), Failure> {
    report::write_atomic(path, text.as_bytes()).map_err(|e| {
        Failure::new(
            Exit::Failed,
            format!("cannot write {}: {e}", path.display()),
            report::write_help(path, &e),
        )
    })
}

/// How the LDAP connection of `config` is protected, in words that are true for a bind that
/// succeeded: a cleartext bind only succeeds when `allow_cleartext` let it.
fn ldap_transport(config: &Config) -> &'static str {
    let urls = config.ldap.all_urls();
    if urls
        .iter()
        .all(|u| u.to_ascii_lowercase().starts_with("ldaps://"))
    {
        "over TLS (LDAPS)"
    } else if config.ldap.starttls {
        "over TLS (StartTLS)"
    } else if config.ldap.bind == crate::config::BindMethod::Gssapi {
        "sealed by Kerberos, without TLS (password resets are refused)"
    } else {
        "in cleartext (allowed by [ldap] allow_cleartext = true; only for a lab)"
    }
}

/// Warns, once per file, about the config and secret files group or others may read: a
/// `warn` event naming the file and its mode, with the `chmod` that fixes it.
fn warn_loose_files(config: &Config) {
    for f in config.loose_files() {
        tracing::warn!(
            file = %f.path.display(),
            mode = format!("{:04o}", f.mode),
            help = %f.help(),
            "{f}."
        );
    }
}

/// `check`'s capability table: what the directory server can do and what b2bsync does
/// with it (incremental reads, anchor, disabled accounts, protected groups). Returns the
/// mappings whose `join.anchor` this server does not have (detail, help).
async fn capabilities_report(
    dir: &crate::source::LdapDirectory,
    inputs: Option<&Inputs>,
) -> Vec<(String, String)> {
    let server = match dir.server().await {
        Ok(s) => s,
        Err(e) => {
            println!("info  ldap capabilities: not read: {e}");
            return Vec::new();
        }
    };
    let group = inputs.and_then(|i| {
        i.mappings
            .searches()
            .into_iter()
            .find_map(|s| s.protected_groups.first().cloned())
    });
    let member_of = match group {
        Some(g) => dir.member_of_maintained(&g).await.ok().flatten(),
        None if server.flavour != crate::source::Flavour::Generic => Some(true),
        None => None,
    };
    println!("info  ldap capabilities:");
    for (what, detail) in server.capabilities.table(member_of) {
        println!("      {what}: {}", report::terminal_safe(&detail));
    }
    let offered: Vec<String> = crate::source::capabilities::AnchorName::ALL
        .into_iter()
        .filter(|a| server.capabilities.offers_anchor(&server.facts, *a))
        .map(|a| format!("`{a}`"))
        .collect();
    inputs
        .map(|i| i.mappings.mappings())
        .unwrap_or_default()
        .iter()
        .filter_map(|m| {
            let at = m.join.anchor_at.as_ref()?;
            let name = m.join.anchor.name();
            (!server.capabilities.offers_anchor(&server.facts, name)).then(|| {
                (
                    format!(
                        "{at}: join.anchor `{name}` is not an attribute of this directory ({})",
                        server.capabilities.vendor
                    ),
                    format!(
                        "use {} (docs/mapping.md, anchors)",
                        if offered.is_empty() {
                            "none: this directory has no anchor attribute; leave join.anchor out"
                                .to_string()
                        } else {
                            offered.join(" or ")
                        }
                    ),
                )
            })
        })
        .collect()
}

/// `check`: one line per check, `ok` or what is wrong with a `help:` line.
async fn check(config_path: &std::path::Path) -> Result<Exit, Failure> {
    let mut problems = 0usize;
    let mut report_line = |ok: bool, what: &str, detail: String, help: String| {
        if ok {
            println!("ok    {what}: {detail}");
        } else {
            problems += 1;
            println!("FAIL  {what}: {detail}");
            println!("      help: {help}");
        }
    };
    let config = match Config::load(config_path) {
        Ok(c) => {
            report_line(
                true,
                "config",
                config_path.display().to_string(),
                String::new(),
            );
            // A warning, not a failure: the set-up works, but others may read a secret.
            for f in c.loose_files() {
                println!("warn  permissions: {f}");
                println!("      help: {}", f.help());
            }
            c
        }
        Err(e) => {
            report_line(false, "config", e.to_string(), e.help());
            return Ok(Exit::InvalidConfig);
        }
    };
    let inputs = match load_inputs(&config, false) {
        Ok(i) => {
            let names: Vec<&str> = i
                .mappings
                .mappings()
                .iter()
                .map(|m| m.name.as_str())
                .collect();
            report_line(true, "mappings", names.join(", "), String::new());
            Some(i)
        }
        Err(f) => {
            report_line(false, "mappings", f.message, f.help);
            None
        }
    };
    // The accounts in scope as read, for the checks that join them to cloud users.
    let mut in_scope: Vec<(String, crate::model::SourceAccount)> = Vec::new();
    match directory(&config) {
        Err(f) => report_line(false, "ldap", f.message, f.help),
        Ok(dir) => match dir.connect().await {
            Err(e) => report_line(false, "ldap bind", e.to_string(), e.help()),
            Ok(mut ldap) => {
                let _ = ldap.unbind().await;
                let flavour = dir
                    .flavour()
                    .await
                    .map(|f| format!("{f:?}"))
                    .unwrap_or_default();
                let who = match &dir.settings().kerberos {
                    Some(k) => k.describe(),
                    None => config.ldap.bind_dn.clone(),
                };
                report_line(
                    true,
                    "ldap bind",
                    format!(
                        "{} as {who} {} ({flavour})",
                        dir.current_url(),
                        ldap_transport(&config)
                    ),
                    String::new(),
                );
                if dir.settings().kerberos.is_some() && !dir.settings().encrypted() {
                    let e = crate::source::Error::PasswordWithoutTls {
                        url: config.ldap.url.clone(),
                        operation: "reset a password",
                    };
                    report_line(false, "ldap tls", e.to_string(), e.help());
                }
                for (detail, help) in capabilities_report(&dir, inputs.as_ref()).await {
                    report_line(false, "join anchor", detail, help);
                }
                if let Some(inputs) = &inputs {
                    for search in inputs.mappings.searches() {
                        let scope = search.scope();
                        match dir.accounts(&scope).await {
                            Ok(a) if a.is_empty() => report_line(
                                false,
                                "ldap scope",
                                format!("{}: no account under {}", search.mapping, search.base_dn),
                                "check the mapping's base DN and filter, and that the service account may read there".into(),
                            ),
                            Ok(a) => {
                                report_line(
                                    true,
                                    "ldap scope",
                                    format!("{}: {} accounts under {}", search.mapping, a.len(), search.base_dn),
                                    String::new(),
                                );
                                let anchorless = a.iter().filter(|x| x.anchor().is_none()).count();
                                if anchorless > 0 {
                                    println!("warn  anchors: {}: {anchorless} of {} accounts have no anchor and are keyed by their DN", search.mapping, a.len());
                                    println!("      help: such an account is recognised after a rename or move only by the cloud user it was joined to; use a directory attribute that every account has as [join] anchor (docs/mapping.md)");
                                }
                                // Rights are tested on an account b2bsync would write: one that
                                // no protection (adminCount, protected group, deny list) stops.
                                let found: Vec<_> = a
                                    .into_iter()
                                    .map(|x| (search.mapping.clone(), x))
                                    .collect();
                                let target = unprotected(inputs, found.clone());
                                in_scope.extend(found);
                                if target.is_none() {
                                    println!("info  ldap rights: not checked: every account under {} is protected or disabled", search.base_dn);
                                }
                                if let Some(first) = target {
                                    match dir.mail_rights(&first.dn).await {
                                        Rights::MayWriteMail => report_line(
                                            true,
                                            "ldap rights",
                                            format!("may write mail on {} (not protected; allowedAttributesEffective); the reset-password right has no read-only check in AD and shows on the first randomization", report::terminal_safe(&first.dn)),
                                            String::new(),
                                        ),
                                        Rights::MayNotWriteMail => report_line(
                                            false,
                                            "ldap rights",
                                            format!("{} may not write mail on {}", config.ldap.bind_dn, report::terminal_safe(&first.dn)),
                                            "delegate `Write mail` and `Reset password` on user objects of the partners' OU to the service account (docs/operations.md, the AD delegation)".into(),
                                        ),
                                        Rights::Unknown(why) => println!("info  ldap rights: not checked: {why}"),
                                    }
                                }
                            }
                            Err(e) => report_line(false, "ldap scope", e.to_string(), e.help()),
                        }
                    }
                }
            }
        },
    }
    match cloud(&config) {
        Err(f) => report_line(false, "graph", f.message, f.help),
        Ok(client) => match client.token_roles().await {
            Err(e) => report_line(false, "graph token", e.to_string(), e.help()),
            Ok(roles) => {
                report_line(
                    true,
                    "graph token",
                    format!("issued for {}", config.graph.client_id),
                    String::new(),
                );
                let missing = crate::cloud::permissions::missing(
                    &roles,
                    config.graph.verified_domains.is_some(),
                    config.policy.revoke_sessions,
                    config.policy.randomize_password == crate::plan::RandomizeWhen::AfterSignIn,
                );
                report_line(
                    missing.is_empty(),
                    "graph permissions",
                    format!(
                        "granted: {}{}",
                        if roles.is_empty() {
                            "none".to_string()
                        } else {
                            roles.join(", ")
                        },
                        if missing.is_empty() {
                            String::new()
                        } else {
                            format!("; missing: {}", missing.join(", "))
                        }
                    ),
                    format!(
                        "grant the application permission(s) {} with admin consent in the app registration (docs/operations.md)",
                        missing.join(", ")
                    ),
                );
                match client.users().await {
                    Ok(users) => {
                        report_line(
                            true,
                            "graph users",
                            format!("{} users readable", users.len()),
                            String::new(),
                        );
                        if let Some(inputs) = &inputs {
                            let found = std::mem::take(&mut in_scope);
                            let blocked = on_premises_upn_accounts(inputs, found, users);
                            // A warning, not a failure: the plan blocks just these accounts
                            // (with the same reason) and converts the others.
                            if blocked.is_empty() {
                                report_line(
                                    true,
                                    "onPremisesUserPrincipalName",
                                    "no account in scope has a cloud user with it".to_string(),
                                    String::new(),
                                );
                            } else {
                                println!(
                                    "warn  onPremisesUserPrincipalName: {} account(s) in scope have a cloud user with onPremisesUserPrincipalName, which Entra ID refuses to convert; they stay blocked until it is gone (first: {})\n      help: {}",
                                    blocked.len(),
                                    report::terminal_safe(&blocked[0]),
                                    crate::plan::ReasonCode::OnPremisesUserPrincipalName.help()
                                );
                            }
                        }
                    }
                    Err(e) => report_line(false, "graph users", e.to_string(), e.help()),
                }
                match client.allow_invites_from().await {
                    Ok(allow) => match invitation_policy(&allow) {
                        Ok(detail) => report_line(true, "invitation policy", detail, String::new()),
                        Err((detail, help)) => {
                            report_line(false, "invitation policy", detail, help)
                        }
                    },
                    Err(e) if e.status() == Some(403) => println!(
                        "warn  invitation policy: could not be read (GET /policies/authorizationPolicy needs Policy.Read.All): whether the tenant lets the app invite is unknown\n      help: grant Policy.Read.All to have `check` read it, or look at External collaboration settings in the Entra admin center"
                    ),
                    Err(e) => println!(
                        "warn  invitation policy: could not be read: {e}\n      help: {}",
                        e.help()
                    ),
                }
            }
        },
    }
    if problems == 0 {
        println!("\nall checks passed");
        Ok(Exit::Ok)
    } else {
        println!("\n{problems} check(s) failed");
        Ok(if inputs.is_none() {
            Exit::InvalidConfig
        } else {
            Exit::Failed
        })
    }
}

/// The first of `found` that b2bsync would write: in scope of one mapping, no protection
/// (adminCount, protected group, deny list), not disabled.
fn unprotected(
    inputs: &Inputs,
    found: Vec<(String, crate::model::SourceAccount)>,
) -> Option<crate::mapping::AccountFacts> {
    crate::mapping::map_accounts(&inputs.mappings, found)
        .into_iter()
        .find(|m| m.protection.is_empty() && m.also_in.is_empty() && !m.account.disabled)
        .map(|m| m.account)
}

/// The DNs of the accounts in scope whose joined cloud user has
/// `onPremisesUserPrincipalName` (Entra ID refuses to convert them).
fn on_premises_upn_accounts(
    inputs: &Inputs,
    found: Vec<(String, crate::model::SourceAccount)>,
    users: Vec<crate::model::CloudUser>,
) -> Vec<String> {
    let mapped = crate::mapping::map_accounts(&inputs.mappings, found);
    let joined = crate::join::join(mapped, users);
    joined
        .iter()
        .filter_map(|(account, outcome)| match outcome {
            crate::join::JoinOutcome::Joined { user, .. } => joined
                .users
                .get(*user)
                .filter(|u| u.on_premises_user_principal_name.is_some())
                .map(|_| account.account.dn.clone()),
            _ => None,
        })
        .collect()
}

/// What `allowInvitesFrom` means for an app inviting with User.Invite.All: a line for
/// `check`, or the failure and its fix.
fn invitation_policy(allow: &str) -> Result<String, (String, String)> {
    match allow {
        "everyone" | "adminsGuestInvitersAndAllMembers" | "adminsAndGuestInviters" => Ok(format!(
            "allowInvitesFrom = {allow}: the tenant lets an app with User.Invite.All invite"
        )),
        "none" => Err((
            "allowInvitesFrom = none: nobody in the tenant may invite, not even admins or apps; every invitation would be refused".to_string(),
            "in the Entra admin center, External Identities > External collaboration settings > Guest invite settings, allow at least admins and users in the Guest Inviter role to invite".to_string(),
        )),
        other => Err((
            format!("allowInvitesFrom = `{other}`, a value b2bsync does not know"),
            "check External collaboration settings in the Entra admin center; b2bsync knows none, adminsAndGuestInviters, adminsGuestInvitersAndAllMembers and everyone".to_string(),
        )),
    }
}

async fn dispatch(cli: Cli) -> Result<Exit, Failure> {
    match cli.command {
        Command::Check => check(&cli.config).await,
        Command::Plan { out, csv, full } => {
            let config = Config::load(&cli.config)?;
            warn_loose_files(&config);
            let inputs = load_inputs(&config, full)?;
            let dir = directory(&config)?;
            let graph = cloud(&config)?;
            let store = std::sync::Mutex::new(Store::open(&config.state.path)?);
            let progress = store.lock().unwrap_or_else(|p| p.into_inner()).progress()?;
            // Reads from the stored snapshot and marks but stores nothing: plan never writes.
            let observed = pipeline::observe(&inputs, &dir, &graph, &store)
                .await
                .map_err(pipeline_failure)?;
            let plan = pipeline::compute(observed, &inputs, &progress, jiff::Timestamp::now())
                .map_err(pipeline_failure)?;
            let verdict = crate::guard::check(&plan, &inputs.limits, false);
            print!("{}", report::plan_text(&plan));
            if let Some(path) = out {
                let json = serde_json::to_string_pretty(&plan).map_err(json_failure)? + "\n";
                write_file(&path, &json)?;
            }
            if let Some(path) = csv {
                write_file(&path, &report::plan_csv(&plan).map_err(csv_failure)?)?;
            }
            if !verdict.exceeded.is_empty() {
                // As `run` says it, and with its exit code: a scheduler or a reviewer sees it.
                for e in &verdict.exceeded {
                    eprintln!("error: over threshold: {e}");
                }
                eprintln!(
                    "help: review the plan; `b2bsync run --allow-over-threshold` applies it once, or raise the limit in [limits]"
                );
                return Ok(Exit::OverThreshold);
            }
            Ok(Exit::Ok)
        }
        Command::Apply {
            plan,
            allow_over_threshold,
            full,
        } => {
            let reviewed = match plan {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        Failure::new(
                            Exit::Failed,
                            format!("cannot read {}: {e}", path.display()),
                            "pass the file written by `b2bsync plan --out`",
                        )
                    })?;
                    let plan: Plan = serde_json::from_str(&text).map_err(|e| {
                        Failure::new(
                            Exit::Failed,
                            format!("{} is not a b2bsync plan: {e}", path.display()),
                            "pass the file written by `b2bsync plan --out`, unedited",
                        )
                    })?;
                    Some(plan)
                }
                None => None,
            };
            execute(
                &cli.config,
                "apply",
                allow_over_threshold,
                full,
                reviewed.as_ref(),
            )
            .await
        }
        Command::Run {
            allow_over_threshold,
            full,
        } => execute(&cli.config, "run", allow_over_threshold, full, None).await,
        Command::Rollback {
            run,
            dry_run,
            force,
        } => rollback(&cli.config, &run, dry_run, force).await,
        Command::Status {
            format,
            json,
            accounts,
            state,
            domain,
            pending_days,
            html,
            print_template,
        } => {
            if print_template {
                print!("{}", report::html::TEMPLATE);
                return Ok(Exit::Ok);
            }
            let format = if json { Some(Format::Json) } else { format };
            let config = Config::load(&cli.config)?;
            let store = Store::open(&config.state.path)?;
            let now = jiff::Timestamp::now();
            let rows = store.accounts()?;
            let names = store.names()?;
            if accounts && html.is_none() {
                let filter = report::AccountFilter { state, domain };
                let list = report::account_list(&rows, &names, &filter);
                let text = match format.unwrap_or(Format::Table) {
                    Format::Table => report::accounts_text(&list),
                    Format::Csv => report::accounts_csv(&list).map_err(csv_failure)?,
                    Format::Json => {
                        serde_json::to_string_pretty(&list).map_err(json_failure)? + "\n"
                    }
                };
                print!("{text}");
                return Ok(Exit::Ok);
            }
            let mut s = report::status(&rows, store.runs()?, pending_days, now);
            s.about = about(&config);
            let mut history = report::history::Builder::new(&rows);
            // One query per run keeps memory bounded by the largest run, not the whole journal.
            for run in &mut s.runs {
                let entries = store.journal_entries(Some(&run.run.id))?;
                run.changes = report::count_changes(&entries);
                history.add_run(&run.run, &entries);
            }
            let states: Vec<_> = s.states.iter().map(|c| (c.state, c.accounts)).collect();
            s.history = history.finish(&states, now);
            if config.reads.incremental {
                s.reads = pipeline::reads::read_states(&store, &config.reads)?;
            }
            if let Some(path) = &html {
                let custom = match &config.report.template {
                    Some(file) => Some((file, read_template(file)?)),
                    None => None,
                };
                let template = match &custom {
                    Some((path, text)) => report::html::Template::File { path, text },
                    None => report::html::Template::BuiltIn,
                };
                s.accounts = report::account_list(&rows, &names, &report::AccountFilter::default());
                let page = report::html::render(&s, now, template)
                    .map_err(|e| Failure::new(Exit::InvalidConfig, e.to_string(), e.help()))?;
                write_file(path, &page)?;
                tracing::info!(path = %path.display(), "wrote the HTML status report");
            }
            drop(rows);
            let format = match (format, &html) {
                (Some(f), _) => f,
                (None, Some(_)) => return Ok(Exit::Ok),
                (None, None) => Format::Table,
            };
            let text = match format {
                Format::Table => report::status_text(&s),
                Format::Csv => report::status_csv(&s).map_err(csv_failure)?,
                Format::Json => serde_json::to_string_pretty(&s).map_err(json_failure)? + "\n",
            };
            print!("{text}");
            Ok(Exit::Ok)
        }
        Command::Explain { account, format } => {
            let config = Config::load(&cli.config)?;
            let store = Store::open(&config.state.path)?;
            let rows = store.accounts()?;
            let names = store.names()?;
            let found = report::explain::find(&rows, &names, &account)
                .map_err(|e| Failure::new(Exit::Failed, e.to_string(), e.help()))?;
            let x = report::explain::explain(found, &names, store.account_journal(&found.key)?);
            let text = match format {
                Format::Json => serde_json::to_string_pretty(&x).map_err(json_failure)? + "\n",
                Format::Table | Format::Csv => report::explain::explain_text(&x),
            };
            print!("{text}");
            Ok(Exit::Ok)
        }
        Command::Report { run, format, out } => {
            let config = Config::load(&cli.config)?;
            let store = Store::open(&config.state.path)?;
            let runs = store.runs()?;
            let entries = match run {
                Some(r) => {
                    if !runs.iter().any(|known| known.id == r) {
                        return Err(Failure::new(
                            Exit::Failed,
                            format!("run {r:?} is not in the state store"),
                            "pass a run id from `b2bsync status --format json` (field runs), or none for the latest run that changed something",
                        ));
                    }
                    let entries = store.journal_entries(Some(&r))?;
                    if entries.is_empty() {
                        eprintln!("note: run {r} changed nothing: the journal has no record of it");
                    }
                    entries
                }
                None => {
                    let Some(latest) = runs.last() else {
                        return Err(Failure::new(
                            Exit::Failed,
                            "the state store has no run yet",
                            "run `b2bsync run` (or `apply`) first",
                        ));
                    };
                    // The latest run that changed something: a no-op run has nothing to show.
                    let mut found = None;
                    for r in runs.iter().rev() {
                        let entries = store.journal_entries(Some(&r.id))?;
                        if !entries.is_empty() {
                            found = Some((r.id.clone(), entries));
                            break;
                        }
                    }
                    match found {
                        Some((id, entries)) => {
                            if id != latest.id {
                                eprintln!(
                                    "note: the latest run {} changed nothing; showing run {id}, the latest that did",
                                    latest.id
                                );
                            }
                            entries
                        }
                        None => {
                            eprintln!("note: no run has changed anything yet");
                            Vec::new()
                        }
                    }
                }
            };
            let entries = report::journal_rows(entries, &store.accounts()?, &store.names()?);
            let text = match format {
                Format::Csv => report::journal_csv(&entries).map_err(csv_failure)?,
                Format::Table => report::journal_text(&entries),
                Format::Json => {
                    serde_json::to_string_pretty(&entries).map_err(json_failure)? + "\n"
                }
            };
            match out {
                Some(path) => write_file(&path, &text)?,
                None => print!("{text}"),
            }
            Ok(Exit::Ok)
        }
        Command::Invitations {
            pending: _,
            format,
            out,
            clear_mismatch,
        } => {
            let config = Config::load(&cli.config)?;
            let store = Store::open(&config.state.path)?;
            if let Some(key) = clear_mismatch {
                if !store.clear_invitation_mismatch(&key)? {
                    return Err(Failure::new(
                        Exit::Failed,
                        format!(
                            "no account `{key}` with an invitation mismatch in the state store"
                        ),
                        "`b2bsync status` lists the blocked accounts with the reason invitation_answer_mismatch; pass the account's key as the journal shows it",
                    ));
                }
                println!(
                    "cleared the invitation mismatch of {key}: the next run decides it afresh"
                );
                return Ok(Exit::Ok);
            }
            let links = store.pending_links()?;
            let format = format.unwrap_or(if out.is_some() {
                Format::Csv
            } else {
                Format::Table
            });
            let text = match format {
                Format::Csv => report::pending::csv(&links).map_err(csv_failure)?,
                Format::Json => report::pending::json(&links),
                Format::Table => report::pending::table(&links),
            };
            match out {
                Some(path) => write_file(&path, &text)?,
                None => print!("{text}"),
            }
            Ok(Exit::Ok)
        }
    }
}

/// What the HTML report describes: the tenant and the directory (its URL and the search
/// bases of the mappings, when they load).
fn about(config: &Config) -> report::About {
    let bases: Vec<String> = MappingSet::load_dir(&config.mappings.dir)
        .map(|set| {
            set.mappings()
                .iter()
                .flat_map(|m| m.scope.base_dns.iter().cloned())
                .collect()
        })
        .unwrap_or_default();
    report::About {
        tenant: config.graph.tenant.clone(),
        directory: if bases.is_empty() {
            config.ldap.all_urls().join(", ")
        } else {
            format!(
                "{} ({})",
                config.ldap.all_urls().join(", "),
                bases.join("; ")
            )
        },
    }
}

/// `rollback RUN [--dry-run] [--force]`.
async fn rollback(
    config_path: &std::path::Path,
    run: &str,
    dry_run: bool,
    force: bool,
) -> Result<Exit, Failure> {
    let config = Config::load(config_path)?;
    let dir = directory(&config)?;
    let graph = cloud(&config)?;
    let options = apply::rollback::Options { dry_run, force };
    let rollback_failure =
        |e: apply::rollback::Error| Failure::new(Exit::Failed, e.to_string(), e.help());
    if dry_run {
        // No lock, no run, no journal record: a dry run writes nothing.
        let store = std::sync::Mutex::new(Store::open(&config.state.path)?);
        let undos = apply::rollback::rollback(&store, run, "", &dir, &graph, options)
            .await
            .map_err(rollback_failure)?;
        print_undos(&undos);
        println!("{}", rollback_summary(run, &undos, true));
        return Ok(Exit::Ok);
    }
    let session = pipeline::Session::begin(&config.state.path, "rollback")?;
    let new_run = session.run_id().to_string();
    let undos = apply::rollback::rollback(session.store(), run, &new_run, &dir, &graph, options)
        .await
        .map_err(rollback_failure)?;
    print_undos(&undos);
    let summary = rollback_summary(run, &undos, false);
    println!("{summary}");
    if undos
        .iter()
        .any(|u| u.result == UndoResult::Reverted && u.is_address())
    {
        println!(
            "note: the next scheduled run writes the address again unless the mapping or the scope changes (docs/operations.md, \"Rolling back\")"
        );
    }
    let failed = undos
        .iter()
        .filter(|u| matches!(u.result, UndoResult::Failed | UndoResult::Conflict))
        .count();
    let refused = undos
        .iter()
        .filter(|u| u.result == UndoResult::Refused)
        .count();
    let exit = if failed + refused > 0 {
        Exit::Partial
    } else {
        Exit::Ok
    };
    session.finish(exit as i64, &summary)?;
    Ok(exit)
}

fn print_undos(undos: &[apply::rollback::Undo]) {
    for u in undos {
        println!(
            "{:<13} {:<20} {}: {}",
            u.result,
            u.action,
            report::terminal_safe(&u.account),
            report::terminal_safe(&u.detail)
        );
    }
}

fn rollback_summary(run: &str, undos: &[apply::rollback::Undo], dry_run: bool) -> String {
    let count = |result| undos.iter().filter(|u| u.result == result).count();
    let head = if dry_run {
        format!(
            "dry run of the rollback of run {run}: {} would be reverted",
            count(UndoResult::WouldRevert)
        )
    } else {
        format!(
            "rollback of run {run}: {} reverted",
            count(UndoResult::Reverted)
        )
    };
    format!(
        "{head}, {} cannot be undone, {} changed since (left alone), {} refused (invited or accepted; --force reverts them), {} failed{}",
        count(UndoResult::Irreversible),
        count(UndoResult::Conflict),
        count(UndoResult::Refused),
        count(UndoResult::Failed),
        if dry_run { "; nothing was written" } else { "" }
    )
}

/// `run` and `apply`: lock, reconcile, plan, guard, apply, save, summarise.
async fn execute(
    config_path: &std::path::Path,
    command: &str,
    allow_over_threshold: bool,
    full: bool,
    reviewed: Option<&Plan>,
) -> Result<Exit, Failure> {
    let config = Config::load(config_path)?;
    warn_loose_files(&config);
    let inputs = load_inputs(&config, full)?;
    let dir = directory(&config)?;
    let graph = cloud(&config)?;
    let session = pipeline::Session::begin(&config.state.path, command)?;
    let options = apply::Options {
        concurrency: config.apply.concurrency,
        password_length: config.apply.password_length,
    };
    // Every log line of the run carries its id (in JSON: the `span` object), for a SIEM.
    let span = tracing::info_span!("run", run_id = %session.run_id(), command);
    tracing::info!(parent: &span, "run started");
    let result = tracing::Instrument::instrument(
        session.run(
            &inputs,
            &dir,
            &graph,
            &options,
            allow_over_threshold,
            reviewed,
            &progress::show,
        ),
        span,
    )
    .await;
    progress::finish();
    let run_id = session.run_id().to_string();
    let finish = |session: pipeline::Session, code: Exit, summary: &str| {
        if let Err(e) = session.finish(code as i64, summary) {
            tracing::error!("cannot record the end of the run: {e}");
        }
    };
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            let f = pipeline_failure(e);
            finish(session, f.exit, &f.message);
            return Err(f);
        }
    };
    match result.end {
        RunEnd::Stale => {
            let f = Failure::new(
                Exit::Failed,
                "the reviewed plan is stale: the directory, the tenant, the mappings or the state changed since it was made",
                "make and review a new plan with `b2bsync plan --out plan.json`",
            );
            finish(session, f.exit, &f.message);
            Err(f)
        }
        RunEnd::OverThreshold(verdict) => {
            for e in &verdict.exceeded {
                eprintln!("error: over threshold: {e}");
            }
            let summary = format!(
                "stopped before any write: {} threshold(s) exceeded",
                verdict.exceeded.len()
            );
            println!("{summary}");
            finish(session, Exit::OverThreshold, &summary);
            Ok(Exit::OverThreshold)
        }
        RunEnd::Applied(outcome) => {
            let summary = report::run_summary(&run_id, &result.plan, &outcome, &result.reconciled);
            println!("{summary}");
            let exit = if outcome.failed() > 0 {
                Exit::Partial
            } else {
                Exit::Ok
            };
            finish(session, exit, &summary);
            Ok(exit)
        }
    }
}

/// Reads `[report] template`; a file that cannot be read is a configuration error.
fn read_template(path: &std::path::Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            Exit::InvalidConfig,
            format!("cannot read the report template {}: {e}", path.display()),
            "fix `[report] template` in the configuration, or remove it to use the built-in \
             page; `b2bsync status --print-template` prints the built-in template to start a copy",
        )
    })
}

fn csv_failure(e: csv::Error) -> Failure {
    Failure::new(
        Exit::Failed,
        format!("cannot write CSV: {e}"),
        "report this as a bug",
    )
}

fn json_failure(e: serde_json::Error) -> Failure {
    Failure::new(
        Exit::Failed,
        format!("cannot write JSON: {e}"),
        "report this as a bug",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ldap: &str) -> Config {
        let text = format!(
            "[ldap]\n{ldap}\nbind_dn = \"svc\"\npassword_env = \"PW\"\n\n[graph]\ntenant = \"t\"\nclient_id = \"c\"\nauth = \"client_secret\"\nclient_secret_env = \"S\"\n"
        );
        Config::from_text(std::path::Path::new("/nowhere/b2bsync.toml"), &text, [])
            .unwrap_or_else(|e| panic!("{e}"))
    }

    // See: issue 10, finding 8 (`check` said "over TLS" for a cleartext bind).
    #[test]
    fn check_names_the_transport_the_bind_really_used() {
        assert_eq!(
            ldap_transport(&config("url = \"LDAPS://dc1:636\"")),
            "over TLS (LDAPS)"
        );
        assert_eq!(
            ldap_transport(&config("url = \"ldap://dc1:389\"\nstarttls = true")),
            "over TLS (StartTLS)"
        );
        let cleartext = ldap_transport(&config("url = \"ldap://dc1:389\"\nallow_cleartext = true"));
        assert!(cleartext.starts_with("in cleartext (allowed by [ldap] allow_cleartext = true"));
        assert!(!cleartext.contains("TLS"), "{cleartext}");
    }
}
