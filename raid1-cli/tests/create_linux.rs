//! The real Linux kernel accepts what `raid1 create` writes.
//!
//! Nine arrays (metadata 1.0, 1.1 and 1.2; internal bitmap and none; 2 and 3 mirrors; a spare;
//! a degraded one with `missing`; members of different sizes; `--assume-clean` and not) are
//! created on image files, then one boot of Debian's kernel under qemu (the linux-md oracle,
//! `../shared/linux-md/run` beside the repository) attaches all images at once and, for each
//! array: `mdadm --assemble` must succeed, `mdadm --detail` must show the expected devices and
//! a clean state after `mdadm --wait`, the kernel must have resynced exactly the arrays created
//! without `--assume-clean` (that have a second mirror), data written through /dev/mdN must read
//! back, and a `check` must count 0 mismatches — the resynced arrays' members held different
//! bytes before create, and a negative control (`--assume-clean` over differing members) must
//! show mismatches. After the guest stopped the arrays, host mdadm
//! must find every superblock clean with events advanced, and `raid1 examine` must agree.
//!
//! The oracle must be set up (`../shared/linux-md/setup`); a missing oracle is a failure.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const RAID1: &str = env!("CARGO_BIN_EXE_raid1");
const MIB: u64 = 1 << 20;

/// One array of the test.
struct Case {
    /// Options for `raid1 create` (before the devices).
    options: &'static [&'static str],
    /// Member sizes in MiB; `None` = `missing`.
    members: &'static [Option<u64>],
    /// Expected `mdadm --detail` counts: active, working, spare.
    active: u32,
    spare: u32,
    /// Whether the kernel must resync it when it first runs.
    resync: bool,
    /// Whether it runs degraded (assembled with --run, not checked).
    degraded: bool,
    /// Whether the members get different bytes at 4 MiB before create (so that only a real
    /// resync makes them agree; on an `--assume-clean` array the check must then find them).
    scribble: bool,
}

const CASES: [Case; 9] = [
    Case {
        options: &["-e", "1.0"],
        members: &[Some(16), Some(16)],
        active: 2,
        spare: 0,
        resync: true,
        degraded: false,
        scribble: true,
    },
    Case {
        options: &["-e", "1.0", "-b", "none", "--assume-clean"],
        members: &[Some(16), Some(16), Some(16)],
        active: 3,
        spare: 0,
        resync: false,
        degraded: false,
        scribble: false,
    },
    Case {
        options: &["-e", "1.1", "--assume-clean"],
        members: &[Some(16), Some(16), Some(16)],
        active: 3,
        spare: 0,
        resync: false,
        degraded: false,
        scribble: false,
    },
    Case {
        options: &["-e", "1.1", "-b", "none"],
        members: &[Some(16), Some(16)],
        active: 2,
        spare: 0,
        resync: true,
        degraded: false,
        scribble: true,
    },
    Case {
        options: &["-x", "1"],
        members: &[Some(16), Some(16), Some(16)],
        active: 2,
        spare: 1,
        resync: true,
        degraded: false,
        scribble: true,
    },
    Case {
        options: &["-b", "none", "--assume-clean", "--name", "plain"],
        members: &[Some(16), Some(16)],
        active: 2,
        spare: 0,
        resync: false,
        degraded: false,
        scribble: false,
    },
    Case {
        options: &[],
        members: &[Some(16), None],
        active: 1,
        spare: 0,
        resync: false,
        degraded: true,
        scribble: false,
    },
    Case {
        options: &["--force"],
        members: &[Some(20), Some(16)],
        active: 2,
        spare: 0,
        resync: true,
        degraded: false,
        scribble: true,
    },
    // Negative control: --assume-clean over members that differ: check must count mismatches.
    Case {
        options: &["-b", "none", "--assume-clean"],
        members: &[Some(16), Some(16)],
        active: 2,
        spare: 0,
        resync: false,
        degraded: false,
        scribble: true,
    },
];

