//! Finding the v1 superblock on a member the way `mdadm --examine` does.
//!
//! mdadm does not know the minor version in advance: it probes the 1.0, 1.1 and 1.2 locations
//! in that order, accepts a location whose block has the md magic, major version 1 and a
//! `super_offset` equal to that location, and keeps the accepted one with the largest `ctime`
//! (the first one on a tie). It does not check the checksum, the pads, the feature bits or the
//! device size when examining. When the superblock announces an internal bitmap, it reads the
//! 512 bytes at the bitmap location and forgets the bitmap (clears the feature bit in memory)
//! unless they carry the bitmap magic and the array UUID.

use std::fmt;
use std::io;

use super::raw::{self, BITMAP_BLOCK, RawBitmapSuper, RawSuperblock, SB_BLOCK};
use super::{Device, OpenError, md1_sector};

/// Smallest device mdadm accepts for v1 metadata, in sectors.
pub const MIN_SECTORS: u64 = 24;

/// The three v1 placements, in mdadm's probing order.
pub const MINORS: [u8; 3] = [0, 1, 2];

/// Why one location did not hold a superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The magic is wrong.
    Magic(u32),
    /// The magic is right but `major_version` is not 1.
    MajorVersion(u32),
    /// `super_offset` does not name this location.
    SuperOffset(u64),
}

/// The outcome of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The minor version probed (0, 1, 2).
    pub minor: u8,
    /// The sector probed.
    pub sector: u64,
    /// What was wrong.
    pub miss: Miss,
}

/// Why a member could not be examined. Each variant renders as one line naming the field.
#[derive(Debug)]
pub enum ExamineError {
    /// The device could not be opened.
    Open(OpenError),
    /// The device is smaller than the v1 minimum.
    TooSmall {
        /// Device size in sectors.
        sectors: u64,
    },
    /// A read failed.
    Read {
        /// Byte offset of the failed read.
        offset: u64,
        /// The OS error.
        error: io::Error,
    },
    /// No location holds a superblock.
    NoSuperblock {
        /// The probe reported (the most telling of the three).
        probe: Probe,
    },
    /// A superblock field is out of the range this tool can render the way mdadm does.
    Field {
        /// Sector of the superblock.
        sector: u64,
        /// Field name as in `struct mdp_superblock_1` / `bitmap_super_t`.
        field: &'static str,
        /// The value found.
        value: u64,
        /// What was expected.
        expected: &'static str,
    },
    /// The member has no internal bitmap (examine-bitmap).
    NoBitmap,
    /// The bitmap version is not one mdadm 4.2 reads (3, 4, 5); mdadm still prints the first
    /// lines of its report, kept in `printed`.
    BitmapVersion {
        /// `version` found.
        version: u32,
        /// The standard-output lines printed before giving up.
        printed: Vec<u8>,
    },
    /// The bitmap superblock cannot be rendered (examine-bitmap).
    Bitmap {
        /// Field name.
        field: &'static str,
        /// The value found.
        value: u64,
        /// What was expected.
        expected: &'static str,
    },
}

impl ExamineError {
    /// Standard output mdadm prints before reporting this error (empty for most errors).
    pub fn printed(&self) -> &[u8] {
        match self {
            ExamineError::BitmapVersion { printed, .. } => printed,
            _ => &[],
        }
    }

    /// A stable snake_case name for the JSON report.
    pub fn kind(&self) -> &'static str {
        match self {
            ExamineError::Open(_) => "open_failed",
            ExamineError::TooSmall { .. } => "too_small",
            ExamineError::Read { .. } => "read_failed",
            ExamineError::NoSuperblock { .. } => "no_superblock",
            ExamineError::Field { .. } => "bad_field",
            ExamineError::NoBitmap => "no_bitmap",
            ExamineError::Bitmap { .. } => "bad_bitmap",
            ExamineError::BitmapVersion { .. } => "bitmap_version",
        }
    }

    /// The field at fault, if one is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ExamineError::NoSuperblock { probe } => Some(match probe.miss {
                Miss::Magic(_) => "magic",
                Miss::MajorVersion(_) => "major_version",
                Miss::SuperOffset(_) => "super_offset",
            }),
            ExamineError::Field { field, .. } | ExamineError::Bitmap { field, .. } => Some(field),
            ExamineError::TooSmall { .. } => Some("device_size"),
            ExamineError::NoBitmap => Some("feature_map"),
            ExamineError::BitmapVersion { .. } => Some("version"),
            _ => None,
        }
    }
}

