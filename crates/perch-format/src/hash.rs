//! Content hashes: algorithms, text form with suffixes, object names.

use std::fmt;
use std::str::FromStr;

use digest::{Digest as _, ExtendableOutput, Update, XofReader};

/// Error parsing a textual hash.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid content hash {text:?}: {reason}")]
pub struct HashParseError {
    /// The text that failed to parse (truncated to 80 bytes).
    pub text: String,
    /// Why it was refused.
    pub reason: &'static str,
}

/// A content hash algorithm used for objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-1 (default, no suffix).
    Sha1,
    /// RIPEMD-160 (`-rmd160`).
    Rmd160,
    /// First 160 bits of SHAKE-128 (`-shake128`).
    Shake128,
}

impl Algorithm {
    /// The suffix appended to the hex digest in text form.
    pub fn suffix(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "",
            Algorithm::Rmd160 => "-rmd160",
            Algorithm::Shake128 => "-shake128",
        }
    }

    /// Value of catalog flag bits 8..10 (already shifted).
    pub fn flag_bits(self) -> u32 {
        match self {
            Algorithm::Sha1 => 0,
            Algorithm::Rmd160 => 1 << 8,
            Algorithm::Shake128 => 2 << 8,
        }
    }

    /// Algorithm from catalog flags (bits 8..10).
    pub fn from_flags(flags: u32) -> Option<Algorithm> {
        match (flags >> 8) & 0x7 {
            0 => Some(Algorithm::Sha1),
            1 => Some(Algorithm::Rmd160),
            2 => Some(Algorithm::Shake128),
            _ => None,
        }
    }

    /// Name as used on the command line and in `user.*` attributes.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Rmd160 => "rmd160",
            Algorithm::Shake128 => "shake128",
        }
    }

    /// Start an incremental hash.
    pub fn hasher(self) -> Hasher {
        Hasher::new(self)
    }

    /// Hash a byte slice at once.
    pub fn digest(self, data: &[u8]) -> ContentHash {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }
}

impl FromStr for Algorithm {
    type Err = HashParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha1" => Ok(Algorithm::Sha1),
            "rmd160" => Ok(Algorithm::Rmd160),
            "shake128" => Ok(Algorithm::Shake128),
            _ => Err(HashParseError {
                text: s.chars().take(80).collect(),
                reason: "unknown algorithm (sha1, rmd160, shake128)",
            }),
        }
    }
}

/// A 160-bit content hash with its algorithm.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash {
    /// The algorithm.
    pub algo: Algorithm,
    /// The 20 digest bytes.
    pub bytes: [u8; 20],
}

impl ContentHash {
    /// Build from raw digest bytes (a catalog BLOB column) and an algorithm.
    pub fn from_raw(algo: Algorithm, raw: &[u8]) -> Option<ContentHash> {
        let bytes: [u8; 20] = raw.try_into().ok()?;
        Some(ContentHash { algo, bytes })
    }

    /// Lower-case hex of the digest, without suffix.
    pub fn hex(&self) -> String {
        hex::encode(self.bytes)
    }

    /// Object path below the repository root: `data/XX/rest<suffix><letter>`.
    pub fn object_path(&self, kind: ObjectKind) -> String {
        let hex = self.hex();
        format!(
            "data/{}/{}{}{}",
            &hex[..2],
            &hex[2..],
            self.algo.suffix(),
            kind.letter()
        )
    }

    /// Cache file name below the cache root: `XX/rest<suffix>` (no type letter).
    pub fn cache_path(&self) -> String {
        let hex = self.hex();
        format!("{}/{}{}", &hex[..2], &hex[2..], self.algo.suffix())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.hex(), self.algo.suffix())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

impl FromStr for ContentHash {
    type Err = HashParseError;
    /// Parse the text form `hex[-suffix]` (no type letter).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| HashParseError {
            text: s.chars().take(80).collect(),
            reason,
        };
        let (hexpart, algo) = if let Some(h) = s.strip_suffix("-shake128") {
            (h, Algorithm::Shake128)
        } else if let Some(h) = s.strip_suffix("-rmd160") {
            (h, Algorithm::Rmd160)
        } else {
            (s, Algorithm::Sha1)
        };
        if hexpart.len() != 40 {
            return Err(err("expected 40 hex digits"));
        }
        if !hexpart
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(err("not lower-case hex"));
        }
        let mut bytes = [0u8; 20];
        hex::decode_to_slice(hexpart, &mut bytes).map_err(|_| err("not hex"))?;
        Ok(ContentHash { algo, bytes })
    }
}

