//! How a seed is run: the caller's options.

/// How to run a seed.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Log every event, member I/O and decision to stderr.
    pub trace: bool,
    /// Oracles switched off (labels from [`ORACLES`]), to measure what each one catches.
    pub without: Vec<String>,
}
