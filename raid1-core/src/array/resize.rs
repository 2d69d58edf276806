//! Changing the array's size (mdadm's `--grow --size`): md's update_size (md.c) and
//! raid1_resize (raid1.c), with the bitmap's md_bitmap_resize (md-bitmap.c).
//!
//! The size is md's `dev_sectors`: how much of every member's data area the array uses, and for
//! RAID1 the array's size. Like md it changes only while nothing else does: the array quiesced
//! and read-write, no sync job (md refuses with EBUSY while MD_RECOVERY_RUNNING; mdadm freezes
//! `sync_action` first), no metadata round under way. Whether every member has room is the
//! frontend's to check (md's update_size compares the size with each rdev's `sectors`): the
//! engine never sees a device.
//!
//! * **Growing** marks the new region for resync (md: `recovery_cp = old size` unless a resync
//!   was already pending below it), and with a bitmap sets the bits of its chunks (md sets them
//!   NEEDED in memory; here they are written too, so that a power cut before the resync still
//!   finds them). The bitmap keeps its chunk if the bigger bit array fits the room the frontend
//!   has for it, else the chunk doubles until it does (md_bitmap_resize); the old bits are
//!   folded into the new ones (a new chunk is dirty if any old chunk in it was). The pages go
//!   to disk before the superblock round that records the new size: whatever a power cut
//!   leaves, no superblock gives the new size while the bits of the new region are clear.
//!   When the chunk changes, the frontend first writes every member's bitmap header with the
//!   new chunk and an area with every bit set (as for [`Array::add_bitmap`]), so that no page
//!   is ever read with the other chunk. `assume_clean` (mdadm's `--assume-clean`): neither,
//!   the caller vouches that the mirrors agree there.
//! * **Shrinking** is refused while a request in the table (running or waiting) touches
//!   sectors beyond the new end; the data there is gone for the array. Bad-block list entries
//!   there are dropped (the on-disk log is the frontend's), the bitmap keeps its chunk and its
//!   pages follow the superblock round (a bit of the cut region cleared on disk before the
//!   superblock says the array ended would be read with the old size after a power cut).
//!
//! Either way `events` goes up: the new size (and the bitmap header's `sync_size`) reach
//! every member in one superblock round. After a grow no write goes out before that round is
//! on disk (as after a member failure): a write into the new region acknowledged earlier
//! would be lost to a power cut that assembles the old size.

use super::bitmap::get_bit;
use super::*;

/// The largest array size, in sectors: every byte offset of the array fits a `u64` (with
/// 32-bit sectors, half their range: 1 TiB, so that no sum of two sectors in it overflows).
pub const MAX_ARRAY_SECTORS: Sector = if Sector::BITS == 64 {
    (u64::MAX >> 9) as Sector
} else {
    Sector::MAX >> 1
};

/// md's largest bitmap chunk: 2^31 bytes (md_bitmap_resize stops doubling when the chunk's
/// shift reaches 31, the width of the header's `chunksize` field less one).
pub const MAX_BITMAP_CHUNK_SECTORS: Sector = 1 << 22;

/// Sets or clears bit `c` of an md bitmap.
fn put_bit(bits: &mut [u8], c: Sector, on: bool) {
    if let Some(b) = usize::try_from(c / 8).ok().and_then(|i| bits.get_mut(i)) {
        let mask = 1u8 << (c % 8);
        if on {
            *b |= mask;
        } else {
            *b &= !mask;
        }
    }
}

/// Folds a bit array of `from` chunks into `to` chunks `factor` times as large, in place (new
/// bit `i` is the OR of old bits `i * factor ..`), and clears every bit from `to` on. Reading
/// old bits at or beyond `i * factor >= i` before writing bit `i` keeps it correct in place.
fn fold_in_place(bits: &mut [u8], from: Sector, to: Sector, factor: Sector) {
    for i in 0..to {
        let lo = i.saturating_mul(factor);
        let hi = lo.saturating_add(factor).min(from);
        let on = (lo..hi).any(|j| get_bit(bits, j));
        put_bit(bits, i, on);
    }
    let end = Sector::try_from(bits.len())
        .unwrap_or(Sector::MAX)
        .saturating_mul(8);
    for c in to..end {
        if c % 8 == 0 {
            // Whole bytes from here.
            let first = usize::try_from(c / 8).unwrap_or(usize::MAX);
            if let Some(rest) = bits.get_mut(first..) {
                rest.fill(0);
            }
            break;
        }
        put_bit(bits, c, false);
    }
}

