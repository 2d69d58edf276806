//! mdadm as an oracle: images written with this crate's serialisers are read by the host's
//! `mdadm --examine`, `--examine-badblocks` and `-X` (mdadm 4.2), which must report a correct
//! checksum and the fields we meant. mdadm missing is a failure, not a skip.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use raid1_superblock::bitmap::BITMAP_SB_LEN;
use raid1_superblock::*;

const DEV_SECTORS: u64 = 131_072; // 64 MiB

fn run(prog: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(prog).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `{prog}` ({e}): this test needs mdadm and losetup installed (scripts/setup.sh)")
    });
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn mdadm(args: &[&str]) -> String {
    let (ok, text) = run("mdadm", args);
    assert!(ok, "mdadm {args:?} failed:\n{text}");
    text
}

/// "Key : value" lines of mdadm's output.
fn fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(" : "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn field<'a>(f: &'a BTreeMap<String, String>, key: &str, text: &str) -> &'a str {
    f.get(key)
        .unwrap_or_else(|| panic!("mdadm printed no `{key}`:\n{text}"))
}

/// A loop device for `-X` (which reads bitmaps only from block devices); detached on drop.
struct LoopDev(String);

impl LoopDev {
    fn attach(path: &Path) -> LoopDev {
        let (ok, out) = run("losetup", &["-f", "--show", path.to_str().unwrap()]);
        assert!(ok, "losetup failed: {out}");
        LoopDev(out.trim().to_string())
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = run("losetup", &["-d", &self.0]);
    }
}

fn write_at(file: &mut File, sector: u64, bytes: &[u8]) {
    file.seek(SeekFrom::Start(sector * 512)).unwrap();
    file.write_all(bytes).unwrap();
}

/// A sparse 64 MiB member image holding `sb`, optionally a bitmap with the given dirty chunks,
/// and a bad-block log.
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
    file.sync_all().unwrap();
}

const UUID: &str = "01234567:89abcdef:00112233:44556677";

