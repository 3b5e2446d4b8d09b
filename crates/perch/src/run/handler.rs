//! The handler that joins perch-intercept to perch-vfs: every notified syscall is classified
//! (host → `CONTINUE` as fast as possible; virtual → answered from the namespace), and traced
//! `execve`/`execveat`/`chdir` are rewritten to shadow paths.
//!
//! Classification, cheapest first:
//! - an absolute path that does not mention the mount point's name (`cvmfs`), `/proc/` or
//!   `/dev/fd/` continues at once, without reading `/proc`;
//! - a relative path (or `AT_EMPTY_PATH`) needs its base: `/proc/<tid>/cwd` or `/proc/<tid>/fd/N`
//!   (one `readlink`). A base outside the shadow tree with a path that does not mention the mount
//!   point's name continues;
//! - fd-only calls (`fstat`, `fstatfs`, `fgetxattr`, `fchmod`...) read `/proc/<tid>/fd/N`: an fd
//!   whose target is in the shadow tree is virtual;
//! - everything else goes through [`Namespace::resolve`] and the operation of perch-vfs.
//!
//! A host path reached through a repository symlink (`Outcome::Host`) cannot be handed to the
//! kernel by `CONTINUE` (the kernel re-reads the program's own path), so perch does that call
//! itself on the host path ([`super::host`]). The same holds for `-M /virtual=/real` remapping.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use perch_intercept::{Call, Errno, Handler, Notification, TraceAction, TracedCall};
use perch_syscalls::args::{at, o};
use perch_syscalls::{DirFd, TraceeView};
use perch_vfs::{
    CreateOp, Cred, Lookup, MagicLinks, ModifyOp, Namespace, Outcome, PairOutcome, RemoveOp,
    ResolveFlags, Resolved, XattrReply,
};

use super::exec;
use super::host;

/// `-M /virtual=/real`: paths under `from` are looked up under `to` instead.
#[derive(Debug, Clone)]
pub struct Remap {
    /// The prefix the program uses.
    pub from: Vec<u8>,
    /// Where it really is (a host path or a path under the mount point).
    pub to: Vec<u8>,
}

/// Counters of what the handler did, reported with `-d stats`.
#[derive(Debug, Default)]
pub struct Counts {
    /// Answered with CONTINUE.
    pub continued: AtomicU64,
    /// Answered from the namespace (values, errors, fds).
    pub virtual_: AtomicU64,
    /// Virtual fds injected.
    pub injected: AtomicU64,
    /// Calls done by perch on a host path (repository symlink leading out, `-M`).
    pub host: AtomicU64,
    /// Exec/chdir rewritten.
    pub rewritten: AtomicU64,
}

/// The namespace as a [`Handler`].
pub struct PerchHandler {
    ns: Namespace,
    mp: Vec<u8>,
    mp_name: Vec<u8>,
    shadow_root: Vec<u8>,
    cred: Cred,
    remaps: Vec<Remap>,
    log: bool,
    /// `--record`: the `<mountpoint>/<fqrn>/path` of every repository object touched.
    record: Option<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// What happened.
    pub counts: Counts,
}

/// How a notification is answered.
enum Reply {
    Continue,
    Err(Errno),
    Ret(i64),
    /// Write `data` at `addr`, then return `ret`.
    Write {
        addr: u64,
        data: Vec<u8>,
        ret: i64,
    },
    Fd(OwnedFd, bool),
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Continue => f.write_str("CONTINUE"),
            Reply::Err(e) => write!(f, "-1 {}", e.name().unwrap_or("E?")),
            Reply::Ret(v) | Reply::Write { ret: v, .. } => write!(f, "{v}"),
            Reply::Fd(..) => f.write_str("fd (injected)"),
        }
    }
}

fn ve(e: perch_vfs::Errno) -> Errno {
    Errno::new(e.raw())
}

fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fn i32_of(v: u32) -> i32 {
    i32::from_ne_bytes(v.to_ne_bytes())
}

fn usize_of(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Where a path argument must be looked up by perch (not left to the kernel).
struct Target {
    path: Vec<u8>,
    base: Vec<u8>,
    /// The program's own path would not reach the object (remapped): never CONTINUE.
    forced: bool,
}

/// `/proc` magic links of one calling thread, translated out of the shadow tree.
struct Magic<'a> {
    ns: &'a Namespace,
    tid: i32,
}

/// `/proc/self/...`, `/proc/thread-self/...` → `/proc/<tid>/...`, `/dev/fd/N` → `/proc/<tid>/fd/N`.
fn proc_path(path: &[u8], tid: i32) -> Option<PathBuf> {
    let rest = if let Some(r) = path.strip_prefix(b"/dev/fd/") {
        let mut v = b"self/fd/".to_vec();
        v.extend_from_slice(r);
        v
    } else {
        path.strip_prefix(b"/proc/")?.to_vec()
    };
    let (first, tail) = match rest.iter().position(|&b| b == b'/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (&rest[..], &b""[..]),
    };
    let mut out = b"/proc/".to_vec();
    match first {
        b"self" | b"thread-self" => out.extend_from_slice(tid.to_string().as_bytes()),
        d if !d.is_empty() && d.iter().all(u8::is_ascii_digit) => out.extend_from_slice(d),
        _ => return None,
    }
    out.extend_from_slice(tail);
    Some(PathBuf::from(OsStr::from_bytes(&out)))
}

impl MagicLinks for Magic<'_> {
    fn magic_link(&self, path: &[u8]) -> Option<Vec<u8>> {
        let real = proc_path(path, self.tid)?;
        let target = std::fs::read_link(real).ok()?;
        self.ns
            .virtual_path(&target)
            .map(|p| p.into_os_string().into_vec())
    }
}

use std::os::unix::ffi::OsStringExt;

/// Reads the credentials perch runs with: tracees have the same (no_new_privs: no setuid).
pub fn own_cred() -> Cred {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> Vec<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let uid = field("Uid:").get(1).copied().unwrap_or(u64::from(u32::MAX));
    let gid = field("Gid:").get(1).copied().unwrap_or(u64::from(u32::MAX));
    let groups = field("Groups:");
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_DAC_OVERRIDE: u64 = 1 << 1;
    let to32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    Cred {
        uid: to32(uid),
        gid: to32(gid),
        groups: groups.into_iter().map(to32).collect(),
        privileged: cap_eff & CAP_DAC_OVERRIDE != 0,
    }
}

