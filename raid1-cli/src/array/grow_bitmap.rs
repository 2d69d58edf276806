//! `raid1 grow NAME --bitmap internal|none`: mdadm's `--grow --bitmap=` on a running array
//! (Grow.c and super1.c's add_internal_bitmap1 with no room to move the data). Called with the
//! array quiesced.
//!
//! Adding: the bitmap goes where md keeps it (1.1/1.2: 8 sectors after the superblock, up to the
//! bad-block log or the data; 1.0: below the superblock and its log), with the smallest chunk
//! of at least mdadm's 64 MiB whose bits fit the room every member has. Each member first gets
//! the bitmap header and an area with every bit set, written and synced, then the engine takes
//! the bitmap and announces it in a superblock round: whatever a crash leaves on disk, no chunk
//! is taken as clean too early. Dropping: the engine stops using it and the next superblock
//! round clears the feature bit; the area is left as it is, as md leaves it.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use raid1_core::{MemberId, MemberState};
use raid1_superblock::bitmap::MDADM_DEFAULT_DELAY;
use raid1_superblock::geometry::{MDADM_DEFAULT_BITMAP_CHUNK, bitmap_chunks, bitmap_region_bytes};
use raid1_superblock::{BitmapSuperblock, FeatureMap};

use super::engine::RaidEngine;
use super::{MEMBERS, RaidArray};

/// Sectors of room for a bitmap on a member: from 8 sectors after a 1.1/1.2 superblock to its
/// bad-block log (when that comes first) or the data; below a 1.0 superblock, above the data
/// and under its log.
fn room(sb: &raid1_superblock::Superblock) -> u64 {
    if sb.super_offset < sb.data_offset {
        let end = match sb.bblog_sector() {
            Some(_) if sb.bblog_offset > 8 => sb.bblog_offset as u64,
            _ => sb.data_offset - sb.super_offset,
        };
        end.saturating_sub(8)
    } else {
        let log = if sb.bblog_offset < 0 {
            u64::from(sb.bblog_offset.unsigned_abs())
        } else {
            0
        };
        sb.super_offset
            .saturating_sub(sb.data_offset + sb.data_size)
            .saturating_sub(log)
    }
}

/// Bytes of the bitmap region (header and bits, in 4 KiB pages) for `data_sectors` with
/// `chunk`-byte chunks.
fn region_bytes(data_sectors: u64, chunk: u64) -> u64 {
    bitmap_region_bytes(bitmap_chunks(data_sectors, chunk as u32), 4096)
}

/// The smallest chunk from `from` up (doubling, to 1 GiB) whose bitmap region for
/// `data_sectors` fits `space` sectors.
fn smallest_fitting(data_sectors: u64, space: u64, from: u64) -> Option<u64> {
    std::iter::successors(Some(from), |c| Some(c * 2))
        .take_while(|&c| c <= 1 << 30)
        .find(|&c| region_bytes(data_sectors, c) / 512 <= space)
}

fn no_chunk_fits(space: u64) -> String {
    format!("no bitmap chunk fits the {space} sectors of room the members have")
}

/// The `daemon_sleep` a bitmap header records for a period of `ns`: whole seconds, at least 1
/// (md writes the whole seconds of its `time_base`, and refuses a header that says 0).
fn header_seconds(ns: u64) -> u32 {
    u32::try_from(ns / 1_000_000_000).unwrap_or(u32::MAX).max(1)
}

