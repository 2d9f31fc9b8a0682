//! Credentials without a secret: workload identity (a federated token from an external
//! issuer, such as a Kubernetes service account token, presented as the client assertion)
//! and the managed identity endpoint of the host (`GET /metadata/identity/oauth2/token`, as
//! Azure IMDS serves it, or App Service's `IDENTITY_ENDPOINT` with `X-IDENTITY-HEADER`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use super::auth::{aad_error, invalid_client, issue};
use super::directory::Emulator;
use super::graph::Query;
use super::http::{Ctx, json_response};
use super::tenant::App;

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
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
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

/// `GET /metadata/identity/oauth2/token?resource=...&api-version=...[&client_id=...]`.
pub(crate) async fn managed_identity_token(
    State(emu): State<Arc<Emulator>>,
    req: Request,
) -> Response {
    let ctx = Ctx::of(&req);
    let headers = req.headers();
    let imds = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let app_service = headers.get("x-identity-header").is_some();
    let bad = |error: &str, description: &str| {
        json_response(
            StatusCode::BAD_REQUEST,
            "application/json; charset=utf-8",
            &json!({ "error": error, "error_description": description }),
        )
    };
    if !imds && !app_service {
        return bad("invalid_request", "Required metadata header not specified");
    }
    let query = Query::parse(req.uri().query());
    let resource = query
        .get("resource")
        .unwrap_or_default()
        .trim_end_matches('/');
    if resource.is_empty() {
        return bad(
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    }
    if resource != emu.graph_resource.trim_end_matches('/') {
        return bad(
            "invalid_resource",
            &format!(
                "AADSTS500011: The resource principal named {resource} was not found in the tenant."
            ),
        );
    }
    let wanted = query.get("client_id");
    let Some(app) = emu
        .apps
        .iter()
        .filter(|a| a.managed_identity)
        .find(|a| wanted.is_none_or(|w| a.app_id.eq_ignore_ascii_case(w)))
    else {
        return bad(
            "invalid_request",
            "Identity not found: no managed identity is assigned to this host (or none with that client_id)",
        );
    };
    match issue(
        &emu,
        &app.app_id,
        app.display_name.clone(),
        &app.permissions,
        "2",
    ) {
        Ok(token) => {
            let expires_on = jiff::Timestamp::now().as_second() + emu.token_lifetime_secs as i64;
            json_response(
                StatusCode::OK,
                "application/json; charset=utf-8",
                &json!({
                    "access_token": token,
                    "client_id": app.app_id,
                    // IMDS sends these numbers as strings.
                    "expires_in": emu.token_lifetime_secs.to_string(),
                    "expires_on": expires_on.to_string(),
                    "ext_expires_in": emu.token_lifetime_secs.to_string(),
                    "not_before": (expires_on - emu.token_lifetime_secs as i64).to_string(),
                    "resource": emu.graph_resource,
                    "token_type": "Bearer",
                }),
            )
        }
        Err(e) => aad_error(
            &ctx,
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            50000,
            &format!("There was an error issuing a token: {e}"),
        ),
    }
}
