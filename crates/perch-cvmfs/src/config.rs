//! CernVM-FS client configuration (`CVMFS_*` parameters), read the libcvmfs way (spec §12).
//!
//! Owns: parsing parameter files, the file order of spec §12.1, `--config` files, the
//! environment, perch's built-in defaults, `@fqrn@`/`@org@` substitution and typed access to
//! the merged values, each with its [`Origin`]. Knows nothing about the network, mounting or
//! the cache contents; the only I/O is reading configuration files and listing key directories.
//!
//! # Precedence (later wins)
//!
//! 1. built-in defaults ([`builtin_defaults`]): global values, per-user cache base and, for the
//!    domains `cern.ch`, `egi.eu`, `opensciencegrid.org` and `eessi.io`, the stratum 1 list of
//!    spec §6, `CVMFS_USE_GEOAPI=yes` and (if [`ConfigSources::builtin_keys_root`] is set)
//!    `CVMFS_KEYS_DIR=<root>/<domain>`;
//! 2. the system files under [`ConfigSources::etc_root`] in the order of spec §12.1 (the
//!    config repository steps only if [`ConfigSources::config_repo_etc`] is given);
//! 3. the `--config` files, in the given order;
//! 4. the environment variables `CVMFS_*` (passed in as a map: the library never reads the
//!    process environment).
//!
//! Files are parsed without a shell (spec §12.2): every assignment counts, the last one wins,
//! conditionals and `$VAR` are not evaluated. Then `@fqrn@` and `@org@` are substituted in all
//! values.
//!
//! # Example
//!
//! ```
//! use std::collections::BTreeMap;
//! use perch_cvmfs::config::{Config, ConfigSources};
//!
//! let sources = ConfigSources::new("/nonexistent/etc/cvmfs");
//! let env = BTreeMap::from([("HOME".to_string(), "/home/ada".to_string())]);
//! let config = Config::resolve("sft.cern.ch", &sources, &env).unwrap();
//! assert_eq!(
//!     config.server_urls()[0],
//!     "http://cvmfs-stratum-one.cern.ch/cvmfs/sft.cern.ch"
//! );
//! assert_eq!(
//!     config.cache_dir().unwrap(),
//!     std::path::Path::new("/home/ada/.cache/perch/sft.cern.ch")
//! );
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::debug;

/// Default root of the system configuration files.
pub const DEFAULT_ETC_ROOT: &str = "/etc/cvmfs";

/// Quota in MB used when `CVMFS_QUOTA_LIMIT` is set but empty (value of `default.conf`).
pub const DEFAULT_QUOTA_LIMIT_MB: u64 = 4000;

/// Global built-in defaults (lowest precedence), besides `CVMFS_CACHE_BASE`.
///
/// These are the values of the stock `default.conf` (spec §12.3), except `CVMFS_SHARED_CACHE`:
/// perch runs unprivileged and does not share a cache between repositories by default.
pub const GLOBAL_DEFAULTS: &[(&str, &str)] = &[
    ("CVMFS_TIMEOUT", "5"),
    ("CVMFS_TIMEOUT_DIRECT", "10"),
    ("CVMFS_MAX_RETRIES", "1"),
    ("CVMFS_BACKOFF_INIT", "2"),
    ("CVMFS_BACKOFF_MAX", "10"),
    ("CVMFS_QUOTA_LIMIT", "4000"),
    ("CVMFS_SHARED_CACHE", "no"),
    // Not in default.conf but compiled into the real client; listed so `config show` names them.
    ("CVMFS_MAX_TTL", "0"),
    // perch's own: seconds between network retries while offline (the real client's fixed 180 s).
    ("CVMFS_OFFLINE_RETRY", "180"),
];

/// Seconds between network retries of an offline mount, as the real client does (spec §11.4).
pub const DEFAULT_OFFLINE_RETRY_SECS: u64 = 180;

/// Stratum 1 hosts of the domains perch knows out of the box (spec §6).
///
/// Each host becomes `http://HOST/cvmfs/@fqrn@` in `CVMFS_SERVER_URL`.
pub const BUILTIN_DOMAINS: &[(&str, &[&str])] = &[
    (
        "cern.ch",
        &[
            "cvmfs-stratum-one.cern.ch",
            "cernvmfs.gridpp.rl.ac.uk",
            "cvmfs-s1bnl.opensciencegrid.org",
            "cvmfs-s1fnal.opensciencegrid.org",
        ],
    ),
    (
        "egi.eu",
        &[
            "cvmfs-egi.gridpp.rl.ac.uk:8000",
            "klei.nikhef.nl:8000",
            "cvmfsrepo.lcg.triumf.ca:8000",
            "cvmfs-stratum-one.ihep.ac.cn:8000",
        ],
    ),
    (
        "opensciencegrid.org",
        &[
            "cvmfs-egi.gridpp.rl.ac.uk:8000",
            "klei.nikhef.nl:8000",
            "cvmfs-s1bnl.opensciencegrid.org:8000",
            "cvmfs-s1fnal.opensciencegrid.org:8000",
            "cvmfs-stratum-one.ihep.ac.cn:8000",
        ],
    ),
    (
        "eessi.io",
        &[
            "aws-eu-central-s1.eessi.science",
            "azure-us-east-s1.eessi.science",
            "ral-uk-s1.eessi.science:8000",
        ],
    ),
];

/// Errors of configuration resolution and typed access.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file exists (or was given with `--config`) but cannot be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A directory that must be listed (`default.d`, a keys directory) cannot be.
    #[error("cannot list directory {}", path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The repository name is not a valid fully qualified repository name.
    #[error("invalid repository name {fqrn:?}: {reason}")]
    InvalidFqrn {
        /// The name as given.
        fqrn: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A parameter has a value its typed getter cannot use.
    #[error("invalid value {value:?} for {key} (from {origin}): expected {expected}")]
    InvalidValue {
        /// The parameter name.
        key: String,
        /// The effective value (after substitution).
        value: String,
        /// Where the value came from (file and line, environment, built-in).
        origin: Origin,
        /// What a valid value looks like.
        expected: &'static str,
    },
}

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line of a system configuration file (spec §12.1 steps 1–10).
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A line of a file given with `--config`.
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// An environment variable of the same name.
    Env,
    /// perch's built-in defaults.
    Builtin,
    /// parrot_run's `PARROT_CVMFS_REPO`, `-r`, `-p`/`HTTP_PROXY` or `-T`
    /// ([`ConfigSources::overrides`]).
    Parrot,
}

impl Origin {
    /// The file the value was read from, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Origin::File { path, .. } | Origin::ConfigFile { path, .. } => Some(path),
            Origin::Env | Origin::Builtin | Origin::Parrot => None,
        }
    }

    /// The 1-based line the value was read from, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            Origin::File { line, .. } | Origin::ConfigFile { line, .. } => Some(*line),
            Origin::Env | Origin::Builtin | Origin::Parrot => None,
        }
    }

    /// The source as `cvmfs_config showconfig` names it: a file path, `environment` or
    /// `built-in default`.
    fn source_name(&self) -> String {
        match self {
            Origin::File { path, .. } | Origin::ConfigFile { path, .. } => {
                path.display().to_string()
            }
            Origin::Env => "environment".to_string(),
            Origin::Builtin => "built-in default".to_string(),
            Origin::Parrot => "parrot_run options".to_string(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::ConfigFile { path, line } => write!(f, "--config {}:{line}", path.display()),
            Origin::Env => f.write_str("environment"),
            Origin::Builtin => f.write_str("built-in default"),
            Origin::Parrot => f.write_str("parrot_run options"),
        }
    }
}

/// One assignment found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Parameter name (after stripping `export `/`readonly `).
    pub key: String,
    /// Value (trimmed, one pair of outer quotes stripped, not substituted).
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

/// Parses the text of a configuration file the libcvmfs way (spec §12.2).
///
/// Per line: cut at the first `#` (even inside quotes), split at the first `=`, trim both
/// sides, strip leading `export `/`readonly ` from the name, strip one pair of matching outer
/// `"` or `'` from the value if it is longer than 2 characters (so `""` stays `""`, as in
/// libcvmfs). Lines without `=` or with an invalid name are ignored and logged at debug level.
/// Every assignment is returned, in file order.
pub fn parse_str(text: &str) -> Vec<Assignment> {
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        match parse_line(raw) {
            Ok(Some((key, value))) => out.push(Assignment { key, value, line }),
            Ok(None) => {}
            Err(reason) => debug!(line, text = raw, reason, "ignoring config line"),
        }
    }
    out
}

