//! The metadata writer: the superblock page and bitmap blocks each member gets when the core
//! asks for a superblock or bitmap round, rendered through raid1-core's bridge from the
//! member's own superblock and bitmap header; the final writes at a clean stop; and a new
//! member's bitmap.
//!
//! Only the 4 KiB blocks a write covers take the core's bits (`copy_bits`); the rendered bytes
//! are copied once more, into the pool buffer the write is sent from (engine.rs `staged`).

use std::io;

use raid1_core::{BadRange, IoResult, MemberId, MemberState, SuperblockState, Tag, bridge};
use raid1_superblock::{
    BadBlock, BitmapState, BitmapSuperblock, FeatureMap, MdTime, Superblock, write_bad_blocks,
};

use crate::member::strict::{MemberMeta, merge_runs};

use super::engine::{Dev, Done, Job, JobOp, MAX_REQUEST_BYTES, RaidEngine, unix_now};
use super::{MEMBERS, RaidArray};

impl RaidEngine {
    /// The superblock page (and the bitmap's first block, with its header) for `member`.
    pub(super) fn render_superblock(
        &mut self,
        member: MemberId,
        st: &SuperblockState<MEMBERS>,
    ) -> Vec<(u64, Vec<u8>)> {
        let Some(Some(dev)) = self.devs.get_mut(usize::from(member.0)) else {
            return Vec::new();
        };
        // raid1-core's bridge writes the engine's state (md's super_1_sync, max_dev growth
        // included) into copies of the member's superblock and bitmap header; they replace the
        // originals once the superblock serializes.
        let mut sb = dev.meta.sb.clone();
        let mut header = dev.meta.bitmap.as_ref().map(|(bm, _)| bm.clone());
        if bridge::apply_state(st, &mut sb, header.as_mut()).is_err() {
            return Vec::new();
        }
        sb.utime = MdTime::from_seconds(unix_now());
        // The bad-block log goes with the superblock (md_update_sb), when it changed: the
        // engine's list of this member now, in device-absolute sectors.
        let data_sectors = self.array.config().data_sectors;
        let list = self.array.bad_blocks(member);
        let log = match render_log(&dev.meta, &mut sb, list, data_sectors) {
            Ok(log) => log,
            Err(e) => {
                // md fails a device whose bad block it cannot record: the superblock write of
                // this member fails.
                eprintln!(
                    "raid1: {}: cannot write its bad-block log: {e}",
                    dev.meta.path.display()
                );
                return Vec::new();
            }
        };
        let mut page = dev.meta.sb_page.clone();
        if sb.serialize(&mut page).is_err() {
            return Vec::new();
        }
        dev.meta.sb = sb;
        dev.meta.sb_page.clone_from(&page);
        let mut writes = vec![(dev.meta.sb.super_offset * 512, page)];
        if let Some((at, bytes, runs)) = log {
            dev.meta.bad_blocks = runs;
            writes.push((at * 512, bytes));
        }
        if let (true, Some(bs), Some((bm, image)), Some(header)) = (
            st.bitmap,
            dev.meta.sb.bitmap_sector(),
            dev.meta.bitmap.as_mut(),
            header,
        ) {
            *bm = header;
            // The header's block: the header and the bits that share its 4 KiB.
            let n = image.len().min(4096);
            copy_bits(&self.array, image, 0, n);
            if bm.serialize(&mut image[..256]).is_ok() {
                writes.push((bs * 512, image[..n].to_vec()));
            }
        }
        writes
    }

    pub(super) fn render_bitmap_page(
        &mut self,
        member: MemberId,
        page: u32,
    ) -> Vec<(u64, Vec<u8>)> {
        let page_bytes = self.array.config().bitmap_page_bytes as usize;
        let Some(Some(dev)) = self.devs.get_mut(usize::from(member.0)) else {
            return Vec::new();
        };
        let (Some(bs), Some((_, image))) = (dev.meta.sb.bitmap_sector(), dev.meta.bitmap.as_mut())
        else {
            return Vec::new();
        };
        let start = 256 + page as usize * page_bytes;
        let end = (start + page_bytes).min(image.len());
        let first = start / 4096 * 4096;
        let last = end.div_ceil(4096) * 4096;
        let last = last.min(image.len());
        if first >= last {
            return Vec::new();
        }
        // Only the 4 KiB blocks this page's write covers take the core's bits now.
        copy_bits(&self.array, image, first, last);
        vec![(bs * 512 + first as u64, image[first..last].to_vec())]
    }