fn base(minor: MinorVersion, bitmap: bool) -> Superblock {
    let mut sb: Superblock = Superblock::new();
    CreateGeometry::mdadm_default(minor, DEV_SECTORS, bitmap)
        .unwrap()
        .apply_to(&mut sb);
    sb.set_uuid = Uuid::parse_mdadm(UUID).unwrap();
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

fn examine(path: &Path) -> (String, BTreeMap<String, String>) {
    let text = mdadm(&["--examine", path.to_str().unwrap()]);
    let f = fields(&text);
    (text, f)
}

fn assert_checksum_correct(sb: &Superblock, f: &BTreeMap<String, String>, text: &str) {
    let expect = format!("{:08x} - correct", sb.compute_checksum().unwrap());
    assert_eq!(field(f, "Checksum", text), expect, "{text}");
}

#[test]
fn v1_2_with_bitmap_and_bad_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m12.img");
    let mut sb = base(MinorVersion::V1_2, true);
    sb.events = 4242;
    sb.feature_map.insert(FeatureMap::BAD_BLOCKS);
    let bad = [
        BadBlock {
            start: 1000,
            len: 8,
        },
        BadBlock {
            start: 123_456,
            len: 512,
        },
    ];
    // Bitmap of 1 MiB chunks: 63 bits for the 63 MiB array, 10 of them dirty.
    let mut header = BitmapSuperblock::new(sb.set_uuid, sb.size);
    header.chunksize = 1 << 20;
    header.events = 4242;
    header.events_cleared = 4000;
    let dirty = [0, 1, 2, 7, 8, 9, 31, 32, 61, 62];
    assert_eq!(header.chunks(), 63);
    write_member(&path, &sb, Some((&header, &dirty)), &bad);

    let (text, f) = examine(&path);
    assert_checksum_correct(&sb, &f, &text);
    assert_eq!(field(&f, "Magic", &text), "a92b4efc");
    assert_eq!(field(&f, "Version", &text), "1.2");
    assert_eq!(field(&f, "Array UUID", &text), UUID);
    assert_eq!(field(&f, "Name", &text), "testhost:mirror");
    assert_eq!(field(&f, "Raid Level", &text), "raid1");
    assert_eq!(field(&f, "Raid Devices", &text), "2");
    assert!(field(&f, "Feature Map", &text).starts_with("0x9"), "{text}");
    assert!(
        field(&f, "Avail Dev Size", &text).starts_with("129024 sectors"),
        "{text}"
    );
    assert!(
        field(&f, "Data Offset", &text).starts_with("2048 sectors"),
        "{text}"
    );
    assert!(
        field(&f, "Super Offset", &text).starts_with("8 sectors"),
        "{text}"
    );
    assert_eq!(field(&f, "State", &text), "clean");
    assert_eq!(
        field(&f, "Device UUID", &text),
        "a1a2a3a4:b1b2b3b4:c1c2c3c4:d1d2d3d4"
    );
    assert_eq!(
        field(&f, "Internal Bitmap", &text),
        "8 sectors from superblock"
    );
    assert!(
        field(&f, "Bad Block Log", &text)
            .starts_with("512 entries available at offset 16 sectors - bad blocks present"),
        "{text}"
    );
    assert_eq!(field(&f, "Events", &text), "4242");
    assert_eq!(field(&f, "Device Role", &text), "Active device 0");
    assert!(field(&f, "Array State", &text).starts_with("AA "), "{text}");
    assert!(!f.contains_key("Flags"), "{text}");

    let bb = mdadm(&["--examine-badblocks", path.to_str().unwrap()]);
    assert!(bb.contains("1000 for 8 sectors"), "{bb}");
    assert!(bb.contains("123456 for 512 sectors"), "{bb}");
    assert_eq!(bb.matches(" for ").count(), 2, "{bb}");

    let lo = LoopDev::attach(&path);
    let x = mdadm(&["-X", &lo.0]);
    let xf = fields(&x);
    assert!(field(&xf, "Magic", &x).contains("6d746962"), "{x}");
    assert_eq!(field(&xf, "Version", &x), "4");
    assert_eq!(field(&xf, "UUID", &x), UUID);
    assert_eq!(field(&xf, "Events", &x), "4242");
    assert_eq!(field(&xf, "Events Cleared", &x), "4000");
    assert!(field(&xf, "Chunksize", &x).starts_with("1 MB"), "{x}");
    assert!(field(&xf, "Sync Size", &x).starts_with("64512 "), "{x}");
    assert!(
        field(&xf, "Bitmap", &x).starts_with("63 bits (chunks), 10 dirty"),
        "{x}"
    );
}

#[test]
fn v1_1_odd_max_dev_faulty_spare_flags_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m11.img");
    let mut sb = base(MinorVersion::V1_1, false);
    sb.raid_disks = 3;
    sb.set_max_dev(5).unwrap(); // odd: 266 bytes, trailing u16 in the checksum
    sb.set_role(0, DevRole::Active(0)).unwrap();
    sb.set_role(1, DevRole::Faulty).unwrap();
    sb.set_role(2, DevRole::Spare).unwrap();
    sb.set_role(3, DevRole::Active(2)).unwrap();
    sb.set_role(4, DevRole::Active(2)).unwrap(); // replacement of slot 2
    sb.dev_number = 4;
    sb.feature_map = FeatureMap::RECOVERY_OFFSET | FeatureMap::REPLACEMENT;
    sb.recovery_offset = 65_536;
    sb.devflags = DevFlags::WRITE_MOSTLY | DevFlags::FAILFAST;
    sb.resync_offset = 0; // active
    sb.events = 99;
    write_member(&path, &sb, None, &[]);

    let (text, f) = examine(&path);
    assert_checksum_correct(&sb, &f, &text);
    assert_eq!(field(&f, "Version", &text), "1.1");
    assert!(
        field(&f, "Super Offset", &text).starts_with("0 sectors"),
        "{text}"
    );
    assert!(
        field(&f, "Data Offset", &text).starts_with("2048 sectors"),
        "{text}"
    );
    assert!(
        field(&f, "Recovery Offset", &text).starts_with("65536 sectors"),
        "{text}"
    );
    assert_eq!(field(&f, "State", &text), "active");
    assert_eq!(field(&f, "Flags", &text), "write-mostly failfast");
    assert_eq!(field(&f, "Events", &text), "99");
    assert_eq!(field(&f, "Device Role", &text), "Replacement device 2");
    assert!(
        field(&f, "Array State", &text).starts_with("A.R "),
        "{text}"
    );
    assert!(
        field(&f, "Bad Block Log", &text).starts_with("512 entries available at offset 16 sectors"),
        "{text}"
    );

    // This superblock seen from the faulty device (dev_number 1) and the spare (2).
    for dev in [1, 2] {
        sb.dev_number = dev;
        sb.feature_map = FeatureMap::empty();
        write_member(&path, &sb, None, &[]);
        let (text, f) = examine(&path);
        assert_checksum_correct(&sb, &f, &text);
        assert_eq!(field(&f, "Device Role", &text), "spare", "dev {dev}");
    }
}

