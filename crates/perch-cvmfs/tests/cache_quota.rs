//! Cache quota (spec §11.3) and `check`: LRU eviction keeps the cache under the limit,
//! catalogs of the mounted revision stay, objects above limit/2 are refused with ENOSPC,
//! and a damaged object is found and removed by `check`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use perch_cvmfs::cache::{Cache, CacheOptions};
use perch_cvmfs::{error_chain, MountOptions, Node, Repository};
use perch_publish::{keygen, publish, PublishOptions};
use perch_testkit::{tempdir, TempDir};
use rand::{RngCore, SeedableRng};

const FQRN: &str = "quota.example.org";
const MB: u64 = 1 << 20;

struct Repo {
    tmp: TempDir,
    files: Vec<(String, Vec<u8>)>,
}

/// `n` files of `size` random (incompressible) bytes, published.
fn published(n: usize, size: usize) -> Repo {
    let tmp = tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut files = Vec::new();
    for i in 0..n {
        let mut data = vec![0u8; size];
        rng.fill_bytes(&mut data);
        let name = format!("f{i:03}");
        std::fs::write(src.join(&name), &data).unwrap();
        files.push((name, data));
    }
    let keys = tmp.path().join("keys");
    keygen(FQRN, &keys, 30).unwrap();
    let mut o = PublishOptions::new(&src, FQRN, &keys, tmp.path().join("stratum0"));
    o.chunking = None;
    publish(&o).unwrap();
    Repo { tmp, files }
}

impl Repo {
    fn options(&self, cache: &Path, quota: Option<u64>) -> MountOptions {
        let url = format!("file://{}", self.tmp.path().join("stratum0").display());
        let key = self.tmp.path().join("keys").join(format!("{FQRN}.pub"));
        let mut o = MountOptions::new(FQRN, &url, vec![key], cache.to_path_buf());
        o.quota_limit = quota;
        o
    }
}

fn objects_size(dir: &Path) -> u64 {
    let mut total = 0;
    for base in [dir.to_path_buf(), dir.join("chunked")] {
        for d in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            if d.file_name().len() == 2 && d.path().is_dir() {
                for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                    total += f.metadata().unwrap().len();
                }
            }
        }
    }
    total
}

fn node(repo: &Repository, name: &str) -> Node {
    repo.lookup(format!("/{name}").as_bytes()).unwrap().unwrap()
}

#[test]
fn reading_100_mb_through_a_20_mb_quota_stays_under_the_limit() {
    let r = published(50, 2 << 20);
    let cache = r.tmp.path().join("cache");
    let repo = Repository::mount(r.options(&cache, Some(20 * MB))).unwrap();
    let root_catalog = repo.cache().get(repo.root_hash()).unwrap();
    let mut max_seen = 0;
    for round in 0..2 {
        for (name, data) in &r.files {
            let got = repo
                .read(&node(&repo, name))
                .unwrap_or_else(|e| panic!("{name}: {}", error_chain(&e)));
            assert!(got == *data, "{name} (round {round}): content differs");
            let used = objects_size(&cache);
            max_seen = max_seen.max(used);
            assert!(
                used <= 20 * MB + 2 * MB,
                "cache holds {used} bytes after {name}"
            );
        }
    }
    assert!(max_seen > 10 * MB, "the cache was used ({max_seen} bytes)");
    assert!(root_catalog.exists(), "the mounted root catalog is pinned");
    assert!(
        repo.cache()
            .stats
            .evicted
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}

#[test]
fn lru_keeps_recently_used_objects() {
    let r = published(12, 2 << 20);
    let cache = r.tmp.path().join("cache");
    let repo = Repository::mount(r.options(&cache, Some(10 * MB))).unwrap();
    // f000 read first, then made old; f001..f004 read later cross the limit: the
    // cleanup (down to 5 MB) evicts f000 first and keeps the newest.
    let first = repo.fetch(&node(&repo, "f000")).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&first)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let mut last = PathBuf::new();
    for name in ["f001", "f002", "f003", "f004"] {
        last = repo.fetch(&node(&repo, name)).unwrap();
    }
    assert!(!first.exists(), "the least recently used object went first");
    assert!(last.exists(), "the newest object stays");
    assert!(objects_size(&cache) <= 5 * MB);
}

#[test]
fn object_above_half_the_limit_is_enospc() {
    let r = published(2, 2 << 20);
    let cache = r.tmp.path().join("cache");
    let repo = Repository::mount(r.options(&cache, Some(3 * MB))).unwrap();
    let e = repo.read(&node(&repo, "f000")).unwrap_err();
    assert_eq!(e.errno(), libc::ENOSPC, "{}", error_chain(&e));
    assert!(
        error_chain(&e).contains("exceeds half of the cache quota"),
        "{}",
        error_chain(&e)
    );
}

