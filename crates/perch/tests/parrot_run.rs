//! perch started as `parrot_run`: the command lines and environment CVMFS users bring from
//! Parrot (cctools), run unchanged (issue 12 Build 1).

mod served;

use std::path::PathBuf;
use std::time::Duration;

use perch_testkit::wait_until;

use served::{dead_port, Out, Served, FQRN, README};

/// A `parrot_run` symlink to perch in the test's directory.
fn parrot_run(s: &Served) -> PathBuf {
    let link = s.path("bin/parrot_run");
    if !link.exists() {
        std::fs::create_dir_all(s.path("bin")).unwrap();
        std::os::unix::fs::symlink(served::PERCH, &link).unwrap();
    }
    link
}

/// The documented PARROT_CVMFS_REPO entry for the served repository.
fn repo_entry(s: &Served, extra: &str) -> String {
    format!(
        "{FQRN}:url={},pubkey={}{extra}",
        s.url(),
        s.pubkey().display()
    )
}

/// `parrot_run ARGS` with `PARROT_CVMFS_REPO` and `env`.
fn parrot(s: &Served, args: &[&str], env: &[(&str, String)]) -> Out {
    let mut c = s.command(parrot_run(s));
    c.env("PARROT_ALLOW_SWITCHING_CVMFS_REPOSITORIES", "yes")
        .env("PARROT_CVMFS_REPO", repo_entry(s, ",proxies=DIRECT"))
        .env("PARROT_TEMP_DIR", s.path("parrot-tmp"));
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args).output().unwrap().into()
}

#[test]
fn seed_command_lines_run_unchanged() {
    let s = Served::start();
    let squid = perch_testkit::Squid::start().unwrap();
    let alien = s.path("alien");
    let env = [
        (
            "PARROT_CVMFS_REPO",
            repo_entry(&s, &format!(",proxies={}", squid.url())),
        ),
        ("PARROT_CVMFS_ALIEN_CACHE", alien.display().to_string()),
    ];
    let dir = format!("/cvmfs/{FQRN}/dir");
    let o = parrot(&s, &["ls", "-lad", &dir], &env);
    assert_eq!(o.code, Some(0), "{o}");
    assert!(
        o.stdout.starts_with("dr") && o.stdout.trim_end().ends_with(&dir),
        "{o}"
    );
    assert_eq!(o.stderr, "", "{o}");
    let o = parrot(
        &s,
        &["bash", "-c", &format!("cp /cvmfs/{FQRN}/README .")],
        &env,
    );
    assert_eq!(o.code, Some(0), "{o}");
    assert_eq!(
        std::fs::read_to_string(s.path("work/README")).unwrap(),
        README
    );
    // Through the proxy of `proxies=`, into the alien cache of PARROT_CVMFS_ALIEN_CACHE.
    assert!(
        wait_until(Duration::from_secs(5), || squid
            .requests()
            .iter()
            .any(|r| r.url.ends_with("/.cvmfspublished"))),
        "{:?}",
        squid.requests()
    );
    let objects = std::fs::read_dir(&alien)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().len() == 2)
        .count();
    assert!(
        objects > 0,
        "no objects in the alien cache {}",
        alien.display()
    );
    // `perch parrot` is the same front end.
    let o: Out = s
        .command(served::PERCH)
        .env("PARROT_CVMFS_REPO", repo_entry(&s, ",proxies=DIRECT"))
        .args(["parrot", "--", "cat", &format!("/cvmfs/{FQRN}/dir/a.txt")])
        .output()
        .unwrap()
        .into();
    assert_eq!((o.code, o.stdout.as_str()), (Some(0), "a\n"), "{o}");
}

#[test]
fn option_m_remaps_a_path() {
    let s = Served::start();
    let o = parrot(
        &s,
        &[
            "-M",
            &format!("/software=/cvmfs/{FQRN}/dir"),
            "cat",
            "/software/a.txt",
        ],
        &[],
    );
    assert_eq!((o.code, o.stdout.as_str()), (Some(0), "a\n"), "{o}");
}

