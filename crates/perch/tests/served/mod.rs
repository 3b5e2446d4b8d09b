//! A small repository published with perch-publish and served by a real nginx, for the
//! tests of the user-facing conventions (parrot_run, errors, doctor, magic attributes).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use perch_publish::{keygen, publish, KeySet, PublishOptions};
use perch_testkit::{tempdir, Nginx, TempDir};

pub const PERCH: &str = env!("CARGO_BIN_EXE_perch");
pub const FQRN: &str = "conv.example.org";
pub const README: &str = "read me first\n";

/// What a command printed and how it ended.
#[derive(Debug)]
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

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {:?}\n--- stdout\n{}--- stderr\n{}---",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The repository `conv.example.org`: `README`, `dir/a.txt`, `dir/sub/b.txt`, `big.bin`
/// (2 MiB), behind nginx; plus an empty config dir and a home of its own.
pub struct Served {
    pub tmp: TempDir,
    pub nginx: Nginx,
    pub keys: KeySet,
}

impl Served {
    pub fn start() -> Served {
        let tmp = tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("dir/sub")).unwrap();
        std::fs::write(src.join("README"), README).unwrap();
        std::fs::write(src.join("dir/a.txt"), "a\n").unwrap();
        std::fs::write(src.join("dir/sub/b.txt"), "b\n").unwrap();
        let big: Vec<u8> = (0..2u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        std::fs::write(src.join("big.bin"), big).unwrap();
        let keydir = tmp.path().join("keys");
        let keys = keygen(FQRN, &keydir, 30).unwrap();
        let mut o = PublishOptions::new(&src, FQRN, &keydir, tmp.path().join("www").join(FQRN));
        o.chunking = None;
        publish(&o).unwrap();
        for d in ["etc", "home", "work"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        let nginx = Nginx::start(&tmp.path().join("www")).unwrap();
        Served { tmp, nginx, keys }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// The stratum URL of the repository.
    pub fn url(&self) -> String {
        format!("{}/{FQRN}", self.nginx.url())
    }

    pub fn pubkey(&self) -> PathBuf {
        self.path(&format!("keys/{FQRN}.pub"))
    }

    /// A client configuration file with these extra lines.
    pub fn config(&self, name: &str, extra: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(
            &p,
            format!(
                "CVMFS_REPOSITORIES={FQRN}\nCVMFS_SERVER_URL={}\nCVMFS_PUBLIC_KEY={}\nCVMFS_HTTP_PROXY=DIRECT\n{extra}",
                self.url(),
                self.pubkey().display()
            ),
        )
        .unwrap();
        p
    }

    /// `perch ARGS` with a clean environment (HOME, TMPDIR of its own).
    pub fn perch(&self, args: &[&str]) -> Out {
        self.command(PERCH).args(args).output().unwrap().into()
    }

    /// `program` with the clean environment, in `work/`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.path("home"))
            .env("TMPDIR", self.tmp.path())
            .env("LC_ALL", "C")
            .current_dir(self.path("work"));
        c
    }

    /// The client options for `perch ls|cat|run|doctor` with config `conf` and cache `cache`.
    pub fn client_args(&self, conf: &Path, cache: &str) -> Vec<String> {
        vec![
            "--config-dir".into(),
            self.path("etc").display().to_string(),
            "--config".into(),
            conf.display().to_string(),
            "--cache".into(),
            self.path(cache).display().to_string(),
        ]
    }
}

/// A loopback port nothing listens on.
pub fn dead_port() -> u16 {
    perch_testkit::free_port()
}
