//! Starting the emulator: a throwaway CA and server certificate (rcgen), the axum router,
//! and the accept loop that serves HTTP/1.1 and h2 over tokio-rustls with hyper-util. A
//! response marked by the `drop` fault closes the connection without an answer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::middleware;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::directory::{Directory, Emulator, TokenKeys};
use super::http::{DropConnection, PeerAddr};
use super::throttle::Throttle;
use super::{Error, Options, Running, auth, control, graph, http};

/// The generated certificates.
struct Certificates {
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
}

fn certificates() -> Result<Certificates, Error> {
    let cert_err = |e: rcgen::Error| Error::Certificate(e.to_string());
    let ca_key = KeyPair::generate().map_err(cert_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "b2bsync graph-emulator throwaway CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_err)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let server_key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .map_err(cert_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    let server_cert = params.signed_by(&server_key, &issuer).map_err(cert_err)?;
    Ok(Certificates {
        ca_pem: ca_cert.pem(),
        server_chain: vec![server_cert.der().clone()],
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
    })
}

/// A fresh throwaway CA (its PEM) and a TLS server configuration with a certificate it
/// signed for `localhost`, `127.0.0.1` and `::1`, offering h2 and HTTP/1.1. The emulator
/// serves with it; tests use it for servers of their own (a hostile one).
pub fn throwaway_tls() -> Result<(String, Arc<rustls::ServerConfig>), Error> {
    let certs = certificates()?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Certificate(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs.server_chain, certs.server_key)
    .map_err(|e| Error::Certificate(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((certs.ca_pem, Arc::new(config)))
}

fn token_keys() -> Result<TokenKeys, Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Error::Certificate(e.to_string()))?;
    Ok(TokenKeys {
        encoding: jsonwebtoken::EncodingKey::from_ec_der(&key.serialize_der()),
        decoding: jsonwebtoken::DecodingKey::from_ec_der(key.public_key_raw()),
        kid: uuid::Uuid::new_v4().simple().to_string(),
        public_raw: key.public_key_raw().to_vec(),
    })
}

/// The full router: token endpoint, discovery, Graph and the control API.
fn router(emu: Arc<Emulator>) -> Router {
    let control = Router::new()
        .route("/_emulator/users/{id}/accept", post(control::accept))
        .route("/_emulator/users/{id}/sign-in", post(control::sign_in))
        .route(
            "/_emulator/users/{id}",
            axum::routing::delete(control::delete_user),
        )
        .route("/_emulator/connect/cycle", post(control::connect_cycle))
        .route(
            "/_emulator/faults",
            post(control::set_faults)
                .delete(control::clear_faults)
                .get(control::faults),
        )
        .route(
            "/_emulator/requests",
            get(control::requests).delete(control::clear_requests),
        )
        .route("/_emulator/tenant", get(control::tenant))
        .route("/_emulator/time-scale", post(control::set_time_scale))
        .route(
            "/_emulator/authorization-policy",
            post(control::set_authorization_policy),
        )
        .route("/_emulator/throttle/reset", post(control::reset_throttle))
        .route(
            "/_emulator/replication-delay",
            post(control::set_replication_delay),
        )
        .route("/_emulator/delta/reset", post(control::reset_delta))
        .route_layer(middleware::from_fn(control::loopback_only));
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(auth::token))
        .route(
            "/metadata/identity/oauth2/token",
            get(super::identity::managed_identity_token),
        )
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(auth::openid_configuration),
        )
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(auth::openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(auth::jwks))
        .route("/common/discovery/instance", get(auth::instance_discovery))
        .route("/v1.0", get(graph::graph))
        .route("/v1.0/{*rest}", axum::routing::any(graph::graph))
        .merge(control)
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(emu.clone(), http::common))
        .with_state(emu)
}

async fn fallback(req: axum::extract::Request) -> axum::response::Response {
    let ctx = http::Ctx::of(&req);
    http::graph_error(
        &ctx,
        axum::http::StatusCode::NOT_FOUND,
        "UnknownError",
        "The requested path is not served by the Graph emulator; Graph lives under /v1.0.",
    )
}

