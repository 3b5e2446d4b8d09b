//! `PARROT_CVMFS_REPO` (and parrot_run's `-r`): Parrot's repository list, turned into
//! `CVMFS_*` parameters of perch's configuration.
//!
//! Syntax (cctools `pfs_service_cvmfs.cc`): entries separated by white space, each
//! `NAME[/SUBPATH][:OPTIONS]`. `NAME` may start with `*`, which matches one or more leading
//! characters of a repository name (`*.cern.ch`); every unescaped `*` in `OPTIONS` is replaced
//! by the characters it matched (`url=http://s1/cvmfs/*.cern.ch`). `OPTIONS` are
//! comma-separated libcvmfs options (`url=…,pubkey=…,proxies=…`). A backslash escapes the next
//! character (a space or `*`). When several entries match, the last one wins. The entry
//! `<default-repositories>[:OPTIONS]` stands for Parrot's defaults, here the domains perch
//! knows (`*.cern.ch`, `*.egi.eu`, `*.opensciencegrid.org`, `*.eessi.io`, with perch's
//! built-in stratum 1 servers and keys), each with `OPTIONS` added.
//!
//! Options perch maps: `url` → `CVMFS_SERVER_URL`, `pubkey` → `CVMFS_PUBLIC_KEY`, `proxies`
//! → `CVMFS_HTTP_PROXY`, `cachedir` → `CVMFS_CACHE_DIR`, `alien_cachedir` →
//! `CVMFS_ALIEN_CACHE`, `timeout` → `CVMFS_TIMEOUT`, `timeout_direct` →
//! `CVMFS_TIMEOUT_DIRECT`, `quota_limit` → `CVMFS_QUOTA_LIMIT`, `max_ttl` →
//! `CVMFS_MAX_TTL` (minutes). Every other option (`try_local_filesystem`, `force_signing`,
//! `repo_name`, …) has no meaning for perch: [`ParrotRepos::ignored`] lists it so the caller
//! can say so once. A `<BUILTIN-….pub>` key placeholder leaves perch's built-in keys in place.

use std::collections::BTreeSet;

/// Stands for an unescaped `*` in the options while parsing (not a character of any URL).
const STAR: char = '\u{0}';

/// The domains `<default-repositories>` stands for.
const DEFAULT_DOMAINS: &[&str] = &["cern.ch", "egi.eu", "opensciencegrid.org", "eessi.io"];

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParrotEntry {
    /// The repository name, or its suffix after the `*`.
    pub name: String,
    /// `*NAME`: matches every repository ending in `NAME` with at least one more character.
    pub wildcard: bool,
    /// `/SUBPATH` after the name (parrot mounts that subdirectory; perch refuses it).
    pub subpath: String,
    /// `key[=value]` options, `*` kept as a placeholder.
    options: Vec<(String, Option<String>)>,
}

impl ParrotEntry {
    /// Whether the entry applies to `fqrn`, and what its `*` matched.
    fn matches<'a>(&self, fqrn: &'a str) -> Option<&'a str> {
        if self.wildcard {
            let front = fqrn.strip_suffix(self.name.as_str())?;
            (!front.is_empty()).then_some(front)
        } else {
            (fqrn == self.name).then_some("")
        }
    }
}

/// A parsed `PARROT_CVMFS_REPO`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParrotRepos {
    entries: Vec<ParrotEntry>,
}

/// A `PARROT_CVMFS_REPO` value perch cannot take as it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParrotError {
    /// An entry without a repository name.
    #[error("entry {entry:?} names no repository")]
    NoName {
        /// The entry as written.
        entry: String,
    },
    /// `NAME/SUBPATH`: parrot mounts a subdirectory of the repository there; perch does not.
    #[error("entry {name}/{subpath}: a repository subpath is not supported; name the whole repository and use /cvmfs/{name}/{subpath}")]
    Subpath {
        /// Repository.
        name: String,
        /// The subpath.
        subpath: String,
    },
    /// An option that needs a value has none.
    #[error("entry {name}: option {option} needs a value ({option}=…)")]
    NoValue {
        /// Repository.
        name: String,
        /// The option.
        option: String,
    },
}

