//! The on-premises directory: reads partner accounts over LDAP (Active Directory or any LDAP
//! server) and makes the two writes b2bsync ever makes there: `mail` and the password.
//!
//! The rest of the crate sees only [`Directory`], [`Error`] and the settings types; the ldap3
//! details stay in [`ldap`]. Every connection is encrypted (LDAPS or StartTLS, verified against
//! a CA) unless the configuration explicitly allows a cleartext bind, and password operations
//! refuse to run without TLS whatever the configuration says.

pub mod capabilities;
pub mod connect;
pub mod deleted;
pub mod exchange;
pub mod gssapi;
pub mod ldap;
pub mod password;
pub mod rights;

use std::future::Future;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::model::{Anchor, SourceAccount};

pub use ldap::LdapDirectory;

/// Attributes every account read asks for, whatever the mapping says: the anchor, the
/// names, the state flags, protection and password-change time that the lifecycle needs.
/// Servers ignore the ones their schema lacks.
pub const ACCOUNT_ATTRIBUTES: &[&str] = &[
    "objectGUID",
    "mS-DS-ConsistencyGuid",
    "entryUUID",
    "nsUniqueId",
    "ipaUniqueID",
    "sAMAccountName",
    "uid",
    "userPrincipalName",
    "displayName",
    "mail",
    "userAccountControl",
    "adminCount",
    "memberOf",
    "pwdLastSet",
    "pwdChangedTime",
    "nsAccountLock",
    "pwdAccountLockedTime",
    "loginDisabled",
];

/// What kind of server is on the other end; decides how passwords are reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Flavour {
    /// Read the rootDSE and decide (AD advertises its capability OIDs).
    #[default]
    Auto,
    /// Active Directory or Samba AD: `unicodePwd` replace, `objectGUID`, `userAccountControl`.
    ActiveDirectory,
    /// Any other LDAP server: RFC 3062 password modify, `entryUUID`.
    Generic,
}

/// How to reach and bind to the directory. Holds the bind password in a [`SecretString`],
/// which never prints.
#[derive(Debug, Clone)]
pub struct LdapSettings {
    /// `ldaps://host:636` or `ldap://host:389` (then `starttls` should be true).
    pub url: String,
    /// Further domain controllers of the same domain, tried in order when `url` does not
    /// answer, and after a connection broke in the middle of a run (see `source::connect`).
    pub failover_urls: Vec<String>,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    pub starttls: bool,
    /// PEM file of the CA that issued the server's certificate. `None` uses the OS store.
    pub ca_file: Option<PathBuf>,
    /// Bind DN or UPN (`svc@example.com`, `DOMAIN\svc`).
    pub bind_dn: String,
    pub password: SecretString,
    /// Permit a simple bind over an unencrypted connection. Off unless explicitly set.
    pub allow_cleartext: bool,
    pub flavour: Flavour,
    /// Paged-results page size; AD's MaxPageSize is 1,000.
    pub page_size: i32,
    /// Connect and operation timeout.
    pub timeout: Duration,
    /// How far before a read's start a generic server's next incremental read reaches back:
    /// a write that took its `entryCSN` before the read began but committed after it was
    /// not seen, and is read next time if it took less than this and the clocks of b2bsync
    /// and the server differ by less.
    pub change_overlap: Duration,
    /// Bind with Kerberos (SASL GSSAPI) instead of `bind_dn` and `password`, which are then
    /// unused. A Kerberos-sealed `ldap://` connection may read, but is not [`Self::encrypted`]:
    /// password operations still need TLS.
    pub kerberos: Option<gssapi::Kerberos>,
}

impl LdapSettings {
    /// Whether the connection will be encrypted.
    pub fn encrypted(&self) -> bool {
        self.url.to_ascii_lowercase().starts_with("ldaps://") || self.starttls
    }
}

