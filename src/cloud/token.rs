//! Access tokens for Graph. By the OAuth 2.0 client-credentials grant of the Microsoft
//! identity platform: with a client secret, with a certificate (a client assertion JWT signed
//! with the private key, `PS256` with the `x5t#S256` thumbprint), or with a workload identity
//! (a federated token file, as Kubernetes projects it, sent as the client assertion). Or from
//! a managed identity endpoint (Azure IMDS, or App Service's `IDENTITY_ENDPOINT`). Tokens are
//! cached and renewed five minutes before they expire; they never reach a log.
//!
//! The token endpoint's answers are untrusted like Graph's: no redirect is followed (it would
//! re-send the credential), the body is read up to [`MAX_TOKEN_BODY_BYTES`], `expires_in` is
//! capped at [`MAX_TOKEN_LIFETIME`](super::MAX_TOKEN_LIFETIME), a `Retry-After` past
//! [`MAX_WAIT`](super::MAX_WAIT) fails the request, and error text is made printable.

// Server numbers reach durations and instants here: overflow must be handled, not panic.
#![warn(clippy::arithmetic_side_effects)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::sync::Mutex;

use super::urlencode;
use super::{
    Error, MAX_TOKEN_BODY_BYTES, printable, read_body, retry_wait, shown_url, token_lifetime,
    transport_error,
};

/// Renew this long before the token expires.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// How the app proves who it is.
pub enum Credential {
    /// A client secret (read from the environment or a file, never from the config file).
    Secret(SecretString),
    /// A certificate registered on the app and its RSA private key (PEM).
    Certificate {
        /// DER of the certificate, for the `x5t#S256` thumbprint.
        cert_der: Vec<u8>,
        key: EncodingKey,
    },
    /// A workload identity: a token issued by a trusted external IdP (a Kubernetes service
    /// account token), read fresh from this file for every request since it rotates.
    FederatedTokenFile(PathBuf),
    /// A managed identity: the token comes from the host's identity endpoint.
    ManagedIdentity(ManagedIdentity),
}

/// Where a managed identity's token comes from.
#[derive(Debug, Clone)]
pub struct ManagedIdentity {
    /// The endpoint: Azure IMDS
    /// (`http://169.254.169.254/metadata/identity/oauth2/token`), or App Service's
    /// `IDENTITY_ENDPOINT`.
    pub endpoint: String,
    /// App Service's `IDENTITY_HEADER` (sent as `X-IDENTITY-HEADER`); `None` for IMDS, which
    /// takes `Metadata: true` instead.
    pub header: Option<SecretString>,
    /// A user-assigned identity's client id; `None` for the system-assigned one.
    pub client_id: Option<String>,
}

/// Azure IMDS's token endpoint.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

impl ManagedIdentity {
    /// The endpoint of this host: App Service's (from `IDENTITY_ENDPOINT` and
    /// `IDENTITY_HEADER`) when set, else IMDS; `endpoint` overrides both.
    pub fn from_environment(endpoint: Option<&str>, client_id: Option<&str>) -> Self {
        let env_endpoint = std::env::var("IDENTITY_ENDPOINT")
            .ok()
            .filter(|v| !v.is_empty());
        let header = std::env::var("IDENTITY_HEADER")
            .ok()
            .filter(|v| !v.is_empty())
            .map(SecretString::from);
        match (endpoint, env_endpoint) {
            (Some(e), _) => ManagedIdentity {
                endpoint: e.to_string(),
                header,
                client_id: client_id.map(str::to_string),
            },
            (None, Some(e)) => ManagedIdentity {
                endpoint: e,
                header,
                client_id: client_id.map(str::to_string),
            },
            (None, None) => ManagedIdentity {
                endpoint: IMDS_ENDPOINT.to_string(),
                header: None,
                client_id: client_id.map(str::to_string),
            },
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Secret(_) => f.write_str("Credential::Secret(***)"),
            Credential::Certificate { .. } => f.write_str("Credential::Certificate(***)"),
            Credential::FederatedTokenFile(path) => {
                write!(f, "Credential::FederatedTokenFile({})", path.display())
            }
            Credential::ManagedIdentity(mi) => {
                write!(f, "Credential::ManagedIdentity({})", mi.endpoint)
            }
        }
    }
}

