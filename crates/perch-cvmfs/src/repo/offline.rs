//! Offline mode (spec §11.4): after the network failed at mount, the last verified
//! revision is served from the cache; downloads fail at once until the retry time, when one
//! thread probes the network (the manifest, verified as at mount) for all.

use std::path::PathBuf;
use std::time::Instant;

use perch_format::hash::{ContentHash, ObjectKind};

use super::{RepoError, Repository};
use crate::cache::CacheError;

/// Why and until when a mount does not use the network (spec §11.4).
#[derive(Debug)]
pub(super) struct Offline {
    /// The failure that made (or kept) the mount offline, one line.
    pub(super) reason: String,
    /// Downloads are not attempted before this instant.
    pub(super) retry_at: Instant,
}

impl Repository {
    /// Runs `op`, which downloads object `h` unless `cached()`. While offline, a download
    /// before the retry time fails at once (no failover, no timeouts); the first one after
    /// it retries the network (the manifest, verified as at mount) and, if that works, the
    /// mount is online again. The mounted revision never changes: a newer one is for new
    /// mounts (DESIGN.md §4).
    pub(super) fn download(
        &self,
        cached: impl FnOnce() -> bool,
        h: &ContentHash,
        kind: ObjectKind,
        op: impl FnOnce() -> Result<PathBuf, CacheError>,
    ) -> Result<PathBuf, RepoError> {
        // Online (the usual case) `op` looks at the cache itself: no second stat here, except
        // for the `-d cvmfs` line.
        let debug = tracing::enabled!(target: "cvmfs", tracing::Level::DEBUG);
        let hit = (self.is_offline() || debug).then(cached);
        if self.is_offline() && hit == Some(false) {
            self.network_ready(h, kind)?;
        }
        if debug {
            let what = if hit == Some(true) {
                "cache hit"
            } else {
                "cache miss"
            };
            tracing::debug!(target: "cvmfs", fqrn = %self.opts.fqrn, object = %h, kind = ?kind, "{what}");
        }
        Ok(op()?)
    }

    /// `Ok` when downloads may use the network (online, or offline and a retry just worked).
    fn network_ready(&self, h: &ContentHash, kind: ObjectKind) -> Result<(), RepoError> {
        let mut state = self.offline.lock().unwrap_or_else(|p| p.into_inner());
        let Some(off) = state.as_mut() else {
            return Ok(());
        };
        let refused = |off: &Offline| RepoError::Offline {
            fqrn: self.opts.fqrn.clone(),
            what: format!(
                "{}/{}",
                self.fetcher.current_server().unwrap_or_default(),
                h.object_path(kind)
            ),
            reason: off.reason.clone(),
            retry_in: off.retry_at.saturating_duration_since(Instant::now()),
        };
        if Instant::now() < off.retry_at {
            return Err(refused(off));
        }
        let known = self.cache.read_breadcrumb(&self.opts.fqrn);
        match Self::fetch_manifest(
            &self.opts,
            &self.fetcher,
            &self.cache,
            &self.keys,
            known.as_ref(),
        ) {
            Ok(m) => {
                // Warn level like the offline notice, so the default log shows both ends.
                tracing::warn!(target: "cvmfs", fqrn = %self.opts.fqrn, mounted = self.revision, newest = m.manifest.revision, "network is back, downloading again (this process keeps its revision; new mounts get the newest)");
                *state = None;
                Ok(())
            }
            Err(e) => {
                off.reason = crate::error_chain(&e);
                off.retry_at = Instant::now() + self.opts.offline_retry;
                tracing::debug!(target: "cvmfs", fqrn = %self.opts.fqrn, error = %off.reason, "still offline");
                Err(refused(off))
            }
        }
    }

    /// Serving the last known revision without downloads because the network failed
    /// (until a retry finds it back).
    pub fn is_offline(&self) -> bool {
        self.offline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}
