//! Direct commands: read a repository without interposition
//! (`perch ls|cat|stat|find|config show`).

use std::io::Write;
use std::sync::Arc;

use anyhow::anyhow;
use perch_cvmfs::{Node, Repository, ResolveError};

use crate::exit::{Classify, Fail, Failure};
use crate::mounts::Client;

fn lookup(client: &mut Client, path: &str, follow: bool) -> Result<(Arc<Repository>, Node), Fail> {
    let (fqrn, inner) = client.split_path(path).or_fail(Failure::Usage)?;
    let repo = client.mount(fqrn)?;
    let md = client.mount_dir().to_string_lossy().into_owned();
    match repo.resolve(inner.as_bytes(), follow, md.as_bytes()) {
        Ok(Some(n)) => Ok((repo, n)),
        Ok(None) => Err(Fail::new(
            Failure::NotFound,
            anyhow!("{path}: no such file or directory"),
        )),
        Err(ResolveError::Repo(e)) => Err(Fail::new(
            Failure::Io,
            anyhow!("{path}: {}", perch_cvmfs::error_chain(&e)),
        )),
        Err(e) => Err(Fail::new(Failure::NotFound, anyhow!("{path}: {e}"))),
    }
}

/// Treat a closed stdout (`perch cat x | head`) as success.
fn out_ok(r: std::io::Result<()>) -> Result<(), Fail> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.or_fail(Failure::Io),
    }
}

/// `perch cat PATH...`: file bytes to stdout, byte-exact.
pub fn cat(client: &mut Client, paths: &[String]) -> Result<(), Fail> {
    let stdout = std::io::stdout();
    for p in paths {
        let (repo, node) = lookup(client, p, true)?;
        if node.entry.is_dir() {
            return Err(Fail::new(Failure::Io, anyhow!("{p}: is a directory")));
        }
        let file = repo.fetch(&node).map_err(|e| {
            Fail::new(
                Failure::Io,
                anyhow!("{p}: {}", perch_cvmfs::error_chain(&e)),
            )
        })?;
        let mut f = std::fs::File::open(&file).or_fail(Failure::Io)?;
        let mut lock = stdout.lock();
        match std::io::copy(&mut f, &mut lock) {
            Ok(_) => {}
            Err(e) => return out_ok(Err(e)),
        }
        out_ok(lock.flush())?;
    }
    Ok(())
}

fn mode_string(mode: u32) -> String {
    let t = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o010000 => 'p',
        0o140000 => 's',
        0o020000 => 'c',
        0o060000 => 'b',
        _ => '-',
    };
    let mut s = String::from(t);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (b, c)) in bits.iter().enumerate() {
        let mut ch = if mode & b != 0 { *c } else { '-' };
        let special = match i {
            2 => Some((0o4000, 's', 'S')),
            5 => Some((0o2000, 's', 'S')),
            8 => Some((0o1000, 't', 'T')),
            _ => None,
        };
        if let Some((sb, lower, upper)) = special {
            if mode & sb != 0 {
                ch = if ch == 'x' { lower } else { upper };
            }
        }
        s.push(ch);
    }
    s
}

fn file_type(node: &Node) -> &'static str {
    let e = &node.entry;
    if e.is_dir() {
        "directory"
    } else if e.is_symlink() {
        "symbolic link"
    } else if e.is_special() {
        match e.mode & 0o170000 {
            0o010000 => "fifo",
            0o140000 => "socket",
            0o020000 => "character special file",
            _ => "block special file",
        }
    } else if e.size == 0 {
        "regular empty file"
    } else {
        "regular file"
    }
}

fn shown_size(repo: &Repository, node: &Node) -> u64 {
    if node.entry.is_symlink() {
        repo.readlink(node).len() as u64
    } else if node.entry.is_special() {
        0
    } else {
        node.entry.size
    }
}

fn fmt_time(secs: i64, ns: u32) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:09} +0000",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        ns
    )
}

/// `perch stat PATH...`: the fields of stat(1) plus the content hash and chunk count.
pub fn stat(client: &mut Client, paths: &[String], follow: bool) -> Result<(), Fail> {
    let mut out = String::new();
    for p in paths {
        let (repo, node) = lookup(client, p, follow)?;
        let e = &node.entry;
        let size = shown_size(&repo, &node);
        let name = if e.is_symlink() {
            format!("{p} -> {}", String::from_utf8_lossy(&repo.readlink(&node)))
        } else {
            p.clone()
        };
        let ts = fmt_time(e.mtime, e.mtime_ns.unwrap_or(0));
        out += &format!("  File: {name}\n");
        out += &format!(
            "  Size: {size:<15}\tBlocks: {:<10} IO Block: 4096   {}\n",
            1 + size / 512,
            file_type(&node)
        );
        out += &format!(
            "Device: 1\tInode: {:<11} Links: {}\n",
            node.inode, e.linkcount
        );
        out += &format!(
            "Access: ({:04o}/{})  Uid: ({:5})   Gid: ({:5})\n",
            e.mode & 0o7777,
            mode_string(e.mode),
            e.uid,
            e.gid
        );
        out += &format!("Access: {ts}\nModify: {ts}\nChange: {ts}\n Birth: -\n");
        if e.is_regular() {
            let hash = repo.xattr(&node, "user.hash").ok().flatten();
            let chunks = repo.xattr(&node, "user.chunks").ok().flatten();
            let s = |v: Option<Vec<u8>>| {
                v.map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_else(|| "-".into())
            };
            out += &format!("  Hash: {}\nChunks: {}\n", s(hash), s(chunks));
        }
    }
    out_ok(std::io::stdout().write_all(out.as_bytes()))
}

