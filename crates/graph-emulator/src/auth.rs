//! The token endpoint and Graph-side authentication (contract §6): client credentials with a
//! secret (form or HTTP Basic), a client assertion signed with a registered certificate, or a
//! federated token from an external issuer (workload identity, such as a Kubernetes service
//! account token, presented as the client assertion); the Entra error bodies, OpenID
//! discovery for MSAL, issuing and checking the emulator's own access tokens, and the
//! permission table of §6.3.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha1::Digest;

use super::certificate::certificate_key;
use super::directory::Emulator;
use super::http::{Ctx, graph_error, json_response};
use super::tenant::App;

/// The assertion type of the certificate flow.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The caller of a Graph request, from its access token.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub app_id: String,
    pub roles: Vec<String>,
}

impl Principal {
    /// Whether the token carries any of `permissions`.
    pub fn has_any(&self, permissions: &[&str]) -> bool {
        self.roles
            .iter()
            .any(|r| permissions.iter().any(|p| p.eq_ignore_ascii_case(r)))
    }
}

/// Read users (list, get, delta, `$count`).
pub(crate) const READ_USERS: &[&str] = &[
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
/// Write any user property.
pub(crate) const WRITE_USERS: &[&str] = &["User.ReadWrite.All", "Directory.ReadWrite.All"];
/// Invite (new guest or conversion).
pub(crate) const INVITE: &[&str] = &[
    "User.Invite.All",
    "User.ReadWrite.All",
    "Directory.ReadWrite.All",
];

/// Read `signInActivity` (contract §2.6): no user or directory permission stands in.
pub(crate) const AUDIT_LOG_READ: &[&str] = &["AuditLog.Read.All"];

/// Revoke a user's sign-in sessions (contract §2.5).
pub(crate) const REVOKE_SESSIONS: &[&str] = &[
    "User.RevokeSessions.All",
    "User.ReadWrite.All",
    "Directory.ReadWrite.All",
];

/// Claims of the access tokens the emulator issues.
#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    aud: String,
    iss: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    app_displayname: Option<String>,
    appid: String,
    appidacr: String,
    azp: String,
    azpacr: String,
    idp: String,
    idtyp: String,
    oid: String,
    roles: Vec<String>,
    sub: String,
    tid: String,
    uti: String,
    ver: String,
}

/// Decodes a thumbprint header as clients send it: base64url or base64, padded or not
/// (MSAL Python pads, jsonwebtoken does not).
fn thumbprint_bytes(text: &str) -> Option<Vec<u8>> {
    let normalized: String = text
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            other => other,
        })
        .collect();
    URL_SAFE_NO_PAD.decode(normalized).ok()
}

