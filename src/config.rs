//! The run configuration (`b2bsync.toml`): where the directory and Graph are, how to
//! authenticate, where the state and the mappings live, the limits and the policy.
//!
//! Parsed with `toml` so every mistake in the file names its line and column; then
//! `B2BSYNC__SECTION__KEY` environment variables override single values (for schedulers and
//! containers). Secrets are never read from this file: only the names of the environment
//! variables or files that hold them.
//!
//! Every float must be finite (`nan` and `inf` would switch a threshold off without a word).
//! On Unix, a world-writable config file is refused, and [`Config::loose_files`] lists the
//! config and secret files that group or others may read, for `check` and the start of a run
//! to warn about.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::source::{Flavour, LdapSettings};

/// The environment prefix of overrides: `B2BSYNC__LDAP__URL=ldaps://dc1:636`.
pub const ENV_PREFIX: &str = "B2BSYNC__";

/// A configuration that cannot be used. Displayed as `file:line:column: message`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("environment override {var}: {message}")]
    Env { var: String, message: String },
    #[error("secret {what}: {message}")]
    Secret { what: String, message: String },
    /// Anyone on the machine may change the file (Unix mode `o+w`).
    #[error("{path} is writable by anyone on this machine (mode {mode:04o}); refusing to use it")]
    WorldWritable { path: PathBuf, mode: u32 },
}

impl Error {
    /// One line telling the admin what to do.
    pub fn help(&self) -> String {
        match self {
            Error::Read { .. } => "pass --config PATH, or create b2bsync.toml (start from docs/examples/b2bsync.toml)".into(),
            Error::Parse { .. } | Error::Invalid { .. } => {
                "see the annotated example docs/examples/b2bsync.toml and docs/operations.md".into()
            }
            Error::Env { .. } => {
                "B2BSYNC__SECTION__KEY overrides one key of the file, e.g. B2BSYNC__LDAP__URL".into()
            }
            Error::Secret { .. } => {
                "set the environment variable or file named in the configuration; secrets never go in the file itself".into()
            }
            Error::WorldWritable { path, .. } => format!(
                "chmod 600 {} (and check nobody changed it: it says where b2bsync connects and what it may write)",
                path.display()
            ),
        }
    }
}

/// `[ldap]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// One directory server. `url` or `urls` is required, not both.
    #[serde(default)]
    pub url: String,
    /// Several domain controllers of one domain, tried in order (see `source::connect`).
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub starttls: bool,
    /// How b2bsync authenticates: a simple bind with `bind_dn` and a password, or Kerberos.
    #[serde(default)]
    pub bind: BindMethod,
    /// Simple binds: the DN or UPN. Unused (and refused) with `bind = "gssapi"`.
    #[serde(default)]
    pub bind_dn: String,
    /// `bind = "gssapi"`: the keytab of the service account. Unset: the credential cache of
    /// the user b2bsync runs as (`KRB5CCNAME`).
    pub keytab: Option<PathBuf>,
    /// `bind = "gssapi"`: the client principal (`svc-b2bsync@EXAMPLE.COM`). Unset: the
    /// keytab's first principal or the cache's default one.
    pub principal: Option<String>,
    /// `bind = "gssapi"`: the host of the directory's service principal `ldap/<host>` when
    /// the URL does not name the DC by it (an IP address, a load balancer's name).
    pub spn_host: Option<String>,
    /// Name of the environment variable holding the bind password.
    pub password_env: Option<String>,
    /// File holding the bind password (systemd credentials, a 0600 file, a Kubernetes secret).
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_cleartext: bool,
    #[serde(default)]
    pub flavour: Flavour,
    #[serde(default = "default_page_size")]
    pub page_size: i32,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Generic LDAP incremental reads reach back this many seconds before a read's start
    /// (writes in flight during it, clock difference between b2bsync and the server).
    #[serde(default = "default_change_overlap_secs")]
    pub change_overlap_secs: u64,
}

impl LdapConfig {
    /// The directory URLs in the order they are tried: `urls`, or `url` alone.
    pub fn all_urls(&self) -> Vec<String> {
        if self.urls.is_empty() {
            vec![self.url.clone()]
        } else {
            self.urls.clone()
        }
    }
}

/// How b2bsync binds to the directory (`[ldap] bind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindMethod {
    /// Simple bind with `bind_dn` and the password from `password_env` or `password_file`.
    #[default]
    Simple,
    /// SASL GSSAPI (Kerberos) with a keytab or the credential cache; no password.
    Gssapi,
}

fn default_change_overlap_secs() -> u64 {
    60
}

fn default_page_size() -> i32 {
    1000
}

fn default_timeout_secs() -> u64 {
    30
}

