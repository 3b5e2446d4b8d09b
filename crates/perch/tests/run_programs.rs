//! The gVisor rule for programs that lean on the kernel harder: git reading a repository stored
//! in `/cvmfs`, a program with its own seccomp filter, job control (stopped and continued
//! processes, signals during intercepted calls), nested `#!` interpreters in `/cvmfs`, and host
//! symlinks into `/cvmfs` (a documented limitation of notify mode). Every test runs as the tests
//! run in each mode, and unprivileged (user 65534 without capabilities when the tests run as
//! root) in notify mode.

mod run_common;

use std::path::Path;

use run_common::{Out, Repo, MODES};

const FQRN: &str = "programs.example.org";

fn write(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn sh(script: &str, dir: &Path, env: &[(&str, &str)]) {
    let o: Out = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap()
        .into();
    assert_eq!(o.code, Some(0), "setup `{script}` failed:\n{o}");
}

/// Installs a seccomp filter that fails syscall NR with errno E (as a sandboxing program does),
/// prints what NR now returns, reads FILE, then runs CMD.
const FILTER_C: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: filter NR ERRNO FILE [CMD...]\n"); return 2; }
  unsigned nr = atoi(argv[1]), err = atoi(argv[2]);
  struct sock_filter f[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = { sizeof f / sizeof f[0], f };
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) { perror("PR_SET_NO_NEW_PRIVS"); return 1; }
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) { perror("seccomp"); return 1; }
  errno = 0;
  long r = syscall(nr, 0, 0, 0, 0, 0, 0);
  printf("syscall %u = %ld %s\n", nr, r, r == -1 ? strerror(errno) : "");
  int fd = open(argv[3], O_RDONLY);
  if (fd < 0) { perror(argv[3]); return 1; }
  char buf[256];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  if (n < 0) { perror("read"); return 1; }
  buf[n] = 0;
  printf("read %s", buf);
  close(fd);
  fflush(stdout);
  if (argc > 4) { execvp(argv[4], argv + 4); perror(argv[4]); return 127; }
  return 0;
}
"#;

/// Makes itself non-dumpable like ssh-agent, then stats, opens and reads each argument;
/// `-g` prints what `PR_GET_DUMPABLE` says afterwards.
const NODUMP_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
  printf("PR_SET_DUMPABLE 0: %d\n", prctl(PR_SET_DUMPABLE, 0, 0, 0, 0));
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-g")) { printf("PR_GET_DUMPABLE: %d\n", prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)); continue; }
    struct stat st;
    if (stat(argv[i], &st)) { perror(argv[i]); continue; }
    int fd = open(argv[i], O_RDONLY);
    if (fd < 0) { perror(argv[i]); continue; }
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    printf("%s: size %lld, read %zd\n", argv[i], (long long)st.st_size, n);
    close(fd);
  }
  fflush(stdout);
  return 0;
}
"#;

/// Prints its arguments, one per line: an ELF interpreter for `#!` tests.
const ARGS_C: &str = r#"
#include <stdio.h>
int main(int argc, char **argv) { for (int i = 0; i < argc; i++) printf("[%s]", argv[i]); printf("\n"); return 0; }
"#;

const GIT_ENV: &[(&str, &str)] = &[
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ("GIT_AUTHOR_NAME", "Ada Author"),
    ("GIT_AUTHOR_EMAIL", "ada@example.org"),
    ("GIT_COMMITTER_NAME", "Cy Committer"),
    ("GIT_COMMITTER_EMAIL", "cy@example.org"),
];

