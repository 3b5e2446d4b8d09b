//! Downloads from stratum servers (`http://`, `file://`) through proxy groups,
//! with the failover rules of the real client (spec §10.2–10.4).
//!
//! - Servers: `CVMFS_SERVER_URL` order; one current server shared by all
//!   requests, moved on host errors (`h = (h+1) mod n`, skipped if another
//!   request already moved it) and reset to the first one after
//!   `CVMFS_HOST_RESET_AFTER` seconds.
//! - Proxies: `;`-separated groups of `|`-separated members, `DIRECT` = no
//!   proxy. The first member of a group is random; a failed proxy is marked and
//!   another live member of the group is used; when all members failed the next
//!   group is used (wrapping); after `CVMFS_PROXY_RESET_AFTER` seconds on a
//!   backup group, back to group 0.
//! - Failure classes: bad data (hash mismatch, corrupt zlib) → the same URL and
//!   proxy once more with `Pragma`/`Cache-Control: no-cache`, then a host error;
//!   transfer errors (connect failure, timeout, too slow, short read) → retried
//!   with back-off up to `CVMFS_MAX_RETRIES`, then a proxy error (host error when
//!   `DIRECT`); host errors (host DNS, 5xx/400/404, unfollowed redirect) → next
//!   server; proxy errors (proxy DNS, other statuses via a proxy, replies with
//!   `X-Squid-Error`/`Proxy-Status: …error=`) → next proxy, and after every
//!   proxy failed, group 0 and the next server.
//! - No `no-cache` header in normal operation: site proxies keep the manifest
//!   for the server's short expiry. Every request sends an empty `Pragma:`.
//! - Timeouts: connect and read inactivity bounded by `CVMFS_TIMEOUT` via a
//!   proxy, `CVMFS_TIMEOUT_DIRECT` without; a body arriving below
//!   `CVMFS_LOW_SPEED_LIMIT` B/s for that long is aborted as too slow.
//!
//! Deviation: a proxy name is one member, not one member per resolved address.
//! Host names are resolved by [`crate::dns`], never by glibc NSS (a static
//! binary must not load NSS modules); `PERCH_HOSTS_FILE` and `PERCH_RESOLV_CONF`
//! replace `/etc/hosts` and `/etc/resolv.conf` (tests, unusual nodes). Proxy
//! credentials in the proxy URL are not sent.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver as UreqResolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, NextTimeout, TcpConnector, Transport,
};
use ureq::Agent;

/// Why one attempt (or the whole download) failed, as a user reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The host (or proxy) name does not resolve.
    Dns(String),
    /// Connection refused.
    Refused,
    /// Connect or read timed out.
    Timeout(Duration),
    /// The body arrived below the low-speed limit.
    TooSlow {
        /// Bytes per second required.
        limit: u64,
        /// Over this long.
        window: Duration,
    },
    /// Connection closed before the whole body arrived.
    ShortRead,
    /// Another connection or protocol problem.
    Connection(String),
    /// An HTTP status other than 200.
    Status {
        /// The code.
        code: u16,
        /// `X-Squid-Error` or `Proxy-Status` of the reply, if any.
        proxy_error: Option<String>,
    },
    /// The object does not exist (404, missing file).
    NotFound,
    /// A redirect was not followed (`CVMFS_FOLLOW_REDIRECTS=no`).
    Redirect(u16),
    /// The content failed its check (hash mismatch, corrupt zlib, size).
    BadData(String),
    /// The reply went past the most perch accepts for this file ([`crate::limits`]); it was
    /// cut off there.
    TooLarge {
        /// The limit in bytes.
        limit: u64,
        /// What is limited ("a certificate").
        what: String,
    },
    /// A local file problem of `file://` servers.
    Local(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Dns(d) => write!(f, "DNS: {d}"),
            Reason::Refused => write!(f, "connection refused"),
            Reason::Timeout(t) => write!(f, "timed out after {} s", t.as_secs()),
            Reason::TooSlow { limit, window } => {
                write!(f, "too slow: below {limit} B/s for {} s", window.as_secs())
            }
            Reason::ShortRead => write!(f, "connection closed before the whole reply arrived"),
            Reason::Connection(d) => write!(f, "{d}"),
            Reason::Status {
                code,
                proxy_error: Some(p),
            } => write!(f, "HTTP status {code} ({p})"),
            Reason::Status {
                code,
                proxy_error: None,
            } => write!(f, "HTTP status {code}"),
            Reason::NotFound => write!(f, "not found (HTTP 404)"),
            Reason::Redirect(c) => write!(
                f,
                "HTTP redirect {c} not followed (CVMFS_FOLLOW_REDIRECTS=no, no usable Location, or more than {MAX_REDIRECTS} in a row)"
            ),
            Reason::BadData(d) => write!(f, "{d}"),
            Reason::TooLarge { limit, what } => write!(
                f,
                "reply cut off at {}: larger than perch accepts for {what}",
                crate::limits::shown(*limit)
            ),
            Reason::Local(d) => write!(f, "{d}"),
        }
    }
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The last attempt failed for `reason`, every server and proxy having been tried.
    #[error("{url} ({via}): {reason}")]
    Failed {
        /// The last URL tried.
        url: String,
        /// `DIRECT` or `proxy http://...`.
        via: String,
        /// What happened.
        reason: Reason,
    },
    /// The content check gave up (a local error the caller reports itself).
    #[error("download aborted: {0}")]
    Aborted(String),
    /// No server configured.
    #[error("no server configured (CVMFS_SERVER_URL is empty)")]
    NoServer,
}

