//! [`PerchFs`]: the FUSE operations on the perch-vfs namespace.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::{
    Errno as FErrno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr,
    Request,
};
use hashlink::LruCache;
use perch_vfs::{
    Entry, Errno, Kind, Namespace, Outcome, Repository, Resolved, VfsError, XattrReply,
};

use crate::attr::{file_attr, placeholder_dir};
use crate::dir::{DirItem, OpenDir, FOREVER};
use crate::nodes::{entry_id, repo_root_id, Node, Nodes, ROOT};

/// Longest name the kernel hands us that can exist (`NAME_MAX`).
const NAME_MAX: usize = 255;

fn ferr(e: Errno) -> FErrno {
    FErrno::from_i32(e.raw())
}

/// What a node designates: its repository (`None`: the mount point), path and entry.
type Target = (Option<Arc<dyn Repository>>, Vec<u8>, Entry);

/// The namespace of perch-vfs as a FUSE file system (read-only).
pub struct PerchFs {
    ns: Arc<Namespace>,
    nodes: Nodes,
    files: Mutex<HashMap<u64, Arc<File>>>,
    dirs: Mutex<HashMap<u64, Arc<OpenDir>>>,
    next_fh: AtomicU64,
    /// The kernel opens directories without asking (`FUSE_NO_OPENDIR_SUPPORT`, Linux 5.1):
    /// `opendir` answers `ENOSYS` and listings are read by node id (handle 0).
    stateless_dirs: bool,
    /// The kernel opens files without asking (`FUSE_NO_OPEN_SUPPORT`): `open` answers
    /// `ENOSYS`, and a file's object is fetched and opened at its first read, kept in
    /// `objects` by node id.
    stateless_files: bool,
    objects: Mutex<LruCache<u64, Arc<File>>>,
}

