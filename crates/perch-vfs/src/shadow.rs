//! The shadow tree: real directories mirroring each mounted revision, filled lazily.
//!
//! ```text
//! <cache_root>/shadow/               sticky: no user may rename another user's tree
//!   <uid>/                           one tree per user (0700): only its owner can change it
//!     <fqrn>@<revision_id>/...       one tree per mounted revision (immutable content)
//!     .root-<hash>/<fqrn>/           what opening /cvmfs gives: one empty dir per configured repo
//!     .empty                         the one empty file every placeholder is a hard link to
//!     .symlink                       the one symlink every symlink of a tree is a hard link to
//!     .tmp/                          staging: built here and renamed into place; entries are
//!                                    named `<pid>@<host>.…`, those of dead processes of this
//!                                    host are removed when a tree is opened
//! ```
//!
//! # Invariants (what makes it safe for many processes at once)
//! * A shadow directory is either **empty** (created by its parent's population, not yet filled)
//!   or **complete** (every child present). It is filled by building a complete copy in `.tmp/`
//!   and `rename(2)`-ing it over the empty directory, which Linux allows atomically for an
//!   empty target; a loser of the race gets `ENOTEMPTY`/`EEXIST` and discards its copy. So the
//!   rename is the "complete" marker, and no marker file ever shows up in `getdents64`. A
//!   repository directory with no children stays empty; we remember the most recently used
//!   completed directories in memory (at most [`COMPLETE_MAX`]), so such a directory is
//!   listed again only after it dropped out, and a known one costs no `read_dir`.
//! * Children are created as: directories → empty directories (mode 0755), symlinks →
//!   hard links to the tree's one symlink `.symlink`, regular and special files → empty
//!   placeholder files (mode 0444). Metadata never comes from these: perch answers `stat`
//!   from the catalog. A placeholder is a hard link to the tree's one empty file `.empty`: a
//!   link is a directory entry only, where a new file or symlink would allocate an inode (on
//!   ext4 a search of the inode bitmap, on a cluster file system a metadata-server round trip)
//!   per entry of every directory a job looks at. When `.empty` or `.symlink` reaches the
//!   link limit (`EMLINK`) or is gone, a fresh one replaces it. An empty file served as a
//!   placeholder is checked to be empty when opened ([`ShadowTree::verified`]), so a write to
//!   `.empty` is never served.
//! * A shadow symlink is there only to be listed (`getdents64` gives its type): its target is
//!   never read or followed. perch answers `readlink` and `lstat` from the catalog, resolves
//!   every path itself and opens shadow objects with `O_NOFOLLOW`, so one shared inode serves
//!   every symlink. Its target, [`SYMLINK_TARGET`], names nothing, so a path walk the kernel
//!   made through one by itself fails with `ENOENT` rather than reach some other file.
//! * An opened regular file becomes a hard link to its cache object: linked under a unique
//!   name in `.tmp/` and put in the placeholder's place (exchanged with it, which is atomic;
//!   see [`ShadowTree::rename_over`]), so a reader sees the placeholder or the whole object,
//!   never a partial file. If linking fails with `EXDEV` (cache on another file system),
//!   `EPERM` (`protected_hardlinks` on someone else's object in a shared alien cache) or
//!   `EMLINK` (link count limit on a popular object), the object is copied to `.tmp/` and put
//!   in place the same way (costs space; still atomic). `link(2)` fails with `ENOENT` when another
//!   process renamed a fresh copy of the same object over the name we fetched (the old inode
//!   lost its last name): we fetch again and retry (found by the 8-thread test). A placeholder is recognised by its size: the
//!   catalog size is never 0 for a file that still needs its object, and a complete object
//!   always has the catalog size.
//! * Trust on use (DESIGN.md §4a): the link is made to exactly the inode that was verified
//!   (`linkat` of `/proc/self/fd/N`), and every opened file is checked with
//!   [`Repository::verify`] before it is served ([`ShadowTree::verified`], from
//!   `Namespace::open`): a file changed since is linked again from a verified object, or refused.
//! * A file about to be `execve`d needs an exec bit on the real inode: cache objects are 0555;
//!   an older object without it gets `+x` or, if that is not allowed, a private copy (0555).
//! * The whole `shadow/` may be deleted when no perch process runs (gc) and is rebuilt lazily.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use hashlink::LruCache;

