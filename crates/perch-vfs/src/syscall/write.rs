//! The write rows: `EROFS` on virtual objects, in the order Linux checks a read-only file
//! system (`EEXIST`, `ENOENT`, `EXDEV`, `EISDIR`... come first where the kernel has them);
//! host paths continue, or are done by perch when a repository symlink or a remap led there.

use perch_syscalls::args::at;
use perch_syscalls::{Answer, Call, DirFd, PathPtr, AT_FDCWD};

use super::{at_flags, guard, Caller, Calls, Target};
use crate::{host, CreateOp, Errno, ModifyOp, PairOutcome, RemoveOp};

/// `mkdir`, `mkdirat`, `mknod`, `mknodat`, `symlink`, `symlinkat`.
pub fn create(cx: &Calls, c: &dyn Caller, call: &Call) -> Result<Answer, Errno> {
    let op = match *call {
        Call::Mkdir { .. } | Call::Mkdirat { .. } => CreateOp::Mkdir,
        Call::Mknod { .. } | Call::Mknodat { .. } => CreateOp::Mknod,
        Call::Symlink { .. } | Call::Symlinkat { .. } => CreateOp::Symlink,
        _ => return Ok(Answer::Continue),
    };
    let Some(t) = cx.call_target(c, call)? else {
        return Ok(guarded_create(cx, c, call));
    };
    let magic = cx.magic(c);
    let l = cx.lookup(&t, &magic);
    let o = cx.force_host(cx.namespace().create(&l, op), &t, &l);
    if matches!(o, crate::Outcome::Continue) {
        return Ok(guarded_create(cx, c, call));
    }
    if let (
        Call::Symlink { target, .. } | Call::Symlinkat { target, .. },
        crate::Outcome::Host(p),
    ) = (call, &o)
    {
        return Ok(match c.read_cstr(target.0, 4096) {
            Ok(tg) => cx.host(host::symlink(&tg, p), |()| Answer::Ret(0)),
            Err(e) => Answer::Err(e),
        });
    }
    Ok(cx.unit(o, |p| match op {
        CreateOp::Mkdir => host::res(std::fs::create_dir(p)),
        // mknod of a remapped host path: not done on the program's behalf.
        _ => Err(Errno::EOPNOTSUPP),
    }))
}

/// `unlink`, `unlinkat`, `rmdir`.
pub fn remove(cx: &Calls, c: &dyn Caller, call: &Call) -> Result<Answer, Errno> {
    let op = match *call {
        Call::Unlink { .. } => RemoveOp::Unlink,
        Call::Rmdir { .. } => RemoveOp::Rmdir,
        Call::Unlinkat { flags, .. } if flags.0 & at::AT_REMOVEDIR != 0 => RemoveOp::Rmdir,
        Call::Unlinkat { .. } => RemoveOp::Unlink,
        _ => return Ok(Answer::Continue),
    };
    let dir = matches!(op, RemoveOp::Rmdir);
    let Some(t) = cx.call_target(c, call)? else {
        return Ok(guarded(cx, c, call, |g, dirfd, path| {
            guard::entry_call(g, c, dirfd, path, guard::Entry::Remove(dir))
        }));
    };
    let magic = cx.magic(c);
    let l = cx.lookup(&t, &magic);
    let o = cx.force_host(cx.namespace().remove(&l, op), &t, &l);
    if matches!(o, crate::Outcome::Continue) {
        return Ok(guarded(cx, c, call, |g, dirfd, path| {
            guard::entry_call(g, c, dirfd, path, guard::Entry::Remove(dir))
        }));
    }
    Ok(cx.unit(o, |p| match op {
        RemoveOp::Unlink => host::res(std::fs::remove_file(p)),
        RemoveOp::Rmdir => host::res(std::fs::remove_dir(p)),
    }))
}

/// The `f*` forms of the write family (`fchmod`, `fchown`, `fsetxattr`, `fremovexattr`, and
/// `futimens`/`futimes`, i.e. `utimensat`/`futimesat` with a NULL path): `EROFS` on an fd of a
/// virtual object.
fn fd_erofs(cx: &Calls, c: &dyn Caller, fd: i32) -> Result<Answer, Errno> {
    Ok(match cx.fd_virtual(c, fd)? {
        None => Answer::Continue,
        Some(_) => Answer::Err(Errno::EROFS),
    })
}

