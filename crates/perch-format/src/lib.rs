//! Pure CernVM-FS formats: bytes in, values out.
//!
//! This crate owns content hashes (SHA-1, RIPEMD-160, SHAKE-128) and object
//! names, zlib streams, the signed manifest (`.cvmfspublished`), the whitelist
//! (`.cvmfswhitelist`), the certificate object and both RSA signature schemes,
//! the SQLite file catalogs (schema 2.5), the history database and the reflog.
//! It knows nothing about files on a server, caches or the network.
//!
//! ```
//! use perch_format::hash::{Algorithm, ObjectKind};
//! let h = Algorithm::Sha1.digest(&perch_format::compress::zlib_compress(b""));
//! assert_eq!(h.object_path(ObjectKind::File), "data/e8/ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod catalog;
pub mod compress;
pub mod crypto;
pub mod hash;
pub mod history;
pub mod manifest;
pub mod signed;
pub mod whitelist;
