//! What one Graph request is, as the handlers see it: the parsed query options
//! ([`Query`], `$select`), percent-encoding, the `ConsistencyLevel` header, and [`Call`],
//! which carries all of it to a handler.
//!
//! The router (`graph.rs`) builds a [`Call`] and the handlers (users, delta, invitations,
//! organization, `$batch`, the managed identity endpoint) read it. This module imports no
//! handler and no router, so neither side imports the other.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::HeaderMap;

use super::auth::Principal;
use super::directory::{Emulator, canonical_property};
use super::http::Ctx;

/// Everything a handler needs about one request.
pub(crate) struct Call<'a> {
    pub emu: &'a Arc<Emulator>,
    pub ctx: &'a Ctx,
    pub principal: &'a Principal,
    pub headers: &'a HeaderMap,
    pub query: &'a Query,
    pub body: &'a Bytes,
}

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

/// User properties stored outside the directory (the profile service): Graph returns them only
/// for a single user, never in a collection or a delta round (contract §3.1, §3.4).
const NOT_IN_COLLECTIONS: [&str; 11] = [
    "aboutMe",
    "birthday",
    "hireDate",
    "interests",
    "mailboxSettings",
    "mySite",
    "pastProjects",
    "preferredName",
    "responsibilities",
    "schools",
    "skills",
];

/// The first `$select`ed property that a collection or delta cannot return, if any: Graph
/// answers such a request 501 `NotImplemented`.
pub(crate) fn collection_unsupported<'a>(
    mut names: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    names.find(|name| {
        NOT_IN_COLLECTIONS
            .iter()
            .any(|p| p.eq_ignore_ascii_case(name.trim()))
    })
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
