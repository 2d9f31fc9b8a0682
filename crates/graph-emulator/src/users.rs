//! `/v1.0/users`: list (with `$select`, `$filter`, `$top`, `$count`, `$search`, `$orderby`,
//! `$skiptoken` paging), `/users/$count`, get by id or UPN, and PATCH with the synced-object,
//! sensitive-property and permission refusals of contract §2.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::auth::{AUDIT_LOG_READ, READ_USERS, REVOKE_SESSIONS, WRITE_USERS};
use super::directory::{RevocationRecord, default_properties, lock, now_graph};
use super::filter::{self, FilterError, Need};
use super::http::{Ctx, graph_error, not_implemented, odata};
use super::request::{Call, Query, collection_unsupported, eventual, parse_select};
use super::tenant::User;

/// Default page size of `/users`.
const DEFAULT_PAGE: usize = 100;

/// "Insufficient privileges to complete the operation." (403).
pub(crate) fn denied(ctx: &Ctx) -> Response {
    graph_error(
        ctx,
        StatusCode::FORBIDDEN,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
}

fn bad_query(ctx: &Ctx, message: &str) -> Response {
    graph_error(
        ctx,
        StatusCode::BAD_REQUEST,
        "Request_UnsupportedQuery",
        message,
    )
}

/// The 404 of contract §2.2.
pub(crate) fn not_found(ctx: &Ctx, key: &str) -> Response {
    graph_error(
        ctx,
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{key}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

/// Keeps only the selected (or default) properties of a view; like Graph, `$select` without
/// `id` returns no `id` (only delta always adds it).
pub(crate) fn project(
    view: &Map<String, Value>,
    select: Option<&[&'static str]>,
) -> Map<String, Value> {
    let defaults = default_properties();
    let props = select.unwrap_or(&defaults);
    let mut out = Map::new();
    for prop in props {
        out.insert(
            (*prop).to_owned(),
            view.get(*prop).cloned().unwrap_or(Value::Null),
        );
    }
    out
}

/// `@odata.context` for users, e.g. `.../$metadata#users(id,mail)`.
pub(crate) fn context_url(base: &str, select: Option<&[&'static str]>, entity: bool) -> String {
    let mut url = format!("{base}/v1.0/$metadata#users");
    if let Some(props) = select {
        url.push_str(&format!("({})", props.join(",")));
    }
    if entity {
        url.push_str("/$entity");
    }
    url
}

/// The filter error as Graph reports it.
fn filter_error(ctx: &Ctx, err: FilterError) -> Response {
    match err {
        FilterError::Syntax(detail) => graph_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Invalid filter clause: {detail}"),
        ),
        FilterError::UnknownProperty(name) => graph_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "Invalid filter clause: Could not find a property named '{name}' on type 'microsoft.graph.user'."
            ),
        ),
        FilterError::Unsupported(prop) => bad_query(
            ctx,
            &format!(
                "Unsupported or invalid query filter clause specified for property '{prop}' of resource 'User'."
            ),
        ),
        FilterError::NotIndexed => bad_query(
            ctx,
            "The request uses a filter property that is not indexed",
        ),
    }
}

/// Users matching `$filter`/`$search` (sorted by `$orderby`, else in list order): their
/// total, and those in `window` (offset, count) as `render` makes them of their Graph views;
/// or the error response. A plain list (no filter, search or order) takes its window
/// straight from the directory, so each page of a large tenant costs its own size only.
fn matching<T>(
    call: &Call<'_>,
    advanced: bool,
    window: Option<(usize, usize)>,
    render: impl Fn(&Map<String, Value>) -> T,
) -> Result<(usize, Vec<T>), Response> {
    let ctx = call.ctx;
    let filter = match call.query.get("filter") {
        Some(text) => {
            let expr = filter::parse(text).map_err(|e| filter_error(ctx, e))?;
            let need = filter::need(&expr).map_err(|e| filter_error(ctx, e))?;
            if need == Need::Advanced && !advanced {
                return Err(bad_query(ctx, "Unsupported Query."));
            }
            Some(expr)
        }
        None => None,
    };
    let search = match call.query.get("search") {
        Some(text) => {
            if !eventual(call.headers) {
                return Err(bad_query(
                    ctx,
                    "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
                ));
            }
            Some(parse_search(text).ok_or_else(|| {
                graph_error(
                    ctx,
                    StatusCode::BAD_REQUEST,
                    "Request_BadRequest",
                    "Invalid search clause.",
                )
            })?)
        }
        None => None,
    };
    let orderby = call.query.get("orderby");
    if orderby.is_some() && filter.is_some() && !advanced {
        return Err(bad_query(ctx, "Unsupported Query."));
    }
    let dir = lock(&call.emu.dir);
    if filter.is_none() && search.is_none() && orderby.is_none() {
        let page = window.map_or_else(Vec::new, |(offset, count)| {
            dir.entries
                .iter()
                .skip(offset)
                .take(count)
                .map(|e| render(&e.view))
                .collect()
        });
        return Ok((dir.entries.len(), page));
    }
    let mut views: Vec<&Map<String, Value>> = dir
        .entries
        .iter()
        .map(|e| &e.view)
        .filter(|view| filter.as_ref().is_none_or(|f| filter::eval(f, view)))
        .filter(|view| search.as_ref().is_none_or(|s| s.matches(view)))
        .collect();
    if let Some(orderby) = orderby {
        let keys: Vec<(String, bool)> = orderby
            .split(',')
            .filter_map(|part| {
                let mut words = part.split_whitespace();
                let prop = super::directory::canonical_property(words.next()?)?;
                let desc = words.next().is_some_and(|w| w.eq_ignore_ascii_case("desc"));
                Some((prop.to_owned(), desc))
            })
            .collect();
        views.sort_by(|a, b| {
            for (prop, desc) in &keys {
                let left = a
                    .get(prop)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_lowercase();
                let right = b
                    .get(prop)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_lowercase();
                let ord = if *desc {
                    right.cmp(&left)
                } else {
                    left.cmp(&right)
                };
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    let page = window.map_or_else(Vec::new, |(offset, count)| {
        views
            .iter()
            .skip(offset)
            .take(count)
            .map(|v| render(v))
            .collect()
    });
    Ok((views.len(), page))
}

/// `$search="prop:value" [AND|OR "prop:value"]`, matched as a case-insensitive substring.
struct Search {
    terms: Vec<(String, String)>,
    any: bool,
}

impl Search {
    fn matches(&self, view: &Map<String, Value>) -> bool {
        let hit = |(prop, value): &(String, String)| {
            view.get(prop)
                .and_then(Value::as_str)
                .is_some_and(|s| s.to_lowercase().contains(&value.to_lowercase()))
        };
        if self.any {
            self.terms.iter().any(hit)
        } else {
            self.terms.iter().all(hit)
        }
    }
}

fn parse_search(text: &str) -> Option<Search> {
    let any = text.contains(" OR ");
    let terms: Vec<(String, String)> = text
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|term| {
            let (prop, value) = term.split_once(':')?;
            let prop = super::directory::canonical_property(prop.trim())?;
            Some((prop.to_owned(), value.to_owned()))
        })
        .collect::<Option<Vec<_>>>()?;
    (!terms.is_empty()).then_some(Search { terms, any })
}

/// An opaque page token: base64url of `emu1:{offset}`.
fn skiptoken(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("emu1:{offset}"))
}

fn parse_skiptoken(token: &str) -> Option<usize> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    text.strip_prefix("emu1:")?.parse().ok()
}

/// The `$top` value, 1..=999, or the exact Graph error.
fn page_size(ctx: &Ctx, query: &Query) -> Result<usize, Response> {
    match query.get("top") {
        None => Ok(DEFAULT_PAGE),
        Some(text) => match text.trim().parse::<i64>() {
            Ok(n) if (1..=999).contains(&n) => Ok(n as usize),
            _ => Err(bad_query(
                ctx,
                &format!(
                    "Invalid page size specified: '{text}'. Must be between 1 and 999 inclusive."
                ),
            )),
        },
    }
}

/// GET `/users`.
/// The parsed `$select`, or Graph's answer to it: 400 for an unknown property, 403 for
/// `signInActivity` without `AuditLog.Read.All` (contract §2.6).
fn selected(call: &Call<'_>) -> Result<Option<Vec<&'static str>>, Response> {
    let ctx = call.ctx;
    let select = parse_select(call.query)
        .map_err(|message| graph_error(ctx, StatusCode::BAD_REQUEST, "BadRequest", &message))?;
    let activity = select
        .as_deref()
        .is_some_and(|s| s.contains(&"signInActivity"));
    if activity && !call.principal.has_any(AUDIT_LOG_READ) {
        return Err(denied(ctx));
    }
    Ok(select)
}

pub(crate) fn list(call: &Call<'_>) -> Response {
    let ctx = call.ctx;
    if !call.principal.has_any(READ_USERS) {
        return denied(ctx);
    }
    if collection_unsupported(call.query.get("select").unwrap_or_default().split(',')).is_some() {
        return not_implemented(ctx);
    }
    let select = match selected(call) {
        Ok(select) => select,
        Err(response) => return response,
    };
    if call.query.get("skip").is_some() {
        return graph_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "'$skip' is not supported by the service.",
        );
    }
    let top = match page_size(ctx, call.query) {
        Ok(top) => top,
        Err(response) => return response,
    };
    let count_requested = call
        .query
        .get("count")
        .is_some_and(|c| c.eq_ignore_ascii_case("true"));
    let advanced = eventual(call.headers) && count_requested;
    let offset = match call.query.get("skiptoken") {
        None => 0,
        Some(token) => match parse_skiptoken(token) {
            Some(offset) => offset,
            None => {
                return graph_error(
                    ctx,
                    StatusCode::BAD_REQUEST,
                    "Request_BadRequest",
                    "Invalid paging token specified.",
                );
            }
        },
    };
    let render = |view: &Map<String, Value>| Value::Object(project(view, select.as_deref()));
    let (total, page) = match matching(call, advanced, Some((offset, top)), render) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(context_url(&call.emu.base_url, select.as_deref(), false)),
    );
    if advanced && offset == 0 {
        body.insert("@odata.count".into(), json!(total));
    }
    if offset + top < total {
        let mut parts = call.query.raw_without(&["skiptoken"]);
        parts.push(format!("$skiptoken={}", skiptoken(offset + top)));
        body.insert(
            "@odata.nextLink".into(),
            json!(format!(
                "{}/v1.0/users?{}",
                call.emu.base_url,
                parts.join("&")
            )),
        );
    }
    body.insert("value".into(), Value::Array(page));
    odata(StatusCode::OK, &Value::Object(body))
}

/// GET `/users/$count` (needs `ConsistencyLevel: eventual`).
pub(crate) fn count(call: &Call<'_>) -> Response {
    let ctx = call.ctx;
    if !call.principal.has_any(READ_USERS) {
        return denied(ctx);
    }
    if !eventual(call.headers) {
        return graph_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "$count is not currently supported.",
        );
    }
    match matching(call, true, None, |_| ()) {
        Ok((total, _)) => {
            let mut response = (StatusCode::OK, total.to_string()).into_response();
            response.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("text/plain"),
            );
            response
        }
        Err(response) => response,
    }
}

