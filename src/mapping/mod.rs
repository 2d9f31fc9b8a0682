//! Mapping files: which accounts are in scope, how they join to cloud users, which external
//! address each one gets, and how it is invited.
//!
//! A mapping is loaded from `mappings/*.toml` (see `docs/mapping.md`) and checked completely at
//! load: unknown keys, unknown attributes, unknown functions, bad LDAP filters, bad URLs and
//! bad CSV tables are all [`Error`]s that name the file, the line and the column, and end with a
//! `help:` line. A [`Mapping`] that loaded is valid by construction ("parse, don't validate").
//!
//! Several files may coexist, one per partner population. Each file is a separate scope; they
//! are never merged. An account in the scope of two files is not guessed at: it is reported as
//! blocked (`in_several_scopes`) for that account alone. [`eval`] applies a [`MappingSet`] to the
//! accounts the source read.

pub mod eval;
pub mod expr;
mod file;
pub mod filter;
pub mod table;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::Environment;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::Spanned;

pub use eval::{AccountFacts, AddressProblem, JoinKey, MappedAccount, Protection, map_accounts};
use table::Table;

/// Attributes every mapping gets from the source whether it declares them or not: the core of
/// the lifecycle (anchor, name, state flags, protection) needs them.
pub const CORE_ATTRIBUTES: &[&str] = crate::source::ACCOUNT_ATTRIBUTES;

/// Attributes that hold password material: a mapping may never read them.
const PASSWORD_ATTRIBUTES: &[&str] = &[
    "unicodePwd",
    "userPassword",
    "dBCSPwd",
    "lmPwdHistory",
    "ntPwdHistory",
    "supplementalCredentials",
    "msDS-ManagedPassword",
    "ms-Mcs-AdmPwd",
    "msLAPS-Password",
    "msLAPS-EncryptedPassword",
];

/// A load error: where (file, 1-based line and column; 0 when the error concerns the whole
/// file) and what, plus how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub kind: ErrorKind,
    pub help: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}\nhelp: {}", self.path, self.kind, self.help)
        } else {
            write!(
                f,
                "{}:{}:{}: {}\nhelp: {}",
                self.path, self.line, self.column, self.kind, self.help
            )
        }
    }
}

/// Something in a mapping that loads but probably does not do what was meant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadWarning {
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub help: String,
}

impl fmt::Display for LoadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}\nhelp: {}",
            self.path, self.line, self.column, self.message, self.help
        )
    }
}

/// What is wrong, typed so callers and tests can match on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot read: {0}")]
    Read(String),
    #[error("{0}")]
    Toml(String),
    #[error("no mapping files (*.toml) in `{0}`")]
    NoMappings(String),
    #[error("two mapping files are named `{0}`")]
    DuplicateName(String),
    #[error("`{name}` is not a valid LDAP attribute name")]
    BadAttributeName { name: String },
    #[error("`{name}` holds password material and may not be read")]
    PasswordAttribute { name: String },
    #[error("attribute `{name}` is declared twice")]
    DuplicateAttribute { name: String },
    #[error("unknown attribute `{name}` in `{key}`")]
    UnknownAttribute { name: String, key: String },
    #[error("unknown function `{name}` in `{key}`")]
    UnknownFunction { name: String, key: String },
    #[error("`lookup` in `{key}` names {}", .name.as_ref().map_or_else(|| "no table literal".to_string(), |n| format!("the unknown table `{n}`")))]
    UnknownTable { name: Option<String>, key: String },
    #[error("invalid expression in `{key}`: {message}")]
    Syntax { key: String, message: String },
    #[error("invalid LDAP filter in `scope.filter`: {0}")]
    Filter(String),
    #[error("`{value}` is not a distinguished name (in `{key}`)")]
    BadDn { key: String, value: String },
    #[error("`{value}` is not allowed in `{key}`")]
    BadValue { key: String, value: String },
    #[error("`{key}` must not be empty")]
    Empty { key: String },
    #[error("table `{table}`: {message}")]
    Table { table: String, message: String },
    /// A table's `file` is not a regular file inside the mapping file's directory.
    #[error("table `{table}`: {reason}")]
    TablePath { table: String, reason: String },
}

/// All the errors found in one load, so an admin sees every problem at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Errors(pub Vec<Error>);

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The invitation options. The config file's `[invitation]` section holds the defaults; a
/// mapping's `[invitation]` overrides them, and its `[[invitation.per_domain]]` entries override
/// those for partners of the listed email domains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvitationSettings {
    /// `inviteRedirectUrl`: where the user lands after redeeming (https).
    pub redirect_url: Option<String>,
    /// `sendInvitationMessage`: Microsoft sends the invitation email (default true).
    pub send_message: Option<bool>,
    /// `invitedUserMessageInfo.customizedMessageBody`.
    pub message_body: Option<String>,
    /// `invitedUserMessageInfo.messageLanguage` (ignored by Microsoft when a body is set).
    pub language: Option<String>,
    /// One `ccRecipients` address (Graph supports only one).
    pub cc: Option<String>,
    /// Set `userType` to this after acceptance (`Guest` for MAU billing); unset: leave it.
    pub user_type: Option<UserType>,
}

