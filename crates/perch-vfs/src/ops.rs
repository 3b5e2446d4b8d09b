//! The operations the syscall glue calls on resolved paths, each returning what to do, with the
//! errno Linux gives on a read-only file system (the order of checks follows `fs/namei.c`,
//! `fs/open.c`, `fs/xattr.c`; see each function).

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::layout::{self, Stat, StatFs, Statx, StatxTimestamp};
use crate::resolve::{Last, ParentResolved};
use crate::{Cred, Entry, Errno, Kind, Lookup, Namespace, Repository, Resolved};

/// What the syscall glue should do.
#[derive(Debug)]
pub enum Outcome<T> {
    /// Not virtual and not rewritten: let the kernel run the syscall unchanged.
    Continue,
    /// Not virtual, but the program's path would resolve differently (a repository symlink led
    /// out of `/cvmfs`, or the base is virtual): do the call on this host path instead.
    Host(PathBuf),
    /// Virtual: this is the result.
    Value(T),
    /// Fail with this errno.
    Err(Errno),
}

impl<T> Outcome<T> {
    /// The value, if any.
    pub fn value(self) -> Option<T> {
        match self {
            Outcome::Value(v) => Some(v),
            _ => None,
        }
    }

    /// The errno, if any.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Outcome::Err(e) => Some(*e),
            _ => None,
        }
    }
}

/// What a two-path call (`rename`, `link`) should do.
#[derive(Debug, PartialEq, Eq)]
pub enum PairOutcome {
    /// Both host, neither rewritten: continue unchanged.
    Continue,
    /// Both host, at least one rewritten: do the call on these host paths.
    Host(PathBuf, PathBuf),
    /// Fail with this errno.
    Err(Errno),
}

/// A real file descriptor for a virtual object, to install in the program (seccomp `ADDFD`).
#[derive(Debug)]
pub struct OpenedFd {
    /// Opened by us with `O_CLOEXEC` and the program's status flags (`O_NONBLOCK`, `O_DIRECT`,
    /// `O_APPEND`, `O_SYNC`, ...), read-only or `O_PATH`.
    pub fd: OwnedFd,
    /// The program asked for `O_CLOEXEC`: the injector must pass it (`ADDFD` `newfd_flags`).
    pub cloexec: bool,
    /// The shadow object the fd refers to.
    pub shadow: PathBuf,
}

/// [`Namespace::open`]'s outcome.
pub type OpenOutcome = Outcome<OpenedFd>;

/// Answer of `getxattr`/`listxattr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrReply {
    /// The buffer size was 0: the size the value needs.
    Size(usize),
    /// The value (or the NUL-terminated names) to copy into the program's buffer.
    Data(Vec<u8>),
}

/// Write-family calls that create a name (`filename_create` in the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOp {
    /// `mkdir`, `mkdirat`
    Mkdir,
    /// `mknod`, `mknodat`
    Mknod,
    /// `symlink`, `symlinkat` (the link path)
    Symlink,
}

/// Write-family calls that remove a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveOp {
    /// `unlink`, `unlinkat`
    Unlink,
    /// `rmdir`, `unlinkat(AT_REMOVEDIR)`
    Rmdir,
}

/// Write-family calls on an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModifyOp {
    /// `chmod` family
    Chmod,
    /// `chown` family
    Chown,
    /// `utime`, `utimes`, `futimesat`, `utimensat`
    Utimes,
    /// `truncate`
    Truncate,
    /// `setxattr` family
    SetXattr,
    /// `removexattr` family
    RemoveXattr,
}

