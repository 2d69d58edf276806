//! Per-member bad-block lists: the sectors a member must never be read from.
//!
//! md keeps a bad-block log per member device (md-format.md, the bad-block sections) and its
//! read balancing never reads a listed sector: a read that overlaps a member's bad blocks goes to
//! another member, or is cut at the first bad sector and the rest retried, and a sector listed
//! on every member that could serve it fails the read. The engine does the same from lists the
//! frontend lends ([`crate::Array::assemble_with_bad_blocks`], [`crate::Array::set_bad_blocks`]):
//! the engine never allocates and never copies them.
//!
//! Like md (raid1's write completion marks the range "made good" and `rdev_clear_badblocks`
//! drops it), a write or discard that a member completes successfully removes the written
//! sectors from that member's list, and so does a successful sync write. Removing the middle of
//! an entry splits it in two, which needs one free entry in the lent storage
//! ([`BadBlocks::new`]); without one the entry stays (still never read: conservative). The
//! engine changes only the list in memory: writing the on-disk log is the frontend's.
//!
//! Coordinates: every [`BadRange`] is **relative to the member's data area**, like every sector
//! in [`crate::MemberIo`]. md's on-disk log holds device-absolute sectors (shifted by
//! `bblog_shift`); the frontend subtracts the member's `data_offset` and drops what lies outside
//! the data area (superblock, bitmap or log space, or beyond the array's size): those sectors
//! are never read as data, so they cannot matter to the engine.

use crate::types::{MemberId, Sector};

/// Most entries one member's list may hold: md's log is one 4 KiB page of 8-byte entries.
pub const MAX_BAD_BLOCKS: usize = 512;

/// Longest entry the engine records: md's in-memory and on-disk entries hold 1 to 512 sectors
/// (BB_MAX_LEN), so one recorded entry is one entry of the on-disk log.
pub const MAX_ENTRY_SECTORS: u32 = 512;

/// One bad range of a member, in sectors relative to its data area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadRange {
    /// First bad sector.
    pub start: Sector,
    /// Number of bad sectors (at least 1).
    pub sectors: u32,
}

impl BadRange {
    /// One past the last bad sector (saturating).
    pub const fn end(&self) -> Sector {
        self.start.saturating_add(self.sectors as Sector)
    }
}

/// One member's bad-block list in storage the frontend lends: `storage[..len]` is the list
/// (validated when handed to the engine); the rest of `storage` is room for the splits that
/// clearing part of an entry needs.
#[derive(Debug)]
pub struct BadBlocks<'b> {
    storage: &'b mut [BadRange],
    len: usize,
}

impl<'b> BadBlocks<'b> {
    /// No bad blocks, and no room (a member without a log).
    pub const fn empty() -> BadBlocks<'b> {
        BadBlocks {
            storage: &mut [],
            len: 0,
        }
    }

    /// The first `len` entries of `storage` are the list. A `len` above `storage.len()` is
    /// refused when the list is handed to the engine ([`BadBlockError::Storage`]).
    pub fn new(storage: &'b mut [BadRange], len: usize) -> BadBlocks<'b> {
        BadBlocks { storage, len }
    }

    /// The list.
    pub fn as_slice(&self) -> &[BadRange] {
        self.storage.get(..self.len).unwrap_or(&[])
    }

    /// Removes `[sector, sector + sectors)` from the list (md's badblocks_clear): entries
    /// inside it go, entries that overlap an end are trimmed, an entry that covers it with
    /// sectors on both sides is split if the storage has room and kept whole otherwise.
    /// Returns whether the list changed.
    pub(crate) fn clear(&mut self, sector: Sector, sectors: u32) -> bool {
        let mut changed = false;
        let end = sector.saturating_add(Sector::from(sectors));
        let len = self.len.min(self.storage.len());
        let mut i = self
            .storage
            .get(..len)
            .map_or(0, |l| l.partition_point(|e| e.end() <= sector));
        let mut len = len;
        while i < len {
            let Some(b) = self.storage.get(i).copied() else {
                break;
            };
            if b.start >= end {
                break;
            }
            let b_end = b.end();
            if b.start >= sector && b_end <= end {
                // Wholly written: drop it.
                self.storage.copy_within(i + 1..len, i);
                len -= 1;
                changed = true;
            } else if b.start < sector && b_end > end {
                // Written in its middle: split, if there is room.
                if len < self.storage.len() {
                    self.storage.copy_within(i + 1..len, i + 2);
                    if let Some(x) = self.storage.get_mut(i) {
                        x.sectors = (sector - b.start) as u32;
                    }
                    if let Some(x) = self.storage.get_mut(i + 1) {
                        *x = BadRange {
                            start: end,
                            sectors: (b_end - end) as u32,
                        };
                    }
                    len += 1;
                    changed = true;
                }
                break;
            } else if b.start < sector {
                // Its tail was written.
                if let Some(x) = self.storage.get_mut(i) {
                    x.sectors = (sector - b.start) as u32;
                }
                changed = true;
                i += 1;
            } else {
                // Its head was written.
                if let Some(x) = self.storage.get_mut(i) {
                    *x = BadRange {
                        start: end,
                        sectors: (b_end - end) as u32,
                    };
                }
                changed = true;
                break;
            }
        }
        self.len = len;
        changed
    }
}

