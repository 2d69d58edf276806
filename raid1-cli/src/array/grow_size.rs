//! `raid1 grow NAME --size SIZE|max [--assume-clean] [--force]`: mdadm's `--grow --size` on a
//! running array (Grow.c; md's update_size, raid1_resize, md_bitmap_resize and
//! super_1_rdev_size_change). Called with the array quiesced and no sync job (the control
//! server stops a running one at its checkpoint first, as mdadm freezes `sync_action`).
//!
//! Everything is checked before anything is written: each member's device size is asked
//! again (a file may have been grown with `truncate`, a device with its volume manager while
//! the array ran), and every member that gets superblocks (in sync, recovering, spare) must
//! hold the new size after its data offset. Metadata 1.1/1.2 keeps its metadata in front of
//! the data: a grown device gives its data area room at once (its `data_size` becomes the
//! device's size less the data offset, as md's super_1_rdev_size_change sets it). Metadata 1.0
//! keeps the superblock, bitmap and bad-block log at the end of the device: growing the data
//! area past its `data_size` would need them moved to the new end, which is not done here; such
//! a grow is refused, naming the device.
//!
//! Then the core resizes (`Array::resize`): its superblock round records the size (and the
//! bitmap header's `sync_size`) on every member; growing marks the new region for resync
//! unless `--assume-clean`. When the bitmap's chunk must double to fit its room, every
//! member first gets the bitmap header with the new chunk and every bit set, written and
//! synced, as `grow --bitmap` does: whatever a crash leaves, no bit is read with the other
//! chunk. Shrinking needs `--force`: the data beyond the new end is no longer the array's.
//!
//! The NBD export's size follows for connections made afterwards; a connected client keeps the
//! size it was given (NBD has no message to tell it of a change) until it reconnects.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use raid1_core::{MemberId, MemberState};
use raid1_superblock::BitmapSuperblock;

use crate::member::strict::{MemberMeta, bitmap_area_end};
use crate::member::{Access, Device};

use super::engine::RaidEngine;
use super::{MEMBERS, RaidArray};

/// A member's bitmap header and area image, as `MemberMeta` keeps them.
type BitmapArea = (BitmapSuperblock, Vec<u8>);

/// What `--size` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeArg {
    /// The largest size every member holds.
    Max,
    /// This many sectors.
    Sectors(u64),
}

/// KiB of `sectors`, as mdadm prints a component size.
fn kib(sectors: u64) -> u64 {
    sectors / 2
}

