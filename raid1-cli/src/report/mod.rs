//! mdadm's text reports, byte-for-byte where mdadm has one: `--examine` ([`examine`], over the
//! raw fields of [`raw`](crate::member::raw)), `--examine-bitmap` ([`bitmap`]), `--examine-badblocks`
//! ([`badblocks`]), `--detail` ([`detail`]) and `/proc/mdstat` ([`mdstat`]); [`host`] holds the
//! host facts they depend on (home host, local time).
pub mod badblocks;
pub mod bitmap;
pub mod detail;
pub mod examine;
pub mod host;
pub mod mdstat;
