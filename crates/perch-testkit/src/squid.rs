//! A real squid forward proxy on a free loopback port, memory cache only.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::{find_binary, ServerProcess};
use crate::{free_port, http_get, read_lossy, write_file, Error, Result, TempDir};

/// Deadline for squid to answer after start.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts with a new port when the port was taken meanwhile.
const BIND_ATTEMPTS: usize = 3;
/// Users squid may run as when started by root (it refuses to run as root).
const UNPRIVILEGED_USERS: [&str; 2] = ["proxy", "nobody"];

/// A running squid forward proxy on `127.0.0.1`, clients from 127.0.0.1 only.
///
/// Memory cache only (`cache_mem` 256 MB, objects up to 64 MB), no disk cache, every file in
/// a temp dir. Started in the foreground (`squid -N`); killed on drop. The readiness probe
/// leaves one `NONE_NONE/400 GET /` line in the access log. Send proxy requests
/// with an absolute URL, e.g. `http_get(squid.port(), "http://127.0.0.1:8080/file")`.
#[derive(Debug)]
pub struct Squid {
    // Field order: the process is stopped before the directory is removed.
    process: ServerProcess,
    port: u16,
    dir: TempDir,
}

/// How squid answered a request, from the result code of its access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served from cache without asking the server (`TCP_HIT`, `TCP_MEM_HIT`, `TCP_IMS_HIT`, ...).
    Hit,
    /// Fetched from the server (`TCP_MISS`, `TCP_CLIENT_REFRESH_MISS`, ...).
    Miss,
    /// Cached copy revalidated with the server (`TCP_REFRESH_*`).
    Refresh,
    /// Anything else (`TCP_DENIED`, `NONE_NONE`, `TCP_TUNNEL`, ...).
    Other,
}

impl CacheOutcome {
    /// Classifies a squid result code such as `TCP_MEM_HIT`.
    pub fn of_code(code: &str) -> CacheOutcome {
        if code.starts_with("TCP_REFRESH") {
            CacheOutcome::Refresh
        } else if code.contains("HIT") {
            CacheOutcome::Hit
        } else if code.contains("MISS") {
            CacheOutcome::Miss
        } else {
            CacheOutcome::Other
        }
    }
}

/// One line of [`Squid::access_log`] (native `squid` log format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SquidLogEntry {
    /// Result code, e.g. `TCP_MEM_HIT`.
    pub code: String,
    /// HTTP status sent to the client.
    pub status: u16,
    /// Request method.
    pub method: String,
    /// Requested URL.
    pub url: String,
}

impl SquidLogEntry {
    /// The cache outcome of this request.
    pub fn outcome(&self) -> CacheOutcome {
        CacheOutcome::of_code(&self.code)
    }
}

