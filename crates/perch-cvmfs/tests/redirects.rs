//! `CVMFS_FOLLOW_REDIRECTS`: perch follows a server's redirects itself (up to four), and a
//! hostile redirect is a failure of that server, never a panic. ureq 3.5, which followed them
//! before, panics on a 302 whose `Location` is empty and whose body is chunked (the input the
//! `http` fuzz target found).

use std::time::Duration;

use perch_cvmfs::fetch::{FetchOptions, Fetcher};
use perch_testkit::{tempdir, Fault, FaultServer};

fn redirect(to: &str) -> Fault {
    Fault::Raw(
        format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .into_bytes(),
    )
}

fn fetcher(url: &str, follow: bool) -> Fetcher {
    Fetcher::new(
        vec![url.to_string()],
        Vec::new(),
        FetchOptions {
            timeout: Duration::from_secs(2),
            timeout_direct: Duration::from_secs(2),
            backoff_init: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            follow_redirects: follow,
            ..FetchOptions::default()
        },
    )
}

#[test]
fn redirects_are_followed_only_when_asked_and_at_most_four_times() {
    let root = tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("real")).unwrap();
    std::fs::write(root.path().join("real/file"), b"the content\n").unwrap();
    let server = FaultServer::start(root.path(), |path| match path {
        "/a/file" => redirect("next"),
        "/a/next" => redirect("/real/file"),
        "/loop/file" => redirect("/loop/file"),
        "/empty/file" => Fault::Raw(
            b"HTTP/1.1 302 Found\r\nLocation: \r\nTransfer-Encoding: chunked\r\n\r\n\
              13\r\n\x0e\x9c\xcbH\xcd\xc9\xc9W(\xc9\xcc\xab\xe4\x02\x00\x19\x98\x04\x03\r\n0\r\n\r\n"
                .to_vec(),
        ),
        "/https/file" => redirect("https://127.0.0.1/real/file"),
        _ => Fault::Serve,
    })
    .unwrap();
    let base = server.url();
    // Followed: /a/file → /a/next (relative) → /real/file (absolute path).
    let f = fetcher(&format!("{base}/a"), true);
    assert_eq!(f.fetch_bytes("file", 1 << 20).unwrap(), b"the content\n");
    // Not asked: the first redirect is the server's failure.
    let e = fetcher(&format!("{base}/a"), false)
        .fetch_bytes("file", 1 << 20)
        .unwrap_err();
    assert!(
        e.to_string().contains("HTTP redirect 302 not followed"),
        "{e}"
    );
    // A loop, an empty Location with a chunked body, another scheme: failures, no panic.
    for dir in ["loop", "empty", "https"] {
        let e = fetcher(&format!("{base}/{dir}"), true)
            .fetch_bytes("file", 1 << 20)
            .unwrap_err();
        assert!(
            e.to_string().contains("HTTP redirect 302 not followed"),
            "{dir}: {e}"
        );
    }
    // The loop was followed four times, then given up.
    assert_eq!(server.count("/loop/file"), 5, "{:?}", server.hits());
}
