//! The code the rows of [`crate::SYSCALLS`] carry: what one intercepted call means for the
//! program, given its typed [`Call`] and a view of the caller ([`Caller`]), as an [`Answer`].
//! Every backend runs the same code: the seccomp-notify handler of the binary, and the FUSE and
//! ptrace backends to come.
//!
//! Classification, cheapest first:
//! - an absolute path that does not mention the mount point's name (`cvmfs`), `/proc/` or
//!   `/dev/fd/` continues at once, without reading `/proc`;
//! - a relative path (or `AT_EMPTY_PATH`) needs its base: the caller's cwd or dirfd (one
//!   `readlink`). A base outside the shadow tree with a path that does not mention the mount
//!   point's name continues;
//! - fd-only calls (`fstat`, `fstatfs`, `fgetxattr`, `fchmod`...) look at the fd's target: an
//!   fd whose target is in the shadow tree is virtual;
//! - everything else goes through [`Namespace::resolve`] and the operations of this crate.
//!
//! A host path reached through a repository symlink (`Outcome::Host`) cannot be handed to the
//! kernel by `CONTINUE` (the kernel re-reads the program's own path), so perch does that call
//! itself on the host path (`host`). The same holds for paths [`Hooks::remap`] changes.

pub mod guard;
mod meta;
mod open;
pub mod rewrite;
mod write;

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use perch_syscalls::{Answer, Call, CallerCreds, DirFd, PathPtr, TraceeView, PATH_MAX};

use crate::{Cred, Errno, Lookup, MagicLinks, Namespace, Outcome, Resolved, SyscallTable};

/// The caller of one call, as a backend sees it. Reads are unverified: act on what they gave
/// only after [`Caller::verify`] (pids are reused).
pub trait Caller: TraceeView {
    /// The kernel's path of the caller's fd (`/proc/<tid>/fd/N`) or, for `AT_FDCWD`, its cwd.
    /// `EBADF` for a closed fd.
    fn fd_path_unverified(&self, fd: DirFd) -> Result<Vec<u8>, Errno>;

    /// `ENOENT` when the caller no longer waits for this answer: what was read may not have
    /// been its memory or its fds.
    fn verify(&self) -> Result<(), Errno>;

    /// The kernel's target of a `/proc` magic link named as the caller would name it
    /// (`/proc/self/fd/3`, `/dev/fd/0`, `/proc/thread-self/cwd`, `/proc/<pid>/exe`); `None`
    /// for any other path or an unreadable link.
    fn proc_link(&self, path: &[u8]) -> Option<Vec<u8>>;

    /// The real `/proc` path of a `/proc/self/…`, `/proc/thread-self/…`, `/proc/<pid>/…` or
    /// `/dev/fd/N` path named by the caller (`self` is the caller's tid); `None` for others.
    fn proc_real_path(&self, path: &[u8]) -> Option<PathBuf> {
        let _ = path;
        None
    }

    /// An `O_PATH` fd of perch's on the object the caller's fd (its cwd for `AT_FDCWD`) refers
    /// to, for calls perch makes itself relative to it (`guard`). Unverified.
    fn open_fd_unverified(&self, fd: DirFd) -> Result<OwnedFd, Errno> {
        let _ = fd;
        Err(Errno::ENOSYS)
    }

    /// Whether the caller has perch's credentials, so that a call perch makes for it is the
    /// call it would have made (`guard`; a program may have dropped root's, or hold
    /// capabilities in a user namespace of its own), and its umask (what a file perch creates
    /// for it is masked with).
    fn creds(&self) -> CallerCreds {
        CallerCreds {
            same_as_perch: true,
            umask: None,
        }
    }

    /// [`Caller::fd_path_unverified`], verified.
    fn fd_path(&self, fd: DirFd) -> Result<Vec<u8>, Errno> {
        let p = self.fd_path_unverified(fd);
        self.verify()?;
        p
    }
}