use crate::{Entry, Kind, RepoError, Repository, VfsError};

const STAGING: &str = ".tmp";
const ROOT_PREFIX: &str = ".root-";

/// Most directories remembered as complete: memory stays bounded however many directories a
/// job walks (~0.2 KiB each); one that dropped out is checked again with one `read_dir`.
pub const COMPLETE_MAX: usize = 16_384;

/// A directory of one tree: (tree name, repository path).
type DirKey = (PathBuf, Vec<u8>);

/// The shadow tree of one cache root.
#[derive(Debug)]
pub struct ShadowTree {
    root: PathBuf,
    staging: PathBuf,
    /// `<pid>@<host>`: names this process's staging entries.
    owner: String,
    /// Directories known complete in this process, the most recently used kept.
    complete: Mutex<LruCache<DirKey, ()>>,
    /// `<root>/.empty`: what placeholders are hard links to.
    empty: PathBuf,
    /// `<root>/.symlink`: what symlinks are hard links to.
    symlink: PathBuf,
}

const EMPTY: &str = ".empty";
const SYMLINK: &str = ".symlink";
/// The target of `.symlink`: a path that cannot exist (no fd is negative; `/proc` takes no
/// new names), for a walk through a shadow symlink the kernel would make on its own.
pub const SYMLINK_TARGET: &str = "/proc/self/fd/-1";

/// The shared inodes placeholders are hard links to.
#[derive(Clone, Copy, Debug)]
enum Shared {
    /// `.empty`: regular and special files not opened yet.
    Empty,
    /// `.symlink`: symlinks.
    Symlink,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);
/// `RENAME_EXCHANGE` was refused as unsupported (`EINVAL`, `ENOSYS`): rename from now on.
static NO_EXCHANGE: AtomicBool = AtomicBool::new(false);

/// What [`ShadowTree::rename_over`] replaces.
#[derive(Clone, Copy, Debug)]
enum Replace {
    /// A placeholder: never opened by a program for its content.
    Placeholder,
    /// A file that may have been served (open or mapped in some program).
    Served,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> VfsError + 'a {
    move |source| VfsError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn repo_err(repo: &dyn Repository, path: &[u8]) -> impl FnOnce(RepoError) -> VfsError {
    let fqrn = repo.fqrn().to_owned();
    let path = String::from_utf8_lossy(path).into_owned();
    move |source| VfsError::Repo { fqrn, path, source }
}

/// FNV-1a, 64 bit: a stable name for a set of repositories (not security relevant).
pub(crate) fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A name the kernel can hold in a directory: not empty, not `.`/`..`, no `/` or NUL, at most
/// `NAME_MAX` bytes (a catalog may hold longer ones; such an entry is left out of the shadow
/// directory, and naming it is `ENAMETOOLONG` in the resolver, as in the real client).
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= crate::resolve::NAME_MAX
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0)
}

fn is_race_loss(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST))
}

impl ShadowTree {
    /// Open (creating if needed) this user's shadow tree under `cache_root`, and remove what
    /// dead processes of this host left in its staging area.
    pub fn new(cache_root: &Path) -> Result<ShadowTree, VfsError> {
        Self::with_complete_limit(cache_root, COMPLETE_MAX)
    }