impl FetchError {
    /// True when the failure is about the network, not about the data.
    pub fn is_network(&self) -> bool {
        !matches!(
            self,
            FetchError::Failed {
                reason: Reason::BadData(_) | Reason::TooLarge { .. },
                ..
            }
        )
    }
    /// True for a 404 / missing file.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            FetchError::Failed {
                reason: Reason::NotFound,
                ..
            }
        )
    }
    /// The reason of the last attempt.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            FetchError::Failed { reason, .. } => Some(reason),
            _ => None,
        }
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

impl std::fmt::Display for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proxy::Direct => write!(f, "DIRECT"),
            Proxy::Url(u) => write!(f, "proxy {u}"),
        }
    }
}

/// Outcome of a content check on a reply.
pub enum Verdict<T> {
    /// Keep this result.
    Good(T),
    /// The reply was bad (hash mismatch...): try elsewhere.
    Bad(String),
    /// The reply went past `limit` bytes, the most accepted for `what`: bad data too.
    TooLarge {
        /// The limit in bytes.
        limit: u64,
        /// What is limited.
        what: String,
    },
    /// Stop trying (a local problem, e.g. the cache disk is full).
    Abort(String),
}

/// Network parameters (spec §10.3, §10.4, §12.3), defaults of the built-in client.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// `CVMFS_TIMEOUT`: connect and read inactivity via a proxy.
    pub timeout: Duration,
    /// `CVMFS_TIMEOUT_DIRECT`: the same without a proxy.
    pub timeout_direct: Duration,
    /// `CVMFS_LOW_SPEED_LIMIT` in B/s.
    pub low_speed_limit: u64,
    /// `CVMFS_MAX_RETRIES` for transfer errors.
    pub max_retries: u32,
    /// `CVMFS_BACKOFF_INIT`.
    pub backoff_init: Duration,
    /// `CVMFS_BACKOFF_MAX`.
    pub backoff_max: Duration,
    /// `CVMFS_PROXY_RESET_AFTER` (zero = never).
    pub proxy_reset_after: Duration,
    /// `CVMFS_HOST_RESET_AFTER` (zero = never).
    pub host_reset_after: Duration,
    /// `CVMFS_FOLLOW_REDIRECTS`.
    pub follow_redirects: bool,
    /// `CVMFS_IPFAMILY_PREFER=6`.
    pub prefer_ipv6: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            timeout: Duration::from_secs(5),
            timeout_direct: Duration::from_secs(5),
            low_speed_limit: 1024,
            max_retries: 1,
            backoff_init: Duration::from_secs(2),
            backoff_max: Duration::from_secs(10),
            proxy_reset_after: Duration::ZERO,
            host_reset_after: Duration::ZERO,
            follow_redirects: false,
            prefer_ipv6: false,
        }
    }
}

#[derive(Debug)]
struct HostState {
    idx: usize,
    since: Instant,
}

#[derive(Debug)]
struct ProxyState {
    group: usize,
    member: usize,
    failed: Vec<bool>,
    since: Instant,
}

/// Failure class of one attempt (spec §10.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    BadData,
    Host,
    Proxy,
    Transfer,
}

struct AttemptError {
    class: Class,
    reason: Reason,
}

