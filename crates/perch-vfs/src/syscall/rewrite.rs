//! Exec and chdir rewriting: the rows whose path the kernel itself must walk (`execve`,
//! `execveat`, `chdir`), answered by a new path (a shadow file or directory) and, for exec, a
//! new argument list. A backend that can rewrite a call's arguments (ptrace) applies it.
//!
//! Exec from the mount point: the path is rewritten to the shadow file. A `#!` script is
//! started as the kernel would (`interpreter [arg] script args…`) but with the interpreter's
//! real file and the script's *own* path as argument, so `$0` and files found relative to it
//! stay virtual. Interpreters that are scripts themselves are followed level by level like the
//! kernel (five at most, then `ELOOP`). An ELF whose `PT_INTERP` loader is virtual runs as
//! `loader --argv0 ARGV0 PROGRAM ARGS` from the loader's shadow file (glibc ≥ 2.33 loaders);
//! the loader opens PROGRAM through perch. The same holds for the last interpreter of a `#!`
//! chain.

use std::path::{Path, PathBuf};

use perch_syscalls::args::at;
use perch_syscalls::{Call, DirFd, AT_FDCWD, PATH_MAX};

use super::{bytes, Caller, Calls, Target};
use crate::binfmt::{self, ChainError};
use crate::{Errno, Outcome};

/// What a traced call becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Run it unchanged.
    Continue,
    /// Run it on this path instead.
    Path(Vec<u8>),
    /// Exec `path` with `prepend` followed by the original `argv[skip..]`.
    Exec {
        /// The real file to run.
        path: Vec<u8>,
        /// The new first arguments.
        prepend: Vec<Vec<u8>>,
        /// How many of the original arguments are dropped.
        skip: usize,
    },
    /// Fail it with this errno.
    Fail(Errno),
}

impl Calls {
    /// The base a traced call's relative path starts from, virtual when it is in the shadow
    /// tree.
    fn trace_base(&self, c: &dyn Caller, dirfd: DirFd) -> Option<Vec<u8>> {
        let b = c.fd_path_unverified(dirfd).ok()?;
        Some(self.to_virtual(&b).unwrap_or(b))
    }

    /// The path of a traced call as perch must look it up, `None` to let it run unchanged.
    fn trace_target(&self, c: &dyn Caller, dirfd: DirFd, path: Vec<u8>) -> Option<Target> {
        let (path, forced) = match self.hooks().remap(&path) {
            Some(p) => (p, true),
            None => (path, false),
        };
        if path.first() == Some(&b'/') {
            if !forced && self.plainly_host(&path) {
                return None;
            }
            return Some(Target {
                path,
                base: b"/".to_vec(),
                forced,
            });
        }
        let base = self.trace_base(c, dirfd)?;
        let mp = self.namespace().mountpoint();
        let virtual_base = base.starts_with(mp) && self.namespace().is_under_mountpoint(&base);
        if !forced && !virtual_base && !self.mentions_mountpoint(&path) {
            return None;
        }
        Some(Target { path, base, forced })
    }

    /// The real file an exec of `tg` runs, `None` when the kernel finds it by itself.
    fn exec_real(&self, c: &dyn Caller, tg: &Target) -> Result<Option<PathBuf>, Errno> {
        let magic = self.magic(c);
        let l = self.lookup(tg, &magic);
        let r = self.resolve(tg, &l);
        match self.namespace().exec_path(&r, Some(self.cred())) {
            Outcome::Continue => Ok(None),
            Outcome::Err(e) => Err(e),
            Outcome::Host(p) | Outcome::Value(p) => Ok(Some(p)),
        }
    }

    /// `execve`, `execveat`, `chdir`: what the traced call becomes.
    pub fn rewrite(&self, c: &dyn Caller, call: &Call) -> Rewrite {
        let read = |p: perch_syscalls::PathPtr| c.read_cstr(p.0, PATH_MAX).ok();
        match *call {
            Call::Execve { path, .. } => match read(path) {
                Some(p) => self.exec(c, call, DirFd(AT_FDCWD), p),
                None => Rewrite::Continue,
            },
            Call::Execveat {
                dirfd, path, flags, ..
            } => match read(path) {
                // fexecve of an fd: the kernel runs the file the fd is (a shadow file, already
                // materialized when it was opened).
                Some(p) if p.is_empty() && flags.0 & at::AT_EMPTY_PATH != 0 => Rewrite::Continue,
                Some(p) => self.exec(c, call, dirfd, p),
                None => Rewrite::Continue,
            },
            Call::Chdir { path } => match read(path) {
                Some(p) => self.chdir(c, p),
                None => Rewrite::Continue,
            },
            _ => Rewrite::Continue,
        }
    }

