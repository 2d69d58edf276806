//! `examine-bitmap`: the report of `mdadm --examine-bitmap` (`-X`) for an internal bitmap.
//!
//! mdadm 4.2 reads the internal bitmap only when given a block device (on a regular file it reads
//! the file as an external bitmap file from offset 0). This tool finds the member's superblock on
//! both block devices and regular files, and falls back to reading an external bitmap file (a
//! bitmap superblock at offset 0) when there is no md superblock.

use serde::Serialize;

use crate::member::Device;
use crate::member::lenient::{self, ExamineError};
use crate::member::raw::{self, RawBitmapSuper, bitmap_bits};
use crate::text::human_size;

/// Bytes mdadm reads per `read(2)` when counting bits.
const READ_CHUNK: usize = 8192;
/// Size of the bitmap superblock; bits start right after it.
const BITMAP_SUPER_LEN: usize = 256;

/// What `mdadm -X` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BitmapReport {
    /// The device path as given.
    pub filename: String,
    /// Whether the bitmap came from an md member (`false`: external bitmap file).
    pub internal: bool,
    /// Byte offset of the bitmap superblock on the device.
    pub offset_bytes: u64,
    /// `magic`.
    pub magic: u32,
    /// `version`.
    pub version: u32,
    /// UUID as printed.
    pub uuid: String,
    /// `events`.
    pub events: u64,
    /// `events_cleared`.
    pub events_cleared: u64,
    /// `state` raw.
    pub state_raw: u32,
    /// "OK", "Out of date" or "Unknown".
    pub state: &'static str,
    /// `chunksize` in bytes.
    pub chunksize_bytes: u32,
    /// Chunk size as printed ("64 MB").
    pub chunksize: String,
    /// `daemon_sleep` seconds.
    pub daemon_sleep_seconds: u32,
    /// `write_behind` (0: normal).
    pub write_behind: u32,
    /// `sync_size / 2` (KiB).
    pub sync_size_kib: u64,
    /// `sync_size` in sectors.
    pub sync_size_sectors: u64,
    #[serde(skip)]
    sync_human: String,
    /// Bits in the bitmap (cut to what could be read).
    pub total_bits: u64,
    /// Bits set.
    pub dirty_bits: u64,
    /// `100 * dirty / total` as printed with one decimal.
    pub dirty_percent: f64,
    /// mdadm's warning when the device ends before the bitmap does.
    pub truncated: bool,
}

/// mdadm's chunk-size formatting: the value shifted down by 1024 while it can be, truncating.
pub fn human_chunksize(bytes: u32) -> String {
    const SUFFIX: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut b = u64::from(bytes);
    let mut i = 0;
    while b >> 10 != 0 && i + 1 < SUFFIX.len() {
        b >>= 10;
        i += 1;
    }
    format!("{b} {}", SUFFIX[i])
}

/// Counts set bits in the first `n` bits of `buf` (bit k is bit k%8 of byte k/8).
fn count_bits(buf: &[u8], n: u64) -> u64 {
    let full = (n / 8) as usize;
    let mut c: u64 = buf
        .iter()
        .take(full)
        .map(|b| u64::from(b.count_ones()))
        .sum();
    let rest = (n % 8) as u32;
    if rest != 0 {
        if let Some(b) = buf.get(full) {
            c += u64::from((b & ((1u8 << rest) - 1)).count_ones());
        }
    }
    c
}

/// Formats like C's `%2.1f` (round half to even on the exact binary value).
pub fn c_one_decimal(v: f64) -> String {
    format!("{v:.1}")
}

/// Reads and counts the bitmap at `offset` the way mdadm does.
fn read_bitmap(
    dev: &Device,
    offset: u64,
) -> Result<(RawBitmapSuper, u64, u64, bool), ExamineError> {
    let mut buf = vec![0u8; READ_CHUNK];
    let n = dev
        .read_at(offset, &mut buf)
        .map_err(|error| ExamineError::Read { offset, error })?;
    if n < BITMAP_SUPER_LEN {
        return Err(ExamineError::Bitmap {
            field: "bitmap superblock",
            value: n as u64,
            expected: "256 readable bytes",
        });
    }
    let sb = RawBitmapSuper::from_slice(&buf[..n]);
    if sb.sync_size() == 0 || sb.chunksize() == 0 {
        return Ok((sb, 0, 0, false));
    }
    let total = bitmap_bits(sb.sync_size(), sb.chunksize()).unwrap_or(0);
    let (mut read_bits, mut dirty) = (0u64, 0u64);
    let mut chunk = &buf[BITMAP_SUPER_LEN..n];
    let mut pos = offset + n as u64;
    while read_bits < total {
        if chunk.is_empty() {
            let got = dev
                .read_at(pos, &mut buf)
                .map_err(|error| ExamineError::Read { offset: pos, error })?;
            if got == 0 {
                break;
            }
            pos += got as u64;
            chunk = &buf[..got];
        }
        let remaining = (total - read_bits).min(chunk.len() as u64 * 8);
        dirty += count_bits(chunk, remaining);
        read_bits += remaining;
        chunk = &[];
    }
    let truncated = read_bits < total;
    Ok((
        sb,
        if truncated { read_bits } else { total },
        dirty,
        truncated,
    ))
}