/// `XATTR_SIZE_MAX` / `XATTR_LIST_MAX`.
pub const XATTR_SIZE_MAX: usize = 65536;
/// `FUSE_SUPER_MAGIC`: what the real client's mounts report.
pub const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
/// `AUTOFS_SUPER_MAGIC`: what `/cvmfs` itself reports with the real client's autofs setup.
pub const AUTOFS_SUPER_MAGIC: i64 = 0x0187;
/// `statx` mask perch fills: `STATX_BASIC_STATS | STATX_MNT_ID`.
pub const STATX_MASK: u32 = 0x7ff | 0x1000;
const STATX_ATTR_AUTOMOUNT: u64 = 0x1000;
const STATX_ATTR_MOUNT_ROOT: u64 = 0x2000;
const STATX_ATTR_DAX: u64 = 0x0020_0000;
const ST_RDONLY: i64 = 1;
const ST_NOSUID: i64 = 2;
const ST_NODEV: i64 = 4;
const ST_RELATIME: i64 = 4096;

fn host<T>(path: &std::path::Path, rewritten: bool) -> Outcome<T> {
    if rewritten {
        Outcome::Host(path.to_owned())
    } else {
        Outcome::Continue
    }
}

/// Split a resolved path: host and errors become their outcome, virtual objects are returned.
macro_rules! virtual_or_return {
    ($r:expr) => {
        match $r {
            Resolved::Host { path, rewritten } => return host(path, *rewritten),
            Resolved::Missing { errno, .. } => return Outcome::Err(*errno),
            Resolved::Virtual { repo, path, entry } => (repo.as_deref(), path.as_slice(), entry),
        }
    };
}

