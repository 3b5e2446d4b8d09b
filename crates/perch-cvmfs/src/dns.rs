//! Host name resolution without glibc NSS (the release binary is static).
//!
//! Order, as a plain `hosts: files dns` system does: IP literals and `localhost`
//! never leave the process; then `/etc/hosts`; then A and AAAA queries over UDP
//! to the `nameserver`s of `/etc/resolv.conf` (with its `search` list for names
//! without a dot). Each query waits 3 s and is sent twice at most (spec §10.4);
//! answers are cached for their TTL clamped to 60 s .. 1 day (spec §10.2).
//! IPv4 addresses come first unless `CVMFS_IPFAMILY_PREFER=6`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Per-query timeout.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Sends per name server and query.
const ATTEMPTS: usize = 2;
const MIN_TTL: u32 = 60;
const MAX_TTL: u32 = 86_400;

/// A resolver reading `/etc/hosts` and `/etc/resolv.conf` (paths replaceable for tests).
#[derive(Debug)]
pub struct Resolver {
    hosts_file: PathBuf,
    resolv_conf: PathBuf,
    prefer_v6: bool,
    cache: Mutex<HashMap<String, (Vec<IpAddr>, Instant)>>,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new(
            Path::new("/etc/hosts"),
            Path::new("/etc/resolv.conf"),
            false,
        )
    }
}

impl Resolver {
    /// A resolver using these files; `prefer_v6` puts IPv6 addresses first.
    pub fn new(hosts_file: &Path, resolv_conf: &Path, prefer_v6: bool) -> Resolver {
        Resolver {
            hosts_file: hosts_file.to_path_buf(),
            resolv_conf: resolv_conf.to_path_buf(),
            prefer_v6,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// All addresses of `host` (a name or an IP literal, brackets allowed).
    pub fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = bare.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty host name",
            ));
        }
        if name == "localhost" || name.ends_with(".localhost") {
            return Ok(self.order(vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]));
        }
        if let Some((ips, until)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
        {
            if Instant::now() < *until {
                return Ok(ips.clone());
            }
        }
        let from_hosts = hosts_lookup(
            &std::fs::read_to_string(&self.hosts_file).unwrap_or_default(),
            &name,
        );
        if !from_hosts.is_empty() {
            return Ok(self.order(from_hosts));
        }
        let conf =
            ResolvConf::parse(&std::fs::read_to_string(&self.resolv_conf).unwrap_or_default());
        let candidates: Vec<String> = if name.contains('.') || conf.search.is_empty() {
            std::iter::once(name.clone())
                .chain(conf.search.iter().map(|d| format!("{name}.{d}")))
                .collect()
        } else {
            conf.search
                .iter()
                .map(|d| format!("{name}.{d}"))
                .chain(std::iter::once(name.clone()))
                .collect()
        };
        let mut last_err = io::Error::new(
            io::ErrorKind::NotFound,
            format!("cannot resolve {name}: no name server configured"),
        );
        for cand in candidates {
            match query_all(&conf.nameservers, &cand) {
                Ok((ips, ttl)) if !ips.is_empty() => {
                    let ips = self.order(ips);
                    let ttl = Duration::from_secs(u64::from(ttl.clamp(MIN_TTL, MAX_TTL)));
                    self.cache
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.clone(), (ips.clone(), Instant::now() + ttl));
                    return Ok(ips);
                }
                Ok(_) => {
                    last_err = io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("cannot resolve {name}: unknown host"),
                    )
                }
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    fn order(&self, mut ips: Vec<IpAddr>) -> Vec<IpAddr> {
        let v6 = self.prefer_v6;
        ips.sort_by_key(|ip| ip.is_ipv6() != v6);
        ips.dedup();
        ips
    }
}

fn hosts_lookup(text: &str, name: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let Some(ip) = fields
            .next()
            .and_then(|f| f.split('%').next()?.parse::<IpAddr>().ok())
        else {
            continue;
        };
        if fields.any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(name)) {
            out.push(ip);
        }
    }
    out
}

#[derive(Debug, Default)]
struct ResolvConf {
    nameservers: Vec<SocketAddr>,
    search: Vec<String>,
}

impl ResolvConf {
    fn parse(text: &str) -> ResolvConf {
        let mut c = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut f = line.split_whitespace();
            match f.next() {
                Some("nameserver") => {
                    if let Some(ip) = f
                        .next()
                        .and_then(|s| s.split('%').next()?.parse::<IpAddr>().ok())
                    {
                        c.nameservers.push(SocketAddr::new(ip, 53));
                    }
                }
                Some("search") | Some("domain") => {
                    c.search = f
                        .map(|d| d.trim_end_matches('.').to_string())
                        .filter(|d| !d.is_empty())
                        .collect();
                }
                _ => {}
            }
        }
        if c.nameservers.is_empty() {
            c.nameservers
                .push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53));
        }
        c
    }
}

/// A and AAAA for `name`, from the first server that answers; `(addresses, min TTL)`.
fn query_all(servers: &[SocketAddr], name: &str) -> io::Result<(Vec<IpAddr>, u32)> {
    let mut last = io::Error::new(
        io::ErrorKind::TimedOut,
        format!("cannot resolve {name}: no answer"),
    );
    for server in servers {
        let mut ips = Vec::new();
        let mut ttl = MAX_TTL;
        let mut answered = false;
        for qtype in [1u16, 28] {
            match query(*server, name, qtype) {
                Ok(Answer::Records(r, t)) => {
                    answered = true;
                    ttl = ttl.min(t);
                    ips.extend(r);
                }
                Ok(Answer::NxDomain) => return Ok((Vec::new(), MIN_TTL)),
                Err(e) => {
                    last = io::Error::new(
                        e.kind(),
                        format!("cannot resolve {name} with name server {server}: {e}"),
                    )
                }
            }
        }
        if answered {
            return Ok((ips, ttl));
        }
    }
    Err(last)
}

