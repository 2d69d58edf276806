//! The strict read of an md member, as `raid1 run` and `add` take one (md-format.md §1.7):
//! the v1.x superblock at one of its three places, checked field by field, then its bitmap and
//! its bad-block log. Every error names the device and the field. Nothing here writes.

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use raid1_core::{BadRange, SuperblockState, bridge};
use raid1_superblock::{BadBlockLog, BitmapState, BitmapSuperblock, FeatureMap, Superblock};

use super::signatures::md090_at;
use super::{Identity, ReadAt, md1_sector};

/// Bytes read and rewritten around a superblock (the superblock page).
pub const SB_PAGE: usize = 4096;

/// A member's metadata as read from its device: the template of every later superblock and
/// bitmap write to it. Assembly reads it ([`FoundMember`]) and the running array keeps it for
/// each member.
#[derive(Debug)]
pub struct MemberMeta {
    /// The path given.
    pub path: PathBuf,
    /// Its identity.
    pub id: Identity,
    /// Size in bytes.
    pub size: u64,
    /// The parsed superblock (the template for every later write to this member).
    pub sb: Box<Superblock>,
    /// The 4 KiB page at `super_offset` as read (rewritten with the new superblock in front).
    pub sb_page: Vec<u8>,
    /// The bitmap header and the on-disk bitmap area (4 KiB multiple), when the member has one.
    pub bitmap: Option<(BitmapSuperblock, Vec<u8>)>,
    /// The bad-block log on disk as device-absolute `(first sector, sectors)` runs, sorted and
    /// merged (empty unless the superblock has the BAD_BLOCKS feature); kept up to date as the
    /// running array rewrites the log.
    pub bad_blocks: Vec<(u64, u64)>,
}

impl MemberMeta {
    /// Whether the superblock reserves room for a bad-block log (mdadm reserves 8 sectors at
    /// create; `--update=no-bbl` drops it). Without one, a bad block cannot be recorded and a
    /// write error fails the member, as md does.
    pub fn has_log(&self) -> bool {
        self.sb.bblog_offset != 0 && self.sb.bblog_size != 0 && self.sb.bblog_size <= 8
    }
}

/// What one device holds, read before the array is started.
#[derive(Debug)]
pub struct FoundMember {
    /// Its metadata (its bad-block log included).
    pub meta: MemberMeta,
    /// Why the bitmap its superblock announces could not be loaded (see `trust`).
    pub bitmap_error: Option<String>,
}

impl FoundMember {
    /// The bad blocks as the core takes them: relative to this member's data area, clipped to
    /// the array's `data_sectors` (md's log holds device-absolute sectors; what lies outside the
    /// data area is never read as data).
    pub fn bad_ranges(&self, data_sectors: u64) -> Vec<BadRange> {
        data_relative(
            &self.meta.bad_blocks,
            self.meta.sb.data_offset,
            data_sectors,
        )
    }

    /// The superblock state the core needs from this member (raid1-core's bridge; a member
    /// that [`read_member_from`] accepted always converts).
    pub fn state<const M: usize>(&self) -> Result<SuperblockState<M>, String> {
        bridge::read_state(&self.meta.sb, self.meta.bitmap.as_ref().map(|(b, _)| b))
            .map_err(|e| format!("{}: {e}", self.meta.path.display()))
    }
}

/// Device-absolute runs `(start, sectors)` (sorted, merged) to the core's data-relative ranges
/// inside `[data_offset, data_offset + data_sectors)`. A run longer than `u32::MAX` sectors (a
/// huge `bblog_shift`) becomes several ranges.
pub fn data_relative(runs: &[(u64, u64)], data_offset: u64, data_sectors: u64) -> Vec<BadRange> {
    let data_end = data_offset.saturating_add(data_sectors);
    let mut out = Vec::new();
    for &(start, len) in runs {
        let s = start.max(data_offset);
        let e = start.saturating_add(len).min(data_end);
        let mut at = s;
        while at < e {
            let n = (e - at).min(u64::from(u32::MAX));
            out.push(BadRange {
                start: at - data_offset,
                sectors: n as u32,
            });
            at += n;
        }
    }
    out
}

