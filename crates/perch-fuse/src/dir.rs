//! Open directories. `.` and `..` (and, at the mount point, the configured repositories) are
//! held; a repository directory's children are read from its catalog a page at a time, from
//! the cursor the kernel's offset names, so a directory of a million entries is never held
//! whole (DESIGN.md §4: a mounted revision never changes, so cursors stay valid while the
//! directory is open, and the kernel caches what it read: `FOPEN_CACHE_DIR`).
//!
//! Offsets: the held entry `i` has offset `i + 1`; a streamed child whose catalog cursor is
//! `c` has offset `c + STREAM_BASE`, above every held offset of a repository directory (two).

use std::sync::Arc;
use std::time::Duration;

use fuser::{FileAttr, FileType};
use perch_vfs::{Entry, Errno, Repository};

use crate::attr::{file_attr, file_type};
use crate::nodes::{entry_id, Node};

/// The offset of a streamed child is its cursor plus this.
const STREAM_BASE: u64 = 3;

/// How long the kernel keeps what a mounted revision says (it never changes).
pub(crate) const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// One directory entry as the kernel gets it.
pub(crate) struct DirItem {
    pub(crate) name: Vec<u8>,
    pub(crate) id: u64,
    pub(crate) kind: FileType,
    /// What the node is (`None` for `.` and `..`, which the kernel never counts).
    pub(crate) node: Option<Node>,
    /// Attributes and their lifetime for readdirplus.
    pub(crate) attr: FileAttr,
    pub(crate) ttl: Duration,
}

/// The entry `name` (with `entry`) of directory `dir` of `repo`.
pub(crate) fn child_item(
    repo: &Arc<dyn Repository>,
    dir: &[u8],
    name: Vec<u8>,
    entry: Entry,
) -> DirItem {
    let id = entry_id(repo.fqrn(), entry.inode);
    let mut path = dir.to_vec();
    path.push(b'/');
    path.extend_from_slice(&name);
    DirItem {
        kind: file_type(entry.kind),
        attr: file_attr(id, &entry),
        ttl: FOREVER,
        node: Some(Node::Entry {
            repo: repo.clone(),
            path: path.into_boxed_slice(),
        }),
        name,
        id,
    }
}

/// An open directory.
pub(crate) struct OpenDir {
    /// Held entries: `.`, `..`, and at the mount point the repositories.
    pub(crate) head: Vec<DirItem>,
    /// The repository directory whose children follow, read by page.
    pub(crate) stream: Option<(Arc<dyn Repository>, Vec<u8>)>,
}

impl OpenDir {
    /// Hands `add` the entries after `offset` (0: from the first), each with its offset,
    /// until `add` says the reply is full (`true`) or the directory ends. Children are read
    /// `page` at a time.
    pub(crate) fn walk(
        &self,
        offset: u64,
        page: usize,
        mut add: impl FnMut(u64, &DirItem) -> bool,
    ) -> Result<(), Errno> {
        let held = self.head.len() as u64;
        let mut after = None;
        if self.stream.is_none() || offset <= held {
            let from = usize::try_from(offset).unwrap_or(usize::MAX);
            for (i, it) in self.head.iter().enumerate().skip(from) {
                if add(i as u64 + 1, it) {
                    return Ok(());
                }
            }
        } else {
            after = Some(offset - STREAM_BASE);
        }
        let Some((repo, dir)) = &self.stream else {
            return Ok(());
        };
        loop {
            let (rows, next) = repo.list_page(dir, after, page).map_err(|e| e.errno())?;
            for (cursor, name, entry) in rows {
                let Some(off) = cursor.checked_add(STREAM_BASE) else {
                    return Ok(());
                };
                if add(off, &child_item(repo, dir, name, entry)) {
                    return Ok(());
                }
            }
            match next {
                Some(n) => after = Some(n),
                None => return Ok(()),
            }
        }
    }
}
