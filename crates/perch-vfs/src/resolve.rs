//! Path resolution over the mixed namespace: the host, with the virtual `/cvmfs` grafted in.
//!
//! # The rules (what Linux does, and where we stop)
//! * Components are walked left to right as in `link_path_walk`: `.` stays, `..` goes up
//!   (`..` of `/cvmfs/<fqrn>` is `/cvmfs`, of `/cvmfs` is `/`, of `/` is `/`); every
//!   component after the first must name a searchable directory (`ENOTDIR`, `EACCES`).
//! * Symlinks inside a repository are followed by us (relative to their directory, absolute from
//!   `/`, possibly leaving `/cvmfs` or entering another repository); at most 40 per lookup
//!   (`ELOOP` on the 41st, like `MAXSYMLINKS`). The last component is followed when the caller
//!   asks (`follow`) or when the path ends in `/` (which also requires a directory). An empty
//!   target is `ENOENT`.
//! * `PATH_MAX` (4096 including the NUL) gives `ENAMETOOLONG` before anything else; a component
//!   longer than `NAME_MAX` (255) gives `ENAMETOOLONG` when it is looked up in a repository.
//! * `openat2` `RESOLVE_*`: `NO_SYMLINKS` (any symlink followed → `ELOOP`; a final one not
//!   followed is returned), `NO_MAGICLINKS` (a `/proc` magic link into `/cvmfs` → `ELOOP`),
//!   `BENEATH` (absolute path or symlink, `..` above the base, magic link → `EXDEV`), `IN_ROOT`
//!   (`/` and `..` clamp at the base), `NO_XDEV` (crossing host ↔ `/cvmfs` ↔ a repository, each
//!   a mount in the real client → `EXDEV`; host-internal mounts are the kernel's business),
//!   `CACHED` (anything virtual → `EAGAIN`, the caller retries without it, as io_uring does).
//!
//! # Host components: classified lexically, resolved by the kernel
//! We never `lstat` host paths. While the walk is on the host we only keep its lexical position
//! (to notice that it enters the mount point, e.g. `cwd=/` and `cvmfs/x`, or `..` from the
//! canonical cwd) and the exact bytes the kernel must see. When the walk ends on the host the
//! result is [`Resolved::Host`]: if nothing virtual was involved the caller continues the
//! syscall unchanged (the kernel resolves host symlinks exactly); otherwise (a repository
//! symlink led out, or the base is virtual) the path is the point where the walk left the
//! repository followed by the remaining components verbatim, so the kernel still resolves host
//! symlinks and `..` itself. Why not follow host symlinks ourselves: every non-virtual path would
//! cost an `lstat` per component in the supervisor (the hot path must answer CONTINUE at once),
//! the supervisor may lack the tracee's permissions or mount namespace, and the result would race
//! with the program's own changes to its files. The price, documented: a host symlink that
//! points into `/cvmfs` (e.g. `/opt/sw -> /cvmfs/sw.example.org`) is not followed into the
//! repository, and `host_symlink/../cvmfs/x` is classified by its lexical form.
//!
//! `/proc/<pid>/{fd/N,cwd,exe,root}` (and the `task/<tid>/` forms) are magic links: if the
//! caller supplies [`MagicLinks`], links whose targets are virtual objects (shadow-tree paths,
//! already translated) are followed into the repository.

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::{Entry, Errno, Namespace, Repository};

/// `PATH_MAX` (perch-syscalls'): a path of this many bytes or more (without the NUL) is
/// `ENAMETOOLONG`.
pub use perch_syscalls::PATH_MAX;
/// `NAME_MAX`: longest component.
pub const NAME_MAX: usize = 255;
/// `MAXSYMLINKS`: symlinks followed in one lookup before `ELOOP`.
pub const MAX_SYMLINKS: u32 = 40;

pub use perch_syscalls::ResolveFlags;

/// Credentials for permission checks, as the kernel uses them (fsuid/fsgid for most calls, the
/// real ids for `access(2)` without `AT_EACCESS`: the caller picks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cred {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// `CAP_DAC_OVERRIDE` (root, or a capable process): bypasses read/write/search checks and
    /// exec checks when any exec bit is set, like `generic_permission`.
    pub privileged: bool,
}