impl PerchHandler {
    /// A handler over `ns`, checking permissions for `cred`.
    pub fn new(ns: Namespace, cred: Cred, remaps: Vec<Remap>) -> PerchHandler {
        let mp = ns.mountpoint().to_vec();
        let mp_name = mp
            .split(|&b| b == b'/')
            .find(|c| !c.is_empty())
            .unwrap_or(b"cvmfs")
            .to_vec();
        let mut shadow_root = bytes(ns.shadow().root()).to_vec();
        shadow_root.push(b'/');
        let log = tracing::enabled!(target: "perch::syscall", tracing::Level::DEBUG);
        PerchHandler {
            ns,
            mp,
            mp_name,
            shadow_root,
            cred,
            remaps,
            log,
            record: None,
            counts: Counts::default(),
        }
    }

    /// Remember the repository paths the program touches (`perch run --record`).
    pub fn with_record(mut self) -> PerchHandler {
        self.record = Some(std::sync::Mutex::default());
        self
    }

    /// The recorded paths, sorted (empty without [`PerchHandler::with_record`]).
    pub fn recorded(&self) -> Vec<String> {
        self.record.as_ref().map_or_else(Vec::new, |m| {
            m.lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect()
        })
    }

    /// Records a regular file (any lookup: open, stat, exec...) or, with `dirs`, a directory
    /// (opened, i.e. listed). The line is what `perch cache preload --list` reads: paths that
    /// are not UTF-8, hold a newline or begin/end with white space (trimmed there) are skipped.
    fn record(&self, r: &Resolved, dirs: bool) {
        let Some(set) = &self.record else {
            return;
        };
        let Resolved::Virtual {
            repo: Some(repo),
            path,
            entry,
        } = r
        else {
            return;
        };
        if !(entry.kind == perch_vfs::Kind::File || (dirs && entry.is_dir())) {
            return;
        }
        let Ok(inner) = std::str::from_utf8(path) else {
            return;
        };
        let mut line = String::from_utf8_lossy(&self.mp).into_owned();
        if !line.ends_with('/') {
            line.push('/');
        }
        line.push_str(repo.fqrn());
        line.push_str(inner);
        if line.contains('\n') || line.trim() != line {
            return;
        }
        set.lock().unwrap_or_else(|p| p.into_inner()).insert(line);
    }

    fn in_shadow(&self, p: &[u8]) -> bool {
        p.starts_with(&self.shadow_root)
    }

    /// The virtual path of a kernel-reported path in the shadow tree.
    fn to_virtual(&self, p: &[u8]) -> Option<Vec<u8>> {
        if !self.in_shadow(p) {
            return None;
        }
        self.ns
            .virtual_path(Path::new(OsStr::from_bytes(p)))
            .map(|p| p.into_os_string().into_vec())
    }

    /// `/proc/<pid>/maps` (`smaps`, `numa_maps`) opened for reading: a translated copy (guard.rs).
    fn proc_maps(&self, n: &Notification, call: &Call, path: &[u8]) -> Option<Reply> {
        let flags = match call {
            Call::Open { flags, .. } | Call::Openat { flags, .. } => *flags,
            _ => return None,
        };
        let real = super::guard::maps_file(&proc_path(path, n.pid().0)?)?;
        if flags.writes() {
            return None;
        }
        let fd = super::guard::translated(&real, &self.shadow_root, &|p| self.to_virtual(p));
        Some(fd.map_or_else(Reply::Err, |fd| Reply::Fd(fd, flags.cloexec())))
    }

    /// True if an absolute path can be left to the kernel without looking at it further.
    fn plainly_host(&self, path: &[u8]) -> bool {
        !contains(path, &self.mp_name)
            && !path.starts_with(b"/proc/")
            && !path.starts_with(b"/dev/fd/")
    }

    fn remap(&self, path: &[u8]) -> Option<Vec<u8>> {
        for r in &self.remaps {
            if let Some(rest) = path.strip_prefix(r.from.as_slice()) {
                if rest.is_empty() || rest[0] == b'/' {
                    let mut out = r.to.clone();
                    out.extend_from_slice(rest);
                    return Some(out);
                }
            }
        }
        None
    }

