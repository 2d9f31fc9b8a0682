//! The cloud side: Microsoft Graph and the Entra token endpoint. Reads users in bulk, PATCHes
//! the address attributes of cloud-only users, and sends the conversion invitations.
//!
//! The rest of the crate sees only [`Cloud`], [`Error`] and the request types here; the Graph
//! JSON shapes stay private to [`graph`], and token acquisition to [`token`].

pub mod graph;
pub mod pace;
pub mod permissions;
pub mod token;

use std::collections::HashMap;
use std::future::Future;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::CloudUser;

pub use graph::{GraphClient, GraphSettings};

/// The ids Graph gives a call, recorded in the journal so Microsoft support can trace it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestIds {
    /// The `request-id` response header.
    pub request_id: Option<String>,
    /// The `client-request-id` b2bsync sent.
    pub client_request_id: String,
}

/// A change to a cloud-only user's address attributes. `None` leaves a property alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPatch {
    pub mail: Option<String>,
    /// Set `mail` to null (used by `rollback` when the user had no mail before).
    #[serde(default)]
    pub clear_mail: bool,
    pub other_mails: Option<Vec<String>>,
    pub user_type: Option<String>,
}

/// A conversion invitation for an existing user (`invitedUser.id` is always sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub user_id: String,
    pub email: String,
    pub redirect_url: String,
    pub send_message: bool,
    pub message_body: Option<String>,
    pub message_language: Option<String>,
    pub cc: Option<String>,
    /// Re-invite: reset the redemption status (needs `User.ReadWrite.All`).
    pub reset_redemption: bool,
}

/// What the service answered to an invitation, as it came (an empty text: the field was
/// missing). [`InvitationSent::problem`] says whether it is the conversion asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationSent {
    pub invitation_id: String,
    /// `invitedUser.id` of the answer.
    pub user_id: String,
    pub status: String,
    /// `inviteRedeemUrl`: a credential-like link, never logged.
    pub redeem_url: Option<String>,
    pub ids: RequestIds,
}

impl InvitationSent {
    /// What is wrong with this answer to an invitation of the user `requested`, or `None`
    /// when it is well-formed (an invitation id, a status) and its `invitedUser.id` is
    /// `requested`. Anything else (a new guest created because the id was dropped on the way)
    /// is no conversion of that user. Server text is made printable and bounded.
    pub fn problem(&self, requested: &str) -> Option<String> {
        let mut problems = Vec::new();
        if self.user_id.trim().is_empty() {
            problems.push("no invitedUser.id".to_string());
        } else if !self.user_id.trim().eq_ignore_ascii_case(requested) {
            problems.push(format!(
                "invitedUser.id {} instead of {requested} (a different user, perhaps a new guest)",
                printable(&self.user_id)
            ));
        }
        if self.invitation_id.trim().is_empty() {
            problems.push("no invitation id".to_string());
        }
        if self.status.trim().is_empty() {
            problems.push("no status".to_string());
        }
        (!problems.is_empty()).then(|| problems.join(", "))
    }

    /// What came back, for the journal and the messages: the ids and the status, never the
    /// redeem link.
    pub fn described(&self) -> String {
        let shown = |s: &str| {
            if s.trim().is_empty() {
                "none".to_string()
            } else {
                printable(s)
            }
        };
        format!(
            "answer: invitation {}, invitedUser.id {}, status {}, request-id {}",
            shown(&self.invitation_id),
            shown(&self.user_id),
            shown(&self.status),
            self.ids
                .request_id
                .as_deref()
                .map_or("none".to_string(), printable)
        )
    }
}

/// What changed among the tenant's users since a delta link (`/users/delta`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChanges {
    /// Users created, restored or changed, with every selected property.
    pub changed: Vec<CloudUser>,
    /// Ids of users deleted (soft or for good).
    pub removed: Vec<String>,
    /// The link that reads the changes after these.
    pub delta_link: String,
    /// Every directory role holder now (user id → role names): role membership is not in
    /// the user's delta, and a role blocks conversion, so it is read whole every time.
    pub roles: HashMap<String, Vec<String>>,
}

