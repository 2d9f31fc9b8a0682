//! What an LDAP server can do, decided once at connect from its rootDSE and its subschema:
//! which change mark an incremental read may use (AD's USN, OpenLDAP's `entryCSN`,
//! `modifyTimestamp` with an overlap, or none), which attribute anchors an account, which
//! attributes say an account is locked, and whether `memberOf` can be trusted. A mark
//! attribute the schema lacks is never used: a filter on it matches nothing, silently.
//!
//! Pure: [`detect`] turns [`ServerFacts`] (read by the ldap3 adapter) into [`Capabilities`].

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use crate::model::Anchor;

/// What the rootDSE and the subschema said, as plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFacts {
    pub vendor_name: Option<String>,
    pub vendor_version: Option<String>,
    /// AD's `LDAP_CAP_ACTIVE_DIRECTORY_OID` is in `supportedCapabilities`.
    pub active_directory: bool,
    pub supported_controls: Vec<String>,
    pub supported_extensions: Vec<String>,
    pub naming_contexts: Vec<String>,
    /// The rootDSE's `changelog` (389-ds's retro changelog, when its plugin is on).
    pub changelog: Option<String>,
    /// The rootDSE's `schemaNamingContext` (AD): where the schema's definitions are.
    pub schema_naming_context: Option<String>,
    /// Names of every attribute type in the subschema, lower-cased; empty when the
    /// subschema could not be read.
    pub schema_attributes: BTreeSet<String>,
}

impl ServerFacts {
    /// The facts in a rootDSE (attribute name and values, any case) and the subschema's
    /// `attributeTypes` values.
    pub fn from_entries<'a>(
        root: impl IntoIterator<Item = (&'a str, &'a [String])>,
        attribute_types: impl IntoIterator<Item = &'a str>,
    ) -> ServerFacts {
        let mut facts = ServerFacts::default();
        for (name, values) in root {
            let first = || values.first().cloned();
            match name.to_ascii_lowercase().as_str() {
                "vendorname" => facts.vendor_name = first(),
                "vendorversion" => facts.vendor_version = first(),
                "supportedcapabilities" => {
                    facts.active_directory |= values.iter().any(|v| v == AD_CAPABILITY)
                }
                "supportedcontrol" => facts.supported_controls.extend(values.iter().cloned()),
                "supportedextension" => facts.supported_extensions.extend(values.iter().cloned()),
                "namingcontexts" => facts.naming_contexts.extend(values.iter().cloned()),
                "changelog" => facts.changelog = first(),
                "schemanamingcontext" => facts.schema_naming_context = first(),
                _ => {}
            }
        }
        for definition in attribute_types {
            facts.add_attribute_type(definition);
        }
        facts
    }

    pub(crate) fn has(&self, attribute: &str) -> bool {
        self.schema_attributes
            .contains(&attribute.to_ascii_lowercase())
    }

    /// Adds the names of one `attributeTypes` value (`( 1.2.3 NAME 'a' ...` or
    /// `NAME ( 'a' 'b' )`). Anything unparseable is skipped.
    pub fn add_attribute_type(&mut self, definition: &str) {
        let Some(at) = definition.find("NAME") else {
            return;
        };
        let rest = definition
            .get(at.saturating_add(4)..)
            .unwrap_or("")
            .trim_start();
        let names = if let Some(list) = rest.strip_prefix('(') {
            list.split(')').next().unwrap_or("")
        } else {
            rest.split_whitespace().next().unwrap_or("")
        };
        for name in names.split_whitespace() {
            let name = name.trim_matches('\'');
            if !name.is_empty() && name.len() <= 128 {
                self.schema_attributes.insert(name.to_ascii_lowercase());
            }
        }
    }
}

/// How an incremental read asks for what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeMark {
    /// Active Directory: `uSNChanged` above the DC's `highestCommittedUSN`.
    Usn,
    /// OpenLDAP: `entryCSN` at or after the last mark.
    EntryCsn,
    /// `modifyTimestamp` at or after the last mark, which reaches back by the overlap (the
    /// timestamp has whole seconds only, and writes in flight commit late).
    ModifyTimestamp { overlap: Duration },
    /// No usable mark: every read is full.
    None { reason: String },
}

impl ChangeMark {
    /// The attribute filtered on, if any.
    pub fn attribute(&self) -> Option<&'static str> {
        match self {
            ChangeMark::Usn => Some("uSNChanged"),
            ChangeMark::EntryCsn => Some("entryCSN"),
            ChangeMark::ModifyTimestamp { .. } => Some("modifyTimestamp"),
            ChangeMark::None { .. } => None,
        }
    }
}

impl fmt::Display for ChangeMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangeMark::Usn => f.write_str("by uSNChanged on the same domain controller"),
            ChangeMark::EntryCsn => f.write_str("by entryCSN"),
            ChangeMark::ModifyTimestamp { overlap } => {
                write!(f, "by modifyTimestamp with {} s overlap", overlap.as_secs())
            }
            ChangeMark::None { reason } => write!(f, "off, every read is full: {reason}"),
        }
    }
}

