//! The CernVM-FS publisher and `perch serve`.
//!
//! This crate owns everything that writes a stratum 0 directory:
//!
//! - [`keygen`] / [`KeySet`]: the repository keys (`<fqrn>.masterkey`, `.pub`,
//!   `.key`, `.crt`) as `cvmfs_server` lays them out;
//! - [`publish`]: one new revision from a source directory — content-addressed
//!   file objects (zlib or raw, content-defined chunks as `P` objects, with
//!   exactly the real publisher's cut points, see [`ChunkSizes`]), schema 2.5
//!   catalogs nested wherever a `.cvmfscatalog` marker is, with all 24
//!   statistics, the history database (`trunk`, `trunk-previous`, named
//!   tags), the certificate object, `.cvmfsreflog`, a freshly signed
//!   `.cvmfswhitelist` and, last and atomically, the signed `.cvmfspublished`;
//! - [`serve`]: a small static HTTP server for a stratum.
//!
//! It builds on `perch-format` for every byte format and must not know about
//! the client cache, mounting or tracees. The output is meant to be read by
//! the real `cvmfs2` client and to pass `cvmfs_swissknife check` (spec §14).
//! The library never prints; progress bars go to stderr only when asked and
//! stderr is a terminal; warnings (skipped sockets, FIFOs, devices) are
//! `tracing` events.
//!
//! Choices worth knowing (details on [`publish`]):
//!
//! - every catalog is rewritten on each publish (`revision` = previous + 1,
//!   `previous_revision` = its previous hash, 1 / 40 zeros when new), so a
//!   republish uploads the changed file objects, all catalogs and one history
//!   database; the certificate object is reused;
//! - hard links are grouped per directory; links in different directories are
//!   separate files with linkcount 1 (what `cvmfs_server` does, spec §7.7);
//! - names and symlink targets are raw bytes (non-UTF-8 names round-trip);
//!   `user.*` xattrs are published (other namespaces are not);
//! - file objects use real zlib (libz through flate2's `zlib` feature), so
//!   they are byte-identical to the real tools' objects and deduplicate with
//!   them;
//! - objects are renamed into place from `data/txn/` but not fsync'ed one by
//!   one; the whitelist, reflog and manifest are fsync'ed and replaced last.
//!   One publisher per stratum at a time: no lock is taken.
//!
//! ```no_run
//! use perch_publish::{keygen, publish, PublishOptions};
//! # fn main() -> Result<(), perch_publish::PublishError> {
//! keygen("sw.example.org", "/etc/cvmfs/keys".as_ref(), 3650)?;
//! let mut opts = PublishOptions::new("/build/sw", "sw.example.org", "/etc/cvmfs/keys", "/srv/cvmfs/sw.example.org");
//! opts.tag = Some("v1.0".into());
//! let report = publish(&opts)?;
//! assert!(report.revision >= 1);
//! let server = perch_publish::serve("/srv/cvmfs/sw.example.org".as_ref(), "127.0.0.1:8000".parse().unwrap())?;
//! // clients use CVMFS_SERVER_URL=http://127.0.0.1:8000/cvmfs/@fqrn@
//! # drop(server);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod catalogs;
mod chunker;
mod content;
mod error;
mod keys;
mod publish;
mod serve;
mod store;
mod tree;

pub use catalogs::{Counters, WrittenCatalog};
pub use chunker::ChunkSizes;
pub use error::{PublishError, Result};
pub use keys::{key_paths, keygen, KeySet};
pub use publish::{is_stratum, publish, PublishOptions, PublishReport};
pub use serve::{serve, Server};
pub use tree::CATALOG_MARKER;

/// Re-exported so callers can fill [`PublishOptions`] without depending on perch-format.
pub use perch_format::compress::Compression;
/// Re-exported so callers can fill [`PublishOptions`] without depending on perch-format.
pub use perch_format::hash::Algorithm;
