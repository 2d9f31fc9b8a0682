//! The ldap3 adapter behind [`Directory`]: TLS set-up, bind, flavour detection, paged
//! searches with AD range retrieval, incremental reads (AD `uSNChanged` on the same DC,
//! generic LDAP `entryCSN`), and the `mail` and password writes.

#![warn(clippy::arithmetic_side_effects)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::exop::PasswordModify;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Mod, Scope, SearchEntry};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use super::{Departed, Directory, Error, Flavour, LdapSettings, Position, Read, SearchScope};
use crate::model::{Anchor, SourceAccount};

/// `LDAP_CAP_ACTIVE_DIRECTORY_OID`: advertised in the rootDSE by AD and Samba AD.
const AD_CAPABILITY: &str = "1.2.840.113556.1.4.800";
/// RFC 3062 password modify extended operation.
const PASSWORD_MODIFY_OID: &str = "1.3.6.1.4.1.4203.1.11.1";

/// A directory reached over LDAP. Keeps one bound connection and reconnects when it breaks.
pub struct LdapDirectory {
    settings: LdapSettings,
    connection: Mutex<Option<(Ldap, Flavour)>>,
}

impl LdapDirectory {
    /// Checks the settings (URL, cleartext policy, CA file) without connecting.
    pub fn new(settings: LdapSettings) -> Result<Self, Error> {
        let lower = settings.url.to_ascii_lowercase();
        if !(lower.starts_with("ldaps://") || lower.starts_with("ldap://")) {
            return Err(Error::Url {
                url: settings.url.clone(),
                reason: "the scheme must be ldaps:// or ldap://".into(),
            });
        }
        if lower.starts_with("ldaps://") && settings.starttls {
            return Err(Error::Url {
                url: settings.url.clone(),
                reason: "StartTLS is for ldap:// URLs; ldaps:// is already encrypted".into(),
            });
        }
        if !settings.encrypted() && !settings.allow_cleartext {
            return Err(Error::CleartextBind {
                url: settings.url.clone(),
            });
        }
        if let Some(path) = &settings.ca_file {
            load_roots(path)?;
        }
        Ok(LdapDirectory {
            settings,
            connection: Mutex::new(None),
        })
    }

    /// The settings this directory was made with.
    pub fn settings(&self) -> &LdapSettings {
        &self.settings
    }

    /// Opens a new connection and binds with the configured account. Used by `check` and by
    /// tests that need a connection of their own.
    pub async fn connect(&self) -> Result<Ldap, Error> {
        connect_and_bind(
            &self.settings,
            &self.settings.bind_dn,
            self.settings.password.expose_secret(),
        )
        .await
    }

    /// Tries a simple bind as another account over the same transport; says whether it
    /// succeeded. This is how the demo and the tests prove an old password no longer works.
    pub async fn try_bind(&self, bind_dn: &str, password: &SecretString) -> Result<bool, Error> {
        match connect_and_bind(&self.settings, bind_dn, password.expose_secret()).await {
            Ok(mut ldap) => {
                let _ = ldap.unbind().await;
                Ok(true)
            }
            Err(Error::Bind { rc: 49, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The directory flavour: configured, or read from the rootDSE.
    pub async fn flavour(&self) -> Result<Flavour, Error> {
        Ok(self.handle().await?.1)
    }

    /// A bound connection, opened on first use and after a broken one.
    async fn handle(&self) -> Result<(Ldap, Flavour), Error> {
        let mut guard = self.connection.lock().await;
        if let Some((ldap, flavour)) = guard.as_mut()
            && !ldap.is_closed()
        {
            return Ok((ldap.clone(), *flavour));
        }
        let mut ldap = self.connect().await?;
        let flavour = match self.settings.flavour {
            Flavour::Auto => detect_flavour(&mut ldap).await?,
            other => other,
        };
        *guard = Some((ldap.clone(), flavour));
        Ok((ldap, flavour))
    }

    /// Forgets a connection that failed at the transport level.
    async fn forget_if_broken(&self, err: &LdapError) {
        if matches!(
            err,
            LdapError::Io { .. } | LdapError::OpSend { .. } | LdapError::ResultRecv { .. }
        ) {
            *self.connection.lock().await = None;
        }
    }

    /// One paged subtree search of `base` with `filter`, each entry mapped to an account and
    /// its ranged attributes completed. Tracks the highest `entryCSN` seen in `max_csn`.
    #[allow(clippy::too_many_arguments)]
    async fn search_base(
        &self,
        ldap: &mut Ldap,
        flavour: Flavour,
        base: &str,
        filter: &str,
        wanted: &[String],
        attributes: &[String],
        out: &mut Vec<SourceAccount>,
        max_csn: &mut Option<String>,
    ) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let found_before = out.len();
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(self.settings.page_size)),
        ];
        let search_err = |e: LdapError| search_error(base, e);
        let mut stream = ldap
            .streaming_search_with(adapters, base, Scope::Subtree, filter, attributes)
            .await
            .map_err(search_err)?;
        let mut ranged = Vec::new();
        while let Some(entry) = stream.next().await.map_err(search_err)? {
            let entry = SearchEntry::construct(entry);
            if let Some(csn) = entry
                .attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("entryCSN"))
                .and_then(|(_, v)| v.iter().max())
                && max_csn.as_ref().is_none_or(|m| csn > m)
            {
                *max_csn = Some(csn.clone());
            }
            let (account, pending) = to_account(entry, flavour, wanted);
            if !pending.is_empty() {
                ranged.push((out.len(), pending));
            }
            out.push(account);
        }
        let done = stream.finish().await;
        done.success().map_err(search_err)?;
        let entries = out.len().saturating_sub(found_before);
        // Servers fill every page but the last, so this is the number of pages read.
        let pages = entries
            .div_ceil(usize::try_from(self.settings.page_size).unwrap_or(1).max(1))
            .max(1);
        tracing::debug!(
            base,
            filter,
            scope = "subtree",
            pages,
            entries,
            ranged = ranged.len(),
            duration_ms = started.elapsed().as_millis(),
            "LDAP search done."
        );
        for (index, pending) in ranged {
            if let Some(account) = out.get_mut(index) {
                fetch_ranges(ldap, account, pending, wanted).await?;
            }
        }
        Ok(())
    }

