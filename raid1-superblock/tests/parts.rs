//! Value types, the bitmap, the bad-block log and error reporting.

use raid1_superblock::badblocks::{self, BB_TERMINATOR};
use raid1_superblock::bitmap::{BITMAP_MAGIC, BITMAP_SB_LEN};
use raid1_superblock::*;

#[test]
fn dev_roles_round_trip_every_raw_value() {
    for raw in 0..=u16::MAX {
        assert_eq!(DevRole::from_raw(raw).to_raw(), raw);
    }
    assert_eq!(DevRole::from_raw(0xFFFF), DevRole::Spare);
    assert_eq!(DevRole::from_raw(0xFFFE), DevRole::Faulty);
    assert_eq!(DevRole::from_raw(0xFFFD), DevRole::Journal);
    assert_eq!(DevRole::from_raw(0xFEFF), DevRole::Active(0xFEFF));
    assert_eq!(DevRole::from_raw(0xFF00), DevRole::Reserved(0xFF00));
    assert!(DevRole::active(0xFF00).is_err());
}

#[test]
fn time_packing() {
    let t = MdTime::new(1_700_000_000, 123_456).unwrap();
    assert_eq!(t.seconds(), 1_700_000_000);
    assert_eq!(t.micros(), 123_456);
    assert_eq!(t.0, 1_700_000_000 | (123_456 << 40));
    assert!(MdTime::new(1 << 40, 0).is_none());
    assert!(MdTime::new(0, 1 << 24).is_none());
    assert_eq!(MdTime(u64::MAX).seconds(), (1 << 40) - 1);
    assert_eq!(MdTime::from_seconds(u64::MAX).micros(), 0);
}

