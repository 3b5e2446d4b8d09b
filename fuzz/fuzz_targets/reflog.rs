//! The reflog (`.cvmfsreflog`): an existing file of any bytes, opened for update as the
//! publisher does; listing and adding refs never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use perch_format::hash::Algorithm;
use perch_format::history::{RefType, Reflog};

fuzz_target!(|data: &[u8]| {
    let p = perch_fuzz::scratch().join("reflog.db");
    std::fs::write(&p, data).unwrap();
    let Ok(r) = Reflog::open_or_create(&p, "tiny.example.org") else {
        return;
    };
    for k in [
        RefType::Catalog,
        RefType::Certificate,
        RefType::History,
        RefType::Metainfo,
    ] {
        let _ = r.list(k);
    }
    let _ = r.add(&Algorithm::Sha1.digest(data), RefType::Catalog, 1);
    let _ = r.list(RefType::Catalog);
    let _ = r.close();
});