/// The longest b2bsync waits because a server asked it to (`Retry-After` on a 429 or 503,
/// from Graph or the token endpoint): five minutes. A server asking for more fails the
/// request with [`Error::WaitTooLong`], so a run stops instead of holding its lock for
/// hours; what it did not do is left for the next run.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// The longest an access token is cached, whatever `expires_in` the token endpoint sent
/// (Entra issues tokens for 60 to 90 minutes; 24 hours is far above any real lifetime).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The largest answer b2bsync reads from Graph: 64 MiB. A page of 999 users with every
/// selected property is a few MB, so this only stops a misbehaving server or proxy from
/// filling memory.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// The largest answer b2bsync reads from the token endpoint: 1 MiB (a token answer is a few
/// KB).
pub const MAX_TOKEN_BODY_BYTES: usize = 1 << 20;

/// The most pages b2bsync follows in one walk of `@odata.nextLink`s: 20,000. At Graph's 999
/// users a page that is about 20 million users, far above the largest Entra tenants (an
/// Entra directory holds 300,000 objects unless Microsoft raises its quota), and still
/// room for the delta query's smaller or empty pages. It bounds the work a server that keeps
/// sending new links can cause; a link seen before in the same walk is refused at once.
pub const MAX_PAGES: usize = 20_000;

/// Server-provided text kept in an error: at most this many characters.
const MAX_SERVER_TEXT: usize = 500;

/// A wait a server asked for, measured against [`MAX_WAIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerWait {
    /// At most [`MAX_WAIT`].
    Within(Duration),
    /// Longer than [`MAX_WAIT`] (or too large to represent at all).
    TooLong,
}

/// Seconds a server sent (fractions accepted), measured against [`MAX_WAIT`]. `None` for
/// what is no number of seconds: negative, NaN or infinite.
pub(crate) fn server_wait(seconds: f64) -> Option<ServerWait> {
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(wait) if wait <= MAX_WAIT => Some(ServerWait::Within(wait)),
        _ => Some(ServerWait::TooLong),
    }
}

/// A `Retry-After` value: delta-seconds (fractions accepted, as Graph has sent `2.128`) or
/// an HTTP date, measured from `now`. `None` when it is neither.
pub(crate) fn parse_retry_after(text: &str, now: jiff::Timestamp) -> Option<ServerWait> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return server_wait(seconds);
    }
    let when = jiff::fmt::rfc2822::parse(text).ok()?.timestamp();
    let seconds = when.as_second().checked_sub(now.as_second())?.max(0);
    match u64::try_from(seconds) {
        Ok(s) if s <= MAX_WAIT.as_secs() => Some(ServerWait::Within(Duration::from_secs(s))),
        _ => Some(ServerWait::TooLong),
    }
}

/// `x-ms-throttle-limit-percentage` (documented from 0.8 to 1.8): a finite number, clamped
/// to 0..=2.
pub(crate) fn limit_percentage(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| v.clamp(0.0, 2.0))
}

/// A token's lifetime from `expires_in` (default 3599 s, as Entra's), at most
/// [`MAX_TOKEN_LIFETIME`].
pub(crate) fn token_lifetime(expires_in: Option<u64>) -> Duration {
    Duration::from_secs(expires_in.unwrap_or(3599)).min(MAX_TOKEN_LIFETIME)
}

/// Server-provided text made safe for a terminal and a log line: control characters
/// (ESC and the rest of C0 and C1, DEL) and bidirectional overrides are dropped, line
/// breaks and tabs become spaces, and the text is cut at [`MAX_SERVER_TEXT`] characters.
pub(crate) fn printable(text: &str) -> String {
    let mut out = String::new();
    let mut kept = 0usize;
    for c in text.chars() {
        if kept >= MAX_SERVER_TEXT {
            out.push('…');
            break;
        }
        let c = match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => continue,
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' => continue,
            c => c,
        };
        out.push(c);
        kept = kept.saturating_add(1);
    }
    out
}

/// A URL for a message: no query (it may carry a token), no user info, printable.
pub(crate) fn shown_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    match url::Url::parse(without_query) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            printable(parsed.as_str())
        }
        Err(_) => printable(without_query),
    }
}

/// An error and every cause under it, joined by `: ` (a TLS failure's reason is only in
/// the chain).
pub(crate) fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    printable(&text)
}