/// An attribute that names an account for good, across renames and moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum AnchorName {
    /// AD `objectGUID` (16 bytes).
    ObjectGuid,
    /// AD `ms-DS-ConsistencyGuid`, falling back to `objectGUID`.
    ConsistencyGuid,
    /// RFC 4530 `entryUUID` (OpenLDAP; 389-ds with its entryuuid plugin).
    EntryUuid,
    /// 389-ds `nsUniqueId` (every entry; `xxxxxxxx-xxxxxxxx-xxxxxxxx-xxxxxxxx`).
    NsUniqueId,
    /// FreeIPA `ipaUniqueID` (a UUID, on IPA's own objects).
    IpaUniqueId,
}

impl AnchorName {
    pub const ALL: [AnchorName; 5] = [
        AnchorName::ObjectGuid,
        AnchorName::ConsistencyGuid,
        AnchorName::EntryUuid,
        AnchorName::NsUniqueId,
        AnchorName::IpaUniqueId,
    ];

    /// The attribute's name as servers spell it.
    pub fn attribute(self) -> &'static str {
        match self {
            AnchorName::ObjectGuid => "objectGUID",
            AnchorName::ConsistencyGuid => "ms-DS-ConsistencyGuid",
            AnchorName::EntryUuid => "entryUUID",
            AnchorName::NsUniqueId => "nsUniqueId",
            AnchorName::IpaUniqueId => "ipaUniqueID",
        }
    }

    /// By name, case-insensitively.
    pub fn parse(name: &str) -> Option<AnchorName> {
        AnchorName::ALL
            .into_iter()
            .find(|a| a.attribute().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether this anchor is AD's (binary GUIDs) rather than a generic server's (text).
    pub fn is_active_directory(self) -> bool {
        matches!(self, AnchorName::ObjectGuid | AnchorName::ConsistencyGuid)
    }

    /// The anchor of a text value of this attribute: 16 bytes from a UUID (`entryUUID`,
    /// `ipaUniqueID`) or from `nsUniqueId`'s 32 hex digits. `None` for anything else.
    pub fn from_text(self, value: &str) -> Option<Anchor> {
        let hex: String = value.trim().chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let bytes: Vec<u8> = (0..16)
            .filter_map(|i| {
                let at = i * 2;
                u8::from_str_radix(hex.get(at..at + 2)?, 16).ok()
            })
            .collect();
        (bytes.len() == 16).then(|| Anchor::from_bytes(&bytes))
    }

    /// The text an equality filter on this attribute needs for `anchor` (the inverse of
    /// [`AnchorName::from_text`]); `None` when the anchor is not 16 bytes.
    pub fn to_text(self, anchor: &Anchor) -> Option<String> {
        let bytes = anchor.bytes();
        if bytes.len() != 16 {
            return None;
        }
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let part = |r: std::ops::Range<usize>| hex.get(r).unwrap_or("").to_string();
        Some(match self {
            AnchorName::NsUniqueId => format!(
                "{}-{}-{}-{}",
                part(0..8),
                part(8..16),
                part(16..24),
                part(24..32)
            ),
            _ => format!(
                "{}-{}-{}-{}-{}",
                part(0..8),
                part(8..12),
                part(12..16),
                part(16..20),
                part(20..32)
            ),
        })
    }
}

impl fmt::Display for AnchorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.attribute())
    }
}

/// Attributes that say an account may not sign in, per flavour.
pub const LOCK_ATTRIBUTES: &[&str] = &[
    "userAccountControl",
    "nsAccountLock",
    "pwdAccountLockedTime",
    "loginDisabled",
];

/// What b2bsync will do with this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// `vendorName vendorVersion`, or what the server is taken for.
    pub vendor: String,
    /// Active Directory (or Samba AD): `unicodePwd`, `objectGUID`, `userAccountControl`.
    pub active_directory: bool,
    pub change_mark: ChangeMark,
    /// 389-ds's retro changelog, when the rootDSE names one (detected, not read from).
    pub changelog: Option<String>,
    /// The anchor attribute read when the configuration names none; `None` keys accounts
    /// by DN.
    pub anchor: Option<AnchorName>,
    /// Which of [`LOCK_ATTRIBUTES`] the server has.
    pub lock_attributes: Vec<&'static str>,
    /// `memberOf` is in the schema (whether it is maintained shows only on entries).
    pub member_of_in_schema: bool,
    /// RFC 3062 password modify is offered.
    pub password_modify: bool,
    /// Which of Exchange's recipient attributes ([`super::exchange::ATTRIBUTES`]) the
    /// schema has (AD only; empty without Exchange's schema).
    pub exchange_attributes: Vec<&'static str>,
}

/// `LDAP_CAP_ACTIVE_DIRECTORY_OID`: advertised in the rootDSE by AD and Samba AD.
pub const AD_CAPABILITY: &str = "1.2.840.113556.1.4.800";