    /// Decides whether a path argument needs the namespace. `Ok(None)`: continue. The path and
    /// the base were read unverified (a `CONTINUE` needs no check); a target is returned only
    /// after the caller was checked to be still waiting, so they were its.
    fn target(
        &self,
        n: &Notification<'_>,
        dirfd: DirFd,
        path: Vec<u8>,
    ) -> Result<Option<Target>, Errno> {
        let (path, forced) = match self.remap(&path) {
            Some(p) => (p, true),
            None => (path, false),
        };
        if path.first() == Some(&b'/') {
            if !forced && self.plainly_host(&path) {
                return Ok(None);
            }
            n.verify()?;
            return Ok(Some(Target {
                path,
                base: b"/".to_vec(),
                forced,
            }));
        }
        let base = match n.fd_path_unverified(dirfd) {
            Ok(b) => b,
            // A bad dirfd: the kernel gives the right errno itself.
            Err(e) if e == Errno::EBADF => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(v) = self.to_virtual(&base) {
            n.verify()?;
            return Ok(Some(Target {
                path,
                base: v,
                forced,
            }));
        }
        if base.first() != Some(&b'/') || (!forced && !contains(&path, &self.mp_name)) {
            return Ok(None);
        }
        n.verify()?;
        Ok(Some(Target { path, base, forced }))
    }

    /// The virtual path of a virtual fd, `None` for a host fd.
    fn fd_virtual(&self, n: &Notification<'_>, fd: i32) -> Result<Option<Vec<u8>>, Errno> {
        if fd < 0 {
            return Ok(None);
        }
        match n.fd_path_unverified(DirFd(fd)) {
            Ok(p) => match self.to_virtual(&p) {
                Some(v) => n.verify().map(|()| Some(v)),
                None => Ok(None),
            },
            Err(e) if e == Errno::EBADF => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn lookup<'a>(&'a self, t: &'a Target, magic: &'a Magic<'a>) -> Lookup<'a> {
        Lookup::new(&t.path, &t.base).magic(magic).cred(&self.cred)
    }

    fn resolve(&self, t: &Target, l: &Lookup<'_>) -> Resolved {
        let r = self.ns.resolve(l);
        self.record(&r, false);
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

    fn magic<'a>(&'a self, n: &Notification<'_>) -> Magic<'a> {
        Magic {
            ns: &self.ns,
            tid: n.pid().0,
        }
    }

    /// The object an fd-only call names: its virtual path resolved without following.
    fn fd_object(&self, n: &Notification<'_>, fd: i32) -> Result<Option<Resolved>, Errno> {
        let Some(v) = self.fd_virtual(n, fd)? else {
            return Ok(None);
        };
        Ok(Some(self.ns.resolve(&Lookup::new(&v, b"/").nofollow())))
    }

    fn classify(&self, n: &Notification<'_>) -> Result<Reply, Errno> {
        let call = *n.call();
        // fd-only calls first.
        match call {
            Call::Getcwd { buf, size } => return self.getcwd(n, buf.0, size.0),
            Call::Fstat { fd, buf } => {
                return Ok(match self.fd_object(n, fd.0)? {
                    None => Reply::Continue,
                    Some(r) => self.stat_reply(&r, buf.0, None),
                })
            }
            Call::Fstatfs { fd, buf } => {
                return Ok(match self.fd_object(n, fd.0)? {
                    None => Reply::Continue,
                    Some(r) => self.statfs_reply(&r, buf.0),
                })
            }
            Call::Fgetxattr {
                fd,
                name,
                value,
                size,
            } => {
                return Ok(match self.fd_object(n, fd.0)? {
                    None => Reply::Continue,
                    Some(r) => {
                        let name = n.read_cstr(name.0, 256).map_err(|_| Errno::ERANGE)?;
                        self.getxattr_reply(&r, &name, value.0, size.0)
                    }
                })
            }
            Call::Flistxattr { fd, list, size } => {
                return Ok(match self.fd_object(n, fd.0)? {
                    None => Reply::Continue,
                    Some(r) => self.listxattr_reply(&r, list.0, size.0),
                })
            }
            Call::Fchmod { fd, .. }
            | Call::Fchown { fd, .. }
            | Call::Fsetxattr { fd, .. }
            | Call::Fremovexattr { fd, .. } => {
                return Ok(match self.fd_virtual(n, fd.0)? {
                    None => Reply::Continue,
                    Some(_) => Reply::Err(Errno::EROFS),
                })
            }
            Call::Fchdir { .. } => return Ok(Reply::Continue),
            Call::Other { nr, .. } => return Ok(self.by_table(nr)),
            _ => {}
        }
        if let Some(info) = u32::try_from(call.nr())
            .ok()
            .and_then(|nr| perch_vfs::SYSCALLS.binary_search_by_key(&nr, |r| r.nr).ok())
            .map(|i| &perch_vfs::SYSCALLS[i])
        {
            if let perch_vfs::Treatment::Refused(e, _) = info.treatment {
                return Ok(Reply::Err(ve(e)));
            }
        }
        let Some(path) = n.path_unverified() else {
            return Ok(Reply::Continue);
        };
        let Ok((dirfd, path)) = path else {
            // A bad pointer: the kernel reports EFAULT itself.
            return Ok(Reply::Continue);
        };
        // Two-path calls.
        match call {
            Call::Rename { newpath, .. } => {
                return self.pair(
                    n,
                    dirfd,
                    path,
                    DirFd(perch_syscalls::AT_FDCWD),
                    newpath.0,
                    Pair::Rename(0),
                )
            }
            Call::Renameat {
                newdirfd, newpath, ..
            } => return self.pair(n, dirfd, path, newdirfd, newpath.0, Pair::Rename(0)),
            Call::Renameat2 {
                newdirfd,
                newpath,
                flags,
                ..
            } => return self.pair(n, dirfd, path, newdirfd, newpath.0, Pair::Rename(flags.0)),
            Call::Link { newpath, .. } => {
                return self.pair(
                    n,
                    dirfd,
                    path,
                    DirFd(perch_syscalls::AT_FDCWD),
                    newpath.0,
                    Pair::Link(false),
                )
            }
            Call::Linkat {
                newdirfd,
                newpath,
                flags,
                ..
            } => {
                let follow = flags.0 & at::AT_SYMLINK_FOLLOW != 0;
                return self.pair(n, dirfd, path, newdirfd, newpath.0, Pair::Link(follow));
            }
            _ => {}
        }
        // readlink of /proc magic links: the kernel's answer, translated.
        if let Call::Readlink { buf, size, .. } | Call::Readlinkat { buf, size, .. } = call {
            if let Some(real) = proc_path(&path, n.pid().0) {
                return Ok(self.readlink_proc(&real, buf.0, size.0));
            }
        }
        if let Some(r) = self.proc_maps(n, &call, &path) {
            return Ok(r);
        }
        let Some(t) = self.target(n, dirfd, path)? else {
            return Ok(Reply::Continue);
        };
        let magic = self.magic(n);
        let l = self.lookup(&t, &magic);
        Ok(self.path_call(n, call, &t, l))
    }

    fn by_table(&self, nr: u64) -> Reply {
        let Ok(nr) = u32::try_from(nr) else {
            return Reply::Continue;
        };
        match perch_vfs::SyscallTable.by_nr(nr).map(|r| r.treatment) {
            Some(perch_vfs::Treatment::Refused(e, _)) => Reply::Err(ve(e)),
            // file_getattr/file_setattr and other calls the decoder does not know: the kernel's
            // answer on a host object; virtual objects are only reachable through fds the
            // kernel handles.
            _ => Reply::Continue,
        }
    }

    fn path_call(&self, n: &Notification<'_>, call: Call, t: &Target, l: Lookup<'_>) -> Reply {
        match call {
            Call::Open { flags, mode, .. } | Call::Openat { flags, mode, .. } => {
                self.open(t, l, i32_of(flags.0), mode.0, ResolveFlags::default())
            }
            Call::Creat { mode, .. } => self.open(
                t,
                l,
                i32_of(o::O_CREAT | o::O_WRONLY | o::O_TRUNC),
                mode.0,
                ResolveFlags::default(),
            ),
            Call::Openat2 { how, size, .. } => {
                if size.0 < 24 {
                    return Reply::Err(Errno::EINVAL);
                }
                match n.read_bytes(how.0, 24) {
                    Ok(b) if b.len() == 24 => {
                        let word = |i: usize| {
                            u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]))
                        };
                        let (flags, mode, resolve) = (word(0), word(1), word(2));
                        let Ok(flags) = u32::try_from(flags) else {
                            return Reply::Err(Errno::EINVAL);
                        };
                        self.open(
                            t,
                            l,
                            i32_of(flags),
                            u32::try_from(mode).unwrap_or(0),
                            ResolveFlags(resolve),
                        )
                    }
                    _ => Reply::Err(Errno::EFAULT),
                }
            }
            Call::Stat { buf, .. } => self.stat_call(t, l, buf.0, None),
            Call::Lstat { buf, .. } => self.stat_call(t, l.nofollow(), buf.0, None),
            Call::Newfstatat { buf, flags, .. } => {
                let l = self.at_flags(l, flags.0);
                self.stat_call(t, l, buf.0, None)
            }
            Call::Statx {
                buf, flags, mask, ..
            } => {
                let l = self.at_flags(l, flags.0);
                self.stat_call(t, l, buf.0, Some(mask.0))
            }
            Call::Statfs { buf, .. } => {
                let r = self.resolve(t, &l);
                match &r {
                    Resolved::Host {
                        path,
                        rewritten: true,
                    } => self.host(host::statfs(path), |st| Reply::Write {
                        addr: buf.0,
                        data: st.to_bytes().to_vec(),
                        ret: 0,
                    }),
                    _ => self.statfs_reply(&r, buf.0),
                }
            }
            Call::Access { mode, .. } | Call::Faccessat { mode, .. } => {
                self.access(t, l, i32_of(mode.0))
            }
            Call::Faccessat2 { mode, flags, .. } => {
                let l = self.at_flags(l, flags.0);
                self.access(t, l, i32_of(mode.0))
            }
            Call::Readlink { buf, size, .. } | Call::Readlinkat { buf, size, .. } => {
                self.readlink(t, l.nofollow(), buf.0, size.0)
            }
            Call::Getxattr {
                name, value, size, ..
            }
            | Call::Lgetxattr {
                name, value, size, ..
            } => {
                let l = if matches!(call, Call::Lgetxattr { .. }) {
                    l.nofollow()
                } else {
                    l
                };
                let r = self.resolve(t, &l);
                if let Resolved::Host {
                    rewritten: true, ..
                } = r
                {
                    return Reply::Err(Errno::ENODATA);
                }
                match n.read_cstr(name.0, 256) {
                    Ok(name) => self.getxattr_reply(&r, &name, value.0, size.0),
                    Err(_) => Reply::Err(Errno::ERANGE),
                }
            }
            Call::Getxattrat { .. } | Call::Listxattrat { .. } => {
                // Rare (Linux 6.13): answered for host objects by the kernel, refused on
                // virtual ones for now.
                match self.resolve(t, &l) {
                    Resolved::Host {
                        rewritten: false, ..
                    } => Reply::Continue,
                    _ => Reply::Err(Errno::ENOTSUP),
                }
            }
            Call::Listxattr { list, size, .. } | Call::Llistxattr { list, size, .. } => {
                let l = if matches!(call, Call::Llistxattr { .. }) {
                    l.nofollow()
                } else {
                    l
                };
                let r = self.resolve(t, &l);
                if let Resolved::Host {
                    rewritten: true, ..
                } = r
                {
                    return Reply::Ret(0);
                }
                self.listxattr_reply(&r, list.0, size.0)
            }
            Call::Mkdir { .. } | Call::Mkdirat { .. } => self.create(t, l, CreateOp::Mkdir),
            Call::Mknod { .. } | Call::Mknodat { .. } => self.create(t, l, CreateOp::Mknod),
            Call::Symlink { target, .. } | Call::Symlinkat { target, .. } => {
                match self.ns.create(&l, CreateOp::Symlink) {
                    Outcome::Host(p) => match n.read_cstr(target.0, 4096) {
                        Ok(tg) => self.host(host::symlink(&tg, &p), |()| Reply::Ret(0)),
                        Err(e) => Reply::Err(e),
                    },
                    o => self.unit(o, t, |_| Err(Errno::ENOSYS)),
                }
            }
            Call::Unlink { .. } => self.remove(t, l, RemoveOp::Unlink),
            Call::Rmdir { .. } => self.remove(t, l, RemoveOp::Rmdir),
            Call::Unlinkat { flags, .. } => {
                let op = if flags.0 & at::AT_REMOVEDIR != 0 {
                    RemoveOp::Rmdir
                } else {
                    RemoveOp::Unlink
                };
                self.remove(t, l, op)
            }
            Call::Chmod { .. } => self.modify(t, l, ModifyOp::Chmod),
            Call::Fchmodat { .. } => self.modify(t, l, ModifyOp::Chmod),
            Call::Fchmodat2 { flags, .. } => {
                let l = self.at_flags(l, flags.0);
                self.modify(t, l, ModifyOp::Chmod)
            }
            Call::Chown { .. } => self.modify(t, l, ModifyOp::Chown),
            Call::Lchown { .. } => self.modify(t, l.nofollow(), ModifyOp::Chown),
            Call::Fchownat { flags, .. } => {
                let l = self.at_flags(l, flags.0);
                self.modify(t, l, ModifyOp::Chown)
            }
            Call::Utime { .. } | Call::Utimes { .. } | Call::Futimesat { .. } => {
                self.modify(t, l, ModifyOp::Utimes)
            }
            Call::Utimensat { flags, .. } => {
                let l = self.at_flags(l, flags.0);
                self.modify(t, l, ModifyOp::Utimes)
            }
            Call::Truncate { .. } => self.modify(t, l, ModifyOp::Truncate),
            Call::Setxattr { .. } => self.modify(t, l, ModifyOp::SetXattr),
            Call::Lsetxattr { .. } => self.modify(t, l.nofollow(), ModifyOp::SetXattr),
            Call::Setxattrat { at_flags, .. } => {
                let l = self.at_flags(l, at_flags.0);
                self.modify(t, l, ModifyOp::SetXattr)
            }
            Call::Removexattr { .. } => self.modify(t, l, ModifyOp::RemoveXattr),
            Call::Lremovexattr { .. } => self.modify(t, l.nofollow(), ModifyOp::RemoveXattr),
            Call::Removexattrat { at_flags, .. } => {
                let l = self.at_flags(l, at_flags.0);
                self.modify(t, l, ModifyOp::RemoveXattr)
            }
            Call::NameToHandleAt { flags, .. } => {
                let l = self.at_flags(l, flags.0 ^ at::AT_SYMLINK_FOLLOW);
                match self.resolve(t, &l) {
                    Resolved::Virtual { .. } => Reply::Err(Errno::ENOTSUP),
                    Resolved::Missing { errno, .. } => Reply::Err(ve(errno)),
                    _ => Reply::Continue,
                }
            }
            Call::InotifyAddWatch { .. } | Call::FanotifyMark { .. } => {
                match self.resolve(t, &l) {
                    // Content under /cvmfs never changes: a watch would never fire. Refusing it
                    // makes `tail -f` and friends fall back to polling, which also works.
                    Resolved::Virtual { .. } => Reply::Err(Errno::ENOSPC),
                    Resolved::Missing { errno, .. } => Reply::Err(ve(errno)),
                    Resolved::Host {
                        rewritten: true, ..
                    } => Reply::Err(Errno::ENOSPC),
                    _ => Reply::Continue,
                }
            }
            _ => match self.resolve(t, &l) {
                Resolved::Host {
                    rewritten: false, ..
                } => Reply::Continue,
                Resolved::Missing { errno, .. } => Reply::Err(ve(errno)),
                _ => Reply::Err(Errno::EROFS),
            },
        }
    }

    /// `AT_SYMLINK_NOFOLLOW` and `AT_EMPTY_PATH`.
    fn at_flags<'a>(&self, l: Lookup<'a>, flags: u32) -> Lookup<'a> {
        let mut l = l;
        if flags & at::AT_SYMLINK_NOFOLLOW != 0 {
            l = l.nofollow();
        }
        if flags & at::AT_EMPTY_PATH != 0 {
            l = l.empty_path();
        }
        l
    }

    fn host<T>(&self, r: Result<T, Errno>, f: impl FnOnce(T) -> Reply) -> Reply {
        self.counts.host.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(v) => f(v),
            Err(e) => Reply::Err(e),
        }
    }

    fn unit(
        &self,
        o: Outcome<()>,
        _t: &Target,
        host_op: impl FnOnce(&Path) -> Result<(), Errno>,
    ) -> Reply {
        match o {
            Outcome::Continue => Reply::Continue,
            Outcome::Value(()) => Reply::Ret(0),
            Outcome::Err(e) => Reply::Err(ve(e)),
            Outcome::Host(p) => self.host(host_op(&p), |()| Reply::Ret(0)),
        }
    }

    fn open(
        &self,
        t: &Target,
        l: Lookup<'_>,
        flags: i32,
        mode: u32,
        resolve: ResolveFlags,
    ) -> Reply {
        let mut lo = Lookup::for_open(l.path, l.base, flags);
        lo.magic = l.magic;
        lo.cred = l.cred;
        lo.resolve = resolve;
        let r = self.resolve(t, &lo);
        self.record(&r, true);
        if let Resolved::Host {
            rewritten: false, ..
        } = r
        {
            return Reply::Continue;
        }
        match self.ns.open(&r, flags, Some(&self.cred)) {
            Outcome::Continue => Reply::Continue,
            Outcome::Err(e) => Reply::Err(ve(e)),
            Outcome::Value(o) => {
                self.counts.injected.fetch_add(1, Ordering::Relaxed);
                Reply::Fd(o.fd, o.cloexec)
            }
            Outcome::Host(p) => self.host(host::open(&p, flags, mode), |fd| {
                Reply::Fd(fd, flags & libc::O_CLOEXEC != 0)
            }),
        }
    }

    fn stat_reply(&self, r: &Resolved, buf: u64, statx_mask: Option<u32>) -> Reply {
        match statx_mask {
            None => match self.ns.stat(r) {
                Outcome::Value(st) => Reply::Write {
                    addr: buf,
                    data: st.to_bytes().to_vec(),
                    ret: 0,
                },
                Outcome::Err(e) => Reply::Err(ve(e)),
                Outcome::Continue => Reply::Continue,
                Outcome::Host(p) => self.host(host::stat(&p, true), |st| Reply::Write {
                    addr: buf,
                    data: st.to_bytes().to_vec(),
                    ret: 0,
                }),
            },
            Some(_) => match self.ns.statx(r) {
                Outcome::Value(st) => Reply::Write {
                    addr: buf,
                    data: st.to_bytes().to_vec(),
                    ret: 0,
                },
                Outcome::Err(e) => Reply::Err(ve(e)),
                Outcome::Continue => Reply::Continue,
                Outcome::Host(p) => self.host(host::stat(&p, true), |st| Reply::Write {
                    addr: buf,
                    data: st
                        .to_statx_bytes(perch_syscalls::stat::STATX_BASIC_STATS)
                        .to_vec(),
                    ret: 0,
                }),
            },
        }
    }

    fn stat_call(&self, t: &Target, l: Lookup<'_>, buf: u64, statx_mask: Option<u32>) -> Reply {
        let r = self.resolve(t, &l);
        if let Resolved::Host {
            path,
            rewritten: true,
        } = &r
        {
            let follow = l.follow;
            return self.host(host::stat(path, follow), |st| Reply::Write {
                addr: buf,
                data: match statx_mask {
                    None => st.to_bytes().to_vec(),
                    Some(_) => st
                        .to_statx_bytes(perch_syscalls::stat::STATX_BASIC_STATS)
                        .to_vec(),
                },
                ret: 0,
            });
        }
        self.stat_reply(&r, buf, statx_mask)
    }

    fn statfs_reply(&self, r: &Resolved, buf: u64) -> Reply {
        match self.ns.statfs(r) {
            Outcome::Value(st) => Reply::Write {
                addr: buf,
                data: st.to_bytes().to_vec(),
                ret: 0,
            },
            Outcome::Err(e) => Reply::Err(ve(e)),
            _ => Reply::Continue,
        }
    }

    fn access(&self, t: &Target, l: Lookup<'_>, mode: i32) -> Reply {
        let r = self.resolve(t, &l);
        match self.ns.access(&r, mode, &self.cred) {
            Outcome::Continue => Reply::Continue,
            Outcome::Value(()) => Reply::Ret(0),
            Outcome::Err(e) => Reply::Err(ve(e)),
            Outcome::Host(p) => self.host(host::access(&p, mode), |()| Reply::Ret(0)),
        }
    }

    fn readlink(&self, t: &Target, l: Lookup<'_>, buf: u64, size: u64) -> Reply {
        let r = self.resolve(t, &l);
        let target = match self.ns.readlink(&r) {
            Outcome::Continue => return Reply::Continue,
            Outcome::Err(e) => return Reply::Err(ve(e)),
            Outcome::Value(v) => v,
            Outcome::Host(p) => match std::fs::read_link(&p) {
                Ok(v) => v.into_os_string().into_vec(),
                Err(e) => return Reply::Err(Errno::from_io(&e)),
            },
        };
        if i64::from_ne_bytes(size.to_ne_bytes()) <= 0 {
            return Reply::Err(Errno::EINVAL);
        }
        let len = target.len().min(usize_of(size));
        Reply::Write {
            addr: buf,
            ret: len_i64(len),
            data: target[..len].to_vec(),
        }
    }

    fn readlink_proc(&self, real: &Path, buf: u64, size: u64) -> Reply {
        let Ok(target) = std::fs::read_link(real) else {
            return Reply::Continue;
        };
        let t = bytes(&target);
        let body = t.strip_suffix(b" (deleted)").unwrap_or(t);
        if !self.in_shadow(body) {
            return Reply::Continue;
        }
        let out = self.ns.translate_out(t);
        if i64::from_ne_bytes(size.to_ne_bytes()) <= 0 {
            return Reply::Err(Errno::EINVAL);
        }
        let len = out.len().min(usize_of(size));
        Reply::Write {
            addr: buf,
            ret: len_i64(len),
            data: out[..len].to_vec(),
        }
    }

    fn getxattr_reply(&self, r: &Resolved, name: &[u8], value: u64, size: u64) -> Reply {
        match self.ns.getxattr(r, name, usize_of(size), Some(&self.cred)) {
            Outcome::Value(XattrReply::Size(n)) => Reply::Ret(len_i64(n)),
            Outcome::Value(XattrReply::Data(v)) => Reply::Write {
                addr: value,
                ret: len_i64(v.len()),
                data: v,
            },
            Outcome::Err(e) => Reply::Err(ve(e)),
            Outcome::Continue => Reply::Continue,
            Outcome::Host(_) => Reply::Err(Errno::ENODATA),
        }
    }

    fn listxattr_reply(&self, r: &Resolved, list: u64, size: u64) -> Reply {
        match self.ns.listxattr(r, usize_of(size)) {
            Outcome::Value(XattrReply::Size(n)) => Reply::Ret(len_i64(n)),
            Outcome::Value(XattrReply::Data(v)) => Reply::Write {
                addr: list,
                ret: len_i64(v.len()),
                data: v,
            },
            Outcome::Err(e) => Reply::Err(ve(e)),
            Outcome::Continue => Reply::Continue,
            Outcome::Host(_) => Reply::Ret(0),
        }
    }

    fn create(&self, t: &Target, l: Lookup<'_>, op: CreateOp) -> Reply {
        let o = self.ns.create(&l, op);
        let o = self.force_host(o, t, &l);
        self.unit(o, t, |p| match op {
            CreateOp::Mkdir => host::res(std::fs::create_dir(p)),
            _ => Err(Errno::ENOTSUP),
        })
    }

    fn remove(&self, t: &Target, l: Lookup<'_>, op: RemoveOp) -> Reply {
        let o = self.ns.remove(&l, op);
        let o = self.force_host(o, t, &l);
        self.unit(o, t, |p| match op {
            RemoveOp::Unlink => host::res(std::fs::remove_file(p)),
            RemoveOp::Rmdir => host::res(std::fs::remove_dir(p)),
        })
    }

    fn modify(&self, t: &Target, l: Lookup<'_>, op: ModifyOp) -> Reply {
        let r = self.resolve(t, &l);
        let o = self.ns.modify(&r, op);
        self.unit(o, t, |_| {
            // A write through a repository symlink leading to a host file: rare; refused
            // rather than done on the wrong object.
            Err(Errno::EXDEV)
        })
    }

    /// `-M`: a `Continue` outcome on a remapped path must be done by perch on the new path.
    fn force_host(&self, o: Outcome<()>, t: &Target, l: &Lookup<'_>) -> Outcome<()> {
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

    fn pair(
        &self,
        n: &Notification<'_>,
        dirfd: DirFd,
        old: Vec<u8>,
        newdirfd: DirFd,
        newptr: u64,
        kind: Pair,
    ) -> Result<Reply, Errno> {
        let new = match n.read_path(perch_syscalls::PathPtr(newptr)) {
            Ok(p) => p,
            Err(_) => return Ok(Reply::Continue),
        };
        let to = self.target(n, dirfd, old.clone())?;
        let tn = self.target(n, newdirfd, new.clone())?;
        if to.is_none() && tn.is_none() {
            return Ok(Reply::Continue);
        }
        // The side left to the kernel still needs an absolute form for the resolver.
        let fill = |t: Option<Target>, p: Vec<u8>, fd: DirFd| -> Result<Target, Errno> {
            match t {
                Some(t) => Ok(t),
                None if p.first() == Some(&b'/') => Ok(Target {
                    path: p,
                    base: b"/".to_vec(),
                    forced: false,
                }),
                None => Ok(Target {
                    path: p,
                    base: n.fd_path(fd).unwrap_or_else(|_| b"/".to_vec()),
                    forced: false,
                }),
            }
        };
        let to = fill(to, old, dirfd)?;
        let tn = fill(tn, new, newdirfd)?;
        let magic = self.magic(n);
        let lo = self.lookup(&to, &magic);
        let ln = self.lookup(&tn, &magic);
        let out = match kind {
            Pair::Rename(flags) => self.ns.rename(&lo.nofollow(), &ln.nofollow(), flags),
            Pair::Link(follow) => self.ns.link(&lo.follow(follow), &ln.nofollow()),
        };
        Ok(match out {
            PairOutcome::Continue => Reply::Continue,
            PairOutcome::Err(e) => Reply::Err(ve(e)),
            PairOutcome::Host(a, b) => {
                let r = match kind {
                    Pair::Rename(0) => std::fs::rename(&a, &b),
                    Pair::Rename(_) => return Ok(Reply::Err(Errno::EXDEV)),
                    Pair::Link(_) => std::fs::hard_link(&a, &b),
                };
                self.host(r.map_err(|e| Errno::from_io(&e)), |()| Reply::Ret(0))
            }
        })
    }

    fn getcwd(&self, n: &Notification<'_>, buf: u64, size: u64) -> Result<Reply, Errno> {
        let cwd = n.fd_path(DirFd(perch_syscalls::AT_FDCWD))?;
        let Some(v) = self.to_virtual(&cwd) else {
            return Ok(Reply::Continue);
        };
        let mut v = v;
        v.push(0);
        if usize_of(size) < v.len() {
            return Ok(Reply::Err(Errno::ERANGE));
        }
        Ok(Reply::Write {
            addr: buf,
            ret: len_i64(v.len()),
            data: v,
        })
    }

    fn answer(&self, n: Notification<'_>, reply: Reply, line: Option<String>) {
        if let Some(line) = line {
            tracing::debug!(target: "perch::syscall", pid = n.pid().0, "{line} = {reply}");
        }
        match reply {
            Reply::Continue => {
                self.counts.continued.fetch_add(1, Ordering::Relaxed);
                n.continue_unchecked()
            }
            other => {
                self.counts.virtual_.fetch_add(1, Ordering::Relaxed);
                match other {
                    Reply::Continue => unreachable_continue(n),
                    Reply::Err(e) => n.error(e),
                    Reply::Ret(v) => n.ret(v),
                    Reply::Write { addr, data, ret } => match n.write_memory(addr, &data) {
                        Ok(()) => n.ret(ret),
                        Err(e) => n.error(e),
                    },
                    Reply::Fd(fd, cloexec) => n.inject_fd(fd, cloexec),
                }
            }
        }
    }

    // ---- traced: execve, execveat, chdir ----

    fn trace_base(&self, t: &TracedCall, dirfd: DirFd) -> Option<Vec<u8>> {
        let link = if dirfd.is_cwd() {
            format!("/proc/{}/cwd", t.pid().0)
        } else {
            format!("/proc/{}/fd/{}", t.pid().0, dirfd.0)
        };
        let b = std::fs::read_link(link).ok()?.into_os_string().into_vec();
        Some(self.to_virtual(&b).unwrap_or(b))
    }

    /// The path of a traced call as perch must look it up, `None` to let it run unchanged.
    fn trace_target(&self, t: &TracedCall, dirfd: DirFd, path: Vec<u8>) -> Option<Target> {
        let (path, forced) = match self.remap(&path) {
            Some(p) => (p, true),
            None => (path, false),
        };
        if path.first() == Some(&b'/') {
            if !forced && self.plainly_host(&path) {
                return None;
            }
            return Some(Target {
                path,
                base: b"/".to_vec(),
                forced,
            });
        }
        let base = self.trace_base(t, dirfd)?;
        let virtual_base = base.starts_with(&self.mp) && self.ns.is_under_mountpoint(&base);
        if !forced && !virtual_base && !contains(&path, &self.mp_name) {
            return None;
        }
        Some(Target { path, base, forced })
    }

    /// The real file an exec of `tg` runs, `None` when the kernel finds it by itself.
    fn exec_real(&self, tg: &Target, magic: &Magic<'_>) -> Result<Option<PathBuf>, Errno> {
        let l = self.lookup(tg, magic);
        let r = self.resolve(tg, &l);
        match self.ns.exec_path(&r, Some(&self.cred)) {
            Outcome::Continue => Ok(None),
            Outcome::Err(e) => Err(ve(e)),
            Outcome::Host(p) | Outcome::Value(p) => Ok(Some(p)),
        }
    }

    fn on_exec(&self, t: &TracedCall, dirfd: DirFd, path: Vec<u8>) -> TraceAction {
        let Some(tg) = self.trace_target(t, dirfd, path.clone()) else {
            return TraceAction::Continue;
        };
        let magic = Magic {
            ns: &self.ns,
            tid: t.pid().0,
        };
        let real = match self.exec_real(&tg, &magic) {
            Ok(Some(p)) => p,
            Ok(None) => return TraceAction::Continue,
            Err(e) => return TraceAction::Fail(e),
        };
        self.counts.rewritten.fetch_add(1, Ordering::Relaxed);
        let cwd = DirFd(perch_syscalls::AT_FDCWD);
        // What finally runs: its real file, its path as named, argv[0], and the arguments
        // that go between argv[0] and the original argv[1..].
        let (program, program_tg, argv0, chain) = match exec::shebang(&read_head(&real)) {
            Some(sb) => {
                // The kernel would look each interpreter up from the program's cwd: so do we.
                let resolve = |interp: &[u8]| -> Result<Option<PathBuf>, Errno> {
                    match self.trace_target(t, cwd, interp.to_vec()) {
                        None => Ok(None),
                        Some(it) => self.exec_real(&it, &magic),
                    }
                };
                let c = match exec::script_chain(path, sb, resolve, read_head) {
                    Ok(c) => c,
                    Err(exec::ChainError::TooDeep) => return TraceAction::Fail(Errno::ELOOP),
                    Err(exec::ChainError::Resolve(e)) => return TraceAction::Fail(e),
                };
                let program_tg = self.trace_target(t, cwd, c.name.clone());
                (c.program, program_tg, c.name, Some(c.prepend))
            }
            None => {
                let argv0 = read_argv0(t).unwrap_or_else(|| path.clone());
                (real, Some(tg), argv0, None)
            }
        };
        if let (Some(ptg), Some(interp)) = (&program_tg, exec::elf_interp(&program)) {
            if let Some(it) = self.trace_target(t, cwd, interp.clone()) {
                let l = self.lookup(&it, &magic);
                let r = self.resolve(&it, &l);
                if let Outcome::Value(loader) = self.ns.exec_path(&r, Some(&self.cred)) {
                    // Run the loader from its shadow file: `ld.so --argv0 ARGV0 PROGRAM ARGS`;
                    // the loader opens PROGRAM by its virtual path, through perch.
                    let mut program = if ptg.path.first() == Some(&b'/') {
                        Vec::new()
                    } else {
                        let mut b = ptg.base.clone();
                        b.push(b'/');
                        b
                    };
                    program.extend_from_slice(&ptg.path);
                    let mut prepend = vec![interp, b"--argv0".to_vec(), argv0, program];
                    prepend.extend(chain.into_iter().flatten().skip(1));
                    return TraceAction::RewriteExec {
                        path: bytes(&loader).to_vec(),
                        prepend,
                        skip: 1,
                    };
                }
            }
        }
        match chain {
            Some(prepend) => TraceAction::RewriteExec {
                path: bytes(&program).to_vec(),
                prepend,
                skip: 1,
            },
            None => TraceAction::Rewrite(bytes(&program).to_vec()),
        }
    }

    fn on_chdir(&self, t: &TracedCall, path: Vec<u8>) -> TraceAction {
        let Some(tg) = self.trace_target(t, DirFd(perch_syscalls::AT_FDCWD), path) else {
            return TraceAction::Continue;
        };
        let magic = Magic {
            ns: &self.ns,
            tid: t.pid().0,
        };
        let l = self.lookup(&tg, &magic);
        let r = self.resolve(&tg, &l);
        match self.ns.chdir_path(&r, Some(&self.cred)) {
            Outcome::Continue => TraceAction::Continue,
            Outcome::Err(e) => TraceAction::Fail(ve(e)),
            Outcome::Host(p) | Outcome::Value(p) => {
                self.counts.rewritten.fetch_add(1, Ordering::Relaxed);
                TraceAction::Rewrite(bytes(&p).to_vec())
            }
        }
    }
}

