//! Shared harness of the `perch run` tests: a directory tree published as a repository with
//! `perch keygen` + `perch publish`, and the same script run natively on the tree and under
//! `perch run` on `/cvmfs/<fqrn>` (the gVisor rule: outputs must match).
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const PERCH: &str = env!("CARGO_BIN_EXE_perch");

/// What a run printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Out {
        Out {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Out {
    #[track_caller]
    pub fn ok(&self) -> &Out {
        assert_eq!(self.code, Some(0), "failed:\n{self}");
        self
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {:?}\n--- stdout\n{}--- stderr\n{}---",
            self.code, self.stdout, self.stderr
        )
    }
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn sh(script: &str, dir: &Path) {
    let o: Out = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .unwrap()
        .into();
    assert_eq!(o.code, Some(0), "setup `{script}` failed:\n{o}");
}

/// The standard tree: sources, headers and a Makefile, a Python package, shell files to source,
/// scripts, a shared library with a program linked to it and a plugin it `dlopen`s, a
/// symlink, a private file, an empty file, nested directories.
pub fn standard_tree(src: &Path, fqrn: &str) {
    write(
        &src.join("include/hello.h"),
        "#define GREETING \"hello from cvmfs\"\nint add(int, int);\n",
        0o644,
    );
    write(
        &src.join("src/main.c"),
        "#include <stdio.h>\n#include \"hello.h\"\nint main(void){ printf(\"%s %d\\n\", GREETING, add(2,3)); return 0; }\n",
        0o644,
    );
    write(
        &src.join("src/add.c"),
        "#include \"hello.h\"\nint add(int a, int b){ return a+b; }\n",
        0o644,
    );
    write(
        &src.join("Makefile"),
        "SRC ?= .\nall: out/prog\nout/prog: out/main.o out/add.o\n\t$(CC) -o $@ $^\nout/%.o: $(SRC)/src/%.c $(SRC)/include/hello.h\n\t@mkdir -p out\n\t$(CC) -I$(SRC)/include -c -o $@ $<\n",
        0o644,
    );
    write(&src.join("lib/python/pkg/__init__.py"), "x = 42\n", 0o644);
    write(
        &src.join("lib/python/pkg/mod.py"),
        "import os\ndef f():\n    return 'pkg.f ' + os.path.basename(os.path.dirname(__file__))\n",
        0o644,
    );
    write(
        &src.join("lib/env.sh"),
        "GREETING_VAR=sourced\n. \"$ROOT/lib/more.sh\"\n",
        0o644,
    );
    write(&src.join("lib/more.sh"), "MORE_VAR=more\n", 0o644);
    write(
        &src.join("bin/tool.sh"),
        "#!/bin/sh\necho tool \"$@\"\n. \"$(dirname \"$0\")/../lib/more.sh\"\necho \"$MORE_VAR\"\n",
        0o755,
    );
    write(&src.join("sub/deep/private"), "secret\n", 0o600);
    write(&src.join("sub/deep/deeper/file.txt"), "deeper\n", 0o644);
    write(&src.join("empty"), "", 0o644);
    std::os::unix::fs::symlink("../include/hello.h", src.join("sub/link.h")).unwrap();
    std::os::unix::fs::symlink("deep/deeper", src.join("sub/dirlink")).unwrap();
    // A shared library, a program linked against it, and a plugin it dlopens.
    write(
        &src.join("csrc/lib.c"),
        "int lib_value(void){ return 7; }\n",
        0o644,
    );
    write(
        &src.join("csrc/plugin.c"),
        "const char *plugin_name(void){ return \"plugin-ok\"; }\n",
        0o644,
    );
    write(
        &src.join("csrc/app.c"),
        "#include <stdio.h>\n#include <dlfcn.h>\n#include <sys/mman.h>\n#include <fcntl.h>\n#include <unistd.h>\n\
         int lib_value(void);\n\
         int main(int argc, char **argv){\n\
           void *h = dlopen(argc > 1 ? argv[1] : \"libplugin.so\", RTLD_NOW);\n\
           if (!h) { printf(\"dlopen: %s\\n\", dlerror()); return 1; }\n\
           const char *(*name)(void) = (const char *(*)(void))dlsym(h, \"plugin_name\");\n\
           int fd = open(argc > 2 ? argv[2] : \"/dev/null\", O_RDONLY);\n\
           char *m = fd >= 0 ? mmap(0, 4096, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;\n\
           printf(\"lib %d %s mmap %.6s\\n\", lib_value(), name(), m == MAP_FAILED ? \"failed\" : m);\n\
           return 0;\n\
         }\n",
        0o644,
    );
    sh(
        "mkdir -p lib64 bin && gcc -shared -fPIC -o lib64/libvalue.so csrc/lib.c && \
         gcc -shared -fPIC -o lib64/libplugin.so csrc/plugin.c && \
         gcc -o bin/app csrc/app.c -Llib64 -lvalue -ldl",
        src,
    );
    // An interpreter stored in the repository, and a script using it by its /cvmfs path.
    std::fs::copy("/bin/dash", src.join("bin/mysh")).unwrap();
    write(
        &src.join("bin/via-mysh"),
        &format!("#!/cvmfs/{fqrn}/bin/mysh -e\necho via-mysh \"$0\" \"$@\"\n"),
        0o755,
    );
    // A program whose ELF interpreter (PT_INTERP) is in the repository (the EESSI layout).
    let loader = std::fs::read_link("/lib64/ld-linux-x86-64.so.2")
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                Path::new("/lib64").join(p)
            }
        })
        .unwrap_or_else(|_| PathBuf::from("/lib64/ld-linux-x86-64.so.2"));
    std::fs::create_dir_all(src.join("compat/lib64")).unwrap();
    std::fs::copy(&loader, src.join("compat/lib64/ld-linux-x86-64.so.2")).unwrap();
    sh(
        &format!(
            "gcc -o bin/interp-app src/main.c src/add.c -Iinclude \
             -Wl,--dynamic-linker=/cvmfs/{fqrn}/compat/lib64/ld-linux-x86-64.so.2"
        ),
        src,
    );
}

