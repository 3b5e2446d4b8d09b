//! perch-fuse: the perch-vfs namespace (`/cvmfs` with its lazily mounted repositories) served
//! through the kernel's FUSE protocol, for `perch run --mode fuse`.
//!
//! It owns: the FUSE file system ([`PerchFs`]: lookups, attributes, listings, symlinks, reads
//! from the verified cache objects, extended attributes, `statfs`, `EROFS` for every write) and
//! [`serve`], which runs it on an already mounted `/dev/fuse` descriptor with the `fuser` crate
//! (no libfuse, no fusermount: perch opens the device and calls `mount(2)` itself inside its
//! namespaces, see perch-sys `ns`).
//!
//! It must not know: namespaces, mount calls or processes (perch-sys and the binary), HTTP,
//! catalogs or the cache layout (behind perch-vfs's `Repository`). It does no unsafe.
//!
//! Choices, documented:
//! - A mounted revision never changes, so entries, attributes and negative lookups inside a
//!   repository are given to the kernel with a one-year lifetime, file pages are kept in the page
//!   cache across opens (`FOPEN_KEEP_CACHE`), directory listings are cached by the kernel
//!   (`FOPEN_CACHE_DIR`) and come with their attributes (`READDIRPLUS`).
//! - Files and directories are opened by the kernel without a request where it can
//!   (`open`/`opendir` answer `ENOSYS`: no OPEN, RELEASE, OPENDIR or RELEASEDIR round trips);
//!   a file's object is fetched at its first read and kept open by node id, and listings are
//!   read by node id and offset. `FLUSH` answers `ENOSYS` (nothing is ever written).
//! - `/cvmfs` itself lists the configured repositories without mounting them; a repository is
//!   mounted on the first lookup of `/cvmfs/<fqrn>`. Names the configuration does not know are
//!   not cached negatively (a later lookup asks again).
//! - Node ids (and so `st_ino`) are stable: a hash of the repository name and the client's inode
//!   (which is itself a hash of the path). All repositories share the one FUSE mount, so
//!   `st_dev` is the same for every repository (with notify mode each has its own).
//! - Metadata comes from the catalog ([`perch_vfs::Entry`]); the kernel checks permissions
//!   (`default_permissions`), as it does for the real client.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! # let (ns, fuse_fd): (std::sync::Arc<perch_vfs::Namespace>, std::os::fd::OwnedFd) = todo!();
//! // `fuse_fd`: /dev/fuse, already passed to mount(2) as `fd=N`.
//! let session = perch_fuse::serve(fuse_fd, ns, 4)?;
//! // ... the program runs; when the mount goes away the session ends:
//! session.join()?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod attr;
mod dir;
mod fs;
mod nodes;

use std::os::fd::OwnedFd;
use std::sync::Arc;

pub use fs::PerchFs;

/// Mount options perch passes to `mount(2)` for its FUSE file system, after `fd=N,rootmode=…`:
/// the kernel checks permissions from the attributes, and every user of the namespace may
/// read (as with the real client).
pub const MOUNT_OPTIONS: &str = "default_permissions,allow_other";

/// File system type name for `mount(2)` (`fuse.perch` shows in `/proc/mounts`).
pub const FS_TYPE: &str = "fuse.perch";

/// Serves `ns` on `fd` (an open `/dev/fuse` already mounted with `fd=<fd>`), with `threads`
/// threads answering requests, in the background. The session ends when the file system is
/// unmounted (the mount namespace is gone) or the descriptor is closed.
pub fn serve(
    fd: OwnedFd,
    ns: Arc<perch_vfs::Namespace>,
    threads: usize,
) -> std::io::Result<fuser::BackgroundSession> {
    let mut config = fuser::Config::default();
    config.n_threads = Some(threads.max(1));
    config.acl = fuser::SessionACL::All;
    let session = fuser::Session::from_fd(PerchFs::new(ns), fd, fuser::SessionACL::All, config)?;
    session.spawn()
}
