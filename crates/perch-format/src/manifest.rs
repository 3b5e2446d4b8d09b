//! `.cvmfspublished`: the signed manifest naming the root catalog.

use crate::crypto::{Certificate, CryptoError, PrivateKey};
use crate::hash::{Algorithm, ContentHash};
use crate::signed;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// No `--` separator or hash line.
    #[error("manifest has no signature block")]
    NoSignatureBlock,
    /// A required key (`C`, `R`, `D`, `S`) is missing.
    #[error("incomplete manifest: missing {0}")]
    Missing(&'static str),
    /// A value could not be parsed.
    #[error("manifest field {key}: invalid value {value:?}")]
    BadValue {
        /// Key letter.
        key: char,
        /// Offending value.
        value: String,
    },
    /// `R` is not MD5("").
    #[error("manifest root path hash is not the empty path")]
    RootPath,
    /// The hash line is not the digest of the manifest text.
    #[error("manifest hash line does not match its content")]
    HashLine,
    /// Signature check failed.
    #[error("manifest signature does not verify with the certificate")]
    Signature(#[source] CryptoError),
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `C`: root catalog hash.
    pub root_catalog: ContentHash,
    /// `B`: uncompressed root catalog size.
    pub root_catalog_size: Option<u64>,
    /// `R`: MD5 of the root path (always MD5 of "").
    pub root_path_md5: String,
    /// `D`: TTL in seconds.
    pub ttl: u64,
    /// `S`: revision.
    pub revision: u64,
    /// `G`: garbage collectable.
    pub garbage_collectable: bool,
    /// `A`: alternative catalog path.
    pub alt_catalog_path: bool,
    /// `N`: repository name.
    pub fqrn: Option<String>,
    /// `X`: certificate hash.
    pub certificate: Option<ContentHash>,
    /// `H`: history database hash.
    pub history: Option<ContentHash>,
    /// `T`: publish time (Unix seconds).
    pub timestamp: Option<u64>,
    /// `M`: metainfo hash.
    pub metainfo: Option<ContentHash>,
    /// `Y`: reflog hash.
    pub reflog: Option<ContentHash>,
}

/// A manifest with its signature parts kept for verification.
#[derive(Debug, Clone)]
pub struct SignedManifest {
    /// Parsed fields.
    pub manifest: Manifest,
    letter: Vec<u8>,
    hash_line: Vec<u8>,
    signature: Vec<u8>,
}

fn parse_hash(key: char, v: &str) -> Result<ContentHash, ManifestError> {
    v.parse().map_err(|_| ManifestError::BadValue {
        key,
        value: v.chars().take(80).collect(),
    })
}

fn parse_u64(key: char, v: &str) -> Result<u64, ManifestError> {
    v.parse().map_err(|_| ManifestError::BadValue {
        key,
        value: v.chars().take(80).collect(),
    })
}

impl Manifest {
    /// Parse the key lines (the part before `--`, or a whole unsigned text).
    pub fn parse_letter(text: &[u8]) -> Result<Manifest, ManifestError> {
        let mut c = None;
        let mut b = None;
        let mut r = None;
        let mut d = None;
        let mut s = None;
        let mut m = Manifest {
            root_catalog: Algorithm::Sha1.digest(b""),
            root_catalog_size: None,
            root_path_md5: String::new(),
            ttl: 0,
            revision: 0,
            garbage_collectable: false,
            alt_catalog_path: false,
            fqrn: None,
            certificate: None,
            history: None,
            timestamp: None,
            metainfo: None,
            reflog: None,
        };
        for raw in text.split(|&b| b == b'\n') {
            if raw == b"--" {
                break;
            }
            if raw.is_empty() {
                continue;
            }
            let key = char::from(raw[0]);
            let v = String::from_utf8_lossy(&raw[1..]);
            let v = v.trim_end_matches('\r');
            match key {
                'C' => c = Some(parse_hash(key, v)?),
                'B' => b = Some(parse_u64(key, v)?),
                'R' => r = Some(v.to_string()),
                'D' => d = Some(parse_u64(key, v)?),
                'S' => s = Some(parse_u64(key, v)?),
                'G' => m.garbage_collectable = v == "yes",
                'A' => m.alt_catalog_path = v == "yes",
                'N' => m.fqrn = Some(v.to_string()),
                'X' => m.certificate = Some(parse_hash(key, v)?),
                'H' => m.history = Some(parse_hash(key, v)?),
                'T' => m.timestamp = Some(parse_u64(key, v)?),
                'M' => m.metainfo = Some(parse_hash(key, v)?),
                'Y' => m.reflog = Some(parse_hash(key, v)?),
                _ => {}
            }
        }
        m.root_catalog = c.ok_or(ManifestError::Missing("C (root catalog)"))?;
        m.root_path_md5 = r.ok_or(ManifestError::Missing("R (root path hash)"))?;
        m.ttl = d.ok_or(ManifestError::Missing("D (TTL)"))?;
        m.revision = s.ok_or(ManifestError::Missing("S (revision)"))?;
        m.root_catalog_size = b;
        if m.root_path_md5 != crate::hash::md5_hex(b"") {
            return Err(ManifestError::RootPath);
        }
        Ok(m)
    }

    /// The key lines in the order the real writer emits them.
    pub fn to_letter(&self) -> Vec<u8> {
        let mut s = String::new();
        let yn = |b: bool| if b { "yes" } else { "no" };
        s += &format!("C{}\n", self.root_catalog);
        if let Some(b) = self.root_catalog_size {
            s += &format!("B{b}\n");
        }
        s += &format!("R{}\n", self.root_path_md5);
        s += &format!("D{}\n", self.ttl);
        s += &format!("S{}\n", self.revision);
        s += &format!("G{}\n", yn(self.garbage_collectable));
        s += &format!("A{}\n", yn(self.alt_catalog_path));
        if let Some(n) = &self.fqrn {
            s += &format!("N{n}\n");
        }
        if let Some(x) = &self.certificate {
            s += &format!("X{x}\n");
        }
        if let Some(h) = &self.history {
            s += &format!("H{h}\n");
        }
        if let Some(t) = self.timestamp {
            s += &format!("T{t}\n");
        }
        if let Some(m) = &self.metainfo {
            s += &format!("M{m}\n");
        }
        if let Some(y) = &self.reflog {
            s += &format!("Y{y}\n");
        }
        s.into_bytes()
    }

    /// Sign with the certificate's private key; the hash line uses `algo`
    /// (the repository's algorithm).
    pub fn sign(&self, algo: Algorithm, key: &PrivateKey) -> Result<Vec<u8>, CryptoError> {
        signed::assemble(&self.to_letter(), algo, |line| key.sign_manifest(line))
    }
}

impl SignedManifest {
    /// Parse a downloaded `.cvmfspublished`.
    pub fn parse(data: &[u8]) -> Result<SignedManifest, ManifestError> {
        let env = signed::split(data).ok_or(ManifestError::NoSignatureBlock)?;
        let manifest = Manifest::parse_letter(env.letter)?;
        Ok(SignedManifest {
            manifest,
            letter: env.letter.to_vec(),
            hash_line: env.hash_line.to_vec(),
            signature: env.signature.to_vec(),
        })
    }

    /// The hash line (for whitelists of other tools and diagnostics).
    pub fn hash_line(&self) -> &[u8] {
        &self.hash_line
    }

    /// Verify that the hash line matches the text and the signature verifies
    /// with `cert`'s key.
    pub fn verify(&self, cert: &Certificate) -> Result<(), ManifestError> {
        let env = signed::Envelope {
            letter: &self.letter,
            hash_line: &self.hash_line,
            signature: &self.signature,
        };
        if !signed::hash_line_matches(&env) {
            return Err(ManifestError::HashLine);
        }
        cert.public_key()
            .verify_manifest(&self.hash_line, &self.signature)
            .map_err(ManifestError::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn parse_never_panics(v in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = SignedManifest::parse(&v);
        }
        #[test]
        fn mutated_lines_never_panic(lines in proptest::collection::vec("[CBRDSGANXHTMYZ][ -~]{0,60}", 0..20)) {
            let text = lines.join("\n") + "\n--\nabc\nsig";
            let _ = SignedManifest::parse(text.as_bytes());
        }
    }
}
