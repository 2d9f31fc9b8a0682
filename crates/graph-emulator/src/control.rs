//! The control API under `/_emulator/...`: not part of Graph, no token, loopback peers only.
//! Accept an invitation as the user would, run an Entra Connect cycle, inject faults, read
//! and clear the request log, dump the tenant, change the time scale, invalidate delta tokens.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::connect::{self, CycleRequest};
use super::directory::{Emulator, FaultSpec, lock, now_graph};
use super::http::{Ctx, PeerAddr, graph_error, json_response};
use super::tenant::ObjectIdentity;

fn ok(body: &Value) -> Response {
    json_response(StatusCode::OK, "application/json", body)
}

fn no_content() -> Response {
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Refuses control calls from anything but a loopback peer.
pub(crate) async fn loopback_only(req: Request, next: Next) -> Response {
    let loopback = req
        .extensions()
        .get::<PeerAddr>()
        .is_none_or(|peer| peer.0.ip().is_loopback());
    if !loopback {
        let ctx = Ctx::of(&req);
        return graph_error(
            &ctx,
            StatusCode::FORBIDDEN,
            "Forbidden",
            "The control API is only served to loopback clients.",
        );
    }
    next.run(req).await
}

async fn json_body<T: for<'de> Deserialize<'de> + Default>(req: Request) -> Result<T, String> {
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|e| e.to_string())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// Body of `POST /_emulator/users/{id}/accept`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Accept {
    issuer: Option<String>,
    issuer_assigned_id: Option<String>,
}

