//! Contract tests for the Graph emulator: each test names the section of
//! `docs/graph-contract.md` it checks. They drive an in-process emulator over
//! HTTPS with reqwest, trusting only the emulator's generated CA.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use graph_emulator::{self as emulator, Options, Running, Tenant, User};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest;

const RW: (&str, &str) = ("11111111-1111-4111-8111-111111111111", "rw-secret~value.1");
const READ: (&str, &str) = ("22222222-2222-4222-8222-222222222222", "read-secret");
const MAIL: (&str, &str) = ("33333333-3333-4333-8333-333333333333", "mail-secret");
const INVITE: (&str, &str) = ("44444444-4444-4444-8444-444444444444", "invite-secret");
const NONE: (&str, &str) = ("55555555-5555-4555-8555-555555555555", "none-secret");
const DIRECTORY: (&str, &str) = ("66666666-6666-4666-8666-666666666666", "directory-secret");
const SCOPE: &str = "https://graph.microsoft.com/.default";

const ANNA: &str = "a0000000-0000-4000-8000-000000000001";
const BRUNO: &str = "a0000000-0000-4000-8000-000000000002";
const CARL: &str = "a0000000-0000-4000-8000-000000000003";
const RITA: &str = "a0000000-0000-4000-8000-000000000004";
const MAX: &str = "a0000000-0000-4000-8000-000000000005";
const VERA: &str = "a0000000-0000-4000-8000-000000000007";
const PAUL: &str = "a0000000-0000-4000-8000-000000000008";

fn fixture() -> Tenant {
    Tenant::from_json_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tenant-contract.json"
    ))
    .unwrap()
}

/// The fixture plus `extra` generated cloud users (for paging).
fn fixture_with(extra: usize) -> Tenant {
    let mut tenant = fixture();
    for i in 0..extra {
        tenant.users.push(User {
            id: format!("b0000000-0000-4000-8000-{i:012}"),
            user_principal_name: format!("gen{i:04}@contoso.example"),
            display_name: Some(format!("Generated {i:04}")),
            mail: Some(format!("gen{i:04}@partner.example")),
            ..User::default()
        });
    }
    tenant
}

struct Lab {
    emu: Running,
    http: reqwest::Client,
}

async fn lab_with(tenant: Tenant, configure: impl FnOnce(&mut Options)) -> Lab {
    let mut opts = Options::new("127.0.0.1:0".parse().unwrap(), tenant);
    configure(&mut opts);
    let emu = emulator::spawn(opts).await.unwrap();
    let ca = reqwest::Certificate::from_pem(emu.ca_pem.as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    Lab { emu, http }
}

async fn lab() -> Lab {
    lab_with(fixture(), |_| {}).await
}

impl Lab {
    async fn token_response(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.emu.token_url())
            .form(form)
            .send()
            .await
            .unwrap()
    }

    async fn token(&self, app: (&str, &str)) -> String {
        let response = self
            .token_response(&[
                ("grant_type", "client_credentials"),
                ("client_id", app.0),
                ("client_secret", app.1),
                ("scope", SCOPE),
            ])
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1.0{path}", self.emu.base_url)
    }

    async fn call(
        &self,
        app: (&str, &str),
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let token = self.token(app).await;
        let mut request = self.http.request(method, self.url(path)).bearer_auth(token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.call(RW, Method::GET, path, None, &[]).await
    }

    async fn get_aq(&self, path: &str) -> reqwest::Response {
        self.call(
            RW,
            Method::GET,
            path,
            None,
            &[("ConsistencyLevel", "eventual")],
        )
        .await
    }

    async fn json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }

    async fn invite(&self, app: (&str, &str), body: Value) -> reqwest::Response {
        self.call(app, Method::POST, "/invitations", Some(body), &[])
            .await
    }

    async fn control(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, format!("{}/_emulator{path}", self.emu.base_url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }
}

/// Asserts a Graph error body (§7) and returns it.
async fn assert_error(
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
    message: &str,
) -> Value {
    assert_eq!(response.status(), status);
    let request_id = response.headers()["request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["message"], message, "{body}");
    assert_eq!(
        body["error"]["innerError"]["request-id"],
        request_id.as_str()
    );
    body
}

fn ids(body: &Value) -> Vec<String> {
    body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

// ---------------------------------------------------------------- §7 and transport

/// §7: every response carries request-id, client-request-id (echoed), Date and
/// x-ms-ags-diagnostic; innerError.date has no fraction and no zone.
#[tokio::test]
async fn s7_error_shape_and_common_headers() {
    let lab = lab().await;
    let response = lab
        .http
        .get(lab.url("/users"))
        .header("client-request-id", "my-correlation-1")
        .send()
        .await
        .unwrap();
    let headers = response.headers().clone();
    assert_eq!(headers["client-request-id"], "my-correlation-1");
    assert!(headers.contains_key("request-id"));
    assert!(headers["date"].to_str().unwrap().ends_with(" GMT"));
    assert!(headers.contains_key("x-ms-ags-diagnostic"));
    let body = assert_error(
        response,
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        "Access token is empty.",
    )
    .await;
    let inner = &body["error"]["innerError"];
    assert_eq!(inner["client-request-id"], "my-correlation-1");
    let date = inner["date"].as_str().unwrap();
    assert_eq!(date.len(), 19, "{date}");
    assert!(jiff::civil::DateTime::strptime("%Y-%m-%dT%H:%M:%S", date).is_ok());
}

/// §7: without a client-request-id header the response's equals request-id.
#[tokio::test]
async fn s7_client_request_id_defaults_to_request_id() {
    let lab = lab().await;
    let response = lab.get("/users/a0000000-0000-4000-8000-000000000001").await;
    assert_eq!(
        response.headers()["request-id"],
        response.headers()["client-request-id"]
    );
}

/// Transport: HTTPS with the generated CA, h2 negotiated by ALPN, HTTP/1.1 also served.
#[tokio::test]
async fn transport_serves_h2_and_http1() {
    let lab = lab().await;
    let response = lab.get("/users?$top=1").await;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let ca = reqwest::Certificate::from_pem(lab.emu.ca_pem.as_bytes()).unwrap();
    let http1 = reqwest::Client::builder()
        .tls_certs_only([ca])
        .http1_only()
        .build()
        .unwrap();
    let response = http1.get(lab.url("/users")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------- §6 authentication

/// §6.1: a client secret in the form body gets a Bearer JWT with the contract's claims.
#[tokio::test]
async fn s6_1_client_secret_gets_an_app_token() {
    let lab = lab().await;
    let response = lab
        .token_response(&[
            ("grant_type", "client_credentials"),
            ("client_id", RW.0),
            ("client_secret", RW.1),
            ("scope", SCOPE),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    let claims = claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], "https://graph.microsoft.com");
    assert_eq!(claims["tid"], lab.emu.tenant_id.as_str());
    assert_eq!(claims["appid"], RW.0);
    assert_eq!(claims["azp"], RW.0);
    assert_eq!(claims["idtyp"], "app");
    assert_eq!(
        claims["roles"],
        json!(["User.ReadWrite.All", "User.Invite.All"])
    );
}

/// §6.1: HTTP Basic client authentication (RFC 6749 §2.3.1), tenant given as a domain.
#[tokio::test]
async fn s6_1_http_basic_client_authentication() {
    let lab = lab().await;
    let url = format!("{}/contoso.example/oauth2/v2.0/token", lab.emu.base_url);
    let response = lab
        .http
        .post(url)
        .basic_auth(RW.0, Some("rw-secret%7Evalue.1"))
        .form(&[("grant_type", "client_credentials"), ("scope", SCOPE)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn assert_aad_error(
    response: reqwest::Response,
    status: StatusCode,
    error: &str,
    code: u64,
    text: &str,
) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]));
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: {text}")),
        "{description}"
    );
    assert!(description.contains("\r\nTrace ID: ") && description.contains("\r\nCorrelation ID: "));
    assert!(
        body["trace_id"].is_string()
            && body["correlation_id"].is_string()
            && body["timestamp"].is_string()
    );
}

/// §6.1 error table: wrong secret, missing credential, bad scope.
#[tokio::test]
async fn s6_1_token_errors_match_the_table() {
    let lab = lab().await;
    let wrong = lab
        .token_response(&[
            ("grant_type", "client_credentials"),
            ("client_id", RW.0),
            ("client_secret", "nope"),
            ("scope", SCOPE),
        ])
        .await;
    assert_aad_error(
        wrong,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        7000215,
        "Invalid client secret provided.",
    )
    .await;
    let missing = lab
        .token_response(&[
            ("grant_type", "client_credentials"),
            ("client_id", RW.0),
            ("scope", SCOPE),
        ])
        .await;
    assert_aad_error(
        missing,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    )
    .await;
    let scope = lab
        .token_response(&[
            ("grant_type", "client_credentials"),
            ("client_id", RW.0),
            ("client_secret", RW.1),
            ("scope", "https://foo.microsoft.com/.default"),
        ])
        .await;
    assert_aad_error(
        scope,
        StatusCode::BAD_REQUEST,
        "invalid_scope",
        70011,
        "The provided value for the input parameter 'scope' is not valid. The scope https://foo.microsoft.com/.default is not valid.",
    )
    .await;
}

/// A certificate and key for an app, generated at test time (nothing committed).
struct AppCert {
    pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn app_cert() -> AppCert {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "b2bsync test app");
    let cert = params.self_signed(&key).unwrap();
    AppCert {
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

fn assertion(
    cert: &AppCert,
    signer: &AppCert,
    alg: jsonwebtoken::Algorithm,
    aud: &str,
    nbf: i64,
    exp: i64,
) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    if alg == jsonwebtoken::Algorithm::PS256 {
        header.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&cert.der)));
    } else {
        header.x5t = Some(URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&cert.der)));
    }
    let claims = json!({"aud": aud, "iss": RW.0, "sub": RW.0, "jti": uuid::Uuid::new_v4().to_string(), "nbf": nbf, "exp": exp});
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(signer.key_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// §6.1 certificate credentials: RS256+x5t and PS256+x5t#S256 accepted; aud may name the
/// public login host or the emulator; expired (700024), foreign signature (700027) and wrong
/// audience refused.
#[tokio::test]
async fn s6_1_client_assertions() {
    let cert = app_cert();
    let other = app_cert();
    let mut tenant = fixture();
    tenant.apps[0].certificates.push(cert.pem.clone());
    let lab = lab_with(tenant, |_| {}).await;
    let now = jiff::Timestamp::now().as_second();
    let tid = lab.emu.tenant_id.clone();
    let public_aud = format!("https://login.microsoftonline.com/{tid}/oauth2/v2.0/token");
    let own_aud = lab.emu.token_url();
    let post = |assertion: String| {
        let lab = &lab;
        async move {
            lab.token_response(&[
                ("grant_type", "client_credentials"),
                ("client_id", RW.0),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
                ("scope", SCOPE),
            ])
            .await
        }
    };
    use jsonwebtoken::Algorithm::{PS256, RS256};
    let ok = post(assertion(&cert, &cert, RS256, &public_aud, now, now + 600)).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["appidacr"],
        "2"
    );
    assert_eq!(
        post(assertion(&cert, &cert, PS256, &own_aud, now, now + 600))
            .await
            .status(),
        StatusCode::OK
    );
    let expired = post(assertion(
        &cert,
        &cert,
        PS256,
        &own_aud,
        now - 1200,
        now - 600,
    ))
    .await;
    assert_aad_error(
        expired,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        700024,
        "Client assertion is not within its valid time range.",
    )
    .await;
    let forged = post(assertion(&cert, &other, RS256, &own_aud, now, now + 600)).await;
    assert_aad_error(
        forged,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        700027,
        "Client assertion contains an invalid signature.",
    )
    .await;
    let unknown = post(assertion(&other, &other, RS256, &own_aud, now, now + 600)).await;
    assert_aad_error(
        unknown,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        700027,
        "The certificate with identifier used to sign",
    )
    .await;
    let elsewhere = post(assertion(
        &cert,
        &cert,
        RS256,
        "https://login.example/x/oauth2/v2.0/token",
        now,
        now + 600,
    ))
    .await;
    assert_eq!(elsewhere.status(), StatusCode::UNAUTHORIZED);
}

