//! `perch doctor [FQRN…]`: what `cvmfs_config probe` and `chksetup` tell a CernVM-FS admin,
//! for perch. One line per check, `OK`, `WARN` or `FAIL`, on stdout; exit status 1 when a
//! check failed, 0 otherwise.
//!
//! Per repository: the configuration, the public keys, each server through each proxy (HTTP
//! status and time of a `.cvmfspublished` request), the whitelist's expiry, and a mount into a
//! throw-away cache (manifest signature, certificate, whitelist, root catalog; a throw-away
//! cache so that a cached revision cannot hide a network failure). Then the cache and the alien
//! cache (writable, file system type, free space against the quota, hard links), and the kernel:
//! its version against what each run mode needs, seccomp notification, ptrace, then a real
//! `perch run --mode M -- true` in each mode (fuse, notify, ptrace: a mode that does not work
//! here is a warning with perch's own reason) and the mode `--mode auto` picks. It fails only
//! when no mode works.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use perch_cvmfs::fetch::{FetchOptions, Fetcher, Proxy};

use crate::exit::Fail;
use crate::mounts::{Client, ClientArgs};

/// `perch doctor` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Repositories to check (default: CVMFS_REPOSITORIES).
    pub repositories: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Ok,
    Warn,
    Fail,
}

/// The report, printed as it goes.
struct Report {
    worst: Status,
}

