//! The reqwest adapter behind [`Cloud`]: bulk user reads with `$select` and pages of 999,
//! PATCH, the invitation body built by hand so `invitedUser.id` is never dropped, a
//! `client-request-id` on every call, Graph's `request-id` kept, bounded retries that
//! honour `Retry-After`, and every request paced to the published budgets ([`Pacer`]).
//!
//! Everything a server sends is untrusted: the bearer token goes only to the configured
//! https Graph root (a paging or delta link elsewhere is refused), no redirect is followed,
//! an answer is read up to [`MAX_BODY_BYTES`], a walk of links is bounded by [`MAX_PAGES`]
//! and refuses a link it saw before, a `Retry-After` past [`MAX_WAIT`] fails the request, and
//! server text is made printable before it reaches an error.

// Server numbers reach durations and instants here: overflow must be handled, not panic.
#![warn(clippy::arithmetic_side_effects)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::Rng as _;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::pace::{Cost, Pacer};
use super::token::{Credential, TokenSource};
use super::{
    Cloud, Error, Invitation, InvitationSent, LinkKind, MAX_BODY_BYTES, MAX_PAGES, MAX_WAIT,
    RequestIds, UserChanges, UserPatch, describe, limit_percentage, printable, read_body,
    retry_wait, shown_url, transport_error, urlencode,
};
use crate::model::CloudUser;

/// The properties b2bsync reads for every user.
pub const USER_SELECT: &str = "id,userPrincipalName,displayName,mail,otherMails,proxyAddresses,userType,accountEnabled,onPremisesSyncEnabled,onPremisesImmutableId,onPremisesUserPrincipalName,onPremisesSamAccountName,employeeId,externalUserState,externalUserStateChangeDateTime,creationType,assignedPlans";

/// Exchange Online's service name in `assignedPlans`.
const EXCHANGE_SERVICE: &str = "exchange";

/// Where Graph is and how to talk to it.
#[derive(Debug, Clone)]
pub struct GraphSettings {
    /// Graph root: `https://graph.microsoft.com`, a national cloud's, or the emulator's.
    pub graph_url: String,
    /// The token audience whose `.default` scope is asked. Usually the Graph root itself;
    /// differs when `graph_url` points at a proxy or the emulator, which stand in for
    /// `https://graph.microsoft.com`.
    pub resource: String,
    /// Login authority: `https://login.microsoftonline.com` or the matching national cloud.
    pub authority: String,
    /// Tenant id or domain.
    pub tenant: String,
    /// The app registration's client id.
    pub client_id: String,
    /// A PEM CA bundle to trust instead of the OS store (TLS inspection, the emulator).
    pub ca_file: Option<PathBuf>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// The longest total time spent retrying one request.
    pub retry_budget: Duration,
    /// Multiplies the published throttling windows the pacer keeps to: 1.0 for Microsoft
    /// Graph. Only a rehearsal against the emulator running with `--time-scale` changes it
    /// (environment `B2BSYNC_GRAPH_BUDGET_TIME_SCALE`).
    pub budget_time_scale: f64,
    /// Read the users' `signInActivity` too (`[policy] randomize_password =
    /// "after_sign_in"`; needs `AuditLog.Read.All`).
    pub sign_in_activity: bool,
}

/// The environment variable that sets [`GraphSettings::budget_time_scale`].
pub const BUDGET_TIME_SCALE_ENV: &str = "B2BSYNC_GRAPH_BUDGET_TIME_SCALE";

impl GraphSettings {
    /// Settings for the given Graph root and authority with the default limits.
    pub fn new(graph_url: &str, authority: &str, tenant: &str, client_id: &str) -> Self {
        GraphSettings {
            graph_url: graph_url.trim_end_matches('/').to_string(),
            resource: graph_url.trim_end_matches('/').to_string(),
            authority: authority.trim_end_matches('/').to_string(),
            tenant: tenant.to_string(),
            client_id: client_id.to_string(),
            ca_file: None,
            timeout: Duration::from_secs(60),
            max_attempts: 6,
            retry_budget: Duration::from_secs(300),
            budget_time_scale: std::env::var(BUDGET_TIME_SCALE_ENV)
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s > 0.0)
                .unwrap_or(1.0),
            sign_in_activity: false,
        }
    }

    /// Refuses a Graph root or authority that is not `https://` with a host: the client
    /// secret, the client assertion and the bearer token never travel in the clear.
    pub fn validate(&self) -> Result<(), Error> {
        https_root("graph_url", &self.graph_url)?;
        https_root("authority", &self.authority)?;
        Ok(())
    }
}