    /// As [`ShadowTree::new`], remembering at most `limit` complete directories (tests).
    pub fn with_complete_limit(cache_root: &Path, limit: usize) -> Result<ShadowTree, VfsError> {
        let base = cache_root.join("shadow");
        if !base.is_dir() {
            fs::create_dir_all(&base).map_err(io_err("create", &base))?;
            // As open as the cache it lives in (a group-shared alien cache), plus the sticky
            // bit: no user may rename or remove another user's tree.
            let mode = fs::metadata(cache_root).map_or(0o700, |m| m.mode() & 0o2777) | 0o1000;
            let _ = fs::set_permissions(&base, fs::Permissions::from_mode(mode));
        }
        // One tree per user: a tree is trusted by the processes that serve from it, and only
        // its owner can change it.
        let uid = rustix::process::getuid().as_raw();
        let mine = base.join(uid.to_string());
        match fs::DirBuilder::new().mode(0o700).create(&mine) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", &mine)(e)),
        }
        let m = fs::symlink_metadata(&mine).map_err(io_err("stat", &mine))?;
        if !m.is_dir() || m.uid() != uid || m.mode() & 0o022 != 0 {
            return Err(io_err("use", &mine)(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the shadow tree is not a directory owned by this user and closed to others",
            )));
        }
        let staging = mine.join(STAGING);
        fs::create_dir_all(&staging).map_err(io_err("create", &staging))?;
        let root = fs::canonicalize(&mine).map_err(io_err("canonicalize", &mine))?;
        let tree = ShadowTree {
            staging: root.join(STAGING),
            empty: root.join(EMPTY),
            symlink: root.join(SYMLINK),
            root,
            owner: format!("{}@{}", std::process::id(), hostname()),
            complete: Mutex::new(LruCache::new(limit.max(1))),
        };
        tree.clean_staging();
        Ok(tree)
    }

    /// Remove staging entries of processes of this host that are gone, and any older than an
    /// hour (another host's, or a reused pid).
    fn clean_staging(&self) {
        let Ok(rd) = fs::read_dir(&self.staging) else {
            return;
        };
        let host = hostname();
        let now = std::time::SystemTime::now();
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let owner = name.split('.').next().unwrap_or("");
            let (pid, on) = owner.split_once('@').unwrap_or((owner, host.as_str()));
            let dead = on == host
                && pid
                    .parse::<u32>()
                    .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists());
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default().as_secs() > 3600);
            if dead || old {
                tracing::debug!(target: "vfs", entry = %name, "removing staging leftover");
                let p = e.path();
                if fs::remove_dir_all(&p).is_err() {
                    let _ = fs::remove_file(&p);
                }
            }
        }
    }

    /// `<cache_root>/shadow`, canonical (as `/proc/<pid>/fd/N` shows it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory name of a mounted revision: `<fqrn>@<revision_id>` (`/` and NUL in the
    /// revision id replaced by `_`).
    pub fn tree_name(repo: &dyn Repository) -> PathBuf {
        let mut name = repo.fqrn().as_bytes().to_vec();
        name.push(b'@');
        name.extend(
            repo.revision_id()
                .bytes()
                .map(|b| if b == b'/' || b == 0 { b'_' } else { b }),
        );
        PathBuf::from(OsStr::from_bytes(&name))
    }

    /// The root of the tree of `repo` (not materialized).
    pub fn repo_dir(&self, repo: &dyn Repository) -> PathBuf {
        self.root.join(Self::tree_name(repo))
    }

    /// Where the shadow object of repository path `path` lives (not materialized).
    pub fn object_path(&self, repo: &dyn Repository, path: &[u8]) -> PathBuf {
        let mut p = self.repo_dir(repo).into_os_string().into_vec_bytes();
        p.extend_from_slice(path);
        PathBuf::from(OsStr::from_bytes(&p))
    }

    fn temp_name(&self) -> PathBuf {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.staging
            .join(format!("{}.{}.{:08x}", self.owner, n, nanos))
    }

    fn is_complete(&self, key: &DirKey) -> bool {
        self.complete
            .lock()
            .map(|mut s| s.get(key).is_some())
            .unwrap_or(false)
    }

    fn mark_complete(&self, key: DirKey) {
        if let Ok(mut s) = self.complete.lock() {
            s.insert(key, ());
        }
    }

    /// Directories remembered as complete now (at most [`COMPLETE_MAX`]).
    pub fn remembered_complete(&self) -> usize {
        self.complete.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Build a directory in staging with `fill`, then rename it over `target` (absent or empty).
    fn publish_dir(
        &self,
        target: &Path,
        fill: impl FnOnce(&Path) -> Result<(), VfsError>,
    ) -> Result<(), VfsError> {
        let tmp = self.temp_name();
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        if let Err(e) = fill(&tmp) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        Self::rename_into_place(&tmp, target)
    }

    /// Rename the complete staging directory `tmp` over `target` (absent or empty); losing
    /// the race to another process is fine (its copy is as good). `tmp` is gone afterwards.
    fn rename_into_place(tmp: &Path, target: &Path) -> Result<(), VfsError> {
        match fs::rename(tmp, target) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = fs::remove_dir_all(tmp);
                if is_race_loss(&e) {
                    Ok(())
                } else {
                    Err(io_err("rename into", target)(e))
                }
            }
        }
    }

    /// True if `dir` exists and has at least one entry; `None` if it does not exist.
    fn non_empty(dir: &Path) -> Result<Option<bool>, VfsError> {
        match fs::read_dir(dir) {
            Ok(mut it) => Ok(Some(it.next().is_some())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", dir)(e)),
        }
    }

    /// Fill one shadow directory (its parent must be complete).
    fn populate(&self, repo: &dyn Repository, path: &[u8], dir: &Path) -> Result<(), VfsError> {
        let key = (Self::tree_name(repo), path.to_vec());
        if self.is_complete(&key) {
            return Ok(());
        }
        let state = Self::non_empty(dir)?;
        if state == Some(true) {
            self.mark_complete(key);
            return Ok(());
        }
        // Children are created in a staging directory as the repository hands them out (a
        // page of catalog rows at a time), so memory does not grow with the directory.
        let tmp = self.temp_name();
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        let mut made = 0usize;
        let mut failed = None;
        let listed = repo.for_each_child(path, &mut |name, entry| {
            if !valid_name(name) {
                let mut shown = path.to_vec();
                shown.push(b'/');
                shown.extend_from_slice(name);
                tracing::warn!(target: "vfs", fqrn = repo.fqrn(), bytes = name.len(),
                    "{}{}: left out of the directory listing: not a name Linux can hold \
                     (at most 255 bytes, no '/' or NUL)",
                    repo.fqrn(), String::from_utf8_lossy(&shown));
                return ControlFlow::Continue(());
            }
            match self.create_child(&tmp.join(OsStr::from_bytes(name)), &entry) {
                Ok(()) => {
                    made += 1;
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            }
        });
        let filled = match (listed, failed) {
            (Err(e), _) => Err(repo_err(repo, path)(e)),
            (Ok(()), Some(e)) => Err(e),
            (Ok(()), None) => Ok(()),
        };
        if filled.is_err() || made == 0 {
            let _ = fs::remove_dir_all(&tmp);
        }
        filled?;
        if made == 0 {
            if state.is_none() {
                match fs::create_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("create", dir)(e)),
                }
            }
            self.mark_complete(key);
            return Ok(());
        }
        tracing::debug!(target: "vfs", fqrn = repo.fqrn(), path = %String::from_utf8_lossy(path),
            children = made, "populated shadow directory");
        Self::rename_into_place(&tmp, dir)?;
        self.mark_complete(key);
        Ok(())
    }

    fn create_child(&self, child: &Path, entry: &Entry) -> Result<(), VfsError> {
        match entry.kind {
            Kind::Dir => fs::DirBuilder::new()
                .mode(0o755)
                .create(child)
                .map_err(io_err("create", child)),
            // Whatever its target (even one Linux could not store: empty, or with a NUL): the
            // target is the catalog's to answer.
            Kind::Symlink => self.shared_link(Shared::Symlink, child),
            _ => self.placeholder(child),
        }
    }

    /// An empty placeholder at `child`: a hard link to `.empty`, or a file of its own where
    /// no link can be made.
    fn placeholder(&self, child: &Path) -> Result<(), VfsError> {
        self.shared_link(Shared::Empty, child)
    }

    fn shared(&self, which: Shared) -> &Path {
        match which {
            Shared::Empty => &self.empty,
            Shared::Symlink => &self.symlink,
        }
    }

    /// A hard link at `child` to the shared inode `which` (`link(2)` does not follow a
    /// symlink), or a file or symlink of its own where no link can be made.
    fn shared_link(&self, which: Shared, child: &Path) -> Result<(), VfsError> {
        for fresh in [false, true] {
            if fresh && self.fresh(which).is_err() {
                break;
            }
            match fs::hard_link(self.shared(which), child) {
                Ok(()) => return Ok(()),
                // Not made yet (or removed), or at the link limit: make a new one.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EMLINK)) => {}
                Err(_) => break,
            }
        }
        Self::make(which, child)
    }

    /// A new inode of kind `which` at `path`.
    fn make(which: Shared, path: &Path) -> Result<(), VfsError> {
        match which {
            Shared::Empty => Self::empty_file(path),
            Shared::Symlink => {
                std::os::unix::fs::symlink(SYMLINK_TARGET, path).map_err(io_err("symlink", path))
            }
        }
    }

    fn empty_file(path: &Path) -> Result<(), VfsError> {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(path)
            .map(drop)
            .map_err(io_err("create", path))
    }

    /// Put a new `.empty` or `.symlink` in place (atomically: a process linking the old one
    /// meanwhile gets the old one, which is as good).
    fn fresh(&self, which: Shared) -> Result<(), VfsError> {
        let tmp = self.temp_name();
        Self::make(which, &tmp)?;
        let target = self.shared(which);
        let r = fs::rename(&tmp, target).map_err(io_err("rename into", target));
        if r.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        r
    }

    /// Make sure the shadow directory of `path` (a directory of `repo`) and all its ancestors
    /// exist and are complete; return its path.
    pub fn ensure_dir(&self, repo: &dyn Repository, path: &[u8]) -> Result<PathBuf, VfsError> {
        let mut prefix = Vec::with_capacity(path.len());
        let mut dir = self.repo_dir(repo);
        self.populate(repo, b"", &dir)?;
        for name in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            prefix.push(b'/');
            prefix.extend_from_slice(name);
            dir.push(OsStr::from_bytes(name));
            self.populate(repo, &prefix, &dir)?;
        }
        Ok(dir)
    }

    /// The shadow object of any entry, with its directory complete (files stay placeholders;
    /// use [`ShadowTree::materialize`] for content).
    pub fn entry_path(
        &self,
        repo: &dyn Repository,
        path: &[u8],
        entry: &Entry,
    ) -> Result<PathBuf, VfsError> {
        if entry.is_dir() {
            return self.ensure_dir(repo, path);
        }
        let (parent, name) = split_last(path);
        let dir = self.ensure_dir(repo, parent)?;
        Ok(dir.join(OsStr::from_bytes(name)))
    }

    /// Make the shadow file of regular file `path` a hard link to (or copy of) its cache object
    /// and return its path. A shadow file already there is kept only while it holds what this
    /// user verified ([`Repository::verify`]); otherwise it is linked again.
    pub fn materialize(
        &self,
        repo: &dyn Repository,
        path: &[u8],
        entry: &Entry,
    ) -> Result<PathBuf, VfsError> {
        let target = self.entry_path(repo, path, entry)?;
        if entry.kind != Kind::File || entry.size == 0 {
            return Ok(target);
        }
        let replace = match fs::symlink_metadata(&target) {
            // Checked when opened ([`ShadowTree::verified`]), which links it again if need be.
            Ok(m) if m.is_file() && m.len() == entry.size => return Ok(target),
            Ok(m) if m.is_file() && m.len() == 0 => Replace::Placeholder,
            _ => Replace::Served,
        };
        self.link_verified(repo, path, entry, &target, replace)?;
        Ok(target)
    }

    /// Link (or copy) the verified cache object of `path` over its shadow file `target`.
    fn link_verified(
        &self,
        repo: &dyn Repository,
        path: &[u8],
        entry: &Entry,
        target: &Path,
        replace: Replace,
    ) -> Result<(), VfsError> {
        let tmp = self.temp_name();
        // link(2) of an inode whose last name was just replaced (another process renamed a
        // fresh copy of the same object over it) fails with ENOENT: fetch again and retry.
        let mut attempt = 0;
        let (object, file, linked) = loop {
            attempt += 1;
            let object = repo.fetch(path, entry).map_err(repo_err(repo, path))?;
            let file = open_nofollow(&object).map_err(io_err("open", &object))?;
            // Link exactly the inode that was verified, not whatever has its name by now.
            repo.verify(path, entry, &file)
                .map_err(repo_err(repo, path))?;
            let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
            match rustix::fs::linkat(
                rustix::fs::CWD,
                &by_fd,
                rustix::fs::CWD,
                &tmp,
                rustix::fs::AtFlags::SYMLINK_FOLLOW,
            ) {
                Ok(()) => break (object, file, true),
                Err(e) if e == rustix::io::Errno::NOENT && attempt < 5 => continue,
                Err(e)
                    if e == rustix::io::Errno::XDEV
                        || e == rustix::io::Errno::PERM
                        || e == rustix::io::Errno::MLINK =>
                {
                    tracing::debug!(target: "vfs", object = %object.display(), error = %e,
                        "hard link impossible, copying");
                    self.copy_fd_to(&file, &tmp, 0o444 | (entry.mode & 0o111))?;
                    break (object, file, false);
                }
                Err(e) => return Err(io_err("link", &object)(e.into())),
            }
        };
        self.rename_over(&tmp, target, replace)?;
        if linked {
            repo.relinked(&object, &file);
        }
        Ok(())
    }

    /// The check before an opened shadow file is handed to a program: it must hold what this
    /// user verified (DESIGN.md §4a; the file could have been changed after it was linked).
    /// A file that fails it is linked again from a verified object and `reopen`ed once.
    pub fn verified(
        &self,
        repo: Option<&dyn Repository>,
        path: &[u8],
        entry: &Entry,
        fd: std::os::fd::OwnedFd,
        shadow: &Path,
        reopen: impl FnOnce() -> Result<std::os::fd::OwnedFd, crate::Errno>,
    ) -> Result<std::os::fd::OwnedFd, crate::Errno> {
        let Some(repo) = repo else { return Ok(fd) };
        let file = fs::File::from(fd);
        if entry.size == 0 {
            // A placeholder shares its inode with every other one: it must still be empty.
            if file.metadata().is_ok_and(|m| m.len() == 0) {
                return Ok(file.into());
            }
            drop(file);
            tracing::warn!(target: "vfs", shadow = %shadow.display(),
                "an empty file's placeholder is not empty: replacing it");
            self.fresh(Shared::Empty).map_err(VfsError::log_errno)?;
            let tmp = self.temp_name();
            self.placeholder(&tmp).map_err(VfsError::log_errno)?;
            self.rename_over(&tmp, shadow, Replace::Served)
                .map_err(VfsError::log_errno)?;
            let file = fs::File::from(reopen()?);
            return match file.metadata() {
                Ok(m) if m.len() == 0 => Ok(file.into()),
                _ => Err(crate::Errno::EIO),
            };
        }
        if repo.verify(path, entry, &file).is_ok() {
            return Ok(file.into());
        }
        drop(file);
        tracing::debug!(target: "vfs", shadow = %shadow.display(), "shadow file changed: linking it again");
        self.link_verified(repo, path, entry, shadow, Replace::Served)
            .map_err(VfsError::log_errno)?;
        let file = fs::File::from(reopen()?);
        match repo.verify(path, entry, &file) {
            Ok(()) => Ok(file.into()),
            Err(e) => Err(e.errno()),
        }
    }

    /// Copy an open file to `tmp` with `mode` (a private copy: checked when opened).
    fn copy_fd_to(&self, from: &fs::File, tmp: &Path, mode: u32) -> Result<(), VfsError> {
        let r = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(tmp)
            .and_then(|mut out| io::copy(&mut &*from, &mut out))
            .map(drop)
            .map_err(io_err("copy to", tmp));
        if r.is_err() {
            let _ = fs::remove_file(tmp);
        }
        r
    }

    fn copy_to(&self, from: &Path, tmp: &Path, mode: u32) -> Result<(), VfsError> {
        let r = fs::copy(from, tmp)
            .map_err(io_err("copy", from))
            .and_then(|_| {
                fs::set_permissions(tmp, fs::Permissions::from_mode(mode))
                    .map_err(io_err("chmod", tmp))
            });
        if r.is_err() {
            let _ = fs::remove_file(tmp);
        }
        r
    }

    /// Put `tmp` in place as `target` atomically: readers see the old entry or the new one.
    ///
    /// A placeholder is exchanged with `tmp` (`RENAME_EXCHANGE`) rather than renamed over, and
    /// then unlinked from `tmp`: ext4 writes out a file's delayed blocks when it is renamed
    /// over another file (`auto_da_alloc`, for editors that replace a file by rename), so
    /// renaming a freshly downloaded object over its placeholder waited for the disk on every
    /// cold open (6% of a cold `tar`'s samples). Only a placeholder: a file a program may have
    /// open or mapped must keep its name (`… (deleted)`, which perch translates back), and an
    /// exchange would leave it named in `.tmp/`. A file system without the exchange (NFS), or a
    /// target that is gone, gets a plain rename.
    fn rename_over(&self, tmp: &Path, target: &Path, replace: Replace) -> Result<(), VfsError> {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        let exchanged = matches!(replace, Replace::Placeholder)
            && !NO_EXCHANGE.load(Ordering::Relaxed)
            && match renameat_with(CWD, tmp, CWD, target, RenameFlags::EXCHANGE) {
                Ok(()) => true,
                Err(e) => {
                    if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS {
                        NO_EXCHANGE.store(true, Ordering::Relaxed);
                    }
                    false
                }
            };
        let r = if exchanged {
            Ok(())
        } else {
            fs::rename(tmp, target).map_err(io_err("rename into", target))
        };
        // What was replaced; or, after a rename(2) of two links of one inode (which succeeds
        // and does nothing), the temp name.
        let _ = fs::remove_file(tmp);
        r
    }

    /// [`ShadowTree::materialize`] plus an exec bit on the real inode, for `execve`.
    pub fn materialize_exec(
        &self,
        repo: &dyn Repository,
        path: &[u8],
        entry: &Entry,
    ) -> Result<PathBuf, VfsError> {
        let target = self.materialize(repo, path, entry)?;
        let meta = fs::metadata(&target).map_err(io_err("stat", &target))?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o111 == 0o111 {
            return Ok(target);
        }
        // A placeholder's inode is shared with every other placeholder: copy it instead.
        if meta.len() == 0
            || fs::set_permissions(&target, fs::Permissions::from_mode(mode | 0o555)).is_err()
        {
            let tmp = self.temp_name();
            self.copy_to(&target, &tmp, 0o555)?;
            self.rename_over(&tmp, &target, Replace::Served)?;
        }
        Ok(target)
    }

    /// The directory opening the mount point gives: one empty directory per configured
    /// repository, named after the set so differently configured processes do not clash.
    pub fn mount_dir(&self, configured: &[String]) -> Result<PathBuf, VfsError> {
        let mut names: Vec<&String> = configured
            .iter()
            .filter(|n| valid_name(n.as_bytes()))
            .collect();
        names.sort();
        names.dedup();
        let joined: Vec<u8> = names.iter().flat_map(|n| n.bytes().chain([0])).collect();
        let dir = self
            .root
            .join(format!("{ROOT_PREFIX}{:016x}", fnv64(&joined)));
        let key = (PathBuf::from(ROOT_PREFIX), joined);
        if self.is_complete(&key) {
            return Ok(dir);
        }
        match Self::non_empty(&dir)? {
            Some(true) => {}
            Some(false) if names.is_empty() => {}
            None if names.is_empty() => match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create", &dir)(e)),
            },
            _ => self.publish_dir(&dir, |tmp| {
                for n in &names {
                    let p = tmp.join(n.as_str());
                    fs::create_dir(&p).map_err(io_err("create", &p))?;
                }
                Ok(())
            })?,
        }
        self.mark_complete(key);
        Ok(dir)
    }

    /// Reverse translation: the virtual path (`<mountpoint>/<fqrn>/a/b`) of a path inside the
    /// shadow tree, `None` if `shadow` is not a shadow object (outside the tree, the staging
    /// area, the tree root itself).
    pub fn to_virtual(&self, shadow: &[u8], mountpoint: &[u8]) -> Option<Vec<u8>> {
        let root = self.root.as_os_str().as_bytes();
        let rest = shadow.strip_prefix(root)?.strip_prefix(b"/")?;
        let (first, tail) = match rest.iter().position(|&b| b == b'/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, &b""[..]),
        };
        let mut out = mountpoint.to_vec();
        if first.starts_with(ROOT_PREFIX.as_bytes()) {
            out.extend_from_slice(tail);
            return Some(out);
        }
        let at = first.iter().rposition(|&b| b == b'@')?;
        if at == 0 {
            return None;
        }
        out.push(b'/');
        out.extend_from_slice(&first[..at]);
        out.extend_from_slice(tail);
        Some(out)
    }
}

/// This host's name, with `.` replaced (it ends the owner part of a staging name).
fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().replace('.', "_"))
        .unwrap_or_else(|_| "localhost".into())
}

fn open_nofollow(p: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(p)
}

/// `"/a/b/c"` → (`"/a/b"`, `"c"`); `"/c"` → (`""`, `"c"`).
pub(crate) fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

trait IntoVecBytes {
    fn into_vec_bytes(self) -> Vec<u8>;
}

impl IntoVecBytes for std::ffi::OsString {
    fn into_vec_bytes(self) -> Vec<u8> {
        std::os::unix::ffi::OsStringExt::into_vec(self)
    }
}

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