impl Report {
    fn line(&mut self, status: Status, subject: &str, detail: &str) {
        let tag = match status {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{tag:<4} {subject}: {detail}");
        let _ = out.flush();
        self.worst = self.worst.max(status);
    }
}

/// Runs `perch doctor`.
pub fn doctor(args: DoctorArgs) -> Result<ExitCode, Fail> {
    let mut client = Client::new(args.client.clone());
    let mut r = Report { worst: Status::Ok };
    let mut repos = args.repositories.clone();
    if repos.is_empty() {
        repos = client.configured();
    }
    if repos.is_empty() {
        r.line(
            Status::Warn,
            "repositories",
            "none given and CVMFS_REPOSITORIES is empty: name repositories (perch doctor FQRN…)",
        );
    }
    let mut caches: Vec<(PathBuf, Option<u64>, bool)> = Vec::new();
    for fqrn in &repos {
        if let Some(c) = repository(&mut client, fqrn, &mut r) {
            if !caches.iter().any(|(d, _, _)| *d == c.0) {
                caches.push(c);
            }
        }
    }
    if caches.is_empty() {
        if let Ok(root) = client.cache_root() {
            caches.push((root, None, false));
        }
    }
    for (dir, quota, alien) in &caches {
        cache(dir, *quota, *alien, &mut r);
    }
    kernel(&mut r);
    Ok(if r.worst == Status::Fail {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// The checks of one repository; returns its cache directory, quota and alien flag.
fn repository(
    client: &mut Client,
    fqrn: &str,
    r: &mut Report,
) -> Option<(PathBuf, Option<u64>, bool)> {
    let opts = match client.mount_options(fqrn) {
        Ok(o) => o,
        Err(e) => {
            r.line(
                Status::Fail,
                &format!("{fqrn} configuration"),
                &format!("{e:#}"),
            );
            return None;
        }
    };
    let proxies: Vec<Proxy> = opts.proxies.iter().flatten().cloned().collect();
    let proxies = if proxies.is_empty() {
        vec![Proxy::Direct]
    } else {
        proxies
    };
    r.line(
        Status::Ok,
        &format!("{fqrn} configuration"),
        &format!(
            "{} server(s), proxies {}, cache {}",
            opts.servers.len(),
            proxies
                .iter()
                .map(|p| match p {
                    Proxy::Direct => "DIRECT".to_string(),
                    Proxy::Url(u) => u.clone(),
                })
                .collect::<Vec<_>>()
                .join(", "),
            opts.cache_dir.display()
        ),
    );
    let mut keys_ok = true;
    for k in &opts.public_keys {
        let res = std::fs::read_to_string(k)
            .map_err(|e| e.to_string())
            .and_then(|t| perch_format::crypto::PublicKey::from_pem(&t).map_err(|e| e.to_string()));
        match res {
            Ok(_) => r.line(
                Status::Ok,
                &format!("{fqrn} public key"),
                &k.display().to_string(),
            ),
            Err(e) => {
                keys_ok = false;
                r.line(
                    Status::Fail,
                    &format!("{fqrn} public key"),
                    &format!("{}: {e}", k.display()),
                );
            }
        }
    }
    // Each server through each proxy, one attempt each, short timeouts.
    let probe = FetchOptions {
        max_retries: 0,
        timeout: opts.fetch.timeout.min(Duration::from_secs(5)),
        timeout_direct: opts.fetch.timeout_direct.min(Duration::from_secs(5)),
        ..opts.fetch.clone()
    };
    let mut results = Vec::new();
    for s in &opts.servers {
        for p in &proxies {
            let f = Fetcher::new(vec![s.clone()], vec![vec![p.clone()]], probe.clone());
            let t = Instant::now();
            let res = f.fetch_bytes(".cvmfspublished", 1 << 20);
            results.push((s.clone(), p.clone(), res.map(|b| b.len()), t.elapsed()));
        }
    }
    let any_ok = results.iter().any(|(_, _, res, _)| res.is_ok());
    for (s, p, res, t) in results {
        let subject = format!("{fqrn} server {s} via {p}");
        match res {
            Ok(n) => r.line(
                Status::Ok,
                &subject,
                &format!("HTTP 200, {n} bytes, {}", ms(t)),
            ),
            Err(e) => {
                let reason = e
                    .reason()
                    .map_or_else(|| e.to_string(), ToString::to_string);
                // Another server or proxy serving the repository keeps perch working.
                let st = if any_ok { Status::Warn } else { Status::Fail };
                r.line(st, &subject, &format!("{reason} after {}", ms(t)));
            }
        }
    }
    // The whitelist's expiry, read without verification (the mount below verifies).
    let f = Fetcher::new(opts.servers.clone(), opts.proxies.clone(), probe.clone());
    match f.fetch_bytes(".cvmfswhitelist", 1 << 20) {
        Ok(bytes) => match perch_format::whitelist::Whitelist::parse(&bytes) {
            Ok(w) => {
                let now = unix_now();
                let stamp = |secs: i64| perch_format::whitelist::utc_stamp(secs);
                let (st, note) = if w.expires.as_str() <= stamp(now).as_str() {
                    (Status::Fail, "expired: the repository cannot be mounted until its maintainer re-signs it")
                } else if w.expires.as_str() <= stamp(now + 3 * 86400).as_str() {
                    (Status::Warn, "expires within 3 days")
                } else {
                    (Status::Ok, "valid")
                };
                r.line(
                    st,
                    &format!("{fqrn} whitelist"),
                    &format!("{note}, expires {} UTC", pretty_stamp(&w.expires)),
                );
            }
            Err(e) => r.line(Status::Fail, &format!("{fqrn} whitelist"), &e.to_string()),
        },
        Err(e) => r.line(
            Status::Fail,
            &format!("{fqrn} whitelist"),
            &format!("cannot download: {e}"),
        ),
    }
    if keys_ok {
        match tempfile::Builder::new().prefix("perch-doctor-").tempdir() {
            Ok(tmp) => {
                let mut m = opts.clone();
                m.cache_dir = tmp.path().to_path_buf();
                m.alien = false;
                m.quota_limit = None;
                m.fetch = probe;
                let t = Instant::now();
                match perch_cvmfs::Repository::mount(m) {
                    Ok(repo) if repo.is_offline() => r.line(
                        Status::Fail,
                        &format!("{fqrn} signature"),
                        "no server reachable (offline)",
                    ),
                    Ok(repo) => r.line(
                        Status::Ok,
                        &format!("{fqrn} signature"),
                        &format!(
                            "manifest, certificate, whitelist and root catalog verified: revision {}, root hash {}, {}",
                            repo.revision(),
                            repo.root_hash(),
                            ms(t.elapsed())
                        ),
                    ),
                    Err(e) => r.line(
                        Status::Fail,
                        &format!("{fqrn} signature"),
                        &perch_cvmfs::error_chain(&e),
                    ),
                }
            }
            Err(e) => r.line(
                Status::Warn,
                &format!("{fqrn} signature"),
                &format!("not checked: no temporary directory: {e}"),
            ),
        }
    }
    Some((opts.cache_dir.clone(), opts.quota_limit, opts.alien))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `YYYYMMDDHHMMSS` as `YYYY-MM-DD HH:MM`.
fn pretty_stamp(s: &str) -> String {
    if s.len() == 14 && s.is_ascii() {
        format!(
            "{}-{}-{} {}:{}",
            &s[0..4],
            &s[4..6],
            &s[6..8],
            &s[8..10],
            &s[10..12]
        )
    } else {
        s.to_string()
    }
}

/// File system names by `statfs` magic (`linux/magic.h`).
fn fs_name(magic: u64) -> (&'static str, bool) {
    // (name, is a network or FUSE file system)
    match magic {
        0xef53 => ("ext2/3/4", false),
        0x5846_5342 => ("xfs", false),
        0x9123_683e => ("btrfs", false),
        0x0102_1994 => ("tmpfs", false),
        0x794c_7630 => ("overlayfs", false),
        0x2fc1_2fc1 => ("zfs", false),
        0x6969 => ("nfs", true),
        0x0bd0_0bd0 => ("lustre", true),
        0x4750_4653 => ("gpfs", true),
        0xff53_4d42 | 0xfe53_4d42 => ("cifs/smb", true),
        0x6573_5546 => ("fuse", true),
        0x0027_e0eb => ("cgroup", false),
        _ => ("other", false),
    }
}

fn cache(dir: &Path, quota: Option<u64>, alien: bool, r: &mut Report) {
    let what = if alien { "alien cache" } else { "cache" };
    let subject = format!("{what} {}", dir.display());
    if let Err(f) = crate::mounts::usable_cache(dir) {
        r.line(Status::Fail, &subject, &format!("{:#}", f.error));
        return;
    }
    r.line(Status::Ok, &subject, "writable");
    match rustix::fs::statfs(dir) {
        Ok(sf) => {
            #[allow(clippy::cast_sign_loss, clippy::unnecessary_cast)]
            let magic = sf.f_type as u64;
            let (name, remote) = fs_name(magic);
            let (st, note) = match (remote, alien) {
                (true, false) => (Status::Warn, "; a network or FUSE file system: a local disk is faster, or make it an alien cache (CVMFS_ALIEN_CACHE)"),
                _ => (Status::Ok, ""),
            };
            r.line(
                st,
                &format!("{what} file system"),
                &format!("{name} (0x{magic:x}){note}"),
            );
        }
        Err(e) => r.line(
            Status::Warn,
            &format!("{what} file system"),
            &format!("statfs: {e}"),
        ),
    }
    match rustix::fs::statvfs(dir) {
        Ok(v) => {
            let free = v.f_bavail.saturating_mul(v.f_frsize);
            let mb = |b: u64| b / (1 << 20);
            match quota {
                Some(q) if free < q => r.line(
                    Status::Warn,
                    &format!("{what} space"),
                    &format!("{} MB free, less than the quota of {} MB (CVMFS_QUOTA_LIMIT): downloads may fail with ENOSPC", mb(free), mb(q)),
                ),
                Some(q) => r.line(Status::Ok, &format!("{what} space"), &format!("{} MB free, quota {} MB", mb(free), mb(q))),
                None => r.line(Status::Ok, &format!("{what} space"), &format!("{} MB free, no quota", mb(free))),
            }
        }
        Err(e) => r.line(
            Status::Warn,
            &format!("{what} space"),
            &format!("statvfs: {e}"),
        ),
    }
    // perch run links the shadow tree to cache objects: hard links must work there.
    let probe = || -> std::io::Result<u64> {
        let t = tempfile::Builder::new()
            .prefix(".perch-doctor-")
            .tempdir_in(dir)?;
        let a = t.path().join("a");
        std::fs::write(&a, b"x")?;
        std::fs::hard_link(&a, t.path().join("b"))?;
        Ok(std::os::unix::fs::MetadataExt::nlink(&std::fs::metadata(
            &a,
        )?))
    };
    match probe() {
        Ok(2) => r.line(Status::Ok, &format!("{what} hard links"), "work"),
        Ok(n) => r.line(
            Status::Fail,
            &format!("{what} hard links"),
            &format!("a linked file shows {n} links, not 2"),
        ),
        Err(e) => r.line(
            Status::Fail,
            &format!("{what} hard links"),
            &format!("{e}: perch run needs hard links in its cache directory"),
        ),
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn kernel(r: &mut Report) {
    let release = read("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version: Vec<u32> = release
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .filter_map(|p| p.parse().ok())
        .collect();
    let at_least = |v: [u32; 2]| version.as_slice() >= v.as_slice();
    let needs: Vec<&str> = [
        ([5, 14], "notify mode needs 5.14"),
        ([4, 18], "fuse mode needs 4.18"),
        ([4, 8], "ptrace mode needs 4.8"),
    ]
    .iter()
    .filter(|(v, _)| !at_least(*v))
    .map(|(_, why)| *why)
    .collect();
    r.line(
        if at_least([4, 8]) {
            Status::Ok
        } else {
            Status::Fail
        },
        "kernel",
        &if needs.is_empty() {
            format!("Linux {release}")
        } else {
            format!("Linux {release}: {}", needs.join(", "))
        },
    );
    match read("/proc/sys/kernel/seccomp/actions_avail") {
        Some(a) if a.split_whitespace().any(|x| x == "user_notif") => {
            r.line(Status::Ok, "seccomp user notification", "available")
        }
        Some(a) => r.line(
            Status::Warn,
            "seccomp user notification",
            &format!("not offered (actions: {a}): no notify mode"),
        ),
        None => r.line(
            Status::Fail,
            "seccomp user notification",
            "/proc/sys/kernel/seccomp/actions_avail is missing: no seccomp",
        ),
    }
    let status = read("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    if field("Seccomp:") == "2" {
        r.line(Status::Warn, "seccomp filter", "perch itself runs under a seccomp filter (a container?): it must allow seccomp(2) and ptrace(2)");
    }
    let cap_ptrace = u64::from_str_radix(&field("CapEff:"), 16).is_ok_and(|c| c & (1 << 19) != 0);
    match read("/proc/sys/kernel/yama/ptrace_scope").as_deref() {
        None => r.line(Status::Ok, "ptrace", "allowed (no Yama)"),
        Some(s @ ("0" | "1")) => r.line(
            Status::Ok,
            "ptrace",
            &format!("allowed (Yama ptrace_scope {s}; perch traces only its own children)"),
        ),
        Some("2") if cap_ptrace => r.line(
            Status::Ok,
            "ptrace",
            "allowed (Yama ptrace_scope 2, perch has CAP_SYS_PTRACE)",
        ),
        Some(s) => r.line(
            Status::Warn,
            "ptrace",
            &format!(
                "forbidden (Yama ptrace_scope {s}): notify and ptrace modes need it, fuse mode does not"
            ),
        ),
    }
    // The decisive checks: perch run itself, on nothing but /bin/true, in each mode; one of
    // them must work, and auto says which it picks.
    let mut any = false;
    for mode in ["fuse", "notify", "ptrace"] {
        match perch_true(&["--mode", mode]) {
            Ok(_) => {
                any = true;
                r.line(
                    Status::Ok,
                    &format!("run mode {mode}"),
                    "perch run -- true works",
                )
            }
            Err(e) => r.line(Status::Warn, &format!("run mode {mode}"), &e),
        }
    }
    match perch_true(&["-d", "mode"]) {
        Ok(log) => {
            let picked = log
                .lines()
                .rev()
                .filter_map(|l| l.strip_prefix("perch[mode]: "))
                .filter_map(|l| l.split_once(" mode:").map(|(m, _)| m.to_string()))
                .find(|m| ["fuse", "notify", "ptrace"].contains(&m.as_str()))
                .unwrap_or_else(|| "?".into());
            r.line(
                Status::Ok,
                "run mode auto",
                &format!("perch run picks {picked} mode here"),
            )
        }
        Err(e) => r.line(
            if any { Status::Warn } else { Status::Fail },
            "run mode auto",
            &e,
        ),
    }
    if !any {
        r.line(Status::Fail, "run modes", "no mode of perch run works here");
    }
}

/// `perch run ARGS -- true` with an empty configuration and a throw-away cache; its stderr.
fn perch_true(args: &[&str]) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find perch itself: {e}"))?;
    let tmp = tempfile::Builder::new()
        .prefix("perch-doctor-")
        .tempdir()
        .map_err(|e| format!("no temporary directory: {e}"))?;
    let out = std::process::Command::new(exe)
        .arg("run")
        .arg("--config-dir")
        .arg(tmp.path().join("etc"))
        .arg("--cache")
        .arg(tmp.path().join("cache"))
        .args(args)
        .args(["--", "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot start perch run: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status.success() {
        Ok(stderr)
    } else {
        Err(format!(
            "perch run -- true failed ({}): {stderr}",
            out.status
        ))
    }
}
