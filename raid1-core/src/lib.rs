//! The sans-IO RAID1 engine: Linux md RAID1 semantics as a pure state machine.
//!
//! `#![no_std]`, no allocation, no I/O, no clock, no `unsafe`, no panics. Capacities are const
//! generics of [`Array`]: `M` members, `R` logical requests (in flight or waiting), `S` sync
//! windows. The write-intent bitmap lives in two caller-provided byte slices (the on-disk bits in
//! md's LSB-first layout, and a same-sized scratch "hot" map).
//!
//! # The contract (in the style of quinn-proto)
//!
//! The frontend owns the devices, the buffers and the clock. It talks to the engine through four
//! kinds of calls:
//!
//! * **inputs** — [`Array::submit`] a logical [`Request`] (read / write / flush / discard over a
//!   sector range with a buffer handle the frontend owns); [`Array::complete`] a command it
//!   issued (ok / error); [`Array::complete_compare`] a compare it was asked for;
//!   [`Array::handle_timeout`] when [`Array::poll_timeout`] is due. Every input takes the current
//!   [`Instant`]; time must never go backwards.
//! * **commands** (mutators) — [`Array::freeze`] / [`Array::unfreeze`], [`Array::fail_member`],
//!   [`Array::add_member`], [`Array::remove_member`], [`Array::set_raid_disks`] (these three
//!   need [`Array::is_quiesced`]), [`Array::set_write_mostly`], [`Array::start_check`],
//!   [`Array::set_sync_rate`], [`Array::request_clean`].
//! * **construction** — [`Array::create`] (mdadm --create) or [`Array::assemble`] from the
//!   superblocks found on the devices ([`Array::choose_freshest`] tells which one defines the
//!   array; pass the OR of every member's bitmap).
//! * **on-disk format** — [`bridge`] is the one conversion between [`SuperblockState`] and md's
//!   v1.x superblock and bitmap header (raid1-superblock): [`bridge::read_state`] for assembly,
//!   [`bridge::apply_state`] before a superblock write is serialized.
//! * **outputs** — after every input or command, drain [`Array::poll_io`] until `None` and issue
//!   each [`IoCmd`] (member data I/O, superblock writes, bitmap page writes, buffer compares),
//!   then drain [`Array::poll_completion`] (finished logical requests, return them to the
//!   client), [`Array::poll_event`] (monitor events), and re-arm the timer with
//!   [`Array::poll_timeout`].
//! * **getters** — [`Array::status`], [`Array::member`], [`Array::bitmap_page`],
//!   [`Array::superblock_for`], [`Array::is_quiesced`], [`Array::mismatch_cnt`].
//!
//! Commands may be issued in any order and completed in any order. Every tag is completed
//! exactly once. A full request table is [`SubmitError::Busy`]; a stale tag is
//! [`TagError::Unknown`]; nothing panics.
//!
//! Sectors in [`MemberIo`] are relative to each member's data area (the frontend adds its
//! `data_offset`). Buffers: [`Buffer::Request`] is the frontend's own handle; [`Buffer::Sync`] is
//! a sync buffer the frontend lends, one per (sync window, member), `sync_window_sectors` long.
//!
//! # Durability model
//!
//! A member write is volatile until a flush of that member completes, unless it was issued
//! with `fua`. Superblock and bitmap writes must be durable when completed (FUA or write +
//! flush). The engine orders: dirty superblock → bitmap bits → data; data flushed → clean
//! superblock / bitmap bits cleared. Sync (resync / recovery / repair) writes are FUA, so a
//! checkpointed `recovery_offset` never runs ahead of durable data.
//!
//! See `docs/CORE.md` for the design and how it follows md.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// `Sector` is `u64` or, with feature `sector32`, `u32`: the conversions between it and `u64`
// or `u32` that one width needs are conversions to the same type in the other.
#![allow(clippy::useless_conversion)]
#![cfg_attr(feature = "sector32", allow(clippy::unnecessary_cast))]

mod array;
mod badblocks;
pub mod bridge;
mod error;
mod planted;
mod types;

pub use array::{
    AddMember, Array, ArrayStatus, MAX_ARRAY_SECTORS, MAX_BITMAP_CHUNK_SECTORS, same_table,
};
pub use badblocks::{BadBlockError, BadBlocks, BadRange, MAX_BAD_BLOCKS, MAX_ENTRY_SECTORS};
pub use error::{AssembleError, BridgeError, ConfigError, ReconfigError, SubmitError, TagError};
pub use types::*;