/// Where and what to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchScope {
    /// Base DNs searched (subtree) one after the other.
    pub base_dns: Vec<String>,
    /// An RFC 4515 filter, already validated by the mapping.
    pub filter: String,
    /// Text attributes to read besides the ones every account needs.
    pub attributes: Vec<String>,
    /// Groups whose members are never touched. On a server that does not maintain
    /// `memberOf` for certain, the reader adds these groups to their members' `member_of`
    /// by reading each group's `member` values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected_groups: Vec<String>,
}

/// Where a directory's changes stood when a read began, so that the next read can ask only
/// for what changed since. Holds no secret; stored in the state store's watermarks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The database the mark belongs to. Active Directory: the DC's `invocationId` (base64);
    /// a mark from another DC, or from a restored database, means nothing here. Generic LDAP:
    /// the `entryUUID` of the base entry.
    pub server: String,
    /// Active Directory: the DC's `highestCommittedUSN` before the read (the next read asks
    /// for `uSNChanged` above it). Generic LDAP: the `entryCSN` from which the next read asks.
    pub mark: String,
}

/// An account that changed since a position and no longer matches the scope's filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departed {
    pub dn: String,
    /// Its anchor (`objectGUID` or `entryUUID`), when the server returned one.
    pub anchor: Option<Anchor>,
}

/// One read of a scope: all of it, or only what changed since a position.
#[derive(Debug)]
pub enum Read {
    /// Every account in scope.
    Full {
        accounts: Vec<SourceAccount>,
        /// Where to read changes from next time; `None` when the directory cannot tell.
        position: Option<Position>,
        /// Why a read asked to be incremental was full (the position belongs to another
        /// database), for the log.
        fell_back: Option<String>,
    },
    /// Only the accounts that changed since the position.
    Changes {
        /// Changed (created, modified, renamed or moved) and matching the filter now.
        changed: Vec<SourceAccount>,
        /// Changed and no longer matching the filter.
        departed: Vec<Departed>,
        position: Position,
    },
}

/// A failure reaching or using the directory. Each variant knows how an admin fixes it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid LDAP URL `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot read the CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("refusing a simple bind over an unencrypted connection to {url}")]
    CleartextBind { url: String },
    #[error("refusing to {operation} over an unencrypted connection to {url}")]
    PasswordWithoutTls {
        url: String,
        operation: &'static str,
    },
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot use the keytab {path}: {reason}")]
    Keytab { path: PathBuf, reason: String },
    #[error("Kerberos bind to {url} failed: {reason}")]
    Kerberos { url: String, reason: String },
    #[error("bind as `{bind_dn}` to {url} failed: {message} (LDAP result {rc})")]
    Bind {
        url: String,
        bind_dn: String,
        rc: u32,
        message: String,
    },
    #[error("search of `{base}` failed: {message} (LDAP result {rc})")]
    Search {
        base: String,
        rc: u32,
        message: String,
    },
    #[error("{operation} on `{dn}` failed: {message} (LDAP result {rc})")]
    Write {
        operation: &'static str,
        dn: String,
        rc: u32,
        message: String,
    },
    #[error("the directory rejected the new password for `{dn}` as too weak: {message}")]
    PasswordPolicy { dn: String, message: String },
    #[error("reading `{attribute}` of `{dn}` in ranges failed: {reason}")]
    Range {
        dn: String,
        attribute: String,
        reason: String,
    },
    #[error("`{dn}` is not a password this directory flavour can reset: {reason}")]
    Unsupported { dn: String, reason: String },
    /// Whoever took the pages of a read ([`Directory::read_pages`]) stopped it: that one
    /// holds the reason.
    #[error(
        "the read of `{base}` was stopped after {accounts} accounts: the pages could not be kept"
    )]
    Stopped { base: String, accounts: usize },
}

