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

/// The bitmap's state (md's struct bitmap and its counts): the caller's storage, the pages to
/// write, the page round in flight and what is on disk.
#[derive(Debug)]
pub(super) struct Bitmap<'b> {
    /// The bits (caller storage, md's on-disk LSB-first layout); `None` without a bitmap.
    pub(super) bits: Option<&'b mut [u8]>,
    /// Chunks written since the daemon's last reset (caller scratch of the same size).
    pub(super) hot: Option<&'b mut [u8]>,
    /// Chunks the bits cover.
    pub(super) chunks: Sector,
    /// Pages of `bitmap_page_bytes`.
    pub(super) pages: usize,
    /// Pages to write in the next round (one bit per page).
    pub(super) dirty: u64,
    /// Pages of the round in flight.
    pub(super) round_pages: u64,
    /// Per page: members whose write of it is not yet polled.
    pub(super) issue: [u32; MAX_BITMAP_PAGES],
    /// Per page: members whose write of it is in flight.
    pub(super) inflight: [u32; MAX_BITMAP_PAGES],
    /// Page writes of the round not yet completed (or withdrawn).
    pub(super) outstanding: u32,
    /// Latest round started (its generation).
    pub(super) started: u64,
    /// Latest bitmap round that is over (landed or not).
    pub(super) done: u64,
    /// Latest bitmap round every page of which landed on every member still in sync.
    pub(super) durable: u64,
    /// Pages of the round in progress that failed on the last in-sync member.
    pub(super) lost: u64,
    /// Pages given up on after [`META_RETRIES`] rewrites: not on disk although set in memory;
    /// the next write that needs one of them asks for it again.
    pub(super) unrecorded: u64,
    /// Rounds rewritten in a row because pages did not land (bounded by [`META_RETRIES`]).
    pub(super) retries: u8,
    /// Bitmap pages wait for this superblock generation (events_cleared recorded).
    pub(super) hold_sb: u64,
    /// The next superblock round records the bits just cleared: events_cleared := its events.
    pub(super) cleared_pending: bool,
}

impl Bitmap<'_> {
    /// The state of a new array.
    pub(super) const NEW: Self = Bitmap {
        bits: None,
        hot: None,
        chunks: 0,
        pages: 0,
        dirty: 0,
        round_pages: 0,
        issue: [0; MAX_BITMAP_PAGES],
        inflight: [0; MAX_BITMAP_PAGES],
        outstanding: 0,
        started: 0,
        done: 0,
        durable: 0,
        lost: 0,
        unrecorded: 0,
        retries: 0,
        hold_sb: 0,
        cleared_pending: false,
    };
}

