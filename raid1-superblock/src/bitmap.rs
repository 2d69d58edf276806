//! The internal write-intent bitmap: its 256-byte superblock (`bitmap_super_t`) and the bit
//! array that follows it.
//!
//! Only version 4 (little-endian bit order) is supported for use; [`BitmapSuperblock::parse`]
//! refuses versions 3, 5 and 6 with [`ErrorKind::UnsupportedVersion`], while
//! [`BitmapSuperblock::parse_for_examine`] reads the header of any version so that it can be
//! shown.

use crate::bytes::{array, put, put_u32, put_u64, u32_at, u64_at};
use crate::error::{Error, ErrorKind};
use crate::geometry::bitmap_chunks;
use crate::types::Uuid;

/// Magic of the bitmap superblock: bytes `"bitm"`.
pub const BITMAP_MAGIC: u32 = 0x6D74_6962;

/// The bitmap version this crate implements (little-endian bit order).
pub const BITMAP_VERSION: u32 = 4;

/// Size of the bitmap superblock in bytes; the bit array starts right after it.
pub const BITMAP_SB_LEN: usize = 256;

/// Largest `write_behind` the kernel accepts.
pub const MAX_WRITE_BEHIND: u32 = 16383;

/// mdadm's default `daemon_sleep`, seconds (its `--delay`, DEFAULT_BITMAP_DELAY).
pub const MDADM_DEFAULT_DELAY: u32 = 5;

/// Byte offsets of the fields of `bitmap_super_t`.
pub mod offsets {
    #![allow(missing_docs)]
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const UUID: usize = 8;
    pub const EVENTS: usize = 24;
    pub const EVENTS_CLEARED: usize = 32;
    pub const SYNC_SIZE: usize = 40;
    pub const STATE: usize = 48;
    pub const CHUNKSIZE: usize = 52;
    pub const DAEMON_SLEEP: usize = 56;
    pub const WRITE_BEHIND: usize = 60;
    pub const SECTORS_RESERVED: usize = 64;
    pub const NODES: usize = 68;
    pub const CLUSTER_NAME: usize = 72;
    pub const PAD: usize = 136;
}

bitflags::bitflags! {
    /// `state` of the bitmap superblock. Unknown bits are kept for round trips.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct BitmapState: u32 {
        /// The bitmap is out of date: a full resync is needed.
        const STALE = 1 << 1;
        /// A write of the bitmap failed (never left set on disk by the kernel).
        const WRITE_ERROR = 1 << 2;
        /// Host-endian bit order (version 3 only).
        const HOSTENDIAN = 1 << 15;
    }
}

/// The bitmap superblock, all 256 bytes (including the clustered fields and the padding, so that
/// round trips are exact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapSuperblock {
    /// Format version (4 for the standard bitmap).
    pub version: u32,
    /// Must equal the array's `set_uuid`.
    pub uuid: Uuid,
    /// Array event count when this header was last written.
    pub events: u64,
    /// Event count when bits were last cleared.
    pub events_cleared: u64,
    /// Sectors covered (the RAID1 array size).
    pub sync_size: u64,
    /// State bits.
    pub state: BitmapState,
    /// Bytes of data per bit: a power of two, at least 512.
    pub chunksize: u32,
    /// Seconds between bitmap daemon sweeps (at least 1).
    pub daemon_sleep: u32,
    /// Maximum outstanding write-behind writes (0 = off, at most 16383).
    pub write_behind: u32,
    /// Sectors reserved for the bitmap (0 from mdadm for version 4).
    pub sectors_reserved: u32,
    /// Clustered md: number of node slots.
    pub nodes: u32,
    /// Clustered md: cluster name.
    pub cluster_name: [u8; 64],
    /// Reserved bytes 136..256 (zero in practice; not checked by the kernel).
    pub pad: [u8; 120],
}

impl BitmapSuperblock {
    /// A version-4 header with mdadm's defaults (daemon_sleep 5 s, chunk 64 MiB) for `uuid`
    /// covering `sync_size` sectors; events 0.
    pub const fn new(uuid: Uuid, sync_size: u64) -> Self {
        BitmapSuperblock {
            version: BITMAP_VERSION,
            uuid,
            events: 0,
            events_cleared: 0,
            sync_size,
            state: BitmapState::empty(),
            chunksize: 64 << 20,
            daemon_sleep: MDADM_DEFAULT_DELAY,
            write_behind: 0,
            sectors_reserved: 0,
            nodes: 0,
            cluster_name: [0; 64],
            pad: [0; 120],
        }
    }

