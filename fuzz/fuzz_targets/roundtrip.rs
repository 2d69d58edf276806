//! parse -> serialize -> parse is the identity, in both modes; serialize never fails on what
//! parse accepted; mdadm's create geometry always yields a superblock that parses strictly
//! and fits its device.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raid1_superblock::*;

fn roundtrip<const R: usize>(data: &[u8]) {
    if let Ok(sb) = Superblock::<R>::parse_for_examine(data) {
        let mut out = [0u8; SB_MAX_LEN];
        let n = sb
            .serialize(&mut out)
            .expect("serialize what parse accepted");
        assert_eq!(n, sb.serialized_len());
        // Identical bytes except the checksum, which is now the computed one.
        assert_eq!(&out[..216], &data[..216]);
        assert_eq!(&out[220..n], &data[220..n]);
        let back = Superblock::<R>::parse_for_examine(&out).expect("reparse");
        let mut expect = sb.clone();
        expect.sb_csum = back.sb_csum;
        assert_eq!(back, expect);
        assert!(back.checksum_status().expect("valid max_dev").is_correct());
        let strict = Superblock::<R>::parse(data);
        if let Ok(strict) = strict {
            assert_eq!(
                &out[..n],
                &data[..n],
                "strict parse must round-trip byte for byte"
            );
            assert_eq!(strict, sb);
            assert_eq!(
                Superblock::<R>::parse(&out).expect("strict reparse"),
                strict
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    roundtrip::<MAX_DEV>(data);
    roundtrip::<4>(data);

    // Create geometry from the first 9 bytes: device size, minor version, bitmap.
    if data.len() >= 9 {
        let dev = u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) >> (data[8] % 64);
        let minor = MinorVersion::ALL[usize::from(data[8] % 3)];
        let bitmap = data[8] & 0x80 != 0;
        if let Ok(g) = geometry::CreateGeometry::mdadm_default(minor, dev, bitmap) {
            let mut sb: Superblock<8> = Superblock::new();
            g.apply_to(&mut sb);
            sb.raid_disks = 2;
            sb.set_max_dev(128).expect("128 <= 1920");
            sb.set_role(0, DevRole::Active(0)).expect("in range");
            let mut out = [0u8; 512];
            sb.serialize(&mut out).expect("fits");
            let back = Superblock::<8>::parse(&out).expect("create geometry parses strictly");
            assert_eq!(
                back.check_placement(dev)
                    .expect("create geometry fits the device"),
                minor
            );
            assert!(g.size <= g.data_size);
            if let Some(b) = g.bitmap {
                assert!(b.chunk_bytes.is_power_of_two());
                assert!(b.chunks >= 1);
            }
        }
    }
});
