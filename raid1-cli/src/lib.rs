//! The `raid1` host tool: md metadata inspection, io_uring member I/O and the NBD export.
//!
//! Layers, each using only the ones listed after it (docs/ARCHITECTURE.md draws the arrows):
//! - [`verbs`]: one module per command-line verb, thin: arguments, then calls into the layers.
//! - [`array`](mod@array): the running array of `raid1 run` (assembly, the engine around raid1-core, the
//!   control socket, how far on-disk metadata is trusted).
//! - [`report`]: mdadm's text reports (examine, bitmap, bad blocks, detail, mdstat).
//! - [`member`]: opens, identifies and reads md members (strict and lenient reads) and finds
//!   other signatures on a device.
//! - [`member_io`]: io_uring member I/O, and one member exported over NBD.
//! - [`nbd`]: the NBD protocol and server, over a backend trait (no member I/O types).
//! - [`config`]: mdadm's configuration file (`DEVICE`, `ARRAY`, `HOMEHOST` lines).
//! - [`text`], [`errno`], `slab`: small helpers shared by the layers above.

/// `print!` for the verbs' reports: a reader that went away (`raid1 detail md0 | grep -q ...`)
/// loses the rest of the output, not the command (see [`text::print_out`]).
macro_rules! out {
    ($($t:tt)*) => {
        $crate::text::print_out(format_args!($($t)*))
    };
}

/// `println!` with [`out!`]'s behaviour.
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::text::print_out(format_args!("{}\n", format_args!($($t)*)))
    };
}

pub mod array;
pub mod config;
pub mod errno;
pub mod member;
pub mod member_io;
pub mod nbd;
pub mod report;
mod slab;
pub mod text;
pub mod ublk;
pub mod verbs;