    /// Parses and validates like the kernel: magic, version 4, chunksize a power of two
    /// `>= 512`, `daemon_sleep >= 1`, `write_behind <= 16383`. (The UUID is checked against the
    /// array separately: [`BitmapSuperblock::check_uuid`].)
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let sb = Self::parse_for_examine(bytes)?;
        sb.validate()?;
        Ok(sb)
    }

    /// Reads the header with only the magic checked (any version; nothing else validated), for
    /// display.
    pub fn parse_for_examine(bytes: &[u8]) -> Result<Self, Error> {
        let b =
            bytes
                .get(..BITMAP_SB_LEN)
                .ok_or(Error::short("bitmap", BITMAP_SB_LEN, bytes.len()))?;
        let magic = u32_at(b, offsets::MAGIC);
        if magic != BITMAP_MAGIC {
            return Err(Error::new(
                "bitmap.magic",
                ErrorKind::BadMagic,
                magic as i128,
            ));
        }
        Ok(BitmapSuperblock {
            version: u32_at(b, offsets::VERSION),
            uuid: Uuid(array(b, offsets::UUID)),
            events: u64_at(b, offsets::EVENTS),
            events_cleared: u64_at(b, offsets::EVENTS_CLEARED),
            sync_size: u64_at(b, offsets::SYNC_SIZE),
            state: BitmapState::from_bits_retain(u32_at(b, offsets::STATE)),
            chunksize: u32_at(b, offsets::CHUNKSIZE),
            daemon_sleep: u32_at(b, offsets::DAEMON_SLEEP),
            write_behind: u32_at(b, offsets::WRITE_BEHIND),
            sectors_reserved: u32_at(b, offsets::SECTORS_RESERVED),
            nodes: u32_at(b, offsets::NODES),
            cluster_name: array(b, offsets::CLUSTER_NAME),
            pad: array(b, offsets::PAD),
        })
    }

    /// The kernel's checks (see [`BitmapSuperblock::parse`]).
    pub fn validate(&self) -> Result<(), Error> {
        if self.version != BITMAP_VERSION {
            return Err(Error::new(
                "bitmap.version",
                ErrorKind::UnsupportedVersion,
                self.version as i128,
            ));
        }
        if self.chunksize < 512 || !self.chunksize.is_power_of_two() {
            return Err(Error::new(
                "bitmap.chunksize",
                ErrorKind::Inconsistent {
                    other: "power of two >= 512",
                },
                self.chunksize as i128,
            ));
        }
        if self.daemon_sleep < 1 {
            return Err(Error::range(
                "bitmap.daemon_sleep",
                self.daemon_sleep as i128,
                1,
                u32::MAX as i128,
            ));
        }
        if self.write_behind > MAX_WRITE_BEHIND {
            return Err(Error::range(
                "bitmap.write_behind",
                self.write_behind as i128,
                0,
                MAX_WRITE_BEHIND as i128,
            ));
        }
        Ok(())
    }

    /// The bitmap must belong to the array: `uuid == set_uuid`.
    pub fn check_uuid(&self, set_uuid: &Uuid) -> Result<(), Error> {
        if self.uuid == *set_uuid {
            Ok(())
        } else {
            Err(Error::inconsistent("bitmap.uuid", 0, "set_uuid"))
        }
    }

    /// Writes the 256-byte header at the start of `out`; returns 256.
    pub fn serialize(&self, out: &mut [u8]) -> Result<usize, Error> {
        let got = out.len();
        let b = out
            .get_mut(..BITMAP_SB_LEN)
            .ok_or(Error::short("output", BITMAP_SB_LEN, got))?;
        put_u32(b, offsets::MAGIC, BITMAP_MAGIC);
        put_u32(b, offsets::VERSION, self.version);
        put(b, offsets::UUID, &self.uuid.0);
        put_u64(b, offsets::EVENTS, self.events);
        put_u64(b, offsets::EVENTS_CLEARED, self.events_cleared);
        put_u64(b, offsets::SYNC_SIZE, self.sync_size);
        put_u32(b, offsets::STATE, self.state.bits());
        put_u32(b, offsets::CHUNKSIZE, self.chunksize);
        put_u32(b, offsets::DAEMON_SLEEP, self.daemon_sleep);
        put_u32(b, offsets::WRITE_BEHIND, self.write_behind);
        put_u32(b, offsets::SECTORS_RESERVED, self.sectors_reserved);
        put_u32(b, offsets::NODES, self.nodes);
        put(b, offsets::CLUSTER_NAME, &self.cluster_name);
        put(b, offsets::PAD, &self.pad);
        Ok(BITMAP_SB_LEN)
    }

    /// Number of bits: `ceil(sync_size * 512 / chunksize)` (0 if chunksize is 0).
    pub const fn chunks(&self) -> u64 {
        bitmap_chunks(self.sync_size, self.chunksize)
    }

    /// Bytes of the bit array: `ceil(chunks / 8)`.
    pub const fn bits_len(&self) -> u64 {
        self.chunks().div_ceil(8)
    }

    /// Sectors of data one bit covers (`chunksize / 512`).
    pub const fn chunk_sectors(&self) -> u64 {
        self.chunksize as u64 / 512
    }

    /// The chunk that covers array sector `sector`, or `None` if chunksize < 512.
    pub const fn chunk_of(&self, sector: u64) -> Option<u64> {
        match self.chunk_sectors() {
            0 => None,
            s => Some(sector / s),
        }
    }
}

