//! From configuration to mounted repositories.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use perch_cvmfs::config::{Config, ConfigSources, Proxy as CfgProxy};
use perch_cvmfs::fetch::{FetchOptions, Proxy};
use perch_cvmfs::{MountOptions, Repository};

use crate::exit::{Classify, Fail, Failure};

/// Public keys of the big domains, built into the binary and written to the
/// cache base on first use so that `CVMFS_KEYS_DIR` can point at them.
const BUILTIN_KEYS: &[(&str, &str, &str)] = &[
    (
        "cern.ch",
        "cern-it1.cern.ch.pub",
        include_str!("../keys/cern.ch/cern-it1.cern.ch.pub"),
    ),
    (
        "cern.ch",
        "cern-it4.cern.ch.pub",
        include_str!("../keys/cern.ch/cern-it4.cern.ch.pub"),
    ),
    (
        "cern.ch",
        "cern-it5.cern.ch.pub",
        include_str!("../keys/cern.ch/cern-it5.cern.ch.pub"),
    ),
    (
        "egi.eu",
        "egi.eu.pub",
        include_str!("../keys/egi.eu/egi.eu.pub"),
    ),
    (
        "opensciencegrid.org",
        "opensciencegrid.org.pub",
        include_str!("../keys/opensciencegrid.org/opensciencegrid.org.pub"),
    ),
    (
        "eessi.io",
        "eessi.io.pub",
        include_str!("../keys/eessi.io/eessi.io.pub"),
    ),
];

/// Options shared by every command that reads repositories.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// Client configuration file(s) in CVMFS syntax, read after the system files.
    #[arg(long = "config", value_name = "FILE")]
    pub config: Vec<PathBuf>,
    /// Root of the CVMFS configuration files (default /etc/cvmfs).
    #[arg(long = "config-dir", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Cache directory (overrides CVMFS_CACHE_BASE / CVMFS_CACHE_DIR).
    #[arg(long = "cache", value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Alien cache directory shared by many jobs (overrides CVMFS_ALIEN_CACHE).
    #[arg(long = "alien-cache", value_name = "DIR")]
    pub alien_cache: Option<PathBuf>,
    /// Where repositories appear (default /cvmfs).
    #[arg(long = "mount-dir", value_name = "DIR", default_value = "/cvmfs")]
    pub mount_dir: PathBuf,
    /// Set by the parrot_run front end (no option of its own).
    #[arg(skip)]
    pub parrot: Option<crate::parrot::ParrotSetup>,
}

/// Configuration and mounted repositories of one perch process. Shared by the supervisor
/// threads of `perch run` through `&self`: nothing is locked while a repository mounts.
pub struct Client {
    args: ClientArgs,
    env: BTreeMap<String, String>,
    /// Where the built-in keys were written, once the first built-in domain needs them.
    keys_root: OnceLock<Option<PathBuf>>,
    extra: Vec<String>,
    mounted: Mutex<HashMap<String, Arc<Repository>>>,
    /// Unset until checked; then the fallback cache base, if the default cannot be created.
    fallback_base: OnceLock<Option<PathBuf>>,
}

impl Client {
    /// A client reading the process environment.
    pub fn new(args: ClientArgs) -> Client {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Client {
            args,
            env,
            keys_root: OnceLock::new(),
            extra: Vec::new(),
            mounted: Mutex::new(HashMap::new()),
            fallback_base: OnceLock::new(),
        }
    }

    /// When the per-user default cache base (`$XDG_CACHE_HOME/perch`, `~/.cache/perch`) is
    /// what applies and cannot be created, use `$TMPDIR/perch-<uid>` instead and say so once.
    fn settle_cache_base(&self) {
        if self.args.cache.is_some() || self.args.alien_cache.is_some() {
            return;
        }
        self.fallback_base
            .get_or_init(|| self.fallback_cache_base());
    }

