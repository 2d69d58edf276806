//! Small helpers the layers share, each written once: mdadm's size and UUID notation, its
//! timestamps, and random UUIDs.

use raid1_superblock::Uuid;

/// mdadm's `human_size`: "" below 5000 KiB, else " (x.yy MiB x.yy MB)" below 2 GiB, GiB/GB
/// below 2 TiB, else TiB/TB.
/// Uses wrapping signed 64-bit arithmetic like the C code.
pub fn human_size(bytes: i64) -> String {
    if bytes < 5000 * 1024 {
        String::new()
    } else if bytes < 2 * 1024 * 1024 * 1024 {
        let c_mib = (bytes.wrapping_mul(200) / (1 << 20) + 1) / 2;
        let c_mb = (bytes / (1_000_000 / 200) + 1) / 2;
        format!(
            " ({}.{:02} MiB {}.{:02} MB)",
            c_mib / 100,
            c_mib % 100,
            c_mb / 100,
            c_mb % 100
        )
    } else if bytes < 2 * 1024 * 1024 * 1024 * 1024 {
        let c_gib = (bytes.wrapping_mul(200) / (1 << 30) + 1) / 2;
        let c_gb = (bytes / (1_000_000_000 / 200) + 1) / 2;
        format!(
            " ({}.{:02} GiB {}.{:02} GB)",
            c_gib / 100,
            c_gib % 100,
            c_gb / 100,
            c_gb % 100
        )
    } else {
        // mdadm's `bytes * 200` overflows from 46 PB on. The compiler, assuming no overflow,
        // treats the value as positive: it shifts instead of dividing and prints the result as
        // unsigned. Reproduce that machine behaviour, not the C abstract machine.
        let c_tib = ((bytes.wrapping_mul(200) >> 40) + 1) >> 1;
        let c_tib = c_tib as u64;
        let c_tb = (bytes / (1_000_000_000_000 / 200) + 1) / 2;
        format!(
            " ({}.{:02} TiB {}.{:02} TB)",
            c_tib / 100,
            c_tib % 100,
            c_tb / 100,
            c_tb % 100
        )
    }
}

/// UUID as mdadm prints it: 4 groups of 8 hex digits in byte order.
pub fn uuid_text(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(35);
    for (i, b) in u.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

unsafe extern "C" {
    /// POSIX `tzset(3)` (not exported by the `libc` crate for this target).
    fn tzset();
}

/// `ctime(3)` of the low 40 bits of an md timestamp, cut to 24 characters as mdadm prints it
/// (`%.24s`), in the local time zone (`TZ`).
pub fn md_ctime(raw: u64) -> String {
    let secs = (raw & 0xff_ffff_ffff) as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value; `localtime_r` fills it from `secs`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the calls.
    let ok = unsafe {
        tzset();
        !libc::localtime_r(&secs, &mut tm).is_null()
    };
    if !ok {
        return "(null)".to_string();
    }
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let day = DAYS.get(tm.tm_wday as usize).copied().unwrap_or("???");
    let month = MONTHS.get(tm.tm_mon as usize).copied().unwrap_or("???");
    let full = format!(
        "{day} {month}{:3} {:02}:{:02}:{:02} {}",
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        i64::from(tm.tm_year) + 1900
    );
    full.chars().take(24).collect()
}

/// Random bytes from the kernel (`getrandom(2)`).
pub fn random_uuid() -> std::io::Result<Uuid> {
    let mut b = [0u8; 16];
    let mut filled = 0;
    while filled < b.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `b`.
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), b.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(Uuid(b))
}

/// mdadm's `parse_size`: a whole number with an optional unit, `K` (KiB, the default), `M`,
/// `G`, `T` or `s` (512-byte sectors); the result in sectors. As mdadm, at least 8 sectors;
/// and a whole number of KiB, since md takes a component size in KiB (mdadm halves the
/// sectors it parsed, which would drop an odd one without a word).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let shown = text.escape_default();
    let sectors = parse_sectors(text, "size")?;
    if sectors < 8 {
        return Err(format!("size \"{shown}\": at least 4K (8 sectors)"));
    }
    if sectors % 2 != 0 {
        return Err(format!(
            "size \"{shown}\": {sectors} sectors is not a whole number of KiB (md counts a \
             component size in KiB)"
        ));
    }
    Ok(sectors)
}

/// mdadm's bitmap chunk (`--bitmap-chunk`, parsed by `parse_size`): a power of two of
/// sectors, in bytes (md's header field is 32 bits).
pub fn parse_bitmap_chunk(text: &str) -> Result<u32, String> {
    let shown = text.escape_default();
    let sectors = parse_sectors(text, "bitmap chunk")?;
    if !sectors.is_power_of_two() {
        return Err(format!("bitmap chunk \"{shown}\": not a power of two"));
    }
    u32::try_from(sectors * 512)
        .map_err(|_| format!("bitmap chunk \"{shown}\": more than md's largest (2G)"))
}

