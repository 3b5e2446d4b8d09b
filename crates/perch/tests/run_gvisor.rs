//! The gVisor rule: real programs natively on a directory tree and under `perch run` on the same
//! tree published as a repository give the same output, in every mode.

mod run_common;

use run_common::each_mode;

/// Drop the lines about the top directory itself (`.` of the top and every `..`: the root's
/// mtime is the publication time, its parent differs by nature) and the `total` block counts (the client reports `1 + size/512`).
const LS_FILTER: &str = "awk 'BEGIN{top=1} /^$/{top=0} /^total /{next} $NF==\"..\"{next} top && $NF==\".\"{next} {$3=\"\"; $4=\"\"; print}'";

#[test]
fn find_listing_matches_native() {
    each_mode(|r| {
        // The root's own mtime is the publication time: list below it.
        r.same("cd \"$ROOT\" && find . -mindepth 1 -printf '%M %n %s %T@ %P -> %l\\n' | sort");
        r.same("cd \"$ROOT\" && find . -mindepth 1 -ls | awk '{$1=$2=$5=$6=\"\"; print}' | sort");
    });
}

#[test]
fn ls_la_recursive_matches_native() {
    each_mode(|r| {
        r.same(&format!(
            "cd \"$ROOT\" && ls -laR --time-style=+%s . | {LS_FILTER}"
        ));
        r.same("ls -la --time-style=+%s \"$ROOT/sub\" \"$ROOT/sub/link.h\" | awk '/^total /{next} $NF==\"..\"{next} {$3=$4=\"\"; print}'");
    });
}

#[test]
fn tar_du_and_sha1sum_match_native() {
    each_mode(|r| {
        r.same("cd \"$ROOT\" && find . -mindepth 1 | sort | tar c --owner=0 --group=0 --no-recursion -T - | sha1sum");
        r.same("cd \"$ROOT\" && find . -type f | sort | xargs sha1sum");
        r.same("cd \"$ROOT\" && du -ab . | grep -v '\t\\.$' | sort -k2");
        r.same(
            "cat \"$ROOT/sub/link.h\" \"$ROOT/sub/dirlink/file.txt\" && wc -c \"$ROOT/bin/mysh\"",
        );
    });
}

#[test]
fn cp_a_out_of_cvmfs_keeps_modes_and_mtimes() {
    each_mode(|r| {
        r.same(
        "rm -rf \"$WORK/copy\" && cp -a \"$ROOT/sub\" \"$WORK/copy\" && cd \"$WORK/copy\" && \
         find . -printf '%M %s %T@ %P -> %l\\n' | sort && cat deep/private && rm -rf \"$WORK/copy\"",
    );
    });
}

#[test]
fn bash_sources_files_from_cvmfs() {
    each_mode(|r| {
        let o = r.same(
        "bash -c '. \"$ROOT/lib/env.sh\"; echo $GREETING_VAR $MORE_VAR; source \"$ROOT/lib/more.sh\"; echo ok'",
    );
        assert_eq!(o.stdout, "sourced more\nok\n");
    });
}

#[test]
fn python_imports_a_package_from_cvmfs() {
    each_mode(|r| {
        let o = r.same(
        "PYTHONPATH=\"$ROOT/lib/python\" python3 -c 'import pkg, pkg.mod, json; print(pkg.x, pkg.mod.f(), pkg.__file__.endswith(\"pkg/__init__.py\"))'",
    );
        assert_eq!(o.stdout, "42 pkg.f pkg True\n");
        // With a bytecode cache written elsewhere.
        r.same(
        "PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX=\"$WORK/pyc\" PYTHONPATH=\"$ROOT/lib/python\" \
         python3 -c 'import pkg.mod; print(pkg.mod.f())' && find \"$WORK/pyc\" -name '*.pyc' | wc -l && rm -rf \"$WORK/pyc\"",
    );
    });
}

#[test]
fn gcc_compiles_sources_and_headers_from_cvmfs() {
    each_mode(|r| {
        let o = r.same(
        "gcc -I\"$ROOT/include\" -o \"$WORK/prog\" \"$ROOT/src/main.c\" \"$ROOT/src/add.c\" && \"$WORK/prog\" && rm \"$WORK/prog\"",
    );
        assert_eq!(o.stdout, "hello from cvmfs 5\n");
    });
}

