//! The transport's handling of HTTP replies: a loopback server answers every request with the
//! fuzz input (after its first byte), as a server or as a proxy would (status lines, headers,
//! content length, chunked bodies, redirects, early close). The first byte picks the client
//! side: bit 0 = through a proxy (then bit 1 = follow redirects: every connection of a
//! proxied client goes to the proxy, so no redirect can lead off this machine), bit 2 = an
//! object download through the cache (zlib, hash and declared size checked) instead of the
//! manifest's plain download. A download either fails with a reason or returns exactly the
//! expected bytes; nothing panics and nothing hangs.
#![no_main]
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use perch_cvmfs::cache::Cache;
use perch_cvmfs::fetch::Proxy;
use perch_cvmfs::fetch::{FetchOptions, Fetcher};
use perch_format::compress::Compression;
use perch_format::hash::{ContentHash, ObjectKind};

/// The fixture object `hello.txt` of tiny.example.org (content `hello tiny\n`).
const HELLO: &str = "8415eecb60c637cbe5324dc8f614be6fe516816b";

struct Server {
    port: u16,
    reply: Arc<Mutex<Vec<u8>>>,
}

fn serve(mut s: TcpStream, reply: &Mutex<Vec<u8>>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let r = reply.lock().unwrap().clone();
    let _ = s.write_all(&r);
    let _ = s.shutdown(std::net::Shutdown::Write);
    // Drain what the client still sends so that closing does not reset the reply.
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let reply = Arc::new(Mutex::new(Vec::new()));
        let r = reply.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let r = r.clone();
                std::thread::spawn(move || serve(s, &r));
            }
        });
        Server { port, reply }
    })
}

fn cache() -> &'static Cache {
    static C: OnceLock<Cache> = OnceLock::new();
    C.get_or_init(|| Cache::open(&perch_fuzz::scratch().join("cache"), false).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, reply)) = data.split_first() else {
        return;
    };
    let srv = server();
    *srv.reply.lock().unwrap() = reply.to_vec();
    let proxied = mode & 1 != 0;
    let opts = FetchOptions {
        timeout: Duration::from_secs(3),
        timeout_direct: Duration::from_secs(3),
        low_speed_limit: 0,
        max_retries: 1,
        backoff_init: Duration::ZERO,
        backoff_max: Duration::ZERO,
        follow_redirects: proxied && mode & 2 != 0,
        ..FetchOptions::default()
    };
    let (server, proxies) = if proxied {
        (
            "http://stratum-one.invalid/cvmfs/tiny.example.org".to_string(),
            vec![vec![Proxy::Url(format!("http://127.0.0.1:{}", srv.port))]],
        )
    } else {
        (
            format!("http://127.0.0.1:{}/cvmfs/tiny.example.org", srv.port),
            Vec::new(),
        )
    };
    let f = Fetcher::new(vec![server], proxies, opts);
    if mode & 4 == 0 {
        if let Ok(b) = f.fetch_bytes(".cvmfspublished", 4096) {
            assert!(b.len() <= 4096);
        }
    } else {
        let h: ContentHash = HELLO.parse().unwrap();
        let c = cache();
        if let Ok(p) = c.fetch_object(&f, &h, ObjectKind::File, Compression::Zlib, Some(11)) {
            assert_eq!(std::fs::read(&p).unwrap(), b"hello tiny\n");
            std::fs::remove_file(&p).unwrap();
        }
    }
});
