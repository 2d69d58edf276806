//! Internal flushes: the flush of every member that comes before marking the array clean and
//! before clearing bitmap bits, and the flush of one member before its superblock write (md
//! writes superblocks with REQ_PREFLUSH in md_super_write; md_bitmap_daemon_work and
//! md_check_recovery rely on it too).
//!
//! A member write is volatile until a flush of that member completes (unless FUA). Only writes
//! completed before the flush count: a write seen during the flush keeps the array dirty.

use super::*;

/// The internal flush is for marking the array clean (safe mode, a clean stop).
pub(super) const FLUSH_CLEAN: u8 = 1;
/// The internal flush is for clearing bitmap bits (the bitmap daemon, a clean stop).
pub(super) const FLUSH_BITMAP: u8 = 2;

/// The internal flush: one flush of every writable member, for a purpose.
#[derive(Debug)]
pub(super) struct InternalFlush {
    /// Members whose flush is not yet polled.
    pub(super) issue: u32,
    /// Flushes not yet completed (or withdrawn).
    pub(super) outstanding: u32,
    /// Flushes in flight.
    pub(super) inflight: u32,
    /// What the flush is for ([`FLUSH_CLEAN`], [`FLUSH_BITMAP`]); 0 when none runs.
    pub(super) purpose: u8,
    /// A write was admitted since the flush started, or a member's flush failed: the flush does
    /// not cover everything, so the array is not marked clean after it.
    pub(super) write_seen: bool,
}

impl InternalFlush {
    /// The state of a new array.
    pub(super) const NEW: Self = InternalFlush {
        issue: 0,
        outstanding: 0,
        inflight: 0,
        purpose: 0,
        write_seen: false,
    };
}

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// Flushes every writable member for `purpose` ([`FLUSH_CLEAN`], [`FLUSH_BITMAP`]); a flush
    /// already running takes the new purpose on.
    pub(super) fn start_internal_flush(&mut self, purpose: u8) {
        if self.flush.purpose != 0 {
            self.flush.purpose |= purpose;
            return;
        }
        let mut mask = 0u32;
        for (i, m) in self.members.iter().enumerate() {
            if m.writable() {
                mask |= bit(i);
            }
        }
        self.flush.purpose = purpose;
        self.flush.write_seen = false;
        self.flush.issue = mask;
        self.flush.outstanding = count(mask);
    }

    /// When the internal flush is over: marks the array clean and / or clears the idle bitmap
    /// bits, as its purpose says; then starts the next clean-up that is due.
    pub(super) fn pump_flush(&mut self) {
        if self.flush.purpose == 0 {
            self.maybe_start_clean();
            return;
        }
        if self.flush.outstanding != 0 {
            return;
        }
        let purpose = self.flush.purpose;
        self.flush.purpose = 0;
        if purpose & FLUSH_CLEAN != 0 {
            self.mark_clean();
        }
        if purpose & FLUSH_BITMAP != 0 && self.bitmap_clear_allowed() {
            self.clear_cold_bits();
        }
        self.maybe_start_clean();
    }

    /// A flush of member `i` (internal or before a superblock), counted in flight; it makes
    /// every write the member completed so far durable.
    pub(super) fn member_flush(&mut self, i: usize, t: Tag) -> IoCmd<M> {
        if let Some(m) = self.members.get_mut(i) {
            m.in_flight += 1;
            m.unflushed = false;
        }
        IoCmd::Member(MemberIo {
            tag: t,
            member: MemberId(i as u8),
            op: MemberOp::Flush,
            sector: 0,
            sectors: 0,
            buffer: Buffer::None,
            fua: false,
        })
    }

    /// Member `mi` answered its internal flush: `None` if none is in flight. A failed flush made
    /// nothing durable and fails the member.
    pub(super) fn end_flush(&mut self, mi: usize, ok: bool) -> Option<()> {
        if mi >= M || self.flush.inflight & bit(mi) == 0 {
            return None;
        }
        self.flush.inflight &= !bit(mi);
        self.flush.outstanding = self.flush.outstanding.saturating_sub(1);
        if !ok {
            if let Some(m) = self.members.get_mut(mi) {
                m.unflushed = true;
            }
            self.flush.write_seen = true;
            self.fail_internal(mi);
        }
        Some(())
    }

    /// Next member flush of the internal flush.
    pub(super) fn poll_flush(&mut self) -> Option<IoCmd<M>> {
        if self.flush.issue != 0 {
            let i = self.flush.issue.trailing_zeros() as usize;
            self.flush.issue &= !bit(i);
            self.flush.inflight |= bit(i);
            return Some(self.member_flush(i, tag(CLASS_FLUSH, 0, 0, i as u8)));
        }
        None
    }
}