impl Cred {
    /// An unprivileged user with no supplementary groups.
    pub fn user(uid: u32, gid: u32) -> Cred {
        Cred {
            uid,
            gid,
            groups: Vec::new(),
            privileged: uid == 0,
        }
    }

    /// `generic_permission` for `mask` (bits of `R_OK`=4, `W_OK`=2, `X_OK`=1) on an entry.
    /// Read-only file system checks (`EROFS`) are the caller's, before this.
    pub fn permits(&self, entry: &Entry, mask: u32) -> bool {
        let mask = mask & 7;
        if self.privileged {
            // CAP_DAC_OVERRIDE: everything, except exec of a non-directory without any x bit.
            return mask & 1 == 0 || entry.is_dir() || entry.mode & 0o111 != 0;
        }
        let bits = if self.uid == entry.uid {
            entry.mode >> 6
        } else if self.gid == entry.gid || self.groups.contains(&entry.gid) {
            entry.mode >> 3
        } else {
            entry.mode
        } & 7;
        bits & mask == mask
    }
}

/// Resolves `/proc/<pid>/fd/N`, `/proc/<pid>/cwd`, `/proc/<pid>/exe`, `/proc/<pid>/root` (and
/// `self`, `thread-self`, `task/<tid>/…`) for the calling process.
pub trait MagicLinks {
    /// `path` is the lexical host path of a magic link (`b"/proc/self/fd/3"`). Return the
    /// *virtual* path it designates (`b"/cvmfs/repo/dir"`, i.e. the kernel's target already
    /// passed through [`Namespace::translate_out`]) if that is under the mount point, else `None`
    /// (the kernel then follows it itself).
    fn magic_link(&self, path: &[u8]) -> Option<Vec<u8>>;
}

/// One path lookup: the path, what it is relative to, and how the last component is treated.
#[derive(Clone, Copy)]
pub struct Lookup<'a> {
    /// The path as the program passed it (bytes, no NUL).
    pub path: &'a [u8],
    /// Absolute *virtual* directory a relative path starts from: the cwd or the dirfd's target,
    /// already translated from shadow to virtual form (`/cvmfs/r/dir`, or a host path).
    pub base: &'a [u8],
    /// Follow a symlink in the last component (`!O_NOFOLLOW`, `!AT_SYMLINK_NOFOLLOW`, `stat`
    /// vs `lstat`). A trailing `/` always follows.
    pub follow: bool,
    /// The result must be a directory (`O_DIRECTORY`); else `ENOTDIR`.
    pub directory: bool,
    /// `AT_EMPTY_PATH`: an empty path names `base` itself (else it is `ENOENT`).
    pub empty_path: bool,
    /// `openat2` resolve flags; `IN_ROOT`/`BENEATH` use `base` as the root.
    pub resolve: ResolveFlags,
    /// Check search permission on virtual directories walked through (`None`: no checks).
    pub cred: Option<&'a Cred>,
    /// Magic `/proc` links of the calling process (`None`: left to the kernel).
    pub magic: Option<&'a dyn MagicLinks>,
}

impl<'a> Lookup<'a> {
    /// Lookup of `path` relative to `base`, following the last symlink, no flags.
    pub fn new(path: &'a [u8], base: &'a [u8]) -> Lookup<'a> {
        Lookup {
            path,
            base,
            follow: true,
            directory: false,
            empty_path: false,
            resolve: ResolveFlags::default(),
            cred: None,
            magic: None,
        }
    }

    /// Do not follow a symlink in the last component.
    pub fn nofollow(mut self) -> Self {
        self.follow = false;
        self
    }

    /// Set `follow`.
    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    /// Require a directory.
    pub fn directory(mut self) -> Self {
        self.directory = true;
        self
    }

    /// Allow an empty path (`AT_EMPTY_PATH`).
    pub fn empty_path(mut self) -> Self {
        self.empty_path = true;
        self
    }

    /// Set `openat2` resolve flags.
    pub fn resolve(mut self, flags: ResolveFlags) -> Self {
        self.resolve = flags;
        self
    }

    /// Check permissions for these credentials.
    pub fn cred(mut self, cred: &'a Cred) -> Self {
        self.cred = Some(cred);
        self
    }

    /// Follow `/proc` magic links through this resolver.
    pub fn magic(mut self, magic: &'a dyn MagicLinks) -> Self {
        self.magic = Some(magic);
        self
    }

    /// The lookup an `open`/`openat`/`openat2` with these `O_*` flags does: `O_NOFOLLOW` and
    /// `O_CREAT|O_EXCL` do not follow the last symlink; `O_DIRECTORY` requires a directory
    /// (`O_TMPFILE` contains the `O_DIRECTORY` bit, as in the kernel).
    pub fn for_open(path: &'a [u8], base: &'a [u8], flags: i32) -> Lookup<'a> {
        let excl = flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0;
        Lookup {
            follow: flags & libc::O_NOFOLLOW == 0 && !excl,
            directory: flags & libc::O_DIRECTORY != 0,
            ..Lookup::new(path, base)
        }
    }
}

