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
//! A second boot proves the bytes: `mdadm --create --readonly` in the guest (the kernel then
//! leaves mdadm's superblocks untouched) on images of the same sizes as eight `raid1 create`
//! runs (1.0/1.1/1.2, bitmap or not, spare, `missing`, mixed sizes, `--assume-clean`, name and
//! home host); the images must be equal byte for byte outside the UUIDs, times and checksums.
//! The same boot makes an old 0.90 array: create must refuse it by name, zero-superblock remove it.
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

const CASES: [Case; 10] = [
    // mdadm's --size, --bitmap-chunk, --delay and --data-offset: Linux assembles and resyncs
    // 8 MiB of each 16 MiB member, from 2 MiB in, with its 256 KiB chunks.
    Case {
        options: &[
            "-e",
            "1.2",
            "--size=8M",
            "--force",
            "--bitmap-chunk=256K",
            "--delay=2",
            "--data-offset=2M",
        ],
        members: &[Some(16), Some(16)],
        active: 2,
        spare: 0,
        resync: true,
        degraded: false,
        scribble: true,
    },
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

/// Boots the linux-md oracle on `images` and runs `script` (raid1-testkit's runner: booted
/// again on the images as they were if the emulated machine's loader crashes).
fn guest(images: &[PathBuf], script: &str) -> raid1_testkit::guest::Boot {
    let oracle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/linux-md/run");
    assert!(
        oracle.exists(),
        "the linux-md oracle is missing at {}",
        oracle.display()
    );
    raid1_testkit::guest::boot(&|| Command::new(&oracle), images, script)
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

    let started = Instant::now();
    let g = guest(&images, &script);
    let out = g.output;
    let elapsed = started.elapsed();
    let log = g.stdout;
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
        let asked = case.options.iter().find_map(|o| {
            o.strip_prefix("--size=")
                .and_then(|m| m.strip_suffix('M'))
                .map(|m| m.parse::<u64>().unwrap() * MIB)
        });
        let expected = if let Some(asked) = asked {
            asked
        } else if version == "1.0" {
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
    // mdadm and raid1. md does not rewrite spares on a pure clean/dirty transition (they may lag
    // by one event), so a spare is clean, or still active and exactly one event behind the
    // in-sync members of its array, depending on when the last write happened.
    let mut members: Vec<(String, bool, bool, u64, String)> = Vec::new(); // array, spare, clean, events, path
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
        let events: u64 = mt
            .lines()
            .find_map(|l| l.strip_prefix("         Events : "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(events > 0, "{p}: events {events}");
        let spare = mt.contains("   Device Role : spare\n");
        let clean = mt.contains("          State : clean\n");
        assert!(
            clean || mt.contains("          State : active\n"),
            "{p}:\n{mt}"
        );
        let file = img.file_name().unwrap().to_str().unwrap();
        let array = file.split('-').next().unwrap().to_string();
        members.push((array, spare, clean, events, format!("{p}:\n{mt}")));
    }
    for (array, spare, clean, events, report) in &members {
        if !spare {
            assert!(clean, "in-sync member not clean after the stop: {report}");
            continue;
        }
        if !clean {
            let in_sync_events = members
                .iter()
                .filter(|m| &m.0 == array && !m.1)
                .map(|m| m.3)
                .max()
                .expect("an in-sync member in the array");
            assert_eq!(
                events + 1,
                in_sync_events,
                "an active spare must be exactly one event behind: {report}"
            );
        }
    }
    eprintln!(
        "{} arrays, {} images, one boot: {:.1} s",
        CASES.len(),
        images.len(),
        elapsed.as_secs_f64()
    );
}

/// One `mdadm --create` / `raid1 create` pair for the byte comparison.
struct Twin {
    /// Options common to both (mdadm spelling, which raid1 accepts too), before the devices.
    options: &'static [&'static str],
    /// Slots.
    slots: u32,
    /// Member sizes in MiB; `None` = `missing`.
    members: &'static [Option<u64>],
}

const TWINS: [Twin; 10] = [
    Twin {
        options: &[
            "--metadata=1.0",
            "--bitmap=internal",
            "--size=8M",
            "--force",
        ],
        slots: 2,
        members: &[Some(16), Some(16)],
    },
    Twin {
        options: &[
            "--metadata=1.2",
            "--bitmap=internal",
            "--size=10000",
            "--force",
            "--data-offset=2M",
        ],
        slots: 2,
        members: &[Some(16), Some(20)],
    },
    Twin {
        options: &[
            "--metadata=1.0",
            "--bitmap=internal",
            "--delay=2",
            "--bitmap-chunk=1M",
        ],
        slots: 2,
        members: &[Some(16), Some(16)],
    },
    Twin {
        options: &["--metadata=1.1", "--bitmap=none", "--data-offset=64K"],
        slots: 3,
        members: &[Some(16), Some(16), Some(16)],
    },
    Twin {
        options: &[
            "--metadata=1.2",
            "--bitmap=internal",
            "--spare-devices=1",
            "--bitmap-chunk=64K",
        ],
        slots: 2,
        members: &[Some(16), Some(16), Some(16)],
    },
    Twin {
        options: &["--metadata=1.2", "--bitmap=none"],
        slots: 2,
        members: &[Some(16), None],
    },
    Twin {
        options: &["--metadata=1.2", "--bitmap=internal", "--force"],
        slots: 2,
        members: &[Some(20), Some(16)],
    },
    Twin {
        options: &["--metadata=1.0", "--bitmap=none", "--force"],
        slots: 2,
        members: &[Some(24), Some(16)],
    },
    Twin {
        options: &["--metadata=1.2", "--bitmap=internal", "--assume-clean"],
        slots: 2,
        members: &[Some(16), Some(16)],
    },
    Twin {
        options: &[
            "--metadata=1.1",
            "--bitmap=internal",
            "--name=fixture",
            "--homehost=fixturehost",
        ],
        slots: 2,
        members: &[Some(40), Some(40)],
    },
];

/// Superblock bytes that must differ between two creates: set_uuid, ctime, device_uuid, utime,
/// sb_csum (random or time-dependent); and the bitmap header's uuid.
const SB_RANDOM: [(u64, u64); 5] = [(16, 32), (64, 72), (168, 184), (192, 200), (216, 220)];
const BITMAP_RANDOM: (u64, u64) = (8, 24);

fn examine_value(img: &Path, label: &str) -> Option<String> {
    let out = Command::new("mdadm")
        .arg("--examine")
        .arg(img)
        .output()
        .unwrap();
    text(&out.stdout)
        .lines()
        .find_map(|l| l.split_once(" : ").filter(|(k, _)| k.trim() == label))
        .map(|(_, v)| v.trim().to_string())
}

/// `mdadm --create --readonly` in the guest leaves the metadata exactly as mdadm wrote it (the
/// kernel does not update a read-only array's superblocks: events stay 0). What `raid1 create`
/// writes for devices of the same sizes must equal it byte for byte, everywhere on the device,
/// except the random and time fields.
#[test]
fn mdadm_create_writes_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let letters = "abcdefghijklmnopqrstuvwxyz".as_bytes();
    let mut mdadm_images: Vec<PathBuf> = Vec::new();
    let mut pairs: Vec<(usize, PathBuf, PathBuf)> = Vec::new();
    let mut script = String::new();
    for (n, twin) in TWINS.iter().enumerate() {
        let mut guest = Vec::new();
        let mut ours: Vec<String> = vec![
            "create".into(),
            "--level=1".into(),
            format!("--raid-devices={}", twin.slots),
        ];
        // mdadm's defaults in the guest: home host "mdoracle", name from /dev/mdN.
        if !twin.options.iter().any(|o| o.starts_with("--name")) {
            ours.extend(["--homehost=mdoracle".to_string(), format!("--name={n}")]);
        }
        ours.extend(twin.options.iter().map(|s| s.to_string()));
        for (i, m) in twin.members.iter().enumerate() {
            match m {
                Some(mib) => {
                    let a = dir.path().join(format!("mdadm{n}-{i}.img"));
                    let b = dir.path().join(format!("raid1{n}-{i}.img"));
                    for p in [&a, &b] {
                        File::create(p).unwrap().set_len(mib * MIB).unwrap();
                    }
                    guest.push(format!("/dev/vd{}", letters[mdadm_images.len()] as char));
                    ours.push(b.to_str().unwrap().to_string());
                    mdadm_images.push(a.clone());
                    pairs.push((n, a, b));
                }
                None => {
                    guest.push("missing".into());
                    ours.push("missing".into());
                }
            }
        }
        let out = Command::new(RAID1).args(&ours).output().unwrap();
        assert!(
            out.status.success(),
            "raid1 {ours:?}: {}",
            text(&out.stderr)
        );
        // mdadm has no --force for sizes (--run accepts the oddity); --name/--homehost as given.
        let options: Vec<&str> = twin
            .options
            .iter()
            .copied()
            .filter(|o| *o != "--force")
            .collect();
        script += &format!(
            "mdadm --create /dev/md{n} --level=1 --raid-devices={} {} --readonly --run {} \
             >/tmp/out 2>&1 || {{ cat /tmp/out; echo FAILED md{n}; }}\n\
             mdadm --stop /dev/md{n} >/dev/null 2>&1\n",
            twin.slots,
            options.join(" "),
            guest.join(" ")
        );
    }
    // Two members of an old 0.90 array, for the 0.90 detection of create and zero-superblock.
    let old: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("v090-{i}.img")))
        .collect();
    let mut old_guest = Vec::new();
    for p in &old {
        File::create(p).unwrap().set_len(16 * MIB).unwrap();
        old_guest.push(format!("/dev/vd{}", letters[mdadm_images.len()] as char));
        mdadm_images.push(p.clone());
    }
    script += &format!(
        "mdadm --create /dev/md90 --metadata=0.90 --level=1 --raid-devices=2 --readonly --run \
         {} >/tmp/out 2>&1 || {{ cat /tmp/out; echo FAILED md90; }}\n\
         mdadm --stop /dev/md90 >/dev/null 2>&1\n",
        old_guest.join(" ")
    );
    assert!(mdadm_images.len() <= letters.len());
    let started = Instant::now();
    let g = guest(&mdadm_images, &script);
    let out = g.output;
    let log = g.stdout;
    eprintln!("guest ran {:.1} s:\n{log}", started.elapsed().as_secs_f64());
    assert!(
        out.status.success() && !log.contains("FAILED"),
        "guest: {log}{}",
        text(&out.stderr)
    );

    for (twin, a, b) in &pairs {
        assert_eq!(
            examine_value(a, "Events").as_deref(),
            Some("0"),
            "{}: kernel wrote",
            a.display()
        );
        let sb: u64 = examine_value(b, "Super Offset")
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        let bitmap: Option<i64> = examine_value(b, "Internal Bitmap")
            .and_then(|v| v.split_whitespace().next()?.parse().ok());
        let mut allowed: Vec<(u64, u64)> = SB_RANDOM
            .iter()
            .map(|(s, e)| (sb * 512 + s, sb * 512 + e))
            .collect();
        let x = std::fs::read(a).unwrap();
        let y = std::fs::read(b).unwrap();
        if let Some(off) = bitmap {
            let base = (sb as i64 + off) as u64 * 512;
            allowed.push((base + BITMAP_RANDOM.0, base + BITMAP_RANDOM.1));
            if TWINS[*twin].options.contains(&"--assume-clean") {
                // The kernel clears the chunk bits of a clean array when it stops it, even a
                // read-only one (superblock untouched). mdadm wrote them set, as raid1 does.
                let bits = Command::new(RAID1)
                    .arg("examine-bitmap")
                    .arg(b)
                    .output()
                    .unwrap();
                let chunks: u64 = text(&bits.stdout)
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("Bitmap : "))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
                    .expect("raid1 examine-bitmap prints the bit count");
                let bits = (base + 256, base + 256 + chunks.div_ceil(8));
                assert!(
                    y[bits.0 as usize..bits.1 as usize]
                        .iter()
                        .all(|&v| v == 0xFF),
                    "{}: raid1 create must set every bit",
                    b.display()
                );
                allowed.push(bits);
            }
        }
        assert_eq!(x.len(), y.len());
        let differing: Vec<u64> = (0..x.len())
            .filter(|&i| x[i] != y[i])
            .map(|i| i as u64)
            .filter(|&i| !allowed.iter().any(|(s, e)| (*s..*e).contains(&i)))
            .collect();
        assert!(
            differing.is_empty(),
            "{} vs {}: {} bytes differ outside the random fields, first at {:?}",
            a.display(),
            b.display(),
            differing.len(),
            &differing[..differing.len().min(16)]
        );
        // The random fields really are there (not both zero).
        assert_ne!(
            x[(sb * 512 + 16) as usize..(sb * 512 + 32) as usize],
            [0u8; 16]
        );
    }
    // 0.90: create refuses it by name; zero-superblock removes it as mdadm would.
    let (o0, o1) = (old[0].to_str().unwrap(), old[1].to_str().unwrap());
    assert_eq!(
        examine_value(&old[0], "Version").as_deref(),
        Some("0.90.00")
    );
    let out = Command::new(RAID1)
        .args(["create", "-l", "1", "-n", "2", o0, o1])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("{o0}: holds an md 0.90 superblock")),
        "{}",
        text(&out.stderr)
    );
    let out = Command::new(RAID1)
        .args(["zero-superblock", o0])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = Command::new("mdadm")
        .args(["--examine", o0])
        .output()
        .unwrap();
    assert!(
        text(&m.stderr).contains("No md superblock detected"),
        "{}{}",
        text(&m.stdout),
        text(&m.stderr)
    );
    eprintln!(
        "{} member pairs byte-identical outside uuids, times and checksums",
        pairs.len()
    );
}