impl Squid {
    /// Starts squid and waits (up to 20 s) until it answers HTTP.
    ///
    /// As root, squid runs as `proxy` (or `nobody`), which then owns the temp dir. Fails if
    /// the binary is missing (naming the Debian package), if squid exits, or if it does not
    /// answer in time; the error carries squid's cache log and output.
    pub fn start() -> Result<Squid> {
        let binary = find_binary("squid", "PERCH_SQUID", "squid")?;
        let mut attempt = 1;
        loop {
            match Self::try_start(&binary) {
                Err(Error::Exited { log, .. })
                    if attempt < BIND_ATTEMPTS && log.contains("Address already in use") =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn try_start(binary: &Path) -> Result<Squid> {
        let dir = crate::tempdir().map_err(|source| Error::Io {
            action: "create a temp dir in",
            path: std::env::temp_dir(),
            source,
        })?;
        let effective_user = if nix::unistd::geteuid().is_root() {
            Some(hand_over(dir.path())?)
        } else {
            None
        };
        let port = free_port();
        let conf = dir.path().join("squid.conf");
        write_file(&conf, &config(dir.path(), port, effective_user))?;
        let mut command = Command::new(binary);
        command.arg("-N").arg("-f").arg(&conf);
        let process = ServerProcess::spawn(command, binary, &dir.path().join("squid.out"))?;
        let mut squid = Squid { process, port, dir };
        let dir_path = squid.dir.path().to_path_buf();
        // A request in origin form is answered locally with an error page: no network use,
        // and no entry that looks like a real URL in the access log.
        squid.process.wait_ready(
            "squid",
            port,
            READY_TIMEOUT,
            || http_get(port, "/").is_ok(),
            || squid_log(&dir_path),
        )?;
        Ok(squid)
    }

    /// `http://127.0.0.1:PORT`, e.g. for `CVMFS_HTTP_PROXY`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port squid listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temp dir holding config and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The access log so far.
    pub fn access_log(&self) -> String {
        read_lossy(&self.dir.path().join("access.log"))
    }

    /// The cache log (squid's diagnostics) and squid's own output so far.
    pub fn cache_log(&self) -> String {
        squid_log(self.dir.path())
    }

    /// The parsed access log.
    pub fn requests(&self) -> Vec<SquidLogEntry> {
        self.access_log().lines().filter_map(parse_entry).collect()
    }

    /// How many requests with a URL containing `path_substring` had `outcome`.
    pub fn count(&self, outcome: CacheOutcome, path_substring: &str) -> usize {
        self.requests()
            .iter()
            .filter(|e| e.outcome() == outcome && e.url.contains(path_substring))
            .count()
    }

    /// Stops squid (SIGTERM, then SIGKILL after 5 s); logs stay readable until drop.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

/// Gives `dir` to the unprivileged user squid will run as; returns the user's name.
fn hand_over(dir: &Path) -> Result<&'static str> {
    let (name, user) = UNPRIVILEGED_USERS
        .iter()
        .find_map(|name| {
            nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .map(|user| (*name, user))
        })
        .ok_or(Error::NoUser {
            name: UNPRIVILEGED_USERS[0],
        })?;
    nix::unistd::chown(dir, Some(user.uid), Some(user.gid)).map_err(|errno| Error::Io {
        action: "chown",
        path: dir.to_path_buf(),
        source: errno.into(),
    })?;
    Ok(name)
}

fn squid_log(dir: &Path) -> String {
    format!(
        "{}{}",
        read_lossy(&dir.join("cache.log")),
        read_lossy(&dir.join("squid.out"))
    )
}

/// `time elapsed client code/status bytes method url ...`
fn parse_entry(line: &str) -> Option<SquidLogEntry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (code, status) = fields.get(3)?.split_once('/')?;
    Some(SquidLogEntry {
        code: code.to_string(),
        status: status.parse().ok()?,
        method: (*fields.get(5)?).to_string(),
        url: (*fields.get(6)?).to_string(),
    })
}

fn config(dir: &Path, port: u16, effective_user: Option<&str>) -> String {
    let path = |name: &str| dir.join(name).display().to_string();
    let user = effective_user
        .map(|u| format!("cache_effective_user {u}\n"))
        .unwrap_or_default();
    format!(
        r#"# written by perch-testkit
http_port 127.0.0.1:{port}
{user}visible_hostname perch-testkit
acl local_clients src 127.0.0.1/32
http_access allow local_clients
http_access deny all
icp_port 0
pinger_enable off
htcp_port 0
cache_mem 256 MB
maximum_object_size_in_memory 64 MB
maximum_object_size 64 MB
memory_cache_mode always
pid_filename {pid}
access_log stdio:{access_log} squid
cache_log {cache_log}
cache_store_log none
logfile_rotate 0
netdb_filename none
coredump_dir {dir}
shutdown_lifetime 0 seconds
refresh_pattern . 0 20% 4320
"#,
        pid = path("squid.pid"),
        access_log = path("access.log"),
        cache_log = path("cache.log"),
        dir = dir.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes() {
        assert_eq!(CacheOutcome::of_code("TCP_HIT"), CacheOutcome::Hit);
        assert_eq!(CacheOutcome::of_code("TCP_MEM_HIT"), CacheOutcome::Hit);
        assert_eq!(CacheOutcome::of_code("TCP_IMS_HIT"), CacheOutcome::Hit);
        assert_eq!(CacheOutcome::of_code("TCP_MISS"), CacheOutcome::Miss);
        assert_eq!(
            CacheOutcome::of_code("TCP_CLIENT_REFRESH_MISS"),
            CacheOutcome::Miss
        );
        assert_eq!(
            CacheOutcome::of_code("TCP_REFRESH_UNMODIFIED"),
            CacheOutcome::Refresh
        );
        assert_eq!(CacheOutcome::of_code("TCP_DENIED"), CacheOutcome::Other);
        assert_eq!(CacheOutcome::of_code("NONE_NONE"), CacheOutcome::Other);
    }

    #[test]
    fn parses_log_lines() {
        let line = "1732526400.123      5 127.0.0.1 TCP_MEM_HIT/200 312 GET http://127.0.0.1:8080/f - HIER_NONE/- text/plain";
        let entry = parse_entry(line).unwrap();
        assert_eq!(entry.code, "TCP_MEM_HIT");
        assert_eq!(entry.status, 200);
        assert_eq!(entry.method, "GET");
        assert_eq!(entry.url, "http://127.0.0.1:8080/f");
        assert_eq!(entry.outcome(), CacheOutcome::Hit);
        assert_eq!(parse_entry("short line"), None);
    }
}
