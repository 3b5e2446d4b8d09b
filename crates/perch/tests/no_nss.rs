//! One static binary (issue 5): perch never reaches glibc NSS. A static glibc
//! binary that calls getaddrinfo or getpwnam loads NSS modules at run time and
//! breaks on a node with another glibc, so no NSS entry point may even be linked.
//! Host names are resolved by perch itself: the end-to-end tests resolve a
//! server and a proxy name that only a hosts file of the test knows.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use perch_testkit::{fixtures_dir, tempdir, CacheOutcome, Nginx, Squid};

const FQRN: &str = "tiny.example.org";

/// glibc functions that consult NSS (passwd, group, hosts, services, protocols,
/// networks, shadow, netgroup), and `dlopen`, which only the NSS, iconv or
/// SQLite extension loaders would use.
const FORBIDDEN: &[&str] = &[
    "getaddrinfo",
    "getaddrinfo_a",
    "getnameinfo",
    "gethostbyname",
    "gethostbyname2",
    "gethostbyname_r",
    "gethostbyname2_r",
    "gethostbyaddr",
    "gethostbyaddr_r",
    "gethostent",
    "gethostent_r",
    "getpwnam",
    "getpwnam_r",
    "getpwuid",
    "getpwuid_r",
    "getpwent",
    "getpwent_r",
    "getgrnam",
    "getgrnam_r",
    "getgrgid",
    "getgrgid_r",
    "getgrent",
    "getgrent_r",
    "getgrouplist",
    "initgroups",
    "getservbyname",
    "getservbyname_r",
    "getservbyport",
    "getservbyport_r",
    "getprotobyname",
    "getprotobyname_r",
    "getprotobynumber",
    "getnetbyname",
    "getspnam",
    "getspnam_r",
    "getlogin",
    "getlogin_r",
    "setnetgrent",
    "innetgr",
    "dlopen",
];

/// The forbidden symbols `nm` lists for `bin`, defined or undefined, as
/// `(symbol, nm line)`.
fn nss_symbols(bin: &Path) -> Vec<(String, String)> {
    let out = Command::new("nm")
        .arg(bin)
        .output()
        .expect("nm (binutils) is installed");
    assert!(
        out.status.success(),
        "nm {}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // A stripped binary would pass vacuously: require symbols we know are there.
    assert!(
        text.lines().any(|l| l.ends_with(" main")),
        "nm shows no symbols for {}",
        bin.display()
    );
    let mut found = Vec::new();
    for line in text.lines() {
        let Some(name) = line.split_whitespace().last() else {
            continue;
        };
        // Dynamic references carry a version: getaddrinfo@GLIBC_2.2.5.
        let bare = name.split('@').next().unwrap_or(name);
        if FORBIDDEN.contains(&bare) {
            found.push((bare.to_string(), line.to_string()));
        }
    }
    found
}

#[test]
fn perch_links_no_nss_entry_point() {
    let bin = Path::new(env!("CARGO_BIN_EXE_perch"));
    let found = nss_symbols(bin);
    assert!(
        found.is_empty(),
        "{} references NSS entry points:\n{}",
        bin.display(),
        found
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_check_sees_an_nss_reference() {
    // The check above must be able to fail: a C program calling getaddrinfo
    // and getpwuid is caught.
    let tmp = tempdir().unwrap();
    let src = tmp.path().join("nss.c");
    std::fs::write(
        &src,
        "#include <netdb.h>\n#include <pwd.h>\n#include <unistd.h>\n\
         int main(void) { struct addrinfo *r; getpwuid(getuid());\n\
         return getaddrinfo(\"localhost\", 0, 0, &r); }\n",
    )
    .unwrap();
    let bin = tmp.path().join("nss");
    let st = Command::new("gcc")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("gcc is installed");
    assert!(st.success());
    let names: Vec<String> = nss_symbols(&bin).into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"getaddrinfo".to_string()), "{names:?}");
    assert!(names.contains(&"getpwuid".to_string()), "{names:?}");
}

struct Client {
    _tmp: perch_testkit::TempDir,
    root: std::path::PathBuf,
}

impl Client {
    fn new() -> Client {
        let tmp = tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        Client { _tmp: tmp, root }
    }

    /// `perch cat` with this configuration, hosts file and resolv.conf.
    fn cat(&self, conf: &str, hosts: &str, resolv: &str, path: &str) -> Output {
        let (c, h, r) = (
            self.root.join("client.conf"),
            self.root.join("hosts"),
            self.root.join("resolv.conf"),
        );
        std::fs::write(&c, conf).unwrap();
        std::fs::write(&h, hosts).unwrap();
        std::fs::write(&r, resolv).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_perch"));
        cmd.arg("cat")
            .arg("--config-dir")
            .arg(self.root.join("etc"))
            .arg("--config")
            .arg(&c)
            .arg(path)
            .env("HOME", &self.root)
            .env_remove("XDG_CACHE_HOME")
            .env("PERCH_HOSTS_FILE", &h)
            .env("PERCH_RESOLV_CONF", &r)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("CVMFS_") {
                cmd.env_remove(k);
            }
        }
        cmd.output().unwrap()
    }

    fn conf(&self, server: &str, proxy: &str, cache: &str) -> String {
        format!(
            "CVMFS_SERVER_URL={server}/@fqrn@/stratum0\nCVMFS_HTTP_PROXY={proxy}\n\
             CVMFS_PUBLIC_KEY={}\nCVMFS_CACHE_BASE={}\n",
            fixtures_dir()
                .join(FQRN)
                .join("keys")
                .join(format!("{FQRN}.pub"))
                .display(),
            self.root.join(cache).display()
        )
    }
}

