//! perch's cache, out of the program's reach in the intercepting modes (issue 9, DESIGN.md §4a).
//!
//! A program under `perch run` runs with its user's uid, the owner of the cache: the kernel
//! alone would let it chmod an object and write it, rename a forged file over it, or append to
//! the user's trust index. Fuse mode shows the cache read-only (a bind mount); in notify and
//! ptrace modes the calls that could change a file or a directory entry there are answered here.
//!
//! A check of the program's path followed by `CONTINUE` would be a check of nothing: the kernel
//! reads the path again, after the program (another thread) may have swapped a symlink in it.
//! So perch resolves the path once, itself, from the program's own cwd or dirfd (an `O_PATH` fd
//! of the same object, [`Caller::open_fd_unverified`]) with `RESOLVE_NO_MAGICLINKS`, checks the
//! object it reached, and makes the call on that object (`/proc/self/fd/N`, `*at(fd, …)`),
//! never on the path again. Files perch creates get the program's umask (each answering thread
//! has its own: `unshare(CLONE_FS)`).
//!
//! What is refused with `EACCES`: opening for writing, truncating, chmod and setting extended
//! attributes (ACLs) of a file in a protected directory; creating, removing, renaming or linking
//! an entry in one, or linking one of its files elsewhere; renaming or removing a directory (or
//! symlink) on the way to one. chown and timestamps are checked but left to the kernel (they
//! grant no write; a change shows in ctime, which makes perch hash the file again).
//!
//! A program whose credentials are not perch's (one started as root that dropped them, one with
//! capabilities in a user namespace of its own) gets the same checks, and then the kernel makes
//! the call with its own credentials: for it, the check and the call are not one step.
//!
//! `/proc/self`, `/proc/thread-self`, `/dev/fd` and `/dev/std{in,out,err}` name the program's
//! own objects; perch opens them through the program's `/proc/<tid>/…`. A write through another
//! magic link (a symlink the program made to `/proc/self/fd/N`) is refused: perch would reach
//! its own fd there. FIFOs, sockets and devices continue (none is in a cache; a program that
//! swaps one for a symlink to a cache file then meets the file's permissions: objects have no
//! write bit).

use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use perch_syscalls::{DirFd, OpenHow};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, CWD};

use super::Caller;
use crate::Errno;

/// Directories no program may change: the cache root, the repositories' caches, the alien
/// cache. Their canonical paths and devices, and the identity of every directory or symlink
/// on the way to them.
#[derive(Debug, Default, Clone)]
pub struct Protected {
    dirs: Vec<Vec<u8>>,
    devs: Vec<u64>,
    on_the_way: Vec<(u64, u64)>,
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::new(e.raw_os_error())
}

impl Protected {
    /// Protects `dirs`. One that does not exist yet (a repository's cache, made at its first
    /// mount) is protected by the path it will have: its nearest existing ancestor's canonical
    /// path and device.
    pub fn new(dirs: &[PathBuf]) -> Protected {
        let mut p = Protected::default();
        for d in dirs {
            let Some(canon) = would_be(d) else {
                continue;
            };
            let Some(st) = canon.ancestors().find_map(|a| rustix::fs::stat(a).ok()) else {
                continue;
            };
            // Every component of the configured and of the canonical path (a symlink on the
            // way could be pointed elsewhere, a directory renamed and a forged cache put in
            // its place).
            for path in [d.as_path(), canon.as_path()] {
                for a in path.ancestors().filter(|a| !a.as_os_str().is_empty()) {
                    if let Ok(s) = rustix::fs::lstat(a) {
                        let id = (s.st_dev, s.st_ino);
                        if !p.on_the_way.contains(&id) {
                            p.on_the_way.push(id);
                        }
                    }
                }
            }
            if !p.devs.contains(&st.st_dev) {
                p.devs.push(st.st_dev);
            }
            let mut b = canon.as_os_str().as_bytes().to_vec();
            if b != b"/" {
                b.push(b'/');
            }
            p.dirs.push(b);
        }
        p
    }

