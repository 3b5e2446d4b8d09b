//! `perch run --mode`: which backend runs the program, and why the others do not.
//!
//! - `notify`: seccomp user notification + ptrace (works without user namespaces; Linux ≥ 5.14).
//! - `fuse`: perch's FUSE server at `/cvmfs` in a private user + mount namespace; nothing is
//!   intercepted.
//! - `ptrace`: every trapped call stops the program for perch (`SECCOMP_RET_TRACE`); the
//!   kernel opens shadow files itself (Linux ≥ 4.8; no user namespaces, no seccomp
//!   notification).
//! - `auto`: fuse when its setup succeeds (the setup itself is the probe: a fork, `unshare`,
//!   the id maps, `open("/dev/fuse")` and the mounts, a few milliseconds, all undone with the
//!   child if any step fails), else notify when the kernel has it and lets perch install a
//!   listener, else ptrace. `-d mode` logs the choice and the reasons.

use std::fmt;

use perch_sys::ns::{NsError, NsStage};

/// How `perch run` gives the program its `/cvmfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// fuse where it works, else notify, else ptrace.
    #[default]
    Auto,
    /// perch's FUSE server at /cvmfs in a private user + mount namespace (nothing intercepted).
    Fuse,
    /// seccomp user notification + ptrace (no namespaces needed).
    Notify,
    /// ptrace alone, at seccomp stops (older kernels, or where notification is refused).
    Ptrace,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Fuse => "fuse",
            Mode::Notify => "notify",
            Mode::Ptrace => "ptrace",
        })
    }
}

/// Why fuse mode cannot run here (one line, lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// What on this host refuses user namespaces, as far as files in /proc tell.
fn userns_policy() -> String {
    let mut why = Vec::new();
    if read_trim("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        why.push("sysctl user.max_user_namespaces=0".to_string());
    }
    if read_trim("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        why.push("sysctl kernel.unprivileged_userns_clone=0".to_string());
    }
    if read_trim("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        why.push("AppArmor's restriction of unprivileged user namespaces".to_string());
    }
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim() == "2"))
        })
        .unwrap_or(false);
    if seccomp {
        why.push("a seccomp filter on perch (as in Docker's default profile)".to_string());
    }
    if why.is_empty() {
        "user namespaces are refused here".to_string()
    } else {
        why.join(", or ")
    }
}

/// The one-line reason for a failed namespace setup.
pub fn explain(e: &NsError) -> Unavailable {
    let errno = e.errno;
    let msg = errno.to_string();
    Unavailable(match e.stage {
        NsStage::Unshare => format!(
            "unshare(CLONE_NEWUSER|CLONE_NEWNS) failed ({msg}): {}",
            userns_policy()
        ),
        NsStage::IdMap => format!("cannot map uid/gid in the new user namespace ({msg})"),
        NsStage::Propagation => format!(
            "no mount privilege in the new user namespace ({msg}; {})",
            userns_policy()
        ),
        NsStage::OpenFuse => match errno.raw() {
            libc::ENOENT | libc::ENODEV | libc::ENXIO => {
                format!("no /dev/fuse ({msg}): FUSE is not available in this kernel or container")
            }
            _ => {
                let mode = std::fs::metadata("/dev/fuse")
                    .map(|m| {
                        use std::os::unix::fs::MetadataExt;
                        format!(" (mode {:o}, owner uid {})", m.mode() & 0o7777, m.uid())
                    })
                    .unwrap_or_default();
                format!(
                    "cannot open /dev/fuse{mode} as uid {}: {msg}",
                    rustix::process::getuid().as_raw()
                )
            }
        },
        NsStage::NewRoot => format!(
            "cannot build a new root with the mount directory (tmpfs, bind mounts, pivot_root: {msg})"
        ),
        NsStage::MountFuse => format!(
            "mount of the FUSE file system refused in the user namespace ({msg}; needs Linux >= 4.18)"
        ),
        NsStage::Chdir => format!("cannot return to the working directory in the new root ({msg})"),
        NsStage::Handshake => format!("namespace setup failed ({msg})"),
    })
}
