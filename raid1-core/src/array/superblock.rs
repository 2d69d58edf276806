//! Superblock updates: md's md_update_sb and super_written (drivers/md/md.c).
//!
//! Every change the array must remember (a failure, a member added or removed, a sync
//! checkpoint, clean <-> dirty, `events_cleared`) asks for a superblock round; rounds run one at
//! a time, each writing the whole state to every present member. A round that records a change
//! bumps `events`; md's roll-back lets a pure dirty -> clean round right after a pure clean ->
//! dirty one decrement it instead (`can_decrease_events`), and the first real change after a
//! roll-back skips a number (+2) so that one count never names two tables. Members that
//! completed data writes since their last flush are flushed first (md writes superblocks with
//! PREFLUSH). A round that does not land on the last in-sync member is rewritten (md's
//! MD_SB_NEED_REWRITE) up to [`META_RETRIES`] times; then what waits for it fails.

use super::*;

/// What a superblock round writes: the array state at the start of the round, rendered per
/// member by [`Array::render_sb`].
#[derive(Clone, Copy, Debug)]
pub(super) struct SbSnapshot<const M: usize> {
    pub(super) events: u64,
    pub(super) raid_disks: u16,
    /// The array's size when the round started (md's `dev_sectors`).
    pub(super) size: Sector,
    pub(super) resync_offset: Sector,
    pub(super) roles: [Role; M],
    pub(super) recovery: [Option<Sector>; M],
    pub(super) recovery_bitmap: u32,
    pub(super) write_mostly: u32,
    /// Members being rebuilt as replacements (feature REPLACEMENT).
    pub(super) replacement: u32,
    pub(super) events_cleared: u64,
}

/// How many times in a row a superblock or bitmap round that did not land on the last in-sync
/// member is written again before the requests waiting for it fail.
pub(super) const META_RETRIES: u8 = 3;

/// Whether two role tables record the same mirrors: the same members active in the same
/// slots. Spare and faulty both mean "holds no slot" (an empty position is written 0xffff by
/// mdadm and 0xfffe by md), so a change between them is no change of the table.
pub fn same_table(a: &[Role], b: &[Role]) -> bool {
    let slot = |r: &Role| match r {
        Role::Active(n) => Some(*n),
        _ => None,
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| slot(x) == slot(y))
}

