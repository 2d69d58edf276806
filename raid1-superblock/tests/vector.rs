//! The test vector of md-format.md §1.17 (accepted by mdadm 4.2 as "Checksum : 51514ee5 -
//! correct") and the checksum edge cases of §6, byte for byte.

use raid1_superblock::superblock::{checksum, offsets};
use raid1_superblock::*;

/// The 1.2 superblock of §1.17: first 0x110 bytes as listed, dev_roles up to byte 511 `ffff`.
fn vector() -> [u8; 512] {
    let head: [&str; 17] = [
        "fc4e2ba9 01000000 01000000 00000000",
        "01234567 89abcdef 00112233 44556677",
        "74657374 686f7374 3a300000 00000000",
        "00000000 00000000 00000000 00000000",
        "00f15365 00000000 01000000 00000000",
        "00f80100 00000000 00000000 02000000",
        "08000000 00000000 00000000 00000000",
        "00000000 00000000 00000000 00000000",
        "00080000 00000000 00f80100 00000000",
        "08000000 00000000 00000000 00000000",
        "00000000 00000000 a1a2a3a4 b1b2b3b4",
        "c1c2c3c4 d1d2d3d4 00000800 10000000",
        "64f15365 00000000 11000000 00000000",
        "ffffffff ffffffff e54e5151 80000000",
        "00000000 00000000 00000000 00000000",
        "00000000 00000000 00000000 00000000",
        "00000100 ffffffff ffffffff ffffffff",
    ];
    let mut out = [0xFFu8; 512];
    let hex: Vec<u8> = head.concat().bytes().filter(|c| *c != b' ').collect();
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap();
    }
    out
}

#[test]
fn test_vector_parses_with_every_field() {
    let bytes = vector();
    assert_eq!(checksum(&bytes).unwrap(), 0x5151_4ee5);
    let sb: Superblock = Superblock::parse(&bytes).unwrap();
    assert_eq!(sb.feature_map, FeatureMap::BITMAP_OFFSET);
    assert_eq!(
        sb.set_uuid.to_string(),
        "01234567:89abcdef:00112233:44556677"
    );
    assert_eq!(sb.set_name.as_str(), Some("testhost:0"));
    assert_eq!(sb.set_name.split(), (Some(&b"testhost"[..]), &b"0"[..]));
    assert_eq!(sb.ctime.seconds(), 1_700_000_000);
    assert_eq!(
        (sb.level, sb.layout, sb.chunksize, sb.raid_disks),
        (1, 0, 0, 2)
    );
    assert_eq!(sb.size, 129_024);
    assert_eq!(sb.bitmap_offset, 8);
    assert_eq!(
        (sb.data_offset, sb.data_size, sb.super_offset),
        (2048, 129_024, 8)
    );
    assert_eq!(sb.recovery_offset, 0);
    assert_eq!(sb.dev_number, 0);
    assert_eq!(
        sb.device_uuid.to_string(),
        "a1a2a3a4:b1b2b3b4:c1c2c3c4:d1d2d3d4"
    );
    assert_eq!(
        (sb.devflags, sb.bblog_shift, sb.bblog_size, sb.bblog_offset),
        (DevFlags::empty(), 0, 8, 16)
    );
    assert_eq!(sb.utime.seconds(), 1_700_000_100);
    assert_eq!(sb.events, 17);
    assert!(sb.is_clean());
    assert_eq!(sb.sb_csum, 0x5151_4ee5);
    assert_eq!(sb.max_dev, 128);
    assert_eq!(sb.role(0), Some(DevRole::Active(0)));
    assert_eq!(sb.role(1), Some(DevRole::Active(1)));
    assert_eq!(sb.role(2), Some(DevRole::Spare));
    assert_eq!(sb.role(128), None);
    assert_eq!(sb.this_role(), DevRole::Active(0));
    assert_eq!(sb.minor_version(), MinorVersion::V1_2);
    assert_eq!(sb.check_placement(131_072).unwrap(), MinorVersion::V1_2);
    assert_eq!(sb.bitmap_sector(), Some(16));
    assert_eq!(sb.bblog_sector(), Some(24));
    assert!(sb.checksum_status().unwrap().is_correct());
}

#[test]
fn test_vector_serialises_byte_for_byte() {
    let bytes = vector();
    let sb: Superblock = Superblock::parse(&bytes).unwrap();
    let mut out = [0u8; 4096];
    assert_eq!(sb.serialize(&mut out).unwrap(), 512);
    assert_eq!(&out[..512], &bytes[..]);
    assert!(
        out[512..].iter().all(|b| *b == 0),
        "serialize must not touch bytes past 256 + 2*max_dev"
    );
    assert_eq!(sb.compute_checksum().unwrap(), 0x5151_4ee5);

    // A small role capacity reads the same superblock (entries >= 4 are all spare) and writes
    // the same bytes.
    let small: Superblock<4> = Superblock::parse(&bytes).unwrap();
    let mut out2 = [0u8; 512];
    small.serialize(&mut out2).unwrap();
    assert_eq!(out2, bytes);
    assert!(core::mem::size_of::<Superblock<4>>() < 400);
}

