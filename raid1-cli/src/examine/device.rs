//! Read-only access to a member: a regular file or a block device.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// An opened member, read with positioned reads.
pub struct Member {
    file: File,
    size: u64,
    is_block: bool,
}

impl Member {
    /// Opens `path` read-only and finds its size (file length, or block device capacity).
    pub fn open(path: &Path) -> io::Result<Member> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let is_block = meta.file_type().is_block_device();
        if !is_block && !meta.is_file() {
            let what = if meta.is_dir() {
                "is a directory"
            } else {
                "not a regular file or block device"
            };
            return Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        }
        let size = if is_block {
            file.seek(SeekFrom::End(0))?
        } else {
            meta.len()
        };
        Ok(Member {
            file,
            size,
            is_block,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Size in whole 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.size >> 9
    }

    /// Whether this is a block device (as opposed to a regular file).
    pub fn is_block_device(&self) -> bool {
        self.is_block
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (short at the end
    /// of the device, like `read(2)`).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        crate::probe::read_full_at(&self.file, self.size, offset, buf)
    }
}
