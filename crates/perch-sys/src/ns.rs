//! The fork-to-exec child of fuse mode: a private user + mount namespace with `/cvmfs` as a
//! FUSE mount, like cvmfsexec, without any setuid helper.
//!
//! The child unshares `CLONE_NEWUSER | CLONE_NEWNS` and maps ids ([`IdMaps`]): a user maps
//! their own uid and gid, which the child writes itself; root maps every id to itself, which
//! only a process in the parent namespace may write, so the child waits while perch does.
//! Then the child makes every mount a slave (host mounts still propagate in, ours never out), opens `/dev/fuse` and,
//! when the mount directory exists on the host, mounts FUSE over it; when it does not, it builds
//! a new root: a tmpfs holding a recursive bind mount of each top-level host entry (symlinks
//! copied), plus the mount directory, entered with `pivot_root`, the old root detached and the
//! new root made read-only. It returns to the working directory by path, sends the FUSE
//! descriptor to the parent over their socket pair (`SCM_RIGHTS`, [`crate::handshake`]; not
//! `pidfd_getfd`, which needs Linux 5.6 and `CAP_SYS_PTRACE` under container profiles) and execs
//! the program at once, without waiting for perch to answer the kernel's `INIT`: the kernel
//! holds the program's first request under the mount until that answer, so the program's
//! start overlaps the server's. The descriptor is close-on-exec: the program never holds it.
//!
//! Everything the child needs is prepared before `fork` ([`NsPlan`]); between `fork` and
//! `execve` it makes async-signal-safe calls only and never allocates.

use std::ffi::{CString, OsStr};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::handshake::{self, errno_now, exit, report, wait_go, Channel};
use crate::{check_int, misc, Errno, Pid};

const MSG_UNSHARED: u32 = 1;
const MSG_FUSE_FD: u32 = 2;
const MSG_SETUP_ERROR: u32 = 3;
const MSG_EXEC_ERROR: u32 = 4;
/// How the read-only binds went: (how many failed, the first failure's errno).
const MSG_READ_ONLY: u32 = 5;

/// Name of the old root's mount point inside the new root while it is being built.
const OLD_ROOT: &[u8] = b"/.perch-oldroot";

/// Where the child failed before running the program.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NsStage {
    /// `unshare(CLONE_NEWUSER | CLONE_NEWNS)`: user namespaces refused (sysctl, seccomp,
    /// another policy).
    Unshare,
    /// Writing `/proc/<pid>/{setgroups,uid_map,gid_map}` (the parent's part).
    IdMap,
    /// Making the mounts private (`MS_REC | MS_SLAVE` on `/`): no capability in the new
    /// namespace (Ubuntu's AppArmor restriction gives a namespace without capabilities).
    Propagation,
    /// `open("/dev/fuse")`: missing, or not accessible to this user.
    OpenFuse,
    /// Building the new root (tmpfs, binds, `pivot_root`).
    NewRoot,
    /// `mount(2)` of the FUSE file system.
    MountFuse,
    /// Returning to the working directory.
    Chdir,
    /// Talking to the parent.
    Handshake,
}

impl NsStage {
    fn code(self) -> i32 {
        match self {
            NsStage::Unshare => 1,
            NsStage::IdMap => 2,
            NsStage::Propagation => 3,
            NsStage::OpenFuse => 4,
            NsStage::NewRoot => 5,
            NsStage::MountFuse => 6,
            NsStage::Chdir => 7,
            NsStage::Handshake => 8,
        }
    }

    fn from_code(c: i32) -> NsStage {
        match c {
            1 => NsStage::Unshare,
            2 => NsStage::IdMap,
            3 => NsStage::Propagation,
            4 => NsStage::OpenFuse,
            5 => NsStage::NewRoot,
            6 => NsStage::MountFuse,
            7 => NsStage::Chdir,
            _ => NsStage::Handshake,
        }
    }
}

/// The child's failure before exec.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NsError {
    /// What failed.
    pub stage: NsStage,
    /// Why.
    pub errno: Errno,
}

/// One top-level host entry recreated in a new root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootEntry {
    /// A directory: recursive bind mount of the host's.
    Dir(Vec<u8>),
    /// A file (or other non-directory): bind mount over an empty file.
    File(Vec<u8>),
    /// A symbolic link: the same link (name, target).
    Symlink(Vec<u8>, Vec<u8>),
}

