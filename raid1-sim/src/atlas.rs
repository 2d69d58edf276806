//! The fault atlas: where a fault may strike without making data loss legitimate.

use raid1_core::{MemberId, MemberState, Role};

use crate::M;
use crate::driver::Sim;

impl Sim<'_> {
    /// An attached, not yet failed member whose disk misbehaves.
    pub(crate) fn unhealthy_member(&self) -> Option<usize> {
        (0..M).find(|&i| {
            self.w.slot[i].is_some_and(|d| {
                self.w.disks[d].member.misbehaves()
                    || self.w.corrupt_disk == Some(d)
                    || self.lists_bad_blocks(i, d)
            }) && self
                .array
                .member(MemberId(i as u8))
                .is_some_and(|m| m.state != MemberState::Faulty)
        })
    }

    /// Whether an in-sync member other than `mi` is in sync on its disk too (own role active,
    /// no recovery offset): right after a recovery the rebuilt member is in sync in memory while
    /// its superblock still says recovering until the next round lands, and a power cut then
    /// leaves only what the disks say (md has the same window; soak seed 149880). The atlas
    /// never takes away the last member that is in sync on disk.
    pub(crate) fn another_in_sync_on_disk(&self, mi: usize) -> bool {
        self.in_sync_members().iter().any(|&j| {
            j != mi
                && self.w.slot[j]
                    .and_then(|d| self.w.disks[d].sb)
                    .is_some_and(|sb| {
                        matches!(sb.own_role(), Role::Active(_)) && sb.recovery_offset.is_none()
                    })
        })
    }
}
