//! The one conversion between the engine's [`SuperblockState`] and md's v1.x on-disk superblock
//! and bitmap header (raid1-superblock): md's `super_1_validate` side (what assembly takes from
//! a member's superblock) and its `super_1_sync` / `md_bitmap_update_sb` side (what a
//! superblock write puts into it).
//!
//! Every frontend reads and writes superblocks through these functions, so the field mapping
//! lives in one place:
//!
//! | engine ([`SuperblockState`]) | on disk (`mdp_superblock_1`, `bitmap_super_s`) |
//! |---|---|
//! | `events` | `events`; the bitmap header's `events` |
//! | `raid_disks` | `raid_disks` |
//! | `size` | `size`; the bitmap header's `sync_size` |
//! | `resync_offset` | `resync_offset` (md's `recovery_cp`) |
//! | `roles[i]` | `dev_roles[i]`: slot, 0xFFFF spare, 0xFFFE faulty |
//! | `this_member` | `dev_number` |
//! | `recovery_offset` | `recovery_offset` with feature RECOVERY_OFFSET |
//! | `recovery_bitmap` | feature RECOVERY_BITMAP |
//! | `bitmap` | feature BITMAP_OFFSET |
//! | `write_mostly` | devflag WriteMostly |
//! | `failfast` | devflag FailFast |
//! | `replacement` | feature REPLACEMENT |
//! | `write_behind` | the bitmap header's `write_behind` |
//! | `events_cleared` | the bitmap header's `events_cleared` |
//!
//! Every other field (uuid, name, times, offsets, `data_size`, bad-block log, other flags and
//! feature bits) belongs to the frontend: [`apply_state`] leaves it as it finds it, and
//! [`Superblock::serialize`] recomputes the checksum.
//!
//! Reading follows `super_1_validate`: an entry at or beyond `max_dev` is a spare (so a member
//! whose own `dev_number` is beyond its `max_dev` is a spare), and the reserved values
//! 0xFF00..=0xFFFE (journal included) hold no slot ([`Role::from_raw`]). Entries at or beyond
//! `M` name member positions this build cannot hold and are not read. Writing follows
//! `super_1_sync`: every entry is written, positions the engine does not fill as faulty
//! (0xFFFE), and `max_dev` grows when the table does not cover this member or a member holding
//! a slot or a spare, so that every role lands on disk (md grows it over every device attached
//! to the array; a failed member beyond `max_dev` is then left out, which reads back as spare
//! and, like faulty, holds no slot).

use raid1_superblock::{BitmapSuperblock, DevFlags, FeatureMap, MAX_DEV, Superblock};

use crate::error::BridgeError;
use crate::types::{MAX_SECTOR, MemberId, Role, Sector, SuperblockState};

/// An on-disk offset (`resync_offset`, `recovery_offset`) as the engine holds it: md's
/// MaxSector is [`MAX_SECTOR`], and with 32-bit sectors an offset beyond them (so beyond any
/// array this build holds: that part is in sync) is too.
fn offset_from_disk(v: u64) -> Sector {
    if v == u64::MAX {
        MAX_SECTOR
    } else {
        Sector::try_from(v).unwrap_or(MAX_SECTOR)
    }
}

/// The on-disk form of an engine offset: [`MAX_SECTOR`] is md's MaxSector.
fn offset_to_disk(s: Sector) -> u64 {
    if s == MAX_SECTOR {
        u64::MAX
    } else {
        u64::from(s)
    }
}

/// The engine's view of a member's parsed superblock `sb` and, when the member has a bitmap,
/// its parsed bitmap header `bitmap` (what [`crate::Array::assemble`] takes, one per member).
///
/// Errors: `dev_number` is not a member position of this build (`0..M`), or `raid_disks` does
/// not fit the engine's `u16`.
#[inline]
pub fn read_state<const M: usize, const ROLES: usize>(
    sb: &Superblock<ROLES>,
    bitmap: Option<&BitmapSuperblock>,
) -> Result<SuperblockState<M>, BridgeError> {
    let this_member = u8::try_from(sb.dev_number)
        .ok()
        .filter(|n| usize::from(*n) < M)
        .map(MemberId)
        .ok_or(BridgeError::DevNumber {
            dev_number: sb.dev_number,
            members: M,
        })?;
    let raid_disks =
        u16::try_from(sb.raid_disks).map_err(|_| BridgeError::RaidDisks(sb.raid_disks))?;
    let mut roles = [Role::Spare; M];
    for (i, r) in roles.iter_mut().enumerate() {
        // `i < M <= u8::MAX + 1` is far below u32::MAX; a role at or beyond max_dev is a spare.
        if let Some(role) = u32::try_from(i).ok().and_then(|i| sb.role(i)) {
            *r = Role::from_raw(role.to_raw());
        }
    }
    let f = sb.feature_map;
    Ok(SuperblockState {
        events: sb.events,
        raid_disks,
        size: Sector::try_from(sb.size).map_err(|_| BridgeError::Sectors(sb.size))?,
        resync_offset: offset_from_disk(sb.resync_offset),
        roles,
        this_member,
        recovery_offset: f
            .contains(FeatureMap::RECOVERY_OFFSET)
            .then_some(offset_from_disk(sb.recovery_offset)),
        recovery_bitmap: f.contains(FeatureMap::RECOVERY_BITMAP),
        events_cleared: bitmap.map_or(0, |b| b.events_cleared),
        bitmap: f.contains(FeatureMap::BITMAP_OFFSET),
        write_mostly: sb.devflags.contains(DevFlags::WRITE_MOSTLY),
        failfast: sb.devflags.contains(DevFlags::FAILFAST),
        // md's super_1_validate takes the flag only together with a slot being rebuilt.
        replacement: f.contains(FeatureMap::REPLACEMENT),
        write_behind: bitmap.map_or(0, |b| u16::try_from(b.write_behind).unwrap_or(u16::MAX)),
    })
}

