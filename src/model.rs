//! The plain data every pipeline stage shares: on-premises accounts, cloud users, lifecycle
//! states and the per-account progress that the state store remembers, and the identity
//! values they are compared by: [`Anchor`], [`Dn`] (normalized, [`Dn::is_under`]),
//! [`AccountKey`] (an anchor or a DN; as text exactly the key the state store and the plan
//! hold) and [`Email`] (parsed once against Graph's address rules, case-insensitive), as
//! lldap's case-insensitive newtypes are.
//!
//! Nothing here does I/O. `source` builds [`SourceAccount`]s, `cloud` builds [`CloudUser`]s,
//! `state` loads and saves [`Progress`]; `join`, `mapping` and `plan` only read them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// How the cloud user is mastered, which decides where the external address is staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// Homed in on-premises AD and synced by Entra Connect (`onPremisesSyncEnabled == true`):
    /// `mail` is written in AD and reaches the cloud with the next sync cycle.
    Synced,
    /// Cloud-only (never synced, or no longer): the address is PATCHed through Graph.
    CloudOnly,
}

impl fmt::Display for AccountKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccountKind::Synced => "synced",
            AccountKind::CloudOnly => "cloud_only",
        })
    }
}

/// The source anchor in the form Entra ID's `onPremisesImmutableId` holds it: the standard
/// base64 encoding of the 16 bytes of `objectGUID` or `ms-DS-ConsistencyGuid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Anchor(String);

impl Anchor {
    /// The anchor of raw GUID bytes, exactly as Entra Connect computes it.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Anchor(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// The raw bytes (empty if the text is not base64, which [`Anchor::from_bytes`] never
    /// makes).
    pub fn bytes(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.0)
            .unwrap_or_default()
    }

    /// The anchor as `onPremisesImmutableId` would hold it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An anchor from its base64 text, as read back from Graph or the state store.
    pub fn from_base64(text: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?;
        Some(Anchor::from_bytes(&bytes))
    }

    /// The GUID in its usual string form (first three groups little-endian, as AD shows
    /// `objectGUID`), when the anchor is 16 bytes long.
    pub fn guid_string(&self) -> Option<String> {
        let b = base64::engine::general_purpose::STANDARD
            .decode(&self.0)
            .ok()?;
        if b.len() != 16 {
            return None;
        }
        Some(format!(
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[3],
            b[2],
            b[1],
            b[0],
            b[5],
            b[4],
            b[7],
            b[6],
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        ))
    }
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The comparison form of text that compares case-insensitively (addresses, join values,
/// DNs): `value.to_lowercase()`, borrowing `value` when that changes nothing.
pub(crate) fn lowercase(value: &str) -> Cow<'_, str> {
    // `str::to_lowercase` changes nothing when no character has another lower case (its one
    // context rule, final sigma, only concerns `Σ`, which has).
    let unchanged = value.chars().all(|c| {
        let mut lower = c.to_lowercase();
        lower.next() == Some(c) && lower.next().is_none()
    });
    if unchanged {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(value.to_lowercase())
    }
}

/// A distinguished name in comparison form: lower case, no spaces around `,` and `=`. Two
/// spellings of one DN are equal; [`Dn::is_under`] respects RDN boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dn(String);

impl Dn {
    /// The comparison form of a DN as written or read.
    pub fn new(text: &str) -> Self {
        Dn(text
            .split(',')
            .map(|rdn| {
                rdn.split('=')
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join("=")
                    .to_lowercase()
            })
            .collect::<Vec<_>>()
            .join(","))
    }

    /// The normalized text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this DN is `base` or an entry below it: `base` must match whole RDNs, so
    /// `OU=XPartners,DC=x` is not under `OU=Partners,DC=x`.
    pub fn is_under(&self, base: &Dn) -> bool {
        match self.0.strip_suffix(base.0.as_str()) {
            Some("") => true,
            Some(rest) => rest.ends_with(','),
            None => false,
        }
    }
}

impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key an account has in the state store, the plan and the journal: its anchor, or for a
/// directory without anchors its normalized DN. As text: the anchor's base64, or `dn:` and
/// the DN; it sorts (and compares) as that text does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AccountKey {
    Anchor(Anchor),
    Dn(Dn),
}

impl AccountKey {
    /// The key of an account read from the directory.
    pub fn of(account: &SourceAccount) -> Self {
        AccountKey::from_parts(account.anchor(), &account.dn)
    }

    /// The key of an account known by its anchor (if any) and its DN.
    pub fn from_parts(anchor: Option<&Anchor>, dn: &str) -> Self {
        match anchor {
            Some(a) => AccountKey::Anchor(a.clone()),
            None => AccountKey::Dn(Dn::new(dn)),
        }
    }