/// Where the FUSE file system goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountPlace {
    /// Over this existing host directory.
    Existing(Vec<u8>),
    /// In a new root made of `entries`, at `/<name>`; `base` is an existing host directory the
    /// new root's tmpfs is mounted on while it is built (`/tmp`).
    NewRoot {
        /// The top-level name of the mount directory (`cvmfs`).
        name: Vec<u8>,
        /// The host's top-level entries to recreate.
        entries: Vec<RootEntry>,
        /// An existing host directory to build on.
        base: Vec<u8>,
    },
}

enum Step {
    Mkdir(CString),
    Touch(CString),
    Bind(CString, CString),
    Symlink(CString, CString),
}

/// How the new user namespace maps ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMaps {
    /// The caller's uid and gid to themselves (`setgroups` denied): all an unprivileged user
    /// may map. The child writes the maps itself, with no round trip to perch.
    Own,
    /// Every id to itself: needs `CAP_SETUID`/`CAP_SETGID` in perch's namespace (root), so
    /// perch writes the maps while the child waits.
    All,
}

/// Everything the child needs, prepared before `fork`.
pub struct NsPlan {
    _candidates: Vec<CString>,
    candidate_ptrs: Vec<*const libc::c_char>,
    _argv: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp: Vec<*const libc::c_char>,
    fuse_target: CString,
    fuse_data_suffix: Vec<u8>,
    cwd: CString,
    /// The working directory is on the FUSE mount: entering it needs perch's answer to `INIT`,
    /// so the child enters it after sending the descriptor.
    cwd_in_mount: bool,
    new_root: Option<(CString, CString, Vec<Step>)>,
    read_only: Vec<CString>,
    /// [`IdMaps::Own`]: the `uid_map` and `gid_map` lines the child writes.
    own_maps: Option<(Vec<u8>, Vec<u8>)>,
}

fn cstring(s: &[u8]) -> Result<CString, Errno> {
    CString::new(s).map_err(|_| Errno::EINVAL)
}

fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = a.to_vec();
    v.push(b'/');
    v.extend_from_slice(b);
    v
}

impl NsPlan {
    /// `candidates`: paths tried in order with `execve` (as in [`crate::spawn::SpawnPlan`]);
    /// `env`: `KEY=VALUE`; `cwd`: the directory to return to; `mount_options`: appended to
    /// `fd=N,rootmode=40000,user_id=U,group_id=G` (uid/gid are the caller's).
    pub fn new<S: AsRef<OsStr>>(
        candidates: &[S],
        argv: &[S],
        env: &[S],
        cwd: &OsStr,
        place: &MountPlace,
        ids: IdMaps,
        mount_options: &str,
    ) -> Result<NsPlan, Errno> {
        if candidates.is_empty() || argv.is_empty() {
            return Err(Errno::EINVAL);
        }
        let list = |l: &[S]| -> Result<(Vec<CString>, Vec<*const libc::c_char>), Errno> {
            let strings = l
                .iter()
                .map(|s| cstring(s.as_ref().as_bytes()))
                .collect::<Result<Vec<_>, _>>()?;
            // The CStrings' heap buffers do not move when the vectors are moved.
            let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|c| c.as_ptr()).collect();
            ptrs.push(std::ptr::null());
            Ok((strings, ptrs))
        };
        let (candidates, candidate_ptrs) = list(candidates)?;
        let (argv_s, argv) = list(argv)?;
        let (env_s, envp) = list(env)?;
        // SAFETY: getuid/getgid cannot fail and take no pointers.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let suffix = format!(",rootmode=40000,user_id={uid},group_id={gid},{mount_options}");
        let own_maps = (ids == IdMaps::Own).then(|| {
            (
                format!("{uid} {uid} 1\n").into_bytes(),
                format!("{gid} {gid} 1\n").into_bytes(),
            )
        });
        let (fuse_target, new_root) = match place {
            MountPlace::Existing(dir) => (cstring(dir)?, None),
            MountPlace::NewRoot {
                name,
                entries,
                base,
            } => {
                let old = |n: &[u8]| cstring(&join(OLD_ROOT, n));
                let new = |n: &[u8]| cstring(&join(b"", n));
                let mut steps = Vec::new();
                for e in entries {
                    match e {
                        RootEntry::Dir(n) => {
                            steps.push(Step::Mkdir(new(n)?));
                            steps.push(Step::Bind(old(n)?, new(n)?));
                        }
                        RootEntry::File(n) => {
                            steps.push(Step::Touch(new(n)?));
                            steps.push(Step::Bind(old(n)?, new(n)?));
                        }
                        RootEntry::Symlink(n, target) => {
                            steps.push(Step::Symlink(cstring(target)?, new(n)?))
                        }
                    }
                }
                steps.push(Step::Mkdir(new(name)?));
                (
                    new(name)?,
                    Some((cstring(base)?, cstring(&join(base, &OLD_ROOT[1..]))?, steps)),
                )
            }
        };
        Ok(NsPlan {
            _candidates: candidates,
            candidate_ptrs,
            _argv: argv_s,
            argv,
            _envp: env_s,
            envp,
            fuse_data_suffix: suffix.into_bytes(),
            cwd_in_mount: cwd
                .as_bytes()
                .strip_prefix(fuse_target.as_bytes())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/")),
            cwd: cstring(cwd.as_bytes())?,
            fuse_target,
            new_root,
            read_only: Vec::new(),
            own_maps,
        })
    }

    /// Directories the program sees read-only (perch's caches: no program can change what a
    /// later job is served). Each is bound over itself and remounted read-only in the
    /// program's mount namespace, after the FUSE mount; perch's own process, outside the
    /// namespace, still writes them. Missing directories are skipped by the caller.
    pub fn read_only<P: AsRef<OsStr>>(mut self, dirs: &[P]) -> Result<NsPlan, Errno> {
        for d in dirs {
            self.read_only.push(cstring(d.as_ref().as_bytes())?);
        }
        Ok(self)
    }
}