    /// True when nothing is protected (no guard: every host call continues).
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Whether the object behind `fd` (perch's) lies inside a protected directory, or is one.
    fn holds(&self, fd: BorrowedFd<'_>) -> Result<bool, Errno> {
        let st = rustix::fs::fstat(fd).map_err(errno)?;
        if !self.devs.contains(&st.st_dev) {
            return Ok(false);
        }
        let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let mut path = rustix::fs::readlink(link.as_str(), Vec::new())
            .map_err(errno)?
            .into_bytes();
        path.push(b'/');
        Ok(self.dirs.iter().any(|d| path.starts_with(d)))
    }

    /// Whether changing the entry `last` of the directory `dir` (renaming or removing it)
    /// could change a protected directory: `dir` is inside one, or the entry itself (not
    /// followed) is a directory or symlink on the way to one.
    fn holds_entry(&self, dir: BorrowedFd<'_>, last: &[u8]) -> Result<bool, Errno> {
        if self.holds(dir)? {
            return Ok(true);
        }
        let Ok(e) = rustix::fs::openat(
            dir,
            os(last),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return Ok(false);
        };
        let st = rustix::fs::fstat(&e).map_err(errno)?;
        Ok(self.on_the_way.contains(&(st.st_dev, st.st_ino)))
    }
}

/// The canonical path `d` has or will have once made (absolute; `None` if no ancestor exists).
fn would_be(d: &Path) -> Option<PathBuf> {
    let mut rest = Vec::new();
    let mut at = d;
    loop {
        if let Ok(c) = std::fs::canonicalize(at) {
            let mut out = c;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return Some(out);
        }
        rest.push(at.file_name()?.to_os_string());
        at = at.parent()?;
    }
}

/// What a program's path reached, as perch resolved it.
enum Reached {
    /// The object (an `O_PATH` fd of perch's).
    Found(OwnedFd),
    /// No such entry: its parent directory, and the last component.
    Missing(OwnedFd, Vec<u8>),
}

/// Where perch starts a program's path: an `O_PATH` fd and the rest of the path; `None` for a
/// `/proc` file perch cannot stand in for (the kernel's own checks of it use the opener).
fn start(c: &dyn Caller, dirfd: DirFd, path: &[u8]) -> Result<Option<(OwnedFd, Vec<u8>)>, Errno> {
    if path.first() != Some(&b'/') {
        let fd = c.open_fd_unverified(dirfd)?;
        c.verify()?;
        return Ok(Some((fd, path.to_vec())));
    }
    let own = match path {
        b"/dev/stdin" => Some(b"/dev/fd/0".to_vec()),
        b"/dev/stdout" => Some(b"/dev/fd/1".to_vec()),
        b"/dev/stderr" => Some(b"/dev/fd/2".to_vec()),
        _ => None,
    };
    let path = own.as_deref().unwrap_or(path);
    if path.starts_with(b"/proc/") || path.starts_with(b"/dev/fd/") {
        let Some(real) = c.proc_real_path(path) else {
            return plain_proc(path);
        };
        // /proc/<tid>/fd/N[/rest] and /proc/<tid>/cwd[/rest]: the magic link, then the rest.
        // Also /proc/<pid>/task/<tid>/fd/N and …/task/<tid>/cwd.
        let real = real.as_os_str().as_bytes();
        let parts: Vec<&[u8]> = real.split(|&b| b == b'/').collect();
        let at = if parts.get(3) == Some(&&b"task"[..]) {
            5
        } else {
            3
        };
        let (link_len, ok) = match parts.get(at) {
            Some(&b"fd") if parts.len() > at + 1 => (at + 2, true),
            Some(&b"cwd") | Some(&b"root") => (at + 1, true),
            _ => (0, false),
        };
        if !ok {
            return plain_proc(real);
        }
        let link = parts[..link_len].join(&b'/');
        let rest = parts[link_len..].join(&b'/');
        let fd = rustix::fs::openat(
            CWD,
            Path::new(std::ffi::OsStr::from_bytes(&link)),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        c.verify()?;
        return Ok(Some((fd, rest)));
    }
    from_root(path).map(Some)
}

/// `/` (`O_PATH`) and an absolute `path` without its leading slashes.
fn from_root(path: &[u8]) -> Result<(OwnedFd, Vec<u8>), Errno> {
    let root =
        rustix::fs::open("/", OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).map_err(errno)?;
    let rest = path
        .iter()
        .position(|&b| b != b'/')
        .map_or(&path[path.len()..], |i| &path[i..]);
    Ok((root, rest.to_vec()))
}

/// A `/proc` path that names no fd, cwd or root of the program: left to the kernel (whose
/// checks of a `/proc` file are the opener's) if it reaches no magic link; `EACCES` if it does
/// (`/proc/self/../self/fd/N`), since perch cannot tell what it leads to for the program.
fn plain_proc(path: &[u8]) -> Result<Option<(OwnedFd, Vec<u8>)>, Errno> {
    let (root, rest) = from_root(path)?;
    match open_path(root.as_fd(), &rest, OFlags::empty(), ResolveFlags::empty()) {
        Err(e) if e == Errno::EACCES => Err(e),
        _ => Ok(None),
    }
}

fn os(p: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(if p.is_empty() {
        b"."
    } else {
        p
    }))
}

/// Whether `openat2` can be used here: Linux 5.6, and not refused by a seccomp profile older
/// than the call (Docker before 20.10 answers unknown calls with `EPERM`).
fn have_openat2() -> bool {
    static HAVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAVE.get_or_init(|| {
        rustix::fs::openat2(
            CWD,
            "/",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_MAGICLINKS,
        )
        .is_ok()
    })
}

/// `openat2(O_PATH)` without magic links; where `openat2` is missing, `openat`.
fn open_path(
    dir: BorrowedFd<'_>,
    p: &[u8],
    more: OFlags,
    resolve: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    let flags = OFlags::PATH | OFlags::CLOEXEC | more;
    if !have_openat2() {
        return rustix::fs::openat(dir, os(p), flags, Mode::empty()).map_err(errno);
    }
    match rustix::fs::openat2(
        dir,
        os(p),
        flags,
        Mode::empty(),
        resolve | ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(e) if e == rustix::io::Errno::NOSYS => {
            rustix::fs::openat(dir, os(p), flags, Mode::empty()).map_err(errno)
        }
        Err(e) if e == rustix::io::Errno::LOOP => {
            // A symlink loop, or a magic link perch would follow as itself.
            match rustix::fs::openat2(dir, os(p), flags, Mode::empty(), resolve) {
                Ok(_) => Err(Errno::EACCES),
                Err(e) => Err(errno(e)),
            }
        }
        r => r.map_err(errno),
    }
}

/// Splits off the last component (`None` for a path ending in `/`, `.` or `..`).
fn split_last(p: &[u8]) -> Option<(&[u8], &[u8])> {
    let (dir, last) = match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (&p[..0], p),
    };
    if last.is_empty() || last == b"." || last == b".." {
        return None;
    }
    Some((
        if dir.is_empty() && p.first() == Some(&b'/') {
            b"/"
        } else {
            dir
        },
        last,
    ))
}

