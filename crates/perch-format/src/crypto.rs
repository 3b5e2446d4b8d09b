//! RSA keys, the X.509 certificate object and the two CVMFS signature schemes.
//!
//! - Manifest: RSASSA-PKCS1-v1_5 with a SHA-1 DigestInfo over the ASCII hash line,
//!   by the certificate key.
//! - Whitelist: the raw private-key operation with PKCS#1 type-1 padding and no
//!   DigestInfo over the ASCII hash line, by a master key (`openssl pkeyutl -sign`);
//!   verification recovers the message and compares it to the hash line.

use der::{Decode, Encode, EncodePem};
use pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::pkcs1v15::Pkcs1v15Sign;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha1::Digest;

use crate::hash::Algorithm;

/// Errors from key, certificate and signature handling.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A PEM/DER key could not be decoded.
    #[error("invalid {what}: {detail}")]
    BadKey {
        /// What was being read ("public key", "private key").
        what: &'static str,
        /// Decoder message.
        detail: String,
    },
    /// The certificate could not be decoded.
    #[error("invalid certificate: {0}")]
    BadCertificate(String),
    /// The certificate's key is not RSA.
    #[error("certificate key is not an RSA key")]
    NotRsa,
    /// A signature did not verify.
    #[error("bad signature")]
    BadSignature,
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// An RSA public key (master key or certificate key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(pub RsaPublicKey);

/// An RSA private key.
#[derive(Clone)]
pub struct PrivateKey(pub RsaPrivateKey);

impl PublicKey {
    /// From PEM: `PUBLIC KEY` (SubjectPublicKeyInfo) or `RSA PUBLIC KEY` (PKCS#1).
    pub fn from_pem(pem: &str) -> Result<PublicKey, CryptoError> {
        use rsa::pkcs1::DecodeRsaPublicKey;
        RsaPublicKey::from_public_key_pem(pem.trim())
            .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem.trim()))
            .map(PublicKey)
            .map_err(|e| CryptoError::BadKey {
                what: "public key",
                detail: e.to_string(),
            })
    }

    /// PEM (`PUBLIC KEY`).
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .expect("encoding an RSA public key cannot fail")
    }

    /// Verify a manifest signature: PKCS#1 v1.5 with SHA-1 DigestInfo over `hash_line`.
    pub fn verify_manifest(&self, hash_line: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        let digest = sha1::Sha1::digest(hash_line);
        self.0
            .verify(Pkcs1v15Sign::new::<sha1::Sha1>(), &digest, sig)
            .map_err(|_| CryptoError::BadSignature)
    }

    /// Verify a whitelist signature: raw PKCS#1 type-1, the recovered message must
    /// equal `hash_line` exactly.
    pub fn verify_whitelist(&self, hash_line: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        self.0
            .verify(Pkcs1v15Sign::new_unprefixed(), hash_line, sig)
            .map_err(|_| CryptoError::BadSignature)
    }
}

impl PrivateKey {
    /// A fresh RSA-2048 key.
    pub fn generate() -> Result<PrivateKey, CryptoError> {
        let mut rng = rand::thread_rng();
        RsaPrivateKey::new(&mut rng, 2048)
            .map(PrivateKey)
            .map_err(|e| CryptoError::Sign(e.to_string()))
    }

    /// From PEM: `PRIVATE KEY` (PKCS#8) or `RSA PRIVATE KEY` (PKCS#1).
    pub fn from_pem(pem: &str) -> Result<PrivateKey, CryptoError> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        RsaPrivateKey::from_pkcs8_pem(pem.trim())
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem.trim()))
            .map(PrivateKey)
            .map_err(|e| CryptoError::BadKey {
                what: "private key",
                detail: e.to_string(),
            })
    }

    /// PEM (`PRIVATE KEY`, PKCS#8), as the real tools write it.
    pub fn to_pem(&self) -> String {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .expect("encoding an RSA private key cannot fail")
            .to_string()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.to_public_key())
    }

    /// Sign a manifest hash line (PKCS#1 v1.5, SHA-1 DigestInfo).
    pub fn sign_manifest(&self, hash_line: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let digest = sha1::Sha1::digest(hash_line);
        self.0
            .sign(Pkcs1v15Sign::new::<sha1::Sha1>(), &digest)
            .map_err(|e| CryptoError::Sign(e.to_string()))
    }

    /// Sign a whitelist hash line (raw PKCS#1 type-1, no DigestInfo).
    pub fn sign_whitelist(&self, hash_line: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.0
            .sign(Pkcs1v15Sign::new_unprefixed(), hash_line)
            .map_err(|e| CryptoError::Sign(e.to_string()))
    }
}

/// An X.509 certificate (the `X` object holds it as zlib-compressed PEM).
#[derive(Clone, Debug)]
pub struct Certificate {
    der: Vec<u8>,
    key: PublicKey,
}

/// The DER inside a `CERTIFICATE` PEM block: the base64 between its `BEGIN` and `END` lines,
/// white space ignored. Done here rather than by `der`'s PEM reader, which never returns on
/// some malformed input (a line of base64 ended by a lone carriage return, found by
/// fuzz/fuzz_targets/certificate.rs): a certificate comes from the network.
fn pem_certificate(text: &str) -> Result<Vec<u8>, CryptoError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let bad = |why: &str| CryptoError::BadCertificate(format!("PEM: {why}"));
    let start = text
        .find(BEGIN)
        .ok_or_else(|| bad("no BEGIN CERTIFICATE line"))?
        + BEGIN.len();
    let len = text[start..]
        .find(END)
        .ok_or_else(|| bad("no END CERTIFICATE line"))?;
    let b64: Vec<u8> = text[start..start + len]
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    use base64ct::Encoding;
    base64ct::Base64::decode_vec(std::str::from_utf8(&b64).map_err(|_| bad("not ASCII"))?)
        .map_err(|_| bad("invalid base64"))
}