    /// Every attribute a read of `scope` asks for.
    fn attributes(flavour: Flavour, scope: &SearchScope) -> Vec<String> {
        let mut attributes: Vec<String> = super::ACCOUNT_ATTRIBUTES
            .iter()
            .map(|a| a.to_string())
            .collect();
        if flavour == Flavour::Generic {
            // Operational: returned only when asked for. Marks the next incremental read.
            attributes.push("entryCSN".into());
        }
        for a in &scope.attributes {
            if !attributes.iter().any(|b| b.eq_ignore_ascii_case(a)) {
                attributes.push(a.clone());
            }
        }
        attributes
    }

    /// Where this server's changes stand now: AD's `invocationId` and `highestCommittedUSN`
    /// (read before the search, so that what changes during it is read again next time);
    /// a generic server's identity (the base entry's `entryUUID`) with an empty mark.
    async fn position_now(
        &self,
        ldap: &mut Ldap,
        flavour: Flavour,
        scope: &SearchScope,
    ) -> Result<Option<Position>, Error> {
        if flavour == Flavour::Generic {
            let Some(base) = scope.base_dns.first() else {
                return Ok(None);
            };
            let entry = base_entry(ldap, base, &["entryUUID"]).await?;
            return Ok(entry
                .and_then(|e| first_text(&e, "entryUUID"))
                .map(|uuid| Position {
                    server: uuid,
                    mark: String::new(),
                }));
        }
        let Some(root) = base_entry(ldap, "", &["highestCommittedUSN", "dsServiceName"]).await?
        else {
            return Ok(None);
        };
        let (Some(usn), Some(service)) = (
            first_text(&root, "highestCommittedUSN"),
            first_text(&root, "dsServiceName"),
        ) else {
            return Ok(None);
        };
        let Some(settings) = base_entry(ldap, &service, &["invocationId"]).await? else {
            return Ok(None);
        };
        let invocation = settings
            .bin_attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("invocationId"))
            .and_then(|(_, v)| v.first())
            .map(|b| Anchor::from_bytes(b).to_string());
        Ok(invocation.map(|server| Position { server, mark: usn }))
    }

    async fn read_with(
        &self,
        ldap: &mut Ldap,
        flavour: Flavour,
        scope: &SearchScope,
        since: Option<&Position>,
    ) -> Result<Read, Error> {
        let started = jiff::Timestamp::now();
        let attributes = Self::attributes(flavour, scope);
        let before = self.position_now(ldap, flavour, scope).await?;
        // The filter that selects what changed since the mark, when the mark can be used:
        // from this database, and well formed (a USN for AD, a CSN otherwise).
        let marker = match (since, &before) {
            (Some(since), Some(now)) if since.server == now.server => match flavour {
                Flavour::Generic if !since.mark.is_empty() => {
                    Some(format!("(entryCSN>={})", escape_value(&since.mark)))
                }
                Flavour::Generic => None,
                _ => since
                    .mark
                    .parse::<u64>()
                    .ok()
                    .map(|usn| format!("(uSNChanged>={})", usn.saturating_add(1))),
            },
            _ => None,
        };
        let filter = parenthesized(&scope.filter);
        let mut max_csn: Option<String> = None;
        let (Some(since), Some(before), Some(marker)) = (since, before.clone(), marker) else {
            let mut accounts = Vec::new();
            for base in &scope.base_dns {
                self.search_base(
                    ldap,
                    flavour,
                    base,
                    &filter,
                    &scope.attributes,
                    &attributes,
                    &mut accounts,
                    &mut max_csn,
                )
                .await?;
            }
            // The vector grew by doubling: give the unused tail back (a large allocation is
            // remapped in place, not copied).
            accounts.shrink_to_fit();
            let fell_back = since.map(|s| match &before {
                None => "the directory no longer tells where its changes stand".to_string(),
                Some(now) if now.server != s.server => format!(
                    "the last read's mark belongs to another database ({} then, {} now): another DC, a restore or a rebuilt directory",
                    s.server, now.server
                ),
                Some(_) => format!("the last read's mark `{}` cannot be read from", s.mark),
            });
            let overlap = self.settings.change_overlap;
            let position =
                before.map(|p| next_position(flavour, p, None, max_csn, started, overlap));
            return Ok(Read::Full {
                accounts,
                position,
                fell_back,
            });
        };
        let mut changed = Vec::new();
        let mut gone = Vec::new();
        let departed_attributes: Vec<String> = [
            "objectGUID",
            "mS-DS-ConsistencyGuid",
            "entryUUID",
            "entryCSN",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        for base in &scope.base_dns {
            self.search_base(
                ldap,
                flavour,
                base,
                &format!("(&{filter}{marker})"),
                &scope.attributes,
                &attributes,
                &mut changed,
                &mut max_csn,
            )
            .await?;
            self.search_base(
                ldap,
                flavour,
                base,
                &format!("(&{marker}(!{filter}))"),
                &[],
                &departed_attributes,
                &mut gone,
                &mut max_csn,
            )
            .await?;
        }
        let departed = gone
            .into_iter()
            .map(|a| Departed {
                anchor: a.anchor().cloned(),
                dn: a.dn,
            })
            .collect();
        Ok(Read::Changes {
            changed,
            departed,
            position: next_position(
                flavour,
                before,
                Some(since),
                max_csn,
                started,
                self.settings.change_overlap,
            ),
        })
    }
}

