//! Downloads whose size perch cannot know in advance are cut off at a documented limit
//! (`perch_cvmfs::limits`): a server sending a huge or endless manifest, whitelist,
//! certificate, catalog or history database gets one error naming the URL and the limit,
//! perch's memory stays small, and nothing partial is left in the cache.
//!
//! The bodies come from the in-process fault server (`Fault::Flood`): generated on the fly,
//! never stored, and valid zlib where a zlib object is expected, so that the limit (not a
//! corrupt stream) is what stops them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use perch_cvmfs::fetch::{FetchOptions, Reason};
use perch_cvmfs::{error_chain, MountOptions, RepoError, Repository};
use perch_format::hash::ObjectKind;
use perch_format::manifest::SignedManifest;
use perch_testkit::{fixtures_dir, tempdir, Fault, FaultServer, TempDir};

const TINY: &str = "tiny.example.org";

/// A fault server over the fixtures whose replies for paths ending in a registered suffix are
/// replaced; the rules can change while it runs.
struct Server {
    srv: FaultServer,
    rules: Arc<Mutex<Vec<(String, Fault)>>>,
    cache: TempDir,
}

impl Server {
    fn start() -> Server {
        let rules: Arc<Mutex<Vec<(String, Fault)>>> = Arc::default();
        let r = rules.clone();
        let srv = FaultServer::start(&fixtures_dir(), move |path| {
            r.lock()
                .unwrap()
                .iter()
                .find(|(suffix, _)| path.ends_with(suffix.as_str()))
                .map_or(Fault::Serve, |(_, f)| f.clone())
        })
        .unwrap();
        Server {
            srv,
            rules,
            cache: tempdir().unwrap(),
        }
    }

    fn flood(&self, suffix: &str, fault: Fault) {
        self.rules.lock().unwrap().push((suffix.to_string(), fault));
    }

    fn base(&self) -> String {
        format!("{}/{TINY}/stratum0", self.srv.url())
    }

    fn options(&self) -> MountOptions {
        let key = fixtures_dir()
            .join(TINY)
            .join("keys")
            .join(format!("{TINY}.pub"));
        let mut o = MountOptions::new(TINY, &self.base(), vec![key], self.cache_dir());
        o.fetch = FetchOptions {
            timeout: Duration::from_secs(5),
            timeout_direct: Duration::from_secs(5),
            backoff_init: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            ..FetchOptions::default()
        };
        o
    }

    fn cache_dir(&self) -> PathBuf {
        self.cache.path().join("c")
    }

    /// Mount with `opts`, which must fail; returns the error and its one-line form (also
    /// printed, for `--nocapture`).
    #[allow(clippy::print_stderr)]
    fn refused(&self, opts: MountOptions) -> (RepoError, String) {
        let started = Instant::now();
        let e = Repository::mount(opts).expect_err("the mount must fail");
        let line = error_chain(&e);
        eprintln!("refused in {:?}: {line}", started.elapsed());
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "cut off quickly, not after the whole body: {line}"
        );
        (e, line)
    }
}

fn manifest() -> perch_format::manifest::Manifest {
    let raw = std::fs::read(
        fixtures_dir()
            .join(TINY)
            .join("stratum0")
            .join(".cvmfspublished"),
    )
    .unwrap();
    SignedManifest::parse(&raw).unwrap().manifest
}

/// A zlib header, then non-final stored blocks of 65 535 zero bytes each: valid zlib that
/// never ends, inflating to as much as it stores.
fn zlib_zeros(length: Option<u64>) -> Fault {
    let mut block = vec![0x00, 0xff, 0xff, 0x00, 0x00];
    block.resize(5 + 65_535, 0);
    Fault::Flood {
        length,
        head: vec![0x78, 0x01],
        repeat: block,
    }
}

/// Valid zlib that never ends and never produces a byte: empty stored blocks, over and over.
fn zlib_nothing() -> Fault {
    Fault::Flood {
        length: None,
        head: vec![0x78, 0x01],
        repeat: [0x00, 0x00, 0x00, 0xff, 0xff].repeat(8192),
    }
}

fn text_flood(length: Option<u64>) -> Fault {
    Fault::Flood {
        length,
        head: b"C".to_vec(),
        repeat: vec![b'x'; 64 << 10],
    }
}

/// The peak resident set size of this process so far, in MiB. Every test here keeps little,
/// so a body held in memory would show.
fn peak_rss_mib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

#[allow(clippy::print_stderr)] // shown with --nocapture
fn assert_small_memory() {
    let peak = peak_rss_mib();
    eprintln!("peak RSS of the test process: {peak} MiB");
    assert!(peak < 64, "peak RSS {peak} MiB: a body was held in memory");
}

/// Files under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Nothing of a cut-off download is left: no temp file, no object.
fn assert_nothing_partial(cache: &Path, object: Option<&str>) {
    let txn = files(&cache.join("txn"));
    assert!(txn.is_empty(), "temp files left: {txn:?}");
    if let Some(o) = object {
        assert!(!cache.join(o).exists(), "{o} is in the cache");
    }
}

/// The trust chain was not completed: no verified manifest kept for offline use.
fn assert_no_manifest_kept(cache: &Path) {
    assert!(!cache.join(format!("manifest.{TINY}")).exists());
    assert!(!cache.join(format!("cvmfschecksum.{TINY}")).exists());
}

