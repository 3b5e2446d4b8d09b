//! Real nginx and squid, started by perch-testkit.

use std::fs;
use std::time::Duration;

use perch_testkit::{http_get, tempdir, wait_until, CacheOutcome, Nginx, Squid};

const LOG_WAIT: Duration = Duration::from_secs(5);

#[test]
fn nginx_serves_a_file_and_logs_it() {
    let root = tempdir().unwrap();
    fs::write(root.path().join("hello.txt"), "hello perch\n").unwrap();
    fs::create_dir(root.path().join("repo")).unwrap();
    fs::write(root.path().join("repo/.cvmfspublished"), "manifest").unwrap();
    let mut nginx = Nginx::start(root.path()).unwrap();
    assert_eq!(nginx.url(), format!("http://127.0.0.1:{}", nginx.port()));

    let response = http_get(nginx.port(), "/hello.txt").unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"hello perch\n");
    assert_eq!(response.header("Cache-Control"), Some("max-age=259200"));

    let manifest = http_get(nginx.port(), "/repo/.cvmfspublished").unwrap();
    assert_eq!(manifest.status, 200);
    assert_eq!(manifest.header("Cache-Control"), Some("max-age=61"));

    assert_eq!(http_get(nginx.port(), "/missing").unwrap().status, 404);

    assert!(
        wait_until(LOG_WAIT, || nginx.count_requests("/hello.txt") == 1),
        "{}",
        nginx.access_log()
    );
    let entry = nginx
        .requests()
        .into_iter()
        .find(|e| e.uri == "/missing")
        .unwrap();
    assert_eq!((entry.status, entry.method.as_str()), (404, "GET"));

    nginx.stop();
    assert!(http_get(nginx.port(), "/hello.txt").is_err());
    // Logs stay readable after stop.
    assert!(nginx.access_log().contains("/hello.txt"));
}

#[test]
fn nginx_missing_root_is_an_error() {
    let root = tempdir().unwrap();
    let err = Nginx::start(&root.path().join("nope")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn squid_caches_a_file_from_nginx() {
    let root = tempdir().unwrap();
    fs::write(root.path().join("object"), vec![b'x'; 100_000]).unwrap();
    let nginx = Nginx::start(root.path()).unwrap();
    let squid = Squid::start().unwrap();
    assert_eq!(squid.url(), format!("http://127.0.0.1:{}", squid.port()));
    let url = format!("{}/object", nginx.url());

    let first = http_get(squid.port(), &url).unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.body.len(), 100_000);
    assert!(
        wait_until(LOG_WAIT, || squid.count(CacheOutcome::Miss, "/object") == 1),
        "{}",
        squid.access_log()
    );

    let second = http_get(squid.port(), &url).unwrap();
    assert_eq!(second.status, 200);
    assert_eq!(second.body, first.body);
    assert!(
        wait_until(LOG_WAIT, || squid.count(CacheOutcome::Hit, "/object") == 1),
        "{}",
        squid.access_log()
    );
    // nginx saw the object once: the second request was served by squid.
    assert_eq!(nginx.count_requests("/object"), 1, "{}", nginx.access_log());
}

#[test]
fn servers_are_gone_after_drop() {
    let root = tempdir().unwrap();
    let nginx = Nginx::start(root.path()).unwrap();
    let squid = Squid::start().unwrap();
    let (nginx_port, squid_port) = (nginx.port(), squid.port());
    let (nginx_dir, squid_dir) = (nginx.dir().to_path_buf(), squid.dir().to_path_buf());
    drop(nginx);
    drop(squid);
    assert!(http_get(nginx_port, "/").is_err());
    assert!(http_get(squid_port, "/").is_err());
    assert!(!nginx_dir.exists());
    assert!(!squid_dir.exists());
}
