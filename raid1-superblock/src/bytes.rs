//! Little-endian field access on byte slices that never panics.
//!
//! Callers check lengths up front and get a typed error; these helpers read as zero (and write
//! nothing) when an access would fall outside the slice, so a logic slip cannot turn into a panic.

/// Reads `N` bytes at `off`, or zeros if the slice is too short.
pub(crate) fn array<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = off.checked_add(N).and_then(|end| b.get(off..end)) {
        out.copy_from_slice(src);
    }
    out
}

pub(crate) fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(array(b, off))
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(array(b, off))
}

pub(crate) fn i32_at(b: &[u8], off: usize) -> i32 {
    i32::from_le_bytes(array(b, off))
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(array(b, off))
}

/// Writes `src` at `off`; does nothing if it would not fit.
pub(crate) fn put(b: &mut [u8], off: usize, src: &[u8]) {
    if let Some(dst) = off
        .checked_add(src.len())
        .and_then(|end| b.get_mut(off..end))
    {
        dst.copy_from_slice(src);
    }
}

pub(crate) fn put_u16(b: &mut [u8], off: usize, v: u16) {
    put(b, off, &v.to_le_bytes());
}

pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    put(b, off, &v.to_le_bytes());
}

pub(crate) fn put_i32(b: &mut [u8], off: usize, v: i32) {
    put(b, off, &v.to_le_bytes());
}

pub(crate) fn put_u64(b: &mut [u8], off: usize, v: u64) {
    put(b, off, &v.to_le_bytes());
}
