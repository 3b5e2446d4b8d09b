//! `perch demo`: publish a built-in tree into a temporary stratum, serve it on
//! 127.0.0.1, read it back and run real programs on it under `perch run`, then
//! remove everything it made. Works offline: nothing leaves the loopback.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::exit::{Classify, Fail, Failure};

const FQRN: &str = "demo.perch.local";

/// The built-in tree: (path, mode, content).
const TREE: &[(&str, u32, &str)] = &[
    (
        "python/greet/__init__.py",
        0o644,
        include_str!("../demo/tree/python/greet/__init__.py"),
    ),
    (
        "bin/analyze.sh",
        0o755,
        include_str!("../demo/tree/bin/analyze.sh"),
    ),
    (
        "include/tiny/vec.h",
        0o644,
        include_str!("../demo/tree/include/tiny/vec.h"),
    ),
    (
        "data/README",
        0o644,
        include_str!("../demo/tree/data/README"),
    ),
];

/// Size of the generated data file (chunked by the publisher).
const DATA_BYTES: usize = 6 << 20;

fn write_tree(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for (rel, mode, content) in TREE {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("relative path has a parent"))?;
        std::fs::write(&p, content)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
    }
    // Deterministic pseudo-random "events" (xorshift), so every demo publishes the same objects.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data = Vec::with_capacity(DATA_BYTES);
    while data.len() < DATA_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(root.join("data/events.bin"), &data)?;
    std::os::unix::fs::symlink("python/greet", root.join("greet"))?;
    Ok(())
}

struct Say(std::io::Stdout);

impl Say {
    fn line(&mut self, s: &str) {
        let _ = writeln!(self.0, "{s}");
        let _ = self.0.flush();
    }
}

fn ms(t: Instant) -> String {
    format!("{:.0} ms", t.elapsed().as_secs_f64() * 1000.0)
}

/// Run the demo.
pub fn demo() -> Result<(), Fail> {
    let tmp = tempfile::Builder::new()
        .prefix("perch-demo-")
        .tempdir()
        .or_fail(Failure::Io)?;
    let r = run_demo(tmp.path());
    // The temp dir (stratum, keys, cache, shadow tree) goes away here, also on failure.
    drop(tmp);
    r.or_fail(Failure::Internal)
}

fn run_demo(dir: &Path) -> Result<()> {
    let mut say = Say(std::io::stdout());
    let src = dir.join("src");
    let keys = dir.join("keys");
    let stratum = dir.join("stratum");
    let cache = dir.join("cache");
    say.line(&format!(
        "perch demo: everything lives in {} and is removed at the end\n",
        dir.display()
    ));

    let t = Instant::now();
    write_tree(&src).context("writing the demo tree")?;
    perch_publish::keygen(FQRN, &keys, 30).context("making keys")?;
    say.line(&format!("1. keys made for {FQRN} ({})", ms(t)));

    let t = Instant::now();
    let mut o = perch_publish::PublishOptions::new(&src, FQRN, &keys, &stratum);
    o.chunking = Some(perch_publish::ChunkSizes::new(1 << 20, 2 << 20, 4 << 20)?);
    let rep = perch_publish::publish(&o).context("publishing the demo tree")?;
    say.line(&format!(
        "2. published revision {}: {} files, {:.1} MB, {} objects, root catalog {} ({})",
        rep.revision,
        rep.files,
        rep.bytes as f64 / 1e6,
        rep.new_objects,
        &rep.root_hash.to_string()[..12],
        ms(t)
    ));

    let server =
        perch_publish::serve(&stratum, "127.0.0.1:0".parse()?).context("serving the stratum")?;
    let conf = dir.join("client.conf");
    std::fs::write(
        &conf,
        format!(
            "CVMFS_REPOSITORIES={FQRN}\nCVMFS_SERVER_URL={}/cvmfs/@fqrn@\nCVMFS_HTTP_PROXY=DIRECT\nCVMFS_PUBLIC_KEY={}\nCVMFS_CACHE_BASE={}\n",
            server.url(),
            keys.join(format!("{FQRN}.pub")).display(),
            cache.display()
        ),
    )?;
    say.line(&format!(
        "3. serving it at {}/cvmfs/{FQRN} (loopback only)",
        server.url()
    ));

    let exe = std::env::current_exe().context("finding the perch executable")?;
    let perch = |args: &[&str]| -> Result<(String, f64)> {
        let t = Instant::now();
        let out = Command::new(&exe)
            .args(args)
            .env_remove("CVMFS_SERVER_URL")
            .output()
            .with_context(|| format!("running perch {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "perch {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            t.elapsed().as_secs_f64() * 1000.0,
        ))
    };
    let c = conf.to_string_lossy().into_owned();
    let root = format!("/cvmfs/{FQRN}");

    let (listing, t_ls) = perch(&["ls", "-l", "--config", &c, &root])?;
    say.line(&format!(
        "4. perch ls -l {root}  (cold cache, {t_ls:.0} ms)"
    ));
    for l in listing.lines() {
        say.line(&format!("     {l}"));
    }
    let (stat, _) = perch(&["stat", "--config", &c, &format!("{root}/data/events.bin")])?;
    let chunks = stat
        .lines()
        .find(|l| l.starts_with("Chunks:"))
        .unwrap_or("Chunks: ?")
        .to_string();
    say.line(&format!(
        "   data/events.bin is stored in content-defined chunks ({})",
        chunks.trim()
    ));

    let script = format!(
        "cd {root} && echo \"   cwd: $(pwd)\" && PYTHONPATH={root}/python PYTHONDONTWRITEBYTECODE=1 python3 -c \
         'import greet; print(\"  \", greet.hello(\"perch\")); print(\"   sha1 of events.bin:\", greet.digest(\"data/events.bin\"))' \
         && ./bin/analyze.sh | sed 's/^/   /' && touch {root}/new 2>&1 | sed 's/^/   expected: /'"
    );
    say.line(&format!(
        "5. perch run -- sh -c '<python3 and a shell tool from {root}>'"
    ));
    let (out, t_run) = perch(&["run", "--config", &c, "--", "sh", "-c", &script])?;
    for l in out.lines() {
        say.line(l);
    }
    say.line(&format!(
        "   (no privileges, FUSE or cvmfs installation involved, {t_run:.0} ms)"
    ));
    let (_, t_warm) = perch(&["run", "--config", &c, "--", "sh", "-c", &script])?;
    say.line(&format!("   second run with a warm cache: {t_warm:.0} ms"));

    let (_, t_warm) = perch(&["ls", "-l", "--config", &c, &root])?;
    let objects = count_files(&cache.join(FQRN));
    say.line(&format!(
        "6. cache: {} objects, {:.1} MB in {}; warm ls took {t_warm:.0} ms",
        objects.0,
        objects.1 as f64 / 1e6,
        cache.display()
    ));
    server.stop();
    say.line("\ndone: stratum, keys and cache removed. Next: perch publish your own tree, perch run your program.");
    Ok(())
}

fn count_files(dir: &Path) -> (u64, u64) {
    let mut n = 0;
    let mut bytes = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name();
            if ft.is_dir() && name != "txn" && name != "shadow" {
                stack.push(e.path());
            } else if ft.is_file()
                && !name.to_string_lossy().starts_with("cvmfschecksum")
                && !name.to_string_lossy().starts_with("manifest.")
            {
                n += 1;
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    (n, bytes)
}
