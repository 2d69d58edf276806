//! Tags: how a command handed to the frontend names what it belongs to.
//!
//! md needs no such thing: a completed bio carries its r1bio in `bi_private` and its member in
//! the r1bio's `bios[]` slot (raid1_end_write_request, end_sync_read, super_written). A sans-IO
//! engine hands out an opaque [`Tag`] instead and decodes it in [`Array::complete`]:
//!
//! ```text
//! bits 63..56  class (what kind of command: request, sync window, superblock, ...)
//! bits 55..40  generation of the slot (a stale tag of a reused slot is refused)
//! bits 39..8   index (request slot, sync window, bitmap page)
//! bits  7..0   member
//! ```

use super::*;

/// A member I/O of a logical request (r1bio).
pub(super) const CLASS_REQ: u64 = 1;
/// A member I/O of a sync window.
pub(super) const CLASS_SYNC: u64 = 2;
/// A superblock write.
pub(super) const CLASS_SB: u64 = 3;
/// A bitmap page write.
pub(super) const CLASS_BM: u64 = 4;
/// An internal flush (before marking clean, before clearing bitmap bits).
pub(super) const CLASS_FLUSH: u64 = 5;
/// A compare of two sync buffers (check / repair).
pub(super) const CLASS_CMP: u64 = 6;
/// The flush a superblock write waits for (md writes superblocks with PREFLUSH).
pub(super) const CLASS_SB_PREFLUSH: u64 = 7;

/// Encodes a tag (layout above).
pub(super) fn tag(class: u64, generation: u16, index: u32, member: u8) -> Tag {
    Tag(class << 56 | u64::from(generation) << 40 | u64::from(index) << 8 | u64::from(member))
}

/// Decodes a tag: (class, generation, index, member).
pub(super) fn untag(t: Tag) -> (u64, u16, usize, u8) {
    let v = t.0;
    (
        v >> 56,
        ((v >> 40) & 0xFFFF) as u16,
        ((v >> 8) & 0xFFFF_FFFF) as usize,
        (v & 0xFF) as u8,
    )
}