fn too_large(e: &RepoError) -> (u64, String) {
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cur {
        if let Some(f) = c.downcast_ref::<perch_cvmfs::fetch::FetchError>() {
            if let Some(Reason::TooLarge { limit, what }) = f.reason() {
                return (*limit, what.clone());
            }
        }
        cur = c.source();
    }
    panic!("not cut off by a limit: {}", error_chain(e));
}

#[test]
fn a_manifest_of_1_gib_is_cut_off_at_1_mib() {
    let s = Server::start();
    s.flood("/.cvmfspublished", text_flood(Some(1 << 30)));
    let (e, line) = s.refused(s.options());
    assert_eq!(too_large(&e).0, 1 << 20);
    assert!(
        line.contains(&format!("{}/.cvmfspublished", s.base())),
        "{line}"
    );
    assert!(
        line.contains("cut off at 1 MiB: larger than perch accepts for a manifest"),
        "{line}"
    );
    assert_nothing_partial(&s.cache_dir(), None);
    assert_no_manifest_kept(&s.cache_dir());
    assert_small_memory();
}

#[test]
fn endless_manifest_and_whitelist_are_cut_off_at_1_mib() {
    for (file, what) in [
        (".cvmfspublished", "a manifest"),
        (".cvmfswhitelist", "a whitelist"),
    ] {
        let s = Server::start();
        s.flood(&format!("/{file}"), text_flood(None));
        let (e, line) = s.refused(s.options());
        assert_eq!(
            too_large(&e),
            (1 << 20, format!("{what} ({file})")),
            "{line}"
        );
        assert!(line.contains(&format!("{}/{file}", s.base())), "{line}");
        assert_nothing_partial(&s.cache_dir(), None);
        assert_no_manifest_kept(&s.cache_dir());
    }
    assert_small_memory();
}

#[test]
fn a_certificate_of_100_mb_is_cut_off_at_1_mib() {
    let s = Server::start();
    let cert = manifest().certificate.unwrap();
    let rel = cert.object_path(ObjectKind::Certificate);
    s.flood(&rel, zlib_zeros(Some(100 << 20)));
    let (e, line) = s.refused(s.options());
    assert_eq!(too_large(&e), (1 << 20, "a certificate".to_string()));
    assert!(line.contains(&format!("{}/{rel}", s.base())), "{line}");
    assert_nothing_partial(&s.cache_dir(), Some(&cert.cache_path()));
    assert_no_manifest_kept(&s.cache_dir());
    assert_small_memory();
}

#[test]
fn an_endless_root_catalog_stops_at_half_the_quota() {
    let root = manifest().root_catalog;
    let rel = root.object_path(ObjectKind::Catalog);
    // Content that never ends, and a stream that never produces content: both stop.
    for body in [zlib_zeros(None), zlib_nothing()] {
        let s = Server::start();
        s.flood(&rel, body);
        let mut o = s.options();
        o.quota_limit = Some(8 << 20);
        let (e, line) = s.refused(o);
        let (limit, what) = too_large(&e);
        assert_eq!(limit, 4 << 20, "{line}");
        assert!(
            what.contains("a catalog whose size nothing declares"),
            "{what}"
        );
        assert!(
            line.contains(&format!("{}/{rel}", s.base()))
                && line.contains("cut off at 4 MiB")
                && line.contains("CVMFS_QUOTA_LIMIT"),
            "{line}"
        );
        assert_nothing_partial(&s.cache_dir(), Some(&root.cache_path()));
    }
    assert_small_memory();
}

#[test]
fn an_endless_history_database_is_cut_off() {
    let s = Server::start();
    let history = manifest().history.unwrap();
    let rel = history.object_path(ObjectKind::History);
    s.flood(&rel, zlib_zeros(None));
    let mut o = s.options();
    o.quota_limit = Some(4 << 20);
    o.tag = Some("trunk".into());
    let (e, line) = s.refused(o);
    assert_eq!(too_large(&e).0, 2 << 20, "{line}");
    assert!(line.contains("a history database"), "{line}");
    assert!(line.contains(&format!("{}/{rel}", s.base())), "{line}");
    let txn = files(&s.cache_dir().join("txn"));
    assert!(txn.is_empty(), "temp files left: {txn:?}");
    assert!(!s.cache_dir().join(history.cache_path()).exists());
    assert_small_memory();
}

#[test]
fn a_file_whose_object_never_ends_is_refused_by_its_declared_size() {
    let s = Server::start();
    let repo = Repository::mount(s.options()).unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let node = repo.lookup(b"/hello.txt").unwrap().expect("hello.txt");
    let h = node.entry.hash.unwrap();
    s.flood(&h.object_path(ObjectKind::File), zlib_nothing());
    let started = Instant::now();
    let e = error_chain(&repo.read(&node).expect_err("refused"));
    assert!(started.elapsed() < Duration::from_secs(20), "{e}");
    assert!(
        e.contains(&format!(
            "for an object the catalog declares as {} bytes",
            node.entry.size
        )),
        "{e}"
    );
    let txn = files(&s.cache_dir().join("txn"));
    assert!(txn.is_empty(), "temp files left: {txn:?}");
    assert!(!s.cache_dir().join(h.cache_path()).exists());
}