fn may_write_mask(flags: i32) -> bool {
    let acc = flags & libc::O_ACCMODE;
    acc != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

fn read_only_kind(kind: Kind) -> bool {
    matches!(kind, Kind::File | Kind::Dir | Kind::Symlink)
}

impl Namespace {
    /// `open`/`openat`/`openat2`/`creat` on a resolved path (resolve it with
    /// [`Lookup::for_open`]). Order of checks as in `do_open`/`may_open`:
    /// `O_PATH` ignores everything but `O_DIRECTORY`/`O_NOFOLLOW`/`O_CLOEXEC` and returns an fd
    /// even for a symlink; `O_CREAT` on a missing name in a virtual directory → `EROFS`;
    /// `O_TMPFILE` → `EINVAL` without write access, else `EROFS`; `O_CREAT|O_EXCL` on an
    /// existing name → `EEXIST`; `O_CREAT` on a directory → `EISDIR`; `O_TRUNC` on a regular
    /// file → `EROFS`; a symlink (`O_NOFOLLOW`) → `ELOOP`; a directory with write access →
    /// `EISDIR`; devices → `EACCES` (the client mounts `nodev`); write access on a file →
    /// `EROFS`; missing permission → `EACCES`; sockets → `ENXIO`; FIFOs → `EACCES` (not
    /// emulated). Otherwise the shadow object is materialized and opened read-only.
    pub fn open(&self, resolved: &Resolved, flags: i32, cred: Option<&Cred>) -> OpenOutcome {
        let o_path = flags & libc::O_PATH != 0;
        if let Resolved::Missing {
            errno,
            in_virtual_dir,
        } = resolved
        {
            let creating = flags & libc::O_CREAT != 0 && !o_path;
            if creating && *in_virtual_dir && *errno == Errno::ENOENT {
                return Outcome::Err(Errno::EROFS);
            }
            return Outcome::Err(*errno);
        }
        let (repo, path, entry) = virtual_or_return!(resolved);
        if !o_path {
            if flags & libc::O_TMPFILE == libc::O_TMPFILE {
                let acc = flags & libc::O_ACCMODE;
                return Outcome::Err(if acc == libc::O_RDONLY {
                    Errno::EINVAL
                } else {
                    Errno::EROFS
                });
            }
            if flags & libc::O_CREAT != 0 {
                if flags & libc::O_EXCL != 0 {
                    return Outcome::Err(Errno::EEXIST);
                }
                if entry.is_dir() {
                    return Outcome::Err(Errno::EISDIR);
                }
            }
            if entry.kind == Kind::File && flags & libc::O_TRUNC != 0 {
                return Outcome::Err(Errno::EROFS);
            }
            let write = may_write_mask(flags);
            match entry.kind {
                Kind::Symlink => return Outcome::Err(Errno::ELOOP),
                Kind::Dir if write => return Outcome::Err(Errno::EISDIR),
                Kind::CharDev | Kind::BlockDev => return Outcome::Err(Errno::EACCES),
                _ => {}
            }
            if write && read_only_kind(entry.kind) {
                return Outcome::Err(Errno::EROFS);
            }
            if let Some(cred) = cred {
                let mut mask = 0;
                if flags & libc::O_ACCMODE != libc::O_WRONLY {
                    mask |= 4;
                }
                if write {
                    mask |= 2;
                }
                if !cred.permits(entry, mask) {
                    return Outcome::Err(Errno::EACCES);
                }
            }
            match entry.kind {
                Kind::Socket => return Outcome::Err(Errno::ENXIO),
                Kind::Fifo => return Outcome::Err(Errno::EACCES),
                _ => {}
            }
        }
        let shadow = match repo {
            None => self.shadow_path(resolved),
            Some(repo) => {
                let r = if entry.kind == Kind::File {
                    self.shadow().materialize(repo, path, entry)
                } else {
                    self.shadow().entry_path(repo, path, entry)
                };
                r.map_err(crate::VfsError::log_errno)
            }
        };
        let shadow = match shadow {
            Ok(s) => s,
            Err(e) => return Outcome::Err(e),
        };
        let mut real = libc::O_CLOEXEC | libc::O_NOFOLLOW;
        if o_path {
            real |= libc::O_PATH | (flags & libc::O_DIRECTORY);
        } else {
            real |= libc::O_RDONLY
                | (flags
                    & (libc::O_NONBLOCK
                        | libc::O_DIRECTORY
                        | libc::O_DIRECT
                        | libc::O_APPEND
                        | libc::O_SYNC
                        | libc::O_DSYNC
                        | libc::O_NOCTTY
                        | libc::O_LARGEFILE));
        }
        let oflags = rustix::fs::OFlags::from_bits_retain(u32::from_ne_bytes(real.to_ne_bytes()));
        match rustix::fs::open(&shadow, oflags, rustix::fs::Mode::empty()) {
            Ok(fd) if !o_path && entry.kind == Kind::File => {
                let reopen = || {
                    rustix::fs::open(&shadow, oflags, rustix::fs::Mode::empty())
                        .map_err(|e| Errno::new(e.raw_os_error()))
                };
                match self
                    .shadow()
                    .verified(repo, path, entry, fd, &shadow, reopen)
                {
                    Ok(fd) => Outcome::Value(OpenedFd {
                        fd,
                        cloexec: flags & libc::O_CLOEXEC != 0,
                        shadow,
                    }),
                    Err(e) => Outcome::Err(e),
                }
            }
            Ok(fd) => Outcome::Value(OpenedFd {
                fd,
                cloexec: flags & libc::O_CLOEXEC != 0,
                shadow,
            }),
            Err(e) => {
                tracing::warn!(target: "vfs", shadow = %shadow.display(), error = %e,
                    "cannot open shadow object");
                Outcome::Err(if e == rustix::io::Errno::NOENT {
                    Errno::EIO
                } else {
                    Errno::new(e.raw_os_error())
                })
            }
        }
    }

    /// `struct stat` of a virtual object from its catalog entry: `st_dev` per repository
    /// ([`Namespace::device`]), `st_ino` = the client's inode, `st_blocks` = `1 + size/512`,
    /// `st_blksize` 4096, atime = ctime = mtime.
    pub fn stat_entry(&self, repo: Option<&dyn Repository>, entry: &Entry) -> Stat {
        let size = layout::shown_size(entry);
        Stat {
            st_dev: self.device(repo),
            st_ino: entry.inode,
            st_nlink: u64::from(entry.nlink),
            st_mode: entry.mode,
            st_uid: entry.uid,
            st_gid: entry.gid,
            st_rdev: entry.rdev,
            st_size: i64::try_from(size).unwrap_or(i64::MAX),
            st_blksize: 4096,
            st_blocks: i64::try_from(layout::blocks(size)).unwrap_or(i64::MAX),
            st_atime: entry.mtime,
            st_atime_nsec: i64::from(entry.mtime_ns),
            st_mtime: entry.mtime,
            st_mtime_nsec: i64::from(entry.mtime_ns),
            st_ctime: entry.mtime,
            st_ctime_nsec: i64::from(entry.mtime_ns),
        }
    }

    /// `stat`/`lstat`/`fstat`/`newfstatat` (resolve with `follow` as the call says).
    pub fn stat(&self, resolved: &Resolved) -> Outcome<Stat> {
        let (repo, _, entry) = virtual_or_return!(resolved);
        Outcome::Value(self.stat_entry(repo, entry))
    }

    /// `statx`: the basic stats plus the mount id (`STATX_BASIC_STATS | STATX_MNT_ID`, no
    /// birth time), and `STATX_ATTR_MOUNT_ROOT` on a repository root and on the mount point, as
    /// the kernel sets it for mount roots.
    pub fn statx(&self, resolved: &Resolved) -> Outcome<Statx> {
        let (repo, path, entry) = virtual_or_return!(resolved);
        let st = self.stat_entry(repo, entry);
        let ts = StatxTimestamp {
            tv_sec: entry.mtime,
            tv_nsec: entry.mtime_ns,
        };
        let (dev_major, dev_minor) = layout::dev_split(st.st_dev);
        let (rdev_major, rdev_minor) = layout::dev_split(entry.rdev);
        let mount_root = path.is_empty();
        Outcome::Value(Statx {
            stx_mask: STATX_MASK,
            stx_blksize: 4096,
            stx_attributes: if mount_root { STATX_ATTR_MOUNT_ROOT } else { 0 },
            stx_nlink: entry.nlink,
            stx_uid: entry.uid,
            stx_gid: entry.gid,
            stx_mode: u16::try_from(entry.mode & 0xffff).unwrap_or(0),
            stx_ino: entry.inode,
            stx_size: layout::shown_size(entry),
            stx_blocks: layout::blocks(layout::shown_size(entry)),
            stx_attributes_mask: STATX_ATTR_AUTOMOUNT | STATX_ATTR_MOUNT_ROOT | STATX_ATTR_DAX,
            stx_atime: ts,
            stx_btime: StatxTimestamp::default(),
            stx_ctime: ts,
            stx_mtime: ts,
            stx_rdev_major: rdev_major,
            stx_rdev_minor: rdev_minor,
            stx_dev_major: dev_major,
            stx_dev_minor: dev_minor,
            stx_mnt_id: 0x7000_0000 | u64::from(dev_minor),
        })
    }

    /// `access`/`faccessat`/`faccessat2` (`mode` bits `R_OK|W_OK|X_OK`, 0 = `F_OK`): `EINVAL` for
    /// other bits, `W_OK` on a file, directory or symlink → `EROFS` (before permission bits, as
    /// `sb_permission` comes first), then `generic_permission` for `cred`.
    pub fn access(&self, resolved: &Resolved, mode: i32, cred: &Cred) -> Outcome<()> {
        if mode & !7 != 0 {
            return Outcome::Err(Errno::EINVAL);
        }
        let (_, _, entry) = virtual_or_return!(resolved);
        let mask = mode.unsigned_abs() & 7;
        if mask & 2 != 0 && read_only_kind(entry.kind) {
            return Outcome::Err(Errno::EROFS);
        }
        if mask != 0 && !cred.permits(entry, mask) {
            return Outcome::Err(Errno::EACCES);
        }
        Outcome::Value(())
    }

    /// `readlink`/`readlinkat` (resolve without following): the expanded target of a symlink,
    /// `EINVAL` for anything else. The caller truncates to its buffer size without error (and
    /// gives `EINVAL` for a size ≤ 0 before calling), as the kernel does.
    pub fn readlink(&self, resolved: &Resolved) -> Outcome<Vec<u8>> {
        let (_, _, entry) = virtual_or_return!(resolved);
        match (&entry.kind, &entry.symlink) {
            (Kind::Symlink, Some(t)) => Outcome::Value(t.clone()),
            _ => Outcome::Err(Errno::EINVAL),
        }
    }

    /// `getxattr`/`lgetxattr`/`fgetxattr` with a buffer of `size` bytes. As the kernel: a name
    /// of 0 or more than 255 bytes → `ERANGE`; the mount point (autofs, no xattr handlers) →
    /// `EOPNOTSUPP`; `user.*` on anything but files and directories → `ENODATA`; `trusted.*`
    /// without privilege → `ENODATA`; no read permission → `EACCES`; unknown → `ENODATA`;
    /// `size == 0` → the length; too small → `ERANGE` (`E2BIG` if the value exceeds
    /// `XATTR_SIZE_MAX`).
    pub fn getxattr(
        &self,
        resolved: &Resolved,
        name: &[u8],
        size: usize,
        cred: Option<&Cred>,
    ) -> Outcome<XattrReply> {
        if name.is_empty() || name.len() > 255 {
            return Outcome::Err(Errno::ERANGE);
        }
        let (repo, path, entry) = virtual_or_return!(resolved);
        let Some(repo) = repo else {
            return Outcome::Err(Errno::EOPNOTSUPP);
        };
        if name.starts_with(b"user.") && !matches!(entry.kind, Kind::File | Kind::Dir) {
            return Outcome::Err(Errno::ENODATA);
        }
        if name.starts_with(b"trusted.") && !cred.is_some_and(|c| c.privileged) {
            return Outcome::Err(Errno::ENODATA);
        }
        if let Some(cred) = cred {
            if !cred.permits(entry, 4) {
                return Outcome::Err(Errno::EACCES);
            }
        }
        match repo.getxattr(path, entry, name) {
            Err(e) => Outcome::Err(e.errno()),
            Ok(None) => Outcome::Err(Errno::ENODATA),
            Ok(Some(v)) => sized_reply(v, size),
        }
    }

    /// `listxattr`/`llistxattr`/`flistxattr` with a buffer of `size` bytes: the names, each
    /// NUL-terminated; the mount point has none. `size == 0` → the length; too small →
    /// `ERANGE` (`E2BIG` beyond `XATTR_LIST_MAX`).
    pub fn listxattr(&self, resolved: &Resolved, size: usize) -> Outcome<XattrReply> {
        let (repo, path, entry) = virtual_or_return!(resolved);
        let names = match repo {
            None => Vec::new(),
            Some(repo) => match repo.listxattr(path, entry) {
                Ok(n) => n,
                Err(e) => return Outcome::Err(e.errno()),
            },
        };
        let mut data = Vec::new();
        for n in names {
            data.extend_from_slice(&n);
            data.push(0);
        }
        sized_reply(data, size)
    }

    /// `statfs`/`fstatfs`: a read-only FUSE file system for repositories (as the real client;
    /// `ST_RDONLY|ST_NOSUID|ST_NODEV|ST_RELATIME`), an autofs one for the mount point; sizes
    /// from the cache's file system (the real client reports its cache too); `f_fsid` from the
    /// device number.
    pub fn statfs(&self, resolved: &Resolved) -> Outcome<StatFs> {
        let (repo, _, _) = virtual_or_return!(resolved);
        let dev = self.device(repo);
        let (major, minor) = layout::dev_split(dev);
        let mut out = StatFs {
            f_type: if repo.is_some() {
                FUSE_SUPER_MAGIC
            } else {
                AUTOFS_SUPER_MAGIC
            },
            f_bsize: 4096,
            f_fsid: [
                i32::try_from(minor).unwrap_or(0),
                i32::try_from(major).unwrap_or(0),
            ],
            f_namelen: 255,
            f_frsize: 4096,
            f_flags: ST_RDONLY | ST_NOSUID | ST_NODEV | ST_RELATIME,
            ..StatFs::default()
        };
        if repo.is_some() {
            if let Ok(v) = rustix::fs::statvfs(self.shadow().root()) {
                let scale = |n: u64| n.saturating_mul(v.f_frsize) / 4096;
                out.f_blocks = scale(v.f_blocks);
                out.f_bfree = scale(v.f_bfree);
                out.f_bavail = scale(v.f_bavail);
                out.f_files = v.f_files;
                out.f_ffree = v.f_ffree;
            }
        }
        Outcome::Value(out)
    }

    /// The real file `execve`/`execveat` must run instead of a virtual path (resolved with
    /// follow): only regular files; `EACCES` for directories, other kinds, or without exec
    /// permission for `cred` (without `cred`: without any exec bit). The shadow file gets its
    /// content and an exec bit.
    pub fn exec_path(&self, resolved: &Resolved, cred: Option<&Cred>) -> Outcome<PathBuf> {
        let (repo, path, entry) = virtual_or_return!(resolved);
        let (Some(repo), Kind::File) = (repo, entry.kind) else {
            return Outcome::Err(Errno::EACCES);
        };
        let allowed = match cred {
            Some(c) => c.permits(entry, 1),
            None => entry.mode & 0o111 != 0,
        };
        if !allowed {
            return Outcome::Err(Errno::EACCES);
        }
        match self.shadow().materialize_exec(repo, path, entry) {
            Ok(p) => Outcome::Value(p),
            Err(e) => Outcome::Err(e.log_errno()),
        }
    }

    /// The real directory `chdir` must enter instead of a virtual path: `ENOTDIR` for
    /// non-directories, `EACCES` without search permission; the directory is filled.
    pub fn chdir_path(&self, resolved: &Resolved, cred: Option<&Cred>) -> Outcome<PathBuf> {
        let (_, _, entry) = virtual_or_return!(resolved);
        if !entry.is_dir() {
            return Outcome::Err(Errno::ENOTDIR);
        }
        if cred.is_some_and(|c| !c.permits(entry, 1)) {
            return Outcome::Err(Errno::EACCES);
        }
        match self.shadow_path(resolved) {
            Ok(p) => Outcome::Value(p),
            Err(e) => Outcome::Err(e),
        }
    }

    /// Does `name` exist in the virtual directory `parent`?
    fn child_exists(&self, parent: &Resolved, name: &[u8]) -> Result<bool, Errno> {
        if name.len() > crate::resolve::NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        match parent {
            Resolved::Virtual { repo: None, .. } => match std::str::from_utf8(name) {
                Ok(fqrn) => self.mount(fqrn).map(|r| r.is_some()).map_err(|e| e.errno()),
                Err(_) => Ok(false),
            },
            Resolved::Virtual {
                repo: Some(repo),
                path,
                ..
            } => {
                let mut child = path.clone();
                child.push(b'/');
                child.extend_from_slice(name);
                repo.lookup(&child)
                    .map(|e| e.is_some())
                    .map_err(|e| e.errno())
            }
            _ => Err(Errno::EIO),
        }
    }

    /// `mkdir`, `mknod`, `symlink` (the link path) — `filename_create`: `.`/`..`/`/` or an
    /// existing name → `EEXIST`; a missing name with a trailing slash (not `mkdir`) →
    /// `ENOENT`; else `EROFS`. The mount point itself → `EEXIST`.
    pub fn create(&self, req: &Lookup<'_>, op: CreateOp) -> Outcome<()> {
        match self.resolve_parent(req) {
            ParentResolved::Err(e) => Outcome::Err(e),
            ParentResolved::Host { path, rewritten } => host(&path, rewritten),
            ParentResolved::MountPoint => Outcome::Err(Errno::EEXIST),
            ParentResolved::Virtual {
                parent,
                last,
                trailing_slash,
            } => {
                let Last::Name(name) = last else {
                    return Outcome::Err(Errno::EEXIST);
                };
                match self.child_exists(&parent, &name) {
                    Err(e) => Outcome::Err(e),
                    Ok(true) => Outcome::Err(Errno::EEXIST),
                    Ok(false) if trailing_slash && op != CreateOp::Mkdir => {
                        Outcome::Err(Errno::ENOENT)
                    }
                    Ok(false) => Outcome::Err(Errno::EROFS),
                }
            }
        }
    }

    /// `unlink`, `rmdir`: the kernel checks the last component's type, then takes write access
    /// on the mount (`EROFS`) *before* looking the name up, so a missing name in a virtual
    /// directory is `EROFS`, not `ENOENT`. `rmdir`: `..` → `ENOTEMPTY`, `.` → `EINVAL`, `/` →
    /// `EBUSY`; `unlink` of those → `EISDIR`. The mount point: `rmdir` → `EBUSY`, `unlink` →
    /// `EISDIR`.
    pub fn remove(&self, req: &Lookup<'_>, op: RemoveOp) -> Outcome<()> {
        match self.resolve_parent(req) {
            ParentResolved::Err(e) => Outcome::Err(e),
            ParentResolved::Host { path, rewritten } => host(&path, rewritten),
            ParentResolved::MountPoint => Outcome::Err(match op {
                RemoveOp::Rmdir => Errno::EBUSY,
                RemoveOp::Unlink => Errno::EISDIR,
            }),
            ParentResolved::Virtual { last, .. } => Outcome::Err(match (op, last) {
                (_, Last::Name(_)) => Errno::EROFS,
                (RemoveOp::Unlink, _) => Errno::EISDIR,
                (RemoveOp::Rmdir, Last::DotDot) => Errno::ENOTEMPTY,
                (RemoveOp::Rmdir, Last::Dot) => Errno::EINVAL,
                (RemoveOp::Rmdir, Last::Root) => Errno::EBUSY,
            }),
        }
    }

    /// `chmod`, `chown`, `utimensat`, `truncate`, `setxattr`, `removexattr` on an existing
    /// object (and their `f*` forms via the fd's virtual path): `EROFS`, except `truncate` of a
    /// directory → `EISDIR` and of a non-regular file → `EINVAL` (`vfs_truncate` order).
    pub fn modify(&self, resolved: &Resolved, op: ModifyOp) -> Outcome<()> {
        let (_, _, entry) = virtual_or_return!(resolved);
        if op == ModifyOp::Truncate {
            if entry.is_dir() {
                return Outcome::Err(Errno::EISDIR);
            }
            if entry.kind != Kind::File {
                return Outcome::Err(Errno::EINVAL);
            }
        }
        Outcome::Err(Errno::EROFS)
    }

    /// `rename`, `renameat`, `renameat2` (`flags`: `RENAME_*`, validated by the caller). As
    /// `do_renameat2`: parents resolved first (their errors win), then different mounts →
    /// `EXDEV` (host ↔ `/cvmfs` ↔ each repository: `mv` then copies and fails on unlink with
    /// `EROFS`, as with the real client), `.`/`..` → `EBUSY` (new: `EEXIST` with
    /// `RENAME_NOREPLACE`), then `EROFS`. The mount point itself → `EBUSY`.
    pub fn rename(&self, old: &Lookup<'_>, new: &Lookup<'_>, flags: u32) -> PairOutcome {
        let po = self.resolve_parent(old);
        if let ParentResolved::Err(e) = po {
            return PairOutcome::Err(e);
        }
        let pn = self.resolve_parent(new);
        if let ParentResolved::Err(e) = pn {
            return PairOutcome::Err(e);
        }
        if matches!(po, ParentResolved::MountPoint) || matches!(pn, ParentResolved::MountPoint) {
            return PairOutcome::Err(Errno::EBUSY);
        }
        match (&po, &pn) {
            (
                ParentResolved::Host {
                    path: a,
                    rewritten: ra,
                },
                ParentResolved::Host {
                    path: b,
                    rewritten: rb,
                },
            ) => {
                if *ra || *rb {
                    PairOutcome::Host(a.clone(), b.clone())
                } else {
                    PairOutcome::Continue
                }
            }
            (
                ParentResolved::Virtual {
                    parent: pa,
                    last: la,
                    ..
                },
                ParentResolved::Virtual {
                    parent: pb,
                    last: lb,
                    ..
                },
            ) => {
                if mount_key(pa) != mount_key(pb) {
                    return PairOutcome::Err(Errno::EXDEV);
                }
                if !matches!(la, Last::Name(_)) {
                    return PairOutcome::Err(Errno::EBUSY);
                }
                if !matches!(lb, Last::Name(_)) {
                    return PairOutcome::Err(if flags & libc::RENAME_NOREPLACE != 0 {
                        Errno::EEXIST
                    } else {
                        Errno::EBUSY
                    });
                }
                PairOutcome::Err(Errno::EROFS)
            }
            _ => PairOutcome::Err(Errno::EXDEV),
        }
    }

    /// `link`, `linkat` (`old` resolved with `follow` = `AT_SYMLINK_FOLLOW`): the old path's
    /// errors first, then the new name as in [`Namespace::create`] (`EEXIST`, `ENOENT` for a
    /// trailing slash, `EROFS`), then different mounts → `EXDEV`.
    pub fn link(&self, old: &Lookup<'_>, new: &Lookup<'_>) -> PairOutcome {
        let ro = self.resolve(old);
        if let Resolved::Missing { errno, .. } = ro {
            return PairOutcome::Err(errno);
        }
        match self.resolve_parent(new) {
            ParentResolved::Err(e) => PairOutcome::Err(e),
            ParentResolved::MountPoint => PairOutcome::Err(Errno::EEXIST),
            ParentResolved::Virtual {
                parent,
                last,
                trailing_slash,
            } => {
                let Last::Name(name) = last else {
                    return PairOutcome::Err(Errno::EEXIST);
                };
                PairOutcome::Err(match self.child_exists(&parent, &name) {
                    Err(e) => e,
                    Ok(true) => Errno::EEXIST,
                    Ok(false) if trailing_slash => Errno::ENOENT,
                    Ok(false) => Errno::EROFS,
                })
            }
            ParentResolved::Host {
                path: new_path,
                rewritten: new_rw,
            } => match ro {
                Resolved::Host {
                    path: old_path,
                    rewritten: old_rw,
                } => {
                    if old_rw || new_rw {
                        PairOutcome::Host(old_path, new_path)
                    } else {
                        PairOutcome::Continue
                    }
                }
                _ => PairOutcome::Err(Errno::EXDEV),
            },
        }
    }
}

fn mount_key(r: &Resolved) -> Option<String> {
    match r {
        Resolved::Virtual { repo, .. } => Some(repo.as_ref().map_or(String::new(), |r| {
            format!("{}@{}", r.fqrn(), r.revision_id())
        })),
        _ => None,
    }
}

fn sized_reply(v: Vec<u8>, size: usize) -> Outcome<XattrReply> {
    let size = size.min(XATTR_SIZE_MAX);
    if size == 0 {
        return Outcome::Value(XattrReply::Size(v.len()));
    }
    if v.len() > size {
        return Outcome::Err(if size >= XATTR_SIZE_MAX {
            Errno::E2BIG
        } else {
            Errno::ERANGE
        });
    }
    Outcome::Value(XattrReply::Data(v))
}