/// `chmod`, `chown`, `utimes`, `truncate`, `setxattr`, `removexattr`, `file_setattr` and their
/// `l*`, `f*` and `*at` forms.
pub fn modify(cx: &Calls, c: &dyn Caller, call: &Call) -> Result<Answer, Errno> {
    let (op, follow, flags) = match *call {
        Call::Fchmod { fd, .. }
        | Call::Fchown { fd, .. }
        | Call::Fsetxattr { fd, .. }
        | Call::Fremovexattr { fd, .. } => {
            return match fd_erofs(cx, c, fd.0)? {
                Answer::Continue => guarded_fd(cx, c, call, fd.0),
                a => Ok(a),
            }
        }
        Call::Utimensat { dirfd, path, .. } | Call::Futimesat { dirfd, path, .. }
            if path.0 == 0 =>
        {
            return match fd_erofs(cx, c, dirfd.0)? {
                Answer::Continue => guarded_fd(cx, c, call, dirfd.0),
                a => Ok(a),
            }
        }
        Call::Chmod { .. } | Call::Fchmodat { .. } => (ModifyOp::Chmod, true, 0),
        Call::Fchmodat2 { flags, .. } => (ModifyOp::Chmod, true, flags.0),
        Call::Chown { .. } => (ModifyOp::Chown, true, 0),
        Call::Lchown { .. } => (ModifyOp::Chown, false, 0),
        Call::Fchownat { flags, .. } => (ModifyOp::Chown, true, flags.0),
        Call::Utime { .. } | Call::Utimes { .. } | Call::Futimesat { .. } => {
            (ModifyOp::Utimes, true, 0)
        }
        Call::Utimensat { flags, .. } => (ModifyOp::Utimes, true, flags.0),
        Call::Truncate { .. } => (ModifyOp::Truncate, true, 0),
        Call::Setxattr { .. } => (ModifyOp::SetXattr, true, 0),
        Call::Lsetxattr { .. } => (ModifyOp::SetXattr, false, 0),
        Call::Setxattrat { at_flags, .. } => (ModifyOp::SetXattr, true, at_flags.0),
        Call::Removexattr { .. } => (ModifyOp::RemoveXattr, true, 0),
        Call::Lremovexattr { .. } => (ModifyOp::RemoveXattr, false, 0),
        Call::Removexattrat { at_flags, .. } => (ModifyOp::RemoveXattr, true, at_flags.0),
        Call::FileSetattr { at_flags, .. } => (ModifyOp::SetXattr, true, at_flags.0),
        _ => return Ok(Answer::Continue),
    };
    let Some(t) = cx.call_target(c, call)? else {
        return guarded_change(cx, c, call, follow, flags);
    };
    let magic = cx.magic(c);
    let l = at_flags(cx.lookup(&t, &magic).follow(follow), flags);
    let r = cx.resolve(&t, &l);
    let o = cx.namespace().modify(&r, op);
    if matches!(o, crate::Outcome::Continue) {
        return guarded_change(cx, c, call, follow, flags);
    }
    // A write through a repository symlink leading to a host file: rare; refused rather
    // than done on the wrong object.
    Ok(cx.unit(o, |_| Err(Errno::EXDEV)))
}

#[derive(Clone, Copy)]
enum Pair {
    Rename(u32),
    Link(bool),
}