#[test]
fn set_name_build_and_split_as_mdadm() {
    let n = SetName::build(Some(b"host"), b"home");
    assert_eq!(n.as_str(), Some("host:home"));
    assert_eq!(n.homehost(), Some(&b"host"[..]));
    assert_eq!(n.name(), b"home");
    // A name with ':' is stored as is.
    assert_eq!(SetName::build(Some(b"host"), b"a:b").as_str(), Some("a:b"));
    // 31 bytes total is the limit for "host:name"; 32 falls back to the bare name.
    let name26 = [b'n'; 26];
    assert_eq!(SetName::build(Some(b"host"), &name26).as_bytes().len(), 31);
    let name27 = [b'n'; 27];
    assert_eq!(
        SetName::build(Some(b"host"), &name27).as_bytes(),
        &name27[..]
    );
    // Without homehost the name is truncated to 31 bytes.
    assert_eq!(SetName::build(None, &[b'x'; 40]).as_bytes().len(), 31);
    // A name filling all 32 bytes (no NUL) is read whole.
    let full = SetName::from_raw([b'z'; 32]);
    assert_eq!(full.as_bytes().len(), 32);
    assert_eq!(full.split(), (None, &[b'z'; 32][..]));
    let odd = SetName::from_raw(*b"a\xffb:c\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    assert_eq!(odd.to_string(), "a\\xffb:c");
    assert_eq!(odd.as_str(), None);
}

#[test]
fn uuid_display_and_parse() {
    let u = Uuid([
        0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
    ]);
    assert_eq!(u.to_string(), "01234567:89abcdef:00112233:44556677");
    assert_eq!(
        Uuid::parse_mdadm("01234567:89abcdef:00112233:44556677").unwrap(),
        u
    );
    assert_eq!(
        Uuid::parse_mdadm("0123456789ABCDEF-0011.2233 44556677").unwrap(),
        u
    );
    assert!(Uuid::parse_mdadm("0123").is_err());
    assert!(Uuid::parse_mdadm("01234567:89abcdef:00112233:4455667788").is_err());
    assert!(Uuid::parse_mdadm("g1234567:89abcdef:00112233:44556677").is_err());
}

#[test]
fn feature_map_names_and_raid1_policy() {
    for bit in 0..13 {
        assert!(FeatureMap::bit_name(1 << bit).is_some());
    }
    assert_eq!(FeatureMap::bit_name(0x2000), None);
    let unknown = FeatureMap::from_bits_retain(0x4000)
        .check_raid1()
        .unwrap_err();
    assert_eq!(
        unknown.to_string(),
        "feature_map: unsupported feature bit 0x4000 (unknown to the kernel)"
    );
    assert_eq!(FeatureMap::KERNEL_KNOWN.bits(), 0x1FFF);
    assert!(FeatureMap::RAID1_SUPPORTED.check_raid1().is_ok());
    let e = FeatureMap::from_bits_retain(0x0001 | 0x0004 | 0x0200)
        .check_raid1()
        .unwrap_err();
    assert_eq!(
        (e.field, e.kind, e.value),
        ("feature_map", ErrorKind::UnsupportedFeature, 0x4)
    );
    assert_eq!(
        e.to_string(),
        "feature_map: unsupported feature bit 0x4 (RESHAPE_ACTIVE)"
    );
}

fn bitmap_fixture(sync_size: u64, chunk: u32) -> [u8; 1024] {
    let mut buf = [0u8; 1024];
    let mut h = BitmapSuperblock::new(Uuid([7; 16]), sync_size);
    h.chunksize = chunk;
    h.events = 17;
    h.events_cleared = 17;
    assert_eq!(h.serialize(&mut buf).unwrap(), BITMAP_SB_LEN);
    buf
}

#[test]
fn bitmap_header_round_trip_and_validation() {
    let buf = bitmap_fixture(129_024, 64 << 20);
    assert_eq!(&buf[..4], b"bitm");
    assert_eq!(
        u32::from_le_bytes(buf[..4].try_into().unwrap()),
        BITMAP_MAGIC
    );
    let h = BitmapSuperblock::parse(&buf).unwrap();
    assert_eq!(h.chunks(), 1);
    assert_eq!(h.bits_len(), 1);
    assert_eq!(h.chunk_sectors(), 131_072);
    assert_eq!(h.chunk_of(131_071), Some(0));
    assert!(h.check_uuid(&Uuid([7; 16])).is_ok());
    assert!(h.check_uuid(&Uuid([8; 16])).is_err());
    let mut again = [0u8; 256];
    h.serialize(&mut again).unwrap();
    assert_eq!(&again[..], &buf[..256]);

    for (version, ok) in [(3, false), (4, true), (5, false), (6, false)] {
        let mut b = buf;
        b[4..8].copy_from_slice(&u32::to_le_bytes(version));
        let strict = BitmapSuperblock::parse(&b);
        assert_eq!(strict.is_ok(), ok, "version {version}");
        if !ok {
            assert_eq!(strict.unwrap_err().kind, ErrorKind::UnsupportedVersion);
        }
        // Examine shows every version.
        assert_eq!(
            BitmapSuperblock::parse_for_examine(&b).unwrap().version,
            version
        );
    }
    let mut bad = buf;
    bad[52..56].copy_from_slice(&3000u32.to_le_bytes());
    assert_eq!(
        BitmapSuperblock::parse(&bad).unwrap_err().field,
        "bitmap.chunksize"
    );
    let mut bad = buf;
    bad[56..60].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        BitmapSuperblock::parse(&bad).unwrap_err().field,
        "bitmap.daemon_sleep"
    );
    let mut bad = buf;
    bad[60..64].copy_from_slice(&16384u32.to_le_bytes());
    assert_eq!(
        BitmapSuperblock::parse(&bad).unwrap_err().field,
        "bitmap.write_behind"
    );
    let mut bad = buf;
    bad[0] = b'B';
    assert_eq!(
        BitmapSuperblock::parse_for_examine(&bad).unwrap_err().kind,
        ErrorKind::BadMagic
    );
    assert!(BitmapSuperblock::parse(&buf[..255]).is_err());
}