/// One line: `Ok(None)` for blank/comment lines, `Err(reason)` for invalid ones.
fn parse_line(raw: &str) -> Result<Option<(String, String)>, &'static str> {
    let uncommented = raw.split('#').next().unwrap_or_default().trim();
    if uncommented.is_empty() {
        return Ok(None);
    }
    let (name, value) = uncommented.split_once('=').ok_or("no '='")?;
    let key = strip_keywords(name.trim());
    if !is_valid_key(key) {
        return Err("invalid parameter name");
    }
    Ok(Some((
        key.to_string(),
        strip_quotes(value.trim()).to_string(),
    )))
}

/// Strips any leading `export`/`readonly` keywords (each followed by white space).
fn strip_keywords(mut name: &str) -> &str {
    'outer: loop {
        for keyword in ["export", "readonly"] {
            if let Some(rest) = name.strip_prefix(keyword) {
                if rest.starts_with(char::is_whitespace) {
                    name = rest.trim_start();
                    continue 'outer;
                }
            }
        }
        return name;
    }
}

/// A shell-style variable name: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Strips one pair of matching outer quotes if the value is longer than 2 bytes.
fn strip_quotes(value: &str) -> &str {
    let bytes = value.as_bytes();
    if bytes.len() > 2 {
        let (first, last) = (bytes[0], bytes[bytes.len() - 1]);
        if first == last && (first == b'"' || first == b'\'') {
            // Both ends are ASCII, so these are char boundaries.
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// Where configuration comes from, besides the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSources {
    /// Root of the system files, [`DEFAULT_ETC_ROOT`] by default (tests use a temp dir).
    pub etc_root: PathBuf,
    /// Read the system files under `etc_root`. `false` reads only the `--config` files (like
    /// `cvmfs2 -o config=A:B`), the environment and the built-in defaults.
    pub system_files: bool,
    /// The `etc/cvmfs` directory of the mounted config repository (`<cr>` in spec §12.1),
    /// if the caller has made one available. Its files are read only if
    /// `CVMFS_CONFIG_REPOSITORY` is set after steps 1–2 and differs from the repository being
    /// configured; see [`ConfigSources::config_repository`]. `None` omits steps 3, 5 and 8.
    pub config_repo_etc: Option<PathBuf>,
    /// Files given with `--config`, read after the system files, in this order.
    pub extra_files: Vec<PathBuf>,
    /// Directory holding perch's copies of the domain keys as `<root>/<domain>/*.pub`; sets
    /// the built-in `CVMFS_KEYS_DIR` of the known domains.
    pub builtin_keys_root: Option<PathBuf>,
    /// User id for the last-resort cache base `$TMPDIR/perch-<uid>`.
    pub uid: Option<u32>,
    /// Replaces the per-user default of `CVMFS_CACHE_BASE` (the caller found the default
    /// cannot be created and falls back to [`tmp_cache_base`]).
    pub default_cache_base: Option<PathBuf>,
    /// Parameters set last, over the environment (the parrot_run front end's translation of
    /// its options, [`crate::parrot`]).
    pub overrides: Vec<(String, String)>,
}

impl Default for ConfigSources {
    fn default() -> Self {
        ConfigSources::new(DEFAULT_ETC_ROOT)
    }
}

impl ConfigSources {
    /// System files under `etc_root`, no `--config` files, no config repository, no built-in
    /// keys; `uid` is the owner of `/proc/self` (the effective uid), if readable.
    pub fn new(etc_root: impl Into<PathBuf>) -> Self {
        ConfigSources {
            etc_root: etc_root.into(),
            system_files: true,
            config_repo_etc: None,
            extra_files: Vec::new(),
            builtin_keys_root: None,
            uid: current_uid(),
            default_cache_base: None,
            overrides: Vec::new(),
        }
    }

    /// Sets [`ConfigSources::default_cache_base`].
    pub fn with_default_cache_base(mut self, base: impl Into<PathBuf>) -> Self {
        self.default_cache_base = Some(base.into());
        self
    }

    /// Adds a `--config` file (read after those added before).
    pub fn with_extra_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.extra_files.push(path.into());
        self
    }

    /// Sets [`ConfigSources::builtin_keys_root`].
    pub fn with_builtin_keys_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.builtin_keys_root = Some(root.into());
        self
    }

    /// Sets [`ConfigSources::config_repo_etc`].
    pub fn with_config_repo_etc(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config_repo_etc = Some(dir.into());
        self
    }

    /// The config repository that applies to `fqrn`: `CVMFS_CONFIG_REPOSITORY` as set by
    /// `default.conf` and `default.d/*.conf` (frozen there, spec §12.1), if non-empty and not
    /// `fqrn` itself. A caller that can mount it passes its `etc/cvmfs` as
    /// [`ConfigSources::config_repo_etc`].
    pub fn config_repository(&self, fqrn: &str) -> Result<Option<String>, ConfigError> {
        if !self.system_files {
            return Ok(None);
        }
        let mut layer = Layer::default();
        for path in self.default_files()? {
            layer.apply_file(&path, FileKind::System, None)?;
        }
        Ok(layer
            .values
            .remove(CONFIG_REPOSITORY)
            .map(|setting| setting.value)
            .filter(|name| !name.is_empty() && name != fqrn))
    }

    /// Steps 1–2: `default.conf`, then `default.d/*.conf` sorted by name.
    fn default_files(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let mut files = vec![self.etc_root.join("default.conf")];
        files.extend(conf_files_in(&self.etc_root.join("default.d"))?);
        Ok(files)
    }
}

const CONFIG_REPOSITORY: &str = "CVMFS_CONFIG_REPOSITORY";

