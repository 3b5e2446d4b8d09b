//! The open rows: `open`, `openat`, `openat2`, `creat` — a real fd of the shadow object.

use std::os::fd::{AsRawFd, OwnedFd};

use perch_syscalls::args::o;
use perch_syscalls::{Answer, Call, OpenHow, ResolveFlags};

use super::{guard, i32_of, Caller, Calls};
use crate::{host, Errno, Lookup, Outcome, Resolved};

/// `open`, `openat`, `openat2`, `creat`: a regular file is fetched and hard-linked into the
/// shadow tree, a directory filled; the program gets a real fd of the shadow object.
pub fn open(cx: &Calls, c: &dyn Caller, call: &Call) -> Result<Answer, Errno> {
    let how = match *call {
        Call::Open { flags, mode, .. } | Call::Openat { flags, mode, .. } => OpenHow {
            flags: u64::from(flags.0),
            mode: u64::from(mode.0),
            resolve: 0,
        },
        Call::Creat { mode, .. } => OpenHow {
            flags: u64::from(o::O_CREAT | o::O_WRONLY | o::O_TRUNC),
            mode: u64::from(mode.0),
            resolve: 0,
        },
        Call::Openat2 { how, size, .. } => {
            if usize::try_from(size.0).unwrap_or(usize::MAX) < OpenHow::SIZE {
                return Ok(Answer::Err(Errno::EINVAL));
            }
            let mut b = [0u8; OpenHow::SIZE];
            let how = match c.read_memory(how.0, &mut b) {
                Ok(n) if n == OpenHow::SIZE => OpenHow::decode(&b),
                _ => None,
            };
            let Some(how) = how else {
                return Ok(Answer::Err(Errno::EFAULT));
            };
            how
        }
        _ => return Ok(Answer::Continue),
    };
    let Ok(flags) = u32::try_from(how.flags) else {
        return Ok(Answer::Err(Errno::EINVAL));
    };
    let flags = i32_of(flags);
    let mode = u32::try_from(how.mode).unwrap_or(0);
    let Some(t) = cx.call_target(c, call)? else {
        return Ok(guarded(cx, c, call, &how, flags));
    };
    Ok(
        match open_target(cx, c, &t, flags, mode, ResolveFlags(how.resolve)) {
            Answer::Continue => guarded(cx, c, call, &how, flags),
            a => a,
        },
    )
}

/// True for an open that can change the file or its directory.
fn writes(flags: i32) -> bool {
    // O_PATH ignores the rest (and seccomp's ADDFD refuses O_PATH files).
    flags & libc::O_PATH == 0
        && (flags & libc::O_ACCMODE != libc::O_RDONLY
            || flags & (libc::O_CREAT | libc::O_TRUNC) != 0
            || flags & libc::O_TMPFILE == libc::O_TMPFILE)
}

/// A host path the kernel would open: one that writes is opened by perch, so that it cannot
/// reach the cache (`guard`).
fn guarded(cx: &Calls, c: &dyn Caller, call: &Call, how: &OpenHow, flags: i32) -> Answer {
    if cx.protected().is_empty() || !writes(flags) {
        return Answer::Continue;
    }
    let Some((dirfd, path)) = cx.path_arg(c, call) else {
        return Answer::Continue;
    };
    match guard::open(cx.protected(), c, dirfd, &path, how) {
        Ok(None) => Answer::Continue,
        Ok(Some(fd)) => cx.host(Ok(fd), |fd| Answer::Fd {
            fd,
            cloexec: flags & libc::O_CLOEXEC != 0,
        }),
        Err(e) => Answer::Err(e),
    }
}

fn open_target(
    cx: &Calls,
    c: &dyn Caller,
    t: &super::Target,
    flags: i32,
    mode: u32,
    resolve: ResolveFlags,
) -> Answer {
    let read_only =
        flags & libc::O_ACCMODE == libc::O_RDONLY && flags & (libc::O_CREAT | libc::O_TRUNC) == 0;
    if read_only && (t.path.starts_with(b"/proc/") || t.path.starts_with(b"/dev/fd/")) {
        if let Some(a) = cx.hooks().proc_open(cx.namespace(), c, &t.path, flags) {
            return a;
        }
    }
    let magic = cx.magic(c);
    let mut l = Lookup::for_open(&t.path, &t.base, flags)
        .magic(&magic)
        .cred(cx.cred());
    l.resolve = resolve;
    // One lookup, one report (an opened directory counts as listed).
    let r = cx.namespace().resolve(&l);
    cx.hooks().touched(&r, true);
    let r = match r {
        Resolved::Host {
            rewritten: false, ..
        } if !t.forced => return Answer::Continue,
        Resolved::Host { path, .. } => Resolved::Host {
            path,
            rewritten: true,
        },
        r => r,
    };
    match cx.namespace().open(&r, flags, Some(cx.cred())) {
        Outcome::Continue => Answer::Continue,
        Outcome::Err(e) => Answer::Err(e),
        Outcome::Value(opened) => match injectable(opened.fd, flags) {
            Ok(fd) => {
                cx.hooks().injected();
                Answer::Fd {
                    fd,
                    cloexec: opened.cloexec,
                }
            }
            Err(e) => Answer::Err(e),
        },
        Outcome::Host(p) => cx.host(host::open(&p, flags, mode), |fd| Answer::Fd {
            fd,
            cloexec: flags & libc::O_CLOEXEC != 0,
        }),
    }
}

/// seccomp's `ADDFD` refuses `O_PATH` files (the kernel's `fget` skips them: `EBADF`), so an
/// `O_PATH` fd of a virtual file or directory is reopened read-only through `/proc/self/fd/N`
/// (the same shadow object: fstat, fchdir, `*at(fd, …)`, `/proc/self/fd/N` and fexecve behave
/// alike; `F_GETFL` shows `O_RDONLY`, and a read works where an `O_PATH` fd gives `EBADF`). A
/// symlink itself (`O_PATH|O_NOFOLLOW`) cannot be opened without `O_PATH`: `ELOOP`.
fn injectable(fd: OwnedFd, flags: i32) -> Result<OwnedFd, Errno> {
    if flags & libc::O_PATH == 0 {
        return Ok(fd);
    }
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::open(
        proc.as_str(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| Errno::new(e.raw_os_error()))
}
