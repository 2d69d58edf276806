//! The fault atlas (an idea of TigerBeetle's simulator): the rules that decide where a fault may
//! strike, so that some in-sync mirror always holds every acknowledged write, and losing one is
//! the engine's fault, never the simulator's bad luck.
//!
//! 1. **One unhealthy member at a time.** A new fault (a member fault, a sticky media error,
//!    silent corruption, bad blocks) is added only while no attached, not yet failed member is
//!    unhealthy, and only while at least two members are in sync. A member is unhealthy while
//!    its disk has a member fault, a media error or a write failure armed (torn seeds, see
//!    `Sim::land_failed_write`), holds planted corruption or a sector a power cut tore inside
//!    (`Swarm::cut_tears`), or has bad blocks
//!    (in its log on disk or in the engine's list), and while an error it answered awaits the
//!    engine's decision (a failure, a bad-block record: `Disk::unsettled`; soak seed 71004455,
//!    where a disk healed between a write error and the failure it led to).
//! 2. **The last member in sync on disk is kept.** Neither a fault nor an administrative fail
//!    takes the last in-sync member that is in sync on its disk too: an assembly from the
//!    superblocks on the disks (the struck one left out) places it in sync, and no superblock
//!    write in flight to it says otherwise. Right after a recovery the rebuilt member is in
//!    sync in memory while its superblock still says recovering until the next round lands,
//!    and a power cut then leaves only what the disks say (md has the same window; soak seed
//!    149880). A member re-added from an old superblock that still says in sync is not in sync
//!    on disk either: the fresher superblocks list it as failed, and the round that records the
//!    re-add may be in flight with a recovery offset (soak seed 17025855: its bitmap recovery
//!    had nothing to copy and ended at once). Nor is a member whose disk holds a sector a
//!    power cut tore inside anyone's keeper until a write replaced it.
//! 3. **An administrative fail never takes the last healthy in-sync member.**
//! 4. **A partial assembly keeps two in-sync members on healthy disks**, one of them without
//!    bad blocks (the sectors listed on the other have no other source), and, when the freshest
//!    superblock carries a write-behind limit, one whose own superblock is not WriteMostly:
//!    writes may have been acknowledged on the fast mirrors alone (rule 5; soak seed 23018140
//!    left out the one fast mirror, and of the two WriteMostly members that came up, the one
//!    in the lower slot lacked a FUA write the other had).
//! 5. **Write-behind: not the last fast mirror.** With write-behind on, a fault or a failure
//!    does not take the last in-sync member that is not WriteMostly (a flaky one may fail just
//!    when writes are behind): the acknowledged data is on the fast mirrors only until the
//!    behind writes land (md's write-behind carries the same risk; docs/CORE.md). Nor, until
//!    the resync after a crash ends, the last in-sync member that does not lag
//!    ([`World::lagging`](crate::driver::World)), whatever the WriteMostly flags say now and
//!    whether write-behind is still on: the lagging ones may lack acknowledged writes (soak
//!    seed 13002211: the member with every write made WriteMostly by hand, then killed, an
//!    unsurvivable double fault that oracle (j) then reported). Nor, while an acknowledged
//!    write is behind in flight, the last in-sync member it is not behind on, whatever the
//!    flags say now (soak seed 1206685: the one fast mirror made WriteMostly, then killed).
//!
//! Transient faults can still line up on one request (a member fails a read, heals, another
//! fails the retry): the checkers accept an I/O error only if every in-sync member erred during
//! that request's lifetime.

use raid1_core::{MemberId, MemberState, SuperblockState};
use raid1_testkit::Health;

use crate::disk::Disk;
use crate::driver::{Sim, in_sync};
use crate::flight::{Flight, FlightKind};
use crate::{Arr, M};

/// The atlas's view of the array and its disks at one instant.
pub(crate) struct Atlas<'v, 'a> {
    array: &'v Arr<'a>,
    disks: &'v [Disk],
    slot: &'v [Option<usize>; M],
    flights: &'v [Flight],
    corrupt_disk: Option<usize>,
    /// The disk holding a sector a power cut tore inside (`Sim::cut_torn`).
    cut_torn: Option<usize>,
    /// Members that came up lagging and may still lack acknowledged writes (rule 5).
    lagging: u32,
}

impl<'a> Sim<'a> {
    /// The fault atlas, as things stand.
    pub(crate) fn atlas(&self) -> Atlas<'_, 'a> {
        Atlas {
            array: &self.array,
            disks: &self.w.disks,
            slot: &self.w.slot,
            flights: &self.w.flights,
            corrupt_disk: self.w.corrupt_disk,
            cut_torn: self.cut_torn(),
            lagging: self.still_lagging(),
        }
    }
}

