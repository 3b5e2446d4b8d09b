//! `perch cache stats|gc|check|preload`: look after the local (or alien) cache.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use perch_cvmfs::cache::{Cache, CacheOptions};
use perch_cvmfs::{Node, Repository};

use crate::exit::{Classify, Fail, Failure};
use crate::mounts::{Client, ClientArgs};

/// What to do with the cache.
#[derive(Debug, clap::Subcommand)]
pub enum CacheCmd {
    /// Objects, bytes and quota of a repository's cache.
    Stats {
        #[command(flatten)]
        client: ClientArgs,
        /// Repository name.
        fqrn: String,
    },
    /// Evict least recently used objects down to the quota's cleanup target.
    Gc {
        #[command(flatten)]
        client: ClientArgs,
        /// Remove every object that is not pinned.
        #[arg(long)]
        all: bool,
        /// Repository name.
        fqrn: String,
    },
    /// Verify every object against its name (its hash), downloading a fresh copy to compare
    /// with where the name is the hash of the compressed form; remove bad ones.
    Check {
        #[command(flatten)]
        client: ClientArgs,
        /// Only report, remove nothing.
        #[arg(long = "dry-run")]
        dry_run: bool,
        /// Repository name.
        fqrn: String,
    },
    /// Download files (and whole subtrees) into the cache ahead of use.
    Preload {
        #[command(flatten)]
        client: ClientArgs,
        /// File with one path below /cvmfs per line (`-` = stdin).
        #[arg(long = "list", value_name = "FILE")]
        list: Option<PathBuf>,
        /// Parallel downloads.
        #[arg(short = 'j', long = "jobs", default_value_t = 8)]
        jobs: usize,
        /// Paths below /cvmfs (files or directories).
        paths: Vec<String>,
    },
}

/// Run a `perch cache` command.
pub fn run(cmd: CacheCmd) -> Result<(), Fail> {
    match cmd {
        CacheCmd::Stats { client, fqrn } => stats(&mut Client::new(client), &fqrn),
        CacheCmd::Gc { client, all, fqrn } => gc(&mut Client::new(client), &fqrn, all),
        CacheCmd::Check {
            client,
            dry_run,
            fqrn,
        } => check(&mut Client::new(client), &fqrn, dry_run),
        CacheCmd::Preload {
            client,
            list,
            jobs,
            paths,
        } => preload(&mut Client::new(client), paths, list, jobs),
    }
}

fn open_cache(client: &mut Client, fqrn: &str) -> Result<Cache, Fail> {
    let o = client.mount_options(fqrn).or_fail(Failure::Config)?;
    let opts = CacheOptions {
        alien: o.alien,
        quota_limit: o.quota_limit,
        cleanup_ratio: None,
        trusted_uids: o.trusted_uids.clone(),
    };
    Cache::open_with(&o.cache_dir, opts)
        .map_err(|e| Fail::cache(format!("cache of {fqrn}: {}", perch_cvmfs::error_chain(&e))))
}

fn print(lines: &[(&str, String)]) -> Result<(), Fail> {
    let mut out = std::io::stdout().lock();
    for (k, v) in lines {
        match writeln!(out, "{k:<12} {v}") {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            r => r.or_fail(Failure::Io)?,
        }
    }
    Ok(())
}

fn mb(b: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let v = b as f64 / 1048576.0;
    format!("{v:.1} MiB")
}

fn stats(client: &mut Client, fqrn: &str) -> Result<(), Fail> {
    let cache = open_cache(client, fqrn)?;
    let (objects, bytes) = walk_objects(&cache);
    let limit = cache.quota_limit();
    print(&[
        ("directory", cache.root().display().to_string()),
        ("objects", objects.to_string()),
        ("size", mb(bytes)),
        ("quota", limit.map_or_else(|| "unmanaged".into(), mb)),
        (
            "used",
            limit.map_or_else(
                || "-".into(),
                |l| format!("{}%", bytes.saturating_mul(100) / l.max(1)),
            ),
        ),
        (
            "revision",
            cache
                .read_breadcrumb(fqrn)
                .map_or_else(|| "-".into(), |(h, _, r)| format!("{r} ({h})")),
        ),
    ])
}

fn walk_objects(cache: &Cache) -> (u64, u64) {
    let mut n = 0;
    let mut bytes = 0;
    for base in [cache.root().to_path_buf(), cache.root().join("chunked")] {
        for d in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = d.file_name();
            if name.len() != 2
                || !name
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit())
            {
                continue;
            }
            for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                if let Ok(m) = f.metadata() {
                    n += 1;
                    bytes += m.len();
                }
            }
        }
    }
    (n, bytes)
}

fn gc(client: &mut Client, fqrn: &str, all: bool) -> Result<(), Fail> {
    let cache = open_cache(client, fqrn)?;
    if cache.quota_limit().is_none() && !all {
        return Err(Fail::new(
            Failure::Usage,
            anyhow!("the cache of {fqrn} is unmanaged (CVMFS_QUOTA_LIMIT=-1 or an alien cache): use --all to empty it"),
        ));
    }
    let r = cache
        .gc(all)
        .map_err(|e| Fail::new(Failure::Io, anyhow!("{}", perch_cvmfs::error_chain(&e))))?;
    print(&[
        ("removed", r.removed.to_string()),
        ("freed", mb(r.freed)),
        ("size", mb(r.usage)),
    ])
}

