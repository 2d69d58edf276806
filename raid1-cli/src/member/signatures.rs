//! What is on a device: md superblocks, file systems, swap, LUKS, LVM and partition tables.

use std::fmt;
use std::io;

use super::{Device, ReadAt, md1_sector};
use crate::text::uuid_text;

/// Something found on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// An md v1.x superblock (magic, major version 1 and a `super_offset` naming its own
    /// location; the checksum is not required).
    Md1 {
        /// Minor version: 0, 1 or 2.
        minor: u8,
        /// Array UUID in mdadm's notation.
        uuid: String,
        /// The array name (`set_name`).
        name: String,
    },
    /// An md 0.90 superblock (magic with major version 0, 64 KiB below the 64 KiB-aligned end).
    Md090,
    /// An ext2, ext3 or ext4 file system.
    Ext {
        /// `"ext2"`, `"ext3"` or `"ext4"`, from the feature flags.
        kind: &'static str,
        /// The volume label (may be empty).
        label: String,
    },
    /// An XFS file system.
    Xfs,
    /// A btrfs file system.
    Btrfs,
    /// A FAT12/16/32 (vfat) file system.
    Fat,
    /// An exFAT file system.
    Exfat,
    /// An NTFS file system.
    Ntfs,
    /// An ISO 9660 (CD-ROM) file system.
    Iso9660,
    /// Linux swap space.
    Swap,
    /// A LUKS encrypted volume header.
    Luks,
    /// An LVM2 physical volume label.
    Lvm2,
    /// A GPT partition table header.
    Gpt,
    /// An MBR (DOS) partition table with this many used entries.
    Mbr {
        /// Non-empty primary partition entries.
        partitions: usize,
    },
}

impl Signature {
    /// Whether this is an md superblock of any format.
    pub fn is_md(&self) -> bool {
        matches!(self, Signature::Md1 { .. } | Signature::Md090)
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signature::Md1 { minor, uuid, name } => write!(
                f,
                "an md superblock (metadata 1.{minor}, array {uuid}, name \"{name}\")"
            ),
            Signature::Md090 => f.write_str("an md 0.90 superblock"),
            Signature::Ext { kind, label } if label.is_empty() => {
                write!(f, "an {kind} file system")
            }
            Signature::Ext { kind, label } => {
                write!(f, "an {kind} file system (label \"{label}\")")
            }
            Signature::Xfs => f.write_str("an XFS file system"),
            Signature::Btrfs => f.write_str("a btrfs file system"),
            Signature::Fat => f.write_str("a FAT (vfat) file system"),
            Signature::Exfat => f.write_str("an exFAT file system"),
            Signature::Ntfs => f.write_str("an NTFS file system"),
            Signature::Iso9660 => f.write_str("an ISO 9660 file system"),
            Signature::Swap => f.write_str("Linux swap space"),
            Signature::Luks => f.write_str("a LUKS encrypted volume"),
            Signature::Lvm2 => f.write_str("an LVM2 physical volume"),
            Signature::Gpt => f.write_str("a GPT partition table"),
            Signature::Mbr { partitions } => write!(
                f,
                "an MBR partition table with {partitions} partition{}",
                if *partitions == 1 { "" } else { "s" }
            ),
        }
    }
}

/// A signature and where its magic sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// What it is.
    pub signature: Signature,
    /// Byte offset of the structure it was recognised by (for md: the superblock's start).
    pub offset: u64,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.signature, self.offset)
    }
}

/// Bytes read from the start of the device: enough for btrfs's superblock at 64 KiB and the
/// ISO 9660 volume descriptor at 32 KiB.
const HEAD_BYTES: usize = 68 * 1024;

/// md superblock magic (both formats).
pub const MD_MAGIC: u32 = 0xA92B_4EFC;

/// Byte offset of the md 0.90 superblock on a device of `bytes` bytes, if it is big enough
/// (64 KiB below the end rounded down to 64 KiB).
pub fn md090_offset(bytes: u64) -> Option<u64> {
    (bytes & !0xFFFF).checked_sub(0x1_0000)
}

fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

fn has(b: &[u8], at: usize, magic: &[u8]) -> bool {
    b.get(at..at + magic.len()) == Some(magic)
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Looks for an md 1.x superblock of minor version `minor`; returns it if the block there has
/// the magic, major version 1 and names its own location.
pub fn md1_at(dev: &Device, minor: u8) -> io::Result<Option<Found>> {
    let Some(sector) = md1_sector(minor, dev.sectors()) else {
        return Ok(None);
    };
    let mut b = vec![0u8; 512];
    if dev.read_at(sector * 512, &mut b)? < 512 {
        return Ok(None);
    }
    if le32(&b, 0) != MD_MAGIC || le32(&b, 4) != 1 || le64(&b, 144) != sector {
        return Ok(None);
    }
    let mut set_uuid = [0u8; 16];
    set_uuid.copy_from_slice(&b[16..32]);
    let uuid = uuid_text(&set_uuid);
    Ok(Some(Found {
        signature: Signature::Md1 {
            minor,
            uuid,
            name: text(&b[32..64]),
        },
        offset: sector * 512,
    }))
}

/// Looks for an md 0.90 superblock.
pub fn md090(dev: &Device) -> io::Result<Option<Found>> {
    Ok(md090_at(dev, dev.size())?.map(|at| Found {
        signature: Signature::Md090,
        offset: at,
    }))
}

/// Byte offset of an md 0.90 superblock in the open file or device of `size` bytes, if there
/// is one: the magic with major version 0, in either byte order (0.90 is written in host
/// order).
pub fn md090_at(r: &dyn ReadAt, size: u64) -> io::Result<Option<u64>> {
    let Some(at) = md090_offset(size).filter(|at| at.saturating_add(8) <= size) else {
        return Ok(None);
    };
    let mut b = [0u8; 8];
    r.read_exact_at(&mut b, at)?;
    let magic_le = le32(&b, 0) == MD_MAGIC && le32(&b, 4) == 0;
    let magic_be = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) == MD_MAGIC
        && u32::from_be_bytes([b[4], b[5], b[6], b[7]]) == 0;
    Ok((magic_le || magic_be).then_some(at))
}