/// [`fold_in_place`] from `src` into the zeroed `dst`.
fn fold_into(src: &[u8], from: Sector, dst: &mut [u8], to: Sector, factor: Sector) {
    dst.fill(0);
    for i in 0..to {
        let lo = i.saturating_mul(factor);
        let hi = lo.saturating_add(factor).min(from);
        if (lo..hi).any(|j| get_bit(src, j)) {
            put_bit(dst, i, true);
        }
    }
}

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// The bitmap chunk (sectors) the array would have at `sectors` (md_bitmap_resize): the
    /// current one if the bit array fits `room_bytes` (bytes the frontend has for the bits on
    /// every member, the header not included; 0: only as many as the bits take now, md's rule
    /// when the metadata does not say) and the engine's [`MAX_BITMAP_PAGES`], else doubled until
    /// it does. A shrink keeps the chunk. 0 without a bitmap. Lets the frontend size the
    /// storage it lends [`Array::resize`] (`Array::bitmap_bytes` of the config with that size
    /// and chunk).
    pub fn resize_bitmap_chunk(
        &self,
        sectors: Sector,
        room_bytes: u64,
    ) -> Result<Sector, ReconfigError> {
        let chunk = self.cfg.bitmap_chunk_sectors;
        if chunk == 0 || self.bitmap.bits.is_none() {
            return Ok(0);
        }
        if sectors <= self.cfg.data_sectors {
            return Ok(chunk);
        }
        let room = if room_bytes == 0 {
            u64::from(self.bitmap.chunks.div_ceil(8))
        } else {
            room_bytes
        };
        let page = u64::from(self.cfg.bitmap_page_bytes);
        let limit = room.min(page.saturating_mul(MAX_BITMAP_PAGES as u64));
        let mut c = chunk;
        loop {
            if u64::from(sectors.div_ceil(c).div_ceil(8)) <= limit {
                return Ok(c);
            }
            if c >= MAX_BITMAP_CHUNK_SECTORS {
                return Err(ReconfigError::BitmapRoom { room: room_bytes });
            }
            c = c.saturating_mul(2);
        }
    }

    /// md's `--grow --size` (update_size, raid1_resize): the array's size becomes `sectors`,
    /// recorded in a superblock round (`events` goes up). Growing marks the new region for
    /// resync unless `assume_clean`, and resizes the bitmap ([`Array::resize_bitmap_chunk`]
    /// with `bitmap_room`): in the storage it has (`storage` `None`, when that is large
    /// enough) or in `storage` (`bits` and `hot`, each at least `Array::bitmap_bytes` of the
    /// new configuration; the old storage is no longer used). Needs the array quiesced,
    /// read-write, no sync job (stop it first, as mdadm freezes `sync_action`) and no metadata
    /// round under way. Shrinking is refused while a request in the table touches sectors
    /// beyond the new end. That every member's data area holds `sectors` is the frontend's to
    /// check. Nothing changes unless `Ok`.
    pub fn resize(
        &mut self,
        sectors: Sector,
        bitmap_room: u64,
        storage: Option<(&'b mut [u8], &'b mut [u8])>,
        assume_clean: bool,
    ) -> Result<(), ReconfigError> {
        // Read-only first: its superblock rounds wait until read-write, so it never settles.
        if self.ro.asked() {
            return Err(ReconfigError::ReadOnly);
        }
        if !self.is_quiesced()
            || self.sb.round.is_some()
            || self.sb.wanted > self.sb.done
            || self.bitmap.round_pages != 0
            || self.bitmap.outstanding != 0
            || self.flush.purpose != 0
        {
            return Err(ReconfigError::NotQuiesced);
        }
        if self.sync.action.is_some() {
            return Err(ReconfigError::SyncBusy);
        }
        if sectors == 0 || sectors > MAX_ARRAY_SECTORS {
            return Err(ReconfigError::Size(sectors));
        }
        let old = self.cfg.data_sectors;
        if sectors < old {
            let mut at = 0;
            while let Some(ri) = self.live.next_from(at) {
                at = ri + 1;
                let Some(r) = self.reqs.get(ri) else { continue };
                let end = r.req.sector.saturating_add(Sector::from(r.req.sectors));
                if r.phase != Phase::Done && r.req.op != RequestOp::Flush && end > sectors {
                    return Err(ReconfigError::ShrinkBusy {
                        sectors,
                        sector: r.req.sector.max(sectors),
                    });
                }
            }
        }
        let chunk = self.resize_bitmap_chunk(sectors, bitmap_room)?;
        let mut cfg = self.cfg;
        cfg.data_sectors = sectors;
        cfg.bitmap_chunk_sectors = chunk;
        let need = Self::bitmap_bytes(&cfg);
        let pages = need.div_ceil(self.cfg.bitmap_page_bytes as usize);
        if pages > MAX_BITMAP_PAGES {
            return Err(ReconfigError::BitmapConfig(
                ConfigError::BitmapTooManyPages(pages),
            ));
        }
        let fits = match (&storage, chunk) {
            (Some(_), 0) => {
                return Err(ReconfigError::BitmapConfig(
                    ConfigError::BitmapStorageMismatch,
                ));
            }
            (Some((b, h)), _) => b.len() >= need && h.len() >= need,
            (None, _) => {
                self.bitmap.bits.as_deref().map_or(0, <[u8]>::len) >= need
                    && self.bitmap.hot.as_deref().map_or(0, <[u8]>::len) >= need
            }
        };
        if !fits {
            return Err(ReconfigError::BitmapConfig(
                ConfigError::BitmapStorageTooSmall(need),
            ));
        }
        // Nothing has changed so far.
        let grow = sectors > old;
        // Planted bug: the grown region is neither marked for resync nor dirty in the bitmap.
        let mark_new = grow && !assume_clean && !planted::on(Bug::ResizeNoResync);
        if chunk != 0 {
            self.bitmap_resize(old, sectors, chunk, storage, mark_new);
        }
        self.cfg.data_sectors = sectors;
        if sectors < old {
            for b in self.bad.iter_mut() {
                b.truncate(sectors);
            }
        }
        if mark_new && self.resync_cp > old {
            self.resync_cp = old;
        }
        self.sync_blocked = false;
        self.want_sb();
        if grow {
            // A write into the grown region acknowledged before every in-sync superblock says
            // the array is that large would be lost to a power cut that assembles the old
            // size: writes wait for that round, as for a failure record.
            self.fail_gen = self.sb.wanted;
        }
        if chunk != 0 {
            if grow {
                // The new region's bits land before any superblock says the array is larger.
                self.sb.after_bitmap = self.bitmap.started + 1;
            } else {
                // The cut region's bits stay on disk until the superblocks say it is cut.
                self.bitmap.hold_sb = self.sb.wanted;
            }
        }
        self.pump();
        Ok(())
    }

    /// md_bitmap_resize: the bit array for `sectors` in chunks of `chunk` (a power-of-two
    /// multiple of the current chunk), in `storage` or in place; with `mark_new` the chunks of
    /// `[old, sectors)` are dirty. Every page is rewritten.
    fn bitmap_resize(
        &mut self,
        old: Sector,
        sectors: Sector,
        chunk: Sector,
        storage: Option<(&'b mut [u8], &'b mut [u8])>,
        mark_new: bool,
    ) {
        let old_chunk = self.cfg.bitmap_chunk_sectors.max(1);
        let factor = (chunk / old_chunk).max(1);
        let from = self.bitmap.chunks;
        let to = sectors.div_ceil(chunk);
        match storage {
            Some((bits, hot)) => {
                if let Some(src) = self.bitmap.bits.as_deref() {
                    fold_into(src, from, bits, to, factor);
                }
                if let Some(src) = self.bitmap.hot.as_deref() {
                    fold_into(src, from, hot, to, factor);
                }
                self.bitmap.bits = Some(bits);
                self.bitmap.hot = Some(hot);
            }
            None => {
                if let Some(bits) = self.bitmap.bits.as_deref_mut() {
                    fold_in_place(bits, from, to, factor);
                }
                if let Some(hot) = self.bitmap.hot.as_deref_mut() {
                    fold_in_place(hot, from, to, factor);
                }
            }
        }
        if mark_new {
            if let Some(bits) = self.bitmap.bits.as_deref_mut() {
                for c in old / chunk..to {
                    put_bit(bits, c, true);
                }
            }
        }
        let need = usize::try_from(to.div_ceil(8)).unwrap_or(usize::MAX);
        self.cfg.bitmap_chunk_sectors = chunk;
        self.bitmap.chunks = to;
        self.bitmap.pages = need.div_ceil(self.cfg.bitmap_page_bytes as usize);
        self.bitmap.unrecorded = 0;
        self.mark_all_bitmap_pages();
    }
}
