//! The `/v1.0/...` entry point: parses the path and query, authenticates, charges throttling,
//! dispatches to the users, delta, invitations and `$batch` handlers, and adds the throttling
//! headers. Every Graph request, batched or not, goes through [`graph`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::auth::{self, Principal};
use super::directory::{Emulator, canonical_property, lock};
use super::http::{Ctx, LogExtra, graph_error, retry_after_value, too_many_requests};
use super::throttle::Charge;
use super::{batch, delta, invitations, organization, users};

/// Query options, matched case-insensitively with or without the `$` prefix.
#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    /// The raw query string, for building nextLinks that keep the original options.
    pub raw: String,
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let raw = raw.unwrap_or_default().to_owned();
        let pairs = raw
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k, true), percent_decode(v, true))
            })
            .collect();
        Query { raw, pairs }
    }

    /// The value of option `name` (given without `$`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k.trim_start_matches('$').eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The raw query without option `name`, for appending a new token.
    pub fn raw_without(&self, names: &[&str]) -> Vec<String> {
        self.raw
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|pair| {
                let key = percent_decode(pair.split_once('=').map_or(*pair, |(k, _)| k), true);
                !names
                    .iter()
                    .any(|n| key.trim_start_matches('$').eq_ignore_ascii_case(n))
            })
            .map(str::to_owned)
            .collect()
    }
}

/// Decodes `%XX` escapes (and `+` as space in query strings).
pub(crate) fn percent_decode(input: &str, plus_is_space: bool) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
pub(crate) fn percent_encode(input: &str) -> String {
    input
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The parsed `$select`: `None` = the default property set.
pub(crate) fn parse_select(query: &Query) -> Result<Option<Vec<&'static str>>, String> {
    let Some(select) = query.get("select") else {
        return Ok(None);
    };
    let mut props = Vec::new();
    for name in select.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match canonical_property(name) {
            Some(p) if !props.contains(&p) => props.push(p),
            Some(_) => {}
            None => {
                return Err(format!(
                    "Parsing OData Select and Expand failed: Could not find a property named '{name}' on type 'microsoft.graph.user'."
                ));
            }
        }
    }
    Ok(Some(props))
}

/// Whether the request sent `ConsistencyLevel: eventual`.
pub(crate) fn eventual(headers: &HeaderMap) -> bool {
    headers
        .get("consistencylevel")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual"))
}

/// What a Graph request is.
#[derive(Debug, Clone)]
enum Route {
    ListUsers,
    CountUsers,
    Delta,
    GetUser(String),
    PatchUser(String),
    Invite,
    Batch,
    Organization,
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
        (&Method::POST, ["invitations"]) => Route::Invite,
        (&Method::POST, ["$batch"]) => Route::Batch,
        (&Method::GET, ["organization"]) => Route::Organization,
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
        | Route::DirectoryRoles
        | Route::RoleMembers(_) => (1, 0, false),
        Route::PatchUser(_) => (1, 1, false),
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

/// Everything a handler needs about one request.
pub(crate) struct Call<'a> {
    pub emu: &'a Arc<Emulator>,
    pub ctx: &'a Ctx,
    pub principal: &'a Principal,
    pub headers: &'a HeaderMap,
    pub query: &'a Query,
    pub body: &'a Bytes,
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
                if cost.resource_units > 0 {
                    set_header(
                        headers,
                        "x-ms-resource-unit",
                        &cost.resource_units.to_string(),
                    );
                }
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
        Route::Invite => invitations::invite(&call),
        Route::Batch => batch::batch(&call).await,
        Route::Organization => organization::organization(&call),
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