/// Examines the bitmap of `dev` (an md member, or an external bitmap file).
pub fn examine_bitmap(filename: &[u8], dev: &Device) -> Result<BitmapReport, ExamineError> {
    let (internal, offset) = match lenient::load(dev) {
        Ok(l) => {
            if l.sb.feature_map() & raw::feature::BITMAP_OFFSET == 0 {
                return Err(ExamineError::NoBitmap);
            }
            let sector =
                l.sb.super_offset()
                    .wrapping_add(i64::from(l.sb.bitmap_offset() as i32) as u64);
            let offset = sector.wrapping_shl(9);
            // mdadm's seek to a negative offset fails: "doesn't have bitmap".
            if (offset as i64) < 0 {
                return Err(ExamineError::NoBitmap);
            }
            (true, offset)
        }
        Err(e @ (ExamineError::Open(_) | ExamineError::Read { .. })) => return Err(e),
        Err(e) => {
            let mut head = [0u8; 4];
            let n = dev
                .read_at(0, &mut head)
                .map_err(|error| ExamineError::Read { offset: 0, error })?;
            if n == 4 && u32::from_le_bytes(head) == raw::BITMAP_MAGIC {
                (false, 0)
            } else {
                return Err(e);
            }
        }
    };
    let (sb, total_bits, dirty_bits, truncated) = read_bitmap(dev, offset)?;
    if !(3..=5).contains(&sb.version()) {
        let mut printed = Vec::new();
        printed.extend_from_slice(b"        Filename : ");
        printed.extend_from_slice(filename);
        printed.extend_from_slice(
            format!(
                "\n           Magic : {:08x}\n         Version : {}\n",
                sb.magic(),
                sb.version() as i32
            )
            .as_bytes(),
        );
        return Err(ExamineError::BitmapVersion {
            version: sb.version(),
            printed,
        });
    }
    if sb.nodes() != 0 {
        return Err(ExamineError::Bitmap {
            field: "nodes",
            value: u64::from(sb.nodes()),
            expected: "0 (clustered bitmaps are not supported)",
        });
    }
    let u = sb.uuid();
    let uuid = format!(
        "{:02x}{:02x}{:02x}{:02x}:{:02x}{:02x}{:02x}{:02x}:{:02x}{:02x}{:02x}{:02x}:{:02x}{:02x}{:02x}{:02x}",
        u[0],
        u[1],
        u[2],
        u[3],
        u[4],
        u[5],
        u[6],
        u[7],
        u[8],
        u[9],
        u[10],
        u[11],
        u[12],
        u[13],
        u[14],
        u[15]
    );
    let state = match sb.state() {
        0 => "OK",
        2 => "Out of date",
        _ => "Unknown",
    };
    let dirty_percent =
        100.0 * dirty_bits as f64 / (if total_bits == 0 { 1 } else { total_bits }) as f64;
    Ok(BitmapReport {
        filename: String::from_utf8_lossy(filename).into_owned(),
        internal,
        offset_bytes: offset,
        magic: sb.magic(),
        version: sb.version(),
        uuid,
        events: sb.events(),
        events_cleared: sb.events_cleared(),
        state_raw: sb.state(),
        state,
        chunksize_bytes: sb.chunksize(),
        chunksize: human_chunksize(sb.chunksize()),
        daemon_sleep_seconds: sb.daemon_sleep(),
        write_behind: sb.write_behind(),
        sync_size_kib: sb.sync_size() / 2,
        sync_size_sectors: sb.sync_size(),
        sync_human: human_size(sb.sync_size().wrapping_mul(512) as i64),
        total_bits,
        dirty_bits,
        dirty_percent,
        truncated,
    })
}

impl BitmapReport {
    /// The text `mdadm -X` prints on standard output.
    pub fn to_mdadm_text(&self, filename_bytes: &[u8]) -> Vec<u8> {
        let mut o = Vec::new();
        o.extend_from_slice(b"        Filename : ");
        o.extend_from_slice(filename_bytes);
        o.push(b'\n');
        let mut s = String::new();
        s.push_str(&format!("           Magic : {:08x}\n", self.magic));
        s.push_str(&format!("         Version : {}\n", self.version));
        s.push_str(&format!("            UUID : {}\n", self.uuid));
        s.push_str(&format!("          Events : {}\n", self.events));
        s.push_str(&format!("  Events Cleared : {}\n", self.events_cleared));
        s.push_str(&format!("           State : {}\n", self.state));
        s.push_str(&format!("       Chunksize : {}\n", self.chunksize));
        s.push_str(&format!(
            "          Daemon : {}s flush period\n",
            self.daemon_sleep_seconds as i32
        ));
        if self.write_behind != 0 {
            s.push_str(&format!(
                "      Write Mode : Allow write behind, max {}\n",
                self.write_behind as i32
            ));
        } else {
            s.push_str("      Write Mode : Normal\n");
        }
        s.push_str(&format!(
            "       Sync Size : {}{}\n",
            self.sync_size_kib, self.sync_human
        ));
        s.push_str(&format!(
            "          Bitmap : {} bits (chunks), {} dirty ({}%)\n",
            self.total_bits,
            self.dirty_bits,
            c_one_decimal(self.dirty_percent)
        ));
        o.extend_from_slice(s.as_bytes());
        o
    }
}
