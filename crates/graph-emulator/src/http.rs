//! HTTP plumbing shared by every route: the per-request context (request-id,
//! client-request-id, date), the headers every response carries, the OData error shape of
//! contract §7, the request log and fault injection, hostile answers included (links to
//! another origin, paging loops, huge numbers, redirects, oversized bodies). No Graph
//! semantics live here.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use rand::Rng;
use serde_json::{Value, json};

use super::directory::{Emulator, FaultSpec, LogEntry, lock};

/// The content type Graph uses for successful JSON bodies.
pub(crate) const ODATA_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// The request log keeps at most this many entries.
const LOG_CAPACITY: usize = 100_000;

/// Marks a request dispatched by `$batch` (set only by the emulator itself).
pub(crate) const BATCH_INNER_HEADER: &str = "x-emulator-batch-inner";

/// Per-request identifiers, inserted by [`common`] for handlers to read.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub request_id: String,
    pub client_request_id: String,
    pub date: Timestamp,
}

impl Ctx {
    /// The identifiers [`common`] put on the request, or fresh ones for a request that did
    /// not pass through it.
    pub fn of(req: &axum::extract::Request) -> Ctx {
        req.extensions()
            .get::<Ctx>()
            .cloned()
            .unwrap_or_else(|| Ctx {
                request_id: uuid::Uuid::new_v4().to_string(),
                client_request_id: uuid::Uuid::new_v4().to_string(),
                date: Timestamp::now(),
            })
    }

    /// `innerError.date`: UTC, no zone, no fractional seconds.
    pub fn inner_date(&self) -> String {
        self.date.strftime("%Y-%m-%dT%H:%M:%S").to_string()
    }
}

/// What a handler tells the request log about the call (response extension).
#[derive(Debug, Clone, Default)]
pub(crate) struct LogExtra {
    pub app_id: Option<String>,
    pub invited_user_id: Option<String>,
    pub invited_user_email_address: Option<String>,
}

/// Response extension: close the connection without answering (fault `drop`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

/// The peer's address, inserted by the accept loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub std::net::SocketAddr);

/// The OData error body of contract §7.
pub(crate) fn error_body(ctx: &Ctx, code: &str, message: &str) -> Value {
    json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": ctx.inner_date(),
                "request-id": ctx.request_id,
                "client-request-id": ctx.client_request_id,
            }
        }
    })
}

/// A Graph error response.
pub(crate) fn graph_error(ctx: &Ctx, status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, "application/json", &error_body(ctx, code, message))
}

/// Graph's 501 for a `$select` of a property a collection or delta cannot return (§3.1, §3.4).
pub(crate) fn not_implemented(ctx: &Ctx) -> Response {
    graph_error(
        ctx,
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        "This operation target is not yet supported.",
    )
}

/// A JSON response with the given content type.
pub(crate) fn json_response(
    status: StatusCode,
    content_type: &'static str,
    body: &Value,
) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A successful Graph JSON response.
pub(crate) fn odata(status: StatusCode, body: &Value) -> Response {
    json_response(status, ODATA_JSON, body)
}

/// `Retry-After` for a wait of `seconds` (already scaled): what Graph would send at real time
/// (whole seconds, at least 1) multiplied by the time scale. At scale 1 it is an integer; at
/// any other scale fractional seconds with three decimals.
pub(crate) fn retry_after_value(seconds: f64, time_scale: f64) -> String {
    let scale = if time_scale > 0.0 && time_scale.is_finite() {
        time_scale
    } else {
        1.0
    };
    let real = (seconds / scale).ceil().max(1.0);
    if (scale - 1.0).abs() < f64::EPSILON {
        format!("{}", real as u64)
    } else {
        format!("{:.3}", (real * scale).max(0.001))
    }
}