impl InvitationSettings {
    /// `self` with every unset option taken from `base`.
    pub fn or(&self, base: &InvitationSettings) -> InvitationSettings {
        InvitationSettings {
            redirect_url: self
                .redirect_url
                .clone()
                .or_else(|| base.redirect_url.clone()),
            send_message: self.send_message.or(base.send_message),
            message_body: self
                .message_body
                .clone()
                .or_else(|| base.message_body.clone()),
            language: self.language.clone().or_else(|| base.language.clone()),
            cc: self.cc.clone().or_else(|| base.cc.clone()),
            user_type: self.user_type.or(base.user_type),
        }
    }
}

/// `userType` of a cloud user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum UserType {
    Guest,
    Member,
}

impl UserType {
    /// The value Graph uses.
    pub fn as_str(self) -> &'static str {
        match self {
            UserType::Guest => "Guest",
            UserType::Member => "Member",
        }
    }
}

/// Invitation options for the partners of some email domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainOverride {
    /// Lower-case domains; a partner matches when its address is in one (or a subdomain).
    pub domains: Vec<String>,
    pub settings: InvitationSettings,
}

/// Which source attribute is the anchor Entra Connect put in `onPremisesImmutableId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AnchorAttribute {
    /// `objectGUID` (Entra Connect before 1.1.524, or configured so).
    ObjectGuid,
    /// `ms-DS-ConsistencyGuid`, falling back to `objectGUID` when unset (Entra Connect's
    /// default since 1.1.524: it fills the attribute from `objectGUID`).
    ConsistencyGuid,
    /// RFC 4530 `entryUUID` (OpenLDAP; 389-ds with its entryuuid plugin).
    EntryUuid,
    /// 389-ds `nsUniqueId`.
    NsUniqueId,
    /// FreeIPA `ipaUniqueID`.
    IpaUniqueId,
}

impl AnchorAttribute {
    /// The directory attribute by name, as [`crate::source::capabilities`] knows it.
    pub fn name(self) -> crate::source::capabilities::AnchorName {
        use crate::source::capabilities::AnchorName;
        match self {
            AnchorAttribute::ObjectGuid => AnchorName::ObjectGuid,
            AnchorAttribute::ConsistencyGuid => AnchorName::ConsistencyGuid,
            AnchorAttribute::EntryUuid => AnchorName::EntryUuid,
            AnchorAttribute::NsUniqueId => AnchorName::NsUniqueId,
            AnchorAttribute::IpaUniqueId => AnchorName::IpaUniqueId,
        }
    }

    /// A generic server's text anchor (read from the account's attributes), not AD's.
    pub fn text_attribute(self) -> Option<&'static str> {
        (!self.name().is_active_directory()).then(|| self.name().attribute())
    }
}

/// A cloud user property a cloud-only join compares against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CloudProperty {
    Id,
    UserPrincipalName,
    Mail,
    OtherMails,
    EmployeeId,
    OnPremisesSamAccountName,
    OnPremisesImmutableId,
}

impl CloudProperty {
    const ALL: &[(&str, CloudProperty)] = &[
        ("id", CloudProperty::Id),
        ("userPrincipalName", CloudProperty::UserPrincipalName),
        ("mail", CloudProperty::Mail),
        ("otherMails", CloudProperty::OtherMails),
        ("employeeId", CloudProperty::EmployeeId),
        (
            "onPremisesSamAccountName",
            CloudProperty::OnPremisesSamAccountName,
        ),
        (
            "onPremisesImmutableId",
            CloudProperty::OnPremisesImmutableId,
        ),
    ];

    /// The Graph property name.
    pub fn as_str(self) -> &'static str {
        CloudProperty::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("id", |(n, _)| n)
    }

    fn parse(name: &str) -> Option<CloudProperty> {
        CloudProperty::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, p)| *p)
    }
}

/// How accounts of this mapping join to cloud users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JoinRule {
    /// Synced users: the source anchor against `onPremisesImmutableId`.
    pub anchor: AnchorAttribute,
    /// Where `join.anchor` is written (`path:line:column`), for `check`'s messages; `None`
    /// when the file leaves it to the default.
    #[serde(skip)]
    pub anchor_at: Option<String>,
    /// Cloud-only users: an expression over the source attributes against a cloud property.
    pub cloud_only: Option<JoinPair>,
}

/// The cloud-only join pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JoinPair {
    /// Expression over the declared attributes, e.g. `userPrincipalName` or `lower(mail)`.
    pub source: String,
    pub cloud: CloudProperty,
}

/// Which cloud attributes get the external address of a cloud-only user. Synced users always
/// get it in AD `mail` (the only attribute Entra Connect flows to the cloud `mail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WriteTargets {
    pub cloud_only_other_mails: bool,
    pub cloud_only_mail: bool,
}

/// Which accounts are in this mapping's scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scope {
    /// Search bases; an account is in scope only under one of them.
    pub base_dns: Vec<String>,
    /// LDAP filter the source applies on the server (validated).
    pub filter: Option<String>,
    /// Boolean expression over the declared attributes; false: out of scope.
    pub when: Option<String>,
    /// Boolean expression over the declared attributes that decides whether an account is
    /// disabled, instead of the directory flavour's own mark (`userAccountControl`,
    /// `nsAccountLock`, `pwdAccountLockedTime`, `loginDisabled`).
    pub disabled: Option<String>,
    /// When not empty, only these account names or DNs are in scope.
    pub allow: Vec<String>,
    /// Account names or DNs that are in scope but never touched (blocked, reported).
    pub deny: Vec<String>,
    /// Group DNs whose members are never touched (blocked, reported).
    pub protected_groups: Vec<String>,
}