/// Writes the engine's state `st` into a member's superblock `sb` (the last one written or read,
/// or the frontend's template holding the static fields) and, when the member has a bitmap,
/// into its bitmap header `bitmap`, before the frontend serializes them. Feature BITMAP_OFFSET
/// follows the array (`st.bitmap`, as md sets it when the array has a bitmap): the frontend
/// keeps `bitmap_offset` pointing at the member's bitmap. The header is updated only while the
/// array has a bitmap; a frontend that writes it separately passes `None` and calls
/// [`apply_bitmap_state`].
///
/// Errors, before anything is changed: a member holding a slot sits beyond what `sb` can store
/// (`ROLES` entries, at most 1920), or the array's `size` is beyond the member's `data_size`
/// (a frontend that grows the array records the larger data area first).
pub fn apply_state<const M: usize, const ROLES: usize>(
    st: &SuperblockState<M>,
    sb: &mut Superblock<ROLES>,
    bitmap: Option<&mut BitmapSuperblock>,
) -> Result<(), BridgeError> {
    // md's super_1_sync: max_dev grows to cover this member and every member that holds a
    // slot or is a spare, so each such role lands on disk.
    let mut need = u32::from(st.this_member.0) + 1;
    for (i, r) in st.roles.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        if !matches!(r, Role::Faulty) {
            need = need.max(index.saturating_add(1));
        }
        if matches!(r, Role::Active(_)) && i >= ROLES.min(MAX_DEV) {
            return Err(BridgeError::RoleCapacity {
                member: MemberId(u8::try_from(i).unwrap_or(u8::MAX)),
                capacity: ROLES.min(MAX_DEV),
            });
        }
    }
    // The array may not claim more of the device than the superblock says it holds (md's
    // super_1_load refuses a device whose data_size is below the array's size).
    if u64::from(st.size) > sb.data_size {
        return Err(BridgeError::Size {
            size: u64::from(st.size),
            data_size: sb.data_size,
        });
    }
    if need > sb.max_dev {
        // Beyond 1920 only spares and this member's own (non-slot) entry remain: they read
        // back as spares when left out, so the table stops at md's limit.
        let _ = sb.set_max_dev(need.min(u32::try_from(MAX_DEV).unwrap_or(u32::MAX)));
    }
    sb.events = st.events;
    sb.raid_disks = u32::from(st.raid_disks);
    sb.size = u64::from(st.size);
    sb.resync_offset = offset_to_disk(st.resync_offset);
    // Every entry is written; a position the engine does not fill is faulty, as md writes it.
    // Entries beyond the ROLES stored are implicitly spare (only spares and faulty reach there).
    let entries = usize::try_from(sb.max_dev).unwrap_or(usize::MAX);
    for (i, slot) in sb.dev_roles.iter_mut().take(entries).enumerate() {
        *slot = st.roles.get(i).copied().unwrap_or(Role::Faulty).to_raw();
    }
    let mut f = sb.feature_map;
    f.set(FeatureMap::RECOVERY_OFFSET, st.recovery_offset.is_some());
    f.set(FeatureMap::RECOVERY_BITMAP, st.recovery_bitmap);
    f.set(FeatureMap::BITMAP_OFFSET, st.bitmap);
    f.set(FeatureMap::REPLACEMENT, st.replacement);
    sb.feature_map = f;
    sb.recovery_offset = st.recovery_offset.map_or(0, offset_to_disk);
    sb.dev_number = u32::from(st.this_member.0);
    let mut flags = sb.devflags;
    flags.set(DevFlags::WRITE_MOSTLY, st.write_mostly);
    flags.set(DevFlags::FAILFAST, st.failfast);
    sb.devflags = flags;
    if let Some(bm) = bitmap {
        apply_bitmap_state(st, bm);
    }
    Ok(())
}

/// Writes the engine's state `st` into a member's bitmap header (md's `md_bitmap_update_sb`):
/// `events`, `events_cleared`, `sync_size` and `write_behind`. Nothing when the array has no bitmap (`st.bitmap` false).
/// For a frontend that rewrites the header with every bitmap page, pass
/// [`crate::Array::superblock_for`] of the member.
pub fn apply_bitmap_state<const M: usize>(st: &SuperblockState<M>, bitmap: &mut BitmapSuperblock) {
    if st.bitmap {
        bitmap.events = st.events;
        bitmap.events_cleared = st.events_cleared;
        bitmap.sync_size = u64::from(st.size);
        bitmap.write_behind = u32::from(st.write_behind);
    }
}