/// What the binary adds around the table's code: `-M` remapping, `--record`, counters.
pub trait Hooks: Send + Sync {
    /// `-M /virtual=/real`: the path perch must look up instead of `path`, if any.
    fn remap(&self, path: &[u8]) -> Option<Vec<u8>> {
        let _ = path;
        None
    }

    /// A path was resolved for the program (`listed`: it was opened, so a directory is listed).
    fn touched(&self, resolved: &Resolved, listed: bool) {
        let _ = (resolved, listed);
    }

    /// perch did a call itself on a host path.
    fn host_call(&self) {}

    /// An fd of a virtual object was handed to the program.
    fn injected(&self) {}

    /// A read-only open of an absolute `/proc/…` or `/dev/fd/…` path: the binary's own answer
    /// (a translated copy of `/proc/<pid>/maps`), if it has one. Called only for those paths, so
    /// other opens pay nothing for it.
    fn proc_open(
        &self,
        ns: &Namespace,
        caller: &dyn Caller,
        path: &[u8],
        flags: i32,
    ) -> Option<Answer> {
        let _ = (ns, caller, path, flags);
        None
    }
}

/// No hooks.
#[derive(Debug, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// The code of a row: answers the call for a backend.
pub type AnswerFn = fn(&Calls, &dyn Caller, &Call) -> Result<Answer, Errno>;

/// The table's code bound to a namespace and the program's credentials.
pub struct Calls {
    ns: Namespace,
    cred: Cred,
    hooks: Box<dyn Hooks>,
    mp_name: Vec<u8>,
    shadow_root: Vec<u8>,
    protected: guard::Protected,
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls").field("ns", &self.ns).finish()
    }
}

/// Where a path argument must be looked up by perch (not left to the kernel).
pub(crate) struct Target {
    pub(crate) path: Vec<u8>,
    pub(crate) base: Vec<u8>,
    /// The program's own path would not reach the object (remapped): never CONTINUE.
    pub(crate) forced: bool,
}

/// `/proc` magic links of one caller, translated out of the shadow tree.
pub(crate) struct Magic<'a> {
    ns: &'a Namespace,
    caller: &'a dyn Caller,
}