/// Reads an answer's body in chunks, refusing one longer than `limit` bytes (by its
/// `Content-Length` before reading, or once the bytes read pass the limit). Refuses a
/// redirect first: b2bsync follows none, since a token request re-sent to where a 307
/// points would carry the credential there.
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    url: &str,
    limit: usize,
) -> Result<Vec<u8>, Error> {
    let status = response.status();
    if status.is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| shown_url(&String::from_utf8_lossy(v.as_bytes())))
            .unwrap_or_else(|| "nowhere (no Location)".into());
        return Err(Error::Redirected {
            url: shown_url(url),
            status: status.as_u16(),
            location,
        });
    }
    let too_large = || Error::TooLarge {
        url: shown_url(url),
        limit,
    };
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    if response.content_length().is_some_and(|n| n > limit_u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(url, &e))?
    {
        if chunk.len() > limit.saturating_sub(body.len()) {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A failure to reach `url` or to read its answer, with the whole cause chain.
pub(crate) fn transport_error(url: &str, e: &reqwest::Error) -> Error {
    Error::Transport {
        url: shown_url(url),
        reason: describe(e),
    }
}

/// The `Retry-After` of an answer: at most [`MAX_WAIT`]. A longer one on an answer that
/// b2bsync retries (429, 5xx) is [`Error::WaitTooLong`]; on any other answer it means
/// nothing.
pub(crate) fn retry_wait(
    headers: &reqwest::header::HeaderMap,
    status: reqwest::StatusCode,
    url: &str,
    request_id: Option<&str>,
) -> Result<Option<Duration>, Error> {
    let Some(text) = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let retried = status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
    match parse_retry_after(text, jiff::Timestamp::now()) {
        Some(ServerWait::Within(wait)) => Ok(Some(wait)),
        Some(ServerWait::TooLong) if retried => Err(Error::WaitTooLong {
            url: shown_url(url),
            status: status.as_u16(),
            asked: printable(text).chars().take(40).collect(),
            request_id: request_id.map(str::to_string),
        }),
        _ => Ok(None),
    }
}

/// Which link Graph sent (or b2bsync stored) that was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// An `@odata.nextLink` in a page.
    Next,
    /// An `@odata.deltaLink` in a page.
    Delta,
    /// A delta link stored by an earlier run.
    StoredDelta,
}

impl std::fmt::Display for LinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkKind::Next => "an @odata.nextLink",
            LinkKind::Delta => "an @odata.deltaLink",
            LinkKind::StoredDelta => "the stored delta link",
        })
    }
}

/// A failure talking to Graph or the token endpoint. Per-request failures carry Graph's
/// error `code` (callers branch on it, never on the message) and the `request-id`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid Graph settings: {0}")]
    Settings(String),
    #[error("the token endpoint refused the credentials: {code}: {description}")]
    Token {
        status: u16,
        code: String,
        description: String,
    },
    #[error("Graph throttled the request (429){}", retry_hint(.retry_after))]
    Throttled {
        retry_after: Option<Duration>,
        request_id: Option<String>,
        /// `x-ms-throttle-information`: which limit was exceeded, when the service said.
        information: Option<String>,
    },
    #[error("Graph answered {status} {code} to {path}: {message} (request-id {})", .request_id.as_deref().unwrap_or("none"))]
    Graph {
        /// The request's method and path, without the query.
        path: String,
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("cannot reach {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("unexpected answer from {url}: {reason}")]
    Decode { url: String, reason: String },
    /// `graph_url` or `authority` is not `https://`: the secret or the token would travel
    /// in the clear.
    #[error(
        "[graph] {setting} is '{url}': b2bsync talks to Graph and the token endpoint over https only"
    )]
    Cleartext { setting: &'static str, url: String },
    /// `ca_file` cannot be read or holds no PEM certificate.
    #[error("[graph] ca_file {}: {reason}", .path.display())]
    CaFile { path: PathBuf, reason: String },
    /// A paging or delta link (or a stored delta link) that does not point at the
    /// configured Graph root over https: following it would send the token elsewhere.
    #[error("refusing {kind} to {link}: b2bsync sends its token only to {expected}")]
    UntrustedLink {
        kind: LinkKind,
        /// The link without its query.
        link: String,
        /// The configured Graph root's scheme, host and port.
        expected: String,
    },
    /// Graph sent an `@odata.nextLink` already followed in the same walk.
    #[error(
        "Graph sent the same @odata.nextLink twice while paging {path}: the paging would never end"
    )]
    LinkLoop { path: String },
    /// A walk passed [`MAX_PAGES`] pages.
    #[error("Graph kept sending @odata.nextLink past {limit} pages while paging {path}")]
    TooManyPages { path: String, limit: usize },
    /// An answer longer than its limit ([`MAX_BODY_BYTES`], [`MAX_TOKEN_BODY_BYTES`]).
    #[error("the answer from {url} is longer than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    /// A redirect: b2bsync follows none (a token request carries the credential).
    #[error("{url} answered {status} redirecting to '{location}': b2bsync follows no redirects")]
    Redirected {
        url: String,
        status: u16,
        /// The `Location`, without its query.
        location: String,
    },
    /// Whoever took the pages of a read (`Cloud::users_pages`) stopped it: that one holds
    /// the reason.
    #[error("the read of {path} was stopped after {users} users: the pages could not be kept")]
    Stopped { path: String, users: usize },
    /// The server asked to wait longer than [`MAX_WAIT`] before retrying.
    #[error("{url} answered {status} asking b2bsync to wait '{asked}' before retrying, longer than the {}-minute maximum (request-id {})", MAX_WAIT.as_secs() / 60, .request_id.as_deref().unwrap_or("none"))]
    WaitTooLong {
        url: String,
        status: u16,
        /// The `Retry-After` as sent (printable, shortened).
        asked: String,
        request_id: Option<String>,
    },
}