fn oracle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/linux-md/run")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The guest script: one block per array, printing `mdN key=value` lines.
fn guest_script(devices: &[Vec<Option<String>>]) -> String {
    let mut s = String::from(
        "dd if=/dev/urandom of=/tmp/p bs=64k count=16 2>/dev/null\n\
         line() { echo \"R $*\"; }\n",
    );
    for (n, devs) in devices.iter().enumerate() {
        let present: Vec<&str> = devs.iter().flatten().map(String::as_str).collect();
        let run = if present.len() < devs.len() {
            "--run "
        } else {
            ""
        };
        s += &format!(
            "mdadm --assemble /dev/md{n} {run}{} >/tmp/asm 2>&1; line md{n} assemble=$?; \
             cat /tmp/asm\n",
            present.join(" ")
        );
    }
    let all: Vec<String> = (0..devices.len()).map(|n| format!("/dev/md{n}")).collect();
    s += &format!(
        "cat /proc/mdstat\nmdadm --wait {} >/dev/null 2>&1\n",
        all.join(" ")
    );
    s += "sleep 1\n";
    for (n, devs) in devices.iter().enumerate() {
        let degraded = devs.iter().any(Option::is_none);
        s += &format!(
            "d=/sys/block/md{n}/md\n\
             line md{n} resynced=$(dmesg | grep -c 'resync of RAID array md{n}$')\n\
             mdadm --detail /dev/md{n} > /tmp/detail\n\
             line md{n} state=$(grep ' State :' /tmp/detail | sed 's/.*: //; s/ *$//; s/ /_/g')\n\
             line md{n} active=$(grep 'Active Devices' /tmp/detail | sed 's/.*: //')\n\
             line md{n} spare=$(grep 'Spare Devices' /tmp/detail | sed 's/.*: //')\n\
             line md{n} version=$(grep 'Version' /tmp/detail | sed 's/.*: //')\n\
             line md{n} bytes=$(blockdev --getsize64 /dev/md{n})\n\
             end=$(( $(blockdev --getsize64 /dev/md{n}) / 65536 - 16 ))\n\
             for at in 0 $end; do\n\
               dd if=/tmp/p of=/dev/md{n} bs=64k seek=$at conv=fsync 2>/dev/null\n\
             done\n\
             echo 3 > /proc/sys/vm/drop_caches\n\
             ok=yes\n\
             for at in 0 $end; do\n\
               dd if=/dev/md{n} of=/tmp/r bs=64k skip=$at count=16 2>/dev/null\n\
               cmp -s /tmp/p /tmp/r || ok=no\n\
             done\n\
             line md{n} data=$ok\n"
        );
        if !degraded {
            s += "echo check > $d/sync_action\n";
        }
    }
    for (n, devs) in devices.iter().enumerate() {
        if devs.iter().any(Option::is_none) {
            continue;
        }
        s += &format!(
            "d=/sys/block/md{n}/md\n\
             while [ \"$(cat $d/sync_action)\" != idle ]; do sleep 0.2; done\n\
             line md{n} checked=$(dmesg | grep -c 'data-check of RAID array md{n}$') \
             mismatch=$(cat $d/mismatch_cnt)\n"
        );
    }
    s
}

