//! `GET /v1.0/users/delta` (contract §3.4): rounds of pages linked by `$skiptoken`, a final
//! `@odata.deltaLink` with `$deltatoken`, `$deltatoken=latest`, `$select` and the `id eq`
//! filter encoded into the tokens, only changed users on later rounds, deleted users as
//! `@removed`, and 410 resync.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::auth::READ_USERS;
use super::directory::{canonical_property, default_properties, lock};
use super::filter::{self, Expr, Op};
use super::http::{graph_error, not_implemented, odata};
use super::request::{Call, collection_unsupported, percent_encode};
use super::users::{context_url, denied};

/// The annotation of a deleted user in a delta round.
const REMOVED: &str = "@removed";

/// Users per delta page (overridable with `Prefer: odata.maxpagesize=N`).
const DELTA_PAGE: usize = 100;

/// Delta tokens stay valid this long (scaled by the time scale), like directory objects.
const TOKEN_LIFETIME_SECS: f64 = 7.0 * 24.0 * 3600.0;

/// The state a delta or skip token carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    /// Token format version.
    v: u8,
    /// Directory delta generation; a bump invalidates every token.
    g: u64,
    /// `$select`, if given on the first call.
    s: Option<Vec<String>>,
    /// `$filter` (id eq ... or ...), if given on the first call.
    f: Option<String>,
    /// Changes after this counter value are returned; `None` = everything (first round).
    since: Option<u64>,
    /// The counter value when the round started; the next round starts from it.
    upto: u64,
    /// Offset within the round (skip tokens only).
    o: usize,
    /// Issued at, seconds since the epoch.
    t: i64,
}

/// Tokens are opaque to clients, like Graph's. Hex, not base64: base64 of a JSON object
/// starts `eyJ`, which reads like a JWT to anyone scanning a client's files for tokens.
fn encode(state: &State) -> String {
    serde_json::to_vec(state)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode(token: &str) -> Option<State> {
    if !token.len().is_multiple_of(2) || !token.is_ascii() {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let state: State = serde_json::from_slice(&bytes).ok()?;
    (state.v == 1).then_some(state)
}

/// Only `id eq '...'` joined by `or` is allowed on delta.
fn ids_only(expr: &Expr) -> bool {
    match expr {
        Expr::Or(a, b) => ids_only(a) && ids_only(b),
        Expr::Compare {
            prop, op: Op::Eq, ..
        } => prop == "id",
        _ => false,
    }
}

/// GET `/users/delta`.
pub(crate) fn delta(call: &Call<'_>) -> Response {
    let ctx = call.ctx;
    let emu = call.emu;
    if !call.principal.has_any(READ_USERS) {
        return denied(ctx);
    }
    for option in ["top", "orderby", "expand", "search"] {
        if call.query.get(option).is_some() {
            return graph_error(
                ctx,
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                "Unsupported Query.",
            );
        }
    }
    let now = jiff::Timestamp::now().as_second();
    let (seq, generation) = {
        let dir = lock(&emu.dir);
        (dir.seq, dir.delta_generation)
    };
    let resync = || {
        let mut response = graph_error(
            ctx,
            StatusCode::GONE,
            "resyncRequired",
            "Resync required. Replace any local cached copy of the directory objects with the changes from the delta link in the Location header.",
        );
        if let Ok(value) =
            HeaderValue::from_str(&format!("{}/v1.0/users/delta?$deltatoken=", emu.base_url))
        {
            response.headers_mut().insert(header::LOCATION, value);
        }
        response
    };
    let invalid = || {
        graph_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "syncStateNotFound",
            "The sync state is not found or is invalid.",
        )
    };
    let token = call
        .query
        .get("skiptoken")
        .map(|t| (t, true))
        .or_else(|| call.query.get("deltatoken").map(|t| (t, false)));
    let mut state = match token {
        Some(("latest", false)) => {
            let state = State {
                v: 1,
                g: generation,
                s: select_names(call),
                f: call.query.get("filter").map(str::to_owned),
                since: Some(seq),
                upto: seq,
                o: 0,
                t: now,
            };
            return page(call, &state, Vec::new(), None);
        }
        Some(("", false)) | None => State {
            v: 1,
            g: generation,
            s: select_names(call),
            f: call.query.get("filter").map(str::to_owned),
            since: None,
            upto: seq,
            o: 0,
            t: now,
        },
        Some((text, skip)) => {
            let Some(mut state) = decode(text) else {
                return invalid();
            };
            let lifetime = TOKEN_LIFETIME_SECS * emu.time_scale();
            if state.g != generation || (now - state.t) as f64 > lifetime {
                return resync();
            }
            if !skip {
                state.since = Some(state.upto);
                state.upto = seq;
                state.o = 0;
                state.t = now;
            }
            state
        }
    };
    if let Some(props) = &state.s
        && collection_unsupported(props.iter().map(String::as_str)).is_some()
    {
        return not_implemented(ctx);
    }
    if let Some(props) = &state.s
        && let Some(bad) = props.iter().find(|p| canonical_property(p).is_none())
    {
        return graph_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "Parsing OData Select and Expand failed: Could not find a property named '{bad}' on type 'microsoft.graph.user'."
            ),
        );
    }
    let filter = match &state.f {
        Some(text) => match filter::parse(text) {
            Ok(expr) if ids_only(&expr) => Some(expr),
            _ => {
                return graph_error(
                    ctx,
                    StatusCode::BAD_REQUEST,
                    "Request_UnsupportedQuery",
                    "Unsupported Query.",
                );
            }
        },
        None => None,
    };
    let page_size = call
        .headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',').find_map(|p| {
                p.trim()
                    .strip_prefix("odata.maxpagesize=")?
                    .parse::<usize>()
                    .ok()
            })
        })
        .filter(|n| *n > 0)
        .unwrap_or(DELTA_PAGE);
    let views: Vec<Map<String, Value>> = {
        let dir = lock(&emu.dir);
        // Users deleted since the round's start (a first round knows no earlier state).
        let removed: Vec<Map<String, Value>> = match state.since {
            Some(since) => dir
                .removed
                .iter()
                .filter(|(_, at)| *at > since)
                .map(|(id, _)| {
                    let mut m = Map::new();
                    m.insert("id".into(), json!(id));
                    m.insert(REMOVED.into(), json!({ "reason": "deleted" }));
                    m
                })
                .filter(|m| filter.as_ref().is_none_or(|f| filter::eval(f, m)))
                .collect(),
            None => Vec::new(),
        };
        dir.entries
            .iter()
            .filter(|e| state.since.is_none_or(|since| e.changed > since))
            .map(|e| &e.view)
            .filter(|view| filter.as_ref().is_none_or(|f| filter::eval(f, view)))
            .map(std::borrow::Cow::Borrowed)
            .chain(removed.into_iter().map(std::borrow::Cow::Owned))
            .skip(state.o)
            .take(page_size + 1)
            .map(std::borrow::Cow::into_owned)
            .collect()
    };
    // One user past the page tells whether another page follows.
    let more = views.len() > page_size;
    let items: Vec<Map<String, Value>> = views.into_iter().take(page_size).collect();
    let next = if more {
        state.o += page_size;
        Some(state.clone())
    } else {
        None
    };
    page(call, &state, items, next)
}

