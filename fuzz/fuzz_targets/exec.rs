//! `#!` lines and ELF `PT_INTERP`, read the way `perch run` reads an executable before exec:
//! the parsers of perch-vfs's `binfmt` module. The input is a file's content; it is also the head of every
//! interpreter in a `#!` chain whose names come from the data. Nothing panics, the `#!` line is
//! split like `fs/binfmt_script.c`, a chain stops within the kernel's depth, and `PT_INTERP`
//! is at most 4 KiB without a NUL.
#![no_main]
use perch_vfs::binfmt as exec;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(sb) = exec::shebang(data) {
        let blank = |b: &u8| *b == b' ' || *b == b'\t';
        assert!(!sb.interp.is_empty());
        assert!(!sb.interp.iter().any(|b| blank(b) || *b == b'\n' || *b == 0));
        if let Some(a) = &sb.arg {
            assert!(!a.is_empty() && !blank(&a[0]) && !blank(&a[a.len() - 1]));
            assert!(!a.contains(&b'\n') && !a.contains(&0));
        }
        assert!(sb.interp.len() + sb.arg.as_ref().map_or(0, Vec::len) < exec::BINPRM_BUF_SIZE);
        // Every interpreter "resolves" to a file whose head is a slice of the input chosen by
        // the interpreter's name, so chains of any shape come from the data.
        let head = |p: &std::path::Path| {
            let n = p.as_os_str().len() % data.len().max(1);
            data[n..].to_vec()
        };
        let resolve = |i: &[u8]| -> Result<Option<std::path::PathBuf>, ()> {
            if i.starts_with(b"/host") {
                return Ok(None);
            }
            Ok(Some(std::path::PathBuf::from(
                String::from_utf8_lossy(i).into_owned(),
            )))
        };
        match exec::script_chain(b"/cvmfs/x/script".to_vec(), sb, resolve, head) {
            Ok(c) => {
                assert!(c.prepend.len() >= 2 && c.prepend.len() <= 2 * exec::MAX_SCRIPT_DEPTH + 1);
                assert_eq!(c.prepend[0], c.name);
                assert_eq!(c.prepend.last().unwrap(), b"/cvmfs/x/script");
            }
            Err(exec::ChainError::TooDeep) => {}
            Err(exec::ChainError::Resolve(())) => unreachable!(),
        }
    }
    let p = perch_fuzz::scratch().join("exe");
    std::fs::write(&p, data).unwrap();
    if let Some(i) = exec::elf_interp(&p) {
        assert!(i.len() <= 4096 && !i.contains(&0));
    }
    if let Some((_, entsize, _)) = exec::elf_phdrs(data) {
        assert!(entsize >= 56);
        let _ = exec::elf_interp_segment(&data[data.len().min(64)..], entsize);
    }
});
