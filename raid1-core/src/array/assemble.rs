//! Assembly: md's analyze_sbs and md_run (drivers/md/md.c) with super_1_validate's role checks,
//! and mdadm's choice of the most recent superblock.
//!
//! The reference is the highest `events` among members whose own superblock says active and in
//! sync. A member is in sync when its own role equals the role the reference gives it, no
//! fresher superblock (a spare's included) lists it as gone, its events are at most one behind,
//! it does not call the reference faulty (split brain) and its slot is not taken. Older active
//! members are re-added, spares stay spares. Nothing is written when every member already holds
//! what the engine would write (md_run updates the superblock only when a change is flagged).

use super::*;

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// Whether an assembly from `found` places member `i` in sync (pass 1 below, with no
    /// recovery offset): its own role is the one the reference gives it, no fresher superblock
    /// lists it as gone, its events are at most one behind, it does not call the reference
    /// faulty, and no member before it holds its slot. For a frontend that must judge a member
    /// before it assembles (raid1-embedded keeps a damaged flash only when the card is not
    /// current): the rule exists here once, with the assembly that applies it.
    pub fn assembles_in_sync(found: &[Option<SuperblockState<M>>; M], i: usize) -> bool {
        let Some(fresh_idx) = Self::choose_freshest(found) else {
            return false;
        };
        let (Some(Some(fresh)), Some(Some(sb))) = (found.get(usize::from(fresh_idx)), found.get(i))
        else {
            return false;
        };
        let slot_of = |j: usize, x: &SuperblockState<M>| {
            if Self::replacing(x) {
                None
            } else {
                Self::agreed_slot(found, fresh_idx, fresh, j, x)
            }
        };
        let Some(slot) = slot_of(i, sb) else {
            return false;
        };
        sb.recovery_offset.is_none()
            && !found[..i]
                .iter()
                .enumerate()
                .any(|(j, x)| x.as_ref().and_then(|x| slot_of(j, x)) == Some(slot))
    }

    /// The slot of member `i` (superblock `sb`) if the reference `fresh` (member `fresh_idx`)
    /// agrees with it: it is to be placed in pass 1 of the assembly.
    fn agreed_slot(
        found: &[Option<SuperblockState<M>>; M],
        fresh_idx: u8,
        fresh: &SuperblockState<M>,
        i: usize,
        sb: &SuperblockState<M>,
    ) -> Option<u16> {
        let own = sb.own_role();
        let refrole = fresh.roles.get(i).copied().unwrap_or(Role::Faulty);
        let Role::Active(slot) = own else {
            return None;
        };
        let split_brain = matches!(sb.roles.get(usize::from(fresh_idx)), Some(Role::Faulty))
            && i != usize::from(fresh_idx);
        // The kernel takes its reference table from the superblock with the most events,
        // spares included (analyze_sbs): a fresher superblock, even a spare's, that no longer
        // lists this member as active (failed, removed, demoted) has seen a change this member
        // missed, such as the record of its own failure. (A fresher table that only moved it
        // to another slot, a reshape it missed, does not overrule it.)
        let overruled = found.iter().enumerate().any(|(j, other)| {
            other.is_some_and(|o| {
                j != i && o.events > sb.events && !matches!(o.roles.get(i), Some(Role::Active(_)))
            })
        });
        // More than one round (a round adds at most 2 to the count) behind a superblock that
        // lists as active a member not found here: that member, absent now, may hold writes
        // made while this one was away (simulator seed 400106: the absent member had run alone,
        // and a member being rebuilt from it had recorded the rounds this one missed).
        let missed = found.iter().flatten().any(|x| {
            x.events > sb.events.saturating_add(2)
                && x.roles.iter().enumerate().any(|(j, r)| {
                    matches!(r, Role::Active(_)) && matches!(found.get(j), Some(None))
                })
        });
        (own == refrole
            && !overruled
            && !missed
            && slot < fresh.raid_disks
            && sb.events.saturating_add(1) >= fresh.events
            && !split_brain)
            .then_some(slot)
    }

    /// A member rebuilt as a replacement (feature REPLACEMENT with a recovery offset). Without
    /// the `replacement` feature it is placed as an ordinary member being rebuilt.
    fn replacing(sb: &SuperblockState<M>) -> bool {
        cfg!(feature = "replacement") && sb.replacement && sb.recovery_offset.is_some()
    }

    /// [`Array::assemble_with_bad_blocks`]: validates the bad-block lists and the bitmap storage,
    /// takes the reference superblock, places every member found (two passes: in-sync and
    /// recovering members the reference agrees with, then stale members and spares), refuses a
    /// degraded start unless allowed, and queues the first superblock round only if something
    /// changed. It works in `a`'s place, which holds an empty array for `cfg` when it begins
    /// and an unfinished one when it fails (the callers empty it again).
    pub(super) fn md_run(
        a: &mut Self,
        cfg: Config,
        bitmap: Option<(&'b mut [u8], &'b mut [u8])>,
        found: &[Option<SuperblockState<M>>; M],
        policy: StartPolicy,
        bad_blocks: [BadBlocks<'b>; M],
    ) -> Result<(), AssembleError> {
        // Without the `bad-block-log` feature every list is empty (`assemble` lends none).
        if cfg!(feature = "bad-block-log") {
            for (i, list) in bad_blocks.iter().enumerate() {
                badblocks::validate(MemberId(i as u8), list, cfg.data_sectors)
                    .map_err(AssembleError::BadBlocks)?;
            }
        }
        a.bad = bad_blocks;
        let (bits, hot) = match bitmap {
            Some((b, h)) => (Some(b), Some(h)),
            None => (None, None),
        };
        a.attach_bitmap(bits, hot).map_err(AssembleError::Config)?;
        let fresh_idx = Self::choose_freshest(found).ok_or(AssembleError::NoActiveMember)?;
        let Some(Some(fresh)) = found.get(usize::from(fresh_idx)) else {
            return Err(AssembleError::NoActiveMember);
        };
        if fresh.raid_disks == 0 || usize::from(fresh.raid_disks) > M {
            return Err(AssembleError::RaidDisks(fresh.raid_disks));
        }
        a.raid_disks = fresh.raid_disks;
        // The count goes on from the highest any present member holds (the kernel's freshest,
        // spares included): a later round must never reuse a count that names another table.
        a.events = found
            .iter()
            .flatten()
            .fold(fresh.events, |e, sb| e.max(sb.events));
        a.events_cleared = fresh.events_cleared;
        // Slots the reference lists as held (a replacement shares its slot: counted once).
        let expected = fresh
            .roles
            .iter()
            .fold(0u32, |held, r| match r {
                Role::Active(n) if *n < fresh.raid_disks => held | bit(usize::from(*n)),
                _ => held,
            })
            .count_ones() as u16;
        let agreed =
            |i: usize, sb: &SuperblockState<M>| Self::agreed_slot(found, fresh_idx, fresh, i, sb);
        let replacing = Self::replacing;
        let mut slot_taken = 0u32;
        // Pass 1: in-sync and recovering members the reference agrees with.
        for (i, sb) in found.iter().enumerate() {
            let Some(sb) = sb else { continue };
            if replacing(sb) {
                continue;
            }
            let Some(slot) = agreed(i, sb) else { continue };
            if slot_taken & bit(usize::from(slot)) == 0 {
                let Some(m) = a.members.get_mut(i) else {
                    continue;
                };
                m.role = Role::Active(slot);
                m.write_mostly = sb.write_mostly;
                m.failfast = sb.failfast;
                m.state = match sb.recovery_offset {
                    None => MemberState::InSync,
                    Some(o) => MemberState::Recovering {
                        recovery_offset: o,
                        bitmap: sb.recovery_bitmap && a.bitmap.bits.is_some(),
                    },
                };
                slot_taken |= bit(usize::from(slot));
            }
        }
        // Pass 1b: replacements the reference agrees with (raid1's setup_conf). One goes on
        // being rebuilt beside the in-sync member it replaces, which still wants replacing;
        // with that member gone it is the slot's ordinary recovering member.
        for (i, sb) in found.iter().enumerate() {
            let Some(sb) = sb else { continue };
            let (true, Some(slot), Some(offset)) =
                (replacing(sb), agreed(i, sb), sb.recovery_offset)
            else {
                continue;
            };
            let original = a
                .members
                .iter()
                .position(|m| m.in_sync() && m.role == Role::Active(slot));
            if original.is_none() && slot_taken & bit(usize::from(slot)) != 0 {
                continue;
            }
            if a.replacement_of(slot).is_some() {
                continue;
            }
            let bitmap_ok = a.bitmap.bits.is_some();
            let Some(m) = a.members.get_mut(i) else {
                continue;
            };
            m.role = Role::Active(slot);
            m.write_mostly = sb.write_mostly;
            m.failfast = sb.failfast;
            m.replacement = original.is_some();
            m.state = MemberState::Recovering {
                recovery_offset: offset,
                bitmap: sb.recovery_bitmap && bitmap_ok,
            };
            slot_taken |= bit(usize::from(slot));
            if let Some(o) = original.and_then(|o| a.members.get_mut(o)) {
                o.want_replacement = true;
            }
        }
        let in_sync = a.in_sync_count();
        if in_sync == 0 {
            return Err(AssembleError::NoInSyncMember);
        }
        // Pass 2: stale members and spares. (And, for every member found, what its own
        // superblock says about WriteMostly and being in sync: write-behind goes only to
        // members whose disk says so.)
        for (i, sb) in found.iter().enumerate() {
            let Some(sb) = sb else { continue };
            if sb.write_mostly {
                a.sb.wm_landed |= bit(i);
            }
            if sb.says_in_sync() {
                a.sb.in_sync_landed |= bit(i);
            }
            let Some(m) = a.members.get(i) else { continue };
            if !matches!(m.state, MemberState::Absent) {
                continue;
            }
            let own = sb.own_role();
            let stale_active = matches!(own, Role::Active(_));
            if matches!(own, Role::Faulty) {
                continue;
            }
            // A member that recorded the reference as failed ran without it (split brain):
            // it may hold writes the reference's bitmap knows nothing of, so only a full
            // rebuild makes the mirrors agree.
            let ran_alone = i != usize::from(fresh_idx)
                && matches!(sb.roles.get(usize::from(fresh_idx)), Some(Role::Faulty));
            let how = match own {
                Role::Active(slot) if stale_active && sb.bitmap => AddMember::ReAdd {
                    slot,
                    events: sb.events,
                    write_mostly: sb.write_mostly,
                    was_in_sync: sb.recovery_offset.is_none() && !ran_alone,
                },
                _ => AddMember::New,
            };
            a.place_member(i, how);
            // A spare keeps its WriteMostly flag (md reads it from every member's superblock).
            if let Some(m) = a.members.get_mut(i) {
                m.write_mostly = sb.write_mostly;
                m.failfast = sb.failfast;
            }
        }
        a.settle_rank_wm();
        if in_sync < expected && policy == StartPolicy::RequireAll {
            return Err(AssembleError::NotStarted {
                found: in_sync,
                expected,
            });
        }
        // One in-sync member and nothing being rebuilt: nothing to resync (md forces
        // recovery_cp = MaxSector). With a member mid-recovery, its rebuilt part may miss
        // writes lost in the crash, so the resync runs after the recovery.
        let rebuilding = a
            .members
            .iter()
            .any(|m| matches!(m.state, MemberState::Recovering { .. }));
        a.resync_cp = if in_sync == 1 && !rebuilding {
            MAX_SECTOR
        } else {
            fresh.resync_offset
        };
        // Write-behind: after a crash the WriteMostly members may lack acknowledged writes in
        // the dirty chunks until the resync has copied them from the others.
        if a.cfg.write_behind != 0 && a.resync_cp != MAX_SECTOR {
            a.sb.lagging = a.sb.wm_landed;
        }
        // After an unclean shutdown with a bitmap, dirty bits say what to resync (from 0). The
        // members' copies may differ (a page write in flight at the crash): rewrite them all from
        // the freshest copy before any write relies on a bit.
        a.mark_all_bitmap_pages();
        if a.degraded() {
            a.emit(Event::Degraded {
                in_sync,
                raid_disks: a.raid_disks,
            });
        }
        // md writes no superblock at assembly when nothing changed (md_run updates only if
        // sb_flags are set); the first write's clean->dirty round is the next update. Any change
        // (a stale member re-added, a missing or spare member, a pending resync or recovery, a
        // superblock that differs from what we would write) keeps the initial round.
        if !a.assembled_unchanged(found) {
            a.want_sb();
        }
        // What the superblocks on disk say: a later round whose table differs records a change
        // and bumps `events`, whatever asked for it.
        a.sb.snap.roles = fresh.roles;
        a.sb.snap.raid_disks = fresh.raid_disks;
        // A member missing now may hold a count this array rolled back from before the crash
        // (one above ours): the first round skips it (+2), so that number never names two
        // different member tables.
        a.rolled_back = a.degraded();
        a.pump();
        Ok(())
    }

    /// Whether the assembled array is exactly what every member's superblock already says: clean,
    /// nothing to rebuild, and each present member would be written the very superblock it holds
    /// (same events and table included). A degraded array qualifies when the superblocks already
    /// record the missing member as gone (md starts it without a write too); a member that the
    /// table lists as active but is missing now is a change.
    fn assembled_unchanged(&self, found: &[Option<SuperblockState<M>>; M]) -> bool {
        if self.resync_cp != MAX_SECTOR {
            return false;
        }
        let snap = self.snapshot();
        self.members.iter().enumerate().all(|(i, m)| {
            let own = found.get(i).and_then(Option::as_ref);
            match (m.present(), own) {
                (false, _) => true,
                (true, None) => false,
                (true, Some(sb)) => {
                    let mut ours = self.render_sb(&snap, i);
                    // A position without a device is "no device" whether its role says spare
                    // (mdadm's 0xffff fill) or faulty (md's 0xfffe): not a change to record.
                    for (j, (r, theirs)) in ours.roles.iter_mut().zip(sb.roles).enumerate() {
                        let empty = self.members.get(j).is_none_or(|o| !o.present());
                        if empty && matches!(theirs, Role::Spare | Role::Faulty) {
                            *r = theirs;
                        }
                    }
                    matches!(m.state, MemberState::InSync | MemberState::Spare)
                        && same_state(&ours, sb)
                }
            }
        })
    }

    /// [`Array::choose_freshest`] (mdadm's most_recent).
    pub(super) fn most_recent(found: &[Option<SuperblockState<M>>; M]) -> Option<u8> {
        let mut best: Option<u8> = None;
        let mut top = 0;
        for (i, sb) in found.iter().enumerate() {
            let Some(sb) = sb else { continue };
            // Only a member that believes itself in sync can define the array (mdadm's
            // most_recent is "active and in sync").
            if !sb.says_in_sync() {
                continue;
            }
            if best.is_none() || sb.events > top {
                best = Some(i as u8);
                top = sb.events;
            }
        }
        best
    }
}

