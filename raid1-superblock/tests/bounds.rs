//! The edges of every limit in the format: the largest value accepted and the first refused,
//! and the arithmetic near overflow. Written for the mutants that cargo-mutants found
//! surviving (docs/TESTING.md): each test kills at least one.

use raid1_superblock::badblocks::{BB_MAX_LEN, BB_MAX_START, validate};
use raid1_superblock::bitmap::MAX_WRITE_BEHIND;
use raid1_superblock::{
    BadBlock, BadBlockLog, BitmapBitsMut, BitmapSuperblock, CreateGeometry, ErrorKind,
    MinorVersion, Uuid, write_bad_blocks,
};

#[test]
fn a_bad_block_of_the_largest_length_is_valid_and_one_more_is_not() {
    let max = BadBlock {
        start: 0,
        len: BB_MAX_LEN,
    };
    assert!(validate(&[max]).is_ok());
    assert!(max.encode().is_ok());
    let over = BadBlock {
        start: 0,
        len: BB_MAX_LEN + 1,
    };
    assert_eq!(validate(&[over]).unwrap_err().field, "badblock.len");
    let far = BadBlock {
        start: BB_MAX_START,
        len: 1,
    };
    assert!(validate(&[far]).is_ok());
    assert_eq!(
        validate(&[BadBlock {
            start: BB_MAX_START + 1,
            len: 1
        }])
        .unwrap_err()
        .field,
        "badblock.start"
    );
}

#[test]
fn sector_arithmetic_saturates_instead_of_wrapping() {
    let far = BadBlock {
        start: BB_MAX_START,
        len: BB_MAX_LEN,
    };
    // 2^54 - 1 units of 2^10 sectors still fit in 64 bits; of 2^11 they do not.
    assert_eq!(far.start_sector(10), BB_MAX_START << 10);
    assert_eq!(far.start_sector(11), u64::MAX);
    assert_eq!(far.len_sectors(0), 512);
    assert_eq!(far.len_sectors(8), 512 << 8);
    assert_eq!(far.len_sectors(55), u64::MAX);
    assert_eq!(far.len_sectors(64), u64::MAX);
    let zero_start = BadBlock { start: 0, len: 1 };
    assert_eq!(zero_start.start_sector(200), 0);
}

#[test]
fn adjacent_ranges_do_not_overlap() {
    let entries = [BadBlock { start: 10, len: 2 }];
    let mut bytes = [0u8; 64];
    write_bad_blocks(&entries, &mut bytes).unwrap();
    let log = BadBlockLog::parse(&bytes).unwrap();
    assert!(!log.overlaps(5, 5), "[5, 10) ends where the entry starts");
    assert!(log.overlaps(5, 6));
    assert!(log.overlaps(11, 1));
    assert!(!log.overlaps(12, 4), "[12, 16) starts where the entry ends");
    // Adjacent entries are a valid log.
    assert!(
        validate(&[
            BadBlock { start: 10, len: 2 },
            BadBlock { start: 12, len: 1 }
        ])
        .is_ok()
    );
}

#[test]
fn a_log_can_be_filled_to_its_last_entry() {
    let entries: Vec<BadBlock> = (0..8)
        .map(|i| BadBlock {
            start: i * 4,
            len: 1,
        })
        .collect();
    let mut bytes = [0u8; 64];
    assert_eq!(write_bad_blocks(&entries, &mut bytes).unwrap(), 64);
    let log = BadBlockLog::parse(&bytes).unwrap();
    assert_eq!(log.len(), 8, "a full log has no terminator");
    let nine: Vec<BadBlock> = (0..9)
        .map(|i| BadBlock {
            start: i * 4,
            len: 1,
        })
        .collect();
    assert!(matches!(
        write_bad_blocks(&nine, &mut bytes).unwrap_err().kind,
        ErrorKind::CapacityExceeded { capacity: 8 }
    ));
}

#[test]
fn write_behind_accepts_its_maximum() {
    let mut bm = BitmapSuperblock::new(Uuid([7; 16]), 1 << 20);
    bm.write_behind = MAX_WRITE_BEHIND;
    assert!(bm.validate().is_ok());
    bm.write_behind = MAX_WRITE_BEHIND + 1;
    assert_eq!(bm.validate().unwrap_err().field, "bitmap.write_behind");
}

#[test]
fn a_bits_view_reports_its_length() {
    let mut bytes = [0u8; 4];
    let view = BitmapBitsMut::new(&mut bytes, 27).unwrap();
    assert_eq!(view.chunks(), 27);
}

#[test]
fn huge_devices_grow_the_bitmap_chunk_past_the_default() {
    // mdadm doubles the chunk until the bits fit in 256 sectors of bitmap: for 256 TiB that is
    // 512 MiB (2^36 + 1 bits at 4 KiB, halved 17 times, fit in (256 * 512 - 256) * 8).
    let dev = 256u64 << 31; // 256 TiB in sectors
    let g = CreateGeometry::mdadm_default(MinorVersion::V1_2, dev, true).unwrap();
    let b = g.bitmap.unwrap();
    assert_eq!(b.chunk_bytes, 512 << 20);
    assert!(b.chunks <= (256 * 512 - 256) * 8);
    // Below 64 TiB the 64 MiB default stands.
    let g = CreateGeometry::mdadm_default(MinorVersion::V1_2, 32u64 << 31, true).unwrap();
    assert_eq!(g.bitmap.unwrap().chunk_bytes, 64 << 20);
}