/// A tree published as a repository, with a client configuration and a cache of its own.
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub fqrn: String,
    /// Run both sides as user/group 65534 with no capabilities (when the tests run as root).
    pub as_nobody: bool,
    /// `perch run --mode` (`None`: perch's default).
    pub mode: Option<&'static str>,
}

/// True when the tests run as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// `setpriv` to user 65534 without capabilities, then `program`.
pub fn nobody(program: &str) -> Command {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("setpriv is required (Debian package util-linux)");
    let mut c = Command::new(setpriv);
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        program,
    ]);
    c
}

impl Repo {
    /// Publishes the tree `build` makes as `fqrn`.
    pub fn publish(fqrn: &str, build: impl FnOnce(&Path)) -> Repo {
        let dir = tempdir("perch-run-");
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
        build(&src);
        let keys = dir.path().join("keys");
        let o: Out = Command::new(PERCH)
            .args(["keygen", fqrn])
            .arg(&keys)
            .output()
            .unwrap()
            .into();
        o.ok();
        let o: Out = Command::new(PERCH)
            .arg("publish")
            .arg(&src)
            .args(["--fqrn", fqrn, "--keys"])
            .arg(&keys)
            .arg("--stratum")
            .arg(dir.path().join("stratum"))
            .output()
            .unwrap()
            .into();
        o.ok();
        let conf = format!(
            "CVMFS_SERVER_URL=file://{d}/stratum\nCVMFS_HTTP_PROXY=DIRECT\nCVMFS_PUBLIC_KEY={d}/keys/{fqrn}.pub\n",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("client.conf"), conf).unwrap();
        for d in ["cache", "work", "etc"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        Repo {
            dir,
            fqrn: fqrn.to_string(),
            as_nobody: false,
            mode: None,
        }
    }

    /// From now on run `perch run --mode mode`.
    pub fn in_mode(mut self, mode: &'static str) -> Repo {
        self.mode = Some(mode);
        self
    }

    /// From now on run both sides as user 65534 (if root; else as the current, unprivileged,
    /// user), giving that user the cache and work directories.
    pub fn drop_privileges(&mut self) {
        if is_root() {
            for d in ["cache", "work"] {
                std::os::unix::fs::chown(self.dir.path().join(d), Some(65534), Some(65534))
                    .unwrap();
            }
            self.as_nobody = true;
        }
    }

    fn command(&self, program: &str) -> Command {
        if self.as_nobody {
            nobody(program)
        } else {
            Command::new(program)
        }
    }

    /// The standard tree as `test.example.org`.
    pub fn standard() -> Repo {
        Repo::publish("test.example.org", |src| {
            standard_tree(src, "test.example.org")
        })
    }

    pub fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn mount(&self) -> String {
        format!("/cvmfs/{}", self.fqrn)
    }

    /// `perch run` with this repository configured, before `--`.
    pub fn perch_args(&self) -> Vec<String> {
        let d = self.dir.path().display();
        let mut v: Vec<String> = vec![
            "run".into(),
            "--config-dir".into(),
            format!("{d}/etc"),
            "--config".into(),
            format!("{d}/client.conf"),
            "--cache".into(),
            format!("{d}/cache"),
            "-r".into(),
            self.fqrn.clone(),
        ];
        if let Some(m) = self.mode {
            v.extend(["--mode".into(), m.into()]);
        }
        v
    }

    fn env(&self, c: &mut Command, root: &str) {
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.work())
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("ROOT", root)
            .env("WORK", self.work())
            .current_dir(self.work());
    }

