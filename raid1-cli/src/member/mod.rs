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
//! * [`scan`](signatures::scan): every signature found: md superblocks (1.0, 1.1, 1.2 and the old 0.90 format),
//!   filesystems (ext2/3/4, XFS, btrfs, FAT/vfat, exFAT, NTFS, ISO 9660), swap, LUKS, LVM2 and
//!   partition tables (GPT, and MBR with at least one partition). Each [`Found`](signatures::Found) names what it
//!   is and the byte offset of its magic, so refusals can say exactly what was found.
//!
//! Nothing here writes to a device except [`Device::write_all_at`] and [`Device::zero_range`],
//! which the caller uses after its own validation.

pub mod lenient;
pub mod raw;
pub mod signatures;
pub mod strict;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Opens a block device with `O_EXCL` in `options`, trying again for about a second while the kernel
/// answers `EBUSY`. An exclusive claim can outlive its holder for a moment: the last reference to a
/// device that an io_uring had registered, or that a probe (udev's blkid) had open, is dropped by
/// the kernel after the holder's process has moved on or exited; `stop` followed at once by
/// `assemble` must not fail for it. A device that stays claimed (mounted, a member of a running
/// md array, held by another raid1) still answers `EBUSY` at the end, as mdadm's exclusive open
/// retries and then gives up.
pub fn open_exclusive_block(options: &OpenOptions, path: &Path) -> io::Result<File> {
    let mut delay_ms = 1u64;
    let mut waited_ms = 0u64;
    loop {
        match options.open(path) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && waited_ms < EXCLUSIVE_RETRY_MS => {
                std::thread::sleep(std::time::Duration::from_millis(delay_ms));
                waited_ms += delay_ms;
                delay_ms = (delay_ms * 2).min(100);
            }
            other => return other,
        }
    }
}

/// How long [`open_exclusive_block`] keeps trying a claimed block device, in milliseconds.
const EXCLUSIVE_RETRY_MS: u64 = 1000;

/// Why [`open_claimed`] did not return a file.
#[derive(Debug)]
pub enum ClaimError {
    /// Held elsewhere: a block device opened exclusively (mounted, in an array, held by another
    /// program), or an image file locked by another raid1.
    InUse,
    /// A system call failed: which one, and its error.
    Failed(&'static str, io::Error),
}

/// Opens `path` read-write and claims it, the one way every member open does: a block device
/// with `O_EXCL` (waiting out a claim for about a second with `wait`, see
/// [`open_exclusive_block`]), an image file with `flock(LOCK_EX | LOCK_NB)`; `flags` are any
/// other open flags (`O_DIRECT`).
pub fn open_claimed(
    path: &Path,
    is_block: bool,
    wait: bool,
    flags: libc::c_int,
) -> Result<File, ClaimError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    let opened = if is_block {
        options.custom_flags(flags | libc::O_EXCL);
        if wait {
            open_exclusive_block(&options, path)
        } else {
            options.open(path)
        }
    } else {
        options.custom_flags(flags);
        options.open(path)
    };
    let file = opened.map_err(|e| match e.raw_os_error() {
        Some(libc::EBUSY) => ClaimError::InUse,
        _ => ClaimError::Failed("open", e),
    })?;
    if !is_block {
        // An advisory lock, released when the file is closed.
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => ClaimError::InUse,
                _ => ClaimError::Failed("flock", e),
            });
        }
    }
    Ok(file)
}

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
    /// An NBD export (a hash of its URI: the same URI names the same export).
    Remote(u64),
}

/// The identity of the NBD export `uri`.
pub fn remote_identity(uri: &crate::nbd::client::Uri) -> Identity {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uri.address.hash(&mut h);
    uri.export.hash(&mut h);
    Identity::Remote(h.finish())
}

/// Positioned reads of exactly `buf.len()` bytes: of a file or device, or of an NBD export.
pub trait ReadAt {
    /// Reads `buf.len()` bytes at `offset` (an error if fewer are there).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for Device {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.read_at(offset, buf)? < buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the device",
            ));
        }
        Ok(())
    }
}