/// The position the next read starts from. AD: the USN read before this one. Generic: the
/// highest `entryCSN` seen (this read's or the last one's), but never later than this
/// read's start less `overlap`, so that writes still in flight are read again.
fn next_position(
    flavour: Flavour,
    before: Position,
    since: Option<&Position>,
    max_csn: Option<String>,
    started: jiff::Timestamp,
    overlap: std::time::Duration,
) -> Position {
    if flavour != Flavour::Generic {
        return before;
    }
    let overlap = jiff::SignedDuration::try_from(overlap).unwrap_or(jiff::SignedDuration::MAX);
    let ceiling = csn_at(started.checked_sub(overlap).unwrap_or(jiff::Timestamp::MIN));
    let seen = [since.map(|s| s.mark.clone()), max_csn]
        .into_iter()
        .flatten()
        .filter(|m| !m.is_empty())
        .max();
    let mark = match seen {
        Some(seen) if seen < ceiling => seen,
        _ => ceiling,
    };
    Position {
        server: before.server,
        mark,
    }
}

/// Anchors asked for in one search when accounts are read again by anchor.
const ANCHORS_PER_SEARCH: usize = 100;

/// The filter matching an account by its anchor: AD's `objectGUID` or
/// `mS-DS-ConsistencyGuid` (binary, escaped byte by byte), a generic server's `entryUUID`.
fn anchor_filter(flavour: Flavour, anchor: &Anchor) -> String {
    let bytes = anchor.bytes();
    if flavour == Flavour::Generic {
        return match uuid::Uuid::from_slice(&bytes) {
            Ok(u) => format!("(entryUUID={u})"),
            // Not a UUID: matches nothing, so the account reads as gone from scope.
            Err(_) => "(entryUUID=00000000-0000-0000-0000-000000000000)".to_string(),
        };
    }
    let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
    format!("(objectGUID={escaped})(mS-DS-ConsistencyGuid={escaped})")
}

/// An OpenLDAP change sequence number for a moment (`YYYYmmddHHMMSS.ffffffZ#count#sid#mod`);
/// CSNs compare as text in time order.
fn csn_at(t: jiff::Timestamp) -> String {
    let utc = t.to_zoned(jiff::tz::TimeZone::UTC);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}.{:06}Z#000000#000#000000",
        utc.year(),
        utc.month(),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.subsec_nanosecond() / 1_000
    )
}

/// A filter in parentheses, as RFC 4515 wants it inside `(&...)`.
fn parenthesized(filter: &str) -> String {
    let f = filter.trim();
    if f.starts_with('(') {
        f.to_string()
    } else {
        format!("({f})")
    }
}

/// Escapes a value for an RFC 4515 filter.
fn escape_value(value: &str) -> String {
    ldap3::ldap_escape(value).into_owned()
}

/// The first text value of an attribute, by case-insensitive name.
fn first_text(entry: &SearchEntry, name: &str) -> Option<String> {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first().cloned())
}

/// A base-scope read of one entry; `None` when it does not exist.
async fn base_entry(
    ldap: &mut Ldap,
    dn: &str,
    attributes: &[&str],
) -> Result<Option<SearchEntry>, Error> {
    let started = std::time::Instant::now();
    let result = ldap
        .search(dn, Scope::Base, "(objectClass=*)", attributes.to_vec())
        .await
        .and_then(|r| r.success());
    tracing::debug!(
        base = dn,
        filter = "(objectClass=*)",
        scope = "base",
        pages = 1,
        entries = result.as_ref().map_or(0, |(e, _)| e.len()),
        duration_ms = started.elapsed().as_millis(),
        "LDAP search done."
    );
    match result {
        Ok((entries, _)) => Ok(entries.into_iter().next().map(SearchEntry::construct)),
        Err(LdapError::LdapResult { result }) if result.rc == 32 => Ok(None),
        Err(e) => Err(search_error(if dn.is_empty() { "rootDSE" } else { dn }, e)),
    }
}

