//! The reader reads the repositories made by the real CernVM-FS tools exactly:
//! every MANIFEST.txt row, over file:// and over http:// from a real nginx.

use std::collections::BTreeMap;
use std::path::PathBuf;

use perch_cvmfs::{MountOptions, Repository};
use perch_testkit::{fixtures_dir, tempdir, Nginx};

/// One MANIFEST.txt row: column name → value, plus the path.
type Row = BTreeMap<String, String>;

fn manifest_rows(fqrn: &str) -> Vec<Row> {
    let text = std::fs::read_to_string(fixtures_dir().join(fqrn).join("MANIFEST.txt")).unwrap();
    let mut cols: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("#type") {
            cols = std::iter::once("type".to_string())
                .chain(h.split('\t').skip(1).map(str::to_string))
                .collect();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let vals: Vec<&str> = line.split('\t').collect();
        assert_eq!(vals.len(), cols.len(), "row {line}");
        rows.push(
            cols.iter()
                .cloned()
                .zip(vals.iter().map(|s| s.to_string()))
                .collect(),
        );
    }
    rows
}

fn sha1_hex(data: &[u8]) -> String {
    perch_format::hash::Algorithm::Sha1.digest(data).hex()
}

/// The row perch reports for `rel` (manifest path form: `.` or `a/b`).
fn observed(repo: &Repository, rel: &str, template: &Row) -> Row {
    let path = if rel == "." {
        Vec::new()
    } else {
        format!("/{rel}").into_bytes()
    };
    let node = repo
        .lookup(&path)
        .unwrap()
        .unwrap_or_else(|| panic!("{rel}: not found"));
    let e = &node.entry;
    let mut r = Row::new();
    let ty = if e.is_dir() {
        "d"
    } else if e.is_symlink() {
        "l"
    } else {
        "f"
    };
    r.insert("type".into(), ty.into());
    r.insert("mode".into(), format!("{:o}", e.mode & 0o7777));
    r.insert("uid".into(), e.uid.to_string());
    r.insert("gid".into(), e.gid.to_string());
    r.insert("path".into(), rel.into());
    let dash = || "-".to_string();
    // Columns the manifest leaves open ('-') are not compared.
    r.insert(
        "mtime".into(),
        if template["mtime"] == "-" {
            dash()
        } else {
            e.mtime.to_string()
        },
    );
    match ty {
        "d" => {
            for c in [
                "size",
                "nlink",
                "sha1",
                "target",
                "cvmfs_hash",
                "chunks",
                "hardlink_group",
            ] {
                r.insert(c.into(), dash());
            }
        }
        "l" => {
            let t = repo.readlink(&node);
            r.insert("size".into(), t.len().to_string());
            r.insert("target".into(), String::from_utf8(t).unwrap());
            r.insert("nlink".into(), e.linkcount.to_string());
            for c in ["sha1", "cvmfs_hash", "chunks", "hardlink_group"] {
                r.insert(c.into(), dash());
            }
        }
        _ => {
            let data = repo.read(&node).unwrap();
            assert_eq!(data.len() as u64, e.size, "{rel}: size");
            r.insert("size".into(), data.len().to_string());
            r.insert("sha1".into(), sha1_hex(&data));
            r.insert("nlink".into(), e.linkcount.to_string());
            r.insert("target".into(), dash());
            let hash = repo.xattr(&node, "user.hash").unwrap();
            r.insert(
                "cvmfs_hash".into(),
                hash.map(|h| String::from_utf8(h).unwrap())
                    .unwrap_or_else(dash),
            );
            let chunks = repo.xattr(&node, "user.chunks").unwrap().unwrap();
            r.insert("chunks".into(), String::from_utf8(chunks).unwrap());
            r.insert(
                "hardlink_group".into(),
                if e.hardlink_group > 0 {
                    template["hardlink_group"].clone()
                } else {
                    dash()
                },
            );
        }
    }
    let xattrs: Vec<String> = e
        .xattrs
        .iter()
        .filter(|(k, _)| k.starts_with(b"user."))
        .map(|(k, v)| {
            format!(
                "{}={}",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(v)
            )
        })
        .collect();
    r.insert(
        "xattrs".into(),
        if xattrs.is_empty() || ty == "l" {
            dash()
        } else {
            xattrs.join(";")
        },
    );
    r
}

