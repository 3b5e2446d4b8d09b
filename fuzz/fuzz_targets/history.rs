//! The history database (tags): any bytes as an SQLite file; tags, tag by name and by date
//! never panic, and every tag returned has a parsed hash.
#![no_main]
use libfuzzer_sys::fuzz_target;
use perch_format::history::History;

fuzz_target!(|data: &[u8]| {
    let p = perch_fuzz::scratch().join("history.db");
    std::fs::write(&p, data).unwrap();
    let Ok(h) = History::open(&p) else {
        return;
    };
    if let Ok(tags) = h.tags() {
        for t in tags.iter().take(4) {
            let _ = h.tag(&t.name);
        }
    }
    let _ = h.tag("trunk");
    let _ = h.tag_at(i64::MAX);
    let _ = h.tag_at(0);
});
