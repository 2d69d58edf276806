//! The v1 superblock (`struct mdp_superblock_1`): parsing, serialising, checksum.
//!
//! # What a [`Superblock`] covers
//!
//! The superblock is the 256-byte fixed part plus `max_dev` little-endian `u16` entries of
//! `dev_roles[]`, i.e. `256 + 2 * max_dev` bytes: exactly the bytes the checksum covers. Every
//! one of those bytes is represented in the struct (including `pad0`, `pad3`, the reshape
//! fields, unused `dev_roles` entries and unknown feature bits), so for any superblock that
//! parses, [`Superblock::serialize`] writes back the identical `256 + 2 * max_dev` bytes
//! (the stored `sb_csum` is rewritten with the computed checksum, so a superblock with a bad
//! checksum accepted by the lenient mode comes back with the correct one).
//!
//! Bytes after `256 + 2 * max_dev` in the 4 KiB the kernel reads are not part of the superblock:
//! the kernel neither checksums nor interprets them. [`Superblock::serialize`] does not touch
//! them; [`Superblock::serialize_padded`] fills them with `0xFF` up to the next 512-byte
//! boundary, as mdadm writes a fresh superblock.
//!
//! # Memory
//!
//! `Superblock<ROLES>` stores at most `ROLES` entries of `dev_roles` (`ROLES` defaults to
//! [`MAX_DEV`], making the struct about 4 KiB). A small `ROLES` still reads superblocks with a
//! larger `max_dev` as long as every entry at an index `>= ROLES` is spare (`0xFFFF`), which is
//! what mdadm writes (max_dev 128 for any array of up to 128 devices): those entries are
//! represented implicitly and written back as `0xFFFF`. An entry beyond the capacity that is not
//! spare gives [`ErrorKind::CapacityExceeded`].

use crate::bytes::{
    array, i32_at, put, put_i32, put_u16, put_u32, put_u64, u16_at, u32_at, u64_at,
};
use crate::error::{Error, ErrorKind};
use crate::geometry::MinorVersion;
use crate::types::{DevFlags, DevRole, FeatureMap, MdTime, SetName, Uuid};
use crate::{MAX_DEV, MAX_SECTOR, SB_FIXED_LEN, SB_MAGIC, SB_MAJOR_VERSION, SECTOR_SIZE};

/// Byte offsets of the fields of `struct mdp_superblock_1`.
pub mod offsets {
    #![allow(missing_docs)]
    pub const MAGIC: usize = 0;
    pub const MAJOR_VERSION: usize = 4;
    pub const FEATURE_MAP: usize = 8;
    pub const PAD0: usize = 12;
    pub const SET_UUID: usize = 16;
    pub const SET_NAME: usize = 32;
    pub const CTIME: usize = 64;
    pub const LEVEL: usize = 72;
    pub const LAYOUT: usize = 76;
    pub const SIZE: usize = 80;
    pub const CHUNKSIZE: usize = 88;
    pub const RAID_DISKS: usize = 92;
    pub const BITMAP_OFFSET: usize = 96;
    pub const NEW_LEVEL: usize = 100;
    pub const RESHAPE_POSITION: usize = 104;
    pub const DELTA_DISKS: usize = 112;
    pub const NEW_LAYOUT: usize = 116;
    pub const NEW_CHUNK: usize = 120;
    pub const NEW_OFFSET: usize = 124;
    pub const DATA_OFFSET: usize = 128;
    pub const DATA_SIZE: usize = 136;
    pub const SUPER_OFFSET: usize = 144;
    pub const RECOVERY_OFFSET: usize = 152;
    pub const DEV_NUMBER: usize = 160;
    pub const CNT_CORRECTED_READ: usize = 164;
    pub const DEVICE_UUID: usize = 168;
    pub const DEVFLAGS: usize = 184;
    pub const BBLOG_SHIFT: usize = 185;
    pub const BBLOG_SIZE: usize = 186;
    pub const BBLOG_OFFSET: usize = 188;
    pub const UTIME: usize = 192;
    pub const EVENTS: usize = 200;
    pub const RESYNC_OFFSET: usize = 208;
    pub const SB_CSUM: usize = 216;
    pub const MAX_DEV: usize = 220;
    pub const PAD3: usize = 224;
    pub const DEV_ROLES: usize = 256;
}

