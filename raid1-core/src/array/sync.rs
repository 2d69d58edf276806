//! Sync: resync, recovery, check and repair; md's md_do_sync (drivers/md/md.c) and
//! raid1_sync_request / end_sync_read / process_checks / sync_request_write (raid1.c).
//!
//! One job at a time, chosen as md_check_recovery / md_choose_sync_action do: recovery while a
//! member is recovering (spares wanted as replacements are attached first), else resync while `resync_offset` is not MAX, else a requested check or
//! repair. The job walks the array in windows of `sync_window_sectors` that never cross a
//! barrier unit, up to `S` at once. A window raises its bucket's barrier, reads (one source, or
//! every in-sync member for check / repair), compares, writes the targets (FUA) and closes.
//! Progress is checkpointed in a superblock every `sync_checkpoint_sectors`.

use super::*;

/// How long `sectors` take at `rate` sectors per second, in nanoseconds: sectors × 10^9 / rate,
/// with 32-bit divisions only (a Cortex-M has no 64-bit divide: the library routine costs about
/// 900 bytes of flash). Exact while sectors × (10^9 mod rate) fits in 32 bits, which a window of
/// up to 4 sectors at any rate, or of any size at a rate that divides 10^9, does; otherwise
/// short by less than `sectors` nanoseconds. A rate of 2^32 sectors per second or more counts
/// as no limit. `rate` is never 0 (0 is no limit: no window waits).
fn window_ns(sectors: u32, rate: u64) -> u64 {
    let Ok(rate) = u32::try_from(rate) else {
        return 0;
    };
    let Some(rate) = core::num::NonZeroU32::new(rate) else {
        return 0;
    };
    let whole = 1_000_000_000 / rate;
    let rest = 1_000_000_000 % rate;
    let part = sectors.checked_mul(rest).map_or(0, |x| x / rate);
    u64::from(sectors) * u64::from(whole) + u64::from(part)
}

/// Life of a sync window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WPhase {
    /// Slot unused.
    Free,
    /// Barrier raised: waiting for the bucket's requests to drain and for no freeze.
    Raise,
    /// Reading the piece: one source, or every good in-sync member (check / repair).
    Read,
    /// Check / repair: compares pending. Resync / recovery: the source is chosen.
    Compare,
    /// Writing the targets (FUA).
    Write,
}

/// One sync request in flight (the r1bio of md's raid1_sync_request): `[sector, end)` of one
/// barrier unit.
#[derive(Clone, Copy, Debug)]
pub(super) struct SyncWindow<const M: usize> {
    pub(super) phase: WPhase,
    /// Bumped at each reuse of the slot: a stale tag is refused.
    pub(super) generation: u16,
    pub(super) sector: Sector,
    pub(super) sectors: u32,
    /// Member I/O of the piece.
    pub(super) ops: [Op; M],
    /// Member I/O queued or in flight.
    pub(super) outstanding: u16,
    /// The source (resync / recovery) or the reference (check / repair).
    pub(super) src: u8,
    /// Members whose read of this piece failed: not a source again.
    pub(super) tried: u32,
    /// Members to compare against the reference (check/repair), not yet issued.
    pub(super) cmp_issue: u32,
    /// Compares issued and not yet answered.
    pub(super) cmp_pending: u32,
    /// Members that must be written from the reference buffer.
    pub(super) write_to: u32,
    /// End of the window. `sector..sector + sectors` is the piece in progress: a window is
    /// worked in pieces on which every in-sync member is either wholly good or wholly bad.
    pub(super) end: Sector,
    /// The bitmap round that carries the piece's bits, set before its writes to in-sync
    /// members go out (0: none to wait for).
    pub(super) need_bm: u64,
    /// No source could read a piece of this window: the rest of it is worked in pages
    /// (`LOST_GRAIN`), as md's fix_sync_read_error retries page by page, so that only the
    /// pages no member can read are recorded as bad.
    pub(super) narrow: bool,
}

impl<const M: usize> SyncWindow<M> {
    /// An unused window.
    pub(super) const FREE: Self = SyncWindow {
        phase: WPhase::Free,
        generation: 0,
        sector: 0,
        sectors: 0,
        ops: [Op::Idle; M],
        outstanding: 0,
        src: 0,
        tried: 0,
        cmp_issue: 0,
        cmp_pending: 0,
        write_to: 0,
        end: 0,
        need_bm: 0,
        narrow: false,
    };
}