/// Reads the bad-block log of `sb` (only when the BAD_BLOCKS feature says the log holds
/// entries: a never-written log is zeros) as device-absolute runs, sorted and merged as the
/// kernel's badblocks_set does with the entries it loads; empty entries are skipped.
fn read_bad_blocks(f: &dyn ReadAt, sb: &Superblock, p: &str) -> Result<Vec<(u64, u64)>, String> {
    if !sb.feature_map.contains(FeatureMap::BAD_BLOCKS) {
        return Ok(Vec::new());
    }
    if sb.bblog_offset == 0 || sb.bblog_size == 0 || sb.bblog_size > 8 {
        return Err(format!(
            "{p}: the BAD_BLOCKS feature is set but the bad-block log is not where md keeps it \
             (bblog_offset = {}, bblog_size = {} sectors; md's log is 1 to 8 sectors)",
            sb.bblog_offset, sb.bblog_size
        ));
    }
    let at = sb
        .super_offset
        .checked_add_signed(i64::from(sb.bblog_offset))
        .ok_or_else(|| {
            format!(
                "{p}: bblog_offset = {} points before the start of the device",
                sb.bblog_offset
            )
        })?;
    let mut bytes = vec![0u8; usize::from(sb.bblog_size) * 512];
    f.read_exact_at(&mut bytes, at.saturating_mul(512))
        .map_err(|e| format!("{p}: read the bad-block log at sector {at}: {e}"))?;
    let shift = sb.bblog_shift;
    let runs: Vec<(u64, u64)> = BadBlockLog::new_unchecked(&bytes)
        .iter()
        .map(|b| (b.start_sector(shift), b.len_sectors(shift)))
        .collect();
    Ok(merge_runs(runs))
}

/// `(start, sectors)` runs sorted, empty ones dropped, overlapping or adjacent ones merged.
pub fn merge_runs(mut runs: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    runs.retain(|r| r.1 != 0);
    runs.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
    for (s, n) in runs {
        match merged.last_mut() {
            Some((ps, pn)) if s <= ps.saturating_add(*pn) => {
                *pn = (*pn).max(s.saturating_add(n) - *ps);
            }
            _ => merged.push((s, n)),
        }
    }
    merged
}

/// Reads and validates the md v1 superblock (and bitmap) of `path`, for an engine with `M`
/// member positions (a `dev_number` it cannot hold is refused). Errors name the device and the
/// field.
pub fn read_member<const M: usize>(path: &Path) -> Result<FoundMember, String> {
    let p = path.display();
    if crate::nbd::client::is_uri(path.as_os_str()) {
        let dev =
            super::Device::open(path, super::Access::Read).map_err(|e| format!("{p}: {e}"))?;
        return read_member_on::<M>(&dev, path, dev.identity(), dev.size());
    }
    let f = File::open(path).map_err(|e| format!("{p}: open failed: {e}"))?;
    read_member_from::<M>(&f, path)
}

/// [`read_member`] on an open descriptor (`path` names it in messages and is kept as the
/// member's path).
pub fn read_member_from<const M: usize>(f: &File, path: &Path) -> Result<FoundMember, String> {
    let p = path.display();
    let meta = f.metadata().map_err(|e| format!("{p}: stat failed: {e}"))?;
    let ft = meta.file_type();
    if !ft.is_block_device() && !ft.is_file() {
        return Err(format!(
            "{p}: not a block device or a regular file (an md member must be one of them)"
        ));
    }
    let id = Identity::of_metadata(&meta);
    let size = match id {
        Identity::Block(_) => {
            use std::io::{Seek, SeekFrom};
            let mut g = f;
            g.seek(SeekFrom::End(0))
                .map_err(|e| format!("{p}: size: {e}"))?
        }
        Identity::File(..) | Identity::Remote(_) => meta.len(),
    };
    read_member_on::<M>(f, path, id, size)
}