/// One search the source adapter must run for a mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Search {
    pub mapping: String,
    pub base_dn: String,
    pub filter: String,
    pub attributes: Vec<String>,
    /// The mapping's `scope.protected_groups` (the reader resolves their members where
    /// `memberOf` is not maintained).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub protected_groups: Vec<String>,
}

impl Search {
    /// What the directory adapter reads for this search.
    pub fn scope(&self) -> crate::source::SearchScope {
        crate::source::SearchScope {
            base_dns: vec![self.base_dn.clone()],
            filter: self.filter.clone(),
            attributes: self.attributes.clone(),
            protected_groups: self.protected_groups.clone(),
        }
    }
}

/// One checked mapping file.
pub struct Mapping {
    /// The file stem, unique in a set (`partners` for `mappings/partners.toml`).
    pub name: String,
    /// The path as given to the loader, used in messages.
    pub path: String,
    pub description: Option<String>,
    /// Declared source attributes, as spelt in the file.
    pub attributes: Vec<String>,
    /// Declared attributes that are exposed to expressions as lists.
    pub multi_valued: BTreeSet<String>,
    pub scope: Scope,
    pub join: JoinRule,
    /// The external-address expression.
    pub address: String,
    pub write: WriteTargets,
    pub invitation: InvitationSettings,
    pub per_domain: Vec<DomainOverride>,
    /// sha256 (hex) of the file and its tables, so a plan can tell its inputs changed.
    pub fingerprint: String,
    /// Things that load but deserve a look (`b2bsync check` prints them), with positions.
    pub warnings: Vec<LoadWarning>,
    tables: Arc<BTreeMap<String, Table>>,
    env: Environment<'static>,
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("scope", &self.scope)
            .field("join", &self.join)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Mapping {
    /// The invitation options for a partner address: per-domain override, then this mapping,
    /// then `defaults` (the config file's `[invitation]`).
    pub fn invitation_for(
        &self,
        address: &str,
        defaults: &InvitationSettings,
    ) -> InvitationSettings {
        let domain = address
            .rsplit_once('@')
            .map(|(_, d)| d.to_lowercase())
            .unwrap_or_default();
        let mine = self.invitation.or(defaults);
        self.per_domain
            .iter()
            .find(|o| {
                o.domains
                    .iter()
                    .any(|d| domain == *d || domain.ends_with(&format!(".{d}")))
            })
            .map_or(mine.clone(), |o| o.settings.or(&mine))
    }

    /// The name an expression uses for a declared attribute (`-` becomes `_`).
    pub fn variable_name(attribute: &str) -> String {
        attribute.replace('-', "_")
    }

    /// The lookup tables, by name.
    pub fn tables(&self) -> &BTreeMap<String, Table> {
        &self.tables
    }

    pub(crate) fn env(&self) -> &Environment<'static> {
        &self.env
    }

    /// Parses and checks one mapping file. `text` is its content; `path` is used in messages
    /// and to find CSV tables (relative to its directory).
    pub fn parse(path: &Path, text: &str) -> Result<Mapping, Errors> {
        Loader::new(path, text).load()
    }
}

/// Every mapping in effect, sorted by name.
#[derive(Debug, Default)]
pub struct MappingSet {
    mappings: Vec<Mapping>,
}