#[test]
fn bitmap_bits_lsb_first() {
    // 1023 chunks of 4 KiB.
    let sync_size = 1023 * 8;
    let mut buf = bitmap_fixture(sync_size, 4096);
    let h = BitmapSuperblock::parse(&buf).unwrap();
    assert_eq!(h.chunks(), 1023);
    let bits = &mut buf[BITMAP_SB_LEN..];
    let mut m = BitmapBitsMut::new(bits, h.chunks()).unwrap();
    for k in [0, 1, 7, 8, 1022] {
        m.set(k).unwrap();
    }
    assert!(m.set(1023).is_err());
    assert_eq!(m.count_dirty(), 5);
    m.clear(7).unwrap();
    assert_eq!(m.count_dirty(), 4);
    assert_eq!(bits[0], 0b0000_0011);
    assert_eq!(bits[1], 0b0000_0001);
    assert_eq!(bits[127], 0b0100_0000);
    let r = BitmapBits::new(&bits[..128], 1023).unwrap();
    assert_eq!(r.dirty().collect::<Vec<_>>(), vec![0, 1, 8, 1022]);
    assert!(r.get(1022).unwrap());
    assert!(!r.get(1021).unwrap());
    assert!(BitmapBits::new(&bits[..127], 1023).is_err());
    // Padding bits past the last chunk are not counted.
    let mut raw = [0xFFu8; 128];
    let all = BitmapBitsMut::new(&mut raw, 1023).unwrap();
    assert_eq!(all.count_dirty(), 1023);
    assert_eq!(all.as_ref().dirty().count(), 1023);
    let mut m = BitmapBitsMut::new(&mut raw, 1023).unwrap();
    m.fill(false);
    assert_eq!(m.count_dirty(), 0);
    m.fill(true);
    assert_eq!(m.count_dirty(), 1023);
}

#[test]
fn bad_block_log_encode_iterate_validate() {
    let entries = [
        BadBlock {
            start: 1000,
            len: 8,
        },
        BadBlock {
            start: 123_456,
            len: 512,
        },
        BadBlock {
            start: 123_968,
            len: 1,
        },
    ];
    let mut log = [0u8; 4096];
    assert_eq!(write_bad_blocks(&entries, &mut log).unwrap(), 24);
    assert_eq!(
        u64::from_le_bytes(log[..8].try_into().unwrap()),
        (1000 << 10) | 8
    );
    assert!(log[24..].iter().all(|b| *b == 0xFF));
    let parsed = BadBlockLog::parse(&log).unwrap();
    assert_eq!(parsed.iter().collect::<Vec<_>>(), entries);
    assert_eq!(parsed.len(), 3);
    assert_eq!(parsed.capacity(), 512);
    assert!(parsed.overlaps(1007, 1));
    assert!(!parsed.overlaps(1008, 100));
    assert_eq!(entries[1].start_sector(3), 123_456 * 8);
    assert_eq!(entries[1].len_sectors(3), 4096);
    assert_eq!(BadBlock::decode(BB_TERMINATOR), None);

    let e = write_bad_blocks(&[entries[1], entries[0]], &mut log).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsorted);
    let e = write_bad_blocks(
        &[
            BadBlock { start: 10, len: 5 },
            BadBlock { start: 14, len: 1 },
        ],
        &mut log,
    )
    .unwrap_err();
    assert_eq!((e.kind, e.value), (ErrorKind::Overlap, 14));
    let e = write_bad_blocks(&[BadBlock { start: 10, len: 0 }], &mut log).unwrap_err();
    assert_eq!(e.field, "badblock.len");
    let e = write_bad_blocks(
        &[BadBlock {
            start: 10,
            len: 513,
        }],
        &mut log,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "badblock.len: value 513 out of range 1..=512"
    );
    let e = write_bad_blocks(&entries, &mut [0u8; 16]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::CapacityExceeded { capacity: 2 });
    assert!(
        BadBlock {
            start: 1 << 54,
            len: 1
        }
        .encode()
        .is_err()
    );

    // Raw logs: an unsorted list is refused by parse but listed by the unchecked view.
    let mut raw = [0xFFu8; 64];
    raw[..8].copy_from_slice(&((50u64 << 10) | 2).to_le_bytes());
    raw[8..16].copy_from_slice(&((10u64 << 10) | 2).to_le_bytes());
    assert_eq!(
        BadBlockLog::parse(&raw).unwrap_err().kind,
        ErrorKind::Unsorted
    );
    assert_eq!(BadBlockLog::new_unchecked(&raw).len(), 2);
    raw[8..16].copy_from_slice(&(10u64 << 10).to_le_bytes());
    assert_eq!(BadBlockLog::parse(&raw).unwrap_err().field, "badblock.len");
    assert!(BadBlockLog::parse(&[0xFF; 4096]).unwrap().is_empty());
    assert!(badblocks::validate(&entries).is_ok());
}

