//! The bridge between the engine's [`SuperblockState`] and md's v1.x on-disk superblock and
//! bitmap header (raid1-superblock): what a frontend writes when the engine hands out an
//! `IoCmd::Superblock`, and what it gives `Array::assemble` from the bytes it reads back.
//!
//! It does field by field what `raid1 run` does today in two places (rendering a superblock
//! state on top of the device's parsed superblock, and reading the state back at assembly). It
//! is meant to become the shared bridge of every frontend; it lives in the simulator until it
//! moves to a crate both can depend on (raid1-core has no dependency on raid1-superblock).
//!
//! The simulator writes every superblock through [`render`] into bytes on the simulated disk and
//! reads them back with [`parse`], so a field the bridge or the serializer loses shows up as a
//! violation (`(bytes)`) or as a wrong assembly.

use raid1_core::{MemberId, Role, SuperblockState};
use raid1_superblock::{
    BitmapSuperblock, DevFlags, DevRole, FeatureMap, SetName, Superblock, Uuid,
};

/// Bytes of the bitmap superblock (header) in front of the bits.
pub const BITMAP_HEADER: usize = 256;

/// The static fields of one member's superblock, as mdadm --create would have written them: a
/// v1.2 superblock at sector 8, data from sector 2048, the bitmap 8 sectors after the
/// superblock when there is one, `max_dev` = `M`.
pub fn template<const M: usize>(
    data_sectors: u64,
    bitmap_chunk_sectors: u64,
    member: MemberId,
) -> (Superblock<M>, Option<BitmapSuperblock>) {
    let uuid = Uuid(*b"raid1-sim-array!");
    let mut sb = Superblock::<M>::new();
    sb.set_uuid = uuid;
    let mut name = [0u8; 32];
    name[..9].copy_from_slice(b"sim:array");
    sb.set_name = SetName(name);
    sb.level = 1;
    sb.size = data_sectors;
    sb.data_offset = 2048;
    sb.data_size = data_sectors;
    sb.super_offset = 8;
    sb.max_dev = M as u32;
    sb.dev_number = u32::from(member.0);
    sb.device_uuid = Uuid([member.0.wrapping_add(1); 16]);
    let bitmap = (bitmap_chunk_sectors > 0).then(|| {
        sb.bitmap_offset = 8;
        sb.feature_map.insert(FeatureMap::BITMAP_OFFSET);
        let mut b = BitmapSuperblock::new(uuid, data_sectors);
        b.chunksize = (bitmap_chunk_sectors * 512) as u32;
        b
    });
    (sb, bitmap)
}

/// Writes `st` into `sb` (and the bitmap header `bm`): events, raid_disks, resync_offset, the
/// role table, this device's number, recovery offset and flags, WriteMostly, events_cleared.
pub fn apply<const M: usize, const ROLES: usize>(
    sb: &mut Superblock<ROLES>,
    bm: Option<&mut BitmapSuperblock>,
    st: &SuperblockState<M>,
) {
    sb.events = st.events;
    sb.raid_disks = u32::from(st.raid_disks);
    sb.resync_offset = st.resync_offset;
    for i in 0..sb.max_dev {
        let role = st
            .roles
            .get(i as usize)
            .map_or(DevRole::Faulty, |r| DevRole::from_raw(r.to_raw()));
        let _ = sb.set_role(i, role);
    }
    let mut f = sb.feature_map;
    f.set(FeatureMap::RECOVERY_OFFSET, st.recovery_offset.is_some());
    f.set(FeatureMap::RECOVERY_BITMAP, st.recovery_bitmap);
    f.set(FeatureMap::BITMAP_OFFSET, st.bitmap && bm.is_some());
    sb.feature_map = f;
    sb.recovery_offset = st.recovery_offset.unwrap_or(0);
    sb.dev_number = u32::from(st.this_member.0);
    let mut flags = sb.devflags;
    flags.set(DevFlags::WRITE_MOSTLY, st.write_mostly);
    sb.devflags = flags;
    if let Some(bm) = bm {
        bm.events = st.events;
        bm.events_cleared = st.events_cleared;
    }
}

/// The engine's view of a parsed superblock (and bitmap header).
pub fn state<const M: usize, const ROLES: usize>(
    sb: &Superblock<ROLES>,
    bm: Option<&BitmapSuperblock>,
) -> SuperblockState<M> {
    let mut roles = [Role::Spare; M];
    for (i, r) in roles.iter_mut().enumerate() {
        if let Some(role) = sb.role(i as u32) {
            *r = Role::from_raw(role.to_raw());
        }
    }
    let f = sb.feature_map;
    SuperblockState {
        events: sb.events,
        raid_disks: u16::try_from(sb.raid_disks).unwrap_or(u16::MAX),
        resync_offset: sb.resync_offset,
        roles,
        this_member: MemberId(sb.dev_number as u8),
        recovery_offset: f
            .contains(FeatureMap::RECOVERY_OFFSET)
            .then_some(sb.recovery_offset),
        recovery_bitmap: f.contains(FeatureMap::RECOVERY_BITMAP),
        events_cleared: bm.map_or(0, |b| b.events_cleared),
        bitmap: f.contains(FeatureMap::BITMAP_OFFSET),
        write_mostly: sb.devflags.contains(DevFlags::WRITE_MOSTLY),
    }
}

/// The bytes a superblock write of `st` puts on a member: the md v1.x superblock and, with a
/// bitmap, the bitmap header.
pub fn render<const M: usize>(
    data_sectors: u64,
    bitmap_chunk_sectors: u64,
    st: &SuperblockState<M>,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let (mut sb, mut bm) = template::<M>(data_sectors, bitmap_chunk_sectors, st.this_member);
    apply(&mut sb, bm.as_mut(), st);
    let mut bytes = vec![0u8; sb.padded_len()];
    sb.serialize_padded(&mut bytes)
        .map_err(|e| format!("(bytes) superblock does not serialize: {e:?}"))?;
    let mut header = Vec::new();
    if let Some(bm) = bm {
        header = vec![0u8; BITMAP_HEADER];
        bm.serialize(&mut header)
            .map_err(|e| format!("(bytes) bitmap header does not serialize: {e:?}"))?;
    }
    Ok((bytes, header))
}

/// What assembly reads from a member's superblock bytes (and bitmap header, empty if none).
pub fn parse<const M: usize>(bytes: &[u8], header: &[u8]) -> Result<SuperblockState<M>, String> {
    let sb = Superblock::<M>::parse(bytes)
        .map_err(|e| format!("(bytes) superblock does not parse: {e:?}"))?;
    let bm = if header.is_empty() {
        None
    } else {
        Some(
            BitmapSuperblock::parse(header)
                .map_err(|e| format!("(bytes) bitmap header does not parse: {e:?}"))?,
        )
    };
    Ok(state(&sb, bm.as_ref()))
}
