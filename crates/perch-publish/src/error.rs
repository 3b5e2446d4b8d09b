//! The publisher's error type.

use std::path::PathBuf;

use perch_format::catalog::CatalogError;
use perch_format::crypto::CryptoError;
use perch_format::manifest::ManifestError;

/// Why keys could not be made or loaded, or a publish failed.
///
/// Every variant names the object it is about (a path, a hash, a tag) and keeps
/// the underlying error as its source.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A file system operation failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What was attempted (`read`, `write`, `rename`, ...).
        op: &'static str,
        /// The path it was attempted on.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The keys directory does not exist.
    #[error("keys directory {0} does not exist")]
    NoKeyDir(PathBuf),
    /// A key file is missing from the keys directory.
    #[error("missing key file {0} (create the keys with keygen first)")]
    MissingKey(PathBuf),
    /// `keygen` refuses to overwrite existing keys.
    #[error("refusing to overwrite existing key file {0}")]
    KeyExists(PathBuf),
    /// A key or certificate file could not be parsed.
    #[error("invalid key file {path}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        #[source]
        source: CryptoError,
    },
    /// The certificate does not hold the public half of the certificate key.
    #[error("certificate {0} does not match its private key")]
    KeyMismatch(PathBuf),
    /// Signing or key generation failed.
    #[error("signing failed")]
    Crypto(#[source] CryptoError),
    /// The stratum's current manifest cannot be parsed.
    #[error("invalid manifest {path}")]
    BadManifest {
        /// `.cvmfspublished` of the stratum.
        path: PathBuf,
        /// Why it was refused.
        #[source]
        source: ManifestError,
    },
    /// The stratum's current manifest names another repository.
    #[error("stratum {stratum} holds repository {found:?}, not {expected}")]
    WrongRepository {
        /// The stratum directory.
        stratum: PathBuf,
        /// The name we publish.
        expected: String,
        /// The name in its manifest.
        found: String,
    },
    /// The stratum's current manifest was not signed by this repository's keys.
    #[error("manifest {path} was not signed by the certificate key in the keys directory")]
    ForeignManifest {
        /// `.cvmfspublished` of the stratum.
        path: PathBuf,
        /// The verification failure.
        #[source]
        source: ManifestError,
    },
    /// An object the current revision refers to is missing from the stratum.
    #[error("object {0} is missing from the stratum")]
    MissingObject(String),
    /// An object of the current revision is not a valid zlib stream.
    #[error("object {path} is corrupt")]
    CorruptObject {
        /// Its path.
        path: PathBuf,
        /// The decompression error.
        #[source]
        source: std::io::Error,
    },
    /// A catalog, history or reflog database operation failed.
    #[error("database {path}")]
    Catalog {
        /// The database file (or object) concerned.
        path: String,
        /// The SQLite-level error.
        #[source]
        source: CatalogError,
    },
    /// The source is not a directory.
    #[error("source {0} is not a directory")]
    NotADirectory(PathBuf),
    /// The named tag already exists in the history.
    #[error("tag {0:?} already exists")]
    TagExists(String),
    /// A tag name is reserved or empty.
    #[error("invalid tag name {0:?} (empty, or one of trunk, trunk-previous)")]
    BadTag(String),
    /// Chunk sizes are not `32 <= min < avg < max`.
    #[error("invalid chunk sizes min {min} avg {avg} max {max} (need 32 <= min < avg < max)")]
    BadChunking {
        /// Minimum.
        min: u64,
        /// Average.
        avg: u64,
        /// Maximum.
        max: u64,
    },
    /// The repository name is not usable.
    #[error("invalid repository name {0:?}")]
    BadName(String),
    /// A worker thread panicked.
    #[error("a compression worker panicked")]
    WorkerPanic,
}

impl PublishError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> PublishError {
        let path = path.into();
        move |source| PublishError::Io { op, path, source }
    }

    pub(crate) fn db(path: impl std::fmt::Display) -> impl FnOnce(CatalogError) -> PublishError {
        let path = path.to_string();
        move |source| PublishError::Catalog { path, source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = PublishError> = std::result::Result<T, E>;
