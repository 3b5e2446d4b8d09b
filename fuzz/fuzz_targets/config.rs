//! The client configuration: the input is `fqrn NUL file-text NUL environment`, the file is
//! read as a `--config` file and the environment as `KEY=VALUE` lines; every typed accessor
//! (booleans, numbers, durations, server URLs, proxy groups, cache paths, repositories) then
//! answers a value or an error, never a panic.
#![no_main]
use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use perch_cvmfs::config::{parse_str, Config, ConfigSources};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let fqrn = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let file = parts.next().unwrap_or_default();
    let env_text = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();

    for a in parse_str(&String::from_utf8_lossy(file)) {
        assert!(!a.key.is_empty() && !a.key.contains('='), "{a:?}");
    }
    let conf = perch_fuzz::scratch().join("fuzz.conf");
    std::fs::write(&conf, file).unwrap();
    let mut sources = ConfigSources::new(perch_fuzz::scratch().join("no-etc"));
    sources.system_files = false;
    sources.uid = Some(1000);
    let sources = sources.with_extra_file(&conf);
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("HOME".into(), "/home/fuzz".into());
    for line in env_text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            env.insert(k.to_string(), v.to_string());
        }
    }
    let Ok(c) = Config::resolve(&fqrn, &sources, &env) else {
        return;
    };
    for (k, _, _) in c.iter().take(64) {
        let _ = c.bool(k);
        let _ = c.int(k);
        let _ = c.secs(k);
    }
    let _ = c.server_urls();
    let _ = c.proxy_groups();
    let _ = c.cache_base();
    let _ = c.cache_dir();
    let _ = c.workspace_dir();
    let _ = c.alien_cache();
    let _ = c.quota_limit_mb();
    let _ = c.max_ttl();
    let _ = c.offline_retry();
    let _ = c.repository_tag();
    let _ = c.repositories();
    let _ = c.show();
});
