//! `POST /v1.0/$batch` (contract §4): at most 20 requests with unique ids, Graph's
//! dependency shapes (parallel, sequential, all-depend-on-one), `dependsOn` ordering with 424
//! for failed dependencies, and inner requests dispatched through the same
//! router (so auth, throttling and every handler behave exactly as for direct calls).

use std::collections::{HashMap, HashSet};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use super::http::{BATCH_INNER_HEADER, error_body, graph_error, odata};
use super::request::Call;

/// The most requests one batch may hold.
const MAX_REQUESTS: usize = 20;

#[derive(Debug, Clone)]
struct Inner {
    id: String,
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    depends_on: Vec<String>,
}

fn parse(body: &[u8]) -> Result<Vec<Inner>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| "Invalid batch payload format.".to_owned())?;
    let requests = value
        .get("requests")
        .and_then(Value::as_array)
        .ok_or("Invalid batch payload format: the 'requests' array is missing.")?;
    if requests.len() > MAX_REQUESTS {
        return Err(format!(
            "The number of requests in a batch cannot exceed {MAX_REQUESTS}."
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for request in requests {
        let id = match request.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err("Invalid batch payload format: every request needs an 'id'.".into()),
        };
        if !seen.insert(id.clone()) {
            return Err(format!(
                "Batch request ids must be unique; '{id}' is used more than once."
            ));
        }
        let method = request
            .get("method")
            .and_then(Value::as_str)
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .ok_or_else(|| format!("Request '{id}' has no valid 'method'."))?;
        let url = request
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("Request '{id}' has no 'url'."))?
            .to_owned();
        let headers: Vec<(String, String)> = request
            .get("headers")
            .and_then(Value::as_object)
            .map(|h| {
                h.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let body = request.get("body").filter(|b| !b.is_null()).cloned();
        let write = matches!(method, Method::POST | Method::PATCH | Method::PUT);
        let content_type = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if (body.is_some() && !content_type) || (write && body.is_none()) {
            // Graph's wording, observed (contract §4 [O]).
            return Err(format!(
                "Write request id : {id} does not contain Content-Type header or body."
            ));
        }
        let depends_on: Vec<String> = request
            .get("dependsOn")
            .and_then(Value::as_array)
            .map(|d| {
                d.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Inner {
            id,
            method,
            url,
            headers,
            body,
            depends_on,
        });
    }
    check_dependencies(&out)?;
    Ok(out)
}

/// Graph's dependency rules (contract §4, known issue): every `dependsOn` names an earlier
/// request of the batch, a request depends on at most one other, and the batch is fully
/// parallel (no dependencies), fully sequential (each request depends on the one before) or
/// all-depend-on-one (each request but the first depends on the first). A cycle always
/// contains a reference forward, so it is refused here too.
fn check_dependencies(requests: &[Inner]) -> Result<(), String> {
    const SHAPE: &str = "Batch should be either fully sequential or fully parallel";
    let position: HashMap<&str, usize> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    for (i, request) in requests.iter().enumerate() {
        if request.depends_on.len() > 1 {
            return Err(format!(
                "{SHAPE}; request '{}' depends on more than one request.",
                request.id
            ));
        }
        for dep in &request.depends_on {
            match position.get(dep.as_str()) {
                None => {
                    return Err(format!(
                        "Request '{}' depends on unknown request '{dep}'.",
                        request.id
                    ));
                }
                Some(&at) if at >= i => {
                    return Err(format!(
                        "{SHAPE}; request '{}' depends on request '{dep}', which does not come before it.",
                        request.id
                    ));
                }
                Some(_) => {}
            }
        }
    }
    let depends = |i: usize| requests[i].depends_on.first().map(String::as_str);
    let parallel = requests.iter().all(|r| r.depends_on.is_empty());
    let sequential = (1..requests.len()).all(|i| depends(i) == Some(requests[i - 1].id.as_str()));
    let on_one = requests.first().is_some_and(|first| {
        first.depends_on.is_empty()
            && requests[1..]
                .iter()
                .all(|r| r.depends_on.first() == Some(&first.id))
    });
    if parallel || sequential || on_one {
        Ok(())
    } else {
        Err(format!("{SHAPE}."))
    }
}

/// The `/v1.0` path of an inner `url` (relative, or absolute with a version prefix).
fn inner_path(url: &str) -> String {
    let mut path = url;
    if let Some(rest) = path
        .strip_prefix("https://")
        .or_else(|| path.strip_prefix("http://"))
    {
        path = rest.find('/').map_or("", |i| &rest[i..]);
    }
    let path = path.trim_start_matches('/');
    let path = path.strip_prefix("v1.0/").unwrap_or(path);
    format!("/v1.0/{path}")
}

/// POST `/$batch`.
pub(crate) async fn batch(call: &Call<'_>) -> Response {
    let ctx = call.ctx;
    let requests = match parse(call.body) {
        Ok(requests) => requests,
        Err(message) => return graph_error(ctx, StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    let Some(router) = call.emu.router.get().cloned() else {
        return graph_error(
            ctx,
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "The router is not ready.",
        );
    };
    let authorization = call.headers.get(header::AUTHORIZATION).cloned();
    let mut results: HashMap<String, Value> = HashMap::new();
    let mut statuses: HashMap<String, u16> = HashMap::new();
    let mut pending: Vec<Inner> = requests.clone();
    while !pending.is_empty() {
        let (ready, waiting): (Vec<Inner>, Vec<Inner>) = pending
            .into_iter()
            .partition(|r| r.depends_on.iter().all(|d| statuses.contains_key(d)));
        if ready.is_empty() {
            // Unreachable: `check_dependencies` refuses cycles. Fail what is left.
            for request in waiting {
                statuses.insert(request.id.clone(), 424);
                results.insert(request.id.clone(), failed_dependency(call, &request.id));
            }
            break;
        }
        let mut runs = Vec::new();
        for request in ready {
            if request
                .depends_on
                .iter()
                .any(|d| statuses.get(d).is_some_and(|s| *s >= 400))
            {
                statuses.insert(request.id.clone(), 424);
                results.insert(request.id.clone(), failed_dependency(call, &request.id));
                continue;
            }
            let router = router.clone();
            let authorization = authorization.clone();
            runs.push(async move {
                let result = run(router, authorization, &request).await;
                (request.id.clone(), result)
            });
        }
        for (id, (status, value)) in futures_util::future::join_all(runs).await {
            statuses.insert(id.clone(), status);
            results.insert(id, value);
        }
        pending = waiting;
    }
    let responses: Vec<Value> = requests
        .iter()
        .filter_map(|r| results.remove(&r.id))
        .collect();
    odata(StatusCode::OK, &json!({ "responses": responses }))
}

fn failed_dependency(call: &Call<'_>, id: &str) -> Value {
    json!({
        "id": id,
        "status": 424,
        "headers": {"Content-Type": "application/json"},
        "body": error_body(call.ctx, "FailedDependency", "The request failed because a request it depends on failed."),
    })
}

async fn run(
    router: axum::Router,
    authorization: Option<HeaderValue>,
    inner: &Inner,
) -> (u16, Value) {
    let mut builder = Request::builder()
        .method(inner.method.clone())
        .uri(inner_path(&inner.url))
        .header(BATCH_INNER_HEADER, "1");
    if let Some(authorization) = authorization {
        builder = builder.header(header::AUTHORIZATION, authorization);
    }
    for (name, value) in &inner.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            builder = builder.header(name, value);
        }
    }
    let body = inner
        .body
        .as_ref()
        .map(Value::to_string)
        .unwrap_or_default();
    let response = match builder.body(Body::from(body)) {
        Ok(request) => match router.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        Err(_) => {
            return (
                400,
                json!({"id": inner.id, "status": 400, "body": {"error": {"code": "BadRequest", "message": "Invalid request in batch."}}}),
            );
        }
    };
    let status = response.status().as_u16();
    let mut headers = Map::new();
    for (name, value) in response.headers() {
        let keep = matches!(
            name.as_str(),
            "content-type"
                | "retry-after"
                | "location"
                | "x-ms-resource-unit"
                | "x-ms-throttle-limit-percentage"
                | "x-ms-throttle-scope"
                | "x-ms-throttle-information"
                | "request-id"
                | "client-request-id"
        );
        if let (true, Ok(value)) = (keep, value.to_str()) {
            let name = match name.as_str() {
                "content-type" => "Content-Type".to_owned(),
                "retry-after" => "Retry-After".to_owned(),
                "location" => "Location".to_owned(),
                other => other.to_owned(),
            };
            headers.insert(name, Value::String(value.to_owned()));
        }
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let mut out = json!({"id": inner.id, "status": status, "headers": headers});
    if !bytes.is_empty() {
        let body = if content_type.starts_with("application/json") {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        } else if content_type.starts_with("text/") {
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            Value::String(base64::engine::general_purpose::STANDARD.encode(&bytes))
        };
        out["body"] = body;
    }
    (status, out)
}

#[cfg(test)]
mod tests {
    use super::inner_path;

    #[test]
    fn inner_urls_map_to_v1_paths() {
        assert_eq!(inner_path("/users/abc"), "/v1.0/users/abc");
        assert_eq!(inner_path("users?$top=1"), "/v1.0/users?$top=1");
        assert_eq!(
            inner_path("https://graph.microsoft.com/v1.0/users"),
            "/v1.0/users"
        );
    }
}
