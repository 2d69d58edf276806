//! Membership changes, the raid1 personality's hooks: raid1_add_disk, raid1_remove_disk and
//! raid1_reshape (drivers/md/raid1.c), called from md.c's hot_add_disk / hot_remove_disk /
//! update_raid_disks and remove_and_add_spares.
//!
//! A device added takes its old slot back on a re-add (recovering, bitmap-guided when its
//! events allow), else it is a spare; spares take free slots and are recovered in full. A
//! removed device's position is emptied and nothing queued names it any more. Changing
//! `raid_disks` packs the active members into the lowest slots, in-sync ones first.

use super::*;

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// Puts a device at empty position `i` (raid1_add_disk): a re-add takes its old slot back if
    /// free and recovers (bitmap-guided if it was in sync when it left and its events are not
    /// older than `events_cleared`); anything else is a spare, and spares fill free slots.
    pub(super) fn place_member(&mut self, i: usize, how: AddMember) {
        let bitmap = self.bitmap.bits.is_some();
        let raid_disks = self.raid_disks;
        let events_cleared = self.events_cleared;
        let mut used = 0u32;
        for m in self.members.iter() {
            if let (true, Role::Active(s)) = (m.present(), m.role) {
                used |= bit(usize::from(s));
            }
        }
        let Some(m) = self.members.get_mut(i) else {
            return;
        };
        *m = Member::ABSENT;
        m.state = MemberState::Spare;
        m.role = Role::Spare;
        if let AddMember::ReAdd {
            slot,
            events,
            write_mostly,
            was_in_sync,
        } = how
        {
            m.write_mostly = write_mostly;
            m.rank_wm = write_mostly;
            if slot < raid_disks && used & bit(usize::from(slot)) == 0 {
                m.role = Role::Active(slot);
                m.state = MemberState::Recovering {
                    recovery_offset: 0,
                    bitmap: bitmap && was_in_sync && events >= events_cleared,
                };
            }
        }
        if !matches!(m.state, MemberState::Spare) {
            self.mark_all_bitmap_pages();
        }
        self.assign_spares();
    }

    /// Gives free slots to spares, recovered in full (md's remove_and_add_spares).
    fn assign_spares(&mut self) {
        for slot in 0..self.raid_disks {
            let taken = self
                .members
                .iter()
                .any(|m| m.present() && m.role == Role::Active(slot));
            if taken {
                continue;
            }
            if let Some(m) = self
                .members
                .iter_mut()
                .find(|m| matches!(m.state, MemberState::Spare))
            {
                m.role = Role::Active(slot);
                m.state = MemberState::Recovering {
                    recovery_offset: 0,
                    bitmap: false,
                };
                self.mark_all_bitmap_pages();
            }
        }
    }

    /// Empties position `i` (raid1_remove_disk, md_kick_rdev_from_array): the device, its
    /// bad-block list and every metadata write queued for it go; any sync is interrupted and
    /// the change recorded.
    pub(super) fn raid1_remove_disk(&mut self, i: usize) {
        if let Some(mm) = self.members.get_mut(i) {
            *mm = Member::ABSENT;
        }
        // The list belongs to the device that leaves (md keeps it in the rdev): a device added
        // at this position later starts with its own list, lent with `set_bad_blocks`.
        if let Some(b) = self.bad.get_mut(i) {
            *b = BadBlocks::empty();
        }
        self.withdraw_queued_metadata(i);
        self.interrupt_sync();
        self.want_sb();
    }

    /// Sets `raid_disks` to `n` (raid1_reshape): packs the active members into the lowest slots,
    /// in-sync first, then recovering, each group in old slot order; free slots go to spares.
    pub(super) fn raid1_reshape(&mut self, n: u16) {
        // Pack: in-sync first, then recovering, in old slot order.
        let mut next = 0u16;
        for want_sync in [true, false] {
            for slot in 0..self.raid_disks.max(n) {
                for m in self.members.iter_mut() {
                    if m.present() && m.role == Role::Active(slot) && m.in_sync() == want_sync {
                        m.role = Role::Active(next | 0x8000);
                        next += 1;
                    }
                }
            }
        }
        for m in self.members.iter_mut() {
            if let Role::Active(s) = m.role {
                m.role = Role::Active(s & 0x7FFF);
            }
        }
        self.raid_disks = n;
        self.assign_spares();
    }
}
