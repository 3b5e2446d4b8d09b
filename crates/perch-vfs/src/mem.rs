//! An in-memory [`Repository`] and [`Mounter`]: the test double of perch-vfs (and usable by the
//! interception layer's tests). Cache objects are real files written on `fetch` into a
//! directory of the caller's choice, by temp file + rename like the real cache.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::{Entry, Errno, Kind, Mounter, RepoError, Repository};

/// An immutable repository revision held in memory.
#[derive(Debug)]
pub struct MemRepo {
    fqrn: String,
    revision: String,
    entries: BTreeMap<Vec<u8>, Entry>,
    contents: HashMap<Vec<u8>, Vec<u8>>,
    xattrs: HashMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>,
    fail: HashMap<Vec<u8>, Errno>,
    /// Directories whose streamed listing fails after handing out this many children.
    fail_listing_after: HashMap<Vec<u8>, usize>,
    objects: PathBuf,
    fetches: AtomicUsize,
    lists: AtomicUsize,
}

/// Builds a [`MemRepo`]; parents are created as directories on demand.
#[derive(Debug)]
pub struct MemRepoBuilder {
    repo: MemRepo,
    next_inode: u64,
    mtime: i64,
}

fn parent_of(path: &[u8]) -> &[u8] {
    crate::shadow::split_last(path).0
}

impl MemRepo {
    /// Start a repository `fqrn` whose cache objects go to `objects` (created if needed; put it
    /// on the same file system as the mounter's cache root).
    pub fn builder(fqrn: &str, objects: &Path) -> MemRepoBuilder {
        let mut b = MemRepoBuilder {
            repo: MemRepo {
                fqrn: fqrn.to_owned(),
                revision: format!("{:040x}", crate::shadow::fnv64(fqrn.as_bytes())),
                entries: BTreeMap::new(),
                contents: HashMap::new(),
                xattrs: HashMap::new(),
                fail: HashMap::new(),
                fail_listing_after: HashMap::new(),
                objects: objects.to_owned(),
                fetches: AtomicUsize::new(0),
                lists: AtomicUsize::new(0),
            },
            next_inode: 256,
            mtime: 1_700_000_000,
        };
        b.repo.entries.insert(Vec::new(), Entry::dir(256));
        b.next_inode += 1;
        b
    }

    /// How many times `fetch` was called.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::Relaxed)
    }

    /// How many times `list` or `for_each_child` was called.
    pub fn lists(&self) -> usize {
        self.lists.load(Ordering::Relaxed)
    }

    /// The entry at `path` (panics if absent: for tests).
    pub fn lookup_entry(&self, path: &str) -> Entry {
        self.entries
            .get(path.as_bytes())
            .cloned()
            .unwrap_or_else(|| panic!("no entry {path}"))
    }

    /// The content of a file.
    pub fn content(&self, path: &[u8]) -> Option<&[u8]> {
        self.contents.get(path).map(Vec::as_slice)
    }
}

impl MemRepoBuilder {
    fn add(&mut self, path: &[u8], kind: Kind, perm: u32) -> &mut Entry {
        assert!(path.first() == Some(&b'/'), "repository paths start with /");
        let parent = parent_of(path).to_vec();
        if !self.repo.entries.contains_key(&parent) {
            self.add(&parent, Kind::Dir, 0o755);
        }
        let inode = self.next_inode;
        self.next_inode += 1;
        let entry = Entry {
            kind,
            mode: kind.type_bits() | perm,
            size: if kind == Kind::Dir { 4096 } else { 0 },
            mtime: self.mtime,
            mtime_ns: 0,
            uid: 0,
            gid: 0,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            inode,
            rdev: 0,
            symlink: None,
            handle: None,
        };
        self.repo.entries.insert(path.to_vec(), entry);
        self.repo.entries.get_mut(path).expect("just inserted")
    }

    /// Set the revision id.
    pub fn revision(mut self, rev: &str) -> Self {
        self.repo.revision = rev.to_owned();
        self
    }

    /// Add a directory (mode 0755).
    pub fn dir(mut self, path: &str) -> Self {
        self.add(path.as_bytes(), Kind::Dir, 0o755);
        self
    }

