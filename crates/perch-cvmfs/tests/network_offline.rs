//! Offline mode (spec §11.4): with the stratum gone, the last verified revision is served
//! from the cache; a file never read fails quickly with an error naming URL and reason.

use std::time::{Duration, Instant};

use perch_cvmfs::fetch::FetchOptions;
use perch_cvmfs::{error_chain, MountOptions, Repository};
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
