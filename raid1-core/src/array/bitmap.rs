//! The write-intent bitmap: md-bitmap.c's md_bitmap_startwrite, md_bitmap_unplug (page
//! writes), md_bitmap_daemon_work (lazy clearing) and md_bitmap_start_sync (which chunks a
//! bitmap-guided sync visits).
//!
//! The bits live in caller storage in md's on-disk LSB-first layout, one bit per chunk of
//! `bitmap_chunk_sectors`, written out in pages of `bitmap_page_bytes`. A write sets its chunks'
//! bits and waits until the page rounds that carry them landed on every active member. Clearing
//! is lazy: the daemon marks the chunks still being written "hot", flushes every member, then
//! clears every bit not hot, records `events_cleared` in a superblock round first and rewrites
//! the changed pages. md counts each chunk down over two daemon periods; one flush covers the
//! same ground here.

use super::*;

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// Takes the caller's bitmap storage (`bits` and the same-sized `hot` map), checking that it
    /// fits the configuration (md_bitmap_create / md_bitmap_load).
    pub(super) fn attach_bitmap(
        &mut self,
        bits: Option<&'b mut [u8]>,
        hot: Option<&'b mut [u8]>,
    ) -> Result<(), ConfigError> {
        let need = Self::bitmap_bytes(&self.cfg);
        match (need, bits, hot) {
            (0, None, None) => Ok(()),
            (0, _, _) | (_, None, _) | (_, _, None) => Err(ConfigError::BitmapStorageMismatch),
            (need, Some(bits), Some(hot)) => {
                if bits.len() < need || hot.len() < need {
                    return Err(ConfigError::BitmapStorageTooSmall(need));
                }
                let page = self.cfg.bitmap_page_bytes as usize;
                let pages = need.div_ceil(page);
                if pages > MAX_BITMAP_PAGES {
                    return Err(ConfigError::BitmapTooManyPages(pages));
                }
                hot.iter_mut().for_each(|b| *b = 0);
                self.bm_chunks = self
                    .cfg
                    .data_sectors
                    .div_ceil(self.cfg.bitmap_chunk_sectors);
                self.bm_pages = pages;
                self.bitmap = Some(bits);
                self.hot = Some(hot);
                Ok(())
            }
        }
    }

    /// Every page is to be written in the next round (after assembly, a re-add, a new spare).
    pub(super) fn mark_all_bitmap_pages(&mut self) {
        if self.bitmap.is_some() {
            self.bm_dirty = if self.bm_pages >= 64 {
                u64::MAX
            } else {
                (1u64 << self.bm_pages) - 1
            };
        }
    }

    /// Sets the bitmap bits for a write (md_bitmap_startwrite); returns the bitmap round it must
    /// wait for.
    pub(super) fn bitmap_start_write(&mut self, sector: Sector, sectors: u32) -> u64 {
        let chunk = self.cfg.bitmap_chunk_sectors;
        let page_bits = u64::from(self.cfg.bitmap_page_bytes) * 8;
        let (Some(bits), Some(hot)) = (self.bitmap.as_deref_mut(), self.hot.as_deref_mut()) else {
            return 0;
        };
        if chunk == 0 || sectors == 0 {
            return 0;
        }
        let first = sector / chunk;
        let last = (sector + u64::from(sectors) - 1) / chunk;
        let mut need = 0;
        for c in first..=last.min(self.bm_chunks.saturating_sub(1)) {
            let byte = (c / 8) as usize;
            let mask = 1u8 << (c % 8);
            if let Some(h) = hot.get_mut(byte) {
                *h |= mask;
            }
            let page = c / page_bits;
            let pbit = if page < 64 { 1u64 << page } else { 0 };
            if let Some(b) = bits.get_mut(byte) {
                if *b & mask == 0 {
                    *b |= mask;
                    self.bm_dirty |= pbit;
                }
            }
            if self.bm_unrecorded & pbit != 0 {
                // A page given up on: this write asks for it again.
                self.bm_unrecorded &= !pbit;
                self.bm_dirty |= pbit;
            }
            if self.bm_dirty & pbit != 0 {
                need = need.max(self.bm_started + 1);
            } else if self.bm_round_pages & pbit != 0 {
                need = need.max(self.bm_started);
            }
        }
        if self.daemon_at.is_none() {
            self.daemon_at = Some(self.now.after(self.cfg.bitmap_daemon_ns));
        }
        need
    }

    /// As [`Self::sb_landed`], for bitmap round `need`.
    pub(super) fn bm_landed(&self, need: u64) -> Option<bool> {
        if self.bm_durable >= need {
            Some(true)
        } else if self.bm_done >= need {
            Some(false)
        } else {
            None
        }
    }

    /// Starts a page round when none is in flight (md_bitmap_unplug): the dirty pages go to
    /// every active member once the superblock recording `events_cleared` landed; a round that
    /// did not land on the last in-sync member is rewritten up to [`META_RETRIES`] times.
    pub(super) fn pump_bitmap(&mut self) {
        if self.bm_round_pages != 0
            && self.bm_outstanding == 0
            && self.bm_issue.iter().all(|m| *m == 0)
        {
            self.bm_round_pages = 0;
            let lost = core::mem::take(&mut self.bm_lost);
            if lost == 0 {
                self.bm_done = self.bm_started;
                self.bm_durable = self.bm_started;
                self.bm_retries = 0;
            } else if self.bm_retries < META_RETRIES {
                // Rewrite the pages that did not land; their writers wait for that round.
                self.bm_retries += 1;
                self.bm_dirty |= lost;
            } else {
                self.bm_done = self.bm_started;
                self.bm_unrecorded |= lost;
                self.bm_retries = 0;
            }
        }
        if self.bm_round_pages == 0 && self.bm_dirty != 0 && self.sb.done >= self.bm_hold_sb {
            let mut mask = 0u32;
            for (i, m) in self.members.iter().enumerate() {
                if m.present() && matches!(m.role, Role::Active(_)) {
                    mask |= bit(i);
                }
            }
            self.bm_started += 1;
            self.bm_round_pages = self.bm_dirty;
            self.bm_dirty = 0;
            let mut n = 0;
            for p in 0..MAX_BITMAP_PAGES {
                if let Some(slot) = self.bm_issue.get_mut(p) {
                    *slot = if self.bm_round_pages & (1u64 << p) != 0 {
                        mask
                    } else {
                        0
                    };
                    n += slot.count_ones();
                }
            }
            self.bm_outstanding = n;
            if n == 0 {
                self.bm_round_pages = 0;
                self.bm_done = self.bm_started;
            }
        }
    }

    /// The clearing pass of md_bitmap_daemon_work, after the flush: clears the bits of every
    /// chunk not written since the hot map was reset, and asks for the superblock round that
    /// records `events_cleared` before the changed pages are written.
    pub(super) fn clear_cold_bits(&mut self) {
        let page_bytes = self.cfg.bitmap_page_bytes as usize;
        let mut changed = 0u64;
        if let (Some(bits), Some(hot)) = (self.bitmap.as_deref_mut(), self.hot.as_deref()) {
            for (n, (b, h)) in bits.iter_mut().zip(hot.iter()).enumerate() {
                let nb = *b & *h;
                if nb != *b {
                    *b = nb;
                    let p = n / page_bytes;
                    if p < 64 {
                        changed |= 1u64 << p;
                    }
                }
            }
        }
        if changed != 0 {
            // A member that left before now may come back by re-add: the superblocks must
            // say that bits were cleared (events_cleared) before any cleared bit is on disk.
            // That round does not bump `events` (md writes events_cleared in the bitmap
            // superblock, no md superblock update): every member present now receives it.
            self.bm_dirty |= changed;
            self.bm_cleared_pending = true;
            self.sb.wanted += 1;
            self.bm_hold_sb = self.sb.wanted;
        }
    }

    /// Bits may be cleared: not degraded (a re-add needs them), no sync running or pending.
    pub(super) fn bitmap_clear_allowed(&self) -> bool {
        !self.degraded()
            && self.sync.action.is_none()
            && self.resync_cp == MAX_SECTOR
            && self.bitmap.is_some()
    }

    /// Some bit is set.
    pub(super) fn bitmap_any_set(&self) -> bool {
        self.bitmap
            .as_deref()
            .is_some_and(|b| b.iter().any(|x| *x != 0))
    }

    /// The daemon timer fired (md_bitmap_daemon_work): when bits may be cleared, resets the hot
    /// map and flushes every member; the clearing follows the flush ([`Self::clear_cold_bits`]).
    pub(super) fn bitmap_daemon(&mut self) {
        if !self.bitmap_clear_allowed() {
            if self.bitmap.is_some() {
                self.daemon_at = Some(self.now.after(self.cfg.bitmap_daemon_ns));
            }
            return;
        }
        if self.flush_purpose != 0 {
            // A flush issued before the hot bits are reset does not cover them: try again later.
            self.daemon_at = Some(self.now.after(self.cfg.bitmap_daemon_ns));
            return;
        }
        if self.bitmap_any_set() {
            self.reset_hot();
            self.start_internal_flush(FLUSH_BITMAP);
            self.daemon_at = Some(self.now.after(self.cfg.bitmap_daemon_ns));
        }
    }

    /// Hot := chunks of writes (and read fixes, sync windows) still in flight: the bits a
    /// clearing pass must keep.
    pub(super) fn reset_hot(&mut self) {
        if let Some(hot) = self.hot.as_deref_mut() {
            hot.iter_mut().for_each(|b| *b = 0);
        }
        let chunk = self.cfg.bitmap_chunk_sectors;
        // Planted bug: the daemon forgets the writes still in flight.
        let reqs = if cfg!(feature = "planted-bug-clear-bit-in-flight") {
            0
        } else {
            R
        };
        for ri in 0..reqs {
            let Some(r) = self.reqs.get(ri) else { continue };
            if r.admitted
                && (r.is_write()
                    || matches!(r.phase, Phase::FixWait | Phase::FixRun | Phase::FixWrite))
            {
                let (s, n) = (r.req.sector, r.req.sectors);
                self.mark_hot(s, n, chunk);
            }
        }
        for wi in 0..S {
            let Some(w) = self.windows.get(wi) else {
                continue;
            };
            if w.phase != WPhase::Free {
                let (s, n) = (w.sector, w.sectors);
                self.mark_hot(s, n, chunk);
            }
        }
    }

    /// Marks the chunks of `[sector, +sectors)` hot.
    fn mark_hot(&mut self, sector: Sector, sectors: u32, chunk: u64) {
        let Some(hot) = self.hot.as_deref_mut() else {
            return;
        };
        if chunk == 0 || sectors == 0 {
            return;
        }
        let first = sector / chunk;
        let last = (sector + u64::from(sectors) - 1) / chunk;
        for c in first..=last {
            if let Some(h) = hot.get_mut((c / 8) as usize) {
                *h |= 1 << (c % 8);
            }
        }
    }

    /// A bitmap-guided sync visits `[sector, +sectors)` (md_bitmap_start_sync): some chunk of it
    /// is dirty, or there is no bitmap.
    pub(super) fn chunk_dirty(&self, sector: Sector, sectors: u32) -> bool {
        let chunk = self.cfg.bitmap_chunk_sectors;
        if chunk == 0 {
            return true;
        }
        let first = sector / chunk;
        let last = (sector + u64::from(sectors.max(1)) - 1) / chunk;
        (first..=last).any(|c| self.bitmap_bit(c))
    }

    /// Member `mi` answered its write of bitmap page `index` in round `generation`: `None` if no
    /// such write is in flight. A failure fails the member, or, on the last in-sync member, loses
    /// the page for this round.
    pub(super) fn bitmap_page_written(
        &mut self,
        generation: u16,
        index: usize,
        mi: usize,
        ok: bool,
    ) -> Option<()> {
        let f = self.bm_inflight.get_mut(index)?;
        if generation != self.bm_started as u16 || mi >= M || *f & bit(mi) == 0 {
            return None;
        }
        *f &= !bit(mi);
        self.bm_outstanding = self.bm_outstanding.saturating_sub(1);
        if !ok && self.metadata_write_failed_on_last(mi) {
            self.bm_lost |= 1u64 << index.min(63);
        }
        Some(())
    }

    /// Next bitmap page write of the round (md_bitmap_unplug's write_page).
    pub(super) fn poll_bitmap_page(&mut self) -> Option<IoCmd<M>> {
        if self.bm_round_pages != 0 {
            for p in 0..self.bm_pages.min(MAX_BITMAP_PAGES) {
                let Some(mask) = self.bm_issue.get_mut(p) else {
                    break;
                };
                if *mask != 0 {
                    let i = mask.trailing_zeros() as usize;
                    *mask &= !bit(i);
                    if let Some(f) = self.bm_inflight.get_mut(p) {
                        *f |= bit(i);
                    }
                    if let Some(m) = self.members.get_mut(i) {
                        m.in_flight += 1;
                    }
                    return Some(IoCmd::BitmapPage {
                        tag: tag(CLASS_BM, self.bm_started as u16, p as u32, i as u8),
                        member: MemberId(i as u8),
                        page: p as u32,
                    });
                }
            }
        }
        None
    }
}