/// Which checks a parse applies. [`ParseOptions::STRICT`] follows the kernel;
/// [`ParseOptions::EXAMINE`] follows `mdadm --examine`. Bounds (magic, major version, `max_dev`
/// against the kernel limit and the buffer, role capacity) are checked in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// Refuse a checksum mismatch ([`ErrorKind::ChecksumMismatch`]).
    pub verify_checksum: bool,
    /// Refuse non-zero `pad0` or `pad3` ([`ErrorKind::NonZeroPad`]).
    pub require_zero_pads: bool,
    /// Feature bits accepted; any other set bit gives [`ErrorKind::UnsupportedFeature`].
    pub allowed_features: FeatureMap,
    /// Kernel consistency rules that need no device: `data_size >= 10`; with BAD_BLOCKS,
    /// `bblog_offset != 0` and `1 <= bblog_size <= 8`.
    pub check_consistency: bool,
}

impl ParseOptions {
    /// Kernel rules, restricted to the RAID1 feature set ([`FeatureMap::RAID1_SUPPORTED`]).
    pub const STRICT: ParseOptions = ParseOptions {
        verify_checksum: true,
        require_zero_pads: true,
        allowed_features: FeatureMap::RAID1_SUPPORTED,
        check_consistency: true,
    };

    /// `mdadm --examine` rules: magic, major version and bounds only; bad checksums, pads and
    /// every feature bit (known or not) are accepted so that they can be shown.
    pub const EXAMINE: ParseOptions = ParseOptions {
        verify_checksum: false,
        require_zero_pads: false,
        allowed_features: FeatureMap::from_bits_retain(u32::MAX),
        check_consistency: false,
    };
}

/// Stored and computed checksum of a superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumStatus {
    /// `sb_csum` as read.
    pub stored: u32,
    /// The checksum of the bytes.
    pub computed: u32,
}

impl ChecksumStatus {
    /// Whether they agree (mdadm: "correct", else "expected `<computed>`").
    pub const fn is_correct(&self) -> bool {
        self.stored == self.computed
    }
}

/// Length in bytes of a superblock with `max_dev` role entries: `256 + 2 * max_dev`.
pub const fn sb_len(max_dev: u32) -> usize {
    SB_FIXED_LEN + 2 * max_dev as usize
}

fn check_max_dev(max_dev: u32) -> Result<(), Error> {
    if max_dev as usize > MAX_DEV {
        Err(Error::range("max_dev", max_dev as i128, 0, MAX_DEV as i128))
    } else {
        Ok(())
    }
}

/// The v1 checksum's sum over `bytes`: little-endian `u32` words into a 64-bit sum, and a
/// trailing `u16` when the length is odd in half-words (md's `calc_sb_1_csum`). Sums of
/// word-aligned pieces add up to the sum of the whole.
fn word_sum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(4);
    let mut sum = 0u64;
    for w in &mut words {
        sum = sum.wrapping_add(u64::from(u32_at(w, 0)));
    }
    sum.wrapping_add(u64::from(u16_at(words.remainder(), 0)))
}

/// Computes the checksum of the raw superblock at the start of `bytes` (over
/// `256 + 2 * max_dev` bytes with `max_dev` read from offset 220, `sb_csum` taken as zero).
///
/// Errors: buffer shorter than 256 bytes or than the covered range, `max_dev > 1920`.
pub fn checksum(bytes: &[u8]) -> Result<u32, Error> {
    let fixed =
        bytes
            .get(..SB_FIXED_LEN)
            .ok_or(Error::short("superblock", SB_FIXED_LEN, bytes.len()))?;
    let max_dev = u32_at(fixed, offsets::MAX_DEV);
    check_max_dev(max_dev)?;
    let len = sb_len(max_dev);
    let covered = bytes
        .get(..len)
        .ok_or(Error::short("dev_roles", len, bytes.len()))?;
    // `sb_csum` taken as zero: its word taken out of the sum again.
    let stored = u64::from(u32_at(covered, offsets::SB_CSUM));
    Ok(fold(word_sum(covered).wrapping_sub(stored)))
}

/// The checksum's last step: the 64-bit sum folded once, truncated to 32 bits.
fn fold(sum: u64) -> u32 {
    ((sum & 0xFFFF_FFFF) + (sum >> 32)) as u32
}

/// The fields of a v1 superblock that every rewrite of one member's superblock writes alike
/// (the array's UUID, the member's number and offsets), read without checking the rest, and
/// whether the checksum matches. Any mix of an old and a new superblock of the same member (a
/// write torn by a power cut) keeps these fields and, short of the whole old or the whole new
/// one, breaks the checksum; a superblock zeroed (`mdadm --zero-superblock`), with its magic
/// wiped (`wipefs`) or overwritten has no magic. A frontend that keeps a copy of a superblock
/// tells the two apart with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedFields {
    /// `set_uuid`.
    pub set_uuid: Uuid,
    /// `dev_number`.
    pub dev_number: u32,
    /// `data_offset`, in sectors.
    pub data_offset: u64,
    /// `super_offset`, in sectors.
    pub super_offset: u64,
    /// Whether `sb_csum` is the checksum of the bytes.
    pub checksum_ok: bool,
}

