//! `.cvmfswhitelist`: the master-key-signed list of certificate fingerprints.

use crate::crypto::{Certificate, CryptoError, PrivateKey, PublicKey};
use crate::hash::Algorithm;
use crate::signed;

/// Why a whitelist was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WhitelistError {
    /// Empty document.
    #[error("whitelist is empty")]
    Empty,
    /// Structure is wrong.
    #[error("whitelist is malformed: {0}")]
    Malformed(&'static str),
    /// `N` names another repository.
    #[error("whitelist is for {found:?}, not {expected:?}")]
    NameMismatch {
        /// Repository being mounted.
        expected: String,
        /// Name in the whitelist.
        found: String,
    },
    /// Expiry has passed.
    #[error("whitelist expired at {0} UTC")]
    Expired(String),
    /// No master key verified the signature.
    #[error("whitelist signature does not verify with any of the {0} master key(s)")]
    BadSignature(usize),
    /// The certificate's fingerprint is not listed.
    #[error("certificate {0} is not on the whitelist")]
    NotListed(String),
    /// PKCS#7 / CA chain variants are not supported.
    #[error("whitelist requires {0}, which perch does not support")]
    Unsupported(&'static str),
}

/// A parsed whitelist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whitelist {
    /// Creation time `YYYYMMDDHHMMSS`.
    pub created: String,
    /// Expiry time `YYYYMMDDHHMMSS` (UTC).
    pub expires: String,
    /// Repository name.
    pub fqrn: String,
    /// Fingerprints, normalized: lower-case hex without colons, with `-id` suffix for non SHA-1.
    pub fingerprints: Vec<String>,
    letter: Vec<u8>,
    hash_line: Vec<u8>,
    signature: Vec<u8>,
}

fn normalize_fingerprint(line: &str) -> Option<String> {
    let cut = line
        .find([' ', '\t', '#'])
        .map(|i| &line[..i])
        .unwrap_or(line);
    let s: String = cut
        .chars()
        .filter(|&c| c != ':')
        .collect::<String>()
        .to_lowercase();
    let (hexpart, suffix) = match s.find('-') {
        Some(i) => (&s[..i], &s[i..]),
        None => (&s[..], ""),
    };
    if hexpart.len() != 40 || !hexpart.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if !matches!(suffix, "" | "-rmd160" | "-shake128") {
        return None;
    }
    Some(s)
}

/// `(year, month, day, hour)` from a `YYYYMMDDHHMMSS` string.
fn hour_key(ts: &str) -> Option<(u32, u32, u32, u32)> {
    if ts.len() != 14 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((
        ts[0..4].parse().ok()?,
        ts[4..6].parse().ok()?,
        ts[6..8].parse().ok()?,
        ts[8..10].parse().ok()?,
    ))
}

