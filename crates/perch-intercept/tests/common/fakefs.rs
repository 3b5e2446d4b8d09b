//! A fake namespace for testing the interceptor: the virtual prefix `/fakefs` maps to a real
//! directory. Opens and stats under it are answered by the handler itself (injected fds,
//! stat structs written into the tracee), writes fail with `EROFS`, exec and chdir are rewritten
//! to the real path, everything else continues in the kernel.

use std::fs::{Metadata, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use perch_intercept::{Call, Errno, Handler, Notification, TraceAction, TracedCall};
use perch_syscalls::stat::STATX_BASIC_STATS;
use perch_syscalls::{Family, OpenFlags, Stat, Statx};

/// The fake namespace.
#[derive(Debug)]
pub struct FakeFs {
    prefix: Vec<u8>,
    root: PathBuf,
    /// fds injected for opens under the prefix.
    pub injected: AtomicU64,
    /// stat-family calls answered.
    pub stats: AtomicU64,
    /// exec/chdir paths rewritten.
    pub rewritten: AtomicU64,
    /// calls failed with EROFS.
    pub erofs: AtomicU64,
}

impl FakeFs {
    /// `/fakefs` → `root`.
    pub fn new(root: &Path) -> FakeFs {
        FakeFs {
            prefix: b"/fakefs".to_vec(),
            root: root.to_path_buf(),
            injected: AtomicU64::new(0),
            stats: AtomicU64::new(0),
            rewritten: AtomicU64::new(0),
            erofs: AtomicU64::new(0),
        }
    }

    /// The real path of a virtual one, if it is under the prefix.
    pub fn map(&self, path: &[u8]) -> Option<PathBuf> {
        let rest = path.strip_prefix(self.prefix.as_slice())?;
        if !rest.is_empty() && rest[0] != b'/' {
            return None;
        }
        let slashes = rest.iter().take_while(|&&b| b == b'/').count();
        Some(
            self.root
                .join(std::ffi::OsStr::from_bytes(&rest[slashes..])),
        )
    }

    fn open(&self, n: Notification<'_>, real: &Path, flags: OpenFlags) {
        if flags.writes() {
            self.erofs.fetch_add(1, Ordering::Relaxed);
            return n.error(Errno::EROFS);
        }
        let accmode = 0o3;
        let extra = flags.0 & !(accmode | perch_syscalls::args::o::O_CLOEXEC);
        match OpenOptions::new()
            .read(true)
            .custom_flags(i32::from_ne_bytes(extra.to_ne_bytes()))
            .open(real)
        {
            Ok(f) => {
                self.injected.fetch_add(1, Ordering::Relaxed);
                n.inject_fd(OwnedFd::from(f), flags.cloexec());
            }
            Err(e) => n.error(Errno::from_io(&e)),
        }
    }

    fn stat(
        &self,
        n: Notification<'_>,
        real: &Path,
        nofollow: bool,
        buf: u64,
        statx_mask: Option<u32>,
    ) {
        let md = if nofollow {
            std::fs::symlink_metadata(real)
        } else {
            std::fs::metadata(real)
        };
        let md = match md {
            Ok(md) => md,
            Err(e) => return n.error(Errno::from_io(&e)),
        };
        let st = to_stat(&md);
        let written = match statx_mask {
            Some(_) => n.write_memory(buf, &Statx::from_stat(&st, STATX_BASIC_STATS).to_bytes()),
            None => n.write_memory(buf, &st.to_bytes()),
        };
        match written {
            Ok(()) => {
                self.stats.fetch_add(1, Ordering::Relaxed);
                n.ret(0)
            }
            Err(e) => n.error(e),
        }
    }
}

/// A `Stat` from std's metadata.
pub fn to_stat(md: &Metadata) -> Stat {
    Stat::from(md)
}

impl Handler for FakeFs {
    fn on_syscall(&self, n: Notification<'_>) {
        let call = *n.call();
        let Some((_, path_ptr)) = call.path() else {
            return n.continue_unchecked();
        };
        let Ok(path) = n.read_path(path_ptr) else {
            // Bad pointer: the kernel reports EFAULT itself.
            return n.continue_unchecked();
        };
        let Some(real) = self.map(&path) else {
            return n.continue_unchecked();
        };
        if call.sysno().map(|s| s.family()) == Some(Family::Modify) {
            self.erofs.fetch_add(1, Ordering::Relaxed);
            return n.error(Errno::EROFS);
        }
        match call {
            Call::Open { flags, .. } | Call::Openat { flags, .. } => self.open(n, &real, flags),
            Call::Openat2 { how, .. } => match n.read_bytes(how.0, 8) {
                Ok(b) if b.len() == 8 => {
                    let flags = u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
                    self.open(
                        n,
                        &real,
                        OpenFlags(u32::try_from(flags).unwrap_or(u32::MAX)),
                    )
                }
                _ => n.error(Errno::EFAULT),
            },
            Call::Stat { buf, .. } => self.stat(n, &real, false, buf.0, None),
            Call::Lstat { buf, .. } => self.stat(n, &real, true, buf.0, None),
            Call::Newfstatat { buf, flags, .. } => {
                self.stat(n, &real, flags.nofollow(), buf.0, None)
            }
            Call::Statx {
                buf, flags, mask, ..
            } => self.stat(n, &real, flags.nofollow(), buf.0, Some(mask.0)),
            Call::Access { mode, .. }
            | Call::Faccessat { mode, .. }
            | Call::Faccessat2 { mode, .. } => {
                if mode.wants_write() {
                    n.error(Errno::EROFS)
                } else if std::fs::symlink_metadata(&real).is_ok() {
                    n.ret(0)
                } else {
                    n.error(Errno::ENOENT)
                }
            }
            Call::Readlink { buf, size, .. } | Call::Readlinkat { buf, size, .. } => {
                match std::fs::read_link(&real) {
                    Ok(target) => {
                        let bytes = target.as_os_str().as_bytes();
                        let len = bytes.len().min(usize::try_from(size.0).unwrap_or(0));
                        match n.write_memory(buf.0, &bytes[..len]) {
                            Ok(()) => n.ret(i64::try_from(len).unwrap_or(0)),
                            Err(e) => n.error(e),
                        }
                    }
                    Err(e) => n.error(Errno::from_io(&e)),
                }
            }
            Call::Getxattr { .. } | Call::Lgetxattr { .. } => n.error(Errno::ENODATA),
            Call::Listxattr { .. } | Call::Llistxattr { .. } => n.ret(0),
            _ => n.continue_unchecked(),
        }
    }

    fn on_trace_path(&self, t: &TracedCall) -> TraceAction {
        let Some((_, p)) = t.call().path() else {
            return TraceAction::Continue;
        };
        let Ok(path) = t.read_path(p) else {
            return TraceAction::Continue;
        };
        let Some(real) = self.map(&path) else {
            return TraceAction::Continue;
        };
        self.rewritten.fetch_add(1, Ordering::Relaxed);
        // A script whose `#!` interpreter is virtual too: the kernel would look the interpreter
        // up itself (no syscall to intercept), so exec the real interpreter with the argv the
        // kernel would have built: interpreter, optional argument, script path, argv[1..].
        if matches!(t.call(), Call::Execve { .. } | Call::Execveat { .. }) {
            if let Some((interp, arg)) = shebang(&real) {
                if let Some(real_interp) = self.map(&interp) {
                    let mut prepend = vec![interp];
                    prepend.extend(arg);
                    prepend.push(path);
                    return TraceAction::RewriteExec {
                        path: real_interp.as_os_str().as_bytes().to_vec(),
                        prepend,
                        skip: 1,
                    };
                }
            }
        }
        TraceAction::Rewrite(real.as_os_str().as_bytes().to_vec())
    }
}

/// The `#!` line of a file: interpreter and optional single argument.
fn shebang(path: &Path) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n')?];
    let mut parts = line
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|p| !p.is_empty());
    let interp = parts.next()?.to_vec();
    let rest: Vec<&[u8]> = parts.collect();
    let arg = (!rest.is_empty()).then(|| rest.join(&b' '));
    Some((interp, arg))
}