    /// The anchor, for an account that has one.
    pub fn anchor(&self) -> Option<&Anchor> {
        match self {
            AccountKey::Anchor(a) => Some(a),
            AccountKey::Dn(_) => None,
        }
    }

    /// The key's text, byte by byte, without building it.
    fn text(&self) -> impl Iterator<Item = u8> + '_ {
        let (prefix, rest) = match self {
            AccountKey::Anchor(a) => ("", a.as_str()),
            AccountKey::Dn(d) => (DN_KEY_PREFIX, d.as_str()),
        };
        prefix.bytes().chain(rest.bytes())
    }
}

/// What starts the key of an account without an anchor.
const DN_KEY_PREFIX: &str = "dn:";

impl Ord for AccountKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (self, other) {
            (AccountKey::Anchor(a), AccountKey::Anchor(b)) => a.as_str().cmp(b.as_str()),
            (AccountKey::Dn(a), AccountKey::Dn(b)) => a.cmp(b),
            _ => self.text().cmp(other.text()),
        }
    }
}

impl PartialOrd for AccountKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountKey::Anchor(a) => f.write_str(a.as_str()),
            AccountKey::Dn(d) => write!(f, "{DN_KEY_PREFIX}{d}"),
        }
    }
}

/// Why a text is not an [`AccountKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is neither an anchor (base64) nor `dn:` and a DN")]
pub struct BadAccountKey(String);

impl FromStr for AccountKey {
    type Err = BadAccountKey;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.strip_prefix(DN_KEY_PREFIX) {
            Some(dn) => Ok(AccountKey::Dn(Dn::new(dn))),
            None => Anchor::from_base64(text)
                .map(AccountKey::Anchor)
                .ok_or_else(|| BadAccountKey(text.to_string())),
        }
    }
}

impl Serialize for AccountKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccountKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why an address is not acceptable as `invitedUserEmailAddress`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("it is empty")]
    Empty,
    #[error("it is longer than 254 characters")]
    TooLong,
    #[error("it contains non-ASCII characters (use normalize_diacritics())")]
    NonAscii,
    #[error("it contains whitespace or control characters")]
    Whitespace,
    #[error("it must contain exactly one `@`")]
    At,
    #[error("the part before `@` is empty or longer than 64 characters")]
    LocalLength,
    #[error("the character `{0}` is not allowed")]
    Forbidden(char),
    #[error("`.` and `-` may not start or end the user name, nor `.` repeat")]
    Dots,
    #[error("`{0}` is not a valid domain")]
    Domain(String),
}

/// An external address that Graph accepts as `invitedUserEmailAddress`, kept as written and
/// compared case-insensitively (it is ASCII, so ASCII case is all the case it has).
#[derive(Debug, Clone)]
pub struct Email(String);

impl Email {
    /// Checks an address against the `invitedUserEmailAddress` rules (Graph invitation
    /// resource): none of `~ ! # $ % ^ & * ( ) + = [ ] { } \ / | ; : " < > ? ,`; `.` and `-`
    /// anywhere in the user name except first or last; `_` anywhere; plus a well-formed DNS
    /// domain.
    pub fn parse(address: &str) -> Result<Email, AddressError> {
        const FORBIDDEN: &str = "~!#$%^&*()+=[]{}\\/|;:\"<>?,";
        if address.is_empty() {
            return Err(AddressError::Empty);
        }
        if address.len() > 254 {
            return Err(AddressError::TooLong);
        }
        if !address.is_ascii() {
            return Err(AddressError::NonAscii);
        }
        if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(AddressError::Whitespace);
        }
        if let Some(c) = address.chars().find(|c| FORBIDDEN.contains(*c)) {
            return Err(AddressError::Forbidden(c));
        }
        let (local, domain) = match address.split_once('@') {
            Some((l, d)) if !d.contains('@') => (l, d),
            _ => return Err(AddressError::At),
        };
        if local.is_empty() || local.len() > 64 {
            return Err(AddressError::LocalLength);
        }
        if local.starts_with(['.', '-']) || local.ends_with(['.', '-']) || local.contains("..") {
            return Err(AddressError::Dots);
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return Err(AddressError::Domain(domain.to_string()));
        }
        Ok(Email(address.to_string()))
    }

    /// The address as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` (a directory or cloud value, trimmed) is this address.
    pub fn is(&self, text: &str) -> bool {
        text.trim().eq_ignore_ascii_case(&self.0)
    }

    /// Whether `text` is present and is this address.
    pub fn is_in(&self, text: Option<&str>) -> bool {
        text.is_some_and(|t| self.is(t))
    }

    /// Whether the address is in `domain` or one of its subdomains.
    pub fn is_in_domain(&self, domain: &str) -> bool {
        let (_, own) = self.0.rsplit_once('@').unwrap_or_default();
        let own = own.to_ascii_lowercase();
        let domain = domain.to_lowercase();
        own == domain || own.ends_with(&format!(".{domain}"))
    }
}

