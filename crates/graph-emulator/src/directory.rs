//! The emulator's shared state: the directory (users, invitations, change counter for delta),
//! the request log, faults, throttling buckets and the configuration every handler reads.
//! It holds data and small lookups only; HTTP shapes live in the handler modules.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use axum::Router;
use serde::Serialize;
use serde_json::{Map, Value};

use super::tenant::{App, PRIVATE_FIELDS, Tenant, User};
use super::throttle::Throttle;

/// Locks a mutex, recovering the data if a handler panicked while holding it (the data is
/// plain values that stay consistent between statements).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The Graph properties of a user, as Graph names them, and whether `$select` is needed.
pub(crate) const USER_PROPERTIES: &[(&str, bool)] = &[
    ("businessPhones", true),
    ("displayName", true),
    ("givenName", true),
    ("id", true),
    ("jobTitle", true),
    ("mail", true),
    ("mobilePhone", true),
    ("officeLocation", true),
    ("preferredLanguage", true),
    ("surname", true),
    ("userPrincipalName", true),
    ("accountEnabled", false),
    ("assignedPlans", false),
    ("createdDateTime", false),
    ("creationType", false),
    ("department", false),
    ("employeeId", false),
    ("externalUserState", false),
    ("externalUserStateChangeDateTime", false),
    ("identities", false),
    ("mailNickname", false),
    ("onPremisesDistinguishedName", false),
    ("onPremisesImmutableId", false),
    ("onPremisesSamAccountName", false),
    ("onPremisesSecurityIdentifier", false),
    ("onPremisesSyncEnabled", false),
    ("onPremisesUserPrincipalName", false),
    ("otherMails", false),
    ("proxyAddresses", false),
    ("signInActivity", false),
    ("signInSessionsValidFromDateTime", false),
    ("userType", false),
];

/// The canonical spelling of a user property, matched case-insensitively.
pub(crate) fn canonical_property(name: &str) -> Option<&'static str> {
    USER_PROPERTIES
        .iter()
        .find(|(p, _)| p.eq_ignore_ascii_case(name))
        .map(|(p, _)| *p)
}

/// The properties returned when no `$select` is given.
pub(crate) fn default_properties() -> Vec<&'static str> {
    USER_PROPERTIES
        .iter()
        .filter(|(_, default)| *default)
        .map(|(p, _)| *p)
        .collect()
}

/// A user's full Graph view (every property, `null` or `[]` when empty), private fields removed.
pub(crate) fn graph_view(user: &User) -> Map<String, Value> {
    let mut map = match serde_json::to_value(user) {
        Ok(Value::Object(map)) => map,
        // A struct of strings, booleans and vectors always serializes to an object.
        _ => Map::new(),
    };
    // A mailbox shows as an enabled Exchange Online service plan, as Graph reports licences.
    let plans = if user.mailbox {
        serde_json::json!([{
            "assignedDateTime": user.created_date_time.clone().unwrap_or_else(|| "2024-01-01T00:00:00Z".to_owned()),
            "capabilityStatus": "Enabled",
            "service": "exchange",
            "servicePlanId": "efb87545-963c-4e0d-99df-69c6916d9eb0",
        }])
    } else {
        serde_json::json!([])
    };
    map.insert("assignedPlans".to_owned(), plans);
    for field in PRIVATE_FIELDS {
        map.remove(field);
    }
    map
}

/// The view an [`Entry`] keeps: [`graph_view`] without its `null` properties, which every
/// reader treats as absent (projections and filters read a missing property as `null`, delta
/// omits both). Empty collections stay: lists show them as `[]`. A 1,000,000-user tenant
/// holds far fewer map entries this way.
fn stored_view(user: &User) -> Map<String, Value> {
    let mut view = graph_view(user);
    view.retain(|_, value| !value.is_null());
    view
}

/// One user plus the change counter value of its last change (for delta).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub user: User,
    pub changed: u64,
    /// Replication-delay mode: writes are refused until then (newly invited users).
    pub writable_after: Option<std::time::Instant>,
    /// The user's Graph view, kept current by [`Directory::touch`] so that reads and filters
    /// over large tenants do not serialize every user on every request.
    pub view: Map<String, Value>,
    /// The keys [`Directory`] indexes this entry under, as of its last [`Directory::touch`].
    indexed: Vec<String>,
}