fn retry_hint(retry_after: &Option<Duration>) -> String {
    retry_after
        .map(|d| format!(", retry after {:.1}s", d.as_secs_f64()))
        .unwrap_or_default()
}

impl Error {
    /// The HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Token { status, .. }
            | Error::Graph { status, .. }
            | Error::Redirected { status, .. }
            | Error::WaitTooLong { status, .. } => Some(*status),
            Error::Throttled { .. } => Some(429),
            _ => None,
        }
    }

    /// Graph's error code (`Request_BadRequest`, `Authorization_RequestDenied`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Token { code, .. } | Error::Graph { code, .. } => Some(code),
            Error::Throttled { .. } => Some("TooManyRequests"),
            _ => None,
        }
    }

    /// Whether the service said it did not process the request (so even a non-idempotent
    /// call may be repeated): 429, 503, or 504.
    pub fn not_processed(&self) -> bool {
        // A wait past the maximum is not retried: the run stops and the next one goes on.
        !matches!(self, Error::WaitTooLong { .. }) && matches!(self.status(), Some(429 | 503 | 504))
    }

    /// Whether a retry of an idempotent request may succeed: the above, 500/502, and
    /// transport failures (connection dropped, timeout).
    pub fn transient(&self) -> bool {
        self.not_processed()
            || matches!(self.status(), Some(500 | 502))
            || matches!(self, Error::Transport { .. })
    }

    /// The server's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Throttled { retry_after, .. } | Error::Graph { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The service says a delta link can no longer be used (`410 Gone`, `syncStateNotFound`,
    /// `resyncRequired`, an expired token): read everything again.
    pub fn resync_required(&self) -> bool {
        match self {
            Error::Graph { status, code, .. } => {
                *status == 410
                    || code.eq_ignore_ascii_case("syncStateNotFound")
                    || code.eq_ignore_ascii_case("resyncRequired")
                    || code.eq_ignore_ascii_case("syncStateInvalid")
                    || code.eq_ignore_ascii_case("expiredToken")
            }
            _ => false,
        }
    }

    /// The stored delta link cannot be used (it does not point at the configured Graph
    /// root): drop it and read every user.
    pub fn stored_link_unusable(&self) -> bool {
        matches!(
            self,
            Error::UntrustedLink {
                kind: LinkKind::StoredDelta,
                ..
            }
        )
    }

    /// The `request-id` of the answer, when there was one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Throttled { request_id, .. }
            | Error::Graph { request_id, .. }
            | Error::WaitTooLong { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// One line telling the admin what to do.
    pub fn help(&self) -> String {
        match self {
            Error::Settings(_) => "check the [graph] section of the configuration".into(),
            Error::Token { code, .. } if code.contains("7000215") => {
                "the client secret is wrong or expired: use the secret's value, not its id".into()
            }
            Error::Token { code, .. } if code.contains("700027") || code.contains("700024") => {
                "the certificate is not the one registered on the app, or the clock is off".into()
            }
            Error::Token { .. } => {
                "check [graph] tenant, client_id and the credential; the app must exist in that tenant".into()
            }
            Error::Throttled { .. } => {
                "Graph is throttling this app; the next run continues where this one stopped".into()
            }
            Error::Graph { code, .. } if code == "Authorization_RequestDenied" => {
                "grant the app the application permissions with admin consent: User.ReadWrite.All (users), User.Invite.All (invitations), RoleManagement.Read.Directory (role holders), Organization.Read.All (verified domains); users holding admin roles cannot be changed by an app".into()
            }
            Error::Graph { code, .. } if code == "InvalidAuthenticationToken" => {
                "the token was refused: check that [graph] authority and graph_url are of the same cloud".into()
            }
            Error::Graph { message, .. } if message.contains("on-premises mastered") => {
                "this user is synced from AD: write the attribute in AD (b2bsync does that for synced users)".into()
            }
            Error::Graph { status: 404, .. } => {
                "the user no longer exists in Entra ID; the next run re-reads the tenant".into()
            }
            Error::Graph { .. } => "see the Graph error code in the troubleshooting table of docs/operations.md".into(),
            Error::Transport { .. } => {
                "check the network path to Graph, the proxy, and [graph] ca_file when TLS is inspected".into()
            }
            Error::Decode { .. } => "check that [graph] graph_url points at Microsoft Graph".into(),
            Error::Cleartext { .. } => {
                "use an https:// URL: the client secret and the bearer token never travel in the clear".into()
            }
            Error::CaFile { .. } => {
                "set [graph] ca_file to a PEM file holding the CA certificates (-----BEGIN CERTIFICATE-----); convert a DER file with `openssl x509 -inform der -in ca.cer -out ca.pem`".into()
            }
            Error::UntrustedLink {
                kind: LinkKind::StoredDelta,
                ..
            } => "the stored delta link is dropped and every user read again; nothing to do unless [graph] graph_url changed by mistake".into(),
            Error::UntrustedLink { .. } => {
                "b2bsync follows paging links only to [graph] graph_url (https, same host and port); if Graph is reached through a proxy that rewrites links, set graph_url to the address the links use".into()
            }
            Error::LinkLoop { .. } | Error::TooManyPages { .. } => {
                "Graph or a proxy in between is misbehaving; the next run reads again from the start, and if it persists, give Microsoft support the request-ids from the debug log".into()
            }
            Error::TooLarge { .. } => {
                "a page of users is a few MB; check that [graph] graph_url and authority point at Microsoft and no proxy in between answers instead".into()
            }
            Error::Redirected { .. } => {
                "set [graph] authority and graph_url to the final https address: a token request carries the credential and is never sent on to another place".into()
            }
            Error::WaitTooLong { .. } => {
                "the service is throttling or unavailable for longer than a run waits; the next run continues where this one stopped".into()
            }
            Error::Stopped { .. } => {
                "see the error logged with it (the state store: its disk, or the temp store's)".into()
            }
        }
    }
}