/// Only local name servers: a name missing from the hosts file fails at once
/// (127.0.0.1:53 refuses) instead of leaving the machine.
const LOCAL_RESOLV: &str = "nameserver 127.0.0.1\n";

#[test]
fn server_and_proxy_names_come_from_the_hosts_file() {
    let nginx = Nginx::start(&fixtures_dir()).unwrap();
    let squid = Squid::start().unwrap();
    let client = Client::new();
    let hosts = "# test hosts\n127.0.0.1 stratum1.perch-test.invalid s1\n\
                 127.0.0.1 squid.perch-test.invalid\n";
    let file = format!("/cvmfs/{FQRN}/hello.txt");

    // A server name only our hosts file knows, no proxy.
    let server = format!("http://stratum1.perch-test.invalid:{}", nginx.port());
    let out = client.cat(
        &client.conf(&server, "DIRECT", "c1"),
        hosts,
        LOCAL_RESOLV,
        &file,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        "hello tiny"
    );
    assert!(nginx.count_requests(".cvmfspublished") >= 1);

    // A proxy name from the hosts file; squid gets absolute-form requests it
    // can cache (the server name is squid's to resolve: use an IP there).
    let server = format!("http://127.0.0.1:{}", nginx.port());
    let proxy = format!("http://squid.perch-test.invalid:{}", squid.port());
    let out = client.cat(
        &client.conf(&server, &proxy, "c2"),
        hosts,
        LOCAL_RESOLV,
        &file,
    );
    assert!(
        out.status.success(),
        "{}\nsquid log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        squid.access_log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        "hello tiny"
    );
    assert!(
        squid.count(CacheOutcome::Miss, "/data/") > 0,
        "squid log:\n{}",
        squid.access_log()
    );

    // Control: without the hosts entry the same name does not resolve.
    let server = format!("http://stratum1.perch-test.invalid:{}", nginx.port());
    let out = client.cat(
        &client.conf(&server, "DIRECT", "c3"),
        "127.0.0.1 other.perch-test.invalid\n",
        LOCAL_RESOLV,
        &file,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(202), "{err}");
    assert!(err.contains("DNS"), "{err}");
    assert!(err.contains("stratum1.perch-test.invalid"), "{err}");
}