/// The effective uid, read as the owner of `/proc/self` (std has no `geteuid`).
fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// `*.conf` regular files directly in `dir`, sorted; a missing directory is empty.
fn conf_files_in(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfigError::ReadDir {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::ReadDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let is_conf = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.ends_with(".conf") && name.len() > ".conf".len());
        if is_conf && !path.is_dir() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The built-in defaults for `fqrn` (lowest precedence), before substitution.
///
/// `env` is the process environment as a map. The cache base is per user, since perch runs
/// unprivileged: `$XDG_CACHE_HOME/perch` if that is an absolute path, else
/// `$HOME/.cache/perch` if `HOME` is absolute, else `$TMPDIR/perch-<uid>` (`TMPDIR` defaulting
/// to `/tmp`, `-<uid>` omitted when the uid is unknown).
pub fn builtin_defaults(
    fqrn: &str,
    sources: &ConfigSources,
    env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = GLOBAL_DEFAULTS
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    let base = match &sources.default_cache_base {
        Some(b) => b.clone(),
        None => default_cache_base(env, sources.uid),
    };
    out.insert("CVMFS_CACHE_BASE".to_string(), base.display().to_string());
    let domain = fqrn.split_once('.').map(|(_, domain)| domain);
    if let Some((domain, hosts)) = BUILTIN_DOMAINS.iter().find(|(d, _)| Some(*d) == domain) {
        let urls: Vec<String> = hosts
            .iter()
            .map(|host| format!("http://{host}/cvmfs/@fqrn@"))
            .collect();
        out.insert("CVMFS_SERVER_URL".to_string(), urls.join(";"));
        out.insert("CVMFS_USE_GEOAPI".to_string(), "yes".to_string());
        if let Some(root) = &sources.builtin_keys_root {
            out.insert(
                "CVMFS_KEYS_DIR".to_string(),
                root.join(domain).display().to_string(),
            );
        }
    }
    out
}

/// The per-user default of `CVMFS_CACHE_BASE`; see [`builtin_defaults`].
pub fn default_cache_base(env: &BTreeMap<String, String>, uid: Option<u32>) -> PathBuf {
    let absolute = |name: &str| {
        env.get(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    if let Some(xdg) = absolute("XDG_CACHE_HOME") {
        return xdg.join("perch");
    }
    if let Some(home) = absolute("HOME") {
        return home.join(".cache").join("perch");
    }
    tmp_cache_base(env, uid)
}

/// The last-resort cache base `$TMPDIR/perch-<uid>` (`TMPDIR` defaulting to `/tmp`), also
/// the fallback when the per-user default cannot be created (a batch account whose `$HOME`
/// is read-only).
pub fn tmp_cache_base(env: &BTreeMap<String, String>, uid: Option<u32>) -> PathBuf {
    let tmp = env
        .get("TMPDIR")
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    match uid {
        Some(uid) => tmp.join(format!("perch-{uid}")),
        None => tmp.join("perch"),
    }
}

/// Checks `fqrn` and returns its domain (everything after the first dot); `None` for `""`.
fn domain_of(fqrn: &str) -> Result<Option<&str>, ConfigError> {
    if fqrn.is_empty() {
        return Ok(None);
    }
    let invalid = |reason| ConfigError::InvalidFqrn {
        fqrn: fqrn.to_string(),
        reason,
    };
    if !fqrn
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(invalid(
            "only letters, digits, '.', '-' and '_' are allowed",
        ));
    }
    if fqrn.starts_with('.') || fqrn.ends_with('.') || fqrn.contains("..") {
        return Err(invalid("empty name component"));
    }
    match fqrn.split_once('.') {
        Some((_, domain)) => Ok(Some(domain)),
        None => Err(invalid("a fully qualified name contains a dot")),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Setting {
    value: String,
    origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    /// Under etc_root or the config repository: a missing file is skipped.
    System,
    /// `--config`: the file must exist.
    Extra,
}

/// Values being merged.
#[derive(Debug, Default)]
struct Layer {
    values: BTreeMap<String, Setting>,
}

impl Layer {
    fn set(&mut self, key: String, value: String, origin: Origin) {
        self.values.insert(key, Setting { value, origin });
    }

    /// Reads one file; `frozen` is the protected value of `CVMFS_CONFIG_REPOSITORY`.
    fn apply_file(
        &mut self,
        path: &Path,
        kind: FileKind,
        frozen: Option<&str>,
    ) -> Result<(), ConfigError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if kind == FileKind::System && e.kind() == io::ErrorKind::NotFound => {
                return Ok(())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        debug!(path = %path.display(), "reading config file");
        let text = String::from_utf8_lossy(&bytes);
        for Assignment { key, value, line } in parse_str(&text) {
            if let Some(frozen) = frozen {
                if key == CONFIG_REPOSITORY && value != frozen {
                    debug!(path = %path.display(), line, value,
                        "ignoring change of protected CVMFS_CONFIG_REPOSITORY");
                    continue;
                }
            }
            let path = path.to_path_buf();
            let origin = match kind {
                FileKind::System => Origin::File { path, line },
                FileKind::Extra => Origin::ConfigFile { path, line },
            };
            self.set(key, value, origin);
        }
        Ok(())
    }
}

/// One element of a proxy group (spec §10.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// `DIRECT`: no proxy.
    Direct,
    /// `auto`: to be replaced by the result of PAC discovery (`CVMFS_PAC_URLS`).
    Auto,
    /// A proxy URL as written, e.g. `http://squid.example.org:3128`.
    Url(String),
}

/// The merged configuration of one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    fqrn: String,
    etc_root: PathBuf,
    values: BTreeMap<String, Setting>,
}

impl Config {
    /// Merges all sources for `fqrn` (see the module docs for the order) and substitutes
    /// `@fqrn@`/`@org@` (org = the part of `fqrn` before the first dot).
    ///
    /// `fqrn` may be empty: then only the global steps are read (no domain or repository
    /// files) and nothing is substituted, as `cvmfs_config` does without a repository. `env`
    /// is the process environment; only its `CVMFS_*` entries are parameters, `HOME`,
    /// `XDG_CACHE_HOME` and `TMPDIR` feed the default cache base.
    pub fn resolve(
        fqrn: &str,
        sources: &ConfigSources,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let domain = domain_of(fqrn)?;
        let mut layer = Layer::default();
        for (key, value) in builtin_defaults(fqrn, sources, env) {
            layer.set(key, value, Origin::Builtin);
        }
        if sources.system_files {
            let etc = &sources.etc_root;
            for path in sources.default_files()? {
                layer.apply_file(&path, FileKind::System, None)?;
            }
            // Frozen after step 2 (cvmfs locks a missing value to "").
            let frozen = layer
                .values
                .get(CONFIG_REPOSITORY)
                .map(|s| s.value.clone())
                .unwrap_or_default();
            let cr = match &sources.config_repo_etc {
                Some(dir) if !fqrn.is_empty() && !frozen.is_empty() && frozen != fqrn => {
                    Some(dir.as_path())
                }
                _ => None,
            };
            let mut steps: Vec<PathBuf> = Vec::new();
            steps.extend(cr.map(|cr| cr.join("default.conf")));
            steps.push(etc.join("default.local"));
            if let Some(domain) = domain {
                steps.extend(cr.map(|cr| cr.join("domain.d").join(format!("{domain}.conf"))));
                steps.push(etc.join("domain.d").join(format!("{domain}.conf")));
                steps.push(etc.join("domain.d").join(format!("{domain}.local")));
                steps.extend(cr.map(|cr| cr.join("config.d").join(format!("{fqrn}.conf"))));
                steps.push(etc.join("config.d").join(format!("{fqrn}.conf")));
                steps.push(etc.join("config.d").join(format!("{fqrn}.local")));
            }
            for path in steps {
                layer.apply_file(&path, FileKind::System, Some(&frozen))?;
            }
        }
        for path in &sources.extra_files {
            layer.apply_file(path, FileKind::Extra, None)?;
        }
        for (key, value) in env {
            if key.starts_with("CVMFS_") && is_valid_key(key) {
                layer.set(key.clone(), value.clone(), Origin::Env);
            }
        }
        for (key, value) in &sources.overrides {
            layer.set(key.clone(), value.clone(), Origin::Parrot);
        }
        let mut values = layer.values;
        if !fqrn.is_empty() {
            let org = fqrn.split('.').next().unwrap_or_default();
            for setting in values.values_mut() {
                if setting.value.contains('@') {
                    setting.value = setting.value.replace("@fqrn@", fqrn).replace("@org@", org);
                }
            }
        }
        Ok(Config {
            fqrn: fqrn.to_string(),
            etc_root: sources.etc_root.clone(),
            values,
        })
    }

    /// The repository this configuration is for (may be empty, see [`Config::resolve`]).
    pub fn fqrn(&self) -> &str {
        &self.fqrn
    }

    /// The effective value of `key` (possibly empty), after substitution.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|s| s.value.as_str())
    }

    /// Where the effective value of `key` came from.
    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.values.get(key).map(|s| &s.origin)
    }

    /// All parameters, sorted by name: `(key, value, origin)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Origin)> {
        self.values
            .iter()
            .map(|(k, s)| (k.as_str(), s.value.as_str(), &s.origin))
    }

    /// The value of `key` unless unset or empty.
    fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    fn invalid(&self, key: &str, expected: &'static str) -> ConfigError {
        let setting = self.values.get(key);
        ConfigError::InvalidValue {
            key: key.to_string(),
            value: setting.map(|s| s.value.clone()).unwrap_or_default(),
            origin: setting.map_or(Origin::Builtin, |s| s.origin.clone()),
            expected,
        }
    }

    /// A boolean parameter: `yes`/`on`/`1`/`true` or `no`/`off`/`0`/`false`, any case;
    /// `None` if unset or empty.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        let Some(value) = self.non_empty(key) else {
            return Ok(None);
        };
        match value.trim().to_ascii_lowercase().as_str() {
            "yes" | "on" | "1" | "true" => Ok(Some(true)),
            "no" | "off" | "0" | "false" => Ok(Some(false)),
            _ => Err(self.invalid(key, "yes/on/1/true or no/off/0/false")),
        }
    }

    /// [`Config::bool`] with a default for unset or empty.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        Ok(self.bool(key)?.unwrap_or(default))
    }

    /// An integer parameter; `None` if unset or empty.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ConfigError> {
        match self.non_empty(key) {
            None => Ok(None),
            Some(value) => value
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.invalid(key, "an integer")),
        }
    }

    /// A duration in whole seconds (e.g. `CVMFS_TIMEOUT`); `None` if unset or empty.
    pub fn secs(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.non_empty(key) {
            None => Ok(None),
            Some(value) => value
                .trim()
                .parse::<u64>()
                .map(|s| Some(Duration::from_secs(s)))
                .map_err(|_| self.invalid(key, "a number of seconds")),
        }
    }

    /// `CVMFS_SERVER_URL`: `;`-separated, trimmed, empty entries dropped.
    pub fn server_urls(&self) -> Vec<String> {
        split_list(self.get("CVMFS_SERVER_URL").unwrap_or_default(), ';')
    }

    /// The proxy chain (spec §10.2): groups of `CVMFS_HTTP_PROXY` (`;` between groups, `|`
    /// between load-balanced members), followed by the groups of `CVMFS_FALLBACK_PROXY`.
    ///
    /// If the fallback list is non-empty, `DIRECT` is dropped from the regular list (groups
    /// left empty disappear); `DIRECT` in the fallback list itself is dropped (as cvmfs does).
    /// An empty result means no proxy is configured: the caller must refuse to mount.
    pub fn proxy_groups(&self) -> Result<Vec<Vec<Proxy>>, ConfigError> {
        let mut regular = self.proxy_list("CVMFS_HTTP_PROXY")?;
        let mut fallback = self.proxy_list("CVMFS_FALLBACK_PROXY")?;
        if strip_direct(&mut fallback) {
            debug!("CVMFS_FALLBACK_PROXY does not support DIRECT, removed");
        }
        if !fallback.is_empty() {
            if strip_direct(&mut regular) {
                debug!("DIRECT removed from CVMFS_HTTP_PROXY because of CVMFS_FALLBACK_PROXY");
            }
            regular.extend(fallback);
        }
        Ok(regular)
    }

    fn proxy_list(&self, key: &str) -> Result<Vec<Vec<Proxy>>, ConfigError> {
        let mut groups = Vec::new();
        for group in self.get(key).unwrap_or_default().split(';') {
            let mut members = Vec::new();
            for member in group.split('|').map(str::trim).filter(|m| !m.is_empty()) {
                if member.contains(char::is_whitespace) {
                    return Err(self.invalid(
                        key,
                        "proxies separated by ';' (groups) and '|' (members), not spaces",
                    ));
                }
                members.push(if member.eq_ignore_ascii_case("DIRECT") {
                    Proxy::Direct
                } else if member.eq_ignore_ascii_case("auto") {
                    Proxy::Auto
                } else {
                    Proxy::Url(member.to_string())
                });
            }
            if !members.is_empty() {
                groups.push(members);
            }
        }
        Ok(groups)
    }

    /// The public master key files (spec §6): the `:`-separated `CVMFS_PUBLIC_KEY`, else every
    /// `*.pub` directly in `CVMFS_KEYS_DIR` (sorted), else every `*.pub` in `<etc_root>/keys`
    /// (empty if that directory does not exist).
    pub fn public_keys(&self) -> Result<Vec<PathBuf>, ConfigError> {
        if let Some(list) = self.non_empty("CVMFS_PUBLIC_KEY") {
            return Ok(split_list(list, ':')
                .into_iter()
                .map(PathBuf::from)
                .collect());
        }
        if let Some(dir) = self.non_empty("CVMFS_KEYS_DIR") {
            return pub_files_in(Path::new(dir), false);
        }
        pub_files_in(&self.etc_root.join("keys"), true)
    }

    /// `CVMFS_CACHE_BASE` (always set: the built-in default is per user).
    pub fn cache_base(&self) -> PathBuf {
        PathBuf::from(self.get("CVMFS_CACHE_BASE").unwrap_or_default())
    }

    /// The cache directory (spec §11.1): `CVMFS_CACHE_DIR`, else `<base>/shared` if
    /// `CVMFS_SHARED_CACHE` is on, else `<base>/<fqrn>`.
    pub fn cache_dir(&self) -> Result<PathBuf, ConfigError> {
        if let Some(dir) = self.non_empty("CVMFS_CACHE_DIR") {
            return Ok(PathBuf::from(dir));
        }
        let base = self.cache_base();
        if self.bool_or("CVMFS_SHARED_CACHE", false)? {
            Ok(base.join("shared"))
        } else {
            Ok(base.join(&self.fqrn))
        }
    }

    /// `CVMFS_WORKSPACE` (locks and sockets), else the cache directory.
    pub fn workspace_dir(&self) -> Result<PathBuf, ConfigError> {
        match self.non_empty("CVMFS_WORKSPACE") {
            Some(dir) => Ok(PathBuf::from(dir)),
            None => self.cache_dir(),
        }
    }

    /// `CVMFS_PERCH_TRUSTED_UIDS` (perch's own key): numeric uids, separated by commas or
    /// spaces, whose trust indexes in the cache count as this user's own (a site's filler of
    /// an alien cache). Names are not accepted: perch never calls NSS.
    pub fn trusted_uids(&self) -> Result<Vec<u32>, ConfigError> {
        let Some(v) = self.non_empty("CVMFS_PERCH_TRUSTED_UIDS") else {
            return Ok(Vec::new());
        };
        v.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<u32>().map_err(|_| {
                    self.invalid("CVMFS_PERCH_TRUSTED_UIDS", "numeric uids, comma-separated")
                })
            })
            .collect()
    }

    /// `CVMFS_ALIEN_CACHE`, if set and non-empty.
    pub fn alien_cache(&self) -> Option<PathBuf> {
        self.non_empty("CVMFS_ALIEN_CACHE").map(PathBuf::from)
    }

    /// `CVMFS_QUOTA_LIMIT` in MB: `Some(limit)` for a managed cache, `None` for unmanaged
    /// (`-1` or `0`). Unset or empty means [`DEFAULT_QUOTA_LIMIT_MB`].
    pub fn quota_limit_mb(&self) -> Result<Option<u64>, ConfigError> {
        match self.int("CVMFS_QUOTA_LIMIT") {
            Ok(None) => Ok(Some(DEFAULT_QUOTA_LIMIT_MB)),
            Ok(Some(-1 | 0)) => Ok(None),
            Ok(Some(mb)) => u64::try_from(mb)
                .map(Some)
                .map_err(|_| self.invalid("CVMFS_QUOTA_LIMIT", "a size in MB, or -1/0")),
            Err(_) => Err(self.invalid("CVMFS_QUOTA_LIMIT", "a size in MB, or -1/0")),
        }
    }

    /// `CVMFS_MAX_TTL`: the cap on the catalog TTL (spec §11.5), given in minutes; `None`
    /// when unset, empty or 0 (no cap). It is not a limit on offline mode.
    pub fn max_ttl(&self) -> Result<Option<Duration>, ConfigError> {
        match self.int("CVMFS_MAX_TTL") {
            Ok(None | Some(0)) => Ok(None),
            Ok(Some(minutes)) => u64::try_from(minutes)
                .ok()
                .and_then(|m| m.checked_mul(60))
                .map(|s| Some(Duration::from_secs(s)))
                .ok_or_else(|| self.invalid("CVMFS_MAX_TTL", "a number of minutes, or 0")),
            Err(_) => Err(self.invalid("CVMFS_MAX_TTL", "a number of minutes, or 0")),
        }
    }

    /// `CVMFS_OFFLINE_RETRY` (perch's own): seconds an offline mount waits before it tries the
    /// network again; unset or empty means [`DEFAULT_OFFLINE_RETRY_SECS`]. At least 1 s, so a
    /// dead network is never retried on every read.
    pub fn offline_retry(&self) -> Result<Duration, ConfigError> {
        match self.secs("CVMFS_OFFLINE_RETRY")? {
            None => Ok(Duration::from_secs(DEFAULT_OFFLINE_RETRY_SECS)),
            Some(d) if d.is_zero() => {
                Err(self.invalid("CVMFS_OFFLINE_RETRY", "a number of seconds, at least 1"))
            }
            Some(d) => Ok(d),
        }
    }

    /// `CVMFS_REPOSITORY_TAG`, if set and non-empty.
    pub fn repository_tag(&self) -> Option<&str> {
        self.non_empty("CVMFS_REPOSITORY_TAG").map(str::trim)
    }

    /// `CVMFS_REPOSITORIES`: comma-separated, trimmed, empty entries and duplicates dropped;
    /// names without a dot get `.$CVMFS_DEFAULT_DOMAIN` if that is set.
    pub fn repositories(&self) -> Vec<String> {
        let domain = self.non_empty("CVMFS_DEFAULT_DOMAIN").map(str::trim);
        let mut out: Vec<String> = Vec::new();
        for name in split_list(self.get("CVMFS_REPOSITORIES").unwrap_or_default(), ',') {
            let full = match domain {
                Some(domain) if !name.contains('.') && !domain.is_empty() => {
                    format!("{name}.{domain}")
                }
                _ => name,
            };
            if !out.contains(&full) {
                out.push(full);
            }
        }
        out
    }

    /// Renders all parameters like `cvmfs_config showconfig`, sorted by name, one per line:
    /// `KEY=VALUE    # from SOURCE` (values shell-quoted when needed; SOURCE is the file,
    /// `environment` or `built-in default`).
    pub fn show(&self) -> String {
        let mut out = String::new();
        for (key, value, origin) in self.iter() {
            out.push_str(&format!(
                "{key}={}    # from {}\n",
                shell_quote(value),
                origin.source_name()
            ));
        }
        out
    }
}

