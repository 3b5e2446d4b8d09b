//! [`Namespace`]: the mount point, the mounted repositories and the shadow tree together.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::shadow::{fnv64, ShadowTree};
use crate::{Entry, Errno, Mounter, RepoError, Repository, Resolved, VfsError};

type Slot = Arc<Mutex<SlotState>>;

/// One name's mount, under its slot's lock.
#[derive(Default)]
struct SlotState {
    repo: Option<Arc<dyn Repository>>,
    /// A mount has been attempted (by an access or [`Namespace::mount_ahead`]).
    tried: bool,
    /// The failure of [`Namespace::mount_ahead`], for the next access to report.
    ahead_error: Option<RepoError>,
}

/// The virtual namespace: everything is the host except the mount point (`/cvmfs` by default),
/// under which each configured or valid repository appears, mounted on first access.
pub struct Namespace {
    mounter: Arc<dyn Mounter>,
    mountpoint: Vec<u8>,
    pub(crate) mp_components: Vec<Vec<u8>>,
    /// One slot per name being or once mounted: serialises the mounts of one name.
    mounts: Mutex<HashMap<String, Slot>>,
    /// The mounted repositories: what every call after the first looks at, so it is read
    /// under a shared lock (a mounted revision is immutable; entries are only added).
    mounted: RwLock<HashMap<String, Arc<dyn Repository>>>,
    shadow: ShadowTree,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("mountpoint", &String::from_utf8_lossy(&self.mountpoint))
            .field("shadow", &self.shadow.root())
            .finish()
    }
}

impl Namespace {
    /// A namespace with the repositories of `mounter` under `/cvmfs`.
    pub fn new(mounter: Arc<dyn Mounter>) -> Result<Namespace, VfsError> {
        Namespace::with_mountpoint(mounter, b"/cvmfs")
    }

    /// A namespace with another mount point (absolute, not `/`, no `.`/`..` components).
    pub fn with_mountpoint(
        mounter: Arc<dyn Mounter>,
        mountpoint: &[u8],
    ) -> Result<Namespace, VfsError> {
        let comps: Vec<Vec<u8>> = mountpoint
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        if mountpoint.first() != Some(&b'/')
            || comps.is_empty()
            || comps.iter().any(|c| c == b"." || c == b"..")
            || mountpoint.contains(&0)
        {
            return Err(VfsError::BadMountpoint {
                mountpoint: String::from_utf8_lossy(mountpoint).into_owned(),
            });
        }
        let shadow = ShadowTree::new(&mounter.cache_root())?;
        let mut mp = Vec::new();
        for c in &comps {
            mp.push(b'/');
            mp.extend_from_slice(c);
        }
        Ok(Namespace {
            mounter,
            mountpoint: mp,
            mp_components: comps,
            mounts: Mutex::new(HashMap::new()),
            mounted: RwLock::new(HashMap::new()),
            shadow,
        })
    }

    /// The mount point, normalized (`b"/cvmfs"`).
    pub fn mountpoint(&self) -> &[u8] {
        &self.mountpoint
    }

    /// The shadow tree.
    pub fn shadow(&self) -> &ShadowTree {
        &self.shadow
    }

    /// The mounter.
    pub fn mounter(&self) -> &Arc<dyn Mounter> {
        &self.mounter
    }

    /// The repository `fqrn`, mounting it on first use. Concurrent first accesses to one
    /// repository wait for a single mount; other repositories are not blocked. A failed mount
    /// is retried on the next access; an unknown name (`Ok(None)`) is not remembered.
    pub fn mount(&self, fqrn: &str) -> Result<Option<Arc<dyn Repository>>, RepoError> {
        if let Some(repo) = self
            .mounted
            .read()
            .map_err(|_| RepoError::io("mount table poisoned"))?
            .get(fqrn)
        {
            return Ok(Some(repo.clone()));
        }
        let slot = self.slot(fqrn)?;
        let mut guard = slot
            .lock()
            .map_err(|_| RepoError::io(format!("mount of {fqrn} poisoned")))?;
        if let Some(repo) = &guard.repo {
            return Ok(Some(repo.clone()));
        }
        if let Some(e) = guard.ahead_error.take() {
            return Err(e);
        }
        self.mount_locked(fqrn, &mut guard)
    }

