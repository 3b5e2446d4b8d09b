//! perch-vfs: the virtual namespace of perch — path resolution over the host with a read-only
//! `/cvmfs` grafted in, the **shadow tree** that gives every virtual object a real file, and
//! the **syscall table** saying what each path syscall does on a virtual path.
//!
//! It owns: the [`Repository`]/[`Mounter`] contract, [`Namespace::resolve`] (Linux's path walk
//! rules, `RESOLVE_*` included), [`ShadowTree`] (lazy, concurrent-safe materialization on the
//! real file system, hard links to cache objects), the operations ([`Namespace::open`],
//! [`Namespace::stat`], [`Namespace::access`], xattrs, `statfs`, the write family → `EROFS`)
//! with Linux's errno order for a read-only file system, and [`SYSCALLS`]: every row with the
//! code that answers it ([`syscall`]: a typed call and a [`Caller`] in, an answer out; exec and
//! chdir rewriting in [`syscall::rewrite`]), shared by every backend.
//!
//! It must not know: pids, seccomp or ptrace (perch-intercept; a backend gives a [`Caller`]), HTTP, catalogs,
//! hashes or the cache layout (perch-cvmfs behind [`Repository`]). It does no unsafe.
//!
//! ```
//! use std::sync::Arc;
//! use perch_vfs::{mem::{MemMounter, MemRepo}, Lookup, Namespace, Outcome, Resolved};
//!
//! let tmp = tempfile::tempdir().unwrap();
//! let repo = MemRepo::builder("demo.example.org", &tmp.path().join("objects"))
//!     .file("/bin/hello", b"#!/bin/sh\necho hi\n", 0o755)
//!     .symlink("/latest", b"bin")
//!     .build();
//! let ns = Namespace::new(Arc::new(MemMounter::new(tmp.path(), vec![repo]))).unwrap();
//!
//! // cwd /cvmfs/demo.example.org, relative path through a symlink
//! let r = ns.resolve(&Lookup::new(b"latest/hello", b"/cvmfs/demo.example.org"));
//! assert!(matches!(&r, Resolved::Virtual { path, .. } if path == b"/bin/hello"));
//! let Outcome::Value(st) = ns.stat(&r) else { panic!() };
//! assert_eq!(st.st_size, 18);
//!
//! // a real fd with the content, from the shadow tree
//! let Outcome::Value(opened) = ns.open(&r, libc::O_RDONLY, None) else { panic!() };
//! let text = std::fs::read_to_string(format!("/proc/self/fd/{}",
//!     std::os::fd::AsRawFd::as_raw_fd(&opened.fd))).unwrap();
//! assert_eq!(text, "#!/bin/sh\necho hi\n");
//! assert_eq!(ns.virtual_path(&opened.shadow).unwrap().to_str(),
//!            Some("/cvmfs/demo.example.org/bin/hello"));
//!
//! // host paths are left to the kernel
//! assert!(matches!(ns.resolve(&Lookup::new(b"/etc/passwd", b"/")),
//!                  Resolved::Host { rewritten: false, .. }));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod binfmt;
mod error;
mod host;
pub mod layout;
pub mod limit;
pub mod mem;
mod namespace;
mod ops;
mod repo;
pub mod resolve;
pub mod shadow;
pub mod syscall;
pub mod table;

pub use error::VfsError;
pub use layout::{Stat, StatFs, Statx};
pub use namespace::Namespace;
pub use ops::{
    CreateOp, ModifyOp, OpenOutcome, OpenedFd, Outcome, PairOutcome, RemoveOp, XattrReply,
    AUTOFS_SUPER_MAGIC, FUSE_SUPER_MAGIC, STATX_MASK, XATTR_SIZE_MAX,
};
pub use perch_syscalls::Errno;
pub use repo::{Entry, Handle, Kind, ListPage, Mounter, RepoError, Repository};
pub use resolve::{Cred, Last, Lookup, MagicLinks, ParentResolved, ResolveFlags, Resolved};
pub use shadow::ShadowTree;
pub use syscall::{Caller, Calls, Hooks};
pub use table::{Code, Routes, SyscallInfo, SyscallTable, Trap, Treatment, SYSCALLS};