/// Why the child exited after sending the descriptor without running the program.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LateError {
    /// No candidate could be executed.
    Exec(Errno),
    /// The working directory, on the FUSE mount, could not be entered.
    Chdir(Errno),
}

/// The child, before and after exec.
#[derive(Debug)]
pub struct NsChild {
    pid: Pid,
    sock: Channel,
    /// [`IdMaps::All`]: perch writes the maps.
    parent_maps: bool,
    /// The child's report on its read-only binds: (failures, first errno).
    read_only: std::cell::Cell<Option<(i32, i32)>>,
}

/// Forks the child described by `plan`. With [`IdMaps::All`] it stops after `unshare` until
/// [`NsChild::fuse_fd`] has written its maps; it execs the program right after sending the FUSE
/// descriptor.
pub fn spawn(plan: &NsPlan) -> Result<NsChild, Errno> {
    // `child_main` makes async-signal-safe calls only, on memory prepared before the fork.
    let (pid, sock) = handshake::fork_with_channel(plan, child_main)?;
    Ok(NsChild {
        pid,
        sock,
        parent_maps: plan.own_maps.is_none(),
        read_only: std::cell::Cell::new(None),
    })
}

fn fail(sock: RawFd, stage: NsStage) -> ! {
    report(sock, MSG_SETUP_ERROR, stage.code(), errno_now());
    exit(126)
}

/// Writes `data` to the file `path` (async-signal-safe); whether all of it was written.
fn write_file(path: &std::ffi::CStr, data: &[u8]) -> bool {
    // SAFETY: `path` is NUL-terminated and `data` readable for its length, both alive for
    // the calls; the fd is ours and closed here.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        usize::try_from(n) == Ok(data.len())
    }
}

/// `mount(2)` with optional source/type/data.
///
/// # Safety
/// Each pointer is null or a NUL-terminated string alive for the call.
unsafe fn mount_raw(
    src: *const libc::c_char,
    target: *const libc::c_char,
    fstype: *const libc::c_char,
    flags: libc::c_ulong,
    data: *const libc::c_void,
) -> bool {
    // SAFETY: the caller passes null or valid NUL-terminated strings.
    unsafe { libc::mount(src, target, fstype, flags, data) == 0 }
}

