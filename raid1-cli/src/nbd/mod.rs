//! NBD: a server (fixed newstyle) that exports a block backend, and the client that reaches
//! members which are NBD exports.
//!
//! - [`proto`]: the wire format, as pure parsers and encoders over byte slices (fuzzable, never panic).
//! - [`NbdServer`]: listeners (`unix:PATH`, `tcp:127.0.0.1:PORT`), the handshake (`NBD_OPT_GO`, `INFO`,
//!   `EXPORT_NAME`, `ABORT`, `LIST`) and the transmission phase (`READ`, `WRITE`, `FLUSH`, `TRIM`,
//!   `WRITE_ZEROES`, `DISC`, simple replies), for many clients with many requests in flight each.
//! - [`client`]: NBD URIs, the client handshake and replies, for members on other machines.
//! - [`Backend`]: what the server exports; requests are submitted asynchronously and complete in any order.
//!
//! The server knows no member I/O: `crate::member_io::export::MemberBackend` is the backend
//! that exports one member (the test server and the benchmarks use it), and the running array
//! is another (`crate::array::engine`).
//!
//! See `docs/NBD.md` for the event-loop design and measurements.

pub(crate) mod args;
pub mod client;
pub mod proto;
mod server;

pub use args::NbdLimitArgs;
pub use server::{
    Backend, Busy, Capabilities, Completion, LentBuffer, ListenAddress, NbdServer, Payload,
    Request, RequestOp, ServerConfig,
};
