//! [`Namespace`]: the mount point, the mounted repositories and the shadow tree together.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::shadow::{fnv64, ShadowTree};
use crate::{Entry, Errno, Mounter, RepoError, Repository, Resolved, VfsError};

type Slot = Arc<Mutex<Option<Arc<dyn Repository>>>>;

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
        let slot = {
            let mut mounts = self
                .mounts
                .lock()
                .map_err(|_| RepoError::io("mount table poisoned"))?;
            mounts.entry(fqrn.to_owned()).or_default().clone()
        };
        let mut guard = slot
            .lock()
            .map_err(|_| RepoError::io(format!("mount of {fqrn} poisoned")))?;
        if let Some(repo) = &*guard {
            return Ok(Some(repo.clone()));
        }
        let repo = self.mounter.mount(fqrn)?;
        if let Some(repo) = &repo {
            tracing::debug!(target: "vfs", fqrn, revision = %repo.revision_id(), "mounted");
            *guard = Some(repo.clone());
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