impl PartialEq for Email {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl Eq for Email {}

impl std::hash::Hash for Email {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_ascii_lowercase().hash(state);
    }
}

impl Ord for Email {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let lower = |e: &Email| {
            e.0.bytes()
                .map(|b| b.to_ascii_lowercase())
                .collect::<Vec<_>>()
        };
        lower(self).cmp(&lower(other))
    }
}

impl PartialOrd for Email {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Email {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Email::parse(text)
    }
}

impl Serialize for Email {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Email::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `userAccountControl` bit: the account is disabled.
pub const UAC_ACCOUNTDISABLE: u32 = 0x0002;

/// One account read from the on-premises directory, already mapped to plain data at the
/// boundary (the `source` adapter owns the LDAP details).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceAccount {
    /// Distinguished name, as the server returned it. Opaque: identity is the anchor.
    pub dn: String,
    /// base64 of `objectGUID` (AD) or of the `entryUUID` bytes (generic LDAP).
    pub object_guid: Option<Anchor>,
    /// base64 of `ms-DS-ConsistencyGuid`, when set.
    pub consistency_guid: Option<Anchor>,
    /// `sAMAccountName` (AD) or `uid` (generic LDAP).
    pub account_name: Option<String>,
    /// `userPrincipalName`, when the directory has one.
    pub user_principal_name: Option<String>,
    /// `displayName`.
    pub display_name: Option<String>,
    /// `mail` as it is now in the directory.
    pub mail: Option<String>,
    /// `userAccountControl` (AD only).
    pub user_account_control: Option<u32>,
    /// `adminCount=1`: AdminSDHolder-protected in AD. Never touched.
    pub admin_count: bool,
    /// Locked by the directory's own attribute: 389-ds `nsAccountLock: true`, OpenLDAP
    /// `pwdAccountLockedTime` present, eDirectory `loginDisabled: TRUE` (AD uses
    /// `user_account_control`).
    #[serde(default)]
    pub locked: bool,
    /// `memberOf` DNs, used for protected-group checks.
    pub member_of: Vec<String>,
    /// `pwdLastSet` (AD FILETIME) or `pwdChangedTime` (OpenLDAP), raw text; used to
    /// reconcile a password operation that a crash interrupted.
    pub password_changed: Option<String>,
    /// Every text attribute the mapping asked for, keyed by the name the mapping uses
    /// (LDAP names are case-insensitive; the adapter restores the mapping's spelling).
    pub attributes: Attributes,
    /// Exchange's recipient attributes, when the directory's schema has them and the
    /// account holds one (`None` otherwise: no Exchange, or a plain user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<ExchangeRecipient>,
}

/// What on-premises Exchange wrote on an AD account: `msExchRecipientTypeDetails`,
/// `msExchRemoteRecipientType`, whether `msExchMailboxGuid` is set, and `targetAddress`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeRecipient {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_type_details: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_recipient_type: Option<u64>,
    #[serde(default)]
    pub mailbox_guid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_address: Option<String>,
}

/// `msExchRecipientTypeDetails` values of a mailbox in the on-premises organization:
/// UserMailbox, LinkedMailbox, SharedMailbox, LegacyMailbox, RoomMailbox, EquipmentMailbox.
const LOCAL_MAILBOXES: [(u64, &str); 6] = [
    (0x1, "UserMailbox"),
    (0x2, "LinkedMailbox"),
    (0x4, "SharedMailbox"),
    (0x8, "LegacyMailbox"),
    (0x10, "RoomMailbox"),
    (0x20, "EquipmentMailbox"),
];

/// `msExchRecipientTypeDetails` values of a mailbox in Exchange Online that the on-premises
/// organization routes to (a remote mailbox).
const REMOTE_MAILBOXES: [(u64, &str); 5] = [
    (1 << 31, "RemoteUserMailbox"),
    (1 << 33, "RemoteRoomMailbox"),
    (1 << 34, "RemoteEquipmentMailbox"),
    (1 << 35, "RemoteSharedMailbox"),
    (1 << 38, "RemoteTeamMailbox"),
];

/// `msExchRecipientTypeDetails` of a mail user: mail-enabled, no mailbox.
pub const MAIL_USER: u64 = 0x80;

/// `msExchRemoteRecipientType` bits that say a remote mailbox exists: ProvisionMailbox,
/// Migrated, RoomMailbox, EquipmentMailbox (both: SharedMailbox). DeprovisionMailbox (8)
/// says it is being removed.
const REMOTE_MAILBOX_BITS: u64 = 0x1 | 0x4 | 0x20 | 0x40;
const REMOTE_DEPROVISION: u64 = 0x8;