    fn fallback_cache_base(&self) -> Option<PathBuf> {
        let cfg = self.config("").ok()?;
        // Only perch's own default falls back; a configured base or alien cache is the user's.
        if cfg.origin("CVMFS_CACHE_BASE") != Some(&perch_cvmfs::config::Origin::Builtin)
            || cfg.alien_cache().is_some()
        {
            return None;
        }
        let base = cfg.cache_base();
        let e = std::fs::create_dir_all(&base).err()?;
        let uid = ConfigSources::new("/").uid;
        let tmp = perch_cvmfs::config::tmp_cache_base(&self.env, uid);
        if tmp == base {
            return None;
        }
        // Once per process: `perch run` in auto mode reads the configuration with a second
        // client when fuse mode is unavailable and it falls back to notify mode.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(
                "cannot create the default cache directory {}: {e}; using {} (choose one with --cache DIR or XDG_CACHE_HOME)",
                base.display(),
                tmp.display()
            )
        });
        Some(tmp)
    }

    /// The mount directory (`/cvmfs`).
    pub fn mount_dir(&self) -> &Path {
        &self.args.mount_dir
    }

    fn sources(&self, fqrn: &str) -> ConfigSources {
        let mut s = ConfigSources::new(
            self.args
                .config_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/etc/cvmfs")),
        );
        for f in &self.args.config {
            s = s.with_extra_file(f.clone());
        }
        // Only repositories of the built-in domains need the built-in keys on disk.
        let builtin = BUILTIN_KEYS
            .iter()
            .any(|(d, _, _)| fqrn.ends_with(&format!(".{d}")));
        if builtin {
            self.keys_root.get_or_init(|| self.install_builtin_keys());
        }
        if let Some(Some(k)) = self.keys_root.get() {
            s = s.with_builtin_keys_root(k.clone());
        }
        if let Some(Some(b)) = self.fallback_base.get() {
            s = s.with_default_cache_base(b.clone());
        }
        if let Some(p) = &self.args.parrot {
            // Parrot reads no /etc/cvmfs: its options are the whole configuration.
            s.system_files = false;
            s.overrides = p.settings(fqrn);
        }
        s
    }

    /// Write the built-in keys below the default cache base (once).
    fn install_builtin_keys(&self) -> Option<PathBuf> {
        let base = match self.fallback_base.get() {
            Some(Some(b)) => b.clone(),
            _ => perch_cvmfs::config::default_cache_base(&self.env, None),
        };
        let root = base.join("keys");
        for (domain, name, pem) in BUILTIN_KEYS {
            let dir = root.join(domain);
            let path = dir.join(name);
            if path.exists() {
                continue;
            }
            std::fs::create_dir_all(&dir).ok()?;
            let tmp = dir.join(format!(".{name}.{}", std::process::id()));
            std::fs::write(&tmp, pem).ok()?;
            std::fs::rename(&tmp, &path).ok()?;
        }
        Some(root)
    }

    /// The effective configuration of `fqrn`.
    pub fn config(&self, fqrn: &str) -> Result<Config> {
        let sources = self.sources(fqrn);
        Config::resolve(fqrn, &sources, &self.env).with_context(|| {
            if fqrn.is_empty() {
                "client configuration".to_string()
            } else {
                format!("configuration of {fqrn}")
            }
        })
    }

    /// Repositories to show in `/cvmfs` (CVMFS_REPOSITORIES).
    pub fn configured(&self) -> Vec<String> {
        self.config("")
            .map(|c| c.repositories())
            .unwrap_or_default()
    }

    /// Also show these repositories in `/cvmfs` (`perch run -r FQRN`).
    pub fn add_repositories(&mut self, names: &[String]) {
        self.extra.extend(names.iter().cloned());
    }

    /// Repositories named on the command line.
    pub fn extra_repositories(&self) -> Vec<String> {
        self.extra.clone()
    }

    /// Whether `fqrn` has a server configured (else it does not exist for us).
    pub fn has_server(&self, fqrn: &str) -> bool {
        if let Some(p) = &self.args.parrot {
            if !p.repos.covers(fqrn) {
                return false;
            }
        }
        self.config(fqrn)
            .map(|c| !c.server_urls().is_empty())
            .unwrap_or(false)
    }

    /// The directory that holds the caches (and the shadow tree): the alien
    /// cache, `--cache`, or the configured cache base.
    pub fn cache_root(&self) -> Result<PathBuf> {
        if let Some(a) = &self.args.alien_cache {
            return Ok(a.clone());
        }
        if let Some(c) = &self.args.cache {
            return Ok(c.clone());
        }
        self.settle_cache_base();
        let cfg = self.config("")?;
        Ok(cfg.alien_cache().unwrap_or_else(|| cfg.cache_base()))
    }

    /// Every cache directory this client may write for the repositories it knows (configured
    /// and named on the command line), and the cache root: what a program must not change.
    /// Existing directories only, outermost first, none inside another.
    pub fn cache_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .configured_cache_dirs()
            .into_iter()
            .filter_map(|d| std::fs::canonicalize(d).ok())
            .filter(|d| d.is_dir())
            .collect();
        dirs.sort();
        dirs.dedup();
        let mut out: Vec<PathBuf> = Vec::new();
        for d in dirs {
            if !out.iter().any(|o| d.starts_with(o)) {
                out.push(d);
            }
        }
        out
    }

    /// The cache root and every repository's cache directory as configured, whether they exist
    /// yet or not (a repository's is made when it is first mounted).
    pub fn configured_cache_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.cache_root().into_iter().collect();
        let mut names = self.configured();
        names.extend(self.extra_repositories());
        for fqrn in names {
            if let Ok(o) = self.mount_options(&fqrn) {
                dirs.push(o.cache_dir);
            }
        }
        dirs
    }

    /// Mount options for `fqrn` from the configuration and command line.
    pub fn mount_options(&self, fqrn: &str) -> Result<MountOptions> {
        self.settle_cache_base();
        let cfg = self.config(fqrn)?;
        let servers = cfg.server_urls();
        if servers.is_empty() {
            bail!(
                "no server configured for {fqrn} (set CVMFS_SERVER_URL, e.g. with --config FILE)"
            );
        }
        let mut proxies = Vec::new();
        for group in cfg.proxy_groups()? {
            let mut members = Vec::new();
            for p in group {
                members.push(match p {
                    CfgProxy::Direct => Proxy::Direct,
                    CfgProxy::Url(u) => Proxy::Url(u),
                    CfgProxy::Auto => {
                        tracing::warn!(
                            "CVMFS_HTTP_PROXY=auto (PAC discovery) is not supported; using DIRECT"
                        );
                        Proxy::Direct
                    }
                });
            }
            proxies.push(members);
        }
        let alien = self.args.alien_cache.clone().or_else(|| cfg.alien_cache());
        let cache_dir = match (&self.args.cache, &alien) {
            (_, Some(a)) => a.clone(),
            (Some(c), None) => c.join(fqrn),
            (None, None) => cfg.cache_dir()?,
        };
        let keys = cfg.public_keys()?;
        if keys.is_empty() {
            bail!("no public key for {fqrn} (set CVMFS_PUBLIC_KEY or CVMFS_KEYS_DIR)");
        }
        let fetch = fetch_options(&cfg)?;
        // An alien cache is unmanaged (spec §11.6); the quota applies to local caches.
        let quota_limit = if alien.is_some() {
            None
        } else {
            cfg.quota_limit_mb()?.map(|mb| mb.saturating_mul(1 << 20))
        };
        Ok(MountOptions {
            fqrn: fqrn.to_string(),
            servers,
            proxies,
            public_keys: keys,
            cache_dir,
            alien: alien.is_some(),
            tag: cfg.repository_tag().map(str::to_string),
            date: None,
            fetch,
            quota_limit,
            max_ttl: cfg.max_ttl()?,
            offline_retry: cfg.offline_retry()?,
            trusted_uids: cfg.trusted_uids()?,
        })
    }

    /// Mount `fqrn` (once per process).
    pub fn mount(&self, fqrn: &str) -> Result<Arc<Repository>, Fail> {
        self.try_mount(fqrn)?.map_err(|e| {
            Fail::new(
                Failure::Mount,
                anyhow!("cannot mount {fqrn}: {}", perch_cvmfs::error_chain(&e)),
            )
        })
    }

    /// Mount `fqrn`, or `None` when no server has a manifest for it (every
    /// server answered "not found"): for programs that is ENOENT, as with the
    /// real client's autofs mount point, not an I/O error.
    pub fn mount_or_absent(&self, fqrn: &str) -> Result<Option<Arc<Repository>>, Fail> {
        match self.try_mount(fqrn)? {
            Ok(r) => Ok(Some(r)),
            Err(perch_cvmfs::RepoError::ManifestFetch(e)) if e.is_not_found() => Ok(None),
            Err(e) => Err(Fail::new(
                Failure::Mount,
                anyhow!("cannot mount {fqrn}: {}", perch_cvmfs::error_chain(&e)),
            )),
        }
    }

    /// Mount once per process; the outer error is the configuration's.
    fn try_mount(
        &self,
        fqrn: &str,
    ) -> Result<Result<Arc<Repository>, perch_cvmfs::RepoError>, Fail> {
        if let Some(r) = self
            .mounted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(fqrn)
        {
            return Ok(Ok(r.clone()));
        }
        let opts = self.mount_options(fqrn).or_fail(Failure::Config)?;
        usable_cache(&opts.cache_dir)?;
        tracing::debug!(target: "cvmfs", fqrn, servers = %opts.servers.join(";"), cache = %opts.cache_dir.display(), "mounting");
        let repo = match Repository::mount(opts) {
            Ok(r) => Arc::new(r),
            Err(e) => return Ok(Err(e)),
        };
        tracing::debug!(target: "cvmfs", fqrn, revision = repo.revision(), root_hash = %repo.root_hash(), offline = repo.is_offline(), "mounted");
        // Callers mounting one name at once (perch-vfs serialises them) keep the first.
        let mut mounted = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Ok(mounted.entry(fqrn.to_string()).or_insert(repo).clone()))
    }

    /// Split `/cvmfs/<fqrn>/rest` into `(fqrn, "/rest")`.
    pub fn split_path<'a>(&self, path: &'a str) -> Result<(&'a str, &'a str)> {
        let md = self.args.mount_dir.to_string_lossy();
        let md = md.trim_end_matches('/');
        let rest = path
            .strip_prefix(md)
            .filter(|r| r.starts_with('/'))
            .ok_or_else(|| anyhow!("{path}: not below {md}/ (use {md}/<repository>/...)"))?;
        let rest = rest.trim_start_matches('/');
        let (fqrn, inner) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if fqrn.is_empty() {
            bail!("{path}: no repository name (use {md}/<repository>/...)");
        }
        Ok((fqrn, inner))
    }
}