impl FixedFields {
    /// The fields of the superblock at the start of `bytes`: `None` without md's magic and
    /// major version 1, or with fewer than 256 bytes.
    pub fn read(bytes: &[u8]) -> Option<FixedFields> {
        let f = bytes.get(..SB_FIXED_LEN)?;
        if u32_at(f, offsets::MAGIC) != SB_MAGIC
            || u32_at(f, offsets::MAJOR_VERSION) != SB_MAJOR_VERSION
        {
            return None;
        }
        Some(FixedFields {
            set_uuid: Uuid(array(f, offsets::SET_UUID)),
            dev_number: u32_at(f, offsets::DEV_NUMBER),
            data_offset: u64_at(f, offsets::DATA_OFFSET),
            super_offset: u64_at(f, offsets::SUPER_OFFSET),
            checksum_ok: checksum(bytes).is_ok_and(|c| c == u32_at(f, offsets::SB_CSUM)),
        })
    }
}

/// A v1 superblock with room for `ROLES` entries of `dev_roles[]` (see the module docs).
///
/// All fields are public and named as in the kernel's `md_p.h`; the struct holds every byte of
/// the `256 + 2 * max_dev` byte superblock except the constant `magic` and `major_version`.
/// Sizes and offsets are in 512-byte sectors.
///
/// With the default `ROLES`, a type annotation selects it: `let sb: Superblock = Superblock::parse(b)?;`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock<const ROLES: usize = MAX_DEV> {
    /// Optional features in use (offset 8).
    pub feature_map: FeatureMap,
    /// Reserved, must be 0 for the kernel (offset 12).
    pub pad0: u32,
    /// Array UUID, identical on all members (offset 16).
    pub set_uuid: Uuid,
    /// Array name, `"homehost:name"` by mdadm's convention (offset 32).
    pub set_name: SetName,
    /// Creation time (offset 64).
    pub ctime: MdTime,
    /// RAID level: 1 for RAID1 (offset 72).
    pub level: i32,
    /// Layout, 0 for RAID1 (offset 76).
    pub layout: u32,
    /// Used sectors of each member's data area = RAID1 array size (offset 80).
    pub size: u64,
    /// Chunk size in sectors, 0 for RAID1 (offset 88).
    pub chunksize: u32,
    /// Number of slots (offset 92).
    pub raid_disks: u32,
    /// Signed sector offset of the bitmap superblock from this superblock, valid with
    /// [`FeatureMap::BITMAP_OFFSET`]. With [`FeatureMap::PPL`] the same 4 bytes are
    /// `ppl.offset`/`ppl.size` ([`Superblock::ppl_offset`], [`Superblock::ppl_size`]) (offset 96).
    pub bitmap_offset: i32,
    /// Reshape target level (offset 100).
    pub new_level: u32,
    /// Reshape progress (offset 104).
    pub reshape_position: u64,
    /// Change in raid_disks during reshape (offset 112).
    pub delta_disks: i32,
    /// Reshape target layout (offset 116).
    pub new_layout: u32,
    /// Reshape target chunk size (offset 120).
    pub new_chunk: u32,
    /// Signed delta to data_offset for the new layout, valid with NEW_OFFSET (offset 124).
    pub new_offset: i32,
    /// First sector of this member's data area (offset 128).
    pub data_offset: u64,
    /// Sectors available for data on this member (offset 136).
    pub data_size: u64,
    /// Sector of this superblock on the device (offset 144).
    pub super_offset: u64,
    /// Rebuild checkpoint of this device, valid with RECOVERY_OFFSET; `journal_tail` for
    /// journal devices (offset 152).
    pub recovery_offset: u64,
    /// Permanent index of this device in `dev_roles` (offset 160).
    pub dev_number: u32,
    /// Count of read errors corrected by rewriting (offset 164).
    pub cnt_corrected_read: u32,
    /// Per-device UUID (offset 168).
    pub device_uuid: Uuid,
    /// Per-device flags (offset 184).
    pub devflags: DevFlags,
    /// Bad-block unit = `1 << bblog_shift` sectors (offset 185).
    pub bblog_shift: u8,
    /// Sectors reserved for the bad-block log (offset 186).
    pub bblog_size: u16,
    /// Signed sector offset of the bad-block log from this superblock (offset 188).
    pub bblog_offset: i32,
    /// Last update time (offset 192).
    pub utime: MdTime,
    /// Event counter (offset 200).
    pub events: u64,
    /// Array resync checkpoint; [`MAX_SECTOR`] = clean (offset 208).
    pub resync_offset: u64,
    /// Checksum as read; [`Superblock::serialize`] writes the computed value instead (offset 216).
    pub sb_csum: u32,
    /// Number of valid `dev_roles` entries, at most 1920 (offset 220).
    pub max_dev: u32,
    /// Reserved, must be zero for the kernel (offset 224).
    pub pad3: [u8; 32],
    /// Raw `dev_roles` entries `0..min(ROLES, max_dev)`; entries at or beyond `max_dev` are
    /// ignored, entries between `ROLES` and `max_dev` are implicitly spare (`0xFFFF`).
    /// Use [`Superblock::role`] / [`Superblock::set_role`] for checked access.
    pub dev_roles: [u16; ROLES],
}

