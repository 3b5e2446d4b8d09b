//! Rows answered from the catalog: the stat family, `statfs`, `access`, `readlink`, xattr
//! reads, `getcwd`, and the calls that are refused on virtual objects only
//! (`name_to_handle_at`, watches, `file_getattr`).

use std::os::unix::ffi::OsStringExt;

use perch_syscalls::args::at;
use perch_syscalls::stat::STATX_BASIC_STATS;
use perch_syscalls::{Answer, Call, DirFd, Statx, AT_FDCWD};

use super::{at_flags, i32_of, len_i64, usize_of, Caller, Calls, Target};
use crate::{host, Errno, Lookup, Outcome, Resolved, XattrReply};

/// `stat`, `lstat`, `fstat`, `newfstatat`, `statx`: the catalog's metadata.
pub fn stat(cx: &Calls, c: &dyn Caller, call: &Call) -> Result<Answer, Errno> {
    let (fd, buf, statx) = match *call {
        Call::Fstat { fd, buf } => (Some(fd.0), buf.0, false),
        Call::Stat { buf, .. } | Call::Lstat { buf, .. } | Call::Newfstatat { buf, .. } => {
            (None, buf.0, false)
        }
        Call::Statx { buf, .. } => (None, buf.0, true),
        _ => return Ok(Answer::Continue),
    };
    if let Some(fd) = fd {
        return Ok(match cx.fd_object(c, fd)? {
            None => Answer::Continue,
            Some(r) => stat_reply(cx, &r, buf, statx),
        });
    }
    let Some(t) = cx.call_target(c, call)? else {
        return Ok(Answer::Continue);
    };
    let magic = cx.magic(c);
    let l = cx.lookup(&t, &magic);
    let l = match *call {
        Call::Lstat { .. } => l.nofollow(),
        Call::Newfstatat { flags, .. } | Call::Statx { flags, .. } => at_flags(l, flags.0),
        _ => l,
    };
    let r = cx.resolve(&t, &l);
    if let Resolved::Host {
        path,
        rewritten: true,
    } = &r
    {
        return Ok(cx.host(host::stat(path, l.follow), |st| {
            host_stat_answer(&st, buf, statx)
        }));
    }
    Ok(stat_reply(cx, &r, buf, statx))
}

fn host_stat_answer(st: &perch_syscalls::Stat, buf: u64, statx: bool) -> Answer {
    if statx {
        Answer::write(buf, &Statx::from_stat(st, STATX_BASIC_STATS).to_bytes())
    } else {
        Answer::write(buf, &st.to_bytes())
    }
}

fn stat_reply(cx: &Calls, r: &Resolved, buf: u64, statx: bool) -> Answer {
    let ns = cx.namespace();
    if statx {
        match ns.statx(r) {
            Outcome::Value(st) => Answer::write(buf, &st.to_bytes()),
            Outcome::Err(e) => Answer::Err(e),
            Outcome::Continue => Answer::Continue,
            Outcome::Host(p) => {
                cx.host(host::stat(&p, true), |st| host_stat_answer(&st, buf, true))
            }
        }
    } else {
        match ns.stat(r) {
            Outcome::Value(st) => Answer::write(buf, &st.to_bytes()),
            Outcome::Err(e) => Answer::Err(e),
            Outcome::Continue => Answer::Continue,
            Outcome::Host(p) => {
                cx.host(host::stat(&p, true), |st| host_stat_answer(&st, buf, false))
            }
        }
    }
}

