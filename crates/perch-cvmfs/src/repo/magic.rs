//! Magic extended attributes (`getfattr -n user.X /cvmfs/<repo>/path`), the CernVM-FS
//! client's (docs/magic-xattrs.md lists each with its meaning and whether perch serves it).
//! Stored attributes of an entry come after: a magic name wins.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Node, RepoError, Repository};

impl Repository {
    /// Magic and stored extended attributes of a node, as `(name, value)`.
    pub fn xattr(&self, node: &Node, name: &str) -> Result<Option<Vec<u8>>, RepoError> {
        let e = &node.entry;
        let v: Option<String> = match name {
            "user.fqrn" => Some(self.opts.fqrn.clone()),
            "user.revision" => Some(self.revision.to_string()),
            "user.root_hash" => Some(self.root_hash.to_string()),
            "user.tag" => Some(self.tag.clone().unwrap_or_default()),
            "user.expires" => Some(if self.tag.is_some() {
                "never (fixed root catalog)".into()
            } else if let Some(off) = &*self.offline.lock().unwrap_or_else(|p| p.into_inner()) {
                // Offline, the next check is the network retry.
                (off.retry_at
                    .saturating_duration_since(Instant::now())
                    .as_secs()
                    / 60)
                    .to_string()
            } else {
                (self.ttl.as_secs() / 60).to_string()
            }),
            "user.hash" if e.is_regular() && !e.is_chunked() => e.hash.map(|h| h.to_string()),
            "user.lhash" if e.is_regular() && !e.is_chunked() => Some(match e.hash {
                Some(h) if self.cache.get(&h).is_some() => h.to_string(),
                _ => "Not in cache".into(),
            }),
            "user.chunks" if e.is_regular() => Some(if e.is_chunked() {
                self.chunks(node)?.len().to_string()
            } else {
                "1".into()
            }),
            "user.chunk_list" if e.is_regular() => Some(if e.is_chunked() {
                self.chunks(node)?
                    .iter()
                    .map(|c| format!("{},{},{}", c.hash, c.offset, c.size))
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                e.hash
                    .map(|h| format!("{h},0,{}", e.size))
                    .unwrap_or_default()
            }),
            "user.compression" if e.is_regular() => e.compression().map(|c| c.name().to_string()),
            "user.direct_io" if e.is_regular() => Some(
                if e.flags & perch_format::catalog::FLAG_DIRECT_IO != 0 {
                    "1"
                } else {
                    "0"
                }
                .into(),
            ),
            "user.external_file" if e.is_regular() => Some(
                if e.flags & perch_format::catalog::FLAG_EXTERNAL != 0 {
                    "1"
                } else {
                    "0"
                }
                .into(),
            ),
            "user.rawlink" | "xfsroot.rawlink" if e.is_symlink() => {
                Some(String::from_utf8_lossy(&e.symlink).into_owned())
            }
            "user.host" => self.fetcher.current_server().map(str::to_string),
            "user.host_list" => Some(self.fetcher.servers().join(";")),
            "user.nclg" => Some(self.loaded_catalogs().to_string()),
            "user.ndownload" => Some(
                self.cache
                    .stats
                    .downloads
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .to_string(),
            ),
            "user.pid" => Some(std::process::id().to_string()),
            "user.proxy" => Some(match self.fetcher.current_proxy() {
                crate::fetch::Proxy::Direct => "DIRECT".to_string(),
                crate::fetch::Proxy::Url(u) => u,
            }),
            "user.proxy_list" => Some(
                self.fetcher
                    .proxy_groups()
                    .iter()
                    .map(|g| {
                        g.iter()
                            .map(|p| match p {
                                crate::fetch::Proxy::Direct => "DIRECT".to_string(),
                                crate::fetch::Proxy::Url(u) => u.clone(),
                            })
                            .collect::<Vec<_>>()
                            .join("|")
                    })
                    .collect::<Vec<_>>()
                    .join(";"),
            ),
            "user.timeout" => Some(self.fetcher.options().timeout.as_secs().to_string()),
            "user.timeout_direct" => {
                Some(self.fetcher.options().timeout_direct.as_secs().to_string())
            }
            "user.rx" => Some((self.fetcher.rx_bytes.load(Ordering::Relaxed) / 1024).to_string()),
            "user.speed" => {
                let bytes = self.fetcher.rx_bytes.load(Ordering::Relaxed);
                let us = self.fetcher.rx_micros.load(Ordering::Relaxed);
                // KiB/s averaged over the time spent downloading, as the client's `speed`.
                Some(if us == 0 {
                    "0".into()
                } else {
                    (u128::from(bytes) * 1_000_000 / 1024 / u128::from(us)).to_string()
                })
            }
            "user.nioerr" => Some(self.fetcher.failures.load(Ordering::Relaxed).to_string()),
            "user.uptime" => Some((self.mounted_at().elapsed().as_secs() / 60).to_string()),
            "user.usedfd" => Some(
                std::fs::read_dir("/proc/self/fd")
                    .map(|d| d.count().saturating_sub(1))
                    .unwrap_or(0)
                    .to_string(),
            ),
            "user.maxfd" => max_fd().map(|n| n.to_string()),
            "user.pubkeys" => Some(
                self.opts
                    .public_keys
                    .iter()
                    .filter_map(|p| std::fs::read_to_string(p).ok())
                    .collect::<Vec<_>>()
                    .join(""),
            ),
            "user.catalog_counters" => Some(self.counters(&node.path, true)?),
            "user.repo_counters" => Some(self.counters(b"", false)?),
            "user.version" => Some(env!("CARGO_PKG_VERSION").to_string()),
            _ => None,
        };
        if let Some(v) = v {
            return Ok(Some(v.into_bytes()));
        }
        Ok(e.xattrs
            .iter()
            .find(|(k, _)| k.as_slice() == name.as_bytes())
            .map(|(_, v)| v.clone()))
    }