/// How long a verb waits for an NBD server at each step (connect, handshake, each request).
pub const REMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The identity of the device or file at `path` without opening it (so that a path listed
/// twice can be named before the second open would fail on the first one's lock).
pub fn identity_of(path: &Path) -> io::Result<Identity> {
    if crate::nbd::client::is_uri(path.as_os_str()) {
        let uri = crate::nbd::client::Uri::parse(&path.to_string_lossy())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        return Ok(remote_identity(&uri));
    }
    Ok(Identity::of_metadata(&std::fs::metadata(path)?))
}

impl Identity {
    /// The identity in `stat` / `fstat` results.
    pub fn of_metadata(meta: &std::fs::Metadata) -> Identity {
        if meta.file_type().is_block_device() {
            Identity::Block(meta.rdev())
        } else {
            Identity::File(meta.dev(), meta.ino())
        }
    }
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
    io: DevIo,
    size: u64,
    is_block: bool,
    identity: Identity,
    logical_block_size: u32,
}

/// What a [`Device`] reads and writes through.
#[derive(Debug)]
enum DevIo {
    /// A file or block device.
    File(File),
    /// An NBD export (one request at a time).
    Remote(std::sync::Mutex<crate::nbd::client::Connection>),
}

/// `BLKSSZGET`: logical block size of a block device (`_IO(0x12, 104)`).
const BLKSSZGET: libc::c_ulong = 0x1268;

impl Device {
    /// Opens `path` with the given access and finds its size. See the module documentation for
    /// what [`Access::Exclusive`] refuses.
    pub fn open(path: &Path, access: Access) -> Result<Device, OpenError> {
        if crate::nbd::client::is_uri(path.as_os_str()) {
            return Device::open_remote(path);
        }
        let meta = std::fs::metadata(path).map_err(OpenError::Io)?;
        let is_block = meta.file_type().is_block_device();
        if !is_block && !meta.is_file() {
            return Err(OpenError::NotADevice(if meta.is_dir() {
                "is a directory"
            } else {
                "not a block device or regular file"
            }));
        }
        let file = match access {
            Access::Read => OpenOptions::new()
                .read(true)
                .open(path)
                .map_err(OpenError::Io)?,
            Access::Exclusive => open_claimed(path, is_block, true, 0).map_err(|e| match e {
                ClaimError::InUse => OpenError::InUse,
                ClaimError::Failed(_, e) => OpenError::Io(e),
            })?,
        };
        Device::describe(path, file).map_err(OpenError::Io)
    }

    /// An NBD export, named by its URI. A server serves whom it will: no lock is taken
    /// (the array's own checks of the superblock guard what is written).
    fn open_remote(path: &Path) -> Result<Device, OpenError> {
        let text = path.to_string_lossy();
        let uri = crate::nbd::client::Uri::parse(&text)
            .map_err(|e| OpenError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let conn = crate::nbd::client::Connection::connect(&uri, REMOTE_TIMEOUT)
            .map_err(|e| OpenError::Io(io::Error::other(e)))?;
        let e = *conn.export();
        Ok(Device {
            path: path.to_path_buf(),
            io: DevIo::Remote(std::sync::Mutex::new(conn)),
            size: e.size,
            is_block: false,
            identity: remote_identity(&uri),
            logical_block_size: e.min_block.max(512),
        })
    }

    /// Whether this is an NBD export.
    pub fn is_remote(&self) -> bool {
        matches!(self.io, DevIo::Remote(_))
    }

    fn conn(&self) -> Option<std::sync::MutexGuard<'_, crate::nbd::client::Connection>> {
        match &self.io {
            DevIo::Remote(c) => Some(c.lock().unwrap_or_else(|p| p.into_inner())),
            DevIo::File(_) => None,
        }
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
        let identity = Identity::of_metadata(&meta);
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
            io: DevIo::File(file),
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
        match &self.io {
            DevIo::File(f) => read_full_at(f, self.size, offset, buf),
            DevIo::Remote(_) => {
                let n = (buf.len() as u64).min(self.size.saturating_sub(offset)) as usize;
                if let Some(mut c) = self.conn() {
                    c.read_exact_at(&mut buf[..n], offset)?;
                }
                Ok(n)
            }
        }
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
        match &self.io {
            DevIo::File(f) => f.write_all_at(buf, offset),
            DevIo::Remote(_) => match self.conn() {
                Some(mut c) => c.write_all_at(buf, offset),
                None => Ok(()),
            },
        }
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
        if let Some(mut c) = self.conn() {
            let mut done = 0;
            while done < len {
                let n = PIECE.min(len - done);
                c.write_zeroes(offset + done, n)?;
                done += n;
                progress(n);
            }
            return Ok(());
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
                        self.as_raw_fd(),
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
        match &self.io {
            DevIo::File(f) => f.sync_all(),
            DevIo::Remote(_) => match self.conn() {
                Some(mut c) => c.flush(),
                None => Ok(()),
            },
        }
    }

    fn as_raw_fd(&self) -> i32 {
        match &self.io {
            DevIo::File(f) => f.as_raw_fd(),
            DevIo::Remote(_) => -1,
        }
    }
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

/// Where metadata 1.`minor` keeps its superblock on a device of `sectors` sectors
/// (raid1-superblock's placement: the one formula); `None` for a device below md's minimum
/// size or a minor version other than 0, 1 and 2.
pub fn md1_sector(minor: u8, sectors: u64) -> Option<u64> {
    raid1_superblock::MinorVersion::from_minor(u32::from(minor))
        .ok()?
        .superblock_sector(sectors)
        .ok()
}
