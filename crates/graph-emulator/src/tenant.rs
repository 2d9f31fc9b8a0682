//! The tenant fixture: the JSON file an emulator starts from (domains, apps with credentials
//! and granted permissions, users with every Graph property b2bsync reads plus the
//! emulator-private `roles` and `mailbox`). Loading only parses and checks; it never touches
//! the running directory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;

/// A tenant: what `graph-emulator --tenant FILE` loads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tenant {
    /// The directory (tenant) id, a GUID.
    pub tenant_id: String,
    /// `contoso.onmicrosoft.com`; new guests get `...#EXT#@{initialDomain}`.
    pub initial_domain: String,
    /// Verified domains besides the initial domain (conversion blocker P3).
    #[serde(default)]
    pub verified_domains: Vec<String>,
    /// App registrations that may get tokens.
    #[serde(default)]
    pub apps: Vec<App>,
    /// The users, in the order lists return them.
    #[serde(default)]
    pub users: Vec<User>,
}

/// An app registration with its credentials and granted application permissions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct App {
    /// The client id (GUID).
    pub app_id: String,
    /// Shown in tokens as `app_displayname`.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Client secret values.
    #[serde(default)]
    pub client_secrets: Vec<String>,
    /// Certificates (PEM) whose keys may sign client assertions.
    #[serde(default)]
    pub certificates: Vec<String>,
    /// Granted application permissions, e.g. `User.ReadWrite.All`.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Federated identity credentials (workload identity): tokens of these external issuers
    /// are accepted as client assertions.
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredential>,
    /// The app is the managed identity of the emulated host: the managed identity endpoint
    /// (`/metadata/identity/oauth2/token`) issues its tokens.
    #[serde(default)]
    pub managed_identity: bool,
}

/// A federated identity credential: which external tokens stand for the app.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FederatedCredential {
    /// The external issuer (e.g. an AKS cluster's OIDC issuer URL).
    pub issuer: String,
    /// The subject (e.g. `system:serviceaccount:b2bsync:b2bsync`).
    pub subject: String,
    /// Accepted audiences; Entra's default is `api://AzureADTokenExchange`.
    #[serde(default = "default_federated_audiences")]
    pub audiences: Vec<String>,
    /// The issuer's signing key (PEM public key). The real service reads it from the issuer's
    /// OIDC discovery document; the emulator takes it from the fixture (an `[A]` choice).
    pub public_key_pem: String,
}

fn default_federated_audiences() -> Vec<String> {
    vec!["api://AzureADTokenExchange".to_owned()]
}

/// `objectIdentity`: one sign-in identity of a user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectIdentity {
    /// `userPrincipalName`, `emailAddress`, `federated`, ...
    pub sign_in_type: Option<String>,
    /// The issuer, e.g. the initial domain or `ExternalAzureAD`.
    pub issuer: Option<String>,
    /// The identifier the issuer assigned.
    pub issuer_assigned_id: Option<String>,
}

/// `signInActivity`: the user's last sign-ins (Graph returns it only when `$select`ed, and
/// only to a token with `AuditLog.Read.All`); `null` until the user signs in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct SignInActivity {
    pub last_sign_in_date_time: Option<String>,
    pub last_sign_in_request_id: Option<String>,
    pub last_non_interactive_sign_in_date_time: Option<String>,
    pub last_non_interactive_sign_in_request_id: Option<String>,
    pub last_successful_sign_in_date_time: Option<String>,
    pub last_successful_sign_in_request_id: Option<String>,
}

/// A user: Graph properties (camelCase, as Graph names them) plus private fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct User {
    pub id: String,
    pub user_principal_name: String,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub mail: Option<String>,
    pub mail_nickname: Option<String>,
    pub other_mails: Vec<String>,
    pub proxy_addresses: Vec<String>,
    pub user_type: Option<String>,
    pub account_enabled: Option<bool>,
    pub created_date_time: Option<String>,
    pub creation_type: Option<String>,
    pub employee_id: Option<String>,
    pub department: Option<String>,
    pub job_title: Option<String>,
    pub mobile_phone: Option<String>,
    pub office_location: Option<String>,
    pub preferred_language: Option<String>,
    pub business_phones: Vec<String>,
    pub on_premises_sync_enabled: Option<bool>,
    pub on_premises_immutable_id: Option<String>,
    pub on_premises_user_principal_name: Option<String>,
    pub on_premises_sam_account_name: Option<String>,
    pub on_premises_distinguished_name: Option<String>,
    pub on_premises_security_identifier: Option<String>,
    pub external_user_state: Option<String>,
    pub external_user_state_change_date_time: Option<String>,
    /// Set to the time of the last `revokeSignInSessions` (contract §2.5).
    pub sign_in_sessions_valid_from_date_time: Option<String>,
    pub sign_in_activity: Option<SignInActivity>,
    pub identities: Vec<ObjectIdentity>,
    /// Private: directory roles the user holds (never returned by Graph).
    pub roles: Vec<String>,
    /// Private: the user has an Exchange mailbox (never returned by Graph).
    pub mailbox: bool,
}