impl MappingSet {
    /// Loads every `*.toml` file of `dir` (not recursive), sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<MappingSet, Errors> {
        let read = std::fs::read_dir(dir).map_err(|e| {
            Errors(vec![Error {
                path: dir.display().to_string(),
                line: 0,
                column: 0,
                kind: ErrorKind::Read(e.to_string()),
                help: "create the directory or point `mappings` in the config at it".to_string(),
            }])
        })?;
        let mut paths: Vec<PathBuf> = read
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(Errors(vec![Error {
                path: dir.display().to_string(),
                line: 0,
                column: 0,
                kind: ErrorKind::NoMappings(dir.display().to_string()),
                help: "copy an annotated example from the `mappings/` folder of the distribution"
                    .to_string(),
            }]));
        }
        MappingSet::load_files(&paths)
    }

    /// Loads the given mapping files; all errors of all files are returned together.
    pub fn load_files(paths: &[PathBuf]) -> Result<MappingSet, Errors> {
        let mut errors = Vec::new();
        let mut mappings = Vec::new();
        for path in paths {
            match std::fs::read_to_string(path) {
                Err(e) => errors.push(Error {
                    path: path.display().to_string(),
                    line: 0,
                    column: 0,
                    kind: ErrorKind::Read(e.to_string()),
                    help: "check the path and the file's permissions".to_string(),
                }),
                Ok(text) => match Mapping::parse(path, &text) {
                    Ok(m) => mappings.push(m),
                    Err(Errors(mut e)) => errors.append(&mut e),
                },
            }
        }
        match MappingSet::from_mappings(mappings) {
            Ok(set) if errors.is_empty() => Ok(set),
            Ok(_) => Err(Errors(errors)),
            Err(Errors(mut e)) => {
                errors.append(&mut e);
                Err(Errors(errors))
            }
        }
    }

    /// A set of already parsed mappings; names must be unique.
    pub fn from_mappings(mut mappings: Vec<Mapping>) -> Result<MappingSet, Errors> {
        mappings.sort_by(|a, b| a.name.cmp(&b.name));
        let mut errors = Vec::new();
        for pair in mappings.windows(2) {
            if pair[0].name == pair[1].name {
                errors.push(Error {
                    path: pair[1].path.clone(),
                    line: 0,
                    column: 0,
                    kind: ErrorKind::DuplicateName(pair[1].name.clone()),
                    help: format!("rename one of `{}` and `{}`", pair[0].path, pair[1].path),
                });
            }
        }
        if errors.is_empty() {
            Ok(MappingSet { mappings })
        } else {
            Err(Errors(errors))
        }
    }

    /// The mappings, sorted by name.
    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    /// The mapping named `name`.
    pub fn get(&self, name: &str) -> Option<&Mapping> {
        self.mappings.iter().find(|m| m.name == name)
    }

    /// Every attribute the source must read: the core ones and every declared one, sorted
    /// case-insensitively without duplicates.
    pub fn attributes(&self) -> Vec<String> {
        let mut seen = BTreeMap::new();
        // A generic server's anchor named in `join.anchor` is read as text too.
        let anchors = self
            .mappings
            .iter()
            .filter_map(|m| m.join.anchor.text_attribute().map(str::to_string));
        for a in CORE_ATTRIBUTES
            .iter()
            .map(|a| a.to_string())
            .chain(
                self.mappings
                    .iter()
                    .flat_map(|m| m.attributes.iter().cloned()),
            )
            .chain(anchors)
        {
            seen.entry(a.to_lowercase()).or_insert(a);
        }
        seen.into_values().collect()
    }

    /// The searches the source adapter runs: one per mapping and base DN, with the mapping's
    /// filter (default `(objectClass=user)`) and [`MappingSet::attributes`].
    pub fn searches(&self) -> Vec<Search> {
        let attributes = self.attributes();
        let mut out = Vec::new();
        for m in &self.mappings {
            // A base DN written twice (in another case or spacing) is searched once: each
            // search keeps its own snapshot, named by the mapping and the base DN.
            let mut seen: Vec<crate::model::Dn> = Vec::new();
            for b in &m.scope.base_dns {
                let dn = crate::model::Dn::new(b);
                if seen.contains(&dn) {
                    continue;
                }
                seen.push(dn);
                out.push(Search {
                    mapping: m.name.clone(),
                    base_dn: b.clone(),
                    filter: m
                        .scope
                        .filter
                        .clone()
                        .unwrap_or_else(|| "(objectClass=user)".to_string()),
                    attributes: attributes.clone(),
                    protected_groups: m.scope.protected_groups.clone(),
                });
            }
        }
        out
    }

    /// sha256 (hex) over every mapping's fingerprint.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for m in &self.mappings {
            h.update(m.name.as_bytes());
            h.update([0]);
            h.update(m.fingerprint.as_bytes());
        }
        format!("{:x}", h.finalize())
    }
}

fn looks_like_dn(s: &str) -> bool {
    !s.trim().is_empty()
        && s.split(',').all(|rdn| {
            rdn.split_once('=')
                .is_some_and(|(t, v)| !t.trim().is_empty() && !v.trim().is_empty())
        })
}

/// Checks one file and builds a [`Mapping`], collecting every error.
struct Loader<'a> {
    path: &'a Path,
    shown: String,
    text: &'a str,
    errors: Vec<Error>,
    warnings: Vec<LoadWarning>,
}

