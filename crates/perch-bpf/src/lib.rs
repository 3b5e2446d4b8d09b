//! Seccomp filters as classic BPF, built and tested in user space.
//!
//! This crate owns the program perch loads with `seccomp(2)`: a [`Policy`] (one [`Action`] per
//! syscall number, a default, what to do with a foreign architecture or an x32 call) compiles to a
//! [`Program`] of [`Insn`]s — architecture check, x32 check, the few argument rules
//! ([`Policy::set_when`], a handful of comparisons on their syscall only), then a binary search
//! over ranges of syscall numbers, so a call costs about log2(ranges) comparisons. [`Program::run`] interprets a
//! program on a made-up [`SeccompData`], which is how the tests prove that no syscall escapes.
//! No libseccomp; this crate knows no processes and makes no syscalls.
//!
//! ```
//! use perch_bpf::{Action, Policy, SeccompData, AUDIT_ARCH_X86_64};
//!
//! let mut policy = Policy::new(Action::Allow);
//! policy.set(257, Action::Notify); // openat
//! let prog = policy.compile().unwrap();
//! assert_eq!(prog.run(&SeccompData::new(257, AUDIT_ARCH_X86_64)).unwrap(), Action::Notify.to_ret());
//! assert_eq!(prog.run(&SeccompData::new(0, AUDIT_ARCH_X86_64)).unwrap(), Action::Allow.to_ret());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;

/// `AUDIT_ARCH_X86_64`.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `__X32_SYSCALL_BIT`.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `BPF_MAXINSNS`: the kernel refuses longer programs.
pub const BPF_MAXINSNS: usize = 4096;

/// Opcodes used by this crate (`BPF_CLASS | BPF_SIZE | BPF_MODE` etc.).
pub mod op {
    /// `BPF_LD | BPF_W | BPF_ABS`: A = data\[k\] (32 bits).
    pub const LD_W_ABS: u16 = 0x20;
    /// `BPF_JMP | BPF_JA`: pc += k.
    pub const JA: u16 = 0x05;
    /// `BPF_JMP | BPF_JEQ | BPF_K`.
    pub const JEQ_K: u16 = 0x15;
    /// `BPF_JMP | BPF_JGT | BPF_K`.
    pub const JGT_K: u16 = 0x25;
    /// `BPF_JMP | BPF_JGE | BPF_K`.
    pub const JGE_K: u16 = 0x35;
    /// `BPF_JMP | BPF_JSET | BPF_K`.
    pub const JSET_K: u16 = 0x45;
    /// `BPF_ALU | BPF_AND | BPF_K`.
    pub const AND_K: u16 = 0x54;
    /// `BPF_RET | BPF_K`.
    pub const RET_K: u16 = 0x06;
}

/// Offsets in `struct seccomp_data`.
pub mod offset {
    /// `nr` (int).
    pub const NR: u32 = 0;
    /// `arch` (u32).
    pub const ARCH: u32 = 4;
    /// `instruction_pointer` (u64).
    pub const IP: u32 = 8;
    /// `args[0]` (u64; each next argument 8 bytes further).
    pub const ARGS: u32 = 16;
}

/// One classic-BPF instruction, laid out like `struct sock_filter`: a compiled program's
/// instructions are what `seccomp(2)` takes, without conversion.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

impl Insn {
    /// `code k`, no jumps.
    pub const fn stmt(code: u16, k: u32) -> Insn {
        Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }
    /// A conditional jump.
    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
        Insn { code, jt, jf, k }
    }
}

impl fmt::Display for Insn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.k;
        match self.code {
            op::LD_W_ABS => write!(f, "ld [{k}]"),
            op::JA => write!(f, "ja +{k}"),
            op::JEQ_K => write!(f, "jeq #{k:#x}, +{}, +{}", self.jt, self.jf),
            op::JGT_K => write!(f, "jgt #{k:#x}, +{}, +{}", self.jt, self.jf),
            op::JGE_K => write!(f, "jge #{k:#x}, +{}, +{}", self.jt, self.jf),
            op::JSET_K => write!(f, "jset #{k:#x}, +{}, +{}", self.jt, self.jf),
            op::AND_K => write!(f, "and #{k:#x}"),
            op::RET_K => write!(f, "ret {}", Action::from_ret(k)),
            c => write!(f, "op {c:#x} {} {} {k:#x}", self.jt, self.jf),
        }
    }
}

