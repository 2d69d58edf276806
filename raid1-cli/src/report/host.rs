//! The host facts mdadm's examine depends on: the home host and local-time formatting.

use std::path::Path;

/// The home host mdadm would use: `--homehost`, else `HOMEHOST` from the configuration file,
/// else the system host name. `<system>` means the host name; an empty value or `<none>` means
/// no home host (no "local to host" note).
pub fn homehost(option: Option<&str>, config: Option<&Path>) -> Option<Vec<u8>> {
    let chosen = match option {
        Some(h) => Some(h.as_bytes().to_vec()),
        None => config_homehost(config),
    };
    let chosen = match chosen {
        None => system_hostname(),
        Some(h) if h.eq_ignore_ascii_case(b"<system>") => system_hostname().or(Some(h)),
        Some(h) => Some(h),
    };
    chosen.filter(|h| !h.is_empty() && !h.eq_ignore_ascii_case(b"<none>"))
}

/// The host name as `gethostname(2)` returns it.
pub fn system_hostname() -> Option<Vec<u8>> {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len() - 1);
    Some(buf[..end].to_vec())
}

fn config_homehost(config: Option<&Path>) -> Option<Vec<u8>> {
    crate::config::load(config).ok()??.1.homehost
}
