//! Opening member devices and finding out what is on them, shared by the verbs that write
//! metadata (`create`, `zero-superblock`) and usable by any verb that takes members for itself.
//!
//! * [`Device::open`]: opens a block device or a regular image file for reading, or for reading
//!   and writing with [`Access::Exclusive`]: a block device is then opened with `O_EXCL` (the
//!   kernel refuses it while it is mounted, part of a running md/dm array or opened `O_EXCL` by
//!   another process: the same rule mdadm applies), and an image file is locked with
//!   `flock(LOCK_EX | LOCK_NB)` (refused while another process holds a lock on it). Either refusal
//!   is [`OpenError::InUse`]. The size is the block device's capacity or the file length.
//! * [`Device::identity`]: tells two paths naming the same device or file apart from two devices.
//! * [`scan`]: every signature found: md superblocks (1.0, 1.1, 1.2 and the old 0.90 format),
//!   filesystems (ext2/3/4, XFS, btrfs, FAT/vfat, exFAT, NTFS, ISO 9660), swap, LUKS, LVM2 and
//!   partition tables (GPT, and MBR with at least one partition). Each [`Found`] names what it
//!   is and the byte offset of its magic, so refusals can say exactly what was found.
//!
//! Nothing here writes to a device except [`Device::write_all_at`] and [`Device::zero_range`],
//! which the caller uses after its own validation.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// How a device is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only, shared: nothing is locked.
    Read,
    /// Read and write, exclusively: `O_EXCL` for a block device, `flock(LOCK_EX | LOCK_NB)` for
    /// an image file.
    Exclusive,
}

/// Why a device could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The path is neither a block device nor a regular file.
    NotADevice(&'static str),
    /// The device is in use (mounted, an active md/dm member, opened `O_EXCL`, or a locked
    /// image file).
    InUse,
    /// Any other failure of `open(2)`, `fstat(2)` or the size query.
    Io(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::NotADevice(what) => f.write_str(what),
            OpenError::InUse => f.write_str(
                "in use (mounted, a member of a running array, or opened exclusively or locked \
                 by another process)",
            ),
            OpenError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// What identifies a device: the device number of a block device, or the file system and inode
/// of an image file. Two paths with equal identities name the same storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A block device (`st_rdev`).
    Block(u64),
    /// A regular file (`st_dev`, `st_ino`).
    File(u64, u64),
}

/// The identity of the device or file at `path` without opening it (so that a path listed
/// twice can be named before the second open would fail on the first one's lock).
pub fn identity_of(path: &Path) -> io::Result<Identity> {
    let meta = std::fs::metadata(path)?;
    Ok(if meta.file_type().is_block_device() {
        Identity::Block(meta.rdev())
    } else {
        Identity::File(meta.dev(), meta.ino())
    })
}

/// `BLKRRPART`: re-read the partition table (`_IO(0x12, 95)`).
const BLKRRPART: libc::c_ulong = 0x125F;

/// Asks the kernel to re-read the partition table of the block device at `path` (so that
/// partitions of a table that was just overwritten disappear). Must be called after every
/// exclusive handle on the device was closed; fails with `EBUSY` while a partition is in use.
pub fn reread_partitions(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: BLKRRPART takes no argument; the descriptor is valid for the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKRRPART, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An opened member device or image file.
#[derive(Debug)]
pub struct Device {
    path: PathBuf,
    file: File,
    size: u64,
    is_block: bool,
    identity: Identity,
    logical_block_size: u32,
}

/// `BLKSSZGET`: logical block size of a block device (`_IO(0x12, 104)`).
const BLKSSZGET: libc::c_ulong = 0x1268;

impl Device {
    /// Opens `path` with the given access and finds its size. See the module documentation for
    /// what [`Access::Exclusive`] refuses.
    pub fn open(path: &Path, access: Access) -> Result<Device, OpenError> {
        let meta = std::fs::metadata(path).map_err(OpenError::Io)?;
        let is_block = meta.file_type().is_block_device();
        if !is_block && !meta.is_file() {
            return Err(OpenError::NotADevice(if meta.is_dir() {
                "is a directory"
            } else {
                "not a block device or regular file"
            }));
        }
        let mut options = OpenOptions::new();
        options.read(true);
        if access == Access::Exclusive {
            options.write(true);
            if is_block {
                options.custom_flags(libc::O_EXCL);
            }
        }
        let file = options.open(path).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                OpenError::InUse
            } else {
                OpenError::Io(e)
            }
        })?;
        if access == Access::Exclusive && !is_block {
            // SAFETY: flock on a descriptor this function owns; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    OpenError::InUse
                } else {
                    OpenError::Io(e)
                });
            }
        }
        Device::describe(path, file).map_err(OpenError::Io)
    }

    /// A device over a descriptor the caller already opened (and locked as it needs): `path`
    /// names it in messages. Its size and identity come from the descriptor, not the path.
    pub fn from_open(path: &Path, file: File) -> io::Result<Device> {
        Device::describe(path, file)
    }

    /// Size, identity and logical block size, read from the open descriptor.
    fn describe(path: &Path, mut file: File) -> io::Result<Device> {
        let meta = file.metadata()?;
        let is_block = meta.file_type().is_block_device();
        let size = if is_block {
            file.seek(SeekFrom::End(0))?
        } else {
            meta.len()
        };
        let identity = if is_block {
            Identity::Block(meta.rdev())
        } else {
            Identity::File(meta.dev(), meta.ino())
        };
        let logical_block_size = if is_block {
            let mut v: libc::c_int = 0;
            // SAFETY: BLKSSZGET writes one int through the pointer, which is valid.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut v) };
            if rc == 0 && v > 0 { v as u32 } else { 512 }
        } else {
            512
        };
        Ok(Device {
            path: path.to_path_buf(),
            file,
            size,
            is_block,
            identity,
            logical_block_size,
        })
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Size in whole 512-byte sectors (what md counts in).
    pub fn sectors(&self) -> u64 {
        self.size >> 9
    }

    /// Whether this is a block device (not an image file).
    pub fn is_block_device(&self) -> bool {
        self.is_block
    }

    /// Logical block size in bytes (512 for image files).
    pub fn logical_block_size(&self) -> u32 {
        self.logical_block_size
    }

    /// What identifies the underlying device or file.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (fewer only at the
    /// end of the device).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        read_full_at(&self.file, self.size, offset, buf)
    }

    /// Writes all of `buf` at `offset`. Refuses to write past the end of the device.
    pub fn write_all_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "write of {} bytes at byte {offset} would pass the end of the device ({} bytes)",
                    buf.len(),
                    self.size
                ),
            ));
        }
        self.file.write_all_at(buf, offset)
    }

    /// Makes `len` bytes from `offset` read as zeros, in pieces of at most 1 MiB; `progress` is
    /// called with the bytes done after each piece. An image file gets holes punched
    /// (`fallocate(PUNCH_HOLE)`: it stays sparse), falling back to writing zeros where the file
    /// system cannot punch; a block device gets zeros written.
    pub fn zero_range(
        &self,
        offset: u64,
        len: u64,
        mut progress: impl FnMut(u64),
    ) -> io::Result<()> {
        const PIECE: u64 = 1 << 20;
        let end = offset.checked_add(len);
        if end.is_none_or(|e| e > self.size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("zeroing {len} bytes at byte {offset} would pass the end of the device"),
            ));
        }
        let mut punch = !self.is_block;
        let mut zeros: Vec<u8> = Vec::new();
        let mut done = 0;
        while done < len {
            let n = PIECE.min(len - done);
            let at = offset + done;
            if punch {
                // SAFETY: fallocate on a descriptor owned by `self`; no memory is passed.
                let rc = unsafe {
                    libc::fallocate(
                        self.file.as_raw_fd(),
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        at as libc::off_t,
                        n as libc::off_t,
                    )
                };
                if rc != 0 {
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => {
                            punch = false
                        }
                        _ => return Err(e),
                    }
                }
            }
            if !punch {
                if zeros.is_empty() {
                    zeros = vec![0u8; PIECE.min(len) as usize];
                }
                self.write_all_at(at, &zeros[..n as usize])?;
            }
            done += n;
            progress(n);
        }
        Ok(())
    }

    /// Flushes written data and metadata to stable storage (`fsync(2)`).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

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