/// The cloud boundary: everything b2bsync reads from or writes to Entra ID.
pub trait Cloud {
    /// Every user in the tenant with the properties b2bsync needs, in pages of 999.
    fn users(&self) -> impl Future<Output = Result<Vec<CloudUser>, Error>> + Send;

    /// [`Cloud::users`], handed to `pages` a page at a time as they come (so that a large
    /// tenant is never held whole); how many users there were. When `pages` breaks, the read
    /// stops there with [`Error::Stopped`]. The default reads them whole and hands over one
    /// page.
    fn users_pages(
        &self,
        pages: &mut (dyn FnMut(Vec<CloudUser>) -> ControlFlow<()> + Send),
    ) -> impl Future<Output = Result<usize, Error>> + Send
    where
        Self: Sync,
    {
        async move {
            let users = self.users().await?;
            let n = users.len();
            match pages(users) {
                ControlFlow::Continue(()) => Ok(n),
                ControlFlow::Break(()) => Err(Error::Stopped {
                    path: "GET /users".into(),
                    users: n,
                }),
            }
        }
    }

    /// A delta link that reads the users' changes from now on (`$deltatoken=latest`), taken
    /// before a full read so that what changes during it is read again. `None`: this cloud
    /// keeps no delta, and every read is full.
    fn delta_link(&self) -> impl Future<Output = Result<Option<String>, Error>> + Send {
        async { Ok(None) }
    }