/// Current UTC time as `YYYYMMDDHHMMSS`.
pub fn utc_stamp(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

impl Whitelist {
    /// Parse a downloaded whitelist (no checks beyond structure).
    pub fn parse(data: &[u8]) -> Result<Whitelist, WhitelistError> {
        if data.is_empty() {
            return Err(WhitelistError::Empty);
        }
        let env = signed::split(data).ok_or(WhitelistError::Malformed("no signature block"))?;
        let text =
            std::str::from_utf8(env.letter).map_err(|_| WhitelistError::Malformed("not text"))?;
        let mut lines = text.lines();
        let created = lines
            .next()
            .ok_or(WhitelistError::Malformed("no creation line"))?;
        if created.len() != 14 {
            return Err(WhitelistError::Malformed("creation time is not 14 digits"));
        }
        let exp = lines
            .next()
            .ok_or(WhitelistError::Malformed("no expiry line"))?;
        let expires = exp
            .strip_prefix('E')
            .filter(|e| hour_key(e).is_some())
            .ok_or(WhitelistError::Malformed(
                "expiry line is not E<YYYYMMDDHHMMSS>",
            ))?;
        let name = lines
            .next()
            .ok_or(WhitelistError::Malformed("no name line"))?;
        let fqrn = name
            .strip_prefix('N')
            .ok_or(WhitelistError::Malformed("third line is not N<fqrn>"))?;
        let mut fingerprints = Vec::new();
        for l in lines {
            if l == "Vpkcs7" {
                return Err(WhitelistError::Unsupported("a PKCS#7 signature"));
            }
            if l == "Wcachain" {
                return Err(WhitelistError::Unsupported("a CA chain check"));
            }
            if let Some(fp) = normalize_fingerprint(l) {
                fingerprints.push(fp);
            }
        }
        Ok(Whitelist {
            created: created.to_string(),
            expires: expires.to_string(),
            fqrn: fqrn.to_string(),
            fingerprints,
            letter: env.letter.to_vec(),
            hash_line: env.hash_line.to_vec(),
            signature: env.signature.to_vec(),
        })
    }

    /// Full check as the real client does it: name, expiry (hour granular,
    /// `now` in Unix seconds), signature by any master key, certificate listed.
    pub fn verify(
        &self,
        fqrn: &str,
        now: i64,
        master_keys: &[PublicKey],
        cert: &Certificate,
    ) -> Result<(), WhitelistError> {
        if self.fqrn != fqrn {
            return Err(WhitelistError::NameMismatch {
                expected: fqrn.to_string(),
                found: self.fqrn.clone(),
            });
        }
        let now_key = hour_key(&utc_stamp(now)).expect("utc_stamp is 14 digits");
        let exp_key = hour_key(&self.expires).expect("checked at parse");
        if now_key >= exp_key {
            return Err(WhitelistError::Expired(self.expires.clone()));
        }
        let env = signed::Envelope {
            letter: &self.letter,
            hash_line: &self.hash_line,
            signature: &self.signature,
        };
        let signed_ok = signed::hash_line_matches(&env)
            && master_keys
                .iter()
                .any(|k| k.verify_whitelist(&self.hash_line, &self.signature).is_ok());
        if !signed_ok {
            return Err(WhitelistError::BadSignature(master_keys.len()));
        }
        let listed = self.fingerprints.iter().any(|fp| {
            let algo = if fp.ends_with("-shake128") {
                Algorithm::Shake128
            } else if fp.ends_with("-rmd160") {
                Algorithm::Rmd160
            } else {
                Algorithm::Sha1
            };
            normalize_fingerprint(&cert.fingerprint(algo)).as_deref() == Some(fp.as_str())
        });
        if !listed {
            return Err(WhitelistError::NotListed(cert.fingerprint(Algorithm::Sha1)));
        }
        Ok(())
    }

    /// Write a whitelist valid from `now` for `days`, listing `cert`, signed by `master`.
    pub fn create(
        fqrn: &str,
        now: i64,
        days: u32,
        cert: &Certificate,
        master: &PrivateKey,
    ) -> Result<Vec<u8>, CryptoError> {
        Self::create_with_expiry(fqrn, now, now + i64::from(days) * 86400, cert, master)
    }

    /// As `create` with an explicit expiry (Unix seconds); tests use it for expired lists.
    pub fn create_with_expiry(
        fqrn: &str,
        now: i64,
        expiry: i64,
        cert: &Certificate,
        master: &PrivateKey,
    ) -> Result<Vec<u8>, CryptoError> {
        let letter = format!(
            "{}\nE{}\nN{}\n{}\n",
            utc_stamp(now),
            utc_stamp(expiry),
            fqrn,
            cert.fingerprint(Algorithm::Sha1)
        );
        signed::assemble(letter.as_bytes(), Algorithm::Sha1, |l| {
            master.sign_whitelist(l)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_normalization() {
        assert_eq!(
            normalize_fingerprint(
                "A8:73:E3:D0:FF:CA:7E:03:3A:9E:13:05:5D:73:7F:99:A8:89:4C:ED # c"
            )
            .as_deref(),
            Some("a873e3d0ffca7e033a9e13055d737f99a8894ced")
        );
        assert_eq!(normalize_fingerprint("Nfoo"), None);
    }

    #[test]
    fn stamp() {
        assert_eq!(utc_stamp(0), "19700101000000");
        assert_eq!(utc_stamp(1795563593).len(), 14);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(v in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = Whitelist::parse(&v);
        }
        #[test]
        fn lines_never_panic(lines in proptest::collection::vec("[ -~]{0,70}", 0..10)) {
            let text = lines.join("\n") + "\n--\nabc\nsig";
            let _ = Whitelist::parse(text.as_bytes());
        }
    }
}