/// The shared state and the router for `opts`, served at `base_url`. The tenant's users move
/// into the directory (`opts` keeps none).
fn build(opts: &mut Options, base_url: String) -> Result<(Arc<Emulator>, Router), Error> {
    let users = std::mem::take(&mut opts.tenant.users);
    let tenant = &opts.tenant;
    let emu = Arc::new(Emulator {
        tenant_id: tenant.tenant_id.clone(),
        initial_domain: tenant.initial_domain.clone(),
        verified_domains: tenant.all_verified_domains(),
        apps: tenant.apps.clone(),
        graph_resource: opts.graph_resource.trim_end_matches('/').to_owned(),
        login_base: opts.login_base.trim_end_matches('/').to_owned(),
        base_url,
        token_lifetime_secs: opts.token_lifetime_secs,
        keys: token_keys()?,
        dir: Mutex::new(Directory::new(tenant, users)),
        log: Mutex::new(Vec::new()),
        faults: Mutex::new(None),
        throttle: Mutex::new(Throttle::new(opts.throttle_model)),
        time_scale: Mutex::new(opts.time_scale),
        replication_delay: Mutex::new(std::time::Duration::ZERO),
        allow_invites_from: Mutex::new(opts.allow_invites_from.clone()),
        router: OnceLock::new(),
    });
    let app = router(emu.clone());
    // Set once, right after creation; `$batch` reads it to dispatch inner requests.
    let _ = emu.router.set(app.clone());
    Ok((emu, app))
}

/// Error returned to hyper to close a connection without a response (fault `drop`).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct Dropped;

pub(crate) async fn spawn(mut opts: Options) -> Result<Running, Error> {
    opts.tenant.check(&super::tenant::memory_path())?;
    if !(opts.time_scale > 0.0 && opts.time_scale.is_finite()) {
        return Err(Error::Option(format!(
            "time scale {} must be a positive number",
            opts.time_scale
        )));
    }
    let (ca_pem, config) = throwaway_tls()?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: opts.listen,
        source,
    })?;
    let host = match addr {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => "127.0.0.1".to_owned(),
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => "[::1]".to_owned(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    };
    let base_url = format!("https://{host}:{}", addr.port());
    let (_, app) = build(&mut opts, base_url.clone())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = rx.changed() => break,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "Accept failed.");
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(stream).await {
                    Ok(tls) => tls,
                    Err(err) => {
                        tracing::debug!(error = %err, %peer, "TLS handshake failed.");
                        return;
                    }
                };
                // A `drop` fault closes the whole connection, for HTTP/1.1 and h2 alike.
                let dropped = Arc::new(tokio::sync::Notify::new());
                let drop_signal = dropped.clone();
                let service = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        let app = app.clone();
                        let drop_signal = drop_signal.clone();
                        req.extensions_mut().insert(PeerAddr(peer));
                        async move {
                            let response = match app.oneshot(req.map(Body::new)).await {
                                Ok(response) => response,
                                Err(never) => match never {},
                            };
                            if response.extensions().get::<DropConnection>().is_some() {
                                drop_signal.notify_one();
                                return Err(Dropped);
                            }
                            Ok(response)
                        }
                    },
                );
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let connection = builder.serve_connection(TokioIo::new(tls), service);
                tokio::select! {
                    result = connection => {
                        if let Err(err) = result {
                            tracing::debug!(error = %err, %peer, "Connection ended with an error.");
                        }
                    }
                    () = dropped.notified() => {
                        tracing::debug!(%peer, "Connection dropped by an injected fault.");
                    }
                }
            });
        }
    });
    Ok(Running {
        addr,
        base_url,
        ca_pem,
        tenant_id: opts.tenant.tenant_id.clone(),
        shutdown: Some(tx),
        task: Some(task),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Tenant;

    fn tenant() -> Tenant {
        Tenant {
            tenant_id: "t".into(),
            initial_domain: "t.onmicrosoft.com".into(),
            ..Tenant::default()
        }
    }

    async fn control_status(peer: &str) -> u16 {
        let mut opts = Options::new("127.0.0.1:0".parse().unwrap(), tenant());
        let (_emu, app) = build(&mut opts, "https://127.0.0.1:1".into()).unwrap();
        let mut request = axum::http::Request::get("/_emulator/tenant")
            .body(Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(PeerAddr(peer.parse().unwrap()));
        app.oneshot(request).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn control_api_serves_loopback_peers_only() {
        assert_eq!(control_status("127.0.0.1:5000").await, 200);
        assert_eq!(control_status("[::1]:5000").await, 200);
        assert_eq!(control_status("192.0.2.7:5000").await, 403);
    }
}
