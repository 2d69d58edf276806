//! `raid1 examine`, `raid1 examine --badblocks` and `raid1 examine-bitmap` against the real
//! mdadm 4.2 as the oracle: the kernel-made fixtures and images written by our serializer must
//! print exactly what mdadm prints, line for line. mdadm, zstd or losetup missing is a failure.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use raid1_superblock::bitmap::BITMAP_SB_LEN;
use raid1_superblock::*;

const RAID1: &str = env!("CARGO_BIN_EXE_raid1");
const DEV_SECTORS: u64 = 131_072; // 64 MiB

fn run(prog: &str, args: &[&str], tz: &str) -> Output {
    Command::new(prog)
        .args(args)
        .env("TZ", tz)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{prog}` ({e}): install it (scripts/setup.sh)"))
}

/// Shows both outputs and the first differing lines.
fn diff(what: &str, expected: &[u8], got: &[u8]) -> String {
    let e = String::from_utf8_lossy(expected);
    let g = String::from_utf8_lossy(got);
    let el: Vec<&str> = e.lines().collect();
    let gl: Vec<&str> = g.lines().collect();
    let mut report = format!("{what}: output differs from mdadm's\n");
    for i in 0..el.len().max(gl.len()) {
        let (a, b) = (el.get(i).copied(), gl.get(i).copied());
        if a != b {
            report.push_str(&format!(
                "line {}:\n  mdadm: {:?}\n  raid1: {:?}\n",
                i + 1,
                a,
                b
            ));
        }
    }
    report.push_str(&format!("--- mdadm\n{e}--- raid1\n{g}"));
    report
}

/// Runs mdadm and raid1 with the given arguments; their standard outputs must be equal.
fn same(what: &str, mdadm_args: &[&str], raid1_args: &[&str], tz: &str) -> Output {
    let m = run("mdadm", mdadm_args, tz);
    let r = run(RAID1, raid1_args, tz);
    assert!(
        !String::from_utf8_lossy(&r.stderr).contains("panicked"),
        "{what}: raid1 panicked"
    );
    assert!(
        m.status.success(),
        "{what}: mdadm {mdadm_args:?} failed: {}",
        String::from_utf8_lossy(&m.stderr)
    );
    assert!(
        r.status.success(),
        "{what}: raid1 {raid1_args:?} failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(m.stdout == r.stdout, "{}", diff(what, &m.stdout, &r.stdout));
    r
}

/// `raid1 examine` == `mdadm --examine` (with and without an explicit home host, in two time
/// zones) and `raid1 examine --badblocks` == `mdadm --examine-badblocks`.
fn check_examine(path: &Path, homehost: &str) {
    let p = path.to_str().unwrap();
    let hh = format!("--homehost={homehost}");
    same(p, &["--examine", p], &["examine", p], "UTC");
    same(p, &["--examine", &hh, p], &["examine", &hh, p], "UTC");
    same(p, &["--examine", p], &["examine", p], "America/New_York");
    same(
        p,
        &["--examine-badblocks", p],
        &["examine", "--badblocks", p],
        "UTC",
    );
}

/// A read-only loop device (mdadm 4.2 reads internal bitmaps only from block devices).
struct LoopDev(String);

impl LoopDev {
    fn attach(path: &Path) -> LoopDev {
        let out = run(
            "losetup",
            &["-r", "-f", "--show", path.to_str().unwrap()],
            "UTC",
        );
        assert!(
            out.status.success(),
            "losetup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        LoopDev(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).output();
    }
}

/// `raid1 examine-bitmap` == `mdadm -X` on a loop device, and on the image file itself (where
/// only the Filename line may differ). Returns mdadm's text.
fn check_bitmap(path: &Path) -> String {
    let lo = LoopDev::attach(path);
    let out = same(&lo.0, &["-X", &lo.0], &["examine-bitmap", &lo.0], "UTC");
    // examine reads block devices as well as files.
    same(&lo.0, &["--examine", &lo.0], &["examine", &lo.0], "UTC");
    let on_file = run(RAID1, &["examine-bitmap", path.to_str().unwrap()], "UTC");
    assert!(
        on_file.status.success(),
        "{}",
        String::from_utf8_lossy(&on_file.stderr)
    );
    let tail = |o: &[u8]| {
        String::from_utf8_lossy(o)
            .lines()
            .skip(1)
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    assert_eq!(
        tail(&out.stdout),
        tail(&on_file.stdout),
        "examine-bitmap on the file and on {}",
        lo.0
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Kernel-made fixture members, decompressed: (case, member, image path).
fn fixture_images(dir: &Path) -> Vec<(String, String, PathBuf)> {
    let mut found = Vec::new();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    for case in cases {
        let mut members: Vec<PathBuf> = std::fs::read_dir(&case)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".img.zst"))
            .collect();
        members.sort();
        for z in members {
            let c = case.file_name().unwrap().to_string_lossy().into_owned();
            let m = z
                .file_name()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".img.zst")
                .to_string();
            let img = dir.join(format!("{c}-{m}.img"));
            let out = run(
                "zstd",
                &[
                    "-q",
                    "-d",
                    "-f",
                    z.to_str().unwrap(),
                    "-o",
                    img.to_str().unwrap(),
                ],
                "UTC",
            );
            assert!(
                out.status.success(),
                "zstd failed on {z:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            found.push((c, m, img));
        }
    }
    found
}

/// Replaces the first line (the device name) of a text.
fn without_first_line(text: &str) -> String {
    text.lines().skip(1).map(|l| format!("{l}\n")).collect()
}

#[test]
fn kernel_fixtures_examine_like_mdadm() {
    let dir = tempfile::tempdir().unwrap();
    let images = fixture_images(dir.path());
    assert!(
        images.len() >= 20,
        "expected the committed fixtures, found {}",
        images.len()
    );
    let mut bitmaps = 0;
    for (case, member, img) in &images {
        check_examine(img, "mdoracle");
        let case_dir = fixtures_dir().join(case);
        // The guest's own mdadm output (device /dev/vdX, host mdoracle, UTC) matches too.
        let guest =
            std::fs::read_to_string(case_dir.join(format!("examine-{member}.txt"))).unwrap();
        let ours = run(
            RAID1,
            &["examine", "--homehost=mdoracle", img.to_str().unwrap()],
            "UTC",
        );
        assert_eq!(
            without_first_line(&String::from_utf8_lossy(&ours.stdout)),
            without_first_line(&guest),
            "{case}/{member} against the guest's examine text"
        );
        if let Ok(guest) = std::fs::read_to_string(case_dir.join(format!("badblocks-{member}.txt")))
        {
            let ours = run(
                RAID1,
                &["examine", "--badblocks", img.to_str().unwrap()],
                "UTC",
            );
            assert_eq!(
                without_first_line(&String::from_utf8_lossy(&ours.stdout)),
                without_first_line(&guest),
                "{case}/{member} against the guest's bad-block list"
            );
        }
        if let Ok(guest) = std::fs::read_to_string(case_dir.join(format!("bitmap-{member}.txt"))) {
            let host = check_bitmap(img);
            assert_eq!(
                without_first_line(&host),
                without_first_line(&guest),
                "{case}/{member} bitmap"
            );
            bitmaps += 1;
        }
    }
    assert!(bitmaps >= 4, "expected bitmap fixtures, found {bitmaps}");
}

fn write_at(file: &mut File, sector: u64, bytes: &[u8]) {
    file.seek(SeekFrom::Start(sector * 512)).unwrap();
    file.write_all(bytes).unwrap();
}

/// A sparse member image holding `sb`, optionally a bitmap with dirty chunks and a bad-block log.
fn write_member(
    path: &Path,
    sb: &Superblock,
    bitmap: Option<(&BitmapSuperblock, &[u64])>,
    bad: &[BadBlock],
) {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .unwrap();
    file.set_len(DEV_SECTORS * 512).unwrap();
    let mut buf = vec![0u8; 4096];
    let len = sb.serialize_padded(&mut buf).unwrap();
    write_at(&mut file, sb.super_offset, &buf[..len]);
    if let Some((header, dirty)) = bitmap {
        let mut region = vec![0u8; BITMAP_SB_LEN + header.bits_len() as usize];
        header.serialize(&mut region).unwrap();
        let mut bits = BitmapBitsMut::new(&mut region[BITMAP_SB_LEN..], header.chunks()).unwrap();
        for &k in dirty {
            bits.set(k).unwrap();
        }
        write_at(&mut file, sb.bitmap_sector().unwrap(), &region);
    }
    if sb.bblog_size > 0 {
        let mut log = vec![0u8; usize::from(sb.bblog_size) * 512];
        write_bad_blocks(bad, &mut log).unwrap();
        write_at(&mut file, sb.bblog_sector().unwrap(), &log);
    }
}

/// Overwrites bytes of the superblock block in place (for damaged-superblock cases).
fn patch(path: &Path, sb_sector: u64, offset: usize, bytes: &[u8]) {
    let mut file = OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(sb_sector * 512 + offset as u64))
        .unwrap();
    file.write_all(bytes).unwrap();
}

fn base(minor: MinorVersion, bitmap: bool) -> Superblock {
    let mut sb: Superblock = Superblock::new();
    CreateGeometry::mdadm_default(minor, DEV_SECTORS, bitmap)
        .unwrap()
        .apply_to(&mut sb);
    sb.set_uuid = Uuid::parse_mdadm("01234567:89abcdef:00112233:44556677").unwrap();
    sb.set_name = SetName::build(Some(b"testhost"), b"mirror");
    sb.ctime = MdTime::from_seconds(1_700_000_000);
    sb.utime = MdTime::new(1_700_000_100, 999).unwrap();
    sb.level = 1;
    sb.raid_disks = 2;
    sb.device_uuid = Uuid([
        0xa1, 0xa2, 0xa3, 0xa4, 0xb1, 0xb2, 0xb3, 0xb4, 0xc1, 0xc2, 0xc3, 0xc4, 0xd1, 0xd2, 0xd3,
        0xd4,
    ]);
    sb.set_max_dev(128).unwrap();
    sb.set_role(0, DevRole::Active(0)).unwrap();
    sb.set_role(1, DevRole::Active(1)).unwrap();
    sb
}

fn bad_blocks() -> [BadBlock; 3] {
    [
        BadBlock { start: 5, len: 1 },
        BadBlock {
            start: 1000,
            len: 8,
        },
        BadBlock {
            start: 123_456,
            len: 512,
        },
    ]
}

#[test]
fn serializer_images_examine_like_mdadm() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    let mut check = |name: &str,
                     sb: &Superblock,
                     bitmap: Option<(&BitmapSuperblock, &[u64])>,
                     bad: &[BadBlock]| {
        let path = dir.path().join(format!("{name}.img"));
        write_member(&path, sb, bitmap, bad);
        check_examine(&path, "testhost");
        if bitmap.is_some() {
            check_bitmap(&path);
        }
        n += 1;
        path
    };

    // 1.2, 1.1, 1.0 with the mdadm default geometry, with and without bitmaps.
    for (minor, tag) in [
        (MinorVersion::V1_2, "12"),
        (MinorVersion::V1_1, "11"),
        (MinorVersion::V1_0, "10"),
    ] {
        let sb = base(minor, false);
        check(&format!("plain{tag}"), &sb, None, &[]);
        let mut sb = base(minor, true);
        sb.feature_map.insert(FeatureMap::BAD_BLOCKS);
        sb.bblog_shift = if tag == "10" { 3 } else { 0 };
        sb.events = 4242;
        let mut header = BitmapSuperblock::new(sb.set_uuid, sb.size);
        header.chunksize = 1 << 20;
        header.events = 4242;
        header.events_cleared = 4000;
        header.write_behind = 256;
        check(
            &format!("bitmap{tag}"),
            &sb,
            Some((&header, &[0, 1, 2, 7, 8, 9, 31, 32, 61, 62])),
            &bad_blocks(),
        );
        // A small chunk: the bit array spans several reads.
        header.chunksize = 4096;
        header.state = BitmapState::STALE;
        let dirty: Vec<u64> = (0..header.chunks()).filter(|k| k % 3 == 0).collect();
        check(
            &format!("bigbitmap{tag}"),
            &sb,
            Some((&header, &dirty)),
            &bad_blocks(),
        );
    }

    // Odd max_dev, faulty and spare entries, a replacement being recovered, both device flags.
    let mut sb = base(MinorVersion::V1_1, false);
    sb.raid_disks = 3;
    sb.set_max_dev(5).unwrap();
    sb.set_role(0, DevRole::Active(0)).unwrap();
    sb.set_role(1, DevRole::Faulty).unwrap();
    sb.set_role(2, DevRole::Spare).unwrap();
    sb.set_role(3, DevRole::Active(2)).unwrap();
    sb.set_role(4, DevRole::Active(2)).unwrap();
    sb.dev_number = 4;
    sb.feature_map = FeatureMap::RECOVERY_OFFSET | FeatureMap::REPLACEMENT;
    sb.recovery_offset = 65_536;
    sb.devflags = DevFlags::WRITE_MOSTLY | DevFlags::FAILFAST;
    sb.resync_offset = 0;
    sb.events = 99;
    check("replacement", &sb, None, &[]);
    for dev in [1, 2, 7] {
        sb.dev_number = dev;
        sb.feature_map = FeatureMap::empty();
        check(&format!("role{dev}"), &sb, None, &[]);
    }
    // Write-mostly alone, degraded (a missing slot), a third odd max_dev.
    let mut sb = base(MinorVersion::V1_2, false);
    sb.devflags = DevFlags::WRITE_MOSTLY;
    sb.raid_disks = 3;
    sb.set_max_dev(3).unwrap();
    sb.set_role(2, DevRole::Spare).unwrap();
    check("writemostly", &sb, None, &[]);
    // A name without home host, and one local to another host.
    let mut sb = base(MinorVersion::V1_2, false);
    sb.set_name = SetName::build(None, b"plainname");
    check("noname", &sb, None, &[]);
    sb.set_name = SetName::build(Some(b"otherhost"), b"x");
    check("otherhost", &sb, None, &[]);
    assert!(n >= 16);
}

/// Byte edits of a superblock block: (offset, new bytes).
type Edits = Vec<(usize, Vec<u8>)>;

/// Damaged or unusual superblocks that mdadm still prints: the quirks of its arithmetic.
#[test]
fn damaged_superblocks_print_like_mdadm() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Edits)> = vec![
        (
            "bad_checksum",
            vec![(216, 0x1234_5678u32.to_le_bytes().to_vec())],
        ),
        // data_size beyond the device: "after" wraps to a huge unsigned number in mdadm 4.2.
        (
            "truncated_data",
            vec![(136, 1_000_000u64.to_le_bytes().to_vec())],
        ),
        // 2^46 sectors: the TiB size formatting overflows inside mdadm.
        (
            "huge_size",
            vec![
                (136, (1u64 << 46).to_le_bytes().to_vec()),
                (80, (1u64 << 45).to_le_bytes().to_vec()),
            ],
        ),
        ("tib_size", vec![(136, (3u64 << 32).to_le_bytes().to_vec())]),
        // Unknown level, linear, multipath, raid0 (no layout bit), raid4.
        ("level77", vec![(72, 77u32.to_le_bytes().to_vec())]),
        (
            "linear",
            vec![
                (72, (-1i32).to_le_bytes().to_vec()),
                (88, 8u32.to_le_bytes().to_vec()),
            ],
        ),
        ("multipath", vec![(72, (-4i32).to_le_bytes().to_vec())]),
        (
            "raid0",
            vec![
                (72, 0u32.to_le_bytes().to_vec()),
                (88, 128u32.to_le_bytes().to_vec()),
            ],
        ),
        (
            "raid4",
            vec![
                (72, 4u32.to_le_bytes().to_vec()),
                (92, 0u32.to_le_bytes().to_vec()),
            ],
        ),
        // No slots at all; the same slot claimed three times; journal role.
        ("raid_disks_zero", vec![(92, 0u32.to_le_bytes().to_vec())]),
        (
            "inconsistent",
            vec![(256, [0u8, 0, 0, 0, 0, 0, 9, 0].to_vec())],
        ),
        ("journal", vec![(256, 0xfffdu16.to_le_bytes().to_vec())]),
        // PPL feature with a negative offset, new_offset, reshape with a negative delta.
        (
            "ppl",
            vec![
                (8, 0x400u32.to_le_bytes().to_vec()),
                (96, [0xf0, 0xff, 0x10, 0x00].to_vec()),
            ],
        ),
        (
            "new_offset",
            vec![
                (8, 0x40u32.to_le_bytes().to_vec()),
                (124, (-1024i32).to_le_bytes().to_vec()),
            ],
        ),
        (
            "reshape",
            vec![
                (8, 0x4u32.to_le_bytes().to_vec()),
                (100, 0u32.to_le_bytes().to_vec()),
                (104, 4096u64.to_le_bytes().to_vec()),
                (112, (-1i32).to_le_bytes().to_vec()),
                (120, 128u32.to_le_bytes().to_vec()),
            ],
        ),
        // Bitmap bit set but no bitmap superblock there: mdadm drops the bit in memory, so the
        // checksum it shows as expected is computed without it.
        (
            "bitmap_missing",
            vec![
                (8, 0x1u32.to_le_bytes().to_vec()),
                (96, 8u32.to_le_bytes().to_vec()),
            ],
        ),
        // dev_number outside the roles table; microseconds in ctime; every flag bit.
        ("dev_number_big", vec![(160, 500u32.to_le_bytes().to_vec())]),
        (
            "ctime_usec",
            vec![(
                64,
                (1_700_000_000u64 | (123_456 << 40)).to_le_bytes().to_vec(),
            )],
        ),
        ("devflags_all", vec![(184, vec![0xff])]),
        ("no_bblog", vec![(186, vec![0, 0])]),
        ("name_32_bytes", vec![(32, vec![b'A'; 32])]),
        // Other levels' layout lines (members of RAID5/6/10 arrays, RAID0 with a layout).
        (
            "raid5",
            vec![
                (72, 5u32.to_le_bytes().to_vec()),
                (76, 2u32.to_le_bytes().to_vec()),
                (88, 128u32.to_le_bytes().to_vec()),
            ],
        ),
        (
            "raid6",
            vec![
                (72, 6u32.to_le_bytes().to_vec()),
                (76, 20u32.to_le_bytes().to_vec()),
                (92, 4u32.to_le_bytes().to_vec()),
            ],
        ),
        (
            "raid6_unknown_layout",
            vec![
                (72, 6u32.to_le_bytes().to_vec()),
                (76, 7u32.to_le_bytes().to_vec()),
            ],
        ),
        (
            "raid10_offset",
            vec![
                (72, 10u32.to_le_bytes().to_vec()),
                (76, 0x10201u32.to_le_bytes().to_vec()),
            ],
        ),
        (
            "raid10_near",
            vec![
                (72, 10u32.to_le_bytes().to_vec()),
                (76, 0x102u32.to_le_bytes().to_vec()),
            ],
        ),
        (
            "raid10_single_copy",
            vec![
                (72, 10u32.to_le_bytes().to_vec()),
                (76, 0x101u32.to_le_bytes().to_vec()),
            ],
        ),
        (
            "raid0_layout",
            vec![
                (8, 0x1000u32.to_le_bytes().to_vec()),
                (72, 0u32.to_le_bytes().to_vec()),
                (76, 1u32.to_le_bytes().to_vec()),
            ],
        ),
        (
            "raid5_reshape",
            vec![
                (8, 0x4u32.to_le_bytes().to_vec()),
                (72, 5u32.to_le_bytes().to_vec()),
                (92, 3u32.to_le_bytes().to_vec()),
                (100, 6u32.to_le_bytes().to_vec()),
                (104, 999_999u64.to_le_bytes().to_vec()),
                (112, 1u32.to_le_bytes().to_vec()),
                (116, 3u32.to_le_bytes().to_vec()),
                (120, 256u32.to_le_bytes().to_vec()),
            ],
        ),
    ];
    for (name, edits) in cases {
        let path = dir.path().join(format!("{name}.img"));
        let sb = base(MinorVersion::V1_2, false);
        write_member(&path, &sb, None, &[]);
        for (off, bytes) in edits {
            patch(&path, 8, off, &bytes);
        }
        check_examine(&path, "testhost");
    }
    // The checksum mismatch is also stated on standard error (exit status 0, as mdadm).
    let p = dir.path().join("bad_checksum.img");
    let r = run(RAID1, &["examine", p.to_str().unwrap()], "UTC");
    assert_eq!(r.status.code(), Some(0));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains(": warning: sb_csum 0x12345678 differs from the computed 0x"),
        "{err}"
    );
}

/// Several devices in one call, one of them not a member: the same standard output as mdadm
/// (which also skips it), and one error line for it.
#[test]
fn several_devices_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    let junk = dir.path().join("junk.img");
    write_member(&a, &base(MinorVersion::V1_2, false), None, &[]);
    let mut sb = base(MinorVersion::V1_0, false);
    sb.dev_number = 1;
    write_member(&b, &sb, None, &[]);
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    let (a, b, junk) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        junk.to_str().unwrap(),
    );
    let m = run("mdadm", &["--examine", a, junk, b], "UTC");
    let r = run(RAID1, &["examine", a, junk, b], "UTC");
    assert!(
        m.stdout == r.stdout,
        "{}",
        diff("a junk b", &m.stdout, &r.stdout)
    );
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(
        err,
        format!(
            "raid1: {junk}: no md superblock found (magic 0x00000000 at sector 8, expected 0xa92b4efc)\n"
        )
    );
}

fn expect_one_line_error(path: &str, must_contain: &str) {
    for args in [
        vec!["examine", path],
        vec!["examine", "--badblocks", path],
        vec!["examine-bitmap", path],
    ] {
        let r = run(RAID1, &args, "UTC");
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            r.stdout.is_empty(),
            "{args:?} printed {:?}",
            String::from_utf8_lossy(&r.stdout)
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with(&format!("raid1: {path}: ")),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(must_contain),
            "{args:?}: {err} lacks {must_contain:?}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn garbage_truncated_and_empty_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    std::fs::write(p("empty.img"), b"").unwrap();
    expect_one_line_error(&p("empty.img"), "device_size 0 sectors, minimum 24");
    // Pseudo-random garbage (a fixed seed, so the magic in the message is reproducible).
    let mut garbage = vec![0u8; 1 << 20];
    raid1_testkit::Rng::new(12345).fill(&mut garbage);
    std::fs::write(p("garbage.img"), &garbage).unwrap();
    let magic = u32::from_le_bytes([garbage[4096], garbage[4097], garbage[4098], garbage[4099]]);
    expect_one_line_error(
        &p("garbage.img"),
        &format!("magic 0x{magic:08x} at sector 8, expected 0xa92b4efc"),
    );
    // A member cut inside its superblock area, and one cut below the 1.x minimum.
    let good = dir.path().join("good.img");
    write_member(&good, &base(MinorVersion::V1_2, false), None, &[]);
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(p("cut.img"), &bytes[..4096 + 100]).unwrap();
    expect_one_line_error(&p("cut.img"), "device_size 8 sectors");
    // Wrong major version and a super_offset naming another place.
    std::fs::write(p("major.img"), &bytes).unwrap();
    patch(Path::new(&p("major.img")), 8, 4, &2u32.to_le_bytes());
    expect_one_line_error(&p("major.img"), "major_version 2 at sector 8, expected 1");
    std::fs::write(p("offset.img"), &bytes).unwrap();
    patch(Path::new(&p("offset.img")), 8, 144, &9u64.to_le_bytes());
    expect_one_line_error(&p("offset.img"), "super_offset 9 at sector 8, expected 8");
    // max_dev beyond what a 4 KiB superblock holds.
    std::fs::write(p("maxdev.img"), &bytes).unwrap();
    patch(Path::new(&p("maxdev.img")), 8, 220, &5000u32.to_le_bytes());
    let r = run(RAID1, &["examine", &p("maxdev.img")], "UTC");
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("max_dev 5000"));
    // RAID10 with zero copies: mdadm divides by zero (it crashes); we name the field.
    std::fs::write(p("r10.img"), &bytes).unwrap();
    patch(Path::new(&p("r10.img")), 8, 72, &10u32.to_le_bytes());
    patch(Path::new(&p("r10.img")), 8, 76, &0u32.to_le_bytes());
    let r = run(RAID1, &["examine", &p("r10.img")], "UTC");
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("(layout 0 at sector 8"));
    expect_one_line_error(&p("missing.img"), "cannot open");
    expect_one_line_error(dir.path().to_str().unwrap(), "is a directory");
    // examine-bitmap on a member without a bitmap.
    let r = run(RAID1, &["examine-bitmap", good.to_str().unwrap()], "UTC");
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("no internal bitmap"));
}

/// "Key : value" lines of mdadm's text.
fn fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(" : "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn json_carries_the_same_facts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.img");
    let junk = dir.path().join("junk.img");
    let mut sb = base(MinorVersion::V1_2, true);
    sb.feature_map.insert(FeatureMap::BAD_BLOCKS);
    sb.devflags = DevFlags::WRITE_MOSTLY;
    sb.events = 77;
    let mut header = BitmapSuperblock::new(sb.set_uuid, sb.size);
    header.chunksize = 1 << 20;
    header.events = 77;
    write_member(&path, &sb, Some((&header, &[1, 2, 3])), &bad_blocks());
    std::fs::write(&junk, vec![0u8; 1 << 16]).unwrap();
    let (p, j) = (path.to_str().unwrap(), junk.to_str().unwrap());

    let text =
        String::from_utf8(run("mdadm", &["--examine", "--homehost=testhost", p], "UTC").stdout)
            .unwrap();
    let f = fields(&text);
    let out = run(
        RAID1,
        &["examine", "--json", "--homehost=testhost", p, j],
        "UTC",
    );
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(doc["verb"], "examine");
    let devs = doc["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 2);
    let d = &devs[0];
    assert_eq!(d["device"], p);
    assert_eq!(d["ok"], true);
    let r = &d["report"];
    assert_eq!(format!("{:08x}", r["magic"].as_u64().unwrap()), f["Magic"]);
    assert_eq!(r["version"], f["Version"].as_str());
    assert_eq!(
        format!("0x{:x}", r["feature_map"].as_u64().unwrap()),
        f["Feature Map"]
    );
    assert_eq!(r["array_uuid"], f["Array UUID"].as_str());
    assert_eq!(
        format!(
            "{}  (local to host {})",
            r["name"].as_str().unwrap(),
            r["local_to_host"].as_str().unwrap()
        ),
        f["Name"]
    );
    assert_eq!(r["creation_time_text"], f["Creation Time"].as_str());
    assert_eq!(r["creation_time"], 1_700_000_000u64);
    assert_eq!(r["raid_level"], f["Raid Level"].as_str());
    assert_eq!(r["raid_devices"].to_string(), f["Raid Devices"]);
    assert!(f["Avail Dev Size"].starts_with(&format!("{} sectors", r["avail_dev_size_sectors"])));
    assert!(f["Array Size"].starts_with(&format!("{} KiB", r["array_size_kib"])));
    assert_eq!(
        format!("{} sectors", r["data_offset_sectors"]),
        f["Data Offset"]
    );
    assert_eq!(
        format!("{} sectors", r["super_offset_sectors"]),
        f["Super Offset"]
    );
    let u = &r["unused_space"];
    assert_eq!(
        format!(
            "before={} sectors, after={} sectors",
            u["before_sectors"], u["after_sectors"]
        ),
        f["Unused Space"]
    );
    assert_eq!(r["state"], f["State"].as_str());
    assert_eq!(r["device_uuid"], f["Device UUID"].as_str());
    assert_eq!(
        format!(
            "{} sectors from superblock",
            r["internal_bitmap_offset_sectors"]
        ),
        f["Internal Bitmap"]
    );
    assert_eq!(r["flags"], serde_json::json!(["write-mostly"]));
    assert_eq!(f["Flags"], "write-mostly");
    assert_eq!(r["update_time_text"], f["Update Time"].as_str());
    let bb = &r["bad_block_log"];
    assert_eq!(
        format!(
            "{} entries available at offset {} sectors - bad blocks present.",
            bb["entries"], bb["offset_sectors"]
        ),
        f["Bad Block Log"]
    );
    assert_eq!(
        format!("{:x} - correct", r["checksum"]["stored"].as_u64().unwrap()),
        f["Checksum"]
    );
    assert_eq!(r["checksum"]["correct"], true);
    assert_eq!(r["events"].to_string(), f["Events"]);
    assert_eq!(
        format!("Active device {}", r["device_role"]["slot"]),
        f["Device Role"]
    );
    assert_eq!(r["device_role"]["kind"], "active");
    assert!(f["Array State"].starts_with(&format!("{} ", r["array_state"].as_str().unwrap())));
    assert_eq!(r["dev_roles"].as_array().unwrap().len(), 128);
    let e = &devs[1];
    assert_eq!(e["ok"], false);
    assert!(e.get("report").is_none());
    assert_eq!(e["error"]["kind"], "no_superblock");
    assert_eq!(e["error"]["field"], "magic");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("magic 0x00000000 at sector 8")
    );

    // The bad-block list and the bitmap as JSON.
    let out = run(RAID1, &["examine", "--badblocks", "--json", p], "UTC");
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &doc["devices"][0]["report"];
    assert_eq!(r["status"], "listed");
    assert_eq!(
        r["ranges"],
        serde_json::json!([{"sector": 5, "sectors": 1}, {"sector": 1000, "sectors": 8}, {"sector": 123456, "sectors": 512}])
    );
    let lo = LoopDev::attach(&path);
    let x = String::from_utf8(run("mdadm", &["-X", &lo.0], "UTC").stdout).unwrap();
    let xf = fields(&x);
    let out = run(RAID1, &["examine-bitmap", "--json", p], "UTC");
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &doc["devices"][0]["report"];
    assert_eq!(r["uuid"], xf["UUID"].as_str());
    assert_eq!(r["events"].to_string(), xf["Events"]);
    assert_eq!(r["chunksize"], xf["Chunksize"].as_str());
    assert_eq!(
        format!(
            "{} bits (chunks), {} dirty (4.8%)",
            r["total_bits"], r["dirty_bits"]
        ),
        xf["Bitmap"]
    );
    assert_eq!(r["dirty_bits"], 3);
}

#[test]
fn help_documents_exit_codes() {
    for args in [
        vec!["--help"],
        vec!["examine", "--help"],
        vec!["examine-bitmap", "--help"],
    ] {
        let out = run(RAID1, &args, "UTC");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Exit status:") && text.contains("  2  "),
            "{args:?}: {text}"
        );
    }
    let out = run(RAID1, &["examine"], "UTC");
    assert_eq!(out.status.code(), Some(2), "missing DEV is a usage error");
}

/// The home host comes from the mdadm configuration file as mdadm reads it (`HOMEHOST`,
/// `<system>` for the host name, `<none>` for none).
#[test]
fn homehost_from_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("m.img");
    write_member(&img, &base(MinorVersion::V1_2, false), None, &[]);
    let img = img.to_str().unwrap();
    for conf_text in [
        "HOMEHOST testhost\n",
        "homehost <system>\n",
        "HOMEHOST <none>\n",
        "DEVICE partitions\n",
    ] {
        let conf = dir.path().join("mdadm.conf");
        std::fs::write(&conf, conf_text).unwrap();
        let arg = format!("--config={}", conf.to_str().unwrap());
        let out = same(
            conf_text,
            &["--examine", &arg, img],
            &["examine", &arg, img],
            "UTC",
        );
        let local = String::from_utf8_lossy(&out.stdout).contains("(local to host testhost)");
        assert_eq!(local, conf_text == "HOMEHOST testhost\n", "{conf_text}");
    }
}

/// A bitmap version mdadm 4.2 does not read: the same first lines as mdadm on standard output,
/// then one error line and exit status 2.
#[test]
fn unknown_bitmap_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v6.img");
    let sb = base(MinorVersion::V1_2, true);
    let mut header = BitmapSuperblock::new(sb.set_uuid, sb.size);
    header.version = 6;
    write_member(&path, &sb, Some((&header, &[])), &[]);
    let lo = LoopDev::attach(&path);
    let m = run("mdadm", &["-X", &lo.0], "UTC");
    let r = run(RAID1, &["examine-bitmap", &lo.0], "UTC");
    assert!(
        m.stdout == r.stdout,
        "{}",
        diff("version 6", &m.stdout, &r.stdout)
    );
    assert_eq!(r.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&r.stderr),
        format!(
            "raid1: {}: unknown bitmap version (version 6, expected 3, 4 or 5)\n",
            lo.0
        )
    );
}

/// Two valid superblocks on one device (1.0 at the end, 1.2 near the start): mdadm shows the
/// one with the newer ctime, the first probed (1.0) on a tie.
#[test]
fn newest_ctime_picks_the_metadata_version() {
    let dir = tempfile::tempdir().unwrap();
    for (ctime12, want) in [
        (1_700_000_999, "1.2"),
        (1_600_000_000, "1.0"),
        (1_700_000_000, "1.0"),
    ] {
        let path = dir.path().join(format!("both{ctime12}.img"));
        let sb10 = base(MinorVersion::V1_0, false);
        write_member(&path, &sb10, None, &[]);
        let mut sb12 = base(MinorVersion::V1_2, false);
        sb12.ctime = MdTime::from_seconds(ctime12);
        sb12.set_name = SetName::build(Some(b"testhost"), b"twelve");
        let mut buf = vec![0u8; 4096];
        let len = sb12.serialize_padded(&mut buf).unwrap();
        let mut file = OpenOptions::new().write(true).open(&path).unwrap();
        write_at(&mut file, 8, &buf[..len]);
        drop(file);
        let p = path.to_str().unwrap();
        let out = same(p, &["--examine", p], &["examine", p], "UTC");
        let f = fields(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(f["Version"], want, "ctime {ctime12}");
        // -E is accepted as in mdadm.
        let short = run(RAID1, &["-E", p], "UTC");
        assert_eq!(short.stdout, out.stdout);
    }
}

/// An external bitmap file (bitmap superblock at offset 0, as `mdadm --bitmap=FILE` makes): the
/// same report as `mdadm -X FILE`, also when the file ends before the bitmap does.
#[test]
fn external_bitmap_file() {
    let dir = tempfile::tempdir().unwrap();
    let uuid = Uuid::parse_mdadm("00010203:04050607:08090a0b:0c0d0e0f").unwrap();
    let mut header = BitmapSuperblock::new(uuid, 2_097_152);
    header.chunksize = 65_536;
    header.events = 5;
    header.events_cleared = 3;
    let mut region = vec![0u8; BITMAP_SB_LEN + header.bits_len() as usize];
    header.serialize(&mut region).unwrap();
    let mut bits = BitmapBitsMut::new(&mut region[BITMAP_SB_LEN..], header.chunks()).unwrap();
    for k in (0..header.chunks()).step_by(5) {
        bits.set(k).unwrap();
    }
    let full = dir.path().join("full.bitmap");
    std::fs::write(&full, &region).unwrap();
    let cut = dir.path().join("cut.bitmap");
    std::fs::write(&cut, &region[..300]).unwrap();
    for path in [full, cut] {
        let p = path.to_str().unwrap();
        same(p, &["-X", p], &["-X", p], "UTC");
    }
    let r = run(
        RAID1,
        &[
            "examine-bitmap",
            dir.path().join("cut.bitmap").to_str().unwrap(),
        ],
        "UTC",
    );
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("warning: the device ends inside the bitmap")
    );
}
