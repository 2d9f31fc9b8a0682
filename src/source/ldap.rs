//! The ldap3 adapter behind [`Directory`]: TLS set-up, bind, flavour detection, paged
//! searches with AD range retrieval, incremental reads (AD `uSNChanged` on the same DC,
//! generic LDAP `entryCSN`), and the `mail` and password writes.

#![warn(clippy::arithmetic_side_effects)]

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::controls::RawControl;
use ldap3::exop::PasswordModify;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Mod, Scope, SearchEntry};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use super::capabilities::{
    self, AnchorName, Capabilities, ChangeMark, PASSWORD_MODIFY_OID, ServerFacts,
};
use super::connect::{self, Failover};
use super::{
    Departed, Directory, Error, Flavour, LdapSettings, Pages, Position, Read, SearchScope, deleted,
};
use crate::model::{Anchor, Dn, SourceAccount};

/// A directory reached over LDAP. Keeps one bound connection and reconnects when it breaks,
/// to the next domain controller when several are configured.
pub struct LdapDirectory {
    settings: LdapSettings,
    dcs: Failover,
    connection: Mutex<Option<(Ldap, Server)>>,
}

/// What the connected server is and can do, read once per connection.
#[derive(Debug, Clone)]
pub struct Server {
    pub flavour: Flavour,
    pub facts: Arc<ServerFacts>,
    pub capabilities: Arc<Capabilities>,
}

impl Server {
    /// The attribute a generic server's accounts are anchored by.
    fn anchor(&self) -> Option<AnchorName> {
        match self.flavour {
            Flavour::Generic => self.capabilities.anchor,
            _ => Some(AnchorName::ConsistencyGuid),
        }
    }

    /// How incremental reads ask for changes.
    fn mark(&self) -> &ChangeMark {
        &self.capabilities.change_mark
    }

    /// A server known only by its flavour (tests): a generic one as OpenLDAP.
    #[cfg(test)]
    fn plain(flavour: Flavour) -> Server {
        let mut facts = ServerFacts {
            active_directory: flavour != Flavour::Generic,
            ..ServerFacts::default()
        };
        for a in ["entryCSN", "entryUUID", "pwdAccountLockedTime"] {
            facts.add_attribute_type(&format!("( 1 NAME '{a}' )"));
        }
        let capabilities = capabilities::detect(&facts, std::time::Duration::from_secs(60));
        Server {
            flavour,
            facts: Arc::new(facts),
            capabilities: Arc::new(capabilities),
        }
    }
}

impl LdapDirectory {
    /// Checks the settings (URL, cleartext policy, CA file) without connecting.
    pub fn new(settings: LdapSettings) -> Result<Self, Error> {
        let urls: Vec<String> = std::iter::once(settings.url.clone())
            .chain(settings.failover_urls.iter().cloned())
            .collect();
        for url in &urls {
            check_url(&LdapSettings {
                url: url.clone(),
                ..settings.clone()
            })?;
        }
        if let Some(path) = &settings.ca_file {
            load_roots(path)?;
        }
        if let Some(kerberos) = &settings.kerberos {
            kerberos.service_host(&settings.url)?;
        }
        Ok(LdapDirectory {
            settings,
            dcs: Failover::new(urls),
            connection: Mutex::new(None),
        })
    }

    /// The settings for one of the configured URLs.
    fn settings_for(&self, url: String) -> LdapSettings {
        LdapSettings {
            url,
            ..self.settings.clone()
        }
    }

    /// The URL of the domain controller in use (or last used).
    pub fn current_url(&self) -> &str {
        self.dcs.current()
    }

    /// Forgets the connection after `e`; when `e` says the connection broke, the next one
    /// starts with the next domain controller.
    async fn forget(&self, e: &Error) {
        *self.connection.lock().await = None;
        if connect::broke(e) {
            self.dcs.broke();
        }
    }

    /// The settings this directory was made with.
    pub fn settings(&self) -> &LdapSettings {
        &self.settings
    }

    /// Opens a new connection and binds with the configured account. Used by `check` and by
    /// tests that need a connection of their own.
    pub async fn connect(&self) -> Result<Ldap, Error> {
        self.dcs
            .connect(|url| {
                let settings = self.settings_for(url);
                async move {
                    if let Some(kerberos) = &settings.kerberos {
                        let mut ldap = open(&settings).await?;
                        super::gssapi::bind(&mut ldap, &settings, kerberos).await?;
                        return Ok(ldap);
                    }
                    connect_and_bind(
                        &settings,
                        &settings.bind_dn,
                        settings.password.expose_secret(),
                    )
                    .await
                }
            })
            .await
    }

