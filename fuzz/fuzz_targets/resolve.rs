//! The path resolver over a hostile namespace: the input describes an in-memory repository
//! (`D path`, `F path`, `L path target`, any bytes `%XX`-escaped: `..` chains, symlink loops,
//! long names, deep nesting) and lookups (`Q base path flags`). Every lookup ends (no hang,
//! at most 40 symlinks), and a virtual result is a normalized path that names the same object
//! again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use perch_fuzz::unescape;
use perch_vfs::mem::{MemMounter, MemRepo};
use perch_vfs::{Kind, Lookup, Namespace, ResolveFlags, Resolved};

const FQRN: &str = "h.example.org";

fn abs(p: &[u8]) -> String {
    let s = String::from_utf8_lossy(p).into_owned();
    if s.starts_with('/') {
        s
    } else {
        format!("/{s}")
    }
}

fn virt(r: &Resolved) -> Option<(Option<String>, Vec<u8>, Kind)> {
    match r {
        Resolved::Virtual { repo, path, entry } => Some((
            repo.as_ref().map(|r| r.fqrn().to_owned()),
            path.clone(),
            entry.kind,
        )),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let tmp = perch_fuzz::scratch().join("vfs");
    let mut b = MemRepo::builder(FQRN, &tmp.join("objects"));
    let mut queries = Vec::new();
    for line in data.split(|&c| c == b'\n').take(200) {
        let f: Vec<&[u8]> = line.splitn(4, |&c| c == b' ').collect();
        let arg = |i: usize| f.get(i).map(|x| unescape(x)).unwrap_or_default();
        match f[0] {
            b"D" => b = b.dir(&abs(&arg(1))),
            b"F" => b = b.file(&abs(&arg(1)), b"x", 0o644),
            b"L" => b = b.symlink(&abs(&arg(1)), &arg(2)),
            b"Q" => queries.push((
                arg(1),
                arg(2),
                f.get(3).and_then(|x| x.first()).copied().unwrap_or(0),
            )),
            _ => {}
        }
    }
    let mounter = std::sync::Arc::new(MemMounter::new(&tmp, vec![b.build()]));
    let ns = Namespace::new(mounter).unwrap();
    for (base, path, flags) in queries.iter().take(20) {
        let follow = flags & 1 != 0;
        let mut l = Lookup::new(path, base)
            .follow(follow)
            .resolve(ResolveFlags(u64::from(flags >> 2) & 0x3f));
        if flags & 2 != 0 {
            l = l.directory();
        }
        let r = ns.resolve(&l);
        let _ = ns.resolve_parent(&l);
        if let Resolved::Virtual { repo, path, entry } = &r {
            assert!(path.is_empty() || path[0] == b'/');
            assert!(!path.ends_with(b"/"), "{r:?}");
            for c in path.split(|&x| x == b'/').skip(1) {
                assert!(!c.is_empty() && c != b"." && c != b"..", "{r:?}");
            }
            if follow {
                assert!(entry.kind != Kind::Symlink, "{r:?}");
            }
            let mut again = b"/cvmfs".to_vec();
            if let Some(repo) = repo {
                again.push(b'/');
                again.extend_from_slice(repo.fqrn().as_bytes());
                again.extend_from_slice(path);
            }
            let r2 = ns.resolve(&Lookup::new(&again, b"/").nofollow());
            assert_eq!(virt(&r2), virt(&r), "{again:?}");
        }
    }
});
