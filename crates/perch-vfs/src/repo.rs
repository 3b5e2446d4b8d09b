//! The contract between perch-vfs and a repository implementation (perch-cvmfs in production,
//! [`crate::mem`] in tests): [`Repository`], [`Mounter`], [`Entry`], [`RepoError`].

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use crate::Errno;

/// File type of a catalog entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Unix domain socket file.
    Socket,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
}

impl Kind {
    /// The `S_IFMT` bits of this kind.
    pub fn type_bits(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
            Kind::CharDev => libc::S_IFCHR,
            Kind::BlockDev => libc::S_IFBLK,
        }
    }

    /// The kind named by the `S_IFMT` bits of a full `st_mode`, if any.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            _ => return None,
        })
    }

    /// The `d_type` value for `getdents64` (`DT_REG`, ...).
    pub fn dtype(self) -> u8 {
        match self {
            Kind::File => libc::DT_REG,
            Kind::Dir => libc::DT_DIR,
            Kind::Symlink => libc::DT_LNK,
            Kind::Fifo => libc::DT_FIFO,
            Kind::Socket => libc::DT_SOCK,
            Kind::CharDev => libc::DT_CHR,
            Kind::BlockDev => libc::DT_BLK,
        }
    }
}

/// Metadata of one repository entry, as the cvmfs client shows it (spec §7.4): owner after
/// `CVMFS_UID_MAP`/`CLAIM_OWNERSHIP`, link count, client inode, expanded symlink target.
///
/// perch-vfs never takes metadata from the shadow tree or the cache object: this is the truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File type (must agree with the type bits of `mode`).
    pub kind: Kind,
    /// Full `st_mode` including the type bits (`0o100644`).
    pub mode: u32,
    /// Regular file: decompressed length; directory: 4096; symlink: length of the expanded target;
    /// device: 0.
    pub size: u64,
    /// Modification time, seconds since the epoch (also shown as atime and ctime).
    pub mtime: i64,
    /// Nanosecond part of `mtime`.
    pub mtime_ns: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Inode number as the client assigns it (hard-link groups share one).
    pub inode: u64,
    /// Device number of a character/block device, else 0.
    pub rdev: u64,
    /// Symlink target, already `$(VAR)`-expanded; `None` for other kinds.
    pub symlink: Option<Vec<u8>>,
    /// The repository's own reference to the entry, handed back to [`Repository::fetch`] and
    /// the xattr calls so they need no second lookup by path.
    pub handle: Option<Handle>,
}

/// A repository's own reference to one of its entries (say, its catalog row): opaque to
/// perch-vfs, which only carries it from a lookup to the calls on the same entry. It is no
/// metadata: entries compare equal whatever their handles.
/// One thin pointer, so that an [`Entry`] (and the resolver's results holding one) stays small.
#[derive(Clone)]
#[allow(clippy::redundant_allocation)]
pub struct Handle(Arc<Box<dyn std::any::Any + Send + Sync>>);

impl Handle {
    /// Wraps the repository's value.
    pub fn new<T: std::any::Any + Send + Sync>(value: T) -> Handle {
        Handle(Arc::new(Box::new(value)))
    }

    /// The value, if it is a `T`.
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handle")
    }
}

impl PartialEq for Handle {
    fn eq(&self, _: &Handle) -> bool {
        true
    }
}

impl Eq for Handle {}

impl Entry {
    /// A directory entry with mode `0o755`, owner root, size 4096 and two links.
    pub fn dir(inode: u64) -> Entry {
        Entry {
            kind: Kind::Dir,
            mode: libc::S_IFDIR | 0o755,
            size: 4096,
            mtime: 0,
            mtime_ns: 0,
            uid: 0,
            gid: 0,
            nlink: 2,
            inode,
            rdev: 0,
            symlink: None,
            handle: None,
        }
    }

