//! The certificate object (PEM or DER): parsing never panics, and a parsed certificate
//! re-encodes, fingerprints and parses again to the same DER.
#![no_main]
use libfuzzer_sys::fuzz_target;
use perch_format::crypto::Certificate;
use perch_format::hash::Algorithm;

fuzz_target!(|data: &[u8]| {
    let Ok(c) = Certificate::parse(data) else {
        return;
    };
    for a in [Algorithm::Sha1, Algorithm::Rmd160, Algorithm::Shake128] {
        let _ = c.fingerprint(a);
    }
    let pem = c.to_pem();
    let back = Certificate::parse(pem.as_bytes()).expect("own PEM parses");
    assert_eq!(back.der(), c.der());
});
