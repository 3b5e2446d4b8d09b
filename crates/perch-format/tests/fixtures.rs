//! The formats read the repositories made by the real CernVM-FS tools.

use std::path::PathBuf;

use perch_format::compress::zlib_decompress;
use perch_format::crypto::{Certificate, PublicKey};
use perch_format::hash::{Algorithm, ContentHash, ObjectKind};
use perch_format::manifest::SignedManifest;
use perch_format::whitelist::{Whitelist, WhitelistError};

fn fixtures() -> PathBuf {
    std::env::var_os("PERCH_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        })
}

fn read(fqrn: &str, rel: &str) -> Vec<u8> {
    let p = fixtures().join(fqrn).join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn check_chain(fqrn: &str, algo: Algorithm) {
    let stratum = "stratum0";
    let m = SignedManifest::parse(&read(fqrn, &format!("{stratum}/.cvmfspublished"))).unwrap();
    assert_eq!(m.manifest.fqrn.as_deref(), Some(fqrn));
    assert_eq!(m.manifest.root_catalog.algo, algo);
    let x = m.manifest.certificate.unwrap();
    let stored = read(
        fqrn,
        &format!("{stratum}/{}", x.object_path(ObjectKind::Certificate)),
    );
    assert_eq!(x.algo.digest(&stored), x, "certificate object hash");
    let cert = Certificate::parse(&zlib_decompress(&stored).unwrap()).unwrap();
    m.verify(&cert).unwrap();
    let pubkey =
        PublicKey::from_pem(&String::from_utf8(read(fqrn, &format!("keys/{fqrn}.pub"))).unwrap())
            .unwrap();
    let wl = Whitelist::parse(&read(fqrn, &format!("{stratum}/.cvmfswhitelist"))).unwrap();
    let now = 1_800_000_000;
    wl.verify(fqrn, now, std::slice::from_ref(&pubkey), &cert)
        .unwrap();
    assert_eq!(
        wl.verify(
            "other.example.org",
            now,
            std::slice::from_ref(&pubkey),
            &cert
        ),
        Err(WhitelistError::NameMismatch {
            expected: "other.example.org".into(),
            found: fqrn.into()
        })
    );
    // 2036-11-21 23:39:51 expiry: expired from 23:00 that day (hour granular).
    assert!(matches!(
        wl.verify(fqrn, 2_110_923_600, &[pubkey], &cert),
        Err(WhitelistError::Expired(_))
    ));
    // The reflog hash in the manifest is the hash of the file.
    let reflog = read(fqrn, &format!("{stratum}/.cvmfsreflog"));
    let y = m.manifest.reflog.unwrap();
    assert_eq!(y.algo.digest(&reflog), y);
}

#[test]
fn tiny_chain_verifies() {
    check_chain("tiny.example.org", Algorithm::Sha1);
}

#[test]
fn alt_chain_verifies() {
    check_chain("alt.example.org", Algorithm::Shake128);
}

#[test]
fn manifest_round_trips_byte_exact() {
    let raw = read("tiny.example.org", "stratum0/.cvmfspublished");
    let m = SignedManifest::parse(&raw).unwrap();
    let letter = m.manifest.to_letter();
    assert!(
        raw.starts_with(&letter),
        "writer reproduces the real key order"
    );
    assert_eq!(
        m.manifest.root_catalog,
        "be961b5938cf2aa6f6e6a30d42bc6e8166fa1d55"
            .parse::<ContentHash>()
            .unwrap()
    );
}

#[test]
fn flipped_bytes_are_refused() {
    let raw = read("tiny.example.org", "stratum0/.cvmfspublished");
    let m = SignedManifest::parse(&raw).unwrap();
    let x = m.manifest.certificate.unwrap();
    let cert = Certificate::parse(
        &zlib_decompress(&read(
            "tiny.example.org",
            &format!("stratum0/{}", x.object_path(ObjectKind::Certificate)),
        ))
        .unwrap(),
    )
    .unwrap();
    // In the text: the hash line no longer matches.
    let mut bad = raw.clone();
    bad[5] ^= 1;
    if let Ok(mm) = SignedManifest::parse(&bad) {
        assert!(mm.verify(&cert).is_err());
    }
    // In the signature.
    let mut bad = raw.clone();
    let n = bad.len();
    bad[n - 10] ^= 1;
    assert!(SignedManifest::parse(&bad).unwrap().verify(&cert).is_err());
}