/// The 429 of contract §5.1.
pub(crate) fn too_many_requests(ctx: &Ctx, retry_after: &str) -> Response {
    let body = json!({
        "error": {
            "code": "TooManyRequests",
            "message": "Please retry again later.",
            "innerError": {
                "code": "429",
                "date": ctx.inner_date(),
                "message": "Please retry after",
                "request-id": ctx.request_id,
                "client-request-id": ctx.client_request_id,
                "status": "429",
            }
        }
    });
    let mut response = json_response(StatusCode::TOO_MANY_REQUESTS, "application/json", &body);
    if let Ok(value) = HeaderValue::from_str(retry_after) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Middleware on every route: context, fault injection, common headers, request log.
pub(crate) async fn common(
    State(emu): State<Arc<Emulator>>,
    mut req: Request,
    next: Next,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = header_str(req.headers(), "client-request-id")
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| request_id.clone());
    let ctx = Ctx {
        request_id,
        client_request_id,
        date: Timestamp::now(),
    };
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let batch_inner = req.headers().contains_key(BATCH_INNER_HEADER);
    req.extensions_mut().insert(ctx.clone());

    let spec = active_faults(&emu, &path, batch_inner);
    let mut response = match fault(&emu, &ctx, &path, spec.as_ref()).await {
        Fault::Replace(response) => response,
        Fault::None => next.run(req).await,
        Fault::LoseAnswer => {
            // The request is processed, then the connection closes before the answer: the
            // client cannot know whether its write happened.
            let mut response = next.run(req).await;
            response.extensions_mut().insert(DropConnection);
            response
        }
    };
    if let Some(spec) = &spec {
        response = hostile(&emu, spec, &path, response).await;
    }

    let headers = response.headers_mut();
    let pairs = [
        ("request-id", ctx.request_id.clone()),
        ("client-request-id", ctx.client_request_id.clone()),
        (
            "date",
            ctx.date.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        ),
        (
            "x-ms-ags-diagnostic",
            r#"{"ServerInfo":{"DataCenter":"Emulator","Slice":"E","Ring":"0","ScaleUnit":"000","RoleInstance":"graph-emulator","ADSiteName":"EMU"}}"#.to_owned(),
        ),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }

    let extra = response
        .extensions()
        .get::<LogExtra>()
        .cloned()
        .unwrap_or_default();
    if !path.starts_with("/_emulator") {
        let mut log = lock(&emu.log);
        if log.len() >= LOG_CAPACITY {
            // Long rehearsals: keep memory bounded by forgetting the oldest tenth.
            log.drain(..LOG_CAPACITY / 10);
        }
        log.push(LogEntry {
            time: ctx.date.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            method,
            path,
            status: response.status().as_u16(),
            request_id: ctx.request_id.clone(),
            client_request_id: ctx.client_request_id.clone(),
            app_id: extra.app_id,
            invited_user_id: extra.invited_user_id,
            invited_user_email_address: extra.invited_user_email_address,
            batch_inner,
        });
    }
    tracing::debug!(status = response.status().as_u16(), request_id = %ctx.request_id, "Request served.");
    response
}

/// What an injected fault does to one request.
enum Fault {
    None,
    /// Answer with this instead of processing the request.
    Replace(Response),
    /// Process the request, then close the connection without the answer.
    LoseAnswer,
}

/// The configured faults, when they apply to a request to `path`.
fn active_faults(emu: &Emulator, path: &str, batch_inner: bool) -> Option<FaultSpec> {
    if path.starts_with("/_emulator") || batch_inner {
        return None;
    }
    let spec = lock(&emu.faults).clone()?;
    if let Some(prefix) = &spec.path_prefix
        && !path.starts_with(prefix.as_str())
    {
        return None;
    }
    Some(spec)
}

/// A request for a token: the token endpoint or the managed identity endpoint.
fn token_path(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    path.ends_with("/oauth2/v2.0/token") || path == "/metadata/identity/oauth2/token"
}