/// The superblock rounds: what is wanted, in flight, done and on disk (md's `sb_flags` and
/// md_update_sb's bookkeeping). Generations count rounds asked for: a round takes the latest
/// wanted generation, and records every earlier one too.
#[derive(Debug)]
pub(super) struct SbUpdate<const M: usize> {
    /// Latest superblock generation asked for.
    pub(super) wanted: u64,
    /// Latest superblock generation whose round is over (landed or not).
    pub(super) done: u64,
    /// Latest superblock generation that landed on every member still in sync at the end of its
    /// round. Every round writes the whole state, so it also records every earlier generation.
    pub(super) durable: u64,
    /// The round in progress failed on an in-sync member that could not be failed (the last
    /// one): nothing on disk records it.
    pub(super) lost: bool,
    /// Rounds rewritten in a row because they did not land (bounded by [`META_RETRIES`]).
    pub(super) retries: u8,
    /// Latest superblock generation that must bump `events` (every change but events_cleared).
    pub(super) bump: u64,
    /// Latest superblock generation that records more than a clean <-> dirty transition.
    pub(super) change: u64,
    /// Generation of the round in flight.
    pub(super) round: Option<u64>,
    /// Members whose superblock write of this round is not yet polled.
    pub(super) issue: u32,
    /// Members that may lack acknowledged writes (behind writes in flight, or lagging after a
    /// crash): their superblock write of this round waits until the other members of the round
    /// have answered theirs, so that no power cut leaves one of them the only holder of the
    /// freshest count (an assembly would then take it as the reference, and copy what it
    /// lacks over the good copies).
    pub(super) deferred: u32,
    /// Members whose superblock write of this round waits until the members being rebuilt
    /// whose own superblock on disk still says in sync have answered theirs (`first`): until
    /// such a member's disk says it is being rebuilt, no superblock that lists it active again
    /// may land elsewhere, or a power cut leaves its stale word that it is in sync as the only
    /// word on it (its failure's record, on another disk, already written over).
    pub(super) after_first: u32,
    /// Members whose superblock write of this round waits for a flush of earlier data writes,
    /// not yet polled / in flight.
    pub(super) preflush_issue: u32,
    /// Those preflushes in flight.
    pub(super) preflush_inflight: u32,
    /// Superblock writes of this round not yet completed (or withdrawn), preflushes included.
    pub(super) outstanding: u32,
    /// Superblock writes in flight.
    pub(super) inflight: u32,
    /// What the round in flight (or the last one) writes.
    pub(super) snap: SbSnapshot<M>,
    /// Members whose superblock write of this round says WriteMostly (as rendered when
    /// handed out).
    pub(super) wm_sent: u32,
    /// Members whose own superblock on disk says WriteMostly (the last write that landed):
    /// only those are written behind, so that after a crash assembly knows which members may
    /// lack acknowledged writes.
    pub(super) wm_landed: u32,
    /// Members whose superblock write of this round says in sync (an active slot, no
    /// recovery offset).
    pub(super) in_sync_sent: u32,
    /// Members whose own superblock on disk says in sync: only those count as holding an
    /// acknowledged write that is behind elsewhere (right after a recovery a member is in sync
    /// here before its disk says so).
    pub(super) in_sync_landed: u32,
    /// Write-behind: members that came up WriteMostly from a crash (they may lack acknowledged
    /// writes in the dirty chunks) until the resync ends.
    pub(super) lagging: u32,
    /// Members whose bad-block log on disk may still list sectors a write has made good since
    /// (taken off the list here, not yet in a superblock that landed): an assembly after a
    /// crash would not read those sectors there, so a write there is not acknowledged on that
    /// member's word while its writes to WriteMostly members are behind.
    pub(super) log_stale: u32,
    /// Members whose superblock write in flight carries the bad-block list as it is now (no
    /// write made sectors good since it was rendered): its landing ends `log_stale`.
    pub(super) log_sent: u32,
    /// The next round starts only once this bitmap round is over: a grown array's bits for
    /// its new region are on disk before any superblock gives the new size
    /// (array/resize.rs).
    pub(super) after_bitmap: u64,
}