/// What the kernel does with a syscall.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Run it.
    Allow,
    /// Ask the supervisor (`SECCOMP_RET_USER_NOTIF`).
    Notify,
    /// Stop for the ptrace tracer (`SECCOMP_RET_TRACE`) with this data.
    Trace(u16),
    /// Fail with this errno without running it.
    Errno(u16),
    /// Kill the whole process.
    KillProcess,
    /// Kill the calling thread.
    KillThread,
    /// Send `SIGSYS`.
    Trap,
    /// Log and run.
    Log,
}

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ACTION_FULL: u32 = 0xffff_0000;
const RET_DATA: u32 = 0x0000_ffff;

impl Action {
    /// The `SECCOMP_RET_*` value.
    pub const fn to_ret(self) -> u32 {
        match self {
            Action::Allow => RET_ALLOW,
            Action::Notify => RET_USER_NOTIF,
            Action::Trace(d) => RET_TRACE | d as u32,
            Action::Errno(e) => RET_ERRNO | e as u32,
            Action::KillProcess => RET_KILL_PROCESS,
            Action::KillThread => RET_KILL_THREAD,
            Action::Trap => RET_TRAP,
            Action::Log => RET_LOG,
        }
    }

    /// Decodes a `SECCOMP_RET_*` value; unknown actions are treated as the kernel does (kill).
    pub fn from_ret(ret: u32) -> Action {
        let data = u16::try_from(ret & RET_DATA).unwrap_or(0);
        match ret & RET_ACTION_FULL {
            RET_ALLOW => Action::Allow,
            RET_USER_NOTIF => Action::Notify,
            RET_TRACE => Action::Trace(data),
            RET_ERRNO => Action::Errno(data),
            RET_KILL_THREAD => Action::KillThread,
            RET_TRAP => Action::Trap,
            RET_LOG => Action::Log,
            _ => Action::KillProcess,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Allow => f.write_str("ALLOW"),
            Action::Notify => f.write_str("USER_NOTIF"),
            Action::Trace(d) => write!(f, "TRACE({d})"),
            Action::Errno(e) => write!(f, "ERRNO({e})"),
            Action::KillProcess => f.write_str("KILL_PROCESS"),
            Action::KillThread => f.write_str("KILL_THREAD"),
            Action::Trap => f.write_str("TRAP"),
            Action::Log => f.write_str("LOG"),
        }
    }
}

/// Why a policy or program is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The program has more instructions than the kernel accepts.
    #[error("program has {len} instructions, the kernel accepts at most {BPF_MAXINSNS}")]
    TooLong {
        /// Instructions.
        len: usize,
    },
    /// A rule names an x32 or out-of-range syscall number.
    #[error("syscall number {nr:#x} is not a native x86_64 number")]
    BadNumber {
        /// The number.
        nr: u32,
    },
    /// The interpreter met an instruction it does not know or that is malformed.
    #[error("invalid instruction at {pc}: {insn}")]
    BadInsn {
        /// Index.
        pc: usize,
        /// The instruction.
        insn: Insn,
    },
    /// Execution ran past the end or jumped out of the program.
    #[error("program falls off its end at {pc}")]
    FallsOff {
        /// Index.
        pc: usize,
    },
    /// The program is empty.
    #[error("empty program")]
    Empty,
    /// An argument rule names an argument beyond the sixth, or is too long to jump over.
    #[error("argument rule for syscall {nr} is invalid")]
    BadArgRule {
        /// The rule's syscall number.
        nr: u32,
    },
}

