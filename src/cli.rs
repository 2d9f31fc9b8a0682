//! The command line: parses arguments (clap), sets up logging, runs one command and turns its
//! outcome into the exit codes of DESIGN section 4.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::report;
use crate::state::Store;

/// Exit codes, stable for schedulers (Task Scheduler's "Last Run Result", systemd's
/// `SuccessExitStatus=`).
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

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

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
#[command(name = "b2bsync", version, about, long_about = None)]
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
    /// The migration funnel from the state store: accounts per state, blocked reasons,
    /// invitations pending for long. No network.
    #[command(
        after_help = "Examples:\n  b2bsync status\n  b2bsync status --format csv > funnel.csv"
    )]
    Status {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Invitations pending at least this many days are listed.
        #[arg(long, default_value_t = 14)]
        pending_days: i64,
    },
    /// What a run changed, from the journal (the latest run when RUN is not given).
    #[command(after_help = "Examples:\n  b2bsync report\n  b2bsync report 0193... --format json")]
    Report {
        run: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Write to this file (atomically, owner-only) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
    // Already initialised (tests call this more than once): keep the first subscriber.
    let _ = result;
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    init_logging(cli.log_format, cli.verbose);
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

async fn dispatch(cli: Cli) -> Result<Exit, Failure> {
    match cli.command {
        Command::Status {
            format,
            pending_days,
        } => {
            let config = Config::load(&cli.config)?;
            let store = Store::open(&config.state.path)?;
            let s = report::status(
                &store.accounts()?,
                store.runs()?,
                pending_days,
                jiff::Timestamp::now(),
            );
            let text = match format {
                Format::Table => report::status_text(&s),
                Format::Csv => report::status_csv(&s).map_err(csv_failure)?,
                Format::Json => serde_json::to_string_pretty(&s).map_err(json_failure)? + "\n",
            };
            print!("{text}");
            Ok(Exit::Ok)
        }
        Command::Report { run, format, out } => {
            let config = Config::load(&cli.config)?;
            let store = Store::open(&config.state.path)?;
            let run = match run {
                Some(r) => r,
                None => match store.runs()?.last() {
                    Some(r) => r.id.clone(),
                    None => {
                        return Err(Failure::new(
                            Exit::Failed,
                            "the state store has no run yet",
                            "run `b2bsync run` (or `apply`) first",
                        ));
                    }
                },
            };
            let entries = store.journal_entries(Some(&run))?;
            let text = match format {
                Format::Csv | Format::Table => {
                    report::journal_csv(&entries).map_err(csv_failure)?
                }
                Format::Json => {
                    serde_json::to_string_pretty(&entries).map_err(json_failure)? + "\n"
                }
            };
            match out {
                Some(path) => report::write_atomic(&path, text.as_bytes()).map_err(|e| {
                    Failure::new(
                        Exit::Failed,
                        format!("cannot write {}: {e}", path.display()),
                        "check that the directory exists and is writable",
                    )
                })?,
                None => print!("{text}"),
            }
            Ok(Exit::Ok)
        }
    }
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