impl BadBlocks<'_> {
    /// Adds `[sector, sector + sectors)` to the list (md's badblocks_set, as
    /// narrow_write_error uses it after a failed write): the range and every entry it overlaps or
    /// touches become one run, stored as entries of at most [`MAX_ENTRY_SECTORS`] sectors (the
    /// longest entry md's log holds). Returns false, leaving the list unchanged, when the
    /// storage (or md's [`MAX_BAD_BLOCKS`]) has no room for the result: the caller must then
    /// fail the member, as md does when it cannot record a bad block.
    pub(crate) fn record(&mut self, sector: Sector, sectors: u32) -> bool {
        if sectors == 0 {
            return true;
        }
        let len = self.len.min(self.storage.len());
        let end = sector.saturating_add(Sector::from(sectors));
        let Some(list) = self.storage.get(..len) else {
            return false;
        };
        // Entries [i, j) overlap or touch the range.
        let i = list.partition_point(|e| e.end() < sector);
        let j = list.partition_point(|e| e.start <= end);
        let (lo, hi) = match (list.get(i), j.checked_sub(1).and_then(|k| list.get(k))) {
            (Some(first), Some(last)) if i < j => (first.start.min(sector), last.end().max(end)),
            _ => (sector, end),
        };
        let pieces = (hi - lo).div_ceil(MAX_ENTRY_SECTORS as Sector);
        let Ok(pieces) = usize::try_from(pieces) else {
            return false;
        };
        let new_len = len - (j - i) + pieces;
        if new_len > self.storage.len() || new_len > MAX_BAD_BLOCKS {
            return false;
        }
        // Move the tail to follow the new pieces, then write them.
        self.storage.copy_within(j..len, i + pieces);
        let mut at = lo;
        for e in self.storage.iter_mut().skip(i).take(pieces) {
            let n = (hi - at).min(MAX_ENTRY_SECTORS as Sector) as u32;
            *e = BadRange {
                start: at,
                sectors: n,
            };
            at += Sector::from(n);
        }
        self.len = new_len;
        true
    }

    /// Drops what lies at or beyond `end` (the array shrank: those sectors are no longer in
    /// the data area; the on-disk log is the frontend's and keeps them). Returns whether the
    /// list changed.
    pub(crate) fn truncate(&mut self, end: Sector) -> bool {
        let len = self.len.min(self.storage.len());
        let Some(list) = self.storage.get_mut(..len) else {
            return false;
        };
        let keep = list.partition_point(|e| e.start < end);
        let mut changed = keep != len;
        if let Some(last) = keep.checked_sub(1).and_then(|k| list.get_mut(k)) {
            if last.end() > end {
                last.sectors = (end - last.start) as u32;
                changed = true;
            }
        }
        self.len = keep;
        changed
    }
}

/// Why a bad-block list was refused. Each variant names the member and, where it applies, the
/// index of the offending entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadBlockError {
    /// The member id is out of range.
    NoSuchMember(MemberId),
    /// More entries than [`MAX_BAD_BLOCKS`].
    TooMany {
        /// The member.
        member: MemberId,
        /// Entries given.
        entries: usize,
    },
    /// An entry of length 0.
    ZeroLength {
        /// The member.
        member: MemberId,
        /// Index of the entry.
        index: usize,
    },
    /// An entry that ends beyond the data area (`Config::data_sectors`).
    OutOfRange {
        /// The member.
        member: MemberId,
        /// Index of the entry.
        index: usize,
        /// Its end sector.
        end: Sector,
    },
    /// An entry that starts before the previous one ends (the list must be sorted and must not
    /// overlap).
    Unsorted {
        /// The member.
        member: MemberId,
        /// Index of the entry.
        index: usize,
    },
    /// `len` is above the storage lent for the list.
    Storage {
        /// The member.
        member: MemberId,
        /// Entries said to be in the list.
        len: usize,
        /// Entries the storage holds.
        capacity: usize,
    },
    /// The member may be read from right now: its list can change only while it is not readable
    /// (absent, spare, faulty) or while the array is quiesced.
    NotQuiesced(MemberId),
}