    /// Mounts `fqrn` before anything asks for it (perch starts this while the program
    /// starts, for names on its command line). An access meanwhile waits for this mount
    /// instead of starting its own. If it fails, the first access after it gets that error,
    /// rather than trying again at once (a repository that cannot be mounted costs one attempt,
    /// as without this); later accesses retry as usual. Nothing happens once a mount of
    /// `fqrn` has been tried.
    pub fn mount_ahead(&self, fqrn: &str) {
        let Ok(slot) = self.slot(fqrn) else { return };
        let Ok(mut guard) = slot.lock() else { return };
        if guard.tried {
            return;
        }
        if let Err(e) = self.mount_locked(fqrn, &mut guard) {
            guard.ahead_error = Some(e);
        }
    }

    fn slot(&self, fqrn: &str) -> Result<Slot, RepoError> {
        let mut mounts = self
            .mounts
            .lock()
            .map_err(|_| RepoError::io("mount table poisoned"))?;
        Ok(mounts.entry(fqrn.to_owned()).or_default().clone())
    }

    /// Mounts `fqrn` with its slot locked.
    fn mount_locked(
        &self,
        fqrn: &str,
        slot: &mut SlotState,
    ) -> Result<Option<Arc<dyn Repository>>, RepoError> {
        slot.tried = true;
        let repo = self.mounter.mount(fqrn)?;
        if let Some(repo) = &repo {
            tracing::debug!(target: "vfs", fqrn, revision = %repo.revision_id(), "mounted");
            slot.repo = Some(repo.clone());
            if let Ok(mut mounted) = self.mounted.write() {
                mounted.insert(fqrn.to_owned(), repo.clone());
            }
        }
        Ok(repo)
    }