fn ls_time(secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mon = months[usize::from(u8::from(t.month())) - 1];
    let six_months = 183 * 86400;
    if secs > now - six_months && secs <= now + 3600 {
        format!("{mon} {:>2} {:02}:{:02}", t.day(), t.hour(), t.minute())
    } else {
        format!("{mon} {:>2}  {:04}", t.day(), t.year())
    }
}

fn ls_line(repo: &Repository, node: &Node, name: &str) -> String {
    let e = &node.entry;
    let mut s = format!(
        "{} {:>2} {} {} {:>8} {} {}",
        mode_string(e.mode),
        e.linkcount,
        e.uid,
        e.gid,
        shown_size(repo, node),
        ls_time(e.mtime),
        name
    );
    if e.is_symlink() {
        s += &format!(" -> {}", String::from_utf8_lossy(&repo.readlink(node)));
    }
    s
}

/// `perch ls [-l] [-a] PATH...`.
pub fn ls(client: &mut Client, paths: &[String], long: bool, all: bool) -> Result<(), Fail> {
    let mut out = String::new();
    let many = paths.len() > 1;
    for (i, p) in paths.iter().enumerate() {
        let (repo, node) = lookup(client, p, true)?;
        if !node.entry.is_dir() {
            out += &(if long {
                ls_line(&repo, &node, p)
            } else {
                p.clone()
            });
            out.push('\n');
            continue;
        }
        if many {
            out += &format!("{}{p}:\n", if i > 0 { "\n" } else { "" });
        }
        let children = repo.list(&node.path).map_err(|e| {
            Fail::new(
                Failure::Io,
                anyhow!("{p}: {}", perch_cvmfs::error_chain(&e)),
            )
        })?;
        if long {
            let blocks: u64 = children
                .iter()
                .map(|c| shown_size(&repo, c).div_ceil(1024))
                .sum();
            out += &format!("total {blocks}\n");
        }
        if all && long {
            out += &format!("{}\n", ls_line(&repo, &node, "."));
        } else if all {
            out += ".\n..\n";
        }
        for c in children
            .iter()
            .filter(|c| all || !c.entry.name.starts_with(b"."))
        {
            let name = String::from_utf8_lossy(&c.entry.name).into_owned();
            out += &(if long { ls_line(&repo, c, &name) } else { name });
            out.push('\n');
        }
    }
    out_ok(std::io::stdout().write_all(out.as_bytes()))
}

fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    match (pat.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&pat[1..], s) || (!s.is_empty() && glob_match(pat, &s[1..])),
        (Some(b'?'), Some(_)) => glob_match(&pat[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_match(&pat[1..], &s[1..]),
        _ => false,
    }
}

/// `perch find PATH [-type f|d|l] [-name GLOB]`: every path below PATH, depth first, sorted.
pub fn find(
    client: &mut Client,
    path: &str,
    kind: Option<char>,
    name: Option<&str>,
) -> Result<(), Fail> {
    let (repo, node) = lookup(client, path, true)?;
    let stdout = std::io::stdout();
    let mut lock = std::io::BufWriter::new(stdout.lock());
    let base = path.trim_end_matches('/').to_string();
    let matches = |n: &Node| {
        let k = if n.entry.is_dir() {
            'd'
        } else if n.entry.is_symlink() {
            'l'
        } else if n.entry.is_special() {
            'p'
        } else {
            'f'
        };
        kind.is_none_or(|want| want == k)
            && name.is_none_or(|g| glob_match(g.as_bytes(), &n.entry.name))
    };
    let mut stack = vec![(base.clone(), node)];
    while let Some((shown, n)) = stack.pop() {
        let is_root = shown == base;
        if (!is_root || name.is_none()) && matches(&n) {
            out_ok(writeln!(lock, "{shown}"))?;
        }
        if n.entry.is_dir() {
            let children = repo.list(&n.path).map_err(|e| {
                Fail::new(
                    Failure::Io,
                    anyhow!("{shown}: {}", perch_cvmfs::error_chain(&e)),
                )
            })?;
            for c in children.into_iter().rev() {
                let s = format!("{shown}/{}", String::from_utf8_lossy(&c.entry.name));
                stack.push((s, c));
            }
        }
    }
    out_ok(lock.flush())
}

/// `perch config show FQRN`: effective values and where each came from.
pub fn config_show(client: &mut Client, fqrn: &str) -> Result<(), Fail> {
    let cfg = client.config(fqrn).or_fail(Failure::Config)?;
    out_ok(std::io::stdout().write_all(cfg.show().as_bytes()))?;
    // Shown, but not usable: say so, and fail like a mount would.
    if !fqrn.is_empty() && cfg.server_urls().is_empty() {
        return Err(Fail::new(
            Failure::Config,
            anyhow!(
                "no server configured for {fqrn} (set CVMFS_SERVER_URL, e.g. with --config FILE)"
            ),
        ));
    }
    Ok(())
}