fn unreachable_continue(n: Notification<'_>) {
    n.continue_unchecked()
}

#[derive(Clone, Copy)]
enum Pair {
    Rename(u32),
    Link(bool),
}

fn read_head(p: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(exec::BINPRM_BUF_SIZE);
    if let Ok(f) = std::fs::File::open(p) {
        let _ = f.take(exec::BINPRM_BUF_SIZE as u64).read_to_end(&mut buf);
    }
    buf
}

fn read_argv0(t: &TracedCall) -> Option<Vec<u8>> {
    let argv = match *t.call() {
        Call::Execve { argv, .. } | Call::Execveat { argv, .. } => argv.0,
        _ => return None,
    };
    if argv == 0 {
        return None;
    }
    let mut b = [0u8; 8];
    if t.read_memory(argv, &mut b).ok()? != 8 {
        return None;
    }
    let p = u64::from_ne_bytes(b);
    if p == 0 {
        return None;
    }
    t.read_cstr(p, perch_syscalls::PATH_MAX * 32).ok()
}

impl Handler for PerchHandler {
    fn on_syscall(&self, n: Notification<'_>) {
        let line = self.log.then(|| n.display());
        let reply = match self.classify(&n) {
            Ok(r) => r,
            // The caller is gone (ENOENT from the validity check): any answer is lost.
            Err(e) => Reply::Err(e),
        };
        self.answer(n, reply, line);
    }