    /// Tries a simple bind as another account over the same transport; says whether it
    /// succeeded. This is how the demo and the tests prove an old password no longer works.
    pub async fn try_bind(&self, bind_dn: &str, password: &SecretString) -> Result<bool, Error> {
        let settings = self.settings_for(self.current_url().to_string());
        match connect_and_bind(&settings, bind_dn, password.expose_secret()).await {
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
        Ok(self.handle().await?.1.flavour)
    }

    /// What the server is and can do (rootDSE and subschema), as read at connect.
    pub async fn server(&self) -> Result<Server, Error> {
        Ok(self.handle().await?.1)
    }

    /// Whether `memberOf` is evidently maintained: the first member of `group` shows the
    /// group in its `memberOf`. `None` when the group has no member to tell by.
    pub async fn member_of_maintained(&self, group: &str) -> Result<Option<bool>, Error> {
        let (mut ldap, server) = self.handle().await?;
        if server.flavour != Flavour::Generic {
            return Ok(Some(true));
        }
        let members = group_members(&mut ldap, group).await?;
        let Some(first) = members.first() else {
            return Ok(None);
        };
        let entry = base_entry(&mut ldap, first, &["memberOf"]).await?;
        let wanted = Dn::new(group);
        Ok(Some(entry.is_some_and(|e| {
            e.attrs
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("memberOf"))
                .flat_map(|(_, v)| v)
                .any(|d| Dn::new(d) == wanted)
        })))
    }

    /// A bound connection, opened on first use and after a broken one.
    async fn handle(&self) -> Result<(Ldap, Server), Error> {
        let mut guard = self.connection.lock().await;
        if let Some((ldap, server)) = guard.as_mut()
            && !ldap.is_closed()
        {
            return Ok((ldap.clone(), server.clone()));
        }
        let mut ldap = self.connect().await?;
        let facts = read_facts(&mut ldap).await?;
        let flavour = match self.settings.flavour {
            Flavour::Auto if facts.active_directory => Flavour::ActiveDirectory,
            Flavour::Auto => Flavour::Generic,
            other => other,
        };
        let mut capabilities = capabilities::detect(&facts, self.settings.change_overlap);
        if flavour == Flavour::ActiveDirectory && !facts.active_directory {
            // Configured as AD against a server that does not say so: AD's own marks.
            capabilities = capabilities::detect(
                &ServerFacts {
                    active_directory: true,
                    ..facts.clone()
                },
                self.settings.change_overlap,
            );
        }
        if let ChangeMark::None { reason } = &capabilities.change_mark {
            tracing::warn!(url = %self.current_url(), %reason, "incremental reads are off for this directory: every read is full");
        }
        tracing::debug!(url = %self.current_url(), vendor = %capabilities.vendor, marks = %capabilities.change_mark, anchor = ?capabilities.anchor, "LDAP server capabilities.");
        let server = Server {
            flavour,
            facts: Arc::new(facts),
            capabilities: Arc::new(capabilities),
        };
        *guard = Some((ldap.clone(), server.clone()));
        Ok((ldap, server))
    }

    /// Forgets a connection that failed at the transport level; the next one starts with
    /// the next domain controller.
    async fn forget_if_broken(&self, err: &LdapError) {
        if transport(err) {
            *self.connection.lock().await = None;
            self.dcs.broke();
        }
    }