/// Writes the decimal digits of `n` (non-negative) into `buf`, returning the length.
fn itoa(mut n: i32, buf: &mut [u8; 12]) -> usize {
    let mut tmp = [0u8; 12];
    let mut len = 0;
    loop {
        tmp[len] = b'0' + u8::try_from(n % 10).unwrap_or(0);
        len += 1;
        n /= 10;
        if n == 0 || len == tmp.len() {
            break;
        }
    }
    for i in 0..len {
        buf[i] = tmp[len - 1 - i];
    }
    len
}

/// The child between fork and exec: async-signal-safe calls only, no allocation.
fn child_main(plan: &NsPlan, sock: RawFd) -> ! {
    handshake::reset_signals();
    // SAFETY: unshare takes flags only.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
        fail(sock, NsStage::Unshare);
    }
    match &plan.own_maps {
        Some((uid_map, gid_map)) => {
            if !write_file(c"/proc/self/setgroups", b"deny")
                || !write_file(c"/proc/self/uid_map", uid_map)
                || !write_file(c"/proc/self/gid_map", gid_map)
            {
                fail(sock, NsStage::IdMap);
            }
        }
        None => {
            report(sock, MSG_UNSHARED, 0, 0);
            if !wait_go(sock) {
                // The parent could not map our ids and said why itself.
                exit(126);
            }
        }
    }
    let null = std::ptr::null();
    // SAFETY: static NUL-terminated strings and null pointers.
    if !unsafe {
        mount_raw(
            null,
            c"/".as_ptr(),
            null,
            libc::MS_REC | libc::MS_SLAVE,
            null.cast(),
        )
    } {
        fail(sock, NsStage::Propagation);
    }
    // SAFETY: a static path; the fd is owned by this process until exec closes it.
    let fuse = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fuse < 0 {
        fail(sock, NsStage::OpenFuse);
    }
    if let Some((base, old_in_base, steps)) = &plan.new_root {
        build_new_root(sock, base, old_in_base, steps);
    }
    // "fd=N" + suffix, on the stack.
    let mut data = [0u8; 512];
    let mut len = 0;
    for &b in b"fd=" {
        data[len] = b;
        len += 1;
    }
    let mut digits = [0u8; 12];
    let n = itoa(fuse, &mut digits);
    for &b in &digits[..n] {
        data[len] = b;
        len += 1;
    }
    if len + plan.fuse_data_suffix.len() >= data.len() {
        fail(sock, NsStage::MountFuse);
    }
    for &b in &plan.fuse_data_suffix {
        data[len] = b;
        len += 1;
    }
    data[len] = 0;
    // SAFETY: all strings are NUL-terminated and live for the call (`data` on this stack).
    if !unsafe {
        mount_raw(
            c"perch".as_ptr(),
            plan.fuse_target.as_ptr(),
            c"fuse.perch".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RDONLY,
            data.as_ptr().cast(),
        )
    } {
        fail(sock, NsStage::MountFuse);
    }
    if plan.new_root.is_some() {
        // The new root is complete: detach the old one, and make the tmpfs read-only.
        // SAFETY: static NUL-terminated strings.
        unsafe {
            let old = c"/.perch-oldroot".as_ptr();
            if libc::umount2(old, libc::MNT_DETACH) != 0 {
                fail(sock, NsStage::NewRoot);
            }
            libc::rmdir(old);
            if !mount_raw(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV,
                null.cast(),
            ) {
                fail(sock, NsStage::NewRoot);
            }
        }
    }
    let (failed, first) = bind_read_only(&plan.read_only);
    report(sock, MSG_READ_ONLY, failed, first);
    // SAFETY: `cwd` is a NUL-terminated string owned by `plan`.
    let enter_cwd = || unsafe { libc::chdir(plan.cwd.as_ptr()) } == 0;
    if !plan.cwd_in_mount && !enter_cwd() {
        fail(sock, NsStage::Chdir);
    }
    if !handshake::send_with_fd(sock, MSG_FUSE_FD, fuse, 0, fuse) {
        fail(sock, NsStage::Handshake);
    }
    // Perch reads this failure when the child has exited ([`NsChild::late_error`]).
    if plan.cwd_in_mount && !enter_cwd() {
        fail(sock, NsStage::Chdir);
    }
    // SAFETY: our own fd; the parent holds its duplicate.
    unsafe { libc::close(fuse) };
    // `plan` owns the strings and arrays and outlives the exec.
    let err = crate::spawn::exec_first(&plan.candidate_ptrs, &plan.argv, &plan.envp);
    report(sock, MSG_EXEC_ERROR, 0, err);
    exit(127)
}

