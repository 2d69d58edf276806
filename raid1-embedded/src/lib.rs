//! RAID1 over an SD card and a SPI NOR flash, for bare-metal targets.
//!
//! `#![no_std]`, no alloc. The pieces:
//! - [`nor`]: a power-safe 512-byte block layer over `embedded_storage::nor_flash::NorFlash`
//!   (the flash member);
//! - [`volume`]: the mirrored volume, raid1-core's engine over an SD member and the NOR member,
//!   with md v1.2 metadata on both; it implements embedded-sdmmc's `BlockDevice` and
//!   embedded-io `Read`/`Write`/`Seek`;
//! - [`sim`]: RAM simulators of NOR flash and SD cards with fault injection, used by the host
//!   tests and by the firmware examples.
//!
//! The design and its guarantees are described in `docs/EMBEDDED.md`.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// raid1-core's `Sector` is `u64` or, with feature `sector32`, `u32`: converting it to `u64` is
// a conversion to the same type in one of them.
#![allow(clippy::useless_conversion)]

pub mod crc;
mod log;
pub mod nor;
pub mod sim;
pub mod volume;

pub use nor::{
    NorBlockStore, NorError, NorStats, NorWarning, Provisioning, Refused, ZonedNorStore,
};
