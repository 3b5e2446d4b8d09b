//! `perch cache check`: re-verify every object from nothing the cache could have forged.
//!
//! An object's name is the hash of its stored (usually compressed) form. Objects are kept
//! decompressed, and recompression is not byte-identical across zlib versions, so the
//! content is checked against the name in one of two ways: an object whose content hashes to
//! its name (stored uncompressed) is good; any other is compared with a fresh download of
//! that name, verified against the name as it streams in. No record kept in the cache (nor
//! this user's trust index) is believed. Files assembled from chunks have no downloadable
//! name of their own: they are reported as not checked (they are verified against their
//! chunks when used).

use std::fs;
use std::path::PathBuf;

use perch_format::compress::Compression;
use perch_format::hash::{Algorithm, ContentHash, ObjectKind};

use super::trust::{hash_fd, Digest};
use super::{open_object, Cache, CacheError};
use crate::fetch::Fetcher;

/// Result of [`Cache::check`].
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    /// Objects whose content hashes to their name.
    pub by_name: u64,
    /// Objects equal to a fresh download of their name.
    pub by_download: u64,
    /// Objects with a wrong content (removed unless a dry run, or listed in `not_removed`).
    pub bad: Vec<PathBuf>,
    /// Bad objects that could not be removed (another user's, in a sticky directory).
    pub not_removed: Vec<PathBuf>,
    /// Objects not checked, and why.
    pub unchecked: Vec<(PathBuf, String)>,
}

impl CheckReport {
    /// Objects found good.
    pub fn good(&self) -> u64 {
        self.by_name + self.by_download
    }
}

/// The kinds an object of unknown kind may have on the server, most common first.
const KINDS: [ObjectKind; 4] = [
    ObjectKind::File,
    ObjectKind::Catalog,
    ObjectKind::Certificate,
    ObjectKind::History,
];

impl Cache {
    /// Verify every object (see the module docs); bad ones are removed unless `dry_run`.
    /// Without a `fetcher`, objects that need a download are reported as not checked.
    pub fn check(
        &self,
        fetcher: Option<&Fetcher>,
        dry_run: bool,
        mut progress: impl FnMut(u64),
    ) -> Result<CheckReport, CacheError> {
        let mut r = CheckReport::default();
        for o in self.objects() {
            progress(o.size);
            let rel = o.path.strip_prefix(&self.root).unwrap_or(&o.path);
            if rel.starts_with("chunked") {
                r.unchecked.push((
                    o.path.clone(),
                    "assembled from chunks (verified on use)".into(),
                ));
                continue;
            }
            let name: Option<ContentHash> =
                rel.to_str().and_then(|s| s.replace('/', "").parse().ok());
            let Some(h) = name else {
                r.unchecked
                    .push((o.path.clone(), "not an object name".into()));
                continue;
            };
            let f = open_object(&o.path).map_err(|e| CacheError::io(&o.path, e))?;
            let (got, _, _) = hash_fd(&f, h.algo).map_err(|e| CacheError::io(&o.path, e))?;
            if got == h {
                r.by_name += 1;
                continue;
            }
            let Some(fetcher) = fetcher else {
                r.unchecked
                    .push((o.path.clone(), "no server to compare with".into()));
                continue;
            };
            let mut last = String::new();
            let mut fresh = None;
            for kind in KINDS {
                match self.download(fetcher, &h, kind, Compression::Zlib, None) {
                    Ok((_tmp, sha1, size)) => {
                        fresh = Some(Digest { sha1, size });
                        break;
                    }
                    Err(e) => last = crate::error_chain(&e),
                }
            }
            let Some(fresh) = fresh else {
                r.unchecked
                    .push((o.path.clone(), format!("cannot download it: {last}")));
                continue;
            };
            let (mine, before, after2) =
                hash_fd(&f, Algorithm::Sha1).map_err(|e| CacheError::io(&o.path, e))?;
            if mine == fresh.sha1 && after2.size == fresh.size && before == after2 {
                r.by_download += 1;
                self.trust.record(&self.name_of(&o.path), &fresh, &after2);
            } else {
                r.bad.push(o.path.clone());
            }
        }
        if !dry_run {
            for p in &r.bad {
                if fs::remove_file(p).is_err() {
                    r.not_removed.push(p.clone());
                }
            }
        }
        Ok(r)
    }
}