    pub(super) fn queue_parts(&mut self, tag: Tag, member: MemberId, writes: Vec<(u64, Vec<u8>)>) {
        if writes.is_empty() {
            let _ = self.array.complete(self.now(), tag, IoResult::Error);
            return;
        }
        self.parts.insert(tag.0, (writes.len() as u32, false));
        self.queue_parts_counted(tag, member, writes);
    }

    /// Queues `writes` as parts of `tag` (already counted in `parts`).
    pub(super) fn queue_parts_counted(
        &mut self,
        tag: Tag,
        member: MemberId,
        writes: Vec<(u64, Vec<u8>)>,
    ) {
        for (offset, data) in writes {
            self.pending.push_back(Job {
                member: member.0,
                offset,
                op: JobOp::WriteMeta { data, fua: true },
                done: Done::Part(tag),
            });
        }
    }

    /// Writes the final superblock (and the whole bitmap area) of every present member, durably,
    /// and waits for them. Returns the members where a write failed (a bit each).
    pub fn write_final_metadata(&mut self) -> io::Result<u32> {
        // Every bitmap page the core keeps is on disk once nothing is pending: an out-of-date
        // mark (all bits were set at assembly) can go, as md's bitmap_load clears it.
        let settled = !self.array.status().metadata_pending;
        let mut jobs = Vec::new();
        for i in 0..MEMBERS {
            let id = MemberId(i as u8);
            let Some(info) = self.array.member(id) else {
                continue;
            };
            // md writes no superblock to a faulty member.
            if matches!(info.state, MemberState::Absent | MemberState::Faulty)
                || self.devs[i].is_none()
            {
                continue;
            }
            let Some(st) = self.array.superblock_for(id) else {
                continue;
            };
            if let (true, Some(Some(dev))) = (settled, self.devs.get_mut(i)) {
                if let Some((bm, _)) = dev.meta.bitmap.as_mut() {
                    bm.state
                        .remove(BitmapState::STALE | BitmapState::WRITE_ERROR);
                }
            }
            let mut writes = self.render_superblock(id, &st);
            if let Some(Some(dev)) = self.devs.get_mut(i) {
                if let (Some(bs), Some((_, image))) =
                    (dev.meta.sb.bitmap_sector(), dev.meta.bitmap.as_mut())
                {
                    let n = image.len();
                    copy_bits(&self.array, image, 0, n);
                    writes.retain(|(off, _)| *off != bs * 512);
                    // In pieces a pool buffer holds.
                    let piece = MAX_REQUEST_BYTES as usize;
                    for (k, part) in image.chunks(piece).enumerate() {
                        writes.push((bs * 512 + (k * piece) as u64, part.to_vec()));
                    }
                }
            }
            // The superblock page comes first in `writes`: it goes in the second round, after
            // every bitmap (md_update_sb's order).
            for (k, (offset, data)) in writes.into_iter().enumerate() {
                jobs.push((
                    k > 0,
                    Job {
                        member: i as u8,
                        offset,
                        op: JobOp::WriteMeta { data, fua: true },
                        done: Done::Stop(i as u8),
                    },
                ));
            }
        }
        let (bitmaps, superblocks): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|(b, _)| *b);
        let mut failed = 0;
        for round in [bitmaps, superblocks] {
            self.stop_writes = (round.len() as u32, 0);
            self.pending.extend(round.into_iter().map(|(_, j)| j));
            while self.stop_writes.0 > 0 {
                self.issue();
                self.io.flush()?;
                self.io.wait(1)?;
                self.reap();
            }
            failed |= self.stop_writes.1;
        }
        Ok(failed)
    }

    /// `dev`'s bitmap header and area as they belong on disk now: its area image with the core's
    /// current bits (a new or re-added member starts from it).
    pub fn current_bitmap(&self, dev: &Dev) -> Option<(BitmapSuperblock, Vec<u8>)> {
        let (bm, image) = dev.meta.bitmap.as_ref()?;
        let mut image = image.clone();
        let n = image.len();
        copy_bits(&self.array, &mut image, 0, n);
        Some((bm.clone(), image))
    }
}

