//! The `raid1` host tool: md metadata inspection, io_uring member I/O and the NBD export.
pub mod create;
pub mod ctl;
pub mod examine;
pub mod member_io;
pub mod nbd;
pub mod probe;
pub mod run;
pub mod zero;
