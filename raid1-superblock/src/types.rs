//! Small value types of the v1 superblock: feature bits, device flags and roles, packed times,
//! the set name and UUIDs.

use core::fmt;

use crate::error::{Error, ErrorKind};

bitflags::bitflags! {
    /// `feature_map` (offset 8): optional parts of the superblock that are in use.
    ///
    /// Bits unknown to this crate are kept (`from_bits_retain`) so that a leniently parsed
    /// superblock serialises back unchanged; strict parsing refuses them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct FeatureMap: u32 {
        /// `bitmap_offset` is valid: an internal write-intent bitmap exists.
        const BITMAP_OFFSET = 0x0001;
        /// This device is being rebuilt; `recovery_offset` is its checkpoint.
        const RECOVERY_OFFSET = 0x0002;
        /// A reshape is in progress (`new_*`, `reshape_position`, `delta_disks` valid).
        const RESHAPE_ACTIVE = 0x0004;
        /// This device's bad-block log is non-empty.
        const BAD_BLOCKS = 0x0008;
        /// This device replaces the active device that has the same role.
        const REPLACEMENT = 0x0010;
        /// The reshape runs backwards.
        const RESHAPE_BACKWARDS = 0x0020;
        /// `new_offset` must be honoured (data offset changes with the reshape).
        const NEW_OFFSET = 0x0040;
        /// The recovery in progress is guided by the bitmap (re-added device).
        const RECOVERY_BITMAP = 0x0080;
        /// Clustered md.
        const CLUSTERED = 0x0100;
        /// The array has a write journal (RAID4/5/6).
        const JOURNAL = 0x0200;
        /// Partial parity log (RAID5); the `bitmap_offset` bytes hold `ppl.offset`/`ppl.size`.
        const PPL = 0x0400;
        /// Several partial parity logs (RAID5).
        const MULTIPLE_PPLS = 0x0800;
        /// `layout` is meaningful for RAID0.
        const RAID0_LAYOUT = 0x1000;
    }
}

impl FeatureMap {
    /// Every bit the Linux kernel knows (`MD_FEATURE_ALL`); any other bit makes the kernel refuse
    /// the device.
    pub const KERNEL_KNOWN: FeatureMap = FeatureMap::all();

    /// The bits a RAID1 member may carry and that this project implements:
    /// BITMAP_OFFSET, RECOVERY_OFFSET, BAD_BLOCKS, REPLACEMENT, RECOVERY_BITMAP.
    ///
    /// Refused (strict parsing returns [`ErrorKind::UnsupportedFeature`] naming the bit):
    /// RESHAPE_ACTIVE, RESHAPE_BACKWARDS and NEW_OFFSET (the kernel's raid1 never reshapes and
    /// refuses to run with a reshape position; raid_disks changes happen in place),
    /// CLUSTERED (needs the cluster infrastructure), JOURNAL, PPL, MULTIPLE_PPLS (RAID4/5/6 only),
    /// RAID0_LAYOUT (the kernel rejects it for level != 0), and every bit unknown to the kernel.
    pub const RAID1_SUPPORTED: FeatureMap = FeatureMap::BITMAP_OFFSET
        .union(FeatureMap::RECOVERY_OFFSET)
        .union(FeatureMap::BAD_BLOCKS)
        .union(FeatureMap::REPLACEMENT)
        .union(FeatureMap::RECOVERY_BITMAP);

    /// The lowest set bit outside `allowed`, if any (as a raw bit value).
    pub const fn first_outside(self, allowed: FeatureMap) -> Option<u32> {
        let rest = self.bits() & !allowed.bits();
        if rest == 0 {
            None
        } else {
            Some(rest & rest.wrapping_neg())
        }
    }

    /// Checks that only [`FeatureMap::RAID1_SUPPORTED`] bits are set; the error names the lowest
    /// other bit.
    pub const fn check_raid1(self) -> Result<(), Error> {
        match self.first_outside(FeatureMap::RAID1_SUPPORTED) {
            None => Ok(()),
            Some(bit) => Err(Error::new(
                "feature_map",
                ErrorKind::UnsupportedFeature,
                bit as i128,
            )),
        }
    }

