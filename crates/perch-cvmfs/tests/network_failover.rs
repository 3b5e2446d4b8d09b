//! Fetch on real networks (spec §10): a real squid as the site proxy, a real nginx as the
//! stratum 1, and an in-process fault server for replies a healthy server never sends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use perch_cvmfs::fetch::{FetchOptions, Proxy};
use perch_cvmfs::{error_chain, MountOptions, Repository};
use perch_testkit::{
    fixtures_dir, free_port, tempdir, CacheOutcome, Fault, FaultServer, Nginx, Squid, TempDir,
};

const TINY: &str = "tiny.example.org";
const ALT: &str = "alt.example.org";

fn key(fqrn: &str) -> std::path::PathBuf {
    fixtures_dir()
        .join(fqrn)
        .join("keys")
        .join(format!("{fqrn}.pub"))
}

/// Quick failure detection for tests: 2 s timeouts, no back-off wait.
fn fast() -> FetchOptions {
    FetchOptions {
        timeout: Duration::from_secs(2),
        timeout_direct: Duration::from_secs(2),
        backoff_init: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        ..FetchOptions::default()
    }
}

fn opts(fqrn: &str, servers: &[String], proxies: Vec<Vec<Proxy>>, cache: &TempDir) -> MountOptions {
    let servers: Vec<String> = servers
        .iter()
        .map(|s| format!("{s}/{fqrn}/stratum0"))
        .collect();
    let mut o = MountOptions::new(fqrn, &servers[0], vec![key(fqrn)], cache.path().join("c"));
    o.servers = servers;
    o.proxies = proxies;
    o.fetch = fast();
    o
}

fn mount(o: MountOptions) -> Repository {
    let fqrn = o.fqrn.clone();
    Repository::mount(o).unwrap_or_else(|e| panic!("mount {fqrn}: {}", error_chain(&e)))
}

/// Every regular file: path → content.
fn read_all(repo: &Repository) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        for n in repo.list(&dir).unwrap() {
            if n.entry.is_dir() {
                stack.push(n.path.clone());
            } else if n.entry.is_regular() {
                let data = repo.read(&n).unwrap_or_else(|e| {
                    panic!("{}: {}", String::from_utf8_lossy(&n.path), error_chain(&e))
                });
                out.insert(String::from_utf8_lossy(&n.path).into_owned(), data);
            }
        }
    }
    out
}

/// The content as read over file:// (the reference).
fn reference(fqrn: &str) -> BTreeMap<String, Vec<u8>> {
    let cache = tempdir().unwrap();
    let url = format!(
        "file://{}",
        fixtures_dir().join(fqrn).join("stratum0").display()
    );
    read_all(&mount(MountOptions::new(
        fqrn,
        &url,
        vec![key(fqrn)],
        cache.path().into(),
    )))
}

fn proxy(url: String) -> Proxy {
    Proxy::Url(url)
}

fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// Run `f` on a thread; a hang longer than `limit` is a test failure, not a stuck CI job.
fn no_hang<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("the operation hung")
}

#[test]
fn objects_go_through_squid_and_a_second_client_hits() {
    let nginx = Nginx::start(&fixtures_dir()).unwrap();
    let squid = Squid::start().unwrap();
    let want = reference(ALT);
    let c1 = tempdir().unwrap();
    let r1 = mount(opts(
        ALT,
        &[nginx.url()],
        vec![vec![proxy(squid.url())]],
        &c1,
    ));
    assert_eq!(read_all(&r1), want);
    let data_requests = nginx.count_requests("/data/");
    assert!(data_requests > 0);
    assert!(
        squid.count(CacheOutcome::Miss, "/data/") > 0,
        "squid log:\n{}",
        squid.access_log()
    );
    // A second client with an empty cache: everything from squid's cache.
    let c2 = tempdir().unwrap();
    let r2 = mount(opts(
        ALT,
        &[nginx.url()],
        vec![vec![proxy(squid.url())]],
        &c2,
    ));
    assert_eq!(read_all(&r2), want);
    assert_eq!(
        nginx.count_requests("/data/"),
        data_requests,
        "no object reached nginx twice"
    );
    assert!(
        squid.count(CacheOutcome::Hit, "/data/") >= data_requests,
        "squid log:\n{}",
        squid.access_log()
    );
    // The manifest is a plain cacheable GET (no no-cache in normal operation).
    assert!(
        squid.count(CacheOutcome::Hit, ".cvmfspublished") >= 1,
        "squid log:\n{}",
        squid.access_log()
    );
}

