//! The error type shared by every parser and writer of this crate.

use core::fmt;

/// What is wrong with the value of a field. Carried by [`Error`], which also names the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input (or output) buffer is shorter than the structure needs: `needed` bytes;
    /// [`Error::value`] is the length that was given.
    BufferTooSmall {
        /// Bytes the operation needs.
        needed: usize,
    },
    /// A magic number does not match (`value` is what was found).
    BadMagic,
    /// A version field holds a version this crate does not handle.
    UnsupportedVersion,
    /// A feature bit that this crate refuses (unknown to the kernel, or not meaningful for
    /// RAID1). `value` is the single offending bit.
    UnsupportedFeature,
    /// A reserved/padding area that must be zero is not; `value` is the first non-zero
    /// byte (or word) found, [`ErrorKind::NonZeroPad::offset`] its byte offset in the structure.
    NonZeroPad {
        /// Byte offset of the first non-zero byte in the structure.
        offset: usize,
    },
    /// The stored checksum (`value`) differs from the computed one.
    ChecksumMismatch {
        /// The checksum computed over the bytes.
        computed: u32,
    },
    /// The value lies outside the range the format allows (`min..=max`).
    OutOfRange {
        /// Smallest valid value.
        min: i128,
        /// Largest valid value.
        max: i128,
    },
    /// The value is inconsistent with another field or with the device (named in `other`).
    Inconsistent {
        /// The other field or quantity it conflicts with.
        other: &'static str,
    },
    /// A fixed-capacity container chosen by the caller is too small: `value` needs more than
    /// `capacity` entries (or an entry beyond the capacity is in use).
    CapacityExceeded {
        /// The capacity that was chosen.
        capacity: usize,
    },
    /// Bad-block entries out of order (`value` is the start of the entry that is not after the
    /// previous one).
    Unsorted,
    /// Bad-block entries that overlap (`value` is the start of the later one).
    Overlap,
    /// An index (bit number, device number) beyond the end of the table.
    IndexOutOfBounds {
        /// Number of valid indices.
        len: u64,
    },
}

/// A typed error: which field is wrong, how, and with what value.
///
/// `field` is the on-disk field name as in the kernel's `md_p.h` / `md-bitmap.h`
/// (e.g. `"max_dev"`, `"feature_map"`, `"bitmap.chunksize"`, `"badblock[3]"` is rendered as
/// field `"badblock"` with the index in the kind or value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Error {
    /// The field (or buffer) that is wrong.
    pub field: &'static str,
    /// What is wrong with it.
    pub kind: ErrorKind,
    /// The offending value (signed fields keep their sign; buffer errors give the length).
    pub value: i128,
}

impl Error {
    /// Builds an error.
    pub const fn new(field: &'static str, kind: ErrorKind, value: i128) -> Self {
        Error { field, kind, value }
    }

    pub(crate) const fn short(field: &'static str, needed: usize, got: usize) -> Self {
        Error::new(field, ErrorKind::BufferTooSmall { needed }, got as i128)
    }

    pub(crate) const fn range(field: &'static str, value: i128, min: i128, max: i128) -> Self {
        Error::new(field, ErrorKind::OutOfRange { min, max }, value)
    }

    pub(crate) const fn inconsistent(
        field: &'static str,
        value: i128,
        other: &'static str,
    ) -> Self {
        Error::new(field, ErrorKind::Inconsistent { other }, value)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (field, v) = (self.field, self.value);
        match self.kind {
            ErrorKind::BufferTooSmall { needed } => {
                write!(f, "{field}: buffer too small: {v} bytes, need {needed}")
            }
            ErrorKind::BadMagic => write!(f, "{field}: bad magic {v:#x}"),
            ErrorKind::UnsupportedVersion => write!(f, "{field}: unsupported version {v}"),
            ErrorKind::UnsupportedFeature => {
                write!(f, "{field}: unsupported feature bit {v:#x}")?;
                match u32::try_from(v)
                    .ok()
                    .and_then(crate::types::FeatureMap::bit_name)
                {
                    Some(name) => write!(f, " ({name})"),
                    None => write!(f, " (unknown to the kernel)"),
                }
            }
            ErrorKind::NonZeroPad { offset } => {
                write!(
                    f,
                    "{field}: reserved byte at offset {offset} is {v:#x}, must be 0"
                )
            }
            ErrorKind::ChecksumMismatch { computed } => {
                write!(
                    f,
                    "{field}: checksum mismatch: stored {v:#010x}, computed {computed:#010x}"
                )
            }
            ErrorKind::OutOfRange { min, max } => {
                write!(f, "{field}: value {v} out of range {min}..={max}")
            }
            ErrorKind::Inconsistent { other } => {
                write!(f, "{field}: value {v} inconsistent with {other}")
            }
            ErrorKind::CapacityExceeded { capacity } => {
                write!(
                    f,
                    "{field}: value {v} exceeds the chosen capacity {capacity}"
                )
            }
            ErrorKind::Unsorted => write!(f, "{field}: entry starting at {v} is out of order"),
            ErrorKind::Overlap => write!(
                f,
                "{field}: entry starting at {v} overlaps the previous one"
            ),
            ErrorKind::IndexOutOfBounds { len } => {
                write!(f, "{field}: index {v} out of bounds (length {len})")
            }
        }
    }
}

impl core::error::Error for Error {}
