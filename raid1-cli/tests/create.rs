//! `raid1 create` and `raid1 zero-superblock` against mdadm 4.2 as the oracle: what create
//! writes must read back in `mdadm --examine` (and `mdadm -X`) exactly as what `mdadm --create`
//! wrote for the same devices — the kernel-made fixtures for 16 MiB members, and
//! raid1-superblock's mdadm geometry for other sizes — and `raid1 examine` must print what mdadm
//! prints. Refusals must leave every device byte-for-byte unchanged. Real tools only: mdadm,
//! losetup, mkfs.ext4 and mkswap missing is a failure.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Output};

use raid1_superblock::{CreateGeometry, MinorVersion};

const RAID1: &str = env!("CARGO_BIN_EXE_raid1");
const MIB: u64 = 1 << 20;

fn run(prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .env("TZ", "UTC")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{prog}` ({e}): install it (scripts/setup.sh)"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn raid1(args: &[&str]) -> Output {
    let out = run(RAID1, args);
    assert!(
        !text(&out.stderr).contains("panicked"),
        "raid1 {args:?} panicked: {}",
        text(&out.stderr)
    );
    out
}

/// Runs `raid1 create` and requires success.
fn create(args: &[&str]) -> Output {
    let mut all = vec!["create"];
    all.extend_from_slice(args);
    let out = raid1(&all);
    assert!(
        out.status.success(),
        "raid1 {all:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Runs `raid1 create`, requires exit status 2 and returns standard error.
fn create_refused(args: &[&str]) -> String {
    let mut all = vec!["create"];
    all.extend_from_slice(args);
    let out = raid1(&all);
    assert_eq!(
        out.status.code(),
        Some(2),
        "raid1 {all:?} should be refused: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().expect("temporary directory"))
    }

    /// A sparse image of `bytes` bytes.
    fn image(&self, name: &str, bytes: u64) -> String {
        let p = self.0.path().join(name);
        File::create(&p).unwrap().set_len(bytes).unwrap();
        p.to_str().unwrap().to_string()
    }
}

/// A loop device attached to an image file, detached on drop.
struct LoopDev(String);

impl LoopDev {
    fn attach(path: &str) -> LoopDev {
        let out = run("losetup", &["--find", "--show", path]);
        assert!(
            out.status.success(),
            "losetup failed: {}",
            text(&out.stderr)
        );
        LoopDev(text(&out.stdout).trim().to_string())
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).output();
    }
}

/// `mdadm --examine` as label -> value (labels trimmed; the device-role section too).
fn examine(dev: &str) -> BTreeMap<String, String> {
    let out = run("mdadm", &["--examine", dev]);
    assert!(
        out.status.success(),
        "mdadm --examine {dev} failed: {}",
        text(&out.stderr)
    );
    fields(&text(&out.stdout))
}

fn fields(t: &str) -> BTreeMap<String, String> {
    t.lines()
        .filter_map(|l| l.split_once(" : "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `raid1 examine` must print exactly what `mdadm --examine` prints.
fn examine_agrees(dev: &str) {
    let m = run("mdadm", &["--examine", dev]);
    let r = raid1(&["examine", dev]);
    assert_eq!(
        text(&r.stdout),
        text(&m.stdout),
        "raid1 examine {dev} differs from mdadm --examine"
    );
}

fn fixture(case: &str, member: &str) -> BTreeMap<String, String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(case)
        .join(format!("examine-{member}.txt"));
    fields(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

/// The examine lines that `mdadm --create` decides (not UUIDs, times, checksum, events, state,
/// which the kernel changes after create).
const GEOMETRY_FIELDS: [&str; 14] = [
    "Magic",
    "Version",
    "Feature Map",
    "Raid Level",
    "Raid Devices",
    "Avail Dev Size",
    "Array Size",
    "Used Dev Size",
    "Data Offset",
    "Super Offset",
    "Unused Space",
    "Internal Bitmap",
    "Bad Block Log",
    "Device Role",
];

fn name_of(f: &BTreeMap<String, String>) -> String {
    let n = &f["Name"];
    n.split("  (local").next().unwrap().to_string()
}

fn hash_file(path: &str) -> u64 {
    let mut f = File::open(path).unwrap();
    let mut h = DefaultHasher::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        buf[..n].hash(&mut h);
    }
    h.finish()
}

/// Create on 16 MiB images with the options of each kernel-made fixture: every geometry line
/// of mdadm --examine equals the fixture's, for every member.
#[test]
fn sixteen_mib_members_match_the_kernel_fixtures() {
    // (fixture, members, options)
    let cases: [(&str, usize, &[&str]); 7] = [
        (
            "v1.0",
            2,
            &["-n", "2", "--metadata", "1.0", "--bitmap", "none"],
        ),
        (
            "v1.1",
            2,
            &["-n", "2", "--metadata", "1.1", "--bitmap", "none"],
        ),
        (
            "v1.2",
            2,
            &["-n", "2", "--metadata", "1.2", "--bitmap", "none"],
        ),
        ("bitmap", 2, &["-n", "2", "--bitmap", "internal"]),
        ("three", 3, &["-n", "3", "--bitmap", "none"]),
        ("spare", 3, &["-n", "2", "-x", "1", "--bitmap", "none"]),
        (
            "named",
            2,
            &[
                "-n",
                "2",
                "--bitmap",
                "none",
                "--name",
                "fixture",
                "--homehost",
                "fixturehost",
            ],
        ),
    ];
    for (case, count, options) in cases {
        let dir = Dir::new();
        let names = ["vda", "vdb", "vdc"];
        let imgs: Vec<String> = names[..count]
            .iter()
            .map(|n| dir.image(&format!("{n}.img"), 16 * MIB))
            .collect();
        let mut args = vec!["--level", "1"];
        if case != "named" {
            args.extend(["--homehost", "mdoracle"]);
        }
        args.extend_from_slice(options);
        args.extend(imgs.iter().map(String::as_str));
        create(&args);
        let mut uuids = Vec::new();
        for (img, member) in imgs.iter().zip(names) {
            let got = examine(img);
            let want = fixture(case, member);
            for f in GEOMETRY_FIELDS {
                assert_eq!(got.get(f), want.get(f), "{case} {member}: {f}");
            }
            assert_eq!(name_of(&got), name_of(&want), "{case} {member}: Name");
            assert_eq!(got["Array State"], want["Array State"], "{case} {member}");
            assert_eq!(got["Events"], "0", "{case} {member}: mdadm writes events 0");
            assert_eq!(got["State"], "active", "{case} {member}: resync pending");
            assert_eq!(got["Update Time"], got["Creation Time"], "{case} {member}");
            assert!(got["Checksum"].ends_with("- correct"), "{case} {member}");
            uuids.push((got["Array UUID"].clone(), got["Device UUID"].clone()));
            examine_agrees(img);
        }
        assert!(
            uuids.windows(2).all(|w| w[0].0 == w[1].0),
            "{case}: one array UUID"
        );
        assert!(
            uuids.windows(2).all(|w| w[0].1 != w[1].1),
            "{case}: device UUIDs differ"
        );
    }
}

/// Other sizes and mixed sizes: the geometry mdadm --examine reads back is raid1-superblock's
/// mdadm geometry (data offset from the first device, size from the smallest).
#[test]
fn other_sizes_follow_the_mdadm_geometry() {
    let sizes = [
        (3 * MIB, MinorVersion::V1_2),
        (64 * MIB, MinorVersion::V1_0),
        (1000 * MIB, MinorVersion::V1_2),
        (1024 * MIB, MinorVersion::V1_1),
        (1024 * MIB, MinorVersion::V1_0),
        (10 * 1024 * MIB, MinorVersion::V1_2),
        (300 * 1024 * MIB, MinorVersion::V1_2),
    ];
    for (bytes, minor) in sizes {
        for bitmap in [true, false] {
            let dir = Dir::new();
            let a = dir.image("a.img", bytes);
            let b = dir.image("b.img", bytes);
            let md = minor.to_string();
            let bm = if bitmap { "internal" } else { "none" };
            create(&["-l", "1", "-n", "2", "-e", &md, "-b", bm, &a, &b]);
            let g = CreateGeometry::mdadm_default(minor, bytes / 512, bitmap).unwrap();
            for img in [&a, &b] {
                let f = examine(img);
                let what = format!("{md} {} MiB bitmap={bitmap}", bytes / MIB);
                assert_eq!(f["Version"], md, "{what}");
                assert_eq!(
                    f["Super Offset"],
                    format!("{} sectors", g.super_offset),
                    "{what}"
                );
                assert_eq!(
                    f.get("Data Offset").cloned(),
                    (g.data_offset > 0).then(|| format!("{} sectors", g.data_offset)),
                    "{what}"
                );
                assert!(f["Avail Dev Size"].starts_with(&format!("{} sectors", g.data_size)));
                let used = f.get("Used Dev Size").unwrap_or(&f["Avail Dev Size"]);
                assert!(used.starts_with(&format!("{} sectors", g.size)), "{what}");
                assert_eq!(
                    f["Bad Block Log"],
                    format!("512 entries available at offset {} sectors", g.bblog_offset),
                    "{what}"
                );
                assert_eq!(
                    f.get("Internal Bitmap").cloned(),
                    g.bitmap
                        .map(|b| format!("{} sectors from superblock", b.offset)),
                    "{what}"
                );
                examine_agrees(img);
            }
            // The bitmap as mdadm -X reads it from a loop device: every bit dirty.
            if let Some(bg) = g.bitmap {
                let l = LoopDev::attach(&a);
                let x = fields(&text(&run("mdadm", &["-X", &l.0]).stdout));
                assert_eq!(
                    x["Bitmap"],
                    format!("{} bits (chunks), {} dirty (100.0%)", bg.chunks, bg.chunks)
                );
                assert_eq!(x["Events"], "0");
                let bx = fields(&text(&raid1(&["examine-bitmap", &a]).stdout));
                assert_eq!(bx["Bitmap"], x["Bitmap"]);
                assert_eq!(bx["Chunksize"], x["Chunksize"]);
            }
        }
    }
    // Mixed sizes (--force): data offset from the first (1 GiB: 4096), size from the smallest.
    let dir = Dir::new();
    let a = dir.image("a.img", 1024 * MIB);
    let b = dir.image("b.img", 1100 * MIB);
    let err = create_refused(&["-l", "1", "-n", "2", &a, &b]);
    assert!(err.contains("differ by more than 1%"), "{err}");
    create(&["-l", "1", "-n", "2", "--force", &a, &b]);
    let fb = examine(&b);
    assert_eq!(fb["Data Offset"], "4096 sectors");
    assert!(fb["Avail Dev Size"].starts_with(&format!("{} sectors", 1100 * 2048 - 4096)));
    assert!(fb["Used Dev Size"].starts_with(&format!("{} sectors", 1024 * 2048 - 4096)));
}

#[test]
fn degraded_spares_names_and_assume_clean() {
    let dir = Dir::new();
    let a = dir.image("a.img", 16 * MIB);
    let c = dir.image("c.img", 16 * MIB);
    let d = dir.image("d.img", 16 * MIB);
    let out = create(&[
        "-l",
        "1",
        "-n",
        "3",
        "-x",
        "1",
        "--name",
        "data",
        "--homehost",
        "box",
        "--assume-clean",
        "--json",
        &a,
        "missing",
        &c,
        &d,
    ]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let fa = examine(&a);
    assert_eq!(j["array_uuid"], fa["Array UUID"]);
    assert_eq!(j["name"], "box:data");
    assert_eq!(j["size_sectors"], 30720);
    assert_eq!(j["members"][1]["role"], "missing");
    assert_eq!(j["members"][3]["role"], "spare");
    assert_eq!(j["members"][0]["device_uuid"], fa["Device UUID"]);
    assert_eq!(j["bitmap"]["offset"], 8);
    assert_eq!(name_of(&fa), "box:data");
    assert_eq!(fa["State"], "clean");
    assert!(
        fa["Array State"].starts_with("A.A "),
        "{}",
        fa["Array State"]
    );
    assert_eq!(fa["Device Role"], "Active device 0");
    assert_eq!(examine(&c)["Device Role"], "Active device 2");
    assert_eq!(examine(&d)["Device Role"], "spare");
    for img in [&a, &c, &d] {
        examine_agrees(img);
    }
    // <none>: the name alone; a 1-slot array needs --force.
    let e = dir.image("e.img", 16 * MIB);
    let err = create_refused(&["-l", "1", "-n", "1", &e]);
    assert!(err.contains("--force"), "{err}");
    create(&[
        "-l",
        "1",
        "-n",
        "1",
        "--force",
        "--homehost",
        "<none>",
        "-N",
        "solo",
        &e,
    ]);
    assert_eq!(name_of(&examine(&e)), "solo");
}

/// Loop devices: mdadm reads them like the images; a device held open O_EXCL elsewhere is
/// refused and nothing is written anywhere.
#[test]
fn loop_devices_and_exclusive_open() {
    let dir = Dir::new();
    let imgs: Vec<String> = (0..3)
        .map(|i| dir.image(&format!("l{i}.img"), 32 * MIB))
        .collect();
    let loops: Vec<LoopDev> = imgs.iter().map(|i| LoopDev::attach(i)).collect();
    let devs: Vec<&str> = loops.iter().map(|l| l.0.as_str()).collect();
    for (md, bitmap, n) in [
        ("1.0", "none", 2),
        ("1.1", "none", 2),
        ("1.2", "none", 2),
        ("1.0", "internal", 3),
        ("1.1", "internal", 3),
        ("1.2", "internal", 3),
    ] {
        let count = n.to_string();
        let mut args = vec!["-l", "1", "-n", &count, "-e", md, "-b", bitmap, "--force"];
        args.extend_from_slice(&devs[..n]);
        create(&args);
        for d in &devs[..n] {
            let f = examine(d);
            assert_eq!(f["Version"], md);
            assert_eq!(f["Raid Devices"], count);
            let feature = if bitmap == "internal" { "0x1" } else { "0x0" };
            assert_eq!(f["Feature Map"], feature);
            examine_agrees(d);
        }
    }
    // The earlier creates' 1.0 and 1.1 superblocks are gone (mdadm zeroes them too).
    for img in &imgs {
        let mut buf = vec![0u8; 32 * MIB as usize];
        File::open(img).unwrap().read_exact(&mut buf).unwrap();
        let at_1_0 = 65520 * 512;
        assert_ne!(
            &buf[at_1_0..at_1_0 + 4],
            &[0xfc, 0x4e, 0x2b, 0xa9],
            "stale 1.0"
        );
        assert_ne!(&buf[0..4], &[0xfc, 0x4e, 0x2b, 0xa9], "stale 1.1");
        assert_eq!(&buf[4096..4100], &[0xfc, 0x4e, 0x2b, 0xa9], "1.2");
    }
    let x = fields(&text(&run("mdadm", &["-X", devs[1]]).stdout));
    assert_eq!(x["Bitmap"], "1 bits (chunks), 1 dirty (100.0%)");

    // Hold loop 2 open exclusively: create must refuse it and write nothing.
    let before: Vec<u64> = imgs.iter().map(|i| hash_file(i)).collect();
    let held = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(devs[2])
        .expect("open O_EXCL");
    let err = create_refused(&["-l", "1", "-n", "3", "--force", devs[0], devs[1], devs[2]]);
    assert!(err.contains(devs[2]) && err.contains("in use"), "{err}");
    let out = raid1(&["zero-superblock", devs[2]]);
    assert_eq!(out.status.code(), Some(2));
    drop(held);
    let after: Vec<u64> = imgs.iter().map(|i| hash_file(i)).collect();
    assert_eq!(before, after, "a refused create wrote something");

    // zero-superblock on a loop device.
    let out = raid1(&["zero-superblock", devs[0]]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = run("mdadm", &["--examine", devs[0]]);
    assert!(!m.status.success());
    assert!(
        text(&m.stderr).contains("No md superblock detected"),
        "{}",
        text(&m.stderr)
    );
}

/// Every refusal names the device and the reason, and leaves all devices unchanged.
#[test]
fn refusals_write_nothing() {
    let dir = Dir::new();
    let a = dir.image("a.img", 16 * MIB);
    let b = dir.image("b.img", 16 * MIB);
    let fs = dir.image("fs.img", 16 * MIB);
    let sw = dir.image("sw.img", 16 * MIB);
    let tiny = dir.image("tiny.img", MIB);
    let big = dir.image("big.img", 20 * MIB);
    let fresh = dir.image("fresh.img", 16 * MIB);
    let mk = run("mkfs.ext4", &["-q", "-F", "-L", "precious", &fs]);
    assert!(mk.status.success(), "mkfs.ext4: {}", text(&mk.stderr));
    let mk = run("mkswap", &[&sw]);
    assert!(mk.status.success(), "mkswap: {}", text(&mk.stderr));
    create(&["-l", "1", "-n", "2", "-e", "1.0", &a, &b]);
    let all = [&a, &b, &fs, &sw, &tiny, &big, &fresh];
    let before: Vec<u64> = all.iter().map(|p| hash_file(p)).collect();

    let err = create_refused(&["-l", "1", "-n", "2", &a, &fs]);
    assert!(
        err.contains(&format!("{a}: holds an md superblock (metadata 1.0")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{fs}: holds an ext4 file system (label \"precious\")"
        )),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    let err = create_refused(&["-l", "1", "-n", "2", &sw, &big]);
    assert!(
        err.contains(&format!("{sw}: holds Linux swap space")),
        "{err}"
    );
    let err = create_refused(&["-l", "1", "-n", "2", "--force", &b, &tiny]);
    assert!(err.contains(&format!("{tiny}: too small")), "{err}");
    let err = create_refused(&["-l", "1", "-n", "2", "-e", "1.0", &fresh, &big]);
    assert!(err.contains("differ by more than 1%"), "{err}");
    let err = create_refused(&["-l", "1", "-n", "2", "--force", &b, &b]);
    assert!(err.contains("is the same device as"), "{err}");
    let err = create_refused(&["-l", "1", "-n", "3", &b, &big]);
    assert!(err.contains("2 devices listed"), "{err}");
    let err = create_refused(&["-l", "5", "-n", "2", &b, &big]);
    assert!(err.contains("RAID1"), "{err}");
    let err = create_refused(&["-l", "1", "-n", "2", "missing", "missing"]);
    assert!(err.contains("every device is `missing`"), "{err}");
    let err = create_refused(&["-l", "1", "-n", "2", "-N", "a/b", &b, &big]);
    assert!(err.contains("invalid --name"), "{err}");
    // The bitmap's options: a chunk whose bits do not fit, a chunk or a delay without the
    // bitmap, a delay of 0, a chunk that is not a power of two.
    for (options, want) in [
        (
            &["--bitmap-chunk=2K"][..],
            "--bitmap-chunk of 2048 bytes is too small",
        ),
        (
            &["-b", "none", "--bitmap-chunk=1M"],
            "--bitmap-chunk needs the internal bitmap",
        ),
        (
            &["-b", "none", "--delay=3"],
            "--delay needs the internal bitmap",
        ),
        (&["--delay=0"], "--delay 0"),
        (&["--bitmap-chunk=96K"], "\"96K\": not a power of two"),
        (
            &["--size=32K"],
            "--size 32 KiB is below the smallest array (64 KiB)",
        ),
        (&["--size=16M"], "smaller than --size: 15360 KiB usable"),
        (&["--size=9s"], "not a whole number of KiB"),
        (
            &["--data-offset=12K"],
            "--data-offset 12 KiB leaves no room",
        ),
        (
            &["-e", "1.0", "--data-offset=1M"],
            "metadata 1.0 keeps the data at the start",
        ),
    ] {
        let mut args = vec!["-l", "1", "-n", "2", "--force"];
        args.extend_from_slice(options);
        args.extend([b.as_str(), big.as_str()]);
        let err = create_refused(&args);
        assert!(err.contains(want), "{options:?}: {err}");
    }
    let after: Vec<u64> = all.iter().map(|p| hash_file(p)).collect();
    assert_eq!(before, after, "a refused create wrote something");

    // --force writes over the file system and the old md superblock; blkid sees only md.
    create(&[
        "-l",
        "1",
        "-n",
        "2",
        "--force",
        "--metadata",
        "1.2",
        &a,
        &fs,
    ]);
    let f = examine(&a);
    assert_eq!(f["Version"], "1.2");
    let blkid = run("blkid", &["-p", "-o", "value", "-s", "TYPE", &fs]);
    assert_eq!(text(&blkid.stdout).trim(), "linux_raid_member");
    // The stale 1.0 superblock at the end of a was zeroed.
    let j: serde_json::Value =
        serde_json::from_slice(&raid1(&["examine", "--json", &a]).stdout).unwrap();
    assert_eq!(j["devices"][0]["report"]["version"], "1.2");
}

#[test]
fn zero_superblock_like_mdadm() {
    let dir = Dir::new();
    let a = dir.image("a.img", 16 * MIB);
    let b = dir.image("b.img", 16 * MIB);
    let c = dir.image("c.img", 16 * MIB);
    create(&["-l", "1", "-n", "2", &a, &b]);
    let bitmap_before = {
        let mut f = File::open(&a).unwrap();
        let mut buf = vec![0u8; 24 * 512];
        f.read_exact(&mut buf).unwrap();
        buf[4096 + 512..].to_vec()
    };
    // c has no superblock: without --force the whole command writes nothing.
    let out = raid1(&["zero-superblock", &a, &c]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(&format!("{c}: no md superblock found")));
    assert!(
        examine(&a).contains_key("Magic"),
        "a refused zero-superblock wrote"
    );

    let out = raid1(&["zero-superblock", &a, &b]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("metadata 1.2"));
    for img in [&a, &b] {
        let m = run("mdadm", &["--examine", img]);
        assert!(!m.status.success());
        assert!(
            text(&m.stderr).contains("No md superblock detected"),
            "{}",
            text(&m.stderr)
        );
    }
    // Exactly the 512-byte superblock: the bitmap at +8 sectors is still there (as mdadm).
    let mut f = File::open(&a).unwrap();
    let mut buf = vec![0u8; 24 * 512];
    f.read_exact(&mut buf).unwrap();
    assert!(buf[4096..4096 + 512].iter().all(|&x| x == 0));
    assert_eq!(&buf[4096 + 512..], &bitmap_before[..]);
    assert_eq!(&buf[8192..8196], b"bitm");

    let out = raid1(&["zero-superblock", &a]);
    assert_eq!(out.status.code(), Some(2));
    let out = raid1(&["zero-superblock", "--force", &a, &c]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("sector 32752"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn help_documents_exit_codes_and_rules() {
    let out = raid1(&["create", "--help"]);
    let h = text(&out.stdout);
    for needle in [
        "Exit status",
        "1%",
        "--force",
        "O_EXCL",
        "Default name: 0",
        "internal",
    ] {
        assert!(h.contains(needle), "create --help lacks {needle:?}:\n{h}");
    }
    let h = text(&raid1(&["zero-superblock", "--help"]).stdout);
    assert!(h.contains("Exit status"), "{h}");
}

/// Signatures made by the real tools (and recognised by blkid) are refused without --force,
/// named, and leave the device unchanged; with --force a 1.2 create clears them (its metadata
/// area covers where they live) so that blkid sees only the md member.
#[test]
fn real_signatures_are_refused_and_forced_over() {
    let dir = Dir::new();
    // (file, size, command, blkid TYPE or PTTYPE, what raid1 must name)
    let key = dir.0.path().join("key");
    std::fs::write(&key, b"not a secret").unwrap();
    let key = key.to_str().unwrap().to_string();
    let cases: Vec<(&str, u64, Vec<&str>, &str, &str)> = vec![
        (
            "ext2",
            16,
            vec!["mke2fs", "-q", "-F", "-t", "ext2"],
            "ext2",
            "an ext2 file system",
        ),
        (
            "ext3",
            16,
            vec!["mke2fs", "-q", "-F", "-t", "ext3"],
            "ext3",
            "an ext3 file system",
        ),
        (
            "ext4",
            16,
            vec!["mkfs.ext4", "-q", "-F"],
            "ext4",
            "an ext4 file system",
        ),
        (
            "xfs",
            320,
            vec!["mkfs.xfs", "-q", "-f"],
            "xfs",
            "an XFS file system",
        ),
        (
            "btrfs",
            128,
            vec!["mkfs.btrfs", "-q", "-f"],
            "btrfs",
            "a btrfs file system",
        ),
        (
            "vfat",
            16,
            vec!["mkfs.vfat"],
            "vfat",
            "a FAT (vfat) file system",
        ),
        ("swap", 16, vec!["mkswap"], "swap", "Linux swap space"),
        (
            "luks",
            32,
            vec![
                "cryptsetup",
                "luksFormat",
                "--batch-mode",
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
                "--key-file",
                &key,
            ],
            "crypto_LUKS",
            "a LUKS encrypted volume",
        ),
    ];
    for (name, mib, cmd, blkid_type, named) in cases {
        let img = dir.image(&format!("{name}.img"), mib * MIB);
        let mut args: Vec<&str> = cmd[1..].to_vec();
        args.push(&img);
        let out = run(cmd[0], &args);
        assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
        check_signature(&dir, &img, "TYPE", blkid_type, named, mib);
    }
    for (label, pttype, named) in [
        (
            "label: dos\nstart=2048, type=83\n",
            "dos",
            "an MBR partition table with 1 partition",
        ),
        (
            "label: gpt\nstart=2048, type=L\n",
            "gpt",
            "a GPT partition table",
        ),
    ] {
        let img = dir.image(&format!("{pttype}.img"), 16 * MIB);
        let out = Command::new("sfdisk")
            .args(["-q", &img])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(label.as_bytes())?;
                c.wait_with_output()
            })
            .expect("sfdisk");
        assert!(out.status.success(), "sfdisk: {}", text(&out.stderr));
        check_signature(&dir, &img, "PTTYPE", pttype, named, 16);
    }
}

fn check_signature(dir: &Dir, img: &str, tag: &str, blkid_value: &str, named: &str, mib: u64) {
    let b = run("blkid", &["-p", "-o", "value", "-s", tag, img]);
    assert_eq!(text(&b.stdout).trim(), blkid_value, "blkid of {img}");
    let partner = dir.image(&format!("partner-{mib}.img"), mib * MIB);
    let before = (hash_file(img), hash_file(&partner));
    let err = create_refused(&["-l", "1", "-n", "2", &partner, img]);
    assert!(err.contains(&format!("{img}: holds {named}")), "{err}");
    assert!(!err.contains(&format!("{partner}:")), "{err}");
    assert_eq!(
        before,
        (hash_file(img), hash_file(&partner)),
        "{img}: refusal wrote"
    );
    create(&["-l", "1", "-n", "2", "--force", &partner, img]);
    let b = run("blkid", &["-p", "-o", "value", "-s", "TYPE", img]);
    assert_eq!(
        text(&b.stdout).trim(),
        "linux_raid_member",
        "blkid of {img} after --force"
    );
    // The partner now holds an md superblock: remove it for the next case.
    assert!(raid1(&["zero-superblock", &partner]).status.success());
}

/// A loop device with 4 KiB logical sectors: the metadata is placed in 512-byte sectors as
/// always, and mdadm reads it back the same.
#[test]
fn four_k_sector_loop_devices() {
    let dir = Dir::new();
    let imgs: Vec<String> = (0..2)
        .map(|i| dir.image(&format!("k{i}.img"), 64 * MIB))
        .collect();
    let loops: Vec<LoopDev> = imgs
        .iter()
        .map(|img| {
            let out = run(
                "losetup",
                &["--find", "--show", "--sector-size", "4096", img],
            );
            assert!(out.status.success(), "losetup: {}", text(&out.stderr));
            LoopDev(text(&out.stdout).trim().to_string())
        })
        .collect();
    let lbs = run("blockdev", &["--getss", &loops[0].0]);
    assert_eq!(text(&lbs.stdout).trim(), "4096");
    for md in ["1.0", "1.2"] {
        create(&[
            "-l",
            "1",
            "-n",
            "2",
            "-e",
            md,
            "--force",
            &loops[0].0,
            &loops[1].0,
        ]);
        let g =
            CreateGeometry::mdadm_default(MinorVersion::parse(md).unwrap(), 131072, true).unwrap();
        for l in &loops {
            let f = examine(&l.0);
            assert_eq!(f["Super Offset"], format!("{} sectors", g.super_offset));
            assert!(f["Checksum"].ends_with("- correct"));
            examine_agrees(&l.0);
        }
    }
}

/// `--uuid` (mdadm's `--uuid`) is the array's UUID on every member and in the bitmap header;
/// each member's device UUID stays its own.
#[test]
fn a_given_uuid_names_the_array() {
    let dir = Dir::new();
    let a = dir.image("a.img", 16 * MIB);
    let b = dir.image("b.img", 16 * MIB);
    let given = "0123-4567 89ab.cdef:fedc:ba98:7654:3210";
    create(&["-l", "1", "-n", "2", "--uuid", given, &a, &b]);
    for dev in [&a, &b] {
        assert_eq!(
            examine(dev)["Array UUID"],
            "01234567:89abcdef:fedcba98:76543210"
        );
        let x = text(&raid1(&["examine-bitmap", dev]).stdout);
        assert!(
            x.contains("UUID : 01234567:89abcdef:fedcba98:76543210"),
            "{x}"
        );
    }
    assert_ne!(examine(&a)["Device UUID"], examine(&b)["Device UUID"]);
}