/// The running sync job (md's `recovery` flags, `curr_resync` and `resync_mismatches`).
#[derive(Clone, Copy, Debug)]
pub(super) struct SyncJob {
    /// The running action, `None` when idle.
    pub(super) action: Option<SyncAction>,
    /// Where the next window starts (md's curr_resync).
    pub(super) pos: Sector,
    /// End of the job (the array size).
    pub(super) end: Sector,
    /// Sectors found different so far (check / repair).
    pub(super) mismatches: u64,
    /// Position recorded by the last checkpoint.
    pub(super) last_checkpoint: Sector,
    /// A failure or a reconfiguration stopped the job (MD_RECOVERY_INTR): its windows drain,
    /// then it ends and restarts from its checkpoint.
    pub(super) interrupted: bool,
    /// Only chunks dirty in the bitmap are synced.
    pub(super) bitmap_guided: bool,
    /// Recovery: the members being rebuilt.
    pub(super) targets: u32,
    /// Everything below is done (md's curr_resync_completed): where an interrupted check or
    /// repair resumes.
    pub(super) done: Sector,
}

impl SyncJob {
    /// No job.
    pub(super) const IDLE: Self = SyncJob {
        action: None,
        pos: 0,
        end: 0,
        mismatches: 0,
        last_checkpoint: 0,
        interrupted: false,
        bitmap_guided: false,
        targets: 0,
        done: 0,
    };
}

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// Interrupts the running job (md's MD_RECOVERY_INTR).
    pub(super) fn interrupt_sync(&mut self) {
        if self.sync.action.is_some() {
            self.sync.interrupted = true;
        }
    }

    /// Chooses the next job when none runs (md_check_recovery, md_choose_sync_action):
    /// recovery, else resync, else a requested check or repair.
    fn pick_job(&mut self) {
        if self.sync.action.is_some()
            || self.barrier.frozen > 0
            || self.sync_blocked
            || self.sync_frozen
            || self.ro.asked()
        {
            return;
        }
        let in_sync = self.in_sync_count();
        if in_sync == 0 {
            return;
        }
        self.attach_replacements();
        let mut recovering = 0u32;
        let mut start = MAX_SECTOR;
        let mut all_bitmap = true;
        for (i, m) in self.members.iter().enumerate() {
            if let MemberState::Recovering {
                recovery_offset,
                bitmap,
            } = m.state
            {
                recovering |= bit(i);
                start = start.min(recovery_offset);
                all_bitmap &= bitmap;
            }
        }
        let (action, pos, guided) = if recovering != 0 {
            (
                SyncAction::Recovery,
                start,
                all_bitmap && self.bitmap.bits.is_some(),
            )
        } else if self.resync_cp != MAX_SECTOR {
            if in_sync < 2 {
                self.resync_cp = MAX_SECTOR;
                self.sb.lagging = 0;
                self.settle_rank_wm();
                self.want_sb();
                return;
            }
            if self.bitmap.bits.is_some() {
                (SyncAction::Resync, 0, true)
            } else {
                (SyncAction::Resync, self.resync_cp, false)
            }
        } else if let Some(a) = self.check_requested.take() {
            self.mismatch_cnt = 0;
            // md's sync_min / sync_max bound a check or repair.
            (a, self.sync_min.min(self.cfg.data_sectors), false)
        } else {
            return;
        };
        let end = match action {
            SyncAction::Check | SyncAction::Repair => self.sync_max.min(self.cfg.data_sectors),
            _ => self.cfg.data_sectors,
        };
        self.sync = SyncJob {
            action: Some(action),
            pos,
            end: end.max(pos),
            done: pos,
            mismatches: 0,
            last_checkpoint: pos,
            interrupted: false,
            bitmap_guided: guided,
            targets: recovering,
        };
        self.emit(Event::SyncStarted(action));
    }

    /// md_do_sync: moves the windows, publishes progress, ends the job, starts new windows.
    pub(super) fn pump_sync(&mut self) {
        self.pick_job();
        let Some(action) = self.sync.action else {
            return;
        };
        // Advance windows.
        for wi in 0..S {
            self.step_window(wi, action);
        }
        // The lowest sector of a window in use, if any (one pass over the windows).
        let mut active = false;
        let mut low = MAX_SECTOR;
        for w in &self.windows {
            if w.phase != WPhase::Free {
                active = true;
                low = low.min(w.sector);
            }
        }
        if !active {
            low = self.sync.pos;
        }
        // Progress bookkeeping.
        if !self.sync.interrupted {
            self.sync.done = low;
            match action {
                SyncAction::Resync => self.resync_cp = low,
                SyncAction::Recovery => {
                    let targets = self.sync.targets;
                    for (i, m) in self.members.iter_mut().enumerate() {
                        if targets & bit(i) != 0 {
                            if let MemberState::Recovering {
                                recovery_offset, ..
                            } = &mut m.state
                            {
                                *recovery_offset = (*recovery_offset).max(low);
                            }
                        }
                    }
                }
                _ => {}
            }
            if low.saturating_sub(self.sync.last_checkpoint) >= self.cfg.sync_checkpoint_sectors {
                self.sync.last_checkpoint = low;
                self.want_sb();
                self.emit(Event::SyncProgress {
                    action,
                    done: low,
                    total: self.sync.end,
                });
            }
        }
        if self.sync.interrupted || self.sync.pos >= self.sync.end {
            if active {
                return;
            }
            // All windows drained: the job ends. An interrupted check or repair resumes where it
            // got to; one that ran to its end forgets the range (md_do_sync's resync_min /
            // resync_max handling).
            let checking = matches!(action, SyncAction::Check | SyncAction::Repair);
            if checking && self.sync.interrupted {
                self.sync_min = self.sync.done;
            } else if checking {
                self.sync_min = 0;
                self.sync_max = MAX_SECTOR;
            }
            if self.sync.interrupted {
                self.emit(Event::SyncInterrupted(action));
            } else {
                match action {
                    SyncAction::Resync => {
                        self.resync_cp = MAX_SECTOR;
                        self.sb.lagging = 0;
                        self.settle_rank_wm();
                    }
                    SyncAction::Recovery => {
                        let targets = self.sync.targets;
                        for i in 0..M {
                            if targets & bit(i) == 0 {
                                continue;
                            }
                            let Some(m) = self.members.get_mut(i) else {
                                continue;
                            };
                            if matches!(m.state, MemberState::Recovering { .. }) {
                                m.state = MemberState::InSync;
                                // Rebuilt from sources that hold every acknowledged write
                                // (a recovery never reads a lagging member where it may lack
                                // one): it does not lag, whatever its WriteMostly flag said
                                // at assembly (simulator seed 39014565).
                                if !planted::on(Bug::RecoveredStillLags) {
                                    self.sb.lagging &= !bit(i);
                                }
                                self.emit(Event::SpareActive(MemberId(i as u8)));
                                self.hand_over(i);
                            }
                        }
                    }
                    SyncAction::Check | SyncAction::Repair => {
                        self.mismatch_cnt = self.sync.mismatches
                    }
                }
                self.emit(Event::SyncFinished {
                    action,
                    mismatches: self.sync.mismatches,
                });
            }
            self.sync.action = None;
            self.want_sb();
            if self.bitmap.bits.is_some() && self.timers.bitmap_daemon.is_none() {
                self.arm_bitmap_daemon();
            }
            return;
        }
        // Start new windows.
        while self.sync.pos < self.sync.end
            && self.barrier.frozen == 0
            && self.timers.sync_next <= self.now
        {
            let Some(wi) = self.windows.iter().position(|w| w.phase == WPhase::Free) else {
                break;
            };
            let pos = self.sync.pos;
            if self.writes_waiting(self.sector_bucket(pos)) {
                // md's raise_barrier: normal I/O waiting in the bucket goes first (it is
                // admitted once the windows already there close).
                break;
            }
            let unit_end =
                ((pos >> self.cfg.barrier_unit_shift) + 1) << self.cfg.barrier_unit_shift;
            let end = pos
                .saturating_add(Sector::from(self.cfg.sync_window_sectors))
                .min(unit_end)
                .min(self.sync.end);
            let sectors = (end - pos) as u32;
            self.sync.pos = end;
            if self.sync.bitmap_guided && !self.chunk_dirty(pos, sectors) {
                continue;
            }
            let rate = self.sync_rate_now();
            if rate != 0 {
                self.timers.sync_next = self.now.after(window_ns(sectors, rate));
            }
            self.raise_barrier(pos);
            if let Some(w) = self.windows.get_mut(wi) {
                let generation = w.generation.wrapping_add(1);
                *w = SyncWindow::FREE;
                w.generation = generation;
                w.phase = WPhase::Raise;
                self.moves = self.moves.wrapping_add(1);
                w.sector = pos;
                w.sectors = sectors;
                w.end = end;
            }
            self.step_window(wi, action);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::window_ns;

    #[test]
    fn window_time_matches_the_64_bit_formula() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let rates = [1u64, 3, 7, 2048, 999_983, 1_000_000_000, 4_000_000_000];
        for _ in 0..20_000 {
            let sectors = (next() % 70_000) as u32;
            let rate = if next() % 2 == 0 {
                rates[(next() % rates.len() as u64) as usize]
            } else {
                1 + next() % 5_000_000
            };
            let exact = u64::from(sectors) * 1_000_000_000 / rate;
            let got = window_ns(sectors, rate);
            let rest = 1_000_000_000 % rate;
            if u64::from(sectors) * rest <= u64::from(u32::MAX) {
                assert_eq!(got, exact, "{sectors} sectors at {rate}/s");
            } else {
                assert!(
                    got <= exact && exact - got < u64::from(sectors),
                    "{sectors} at {rate}"
                );
            }
        }
        assert_eq!(window_ns(8, 1 << 32), 0);
        assert_eq!(window_ns(0, 5), 0);
    }
}
