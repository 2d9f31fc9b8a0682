//! The `/v1.0/...` entry point: parses the path and query, authenticates, charges throttling,
//! dispatches to the users, delta, invitations and `$batch` handlers, and adds the throttling
//! headers. Every Graph request, batched or not, goes through [`graph`].

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::auth;
use super::directory::{Emulator, lock};
use super::http::{Ctx, LogExtra, graph_error, retry_after_value, too_many_requests};
use super::request::{Call, Query, percent_decode};
use super::throttle::Charge;
use super::{batch, delta, invitations, organization, users};

/// What a Graph request is.
#[derive(Debug, Clone)]
enum Route {
    ListUsers,
    CountUsers,
    Delta,
    GetUser(String),
    PatchUser(String),
    RevokeSessions(String),
    Invite,
    Batch,
    Organization,
    AuthorizationPolicy,
    DirectoryRoles,
    RoleMembers(String),
    NoSegment(String),
    MethodNotAllowed,
}

fn route(method: &Method, segments: &[String]) -> Route {
    let first = segments.first().map(String::as_str).unwrap_or_default();
    // `users('x@y')` addresses a user by key, needed when a UPN starts with `$`.
    if let Some(key) = first
        .strip_prefix("users('")
        .and_then(|rest| rest.strip_suffix("')"))
    {
        let key = key.replace("''", "'");
        return match *method {
            Method::GET if segments.len() == 1 => Route::GetUser(key),
            Method::PATCH if segments.len() == 1 => Route::PatchUser(key),
            Method::POST
                if segments.len() == 2
                    && segments.get(1).map(String::as_str) == Some("revokeSignInSessions") =>
            {
                Route::RevokeSessions(key)
            }
            _ => Route::MethodNotAllowed,
        };
    }
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (method, parts.as_slice()) {
        (&Method::GET, ["users"]) => Route::ListUsers,
        (&Method::GET, ["users", "$count"]) => Route::CountUsers,
        (&Method::GET, ["users", "delta" | "delta()"]) => Route::Delta,
        (&Method::GET, ["users", key]) => Route::GetUser((*key).to_owned()),
        (&Method::PATCH, ["users", key]) => Route::PatchUser((*key).to_owned()),
        (&Method::POST, ["users", key, "revokeSignInSessions"]) => {
            Route::RevokeSessions((*key).to_owned())
        }
        (&Method::POST, ["invitations"]) => Route::Invite,
        (&Method::POST, ["$batch"]) => Route::Batch,
        (&Method::GET, ["organization"]) => Route::Organization,
        (&Method::GET, ["policies", "authorizationPolicy"]) => Route::AuthorizationPolicy,
        (&Method::GET, ["directoryRoles"]) => Route::DirectoryRoles,
        (&Method::GET, ["directoryRoles", id, "members"]) => Route::RoleMembers((*id).to_owned()),
        (_, ["users"] | ["users", _] | ["invitations"] | ["$batch"]) => Route::MethodNotAllowed,
        (_, ["users", key, ..]) => Route::NoSegment(
            segments
                .get(2)
                .cloned()
                .unwrap_or_else(|| (*key).to_owned()),
        ),
        _ => Route::NoSegment(first.to_owned()),
    }
}

/// The resource-unit and write cost of a request (contract §5.2).
fn charge(route: &Route, query: &Query) -> Option<Charge> {
    let (base, writes, invitation) = match route {
        Route::ListUsers => (2_i32, 0, false),
        Route::CountUsers
        | Route::Delta
        | Route::GetUser(_)
        | Route::Organization
        | Route::AuthorizationPolicy
        | Route::DirectoryRoles
        | Route::RoleMembers(_) => (1, 0, false),
        Route::PatchUser(_) | Route::RevokeSessions(_) => (1, 1, false),
        Route::Invite => (0, 0, true),
        _ => return None,
    };
    let mut cost = base;
    if invitation {
        return Some(Charge {
            resource_units: 0,
            writes: 0,
            invitation: true,
        });
    }
    if query.get("select").is_some() {
        cost -= 1;
    }
    if query.get("expand").is_some() {
        cost += 1;
    }
    if query
        .get("top")
        .and_then(|t| t.parse::<i64>().ok())
        .is_some_and(|t| t < 20)
    {
        cost -= 1;
    }
    Some(Charge {
        resource_units: cost.max(1) as u32,
        writes,
        invitation: false,
    })
}

