//! Every magic attribute that docs/magic-xattrs.md says perch serves, read by a program under
//! `perch run` (issue 12 Build 5).

mod served;

use served::{Served, FQRN};

/// `(attribute, where)` for the rows of the docs table perch serves: `where` is `any` (every
/// path) or `files` (regular files).
fn documented() -> Vec<(String, String)> {
    let doc = perch_testkit::workspace_root().join("docs/magic-xattrs.md");
    let text = std::fs::read_to_string(&doc).unwrap();
    let mut out = Vec::new();
    for l in text.lines() {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        // | `user.x` | meaning | served |
        if cells.len() < 4 || !cells[1].starts_with("`user.") {
            continue;
        }
        let name = cells[1].trim_matches('`').to_string();
        // The last cell (a meaning may contain an escaped `\|`).
        let served = cells[cells.len() - 2];
        if served.starts_with("yes") {
            out.push((name, "any".to_string()));
        } else if served.starts_with("files") {
            out.push((name, "files".to_string()));
        }
    }
    assert!(
        out.len() >= 25,
        "table not found or too short in {}",
        doc.display()
    );
    out
}

#[test]
fn every_documented_attribute_is_served_under_perch_run() {
    let s = Served::start();
    let conf = s.config("client.conf", "");
    let attrs = documented();
    let root = format!("/cvmfs/{FQRN}");
    let mut script = String::from("import os\n");
    for (name, place) in &attrs {
        let path = if place == "files" {
            format!("{root}/README")
        } else {
            format!("{root}/dir")
        };
        script.push_str(&format!(
            "try:\n    v = os.getxattr({path:?}, {name:?}).decode()\n    print({name:?} + '=' + repr(v))\nexcept OSError as e:\n    print({name:?} + '!' + str(e.errno))\n"
        ));
    }
    script.push_str(&format!(
        "print('list=' + ','.join(sorted(os.listxattr({root:?}))))\n"
    ));
    let args = s.client_args(&conf, "cache");
    let mut v: Vec<&str> = vec!["run"];
    v.extend(args.iter().map(String::as_str));
    v.extend(["--", "python3", "-c", &script]);
    let o = s.perch(&v);
    assert_eq!(o.code, Some(0), "{o}");
    let value = |name: &str| -> String {
        let prefix = format!("{name}=");
        let l = o
            .stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{name} not readable\n{o}"));
        l[prefix.len()..].trim_matches('\'').to_string()
    };
    for (name, _) in &attrs {
        let v = value(name);
        // Only the tag may be empty (no tag mounted); the rest say something.
        assert!(!v.is_empty() || name == "user.tag", "{name} is empty\n{o}");
    }
    assert_eq!(value("user.fqrn"), FQRN);
    assert_eq!(value("user.proxy"), "DIRECT");
    assert_eq!(value("user.proxy_list"), "DIRECT");
    assert_eq!(value("user.chunks"), "1");
    assert_eq!(value("user.host"), s.url());
    assert_eq!(value("user.timeout"), "5");
    assert_eq!(value("user.timeout_direct"), "10");
    assert_eq!(value("user.nioerr"), "0");
    assert!(
        value("user.repo_counters").contains("subtree_regular"),
        "{o}"
    );
    assert!(
        value("user.catalog_counters").contains("self_regular"),
        "{o}"
    );
    assert!(value("user.pubkeys").contains("BEGIN PUBLIC KEY"), "{o}");
    assert!(value("user.rx").parse::<u64>().is_ok(), "{o}");
    assert!(value("user.speed").parse::<u64>().is_ok(), "{o}");
    assert!(value("user.maxfd").parse::<u64>().unwrap() > 0, "{o}");
    let list = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("list="))
        .unwrap();
    for (name, place) in &attrs {
        if place == "any" {
            assert!(
                list.split(',').any(|n| n == name),
                "{name} not listed on the root\n{o}"
            );
        }
    }
}