impl ExchangeRecipient {
    /// The mailbox this account has in Exchange, on-premises or remote, named as Exchange
    /// names its kind; `None` for a plain user or a mail user (see docs/mapping.md, "On-premises
    /// mailboxes"). The recipient type decides when it is set; without it the remote
    /// recipient type, then the mailbox GUID, then a `targetAddress` in Exchange Online's
    /// routing domain (`*.mail.onmicrosoft.com`) tell a mailbox.
    pub fn mailbox(&self) -> Option<String> {
        if let Some(details) = self.recipient_type_details.filter(|d| *d != 0) {
            let named = LOCAL_MAILBOXES
                .iter()
                .map(|(bit, name)| (bit, format!("on-premises {name}")))
                .chain(
                    REMOTE_MAILBOXES
                        .iter()
                        .map(|(bit, name)| (bit, format!("remote mailbox ({name})"))),
                )
                .find(|(bit, _)| details & **bit != 0)
                .map(|(_, name)| name);
            return named;
        }
        if let Some(remote) = self.remote_recipient_type
            && remote & REMOTE_MAILBOX_BITS != 0
            && remote & REMOTE_DEPROVISION == 0
        {
            return Some(format!(
                "remote mailbox (msExchRemoteRecipientType {remote})"
            ));
        }
        if self.mailbox_guid {
            return Some("mailbox (msExchMailboxGuid is set)".to_string());
        }
        let routing = self.target_address.as_deref().and_then(|t| {
            let address = t.trim();
            let address = address
                .get(..5)
                .filter(|p| p.eq_ignore_ascii_case("smtp:"))
                .map_or(address, |_| address.get(5..).unwrap_or(""));
            address
                .to_ascii_lowercase()
                .ends_with(".mail.onmicrosoft.com")
                .then(|| address.to_string())
        });
        routing.map(|a| format!("remote mailbox (targetAddress {a})"))
    }
}

impl SourceAccount {
    /// The anchor Entra Connect would use: `ms-DS-ConsistencyGuid` when set, else `objectGUID`.
    pub fn anchor(&self) -> Option<&Anchor> {
        self.consistency_guid.as_ref().or(self.object_guid.as_ref())
    }

    /// Whether the directory marks the account disabled or locked: AD's
    /// `userAccountControl` bit, or the flavour's lock attribute ([`SourceAccount::locked`]).
    pub fn disabled(&self) -> bool {
        self.locked
            || self
                .user_account_control
                .is_some_and(|uac| uac & UAC_ACCOUNTDISABLE != 0)
    }

    /// The first value of an attribute, by the mapping's name (case-insensitive).
    pub fn first(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, mut v)| v.next())
    }
}

/// The text attributes of an account: a map from name to values, sorted by name, that
/// serializes exactly as a `BTreeMap<String, Vec<String>>` does (`{"name": ["value", ...]}`).
///
/// It is packed: every name and value in one string, and one table of where each ends,
/// instead of a tree node, a key, a list and a string per value. At 100,000 accounts that is
/// about 100 MB less. It is built once per entry read and then only read; the changes it
/// allows rebuild it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Each entry's name, then its values, entry after entry.
    text: Box<str>,
    /// Per entry: where its name ends in `text`, how many values it has, where each ends.
    layout: Box<[u32]>,
}

impl Attributes {
    /// No attribute.
    pub fn new() -> Self {
        Attributes::default()
    }

    /// How many attributes there are.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there is no attribute.
    pub fn is_empty(&self) -> bool {
        self.layout.is_empty()
    }

    /// Every attribute with its values, sorted by name.
    pub fn iter(&self) -> AttributeIter<'_> {
        AttributeIter {
            text: &self.text,
            layout: &self.layout,
            at: 0,
        }
    }

    /// The values of the attribute named exactly `name`.
    pub fn get(&self, name: &str) -> Option<Values<'_>> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Sets the values of `name`, replacing those it had.
    pub fn insert(&mut self, name: String, values: Vec<String>) {
        let mut map = self.to_map();
        map.insert(name, values);
        *self = Attributes::from(map);
    }

    /// Adds values to `name` (which need not exist yet), after those it has.
    pub fn append(&mut self, name: &str, values: impl IntoIterator<Item = String>) {
        let mut map = self.to_map();
        map.entry(name.to_string()).or_default().extend(values);
        *self = Attributes::from(map);
    }

    /// Removes `name` and returns its values.
    pub fn remove(&mut self, name: &str) -> Option<Vec<String>> {
        let mut map = self.to_map();
        let removed = map.remove(name);
        *self = Attributes::from(map);
        removed
    }

    fn to_map(&self) -> BTreeMap<String, Vec<String>> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string).collect()))
            .collect()
    }
}