impl Entry {
    pub fn new(user: User) -> Entry {
        let view = stored_view(&user);
        Entry {
            user,
            changed: 0,
            writable_after: None,
            view,
            indexed: Vec::new(),
        }
    }
}

/// One recorded invitation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InvitationRecord {
    pub id: String,
    pub time: String,
    pub app_id: String,
    pub invited_user_id: String,
    pub invited_user_email_address: String,
    pub reset_redemption: bool,
    pub conversion: bool,
    /// The request's `inviteRedirectUrl` and `sendInvitationMessage`, and the answer's
    /// `inviteRedeemUrl`.
    pub invite_redirect_url: String,
    pub send_invitation_message: bool,
    pub invite_redeem_url: String,
}

/// One recorded `revokeSignInSessions` (contract §2.5).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RevocationRecord {
    pub time: String,
    pub app_id: String,
    pub user_id: String,
}

/// The mutable directory.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    pub entries: Vec<Entry>,
    /// Global change counter; every change stamps `Entry::changed` with the next value.
    pub seq: u64,
    /// Bumped by the control API to invalidate every delta token (410 on next use).
    pub delta_generation: u64,
    /// Users deleted through the control API: id and the change counter of the deletion,
    /// for delta's `@removed` entries.
    pub removed: Vec<(String, u64)>,
    pub invitations: Vec<InvitationRecord>,
    pub revocations: Vec<RevocationRecord>,
    /// Lowercased ids, UPNs and addresses (mail, otherMails, proxy addresses) to the entries
    /// holding them, so that lookups do not scan every user (issue 12: invitations slowed
    /// down as users grew). A superset: callers check each candidate against the user.
    index: HashMap<String, Vec<usize>>,
}

