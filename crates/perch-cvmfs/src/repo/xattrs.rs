//! Extended attributes: the stored ones of each entry and the client's magic ones
//! (`user.fqrn`, `user.revision`, `user.hash`, `user.chunk_list`, ...).

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
];