/// Splits at `sep`, trims, drops empty entries.
fn split_list(value: &str, sep: char) -> Vec<String> {
    value
        .split(sep)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Removes `DIRECT` members and then empty groups; true if any was removed.
fn strip_direct(groups: &mut Vec<Vec<Proxy>>) -> bool {
    let before: usize = groups.iter().map(Vec::len).sum();
    for group in groups.iter_mut() {
        group.retain(|p| *p != Proxy::Direct);
    }
    groups.retain(|g| !g.is_empty());
    before != groups.iter().map(Vec::len).sum::<usize>()
}

/// `*.pub` non-directories directly in `dir`, sorted.
fn pub_files_in(dir: &Path, missing_ok: bool) -> Result<Vec<PathBuf>, ConfigError> {
    let read_dir_error = |source| ConfigError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if missing_ok && e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_dir_error(e)),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let path = entry.map_err(read_dir_error)?.path();
        if path.extension().is_some_and(|ext| ext == "pub") && !path.is_dir() {
            keys.push(path);
        }
    }
    keys.sort();
    Ok(keys)
}

/// Quotes like cvmfs' `EscapeShell`: plain if only `[A-Za-z0-9/:._,-]`, else in single quotes
/// with `'` escaped as `\'`.
fn shell_quote(value: &str) -> String {
    let plain = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | ':' | '.' | '_' | '-' | ','));
    if plain {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    fn home_env() -> BTreeMap<String, String> {
        env(&[("HOME", "/home/ada")])
    }

    /// A temp etc root with the given files (relative path, content).
    fn etc(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, content) in files {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        dir
    }

    fn resolve(dir: &tempfile::TempDir, fqrn: &str) -> Config {
        Config::resolve(fqrn, &ConfigSources::new(dir.path()), &home_env()).unwrap()
    }

    fn kv(text: &str) -> Vec<(String, String)> {
        parse_str(text)
            .into_iter()
            .map(|a| (a.key, a.value))
            .collect()
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn parse_basic_trim_and_keywords() {
        assert_eq!(
            kv("  A = 1  \nexport B=2\nreadonly C=3\nexport readonly D=4\nexport\tE=5\n"),
            vec![
                pair("A", "1"),
                pair("B", "2"),
                pair("C", "3"),
                pair("D", "4"),
                pair("E", "5")
            ]
        );
    }

    #[test]
    fn parse_split_at_first_equals() {
        assert_eq!(kv("A=b=c"), vec![pair("A", "b=c")]);
        assert_eq!(kv("A="), vec![pair("A", "")]);
    }

    #[test]
    fn parse_quotes() {
        assert_eq!(
            kv("A=\"x y\"\nB='z'\nC=\"mixed'\nD=\"\"\nE='a'b'\nF=\" padded \"\n"),
            vec![
                pair("A", "x y"),
                pair("B", "z"),
                pair("C", "\"mixed'"),
                // Two characters: not stripped (libcvmfs).
                pair("D", "\"\""),
                // Only one pair is stripped.
                pair("E", "a'b"),
                pair("F", " padded "),
            ]
        );
    }

    #[test]
    fn parse_comments_cut_even_in_quotes() {
        assert_eq!(
            kv("# comment\nA=1 # trailing\nB=\"x#y\"\n  # indented\nC='p#'\n"),
            vec![pair("A", "1"), pair("B", "\"x"), pair("C", "'p")]
        );
    }

    #[test]
    fn parse_invalid_lines_ignored() {
        let text = "no equals\n=value\nBAD KEY=1\n1ABC=2\nif [ x ]; then\nfi\nK-Y=3\nOK=4\n";
        let parsed = parse_str(text);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].key, "OK");
        assert_eq!(parsed[0].line, 8);
    }

    #[test]
    fn parse_every_assignment_counts_in_conditionals() {
        // libcvmfs does not evaluate conditionals: the last assignment wins.
        let dir = etc(&[(
            "domain.d/cern.ch.conf",
            "if [ \"$CVMFS_USE_CDN\" = yes ]; then\n  CVMFS_SERVER_URL=\"http://cdn/cvmfs/@fqrn@\"\nelse\n  CVMFS_SERVER_URL=\"http://s1/cvmfs/@fqrn@\"\nfi\n",
        )]);
        let config = resolve(&dir, "atlas.cern.ch");
        assert_eq!(config.server_urls(), vec!["http://s1/cvmfs/atlas.cern.ch"]);
        assert_eq!(
            config.origin("CVMFS_SERVER_URL"),
            Some(&Origin::File {
                path: dir.path().join("domain.d/cern.ch.conf"),
                line: 4
            })
        );
    }

    #[test]
    fn precedence_of_all_file_steps() {
        let steps = [
            "default.conf",
            "default.d/10-a.conf",
            "default.d/20-b.conf",
            "default.local",
            "domain.d/example.org.conf",
            "domain.d/example.org.local",
            "config.d/repo.example.org.conf",
            "config.d/repo.example.org.local",
        ];
        // Each file sets V to its own name and S_<i> to mark it was read.
        for top in 0..steps.len() {
            let files: Vec<(String, String)> = steps[..=top]
                .iter()
                .enumerate()
                .map(|(i, name)| (name.to_string(), format!("V={name}\nS_{i}=1\n")))
                .collect();
            let refs: Vec<(&str, &str)> = files
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            let dir = etc(&refs);
            let config = resolve(&dir, "repo.example.org");
            assert_eq!(config.get("V"), Some(steps[top]));
            for i in 0..=top {
                assert_eq!(config.get(&format!("S_{i}")), Some("1"));
            }
        }
    }

    #[test]
    fn default_d_sorted_and_only_conf() {
        let dir = etc(&[
            ("default.d/b.conf", "V=b\n"),
            ("default.d/a.conf", "V=a\nA=1\n"),
            ("default.d/c.conf.rpmsave", "V=c\n"),
            ("default.d/.conf", "V=hidden\n"),
        ]);
        let config = resolve(&dir, "repo.example.org");
        assert_eq!(config.get("V"), Some("b"));
        assert_eq!(config.get("A"), Some("1"));
    }

    #[test]
    fn other_domains_and_repos_not_read() {
        let dir = etc(&[
            ("domain.d/other.org.conf", "V=other\n"),
            ("config.d/other.example.org.conf", "W=other\n"),
        ]);
        let config = resolve(&dir, "repo.example.org");
        assert_eq!(config.get("V"), None);
        assert_eq!(config.get("W"), None);
    }

    #[test]
    fn extra_files_then_env_then_files() {
        let dir = etc(&[
            (
                "config.d/repo.example.org.local",
                "A=file\nB=file\nC=file\n",
            ),
            ("extra1", "B=extra1\nC=extra1\n"),
            ("extra2", "C=extra2\nD=extra2\n"),
        ]);
        let sources = ConfigSources::new(dir.path())
            .with_extra_file(dir.path().join("extra1"))
            .with_extra_file(dir.path().join("extra2"));
        let mut environment = home_env();
        environment.insert("D".into(), "not a cvmfs var".into());
        environment.insert("CVMFS_E".into(), "env".into());
        environment.insert("CVMFS_TIMEOUT".into(), "7".into());
        let config = Config::resolve("repo.example.org", &sources, &environment).unwrap();
        assert_eq!(config.get("A"), Some("file"));
        assert_eq!(config.get("B"), Some("extra1"));
        assert_eq!(config.get("C"), Some("extra2"));
        assert_eq!(config.get("D"), Some("extra2"));
        assert_eq!(config.get("HOME"), None);
        assert_eq!(config.get("CVMFS_E"), Some("env"));
        assert_eq!(config.origin("CVMFS_E"), Some(&Origin::Env));
        assert_eq!(
            config.origin("C"),
            Some(&Origin::ConfigFile {
                path: dir.path().join("extra2"),
                line: 1
            })
        );
        assert_eq!(
            config.secs("CVMFS_TIMEOUT").unwrap(),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn env_beats_extra_file() {
        let dir = etc(&[("extra", "CVMFS_X=file\n")]);
        let sources = ConfigSources::new(dir.path()).with_extra_file(dir.path().join("extra"));
        let environment = env(&[("CVMFS_X", "env")]);
        let config = Config::resolve("r.example.org", &sources, &environment).unwrap();
        assert_eq!(config.get("CVMFS_X"), Some("env"));
    }

    #[test]
    fn missing_extra_file_is_an_error_naming_it() {
        let dir = etc(&[]);
        let missing = dir.path().join("nope.conf");
        let sources = ConfigSources::new(dir.path()).with_extra_file(&missing);
        let err = Config::resolve("r.example.org", &sources, &home_env()).unwrap_err();
        assert!(matches!(&err, ConfigError::Read { path, .. } if *path == missing));
        assert!(err.to_string().contains("nope.conf"), "{err}");
    }

    #[test]
    fn unreadable_system_file_is_an_error() {
        // A directory where a file is expected cannot be read, even as root.
        let dir = etc(&[("default.local/x", "")]);
        let err = Config::resolve(
            "r.example.org",
            &ConfigSources::new(dir.path()),
            &home_env(),
        )
        .unwrap_err();
        assert!(matches!(&err, ConfigError::Read { path, .. } if path.ends_with("default.local")));
    }

    #[test]
    fn system_files_off_reads_only_extra() {
        let dir = etc(&[("default.conf", "A=sys\nB=sys\n"), ("extra", "B=extra\n")]);
        let mut sources = ConfigSources::new(dir.path()).with_extra_file(dir.path().join("extra"));
        sources.system_files = false;
        let config = Config::resolve("r.example.org", &sources, &home_env()).unwrap();
        assert_eq!(config.get("A"), None);
        assert_eq!(config.get("B"), Some("extra"));
    }

    #[test]
    fn substitution_in_all_values_after_merge() {
        let dir = etc(&[
            (
                "default.conf",
                "CVMFS_SERVER_URL=\"http://a/cvmfs/@fqrn@;http://b/@org@/x\"\n",
            ),
            (
                "default.local",
                "CVMFS_CACHE_DIR=/c/@org@/@fqrn@\nOTHER=@x@ @fqrn\n",
            ),
        ]);
        let config = resolve(&dir, "atlas.cern.ch");
        assert_eq!(
            config.server_urls(),
            vec!["http://a/cvmfs/atlas.cern.ch", "http://b/atlas/x"]
        );
        assert_eq!(
            config.get("CVMFS_CACHE_DIR"),
            Some("/c/atlas/atlas.cern.ch")
        );
        assert_eq!(config.get("OTHER"), Some("@x@ @fqrn"));
    }

    #[test]
    fn substitution_of_env_values() {
        let dir = etc(&[]);
        let environment = env(&[("CVMFS_SERVER_URL", "http://e/cvmfs/@fqrn@")]);
        let config =
            Config::resolve("x.egi.eu", &ConfigSources::new(dir.path()), &environment).unwrap();
        assert_eq!(config.server_urls(), vec!["http://e/cvmfs/x.egi.eu"]);
    }

    #[test]
    fn builtin_server_lists_per_domain() {
        let dir = etc(&[]);
        let cases: [(&str, usize, &str); 4] = [
            (
                "sft.cern.ch",
                4,
                "http://cvmfs-stratum-one.cern.ch/cvmfs/sft.cern.ch",
            ),
            (
                "x.egi.eu",
                4,
                "http://cvmfs-egi.gridpp.rl.ac.uk:8000/cvmfs/x.egi.eu",
            ),
            (
                "oasis.opensciencegrid.org",
                5,
                "http://cvmfs-egi.gridpp.rl.ac.uk:8000/cvmfs/oasis.opensciencegrid.org",
            ),
            (
                "software.eessi.io",
                3,
                "http://aws-eu-central-s1.eessi.science/cvmfs/software.eessi.io",
            ),
        ];
        for (fqrn, n, first) in cases {
            let config = resolve(&dir, fqrn);
            let urls = config.server_urls();
            assert_eq!(urls.len(), n, "{fqrn}");
            assert_eq!(urls[0], first);
            assert_eq!(config.origin("CVMFS_SERVER_URL"), Some(&Origin::Builtin));
            assert_eq!(config.bool("CVMFS_USE_GEOAPI").unwrap(), Some(true));
        }
        let osg = resolve(&dir, "oasis.opensciencegrid.org").server_urls();
        assert_eq!(
            osg[4],
            "http://cvmfs-stratum-one.ihep.ac.cn:8000/cvmfs/oasis.opensciencegrid.org"
        );
        let eessi = resolve(&dir, "software.eessi.io").server_urls();
        assert_eq!(
            eessi[2],
            "http://ral-uk-s1.eessi.science:8000/cvmfs/software.eessi.io"
        );
    }

    #[test]
    fn builtin_unknown_domain_and_subdomain() {
        let dir = etc(&[]);
        let config = resolve(&dir, "repo.example.org");
        assert!(config.server_urls().is_empty());
        assert_eq!(config.get("CVMFS_USE_GEOAPI"), None);
        // The domain is everything after the first dot: a.b.cern.ch is in domain b.cern.ch.
        assert!(resolve(&dir, "a.b.cern.ch").server_urls().is_empty());
    }

    #[test]
    fn builtin_globals_and_files_override_them() {
        let dir = etc(&[("default.local", "CVMFS_TIMEOUT=3\n")]);
        let config = resolve(&dir, "repo.example.org");
        assert_eq!(
            config.secs("CVMFS_TIMEOUT").unwrap(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            config.secs("CVMFS_TIMEOUT_DIRECT").unwrap(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(config.int("CVMFS_MAX_RETRIES").unwrap(), Some(1));
        assert_eq!(
            config.secs("CVMFS_BACKOFF_INIT").unwrap(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            config.secs("CVMFS_BACKOFF_MAX").unwrap(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(config.quota_limit_mb().unwrap(), Some(4000));
        assert_eq!(config.bool("CVMFS_SHARED_CACHE").unwrap(), Some(false));
        assert_eq!(config.origin("CVMFS_MAX_RETRIES"), Some(&Origin::Builtin));
    }

    #[test]
    fn builtin_keys_dir_and_domain_file_override() {
        let dir = etc(&[]);
        let sources = ConfigSources::new(dir.path()).with_builtin_keys_root("/opt/perch/keys");
        let config = Config::resolve("sft.cern.ch", &sources, &home_env()).unwrap();
        assert_eq!(
            config.get("CVMFS_KEYS_DIR"),
            Some("/opt/perch/keys/cern.ch")
        );
        let other = Config::resolve("r.example.org", &sources, &home_env()).unwrap();
        assert_eq!(other.get("CVMFS_KEYS_DIR"), None);

        let dir = etc(&[(
            "domain.d/cern.ch.conf",
            "CVMFS_KEYS_DIR=/etc/cvmfs/keys/cern.ch\n",
        )]);
        let sources = ConfigSources::new(dir.path()).with_builtin_keys_root("/opt/perch/keys");
        let config = Config::resolve("sft.cern.ch", &sources, &home_env()).unwrap();
        assert_eq!(
            config.get("CVMFS_KEYS_DIR"),
            Some("/etc/cvmfs/keys/cern.ch")
        );
    }

    #[test]
    fn cache_base_per_user() {
        let base = |pairs: &[(&str, &str)], uid| default_cache_base(&env(pairs), uid);
        assert_eq!(
            base(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")], Some(5)),
            Path::new("/x/perch")
        );
        assert_eq!(
            base(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/h")], Some(5)),
            Path::new("/h/.cache/perch")
        );
        assert_eq!(base(&[("HOME", "")], Some(5)), Path::new("/tmp/perch-5"));
        assert_eq!(
            base(&[("TMPDIR", "/scratch")], Some(5)),
            Path::new("/scratch/perch-5")
        );
        assert_eq!(base(&[], None), Path::new("/tmp/perch"));
    }

    #[test]
    fn cache_dir_rules() {
        let dir = etc(&[]);
        let config = resolve(&dir, "r.example.org");
        assert_eq!(config.cache_base(), Path::new("/home/ada/.cache/perch"));
        assert_eq!(
            config.cache_dir().unwrap(),
            Path::new("/home/ada/.cache/perch/r.example.org")
        );
        assert_eq!(config.workspace_dir().unwrap(), config.cache_dir().unwrap());

        let dir = etc(&[(
            "default.local",
            "CVMFS_CACHE_BASE=/var/c\nCVMFS_SHARED_CACHE=yes\n",
        )]);
        assert_eq!(
            resolve(&dir, "r.example.org").cache_dir().unwrap(),
            Path::new("/var/c/shared")
        );

        let dir = etc(&[(
            "default.local",
            "CVMFS_CACHE_BASE=/var/c\nCVMFS_SHARED_CACHE=yes\nCVMFS_CACHE_DIR=/exact\nCVMFS_WORKSPACE=/ws\n",
        )]);
        let config = resolve(&dir, "r.example.org");
        assert_eq!(config.cache_dir().unwrap(), Path::new("/exact"));
        assert_eq!(config.workspace_dir().unwrap(), Path::new("/ws"));

        let dir = etc(&[("default.local", "CVMFS_SHARED_CACHE=maybe\n")]);
        let err = resolve(&dir, "r.example.org").cache_dir().unwrap_err();
        assert!(err.to_string().contains("default.local:1"), "{err}");
    }

    #[test]
    fn alien_cache_and_quota() {
        let dir = etc(&[(
            "default.local",
            "CVMFS_ALIEN_CACHE=/nfs/alien\nCVMFS_QUOTA_LIMIT=-1\n",
        )]);
        let config = resolve(&dir, "r.example.org");
        assert_eq!(config.alien_cache(), Some(PathBuf::from("/nfs/alien")));
        assert_eq!(config.quota_limit_mb().unwrap(), None);

        for (value, expected) in [("0", None), ("20000", Some(20000)), ("", Some(4000))] {
            let dir = etc(&[("default.local", &format!("CVMFS_QUOTA_LIMIT={value}\n"))]);
            assert_eq!(
                resolve(&dir, "r.example.org").quota_limit_mb().unwrap(),
                expected
            );
        }
        for bad in ["-2", "lots", "1.5"] {
            let dir = etc(&[("default.local", &format!("\nCVMFS_QUOTA_LIMIT={bad}\n"))]);
            let err = resolve(&dir, "r.example.org").quota_limit_mb().unwrap_err();
            match &err {
                ConfigError::InvalidValue { key, origin, .. } => {
                    assert_eq!(key, "CVMFS_QUOTA_LIMIT");
                    assert_eq!(origin.line(), Some(2));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(resolve(&etc(&[]), "r.example.org").alien_cache(), None);
    }

    #[test]
    fn max_ttl_minutes_and_offline_retry() {
        let config = resolve(&etc(&[]), "r.example.org");
        assert_eq!(config.max_ttl().unwrap(), None);
        assert_eq!(config.offline_retry().unwrap(), Duration::from_secs(180));
        assert!(config
            .show()
            .contains("CVMFS_MAX_TTL=0    # from built-in default"));
        assert!(config
            .show()
            .contains("CVMFS_OFFLINE_RETRY=180    # from built-in default"));
        let dir = etc(&[("default.local", "CVMFS_MAX_TTL=3\nCVMFS_OFFLINE_RETRY=2\n")]);
        let config = resolve(&dir, "r.example.org");
        assert_eq!(config.max_ttl().unwrap(), Some(Duration::from_secs(180)));
        assert_eq!(config.offline_retry().unwrap(), Duration::from_secs(2));
        for (value, expected) in [("0", None), ("", None), ("1440", Some(86_400))] {
            let dir = etc(&[("default.local", &format!("CVMFS_MAX_TTL={value}\n"))]);
            assert_eq!(
                resolve(&dir, "r.example.org").max_ttl().unwrap(),
                expected.map(Duration::from_secs)
            );
        }
        for bad in ["-1", "4h", "1.5"] {
            let dir = etc(&[("default.local", &format!("CVMFS_MAX_TTL={bad}\n"))]);
            let err = resolve(&dir, "r.example.org").max_ttl().unwrap_err();
            assert!(err.to_string().contains("CVMFS_MAX_TTL"), "{err}");
        }
        for bad in ["0", "-5", "soon"] {
            let dir = etc(&[("default.local", &format!("CVMFS_OFFLINE_RETRY={bad}\n"))]);
            let err = resolve(&dir, "r.example.org").offline_retry().unwrap_err();
            assert!(err.to_string().contains("CVMFS_OFFLINE_RETRY"), "{err}");
        }
    }

    #[test]
    fn booleans() {
        let dir = etc(&[(
            "default.local",
            "A=yes\nB=ON\nC=1\nD=True\nE=no\nF=Off\nG=0\nH=FALSE\nI=\nJ=perhaps\n",
        )]);
        let config = resolve(&dir, "r.example.org");
        for key in ["A", "B", "C", "D"] {
            assert_eq!(config.bool(key).unwrap(), Some(true), "{key}");
        }
        for key in ["E", "F", "G", "H"] {
            assert_eq!(config.bool(key).unwrap(), Some(false), "{key}");
        }
        assert_eq!(config.bool("I").unwrap(), None);
        assert_eq!(config.bool("MISSING").unwrap(), None);
        assert!(config.bool_or("MISSING", true).unwrap());
        let err = config.bool("J").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"perhaps\"") && text.contains("default.local:10"),
            "{text}"
        );
    }

    #[test]
    fn secs_and_int_errors() {
        let dir = etc(&[("default.local", "CVMFS_TIMEOUT=5s\nN=-3\n")]);
        let config = resolve(&dir, "r.example.org");
        assert!(config.secs("CVMFS_TIMEOUT").is_err());
        assert_eq!(config.int("N").unwrap(), Some(-3));
        assert!(config.secs("N").is_err());
        assert_eq!(config.secs("MISSING").unwrap(), None);
    }

    #[test]
    fn proxies_groups_and_members() {
        let dir = etc(&[(
            "default.local",
            "CVMFS_HTTP_PROXY=\"http://p1:3128 | http://p2:3128; http://p3:3128;;DIRECT\"\n",
        )]);
        let config = resolve(&dir, "r.example.org");
        let url = |s: &str| Proxy::Url(s.to_string());
        assert_eq!(
            config.proxy_groups().unwrap(),
            vec![
                vec![url("http://p1:3128"), url("http://p2:3128")],
                vec![url("http://p3:3128")],
                vec![Proxy::Direct],
            ]
        );
    }

    #[test]
    fn proxies_fallback_drops_direct() {
        let dir = etc(&[(
            "default.local",
            "CVMFS_HTTP_PROXY='http://p1:3128|DIRECT;DIRECT;auto'\nCVMFS_FALLBACK_PROXY='http://f1:3128;http://f2:3128|DIRECT'\n",
        )]);
        let config = resolve(&dir, "r.example.org");
        let url = |s: &str| Proxy::Url(s.to_string());
        assert_eq!(
            config.proxy_groups().unwrap(),
            vec![
                vec![url("http://p1:3128")],
                vec![Proxy::Auto],
                vec![url("http://f1:3128")],
                vec![url("http://f2:3128")],
            ]
        );
    }

    #[test]
    fn proxies_fallback_only_direct_keeps_regular_direct() {
        let dir = etc(&[(
            "default.local",
            "CVMFS_HTTP_PROXY=DIRECT\nCVMFS_FALLBACK_PROXY=DIRECT\n",
        )]);
        let config = resolve(&dir, "r.example.org");
        assert_eq!(config.proxy_groups().unwrap(), vec![vec![Proxy::Direct]]);
    }

    #[test]
    fn proxies_empty_and_errors() {
        let config = resolve(&etc(&[]), "r.example.org");
        assert!(config.proxy_groups().unwrap().is_empty());
        let dir = etc(&[(
            "default.local",
            "CVMFS_HTTP_PROXY=\"http://a:1 http://b:2\"\n",
        )]);
        let err = resolve(&dir, "r.example.org").proxy_groups().unwrap_err();
        assert!(err.to_string().contains("CVMFS_HTTP_PROXY"), "{err}");
        // Fallback alone is used as the whole chain.
        let dir = etc(&[("default.local", "CVMFS_FALLBACK_PROXY=http://f:3128\n")]);
        assert_eq!(
            resolve(&dir, "r.example.org").proxy_groups().unwrap(),
            vec![vec![Proxy::Url("http://f:3128".into())]]
        );
    }

    #[test]
    fn public_keys_order_of_sources() {
        let dir = etc(&[
            ("keys/b.pub", "k"),
            ("keys/a.pub", "k"),
            ("keys/not-a-key.txt", "k"),
            ("keys/cern.ch/nested.pub", "k"),
            ("mykeys/z.pub", "k"),
            ("mykeys/y.pub", "k"),
        ]);
        let config = resolve(&dir, "r.example.org");
        assert_eq!(
            config.public_keys().unwrap(),
            vec![dir.path().join("keys/a.pub"), dir.path().join("keys/b.pub")]
        );

        let text = format!("CVMFS_KEYS_DIR={}\n", dir.path().join("mykeys").display());
        fs::write(dir.path().join("default.local"), text).unwrap();
        let config = resolve(&dir, "r.example.org");
        assert_eq!(
            config.public_keys().unwrap(),
            vec![
                dir.path().join("mykeys/y.pub"),
                dir.path().join("mykeys/z.pub")
            ]
        );

        fs::write(
            dir.path().join("default.local"),
            "CVMFS_KEYS_DIR=/nonexistent\nCVMFS_PUBLIC_KEY=/k/one.pub: /k/two.pub::\n",
        )
        .unwrap();
        let config = resolve(&dir, "r.example.org");
        assert_eq!(
            config.public_keys().unwrap(),
            vec![PathBuf::from("/k/one.pub"), PathBuf::from("/k/two.pub")]
        );
    }

    #[test]
    fn public_keys_missing_dirs() {
        let dir = etc(&[]);
        assert!(resolve(&dir, "r.example.org")
            .public_keys()
            .unwrap()
            .is_empty());
        fs::write(
            dir.path().join("default.local"),
            "CVMFS_KEYS_DIR=/nonexistent/keys\n",
        )
        .unwrap();
        let err = resolve(&dir, "r.example.org").public_keys().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/keys"), "{err}");
    }

    #[test]
    fn shared_keys_as_builtin_dir() {
        // Keys laid out as perch installs them: <root>/<domain>/*.pub.
        let dir = etc(&[
            ("builtin/cern.ch/cern-it1.cern.ch.pub", "k"),
            ("builtin/cern.ch/cern-it4.cern.ch.pub", "k"),
            ("builtin/egi.eu/egi.eu.pub", "k"),
        ]);
        let sources =
            ConfigSources::new(dir.path()).with_builtin_keys_root(dir.path().join("builtin"));
        let config = Config::resolve("sft.cern.ch", &sources, &home_env()).unwrap();
        assert_eq!(config.public_keys().unwrap().len(), 2);
    }

    #[test]
    fn repositories_and_tag() {
        let dir = etc(&[(
            "default.local",
            "CVMFS_REPOSITORIES=atlas, sft.cern.ch,,lhcb ,atlas\nCVMFS_DEFAULT_DOMAIN=cern.ch\nCVMFS_REPOSITORY_TAG=v1\n",
        )]);
        let config = resolve(&dir, "");
        assert_eq!(
            config.repositories(),
            vec!["atlas.cern.ch", "sft.cern.ch", "lhcb.cern.ch"]
        );
        assert_eq!(config.repository_tag(), Some("v1"));

        let dir = etc(&[("default.local", "CVMFS_REPOSITORIES=atlas,x.org\n")]);
        let config = resolve(&dir, "");
        assert_eq!(config.repositories(), vec!["atlas", "x.org"]);
        assert_eq!(config.repository_tag(), None);
    }

    #[test]
    fn empty_fqrn_reads_global_steps_only() {
        let dir = etc(&[
            ("default.local", "A=@fqrn@\n"),
            ("domain.d/cern.ch.conf", "B=1\n"),
        ]);
        let config = resolve(&dir, "");
        assert_eq!(config.get("A"), Some("@fqrn@"));
        assert_eq!(config.get("B"), None);
        assert!(config.server_urls().is_empty());
    }

    #[test]
    fn invalid_fqrns() {
        let dir = etc(&[]);
        for bad in [
            "nodot", "../etc.x", "a/b.c", ".a.b", "a..b", "a.b.", "a b.c",
        ] {
            let err =
                Config::resolve(bad, &ConfigSources::new(dir.path()), &home_env()).unwrap_err();
            assert!(matches!(err, ConfigError::InvalidFqrn { .. }), "{bad}");
        }
    }

    #[test]
    fn config_repository_steps() {
        let dir = etc(&[
            (
                "default.d/50-cern.conf",
                "CVMFS_CONFIG_REPOSITORY=cvmfs-config.cern.ch\n",
            ),
            (
                "cr/default.conf",
                "A=cr\nB=cr\nCVMFS_CONFIG_REPOSITORY=evil.cern.ch\n",
            ),
            ("default.local", "B=local\n"),
            ("cr/domain.d/cern.ch.conf", "C=cr\nD=cr\n"),
            ("domain.d/cern.ch.conf", "D=etc\n"),
            ("cr/config.d/sft.cern.ch.conf", "E=cr\n"),
        ]);
        let sources = ConfigSources::new(dir.path()).with_config_repo_etc(dir.path().join("cr"));
        assert_eq!(
            sources.config_repository("sft.cern.ch").unwrap().as_deref(),
            Some("cvmfs-config.cern.ch")
        );
        assert_eq!(
            sources.config_repository("cvmfs-config.cern.ch").unwrap(),
            None
        );
        let config = Config::resolve("sft.cern.ch", &sources, &home_env()).unwrap();
        assert_eq!(config.get("A"), Some("cr"));
        assert_eq!(config.get("B"), Some("local"));
        assert_eq!(config.get("C"), Some("cr"));
        assert_eq!(config.get("D"), Some("etc"));
        assert_eq!(config.get("E"), Some("cr"));
        // Protected after step 2.
        assert_eq!(config.get(CONFIG_REPOSITORY), Some("cvmfs-config.cern.ch"));

        // The config repository itself does not read its own files.
        let config = Config::resolve("cvmfs-config.cern.ch", &sources, &home_env()).unwrap();
        assert_eq!(config.get("A"), None);

        // Without CVMFS_CONFIG_REPOSITORY the directory is ignored.
        fs::remove_file(dir.path().join("default.d/50-cern.conf")).unwrap();
        let config = Config::resolve("sft.cern.ch", &sources, &home_env()).unwrap();
        assert_eq!(config.get("A"), None);
        assert_eq!(sources.config_repository("sft.cern.ch").unwrap(), None);
    }

    #[test]
    fn show_like_showconfig() {
        let dir = etc(&[(
            "default.local",
            "CVMFS_HTTP_PROXY='http://p:1;DIRECT'\nZ=plain\n",
        )]);
        let environment = env(&[("HOME", "/h"), ("CVMFS_X", "it's")]);
        let config = Config::resolve(
            "r.example.org",
            &ConfigSources::new(dir.path()),
            &environment,
        )
        .unwrap();
        let shown = config.show();
        let lines: Vec<&str> = shown.lines().collect();
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted);
        let local = dir.path().join("default.local");
        assert!(lines.contains(
            &format!(
                "CVMFS_HTTP_PROXY='http://p:1;DIRECT'    # from {}",
                local.display()
            )
            .as_str()
        ));
        assert!(lines.contains(&format!("Z=plain    # from {}", local.display()).as_str()));
        assert!(lines.contains(&"CVMFS_X='it\\'s'    # from environment"));
        assert!(lines.contains(&"CVMFS_TIMEOUT=5    # from built-in default"));
        assert!(lines.contains(&"CVMFS_CACHE_BASE=/h/.cache/perch    # from built-in default"));
    }

    #[test]
    fn origin_display() {
        let file = Origin::File {
            path: "/etc/cvmfs/default.local".into(),
            line: 3,
        };
        assert_eq!(file.to_string(), "/etc/cvmfs/default.local:3");
        let extra = Origin::ConfigFile {
            path: "/x.conf".into(),
            line: 1,
        };
        assert_eq!(extra.to_string(), "--config /x.conf:1");
        assert_eq!(Origin::Env.to_string(), "environment");
        assert_eq!(Origin::Builtin.path(), None);
    }

    #[test]
    fn invalid_utf8_is_tolerated() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("default.local"), b"A=\xff\xfe\nB=2\n").unwrap();
        let config = resolve(&dir, "r.example.org");
        assert_eq!(config.get("B"), Some("2"));
        assert!(config.get("A").is_some());
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(text in "\\PC*") {
                for a in parse_str(&text) {
                    prop_assert!(is_valid_key(&a.key));
                    prop_assert!(!a.value.contains('#'));
                    prop_assert!(!a.value.contains('\n'));
                }
            }

            #[test]
            fn parse_never_panics_on_config_like_text(
                lines in proptest::collection::vec(
                    "(export |readonly )?[A-Z_ #=\"']{0,6}=?[ a-z\"'#=@;|]{0,12}", 0..20)
            ) {
                let _ = parse_str(&lines.join("\n"));
            }

            #[test]
            fn resolve_and_getters_never_panic(
                content in "[A-Z_=\"'a-z0-9 @;|:,#\n-]{0,200}",
                fqrn in "[a-z.@/-]{0,12}",
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut text = String::new();
                for key in ["CVMFS_HTTP_PROXY", "CVMFS_QUOTA_LIMIT", "CVMFS_SHARED_CACHE",
                            "CVMFS_REPOSITORIES", "CVMFS_TIMEOUT"] {
                    text.push_str(&format!("{key}={content}\n"));
                }
                text.push_str(&content);
                std::fs::write(dir.path().join("default.local"), text).unwrap();
                let env = BTreeMap::new();
                if let Ok(config) = Config::resolve(&fqrn, &ConfigSources::new(dir.path()), &env) {
                    let _ = config.proxy_groups();
                    let _ = config.quota_limit_mb();
                    let _ = config.cache_dir();
                    let _ = config.secs("CVMFS_TIMEOUT");
                    let _ = config.repositories();
                    let _ = config.server_urls();
                    let _ = config.show();
                }
            }
        }
    }
}