/// A git repository with three commits (the first two packed, the last loose), the C programs
/// above, and chains of `#!` scripts: `rel/` names interpreters relative to the cwd (runs
/// natively and in `/cvmfs` alike), `abs/` by their `/cvmfs` path and `absnative/` by their
/// path in the source tree (the same chain for the native side).
fn tree(src: &Path) {
    let repo = src.join("repo");
    std::fs::create_dir(&repo).unwrap();
    let commit = |date: &str, script: &str| {
        let mut env = GIT_ENV.to_vec();
        env.push(("GIT_AUTHOR_DATE", date));
        env.push(("GIT_COMMITTER_DATE", date));
        sh(script, &repo, &env);
    };
    commit(
        "2020-01-01T10:00:00Z",
        "git init -q -b main . && printf 'one\\n' > a.txt && mkdir -p d/e && printf 'x\\n' > d/b.txt && \
         printf 'deep\\n' > d/e/c.txt && git add -A && git commit -qm 'first: a, b, c'",
    );
    commit(
        "2020-01-02T11:00:00Z",
        "printf 'two\\n' >> a.txt && git rm -q d/e/c.txt && git commit -qam 'second: grow a, drop c' && \
         git tag -a -m 'version one' v1 && git repack -adq && git prune-packed",
    );
    commit(
        "2020-01-03T12:30:00Z",
        "seq 1 200 > numbers && git add numbers && git commit -qm 'third: numbers'",
    );

    write(&src.join("csrc/filter.c"), FILTER_C, 0o644);
    write(&src.join("csrc/args.c"), ARGS_C, 0o644);
    write(&src.join("csrc/nodump.c"), NODUMP_C, 0o644);
    sh(
        &format!(
            "mkdir -p bin && gcc -o bin/filter csrc/filter.c && gcc -o bin/nodump csrc/nodump.c && gcc -o bin/args csrc/args.c && \
             gcc -o bin/args-cvmfs-loader csrc/args.c \
             -Wl,--dynamic-linker=/cvmfs/{FQRN}/lib64/ld-linux-x86-64.so.2 && \
             gcc -o bin/args-src-loader csrc/args.c \
             -Wl,--dynamic-linker=$PWD/lib64/ld-linux-x86-64.so.2 && \
             mkdir -p lib64 && cp -L /lib64/ld-linux-x86-64.so.2 lib64/"
        ),
        src,
        &[],
    );

    // s0 is a shell script; sN (N = 1..5) is interpreted by s(N-1) with argument aN. The kernel
    // starts s4 (five scripts) and refuses s5 with ELOOP.
    let body = "#!/bin/sh\necho \"$0\" \"$@\"\n";
    for (dir, prefix) in [
        ("rel", "./".to_string()),
        ("abs", format!("/cvmfs/{FQRN}/abs/")),
        ("absnative", format!("{}/absnative/", src.display())),
    ] {
        write(&src.join(dir).join("s0"), body, 0o755);
        for i in 1..=5 {
            let line = format!("#!{prefix}s{} a{i}\necho never\n", i - 1);
            write(&src.join(dir).join(format!("s{i}")), &line, 0o755);
        }
        // A script interpreted by an ELF program whose own loader is in the tree (EESSI).
        let loader = if dir == "absnative" { "src" } else { "cvmfs" };
        let interp = if dir == "rel" {
            "../bin/args".to_string()
        } else {
            format!("{prefix}../bin/args-{loader}-loader")
        };
        write(
            &src.join(dir).join("elf"),
            &format!("#!{interp} -o\n"),
            0o755,
        );
        write(
            &src.join(dir).join("elf2"),
            &format!("#!{prefix}elf x\n"),
            0o755,
        );
    }
}

/// Runs `f` on a fresh repository as the tests run, in every mode, and again unprivileged.
/// Unprivileged runs use notify mode: user 65534 cannot open a `0600` `/dev/fuse`, which is
/// what this machine has (run_fuse covers the refusal and an unprivileged fuse run).
fn both(f: impl Fn(&Repo)) {
    in_modes(&MODES, f);
}

