//! Errors that say what to do, and debug output that shows the network (issue 12 Build 3–4,
//! issue 14 Build 6): each case checks the message and the exit code.

mod served;

use served::{dead_port, Served, FQRN, README};

fn run_args<'a>(s: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = vec!["run"];
    v.extend(s.iter().map(String::as_str));
    v.extend_from_slice(extra);
    v
}

#[test]
fn unreadable_config_names_no_empty_repository() {
    let s = Served::start();
    let o = s.perch(&["run", "--config", "/nonexistent/typo.conf", "--", "true"]);
    assert_eq!(o.code, Some(201), "{o}");
    assert!(!o.stderr.contains("of :"), "{o}");
    assert!(
        o.stderr.contains("client configuration") && o.stderr.contains("/nonexistent/typo.conf"),
        "{o}"
    );
}

#[test]
fn unknown_option_before_the_command_is_a_usage_error_with_a_suggestion() {
    let s = Served::start();
    let o = s.perch(&["run", "--cahce", "/tmp/x", "--", "true"]);
    assert_eq!(o.code, Some(200), "{o}");
    assert!(
        o.stderr.contains("--cahce") && o.stderr.contains("--cache"),
        "{o}"
    );
    // parrot's -t given to perch run: refused, not run as the program.
    let o = s.perch(&["run", "-t", "/tmp/x", "true"]);
    assert_eq!(o.code, Some(200), "{o}");
    assert!(!o.stderr.contains("cannot execute"), "{o}");
    // After the command, options belong to it.
    let o = s.perch(&[
        "run",
        "--cache",
        &s.path("c").display().to_string(),
        "sh",
        "-c",
        "echo $0",
        "--x",
    ]);
    assert_eq!(o.code, Some(0), "{o}");
    assert_eq!(o.stdout, "--x\n", "{o}");
}

#[test]
fn unknown_debug_flag_is_refused() {
    let s = Served::start();
    let o = s.perch(&["-d", "bogus", "run", "--", "true"]);
    assert_eq!(o.code, Some(200), "{o}");
    assert!(
        o.stderr.contains("unknown debug flag \"bogus\"")
            && o.stderr.contains("known: cvmfs, fetch"),
        "{o}"
    );
}

#[test]
fn unusable_cache_is_one_exit_code_in_every_command_with_a_hint() {
    let s = Served::start();
    let conf = s.config("client.conf", "");
    // A directory below a regular file cannot be created, even by root.
    std::fs::write(s.path("file"), "").unwrap();
    let bad = s.path("file/cache").display().to_string();
    let base = [
        "--config-dir".to_string(),
        s.path("etc").display().to_string(),
        "--config".to_string(),
        conf.display().to_string(),
        "--cache".to_string(),
        bad.clone(),
    ];
    let readme = format!("/cvmfs/{FQRN}/README");
    let cases: Vec<Vec<&str>> = vec![
        run_args(&base, &["--", "true"]),
        [
            &["ls"][..],
            &base.iter().map(String::as_str).collect::<Vec<_>>(),
            &[readme.as_str()],
        ]
        .concat(),
        [
            &["cat"][..],
            &base.iter().map(String::as_str).collect::<Vec<_>>(),
            &[readme.as_str()],
        ]
        .concat(),
        [
            &["cache", "stats"][..],
            &base.iter().map(String::as_str).collect::<Vec<_>>(),
            &[FQRN],
        ]
        .concat(),
    ];
    for args in cases {
        let o = s.perch(&args);
        assert_eq!(o.code, Some(208), "perch {args:?}\n{o}");
        assert!(
            o.stderr.contains(&bad)
                && o.stderr.contains("--cache DIR")
                && o.stderr.contains("XDG_CACHE_HOME"),
            "perch {args:?}\n{o}"
        );
    }
}