impl<const ROLES: usize> Default for Superblock<ROLES> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const ROLES: usize> Superblock<ROLES> {
    /// An empty superblock: every field zero except `resync_offset` = [`MAX_SECTOR`],
    /// `level` = 1, and all role entries spare; `max_dev` = 0.
    pub const fn new() -> Self {
        Superblock {
            feature_map: FeatureMap::empty(),
            pad0: 0,
            set_uuid: Uuid([0; 16]),
            set_name: SetName([0; 32]),
            ctime: MdTime(0),
            level: 1,
            layout: 0,
            size: 0,
            chunksize: 0,
            raid_disks: 0,
            bitmap_offset: 0,
            new_level: 0,
            reshape_position: 0,
            delta_disks: 0,
            new_layout: 0,
            new_chunk: 0,
            new_offset: 0,
            data_offset: 0,
            data_size: 0,
            super_offset: 0,
            recovery_offset: 0,
            dev_number: 0,
            cnt_corrected_read: 0,
            device_uuid: Uuid([0; 16]),
            devflags: DevFlags::empty(),
            bblog_shift: 0,
            bblog_size: 0,
            bblog_offset: 0,
            utime: MdTime(0),
            events: 0,
            resync_offset: MAX_SECTOR,
            sb_csum: 0,
            max_dev: 0,
            pad3: [0; 32],
            dev_roles: [DevRole::SPARE_RAW; ROLES],
        }
    }

    /// The superblock of a member of a new raid1 array: `set_uuid` and `set_name`, created at
    /// `ctime` (also the first update time), `raid_disks` mirrors of `size` sectors each; level
    /// 1 with no layout or chunk size (raid1 has neither), events 0, everything else as
    /// [`Superblock::new`]. The placement (offsets, data size, bitmap, bad-block log), the
    /// member's own fields and the role table are the caller's.
    pub const fn new_raid1(
        set_uuid: Uuid,
        set_name: SetName,
        ctime: MdTime,
        raid_disks: u32,
        size: u64,
    ) -> Self {
        let mut sb = Self::new();
        sb.set_uuid = set_uuid;
        sb.set_name = set_name;
        sb.ctime = ctime;
        sb.utime = ctime;
        sb.raid_disks = raid_disks;
        sb.size = size;
        sb
    }