impl<'a> Loader<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        Loader {
            path,
            shown: path.display().to_string(),
            text,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset of the file.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).unwrap_or_default().chars().count() + 1;
        (line, column)
    }

    fn error_at(&mut self, offset: usize, kind: ErrorKind, help: impl Into<String>) {
        let (line, column) = self.position(offset);
        self.errors.push(Error {
            path: self.shown.clone(),
            line,
            column,
            kind,
            help: help.into(),
        });
    }

    fn warn(&mut self, offset: usize, message: impl Into<String>, help: impl Into<String>) {
        let (line, column) = self.position(offset);
        self.warnings.push(LoadWarning {
            path: self.shown.clone(),
            line,
            column,
            message: message.into(),
            help: help.into(),
        });
    }

    fn error(&mut self, at: &Spanned<impl Sized>, kind: ErrorKind, help: impl Into<String>) {
        self.error_at(at.span().start, kind, help);
    }

    /// Byte offset in the file of byte `offset` inside the string value at `at`, when the
    /// literal is written without escapes; else the start of the literal.
    fn inner_offset(&self, at: &Spanned<String>, offset: usize) -> usize {
        let start = at.span().start;
        let raw = self.text.get(start..).unwrap_or_default();
        let quote = ["\"\"\"", "'''", "\"", "'"]
            .into_iter()
            .find(|q| raw.starts_with(q))
            .map_or(0, str::len);
        let value = at.get_ref();
        let prefix = value.get(..offset).unwrap_or_default();
        if raw.get(quote..).is_some_and(|r| r.starts_with(prefix)) {
            start + quote + offset
        } else {
            start
        }
    }

    fn load(mut self) -> Result<Mapping, Errors> {
        let raw: file::RawMapping = match toml::from_str(self.text) {
            Ok(r) => r,
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                let help = toml_help(e.message());
                self.error_at(
                    offset,
                    ErrorKind::Toml(e.message().trim().to_string()),
                    help,
                );
                return Err(Errors(self.errors));
            }
        };
        let name = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let base_dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();

        let (attributes, multi_valued) = self.source(&raw.source);
        let declared: BTreeSet<String> = attributes
            .iter()
            .map(|a| Mapping::variable_name(a))
            .collect();
        let (tables, fingerprint) = self.tables(&raw.tables, &base_dir);
        let table_names: BTreeSet<String> = raw.tables.keys().cloned().collect();
        let tables = Arc::new(tables);
        let env = expr::environment(Arc::clone(&tables));
        self.expression(&env, &raw.address, "address", &declared, &table_names);
        if let Some(w) = &raw.scope.when {
            self.expression(&env, w, "scope.when", &declared, &table_names);
        }
        if let Some(d) = &raw.scope.disabled {
            self.expression(&env, d, "scope.disabled", &declared, &table_names);
        }
        self.scope(&raw.scope);
        let join = self.join(&raw.join, &env, &declared, &table_names);
        let write = self.write(&raw.write);
        let (invitation, per_domain) = self.invitations(&raw.invitation, &raw.write);

        if !self.errors.is_empty() {
            return Err(Errors(self.errors));
        }
        let trim_all = |v: &[Spanned<String>]| -> Vec<String> {
            v.iter().map(|s| s.get_ref().trim().to_string()).collect()
        };
        Ok(Mapping {
            name,
            path: self.shown,
            description: raw.description,
            attributes,
            multi_valued,
            scope: Scope {
                base_dns: trim_all(raw.scope.base_dns.get_ref()),
                filter: raw.scope.filter.map(Spanned::into_inner),
                when: raw.scope.when.map(Spanned::into_inner),
                disabled: raw.scope.disabled.map(Spanned::into_inner),
                allow: trim_all(&raw.scope.allow),
                deny: trim_all(&raw.scope.deny),
                protected_groups: trim_all(&raw.scope.protected_groups),
            },
            join,
            address: raw.address.into_inner(),
            write,
            invitation,
            per_domain,
            fingerprint,
            warnings: self.warnings,
            tables,
            env,
        })
    }

    /// `[source]`: the attributes (valid, not password material, each once) and which of
    /// them are multi-valued.
    fn source(&mut self, source: &file::RawSource) -> (Vec<String>, BTreeSet<String>) {
        let mut attributes = Vec::new();
        let mut seen = BTreeSet::new();
        for a in &source.attributes {
            let n = a.get_ref();
            if !valid_attribute_name(n) {
                self.error(
                    a,
                    ErrorKind::BadAttributeName { name: n.clone() },
                    "LDAP attribute names start with a letter and hold letters, digits and `-`",
                );
            } else if PASSWORD_ATTRIBUTES
                .iter()
                .any(|p| p.eq_ignore_ascii_case(n))
            {
                self.error(
                    a,
                    ErrorKind::PasswordAttribute { name: n.clone() },
                    "remove it from `source.attributes`: b2bsync never reads or writes password material",
                );
            } else if !seen.insert(n.to_lowercase()) {
                self.error(
                    a,
                    ErrorKind::DuplicateAttribute { name: n.clone() },
                    "list each attribute once",
                );
            } else {
                attributes.push(n.clone());
            }
        }
        let mut multi_valued = BTreeSet::new();
        for a in &source.multi_valued {
            match attributes
                .iter()
                .find(|x| x.eq_ignore_ascii_case(a.get_ref()))
            {
                Some(x) => {
                    multi_valued.insert(x.clone());
                }
                None => self.error(
                    a,
                    ErrorKind::UnknownAttribute {
                        name: a.get_ref().clone(),
                        key: "source.multi_valued".to_string(),
                    },
                    "a multi-valued attribute must also be listed in `source.attributes`",
                ),
            }
        }
        (attributes, multi_valued)
    }

    /// `[tables.*]`: every table's CSV, read from inside the mapping's directory, and the
    /// mapping's fingerprint (sha256 over the file and its tables' text).
    fn tables(
        &mut self,
        raw: &BTreeMap<String, Spanned<file::RawTable>>,
        base_dir: &Path,
    ) -> (BTreeMap<String, Table>, String) {
        let mut tables = BTreeMap::new();
        let mut hasher = Sha256::new();
        hasher.update(self.text.as_bytes());
        for (tname, t) in raw {
            let file = t.get_ref().file.get_ref();
            let csv_path = base_dir.join(file);
            let csv_text = match table_file(base_dir, file) {
                Err(reason) => {
                    self.error(
                        &t.get_ref().file,
                        ErrorKind::TablePath {
                            table: tname.clone(),
                            reason,
                        },
                        "put the CSV file in the mapping file's directory (or a folder under it) and write its path relative to that directory, without `..`",
                    );
                    continue;
                }
                Ok(inside) => std::fs::read_to_string(&inside),
            };
            match csv_text {
                Err(e) => self.error(
                    &t.get_ref().file,
                    ErrorKind::Table {
                        table: tname.clone(),
                        message: format!("cannot read `{}`: {e}", csv_path.display()),
                    },
                    "save the table as UTF-8 CSV, readable by the account b2bsync runs as",
                ),
                Ok(csv_text) => {
                    hasher.update(tname.as_bytes());
                    hasher.update(csv_text.as_bytes());
                    match Table::parse(&csv_text, &t.get_ref().key, &t.get_ref().value) {
                        Ok(table) => {
                            tables.insert(tname.clone(), table);
                        }
                        Err(e) => self.errors.push(Error {
                            path: csv_path.display().to_string(),
                            line: usize::try_from(e.line).unwrap_or(0),
                            column: usize::try_from(e.column).unwrap_or(1),
                            kind: ErrorKind::Table {
                                table: tname.clone(),
                                message: e.message,
                            },
                            help: e.help,
                        }),
                    }
                }
            }
        }
        (tables, format!("{:x}", hasher.finalize()))
    }

    /// `[scope]`: base DNs, protected groups and the LDAP filter.
    fn scope(&mut self, scope: &file::RawScope) {
        if scope.base_dns.get_ref().is_empty() {
            self.error(
                &scope.base_dns,
                ErrorKind::Empty {
                    key: "scope.base_dns".to_string(),
                },
                "name at least one OU, e.g. `OU=Partners,DC=example,DC=com`",
            );
        }
        for b in scope.base_dns.get_ref() {
            self.dn(b, "scope.base_dns");
        }
        for g in &scope.protected_groups {
            self.dn(g, "scope.protected_groups");
        }
        if let Some(f) = &scope.filter
            && let Err(e) = filter::validate(f.get_ref())
        {
            let (message, offset) = match e {
                filter::FilterError::TooLong { length } => (
                    format!("{length} bytes, more than {}", filter::MAX_LENGTH),
                    0,
                ),
                filter::FilterError::TooDeep { depth, offset } => (
                    format!(
                        "nested {depth} levels deep, more than {}",
                        filter::MAX_DEPTH
                    ),
                    offset,
                ),
                filter::FilterError::Unbalanced { offset } => {
                    ("unbalanced parentheses".to_string(), offset)
                }
                filter::FilterError::Invalid => ("not an RFC 4515 filter".to_string(), 0),
            };
            let at = self.inner_offset(f, offset);
            self.error_at(
                at,
                ErrorKind::Filter(message),
                "write it as ldapsearch takes it, e.g. `(&(objectClass=user)(company=Fabrikam))`; escape `(`, `)`, `*` and `\\` in values as `\\28`, `\\29`, `\\2a`, `\\5c`",
            );
        }
    }

    /// `[join]`: the anchor attribute and the cloud-only pair.
    fn join(
        &mut self,
        join: &file::RawJoin,
        env: &Environment<'static>,
        declared: &BTreeSet<String>,
        table_names: &BTreeSet<String>,
    ) -> JoinRule {
        let anchor = match join.anchor.as_ref() {
            None => AnchorAttribute::ConsistencyGuid,
            Some(a) => match a.get_ref().to_lowercase().as_str() {
                "objectguid" => AnchorAttribute::ObjectGuid,
                "ms-ds-consistencyguid" => AnchorAttribute::ConsistencyGuid,
                "entryuuid" => AnchorAttribute::EntryUuid,
                "nsuniqueid" => AnchorAttribute::NsUniqueId,
                "ipauniqueid" => AnchorAttribute::IpaUniqueId,
                _ => {
                    self.error(
                        a,
                        ErrorKind::BadValue {
                            key: "join.anchor".to_string(),
                            value: a.get_ref().clone(),
                        },
                        "use the attribute your Entra Connect uses as source anchor: `objectGUID` or `ms-DS-ConsistencyGuid` (Active Directory), `entryUUID` (OpenLDAP), `nsUniqueId` (389 Directory Server) or `ipaUniqueID` (FreeIPA)",
                    );
                    AnchorAttribute::ConsistencyGuid
                }
            },
        };
        let anchor_at = join.anchor.as_ref().map(|a| {
            let (line, column) = self.position(a.span().start);
            format!("{}:{line}:{column}", self.shown)
        });
        let cloud_only = join.cloud_only.as_ref().map(|p| {
            self.expression(
                env,
                &p.source,
                "join.cloud_only.source",
                declared,
                table_names,
            );
            let cloud = CloudProperty::parse(p.cloud.get_ref()).unwrap_or_else(|| {
                let names: Vec<&str> = CloudProperty::ALL.iter().map(|(n, _)| *n).collect();
                self.error(
                    &p.cloud,
                    ErrorKind::BadValue {
                        key: "join.cloud_only.cloud".to_string(),
                        value: p.cloud.get_ref().clone(),
                    },
                    format!("use one of {}", names.join(", ")),
                );
                CloudProperty::UserPrincipalName
            });
            JoinPair {
                source: p.source.get_ref().clone(),
                cloud,
            }
        });
        JoinRule {
            anchor,
            anchor_at,
            cloud_only,
        }
    }

    /// `[write]`: where the address of each kind of user goes.
    fn write(&mut self, raw: &file::RawWrite) -> WriteTargets {
        if let Some(synced) = &raw.synced {
            for s in synced {
                if s.get_ref() != "mail" {
                    self.error(
                        s,
                        ErrorKind::BadValue {
                            key: "write.synced".to_string(),
                            value: s.get_ref().clone(),
                        },
                        "synced users get the address in AD `mail` only: Entra Connect flows it to the cloud `mail`, which the invitation uses",
                    );
                }
            }
        }
        let mut write = WriteTargets {
            cloud_only_other_mails: true,
            cloud_only_mail: false,
        };
        if let Some(targets) = &raw.cloud_only {
            write.cloud_only_other_mails = false;
            for t in targets {
                match t.get_ref().as_str() {
                    "otherMails" => write.cloud_only_other_mails = true,
                    "mail" => write.cloud_only_mail = true,
                    other => self.error(
                        t,
                        ErrorKind::BadValue {
                            key: "write.cloud_only".to_string(),
                            value: other.to_string(),
                        },
                        "use `otherMails`, `mail`, or both",
                    ),
                }
            }
            if targets.is_empty() {
                self.error_at(
                    0,
                    ErrorKind::Empty {
                        key: "write.cloud_only".to_string(),
                    },
                    "write the address to `otherMails`, `mail`, or both",
                );
            }
        }
        write
    }

    /// `[invitation]` and its `[[invitation.per_domain]]` overrides.
    fn invitations(
        &mut self,
        invitation: &file::RawInvitation,
        write: &file::RawWrite,
    ) -> (InvitationSettings, Vec<DomainOverride>) {
        let settings = self.invitation(&invitation.options(), "invitation");
        self.invitation_warnings(&invitation.options(), write);
        let mut per_domain = Vec::new();
        for o in &invitation.per_domain {
            let settings = self.invitation(&o.options(), "invitation.per_domain");
            if o.domains.get_ref().is_empty() {
                self.error(
                    &o.domains,
                    ErrorKind::Empty {
                        key: "invitation.per_domain.domains".to_string(),
                    },
                    "list the partner email domains this override is for",
                );
            }
            let mut domains = Vec::new();
            for d in o.domains.get_ref() {
                let v = d.get_ref().trim().trim_start_matches('@').to_lowercase();
                if v.is_empty() || !v.contains('.') || v.contains('@') {
                    self.error(
                        d,
                        ErrorKind::BadValue {
                            key: "invitation.per_domain.domains".to_string(),
                            value: d.get_ref().clone(),
                        },
                        "write a domain such as `fabrikam.example`",
                    );
                }
                domains.push(v);
            }
            per_domain.push(DomainOverride { domains, settings });
        }
        (settings, per_domain)
    }

    fn dn(&mut self, value: &Spanned<String>, key: &str) {
        if !looks_like_dn(value.get_ref()) {
            self.error(
                value,
                ErrorKind::BadDn {
                    key: key.to_string(),
                    value: value.get_ref().clone(),
                },
                "write the full DN, e.g. `OU=Partners,DC=example,DC=com`",
            );
        }
    }

    fn expression(
        &mut self,
        env: &Environment<'static>,
        source: &Spanned<String>,
        key: &str,
        declared: &BTreeSet<String>,
        tables: &BTreeSet<String>,
    ) {
        let Err(problem) = expr::check(env, source.get_ref(), declared, tables) else {
            return;
        };
        let key = key.to_string();
        let (offset, kind, help) = match problem {
            expr::Problem::Syntax { message, offset } => (
                offset,
                ErrorKind::Syntax { key, message },
                "expressions use Jinja syntax: `lower(trim(otherMailbox))`, `a ~ '@' ~ b`, `x if cond else y`".to_string(),
            ),
            expr::Problem::UnknownAttribute {
                name,
                offset,
                suggestion,
            } => (
                offset,
                ErrorKind::UnknownAttribute { name: name.clone(), key },
                match suggestion {
                    Some(s) => format!("did you mean `{s}`? Every attribute an expression uses must be listed in `source.attributes`"),
                    None => format!("add `{name}` to `source.attributes` (attributes with `-` are written with `_` in expressions)"),
                },
            ),
            expr::Problem::UnknownFunction {
                name,
                offset,
                suggestion,
            } => (
                offset,
                ErrorKind::UnknownFunction { name, key },
                match suggestion {
                    Some(s) => format!("did you mean `{s}`? See docs/mapping.md for the functions"),
                    None => format!("the functions are: {}", expr::FUNCTIONS.join(", ")),
                },
            ),
            expr::Problem::UnknownTable { name, offset } => (
                offset,
                ErrorKind::UnknownTable { name, key },
                if tables.is_empty() {
                    "define the table in a `[tables.NAME]` section with `file = \"NAME.csv\"`".to_string()
                } else {
                    format!(
                        "write the table name in quotes as the first argument; tables: {}",
                        tables.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                },
            ),
        };
        let at = self.inner_offset(source, offset);
        self.error_at(at, kind, help);
    }

    /// The seeds' rules that a mapping can break without being invalid.
    fn invitation_warnings(&mut self, raw: &file::RawInvitationOptions, write: &file::RawWrite) {
        if let (Some(lang), Some(_)) = (&raw.language, &raw.message_body) {
            self.warn(
                lang.span().start,
                "`invitation.language` is ignored by Microsoft when `message_body` is set",
                "write the body in the partner's language, or use `[[invitation.per_domain]]`",
            );
        }
        if let Some(url) = &raw.redirect_url
            && !url.get_ref().to_lowercase().contains("tenantid=")
        {
            self.warn(
                url.span().start,
                "`invitation.redirect_url` has no tenant id",
                "converted users find your tenant in Teams only through a URL with tenant context, e.g. `https://myapps.microsoft.com/?tenantid=<your tenant id>`",
            );
        }
        if raw.send_message == Some(false) {
            self.warn(
                0,
                "`invitation.send_message = false`: Microsoft sends no invitation email",
                "deliver each partner's redeem URL yourself (apply records it); the conversion completes only when the partner redeems",
            );
        }
        if let Some(targets) = &write.cloud_only
            && !targets.iter().any(|t| t.get_ref() == "mail")
            && let Some(first) = targets.first()
        {
            self.warn(
                first.span().start,
                "cloud-only users get the address in `otherMails` only",
                "Microsoft's current guidance invites with the address in User.Mail: add \"mail\" to `write.cloud_only`",
            );
        }
    }

    fn invitation(&mut self, raw: &file::RawInvitationOptions, key: &str) -> InvitationSettings {
        if let Some(url) = &raw.redirect_url {
            let ok = url::Url::parse(url.get_ref())
                .is_ok_and(|u| u.scheme() == "https" && u.host().is_some());
            if !ok {
                self.error(
                    url,
                    ErrorKind::BadValue {
                        key: format!("{key}.redirect_url"),
                        value: url.get_ref().clone(),
                    },
                    "use an absolute https URL, e.g. `https://myapps.microsoft.com/?tenantid=<your tenant id>` (the tenant id lets Teams find your tenant)",
                );
            }
        }
        if let Some(cc) = &raw.cc
            && let Err(problem) = crate::model::Email::parse(cc.get_ref())
        {
            self.error(
                cc,
                ErrorKind::BadValue {
                    key: format!("{key}.cc"),
                    value: cc.get_ref().clone(),
                },
                format!("{problem}; Graph accepts one cc recipient"),
            );
        }
        if let Some(lang) = &raw.language {
            let l = lang.get_ref();
            let ok = !l.is_empty()
                && l.len() <= 16
                && l.split('-')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()));
            if !ok {
                self.error(
                    lang,
                    ErrorKind::BadValue {
                        key: format!("{key}.language"),
                        value: l.clone(),
                    },
                    "use a language tag such as `en-US` or `fr-FR`",
                );
            }
        }
        let user_type = raw
            .user_type
            .as_ref()
            .and_then(|t| match t.get_ref().as_str() {
                "Guest" => Some(UserType::Guest),
                "Member" => Some(UserType::Member),
                other => {
                    self.error(
                    t,
                    ErrorKind::BadValue {
                        key: format!("{key}.user_type"),
                        value: other.to_string(),
                    },
                    "use `Guest` (MAU billing) or `Member`, or leave it out to keep the user type",
                );
                    None
                }
            });
        InvitationSettings {
            redirect_url: raw.redirect_url.as_ref().map(|u| u.get_ref().clone()),
            send_message: raw.send_message,
            message_body: raw.message_body.clone(),
            language: raw.language.as_ref().map(|l| l.get_ref().clone()),
            cc: raw.cc.as_ref().map(|c| c.get_ref().clone()),
            user_type,
        }
    }
}