/// An offset into [`Attributes::text`]. An LDAP entry never nears 4 GiB (AD answers at most
/// `MaxReceiveBuffer`, 10 MB by default; OpenLDAP reads at most `sockbuf_max_incoming_auth`,
/// 4 MB by default), and attributes are only built from entries read, or from what was
/// serialized from them.
#[allow(clippy::expect_used)]
fn offset(n: usize) -> u32 {
    u32::try_from(n).expect("an account's attribute text is far below 4 GiB")
}

impl From<BTreeMap<String, Vec<String>>> for Attributes {
    fn from(map: BTreeMap<String, Vec<String>>) -> Self {
        let size: usize = map
            .iter()
            .map(|(k, v)| k.len() + v.iter().map(String::len).sum::<usize>())
            .sum();
        let mut text = String::with_capacity(size);
        let mut layout = Vec::with_capacity(map.values().map(|v| 2 + v.len()).sum());
        for (name, values) in &map {
            text.push_str(name);
            layout.push(offset(text.len()));
            layout.push(offset(values.len()));
            for v in values {
                text.push_str(v);
                layout.push(offset(text.len()));
            }
        }
        Attributes {
            text: text.into_boxed_str(),
            layout: layout.into_boxed_slice(),
        }
    }
}

impl FromIterator<(String, Vec<String>)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (String, Vec<String>)>>(iter: I) -> Self {
        Attributes::from(iter.into_iter().collect::<BTreeMap<_, _>>())
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, Vec<String>>::deserialize(deserializer).map(Attributes::from)
    }
}

/// The attributes of an [`Attributes`], with their values.
#[derive(Clone)]
pub struct AttributeIter<'a> {
    text: &'a str,
    layout: &'a [u32],
    /// Where the next name starts in `text`.
    at: usize,
}

impl<'a> Iterator for AttributeIter<'a> {
    type Item = (&'a str, Values<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let (&name_end, rest) = self.layout.split_first()?;
        let (&count, rest) = rest.split_first()?;
        let (ends, rest) = rest.split_at(rest.len().min(count as usize));
        let name_end = name_end as usize;
        let name = self.text.get(self.at..name_end).unwrap_or_default();
        self.at = ends.last().map_or(name_end, |e| *e as usize);
        self.layout = rest;
        Some((
            name,
            Values {
                text: self.text,
                ends,
                at: name_end,
            },
        ))
    }
}

/// The values of one attribute of an [`Attributes`].
#[derive(Clone)]
pub struct Values<'a> {
    text: &'a str,
    ends: &'a [u32],
    /// Where the next value starts in `text`.
    at: usize,
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let (&end, rest) = self.ends.split_first()?;
        let value = self.text.get(self.at..end as usize).unwrap_or_default();
        self.at = end as usize;
        self.ends = rest;
        Some(value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.ends.len(), Some(self.ends.len()))
    }
}

impl ExactSizeIterator for Values<'_> {}

impl fmt::Debug for Values<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

impl Serialize for Values<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.clone())
    }
}

/// One Entra ID user as Graph returned it (only the properties b2bsync selects).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudUser {
    /// Object id (GUID).
    pub id: String,
    pub user_principal_name: String,
    pub display_name: Option<String>,
    pub mail: Option<String>,
    pub other_mails: Vec<String>,
    pub proxy_addresses: Vec<String>,
    /// `Member` or `Guest`.
    pub user_type: Option<String>,
    pub account_enabled: Option<bool>,
    /// `true`: synced by Entra Connect; `false`: was synced, no longer; `None`: never synced.
    pub on_premises_sync_enabled: Option<bool>,
    pub on_premises_immutable_id: Option<String>,
    /// Written by Entra Connect's default rule; its presence blocks conversion.
    pub on_premises_user_principal_name: Option<String>,
    pub on_premises_sam_account_name: Option<String>,
    pub employee_id: Option<String>,
    /// `PendingAcceptance`, `Accepted`, or `None` when never invited.
    pub external_user_state: Option<String>,
    pub external_user_state_change: Option<String>,
    /// `None` for a regular account, `Invitation` for a guest created by an invitation.
    pub creation_type: Option<String>,
    /// The user has an Exchange mailbox (an Exchange service plan is provisioned).
    pub has_mailbox: bool,
    /// Directory roles the user holds (display names).
    pub roles: Vec<String>,
    /// `signInActivity.lastSuccessfulSignInDateTime` (RFC 3339, validated), read only when
    /// `[policy] randomize_password = "after_sign_in"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_sign_in: Option<String>,
}

