//! `perch doctor`: one line per check, exit status 1 on a FAIL (issue 12 Build 2). A healthy
//! setup and each broken one: server down, wrong key, expired whitelist, unwritable cache,
//! proxy down.

mod served;

use served::{dead_port, Out, Served, FQRN};

fn doctor(s: &Served, conf: &std::path::Path, cache: &str) -> Out {
    let args = s.client_args(conf, cache);
    let mut v: Vec<&str> = vec!["doctor"];
    v.extend(args.iter().map(String::as_str));
    v.push(FQRN);
    s.perch(&v)
}

/// The line of `o` whose subject starts with `subject`.
fn line<'a>(o: &'a Out, subject: &str) -> &'a str {
    o.stdout
        .lines()
        .find(|l| l.get(5..).is_some_and(|rest| rest.starts_with(subject)))
        .unwrap_or_else(|| panic!("no line for {subject:?}\n{o}"))
}

#[test]
fn healthy_setup_passes_every_check() {
    let s = Served::start();
    let conf = s.config("client.conf", "");
    let o = doctor(&s, &conf, "cache");
    assert_eq!(o.code, Some(0), "{o}");
    for l in o.stdout.lines() {
        // The repository's checks pass; the machine's may warn (FUSE prerequisites, a
        // container's seccomp filter, a small disk) but not fail.
        let ok = l.starts_with("OK  ") || (l.starts_with("WARN") && !l.contains(FQRN));
        assert!(ok, "{l}\n{o}");
    }
    assert!(
        line(&o, &format!("{FQRN} server {}", s.url())).contains("HTTP 200"),
        "{o}"
    );
    assert!(
        line(&o, &format!("{FQRN} whitelist")).contains("valid, expires"),
        "{o}"
    );
    assert!(
        line(&o, &format!("{FQRN} signature")).contains("revision 1"),
        "{o}"
    );
    assert!(line(&o, "cache hard links").starts_with("OK"), "{o}");
    assert!(line(&o, "run mode notify").starts_with("OK"), "{o}");
    assert_eq!(o.stderr, "", "{o}");
}

#[test]
fn server_down_fails() {
    let mut s = Served::start();
    let conf = s.config("client.conf", "");
    s.nginx.stop();
    let o = doctor(&s, &conf, "cache");
    assert_eq!(o.code, Some(1), "{o}");
    assert!(
        line(&o, &format!("{FQRN} server")).starts_with("FAIL"),
        "{o}"
    );
    assert!(
        line(&o, &format!("{FQRN} server")).contains("connection refused"),
        "{o}"
    );
    assert!(
        line(&o, &format!("{FQRN} signature")).starts_with("FAIL"),
        "{o}"
    );
}

#[test]
fn wrong_key_fails_the_signature() {
    let s = Served::start();
    let other = s.path("otherkeys");
    perch_publish::keygen(FQRN, &other, 30).unwrap();
    let conf = s.config(
        "client.conf",
        &format!("CVMFS_PUBLIC_KEY={}/{FQRN}.pub\n", other.display()),
    );
    let o = doctor(&s, &conf, "cache");
    assert_eq!(o.code, Some(1), "{o}");
    let l = line(&o, &format!("{FQRN} signature"));
    assert!(l.starts_with("FAIL") && l.contains("whitelist"), "{o}");
    assert!(line(&o, &format!("{FQRN} server")).starts_with("OK"), "{o}");
}

#[test]
fn expired_whitelist_fails() {
    let s = Served::start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let wl = perch_format::whitelist::Whitelist::create_with_expiry(
        FQRN,
        now - 40 * 86400,
        now - 86400,
        &s.keys.certificate,
        &s.keys.master,
    )
    .unwrap();
    std::fs::write(s.path(&format!("www/{FQRN}/.cvmfswhitelist")), wl).unwrap();
    let conf = s.config("client.conf", "");
    let o = doctor(&s, &conf, "cache");
    assert_eq!(o.code, Some(1), "{o}");
    let l = line(&o, &format!("{FQRN} whitelist"));
    assert!(l.starts_with("FAIL") && l.contains("expired"), "{o}");
    assert!(
        line(&o, &format!("{FQRN} signature")).contains("expired"),
        "{o}"
    );
}

#[test]
fn unwritable_cache_fails() {
    let s = Served::start();
    std::fs::write(s.path("file"), "").unwrap();
    let conf = s.config("client.conf", "");
    let o = doctor(&s, &conf, "file/cache");
    assert_eq!(o.code, Some(1), "{o}");
    let l = line(&o, "cache ");
    assert!(l.starts_with("FAIL") && l.contains("--cache DIR"), "{o}");
}

#[test]
fn proxy_down_fails() {
    let s = Served::start();
    let conf = s.config(
        "client.conf",
        &format!("CVMFS_HTTP_PROXY=http://127.0.0.1:{}\n", dead_port()),
    );
    let o = doctor(&s, &conf, "cache");
    assert_eq!(o.code, Some(1), "{o}");
    let l = line(&o, &format!("{FQRN} server"));
    assert!(
        l.starts_with("FAIL") && l.contains("via proxy http://127.0.0.1:"),
        "{o}"
    );
}

#[test]
fn info_shows_revision_servers_proxy_and_cache() {
    let s = Served::start();
    let conf = s.config("client.conf", "");
    let args = s.client_args(&conf, "cache");
    let mut v: Vec<&str> = vec!["info"];
    v.extend(args.iter().map(String::as_str));
    v.push(FQRN);
    let o = s.perch(&v);
    assert_eq!(o.code, Some(0), "{o}");
    let field = |k: &str| {
        o.stdout
            .lines()
            .find_map(|l| l.strip_prefix(k).map(str::trim))
            .unwrap_or_else(|| panic!("no {k}\n{o}"))
            .to_string()
    };
    assert_eq!(field("repository"), FQRN);
    assert_eq!(field("revision"), "1");
    assert_eq!(field("servers"), format!("{} (current)", s.url()));
    assert_eq!(field("proxy "), "DIRECT");
    assert_eq!(field("state"), "online");
    assert!(field("cache use").contains("quota"), "{o}");
}
