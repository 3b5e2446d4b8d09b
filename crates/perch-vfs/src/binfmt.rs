//! `binfmt`: what the kernel would do with the first bytes of an executable: `#!` interpreter lines and
//! ELF `PT_INTERP`. Pure functions over bytes, so they are tested without processes.

use std::os::unix::ffi::OsStrExt;

/// The kernel's `BINPRM_BUF_SIZE`: a `#!` line longer than this is truncated (since 5.1: refused).
pub const BINPRM_BUF_SIZE: usize = 256;

/// A parsed `#!` line: the interpreter path and its one optional argument, as
/// `fs/binfmt_script.c` splits them (leading blanks skipped, the interpreter ends at the first
/// blank, the rest up to the line end with trailing blanks removed is one argument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shebang {
    /// The interpreter as written.
    pub interp: Vec<u8>,
    /// The optional argument.
    pub arg: Option<Vec<u8>>,
}

fn blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Parses the start of a file as a `#!` script, `None` if it is not one (or has no interpreter).
pub fn shebang(head: &[u8]) -> Option<Shebang> {
    let rest = head.strip_prefix(b"#!")?;
    let rest = &rest[..rest.len().min(BINPRM_BUF_SIZE - 2)];
    let line = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => &rest[..i],
        None => rest,
    };
    let line = match line.iter().position(|&b| b == 0) {
        Some(i) => &line[..i],
        None => line,
    };
    let start = line.iter().position(|&b| !blank(b))?;
    let line = &line[start..];
    let end = line.iter().position(|&b| blank(b)).unwrap_or(line.len());
    let interp = line[..end].to_vec();
    let tail = &line[end..];
    let arg = match tail.iter().position(|&b| !blank(b)) {
        None => None,
        Some(s) => {
            let a = &tail[s..];
            let e = a.iter().rposition(|&b| !blank(b)).map_or(0, |i| i + 1);
            Some(a[..e].to_vec())
        }
    };
    Some(Shebang { interp, arg })
}

/// The kernel's limit of nested `#!` interpreters: `exec_binprm` fails with `ELOOP` when a
/// sixth script would be started.
pub const MAX_SCRIPT_DEPTH: usize = 5;

/// How a chain of `#!` scripts is started in one `execve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptChain {
    /// The real file of the last interpreter (the first that is not a script).
    pub program: std::path::PathBuf,
    /// The last interpreter as written in the `#!` line that named it.
    pub name: Vec<u8>,
    /// The arguments before the original `argv[1..]`: `[name, arg?, ..., interp1, arg1?, script]`.
    pub prepend: Vec<Vec<u8>>,
}

/// Why a chain cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError<E> {
    /// More than [`MAX_SCRIPT_DEPTH`] scripts (the kernel's `ELOOP`).
    TooDeep,
    /// An interpreter could not be resolved.
    Resolve(E),
}

/// Follows `#!` lines from `script` (whose own line is `first`) to a program that is not a
/// script, building the argument list exactly as `fs/binfmt_script.c` does level by level:
/// each level replaces `argv[0]` by `interpreter [arg] path-it-was-started-by`. Doing the whole
/// chain here (rather than leaving inner levels to the kernel) keeps every path the scripts see
/// virtual and lets interpreters in `/cvmfs` name interpreters in `/cvmfs`.
/// `resolve` maps an interpreter as written to its real file, `None` for a host file the
/// kernel can open by itself (the chain stops there: the kernel checks it and runs what
/// follows, as natively); `head` reads a file's first bytes.
pub fn script_chain<E>(
    script: Vec<u8>,
    first: Shebang,
    mut resolve: impl FnMut(&[u8]) -> Result<Option<std::path::PathBuf>, E>,
    mut head: impl FnMut(&std::path::Path) -> Vec<u8>,
) -> Result<ScriptChain, ChainError<E>> {
    let mut prepend = vec![script];
    let mut sb = first;
    let mut depth = 1;
    loop {
        let resolved = resolve(&sb.interp).map_err(ChainError::Resolve)?;
        let mut front = vec![sb.interp.clone()];
        front.extend(sb.arg);
        front.append(&mut prepend);
        prepend = front;
        let Some(real) = resolved else {
            return Ok(ScriptChain {
                program: std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&sb.interp)),
                name: sb.interp,
                prepend,
            });
        };
        match shebang(&head(&real)) {
            None => {
                return Ok(ScriptChain {
                    program: real,
                    name: sb.interp,
                    prepend,
                })
            }
            Some(next) => {
                depth += 1;
                if depth > MAX_SCRIPT_DEPTH {
                    return Err(ChainError::TooDeep);
                }
                sb = next;
            }
        }
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Where to read an ELF's program headers: `(offset, entry size, count)`, for a 64-bit
/// little-endian ELF (x86_64); `None` for anything else.
pub fn elf_phdrs(head: &[u8]) -> Option<(u64, usize, usize)> {
    if head.get(..4)? != b"\x7fELF" || *head.get(4)? != 2 || *head.get(5)? != 1 {
        return None;
    }
    let phoff = u64_at(head, 0x20)?;
    let phentsize = usize::from(u16_at(head, 0x36)?);
    let phnum = usize::from(u16_at(head, 0x38)?);
    if phentsize < 56 {
        return None;
    }
    Some((phoff, phentsize, phnum))
}