#[test]
fn unwritable_home_falls_back_to_tmpdir_and_says_so_once() {
    let s = Served::start();
    let conf = s.config("client.conf", "");
    std::fs::write(s.path("homefile"), "").unwrap();
    let mut c = s.command(served::PERCH);
    c.env("HOME", s.path("homefile"))
        .args(["run", "--config-dir"])
        .arg(s.path("etc"))
        .arg("--config")
        .arg(&conf)
        .args(["--", "sh", "-c"])
        .arg(format!(
            "cat /cvmfs/{FQRN}/README; cat /cvmfs/{FQRN}/dir/a.txt"
        ));
    let o: served::Out = c.output().unwrap().into();
    assert_eq!(o.code, Some(0), "{o}");
    assert_eq!(o.stdout, format!("{README}a\n"), "{o}");
    assert_eq!(
        o.stderr
            .matches("cannot create the default cache directory")
            .count(),
        1,
        "{o}"
    );
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    let fallback = s.tmp.path().join(format!("perch-{uid}"));
    assert!(o.stderr.contains(&fallback.display().to_string()), "{o}");
    assert!(
        fallback.join(FQRN).is_dir(),
        "objects not under {}",
        fallback.display()
    );
}

#[test]
fn proxy_failover_names_both_proxies() {
    let s = Served::start();
    let squid = perch_testkit::Squid::start().unwrap();
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let conf = s.config(
        "client.conf",
        &format!("CVMFS_HTTP_PROXY=\"{dead};{}\"\n", squid.url()),
    );
    let args = s.client_args(&conf, "cache");
    let mut v: Vec<&str> = vec!["cat"];
    v.extend(args.iter().map(String::as_str));
    let readme = format!("/cvmfs/{FQRN}/README");
    v.push(&readme);
    let o = s.perch(&v);
    assert_eq!(o.code, Some(0), "{o}");
    assert_eq!(o.stdout, README);
    let line = o
        .stderr
        .lines()
        .find(|l| l.contains("switching to"))
        .unwrap_or_else(|| panic!("no failover line\n{o}"));
    assert_eq!(
        line,
        format!(
            "perch: warning: proxy {dead} failed (connection refused); switching to proxy {}",
            squid.url()
        )
    );
}

#[test]
fn debug_fetch_logs_every_request_unmasked_and_never_on_stdout() {
    let s = Served::start();
    let conf = s.config("client.conf", "");
    let args = s.client_args(&conf, "cache");
    let readme = format!("/cvmfs/{FQRN}/README");
    let mut v: Vec<&str> = vec!["-d", "fetch,cvmfs", "cat"];
    v.extend(args.iter().map(String::as_str));
    v.push(&readme);
    let o = s.perch(&v);
    assert_eq!(o.code, Some(0), "{o}");
    assert_eq!(o.stdout, README, "debug output reached stdout\n{o}");
    let gets: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.starts_with("perch[fetch]: GET"))
        .collect();
    // manifest, whitelist, certificate, root catalog, README: each one request.
    let served = s
        .nginx
        .requests()
        .iter()
        .filter(|r| r.uri.starts_with(&format!("/{FQRN}/")))
        .count();
    assert_eq!(gets.len(), served, "{o}");
    let manifest = format!("url={}/.cvmfspublished", s.url());
    assert!(
        gets.iter().any(|l| l.contains(&manifest)
            && l.contains("via=DIRECT")
            && l.contains("status=200")
            && l.contains("bytes=")
            && l.contains("ms=")),
        "{o}"
    );
    assert!(!o.stderr.contains("******"), "{o}");
    assert!(o.stderr.contains("perch[cvmfs]: catalog loaded"), "{o}");
    assert!(o.stderr.contains("perch[cvmfs]: cache miss"), "{o}");
    assert!(
        o.stderr
            .contains(&format!("perch[cvmfs]: mounted (fqrn={FQRN}, revision=")),
        "{o}"
    );
}