#[test]
fn no_cache_header_only_on_the_retry_after_bad_data() {
    let faulty = FaultServer::start(&fixtures_dir(), |_| Fault::Serve).unwrap();
    let c = tempdir().unwrap();
    let r = mount(opts(TINY, &[faulty.url()], vec![], &c));
    assert_eq!(read_all(&r), reference(TINY));
    assert!(faulty.hits().len() > 3);
    assert_eq!(faulty.no_cache_hits(), Vec::<String>::new());
}

#[test]
fn first_proxy_group_dead_second_alive() {
    let nginx = Nginx::start(&fixtures_dir()).unwrap();
    let squid = Squid::start().unwrap();
    let c = tempdir().unwrap();
    let groups = vec![vec![proxy(dead_url())], vec![proxy(squid.url())]];
    let r = mount(opts(TINY, &[nginx.url()], groups, &c));
    assert_eq!(read_all(&r), reference(TINY));
    assert_eq!(
        r.fetcher().current_proxy(),
        proxy(squid.url()),
        "requests stay on the live proxy"
    );
    assert!(squid.count(CacheOutcome::Miss, "/data/") > 0);
}

#[test]
fn dead_member_of_a_load_balanced_group_is_skipped() {
    let nginx = Nginx::start(&fixtures_dir()).unwrap();
    let squid = Squid::start().unwrap();
    for _ in 0..3 {
        // The first member is random: run a few times so both orders occur.
        let c = tempdir().unwrap();
        let groups = vec![vec![proxy(dead_url()), proxy(squid.url())]];
        let r = mount(opts(TINY, &[nginx.url()], groups, &c));
        assert_eq!(read_all(&r), reference(TINY));
        assert_eq!(r.fetcher().current_proxy(), proxy(squid.url()));
    }
}

#[test]
fn all_proxies_dead_direct_allowed() {
    let nginx = Nginx::start(&fixtures_dir()).unwrap();
    let c = tempdir().unwrap();
    let groups = vec![
        vec![proxy(dead_url()), proxy(dead_url())],
        vec![Proxy::Direct],
    ];
    let r = mount(opts(TINY, &[nginx.url()], groups, &c));
    assert_eq!(read_all(&r), reference(TINY));
    assert_eq!(r.fetcher().current_proxy(), Proxy::Direct);
}

#[test]
fn all_proxies_dead_direct_not_allowed() {
    let nginx = Nginx::start(&fixtures_dir()).unwrap();
    let c = tempdir().unwrap();
    let dead = dead_url();
    let groups = vec![vec![proxy(dead_url())], vec![proxy(dead.clone())]];
    let e = no_hang(Duration::from_secs(60), move || {
        Repository::mount(opts(TINY, &[nginx.url()], groups, &c))
            .map(|_| ())
            .map_err(|e| error_chain(&e))
    })
    .unwrap_err();
    assert!(e.contains("cannot download the manifest"), "{e}");
    assert!(
        e.contains("via proxy http://127.0.0.1:") || e.contains("(proxy http://127.0.0.1:"),
        "{e}"
    );
    assert!(e.contains("connection refused"), "{e}");
}