/// Downloads with server/proxy failover.
pub struct Fetcher {
    servers: Vec<String>,
    groups: Vec<Vec<Proxy>>,
    agents: Vec<Vec<Agent>>,
    opts: FetchOptions,
    host: Mutex<HostState>,
    proxy: Mutex<ProxyState>,
    /// Number of requests sent (for statistics).
    pub requests: AtomicUsize,
    /// Body bytes received (`user.rx`).
    pub rx_bytes: AtomicU64,
    /// Time spent in requests, µs (`user.speed` = bytes / time).
    pub rx_micros: AtomicU64,
    /// Downloads that failed after every server and proxy (`user.nioerr`).
    pub failures: AtomicU64,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("servers", &self.servers)
            .field("proxies", &self.groups)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fetcher {
    /// A fetcher for `servers` (base URLs ending in the repository directory)
    /// and proxy `groups` (empty = direct only).
    pub fn new(servers: Vec<String>, groups: Vec<Vec<Proxy>>, opts: FetchOptions) -> Fetcher {
        let mut groups: Vec<Vec<Proxy>> = groups.into_iter().filter(|g| !g.is_empty()).collect();
        if groups.is_empty() {
            groups.push(vec![Proxy::Direct]);
        }
        let file = |var: &str, default: &str| {
            std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        let resolver = Arc::new(crate::dns::Resolver::new(
            &file("PERCH_HOSTS_FILE", "/etc/hosts"),
            &file("PERCH_RESOLV_CONF", "/etc/resolv.conf"),
            opts.prefer_ipv6,
        ));
        let agents = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|p| Self::agent(p, &opts, resolver.clone()))
                    .collect()
            })
            .collect();
        let first = rand::thread_rng().gen_range(0..groups[0].len());
        let failed = vec![false; groups[0].len()];
        Fetcher {
            servers: servers
                .into_iter()
                .map(|s| s.trim_end_matches('/').to_string())
                .collect(),
            groups,
            agents,
            opts,
            host: Mutex::new(HostState {
                idx: 0,
                since: Instant::now(),
            }),
            proxy: Mutex::new(ProxyState {
                group: 0,
                member: first,
                failed,
                since: Instant::now(),
            }),
            requests: AtomicUsize::new(0),
            rx_bytes: AtomicU64::new(0),
            rx_micros: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    fn agent(p: &Proxy, opts: &FetchOptions, dns: Arc<crate::dns::Resolver>) -> Agent {
        let t = if *p == Proxy::Direct {
            opts.timeout_direct
        } else {
            opts.timeout
        };
        // Per-read and per-write limits are inactivity timeouts, like curl's;
        // a whole-body budget would abort large files on a slow but live link.
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(t))
            .timeout_per_read(Some(t))
            .timeout_per_write(Some(t))
            .http_status_as_error(false)
            // Proxies come from CVMFS_HTTP_PROXY only, never from http_proxy/HTTP_PROXY in the
            // environment (ureq's default), as with the CernVM-FS client.
            .proxy(None)
            // perch follows redirects itself (`Fetcher::attempt`): ureq 3.5 panics on a
            // redirect whose `Location` is empty and whose body is chunked (found by the
            // `http` fuzz target).
            .max_redirects(0)
            .user_agent(concat!(
                "perch/",
                env!("CARGO_PKG_VERSION"),
                " (cvmfs Fuse 2.12.0 compatible)"
            ))
            .build();
        let proxy = match p {
            Proxy::Direct => None,
            Proxy::Url(u) => match ureq::Proxy::new(u) {
                Ok(px) if px.protocol() == ureq::ProxyProtocol::Http => {
                    Some(Ok((px.host().to_string(), px.port())))
                }
                Ok(_) => Some(Err(format!("unsupported proxy {u} (use http://)"))),
                Err(e) => Some(Err(format!("invalid proxy URL {u}: {e}"))),
            },
        };
        if let Some(Err(e)) = &proxy {
            tracing::warn!(target: "fetch", error = %e, "unusable proxy");
        }
        // with_parts: ureq's own resolver (std, i.e. glibc getaddrinfo and NSS)
        // is never instantiated, so it is not even linked.
        Agent::with_parts(
            config,
            Connect {
                proxied: proxy.is_some(),
            },
            Resolve { dns, proxy },
        )
    }

    /// The network parameters.
    pub fn options(&self) -> &FetchOptions {
        &self.opts
    }

    /// The configured servers.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The proxy groups.
    pub fn proxy_groups(&self) -> &[Vec<Proxy>] {
        &self.groups
    }

    /// The server tried first.
    pub fn current_server(&self) -> Option<&str> {
        let i = lock(&self.host).idx;
        self.servers.get(i).map(String::as_str)
    }

    /// The proxy tried first.
    pub fn current_proxy(&self) -> Proxy {
        let p = lock(&self.proxy);
        self.groups[p.group][p.member].clone()
    }

    fn reset_if_due(&self) {
        let o = &self.opts;
        if !o.host_reset_after.is_zero() {
            let mut h = lock(&self.host);
            if h.idx != 0 && h.since.elapsed() >= o.host_reset_after {
                tracing::info!(target: "fetch", server = %self.servers[0], "back to the first server");
                h.idx = 0;
            }
        }
        if !o.proxy_reset_after.is_zero() {
            let mut p = lock(&self.proxy);
            if p.group != 0 && p.since.elapsed() >= o.proxy_reset_after {
                tracing::info!(target: "fetch", "back to the first proxy group");
                *p = ProxyState {
                    group: 0,
                    member: rand::thread_rng().gen_range(0..self.groups[0].len()),
                    failed: vec![false; self.groups[0].len()],
                    since: Instant::now(),
                };
            }
        }
    }

