//! The mapping file as written: serde structures that mirror the TOML exactly, with
//! `deny_unknown_fields` so a misspelt key is an error, and `Spanned` on every value an error
//! may have to point at. `mod.rs` turns this into a checked [`super::Mapping`].

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    #[serde(default)]
    pub description: Option<String>,
    /// The expression that yields the external address.
    pub address: Spanned<String>,
    pub source: RawSource,
    pub scope: RawScope,
    #[serde(default)]
    pub join: RawJoin,
    #[serde(default)]
    pub write: RawWrite,
    #[serde(default)]
    pub invitation: RawInvitation,
    #[serde(default)]
    pub tables: BTreeMap<String, Spanned<RawTable>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub attributes: Vec<Spanned<String>>,
    #[serde(default)]
    pub multi_valued: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScope {
    pub base_dns: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub filter: Option<Spanned<String>>,
    #[serde(default)]
    pub when: Option<Spanned<String>>,
    #[serde(default)]
    pub disabled: Option<Spanned<String>>,
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
    #[serde(default)]
    pub protected_groups: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJoin {
    #[serde(default)]
    pub anchor: Option<Spanned<String>>,
    #[serde(default)]
    pub cloud_only: Option<RawPair>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPair {
    pub source: Spanned<String>,
    pub cloud: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWrite {
    #[serde(default)]
    pub synced: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub cloud_only: Option<Vec<Spanned<String>>>,
}

/// The invitation options, as written in `[invitation]` and in each `[[invitation.per_domain]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInvitationOptions {
    #[serde(default)]
    pub redirect_url: Option<Spanned<String>>,
    #[serde(default)]
    pub send_message: Option<bool>,
    #[serde(default)]
    pub message_body: Option<String>,
    #[serde(default)]
    pub language: Option<Spanned<String>>,
    #[serde(default)]
    pub cc: Option<Spanned<String>>,
    #[serde(default)]
    pub user_type: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInvitation {
    #[serde(default)]
    pub redirect_url: Option<Spanned<String>>,
    #[serde(default)]
    pub send_message: Option<bool>,
    #[serde(default)]
    pub message_body: Option<String>,
    #[serde(default)]
    pub language: Option<Spanned<String>>,
    #[serde(default)]
    pub cc: Option<Spanned<String>>,
    #[serde(default)]
    pub user_type: Option<Spanned<String>>,
    #[serde(default)]
    pub per_domain: Vec<RawDomainOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDomainOverride {
    pub domains: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub redirect_url: Option<Spanned<String>>,
    #[serde(default)]
    pub send_message: Option<bool>,
    #[serde(default)]
    pub message_body: Option<String>,
    #[serde(default)]
    pub language: Option<Spanned<String>>,
    #[serde(default)]
    pub cc: Option<Spanned<String>>,
    #[serde(default)]
    pub user_type: Option<Spanned<String>>,
}

impl RawInvitation {
    /// The options of this section, without the per-domain overrides.
    pub fn options(&self) -> RawInvitationOptions {
        RawInvitationOptions {
            redirect_url: self.redirect_url.clone(),
            send_message: self.send_message,
            message_body: self.message_body.clone(),
            language: self.language.clone(),
            cc: self.cc.clone(),
            user_type: self.user_type.clone(),
        }
    }
}

impl RawDomainOverride {
    /// The options of this override.
    pub fn options(&self) -> RawInvitationOptions {
        RawInvitationOptions {
            redirect_url: self.redirect_url.clone(),
            send_message: self.send_message,
            message_body: self.message_body.clone(),
            language: self.language.clone(),
            cc: self.cc.clone(),
            user_type: self.user_type.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTable {
    pub file: Spanned<String>,
    #[serde(default = "default_key")]
    pub key: String,
    #[serde(default = "default_value")]
    pub value: String,
}

fn default_key() -> String {
    "account".to_string()
}

fn default_value() -> String {
    "externalEmail".to_string()
}
