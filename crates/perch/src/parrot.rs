//! The parrot_run front end: perch started under the name `parrot_run` (a symlink or a copy)
//! or as `perch parrot …` takes parrot_run's command line and environment and runs
//! `perch run`. docs/parrot-migration.md maps every option and variable.
//!
//! The command line is parsed like parrot's `getopt_long("+…")`: options until the first
//! word that is not one (or `--`), short options bundled (`-dcvmfs`, `-kK`), long options as
//! `--name=value` or `--name value`. Options with a meaning for perch are translated; options
//! without one are accepted and named once, in one warning; options perch cannot honour and
//! that would change what the program sees are refused (exit 200), so none is misread.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use perch_cvmfs::parrot::ParrotRepos;

use crate::exit::{Fail, Failure};

/// What the front end adds to perch's configuration (see `mounts::Client::sources`).
#[derive(Debug, Clone, Default)]
pub struct ParrotSetup {
    /// `PARROT_CVMFS_REPO` or `-r`.
    pub repos: ParrotRepos,
    /// Parameters for every repository (`-p`/`HTTP_PROXY`, `-T`, `--cvmfs-option`), before
    /// the repository's own options.
    pub global: Vec<(String, String)>,
}

impl ParrotSetup {
    /// The `CVMFS_*` parameters for `fqrn`, later ones winning.
    pub fn settings(&self, fqrn: &str) -> Vec<(String, String)> {
        let mut out = self.global.clone();
        out.extend(self.repos.settings(fqrn));
        out
    }
}

/// What `main` does for a parrot_run command line.
#[derive(Debug)]
pub enum Plan {
    /// Parse `argv` as perch's own command line (a `perch run`), give its client `setup`,
    /// change to `workdir` first, and log `notes` once logging is up.
    Run {
        /// `perch [-d …] run … -- CMD…`.
        argv: Vec<OsString>,
        /// Parrot configuration.
        setup: ParrotSetup,
        /// `-w DIR`.
        workdir: Option<PathBuf>,
        /// One warning naming the ignored options, if any.
        notes: Option<String>,
    },
    /// Print `text` on stdout and exit with `code` (`-h`, `-v`, `--check-driver`).
    Print {
        /// What to print.
        text: String,
        /// Exit code.
        code: u8,
    },
}

/// True when perch was started under parrot_run's name.
pub fn invoked_as_parrot(argv0: &OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == "parrot_run" || n == "parrot-run")
}

