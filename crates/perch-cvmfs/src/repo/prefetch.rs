//! What a job fetches while it waits for another process's download of a file it needs: the
//! files that follow that one in its directory, which a program reading in listing order
//! (`tar`, `cp -r`, `rsync`) asks for next. Jobs started together read the same files in
//! the same order, so without this they all wait for one download at a time; with it, each
//! waiting job downloads one of the next files, and the downloads run side by side. Each
//! object is still downloaded once (claims), only while some other process is downloading
//! one this job needs, and only small whole files are fetched this way.

use perch_format::catalog::FLAG_EXTERNAL;
use perch_format::hash::ObjectKind;

use super::{Node, Repository};

/// Files larger than this are not fetched on speculation.
pub const PREFETCH_MAX_SIZE: u64 = 1 << 20;
/// How many entries after the awaited file are looked at, at most.
const LOOK_AHEAD: usize = 32;

/// The files after one awaited file, fetched one a call.
pub(super) struct Prefetch<'a> {
    repo: &'a Repository,
    node: &'a Node,
    /// Listed at the first call (most fetches never wait, and never list).
    after: Option<std::vec::IntoIter<Node>>,
}

impl<'a> Prefetch<'a> {
    pub(super) fn new(repo: &'a Repository, node: &'a Node) -> Self {
        Prefetch {
            repo,
            node,
            after: None,
        }
    }

    /// Fetch the next file after the awaited one that nobody has or is fetching; `true` if
    /// one was fetched.
    pub(super) fn one(&mut self) -> bool {
        let (repo, node) = (self.repo, self.node);
        if repo.is_offline() {
            return false;
        }
        let after = self.after.get_or_insert_with(|| {
            repo.siblings_after(node, LOOK_AHEAD)
                .unwrap_or_default()
                .into_iter()
        });
        for n in after.by_ref() {
            let e = &n.entry;
            if !e.is_regular()
                || e.is_chunked()
                || e.flags & FLAG_EXTERNAL != 0
                || e.size > PREFETCH_MAX_SIZE
                // Nobody reads an empty file's object (both modes serve it empty).
                || e.size == 0
            {
                continue;
            }
            let (Some(h), Some(compression)) = (e.hash, e.compression()) else {
                continue;
            };
            match repo.cache.prefetch_object(
                &repo.fetcher,
                &h,
                ObjectKind::File,
                compression,
                Some(e.size),
            ) {
                Ok(true) => return true,
                Ok(false) => {}
                Err(err) => {
                    // The awaited download reports trouble with the network itself.
                    tracing::debug!(target: "cvmfs", fqrn = %repo.opts.fqrn,
                        path = %String::from_utf8_lossy(&n.path), error = %err,
                        "fetch ahead failed");
                    return false;
                }
            }
        }
        false
    }
}