    /// Parses with the kernel's rules ([`ParseOptions::STRICT`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        Self::parse_with(bytes, &ParseOptions::STRICT)
    }

    /// Parses with `mdadm --examine`'s rules ([`ParseOptions::EXAMINE`]): a bad checksum, pads
    /// and unknown feature bits are accepted; check [`Superblock::checksum_status`].
    pub fn parse_for_examine(bytes: &[u8]) -> Result<Self, Error> {
        Self::parse_with(bytes, &ParseOptions::EXAMINE)
    }

    /// Parses the superblock at the start of `bytes` (which must hold at least
    /// `256 + 2 * max_dev` bytes; more is ignored) with the given checks.
    pub fn parse_with(bytes: &[u8], opts: &ParseOptions) -> Result<Self, Error> {
        let Some(f) = bytes.first_chunk::<SB_FIXED_LEN>() else {
            return Err(Error::short("superblock", SB_FIXED_LEN, bytes.len()));
        };
        let magic = u32_at(f, offsets::MAGIC);
        if magic != SB_MAGIC {
            return Err(Error::new("magic", ErrorKind::BadMagic, magic as i128));
        }
        let major = u32_at(f, offsets::MAJOR_VERSION);
        if major != SB_MAJOR_VERSION {
            return Err(Error::new(
                "major_version",
                ErrorKind::UnsupportedVersion,
                major as i128,
            ));
        }
        let max_dev = u32_at(f, offsets::MAX_DEV);
        check_max_dev(max_dev)?;
        let len = sb_len(max_dev);
        let roles =
            bytes
                .get(SB_FIXED_LEN..len)
                .ok_or(Error::short("dev_roles", len, bytes.len()))?;

        let mut sb = Self::new();
        sb.feature_map = FeatureMap::from_bits_retain(u32_at(f, offsets::FEATURE_MAP));
        sb.pad0 = u32_at(f, offsets::PAD0);
        sb.set_uuid = Uuid(array(f, offsets::SET_UUID));
        sb.set_name = SetName(array(f, offsets::SET_NAME));
        sb.ctime = MdTime(u64_at(f, offsets::CTIME));
        sb.level = i32_at(f, offsets::LEVEL);
        sb.layout = u32_at(f, offsets::LAYOUT);
        sb.size = u64_at(f, offsets::SIZE);
        sb.chunksize = u32_at(f, offsets::CHUNKSIZE);
        sb.raid_disks = u32_at(f, offsets::RAID_DISKS);
        sb.bitmap_offset = i32_at(f, offsets::BITMAP_OFFSET);
        sb.new_level = u32_at(f, offsets::NEW_LEVEL);
        sb.reshape_position = u64_at(f, offsets::RESHAPE_POSITION);
        sb.delta_disks = i32_at(f, offsets::DELTA_DISKS);
        sb.new_layout = u32_at(f, offsets::NEW_LAYOUT);
        sb.new_chunk = u32_at(f, offsets::NEW_CHUNK);
        sb.new_offset = i32_at(f, offsets::NEW_OFFSET);
        sb.data_offset = u64_at(f, offsets::DATA_OFFSET);
        sb.data_size = u64_at(f, offsets::DATA_SIZE);
        sb.super_offset = u64_at(f, offsets::SUPER_OFFSET);
        sb.recovery_offset = u64_at(f, offsets::RECOVERY_OFFSET);
        sb.dev_number = u32_at(f, offsets::DEV_NUMBER);
        sb.cnt_corrected_read = u32_at(f, offsets::CNT_CORRECTED_READ);
        sb.device_uuid = Uuid(array(f, offsets::DEVICE_UUID));
        sb.devflags = DevFlags::from_bits_retain(array::<1>(f, offsets::DEVFLAGS)[0]);
        sb.bblog_shift = array::<1>(f, offsets::BBLOG_SHIFT)[0];
        sb.bblog_size = u16_at(f, offsets::BBLOG_SIZE);
        sb.bblog_offset = i32_at(f, offsets::BBLOG_OFFSET);
        sb.utime = MdTime(u64_at(f, offsets::UTIME));
        sb.events = u64_at(f, offsets::EVENTS);
        sb.resync_offset = u64_at(f, offsets::RESYNC_OFFSET);
        sb.sb_csum = u32_at(f, offsets::SB_CSUM);
        sb.max_dev = max_dev;
        sb.pad3 = array(f, offsets::PAD3);

        for (i, pair) in roles.chunks_exact(2).enumerate() {
            let raw = u16_at(pair, 0);
            match sb.dev_roles.get_mut(i) {
                Some(slot) => *slot = raw,
                None if raw == DevRole::SPARE_RAW => {}
                None => {
                    return Err(Error::new(
                        "dev_roles",
                        ErrorKind::CapacityExceeded { capacity: ROLES },
                        i as i128,
                    ));
                }
            }
        }

        if opts.verify_checksum {
            let computed = checksum(bytes)?;
            if computed != sb.sb_csum {
                return Err(Error::new(
                    "sb_csum",
                    ErrorKind::ChecksumMismatch { computed },
                    sb.sb_csum as i128,
                ));
            }
        }
        if opts.require_zero_pads {
            sb.check_pads()?;
        }
        if let Some(bit) = sb.feature_map.first_outside(opts.allowed_features) {
            return Err(Error::new(
                "feature_map",
                ErrorKind::UnsupportedFeature,
                bit as i128,
            ));
        }
        if opts.check_consistency {
            sb.check_consistency()?;
        }
        Ok(sb)
    }

    /// `pad0` and `pad3` must be zero (kernel rule).
    pub fn check_pads(&self) -> Result<(), Error> {
        if self.pad0 != 0 {
            return Err(Error::new(
                "pad0",
                ErrorKind::NonZeroPad {
                    offset: offsets::PAD0,
                },
                self.pad0 as i128,
            ));
        }
        if let Some((i, &b)) = self.pad3.iter().enumerate().find(|(_, b)| **b != 0) {
            return Err(Error::new(
                "pad3",
                ErrorKind::NonZeroPad {
                    offset: offsets::PAD3 + i,
                },
                b as i128,
            ));
        }
        Ok(())
    }

    /// Kernel rules that need no knowledge of the device: `data_size >= 10`; with BAD_BLOCKS a
    /// log must be reserved (`bblog_offset != 0`, `1 <= bblog_size <= 8`).
    pub fn check_consistency(&self) -> Result<(), Error> {
        if self.data_size < 10 {
            return Err(Error::range(
                "data_size",
                self.data_size as i128,
                10,
                u64::MAX as i128,
            ));
        }
        if self.feature_map.contains(FeatureMap::BAD_BLOCKS) {
            if self.bblog_offset == 0 {
                return Err(Error::inconsistent(
                    "bblog_offset",
                    0,
                    "feature_map BAD_BLOCKS",
                ));
            }
            if self.bblog_size == 0 || self.bblog_size > 8 {
                return Err(Error::range("bblog_size", self.bblog_size as i128, 1, 8));
            }
        }
        Ok(())
    }

    /// Checks the superblock against a device of `dev_sectors` sectors: `super_offset` must be
    /// where its minor version puts it (see [`MinorVersion::from_super_offset`]), and the data
    /// area `[data_offset, data_offset + data_size)` must lie on the device and not overlap
    /// the superblock. Returns the minor version.
    pub fn check_placement(&self, dev_sectors: u64) -> Result<MinorVersion, Error> {
        let minor = MinorVersion::from_super_offset(self.super_offset);
        let expected = minor.superblock_sector(dev_sectors)?;
        if expected != self.super_offset {
            return Err(Error::inconsistent(
                "super_offset",
                self.super_offset as i128,
                "device size",
            ));
        }
        let data_end = self
            .data_offset
            .checked_add(self.data_size)
            .ok_or(Error::inconsistent(
                "data_size",
                self.data_size as i128,
                "data_offset",
            ))?;
        if data_end > dev_sectors {
            return Err(Error::inconsistent(
                "data_size",
                self.data_size as i128,
                "device size",
            ));
        }
        let sb_sectors = (self.serialized_len() as u64).div_ceil(SECTOR_SIZE as u64);
        let sb_end = self.super_offset.saturating_add(sb_sectors);
        if self.data_offset < sb_end && self.super_offset < data_end {
            return Err(Error::inconsistent(
                "data_offset",
                self.data_offset as i128,
                "super_offset",
            ));
        }
        Ok(minor)
    }

    /// Length of the superblock in bytes: `256 + 2 * max_dev` (what `serialize` writes).
    pub const fn serialized_len(&self) -> usize {
        sb_len(self.max_dev)
    }

    /// `serialized_len` rounded up to 512 bytes: what mdadm writes (and the kernel on 512-byte
    /// devices).
    pub const fn padded_len(&self) -> usize {
        self.serialized_len().next_multiple_of(SECTOR_SIZE)
    }

    /// Writes the `256 + 2 * max_dev` bytes of the superblock at the start of `out`, with the
    /// computed checksum, and returns that length. Bytes of `out` after it are untouched.
    ///
    /// Errors: `max_dev > 1920`, `out` too short.
    pub fn serialize(&self, out: &mut [u8]) -> Result<usize, Error> {
        check_max_dev(self.max_dev)?;
        let len = self.serialized_len();
        let got = out.len();
        let out = out.get_mut(..len).ok_or(Error::short("output", len, got))?;
        if let Some(fixed) = out.first_chunk_mut::<SB_FIXED_LEN>() {
            self.fill_fixed(fixed, 0);
        }
        for i in 0..self.max_dev as usize {
            put_u16(out, offsets::DEV_ROLES + 2 * i, self.raw_role(i));
        }
        let csum = checksum(out)?;
        put_u32(out, offsets::SB_CSUM, csum);
        Ok(len)
    }

    /// Like [`Superblock::serialize`], then fills the rest up to the next 512-byte boundary
    /// with `0xFF` (as mdadm does); returns [`Superblock::padded_len`].
    pub fn serialize_padded(&self, out: &mut [u8]) -> Result<usize, Error> {
        let padded = self.padded_len();
        if out.len() < padded {
            return Err(Error::short("output", padded, out.len()));
        }
        let len = self.serialize(out)?;
        if let Some(tail) = out.get_mut(len..padded) {
            tail.fill(0xFF);
        }
        Ok(padded)
    }

    /// The checksum of the superblock as [`Superblock::serialize`] would write it, computed
    /// from the fields without a buffer. Errors if `max_dev > 1920`.
    pub fn compute_checksum(&self) -> Result<u32, Error> {
        check_max_dev(self.max_dev)?;
        let mut sum = word_sum(&self.fixed_bytes(0));
        // The roles through a small buffer, 32 at a time (an even count, so whole words but
        // for the last piece's odd tail, as in the serialized superblock).
        let mut buf = [0u8; 64];
        let roles = self.max_dev as usize;
        for first in (0..roles).step_by(32) {
            let n = (roles - first).min(32);
            for (k, pair) in buf.chunks_exact_mut(2).take(n).enumerate() {
                pair.copy_from_slice(&self.raw_role(first + k).to_le_bytes());
            }
            sum = sum.wrapping_add(word_sum(buf.get(..2 * n).unwrap_or(&[])));
        }
        Ok(fold(sum))
    }

    /// Stored versus computed checksum (for `--examine`'s "correct" / "expected").
    pub fn checksum_status(&self) -> Result<ChecksumStatus, Error> {
        Ok(ChecksumStatus {
            stored: self.sb_csum,
            computed: self.compute_checksum()?,
        })
    }

    /// Sets `sb_csum` to the computed checksum.
    pub fn update_checksum(&mut self) -> Result<(), Error> {
        self.sb_csum = self.compute_checksum()?;
        Ok(())
    }

    /// The 256-byte fixed part with `sb_csum` = `csum`.
    fn fixed_bytes(&self, csum: u32) -> [u8; SB_FIXED_LEN] {
        let mut f = [0u8; SB_FIXED_LEN];
        self.fill_fixed(&mut f, csum);
        f
    }

    /// Overwrites `f` with the 256-byte fixed part, `sb_csum` = `csum` (`serialize` writes it
    /// in place: building it aside and copying it in cost more code than the fields).
    fn fill_fixed(&self, f: &mut [u8; SB_FIXED_LEN], csum: u32) {
        f.fill(0);
        put_u32(f, offsets::MAGIC, SB_MAGIC);
        put_u32(f, offsets::MAJOR_VERSION, SB_MAJOR_VERSION);
        put_u32(f, offsets::FEATURE_MAP, self.feature_map.bits());
        put_u32(f, offsets::PAD0, self.pad0);
        put(f, offsets::SET_UUID, &self.set_uuid.0);
        put(f, offsets::SET_NAME, &self.set_name.0);
        put_u64(f, offsets::CTIME, self.ctime.0);
        put_i32(f, offsets::LEVEL, self.level);
        put_u32(f, offsets::LAYOUT, self.layout);
        put_u64(f, offsets::SIZE, self.size);
        put_u32(f, offsets::CHUNKSIZE, self.chunksize);
        put_u32(f, offsets::RAID_DISKS, self.raid_disks);
        put_i32(f, offsets::BITMAP_OFFSET, self.bitmap_offset);
        put_u32(f, offsets::NEW_LEVEL, self.new_level);
        put_u64(f, offsets::RESHAPE_POSITION, self.reshape_position);
        put_i32(f, offsets::DELTA_DISKS, self.delta_disks);
        put_u32(f, offsets::NEW_LAYOUT, self.new_layout);
        put_u32(f, offsets::NEW_CHUNK, self.new_chunk);
        put_i32(f, offsets::NEW_OFFSET, self.new_offset);
        put_u64(f, offsets::DATA_OFFSET, self.data_offset);
        put_u64(f, offsets::DATA_SIZE, self.data_size);
        put_u64(f, offsets::SUPER_OFFSET, self.super_offset);
        put_u64(f, offsets::RECOVERY_OFFSET, self.recovery_offset);
        put_u32(f, offsets::DEV_NUMBER, self.dev_number);
        put_u32(f, offsets::CNT_CORRECTED_READ, self.cnt_corrected_read);
        put(f, offsets::DEVICE_UUID, &self.device_uuid.0);
        put(
            f,
            offsets::DEVFLAGS,
            &[self.devflags.bits(), self.bblog_shift],
        );
        put_u16(f, offsets::BBLOG_SIZE, self.bblog_size);
        put_i32(f, offsets::BBLOG_OFFSET, self.bblog_offset);
        put_u64(f, offsets::UTIME, self.utime.0);
        put_u64(f, offsets::EVENTS, self.events);
        put_u64(f, offsets::RESYNC_OFFSET, self.resync_offset);
        put_u32(f, offsets::SB_CSUM, csum);
        put_u32(f, offsets::MAX_DEV, self.max_dev);
        put(f, offsets::PAD3, &self.pad3);
    }

    fn raw_role(&self, i: usize) -> u16 {
        self.dev_roles.get(i).copied().unwrap_or(DevRole::SPARE_RAW)
    }

    /// The role recorded for `dev_number` = `index`, or `None` if `index >= max_dev`.
    pub fn role(&self, index: u32) -> Option<DevRole> {
        (index < self.max_dev).then(|| DevRole::from_raw(self.raw_role(index as usize)))
    }

    /// Records `role` for `dev_number` = `index`. Errors: `index >= max_dev`
    /// ([`ErrorKind::IndexOutOfBounds`]), or `index >= ROLES` with a role other than spare
    /// ([`ErrorKind::CapacityExceeded`]).
    pub fn set_role(&mut self, index: u32, role: DevRole) -> Result<(), Error> {
        if index >= self.max_dev {
            return Err(Error::new(
                "dev_roles",
                ErrorKind::IndexOutOfBounds {
                    len: self.max_dev as u64,
                },
                index as i128,
            ));
        }
        match self.dev_roles.get_mut(index as usize) {
            Some(slot) => *slot = role.to_raw(),
            None if role == DevRole::Spare => {}
            None => {
                return Err(Error::new(
                    "dev_roles",
                    ErrorKind::CapacityExceeded { capacity: ROLES },
                    index as i128,
                ));
            }
        }
        Ok(())
    }

    /// Changes `max_dev` (at most 1920). Entries at or beyond the smaller of the old and new
    /// value are reset to spare, so growing exposes only spare entries. Errors if
    /// `max_dev > 1920`.
    pub fn set_max_dev(&mut self, max_dev: u32) -> Result<(), Error> {
        check_max_dev(max_dev)?;
        let old = self.max_dev as usize;
        for slot in self.dev_roles.iter_mut().skip(old.min(max_dev as usize)) {
            *slot = DevRole::SPARE_RAW;
        }
        self.max_dev = max_dev;
        Ok(())
    }

    /// The roles of `dev_number` `0..max_dev`, in order.
    pub fn roles(&self) -> impl Iterator<Item = DevRole> + '_ {
        (0..self.max_dev as usize).map(|i| DevRole::from_raw(self.raw_role(i)))
    }

    /// This device's own role: `dev_roles[dev_number]`, spare if `dev_number >= max_dev`
    /// (kernel rule).
    pub fn this_role(&self) -> DevRole {
        self.role(self.dev_number).unwrap_or(DevRole::Spare)
    }

    /// How many devices this superblock lists in `slot` (2 while a replacement runs).
    pub fn devices_in_slot(&self, slot: u16) -> usize {
        self.roles().filter(|r| *r == DevRole::Active(slot)).count()
    }

    /// `resync_offset == MaxSector`: the array was clean when this superblock was written.
    pub const fn is_clean(&self) -> bool {
        self.resync_offset == MAX_SECTOR
    }

    /// The metadata minor version implied by `super_offset` (mdadm's rule).
    pub const fn minor_version(&self) -> MinorVersion {
        MinorVersion::from_super_offset(self.super_offset)
    }

    /// Absolute sector of the bitmap superblock, if BITMAP_OFFSET is set (and the sum does
    /// not leave the u64 range).
    pub fn bitmap_sector(&self) -> Option<u64> {
        if self.feature_map.contains(FeatureMap::BITMAP_OFFSET) {
            self.super_offset
                .checked_add_signed(i64::from(self.bitmap_offset))
        } else {
            None
        }
    }

    /// Absolute sector of the bad-block log, if one is reserved (`bblog_offset != 0` and
    /// `bblog_size != 0`).
    pub fn bblog_sector(&self) -> Option<u64> {
        if self.bblog_offset != 0 && self.bblog_size != 0 {
            self.super_offset
                .checked_add_signed(i64::from(self.bblog_offset))
        } else {
            None
        }
    }

    /// `ppl.offset` (signed sectors from the superblock) for PPL arrays: the low 16 bits of the
    /// `bitmap_offset` storage.
    pub const fn ppl_offset(&self) -> i16 {
        self.bitmap_offset as i16
    }

    /// `ppl.size` (sectors) for PPL arrays: the high 16 bits of the `bitmap_offset` storage.
    pub const fn ppl_size(&self) -> u16 {
        (self.bitmap_offset as u32 >> 16) as u16
    }
}
