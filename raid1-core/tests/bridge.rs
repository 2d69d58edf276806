//! The bridge between the engine's superblock state and md's on-disk superblock and bitmap
//! header (raid1_core::bridge): the round trip through bytes, and the edges md's
//! super_1_validate / super_1_sync define (max_dev growth, spare and faulty entries, a role
//! beyond max_dev, the recovery offset and its feature bit, the bitmap header).

use raid1_core::bridge::{apply_bitmap_state, apply_state, read_state};
use raid1_core::{BridgeError, MAX_SECTOR, MemberId, Role, SuperblockState};
use raid1_superblock::{BitmapSuperblock, DevFlags, DevRole, FeatureMap, Superblock, Uuid};

const M: usize = 4;

/// A member's superblock as mdadm would have written it (static fields only), with a bitmap.
fn template(max_dev: u32, dev_number: u32) -> (Superblock<M>, BitmapSuperblock) {
    let uuid = Uuid(*b"bridge-test-uuid");
    let mut sb = Superblock::<M>::new();
    sb.set_uuid = uuid;
    sb.size = 1 << 20;
    sb.data_offset = 2048;
    sb.data_size = 1 << 20;
    sb.super_offset = 8;
    sb.bitmap_offset = 8;
    sb.feature_map = FeatureMap::BITMAP_OFFSET;
    sb.set_max_dev(max_dev).unwrap();
    sb.dev_number = dev_number;
    let mut bm = BitmapSuperblock::new(uuid, 1 << 20);
    bm.chunksize = 64 << 20;
    (sb, bm)
}

fn state(this: u8) -> SuperblockState<M> {
    SuperblockState {
        events: 42,
        raid_disks: 2,
        size: 1 << 20,
        resync_offset: 0,
        roles: [Role::Active(0), Role::Active(1), Role::Spare, Role::Faulty],
        this_member: MemberId(this),
        recovery_offset: None,
        recovery_bitmap: false,
        events_cleared: 40,
        bitmap: true,
        write_mostly: false,
        failfast: false,
        replacement: false,
        write_behind: 0,
    }
}

/// Writes `st` through `sb`/`bm` into bytes and reads them back.
fn through_bytes(
    st: &SuperblockState<M>,
    sb: &mut Superblock<M>,
    bm: &mut BitmapSuperblock,
) -> (Superblock<M>, BitmapSuperblock, SuperblockState<M>) {
    apply_state(st, sb, Some(bm)).unwrap();
    let mut bytes = vec![0u8; 4096];
    sb.serialize(&mut bytes).unwrap();
    let mut header = vec![0u8; 256];
    bm.serialize(&mut header).unwrap();
    let sb2 = Superblock::<M>::parse(&bytes).unwrap();
    let bm2 = BitmapSuperblock::parse(&header).unwrap();
    let back = read_state::<M, M>(&sb2, Some(&bm2)).unwrap();
    (sb2, bm2, back)
}

#[test]
fn a_state_survives_the_round_trip_through_bytes() {
    let mut cases = vec![state(0), state(1)];
    let mut s = state(1);
    s.resync_offset = MAX_SECTOR;
    s.recovery_offset = Some(12345);
    s.recovery_bitmap = true;
    s.write_mostly = true;
    s.events = u64::MAX - 1;
    s.events_cleared = u64::MAX - 1;
    cases.push(s);
    let mut s = state(0);
    s.failfast = true;
    cases.push(s);
    // A replacement: feature REPLACEMENT, the slot of the member it replaces.
    let mut s = state(2);
    s.roles[2] = Role::Active(0);
    s.recovery_offset = Some(4096);
    s.replacement = true;
    cases.push(s);
    let mut s = state(1);
    s.write_behind = 256;
    cases.push(s);
    let mut s = state(0);
    s.resync_offset = 777;
    s.raid_disks = 3;
    s.roles = [
        Role::Active(2),
        Role::Active(0),
        Role::Active(1),
        Role::Spare,
    ];
    cases.push(s);
    for st in cases {
        let (mut sb, mut bm) = template(M as u32, u32::from(st.this_member.0));
        let (_, _, back) = through_bytes(&st, &mut sb, &mut bm);
        assert_eq!(back, st);
    }
}

