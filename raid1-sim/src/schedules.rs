//! Schedules the plain random walk does not produce, each switched on per seed:
//!
//! * held output: the frontend stops calling `poll_io` for a few steps while inputs (submits,
//!   completions, timers, failures, freezes) keep arriving, as a frontend with a full
//!   submission queue does; commands the engine withdraws meanwhile (a member failed or
//!   removed) must never come out afterwards;
//! * aimed crashes: the power is cut right after a write or flush is acknowledged, or right
//!   after the first command of a superblock or bitmap round is handed out;
//! * partial assembly: after a power cut one member is left out (when the others still make
//!   two in-sync members) and added back later (a re-add from the pool);
//! * uneven geometry: device sizes, sync windows and barrier units that do not divide each
//!   other (drawn with the seed's shape, `options.rs`);
//! * pinned reads: after a power cut, a sector whose value is ambiguous reads back the same
//!   value as long as its source (`Array::read_source`: the first by the resync's order among
//!   the members in sync and those rebuilt past it) holds it unchanged, invariant (n).

use crate::Res;
use crate::atlas::Atlas;
use crate::driver::Sim;

/// Per-seed schedule switches.
#[derive(Clone, Debug, Default)]
pub(crate) struct Schedules {
    /// Per mille of steps that start holding `poll_io`.
    pub hold_permille: u64,
    /// Steps left while `poll_io` is held.
    pub hold_steps: u32,
    /// Crash at acknowledgements and at metadata rounds.
    pub aim_crashes: bool,
    /// A crash is due at the end of the current step.
    pub crash_now: bool,
    /// Inside a step of the random walk (not a quiet point or a stop): aimed crashes allowed.
    pub stepping: bool,
    /// Leave a member out at assembly now and then.
    pub partial_assembly: bool,
}