    /// Move the shared server index away from `from` (unless someone did already).
    fn switch_host(&self, from: usize, reason: &Reason) {
        let mut h = lock(&self.host);
        if h.idx == from && self.servers.len() > 1 {
            h.idx = (from + 1) % self.servers.len();
            h.since = Instant::now();
            tracing::warn!(target: "fetch", "server {} failed ({reason}); switching to server {}", self.servers[from], self.servers[h.idx]);
        }
    }

    /// Mark proxy (group, member) failed and choose another one.
    fn fail_proxy(&self, group: usize, member: usize, reason: &Reason) {
        let mut p = lock(&self.proxy);
        if p.group != group || p.member != member {
            return; // another request moved on already
        }
        p.failed[member] = true;
        let live: Vec<usize> = (0..p.failed.len()).filter(|&i| !p.failed[i]).collect();
        if let Some(&m) = live.get(rand::thread_rng().gen_range(0..live.len().max(1))) {
            p.member = m;
        } else {
            let g = (group + 1) % self.groups.len();
            let n = self.groups[g].len();
            *p = ProxyState {
                group: g,
                member: rand::thread_rng().gen_range(0..n),
                failed: vec![false; n],
                since: Instant::now(),
            };
        }
        let (from, to) = (&self.groups[group][member], &self.groups[p.group][p.member]);
        if from == to {
            // The only proxy: nothing to switch to; the caller's final error names it.
            tracing::debug!(target: "fetch", "{from} failed ({reason}); no other proxy configured");
        } else {
            tracing::warn!(target: "fetch", "{from} failed ({reason}); switching to {to}");
        }
    }

    fn reset_proxies(&self) {
        let mut p = lock(&self.proxy);
        let n = self.groups[0].len();
        *p = ProxyState {
            group: 0,
            member: rand::thread_rng().gen_range(0..n),
            failed: vec![false; n],
            since: Instant::now(),
        };
    }

    fn backoff(&self, retry: u32) -> Duration {
        let init = u64::try_from(self.opts.backoff_init.as_millis()).unwrap_or(u64::MAX);
        let first = if init == 0 {
            0
        } else {
            rand::thread_rng().gen_range(0..=init)
        };
        let ms = first.saturating_mul(1u64 << retry.min(20));
        Duration::from_millis(ms).min(self.opts.backoff_max)
    }