/// Where a path leads.
#[derive(Clone)]
pub enum Resolved {
    /// A host path: let the kernel do it. `rewritten == false`: the program's own arguments
    /// resolve the same way, continue the syscall unchanged. `rewritten == true`: a repository
    /// symlink or a virtual base was involved; the call must be done on `path` instead.
    Host {
        /// Absolute host path (verbatim components after the point the walk left `/cvmfs`).
        path: PathBuf,
        /// Whether the program's own path would resolve differently.
        rewritten: bool,
    },
    /// An object under the mount point.
    Virtual {
        /// The repository; `None` for the mount point (`/cvmfs`) itself.
        repo: Option<Arc<dyn Repository>>,
        /// Repository-relative path (`""` root, else `/a/b`); empty when `repo` is `None`.
        path: Vec<u8>,
        /// Its metadata (for `/cvmfs`: a synthetic read-only directory).
        entry: Entry,
    },
    /// The lookup failed with `errno`.
    Missing {
        /// `ENOENT`, `ENOTDIR`, `ELOOP`, `ENAMETOOLONG`, `EACCES`, `EXDEV`, `EIO`, ...
        errno: Errno,
        /// Only the last component is missing and its directory is virtual: creating it would
        /// hit the read-only file system (`O_CREAT`, `mkdir` → `EROFS`).
        in_virtual_dir: bool,
    },
}

impl Resolved {
    pub(crate) fn err(errno: Errno) -> Resolved {
        Resolved::Missing {
            errno,
            in_virtual_dir: false,
        }
    }

    /// True for [`Resolved::Virtual`].
    pub fn is_virtual(&self) -> bool {
        matches!(self, Resolved::Virtual { .. })
    }

    /// The entry of a virtual result.
    pub fn entry(&self) -> Option<&Entry> {
        match self {
            Resolved::Virtual { entry, .. } => Some(entry),
            _ => None,
        }
    }

    /// The errno of a failed lookup.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Resolved::Missing { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resolved::Host { path, rewritten } => f
                .debug_struct("Host")
                .field("path", path)
                .field("rewritten", rewritten)
                .finish(),
            Resolved::Virtual { repo, path, entry } => f
                .debug_struct("Virtual")
                .field("repo", &repo.as_ref().map(|r| r.fqrn().to_owned()))
                .field("path", &String::from_utf8_lossy(path))
                .field("entry", entry)
                .finish(),
            Resolved::Missing {
                errno,
                in_virtual_dir,
            } => f
                .debug_struct("Missing")
                .field("errno", errno)
                .field("in_virtual_dir", in_virtual_dir)
                .finish(),
        }
    }
}

/// Kind of the last component of a path whose parent is resolved ([`Namespace::resolve_parent`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Last {
    /// A normal name.
    Name(Vec<u8>),
    /// `.`
    Dot,
    /// `..`
    DotDot,
    /// The path has no components (`/`, or empty with `AT_EMPTY_PATH`).
    Root,
}

/// Result of resolving all but the last component (`filename_parentat` in the kernel), used by
/// the write family (`mkdir`, `unlink`, `rename`, ...).
#[derive(Debug)]
pub enum ParentResolved {
    /// The parent is on the host (see [`Resolved::Host`] for `rewritten`); `path` is the whole
    /// path including the last component.
    Host {
        /// The full host path for the kernel.
        path: PathBuf,
        /// Whether it differs from the program's own.
        rewritten: bool,
    },
    /// The parent is a virtual directory.
    Virtual {
        /// The parent (always a directory).
        parent: Resolved,
        /// The last component.
        last: Last,
        /// The path ended in `/`.
        trailing_slash: bool,
    },
    /// The last component *is* the mount point (`/cvmfs`) seen from its host parent.
    MountPoint,
    /// Resolving the parent failed.
    Err(Errno),
}