/// Options perch maps to `CVMFS_*` parameters.
const MAPPED: &[(&str, &str)] = &[
    ("url", "CVMFS_SERVER_URL"),
    ("pubkey", "CVMFS_PUBLIC_KEY"),
    ("proxies", "CVMFS_HTTP_PROXY"),
    ("cachedir", "CVMFS_CACHE_DIR"),
    ("alien_cachedir", "CVMFS_ALIEN_CACHE"),
    ("timeout", "CVMFS_TIMEOUT"),
    ("timeout_direct", "CVMFS_TIMEOUT_DIRECT"),
    ("quota_limit", "CVMFS_QUOTA_LIMIT"),
    ("max_ttl", "CVMFS_MAX_TTL"),
];

impl ParrotRepos {
    /// Parses the value of `PARROT_CVMFS_REPO` (or of parrot_run's `-r`).
    pub fn parse(text: &str) -> Result<ParrotRepos, ParrotError> {
        let mut entries = Vec::new();
        for raw in split_entries(text) {
            let (wildcard, rest) = match raw.strip_prefix(STAR) {
                Some(r) => (true, r),
                None => (false, raw.as_str()),
            };
            let (head, options) = match rest.find(':') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, ""),
            };
            let (name, subpath) = match head.find('/') {
                Some(i) => (&head[..i], &head[i..]),
                None => (head, ""),
            };
            let name = name.replace(STAR, "*");
            let options: Vec<(String, Option<String>)> = options
                .split(',')
                .filter(|o| !o.is_empty())
                .map(|o| match o.split_once('=') {
                    Some((k, v)) => (k.trim().replace(STAR, "*"), Some(v.to_string())),
                    None => (o.trim().replace(STAR, "*"), None),
                })
                .collect();
            if name.is_empty() {
                return Err(ParrotError::NoName {
                    entry: raw.replace(STAR, "*"),
                });
            }
            if name == "<default-repositories>" {
                for d in DEFAULT_DOMAINS {
                    entries.push(ParrotEntry {
                        name: format!(".{d}"),
                        wildcard: true,
                        subpath: String::new(),
                        options: options.clone(),
                    });
                }
                continue;
            }
            let subpath = subpath.trim_end_matches('/').to_string();
            if !subpath.is_empty() {
                return Err(ParrotError::Subpath {
                    name,
                    subpath: subpath.trim_start_matches('/').to_string(),
                });
            }
            for (k, v) in &options {
                if v.is_none() && MAPPED.iter().any(|(m, _)| m == k) {
                    return Err(ParrotError::NoValue {
                        name,
                        option: k.clone(),
                    });
                }
            }
            entries.push(ParrotEntry {
                name,
                wildcard,
                subpath,
                options,
            });
        }
        Ok(ParrotRepos { entries })
    }

    /// The entries, in the order written.
    pub fn entries(&self) -> &[ParrotEntry] {
        &self.entries
    }

    /// Repositories named without a wildcard (listed in `/cvmfs`).
    pub fn named(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| !e.wildcard)
            .map(|e| e.name.clone())
            .collect()
    }

    /// Whether some entry applies to `fqrn` (parrot knows no other repository).
    pub fn covers(&self, fqrn: &str) -> bool {
        self.entries.iter().any(|e| e.matches(fqrn).is_some())
    }

    /// The `CVMFS_*` parameters for `fqrn` from the last entry that matches it, `*` replaced;
    /// empty when none matches. Built-in key placeholders are dropped.
    pub fn settings(&self, fqrn: &str) -> Vec<(String, String)> {
        let Some((e, front)) = self
            .entries
            .iter()
            .rev()
            .find_map(|e| e.matches(fqrn).map(|f| (e, f)))
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in &e.options {
            let (Some((_, key)), Some(v)) = (MAPPED.iter().find(|(m, _)| m == k), v) else {
                continue;
            };
            if *key == "CVMFS_PUBLIC_KEY" && v.starts_with("<BUILTIN-") {
                continue;
            }
            out.push(((*key).to_string(), v.replace(STAR, front)));
        }
        out
    }

    /// Options of any entry that perch does not use, each once, sorted.
    pub fn ignored(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .entries
            .iter()
            .flat_map(|e| e.options.iter())
            .filter(|(k, _)| !MAPPED.iter().any(|(m, _)| m == k))
            .map(|(k, _)| k.clone())
            .collect();
        set.into_iter().collect()
    }
}