#[test]
fn option_d_and_o_write_debug_lines_to_the_file() {
    let s = Served::start();
    let log = s.path("parrot.log");
    let o = parrot(
        &s,
        &[
            "-d",
            "cvmfs",
            "-d",
            "http",
            "-o",
            &log.display().to_string(),
            "cat",
            &format!("/cvmfs/{FQRN}/README"),
        ],
        &[],
    );
    assert_eq!((o.code, o.stdout.as_str()), (Some(0), README), "{o}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("perch[cvmfs]: mounted"), "{text}");
    assert!(text.contains("perch[fetch]: GET"), "{text}");
    assert!(!o.stderr.contains("perch["), "{o}");
    let o = parrot(&s, &["-d", "nosuchflag", "true"], &[]);
    assert_eq!(o.code, Some(200), "{o}");
    assert!(o.stderr.contains("unknown debug flag"), "{o}");
}

#[test]
fn option_t_is_where_perch_keeps_its_files() {
    let s = Served::start();
    let t = s.path("mytmp");
    let o = parrot(
        &s,
        &[
            "-t",
            &t.display().to_string(),
            "cat",
            &format!("/cvmfs/{FQRN}/README"),
        ],
        &[],
    );
    assert_eq!(o.code, Some(0), "{o}");
    assert!(t.join(FQRN).is_dir(), "nothing under -t {}", t.display());
    // PARROT_TEMP_DIR without -t.
    assert!(!s.path("parrot-tmp").join(FQRN).exists());
    let o = parrot(&s, &["cat", &format!("/cvmfs/{FQRN}/README")], &[]);
    assert_eq!(o.code, Some(0), "{o}");
    assert!(s.path("parrot-tmp").join(FQRN).is_dir());
}

#[test]
fn option_p_and_http_proxy_choose_the_proxy() {
    let s = Served::start();
    let squid = perch_testkit::Squid::start().unwrap();
    // No proxies= in the entry: -p, then HTTP_PROXY, then http_proxy apply.
    let entry = [("PARROT_CVMFS_REPO", repo_entry(&s, ""))];
    let readme = format!("/cvmfs/{FQRN}/README");
    let o = parrot(
        &s,
        &[
            "-p",
            &squid.url(),
            "-t",
            &s.path("t1").display().to_string(),
            "cat",
            &readme,
        ],
        &entry,
    );
    assert_eq!((o.code, o.stdout.as_str()), (Some(0), README), "{o}");
    assert!(wait_until(Duration::from_secs(5), || !squid
        .requests()
        .is_empty()));
    for (i, var) in ["HTTP_PROXY", "http_proxy"].iter().enumerate() {
        let mut env = entry.to_vec();
        env.push((var, squid.url()));
        let t = s.path(&format!("t{}", i + 2)).display().to_string();
        let before = squid.requests().len();
        let o = parrot(&s, &["-t", &t, "cat", &readme], &env);
        assert_eq!((o.code, o.stdout.as_str()), (Some(0), README), "{var}: {o}");
        assert!(
            wait_until(Duration::from_secs(5), || squid.requests().len() > before),
            "{var} not used"
        );
    }
    // A dead -p proxy fails, naming it: -p is not silently dropped.
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let o = parrot(
        &s,
        &[
            "-p",
            &dead,
            "-t",
            &s.path("t9").display().to_string(),
            "cat",
            &readme,
        ],
        &entry,
    );
    assert_ne!(o.code, Some(0), "{o}");
    assert!(o.stderr.contains(&dead), "{o}");
}

#[test]
fn option_r_overrides_parrot_cvmfs_repo_and_wildcards_fill_the_name() {
    let s = Served::start();
    // The environment names a repository at a dead server; -r gives the working one by
    // wildcard, with `*` in the URL standing for the matched front part.
    let env = [(
        "PARROT_CVMFS_REPO",
        format!("{FQRN}:url=http://127.0.0.1:{}/x,pubkey=/none", dead_port()),
    )];
    let spec = format!(
        "*.example.org:url={}/*.example.org,pubkey={},proxies=DIRECT,try_local_filesystem",
        s.nginx.url(),
        s.pubkey().display()
    );
    let o = parrot(
        &s,
        &["-r", &spec, "--", "cat", &format!("/cvmfs/{FQRN}/README")],
        &env,
    );
    assert_eq!((o.code, o.stdout.as_str()), (Some(0), README), "{o}");
    // try_local_filesystem has no meaning for perch: named once.
    assert_eq!(o.stderr.matches("try_local_filesystem").count(), 1, "{o}");
    // A repository PARROT_CVMFS_REPO does not cover does not exist.
    let o = parrot(&s, &["ls", "/cvmfs/other.example.net"], &[]);
    assert_ne!(o.code, Some(0), "{o}");
    assert!(o.stderr.contains("No such file or directory"), "{o}");
}

#[test]
fn ignored_options_are_reported_once_and_refused_ones_fail() {
    let s = Served::start();
    let o = parrot(
        &s,
        &[
            "-U",
            "1000",
            "-G",
            "1000",
            "--fake-setuid",
            "-k",
            "cat",
            &format!("/cvmfs/{FQRN}/README"),
        ],
        &[],
    );
    assert_eq!((o.code, o.stdout.as_str()), (Some(0), README), "{o}");
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{o}");
    assert!(
        lines[0].starts_with(
            "perch: warning: parrot_run settings without meaning for perch, ignored: -U"
        ) && lines[0].contains("--fake-setuid")
            && lines[0].contains("-k"),
        "{o}"
    );
    for args in [
        &["-n", "/tmp/names", "true"][..],
        &["--ext-image=/a=/b", "true"][..],
        &["-X", "true"][..],
    ] {
        let o = parrot(&s, args, &[]);
        assert_eq!(o.code, Some(200), "{args:?}: {o}");
        assert!(o.stderr.starts_with("perch: parrot_run: "), "{o}");
    }
    let o = parrot(&s, &["--check-driver", "cvmfs"], &[]);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (Some(0), "cvmfs is enabled\n"),
        "{o}"
    );
}

#[test]
fn bad_parrot_cvmfs_repo_is_a_configuration_error() {
    let s = Served::start();
    let env = [("PARROT_CVMFS_REPO", format!("{FQRN}/sub:url=http://x"))];
    let o = parrot(&s, &["true"], &env);
    assert_eq!(o.code, Some(201), "{o}");
    assert!(
        o.stderr
            .contains("PARROT_CVMFS_REPO: entry conv.example.org/sub"),
        "{o}"
    );
}