#[test]
fn static_fields_and_other_flags_are_left_as_found() {
    let (mut sb, mut bm) = template(M as u32, 0);
    sb.feature_map.insert(FeatureMap::BAD_BLOCKS);
    sb.devflags = DevFlags::FAILFAST | DevFlags::WRITE_MOSTLY;
    sb.cnt_corrected_read = 9;
    sb.bblog_offset = 16;
    sb.bblog_size = 8;
    let before = sb.clone();
    let st = state(0);
    let (sb2, bm2, _) = through_bytes(&st, &mut sb, &mut bm);
    assert!(sb2.feature_map.contains(FeatureMap::BAD_BLOCKS));
    // WriteMostly and FailFast follow the engine's state (both off in `state`).
    assert_eq!(sb2.devflags, DevFlags::empty());
    assert_eq!(sb2.set_uuid, before.set_uuid);
    assert_eq!(sb2.data_offset, before.data_offset);
    assert_eq!(sb2.bitmap_offset, before.bitmap_offset);
    assert_eq!(sb2.cnt_corrected_read, 9);
    assert_eq!((sb2.bblog_offset, sb2.bblog_size), (16, 8));
    assert_eq!(bm2.chunksize, bm.chunksize);
    assert_eq!((bm2.events, bm2.events_cleared), (42, 40));
    // The checksum serialize wrote is the one parse checked; the struct agrees.
    assert!(sb2.checksum_status().unwrap().is_correct());
}

#[test]
fn spare_and_faulty_entries_are_md_raw_values() {
    let (mut sb, mut bm) = template(M as u32, 0);
    let (sb2, _, _) = through_bytes(&state(0), &mut sb, &mut bm);
    assert_eq!(sb2.dev_roles, [0, 1, 0xFFFF, 0xFFFE]);
    // Journal and reserved values hold no slot: the engine reads them as faulty.
    let mut sb = template(M as u32, 0).0;
    sb.dev_roles = [0, DevRole::JOURNAL_RAW, 0xFF00, DevRole::SPARE_RAW];
    let st = read_state::<M, M>(&sb, None).unwrap();
    assert_eq!(
        st.roles,
        [Role::Active(0), Role::Faulty, Role::Faulty, Role::Spare]
    );
}

#[test]
fn max_dev_grows_so_every_role_lands() {
    // max_dev 1: the table covers neither member 1 (in slot 1) nor member 2 (a spare).
    let (mut sb, mut bm) = template(1, 0);
    let (sb2, _, back) = through_bytes(&state(0), &mut sb, &mut bm);
    assert_eq!(sb2.max_dev, 3);
    assert_eq!(
        back.roles,
        [Role::Active(0), Role::Active(1), Role::Spare, Role::Spare]
    );
    // This member's own entry grows it too (a spare numbered beyond every other member).
    let (mut sb, mut bm) = template(1, 3);
    let mut st = state(3);
    st.roles = [Role::Active(0), Role::Faulty, Role::Faulty, Role::Spare];
    let (sb2, _, back) = through_bytes(&st, &mut sb, &mut bm);
    assert_eq!(sb2.max_dev, 4);
    assert_eq!(back.own_role(), Role::Spare);
    // Faulty positions alone never grow it: they read back as spares, which hold no slot.
    let (mut sb, mut bm) = template(2, 0);
    let mut st = state(0);
    st.roles = [Role::Active(0), Role::Active(1), Role::Faulty, Role::Faulty];
    let (sb2, _, _) = through_bytes(&st, &mut sb, &mut bm);
    assert_eq!(sb2.max_dev, 2);
    // It never shrinks: entries the engine does not fill are written faulty, as md does.
    let (mut sb, mut bm) = template(M as u32, 0);
    let mut st = state(0);
    st.roles = [Role::Active(0), Role::Faulty, Role::Faulty, Role::Faulty];
    let (sb2, _, _) = through_bytes(&st, &mut sb, &mut bm);
    assert_eq!(sb2.max_dev, M as u32);
    assert_eq!(sb2.dev_roles, [0, 0xFFFE, 0xFFFE, 0xFFFE]);
}

