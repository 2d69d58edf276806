//! Logging through defmt when the `defmt` feature is on; compiled out otherwise.

#[cfg(feature = "defmt")]
#[allow(unused_macros)]
macro_rules! log_info { ($($t:tt)*) => { defmt::info!($($t)*) }; }
#[cfg(not(feature = "defmt"))]
#[allow(unused_macros)]
macro_rules! log_info {
    ($($t:tt)*) => {{}};
}
#[cfg(feature = "defmt")]
#[allow(unused_macros)]
macro_rules! log_warn { ($($t:tt)*) => { defmt::warn!($($t)*) }; }
#[cfg(not(feature = "defmt"))]
#[allow(unused_macros)]
macro_rules! log_warn {
    ($($t:tt)*) => {{}};
}

#[cfg(feature = "defmt")]
#[allow(unused_macros)]
macro_rules! log_debug { ($($t:tt)*) => { defmt::debug!($($t)*) }; }
#[cfg(not(feature = "defmt"))]
#[allow(unused_macros)]
macro_rules! log_debug {
    ($($t:tt)*) => {{}};
}

#[allow(unused_imports)]
pub(crate) use {log_debug, log_info, log_warn};
