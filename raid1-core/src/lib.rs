//! The sans-IO RAID1 engine.
#![no_std]
#![forbid(unsafe_code)]