/// `a == b`, field by field as the derived comparison, the scalar fields' differences ORed
/// together (less code on a 32-bit microcontroller than a branch per field).
fn same_state<const M: usize>(a: &SuperblockState<M>, b: &SuperblockState<M>) -> bool {
    // Every field named (no `..`): a field added later cannot be left out of the comparison.
    let word = |x: &SuperblockState<M>| {
        let SuperblockState {
            events: _,
            raid_disks,
            size: _,
            resync_offset: _,
            roles: _,
            this_member,
            recovery_offset: _,
            recovery_bitmap,
            events_cleared: _,
            bitmap,
            write_mostly,
            failfast,
            replacement,
            write_behind,
        } = *x;
        u64::from(recovery_bitmap)
            | u64::from(bitmap) << 1
            | u64::from(write_mostly) << 2
            | u64::from(failfast) << 3
            | u64::from(replacement) << 4
            | u64::from(write_behind) << 8
            | u64::from(this_member.0) << 24
            | u64::from(raid_disks) << 32
    };
    ((a.events ^ b.events)
        | (a.events_cleared ^ b.events_cleared)
        | u64::from(a.size ^ b.size)
        | u64::from(a.resync_offset ^ b.resync_offset)
        | (word(a) ^ word(b)))
        == 0
        && a.roles == b.roles
        && a.recovery_offset == b.recovery_offset
}
