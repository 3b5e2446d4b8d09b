//! Downloads from stratum servers (`http://`, `file://`), optionally through proxies.
//!
//! Every request walks the server list (and, per server, the proxy list) in
//! order until one answers. A reply whose content fails its check (hash, zlib)
//! is retried once from the same source with `Cache-Control: no-cache`, then
//! from the next source, as the real client does; bad data is never returned.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// HTTP 404 / missing file on every server.
    #[error("{url}: not found")]
    NotFound {
        /// Last URL tried.
        url: String,
    },
    /// Another HTTP status.
    #[error("{url}: HTTP status {status}")]
    Http {
        /// URL.
        url: String,
        /// Status code.
        status: u16,
    },
    /// Connection, DNS, timeout or short read.
    #[error("{url}: {reason}")]
    Transport {
        /// URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The content failed verification everywhere.
    #[error("{url}: {reason}")]
    BadData {
        /// URL.
        url: String,
        /// What was wrong (hash mismatch, corrupt zlib, size).
        reason: String,
    },
    /// No server configured.
    #[error("no server configured (CVMFS_SERVER_URL is empty)")]
    NoServer,
}

impl FetchError {
    /// True when the failure is about the network, not about the data.
    pub fn is_network(&self) -> bool {
        !matches!(self, FetchError::BadData { .. })
    }
}

/// A proxy choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// Connect to the server directly.
    Direct,
    /// An HTTP proxy URL.
    Url(String),
}

/// Outcome of a content check on a reply.
pub enum Verdict<T> {
    /// Keep this result.
    Good(T),
    /// The reply was bad (hash mismatch...): try elsewhere.
    Bad(String),
}

/// Downloads with server/proxy failover.
pub struct Fetcher {
    servers: Vec<String>,
    proxies: Vec<Proxy>,
    agents: Vec<ureq::Agent>,
    /// Index of the server that answered last (shared by all requests).
    current: AtomicUsize,
    /// Number of requests sent (for statistics).
    pub requests: AtomicUsize,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").field("servers", &self.servers).field("proxies", &self.proxies).finish()
    }
}

impl Fetcher {
    /// A fetcher for `servers` (base URLs ending in the repository directory),
    /// trying `proxies` in order for each (empty = direct).
    pub fn new(servers: Vec<String>, proxies: Vec<Proxy>, timeout: Duration) -> Fetcher {
        let proxies = if proxies.is_empty() { vec![Proxy::Direct] } else { proxies };
        let agents = proxies
            .iter()
            .map(|p| {
                let mut b = ureq::AgentBuilder::new()
                    .timeout_connect(timeout)
                    .timeout_read(timeout)
                    .redirects(0)
                    .user_agent(concat!("perch/", env!("CARGO_PKG_VERSION")));
                if let Proxy::Url(u) = p {
                    if let Ok(px) = ureq::Proxy::new(u) {
                        b = b.proxy(px);
                    }
                }
                b.build()
            })
            .collect();
        Fetcher {
            servers: servers.into_iter().map(|s| s.trim_end_matches('/').to_string()).collect(),
            proxies,
            agents,
            current: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
        }
    }

    /// The configured servers.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The server tried first.
    pub fn current_server(&self) -> Option<&str> {
        self.servers.get(self.current.load(Ordering::Relaxed) % self.servers.len().max(1)).map(String::as_str)
    }

    /// Fetch `rel` (e.g. `.cvmfspublished`, `data/ab/cd...C`) and hand the body
    /// to `check`, which reads it and returns a verdict. Failover across
    /// servers and proxies; bad data retried with no-cache, then elsewhere.
    pub fn fetch<T>(
        &self,
        rel: &str,
        check: &mut dyn FnMut(&mut dyn Read) -> std::io::Result<Verdict<T>>,
    ) -> Result<T, FetchError> {
        if self.servers.is_empty() {
            return Err(FetchError::NoServer);
        }
        let n = self.servers.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut last: Option<FetchError> = None;
        for k in 0..n {
            let si = (start + k) % n;
            let base = &self.servers[si];
            let url = format!("{base}/{rel}");
            for (pi, _proxy) in self.proxies.iter().enumerate() {
                let mut no_cache = false;
                loop {
                    self.requests.fetch_add(1, Ordering::Relaxed);
                    let res = self.one(&url, pi, no_cache, check);
                    match res {
                        Ok(Verdict::Good(t)) => {
                            self.current.store(si, Ordering::Relaxed);
                            return Ok(t);
                        }
                        Ok(Verdict::Bad(reason)) => {
                            tracing::warn!(target: "fetch", %url, %reason, no_cache, "bad data");
                            last = Some(FetchError::BadData { url: url.clone(), reason });
                            if !no_cache && url.starts_with("http") {
                                no_cache = true;
                                continue;
                            }
                            break;
                        }
                        Err(e) => {
                            tracing::debug!(target: "fetch", %url, error = %e, "download failed");
                            let is_404 = matches!(e, FetchError::NotFound { .. });
                            last = Some(e);
                            if is_404 {
                                // A 404 is the server's answer; other proxies would relay the same.
                                break;
                            }
                            break;
                        }
                    }
                }
                if matches!(last, Some(FetchError::NotFound { .. }) | Some(FetchError::BadData { .. })) {
                    break;
                }
            }
        }
        Err(last.unwrap_or(FetchError::NoServer))
    }

    fn one<T>(
        &self,
        url: &str,
        proxy: usize,
        no_cache: bool,
        check: &mut dyn FnMut(&mut dyn Read) -> std::io::Result<Verdict<T>>,
    ) -> Result<Verdict<T>, FetchError> {
        let transport = |reason: String| FetchError::Transport { url: url.to_string(), reason };
        if let Some(path) = url.strip_prefix("file://") {
            let mut f = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(FetchError::NotFound { url: url.to_string() })
                }
                Err(e) => return Err(transport(e.to_string())),
            };
            return check(&mut f).map_err(|e| transport(e.to_string()));
        }
        if !url.starts_with("http://") {
            return Err(transport("unsupported URL scheme (use http:// or file://)".into()));
        }
        let mut req = self.agents[proxy].get(url).set("Pragma", "");
        if no_cache {
            req = req.set("Pragma", "no-cache").set("Cache-Control", "no-cache");
        }
        match req.call() {
            Ok(resp) if resp.status() == 200 => {
                let mut body = resp.into_reader();
                check(&mut body).map_err(|e| transport(format!("reading body: {e}")))
            }
            Ok(resp) => Err(FetchError::Http { url: url.to_string(), status: resp.status() }),
            Err(ureq::Error::Status(404, _)) => Err(FetchError::NotFound { url: url.to_string() }),
            Err(ureq::Error::Status(code, _)) => Err(FetchError::Http { url: url.to_string(), status: code }),
            Err(ureq::Error::Transport(t)) => Err(transport(t.to_string())),
        }
    }

    /// Fetch a small file whole (manifest, whitelist), no content check.
    pub fn fetch_bytes(&self, rel: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        self.fetch(rel, &mut |r| {
            let mut v = Vec::new();
            r.take(limit + 1).read_to_end(&mut v)?;
            if v.len() as u64 > limit {
                return Ok(Verdict::Bad(format!("larger than {limit} bytes")));
            }
            Ok(Verdict::Good(v))
        })
    }
}
