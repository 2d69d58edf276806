//! The command-line limits of an NBD server (`raid1 run`).

use std::time::Duration;

use clap::Args;

use super::ServerConfig;

/// Limits of the NBD server, as `raid1 run` options.
#[derive(Debug, Clone, Args)]
pub struct NbdLimitArgs {
    /// NBD clients served at once; one more is refused when it asks for the export
    /// (NBD_REP_ERR_POLICY, then closed).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_clients: u32,
    /// MiB one NBD client may hold in the server (payloads of its requests in flight and its
    /// unsent replies); past it the server stops reading from the client. The server's memory
    /// bound grows by this plus 2 MiB per client (docs/CLI.md).
    #[arg(long, value_name = "MIB", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub client_buffer_mib: u32,
    /// An NBD connection that has not finished its handshake in this time is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, value_parser = positive_seconds)]
    pub handshake_timeout: f64,
}

/// A number of seconds on the command line: more than 0, at most a day (shared with the
/// control verbs' `--timeout`).
pub fn positive_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("\"{}\" is not a number of seconds", s.escape_default()))?;
    if v.is_finite() && v > 0.0 && v <= 86400.0 {
        Ok(v)
    } else {
        Err(format!("{s} seconds: give more than 0 and at most 86400"))
    }
}

impl NbdLimitArgs {
    /// Sets the server's limits from the options.
    pub fn apply(&self, config: &mut ServerConfig) {
        config.max_clients = self.max_clients as usize;
        config.max_bytes_per_client = (self.client_buffer_mib as usize) << 20;
        config.handshake_timeout = Duration::from_secs_f64(self.handshake_timeout);
    }
}
