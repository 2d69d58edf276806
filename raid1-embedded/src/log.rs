//! Logging through defmt when the `defmt` feature is on; compiled out otherwise (the arguments
//! are still evaluated by reference, so that they count as used).

#[cfg(feature = "defmt")]
macro_rules! log_info { ($($t:tt)*) => { defmt::info!($($t)*) }; }
#[cfg(feature = "defmt")]
macro_rules! log_warn { ($($t:tt)*) => { defmt::warn!($($t)*) }; }
#[cfg(feature = "defmt")]
macro_rules! log_debug { ($($t:tt)*) => { defmt::debug!($($t)*) }; }

#[cfg(not(feature = "defmt"))]
macro_rules! log_silent {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{
        $(let _ = &$arg;)*
    }};
}
#[cfg(not(feature = "defmt"))]
macro_rules! log_info { ($($t:tt)*) => { $crate::log::log_silent!($($t)*) }; }
#[cfg(not(feature = "defmt"))]
macro_rules! log_warn { ($($t:tt)*) => { $crate::log::log_silent!($($t)*) }; }
#[cfg(not(feature = "defmt"))]
macro_rules! log_debug { ($($t:tt)*) => { $crate::log::log_silent!($($t)*) }; }

#[cfg(not(feature = "defmt"))]
pub(crate) use log_silent;
#[allow(unused_imports)]
pub(crate) use {log_debug, log_info, log_warn};
