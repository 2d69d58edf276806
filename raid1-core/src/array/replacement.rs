//! Replacement: md's WantReplacement and Replacement flags (drivers/md/md.c: the
//! `want_replacement` state of a device, mdadm's `--replace`), raid1_add_disk's replacement
//! branch, and the hand-over in raid1_spare_active / raid1_remove_disk (raid1.c).
//!
//! A member that wants a replacement (asked for, or after a write error recorded in its
//! bad-block log, as md does) stays in service. When no sync runs and a spare is there, the
//! spare takes the same slot with the Replacement flag: it receives every write and is rebuilt
//! by a recovery, as a re-added member is. When that recovery ends, the replacement is in sync
//! and the member it replaced is marked faulty in the same step; writes acknowledged from then
//! on wait for the superblock round that records the hand-over (as after any failure), so an
//! assembly after a crash never trusts the old member's missed writes. If the old member fails
//! first, its replacement becomes the slot's ordinary recovering member.
//!
//! Without the `replacement` feature there is no [`Array::replace`], a write error sets no
//! wish, no member is ever a replacement, and a member whose superblock says it was being
//! rebuilt as one is assembled as an ordinary member being rebuilt (its rebuild resumes if its
//! slot is free, else it is a spare).

use super::*;

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// Asks for member `id` to be replaced (mdadm `--replace DEV [--with SPARE]`): a spare is
    /// rebuilt onto while `id` stays in service, then `id` is marked faulty
    /// ([`Event::Replaced`]). With `with`, that spare is the one used. The rebuild starts when
    /// no other sync job runs and a spare is there; until then the wish is kept
    /// ([`MemberInfo::want_replacement`]). No quiescing needed.
    ///
    /// Errors: `id` is not an in-sync member holding a slot, its slot already has a replacement,
    /// `with` is not a spare, or the array is read-only.
    #[cfg(feature = "replacement")]
    pub fn replace(&mut self, id: MemberId, with: Option<MemberId>) -> Result<(), ReconfigError> {
        if self.ro.asked() {
            return Err(ReconfigError::ReadOnly);
        }
        let i = usize::from(id.0);
        let m = *self.members.get(i).ok_or(ReconfigError::NoSuchMember(id))?;
        let Role::Active(slot) = m.role else {
            return Err(ReconfigError::WrongState(id));
        };
        if !m.in_sync() || m.replacement {
            return Err(ReconfigError::WrongState(id));
        }
        if self.replacement_of(slot).is_some() {
            return Err(ReconfigError::Replacing(id));
        }
        if let Some(w) = with {
            let s = self
                .members
                .get(usize::from(w.0))
                .ok_or(ReconfigError::NoSuchMember(w))?;
            if !matches!(s.state, MemberState::Spare) {
                return Err(ReconfigError::NotSpare(w));
            }
        }
        if let Some(m) = self.members.get_mut(i) {
            m.want_replacement = true;
            m.replace_with = with.map(|w| w.0);
        }
        self.pump();
        Ok(())
    }

    /// The member being rebuilt as the replacement in slot `slot`.
    pub(super) fn replacement_of(&self, slot: u16) -> Option<usize> {
        if cfg!(not(feature = "replacement")) {
            return None;
        }
        self.members
            .iter()
            .position(|m| m.present() && m.replacement && m.role == Role::Active(slot))
    }

    /// Gives spares to in-sync members that want a replacement (raid1_add_disk's replacement
    /// branch, from md_check_recovery's remove_and_add_spares): called when no sync job runs,
    /// after free slots have taken their spares. The spare joins the slot as a replacement,
    /// recovering from the start.
    pub(super) fn attach_replacements(&mut self) {
        if cfg!(not(feature = "replacement")) {
            return;
        }
        for i in 0..M {
            let Some(m) = self.members.get(i).copied() else {
                continue;
            };
            let Role::Active(slot) = m.role else { continue };
            if !m.want_replacement
                || !m.in_sync()
                || m.replacement
                || slot >= self.raid_disks
                || self.replacement_of(slot).is_some()
            {
                continue;
            }
            let spare = |j: usize| {
                self.members
                    .get(j)
                    .is_some_and(|s| matches!(s.state, MemberState::Spare))
            };
            let named = m.replace_with.map(usize::from).filter(|&j| spare(j));
            let Some(s) = named.or_else(|| (0..M).find(|&j| spare(j))) else {
                return;
            };
            if let Some(r) = self.members.get_mut(s) {
                r.role = Role::Active(slot);
                r.state = MemberState::Recovering {
                    recovery_offset: 0,
                    bitmap: false,
                };
                r.replacement = true;
            }
            if let Some(o) = self.members.get_mut(i) {
                o.replace_with = None;
            }
            self.mark_all_bitmap_pages();
            self.want_sb();
        }
    }

    /// Replacement `new` is in sync (raid1_spare_active): it keeps the slot and the member it
    /// replaced is marked faulty. Returns that member.
    pub(super) fn hand_over(&mut self, new: usize) -> Option<usize> {
        if cfg!(not(feature = "replacement")) {
            return None;
        }
        let m = self.members.get_mut(new)?;
        if !m.replacement {
            return None;
        }
        m.replacement = false;
        let role = m.role;
        let old = self
            .members
            .iter()
            .enumerate()
            .position(|(j, o)| j != new && o.present() && !o.replacement && o.role == role)?;
        // Planted bug: the old member leaves without a superblock round that records it, so
        // writes it no longer receives are acknowledged while the disks still trust it.
        if planted::on(Bug::ReplaceUnrecorded) {
            if let Some(o) = self.members.get_mut(old) {
                o.state = MemberState::Faulty;
                o.role = Role::Faulty;
            }
        } else {
            self.mark_faulty(old);
        }
        self.emit(Event::Replaced {
            old: MemberId(old as u8),
            new: MemberId(new as u8),
        });
        Some(old)
    }

    /// Member `i` (which held a slot) failed or left: a replacement being rebuilt for its slot
    /// becomes that slot's ordinary recovering member (raid1_remove_disk's promotion).
    pub(super) fn promote_replacement(&mut self, role: Role) {
        if cfg!(not(feature = "replacement")) {
            return;
        }
        let Role::Active(slot) = role else { return };
        if let Some(r) = self.replacement_of(slot) {
            if let Some(m) = self.members.get_mut(r) {
                m.replacement = false;
            }
        }
    }
}
