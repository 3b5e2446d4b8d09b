//! Catalog rows: the input is a catalog in the text form of `perch_fuzz::write_catalog`
//! (rows with any names, flags, sizes, hashes, parents, chunks, nested catalogs, xattrs),
//! written to a real SQLite file with the real schema. Then lookups, listings, chunk lists,
//! hard-link fields, symlink expansion and the nested-catalog table are read as the client
//! reads them. Rows are refused as corrupt or come back valid: names are never empty, `.`,
//! `..` or contain `/` or NUL; a looked-up row carries its path's last component; chunk lists
//! tile the file exactly; link counts are at least 1.
#![no_main]
use libfuzzer_sys::fuzz_target;
use perch_format::catalog::{expand_symlink, Catalog, DirEntry};

fn valid_name(e: &DirEntry) {
    assert!(
        !e.name.is_empty() && e.name != b"." && e.name != b"..",
        "{e:?}"
    );
    assert!(!e.name.contains(&b'/') && !e.name.contains(&0), "{e:?}");
    assert!(e.linkcount >= 1);
}

fuzz_target!(|data: &[u8]| {
    let db = perch_fuzz::scratch().join("catalog.db");
    let _ = std::fs::remove_file(&db);
    let Ok(paths) = perch_fuzz::write_catalog(data, &db) else {
        return;
    };
    let Ok(c) = Catalog::open(&db) else {
        return;
    };
    let root = c.root_prefix().to_vec();
    let _ = c.lookup(&root);
    let mut dirs = vec![root.clone()];
    for p in paths.iter().take(64) {
        if let Ok(Some(e)) = c.lookup(p) {
            if *p != root {
                valid_name(&e);
                assert_eq!(Some(e.name.as_slice()), p.rsplit(|&b| b == b'/').next());
            }
            if e.is_chunked() {
                if let Ok(chunks) = c.chunks(p, &e) {
                    let mut next = 0;
                    for ch in &chunks {
                        assert_eq!(ch.offset, next);
                        next += ch.size;
                    }
                    assert_eq!(next, e.size);
                    assert!(!chunks.is_empty());
                }
            }
            if e.is_symlink() {
                // With nothing set, `$(X)` and `$(X:-d)` shrink to `` and `d`: never longer.
                let x = expand_symlink(&e.symlink, &|_| None);
                assert!(x.len() <= e.symlink.len(), "{:?} -> {:?}", e.symlink, x);
                if !e.symlink.windows(2).any(|w| w == b"$(") {
                    assert_eq!(x, e.symlink);
                }
            }
            let _ = e.algorithm();
            let _ = e.compression();
            let _ = (
                e.hardlink_group,
                e.is_nested_mountpoint(),
                e.is_nested_root(),
            );
            if e.is_dir() {
                dirs.push(p.clone());
            }
        }
    }
    for d in dirs.iter().take(16) {
        if let Ok(list) = c.list(d) {
            for e in &list {
                valid_name(e);
            }
        }
        let _ = c.nested_for(d, true);
        let _ = c.nested_for(d, false);
    }
    let _ = c.nested();
    let _ = c.revision();
    let _ = c.ttl();
    let _ = c.statistics();
});