/// A whole positive number with an optional unit (`K`, the default, `M`, `G`, `T`, or `s`
/// for sectors), in sectors; `what` names the value in the errors.
fn parse_sectors(text: &str, what: &str) -> Result<u64, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let shown = text.escape_default();
    let n: u64 = number.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
        format!("{what} \"{shown}\": expected a whole number with an optional K, M, G, T or s unit")
    })?;
    let per = match unit {
        "" | "K" => 2,
        "M" => 2 << 10,
        "G" => 2 << 20,
        "T" => 2 << 30,
        "s" => 1,
        _ => {
            return Err(format!(
                "{what} \"{shown}\": unknown unit \"{}\" (K, M, G, T or s)",
                unit.escape_default()
            ));
        }
    };
    let sectors = n
        .checked_mul(per)
        .filter(|s| *s <= u64::MAX >> 9)
        .ok_or_else(|| format!("{what} \"{shown}\": too large (more than 2^64 bytes)"))?;
    Ok(sectors)
}

/// A period in seconds, as md's `bitmap/time_base` takes it: a positive decimal number
/// (`5`, `0.25`), at most 9 digits after the point and at most 2^32 - 1 whole seconds (the
/// bitmap header's `daemon_sleep`); in nanoseconds. `what` names the value in the errors.
pub fn parse_seconds(text: &str, what: &str) -> Result<u64, String> {
    let shown = text.escape_default();
    let bad = || format!("{what} \"{shown}\": expected a number of seconds such as 5 or 0.25");
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) {
        return Err(bad());
    }
    if fraction.len() > 9 {
        return Err(format!(
            "{what} \"{shown}\": more than 9 digits after the point (nanoseconds)"
        ));
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    if secs > u64::from(u32::MAX) {
        return Err(format!(
            "{what} \"{shown}\": more than {} seconds (the bitmap header's limit)",
            u32::MAX
        ));
    }
    let frac: u64 = format!("{fraction:0<9}").parse().map_err(|_| bad())?;
    let ns = secs * 1_000_000_000 + frac;
    if ns == 0 {
        return Err(format!(
            "{what} \"{shown}\": must be more than 0 (md refuses a period of 0)"
        ));
    }
    Ok(ns)
}

/// Set when standard output failed other than by a closed pipe.
static OUTPUT_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Set when standard output failed in any way: nothing more is written to it.
static OUTPUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Write a report to standard output. A closed pipe (the reader exited early) is not an error
/// of the command: the rest of the output is dropped and the command's work goes on, so that
/// a verb that changes an array or its members finishes what it started whatever its output
/// meets. Any other failure to write is said once on standard error, and [`output_failed`]
/// makes the command's exit status non-zero.
pub fn print_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if OUTPUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        OUTPUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            OUTPUT_FAILED.store(true, Ordering::Relaxed);
            eprintln!("raid1: cannot write to standard output: {e}");
        }
    }
}

/// Whether a report could not be written (other than to a reader that went away).
pub fn output_failed() -> bool {
    OUTPUT_FAILED.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::{parse_bitmap_chunk, parse_seconds, parse_size};

    #[test]
    fn periods_as_md_time_base_reads_them() {
        let p = |t| parse_seconds(t, "delay");
        assert_eq!(p("5"), Ok(5_000_000_000));
        assert_eq!(p("0.25"), Ok(250_000_000));
        assert_eq!(p(".5"), Ok(500_000_000));
        assert_eq!(p("2."), Ok(2_000_000_000));
        assert_eq!(p("0.000000001"), Ok(1));
        assert_eq!(p("4294967295"), Ok(4_294_967_295_000_000_000));
        for bad in [
            "",
            ".",
            "0",
            "0.0",
            "-1",
            "+1",
            "1e3",
            "1.2.3",
            "5s",
            " 5",
            "4294967296",
            "0.0000000001",
            "99999999999999999999",
        ] {
            let e = p(bad).expect_err(bad);
            assert!(e.starts_with("delay \""), "{e}");
        }
    }

    #[test]
    fn bitmap_chunks_as_mdadm_reads_them() {
        assert_eq!(parse_bitmap_chunk("64"), Ok(64 << 10));
        assert_eq!(parse_bitmap_chunk("64K"), Ok(64 << 10));
        assert_eq!(parse_bitmap_chunk("1M"), Ok(1 << 20));
        assert_eq!(parse_bitmap_chunk("1s"), Ok(512));
        assert_eq!(parse_bitmap_chunk("2G"), Ok(1 << 31));
        for bad in ["", "0", "3K", "96K", "3s", "4G", "1T", "64KB", "-64", "k"] {
            assert!(parse_bitmap_chunk(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_as_mdadm_reads_them() {
        assert_eq!(parse_size("64"), Ok(128));
        assert_eq!(parse_size("64K"), Ok(128));
        assert_eq!(parse_size("3M"), Ok(6144));
        assert_eq!(parse_size("1G"), Ok(2 << 20));
        assert_eq!(parse_size("2T"), Ok(4 << 30));
        assert_eq!(parse_size("1024s"), Ok(1024));
        for bad in [
            "",
            "0",
            "3",
            "7s",
            "1025s",
            "-5",
            "+5",
            "12k",
            "12MB",
            "M",
            " 12",
            "12 ",
            "99999999999999999999",
            "36028797018963968K",
            "1e3",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        // The largest: 2^55 - 1 sectors is odd; 2^54 KiB is 2^55 sectors, over the limit.
        assert!(parse_size(&format!("{}K", (1u64 << 54) - 1)).is_ok());
        assert!(parse_size(&format!("{}K", 1u64 << 54)).is_err());
    }
}