/// `url` parsed, when it is an `https://` URL with a host.
fn https_root(setting: &'static str, url: &str) -> Result<url::Url, Error> {
    match url::Url::parse(url) {
        Ok(parsed) if parsed.scheme() == "https" && parsed.host().is_some() => Ok(parsed),
        _ => Err(Error::Cleartext {
            setting,
            url: shown_url(url),
        }),
    }
}

/// A Graph client for one app in one tenant.
pub struct GraphClient {
    http: reqwest::Client,
    api: String,
    /// The Graph root: the only scheme, host and port the token is sent to.
    root: url::Url,
    tokens: TokenSource,
    settings: GraphSettings,
    pacer: Pacer,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserDto {
    id: String,
    #[serde(default)]
    user_principal_name: Option<String>,
    display_name: Option<String>,
    mail: Option<String>,
    #[serde(default)]
    other_mails: Option<Vec<String>>,
    #[serde(default)]
    proxy_addresses: Option<Vec<String>>,
    user_type: Option<String>,
    account_enabled: Option<bool>,
    on_premises_sync_enabled: Option<bool>,
    on_premises_immutable_id: Option<String>,
    on_premises_user_principal_name: Option<String>,
    on_premises_sam_account_name: Option<String>,
    employee_id: Option<String>,
    external_user_state: Option<String>,
    external_user_state_change_date_time: Option<String>,
    creation_type: Option<String>,
    #[serde(default)]
    assigned_plans: Option<Vec<AssignedPlanDto>>,
    #[serde(default)]
    sign_in_activity: Option<SignInActivityDto>,
}

/// The part of `signInActivity` b2bsync reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignInActivityDto {
    #[serde(default)]
    last_successful_sign_in_date_time: Option<String>,
}

/// `GET /users/{id}?$select=id,signInSessionsValidFromDateTime`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionsDto {
    #[serde(default)]
    sign_in_sessions_valid_from_date_time: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssignedPlanDto {
    capability_status: Option<String>,
    service: Option<String>,
}

impl From<UserDto> for CloudUser {
    fn from(u: UserDto) -> Self {
        let has_mailbox = u.assigned_plans.unwrap_or_default().iter().any(|p| {
            p.service
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(EXCHANGE_SERVICE))
                && p.capability_status.as_deref() == Some("Enabled")
        });
        CloudUser {
            id: u.id,
            user_principal_name: u.user_principal_name.unwrap_or_default(),
            display_name: u.display_name,
            mail: u.mail,
            other_mails: u.other_mails.unwrap_or_default(),
            proxy_addresses: u.proxy_addresses.unwrap_or_default(),
            user_type: u.user_type,
            account_enabled: u.account_enabled,
            on_premises_sync_enabled: u.on_premises_sync_enabled,
            on_premises_immutable_id: u.on_premises_immutable_id,
            on_premises_user_principal_name: u.on_premises_user_principal_name,
            on_premises_sam_account_name: u.on_premises_sam_account_name,
            employee_id: u.employee_id,
            external_user_state: u.external_user_state,
            external_user_state_change: u.external_user_state_change_date_time,
            creation_type: u.creation_type,
            has_mailbox,
            roles: Vec::new(),
            // Untrusted: kept only when it is a time (normalized), else "no sign-in read".
            last_successful_sign_in: u
                .sign_in_activity
                .and_then(|a| a.last_successful_sign_in_date_time)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.to_string()),
        }
    }
}

#[derive(Deserialize)]
struct Page<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

/// A page of `/users/delta`: changed users (or `@removed` ones), then a deltaLink at the end.
#[derive(Deserialize)]
struct DeltaPage {
    value: Vec<DeltaItem>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

#[derive(Deserialize)]
struct DeltaItem {
    #[serde(rename = "@removed")]
    removed: Option<serde::de::IgnoredAny>,
    #[serde(flatten)]
    user: UserDto,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleDto {
    id: String,
    display_name: Option<String>,
}

#[derive(Deserialize)]
struct IdDto {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrganizationDto {
    #[serde(default)]
    verified_domains: Vec<VerifiedDomainDto>,
}

#[derive(Deserialize)]
struct VerifiedDomainDto {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvitationDto {
    id: Option<String>,
    status: Option<String>,
    invite_redeem_url: Option<String>,
    invited_user: Option<InvitedUserDto>,
}

/// `invitedUser` of an invitation answer: checked by the caller, so a missing id is kept
/// missing rather than refused here.
#[derive(Deserialize)]
struct InvitedUserDto {
    id: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

/// A response that arrived with a success status.
struct Answer {
    body: Vec<u8>,
    ids: RequestIds,
    /// `x-ms-throttle-limit-percentage`, when the service sent it.
    limit_percentage: Option<f64>,
}

impl GraphClient {
    /// The `$select` of a full users read: [`USER_SELECT`], plus `signInActivity` when the
    /// settings ask for it (Graph returns it only when selected).
    fn user_select(&self) -> String {
        if self.settings.sign_in_activity {
            format!("{USER_SELECT},signInActivity")
        } else {
            USER_SELECT.to_string()
        }
    }