#[test]
fn default_geometry_always_has_room_for_the_log() {
    // Why mdadm's short-room cases are not in mdadm_default: for every size, the array fits
    // below the bitmap and the log (1.0) and the log ends before the data (1.1, 1.2).
    let sizes = (24..=70_000u64).chain((16..52).flat_map(|p| {
        let b = 1u64 << p;
        [b - 1, b, b + 7, b + 4095, b * 3 / 2]
    }));
    for dev in sizes {
        for minor in [MinorVersion::V1_0, MinorVersion::V1_1, MinorVersion::V1_2] {
            for bitmap in [false, true] {
                let Ok(g) = CreateGeometry::mdadm_default(minor, dev, bitmap) else {
                    continue;
                };
                let what = format!("{dev} sectors, {minor:?}, bitmap {bitmap}");
                assert!(g.size <= g.data_size, "{what}: size beyond data_size");
                assert_eq!(g.bblog_size, 8, "{what}");
                let log_end = g.super_offset as i64 + i64::from(g.bblog_offset) + 8;
                if minor == MinorVersion::V1_0 {
                    assert!(g.data_offset + g.data_size <= g.super_offset - 8, "{what}");
                    if let Some(b) = g.bitmap {
                        let bm_start = g.super_offset as i64 + i64::from(b.offset);
                        assert!(
                            bm_start >= (g.data_offset + g.size) as i64,
                            "{what}: bitmap over data"
                        );
                    }
                } else {
                    assert!(log_end <= g.data_offset as i64, "{what}: log over data");
                }
            }
        }
    }
}

#[test]
fn update_checksum_makes_the_stored_checksum_right() {
    let mut sb: raid1_superblock::Superblock = raid1_superblock::Superblock::new();
    sb.max_dev = 2;
    sb.sb_csum = 0xdead_beef;
    let before = sb.checksum_status().unwrap();
    assert_ne!(before.stored, before.computed);
    sb.update_checksum().unwrap();
    let after = sb.checksum_status().unwrap();
    assert_eq!(after.stored, after.computed);
    assert_eq!(after.computed, before.computed);
}

#[test]
fn devices_in_slot_counts_a_replacement() {
    use raid1_superblock::DevRole;
    let mut sb: raid1_superblock::Superblock = raid1_superblock::Superblock::new();
    sb.max_dev = 4;
    sb.set_role(0, DevRole::Active(0)).unwrap();
    sb.set_role(1, DevRole::Active(1)).unwrap();
    sb.set_role(2, DevRole::Active(0)).unwrap();
    sb.set_role(3, DevRole::Spare).unwrap();
    assert_eq!(sb.devices_in_slot(0), 2);
    assert_eq!(sb.devices_in_slot(1), 1);
    assert_eq!(sb.devices_in_slot(2), 0);
}

#[test]
fn roles_print_as_words_and_slots_stop_below_the_reserved_values() {
    use raid1_superblock::DevRole;
    let words: Vec<String> = [
        DevRole::Active(3),
        DevRole::Spare,
        DevRole::Faulty,
        DevRole::Journal,
        DevRole::Reserved(0xff01),
    ]
    .iter()
    .map(|r| r.to_string())
    .collect();
    assert_eq!(
        words,
        ["active 3", "spare", "faulty", "journal", "reserved 0xff01"]
    );
    assert_eq!(DevRole::active(0xfeff).unwrap(), DevRole::Active(0xfeff));
    let e = DevRole::active(0xff00).unwrap_err();
    assert_eq!((e.field, e.value), ("dev_roles", 0xff00));
    assert!(
        e.to_string().contains("65279"),
        "names the largest slot: {e}"
    );
}

/// The checksum computed from the fields (the roles fed through a buffer a piece at a time)
/// equals the one computed over the serialized bytes, and both equal md's rule written out
/// here half-word by half-word: for role counts around the pieces' boundaries, odd and even.
#[test]
fn the_checksum_from_the_fields_and_from_the_bytes_agree_at_every_role_count() {
    use raid1_superblock::DevRole;
    for max_dev in [0u32, 1, 2, 3, 31, 32, 33, 63, 64, 65, 127, 1919, 1920] {
        let mut sb: raid1_superblock::Superblock = raid1_superblock::Superblock::new();
        sb.max_dev = max_dev;
        sb.events = 0x1234_5678_9abc;
        for i in 0..max_dev {
            let role = match i % 4 {
                0 => DevRole::Active((i * 7 % 1000) as u16),
                1 => DevRole::Spare,
                2 => DevRole::Faulty,
                _ => DevRole::Active(i as u16),
            };
            sb.set_role(i, role).unwrap();
        }
        let mut out = vec![0u8; sb.serialized_len()];
        sb.serialize(&mut out).unwrap();
        // md's calc_sb_1_csum: u32 words, a trailing u16, sb_csum as zero, one fold.
        let mut zeroed = out.clone();
        zeroed[216..220].fill(0);
        let mut sum = 0u64;
        let halves: Vec<u64> = zeroed
            .chunks_exact(2)
            .map(|p| u64::from(u16::from_le_bytes([p[0], p[1]])))
            .collect();
        for pair in halves.chunks(2) {
            sum += pair[0] | pair.get(1).map_or(0, |hi| hi << 16);
        }
        let md = ((sum & 0xFFFF_FFFF) + (sum >> 32)) as u32;
        assert_eq!(sb.compute_checksum().unwrap(), md, "max_dev {max_dev}");
        // Over the bytes as written, their stored checksum in place.
        assert_ne!(out[216..220], [0; 4], "max_dev {max_dev}");
        assert_eq!(
            raid1_superblock::checksum(&out).unwrap(),
            md,
            "max_dev {max_dev}"
        );
    }
}