fn select_names(call: &Call<'_>) -> Option<Vec<String>> {
    call.query.get("select").map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                canonical_property(p)
                    .map(str::to_owned)
                    .unwrap_or_else(|| p.to_owned())
            })
            .collect()
    })
}

/// One delta page: selected properties, never-set ones omitted; nextLink or deltaLink.
fn page(
    call: &Call<'_>,
    state: &State,
    items: Vec<Map<String, Value>>,
    next: Option<State>,
) -> Response {
    let base = &call.emu.base_url;
    let select: Option<Vec<&'static str>> = state
        .s
        .as_ref()
        .map(|props| props.iter().filter_map(|p| canonical_property(p)).collect());
    let props = select.clone().unwrap_or_else(default_properties);
    let value: Vec<Value> = items
        .iter()
        .map(|view| {
            if view.contains_key(REMOVED) {
                return Value::Object(view.clone());
            }
            let mut out = Map::new();
            out.insert("id".into(), view.get("id").cloned().unwrap_or(Value::Null));
            for prop in &props {
                match view.get(*prop) {
                    None | Some(Value::Null) => {}
                    Some(v) => {
                        out.insert((*prop).to_owned(), v.clone());
                    }
                }
            }
            Value::Object(out)
        })
        .collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(context_url(base, select.as_deref(), false)),
    );
    match next {
        Some(next) => {
            body.insert(
                "@odata.nextLink".into(),
                json!(format!(
                    "{base}/v1.0/users/delta?$skiptoken={}",
                    percent_encode(&encode(&next))
                )),
            );
        }
        None => {
            let done = State {
                o: 0,
                ..state.clone()
            };
            body.insert(
                "@odata.deltaLink".into(),
                json!(format!(
                    "{base}/v1.0/users/delta?$deltatoken={}",
                    percent_encode(&encode(&done))
                )),
            );
        }
    }
    body.insert("value".into(), Value::Array(value));
    odata(StatusCode::OK, &Value::Object(body))
}
