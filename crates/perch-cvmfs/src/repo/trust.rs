//! The trust chain at mount time: manifest → certificate → whitelist → master key, the
//! root catalog (or a tagged one from the history database), and the last verified
//! manifest kept for offline use.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use perch_format::compress::Compression;
use perch_format::crypto::{Certificate, PublicKey};
use perch_format::hash::{ContentHash, ObjectKind};
use perch_format::history::{History, Tag};
use perch_format::manifest::SignedManifest;
use perch_format::whitelist::Whitelist;

use super::catalogs::{OpenCatalogs, MAX_OPEN_CATALOGS};
use super::offline::Offline;
use super::{MountOptions, RepoError, Repository};
use crate::cache::{Cache, CacheError, CacheOptions};
use crate::fetch::Fetcher;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn load_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>, RepoError> {
    if paths.is_empty() {
        return Err(RepoError::NoPublicKey);
    }
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| RepoError::PublicKey {
                path: p.clone(),
                reason: e.to_string(),
            })?;
            PublicKey::from_pem(&text).map_err(|e| RepoError::PublicKey {
                path: p.clone(),
                reason: e.to_string(),
            })
        })
        .collect()
}

impl Repository {
    /// Mount: fetch and verify the whole trust chain, load the root catalog
    /// (or the tagged one). Falls back to the last verified revision in the
    /// cache when the network fails (offline mode).
    pub fn mount(opts: MountOptions) -> Result<Repository, RepoError> {
        let copts = CacheOptions {
            alien: opts.alien,
            quota_limit: opts.quota_limit,
            cleanup_ratio: None,
            trusted_uids: opts.trusted_uids.clone(),
        };
        let cache = Arc::new(Cache::open_with(&opts.cache_dir, copts)?);
        Self::mount_with_cache(opts, cache)
    }

    /// As `mount`, sharing a cache object with other repositories.
    pub fn mount_with_cache(
        opts: MountOptions,
        cache: Arc<Cache>,
    ) -> Result<Repository, RepoError> {
        super::magic::mark_mounted();
        let keys = load_keys(&opts.public_keys)?;
        let fetcher = Fetcher::new(
            opts.servers.clone(),
            opts.proxies.clone(),
            opts.fetch.clone(),
        );
        let known = cache.read_breadcrumb(&opts.fqrn);
        let (manifest, offline) = match Self::fetch_manifest(
            &opts,
            &fetcher,
            &cache,
            &keys,
            known.as_ref(),
        ) {
            Ok(m) => (m, None),
            Err(e) => {
                // Offline mode: the last verified revision, if we have it all.
                let Some((root, _, _)) = known else {
                    return Err(e);
                };
                let Some(m) = Self::cached_manifest(&cache, &opts.fqrn) else {
                    return Err(e);
                };
                if m.manifest.root_catalog != root || cache.get(&root).is_none() {
                    return Err(e);
                }
                let reason = crate::error_chain(&e);
                tracing::warn!(target: "cvmfs", fqrn = %opts.fqrn, error = %reason, retry_in_s = opts.offline_retry.as_secs(), "network unavailable, serving the last verified revision (offline)");
                let retry_at = Instant::now() + opts.offline_retry;
                (m, Some(Offline { reason, retry_at }))
            }
        };
        let mut root_hash = manifest.manifest.root_catalog;
        let mut revision = manifest.manifest.revision;
        let mut tag_name = None;
        if opts.tag.is_some() || opts.date.is_some() {
            let t = Self::select_tag(&opts, &fetcher, &cache, &manifest)?;
            root_hash = t.hash;
            revision = t.revision;
            tag_name = Some(t.name);
        }
        let mut repo = Repository {
            fetcher,
            cache,
            root_hash,
            revision,
            tag: tag_name,
            manifest,
            ttl: Duration::ZERO,
            offline: Mutex::new(offline),
            keys,
            catalogs: OpenCatalogs::new(MAX_OPEN_CATALOGS),
            env: Box::new(|k| std::env::var(k).ok()),
            opts,
        };
        // Load the root catalog now: a mount that cannot read it fails here.
        let root = repo.catalog(&root_hash, None)?;
        // The client's TTL is the root catalog's (spec §11.5), not the manifest's `D`.
        let ttl = root.db().ttl().map_err(|source| RepoError::Catalog {
            hash: root_hash.to_string(),
            source,
        })?;
        let ttl = Duration::from_secs(ttl);
        repo.ttl = repo.opts.max_ttl.map_or(ttl, |cap| ttl.min(cap));
        Ok(repo)
    }