/// §6.1, as MSAL Python sends it: a padded base64url `x5t` and fractional `nbf`/`exp`
/// (found by tests/python; Entra accepts both).
#[tokio::test]
async fn s6_1_client_assertion_as_msal_sends_it() {
    let cert = app_cert();
    let mut tenant = fixture();
    tenant.apps[0].certificates.push(cert.pem.clone());
    let lab = lab_with(tenant, |_| {}).await;
    let now = jiff::Timestamp::now().as_second() as f64 + 0.25;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.x5t =
        Some(base64::engine::general_purpose::URL_SAFE.encode(sha1::Sha1::digest(&cert.der)));
    assert!(header.x5t.as_ref().unwrap().ends_with('='));
    let claims = json!({"aud": lab.emu.token_url(), "iss": RW.0, "sub": RW.0, "jti": "j", "nbf": now, "exp": now + 600.0});
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(cert.key_pem.as_bytes()).unwrap();
    let assertion = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let response = lab
        .token_response(&[
            ("grant_type", "client_credentials"),
            ("client_id", RW.0),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
            ("scope", SCOPE),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// §6.1: the OpenID configuration MSAL reads names the emulator's token endpoint.
#[tokio::test]
async fn s6_1_openid_discovery_points_at_the_token_endpoint() {
    let lab = lab().await;
    let url = format!(
        "{}/{}/v2.0/.well-known/openid-configuration",
        lab.emu.base_url, lab.emu.tenant_id
    );
    let body: Value = lab
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["token_endpoint"], lab.emu.token_url().as_str());
    let jwks: Value = lab
        .http
        .get(body["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
}

/// §6.2: missing, malformed, forged and expired tokens give 401 InvalidAuthenticationToken.
#[tokio::test]
async fn s6_2_bad_tokens_are_401() {
    let lab = lab().await;
    let garbage = lab
        .http
        .get(lab.url("/users"))
        .bearer_auth("not-a-jwt")
        .send()
        .await
        .unwrap();
    assert_error(
        garbage,
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        "CompactToken parsing failed with error code: 80049217",
    )
    .await;
    let token = lab.token(RW).await;
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[2] = URL_SAFE_NO_PAD.encode([7_u8; 64]);
    let forged = lab
        .http
        .get(lab.url("/users"))
        .bearer_auth(parts.join("."))
        .send()
        .await
        .unwrap();
    assert_error(
        forged,
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        "Access token validation failure.",
    )
    .await;

    let expiring = lab_with(fixture(), |o| o.token_lifetime_secs = 0).await;
    let token = expiring.token(RW).await;
    let expired = expiring
        .http
        .get(expiring.url("/users"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_error(
        expired,
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        "Access token has expired or is not yet valid.",
    )
    .await;
}

/// §6.2/§6.3: a token without a needed permission gets 403 Authorization_RequestDenied.
#[tokio::test]
async fn s6_3_missing_permission_is_403() {
    let lab = lab().await;
    let response = lab.call(NONE, Method::GET, "/users", None, &[]).await;
    assert_error(
        response,
        StatusCode::FORBIDDEN,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
    .await;
    let read_patch = lab
        .call(
            READ,
            Method::PATCH,
            &format!("/users/{CARL}"),
            Some(json!({"jobTitle": "x"})),
            &[],
        )
        .await;
    assert_eq!(read_patch.status(), StatusCode::FORBIDDEN);
    let read_invite = lab
        .invite(READ, json!({"invitedUserEmailAddress": "x@partner.example", "inviteRedirectUrl": "https://myapps.microsoft.com"}))
        .await;
    assert_eq!(read_invite.status(), StatusCode::FORBIDDEN);
}

// ---------------------------------------------------------------- §2 users

/// §2.1: without $select exactly the default property set comes back.
#[tokio::test]
async fn s2_1_default_property_set() {
    let lab = lab().await;
    let body = lab.json(&format!("/users/{ANNA}")).await;
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "@odata.context",
            "businessPhones",
            "displayName",
            "givenName",
            "id",
            "jobTitle",
            "mail",
            "mobilePhone",
            "officeLocation",
            "preferredLanguage",
            "surname",
            "userPrincipalName"
        ]
    );
    assert_eq!(
        body["@odata.context"],
        format!("{}/v1.0/$metadata#users/$entity", lab.emu.base_url)
    );
    assert_eq!(body["businessPhones"], json!([]));
    assert_eq!(body["jobTitle"], Value::Null);
}

/// §2.1/§2.2: $select returns only the listed properties; empty ones are null or [].
#[tokio::test]
async fn s2_1_select_returns_selected_properties_with_nulls() {
    let lab = lab().await;
    let body = lab
        .json(&format!(
            "/users/{CARL}?$select=externalUserState,otherMails,onPremisesSyncEnabled,identities"
        ))
        .await;
    assert_eq!(
        body["@odata.context"],
        format!(
            "{}/v1.0/$metadata#users(externalUserState,otherMails,onPremisesSyncEnabled,identities)/$entity",
            lab.emu.base_url
        )
    );
    assert_eq!(body["externalUserState"], Value::Null);
    assert_eq!(body["onPremisesSyncEnabled"], Value::Null);
    assert_eq!(body["otherMails"], json!(["carl@partner.example"]));
    assert_eq!(
        body["identities"],
        json!([{"signInType": "userPrincipalName", "issuer": "contoso-emu.onmicrosoft.com", "issuerAssignedId": "carl.cloud@contoso.example"}]),
        "internal users carry their UPN identity on the tenant"
    );
    assert!(body.get("displayName").is_none());
    assert!(
        body.get("id").is_none(),
        "id is not added when not selected"
    );
    assert!(body.get("mail").is_none());
    // Private fixture fields are not Graph properties.
    assert_error(
        lab.get(&format!("/users/{RITA}?$select=roles")).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "Parsing OData Select and Expand failed: Could not find a property named 'roles' on type 'microsoft.graph.user'.",
    )
    .await;
}

/// §2.2: get by UPN (B2B UPN with %23), 404 body, users('...') form.
#[tokio::test]
async fn s2_2_get_by_upn_and_not_found() {
    let lab = lab().await;
    let by_upn = lab.json("/users/anna.berg@contoso.example").await;
    assert_eq!(by_upn["id"], ANNA);
    let guest = lab
        .json("/users/gina_fabrikam.example%23EXT%23@contoso-emu.onmicrosoft.com")
        .await;
    assert_eq!(guest["displayName"], "Gina Guest");
    let quoted = lab.json("/users('carl.cloud@contoso.example')").await;
    assert_eq!(quoted["id"], CARL);
    let missing = lab.get("/users/nobody@contoso.example").await;
    assert_error(
        missing,
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        "Resource 'nobody@contoso.example' does not exist or one of its queried reference-property objects are not present.",
    )
    .await;
}

/// §3.1: default page 100, absolute nextLink with $skiptoken keeping the original options,
/// every user exactly once across pages.
#[tokio::test]
async fn s3_1_paging_with_next_links() {
    let lab = lab_with(fixture_with(241), |_| {}).await;
    let first = lab.json("/users").await;
    assert_eq!(first["value"].as_array().unwrap().len(), 100);
    assert_eq!(
        first["@odata.context"],
        format!("{}/v1.0/$metadata#users", lab.emu.base_url)
    );
    let token = lab.token(RW).await;
    let mut url = lab.url("/users?$select=id,mail&$top=99");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let body: Value = lab
            .http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        for user in body["value"].as_array().unwrap() {
            assert_eq!(user.as_object().unwrap().len(), 2);
            seen.push(user["id"].as_str().unwrap().to_owned());
        }
        match body["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with(&lab.emu.base_url)
                        && next.contains("$select=id,mail")
                        && next.contains("$top=99")
                        && next.contains("$skiptoken=")
                );
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (250, 250));
}

/// §3.1: $top outside 1..999 gives the exact Request_UnsupportedQuery text.
#[tokio::test]
async fn s3_1_top_out_of_range() {
    let lab = lab().await;
    assert_error(
        lab.get("/users?$top=1000").await,
        StatusCode::BAD_REQUEST,
        "Request_UnsupportedQuery",
        "Invalid page size specified: '1000'. Must be between 1 and 999 inclusive.",
    )
    .await;
    assert_eq!(lab.get("/users?$top=999").await.status(), StatusCode::OK);
    // §3.1: $skip is not supported on users [A: text].
    assert_error(
        lab.get("/users?$skip=10").await,
        StatusCode::BAD_REQUEST,
        "Request_BadRequest",
        "'$skip' is not supported by the service.",
    )
    .await;
}

/// §2.1/§3.3: the default-supported $filter forms.
#[tokio::test]
async fn s3_2_default_filters() {
    let lab = lab().await;
    let cases: &[(&str, &[&str])] = &[
        (
            "onPremisesImmutableId eq 'AAECAwQFBgcICQoLDA0ODw=='",
            &[ANNA],
        ),
        ("userPrincipalName eq 'CARL.CLOUD@contoso.example'", &[CARL]),
        ("mail eq 'bruno@partner.example'", &[BRUNO]),
        (&format!("id in ('{ANNA}','{CARL}')"), &[ANNA, CARL]),
        ("startsWith(userPrincipalName,'anna')", &[ANNA]),
        ("otherMails/any(x:x eq 'carl@partner.example')", &[CARL]),
        (
            "identities/any(i:i/issuer eq 'ExternalAzureAD' and i/issuerAssignedId eq null)",
            &["a0000000-0000-4000-8000-000000000006"],
        ),
        (
            "userType eq 'Guest'",
            &["a0000000-0000-4000-8000-000000000006"],
        ),
        (
            "externalUserState eq 'Accepted'",
            &["a0000000-0000-4000-8000-000000000006"],
        ),
        (
            "accountEnabled eq false",
            &["a0000000-0000-4000-8000-000000000009"],
        ),
        (
            "onPremisesSyncEnabled eq true and employeeId eq 'E1001'",
            &[ANNA],
        ),
        (
            "employeeId eq 'E1001' or employeeId eq 'E1003'",
            &[ANNA, CARL],
        ),
        (
            "userPrincipalName eq 'carl@partner.example' or mail eq 'carl@partner.example' or otherMails/any(x:x eq 'carl@partner.example')",
            &[CARL],
        ),
    ];
    for (filter, expected) in cases {
        let body = lab
            .json(&format!("/users?$filter={}", urlencode(filter)))
            .await;
        assert_eq!(ids(&body), *expected, "{filter}");
    }
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// §3.2: advanced-only filters need ConsistencyLevel: eventual plus $count=true, otherwise
/// 400 "Unsupported Query."; with both they run and @odata.count appears.
#[tokio::test]
async fn s3_2_advanced_filters_need_eventual_and_count() {
    let lab = lab().await;
    let cases: &[(&str, usize)] = &[
        ("endsWith(mail,'@partner.example')", 3),
        ("userType ne 'Guest'", 8),
        ("not(userType eq 'Guest')", 8),
        ("onPremisesSamAccountName eq 'aberg'", 1),
        ("employeeId eq null", 7),
    ];
    for (filter, count) in cases {
        let path = format!("/users?$filter={}", urlencode(filter));
        assert_error(
            lab.get(&path).await,
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Unsupported Query.",
        )
        .await;
        let header_only = lab.get_aq(&path).await;
        assert_eq!(
            header_only.status(),
            StatusCode::BAD_REQUEST,
            "{filter}: header without $count=true"
        );
        let body: Value = lab
            .get_aq(&format!("{path}&$count=true"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["@odata.count"], *count, "{filter}: {body}");
        assert_eq!(body["value"].as_array().unwrap().len(), *count, "{filter}");
    }
    assert_error(
        lab.get_aq("/users?$count=true&$filter=id%20ge%20'a'").await,
        StatusCode::BAD_REQUEST,
        "Request_UnsupportedQuery",
        "The request uses a filter property that is not indexed",
    )
    .await;
    assert_error(
        lab.get("/users?$search=%22displayName:anna%22").await,
        StatusCode::BAD_REQUEST,
        "Request_UnsupportedQuery",
        "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
    )
    .await;
    let found: Value = lab
        .get_aq("/users?$search=%22displayName:anna%22")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&found), [ANNA]);
}

/// §3.2: /users/$count needs the header (text/plain); $count=true without it is ignored.
#[tokio::test]
async fn s3_2_count_rules() {
    let lab = lab().await;
    assert_error(
        lab.get("/users/$count").await,
        StatusCode::BAD_REQUEST,
        "Request_BadRequest",
        "$count is not currently supported.",
    )
    .await;
    let counted = lab.get_aq("/users/$count").await;
    assert_eq!(counted.status(), StatusCode::OK);
    assert!(
        counted.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(counted.text().await.unwrap(), "9");
    let filtered = lab
        .get_aq("/users/$count?$filter=userType%20eq%20'Guest'")
        .await;
    assert_eq!(filtered.text().await.unwrap(), "1");
    let ignored = lab.json("/users?$count=true").await;
    assert!(ignored.get("@odata.count").is_none());
    assert_eq!(ignored["value"].as_array().unwrap().len(), 9);
}

/// §2.3: PATCH returns 204 with an empty body and the change is visible; "@odata.type" is
/// accepted (the SDKs send it).
#[tokio::test]
async fn s2_3_patch_updates_a_cloud_user() {
    let lab = lab().await;
    let body = json!({"@odata.type": "#microsoft.graph.user", "otherMails": ["carl@new-partner.example"], "jobTitle": "Partner"});
    let response = lab
        .call(
            RW,
            Method::PATCH,
            &format!("/users/{CARL}"),
            Some(body),
            &[],
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.bytes().await.unwrap().is_empty());
    let user = lab
        .json(&format!("/users/{CARL}?$select=otherMails,jobTitle"))
        .await;
    assert_eq!(user["otherMails"], json!(["carl@new-partner.example"]));
    assert_eq!(user["jobTitle"], "Partner");
}

/// §2.3: on-premises mastered properties of synced users are refused with the exact text.
#[tokio::test]
async fn s2_3_synced_user_mastered_properties_refused() {
    let lab = lab().await;
    for body in [
        json!({"mail": "anna@elsewhere.example"}),
        json!({"otherMails": ["a@b.example"]}),
        json!({"employeeId": "X"}),
    ] {
        let response = lab
            .call(
                RW,
                Method::PATCH,
                &format!("/users/{ANNA}"),
                Some(body),
                &[],
            )
            .await;
        assert_error(
            response,
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "Unable to update the specified properties for on-premises mastered Directory Sync objects or objects currently undergoing migration.",
        )
        .await;
    }
}

/// §2.3: sensitive properties of role holders are refused for app-only tokens (403);
/// User-Mail.ReadWrite.All suffices for otherMails only.
#[tokio::test]
async fn s2_3_sensitive_properties_and_least_privilege() {
    let lab = lab().await;
    let rita = lab
        .call(
            RW,
            Method::PATCH,
            &format!("/users/{RITA}"),
            Some(json!({"otherMails": ["r@x.example"]})),
            &[],
        )
        .await;
    assert_error(
        rita,
        StatusCode::FORBIDDEN,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
    .await;
    let rita_title = lab
        .call(
            RW,
            Method::PATCH,
            &format!("/users/{RITA}"),
            Some(json!({"jobTitle": "Boss"})),
            &[],
        )
        .await;
    assert_eq!(rita_title.status(), StatusCode::NO_CONTENT);
    let mail_app = lab
        .call(
            MAIL,
            Method::PATCH,
            &format!("/users/{CARL}"),
            Some(json!({"otherMails": ["c@x.example"]})),
            &[],
        )
        .await;
    assert_eq!(mail_app.status(), StatusCode::NO_CONTENT);
    let mail_app_mail = lab
        .call(
            MAIL,
            Method::PATCH,
            &format!("/users/{CARL}"),
            Some(json!({"mail": "c@x.example"})),
            &[],
        )
        .await;
    assert_eq!(mail_app_mail.status(), StatusCode::FORBIDDEN);
}

/// §2.3: a mail update makes the address the primary SMTP proxy; read-only properties are refused.
#[tokio::test]
async fn s2_3_mail_update_recomputes_proxy_addresses() {
    let lab = lab().await;
    let response = lab
        .call(
            RW,
            Method::PATCH,
            &format!("/users/{CARL}"),
            Some(json!({"mail": "carl@partner.example"})),
            &[],
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let user = lab
        .json(&format!("/users/{CARL}?$select=mail,proxyAddresses"))
        .await;
    assert_eq!(user["mail"], "carl@partner.example");
    assert_eq!(
        user["proxyAddresses"],
        json!([
            "SMTP:carl@partner.example",
            "smtp:carl.cloud@contoso.example"
        ])
    );
    let read_only = lab
        .call(
            RW,
            Method::PATCH,
            &format!("/users/{CARL}"),
            Some(json!({"proxyAddresses": []})),
            &[],
        )
        .await;
    assert_eq!(read_only.status(), StatusCode::BAD_REQUEST);
    let mailbox = lab
        .call(
            RW,
            Method::PATCH,
            &format!("/users/{MAX}"),
            Some(json!({"mail": "max@partner.example"})),
            &[],
        )
        .await;
    assert_eq!(
        mailbox.status(),
        StatusCode::BAD_REQUEST,
        "mailbox users cannot take an external mail [A]"
    );
}

// ---------------------------------------------------------------- §1 invitations

fn conversion(email: &str, id: &str) -> Value {
    json!({
        "invitedUserEmailAddress": email,
        "inviteRedirectUrl": "https://myapps.microsoft.com?tenantId=",
        "sendInvitationMessage": false,
        "invitedUser": {"@odata.type": "#microsoft.graph.user", "id": id},
    })
}

/// §1.3: a new guest invitation answers 201 with the documented shape and creates a guest.
#[tokio::test]
async fn s1_3_new_guest_invitation() {
    let lab = lab().await;
    let response = lab
        .invite(INVITE, json!({"invitedUserEmailAddress": "admin@fabrikam.com", "inviteRedirectUrl": "https://myapp.contoso.com"}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["@odata.context"],
        format!("{}/v1.0/$metadata#invitations/$entity", lab.emu.base_url)
    );
    let tid = lab.emu.tenant_id.clone();
    let user_id = body["invitedUser"]["id"].as_str().unwrap().to_owned();
    let redeem = body["inviteRedeemUrl"].as_str().unwrap();
    let prefix = format!(
        "https://login.microsoftonline.com/redeem?rd=https%3a%2f%2finvitations.microsoft.com%2fredeem%2f%3ftenant%3d{tid}%26user%3d{user_id}%26ticket%3d"
    );
    assert!(redeem.starts_with(&prefix), "{redeem}");
    assert!(redeem.ends_with("%26ver%3d2.0"), "{redeem}");
    assert_eq!(body["invitedUserDisplayName"], Value::Null);
    assert_eq!(body["invitedUserType"], "Guest");
    assert_eq!(body["invitedUserEmailAddress"], "admin@fabrikam.com");
    assert_eq!(body["sendInvitationMessage"], false);
    assert_eq!(body["resetRedemption"], false);
    assert_eq!(body["inviteRedirectUrl"], "https://myapp.contoso.com");
    assert_eq!(body["status"], "PendingAcceptance");
    assert_eq!(
        body["invitedUserMessageInfo"],
        json!({"messageLanguage": null, "customizedMessageBody": null, "ccRecipients": [{"emailAddress": {"name": null, "address": null}}]})
    );
    assert_eq!(
        body["invitedUser"]["userPrincipalName"],
        "admin_fabrikam.com#EXT#@contoso-emu.onmicrosoft.com"
    );
    assert_ne!(body["id"], body["invitedUser"]["id"]);
    let user = lab.json(&format!("/users/{user_id}?$select=userType,creationType,externalUserState,externalUserStateChangeDateTime,mail")).await;
    assert_eq!(user["userType"], "Guest");
    assert_eq!(user["creationType"], "Invitation");
    assert_eq!(user["externalUserState"], "PendingAcceptance");
    assert!(
        user["externalUserStateChangeDateTime"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
}

/// §1.4: converting an internal synced user keeps id, UPN and userType and sets
/// externalUserState PendingAcceptance; §1.6: accepting flips it to Accepted.
#[tokio::test]
async fn s1_4_conversion_and_s1_6_acceptance() {
    let lab = lab().await;
    let response = lab
        .invite(RW, conversion("anna.berg@partner.example", ANNA))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["invitedUser"],
        json!({"id": ANNA, "userPrincipalName": "anna.berg@contoso.example"})
    );
    assert_eq!(body["status"], "PendingAcceptance");
    let select = "/users/a0000000-0000-4000-8000-000000000001?$select=userType,externalUserState,identities,userPrincipalName";
    let user = lab.json(select).await;
    assert_eq!(user["userType"], "Member");
    assert_eq!(user["externalUserState"], "PendingAcceptance");
    let pending = lab
        .json("/users?$filter=externalUserState%20eq%20'PendingAcceptance'")
        .await;
    assert_eq!(ids(&pending), [ANNA]);
    let accepted = lab
        .control(Method::POST, &format!("/users/{ANNA}/accept"), None)
        .await;
    assert_eq!(accepted.status(), StatusCode::OK);
    let user = lab.json(select).await;
    assert_eq!(user["externalUserState"], "Accepted");
    assert_eq!(
        user["identities"],
        json!([{"signInType": "federated", "issuer": "ExternalAzureAD", "issuerAssignedId": "anna.berg@partner.example"}])
    );
    assert_eq!(user["userPrincipalName"], "anna.berg@contoso.example");
    let again = lab
        .control(Method::POST, &format!("/users/{ANNA}/accept"), None)
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
}

/// §1.4 blockers P1–P6, P8 and the §1.2 email rules, with the emulator's [A] codes.
#[tokio::test]
async fn s1_4_conversion_blockers() {
    let lab = lab().await;
    let bad = StatusCode::BAD_REQUEST;
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            conversion("bruno@partner.example", BRUNO),
            bad,
            "P1 onPremisesUserPrincipalName",
        ),
        (
            conversion("someone.else@partner.example", ANNA),
            bad,
            "P2 synced: must equal mail",
        ),
        (
            conversion("nobody@partner.example", CARL),
            bad,
            "P2 cloud-only: must be in otherMails/mail",
        ),
        (
            conversion("vera@contoso.example", VERA),
            bad,
            "P3 verified domain",
        ),
        (conversion("max@partner.example", MAX), bad, "P4 mailbox"),
        (
            conversion("rita@partner.example", RITA),
            StatusCode::FORBIDDEN,
            "P5 role holder",
        ),
        (
            conversion("shared@partner.example", PAUL),
            bad,
            "P8 proxyAddresses collision",
        ),
        (
            conversion("a+b@partner.example", CARL),
            bad,
            "§1.2 forbidden character",
        ),
        (
            conversion(".ab@partner.example", CARL),
            bad,
            "§1.2 leading dot",
        ),
        (
            conversion(
                "carl@partner.example",
                "a0000000-0000-4000-8000-0000000000ff",
            ),
            StatusCode::NOT_FOUND,
            "unknown user",
        ),
    ];
    for (body, status, case) in cases {
        let response = lab.invite(RW, body).await;
        assert_eq!(response.status(), status, "{case}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"]["code"].is_string()
                && error["error"]["innerError"]["request-id"].is_string(),
            "{case}"
        );
    }
    let p3: Value = lab
        .invite(RW, conversion("vera@contoso.example", VERA))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        p3["error"]["message"],
        "User's email address cannot be in a verified domain. Please change the user's email to enable conversion to a B2B user."
    );
    // P6: the same address without invitedUser.id is a new-guest invitation that collides.
    let p6 = lab.invite(RW, json!({"invitedUserEmailAddress": "carl@partner.example", "inviteRedirectUrl": "https://myapps.microsoft.com"})).await;
    assert_error(
        p6,
        bad,
        "BadRequest",
        &format!("The invited user already exists in the directory as objectID: {CARL}. They can use that account to sign in to shared apps and resources."),
    )
    .await;
    // A new guest cannot come from a verified domain [A].
    let internal = lab.invite(RW, json!({"invitedUserEmailAddress": "newbie@contoso.example", "inviteRedirectUrl": "https://myapps.microsoft.com"})).await;
    assert_eq!(internal.status(), bad);
    // Cloud-only conversion through otherMails succeeds.
    assert_eq!(
        lab.invite(RW, conversion("carl@partner.example", CARL))
            .await
            .status(),
        StatusCode::CREATED
    );
}

/// §1.5: resetRedemption needs User.ReadWrite.All and answers 201 with resetRedemption true.
#[tokio::test]
async fn s1_5_reset_redemption() {
    let lab = lab().await;
    let mut body = conversion("carl@partner.example", CARL);
    body["resetRedemption"] = json!(true);
    let invite_only = lab.invite(INVITE, body.clone()).await;
    assert_eq!(invite_only.status(), StatusCode::FORBIDDEN);
    let response = lab.invite(RW, body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["resetRedemption"], true);
    assert_eq!(answer["invitedUser"]["id"], CARL);
    let missing_id = lab
        .invite(RW, json!({"invitedUserEmailAddress": "carl@partner.example", "inviteRedirectUrl": "https://x.example", "resetRedemption": true}))
        .await;
    assert_eq!(missing_id.status(), StatusCode::BAD_REQUEST);
}

// ---------------------------------------------------------------- §3.4 delta

async fn delta_round(lab: &Lab, token: &str, mut url: String) -> (Vec<Value>, String) {
    let mut items = Vec::new();
    loop {
        let response = lab
            .http
            .get(&url)
            .bearer_auth(token)
            .header("Prefer", "odata.maxpagesize=4")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        items.extend(body["value"].as_array().unwrap().iter().cloned());
        if let Some(next) = body["@odata.nextLink"].as_str() {
            assert!(next.contains("$skiptoken=") && !next.contains("$select"));
            url = next.to_owned();
        } else {
            return (items, body["@odata.deltaLink"].as_str().unwrap().to_owned());
        }
    }
}

/// §3.4: pages until a deltaLink, $select kept in the tokens, later rounds only return
/// changed users (PATCH, invitation, acceptance), never-set properties omitted.
#[tokio::test]
async fn s3_4_delta_rounds() {
    let lab = lab().await;
    let token = lab.token(RW).await;
    let (first, delta_link) = delta_round(
        &lab,
        &token,
        lab.url("/users/delta?$select=displayName,externalUserState"),
    )
    .await;
    assert_eq!(first.len(), 9);
    assert!(first.iter().all(|u| u.get("mail").is_none()));
    assert!(
        first[0].get("externalUserState").is_none(),
        "never-set properties are omitted"
    );
    let (none, delta_link) = delta_round(&lab, &token, delta_link).await;
    assert!(none.is_empty());
    lab.call(
        RW,
        Method::PATCH,
        &format!("/users/{CARL}"),
        Some(json!({"displayName": "Carl C."})),
        &[],
    )
    .await;
    lab.invite(RW, conversion("anna.berg@partner.example", ANNA))
        .await;
    let (changed, delta_link) = delta_round(&lab, &token, delta_link).await;
    let mut changed_ids: Vec<&str> = changed.iter().map(|u| u["id"].as_str().unwrap()).collect();
    changed_ids.sort();
    assert_eq!(changed_ids, [ANNA, CARL]);
    let anna = changed.iter().find(|u| u["id"] == ANNA).unwrap();
    assert_eq!(anna["externalUserState"], "PendingAcceptance");
    lab.control(Method::POST, &format!("/users/{ANNA}/accept"), None)
        .await;
    let (accepted, delta_link) = delta_round(&lab, &token, delta_link).await;
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["externalUserState"], "Accepted");
    // A deleted user comes back as `@removed`, with its id only, and is gone from lists.
    assert_eq!(
        lab.control(Method::DELETE, &format!("/users/{CARL}"), None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let (removed, _) = delta_round(&lab, &token, delta_link).await;
    assert_eq!(
        removed,
        vec![json!({"id": CARL, "@removed": {"reason": "deleted"}})]
    );
    assert_eq!(
        lab.get(&format!("/users/{CARL}")).await.status(),
        StatusCode::NOT_FOUND
    );
}

/// §3.4: $deltatoken=latest gives only a deltaLink; bad tokens 400, invalidated tokens 410
/// with a Location for a full resync.
#[tokio::test]
async fn s3_4_latest_and_invalid_tokens() {
    let lab = lab().await;
    let latest = lab.json("/users/delta?$deltatoken=latest").await;
    assert_eq!(latest["value"], json!([]));
    let link = latest["@odata.deltaLink"].as_str().unwrap().to_owned();
    let token = lab.token(RW).await;
    let (items, _) = delta_round(&lab, &token, link.clone()).await;
    assert!(items.is_empty());
    let garbage = lab.get("/users/delta?$deltatoken=garbage").await;
    assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        lab.control(Method::POST, "/delta/reset", None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let gone = lab
        .http
        .get(&link)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::GONE);
    assert!(
        gone.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("/v1.0/users/delta?$deltatoken=")
    );
    let body: Value = gone.json().await.unwrap();
    assert_eq!(body["error"]["code"], "resyncRequired");
}

/// §3.1/§3.4: properties stored outside the directory cannot be selected on a collection or
/// in delta: 501 NotImplemented.
#[tokio::test]
async fn s3_1_s3_4_select_of_non_collection_properties_is_501() {
    let lab = lab().await;
    for path in [
        "/users?$select=aboutMe",
        "/users?$select=id,skills",
        "/users/delta?$select=skills",
    ] {
        assert_error(
            lab.get(path).await,
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "This operation target is not yet supported.",
        )
        .await;
    }
}

// ---------------------------------------------------------------- §4 $batch

/// §4: inner statuses, headers and bodies; 200 overall; in a sequential batch, dependsOn →
/// 424 on failure.
#[tokio::test]
async fn s4_batch_inner_responses_and_dependencies() {
    let lab = lab().await;
    let body = json!({"requests": [
        {"id": "1", "method": "GET", "url": format!("/users/{CARL}?$select=id,mail")},
        {"id": "2", "method": "GET", "url": "/users/nobody@contoso.example"},
        {"id": "3", "method": "PATCH", "url": format!("/users/{CARL}"), "headers": {"Content-Type": "application/json"}, "body": {"jobTitle": "Batched"}},
        {"id": "5", "method": "GET", "url": "users/$count", "headers": {"ConsistencyLevel": "eventual"}},
    ]});
    let response = lab.call(RW, Method::POST, "/$batch", Some(body), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    let by_id = |id: &str| {
        answer["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("1")["status"], 200);
    assert_eq!(by_id("1")["body"]["mail"], "carl.cloud@contoso.example");
    assert!(
        by_id("1")["headers"]["Content-Type"]
            .as_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(by_id("2")["status"], 404);
    assert_eq!(
        by_id("2")["body"]["error"]["code"],
        "Request_ResourceNotFound"
    );
    assert_eq!(by_id("3")["status"], 204);
    assert!(by_id("3").get("body").is_none());
    assert_eq!(by_id("5")["status"], 200);
    assert_eq!(by_id("5")["body"], "9");
    assert_eq!(
        lab.json(&format!("/users/{CARL}?$select=jobTitle")).await["jobTitle"],
        "Batched"
    );
    // A sequential batch: the request whose dependency failed gets 424 and does not run.
    let sequential = [
        json!({"id": "1", "method": "GET", "url": "/users/nobody@contoso.example"}),
        json!({"id": "2", "method": "PATCH", "url": format!("/users/{CARL}"), "headers": {"Content-Type": "application/json"}, "body": {"jobTitle": "Never"}, "dependsOn": ["1"]}),
    ];
    let answer: Value = post_batch(&lab, &sequential).await.json().await.unwrap();
    assert_eq!(answer["responses"][0]["status"], 404);
    assert_eq!(answer["responses"][1]["status"], 424);
    let title = lab.json(&format!("/users/{CARL}?$select=jobTitle")).await;
    assert_eq!(title["jobTitle"], "Batched");
}

/// §4 (known issue): only fully parallel, fully sequential and all-depend-on-one batches are
/// accepted. Mixed shapes, two dependencies, forward references and cycles reject the whole
/// batch with 400 and run nothing.
#[tokio::test]
async fn s4_batch_dependency_shapes() {
    let lab = lab().await;
    let get = |id: &str, deps: &[&str]| json!({"id": id, "method": "GET", "url": format!("/users/{CARL}?$select=id"), "dependsOn": deps});
    let accepted = [
        vec![get("1", &[]), get("2", &[]), get("3", &[])],
        vec![get("1", &[]), get("2", &["1"]), get("3", &["2"])],
        vec![get("1", &[]), get("2", &["1"]), get("3", &["1"])],
    ];
    for requests in accepted {
        let response = post_batch(&lab, &requests).await;
        assert_eq!(response.status(), StatusCode::OK, "{requests:?}");
    }
    let refused = [
        // Mixed: one chain next to an independent request.
        vec![get("1", &[]), get("2", &["1"]), get("3", &[])],
        // Two dependencies.
        vec![get("1", &[]), get("2", &[]), get("3", &["1", "2"])],
        // A forward reference.
        vec![get("1", &["2"]), get("2", &[])],
        // A cycle.
        vec![get("1", &["2"]), get("2", &["1"])],
    ];
    for requests in refused {
        let response = post_batch(&lab, &requests).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{requests:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "BadRequest");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Batch should be either fully sequential or fully parallel"),
            "{body}"
        );
    }
}

/// §4: a write request without a Content-Type header (or without a body) rejects the batch
/// with Graph's observed wording.
#[tokio::test]
async fn s4_batch_write_without_content_type() {
    let lab = lab().await;
    for request in [
        json!({"id": "7", "method": "PATCH", "url": format!("/users/{CARL}"), "body": {"jobTitle": "x"}}),
        json!({"id": "7", "method": "POST", "url": "/invitations", "headers": {"Content-Type": "application/json"}}),
    ] {
        let refused = post_batch(&lab, &[request]).await;
        let body = assert_error(
            refused,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Write request id : 7 does not contain Content-Type header or body.",
        )
        .await;
        assert!(body["error"]["innerError"]["date"].is_string());
    }
}

/// §4: more than 20 requests, or duplicate ids, reject the whole batch with 400.
#[tokio::test]
async fn s4_batch_limits() {
    let lab = lab().await;
    let many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users?$top=1"}))
        .collect();
    let response = lab
        .call(
            RW,
            Method::POST,
            "/$batch",
            Some(json!({"requests": many})),
            &[],
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let twenty: Vec<Value> = (0..20)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users?$top=1"}))
        .collect();
    assert_eq!(
        lab.call(
            RW,
            Method::POST,
            "/$batch",
            Some(json!({"requests": twenty})),
            &[]
        )
        .await
        .status(),
        StatusCode::OK
    );
    let duplicate = json!({"requests": [{"id": "1", "method": "GET", "url": "/users"}, {"id": "1", "method": "GET", "url": "/users"}]});
    assert_eq!(
        lab.call(RW, Method::POST, "/$batch", Some(duplicate), &[])
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
}

// ---------------------------------------------------------------- §5 throttling

/// §5.2/§5.3: x-ms-resource-unit carries the RU cost table with its modifiers.
#[tokio::test]
async fn s5_2_resource_unit_costs() {
    let lab = lab().await;
    let cases = [
        ("/users", "2"),
        ("/users?$select=id", "1"),
        ("/users?$top=5", "1"),
        ("/users?$top=50", "2"),
        (&format!("/users/{ANNA}") as &str, "1"),
        ("/users/delta", "1"),
    ];
    for (path, cost) in cases {
        let response = lab.get(path).await;
        assert_eq!(response.headers()["x-ms-resource-unit"], cost, "{path}");
        assert!(
            response
                .headers()
                .get("x-ms-throttle-limit-percentage")
                .is_none()
        );
    }
    let patch = lab
        .call(
            RW,
            Method::PATCH,
            &format!("/users/{CARL}"),
            Some(json!({"jobTitle": "x"})),
            &[],
        )
        .await;
    assert_eq!(patch.headers()["x-ms-resource-unit"], "1");
}

/// POSTs guest invitation `i` directly (not batched).
async fn post_invitation(lab: &Lab, token: &str, i: usize) -> reqwest::Response {
    lab.http
        .post(lab.url("/invitations"))
        .bearer_auth(token)
        .json(&guest_invitation(i)["body"])
        .send()
        .await
        .unwrap()
}

/// POSTs a `$batch` of `requests` with the read-write app.
async fn post_batch(lab: &Lab, requests: &[Value]) -> reqwest::Response {
    lab.call(
        RW,
        Method::POST,
        "/$batch",
        Some(json!({ "requests": requests })),
        &[],
    )
    .await
}

/// A header value (or inner header string) as a number.
fn number(text: &str) -> f64 {
    text.parse().unwrap()
}

fn guest_invitation(i: usize) -> Value {
    json!({"id": i.to_string(), "method": "POST", "url": "/invitations", "headers": {"Content-Type": "application/json"},
           "body": {"invitedUserEmailAddress": format!("guest{i}@fabrikam.example"), "inviteRedirectUrl": "https://myapps.microsoft.com"}})
}

/// §5.1/§5.2/§4: the invitation manager allows 150 per 5 s per tenant. Throttled inner
/// requests get 429 with an integer Retry-After in their inner headers and the §5.1 body, and
/// the batch itself is 200. Then the time scale drops to 0.01 through the control API (window
/// 50 ms), so recovery takes milliseconds. At real time the bucket refills only 30 per second,
/// so a burst of 300 must be throttled however slowly this machine runs it (unless it takes
/// over 5 s).
#[tokio::test]
async fn s5_invitation_limit_throttles_inside_batches() {
    let lab = lab().await;
    let token = lab.token(RW).await;
    let batches = (0..15).map(|b| {
        let requests: Vec<Value> = (0..20).map(|i| guest_invitation(b * 20 + i)).collect();
        lab.http
            .post(lab.url("/$batch"))
            .bearer_auth(&token)
            .json(&json!({"requests": requests}))
            .send()
    });
    let started = std::time::Instant::now();
    let responses = futures_util::future::join_all(batches).await;
    let elapsed = started.elapsed();
    let mut throttled = Vec::new();
    let mut created = 0;
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        for inner in body["responses"].as_array().unwrap() {
            match inner["status"].as_u64().unwrap() {
                201 => created += 1,
                429 => throttled.push(inner.clone()),
                other => panic!("unexpected inner status {other}: {inner}"),
            }
        }
    }
    assert!(created >= 150, "created {created}");
    let allowed = 150 + (elapsed.as_secs_f64() * 30.0).ceil() as usize;
    assert!(
        created <= allowed,
        "created {created} in {elapsed:?}, at most {allowed} allowed"
    );
    assert_eq!(created + throttled.len(), 300);
    assert!(!throttled.is_empty());
    let inner = &throttled[0];
    let retry_after = inner["headers"]["Retry-After"].as_str().unwrap();
    assert!(retry_after.parse::<u64>().unwrap() >= 1, "{retry_after}");
    assert_eq!(inner["body"]["error"]["code"], "TooManyRequests");
    assert_eq!(
        inner["body"]["error"]["message"],
        "Please retry again later."
    );
    assert_eq!(inner["body"]["error"]["innerError"]["code"], "429");
    assert_eq!(inner["body"]["error"]["innerError"]["status"], "429");
    assert_eq!(
        inner["body"]["error"]["innerError"]["message"],
        "Please retry after"
    );
    assert!(
        inner["headers"]["x-ms-throttle-scope"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{}/{}", RW.0, lab.emu.tenant_id))
    );
    assert_eq!(
        inner["headers"]["x-ms-throttle-information"],
        "WriteLimitExceeded"
    );

    let scaled = lab
        .control(
            Method::POST,
            "/time-scale",
            Some(json!({"timeScale": 0.01})),
        )
        .await;
    assert_eq!(scaled.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let after = post_invitation(&lab, &token, 999).await;
    assert_eq!(
        after.status(),
        StatusCode::CREATED,
        "a 50 ms window has refilled the bucket"
    );
}

/// Sends `count` guest invitations (numbered from `first`) in batches of 20 at once and
/// returns the inner statuses and the inner answers refused with 429.
async fn invitation_burst(
    lab: &Lab,
    token: &str,
    first: usize,
    count: usize,
) -> (usize, Vec<Value>) {
    let batches = (0..count.div_ceil(20)).map(|b| {
        let requests: Vec<Value> = (b * 20..((b + 1) * 20).min(count))
            .map(|i| guest_invitation(first + i))
            .collect();
        lab.http
            .post(lab.url("/$batch"))
            .bearer_auth(token)
            .json(&json!({"requests": requests}))
            .send()
    });
    let mut created = 0;
    let mut throttled = Vec::new();
    for response in futures_util::future::join_all(batches).await {
        let body: Value = response.unwrap().json().await.unwrap();
        for inner in body["responses"].as_array().unwrap() {
            match inner["status"].as_u64().unwrap() {
                201 => created += 1,
                429 => throttled.push(inner.clone()),
                other => panic!("unexpected inner status {other}: {inner}"),
            }
        }
    }
    (created, throttled)
}

/// §5.1 with a time scale: Retry-After is what Graph would send at scale 1 (whole seconds, at
/// least 1) multiplied by the scale, not the scaled time to the next free slot. At scale 2
/// the 5 s invitation window lasts 10 s: after a burst of 151 the first admission leaves the
/// window in just under 10 s, i.e. "5" at real time, sent as "10.000". After switching to a
/// tiny scale, the window has passed within milliseconds.
#[tokio::test]
async fn s5_1_retry_after_under_a_time_scale_is_the_real_value_scaled() {
    let lab = lab_with(fixture(), |o| o.time_scale = 2.0).await;
    let token = lab.token(RW).await;
    let (created, throttled) = invitation_burst(&lab, &token, 0, 151).await;
    assert_eq!(created, 150);
    assert_eq!(throttled.len(), 1);
    assert_eq!(throttled[0]["headers"]["Retry-After"], "10.000");
    lab.control(
        Method::POST,
        "/time-scale",
        Some(json!({"timeScale": 0.001})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after = post_invitation(&lab, &token, 501).await;
    assert_eq!(after.status(), StatusCode::CREATED);
    // At a small scale the minimum of 1 s is scaled too: 0.001 s, never 0.
    let (_, throttled) = invitation_burst(&lab, &token, 600, 400).await;
    for inner in &throttled {
        let seconds = number(inner["headers"]["Retry-After"].as_str().unwrap());
        assert!((0.001..=0.005).contains(&seconds), "{inner}");
    }
}

/// §5.2: the limit holds per window, not as a bucket that starts full and refills: 151
/// invitations sent at once get exactly one 429 (a refilling bucket admitted all 151 when the
/// burst took over 33 ms), and nothing more is admitted until the window has passed.
#[tokio::test]
async fn s5_2_invitation_limit_holds_in_every_window() {
    let lab = lab().await;
    let token = lab.token(RW).await;
    let started = std::time::Instant::now();
    let (created, throttled) = invitation_burst(&lab, &token, 0, 151).await;
    assert_eq!((created, throttled.len()), (150, 1));
    let (created, _) = invitation_burst(&lab, &token, 200, 40).await;
    if started.elapsed() < Duration::from_millis(4900) {
        assert_eq!(created, 0, "the 5 s window is full");
    }
}

/// §5.2: the refilling token bucket stays available as an option; it admits more than the
/// limit in the first window.
#[tokio::test]
async fn s5_2_the_bucket_model_is_an_option() {
    let lab = lab_with(fixture(), |o| {
        o.throttle_model = emulator::ThrottleModel::Bucket;
        o.time_scale = 0.2;
    })
    .await;
    let token = lab.token(RW).await;
    let (first, _) = invitation_burst(&lab, &token, 0, 150).await;
    assert_eq!(first, 150);
    // The scaled window is 1 s; 0.5 s refills 75 tokens, where a window would admit none.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (second, _) = invitation_burst(&lab, &token, 200, 40).await;
    assert!(second > 0);
}

/// §5.3: a refused request charges nothing, so its 429 carries no `x-ms-resource-unit`;
/// `x-ms-throttle-limit-percentage` reads 1.0 plus the share of refused requests (1.2 = 20 %
/// throttled).
#[tokio::test]
async fn s5_3_refused_requests_charge_no_resource_unit() {
    // Windows 1,000 times longer: nothing leaves them during the test.
    let lab = lab_with(fixture(), |o| o.time_scale = 1000.0).await;
    let token = lab.token(RW).await;
    // $expand costs 3 RU: 1,167 of them exhaust the 3,500 RU of a small tenant.
    let mut refused = None;
    for round in 0..30 {
        let calls = (0..50).map(|_| {
            lab.http
                .get(lab.url("/users?$expand=manager"))
                .bearer_auth(&token)
                .send()
        });
        for response in futures_util::future::join_all(calls).await {
            let response = response.unwrap();
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                refused.get_or_insert(response);
            } else {
                assert!(response.headers().contains_key("x-ms-resource-unit"));
            }
        }
        if refused.is_some() {
            assert!(round >= 23, "3,500 RU last 23 rounds of 150");
            break;
        }
    }
    let refused = refused.expect("3,500 RU exhausted");
    assert!(!refused.headers().contains_key("x-ms-resource-unit"));
    assert_eq!(
        refused.headers()["x-ms-throttle-information"],
        "ResourceUnitLimitExceeded"
    );

    // Invitations: 150 admitted, then 150 refused: half throttled reads 1.5.
    let (created, throttled) = invitation_burst(&lab, &token, 0, 300).await;
    assert_eq!((created, throttled.len()), (150, 150));
    let response = post_invitation(&lab, &token, 400).await;
    let last = number(
        response.headers()["x-ms-throttle-limit-percentage"]
            .to_str()
            .unwrap(),
    );
    assert!((1.4..=1.6).contains(&last), "{last}");
}

/// §5.1: a direct (unbatched) 429 at real time has an integer Retry-After ≥ 1 and the
/// usage header above 0.8 appears before it.
#[tokio::test]
async fn s5_1_direct_429_at_real_time() {
    let lab = lab().await;
    let token = lab.token(INVITE).await;
    let mut saw_percentage = false;
    let mut throttled = None;
    for i in 0..400 {
        let body = guest_invitation(i)["body"].clone();
        let response = lab
            .http
            .post(lab.url("/invitations"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        if response
            .headers()
            .contains_key("x-ms-throttle-limit-percentage")
            && response.status() == StatusCode::CREATED
        {
            saw_percentage = true;
        }
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(response);
            break;
        }
    }
    let response = throttled.expect("400 invitations within the window must be throttled");
    assert!(saw_percentage);
    let retry_after = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(retry_after.parse::<u64>().unwrap() >= 1, "{retry_after}");
    assert_error(
        response,
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        "Please retry again later.",
    )
    .await;
}

// ---------------------------------------------------------------- control API

/// Control API: the request log records method, path, status, ids, app and the invited user.
#[tokio::test]
async fn control_request_log_records_invitations() {
    let lab = lab().await;
    let token = lab.token(RW).await;
    lab.http
        .post(lab.url("/invitations"))
        .bearer_auth(&token)
        .header("client-request-id", "corr-42")
        .json(&conversion("carl@partner.example", CARL))
        .send()
        .await
        .unwrap();
    let log: Value = lab
        .control(Method::GET, "/requests", None)
        .await
        .json()
        .await
        .unwrap();
    let entry = log["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "/v1.0/invitations")
        .unwrap();
    assert_eq!(entry["method"], "POST");
    assert_eq!(entry["status"], 201);
    assert_eq!(entry["clientRequestId"], "corr-42");
    assert_eq!(entry["appId"], RW.0);
    assert_eq!(entry["invitedUserId"], CARL);
    assert_eq!(entry["invitedUserEmailAddress"], "carl@partner.example");
    assert_eq!(
        lab.control(Method::DELETE, "/requests", None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let log: Value = lab
        .control(Method::GET, "/requests", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(log["value"], json!([]));
    let dump: Value = lab
        .control(Method::GET, "/tenant", None)
        .await
        .json()
        .await
        .unwrap();
    let rita = dump["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == RITA)
        .unwrap();
    assert_eq!(rita["roles"], json!(["User Administrator"]));
    assert_eq!(dump["invitations"].as_array().unwrap().len(), 1);
}

/// Control API: injected 503, 429 and dropped connections, scoped by path prefix, then cleared.
#[tokio::test]
async fn control_faults() {
    let lab = lab().await;
    let token = lab.token(RW).await;
    let set = lab
        .control(
            Method::POST,
            "/faults",
            Some(json!({"rate": 1.0, "kinds": ["503"], "pathPrefix": "/v1.0/users"})),
        )
        .await;
    assert_eq!(set.status(), StatusCode::OK);
    let response = lab
        .http
        .get(lab.url("/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "serviceNotAvailable");
    let other_path = lab
        .http
        .post(lab.url("/invitations"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other_path.status(),
        StatusCode::BAD_REQUEST,
        "outside the prefix no fault"
    );
    lab.control(
        Method::POST,
        "/faults",
        Some(json!({"rate": 1.0, "kinds": ["429"]})),
    )
    .await;
    let throttled = lab
        .http
        .get(lab.url("/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.headers()["retry-after"], "1");
    lab.control(
        Method::POST,
        "/faults",
        Some(json!({"rate": 1.0, "kinds": ["drop"]})),
    )
    .await;
    let dropped = lab
        .http
        .get(lab.url("/users"))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(
        dropped.is_err(),
        "the connection is closed without a response"
    );
    assert_eq!(
        lab.control(Method::DELETE, "/faults", None).await.status(),
        StatusCode::NO_CONTENT
    );
    let fine = lab
        .http
        .get(lab.url("/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), StatusCode::OK);
    let bad = lab
        .control(
            Method::POST,
            "/faults",
            Some(json!({"rate": 2.0, "kinds": ["429"]})),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

/// Control API: latency injection delays matching requests.
#[tokio::test]
async fn control_latency() {
    let lab = lab().await;
    let token = lab.token(RW).await;
    lab.control(
        Method::POST,
        "/faults",
        Some(json!({"latencyMs": [150, 200]})),
    )
    .await;
    let start = std::time::Instant::now();
    let response = lab
        .http
        .get(lab.url("/users?$top=1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(150));
}

/// Fixture: syntax errors name the file, line and column; rule errors name the object.
#[test]
fn fixture_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenant-typo.json");
    std::fs::write(&path, "{\n  \"tenantId\": \"t\",\n  \"initialDomain\": \"x.onmicrosoft.com\",\n  \"userz\": []\n}\n").unwrap();
    let message = Tenant::from_json_file(&path).unwrap_err().to_string();
    assert!(
        message.contains("tenant-typo.json") && message.contains("line 4"),
        "{message}"
    );
    assert!(message.contains("userz"), "{message}");
    let duplicate = r#"{"tenantId":"t","initialDomain":"x.onmicrosoft.com","users":[{"id":"1","userPrincipalName":"a@x"},{"id":"1","userPrincipalName":"b@x"}]}"#;
    std::fs::write(&path, duplicate).unwrap();
    let message = Tenant::from_json_file(&path).unwrap_err().to_string();
    assert!(
        message.contains("users[1]") && message.contains("duplicate id"),
        "{message}"
    );
}

/// §3.2: `$orderby` alone is default; with `$filter` it needs advanced query parameters.
#[tokio::test]
async fn s3_2_orderby() {
    let lab = lab().await;
    let body = lab
        .json("/users?$orderby=displayName%20desc&$select=displayName")
        .await;
    let names: Vec<&str> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["displayName"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| std::cmp::Reverse(n.to_lowercase()));
    assert_eq!(names, sorted);
    let with_filter = "/users?$orderby=displayName&$filter=userType%20eq%20'Member'";
    assert_error(
        lab.get(with_filter).await,
        StatusCode::BAD_REQUEST,
        "Request_UnsupportedQuery",
        "Unsupported Query.",
    )
    .await;
    assert_eq!(
        lab.get_aq(&format!("{with_filter}&$count=true"))
            .await
            .status(),
        StatusCode::OK
    );
}

/// §7: unknown segments and methods get Graph-shaped errors.
#[tokio::test]
async fn s7_unknown_segment_and_method() {
    let lab = lab().await;
    assert_error(
        lab.get("/groups").await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "Resource not found for the segment 'groups'.",
    )
    .await;
    let delete = lab
        .call(RW, Method::DELETE, &format!("/users/{CARL}"), None, &[])
        .await;
    assert_error(
        delete,
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        "Specified HTTP method is not allowed for the request target.",
    )
    .await;
}

/// §2.1/§2.3: PATCH checks value types and employeeId's 16-character limit; unknown
/// properties are refused.
#[tokio::test]
async fn s2_3_patch_value_checks() {
    let lab = lab().await;
    let path = format!("/users/{CARL}");
    for body in [
        json!({"employeeId": "12345678901234567"}),
        json!({"otherMails": "not-a-list"}),
        json!({"accountEnabled": "yes"}),
        json!({"favouriteColour": "blue"}),
    ] {
        let response = lab
            .call(RW, Method::PATCH, &path, Some(body.clone()), &[])
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let ok = lab
        .call(
            RW,
            Method::PATCH,
            &path,
            Some(json!({"employeeId": "1234567890123456", "userType": "Guest"})),
            &[],
        )
        .await;
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        lab.json(&format!("{path}?$select=userType")).await["userType"],
        "Guest"
    );
}

/// §3.4: delta `$filter` accepts only `id eq` joined by `or`; the filter is kept in the tokens.
#[tokio::test]
async fn s3_4_delta_filter_by_ids() {
    let lab = lab().await;
    let token = lab.token(RW).await;
    let filter = urlencode(&format!("id eq '{ANNA}' or id eq '{CARL}'"));
    let (items, link) = delta_round(
        &lab,
        &token,
        lab.url(&format!("/users/delta?$filter={filter}")),
    )
    .await;
    assert_eq!(items.len(), 2);
    lab.call(
        RW,
        Method::PATCH,
        &format!("/users/{RITA}"),
        Some(json!({"jobTitle": "x"})),
        &[],
    )
    .await;
    lab.call(
        RW,
        Method::PATCH,
        &format!("/users/{CARL}"),
        Some(json!({"jobTitle": "y"})),
        &[],
    )
    .await;
    let (changed, _) = delta_round(&lab, &token, link).await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["id"], CARL);
    let bad = lab
        .get(&format!(
            "/users/delta?$filter={}",
            urlencode("mail eq 'x@y.z'")
        ))
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

/// §5 time scale through the control API: the new scale applies and usage is forgotten.
#[tokio::test]
async fn control_time_scale() {
    let lab = lab().await;
    let set = lab
        .control(Method::POST, "/time-scale", Some(json!({"timeScale": 0.5})))
        .await;
    assert_eq!(set.status(), StatusCode::OK);
    let token = lab.token(RW).await;
    lab.control(
        Method::POST,
        "/faults",
        Some(json!({"rate": 1.0, "kinds": ["429"]})),
    )
    .await;
    let throttled = lab
        .http
        .get(lab.url("/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(throttled.headers()["retry-after"], "0.500");
    let bad = lab
        .control(Method::POST, "/time-scale", Some(json!({"timeScale": 0})))
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

/// The public API: `Options::default()` plus struct update starts an emulator.
#[tokio::test]
async fn options_default_with_struct_update() {
    let emu = emulator::spawn(Options {
        tenant: fixture(),
        time_scale: 0.01,
        ..Options::default()
    })
    .await
    .unwrap();
    assert!(emu.base_url.starts_with("https://127.0.0.1:"));
    assert!(emu.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    emu.shutdown().await;
}

/// What the connector reads besides users: `/organization` verified domains (P3),
/// `/directoryRoles` and their members (P5, sensitive properties), and `assignedPlans` showing
/// a mailbox (P4) as an enabled Exchange plan.
#[tokio::test]
async fn organization_roles_and_mailbox_plans() {
    let lab = lab().await;
    let org: Value = lab
        .call(
            DIRECTORY,
            Method::GET,
            "/organization?$select=verifiedDomains",
            None,
            &[],
        )
        .await
        .json()
        .await
        .unwrap();
    let domains = org["value"][0]["verifiedDomains"].as_array().unwrap();
    let mut names: Vec<&str> = domains
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["contoso-emu.onmicrosoft.com", "contoso.example"]);
    let initial = domains.iter().find(|d| d["isInitial"] == true).unwrap();
    assert_eq!(initial["name"], "contoso-emu.onmicrosoft.com");
    assert_eq!(
        lab.call(READ, Method::GET, "/organization", None, &[])
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    let roles: Value = lab
        .call(
            DIRECTORY,
            Method::GET,
            "/directoryRoles?$select=id,displayName",
            None,
            &[],
        )
        .await
        .json()
        .await
        .unwrap();
    let roles = roles["value"].as_array().unwrap();
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0]["displayName"], "User Administrator");
    let members_path = format!(
        "/directoryRoles/{}/members?$select=id",
        roles[0]["id"].as_str().unwrap()
    );
    let members: Value = lab
        .call(DIRECTORY, Method::GET, &members_path, None, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(members["value"][0]["id"], RITA);
    assert_eq!(members["value"].as_array().unwrap().len(), 1);

    let max = lab
        .json(&format!("/users/{MAX}?$select=assignedPlans"))
        .await;
    assert_eq!(max["assignedPlans"][0]["service"], "exchange");
    assert_eq!(max["assignedPlans"][0]["capabilityStatus"], "Enabled");
    let carl = lab
        .json(&format!("/users/{CARL}?$select=assignedPlans"))
        .await;
    assert_eq!(carl["assignedPlans"], json!([]));
}

/// Control API `drop` fault over HTTP/1.1: the connection closes without a status line.
#[tokio::test]
async fn control_drop_fault_over_http1() {
    let lab = lab().await;
    let token = lab.token(RW).await;
    let ca = reqwest::Certificate::from_pem(lab.emu.ca_pem.as_bytes()).unwrap();
    let http1 = reqwest::Client::builder()
        .tls_certs_only([ca])
        .http1_only()
        .build()
        .unwrap();
    lab.control(
        Method::POST,
        "/faults",
        Some(json!({"rate": 1.0, "kinds": ["drop"], "pathPrefix": "/v1.0/users"})),
    )
    .await;
    let dropped = http1
        .get(lab.url("/users"))
        .bearer_auth(&token)
        .send()
        .await;
    let err = dropped.expect_err("no response is sent");
    assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
    lab.control(Method::DELETE, "/faults", None).await;
    let fine = http1
        .get(lab.url("/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), StatusCode::OK);
}

/// §7 replication delay [A]: with the mode on, a newly invited user refuses follow-up writes
/// with Directory_ObjectNotFound until the delay has passed.
#[tokio::test]
async fn s7_replication_delay_mode() {
    let lab = lab().await;
    let set = lab
        .control(Method::POST, "/replication-delay", Some(json!({"ms": 400})))
        .await;
    assert_eq!(set.status(), StatusCode::OK);
    assert_eq!(
        lab.invite(RW, conversion("carl@partner.example", CARL))
            .await
            .status(),
        StatusCode::CREATED
    );
    let early = lab
        .call(
            RW,
            Method::PATCH,
            &format!("/users/{CARL}"),
            Some(json!({"userType": "Guest"})),
            &[],
        )
        .await;
    assert_error(
        early,
        StatusCode::NOT_FOUND,
        "Directory_ObjectNotFound",
        "Unable to read the company information from the directory.",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    let later = lab
        .call(
            RW,
            Method::PATCH,
            &format!("/users/{CARL}"),
            Some(json!({"userType": "Guest"})),
            &[],
        )
        .await;
    assert_eq!(later.status(), StatusCode::NO_CONTENT);
}

/// Control API `lost` fault: the request is processed, then the connection closes before the
/// answer, so the client cannot tell whether its write happened (the invitation exists).
#[tokio::test]
async fn control_lost_answer_fault() {
    let lab = lab().await;
    let token = lab.token(RW).await;
    lab.control(
        Method::POST,
        "/faults",
        Some(json!({"rate": 1.0, "kinds": ["lost"], "pathPrefix": "/v1.0/invitations"})),
    )
    .await;
    let sent = lab
        .http
        .post(lab.url("/invitations"))
        .bearer_auth(&token)
        .json(&conversion("carl@partner.example", CARL))
        .send()
        .await;
    assert!(sent.is_err(), "the answer is lost");
    lab.control(Method::DELETE, "/faults", None).await;
    let user = lab
        .json(&format!("/users/{CARL}?$select=externalUserState"))
        .await;
    assert_eq!(
        user["externalUserState"], "PendingAcceptance",
        "the write happened"
    );
    let dump: Value = lab
        .control(Method::GET, "/tenant", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dump["invitations"].as_array().unwrap().len(), 1);
}

/// An app holding only `User.RevokeSessions.All` (§2.5's least privilege).
const REVOKER: (&str, &str) = ("77777777-7777-4777-8777-777777777777", "revoke-secret");

/// The contract fixture plus [`REVOKER`].
fn fixture_with_revoker() -> Tenant {
    let mut tenant = fixture();
    tenant.apps.push(emulator::App {
        app_id: REVOKER.0.to_owned(),
        display_name: Some("session revoker".to_owned()),
        client_secrets: vec![REVOKER.1.to_owned()],
        permissions: vec!["User.RevokeSessions.All".to_owned()],
        ..emulator::App::default()
    });
    tenant
}

/// The revocations `GET /_emulator/tenant` recorded, as user ids.
async fn revoked_ids(lab: &Lab) -> Vec<String> {
    let tenant: Value = lab
        .control(Method::GET, "/tenant", None)
        .await
        .json()
        .await
        .unwrap();
    tenant["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userId"].as_str().unwrap().to_owned())
        .collect()
}

/// `POST /users/{key}/revokeSignInSessions` as `app`.
async fn revoke(lab: &Lab, app: (&str, &str), key: &str) -> reqwest::Response {
    let path = format!("/users/{key}/revokeSignInSessions");
    lab.call(app, Method::POST, &path, None, &[]).await
}

/// Asserts the 403 of §6.2.
async fn assert_denied(response: reqwest::Response) {
    let message = "Insufficient privileges to complete the operation.";
    let status = StatusCode::FORBIDDEN;
    assert_error(response, status, "Authorization_RequestDenied", message).await;
}

/// §2.5: `revokeSignInSessions` answers 200 `{"value": true}`, sets
/// `signInSessionsValidFromDateTime` (returned only with `$select`), is recorded in the control
/// API, and may be repeated (each call moves the time forward and is recorded again).
#[tokio::test]
async fn s2_5_revoke_sign_in_sessions_returns_true_and_records() {
    let lab = lab().await;
    let before = lab.json(&format!("/users/{CARL}")).await;
    assert!(before.get("signInSessionsValidFromDateTime").is_none());
    let selected = lab
        .json(&format!(
            "/users/{CARL}?$select=signInSessionsValidFromDateTime"
        ))
        .await;
    assert_eq!(selected["signInSessionsValidFromDateTime"], Value::Null);

    let response = revoke(&lab, RW, CARL).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["value"], true, "{body}");
    assert_eq!(
        body["@odata.context"],
        format!("{}/v1.0/$metadata#Edm.Boolean", lab.emu.base_url)
    );
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    let after = lab
        .json(&format!(
            "/users/{CARL}?$select=signInSessionsValidFromDateTime"
        ))
        .await;
    let first = after["signInSessionsValidFromDateTime"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(first.parse::<jiff::Timestamp>().is_ok(), "{first}");
    assert_eq!(revoked_ids(&lab).await, [CARL]);

    // By UPN, and a second time: still 200, recorded again, time not earlier.
    let again = revoke(&lab, RW, "carl.cloud@contoso.example").await;
    assert_eq!(again.status(), StatusCode::OK);
    let second = lab
        .json(&format!(
            "/users/{CARL}?$select=signInSessionsValidFromDateTime"
        ))
        .await["signInSessionsValidFromDateTime"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    assert!(second >= first.parse::<jiff::Timestamp>().unwrap());
    assert_eq!(revoked_ids(&lab).await, [CARL, CARL]);

    // A synced user's sessions may be revoked too (nothing mastered is written).
    let synced = revoke(&lab, RW, ANNA).await;
    assert_eq!(synced.status(), StatusCode::OK);
    assert_eq!(revoked_ids(&lab).await, [CARL, CARL, ANNA]);
}

/// §2.5 and §6.3: `User.RevokeSessions.All` is enough; read, invite or no permission is
/// refused with 403 `Authorization_RequestDenied`, and a refused call records nothing.
#[tokio::test]
async fn s2_5_revoke_sign_in_sessions_least_privilege() {
    let lab = lab_with(fixture_with_revoker(), |_| {}).await;
    for app in [READ, INVITE, MAIL, DIRECTORY, NONE] {
        assert_denied(revoke(&lab, app, CARL).await).await;
    }
    assert!(revoked_ids(&lab).await.is_empty());
    let response = revoke(&lab, REVOKER, CARL).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(revoked_ids(&lab).await, [CARL]);
}

/// §2.5: an unknown user is the 404 of §2.2 and records nothing.
#[tokio::test]
async fn s2_5_revoke_sign_in_sessions_unknown_user() {
    let lab = lab().await;
    let missing = "f0000000-0000-4000-8000-000000000000";
    let response = revoke(&lab, RW, missing).await;
    assert_error(
        response,
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{missing}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
    .await;
    assert!(revoked_ids(&lab).await.is_empty());
}

/// §2.6: `signInActivity` only when selected, `null` until a sign-in is recorded through
/// the control API, and only for a token with `AuditLog.Read.All` (else 403 on list and get).
#[tokio::test]
async fn s2_6_sign_in_activity_needs_select_and_audit_log_read_all() {
    const AUDIT: (&str, &str) = ("77777777-7777-4777-8777-777777777777", "audit-secret");
    let mut tenant = fixture();
    tenant.apps.push(
        serde_json::from_value(json!({
            "appId": AUDIT.0,
            "clientSecrets": [AUDIT.1],
            "permissions": ["User.Read.All", "AuditLog.Read.All"],
        }))
        .unwrap(),
    );
    let lab = lab_with(tenant, |_| {}).await;
    let one = format!("/users/{CARL}?$select=id,signInActivity");
    let all = "/users?$select=id,signInActivity";
    for path in [one.as_str(), all] {
        let denied = lab.call(RW, Method::GET, path, None, &[]).await;
        assert_error(
            denied,
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )
        .await;
    }
    let read = |path: String| {
        let lab = &lab;
        async move {
            let response = lab.call(AUDIT, Method::GET, &path, None, &[]).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            response.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(read(one.clone()).await["signInActivity"], Value::Null);
    // Not returned without $select, even to a token that may read it.
    let plain = read(format!("/users/{CARL}")).await;
    assert!(plain.get("signInActivity").is_none(), "{plain}");

    let at = "2026-11-30T08:15:00Z";
    let recorded = lab
        .control(
            Method::POST,
            &format!("/users/{CARL}/sign-in"),
            Some(json!({"time": at})),
        )
        .await;
    assert_eq!(recorded.status(), StatusCode::OK);
    let body = read(one.clone()).await;
    let activity = &body["signInActivity"];
    assert_eq!(activity["lastSuccessfulSignInDateTime"], at);
    assert_eq!(activity["lastSignInDateTime"], at);
    assert_eq!(activity["lastNonInteractiveSignInDateTime"], Value::Null);
    assert!(activity["lastSuccessfulSignInRequestId"].is_string());
    let listed = read(all.to_string()).await;
    let carl = listed["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == CARL)
        .unwrap();
    assert_eq!(carl["signInActivity"]["lastSuccessfulSignInDateTime"], at);

    let bad = lab
        .control(
            Method::POST,
            &format!("/users/{CARL}/sign-in"),
            Some(json!({"time": "yesterday"})),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let unknown = lab
        .control(Method::POST, "/users/nobody@contoso.example/sign-in", None)
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}