impl Directory for LdapDirectory {
    async fn accounts(&self, scope: &SearchScope) -> Result<Vec<SourceAccount>, Error> {
        match self.read(scope, None).await? {
            Read::Full { accounts, .. } => Ok(accounts),
            Read::Changes { changed, .. } => Ok(changed),
        }
    }

    async fn read(&self, scope: &SearchScope, since: Option<&Position>) -> Result<Read, Error> {
        let (mut ldap, flavour) = self.handle().await?;
        let result = self.read_with(&mut ldap, flavour, scope, since).await;
        if result.is_err() {
            *self.connection.lock().await = None;
        }
        result
    }

    async fn account(&self, scope: &SearchScope, dn: &str) -> Result<Option<SourceAccount>, Error> {
        let (mut ldap, flavour) = self.handle().await?;
        let attributes = Self::attributes(flavour, scope);
        let filter = parenthesized(&scope.filter);
        let started = std::time::Instant::now();
        let result = ldap
            .search(dn, Scope::Base, &filter, attributes)
            .await
            .and_then(|r| r.success());
        tracing::debug!(
            base = dn,
            filter,
            scope = "base",
            pages = 1,
            entries = result.as_ref().map_or(0, |(e, _)| e.len()),
            duration_ms = started.elapsed().as_millis(),
            "LDAP search done."
        );
        let entry = match result {
            Ok((entries, _)) => entries.into_iter().next().map(SearchEntry::construct),
            Err(LdapError::LdapResult { result }) if result.rc == 32 => None,
            Err(e) => {
                self.forget_if_broken(&e).await;
                return Err(search_error(dn, e));
            }
        };
        let Some(entry) = entry else {
            return Ok(None);
        };
        let (mut account, pending) = to_account(entry, flavour, &scope.attributes);
        if !pending.is_empty() {
            fetch_ranges(&mut ldap, &mut account, pending, &scope.attributes).await?;
        }
        Ok(Some(account))
    }

    async fn accounts_by_anchor(
        &self,
        scope: &SearchScope,
        anchors: &[Anchor],
    ) -> Result<Vec<SourceAccount>, Error> {
        let (mut ldap, flavour) = self.handle().await?;
        let attributes = Self::attributes(flavour, scope);
        let filter = parenthesized(&scope.filter);
        let mut out = Vec::new();
        let mut max_csn = None;
        for chunk in anchors.chunks(ANCHORS_PER_SEARCH) {
            let any: String = chunk.iter().map(|a| anchor_filter(flavour, a)).collect();
            for base in &scope.base_dns {
                let result = self
                    .search_base(
                        &mut ldap,
                        flavour,
                        base,
                        &format!("(&{filter}(|{any}))"),
                        &scope.attributes,
                        &attributes,
                        &mut out,
                        &mut max_csn,
                    )
                    .await;
                if let Err(e) = result {
                    *self.connection.lock().await = None;
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    async fn entry(&self, dn: &str) -> Result<Option<SourceAccount>, Error> {
        let (mut ldap, flavour) = self.handle().await?;
        match base_entry(&mut ldap, dn, super::ACCOUNT_ATTRIBUTES).await {
            // Nothing ranged is asked for: what settling needs is single-valued.
            Ok(entry) => Ok(entry.map(|e| to_account(e, flavour, &[]).0)),
            Err(e) => {
                *self.connection.lock().await = None;
                Err(e)
            }
        }
    }

    async fn set_mail(&self, dn: &str, mail: Option<&str>) -> Result<(), Error> {
        let (mut ldap, _) = self.handle().await?;
        let values: HashSet<&str> = mail.into_iter().collect();
        let change = vec![Mod::Replace("mail", values)];
        let started = std::time::Instant::now();
        let result = ldap.modify(dn, change).await.and_then(|r| r.success());
        tracing::debug!(
            dn,
            attribute = "mail",
            operation = if mail.is_some() { "replace" } else { "clear" },
            ok = result.is_ok(),
            duration_ms = started.elapsed().as_millis(),
            "LDAP write done."
        );
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                self.forget_if_broken(&e).await;
                Err(write_error("modify mail", dn, e))
            }
        }
    }

    async fn set_password(&self, dn: &str, password: &SecretString) -> Result<(), Error> {
        if !self.settings.encrypted() {
            return Err(Error::PasswordWithoutTls {
                url: self.settings.url.clone(),
                operation: "reset a password",
            });
        }
        let (mut ldap, flavour) = self.handle().await?;
        let started = std::time::Instant::now();
        let result = match flavour {
            Flavour::ActiveDirectory | Flavour::Auto => {
                // AD wants the password in double quotes, UTF-16LE, as a binary replace.
                let quoted = Zeroizing::new(format!("\"{}\"", password.expose_secret()));
                let value: Zeroizing<Vec<u8>> = Zeroizing::new(
                    quoted
                        .encode_utf16()
                        .flat_map(|u| u.to_le_bytes())
                        .collect(),
                );
                let change = vec![Mod::Replace(
                    b"unicodePwd".to_vec(),
                    HashSet::from([value.to_vec()]),
                )];
                ldap.modify(dn, change).await.and_then(|r| r.success())
            }
            Flavour::Generic => {
                let exop = PasswordModify {
                    user_id: Some(dn),
                    old_pass: None,
                    new_pass: Some(password.expose_secret()),
                };
                ldap.extended(exop)
                    .await
                    .and_then(|r| r.success())
                    .map(|(_, result)| result)
            }
        };
        // Never the value: only where, which attribute and whether it worked.
        tracing::debug!(
            dn,
            attribute = if flavour == Flavour::Generic {
                "userPassword"
            } else {
                "unicodePwd"
            },
            operation = if flavour == Flavour::Generic {
                "password modify"
            } else {
                "replace"
            },
            ok = result.is_ok(),
            duration_ms = started.elapsed().as_millis(),
            "LDAP write done."
        );
        match result {
            Ok(_) => Ok(()),
            Err(LdapError::LdapResult { result })
                if result.rc == 2 && flavour == Flavour::Generic =>
            {
                Err(Error::Unsupported {
                    dn: dn.to_string(),
                    reason: format!(
                        "the server does not offer the password modify operation ({PASSWORD_MODIFY_OID}): {}",
                        result.text
                    ),
                })
            }
            Err(LdapError::LdapResult { result }) if result.rc == 19 => {
                Err(Error::PasswordPolicy {
                    dn: dn.to_string(),
                    message: result.text,
                })
            }
            Err(e) => {
                self.forget_if_broken(&e).await;
                Err(write_error("password reset", dn, e))
            }
        }
    }
}

/// Reads the rootDSE and picks the flavour.
async fn detect_flavour(ldap: &mut Ldap) -> Result<Flavour, Error> {
    let root = base_entry(ldap, "", &["supportedCapabilities", "supportedExtension"]).await?;
    let Some(root) = root else {
        return Ok(Flavour::Generic);
    };
    let has = |attr: &str, oid: &str| {
        root.attrs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(attr))
            .any(|(_, v)| v.iter().any(|x| x == oid))
    };
    // A generic server without RFC 3062 still reads fine; its password resets fail with
    // `Error::Unsupported` when tried.
    if has("supportedCapabilities", AD_CAPABILITY) {
        Ok(Flavour::ActiveDirectory)
    } else {
        Ok(Flavour::Generic)
    }
}

/// Loads a PEM CA file into a root store.
fn load_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, Error> {
    let ca_err = |reason: String| Error::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| ca_err(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| ca_err(e.to_string()))?;
        roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ca_err("no certificate found in the file".into()));
    }
    Ok(roots)
}