/// What an entry is indexed under.
fn index_keys(user: &User) -> Vec<String> {
    let mut keys: Vec<String> = [user.id.as_str(), user.user_principal_name.as_str()]
        .into_iter()
        .chain(user.mail.as_deref())
        .chain(user.other_mails.iter().map(String::as_str))
        .chain(user.proxy_addresses.iter().filter_map(|p| proxy_address(p)))
        .map(str::to_ascii_lowercase)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

impl Directory {
    /// The directory of `tenant` holding `users` (taken from it by value: a large tenant is
    /// not held twice while the emulator starts).
    pub fn new(tenant: &Tenant, users: Vec<User>) -> Directory {
        let mut directory = Directory {
            entries: users
                .into_iter()
                .map(|mut user| {
                    if user.identities.is_empty() {
                        // Every Entra user has at least its UPN sign-in identity on the tenant.
                        user.identities.push(super::tenant::ObjectIdentity {
                            sign_in_type: Some("userPrincipalName".to_owned()),
                            issuer: Some(tenant.initial_domain.clone()),
                            issuer_assigned_id: Some(user.user_principal_name.clone()),
                        });
                    }
                    Entry::new(user)
                })
                .collect(),
            seq: 0,
            delta_generation: 0,
            removed: Vec::new(),
            invitations: Vec::new(),
            revocations: Vec::new(),
            index: HashMap::new(),
        };
        directory.reindex();
        directory
    }

    /// Rebuilds the whole index (at start and after a deletion shifted the entries).
    fn reindex(&mut self) {
        self.index.clear();
        for i in 0..self.entries.len() {
            self.index_entry(i);
        }
    }

    fn index_entry(&mut self, i: usize) {
        let Some(entry) = self.entries.get_mut(i) else {
            return;
        };
        let keys = index_keys(&entry.user);
        for key in &keys {
            self.index.entry(key.clone()).or_default().push(i);
        }
        entry.indexed = keys;
    }

    fn unindex_entry(&mut self, i: usize) {
        let Some(entry) = self.entries.get_mut(i) else {
            return;
        };
        for key in std::mem::take(&mut entry.indexed) {
            if let Some(holders) = self.index.get_mut(&key) {
                holders.retain(|h| *h != i);
                if holders.is_empty() {
                    self.index.remove(&key);
                }
            }
        }
    }

    /// The first entry (in directory order) indexed under `key` for which `hit` holds.
    pub fn first_with(&self, key: &str, hit: impl Fn(usize, &Entry) -> bool) -> Option<usize> {
        self.index
            .get(&key.to_ascii_lowercase())?
            .iter()
            .copied()
            .filter(|i| self.entries.get(*i).is_some_and(|e| hit(*i, e)))
            .min()
    }

    /// Index of the user with this id or userPrincipalName (case-insensitive).
    pub fn find(&self, key: &str) -> Option<usize> {
        self.first_with(key, |_, e| {
            e.user.id.eq_ignore_ascii_case(key)
                || e.user.user_principal_name.eq_ignore_ascii_case(key)
        })
    }

    /// Marks the user at `index` as changed (it shows up in the next delta round) and
    /// refreshes its cached Graph view. Every change to a user ends here.
    pub fn touch(&mut self, index: usize) {
        self.seq += 1;
        self.unindex_entry(index);
        self.index_entry(index);
        if let Some(entry) = self.entries.get_mut(index) {
            entry.changed = self.seq;
            entry.view = stored_view(&entry.user);
        }
    }

    /// Deletes the user at `index` (as an admin would; it shows up in the next delta round
    /// as `@removed`).
    pub fn delete(&mut self, index: usize) {
        if index < self.entries.len() {
            self.seq += 1;
            let entry = self.entries.remove(index);
            self.removed.push((entry.user.id, self.seq));
            self.reindex();
        }
    }

    /// Index of another user whose proxyAddresses hold `smtp:{address}`.
    pub fn proxy_owner(&self, address: &str, except: Option<usize>) -> Option<usize> {
        self.first_with(address, |i, e| {
            Some(i) != except
                && e.user
                    .proxy_addresses
                    .iter()
                    .any(|p| proxy_address(p).is_some_and(|a| a.eq_ignore_ascii_case(address)))
        })
    }

    /// Sets `mail` and recomputes the primary `SMTP:` proxy address (contract §2.3).
    pub fn set_mail(&mut self, index: usize, mail: Option<String>) {
        let conflict = mail
            .as_deref()
            .and_then(|m| self.proxy_owner(m, Some(index)))
            .is_some();
        let Some(entry) = self.entries.get_mut(index) else {
            return;
        };
        let user = &mut entry.user;
        user.mail = mail.clone();
        let Some(mail) = mail else {
            return;
        };
        let guest_ext_primary = user
            .proxy_addresses
            .iter()
            .any(|p| p.starts_with("SMTP:") && p.contains("#EXT#"));
        if conflict || guest_ext_primary {
            return;
        }
        let mut addresses: Vec<String> = user
            .proxy_addresses
            .iter()
            .filter(|p| !proxy_address(p).is_some_and(|a| a.eq_ignore_ascii_case(&mail)))
            .map(|p| match p.strip_prefix("SMTP:") {
                Some(rest) => format!("smtp:{rest}"),
                None => p.clone(),
            })
            .collect();
        addresses.insert(0, format!("SMTP:{mail}"));
        user.proxy_addresses = addresses;
    }
}

/// The address of an `smtp:`/`SMTP:` proxy address.
pub(crate) fn proxy_address(proxy: &str) -> Option<&str> {
    let (scheme, address) = proxy.split_once(':')?;
    scheme.eq_ignore_ascii_case("smtp").then_some(address)
}

/// One line of the request log.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LogEntry {
    pub time: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub request_id: String,
    pub client_request_id: String,
    pub app_id: Option<String>,
    pub invited_user_id: Option<String>,
    pub invited_user_email_address: Option<String>,
    pub batch_inner: bool,
}