/// `rename`, `renameat`, `renameat2`, `link`, `linkat`: `EXDEV` across mounts, `EROFS` inside
/// one repository.
pub fn pair(cx: &Calls, c: &dyn Caller, call: &Call) -> Result<Answer, Errno> {
    let cwd = DirFd(AT_FDCWD);
    let (newdirfd, newpath, kind) = match *call {
        Call::Rename { newpath, .. } => (cwd, newpath, Pair::Rename(0)),
        Call::Renameat {
            newdirfd, newpath, ..
        } => (newdirfd, newpath, Pair::Rename(0)),
        Call::Renameat2 {
            newdirfd,
            newpath,
            flags,
            ..
        } => (newdirfd, newpath, Pair::Rename(flags.0)),
        Call::Link { newpath, .. } => (cwd, newpath, Pair::Link(false)),
        Call::Linkat {
            newdirfd,
            newpath,
            flags,
            ..
        } => (
            newdirfd,
            newpath,
            Pair::Link(flags.0 & at::AT_SYMLINK_FOLLOW != 0),
        ),
        _ => return Ok(Answer::Continue),
    };
    let Some((dirfd, old)) = cx.path_arg(c, call) else {
        return Ok(Answer::Continue);
    };
    let new = match cx.read_path(c, PathPtr(newpath.0)) {
        Ok(p) => p,
        Err(_) => return Ok(Answer::Continue),
    };
    let to = cx.target(c, dirfd, old.clone())?;
    let tn = cx.target(c, newdirfd, new.clone())?;
    let host_pair = || -> Answer {
        if cx.protected().is_empty() {
            return Answer::Continue;
        }
        let r = match kind {
            Pair::Rename(flags) => {
                guard::rename(cx.protected(), c, (dirfd, &old), (newdirfd, &new), flags)
            }
            Pair::Link(follow) => {
                let empty =
                    matches!(*call, Call::Linkat { flags, .. } if flags.0 & at::AT_EMPTY_PATH != 0);
                guard::link(
                    cx.protected(),
                    c,
                    (dirfd, &old),
                    (newdirfd, &new),
                    follow,
                    empty,
                )
            }
        };
        host_answer(cx, r)
    };
    if to.is_none() && tn.is_none() {
        return Ok(host_pair());
    }
    // The side left to the kernel still needs an absolute form for the resolver.
    let fill = |t: Option<Target>, p: Vec<u8>, fd: DirFd| -> Target {
        match t {
            Some(t) => t,
            None if p.first() == Some(&b'/') => Target {
                path: p,
                base: b"/".to_vec(),
                forced: false,
            },
            None => Target {
                path: p,
                base: c.fd_path(fd).unwrap_or_else(|_| b"/".to_vec()),
                forced: false,
            },
        }
    };
    let to = fill(to, old.clone(), dirfd);
    let tn = fill(tn, new.clone(), newdirfd);
    let magic = cx.magic(c);
    let lo = cx.lookup(&to, &magic);
    let ln = cx.lookup(&tn, &magic);
    let ns = cx.namespace();
    let out = match kind {
        Pair::Rename(flags) => ns.rename(&lo.nofollow(), &ln.nofollow(), flags),
        Pair::Link(follow) => ns.link(&lo.follow(follow), &ln.nofollow()),
    };
    Ok(match out {
        PairOutcome::Continue => host_pair(),
        PairOutcome::Err(e) => Answer::Err(e),
        PairOutcome::Host(a, b) => {
            let r = match kind {
                Pair::Rename(0) => std::fs::rename(&a, &b),
                Pair::Rename(_) => return Ok(Answer::Err(Errno::EXDEV)),
                Pair::Link(_) => std::fs::hard_link(&a, &b),
            };
            cx.host(r.map_err(|e| Errno::from_io(&e)), |()| Answer::Ret(0))
        }
    })
}

/// What perch's answer to a write it made itself on a host path is (`guard`).
fn host_answer(cx: &Calls, r: Result<Option<i64>, Errno>) -> Answer {
    match r {
        Ok(None) => Answer::Continue,
        Ok(Some(v)) => cx.host(Ok(v), Answer::Ret),
        Err(e) => Answer::Err(e),
    }
}

/// A host path the kernel would change: done by perch when the cache is protected, so that the
/// program cannot reach it (`guard`).
fn guarded(
    cx: &Calls,
    c: &dyn Caller,
    call: &Call,
    f: impl FnOnce(&guard::Protected, DirFd, &[u8]) -> Result<Option<i64>, Errno>,
) -> Answer {
    if cx.protected().is_empty() {
        return Answer::Continue;
    }
    let Some((dirfd, path)) = cx.path_arg(c, call) else {
        return Answer::Continue;
    };
    host_answer(cx, f(cx.protected(), dirfd, &path))
}

fn guarded_create(cx: &Calls, c: &dyn Caller, call: &Call) -> Answer {
    if cx.protected().is_empty() {
        return Answer::Continue;
    }
    let target = match *call {
        Call::Symlink { target, .. } | Call::Symlinkat { target, .. } => {
            match c.read_cstr(target.0, 4096) {
                Ok(t) => Some(t),
                Err(e) => return Answer::Err(e),
            }
        }
        _ => None,
    };
    guarded(cx, c, call, |g, dirfd, path| {
        let what = match *call {
            Call::Mkdir { mode, .. } | Call::Mkdirat { mode, .. } => guard::Entry::Mkdir(mode.0),
            Call::Mknod { mode, dev, .. } | Call::Mknodat { mode, dev, .. } => {
                guard::Entry::Mknod(mode.0, dev.0)
            }
            _ => guard::Entry::Symlink(target.as_deref().unwrap_or_default()),
        };
        guard::entry_call(g, c, dirfd, path, what)
    })
}