/// `POST /_emulator/users/{id}/accept`: the user redeems the pending invitation.
pub(crate) async fn accept(
    State(emu): State<Arc<Emulator>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let ctx = Ctx::of(&req);
    let body: Accept = match json_body(req).await {
        Ok(body) => body,
        Err(message) => return graph_error(&ctx, StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    let mut dir = lock(&emu.dir);
    let Some(index) = dir.find(&id) else {
        return super::users::not_found(&ctx, &id);
    };
    let user = &mut dir.entries[index].user;
    if user.external_user_state.as_deref() != Some("PendingAcceptance") {
        return graph_error(
            &ctx,
            StatusCode::CONFLICT,
            "Conflict",
            "The user has no pending invitation.",
        );
    }
    user.external_user_state = Some("Accepted".to_owned());
    user.external_user_state_change_date_time = Some(now_graph());
    let assigned = body
        .issuer_assigned_id
        .or_else(|| user.mail.clone())
        .or_else(|| user.other_mails.first().cloned());
    user.identities = vec![ObjectIdentity {
        sign_in_type: Some("federated".to_owned()),
        issuer: Some(body.issuer.unwrap_or_else(|| "ExternalAzureAD".to_owned())),
        issuer_assigned_id: assigned,
    }];
    let view = super::directory::graph_view(user);
    dir.touch(index);
    ok(&Value::Object(view))
}

/// Body of `POST /_emulator/users/{id}/sign-in`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignIn {
    /// When (RFC 3339); now when absent.
    time: Option<String>,
    /// `false`: a non-interactive sign-in.
    interactive: Option<bool>,
}

/// `POST /_emulator/users/{id}/sign-in`: records a successful sign-in of the user in its
/// `signInActivity` (contract §2.6). The change counter is not bumped: delta does not
/// report sign-in activity [A].
pub(crate) async fn sign_in(
    State(emu): State<Arc<Emulator>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let ctx = Ctx::of(&req);
    let body: SignIn = match json_body(req).await {
        Ok(body) => body,
        Err(message) => return graph_error(&ctx, StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    let time = match body.time.as_deref().map(str::parse::<jiff::Timestamp>) {
        None => now_graph(),
        Some(Ok(t)) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Some(Err(e)) => {
            let message = format!("`time` is not an RFC 3339 time: {e}");
            return graph_error(&ctx, StatusCode::BAD_REQUEST, "BadRequest", &message);
        }
    };
    let mut dir = lock(&emu.dir);
    let Some(index) = dir.find(&id) else {
        return super::users::not_found(&ctx, &id);
    };
    let entry = &mut dir.entries[index];
    let activity = entry
        .user
        .sign_in_activity
        .get_or_insert_with(Default::default);
    let request_id = Some(uuid::Uuid::new_v4().to_string());
    if body.interactive == Some(false) {
        activity.last_non_interactive_sign_in_date_time = Some(time.clone());
        activity.last_non_interactive_sign_in_request_id = request_id.clone();
    } else {
        activity.last_sign_in_date_time = Some(time.clone());
        activity.last_sign_in_request_id = request_id.clone();
    }
    activity.last_successful_sign_in_date_time = Some(time);
    activity.last_successful_sign_in_request_id = request_id;
    let value = serde_json::to_value(&*activity).unwrap_or(Value::Null);
    entry
        .view
        .insert("signInActivity".to_owned(), value.clone());
    ok(&value)
}

/// `POST /_emulator/connect/cycle`: one Entra Connect import/sync/export from the AD.
pub(crate) async fn connect_cycle(State(emu): State<Arc<Emulator>>, req: Request) -> Response {
    let ctx = Ctx::of(&req);
    let body: CycleRequest = match json_body(req).await {
        Ok(body) => body,
        Err(message) => return graph_error(&ctx, StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    match connect::cycle(&emu, &body).await {
        Ok(counts) => ok(&serde_json::to_value(counts).unwrap_or(Value::Null)),
        Err(err) => graph_error(
            &ctx,
            StatusCode::BAD_GATEWAY,
            "ConnectCycleFailed",
            &err.to_string(),
        ),
    }
}

/// `POST /_emulator/faults`.
pub(crate) async fn set_faults(State(emu): State<Arc<Emulator>>, req: Request) -> Response {
    let ctx = Ctx::of(&req);
    let spec: FaultSpec = match json_body(req).await {
        Ok(spec) => spec,
        Err(message) => return graph_error(&ctx, StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    if !(0.0..=1.0).contains(&spec.rate)
        || spec
            .kinds
            .iter()
            .any(|k| !["429", "503", "drop", "lost"].contains(&k.as_str()))
    {
        return graph_error(
            &ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "rate must be within 0.0..1.0 and kinds among \"429\", \"503\", \"drop\", \"lost\".",
        );
    }
    let header_safe = [
        &spec.retry_after,
        &spec.limit_percentage,
        &spec.token_redirect,
    ]
    .into_iter()
    .flatten()
    .all(|v| axum::http::HeaderValue::from_str(v).is_ok());
    if !header_safe || spec.body_bytes.is_some_and(|n| n > MAX_BODY_BYTES) {
        return graph_error(
            &ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "retryAfter, limitPercentage and tokenRedirect must be valid header values, and bodyBytes at most 1 GiB.",
        );
    }
    *lock(&emu.faults) = Some(spec.clone());
    ok(&serde_json::to_value(spec).unwrap_or(Value::Null))
}

/// The largest padded body the `bodyBytes` fault sends.
const MAX_BODY_BYTES: u64 = 1 << 30;

/// `DELETE /_emulator/faults`.
pub(crate) async fn clear_faults(State(emu): State<Arc<Emulator>>) -> Response {
    *lock(&emu.faults) = None;
    no_content()
}

/// `DELETE /_emulator/users/{id}`: deletes a user, as an admin would in the portal (Graph
/// itself would need `User.DeleteRestore.All`, which b2bsync never has). Delta reports it
/// as `@removed` with reason `deleted`.
pub(crate) async fn delete_user(
    State(emu): State<Arc<Emulator>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let ctx = Ctx::of(&req);
    let mut dir = lock(&emu.dir);
    let Some(index) = dir.find(&id) else {
        return super::users::not_found(&ctx, &id);
    };
    dir.delete(index);
    no_content()
}

/// `GET /_emulator/faults`.
pub(crate) async fn faults(State(emu): State<Arc<Emulator>>) -> Response {
    ok(&serde_json::to_value(lock(&emu.faults).clone()).unwrap_or(Value::Null))
}

/// `GET /_emulator/requests`.
pub(crate) async fn requests(State(emu): State<Arc<Emulator>>) -> Response {
    let log = lock(&emu.log).clone();
    ok(&json!({ "value": log }))
}

/// `DELETE /_emulator/requests`.
pub(crate) async fn clear_requests(State(emu): State<Arc<Emulator>>) -> Response {
    lock(&emu.log).clear();
    no_content()
}

/// `GET /_emulator/tenant`: every user with private fields, plus recorded invitations and
/// sign-in session revocations.
pub(crate) async fn tenant(State(emu): State<Arc<Emulator>>) -> Response {
    let dir = lock(&emu.dir);
    let users: Vec<&super::tenant::User> = dir.entries.iter().map(|e| &e.user).collect();
    ok(&json!({
        "tenantId": emu.tenant_id,
        "initialDomain": emu.initial_domain,
        "verifiedDomains": emu.verified_domains,
        "users": users,
        "invitations": dir.invitations,
        "revocations": dir.revocations,
    }))
}

/// Body of `POST /_emulator/time-scale`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TimeScale {
    time_scale: f64,
}

/// `POST /_emulator/time-scale` `{"timeScale": 0.01}`: windows and refill rates change from now
/// on; current usage is kept.
pub(crate) async fn set_time_scale(State(emu): State<Arc<Emulator>>, req: Request) -> Response {
    let ctx = Ctx::of(&req);
    let body: TimeScale = match json_body(req).await {
        Ok(body) => body,
        Err(message) => return graph_error(&ctx, StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    if !(body.time_scale > 0.0 && body.time_scale.is_finite()) {
        return graph_error(
            &ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "timeScale must be a positive number.",
        );
    }
    *lock(&emu.time_scale) = body.time_scale;
    ok(&json!({ "timeScale": body.time_scale }))
}

/// Body of `POST /_emulator/replication-delay`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReplicationDelay {
    ms: u64,
}

/// `POST /_emulator/replication-delay` `{"ms": 500}`: users invited from now on refuse PATCH
/// with `Directory_ObjectNotFound` for that long; `0` turns the mode off.
pub(crate) async fn set_replication_delay(
    State(emu): State<Arc<Emulator>>,
    req: Request,
) -> Response {
    let ctx = Ctx::of(&req);
    let body: ReplicationDelay = match json_body(req).await {
        Ok(body) => body,
        Err(message) => return graph_error(&ctx, StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    *lock(&emu.replication_delay) = std::time::Duration::from_millis(body.ms);
    ok(&json!({ "ms": body.ms }))
}

/// Body of `POST /_emulator/authorization-policy`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AuthorizationPolicy {
    allow_invites_from: String,
}

/// `POST /_emulator/authorization-policy` `{"allowInvitesFrom": "none"}`: what
/// `GET /policies/authorizationPolicy` answers from now on.
pub(crate) async fn set_authorization_policy(
    State(emu): State<Arc<Emulator>>,
    req: Request,
) -> Response {
    let ctx = Ctx::of(&req);
    let body: AuthorizationPolicy = match json_body(req).await {
        Ok(body) => body,
        Err(message) => return graph_error(&ctx, StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    if !super::organization::ALLOW_INVITES_FROM.contains(&body.allow_invites_from.as_str()) {
        return graph_error(
            &ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "allowInvitesFrom must be one of none, adminsAndGuestInviters, adminsGuestInvitersAndAllMembers, everyone.",
        );
    }
    *lock(&emu.allow_invites_from) = body.allow_invites_from.clone();
    ok(&json!({ "allowInvitesFrom": body.allow_invites_from }))
}

/// `POST /_emulator/throttle/reset`: forgets all throttling usage.
pub(crate) async fn reset_throttle(State(emu): State<Arc<Emulator>>) -> Response {
    lock(&emu.throttle).reset();
    no_content()
}

/// `POST /_emulator/delta/reset`: invalidates every delta token (next use gets 410).
pub(crate) async fn reset_delta(State(emu): State<Arc<Emulator>>) -> Response {
    lock(&emu.dir).delta_generation += 1;
    no_content()
}