/// One action per syscall number, plus the default and the architecture checks.
#[derive(Clone, Debug)]
pub struct Policy {
    /// For numbers without a rule.
    pub default: Action,
    /// For a `seccomp_data.arch` other than x86_64 (i386 via `int 0x80`).
    pub bad_arch: Action,
    /// For numbers with the x32 bit set.
    pub x32: Action,
    rules: BTreeMap<u32, Action>,
    arg_rules: Vec<ArgRule>,
}

/// A rule on argument values, checked before the per-number rules: syscall `nr` whose
/// arguments `args[i] == v` for every `(i, v)` gets `action`; other calls of `nr` get its
/// per-number action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgRule {
    /// Syscall number.
    pub nr: u32,
    /// `(argument index 0..6, full 64-bit value)` pairs that must all match.
    pub args: Vec<(usize, u64)>,
    /// What matching calls get.
    pub action: Action,
}

impl Policy {
    /// A policy with `default` for every number; foreign architectures and x32 kill the process.
    pub fn new(default: Action) -> Policy {
        Policy {
            default,
            bad_arch: Action::KillProcess,
            x32: Action::KillProcess,
            rules: BTreeMap::new(),
            arg_rules: Vec::new(),
        }
    }

    /// Adds an argument rule: `nr` with every `(index, value)` of `args` matching gets `action`
    /// (checked in the order added, before the per-number rules).
    pub fn set_when(&mut self, nr: u32, args: &[(usize, u64)], action: Action) -> &mut Policy {
        self.arg_rules.push(ArgRule {
            nr,
            args: args.to_vec(),
            action,
        });
        self
    }

    /// The action for a whole call according to the rules (what the program must return).
    pub fn action_for_data(&self, data: &SeccompData) -> Action {
        let nr = u32::from_ne_bytes(data.nr.to_ne_bytes());
        if data.arch == AUDIT_ARCH_X86_64 && nr < X32_SYSCALL_BIT {
            if let Some(r) = self
                .arg_rules
                .iter()
                .find(|r| r.nr == nr && r.args.iter().all(|&(i, v)| data.args[i] == v))
            {
                return r.action;
            }
        }
        if data.arch != AUDIT_ARCH_X86_64 {
            return self.bad_arch;
        }
        self.action_for(nr)
    }

    /// Sets the action for `nr` (replacing an earlier one).
    pub fn set(&mut self, nr: u32, action: Action) -> &mut Policy {
        self.rules.insert(nr, action);
        self
    }

    /// The action for native number `nr` according to the rules (what the program must return).
    pub fn action_for(&self, nr: u32) -> Action {
        if nr >= X32_SYSCALL_BIT {
            return self.x32;
        }
        self.rules.get(&nr).copied().unwrap_or(self.default)
    }

    /// Compiles to a program.
    pub fn compile(&self) -> Result<Program, Error> {
        if let Some((&nr, _)) = self.rules.range(X32_SYSCALL_BIT..).next() {
            return Err(Error::BadNumber { nr });
        }
        // Partition [0, X32_SYSCALL_BIT) into ranges [lo, next lo) of equal action.
        let mut ranges: Vec<(u32, Action)> = vec![(0, self.default)];
        for (&nr, &action) in &self.rules {
            if ranges.last().is_some_and(|&(lo, _)| lo == nr) {
                ranges.pop();
            }
            if ranges.last().map(|&(_, a)| a) != Some(action) {
                ranges.push((nr, action));
            }
            if nr + 1 < X32_SYSCALL_BIT && self.default != action {
                ranges.push((nr + 1, self.default));
            }
        }
        // Merge neighbours that ended up equal (rule followed by its default range, etc.).
        let mut merged: Vec<(u32, Action)> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if last.1 == r.1 => {}
                Some(last) if last.0 == r.0 => *last = r,
                _ => merged.push(r),
            }
        }
        let mut insns = vec![
            Insn::stmt(op::LD_W_ABS, offset::ARCH),
            Insn::jump(op::JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
            Insn::stmt(op::RET_K, self.bad_arch.to_ret()),
            Insn::stmt(op::LD_W_ABS, offset::NR),
            Insn::jump(op::JGE_K, X32_SYSCALL_BIT, 0, 1),
            Insn::stmt(op::RET_K, self.x32.to_ret()),
        ];
        for rule in &self.arg_rules {
            insns.extend(arg_rule(rule)?);
        }
        insns.extend(search_tree(&merged));
        if insns.len() > BPF_MAXINSNS {
            return Err(Error::TooLong { len: insns.len() });
        }
        Ok(Program { insns })
    }
}