/// [`read_member`] through `f`, which reads the member `path` names (`id`, `size` bytes): a
/// file, a block device or an NBD export.
pub fn read_member_on<const M: usize>(
    f: &dyn ReadAt,
    path: &Path,
    id: Identity,
    size: u64,
) -> Result<FoundMember, String> {
    let p = path.display();
    let sectors = size / 512;
    if size == 0 {
        return Err(format!(
            "{p}: size 0: an empty file or device holds no md member"
        ));
    }
    if sectors < 24 {
        return Err(format!(
            "{p}: {size} bytes is too small for md metadata (at least 12 KiB)"
        ));
    }
    let mut misses = Vec::new();
    for minor in [2u8, 1, 0] {
        let Some(at) = md1_sector(minor, sectors) else {
            continue;
        };
        let mut page = vec![0u8; SB_PAGE];
        let avail = (size - at * 512).min(SB_PAGE as u64) as usize;
        f.read_exact_at(&mut page[..avail], at * 512)
            .map_err(|e| format!("{p}: read at sector {at}: {e}"))?;
        let sb: Box<Superblock> = match Superblock::parse(&page) {
            Ok(sb) => Box::new(sb),
            Err(e) => {
                if e.field != "magic" {
                    misses.push(format!("1.{minor} at sector {at}: {e}"));
                }
                continue;
            }
        };
        if sb.super_offset != at {
            misses.push(format!(
                "1.{minor} at sector {at}: super_offset = {} does not name this sector",
                sb.super_offset
            ));
            continue;
        }
        sb.check_placement(sectors)
            .map_err(|e| format!("{p}: superblock 1.{minor}: {e}"))?;
        if sb.level != 1 {
            return Err(format!(
                "{p}: level = {} (raid1 only handles level 1)",
                sb.level
            ));
        }
        let end = sb.data_offset.saturating_add(sb.size);
        if end > sectors {
            return Err(format!(
                "{p}: data_offset + size = {end} sectors is beyond the device ({sectors} sectors)"
            ));
        }
        // What the engine cannot hold (a dev_number beyond the engine's `M` member positions, a
        // raid_disks beyond 65535) is refused here, before anything else reads the member.
        bridge::read_state::<M, { raid1_superblock::MAX_DEV }>(&sb, None)
            .map_err(|e| format!("{p}: {e}"))?;
        let (bitmap, bitmap_error) = match read_bitmap(f, &sb, size) {
            Ok(b) => (b, None),
            Err(e) => (None, Some(e)),
        };
        let bad_blocks = read_bad_blocks(f, &sb, &p.to_string())?;
        return Ok(FoundMember {
            meta: MemberMeta {
                path: path.to_path_buf(),
                id,
                size,
                sb,
                sb_page: page,
                bitmap,
                bad_blocks,
            },
            bitmap_error,
        });
    }
    if let Ok(Some(at)) = md090_at(f, size) {
        return Err(format!(
            "{p}: metadata 0.90 is not supported (an md 0.90 superblock at byte {at}); \
             raid1 handles metadata 1.0, 1.1 and 1.2 (mdadm can convert a stopped 0.90 array: \
             mdadm --assemble --update=metadata)"
        ));
    }
    if misses.is_empty() {
        Err(format!(
            "{p}: no md v1.x superblock (magic = a92b4efc not found at sectors 8, 0 or {})",
            md1_sector(0, sectors).unwrap_or(0)
        ))
    } else {
        Err(format!("{p}: no valid superblock: {}", misses.join("; ")))
    }
}

