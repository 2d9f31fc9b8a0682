//! The reqwest adapter behind [`Cloud`]: bulk user reads with `$select` and pages of 999,
//! PATCH, the invitation body built by hand so `invitedUser.id` is never dropped, a
//! `client-request-id` on every call, Graph's `request-id` kept, bounded retries that
//! honour `Retry-After`, and every request paced to the published budgets ([`Pacer`]).

use std::collections::HashMap;
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
use super::{Cloud, Error, Invitation, InvitationSent, RequestIds, UserChanges, UserPatch};
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
        }
    }
}

/// A Graph client for one app in one tenant.
pub struct GraphClient {
    http: reqwest::Client,
    api: String,
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
    id: String,
    status: Option<String>,
    invite_redeem_url: Option<String>,
    invited_user: Option<IdDto>,
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
    /// Builds the HTTP client (rustls; the CA file replaces the OS store when given).
    pub fn new(settings: GraphSettings, credential: Credential) -> Result<Self, Error> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("b2bsync/", env!("CARGO_PKG_VERSION")))
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(15));
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                Error::Settings(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Settings(format!("{} is not a PEM CA bundle: {e}", path.display()))
            })?;
            builder = builder.tls_certs_only(certs);
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
            attempt += 1;
            self.pacer.acquire(&cost).await;
            let result = self.send_once(method.clone(), url, body).await;
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
            let wait = err
                .retry_after()
                .unwrap_or_else(|| backoff(attempt))
                .min(Duration::from_secs(120));
            if started.elapsed() + wait > self.settings.retry_budget {
                return Err(err);
            }
            tracing::warn!(
                attempt,
                wait_ms = wait.as_millis() as u64,
                status = err.status(),
                "Graph request will be retried: {err}"
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
        let transport = |e: reqwest::Error| Error::Transport {
            url: strip_query(url),
            reason: describe(&e),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let ids = RequestIds {
            request_id: header_text(&headers, "request-id"),
            client_request_id,
        };
        let bytes = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            return Ok(Answer {
                body: bytes.to_vec(),
                ids,
                limit_percentage: header_text(&headers, "x-ms-throttle-limit-percentage")
                    .and_then(|v| v.trim().parse::<f64>().ok()),
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
            reason: e.to_string(),
        })
    }

    /// Follows `@odata.nextLink` verbatim until the last page.
    async fn all_pages<T: for<'de> Deserialize<'de>>(
        &self,
        first: String,
    ) -> Result<Vec<T>, Error> {
        let mut out = Vec::new();
        let mut next = Some(first);
        while let Some(url) = next {
            let page: Page<T> = self.get_json(&url).await?;
            out.extend(page.value);
            next = page.next_link;
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
                    self.api, role.id
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
        // Each page becomes domain users as it arrives: the wire DTOs of a 100,000-user
        // tenant are never all held at once.
        let mut users: Vec<CloudUser> = Vec::new();
        let mut next = Some(format!("{}/users?$select={USER_SELECT}&$top=999", self.api));
        while let Some(url) = next {
            let page: Page<UserDto> = self.get_json(&url).await?;
            users.extend(page.value.into_iter().map(CloudUser::from));
            next = page.next_link;
        }
        users.shrink_to_fit();
        self.pacer.set_tenant_size(users.len());
        let mut roles = self.role_holders().await?;
        for user in &mut users {
            if let Some(held) = roles.remove(&user.id) {
                user.roles = held;
            }
        }
        Ok(users)
    }

    async fn delta_link(&self) -> Result<Option<String>, Error> {
        let url = format!(
            "{}/users/delta?$select={USER_SELECT}&$deltatoken=latest",
            self.api
        );
        let page: DeltaPage = self.get_json(&url).await?;
        match page.delta_link {
            Some(link) => Ok(Some(link)),
            None => Err(Error::Decode {
                url: strip_query(&url),
                reason: "no @odata.deltaLink in the answer to $deltatoken=latest".into(),
            }),
        }
    }

    async fn users_since(&self, link: &str, known: usize) -> Result<UserChanges, Error> {
        self.pacer.set_tenant_size(known);
        let mut changes = UserChanges::default();
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
                (Some(delta), _) => break delta,
                (None, Some(more)) => next = more,
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
        let url = format!("{}/users/{}?$select={USER_SELECT}", self.api, urlencode(id));
        match self.get_json::<UserDto>(&url).await {
            Ok(dto) => Ok(Some(dto.into())),
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

    async fn invite(&self, inv: &Invitation) -> Result<InvitationSent, Error> {
        // Built by hand: `invitedUser.id` must always be on the wire (see the .NET SDK bug
        // in graph-contract.md P6, where a backing store silently dropped it).
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
                reason: e.to_string(),
            })?;
        Ok(InvitationSent {
            invitation_id: dto.id,
            user_id: dto
                .invited_user
                .map(|u| u.id)
                .unwrap_or_else(|| inv.user_id.clone()),
            status: dto.status.unwrap_or_default(),
            redeem_url: dto.invite_redeem_url,
            ids: answer.ids,
        })
    }
}

/// Exponential backoff with full jitter: 1 s, 2 s, 4 s, ... capped at 60 s.
fn backoff(attempt: u32) -> Duration {
    let cap = Duration::from_secs(1u64 << attempt.min(6)).min(Duration::from_secs(60));
    let millis = rand::rng().random_range(cap.as_millis() as u64 / 2..=cap.as_millis() as u64);
    Duration::from_millis(millis)
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(str::to_string)
}

/// `Retry-After` in delta-seconds (fractional accepted) or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = header_text(headers, "retry-after")?;
    if let Ok(secs) = text.trim().parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
        return None;
    }
    let when = jiff::fmt::rfc2822::parse(text.trim()).ok()?.timestamp();
    let now = jiff::Timestamp::now();
    let secs = (when.as_second() - now.as_second()).max(0);
    Some(Duration::from_secs(secs as u64))
}

fn graph_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    request_id: Option<String>,
    path: &str,
) -> Error {
    let retry_after = retry_after(headers);
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Error::Throttled {
            retry_after,
            request_id,
            information: header_text(headers, "x-ms-throttle-information"),
        };
    }
    let (code, message) = match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(env) => (env.error.code, env.error.message),
        Err(_) => (
            status.canonical_reason().unwrap_or("Error").to_string(),
            String::from_utf8_lossy(&body[..body.len().min(200)]).to_string(),
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
    url.split('?').next().unwrap_or(url).to_string()
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Percent-encodes a path segment (a B2B UPN holds `#`).
fn urlencode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
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
        h.insert("retry-after", HeaderValue::from_static("10"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(10)));
        h.insert("retry-after", HeaderValue::from_static("2.128"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(2128)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
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
    }

    #[test]
    fn mailbox_is_read_from_assigned_plans() {
        let dto: UserDto = serde_json::from_str(
            r#"{"id":"1","userPrincipalName":"a@b","assignedPlans":[{"capabilityStatus":"Enabled","service":"exchange"}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(CloudUser::from(dto).has_mailbox);
    }
}