/// A bad-block log to write: its first sector, its bytes, and the device-absolute runs it holds.
type LogWrite = (u64, Vec<u8>, Vec<(u64, u64)>);

/// The bad-block log for `meta`'s device holding the engine's `list` (data-area relative) and
/// the on-disk entries outside the data area (kept as they are), with `sb`'s BAD_BLOCKS feature
/// set to match: `Some((sector, bytes, runs))` when it differs from the log on disk, `None`
/// when nothing changed or the device has no log. Entries are in units of `1 << bblog_shift`
/// sectors (rounded outwards) and at most 512 units long, as the kernel writes them. An error
/// when the log cannot hold the list.
fn render_log(
    meta: &MemberMeta,
    sb: &mut Superblock,
    list: &[BadRange],
    data_sectors: u64,
) -> Result<Option<LogWrite>, String> {
    if !meta.has_log() {
        return Ok(None);
    }
    let lo = sb.data_offset;
    let hi = lo.saturating_add(data_sectors);
    let mut runs = Vec::new();
    for &(s, n) in &meta.bad_blocks {
        let e = s.saturating_add(n);
        if s < lo {
            runs.push((s, e.min(lo) - s));
        }
        if e > hi {
            let from = s.max(hi);
            runs.push((from, e - from));
        }
    }
    runs.extend(
        list.iter()
            .map(|b| (lo.saturating_add(b.start), u64::from(b.sectors))),
    );
    let runs = merge_runs(runs);
    let had = sb.feature_map.contains(FeatureMap::BAD_BLOCKS);
    if runs.is_empty() {
        sb.feature_map.remove(FeatureMap::BAD_BLOCKS);
    } else {
        sb.feature_map.insert(FeatureMap::BAD_BLOCKS);
    }
    if runs == meta.bad_blocks && had != runs.is_empty() {
        return Ok(None);
    }
    let shift = u32::from(sb.bblog_shift.min(63));
    let mut entries = Vec::new();
    for &(s, n) in &runs {
        let first = s >> shift;
        let end = s.saturating_add(n).div_ceil(1u64 << shift);
        let mut at = first;
        while at < end {
            let len = (end - at).min(512);
            entries.push(BadBlock {
                start: at,
                len: len as u16,
            });
            at += len;
        }
    }
    let mut bytes = vec![0u8; usize::from(sb.bblog_size) * 512];
    write_bad_blocks(&entries, &mut bytes).map_err(|e| {
        format!(
            "{} entries do not fit in its {} ({e})",
            entries.len(),
            bytes.len() / 8
        )
    })?;
    let at = sb
        .super_offset
        .checked_add_signed(i64::from(sb.bblog_offset))
        .ok_or("bblog_offset points before the start of the device")?;
    Ok(Some((at, bytes, runs)))
}

/// Copies the core's bitmap bits into the bytes `[from, to)` of a member's bitmap area image
/// (the 256-byte header first, then the bits, page after page).
fn copy_bits(array: &RaidArray, image: &mut [u8], from: usize, to: usize) {
    let page_bytes = array.config().bitmap_page_bytes as usize;
    if page_bytes == 0 {
        return;
    }
    let to = to.min(image.len());
    let mut page = from.saturating_sub(256) / page_bytes;
    loop {
        let at = 256 + page * page_bytes;
        let src = array.bitmap_page(page as u32);
        if src.is_empty() || at >= to {
            break;
        }
        let (s, e) = (at.max(from), (at + src.len()).min(to));
        if s < e {
            image[s..e].copy_from_slice(&src[s - at..e - at]);
        }
        page += 1;
    }
}
