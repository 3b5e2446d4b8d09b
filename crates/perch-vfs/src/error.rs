//! [`VfsError`]: failures of perch-vfs's own work (shadow tree I/O, repository calls).

use std::io;
use std::path::PathBuf;

use crate::{Errno, RepoError};

/// A failure while materializing the namespace; [`VfsError::errno`] is what the program sees.
#[derive(Debug, thiserror::Error)]
pub enum VfsError {
    /// The configured mount point is not an absolute path below `/`.
    #[error("bad mount point {mountpoint:?}: must be absolute, not /, without . or ..")]
    BadMountpoint {
        /// The rejected value.
        mountpoint: String,
    },
    /// A file-system operation on the shadow tree failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What we tried (`"create"`, `"rename into"`, `"link"`, ...).
        op: &'static str,
        /// The object.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The repository failed.
    #[error("{fqrn}:{path}")]
    Repo {
        /// Repository.
        fqrn: String,
        /// Repository path.
        path: String,
        /// The cause, with its errno.
        #[source]
        source: RepoError,
    },
}

impl VfsError {
    /// The errno for the program: the repository's own; for shadow-tree I/O the resource
    /// errors (`ENOSPC`, `EDQUOT`, `EMFILE`, `ENFILE`, `ENOMEM`) pass, everything else is `EIO`.
    pub fn errno(&self) -> Errno {
        match self {
            VfsError::BadMountpoint { .. } => Errno::EINVAL,
            VfsError::Repo { source, .. } => source.errno(),
            VfsError::Io { source, .. } => match source.raw_os_error() {
                Some(
                    e @ (libc::ENOSPC | libc::EDQUOT | libc::EMFILE | libc::ENFILE | libc::ENOMEM),
                ) => Errno::new(e),
                _ => Errno::EIO,
            },
        }
    }

    /// A repository failure on `fqrn`'s `path`, logged like the namespace's own (once per
    /// object and interval, see [`crate::limit`]); returns the errno for the program. For
    /// backends that call the repository directly (perch-fuse).
    pub fn log_repo(fqrn: &str, path: &[u8], source: RepoError) -> Errno {
        VfsError::Repo {
            fqrn: fqrn.to_string(),
            path: String::from_utf8_lossy(path).into_owned(),
            source,
        }
        .log_errno()
    }

    /// Log (once, here: the program only gets the errno; rate-limited per object, see
    /// [`crate::limit`]) and return the errno.
    pub(crate) fn log_errno(self) -> Errno {
        let errno = self.errno();
        let key = match &self {
            VfsError::Repo { fqrn, path, .. } => format!("{fqrn}{path}"),
            VfsError::Io { path, .. } => path.display().to_string(),
            VfsError::BadMountpoint { mountpoint } => mountpoint.clone(),
        };
        if let Some(held) = crate::limit::allow(&key) {
            let chain = error_chain(&self);
            if held > 0 {
                tracing::warn!(target: "vfs", errno = %errno.name().unwrap_or("E?"), "{chain} ({held} more like this held back)");
            } else {
                tracing::warn!(target: "vfs", errno = %errno.name().unwrap_or("E?"), "{chain}");
            }
        }
        errno
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
