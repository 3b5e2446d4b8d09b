//! Alien cache (spec §11.6): many perch processes on one cache directory, no locks
//! beyond atomic create/rename, every object fetched from the stratum once.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use perch_publish::{keygen, publish, PublishOptions};
use perch_testkit::{tempdir, Nginx};

const FQRN: &str = "alien.example.org";
const PROCS: usize = 16;
const FILES: usize = 200;

/// A 200-file tree in 10 directories, sizes from 0 to ~300 KB, deterministic content.
fn build_tree(src: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    for i in 0..FILES {
        let dir = src.join(format!("d{:02}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        let size = (i * 7919) % 300_000;
        let mut data = Vec::with_capacity(size);
        let mut x: u32 = 0x9e37_79b9 ^ u32::try_from(i).unwrap();
        while data.len() < size {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Half-compressible: text-like bytes.
            data.push(b'a' + u8::try_from(x % 16).unwrap());
        }
        let name = format!("d{:02}/f{i:03}", i % 10);
        std::fs::write(src.join(&name), data).unwrap();
        paths.push(name);
    }
    paths
}

struct Setup {
    _tmp: perch_testkit::TempDir,
    nginx: Nginx,
    root: PathBuf,
    config: PathBuf,
    alien: PathBuf,
    paths: Vec<String>,
}

fn setup() -> Setup {
    let tmp = tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let src = root.join("src");
    let paths = build_tree(&src);
    let keys = root.join("keys");
    keygen(FQRN, &keys, 30).unwrap();
    let stratum = root.join("www").join(FQRN);
    let mut o = PublishOptions::new(&src, FQRN, &keys, &stratum);
    o.chunking = None;
    publish(&o).unwrap();
    let nginx = Nginx::start(&root.join("www")).unwrap();
    let alien = root.join("alien");
    let config = root.join("client.conf");
    std::fs::write(
        &config,
        format!(
            "CVMFS_SERVER_URL={}/@fqrn@\nCVMFS_HTTP_PROXY=DIRECT\nCVMFS_PUBLIC_KEY={}\nCVMFS_ALIEN_CACHE={}\nCVMFS_QUOTA_LIMIT=-1\n",
            nginx.url(),
            keys.join(format!("{FQRN}.pub")).display(),
            alien.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    Setup {
        _tmp: tmp,
        nginx,
        root,
        config,
        alien,
        paths,
    }
}

fn perch(s: &Setup, args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_perch"));
    c.args(args)
        .arg("--config-dir")
        .arg(s.root.join("etc"))
        .arg("--config")
        .arg(&s.config)
        .env("HOME", &s.root)
        .env_remove("XDG_CACHE_HOME")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("CVMFS_") {
            c.env_remove(k);
        }
    }
    c
}

fn wait_all(children: Vec<std::process::Child>) -> Vec<Output> {
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

#[test]
fn sixteen_processes_fill_one_alien_cache_each_object_fetched_once() {
    let s = setup();
    let mut cat_args = vec!["cat".to_string()];
    cat_args.extend(s.paths.iter().map(|p| format!("/cvmfs/{FQRN}/{p}")));
    // Half the processes cat every file, the other half list the tree first and then cat
    // it in reverse order, all started together.
    let mut children = Vec::new();
    for i in 0..PROCS {
        let args = if i % 2 == 0 {
            cat_args.clone()
        } else {
            let mut a = vec!["cat".to_string()];
            a.extend(s.paths.iter().rev().map(|p| format!("/cvmfs/{FQRN}/{p}")));
            a
        };
        children.push(perch(&s, &args).spawn().unwrap());
    }
    let finds: Vec<_> = (0..4)
        .map(|_| {
            perch(&s, &["find".into(), format!("/cvmfs/{FQRN}")])
                .spawn()
                .unwrap()
        })
        .collect();
    let outs = wait_all(children);
    let find_outs = wait_all(finds);
    for o in outs.iter().chain(&find_outs) {
        assert!(
            o.status.success(),
            "perch failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.stderr.is_empty(),
            "stderr: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Identical outputs (the reversed ones compared with the expected reversed content).
    let mut forward = Vec::new();
    let mut backward = Vec::new();
    for p in &s.paths {
        forward.extend(std::fs::read(s.root.join("src").join(p)).unwrap());
    }
    for p in s.paths.iter().rev() {
        backward.extend(std::fs::read(s.root.join("src").join(p)).unwrap());
    }
    for (i, o) in outs.iter().enumerate() {
        let want = if i % 2 == 0 { &forward } else { &backward };
        assert!(o.stdout == *want, "process {i}: output differs");
    }
    for o in &find_outs[1..] {
        assert_eq!(o.stdout, find_outs[0].stdout);
    }
    // Every object from nginx exactly once.
    let mut per_object: BTreeMap<String, usize> = BTreeMap::new();
    for e in s.nginx.requests() {
        if e.uri.contains("/data/") {
            *per_object.entry(e.uri).or_default() += 1;
        }
    }
    let repeated: Vec<_> = per_object.iter().filter(|(_, &n)| n != 1).collect();
    assert!(repeated.is_empty(), "fetched more than once: {repeated:?}");
    // Files (some are empty and identical, so count distinct hashes) + catalog + certificate.
    assert!(per_object.len() > FILES / 2, "{} objects", per_object.len());
    // Group-shared sticky directories, objects with no write bit, nothing left in txn/.
    let leftovers: Vec<_> = std::fs::read_dir(s.alien.join("txn"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    for d in std::fs::read_dir(&s.alien).unwrap().flatten() {
        let m = d.metadata().unwrap();
        let name = d.file_name().to_string_lossy().into_owned();
        if m.is_dir() && name.len() == 2 {
            assert_eq!(
                m.permissions().mode() & 0o7777,
                0o3770,
                "{}",
                d.path().display()
            );
            for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                let fm = f.metadata().unwrap();
                assert_eq!(
                    fm.permissions().mode() & 0o777,
                    0o555,
                    "{}",
                    f.path().display()
                );
            }
        }
    }
    // A later process finds everything complete: no object download at all.
    let before = s.nginx.count_requests("/data/");
    let o = perch(&s, &cat_args).output().unwrap();
    assert!(o.status.success());
    assert!(o.stdout == forward);
    assert_eq!(s.nginx.count_requests("/data/"), before);
}