/// How the app authenticates to Entra ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A client assertion signed with a certificate's private key (recommended on-premises).
    Certificate,
    /// A client secret from an environment variable or a file.
    ClientSecret,
    /// A workload identity: a federated token file (Kubernetes projects it and sets
    /// `AZURE_FEDERATED_TOKEN_FILE`) sent as the client assertion.
    WorkloadIdentity,
    /// The host's managed identity (an Azure VM, App Service, Container Apps).
    ManagedIdentity,
}

/// `[graph]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    pub tenant: String,
    pub client_id: String,
    pub auth: AuthMethod,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub certificate_file: Option<PathBuf>,
    pub private_key_file: Option<PathBuf>,
    /// Workload identity: the federated token file; defaults to `$AZURE_FEDERATED_TOKEN_FILE`.
    pub federated_token_file: Option<PathBuf>,
    /// Managed identity: the token endpoint; defaults to `$IDENTITY_ENDPOINT` (App Service),
    /// else Azure IMDS.
    pub managed_identity_endpoint: Option<String>,
    /// Managed identity: a user-assigned identity's client id (default: system-assigned).
    pub managed_identity_client_id: Option<String>,
    #[serde(default = "default_authority")]
    pub authority: String,
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// The token audience (`{resource}/.default` is the scope asked). Defaults to
    /// `graph_url`; set it to `https://graph.microsoft.com` when `graph_url` points at a
    /// proxy or at the Graph emulator.
    pub resource: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// Verified domains to use instead of reading `/organization` (which needs
    /// `Organization.Read.All`).
    pub verified_domains: Option<Vec<String>>,
}

fn default_authority() -> String {
    "https://login.microsoftonline.com".into()
}

fn default_graph_url() -> String {
    "https://graph.microsoft.com".into()
}

/// `[state]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default = "default_state_path")]
    pub path: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            path: default_state_path(),
        }
    }
}

fn default_state_path() -> PathBuf {
    PathBuf::from("b2bsync.db")
}

/// `[mappings]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingsConfig {
    #[serde(default = "default_mappings_dir")]
    pub dir: PathBuf,
}

impl Default for MappingsConfig {
    fn default() -> Self {
        MappingsConfig {
            dir: default_mappings_dir(),
        }
    }
}

fn default_mappings_dir() -> PathBuf {
    PathBuf::from("mappings")
}

/// `[apply]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApplyConfig {
    /// Accounts worked on at the same time.
    pub concurrency: usize,
    /// Length of the random on-premises passwords (at least 16).
    pub password_length: usize,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig {
            concurrency: 8,
            password_length: crate::source::password::DEFAULT_LENGTH,
        }
    }
}

/// `[report]`: the HTML status page.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// An admin's copy of the page's template (`b2bsync status --print-template` prints the
    /// built-in one); relative to this file. Unset: the built-in page.
    pub template: Option<PathBuf>,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub ldap: LdapConfig,
    pub graph: GraphConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub mappings: MappingsConfig,
    /// `[limits]`: the guard's thresholds.
    #[serde(default)]
    pub limits: crate::guard::Limits,
    /// `[policy]`: when to randomize passwords, re-invite, warn.
    #[serde(default)]
    pub policy: crate::plan::Policy,
    /// `[invitation]`: the defaults every mapping may override.
    #[serde(default)]
    pub invitation: crate::mapping::InvitationSettings,
    /// `[apply]`: how writes are executed.
    #[serde(default)]
    pub apply: ApplyConfig,
    /// `[reads]`: incremental reads and the scheduled full read.
    #[serde(default)]
    pub reads: crate::pipeline::Reads,
    /// `[report]`: the HTML status page.
    #[serde(default)]
    pub report: ReportConfig,
    /// Where the file was read from: relative paths in it are relative to its directory.
    #[serde(skip)]
    pub source: PathBuf,
}