impl CloudUser {
    /// Synced when Entra Connect masters the object now.
    pub fn kind(&self) -> AccountKind {
        if self.on_premises_sync_enabled == Some(true) {
            AccountKind::Synced
        } else {
            AccountKind::CloudOnly
        }
    }

    /// Whether the user shows `address` in `mail` or `otherMails` (case-insensitive).
    pub fn shows_address(&self, address: &str) -> bool {
        self.mail
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(address))
            || self
                .other_mails
                .iter()
                .any(|m| m.eq_ignore_ascii_case(address))
    }
}

/// How people know an account, the one way b2bsync names it everywhere (plan review, log lines,
/// reports, `explain`): a human name (the cloud user's UPN when the account is joined to one,
/// else `sAMAccountName`/`uid`) plus the DN, `name (DN)`. A cloud-only account is named by its
/// UPN, never by its object id alone. Without either name it falls back to the DN, then to the
/// state-store key. The values come from the directory and the tenant: whoever shows the name
/// on a terminal or in a page still escapes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountName<'a> {
    /// The cloud user's `userPrincipalName`.
    pub upn: Option<&'a str>,
    /// `sAMAccountName` (AD) or `uid` (generic LDAP).
    pub account_name: Option<&'a str>,
    pub dn: Option<&'a str>,
    /// The state-store key: the last resort.
    pub key: &'a str,
}

impl<'a> AccountName<'a> {
    /// How people know the account `key` of the state store, from its DN and the names the
    /// store keeps for it.
    pub fn stored(
        key: &'a str,
        dn: Option<&'a str>,
        names: &'a std::collections::BTreeMap<String, Names>,
    ) -> Self {
        let n = names.get(key);
        AccountName {
            upn: n.and_then(|n| n.upn.as_deref()),
            account_name: n.and_then(|n| n.account_name.as_deref()),
            dn,
            key,
        }
    }

    /// The human part alone: the UPN, else the account name (`None` without either).
    pub fn human(&self) -> Option<&'a str> {
        self.upn
            .filter(|u| !u.is_empty())
            .or(self.account_name.filter(|n| !n.is_empty()))
    }
}

impl fmt::Display for AccountName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dn = self.dn.filter(|d| !d.is_empty());
        match (self.human(), dn) {
            (Some(name), Some(dn)) => write!(f, "{name} ({dn})"),
            (Some(name), None) => f.write_str(name),
            (None, Some(dn)) => f.write_str(dn),
            (None, None) => f.write_str(self.key),
        }
    }
}

/// The names the state store keeps of an account, beside its DN: what [`AccountName`] shows
/// and what `explain` finds an account by.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    /// `sAMAccountName` (AD) or `uid` (generic LDAP).
    pub account_name: Option<String>,
    /// The joined cloud user's `userPrincipalName`.
    pub upn: Option<String>,
}

/// Where an account stands in the lifecycle (docs/architecture.md, "The lifecycle of one
/// account"). Ordered: an account only ever moves forward.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// In scope on-premises, no cloud user joined (or several: a conflict).
    #[default]
    Unmatched,
    /// A precondition fails; reported with the reason and the fix.
    Blocked,
    /// Joined; the cloud user does not show the external address yet.
    NeedsAddress,
    /// Synced user: AD holds the address, the cloud does not yet.
    AwaitingSync,
    /// The cloud user shows the address; preconditions hold.
    Ready,
    /// Invitation sent.
    Invited,
    /// `externalUserState == Accepted`.
    Accepted,
    /// Converted and the on-premises password randomized (or not applicable).
    Done,
    /// No longer in the directory's scope (deleted, moved out of the base DNs or filtered
    /// out): shown by reports from the state store's `gone_at`; the plan never sees such an
    /// account, so nothing is written for it. Never stored as a state.
    Gone,
}