fn sample_superblock() -> Superblock {
    let mut sb: Superblock = Superblock::new();
    CreateGeometry::mdadm_default(MinorVersion::V1_2, 131_072, true)
        .unwrap()
        .apply_to(&mut sb);
    sb.raid_disks = 2;
    sb.set_max_dev(128).unwrap();
    sb.set_role(0, DevRole::Active(0)).unwrap();
    sb.set_role(1, DevRole::Active(1)).unwrap();
    sb
}

#[test]
fn strict_parse_errors_name_field_and_value() {
    let sb = sample_superblock();
    let mut good = [0u8; 4096];
    let len = sb.serialize(&mut good).unwrap();
    assert_eq!(len, 512);
    let reserialize = |b: &mut [u8]| {
        let c = superblock::checksum(b).unwrap();
        b[216..220].copy_from_slice(&c.to_le_bytes());
    };
    let parse = |b: &[u8]| Superblock::<MAX_DEV>::parse(b).unwrap_err();

    let mut b = good;
    b[0] = 0;
    let e = parse(&b);
    assert_eq!((e.field, e.kind), ("magic", ErrorKind::BadMagic));
    let mut b = good;
    b[4] = 0;
    assert_eq!(parse(&b).field, "major_version");
    let mut b = good;
    b[220..224].copy_from_slice(&1921u32.to_le_bytes());
    let e = parse(&b);
    assert_eq!((e.field, e.value), ("max_dev", 1921));
    assert_eq!(e.to_string(), "max_dev: value 1921 out of range 0..=1920");
    // max_dev beyond the buffer (mdadm PR #291): a typed error, also in examine mode.
    let mut b = good;
    b[220..224].copy_from_slice(&1920u32.to_le_bytes());
    let e = Superblock::<MAX_DEV>::parse_for_examine(&b[..1024]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::BufferTooSmall { needed: 4096 });
    assert_eq!(
        e.to_string(),
        "dev_roles: buffer too small: 1024 bytes, need 4096"
    );
    let mut b = good;
    b[13] = 1;
    reserialize(&mut b);
    let e = parse(&b);
    assert_eq!(
        (e.field, e.kind),
        ("pad0", ErrorKind::NonZeroPad { offset: 12 })
    );
    assert!(Superblock::<MAX_DEV>::parse_for_examine(&b).is_ok());
    let mut b = good;
    b[250] = 9;
    reserialize(&mut b);
    let e = parse(&b);
    assert_eq!(
        (e.field, e.kind, e.value),
        ("pad3", ErrorKind::NonZeroPad { offset: 250 }, 9)
    );
    // The sample reserves a bad-block log, so BAD_BLOCKS (0x8) is acceptable too.
    for (bit, ok) in [
        (0x2, true),
        (0x4, false),
        (0x8, true),
        (0x10, true),
        (0x20, false),
        (0x40, false),
        (0x80, true),
        (0x100, false),
        (0x200, false),
        (0x400, false),
        (0x800, false),
        (0x1000, false),
        (0x2000, false),
        (0x8000_0000, false),
    ] {
        let mut b = good;
        b[8..12].copy_from_slice(&(1u32 | bit).to_le_bytes());
        reserialize(&mut b);
        let r = Superblock::<MAX_DEV>::parse(&b);
        assert_eq!(r.is_ok(), ok, "bit {bit:#x}");
        if !ok {
            let e = r.unwrap_err();
            assert_eq!(
                (e.kind, e.value),
                (ErrorKind::UnsupportedFeature, i128::from(bit))
            );
        }
        let lenient = Superblock::<MAX_DEV>::parse_for_examine(&b).unwrap();
        assert_eq!(lenient.feature_map.bits(), 1 | bit);
    }
    // BAD_BLOCKS without a reserved log.
    let mut s2 = sb.clone();
    s2.feature_map.insert(FeatureMap::BAD_BLOCKS);
    s2.bblog_offset = 0;
    let mut b = [0u8; 512];
    s2.serialize(&mut b).unwrap();
    assert_eq!(parse(&b).field, "bblog_offset");
    s2.bblog_offset = 16;
    s2.bblog_size = 9;
    s2.serialize(&mut b).unwrap();
    assert_eq!(parse(&b).field, "bblog_size");
    // A bad checksum: refused strictly, shown by examine.
    let mut b = good;
    b[216] ^= 0xFF;
    let e = parse(&b);
    assert!(matches!(e.kind, ErrorKind::ChecksumMismatch { .. }));
    let ex = Superblock::<MAX_DEV>::parse_for_examine(&b).unwrap();
    let st = ex.checksum_status().unwrap();
    assert!(!st.is_correct());
    assert_eq!(
        st.computed,
        u32::from_le_bytes(good[216..220].try_into().unwrap())
    );
    // A role beyond a small capacity.
    let mut s3 = sb.clone();
    s3.set_role(100, DevRole::Faulty).unwrap();
    let mut b = [0u8; 512];
    s3.serialize(&mut b).unwrap();
    let e = Superblock::<8>::parse(&b).unwrap_err();
    assert_eq!(
        (e.field, e.kind, e.value),
        (
            "dev_roles",
            ErrorKind::CapacityExceeded { capacity: 8 },
            100
        )
    );
    let mut small: Superblock<8> = Superblock::new();
    small.set_max_dev(128).unwrap();
    assert!(small.set_role(100, DevRole::Spare).is_ok());
    assert!(small.set_role(100, DevRole::Faulty).is_err());
    assert!(small.set_role(128, DevRole::Spare).is_err());
    // Short buffers.
    assert_eq!(
        parse(&good[..100]).kind,
        ErrorKind::BufferTooSmall { needed: 256 }
    );
    assert_eq!(
        sb.serialize(&mut [0u8; 511]).unwrap_err().kind,
        ErrorKind::BufferTooSmall { needed: 512 }
    );
}