impl fmt::Display for ExamineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExamineError::Open(e) => write!(f, "cannot open: {e}"),
            ExamineError::TooSmall { sectors } => write!(
                f,
                "too small for md metadata (device_size {sectors} sectors, minimum {MIN_SECTORS})"
            ),
            ExamineError::Read { offset, error } => {
                write!(f, "read failed at byte {offset}: {error}")
            }
            ExamineError::NoSuperblock { probe } => {
                let at = probe.sector;
                match probe.miss {
                    Miss::Magic(m) => write!(
                        f,
                        "no md superblock found (magic 0x{m:08x} at sector {at}, expected 0x{:08x})",
                        raw::SB_MAGIC
                    ),
                    Miss::MajorVersion(v) => write!(
                        f,
                        "no md superblock found (major_version {v} at sector {at}, expected 1)"
                    ),
                    Miss::SuperOffset(o) => write!(
                        f,
                        "no md superblock found (super_offset {o} at sector {at}, expected {at})"
                    ),
                }
            }
            ExamineError::Field {
                sector,
                field,
                value,
                expected,
            } => write!(
                f,
                "unsupported superblock ({field} {value} at sector {sector}, expected {expected})"
            ),
            ExamineError::NoBitmap => write!(
                f,
                "no internal bitmap (feature_map bit 0x1 not set or bitmap superblock invalid)"
            ),
            ExamineError::BitmapVersion { version, .. } => write!(
                f,
                "unknown bitmap version (version {version}, expected 3, 4 or 5)"
            ),
            ExamineError::Bitmap {
                field,
                value,
                expected,
            } => {
                write!(
                    f,
                    "unsupported bitmap superblock ({field} {value}, expected {expected})"
                )
            }
        }
    }
}

/// A superblock as mdadm holds it after loading.
pub struct Loaded {
    /// The minor version (0, 1, 2).
    pub minor: u8,
    /// The superblock block, with the in-memory feature map.
    pub sb: RawSuperblock,
    /// The `feature_map` stored on disk.
    pub feature_map_on_disk: u32,
    /// The 512 bytes read at the bitmap location (zero when the bitmap bit was clear).
    pub bitmap: RawBitmapSuper,
    /// Device size in sectors.
    pub dev_sectors: u64,
}

fn read_exact_at(dev: &Device, offset: u64, buf: &mut [u8]) -> Result<usize, ExamineError> {
    dev.read_at(offset, buf)
        .map_err(|error| ExamineError::Read { offset, error })
}

fn probe(dev: &Device, minor: u8) -> Result<Result<Loaded, Probe>, ExamineError> {
    let sectors = dev.sectors();
    // load() refused a device below md's minimum, where there is no placement.
    let sector = md1_sector(minor, sectors).unwrap_or(0);
    let mut block = Box::new([0u8; SB_BLOCK]);
    let offset = sector << 9;
    let n = read_exact_at(dev, offset, &mut block[..])?;
    if n != SB_BLOCK {
        return Err(ExamineError::Read {
            offset,
            error: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("short read ({n} of {SB_BLOCK} bytes)"),
            ),
        });
    }
    let mut sb = RawSuperblock::new(block);
    if sb.magic() != raw::SB_MAGIC {
        return Ok(Err(Probe {
            minor,
            sector,
            miss: Miss::Magic(sb.magic()),
        }));
    }
    if sb.major_version() != 1 {
        return Ok(Err(Probe {
            minor,
            sector,
            miss: Miss::MajorVersion(sb.major_version()),
        }));
    }
    if sb.super_offset() != sector {
        return Ok(Err(Probe {
            minor,
            sector,
            miss: Miss::SuperOffset(sb.super_offset()),
        }));
    }
    let feature_map_on_disk = sb.feature_map();
    let mut bitmap = RawBitmapSuper::default();
    if feature_map_on_disk & raw::feature::BITMAP_OFFSET != 0 {
        let bm_sector = sector.wrapping_add(i64::from(sb.bitmap_offset() as i32) as u64);
        let bm_byte = bm_sector.wrapping_shl(9);
        // mdadm seeks to the bitmap; a seek to a negative offset fails and the read then happens
        // where the superblock read left the file position.
        let at = if (bm_byte as i64) < 0 {
            offset + SB_BLOCK as u64
        } else {
            bm_byte
        };
        let mut buf = [0u8; BITMAP_BLOCK];
        let got = read_exact_at(dev, at, &mut buf)?;
        bitmap = RawBitmapSuper::from_slice(&buf[..got]);
        if got != BITMAP_BLOCK
            || bitmap.magic() != raw::BITMAP_MAGIC
            || bitmap.uuid() != sb.set_uuid()
        {
            sb.drop_bitmap_feature();
        }
    }
    Ok(Ok(Loaded {
        minor,
        sb,
        feature_map_on_disk,
        bitmap,
        dev_sectors: sectors,
    }))
}

/// Loads the superblock mdadm's examine would show for `dev`.
pub fn load(dev: &Device) -> Result<Loaded, ExamineError> {
    let sectors = dev.sectors();
    if sectors < MIN_SECTORS {
        return Err(ExamineError::TooSmall { sectors });
    }
    let mut best: Option<Loaded> = None;
    let mut misses: Vec<Probe> = Vec::new();
    for minor in MINORS {
        match probe(dev, minor)? {
            Ok(found) => {
                let newer = match &best {
                    None => true,
                    Some(b) => b.sb.ctime() < found.sb.ctime(),
                };
                if newer {
                    best = Some(found);
                }
            }
            Err(miss) => misses.push(miss),
        }
    }
    if let Some(found) = best {
        return Ok(found);
    }
    // Report the probe that got furthest; among equals, the 1.2 location (the default format).
    let rank = |p: &Probe| match p.miss {
        Miss::Magic(_) => 0,
        Miss::MajorVersion(_) => 1,
        Miss::SuperOffset(_) => 2,
    };
    let pick = misses
        .iter()
        .max_by_key(|p| rank(p))
        .copied()
        .unwrap_or(Probe {
            minor: 2,
            sector: 8,
            miss: Miss::Magic(0),
        });
    Err(ExamineError::NoSuperblock { probe: pick })
}