#[test]
fn linux_assembles_resyncs_and_checks_created_arrays() {
    let oracle = oracle();
    assert!(
        oracle.exists(),
        "the linux-md oracle is missing at {}",
        oracle.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let letters = "abcdefghijklmnopqrstuvwxyz".as_bytes();
    let mut images: Vec<PathBuf> = Vec::new();
    let mut guest_devices: Vec<Vec<Option<String>>> = Vec::new();
    for (n, case) in CASES.iter().enumerate() {
        let mut args: Vec<String> = ["create", "-l", "1", "--homehost", "mdoracle"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let slots = case.members.len() as u32 - case.spare;
        args.extend(["-n".to_string(), slots.to_string()]);
        args.extend(case.options.iter().map(|s| s.to_string()));
        let mut devs = Vec::new();
        for (i, m) in case.members.iter().enumerate() {
            match m {
                Some(mib) => {
                    let p = dir.path().join(format!("md{n}-{i}.img"));
                    let f = File::create(&p).unwrap();
                    f.set_len(mib * MIB).unwrap();
                    if case.scribble {
                        let bytes: Vec<u8> = (0..MIB)
                            .map(|k| (k.wrapping_mul(2654435761) >> (8 + i)) as u8)
                            .collect();
                        f.write_all_at(&bytes, 4 * MIB).unwrap();
                    }
                    args.push(p.to_str().unwrap().to_string());
                    devs.push(Some(format!("/dev/vd{}", letters[images.len()] as char)));
                    images.push(p);
                }
                None => {
                    args.push("missing".to_string());
                    devs.push(None);
                }
            }
        }
        let out = Command::new(RAID1).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "raid1 {args:?}: {}",
            text(&out.stderr)
        );
        guest_devices.push(devs);
    }
    assert!(images.len() <= letters.len());
    let script = guest_script(&guest_devices);
    let script_path = dir.path().join("script.sh");
    std::fs::write(&script_path, &script).unwrap();

    let started = Instant::now();
    let out = Command::new(&oracle)
        .args(&images)
        .arg("--")
        .arg(&script_path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", oracle.display()));
    let elapsed = started.elapsed();
    let log = text(&out.stdout);
    eprintln!("guest ran {:.1} s:\n{log}", elapsed.as_secs_f64());
    assert!(
        out.status.success(),
        "guest failed ({:?}): {}",
        out.status,
        text(&out.stderr)
    );
    let mut facts: BTreeMap<(String, String), String> = BTreeMap::new();
    for line in log.lines().filter_map(|l| l.strip_prefix("R ")) {
        let mut words = line.split_whitespace();
        let md = words.next().unwrap().to_string();
        for kv in words {
            if let Some((k, v)) = kv.split_once('=') {
                facts.insert((md.clone(), k.to_string()), v.to_string());
            }
        }
    }
    let fact = |md: &str, k: &str| -> String {
        facts
            .get(&(md.to_string(), k.to_string()))
            .cloned()
            .unwrap_or_else(|| panic!("guest did not report {md} {k}"))
    };
    for (n, case) in CASES.iter().enumerate() {
        let md = format!("md{n}");
        let what = format!("{md} {:?} {:?}", case.options, case.members);
        assert_eq!(fact(&md, "assemble"), "0", "{what}: mdadm --assemble");
        let state = fact(&md, "state");
        if case.degraded {
            assert!(state.contains("degraded"), "{what}: state {state}");
        } else {
            assert_eq!(state, "clean", "{what}");
        }
        assert_eq!(fact(&md, "active"), case.active.to_string(), "{what}");
        assert_eq!(fact(&md, "spare"), case.spare.to_string(), "{what}");
        let version = case
            .options
            .windows(2)
            .find(|w| w[0] == "-e")
            .map_or("1.2", |w| w[1]);
        assert_eq!(fact(&md, "version"), version, "{what}");
        let smallest = case.members.iter().flatten().min().unwrap() * MIB;
        let bytes: u64 = fact(&md, "bytes").parse().unwrap();
        let expected = if version == "1.0" {
            // (dev - 8..12 KiB superblock - 4 KiB bitmap space - 4 KiB bad-block log) & !64 KiB
            (smallest - 32 * 512) & !(64 * 1024 - 1)
        } else {
            smallest - MIB
        };
        assert_eq!(bytes, expected, "{what}: array size");
        assert_eq!(
            fact(&md, "resynced"),
            if case.resync { "1" } else { "0" },
            "{what}: initial resync"
        );
        assert_eq!(fact(&md, "data"), "yes", "{what}: data read back");
        if !case.degraded {
            assert_eq!(fact(&md, "checked"), "1", "{what}: check ran");
            let mismatch: u64 = fact(&md, "mismatch").parse().unwrap();
            if case.scribble && !case.resync {
                assert!(mismatch > 0, "{what}: check missed the differing members");
            } else {
                assert_eq!(mismatch, 0, "{what}: mismatch_cnt");
            }
        }
    }

    // After the guest's clean stop: clean superblocks with advanced events, read alike by
    // mdadm and raid1.
    for img in &images {
        let p = img.to_str().unwrap();
        let m = Command::new("mdadm")
            .args(["--examine", p])
            .env("TZ", "UTC")
            .output()
            .expect("mdadm");
        let r = Command::new(RAID1)
            .args(["examine", p])
            .env("TZ", "UTC")
            .output()
            .unwrap();
        let mt = text(&m.stdout);
        assert!(m.status.success(), "{p}: {}", text(&m.stderr));
        assert_eq!(text(&r.stdout), mt, "{p}: raid1 examine differs from mdadm");
        assert!(mt.contains("          State : clean\n"), "{p}:\n{mt}");
        let events: u64 = mt
            .lines()
            .find_map(|l| l.strip_prefix("         Events : "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(events > 0, "{p}: events {events}");
    }
    eprintln!(
        "{} arrays, {} images, one boot: {:.1} s",
        CASES.len(),
        images.len(),
        elapsed.as_secs_f64()
    );
}