/// An Entra (AADSTS) error response.
pub(crate) fn aad_error(
    ctx: &Ctx,
    status: StatusCode,
    error: &str,
    code: u32,
    message: &str,
) -> Response {
    let timestamp = ctx.date.strftime("%Y-%m-%d %H:%M:%SZ").to_string();
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {message}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {timestamp}",
            ctx.request_id, ctx.client_request_id
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": ctx.request_id,
        "correlation_id": ctx.client_request_id,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    json_response(status, "application/json; charset=utf-8", &body)
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) async fn token(
    State(emu): State<Arc<Emulator>>,
    Path(tenant): Path<String>,
    req: Request,
) -> Response {
    let ctx = Ctx::of(&req);
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), 1 << 20).await {
        Ok(body) => body,
        Err(_) => {
            return aad_error(
                &ctx,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body could not be read.",
            );
        }
    };
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    if !emu.is_tenant(&tenant) {
        return aad_error(
            &ctx,
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    match field("grant_type") {
        Some("client_credentials") => {}
        Some(other) => {
            return aad_error(
                &ctx,
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            );
        }
        None => {
            return aad_error(
                &ctx,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            );
        }
    }
    let basic = basic_credentials(&headers);
    let client_id = field("client_id")
        .map(str::to_owned)
        .or_else(|| basic.as_ref().map(|(id, _)| id.clone()));
    let Some(client_id) = client_id else {
        return aad_error(
            &ctx,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let Some(app) = emu.app(&client_id) else {
        return aad_error(
            &ctx,
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        );
    };
    let scope = field("scope").unwrap_or_default();
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if scopes.len() != 1 || !graph_scope(&emu.graph_resource, scopes[0]) {
        return aad_error(
            &ctx,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            &format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        );
    }
    let secret = field("client_secret")
        .map(str::to_owned)
        .or_else(|| basic.map(|(_, secret)| secret));
    let method = if let Some(secret) = secret {
        if !app.client_secrets.contains(&secret) {
            return aad_error(
                &ctx,
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                    app.app_id
                ),
            );
        }
        "1"
    } else if let Some(assertion) = field("client_assertion") {
        if field("client_assertion_type") != Some(JWT_BEARER) {
            return aad_error(
                &ctx,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                700025,
                "Client assertion type is invalid. Expected 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'.",
            );
        }
        let checked = if is_federated(app, assertion) {
            check_federated(&ctx, app, assertion)
        } else {
            check_assertion(&emu, &ctx, &app.app_id, &app.certificates, assertion)
        };
        if let Err(response) = checked {
            return response;
        }
        "2"
    } else {
        return aad_error(
            &ctx,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    };
    match issue(
        &emu,
        &app.app_id,
        app.display_name.clone(),
        &app.permissions,
        method,
    ) {
        Ok(access_token) => json_response(
            StatusCode::OK,
            "application/json; charset=utf-8",
            &json!({
                "token_type": "Bearer",
                "expires_in": emu.token_lifetime_secs,
                "ext_expires_in": emu.token_lifetime_secs,
                "access_token": access_token,
            }),
        ),
        Err(err) => aad_error(
            &ctx,
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            50000,
            &format!("There was an error issuing a token: {err}"),
        ),
    }
}

/// Whether `scope` is the `.default` scope of the Graph resource, in the spellings Entra
/// accepts: `{resource}/.default`, `{resource}//.default`, and for the global Graph its
/// application id `00000003-0000-0000-c000-000000000000/.default`.
fn graph_scope(resource: &str, scope: &str) -> bool {
    let Some(prefix) = scope.strip_suffix("/.default") else {
        return false;
    };
    let prefix = prefix.trim_end_matches('/');
    prefix.eq_ignore_ascii_case(resource.trim_end_matches('/'))
        || (resource.eq_ignore_ascii_case(super::DEFAULT_GRAPH_RESOURCE)
            && prefix.eq_ignore_ascii_case("00000003-0000-0000-c000-000000000000"))
}

/// A 401 `invalid_client` with Entra's AADSTS error body: every refused client credential.
pub(crate) fn invalid_client(ctx: &Ctx, code: u32, message: &str) -> Response {
    aad_error(
        ctx,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        code,
        message,
    )
}

/// Client id and secret from `Authorization: Basic` (RFC 6749 §2.3.1: both form-urlencoded).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> String {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

/// Checks a client assertion against the app's registered certificates (contract §6.1).
fn check_assertion(
    emu: &Emulator,
    ctx: &Ctx,
    client_id: &str,
    certificates: &[String],
    assertion: &str,
) -> Result<(), Response> {
    let invalid = |code: u32, message: &str| invalid_client(ctx, code, message);
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| invalid(50027, "JWT token is invalid or malformed."))?;
    let (thumbprint, by_sha256) = match (&header.x5t_s256, &header.x5t) {
        (Some(t), _) => (t.clone(), true),
        (None, Some(t)) => (t.clone(), false),
        (None, None) => {
            return Err(invalid(
                700027,
                "Client assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '']",
            ));
        }
    };
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(invalid(
            5002738,
            &format!(
                "Invalid JWT token. '{:?}' is not a supported signature algorithm. Supported signing algorithms are: 'RS256,RS384,RS512,PS256,PS384,PS512'",
                header.alg
            ),
        ));
    }
    let digest = thumbprint_bytes(&thumbprint).unwrap_or_default();
    let key = certificates
        .iter()
        .filter_map(|pem| certificate_key(pem).ok())
        .find(|k| {
            if by_sha256 {
                k.sha256 == digest
            } else {
                k.sha1 == digest
            }
        });
    let Some(key) = key else {
        return Err(invalid(
            700027,
            &format!(
                "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]"
            ),
        ));
    };
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims: Value = jsonwebtoken::decode::<Value>(assertion, &key.key, &validation)
        .map_err(|_| invalid(700027, &format!("Client assertion contains an invalid signature. [Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '{thumbprint}']")))?
        .claims;
    let text = |name: &str| claim_text(&claims, name);
    if !text("iss").eq_ignore_ascii_case(client_id) || !text("sub").eq_ignore_ascii_case(client_id)
    {
        return Err(invalid(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
        ));
    }
    let audience = text("aud");
    let audience_ok = [emu.login_base.as_str(), emu.base_url.as_str()]
        .iter()
        .any(|base| {
            audience
                .strip_prefix(base.trim_end_matches('/'))
                .and_then(|rest| rest.strip_prefix('/'))
                .and_then(|rest| rest.strip_suffix("/oauth2/v2.0/token"))
                .is_some_and(|tenant| emu.is_tenant(tenant))
        });
    if !audience_ok {
        return Err(invalid(
            700212,
            &format!(
                "No matching federated identity record found for presented assertion audience '{audience}'. The audience must be the token endpoint of this tenant."
            ),
        ));
    }
    let now = jiff::Timestamp::now().as_second();
    let exp = claims.get("exp").and_then(Value::as_f64).map(|t| t as i64); // NumericDate may be fractional
    let nbf = claims
        .get("nbf")
        .and_then(Value::as_f64)
        .map_or(now, |t| t as i64);
    let Some(exp) = exp else {
        return Err(invalid(
            700024,
            "Client assertion is not within its valid time range. The assertion has no 'exp' claim.",
        ));
    };
    // Entra tolerates a few minutes of clock skew on nbf; expiry is strict.
    if now >= exp || nbf > now + 300 {
        let show = |t: i64| {
            jiff::Timestamp::from_second(t)
                .map(|t| t.strftime("%m/%d/%Y %H:%M:%S").to_string())
                .unwrap_or_default()
        };
        return Err(invalid(
            700024,
            &format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                show(now),
                show(nbf),
                show(exp)
            ),
        ));
    }
    Ok(())
}