enum Answer {
    Records(Vec<IpAddr>, u32),
    NxDomain,
}

/// One query with retries to one server.
fn query(server: SocketAddr, name: &str, qtype: u16) -> io::Result<Answer> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect(server)?;
    sock.set_read_timeout(Some(QUERY_TIMEOUT))?;
    let id: u16 = rand::random();
    let packet = encode_query(id, name, qtype)?;
    let mut buf = [0u8; 1500];
    for _ in 0..ATTEMPTS {
        sock.send(&packet)?;
        let deadline = Instant::now() + QUERY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))?;
            match sock.recv(&mut buf) {
                Ok(n) => {
                    if let Some(a) = decode_answer(&buf[..n], id, qtype) {
                        return Ok(a);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
}

fn encode_query(id: u16, name: &str, qtype: u16) -> io::Result<Vec<u8>> {
    let mut p = Vec::with_capacity(32 + name.len());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; 1 question
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|&l| l < 64)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad host name {name:?}"),
                )
            })?;
        p.push(len);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    Ok(p)
}

/// Skip a (possibly compressed) name; returns the offset after it.
fn skip_name(m: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let l = *m.get(i)?;
        if l == 0 {
            return Some(i + 1);
        }
        if l & 0xc0 == 0xc0 {
            return Some(i + 2);
        }
        i += 1 + usize::from(l);
    }
}

fn be16(m: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*m.get(i)?, *m.get(i + 1)?]))
}

fn decode_answer(m: &[u8], id: u16, qtype: u16) -> Option<Answer> {
    if be16(m, 0)? != id || m.get(2)? & 0x80 == 0 {
        return None;
    }
    let rcode = m.get(3)? & 0x0f;
    if rcode == 3 {
        return Some(Answer::NxDomain);
    }
    if rcode != 0 {
        return Some(Answer::Records(Vec::new(), MIN_TTL));
    }
    let qd = be16(m, 4)?;
    let an = be16(m, 6)?;
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(m, i)? + 4;
    }
    let mut ips = Vec::new();
    let mut ttl = MAX_TTL;
    for _ in 0..an {
        i = skip_name(m, i)?;
        let ty = be16(m, i)?;
        let t = u32::from_be_bytes(m.get(i + 4..i + 8)?.try_into().ok()?);
        let len = usize::from(be16(m, i + 8)?);
        let data = m.get(i + 10..i + 10 + len)?;
        i += 10 + len;
        if ty != qtype {
            continue; // CNAME and others: the addresses follow in the same answer
        }
        ttl = ttl.min(t);
        match (ty, len) {
            (1, 4) => ips.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (28, 16) => ips.push(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?))),
            _ => {}
        }
    }
    Some(Answer::Records(ips, ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_localhost_never_query() {
        let r = Resolver::new(Path::new("/nonexistent"), Path::new("/nonexistent"), false);
        assert_eq!(
            r.lookup("10.1.2.3").unwrap(),
            vec!["10.1.2.3".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            r.lookup("[::1]").unwrap(),
            vec!["::1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            r.lookup("localhost").unwrap()[0],
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
    }

    #[test]
    fn hosts_file_first() {
        let d = tempfile::tempdir().unwrap();
        let hosts = d.path().join("hosts");
        std::fs::write(&hosts, "# c\n127.0.0.9 squid.site squid\n::2 squid.site\n").unwrap();
        let r = Resolver::new(&hosts, Path::new("/nonexistent"), false);
        let got = r.lookup("SQUID.site").unwrap();
        assert_eq!(
            got,
            vec![
                "127.0.0.9".parse::<IpAddr>().unwrap(),
                "::2".parse().unwrap()
            ]
        );
        let r6 = Resolver::new(&hosts, Path::new("/nonexistent"), true);
        assert_eq!(
            r6.lookup("squid.site").unwrap()[0],
            "::2".parse::<IpAddr>().unwrap()
        );
    }

    /// A one-shot UDP name server answering A queries with 192.0.2.7 behind a CNAME.
    #[test]
    fn udp_query_against_a_local_server() {
        let srv = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = srv.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            for _ in 0..2 {
                let (n, from) = srv.recv_from(&mut buf).unwrap();
                let q = &buf[..n];
                let qend = skip_name(q, 12).unwrap() + 4;
                let qtype = be16(q, qend - 4).unwrap();
                let mut r = q[..qend].to_vec();
                r[2] = 0x81;
                r[3] = 0x80;
                r[6] = 0;
                r[7] = if qtype == 1 { 2 } else { 0 };
                if qtype == 1 {
                    // CNAME to "x" then A record
                    r.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 30, 0, 3, 1, b'x', 0]);
                    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0, 0, 4, 192, 0, 2, 7]);
                }
                srv.send_to(&r, from).unwrap();
            }
        });
        let ips = query_all(
            &[SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)],
            "stratum1.example.org",
        )
        .unwrap();
        h.join().unwrap();
        assert_eq!(ips.0, vec!["192.0.2.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(ips.1, 256, "TTL of the address record, not the CNAME");
    }
}
