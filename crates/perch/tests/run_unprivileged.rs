//! No privileges means none: `perch run` as user 65534 with no capabilities
//! (`setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all`), on a cache that user
//! owns. When the tests do not run as root they already are unprivileged and run as they are.

mod run_common;

use run_common::{is_root, nobody, Fixtures, Out, Repo, PERCH};

/// In the default mode (fuse where 65534 may open /dev/fuse, else notify) and in ptrace mode.
#[test]
fn unprivileged_gvisor_rule_on_a_published_tree() {
    let mut r = Repo::standard();
    r.drop_privileges();
    for mode in [None, Some("ptrace")] {
        r.mode = mode;
        unprivileged_checks(&r);
    }
}

fn unprivileged_checks(r: &Repo) {
    let o = r.perch("id -u; grep CapEff /proc/self/status");
    o.ok();
    if is_root() {
        assert_eq!(o.stdout, "65534\nCapEff:\t0000000000000000\n", "{o}");
    }
    r.same("cd \"$ROOT\" && find . -mindepth 1 -printf '%M %n %s %T@ %P -> %l\\n' | sort");
    // sub/deep/private is 0600 and owned by root: unreadable for 65534 both ways.
    r.same("cd \"$ROOT\" && find . -type f -readable | sort | xargs sha1sum; cat sub/deep/private; echo $?");
    r.same("PYTHONPATH=\"$ROOT/lib/python\" python3 -c 'import pkg.mod; print(pkg.mod.f())'");
    r.same(
        "gcc -I\"$ROOT/include\" -o \"$WORK/prog\" \"$ROOT/src/main.c\" \"$ROOT/src/add.c\" && \"$WORK/prog\" && rm \"$WORK/prog\"",
    );
    r.same("cd \"$ROOT\" && ./bin/tool.sh a && LD_LIBRARY_PATH=lib64 bin/app");
    r.same("cd \"$ROOT/sub\" && pwd -P");
    // Natively 65534 gets EACCES in root's directory; a read-only mount answers EROFS first
    // (`mnt_want_write` before the permission check), as the real client's mount does.
    let o = r.perch("cd \"$ROOT/sub\" && touch x; mkdir y; true");
    assert_eq!(
        o.ok().stderr,
        "touch: cannot touch 'x': Read-only file system\nmkdir: cannot create directory 'y': Read-only file system\n"
    );
}

#[test]
fn unprivileged_manifest_check_of_the_fixtures() {
    let fx = Fixtures::new();
    if is_root() {
        std::os::unix::fs::chown(fx.dir.path().join("cache"), Some(65534), Some(65534)).unwrap();
    }
    let f = perch_testkit::fixtures_dir();
    for fqrn in ["tiny.example.org", "alt.example.org"] {
        let mut c = if is_root() {
            nobody(PERCH)
        } else {
            std::process::Command::new(PERCH)
        };
        let o: Out = c
            .args(fx.args())
            .args(["--", "python3"])
            .arg(f.join("tools/manifest.py"))
            .arg("check")
            .arg(f.join(format!("{fqrn}/MANIFEST.txt")))
            .arg(format!("/cvmfs/{fqrn}"))
            .current_dir("/")
            .output()
            .unwrap()
            .into();
        o.ok();
        assert!(o.stdout.contains(" passed, 0 failed"), "{o}");
    }
}