/// Bit `c` of an md bitmap (LSB first).
pub(super) fn get_bit(bits: &[u8], c: Sector) -> bool {
    usize::try_from(c / 8)
        .ok()
        .and_then(|i| bits.get(i))
        .is_some_and(|b| b & (1 << (c % 8)) != 0)
}

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
                self.bitmap.chunks = self
                    .cfg
                    .data_sectors
                    .div_ceil(self.cfg.bitmap_chunk_sectors);
                self.bitmap.pages = pages;
                self.bitmap.bits = Some(bits);
                self.bitmap.hot = Some(hot);
                Ok(())
            }
        }
    }

    /// md's `--grow --bitmap=internal` on a running array: takes `bits` / `hot` (each
    /// [`Array::bitmap_bytes`] long for a chunk of `chunk_sectors`) as the array's bitmap with
    /// every bit set, and asks for the superblock round that announces it (feature
    /// BITMAP_OFFSET) and for every page. `events_cleared` becomes that round's events, so a
    /// member that left before it is rebuilt in full. The frontend writes the bitmap's header
    /// and an all-set area to every member before calling this, so that whatever lands first,
    /// no chunk is ever taken as clean too early. Needs the array quiesced and read-write.
    pub fn add_bitmap(
        &mut self,
        bits: &'b mut [u8],
        hot: &'b mut [u8],
        chunk_sectors: Sector,
    ) -> Result<(), ReconfigError> {
        if !self.is_quiesced() {
            return Err(ReconfigError::NotQuiesced);
        }
        if self.ro.asked() {
            return Err(ReconfigError::ReadOnly);
        }
        if self.bitmap.bits.is_some() {
            return Err(ReconfigError::Bitmap { present: true });
        }
        if chunk_sectors == 0 || !chunk_sectors.is_power_of_two() {
            return Err(ReconfigError::BitmapConfig(
                ConfigError::BitmapChunkSectors(chunk_sectors),
            ));
        }
        let before = self.cfg;
        self.cfg.bitmap_chunk_sectors = chunk_sectors;
        if let Err(e) = self.attach_bitmap(Some(bits), Some(hot)) {
            self.cfg = before;
            return Err(ReconfigError::BitmapConfig(e));
        }
        if let Some(b) = self.bitmap.bits.as_deref_mut() {
            b.fill(0xff);
        }
        self.bitmap.cleared_pending = true;
        self.mark_all_bitmap_pages();
        self.arm_bitmap_daemon();
        self.want_sb();
        self.pump();
        Ok(())
    }

    /// md's `bitmap/time_base` (and mdadm's `--delay`): the bitmap daemon runs every
    /// `period_ns` from now on, with or without a bitmap, at any time. A pass armed for later
    /// than one new period from now comes then instead (md wakes its thread), so a shorter
    /// period takes effect at once. A period of 0 is refused, as md refuses it.
    pub fn set_bitmap_daemon(&mut self, period_ns: u64) -> Result<(), ConfigError> {
        if period_ns == 0 {
            return Err(ConfigError::BitmapDaemon);
        }
        self.cfg.bitmap_daemon_ns = period_ns;
        let sooner = self.now.after(period_ns);
        if let Some(t) = self.timers.bitmap_daemon.as_mut() {
            *t = (*t).min(sooner);
        }
        Ok(())
    }

    /// md's `--grow --bitmap=none`: the array runs without its bitmap from now on (a crash
    /// then means a full resync); the next superblock round clears feature BITMAP_OFFSET. A
    /// sync running bitmap-guided stops and starts again in full from its checkpoint. Needs the
    /// array quiesced, no bitmap write in flight, read-write, and no member lagging after a
    /// crash with write-behind ([`ReconfigError::Lagging`]: the resync must end first).
    pub fn remove_bitmap(&mut self) -> Result<(), ReconfigError> {
        if !self.is_quiesced()
            || self.bitmap.outstanding != 0
            || self.bitmap.round_pages != 0
            || self.flush.purpose != 0
        {
            return Err(ReconfigError::NotQuiesced);
        }
        if self.ro.asked() {
            return Err(ReconfigError::ReadOnly);
        }
        if self.bitmap.bits.is_none() {
            return Err(ReconfigError::Bitmap { present: false });
        }
        // A member lagging since a crash is known as such after another crash only by the
        // bitmap's header (its write-behind limit): without it, that member would come up in
        // sync, and serve a read the others cannot (or feed a resync) with what it lacks
        // (simulator seed 7006344).
        let lagging = if planted::on(Bug::DropBitmapWhileLagging) {
            0
        } else {
            self.sb.lagging
        };
        if lagging != 0 {
            return Err(ReconfigError::Lagging(MemberId(
                lagging.trailing_zeros() as u8
            )));
        }
        self.interrupt_sync();
        for m in self.members.iter_mut() {
            if let MemberState::Recovering { bitmap, .. } = &mut m.state {
                *bitmap = false;
            }
        }
        self.bitmap = Bitmap::NEW;
        // Its round counter starts again: no superblock round waits for a page round now.
        self.sb.after_bitmap = 0;
        self.cfg.bitmap_chunk_sectors = 0;
        // `events_cleared` lives in the bitmap's header: without one it is 0.
        self.events_cleared = 0;
        self.timers.bitmap_daemon = None;
        self.want_sb();
        // Writes from now on set no bit: none may reach a member before every in-sync member's
        // superblock says there is no bitmap, or a crash could assemble with the old bitmap and
        // skip what they changed (simulator seed 3816). Every write waits for this round as it
        // waits for a failure record.
        if !planted::on(Bug::WriteBeforeBitmapDropped) {
            self.fail_gen = self.sb.wanted;
        }
        self.pump();
        Ok(())
    }

    /// Every page is to be written in the next round (after assembly, a re-add, a new spare).
    pub(super) fn mark_all_bitmap_pages(&mut self) {
        if self.bitmap.bits.is_some() {
            self.bitmap.dirty = if self.bitmap.pages >= 64 {
                u64::MAX
            } else {
                (1u64 << self.bitmap.pages) - 1
            };
        }
    }

    /// Sets the bitmap bits for a write (md_bitmap_startwrite); returns the bitmap round it must
    /// wait for.
    pub(super) fn bitmap_start_write(&mut self, sector: Sector, sectors: u32) -> u64 {
        let chunk = self.cfg.bitmap_chunk_sectors;
        let page_bytes = Sector::from(self.cfg.bitmap_page_bytes);
        let (Some(bits), Some(hot)) = (
            self.bitmap.bits.as_deref_mut(),
            self.bitmap.hot.as_deref_mut(),
        ) else {
            return 0;
        };
        if chunk == 0 {
            return 0;
        }
        // Requests and windows hold at least one sector (submit refuses empty ones).
        let first = sector / chunk;
        let last = sector.saturating_add(Sector::from(sectors.max(1)) - 1) / chunk;
        // The pages of the chunks written, and those of them with a bit newly set.
        let mut touched = 0u64;
        let mut set = 0u64;
        for c in first..=last.min(self.bitmap.chunks.saturating_sub(1)) {
            let byte = (c / 8) as usize;
            let mask = 1u8 << (c % 8);
            if let Some(h) = hot.get_mut(byte) {
                *h |= mask;
            }
            // The page of chunk c, c / (8 × page bytes), in the sector width (no 64-bit divide
            // in a `sector32` build).
            let page = (c / 8) / page_bytes;
            let pbit = if page < 64 { 1u64 << page } else { 0 };
            touched |= pbit;
            if let Some(b) = bits.get_mut(byte) {
                if *b & mask == 0 {
                    *b |= mask;
                    set |= pbit;
                }
            }
        }
        // A page given up on: this write asks for it again.
        let again = self.bitmap.unrecorded & touched;
        self.bitmap.unrecorded &= !again;
        self.bitmap.dirty |= set | again;
        // The round that writes a dirty page is the next one; a page only in the round in
        // flight waits for that one.
        let need = if self.bitmap.dirty & touched != 0 {
            self.bitmap.started + 1
        } else if self.bitmap.round_pages & touched != 0 {
            self.bitmap.started
        } else {
            0
        };
        if self.timers.bitmap_daemon.is_none() {
            self.arm_bitmap_daemon();
        }
        need
    }

    /// As [`Self::sb_landed`], for bitmap round `need`.
    pub(super) fn bm_landed(&self, need: u64) -> Option<bool> {
        if self.bitmap.durable >= need {
            Some(true)
        } else if self.bitmap.done >= need {
            Some(false)
        } else {
            None
        }
    }

    /// Starts a page round when none is in flight (md_bitmap_unplug): the dirty pages go to
    /// every active member once the superblock recording `events_cleared` landed; a round that
    /// did not land on the last in-sync member is rewritten up to [`META_RETRIES`] times.
    pub(super) fn pump_bitmap(&mut self) {
        if self.bitmap.round_pages != 0
            && self.bitmap.outstanding == 0
            && self.bitmap.issue.iter().all(|m| *m == 0)
        {
            self.bitmap.round_pages = 0;
            let lost = core::mem::take(&mut self.bitmap.lost);
            if lost == 0 {
                self.bitmap.done = self.bitmap.started;
                self.bitmap.durable = self.bitmap.started;
                self.bitmap.retries = 0;
            } else if self.bitmap.retries < META_RETRIES {
                // Rewrite the pages that did not land; their writers wait for that round.
                self.bitmap.retries += 1;
                self.bitmap.dirty |= lost;
            } else {
                self.bitmap.done = self.bitmap.started;
                self.bitmap.unrecorded |= lost;
                self.bitmap.retries = 0;
            }
        }
        if self.bitmap.round_pages == 0
            && self.bitmap.dirty != 0
            && self.sb.done >= self.bitmap.hold_sb
        {
            let mut mask = 0u32;
            for (i, m) in self.members.iter().enumerate() {
                if m.present() && matches!(m.role, Role::Active(_)) {
                    mask |= bit(i);
                }
            }
            self.bitmap.started += 1;
            self.bitmap.round_pages = self.bitmap.dirty;
            self.bitmap.dirty = 0;
            let mut n = 0;
            // Page p's bit is bit p of the round's pages: shifted down one page at a time.
            let mut pages = self.bitmap.round_pages;
            for slot in self.bitmap.issue.iter_mut() {
                *slot = if pages & 1 != 0 { mask } else { 0 };
                pages >>= 1;
                n += count(*slot);
            }
            self.bitmap.outstanding = n;
            if n == 0 {
                self.bitmap.round_pages = 0;
                self.bitmap.done = self.bitmap.started;
            }
        }
    }

    /// Next bitmap page write of the round (md_bitmap_unplug's write_page).
    pub(super) fn poll_bitmap_page(&mut self) -> Option<IoCmd<M>> {
        if self.bitmap.round_pages != 0 {
            for p in 0..self.bitmap.pages.min(MAX_BITMAP_PAGES) {
                let Some(mask) = self.bitmap.issue.get_mut(p) else {
                    break;
                };
                if *mask != 0 {
                    let i = mask.trailing_zeros() as usize;
                    *mask &= !bit(i);
                    if let Some(f) = self.bitmap.inflight.get_mut(p) {
                        *f |= bit(i);
                    }
                    if let Some(m) = self.members.get_mut(i) {
                        m.in_flight += 1;
                    }
                    return Some(IoCmd::BitmapPage {
                        tag: tag(CLASS_BM, self.bitmap.started as u16, p as u32, i as u8),
                        member: MemberId(i as u8),
                        page: p as u32,
                    });
                }
            }
        }
        None
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
        let f = self.bitmap.inflight.get_mut(index)?;
        if generation != self.bitmap.started as u16 || mi >= M || *f & bit(mi) == 0 {
            return None;
        }
        *f &= !bit(mi);
        self.bitmap.outstanding = self.bitmap.outstanding.saturating_sub(1);
        if !ok && self.metadata_write_failed_on_last(mi) {
            self.bitmap.lost |= 1u64 << index.min(63);
        }
        Some(())
    }

    /// The daemon timer fired (md_bitmap_daemon_work): when bits may be cleared, resets the hot
    /// map and flushes every member; the clearing follows the flush ([`Self::clear_cold_bits`]).
    pub(super) fn bitmap_daemon(&mut self) {
        if !self.bitmap_clear_allowed() {
            if self.bitmap.bits.is_some() {
                self.arm_bitmap_daemon();
            }
            return;
        }
        if self.flush.purpose != 0 {
            // A flush issued before the hot bits are reset does not cover them: try again later.
            self.arm_bitmap_daemon();
            return;
        }
        if self.bitmap_any_set() {
            self.reset_hot();
            self.start_internal_flush(FLUSH_BITMAP);
            self.arm_bitmap_daemon();
        }
    }

    /// Hot := chunks of writes (and read fixes, sync windows) still in flight: the bits a
    /// clearing pass must keep.
    pub(super) fn reset_hot(&mut self) {
        if let Some(hot) = self.bitmap.hot.as_deref_mut() {
            hot.iter_mut().for_each(|b| *b = 0);
        }
        let chunk = self.cfg.bitmap_chunk_sectors;
        // Planted bug: the daemon forgets the writes still in flight.
        let reqs = if planted::on(Bug::ClearBitInFlight) {
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
    fn mark_hot(&mut self, sector: Sector, sectors: u32, chunk: Sector) {
        let Some(hot) = self.bitmap.hot.as_deref_mut() else {
            return;
        };
        if chunk == 0 {
            return;
        }
        let first = sector / chunk;
        let last = sector.saturating_add(Sector::from(sectors.max(1)) - 1) / chunk;
        for c in first..=last {
            if let Some(h) = hot.get_mut((c / 8) as usize) {
                *h |= 1 << (c % 8);
            }
        }
    }

    /// The clearing pass of md_bitmap_daemon_work, after the flush: clears the bits of every
    /// chunk not written since the hot map was reset, and asks for the superblock round that
    /// records `events_cleared` before the changed pages are written.
    pub(super) fn clear_cold_bits(&mut self) {
        let page_bytes = self.cfg.bitmap_page_bytes as usize;
        let used = self.bitmap_used_bytes();
        let mut changed = 0u64;
        if let (Some(bits), Some(hot)) =
            (self.bitmap.bits.as_deref_mut(), self.bitmap.hot.as_deref())
        {
            // Only the bytes that hold chunks: a page beyond the bitmap is never written, and
            // lent storage may be longer than the bitmap (a shrink, a doubled chunk).
            for (n, (b, h)) in bits.iter_mut().zip(hot.iter()).enumerate().take(used) {
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
            self.bitmap.dirty |= changed;
            self.bitmap.cleared_pending = true;
            self.sb.wanted += 1;
            self.bitmap.hold_sb = self.sb.wanted;
        }
    }

    /// Bits may be cleared: not degraded (a re-add needs them), no sync running or pending.
    pub(super) fn bitmap_clear_allowed(&self) -> bool {
        // Read-only: bits cleared now could not be recorded (`events_cleared` moves with a
        // superblock round, and none runs): a member re-added meanwhile would take a
        // bitmap-guided recovery that skips what it missed. md runs no bitmap daemon while `ro`.
        !self.ro.on()
            && !self.degraded()
            && self.sync.action.is_none()
            && self.resync_cp == MAX_SECTOR
            && self.bitmap.bits.is_some()
    }

    /// Some bit is set.
    pub(super) fn bitmap_any_set(&self) -> bool {
        let used = self.bitmap_used_bytes();
        self.bitmap
            .bits
            .as_deref()
            .is_some_and(|b| b.iter().take(used).any(|x| *x != 0))
    }

    /// Bytes of the storage that hold the bitmap's chunks (the storage may be longer).
    pub(super) fn bitmap_used_bytes(&self) -> usize {
        usize::try_from(self.bitmap.chunks.div_ceil(8)).unwrap_or(usize::MAX)
    }

    /// A bitmap-guided sync visits `[sector, +sectors)` (md_bitmap_start_sync): some chunk of it
    /// is dirty, or there is no bitmap.
    pub(super) fn chunk_dirty(&self, sector: Sector, sectors: u32) -> bool {
        let chunk = self.cfg.bitmap_chunk_sectors;
        if chunk == 0 {
            return true;
        }
        let first = sector / chunk;
        let last = (sector + Sector::from(sectors.max(1)) - 1) / chunk;
        (first..=last).any(|c| self.bitmap_bit(c))
    }
}
