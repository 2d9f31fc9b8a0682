//! The cloud side: Microsoft Graph and the Entra token endpoint. Reads users in bulk, PATCHes
//! the address attributes of cloud-only users, and sends the conversion invitations.
//!
//! The rest of the crate sees only [`Cloud`], [`Error`] and the request types here; the Graph
//! JSON shapes stay private to [`graph`], and token acquisition to [`token`].

pub mod graph;
pub mod pace;
pub mod token;

use std::collections::HashMap;
use std::future::Future;
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

/// What the service answered to an invitation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationSent {
    pub invitation_id: String,
    pub user_id: String,
    pub status: String,
    pub redeem_url: Option<String>,
    pub ids: RequestIds,
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
            Error::Token { status, .. } | Error::Graph { status, .. } => Some(*status),
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
        matches!(self.status(), Some(429 | 503 | 504))
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
        }
    }
}

/// The cloud boundary: everything b2bsync reads from or writes to Entra ID.
pub trait Cloud {
    /// Every user in the tenant with the properties b2bsync needs, in pages of 999.
    fn users(&self) -> impl Future<Output = Result<Vec<CloudUser>, Error>> + Send;

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
}