/// One argument rule, entered and left with A = the syscall number: compare each argument's
/// two 32-bit halves (little-endian: low word first), return the action if all match, else
/// reload the number for what follows.
fn arg_rule(rule: &ArgRule) -> Result<Vec<Insn>, Error> {
    let bad = Error::BadArgRule { nr: rule.nr };
    if rule.nr >= X32_SYSCALL_BIT || rule.args.is_empty() {
        return Err(bad);
    }
    let mut body = Vec::new();
    for &(i, v) in &rule.args {
        if i >= 6 {
            return Err(bad);
        }
        let off = offset::ARGS + 8 * u32::try_from(i).map_err(|_| bad.clone())?;
        let halves = [(off, v & 0xffff_ffff), (off + 4, v >> 32)];
        for (at, want) in halves {
            body.push(Insn::stmt(op::LD_W_ABS, at));
            // Placeholder jump-false offset, fixed below once the body's length is known.
            body.push(Insn::jump(
                op::JEQ_K,
                u32::try_from(want).map_err(|_| bad.clone())?,
                0,
                0,
            ));
        }
    }
    body.push(Insn::stmt(op::RET_K, rule.action.to_ret()));
    // A mismatch jumps to the reload that follows the body.
    let len = body.len();
    for (p, insn) in body.iter_mut().enumerate() {
        if insn.code == op::JEQ_K {
            insn.jf = u8::try_from(len - p - 1).map_err(|_| bad.clone())?;
        }
    }
    let mut out = vec![Insn::jump(
        op::JEQ_K,
        rule.nr,
        0,
        u8::try_from(len).map_err(|_| bad.clone())?,
    )];
    out.extend(body);
    out.push(Insn::stmt(op::LD_W_ABS, offset::NR));
    Ok(out)
}

/// A binary search over sorted ranges `(lo, action)`; A holds the syscall number.
fn search_tree(ranges: &[(u32, Action)]) -> Vec<Insn> {
    match ranges {
        [] => vec![Insn::stmt(op::RET_K, Action::KillProcess.to_ret())],
        [(_, action)] => vec![Insn::stmt(op::RET_K, action.to_ret())],
        _ => {
            let mid = ranges.len() / 2;
            let left = search_tree(&ranges[..mid]);
            let right = search_tree(&ranges[mid..]);
            let mut out = Vec::with_capacity(left.len() + right.len() + 2);
            match u8::try_from(left.len()) {
                Ok(skip) => out.push(Insn::jump(op::JGE_K, ranges[mid].0, skip, 0)),
                Err(_) => {
                    // Too far for an 8-bit offset: jump over an unconditional long jump.
                    out.push(Insn::jump(op::JGE_K, ranges[mid].0, 0, 1));
                    out.push(Insn::stmt(
                        op::JA,
                        u32::try_from(left.len()).unwrap_or(u32::MAX),
                    ));
                }
            }
            out.extend(left);
            out.extend(right);
            out
        }
    }
}

/// What a filter sees: `struct seccomp_data`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SeccompData {
    /// Syscall number.
    pub nr: i32,
    /// `AUDIT_ARCH_*`.
    pub arch: u32,
    /// Instruction pointer.
    pub ip: u64,
    /// Arguments.
    pub args: [u64; 6],
}

impl SeccompData {
    /// Number `nr` on `arch`, zero arguments.
    pub fn new(nr: u32, arch: u32) -> SeccompData {
        SeccompData {
            nr: i32::from_ne_bytes(nr.to_ne_bytes()),
            arch,
            ip: 0,
            args: [0; 6],
        }
    }

