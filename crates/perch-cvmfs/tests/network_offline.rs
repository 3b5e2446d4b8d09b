//! Offline mode (spec §11.4): with the stratum gone, the last verified revision is served
//! from the cache; a file never read fails quickly with an error naming URL and reason; the
//! network is retried periodically; `CVMFS_MAX_TTL` caps the catalog TTL.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use perch_cvmfs::fetch::FetchOptions;
use perch_cvmfs::{error_chain, MountOptions, RepoError, Repository};
use perch_publish::{keygen, publish, PublishOptions};
use perch_testkit::{tempdir, Nginx};

const FQRN: &str = "offline.example.org";

#[test]
fn stratum_gone_serves_what_was_read_and_fails_clearly_on_the_rest() {
    let tmp = tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..10 {
        std::fs::write(
            src.join("sub").join(format!("f{i}")),
            format!("file {i}\n").repeat(100 + i),
        )
        .unwrap();
    }
    let keys = tmp.path().join("keys");
    keygen(FQRN, &keys, 30).unwrap();
    let www = tmp.path().join("www");
    publish(&PublishOptions::new(&src, FQRN, &keys, www.join(FQRN))).unwrap();
    let mut nginx = Nginx::start(&www).unwrap();
    let opts = || {
        let mut o = MountOptions::new(
            FQRN,
            &format!("{}/{FQRN}", nginx.url()),
            vec![keys.join(format!("{FQRN}.pub"))],
            tmp.path().join("cache"),
        );
        o.fetch = FetchOptions {
            timeout_direct: Duration::from_secs(2),
            backoff_init: Duration::from_millis(10),
            ..FetchOptions::default()
        };
        o
    };
    let repo = Repository::mount(opts()).unwrap();
    assert!(!repo.is_offline());
    for i in 0..5 {
        let n = repo
            .lookup(format!("/sub/f{i}").as_bytes())
            .unwrap()
            .unwrap();
        repo.read(&n).unwrap();
    }
    let o = opts();
    nginx.stop();
    let started = Instant::now();
    let off = Repository::mount(o).unwrap_or_else(|e| panic!("offline mount: {}", error_chain(&e)));
    assert!(off.is_offline());
    assert_eq!(off.revision(), repo.revision());
    for i in 0..5 {
        let n = off
            .lookup(format!("/sub/f{i}").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(
            off.read(&n).unwrap(),
            std::fs::read(src.join("sub").join(format!("f{i}"))).unwrap()
        );
    }
    let never = off.lookup(b"/sub/f7").unwrap().unwrap();
    let e = off.read(&never).unwrap_err();
    let msg = error_chain(&e);
    assert_eq!(e.errno(), libc::EIO);
    assert!(
        msg.contains("connection refused") && msg.contains("(DIRECT)") && msg.contains("/data/"),
        "{msg}"
    );
    // Bounded by timeouts: no retry loop, no hang (generous bound, not a benchmark).
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

/// Offline, a file not in the cache fails at once (no new request) until the retry interval
/// has passed; then the mount retries the network, finds the stratum back on the same port
/// and downloads again, keeping the revision it mounted although a newer one was published.
#[test]
fn offline_mount_fails_fast_then_retries_and_keeps_its_revision() {
    const RETRY: Duration = Duration::from_secs(4);
    let tmp = tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let content = |i: usize| format!("file {i}\n").repeat(100 + i);
    for i in 0..10 {
        std::fs::write(src.join("sub").join(format!("f{i}")), content(i)).unwrap();
    }
    let keys = tmp.path().join("keys");
    keygen(FQRN, &keys, 30).unwrap();
    let www = tmp.path().join("www");
    publish(&PublishOptions::new(&src, FQRN, &keys, www.join(FQRN))).unwrap();
    let mut nginx = Nginx::start(&www).unwrap();
    let server = format!("{}/{FQRN}", nginx.url());
    let opts = || {
        let mut o = MountOptions::new(
            FQRN,
            &server,
            vec![keys.join(format!("{FQRN}.pub"))],
            tmp.path().join("cache"),
        );
        o.fetch = FetchOptions {
            timeout_direct: Duration::from_secs(2),
            backoff_init: Duration::from_millis(10),
            ..FetchOptions::default()
        };
        o.offline_retry = RETRY;
        o
    };
    let online = Repository::mount(opts()).unwrap();
    for i in 0..5 {
        let n = online
            .lookup(format!("/sub/f{i}").as_bytes())
            .unwrap()
            .unwrap();
        online.read(&n).unwrap();
    }
    let mounted_revision = online.revision();
    drop(online);

    nginx.stop();
    let o = opts();
    let mounted_at = Instant::now();
    let off = Repository::mount(o).unwrap_or_else(|e| panic!("offline mount: {}", error_chain(&e)));
    assert!(off.is_offline());
    assert_eq!(off.revision(), mounted_revision);
    let f7 = off.lookup(b"/sub/f7").unwrap().unwrap();
    let f8 = off.lookup(b"/sub/f8").unwrap().unwrap();
    let requests = || off.fetcher().requests.load(Ordering::Relaxed);
    let before = requests();
    for _ in 0..3 {
        let e = off.read(&f7).unwrap_err();
        let msg = error_chain(&e);
        assert!(matches!(e, RepoError::Offline { .. }), "{msg}");
        assert_eq!(e.errno(), libc::EIO);
        assert!(
            msg.contains("/data/")
                && msg.contains("not in the cache")
                && msg.contains("next network retry in")
                && msg.contains("connection refused"),
            "{msg}"
        );
    }
    assert_eq!(
        requests(),
        before,
        "no download attempt before the retry time"
    );
    // Cached files are still served.
    let f0 = off.lookup(b"/sub/f0").unwrap().unwrap();
    assert_eq!(off.read(&f0).unwrap(), content(0).into_bytes());

    // A new revision appears while this process runs, then the stratum comes back.
    std::fs::write(src.join("sub").join("f8"), "changed\n").unwrap();
    std::fs::write(src.join("new"), "new\n").unwrap();
    publish(&PublishOptions::new(&src, FQRN, &keys, www.join(FQRN))).unwrap();
    nginx.restart().unwrap();
    if mounted_at.elapsed() + Duration::from_millis(500) < RETRY {
        // Still inside the interval: the server is up but not asked.
        assert!(matches!(off.read(&f7), Err(RepoError::Offline { .. })));
        assert_eq!(requests(), before);
    }
    let wait = RETRY.saturating_sub(mounted_at.elapsed());
    std::thread::sleep(wait + Duration::from_millis(100));
    assert_eq!(
        off.read(&f7)
            .unwrap_or_else(|e| panic!("after the retry: {}", error_chain(&e))),
        content(7).into_bytes()
    );
    assert!(!off.is_offline());
    // Same revision as mounted: the old f8, no `new`.
    assert_eq!(off.revision(), mounted_revision);
    assert_eq!(off.read(&f8).unwrap(), content(8).into_bytes());
    assert!(off.lookup(b"/new").unwrap().is_none());
    // A new mount gets the new revision.
    let fresh = Repository::mount(opts()).unwrap();
    assert!(!fresh.is_offline());
    assert_eq!(fresh.revision(), mounted_revision + 1);
    let n = fresh.lookup(b"/sub/f8").unwrap().unwrap();
    assert_eq!(fresh.read(&n).unwrap(), b"changed\n");
}

/// `CVMFS_MAX_TTL` caps the root catalog's TTL; it does not lengthen it.
#[test]
fn max_ttl_caps_the_catalog_ttl() {
    let tmp = tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), "a\n").unwrap();
    let keys = tmp.path().join("keys");
    keygen(FQRN, &keys, 30).unwrap();
    let stratum = tmp.path().join("stratum");
    let mut p = PublishOptions::new(&src, FQRN, &keys, &stratum);
    p.ttl = 900;
    publish(&p).unwrap();
    let mount = |cap: Option<u64>| {
        let mut o = MountOptions::new(
            FQRN,
            &format!("file://{}", stratum.display()),
            vec![keys.join(format!("{FQRN}.pub"))],
            tmp.path().join("cache"),
        );
        o.max_ttl = cap.map(|m| Duration::from_secs(m * 60));
        Repository::mount(o).unwrap()
    };
    let root = |r: &Repository| r.lookup(b"").unwrap().unwrap();
    let r = mount(None);
    assert_eq!(r.ttl(), Duration::from_secs(900));
    assert_eq!(r.xattr(&root(&r), "user.expires").unwrap().unwrap(), b"15");
    let r = mount(Some(5));
    assert_eq!(r.ttl(), Duration::from_secs(300));
    assert_eq!(r.xattr(&root(&r), "user.expires").unwrap().unwrap(), b"5");
    let r = mount(Some(60));
    assert_eq!(r.ttl(), Duration::from_secs(900));
}