    /// The kernel's name of a single feature bit (`"BITMAP_OFFSET"`, ...), or `None` for a bit
    /// the kernel does not know or a value that is not a single bit.
    pub const fn bit_name(bit: u32) -> Option<&'static str> {
        Some(match bit {
            0x0001 => "BITMAP_OFFSET",
            0x0002 => "RECOVERY_OFFSET",
            0x0004 => "RESHAPE_ACTIVE",
            0x0008 => "BAD_BLOCKS",
            0x0010 => "REPLACEMENT",
            0x0020 => "RESHAPE_BACKWARDS",
            0x0040 => "NEW_OFFSET",
            0x0080 => "RECOVERY_BITMAP",
            0x0100 => "CLUSTERED",
            0x0200 => "JOURNAL",
            0x0400 => "PPL",
            0x0800 => "MULTIPLE_PPLS",
            0x1000 => "RAID0_LAYOUT",
            _ => return None,
        })
    }
}

bitflags::bitflags! {
    /// `devflags` (offset 184): per-device flags. Unknown bits are kept for round trips.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct DevFlags: u8 {
        /// Avoid reading from this mirror (mdadm `--write-mostly`).
        const WRITE_MOSTLY = 0x01;
        /// Fail the device quickly on I/O errors (mdadm `--failfast`).
        const FAILFAST = 0x02;
    }
}

/// One entry of `dev_roles[]`: what the device with that `dev_number` does in the array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DevRole {
    /// Fills slot `n` (for RAID1 the mirror index, `0..raid_disks`). Raw values `0..0xFF00`.
    Active(u16),
    /// Spare, or unused/removed entry (raw `0xFFFF`).
    Spare,
    /// Failed but still attached (raw `0xFFFE`).
    Faulty,
    /// Journal device (raw `0xFFFD`; RAID4/5/6 only).
    Journal,
    /// Reserved raw values `0xFF00..=0xFFFC`: neither a slot nor a known marker. The kernel
    /// treats them like a spare; kept verbatim for round trips.
    Reserved(u16),
}

impl DevRole {
    /// Raw value of a spare/unused entry.
    pub const SPARE_RAW: u16 = 0xFFFF;
    /// Raw value of a faulty entry.
    pub const FAULTY_RAW: u16 = 0xFFFE;
    /// Raw value of a journal entry.
    pub const JOURNAL_RAW: u16 = 0xFFFD;
    /// Raw values below this are active slots (`MD_DISK_ROLE_MAX`).
    pub const SLOT_LIMIT: u16 = 0xFF00;

    /// Decodes a raw on-disk entry. Total: every `u16` maps to a role and back.
    pub const fn from_raw(raw: u16) -> DevRole {
        match raw {
            Self::SPARE_RAW => DevRole::Spare,
            Self::FAULTY_RAW => DevRole::Faulty,
            Self::JOURNAL_RAW => DevRole::Journal,
            n if n < Self::SLOT_LIMIT => DevRole::Active(n),
            n => DevRole::Reserved(n),
        }
    }

    /// The raw on-disk entry. For `Active(n)` with `n >= 0xFF00` (not producible by
    /// [`DevRole::from_raw`]) the value is written as is and reads back as another role; use
    /// [`DevRole::active`] to build slots with a check.
    pub const fn to_raw(self) -> u16 {
        match self {
            DevRole::Active(n) | DevRole::Reserved(n) => n,
            DevRole::Spare => Self::SPARE_RAW,
            DevRole::Faulty => Self::FAULTY_RAW,
            DevRole::Journal => Self::JOURNAL_RAW,
        }
    }

    /// An active slot, checked against the slot limit.
    pub const fn active(slot: u32) -> Result<DevRole, Error> {
        if slot < Self::SLOT_LIMIT as u32 {
            Ok(DevRole::Active(slot as u16))
        } else {
            Err(Error::range(
                "dev_roles",
                slot as i128,
                0,
                Self::SLOT_LIMIT as i128 - 1,
            ))
        }
    }

    /// The slot, if this role is an active slot.
    pub const fn slot(self) -> Option<u16> {
        match self {
            DevRole::Active(n) => Some(n),
            _ => None,
        }
    }
}

impl fmt::Display for DevRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DevRole::Active(n) => write!(f, "active {n}"),
            DevRole::Spare => f.write_str("spare"),
            DevRole::Faulty => f.write_str("faulty"),
            DevRole::Journal => f.write_str("journal"),
            DevRole::Reserved(n) => write!(f, "reserved {n:#06x}"),
        }
    }
}

/// A packed md time (`ctime`, `utime`): bits 0..40 seconds since the Unix epoch, bits 40..64
/// microseconds. The raw value is kept so that round trips are exact even when the microsecond
/// part holds more than 999999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MdTime(pub u64);

impl MdTime {
    /// Mask of the seconds part.
    pub const SECONDS_MASK: u64 = (1 << 40) - 1;