/// Binds each of `dirs` over itself and remounts the bind read-only, keeping the flags the
/// user namespace may not drop (nosuid, nodev, noexec, atime: they are locked when inherited).
/// Returns how many failed and the first failure's errno. Async-signal-safe syscalls only.
fn bind_read_only(dirs: &[CString]) -> (i32, i32) {
    const KEPT: libc::c_ulong = libc::MS_NOSUID
        | libc::MS_NODEV
        | libc::MS_NOEXEC
        | libc::MS_NOATIME
        | libc::MS_NODIRATIME
        | libc::MS_RELATIME;
    let null: *const libc::c_char = std::ptr::null();
    let (mut failed, mut first) = (0, 0);
    for d in dirs {
        // SAFETY: `d` is a NUL-terminated string owned by the plan; `st` is a writable local
        // struct; mount and statvfs are plain syscalls.
        let ok = unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            mount_raw(
                d.as_ptr(),
                d.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                null.cast(),
            ) && libc::statvfs(d.as_ptr(), &mut st) == 0
                && mount_raw(
                    null,
                    d.as_ptr(),
                    null,
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | (st.f_flag & KEPT),
                    null.cast(),
                )
        };
        if !ok {
            if failed == 0 {
                first = errno_now();
            }
            failed += 1;
        }
    }
    (failed, first)
}

/// tmpfs on `base`, `pivot_root` into it with the old root at `/.perch-oldroot`, then the
/// host's top-level entries recreated from there.
fn build_new_root(sock: RawFd, base: &CString, old_in_base: &CString, steps: &[Step]) {
    let null: *const libc::c_char = std::ptr::null();
    // SAFETY: every pointer below is null or a NUL-terminated string owned by the plan or
    // static; the calls are async-signal-safe syscalls.
    unsafe {
        if !mount_raw(
            c"perch-root".as_ptr(),
            base.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0755".as_ptr().cast(),
        ) {
            fail(sock, NsStage::NewRoot);
        }
        if libc::mkdir(old_in_base.as_ptr(), 0o700) != 0
            || libc::syscall(libc::SYS_pivot_root, base.as_ptr(), old_in_base.as_ptr()) != 0
            || libc::chdir(c"/".as_ptr()) != 0
        {
            fail(sock, NsStage::NewRoot);
        }
        for step in steps {
            let ok = match step {
                Step::Mkdir(p) => libc::mkdir(p.as_ptr(), 0o755) == 0,
                Step::Touch(p) => {
                    let fd = libc::open(
                        p.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    );
                    fd >= 0 && libc::close(fd) == 0
                }
                Step::Bind(from, to) => mount_raw(
                    from.as_ptr(),
                    to.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    null.cast(),
                ),
                Step::Symlink(target, p) => libc::symlink(target.as_ptr(), p.as_ptr()) == 0,
            };
            if !ok {
                fail(sock, NsStage::NewRoot);
            }
        }
    }
}