/// The `PT_INTERP` segment `(offset, size)` among program headers `phdrs`.
pub fn elf_interp_segment(phdrs: &[u8], phentsize: usize) -> Option<(u64, u64)> {
    const PT_INTERP: u32 = 3;
    phdrs
        .chunks(phentsize)
        .filter(|h| h.len() >= 56)
        .find(|h| u32_at(h, 0) == Some(PT_INTERP))
        .and_then(|h| Some((u64_at(h, 8)?, u64_at(h, 32)?)))
}

/// Reads the `PT_INTERP` path of the ELF file at `path` (without its NUL), if it has one.
pub fn elf_interp(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 64];
    f.read_exact_at(&mut head, 0).ok()?;
    let (phoff, phentsize, phnum) = elf_phdrs(&head)?;
    let mut phdrs = vec![0u8; phentsize.checked_mul(phnum)?.min(1 << 20)];
    f.read_exact_at(&mut phdrs, phoff).ok()?;
    let (off, size) = elf_interp_segment(&phdrs, phentsize)?;
    if size == 0 || size > 4096 {
        return None;
    }
    let mut interp = vec![0u8; usize::try_from(size).ok()?];
    f.read_exact_at(&mut interp, off).ok()?;
    let end = interp.iter().position(|&b| b == 0).unwrap_or(interp.len());
    interp.truncate(end);
    Some(interp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(i: &str, a: Option<&str>) -> Option<Shebang> {
        Some(Shebang {
            interp: i.as_bytes().to_vec(),
            arg: a.map(|a| a.as_bytes().to_vec()),
        })
    }

    #[test]
    fn shebang_like_binfmt_script() {
        assert_eq!(shebang(b"#!/bin/sh\necho"), sb("/bin/sh", None));
        assert_eq!(
            shebang(b"#! /usr/bin/env  python3 -u \nx"),
            sb("/usr/bin/env", Some("python3 -u"))
        );
        assert_eq!(
            shebang(b"#!/cvmfs/r/bin/bash\t-e\n"),
            sb("/cvmfs/r/bin/bash", Some("-e"))
        );
        assert_eq!(shebang(b"#!/bin/sh"), sb("/bin/sh", None));
        assert_eq!(shebang(b"#!   \n"), None);
        assert_eq!(shebang(b"\x7fELF"), None);
    }

    #[test]
    fn script_chain_builds_argv_like_the_kernel() {
        use std::collections::HashMap;
        use std::path::{Path, PathBuf};
        // /v/outer2 -> /v/outer -> /v/inner -x -> /bin/sh
        let files: HashMap<&str, &[u8]> = [
            ("/real/outer", &b"#!/v/inner -x\n"[..]),
            ("/real/inner", &b"#!/bin/sh\n"[..]),
            ("/bin/sh", &b"\x7fELF"[..]),
        ]
        .into_iter()
        .collect();
        let resolve = |p: &[u8]| -> Result<Option<PathBuf>, i32> {
            match p {
                b"/v/outer" => Ok(Some(PathBuf::from("/real/outer"))),
                b"/v/inner" => Ok(Some(PathBuf::from("/real/inner"))),
                b"/bin/sh" | b"/host/script" => Ok(None),
                _ => Err(2),
            }
        };
        let head = |p: &Path| files.get(p.to_str().unwrap()).unwrap_or(&&b""[..]).to_vec();
        let c = script_chain(
            b"/v/outer2".to_vec(),
            shebang(b"#!/v/outer\n").unwrap(),
            resolve,
            head,
        )
        .unwrap();
        assert_eq!(c.program, PathBuf::from("/bin/sh"));
        assert_eq!(c.name, b"/bin/sh");
        let args: Vec<&[u8]> = c.prepend.iter().map(Vec::as_slice).collect();
        assert_eq!(
            args,
            [
                &b"/bin/sh"[..],
                b"/v/inner",
                b"-x",
                b"/v/outer",
                b"/v/outer2"
            ]
        );
        assert_eq!(
            script_chain(
                b"/v/x".to_vec(),
                shebang(b"#!/nope\n").unwrap(),
                resolve,
                head
            ),
            Err(ChainError::Resolve(2))
        );
        // A host interpreter ends the chain: the kernel opens it (a script or not) itself.
        let c = script_chain(
            b"/v/x".to_vec(),
            shebang(b"#!/host/script -a\n").unwrap(),
            resolve,
            |_: &Path| b"#!/v/outer\n".to_vec(),
        )
        .unwrap();
        assert_eq!(c.program, PathBuf::from("/host/script"));
        assert_eq!(
            c.prepend,
            [b"/host/script".to_vec(), b"-a".to_vec(), b"/v/x".to_vec()]
        );
        // A script that names itself loops until the kernel's limit.
        let looping = |_: &Path| b"#!/v/outer\n".to_vec();
        assert_eq!(
            script_chain(
                b"/v/outer".to_vec(),
                shebang(b"#!/v/outer\n").unwrap(),
                resolve,
                looping
            ),
            Err(ChainError::TooDeep)
        );
    }

    #[test]
    fn elf_interp_of_a_real_binary() {
        let interp = elf_interp(std::path::Path::new("/bin/true")).expect("PT_INTERP of /bin/true");
        assert!(
            interp.starts_with(b"/lib"),
            "{}",
            String::from_utf8_lossy(&interp)
        );
        assert_eq!(elf_interp(std::path::Path::new("/etc/passwd")), None);
    }
}