fn bit_index(k: u64, chunks: u64, field: &'static str) -> Result<(usize, u8), Error> {
    if k >= chunks {
        return Err(Error::new(
            field,
            ErrorKind::IndexOutOfBounds { len: chunks },
            k as i128,
        ));
    }
    // k < chunks and the slice holds ceil(chunks / 8) bytes, so k / 8 fits usize.
    Ok(((k / 8) as usize, 1u8 << (k % 8)))
}

fn check_len(len: usize, chunks: u64) -> Result<(), Error> {
    let needed = chunks.div_ceil(8);
    if (len as u64) < needed {
        return Err(Error::short(
            "bitmap bits",
            usize::try_from(needed).unwrap_or(usize::MAX),
            len,
        ));
    }
    Ok(())
}

fn count_ones(bytes: &[u8], chunks: u64) -> u64 {
    let full = (chunks / 8) as usize;
    let mut n: u64 = bytes
        .iter()
        .take(full)
        .map(|b| u64::from(b.count_ones()))
        .sum();
    let rest = (chunks % 8) as u32;
    if rest != 0 {
        if let Some(b) = bytes.get(full) {
            n += u64::from((b & ((1u8 << rest) - 1)).count_ones());
        }
    }
    n
}

/// A read-only view of a version-4 bit array: bit `k` is bit `k % 8` (LSB first) of byte `k / 8`.
#[derive(Debug, Clone, Copy)]
pub struct BitmapBits<'a> {
    bytes: &'a [u8],
    chunks: u64,
}

impl<'a> BitmapBits<'a> {
    /// A view of `chunks` bits in `bytes` (which must hold at least `ceil(chunks / 8)` bytes;
    /// more is ignored).
    pub fn new(bytes: &'a [u8], chunks: u64) -> Result<Self, Error> {
        check_len(bytes.len(), chunks)?;
        Ok(BitmapBits { bytes, chunks })
    }

    /// Number of bits.
    pub const fn chunks(&self) -> u64 {
        self.chunks
    }

    /// Whether chunk `k` is dirty.
    pub fn get(&self, k: u64) -> Result<bool, Error> {
        let (i, m) = bit_index(k, self.chunks, "bitmap bit")?;
        Ok(self.bytes.get(i).is_some_and(|b| b & m != 0))
    }

    /// Number of dirty chunks (bits beyond `chunks` in the last byte are ignored).
    pub fn count_dirty(&self) -> u64 {
        count_ones(self.bytes, self.chunks)
    }

    /// The dirty chunk numbers, ascending.
    pub fn dirty(&self) -> impl Iterator<Item = u64> + 'a {
        let bytes = self.bytes;
        let chunks = self.chunks;
        bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b != 0)
            .flat_map(|(i, &b)| {
                (0..8u64)
                    .filter(move |j| b & (1 << j) != 0)
                    .map(move |j| i as u64 * 8 + j)
            })
            .take_while(move |k| *k < chunks)
    }
}

/// A mutable view of a version-4 bit array.
#[derive(Debug)]
pub struct BitmapBitsMut<'a> {
    bytes: &'a mut [u8],
    chunks: u64,
}

impl<'a> BitmapBitsMut<'a> {
    /// A view of `chunks` bits in `bytes` (at least `ceil(chunks / 8)` bytes).
    pub fn new(bytes: &'a mut [u8], chunks: u64) -> Result<Self, Error> {
        check_len(bytes.len(), chunks)?;
        Ok(BitmapBitsMut { bytes, chunks })
    }

    /// Number of bits.
    pub const fn chunks(&self) -> u64 {
        self.chunks
    }

    /// Whether chunk `k` is dirty.
    pub fn get(&self, k: u64) -> Result<bool, Error> {
        self.as_ref().get(k)
    }

    /// Marks chunk `k` dirty.
    pub fn set(&mut self, k: u64) -> Result<(), Error> {
        let (i, m) = bit_index(k, self.chunks, "bitmap bit")?;
        if let Some(b) = self.bytes.get_mut(i) {
            *b |= m;
        }
        Ok(())
    }

    /// Marks chunk `k` clean.
    pub fn clear(&mut self, k: u64) -> Result<(), Error> {
        let (i, m) = bit_index(k, self.chunks, "bitmap bit")?;
        if let Some(b) = self.bytes.get_mut(i) {
            *b &= !m;
        }
        Ok(())
    }

    /// Sets every chunk dirty (`true`, what mdadm writes at create) or clean; bytes of the
    /// covered range are filled whole, as mdadm does.
    pub fn fill(&mut self, dirty: bool) {
        let n = usize::try_from(self.chunks.div_ceil(8)).unwrap_or(usize::MAX);
        for b in self.bytes.iter_mut().take(n) {
            *b = if dirty { 0xFF } else { 0 };
        }
    }

    /// Number of dirty chunks.
    pub fn count_dirty(&self) -> u64 {
        count_ones(self.bytes, self.chunks)
    }

    /// A read-only view.
    pub fn as_ref(&self) -> BitmapBits<'_> {
        BitmapBits {
            bytes: self.bytes,
            chunks: self.chunks,
        }
    }
}