/// What parrot_run does with one option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Debug,
    DebugFile,
    Mount,
    MountFile,
    TempDir,
    Proxy,
    Repos,
    AlienCache,
    NoAlienCache,
    Timeout,
    WorkDir,
    CvmfsOption,
    CvmfsOptionFile,
    Version,
    Help,
    CheckDriver,
    IsRunning,
    /// Same behaviour as perch's: accepted silently.
    Same,
    /// No meaning for perch: accepted, named in the warning, with the reason.
    Ignore(&'static str),
    /// Would change what the program sees and perch cannot do it: refused, with the reason.
    Refuse(&'static str),
}

/// parrot_run's options (cctools `pfs_main.cc`): short, long, takes a value, action.
const OPTIONS: &[(Option<char>, &str, bool, Act)] = {
    use Act::*;
    const IDENTITY: &str = "perch shows the real identity and clock";
    const CACHING: &str = "perch's cache works per object, not per file transfer";
    const CHIRP: &str = "perch serves only CVMFS";
    const TRACING: &str = "perch's interception has no such setting";
    &[
        (Some('a'), "chirp-auth", true, Ignore(CHIRP)),
        (Some('b'), "block-size", true, Ignore(CACHING)),
        (Some('B'), "", true, Ignore(CACHING)),
        (Some('c'), "status-file", true, Ignore(TRACING)),
        (Some('C'), "channel-auth", false, Ignore(CHIRP)),
        (None, "check-driver", true, CheckDriver),
        (Some('d'), "debug", true, Debug),
        (Some('D'), "no-optimize", false, Ignore(CACHING)),
        (None, "cvmfs-repos", true, Repos),
        (None, "cvmfs-alien-cache", true, AlienCache),
        (None, "cvmfs-disable-alien-cache", false, NoAlienCache),
        (None, "cvmfs-repo-switching", false, Same),
        (None, "cvmfs-option", true, CvmfsOption),
        (None, "cvmfs-option-file", true, CvmfsOptionFile),
        (None, "cvmfs-config", true, Ignore("perch takes CVMFS parameters with --cvmfs-option or --cvmfs-option-file")),
        (None, "debug-file", true, DebugFile),
        (Some('e'), "env-list", true, Ignore(TRACING)),
        (None, "ext-image", true, Refuse("perch cannot mount ext file system images")),
        (Some('f'), "no-follow-symlinks", false, Refuse("perch always follows symbolic links like the kernel")),
        (Some('F'), "with-snapshots", false, Ignore(CACHING)),
        (None, "fake-setuid", false, Ignore(IDENTITY)),
        (Some('G'), "gid", true, Ignore(IDENTITY)),
        (Some('h'), "help", false, Help),
        (None, "helper", false, Ignore(TRACING)),
        (Some('H'), "no-helper", false, Ignore(TRACING)),
        (None, "hostname", true, Ignore(IDENTITY)),
        (Some('N'), "", true, Ignore(IDENTITY)),
        (Some('i'), "tickets", true, Ignore(CHIRP)),
        (Some('I'), "debug-level-irods", true, Ignore(CHIRP)),
        (None, "is-running", false, IsRunning),
        (Some('k'), "no-checksums", false, Ignore(CHIRP)),
        (Some('K'), "with-checksums", false, Ignore(CHIRP)),
        (Some('l'), "ld-path", true, Ignore(TRACING)),
        (Some('m'), "tab-file", true, MountFile),
        (Some('M'), "mount", true, Mount),
        (Some('n'), "name-list", true, Refuse("perch records the /cvmfs files a program used with `perch run --record FILE` (another format)")),
        (None, "no-flock", false, Ignore(TRACING)),
        (None, "no-set-foreground", false, Ignore(TRACING)),
        (Some('o'), "", true, DebugFile),
        (Some('O'), "debug-rotate-max", true, Ignore(TRACING)),
        (Some('p'), "proxy", true, Proxy),
        (Some('P'), "paranoid", false, Ignore(IDENTITY)),
        (None, "parrot-path", true, Ignore(TRACING)),
        (None, "pid-fixed", false, Ignore(IDENTITY)),
        (None, "pid-warp", false, Ignore(IDENTITY)),
        (Some('Q'), "no-chirp-catalog", false, Ignore(CHIRP)),
        (Some('r'), "", true, Repos),
        (Some('R'), "root-checksum", true, Ignore(CHIRP)),
        (Some('s'), "stream-no-cache", false, Ignore(CACHING)),
        (Some('S'), "session-caching", false, Ignore(CACHING)),
        (None, "stats-file", true, Ignore(TRACING)),
        (None, "syscall-disable-debug", false, Ignore(TRACING)),
        (Some('W'), "syscall-table", false, Ignore(TRACING)),
        (None, "dynamic-mounts", false, Ignore(TRACING)),
        (None, "disable-service", true, Ignore(CHIRP)),
        (Some('t'), "tempdir", true, TempDir),
        (Some('T'), "timeout", true, Timeout),
        (None, "time-stop", false, Ignore(IDENTITY)),
        (None, "time-warp", false, Ignore(IDENTITY)),
        (Some('U'), "uid", true, Ignore(IDENTITY)),
        (Some('u'), "username", true, Ignore(IDENTITY)),
        (None, "valgrind", false, Ignore(TRACING)),
        (Some('v'), "version", false, Version),
        (Some('w'), "work-dir", true, WorkDir),
        (Some('Y'), "sync-write", false, Ignore(CACHING)),
        (Some('Z'), "auto-decompress", false, Ignore(CACHING)),
    ]
};

/// parrot's `-d` flags perch maps to its own; the other parrot flags are accepted and ignored.
const DEBUG_MAP: &[(&str, &str)] = &[
    ("cvmfs", "cvmfs"),
    ("http", "fetch"),
    ("remote", "fetch"),
    ("tcp", "fetch"),
    ("dns", "fetch"),
    ("syscall", "syscall"),
    ("libcall", "syscall"),
    ("cache", "cache"),
    ("local", "vfs"),
    ("resolve", "vfs"),
    ("all", "all"),
];

/// parrot's other debug flags (cctools `debug.c`).
const DEBUG_OTHER: &[&str] = &[
    "none", "notice", "channel", "process", "ftp", "nest", "chirp", "dcap", "rfio", "glite", "lfc",
    "gfal", "grow", "pstree", "alloc", "poll", "hdfs", "bxgrid", "debug", "login", "irods", "wq",
    "mpi", "user", "xrootd", "batch", "rmonitor", "makeflow", "hash", "s3", "ext", "time", "pid",
    "fatal", "error", "auth", "jx", "sqlite", "vine",
];

fn usage(msg: String) -> Fail {
    Fail::new(
        Failure::Usage,
        anyhow!("parrot_run: {msg} (`parrot_run --help` lists the options perch accepts)"),
    )
}

/// Seconds from parrot's time syntax: `30`, `30s`, `5m`, `2h`, `1d`.
fn seconds(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = match v.chars().last()? {
        's' => (&v[..v.len() - 1], 1),
        'm' => (&v[..v.len() - 1], 60),
        'h' => (&v[..v.len() - 1], 3600),
        'd' => (&v[..v.len() - 1], 86400),
        _ => (v, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

/// The mount list of `-m FILE` / `PARROT_MOUNT_FILE`: `/virtual /real` per line, `#` comments.
fn mount_file(path: &Path) -> Result<Vec<String>, Fail> {
    let text =
        std::fs::read_to_string(path).map_err(|e| usage(format!("-m {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            [from, to] if from.starts_with('/') && to.starts_with('/') => {
                out.push(format!("{from}={to}"));
            }
            [one] if one.contains('=') => out.push((*one).to_string()),
            _ => {
                return Err(usage(format!(
                    "-m {}:{}: {line:?}: perch takes `/virtual /real` lines only (no access modes such as DENY or rwx)",
                    path.display(),
                    n + 1
                )))
            }
        }
    }
    Ok(out)
}

/// The accumulated translation.
#[derive(Default)]
struct State {
    debug: Vec<String>,
    log: Option<OsString>,
    mounts: Vec<String>,
    cache: Option<OsString>,
    proxy: Option<String>,
    repos: Option<String>,
    alien: Option<OsString>,
    no_alien: bool,
    timeout: Option<u64>,
    workdir: Option<PathBuf>,
    options: Vec<(String, String)>,
    option_files: Vec<OsString>,
    ignored: Vec<String>,
}

impl State {
    fn debug_flags(&mut self, flags: &str, from: &str) -> Result<(), Fail> {
        for f in flags
            .split([',', ' '])
            .map(str::trim)
            .filter(|f| !f.is_empty())
        {
            if let Some((_, ours)) = DEBUG_MAP.iter().find(|(p, _)| *p == f) {
                self.debug.push((*ours).to_string());
            } else if DEBUG_OTHER.contains(&f) {
                self.ignored.push(format!("{from} {f}"));
            } else {
                return Err(usage(format!(
                    "{from} {f}: unknown debug flag (perch maps {}; see docs/parrot-migration.md)",
                    DEBUG_MAP
                        .iter()
                        .map(|(p, _)| *p)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// Translates parrot_run's command line `args` (without the program name) and `env`.
pub fn plan(args: &[OsString], env: &dyn Fn(&str) -> Option<String>) -> Result<Plan, Fail> {
    let mut st = State::default();
    // The environment first: options override it.
    if let Some(f) = env("PARROT_DEBUG_FLAGS") {
        st.debug_flags(&f, "PARROT_DEBUG_FLAGS")?;
    }
    if let Some(f) = env("PARROT_MOUNT_FILE") {
        st.mounts.extend(mount_file(Path::new(&f))?);
    }
    if let Some(m) = env("PARROT_MOUNT_STRING") {
        st.mounts.push(m);
    }
    st.cache = env("PARROT_TEMP_DIR").map(OsString::from);
    st.alien = env("PARROT_CVMFS_ALIEN_CACHE").map(OsString::from);
    st.timeout = match env("PARROT_TIMEOUT") {
        Some(t) => Some(
            seconds(&t)
                .ok_or_else(|| usage(format!("PARROT_TIMEOUT={t}: not a time (30, 5m, 2h)")))?,
        ),
        None => None,
    };
    if let Some(f) = env("PARROT_CVMFS_OPTION_FILE") {
        st.option_files.push(f.into());
    }
    for var in [
        "PARROT_UID",
        "PARROT_GID",
        "PARROT_HOST_NAME",
        "PARROT_FORCE_STREAM",
        "PARROT_FORCE_CACHE",
        "PARROT_SESSION_CACHE",
        "PARROT_FORCE_SYNC",
        "PARROT_LDSO_PATH",
        "PARROT_BLOCK_SIZE",
        "PARROT_CHIRP_AUTH",
        "PARROT_USER_PASS",
        "PARROT_HELPER",
        "PARROT_CVMFS_CONFIG",
    ] {
        if env(var).is_some() {
            st.ignored.push(var.to_string());
        }
    }
    if env("PARROT_FOLLOW_SYMLINKS").is_some_and(|v| v.trim() == "0") {
        return Err(usage(
            "PARROT_FOLLOW_SYMLINKS=0: perch always follows symbolic links like the kernel".into(),
        ));
    }

    let mut i = 0;
    while i < args.len() {
        let Some(a) = args[i].to_str() else { break };
        if a == "--" {
            i += 1;
            break;
        }
        if !a.starts_with('-') || a == "-" {
            break;
        }
        // (option as written, action, value)
        let mut found: Vec<(String, Act, Option<OsString>)> = Vec::new();
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(OsString::from(v))),
                None => (long, None),
            };
            // Exact, else a unique prefix, as getopt_long.
            let exact = OPTIONS.iter().find(|o| !o.1.is_empty() && o.1 == name);
            let prefixed: Vec<_> = OPTIONS
                .iter()
                .filter(|o| !o.1.is_empty() && o.1.starts_with(name))
                .collect();
            let opt = match (exact, prefixed.as_slice()) {
                (Some(o), _) => *o,
                (None, [o]) => **o,
                (None, []) => return Err(usage(format!("unknown option --{name}"))),
                (None, _) => return Err(usage(format!("ambiguous option --{name}"))),
            };
            let value =
                if opt.2 {
                    match inline {
                        Some(v) => Some(v),
                        None => {
                            i += 1;
                            Some(args.get(i).cloned().ok_or_else(|| {
                                usage(format!("option --{} needs a value", opt.1))
                            })?)
                        }
                    }
                } else if inline.is_some() {
                    return Err(usage(format!("option --{} takes no value", opt.1)));
                } else {
                    None
                };
            found.push((format!("--{}", opt.1), opt.3, value));
        } else {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut k = 0;
            while k < chars.len() {
                let c = chars[k];
                let opt = OPTIONS
                    .iter()
                    .find(|o| o.0 == Some(c))
                    .ok_or_else(|| usage(format!("unknown option -{c}")))?;
                if opt.2 {
                    let rest: String = chars[k + 1..].iter().collect();
                    let value = if rest.is_empty() {
                        i += 1;
                        args.get(i)
                            .cloned()
                            .ok_or_else(|| usage(format!("option -{c} needs a value")))?
                    } else {
                        OsString::from(rest)
                    };
                    found.push((format!("-{c}"), opt.3, Some(value)));
                    break;
                }
                found.push((format!("-{c}"), opt.3, None));
                k += 1;
            }
        }
        i += 1;
        for (name, act, value) in found {
            let text = value
                .as_ref()
                .map(|v| v.to_string_lossy().into_owned())
                .unwrap_or_default();
            match act {
                Act::Debug => st.debug_flags(&text, &name)?,
                Act::DebugFile => st.log = value,
                Act::Mount => st.mounts.push(text),
                Act::MountFile => st.mounts.extend(mount_file(Path::new(&text))?),
                Act::TempDir => st.cache = value,
                Act::Proxy => st.proxy = Some(text),
                Act::Repos => st.repos = Some(text),
                Act::AlienCache => st.alien = value,
                Act::NoAlienCache => st.no_alien = true,
                Act::Timeout => {
                    st.timeout =
                        Some(seconds(&text).ok_or_else(|| {
                            usage(format!("{name} {text}: not a time (30, 5m, 2h)"))
                        })?)
                }
                Act::WorkDir => st.workdir = value.map(PathBuf::from),
                Act::CvmfsOption => match text.split_once('=') {
                    Some((k, v)) if k.starts_with("CVMFS_") => {
                        st.options.push((k.to_string(), v.to_string()))
                    }
                    _ => return Err(usage(format!("{name} {text}: expected CVMFS_NAME=VALUE"))),
                },
                Act::CvmfsOptionFile => st.option_files.extend(value),
                Act::Version => {
                    return Ok(Plan::Print {
                        text: format!(
                            "parrot_run: perch {} (parrot_run compatible front end)\n",
                            env!("CARGO_PKG_VERSION")
                        ),
                        code: 0,
                    })
                }
                Act::Help => {
                    return Ok(Plan::Print {
                        text: help(),
                        code: 0,
                    })
                }
                Act::CheckDriver => {
                    return Ok(if text == "cvmfs" {
                        Plan::Print {
                            text: "cvmfs is enabled\n".into(),
                            code: 0,
                        }
                    } else {
                        Plan::Print {
                            text: format!("{text} is not enabled\n"),
                            code: 1,
                        }
                    })
                }
                // perch is not parrot: nothing parrot-like is running around us.
                Act::IsRunning => {
                    return Ok(Plan::Print {
                        text: String::new(),
                        code: 1,
                    })
                }
                Act::Same => {}
                Act::Ignore(why) => st.ignored.push(format!("{name} ({why})")),
                Act::Refuse(why) => return Err(usage(format!("{name} is not supported: {why}"))),
            }
        }
    }
    let command = &args[i..];
    if command.is_empty() {
        return Err(usage(
            "no program to run (parrot_run [OPTIONS] CMD [ARGS])".into(),
        ));
    }

    let spec = st
        .repos
        .clone()
        .or_else(|| env("PARROT_CVMFS_REPO"))
        .unwrap_or_else(|| "<default-repositories>".into());
    let from = if st.repos.is_some() {
        "-r"
    } else {
        "PARROT_CVMFS_REPO"
    };
    let repos = ParrotRepos::parse(&spec)
        .map_err(|e| Fail::new(Failure::Config, anyhow!("{from}: {e}")))?;
    for o in repos.ignored() {
        st.ignored.push(format!("{from} option {o}"));
    }
    let mut global = Vec::new();
    // -p, else HTTP_PROXY, else http_proxy; a repository's proxies= wins over all.
    let proxy = st
        .proxy
        .clone()
        .or_else(|| env("HTTP_PROXY"))
        .or_else(|| env("http_proxy"))
        .filter(|p| !p.trim().is_empty());
    if let Some(p) = proxy {
        global.push(("CVMFS_HTTP_PROXY".to_string(), p));
    }
    if let Some(t) = st.timeout {
        global.push(("CVMFS_TIMEOUT".to_string(), t.to_string()));
        global.push(("CVMFS_TIMEOUT_DIRECT".to_string(), t.to_string()));
    }
    global.extend(st.options.iter().cloned());

    let mut argv: Vec<OsString> = vec!["perch".into()];
    if !st.debug.is_empty() {
        argv.push("-d".into());
        argv.push(st.debug.join(",").into());
    }
    argv.push("run".into());
    if let Some(c) = &st.cache {
        argv.push("--cache".into());
        argv.push(c.clone());
    }
    if let (Some(a), false) = (&st.alien, st.no_alien) {
        argv.push("--alien-cache".into());
        argv.push(a.clone());
    }
    for f in &st.option_files {
        argv.push("--config".into());
        argv.push(f.clone());
    }
    if let Some(l) = &st.log {
        argv.push("-o".into());
        argv.push(l.clone());
    }
    for m in &st.mounts {
        argv.push("-M".into());
        argv.push(m.into());
    }
    for r in repos.named() {
        argv.push("-r".into());
        argv.push(r.into());
    }
    argv.push("--".into());
    argv.extend(command.iter().cloned());
    let notes = (!st.ignored.is_empty()).then(|| {
        format!(
            "parrot_run settings without meaning for perch, ignored: {}",
            st.ignored.join(", ")
        )
    });
    Ok(Plan::Run {
        argv,
        setup: ParrotSetup { repos, global },
        workdir: st.workdir,
        notes,
    })
}

/// `parrot_run --help`.
fn help() -> String {
    let mut s = String::from(
        "Usage: parrot_run [OPTIONS] [--] CMD [ARGS]\n\
         perch's parrot_run front end: runs CMD with /cvmfs visible (as `perch run`).\n\
         Repositories: PARROT_CVMFS_REPO or -r, in parrot's syntax; proxy: -p, HTTP_PROXY.\n\n\
         Options perch honours:\n",
    );
    for (short, long, arg, act) in OPTIONS {
        let honoured = !matches!(act, Act::Ignore(_) | Act::Refuse(_));
        if !honoured {
            continue;
        }
        let mut name = String::new();
        if let Some(c) = short {
            name.push_str(&format!("-{c}"));
        }
        if !long.is_empty() {
            if !name.is_empty() {
                name.push_str(", ");
            }
            name.push_str(&format!("--{long}"));
        }
        if *arg {
            name.push_str(" VALUE");
        }
        s.push_str(&format!("  {name}\n"));
    }
    s.push_str(
        "\nOther parrot_run options are accepted and reported as ignored, or refused when\n\
         ignoring them would change what the program sees. See docs/parrot-migration.md.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Plan, Fail> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        plan(&os(args), &|k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    fn argv(p: &Plan) -> Vec<String> {
        match p {
            Plan::Run { argv, .. } => argv.iter().map(|a| a.to_string_lossy().into()).collect(),
            Plan::Print { .. } => panic!("{p:?}"),
        }
    }

    #[test]
    fn options_translate_to_perch_run() {
        let p = run(
            &[
                "-dcvmfs",
                "-d",
                "http",
                "-o",
                "/l",
                "-M",
                "/a=/b",
                "-t",
                "/c",
                "-p",
                "http://p:1",
                "ls",
                "-l",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            argv(&p),
            [
                "perch",
                "-d",
                "cvmfs,fetch",
                "run",
                "--cache",
                "/c",
                "-o",
                "/l",
                "-M",
                "/a=/b",
                "--",
                "ls",
                "-l"
            ]
        );
        let Plan::Run { setup, .. } = p else { panic!() };
        assert_eq!(
            setup.settings("x.cern.ch"),
            [("CVMFS_HTTP_PROXY".to_string(), "http://p:1".to_string())]
        );
    }

    #[test]
    fn first_word_ends_the_options_and_dashdash_is_optional() {
        assert_eq!(
            argv(&run(&["--", "-x"], &[]).unwrap()).last().unwrap(),
            "-x"
        );
        let a = argv(&run(&["sh", "-d", "x"], &[]).unwrap());
        assert_eq!(a[a.len() - 3..], ["sh", "-d", "x"]);
    }

    #[test]
    fn environment_and_precedence() {
        let p = run(
            &["true"],
            &[
                (
                    "PARROT_CVMFS_REPO",
                    "a.example.org:url=http://s/a,pubkey=/k,proxies=DIRECT",
                ),
                ("HTTP_PROXY", "http://h:1"),
                ("http_proxy", "http://lower:1"),
                ("PARROT_CVMFS_ALIEN_CACHE", "/alien"),
                ("PARROT_TIMEOUT", "2m"),
            ],
        )
        .unwrap();
        let a = argv(&p);
        assert!(
            a.windows(2).any(|w| w == ["--alien-cache", "/alien"]),
            "{a:?}"
        );
        assert!(a.windows(2).any(|w| w == ["-r", "a.example.org"]), "{a:?}");
        let Plan::Run { setup, .. } = p else { panic!() };
        let s = setup.settings("a.example.org");
        // proxies= comes after HTTP_PROXY: it wins.
        let proxies: Vec<_> = s.iter().filter(|(k, _)| k == "CVMFS_HTTP_PROXY").collect();
        assert_eq!(proxies.last().unwrap().1, "DIRECT");
        assert_eq!(proxies[0].1, "http://h:1");
        assert!(s.contains(&("CVMFS_TIMEOUT".into(), "120".into())));
        let lower = run(&["true"], &[("http_proxy", "http://lower:1")]).unwrap();
        let Plan::Run { setup, .. } = lower else {
            panic!()
        };
        assert_eq!(setup.global[0].1, "http://lower:1");
    }

    #[test]
    fn ignored_options_are_named_once_and_refused_ones_fail() {
        let p = run(
            &["-U", "1000", "--fake-setuid", "-dnotice", "-k", "true"],
            &[],
        )
        .unwrap();
        let Plan::Run { notes, .. } = p else { panic!() };
        let n = notes.unwrap();
        assert!(
            n.contains("-U (perch shows the real identity and clock)"),
            "{n}"
        );
        assert!(
            n.contains("--fake-setuid") && n.contains("-d notice") && n.contains("-k"),
            "{n}"
        );
        let e = run(&["-n", "/x", "true"], &[]).unwrap_err();
        assert_eq!(e.kind, Failure::Usage);
        assert!(e.error.to_string().contains("--record"), "{}", e.error);
        let e = run(&["-X", "true"], &[]).unwrap_err();
        assert!(
            e.error.to_string().contains("unknown option -X"),
            "{}",
            e.error
        );
        let e = run(&["-d", "bogus", "true"], &[]).unwrap_err();
        assert!(
            e.error.to_string().contains("unknown debug flag"),
            "{}",
            e.error
        );
        let e = run(&[], &[]).unwrap_err();
        assert!(e.error.to_string().contains("no program"), "{}", e.error);
    }

    #[test]
    fn long_options_with_equals_and_prefixes() {
        let a = argv(
            &run(
                &[
                    "--tempdir=/t",
                    "--mount",
                    "/x=/y",
                    "--debug-f",
                    "/log",
                    "true",
                ],
                &[],
            )
            .unwrap(),
        );
        assert!(a.windows(2).any(|w| w == ["--cache", "/t"]), "{a:?}");
        assert!(a.windows(2).any(|w| w == ["-M", "/x=/y"]), "{a:?}");
        assert!(a.windows(2).any(|w| w == ["-o", "/log"]), "{a:?}");
    }

    #[test]
    fn print_plans() {
        match run(&["--check-driver", "cvmfs"], &[]).unwrap() {
            Plan::Print { text, code } => {
                assert_eq!((text.as_str(), code), ("cvmfs is enabled\n", 0))
            }
            p => panic!("{p:?}"),
        }
        match run(&["-v"], &[]).unwrap() {
            Plan::Print { text, code: 0 } => assert!(text.contains("perch"), "{text}"),
            p => panic!("{p:?}"),
        }
    }
}