#[test]
fn test_vector_built_from_scratch() {
    let mut sb: Superblock<8> = Superblock::new();
    sb.feature_map = FeatureMap::BITMAP_OFFSET;
    sb.set_uuid = Uuid::parse_mdadm("01234567:89abcdef:00112233:44556677").unwrap();
    sb.set_name = SetName::build(Some(b"testhost"), b"0");
    sb.ctime = MdTime::from_seconds(1_700_000_000);
    sb.raid_disks = 2;
    CreateGeometry::mdadm_default(MinorVersion::V1_2, 131_072, true)
        .unwrap()
        .apply_to(&mut sb);
    sb.device_uuid = Uuid([
        0xa1, 0xa2, 0xa3, 0xa4, 0xb1, 0xb2, 0xb3, 0xb4, 0xc1, 0xc2, 0xc3, 0xc4, 0xd1, 0xd2, 0xd3,
        0xd4,
    ]);
    sb.utime = MdTime::new(1_700_000_100, 0).unwrap();
    sb.events = 17;
    sb.set_max_dev(128).unwrap();
    sb.set_role(0, DevRole::Active(0)).unwrap();
    sb.set_role(1, DevRole::active(1).unwrap()).unwrap();
    let mut out = [0u8; 512];
    assert_eq!(sb.serialize_padded(&mut out).unwrap(), 512);
    assert_eq!(out, vector());
}

#[test]
fn checksum_odd_max_dev_covers_trailing_u16() {
    // max_dev = 3: 262 bytes, 65 words plus a trailing u16.
    let mut sb: Superblock = Superblock::new();
    sb.data_size = 100;
    sb.set_max_dev(3).unwrap();
    sb.set_role(2, DevRole::Active(0x1234)).unwrap();
    let mut buf = [0u8; 512];
    assert_eq!(sb.serialize(&mut buf).unwrap(), 262);
    let stored = u32::from_le_bytes(buf[216..220].try_into().unwrap());
    // Recompute by hand: words of the first 260 bytes + the u16 at 260.
    let mut sum: u64 = 0;
    for (i, w) in buf[..260].chunks(4).enumerate() {
        if i != 216 / 4 {
            sum += u64::from(u32::from_le_bytes(w.try_into().unwrap()));
        }
    }
    sum += u64::from(u16::from_le_bytes(buf[260..262].try_into().unwrap()));
    assert_eq!(stored, ((sum & 0xFFFF_FFFF) + (sum >> 32)) as u32);
    // Bytes after 262 are not covered; bytes 260..262 are.
    buf[262] = 0x55;
    assert_eq!(checksum(&buf).unwrap(), stored);
    buf[261] ^= 1;
    assert_ne!(checksum(&buf).unwrap(), stored);
    let parsed: Result<Superblock, _> = Superblock::parse(&buf);
    assert!(matches!(
        parsed.unwrap_err().kind,
        ErrorKind::ChecksumMismatch { .. }
    ));
}

#[test]
fn checksum_single_fold_without_end_around_carry() {
    // Build a superblock whose 64-bit word sum is 0x87_FFFF_FFFF: the checksum must be
    // 0xFFFF_FFFF + 0x87 truncated = 0x86, not 0x87.
    // max_dev = 256 so that there are enough words: 60 free words in the fixed part (all but
    // magic, major_version, sb_csum, max_dev) plus 128 words of dev_roles.
    let mut buf = [0u8; 768];
    buf[0..4].copy_from_slice(&SB_MAGIC.to_le_bytes());
    buf[4..8].copy_from_slice(&1u32.to_le_bytes());
    buf[220..224].copy_from_slice(&256u32.to_le_bytes());
    let fixed: u64 = u64::from(SB_MAGIC) + 1 + 256;
    let target: u64 = 0x87_FFFF_FFFF;
    let mut rest = target - fixed;
    let free_words = (8..216).step_by(4).chain((224..768).step_by(4));
    for off in free_words {
        let w = rest.min(u64::from(u32::MAX));
        buf[off..off + 4].copy_from_slice(&(w as u32).to_le_bytes());
        rest -= w;
    }
    assert_eq!(rest, 0, "not enough free words");
    assert_eq!(checksum(&buf).unwrap(), 0x86);
    buf[offsets::SB_CSUM..offsets::SB_CSUM + 4].copy_from_slice(&0x86u32.to_le_bytes());
    let sb = Superblock::<MAX_DEV>::parse_for_examine(&buf).unwrap();
    assert_eq!(
        sb.checksum_status().unwrap(),
        ChecksumStatus {
            stored: 0x86,
            computed: 0x86
        }
    );
    buf[offsets::SB_CSUM..offsets::SB_CSUM + 4].copy_from_slice(&0x87u32.to_le_bytes());
    let strict_err = Superblock::<MAX_DEV>::parse_with(
        &buf,
        &ParseOptions {
            check_consistency: false,
            require_zero_pads: false,
            allowed_features: FeatureMap::from_bits_retain(u32::MAX),
            ..ParseOptions::STRICT
        },
    )
    .unwrap_err();
    assert_eq!(
        strict_err.kind,
        ErrorKind::ChecksumMismatch { computed: 0x86 }
    );
    assert_eq!(strict_err.value, 0x87);
    assert_eq!(
        strict_err.to_string(),
        "sb_csum: checksum mismatch: stored 0x00000087, computed 0x00000086"
    );
}
