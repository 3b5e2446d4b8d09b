//! The CernVM-FS client: configuration, downloads with failover, the object
//! cache (local or alien), the signature chain, catalogs and nested catalogs,
//! chunked files and tags.
//!
//! It knows nothing about traced processes or syscalls: `perch-vfs` sees a
//! mounted [`repo::Repository`] through its own trait, adapted by the binary.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod blocking;
pub mod cache;
pub mod config;
pub mod dns;
pub mod fetch;
pub mod limits;
pub mod parrot;
pub mod repo;

pub use repo::{MountOptions, Node, RepoError, Repository, ResolveError, MAX_OPEN_CATALOGS};

/// Render an error and its sources as one line: `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
