//! The per-device bad-block log.
//!
//! The log is `bblog_size` sectors at `super_offset + bblog_offset`. Each entry is a
//! little-endian `u64`: bits 63..10 the start, bits 9..0 the length, both in units of
//! `1 << bblog_shift` sectors; the start is an absolute sector of the component device. The
//! first all-ones entry ends the list and the rest of the log is `0xFF`. Valid lists are
//! sorted, non-overlapping, with lengths 1..=512 (the kernel's limit per entry).
//!
//! The log's content is defined only while the superblock has [`FeatureMap::BAD_BLOCKS`]:
//! mdadm reserves the area at create without writing it (a fresh member holds zeros there, which
//! are invalid entries), and the kernel reads it only when the bit is set. Without the bit,
//! treat the list as empty and do not parse the area.
//!
//! [`FeatureMap::BAD_BLOCKS`]: crate::FeatureMap::BAD_BLOCKS

use crate::bytes::{put_u64, u64_at};
use crate::error::{Error, ErrorKind};

/// The entry value that ends the list (also the fill of unused space).
pub const BB_TERMINATOR: u64 = u64::MAX;

/// Longest run one entry may describe (in log units).
pub const BB_MAX_LEN: u16 = 512;

/// Largest start an entry can hold (54 bits).
pub const BB_MAX_START: u64 = (1 << 54) - 1;

/// Bytes per entry.
pub const BB_ENTRY_LEN: usize = 8;

/// One bad range, in log units (`1 << bblog_shift` sectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BadBlock {
    /// First bad unit (absolute on the component device).
    pub start: u64,
    /// Number of bad units, 1..=512.
    pub len: u16,
}

impl BadBlock {
    /// Decodes a raw entry; `None` for the terminator. The length is not validated here.
    pub const fn decode(raw: u64) -> Option<BadBlock> {
        if raw == BB_TERMINATOR {
            None
        } else {
            Some(BadBlock {
                start: raw >> 10,
                len: (raw & 0x3FF) as u16,
            })
        }
    }

    /// Encodes as `(start << 10) | len`. Errors: `len` outside 1..=512, `start` beyond 54 bits.
    pub const fn encode(self) -> Result<u64, Error> {
        if let Err(e) = self.check() {
            return Err(e);
        }
        Ok((self.start << 10) | self.len as u64)
    }

    /// What one entry must hold: `len` in 1..=512, `start` within 54 bits.
    const fn check(self) -> Result<(), Error> {
        if self.len == 0 || self.len > BB_MAX_LEN {
            return Err(Error::range(
                "badblock.len",
                self.len as i128,
                1,
                BB_MAX_LEN as i128,
            ));
        }
        if self.start > BB_MAX_START {
            return Err(Error::range(
                "badblock.start",
                self.start as i128,
                0,
                BB_MAX_START as i128,
            ));
        }
        Ok(())
    }

    /// One past the last unit.
    pub const fn end(self) -> u64 {
        self.start.saturating_add(self.len as u64)
    }

    /// First bad sector (`start << shift`, saturating).
    pub const fn start_sector(self, bblog_shift: u8) -> u64 {
        shl_sat(self.start, bblog_shift)
    }

    /// Bad sectors (`len << shift`, saturating).
    pub const fn len_sectors(self, bblog_shift: u8) -> u64 {
        shl_sat(self.len as u64, bblog_shift)
    }
}

const fn shl_sat(v: u64, shift: u8) -> u64 {
    if shift >= 64 {
        return if v == 0 { 0 } else { u64::MAX };
    }
    if v > (u64::MAX >> shift) {
        u64::MAX
    } else {
        v << shift
    }
}

/// Checks one entry against the previous one (`index` for the error).
fn check_next(prev: Option<BadBlock>, bb: BadBlock) -> Result<(), Error> {
    bb.check()?;
    if let Some(p) = prev {
        if bb.start < p.start {
            return Err(Error::new(
                "badblock",
                ErrorKind::Unsorted,
                bb.start as i128,
            ));
        }
        if bb.start < p.end() {
            return Err(Error::new("badblock", ErrorKind::Overlap, bb.start as i128));
        }
    }
    Ok(())
}

/// Checks a list of entries: lengths 1..=512, starts within 54 bits, sorted, non-overlapping.
pub fn validate(entries: &[BadBlock]) -> Result<(), Error> {
    let mut prev = None;
    for &bb in entries {
        check_next(prev, bb)?;
        prev = Some(bb);
    }
    Ok(())
}

/// A borrowed bad-block log (the raw `bblog_size * 512` bytes, or any prefix of them).
#[derive(Debug, Clone, Copy)]
pub struct BadBlockLog<'a> {
    bytes: &'a [u8],
}

impl<'a> BadBlockLog<'a> {
    /// Wraps the log bytes and validates every entry up to the terminator (or the end of the
    /// buffer): see [`validate`]. Trailing bytes that do not form a whole entry are ignored.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let log = BadBlockLog { bytes };
        let mut prev = None;
        for bb in log.iter() {
            check_next(prev, bb)?;
            prev = Some(bb);
        }
        Ok(log)
    }

    /// Wraps the log bytes without validation (for display: `mdadm --examine-badblocks` lists
    /// whatever is there). [`BadBlockLog::iter`] still stops at the terminator.
    pub const fn new_unchecked(bytes: &'a [u8]) -> Self {
        BadBlockLog { bytes }
    }

    /// The entries, in stored order, up to the terminator.
    pub fn iter(&self) -> impl Iterator<Item = BadBlock> + 'a {
        self.bytes
            .chunks_exact(BB_ENTRY_LEN)
            .map_while(|e| BadBlock::decode(u64_at(e, 0)))
    }

    /// Number of entries before the terminator.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether the log holds no entry.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Entries the log's bytes could hold (`bytes / 8`; mdadm's "N entries available").
    pub const fn capacity(&self) -> usize {
        self.bytes.len() / BB_ENTRY_LEN
    }

    /// Whether any unit of `[start, start + len)` is listed.
    pub fn overlaps(&self, start: u64, len: u64) -> bool {
        let end = start.saturating_add(len);
        self.iter().any(|bb| bb.start < end && start < bb.end())
    }
}

/// Writes `entries` (validated with [`validate`]) into `out` as the kernel does: the entries,
/// then `0xFF` to the end of `out` (the terminator included). Returns the number of bytes of
/// entries written.
///
/// Errors: an invalid list, or more entries than `out.len() / 8`
/// ([`ErrorKind::CapacityExceeded`]). A full log has no terminator, as in the kernel.
pub fn write_bad_blocks(entries: &[BadBlock], out: &mut [u8]) -> Result<usize, Error> {
    validate(entries)?;
    let capacity = out.len() / BB_ENTRY_LEN;
    if entries.len() > capacity {
        return Err(Error::new(
            "badblock",
            ErrorKind::CapacityExceeded { capacity },
            entries.len() as i128,
        ));
    }
    out.fill(0xFF);
    for (i, bb) in entries.iter().enumerate() {
        put_u64(out, i * BB_ENTRY_LEN, bb.encode()?);
    }
    Ok(entries.len() * BB_ENTRY_LEN)
}