    /// The users' changes since `link` (a link from [`Cloud::delta_link`] or an earlier
    /// [`UserChanges`]). `known` is the tenant's size as last read, for pacing. An error for
    /// which [`Error::resync_required`] holds means: read everything again.
    fn users_since(
        &self,
        link: &str,
        known: usize,
    ) -> impl Future<Output = Result<UserChanges, Error>> + Send {
        let _ = (link, known);
        async {
            Err(Error::Graph {
                path: "GET /users/delta".into(),
                status: 410,
                code: "resyncRequired".into(),
                message: "this cloud keeps no delta".into(),
                request_id: None,
                retry_after: None,
            })
        }
    }

    /// One user, read fresh (used to reconcile an interrupted action).
    fn user(&self, id: &str) -> impl Future<Output = Result<Option<CloudUser>, Error>> + Send;

    /// The user's `signInSessionsValidFromDateTime`, read fresh (to settle an interrupted
    /// session revocation): `Ok(None)` when the user does not exist, `Ok(Some(None))` when
    /// the user has no such time (its sessions were never revoked).
    fn sessions_valid_from(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<Option<String>>, Error>> + Send;

    /// The tenant's verified domain names, lower case.
    fn verified_domains(&self) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// PATCHes a cloud-only user's address attributes.
    fn update_user(
        &self,
        id: &str,
        patch: &UserPatch,
    ) -> impl Future<Output = Result<RequestIds, Error>> + Send;

    /// Sends one invitation. Not idempotent: retried only when the service says it did not
    /// process the request.
    fn invite(
        &self,
        invitation: &Invitation,
    ) -> impl Future<Output = Result<InvitationSent, Error>> + Send;

    /// Revokes the user's sign-in sessions (`POST /users/{id}/revokeSignInSessions`):
    /// refresh tokens and session cookies stop working within minutes. A repeat only moves
    /// `signInSessionsValidFromDateTime` forward, yet it is retried only when the service
    /// says it did not process the request: an answer that may have been lost is settled by
    /// reading that time back, so each conversion is revoked exactly once.
    fn revoke_sessions(&self, id: &str) -> impl Future<Output = Result<RequestIds, Error>> + Send;
}

/// Percent-encodes a path segment (a B2B UPN holds `#`; an id from Graph may hold `/`).
pub(crate) fn urlencode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    // See: issue 10. Each of these panicked (from_secs_f64) or paused a run for years.
    #[test]
    fn server_seconds_past_the_maximum_wait_are_too_long_and_never_panic() {
        for text in [
            "1e30",
            "99999999999999999999",
            "1e19",
            "100000000",
            "300.001",
        ] {
            assert_eq!(
                parse_retry_after(text, jiff::Timestamp::now()),
                Some(ServerWait::TooLong),
                "{text}"
            );
        }
        assert_eq!(server_wait(f64::MAX), Some(ServerWait::TooLong));
        assert_eq!(
            server_wait(300.0),
            Some(ServerWait::Within(Duration::from_secs(300)))
        );
        assert_eq!(
            server_wait(0.25),
            Some(ServerWait::Within(Duration::from_millis(250)))
        );
        for text in ["-1", "NaN", "inf", "-inf", "soon", ""] {
            assert_eq!(
                parse_retry_after(text, jiff::Timestamp::now()),
                None,
                "{text}"
            );
        }
    }

