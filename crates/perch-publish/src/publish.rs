//! One publish: scan, store objects, write catalogs, history, reflog,
//! whitelist and finally the signed manifest.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use perch_format::catalog::{Catalog, DirEntry};
use perch_format::compress::{zlib_compress, Compression};
use perch_format::hash::{md5_hex, Algorithm, ContentHash, ObjectKind};
use perch_format::history::{History, HistoryWriter, RefType, Reflog, Tag};
use perch_format::manifest::{Manifest, SignedManifest};
use perch_format::whitelist::Whitelist;

use crate::catalogs::{dir_row, CatalogBuilder, PrevCatalog, WrittenCatalog};
use crate::chunker::ChunkSizes;
use crate::content::{store_file, Content, Encoding};
use crate::error::{PublishError, Result};
use crate::keys::{check_fqrn, KeySet};
use crate::store::Store;
use crate::tree::{FileJob, Scanner};

/// What to publish where. Build it with [`PublishOptions::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Source directory (its content becomes the repository root).
    pub src: PathBuf,
    /// Repository name, e.g. `sw.example.org`.
    pub fqrn: String,
    /// Directory holding `<fqrn>.{masterkey,pub,key,crt}` (see [`crate::keygen`]).
    pub keydir: PathBuf,
    /// Stratum 0 directory (served as `http://host/cvmfs/<fqrn>/`); created if missing.
    pub stratum: PathBuf,
    /// Also tag the new revision with this name (besides `trunk`).
    pub tag: Option<String>,
    /// Description of `tag`.
    pub tag_description: Option<String>,
    /// Content hash algorithm (default SHA-1).
    pub hash: Algorithm,
    /// Compression of file objects (default zlib; catalogs etc. are always zlib).
    pub compression: Compression,
    /// Content-defined chunking; `None` stores every file whole.
    pub chunking: Option<ChunkSizes>,
    /// Validity of the re-signed `.cvmfswhitelist` in days (default 30).
    pub whitelist_days: u32,
    /// Catalog TTL in seconds (manifest `D`, root catalog `TTL`; default 240).
    pub ttl: u64,
    /// Show a progress bar on stderr when it is a terminal.
    pub progress: bool,
    /// Parallel compression workers (default 2).
    pub threads: usize,
}

impl PublishOptions {
    /// Defaults like `cvmfs_server`: SHA-1, zlib, chunking 4/8/16 MiB,
    /// whitelist 30 days, TTL 240 s, no progress bar.
    pub fn new(
        src: impl Into<PathBuf>,
        fqrn: &str,
        keydir: impl Into<PathBuf>,
        stratum: impl Into<PathBuf>,
    ) -> PublishOptions {
        PublishOptions {
            src: src.into(),
            fqrn: fqrn.to_string(),
            keydir: keydir.into(),
            stratum: stratum.into(),
            tag: None,
            tag_description: None,
            hash: Algorithm::Sha1,
            compression: Compression::Zlib,
            chunking: Some(ChunkSizes::DEFAULT),
            whitelist_days: 30,
            ttl: 240,
            progress: false,
            threads: 2,
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone)]
pub struct PublishReport {
    /// New revision (manifest `S`).
    pub revision: u64,
    /// New root catalog.
    pub root_hash: ContentHash,
    /// Every catalog written (root first).
    pub catalogs: Vec<WrittenCatalog>,
    /// History database object.
    pub history: ContentHash,
    /// Certificate object.
    pub certificate: ContentHash,
    /// Regular files published (hard links count once per name).
    pub files: u64,
    /// Directories published, including the root.
    pub directories: u64,
    /// Symbolic links published.
    pub symlinks: u64,
    /// Entries skipped (sockets, FIFOs, devices, a root `.cvmfscatalog`).
    pub skipped: u64,
    /// Total size of the regular files' content.
    pub bytes: u64,
    /// Objects written to `data/` by this publish (files, chunks, catalogs, history, certificate).
    pub new_objects: u64,
    /// Stored (compressed) bytes of the new objects.
    pub new_bytes: u64,
    /// Objects that were already in the stratum.
    pub reused_objects: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
}

impl std::fmt::Display for PublishReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        let mb = u32::try_from(self.bytes >> 10)
            .map(f64::from)
            .unwrap_or(f64::MAX)
            / 1024.0;
        write!(
            f,
            "revision {} root {}: {} files, {} directories, {} symlinks ({} skipped), {:.1} MiB; \
             {} new objects ({} bytes), {} reused; {} catalogs; {:.2} s ({:.1} MiB/s)",
            self.revision,
            self.root_hash,
            self.files,
            self.directories,
            self.symlinks,
            self.skipped,
            mb,
            self.new_objects,
            self.new_bytes,
            self.reused_objects,
            self.catalogs.len(),
            secs,
            mb / secs
        )
    }
}

