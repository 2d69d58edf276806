//! Clean and dirty: md's md_write_start / md_write_end, safe mode (md_safemode_timeout and the
//! `in_sync` part of md_check_recovery) and the clean stop (__md_stop_writes), in
//! drivers/md/md.c.
//!
//! The first write after the array was clean marks it dirty (a superblock round with
//! `resync_offset = 0`) and waits for that round. `safe_mode_delay_ns` after the last write, once
//! the admitted writes drained, every member is flushed and the array marked clean again
//! (`resync_offset` MAX, or the resync checkpoint). [`Array::request_clean`] does the same at
//! once and also clears the bitmap bits of every idle chunk.

use super::*;

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// An admitted write is about to dirty the array (md_write_start): the first one after a
    /// clean period asks for the dirty superblock round, and a record given up on is asked
    /// for again.
    pub(super) fn md_write_start(&mut self) {
        // New writes: whatever stop was asked for is over.
        self.clean_requested = false;
        if !self.dirty {
            self.dirty = true;
            self.want_sb_clean_dirty();
            self.dirty_gen = self.sb.wanted;
        }
        self.flush.write_seen = true;
        if self.sb.durable < self.fail_gen.max(self.dirty_gen)
            && self.sb.round.is_none()
            && self.sb.wanted <= self.sb.done
        {
            // A record given up on: this write asks for it again.
            self.sb.wanted += 1;
        }
    }

    /// A write ended (md_write_end): safe mode is re-armed for `safe_mode_delay_ns` from now.
    pub(super) fn md_write_end(&mut self) {
        self.timers.safe_mode = Some(self.now.after(self.cfg.safe_mode_delay_ns));
    }

    /// When safe mode is due (or a clean stop was asked for) and the admitted writes drained,
    /// starts the flush that comes before the clean mark and / or the clearing of bitmap bits.
    /// Also asks for the checkpoint of a sync frozen part-way at a clean stop.
    pub(super) fn maybe_start_clean(&mut self) {
        if self.sb.wanted == self.sb.done && self.sb.round.is_none() && self.stop_checkpoint_due() {
            self.want_sb();
        }
        let Some(at) = self.timers.safe_mode else {
            return;
        };
        if at > self.now || self.flush.purpose != 0 {
            return;
        }
        let clear_bits =
            self.clean_requested && self.bitmap_clear_allowed() && self.bitmap_any_set();
        if !self.dirty && !clear_bits {
            self.timers.safe_mode = None;
            return;
        }
        if self.writes_active() {
            return;
        }
        self.timers.safe_mode = None;
        // One flush covers both: the clean mark and the bits of every chunk not written since.
        let mut purpose = 0;
        if self.dirty {
            purpose |= FLUSH_CLEAN;
        }
        if clear_bits {
            self.reset_hot();
            purpose |= FLUSH_BITMAP;
        }
        self.start_internal_flush(purpose);
    }

    /// The flush before the clean mark is over: marks the array clean unless a write was seen
    /// since the flush started or is still active.
    pub(super) fn mark_clean(&mut self) {
        if !self.flush.write_seen && !self.writes_active() && self.dirty {
            self.dirty = false;
            self.want_sb_clean_dirty();
            self.emit(Event::MarkedClean);
        }
    }

    /// Admitted writes not finished. A write still waiting for a freeze or a barrier has not
    /// touched the dirty flag or the bitmap: it does not hold off marking clean (a clean stop
    /// freezes first and must not wait for writes the freeze keeps out).
    fn writes_active(&self) -> bool {
        self.reqs
            .iter()
            .any(|r| r.admitted && r.phase != Phase::Free && r.phase != Phase::Done && r.is_write())
    }

    /// A clean stop with a sync frozen part-way: its progress (finished, FUA-written windows
    /// only) is not in the superblocks yet. md writes that checkpoint when the sync thread is
    /// reaped at stop.
    pub(super) fn stop_checkpoint_due(&self) -> bool {
        if !self.clean_requested || self.barrier.frozen == 0 || self.dirty {
            return false;
        }
        let now = self.snapshot();
        now.resync_offset != self.sb.snap.resync_offset || now.recovery != self.sb.snap.recovery
    }
}