#[test]
fn full_cache_is_enospc_and_one_line() {
    let s = Served::start();
    // 2 MiB file, 2 MB quota: the object exceeds half of the quota.
    let conf = s.config("client.conf", "CVMFS_QUOTA_LIMIT=2\n");
    let args = s.client_args(&conf, "cache");
    let v = run_args(&args, &["--", "cat", "/cvmfs/conv.example.org/big.bin"]);
    let o = s.perch(&v);
    assert_eq!(o.code, Some(1), "{o}");
    assert!(o.stderr.contains("No space left on device"), "{o}");
    assert_eq!(
        o.stderr.matches("exceeds half of the cache quota").count(),
        1,
        "{o}"
    );
}

#[test]
fn offline_miss_is_logged_once() {
    let mut s = Served::start();
    let conf = s.config("client.conf", "");
    let args = s.client_args(&conf, "cache");
    // Warm the manifest and catalog, not README.
    let o = s.perch(&run_args(
        &args,
        &["--", "ls", "/cvmfs/conv.example.org/dir"],
    ));
    assert_eq!(o.code, Some(0), "{o}");
    s.nginx.stop();
    let o = s.perch(&run_args(
        &args,
        &[
            "--",
            "sh",
            "-c",
            "cat /cvmfs/conv.example.org/README; cat /cvmfs/conv.example.org/README; true",
        ],
    ));
    assert_eq!(o.code, Some(0), "{o}");
    assert!(o.stderr.contains("Input/output error"), "{o}");
    // One line about the object, although the program asked twice; the offline notice once.
    let about: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.contains("/README"))
        .filter(|l| l.starts_with("perch:"))
        .collect();
    assert_eq!(about.len(), 1, "{o}");
    assert_eq!(
        o.stderr
            .matches("serving the last verified revision")
            .count(),
        1,
        "{o}"
    );
}

#[test]
fn config_show_without_a_server_fails_and_serve_refuses_a_non_stratum() {
    let tmp = perch_testkit::tempdir().unwrap();
    let etc = tmp.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let o: served::Out = std::process::Command::new(served::PERCH)
        .args(["config", "show", "--config-dir"])
        .arg(&etc)
        .arg("nothing.example.org")
        .env("HOME", tmp.path())
        .output()
        .unwrap()
        .into();
    assert_eq!(o.code, Some(201), "{o}");
    assert!(o.stdout.contains("CVMFS_CACHE_BASE="), "{o}");
    assert_eq!(
        o.stderr,
        "perch: no server configured for nothing.example.org (set CVMFS_SERVER_URL, e.g. with --config FILE)\n"
    );
    let o: served::Out = std::process::Command::new(served::PERCH)
        .arg("serve")
        .arg(tmp.path())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap()
        .into();
    assert_eq!(o.code, Some(200), "{o}");
    assert!(
        o.stderr.contains("is not a stratum (no .cvmfspublished)"),
        "{o}"
    );
}

#[test]
fn tiny_publish_reports_binary_units_and_no_meaningless_rate() {
    let tmp = perch_testkit::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), "tiny\n").unwrap();
    let run = |args: &[&str]| -> served::Out {
        std::process::Command::new(served::PERCH)
            .args(args)
            .current_dir(tmp.path())
            .output()
            .unwrap()
            .into()
    };
    let o = run(&["keygen", "tiny.example.org", "keys"]);
    assert_eq!(o.code, Some(0), "{o}");
    let o = run(&[
        "publish",
        "src",
        "--fqrn",
        "tiny.example.org",
        "--keys",
        "keys",
        "--stratum",
        "stratum",
    ]);
    assert_eq!(o.code, Some(0), "{o}");
    assert!(
        o.stdout
            .contains("1 files, 1 directories, 0 symlinks, 5 B\n"),
        "{o}"
    );
    assert!(!o.stdout.contains("MB"), "{o}");
    // Under 0.1 s no rate is shown; above, it is in binary units.
    assert!(
        !o.stdout.contains("/s") || o.stdout.contains("iB/s") || o.stdout.contains(" B/s"),
        "{o}"
    );
}