#[test]
fn entries_beyond_the_engine_are_written_faulty() {
    // A superblock with room for 8 entries and max_dev 8 under an engine of 4 members.
    let mut sb = Superblock::<8>::new();
    sb.data_size = 1 << 20;
    sb.set_max_dev(8).unwrap();
    sb.dev_roles = [0; 8];
    apply_state(&state(0), &mut sb, None).unwrap();
    assert_eq!(&sb.dev_roles[..4], &[0, 1, 0xFFFF, 0xFFFE]);
    assert_eq!(&sb.dev_roles[4..], &[0xFFFE; 4]);
}

#[test]
fn a_role_beyond_max_dev_is_a_spare() {
    // md's super_1_validate: an entry at or beyond max_dev is a spare, the member's own too.
    let mut sb = template(1, 2).0;
    sb.dev_roles[0] = 0;
    sb.dev_roles[2] = 1; // beyond max_dev: not on disk, not read
    let st = read_state::<M, M>(&sb, None).unwrap();
    assert_eq!(
        st.roles,
        [Role::Active(0), Role::Spare, Role::Spare, Role::Spare]
    );
    assert_eq!(st.own_role(), Role::Spare);
    assert_eq!(st.this_member, MemberId(2));
}

#[test]
fn a_slot_the_superblock_cannot_store_is_an_error_and_changes_nothing() {
    // Superblock<2> holds two entries: member 2 in slot 2 cannot land.
    let mut sb = Superblock::<2>::new();
    sb.data_size = 1 << 20;
    sb.set_max_dev(2).unwrap();
    let before = sb.clone();
    let mut st = state(0);
    st.raid_disks = 3;
    st.roles[2] = Role::Active(2);
    assert_eq!(
        apply_state(&st, &mut sb, None),
        Err(BridgeError::RoleCapacity {
            member: MemberId(2),
            capacity: 2
        })
    );
    assert_eq!(sb, before);
    // A spare there is fine: beyond the stored entries it is implicitly spare.
    st.roles[2] = Role::Spare;
    st.raid_disks = 2;
    apply_state(&st, &mut sb, None).unwrap();
    assert_eq!(sb.max_dev, 3);
    assert_eq!(sb.role(2), Some(DevRole::Spare));
}

#[test]
fn the_recovery_offset_travels_with_its_feature_bit() {
    let (mut sb, mut bm) = template(M as u32, 1);
    let mut st = state(1);
    st.recovery_offset = Some(0);
    st.recovery_bitmap = true;
    let (sb2, _, back) = through_bytes(&st, &mut sb, &mut bm);
    assert!(sb2.feature_map.contains(FeatureMap::RECOVERY_OFFSET));
    assert!(sb2.feature_map.contains(FeatureMap::RECOVERY_BITMAP));
    assert_eq!(back.recovery_offset, Some(0));
    // Recovered: both bits go, the field is zeroed (md's super_1_sync).
    st.recovery_offset = None;
    st.recovery_bitmap = false;
    let (sb2, _, back) = through_bytes(&st, &mut sb, &mut bm);
    assert!(!sb2.feature_map.contains(FeatureMap::RECOVERY_OFFSET));
    assert!(!sb2.feature_map.contains(FeatureMap::RECOVERY_BITMAP));
    assert_eq!(sb2.recovery_offset, 0);
    assert_eq!(back.recovery_offset, None);
    // Without the bit the field means nothing.
    let mut sb = template(M as u32, 1).0;
    sb.recovery_offset = 99;
    assert_eq!(read_state::<M, M>(&sb, None).unwrap().recovery_offset, None);
}