/// Object type letters appended in storage paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// Whole file (no letter).
    File,
    /// File catalog (`C`).
    Catalog,
    /// History database (`H`).
    History,
    /// Certificate (`X`).
    Certificate,
    /// File chunk (`P`).
    Chunk,
    /// Metainfo (`M`).
    Metainfo,
}

impl ObjectKind {
    /// The type letter (empty for whole files).
    pub fn letter(self) -> &'static str {
        match self {
            ObjectKind::File => "",
            ObjectKind::Catalog => "C",
            ObjectKind::History => "H",
            ObjectKind::Certificate => "X",
            ObjectKind::Chunk => "P",
            ObjectKind::Metainfo => "M",
        }
    }
}

/// Incremental content hasher.
pub struct Hasher(HasherInner);

// SHAKE-128's sponge state is larger than the others; a hasher lives on the
// stack for one object, so boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum HasherInner {
    Sha1(sha1::Sha1),
    Rmd160(ripemd::Ripemd160),
    Shake128(sha3::Shake128),
}

impl Hasher {
    /// A new hasher for `algo`.
    pub fn new(algo: Algorithm) -> Hasher {
        Hasher(match algo {
            Algorithm::Sha1 => HasherInner::Sha1(sha1::Sha1::new()),
            Algorithm::Rmd160 => HasherInner::Rmd160(ripemd::Ripemd160::new()),
            Algorithm::Shake128 => HasherInner::Shake128(sha3::Shake128::default()),
        })
    }

    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            HasherInner::Sha1(h) => digest::Digest::update(h, data),
            HasherInner::Rmd160(h) => digest::Digest::update(h, data),
            HasherInner::Shake128(h) => Update::update(h, data),
        }
    }

    /// Finish and return the hash.
    pub fn finish(self) -> ContentHash {
        let mut bytes = [0u8; 20];
        let algo = match self.0 {
            HasherInner::Sha1(h) => {
                bytes.copy_from_slice(&h.finalize());
                Algorithm::Sha1
            }
            HasherInner::Rmd160(h) => {
                bytes.copy_from_slice(&h.finalize());
                Algorithm::Rmd160
            }
            HasherInner::Shake128(h) => {
                h.finalize_xof().read(&mut bytes);
                Algorithm::Shake128
            }
        };
        ContentHash { algo, bytes }
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// MD5 of a repository path (`""` for the root), as the two signed 64-bit
/// little-endian halves stored in catalog `md5path_1`/`md5path_2` columns.
pub fn path_md5(path: &[u8]) -> (i64, i64) {
    let d = md5::Md5::digest(path);
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&d[..8]);
    b.copy_from_slice(&d[8..]);
    (i64::from_le_bytes(a), i64::from_le_bytes(b))
}

/// Lower-case hex MD5 of bytes (manifest `R` line).
pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_hashes_match_spec() {
        assert_eq!(path_md5(b""), (338333539836370388, 9098107892288553193));
        assert_eq!(
            path_md5(b"/from-tar"),
            (247042227640105053, -8437455789540294112)
        );
        assert_eq!(
            path_md5(b"/dir/a.txt"),
            (-5794625030223168408, -8080020947251976786)
        );
    }

    #[test]
    fn empty_shake_and_sha1() {
        assert_eq!(
            Algorithm::Shake128.digest(b"").to_string(),
            "7f9c2ba4e88f827d616045507605853ed73b8093-shake128"
        );
        let z = [0x78u8, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01];
        assert_eq!(
            Algorithm::Sha1.digest(&z).to_string(),
            "e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78"
        );
    }

    #[test]
    fn text_round_trip_and_paths() {
        let h: ContentHash = "1f88d9ea3726473cd261fc63a29dcf709892d784-shake128"
            .parse()
            .unwrap();
        assert_eq!(
            h.object_path(ObjectKind::Chunk),
            "data/1f/88d9ea3726473cd261fc63a29dcf709892d784-shake128P"
        );
        assert_eq!(h.to_string().parse::<ContentHash>().unwrap(), h);
        assert!("ABCD".parse::<ContentHash>().is_err());
        assert!("8415EECB60C637CBE5324DC8F614BE6FE516816B"
            .parse::<ContentHash>()
            .is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            let _ = s.parse::<ContentHash>();
        }
    }
}