impl Error {
    /// One line telling the admin what to do about it.
    pub fn help(&self) -> String {
        match self {
            Error::Url { .. } => "use ldaps://host:636, or ldap://host:389 with starttls = true".into(),
            Error::CaFile { .. } => {
                "point [ldap] ca_file at the PEM certificate of the CA that issued the directory's certificate".into()
            }
            Error::CleartextBind { .. } => {
                "use ldaps:// or set starttls = true; only a lab may set allow_cleartext = true".into()
            }
            Error::PasswordWithoutTls { .. } => {
                "password operations always need LDAPS or StartTLS (a Kerberos-sealed ldap:// connection is not enough); change [ldap] url or starttls".into()
            }
            Error::Connect { .. } => {
                "check the host, the port, the firewall, and that the certificate matches the host name and is issued by [ldap] ca_file".into()
            }
            Error::Keytab { .. } => {
                "export a keytab for the service account (samba-tool domain exportkeytab, or ktpass on Windows), make it readable by b2bsync only (chmod 600), and point [ldap] keytab at it".into()
            }
            Error::Kerberos { .. } => {
                "check the keytab or the credential cache (klist -k / klist), the realm and KDC in krb5.conf (KRB5_CONFIG), the clocks, and that the directory has the service principal ldap/<host> (set [ldap] spn_host when the URL does not name the DC by its host name)".into()
            }
            Error::Bind { rc: 49, .. } => {
                "the bind DN or password is wrong (AD: use the UPN, DOMAIN\\name or the full DN)".into()
            }
            Error::Bind { rc: 8 | 13, .. } => {
                "the server requires an encrypted connection: use ldaps:// or starttls = true".into()
            }
            Error::Bind { .. } => "check the service account and the server's logs".into(),
            Error::Search { rc: 4, .. } => {
                "the server capped a search: keep page_size at or below the server's MaxPageSize".into()
            }
            Error::Search { rc: 32, .. } => "a base DN in the mapping does not exist".into(),
            Error::Search { .. } => "check the base DNs and filter in the mapping".into(),
            Error::Write { rc: 50, .. } => {
                "the service account lacks the right: delegate `Write mail` and `Reset password` on the partners' OU".into()
            }
            Error::Write { .. } => "check the account and the server's logs".into(),
            Error::PasswordPolicy { .. } => {
                "the domain policy asks for more than b2bsync generates; raise [apply] password_length".into()
            }
            Error::Range { .. } => {
                "the server (or a proxy in front of it) answered a ranged read with ranges that do not move forward; check the server's logs and `ldapsearch` the attribute with `;range=0-*`".into()
            }
            Error::Unsupported { .. } => "set [ldap] flavour to match the server".into(),
            Error::Stopped { .. } => {
                "see the error logged with it (the state store: its disk, or the temp store's)".into()
            }
        }
    }

    /// Whether a write may have been made though it failed: the connection broke (or no
    /// answer came in time) after the request may have been sent. Apply reads such a write
    /// back, from the next domain controller when several are configured, before recording
    /// it; it is never sent again blindly.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Error::Write { rc: 80, .. })
    }

    /// The LDAP result code, when the server answered with one.
    pub fn rc(&self) -> Option<u32> {
        match self {
            Error::Bind { rc, .. } | Error::Search { rc, .. } | Error::Write { rc, .. } => {
                Some(*rc)
            }
            _ => None,
        }
    }
}

/// When a directory says an account's password last changed, from the raw
/// [`SourceAccount::password_changed`] text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordChanged {
    /// AD `pwdLastSet` of 0: never set, or "must change at next logon" set by an admin.
    Never,
    /// The moment of the last change.
    At(jiff::Timestamp),
}

/// Seconds between 1601-01-01 (the FILETIME epoch) and 1970-01-01.
const FILETIME_UNIX_OFFSET_SECS: i64 = 11_644_473_600;

impl PasswordChanged {
    /// Reads AD's `pwdLastSet` (a FILETIME: 100-ns intervals since 1601, as decimal text)
    /// or `pwdChangedTime` (RFC 4517 generalized time, as OpenLDAP's ppolicy writes it).
    /// `None` for anything else: the caller cannot tell when the password changed.
    pub fn parse(raw: &str) -> Option<PasswordChanged> {
        let raw = raw.trim();
        if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
            let ticks: i64 = raw.parse().ok()?;
            if ticks == 0 {
                return Some(PasswordChanged::Never);
            }
            let secs = (ticks / 10_000_000).checked_sub(FILETIME_UNIX_OFFSET_SECS)?;
            let nanos = i32::try_from((ticks % 10_000_000).checked_mul(100)?).ok()?;
            return jiff::Timestamp::new(secs, nanos)
                .ok()
                .map(PasswordChanged::At);
        }
        generalized_time(raw).map(PasswordChanged::At)
    }
}