/// RFC 3062 password modify extended operation.
pub const PASSWORD_MODIFY_OID: &str = "1.3.6.1.4.1.4203.1.11.1";

/// Decides what to use. `overlap` is how far a `modifyTimestamp` read reaches back.
pub fn detect(facts: &ServerFacts, overlap: Duration) -> Capabilities {
    let vendor = match (&facts.vendor_name, &facts.vendor_version) {
        (Some(n), Some(v)) => format!("{n} {v}"),
        (Some(n), None) => n.clone(),
        (None, Some(v)) => v.clone(),
        (None, None) if facts.active_directory => "Active Directory".to_string(),
        (None, None) => "unknown vendor".to_string(),
    };
    let password_modify = facts
        .supported_extensions
        .iter()
        .any(|o| o == PASSWORD_MODIFY_OID);
    if facts.active_directory {
        return Capabilities {
            vendor,
            active_directory: true,
            change_mark: ChangeMark::Usn,
            changelog: None,
            anchor: Some(AnchorName::ConsistencyGuid),
            lock_attributes: vec!["userAccountControl"],
            member_of_in_schema: true,
            password_modify,
            exchange_attributes: super::exchange::ATTRIBUTES
                .into_iter()
                .filter(|a| facts.has(a))
                .collect(),
        };
    }
    let no_schema = facts.schema_attributes.is_empty();
    let change_mark = if facts.has("entryCSN") {
        ChangeMark::EntryCsn
    } else if facts.has("modifyTimestamp") {
        ChangeMark::ModifyTimestamp { overlap }
    } else if no_schema {
        ChangeMark::None {
            reason: "the server's subschema could not be read, so no change mark is known to exist"
                .into(),
        }
    } else {
        ChangeMark::None {
            reason: "the schema has neither entryCSN nor modifyTimestamp".into(),
        }
    };
    let anchor = [
        AnchorName::NsUniqueId,
        AnchorName::EntryUuid,
        AnchorName::IpaUniqueId,
    ]
    .into_iter()
    .find(|a| facts.has(a.attribute()));
    let lock_attributes = LOCK_ATTRIBUTES
        .iter()
        .copied()
        .filter(|a| facts.has(a))
        .collect();
    Capabilities {
        vendor,
        active_directory: false,
        change_mark,
        changelog: facts.changelog.clone(),
        anchor,
        lock_attributes,
        member_of_in_schema: facts.has("memberOf"),
        password_modify,
        exchange_attributes: Vec::new(),
    }
}

impl Capabilities {
    /// Whether the server has this attribute as an anchor (AD has both of its own).
    pub fn offers_anchor(&self, facts: &ServerFacts, anchor: AnchorName) -> bool {
        if facts.active_directory {
            return anchor.is_active_directory();
        }
        !anchor.is_active_directory() && facts.has(anchor.attribute())
    }

    /// The lines `check` prints: what was found and what follows from it. `member_of` is
    /// whether `memberOf` is evidently maintained (`None`: not known).
    pub fn table(&self, member_of: Option<bool>) -> Vec<(&'static str, String)> {
        let mut rows = vec![
            ("server", self.vendor.clone()),
            ("incremental reads", self.change_mark.to_string()),
        ];
        if let Some(c) = &self.changelog {
            rows.push((
                "changelog",
                format!("retro changelog at `{c}` (not read from: modifyTimestamp is used)"),
            ));
        }
        rows.push((
            "anchor",
            match self.anchor {
                Some(a) => a.to_string(),
                None => "none: accounts are keyed by DN".into(),
            },
        ));
        rows.push((
            "disabled",
            if self.lock_attributes.is_empty() {
                "no lock attribute in the schema: no account reads as disabled".into()
            } else {
                format!("by {}", self.lock_attributes.join(", "))
            },
        ));
        rows.push((
            "protected groups",
            match member_of {
                Some(true) => "by memberOf".into(),
                _ if !self.member_of_in_schema => {
                    "resolved by reading the groups' members, since memberOf is not in the schema"
                        .into()
                }
                Some(false) => {
                    "resolved by reading the groups' members, since memberOf is not maintained"
                        .into()
                }
                None => {
                    "resolved by reading the groups' members, since memberOf may not be maintained"
                        .into()
                }
            },
        ));
        if self.active_directory {
            rows.push((
                "exchange",
                if self.exchange_attributes.is_empty() {
                    "no Exchange attributes in the schema: on-premises mailboxes are not looked for"
                        .into()
                } else {
                    format!(
                        "on-premises and remote mailboxes are blocked (reads {})",
                        self.exchange_attributes.join(", ")
                    )
                },
            ));
        }
        rows.push((
            "password reset",
            if self.active_directory {
                "unicodePwd replace".into()
            } else if self.password_modify {
                "RFC 3062 password modify".into()
            } else {
                "not offered (no RFC 3062 password modify)".into()
            },
        ));
        rows
    }
}

#[cfg(test)]
mod tests;