impl NsChild {
    /// The child's pid (the program's, after exec).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    fn expect(&self, kind: u32) -> Result<(), NsError> {
        let handshake = |errno| NsError {
            stage: NsStage::Handshake,
            errno,
        };
        Self::check(kind, self.sock.read_msg().map_err(handshake)?).map(drop)
    }

    /// `Ok` for a message of `kind`, the child's own error for a setup error.
    fn check(kind: u32, msg: Option<handshake::Msg>) -> Result<(), NsError> {
        match msg {
            Some((k, _, _)) if k == kind => Ok(()),
            Some((MSG_SETUP_ERROR, stage, errno)) => Err(NsError {
                stage: NsStage::from_code(stage),
                errno: Errno::new(errno),
            }),
            _ => Err(NsError {
                stage: NsStage::Handshake,
                errno: Errno::EPIPE,
            }),
        }
    }

    /// [`IdMaps::All`]: waits for the child's new user namespace, maps every id to itself in
    /// it and lets the child go on.
    fn map_all_ids(&self) -> Result<(), NsError> {
        self.expect(MSG_UNSHARED)?;
        let proc = format!("/proc/{}", self.pid.0);
        for file in ["uid_map", "gid_map"] {
            std::fs::write(format!("{proc}/{file}"), "0 0 4294967295\n").map_err(|e| NsError {
                stage: NsStage::IdMap,
                errno: Errno::from_io(&e),
            })?;
        }
        self.sock.go().map_err(|errno| NsError {
            stage: NsStage::Handshake,
            errno,
        })
    }

    /// How the child's read-only binds went ([`NsPlan::read_only`]), known once
    /// [`NsChild::fuse_fd`] returned: `None` when all were made, else how many failed and the
    /// first errno (the program still runs: its caches are then protected by verification
    /// alone).
    pub fn read_only_result(&self) -> Option<(i32, Errno)> {
        match self.read_only.get() {
            Some((n, errno)) if n > 0 => Some((n, Errno::new(errno))),
            _ => None,
        }
    }

    /// Maps the ids if perch must ([`IdMaps::All`]), waits for the child to mount and receives
    /// the `/dev/fuse` descriptor it sends along (`SCM_RIGHTS`; perch gets its own duplicate,
    /// close-on-exec).
    ///
    /// `Err`: the setup failed and the child never runs the program (it has exited or waits:
    /// [`NsChild::kill_and_reap`] it). `Ok(_)`: the child has sent the descriptor and goes on
    /// to exec the program; `Ok(Err(EPROTO))` when the descriptor was lost on the way (perch at
    /// its descriptor limit).
    pub fn fuse_fd(&self) -> Result<Result<OwnedFd, Errno>, NsError> {
        if self.parent_maps {
            self.map_all_ids()?;
        }
        let (msg, fd) = loop {
            let (msg, fd) = self.sock.read_msg_with_fd().map_err(|errno| NsError {
                stage: NsStage::Handshake,
                errno,
            })?;
            // The read-only binds are reported just before the descriptor.
            if let Some((MSG_READ_ONLY, n, errno)) = msg {
                self.read_only.set(Some((n, errno)));
                continue;
            }
            break (msg, fd);
        };
        Self::check(MSG_FUSE_FD, msg)?;
        Ok(fd.ok_or(Errno::new(libc::EPROTO)))
    }

    /// After the child has exited: why it did not run the program, if it sent the
    /// descriptor and then failed (a working directory on the FUSE mount it cannot enter, or
    /// an `execve` error).
    pub fn late_error(&self) -> Option<LateError> {
        match self.sock.leftover() {
            Some((MSG_EXEC_ERROR, _, errno)) => Some(LateError::Exec(Errno::new(errno))),
            Some((MSG_SETUP_ERROR, stage, errno))
                if NsStage::from_code(stage) == NsStage::Chdir =>
            {
                Some(LateError::Chdir(Errno::new(errno)))
            }
            _ => None,
        }
    }

    /// Waits for the child to end (retrying after signals): its exit code, or the signal
    /// that killed it as `Err(signal)`.
    pub fn wait(&self) -> Result<Result<i32, i32>, Errno> {
        let mut status: libc::c_int = 0;
        loop {
            // SAFETY: `status` is a writable c_int that outlives the call.
            match check_int(unsafe { libc::waitpid(self.pid.0, &mut status, 0) }) {
                Ok(_) => break,
                Err(e) if e == Errno::EINTR => continue,
                Err(e) => return Err(e),
            }
        }
        if libc::WIFEXITED(status) {
            Ok(Ok(libc::WEXITSTATUS(status)))
        } else {
            Ok(Err(libc::WTERMSIG(status)))
        }
    }

    /// Kills the child and reaps it (for failures before the program runs).
    pub fn kill_and_reap(&self) {
        let _ = misc::kill(self.pid, libc::SIGKILL);
        let mut status = 0;
        // SAFETY: `status` is a writable c_int that outlives the call.
        unsafe { libc::waitpid(self.pid.0, &mut status, 0) };
    }
}

/// The pid [`forward_signals`] sends to (0: none).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and takes no pointers.
        unsafe { libc::kill(pid, sig) };
    }
}

extern "C" fn ignore(_sig: libc::c_int) {}