#[test]
fn check_finds_and_removes_a_damaged_object_and_reading_fetches_it_again() {
    let r = published(4, 100_000);
    let cache_dir = r.tmp.path().join("cache");
    let repo = Repository::mount(r.options(&cache_dir, None)).unwrap();
    let mut paths: Vec<PathBuf> = Vec::new();
    for (name, _) in &r.files {
        paths.push(repo.fetch(&node(&repo, name)).unwrap());
    }
    let cache = Cache::open_with(&cache_dir, CacheOptions::default()).unwrap();
    let clean = cache.check(Some(repo.fetcher()), true, |_| {}).unwrap();
    assert!(
        clean.bad.is_empty() && clean.unchecked.is_empty(),
        "{clean:?}"
    );
    assert_eq!(clean.good(), 4 + 2, "files, catalog, certificate");
    // Damage one object in place (its owner can: chmod, then write).
    let mut b = std::fs::read(&paths[1]).unwrap();
    b[500] ^= 1;
    std::fs::set_permissions(&paths[1], std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&paths[1], b).unwrap();
    let report = cache.check(Some(repo.fetcher()), false, |_| {}).unwrap();
    assert_eq!(report.bad, vec![paths[1].clone()]);
    assert!(!paths[1].exists(), "removed");
    let again = repo.read(&node(&repo, &r.files[1].0)).unwrap();
    assert!(again == r.files[1].1);
    assert!(cache
        .check(Some(repo.fetcher()), true, |_| {})
        .unwrap()
        .bad
        .is_empty());
}

#[test]
fn a_forged_checksum_record_does_not_make_a_damaged_object_good() {
    let r = published(2, 50_000);
    let cache_dir = r.tmp.path().join("cache");
    let repo = Repository::mount(r.options(&cache_dir, None)).unwrap();
    let p = repo.fetch(&node(&repo, &r.files[0].0)).unwrap();
    // What a program did to the cache (issue 9): new content, and a matching line in every
    // record the cache keeps.
    let forged = vec![b'X'; 50_000];
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&p, &forged).unwrap();
    let rel = p.strip_prefix(&cache_dir).unwrap().display().to_string();
    let sha1 = perch_format::hash::Algorithm::Sha1.digest(&forged).hex();
    let line = format!("{rel} {sha1} 50000\n");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cache_dir.join("checksums"))
        .unwrap();
    std::io::Write::write_all(&mut f, line.as_bytes()).unwrap();
    let cache = Cache::open_with(&cache_dir, CacheOptions::default()).unwrap();
    let report = cache.check(Some(repo.fetcher()), true, |_| {}).unwrap();
    assert_eq!(report.bad, vec![p.clone()], "{report:?}");
    // And it is not served: reading fetches a good copy.
    let again = repo.read(&node(&repo, &r.files[0].0)).unwrap();
    assert!(again == r.files[0].1);
}

#[test]
fn the_usage_count_is_shared_by_jobs_and_opening_a_cache_does_not_scan_it() {
    let r = published(6, 1 << 20);
    let cache = r.tmp.path().join("cache");
    // Two mounts of one cache stand for two jobs of one user.
    let a = Repository::mount(r.options(&cache, Some(64 * MB))).unwrap();
    let b = Repository::mount(r.options(&cache, Some(64 * MB))).unwrap();
    for name in ["f000", "f001"] {
        a.fetch(&node(&a, name)).unwrap();
    }
    for name in ["f002", "f003"] {
        b.fetch(&node(&b, name)).unwrap();
    }
    let exact = objects_size(&cache);
    assert_eq!(b.cache().usage(), exact, "b counts a's objects too");
    // A file no insert counted: a new job takes the stored count and does not stat every
    // object to find it; a cleanup's scan does.
    let stray = cache.join("ee");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("e".repeat(38)), vec![0u8; 1 << 20]).unwrap();
    let c = Repository::mount(r.options(&cache, Some(64 * MB))).unwrap();
    assert_eq!(c.cache().usage(), exact, "opened from the count");
    let report = c.cache().gc(false).unwrap();
    assert_eq!(report.removed, 0);
    assert_eq!(
        c.cache().usage(),
        exact + MB,
        "a cleanup counts every object"
    );
    // An unreadable count is counted again when a job opens the cache.
    std::fs::write(cache.join("quota_usage"), "garbage").unwrap();
    let d = Repository::mount(r.options(&cache, Some(64 * MB))).unwrap();
    assert_eq!(d.cache().usage(), exact + MB);
    let stored = std::fs::read_to_string(cache.join("quota_usage")).unwrap();
    assert_eq!(stored.parse::<u64>().unwrap(), exact + MB, "{stored:?}");
}