/// A piece of path still to walk.
struct Piece {
    name: Vec<u8>,
    /// The piece was followed by `/` at the end of its string (path or symlink body).
    trailing_slash: bool,
}

/// Split a path into pieces, pushed in reverse onto `pending` (so the first piece pops first).
/// `inherit_slash` marks the last piece as slash-terminated (a symlink in a slash-terminated
/// position passes that on to its target's last component).
fn push_pieces(pending: &mut Vec<Piece>, path: &[u8], inherit_slash: bool) {
    let trailing = path.last() == Some(&b'/') || inherit_slash;
    let names: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let n = names.len();
    for (i, name) in names.into_iter().enumerate().rev() {
        pending.push(Piece {
            name: name.to_vec(),
            trailing_slash: trailing && i + 1 == n,
        });
    }
}

#[derive(Clone)]
enum Node {
    Host,
    Root,
    Repo(Option<Entry>),
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum MountId {
    Host,
    Root,
    Repo(Vec<u8>),
}

struct Walk<'n, 'a> {
    ns: &'n Namespace,
    req: &'a Lookup<'a>,
    stack: Vec<(Vec<u8>, Node)>,
    repo: Option<Arc<dyn Repository>>,
    root_len: usize,
    links: u32,
    /// The kernel-facing host path while the walk is on the host.
    raw: Option<Vec<u8>>,
    touched_virtual: bool,
    start_mount: MountId,
    last_slash: bool,
}

// The walk's error is its final answer (a `Resolved`), moved out once per lookup; boxing it
// would cost an allocation on every miss.
#[allow(clippy::result_large_err)]
impl<'n, 'a> Walk<'n, 'a> {
    fn mp(&self) -> &[Vec<u8>] {
        &self.ns.mp_components
    }

    fn lexical(&self, upto: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, _) in &self.stack[..upto] {
            out.push(b'/');
            out.extend_from_slice(name);
        }
        if out.is_empty() {
            out.push(b'/');
        }
        out
    }

