//! `perch keygen`, `perch publish` and `perch serve`.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use perch_publish::{Algorithm, ChunkSizes, Compression, PublishOptions};

use crate::exit::{Classify, Fail, Failure};

/// Arguments of `perch publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Directory to publish.
    pub src: PathBuf,
    /// Repository name.
    #[arg(long)]
    pub fqrn: String,
    /// Directory with the keys made by `perch keygen`.
    #[arg(long)]
    pub keys: PathBuf,
    /// Stratum directory (created for revision 1, updated afterwards).
    #[arg(long)]
    pub stratum: PathBuf,
    /// Also tag this revision.
    #[arg(long)]
    pub tag: Option<String>,
    /// Content hash algorithm.
    #[arg(long, default_value = "sha1", value_parser = ["sha1", "shake128", "rmd160"])]
    pub hash: String,
    /// Compression of file objects.
    #[arg(long, default_value = "zlib", value_parser = ["zlib", "none"])]
    pub compression: String,
    /// Content-defined chunking of large files: MIN,AVG,MAX in bytes, or "off".
    #[arg(long = "chunk-sizes", default_value = "4194304,8388608,16777216")]
    pub chunk_sizes: String,
    /// Days until the whitelist written with this revision expires.
    #[arg(long = "whitelist-days", default_value_t = 30)]
    pub whitelist_days: u32,
}

/// Parse `MIN,AVG,MAX` or `off`.
fn chunking(s: &str) -> Result<Option<ChunkSizes>, Fail> {
    if s == "off" || s == "none" {
        return Ok(None);
    }
    let v: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            Fail::new(
                Failure::Usage,
                anyhow::anyhow!("--chunk-sizes {s:?}: expected MIN,AVG,MAX in bytes or off"),
            )
        })?;
    let [min, avg, max] = v[..] else {
        return Err(Fail::new(
            Failure::Usage,
            anyhow::anyhow!("--chunk-sizes {s:?}: expected three numbers MIN,AVG,MAX"),
        ));
    };
    ChunkSizes::new(min, avg, max)
        .map(Some)
        .or_fail(Failure::Usage)
}

/// Build the publisher options from the command line.
pub fn options(a: &PublishArgs) -> Result<PublishOptions, Fail> {
    let mut o = PublishOptions::new(&a.src, &a.fqrn, &a.keys, &a.stratum);
    o.tag = a.tag.clone();
    o.hash = a.hash.parse::<Algorithm>().or_fail(Failure::Usage)?;
    o.compression = a
        .compression
        .parse::<Compression>()
        .map_err(|e| Fail::new(Failure::Usage, anyhow::anyhow!(e)))?;
    o.chunking = chunking(&a.chunk_sizes)?;
    o.whitelist_days = a.whitelist_days;
    o.progress = std::io::stderr().is_terminal();
    Ok(o)
}

/// `perch publish`.
pub fn publish(a: &PublishArgs) -> Result<(), Fail> {
    let o = options(a)?;
    let r = perch_publish::publish(&o).or_fail(Failure::Publish)?;
    let secs = r.elapsed.as_secs_f64();
    // A rate over a few milliseconds says nothing: shown from 0.1 s on.
    let rate = if secs >= 0.1 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let per_sec = (r.bytes as f64 / secs) as u64;
        format!(
            ", {}/s, {:.0} files/s",
            size(per_sec),
            r.files as f64 / secs
        )
    } else {
        String::new()
    };
    let text = format!(
        "published {} revision {} (root catalog {})\n  {} files, {} directories, {} symlinks, {}\n  {} new objects ({}), {} reused, {} catalogs\n  {:.2} s{rate}\n",
        a.fqrn,
        r.revision,
        r.root_hash,
        r.files,
        r.directories,
        r.symlinks,
        size(r.bytes),
        r.new_objects,
        size(r.new_bytes),
        r.reused_objects,
        r.catalogs.len(),
        secs,
    );
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}

/// Bytes in binary units, as the progress bars show them (`512 B`, `1.5 KiB`, `3.2 MiB`).
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[allow(clippy::cast_precision_loss)]
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `perch keygen FQRN KEYDIR`.
pub fn keygen(fqrn: &str, keydir: &Path, days: u32) -> Result<(), Fail> {
    perch_publish::keygen(fqrn, keydir, days).or_fail(Failure::Publish)?;
    let text = format!(
        "keys for {fqrn} written to {}\n  {fqrn}.pub is the public master key clients need (CVMFS_PUBLIC_KEY)\n",
        keydir.display()
    );
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}

/// `perch serve DIR --listen ADDR`: serve until interrupted.
pub fn serve(dir: &Path, listen: SocketAddr) -> Result<(), Fail> {
    if !perch_publish::is_stratum(dir) {
        return Err(Fail::new(
            Failure::Usage,
            anyhow::anyhow!(
                "{} is not a stratum (no .cvmfspublished): serve the directory given to perch publish --stratum",
                dir.display()
            ),
        ));
    }
    let server = perch_publish::serve(dir, listen).or_fail(Failure::Publish)?;
    let text = format!(
        "serving {} at {}; clients set CVMFS_SERVER_URL={} (Ctrl-C to stop)\n",
        dir.display(),
        server.url(),
        server.url()
    );
    let _ = std::io::stdout().write_all(text.as_bytes());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