/// GET `/users/{id | userPrincipalName}`.
pub(crate) fn get(call: &Call<'_>, key: &str) -> Response {
    let ctx = call.ctx;
    if !call.principal.has_any(READ_USERS) {
        return denied(ctx);
    }
    if key.starts_with('$') {
        return graph_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Resource not found for the segment '{key}'."),
        );
    }
    let select = match selected(call) {
        Ok(select) => select,
        Err(response) => return response,
    };
    let view = {
        let dir = lock(&call.emu.dir);
        dir.find(key).map(|i| dir.entries[i].view.clone())
    };
    let Some(view) = view else {
        return not_found(ctx, key);
    };
    let mut body = project(&view, select.as_deref());
    body.insert(
        "@odata.context".into(),
        json!(context_url(&call.emu.base_url, select.as_deref(), true)),
    );
    odata(StatusCode::OK, &Value::Object(body))
}

/// Properties Entra Connect masters for synced users (contract §2.3; the list is an assumption).
const MASTERED: &[&str] = &[
    "displayName",
    "givenName",
    "surname",
    "mail",
    "mailNickname",
    "userPrincipalName",
    "employeeId",
    "jobTitle",
    "department",
    "businessPhones",
    "mobilePhone",
    "accountEnabled",
    "otherMails",
    "passwordProfile",
    "onPremisesExtensionAttributes",
    "officeLocation",
    "employeeOrgData",
    "employeeHireDate",
];