impl Sim<'_> {
    /// Called at the start of every step: holds or releases `poll_io`.
    pub(crate) fn schedule_hold(&mut self) -> Res<()> {
        if self.w.sched.hold_steps > 0 {
            self.w.sched.hold_steps -= 1;
            if self.w.sched.hold_steps == 0 {
                self.log(|| "poll_io released".into());
                self.drain_outputs()?;
            }
        } else if self.w.rng.below(1000) < self.w.sched.hold_permille {
            self.w.sched.hold_steps = 1 + self.w.rng.below(6) as u32;
            self.log(|| format!("poll_io held for {} steps", self.w.sched.hold_steps));
        }
        Ok(())
    }

    /// Stops holding `poll_io` (before a quiet point, a stop or a power cut's assembly).
    pub(crate) fn release_hold(&mut self) -> Res<()> {
        if self.w.sched.hold_steps > 0 {
            self.w.sched.hold_steps = 0;
            self.drain_outputs()?;
        }
        Ok(())
    }

    /// An acknowledgement or the first command of a metadata round: maybe cut the power.
    pub(crate) fn aim_crash(&mut self, permille: u64) {
        if self.w.sched.aim_crashes
            && self.w.sched.stepping
            && self.w.crashes_left > 0
            && self.w.rng.chance(permille)
        {
            self.w.sched.crash_now = true;
        }
    }

    /// A range was recorded as bad on member `m` while it is rebuilt (in seeds with lost
    /// sectors, mostly a page no member could read): a third of the time, cut the power at the
    /// end of the step, with the superblock round that carries the record (and perhaps the
    /// rebuild's progress past it) in flight. Drawn from the lost stream, only then.
    pub(crate) fn aim_crash_lost(&mut self, m: raid1_core::MemberId) {
        if self.w.swarm.lost_media > 0
            && self.w.sched.stepping
            && self.w.crashes_left > 0
            && self
                .array
                .member(m)
                .is_some_and(|x| matches!(x.state, raid1_core::MemberState::Recovering { .. }))
            && self.w.lost_side.chance(300)
        {
            self.log(|| "power cut aimed after a record on a member rebuilt".into());
            self.w.sched.crash_now = true;
        }
    }

    /// A write acknowledged while writes are behind on a WriteMostly member: now and then
    /// (often for a FUA write, which the fast members hold durably) cut the power then, so
    /// that an assembly finds a member that lacks acknowledged writes (drawn from the lag
    /// stream, only then).
    pub(crate) fn aim_crash_behind(&mut self, fua: bool) {
        if self.w.sched.stepping
            && self.w.crashes_left > 0
            && self.array.status().behind_writes > 0
            && self.w.lag_side.chance(if fua { 600 } else { 100 })
        {
            self.log(|| "power cut aimed while writes are behind".into());
            self.w.sched.crash_now = true;
        }
    }

    /// At assembly after a power cut: the disk to leave out, if any. Only when the remaining
    /// disks still assemble as the fault atlas requires (rule 4).
    pub(crate) fn leave_out(&mut self) -> Option<usize> {
        if !self.w.sched.partial_assembly || !self.w.rng.chance(300) {
            return None;
        }
        // A member holding the only good copy of a sector a cut tore on another stays in.
        if self.cut_torn().is_some() {
            return None;
        }
        let attached: Vec<usize> = (0..self.w.slot.len())
            .filter(|&i| self.w.slot[i].is_some())
            .collect();
        if attached.len() < 3 {
            return None;
        }
        let i = attached[self.w.rng.below(attached.len() as u64) as usize];
        // An operator who leaves out the one member holding the newest superblock assembles
        // stale members that nothing on them marks as stale: md cannot tell either (its failure
        // records may be on that member alone). Only a member some other member is as fresh as
        // may be left out.
        let events = |d: Option<usize>| d.and_then(|d| self.w.disks[d].sb).map(|sb| sb.events);
        let left = events(self.w.slot[i]).unwrap_or(0);
        let fresh_rest = (0..self.w.slot.len())
            .filter(|&j| j != i)
            .filter_map(|j| events(self.w.slot[j]))
            .max()
            .unwrap_or(0);
        if left > fresh_rest {
            return None;
        }
        let mut slots = self.w.slot;
        slots[i] = None;
        let (found, states) = self.dry_assemble(&slots)?;
        Atlas::may_assemble(&self.w.disks, &slots, &found, &states).then_some(i)
    }

    /// (n): after a logical read of an ambiguous sector returned `v`, pin it to the disk of the
    /// sector's source member (`read_source`) if that disk holds `v`.
    pub(crate) fn pin_read(&mut self, s: usize, v: u64) {
        // Planted corruption may be read from either mirror until it is repaired.
        if self.w.shadow[s].current.len() < 2
            || self.w.shadow[s].inflight.is_some()
            || self.w.corrupt[s].is_some()
        {
            return;
        }
        let Some(first) = self.read_source(s) else {
            return;
        };
        if let Some(d) = self.w.slot[first] {
            if self.w.disks[d].read(s) == v {
                self.w.pins[s] = Some((v, d));
            }
        }
    }

    /// The pinned answer of sector `s`, if its source is still the member on that disk and
    /// still holds it.
    pub(crate) fn pinned(&self, s: usize) -> Option<u64> {
        let (v, d) = self.w.pins[s]?;
        let first = self.read_source(s)?;
        (self.w.slot[first] == Some(d) && self.w.disks[d].read(s) == v).then_some(v)
    }

    /// The engine's source for reads of sector `s` while it is not yet resynced: the member
    /// that ranks first among those in sync and those rebuilt past `s` (md's choose_first_rdev).
    pub(crate) fn read_source(&self, s: usize) -> Option<usize> {
        self.array
            .read_source(s as raid1_core::Sector)
            .map(|m| usize::from(m.0))
    }

    /// The engine's source for reads of a region not yet resynced and for the resync itself
    /// (md's first in-sync mirror; with write-behind, members that may lack acknowledged
    /// writes last).
    pub(crate) fn source_member(&self) -> Option<usize> {
        self.array.sync_source().map(|m| usize::from(m.0))
    }
}