    fn repo_path(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, _) in self.stack.iter().skip(self.mp().len() + 1) {
            out.push(b'/');
            out.extend_from_slice(name);
        }
        out
    }

    fn top(&self) -> &Node {
        self.stack.last().map_or(&Node::Host, |(_, n)| n)
    }

    fn mount_id(&self) -> MountId {
        match self.top() {
            Node::Host => MountId::Host,
            Node::Root => MountId::Root,
            Node::Repo(_) => MountId::Repo(self.stack[self.mp().len()].0.clone()),
        }
    }

    fn check_xdev(&self) -> Result<(), Resolved> {
        if self.req.resolve.contains(ResolveFlags::NO_XDEV) && self.mount_id() != self.start_mount {
            return Err(Resolved::err(Errno::EXDEV));
        }
        Ok(())
    }

    /// After the stack changed (pop or truncate): fix `repo`, `raw`.
    fn settle(&mut self) {
        if self.stack.len() <= self.mp().len() {
            self.repo = None;
        }
        match self.top() {
            Node::Host => {
                if self.raw.is_none() {
                    self.raw = Some(self.lexical(self.stack.len()));
                }
            }
            _ => self.raw = None,
        }
    }

    fn raw_append(&mut self, name: &[u8]) {
        if let Some(raw) = &mut self.raw {
            if raw.last() != Some(&b'/') {
                raw.push(b'/');
            }
            raw.extend_from_slice(name);
        }
    }

    /// The entry of the top node when it is in a repository (computed on demand).
    fn top_entry(&mut self) -> Result<Option<Entry>, Resolved> {
        let Some((_, Node::Repo(cached))) = self.stack.last() else {
            return Ok(None);
        };
        if let Some(e) = cached {
            return Ok(Some(e.clone()));
        }
        let path = self.repo_path();
        let repo = self.repo.clone().ok_or_else(|| Resolved::err(Errno::EIO))?;
        match repo.lookup(&path) {
            Ok(Some(e)) => {
                if let Some((_, Node::Repo(slot))) = self.stack.last_mut() {
                    *slot = Some(e.clone());
                }
                Ok(Some(e))
            }
            Ok(None) => Err(Resolved::err(Errno::ENOENT)),
            Err(e) => Err(Resolved::err(e.errno())),
        }
    }

    /// The current node must be a searchable directory before a component is walked from it.
    fn check_dir(&mut self) -> Result<(), Resolved> {
        match self.top().clone() {
            Node::Host => Ok(()),
            Node::Root => Ok(()),
            Node::Repo(_) => {
                let entry = self.top_entry()?.ok_or_else(|| Resolved::err(Errno::EIO))?;
                if !entry.is_dir() {
                    return Err(Resolved::err(Errno::ENOTDIR));
                }
                if let Some(cred) = self.req.cred {
                    if !cred.permits(&entry, 1) {
                        return Err(Resolved::err(Errno::EACCES));
                    }
                }
                Ok(())
            }
        }
    }

    fn go_root(&mut self) -> Result<(), Resolved> {
        let r = self.req.resolve;
        if r.contains(ResolveFlags::BENEATH) {
            return Err(Resolved::err(Errno::EXDEV));
        }
        let keep = if r.contains(ResolveFlags::IN_ROOT) {
            self.root_len
        } else {
            0
        };
        self.stack.truncate(keep);
        self.raw = None;
        self.settle();
        self.check_xdev()
    }

    fn dotdot(&mut self) -> Result<(), Resolved> {
        if self.stack.len() <= self.root_len {
            if self.req.resolve.contains(ResolveFlags::BENEATH) {
                return Err(Resolved::err(Errno::EXDEV));
            }
            // At the root ("/.." is "/"; IN_ROOT clamps at the base).
            if !self.stack.is_empty() {
                self.raw_append(b"..");
            }
            return Ok(());
        }
        let was_host = matches!(self.top(), Node::Host);
        self.stack.pop();
        if was_host {
            self.raw_append(b"..");
        }
        self.settle();
        self.check_xdev()
    }

    fn is_magic(&self) -> bool {
        let n: Vec<&[u8]> = self.stack.iter().map(|(s, _)| s.as_slice()).collect();
        if n.first() != Some(&&b"proc"[..]) {
            return false;
        }
        let tail = match n.len() {
            3 | 4 => &n[2..],
            5 | 6 if n[2] == b"task" => &n[4..],
            _ => return false,
        };
        match tail {
            [x] => matches!(*x, b"cwd" | b"exe" | b"root"),
            [fd, num] => *fd == b"fd" && !num.is_empty() && num.iter().all(u8::is_ascii_digit),
            _ => false,
        }
    }

    fn follow_link(
        &mut self,
        target: &[u8],
        trailing_slash: bool,
        pending: &mut Vec<Piece>,
    ) -> Result<(), Resolved> {
        self.links += 1;
        if self.req.resolve.contains(ResolveFlags::NO_SYMLINKS) || self.links > MAX_SYMLINKS {
            return Err(Resolved::err(Errno::ELOOP));
        }
        if target.is_empty() {
            return Err(Resolved::err(Errno::ENOENT));
        }
        if target.len() >= PATH_MAX {
            return Err(Resolved::err(Errno::ENAMETOOLONG));
        }
        // The link itself is not part of the position any more.
        self.stack.pop();
        self.settle();
        push_pieces(pending, target, trailing_slash);
        if target[0] == b'/' {
            self.go_root()?;
        }
        Ok(())
    }

    /// Walk one normal component.
    fn component(
        &mut self,
        piece: Piece,
        is_last: bool,
        pending: &mut Vec<Piece>,
    ) -> Result<(), Resolved> {
        let follow_last = self.req.follow || piece.trailing_slash;
        match self.top().clone() {
            Node::Host => {
                let depth = self.stack.len();
                let enters = depth + 1 == self.mp().len()
                    && self.stack.iter().zip(self.mp()).all(|((a, _), b)| a == b)
                    && piece.name == self.mp()[depth];
                if enters {
                    self.enter_virtual()?;
                    self.stack.push((piece.name, Node::Root));
                    self.raw = None;
                    return self.check_xdev();
                }
                self.raw_append(&piece.name);
                self.stack.push((piece.name, Node::Host));
                if (!is_last || follow_last) && self.is_magic() {
                    if let Some(magic) = self.req.magic {
                        let lexical = self.lexical(self.stack.len());
                        if let Some(target) = magic.magic_link(&lexical) {
                            let r = self.req.resolve;
                            if r.contains(ResolveFlags::NO_MAGICLINKS)
                                || r.contains(ResolveFlags::NO_SYMLINKS)
                            {
                                return Err(Resolved::err(Errno::ELOOP));
                            }
                            if r.contains(ResolveFlags::BENEATH)
                                || r.contains(ResolveFlags::IN_ROOT)
                            {
                                return Err(Resolved::err(Errno::EXDEV));
                            }
                            self.links += 1;
                            if self.links > MAX_SYMLINKS {
                                return Err(Resolved::err(Errno::ELOOP));
                            }
                            self.stack.clear();
                            self.raw = None;
                            self.settle();
                            push_pieces(pending, &target, piece.trailing_slash);
                        }
                    }
                }
                Ok(())
            }
            Node::Root => {
                self.enter_virtual()?;
                if piece.name.len() > NAME_MAX {
                    return Err(Resolved::err(Errno::ENAMETOOLONG));
                }
                let fqrn = String::from_utf8(piece.name.clone()).ok();
                let repo = match fqrn.as_deref().map(|f| self.ns.mount(f)) {
                    Some(Ok(Some(repo))) => repo,
                    Some(Err(e)) => return Err(Resolved::err(e.errno())),
                    None | Some(Ok(None)) => {
                        return Err(Resolved::Missing {
                            errno: Errno::ENOENT,
                            in_virtual_dir: is_last,
                        })
                    }
                };
                let entry = match repo.lookup(b"") {
                    Ok(Some(e)) => e,
                    Ok(None) => return Err(Resolved::err(Errno::EIO)),
                    Err(e) => return Err(Resolved::err(e.errno())),
                };
                self.repo = Some(repo);
                self.stack.push((piece.name, Node::Repo(Some(entry))));
                self.check_xdev()
            }
            Node::Repo(_) => {
                if piece.name.len() > NAME_MAX {
                    return Err(Resolved::err(Errno::ENAMETOOLONG));
                }
                let mut path = self.repo_path();
                path.push(b'/');
                path.extend_from_slice(&piece.name);
                let repo = self.repo.clone().ok_or_else(|| Resolved::err(Errno::EIO))?;
                let entry = match repo.lookup(&path) {
                    Ok(Some(e)) => e,
                    Ok(None) => {
                        return Err(Resolved::Missing {
                            errno: Errno::ENOENT,
                            in_virtual_dir: is_last,
                        })
                    }
                    Err(e) => return Err(Resolved::err(e.errno())),
                };
                let link = entry
                    .symlink
                    .clone()
                    .filter(|_| entry.kind == crate::Kind::Symlink);
                self.stack.push((piece.name, Node::Repo(Some(entry))));
                if let Some(target) = link {
                    if !is_last || follow_last {
                        self.follow_link(&target, piece.trailing_slash, pending)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn enter_virtual(&mut self) -> Result<(), Resolved> {
        self.touched_virtual = true;
        if self.req.resolve.contains(ResolveFlags::CACHED) {
            return Err(Resolved::err(Errno::EAGAIN));
        }
        Ok(())
    }

    fn init(&mut self, base: &[u8]) -> Result<(), Resolved> {
        for name in base.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            match name {
                b"." => {}
                b".." => {
                    self.stack.pop();
                }
                _ => self.stack.push((name.to_vec(), Node::Host)),
            }
        }
        // Classify the base's components.
        let mp_len = self.mp().len();
        let in_mp = self.stack.len() >= mp_len
            && self.stack.iter().zip(self.mp()).all(|((a, _), b)| a == b);
        if in_mp {
            self.touched_virtual = true;
            self.stack[mp_len - 1].1 = Node::Root;
            for i in mp_len..self.stack.len() {
                self.stack[i].1 = Node::Repo(None);
            }
            if self.stack.len() > mp_len {
                let fqrn = String::from_utf8_lossy(&self.stack[mp_len].0).into_owned();
                match self.ns.mount(&fqrn) {
                    Ok(Some(repo)) => self.repo = Some(repo),
                    Ok(None) => return Err(Resolved::err(Errno::ENOENT)),
                    Err(e) => return Err(Resolved::err(e.errno())),
                }
            }
        } else {
            self.raw = Some(self.lexical(self.stack.len()));
        }
        let r = self.req.resolve;
        self.root_len = if r.contains(ResolveFlags::IN_ROOT) || r.contains(ResolveFlags::BENEATH) {
            self.stack.len()
        } else {
            0
        };
        self.start_mount = self.mount_id();
        Ok(())
    }

    /// Walk `pieces`; `stop_before_last` leaves the last piece of the original path unwalked.
    fn run(&mut self, stop_before_last: bool) -> Result<Option<Piece>, Resolved> {
        let path = self.req.path;
        if path.len() >= PATH_MAX {
            return Err(Resolved::err(Errno::ENAMETOOLONG));
        }
        if path.is_empty() && !self.req.empty_path {
            return Err(Resolved::err(Errno::ENOENT));
        }
        let absolute = path.first() == Some(&b'/');
        let scoped = self.req.resolve.contains(ResolveFlags::IN_ROOT)
            || self.req.resolve.contains(ResolveFlags::BENEATH);
        self.init(if absolute && !scoped {
            b"/"
        } else {
            self.req.base
        })?;
        let mut pending = Vec::new();
        push_pieces(&mut pending, path, false);
        let mut held_last = None;
        if stop_before_last {
            held_last = pending.first().map(|p| Piece {
                name: p.name.clone(),
                trailing_slash: p.trailing_slash,
            });
            if !pending.is_empty() {
                pending.remove(0);
            }
        }
        if absolute {
            self.go_root()?;
        }
        while let Some(piece) = pending.pop() {
            let is_last = pending.is_empty() && !stop_before_last;
            self.check_dir()?;
            self.last_slash = piece.trailing_slash;
            match piece.name.as_slice() {
                b"." => self.raw_append(b"."),
                b".." => self.dotdot()?,
                _ => self.component(piece, is_last, &mut pending)?,
            }
        }
        Ok(held_last)
    }

    fn result(mut self) -> Resolved {
        match self.top().clone() {
            Node::Host => {
                let mut raw = self
                    .raw
                    .take()
                    .unwrap_or_else(|| self.lexical(self.stack.len()));
                if self.last_slash && raw.last() != Some(&b'/') {
                    raw.push(b'/');
                }
                Resolved::Host {
                    path: PathBuf::from(std::ffi::OsStr::from_bytes(&raw)),
                    rewritten: self.touched_virtual,
                }
            }
            Node::Root => {
                if self.req.resolve.contains(ResolveFlags::CACHED) {
                    return Resolved::err(Errno::EAGAIN);
                }
                Resolved::Virtual {
                    repo: None,
                    path: Vec::new(),
                    entry: self.ns.root_entry(),
                }
            }
            Node::Repo(_) => {
                if self.req.resolve.contains(ResolveFlags::CACHED) {
                    return Resolved::err(Errno::EAGAIN);
                }
                let entry = match self.top_entry() {
                    Ok(Some(e)) => e,
                    Ok(None) => return Resolved::err(Errno::EIO),
                    Err(r) => return r,
                };
                if (self.req.directory || self.last_slash) && !entry.is_dir() {
                    return Resolved::err(Errno::ENOTDIR);
                }
                let path = self.repo_path();
                Resolved::Virtual {
                    repo: self.repo.clone(),
                    path,
                    entry,
                }
            }
        }
    }
}

impl Namespace {
    fn walk<'n, 'a>(&'n self, req: &'a Lookup<'a>) -> Walk<'n, 'a> {
        Walk {
            ns: self,
            req,
            stack: Vec::new(),
            repo: None,
            root_len: 0,
            links: 0,
            raw: None,
            touched_virtual: false,
            start_mount: MountId::Host,
            last_slash: false,
        }
    }

    /// Resolve a path the way the kernel would, over the host with `/cvmfs` grafted in.
    /// Never panics, whatever the bytes.
    pub fn resolve(&self, req: &Lookup<'_>) -> Resolved {
        let mut walk = self.walk(req);
        match walk.run(false) {
            Ok(_) => walk.result(),
            Err(r) => r,
        }
    }

    /// Resolve all but the last component (for `mkdir`, `unlink`, `rename`, ...), as the
    /// kernel's `filename_parentat`: symlinks in the middle are followed, the last component is
    /// returned unresolved.
    pub fn resolve_parent(&self, req: &Lookup<'_>) -> ParentResolved {
        let mut walk = self.walk(req);
        let last = match walk.run(true) {
            Ok(last) => last,
            Err(r) => return ParentResolved::Err(r.errno().unwrap_or(Errno::EIO)),
        };
        let trailing_slash = last.as_ref().is_some_and(|p| p.trailing_slash);
        // The directory must be searchable to look the last component up later.
        if last.is_some() {
            if let Err(r) = walk.check_dir() {
                return ParentResolved::Err(r.errno().unwrap_or(Errno::EIO));
            }
        }
        let last = match last {
            None => Last::Root,
            Some(p) if p.name == b"." => Last::Dot,
            Some(p) if p.name == b".." => Last::DotDot,
            Some(p) => Last::Name(p.name),
        };
        match walk.top().clone() {
            Node::Host => {
                if let Last::Name(name) = &last {
                    let depth = walk.stack.len();
                    if depth + 1 == walk.mp().len()
                        && walk.stack.iter().zip(walk.mp()).all(|((a, _), b)| a == b)
                        && *name == walk.mp()[depth]
                    {
                        return ParentResolved::MountPoint;
                    }
                }
                let rewritten = walk.touched_virtual;
                let mut raw = walk
                    .raw
                    .take()
                    .unwrap_or_else(|| walk.lexical(walk.stack.len()));
                match &last {
                    Last::Name(n) => {
                        if raw.last() != Some(&b'/') {
                            raw.push(b'/');
                        }
                        raw.extend_from_slice(n);
                    }
                    Last::Dot => raw.extend_from_slice(b"/."),
                    Last::DotDot => raw.extend_from_slice(b"/.."),
                    Last::Root => {}
                }
                if trailing_slash {
                    raw.push(b'/');
                }
                ParentResolved::Host {
                    path: PathBuf::from(std::ffi::OsStr::from_bytes(&raw)),
                    rewritten,
                }
            }
            _ => {
                // Without a last component the object itself is the parent (e.g. "/cvmfs/r/").
                let parent = walk.result();
                if let Some(errno) = parent.errno() {
                    return ParentResolved::Err(errno);
                }
                ParentResolved::Virtual {
                    parent,
                    last,
                    trailing_slash,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(path: &[u8]) -> Vec<(String, bool)> {
        let mut v = Vec::new();
        push_pieces(&mut v, path, false);
        v.reverse();
        v.into_iter()
            .map(|p| (String::from_utf8(p.name).unwrap(), p.trailing_slash))
            .collect()
    }

    #[test]
    fn split_marks_only_the_last_piece() {
        assert_eq!(
            pieces(b"/a//b/c/"),
            vec![("a".into(), false), ("b".into(), false), ("c".into(), true)]
        );
        assert_eq!(
            pieces(b"a/b"),
            vec![("a".into(), false), ("b".into(), false)]
        );
        assert!(pieces(b"///").is_empty());
    }

    #[test]
    fn cred_permissions_follow_generic_permission() {
        let mut e = Entry::dir(1);
        e.kind = crate::Kind::File;
        e.mode = libc::S_IFREG | 0o640;
        e.uid = 10;
        e.gid = 20;
        assert!(Cred::user(10, 1).permits(&e, 6));
        assert!(!Cred::user(10, 1).permits(&e, 1));
        assert!(Cred::user(11, 20).permits(&e, 4));
        assert!(!Cred::user(11, 20).permits(&e, 2));
        assert!(!Cred::user(11, 21).permits(&e, 4));
        let mut g = Cred::user(11, 21);
        g.groups.push(20);
        assert!(g.permits(&e, 4));
        assert!(Cred::user(0, 0).permits(&e, 6));
        assert!(!Cred::user(0, 0).permits(&e, 1));
        e.mode |= 0o001;
        assert!(Cred::user(0, 0).permits(&e, 1));
        // Owner class decides even when "other" would allow.
        e.mode = libc::S_IFREG | 0o007;
        assert!(!Cred::user(10, 1).permits(&e, 4));
    }
}