/// `statfs`, `fstatfs`: a read-only FUSE file system (autofs for the mount point).
pub fn statfs(cx: &Calls, c: &dyn Caller, call: &Call) -> Result<Answer, Errno> {
    let ns = cx.namespace();
    let reply = |r: &Resolved, buf: u64| match ns.statfs(r) {
        Outcome::Value(st) => Answer::write(buf, &st.to_bytes()),
        Outcome::Err(e) => Answer::Err(e),
        _ => Answer::Continue,
    };
    match *call {
        Call::Fstatfs { fd, buf } => Ok(match cx.fd_object(c, fd.0)? {
            None => Answer::Continue,
            Some(r) => reply(&r, buf.0),
        }),
        Call::Statfs { buf, .. } => {
            let Some(t) = cx.call_target(c, call)? else {
                return Ok(Answer::Continue);
            };
            let magic = cx.magic(c);
            let r = cx.resolve(&t, &cx.lookup(&t, &magic));
            Ok(match &r {
                Resolved::Host {
                    path,
                    rewritten: true,
                } => cx.host(host::statfs(path), |st| {
                    Answer::write(buf.0, &st.to_bytes())
                }),
                _ => reply(&r, buf.0),
            })
        }
        _ => Ok(Answer::Continue),
    }
}

/// `access`, `faccessat`, `faccessat2`: the catalog's permission bits; `W_OK` → `EROFS`.
pub fn access(cx: &Calls, c: &dyn Caller, call: &Call) -> Result<Answer, Errno> {
    let (mode, flags) = match *call {
        Call::Access { mode, .. } | Call::Faccessat { mode, .. } => (mode.0, 0),
        Call::Faccessat2 { mode, flags, .. } => (mode.0, flags.0),
        _ => return Ok(Answer::Continue),
    };
    let Some(t) = cx.call_target(c, call)? else {
        return Ok(Answer::Continue);
    };
    let magic = cx.magic(c);
    let l = at_flags(cx.lookup(&t, &magic), flags);
    let r = cx.resolve(&t, &l);
    let mode = i32_of(mode);
    Ok(match cx.namespace().access(&r, mode, cx.cred()) {
        Outcome::Continue => Answer::Continue,
        Outcome::Value(()) => Answer::Ret(0),
        Outcome::Err(e) => Answer::Err(e),
        Outcome::Host(p) => cx.host(host::access(&p, mode), |()| Answer::Ret(0)),
    })
}

fn truncated(target: &[u8], buf: u64, size: u64) -> Answer {
    if i64::from_ne_bytes(size.to_ne_bytes()) <= 0 {
        return Answer::Err(Errno::EINVAL);
    }
    let len = target.len().min(usize_of(size));
    Answer::Write {
        addr: buf,
        ret: len_i64(len),
        data: target[..len].to_vec(),
    }
}

/// `readlink`, `readlinkat`: the catalog's target; `/proc` magic links translated.
pub fn readlink(cx: &Calls, c: &dyn Caller, call: &Call) -> Result<Answer, Errno> {
    let (Call::Readlink { buf, size, .. } | Call::Readlinkat { buf, size, .. }) = *call else {
        return Ok(Answer::Continue);
    };
    let Some((dirfd, path)) = cx.path_arg(c, call) else {
        return Ok(Answer::Continue);
    };
    // `/proc` magic links: the kernel's answer, translated out of the shadow tree.
    if path.first() == Some(&b'/') {
        if let Some(target) = c.proc_link(&path) {
            let body = target.strip_suffix(b" (deleted)").unwrap_or(&target);
            if !cx.in_shadow(body) {
                return Ok(Answer::Continue);
            }
            let out = cx.namespace().translate_out(&target);
            return Ok(truncated(&out, buf.0, size.0));
        }
    }
    let Some(t) = cx.target(c, dirfd, path)? else {
        return Ok(Answer::Continue);
    };
    let magic = cx.magic(c);
    let r = cx.resolve(&t, &cx.lookup(&t, &magic).nofollow());
    let target = match cx.namespace().readlink(&r) {
        Outcome::Continue => return Ok(Answer::Continue),
        Outcome::Err(e) => return Ok(Answer::Err(e)),
        Outcome::Value(v) => v,
        Outcome::Host(p) => match std::fs::read_link(&p) {
            Ok(v) => v.into_os_string().into_vec(),
            Err(e) => return Ok(Answer::Err(Errno::from_io(&e))),
        },
    };
    Ok(truncated(&target, buf.0, size.0))
}

