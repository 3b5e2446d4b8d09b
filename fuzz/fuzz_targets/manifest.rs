//! `.cvmfspublished`: parse, write back, parse again; verification never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use perch_format::manifest::{Manifest, SignedManifest};

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::parse_letter(data);
    let Ok(m) = SignedManifest::parse(data) else {
        return;
    };
    // What perch writes it reads back unchanged.
    let again = Manifest::parse_letter(&m.manifest.to_letter()).expect("own letter parses");
    assert_eq!(again, m.manifest);
    let _ = m.verify(&perch_fuzz::tiny_keys().0);
});