    /// One paged subtree search of `base` with `filter`, each entry mapped to an account and
    /// its ranged attributes completed. Tracks the highest change mark (`entryCSN` or
    /// `modifyTimestamp`) seen in `max_csn`.
    #[allow(clippy::too_many_arguments)]
    async fn search_base(
        &self,
        ldap: &mut Ldap,
        server: &Server,
        base: &str,
        filter: &str,
        wanted: &[String],
        attributes: &[String],
        out: &mut Vec<SourceAccount>,
        max_csn: &mut Option<String>,
        mut pager: Option<&mut Pager<'_>>,
    ) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let mut entries: usize = 0;
        let page_size = usize::try_from(self.settings.page_size).unwrap_or(1).max(1);
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
        let mark_attribute = match server.mark() {
            ChangeMark::EntryCsn | ChangeMark::ModifyTimestamp { .. } => server.mark().attribute(),
            _ => None,
        };
        while let Some(entry) = stream.next().await.map_err(search_err)? {
            let entry = SearchEntry::construct(entry);
            if let Some(mark_attribute) = mark_attribute
                && let Some(csn) = entry
                    .attrs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(mark_attribute))
                    .and_then(|(_, v)| v.iter().max())
                && max_csn.as_ref().is_none_or(|m| csn > m)
            {
                *max_csn = Some(csn.clone());
            }
            let (account, pending) = to_account(entry, server, wanted);
            if !pending.is_empty() {
                ranged.push((out.len(), pending));
            }
            out.push(account);
            entries = entries.saturating_add(1);
            // A full read hands its accounts over a page at a time. The search's stream
            // holds a clone of the handle (the same connection, its own message id), and
            // asks for its next page only when polled: ranged attributes are completed
            // meanwhile with base searches on `ldap`.
            if let Some(pager) = pager.as_deref_mut()
                && out.len() >= page_size
            {
                for (index, pending) in ranged.drain(..) {
                    if let Some(account) = out.get_mut(index) {
                        fetch_ranges(ldap, account, pending, wanted).await?;
                    }
                }
                // Stopped: the stream is dropped; the server ends the page it is on and
                // is never asked for the next.
                pager.hand_over(base, out)?;
            }
        }
        let done = stream.finish().await;
        done.success().map_err(search_err)?;
        // Servers fill every page but the last, so this is the number of pages read.
        let pages = entries.div_ceil(page_size).max(1);
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
        if let Some(pager) = pager {
            pager.hand_over(base, out)?;
        }
        Ok(())
    }

    /// Every attribute a read of `scope` asks for.
    fn attributes(server: &Server, scope: &SearchScope) -> Vec<String> {
        let mut attributes: Vec<String> = super::ACCOUNT_ATTRIBUTES
            .iter()
            .map(|a| a.to_string())
            .collect();
        if server.flavour == Flavour::Generic {
            // Operational: returned only when asked for. Marks the next incremental read
            // (only a mark the schema has: see `capabilities`).
            if let ChangeMark::EntryCsn | ChangeMark::ModifyTimestamp { .. } = server.mark()
                && let Some(a) = server.mark().attribute()
            {
                attributes.push(a.into());
            }
        }
        // Only those the schema has: a DC without Exchange is never asked for them.
        attributes.extend(
            server
                .capabilities
                .exchange_attributes
                .iter()
                .map(|a| a.to_string()),
        );
        for a in &scope.attributes {
            if !attributes.iter().any(|b| b.eq_ignore_ascii_case(a)) {
                attributes.push(a.clone());
            }
        }
        attributes
    }

    /// Where this server's changes stand now: AD's `invocationId` and `highestCommittedUSN`
    /// (read before the search, so that what changes during it is read again next time);
    /// a generic server's identity (the base entry's anchor: `entryUUID`, or for another
    /// anchor attribute `name:value`) with an empty mark. `Err` says why incremental
    /// reads are off.
    async fn position_now(
        &self,
        ldap: &mut Ldap,
        server: &Server,
        scope: &SearchScope,
    ) -> Result<Result<Position, String>, Error> {
        if let ChangeMark::None { reason } = server.mark() {
            return Ok(Err(reason.clone()));
        }
        if server.flavour == Flavour::Generic {
            let Some(base) = scope.base_dns.first() else {
                return Ok(Err("the scope has no base DN".into()));
            };
            let names: Vec<&str> = [
                AnchorName::EntryUuid,
                AnchorName::NsUniqueId,
                AnchorName::IpaUniqueId,
            ]
            .iter()
            .map(|a| a.attribute())
            .collect();
            let entry = base_entry(ldap, base, &names).await?;
            // The server's own anchor first; `entryUUID` bare, as earlier marks hold it.
            let mut order = vec![server.anchor().unwrap_or(AnchorName::EntryUuid)];
            order.extend([
                AnchorName::EntryUuid,
                AnchorName::NsUniqueId,
                AnchorName::IpaUniqueId,
            ]);
            let identity = entry.as_ref().and_then(|e| {
                order.iter().find_map(|a| {
                    first_text(e, a.attribute()).map(|v| match a {
                        AnchorName::EntryUuid => v,
                        other => format!("{}:{v}", other.attribute()),
                    })
                })
            });
            return Ok(match identity {
                Some(server) => Ok(Position {
                    server,
                    mark: String::new(),
                }),
                None => Err(format!(
                    "the base entry `{base}` has no entryUUID, nsUniqueId or ipaUniqueID to tell its database by, so a mark could not be known to belong to it"
                )),
            });
        }
        let no_usn = || {
            Ok(Err(
                "the rootDSE has no highestCommittedUSN or dsServiceName".to_string(),
            ))
        };
        let Some(root) = base_entry(ldap, "", &["highestCommittedUSN", "dsServiceName"]).await?
        else {
            return no_usn();
        };
        let (Some(usn), Some(service)) = (
            first_text(&root, "highestCommittedUSN"),
            first_text(&root, "dsServiceName"),
        ) else {
            return no_usn();
        };
        let Some(settings) = base_entry(ldap, &service, &["invocationId"]).await? else {
            return Ok(Err(format!("the DC's settings `{service}` cannot be read")));
        };
        let invocation = settings
            .bin_attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("invocationId"))
            .and_then(|(_, v)| v.first())
            .map(|b| Anchor::from_bytes(b).to_string());
        Ok(invocation
            .map(|server| Position { server, mark: usn })
            .ok_or_else(|| format!("the DC's settings `{service}` have no invocationId")))
    }

    /// Protected groups on a server that does not maintain `memberOf` for certain (any but
    /// AD): each group's `member` values are read and the group added to its members'
    /// `member_of`, so that a protected member is never touched either way.
    async fn resolve_groups(
        &self,
        ldap: &mut Ldap,
        server: &Server,
        scope: &SearchScope,
        accounts: &mut [SourceAccount],
    ) -> Result<(), Error> {
        if server.flavour != Flavour::Generic || accounts.is_empty() {
            return Ok(());
        }
        add_groups(&protected_members(ldap, server, scope).await?, accounts);
        Ok(())
    }

    /// Active Directory: the accounts deleted or moved out of every base DN since the mark
    /// (`marker`), from one search of each naming context with the show-deleted control
    /// (see [`super::deleted`]). Deleted accounts are seen only when the service account
    /// may list the Deleted Objects container (docs/operations.md).
    async fn left_since(
        &self,
        ldap: &mut Ldap,
        server: &Server,
        scope: &SearchScope,
        marker: &str,
    ) -> Result<Vec<Departed>, Error> {
        let wanted: Vec<String> = deleted::ATTRIBUTES.iter().map(|a| a.to_string()).collect();
        let mut attributes: Vec<String> = vec!["objectGUID".into(), "mS-DS-ConsistencyGuid".into()];
        attributes.extend(wanted.iter().cloned());
        let filter = deleted::filter(marker);
        let mut found = Vec::new();
        let mut no_csn = None;
        for base in deleted::search_bases(&scope.base_dns, &server.facts.naming_contexts) {
            ldap.with_controls(RawControl {
                ctype: deleted::SHOW_DELETED_OID.into(),
                crit: true,
                val: None,
            });
            self.search_base(
                ldap,
                server,
                &base,
                &filter,
                &wanted,
                &attributes,
                &mut found,
                &mut no_csn,
                None,
            )
            .await?;
        }
        let changed: Vec<deleted::Changed> = found
            .into_iter()
            .map(|a| deleted::Changed {
                deleted: a
                    .first("isDeleted")
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("TRUE")),
                last_known_parent: a.first("lastKnownParent").map(str::to_string),
                anchor: a.anchor().cloned(),
                dn: a.dn,
            })
            .collect();
        for c in changed.iter().filter(|c| c.deleted) {
            tracing::debug!(dn = %c.dn, last_known_parent = ?c.last_known_parent, "a user was deleted since the last read");
        }
        Ok(deleted::departed(changed, &scope.base_dns))
    }

    async fn read_with(
        &self,
        ldap: &mut Ldap,
        server: &Server,
        scope: &SearchScope,
        since: Option<&Position>,
        pages: &mut dyn Pages,
    ) -> Result<Read, Error> {
        let started = jiff::Timestamp::now();
        let attributes = Self::attributes(server, scope);
        let (before, off) = match self.position_now(ldap, server, scope).await? {
            Ok(p) => (Some(p), None),
            Err(why) => (None, Some(why)),
        };
        // The filter that selects what changed since the mark, when the mark can be used:
        // from this database, and well formed for the server's kind of mark.
        let marker = match (since, &before) {
            (Some(since), Some(now)) if since.server == now.server => {
                marker_filter(server.mark(), &since.mark)
            }
            _ => None,
        };
        let filter = parenthesized(&scope.filter);
        let mut max_csn: Option<String> = None;
        let (Some(since), Some(before), Some(marker)) = (since, before.clone(), marker) else {
            let mut pager = Pager {
                groups: protected_members(ldap, server, scope).await?,
                pages,
                handed: 0,
                anchorless: 0,
            };
            let mut accounts = Vec::new();
            for base in &scope.base_dns {
                self.search_base(
                    ldap,
                    server,
                    base,
                    &filter,
                    &scope.attributes,
                    &attributes,
                    &mut accounts,
                    &mut max_csn,
                    Some(&mut pager),
                )
                .await?;
            }
            let anchorless = pager.anchorless;
            if anchorless > 0 {
                tracing::warn!(
                    bases = ?scope.base_dns,
                    anchorless,
                    accounts = pager.handed,
                    anchor = ?server.anchor(),
                    "accounts without an anchor are keyed by their DN: a rename is seen by its join keys only"
                );
            }
            let fell_back = match (since, &off) {
                // Incremental reads are impossible here: say why, every time.
                (_, Some(why)) => Some(format!("incremental reads are off: {why}")),
                (None, None) => None,
                (Some(s), None) => Some(match &before {
                    None => "the directory no longer tells where its changes stand".to_string(),
                    Some(now) if now.server != s.server => format!(
                        "the last read's mark belongs to another database ({} then, {} now): another DC, a restore or a rebuilt directory",
                        s.server, now.server
                    ),
                    Some(_) => format!("the last read's mark `{}` cannot be read from", s.mark),
                }),
            };
            let overlap = self.settings.change_overlap;
            let position =
                before.map(|p| next_position(server.mark(), p, None, max_csn, started, overlap));
            return Ok(Read::Full {
                accounts: Vec::new(),
                position,
                fell_back,
            });
        };
        let mut changed = Vec::new();
        let mut gone = Vec::new();
        let mut departed_attributes: Vec<String> = [
            "objectGUID",
            "mS-DS-ConsistencyGuid",
            "entryUUID",
            "nsUniqueId",
            "ipaUniqueID",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if let Some(a) = server.mark().attribute() {
            departed_attributes.push(a.to_string());
        }
        for base in &scope.base_dns {
            self.search_base(
                ldap,
                server,
                base,
                &format!("(&{filter}{marker})"),
                &scope.attributes,
                &attributes,
                &mut changed,
                &mut max_csn,
                None,
            )
            .await?;
            self.search_base(
                ldap,
                server,
                base,
                &format!("(&{marker}(!{filter}))"),
                &[],
                &departed_attributes,
                &mut gone,
                &mut max_csn,
                None,
            )
            .await?;
        }
        let mut departed: Vec<Departed> = gone
            .into_iter()
            .map(|a| Departed {
                anchor: a.anchor().cloned(),
                dn: a.dn,
            })
            .collect();
        if server.flavour == Flavour::ActiveDirectory {
            departed.extend(self.left_since(ldap, server, scope, &marker).await?);
        }
        self.resolve_groups(ldap, server, scope, &mut changed)
            .await?;
        Ok(Read::Changes {
            changed,
            departed,
            position: next_position(
                server.mark(),
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
    mark: &ChangeMark,
    before: Position,
    since: Option<&Position>,
    max_csn: Option<String>,
    started: jiff::Timestamp,
    overlap: std::time::Duration,
) -> Position {
    let stamp: fn(jiff::Timestamp) -> String = match mark {
        ChangeMark::EntryCsn => csn_at,
        ChangeMark::ModifyTimestamp { .. } => generalized_at,
        ChangeMark::Usn | ChangeMark::None { .. } => return before,
    };
    let overlap = jiff::SignedDuration::try_from(overlap).unwrap_or(jiff::SignedDuration::MAX);
    let ceiling = stamp(started.checked_sub(overlap).unwrap_or(jiff::Timestamp::MIN));
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

/// The filter that asks for what changed since `mark`, when the mark is of the server's
/// kind: a USN (AD), a CSN (`…Z#…`), a generalized time (`YYYYmmddHHMMSSZ`). `None`: the
/// mark cannot be read from, so the read is full.
fn marker_filter(kind: &ChangeMark, mark: &str) -> Option<String> {
    match kind {
        ChangeMark::Usn => mark
            .parse::<u64>()
            .ok()
            .map(|usn| format!("(uSNChanged>={})", usn.saturating_add(1))),
        ChangeMark::EntryCsn if mark.contains('#') => {
            Some(format!("(entryCSN>={})", escape_value(mark)))
        }
        ChangeMark::ModifyTimestamp { .. }
            if mark.len() == 15
                && mark.ends_with('Z')
                && mark.bytes().take(14).all(|b| b.is_ascii_digit()) =>
        {
            Some(format!("(modifyTimestamp>={mark})"))
        }
        _ => None,
    }
}

/// The filter matching an account by its anchor: AD's `objectGUID` or
/// `mS-DS-ConsistencyGuid` (binary, escaped byte by byte), a generic server's anchor
/// attribute in its text form.
fn anchor_filter(server: &Server, anchor: &Anchor) -> String {
    if server.flavour == Flavour::Generic {
        let name = server.anchor().unwrap_or(AnchorName::EntryUuid);
        return match name.to_text(anchor) {
            Some(text) => format!("({}={})", name.attribute(), escape_value(&text)),
            // Not 16 bytes: matches nothing, so the account reads as gone from scope.
            None => format!(
                "({}=00000000-0000-0000-0000-000000000000)",
                name.attribute()
            ),
        };
    }
    let bytes = anchor.bytes();
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

/// A moment as a generalized time in whole seconds (`YYYYmmddHHMMSSZ`), as `modifyTimestamp`
/// holds it; compares as text in time order.
fn generalized_at(t: jiff::Timestamp) -> String {
    let utc = t.to_zoned(jiff::tz::TimeZone::UTC);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        utc.year(),
        utc.month(),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    )
}

/// Reads the rootDSE and (for a server that is not AD) the subschema's attribute types.
/// A subschema that cannot be read leaves the schema empty: then no mark is trusted.
async fn read_facts(ldap: &mut Ldap) -> Result<ServerFacts, Error> {
    let root = base_entry(
        ldap,
        "",
        &[
            "vendorName",
            "vendorVersion",
            "supportedCapabilities",
            "supportedControl",
            "supportedExtension",
            "namingContexts",
            "changelog",
            "subschemaSubentry",
            "schemaNamingContext",
        ],
    )
    .await?;
    let Some(root) = root else {
        return Ok(ServerFacts::default());
    };
    let mut facts = ServerFacts::from_entries(
        root.attrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        std::iter::empty(),
    );
    if facts.active_directory {
        read_exchange_schema(ldap, &mut facts).await?;
        return Ok(facts);
    }
    let subschema = first_text(&root, "subschemaSubentry").unwrap_or_else(|| "cn=Subschema".into());
    match ldap
        .search(
            &subschema,
            Scope::Base,
            "(objectClass=*)",
            vec!["attributeTypes"],
        )
        .await
        .and_then(|r| r.success())
    {
        Ok((entries, _)) => {
            for entry in entries.into_iter().map(SearchEntry::construct) {
                for (name, values) in &entry.attrs {
                    if name.eq_ignore_ascii_case("attributeTypes") {
                        for v in values {
                            facts.add_attribute_type(v);
                        }
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(subschema, error = %e, "the subschema cannot be read: no change mark is trusted");
        }
    }
    Ok(facts)
}

/// Adds the Exchange attributes AD's schema defines to `facts` (their names, from the
/// schema naming context: one small search instead of AD's whole subschema).
async fn read_exchange_schema(ldap: &mut Ldap, facts: &mut ServerFacts) -> Result<(), Error> {
    let Some(schema) = facts.schema_naming_context.clone() else {
        return Ok(());
    };
    let filter = super::exchange::schema_filter();
    let result = ldap
        .search(&schema, Scope::OneLevel, &filter, vec!["lDAPDisplayName"])
        .await
        .and_then(|r| r.success());
    match result {
        Ok((entries, _)) => {
            for entry in entries.into_iter().take(64).map(SearchEntry::construct) {
                if let Some(name) = first_text(&entry, "lDAPDisplayName")
                    && name.len() <= 128
                {
                    facts.schema_attributes.insert(name.to_ascii_lowercase());
                }
            }
            Ok(())
        }
        Err(LdapError::LdapResult { result }) if result.rc == 32 => Ok(()),
        Err(e) => Err(search_error(&schema, e)),
    }
}

/// A full read's accounts on their way out, a page at a time ([`Directory::read_pages`]).
struct Pager<'p> {
    pages: &'p mut dyn Pages,
    /// Each protected group's members, read before the search (generic LDAP only).
    groups: Vec<(String, HashSet<Dn>)>,
    /// Accounts handed over, and how many of them had no anchor.
    handed: usize,
    anchorless: usize,
}

impl Pager<'_> {
    /// Hands over the accounts gathered (their ranged attributes already completed), with
    /// their protected groups added.
    fn hand_over(&mut self, base: &str, out: &mut Vec<SourceAccount>) -> Result<(), Error> {
        if out.is_empty() {
            return Ok(());
        }
        let mut page = std::mem::take(out);
        add_groups(&self.groups, &mut page);
        self.handed = self.handed.saturating_add(page.len());
        let anchorless = page.iter().filter(|a| a.anchor().is_none()).count();
        self.anchorless = self.anchorless.saturating_add(anchorless);
        match self.pages.page(page) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(Error::Stopped {
                base: base.to_string(),
                accounts: self.handed,
            }),
        }
    }
}

/// Each protected group with its members, on a server that does not maintain `memberOf`
/// for certain (any but AD; none otherwise).
async fn protected_members(
    ldap: &mut Ldap,
    server: &Server,
    scope: &SearchScope,
) -> Result<Vec<(String, HashSet<Dn>)>, Error> {
    let mut out = Vec::new();
    if server.flavour != Flavour::Generic {
        return Ok(out);
    }
    for group in &scope.protected_groups {
        let members: HashSet<Dn> = group_members(ldap, group)
            .await?
            .iter()
            .map(|m| Dn::new(m))
            .collect();
        out.push((group.clone(), members));
    }
    Ok(out)
}

/// Adds each protected group to its members' `member_of`, so that a protected member is
/// never touched either way.
fn add_groups(groups: &[(String, HashSet<Dn>)], accounts: &mut [SourceAccount]) {
    for (group, members) in groups {
        let dn = Dn::new(group);
        for account in accounts.iter_mut() {
            if members.contains(&Dn::new(&account.dn))
                && !account.member_of.iter().any(|g| Dn::new(g) == dn)
            {
                account.member_of.push(group.clone());
            }
        }
    }
}

/// The `member` and `uniqueMember` values of a group; none when it does not exist.
async fn group_members(ldap: &mut Ldap, group: &str) -> Result<Vec<String>, Error> {
    let entry = base_entry(ldap, group, &["member", "uniqueMember"]).await?;
    Ok(entry
        .map(|e| {
            e.attrs
                .into_iter()
                .filter(|(k, _)| {
                    k.eq_ignore_ascii_case("member") || k.eq_ignore_ascii_case("uniqueMember")
                })
                .flat_map(|(_, v)| v)
                .collect()
        })
        .unwrap_or_default())
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
        let mut all = Vec::new();
        let mut read = self.read_pages(scope, since, &mut all).await?;
        if let Read::Full { accounts, .. } = &mut read {
            // The vector grew by doubling: give the unused tail back (a large allocation is
            // remapped in place, not copied).
            all.shrink_to_fit();
            *accounts = all;
        }
        Ok(read)
    }

    async fn read_pages(
        &self,
        scope: &SearchScope,
        since: Option<&Position>,
        pages: &mut dyn Pages,
    ) -> Result<Read, Error> {
        // A connection that breaks during the read restarts it on the next domain controller,
        // each at most once. A change mark from the first DC means nothing on another (marks
        // are per DC, by `invocationId`): `read_with` reads in full there and says why.
        let mut restarts: usize = 0;
        loop {
            let (mut ldap, server) = self.handle().await?;
            let e = match self
                .read_with(&mut ldap, &server, scope, since, pages)
                .await
            {
                Ok(read) => return Ok(read),
                Err(e) => e,
            };
            pages.restart();
            self.forget(&e).await;
            if !connect::broke(&e) || restarts.saturating_add(1) >= self.dcs.len() {
                return Err(e);
            }
            restarts = restarts.saturating_add(1);
            tracing::warn!(url = %self.current_url(), error = %e, "The connection broke during the read; reading again from the next domain controller.");
        }
    }

    async fn account(&self, scope: &SearchScope, dn: &str) -> Result<Option<SourceAccount>, Error> {
        let (mut ldap, server) = self.handle().await?;
        let attributes = Self::attributes(&server, scope);
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
        let (account, pending) = to_account(entry, &server, &scope.attributes);
        let mut accounts = [account];
        if !pending.is_empty() {
            fetch_ranges(&mut ldap, &mut accounts[0], pending, &scope.attributes).await?;
        }
        self.resolve_groups(&mut ldap, &server, scope, &mut accounts)
            .await?;
        let [account] = accounts;
        Ok(Some(account))
    }

    async fn accounts_by_anchor(
        &self,
        scope: &SearchScope,
        anchors: &[Anchor],
    ) -> Result<Vec<SourceAccount>, Error> {
        let (mut ldap, server) = self.handle().await?;
        let attributes = Self::attributes(&server, scope);
        let filter = parenthesized(&scope.filter);
        let mut out = Vec::new();
        let mut max_csn = None;
        for chunk in anchors.chunks(ANCHORS_PER_SEARCH) {
            let any: String = chunk.iter().map(|a| anchor_filter(&server, a)).collect();
            for base in &scope.base_dns {
                let result = self
                    .search_base(
                        &mut ldap,
                        &server,
                        base,
                        &format!("(&{filter}(|{any}))"),
                        &scope.attributes,
                        &attributes,
                        &mut out,
                        &mut max_csn,
                        None,
                    )
                    .await;
                if let Err(e) = result {
                    self.forget(&e).await;
                    return Err(e);
                }
            }
        }
        self.resolve_groups(&mut ldap, &server, scope, &mut out)
            .await?;
        Ok(out)
    }

    async fn entry(&self, dn: &str) -> Result<Option<SourceAccount>, Error> {
        let (mut ldap, server) = self.handle().await?;
        match base_entry(&mut ldap, dn, super::ACCOUNT_ATTRIBUTES).await {
            // Nothing ranged is asked for: what settling needs is single-valued.
            Ok(entry) => Ok(entry.map(|e| to_account(e, &server, &[]).0)),
            Err(e) => {
                self.forget(&e).await;
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
                url: self.current_url().to_string(),
                operation: "reset a password",
            });
        }
        let (mut ldap, server) = self.handle().await?;
        let flavour = server.flavour;
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
    let mut ldap = open(settings).await?;
    match ldap.simple_bind(bind_dn, password).await {
        Ok(result) if result.rc == 0 => Ok(ldap),
        Ok(result) => Err(Error::Bind {
            url: settings.url.clone(),
            bind_dn: bind_dn.to_string(),
            rc: result.rc,
            message: result.text,
        }),
        Err(e) => Err(Error::Connect {
            url: settings.url.clone(),
            reason: e.to_string(),
        }),
    }
}

/// Opens a connection (LDAPS, StartTLS, or cleartext), not yet bound.
async fn open(settings: &LdapSettings) -> Result<Ldap, Error> {
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
    Ok(ldap)
}

/// The scheme, StartTLS and cleartext policy of one URL.
fn check_url(settings: &LdapSettings) -> Result<(), Error> {
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
    // A Kerberos bind seals the connection itself; password operations still require TLS.
    if !settings.encrypted() && !settings.allow_cleartext && settings.kerberos.is_none() {
        return Err(Error::CleartextBind {
            url: settings.url.clone(),
        });
    }
    Ok(())
}

/// Whether ldap3 failed below LDAP: the connection broke, or no answer came in time (then
/// whether the server acted is unknown).
fn transport(e: &LdapError) -> bool {
    matches!(
        e,
        LdapError::Io { .. }
            | LdapError::OpSend { .. }
            | LdapError::ResultRecv { .. }
            | LdapError::Timeout { .. }
    )
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
    server: &Server,
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
    let object_guid = match server.flavour {
        Flavour::Generic => server
            .anchor()
            .and_then(|a| first(a.attribute()).and_then(|v| a.from_text(&v))),
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
        locked: is_locked(&first),
        member_of: all("memberOf"),
        password_changed: first("pwdLastSet").or_else(|| first("pwdChangedTime")),
        attributes: attributes.into(),
        exchange: match server.flavour {
            Flavour::Generic => None,
            _ => super::exchange::recipient(&first, &|name| binary(name).is_some()),
        },
        dn,
    };
    (account, pending)
}

/// Whether a generic server's lock attribute says the account may not sign in: 389-ds
/// `nsAccountLock: true`, OpenLDAP `pwdAccountLockedTime` present (`000001010000Z` is
/// locked for good, any other time locked since then), eDirectory `loginDisabled: TRUE`.
fn is_locked(first: &dyn Fn(&str) -> Option<String>) -> bool {
    first("nsAccountLock").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || first("pwdAccountLockedTime").is_some_and(|v| !v.trim().is_empty())
        || first("loginDisabled").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
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
            &ChangeMark::EntryCsn,
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
            &ChangeMark::EntryCsn,
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
            &ChangeMark::EntryCsn,
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
            &ChangeMark::Usn,
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
        let (account, pending) =
            to_account(entry, &Server::plain(Flavour::ActiveDirectory), &wanted);
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
        let (account, _) = to_account(entry, &Server::plain(Flavour::Generic), &[]);
        let expected = uuid::Uuid::parse_str("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
            .map(|u| Anchor::from_bytes(u.as_bytes()))
            .ok();
        assert_eq!(account.object_guid, expected);
        assert!(!account.disabled());
    }

    #[test]
    fn a_389_entry_anchors_on_ns_unique_id_and_reads_its_lock() {
        let mut facts = ServerFacts::default();
        for a in [
            "modifyTimestamp",
            "nsUniqueId",
            "entryUUID",
            "nsAccountLock",
        ] {
            facts.add_attribute_type(&format!("( 1 NAME '{a}' )"));
        }
        let capabilities = capabilities::detect(&facts, std::time::Duration::from_secs(60));
        let server = Server {
            flavour: Flavour::Generic,
            facts: Arc::new(facts),
            capabilities: Arc::new(capabilities),
        };
        let entry = |lock: &str| SearchEntry {
            dn: "uid=p.disabled,ou=Partners,dc=lab".into(),
            attrs: HashMap::from([
                (
                    "nsUniqueId".into(),
                    vec!["b117a9a2-edd911f1-974e8ce8-03de30af".into()],
                ),
                (
                    "entryUUID".into(),
                    vec!["02d50135-5d08-41c2-8387-6c47866bb90e".into()],
                ),
                ("nsAccountLock".into(), vec![lock.into()]),
            ]),
            bin_attrs: HashMap::new(),
        };
        let (account, _) = to_account(entry("TRUE"), &server, &[]);
        assert_eq!(
            account.object_guid,
            AnchorName::NsUniqueId.from_text("b117a9a2edd911f1974e8ce803de30af")
        );
        assert!(account.locked && account.disabled());
        let (account, _) = to_account(entry("false"), &server, &[]);
        assert!(!account.disabled());
        let anchor = account.object_guid.unwrap();
        assert_eq!(
            anchor_filter(&server, &anchor),
            "(nsUniqueId=b117a9a2-edd911f1-974e8ce8-03de30af)"
        );
    }

    #[test]
    fn openldap_and_edirectory_locks_are_read() {
        let server = Server::plain(Flavour::Generic);
        for (attr, value, locked) in [
            ("pwdAccountLockedTime", "000001010000Z", true),
            ("pwdAccountLockedTime", "20261201120000Z", true),
            ("loginDisabled", "TRUE", true),
            ("loginDisabled", "FALSE", false),
            ("nsAccountLock", "false", false),
        ] {
            let entry = SearchEntry {
                dn: "uid=x,dc=lab".into(),
                attrs: HashMap::from([(attr.into(), vec![value.into()])]),
                bin_attrs: HashMap::new(),
            };
            let (account, _) = to_account(entry, &server, &[]);
            assert_eq!(account.disabled(), locked, "{attr}: {value}");
        }
    }

    #[test]
    fn marks_are_used_only_in_the_server_s_own_form() {
        let ts = ChangeMark::ModifyTimestamp {
            overlap: std::time::Duration::from_secs(60),
        };
        assert_eq!(
            marker_filter(&ts, "20261201225233Z").as_deref(),
            Some("(modifyTimestamp>=20261201225233Z)")
        );
        // A CSN from an earlier OpenLDAP-style read is not a timestamp: read in full.
        assert_eq!(
            marker_filter(&ts, "20261201225233.000000Z#000000#000#000000"),
            None
        );
        assert_eq!(marker_filter(&ts, ""), None);
        assert_eq!(marker_filter(&ts, "2026120122523xZ"), None);
        assert_eq!(
            marker_filter(&ChangeMark::EntryCsn, "20261201225233Z"),
            None
        );
        assert_eq!(
            marker_filter(&ChangeMark::Usn, "41").as_deref(),
            Some("(uSNChanged>=42)")
        );
        let none = ChangeMark::None { reason: "x".into() };
        assert_eq!(marker_filter(&none, "41"), None);
        // The next timestamp mark: the highest seen, never later than the overlap.
        let started: jiff::Timestamp = "2026-12-01T23:00:00Z".parse().unwrap();
        let before = Position {
            server: "nsUniqueId:x".into(),
            mark: String::new(),
        };
        let overlap = std::time::Duration::from_secs(60);
        let next = next_position(
            &ts,
            before.clone(),
            None,
            Some("20261201225959Z".into()),
            started,
            overlap,
        );
        assert_eq!(next.mark, "20261201225900Z");
        let next = next_position(
            &ts,
            before,
            None,
            Some("20261201100000Z".into()),
            started,
            overlap,
        );
        assert_eq!(next.mark, "20261201100000Z");
    }

    #[test]
    fn cleartext_is_refused_unless_allowed() {
        let mut settings = LdapSettings {
            url: "ldap://127.0.0.1:389".into(),
            failover_urls: Vec::new(),
            starttls: false,
            ca_file: None,
            bind_dn: "svc".into(),
            password: SecretString::from("x"),
            allow_cleartext: false,
            flavour: Flavour::Auto,
            page_size: 1000,
            timeout: std::time::Duration::from_secs(5),
            change_overlap: std::time::Duration::from_secs(60),
            kerberos: None,
        };
        assert!(matches!(
            LdapDirectory::new(settings.clone()),
            Err(Error::CleartextBind { .. })
        ));
        settings.allow_cleartext = true;
        assert!(LdapDirectory::new(settings.clone()).is_ok());
        // Every URL is checked, the failover ones too.
        settings.failover_urls = vec!["ldap://127.0.0.2:389".into(), "ftp://x".into()];
        assert!(matches!(
            LdapDirectory::new(settings.clone()),
            Err(Error::Url { url, .. }) if url == "ftp://x"
        ));
        settings.url = "ftp://x".into();
        settings.failover_urls.clear();
        assert!(matches!(
            LdapDirectory::new(settings),
            Err(Error::Url { .. })
        ));
    }
}