    /// Builds the HTTP client (rustls; the CA file replaces the OS store when given).
    /// Refuses settings that are not https ([`GraphSettings::validate`]) and a CA file with
    /// no PEM certificate in it. No redirect is ever followed: a token request re-sent to
    /// where a 307 points would carry the credential there.
    pub fn new(settings: GraphSettings, credential: Credential) -> Result<Self, Error> {
        settings.validate()?;
        let root = https_root("graph_url", &settings.graph_url)?;
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("b2bsync/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(15));
        if let Some(path) = &settings.ca_file {
            builder = builder.tls_certs_only(ca_certificates(path)?);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Settings(format!("cannot build the HTTP client: {e}")))?;
        let tokens = TokenSource::new(
            http.clone(),
            &settings.authority,
            &settings.tenant,
            &settings.client_id,
            &settings.resource,
            credential,
        );
        Ok(GraphClient {
            api: format!("{}/v1.0", settings.graph_url),
            root,
            http,
            tokens,
            pacer: Pacer::new(settings.budget_time_scale),
            settings,
        })
    }

    /// Gets a token now: `check` uses this to prove the credential works.
    pub async fn token_roles(&self) -> Result<Vec<String>, Error> {
        let token = self.tokens.token().await?;
        Ok(token_roles(token.expose_secret()))
    }

    /// The tenant's `allowInvitesFrom` (`GET /policies/authorizationPolicy`, which needs
    /// Policy.Read.All): who may invite guests. `check` reads it; the text is as sent, made
    /// printable and bounded (an unknown value is the caller's to report).
    pub async fn allow_invites_from(&self) -> Result<String, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct PolicyDto {
            allow_invites_from: Option<String>,
        }
        let url = format!(
            "{}/policies/authorizationPolicy?$select=allowInvitesFrom",
            self.api
        );
        let answer = self.send(Method::GET, &url, None, true).await?;
        let dto: PolicyDto = serde_json::from_slice(&answer.body).map_err(|e| Error::Decode {
            url: url.clone(),
            reason: printable(&e.to_string()),
        })?;
        Ok(printable(&dto.allow_invites_from.unwrap_or_default()))
    }