    /// Fetch `rel` (e.g. `.cvmfspublished`, `data/ab/cd...C`) and hand the body
    /// to `check`, which reads it and returns a verdict; `Err` from `check` is a
    /// transfer error (the body could not be read). Failover per spec §10.3.
    pub fn fetch<T>(
        &self,
        rel: &str,
        check: &mut dyn FnMut(&mut dyn Read) -> std::io::Result<Verdict<T>>,
    ) -> Result<T, FetchError> {
        if self.servers.is_empty() {
            return Err(FetchError::NoServer);
        }
        self.reset_if_due();
        let n_hosts = self.servers.len();
        let n_proxies: usize = self.groups.iter().map(Vec::len).sum();
        let mut hosts_tried = 1;
        let mut proxies_failed = 0;
        let mut retries = 0;
        let mut no_cache = false;
        loop {
            let si = lock(&self.host).idx;
            let (gi, mi) = {
                let p = lock(&self.proxy);
                (p.group, p.member)
            };
            let proxy = &self.groups[gi][mi];
            let url = format!("{}/{rel}", self.servers[si]);
            self.requests.fetch_add(1, Ordering::Relaxed);
            let mut seen = Seen::default();
            let started = Instant::now();
            let result = self.attempt(&url, gi, mi, no_cache, &mut seen, check);
            self.rx_bytes.fetch_add(seen.bytes, Ordering::Relaxed);
            self.rx_micros.fetch_add(
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            tracing::debug!(
                target: "fetch",
                %url,
                via = %proxy,
                status = %seen.status.map_or_else(|| "-".to_string(), |c| c.to_string()),
                bytes = seen.bytes,
                ms = started.elapsed().as_millis(),
                retries,
                no_cache,
                result = %match &result { Ok(_) => "ok".to_string(), Err(e) => e.reason.to_string() },
                "GET"
            );
            let err = match result {
                Ok(t) => return Ok(t),
                Err(e) => e,
            };
            if let Reason::Local(d) = &err.reason {
                if url.starts_with("file://") {
                    // file:// servers: a local error is the server's failure.
                    tracing::debug!(target: "fetch", %url, reason = %d, "file server error");
                } else {
                    return Err(FetchError::Aborted(d.clone()));
                }
            }
            let mut class = err.class;
            if class == Class::BadData {
                tracing::warn!(target: "fetch", %url, via = %proxy, reason = %err.reason, no_cache, "bad data");
                if !no_cache && url.starts_with("http") {
                    no_cache = true;
                    continue;
                }
                class = Class::Host;
            }
            if class == Class::Transfer {
                if retries < self.opts.max_retries && !no_cache {
                    let b = self.backoff(retries);
                    retries += 1;
                    tracing::debug!(target: "fetch", %url, via = %proxy, backoff_ms = b.as_millis(), "retrying");
                    std::thread::sleep(b);
                    continue;
                }
                class = if *proxy == Proxy::Direct {
                    Class::Host
                } else {
                    Class::Proxy
                };
            }
            let fail = || {
                self.failures.fetch_add(1, Ordering::Relaxed);
                FetchError::Failed {
                    url: url.clone(),
                    via: proxy.to_string(),
                    reason: err.reason.clone(),
                }
            };
            match class {
                Class::Proxy => {
                    self.fail_proxy(gi, mi, &err.reason);
                    proxies_failed += 1;
                    if proxies_failed < n_proxies {
                        continue;
                    }
                    if hosts_tried < n_hosts {
                        self.reset_proxies();
                        self.switch_host(si, &err.reason);
                        hosts_tried += 1;
                        proxies_failed = 0;
                        no_cache = false;
                        continue;
                    }
                    return Err(fail());
                }
                _ => {
                    if hosts_tried < n_hosts {
                        self.switch_host(si, &err.reason);
                        hosts_tried += 1;
                        no_cache = false;
                        continue;
                    }
                    return Err(fail());
                }
            }
        }
    }

    fn attempt<T>(
        &self,
        url: &str,
        group: usize,
        member: usize,
        no_cache: bool,
        seen: &mut Seen,
        check: &mut dyn FnMut(&mut dyn Read) -> std::io::Result<Verdict<T>>,
    ) -> Result<T, AttemptError> {
        let verdict = |v: std::io::Result<Verdict<T>>, via_proxy: bool, timeout: Duration| match v {
            Ok(Verdict::Good(t)) => Ok(t),
            Ok(Verdict::Bad(r)) => Err(AttemptError {
                class: Class::BadData,
                reason: Reason::BadData(r),
            }),
            Ok(Verdict::TooLarge { limit, what }) => Err(AttemptError {
                class: Class::BadData,
                reason: Reason::TooLarge { limit, what },
            }),
            Ok(Verdict::Abort(r)) => Err(AttemptError {
                class: Class::Transfer,
                reason: Reason::Local(r),
            }),
            Err(e) => {
                let _ = via_proxy;
                Err(AttemptError {
                    class: Class::Transfer,
                    reason: io_reason(&e, timeout),
                })
            }
        };
        if let Some(path) = url.strip_prefix("file://") {
            let mut f = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(AttemptError {
                        class: Class::Host,
                        reason: Reason::NotFound,
                    })
                }
                Err(e) => {
                    return Err(AttemptError {
                        class: Class::Host,
                        reason: Reason::Local(e.to_string()),
                    })
                }
            };
            let mut body = Counted {
                inner: &mut f,
                n: &mut seen.bytes,
            };
            return verdict(check(&mut body), false, Duration::ZERO).map_err(|e| match e.class {
                Class::Transfer => AttemptError {
                    class: Class::Host,
                    ..e
                },
                _ => e,
            });
        }
        if !url.starts_with("http://") {
            return Err(AttemptError {
                class: Class::Host,
                reason: Reason::Connection(
                    "unsupported URL scheme (use http:// or file://)".into(),
                ),
            });
        }
        let proxied = self.groups[group][member] != Proxy::Direct;
        let timeout = if proxied {
            self.opts.timeout
        } else {
            self.opts.timeout_direct
        };
        let mut target = url.to_string();
        let mut hops = 0;
        let reply = loop {
            let mut req = self.agents[group][member]
                .get(&target)
                .header("Connection", "Keep-Alive")
                .header("Pragma", if no_cache { "no-cache" } else { "" });
            if no_cache {
                req = req.header("Cache-Control", "no-cache");
            }
            let reply = req.call();
            // CVMFS_FOLLOW_REDIRECTS: up to MAX_REDIRECTS hops to a usable Location; any
            // other redirect is the host's failure (status_error).
            if let Ok(resp) = &reply {
                let code = resp.status().as_u16();
                if self.opts.follow_redirects
                    && matches!(code, 301 | 302 | 303 | 307 | 308)
                    && hops < MAX_REDIRECTS
                {
                    let next = resp
                        .headers()
                        .get("location")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|l| redirect_target(&target, l));
                    if let Some(next) = next {
                        target = next;
                        hops += 1;
                        continue;
                    }
                }
            }
            break reply;
        };
        if let Ok(resp) = &reply {
            seen.status = Some(resp.status().as_u16());
        }
        match reply {
            Ok(resp) if resp.status() == 200 => {
                let mut body = LowSpeed::new(
                    resp.into_body().into_reader(),
                    self.opts.low_speed_limit,
                    timeout,
                );
                let mut body = Counted {
                    inner: &mut body,
                    n: &mut seen.bytes,
                };
                verdict(check(&mut body), proxied, timeout)
            }
            Ok(resp) => Err(status_error(
                resp.status().as_u16(),
                resp.headers(),
                proxied,
            )),
            Err(e) => Err(transport_error(e, proxied, timeout)),
        }
    }

    /// Fetch a small file whole (manifest, whitelist), no content check. A reply longer than
    /// `limit` bytes is cut off there: at most `limit + 1` bytes are read.
    pub fn fetch_bytes(&self, rel: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        let what = match rel {
            ".cvmfspublished" => "a manifest (.cvmfspublished)".to_string(),
            ".cvmfswhitelist" => "a whitelist (.cvmfswhitelist)".to_string(),
            _ => format!("{rel}, read into memory"),
        };
        self.fetch(rel, &mut |r| {
            let mut v = Vec::new();
            r.take(limit.saturating_add(1)).read_to_end(&mut v)?;
            if v.len() as u64 > limit {
                return Ok(Verdict::TooLarge {
                    limit,
                    what: what.clone(),
                });
            }
            Ok(Verdict::Good(v))
        })
    }
}