/// Connects (LDAPS or StartTLS, or cleartext only when allowed) and simple-binds.
async fn connect_and_bind(
    settings: &LdapSettings,
    bind_dn: &str,
    password: &str,
) -> Result<Ldap, Error> {
    if !settings.encrypted() && !settings.allow_cleartext {
        return Err(Error::CleartextBind {
            url: settings.url.clone(),
        });
    }
    let mut conn_settings = LdapConnSettings::new()
        .set_conn_timeout(settings.timeout)
        .set_starttls(settings.starttls);
    if let Some(path) = &settings.ca_file {
        let roots = load_roots(path)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Connect {
                url: settings.url.clone(),
                reason: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        conn_settings = conn_settings.set_config(Arc::new(config));
    }
    let connect_err = |e: LdapError| Error::Connect {
        url: settings.url.clone(),
        reason: e.to_string(),
    };
    let (conn, mut ldap) = tokio::time::timeout(
        settings.timeout,
        LdapConnAsync::with_settings(conn_settings, &settings.url),
    )
    .await
    .map_err(|_| Error::Connect {
        url: settings.url.clone(),
        reason: format!("no answer within {:?}", settings.timeout),
    })?
    .map_err(connect_err)?;
    ldap3::drive!(conn);
    ldap.with_timeout(settings.timeout);
    match ldap.simple_bind(bind_dn, password).await {
        Ok(result) if result.rc == 0 => Ok(ldap),
        Ok(result) => Err(Error::Bind {
            url: settings.url.clone(),
            bind_dn: bind_dn.to_string(),
            rc: result.rc,
            message: result.text,
        }),
        Err(e) => Err(connect_err(e)),
    }
}

fn search_error(base: &str, e: LdapError) -> Error {
    match e {
        LdapError::LdapResult { result } => Error::Search {
            base: base.to_string(),
            rc: result.rc,
            message: result.text,
        },
        other => Error::Search {
            base: base.to_string(),
            rc: 80,
            message: other.to_string(),
        },
    }
}

fn write_error(operation: &'static str, dn: &str, e: LdapError) -> Error {
    match e {
        LdapError::LdapResult { result } => Error::Write {
            operation,
            dn: dn.to_string(),
            rc: result.rc,
            message: result.text,
        },
        other => Error::Write {
            operation,
            dn: dn.to_string(),
            rc: 80,
            message: other.to_string(),
        },
    }
}

/// A ranged attribute still to fetch: its base name and what its first part said.
type PendingRange = (String, Ranged);

/// Maps one entry to an account at the boundary. Returns the ranged attributes that need
/// more reads (AD sends at most 1,500 values per attribute per read).
fn to_account(
    entry: SearchEntry,
    flavour: Flavour,
    wanted: &[String],
) -> (SourceAccount, Vec<PendingRange>) {
    let SearchEntry {
        dn,
        attrs,
        bin_attrs,
    } = entry;
    let mut text: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut pending = Vec::new();
    for (name, values) in attrs {
        let (base, next) = split_range(&name);
        if matches!(next, Ranged::Next(_) | Ranged::Unusable(_)) {
            pending.push((base.to_string(), next));
        }
        text.entry(base.to_string()).or_default().extend(values);
    }
    let binary = |name: &str| -> Option<Vec<u8>> {
        bin_attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.first().cloned())
            .or_else(|| {
                // A binary value that happens to be valid UTF-8 lands among the text values.
                text.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .and_then(|(_, v)| v.first())
                    .map(|s| s.clone().into_bytes())
            })
    };
    let first = |name: &str| -> Option<String> {
        text.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.first().cloned())
    };
    let all = |name: &str| -> Vec<String> {
        text.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let object_guid = match flavour {
        Flavour::Generic => first("entryUUID")
            .and_then(|u| uuid::Uuid::parse_str(&u).ok())
            .map(|u| Anchor::from_bytes(u.as_bytes())),
        _ => binary("objectGUID")
            .filter(|b| b.len() == 16)
            .map(|b| Anchor::from_bytes(&b)),
    };
    let consistency_guid = binary("mS-DS-ConsistencyGuid")
        .filter(|b| b.len() == 16)
        .map(|b| Anchor::from_bytes(&b));
    let mut attributes = BTreeMap::new();
    for name in wanted {
        let values = all(name);
        if !values.is_empty() {
            attributes.insert(name.clone(), values);
        }
    }
    let account = SourceAccount {
        object_guid,
        consistency_guid,
        account_name: first("sAMAccountName").or_else(|| first("uid")),
        user_principal_name: first("userPrincipalName"),
        display_name: first("displayName"),
        mail: first("mail"),
        user_account_control: first("userAccountControl").and_then(|v| v.parse().ok()),
        admin_count: first("adminCount").is_some_and(|v| v.trim() != "0"),
        member_of: all("memberOf"),
        password_changed: first("pwdLastSet").or_else(|| first("pwdChangedTime")),
        attributes: attributes.into(),
        dn,
    };
    (account, pending)
}