/// Reads and checks the bitmap of the member whose superblock is `sb` (on a device of `size`
/// bytes): the header as the kernel validates it, the UUID, and the area (header plus one bit
/// per chunk of the array size, whatever `sync_size` says) inside the metadata area. Returns
/// the header and the area image (4 KiB multiple where the layout allows), `None` without
/// BITMAP_OFFSET. Errors name the field.
pub fn read_bitmap(
    f: &dyn ReadAt,
    sb: &Superblock,
    size: u64,
) -> Result<Option<(BitmapSuperblock, Vec<u8>)>, String> {
    if !sb.feature_map.contains(FeatureMap::BITMAP_OFFSET) {
        return Ok(None);
    }
    let sectors = size / 512;
    let Some(bs) = sb.bitmap_sector().filter(|s| *s < sectors) else {
        return Err(format!(
            "bitmap_offset = {} sectors from the superblock (sector {}) is outside the device \
             ({sectors} sectors)",
            sb.bitmap_offset, sb.super_offset
        ));
    };
    let data_end = sb.data_offset.saturating_add(sb.size);
    if bs >= sb.data_offset && bs < data_end {
        return Err(format!(
            "bitmap_offset = {} sectors puts the bitmap at sector {bs}, inside the data area \
             (sectors {}..{data_end})",
            sb.bitmap_offset, sb.data_offset
        ));
    }
    if bs >= sb.super_offset && bs < sb.super_offset + 8 {
        return Err(format!(
            "bitmap_offset = {} sectors puts the bitmap at sector {bs}, inside the superblock",
            sb.bitmap_offset
        ));
    }
    let mut head = vec![0u8; 512];
    f.read_exact_at(&mut head, bs * 512)
        .map_err(|e| format!("bitmap: read at sector {bs}: {e}"))?;
    let bm = BitmapSuperblock::parse(&head).map_err(|e| e.to_string())?;
    bm.check_uuid(&sb.set_uuid).map_err(|e| e.to_string())?;
    // The bits cover the array, not the header's own `sync_size`.
    let need = 256 + array_bitmap(&bm, sb.size).bits_len();
    let limit = bitmap_area_end(sb, bs, sectors);
    let room = (limit - bs) * 512;
    if need > room {
        return Err(format!(
            "bitmap: {need} bytes (chunksize {} over {} sectors) do not fit the {room} bytes \
             between sector {bs} and sector {limit}",
            bm.chunksize, sb.size
        ));
    }
    let area = need.div_ceil(SB_PAGE as u64) * SB_PAGE as u64;
    let mut image = vec![0u8; area.min(room) as usize];
    f.read_exact_at(&mut image, bs * 512)
        .map_err(|e| format!("bitmap: read at sector {bs}: {e}"))?;
    Ok(Some((bm, image)))
}

/// Where a bitmap area that starts at sector `bs` must end: at whatever comes next on a device
/// of `sectors` sectors (data, superblock, bad-block log, the device's end).
pub fn bitmap_area_end(sb: &Superblock, bs: u64, sectors: u64) -> u64 {
    [
        Some(sb.data_offset),
        Some(sb.super_offset),
        sb.bblog_sector(),
        Some(sectors),
    ]
    .into_iter()
    .flatten()
    .filter(|s| *s > bs)
    .min()
    .unwrap_or(sectors)
}

/// `bm` as the array uses it: `sync_size` is the array size (`md_bitmap_read_sb` rewrites it),
/// and a write error is never left set on disk.
pub fn array_bitmap(bm: &BitmapSuperblock, array_sectors: u64) -> BitmapSuperblock {
    let mut b = bm.clone();
    b.sync_size = array_sectors;
    b.state.remove(BitmapState::WRITE_ERROR);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_runs_are_merged_and_made_data_relative() {
        // Unsorted, overlapping, adjacent and empty entries, as a hostile log may hold them.
        let runs = merge_runs(vec![
            (300, 8),
            (100, 8),
            (104, 8),
            (112, 4),
            (50, 0),
            (200, 1),
        ]);
        assert_eq!(runs, vec![(100, 16), (200, 1), (300, 8)]);
        // Data area 110..310 (data_offset 110, 200 sectors): clipped at both ends.
        let rel = data_relative(&runs, 110, 200);
        let rel: Vec<(u64, u32)> = rel.iter().map(|b| (b.start, b.sectors)).collect();
        assert_eq!(rel, vec![(0, 6), (90, 1), (190, 8)]);
        // Entirely outside: nothing; a run beyond u32::MAX sectors: split.
        assert!(data_relative(&[(0, 100)], 110, 200).is_empty());
        let area = 3 * u64::from(u32::MAX) + 5;
        let big = data_relative(&[(0, u64::MAX)], 0, area);
        let big: Vec<(u64, u32)> = big.iter().map(|b| (b.start, b.sectors)).collect();
        let m = u64::from(u32::MAX);
        assert_eq!(
            big,
            vec![(0, u32::MAX), (m, u32::MAX), (2 * m, u32::MAX), (3 * m, 5)]
        );
    }
}