/// `getcwd`: the kernel's cwd, translated out of the shadow tree.
pub fn getcwd(cx: &Calls, c: &dyn Caller, call: &Call) -> Result<Answer, Errno> {
    let Call::Getcwd { buf, size } = *call else {
        return Ok(Answer::Continue);
    };
    let cwd = c.fd_path(DirFd(AT_FDCWD))?;
    let Some(mut v) = cx.to_virtual(&cwd) else {
        return Ok(Answer::Continue);
    };
    v.push(0);
    if usize_of(size.0) < v.len() {
        return Ok(Answer::Err(Errno::ERANGE));
    }
    Ok(Answer::Write {
        addr: buf.0,
        ret: len_i64(v.len()),
        data: v,
    })
}

fn xattr_answer(o: Outcome<XattrReply>, addr: u64, host: Answer) -> Answer {
    match o {
        Outcome::Value(XattrReply::Size(n)) => Answer::Ret(len_i64(n)),
        Outcome::Value(XattrReply::Data(v)) => Answer::Write {
            addr,
            ret: len_i64(v.len()),
            data: v,
        },
        Outcome::Err(e) => Answer::Err(e),
        Outcome::Continue => Answer::Continue,
        Outcome::Host(_) => host,
    }
}

/// Where an xattr path call finds its object: `None` to continue.
fn xattr_object(
    cx: &Calls,
    c: &dyn Caller,
    call: &Call,
    follow: bool,
    flags: u32,
) -> Result<Option<(Target, Resolved)>, Errno> {
    let Some(t) = cx.call_target(c, call)? else {
        return Ok(None);
    };
    let magic = cx.magic(c);
    let l = at_flags(cx.lookup(&t, &magic).follow(follow), flags);
    let r = cx.resolve(&t, &l);
    Ok(Some((t, r)))
}

/// `getxattr`, `lgetxattr`, `fgetxattr`, `getxattrat`: catalog and cvmfs magic xattrs.
pub fn getxattr(cx: &Calls, c: &dyn Caller, call: &Call) -> Result<Answer, Errno> {
    let read_name = |p: u64| c.read_cstr(p, 256).map_err(|_| Errno::ERANGE);
    let reply = |r: &Resolved, name: &[u8], value: u64, size: u64| {
        let o = cx
            .namespace()
            .getxattr(r, name, usize_of(size), Some(cx.cred()));
        xattr_answer(o, value, Answer::Err(Errno::ENODATA))
    };
    let (r, name, value, size) = match *call {
        Call::Fgetxattr {
            fd,
            name,
            value,
            size,
        } => match cx.fd_object(c, fd.0)? {
            None => return Ok(Answer::Continue),
            Some(r) => (r, name.0, value.0, size.0),
        },
        Call::Getxattr {
            name, value, size, ..
        }
        | Call::Lgetxattr {
            name, value, size, ..
        } => {
            let follow = matches!(call, Call::Getxattr { .. });
            match xattr_object(cx, c, call, follow, 0)? {
                None => return Ok(Answer::Continue),
                Some((_, r)) => (r, name.0, value.0, size.0),
            }
        }
        Call::Getxattrat {
            at_flags,
            name,
            args,
            size,
            ..
        } => {
            // `struct xattr_args { u64 value; u32 size; u32 flags; }` (Linux 6.13).
            if usize_of(size.0) < 16 {
                return Ok(Answer::Err(Errno::EINVAL));
            }
            let Some((_, r)) = xattr_object(cx, c, call, true, at_flags.0)? else {
                return Ok(Answer::Continue);
            };
            let mut a = [0u8; 16];
            if c.read_memory(args.0, &mut a) != Ok(16) {
                return Ok(Answer::Err(Errno::EFAULT));
            }
            let value = u64::from_ne_bytes(a[0..8].try_into().unwrap_or([0; 8]));
            let vsize = u32::from_ne_bytes(a[8..12].try_into().unwrap_or([0; 4]));
            let flags = u32::from_ne_bytes(a[12..16].try_into().unwrap_or([0; 4]));
            if flags != 0 {
                return Ok(Answer::Err(Errno::EINVAL));
            }
            (r, name.0, value, u64::from(vsize))
        }
        _ => return Ok(Answer::Continue),
    };
    if let Resolved::Host {
        rewritten: true, ..
    } = r
    {
        return Ok(Answer::Err(Errno::ENODATA));
    }
    Ok(match read_name(name) {
        Ok(name) => reply(&r, &name, value, size),
        Err(e) => Answer::Err(e),
    })
}

