//! What a program under perch sees of perch's cache (issue 9): `/proc/<pid>/maps`, `smaps` and
//! `numa_maps` name mapped repository files by their `/cvmfs` path, not by their place in the
//! shadow tree, as readlink of `/proc/<pid>/fd/N` and `/proc/<pid>/exe` already does. perch
//! reads the file itself, translates it, and hands the program a snapshot of it (a memfd).
//!
//! This hides the cache's location from the casual reader; it is not what protects the cache
//! (a program can find its files anyway): objects have no write bit and are verified before
//! they are served (DESIGN.md §4a).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use perch_intercept::Errno;

/// The real `/proc/<pid>/{maps,smaps,numa_maps}` (also below `task/<tid>/`) that `real` (the
/// program's path with `/proc/self` resolved to its pid) names, if it names one.
pub fn maps_file(real: &Path) -> Option<PathBuf> {
    let name = real.file_name()?.to_str()?;
    matches!(name, "maps" | "smaps" | "numa_maps").then(|| real.to_path_buf())
}

/// Replace shadow paths in one line of a maps-like file with their virtual paths.
fn translate_line(
    line: &[u8],
    shadow_root: &[u8],
    to_virtual: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
) -> Vec<u8> {
    let Some(at) = line
        .windows(shadow_root.len())
        .position(|w| w == shadow_root)
    else {
        return line.to_vec();
    };
    // numa_maps: `file=PATH key=value…`; maps, smaps: the path runs to the end of the line.
    let numa = line[..at].ends_with(b"file=");
    let mut end = if numa {
        line[at..]
            .iter()
            .position(|&b| b == b' ')
            .map_or(line.len(), |i| at + i)
    } else {
        line.len()
    };
    let deleted = b" (deleted)";
    if line[at..end].ends_with(deleted) {
        end -= deleted.len();
    }
    match to_virtual(&line[at..end]) {
        Some(v) => {
            let mut out = line[..at].to_vec();
            out.extend_from_slice(&v);
            out.extend_from_slice(&line[end..]);
            out
        }
        None => line.to_vec(),
    }
}

/// The translated content of `real` in a memfd positioned at its start.
pub fn translated(
    real: &Path,
    shadow_root: &[u8],
    to_virtual: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
) -> Result<OwnedFd, Errno> {
    let text = std::fs::read(real).map_err(|e| Errno::from_io(&e))?;
    let mut out = Vec::with_capacity(text.len());
    for line in text.split_inclusive(|&b| b == b'\n') {
        out.extend(translate_line(line, shadow_root, to_virtual));
    }
    let fd = rustix::fs::memfd_create("perch-maps", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| Errno::new(e.raw_os_error()))?;
    let mut f = std::fs::File::from(fd);
    f.write_all(&out).map_err(|e| Errno::from_io(&e))?;
    rustix::fs::seek(&f, rustix::fs::SeekFrom::Start(0))
        .map_err(|e| Errno::new(e.raw_os_error()))?;
    Ok(f.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(p: &[u8]) -> Option<Vec<u8>> {
        let rest = p.strip_prefix(b"/c/shadow/0/repo.org@abc")?;
        let mut out = b"/cvmfs/repo.org".to_vec();
        out.extend_from_slice(rest);
        Some(out)
    }

    #[test]
    fn shadow_paths_become_cvmfs_paths_in_maps_and_numa_maps() {
        let root = b"/c/shadow/0/";
        let maps = b"7f00-7f01 r--p 00000000 08:01 42   /c/shadow/0/repo.org@abc/lib/libx.so\n";
        assert_eq!(
            translate_line(maps, root, &v),
            b"7f00-7f01 r--p 00000000 08:01 42   /cvmfs/repo.org/lib/libx.so\n".to_vec()
        );
        let del = b"7f00-7f01 r--p 00000000 08:01 42 /c/shadow/0/repo.org@abc/a (deleted)\n";
        assert_eq!(
            translate_line(del, root, &v),
            b"7f00-7f01 r--p 00000000 08:01 42 /cvmfs/repo.org/a (deleted)\n".to_vec()
        );
        let numa = b"7f00 default file=/c/shadow/0/repo.org@abc/bin/sh mapped=3 N0=3\n";
        assert_eq!(
            translate_line(numa, root, &v),
            b"7f00 default file=/cvmfs/repo.org/bin/sh mapped=3 N0=3\n".to_vec()
        );
        let other = b"7f00-7f01 r--p 00000000 08:01 42 /usr/lib/libc.so.6\n";
        assert_eq!(translate_line(other, root, &v), other.to_vec());
    }
}