/// [`both`] in the given modes only.
fn in_modes(modes: &[&'static str], f: impl Fn(&Repo)) {
    let mut r = Repo::publish(FQRN, tree);
    for mode in modes {
        r.mode = Some(mode);
        f(&r);
    }
    let mut r = Repo::publish(FQRN, tree).in_mode("notify");
    r.drop_privileges();
    f(&r);
}

/// The read-only commands a user runs on a repository in `/cvmfs`: the real client's mount is
/// read-only too, so commands that would write into `.git` (an index refresh by `git status`,
/// `gc --auto` after `commit`) are out; `--no-optional-locks` keeps `status` from trying.
/// The published files belong to root: git refuses them to any other user ("dubious
/// ownership") natively and in `/cvmfs` alike, so the user trusts them like a user would, with
/// `safe.directory` in the global configuration. `count-objects` sizes are left out: they
/// count disk blocks, which the client reports as `1 + size/512` (like cvmfs).
#[test]
fn git_reads_a_repository_stored_in_cvmfs() {
    both(|r| {
        write(
            &r.work().join(".gitconfig"),
            "[safe]\n\tdirectory = *\n",
            0o644,
        );
        let git = "GIT_CONFIG_NOSYSTEM=1 git --no-optional-locks -C \"$ROOT/repo\"";
        let o = r.same(&format!(
            "{git} log --stat && {git} log --format='%H %an %ae %ad %cn %s' --date=iso \
             && {git} show HEAD~1:a.txt && {git} cat-file -p HEAD && {git} cat-file -p v1 \
             && {git} ls-tree -r HEAD && {git} show --stat HEAD~1 && {git} diff HEAD~2 HEAD \
             && {git} rev-parse --show-toplevel HEAD^{{tree}} && {git} count-objects -v | grep -v '^size' \
             && {git} status --porcelain=v1 --branch && {git} grep -n 7 HEAD -- numbers | head -3 \
             && {git} fsck --no-dangling 2>&1 && {git} describe --tags HEAD"
        ));
        assert!(o.stdout.contains("third: numbers"), "{o}");
        assert!(o.stdout.contains("## main\n"), "{o}");
        assert!(o.stdout.contains("in-pack: 12"), "{o}");
        // Writing is refused like on the real read-only mount.
        let o = r.perch(&format!(
            "{git} -c core.hooksPath=/dev/null tag v2 2>&1; echo $?"
        ));
        assert!(o.stdout.contains("Read-only file system"), "{o}");
    });
}

/// A program that sandboxes itself with its own seccomp filter (stacked on perch's) still sees
/// `/cvmfs`, its filter still works, and so do its children.
#[test]
fn a_program_with_its_own_seccomp_filter() {
    both(|r| {
        // getppid (110) fails with EPERM; then python3 and bash run under both filters.
        let o = r.same(
            "\"$ROOT/bin/filter\" 110 1 \"$ROOT/repo/a.txt\" python3 -c \
             'import os, sys; r = sys.argv[1]; print(open(r + \"/d/b.txt\").read().strip(), sorted(os.listdir(r)), os.getppid())' \
             \"$ROOT/repo\" && \"$ROOT/bin/filter\" 110 1 \"$ROOT/repo/numbers\" \
             bash -c 'echo $PPID; wc -l < \"$ROOT/repo/numbers\"; cd \"$ROOT/repo/d\" && ls && pwd'",
        );
        assert!(
            o.stdout
                .starts_with("syscall 110 = -1 Operation not permitted\nread one\ntwo\nx ["),
            "{o}"
        );
        // statx (332) refused with ENOSYS, as older container runtimes do: programs fall back.
        r.same(
            "\"$ROOT/bin/filter\" 332 38 \"$ROOT/repo/a.txt\" sh -c \
             'ls -l --time-style=+%s \"$ROOT/repo/a.txt\" | cut -d\" \" -f1,2,5-; stat -c \"%s %F\" \"$ROOT/repo\"'",
        );
    });
}

/// `ps` shows a stopped process: natively `T`, under perch in notify mode `t`, because a traced
/// process group-stops in a ptrace stop (documented in README.md); everything else is the same.
#[test]
fn stopped_and_continued_processes() {
    both(|r| {
        // `stopped` polls (10 s at most) until the kernel has parked the process. The TSTP
        // child gets its own process group (`set -m`): the kernel drops TSTP sent to an
        // orphaned process group, which the test's own group may be (a test run whose
        // starter has exited), natively as under perch.
        let script = "cd \"$ROOT/repo\" || exit 1; \
                      stopped() { i=0; until ps -o stat= -p $1 | grep -q \"^[Tt]\"; do \
                      i=$((i+1)); [ $i -lt 1000 ] || return 1; sleep 0.01; done; }; \
                      sleep 30 & p=$!; kill -STOP $p; stopped $p; ps -o stat= -p $p; \
                      kill -CONT $p; kill $p; wait $p; echo $?; \
                      set -m; sleep 30 & q=$!; set +m; kill -TSTP $q; stopped $q && echo stopped; \
                      kill -CONT $q; kill $q; wait $q 2>/dev/null; echo done";
        let n = r.native(&format!("bash -c '{script}'"));
        let p = r.perch(&format!("bash -c '{script}'"));
        assert_eq!(n.ok().stdout, "T\n143\nstopped\ndone\n", "{n}");
        // Fuse mode traces nothing: the native `T`.
        let stop = if r.mode == Some("fuse") { "T" } else { "t" };
        assert_eq!(
            p.ok().stdout,
            format!("{stop}\n143\nstopped\ndone\n"),
            "{p}"
        );
        // What the parent sees with WUNTRACED / WCONTINUED, with the child in /cvmfs.
        let o = r.same(
            "cd \"$ROOT/repo\" && python3 -u -c '\nimport os, signal\nr, w = os.pipe()\npid = os.fork()\n\
             if pid == 0:\n    os.setpgid(0, 0); os.read(r, 1); print(open(\"a.txt\").read().split()); os._exit(7)\n\
             os.setpgid(pid, pid)  # its own group: TSTP and TTIN to an orphaned one are dropped\n\
             for sig in (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN):\n    os.kill(pid, sig)\n\
             \x20   p, st = os.waitpid(pid, os.WUNTRACED); print(\"stopped\", os.WIFSTOPPED(st), signal.Signals(os.WSTOPSIG(st)).name)\n\
             \x20   os.kill(pid, signal.SIGCONT)\n\
             \x20   p, st = os.waitpid(pid, os.WCONTINUED); print(\"continued\", os.WIFCONTINUED(st))\n\
             os.write(w, b\"x\"); p, st = os.waitpid(pid, 0); print(\"exit\", os.WEXITSTATUS(st))\n'",
        );
        assert_eq!(
            o.stdout,
            "stopped True SIGSTOP\ncontinued True\nstopped True SIGTSTP\ncontinued True\n\
             stopped True SIGTTIN\ncontinued True\n['one', 'two']\nexit 7\n"
        );
    });
}

/// Signals arriving while a call waits for perch's answer: with or without `SA_RESTART`
/// (Python's `signal.signal` has none), a call that natively cannot be interrupted is not
/// (no `EINTR`); a blocking open of a FIFO (a path perch looks at, then lets the kernel do)
/// is interrupted like natively.
#[test]
fn signals_during_intercepted_calls() {
    both(|r| {
        // 1500 rounds of stat/open/listdir in /cvmfs under a 0.2 ms SIGALRM timer.
        for restart in ["False", "True"] {
            let o = r.same(&format!(
            "python3 -c '\nimport os, signal, sys\nr = sys.argv[1]; hits = [0]\n\
             def on_alarm(s, f): hits[0] += 1\n\
             signal.signal(signal.SIGALRM, on_alarm); signal.siginterrupt(signal.SIGALRM, {restart})\n\
             signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)\nok = 0\n\
             for i in range(1500):\n    st = os.stat(r + \"/a.txt\")\n    data = open(r + \"/d/b.txt\").read()\n\
             \x20   ok += st.st_size == 8 and data == \"x\\n\" and os.listdir(r + \"/d\") == [\"b.txt\"]\n\
             signal.setitimer(signal.ITIMER_REAL, 0, 0)\nprint(\"ok\", ok, \"signals\", hits[0] > 20)\n' \"$ROOT/repo\""
            ));
            assert_eq!(o.stdout, "ok 1500 signals True\n");
        }
        // A FIFO whose path names "cvmfs", absolute and relative: perch resolves it (host), the
        // kernel blocks in open (`timeout`: a wrongly restarted open would block for good).
        let o = r.same(
            "rm -f \"$WORK/cvmfs-fifo\" && mkfifo \"$WORK/cvmfs-fifo\" && timeout 20 python3 -c '\nimport os, signal, sys\n\
             class Timeout(Exception): pass\n\
             def on_alarm(s, f): raise Timeout()\n\
             signal.signal(signal.SIGALRM, on_alarm)\n\
             for p in sys.argv[1:]:\n    signal.setitimer(signal.ITIMER_REAL, 0.3)\n\
             \x20   try: os.open(p, os.O_RDONLY)\n    except Timeout: print(\"interrupted\")\n' \
             \"$WORK/cvmfs-fifo\" cvmfs-fifo; rm \"$WORK/cvmfs-fifo\"",
        );
        assert_eq!(o.stdout, "interrupted\ninterrupted\n");
    });
}

/// `#!` interpreters that are scripts in `/cvmfs` themselves, up to the kernel's five levels,
/// and a script interpreted by a program whose ELF loader is in `/cvmfs`.
#[test]
fn nested_script_interpreters_in_cvmfs() {
    both(|r| {
        // Interpreters named relative to the cwd: the same scripts run in both places.
        let o = r
            .same("cd \"$ROOT/rel\" && ./s1 x && ./s4 x y && ./elf a && ./elf2 b; ./s5 z; echo $?");
        assert!(
            o.stdout.starts_with(
                "./s0 a1 ./s1 x\n./s0 a1 ./s1 a2 ./s2 a3 ./s3 a4 ./s4 x y\n[../bin/args][-o][./elf][a]\n"
            ),
            "{o}"
        );
        // Absolute /cvmfs interpreters; natively the same chain names the source tree.
        let script = |d: &str| {
            format!(
                "cd \"$ROOT/{d}\" && ./s2 x && \"$ROOT/{d}/s4\" y && ./elf a && ./elf2 b; ./s5 z; echo $?"
            )
        };
        let n = r.native(&script("absnative"));
        let p = r.perch(&script("abs"));
        let norm = |o: &Out, root: &str, d: &str| {
            let f = |s: &str| {
                s.replace(root, "$ROOT")
                    .replace(&format!("$ROOT/{d}/"), "$ROOT/D/")
                    .replace("args-src-loader", "args-LOADER")
                    .replace("args-cvmfs-loader", "args-LOADER")
            };
            (o.code, f(&o.stdout), f(&o.stderr))
        };
        let src = r.src().display().to_string();
        let n = norm(&n, &src, "absnative");
        let p = norm(&p, &r.mount(), "abs");
        assert_eq!(n.0, Some(0), "native: {n:?}");
        assert!(n.2.contains("Too many levels of symbolic links"), "{n:?}");
        assert_eq!(n, p);
    });
}

/// Host symlinks into `/cvmfs` are not followed (README.md, "Choices"): perch decides what to
/// intercept from the path a program passes, and a host path that does not name `cvmfs` is left
/// to the kernel without reading anything. `-M /host/path=/cvmfs/...` is the way to give
/// programs such a path.
#[test]
fn host_symlinks_into_cvmfs_are_not_followed() {
    // Notify mode's limit; in fuse mode they are followed (run_fuse).
    in_modes(&["notify"], |r| {
        let m = r.mount();
        let script = format!(
            "ln -sfn {m}/repo \"$WORK/sw\" && ln -sfn {m}/bin/args \"$WORK/tool\" && \
             cat \"$WORK/sw/a.txt\"; \"$WORK/tool\" 1; ls \"$WORK/sw/\" >/dev/null; cd \"$WORK/sw\"; \
             cat {m}/repo/d/b.txt; rm \"$WORK/sw\" \"$WORK/tool\""
        );
        let o = r.perch(&script);
        let w = r.work().display().to_string();
        assert_eq!(o.stdout, "x\n", "{o}");
        let err = o.stderr.replace(&w, "$WORK");
        for (what, why) in [
            ("cat: $WORK/sw/a.txt", "No such file or directory"),
            ("ls: cannot access '$WORK/sw/'", "No such file or directory"),
            ("$WORK/tool", "not found"),
            ("can't cd to $WORK/sw", ""),
        ] {
            assert!(
                err.lines().any(|l| l.contains(what) && l.contains(why)),
                "{what}: {o}"
            );
        }
        // The documented way: a remapped prefix.
        let mut c = std::process::Command::new(run_common::PERCH);
        if r.as_nobody {
            c = run_common::nobody(run_common::PERCH);
        }
        let o: Out = c
            .args(r.perch_args())
            .args(["-M", &format!("{w}/sw={m}/repo"), "--", "cat"])
            .arg(format!("{w}/sw/a.txt"))
            .current_dir("/")
            .output()
            .unwrap()
            .into();
        assert_eq!(o.ok().stdout, "one\ntwo\n");
    });
}

/// A program that makes itself non-dumpable (ssh-agent, gpg-agent) keeps seeing `/cvmfs`.
/// Unprivileged, perch could not read such a program's paths (the kernel refuses its memory and
/// `/proc/<pid>/fd` to a tracer without `CAP_SYS_PTRACE`), so `prctl(PR_SET_DUMPABLE, 0)`
/// returns 0 without effect there; with `CAP_SYS_PTRACE` it is done for real.
#[test]
fn non_dumpable_programs_see_cvmfs() {
    both(|r| {
        r.same(
            "\"$ROOT/bin/nodump\" \"$ROOT/repo/a.txt\" \"$ROOT/repo/d\" /etc/hostname && \
             cd \"$ROOT/repo/d\" && ../../bin/nodump b.txt ../numbers && \
             \"$ROOT/bin/nodump\" \"$ROOT/repo/nope\" 2>&1",
        );
        let o = r.perch("\"$ROOT/bin/nodump\" -g");
        let unprivileged = r.as_nobody || !run_common::is_root();
        let expect = if unprivileged { 1 } else { 0 };
        assert_eq!(
            o.ok().stdout,
            format!("PR_SET_DUMPABLE 0: 0\nPR_GET_DUMPABLE: {expect}\n")
        );
        let o: Out = std::process::Command::new(run_common::PERCH)
            .arg("syscalls")
            .output()
            .unwrap()
            .into();
        assert!(o
            .ok()
            .stdout
            .contains("prctl(PR_SET_DUMPABLE, 0) returns 0 without effect"));
    });
}