impl<const M: usize> SbUpdate<M> {
    /// The state of a new array.
    pub(super) const NEW: Self = SbUpdate {
        wanted: 0,
        done: 0,
        durable: 0,
        lost: false,
        retries: 0,
        bump: 0,
        change: 0,
        round: None,
        issue: 0,
        deferred: 0,
        after_first: 0,
        preflush_issue: 0,
        preflush_inflight: 0,
        outstanding: 0,
        inflight: 0,
        wm_sent: 0,
        wm_landed: 0,
        in_sync_sent: 0,
        in_sync_landed: 0,
        lagging: 0,
        log_stale: 0,
        log_sent: 0,
        snap: SbSnapshot {
            events: 0,
            raid_disks: 0,
            size: 0,
            resync_offset: MAX_SECTOR,
            roles: [Role::Faulty; M],
            recovery: [None; M],
            recovery_bitmap: 0,
            write_mostly: 0,
            replacement: 0,
            events_cleared: 0,
        },
        after_bitmap: 0,
    };
}

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// Asks for a superblock round that records a change (and bumps `events`). (Called from
    /// many places: inlined, its 64-bit arithmetic cost more code than the calls.)
    #[inline(never)]
    pub(super) fn want_sb(&mut self) {
        self.sb.wanted += 1;
        self.sb.bump = self.sb.wanted;
        self.sb.change = self.sb.wanted;
    }

    /// Asks for a superblock round that only records a clean <-> dirty transition (md's
    /// MD_SB_CHANGE_CLEAN): it bumps `events`, or rolls it back (see `bump_events`).
    pub(super) fn want_sb_clean_dirty(&mut self) {
        self.sb.wanted += 1;
        self.sb.bump = self.sb.wanted;
    }

    /// Ends the superblock round in flight (landed, or to be rewritten) and starts the next one
    /// when one is wanted (md_update_sb): bumps or rolls back `events`, takes the snapshot every
    /// member is written, and queues each member's write, behind a flush where it has unflushed
    /// data.
    pub(super) fn pump_superblock(&mut self) {
        // The others get the round's superblock once the members being rebuilt whose disks
        // still say in sync have answered theirs.
        if self.sb.round.is_some()
            && self.sb.after_first != 0
            && self.sb.outstanding <= count(self.sb.after_first | self.sb.deferred)
        {
            let after = core::mem::take(&mut self.sb.after_first);
            self.release_sb_writes(after);
        }
        // The members that may lack acknowledged writes get the round's superblock once the
        // others of the round have answered.
        if self.sb.round.is_some()
            && self.sb.deferred != 0
            && self.sb.outstanding <= count(self.sb.deferred)
        {
            let deferred = core::mem::take(&mut self.sb.deferred);
            self.release_sb_writes(deferred);
        }
        // Superblock round finished?
        if let Some(g) = self.sb.round {
            if self.sb.issue | self.sb.preflush_issue == 0 && self.sb.outstanding == 0 {
                self.sb.done = g;
                self.sb.round = None;
                if core::mem::take(&mut self.sb.lost) {
                    // md rewrites a superblock that did not land (MD_SB_NEED_REWRITE): the
                    // same content and events, a new generation. Past the retries, whatever
                    // waits for it fails (`sb_landed`).
                    if self.sb.retries < META_RETRIES {
                        self.sb.retries += 1;
                        self.sb.wanted = self.sb.wanted.max(g + 1);
                    }
                } else {
                    self.sb.durable = g;
                    self.sb.retries = 0;
                }
            }
        }
        if self.sb.round.is_none()
            && self.sb.wanted > self.sb.done
            && self.bitmap.done >= self.sb.after_bitmap
        {
            // A round that changes the member table is a change even if it was asked for
            // without one (the bits-cleared round): one count must never name two tables.
            let mut next = self.snapshot();
            if !same_table(&next.roles, &self.sb.snap.roles)
                || next.raid_disks != self.sb.snap.raid_disks
            {
                self.sb.change = self.sb.wanted;
                self.sb.bump = self.sb.bump.max(self.sb.wanted);
            }
            if self.sb.bump > self.sb.done {
                self.bump_events();
            }
            if self.bitmap.cleared_pending {
                self.bitmap.cleared_pending = false;
                self.events_cleared = self.events;
            }
            // The snapshot taken above, with what the bump and the clear just changed.
            next.events = self.events;
            next.events_cleared = self.events_cleared;
            self.sb.snap = next;
            // The members present, those in sync, and (md writes superblocks with PREFLUSH:
            // data a member acknowledged before the round is durable before the superblock
            // that describes it, a clean mark, a finished sync, can land) those with unflushed
            // data: one pass.
            let mut mask = 0u32;
            let mut in_sync = 0u32;
            let mut unflushed = 0u32;
            let mut rebuilt = 0u32;
            for (i, m) in self.members.iter().enumerate() {
                if m.present() {
                    mask |= bit(i);
                }
                if m.in_sync() {
                    in_sync |= bit(i);
                }
                if matches!(m.state, MemberState::Recovering { .. }) {
                    rebuilt |= bit(i);
                }
                if m.unflushed {
                    unflushed |= bit(i);
                }
            }
            self.sb.round = Some(self.sb.wanted);
            // Members that may lack acknowledged writes are written last, when another member
            // in sync is not one of them (see `SbUpdate::deferred`).
            let behind = (self.behind_members_pending() | self.sb.lagging) & mask;
            let fast = mask & !behind & in_sync != 0;
            let deferred = if fast && !planted::on(Bug::BehindSbFirst) {
                behind
            } else {
                0
            };
            self.sb.deferred = deferred;
            // A member being rebuilt whose own superblock on disk says in sync (re-added after
            // a failure whose record may be on one other disk only, a spare's) gets the round
            // first; the others wait for its answer (see `SbUpdate::after_first`; simulator
            // soak seed 206857).
            let first = mask & rebuilt & self.sb.in_sync_landed & !deferred;
            let after_first = if first != 0 && !planted::on(Bug::RebuiltSbLast) {
                mask & !first & !deferred
            } else {
                0
            };
            self.sb.after_first = after_first;
            let waiting = deferred | after_first;
            self.sb.preflush_issue = mask & unflushed & !waiting;
            self.sb.issue = mask & !unflushed & !waiting;
            self.sb.outstanding = count(mask);
            if mask == 0 {
                self.sb.done = self.sb.wanted;
                self.sb.durable = self.sb.wanted;
                self.sb.round = None;
            }
        }
    }

    /// Queues the superblock writes of this round held back for `members`, behind a flush
    /// where a member has unflushed data.
    fn release_sb_writes(&mut self, members: u32) {
        for i in 0..M {
            if members & bit(i) == 0 {
                continue;
            }
            if self.members.get(i).is_some_and(|m| m.unflushed) {
                self.sb.preflush_issue |= bit(i);
            } else {
                self.sb.issue |= bit(i);
            }
        }
    }

    /// `events` for a round that records a change (md_update_sb). md's roll-back: a round that
    /// only marks a complete, in-sync array clean right after a round that only marked it dirty
    /// decrements instead, so an idle/busy/idle cycle leaves the count unchanged. Assembly
    /// tolerates a member one event behind, so a crash between the two member writes of that
    /// round is harmless (the data were flushed before the clean mark). A changing round right
    /// after a roll-back goes up by two, so that a member that missed the roll-back (a crash)
    /// never holds the same count as members whose tables record something it does not know.
    fn bump_events(&mut self) {
        let pure = self.sb.change <= self.sb.done;
        let complete = !self.degraded()
            && self.resync_cp == MAX_SECTOR
            && self.sync.action.is_none()
            && !self
                .members
                .iter()
                .any(|m| matches!(m.state, MemberState::Recovering { .. }));
        if pure && complete && !self.dirty && self.can_decrease_events && self.events > 1 {
            self.events -= 1;
            // md "rocks back" events_cleared with it.
            self.events_cleared = self.events_cleared.min(self.events);
            self.can_decrease_events = false;
            self.rolled_back = true;
            return;
        }
        // One, two right after a roll-back (one saturating sum, not one per step).
        let step = 1 + u64::from(self.rolled_back & !pure);
        self.events = self.events.saturating_add(step);
        self.can_decrease_events = pure && complete && self.dirty;
        self.rolled_back = false;
    }

    /// The state a round started now would write.
    pub(super) fn snapshot(&self) -> SbSnapshot<M> {
        let mut s = SbSnapshot {
            events: self.events,
            raid_disks: self.raid_disks,
            size: self.cfg.data_sectors,
            resync_offset: if self.dirty { 0 } else { self.resync_cp },
            roles: [Role::Faulty; M],
            recovery: [None; M],
            recovery_bitmap: 0,
            write_mostly: 0,
            replacement: 0,
            events_cleared: self.events_cleared,
        };
        for (i, m) in self.members.iter().enumerate() {
            if let Some(r) = s.roles.get_mut(i) {
                *r = match m.state {
                    MemberState::Absent | MemberState::Faulty => Role::Faulty,
                    _ => m.role,
                };
            }
            if let MemberState::Recovering {
                recovery_offset,
                bitmap,
            } = m.state
            {
                if let Some(r) = s.recovery.get_mut(i) {
                    *r = Some(recovery_offset);
                }
                if bitmap {
                    s.recovery_bitmap |= bit(i);
                }
            }
            if m.write_mostly {
                s.write_mostly |= bit(i);
            }
            if cfg!(feature = "replacement")
                && m.replacement
                && matches!(m.state, MemberState::Recovering { .. })
            {
                s.replacement |= bit(i);
            }
        }
        s
    }

    /// Superblock of member `i` from snapshot `s`, with the member's flags now.
    pub(super) fn render_sb(&self, s: &SbSnapshot<M>, i: usize) -> SuperblockState<M> {
        let m = self.members.get(i);
        SuperblockState {
            events: s.events,
            raid_disks: s.raid_disks,
            size: s.size,
            resync_offset: s.resync_offset,
            roles: s.roles,
            this_member: MemberId(i as u8),
            recovery_offset: s.recovery.get(i).copied().flatten(),
            recovery_bitmap: s.recovery_bitmap & bit(i) != 0,
            // `events_cleared` lives in the bitmap's header: none without a bitmap (one dropped
            // while this round was under way included).
            events_cleared: if self.bitmap.bits.is_some() {
                s.events_cleared
            } else {
                0
            },
            bitmap: self.bitmap.bits.is_some(),
            write_mostly: self.write_mostly_on_disk(i),
            failfast: m.is_some_and(|m| m.failfast),
            replacement: s.replacement & bit(i) != 0,
            write_behind: if self.bitmap.bits.is_some() {
                self.write_behind_on_disk()
            } else {
                0
            },
        }
    }

    /// Next flush a superblock write of the round waits for (md's REQ_PREFLUSH).
    pub(super) fn poll_preflush(&mut self) -> Option<IoCmd<M>> {
        if self.sb.preflush_issue != 0 {
            let i = self.sb.preflush_issue.trailing_zeros() as usize;
            self.sb.preflush_issue &= !bit(i);
            self.sb.preflush_inflight |= bit(i);
            // This flush completes before the superblock write goes out: it covers every
            // write that made sectors good so far.
            if let Some(m) = self.members.get_mut(i) {
                m.made_good = false;
            }
            let generation = self.sb.round.unwrap_or(0) as u16;
            return Some(self.member_flush(i, tag(CLASS_SB_PREFLUSH, generation, 0, i as u8)));
        }
        None
    }

    /// Next superblock write of the round (md_super_write).
    pub(super) fn poll_superblock(&mut self) -> Option<IoCmd<M>> {
        while self.sb.issue != 0 {
            let i = self.sb.issue.trailing_zeros() as usize;
            self.sb.issue &= !bit(i);
            // (Without the `bad-block-log` feature no write makes sectors good.)
            if cfg!(feature = "bad-block-log")
                && self.members.get(i).is_some_and(|m| m.made_good)
                && !planted::on(Bug::LogBeforeMadeGoodFlush)
            {
                // The log this write carries drops sectors a write made good after the round's
                // flush: flush that write first (md fills the log page before its PREFLUSH).
                self.sb.preflush_issue |= bit(i);
                continue;
            }
            self.sb.inflight |= bit(i);
            let snap = self.sb.snap;
            let state = self.render_sb(&snap, i);
            self.sb.log_sent |= bit(i);
            if state.write_mostly {
                self.sb.wm_sent |= bit(i);
            } else {
                self.sb.wm_sent &= !bit(i);
            }
            if state.says_in_sync() {
                self.sb.in_sync_sent |= bit(i);
            } else {
                self.sb.in_sync_sent &= !bit(i);
            }
            if let Some(m) = self.members.get_mut(i) {
                m.in_flight += 1;
            }
            return Some(IoCmd::Superblock {
                tag: tag(CLASS_SB, self.sb.round.unwrap_or(0) as u16, 0, i as u8),
                member: MemberId(i as u8),
                state,
            });
        }
        self.poll_preflush()
    }

    /// Member `mi` answered the flush before its superblock write of round `generation`: the
    /// superblock write goes out, or the flush failed like a superblock write. `None` if no such
    /// flush is in flight.
    pub(super) fn preflush_done(&mut self, generation: u16, mi: usize, ok: bool) -> Option<()> {
        if self.sb.round.is_none() || (generation != (self.sb.round.unwrap_or(0) as u16)) {
            return None;
        }
        if mi >= M || self.sb.preflush_inflight & bit(mi) == 0 {
            return None;
        }
        self.sb.preflush_inflight &= !bit(mi);
        let present = self.members.get(mi).is_some_and(|m| m.present());
        if ok && present {
            // The superblock write itself goes out now.
            self.sb.issue |= bit(mi);
        } else {
            self.sb.outstanding = self.sb.outstanding.saturating_sub(1);
            if !ok {
                if let Some(m) = self.members.get_mut(mi) {
                    m.unflushed = true;
                }
                if self.metadata_write_failed_on_last(mi) {
                    self.sb.lost = true;
                }
            }
        }
        Some(())
    }

    /// Member `mi` answered its superblock write of round `generation` (md's super_written):
    /// `None` if no such write is in flight. A failure fails the member, or, on the last in-sync
    /// member, loses the round.
    pub(super) fn super_written(&mut self, generation: u16, mi: usize, ok: bool) -> Option<()> {
        if self.sb.round.is_none() || (generation != (self.sb.round.unwrap_or(0) as u16)) {
            return None;
        }
        if mi >= M || self.sb.inflight & bit(mi) == 0 {
            return None;
        }
        self.sb.inflight &= !bit(mi);
        self.sb.outstanding = self.sb.outstanding.saturating_sub(1);
        if ok {
            self.sb.wm_landed = (self.sb.wm_landed & !bit(mi)) | (self.sb.wm_sent & bit(mi));
            self.sb.in_sync_landed =
                (self.sb.in_sync_landed & !bit(mi)) | (self.sb.in_sync_sent & bit(mi));
            if self.sb.log_sent & bit(mi) != 0 {
                self.sb.log_stale &= !bit(mi);
            }
        }
        if !ok && self.metadata_write_failed_on_last(mi) {
            // The last in-sync member kept: this round is on no disk that counts.
            self.sb.lost = true;
        }
        Some(())
    }

    /// Whether superblock generation `need` is on disk: `Some(true)` it landed (or a later
    /// round did), `Some(false)` its round is over without landing and no rewrite is coming,
    /// `None` not yet known.
    pub(super) fn sb_landed(&self, need: u64) -> Option<bool> {
        if self.sb.durable >= need {
            Some(true)
        } else if self.sb.done >= need && self.sb.round.is_none() && self.sb.wanted <= self.sb.done
        {
            Some(false)
        } else {
            None
        }
    }

    /// What member `i`'s superblock says about WriteMostly. While writes are behind (or, after a
    /// crash, until the resync has rewritten what the WriteMostly members may lack), the disks
    /// must tell an assembly after a crash which members may lack them: such a member stays
    /// WriteMostly, and one being made WriteMostly stays fast (it may be the copy the others
    /// rely on) until then.
    fn write_mostly_on_disk(&self, i: usize) -> bool {
        let now = self.members.get(i).is_some_and(|m| m.write_mostly);
        let pending = self.behind_members_pending() | self.sb.lagging;
        if pending & bit(i) != 0 {
            true
        } else if pending != 0 && now && self.sb.wm_landed & bit(i) == 0 {
            false
        } else {
            now
        }
    }
}