    /// Packs seconds and microseconds; `None` if seconds need more than 40 bits or
    /// microseconds more than 24 bits.
    pub const fn new(seconds: u64, micros: u32) -> Option<MdTime> {
        if seconds > Self::SECONDS_MASK || micros >= (1 << 24) {
            None
        } else {
            Some(MdTime(seconds | ((micros as u64) << 40)))
        }
    }

    /// Seconds-only time (what the kernel writes). Seconds are masked to 40 bits.
    pub const fn from_seconds(seconds: u64) -> MdTime {
        MdTime(seconds & Self::SECONDS_MASK)
    }

    /// Seconds since the epoch (low 40 bits; what mdadm prints).
    pub const fn seconds(self) -> u64 {
        self.0 & Self::SECONDS_MASK
    }

    /// Microseconds (high 24 bits).
    pub const fn micros(self) -> u32 {
        (self.0 >> 40) as u32
    }
}

/// `set_name` (offset 32, 32 bytes): the array name, by mdadm's convention `"homehost:name"`,
/// NUL padded. Stored raw so that bytes after the first NUL survive round trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SetName(pub [u8; 32]);

impl SetName {
    /// The name bytes up to the first NUL (all 32 bytes if there is none).
    pub fn as_bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        self.0.get(..end).unwrap_or(&[])
    }

    /// The name as UTF-8, if it is.
    pub fn as_str(&self) -> Option<&str> {
        core::str::from_utf8(self.as_bytes()).ok()
    }

    /// Splits at the first ':' into `(Some(homehost), name)`, or `(None, whole)` without ':'.
    pub fn split(&self) -> (Option<&[u8]>, &[u8]) {
        let all = self.as_bytes();
        match all.iter().position(|&b| b == b':') {
            Some(i) => (all.get(..i), all.get(i + 1..).unwrap_or(&[])),
            None => (None, all),
        }
    }

    /// The homehost part (before ':'), if any.
    pub fn homehost(&self) -> Option<&[u8]> {
        self.split().0
    }

    /// The name part (after the first ':', or everything).
    pub fn name(&self) -> &[u8] {
        self.split().1
    }

    /// Builds the name as mdadm does at create: `"homehost:name"` when a homehost is given,
    /// `name` contains no ':' and `homehost.len() + 1 + name.len() < 32`; otherwise `name`
    /// truncated to 31 bytes. The rest is NUL filled.
    pub fn build(homehost: Option<&[u8]>, name: &[u8]) -> SetName {
        let mut out = [0u8; 32];
        let mut w = Writer {
            buf: &mut out,
            len: 0,
        };
        match homehost {
            Some(h) if !name.contains(&b':') && h.len() + 1 + name.len() < 32 => {
                w.push(h);
                w.push(b":");
                w.push(name);
            }
            _ => w.push(name.get(..31).unwrap_or(name)),
        }
        SetName(out)
    }

    /// Raw bytes, exactly 32.
    pub fn from_raw(raw: [u8; 32]) -> SetName {
        SetName(raw)
    }
}

struct Writer<'a> {
    buf: &'a mut [u8; 32],
    len: usize,
}

impl Writer<'_> {
    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }
}

impl fmt::Display for SetName {
    /// Prints the bytes up to the first NUL; non-UTF-8 bytes as `\xNN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.as_bytes().utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// A 16-byte md UUID (`set_uuid`, `device_uuid`, bitmap `uuid`).
///
/// Displayed as mdadm does: four groups of 8 hex digits in byte order, separated by ':'
/// (`01234567:89abcdef:00112233:44556677`). [`Uuid::parse_mdadm`] reads that form back (also
/// accepting the separators mdadm accepts: ':', '.', ' ', '-').
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// Parses 32 hex digits, ignoring the separators ':', '.', ' ' and '-'.
    pub fn parse_mdadm(s: &str) -> Result<Uuid, Error> {
        let mut out = [0u8; 16];
        let mut nibbles = 0usize;
        for c in s.bytes() {
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                b':' | b'.' | b' ' | b'-' => continue,
                other => {
                    return Err(Error::new(
                        "uuid",
                        ErrorKind::Inconsistent { other: "hex digit" },
                        other as i128,
                    ));
                }
            };
            match out.get_mut(nibbles / 2) {
                Some(byte) => *byte = (*byte << 4) | v,
                None => return Err(Error::range("uuid", nibbles as i128 + 1, 32, 32)),
            }
            nibbles += 1;
        }
        if nibbles != 32 {
            return Err(Error::range("uuid", nibbles as i128, 32, 32));
        }
        Ok(Uuid(out))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 && i % 4 == 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
