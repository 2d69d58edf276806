//! Logging through defmt when the `defmt` feature is on; compiled out otherwise.

#[cfg(feature = "defmt")]
macro_rules! log_info { ($($t:tt)*) => { defmt::info!($($t)*) }; }
#[cfg(not(feature = "defmt"))]
macro_rules! log_info { ($($t:tt)*) => {{}}; }
#[cfg(feature = "defmt")]
macro_rules! log_warn { ($($t:tt)*) => { defmt::warn!($($t)*) }; }
#[cfg(not(feature = "defmt"))]
macro_rules! log_warn { ($($t:tt)*) => {{}}; }

#[allow(unused_imports)]
pub(crate) use {log_info, log_warn};
