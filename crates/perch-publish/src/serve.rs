//! `perch serve`: a small static HTTP server for a stratum directory.
//!
//! Files are served both at `/cvmfs/<name>/<path>` (any `<name>`, the layout
//! clients expect) and at `/<path>`. GET and HEAD only; directories are never
//! listed; `..`, `.` and empty components are refused. `.cvmfs*` files get
//! `Cache-Control: max-age=61` (like `cvmfs_server`'s Apache config: squid
//! does not cache for 60 s or less), `data/` objects `max-age=259200`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, StatusCode};

use crate::error::{PublishError, Result};

/// Worker threads answering requests.
const WORKERS: usize = 4;

/// A running server; stopped by [`Server::stop`] or on drop.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Serve `stratum_dir` on `listen` (port 0 picks a free port) until the
/// returned [`Server`] is stopped or dropped.
pub fn serve(stratum_dir: &Path, listen: SocketAddr) -> Result<Server> {
    let root = stratum_dir
        .canonicalize()
        .map_err(PublishError::io("open", stratum_dir))?;
    if !root.is_dir() {
        return Err(PublishError::NotADirectory(root));
    }
    let http = tiny_http::Server::http(listen).map_err(|e| PublishError::Io {
        op: "listen on",
        path: PathBuf::from(listen.to_string()),
        source: std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, e.to_string()),
    })?;
    let addr = http.server_addr().to_ip().ok_or_else(|| PublishError::Io {
        op: "listen on",
        path: PathBuf::from(listen.to_string()),
        source: std::io::Error::new(std::io::ErrorKind::Unsupported, "not an IP socket"),
    })?;
    let http = Arc::new(http);
    let stop = Arc::new(AtomicBool::new(false));
    let root = Arc::new(root);
    let workers = (0..WORKERS)
        .map(|_| {
            let (http, stop, root) = (http.clone(), stop.clone(), root.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match http.recv_timeout(Duration::from_millis(100)) {
                        Ok(Some(req)) => answer(&root, req),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "http server: accept failed");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })
        })
        .collect();
    tracing::info!(%addr, root = %stratum_dir.display(), "serving stratum");
    Ok(Server {
        addr,
        stop,
        workers,
    })
}

impl Server {
    /// `http://IP:PORT` (append `/cvmfs/<fqrn>` for a client's server URL).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting requests and wait for the workers (at most ~100 ms).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Map a request target to a file below `root`, or `None` (404).
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let path = path.strip_prefix('/')?;
    let mut comps: Vec<&str> = path.split('/').collect();
    if comps.len() >= 3 && comps[0] == "cvmfs" {
        comps.drain(..2);
    }
    if comps
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains('\\') || c.contains('%'))
    {
        return None;
    }
    let mut p = root.to_path_buf();
    p.extend(&comps);
    Some(p)
}

fn cache_control(target_file: &Path) -> &'static str {
    let name = target_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with(".cvmfs") {
        "max-age=61"
    } else {
        "max-age=259200"
    }
}

fn header(k: &str, v: &str) -> Header {
    Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("static header is valid")
}

fn answer(root: &Path, req: Request) {
    let method = req.method().clone();
    let target = req.url().to_string();
    let result = match method {
        Method::Get | Method::Head => match resolve(root, &target) {
            Some(p) => match std::fs::symlink_metadata(&p) {
                Ok(md) if md.is_file() => match File::open(&p) {
                    Ok(f) => {
                        let resp = Response::from_file(f)
                            .with_header(header("Content-Type", "application/octet-stream"))
                            .with_header(header("Cache-Control", cache_control(&p)));
                        req.respond(resp)
                    }
                    Err(_) => req.respond(Response::empty(StatusCode(404))),
                },
                _ => req.respond(Response::empty(StatusCode(404))),
            },
            None => req.respond(Response::empty(StatusCode(404))),
        },
        _ => {
            req.respond(Response::empty(StatusCode(405)).with_header(header("Allow", "GET, HEAD")))
        }
    };
    if let Err(e) = result {
        tracing::debug!(url = %target, error = %e, "http server: response not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let r = Path::new("/s");
        assert_eq!(
            resolve(r, "/.cvmfspublished"),
            Some(PathBuf::from("/s/.cvmfspublished"))
        );
        assert_eq!(
            resolve(r, "/cvmfs/x.org/.cvmfspublished?x=1"),
            Some(PathBuf::from("/s/.cvmfspublished"))
        );
        assert_eq!(
            resolve(r, "/cvmfs/x.org/data/ab/cd"),
            Some(PathBuf::from("/s/data/ab/cd"))
        );
        assert_eq!(resolve(r, "/data/../../etc/passwd"), None);
        assert_eq!(resolve(r, "/cvmfs/x/../y"), None);
        assert_eq!(resolve(r, "/a//b"), None);
        assert_eq!(resolve(r, "/%2e%2e/x"), None);
        assert_eq!(resolve(r, "relative"), None);
        assert_eq!(cache_control(Path::new("/s/.cvmfswhitelist")), "max-age=61");
        assert_eq!(cache_control(Path::new("/s/data/ab/cdC")), "max-age=259200");
    }
}