/// `listxattr`, `llistxattr`, `flistxattr`, `listxattrat`: the names the client shows.
pub fn listxattr(cx: &Calls, c: &dyn Caller, call: &Call) -> Result<Answer, Errno> {
    let (r, list, size) = match *call {
        Call::Flistxattr { fd, list, size } => match cx.fd_object(c, fd.0)? {
            None => return Ok(Answer::Continue),
            Some(r) => (r, list.0, size.0),
        },
        Call::Listxattr { list, size, .. } | Call::Llistxattr { list, size, .. } => {
            let follow = matches!(call, Call::Listxattr { .. });
            match xattr_object(cx, c, call, follow, 0)? {
                None => return Ok(Answer::Continue),
                Some((_, r)) => (r, list.0, size.0),
            }
        }
        Call::Listxattrat {
            at_flags,
            list,
            size,
            ..
        } => match xattr_object(cx, c, call, true, at_flags.0)? {
            None => return Ok(Answer::Continue),
            Some((_, r)) => (r, list.0, size.0),
        },
        _ => return Ok(Answer::Continue),
    };
    if let Resolved::Host {
        rewritten: true, ..
    } = r
    {
        return Ok(Answer::Ret(0));
    }
    let o = cx.namespace().listxattr(&r, usize_of(size));
    Ok(xattr_answer(o, list, Answer::Ret(0)))
}

/// A call refused on virtual objects only, with `errno`; host paths continue.
fn refused_on_virtual(
    cx: &Calls,
    c: &dyn Caller,
    call: &Call,
    l_flags: impl FnOnce(Lookup<'_>) -> Lookup<'_>,
    errno: Errno,
) -> Result<Answer, Errno> {
    let Some(t) = cx.call_target(c, call)? else {
        return Ok(Answer::Continue);
    };
    let magic = cx.magic(c);
    let l = l_flags(cx.lookup(&t, &magic));
    Ok(match cx.resolve(&t, &l) {
        Resolved::Virtual { .. } => Answer::Err(errno),
        Resolved::Missing { errno, .. } => Answer::Err(errno),
        Resolved::Host {
            rewritten: true, ..
        } => Answer::Err(errno),
        Resolved::Host { .. } => Answer::Continue,
    })
}

/// `name_to_handle_at`: `EOPNOTSUPP` on virtual objects (a FUSE mount without export support).
pub fn name_to_handle(cx: &Calls, c: &dyn Caller, call: &Call) -> Result<Answer, Errno> {
    let Call::NameToHandleAt { flags, .. } = *call else {
        return Ok(Answer::Continue);
    };
    refused_on_virtual(
        cx,
        c,
        call,
        |l| at_flags(l, flags.0 ^ at::AT_SYMLINK_FOLLOW),
        Errno::EOPNOTSUPP,
    )
}

/// `inotify_add_watch`, `fanotify_mark`: content under the mount point never changes, so a
/// watch would never fire; refusing it (`ENOSPC`, the watch limit) makes `tail -f` and
/// friends fall back to polling, which works.
pub fn watch(cx: &Calls, c: &dyn Caller, call: &Call) -> Result<Answer, Errno> {
    refused_on_virtual(cx, c, call, |l| l, Errno::ENOSPC)
}

/// `file_getattr`: virtual objects have no file-system attributes (`EOPNOTSUPP`).
pub fn file_getattr(cx: &Calls, c: &dyn Caller, call: &Call) -> Result<Answer, Errno> {
    let Call::FileGetattr { at_flags: f, .. } = *call else {
        return Ok(Answer::Continue);
    };
    refused_on_virtual(cx, c, call, |l| at_flags(l, f.0), Errno::EOPNOTSUPP)
}