/// The stratum's current revision, verified.
struct Previous {
    manifest: Manifest,
    root_mtime: i64,
    catalogs: HashMap<Vec<u8>, PrevCatalog>,
    history: Option<(ContentHash, History, tempfile::NamedTempFile)>,
}

fn unix_now() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Read and verify the current manifest of the stratum, and load what the
/// next revision builds on.
fn load_previous(store: &Store, keys: &KeySet) -> Result<Option<Previous>> {
    let mpath = store.root().join(".cvmfspublished");
    let data = match std::fs::read(&mpath) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(PublishError::Io {
                op: "read",
                path: mpath,
                source: e,
            })
        }
    };
    let sm = SignedManifest::parse(&data).map_err(|source| PublishError::BadManifest {
        path: mpath.clone(),
        source,
    })?;
    let found = sm.manifest.fqrn.clone().unwrap_or_default();
    if found != keys.fqrn {
        return Err(PublishError::WrongRepository {
            stratum: store.root().to_path_buf(),
            expected: keys.fqrn.clone(),
            found,
        });
    }
    sm.verify(&keys.certificate)
        .map_err(|source| PublishError::ForeignManifest {
            path: mpath.clone(),
            source,
        })?;
    let manifest = sm.manifest;

    let mut catalogs = HashMap::new();
    let mut root_mtime = unix_now();
    let mut queue = vec![(Vec::new(), manifest.root_catalog)];
    while let Some((path, hash)) = queue.pop() {
        let tmp = store.inflate_to_temp(&hash, ObjectKind::Catalog)?;
        let cat = Catalog::open(tmp.path())
            .map_err(PublishError::db(hash.object_path(ObjectKind::Catalog)))?;
        let dbe = || PublishError::db(hash.object_path(ObjectKind::Catalog));
        let revision = cat.revision().map_err(dbe())?;
        if path.is_empty() {
            if let Some(root) = cat.lookup(b"").map_err(dbe())? {
                root_mtime = root.mtime;
            }
        }
        for n in cat.nested().map_err(dbe())? {
            queue.push((n.path, n.hash));
        }
        catalogs.insert(path, PrevCatalog { hash, revision });
    }
    let history = match manifest.history {
        Some(h) => {
            let tmp = store.inflate_to_temp(&h, ObjectKind::History)?;
            let hist = History::open(tmp.path())
                .map_err(PublishError::db(h.object_path(ObjectKind::History)))?;
            Some((h, hist, tmp))
        }
        None => None,
    };
    Ok(Some(Previous {
        manifest,
        root_mtime,
        catalogs,
        history,
    }))
}

fn progress_bar(enabled: bool, total: u64) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:30} {binary_bytes}/{binary_total_bytes} {msg} {binary_bytes_per_sec} eta {eta}",
    ) {
        // The style of `perch cache` bars: one look, binary units everywhere.
        bar.set_style(style);
    }
    bar
}

/// Store every file's content with `threads` workers; results by job index.
fn store_all(
    store: &Store,
    jobs: &[FileJob],
    enc: &Encoding,
    threads: usize,
    bar: &ProgressBar,
) -> Result<Vec<Content>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Content>>> = Mutex::new(vec![None; jobs.len()]);
    let first_error: Mutex<Option<PublishError>> = Mutex::new(None);
    let worker = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= jobs.len() || failed.load(Ordering::Relaxed) {
            return;
        }
        let inc = |n: u64| bar.inc(n);
        match store_file(store, &jobs[i], enc, &inc) {
            Ok(c) => results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(c),
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                first_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
                return;
            }
        }
    };
    let panicked = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1)).map(|_| s.spawn(worker)).collect();
        handles
            .into_iter()
            .map(|h| h.join().is_err())
            .fold(false, |a, b| a | b)
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    if panicked {
        return Err(PublishError::WorkerPanic);
    }
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|c| c.ok_or(PublishError::WorkerPanic))
        .collect()
}