impl Config {
    /// Reads `path` and applies the `B2BSYNC__` overrides of the process environment.
    pub fn load(path: &Path) -> Result<Config, Error> {
        if let Some(mode) = file_mode(path)
            && mode & 0o002 != 0
        {
            return Err(Error::WorldWritable {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_text(path, &text, std::env::vars())
    }

    /// Parses `text` (read from `path`) with the given environment.
    pub fn from_text(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Error> {
        let parse_err = |e: toml::de::Error| {
            let (line, column) = e
                .span()
                .map(|s| line_column(text, s.start))
                .unwrap_or((1, 1));
            Error::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().to_string(),
            }
        };
        // The file alone first, so mistakes in it carry their position.
        let mut config: Config = toml::from_str(text).map_err(parse_err)?;
        check_finite(path, text)?;
        let overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        if !overrides.is_empty() {
            let mut table: toml::Table = toml::from_str(text).map_err(parse_err)?;
            for (var, value) in &overrides {
                apply_override(&mut table, var, value)?;
            }
            config = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| Error::Env {
                    var: overrides
                        .iter()
                        .map(|(k, _)| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    message: e.message().to_string(),
                })?;
        }
        config.source = path.to_path_buf();
        config.check_urls(text)?;
        config.resolve_paths();
        config.default_redirect();
        config.validate()?;
        Ok(config)
    }

    /// Without `[invitation] redirect_url`, invitations send the partner to My Apps of this
    /// tenant: Teams and My Apps need the tenant id to open the resource tenant, not the
    /// partner's own (`https://myapps.microsoft.com/?tenantid=<tenant>`). A mapping's own
    /// `redirect_url` still wins.
    fn default_redirect(&mut self) {
        let tenant = self.graph.tenant.trim();
        let plain = !tenant.is_empty()
            && tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if self.invitation.redirect_url.is_none() && plain {
            self.invitation.redirect_url = Some(format!(
                "{}/?tenantid={tenant}",
                crate::plan::DEFAULT_REDIRECT_URL
            ));
        }
    }

    /// Makes relative paths relative to the configuration file's directory.
    fn resolve_paths(&mut self) {
        let Some(dir) = self.source.parent().map(Path::to_path_buf) else {
            return;
        };
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        let fix_opt = |p: &mut Option<PathBuf>| {
            if let Some(p) = p
                && p.is_relative()
            {
                *p = dir.join(&*p);
            }
        };
        fix(&mut self.state.path);
        fix(&mut self.mappings.dir);
        fix_opt(&mut self.ldap.ca_file);
        fix_opt(&mut self.ldap.password_file);
        fix_opt(&mut self.ldap.keytab);
        fix_opt(&mut self.graph.ca_file);
        fix_opt(&mut self.graph.client_secret_file);
        fix_opt(&mut self.graph.certificate_file);
        fix_opt(&mut self.graph.private_key_file);
        fix_opt(&mut self.graph.federated_token_file);
        fix_opt(&mut self.report.template);
    }

    /// `[ldap] url` or `urls`, not both, and `urls` not empty: a mistake names its line and
    /// column in the file (or, made by an environment override, the file alone).
    fn check_urls(&self, text: &str) -> Result<(), Error> {
        #[derive(Deserialize)]
        struct File {
            ldap: Option<Ldap>,
        }
        #[derive(Deserialize)]
        struct Ldap {
            url: Option<toml::Spanned<toml::Value>>,
            urls: Option<toml::Spanned<toml::Value>>,
        }
        let message = match (self.ldap.url.is_empty(), self.ldap.urls.is_empty()) {
            (false, false) => {
                "[ldap] has both url and urls: keep one (urls = [...] lists every domain controller, in the order they are tried)"
            }
            (true, true) => {
                "[ldap] needs url = \"ldaps://host:636\" or urls = [\"ldaps://dc1:636\", \"ldaps://dc2:636\"]"
            }
            _ if self.ldap.urls.iter().any(|u| u.trim().is_empty()) => {
                "[ldap] urls has an empty URL"
            }
            _ => return Ok(()),
        };
        let spans = toml::from_str::<File>(text).ok().and_then(|f| f.ldap);
        let span = spans.and_then(|l| l.urls.or(l.url)).map(|v| v.span());
        Err(match span {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                Error::Parse {
                    path: self.source.clone(),
                    line,
                    column,
                    message: message.into(),
                }
            }
            None => Error::Invalid {
                path: self.source.clone(),
                message: message.into(),
            },
        })
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |message: String| Error::Invalid {
            path: self.source.clone(),
            message,
        };
        self.validate_bind().map_err(invalid)?;
        if !(1..=1000).contains(&self.ldap.page_size) {
            return Err(invalid(format!(
                "[ldap] page_size = {} must be between 1 and 1000 (AD's MaxPageSize)",
                self.ldap.page_size
            )));
        }
        match self.graph.auth {
            AuthMethod::ClientSecret
                if self.graph.client_secret_env.is_none()
                    && self.graph.client_secret_file.is_none() =>
            {
                return Err(invalid(
                    "[graph] auth = \"client_secret\" needs client_secret_env or client_secret_file".into(),
                ));
            }
            AuthMethod::Certificate
                if self.graph.certificate_file.is_none()
                    || self.graph.private_key_file.is_none() =>
            {
                return Err(invalid(
                    "[graph] auth = \"certificate\" needs certificate_file and private_key_file"
                        .into(),
                ));
            }
            AuthMethod::WorkloadIdentity
                if self.graph.federated_token_file.is_none()
                    && std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_none() =>
            {
                return Err(invalid(
                    "[graph] auth = \"workload_identity\" needs federated_token_file or the AZURE_FEDERATED_TOKEN_FILE environment variable".into(),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// The `[ldap]` keys of the bind method: each method has what it needs and nothing of
    /// the other's (a password left beside a keytab would be a secret kept for nothing).
    fn validate_bind(&self) -> Result<(), String> {
        let l = &self.ldap;
        match l.bind {
            BindMethod::Simple => {
                if l.bind_dn.trim().is_empty() {
                    return Err("[ldap] needs bind_dn (or bind = \"gssapi\" for Kerberos)".into());
                }
                if l.password_env.is_none() && l.password_file.is_none() {
                    return Err("[ldap] needs password_env or password_file (the password itself never goes in this file), or bind = \"gssapi\" for Kerberos".into());
                }
                for (key, set) in [
                    ("keytab", l.keytab.is_some()),
                    ("principal", l.principal.is_some()),
                    ("spn_host", l.spn_host.is_some()),
                ] {
                    if set {
                        return Err(format!(
                            "[ldap] {key} is for Kerberos binds: add bind = \"gssapi\" or remove it"
                        ));
                    }
                }
            }
            BindMethod::Gssapi => {
                for (key, set) in [
                    ("bind_dn", !l.bind_dn.is_empty()),
                    ("password_env", l.password_env.is_some()),
                    ("password_file", l.password_file.is_some()),
                ] {
                    if set {
                        return Err(format!(
                            "[ldap] bind = \"gssapi\" authenticates with Kerberos credentials (keytab or credential cache), so {key} is not used: remove it (name the client with principal)"
                        ));
                    }
                }
                if let Some(p) = &l.principal
                    && (p.is_empty() || p.chars().any(|c| c.is_whitespace() || c.is_control()))
                {
                    return Err(format!(
                        "[ldap] principal = {p:?} is not a Kerberos principal (like svc-b2bsync@EXAMPLE.COM)"
                    ));
                }
                if let Some(h) = &l.spn_host
                    && (h.is_empty()
                        || h.contains(['/', '@', ':'])
                        || h.chars().any(char::is_whitespace))
                {
                    return Err(format!(
                        "[ldap] spn_host = {h:?} must be a bare host name (dc1.example.com): the service principal is ldap/<spn_host>"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The LDAP settings with the bind password read from its environment variable or file
    /// (simple binds), or where the Kerberos credentials come from (`bind = "gssapi"`).
    pub fn ldap_settings(&self) -> Result<LdapSettings, Error> {
        let (password, kerberos) = match self.ldap.bind {
            BindMethod::Simple => (
                read_secret(
                    "[ldap] password",
                    self.ldap.password_env.as_deref(),
                    self.ldap.password_file.as_deref(),
                )?,
                None,
            ),
            BindMethod::Gssapi => (
                SecretString::from(String::new()),
                Some(crate::source::gssapi::Kerberos {
                    keytab: self.ldap.keytab.clone(),
                    principal: self.ldap.principal.clone(),
                    spn_host: self.ldap.spn_host.clone(),
                }),
            ),
        };
        let mut urls = self.ldap.all_urls().into_iter();
        Ok(LdapSettings {
            url: urls.next().unwrap_or_default(),
            failover_urls: urls.collect(),
            starttls: self.ldap.starttls,
            ca_file: self.ldap.ca_file.clone(),
            bind_dn: self.ldap.bind_dn.clone(),
            password,
            allow_cleartext: self.ldap.allow_cleartext,
            flavour: self.ldap.flavour,
            page_size: self.ldap.page_size,
            timeout: Duration::from_secs(self.ldap.timeout_secs),
            change_overlap: Duration::from_secs(self.ldap.change_overlap_secs),
            kerberos,
        })
    }

    /// The Graph client secret, when that is the configured method.
    pub fn client_secret(&self) -> Result<SecretString, Error> {
        read_secret(
            "[graph] client secret",
            self.graph.client_secret_env.as_deref(),
            self.graph.client_secret_file.as_deref(),
        )
    }
}

/// Reads a secret from the named environment variable, else from the file (trailing newline
/// removed). The value never appears in an error.
fn read_secret(what: &str, env: Option<&str>, file: Option<&Path>) -> Result<SecretString, Error> {
    if let Some(var) = env {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => return Ok(SecretString::from(v)),
            _ if file.is_none() => {
                return Err(Error::Secret {
                    what: what.into(),
                    message: format!("the environment variable {var} is not set"),
                });
            }
            _ => {}
        }
    }
    if let Some(path) = file {
        let text =
            zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::Secret {
                what: what.into(),
                message: format!("cannot read {}: {e}", path.display()),
            })?);
        let value = text.trim_end_matches(['\r', '\n']);
        if value.is_empty() {
            return Err(Error::Secret {
                what: what.into(),
                message: format!("{} is empty", path.display()),
            });
        }
        return Ok(SecretString::from(value));
    }
    Err(Error::Secret {
        what: what.into(),
        message: "no environment variable or file is configured".into(),
    })
}

/// Sets `B2BSYNC__SECTION__KEY=value` in the table. The value is parsed as a TOML value when
/// it is one (`true`, `42`, `["a"]`), else taken as a string.
fn apply_override(table: &mut toml::Table, var: &str, value: &str) -> Result<(), Error> {
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    if path.len() < 2 || path.iter().any(String::is_empty) {
        return Err(Error::Env {
            var: var.into(),
            message: "expected B2BSYNC__SECTION__KEY".into(),
        });
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    if !value_finite(&parsed) {
        return Err(Error::Env {
            var: var.into(),
            message: format!("`{value}` is not a finite number"),
        });
    }
    let mut current = table;
    for key in &path[..path.len() - 1] {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(Error::Env {
                    var: var.into(),
                    message: format!("`{key}` is not a section"),
                });
            }
        };
    }
    if let Some(last) = path.last() {
        current.insert(last.clone(), parsed);
    }
    Ok(())
}

/// Fails on the first float of `text` that is `nan` or infinite, naming its line and column:
/// a threshold compared with NaN is never exceeded, so `max_percent = nan` would switch the
/// guard off. Syntax errors are left to the typed parse, which reports them.
fn check_finite(path: &Path, text: &str) -> Result<(), Error> {
    use toml::de::{DeTable, DeValue};
    fn walk(
        value: &toml::Spanned<DeValue<'_>>,
        key: &str,
    ) -> Option<(std::ops::Range<usize>, String)> {
        match value.get_ref() {
            DeValue::Float(f) if !f.as_str().parse::<f64>().is_ok_and(f64::is_finite) => Some((
                value.span(),
                format!("`{key}` = {f} is not a finite number"),
            )),
            DeValue::Array(items) => items.iter().find_map(|v| walk(v, key)),
            DeValue::Table(table) => table.iter().find_map(|(k, v)| {
                let key = if key.is_empty() {
                    k.get_ref().to_string()
                } else {
                    format!("{key}.{}", k.get_ref())
                };
                walk(v, &key)
            }),
            _ => None,
        }
    }
    let Ok(table) = DeTable::parse(text) else {
        return Ok(());
    };
    let root = toml::Spanned::new(table.span(), DeValue::Table(table.into_inner()));
    match walk(&root, "") {
        None => Ok(()),
        Some((span, message)) => {
            let (line, column) = line_column(text, span.start);
            Err(Error::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: format!("{message}; write a number such as 10.0"),
            })
        }
    }
}

/// Whether every float in `value` is finite.
fn value_finite(value: &toml::Value) -> bool {
    match value {
        toml::Value::Float(f) => f.is_finite(),
        toml::Value::Array(items) => items.iter().all(value_finite),
        toml::Value::Table(t) => t.values().all(value_finite),
        _ => true,
    }
}

/// A config or secret file that group or others may read or write: `check` and the start of a
/// run warn about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LooseFile {
    /// What the file is (`config`, `[ldap] password_file`, ...).
    pub what: &'static str,
    pub path: PathBuf,
    /// The Unix permission bits.
    pub mode: u32,
    /// Another user owns the file, and this process reads it through its group (a
    /// Kubernetes Secret with `fsGroup`): only the bits for others are a problem then.
    pub foreign: bool,
}

impl std::fmt::Display for LooseFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} is readable or writable by group or others (mode {:04o})",
            self.what,
            self.path.display(),
            self.mode
        )
    }
}

impl LooseFile {
    /// The command that fixes it.
    pub fn help(&self) -> String {
        if self.foreign {
            format!("chmod o-rwx {}", self.path.display())
        } else {
            format!("chmod 600 {}", self.path.display())
        }
    }
}

/// The permission bits of `path` (following links), on Unix; `None` elsewhere or when the
/// file cannot be read (the read itself reports that).
fn file_mode(path: &Path) -> Option<u32> {
    file_owner_mode(path).map(|(_, mode)| mode)
}

/// The owner's uid and the permission bits of `path` (following links), on Unix.
fn file_owner_mode(path: &Path) -> Option<(u32, u32)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.uid(), m.permissions().mode() & 0o7777))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// This process's effective uid where the system tells it without a C call (Linux's
/// `/proc/self` belongs to it); `None` elsewhere, and every file then counts as ours.
fn process_uid() -> Option<u32> {
    file_owner_mode(Path::new("/proc/self")).map(|(uid, _)| uid)
}

/// Whether a file of `owner` with `mode` is too open for this process (`me`): `None` when it
/// is fine, else whether another user owns it. A foreign file is read through its group, so
/// only the bits of others count for it.
fn loose_mode(owner: u32, mode: u32, me: Option<u32>) -> Option<bool> {
    let foreign = me.is_some_and(|me| me != owner);
    let loose = if foreign { 0o007 } else { 0o077 };
    (mode & loose != 0).then_some(foreign)
}

impl Config {
    /// The config file and the secret files it names that group or others may read or write
    /// (any of the mode bits `0o077`). A file another user owns, read through its group, is
    /// listed only for the bits of others. Always empty off Unix, where ACLs decide.
    pub fn loose_files(&self) -> Vec<LooseFile> {
        let me = process_uid();
        let candidates = [
            ("config", Some(&self.source)),
            ("[ldap] password_file", self.ldap.password_file.as_ref()),
            ("[ldap] keytab", self.ldap.keytab.as_ref()),
            (
                "[graph] client_secret_file",
                self.graph.client_secret_file.as_ref(),
            ),
            (
                "[graph] private_key_file",
                self.graph.private_key_file.as_ref(),
            ),
        ];
        candidates
            .into_iter()
            .filter_map(|(what, path)| {
                let path = path?;
                let (owner, mode) = file_owner_mode(path)?;
                let foreign = loose_mode(owner, mode, me)?;
                Some(LooseFile {
                    what,
                    path: path.clone(),
                    mode,
                    foreign,
                })
            })
            .collect()
    }
}

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[ldap]
url = "ldaps://127.0.0.1:636"
bind_dn = "svc@lab.example.com"
password_env = "LDAP_PW"

[graph]
tenant = "t"
client_id = "c"
auth = "client_secret"
client_secret_env = "GRAPH_SECRET"
"#;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, Error> {
        Config::from_text(
            Path::new("/etc/b2bsync/b2bsync.toml"),
            text,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    /// GOOD with its simple bind replaced by a Kerberos one.
    fn kerberos(extra: &str) -> String {
        GOOD.replace(
            "bind_dn = \"svc@lab.example.com\"\npassword_env = \"LDAP_PW\"\n",
            &format!("bind = \"gssapi\"\n{extra}"),
        )
    }

    #[test]
    fn a_gssapi_bind_needs_no_password_and_names_its_keytab() {
        let text = kerberos(
            "keytab = \"b2bsync.keytab\"\nprincipal = \"svc-b2bsync@LAB.EXAMPLE.COM\"\nspn_host = \"dc1.lab.example.com\"\n",
        );
        let c = parse(&text, &[]).expect("valid");
        assert_eq!(c.ldap.bind, BindMethod::Gssapi);
        let settings = c.ldap_settings().expect("no secret to read");
        let k = settings.kerberos.expect("a Kerberos bind");
        assert_eq!(
            k.keytab,
            Some(PathBuf::from("/etc/b2bsync/b2bsync.keytab")),
            "relative to the config file"
        );
        assert_eq!(k.principal.as_deref(), Some("svc-b2bsync@LAB.EXAMPLE.COM"));
        assert_eq!(k.spn_host.as_deref(), Some("dc1.lab.example.com"));
        // The credential cache alone is enough too.
        let c = parse(&kerberos(""), &[]).expect("valid");
        assert_eq!(
            c.ldap_settings().unwrap().kerberos,
            Some(Default::default())
        );
        // A simple bind stays the default and carries no Kerberos settings.
        let c = parse(GOOD, &[("LDAP_PW", "x")]).expect("valid");
        assert_eq!(c.ldap.bind, BindMethod::Simple);
    }

    #[test]
    fn a_gssapi_bind_refuses_the_keys_of_a_simple_one() {
        for extra in [
            "password_env = \"LDAP_PW\"\n",
            "password_file = \"bind.pw\"\n",
            "bind_dn = \"svc@lab.example.com\"\n",
        ] {
            let key = extra.split(' ').next().unwrap();
            let err = parse(&kerberos(extra), &[]).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::Invalid { .. }), "{msg}");
            assert!(msg.contains(key) && msg.contains("gssapi"), "{msg}");
            assert!(err.help().contains("operations.md"), "{}", err.help());
        }
        for (extra, word) in [
            ("principal = \"svc b2bsync\"\n", "principal"),
            ("principal = \"\"\n", "principal"),
            ("spn_host = \"ldap/dc1.lab.example.com\"\n", "spn_host"),
        ] {
            let msg = parse(&kerberos(extra), &[]).unwrap_err().to_string();
            assert!(msg.contains(word), "{msg}");
        }
        let msg = parse(&kerberos("bind_mode = \"x\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("bind_mode"), "{msg}");
        let msg = parse(&GOOD.replace("url =", "bind = \"kerberos\"\nurl ="), &[])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("kerberos") && msg.contains("gssapi"), "{msg}");
    }