    /// Add a regular file with `content` and permission bits `perm`.
    pub fn file(mut self, path: &str, content: &[u8], perm: u32) -> Self {
        let e = self.add(path.as_bytes(), Kind::File, perm);
        e.size = content.len() as u64;
        self.repo
            .contents
            .insert(path.as_bytes().to_vec(), content.to_vec());
        self
    }

    /// Add a symlink (target already expanded).
    pub fn symlink(mut self, path: &str, target: &[u8]) -> Self {
        let e = self.add(path.as_bytes(), Kind::Symlink, 0o777);
        e.size = target.len() as u64;
        e.symlink = Some(target.to_vec());
        self
    }

    /// Add a special file.
    pub fn special(mut self, path: &str, kind: Kind, rdev: u64) -> Self {
        let e = self.add(path.as_bytes(), kind, 0o644);
        e.rdev = rdev;
        self
    }

    /// Change an entry after adding it (owner, mode, times...).
    pub fn edit(mut self, path: &str, f: impl FnOnce(&mut Entry)) -> Self {
        if let Some(e) = self.repo.entries.get_mut(path.as_bytes()) {
            f(e);
        }
        self
    }

    /// Add a stored extended attribute.
    pub fn xattr(mut self, path: &str, name: &str, value: &[u8]) -> Self {
        self.repo
            .xattrs
            .entry(path.as_bytes().to_vec())
            .or_default()
            .insert(name.as_bytes().to_vec(), value.to_vec());
        self
    }

    /// Make `lookup`, `list` and `fetch` of `path` fail with `errno` (e.g. `EIO`).
    pub fn fail(mut self, path: &str, errno: Errno) -> Self {
        self.repo.fail.insert(path.as_bytes().to_vec(), errno);
        self
    }

    /// Make the streamed listing of directory `path` ([`Repository::for_each_child`]) fail
    /// with `EIO` after it handed out `n` children, as a catalog with a corrupt row does.
    pub fn fail_listing_after(mut self, path: &str, n: usize) -> Self {
        self.repo
            .fail_listing_after
            .insert(path.as_bytes().to_vec(), n);
        self
    }

    /// Finish: directory link counts are computed (2 + subdirectories).
    pub fn build(mut self) -> Arc<MemRepo> {
        let dirs: Vec<Vec<u8>> = self
            .repo
            .entries
            .iter()
            .filter(|(p, e)| e.is_dir() && !p.is_empty())
            .map(|(p, _)| p.clone())
            .collect();
        for d in dirs {
            if let Some(parent) = self.repo.entries.get_mut(parent_of(&d)) {
                parent.nlink += 1;
            }
        }
        Arc::new(self.repo)
    }
}

impl MemRepo {
    fn check(&self, path: &[u8]) -> Result<(), RepoError> {
        match self.fail.get(path) {
            Some(e) => Err(RepoError::new(
                *e,
                format!("injected failure on {}", String::from_utf8_lossy(path)),
            )),
            None => Ok(()),
        }
    }
}

impl Repository for MemRepo {
    fn fqrn(&self) -> &str {
        &self.fqrn
    }

    fn revision_id(&self) -> String {
        self.revision.clone()
    }

    fn lookup(&self, path: &[u8]) -> Result<Option<Entry>, RepoError> {
        self.check(path)?;
        Ok(self.entries.get(path).cloned())
    }

    fn list(&self, path: &[u8]) -> Result<Vec<(Vec<u8>, Entry)>, RepoError> {
        self.check(path)?;
        self.lists.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::new();
        for (p, e) in &self.entries {
            if !p.is_empty() && parent_of(p) == path {
                out.push((p[parent_of(p).len() + 1..].to_vec(), e.clone()));
            }
        }
        Ok(out)
    }