impl MagicLinks for Magic<'_> {
    fn magic_link(&self, path: &[u8]) -> Option<Vec<u8>> {
        let target = self.caller.proc_link(path)?;
        self.ns
            .virtual_path(Path::new(OsStr::from_bytes(&target)))
            .map(|p| p.into_os_string().into_vec())
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

pub(crate) fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

pub(crate) fn usize_of(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

pub(crate) fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn i32_of(v: u32) -> i32 {
    i32::from_ne_bytes(v.to_ne_bytes())
}

impl Calls {
    /// The table's code over `ns`, checking permissions for `cred`.
    pub fn new(ns: Namespace, cred: Cred, hooks: Box<dyn Hooks>) -> Calls {
        let mp_name = ns
            .mountpoint()
            .split(|&b| b == b'/')
            .find(|c| !c.is_empty())
            .unwrap_or(b"cvmfs")
            .to_vec();
        let mut shadow_root = bytes(ns.shadow().root()).to_vec();
        shadow_root.push(b'/');
        Calls {
            ns,
            cred,
            hooks,
            mp_name,
            shadow_root,
            protected: guard::Protected::default(),
        }
    }

    /// Refuses the program every write into `p`'s directories (`guard`): perch's caches.
    pub fn protect(mut self, p: guard::Protected) -> Calls {
        self.protected = p;
        self
    }

    /// The directories no program may change.
    pub(crate) fn protected(&self) -> &guard::Protected {
        &self.protected
    }

    /// The namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// The program's credentials.
    pub fn cred(&self) -> &Cred {
        &self.cred
    }

    /// The hooks.
    pub fn hooks(&self) -> &dyn Hooks {
        self.hooks.as_ref()
    }

    /// The answer to `call`: the code of its row; `CONTINUE` for calls the table does not
    /// answer (never notified by a filter built from the table). An error reading the caller
    /// (`ENOENT`: it is gone) is the answer too.
    pub fn answer(&self, caller: &dyn Caller, call: &Call) -> Answer {
        let code = u32::try_from(call.nr())
            .ok()
            .and_then(|nr| SyscallTable.by_nr(nr))
            .and_then(|row| row.code.answer());
        match code {
            Some(code) => code(self, caller, call).unwrap_or_else(Answer::Err),
            None => Answer::Continue,
        }
    }

    pub(crate) fn in_shadow(&self, p: &[u8]) -> bool {
        p.starts_with(&self.shadow_root)
    }

    /// The virtual path of a kernel-reported path in the shadow tree.
    pub(crate) fn to_virtual(&self, p: &[u8]) -> Option<Vec<u8>> {
        if !self.in_shadow(p) {
            return None;
        }
        self.ns
            .virtual_path(Path::new(OsStr::from_bytes(p)))
            .map(|p| p.into_os_string().into_vec())
    }

    /// True if an absolute path can be left to the kernel without looking at it further.
    pub(crate) fn plainly_host(&self, path: &[u8]) -> bool {
        !contains(path, &self.mp_name)
            && !path.starts_with(b"/proc/")
            && !path.starts_with(b"/dev/fd/")
    }

    pub(crate) fn mentions_mountpoint(&self, path: &[u8]) -> bool {
        contains(path, &self.mp_name)
    }

    fn remapped(&self, path: Vec<u8>) -> (Vec<u8>, bool) {
        match self.hooks.remap(&path) {
            Some(p) => (p, true),
            None => (path, false),
        }
    }

    /// Decides whether a path argument needs the namespace. `Ok(None)`: continue. The path and
    /// the base were read unverified (a `CONTINUE` needs no check); a target is returned only
    /// after the caller was checked to be still waiting, so they were its.
    pub(crate) fn target(
        &self,
        c: &dyn Caller,
        dirfd: DirFd,
        path: Vec<u8>,
    ) -> Result<Option<Target>, Errno> {
        let (path, forced) = self.remapped(path);
        if path.first() == Some(&b'/') {
            if !forced && self.plainly_host(&path) {
                return Ok(None);
            }
            c.verify()?;
            return Ok(Some(Target {
                path,
                base: b"/".to_vec(),
                forced,
            }));
        }
        let base = match c.fd_path_unverified(dirfd) {
            Ok(b) => b,
            // A bad dirfd: the kernel gives the right errno itself.
            Err(e) if e == Errno::EBADF => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(v) = self.to_virtual(&base) {
            c.verify()?;
            return Ok(Some(Target {
                path,
                base: v,
                forced,
            }));
        }
        if base.first() != Some(&b'/') || (!forced && !contains(&path, &self.mp_name)) {
            return Ok(None);
        }
        c.verify()?;
        Ok(Some(Target { path, base, forced }))
    }

    /// The first path argument of `call`, unverified; `None` when the kernel should see it
    /// itself (no path, or a bad pointer: the kernel reports `EFAULT`).
    pub(crate) fn path_arg(&self, c: &dyn Caller, call: &Call) -> Option<(DirFd, Vec<u8>)> {
        let (dirfd, ptr) = call.path()?;
        c.read_cstr(ptr.0, PATH_MAX).ok().map(|p| (dirfd, p))
    }

    /// The target of `call`'s first path argument (see [`Calls::target`]).
    pub(crate) fn call_target(&self, c: &dyn Caller, call: &Call) -> Result<Option<Target>, Errno> {
        match self.path_arg(c, call) {
            None => Ok(None),
            Some((dirfd, path)) => self.target(c, dirfd, path),
        }
    }

    /// Reads a second path argument (rename, link), verified.
    pub(crate) fn read_path(&self, c: &dyn Caller, p: PathPtr) -> Result<Vec<u8>, Errno> {
        let b = c.read_cstr(p.0, PATH_MAX);
        c.verify()?;
        b
    }

    /// The virtual path of a virtual fd, `None` for a host fd.
    pub(crate) fn fd_virtual(&self, c: &dyn Caller, fd: i32) -> Result<Option<Vec<u8>>, Errno> {
        if fd < 0 {
            return Ok(None);
        }
        match c.fd_path_unverified(DirFd(fd)) {
            Ok(p) => match self.to_virtual(&p) {
                Some(v) => c.verify().map(|()| Some(v)),
                None => Ok(None),
            },
            Err(e) if e == Errno::EBADF => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The object an fd-only call names: its virtual path resolved without following.
    pub(crate) fn fd_object(&self, c: &dyn Caller, fd: i32) -> Result<Option<Resolved>, Errno> {
        let Some(v) = self.fd_virtual(c, fd)? else {
            return Ok(None);
        };
        Ok(Some(self.ns.resolve(&Lookup::new(&v, b"/").nofollow())))
    }

    pub(crate) fn magic<'a>(&'a self, c: &'a dyn Caller) -> Magic<'a> {
        Magic {
            ns: &self.ns,
            caller: c,
        }
    }

    pub(crate) fn lookup<'a>(&'a self, t: &'a Target, magic: &'a Magic<'a>) -> Lookup<'a> {
        Lookup::new(&t.path, &t.base).magic(magic).cred(&self.cred)
    }

    /// Resolves and reports the object to the hooks (`--record`); a remapped host path is
    /// always done by perch.
    pub(crate) fn resolve(&self, t: &Target, l: &Lookup<'_>) -> Resolved {
        let r = self.ns.resolve(l);
        self.hooks.touched(&r, false);
        match r {
            Resolved::Host {
                path,
                rewritten: false,
            } if t.forced => Resolved::Host {
                path,
                rewritten: true,
            },
            r => r,
        }
    }

    /// A call perch does itself on a host path.
    pub(crate) fn host<T>(&self, r: Result<T, Errno>, f: impl FnOnce(T) -> Answer) -> Answer {
        self.hooks.host_call();
        match r {
            Ok(v) => f(v),
            Err(e) => Answer::Err(e),
        }
    }

    /// The answer of an operation without a value.
    pub(crate) fn unit(
        &self,
        o: Outcome<()>,
        host_op: impl FnOnce(&Path) -> Result<(), Errno>,
    ) -> Answer {
        match o {
            Outcome::Continue => Answer::Continue,
            Outcome::Value(()) => Answer::Ret(0),
            Outcome::Err(e) => Answer::Err(e),
            Outcome::Host(p) => self.host(host_op(&p), |()| Answer::Ret(0)),
        }
    }

    /// A remapped path the namespace would continue must be done by perch on the new path.
    pub(crate) fn force_host(&self, o: Outcome<()>, t: &Target, l: &Lookup<'_>) -> Outcome<()> {
        match o {
            Outcome::Continue if t.forced => {
                let mut p = if l.path.first() == Some(&b'/') {
                    Vec::new()
                } else {
                    let mut b = l.base.to_vec();
                    b.push(b'/');
                    b
                };
                p.extend_from_slice(l.path);
                Outcome::Host(PathBuf::from(OsStr::from_bytes(&p)))
            }
            o => o,
        }
    }
}

/// `AT_SYMLINK_NOFOLLOW` and `AT_EMPTY_PATH`.
pub(crate) fn at_flags(l: Lookup<'_>, flags: u32) -> Lookup<'_> {
    use perch_syscalls::args::at;
    let mut l = l;
    if flags & at::AT_SYMLINK_NOFOLLOW != 0 {
        l = l.nofollow();
    }
    if flags & at::AT_EMPTY_PATH != 0 {
        l = l.empty_path();
    }
    l
}

pub use meta::{
    access, file_getattr, getcwd, getxattr, listxattr, name_to_handle, readlink, stat, statfs,
    watch,
};
pub use open::open;
pub use write::{create, modify, pair, remove};
