//! A real nginx serving a directory on a free loopback port, like a stratum 1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{find_binary, ServerProcess};
use crate::{free_port, http_get, read_lossy, write_file, Error, Result, TempDir};

/// Deadline for nginx to answer after start.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Path answered by nginx itself (204) for the readiness probe; not logged.
const PROBE_PATH: &str = "/.perch-testkit-ready";
/// Attempts with a new port when the port was taken meanwhile.
const BIND_ATTEMPTS: usize = 3;

/// A running nginx serving a directory of static files on `127.0.0.1`.
///
/// Like `cvmfs_server`'s Apache configuration, `.cvmfs*` files (manifest, whitelist, ...) are
/// sent with `Cache-Control: max-age=61` and everything else with `max-age=259200` (3 days),
/// so a proxy caches objects. The access log has one line per request:
/// `<client> <status> <method> <uri> <bytes> "<user agent>"`. Killed on drop.
#[derive(Debug)]
pub struct Nginx {
    // Field order: the process is stopped before the directory is removed.
    process: ServerProcess,
    port: u16,
    root: PathBuf,
    dir: TempDir,
}

/// One line of [`Nginx::access_log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxLogEntry {
    /// Response status.
    pub status: u16,
    /// Request method.
    pub method: String,
    /// Request URI as sent (path and query).
    pub uri: String,
}

