//! `examine --badblocks`: the bad-block log as `mdadm --examine-badblocks` lists it.

use serde::Serialize;

use crate::member::Device;
use crate::member::lenient::{ExamineError, Loaded};
use crate::member::raw::feature;

/// Largest `bblog_size` (sectors) mdadm agrees to read.
const MAX_BBLOG_SECTORS: u16 = 100;

/// One bad range.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct BadRange {
    /// First bad sector (device-absolute, as stored).
    pub sector: u64,
    /// Length in sectors.
    pub sectors: i32,
}

/// The state of a member's bad-block log.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum BadBlocks {
    /// No log reserved (or a size mdadm does not read).
    NotConfigured,
    /// Log reserved, feature bit 0x8 clear.
    Empty,
    /// The entries, in on-disk order, up to the all-ones terminator.
    Listed {
        /// The ranges.
        ranges: Vec<BadRange>,
    },
}

/// Reads the bad-block log of a loaded member.
pub fn read(dev: &Device, l: &Loaded) -> Result<BadBlocks, ExamineError> {
    let sb = &l.sb;
    if sb.bblog_size() == 0 || sb.bblog_size() > MAX_BBLOG_SECTORS || sb.bblog_offset() == 0 {
        return Ok(BadBlocks::NotConfigured);
    }
    if sb.feature_map() & feature::BAD_BLOCKS == 0 {
        return Ok(BadBlocks::Empty);
    }
    let size = usize::from(sb.bblog_size()) * 512;
    let sector = sb
        .super_offset()
        .wrapping_add(i64::from(sb.bblog_offset() as i32) as u64);
    let offset = sector.wrapping_shl(9);
    if (offset as i64) < 0 {
        return Err(ExamineError::Field {
            sector: sb.super_offset(),
            field: "bblog_offset",
            value: u64::from(sb.bblog_offset()),
            expected: "an offset inside the device",
        });
    }
    let mut buf = vec![0u8; size];
    let n = dev
        .read_at(offset, &mut buf)
        .map_err(|error| ExamineError::Read { offset, error })?;
    if n != size {
        return Err(ExamineError::Read {
            offset,
            error: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("bad-block log cut short ({n} of {size} bytes)"),
            ),
        });
    }
    let shift = u32::from(sb.bblog_shift());
    let mut ranges = Vec::new();
    for entry in buf.chunks_exact(8) {
        let mut a = [0u8; 8];
        a.copy_from_slice(entry);
        let bb = u64::from_le_bytes(a);
        if bb == u64::MAX {
            break;
        }
        let count = (bb & 0x3ff) as i32;
        ranges.push(BadRange {
            sector: (bb >> 10).wrapping_shl(shift),
            sectors: count.wrapping_shl(shift),
        });
    }
    Ok(BadBlocks::Listed { ranges })
}

/// The text mdadm prints on standard output for this state.
pub fn to_mdadm_text(device: &[u8], state: &BadBlocks) -> Vec<u8> {
    let mut o = Vec::new();
    match state {
        BadBlocks::NotConfigured => {
            o.extend_from_slice(b"No bad-blocks list configured on ");
            o.extend_from_slice(device);
            o.push(b'\n');
        }
        BadBlocks::Empty => {
            o.extend_from_slice(b"Bad-blocks list is empty in ");
            o.extend_from_slice(device);
            o.push(b'\n');
        }
        BadBlocks::Listed { ranges } => {
            o.extend_from_slice(b"Bad-blocks on ");
            o.extend_from_slice(device);
            o.extend_from_slice(b":\n");
            for r in ranges {
                o.extend_from_slice(
                    format!("{:>20} for {} sectors\n", r.sector, r.sectors).as_bytes(),
                );
            }
        }
    }
    o
}
