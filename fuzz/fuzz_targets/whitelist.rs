//! `.cvmfswhitelist`: parse and the full check (name, expiry, master-key signature, listed
//! certificate) never panic; a whitelist that verifies lists the certificate.
#![no_main]
use libfuzzer_sys::fuzz_target;
use perch_format::hash::Algorithm;
use perch_format::whitelist::Whitelist;

fuzz_target!(|data: &[u8]| {
    let Ok(w) = Whitelist::parse(data) else {
        return;
    };
    assert_eq!(w.expires.len(), 14);
    let (cert, master) = perch_fuzz::tiny_keys();
    // A time before the fixture's expiry, and one far after it.
    for now in [1_700_000_000, 4_000_000_000] {
        if w.verify("tiny.example.org", now, std::slice::from_ref(master), cert)
            .is_ok()
        {
            let fp = cert
                .fingerprint(Algorithm::Sha1)
                .replace(':', "")
                .to_lowercase();
            assert!(w.fingerprints.iter().any(|f| f.starts_with(&fp[..40])));
        }
    }
    let _ = w.verify(&w.fqrn.clone(), 0, &[], cert);
});