/// Injected faults (control API).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct FaultSpec {
    #[serde(default)]
    pub latency_ms: Option<[u64; 2]>,
    #[serde(default)]
    pub rate: f64,
    #[serde(default)]
    pub kinds: Vec<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Hostile: the `Retry-After` value of injected 429 and 503 answers, sent as is
    /// (`"1e30"`, `"99999999999999999999"`, an HTTP date) instead of 1 s × time scale.
    #[serde(default)]
    pub retry_after: Option<String>,
    /// Hostile: the message of injected 503 answers (escape sequences included).
    #[serde(default)]
    pub error_message: Option<String>,
    /// Hostile: every `@odata.nextLink` and `@odata.deltaLink` points at this origin
    /// (`https://other.example:8443`, `http://127.0.0.1:8080`) instead of the emulator's.
    #[serde(default)]
    pub link_origin: Option<String>,
    /// Hostile: every page of a list names itself as `@odata.nextLink` (and has no
    /// deltaLink), so paging never ends.
    #[serde(default)]
    pub next_link_loop: bool,
    /// Hostile: `x-ms-throttle-limit-percentage` on every Graph answer, as is.
    #[serde(default)]
    pub limit_percentage: Option<String>,
    /// Hostile: the token endpoint answers `307 Temporary Redirect` to this `Location`
    /// without issuing a token.
    #[serde(default)]
    pub token_redirect: Option<String>,
    /// Hostile: token answers carry this `expires_in` and `ext_expires_in` (any JSON value).
    #[serde(default)]
    pub expires_in: Option<serde_json::Value>,
    /// Hostile: Graph answers are streamed with leading whitespace up to this many bytes,
    /// without a `Content-Length`.
    #[serde(default)]
    pub body_bytes: Option<u64>,
    /// Hostile: a conversion invitation (one naming `invitedUser.id`) is answered as if the
    /// id had been dropped on the way: a fresh guest is created for the address and named
    /// in the answer's `invitedUser.id`; the requested user is left as it was.
    #[serde(default)]
    pub invitation_new_guest: bool,
}

/// Keys for the access tokens the emulator issues (ES256).
pub(crate) struct TokenKeys {
    pub encoding: jsonwebtoken::EncodingKey,
    pub decoding: jsonwebtoken::DecodingKey,
    pub kid: String,
    /// The public point, for the JWKS document.
    pub public_raw: Vec<u8>,
}

/// Everything the handlers share.
pub(crate) struct Emulator {
    pub tenant_id: String,
    pub initial_domain: String,
    pub verified_domains: Vec<String>,
    pub apps: Vec<App>,
    pub graph_resource: String,
    pub login_base: String,
    pub base_url: String,
    pub token_lifetime_secs: u64,
    pub keys: TokenKeys,
    pub dir: Mutex<Directory>,
    pub log: Mutex<Vec<LogEntry>>,
    pub faults: Mutex<Option<FaultSpec>>,
    pub throttle: Mutex<Throttle>,
    pub time_scale: Mutex<f64>,
    /// Replication-delay mode (control API): how long a newly invited user refuses writes.
    pub replication_delay: Mutex<std::time::Duration>,
    /// `allowInvitesFrom` of `/policies/authorizationPolicy`.
    pub allow_invites_from: Mutex<String>,
    /// The router itself, for `$batch` to dispatch inner requests through the same handlers.
    pub router: OnceLock<Router>,
}

impl Emulator {
    pub fn app(&self, app_id: &str) -> Option<&App> {
        self.apps
            .iter()
            .find(|a| a.app_id.eq_ignore_ascii_case(app_id))
    }

    pub fn time_scale(&self) -> f64 {
        *lock(&self.time_scale)
    }

    /// Whether `tenant` (GUID or domain) names this tenant.
    pub fn is_tenant(&self, tenant: &str) -> bool {
        tenant.eq_ignore_ascii_case(&self.tenant_id)
            || self
                .verified_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(tenant))
    }

    /// Whether `domain` is verified in this tenant (initial domain included).
    pub fn is_verified_domain(&self, domain: &str) -> bool {
        self.verified_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// Now, formatted as Graph's `DateTimeOffset` (`2024-01-02T03:04:05Z`).
pub(crate) fn now_graph() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
