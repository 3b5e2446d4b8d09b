//! Repository keys: the master key pair (signs the whitelist) and the
//! certificate key pair (signs manifests), laid out like `cvmfs_server` does
//! in `/etc/cvmfs/keys`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use perch_format::crypto::{Certificate, PrivateKey, PublicKey};

use crate::error::{PublishError, Result};

/// The four key files of a repository, loaded.
#[derive(Clone)]
pub struct KeySet {
    /// Repository name.
    pub fqrn: String,
    /// `<fqrn>.masterkey`: signs `.cvmfswhitelist`.
    pub master: PrivateKey,
    /// `<fqrn>.pub`: what clients install to verify the whitelist.
    pub master_public: PublicKey,
    /// `<fqrn>.key`: signs `.cvmfspublished`.
    pub certificate_key: PrivateKey,
    /// `<fqrn>.crt`: self-signed certificate of `certificate_key`, uploaded as the `X` object.
    pub certificate: Certificate,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("fqrn", &self.fqrn)
            .finish_non_exhaustive()
    }
}

/// The paths of the four key files of `fqrn` in `keydir`:
/// `[masterkey, pub, key, crt]`.
pub fn key_paths(fqrn: &str, keydir: &Path) -> [PathBuf; 4] {
    ["masterkey", "pub", "key", "crt"].map(|ext| keydir.join(format!("{fqrn}.{ext}")))
}

pub(crate) fn check_fqrn(fqrn: &str) -> Result<()> {
    let ok = !fqrn.is_empty()
        && fqrn.len() <= 255
        && fqrn.contains('.')
        && fqrn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        && !fqrn.starts_with('.')
        && !fqrn.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(PublishError::BadName(fqrn.to_string()))
    }
}

/// Create new RSA-2048 keys for `fqrn` in `keydir` (created if missing):
/// `<fqrn>.masterkey` (PKCS#8 PEM, mode 0600), `<fqrn>.pub` (PEM public key,
/// 0644), `<fqrn>.key` (PKCS#8 PEM, 0600) and `<fqrn>.crt` (self-signed PEM
/// certificate, `CN=<fqrn> CernVM-FS Release Managers`, 0644).
///
/// `cert_days` is the validity of the certificate (clients check neither its
/// dates nor its issuer; the whitelist's expiry is what limits trust).
/// Existing key files are never overwritten: if any of the four exists the
/// call fails with [`PublishError::KeyExists`] and writes nothing.
pub fn keygen(fqrn: &str, keydir: &Path, cert_days: u32) -> Result<KeySet> {
    check_fqrn(fqrn)?;
    let paths = key_paths(fqrn, keydir);
    if let Some(p) = paths.iter().find(|p| p.exists()) {
        return Err(PublishError::KeyExists(p.clone()));
    }
    std::fs::create_dir_all(keydir).map_err(PublishError::io("create", keydir))?;
    let master = PrivateKey::generate().map_err(PublishError::Crypto)?;
    let certificate_key = PrivateKey::generate().map_err(PublishError::Crypto)?;
    let certificate = Certificate::self_signed(&certificate_key, fqrn, cert_days.max(1))
        .map_err(PublishError::Crypto)?;
    let master_public = master.public();
    let [mk, pb, k, crt] = &paths;
    write_new(mk, master.to_pem().as_bytes(), 0o600)?;
    write_new(pb, master_public.to_pem().as_bytes(), 0o644)?;
    write_new(k, certificate_key.to_pem().as_bytes(), 0o600)?;
    write_new(crt, certificate.to_pem().as_bytes(), 0o644)?;
    tracing::info!(fqrn, keydir = %keydir.display(), "created repository keys");
    Ok(KeySet {
        fqrn: fqrn.to_string(),
        master,
        master_public,
        certificate_key,
        certificate,
    })
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => PublishError::KeyExists(path.to_path_buf()),
            _ => PublishError::Io {
                op: "create",
                path: path.to_path_buf(),
                source: e,
            },
        })?;
    f.write_all(data).map_err(PublishError::io("write", path))?;
    f.sync_all().map_err(PublishError::io("sync", path))
}

impl KeySet {
    /// Load the four key files of `fqrn` from `keydir` and check that the
    /// certificate belongs to `<fqrn>.key` and `<fqrn>.pub` to `<fqrn>.masterkey`.
    pub fn load(fqrn: &str, keydir: &Path) -> Result<KeySet> {
        check_fqrn(fqrn)?;
        if !keydir.is_dir() {
            return Err(PublishError::NoKeyDir(keydir.to_path_buf()));
        }
        let [mk, pb, k, crt] = key_paths(fqrn, keydir);
        let read = |p: &Path| -> Result<String> {
            std::fs::read_to_string(p).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => PublishError::MissingKey(p.to_path_buf()),
                _ => PublishError::Io {
                    op: "read",
                    path: p.to_path_buf(),
                    source: e,
                },
            })
        };
        let bad = |p: &Path| {
            let path = p.to_path_buf();
            move |source| PublishError::BadKey { path, source }
        };
        let master = PrivateKey::from_pem(&read(&mk)?).map_err(bad(&mk))?;
        let master_public = PublicKey::from_pem(&read(&pb)?).map_err(bad(&pb))?;
        if master.public() != master_public {
            return Err(PublishError::KeyMismatch(pb));
        }
        let certificate_key = PrivateKey::from_pem(&read(&k)?).map_err(bad(&k))?;
        let certificate = Certificate::parse(read(&crt)?.as_bytes()).map_err(bad(&crt))?;
        if certificate.public_key() != &certificate_key.public() {
            return Err(PublishError::KeyMismatch(crt));
        }
        Ok(KeySet {
            fqrn: fqrn.to_string(),
            master,
            master_public,
            certificate_key,
            certificate,
        })
    }
}