    /// The already mounted repositories.
    pub fn mounted(&self) -> Vec<Arc<dyn Repository>> {
        match self.mounted.read() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The metadata of the mount point: a root-owned read-only directory (mode 0755, link count
    /// 2 + configured repositories, inode 1, times 0).
    pub fn root_entry(&self) -> Entry {
        let n = u32::try_from(self.mounter.configured().len()).unwrap_or(u32::MAX - 2);
        Entry {
            nlink: 2u32.saturating_add(n),
            ..Entry::dir(1)
        }
    }

    /// Device number `stat` shows for `repo` (`None`: the mount point): major 0 like the
    /// anonymous devices of FUSE mounts, minor derived from the name in `0x80000..0xfffff` so
    /// it is stable across runs and unlikely to collide with the small anonymous minors of the
    /// host's own mounts. `find -xdev`/`du -x` thus see one file system per repository, as
    /// with the real client.
    pub fn device(&self, repo: Option<&dyn Repository>) -> u64 {
        let minor = match repo {
            None => 0x80000,
            Some(r) => 0x80001 + fnv64(r.fqrn().as_bytes()) % 0x7fffe,
        };
        // Linux makedev with major 0: the minor's low 8 bits at 0..8, the rest at 20..44.
        (minor & 0xff) | ((minor & !0xff) << 12)
    }

    /// The shadow object of a resolved path, materializing what is needed: a regular file is
    /// linked to its (fetched) cache object, a directory is filled, the mount point is the
    /// `.root-*` directory. Host paths are returned as they are.
    pub fn shadow_path(&self, resolved: &Resolved) -> Result<PathBuf, Errno> {
        match resolved {
            Resolved::Host { path, .. } => Ok(path.clone()),
            Resolved::Missing { errno, .. } => Err(*errno),
            Resolved::Virtual { repo: None, .. } => self
                .shadow
                .mount_dir(&self.mounter.configured())
                .map_err(|e| e.log_errno()),
            Resolved::Virtual {
                repo: Some(repo),
                path,
                entry,
            } => self
                .shadow
                .materialize(repo.as_ref(), path, entry)
                .map_err(|e| e.log_errno()),
        }
    }

    /// The virtual path of a shadow-tree path (`/proc/<pid>/fd/N`, `cwd`, `exe`, `getcwd`), or
    /// `None` if it is not in the shadow tree.
    pub fn virtual_path(&self, shadow: &Path) -> Option<PathBuf> {
        self.shadow
            .to_virtual(shadow.as_os_str().as_bytes(), &self.mountpoint)
            .map(|v| PathBuf::from(OsStr::from_bytes(&v)))
    }

    /// Translate a path the kernel reports (readlink of `/proc/*/fd/N`, `getcwd`) back to the
    /// program's view; other paths (and a `" (deleted)"` suffix) are kept unchanged.
    pub fn translate_out(&self, reported: &[u8]) -> Vec<u8> {
        const DELETED: &[u8] = b" (deleted)";
        let (body, suffix) = match reported.strip_suffix(DELETED) {
            Some(b) => (b, DELETED),
            None => (reported, &b""[..]),
        };
        match self.shadow.to_virtual(body, &self.mountpoint) {
            Some(mut v) => {
                v.extend_from_slice(suffix);
                v
            }
            None => reported.to_vec(),
        }
    }

    /// True if `path` (absolute, lexical) is the mount point or below it: a cheap first test.
    pub fn is_under_mountpoint(&self, path: &[u8]) -> bool {
        match path.strip_prefix(self.mountpoint.as_slice()) {
            Some(rest) => rest.is_empty() || rest[0] == b'/',
            None => false,
        }
    }
}

#[cfg(test)]
mod mount_ahead_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::mem::{MemMounter, MemRepo};

    /// A mounter whose every mount fails, counting the attempts.
    struct Failing {
        cache_root: PathBuf,
        attempts: AtomicUsize,
    }

    impl Mounter for Failing {
        fn configured(&self) -> Vec<String> {
            vec!["down.example.org".into()]
        }
        fn mount(&self, fqrn: &str) -> Result<Option<Arc<dyn Repository>>, RepoError> {
            let n = self.attempts.fetch_add(1, Ordering::Relaxed) + 1;
            Err(RepoError::io(format!("cannot mount {fqrn}: attempt {n}")))
        }
        fn cache_root(&self) -> PathBuf {
            self.cache_root.clone()
        }
    }

    #[test]
    fn an_access_after_mount_ahead_uses_that_mount() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = MemRepo::builder("a.example.org", &tmp.path().join("objects"))
            .file("/f", b"x", 0o644)
            .build();
        let mounter = Arc::new(MemMounter::new(tmp.path(), vec![repo]));
        let ns = Namespace::new(mounter.clone()).unwrap();
        ns.mount_ahead("a.example.org");
        assert_eq!(mounter.mounts(), 1);
        assert!(ns.mount("a.example.org").unwrap().is_some());
        ns.mount_ahead("a.example.org");
        assert_eq!(mounter.mounts(), 1, "one mount in all");
    }

    #[test]
    fn a_failed_mount_ahead_is_reported_once_then_retried() {
        let tmp = tempfile::tempdir().unwrap();
        let mounter = Arc::new(Failing {
            cache_root: tmp.path().to_owned(),
            attempts: AtomicUsize::new(0),
        });
        let ns = Namespace::new(mounter.clone()).unwrap();
        ns.mount_ahead("down.example.org");
        let e = ns.mount("down.example.org").err().unwrap();
        assert!(e.to_string().contains("attempt 1"), "{e}");
        assert_eq!(mounter.attempts.load(Ordering::Relaxed), 1);
        let e = ns.mount("down.example.org").err().unwrap();
        assert!(e.to_string().contains("attempt 2"), "{e}");
        // Once an access has tried, mount_ahead does nothing.
        ns.mount_ahead("down.example.org");
        assert_eq!(mounter.attempts.load(Ordering::Relaxed), 2);
    }
}
