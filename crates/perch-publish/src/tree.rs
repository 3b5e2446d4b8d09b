//! Scanning the source directory into an in-memory tree of metadata.
//!
//! Symlinks are never followed; children are sorted by their raw name bytes
//! so that every publish of the same tree makes the same catalogs. Sockets,
//! FIFOs and devices are skipped with a warning.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{PublishError, Result};

/// The marker file that makes a directory the root of a nested catalog.
pub const CATALOG_MARKER: &[u8] = b".cvmfscatalog";

/// Metadata common to every entry.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_ns: Option<u32>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What an entry is.
#[derive(Debug)]
pub(crate) enum Kind {
    Dir {
        children: Vec<Node>,
        nested: bool,
    },
    File {
        dev: u64,
        ino: u64,
        nlink: u64,
        index: usize,
    },
    Symlink {
        target: Vec<u8>,
    },
}

/// One source entry.
#[derive(Debug)]
pub(crate) struct Node {
    pub name: Vec<u8>,
    pub meta: Meta,
    pub kind: Kind,
}

/// A regular file to store: where it is and how big `stat` said it was.
#[derive(Debug, Clone)]
pub(crate) struct FileJob {
    pub path: PathBuf,
    pub size: u64,
}

/// Scan totals.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ScanCounts {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub skipped: u64,
    pub bytes: u64,
}

pub(crate) struct Scanner {
    /// Distinct file contents to store, indexed by `Kind::File::index`
    /// (hard links to one inode share one job).
    pub jobs: Vec<FileJob>,
    by_inode: std::collections::HashMap<(u64, u64), usize>,
    pub counts: ScanCounts,
}

fn meta_of(path: &Path, md: &std::fs::Metadata) -> Meta {
    let ns = u32::try_from(md.mtime_nsec()).unwrap_or(0);
    Meta {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        mtime_ns: (ns != 0).then_some(ns),
        xattrs: user_xattrs(path, md.file_type().is_symlink()),
    }
}

/// `user.*` extended attributes (not followed through symlinks). Values or
/// sets too large for the catalog blob (§7.9) are dropped with a warning.
fn user_xattrs(path: &Path, is_symlink: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    if is_symlink {
        // Linux allows no user.* attributes on symlinks.
        return Vec::new();
    }
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "cannot list extended attributes");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for name in names {
        let n = name.as_bytes();
        if !n.starts_with(b"user.") {
            continue;
        }
        match xattr::get(path, &name) {
            Ok(Some(v)) if n.len() <= 255 && v.len() <= 255 => out.push((n.to_vec(), v)),
            Ok(Some(_)) => {
                tracing::warn!(path = %path.display(), xattr = %name.to_string_lossy(), "extended attribute too long for a catalog (255 bytes), not published")
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), xattr = %name.to_string_lossy(), error = %e, "cannot read extended attribute")
            }
        }
    }
    out.sort();
    if out.len() > 255 {
        tracing::warn!(path = %path.display(), count = out.len(), "more than 255 extended attributes, only the first 255 published");
        out.truncate(255);
    }
    out
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner {
            jobs: Vec::new(),
            by_inode: Default::default(),
            counts: ScanCounts::default(),
        }
    }

    /// Scan the source root.
    pub fn scan_root(&mut self, src: &Path) -> Result<Node> {
        let md = std::fs::symlink_metadata(src).map_err(PublishError::io("stat", src))?;
        if !md.is_dir() {
            return Err(PublishError::NotADirectory(src.to_path_buf()));
        }
        let children = self.scan_dir(src, true)?;
        self.counts.dirs += 1;
        Ok(Node {
            name: Vec::new(),
            meta: meta_of(src, &md),
            kind: Kind::Dir {
                children,
                nested: false,
            },
        })
    }

    fn scan_dir(&mut self, dir: &Path, is_root: bool) -> Result<Vec<Node>> {
        let mut names: Vec<std::ffi::OsString> = Vec::new();
        for e in std::fs::read_dir(dir).map_err(PublishError::io("list", dir))? {
            let e = e.map_err(PublishError::io("list", dir))?;
            names.push(e.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let path = dir.join(&name);
            if is_root && name.as_bytes() == CATALOG_MARKER {
                tracing::warn!(path = %path.display(), "a .cvmfscatalog marker in the repository root has no meaning, not published");
                self.counts.skipped += 1;
                continue;
            }
            if let Some(n) = self.scan_entry(&path, &name)? {
                out.push(n);
            }
        }
        Ok(out)
    }

    fn scan_entry(&mut self, path: &Path, name: &OsStr) -> Result<Option<Node>> {
        let md = std::fs::symlink_metadata(path).map_err(PublishError::io("stat", path))?;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            let children = self.scan_dir(path, false)?;
            let nested = children
                .iter()
                .any(|c| c.name == CATALOG_MARKER && matches!(c.kind, Kind::File { .. }));
            self.counts.dirs += 1;
            Kind::Dir { children, nested }
        } else if ft.is_file() {
            let key = (md.dev(), md.ino());
            let index = match (md.nlink() > 1)
                .then(|| self.by_inode.get(&key).copied())
                .flatten()
            {
                Some(i) => i,
                None => {
                    self.jobs.push(FileJob {
                        path: path.to_path_buf(),
                        size: md.size(),
                    });
                    let i = self.jobs.len() - 1;
                    if md.nlink() > 1 {
                        self.by_inode.insert(key, i);
                    }
                    i
                }
            };
            self.counts.files += 1;
            self.counts.bytes += md.size();
            Kind::File {
                dev: md.dev(),
                ino: md.ino(),
                nlink: md.nlink(),
                index,
            }
        } else if ft.is_symlink() {
            let target =
                std::fs::read_link(path).map_err(PublishError::io("read symlink", path))?;
            self.counts.symlinks += 1;
            Kind::Symlink {
                target: target.into_os_string().into_vec(),
            }
        } else {
            let what = if ft.is_socket() {
                "socket"
            } else if ft.is_fifo() {
                "fifo"
            } else if ft.is_block_device() {
                "block device"
            } else if ft.is_char_device() {
                "character device"
            } else {
                "special file"
            };
            tracing::warn!(path = %path.display(), kind = what, "skipping {what}: not published");
            self.counts.skipped += 1;
            return Ok(None);
        };
        Ok(Some(Node {
            name: name.as_bytes().to_vec(),
            meta: meta_of(path, &md),
            kind,
        }))
    }
}

use std::os::unix::ffi::OsStringExt;