/// Resolves the program's `path` from `dirfd` as the kernel would for it (`follow`: the last
/// component too). `Ok(None)`: a `/proc` file, left to the kernel.
fn reach(
    c: &dyn Caller,
    dirfd: DirFd,
    path: &[u8],
    follow: bool,
    resolve: ResolveFlags,
) -> Result<Option<Reached>, Errno> {
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    let Some((base, rest)) = start(c, dirfd, path)? else {
        return Ok(None);
    };
    if rest.is_empty() {
        // `/proc/self/fd/N`, `/dev/stdout`: the program's object itself.
        return Ok(Some(Reached::Found(base)));
    }
    reach_from(base.as_fd(), &rest, follow, resolve).map(Some)
}

/// `rest` resolved from the directory `base`: the object, or its parent and last component.
fn reach_from(
    base: BorrowedFd<'_>,
    rest: &[u8],
    follow: bool,
    resolve: ResolveFlags,
) -> Result<Reached, Errno> {
    let more = if follow {
        OFlags::empty()
    } else {
        OFlags::NOFOLLOW
    };
    match open_path(base, rest, more, resolve) {
        Ok(fd) => Ok(Reached::Found(fd)),
        Err(e) if e == Errno::ENOENT => {
            let Some((dir, last)) = split_last(rest) else {
                return Err(e);
            };
            let d = open_path(base, dir, OFlags::DIRECTORY, resolve)?;
            Ok(Reached::Missing(d, last.to_vec()))
        }
        Err(e) => Err(e),
    }
}