/// Most base-scope reads that complete one ranged attribute: AD sends 1,500 values per
/// read (its `MaxValRange`), so this allows 1.5 million values, far beyond any real group
/// membership; a server that keeps sending ranges past it is answering in a loop.
const MAX_RANGE_ROUNDS: usize = 1_000;

/// What a `;range=` option on an attribute name says about the values still to read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ranged {
    /// No range option: every value is here.
    Whole,
    /// `;range=<start>-*`: the last part.
    Last,
    /// `;range=<start>-<end>`: more from `end + 1`.
    Next(usize),
    /// A range option this adapter cannot follow (not numbers, or an end at the edge of
    /// the integers): the server's text, for the error.
    Unusable(String),
}

/// `member;range=0-1499` → (`member`, `Next(1500)`); `member;range=1500-*` → (`member`,
/// `Last`); a hostile `member;range=0-18446744073709551615` → `Unusable`, never an overflow.
fn split_range(name: &str) -> (&str, Ranged) {
    let Some((base, options)) = name.split_once(';') else {
        return (name, Ranged::Whole);
    };
    let Some(range) = options.split(';').find_map(|o| {
        o.get(..6)
            .filter(|p| p.eq_ignore_ascii_case("range="))
            .and_then(|_| o.get(6..))
    }) else {
        return (base, Ranged::Whole);
    };
    let next = match range.split_once('-') {
        Some((start, "*")) if start.parse::<usize>().is_ok() => Ranged::Last,
        Some((start, end)) => match (start.parse::<usize>(), end.parse::<usize>()) {
            (Ok(start), Ok(end)) if start <= end => end
                .checked_add(1)
                .map_or_else(|| Ranged::Unusable(range.to_string()), Ranged::Next),
            _ => Ranged::Unusable(range.to_string()),
        },
        None => Ranged::Unusable(range.to_string()),
    };
    (base, next)
}

/// Reads the rest of each ranged attribute with base-scope searches. Each read must move
/// forward, and at most [`MAX_RANGE_ROUNDS`] reads complete one attribute; otherwise the
/// server is answering in a loop and the read fails rather than spinning.
async fn fetch_ranges(
    ldap: &mut Ldap,
    account: &mut SourceAccount,
    pending: Vec<PendingRange>,
    wanted: &[String],
) -> Result<(), Error> {
    for (attr, first) in pending {
        let mut start = match first {
            Ranged::Next(start) => start,
            Ranged::Unusable(text) => {
                return Err(range_error(
                    &account.dn,
                    &attr,
                    format!("unusable range `{text}`"),
                ));
            }
            Ranged::Whole | Ranged::Last => continue,
        };
        let key = wanted
            .iter()
            .find(|w| w.eq_ignore_ascii_case(&attr))
            .cloned()
            .unwrap_or_else(|| attr.clone());
        let mut round = 0usize;
        loop {
            round = round.saturating_add(1);
            let request = format!("{attr};range={start}-*");
            let searched = std::time::Instant::now();
            let (entries, _) = ldap
                .search(&account.dn, Scope::Base, "(objectClass=*)", vec![request])
                .await
                .and_then(|r| r.success())
                .map_err(|e| search_error(&account.dn, e))?;
            tracing::debug!(
                base = %account.dn,
                filter = "(objectClass=*)",
                scope = "base",
                pages = 1,
                entries = entries.len(),
                attribute = %attr,
                range_start = start,
                duration_ms = searched.elapsed().as_millis(),
                "LDAP search done."
            );
            let mut next = Ranged::Last;
            let mut got = 0usize;
            for entry in entries.into_iter().map(SearchEntry::construct) {
                for (name, values) in entry.attrs {
                    let (base, more) = split_range(&name);
                    if !base.eq_ignore_ascii_case(&attr) {
                        continue;
                    }
                    got = got.saturating_add(values.len());
                    if key.eq_ignore_ascii_case("memberOf") {
                        account.member_of.extend(values.iter().cloned());
                    }
                    account.attributes.append(&key, values);
                    next = more;
                }
            }
            match advance(start, got, next, round) {
                Ok(Some(n)) => start = n,
                Ok(None) => break,
                Err(reason) => return Err(range_error(&account.dn, &attr, reason)),
            }
        }
    }
    Ok(())
}

