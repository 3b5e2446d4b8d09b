//! The envelope shared by `.cvmfspublished` and `.cvmfswhitelist`:
//! key lines, a `--` line, a hash line, then the raw signature.

use crate::hash::{Algorithm, ContentHash};

/// A signed document split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Everything before the `--` line, including the last newline.
    pub letter: &'a [u8],
    /// The hash line (hex digest of `letter` with algorithm suffix), without newline.
    pub hash_line: &'a [u8],
    /// Raw signature bytes (to end of file).
    pub signature: &'a [u8],
}

/// Split a signed document; `None` if there is no `--` line or no hash line.
pub fn split(data: &[u8]) -> Option<Envelope<'_>> {
    let mut pos = 0;
    while pos < data.len() {
        let end = data[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i)
            .unwrap_or(data.len());
        if &data[pos..end] == b"--" {
            let letter = &data[..pos];
            let rest = data.get(end + 1..)?;
            let nl = rest.iter().position(|&b| b == b'\n')?;
            return Some(Envelope {
                letter,
                hash_line: &rest[..nl],
                signature: &rest[nl + 1..],
            });
        }
        pos = end + 1;
    }
    None
}

/// Check that `hash_line` is the digest of `letter` in the algorithm it names.
pub fn hash_line_matches(env: &Envelope<'_>) -> bool {
    let Ok(text) = std::str::from_utf8(env.hash_line) else {
        return false;
    };
    let Ok(h) = text.parse::<ContentHash>() else {
        return false;
    };
    h.algo.digest(env.letter) == h
}

/// Assemble a signed document: `letter`, `--\n`, hash line, `\n`, signature.
/// `sign` receives the hash line and returns the signature.
pub fn assemble<E>(
    letter: &[u8],
    algo: Algorithm,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, E> {
    let line = algo.digest(letter).to_string();
    let sig = sign(line.as_bytes())?;
    let mut out = Vec::with_capacity(letter.len() + line.len() + sig.len() + 4);
    out.extend_from_slice(letter);
    out.extend_from_slice(b"--\n");
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&sig);
    Ok(out)
}