thread_local! {
    /// Each server thread's buffer for `read` replies, kept: a new zeroed one per request
    /// (up to 128 KiB, most requests) showed as allocation and memset in profiles.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Cache objects kept open for reads by node id (stateless opens); the least recently read
/// is closed first. The kernel keeps the pages it read, so a closed one is rarely reopened.
const OPEN_OBJECTS: usize = 256;

impl PerchFs {
    /// A file system serving `ns`.
    pub fn new(ns: Arc<Namespace>) -> PerchFs {
        PerchFs {
            ns,
            nodes: Nodes::default(),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            stateless_dirs: false,
            stateless_files: false,
            objects: Mutex::new(LruCache::new(OPEN_OBJECTS)),
        }
    }

    fn fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    fn mounted(&self, fqrn: &str) -> Result<Arc<dyn Repository>, Errno> {
        match self.ns.mount(fqrn) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(Errno::ENOENT),
            Err(e) => Err(e.errno()),
        }
    }

    /// Repository, repository path and entry of a node; `None` repository for the mount point.
    fn resolve(&self, node: &Node) -> Result<Target, Errno> {
        match node {
            Node::Root => Ok((None, Vec::new(), self.ns.root_entry())),
            Node::RepoRoot(fqrn) => {
                let repo = self.mounted(fqrn)?;
                let entry = repo.lookup(b"").map_err(|e| e.errno())?.ok_or(Errno::EIO)?;
                Ok((Some(repo), Vec::new(), entry))
            }
            Node::Entry { repo, path } => {
                let entry = repo.lookup(path).map_err(|e| e.errno())?;
                // Gone from the revision the node came from: cannot happen within one mount.
                let entry = entry.ok_or(Errno::ESTALE)?;
                Ok((Some(repo.clone()), path.to_vec(), entry))
            }
        }
    }

    fn node(&self, ino: INodeNo) -> Result<Node, Errno> {
        self.nodes.get(ino.0).ok_or(Errno::ESTALE)
    }

    /// Attributes of a node with its lifetime in the kernel.
    fn attr_of(&self, id: u64, node: &Node) -> Result<(FileAttr, Duration), Errno> {
        let (_, _, entry) = self.resolve(node)?;
        let ttl = if matches!(node, Node::Root) {
            // The list of configured repositories is fixed for the run, but `ls -ld /cvmfs`
            // is cheap and the mount point's link count is all it shows.
            Duration::from_secs(1)
        } else {
            FOREVER
        };
        Ok((file_attr(id, &entry), ttl))
    }

    fn do_lookup(&self, parent: &Node, name: &[u8]) -> Result<Option<(u64, Node, Entry)>, Errno> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        match parent {
            Node::Root => {
                let Ok(fqrn) = std::str::from_utf8(name) else {
                    return Err(Errno::ENOENT);
                };
                let node = Node::RepoRoot(fqrn.to_owned());
                let (_, _, entry) = self.resolve(&node)?;
                Ok(Some((repo_root_id(fqrn), node, entry)))
            }
            _ => {
                let (repo, path, entry) = self.resolve(parent)?;
                let repo = repo.ok_or(Errno::EIO)?;
                if entry.kind != Kind::Dir {
                    return Err(Errno::ENOTDIR);
                }
                let mut child = path;
                child.push(b'/');
                child.extend_from_slice(name);
                match repo.lookup(&child).map_err(|e| e.errno())? {
                    None => Ok(None),
                    Some(e) => Ok(Some((
                        entry_id(repo.fqrn(), e.inode),
                        Node::Entry {
                            repo: repo.clone(),
                            path: child.into_boxed_slice(),
                        },
                        e,
                    ))),
                }
            }
        }
    }

    /// An open directory node: `.` and `..` first, then the repositories (at the mount point)
    /// or the directory's children (read by page when the kernel asks).
    fn listing(&self, id: u64, node: &Node) -> Result<OpenDir, Errno> {
        let (repo, path, entry) = self.resolve(node)?;
        if entry.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        let dot = |name: &[u8], id: u64| DirItem {
            name: name.to_vec(),
            id,
            kind: FileType::Directory,
            node: None,
            attr: placeholder_dir(id),
            ttl: Duration::ZERO,
        };
        let parent_id = match (&repo, node) {
            (Some(r), Node::Entry { .. }) => {
                let up = &path[..path.iter().rposition(|&b| b == b'/').unwrap_or(0)];
                if up.is_empty() {
                    repo_root_id(r.fqrn())
                } else {
                    match r.lookup(up) {
                        Ok(Some(e)) => entry_id(r.fqrn(), e.inode),
                        _ => ROOT,
                    }
                }
            }
            _ => ROOT,
        };
        let mut items = vec![dot(b".", id), dot(b"..", parent_id)];
        match repo {
            None => {
                let mounted: HashMap<String, Arc<dyn Repository>> = self
                    .ns
                    .mounted()
                    .into_iter()
                    .map(|r| (r.fqrn().to_owned(), r))
                    .collect();
                for fqrn in self.ns.mounter().configured() {
                    let rid = repo_root_id(&fqrn);
                    let known = mounted
                        .get(&fqrn)
                        .and_then(|r| r.lookup(b"").ok().flatten());
                    let (attr, ttl) = match known {
                        Some(e) => (file_attr(rid, &e), FOREVER),
                        // Not mounted yet: shown as a directory, mounted on first real use.
                        None => (placeholder_dir(rid), Duration::ZERO),
                    };
                    items.push(DirItem {
                        name: fqrn.as_bytes().to_vec(),
                        id: rid,
                        kind: FileType::Directory,
                        node: Some(Node::RepoRoot(fqrn)),
                        attr,
                        ttl,
                    });
                }
            }
            Some(repo) => {
                return Ok(OpenDir {
                    head: items,
                    stream: Some((repo, path)),
                });
            }
        }
        Ok(OpenDir {
            head: items,
            stream: None,
        })
    }

    /// The listing a `readdir` reads: the open directory `fh`, or, for handle 0 (the kernel
    /// opened the directory without asking), the listing of node `ino` made now. Listings are
    /// read from offsets, not from state, so both give the same pages.
    fn dir_items(&self, ino: INodeNo, fh: FileHandle) -> Result<Arc<OpenDir>, Errno> {
        if fh.0 == 0 {
            return self
                .node(ino)
                .and_then(|n| self.listing(ino.0, &n))
                .map(Arc::new);
        }
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    /// The verified cache object of file node `ino`, fetched (downloaded and checked) if
    /// needed, open for reading.
    fn object_of(&self, ino: INodeNo) -> Result<Arc<File>, Errno> {
        let (repo, path, entry) = self.node(ino).and_then(|n| self.resolve(&n))?;
        let repo = repo.ok_or(Errno::EISDIR)?;
        match entry.kind {
            Kind::File => {}
            Kind::Dir => return Err(Errno::EISDIR),
            _ => return Err(Errno::ENXIO),
        }
        let file = repo
            .fetch(&path, &entry)
            .map_err(|e| VfsError::log_repo(repo.fqrn(), &path, e))?;
        open_object(&file).map(Arc::new)
    }

    /// [`PerchFs::object_of`] for a read without a handle, kept open for the next reads.
    fn stateless_object(&self, ino: INodeNo) -> Result<Arc<File>, Errno> {
        let lock = || self.objects.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = lock().get(&ino.0) {
            return Ok(f.clone());
        }
        // Fetched outside the lock: a download must not hold up reads of other files.
        let f = self.object_of(ino)?;
        lock().insert(ino.0, f.clone());
        Ok(f)
    }

    fn virtual_of(&self, ino: INodeNo) -> Result<Resolved, Errno> {
        let node = self.node(ino)?;
        let (repo, path, entry) = self.resolve(&node)?;
        Ok(Resolved::Virtual { repo, path, entry })
    }
}