/// Publish `opts.src` as the next revision of the repository in `opts.stratum`
/// (revision 1 if the stratum has no `.cvmfspublished` yet).
///
/// An existing manifest must name `opts.fqrn` and verify with the certificate
/// in `opts.keydir`. Objects already present are not written again; the
/// manifest is replaced last, atomically, so readers see either the old or
/// the new revision. One publisher per stratum at a time (no lock is taken).
///
/// Hard links: members of one inode inside the same directory become one
/// hard-link group (linkcount = members in that directory); links in other
/// directories are published as separate files with linkcount 1, as
/// `cvmfs_server` does (spec §7.7).
pub fn publish(opts: &PublishOptions) -> Result<PublishReport> {
    let start = Instant::now();
    check_fqrn(&opts.fqrn)?;
    if let Some(c) = opts.chunking {
        ChunkSizes::new(c.min, c.avg, c.max)?;
    }
    if let Some(t) = &opts.tag {
        if t.is_empty() || t == "trunk" || t == "trunk-previous" {
            return Err(PublishError::BadTag(t.clone()));
        }
    }
    let keys = KeySet::load(&opts.fqrn, &opts.keydir)?;
    if !opts.src.is_dir() {
        return Err(PublishError::NotADirectory(opts.src.clone()));
    }
    let store = Store::open(&opts.stratum)?;
    let span = tracing::info_span!("publish", fqrn = %opts.fqrn);
    let _enter = span.enter();
    let prev = load_previous(&store, &keys)?;
    if let (Some(t), Some(p)) = (&opts.tag, &prev) {
        if let Some((_, h, _)) = &p.history {
            if h.tag(t).map_err(PublishError::db("history"))?.is_some() {
                return Err(PublishError::TagExists(t.clone()));
            }
        }
    }
    let now = unix_now();
    let revision = prev.as_ref().map(|p| p.manifest.revision + 1).unwrap_or(1);

    let mut scanner = Scanner::new();
    let root = scanner.scan_root(&opts.src)?;
    let counts = scanner.counts;
    tracing::info!(
        files = counts.files,
        dirs = counts.dirs,
        bytes = counts.bytes,
        "source scanned"
    );

    let enc = Encoding {
        algo: opts.hash,
        compression: opts.compression,
        chunking: opts.chunking,
    };
    let bar = progress_bar(opts.progress, scanner.jobs.iter().map(|j| j.size).sum());
    bar.set_message("storing files");
    let contents = store_all(&store, &scanner.jobs, &enc, opts.threads, &bar)?;
    bar.finish_and_clear();

    // Catalogs, deepest first.
    let empty = HashMap::new();
    let mut builder = CatalogBuilder {
        store: &store,
        enc,
        contents: &contents,
        previous: prev.as_ref().map(|p| &p.catalogs).unwrap_or(&empty),
        now,
        ttl: opts.ttl,
        root_revision: revision,
        written: Vec::new(),
    };
    let mut root_row: DirEntry = dir_row(&root);
    root_row.mtime = prev.as_ref().map(|p| p.root_mtime).unwrap_or(now);
    root_row.mtime_ns = None;
    let (root_cat, _, _) = builder.write_catalog(&root, b"", &root_row)?;
    let mut catalogs = builder.written;
    catalogs.reverse();

    // Certificate.
    let cert = store.put(
        opts.hash,
        ObjectKind::Certificate,
        &zlib_compress(keys.certificate.to_pem().as_bytes()),
    )?;

    // History.
    let history = write_history(&store, opts, prev.as_ref(), &root_cat, revision, now)?;

    // Whitelist, reflog, manifest (last).
    let wl = Whitelist::create(
        &opts.fqrn,
        now,
        opts.whitelist_days.max(1),
        &keys.certificate,
        &keys.master,
    )
    .map_err(PublishError::Crypto)?;
    store.replace_file(".cvmfswhitelist", &wl)?;
    let reflog = write_reflog(
        &store,
        opts,
        prev.as_ref(),
        &[
            (root_cat.hash, RefType::Catalog),
            (cert, RefType::Certificate),
            (history, RefType::History),
        ],
        now,
    )?;
    let manifest = Manifest {
        root_catalog: root_cat.hash,
        root_catalog_size: Some(root_cat.size),
        root_path_md5: md5_hex(b""),
        ttl: opts.ttl,
        revision,
        garbage_collectable: false,
        alt_catalog_path: false,
        fqrn: Some(opts.fqrn.clone()),
        certificate: Some(cert),
        history: Some(history),
        timestamp: Some(u64::try_from(now).unwrap_or(0)),
        metainfo: None,
        reflog: Some(reflog),
    };
    let signed = manifest
        .sign(opts.hash, &keys.certificate_key)
        .map_err(PublishError::Crypto)?;
    store.touch(".cvmfs_master_replica")?;
    store.replace_file(".cvmfspublished", &signed)?;
    tracing::info!(revision, root = %root_cat.hash, "published");

    Ok(PublishReport {
        revision,
        root_hash: root_cat.hash,
        catalogs,
        history,
        certificate: cert,
        files: counts.files,
        directories: counts.dirs,
        symlinks: counts.symlinks,
        skipped: counts.skipped,
        bytes: counts.bytes,
        new_objects: store.stats.new_objects.load(Ordering::Relaxed),
        new_bytes: store.stats.new_bytes.load(Ordering::Relaxed),
        reused_objects: store.stats.reused_objects.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    })
}