impl Default for User {
    fn default() -> User {
        User {
            id: String::new(),
            user_principal_name: String::new(),
            display_name: None,
            given_name: None,
            surname: None,
            mail: None,
            mail_nickname: None,
            other_mails: Vec::new(),
            proxy_addresses: Vec::new(),
            user_type: Some("Member".to_owned()),
            account_enabled: Some(true),
            created_date_time: None,
            creation_type: None,
            employee_id: None,
            department: None,
            job_title: None,
            mobile_phone: None,
            office_location: None,
            preferred_language: None,
            business_phones: Vec::new(),
            on_premises_sync_enabled: None,
            on_premises_immutable_id: None,
            on_premises_user_principal_name: None,
            on_premises_sam_account_name: None,
            on_premises_distinguished_name: None,
            on_premises_security_identifier: None,
            external_user_state: None,
            external_user_state_change_date_time: None,
            sign_in_sessions_valid_from_date_time: None,
            sign_in_activity: None,
            identities: Vec::new(),
            roles: Vec::new(),
            mailbox: false,
        }
    }
}

/// The emulator-private user fields, which Graph never returns.
pub(crate) const PRIVATE_FIELDS: [&str; 2] = ["roles", "mailbox"];

impl Tenant {
    /// Loads and checks a fixture file. Syntax errors name the file, line and column.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Tenant, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::FixtureRead {
            path: path.to_owned(),
            source,
        })?;
        let tenant: Tenant = serde_json::from_str(&text).map_err(|err| Error::FixtureSyntax {
            path: path.to_owned(),
            line: err.line(),
            column: err.column(),
            message: err.to_string(),
        })?;
        tenant.check(path)?;
        Ok(tenant)
    }

    /// Checks the rules serde cannot: required values, unique ids and UPNs, parseable certificates.
    pub fn check(&self, path: &Path) -> Result<(), Error> {
        let invalid = |message: String| Error::FixtureInvalid {
            path: path.to_owned(),
            message,
        };
        if self.tenant_id.is_empty() {
            return Err(invalid("tenantId is empty".into()));
        }
        if !self.initial_domain.contains('.') {
            return Err(invalid(format!(
                "initialDomain '{}' is not a domain name",
                self.initial_domain
            )));
        }
        let mut ids = HashSet::new();
        let mut upns = HashSet::new();
        for (index, user) in self.users.iter().enumerate() {
            if user.id.is_empty() {
                return Err(invalid(format!("users[{index}] has no id")));
            }
            if user.user_principal_name.is_empty() {
                return Err(invalid(format!(
                    "users[{index}] ('{}') has no userPrincipalName",
                    user.id
                )));
            }
            if !ids.insert(user.id.to_ascii_lowercase()) {
                return Err(invalid(format!(
                    "users[{index}]: duplicate id '{}'",
                    user.id
                )));
            }
            if !upns.insert(user.user_principal_name.to_lowercase()) {
                return Err(invalid(format!(
                    "users[{index}]: duplicate userPrincipalName '{}'",
                    user.user_principal_name
                )));
            }
        }
        let mut app_ids = HashSet::new();
        for (index, app) in self.apps.iter().enumerate() {
            if app.app_id.is_empty() || !app_ids.insert(app.app_id.to_ascii_lowercase()) {
                return Err(invalid(format!(
                    "apps[{index}]: empty or duplicate appId '{}'",
                    app.app_id
                )));
            }
            for (cert_index, pem) in app.certificates.iter().enumerate() {
                if let Err(err) = super::certificate::certificate_key(pem) {
                    return Err(invalid(format!(
                        "apps[{index}] ('{}') certificates[{cert_index}]: {err}",
                        app.app_id
                    )));
                }
            }
        }
        Ok(())
    }

    /// All domains the tenant has verified, the initial domain included, lowercased.
    pub(crate) fn all_verified_domains(&self) -> Vec<String> {
        std::iter::once(&self.initial_domain)
            .chain(self.verified_domains.iter())
            .map(|d| d.to_ascii_lowercase())
            .collect()
    }
}

/// Where a fixture that was not loaded from a file is reported as coming from.
pub(crate) fn memory_path() -> PathBuf {
    PathBuf::from("<memory>")
}
