//! A failed operation's errno, shared by the member I/O layer (io_uring results) and the NBD
//! layer (which sends it to the client as an NBD error), so neither depends on the other.

use std::fmt;
use std::io;

/// A positive errno value from a failed command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.0))
    }
}