impl Atlas<'_, '_> {
    /// Whether member `i`, on disk `d`, is unhealthy (rule 1).
    pub(crate) fn unhealthy(&self, i: usize, d: usize) -> bool {
        self.disks[d].member.misbehaves()
            || self.disks[d].member.fail_write.is_armed()
            || self.disks[d].unsettled
            || self.corrupt_disk == Some(d)
            || self.cut_torn == Some(d)
            || !self.disks[d].bblog.is_empty()
            || !self.array.bad_blocks(MemberId(i as u8)).is_empty()
    }

    /// An attached, not yet failed member that is unhealthy.
    pub(crate) fn unhealthy_member(&self) -> Option<usize> {
        (0..M).find(|&i| {
            self.slot[i].is_some_and(|d| self.unhealthy(i, d))
                && self
                    .array
                    .member(MemberId(i as u8))
                    .is_some_and(|m| m.state != MemberState::Faulty)
        })
    }

    /// Rule 1: whether a new fault may be added now.
    pub(crate) fn may_add_fault(&self) -> bool {
        self.unhealthy_member().is_none() && in_sync(self.array).len() >= 2
    }

    /// Rule 2: whether member `mi` may take a fault or be failed: another in-sync member is in
    /// sync on its disk too.
    pub(crate) fn may_take(&self, mi: usize) -> bool {
        // Rule 5: with writes behind, not the last in-sync member that is not WriteMostly; with
        // members lagging after a crash, not the last in-sync one that does not lag either,
        // WriteMostly or not.
        let wm = |j: usize| {
            self.array
                .member(MemberId(j as u8))
                .is_some_and(|m| m.write_mostly)
        };
        let last = |keep: &dyn Fn(usize) -> bool| {
            keep(mi) && !in_sync(self.array).iter().any(|&j| j != mi && keep(j))
        };
        if self.array.config().write_behind != 0 && last(&|j| !wm(j)) {
            return false;
        }
        // Nor the last in-sync member with no acknowledged write behind in flight to it,
        // whatever the flags say now (soak seed 1206685: the one fast mirror was made
        // WriteMostly while a write it had answered was behind on the other, then killed; md
        // loses that write too).
        let behind = |j: usize| self.flights.iter().any(|f| f.behind && f.member == j);
        if self.flights.iter().any(|f| f.behind) && last(&|j| !behind(j)) {
            return false;
        }
        if self.last_up_to_date(mi) {
            return false;
        }
        // What an assembly after a power cut would read: the superblocks on the disks, the
        // struck member's left out.
        let found: [Option<SuperblockState<M>>; M] = core::array::from_fn(|j| {
            self.slot[j]
                .filter(|_| j != mi)
                .and_then(|d| self.disks[d].sb)
        });
        in_sync(self.array).iter().any(|&j| {
            j != mi
                && (self.cut_torn.is_none() || self.slot[j] != self.cut_torn)
                && Arr::assembles_in_sync(&found, j)
                && !self.flights.iter().any(|f| {
                    f.member == j && matches!(&f.kind, FlightKind::Sb(sb, _) if !sb.says_in_sync())
                })
        })
    }

    /// Rule 5's second half: member `mi` is the last in-sync member that does not lag while
    /// others do (after a crash with write-behind, until the resync ends).
    pub(crate) fn last_up_to_date(&self, mi: usize) -> bool {
        let keep = |j: usize| self.lagging & (1 << j) == 0;
        self.lagging != 0 && keep(mi) && !in_sync(self.array).iter().any(|&j| j != mi && keep(j))
    }

    /// Rule 3: whether an in-sync member may be failed by hand (which one: rule 2).
    pub(crate) fn may_fail_by_hand(&self) -> bool {
        let in_sync = in_sync(self.array).len();
        in_sync >= 2 && !(self.unhealthy_member().is_some() && in_sync == 2)
    }

    /// Rule 4: whether an assembly of the disks in `slots`, whose members would come up in
    /// `states`, may be started.
    pub(crate) fn may_assemble(
        disks: &[Disk],
        slots: &[Option<usize>; M],
        found: &[Option<SuperblockState<M>>; M],
        states: &[MemberState; M],
    ) -> bool {
        // In-sync members on healthy disks: (member, disk).
        let live: Vec<(usize, usize)> = (0..M)
            .filter(|&i| states[i] == MemberState::InSync)
            .filter_map(|i| slots[i].map(|d| (i, d)))
            .filter(|&(_, d)| disks[d].member.health == Health::Healthy)
            .collect();
        let clean = live
            .iter()
            .filter(|&&(_, d)| disks[d].bblog.is_empty())
            .count();
        let behind = Arr::choose_freshest(found)
            .and_then(|f| found[usize::from(f)])
            .is_some_and(|sb| sb.bitmap && sb.write_behind != 0);
        let fast = live
            .iter()
            .any(|&(i, _)| found[i].is_some_and(|sb| !sb.write_mostly));
        live.len() >= 2 && clean >= 1 && (!behind || fast)
    }
}
