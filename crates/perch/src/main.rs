//! perch: CernVM-FS repositories for unprivileged jobs.
//!
//! The binary parses the command line, sets up logging, joins the crates
//! (client, publisher, interception) and maps failures to documented exit codes.
#![forbid(unsafe_code)]

mod adapter;
mod cache_cmd;
mod demo;
mod direct;
mod doctor;
mod exit;
mod info;
mod logging;
mod mounts;
mod parrot;
mod publish_cmd;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use exit::{Fail, Failure};
use mounts::{Client, ClientArgs};

/// `perch --version`: version, git commit, linkage and what is compiled in.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("PERCH_GIT_COMMIT"),
    "\nlinkage: ",
    env!("PERCH_LINKAGE"),
    "\nfeatures: interception (seccomp user notification + ptrace), http (own resolver: /etc/hosts, resolv.conf), \
     sqlite (bundled), hashes (sha1, rmd160, shake128), zlib, publisher"
);

/// Run programs with /cvmfs visible, read and publish CernVM-FS repositories,
/// all without privileges.
#[derive(Debug, Parser)]
#[command(name = "perch", version, long_version = LONG_VERSION, about, propagate_version = true)]
struct Cli {
    /// Debug output on stderr (or `perch run -o FILE`): comma-separated flags, cvmfs (mounts,
    /// catalogs, cache), fetch (every HTTP request), cache, vfs, syscall, stats, all.
    #[arg(short = 'd', long = "debug", global = true, value_name = "FLAGS")]
    debug: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List a directory of a repository: `perch ls [-l] /cvmfs/<fqrn>/path`.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
        /// Long listing like `ls -l`.
        #[arg(short = 'l')]
        long: bool,
        /// Include entries starting with '.'.
        #[arg(short = 'a')]
        all: bool,
        /// Paths below /cvmfs.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Write files of a repository to stdout, byte-exact.
    Cat {
        #[command(flatten)]
        client: ClientArgs,
        /// Paths below /cvmfs.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Show metadata like stat(1), plus the content hash and chunk count.
    Stat {
        #[command(flatten)]
        client: ClientArgs,
        /// Follow a final symbolic link.
        #[arg(short = 'L', long = "dereference")]
        follow: bool,
        /// Paths below /cvmfs.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Print every path below a directory of a repository.
    Find {
        #[command(flatten)]
        client: ClientArgs,
        /// Directory below /cvmfs.
        path: String,
        /// Only entries of this type: f (file), d (directory), l (symbolic link), p (FIFO).
        #[arg(long = "type", value_parser = ["f", "d", "l", "p"])]
        kind: Option<String>,
        /// Only entries whose name matches this glob (* and ?).
        #[arg(long = "name")]
        name: Option<String>,
    },
    /// Publish a built-in example tree, serve it on 127.0.0.1 and run programs on it.
    Demo,
    /// Make the keys of a new repository: master key, certificate key and certificate.
    Keygen {
        /// Repository name.
        fqrn: String,
        /// Directory to write the keys to (created).
        keydir: std::path::PathBuf,
        /// Validity of the certificate in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Publish a directory as the next signed revision of a repository.
    Publish(publish_cmd::PublishArgs),
    /// Serve a stratum directory over HTTP (for demos and tests; sites use nginx or Apache).
    Serve {
        /// The stratum directory (the one holding .cvmfspublished).
        dir: std::path::PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: std::net::SocketAddr,
    },
    /// Look after the cache: stats, gc, check, preload.
    Cache {
        #[command(subcommand)]
        what: cache_cmd::CacheCmd,
    },
    /// Client configuration.
    Config {
        #[command(subcommand)]
        what: ConfigCmd,
    },
    /// Run a program with /cvmfs visible, unprivileged: `perch run [OPTIONS] -- CMD [ARGS]`.
    /// Exits with CMD's status (128+N for signal N); perch's own failures are codes >= 200.
    Run(run::RunArgs),
    /// Print what `perch run` does with each file-system syscall.
    Syscalls,
    /// Check repositories (servers, proxies, keys, whitelist, signature), the cache and the
    /// kernel: one line per check, OK/WARN/FAIL; exit status 1 when a check failed.
    Doctor(doctor::DoctorArgs),
    /// Revision, root hash, expiry, servers and proxy in use, cache use of a repository (what
    /// `cvmfs_talk host info|proxy info|revision` and `cvmfs_config stat -v` show).
    Info {
        #[command(flatten)]
        client: ClientArgs,
        /// Repository name.
        fqrn: String,
    },
    /// parrot_run's command line and environment (PARROT_CVMFS_REPO, HTTP_PROXY, -M, -d, -o,
    /// -t, -p, -r): `perch parrot [OPTIONS] CMD [ARGS]`, or perch started as `parrot_run`.
    /// See docs/parrot-migration.md.
    Parrot {
        /// parrot_run's options, then the program and its arguments.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Print the effective configuration of a repository and where each value came from.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        /// Repository name.
        fqrn: String,
    },
}

fn run(cli: Cli) -> Result<ExitCode, Fail> {
    let done = match cli.command {
        Command::Run(a) => return run::command(a),
        Command::Syscalls => return Ok(run::syscalls()),
        Command::Doctor(a) => return doctor::doctor(a),
        // Handled in main before clap.
        Command::Parrot { .. } => {
            return Err(Fail::new(
                Failure::Usage,
                anyhow::anyhow!(
                    "parrot: give the options after `perch parrot` (perch parrot -d cvmfs CMD)"
                ),
            ))
        }
        Command::Ls {
            client,
            long,
            all,
            paths,
        } => direct::ls(&mut Client::new(client), &paths, long, all),
        Command::Cat { client, paths } => direct::cat(&mut Client::new(client), &paths),
        Command::Stat {
            client,
            follow,
            paths,
        } => direct::stat(&mut Client::new(client), &paths, follow),
        Command::Find {
            client,
            path,
            kind,
            name,
        } => direct::find(
            &mut Client::new(client),
            &path,
            kind.and_then(|k| k.chars().next()),
            name.as_deref(),
        ),
        Command::Info { client, fqrn } => info::info(&mut Client::new(client), &fqrn),
        Command::Demo => demo::demo(),
        Command::Keygen { fqrn, keydir, days } => publish_cmd::keygen(&fqrn, &keydir, days),
        Command::Publish(a) => publish_cmd::publish(&a),
        Command::Serve { dir, listen } => publish_cmd::serve(&dir, listen),
        Command::Cache { what } => cache_cmd::run(what),
        Command::Config {
            what: ConfigCmd::Show { client, fqrn },
        } => direct::config_show(&mut Client::new(client), &fqrn),
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// Prints a failure as one line and returns its exit code.
#[allow(clippy::print_stderr)]
fn report(f: Fail) -> ExitCode {
    let chain: Vec<String> = f.error.chain().map(|c| c.to_string()).collect();
    let mut line = String::new();
    for c in chain {
        if !line.contains(&c) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&c);
        }
    }
    eprintln!("perch: {line}");
    f.kind.code()
}

/// The parrot_run front end: its command line becomes a `perch run` one (see `parrot`).
fn parrot_main(args: &[std::ffi::OsString]) -> Result<(Cli, Option<String>), ExitCode> {
    let env = |k: &str| std::env::var(k).ok();
    match parrot::plan(args, &env) {
        Err(f) => Err(report(f)),
        Ok(parrot::Plan::Print { text, code }) => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(text.as_bytes());
            Err(ExitCode::from(code))
        }
        Ok(parrot::Plan::Run {
            argv,
            setup,
            workdir,
            notes,
        }) => {
            let mut cli = Cli::try_parse_from(argv).map_err(|e| {
                let _ = e.print();
                Failure::Usage.code()
            })?;
            if let Command::Run(a) = &mut cli.command {
                a.client.parrot = Some(setup);
            }
            if let Some(dir) = workdir {
                std::env::set_current_dir(&dir).map_err(|e| {
                    report(Fail::new(
                        Failure::Usage,
                        anyhow::anyhow!("parrot_run -w {}: {e}", dir.display()),
                    ))
                })?;
            }
            Ok((cli, notes))
        }
    }
}

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let as_parrot = args.first().is_some_and(|a| parrot::invoked_as_parrot(a));
    let parrot_args = if as_parrot {
        Some(&args[1..])
    } else if args.get(1).is_some_and(|a| a == "parrot") {
        Some(&args[2..])
    } else {
        None
    };
    let (cli, notes) = match parrot_args {
        Some(a) => match parrot_main(a) {
            Ok(x) => x,
            Err(code) => return code,
        },
        None => match Cli::try_parse_from(&args) {
            Ok(c) => (c, None),
            Err(e) => {
                let code = if e.use_stderr() {
                    Failure::Usage.code()
                } else {
                    ExitCode::SUCCESS
                };
                let _ = e.print();
                return code;
            }
        },
    };
    let log = match &cli.command {
        Command::Run(a) => a.log.clone(),
        _ => None,
    };
    let targets = match logging::targets(cli.debug.as_deref().unwrap_or("")) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("perch: -d: {e}");
            return Failure::Usage.code();
        }
    };
    logging::init(&targets, log.as_deref());
    if let Some(n) = notes {
        tracing::warn!("{n}");
    }
    match run(cli) {
        Ok(code) => code,
        Err(f) => report(f),
    }
}