/// Sensitive properties (contract §2.3).
const SENSITIVE: &[&str] = &[
    "accountEnabled",
    "businessPhones",
    "mobilePhone",
    "onPremisesImmutableId",
    "otherMails",
    "passwordProfile",
    "userPrincipalName",
];

/// Writable through PATCH (beyond these the property is read-only or unknown).
const WRITABLE: &[&str] = &[
    "displayName",
    "givenName",
    "surname",
    "mail",
    "mailNickname",
    "otherMails",
    "userType",
    "accountEnabled",
    "employeeId",
    "department",
    "jobTitle",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "businessPhones",
    "userPrincipalName",
    "onPremisesImmutableId",
    "identities",
    "passwordProfile",
];

/// Read-only user properties (PATCH refuses them).
const READ_ONLY: &[&str] = &[
    "id",
    "createdDateTime",
    "creationType",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "onPremisesSamAccountName",
    "onPremisesDistinguishedName",
    "onPremisesSecurityIdentifier",
    "proxyAddresses",
    "signInSessionsValidFromDateTime",
];

/// PATCH `/users/{id | userPrincipalName}`.
pub(crate) fn patch(call: &Call<'_>, key: &str) -> Response {
    let ctx = call.ctx;
    let bad = |code: &str, message: &str| graph_error(ctx, StatusCode::BAD_REQUEST, code, message);
    let body: Map<String, Value> = match serde_json::from_slice(call.body) {
        Ok(Value::Object(map)) => map,
        _ => return bad("BadRequest", "Empty Payload. JSON content expected."),
    };
    // Annotations such as "@odata.type" (sent by the SDKs) are accepted and ignored.
    let mut changes: Vec<(&'static str, Value)> = Vec::new();
    for (name, value) in &body {
        if name.starts_with('@') || name.contains("@odata.") {
            continue;
        }
        let canonical = WRITABLE
            .iter()
            .chain(READ_ONLY.iter())
            .find(|p| p.eq_ignore_ascii_case(name))
            .copied();
        match canonical {
            Some(p) if READ_ONLY.contains(&p) => {
                return bad(
                    "Request_BadRequest",
                    &format!("Property '{p}' is read-only and cannot be set."),
                );
            }
            Some(p) => changes.push((p, value.clone())),
            None => {
                return bad(
                    "BadRequest",
                    &format!(
                        "The property '{name}' does not exist on type 'microsoft.graph.user'. Make sure to only use property names that are defined by the type or mark the type as open type."
                    ),
                );
            }
        }
    }
    let names: Vec<&str> = changes.iter().map(|(p, _)| *p).collect();
    let principal = call.principal;
    let allowed = principal.has_any(WRITE_USERS)
        || (!names.is_empty()
            && names.iter().all(|p| match *p {
                "otherMails" => principal.has_any(&["User-Mail.ReadWrite.All"]),
                "passwordProfile" => principal.has_any(&["User-PasswordProfile.ReadWrite.All"]),
                "identities" => principal.has_any(&["User.ManageIdentities.All"]),
                _ => false,
            }));
    if !allowed {
        return denied(ctx);
    }
    let mut dir = lock(&call.emu.dir);
    let Some(index) = dir.find(key) else {
        return not_found(ctx, key);
    };
    if dir.entries[index]
        .writable_after
        .is_some_and(|t| std::time::Instant::now() < t)
    {
        // Replication-delay mode [A]: a newly invited user is not yet writable everywhere.
        return graph_error(
            ctx,
            StatusCode::NOT_FOUND,
            "Directory_ObjectNotFound",
            "Unable to read the company information from the directory.",
        );
    }
    let user = dir.entries[index].user.clone();
    if user.on_premises_sync_enabled == Some(true) && names.iter().any(|p| MASTERED.contains(p)) {
        return bad(
            "Request_BadRequest",
            "Unable to update the specified properties for on-premises mastered Directory Sync objects or objects currently undergoing migration.",
        );
    }
    if !user.roles.is_empty() && names.iter().any(|p| SENSITIVE.contains(p)) {
        return denied(ctx);
    }
    let mut view = match serde_json::to_value(&user) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let mut new_mail: Option<Option<String>> = None;
    for (prop, value) in &changes {
        let invalid = || {
            bad(
                "Request_BadRequest",
                &format!("Invalid value specified for property '{prop}' of resource 'User'."),
            )
        };
        match *prop {
            "passwordProfile" => {
                if !value.is_object() {
                    return invalid();
                }
                continue;
            }
            "employeeId" if value.as_str().is_some_and(|s| s.chars().count() > 16) => {
                return invalid();
            }
            "mail" => match value {
                Value::Null => new_mail = Some(None),
                Value::String(s) if s.contains('@') => {
                    let domain = s.rsplit('@').next().unwrap_or_default();
                    if user.mailbox && !call.emu.is_verified_domain(domain) {
                        return bad(
                            "Request_BadRequest",
                            "Unable to update the specified properties for objects that have originated within an external service.",
                        );
                    }
                    new_mail = Some(Some(s.clone()));
                    continue;
                }
                _ => return invalid(),
            },
            "otherMails" => {
                let ok = value
                    .as_array()
                    .is_some_and(|items| items.iter().all(Value::is_string));
                if !ok {
                    return invalid();
                }
            }
            _ => {}
        }
        view.insert((*prop).to_owned(), value.clone());
    }
    let updated: User = match serde_json::from_value(Value::Object(view)) {
        Ok(user) => user,
        Err(_) => {
            return bad(
                "Request_BadRequest",
                "Invalid value specified for property of resource 'User'.",
            );
        }
    };
    dir.entries[index].user = updated;
    if let Some(mail) = new_mail {
        dir.set_mail(index, mail);
    }
    dir.touch(index);
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// `POST /users/{id | userPrincipalName}/revokeSignInSessions` (contract §2.5): sets
/// `signInSessionsValidFromDateTime` to now, records the revocation and answers 200 with
/// `{"value": true}` (its `@odata.context` on the emulator's base URL, [A] 11). Idempotent: a second call moves the time forward and records again.
/// The change counter is not bumped, so delta does not report the user [A].
pub(crate) fn revoke_sessions(call: &Call<'_>, key: &str) -> Response {
    let ctx = call.ctx;
    if !call.principal.has_any(REVOKE_SESSIONS) {
        return denied(ctx);
    }
    let mut dir = lock(&call.emu.dir);
    let Some(index) = dir.find(key) else {
        return not_found(ctx, key);
    };
    let now = now_graph();
    let entry = &mut dir.entries[index];
    entry.user.sign_in_sessions_valid_from_date_time = Some(now.clone());
    entry.view.insert(
        "signInSessionsValidFromDateTime".to_owned(),
        Value::String(now.clone()),
    );
    let user_id = entry.user.id.clone();
    dir.revocations.push(RevocationRecord {
        time: now,
        app_id: call.principal.app_id.clone(),
        user_id,
    });
    odata(
        StatusCode::OK,
        &json!({
            "@odata.context": format!("{}/v1.0/$metadata#Edm.Boolean", call.emu.base_url),
            "value": true,
        }),
    )
}