/// Checks a list: at most [`MAX_BAD_BLOCKS`] entries, each non-empty, inside
/// `[0, data_sectors)`, sorted and non-overlapping (adjacent entries are fine).
pub(crate) fn validate(
    member: MemberId,
    bb: &BadBlocks<'_>,
    data_sectors: Sector,
) -> Result<(), BadBlockError> {
    if bb.len > bb.storage.len() {
        return Err(BadBlockError::Storage {
            member,
            len: bb.len,
            capacity: bb.storage.len(),
        });
    }
    let list = bb.as_slice();
    if list.len() > MAX_BAD_BLOCKS {
        return Err(BadBlockError::TooMany {
            member,
            entries: list.len(),
        });
    }
    let mut prev_end: Option<Sector> = None;
    for (index, e) in list.iter().enumerate() {
        if e.sectors == 0 {
            return Err(BadBlockError::ZeroLength { member, index });
        }
        let end = e.start.saturating_add(Sector::from(e.sectors));
        if end > data_sectors {
            return Err(BadBlockError::OutOfRange { member, index, end });
        }
        if prev_end.is_some_and(|p| e.start < p) {
            return Err(BadBlockError::Unsorted { member, index });
        }
        prev_end = Some(end);
    }
    Ok(())
}

/// What a member holds at the start of a range: `Good(n)` the first `n` sectors are readable,
/// `Bad(n)` the first `n` are listed bad (md's `raid1_check_read_range`: the good prefix, or the
/// length of the bad run at the start). `n` is at least 1 when `len` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Run {
    Good(u32),
    Bad(u32),
}

impl Run {
    /// Length of the run.
    pub(crate) fn len(self) -> u32 {
        match self {
            Run::Good(n) | Run::Bad(n) => n,
        }
    }

    /// The readable prefix (0 when the first sector is bad).
    pub(crate) fn good(self) -> u32 {
        match self {
            Run::Good(n) => n,
            Run::Bad(_) => 0,
        }
    }
}

/// The run at `sector` (at most `len` sectors) of a validated list.
pub(crate) fn run_at(list: &[BadRange], sector: Sector, len: u32) -> Run {
    let cap = |d: Sector| u32::try_from(d).unwrap_or(u32::MAX).min(len);
    // First entry that ends after `sector`.
    let i = list.partition_point(|e| e.end() <= sector);
    match list.get(i) {
        Some(e) if e.start <= sector => Run::Bad(cap(e.end() - sector)),
        Some(e) => Run::Good(cap(e.start - sector)),
        None => Run::Good(len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: Sector, sectors: u32) -> BadRange {
        BadRange { start, sectors }
    }

    fn list<const N: usize>(storage: &mut [BadRange; N], len: usize) -> BadBlocks<'_> {
        BadBlocks::new(storage, len)
    }

    #[test]
    fn record_without_room_changes_nothing() {
        let mut b = BadBlocks::empty();
        assert!(!b.record(10, 4));
        assert!(b.as_slice().is_empty());
        let mut s = [r(0, 1), r(0, 0)];
        let mut b = list(&mut s, 2);
        assert!(!b.record(100, 1), "full: two entries and no room");
        assert_eq!(b.as_slice(), &[r(0, 1), r(0, 0)]);
    }

    #[test]
    fn record_inserts_in_order_and_merges_what_it_touches() {
        let mut s = [r(0, 0); 8];
        s[0] = r(10, 5);
        s[1] = r(100, 10);
        let mut b = list(&mut s, 2);
        assert!(b.record(50, 3));
        assert_eq!(b.as_slice(), &[r(10, 5), r(50, 3), r(100, 10)]);
        // Touching on the left and overlapping on the right: one run.
        assert!(b.record(53, 50));
        assert_eq!(b.as_slice(), &[r(10, 5), r(50, 60)]);
        // Inside an entry: nothing changes.
        assert!(b.record(11, 2));
        assert_eq!(b.as_slice(), &[r(10, 5), r(50, 60)]);
        // Before every entry, and after every entry.
        assert!(b.record(0, 2));
        assert!(b.record(1000, 1));
        assert_eq!(b.as_slice(), &[r(0, 2), r(10, 5), r(50, 60), r(1000, 1)]);
        // Covering two entries and the gap: one run.
        assert!(b.record(5, 100));
        assert_eq!(b.as_slice(), &[r(0, 2), r(5, 105), r(1000, 1)]);
    }

    #[test]
    fn record_cuts_runs_into_entries_md_can_store() {
        let mut s = [r(0, 0); 8];
        let mut b = list(&mut s, 0);
        assert!(b.record(0, 2048));
        assert_eq!(
            b.as_slice(),
            &[r(0, 512), r(512, 512), r(1024, 512), r(1536, 512)]
        );
        // Joining a run of four full entries with one more sector needs a fifth.
        assert!(b.record(2048, 1));
        assert_eq!(b.as_slice().len(), 5);
        assert_eq!(b.as_slice()[4], r(2048, 1));
        let mut s = [r(0, 0); 3];
        let mut b = list(&mut s, 0);
        assert!(!b.record(0, 2048), "four entries do not fit in three");
        assert!(b.as_slice().is_empty());
    }
}