    fn exec(&self, c: &dyn Caller, call: &Call, dirfd: DirFd, path: Vec<u8>) -> Rewrite {
        let Some(tg) = self.trace_target(c, dirfd, path.clone()) else {
            return Rewrite::Continue;
        };
        let real = match self.exec_real(c, &tg) {
            Ok(Some(p)) => p,
            Ok(None) => return Rewrite::Continue,
            Err(e) => return Rewrite::Fail(e),
        };
        let cwd = DirFd(AT_FDCWD);
        // What finally runs: its real file, its path as named, argv[0], and the arguments
        // that go between argv[0] and the original argv[1..].
        let (program, program_tg, argv0, chain) = match binfmt::shebang(&read_head(&real)) {
            Some(sb) => {
                // The kernel would look each interpreter up from the program's cwd: so do we.
                let resolve = |interp: &[u8]| -> Result<Option<PathBuf>, Errno> {
                    match self.trace_target(c, cwd, interp.to_vec()) {
                        None => Ok(None),
                        Some(it) => self.exec_real(c, &it),
                    }
                };
                let ch = match binfmt::script_chain(path, sb, resolve, read_head) {
                    Ok(ch) => ch,
                    Err(ChainError::TooDeep) => return Rewrite::Fail(Errno::ELOOP),
                    Err(ChainError::Resolve(e)) => return Rewrite::Fail(e),
                };
                let program_tg = self.trace_target(c, cwd, ch.name.clone());
                (ch.program, program_tg, ch.name, Some(ch.prepend))
            }
            None => {
                let argv0 = read_argv0(c, call).unwrap_or_else(|| path.clone());
                (real, Some(tg), argv0, None)
            }
        };
        if let (Some(ptg), Some(interp)) = (&program_tg, binfmt::elf_interp(&program)) {
            if let Some(it) = self.trace_target(c, cwd, interp.clone()) {
                let magic = self.magic(c);
                let l = self.lookup(&it, &magic);
                let r = self.resolve(&it, &l);
                if let Outcome::Value(loader) = self.namespace().exec_path(&r, Some(self.cred())) {
                    // Run the loader from its shadow file: `ld.so --argv0 ARGV0 PROGRAM ARGS`;
                    // the loader opens PROGRAM by its virtual path, through perch.
                    let mut program = if ptg.path.first() == Some(&b'/') {
                        Vec::new()
                    } else {
                        let mut b = ptg.base.clone();
                        b.push(b'/');
                        b
                    };
                    program.extend_from_slice(&ptg.path);
                    let mut prepend = vec![interp, b"--argv0".to_vec(), argv0, program];
                    prepend.extend(chain.into_iter().flatten().skip(1));
                    return Rewrite::Exec {
                        path: bytes(&loader).to_vec(),
                        prepend,
                        skip: 1,
                    };
                }
            }
        }
        match chain {
            Some(prepend) => Rewrite::Exec {
                path: bytes(&program).to_vec(),
                prepend,
                skip: 1,
            },
            None => Rewrite::Path(bytes(&program).to_vec()),
        }
    }

    fn chdir(&self, c: &dyn Caller, path: Vec<u8>) -> Rewrite {
        let Some(tg) = self.trace_target(c, DirFd(AT_FDCWD), path) else {
            return Rewrite::Continue;
        };
        let magic = self.magic(c);
        let l = self.lookup(&tg, &magic);
        let r = self.resolve(&tg, &l);
        match self.namespace().chdir_path(&r, Some(self.cred())) {
            Outcome::Continue => Rewrite::Continue,
            Outcome::Err(e) => Rewrite::Fail(e),
            Outcome::Host(p) | Outcome::Value(p) => Rewrite::Path(bytes(&p).to_vec()),
        }
    }
}

fn read_head(p: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(binfmt::BINPRM_BUF_SIZE);
    if let Ok(f) = std::fs::File::open(p) {
        let _ = f.take(binfmt::BINPRM_BUF_SIZE as u64).read_to_end(&mut buf);
    }
    buf
}

fn read_argv0(c: &dyn Caller, call: &Call) -> Option<Vec<u8>> {
    let argv = match *call {
        Call::Execve { argv, .. } | Call::Execveat { argv, .. } => argv.0,
        _ => return None,
    };
    if argv == 0 {
        return None;
    }
    let mut b = [0u8; 8];
    if c.read_memory(argv, &mut b).ok()? != 8 {
        return None;
    }
    let p = u64::from_ne_bytes(b);
    if p == 0 {
        return None;
    }
    c.read_cstr(p, PATH_MAX * 32).ok()
}