/// RFC 4517 generalized time in UTC: `YYYYMMDDHHMMSS[.fraction]Z` (or with a `+HHMM` /
/// `-HHMM` offset). Minutes and seconds may not be left out here: directories write both.
fn generalized_time(raw: &str) -> Option<jiff::Timestamp> {
    let digits = raw.get(..14)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |range: std::ops::Range<usize>| digits.get(range)?.parse::<i16>().ok();
    let rest = raw.get(14..)?;
    let (fraction, zone) = match rest.strip_prefix(['.', ',']) {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            (r.get(..end)?, r.get(end..)?)
        }
        None => ("", rest),
    };
    let nanos: i32 = if fraction.is_empty() {
        0
    } else {
        // Up to nanoseconds; further digits are below what any directory stores.
        let padded: String = fraction
            .chars()
            .chain(std::iter::repeat('0'))
            .take(9)
            .collect();
        padded.parse().ok()?
    };
    let offset_secs: i32 = match zone {
        "Z" => 0,
        z if z.len() == 5 => {
            let sign = match z.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let h: i32 = z.get(1..3)?.parse().ok()?;
            let m: i32 = z.get(3..5)?.parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let civil = jiff::civil::DateTime::new(
        num(0..4)?,
        i8::try_from(num(4..6)?).ok()?,
        i8::try_from(num(6..8)?).ok()?,
        i8::try_from(num(8..10)?).ok()?,
        i8::try_from(num(10..12)?).ok()?,
        i8::try_from(num(12..14)?).ok()?,
        nanos,
    )
    .ok()?;
    let offset = jiff::tz::Offset::from_seconds(offset_secs).ok()?;
    civil
        .to_zoned(jiff::tz::TimeZone::fixed(offset))
        .ok()
        .map(|z| z.timestamp())
}

/// Where a full read hands its accounts as they arrive ([`Directory::read_pages`]).
pub trait Pages: Send {
    /// The next accounts read, complete (ranged attributes and protected groups resolved).
    /// `Break` stops the read there ([`Error::Stopped`]): whoever broke holds the reason.
    fn page(&mut self, accounts: Vec<SourceAccount>) -> ControlFlow<()>;

    /// The read starts again from the beginning (on another domain controller): forget
    /// every page handed over so far.
    fn restart(&mut self);
}

/// Collects every page: a read held whole.
impl Pages for Vec<SourceAccount> {
    fn page(&mut self, accounts: Vec<SourceAccount>) -> ControlFlow<()> {
        self.extend(accounts);
        ControlFlow::Continue(())
    }

    fn restart(&mut self) {
        self.clear();
    }
}

/// The on-premises boundary: everything b2bsync reads from or writes to the directory.
pub trait Directory {
    /// Every account in scope, read with paged searches.
    fn accounts(
        &self,
        scope: &SearchScope,
    ) -> impl Future<Output = Result<Vec<SourceAccount>, Error>> + Send;

    /// A full read, or with `since` only what changed since then (Active Directory by
    /// `uSNChanged` on the same DC, generic LDAP by `entryCSN`). Directories that keep no
    /// change marks read in full.
    fn read(
        &self,
        scope: &SearchScope,
        since: Option<&Position>,
    ) -> impl Future<Output = Result<Read, Error>> + Send
    where
        Self: Sync,
    {
        let _ = since;
        async move {
            Ok(Read::Full {
                accounts: self.accounts(scope).await?,
                position: None,
                fell_back: None,
            })
        }
    }

    /// [`Directory::read`], with the accounts of a full read handed to `pages` as they come
    /// (a page at a time, so that a large directory is never held whole) instead of in
    /// [`Read::Full`], whose `accounts` is then empty. A read of the changes is returned
    /// whole, as by `read`. The default reads whole and hands over one page.
    fn read_pages(
        &self,
        scope: &SearchScope,
        since: Option<&Position>,
        pages: &mut dyn Pages,
    ) -> impl Future<Output = Result<Read, Error>> + Send
    where
        Self: Sync,
    {
        async move {
            let mut read = self.read(scope, since).await?;
            if let Read::Full { accounts, .. } = &mut read {
                let n = accounts.len();
                if pages.page(std::mem::take(accounts)).is_break() {
                    return Err(Error::Stopped {
                        base: scope.base_dns.join("; "),
                        accounts: n,
                    });
                }
            }
            Ok(read)
        }
    }

    /// The account at `dn` read again now, when it still exists and matches the scope's
    /// filter. Incremental runs read the accounts they are about to write again, since some
    /// changes (group membership) move no change mark on the account itself.
    fn account(
        &self,
        scope: &SearchScope,
        dn: &str,
    ) -> impl Future<Output = Result<Option<SourceAccount>, Error>> + Send
    where
        Self: Sync,
    {
        async move {
            Ok(self
                .accounts(scope)
                .await?
                .into_iter()
                .find(|a| a.dn.eq_ignore_ascii_case(dn)))
        }
    }

    /// The accounts in scope whose anchor is one of `anchors`, read again now, in pages
    /// (one search for many accounts). An anchor missing from the answer is gone from scope.
    fn accounts_by_anchor(
        &self,
        scope: &SearchScope,
        anchors: &[Anchor],
    ) -> impl Future<Output = Result<Vec<SourceAccount>, Error>> + Send
    where
        Self: Sync,
    {
        async move {
            Ok(self
                .accounts(scope)
                .await?
                .into_iter()
                .filter(|a| a.anchor().is_some_and(|x| anchors.contains(x)))
                .collect())
        }
    }

    /// The entry at `dn` read now with a base search, whatever the scope's filter says:
    /// what settling an interrupted write needs (its `mail`, when its password last
    /// changed). `None` when no entry is there. The default knows no entry, so a directory
    /// that cannot read one has its interrupted writes released and planned again, never
    /// guessed done.
    fn entry(&self, dn: &str) -> impl Future<Output = Result<Option<SourceAccount>, Error>> + Send
    where
        Self: Sync,
    {
        let _ = dn;
        async { Ok(None) }
    }

    /// Replaces (or with `None` clears) the account's `mail`.
    fn set_mail(
        &self,
        dn: &str,
        mail: Option<&str>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Sets the account's password to `password` (an admin reset, no old password).
    fn set_password(
        &self,
        dn: &str,
        password: &SecretString,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_change_times_are_read_from_both_flavours() {
        let at = |t: &str| {
            Some(PasswordChanged::At(
                t.parse().unwrap_or_else(|e| panic!("{t}: {e}")),
            ))
        };
        let cases = [
            // AD `pwdLastSet`: a FILETIME; 0 is "never" or "must change at next logon".
            ("0", Some(PasswordChanged::Never)),
            ("116444736000000000", at("1970-01-01T00:00:00Z")),
            ("133000000000000000", at("2022-06-18T04:26:40Z")),
            // 100-ns precision is kept (Samba may write whole seconds; AD does not).
            ("134090000001234567", at("2025-11-30T18:13:20.1234567Z")),
            // Too large for a timestamp: cannot tell.
            ("9223372036854775807", None),
            ("99999999999999999999", None),
            // OpenLDAP `pwdChangedTime`: generalized time.
            ("20261201195300Z", at("2026-12-01T19:53:00Z")),
            ("20261201195300.123456Z", at("2026-12-01T19:53:00.123456Z")),
            ("20261201215300+0200", at("2026-12-01T19:53:00Z")),
            ("", None),
            ("abc", None),
            ("2026120119530Z", None),
            ("20261301000000Z", None),
            ("20261201195300.Z1", None),
            ("20261201195300+02", None),
            ("2026-12-01T19:53:00Z", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(PasswordChanged::parse(raw), expected, "{raw:?}");
        }
    }
}