fn second_server_after(fault: Fault, fqrn: &str) {
    let nginx = Nginx::start(&fixtures_dir()).unwrap();
    let f = fault.clone();
    let bad = FaultServer::start(&fixtures_dir(), move |_| f.clone()).unwrap();
    let c = tempdir().unwrap();
    let r = mount(opts(fqrn, &[bad.url(), nginx.url()], vec![], &c));
    assert_eq!(read_all(&r), reference(fqrn), "{fault:?}");
    assert!(
        bad.count(".cvmfspublished") >= 1,
        "{fault:?}: the first server was tried"
    );
    assert_eq!(
        r.fetcher().current_server(),
        Some(format!("{}/{fqrn}/stratum0", nginx.url()).as_str())
    );
}

#[test]
fn first_server_502_second_good() {
    second_server_after(Fault::Status(502), TINY);
}

#[test]
fn first_server_404_second_good() {
    second_server_after(Fault::Status(404), TINY);
}

#[test]
fn first_server_garbage_second_good() {
    second_server_after(Fault::Garbage, TINY);
}

#[test]
fn first_server_closes_connections_second_good() {
    second_server_after(Fault::Close, TINY);
}

#[test]
fn corrupted_object_is_retried_with_no_cache_then_elsewhere_never_served() {
    let nginx = Nginx::start(&fixtures_dir()).unwrap();
    let bad = FaultServer::start(&fixtures_dir(), |p| {
        if p.contains("/data/") {
            Fault::Corrupt
        } else {
            Fault::Serve
        }
    })
    .unwrap();
    let c = tempdir().unwrap();
    let r = mount(opts(ALT, &[bad.url(), nginx.url()], vec![], &c));
    assert_eq!(read_all(&r), reference(ALT));
    // The first object (the certificate) came corrupted twice: normal, then no-cache.
    let first_data = bad
        .hits()
        .into_iter()
        .find(|p| p.contains("/data/"))
        .unwrap();
    assert_eq!(bad.count(&first_data), 2);
    assert_eq!(bad.no_cache_hits(), vec![first_data.clone()]);
    assert!(nginx.count_requests(&first_data) >= 1);
}

#[test]
fn corrupted_object_on_the_only_server_is_an_error_and_not_cached() {
    let nginx = Nginx::start(&fixtures_dir()).unwrap();
    let c = tempdir().unwrap();
    let r = mount(opts(TINY, &[nginx.url()], vec![], &c));
    let node = r
        .list(b"")
        .unwrap()
        .into_iter()
        .find(|n| n.entry.is_regular() && n.entry.size > 0)
        .unwrap();
    let bad = FaultServer::start(&fixtures_dir(), |p| {
        if p.contains("/data/") {
            Fault::Corrupt
        } else {
            Fault::Serve
        }
    })
    .unwrap();
    let c2 = tempdir().unwrap();
    // Same cache (catalogs are there), objects now only from the corrupting server.
    let mut o = opts(TINY, &[bad.url()], vec![], &c2);
    o.cache_dir = c.path().join("c");
    let r2 = mount(o);
    let e = r2.read(&node).unwrap_err();
    let msg = error_chain(&e);
    assert!(
        msg.contains("hash mismatch") || msg.contains("corrupt object"),
        "{msg}"
    );
    assert!(msg.contains(&bad.url()), "the message names the URL: {msg}");
    let h = node.entry.hash.unwrap();
    assert!(r2.cache().get(&h).is_none(), "a bad object is never cached");
    assert_eq!(e.errno(), libc::EIO);
}

#[test]
fn server_stalling_mid_body_fails_over_within_the_timeout() {
    let nginx = Nginx::start(&fixtures_dir()).unwrap();
    let bad = FaultServer::start(&fixtures_dir(), |p| {
        if p.contains("/data/") {
            Fault::StallAfter(100)
        } else {
            Fault::Serve
        }
    })
    .unwrap();
    let c = tempdir().unwrap();
    let mut o = opts(ALT, &[bad.url(), nginx.url()], vec![], &c);
    o.fetch.timeout_direct = Duration::from_secs(1);
    o.fetch.max_retries = 1;
    let want = reference(ALT);
    let got = no_hang(Duration::from_secs(60), move || read_all(&mount(o)));
    assert_eq!(got, want);
    assert!(bad.count("/data/") >= 1);
}

