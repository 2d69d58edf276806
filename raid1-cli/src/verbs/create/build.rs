//! The bytes create writes on each member: superblock and bitmap, as mdadm 4.2's
//! `init_super1` / `add_to_super1` / `write_init_super1` / `write_bitmap1` produce them.

use raid1_superblock::{
    BitmapSuperblock, DevRole, MAX_SECTOR, MdTime, SetName, Superblock, Uuid, bitmap::BITMAP_SB_LEN,
};

use super::layout::{ArrayLayout, MemberLayout};

/// Array-wide facts chosen once for all members.
#[derive(Debug, Clone)]
pub struct ArrayIdentity {
    /// `set_uuid`.
    pub uuid: Uuid,
    /// `set_name`.
    pub name: SetName,
    /// `ctime` = initial `utime`, seconds.
    pub ctime: u64,
    /// Number of slots (`raid_disks`).
    pub raid_disks: u32,
    /// Written clean (`--assume-clean`: `resync_offset` = MaxSector) or needing a resync (0).
    pub assume_clean: bool,
}

/// `max_dev` as mdadm chooses it: room for `raid_disks + spares` roles, rounded up so the
/// superblock fills whole 512-byte sectors (128 for up to 128 devices).
pub fn max_dev(raid_disks: u32, spares: u32) -> u32 {
    let bytes = (256 + 2 * (raid_disks + spares)).next_multiple_of(512);
    (bytes - 256) / 2
}

/// A member's device flags at create.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    /// md's WriteMostly.
    pub write_mostly: bool,
    /// md's FailFast.
    pub failfast: bool,
}

/// The superblock of the member listed at position `dev_number` (its role is its slot when
/// `dev_number < raid_disks`, else spare), WriteMostly and FailFast when asked. `roles` holds every listed
/// device's role (`None` for `missing`, whose entry stays 0xFFFF as mdadm leaves it).
pub fn superblock(
    array: &ArrayIdentity,
    layout: &ArrayLayout,
    member: &MemberLayout,
    (dev_number, flags): (u32, Flags),
    roles: &[Option<DevRole>],
    device_uuid: Uuid,
) -> Result<Box<Superblock>, raid1_superblock::Error> {
    let mut sb: Box<Superblock> = Box::new(Superblock::new_raid1(
        array.uuid,
        array.name,
        MdTime::from_seconds(array.ctime),
        array.raid_disks,
        layout.size,
    ));
    sb.super_offset = member.super_offset;
    sb.data_offset = member.data_offset;
    sb.data_size = member.data_size;
    sb.bblog_offset = member.bblog_offset;
    sb.bblog_size = member.bblog_size;
    if let Some(b) = &layout.bitmap {
        sb.bitmap_offset = b.offset;
        sb.feature_map
            .insert(raid1_superblock::FeatureMap::BITMAP_OFFSET);
    }
    sb.dev_number = dev_number;
    sb.devflags
        .set(raid1_superblock::DevFlags::WRITE_MOSTLY, flags.write_mostly);
    sb.devflags
        .set(raid1_superblock::DevFlags::FAILFAST, flags.failfast);
    sb.device_uuid = device_uuid;
    sb.resync_offset = if array.assume_clean { MAX_SECTOR } else { 0 };
    let spares = roles
        .iter()
        .filter(|r| matches!(r, Some(DevRole::Spare)))
        .count() as u32;
    sb.set_max_dev(max_dev(array.raid_disks, spares))?;
    for (i, role) in roles.iter().enumerate() {
        if let Some(role) = role {
            sb.set_role(i as u32, *role)?;
        }
    }
    sb.update_checksum()?;
    Ok(sb)
}

/// The bitmap region as mdadm writes it at create: the header, then every bit set (1 = needs
/// syncing) up to the end of the 4 KiB-rounded region, including the bytes past the last
/// chunk. `None` without a bitmap.
pub fn bitmap_region(
    array: &ArrayIdentity,
    layout: &ArrayLayout,
    write_behind: u32,
    daemon_sleep: u32,
) -> Option<Vec<u8>> {
    let geometry = layout.bitmap?;
    let mut region = vec![0xFFu8; (geometry.sectors * 512) as usize];
    let mut header = BitmapSuperblock::new(array.uuid, layout.size);
    header.chunksize = geometry.chunk_bytes;
    header.write_behind = write_behind;
    header.daemon_sleep = daemon_sleep;
    header.serialize(region.get_mut(..BITMAP_SB_LEN)?).ok()?;
    Some(region)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_dev_is_128_up_to_128_devices() {
        assert_eq!(max_dev(2, 0), 128);
        assert_eq!(max_dev(2, 126), 128);
        assert_eq!(max_dev(2, 127), 384);
    }
}