#[test]
fn the_bitmap_feature_and_header_follow_the_array() {
    // No bitmap in the array: the feature bit goes, the header is left alone.
    let (mut sb, mut bm) = template(M as u32, 0);
    bm.events = 7;
    let mut st = state(0);
    st.bitmap = false;
    apply_state(&st, &mut sb, Some(&mut bm)).unwrap();
    assert!(!sb.feature_map.contains(FeatureMap::BITMAP_OFFSET));
    assert_eq!((bm.events, bm.events_cleared), (7, 0));
    // A bitmap but no header given (the frontend writes it on its own): the bit is set.
    let (mut sb, _) = template(M as u32, 0);
    sb.feature_map = FeatureMap::empty();
    apply_state(&state(0), &mut sb, None).unwrap();
    assert!(sb.feature_map.contains(FeatureMap::BITMAP_OFFSET));
    // The header alone (a bitmap page write that rewrites it).
    let (_, mut bm) = template(M as u32, 0);
    apply_bitmap_state(&state(0), &mut bm);
    assert_eq!((bm.events, bm.events_cleared), (42, 40));
    // Reading: events_cleared comes from the header, 0 without one.
    let (sb, mut bm) = template(M as u32, 0);
    bm.events_cleared = 5;
    assert_eq!(
        read_state::<M, M>(&sb, Some(&bm)).unwrap().events_cleared,
        5
    );
    let st = read_state::<M, M>(&sb, None).unwrap();
    assert_eq!(st.events_cleared, 0);
    assert!(st.bitmap);
}

#[test]
fn hostile_numbers_are_typed_errors() {
    let mut sb = template(M as u32, 0).0;
    for n in [M as u32, 255, 256, u32::MAX] {
        sb.dev_number = n;
        let e = read_state::<M, M>(&sb, None).unwrap_err();
        assert_eq!(
            e,
            BridgeError::DevNumber {
                dev_number: n,
                members: M
            }
        );
        assert_eq!(
            e.to_string(),
            format!("dev_number = {n} (this build handles dev_number 0..{M})")
        );
    }
    sb.dev_number = 0;
    sb.raid_disks = 65536;
    let e = read_state::<M, M>(&sb, None).unwrap_err();
    assert_eq!(e, BridgeError::RaidDisks(65536));
    assert_eq!(e.to_string(), "raid_disks = 65536 (at most 65535)");
    sb.raid_disks = 65535;
    assert_eq!(read_state::<M, M>(&sb, None).unwrap().raid_disks, 65535);
}

#[test]
fn a_kernel_sized_table_reads_into_a_small_engine() {
    // mdadm's max_dev 128 with the default 1920-entry superblock, an engine of 2 members.
    let mut sb: Superblock = Superblock::new();
    sb.set_max_dev(128).unwrap();
    sb.dev_number = 1;
    sb.raid_disks = 2;
    sb.dev_roles[0] = 0;
    sb.dev_roles[1] = 1;
    sb.dev_roles[5] = 0; // a position this build cannot hold: not read
    let st = read_state::<2, { raid1_superblock::MAX_DEV }>(&sb, None).unwrap();
    assert_eq!(st.roles, [Role::Active(0), Role::Active(1)]);
    apply_state(&st, &mut sb, None).unwrap();
    assert_eq!(sb.max_dev, 128);
    assert_eq!(&sb.dev_roles[..3], &[0, 1, 0xFFFE]);
    assert!(sb.dev_roles[2..128].iter().all(|r| *r == 0xFFFE));
}

#[test]
fn the_size_goes_to_the_superblock_and_the_bitmap_header_and_never_beyond_data_size() {
    let (mut sb, mut bm) = template(4, 0);
    sb.data_size = 3 << 20;
    let mut st = state(0);
    st.size = 2 << 20;
    let (sb2, bm2, back) = through_bytes(&st, &mut sb, &mut bm);
    assert_eq!(sb2.size, 2 << 20);
    assert_eq!(bm2.sync_size, 2 << 20);
    assert_eq!(back, st);
    // Larger than the member's data area: refused, nothing changed.
    let before = sb.clone();
    st.size = (3 << 20) + 1;
    assert_eq!(
        apply_state(&st, &mut sb, Some(&mut bm)),
        Err(BridgeError::Size {
            size: (3 << 20) + 1,
            data_size: 3 << 20
        })
    );
    assert_eq!(sb, before);
}