    fn cached_manifest(cache: &Cache, fqrn: &str) -> Option<SignedManifest> {
        use std::io::Read;
        // Bounded like a download: in a shared cache, another user may have put a file there.
        let f = std::fs::File::open(cache.root().join(format!("manifest.{fqrn}"))).ok()?;
        let mut raw = Vec::new();
        f.take(crate::limits::MANIFEST_MAX + 1)
            .read_to_end(&mut raw)
            .ok()?;
        if raw.len() as u64 > crate::limits::MANIFEST_MAX {
            return None;
        }
        SignedManifest::parse(&raw).ok()
    }

    pub(super) fn fetch_manifest(
        opts: &MountOptions,
        fetcher: &Fetcher,
        cache: &Cache,
        keys: &[PublicKey],
        known: Option<&(ContentHash, u64, u64)>,
    ) -> Result<SignedManifest, RepoError> {
        let raw = fetcher
            .fetch_bytes(".cvmfspublished", crate::limits::MANIFEST_MAX)
            .map_err(RepoError::ManifestFetch)?;
        let m = SignedManifest::parse(&raw).map_err(RepoError::Manifest)?;
        if let Some(n) = &m.manifest.fqrn {
            if n != &opts.fqrn {
                return Err(RepoError::WrongRepository { found: n.clone() });
            }
        }
        if let Some((_, t, r)) = known {
            if m.manifest.timestamp.unwrap_or(u64::MAX) < *t {
                return Err(RepoError::Outdated {
                    found: m.manifest.revision,
                    known: *r,
                });
            }
        }
        let x = m.manifest.certificate.ok_or(RepoError::NoCertificate)?;
        let cert_path = cache.fetch_object(
            fetcher,
            &x,
            ObjectKind::Certificate,
            Compression::Zlib,
            None,
        )?;
        let cert_bytes = std::fs::read(&cert_path).map_err(|e| CacheError::Io {
            path: cert_path.clone(),
            source: e,
        })?;
        let cert = Certificate::parse(&cert_bytes).map_err(|e| RepoError::Certificate {
            hash: x.to_string(),
            reason: e.to_string(),
        })?;
        m.verify(&cert).map_err(RepoError::Manifest)?;
        let wl_raw = fetcher
            .fetch_bytes(".cvmfswhitelist", crate::limits::WHITELIST_MAX)
            .map_err(RepoError::WhitelistFetch)?;
        let wl = Whitelist::parse(&wl_raw).map_err(RepoError::Whitelist)?;
        wl.verify(&opts.fqrn, now(), keys, &cert)
            .map_err(RepoError::Whitelist)?;
        // Verified: remember it for offline use.
        if let Ok(mut tmp) = cache.temp_file() {
            use std::io::Write;
            if tmp.write_all(&raw).is_ok() {
                // Readable by every user of the cache (an alien cache's other users run
                // offline from it too), like the breadcrumb; signed, so nothing to hide.
                use std::os::unix::fs::PermissionsExt;
                let _ = tmp
                    .as_file()
                    .set_permissions(std::fs::Permissions::from_mode(0o444));
                let _ = tmp.persist(cache.root().join(format!("manifest.{}", opts.fqrn)));
            }
        }
        let mm = &m.manifest;
        let _ = cache.write_breadcrumb(
            &opts.fqrn,
            &mm.root_catalog,
            mm.timestamp.unwrap_or(0),
            mm.revision,
        );
        Ok(m)
    }

    fn select_tag(
        opts: &MountOptions,
        fetcher: &Fetcher,
        cache: &Cache,
        m: &SignedManifest,
    ) -> Result<Tag, RepoError> {
        let h = m.manifest.history.ok_or_else(|| {
            RepoError::History("the repository has no history database (manifest has no H)".into())
        })?;
        let p = cache.fetch_object(fetcher, &h, ObjectKind::History, Compression::Zlib, None)?;
        let hist = History::open(&p).map_err(|source| RepoError::Catalog {
            hash: h.to_string(),
            source,
        })?;
        let found = if let Some(t) = &opts.tag {
            hist.tag(t).map_err(|source| RepoError::Catalog {
                hash: h.to_string(),
                source,
            })?
        } else {
            hist.tag_at(opts.date.unwrap_or(0))
                .map_err(|source| RepoError::Catalog {
                    hash: h.to_string(),
                    source,
                })?
        };
        found.ok_or_else(|| match &opts.tag {
            Some(t) => RepoError::History(format!("tag {t:?} not found")),
            None => {
                RepoError::History("no revision published at or before the requested date".into())
            }
        })
    }
}