/// The canonical path of a table's CSV file, when it is a regular file inside `base_dir` (the
/// mapping file's directory): the path is relative, has no `..`, and resolving symbolic links
/// keeps it under the canonical `base_dir`. Else why not, without reading the file.
fn table_file(base_dir: &Path, file: &str) -> Result<PathBuf, String> {
    use std::path::Component;
    let relative = Path::new(file);
    if file.trim().is_empty() {
        return Err("`file` is empty".to_string());
    }
    if relative
        .components()
        .any(|c| matches!(c, Component::RootDir | Component::Prefix(_)))
    {
        return Err(format!("`{file}` is an absolute path"));
    }
    if relative.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "`{file}` leaves the mapping directory through `..`"
        ));
    }
    let dir = if base_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base_dir
    };
    let canonical_dir = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve the mapping directory: {e}"))?;
    let canonical = dir
        .join(relative)
        .canonicalize()
        .map_err(|e| format!("cannot read `{}`: {e}", dir.join(relative).display()))?;
    if !canonical.starts_with(&canonical_dir) {
        return Err(format!(
            "`{file}` is a symbolic link (or under one) that leads outside the mapping directory"
        ));
    }
    if !canonical.is_file() {
        return Err(format!("`{file}` is not a regular file"));
    }
    Ok(canonical)
}

fn valid_attribute_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
        && name.len() <= 128
}

fn toml_help(message: &str) -> String {
    if message.contains("unknown field") {
        "remove the key or fix its spelling; docs/mapping.md lists every key".to_string()
    } else if message.contains("missing field") {
        "add the key; docs/mapping.md shows a complete example".to_string()
    } else {
        "check the TOML syntax at this position (strings in quotes, lists in [ ])".to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