/// The value of a `setxattr`-like call, read from the program (at most `XATTR_SIZE_MAX`).
fn xattr_args(
    c: &dyn Caller,
    name: u64,
    value: u64,
    size: u64,
) -> Result<(Vec<u8>, Vec<u8>), Errno> {
    let name = c.read_cstr(name, 256)?;
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if size > 65536 {
        return Err(Errno::E2BIG);
    }
    let mut v = vec![0u8; size];
    if size > 0 && c.read_memory(value, &mut v)? != size {
        return Err(Errno::EFAULT);
    }
    Ok((name, v))
}

/// Name, value and flags of a `setxattr`-family call.
type XattrArgs = (Vec<u8>, Vec<u8>, u32);

/// The [`XattrArgs`] of a `setxattr`-family call (`None` for other calls).
fn xattr_call(c: &dyn Caller, call: &Call) -> Result<Option<XattrArgs>, Errno> {
    let (name, value, size, flags) = match *call {
        Call::Setxattr {
            name,
            value,
            size,
            flags,
            ..
        }
        | Call::Lsetxattr {
            name,
            value,
            size,
            flags,
            ..
        }
        | Call::Fsetxattr {
            name,
            value,
            size,
            flags,
            ..
        } => (name.0, value.0, size.0, flags.0),
        Call::Setxattrat {
            name, args, size, ..
        } => {
            // struct xattr_args { __aligned_u64 value; __u32 size; __u32 flags; }
            let mut b = [0u8; 16];
            if size.0 < 16 || c.read_memory(args.0, &mut b)? != 16 {
                return Err(Errno::EINVAL);
            }
            let word = |r: std::ops::Range<usize>| {
                b[r].iter().rev().fold(0u64, |a, &x| a << 8 | u64::from(x))
            };
            let flags = u32::try_from(word(12..16)).unwrap_or(u32::MAX);
            (name.0, word(0..8), word(8..12), flags)
        }
        _ => return Ok(None),
    };
    let (name, value) = xattr_args(c, name, value, size)?;
    Ok(Some((name, value, flags)))
}

/// chmod, truncate, setxattr (and the checked rest) of a host path, when the cache is
/// protected.
fn guarded_change(
    cx: &Calls,
    c: &dyn Caller,
    call: &Call,
    follow: bool,
    flags: u32,
) -> Result<Answer, Errno> {
    if cx.protected().is_empty() {
        return Ok(Answer::Continue);
    }
    let follow = follow && flags & at::AT_SYMLINK_NOFOLLOW == 0;
    let empty = flags & at::AT_EMPTY_PATH != 0;
    let xattr = xattr_call(c, call)?;
    let what = match *call {
        Call::Chmod { mode, .. } | Call::Fchmodat { mode, .. } | Call::Fchmodat2 { mode, .. } => {
            guard::Change::Chmod(mode.0)
        }
        Call::Truncate { length, .. } => match u64::try_from(length.0) {
            Ok(l) => guard::Change::Truncate(l),
            Err(_) => return Ok(Answer::Err(Errno::EINVAL)),
        },
        _ => match &xattr {
            Some((name, value, flags)) => guard::Change::SetXattr(name, value, *flags),
            None => guard::Change::Checked,
        },
    };
    Ok(guarded(cx, c, call, |g, dirfd, path| {
        guard::change(g, c, dirfd, path, follow, empty, what)
    }))
}

/// `fchmod`, `fchown`, `fsetxattr`, `fremovexattr` of a host fd, when the cache is protected.
fn guarded_fd(cx: &Calls, c: &dyn Caller, call: &Call, fd: i32) -> Result<Answer, Errno> {
    if cx.protected().is_empty() {
        return Ok(Answer::Continue);
    }
    let xattr = xattr_call(c, call)?;
    let what = match *call {
        Call::Fchmod { mode, .. } => guard::Change::Chmod(mode.0),
        _ => match &xattr {
            Some((name, value, flags)) => guard::Change::SetXattr(name, value, *flags),
            None => guard::Change::Checked,
        },
    };
    Ok(host_answer(
        cx,
        guard::change_fd(cx.protected(), c, fd, what),
    ))
}