/// Most redirects followed for one request (`CVMFS_FOLLOW_REDIRECTS`), as libcurl's setting in
/// the CernVM-FS client.
const MAX_REDIRECTS: usize = 4;

/// Where a redirect from `from` to `location` leads: an absolute `http://` URL, or a path on
/// the same host (absolute, or relative to `from`'s directory). `None` for anything else: an
/// empty or unparsable `Location`, another scheme.
fn redirect_target(from: &str, location: &str) -> Option<String> {
    let location = location.trim();
    if location.is_empty() || location.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return None;
    }
    if location.starts_with("http://") {
        return Some(location.to_string());
    }
    if location.contains("://") || location.starts_with("//") {
        return None;
    }
    let rest = from.strip_prefix("http://")?;
    let host_end = rest.find('/').unwrap_or(rest.len());
    let origin = &from[..7 + host_end];
    if location.starts_with('/') {
        return Some(format!("{origin}{location}"));
    }
    let path = &rest[host_end..];
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    Some(format!("{origin}{dir}{location}"))
}

fn status_error(code: u16, headers: &ureq::http::HeaderMap, proxied: bool) -> AttemptError {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let proxy_error = header("X-Squid-Error").map(str::to_string).or_else(|| {
        header("Proxy-Status")
            .filter(|v| v.contains("error="))
            .map(str::to_string)
    });
    let host_status = code >= 500 || code == 400 || code == 404;
    let class = if (300..400).contains(&code) {
        Class::Host
    } else if code == 429 {
        Class::Transfer
    } else if host_status {
        if proxied && proxy_error.is_some() {
            Class::Proxy
        } else {
            Class::Host
        }
    } else if proxied {
        Class::Proxy
    } else {
        Class::Host
    };
    let reason = match code {
        404 if proxy_error.is_none() => Reason::NotFound,
        300..=399 => Reason::Redirect(code),
        _ => Reason::Status { code, proxy_error },
    };
    AttemptError { class, reason }
}

fn transport_error(e: ureq::Error, proxied: bool, timeout: Duration) -> AttemptError {
    use ureq::Error as E;
    // Via a proxy, only the proxy's name is resolved here.
    let name_class = if proxied { Class::Proxy } else { Class::Host };
    match e {
        E::Io(io) => {
            match io
                .get_ref()
                .and_then(|r| r.downcast_ref::<ResolveFailure>())
            {
                Some(ResolveFailure::Dns(m)) => AttemptError {
                    class: name_class,
                    reason: Reason::Dns(m.clone()),
                },
                Some(ResolveFailure::BadProxyUrl(m)) => AttemptError {
                    class: Class::Proxy,
                    reason: Reason::Connection(m.clone()),
                },
                None => AttemptError {
                    class: Class::Transfer,
                    reason: io_reason(&io, timeout),
                },
            }
        }
        E::HostNotFound => AttemptError {
            class: name_class,
            reason: Reason::Dns("host not found".into()),
        },
        E::Timeout(_) => AttemptError {
            class: Class::Transfer,
            reason: Reason::Timeout(timeout),
        },
        E::Protocol(p) => AttemptError {
            class: name_class,
            reason: Reason::Connection(format!("not an HTTP reply ({p})")),
        },
        E::BadUri(u) => AttemptError {
            class: Class::Host,
            reason: Reason::Connection(format!("bad URL: {u}")),
        },
        other => AttemptError {
            class: Class::Transfer,
            reason: Reason::Connection(other.to_string()),
        },
    }
}