/// The object a metadata or link call names: the program's fd itself for `AT_EMPTY_PATH`
/// with an empty path, else its path resolved. `Ok(None)`: a `/proc` file, left to the kernel.
fn object(
    c: &dyn Caller,
    dirfd: DirFd,
    path: &[u8],
    follow: bool,
    empty_path: bool,
) -> Result<Option<OwnedFd>, Errno> {
    if empty_path && path.is_empty() {
        let fd = c.open_fd_unverified(dirfd)?;
        c.verify()?;
        return Ok(Some(fd));
    }
    match reach(c, dirfd, path, follow, ResolveFlags::empty())? {
        None => Ok(None),
        Some(Reached::Missing(..)) => Err(Errno::ENOENT),
        Some(Reached::Found(p)) => Ok(Some(p)),
    }
}

/// The parent directory and last component of the program's path, for calls on the entry
/// itself (unlink, rename, mkdir…): `Ok(None)` for a `/proc` path.
fn reach_entry(
    c: &dyn Caller,
    dirfd: DirFd,
    path: &[u8],
) -> Result<Option<(OwnedFd, Vec<u8>)>, Errno> {
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    let Some((base, rest)) = start(c, dirfd, path)? else {
        return Ok(None);
    };
    // `a/b/` names the entry `b` (mkdir, rmdir, rename of directories).
    let trimmed = match rest.iter().rposition(|&b| b != b'/') {
        Some(i) => &rest[..=i],
        None => &rest[..0],
    };
    let Some((dir, last)) = split_last(trimmed) else {
        // `.`, `..` or the root: the kernel's own error (EBUSY, EINVAL, ENOTEMPTY…), on
        // an object perch cannot help reach anything else with.
        return Err(Errno::EBUSY);
    };
    let d = open_path(base.as_fd(), dir, OFlags::DIRECTORY, ResolveFlags::empty())?;
    // The trailing slashes stay: the kernel's ENOTDIR for `rename(file, "x/")`.
    let mut last = last.to_vec();
    last.extend_from_slice(&rest[trimmed.len()..]);
    Ok(Some((d, last)))
}

