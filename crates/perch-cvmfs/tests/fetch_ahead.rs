//! A job that waits for another process's download of a file fetches the files that follow
//! it in its directory meanwhile (jobs started together read in the same order): each
//! object is still downloaded once, and a job alone fetches nothing it was not asked for.

use std::path::Path;
use std::time::Duration;

use perch_cvmfs::cache::MAX_HELPS;
use perch_cvmfs::{error_chain, MountOptions, Node, Repository};
use perch_publish::{keygen, publish, PublishOptions};
use perch_testkit::{tempdir, Fault, FaultServer, TempDir};
use rand::{RngCore, SeedableRng};

const FQRN: &str = "ahead.example.org";
const FILES: usize = 12;

/// `FILES` files of 4 KiB random bytes in one directory, published under `tmp/www`.
fn published(tmp: &TempDir) -> Vec<(String, Vec<u8>)> {
    let src = tmp.path().join("src/d");
    std::fs::create_dir_all(&src).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut files = Vec::new();
    for i in 0..FILES {
        let mut data = vec![0u8; 4096];
        rng.fill_bytes(&mut data);
        let name = format!("f{i:03}");
        std::fs::write(src.join(&name), &data).unwrap();
        files.push((name, data));
    }
    let keys = tmp.path().join("keys");
    keygen(FQRN, &keys, 30).unwrap();
    let mut o = PublishOptions::new(
        tmp.path().join("src"),
        FQRN,
        &keys,
        tmp.path().join("www").join(FQRN),
    );
    o.chunking = None;
    publish(&o).unwrap();
    files
}

fn mount(tmp: &TempDir, url: &str, cache: &Path) -> Repository {
    let key = tmp.path().join("keys").join(format!("{FQRN}.pub"));
    let o = MountOptions::new(
        FQRN,
        &format!("{url}/{FQRN}"),
        vec![key],
        cache.to_path_buf(),
    );
    Repository::mount(o).unwrap_or_else(|e| panic!("mount: {}", error_chain(&e)))
}

fn node(repo: &Repository, name: &str) -> Node {
    repo.lookup(format!("/d/{name}").as_bytes())
        .unwrap()
        .unwrap()
}

/// The object's hash as it appears in request paths (`data/xx/yyyy…`).
fn object(repo: &Repository, name: &str) -> String {
    let h = node(repo, name).entry.hash.unwrap().to_string();
    format!("{}/{}", &h[..2], &h[2..])
}

/// A server on which the first file's object trickles in over about half a second.
fn slow_first(tmp: &TempDir) -> (FaultServer, Vec<String>) {
    let reference = mount(
        tmp,
        &format!("file://{}", tmp.path().join("www").display()),
        &tmp.path().join("ref-cache"),
    );
    let objects: Vec<String> = (0..FILES)
        .map(|i| object(&reference, &format!("f{i:03}")))
        .collect();
    let slow = objects[0].clone();
    let server = FaultServer::start(&tmp.path().join("www"), move |p| {
        if p.contains(&slow) {
            Fault::Trickle(8000)
        } else {
            Fault::Serve
        }
    })
    .unwrap();
    (server, objects)
}

#[test]
fn a_waiting_job_fetches_the_next_files_and_each_object_is_downloaded_once() {
    let tmp = tempdir().unwrap();
    let files = published(&tmp);
    let (server, objects) = slow_first(&tmp);
    let cache = tmp.path().join("cache");
    // Two jobs on one cache (two mounts: two claims files' descriptors, as two processes).
    let a = mount(&tmp, &server.url(), &cache);
    let b = mount(&tmp, &server.url(), &cache);
    let (first_a, first_b) = std::thread::scope(|s| {
        let ja = s.spawn(|| a.read(&node(&a, "f000")).unwrap());
        // `a` is downloading f000 (slowly) when `b` asks for it.
        while server.count(&objects[0]) == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let jb = s.spawn(|| b.read(&node(&b, "f000")).unwrap());
        (ja.join().unwrap(), jb.join().unwrap())
    });
    assert_eq!(first_a, files[0].1);
    assert_eq!(first_b, files[0].1);
    // While it waited, `b` fetched the next files in listing order, as many as a wait may.
    let fetched: Vec<usize> = (0..FILES)
        .filter(|&i| server.count(&objects[i]) > 0)
        .collect();
    assert_eq!(
        fetched,
        (0..=MAX_HELPS).collect::<Vec<_>>(),
        "{:?}",
        server.hits()
    );
    let stats = &b.cache().stats;
    assert_eq!(
        stats.prefetched.load(std::sync::atomic::Ordering::Relaxed),
        MAX_HELPS as u64
    );
    // Each read after that is served from the cache, and correct; nothing twice.
    for (name, data) in &files {
        assert_eq!(&b.read(&node(&b, name)).unwrap(), data, "{name}");
    }
    for (i, o) in objects.iter().enumerate() {
        assert_eq!(server.count(o), 1, "object of f{i:03}: {:?}", server.hits());
    }
}

#[test]
fn a_job_alone_fetches_only_what_it_reads() {
    let tmp = tempdir().unwrap();
    let files = published(&tmp);
    let (server, objects) = slow_first(&tmp);
    let a = mount(&tmp, &server.url(), &tmp.path().join("cache"));
    assert_eq!(a.read(&node(&a, "f000")).unwrap(), files[0].1);
    let fetched: Vec<usize> = (0..FILES)
        .filter(|&i| server.count(&objects[i]) > 0)
        .collect();
    assert_eq!(fetched, [0]);
}