fn write_history(
    store: &Store,
    opts: &PublishOptions,
    prev: Option<&Previous>,
    root: &WrittenCatalog,
    revision: u64,
    now: i64,
) -> Result<ContentHash> {
    let dir = store.temp_dir()?;
    let db = dir.path().join("history.db");
    let dbe = || PublishError::db("history");
    let (prev_hash, prev_hist) = match prev.and_then(|p| p.history.as_ref()) {
        Some((h, hist, _)) => (Some(h), Some(hist)),
        None => (None, None),
    };
    let w = HistoryWriter::create(&db, &opts.fqrn, prev_hash, prev_hist).map_err(dbe())?;
    if let Some(p) = prev {
        let old_trunk = match prev_hist {
            Some(h) => h.tag("trunk").map_err(dbe())?,
            None => None,
        };
        let old_trunk = old_trunk.unwrap_or_else(|| Tag {
            name: "trunk".into(),
            hash: p.manifest.root_catalog,
            revision: p.manifest.revision,
            timestamp: p
                .manifest
                .timestamp
                .and_then(|t| i64::try_from(t).ok())
                .unwrap_or(now),
            description: String::new(),
            size: p.manifest.root_catalog_size.unwrap_or(0),
        });
        w.put(&Tag {
            name: "trunk-previous".into(),
            description: "default undo target".into(),
            ..old_trunk
        })
        .map_err(dbe())?;
    }
    let head = Tag {
        name: "trunk".into(),
        hash: root.hash,
        revision,
        timestamp: now,
        description: "current HEAD".into(),
        size: root.size,
    };
    if let Some(t) = &opts.tag {
        let description = opts
            .tag_description
            .clone()
            .unwrap_or_else(|| format!("published by perch, revision {revision}"));
        w.put(&Tag {
            name: t.clone(),
            description,
            ..head.clone()
        })
        .map_err(dbe())?;
    }
    w.put(&head).map_err(dbe())?;
    w.finish().map_err(dbe())?;
    let bytes = std::fs::read(&db).map_err(PublishError::io("read", &db))?;
    store.put(opts.hash, ObjectKind::History, &zlib_compress(&bytes))
}

fn write_reflog(
    store: &Store,
    opts: &PublishOptions,
    prev: Option<&Previous>,
    refs: &[(ContentHash, RefType)],
    now: i64,
) -> Result<ContentHash> {
    let dir = store.temp_dir()?;
    let db = dir.path().join("reflog.db");
    let current = store.root().join(".cvmfsreflog");
    let existed = current.exists();
    if existed {
        std::fs::copy(&current, &db).map_err(PublishError::io("copy", &current))?;
    }
    let dbe = || PublishError::db(".cvmfsreflog");
    let r = Reflog::open_or_create(&db, &opts.fqrn).map_err(dbe())?;
    if let (false, Some(p)) = (existed, prev) {
        // A stratum without a reflog: record what the previous revision referenced.
        let ts = p
            .manifest
            .timestamp
            .and_then(|t| i64::try_from(t).ok())
            .unwrap_or(now);
        r.add(&p.manifest.root_catalog, RefType::Catalog, ts)
            .map_err(dbe())?;
        if let Some(x) = &p.manifest.certificate {
            r.add(x, RefType::Certificate, ts).map_err(dbe())?;
        }
        if let Some(h) = &p.manifest.history {
            r.add(h, RefType::History, ts).map_err(dbe())?;
        }
    }
    for (h, kind) in refs {
        r.add(h, *kind, now).map_err(dbe())?;
    }
    r.close().map_err(dbe())?;
    let bytes = std::fs::read(&db).map_err(PublishError::io("read", &db))?;
    store.replace_file(".cvmfsreflog", &bytes)?;
    Ok(opts.hash.digest(&bytes))
}

/// Is `dir` a stratum made by a publisher (has `.cvmfspublished`)?
pub fn is_stratum(dir: &Path) -> bool {
    dir.join(".cvmfspublished").is_file()
}