/// All paths in the repository, in manifest form, sorted.
fn walk(repo: &Repository) -> Vec<String> {
    let mut out = vec![".".to_string()];
    let mut stack = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        for n in repo.list(&dir).unwrap() {
            out.push(String::from_utf8(n.path[1..].to_vec()).unwrap());
            if n.entry.is_dir() {
                stack.push(n.path.clone());
            }
        }
    }
    out.sort();
    out
}

fn mount(fqrn: &str, server: String, cache: PathBuf, tag: Option<&str>) -> Repository {
    let key = fixtures_dir()
        .join(fqrn)
        .join("keys")
        .join(format!("{fqrn}.pub"));
    let mut o = MountOptions::new(fqrn, &server, vec![key], cache);
    o.tag = tag.map(str::to_string);
    Repository::mount(o)
        .unwrap_or_else(|e| panic!("mount {fqrn}: {}", perch_cvmfs::error_chain(&e)))
}

fn check_all(repo: &Repository, fqrn: &str, filter: impl Fn(&Row) -> bool) -> usize {
    let rows: Vec<Row> = manifest_rows(fqrn)
        .into_iter()
        .filter(|r| filter(r))
        .collect();
    let expected_paths: Vec<String> = rows.iter().map(|r| r["path"].clone()).collect();
    assert_eq!(
        walk(repo),
        expected_paths,
        "{fqrn}: the listing has exactly the manifest's paths"
    );
    for want in &rows {
        let got = observed(repo, &want["path"], want);
        assert_eq!(&got, want, "{fqrn}: row {}", want["path"]);
    }
    rows.len()
}

fn file_url(fqrn: &str) -> String {
    format!(
        "file://{}",
        fixtures_dir()
            .join(fqrn)
            .join("stratum0")
            .canonicalize()
            .unwrap()
            .display()
    )
}

#[test]
fn tiny_every_row_matches_over_file_url() {
    let cache = tempdir().unwrap();
    let repo = mount(
        "tiny.example.org",
        file_url("tiny.example.org"),
        cache.path().into(),
        None,
    );
    assert_eq!(repo.revision(), 2);
    assert_eq!(check_all(&repo, "tiny.example.org", |_| true), 17);
    assert_eq!(
        repo.loaded_catalogs(),
        2,
        "root and the nested /from-tar catalog"
    );
}

#[test]
fn tiny_at_tag_v1_has_no_nested_catalog() {
    let cache = tempdir().unwrap();
    let repo = mount(
        "tiny.example.org",
        file_url("tiny.example.org"),
        cache.path().into(),
        Some("v1"),
    );
    assert_eq!(repo.revision(), 1);
    assert_eq!(repo.tag(), Some("v1"));
    let n = check_all(&repo, "tiny.example.org", |r| {
        !r["path"].starts_with("from-tar")
    });
    assert_eq!(n, 8);
    assert!(repo.lookup(b"/from-tar").unwrap().is_none());
}

#[test]
fn unknown_tag_is_a_clear_error() {
    let cache = tempdir().unwrap();
    let key = fixtures_dir().join("tiny.example.org/keys/tiny.example.org.pub");
    let mut o = MountOptions::new(
        "tiny.example.org",
        &file_url("tiny.example.org"),
        vec![key],
        cache.path().into(),
    );
    o.tag = Some("nope".into());
    let e = Repository::mount(o).unwrap_err();
    assert_eq!(perch_cvmfs::error_chain(&e), "tag \"nope\" not found");
}

#[test]
fn alt_every_row_matches_over_http_from_nginx() {
    let nginx = Nginx::start(&fixtures_dir()).unwrap();
    let cache = tempdir().unwrap();
    let url = format!("{}/alt.example.org/stratum0", nginx.url());
    let repo = mount("alt.example.org", url, cache.path().into(), None);
    assert_eq!(check_all(&repo, "alt.example.org", |_| true), 9);
    let chunked = repo.lookup(b"/chunked.bin").unwrap().unwrap();
    assert_eq!(repo.chunks(&chunked).unwrap().len(), 7);
    // A second mount over the same cache sends only the manifest and whitelist requests.
    let again = mount(
        "alt.example.org",
        format!("{}/alt.example.org/stratum0", nginx.url()),
        cache.path().into(),
        None,
    );
    check_all(&again, "alt.example.org", |_| true);
    assert_eq!(
        again
            .fetcher()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert_eq!(
        again
            .cache()
            .stats
            .downloads
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