/// Creates `dir` if needed and checks that perch can write there; else an unusable cache
/// (exit code 208, with the hint naming `--cache` and `XDG_CACHE_HOME`).
pub fn usable_cache(dir: &Path) -> Result<(), Fail> {
    std::fs::create_dir_all(dir)
        .and_then(|()| tempfile::tempfile_in(dir).map(drop))
        .map_err(|e| {
            Fail::cache(format!(
                "cannot use the cache directory {}: {e}",
                dir.display()
            ))
        })
}

/// Network parameters from the configuration (spec §10.3, §10.4).
fn fetch_options(cfg: &Config) -> Result<FetchOptions> {
    let d = FetchOptions::default();
    let ms = |key: &str, default: Duration| -> Result<Duration> {
        Ok(match cfg.int(key)? {
            Some(v) => Duration::from_millis(u64::try_from(v.max(0)).unwrap_or(0) * 1000),
            None => default,
        })
    };
    Ok(FetchOptions {
        timeout: ms("CVMFS_TIMEOUT", d.timeout)?,
        timeout_direct: ms("CVMFS_TIMEOUT_DIRECT", d.timeout_direct)?,
        low_speed_limit: cfg
            .int("CVMFS_LOW_SPEED_LIMIT")?
            .map_or(d.low_speed_limit, |v| u64::try_from(v.max(0)).unwrap_or(0)),
        max_retries: cfg.int("CVMFS_MAX_RETRIES")?.map_or(d.max_retries, |v| {
            u32::try_from(v.clamp(0, 100)).unwrap_or(0)
        }),
        backoff_init: ms("CVMFS_BACKOFF_INIT", d.backoff_init)?,
        backoff_max: ms("CVMFS_BACKOFF_MAX", d.backoff_max)?,
        proxy_reset_after: ms("CVMFS_PROXY_RESET_AFTER", d.proxy_reset_after)?,
        host_reset_after: ms("CVMFS_HOST_RESET_AFTER", d.host_reset_after)?,
        follow_redirects: cfg.bool_or("CVMFS_FOLLOW_REDIRECTS", false)?,
        prefer_ipv6: cfg.get("CVMFS_IPFAMILY_PREFER").map(str::trim) == Some("6"),
    })
}