    fn for_each_child(
        &self,
        path: &[u8],
        f: &mut dyn FnMut(&[u8], Entry) -> std::ops::ControlFlow<()>,
    ) -> Result<(), RepoError> {
        self.check(path)?;
        self.lists.fetch_add(1, Ordering::Relaxed);
        let fail_after = self.fail_listing_after.get(path).copied();
        let mut handed = 0;
        for (p, e) in &self.entries {
            if p.is_empty() || parent_of(p) != path {
                continue;
            }
            if fail_after == Some(handed) {
                return Err(RepoError::io("injected failure in the middle of a listing"));
            }
            handed += 1;
            if f(&p[parent_of(p).len() + 1..], e.clone()).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn fetch(&self, path: &[u8], entry: &Entry) -> Result<PathBuf, RepoError> {
        self.check(path)?;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let content = self
            .contents
            .get(path)
            .ok_or_else(|| RepoError::io("no such file in memory repository"))?;
        let obj = self.objects.join(format!("{}-{}", self.fqrn, entry.inode));
        if obj.exists() {
            return Ok(obj);
        }
        let io = |e: std::io::Error| RepoError::io("cannot write cache object").with_source(e);
        fs::create_dir_all(&self.objects).map_err(io)?;
        let tmp = self.objects.join(format!(
            ".tmp-{}-{}-{:?}",
            entry.inode,
            std::process::id(),
            std::thread::current().id()
        ));
        fs::write(&tmp, content).map_err(io)?;
        fs::rename(&tmp, &obj).map_err(io)?;
        Ok(obj)
    }

    fn getxattr(
        &self,
        path: &[u8],
        entry: &Entry,
        name: &[u8],
    ) -> Result<Option<Vec<u8>>, RepoError> {
        let magic: Option<Vec<u8>> = match name {
            b"user.fqrn" => Some(self.fqrn.as_bytes().to_vec()),
            b"user.revision" => Some(b"1".to_vec()),
            b"user.root_hash" => Some(self.revision.as_bytes().to_vec()),
            b"user.hash" if entry.kind == Kind::File => {
                Some(format!("{:040x}", entry.inode).into_bytes())
            }
            b"user.chunks" if entry.kind == Kind::File => Some(b"1".to_vec()),
            b"user.rawlink" | b"xfsroot.rawlink" => entry.symlink.clone(),
            _ => None,
        };
        if magic.is_some() {
            return Ok(magic);
        }
        Ok(self.xattrs.get(path).and_then(|m| m.get(name).cloned()))
    }

    fn listxattr(&self, path: &[u8], _entry: &Entry) -> Result<Vec<Vec<u8>>, RepoError> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        if path.is_empty() {
            for n in ["user.fqrn", "user.revision", "user.root_hash"] {
                names.push(n.as_bytes().to_vec());
            }
        }
        if let Some(m) = self.xattrs.get(path) {
            names.extend(m.keys().cloned());
        }
        Ok(names)
    }
}

/// A [`Mounter`] over a fixed set of [`MemRepo`]s.
#[derive(Debug)]
pub struct MemMounter {
    repos: HashMap<String, Arc<MemRepo>>,
    configured: Vec<String>,
    cache_root: PathBuf,
    mounts: AtomicUsize,
}

impl MemMounter {
    /// All `repos` are configured (listed in `/cvmfs`) and mountable.
    pub fn new(cache_root: &Path, repos: Vec<Arc<MemRepo>>) -> MemMounter {
        let configured = repos.iter().map(|r| r.fqrn.clone()).collect();
        MemMounter {
            repos: repos.into_iter().map(|r| (r.fqrn.clone(), r)).collect(),
            configured,
            cache_root: cache_root.to_owned(),
            mounts: AtomicUsize::new(0),
        }
    }

    /// Only these names are listed in `/cvmfs` (others still mount on access).
    pub fn with_configured(mut self, names: &[&str]) -> Self {
        self.configured = names.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// How many times `mount` found a repository.
    pub fn mounts(&self) -> usize {
        self.mounts.load(Ordering::Relaxed)
    }
}

impl Mounter for MemMounter {
    fn configured(&self) -> Vec<String> {
        self.configured.clone()
    }

    fn mount(&self, fqrn: &str) -> Result<Option<Arc<dyn Repository>>, RepoError> {
        match self.repos.get(fqrn) {
            Some(r) => {
                self.mounts.fetch_add(1, Ordering::Relaxed);
                Ok(Some(r.clone() as Arc<dyn Repository>))
            }
            None => Ok(None),
        }
    }

    fn cache_root(&self) -> PathBuf {
        self.cache_root.clone()
    }
}