impl Nginx {
    /// Starts nginx serving `root` and waits (up to 10 s) until it answers HTTP.
    ///
    /// Fails if the binary is missing (naming the Debian package), if nginx exits, or if it
    /// does not answer in time; the error carries nginx's error log.
    pub fn start(root: &Path) -> Result<Nginx> {
        let binary = find_binary("nginx", "PERCH_NGINX", "nginx-light (or nginx)")?;
        let root = root.canonicalize().map_err(|source| Error::Io {
            action: "find the document root",
            path: root.to_path_buf(),
            source,
        })?;
        let mut attempt = 1;
        loop {
            match Self::try_start(&binary, &root) {
                Err(Error::Exited { log, .. })
                    if attempt < BIND_ATTEMPTS && log.contains("Address already in use") =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn try_start(binary: &Path, root: &Path) -> Result<Nginx> {
        let dir = crate::tempdir().map_err(|source| Error::Io {
            action: "create a temp dir in",
            path: std::env::temp_dir(),
            source,
        })?;
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        write_file(&conf, &config(dir.path(), root, port))?;
        let process = launch(binary, dir.path(), port)?;
        Ok(Nginx {
            process,
            port,
            root: root.to_path_buf(),
            dir,
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port nginx listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory served (canonical path).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The temp dir holding config, logs and pid file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The access log so far.
    pub fn access_log(&self) -> String {
        read_lossy(&self.dir.path().join("access.log"))
    }

    /// The error log and nginx's own output so far.
    pub fn error_log(&self) -> String {
        nginx_log(self.dir.path())
    }

    /// The parsed access log.
    pub fn requests(&self) -> Vec<NginxLogEntry> {
        self.access_log().lines().filter_map(parse_entry).collect()
    }

    /// How many requests had a URI containing `path_substring`.
    pub fn count_requests(&self, path_substring: &str) -> usize {
        self.requests()
            .iter()
            .filter(|entry| entry.uri.contains(path_substring))
            .count()
    }

    /// Stops nginx (SIGTERM, then SIGKILL after 5 s); logs stay readable until drop.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts nginx again after [`Nginx::stop`], on the same port with the same configuration
    /// and logs (a stratum coming back), and waits until it answers. Fails if the port was
    /// taken meanwhile.
    pub fn restart(&mut self) -> Result<()> {
        self.process.stop();
        let binary = find_binary("nginx", "PERCH_NGINX", "nginx-light (or nginx)")?;
        self.process = launch(&binary, self.dir.path(), self.port)?;
        Ok(())
    }
}

/// Starts nginx on `dir/nginx.conf` (logs in `dir`) and waits until it answers on `port`.
fn launch(binary: &Path, dir: &Path, port: u16) -> Result<ServerProcess> {
    let mut command = Command::new(binary);
    command
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"));
    let mut process = ServerProcess::spawn(command, binary, &dir.join("nginx.out"))?;
    process.wait_ready(
        "nginx",
        port,
        READY_TIMEOUT,
        || http_get(port, PROBE_PATH).is_ok_and(|r| r.status == 204),
        || nginx_log(dir),
    )?;
    Ok(process)
}

fn nginx_log(dir: &Path) -> String {
    format!(
        "{}{}",
        read_lossy(&dir.join("error.log")),
        read_lossy(&dir.join("nginx.out"))
    )
}

fn parse_entry(line: &str) -> Option<NginxLogEntry> {
    let mut fields = line.split_whitespace();
    let _client = fields.next()?;
    let status = fields.next()?.parse().ok()?;
    let method = fields.next()?.to_string();
    let uri = fields.next()?.to_string();
    Some(NginxLogEntry {
        status,
        method,
        uri,
    })
}

/// Quotes a path for nginx.conf.
fn quoted(path: &Path) -> String {
    format!(
        "\"{}\"",
        path.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    )
}

fn config(dir: &Path, root: &Path, port: u16) -> String {
    let path = |name: &str| quoted(&dir.join(name));
    // As root, workers would run as `nobody` and could not read the 0700 temp dirs.
    let user = if nix::unistd::geteuid().is_root() {
        "user root;\n"
    } else {
        ""
    };
    format!(
        r#"# written by perch-testkit
{user}daemon off;
master_process on;
worker_processes 1;
pid {pid};
error_log {error_log} info;

events {{
    worker_connections 256;
}}

http {{
    default_type application/octet-stream;
    types {{
        application/json json;
        text/plain txt;
    }}
    log_format perch '$remote_addr $status $request_method $request_uri $body_bytes_sent "$http_user_agent"';
    access_log {access_log} perch;
    client_body_temp_path {client_body};
    proxy_temp_path {proxy};
    fastcgi_temp_path {fastcgi};
    uwsgi_temp_path {uwsgi};
    scgi_temp_path {scgi};
    sendfile on;
    keepalive_timeout 5;
    server_tokens off;

    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {root};

        # Like cvmfs_server's Apache config: objects for 3 days, .cvmfs* files for 61 s.
        location / {{
            expires 259200s;
        }}
        location ~ "/\.cvmfs[^/]*$" {{
            expires 61s;
        }}
        # Readiness probe of perch-testkit, kept out of the access log.
        location = {probe} {{
            access_log off;
            return 204;
        }}
    }}
}}
"#,
        pid = path("nginx.pid"),
        error_log = path("error.log"),
        access_log = path("access.log"),
        client_body = path("client_body"),
        proxy = path("proxy"),
        fastcgi = path("fastcgi"),
        uwsgi = path("uwsgi"),
        scgi = path("scgi"),
        root = quoted(root),
        probe = PROBE_PATH,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_log_lines() {
        let entry = parse_entry("127.0.0.1 200 GET /data/ab/cd?x=1 12 \"perch\"").unwrap();
        assert_eq!(entry.status, 200);
        assert_eq!(entry.method, "GET");
        assert_eq!(entry.uri, "/data/ab/cd?x=1");
        assert_eq!(parse_entry("garbage"), None);
    }

    #[test]
    fn config_keeps_everything_in_the_temp_dir() {
        let text = config(Path::new("/t/d"), Path::new("/srv/x"), 4242);
        assert!(text.contains("listen 127.0.0.1:4242;"));
        assert!(text.contains("root \"/srv/x\";"));
        assert!(text.contains("pid \"/t/d/nginx.pid\";"));
        assert!(text.contains("client_body_temp_path \"/t/d/client_body\";"));
        assert_eq!(quoted(Path::new("/a\"b")), "\"/a\\\"b\"");
    }
}