    /// Names for `listxattr`: stored ones, plus the magic ones on the root.
    pub fn list_xattrs(&self, node: &Node) -> Vec<String> {
        let mut names: Vec<String> = node
            .entry
            .xattrs
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        if node.path.is_empty() {
            for n in MAGIC_XATTRS {
                names.push((*n).to_string());
            }
        }
        names
    }

    /// When this process mounted the repository (for `user.uptime`): perch mounts once per
    /// process, so the process start is close enough and needs no state.
    fn mounted_at(&self) -> Instant {
        *START.get_or_init(Instant::now)
    }

    /// The statistics counters of the catalog holding `path` (`self_*` only, with
    /// `catalog_hash`), or all counters of the root catalog (`subtree_*` = the repository).
    fn counters(&self, path: &[u8], own: bool) -> Result<String, RepoError> {
        let cat = self.catalog_for(path)?;
        let hash = cat.hash;
        let stats = cat.db().statistics().map_err(|source| RepoError::Catalog {
            hash: hash.to_string(),
            source,
        })?;
        let mut out = format!("catalog_hash: {hash}\n");
        for (k, v) in stats {
            if !own || k.starts_with("self_") {
                out.push_str(&format!("{k}: {v}\n"));
            }
        }
        Ok(out)
    }
}

/// Set the first time a repository of this process is asked for an attribute or mounted.
static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Marks the mount time for `user.uptime` (called by [`Repository::mount_with_cache`]).
pub(super) fn mark_mounted() {
    START.get_or_init(Instant::now);
}

/// The soft limit of open files (`/proc/self/limits`), for `user.maxfd`.
fn max_fd() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Magic attribute names perch answers on every path.
pub const MAGIC_XATTRS: &[&str] = &[
    "user.fqrn",
    "user.revision",
    "user.root_hash",
    "user.tag",
    "user.expires",
    "user.host",
    "user.host_list",
    "user.nclg",
    "user.ndownload",
    "user.pid",
    "user.version",
    "user.proxy",
    "user.proxy_list",
    "user.timeout",
    "user.timeout_direct",
    "user.rx",
    "user.speed",
    "user.nioerr",
    "user.uptime",
    "user.usedfd",
    "user.maxfd",
    "user.pubkeys",
    "user.catalog_counters",
    "user.repo_counters",
];