#[test]
fn make_j2_builds_a_project_from_cvmfs_into_a_writable_dir() {
    each_mode(|r| {
        let o = r.same(
        "rm -rf \"$WORK/build\" && mkdir \"$WORK/build\" && cd \"$WORK/build\" && \
         make -s -j2 -f \"$ROOT/Makefile\" SRC=\"$ROOT\" >/dev/null && ./out/prog && cd .. && rm -rf build",
    );
        assert_eq!(o.stdout, "hello from cvmfs 5\n");
    });
}

#[test]
fn executes_scripts_and_binaries_stored_in_cvmfs() {
    each_mode(|r| {
        let o = r.same("cd \"$ROOT\" && ./bin/tool.sh a b && cd bin && ./tool.sh c");
        assert_eq!(o.stdout, "tool a b\nmore\ntool c\nmore\n");
        let o = r.same(
            "LD_LIBRARY_PATH=\"$ROOT/lib64\" \"$ROOT/bin/app\" libplugin.so \"$ROOT/src/main.c\"",
        );
        assert_eq!(o.stdout, "lib 7 plugin-ok mmap #inclu\n");
        r.same("cd \"$ROOT/bin\" && LD_LIBRARY_PATH=../lib64 ./app \"$ROOT/lib64/libplugin.so\" ../include/hello.h");
        r.same("LD_LIBRARY_PATH=\"$ROOT/lib64\" ldd \"$ROOT/bin/app\" | grep -o 'lib[a-z]*\\.so[^ ]* => [^ ]*' | sort");
    });
}

#[test]
fn cwd_in_cvmfs_shows_cvmfs_paths() {
    each_mode(|r| {
        let o = r.perch(
            "cd \"$ROOT/sub/deep\" && pwd && pwd -P && readlink /proc/self/cwd && \
         python3 -c 'import os; print(os.getcwd())' && cd .. && ls && cd dirlink && pwd -P && \
         exec 3<\"$ROOT/empty\" && readlink /proc/self/fd/3 /dev/fd/3",
        );
        o.ok();
        let m = r.mount();
        assert_eq!(
        o.stdout,
        format!(
            "{m}/sub/deep\n{m}/sub/deep\n{m}/sub/deep\n{m}/sub/deep\ndeep\ndirlink\nlink.h\n{m}/sub/deep/deeper\n{m}/empty\n{m}/empty\n"
        ),
        "{o}"
    );
        // /proc/self/exe of a program run from the repository.
        let o = r.perch("cd \"$ROOT/bin\" && ./mysh -c 'readlink /proc/$$/exe'");
        assert_eq!(o.ok().stdout, format!("{m}/bin/mysh\n"));
    });
}

#[test]
fn shebang_and_elf_interpreters_in_cvmfs() {
    each_mode(|r| {
        let m = r.mount();
        // `#!/cvmfs/.../bin/mysh -e`: the kernel could not open that interpreter itself.
        let o = r.perch("\"$ROOT/bin/via-mysh\" x y && cd \"$ROOT/bin\" && ./via-mysh z");
        assert_eq!(
            o.ok().stdout,
            format!("via-mysh {m}/bin/via-mysh x y\nvia-mysh ./via-mysh z\n")
        );
        // PT_INTERP in the repository.
        let o = r.perch("\"$ROOT/bin/interp-app\"");
        assert_eq!(o.ok().stdout, "hello from cvmfs 5\n");
    });
}

#[test]
fn writes_into_cvmfs_fail_with_erofs() {
    each_mode(|r| {
        let o = r.perch(
        "cd \"$ROOT\"; touch new; touch empty; mkdir d; rm empty; rmdir sub; ln -s x y; mv empty e2; \
         chmod 777 empty; echo x >> empty; mv \"$WORK/../client.conf\" .; true",
    );
        o.ok();
        let lines: Vec<&str> = o.stderr.lines().collect();
        assert_eq!(lines.len(), 10, "{o}");
        for l in &lines {
            assert!(
                l.contains("Read-only file system") || l.contains("cross-device"),
                "{o}"
            );
        }
        // The stat family sees a read-only file system.
        let o = r.perch("stat -f -c '%T' \"$ROOT\" && python3 -c 'import os,sys; print(os.statvfs(sys.argv[1]).f_flag & 1)' \"$ROOT\"");
        assert_eq!(o.ok().stdout, "fuseblk\n1\n");
    });
}
