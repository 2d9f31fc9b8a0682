//! Which domain controller b2bsync talks to when `[ldap] urls` names several: the first that
//! answers, in order, and after a connection broke in the middle of a run the next one.
//!
//! A connection, TLS-handshake or transport failure moves on to the next URL; a bind the
//! server refused (bad credentials, an account locked out) does not: every DC of a domain
//! would refuse it the same way, and trying each would only lock the account out sooner.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Error;

/// The configured directory URLs and which of them to try first.
#[derive(Debug)]
pub struct Failover {
    urls: Vec<String>,
    /// Index of the URL the next connection tries first.
    start: AtomicUsize,
    /// Index of the URL the current (or last) connection went to.
    current: AtomicUsize,
}

impl Failover {
    /// `urls` in the order the configuration names them; never empty (the configuration
    /// requires `url` or `urls`).
    pub fn new(urls: Vec<String>) -> Failover {
        Failover {
            urls,
            start: AtomicUsize::new(0),
            current: AtomicUsize::new(0),
        }
    }

    /// How many URLs there are.
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Whether no URL is configured (never, once the configuration was checked).
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The URL the current (or last) connection went to.
    pub fn current(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed);
        self.urls
            .get(i)
            .or_else(|| self.urls.first())
            .map_or("", String::as_str)
    }

    /// The connection to the current URL broke at the transport level: the next connection
    /// starts with the URL after it (wrapping around), so a DC that went away in the middle
    /// of a run is tried last.
    pub fn broke(&self) {
        if self.urls.len() > 1 {
            let next = (self.current.load(Ordering::Relaxed) + 1) % self.urls.len();
            self.start.store(next, Ordering::Relaxed);
        }
    }

    /// The URLs in the order the next connection tries them: from `start`, wrapping around.
    pub fn order(&self) -> Vec<(usize, &str)> {
        rotation(self.urls.len(), self.start.load(Ordering::Relaxed))
            .map(|i| (i, self.urls[i].as_str()))
            .collect()
    }

    /// Connects with `attempt` to each URL in [`Failover::order`] until one answers; each
    /// URL is tried once. A refused bind stops at once. With several URLs, the one used is
    /// logged, and so is every one passed over.
    pub async fn connect<T, F, Fut>(&self, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let order = self.order();
        let several = order.len() > 1;
        let mut failures: Vec<String> = Vec::new();
        let mut last = None;
        for (i, url) in order {
            match attempt(url.to_string()).await {
                Ok(t) => {
                    self.current.store(i, Ordering::Relaxed);
                    if several {
                        tracing::info!(
                            url,
                            passed_over = failures.len(),
                            "Using this domain controller."
                        );
                    }
                    return Ok(t);
                }
                Err(e) if moves_on(&e) => {
                    if several {
                        tracing::warn!(url, error = %e, "The domain controller does not answer; trying the next one.");
                    }
                    failures.push(e.to_string());
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        match last {
            Some(e) if !several => Err(e),
            _ => Err(Error::Connect {
                url: self.urls.join(", "),
                reason: format!(
                    "none of the domain controllers answered: {}",
                    failures.join("; ")
                ),
            }),
        }
    }
}

/// `0..n` starting at `start` and wrapping around.
fn rotation(n: usize, start: usize) -> impl Iterator<Item = usize> {
    let start = if n == 0 { 0 } else { start % n };
    (start..n).chain(0..start)
}

/// Whether an error connecting to one DC is a reason to try the next: the server could not
/// be reached or the connection broke, rather than the server answering "no".
pub fn moves_on(e: &Error) -> bool {
    matches!(e, Error::Connect { .. })
}

/// Whether an error in the middle of a run says the connection broke (a transport failure
/// the client saw, LDAP result 80 as ldap3 reports it, or no connection at all), so that the
/// next DC is worth trying.
pub fn broke(e: &Error) -> bool {
    matches!(
        e,
        Error::Connect { .. } | Error::Search { rc: 80, .. } | Error::Write { rc: 80, .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls() -> Vec<String> {
        ["ldaps://dc1:636", "ldaps://dc2:636", "ldaps://dc3:636"]
            .map(String::from)
            .to_vec()
    }

    fn refused(url: &str) -> Error {
        Error::Connect {
            url: url.into(),
            reason: "connection refused".into(),
        }
    }

    #[tokio::test]
    async fn urls_are_tried_in_order_and_wrap_around_after_a_break() {
        assert_eq!(rotation(3, 0).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(rotation(3, 2).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(rotation(3, 7).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(rotation(0, 3).count(), 0);
        let f = Failover::new(urls());
        let first: Vec<_> = f.order().into_iter().map(|(_, u)| u).collect();
        assert_eq!(
            first,
            ["ldaps://dc1:636", "ldaps://dc2:636", "ldaps://dc3:636"]
        );
        // Connected to dc2, which then broke: dc3 first, dc2 last.
        let got = f
            .connect(|u| async move {
                if u.contains("dc1") {
                    Err(refused(&u))
                } else {
                    Ok(u)
                }
            })
            .await;
        assert_eq!(got.ok().as_deref(), Some("ldaps://dc2:636"));
        assert_eq!(f.current(), "ldaps://dc2:636");
        f.broke();
        let next: Vec<_> = f.order().into_iter().map(|(_, u)| u).collect();
        assert_eq!(
            next,
            ["ldaps://dc3:636", "ldaps://dc1:636", "ldaps://dc2:636"]
        );
    }

    #[tokio::test]
    async fn a_dc_that_does_not_answer_is_passed_over_but_a_refused_bind_is_not() {
        let f = Failover::new(urls());
        let mut tried = Vec::new();
        let got: Result<(), Error> = f
            .connect(|u| {
                tried.push(u.clone());
                async move {
                    if u.contains("dc1") {
                        Err(refused(&u))
                    } else {
                        Err(Error::Bind {
                            url: u,
                            bind_dn: "svc".into(),
                            rc: 49,
                            message: "invalid credentials".into(),
                        })
                    }
                }
            })
            .await;
        assert!(matches!(got, Err(Error::Bind { rc: 49, .. })), "{got:?}");
        assert_eq!(
            tried,
            ["ldaps://dc1:636", "ldaps://dc2:636"],
            "dc3 is not asked"
        );
    }

    #[tokio::test]
    async fn when_no_dc_answers_the_error_names_each() {
        let f = Failover::new(urls());
        let mut calls = 0;
        let got = f
            .connect(|u| {
                calls += 1;
                async move { Err::<(), _>(refused(&u)) }
            })
            .await;
        assert_eq!(calls, 3, "each URL once, no more");
        let Err(Error::Connect { url, reason }) = got else {
            panic!("not a connection error")
        };
        assert_eq!(url, "ldaps://dc1:636, ldaps://dc2:636, ldaps://dc3:636");
        for dc in ["dc1", "dc2", "dc3"] {
            assert!(reason.contains(dc), "{reason}");
        }
        // One URL: its own error, unchanged.
        let one = Failover::new(vec!["ldaps://dc1:636".into()]);
        let got = one
            .connect(|u| async move { Err::<(), _>(refused(&u)) })
            .await;
        assert!(
            matches!(&got, Err(Error::Connect { url, .. }) if url == "ldaps://dc1:636"),
            "{got:?}"
        );
    }

    #[test]
    fn transport_errors_break_the_connection_and_answers_do_not() {
        assert!(broke(&refused("x")));
        let search = |rc| Error::Search {
            base: "b".into(),
            rc,
            message: String::new(),
        };
        assert!(broke(&search(80)));
        assert!(!broke(&search(32)));
        assert!(
            !moves_on(&search(80)),
            "connecting only moves on when it cannot connect"
        );
        assert!(!broke(&Error::PasswordPolicy {
            dn: "d".into(),
            message: String::new(),
        }));
    }
}