fn io_reason(e: &std::io::Error, timeout: Duration) -> Reason {
    use std::io::ErrorKind as K;
    if let Some(r) = e.get_ref().and_then(|r| r.downcast_ref::<TooSlowError>()) {
        return Reason::TooSlow {
            limit: r.limit,
            window: r.window,
        };
    }
    // Errors while reading a body arrive as ureq errors wrapped in io::Error.
    match e.get_ref().and_then(|r| r.downcast_ref::<ureq::Error>()) {
        Some(ureq::Error::Timeout(_)) => return Reason::Timeout(timeout),
        Some(ureq::Error::Io(inner)) => return io_reason(inner, timeout),
        Some(ureq::Error::Protocol(p)) => {
            return Reason::Connection(format!("not an HTTP reply ({p})"))
        }
        _ => {}
    }
    match e.kind() {
        K::ConnectionRefused => Reason::Refused,
        K::TimedOut | K::WouldBlock => Reason::Timeout(timeout),
        K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
            Reason::ShortRead
        }
        _ => Reason::Connection(e.to_string()),
    }
}

/// A failure of perch's own resolver step, carried through ureq inside an `io::Error` and
/// told apart from connection errors by type.
#[derive(Debug)]
enum ResolveFailure {
    /// A name that did not resolve.
    Dns(String),
    /// A proxy URL perch cannot use (a proxy error: the next proxy is tried).
    BadProxyUrl(String),
}

impl std::fmt::Display for ResolveFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveFailure::Dns(m) | ResolveFailure::BadProxyUrl(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ResolveFailure {}

/// ureq's name resolution through [`crate::dns`]. A proxied agent connects to
/// its proxy, so it resolves the proxy's name and never the server's.
#[derive(Debug)]
struct Resolve {
    dns: Arc<crate::dns::Resolver>,
    /// `(host, port)` of the proxy, or why the proxy URL is unusable.
    proxy: Option<Result<(String, u16), String>>,
}

impl UreqResolver for Resolve {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let (host, port) = match &self.proxy {
            Some(Ok((h, p))) => (h.as_str(), *p),
            Some(Err(e)) => {
                return Err(ureq::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    ResolveFailure::BadProxyUrl(e.clone()),
                )))
            }
            None => (
                uri.host()
                    .ok_or_else(|| ureq::Error::BadUri(uri.to_string()))?,
                uri.port_u16().unwrap_or(80),
            ),
        };
        let ips = self.dns.lookup(host).map_err(|e| {
            ureq::Error::Io(std::io::Error::new(
                e.kind(),
                ResolveFailure::Dns(format!("{host}: {e}")),
            ))
        })?;
        let mut out = self.empty();
        for ip in ips {
            if out.try_push(SocketAddr::new(ip, port)).is_err() {
                break;
            }
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

/// Plain TCP, plus the request form HTTP proxies expect. ureq 3 talks to an
/// HTTP proxy only through a CONNECT tunnel, which squid refuses for port 80 by
/// default and never caches; CVMFS needs the site proxy to cache. So a proxied
/// agent connects to the proxy (see [`Resolve`]) and [`ProxyForm`] sends the
/// absolute URL as request target (RFC 9112 §3.2.2), as the real client does.
#[derive(Debug)]
struct Connect {
    proxied: bool,
}

impl Connector<()> for Connect {
    type Out = ProxyForm;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> Result<Option<ProxyForm>, ureq::Error> {
        let Some(tcp) = Connector::<()>::connect(&TcpConnector::default(), details, None)? else {
            return Ok(None);
        };
        let origin = match (details.uri.scheme_str(), details.uri.authority()) {
            (Some(s), Some(a)) if self.proxied => Some(format!("{s}://{a}").into_bytes()),
            _ => None,
        };
        Ok(Some(ProxyForm {
            inner: Box::new(tcp),
            origin,
        }))
    }
}

/// A transport that, for a proxy, turns `GET /path HTTP/1.1` into
/// `GET http://host:port/path HTTP/1.1`; otherwise passes bytes through.
#[derive(Debug)]
struct ProxyForm {
    inner: Box<dyn Transport>,
    /// `http://host:port` of the server behind the proxy.
    origin: Option<Vec<u8>>,
}

impl Transport for ProxyForm {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let mut amount = amount;
        if let Some(origin) = &self.origin {
            // Our requests are GETs without a body: every write starts a request head.
            let buf = self.inner.buffers().output();
            let head = &buf[..amount];
            if let Some(sp) = head.iter().position(|&b| b == b' ') {
                if head.get(sp + 1) == Some(&b'/') {
                    let n = origin.len();
                    if amount + n > buf.len() {
                        return Err(ureq::Error::Io(std::io::Error::other(
                            "request head too large for the proxy request form",
                        )));
                    }
                    buf.copy_within(sp + 1..amount, sp + 1 + n);
                    buf[sp + 1..sp + 1 + n].copy_from_slice(origin);
                    amount += n;
                }
            }
        }
        self.inner.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }
}

#[derive(Debug)]
struct TooSlowError {
    limit: u64,
    window: Duration,
}

