//! Access tokens for Graph by the OAuth 2.0 client-credentials grant of the Microsoft identity
//! platform: with a client secret, or with a certificate (a client assertion JWT signed with
//! the private key, `PS256` with the `x5t#S256` thumbprint). Tokens are cached and renewed
//! five minutes before they expire; they never reach a log.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::sync::Mutex;

use super::Error;

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
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Secret(_) => f.write_str("Credential::Secret(***)"),
            Credential::Certificate { .. } => f.write_str("Credential::Certificate(***)"),
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
    expires_in: Option<u64>,
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
}

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
                tenant
            ),
            client_id: client_id.to_string(),
            scope: format!("{}/.default", resource.trim_end_matches('/')),
            credential,
            cached: Mutex::new(None),
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
        let (token, lifetime) = self.request().await?;
        let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_BEFORE).max(lifetime / 2);
        *cached = Some((token.clone(), renew_at));
        Ok(token)
    }

    /// Drops the cached token (after Graph refused it as expired).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn request(&self) -> Result<(SecretString, Duration), Error> {
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
        }
        let transport = |e: reqwest::Error| Error::Transport {
            url: self.token_url.clone(),
            reason: e.to_string(),
        };
        let response = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport)?;
        if status == 200 {
            let parsed: TokenResponse =
                serde_json::from_slice(&body).map_err(|e| Error::Decode {
                    url: self.token_url.clone(),
                    reason: e.to_string(),
                })?;
            let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3599));
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
            (Some(e), Some(n)) => format!("{e} (AADSTS{n})"),
            (Some(e), None) => e.clone(),
            _ => format!("HTTP {status}"),
        };
        // The description's first line names the problem; the rest is trace ids.
        let description = parsed
            .error_description
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        Err(Error::Token {
            status,
            code,
            description,
        })
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
            exp: now + 600,
        };
        jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| Error::Settings(format!("cannot sign the client assertion: {e}")))
    }
}