    fn on_trace_path(&self, t: &TracedCall) -> TraceAction {
        let action = match *t.call() {
            Call::Execve { path, .. } => match t.read_path(path) {
                Ok(p) => self.on_exec(t, DirFd(perch_syscalls::AT_FDCWD), p),
                Err(_) => TraceAction::Continue,
            },
            Call::Execveat {
                dirfd, path, flags, ..
            } => match t.read_path(path) {
                // fexecve of an fd: the kernel runs the file the fd is (a shadow file, already
                // materialized when it was opened).
                Ok(p) if p.is_empty() && flags.0 & at::AT_EMPTY_PATH != 0 => TraceAction::Continue,
                Ok(p) => self.on_exec(t, dirfd, p),
                Err(_) => TraceAction::Continue,
            },
            Call::Chdir { path } => match t.read_path(path) {
                Ok(p) => self.on_chdir(t, p),
                Err(_) => TraceAction::Continue,
            },
            _ => TraceAction::Continue,
        };
        if self.log && action != TraceAction::Continue {
            tracing::debug!(target: "perch::syscall", pid = t.pid().0, "{} => {}", t.call().display(t), show_action(&action));
        }
        action
    }
}

fn show_action(a: &TraceAction) -> String {
    match a {
        TraceAction::Continue => "continue".into(),
        TraceAction::Rewrite(p) => format!("rewritten to {:?}", String::from_utf8_lossy(p)),
        TraceAction::RewriteExec {
            path,
            prepend,
            skip,
        } => format!(
            "exec {:?} argv {:?} + argv[{skip}..]",
            String::from_utf8_lossy(path),
            prepend
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
        ),
        TraceAction::Fail(e) => format!("-1 {}", e.name().unwrap_or("E?")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_paths_name_the_caller() {
        assert_eq!(
            proc_path(b"/proc/self/fd/3", 42),
            Some(PathBuf::from("/proc/42/fd/3"))
        );
        assert_eq!(
            proc_path(b"/dev/fd/0", 7),
            Some(PathBuf::from("/proc/7/fd/0"))
        );
        assert_eq!(
            proc_path(b"/proc/thread-self/cwd", 9),
            Some(PathBuf::from("/proc/9/cwd"))
        );
        assert_eq!(
            proc_path(b"/proc/123/exe", 9),
            Some(PathBuf::from("/proc/123/exe"))
        );
        assert_eq!(proc_path(b"/proc/cpuinfo", 9), None);
        assert_eq!(proc_path(b"/etc/passwd", 9), None);
    }
}
