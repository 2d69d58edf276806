//! Booting the linux-md oracle guest (the real kernel's md under qemu) on image files, with one
//! defence against the emulated machine itself failing.
//!
//! Three CI runs saw every `mdadm` of one guest boot die in the dynamic loader
//! (`segfault at 23c3e ... in ld-linux-x86-64.so.2`), on Linux-made fixtures that the next boot
//! of the same run, and every boot here, handled. The loader maps a program's libraries and
//! binds their symbols; a crash there, at one address for every program of a boot, is the
//! emulated machine failing, not a finding about the images. So [`boot`] keeps a copy of every image before the guest starts,
//! reads the guest's kernel log when its script ends, and when a process died in the loader it
//! puts the images back as they were and boots again, at most [`ATTEMPTS`] times in all. A crash
//! that comes back every time is reported like any other result (the caller's checks fail on
//! it); crashes anywhere else than the loader are never retried.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::string::String;
use std::sync::atomic::{AtomicU32, Ordering};
use std::vec::Vec;
use std::{eprintln, format};

/// Boots of one script in all, the first included.
pub const ATTEMPTS: u32 = 3;

/// What a guest's script sees first: on exit (however it exits; its status is kept) it prints
/// every kernel log line about a process killed by a segfault, each after [`SEGV_MARK`].
const PRELUDE: &str = "trap 'dmesg | grep \" segfault at \" | sed \"s/^/GUEST-SEGV /\"' EXIT\n";

/// The prefix of the kernel log lines (of processes killed by a segfault) that the guest prints
/// when its script ends.
pub const SEGV_MARK: &str = "GUEST-SEGV ";

/// One guest run: the last boot's output and how many boots it took.
pub struct Boot {
    /// What the oracle's `run` returned for the last boot (its stdout holds the script's
    /// output, then the lines after [`SEGV_MARK`]).
    pub output: Output,
    /// The script's output as text.
    pub stdout: String,
    /// The number of boots: 1 unless the loader crashed.
    pub attempts: u32,
}

/// The kernel log lines (from a guest's output) of processes that died in the dynamic loader:
/// the emulated machine's failure, not the images'.
pub fn loader_crashes(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(SEGV_MARK))
        .filter(|l| l.contains(" in ld-linux"))
        .collect()
}

/// Runs `script` with busybox `sh` in the guest that `runner` boots (the oracle's `run`, or a
/// wrapper of it, with its options already given) with `images` as `/dev/vda`, `/dev/vdb`, ...
/// Boots again on restored images while a process dies in the loader (see the module's text).
/// `runner` is called once per boot. Images that are not regular files (block devices) cannot
/// be put back: then there is one boot only.
pub fn boot(runner: &dyn Fn() -> Command, images: &[PathBuf], script: &str) -> Boot {
    static BOOTS: AtomicU32 = AtomicU32::new(0);
    let tag = format!(
        "raid1-guest-{}-{}",
        std::process::id(),
        BOOTS.fetch_add(1, Ordering::Relaxed)
    );
    let script_path = std::env::temp_dir().join(format!("{tag}.sh"));
    std::fs::write(&script_path, format!("{PRELUDE}{script}"))
        .unwrap_or_else(|e| panic!("write {}: {e}", script_path.display()));
    let retryable = images
        .iter()
        .all(|p| p.metadata().is_ok_and(|m| m.is_file()));
    let copies: Vec<PathBuf> = if retryable {
        images
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut name = OsString::from(p.as_os_str());
                name.push(format!(".{tag}-{i}.orig"));
                let copy = PathBuf::from(name);
                sparse_copy(p, &copy);
                copy
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut attempts = 0;
    let result = loop {
        attempts += 1;
        let output = runner()
            .args(images)
            .arg("--")
            .arg(&script_path)
            .stdin(Stdio::null())
            .output()
            .expect("run the linux-md oracle");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let crashes = loader_crashes(&stdout);
        if crashes.is_empty() || !retryable || attempts == ATTEMPTS {
            if !crashes.is_empty() {
                eprintln!(
                    "WARNING guest: processes died in the dynamic loader on all {attempts} boots:\n{}",
                    crashes.join("\n")
                );
            }
            break Boot {
                output,
                stdout,
                attempts,
            };
        }
        eprintln!(
            "WARNING guest: {} process(es) died in the dynamic loader while binding their \
             libraries: the emulated machine failing, not the images. Booting again on the images \
             as they were (boot {} of at most {ATTEMPTS}). First:\n{}",
            crashes.len(),
            attempts + 1,
            crashes[0]
        );
        for (p, copy) in images.iter().zip(&copies) {
            sparse_copy(copy, p);
        }
    };
    for copy in &copies {
        let _ = std::fs::remove_file(copy);
    }
    let _ = std::fs::remove_file(&script_path);
    result
}

/// Copies `from` over `to`, keeping holes (the images are mostly sparse).
fn sparse_copy(from: &Path, to: &Path) {
    let out = Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .output()
        .expect("run cp");
    assert!(
        out.status.success(),
        "cp {} {}: {}",
        from.display(),
        to.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of the CI run that failed (2026-12-05) count; a crash in a program's own code,
    /// and a mention of the loader outside the kernel's lines, do not.
    #[test]
    fn only_loader_segfaults_count() {
        let log = "R md0 assemble=139\n\
            GUEST-SEGV [    7.053948] mdadm[96]: segfault at 23c3e ip 00007f418ae12355 sp \
            00007fffe3797e10 error 4 in ld-linux-x86-64.so.2[7f418ae05000+26000] likely on CPU 0\n\
            GUEST-SEGV [    9.1] mdadm[99]: segfault at 0 ip 000055d0c1a0b2c4 sp 00007ffd error 4 \
            in mdadm[55d0c1a00000+7c000] likely on CPU 0\n\
            [    9.2] mdadm[100]: segfault at 0 ip 0 error 4 in ld-linux-x86-64.so.2[0+1]\n";
        let c = loader_crashes(log);
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(c[0].starts_with("[    7.053948] mdadm[96]"));
    }
}