impl Credential {
    /// Loads a certificate credential from a PEM certificate and a PEM private key file.
    pub fn certificate(cert_file: &Path, key_file: &Path) -> Result<Self, Error> {
        let cert_pem = std::fs::read(cert_file).map_err(|e| {
            Error::Settings(format!(
                "cannot read certificate {}: {e}",
                cert_file.display()
            ))
        })?;
        let cert_der = x509_parser::pem::parse_x509_pem(&cert_pem)
            .map_err(|e| {
                Error::Settings(format!(
                    "{} is not a PEM certificate: {e}",
                    cert_file.display()
                ))
            })?
            .1
            .contents;
        let key_pem = zeroize::Zeroizing::new(std::fs::read(key_file).map_err(|e| {
            Error::Settings(format!(
                "cannot read private key {}: {e}",
                key_file.display()
            ))
        })?);
        let key = EncodingKey::from_rsa_pem(&key_pem).map_err(|e| {
            Error::Settings(format!(
                "{} is not an RSA private key in PEM: {e}",
                key_file.display()
            ))
        })?;
        Ok(Credential::Certificate { cert_der, key })
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Entra sends a number; managed identity endpoints send it as a string.
    #[serde(default, deserialize_with = "number_or_string")]
    expires_in: Option<u64>,
}

fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v: Option<serde_json::Value> = Option::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    })
}

#[derive(Deserialize)]
struct TokenError {
    error: Option<String>,
    error_description: Option<String>,
    error_codes: Option<Vec<u64>>,
}

/// A cached source of Graph access tokens for one app in one tenant.
pub struct TokenSource {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    scope: String,
    credential: Credential,
    cached: Mutex<Option<(SecretString, Instant)>>,
    /// The `Retry-After` of the last token answer (at most `MAX_WAIT`), for the retry loop.
    last_retry_after: Mutex<Option<Duration>>,
}

/// Attempts and total time for one token request.
const TOKEN_ATTEMPTS: u32 = 6;
const TOKEN_BUDGET: Duration = Duration::from_secs(60);

impl TokenSource {
    /// `authority` is the login base (`https://login.microsoftonline.com` or a national
    /// cloud's, or the emulator's); `resource` the Graph resource whose `.default` scope is
    /// asked (`https://graph.microsoft.com`, a national cloud's Graph root).
    pub fn new(
        http: reqwest::Client,
        authority: &str,
        tenant: &str,
        client_id: &str,
        resource: &str,
        credential: Credential,
    ) -> Self {
        TokenSource {
            http,
            token_url: format!(
                "{}/{}/oauth2/v2.0/token",
                authority.trim_end_matches('/'),
                urlencode(tenant)
            ),
            client_id: client_id.to_string(),
            scope: format!("{}/.default", resource.trim_end_matches('/')),
            credential,
            cached: Mutex::new(None),
            last_retry_after: Mutex::new(None),
        }
    }

    /// A valid token, from the cache or freshly issued.
    pub async fn token(&self) -> Result<SecretString, Error> {
        let mut cached = self.cached.lock().await;
        if let Some((token, renew_at)) = cached.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        tracing::trace!(url = %shown_url(&self.token_url), "Token requested.");
        let (token, lifetime) = self.request_with_retries().await?;
        let renew_in = lifetime
            .saturating_sub(RENEW_BEFORE)
            .max(lifetime.checked_div(2).unwrap_or_default());
        // The lifetime is capped at MAX_TOKEN_LIFETIME, so the sum fits; renew at once if not.
        let now = Instant::now();
        let renew_at = now.checked_add(renew_in).unwrap_or(now);
        tracing::trace!(
            lifetime_s = lifetime.as_secs(),
            renew_in_s = renew_in.as_secs(),
            "Token issued."
        );
        *cached = Some((token.clone(), renew_at));
        Ok(token)
    }