thread_local! {
    static OWN_FS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the program's `umask` on this thread (its own `fs_struct` from the first use).
/// Where `unshare(CLONE_FS)` is refused (Docker's default seccomp profile), the process's
/// umask is set for the call, one such call at a time, when it differs from the program's
/// (perch's own files get explicit modes).
fn with_umask<T>(umask: Option<u32>, f: impl FnOnce() -> T) -> T {
    static SHARED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let Some(mask) = umask else {
        return f();
    };
    let mask = Mode::from_bits_truncate(mask);
    if !OWN_FS.with(Cell::get) {
        if rustix::thread::unshare(rustix::thread::UnshareFlags::FS).is_err() {
            let _one = SHARED.lock().unwrap_or_else(|p| p.into_inner());
            let old = rustix::process::umask(mask);
            if old == mask {
                rustix::process::umask(old);
                return f();
            }
            let r = f();
            rustix::process::umask(old);
            return r;
        }
        OWN_FS.with(|o| o.set(true));
    }
    let old = rustix::process::umask(mask);
    let r = f();
    rustix::process::umask(old);
    r
}

fn proc_self(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// An open for writing (`O_WRONLY`, `O_RDWR`, `O_CREAT`, `O_TRUNC`, `O_TMPFILE`) of a host
/// path: the program's fd, opened by perch, or `EACCES` inside a protected directory;
/// `Ok(None)`: left to the kernel (a FIFO, a device, a `/proc` file).
pub(super) fn open(
    g: &Protected,
    c: &dyn Caller,
    dirfd: DirFd,
    path: &[u8],
    how: &OpenHow,
) -> Result<Option<OwnedFd>, Errno> {
    let flags = OFlags::from_bits_retain(u32::try_from(how.flags).map_err(|_| Errno::EINVAL)?);
    let mode = Mode::from_bits_truncate(u32::try_from(how.mode).unwrap_or(0));
    let resolve = ResolveFlags::from_bits_retain(how.resolve);
    if flags.contains(OFlags::TMPFILE) {
        let Some(r) = reach(c, dirfd, path, true, resolve)? else {
            return Ok(None);
        };
        let Reached::Found(d) = r else {
            return Err(Errno::ENOENT);
        };
        if g.holds(d.as_fd())? {
            return Err(Errno::EACCES);
        }
        let creds = c.creds();
        if !creds.same_as_perch {
            return Ok(None);
        }
        return with_umask(creds.umask, || {
            rustix::fs::openat(&d, ".", flags | OFlags::CLOEXEC, mode)
        })
        .map(Some)
        .map_err(errno);
    }
    let excl = flags.contains(OFlags::CREATE | OFlags::EXCL);
    let mut follow = !flags.contains(OFlags::NOFOLLOW) && !excl;
    let mut dirfd = dirfd;
    let mut path = path.to_vec();
    let mut held: Option<OwnedFd> = None;
    for _ in 0..40 {
        let r = match &held {
            // Following a symlink met while creating: relative to its directory.
            Some(d) if path.first() != Some(&b'/') => {
                reach_from(d.as_fd(), &path, follow, resolve)?
            }
            _ => match reach(c, dirfd, &path, follow, resolve)? {
                Some(r) => r,
                None => return Ok(None),
            },
        };
        match r {
            Reached::Found(p) => {
                if excl {
                    return Err(Errno::EEXIST);
                }
                let st = rustix::fs::fstat(&p).map_err(errno)?;
                let ft = FileType::from_raw_mode(st.st_mode);
                if ft == FileType::Symlink {
                    return Err(Errno::ELOOP);
                }
                if g.holds(p.as_fd())? {
                    return Err(Errno::EACCES);
                }
                if ft != FileType::RegularFile && ft != FileType::Directory
                    || !c.creds().same_as_perch
                {
                    return Ok(None);
                }
                let again = flags.difference(OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW)
                    | OFlags::CLOEXEC;
                return rustix::fs::open(proc_self(p.as_fd()).as_str(), again, Mode::empty())
                    .map(Some)
                    .map_err(errno);
            }
            Reached::Missing(d, last) => {
                if !flags.contains(OFlags::CREATE) {
                    return Err(Errno::ENOENT);
                }
                if g.holds(d.as_fd())? {
                    return Err(Errno::EACCES);
                }
                let creds = c.creds();
                if !creds.same_as_perch {
                    return Ok(None);
                }
                let f = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                match with_umask(creds.umask, || rustix::fs::openat(&d, os(&last), f, mode)) {
                    Ok(fd) => return Ok(Some(fd)),
                    // A symlink there (dangling, or made since): follow it ourselves.
                    Err(e)
                        if e == rustix::io::Errno::LOOP
                            && !excl
                            && !flags.contains(OFlags::NOFOLLOW) =>
                    {
                        let target =
                            rustix::fs::readlinkat(&d, os(&last), Vec::new()).map_err(errno)?;
                        path = target.into_bytes();
                        follow = true;
                        dirfd = DirFd(perch_syscalls::AT_FDCWD);
                        held = Some(d);
                    }
                    Err(e) => return Err(errno(e)),
                }
            }
        }
    }
    Err(Errno::ELOOP)
}

/// What a metadata call does to the object it reaches.
pub(super) enum Change<'a> {
    /// `truncate(path, len)`.
    Truncate(u64),
    /// `chmod`.
    Chmod(u32),
    /// `setxattr(name, value, flags)`.
    SetXattr(&'a [u8], &'a [u8], u32),
    /// chown, timestamps, removexattr: checked, then left to the kernel.
    Checked,
}

/// A metadata change of the object at the program's `path` (`follow`: through a final
/// symlink). `Ok(None)`: the kernel does it (no protected object there).
pub(super) fn change(
    g: &Protected,
    c: &dyn Caller,
    dirfd: DirFd,
    path: &[u8],
    follow: bool,
    empty_path: bool,
    what: Change<'_>,
) -> Result<Option<i64>, Errno> {
    let Some(p) = object(c, dirfd, path, follow, empty_path)? else {
        return Ok(None);
    };
    on_object(g, c, p, follow, what)
}

/// The `f*` form: the object behind the program's fd.
pub(super) fn change_fd(
    g: &Protected,
    c: &dyn Caller,
    fd: i32,
    what: Change<'_>,
) -> Result<Option<i64>, Errno> {
    let p = match c.open_fd_unverified(DirFd(fd)) {
        Ok(p) => p,
        // A closed fd: the kernel says EBADF itself.
        Err(e) if e == Errno::EBADF => return Ok(None),
        Err(e) => return Err(e),
    };
    c.verify()?;
    on_object(g, c, p, true, what)
}

fn on_object(
    g: &Protected,
    c: &dyn Caller,
    p: OwnedFd,
    follow: bool,
    what: Change<'_>,
) -> Result<Option<i64>, Errno> {
    if g.holds(p.as_fd())? {
        return Err(Errno::EACCES);
    }
    let st = rustix::fs::fstat(&p).map_err(errno)?;
    let ft = FileType::from_raw_mode(st.st_mode);
    let at = proc_self(p.as_fd());
    let r = match what {
        Change::Checked => return Ok(None),
        // Not perch's to do with its own credentials: checked, then the kernel's.
        _ if !c.creds().same_as_perch => return Ok(None),
        // The kernel refuses these on a symlink itself; through /proc/self/fd they would not be.
        _ if ft == FileType::Symlink && !follow => return Err(Errno::EOPNOTSUPP),
        // truncate(2) needs write permission, as an open for writing does.
        Change::Truncate(_) if ft == FileType::Directory => return Err(Errno::EISDIR),
        Change::Truncate(_) if ft != FileType::RegularFile => return Err(Errno::EINVAL),
        Change::Truncate(len) => {
            rustix::fs::open(at.as_str(), OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
                .and_then(|f| rustix::fs::ftruncate(&f, len))
        }
        Change::Chmod(mode) => rustix::fs::chmod(at.as_str(), Mode::from_bits_truncate(mode)),
        Change::SetXattr(name, value, flags) => rustix::fs::setxattr(
            at.as_str(),
            std::ffi::OsStr::from_bytes(name),
            value,
            rustix::fs::XattrFlags::from_bits_retain(flags),
        ),
    };
    r.map(|()| Some(0)).map_err(errno)
}

/// What an entry call does.
pub(super) enum Entry<'a> {
    /// `unlink`/`rmdir` (`AT_REMOVEDIR`).
    Remove(bool),
    /// `mkdir(mode)`.
    Mkdir(u32),
    /// `mknod(mode, dev)`.
    Mknod(u32, u64),
    /// `symlink(target)`.
    Symlink(&'a [u8]),
}

/// An entry call on the program's `path`: done by perch, or `EACCES` in a protected directory
/// (or for a directory on the way to one). `Ok(None)`: a `/proc` path, left to the kernel.
pub(super) fn entry_call(
    g: &Protected,
    c: &dyn Caller,
    dirfd: DirFd,
    path: &[u8],
    what: Entry<'_>,
) -> Result<Option<i64>, Errno> {
    let Some((d, last)) = reach_entry(c, dirfd, path)? else {
        return Ok(None);
    };
    let refused = match what {
        Entry::Remove(_) => g.holds_entry(d.as_fd(), &last)?,
        _ => g.holds(d.as_fd())?,
    };
    if refused {
        return Err(Errno::EACCES);
    }
    let creds = c.creds();
    if !creds.same_as_perch {
        return Ok(None);
    }
    let name = os(&last);
    let r = match what {
        Entry::Remove(dir) => {
            let flags = if dir {
                rustix::fs::AtFlags::REMOVEDIR
            } else {
                rustix::fs::AtFlags::empty()
            };
            rustix::fs::unlinkat(&d, name, flags)
        }
        Entry::Mkdir(mode) => with_umask(creds.umask, || {
            rustix::fs::mkdirat(&d, name, Mode::from_bits_truncate(mode))
        }),
        Entry::Mknod(mode, dev) => with_umask(creds.umask, || {
            rustix::fs::mknodat(
                &d,
                name,
                FileType::from_raw_mode(mode),
                Mode::from_bits_truncate(mode),
                dev,
            )
        }),
        Entry::Symlink(target) => {
            rustix::fs::symlinkat(std::ffi::OsStr::from_bytes(target), &d, name)
        }
    };
    r.map(|()| Some(0)).map_err(errno)
}

/// `rename*(old, new, flags)`: done by perch, or `EACCES` when either side is in a protected
/// directory or on the way to one.
pub(super) fn rename(
    g: &Protected,
    c: &dyn Caller,
    old: (DirFd, &[u8]),
    new: (DirFd, &[u8]),
    flags: u32,
) -> Result<Option<i64>, Errno> {
    let Some((od, ol)) = reach_entry(c, old.0, old.1)? else {
        return Ok(None);
    };
    let Some((nd, nl)) = reach_entry(c, new.0, new.1)? else {
        return Ok(None);
    };
    if g.holds_entry(od.as_fd(), &ol)? || g.holds_entry(nd.as_fd(), &nl)? {
        return Err(Errno::EACCES);
    }
    if !c.creds().same_as_perch {
        return Ok(None);
    }
    rustix::fs::renameat_with(
        &od,
        os(&ol),
        &nd,
        os(&nl),
        rustix::fs::RenameFlags::from_bits_retain(flags),
    )
    .map(|()| Some(0))
    .map_err(errno)
}

/// `link*(old, new, follow)`: `EACCES` when the file linked is in a protected directory or the
/// new entry would be; else done by perch on the object reached.
pub(super) fn link(
    g: &Protected,
    c: &dyn Caller,
    old: (DirFd, &[u8]),
    new: (DirFd, &[u8]),
    follow: bool,
    empty_path: bool,
) -> Result<Option<i64>, Errno> {
    let Some(p) = object(c, old.0, old.1, follow, empty_path)? else {
        return Ok(None);
    };
    if g.holds(p.as_fd())? {
        return Err(Errno::EACCES);
    }
    let Some((nd, nl)) = reach_entry(c, new.0, new.1)? else {
        return Ok(None);
    };
    if g.holds(nd.as_fd())? {
        return Err(Errno::EACCES);
    }
    if !c.creds().same_as_perch {
        return Ok(None);
    }
    // Through the magic link: the object reached, not the program's path again.
    rustix::fs::linkat(
        CWD,
        proc_self(p.as_fd()).as_str(),
        &nd,
        os(&nl),
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )
    .map(|()| Some(0))
    .map_err(errno)
}