/// After the `round`-th read of a ranged attribute from `start`, which returned `got` values
/// and said `next`: where the next read starts (`None`: complete), or why the server's
/// answers cannot be followed (a range that does not move forward, too many rounds).
fn advance(start: usize, got: usize, next: Ranged, round: usize) -> Result<Option<usize>, String> {
    match next {
        Ranged::Whole | Ranged::Last => Ok(None),
        // No values and "more to come": nothing further to read (the old behaviour).
        Ranged::Next(_) if got == 0 => Ok(None),
        Ranged::Next(n) if n <= start => Err(format!(
            "the range did not advance (asked from {start}, told to go on from {n})"
        )),
        Ranged::Next(_) if round >= MAX_RANGE_ROUNDS => Err(format!(
            "still more values after {MAX_RANGE_ROUNDS} range reads"
        )),
        Ranged::Next(n) => Ok(Some(n)),
        Ranged::Unusable(text) => Err(format!("unusable range `{text}`")),
    }
}

/// A ranged attribute the server did not let us complete.
fn range_error(dn: &str, attribute: &str, reason: String) -> Error {
    Error::Range {
        dn: dn.to_string(),
        attribute: attribute.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn csns_sort_in_time_order_as_openldap_writes_them() {
        let t: jiff::Timestamp = "2026-11-23T19:20:51.265396Z".parse().unwrap();
        assert_eq!(csn_at(t), "20261123192051.265396Z#000000#000#000000");
        let later = csn_at(t + jiff::SignedDuration::from_millis(1));
        assert!(later > csn_at(t));
        assert!(csn_at(t).as_str() < "20261123192051.265396Z#000001#000#000000");
    }

    #[test]
    fn the_next_generic_mark_is_the_highest_csn_seen_but_never_later_than_the_overlap() {
        let started: jiff::Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        let before = Position {
            server: "uuid".into(),
            mark: String::new(),
        };
        let overlap = std::time::Duration::from_secs(60);
        // Changes long ago: read again from the highest one.
        let old = "20261101000000.000000Z#000000#000#000000".to_string();
        let next = next_position(
            Flavour::Generic,
            before.clone(),
            None,
            Some(old.clone()),
            started,
            overlap,
        );
        assert_eq!(next.mark, old);
        assert_eq!(next.server, "uuid");
        // A change during the last minute: reach back a minute before the read began.
        let recent = "20261123115959.000000Z#000000#000#000000".to_string();
        let next = next_position(
            Flavour::Generic,
            before.clone(),
            None,
            Some(recent),
            started,
            overlap,
        );
        assert_eq!(next.mark, "20261123115900.000000Z#000000#000#000000");
        // Nothing seen now: the last mark holds.
        let since = Position {
            server: "uuid".into(),
            mark: old.clone(),
        };
        let next = next_position(
            Flavour::Generic,
            before.clone(),
            Some(&since),
            None,
            started,
            overlap,
        );
        assert_eq!(next.mark, old);
        // Active Directory: the USN read before the search, whatever was seen.
        let ad = Position {
            server: "inv".into(),
            mark: "4010".into(),
        };
        let next = next_position(
            Flavour::ActiveDirectory,
            ad.clone(),
            Some(&since),
            Some("x".into()),
            started,
            overlap,
        );
        assert_eq!(next, ad);
    }

    #[test]
    fn filters_are_parenthesized_for_and() {
        assert_eq!(parenthesized("objectClass=user"), "(objectClass=user)");
        assert_eq!(parenthesized(" (uid=a) "), "(uid=a)");
    }

    #[test]
    fn range_options_are_split() {
        assert_eq!(
            split_range("member;range=0-1499"),
            ("member", Ranged::Next(1500))
        );
        assert_eq!(split_range("member;Range=1500-*"), ("member", Ranged::Last));
        assert_eq!(split_range("mail"), ("mail", Ranged::Whole));
        assert_eq!(split_range("cn;lang-fr"), ("cn", Ranged::Whole));
    }

    #[test]
    fn hostile_range_options_are_unusable_not_an_overflow() {
        for hostile in [
            "member;range=0-18446744073709551615",
            "member;range=0-99999999999999999999999",
            "member;range=1500-1499",
            "member;range=x-1499",
            "member;range=0-",
            "member;range=-*",
            "member;range=1500",
            "member;range=",
        ] {
            let (base, ranged) = split_range(hostile);
            assert_eq!(base, "member", "{hostile}");
            assert!(
                matches!(ranged, Ranged::Unusable(_)),
                "{hostile}: {ranged:?}"
            );
        }
        // Multi-byte text after the semicolon never splits inside a character.
        assert_eq!(split_range("cn;é"), ("cn", Ranged::Whole));
    }

    #[test]
    fn the_range_loop_moves_forward_and_ends() {
        // The normal sequence: on from the end + 1, then the last part.
        assert_eq!(advance(1500, 1500, Ranged::Next(3000), 1), Ok(Some(3000)));
        assert_eq!(advance(3000, 10, Ranged::Last, 2), Ok(None));
        assert_eq!(advance(3000, 10, Ranged::Whole, 2), Ok(None));
        // No values with "more to come" ends the read, as before.
        assert_eq!(advance(3000, 0, Ranged::Next(4500), 2), Ok(None));
    }

    #[test]
    fn a_range_loop_that_does_not_advance_or_never_ends_is_an_error() {
        // The same part again: would loop forever.
        let again = advance(1500, 1500, Ranged::Next(1500), 1);
        assert!(
            again.as_ref().is_err_and(|e| e.contains("did not advance")),
            "{again:?}"
        );
        // Backwards.
        assert!(advance(3000, 1500, Ranged::Next(1500), 2).is_err());
        // A hostile end in a later part.
        assert!(
            advance(
                1500,
                1,
                Ranged::Unusable("0-18446744073709551615".into()),
                1
            )
            .is_err_and(|e| e.contains("18446744073709551615"))
        );
        // Forward by one value each time, forever: stopped after the documented rounds.
        let mut start = 1;
        let mut rounds = 0;
        let stopped = loop {
            rounds += 1;
            match advance(start, 1, Ranged::Next(start + 1), rounds) {
                Ok(Some(n)) => start = n,
                Ok(None) => panic!("a server sending more forever was taken as complete"),
                Err(e) => break e,
            }
        };
        assert_eq!(rounds, MAX_RANGE_ROUNDS);
        assert!(stopped.contains("range reads"), "{stopped}");
    }

    #[test]
    fn ad_entry_maps_to_account() {
        let guid = vec![1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0xff];
        let entry = SearchEntry {
            dn: "CN=Ana Adams,OU=Partners,DC=lab,DC=example,DC=com".into(),
            attrs: HashMap::from([
                ("sAMAccountName".into(), vec!["p.adams".into()]),
                ("userAccountControl".into(), vec!["514".into()]),
                ("adminCount".into(), vec!["1".into()]),
                ("othermailbox".into(), vec!["Ana@Fabrikam.example".into()]),
                ("member;range=0-1499".into(), vec!["CN=x".into()]),
            ]),
            bin_attrs: HashMap::from([("objectGUID".into(), vec![guid.clone()])]),
        };
        let wanted = vec!["otherMailbox".to_string(), "member".to_string()];
        let (account, pending) = to_account(entry, Flavour::ActiveDirectory, &wanted);
        assert_eq!(account.object_guid, Some(Anchor::from_bytes(&guid)));
        assert_eq!(account.account_name.as_deref(), Some("p.adams"));
        assert!(account.disabled());
        assert!(account.admin_count);
        assert_eq!(account.first("otherMailbox"), Some("Ana@Fabrikam.example"));
        assert_eq!(pending, vec![("member".to_string(), Ranged::Next(1500))]);
    }

    #[test]
    fn generic_entry_anchors_on_entry_uuid() {
        let entry = SearchEntry {
            dn: "uid=p.adams,ou=Partners,dc=lab".into(),
            attrs: HashMap::from([
                ("uid".into(), vec!["p.adams".into()]),
                (
                    "entryUUID".into(),
                    vec!["0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into()],
                ),
            ]),
            bin_attrs: HashMap::new(),
        };
        let (account, _) = to_account(entry, Flavour::Generic, &[]);
        let expected = uuid::Uuid::parse_str("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
            .map(|u| Anchor::from_bytes(u.as_bytes()))
            .ok();
        assert_eq!(account.object_guid, expected);
        assert!(!account.disabled());
    }

    #[test]
    fn cleartext_is_refused_unless_allowed() {
        let mut settings = LdapSettings {
            url: "ldap://127.0.0.1:389".into(),
            starttls: false,
            ca_file: None,
            bind_dn: "svc".into(),
            password: SecretString::from("x"),
            allow_cleartext: false,
            flavour: Flavour::Auto,
            page_size: 1000,
            timeout: std::time::Duration::from_secs(5),
            change_overlap: std::time::Duration::from_secs(60),
        };
        assert!(matches!(
            LdapDirectory::new(settings.clone()),
            Err(Error::CleartextBind { .. })
        ));
        settings.allow_cleartext = true;
        assert!(LdapDirectory::new(settings.clone()).is_ok());
        settings.url = "ftp://x".into();
        assert!(matches!(
            LdapDirectory::new(settings),
            Err(Error::Url { .. })
        ));
    }
}
