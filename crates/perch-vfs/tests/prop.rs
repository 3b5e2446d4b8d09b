//! Property tests: the resolver never panics, whatever the bytes, and its virtual results are
//! normalized and stable.

mod common;

use std::sync::OnceLock;

use common::*;
use perch_vfs::{Lookup, ResolveFlags, Resolved};
use proptest::prelude::*;

fn fx() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(fixture)
}

fn component() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b".".to_vec()),
        Just(b"..".to_vec()),
        Just(b"".to_vec()),
        Just(b"cvmfs".to_vec()),
        Just(b"a.example.org".to_vec()),
        Just(b"b.example.org".to_vec()),
        Just(b"dir".to_vec()),
        Just(b"file.txt".to_vec()),
        Just(b"link_rel".to_vec()),
        Just(b"link_dir".to_vec()),
        Just(b"link_host".to_vec()),
        Just(b"link_up".to_vec()),
        Just(b"link_cross".to_vec()),
        Just(b"loop1".to_vec()),
        Just(b"chain0".to_vec()),
        Just(b"dangling".to_vec()),
        Just(b"proc".to_vec()),
        Just(vec![b'x'; 300]),
        proptest::collection::vec(any::<u8>(), 0..8),
    ]
}

fn path() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        proptest::collection::vec(component(), 0..12),
        any::<bool>(),
    )
        .prop_map(|(abs, comps, slash)| {
            let mut p = if abs { b"/".to_vec() } else { Vec::new() };
            p.extend(comps.join(&b'/'));
            if slash {
                p.push(b'/');
            }
            p
        })
}

fn base() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("/"),
        Just("/cvmfs"),
        Just("/cvmfs/a.example.org"),
        Just("/cvmfs/a.example.org/dir"),
        Just("/cvmfs/b.example.org"),
        Just("/cvmfs/unknown.org"),
        Just("/home/user"),
        Just("/cvmfs/a.example.org/dir/file.txt"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn resolver_never_panics(p in path(), b in base(), follow: bool, dir: bool, empty: bool, flags in 0u64..64) {
        let f = fx();
        let mut l = Lookup::new(&p, b.as_bytes()).follow(follow).resolve(ResolveFlags(flags));
        if dir { l = l.directory(); }
        if empty { l = l.empty_path(); }
        let _ = f.ns.resolve(&l);
        let _ = f.ns.resolve_parent(&l);
    }

    #[test]
    fn random_bytes_never_panic(p in proptest::collection::vec(any::<u8>(), 0..64), b in base()) {
        let f = fx();
        let _ = f.ns.resolve(&Lookup::new(&p, b.as_bytes()));
        let _ = f.ns.resolve_parent(&Lookup::new(&p, b.as_bytes()));
    }

    #[test]
    fn virtual_results_are_normalized_and_stable(p in path(), b in base(), follow: bool) {
        let f = fx();
        let r = f.ns.resolve(&Lookup::new(&p, b.as_bytes()).follow(follow));
        if let Resolved::Virtual { repo, path, entry } = &r {
            prop_assert!(path.is_empty() || path[0] == b'/');
            prop_assert!(!path.ends_with(b"/"));
            for c in path.split(|&x| x == b'/').skip(1) {
                prop_assert!(!c.is_empty() && c != b"." && c != b"..", "{:?}", r);
            }
            if follow {
                prop_assert!(entry.kind != perch_vfs::Kind::Symlink);
            }
            // The absolute virtual path names the same object again.
            let mut abs = b"/cvmfs".to_vec();
            if let Some(repo) = repo {
                abs.push(b'/');
                abs.extend_from_slice(repo.fqrn().as_bytes());
                abs.extend_from_slice(path);
            }
            let again = f.ns.resolve(&Lookup::new(&abs, b"/").nofollow());
            prop_assert_eq!(virt(&again), virt(&r));
        }
    }
}