/// A period for people: `5 s`, `0.25 s`.
fn seconds_text(ns: u64) -> String {
    let (s, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    if frac == 0 {
        format!("{s} s")
    } else {
        let f = format!("{frac:09}");
        format!("{s}.{} s", f.trim_end_matches('0'))
    }
}

/// A daemon period asked for, in ns: more than 0 and at most what a bitmap header records.
fn check_delay(ns: u64) -> Result<(), String> {
    if ns == 0 {
        return Err("a delay of 0: the bitmap daemon's period must be more than 0".into());
    }
    if ns / 1_000_000_000 > u64::from(u32::MAX) {
        return Err(format!(
            "a delay of {}: more than the {} s a bitmap header records",
            seconds_text(ns),
            u32::MAX
        ));
    }
    Ok(())
}

/// md's `bitmap/time_base` (`raid1 grow NAME --delay SECONDS`): the bitmap daemon runs every
/// `ns` from now on (a pass due later than that comes sooner); the bitmap headers record the
/// whole seconds with the next superblock round.
pub(super) fn set_delay(engine: &mut RaidEngine, ns: u64) -> Result<Vec<String>, String> {
    check_delay(ns)?;
    if engine.array.config().bitmap_chunk_sectors == 0 {
        return Err(
            "the array has no bitmap: the delay is its daemon's period (raid1 grow \
                    NAME --bitmap internal --delay SECONDS adds one)"
                .into(),
        );
    }
    engine
        .array
        .set_bitmap_daemon(ns)
        .map_err(|e| format!("cannot set the delay: {e}"))?;
    let secs = header_seconds(ns);
    for dev in engine.devs.iter_mut().flatten() {
        if let Some((header, _)) = dev.meta.bitmap.as_mut() {
            header.daemon_sleep = secs;
        }
    }
    engine.drive();
    Ok(vec![format!(
        "bitmap daemon every {}; the bitmap headers say {secs} s from the next superblock \
         write",
        seconds_text(ns)
    )])
}

/// Adds an internal bitmap to the running array, its daemon running every `delay` ns
/// (mdadm's 5 s when not given).
pub(super) fn add(
    engine: &mut RaidEngine,
    chunk: Option<u32>,
    delay: Option<u64>,
) -> Result<Vec<String>, String> {
    let delay = delay.unwrap_or(u64::from(MDADM_DEFAULT_DELAY) * 1_000_000_000);
    check_delay(delay)?;
    if engine.array.status().read_only_asked {
        return Err("cannot add a bitmap: the array is read-only".into());
    }
    let data_sectors = engine.array.config().data_sectors;
    // Members that get the bitmap: every present, not failed one.
    let ids: Vec<usize> = (0..MEMBERS)
        .filter(|&i| {
            engine
                .array
                .member(MemberId(i as u8))
                .is_some_and(|m| !matches!(m.state, MemberState::Absent | MemberState::Faulty))
                && engine.devs.get(i).is_some_and(|d| d.is_some())
        })
        .collect();
    if engine.array.config().bitmap_chunk_sectors != 0 {
        return Err("the array has a bitmap already".into());
    }
    let mut space = u64::MAX;
    for &i in &ids {
        if let Some(Some(dev)) = engine.devs.get(i) {
            let r = room(&dev.meta.sb);
            if r < 8 {
                return Err(format!(
                    "{}: no room for a bitmap ({r} sectors between the superblock and the \
                     data or the bad-block log)",
                    dev.meta.path.display()
                ));
            }
            space = space.min(r);
        }
    }
    // A requested chunk is taken as it is, or refused (mdadm's add_internal_bitmap1: 4 KiB
    // at least, and its bits must fit); without one, the smallest from mdadm's 64 MiB up.
    let chunk_bytes = match chunk {
        Some(c) if c < 4096 => {
            return Err(format!(
                "a bitmap chunk of {c} bytes is below 4 KiB, the smallest mdadm makes"
            ));
        }
        Some(c) if region_bytes(data_sectors, u64::from(c)) / 512 > space => {
            return Err(match smallest_fitting(data_sectors, space, 4096) {
                Some(smallest) => format!(
                    "a bitmap chunk of {c} bytes does not fit: the members have room for \
                     {space} sectors of bitmap; the smallest chunk that fits is {} KiB",
                    smallest / 1024
                ),
                None => no_chunk_fits(space),
            });
        }
        Some(c) => u64::from(c),
        None => smallest_fitting(data_sectors, space, u64::from(MDADM_DEFAULT_BITMAP_CHUNK))
            .ok_or_else(|| no_chunk_fits(space))?,
    };
    let region = region_bytes(data_sectors, chunk_bytes);
    let chunk_sectors = chunk_bytes / 512;
    let chunks = data_sectors.div_ceil(chunk_sectors);
    let mut done = Vec::new();
    for &i in &ids {
        let Some(Some(dev)) = engine.devs.get_mut(i) else {
            continue;
        };
        let sb = &dev.meta.sb;
        let offset: i32 = if sb.super_offset < sb.data_offset {
            8
        } else {
            let log = if sb.bblog_offset < 0 {
                i64::from(sb.bblog_offset)
            } else {
                0
            };
            i32::try_from(log - (region / 512) as i64).map_err(|_| "bitmap offset")?
        };
        let mut header = BitmapSuperblock::new(sb.set_uuid, data_sectors);
        header.chunksize = chunk_bytes as u32;
        header.events = sb.events;
        header.events_cleared = sb.events;
        header.daemon_sleep = header_seconds(delay);
        let mut image = vec![0u8; region as usize];
        header
            .serialize(&mut image[..256])
            .map_err(|e| format!("{}: bitmap header: {e}", dev.meta.path.display()))?;
        let bits = chunks.div_ceil(8) as usize;
        image[256..256 + bits].fill(0xff);
        let at = sb
            .super_offset
            .checked_add_signed(i64::from(offset))
            .ok_or("bitmap offset before the device")?;
        let p = dev.meta.path.display().to_string();
        let f = OpenOptions::new()
            .write(true)
            .open(&dev.meta.path)
            .map_err(|e| format!("{p}: open to write the bitmap: {e}"))?;
        f.write_all_at(&image, at * 512)
            .map_err(|e| format!("{p}: write the bitmap: {e}"))?;
        f.sync_all()
            .map_err(|e| format!("{p}: fsync the bitmap: {e}"))?;
        dev.meta.sb.bitmap_offset = offset;
        dev.meta.sb.feature_map.insert(FeatureMap::BITMAP_OFFSET);
        dev.meta.bitmap = Some((header, image));
        done.push(format!(
            "{p}: bitmap at {offset} sectors from the superblock"
        ));
    }
    let mut cfg = *engine.array.config();
    cfg.bitmap_chunk_sectors = chunk_sectors;
    let n = RaidArray::bitmap_bytes(&cfg);
    let bits: &'static mut [u8] = Box::leak(vec![0u8; n].into_boxed_slice());
    let hot: &'static mut [u8] = Box::leak(vec![0u8; n].into_boxed_slice());
    engine
        .array
        .add_bitmap(bits, hot, chunk_sectors)
        .map_err(|e| format!("cannot add the bitmap: {e}"))?;
    engine
        .array
        .set_bitmap_daemon(delay)
        .map_err(|e| format!("cannot set the delay: {e}"))?;
    engine.drive();
    done.push(format!(
        "internal bitmap of {} KiB chunks, every chunk dirty until the daemon clears it \
         (every {})",
        chunk_bytes / 1024,
        seconds_text(delay)
    ));
    Ok(done)
}

/// Drops the running array's bitmap.
pub(super) fn remove(engine: &mut RaidEngine) -> Result<Vec<String>, String> {
    engine
        .array
        .remove_bitmap()
        .map_err(|e| format!("cannot drop the bitmap: {e}"))?;
    for dev in engine.devs.iter_mut().flatten() {
        dev.meta.bitmap = None;
    }
    engine.drive();
    Ok(vec![
        "bitmap dropped (a crash now means a full resync)".into(),
    ])
}
