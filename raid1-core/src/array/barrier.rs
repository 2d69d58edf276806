//! Barriers and freeze: md's wait_barrier / allow_barrier / raise_barrier / lower_barrier and
//! freeze_array / unfreeze_array (drivers/md/raid1.c).
//!
//! The array is cut into barrier units of `1 << barrier_unit_shift` sectors hashed onto
//! [`BARRIER_BUCKETS`] buckets (md's `sector_to_idx`), each counting the normal requests admitted
//! there (`nr_pending`) and the sync windows working there (`barrier`). A write is admitted only
//! while its buckets have no barrier raised; a sync window issues I/O only once its bucket has no
//! request pending. A freeze (md's `array_frozen`) stops new requests and windows; the array is
//! quiesced once nothing holds member I/O any more.

use super::*;

/// The barrier state (md's r1conf `barrier[]`, `nr_pending[]` and `array_frozen`).
#[derive(Debug)]
pub(super) struct Barrier {
    pub(super) buckets: [Bucket; BARRIER_BUCKETS],
    /// Freeze depth: nested and concurrent freezes are counted.
    pub(super) frozen: u16,
    /// [`Event::Quiesced`] was emitted for the current freeze.
    pub(super) quiesced_reported: bool,
}

impl Barrier {
    /// The state of a new array.
    pub(super) const NEW: Barrier = Barrier {
        buckets: [Bucket {
            pending: 0,
            barrier: 0,
        }; BARRIER_BUCKETS],
        frozen: 0,
        quiesced_reported: false,
    };
}

/// One bucket's counters.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Bucket {
    /// Normal requests admitted in the bucket (md's `nr_pending`).
    pub(super) pending: u16,
    /// Sync windows working in the bucket (md's `barrier`).
    pub(super) barrier: u16,
}

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// The buckets of barrier units `lo` and `hi` (a request spans at most two units).
    fn buckets_of(&self, lo: Sector, hi: Sector) -> (usize, usize) {
        (
            (lo % BARRIER_BUCKETS as Sector) as usize,
            (hi % BARRIER_BUCKETS as Sector) as usize,
        )
    }

    /// No barrier is raised in the buckets of units `lo..=hi`: a write may be admitted (the
    /// condition md's wait_barrier waits for).
    pub(super) fn barrier_free(&self, lo: Sector, hi: Sector) -> bool {
        let (a, b) = self.buckets_of(lo, hi);
        self.barrier.buckets.get(a).is_some_and(|x| x.barrier == 0)
            && self.barrier.buckets.get(b).is_some_and(|x| x.barrier == 0)
    }

    /// Counts a request in (`up`, md's wait_barrier) or out (allow_barrier) of the buckets of
    /// units `lo..=hi`.
    pub(super) fn set_pending(&mut self, lo: Sector, hi: Sector, up: bool) {
        let (a, b) = self.buckets_of(lo, hi);
        for idx in [a, b] {
            if let Some(x) = self.barrier.buckets.get_mut(idx) {
                x.pending = if up {
                    x.pending.saturating_add(1)
                } else {
                    x.pending.saturating_sub(1)
                };
            }
            if a == b {
                break;
            }
        }
    }

    /// The bucket of the barrier unit holding `sector` (md's `sector_to_idx`).
    #[cfg_attr(target_os = "none", inline(never))]
    pub(super) fn sector_bucket(&self, sector: Sector) -> usize {
        ((sector >> self.cfg.barrier_unit_shift) % BARRIER_BUCKETS as Sector) as usize
    }

    /// A write waits for a barrier in bucket `b` (md's `nr_waiting[idx]`): a new sync window
    /// there waits until it is admitted.
    pub(super) fn writes_waiting(&self, b: usize) -> bool {
        let mut at = 0;
        while let Some(ri) = self.live.next_from(at) {
            at = ri + 1;
            let Some(r) = self.reqs.get(ri) else {
                break;
            };
            if r.phase == Phase::Wait && r.is_write() {
                let (lo, hi) = self.buckets_of(r.unit_lo, r.unit_hi);
                if lo == b || hi == b {
                    return true;
                }
            }
        }
        false
    }

    /// A sync window starts at `sector`: its bucket's barrier goes up (md's raise_barrier; the
    /// window waits in its `Raise` phase for the bucket's pending requests to drain).
    pub(super) fn raise_barrier(&mut self, sector: Sector) {
        let b = self.sector_bucket(sector);
        if let Some(x) = self.barrier.buckets.get_mut(b) {
            x.barrier += 1;
        }
    }

    /// The sync window at `sector` is closed (md's lower_barrier).
    pub(super) fn lower_barrier(&mut self, sector: Sector) {
        let b = self.sector_bucket(sector);
        if let Some(x) = self.barrier.buckets.get_mut(b) {
            x.barrier = x.barrier.saturating_sub(1);
        }
    }

    /// No request or sync window holds I/O, and no member has I/O in flight. Metadata writes
    /// queued but not yet polled do not count: a removal withdraws them from the removed member.
    pub(super) fn drained(&self) -> bool {
        self.reqs.iter().all(|r| !r.admitted)
            && self
                .windows
                .iter()
                .all(|w| matches!(w.phase, WPhase::Free | WPhase::Raise))
            && self.members.iter().all(|m| m.in_flight == 0)
    }

    /// Emits [`Event::Quiesced`] once per freeze, when the array has drained.
    pub(super) fn note_quiesced(&mut self) {
        if self.barrier.frozen > 0 && !self.barrier.quiesced_reported && self.drained() {
            self.barrier.quiesced_reported = true;
            self.emit(Event::Quiesced);
        }
    }
}
