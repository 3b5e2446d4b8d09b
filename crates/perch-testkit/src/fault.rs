//! A small in-process HTTP server that injects faults (STYLE §12: real servers for
//! behaviour, an in-process one only for faults).
//!
//! Files are served from a directory; a rule chosen per request path replaces the normal
//! reply with a status, garbage, a reply that stalls mid-body, a corrupted body, a slow
//! trickle or a closed connection. Every request path is recorded. Each connection gets one
//! reply and is closed. Dropping the server stops it and releases stalled connections.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Serve the file normally (404 if missing).
    Serve,
    /// Answer this status with a short text body.
    Status(u16),
    /// Answer this status with an `X-Squid-Error` header, as a squid does.
    SquidError(u16),
    /// Answer bytes that are not HTTP at all.
    Garbage,
    /// Send the headers (full `Content-Length`) and this many body bytes, then stall
    /// (keep the connection open, send nothing) until the server is dropped.
    StallAfter(usize),
    /// Serve the file with one byte flipped in the middle.
    Corrupt,
    /// Serve the file at this many bytes per second.
    Trickle(usize),
    /// Close the connection without answering.
    Close,
    /// Answer exactly these bytes (status line, headers, body as given), then close.
    Raw(Vec<u8>),
    /// Answer 200 with `head` and then `repeat` over and over, without reading any file:
    /// `length` bytes in all with that `Content-Length`, or, with `None`, an endless chunked
    /// body. Stops when the client hangs up or the server is dropped.
    Flood {
        /// Total body length, or `None` for an endless `Transfer-Encoding: chunked` body.
        length: Option<u64>,
        /// Sent once, first.
        head: Vec<u8>,
        /// Sent after `head` until `length` is reached (must not be empty).
        repeat: Vec<u8>,
    },
}

type Rule = dyn Fn(&str) -> Fault + Send + Sync;

/// The running fault server.
pub struct FaultServer {
    port: u16,
    stop: Arc<AtomicBool>,
    hits: Arc<Mutex<Vec<String>>>,
    heads: Arc<Mutex<Vec<(String, String)>>>,
}

impl std::fmt::Debug for FaultServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultServer")
            .field("port", &self.port)
            .finish()
    }
}

impl FaultServer {
    /// Serve `root` on a free loopback port, answering each request path (the path part of
    /// the request target, also for absolute proxy-style targets) as `rule` says.
    pub fn start(
        root: &Path,
        rule: impl Fn(&str) -> Fault + Send + Sync + 'static,
    ) -> std::io::Result<FaultServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let rule: Arc<Rule> = Arc::new(rule);
        let root = root.to_path_buf();
        let (s, h, hd) = (stop.clone(), hits.clone(), heads.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (s, h, hd, rule, root) =
                    (s.clone(), h.clone(), hd.clone(), rule.clone(), root.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, &root, &*rule, &s, &h, &hd);
                });
            }
        });
        Ok(FaultServer {
            port,
            stop,
            hits,
            heads,
        })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Paths requested so far, in order.
    pub fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Paths of requests that carried a `no-cache` header (`Pragma` or `Cache-Control`).
    pub fn no_cache_hits(&self) -> Vec<String> {
        self.heads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, head)| head.to_ascii_lowercase().contains("no-cache"))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// How many requested paths contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.hits().iter().filter(|p| p.contains(needle)).count()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
            Duration::from_secs(1),
        );
    }
}

/// Write a [`Fault::Flood`] reply; a client hanging up ends it with an error, which is fine.
fn flood(
    conn: &mut TcpStream,
    length: Option<u64>,
    head: &[u8],
    repeat: &[u8],
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let framing = match length {
        Some(n) => format!("Content-Length: {n}"),
        None => "Transfer-Encoding: chunked".to_string(),
    };
    conn.write_all(
        format!("HTTP/1.1 200 OK\r\n{framing}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut left = length.unwrap_or(u64::MAX);
    let piece = |conn: &mut TcpStream, data: &[u8], left: &mut u64| -> std::io::Result<()> {
        let data = &data[..usize::try_from(*left).map_or(data.len(), |l| l.min(data.len()))];
        if data.is_empty() {
            // An empty chunk would end a chunked body.
            return Ok(());
        }
        if length.is_some() {
            conn.write_all(data)?;
        } else {
            conn.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
            conn.write_all(data)?;
            conn.write_all(b"\r\n")?;
        }
        *left -= data.len() as u64;
        Ok(())
    };
    piece(conn, head, &mut left)?;
    while left > 0 && !repeat.is_empty() && !stop.load(Ordering::SeqCst) {
        piece(conn, repeat, &mut left)?;
    }
    Ok(())
}

fn handle(
    mut conn: TcpStream,
    root: &Path,
    rule: &Rule,
    stop: &AtomicBool,
    hits: &Mutex<Vec<String>>,
    heads: &Mutex<Vec<(String, String)>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&req);
    let target = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest
            .find('/')
            .map_or("/".to_string(), |i| rest[i..].to_string()),
        None => target,
    };
    if stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    hits.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(path.clone());
    heads
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((path.clone(), text.into_owned()));
    let fault = rule(&path);
    let file: Option<PathBuf> =
        Some(root.join(path.trim_start_matches('/'))).filter(|p| p.is_file());
    let body = || file.as_ref().and_then(|f| std::fs::read(f).ok());
    let header = |code: u16, len: usize, extra: &str| {
        format!("HTTP/1.1 {code} X\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n")
            .into_bytes()
    };
    match fault {
        Fault::Close => {}
        Fault::Raw(bytes) => conn.write_all(&bytes)?,
        Fault::Flood {
            length,
            head,
            repeat,
        } => flood(&mut conn, length, &head, &repeat, stop)?,
        Fault::Garbage => conn.write_all(b"\x00\x01garbage, not HTTP\r\n\r\n")?,
        Fault::Status(code) => {
            let b = format!("fault {code}\n");
            conn.write_all(&header(code, b.len(), ""))?;
            conn.write_all(b.as_bytes())?;
        }
        Fault::SquidError(code) => {
            let b = "squid says no\n";
            conn.write_all(&header(
                code,
                b.len(),
                "X-Squid-Error: ERR_CONNECT_FAIL 111\r\n",
            ))?;
            conn.write_all(b.as_bytes())?;
        }
        Fault::Serve | Fault::Corrupt | Fault::StallAfter(_) | Fault::Trickle(_) => {
            let Some(mut b) = body() else {
                conn.write_all(&header(404, 0, ""))?;
                return Ok(());
            };
            conn.write_all(&header(200, b.len(), ""))?;
            match fault {
                Fault::Corrupt => {
                    let i = b.len() / 2;
                    if let Some(x) = b.get_mut(i) {
                        *x ^= 0x5a;
                    }
                    conn.write_all(&b)?;
                }
                Fault::StallAfter(n) => {
                    conn.write_all(&b[..n.min(b.len())])?;
                    conn.flush()?;
                    while !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                Fault::Trickle(rate) => {
                    for piece in b.chunks(rate.max(1) / 10 + 1) {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        conn.write_all(piece)?;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                _ => conn.write_all(&b)?,
            }
        }
    }
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Both);
    Ok(())
}
