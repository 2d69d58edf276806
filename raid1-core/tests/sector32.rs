//! raid1-core with 32-bit sector numbers (feature `sector32`), as firmware builds it
//! (`cargo test -p raid1-core --no-default-features --features sector32 --test sector32`): the
//! bridge converts md's 64-bit fields at the edge, and the engine's arithmetic holds at the top
//! of the range it accepts. Without the feature this file holds no test.
#![cfg(feature = "sector32")]

mod common;

use common::*;
use raid1_core::*;
use raid1_superblock::{FeatureMap, MdTime, SetName, Superblock, Uuid};

fn member_sb(size: u64) -> Superblock<4> {
    let mut sb = Superblock::<4>::new_raid1(
        Uuid([7; 16]),
        SetName::build(None, b"s32"),
        MdTime::from_seconds(1),
        2,
        size,
    );
    sb.data_size = size;
    sb.dev_roles[0] = 0;
    sb.dev_roles[1] = 1;
    sb.max_dev = 2;
    sb
}

#[test]
fn a_size_beyond_32_bit_sectors_is_refused_by_name() {
    let sb = member_sb(1 << 32);
    let err = bridge::read_state::<4, 4>(&sb, None).unwrap_err();
    assert_eq!(err, BridgeError::Sectors(1 << 32));
    let text = err.to_string();
    assert!(text.contains("size = 4294967296 sectors"), "{text}");
    assert!(bridge::read_state::<4, 4>(&member_sb(MAX_ARRAY_SECTORS.into()), None).is_ok());
}

#[test]
fn offsets_beyond_32_bits_read_as_done_and_max_sector_is_written_as_mds() {
    let mut sb = member_sb(1000);
    for (disk, engine) in [(u64::MAX, MAX_SECTOR), (1 << 33, MAX_SECTOR), (600, 600)] {
        sb.resync_offset = disk;
        sb.recovery_offset = disk;
        sb.feature_map = FeatureMap::RECOVERY_OFFSET;
        let st = bridge::read_state::<4, 4>(&sb, None).unwrap();
        assert_eq!(st.resync_offset, engine, "resync_offset {disk}");
        assert_eq!(st.recovery_offset, Some(engine), "recovery_offset {disk}");
    }
    let mut st = bridge::read_state::<4, 4>(&sb, None).unwrap();
    for (engine, disk) in [(MAX_SECTOR, u64::MAX), (0, 0), (999, 999)] {
        st.resync_offset = engine;
        st.recovery_offset = Some(engine);
        let mut out = member_sb(1000);
        bridge::apply_state(&st, &mut out, None).unwrap();
        assert_eq!(out.resync_offset, disk);
        assert_eq!(out.recovery_offset, disk);
        assert!(out.feature_map.contains(FeatureMap::RECOVERY_OFFSET));
        assert_eq!(out.size, 1000);
    }
}

#[test]
fn the_largest_array_writes_its_last_sector_and_refuses_one_past_it() {
    let mut too_big = cfg();
    too_big.data_sectors = MAX_ARRAY_SECTORS + 1;
    assert!(matches!(
        A::create(too_big, None, 2, &[MemberId(0), MemberId(1)], true),
        Err(ConfigError::DataSectors(_))
    ));

    let mut c = cfg();
    c.data_sectors = MAX_ARRAY_SECTORS;
    c.bitmap_chunk_sectors = MAX_BITMAP_CHUNK_SECTORS;
    c.bitmap_page_bytes = 512;
    let mut a = A::create(c, bitmap_for(&c), 2, &[MemberId(0), MemberId(1)], true).unwrap();
    run_to_idle(&mut a);

    let last = MAX_ARRAY_SECTORS - 1;
    a.submit(T0, write(1, last, 1)).unwrap();
    let ios = settle_metadata(&mut a);
    assert_eq!(ios.len(), 2, "{ios:?}");
    assert!(ios.iter().all(|io| io.sector == last && io.sectors == 1));
    assert!(a.bitmap_bit(last / MAX_BITMAP_CHUNK_SECTORS));
    complete_ios(&mut a, &ios, IoResult::Ok);
    run_to_idle(&mut a);
    assert_eq!(completions(&mut a), vec![ok(1)]);

    assert_eq!(
        a.submit(T0, read(2, last, 2)),
        Err(SubmitError::OutOfRange(MAX_ARRAY_SECTORS + 1))
    );
    a.submit(T0, read(3, last, 1)).unwrap();
    let reads = data_ios(&run_to_idle(&mut a));
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!((reads[0].sector, reads[0].sectors), (last, 1));
}