    /// True for directories.
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    /// Permission bits (`mode & 0o7777`).
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

/// A failure of the repository layer, with the errno the program gets.
///
/// Bad data, network failure or an unloadable catalog is `EIO`; a full cache is `ENOSPC`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RepoError {
    errno: Errno,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl RepoError {
    /// An error with the errno to give the program and a one-line description (lower case,
    /// naming the object: `"cannot fetch /a/b of atlas.cern.ch"`).
    pub fn new(errno: Errno, message: impl Into<String>) -> RepoError {
        RepoError {
            errno,
            message: message.into(),
            source: None,
        }
    }

    /// `EIO` with a message: the usual case for bad data and network failures.
    pub fn io(message: impl Into<String>) -> RepoError {
        RepoError::new(Errno::EIO, message)
    }

    /// Attach the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The errno the program receives.
    pub fn errno(&self) -> Errno {
        self.errno
    }
}

/// One mounted revision of a repository. Paths are repository-relative: `""` for the root, else
/// `"/a/b"` (no trailing slash, no `.`/`..`, no empty components).
///
/// Implementations must be cheap on repeated calls (perch-vfs calls `lookup` for every path
/// component it walks) and safe to call from many threads.
pub trait Repository: Send + Sync {
    /// Fully qualified repository name (`atlas.cern.ch`).
    fn fqrn(&self) -> &str;
    /// Stable id of the mounted revision (root catalog hash text); names the shadow tree.
    fn revision_id(&self) -> String;
    /// The entry at `path`; `Ok(None)` means ENOENT.
    fn lookup(&self, path: &[u8]) -> Result<Option<Entry>, RepoError>;
    /// Children of a directory: names without `/`, no `.` and `..`, hidden entries omitted.
    fn list(&self, path: &[u8]) -> Result<Vec<(Vec<u8>, Entry)>, RepoError>;
    /// The same children, handed to `f` one at a time in any order until it says `Break`:
    /// what fills a shadow directory, so that a directory of a million entries is never held
    /// in memory whole. Implementations should stream; the default collects with
    /// [`Repository::list`].
    fn for_each_child(
        &self,
        path: &[u8],
        f: &mut dyn FnMut(&[u8], Entry) -> ControlFlow<()>,
    ) -> Result<(), RepoError> {
        for (name, entry) in self.list(path)? {
            if f(&name, entry).is_break() {
                break;
            }
        }
        Ok(())
    }
    /// Up to `max` children after the cursor `after` (`None`: from the first), each with the
    /// cursor that resumes after it, and the cursor after the page (`None`: no more). Cursors
    /// are opaque and stable for the mounted revision: what a FUSE `readdir` resumes from
    /// without holding the listing. Implementations should read only the page; the default
    /// collects with [`Repository::list`] (cursor = position + 1).
    fn list_page(
        &self,
        path: &[u8],
        after: Option<u64>,
        max: usize,
    ) -> Result<ListPage, RepoError> {
        let all = self.list(path)?;
        let skip = usize::try_from(after.unwrap_or(0)).unwrap_or(usize::MAX);
        let max = max.max(1);
        let page: Vec<(u64, Vec<u8>, Entry)> = all
            .into_iter()
            .enumerate()
            .skip(skip)
            .take(max)
            .map(|(i, (n, e))| (i as u64 + 1, n, e))
            .collect();
        let next = match page.last() {
            Some((c, _, _)) if page.len() == max => Some(*c),
            _ => None,
        };
        Ok((page, next))
    }
    /// Make sure the whole decompressed file is in the cache and return its path, on the same
    /// file system as [`Mounter::cache_root`]. The file must not be modified afterwards.
    fn fetch(&self, path: &[u8], entry: &Entry) -> Result<PathBuf, RepoError>;
    /// Check that `file`, opened from the shadow tree to serve `path`, holds the content this
    /// user verified (DESIGN.md §4a); an `Err` is answered to the program (EIO) and the file is
    /// not served. The default trusts every file (repositories without a shared cache).
    fn verify(&self, path: &[u8], entry: &Entry, file: &std::fs::File) -> Result<(), RepoError> {
        let _ = (path, entry, file);
        Ok(())
    }
    /// `file`, the cache object at `object` (as [`Repository::fetch`] returned it), was just
    /// verified and then linked into the shadow tree, which changed its ctime: remember it
    /// as verified. The default does nothing.
    fn relinked(&self, object: &std::path::Path, file: &std::fs::File) {
        let _ = (object, file);
    }
    /// An extended attribute: stored ones plus the cvmfs magic ones (spec §13). `Ok(None)`
    /// means ENODATA.
    fn getxattr(
        &self,
        path: &[u8],
        entry: &Entry,
        name: &[u8],
    ) -> Result<Option<Vec<u8>>, RepoError>;
    /// Names of the extended attributes shown by `listxattr` for `path`.
    fn listxattr(&self, path: &[u8], entry: &Entry) -> Result<Vec<Vec<u8>>, RepoError>;
}

/// A page of a directory listing: `(cursor, name, entry)` rows and the cursor after them
/// (`None`: the listing is complete). See [`Repository::list_page`].
pub type ListPage = (Vec<(u64, Vec<u8>, Entry)>, Option<u64>);

/// Knows the configured repositories and mounts them on first use.
pub trait Mounter: Send + Sync {
    /// Repositories shown by `ls /cvmfs`.
    fn configured(&self) -> Vec<String>;
    /// Mount `fqrn` (lazily, on first access). `Ok(None)` if it is not a known or valid
    /// repository (the program sees ENOENT).
    fn mount(&self, fqrn: &str) -> Result<Option<Arc<dyn Repository>>, RepoError>;
    /// Directory holding the cache objects; the shadow tree lives in `<cache_root>/shadow`
    /// so that hard links to the objects work.
    fn cache_root(&self) -> PathBuf;
}