fn xattr_reply(out: Outcome<XattrReply>, reply: ReplyXattr) {
    match out {
        Outcome::Value(XattrReply::Size(n)) => reply.size(u32::try_from(n).unwrap_or(u32::MAX)),
        Outcome::Value(XattrReply::Data(d)) => reply.data(&d),
        Outcome::Err(e) => reply.error(ferr(e)),
        Outcome::Continue | Outcome::Host(_) => reply.error(FErrno::EIO),
    }
}

impl Filesystem for PerchFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each is an optimisation: a kernel without it still works.
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            let _ = config.add_capabilities(flag);
        }
        // Opens the kernel does without asking: OPENDIR and RELEASEDIR fewer per directory
        // listed, OPEN and RELEASE fewer per file opened.
        let caps = config.capabilities();
        self.stateless_dirs = caps.contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        self.stateless_files = caps.contains(InitFlags::FUSE_NO_OPEN_SUPPORT);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let parent_node = match self.node(parent) {
            Ok(n) => n,
            Err(e) => return reply.error(ferr(e)),
        };
        match self.do_lookup(&parent_node, name.as_bytes()) {
            Ok(Some((id, node, entry))) => {
                let attr = file_attr(id, &entry);
                self.nodes.remember(id, &node, parent.0);
                reply.entry(&FOREVER, &attr, Generation(0));
            }
            // Absent inside a repository: cached by the kernel (node id 0) like any entry.
            Ok(None) => {
                let mut attr = placeholder_dir(0);
                attr.ino = INodeNo(0);
                reply.entry(&FOREVER, &attr, Generation(0));
            }
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.nodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino).and_then(|n| self.attr_of(ino.0, &n)) {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino).and_then(|n| self.resolve(&n)) {
            Ok((
                _,
                _,
                Entry {
                    symlink: Some(t), ..
                },
            )) => reply.data(&t),
            Ok(_) => reply.error(FErrno::EINVAL),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(FErrno::EROFS);
        }
        if self.stateless_files {
            // From now on the kernel opens files itself (no OPEN, no RELEASE: two round trips
            // less per open), keeping their pages (FOPEN_KEEP_CACHE); the object is fetched at
            // the first read.
            return reply.error(FErrno::ENOSYS);
        }
        match self.object_of(ino) {
            Ok(file) => {
                let fh = self.fh();
                self.files
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(fh, file);
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
                );
            }
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let file = match fh.0 {
            0 => self.stateless_object(ino),
            fh => self
                .files
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&fh)
                .cloned()
                .ok_or(Errno::EBADF),
        };
        let file = match file {
            Ok(f) => f,
            Err(e) => return reply.error(ferr(e)),
        };
        READ_BUF.with_borrow_mut(|buf| {
            let size = size as usize;
            if buf.len() < size {
                buf.resize(size, 0);
            }
            let buf = &mut buf[..size];
            let mut got = 0;
            while got < size {
                match file.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!(target: "fuse", "read of a cache object failed: {e}");
                        return reply.error(FErrno::EIO);
                    }
                }
            }
            reply.data(&buf[..got]);
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written, so nothing to flush at close: ENOSYS tells the kernel not
        // to ask again (one round trip less per close; FOPEN_NOFLUSH does it from Linux 5.16).
        reply.error(FErrno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.stateless_dirs {
            // The kernel then opens every directory itself, keeping its listing cached
            // (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR) and never sends RELEASEDIR.
            return reply.error(FErrno::ENOSYS);
        }
        match self.node(ino).and_then(|n| self.listing(ino.0, &n)) {
            Ok(items) => {
                let fh = self.fh();
                self.dirs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(fh, Arc::new(items));
                let flags = if ino.0 == ROOT {
                    FopenFlags::empty()
                } else {
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR
                };
                reply.opened(FileHandle(fh), flags);
            }
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let dir = match self.dir_items(ino, fh) {
            Ok(d) => d,
            Err(e) => return reply.error(ferr(e)),
        };
        // About a hundred short names fill the kernel's page of a reply.
        let walked = dir.walk(offset, 128, |off, it| {
            reply.add(INodeNo(it.id), off, it.kind, OsStr::from_bytes(&it.name))
        });
        if let Err(e) = walked {
            return reply.error(ferr(e));
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let dir = match self.dir_items(ino, fh) {
            Ok(d) => d,
            Err(e) => return reply.error(ferr(e)),
        };
        // Entries with attributes are larger: a few dozen fill a reply.
        let walked = dir.walk(offset, 32, |off, it| {
            let full = reply.add(
                INodeNo(it.id),
                off,
                OsStr::from_bytes(&it.name),
                &it.ttl,
                &it.attr,
                Generation(0),
            );
            // The kernel takes a reference to every entry but `.` and `..`.
            if !full {
                if let Some(node) = &it.node {
                    self.nodes.remember(it.id, node, ino.0);
                }
            }
            full
        });
        if let Err(e) = walked {
            return reply.error(ferr(e));
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Like notify mode: the sizes of the cache's file system, in 4 KiB blocks.
        let (mut blocks, mut bfree, mut bavail, mut files, mut ffree) = (0, 0, 0, 0, 0);
        if let Ok(v) = rustix::fs::statvfs(self.ns.shadow().root()) {
            let scale = |n: u64| n.saturating_mul(v.f_frsize) / 4096;
            blocks = scale(v.f_blocks);
            bfree = scale(v.f_bfree);
            bavail = scale(v.f_bavail);
            files = v.f_files;
            ffree = v.f_ffree;
        }
        reply.statfs(blocks, bfree, bavail, files, ffree, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.virtual_of(ino) {
            Ok(r) => xattr_reply(
                self.ns.getxattr(&r, name.as_bytes(), size as usize, None),
                reply,
            ),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.virtual_of(ino) {
            Ok(r) => xattr_reply(self.ns.listxattr(&r, size as usize), reply),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // With default_permissions the kernel checks modes itself and never asks.
        reply.ok();
    }

    // The write family: a read-only file system (the mount is read-only too, so the kernel
    // normally answers EROFS before asking).
    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(FErrno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(FErrno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(FErrno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(FErrno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(FErrno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(FErrno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(FErrno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(FErrno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(FErrno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(FErrno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(FErrno::EROFS);
    }

    // The rest answer what the kernel needs to fall back on its own code (local POSIX locks,
    // generic lseek and copy, poll always ready) or what a regular file would, without the
    // library's "not implemented" warnings (they would reach the program's stderr).
    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        reply: fuser::ReplyLock,
    ) {
        reply.error(FErrno::ENOSYS);
    }

    fn setlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        _sleep: bool,
        reply: ReplyEmpty,
    ) {
        reply.error(FErrno::ENOSYS);
    }

    fn bmap(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _blocksize: u32,
        _idx: u64,
        reply: fuser::ReplyBmap,
    ) {
        reply.error(FErrno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // Like a regular file: no terminal, no special ioctls.
        reply.error(FErrno::from_i32(libc::ENOTTY));
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        reply.error(FErrno::ENOSYS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(FErrno::EROFS);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        reply.error(FErrno::ENOSYS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: fuser::ReplyWrite,
    ) {
        reply.error(FErrno::ENOSYS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        reply.error(FErrno::EROFS);
    }
}

/// Opens a fetched cache object for reading.
fn open_object(path: &Path) -> Result<File, Errno> {
    File::open(path).map_err(|e| {
        tracing::warn!(target: "fuse", "cannot open cache object {}: {e}", path.display());
        Errno::EIO
    })
}
