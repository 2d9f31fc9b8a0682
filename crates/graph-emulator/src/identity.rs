//! The managed identity endpoint of the host (`GET /metadata/identity/oauth2/token`, as Azure
//! IMDS serves it, or App Service's `IDENTITY_ENDPOINT` with `X-IDENTITY-HEADER`): a token
//! without any credential. The other credential without a secret, workload identity (a
//! federated token presented as the client assertion), is checked by the token endpoint
//! (`auth.rs`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::auth::{aad_error, issue};
use super::directory::Emulator;
use super::http::{Ctx, json_response};
use super::request::Query;

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