/// Applies the configured faults to a request, if they apply to it.
async fn fault(emu: &Emulator, ctx: &Ctx, path: &str, spec: Option<&FaultSpec>) -> Fault {
    let Some(spec) = spec else {
        return Fault::None;
    };
    if let Some(location) = &spec.token_redirect
        && token_path(path)
    {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        if let Ok(value) = HeaderValue::from_str(location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        return Fault::Replace(response);
    }
    let (latency, kind) = {
        let mut rng = rand::rng();
        let latency = spec.latency_ms.map(|[min, max]| {
            let (low, high) = (min.min(max), min.max(max));
            rng.random_range(low..=high)
        });
        let kind = (!spec.kinds.is_empty() && rng.random::<f64>() < spec.rate)
            .then(|| spec.kinds[rng.random_range(0..spec.kinds.len())].clone());
        (latency, kind)
    };
    if let Some(ms) = latency {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let scale = emu.time_scale();
    let retry_after = spec
        .retry_after
        .clone()
        .unwrap_or_else(|| retry_after_value(1.0 * scale, scale));
    match kind.as_deref() {
        Some("429") => Fault::Replace(too_many_requests(ctx, &retry_after)),
        Some("503") => {
            let mut response = graph_error(
                ctx,
                StatusCode::SERVICE_UNAVAILABLE,
                "serviceNotAvailable",
                spec.error_message
                    .as_deref()
                    .unwrap_or("The service is temporarily unavailable. Please retry later."),
            );
            if let Ok(value) = HeaderValue::from_str(&retry_after) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            Fault::Replace(response)
        }
        Some("drop") => {
            let mut response = Response::new(Body::empty());
            response.extensions_mut().insert(DropConnection);
            Fault::Replace(response)
        }
        Some("lost") => Fault::LoseAnswer,
        _ => Fault::None,
    }
}

/// Leading whitespace for the `bodyBytes` fault, sent in chunks of this size.
static PADDING: [u8; 64 * 1024] = [b' '; 64 * 1024];

/// The hostile rewrites of an answer: links pointed at another origin or at the page
/// itself, token lifetimes replaced, a throttle percentage added, the body padded.
async fn hostile(emu: &Emulator, spec: &FaultSpec, path: &str, response: Response) -> Response {
    let token = token_path(path);
    let graph = path.starts_with("/v1.0");
    let rewrite = (token && spec.expires_in.is_some())
        || (graph && (spec.link_origin.is_some() || spec.next_link_loop));
    let pad = spec.body_bytes.filter(|_| graph);
    if !rewrite && pad.is_none() && spec.limit_percentage.is_none() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let mut bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    if rewrite
        && parts.status.is_success()
        && let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(&bytes)
    {
        if let Some(expires_in) = spec.expires_in.as_ref().filter(|_| token) {
            map.insert("expires_in".into(), expires_in.clone());
            map.insert("ext_expires_in".into(), expires_in.clone());
        }
        if let Some(origin) = spec.link_origin.as_ref().filter(|_| graph) {
            for key in ["@odata.nextLink", "@odata.deltaLink"] {
                if let Some(Value::String(link)) = map.get_mut(key)
                    && let Some(rest) = link.strip_prefix(emu.base_url.as_str())
                {
                    *link = format!("{}{rest}", origin.trim_end_matches('/'));
                }
            }
        }
        if spec.next_link_loop && graph && map.contains_key("value") {
            map.remove("@odata.deltaLink");
            map.insert(
                "@odata.nextLink".into(),
                Value::String(format!("{}{path}", emu.base_url)),
            );
        }
        bytes = Value::Object(map).to_string().into_bytes();
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    if graph
        && let Some(value) = spec
            .limit_percentage
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
    {
        parts.headers.insert(
            HeaderName::from_static("x-ms-throttle-limit-percentage"),
            value,
        );
    }
    let Some(total) = pad else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    // Streamed, so no Content-Length tells the client the size before it reads.
    let padding = usize::try_from(total)
        .unwrap_or(usize::MAX)
        .saturating_sub(bytes.len());
    let full = padding / PADDING.len();
    let rest = padding % PADDING.len();
    let chunks = std::iter::repeat_n(axum::body::Bytes::from_static(&PADDING), full)
        .chain(std::iter::once(axum::body::Bytes::from_static(
            &PADDING[..rest],
        )))
        .chain(std::iter::once(axum::body::Bytes::from(bytes)))
        .map(Ok::<_, std::convert::Infallible>);
    Response::from_parts(parts, Body::from_stream(futures_util::stream::iter(chunks)))
}