    #[test]
    fn retry_after_dates_are_measured_from_now_and_capped() {
        let now: jiff::Timestamp = "2025-01-14T12:00:00Z".parse().unwrap();
        let at = |text| parse_retry_after(text, now);
        assert_eq!(
            at("Tue, 14 Jan 2025 12:00:30 GMT"),
            Some(ServerWait::Within(Duration::from_secs(30)))
        );
        assert_eq!(
            at("Tue, 14 Jan 2025 11:00:00 GMT"),
            Some(ServerWait::Within(Duration::ZERO))
        );
        assert_eq!(
            at("Tue, 14 Jan 2025 12:05:01 GMT"),
            Some(ServerWait::TooLong)
        );
        assert_eq!(
            at("Tue, 31 Dec 2999 23:59:59 GMT"),
            Some(ServerWait::TooLong)
        );
    }

    #[test]
    fn throttle_percentages_and_token_lifetimes_are_clamped() {
        assert_eq!(limit_percentage("0.9"), Some(0.9));
        assert_eq!(limit_percentage("1e308"), Some(2.0));
        assert_eq!(limit_percentage("-5"), Some(0.0));
        assert_eq!(limit_percentage("NaN"), None);
        assert_eq!(limit_percentage("inf"), None);
        assert_eq!(token_lifetime(Some(u64::MAX)), MAX_TOKEN_LIFETIME);
        assert_eq!(token_lifetime(Some(3599)), Duration::from_secs(3599));
        assert_eq!(token_lifetime(None), Duration::from_secs(3599));
    }

    #[test]
    fn an_invitation_answer_is_the_conversion_only_with_the_requested_id_an_id_and_a_status() {
        let sent = |invitation_id: &str, user_id: &str, status: &str| InvitationSent {
            invitation_id: invitation_id.into(),
            user_id: user_id.into(),
            status: status.into(),
            redeem_url: Some("https://login.microsoftonline.com/redeem?rd=secret".into()),
            ids: RequestIds {
                request_id: Some("r-1".into()),
                client_request_id: "c-1".into(),
            },
        };
        assert_eq!(sent("i", "U-1", "PendingAcceptance").problem("u-1"), None);
        let other = sent("i", "u-2\u{1b}[2J", "PendingAcceptance");
        let problem = other.problem("u-1").unwrap();
        assert!(
            problem.contains("invitedUser.id u-2[2J instead of u-1"),
            "{problem}"
        );
        assert_eq!(
            sent("", "", "").problem("u-1").as_deref(),
            Some("no invitedUser.id, no invitation id, no status")
        );
        let described = other.described();
        assert!(described.contains("request-id r-1"), "{described}");
        assert!(
            !described.contains("secret"),
            "the redeem link is never described"
        );
    }

    #[test]
    fn printable_drops_escapes_and_bidi_overrides_and_is_bounded() {
        assert_eq!(
            printable("\u{1b}[31mred\u{1b}[0m\r\nnext\u{7}\u{9b}2J\u{202e}txt"),
            "[31mred[0m  next2Jtxt"
        );
        let long = "x".repeat(10_000);
        let shown = printable(&long);
        assert_eq!(shown.chars().count(), MAX_SERVER_TEXT + 1);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn shown_urls_lose_query_fragment_and_user_info() {
        assert_eq!(
            shown_url("https://user:pw@graph.example:8443/v1.0/users?$skiptoken=abc#x"),
            "https://graph.example:8443/v1.0/users"
        );
        assert_eq!(shown_url("not a url\u{1b}[2J?q"), "not a url[2J");
    }

    #[test]
    fn only_the_stored_link_is_dropped_and_no_wait_too_long_is_retried() {
        let stored = Error::UntrustedLink {
            kind: LinkKind::StoredDelta,
            link: "https://other.example/v1.0/users/delta".into(),
            expected: "https://graph.microsoft.com".into(),
        };
        assert!(stored.stored_link_unusable() && !stored.transient());
        let next = Error::UntrustedLink {
            kind: LinkKind::Next,
            link: "http://graph.microsoft.com/v1.0/users".into(),
            expected: "https://graph.microsoft.com".into(),
        };
        assert!(!next.stored_link_unusable() && !next.transient());
        let wait = Error::WaitTooLong {
            url: "https://graph.microsoft.com/v1.0/users".into(),
            status: 429,
            asked: "1e30".into(),
            request_id: None,
        };
        assert_eq!(wait.status(), Some(429));
        assert!(!wait.not_processed() && !wait.transient());
        assert!(wait.help().contains("next run"));
    }
}
