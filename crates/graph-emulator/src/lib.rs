//! The Graph emulator: a faithful stand-in for the parts of Microsoft Graph and the Entra
//! token endpoint that b2bsync uses, served over HTTPS with a throwaway certificate.
//!
//! It follows `docs/graph-contract.md`: paths, JSON shapes, exact error bodies,
//! paging, advanced-query rules, delta, `$batch`, throttling and the token endpoint. Every
//! behaviour the contract marks as an assumption `[A]` is listed in `docs/emulator.md`.
//! A separate control API under `/_emulator/...` lets tests and rehearsals accept invitations,
//! run an Entra Connect cycle against a real AD, inject faults and read the request log.
//!
//! It is a test and rehearsal tool: the connector never links it (b2bsync's tests use it as a
//! dev-dependency), and it imports nothing from the connector.

// Handlers return a finished `Response` as their error value; boxing it would only add noise.
#![allow(clippy::result_large_err)]

mod auth;
mod batch;
mod certificate;
mod connect;
mod control;
mod delta;
mod directory;
mod filter;
mod graph;
mod http;
mod identity;
mod invitations;
mod organization;
mod request;
mod server;
mod tenant;
mod throttle;
mod users;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use server::throwaway_tls;
pub use tenant::{App, FederatedCredential, ObjectIdentity, SignInActivity, Tenant, User};
pub use throttle::Model as ThrottleModel;

/// The Graph root that tokens are issued for when nothing else is configured.
pub const DEFAULT_GRAPH_RESOURCE: &str = "https://graph.microsoft.com";

/// The public login base that client assertions may name in `aud`, besides the emulator itself.
pub const DEFAULT_LOGIN_BASE: &str = "https://login.microsoftonline.com";

/// How to start an emulator.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// The tenant (users, apps, domains) the emulator starts with.
    pub tenant: Tenant,
    /// 1.0 = real throttling windows; 0.01 = windows 100 times shorter, limits unchanged.
    pub time_scale: f64,
    /// The token audience and the `.default` scope resource, e.g. `https://graph.microsoft.com`.
    pub graph_resource: String,
    /// The login base accepted in client-assertion `aud` claims (the emulator's own base URL is
    /// always accepted too).
    pub login_base: String,
    /// Lifetime of issued access tokens in seconds (`expires_in`); 3599 like Entra.
    pub token_lifetime_secs: u64,
    /// How throttling limits are enforced: a strict sliding window (the default) or the
    /// refilling token bucket.
    pub throttle_model: ThrottleModel,
    /// `allowInvitesFrom` of the tenant's authorization policy: `none`,
    /// `adminsAndGuestInviters`, `adminsGuestInvitersAndAllMembers` or `everyone` (default).
    pub allow_invites_from: String,
}

impl Default for Options {
    /// Loopback on a free port, an empty tenant (set `tenant` before spawning), real time.
    fn default() -> Options {
        Options::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            Tenant::default(),
        )
    }
}

impl Options {
    /// Options with the contract's defaults for `tenant`, listening on `listen`.
    pub fn new(listen: SocketAddr, tenant: Tenant) -> Options {
        Options {
            listen,
            tenant,
            time_scale: 1.0,
            graph_resource: DEFAULT_GRAPH_RESOURCE.to_owned(),
            login_base: DEFAULT_LOGIN_BASE.to_owned(),
            token_lifetime_secs: 3599,
            throttle_model: ThrottleModel::Window,
            allow_invites_from: "everyone".to_owned(),
        }
    }
}

/// Errors that stop the emulator from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The fixture could not be read.
    #[error("reading tenant fixture {path}: {source}")]
    FixtureRead {
        /// The fixture file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The fixture is not valid JSON or has an unknown or mistyped field.
    #[error("tenant fixture {path}, line {line}, column {column}: {message}")]
    FixtureSyntax {
        /// The fixture file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The fixture parses but breaks a rule (duplicate id, bad certificate, ...).
    #[error("tenant fixture {path}: {message}")]
    FixtureInvalid {
        /// The fixture file, or `<memory>`.
        path: PathBuf,
        /// What is wrong, naming the object.
        message: String,
    },
    /// Generating the certificates or keys failed.
    #[error("generating the emulator's certificates: {0}")]
    Certificate(String),
    /// Listening failed.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An option is out of range.
    #[error("invalid option: {0}")]
    Option(String),
}

impl Error {
    /// One line telling the user what to do.
    pub fn help(&self) -> &'static str {
        match self {
            Error::FixtureRead { .. } => {
                "pass --tenant with the path of a tenant fixture (JSON); docs/emulator.md shows one"
            }
            Error::FixtureSyntax { .. } | Error::FixtureInvalid { .. } => {
                "fix the fixture at the place shown; docs/emulator.md describes every field"
            }
            Error::Certificate(_) => {
                "report this as a bug: the emulator generates its certificates itself"
            }
            Error::Bind { .. } => {
                "pick a free address with --listen (127.0.0.1:0 picks a free port)"
            }
            Error::Option(_) => "see graph-emulator --help for the allowed values",
        }
    }
}

/// A running emulator. Dropping it stops accepting connections.
#[derive(Debug)]
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// `https://127.0.0.1:PORT`; Graph lives under `{base_url}/v1.0`.
    pub base_url: String,
    /// PEM of the throwaway CA that signed the server certificate.
    pub ca_pem: String,
    /// The tenant id, for building token URLs.
    pub tenant_id: String,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// The token endpoint for this tenant.
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.base_url, self.tenant_id)
    }

    /// The Graph root, `{base_url}/v1.0`.
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base_url)
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
    }
}

/// Starts an emulator in the current tokio runtime and returns once it is listening.
pub async fn spawn(opts: Options) -> Result<Running, Error> {
    server::spawn(opts).await
}
