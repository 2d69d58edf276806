//! Linux md metadata v1.x: superblock, write-intent bitmap and bad-block log.
//!
//! This crate reads and writes the on-disk metadata of Linux md arrays with superblock format
//! 1.0, 1.1 and 1.2 (`struct mdp_superblock_1`), the internal write-intent bitmap
//! (`bitmap_super_t`, version 4) and the per-device bad-block log, byte-compatible with the
//! kernel's md driver and mdadm. The format is described in `../shared/reference/md-format.md`
//! (sections 1 to 3) of the project tree.
//!
//! Properties:
//!
//! * `#![no_std]`, no allocation, no `unsafe`.
//! * Never panics on any input. Every parse of untrusted bytes returns a typed [`Error`] naming
//!   the field and the value that is wrong.
//! * Memory is bounded by the caller: [`Superblock`] carries a const-generic capacity `ROLES` for
//!   its `dev_roles` table (default [`MAX_DEV`] = 1920, about 4 KiB; an embedded user picks e.g.
//!   `Superblock<8>`, about 300 bytes). Bitmap and bad-block helpers work on borrowed buffers.
//!
//! # Example
//!
//! ```
//! use raid1_superblock::*;
//!
//! // Build a 1.2 member the way mdadm --create would for a 64 MiB device, with an internal bitmap.
//! let mut sb: Superblock<8> = Superblock::new();
//! CreateGeometry::mdadm_default(MinorVersion::V1_2, 131_072, true)?.apply_to(&mut sb);
//! sb.set_uuid = Uuid::parse_mdadm("01234567:89abcdef:00112233:44556677")?;
//! sb.set_name = SetName::build(Some(b"host"), b"0");
//! sb.raid_disks = 2;
//! sb.set_max_dev(128)?; // mdadm's value; entries beyond the capacity of 8 stay spare
//! sb.set_role(0, DevRole::Active(0))?;
//! sb.set_role(1, DevRole::Active(1))?;
//!
//! let mut sector = [0u8; 512];
//! sb.serialize_padded(&mut sector)?;
//!
//! // Strict (kernel) parse, and the placement check against the device size.
//! let back: Superblock<8> = Superblock::parse(&sector)?;
//! assert_eq!(back.check_placement(131_072)?, MinorVersion::V1_2);
//! assert_eq!(back.data_offset, 2048);
//!
//! // A damaged checksum: refused strictly, shown by the examine mode.
//! sector[216] ^= 1;
//! let err = Superblock::<8>::parse(&sector).unwrap_err();
//! assert_eq!(err.field, "sb_csum");
//! let shown = Superblock::<8>::parse_for_examine(&sector)?;
//! assert!(!shown.checksum_status()?.is_correct());
//! # Ok::<(), Error>(())
//! ```
//!
//! Modules:
//!
//! * [`superblock`]: [`Superblock`], strict and lenient parsing ([`ParseOptions`]), serialising,
//!   [`checksum`].
//! * [`geometry`]: [`MinorVersion`], superblock placement, mdadm's default create geometry.
//! * [`bitmap`]: [`BitmapSuperblock`] and the bit array ([`BitmapBits`], [`BitmapBitsMut`]).
//! * [`badblocks`]: the bad-block log ([`BadBlock`], [`BadBlockLog`], [`write_bad_blocks`]).
//! * [`types`]: [`FeatureMap`], [`DevFlags`], [`DevRole`], [`MdTime`], [`SetName`], [`Uuid`].
//! * [`error`]: [`Error`], [`ErrorKind`].
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

#[cfg(test)]
extern crate std;

pub mod badblocks;
pub mod bitmap;
pub mod error;
pub mod geometry;
pub mod superblock;
pub mod types;

mod bytes;

pub use badblocks::{BadBlock, BadBlockLog, write_bad_blocks};
pub use bitmap::{BitmapBits, BitmapBitsMut, BitmapState, BitmapSuperblock};
pub use error::{Error, ErrorKind};
pub use geometry::{BitmapGeometry, CreateGeometry, MinorVersion};
pub use superblock::{ChecksumStatus, FixedFields, ParseOptions, Superblock, checksum};
pub use types::{DevFlags, DevRole, FeatureMap, MdTime, SetName, Uuid};

/// Bytes per sector. md counts every offset and size in 512-byte sectors, whatever the device's
/// logical block size.
pub const SECTOR_SIZE: usize = 512;

/// `MaxSector`: all ones. In `resync_offset` it means "array clean, no resync pending".
pub const MAX_SECTOR: u64 = u64::MAX;

/// Magic number of the md superblock (offset 0, little-endian: bytes `fc 4e 2b a9`).
pub const SB_MAGIC: u32 = 0xA92B_4EFC;

/// The only `major_version` this crate (and the v1 format) accepts.
pub const SB_MAJOR_VERSION: u32 = 1;

/// Size in bytes of the fixed part of the superblock; `dev_roles[]` follows it.
pub const SB_FIXED_LEN: usize = 256;

/// Bytes the kernel reads at the superblock location (one 4 KiB page).
pub const SB_MAX_LEN: usize = 4096;

/// Largest `max_dev` (number of `dev_roles` entries) the kernel and mdadm accept:
/// (4096 - 256) / 2.
pub const MAX_DEV: usize = 1920;
