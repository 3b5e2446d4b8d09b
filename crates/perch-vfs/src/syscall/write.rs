//! The write rows: `EROFS` on virtual objects, in the order Linux checks a read-only file
//! system (`EEXIST`, `ENOENT`, `EXDEV`, `EISDIR`... come first where the kernel has them);
//! host paths continue, or are done by perch when a repository symlink or a remap led there.

use perch_syscalls::args::at;
use perch_syscalls::{Answer, Call, DirFd, PathPtr, AT_FDCWD};

use super::{at_flags, Caller, Calls, Target};
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
        return Ok(Answer::Continue);
    };
    let magic = cx.magic(c);
    let l = cx.lookup(&t, &magic);
    let o = cx.force_host(cx.namespace().create(&l, op), &t, &l);
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
    let Some(t) = cx.call_target(c, call)? else {
        return Ok(Answer::Continue);
    };
    let magic = cx.magic(c);
    let l = cx.lookup(&t, &magic);
    let o = cx.force_host(cx.namespace().remove(&l, op), &t, &l);
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
        | Call::Fremovexattr { fd, .. } => return fd_erofs(cx, c, fd.0),
        Call::Utimensat { dirfd, path, .. } | Call::Futimesat { dirfd, path, .. }
            if path.0 == 0 =>
        {
            return fd_erofs(cx, c, dirfd.0)
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
        return Ok(Answer::Continue);
    };
    let magic = cx.magic(c);
    let l = at_flags(cx.lookup(&t, &magic).follow(follow), flags);
    let r = cx.resolve(&t, &l);
    let o = cx.namespace().modify(&r, op);
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
    if to.is_none() && tn.is_none() {
        return Ok(Answer::Continue);
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
    let to = fill(to, old, dirfd);
    let tn = fill(tn, new, newdirfd);
    let magic = cx.magic(c);
    let lo = cx.lookup(&to, &magic);
    let ln = cx.lookup(&tn, &magic);
    let ns = cx.namespace();
    let out = match kind {
        Pair::Rename(flags) => ns.rename(&lo.nofollow(), &ln.nofollow(), flags),
        Pair::Link(follow) => ns.link(&lo.follow(follow), &ln.nofollow()),
    };
    Ok(match out {
        PairOutcome::Continue => Answer::Continue,
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