    /// `sh -c script` under `perch run`, `$ROOT` = `/cvmfs/<fqrn>`.
    pub fn perch(&self, script: &str) -> Out {
        let mut c = self.command(PERCH);
        c.args(self.perch_args()).args(["--", "sh", "-c", script]);
        self.env(&mut c, &self.mount());
        c.output().unwrap().into()
    }

    /// `sh -c script` natively, `$ROOT` = the source tree.
    pub fn native(&self, script: &str) -> Out {
        let mut c = self.command("sh");
        c.args(["-c", script]);
        self.env(&mut c, &self.src().display().to_string());
        c.output().unwrap().into()
    }

    /// Runs `script` both ways and requires the same status, stdout and stderr (after writing
    /// the tree's location as `$ROOT` in both).
    #[track_caller]
    pub fn same(&self, script: &str) -> Out {
        let n = self.native(script);
        let p = self.perch(script);
        let src = self.src().display().to_string();
        let norm = |o: &Out, root: &str| Out {
            code: o.code,
            stdout: o.stdout.replace(root, "$ROOT"),
            stderr: o.stderr.replace(root, "$ROOT"),
        };
        let n = norm(&n, &src);
        let p = norm(&p, &self.mount());
        assert_eq!(
            n.code,
            Some(0),
            "native run failed (the test is wrong):\n{n}"
        );
        if n != p {
            panic!(
                "`{script}` differs\n=== native\n{n}\n=== perch run (mode {:?})\n{p}",
                self.mode
            );
        }
        p
    }
}

/// The modes every mode-independent `perch run` test runs in.
pub const MODES: [&str; 3] = ["notify", "fuse", "ptrace"];

/// Runs `f` on the standard repository in every mode of [`MODES`] (published once: the modes
/// share the repository and its cache).
pub fn each_mode(f: impl Fn(&Repo)) {
    let mut r = Repo::standard();
    for m in MODES {
        r.mode = Some(m);
        f(&r);
    }
}

/// The fixture repositories made by the real CernVM-FS tools, both configured.
pub struct Fixtures {
    pub dir: tempfile::TempDir,
    /// `perch run --mode` (`None`: perch's default).
    pub mode: Option<&'static str>,
}

impl Fixtures {
    pub fn new() -> Fixtures {
        let dir = tempdir("perch-run-fx-");
        let f = perch_testkit::fixtures_dir();
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        for r in ["tiny", "alt"] {
            std::fs::copy(
                f.join(format!("{r}.example.org/keys/{r}.example.org.pub")),
                keys.join(format!("{r}.example.org.pub")),
            )
            .unwrap();
        }
        let conf = format!(
            "CVMFS_REPOSITORIES=tiny.example.org,alt.example.org\nCVMFS_HTTP_PROXY=DIRECT\n\
             CVMFS_SERVER_URL=file://{}/@fqrn@/stratum0\nCVMFS_KEYS_DIR={}\n",
            f.display(),
            keys.display()
        );
        std::fs::write(dir.path().join("client.conf"), conf).unwrap();
        for d in ["cache", "etc"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        Fixtures { dir, mode: None }
    }

    /// The fixtures, run with `perch run --mode mode`.
    pub fn in_mode(mode: &'static str) -> Fixtures {
        Fixtures {
            mode: Some(mode),
            ..Fixtures::new()
        }
    }

    pub fn args(&self) -> Vec<String> {
        let d = self.dir.path().display();
        let mut v: Vec<String> = vec![
            "run".into(),
            "--config-dir".into(),
            format!("{d}/etc"),
            "--config".into(),
            format!("{d}/client.conf"),
            "--cache".into(),
            format!("{d}/cache"),
        ];
        if let Some(m) = self.mode {
            v.extend(["--mode".into(), m.into()]);
        }
        v
    }

    /// `perch run [extra] -- argv`.
    pub fn run(&self, extra: &[&str], argv: &[&str]) -> Out {
        Command::new(PERCH)
            .args(self.args())
            .args(extra)
            .arg("--")
            .args(argv)
            .env("LC_ALL", "C")
            .current_dir(self.dir.path())
            .output()
            .unwrap()
            .into()
    }
}
