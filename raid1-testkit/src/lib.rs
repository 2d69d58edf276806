//! Test support shared by raid1-sim (the deterministic simulator) and raid1-embedded's RAM
//! simulators of an SD card and a NOR flash, so that a seed, a countdown and a member fault mean
//! the same thing in both:
//!
//! - [`Rng`]: the one seeded PRNG (SplitMix64) every simulated fault is drawn from;
//! - [`Countdown`]: "the n-th operation from now", for power losses and one-shot failures;
//! - [`FaultyMember`]: the fault model of one member device in one place, consulted on every
//!   read, write, discard and flush of a range of units (sectors, blocks).
//!
//! With the `guest` feature (host tests only; it brings in `std`):
//!
//! - `guest::boot`: runs a script in the linux-md oracle's guest on image files, booting
//!   again on restored images when the emulated machine's loader crashes.
//!
//! `#![no_std]`, no alloc, no `unsafe`: it builds for the firmware target too.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "guest")]
extern crate std;

mod countdown;
#[cfg(feature = "guest")]
pub mod guest;
mod member;
mod rng;

pub use countdown::Countdown;
pub use member::{FaultyMember, Health, MemberError, WriteFailure};
pub use rng::Rng;
