//! Properties over arbitrary bytes and arbitrary superblocks: parsers never panic, and
//! parse -> serialize -> parse is the identity (byte for byte on the covered range).

use proptest::prelude::*;
use raid1_superblock::*;

fn arb_superblock() -> impl Strategy<Value = Superblock<64>> {
    (
        (
            any::<u32>(),
            any::<u32>(),
            any::<[u8; 16]>(),
            any::<[u8; 32]>(),
            any::<u64>(),
            any::<i32>(),
            any::<u32>(),
        ),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<i32>(),
            any::<u32>(),
            any::<u64>(),
            any::<i32>(),
        ),
        (
            any::<u32>(),
            any::<u32>(),
            any::<i32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (
            any::<u32>(),
            any::<u32>(),
            any::<[u8; 16]>(),
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            any::<i32>(),
        ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            0u32..=200,
            any::<[u8; 32]>(),
            proptest::collection::vec(any::<u16>(), 64),
        ),
    )
        .prop_map(|(a, b, c, d, e)| {
            let mut sb: Superblock<64> = Superblock::new();
            (
                sb.feature_map,
                sb.pad0,
                sb.set_uuid,
                sb.set_name,
                sb.ctime,
                sb.level,
                sb.layout,
            ) = (
                FeatureMap::from_bits_retain(a.0),
                a.1,
                Uuid(a.2),
                SetName(a.3),
                MdTime(a.4),
                a.5,
                a.6,
            );
            (
                sb.size,
                sb.chunksize,
                sb.raid_disks,
                sb.bitmap_offset,
                sb.new_level,
                sb.reshape_position,
                sb.delta_disks,
            ) = b;
            (
                sb.new_layout,
                sb.new_chunk,
                sb.new_offset,
                sb.data_offset,
                sb.data_size,
                sb.super_offset,
                sb.recovery_offset,
            ) = c;
            (
                sb.dev_number,
                sb.cnt_corrected_read,
                sb.device_uuid,
                sb.devflags,
                sb.bblog_shift,
                sb.bblog_size,
                sb.bblog_offset,
            ) = (
                d.0,
                d.1,
                Uuid(d.2),
                DevFlags::from_bits_retain(d.3),
                d.4,
                d.5,
                d.6,
            );
            (sb.utime, sb.events, sb.resync_offset) = (MdTime(e.0), e.1, e.2);
            sb.max_dev = e.3;
            sb.pad3 = e.4;
            for (i, r) in e.5.iter().enumerate() {
                sb.dev_roles[i] = *r;
            }
            sb
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1200), max_dev in 0u32..2100) {
        let mut bytes = bytes;
        // Make the magic and version valid half of the time so that parsing gets deep.
        if bytes.len() >= 224 && max_dev % 2 == 0 {
            bytes[..4].copy_from_slice(&SB_MAGIC.to_le_bytes());
            bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
            bytes[220..224].copy_from_slice(&(max_dev / 4).to_le_bytes());
        }
        let _ = superblock::checksum(&bytes);
        for opts in [ParseOptions::STRICT, ParseOptions::EXAMINE] {
            if let Ok(sb) = Superblock::<MAX_DEV>::parse_with(&bytes, &opts) {
                let _ = sb.to_owned().checksum_status();
                let _ = sb.check_placement(u64::from(max_dev) * 1000);
                let _ = sb.this_role();
                let _ = sb.bitmap_sector();
                let _ = sb.bblog_sector();
                let mut out = vec![0u8; 4096];
                prop_assert!(sb.serialize(&mut out).is_ok());
            }
            let _ = Superblock::<4>::parse_with(&bytes, &opts);
        }
        let _ = BitmapSuperblock::parse(&bytes);
        if let Ok(h) = BitmapSuperblock::parse_for_examine(&bytes) {
            let _ = (h.chunks(), h.bits_len(), h.chunk_of(u64::MAX));
            if let Ok(bits) = BitmapBits::new(bytes.get(256..).unwrap_or(&[]), h.chunks()) {
                let _ = bits.count_dirty();
            }
        }
        let _ = BadBlockLog::parse(&bytes).map(|l| l.len());
        let _ = BadBlockLog::new_unchecked(&bytes).iter().count();
    }

    #[test]
    fn serialize_parse_serialize_identity(sb in arb_superblock()) {
        let mut out = vec![0u8; 4096];
        let len = sb.serialize(&mut out).unwrap();
        prop_assert_eq!(len, 256 + 2 * sb.max_dev as usize);
        let back = Superblock::<64>::parse_for_examine(&out);
        // Entries beyond the capacity of 64 are spare, so every sb parses back.
        let back = back.unwrap();
        prop_assert!(back.checksum_status().unwrap().is_correct());
        let mut again = vec![0u8; 4096];
        prop_assert_eq!(back.serialize(&mut again).unwrap(), len);
        prop_assert_eq!(&out[..len], &again[..len]);
        // Field by field: equal except sb_csum (now the computed one) and roles at or beyond max_dev.
        let mut expect = sb.clone();
        expect.sb_csum = back.sb_csum;
        for i in (sb.max_dev as usize).min(64)..64 {
            expect.dev_roles[i] = 0xFFFF;
        }
        prop_assert_eq!(&back, &expect);
        // A strict parse accepts it exactly when the fields satisfy the kernel's rules.
        if let Ok(strict) = Superblock::<64>::parse(&out) {
            prop_assert_eq!(strict, back);
        }
    }

    /// A write of a member's next superblock torn at any byte (the new one's prefix over the
    /// old one) keeps the fixed fields, and its checksum matches only when the bytes are the
    /// whole old or the whole new superblock; without the magic there are none.
    #[test]
    fn a_torn_superblock_keeps_its_fixed_fields(
        sb in arb_superblock(),
        events in any::<u64>(),
        utime in any::<u64>(),
        cut in 0usize..600,
    ) {
        let mut old = vec![0u8; 1024];
        let len = sb.serialize(&mut old).unwrap();
        let mut next = sb.clone();
        next.events = events;
        next.utime = MdTime(utime);
        let mut new = vec![0u8; 1024];
        next.serialize(&mut new).unwrap();
        let mut torn = old.clone();
        let cut = cut.min(len);
        torn[..cut].copy_from_slice(&new[..cut]);
        let f = FixedFields::read(&torn).unwrap();
        prop_assert_eq!(f.set_uuid, sb.set_uuid);
        prop_assert_eq!(f.dev_number, sb.dev_number);
        prop_assert_eq!(f.data_offset, sb.data_offset);
        prop_assert_eq!(f.super_offset, sb.super_offset);
        let whole = torn[..len] == old[..len] || torn[..len] == new[..len];
        prop_assert_eq!(f.checksum_ok, whole);
        torn[..4].fill(0);
        prop_assert!(FixedFields::read(&torn).is_none());
        prop_assert!(FixedFields::read(&[0u8; 512]).is_none());
    }

    #[test]
    fn bad_block_lists_round_trip(mut starts in proptest::collection::vec((0u64..1 << 40, 1u16..=512), 0..100)) {
        starts.sort();
        let mut list = Vec::new();
        let mut next = 0u64;
        for (gap, len) in starts {
            let start = next + gap % 5000;
            list.push(BadBlock { start, len });
            next = start + u64::from(len);
        }
        let mut log = vec![0u8; 4096];
        write_bad_blocks(&list, &mut log).unwrap();
        let parsed = BadBlockLog::parse(&log).unwrap();
        prop_assert_eq!(parsed.iter().collect::<Vec<_>>(), list);
    }
}