#[test]
fn trickling_server_is_too_slow_and_skipped() {
    let nginx = Nginx::start(&fixtures_dir()).unwrap();
    let bad = FaultServer::start(&fixtures_dir(), |p| {
        if p.contains("C") && p.contains("/data/") {
            Fault::Trickle(200)
        } else {
            Fault::Serve
        }
    })
    .unwrap();
    let c = tempdir().unwrap();
    let mut o = opts(TINY, &[bad.url(), nginx.url()], vec![], &c);
    o.fetch.timeout_direct = Duration::from_secs(1);
    o.fetch.max_retries = 0;
    let want = reference(TINY);
    let got = no_hang(Duration::from_secs(60), move || read_all(&mount(o)));
    assert_eq!(got, want);
}

#[test]
fn squid_error_reply_is_a_proxy_error() {
    // A "proxy" answering 503 with X-Squid-Error: the next proxy group is used.
    let nginx = Nginx::start(&fixtures_dir()).unwrap();
    let fake_squid = FaultServer::start(&fixtures_dir(), |_| Fault::SquidError(503)).unwrap();
    let c = tempdir().unwrap();
    let groups = vec![vec![proxy(fake_squid.url())], vec![Proxy::Direct]];
    let r = mount(opts(TINY, &[nginx.url()], groups, &c));
    assert_eq!(read_all(&r), reference(TINY));
    assert_eq!(r.fetcher().current_proxy(), Proxy::Direct);
    assert_eq!(fake_squid.count(".cvmfspublished"), 1);
}

#[test]
fn back_to_the_first_server_after_host_reset_after() {
    let nginx = Nginx::start(&fixtures_dir()).unwrap();
    let broken = Arc::new(AtomicBool::new(true));
    let b = broken.clone();
    let first = FaultServer::start(&fixtures_dir(), move |_| {
        if b.load(Ordering::SeqCst) {
            Fault::Status(503)
        } else {
            Fault::Serve
        }
    })
    .unwrap();
    let c = tempdir().unwrap();
    let mut o = opts(TINY, &[first.url(), nginx.url()], vec![], &c);
    o.fetch.host_reset_after = Duration::from_millis(300);
    let r = mount(o);
    assert!(r
        .fetcher()
        .current_server()
        .unwrap()
        .starts_with(&nginx.url()));
    broken.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(400));
    read_all(&r);
    assert!(r
        .fetcher()
        .current_server()
        .unwrap()
        .starts_with(&first.url()));
    assert!(
        first.hits().iter().any(|p| p.contains("/data/")),
        "objects came from the preferred server again"
    );
}

#[test]
fn errors_name_the_url_proxy_and_reason() {
    let c = tempdir().unwrap();
    let dead = dead_url();
    let e = Repository::mount(opts(TINY, std::slice::from_ref(&dead), vec![], &c)).unwrap_err();
    let msg = error_chain(&e);
    assert_eq!(
        msg,
        format!("cannot download the manifest: {dead}/{TINY}/stratum0/.cvmfspublished (DIRECT): connection refused")
    );
    let nginx = Nginx::start(&fixtures_dir()).unwrap();
    let e = Repository::mount(opts(
        TINY,
        &[format!("{}/missing", nginx.url())],
        vec![],
        &c,
    ))
    .unwrap_err();
    let msg = error_chain(&e);
    assert!(
        msg.ends_with(
            "/missing/tiny.example.org/stratum0/.cvmfspublished (DIRECT): not found (HTTP 404)"
        ),
        "{msg}"
    );
}