/// Every md superblock on the device (1.0, 1.1, 1.2, 0.90).
pub fn md_superblocks(dev: &Device) -> io::Result<Vec<Found>> {
    let mut out = Vec::new();
    for minor in [0u8, 1, 2] {
        out.extend(md1_at(dev, minor)?);
    }
    out.extend(md090(dev)?);
    Ok(out)
}

/// Recognises file system, swap, LUKS, LVM2 and partition-table signatures in the first
/// `HEAD_BYTES` bytes of a device (`head` may be shorter for a small device).
pub fn scan_head(head: &[u8]) -> Vec<Found> {
    let mut out = Vec::new();
    let mut push = |signature, offset: usize| {
        out.push(Found {
            signature,
            offset: offset as u64,
        })
    };
    // ext2/3/4: superblock at 1024, magic 0xEF53 at +56.
    if le16(head, 1024 + 56) == 0xEF53 {
        let compat = le32(head, 1024 + 92);
        let incompat = le32(head, 1024 + 96);
        let ro_compat = le32(head, 1024 + 100);
        // ext4-only features: extents, 64bit, flex_bg, huge_file/dir_nlink/extra_isize.
        let kind = if incompat & (0x40 | 0x80 | 0x200) != 0 || ro_compat & (0x8 | 0x20 | 0x40) != 0
        {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        let label = head
            .get(1024 + 120..1024 + 136)
            .map(text)
            .unwrap_or_default();
        push(Signature::Ext { kind, label }, 1024);
    }
    if has(head, 0, b"XFSB") {
        push(Signature::Xfs, 0);
    }
    if has(head, 0x1_0040, b"_BHRfS_M") {
        push(Signature::Btrfs, 0x1_0000);
    }
    if has(head, 3, b"EXFAT   ") {
        push(Signature::Exfat, 0);
    }
    if has(head, 3, b"NTFS    ") {
        push(Signature::Ntfs, 0);
    }
    let boot_sig = le16(head, 510) == 0xAA55;
    let fat = boot_sig
        && (has(head, 54, b"FAT12   ")
            || has(head, 54, b"FAT16   ")
            || has(head, 54, b"FAT     ")
            || has(head, 82, b"FAT32   "));
    if fat {
        push(Signature::Fat, 0);
    }
    if has(head, 0x8001, b"CD001") {
        push(Signature::Iso9660, 0x8000);
    }
    for page in [4096usize, 8192, 16384, 65536] {
        if has(head, page - 10, b"SWAPSPACE2") || has(head, page - 10, b"SWAP-SPACE") {
            push(Signature::Swap, page - 10);
        }
    }
    if has(head, 0, b"LUKS\xba\xbe") {
        push(Signature::Luks, 0);
    }
    for sector in 0..4usize {
        if has(head, sector * 512, b"LABELONE") && has(head, sector * 512 + 24, b"LVM2 001") {
            push(Signature::Lvm2, sector * 512);
        }
    }
    for at in [512usize, 4096] {
        if has(head, at, b"EFI PART") {
            push(Signature::Gpt, at);
        }
    }
    // An MBR: the boot signature and at least one partition entry with a type, when the sector
    // is not a FAT/NTFS/exFAT boot sector (those also end in 0xAA55).
    if boot_sig && !fat && !has(head, 3, b"NTFS    ") && !has(head, 3, b"EXFAT   ") {
        let partitions = (0..4)
            .filter(|i| head.get(446 + 16 * i + 4).is_some_and(|&t| t != 0))
            .count();
        let protective = (0..4).any(|i| head.get(446 + 16 * i + 4) == Some(&0xEE));
        if partitions > 0 && !protective {
            push(Signature::Mbr { partitions }, 0);
        }
    }
    out
}

/// Every signature on the device: md superblocks first, then what [`scan_head`] finds.
pub fn scan(dev: &Device) -> io::Result<Vec<Found>> {
    let mut found = md_superblocks(dev)?;
    let mut head = vec![0u8; HEAD_BYTES];
    let n = dev.read_at(0, &mut head)?;
    head.truncate(n);
    found.extend(scan_head(&head));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_head_has_nothing() {
        assert!(scan_head(&[]).is_empty());
        assert!(scan_head(&vec![0u8; HEAD_BYTES]).is_empty());
    }

    #[test]
    fn mbr_needs_a_partition_and_protective_mbr_is_not_reported() {
        let mut h = vec![0u8; 4096];
        h[510] = 0x55;
        h[511] = 0xAA;
        assert!(scan_head(&h).is_empty(), "boot signature alone");
        h[446 + 4] = 0x83;
        assert_eq!(scan_head(&h)[0].signature, Signature::Mbr { partitions: 1 });
        h[446 + 4] = 0xEE;
        assert!(
            scan_head(&h).is_empty(),
            "protective MBR is left to the GPT check"
        );
    }

    #[test]
    fn md090_offset_rounds_down_to_64k() {
        assert_eq!(md090_offset(0x1_0000), Some(0));
        assert_eq!(md090_offset(0x2_8000), Some(0x1_0000));
        assert_eq!(md090_offset(100), None);
    }
}
