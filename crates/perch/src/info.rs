//! `perch info FQRN`: what `cvmfs_talk host info`, `proxy info`, `revision` and
//! `cvmfs_config stat -v` show for a mounted repository, for the revision perch mounts now
//! (through the normal cache: offline, it shows the cached revision and says so).

use std::io::Write;

use perch_cvmfs::fetch::Proxy;

use crate::exit::{Fail, Failure};
use crate::mounts::Client;

fn proxy_name(p: &Proxy) -> String {
    match p {
        Proxy::Direct => "DIRECT".into(),
        Proxy::Url(u) => u.clone(),
    }
}

/// Runs `perch info FQRN`.
pub fn info(client: &mut Client, fqrn: &str) -> Result<(), Fail> {
    let repo = client.mount(fqrn)?;
    let m = &repo.manifest().manifest;
    let f = repo.fetcher();
    let current = f.current_server().unwrap_or_default().to_string();
    let servers: Vec<String> = f
        .servers()
        .iter()
        .map(|s| {
            if *s == current {
                format!("{s} (current)")
            } else {
                s.clone()
            }
        })
        .collect();
    let proxy = proxy_name(&f.current_proxy());
    let groups: Vec<String> = f
        .proxy_groups()
        .iter()
        .map(|g| g.iter().map(proxy_name).collect::<Vec<_>>().join("|"))
        .collect();
    let cache = repo.cache();
    let mb = |b: u64| format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20));
    let published = m.timestamp.map_or_else(
        || "unknown".to_string(),
        |t| {
            let s = perch_format::whitelist::utc_stamp(i64::try_from(t).unwrap_or(0));
            format!(
                "{}-{}-{} {}:{}:{} UTC",
                &s[0..4],
                &s[4..6],
                &s[6..8],
                &s[8..10],
                &s[10..12],
                &s[12..14]
            )
        },
    );
    let lines: Vec<(&str, String)> = vec![
        ("repository", fqrn.to_string()),
        ("revision", repo.revision().to_string()),
        ("root hash", repo.root_hash().to_string()),
        ("tag", repo.tag().unwrap_or("(newest)").to_string()),
        ("published", published),
        (
            "expires",
            format!("in {} min (catalog TTL)", repo.ttl().as_secs() / 60),
        ),
        (
            "state",
            if repo.is_offline() {
                "offline: serving the last verified revision from the cache".into()
            } else {
                "online".into()
            },
        ),
        ("servers", servers.join("; ")),
        ("proxy", proxy),
        ("proxies", groups.join("; ")),
        ("cache", cache.root().display().to_string()),
        (
            "cache use",
            match cache.quota_limit() {
                Some(q) => format!("{} of {} quota", mb(cache.usage()), mb(q)),
                None => format!("{} (no quota)", mb(cache.usage())),
            },
        ),
        ("catalogs", format!("{} loaded", repo.loaded_catalogs())),
    ];
    let mut out = std::io::stdout().lock();
    for (k, v) in lines {
        if let Err(e) = writeln!(out, "{k:<11} {v}") {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(Fail::new(Failure::Io, e));
        }
    }
    Ok(())
}