impl std::fmt::Display for TooSlowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "too slow: below {} B/s for {} s",
            self.limit,
            self.window.as_secs()
        )
    }
}

impl std::error::Error for TooSlowError {}

/// Aborts a body that arrives below `limit` B/s averaged over `window`
/// (curl's low-speed limit); stalls are caught by the socket read timeout.
/// What one attempt got, for the `-d fetch` line.
#[derive(Default)]
struct Seen {
    /// HTTP status, if a reply came.
    status: Option<u16>,
    /// Body bytes read.
    bytes: u64,
}

/// Counts the bytes read through it.
struct Counted<'a, R: ?Sized> {
    inner: &'a mut R,
    n: &'a mut u64,
}

impl<R: Read + ?Sized> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.n += n as u64;
        Ok(n)
    }
}

struct LowSpeed<R> {
    inner: R,
    limit: u64,
    window: Duration,
    start: Instant,
    bytes: u64,
}

impl<R: Read> LowSpeed<R> {
    fn new(inner: R, limit: u64, window: Duration) -> Self {
        LowSpeed {
            inner,
            limit,
            window,
            start: Instant::now(),
            bytes: 0,
        }
    }
}

impl<R: Read> Read for LowSpeed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        let el = self.start.elapsed();
        if n > 0 && !self.window.is_zero() && el >= self.window {
            let need = u128::from(self.limit) * el.as_millis() / 1000;
            if u128::from(self.bytes) < need {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    TooSlowError {
                        limit: self.limit,
                        window: self.window,
                    },
                ));
            }
            self.start = Instant::now();
            self.bytes = 0;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets() {
        let from = "http://s1.example.org:8000/cvmfs/r/data/ab/cd";
        assert_eq!(
            redirect_target(from, "http://s2.example.org/x/y").as_deref(),
            Some("http://s2.example.org/x/y")
        );
        assert_eq!(
            redirect_target(from, "/other/path").as_deref(),
            Some("http://s1.example.org:8000/other/path")
        );
        assert_eq!(
            redirect_target(from, "ef").as_deref(),
            Some("http://s1.example.org:8000/cvmfs/r/data/ab/ef")
        );
        assert_eq!(
            redirect_target("http://h", "x").as_deref(),
            Some("http://h/x")
        );
        for bad in [
            "",
            "  ",
            "https://s2/x",
            "//s2/x",
            "ftp://s2/x",
            "a b",
            "a\r\nX: y",
        ] {
            assert_eq!(redirect_target(from, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_is_bounded_and_doubles() {
        let f = Fetcher::new(
            vec!["http://127.0.0.1:9".into()],
            vec![],
            FetchOptions {
                backoff_init: Duration::from_millis(100),
                backoff_max: Duration::from_millis(300),
                ..Default::default()
            },
        );
        for r in 0..6 {
            assert!(f.backoff(r) <= Duration::from_millis(300));
        }
    }

    #[test]
    fn unusable_proxy_url_is_a_proxy_error_without_traffic() {
        let f = Fetcher::new(
            vec!["http://stratum.invalid".into()],
            vec![vec![Proxy::Url("socks5://127.0.0.1:9".into())]],
            FetchOptions::default(),
        );
        let e = f.fetch_bytes(".cvmfspublished", 100).unwrap_err();
        match e.reason() {
            Some(Reason::Connection(m)) => assert!(m.contains("unsupported proxy"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(
            e.to_string().contains("(proxy socks5://127.0.0.1:9)"),
            "{e}"
        );
    }

    #[test]
    fn proxy_member_failover_then_next_group() {
        let p = |s: &str| Proxy::Url(s.to_string());
        let f = Fetcher::new(
            vec!["http://a".into()],
            vec![
                vec![p("http://p1:1"), p("http://p2:1")],
                vec![p("http://p3:1")],
                vec![Proxy::Direct],
            ],
            FetchOptions::default(),
        );
        let first = f.current_proxy();
        assert!(first == p("http://p1:1") || first == p("http://p2:1"));
        let (g, m) = {
            let s = lock(&f.proxy);
            (s.group, s.member)
        };
        f.fail_proxy(g, m, &Reason::Refused);
        let second = f.current_proxy();
        assert_ne!(second, first);
        assert!(second == p("http://p1:1") || second == p("http://p2:1"));
        let (g, m) = {
            let s = lock(&f.proxy);
            (s.group, s.member)
        };
        f.fail_proxy(g, m, &Reason::Refused);
        assert_eq!(f.current_proxy(), p("http://p3:1"));
        f.fail_proxy(1, 0, &Reason::Refused);
        assert_eq!(f.current_proxy(), Proxy::Direct);
        f.fail_proxy(2, 0, &Reason::Refused);
        assert!(
            matches!(f.current_proxy(), Proxy::Url(_)),
            "wraps to group 0"
        );
    }
}