fn set_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// `/v1.0/{*rest}`.
pub(crate) async fn graph(State(emu): State<Arc<Emulator>>, req: Request) -> Response {
    let ctx = Ctx::of(&req);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let rest = path.strip_prefix("/v1.0").unwrap_or(path);
    let segments: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let principal = match auth::authenticate(&emu, &ctx, &parts.headers) {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let query = Query::parse(parts.uri.query());
    let route = route(&parts.method, &segments);
    let cost = charge(&route, &query);
    let mut usage = 0.0;
    if let Some(cost) = &cost {
        let users = lock(&emu.dir).entries.len();
        let scale = emu.time_scale();
        let result = lock(&emu.throttle).charge(&principal.app_id, cost, users, scale);
        match result {
            Ok(u) => usage = u,
            Err(refusal) => {
                let mut response =
                    too_many_requests(&ctx, &retry_after_value(refusal.wait_secs, scale));
                let (scope, information) = refusal.kind.scope_and_information();
                let headers = response.headers_mut();
                set_header(
                    headers,
                    "x-ms-throttle-scope",
                    &format!("{scope}/{}/{}", principal.app_id, emu.tenant_id),
                );
                set_header(headers, "x-ms-throttle-information", information);
                set_header(
                    headers,
                    "x-ms-throttle-limit-percentage",
                    &format!("{:.1}", refusal.percentage.max(1.0)),
                );
                // A refused request charges nothing, so it reports no resource unit.
                response.extensions_mut().insert(LogExtra {
                    app_id: Some(principal.app_id.clone()),
                    ..LogExtra::default()
                });
                return response;
            }
        }
    }
    let body = match axum::body::to_bytes(body, 4 << 20).await {
        Ok(body) => body,
        Err(_) => {
            return graph_error(
                &ctx,
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "The request body could not be read.",
            );
        }
    };
    let call = Call {
        emu: &emu,
        ctx: &ctx,
        principal: &principal,
        headers: &parts.headers,
        query: &query,
        body: &body,
    };
    let mut response = match route {
        Route::ListUsers => users::list(&call),
        Route::CountUsers => users::count(&call),
        Route::Delta => delta::delta(&call),
        Route::GetUser(key) => users::get(&call, &key),
        Route::PatchUser(key) => users::patch(&call, &key),
        Route::RevokeSessions(key) => users::revoke_sessions(&call, &key),
        Route::Invite => invitations::invite(&call),
        Route::Batch => batch::batch(&call).await,
        Route::Organization => organization::organization(&call),
        Route::AuthorizationPolicy => organization::authorization_policy(&call),
        Route::DirectoryRoles => organization::directory_roles(&call),
        Route::RoleMembers(id) => organization::role_members(&call, &id),
        Route::NoSegment(segment) => graph_error(
            &ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Resource not found for the segment '{segment}'."),
        ),
        Route::MethodNotAllowed => graph_error(
            &ctx,
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "Specified HTTP method is not allowed for the request target.",
        ),
    };
    if let Some(cost) = &cost {
        let headers = response.headers_mut();
        if cost.resource_units > 0 {
            set_header(
                headers,
                "x-ms-resource-unit",
                &cost.resource_units.to_string(),
            );
        }
        if usage > 0.8 {
            set_header(
                headers,
                "x-ms-throttle-limit-percentage",
                &format!("{usage:.1}"),
            );
        }
    }
    let mut extra = response
        .extensions()
        .get::<LogExtra>()
        .cloned()
        .unwrap_or_default();
    extra.app_id = Some(principal.app_id.clone());
    response.extensions_mut().insert(extra);
    response
}