#[test]
fn placement_checks() {
    let sb = sample_superblock();
    assert_eq!(sb.check_placement(131_072).unwrap(), MinorVersion::V1_2);
    // Device too small for the data area.
    assert_eq!(sb.check_placement(131_071).unwrap_err().field, "data_size");
    let mut s = sb.clone();
    s.super_offset = 0;
    s.data_offset = 0;
    assert_eq!(s.check_placement(131_072).unwrap_err().field, "data_offset");
    let g = CreateGeometry::mdadm_default(MinorVersion::V1_0, 131_072, false).unwrap();
    let mut s = sb.clone();
    g.apply_to(&mut s);
    assert_eq!(s.check_placement(131_072).unwrap(), MinorVersion::V1_0);
    assert_eq!(
        s.check_placement(131_080).unwrap_err().field,
        "super_offset"
    );
    assert_eq!(s.bblog_sector(), Some(131_048));
    assert_eq!(s.bitmap_sector(), None);
}

#[test]
fn examine_mode_round_trips_everything_but_the_checksum() {
    let mut sb = sample_superblock();
    sb.pad0 = 0xdead;
    sb.pad3 = [0xAB; 32];
    sb.feature_map = FeatureMap::from_bits_retain(0xFFFF_FFFF);
    sb.devflags = DevFlags::from_bits_retain(0xFF);
    sb.set_role(5, DevRole::Reserved(0xFF10)).unwrap();
    let mut b = [0u8; 512];
    sb.serialize(&mut b).unwrap();
    b[216] ^= 1;
    let ex = Superblock::<MAX_DEV>::parse_for_examine(&b).unwrap();
    let mut b2 = [0u8; 512];
    ex.serialize(&mut b2).unwrap();
    b2[216] ^= 1;
    assert_eq!(b, b2);
    assert_eq!(ex.role(5), Some(DevRole::Reserved(0xFF10)));
    assert_eq!(ex.ppl_offset(), 8);
    assert_eq!(ex.ppl_size(), 0);
}