    /// The 64 bytes the kernel lays out.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&self.nr.to_ne_bytes());
        b[4..8].copy_from_slice(&self.arch.to_ne_bytes());
        b[8..16].copy_from_slice(&self.ip.to_ne_bytes());
        for (i, a) in self.args.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        b
    }
}

/// A compiled filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    insns: Vec<Insn>,
}

impl Program {
    /// Wraps instructions (for the interpreter's tests).
    pub fn from_insns(insns: Vec<Insn>) -> Program {
        Program { insns }
    }

    /// The instructions.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Whether there are no instructions.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// Runs the program on `data` like the kernel's seccomp BPF: returns the `SECCOMP_RET_*` value.
    pub fn run(&self, data: &SeccompData) -> Result<u32, Error> {
        if self.insns.is_empty() {
            return Err(Error::Empty);
        }
        if self.insns.len() > BPF_MAXINSNS {
            return Err(Error::TooLong {
                len: self.insns.len(),
            });
        }
        let bytes = data.to_bytes();
        let mut a: u32 = 0;
        let mut pc: usize = 0;
        loop {
            let insn = *self.insns.get(pc).ok_or(Error::FallsOff { pc })?;
            let bad = Error::BadInsn { pc, insn };
            let next = pc + 1;
            pc = match insn.code {
                op::LD_W_ABS => {
                    let k = usize::try_from(insn.k).map_err(|_| bad.clone())?;
                    if k % 4 != 0 || k + 4 > bytes.len() {
                        return Err(bad);
                    }
                    let mut w = [0u8; 4];
                    w.copy_from_slice(&bytes[k..k + 4]);
                    a = u32::from_ne_bytes(w);
                    next
                }
                op::AND_K => {
                    a &= insn.k;
                    next
                }
                op::JA => next + usize::try_from(insn.k).map_err(|_| bad)?,
                op::JEQ_K | op::JGT_K | op::JGE_K | op::JSET_K => {
                    let taken = match insn.code {
                        op::JEQ_K => a == insn.k,
                        op::JGT_K => a > insn.k,
                        op::JGE_K => a >= insn.k,
                        _ => a & insn.k != 0,
                    };
                    next + usize::from(if taken { insn.jt } else { insn.jf })
                }
                op::RET_K => return Ok(insn.k),
                _ => return Err(bad),
            };
        }
    }

    /// [`Program::run`] decoded into an [`Action`].
    pub fn action(&self, data: &SeccompData) -> Result<Action, Error> {
        self.run(data).map(Action::from_ret)
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, insn) in self.insns.iter().enumerate() {
            writeln!(f, "{i:4}: {insn}")?;
        }
        Ok(())
    }
}