    #[test]
    fn a_simple_bind_needs_its_dn_and_refuses_kerberos_keys() {
        let msg = parse(
            &GOOD.replace("bind_dn = \"svc@lab.example.com\"\n", ""),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("bind_dn") && msg.contains("gssapi"), "{msg}");
        for key in ["keytab", "principal", "spn_host"] {
            let text = GOOD.replace("password_env", &format!("{key} = \"x\"\npassword_env"));
            let msg = parse(&text, &[]).unwrap_err().to_string();
            assert!(
                msg.contains(key) && msg.contains("bind = \"gssapi\""),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_loose_keytab_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let keytab = dir.path().join("b2bsync.keytab");
        std::fs::write(&keytab, [5u8, 2]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&keytab, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let c = Config::from_text(
            &dir.path().join("b2bsync.toml"),
            &kerberos("keytab = \"b2bsync.keytab\"\n"),
            std::iter::empty(),
        )
        .expect("valid");
        let loose = c.loose_files();
        assert!(
            loose
                .iter()
                .any(|f| f.what == "[ldap] keytab" && f.path == keytab && f.mode == 0o644),
            "{loose:?}"
        );
    }

    #[test]
    fn a_good_file_loads_with_defaults() {
        let c = parse(GOOD, &[]).expect("valid");
        assert_eq!(c.ldap.page_size, 1000);
        assert_eq!(c.graph.graph_url, "https://graph.microsoft.com");
        assert_eq!(c.state.path, PathBuf::from("/etc/b2bsync/b2bsync.db"));
    }

    #[test]
    fn the_default_redirect_names_the_tenant_unless_one_is_set() {
        let c = parse(GOOD, &[]).expect("valid");
        assert_eq!(
            c.invitation.redirect_url.as_deref(),
            Some("https://myapps.microsoft.com/?tenantid=t")
        );
        let own = format!("{GOOD}\n[invitation]\nredirect_url = \"https://apps.example.com/\"\n");
        let c = parse(&own, &[]).expect("valid");
        assert_eq!(
            c.invitation.redirect_url.as_deref(),
            Some("https://apps.example.com/")
        );
        let odd = GOOD.replace("tenant = \"t\"", "tenant = \"t&x=1\"");
        let c = parse(&odd, &[]).expect("valid");
        assert_eq!(c.invitation.redirect_url, None, "not put in a URL as is");
    }

    #[test]
    fn unknown_keys_name_line_and_column() {
        let text = GOOD.replace("bind_dn =", "bind_dnn =");
        let err = parse(&text, &[]).expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/b2bsync/b2bsync.toml:4:1:"), "{msg}");
        assert!(msg.contains("bind_dnn"), "{msg}");
    }

    #[test]
    fn env_overrides_one_key() {
        let c = parse(
            GOOD,
            &[
                ("B2BSYNC__LDAP__URL", "ldaps://dc2:636"),
                ("B2BSYNC__LDAP__PAGE_SIZE", "500"),
                ("OTHER", "x"),
            ],
        )
        .expect("valid");
        assert_eq!(c.ldap.url, "ldaps://dc2:636");
        assert_eq!(c.ldap.page_size, 500);
    }

    #[test]
    fn a_bad_override_names_the_variable() {
        let err = parse(GOOD, &[("B2BSYNC__LDAP__PAGE_SIZE", "many")]).expect_err("bad");
        assert!(
            err.to_string().contains("B2BSYNC__LDAP__PAGE_SIZE"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_never_in_the_file() {
        let text = GOOD.replace("password_env = \"LDAP_PW\"\n", "");
        let err = parse(&text, &[]).expect_err("no password source");
        assert!(err.to_string().contains("password_env"), "{err}");
        let text = GOOD.replace("password_env = \"LDAP_PW\"", "password = \"hunter2\"");
        assert!(parse(&text, &[]).is_err());
    }

    // See: issue 10, finding 8 (`max_percent = nan` silently disabled the guard).
    #[test]
    fn non_finite_numbers_are_refused_with_their_position() {
        for bad in ["nan", "+nan", "-nan", "inf", "+inf", "-inf"] {
            let text = format!(
                "{GOOD}\n[limits]\nmin_count_for_percent = 20\ninvitations = {{ max_count = 5, max_percent = {bad} }}\n"
            );
            let line = text.lines().count();
            let column = "invitations = { max_count = 5, max_percent = ".len() + 1;
            let err = parse(&text, &[]).expect_err(bad);
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("/etc/b2bsync/b2bsync.toml:{line}:{column}:")),
                "{bad}: {msg}"
            );
            assert!(msg.contains("limits.invitations.max_percent"), "{msg}");
            assert!(msg.contains("not a finite number"), "{msg}");
        }
        let text = format!("{GOOD}\n[limits.address_writes]\nmax_percent = 12.5\n");
        let c = parse(&text, &[]).expect("a finite float loads");
        assert!((c.limits.address_writes.max_percent - 12.5).abs() < f64::EPSILON);

        let err = parse(
            GOOD,
            &[("B2BSYNC__LIMITS__INVITATIONS__MAX_PERCENT", "nan")],
        )
        .expect_err("nan override");
        assert!(
            err.to_string()
                .contains("B2BSYNC__LIMITS__INVITATIONS__MAX_PERCENT"),
            "{err}"
        );
        assert!(err.to_string().contains("not a finite number"), "{err}");
    }

    #[test]
    fn group_access_counts_only_for_files_this_account_owns() {
        for (owner, mode, me, loose) in [
            (1000, 0o600, Some(1000), None),
            (1000, 0o640, Some(1000), Some(false)),
            (1000, 0o604, Some(1000), Some(false)),
            (1000, 0o620, None, Some(false)),
            // A Kubernetes Secret: root's file, read through the pod's fsGroup.
            (0, 0o440, Some(1000), None),
            (0, 0o444, Some(1000), Some(true)),
        ] {
            assert_eq!(
                loose_mode(owner, mode, me),
                loose,
                "{owner} {mode:o} {me:?}"
            );
        }
        let foreign = LooseFile {
            what: "config",
            path: PathBuf::from("/run/secrets/pw"),
            mode: 0o444,
            foreign: true,
        };
        assert_eq!(foreign.help(), "chmod o-rwx /run/secrets/pw");
    }

    // See: issue 10, finding 8 (secret files readable by others got no warning).
    #[cfg(unix)]
    #[test]
    fn loose_modes_are_listed_and_a_world_writable_config_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let chmod = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        let secret = dir.path().join("bind.pw");
        std::fs::write(&secret, "pw\n").expect("secret");
        let config = dir.path().join("b2bsync.toml");
        std::fs::write(
            &config,
            GOOD.replace("password_env = \"LDAP_PW\"", "password_file = \"bind.pw\""),
        )
        .expect("config");

        chmod(&secret, 0o600);
        chmod(&config, 0o600);
        let c = Config::load(&config).expect("private files load");
        assert_eq!(c.loose_files(), vec![]);

        chmod(&secret, 0o640);
        chmod(&config, 0o644);
        let c = Config::load(&config).expect("readable files load, with warnings");
        let loose = c.loose_files();
        assert_eq!(loose.len(), 2, "{loose:?}");
        assert_eq!((loose[0].what, loose[0].mode), ("config", 0o644));
        assert!(!loose[0].foreign, "the test's own file");
        assert_eq!(
            (loose[1].what, loose[1].path.as_path(), loose[1].mode),
            ("[ldap] password_file", secret.as_path(), 0o640)
        );
        assert!(loose[1].to_string().contains("(mode 0640)"), "{}", loose[1]);
        assert_eq!(loose[1].help(), format!("chmod 600 {}", secret.display()));

        chmod(&config, 0o666);
        let err = Config::load(&config).expect_err("world-writable");
        assert!(
            matches!(err, Error::WorldWritable { mode: 0o666, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("mode 0666"), "{err}");
        assert!(
            err.help()
                .starts_with(&format!("chmod 600 {}", config.display())),
            "{}",
            err.help()
        );
    }

    #[test]
    fn several_domain_controllers_are_listed_in_order() {
        let text = GOOD.replace(
            "url = \"ldaps://127.0.0.1:636\"",
            "urls = [\"ldaps://dc1:636\", \"ldaps://dc2:636\"]",
        );
        let c = parse(&text, &[]).expect("valid");
        assert_eq!(c.ldap.all_urls(), ["ldaps://dc1:636", "ldaps://dc2:636"]);
        let c = parse(GOOD, &[]).expect("valid");
        assert_eq!(
            c.ldap.all_urls(),
            ["ldaps://127.0.0.1:636"],
            "url alone stays valid"
        );
    }

    #[test]
    fn url_and_urls_together_or_neither_are_refused_with_their_position() {
        let both = GOOD.replace("bind_dn =", "urls = [\"ldaps://dc1:636\"]\nbind_dn =");
        let err = parse(&both, &[]).expect_err("both");
        let msg = err.to_string();
        // Line 4 (`urls = ...`), column 8: where its value starts.
        assert!(msg.starts_with("/etc/b2bsync/b2bsync.toml:4:8:"), "{msg}");
        assert!(msg.contains("both url and urls"), "{msg}");
        assert!(err.help().contains("docs/operations.md"), "{}", err.help());
        let neither = GOOD.replace("url = \"ldaps://127.0.0.1:636\"\n", "");
        let msg = parse(&neither, &[]).expect_err("neither").to_string();
        assert!(msg.contains("needs url"), "{msg}");
        let empty = GOOD.replace("url = \"ldaps://127.0.0.1:636\"", "urls = []");
        let msg = parse(&empty, &[]).expect_err("empty list").to_string();
        assert!(msg.starts_with("/etc/b2bsync/b2bsync.toml:3:8:"), "{msg}");
        let blank = GOOD.replace(
            "url = \"ldaps://127.0.0.1:636\"",
            "urls = [\"ldaps://dc1:636\", \" \"]",
        );
        let msg = parse(&blank, &[]).expect_err("blank URL").to_string();
        assert!(msg.contains("empty URL"), "{msg}");
        // Made by an override: the file alone is named.
        let msg = parse(GOOD, &[("B2BSYNC__LDAP__URLS", "[\"ldaps://dc2:636\"]")])
            .expect_err("both by override")
            .to_string();
        assert!(msg.contains("both url and urls"), "{msg}");
    }

    #[test]
    fn page_size_is_bounded() {
        let text = GOOD.replace("password_env", "page_size = 5000\npassword_env");
        let err = parse(&text, &[]).expect_err("too big");
        assert!(err.to_string().contains("MaxPageSize"), "{err}");
    }
}