#[test]
fn v1_0_bitmap_below_superblock_and_shifted_bad_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m10.img");
    let mut sb = base(MinorVersion::V1_0, true);
    assert_eq!(
        (sb.super_offset, sb.bitmap_offset, sb.bblog_offset),
        (131_056, -16, -8)
    );
    sb.feature_map.insert(FeatureMap::BAD_BLOCKS);
    sb.bblog_shift = 3;
    sb.events = 7;
    let bad = [
        BadBlock { start: 10, len: 1 },
        BadBlock { start: 20, len: 4 },
    ];
    let mut header = BitmapSuperblock::new(sb.set_uuid, sb.size);
    header.events = 7;
    header.events_cleared = 7;
    write_member(&path, &sb, Some((&header, &[0])), &bad);

    let (text, f) = examine(&path);
    assert_checksum_correct(&sb, &f, &text);
    assert_eq!(field(&f, "Version", &text), "1.0");
    assert!(
        field(&f, "Super Offset", &text).starts_with("131056 sectors"),
        "{text}"
    );
    // Data offset 0 is not printed; the used size differs from data_size so it is.
    assert!(!f.contains_key("Data Offset"), "{text}");
    assert!(
        field(&f, "Used Dev Size", &text).starts_with("130944 sectors"),
        "{text}"
    );
    assert!(
        field(&f, "Avail Dev Size", &text).starts_with("131040 sectors"),
        "{text}"
    );
    assert_eq!(
        field(&f, "Internal Bitmap", &text),
        "-16 sectors from superblock"
    );
    assert!(
        field(&f, "Bad Block Log", &text)
            .starts_with("512 entries available at offset -8 sectors - bad blocks present"),
        "{text}"
    );
    let bb = mdadm(&["--examine-badblocks", path.to_str().unwrap()]);
    assert!(bb.contains("80 for 8 sectors"), "{bb}");
    assert!(bb.contains("160 for 32 sectors"), "{bb}");

    let lo = LoopDev::attach(&path);
    let x = mdadm(&["-X", &lo.0]);
    let xf = fields(&x);
    assert!(field(&xf, "Chunksize", &x).starts_with("64 MB"), "{x}");
    assert!(
        field(&xf, "Bitmap", &x).starts_with("1 bits (chunks), 1 dirty"),
        "{x}"
    );
}

#[test]
fn bad_checksum_is_reported_as_expected_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.img");
    let sb = base(MinorVersion::V1_2, false);
    write_member(&path, &sb, None, &[]);
    // Corrupt the stored checksum only.
    let mut file = OpenOptions::new().write(true).open(&path).unwrap();
    file.seek(SeekFrom::Start(8 * 512 + 216)).unwrap();
    file.write_all(&0x1234_5678u32.to_le_bytes()).unwrap();
    drop(file);
    let (text, f) = examine(&path);
    let expect = format!("12345678 - expected {:08x}", sb.compute_checksum().unwrap());
    assert_eq!(field(&f, "Checksum", &text), expect, "{text}");
    // Our examine mode agrees.
    let raw = std::fs::read(&path).unwrap();
    let ex: Superblock = Superblock::parse_for_examine(&raw[4096..8192]).unwrap();
    let st = ex.checksum_status().unwrap();
    assert_eq!(
        (st.stored, st.computed),
        (0x1234_5678, sb.compute_checksum().unwrap())
    );
}