    /// Sends one request with retries. `idempotent == false` repeats only when the service
    /// says it did not process the request (429, 503, 504).
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Answer, Error> {
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut refreshed = false;
        let cost = Cost::of(method.as_str(), url);
        loop {
            attempt = attempt.saturating_add(1);
            self.pacer.acquire(&cost).await;
            let sent = Instant::now();
            let result = self.send_once(method.clone(), url, body).await;
            let (status, request_id) = match &result {
                Ok(answer) => (Some(200), answer.ids.request_id.as_deref()),
                Err(e) => (e.status(), e.request_id()),
            };
            tracing::debug!(
                %method,
                path = %shown_url(url),
                status,
                request_id,
                duration_ms = millis(sent.elapsed()),
                attempt,
                "Graph request answered."
            );
            let err = match result {
                Ok(answer) => {
                    if let Some(usage) = answer.limit_percentage {
                        self.pacer.observed(&cost, usage);
                    }
                    return Ok(answer);
                }
                Err(e) => e,
            };
            if let Error::Throttled {
                retry_after,
                information,
                ..
            } = &err
            {
                self.pacer
                    .throttled(&cost, information.as_deref(), *retry_after);
            }
            // An expired or refused token: renew it once and try again.
            if err.status() == Some(401) && !refreshed {
                refreshed = true;
                self.tokens.invalidate().await;
                continue;
            }
            let retry = if idempotent {
                err.transient()
            } else {
                err.not_processed()
            };
            if !retry || attempt >= self.settings.max_attempts {
                return Err(err);
            }
            // The server's Retry-After is at most MAX_WAIT already (a longer one is
            // `WaitTooLong`, never retried); the min keeps that true here too.
            let wait = err
                .retry_after()
                .unwrap_or_else(|| backoff(attempt))
                .min(MAX_WAIT);
            if started.elapsed().saturating_add(wait) > self.settings.retry_budget {
                return Err(err);
            }
            tracing::warn!(
                attempt,
                wait_ms = millis(wait),
                status = err.status(),
                error = %err,
                "Graph request will be retried."
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn send_once(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, Error> {
        let token = self.tokens.token().await?;
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(token.expose_secret())
            .header("client-request-id", &client_request_id)
            .header("return-client-request-id", "true");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| transport_error(url, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let ids = RequestIds {
            request_id: header_text(&headers, "request-id"),
            client_request_id,
        };
        let bytes = read_body(response, url, MAX_BODY_BYTES).await?;
        if status.is_success() {
            return Ok(Answer {
                body: bytes,
                ids,
                limit_percentage: header_text(&headers, "x-ms-throttle-limit-percentage")
                    .and_then(|v| limit_percentage(&v)),
            });
        }
        Err(graph_error(
            status,
            &headers,
            &bytes,
            ids.request_id,
            &strip_query(url),
        ))
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, url: &str) -> Result<T, Error> {
        let answer = self.send(Method::GET, url, None, true).await?;
        serde_json::from_slice(&answer.body).map_err(|e| Error::Decode {
            url: strip_query(url),
            reason: printable(&e.to_string()),
        })
    }

    /// Refuses a link Graph sent (or b2bsync stored) unless it is `https` to the configured
    /// Graph root's host and port: the token is sent wherever the link points.
    fn check_link(&self, link: &str, kind: LinkKind) -> Result<(), Error> {
        let trusted = url::Url::parse(link).is_ok_and(|u| {
            u.scheme() == "https"
                && u.host() == self.root.host()
                && u.port_or_known_default() == self.root.port_or_known_default()
                && u.username().is_empty()
                && u.password().is_none()
        });
        if trusted {
            return Ok(());
        }
        Err(Error::UntrustedLink {
            kind,
            link: shown_url(link),
            expected: self.root.origin().ascii_serialization(),
        })
    }

    /// Follows `@odata.nextLink` unchanged until the last page, through a [`Walk`].
    async fn all_pages<T: for<'de> Deserialize<'de>>(
        &self,
        first: String,
    ) -> Result<Vec<T>, Error> {
        let mut out = Vec::new();
        let mut walk = Walk::new(self, &first);
        let mut next = Some(first);
        while let Some(url) = next {
            let page: Page<T> = self.get_json(&url).await?;
            out.extend(page.value);
            next = page.next_link.map(|link| walk.next(link)).transpose()?;
        }
        Ok(out)
    }

    /// Directory role holders: user id → role names. One request per activated role.
    async fn role_holders(&self) -> Result<HashMap<String, Vec<String>>, Error> {
        let roles: Vec<RoleDto> = self
            .all_pages(format!(
                "{}/directoryRoles?$select=id,displayName",
                self.api
            ))
            .await?;
        let mut holders: HashMap<String, Vec<String>> = HashMap::new();
        for role in roles {
            let members: Vec<IdDto> = self
                .all_pages(format!(
                    "{}/directoryRoles/{}/members?$select=id",
                    self.api,
                    urlencode(&role.id)
                ))
                .await?;
            let name = role.display_name.unwrap_or(role.id);
            for m in members {
                holders.entry(m.id).or_default().push(name.clone());
            }
        }
        Ok(holders)
    }
}

impl Cloud for GraphClient {
    async fn users(&self) -> Result<Vec<CloudUser>, Error> {
        let mut users: Vec<CloudUser> = Vec::new();
        self.users_pages(&mut |page| {
            users.extend(page);
            std::ops::ControlFlow::Continue(())
        })
        .await?;
        users.shrink_to_fit();
        Ok(users)
    }

    async fn users_pages(
        &self,
        pages: &mut (dyn FnMut(Vec<CloudUser>) -> std::ops::ControlFlow<()> + Send),
    ) -> Result<usize, Error> {
        // The role holders are few: read first, so that each page leaves complete. Each page
        // becomes domain users as it arrives: the wire DTOs of a large tenant are never all
        // held at once.
        let mut roles = self.role_holders().await?;
        let first = format!("{}/users?$select={}&$top=999", self.api, self.user_select());
        let mut walk = Walk::new(self, &first);
        let mut next = Some(first);
        let mut count: usize = 0;
        while let Some(url) = next {
            let page: Page<UserDto> = self.get_json(&url).await?;
            let mut users: Vec<CloudUser> = page.value.into_iter().map(CloudUser::from).collect();
            for user in &mut users {
                if let Some(held) = roles.remove(&user.id) {
                    user.roles = held;
                }
            }
            count = count.saturating_add(users.len());
            if pages(users).is_break() {
                return Err(Error::Stopped {
                    path: "GET /users".into(),
                    users: count,
                });
            }
            next = page.next_link.map(|link| walk.next(link)).transpose()?;
        }
        self.pacer.set_tenant_size(count);
        Ok(count)
    }

    async fn delta_link(&self) -> Result<Option<String>, Error> {
        let url = format!(
            "{}/users/delta?$select={USER_SELECT}&$deltatoken=latest",
            self.api
        );
        let page: DeltaPage = self.get_json(&url).await?;
        match page.delta_link {
            Some(link) => {
                self.check_link(&link, LinkKind::Delta)?;
                Ok(Some(link))
            }
            None => Err(Error::Decode {
                url: strip_query(&url),
                reason: "no @odata.deltaLink in the answer to $deltatoken=latest".into(),
            }),
        }
    }

    async fn users_since(&self, link: &str, known: usize) -> Result<UserChanges, Error> {
        // A stored link that does not point at this Graph root (written by a run against
        // another graph_url, or taken from a server that sent it elsewhere) is refused
        // before anything is sent; the caller drops it and reads every user.
        self.check_link(link, LinkKind::StoredDelta)?;
        self.pacer.set_tenant_size(known);
        let mut changes = UserChanges::default();
        let mut walk = Walk::new(self, link);
        let mut next = link.to_string();
        // Pages may come with an empty `value` and still a nextLink: follow until the
        // deltaLink arrives (contract section 3.4).
        let delta_link = loop {
            let page: DeltaPage = self.get_json(&next).await?;
            for item in page.value {
                if item.removed.is_some() {
                    changes.removed.push(item.user.id);
                } else {
                    changes.changed.push(item.user.into());
                }
            }
            match (page.delta_link, page.next_link) {
                (Some(delta), _) => {
                    self.check_link(&delta, LinkKind::Delta)?;
                    break delta;
                }
                (None, Some(more)) => next = walk.next(more)?,
                (None, None) => {
                    return Err(Error::Decode {
                        url: strip_query(&next),
                        reason: "a delta page with neither @odata.nextLink nor @odata.deltaLink"
                            .into(),
                    });
                }
            }
        };
        changes.delta_link = delta_link;
        changes.roles = self.role_holders().await?;
        for user in &mut changes.changed {
            if let Some(held) = changes.roles.get(&user.id) {
                user.roles = held.clone();
            }
        }
        Ok(changes)
    }

    async fn user(&self, id: &str) -> Result<Option<CloudUser>, Error> {
        let url = format!(
            "{}/users/{}?$select={}",
            self.api,
            urlencode(id),
            self.user_select()
        );
        match self.get_json::<UserDto>(&url).await {
            Ok(dto) => Ok(Some(dto.into())),
            Err(Error::Graph { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn sessions_valid_from(&self, id: &str) -> Result<Option<Option<String>>, Error> {
        let url = format!(
            "{}/users/{}?$select=id,signInSessionsValidFromDateTime",
            self.api,
            urlencode(id)
        );
        match self.get_json::<SessionsDto>(&url).await {
            Ok(dto) => Ok(Some(dto.sign_in_sessions_valid_from_date_time)),
            Err(Error::Graph { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn verified_domains(&self) -> Result<Vec<String>, Error> {
        let orgs: Vec<OrganizationDto> = self
            .all_pages(format!("{}/organization?$select=verifiedDomains", self.api))
            .await?;
        let mut names: Vec<String> = orgs
            .into_iter()
            .flat_map(|o| o.verified_domains)
            .map(|d| d.name.to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn update_user(&self, id: &str, patch: &UserPatch) -> Result<RequestIds, Error> {
        let mut body = serde_json::Map::new();
        if let Some(mail) = &patch.mail {
            body.insert("mail".into(), json!(mail));
        } else if patch.clear_mail {
            body.insert("mail".into(), Value::Null);
        }
        if let Some(other) = &patch.other_mails {
            body.insert("otherMails".into(), json!(other));
        }
        if let Some(user_type) = &patch.user_type {
            body.insert("userType".into(), json!(user_type));
        }
        let url = format!("{}/users/{}", self.api, urlencode(id));
        // A PATCH that sets values is idempotent: repeating it leaves the same state.
        let answer = self
            .send(Method::PATCH, &url, Some(&Value::Object(body)), true)
            .await?;
        Ok(answer.ids)
    }

    async fn revoke_sessions(&self, id: &str) -> Result<RequestIds, Error> {
        let url = format!("{}/users/{}/revokeSignInSessions", self.api, urlencode(id));
        // Repeating it would only move signInSessionsValidFromDateTime forward, but a lost
        // answer is read back instead (apply, reconcile): revoked once per conversion.
        let answer = self.send(Method::POST, &url, None, false).await?;
        Ok(answer.ids)
    }

    async fn invite(&self, inv: &Invitation) -> Result<InvitationSent, Error> {
        // Built by hand: `invitedUser.id` must always be on the wire (see the .NET SDK bug
        // in docs/graph-contract.md P6, where a backing store silently dropped it).
        let mut body = json!({
            "invitedUserEmailAddress": inv.email,
            "inviteRedirectUrl": inv.redirect_url,
            "sendInvitationMessage": inv.send_message,
            "invitedUser": { "id": inv.user_id },
        });
        if inv.reset_redemption {
            body["resetRedemption"] = json!(true);
        }
        let mut info = serde_json::Map::new();
        if let Some(text) = &inv.message_body {
            info.insert("customizedMessageBody".into(), json!(text));
        }
        if let Some(lang) = &inv.message_language {
            info.insert("messageLanguage".into(), json!(lang));
        }
        if let Some(cc) = &inv.cc {
            info.insert(
                "ccRecipients".into(),
                json!([{ "emailAddress": { "address": cc } }]),
            );
        }
        if !info.is_empty() {
            body["invitedUserMessageInfo"] = Value::Object(info);
        }
        let url = format!("{}/invitations", self.api);
        let answer = self.send(Method::POST, &url, Some(&body), false).await?;
        let dto: InvitationDto =
            serde_json::from_slice(&answer.body).map_err(|e| Error::Decode {
                url: url.clone(),
                reason: printable(&e.to_string()),
            })?;
        // As it came: the caller checks it against the user asked for (never filled in
        // from the request, which would hide a new guest created instead).
        Ok(InvitationSent {
            invitation_id: dto.id.unwrap_or_default(),
            user_id: dto.invited_user.and_then(|u| u.id).unwrap_or_default(),
            status: dto.status.unwrap_or_default(),
            redeem_url: dto.invite_redeem_url,
            ids: answer.ids,
        })
    }
}

/// One walk of `@odata.nextLink`s from a first URL: each link must point at the Graph
/// root, a link seen before in the walk is a loop, and a walk ends after [`MAX_PAGES`].
struct Walk<'a> {
    client: &'a GraphClient,
    /// What is walked, for messages: the first URL without its query.
    path: String,
    seen: HashSet<String>,
    pages: usize,
}

impl<'a> Walk<'a> {
    fn new(client: &'a GraphClient, first: &str) -> Walk<'a> {
        Walk {
            client,
            path: strip_query(first),
            seen: HashSet::from([first.to_string()]),
            pages: 1,
        }
    }

    /// The next page's URL, once `link` passed every check.
    fn next(&mut self, link: String) -> Result<String, Error> {
        self.client.check_link(&link, LinkKind::Next)?;
        if self.pages >= MAX_PAGES {
            return Err(Error::TooManyPages {
                path: self.path.clone(),
                limit: MAX_PAGES,
            });
        }
        if !self.seen.insert(link.clone()) {
            return Err(Error::LinkLoop {
                path: self.path.clone(),
            });
        }
        self.pages = self.pages.saturating_add(1);
        Ok(link)
    }
}

/// The certificates of a PEM CA file; a file with none (DER, or not a certificate at all)
/// would silently be an empty trust store, so it is refused.
fn ca_certificates(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, Error> {
    let ca_error = |reason: String| Error::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| ca_error(format!("cannot read it: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| ca_error(format!("it is not a PEM CA bundle: {}", describe(&e))))?;
    if certs.is_empty() {
        return Err(ca_error(
            "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// Exponential backoff with full jitter: 1 s, 2 s, 4 s, ... capped at 60 s.
fn backoff(attempt: u32) -> Duration {
    let cap_ms: u64 = 1000u64
        .checked_shl(attempt.min(6))
        .unwrap_or(60_000)
        .min(60_000);
    let millis = rand::rng().random_range(cap_ms / 2..=cap_ms);
    Duration::from_millis(millis)
}

/// Milliseconds for a log field.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A header's value, printable (a header may carry any byte above 0x7f).
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(printable)
}

fn graph_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    request_id: Option<String>,
    path: &str,
) -> Error {
    let retry_after = match retry_wait(headers, status, path, request_id.as_deref()) {
        Ok(wait) => wait,
        Err(too_long) => return too_long,
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Error::Throttled {
            retry_after,
            request_id,
            information: header_text(headers, "x-ms-throttle-information"),
        };
    }
    let (code, message) = match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(env) => (printable(&env.error.code), printable(&env.error.message)),
        Err(_) => (
            status.canonical_reason().unwrap_or("Error").to_string(),
            printable(&String::from_utf8_lossy(body.get(..200).unwrap_or(body))),
        ),
    };
    Error::Graph {
        path: path.to_string(),
        status: status.as_u16(),
        code,
        message,
        request_id,
        retry_after,
    }
}

/// The URL without its query, for messages (queries can be long; they hold no secret).
fn strip_query(url: &str) -> String {
    shown_url(url)
}

/// The `roles` claim of an access token, read without verifying it (b2bsync is the token's
/// client, not its audience; this only tells `check` which permissions were granted).
pub fn token_roles(token: &str) -> Vec<String> {
    let Some(payload) = token.split('.').nth(1) else {
        return Vec::new();
    };
    use base64::Engine as _;
    let Ok(bytes) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('='))
    else {
        return Vec::new();
    };
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("roles").cloned())
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_fractions_and_dates() {
        let mut h = HeaderMap::new();
        let wait = |h: &HeaderMap| {
            retry_wait(h, StatusCode::TOO_MANY_REQUESTS, "/v1.0/users", None)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        h.insert("retry-after", HeaderValue::from_static("10"));
        assert_eq!(wait(&h), Some(Duration::from_secs(10)));
        h.insert("retry-after", HeaderValue::from_static("2.128"));
        assert_eq!(wait(&h), Some(Duration::from_millis(2128)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(wait(&h), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(wait(&h), None);
    }

    // See: issue 10 (a Retry-After of 1e30 panicked in Duration::from_secs_f64).
    #[test]
    fn a_huge_retry_after_on_a_429_or_503_is_a_wait_too_long_and_not_retried() {
        for value in ["1e30", "99999999999999999999", "1e19", "100000000", "301"] {
            for status in [
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::SERVICE_UNAVAILABLE,
            ] {
                let mut h = HeaderMap::new();
                h.insert("retry-after", HeaderValue::from_static(value));
                let err = graph_error(status, &h, b"{}", Some("r9".into()), "/v1.0/users");
                assert!(
                    matches!(&err, Error::WaitTooLong { asked, .. } if asked == value),
                    "{value}: {err:?}"
                );
                assert!(!err.transient() && !err.not_processed(), "{value}");
                assert!(err.retry_after().is_none());
                assert!(err.to_string().contains("r9"));
            }
        }
        // On an answer that is not retried, a Retry-After means nothing and is not the error.
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("1e30"));
        let err = graph_error(StatusCode::NOT_FOUND, &h, b"{}", None, "/v1.0/users/x");
        assert_eq!(err.status(), Some(404));
        assert!(matches!(
            err,
            Error::Graph {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn server_error_text_loses_its_control_characters() {
        let body = "{\"error\":{\"code\":\"Bad\\u001b[2J\",\"message\":\"line\\u001b]0;owned\\u0007\\r\\nnext\\u202e\"}}";
        let err = graph_error(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            body.as_bytes(),
            None,
            "/v1.0/users",
        );
        let Error::Graph { code, message, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(code, "Bad[2J");
        assert_eq!(message, "line]0;owned  next");
        assert!(!err.to_string().chars().any(char::is_control));
    }

    #[test]
    fn graph_errors_keep_code_and_request_id() {
        let body = br#"{"error":{"code":"Request_BadRequest","message":"Unable to update the specified properties for on-premises mastered Directory Sync objects or objects currently undergoing migration.","innerError":{}}}"#;
        let err = graph_error(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            body,
            Some("r1".into()),
            "/v1.0/users/x",
        );
        assert_eq!(err.code(), Some("Request_BadRequest"));
        assert!(!err.transient());
        assert!(err.help().contains("synced from AD"));
        assert!(err.to_string().contains("r1"));
        let throttled = graph_error(
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            b"{}",
            None,
            "/v1.0/users",
        );
        assert!(throttled.not_processed());
        let dropped = Error::Transport {
            url: "x".into(),
            reason: "connection reset".into(),
        };
        assert!(dropped.transient() && !dropped.not_processed());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..20 {
            let d = backoff(attempt);
            assert!(d <= Duration::from_secs(60));
            assert!(d >= Duration::from_millis(500));
        }
    }

    #[test]
    fn upn_segments_are_encoded() {
        assert_eq!(
            urlencode("ana_fabrikam.example#EXT#@lab.onmicrosoft.com"),
            "ana_fabrikam.example%23EXT%23%40lab.onmicrosoft.com"
        );
        assert_eq!(
            urlencode("../../users?x=1 y"),
            "..%2F..%2Fusers%3Fx%3D1%20y"
        );
    }

    #[test]
    fn settings_refuse_cleartext_roots() {
        let ok = GraphSettings::new(
            "https://graph.microsoft.com",
            "https://login.microsoftonline.com",
            "t",
            "c",
        );
        assert!(ok.validate().is_ok());
        for (graph, authority, setting) in [
            (
                "http://graph.microsoft.com",
                "https://login.microsoftonline.com",
                "graph_url",
            ),
            (
                "https://graph.microsoft.com",
                "http://login.microsoftonline.com",
                "authority",
            ),
            (
                "graph.microsoft.com",
                "https://login.microsoftonline.com",
                "graph_url",
            ),
            (
                "https://graph.microsoft.com",
                "file:///etc/passwd",
                "authority",
            ),
        ] {
            let err = GraphSettings::new(graph, authority, "t", "c")
                .validate()
                .unwrap_err();
            assert!(
                matches!(err, Error::Cleartext { setting: s, .. } if s == setting),
                "{graph} {authority}: {err:?}"
            );
            assert!(err.help().contains("https://"));
        }
    }

    fn client() -> GraphClient {
        let settings = GraphSettings::new(
            "https://graph.example:8443",
            "https://login.example",
            "t",
            "c",
        );
        GraphClient::new(settings, Credential::Secret("s".to_string().into()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_walk_refuses_foreign_links_repeats_and_pages_past_the_bound() {
        let graph = client();
        let first = "https://graph.example:8443/v1.0/users?$top=999";
        let mut walk = Walk::new(&graph, first);
        for foreign in [
            "http://graph.example:8443/v1.0/users?$skiptoken=a",
            "https://graph.example/v1.0/users?$skiptoken=a",
            "https://other.example:8443/v1.0/users?$skiptoken=a",
            "https://graph.example:8443@other.example:8443/v1.0/users",
            "https://user@graph.example:8443/v1.0/users",
            "/v1.0/users?$skiptoken=a",
        ] {
            let err = walk.next(foreign.to_string()).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::UntrustedLink {
                        kind: LinkKind::Next,
                        ..
                    }
                ),
                "{foreign}: {err:?}"
            );
        }
        // Host names compare without case.
        assert!(
            walk.next("https://GRAPH.example:8443/v1.0/users?$skiptoken=0".into())
                .is_ok()
        );
        let err = walk.next(first.to_string()).unwrap_err();
        assert!(matches!(err, Error::LinkLoop { .. }), "{err:?}");
        // Two pages so far; every new link is followed up to MAX_PAGES pages.
        for page in 3..=MAX_PAGES {
            let link = format!("https://graph.example:8443/v1.0/users?$skiptoken={page}");
            walk.next(link)
                .unwrap_or_else(|e| panic!("page {page}: {e}"));
        }
        let err = walk
            .next("https://graph.example:8443/v1.0/users?$skiptoken=last".into())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooManyPages {
                    limit: MAX_PAGES,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn backoff_never_overflows() {
        for attempt in [0, 1, 6, 7, 63, 64, u32::MAX] {
            let d = backoff(attempt);
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_secs(60));
        }
    }

    #[test]
    fn mailbox_is_read_from_assigned_plans() {
        let dto: UserDto = serde_json::from_str(
            r#"{"id":"1","userPrincipalName":"a@b","assignedPlans":[{"capabilityStatus":"Enabled","service":"exchange"}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(CloudUser::from(dto).has_mailbox);
    }

    #[test]
    fn the_last_successful_sign_in_is_kept_only_when_it_is_a_time() {
        let sign_in = |activity: &str| {
            let dto: UserDto = serde_json::from_str(&format!(
                r#"{{"id":"1","userPrincipalName":"a@b","signInActivity":{activity}}}"#
            ))
            .unwrap_or_else(|e| panic!("{e}"));
            CloudUser::from(dto).last_successful_sign_in
        };
        assert_eq!(
            sign_in(
                r#"{"lastSuccessfulSignInDateTime":"2026-11-30T08:15:00.1234567Z","lastSignInDateTime":null}"#
            ),
            Some("2026-11-30T08:15:00.1234567Z".to_string())
        );
        assert_eq!(
            sign_in(r#"{"lastSuccessfulSignInDateTime":"2026-11-30T09:15:00+01:00"}"#),
            Some("2026-11-30T08:15:00Z".to_string())
        );
        assert_eq!(sign_in("null"), None);
        assert_eq!(sign_in(r#"{"lastSuccessfulSignInDateTime":null}"#), None);
        assert_eq!(
            sign_in(r#"{"lastSuccessfulSignInDateTime":"yesterday"}"#),
            None
        );
        assert_eq!(
            sign_in(&format!(
                r#"{{"lastSuccessfulSignInDateTime":"{}"}}"#,
                "9".repeat(5000)
            )),
            None
        );
    }
}