/// Sector of the md 1.`minor` superblock on a device of `sectors` sectors (mdadm's placement).
pub fn md1_sector(minor: u8, sectors: u64) -> u64 {
    match minor {
        0 => sectors.saturating_sub(16) & !7,
        1 => 0,
        _ => 8,
    }
}

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
    if dev.sectors() < 24 {
        return Ok(None);
    }
    let sector = md1_sector(minor, dev.sectors());
    let mut b = vec![0u8; 512];
    if dev.read_at(sector * 512, &mut b)? < 512 {
        return Ok(None);
    }
    if le32(&b, 0) != MD_MAGIC || le32(&b, 4) != 1 || le64(&b, 144) != sector {
        return Ok(None);
    }
    let uuid: String = b[16..32]
        .chunks(4)
        .map(|c| c.iter().map(|x| format!("{x:02x}")).collect::<String>())
        .collect::<Vec<_>>()
        .join(":");
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
    let Some(at) = md090_offset(dev.size()) else {
        return Ok(None);
    };
    let mut b = [0u8; 8];
    if dev.read_at(at, &mut b)? < 8 {
        return Ok(None);
    }
    // 0.90 is stored in host order: accept either byte order.
    let magic_le = le32(&b, 0) == MD_MAGIC && le32(&b, 4) == 0;
    let magic_be = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) == MD_MAGIC
        && u32::from_be_bytes([b[4], b[5], b[6], b[7]]) == 0;
    Ok((magic_le || magic_be).then_some(Found {
        signature: Signature::Md090,
        offset: at,
    }))
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
/// [`HEAD_BYTES`] bytes of a device (`head` may be shorter for a small device).
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

/// Positioned read of up to `buf.len()` bytes at `offset` of a file or device of `size` bytes:
/// retries short reads and `EINTR`, stops at `size` or end of file, and returns how many bytes
/// were read (fewer only at the end).
pub fn read_full_at(file: &File, size: u64, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let Some(at) = offset.checked_add(done as u64) else {
            break;
        };
        if at >= size {
            break;
        }
        match file.read_at(&mut buf[done..], at) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
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