    /// Drops the cached token (after Graph refused it as expired).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    /// Asks for a token, retrying what the endpoint says is temporary (429, 5xx, a dropped
    /// connection) with its `Retry-After` or a short backoff: a token request is idempotent,
    /// and a hiccup of the token endpoint should not cost a Graph request its own retries.
    async fn request_with_retries(&self) -> Result<(SecretString, Duration), Error> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            let err = match self.request().await {
                Ok(ok) => return Ok(ok),
                Err(e) => e,
            };
            let (transient, retry_after) = match &err {
                Error::Token { status, .. } => (
                    matches!(status, 429 | 500 | 502 | 503 | 504),
                    *self.last_retry_after.lock().await,
                ),
                Error::Transport { .. } => (true, None),
                _ => (false, None),
            };
            let backoff_ms = 250u64.checked_shl(attempt.min(6)).unwrap_or(16_000);
            let wait = retry_after
                .unwrap_or_else(|| Duration::from_millis(backoff_ms))
                .min(Duration::from_secs(30));
            if !transient
                || attempt >= TOKEN_ATTEMPTS
                || started.elapsed().saturating_add(wait) > TOKEN_BUDGET
            {
                return Err(err);
            }
            tracing::warn!(
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %err,
                "Token request will be retried."
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn request(&self) -> Result<(SecretString, Duration), Error> {
        *self.last_retry_after.lock().await = None;
        if let Credential::ManagedIdentity(mi) = &self.credential {
            return self.managed_identity(mi).await;
        }
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", self.client_id.clone()),
            ("scope", self.scope.clone()),
        ];
        match &self.credential {
            Credential::Secret(secret) => {
                form.push(("client_secret", secret.expose_secret().to_string()));
            }
            Credential::Certificate { cert_der, key } => {
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", self.assertion(cert_der, key)?));
            }
            Credential::FederatedTokenFile(path) => {
                let token = std::fs::read_to_string(path).map_err(|e| {
                    Error::Settings(format!(
                        "cannot read the federated token file {}: {e}",
                        path.display()
                    ))
                })?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", token.trim().to_string()));
            }
            Credential::ManagedIdentity(_) => {}
        }
        let response = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_error(&self.token_url, &e))?;
        let (status, body) = self.answer(&self.token_url, response).await?;
        if status == 200 {
            let parsed: TokenResponse =
                serde_json::from_slice(&body).map_err(|e| Error::Decode {
                    url: shown_url(&self.token_url),
                    reason: printable(&e.to_string()),
                })?;
            let lifetime = token_lifetime(parsed.expires_in);
            return Ok((SecretString::from(parsed.access_token), lifetime));
        }
        let parsed: TokenError = serde_json::from_slice(&body).unwrap_or(TokenError {
            error: None,
            error_description: None,
            error_codes: None,
        });
        let code = match (
            &parsed.error,
            parsed.error_codes.as_ref().and_then(|c| c.first()),
        ) {
            (Some(e), Some(n)) => format!("{} (AADSTS{n})", printable(e)),
            (Some(e), None) => printable(e),
            _ => format!("HTTP {status}"),
        };
        // The description's first line names the problem; the rest is trace ids.
        let description = printable(
            parsed
                .error_description
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default(),
        );
        Err(Error::Token {
            status,
            code,
            description,
        })
    }

    /// A token from a managed identity endpoint (IMDS or App Service).
    async fn managed_identity(
        &self,
        mi: &ManagedIdentity,
    ) -> Result<(SecretString, Duration), Error> {
        let resource = self.scope.trim_end_matches("/.default").to_string();
        let mut query: Vec<(&str, String)> = vec![("resource", resource)];
        let mut request = match &mi.header {
            Some(header) => {
                query.push(("api-version", "2019-08-01".into()));
                self.http
                    .get(&mi.endpoint)
                    .header("X-IDENTITY-HEADER", header.expose_secret())
            }
            None => {
                query.push(("api-version", "2018-02-01".into()));
                self.http.get(&mi.endpoint).header("Metadata", "true")
            }
        };
        if let Some(id) = &mi.client_id {
            query.push(("client_id", id.clone()));
        }
        request = request.query(&query);
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&mi.endpoint, &e))?;
        let (status, body) = self.answer(&mi.endpoint, response).await?;
        if status != 200 {
            let parsed: TokenError = serde_json::from_slice(&body).unwrap_or(TokenError {
                error: None,
                error_description: None,
                error_codes: None,
            });
            return Err(Error::Token {
                status,
                code: parsed
                    .error
                    .map(|e| printable(&e))
                    .unwrap_or_else(|| format!("HTTP {status}")),
                description: parsed
                    .error_description
                    .map(|d| printable(&d))
                    .unwrap_or_else(|| "the managed identity endpoint refused the request".into()),
            });
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| Error::Decode {
            url: shown_url(&mi.endpoint),
            reason: printable(&e.to_string()),
        })?;
        Ok((
            SecretString::from(parsed.access_token),
            token_lifetime(parsed.expires_in),
        ))
    }

    /// The status and body of a token answer. A redirect is refused and the body read up to
    /// [`MAX_TOKEN_BODY_BYTES`] ([`read_body`]); a `Retry-After` is kept for the retry loop,
    /// and one past `MAX_WAIT` on an answer that would be retried fails the request.
    async fn answer(
        &self,
        url: &str,
        response: reqwest::Response,
    ) -> Result<(u16, Vec<u8>), Error> {
        let status = response.status();
        *self.last_retry_after.lock().await = retry_wait(response.headers(), status, url, None)?;
        let body = read_body(response, url, MAX_TOKEN_BODY_BYTES).await?;
        Ok((status.as_u16(), body))
    }

    /// A client assertion: `PS256`, `x5t#S256` = base64url(SHA-256(cert DER)), valid 10 min.
    fn assertion(&self, cert_der: &[u8], key: &EncodingKey) -> Result<String, Error> {
        let mut header = Header::new(Algorithm::PS256);
        header.typ = Some("JWT".into());
        header.x5t_s256 = Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(cert_der)),
        );
        let now = jiff::Timestamp::now().as_second();
        let claims = AssertionClaims {
            aud: &self.token_url,
            iss: &self.client_id,
            sub: &self.client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now.saturating_add(600),
        };
        jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| Error::Settings(format!("cannot sign the client assertion: {e}")))
    }
}