fn check(client: &mut Client, fqrn: &str, dry_run: bool) -> Result<(), Fail> {
    // The mounted repository gives the fetcher that downloads objects to compare with.
    let repo = match client.mount(fqrn) {
        Ok(r) => Some(r),
        Err(f) => {
            tracing::warn!(
                "cannot reach {fqrn} ({:#}): objects that need a download to be checked are not checked",
                f.error
            );
            None
        }
    };
    let cache = match &repo {
        Some(r) => r.cache().clone(),
        None => std::sync::Arc::new(open_cache(client, fqrn)?),
    };
    let (objects, total) = walk_objects(&cache);
    let bar = bytes_bar(total);
    let r = cache
        .check(repo.as_ref().map(|r| r.fetcher()), dry_run, |n| bar.inc(n))
        .map_err(|e| Fail::new(Failure::Io, anyhow!("{}", perch_cvmfs::error_chain(&e))))?;
    bar.finish_and_clear();
    for p in &r.bad {
        let removed = !dry_run && !r.not_removed.contains(p);
        tracing::warn!(object = %p.display(), removed, "bad object: its content is not what its name says");
    }
    for (p, why) in &r.unchecked {
        tracing::info!(object = %p.display(), %why, "not checked");
    }
    let bad = if dry_run {
        format!("{} (found; --dry-run removed nothing)", r.bad.len())
    } else {
        format!(
            "{} (removed {})",
            r.bad.len(),
            r.bad.len() - r.not_removed.len()
        )
    };
    let mut lines = vec![
        ("directory", cache.root().display().to_string()),
        ("checked", format!("{objects} objects")),
        (
            "good",
            format!(
                "{} ({} hash to their name, {} equal to a fresh download)",
                r.good(),
                r.by_name,
                r.by_download
            ),
        ),
        ("bad", bad),
    ];
    if !r.not_removed.is_empty() {
        lines.push((
            "not removed",
            format!(
                "{} (another user's, in a sticky directory: the owner or the administrator must remove them)",
                r.not_removed.len()
            ),
        ));
    }
    let mut why: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for (_, w) in &r.unchecked {
        let short = w.split(':').next().unwrap_or(w);
        *why.entry(short).or_default() += 1;
    }
    let reasons: Vec<String> = why.iter().map(|(w, n)| format!("{n} {w}")).collect();
    lines.push((
        "not checked",
        if reasons.is_empty() {
            "0".into()
        } else {
            format!("{} ({}; kept)", r.unchecked.len(), reasons.join(", "))
        },
    ));
    print(&lines)?;
    // Non-zero while bad objects stay in the cache (a dry run, or ones perch may not remove).
    if (dry_run && !r.bad.is_empty()) || !r.not_removed.is_empty() {
        return Err(Fail::new(
            Failure::Io,
            anyhow!("the cache of {fqrn} holds bad objects"),
        ));
    }
    Ok(())
}

fn bytes_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {binary_bytes}/{binary_total_bytes} {msg} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Every regular file at or below `node`.
fn collect(repo: &Repository, node: Node, out: &mut Vec<Node>) -> Result<(), Fail> {
    if node.entry.is_regular() {
        out.push(node);
        return Ok(());
    }
    if node.entry.is_dir() {
        let children = repo.list(&node.path).map_err(|e| {
            Fail::new(
                Failure::Io,
                anyhow!(
                    "{}: {}",
                    String::from_utf8_lossy(&node.path),
                    perch_cvmfs::error_chain(&e)
                ),
            )
        })?;
        for c in children {
            collect(repo, c, out)?;
        }
    }
    Ok(())
}

fn preload(
    client: &mut Client,
    mut paths: Vec<String>,
    list: Option<PathBuf>,
    jobs: usize,
) -> Result<(), Fail> {
    if let Some(l) = list {
        let text = if l.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).or_fail(Failure::Io)?
        } else {
            std::fs::read_to_string(&l)
                .with_context(|| format!("cannot read {}", l.display()))
                .or_fail(Failure::Usage)?
        };
        paths.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    if paths.is_empty() {
        return Err(Fail::new(
            Failure::Usage,
            anyhow!("nothing to preload: give paths below /cvmfs or --list FILE"),
        ));
    }
    let mut work: Vec<(Arc<Repository>, Node)> = Vec::new();
    for p in &paths {
        let (fqrn, inner) = client.split_path(p).or_fail(Failure::Usage)?;
        let repo = client.mount(fqrn)?;
        let md = client.mount_dir().to_string_lossy().into_owned();
        let node = repo
            .resolve(inner.as_bytes(), true, md.as_bytes())
            .map_err(|e| Fail::new(Failure::Io, anyhow!("{p}: {e}")))?
            .ok_or_else(|| {
                Fail::new(Failure::NotFound, anyhow!("{p}: no such file or directory"))
            })?;
        let mut files = Vec::new();
        collect(&repo, node, &mut files)?;
        work.extend(files.into_iter().map(|n| (repo.clone(), n)));
    }
    let total: u64 = work.iter().map(|(_, n)| n.entry.size).sum();
    let count = work.len();
    let bar = bytes_bar(total);
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let first_error: std::sync::Mutex<Option<Fail>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, 64) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((repo, node)) = work.get(i) else {
                    break;
                };
                if let Err(e) = repo.fetch(node) {
                    let msg = format!(
                        "{}{}: {}",
                        repo.fqrn(),
                        String::from_utf8_lossy(&node.path),
                        perch_cvmfs::error_chain(&e)
                    );
                    let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    if slot.is_none() {
                        *slot = Some(Fail::new(Failure::Io, anyhow!(msg)));
                    }
                    continue;
                }
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                bar.inc(node.entry.size);
                bar.set_message(format!("{d}/{count} objects"));
            });
        }
    });
    bar.finish_and_clear();
    if let Some(f) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(f);
    }
    print(&[("files", count.to_string()), ("bytes", mb(total))])
}