impl Clone for Error {
    fn clone(&self) -> Self {
        match self {
            Error::TooLong { len } => Error::TooLong { len: *len },
            Error::BadNumber { nr } => Error::BadNumber { nr: *nr },
            Error::BadInsn { pc, insn } => Error::BadInsn {
                pc: *pc,
                insn: *insn,
            },
            Error::FallsOff { pc } => Error::FallsOff { pc: *pc },
            Error::Empty => Error::Empty,
            Error::BadArgRule { nr } => Error::BadArgRule { nr: *nr },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use perch_syscalls::{filesystem, Sysno, MAX_NR};

    const ENOSYS: u16 = 38;
    const EPERM: u16 = 1;
    const I386: u32 = 0x4000_0003;

    /// The policy perch-intercept builds: notify the file-system set, trace exec and chdir,
    /// refuse io_uring and ptrace.
    fn perch_policy() -> Policy {
        let mut p = Policy::new(Action::Allow);
        for nr in filesystem().iter() {
            p.set(nr, Action::Notify);
        }
        for s in [Sysno::Execve, Sysno::Execveat, Sysno::Chdir] {
            p.set(s.nr(), Action::Trace(0));
        }
        for s in [
            Sysno::IoUringSetup,
            Sysno::IoUringEnter,
            Sysno::IoUringRegister,
        ] {
            p.set(s.nr(), Action::Errno(ENOSYS));
        }
        p.set(Sysno::Ptrace.nr(), Action::Errno(EPERM));
        p
    }

    fn act(prog: &Program, nr: u32, arch: u32) -> Action {
        prog.action(&SeccompData::new(nr, arch)).unwrap()
    }

    #[test]
    fn the_five_cases() {
        let prog = perch_policy().compile().unwrap();
        assert_eq!(act(&prog, Sysno::Openat.nr(), I386), Action::KillProcess);
        assert_eq!(
            act(&prog, Sysno::Openat.nr(), AUDIT_ARCH_X86_64),
            Action::Notify
        );
        assert_eq!(
            act(&prog, Sysno::Execve.nr(), AUDIT_ARCH_X86_64),
            Action::Trace(0)
        );
        assert_eq!(
            act(&prog, Sysno::IoUringSetup.nr(), AUDIT_ARCH_X86_64),
            Action::Errno(ENOSYS)
        );
        assert_eq!(
            act(&prog, Sysno::Read.nr(), AUDIT_ARCH_X86_64),
            Action::Allow
        );
        assert_eq!(
            act(&prog, Sysno::Ptrace.nr(), AUDIT_ARCH_X86_64),
            Action::Errno(EPERM)
        );
        // x32 openat (0x40000000 | 257)
        assert_eq!(
            act(&prog, X32_SYSCALL_BIT | 257, AUDIT_ARCH_X86_64),
            Action::KillProcess
        );
        assert_eq!(act(&prog, u32::MAX, AUDIT_ARCH_X86_64), Action::KillProcess);
    }

    #[test]
    fn sweep_every_number_against_the_policy() {
        let policy = perch_policy();
        let prog = policy.compile().unwrap();
        for nr in 0..MAX_NR + 64 {
            assert_eq!(
                act(&prog, nr, AUDIT_ARCH_X86_64),
                policy.action_for(nr),
                "syscall {nr}"
            );
            assert_eq!(act(&prog, nr, I386), Action::KillProcess);
        }
        for nr in [
            X32_SYSCALL_BIT - 1,
            X32_SYSCALL_BIT,
            X32_SYSCALL_BIT + 59,
            u32::MAX,
        ] {
            assert_eq!(act(&prog, nr, AUDIT_ARCH_X86_64), policy.action_for(nr));
        }
        assert!(prog.len() < BPF_MAXINSNS);
    }

    #[test]
    fn program_is_short() {
        let prog = perch_policy().compile().unwrap();
        assert!(prog.len() < 4096);
        // A binary search: far fewer instructions than rules * 2.
        assert!(
            prog.len() < 2 * filesystem().iter().count() + 16,
            "{}",
            prog.len()
        );
    }

    #[test]
    fn long_jumps_work_for_big_alternating_policies() {
        // Every other number notified: ~1000 ranges, left subtrees longer than 255.
        let mut p = Policy::new(Action::Allow);
        for nr in (0..2000).step_by(2) {
            p.set(nr, Action::Notify);
        }
        let prog = p.compile().unwrap();
        assert!(prog.insns().iter().any(|i| i.code == op::JA));
        for nr in 0..2100 {
            assert_eq!(act(&prog, nr, AUDIT_ARCH_X86_64), p.action_for(nr), "{nr}");
        }
    }

    #[test]
    fn too_long_is_refused() {
        let mut p = Policy::new(Action::Allow);
        for nr in (0..6000).step_by(2) {
            p.set(nr, Action::Notify);
        }
        assert!(matches!(p.compile(), Err(Error::TooLong { .. })));
    }

    #[test]
    fn argument_rules_match_whole_64_bit_values() {
        const PRCTL: u32 = 157;
        let mut p = perch_policy();
        p.set_when(PRCTL, &[(0, 4), (1, 0)], Action::Errno(0));
        let prog = p.compile().unwrap();
        let call = |nr: u32, args: [u64; 6]| {
            let mut d = SeccompData::new(nr, AUDIT_ARCH_X86_64);
            d.args = args;
            let got = prog.action(&d).unwrap();
            assert_eq!(got, p.action_for_data(&d), "nr {nr} {args:?}");
            got
        };
        assert_eq!(call(PRCTL, [4, 0, 7, 0, 0, 0]), Action::Errno(0));
        for args in [
            [4, 1, 0, 0, 0, 0],
            [3, 0, 0, 0, 0, 0],
            [4 | 1 << 32, 0, 0, 0, 0, 0],
            [4, 1 << 32, 0, 0, 0, 0],
        ] {
            assert_eq!(call(PRCTL, args), Action::Allow, "{args:?}");
        }
        // Other numbers keep their actions, whatever their arguments.
        for nr in 0..=MAX_NR {
            if nr != PRCTL {
                assert_eq!(call(nr, [4, 0, 0, 0, 0, 0]), p.action_for(nr), "nr {nr}");
            }
        }
        let mut bad = Policy::new(Action::Allow);
        bad.set_when(PRCTL, &[(6, 0)], Action::Errno(0));
        assert_eq!(bad.compile(), Err(Error::BadArgRule { nr: PRCTL }));
    }

    #[test]
    fn x32_rule_is_refused() {
        let mut p = Policy::new(Action::Allow);
        p.set(X32_SYSCALL_BIT | 1, Action::Notify);
        assert!(matches!(p.compile(), Err(Error::BadNumber { .. })));
    }

    #[test]
    fn x32_action_is_configurable() {
        let mut p = perch_policy();
        p.x32 = Action::Errno(ENOSYS);
        let prog = p.compile().unwrap();
        assert_eq!(
            act(&prog, X32_SYSCALL_BIT | 2, AUDIT_ARCH_X86_64),
            Action::Errno(ENOSYS)
        );
    }

    #[test]
    fn interpreter_rejects_bad_programs() {
        let bad = Program::from_insns(vec![Insn::stmt(0xff, 0)]);
        assert!(matches!(
            bad.run(&SeccompData::default()),
            Err(Error::BadInsn { .. })
        ));
        let off = Program::from_insns(vec![Insn::stmt(op::JA, 5)]);
        assert!(matches!(
            off.run(&SeccompData::default()),
            Err(Error::FallsOff { .. })
        ));
        let unaligned = Program::from_insns(vec![Insn::stmt(op::LD_W_ABS, 2)]);
        assert!(matches!(
            unaligned.run(&SeccompData::default()),
            Err(Error::BadInsn { .. })
        ));
        assert_eq!(
            Program::from_insns(vec![]).run(&SeccompData::default()),
            Err(Error::Empty)
        );
    }

    #[test]
    fn actions_round_trip() {
        for a in [
            Action::Allow,
            Action::Notify,
            Action::Trace(7),
            Action::Errno(38),
            Action::KillProcess,
            Action::KillThread,
            Action::Trap,
            Action::Log,
        ] {
            assert_eq!(Action::from_ret(a.to_ret()), a);
        }
    }

    proptest::proptest! {
        #[test]
        fn random_policies_compile_to_equivalent_programs(
            rules in proptest::collection::vec((0u32..600, 0u8..4), 0..200),
            probes in proptest::collection::vec(0u32..700, 50),
        ) {
            let mut p = Policy::new(Action::Allow);
            for (nr, a) in rules {
                let action = match a {
                    0 => Action::Allow,
                    1 => Action::Notify,
                    2 => Action::Trace(0),
                    _ => Action::Errno(ENOSYS),
                };
                p.set(nr, action);
            }
            let prog = p.compile().unwrap();
            for nr in probes {
                proptest::prop_assert_eq!(act(&prog, nr, AUDIT_ARCH_X86_64), p.action_for(nr));
            }
        }
    }
}
