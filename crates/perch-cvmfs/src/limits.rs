//! How much perch downloads of a file whose size it cannot know in advance.
//!
//! A file whose size a verified parent declares (a catalog row's `size` for a file or chunk, a
//! `nested_catalogs` row's `size` for a nested catalog) is held to that size exactly. Every
//! other download has a fixed ceiling, so that a broken or hostile server (or proxy) sending an
//! endless or huge body is cut off with one error naming the URL and the limit, after bounded
//! memory and disk:
//!
//! | download | limit | held in |
//! |---|---|---|
//! | manifest `.cvmfspublished` | 1 MiB | memory |
//! | whitelist `.cvmfswhitelist` | 1 MiB | memory |
//! | certificate `X` object | 1 MiB, stored and decompressed | the cache, then memory |
//! | root catalog, tagged root catalog, a nested catalog whose row says size 0, history database, any object `perch cache check` downloads again | 4 GiB decompressed, or half of `CVMFS_QUOTA_LIMIT` when that is lower | the cache |
//!
//! The 1 MiB limits are the CernVM-FS client's own: it downloads the manifest, whitelist and
//! certificate into memory and reserves at most 1 MiB for them. It has no ceiling on
//! catalogs except its quota's (an object larger than half the quota is refused), so perch
//! uses that one where a quota is set, and 4 GiB otherwise (far above any catalog a publisher
//! should write: the CernVM-FS documentation advises well under a million entries, some
//! hundreds of MB). The manifest's `B` (root catalog size) is not used: the real client never
//! checks it, so a repository where it is wrong must still mount.
//!
//! The stored (compressed) bytes are bounded too, a little above the content limit: zlib's
//! framing costs a few bytes per 64 KiB, and an endless run of empty deflate blocks would
//! otherwise never produce a byte of content to stop at.

use perch_format::hash::ObjectKind;

/// Most bytes of a manifest (`.cvmfspublished`).
pub const MANIFEST_MAX: u64 = 1 << 20;
/// Most bytes of a whitelist (`.cvmfswhitelist`).
pub const WHITELIST_MAX: u64 = 1 << 20;
/// Most bytes of a certificate, stored and decompressed.
pub const CERTIFICATE_MAX: u64 = 1 << 20;
/// Most decompressed bytes of a catalog or history database whose size nothing declares.
pub const UNDECLARED_MAX: u64 = 4 << 30;

/// A ceiling on one download: the most content bytes, and what the message calls the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Most content (decompressed) bytes.
    pub bytes: u64,
    /// What is limited, as the error message says it ("a certificate").
    pub what: String,
}

impl Limit {
    /// The most stored bytes a reply may have for this much content: zlib stores
    /// incompressible data in blocks of at most 65 535 bytes with 5 bytes of framing each,
    /// plus 6 bytes for the stream; a sixteenth more and 64 KiB cover any sane compressor.
    pub fn stored(&self, compressed: bool) -> u64 {
        if compressed {
            self.bytes
                .saturating_add(self.bytes / 16)
                .saturating_add(64 << 10)
        } else {
            self.bytes
        }
    }
}

/// The limit on an object of `kind` that no verified parent declares a size for, in a cache
/// with quota `quota` (bytes; `None` = unmanaged).
pub fn undeclared(kind: ObjectKind, quota: Option<u64>) -> Limit {
    let name = match kind {
        ObjectKind::Certificate => {
            return Limit {
                bytes: CERTIFICATE_MAX,
                what: "a certificate".into(),
            }
        }
        ObjectKind::Catalog => "a catalog",
        ObjectKind::History => "a history database",
        _ => "an object",
    };
    match quota.map(|q| q / 2).filter(|&half| half < UNDECLARED_MAX) {
        Some(half) => Limit {
            bytes: half,
            what: format!("{name} whose size nothing declares (half of CVMFS_QUOTA_LIMIT)"),
        },
        None => Limit {
            bytes: UNDECLARED_MAX,
            what: format!("{name} whose size nothing declares"),
        },
    }
}

/// `n` bytes as people read it: `1 MiB`, `4 GiB`, `1536 KiB`, `100 bytes`.
pub fn shown(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if n >= unit && n % unit == 0 {
            return format!("{} {name}", n / unit);
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_lowers_the_catalog_limit_and_never_raises_it() {
        assert_eq!(undeclared(ObjectKind::Catalog, None).bytes, UNDECLARED_MAX);
        let q = undeclared(ObjectKind::Catalog, Some(8 << 20));
        assert_eq!(q.bytes, 4 << 20);
        assert!(q.what.contains("CVMFS_QUOTA_LIMIT"), "{}", q.what);
        assert_eq!(
            undeclared(ObjectKind::History, Some(u64::MAX)).bytes,
            UNDECLARED_MAX
        );
        assert_eq!(
            undeclared(ObjectKind::Certificate, Some(1024)).bytes,
            CERTIFICATE_MAX
        );
    }

    #[test]
    fn sizes_are_shown_in_the_largest_exact_unit() {
        assert_eq!(shown(1 << 20), "1 MiB");
        assert_eq!(shown(4 << 30), "4 GiB");
        assert_eq!(shown(1536 << 10), "1536 KiB");
        assert_eq!(shown(1000), "1000 bytes");
    }
}