/// A federated token carries no certificate thumbprint, and its issuer is not the app.
pub(crate) fn is_federated(app: &App, assertion: &str) -> bool {
    if app.federated_credentials.is_empty() {
        return false;
    }
    jsonwebtoken::decode_header(assertion)
        .map(|h| h.x5t.is_none() && h.x5t_s256.is_none())
        .unwrap_or(false)
}

/// Checks a federated token against the app's federated credentials: signature by the
/// issuer's key, issuer, subject, audience, and time range.
pub(crate) fn check_federated(ctx: &Ctx, app: &App, assertion: &str) -> Result<(), Response> {
    let invalid = |code: u32, message: &str| invalid_client(ctx, code, message);
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| invalid(50027, "JWT token is invalid or malformed."))?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(invalid(
            5002738,
            "Invalid JWT token. Supported signing algorithms are: 'RS256,PS256'",
        ));
    }
    let mut validation = Validation::new(header.alg);
    validation.validate_aud = false;
    validation.leeway = 0;
    let mut last_claims: Option<Value> = None;
    for credential in &app.federated_credentials {
        let Ok(key) = DecodingKey::from_rsa_pem(credential.public_key_pem.as_bytes()) else {
            continue;
        };
        let claims = match jsonwebtoken::decode::<Value>(assertion, &key, &validation) {
            Ok(data) => data.claims,
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                return Err(invalid(
                    700024,
                    "Client assertion is not within its valid time range.",
                ));
            }
            Err(_) => continue,
        };
        let text = |name: &str| claim_text(&claims, name);
        let audiences: Vec<String> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        if text("iss") == credential.issuer
            && text("sub") == credential.subject
            && audiences.iter().any(|a| credential.audiences.contains(a))
        {
            return Ok(());
        }
        last_claims = Some(claims);
    }
    let show = |name: &str| {
        last_claims
            .as_ref()
            .and_then(|c| c.get(name))
            .map(|v| v.to_string().trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    Err(invalid(
        70021,
        &format!(
            "No matching federated identity record found for presented assertion. Assertion Issuer: '{}'. Assertion Subject: '{}'. Assertion Audience: '{}'.",
            show("iss"),
            show("sub"),
            show("aud")
        ),
    ))
}

/// A string claim of an assertion, or `""` when it is missing or not a string.
fn claim_text(claims: &Value, name: &str) -> String {
    claims
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Issues an access token for the app.
pub(crate) fn issue(
    emu: &Emulator,
    app_id: &str,
    display_name: Option<String>,
    permissions: &[String],
    method: &str,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = jiff::Timestamp::now().as_second();
    let digest = sha2::Sha256::digest(app_id.to_ascii_lowercase().as_bytes());
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // A stable service-principal object id per app.
    let service_principal = uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string();
    let issuer = format!("https://sts.windows.net/{}/", emu.tenant_id);
    let claims = AccessClaims {
        aud: emu.graph_resource.clone(),
        iss: issuer.clone(),
        iat: now,
        nbf: now,
        exp: now + emu.token_lifetime_secs as i64,
        app_displayname: display_name,
        appid: app_id.to_owned(),
        appidacr: method.to_owned(),
        azp: app_id.to_owned(),
        azpacr: method.to_owned(),
        idp: issuer,
        idtyp: "app".to_owned(),
        oid: service_principal.clone(),
        roles: permissions.to_vec(),
        sub: service_principal,
        tid: emu.tenant_id.clone(),
        uti: URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes()),
        ver: "1.0".to_owned(),
    };
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(emu.keys.kid.clone());
    jsonwebtoken::encode(&header, &claims, &emu.keys.encoding)
}

/// Authenticates a Graph request from its bearer token (contract §6.2).
pub(crate) fn authenticate(
    emu: &Emulator,
    ctx: &Ctx,
    headers: &HeaderMap,
) -> Result<Principal, Response> {
    let unauthorized = |message: &str| {
        let mut response = graph_error(
            ctx,
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\""),
        );
        response
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim();
    let token = value
        .strip_prefix("Bearer")
        .or_else(|| value.strip_prefix("bearer"))
        .unwrap_or(value)
        .trim();
    if token.is_empty() {
        return Err(unauthorized("Access token is empty."));
    }
    if token.split('.').count() != 3 || jsonwebtoken::decode_header(token).is_err() {
        return Err(unauthorized(
            "CompactToken parsing failed with error code: 80049217",
        ));
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<AccessClaims>(token, &emu.keys.decoding, &validation)
        .map_err(|_| unauthorized("Access token validation failure."))?
        .claims;
    if claims.aud.trim_end_matches('/') != emu.graph_resource.trim_end_matches('/') {
        return Err(unauthorized(
            "Access token validation failure. Invalid audience.",
        ));
    }
    if !claims.tid.eq_ignore_ascii_case(&emu.tenant_id) {
        return Err(unauthorized("Access token validation failure."));
    }
    let now = jiff::Timestamp::now().as_second();
    if now >= claims.exp || now < claims.nbf {
        return Err(unauthorized(
            "Access token has expired or is not yet valid.",
        ));
    }
    Ok(Principal {
        app_id: claims.appid,
        roles: claims.roles,
    })
}

/// The OpenID configuration MSAL and azure-identity read.
pub(crate) async fn openid_configuration(
    State(emu): State<Arc<Emulator>>,
    Path(tenant): Path<String>,
) -> Response {
    if !emu.is_tenant(&tenant) && !["common", "organizations"].contains(&tenant.as_str()) {
        return json_response(
            StatusCode::BAD_REQUEST,
            "application/json; charset=utf-8",
            &json!({"error": "invalid_tenant", "error_description": format!("AADSTS90002: Tenant '{tenant}' not found.")}),
        );
    }
    let base = &emu.base_url;
    let tid = &emu.tenant_id;
    let body = json!({
        "token_endpoint": format!("{base}/{tid}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{tid}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/{tid}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{base}/oidc/userinfo"),
        "authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{tid}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": emu.graph_resource.trim_start_matches("https://"),
        "rbac_url": "https://pas.windows.net",
    });
    json_response(StatusCode::OK, "application/json; charset=utf-8", &body)
}

/// Instance discovery (`/common/discovery/instance`), for clients that do not disable it.
pub(crate) async fn instance_discovery(State(emu): State<Arc<Emulator>>) -> Response {
    let host = emu.base_url.trim_start_matches("https://").to_owned();
    let body = json!({
        "tenant_discovery_endpoint": format!("{}/{}/v2.0/.well-known/openid-configuration", emu.base_url, emu.tenant_id),
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    });
    json_response(StatusCode::OK, "application/json; charset=utf-8", &body)
}

/// The public key of the emulator's token signer as a JWKS.
pub(crate) async fn jwks(State(emu): State<Arc<Emulator>>) -> Response {
    let raw = &emu.keys.public_raw;
    let (x, y) = if raw.len() == 65 {
        (&raw[1..33], &raw[33..65])
    } else {
        (&raw[..0], &raw[..0])
    };
    let body = json!({"keys": [{
        "kty": "EC", "use": "sig", "crv": "P-256", "alg": "ES256",
        "kid": emu.keys.kid,
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
    }]});
    json_response(StatusCode::OK, "application/json; charset=utf-8", &body)
}

#[cfg(test)]
mod tests {
    use super::graph_scope;

    #[test]
    fn graph_scope_spellings() {
        let graph = "https://graph.microsoft.com";
        assert!(graph_scope(graph, "https://graph.microsoft.com/.default"));
        assert!(graph_scope(graph, "https://graph.microsoft.com//.default"));
        assert!(graph_scope(
            graph,
            "00000003-0000-0000-c000-000000000000/.default"
        ));
        assert!(!graph_scope(graph, "https://graph.microsoft.us/.default"));
        assert!(!graph_scope(graph, "https://graph.microsoft.com/User.Read"));
        assert!(!graph_scope(
            "https://graph.microsoft.us",
            "00000003-0000-0000-c000-000000000000/.default"
        ));
    }
}
