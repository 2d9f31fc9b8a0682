//! Hostile servers for the tests of issue 10: an HTTPS server that answers what the test
//! tells it to and records every request it receives (so a test can assert that a token or
//! a client secret never reached it), and a plain TCP listener that records whether anything
//! connected to it at all (the `http://` side).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;

/// One request the hostile server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub authorization: Option<String>,
    pub body: String,
}

impl Recorded {
    /// The request carried a credential: a bearer token, a client secret or an assertion.
    pub fn carries_credential(&self) -> bool {
        self.authorization.is_some()
            || self.body.contains("client_secret")
            || self.body.contains("client_assertion")
    }
}

/// What the hostile server answers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Answer {
    /// A JSON answer.
    pub fn json(status: u16, body: serde_json::Value) -> Answer {
        Answer {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
        }
    }
}

/// A running hostile HTTPS server (certificate for `localhost` and `127.0.0.1`, signed by
/// its own throwaway CA). Dropping it stops accepting connections.
pub struct Hostile {
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    pub port: u16,
    /// Its CA, for a client that should trust it.
    pub ca_pem: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    /// Starts a server answering every request with `answer(request)`.
    pub async fn start(answer: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) -> Hostile {
        let (ca_pem, config) = graph_emulator::throwaway_tls().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let answer = Arc::new(answer);
        let log = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, answer, log) = (acceptor.clone(), answer.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (answer, log) = (answer.clone(), log.clone());
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = axum::body::to_bytes(Body::new(body), 1 << 20)
                                    .await
                                    .unwrap_or_default();
                                let recorded = Recorded {
                                    method: parts.method.to_string(),
                                    path: parts
                                        .uri
                                        .path_and_query()
                                        .map(|pq| pq.as_str().to_string())
                                        .unwrap_or_default(),
                                    authorization: parts
                                        .headers
                                        .get("authorization")
                                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into()),
                                    body: String::from_utf8_lossy(&body).into(),
                                };
                                let reply = answer(&recorded);
                                log.lock().unwrap().push(recorded);
                                let mut response = hyper::Response::builder().status(reply.status);
                                for (name, value) in reply.headers {
                                    response = response.header(name, value);
                                }
                                Ok::<_, std::convert::Infallible>(
                                    response.body(Body::from(reply.body)).unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Hostile {
            base_url: format!("https://127.0.0.1:{port}"),
            port,
            ca_pem,
            requests,
            task,
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Whether any request received so far carried a credential.
    pub fn received_credential(&self) -> bool {
        self.requests().iter().any(Recorded::carries_credential)
    }
}

/// A plain TCP listener standing for an `http://` endpoint: it accepts connections and
/// reads what arrives, answering nothing.
pub struct Plain {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    connections: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Plain {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Plain {
    pub async fn start() -> Plain {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<AtomicUsize> = Arc::default();
        let bytes: Arc<AtomicUsize> = Arc::default();
        let (c, b) = (connections.clone(), bytes.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        b.fetch_add(n, Ordering::SeqCst);
                    }
                });
            }
        });
        Plain {
            url: format!("http://127.0.0.1:{port}"),
            connections,
            bytes,
            task,
        }
    }

    /// Connections accepted and bytes received so far.
    pub fn received(&self) -> (usize, usize) {
        (
            self.connections.load(Ordering::SeqCst),
            self.bytes.load(Ordering::SeqCst),
        )
    }
}