impl Certificate {
    /// Parse PEM (or DER) bytes.
    pub fn parse(bytes: &[u8]) -> Result<Certificate, CryptoError> {
        let cert = match std::str::from_utf8(bytes) {
            Ok(text) if text.contains("-----BEGIN") => {
                x509_cert::Certificate::from_der(&pem_certificate(text)?)
                    .map_err(|e| CryptoError::BadCertificate(e.to_string()))?
            }
            _ => x509_cert::Certificate::from_der(bytes)
                .map_err(|e| CryptoError::BadCertificate(e.to_string()))?,
        };
        let der = cert
            .to_der()
            .map_err(|e| CryptoError::BadCertificate(e.to_string()))?;
        let spki_der = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| CryptoError::BadCertificate(e.to_string()))?;
        let key = RsaPublicKey::from_public_key_der(&spki_der).map_err(|_| CryptoError::NotRsa)?;
        Ok(Certificate {
            der,
            key: PublicKey(key),
        })
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// PEM text.
    pub fn to_pem(&self) -> String {
        let c = x509_cert::Certificate::from_der(&self.der).expect("DER was produced by us");
        c.to_pem(LineEnding::LF).expect("encoding cannot fail")
    }

    /// The certificate's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    /// Fingerprint as written in whitelists: upper-case hex pairs joined by `:`
    /// of the DER digest (SHA-1 without suffix; other algorithms get ` -ID`).
    pub fn fingerprint(&self, algo: Algorithm) -> String {
        let h = algo.digest(&self.der);
        let pairs: Vec<String> = h.bytes.iter().map(|b| format!("{b:02X}")).collect();
        let mut s = pairs.join(":");
        if algo != Algorithm::Sha1 {
            s.push_str(&algo.suffix().to_uppercase());
        }
        s
    }

    /// Make a self-signed certificate `CN=<fqrn> CernVM-FS Release Managers`
    /// for `key`, valid for `days` (the client does not check dates).
    pub fn self_signed(
        key: &PrivateKey,
        fqrn: &str,
        days: u32,
    ) -> Result<Certificate, CryptoError> {
        use std::str::FromStr;
        use std::time::Duration;
        use x509_cert::builder::{Builder, CertificateBuilder, Profile};
        use x509_cert::name::Name;
        use x509_cert::serial_number::SerialNumber;
        use x509_cert::spki::SubjectPublicKeyInfoOwned;
        use x509_cert::time::Validity;

        let err = |e: &dyn std::fmt::Display| CryptoError::Sign(e.to_string());
        let subject = Name::from_str(&format!("CN={fqrn} CernVM-FS Release Managers"))
            .map_err(|e| err(&e))?;
        let spki_der = key
            .0
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| err(&e))?;
        let spki = SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes()).map_err(|e| err(&e))?;
        let validity = Validity::from_now(Duration::from_secs(u64::from(days) * 86400))
            .map_err(|e| err(&e))?;
        let serial = SerialNumber::from(rand::random::<u32>() | 1);
        let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key.0.clone());
        let builder =
            CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &signer)
                .map_err(|e| err(&e))?;
        let cert = builder
            .build::<rsa::pkcs1v15::Signature>()
            .map_err(|e| err(&e))?;
        let der = cert.to_der().map_err(|e| err(&e))?;
        Certificate::parse(&der)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_round_trip() {
        let k = PrivateKey::generate().unwrap();
        let line = b"04066e9a7e7d40bde01e25f8143d249a030db840";
        let s = k.sign_manifest(line).unwrap();
        k.public().verify_manifest(line, &s).unwrap();
        assert!(k.public().verify_whitelist(line, &s).is_err());
        let w = k.sign_whitelist(line).unwrap();
        k.public().verify_whitelist(line, &w).unwrap();
        assert!(k
            .public()
            .verify_whitelist(b"04066e9a7e7d40bde01e25f8143d249a030db841", &w)
            .is_err());
        let c = Certificate::self_signed(&k, "x.example.org", 30).unwrap();
        assert_eq!(c.public_key(), &k.public());
        let again = Certificate::parse(c.to_pem().as_bytes()).unwrap();
        assert_eq!(again.der(), c.der());
        assert_eq!(c.fingerprint(Algorithm::Sha1).len(), 59);
        let pem = k.to_pem();
        assert_eq!(PrivateKey::from_pem(&pem).unwrap().public(), k.public());
    }

    /// Found by fuzz/fuzz_targets/certificate.rs: `der`'s PEM reader never returned on this
    /// (a base64 line ended by a lone carriage return). It is refused at once, and PEM with
    /// text around it, CRLF line ends or no final newline still parses.
    #[test]
    fn malformed_pem_is_refused_at_once() {
        let start = std::time::Instant::now();
        let hang = b"-----BEGIN CERTIFICATE-----\nMIIC\r-----END CERTIFICATE-----\n";
        assert!(Certificate::parse(hang).is_err());
        for bad in [
            &b"-----BEGIN CERTIFICATE-----\nMIIC"[..],
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        ] {
            assert!(Certificate::parse(bad).is_err());
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        let k = PrivateKey::generate().unwrap();
        let c = Certificate::self_signed(&k, "x.example.org", 30).unwrap();
        let pem = c.to_pem();
        for text in [
            format!("junk before\n{pem}junk after\n"),
            pem.replace('\n', "\r\n"),
            pem.trim_end().to_string(),
        ] {
            assert_eq!(Certificate::parse(text.as_bytes()).unwrap().der(), c.der());
        }
    }
}
