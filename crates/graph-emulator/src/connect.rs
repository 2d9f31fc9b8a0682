//! One Entra Connect cycle for the control API: read the user accounts from an AD over LDAP(S)
//! with paged search, match synced cloud users by `onPremisesImmutableId` = base64 of the
//! anchor (`objectGUID` or `ms-DS-ConsistencyGuid`), and flow the attributes Entra Connect's
//! default rules flow. It only reads the AD; it writes only the emulator's directory.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use super::directory::{Emulator, lock};

/// Body of `POST /_emulator/connect/cycle`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CycleRequest {
    ldap_url: String,
    bind_dn: String,
    password: String,
    ca_file: Option<String>,
    base_dn: String,
    filter: Option<String>,
    anchor: Option<String>,
    write_on_premises_user_principal_name: Option<bool>,
}

/// What a cycle did.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Counts {
    /// AD accounts read.
    read: usize,
    /// Accounts that matched a synced cloud user.
    matched: usize,
    /// Cloud users whose attributes changed.
    updated: usize,
    /// Matched cloud users already up to date.
    unchanged: usize,
    /// AD accounts with no synced cloud user (Entra Connect would create them; the emulator does not).
    unmatched: usize,
    /// AD accounts without the anchor attribute.
    without_anchor: usize,
}

/// Why a cycle failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("invalid cycle request: {0}")]
    Request(String),
    #[error("reading CA file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("LDAP: {0}")]
    Ldap(#[from] ldap3::LdapError),
}

/// Attributes read from each account.
const ATTRIBUTES: [&str; 9] = [
    "objectGUID",
    "mS-DS-ConsistencyGuid",
    "mail",
    "displayName",
    "givenName",
    "sn",
    "userAccountControl",
    "sAMAccountName",
    "userPrincipalName",
];

fn attr<'a>(entry: &'a SearchEntry, name: &str) -> Option<&'a str> {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first())
        .map(String::as_str)
}

fn binary(entry: &SearchEntry, name: &str) -> Option<Vec<u8>> {
    entry
        .bin_attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first().cloned())
        .or_else(|| attr(entry, name).map(|s| s.as_bytes().to_vec()))
}

/// Runs one cycle.
pub(crate) async fn cycle(
    emu: &Arc<Emulator>,
    request: &CycleRequest,
) -> Result<Counts, ConnectError> {
    let anchor = match request.anchor.as_deref().unwrap_or("objectGUID") {
        a if a.eq_ignore_ascii_case("objectGUID") => "objectGUID",
        a if a.eq_ignore_ascii_case("ms-DS-ConsistencyGuid") => "mS-DS-ConsistencyGuid",
        other => {
            return Err(ConnectError::Request(format!(
                "anchor '{other}' must be objectGUID or ms-DS-ConsistencyGuid"
            )));
        }
    };
    let write_upn = request
        .write_on_premises_user_principal_name
        .unwrap_or(true);
    let mut settings = LdapConnSettings::new();
    if let Some(path) = &request.ca_file {
        let ca_error = |message: String| ConnectError::CaFile {
            path: path.clone(),
            message,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| ca_error(e.to_string()))? {
            let cert = cert.map_err(|e| ca_error(e.to_string()))?;
            roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ca_error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        settings = settings.set_config(Arc::new(config));
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &request.ldap_url).await?;
    ldap3::drive!(conn);
    ldap.simple_bind(&request.bind_dn, &request.password)
        .await?
        .success()?;
    let filter = request
        .filter
        .clone()
        .unwrap_or_else(|| "(&(objectClass=user)(!(objectClass=computer)))".to_owned());
    let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(500)),
    ];
    let mut search = ldap
        .streaming_search_with(
            adapters,
            &request.base_dn,
            Scope::Subtree,
            &filter,
            ATTRIBUTES.to_vec(),
        )
        .await?;
    let mut entries = Vec::new();
    while let Some(entry) = search.next().await? {
        entries.push(SearchEntry::construct(entry));
    }
    search.finish().await.success()?;
    let _ = ldap.unbind().await;

    let mut counts = Counts {
        read: entries.len(),
        ..Counts::default()
    };
    let mut dir = lock(&emu.dir);
    for entry in &entries {
        let Some(anchor_bytes) = binary(entry, anchor) else {
            counts.without_anchor += 1;
            continue;
        };
        let immutable_id = STANDARD.encode(&anchor_bytes);
        let index = dir.entries.iter().position(|e| {
            e.user.on_premises_sync_enabled == Some(true)
                && e.user.on_premises_immutable_id.as_deref() == Some(immutable_id.as_str())
        });
        let Some(index) = index else {
            counts.unmatched += 1;
            continue;
        };
        counts.matched += 1;
        let before = dir.entries[index].user.clone();
        let mail = attr(entry, "mail").map(str::to_owned);
        if before.mail != mail {
            dir.set_mail(index, mail);
        }
        let user = &mut dir.entries[index].user;
        let text = |name: &str| attr(entry, name).map(str::to_owned);
        user.display_name = text("displayName");
        user.given_name = text("givenName");
        user.surname = text("sn");
        if let Some(uac) = attr(entry, "userAccountControl").and_then(|v| v.parse::<u32>().ok()) {
            user.account_enabled = Some(uac & 0x2 == 0);
        }
        user.on_premises_sam_account_name = text("sAMAccountName");
        user.on_premises_distinguished_name = Some(entry.dn.clone());
        user.on_premises_user_principal_name = if write_upn {
            text("userPrincipalName")
        } else {
            None
        };
        if dir.entries[index].user != before {
            dir.touch(index);
            counts.updated += 1;
        } else {
            counts.unchanged += 1;
        }
    }
    tracing::info!(
        read = counts.read,
        matched = counts.matched,
        updated = counts.updated,
        "Connect cycle finished."
    );
    Ok(counts)
}