/// Splits at unescaped white space; unescaped `*` become [`STAR`], escapes are removed.
fn split_entries(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '*' => cur.push(STAR),
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn one_repository_with_its_options() {
        let r = ParrotRepos::parse(
            " atlas.example.org:url=http://s1/cvmfs/atlas.example.org;http://s2/x,pubkey=/k/a.pub,proxies=http://p:3128|DIRECT\n",
        )
        .unwrap();
        assert_eq!(r.named(), vec!["atlas.example.org"]);
        assert_eq!(
            r.settings("atlas.example.org"),
            kv(&[
                (
                    "CVMFS_SERVER_URL",
                    "http://s1/cvmfs/atlas.example.org;http://s2/x"
                ),
                ("CVMFS_PUBLIC_KEY", "/k/a.pub"),
                ("CVMFS_HTTP_PROXY", "http://p:3128|DIRECT"),
            ])
        );
        assert!(r.settings("other.example.org").is_empty());
        assert!(!r.covers("other.example.org"));
        assert!(r.ignored().is_empty());
    }

    #[test]
    fn wildcard_fills_star_in_options_and_later_entries_win() {
        let r = ParrotRepos::parse(
            "*.example.org:url=http://s1/cvmfs/*.example.org,pubkey=/k/e.pub,alien_cachedir=/a/* \
             special.example.org:url=http://s2/sp,pubkey=/k/s.pub",
        )
        .unwrap();
        assert_eq!(
            r.settings("sft.example.org"),
            kv(&[
                ("CVMFS_SERVER_URL", "http://s1/cvmfs/sft.example.org"),
                ("CVMFS_PUBLIC_KEY", "/k/e.pub"),
                ("CVMFS_ALIEN_CACHE", "/a/sft"),
            ])
        );
        assert_eq!(
            r.settings("special.example.org")[0],
            ("CVMFS_SERVER_URL".to_string(), "http://s2/sp".to_string())
        );
        // `*` needs at least one character.
        assert!(!r.covers(".example.org"));
        assert_eq!(r.named(), vec!["special.example.org"]);
    }

    #[test]
    fn escapes_and_flags() {
        let r = ParrotRepos::parse(
            r"a.example.org:url=http://s/a\*b,pubkey=/k/my\ key.pub,try_local_filesystem,force_signing",
        )
        .unwrap();
        assert_eq!(
            r.settings("a.example.org"),
            kv(&[
                ("CVMFS_SERVER_URL", "http://s/a*b"),
                ("CVMFS_PUBLIC_KEY", "/k/my key.pub"),
            ])
        );
        assert_eq!(r.ignored(), vec!["force_signing", "try_local_filesystem"]);
    }

    #[test]
    fn default_repositories_are_the_builtin_domains_with_extra_options() {
        let r = ParrotRepos::parse("<default-repositories>:proxies=http://p:3128").unwrap();
        assert!(r.covers("atlas.cern.ch"));
        assert!(r.covers("oasis.opensciencegrid.org"));
        assert!(!r.covers("x.example.org"));
        assert_eq!(
            r.settings("atlas.cern.ch"),
            kv(&[("CVMFS_HTTP_PROXY", "http://p:3128")])
        );
        let plain = ParrotRepos::parse("<default-repositories>").unwrap();
        assert!(plain.settings("atlas.cern.ch").is_empty());
        assert!(plain.covers("atlas.cern.ch"));
        let builtin = ParrotRepos::parse("*.cern.ch:pubkey=<BUILTIN-cern.ch.pub>").unwrap();
        assert!(builtin.settings("atlas.cern.ch").is_empty());
    }

    #[test]
    fn refused_entries_say_why() {
        assert_eq!(
            ParrotRepos::parse(":url=http://x").unwrap_err(),
            ParrotError::NoName {
                entry: ":url=http://x".into()
            }
        );
        let e = ParrotRepos::parse("a.example.org/sub/dir:url=http://x").unwrap_err();
        assert!(e.to_string().contains("a.example.org/sub/dir"), "{e}");
        let e = ParrotRepos::parse("a.example.org:url").unwrap_err();
        assert_eq!(
            e.to_string(),
            "entry a.example.org: option url needs a value (url=…)"
        );
    }
}