/// While the program runs, behave like a shell waiting for a job: `SIGINT` and `SIGQUIT` (sent
/// by the terminal to the whole foreground group) are caught and do nothing in perch, and
/// `SIGTERM`/`SIGHUP` sent to perch are passed on to `pid`. Handlers, not `SIG_IGN`, so that
/// programs started later do not inherit an ignored signal.
pub fn forward_signals(pid: Pid) -> Result<(), Errno> {
    FORWARD_TO.store(pid.0, Ordering::Relaxed);
    for (sig, handler) in [
        (libc::SIGINT, ignore as extern "C" fn(libc::c_int)),
        (libc::SIGQUIT, ignore),
        (libc::SIGTERM, forward),
        (libc::SIGHUP, forward),
    ] {
        // SAFETY: `sa` is a valid, initialised sigaction that outlives the call; the handlers
        // only call async-signal-safe functions.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            check_int(libc::sigaction(sig, &sa, std::ptr::null_mut()))?;
        }
    }
    Ok(())
}

/// Makes this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`), so that
/// processes a program leaves behind can be found with [`kill_remaining_children`].
pub fn become_subreaper() -> Result<(), Errno> {
    // SAFETY: prctl with integer arguments only.
    check_int(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(drop)
}

/// This process's children, from `/proc/self/task/*/children` (empty where the kernel lacks
/// `CONFIG_PROC_CHILDREN`).
fn own_children() -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// Kills (`SIGKILL`) and reaps every remaining child of this process, again and again, since
/// the orphans of a killed one come to this process (see [`become_subreaper`]), until none is
/// left.
pub fn kill_remaining_children() {
    loop {
        let kids = own_children();
        if kids.is_empty() {
            return;
        }
        for k in kids {
            let _ = misc::kill(Pid(k), libc::SIGKILL);
        }
        let mut status = 0;
        // SAFETY: `status` is a writable c_int that outlives the call. Each child was just
        // sent SIGKILL, so the wait ends.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
        if r < 0 && errno_now() != libc::EINTR {
            return;
        }
    }
}

/// Whether the mount directory must be made in a new root: `Ok(true)` when `path` does not
/// exist, `Ok(false)` for an existing directory.
pub fn needs_new_root(path: &std::path::Path) -> Result<bool, Errno> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(false),
        Ok(_) => Err(Errno::ENOTDIR),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Errno::from_io(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itoa_writes_decimal() {
        let mut b = [0u8; 12];
        let n = itoa(0, &mut b);
        assert_eq!(&b[..n], b"0");
        let n = itoa(1234, &mut b);
        assert_eq!(&b[..n], b"1234");
        let n = itoa(i32::MAX, &mut b);
        assert_eq!(&b[..n], b"2147483647");
    }

    #[test]
    fn a_new_root_plan_binds_each_entry_from_the_old_root() {
        let place = MountPlace::NewRoot {
            name: b"cvmfs".to_vec(),
            entries: vec![
                RootEntry::Dir(b"usr".to_vec()),
                RootEntry::Symlink(b"bin".to_vec(), b"usr/bin".to_vec()),
            ],
            base: b"/tmp".to_vec(),
        };
        let plan = NsPlan::new(
            &["/bin/true"],
            &["true"],
            &[],
            OsStr::new("/"),
            &place,
            IdMaps::Own,
            "ro",
        )
        .unwrap();
        let (base, old, steps) = plan.new_root.as_ref().unwrap();
        assert_eq!(base.as_bytes(), b"/tmp");
        assert_eq!(old.as_bytes(), b"/tmp/.perch-oldroot");
        assert!(matches!(&steps[1], Step::Bind(f, t)
            if f.as_bytes() == b"/.perch-oldroot/usr" && t.as_bytes() == b"/usr"));
        assert!(matches!(&steps[2], Step::Symlink(t, p)
            if t.as_bytes() == b"usr/bin" && p.as_bytes() == b"/bin"));
        assert_eq!(plan.fuse_target.as_bytes(), b"/cvmfs");
        assert!(String::from_utf8_lossy(&plan.fuse_data_suffix).starts_with(",rootmode=40000,"));
        // SAFETY: getuid/getgid take no pointers.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let (u, g) = plan.own_maps.as_ref().unwrap();
        assert_eq!(
            (u.as_slice(), g.as_slice()),
            (
                format!("{uid} {uid} 1\n").as_bytes(),
                format!("{gid} {gid} 1\n").as_bytes()
            )
        );
    }
}