/// A bitmap chunk of `sectors` sectors in words ("512 B", "64 KiB").
fn chunk_text(sectors: u64) -> String {
    let bytes = sectors * 512;
    if bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// Sectors a member's data area may hold on a device of `sectors` sectors: metadata 1.1/1.2
/// (metadata before the data) up to the device's end; 1.0 what its superblock records, since
/// its metadata sits right after.
fn room_for_data(meta: &MemberMeta, sectors: u64) -> u64 {
    let sb = &meta.sb;
    if sb.super_offset < sb.data_offset {
        sectors.saturating_sub(sb.data_offset)
    } else {
        sb.data_size
    }
}

/// Makes `meta`'s data area hold `size` sectors, as md's rdev size change does for a device
/// that grew: metadata 1.1/1.2 takes the device's room after the data offset; 1.0 cannot (its
/// superblock would have to move). `Some(note)` when `data_size` changed; an error naming the
/// device when it cannot hold `size`.
pub fn fit_data_size(meta: &mut MemberMeta, size: u64) -> Result<Option<String>, String> {
    let sb = &meta.sb;
    if sb.data_size >= size {
        return Ok(None);
    }
    let p = meta.path.display();
    let sectors = meta.size / 512;
    if sb.super_offset >= sb.data_offset {
        return Err(format!(
            "{p}: metadata 1.0 records a data area of {} sectors (data_size), fewer than the \
             array's {size}; its superblock sits right after it",
            sb.data_size
        ));
    }
    let room = room_for_data(meta, sectors);
    if room < size {
        return Err(format!(
            "{p}: holds {room} sectors after its data offset {} (device of {sectors} sectors), \
             fewer than the array's {size}",
            sb.data_offset
        ));
    }
    let note = format!("{p}: data_size {} -> {room} sectors", sb.data_size);
    meta.sb.data_size = room;
    Ok(Some(note))
}

/// What a size request can be answered with at once, without stopping anything: an explicit
/// size equal to the current one, or smaller without `force`. `None`: it needs the array
/// quiesced ([`resize`]).
pub(super) fn answer_at_once(
    old: u64,
    name: &str,
    want: SizeArg,
    force: bool,
) -> Option<Result<Vec<String>, String>> {
    let SizeArg::Sectors(target) = want else {
        return None;
    };
    if target == old {
        return Some(Ok(vec![format!(
            "component size of {name} unchanged at {}K",
            kib(old)
        )]));
    }
    (target < old && !force).then(|| Err(shrink_refused(name, old, target)))
}

/// The refusal of a shrink without `--force`.
fn shrink_refused(name: &str, old: u64, target: u64) -> String {
    format!(
        "shrinking {name} from {}K to {}K would lose the data beyond sector {target} of the \
         array (on every member); nothing was changed: give --force to shrink",
        kib(old),
        kib(target)
    )
}

/// One member's part: where it is, its device's size now, the room for data and for the
/// bitmap.
struct Member {
    i: usize,
    path: String,
    bytes: u64,
    room: u64,
    /// Bytes for the bitmap's bits (its header not counted), `None` without a bitmap.
    bitmap_room: Option<u64>,
}

/// Changes the running array's size. `name` is for messages. Nothing is written unless every
/// check passed.
pub(super) fn resize(
    engine: &mut RaidEngine,
    name: &str,
    want: SizeArg,
    assume_clean: bool,
    force: bool,
) -> Result<Vec<String>, String> {
    let st = engine.array.status();
    if st.read_only_asked {
        return Err(format!(
            "cannot change the size of {name}: the array is read-only (make it read-write \
             first)"
        ));
    }
    let old = engine.array.config().data_sectors;
    let chunk_now = engine.array.config().bitmap_chunk_sectors;
    // Every member that gets superblocks: present and not failed.
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        let Some(info) = engine.array.member(MemberId(i as u8)) else {
            continue;
        };
        if matches!(info.state, MemberState::Absent | MemberState::Faulty) {
            continue;
        }
        let Some(Some(dev)) = engine.devs.get(i) else {
            continue;
        };
        let p = dev.meta.path.display().to_string();
        let d = Device::open(&dev.meta.path, Access::Read)
            .map_err(|e| format!("{p}: cannot find its size: {e}"))?;
        if d.identity() != dev.meta.id {
            return Err(format!(
                "{p}: the path now names another file or device than the member the array uses"
            ));
        }
        let bytes = d.size();
        let sectors = bytes / 512;
        let bitmap_room = match (chunk_now, dev.meta.sb.bitmap_sector()) {
            (0, _) | (_, None) => None,
            (_, Some(bs)) => {
                let end = bitmap_area_end(&dev.meta.sb, bs, sectors);
                Some((end.saturating_sub(bs) * 512).saturating_sub(256))
            }
        };
        members.push(Member {
            i,
            room: room_for_data(&dev.meta, sectors),
            path: p,
            bytes,
            bitmap_room,
        });
    }
    let Some(smallest) = members.iter().min_by_key(|m| m.room) else {
        return Err(format!("{name} has no working member"));
    };
    let target = match want {
        SizeArg::Max => {
            if smallest.room < old {
                return Err(format!(
                    "{}: holds {} data sectors, fewer than the array's {old}: `max` never \
                     shrinks an array (give a size and --force to shrink it)",
                    smallest.path, smallest.room
                ));
            }
            smallest.room
        }
        SizeArg::Sectors(n) => n,
    };
    if target == old {
        return Ok(vec![format!(
            "component size of {name} unchanged at {}K",
            kib(old)
        )]);
    }
    if target < old && !force {
        return Err(shrink_refused(name, old, target));
    }
    if target > old {
        for m in &members {
            if m.room >= target {
                continue;
            }
            let dev = engine.devs[m.i].as_ref().map(|d| &d.meta);
            let Some(meta) = dev else { continue };
            let sb = &meta.sb;
            if sb.super_offset >= sb.data_offset {
                return Err(format!(
                    "{}: metadata 1.0 keeps its superblock, bitmap and bad-block log right after \
                     the data area ({} sectors, data_size): growing it to {target} sectors \
                     would need them moved to the device's new end, which raid1 does not do; \
                     nothing was changed",
                    m.path, sb.data_size
                ));
            }
            return Err(format!(
                "{}: too small for {target} sectors: it holds {} sectors after its data offset \
                 {} (device of {} sectors); nothing was changed",
                m.path,
                m.room,
                sb.data_offset,
                m.bytes / 512
            ));
        }
    }
    // The bitmap's room: the least any member has (md keeps one layout on every member).
    let bitmap_room = members.iter().filter_map(|m| m.bitmap_room).min();
    let chunk = match bitmap_room {
        Some(room) if target > old => engine
            .array
            .resize_bitmap_chunk(target, room)
            .map_err(|e| format!("cannot grow {name} to {target} sectors: {e}"))?,
        _ => chunk_now,
    };
    // The core's checks that do not depend on the members (a size beyond what it counts).
    if target > raid1_core::MAX_ARRAY_SECTORS {
        return Err(format!(
            "cannot grow {name} to {target} sectors: at most {} sectors",
            raid1_core::MAX_ARRAY_SECTORS
        ));
    }
    let mut cfg = *engine.array.config();
    cfg.data_sectors = target;
    cfg.bitmap_chunk_sectors = chunk;
    let bits_bytes = RaidArray::bitmap_bytes(&cfg);
    // The bitmap area each member holds afterwards: header and bits, in whole sectors, to a
    // 4 KiB multiple where the room allows (as at assembly).
    let area = |room: u64| {
        let need = 256 + bits_bytes as u64;
        let full = need.div_ceil(4096) * 4096;
        full.min(room + 256).max(need.div_ceil(512) * 512) as usize
    };

    // Everything checked: from here on the members are written.
    let mut done = Vec::new();
    for m in &members {
        let Some(Some(dev)) = engine.devs.get_mut(m.i) else {
            continue;
        };
        dev.meta.size = m.bytes;
        engine.io.set_member_size(m.i, m.bytes);
        if target > old {
            if let Some(note) = fit_data_size(&mut dev.meta, target)? {
                done.push(note);
            }
        }
    }
    // Chunk change: the new header and an all-set area go to every member first.
    let mut backup: Vec<(usize, Option<BitmapArea>)> = Vec::new();
    if chunk != chunk_now && chunk != 0 {
        for m in &members {
            let Some(Some(dev)) = engine.devs.get_mut(m.i) else {
                continue;
            };
            let (Some(bs), Some((header, _)), Some(room)) = (
                dev.meta.sb.bitmap_sector(),
                dev.meta.bitmap.as_ref(),
                m.bitmap_room,
            ) else {
                continue;
            };
            let mut header = header.clone();
            header.chunksize = u32::try_from(chunk * 512)
                .map_err(|_| format!("{}: bitmap chunk of {chunk} sectors", m.path))?;
            header.sync_size = target;
            header.events = dev.meta.sb.events;
            let mut image = vec![0u8; area(room)];
            header
                .serialize(&mut image[..256])
                .map_err(|e| format!("{}: bitmap header: {e}", m.path))?;
            image[256..256 + bits_bytes].fill(0xff);
            let f = OpenOptions::new()
                .write(true)
                .open(&dev.meta.path)
                .map_err(|e| format!("{}: open to write the bitmap: {e}", m.path))?;
            f.write_all_at(&image, bs * 512)
                .map_err(|e| format!("{}: write the bitmap: {e}", m.path))?;
            f.sync_all()
                .map_err(|e| format!("{}: fsync the bitmap: {e}", m.path))?;
            backup.push((m.i, dev.meta.bitmap.replace((header, image))));
        }
        done.push(format!(
            "bitmap chunk {} -> {} (the bits must fit their room), every chunk dirty until the \
             resync and the daemon clear them",
            chunk_text(chunk_now),
            chunk_text(chunk)
        ));
    } else if chunk != 0 && target > old {
        // Same chunk, more bits: the area image grows so that page writes carry them.
        for m in &members {
            let (Some(Some(dev)), Some(room)) = (engine.devs.get_mut(m.i), m.bitmap_room) else {
                continue;
            };
            if let Some((_, image)) = dev.meta.bitmap.as_mut() {
                let want = area(room);
                if image.len() < want {
                    image.resize(want, 0);
                }
            }
        }
    }
    let storage = (chunk != 0 && target > old).then(|| {
        let bits: &'static mut [u8] = Box::leak(vec![0u8; bits_bytes].into_boxed_slice());
        let hot: &'static mut [u8] = Box::leak(vec![0u8; bits_bytes].into_boxed_slice());
        (bits, hot)
    });
    if let Err(e) = engine
        .array
        .resize(target, bitmap_room.unwrap_or(0), storage, assume_clean)
    {
        // Put back the bitmap areas written for the new chunk (the core kept the old one).
        for (i, old_bitmap) in backup {
            if let Some(Some(dev)) = engine.devs.get_mut(i) {
                dev.meta.bitmap = old_bitmap;
            }
            let Some(Some(dev)) = engine.devs.get(i) else {
                continue;
            };
            if let (Some(bs), Some((_, image))) =
                (dev.meta.sb.bitmap_sector(), engine.current_bitmap(dev))
            {
                if let Ok(f) = OpenOptions::new().write(true).open(&dev.meta.path) {
                    let _ = f.write_all_at(&image, bs * 512);
                    let _ = f.sync_all();
                }
            }
        }
        return Err(format!("cannot change the size of {name}: {e}"));
    }
    engine.publish_size();
    engine.drive();
    done.push(format!(
        "component size of {name} has been set to {}K",
        kib(target)
    ));
    if target > old {
        done.push(if assume_clean {
            format!("sectors {old}..{target} taken as in sync (--assume-clean): no resync")
        } else {
            format!("sectors {old}..{target} are resynced")
        });
    } else {
        done.push(format!(
            "sectors {target}..{old} are no longer part of the array"
        ));
    }
    done.push("NBD clients connected now keep the old size until they reconnect".to_string());
    Ok(done)
}