impl Lifecycle {
    /// The snake_case name used in plans, reports and the state store.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Unmatched => "unmatched",
            Lifecycle::Blocked => "blocked",
            Lifecycle::NeedsAddress => "needs_address",
            Lifecycle::AwaitingSync => "awaiting_sync",
            Lifecycle::Ready => "ready",
            Lifecycle::Invited => "invited",
            Lifecycle::Accepted => "accepted",
            Lifecycle::Done => "done",
            Lifecycle::Gone => "gone",
        }
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the state store remembers about one account between runs, keyed by its anchor
/// (or DN when the directory has no anchor). Holds no secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub state: Lifecycle,
    /// The cloud user joined last time.
    pub cloud_id: Option<String>,
    /// The external address staged (written to AD `mail` or the cloud's `otherMails`).
    pub address: Option<String>,
    /// When the address was staged.
    pub address_staged_at: Option<jiff::Timestamp>,
    /// Invitation id and time of the last invitation sent.
    pub invitation_id: Option<String>,
    pub invited_at: Option<jiff::Timestamp>,
    /// How many invitations were sent (first plus re-invitations).
    pub invitations_sent: u32,
    /// When the on-premises password was randomized.
    pub password_randomized_at: Option<jiff::Timestamp>,
    /// When the cloud user's sign-in sessions were revoked (after the randomization).
    pub sessions_revoked_at: Option<jiff::Timestamp>,
    /// When the invitation was accepted: the cloud user's `externalUserStateChangeDateTime`
    /// when plausible (not in the future, not before the invitation), else when b2bsync first
    /// read `Accepted`.
    pub accepted_at: Option<jiff::Timestamp>,
    /// An invitation was answered with something other than this account's conversion
    /// (what came back): the account stays blocked until an admin clears it.
    #[serde(default)]
    pub invitation_mismatch: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_named_by_a_human_name_and_their_dn() {
        let name = |upn, account_name, dn| {
            AccountName {
                upn,
                account_name,
                dn,
                key: "k1",
            }
            .to_string()
        };
        const DN: &str = "CN=Ana Adams,OU=Partners,DC=corp,DC=example";
        let dn = Some(DN);
        assert_eq!(
            name(Some("ana@corp.example"), Some("p.adams"), dn),
            "ana@corp.example (CN=Ana Adams,OU=Partners,DC=corp,DC=example)"
        );
        assert_eq!(
            name(None, Some("p.adams"), dn),
            "p.adams (CN=Ana Adams,OU=Partners,DC=corp,DC=example)"
        );
        assert_eq!(
            name(Some("wei@corp.example"), None, None),
            "wei@corp.example"
        );
        assert_eq!(name(None, Some(""), dn), DN);
        assert_eq!(name(None, None, Some("")), "k1");
    }

    #[test]
    fn anchor_matches_entra_connect_encoding() {
        // objectGUID {a1b2c3d4-e5f6-0718-293a-4b5c6d7e8f90} as AD stores it (mixed endian).
        let bytes = [
            0xd4, 0xc3, 0xb2, 0xa1, 0xf6, 0xe5, 0x18, 0x07, 0x29, 0x3a, 0x4b, 0x5c, 0x6d, 0x7e,
            0x8f, 0x90,
        ];
        let anchor = Anchor::from_bytes(&bytes);
        assert_eq!(anchor.as_str(), "1MOyofblGAcpOktcbX6PkA==");
        assert_eq!(
            anchor.guid_string().as_deref(),
            Some("a1b2c3d4-e5f6-0718-293a-4b5c6d7e8f90")
        );
        assert_eq!(Anchor::from_base64(anchor.as_str()), Some(anchor));
    }

    proptest::proptest! {
        #[test]
        fn lowercase_equals_to_lowercase(s in "\\PC{0,24}") {
            let lower = lowercase(&s);
            proptest::prop_assert_eq!(lower.as_ref(), s.to_lowercase());
        }
    }

    #[test]
    fn dn_is_under_whole_rdns_only() {
        let base = Dn::new("OU=Partners,DC=corp,DC=example");
        assert!(Dn::new("ou=partners, dc=corp, dc=example").is_under(&base));
        assert!(Dn::new("CN=Ana,OU=Partners,DC=corp,DC=example").is_under(&base));
        assert!(!Dn::new("CN=Ana,OU=XPartners,DC=corp,DC=example").is_under(&base));
        // An RDN value may hold `=` unescaped (RFC 4514); comparing the text's end alone
        // (what `pipeline::reads::confirm` did) took this one for an entry under the base.
        let odd = Dn::new("CN=Ana,OU=Old OU=Partners,DC=corp,DC=example");
        assert!(odd.as_str().ends_with(base.as_str()));
        assert!(!odd.is_under(&base));
        assert!(!base.is_under(&Dn::new("CN=Ana,OU=Partners,DC=corp,DC=example")));
    }

    #[test]
    fn account_key_reads_back_its_text_and_sorts_as_it() {
        let anchor = AccountKey::Anchor(Anchor::from_bytes(&[0x75; 16]));
        let low = AccountKey::Anchor(Anchor::from_bytes(&[0x10; 16]));
        let dn = AccountKey::from_parts(None, "CN=Bob , OU=P,DC=x");
        assert_eq!(dn.to_string(), "dn:cn=bob,ou=p,dc=x");
        for key in [&anchor, &low, &dn] {
            assert_eq!(&key.to_string().parse::<AccountKey>().unwrap(), key);
            let json = serde_json::to_string(key).unwrap();
            assert_eq!(json, format!("\"{key}\""));
            assert_eq!(&serde_json::from_str::<AccountKey>(&json).unwrap(), key);
        }
        let mut keys = [anchor.clone(), dn.clone(), low.clone()];
        keys.sort();
        let mut texts: Vec<String> = [&anchor, &dn, &low].iter().map(|k| k.to_string()).collect();
        texts.sort();
        assert_eq!(
            keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            texts
        );
        assert!("not base64!".parse::<AccountKey>().is_err());
    }

    #[test]
    fn email_is_parsed_once_and_compares_without_case() {
        let e = Email::parse("Ana.Lopez@Fabrikam.example").unwrap();
        assert_eq!(e, Email::parse("ana.lopez@fabrikam.example").unwrap());
        assert_eq!(e.to_string(), "Ana.Lopez@Fabrikam.example");
        assert!(e.is(" ana.lopez@FABRIKAM.example "));
        assert!(e.is_in_domain("fabrikam.EXAMPLE"));
        assert!(!e.is_in_domain("brikam.example"));
        assert_eq!(Email::parse("a b@x.example"), Err(AddressError::Whitespace));
        assert_eq!(Email::parse("a@b@x.example"), Err(AddressError::At));
        assert_eq!(Email::parse(".a@x.example"), Err(AddressError::Dots));
        assert_eq!(
            Email::parse("a@localhost"),
            Err(AddressError::Domain("localhost".into()))
        );
    }

    #[test]
    fn lifecycle_only_moves_forward_in_order() {
        assert!(Lifecycle::Ready < Lifecycle::Invited);
        assert!(Lifecycle::Accepted < Lifecycle::Done);
        assert_eq!(Lifecycle::NeedsAddress.as_str(), "needs_address");
    }

    fn map(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|x| x.to_string()).collect()))
            .collect()
    }

    #[test]
    fn attributes_read_and_change_like_a_map() {
        let mut a = Attributes::from(map(&[
            ("uid", &["ana"]),
            ("memberOf", &["CN=A", "CN=B"]),
            ("empty", &[]),
        ]));
        assert_eq!(a.len(), 3);
        let names: Vec<&str> = a.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["empty", "memberOf", "uid"]);
        assert_eq!(a.get("empty").map(|v| v.len()), Some(0));
        assert_eq!(
            a.get("memberOf").unwrap().collect::<Vec<_>>(),
            ["CN=A", "CN=B"]
        );
        assert!(a.get("memberof").is_none(), "get is exact, as a map's");
        a.append("memberOf", ["CN=C".to_string()]);
        a.append("mail", ["ana@x.example".to_string()]);
        a.insert("uid".into(), vec!["bob".into()]);
        assert_eq!(a.remove("empty"), Some(vec![]));
        assert_eq!(
            a,
            Attributes::from(map(&[
                ("mail", &["ana@x.example"]),
                ("memberOf", &["CN=A", "CN=B", "CN=C"]),
                ("uid", &["bob"]),
            ]))
        );
        assert_eq!(
            format!("{a:?}"),
            r#"{"mail": ["ana@x.example"], "memberOf": ["CN=A", "CN=B", "CN=C"], "uid": ["bob"]}"#
        );
    }

    #[test]
    fn source_account_first_value_is_case_insensitive() {
        let account = SourceAccount {
            attributes: Attributes::from(map(&[("otherMailbox", &["a@x.example", "b@x"])])),
            ..SourceAccount::default()
        };
        assert_eq!(account.first("othermailbox"), Some("a@x.example"));
        assert_eq!(account.first("mail"), None);
    }

    proptest::proptest! {
        /// The JSON is the map's, both ways, so stored snapshots read back the same.
        #[test]
        fn attributes_serialize_as_the_map_they_pack(
            m in proptest::collection::btree_map(
                "[a-zA-Z-]{0,8}",
                proptest::collection::vec("\\PC{0,12}", 0..4),
                0..6,
            )
        ) {
            let packed = Attributes::from(m.clone());
            let json = serde_json::to_string(&packed).unwrap();
            proptest::prop_assert_eq!(&json, &serde_json::to_string(&m).unwrap());
            let back: Attributes = serde_json::from_str(&json).unwrap();
            proptest::prop_assert_eq!(&back, &packed);
            let unpacked: BTreeMap<String, Vec<String>> = packed
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string).collect()))
                .collect();
            proptest::prop_assert_eq!(unpacked, m);
        }
    }

    #[test]
    fn cloud_user_kind_and_address() {
        let mut u = CloudUser {
            on_premises_sync_enabled: Some(true),
            other_mails: vec!["Ana@Fabrikam.example".into()],
            ..CloudUser::default()
        };
        assert_eq!(u.kind(), AccountKind::Synced);
        assert!(u.shows_address("ana@fabrikam.example"));
        u.on_premises_sync_enabled = Some(false);
        assert_eq!(u.kind(), AccountKind::CloudOnly);
    }
}
