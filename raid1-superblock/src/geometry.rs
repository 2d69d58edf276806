//! Where the metadata lives: superblock placement per minor version, and the default geometry
//! mdadm chooses at `--create` for a RAID1 member (data offset, sizes, bad-block log, internal
//! bitmap).
//!
//! All quantities are 512-byte sectors unless the name says bytes.

use core::fmt;

use crate::error::{Error, ErrorKind};
use crate::superblock::Superblock;
use crate::types::FeatureMap;

/// Smallest device mdadm accepts for 1.x metadata, in sectors.
pub const MIN_DEVICE_SECTORS: u64 = 24;

/// Sectors mdadm reserves for the bad-block log (4 KiB, 512 entries).
pub const MDADM_BBLOG_SECTORS: u16 = 8;

/// mdadm's default internal bitmap chunk: 64 MiB, in bytes.
pub const MDADM_DEFAULT_BITMAP_CHUNK: u32 = 64 << 20;

/// Size of the bitmap superblock in bytes.
const BITMAP_HEADER_BYTES: u64 = 256;

/// The 1.x "minor version": where the superblock sits on the device. The on-disk structure is
/// identical for all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MinorVersion {
    /// 1.0: near the end, `(dev - 16) & !7`; data starts at sector 0.
    V1_0,
    /// 1.1: at sector 0.
    V1_1,
    /// 1.2: at sector 8 (4 KiB from the start). mdadm's default.
    V1_2,
}

impl MinorVersion {
    /// All three, in mdadm's probing order.
    pub const ALL: [MinorVersion; 3] = [MinorVersion::V1_0, MinorVersion::V1_1, MinorVersion::V1_2];

    /// The minor number: 0, 1 or 2.
    pub const fn minor(self) -> u8 {
        match self {
            MinorVersion::V1_0 => 0,
            MinorVersion::V1_1 => 1,
            MinorVersion::V1_2 => 2,
        }
    }

    /// From the minor number 0, 1 or 2.
    pub const fn from_minor(minor: u32) -> Result<MinorVersion, Error> {
        match minor {
            0 => Ok(MinorVersion::V1_0),
            1 => Ok(MinorVersion::V1_1),
            2 => Ok(MinorVersion::V1_2),
            m => Err(Error::new(
                "minor_version",
                ErrorKind::UnsupportedVersion,
                m as i128,
            )),
        }
    }

    /// Parses `"1.0"`, `"1.1"`, `"1.2"` (also `"1.00"`, `"1.01"`, `"1.02"` and `"default"` =
    /// 1.2, as mdadm's `--metadata`).
    pub fn parse(s: &str) -> Result<MinorVersion, Error> {
        match s.trim_start_matches('0') {
            "1.0" | "1.00" => Ok(MinorVersion::V1_0),
            "1.1" | "1.01" => Ok(MinorVersion::V1_1),
            "1.2" | "1.02" | "default" => Ok(MinorVersion::V1_2),
            _ => Err(Error::new(
                "metadata",
                ErrorKind::UnsupportedVersion,
                s.len() as i128,
            )),
        }
    }

    /// The minor version mdadm reports for a superblock with this `super_offset`:
    /// `<= 4` 1.1 (normally 0), `<= 8` 1.2 (normally 8), else 1.0.
    pub const fn from_super_offset(super_offset: u64) -> MinorVersion {
        if super_offset <= 4 {
            MinorVersion::V1_1
        } else if super_offset <= 8 {
            MinorVersion::V1_2
        } else {
            MinorVersion::V1_0
        }
    }

    /// Sector where this minor version puts the superblock on a device of `dev_sectors`
    /// sectors. Errors if the device is smaller than [`MIN_DEVICE_SECTORS`].
    pub const fn superblock_sector(self, dev_sectors: u64) -> Result<u64, Error> {
        if dev_sectors < MIN_DEVICE_SECTORS {
            return Err(Error::range(
                "device size",
                dev_sectors as i128,
                MIN_DEVICE_SECTORS as i128,
                u64::MAX as i128,
            ));
        }
        Ok(match self {
            MinorVersion::V1_0 => (dev_sectors - 16) & !7,
            MinorVersion::V1_1 => 0,
            MinorVersion::V1_2 => 8,
        })
    }
}

impl fmt::Display for MinorVersion {
    /// `"1.0"`, `"1.1"` or `"1.2"` (mdadm's "Version" line).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.minor())
    }
}

/// mdadm's `choose_bm_space`: sectors reserved for a bitmap on a device (or array part) of
/// `sectors`: 0 below 64 KiB, 128 KiB from 200 GiB (+64 KiB), 64 KiB above 8 GiB (+4 KiB),
/// else 4 KiB.
pub const fn choose_bm_space(sectors: u64) -> u64 {
    if sectors < 128 {
        0
    } else if sectors - 128 >= 200 * 1024 * 1024 * 2 {
        256
    } else if sectors - 8 > 8 * 1024 * 1024 * 2 {
        128
    } else {
        8
    }
}

/// Number of bits (chunks) of a bitmap covering `sync_size` sectors with `chunk_bytes` per bit:
/// `ceil(sync_size * 512 / chunk_bytes)`. Zero if `chunk_bytes` is 0.
pub const fn bitmap_chunks(sync_size: u64, chunk_bytes: u32) -> u64 {
    if chunk_bytes == 0 {
        return 0;
    }
    let bytes = sync_size as u128 * 512;
    bytes.div_ceil(chunk_bytes as u128) as u64
}

/// Bytes of a bitmap region (256-byte header plus `ceil(chunks / 8)` bytes of bits), rounded up
/// to `boundary` bytes (mdadm's `calc_bitmap_size`). `boundary` 0 is treated as 1.
pub const fn bitmap_region_bytes(chunks: u64, boundary: u64) -> u64 {
    let b = if boundary == 0 { 1 } else { boundary };
    (chunks.div_ceil(8) + BITMAP_HEADER_BYTES)
        .div_ceil(b)
        .saturating_mul(b)
}

/// Internal bitmap placement chosen at create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitmapGeometry {
    /// Signed sector offset of the bitmap superblock from the md superblock (+8 for 1.1/1.2,
    /// negative for 1.0).
    pub offset: i32,
    /// Bytes of data per bit (power of two).
    pub chunk_bytes: u32,
    /// Number of bits: `ceil(size * 512 / chunk_bytes)`.
    pub chunks: u64,
    /// Sectors the bitmap occupies (header plus bits, rounded up to 4 KiB).
    pub sectors: u64,
}

/// The geometry mdadm 4.2 (and current mdadm) gives a RAID1 member at `--create` (bad-block
/// log enabled): [`CreateGeometry::mdadm_default`] for members of one size and default options,
/// [`CreateGeometry::mdadm_member`] for one member under a data offset, size and bitmap chosen
/// by the caller (`--data-offset`, `--size`, `--bitmap-chunk`, members of different sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateGeometry {
    /// Metadata minor version.
    pub minor: MinorVersion,
    /// Sector of the superblock.
    pub super_offset: u64,
    /// First data sector.
    pub data_offset: u64,
    /// Sectors available for data on the member.
    pub data_size: u64,
    /// Used sectors = array size (rounded down to 64 KiB for RAID1).
    pub size: u64,
    /// Signed sector offset of the bad-block log from the superblock (0 if none fits).
    pub bblog_offset: i32,
    /// Sectors of the bad-block log (0 if none fits).
    pub bblog_size: u16,
    /// The internal bitmap, if one was requested.
    pub bitmap: Option<BitmapGeometry>,
}

const fn err_small(dev_sectors: u64, what: &'static str) -> Error {
    Error::inconsistent("device size", dev_sectors as i128, what)
}

/// mdadm's data offset for 1.1/1.2 chosen from a device of `dev_sectors` (validate_geometry1;
/// mdadm takes it from the first listed device for every member): headroom of about 0.1 % (at
/// most 128 MiB), plus superblock and bitmap space, rounded up to 1 MiB. 0 for 1.0, whose data
/// starts the device.
pub const fn mdadm_data_offset(minor: MinorVersion, dev_sectors: u64) -> u64 {
    match minor {
        MinorVersion::V1_0 => 0,
        MinorVersion::V1_1 | MinorVersion::V1_2 => {
            let mut headroom: u64 = 128 * 1024 * 2;
            while (headroom << 10) > dev_sectors {
                headroom >>= 1;
            }
            (24 + choose_bm_space(dev_sectors) + headroom).next_multiple_of(2048)
        }
    }
}

/// Sectors a member of `dev_sectors` can give the array, its data starting at `data_offset`
/// (1.1/1.2; ignored for 1.0): mdadm validate_geometry1's `freesize`. `None` for a device
/// below [`MIN_DEVICE_SECTORS`] or one the metadata does not fit.
pub const fn mdadm_usable(minor: MinorVersion, dev_sectors: u64, data_offset: u64) -> Option<u64> {
    if dev_sectors < MIN_DEVICE_SECTORS {
        return None;
    }
    match minor {
        MinorVersion::V1_0 => (dev_sectors & !7).checked_sub(16 + 8 + choose_bm_space(dev_sectors)),
        MinorVersion::V1_1 | MinorVersion::V1_2 => dev_sectors.checked_sub(data_offset),
    }
}

/// Why [`mdadm_bitmap`] gives no bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitmapRefusal {
    /// The array is too small to keep room for a bitmap.
    NoRoom,
    /// The chunk the bits would need is beyond 32 bits of bytes.
    ChunkTooLarge,
    /// The chunk asked for is below 4 KiB or its bits do not fit the room ("Given bitmap
    /// chunk size not supported"); `min_chunk` bytes is the smallest that fits.
    ChunkTooSmall {
        /// The smallest chunk whose bits fit, bytes.
        min_chunk: u64,
    },
}

/// The internal bitmap mdadm's create gives an array of `size` sectors (add_internal_bitmap1):
/// without a chunk asked for, 64 MiB per bit or more if the bits would not fit 128 KiB; with
/// one (bytes, a power of two), that chunk if its bits fit all the room the metadata keeps for
/// the bitmap. Placed 8 sectors after a 1.1/1.2 superblock, or below a 1.0 one and its
/// bad-block log, sized there with mdadm's spare bit.
pub const fn mdadm_bitmap(
    minor: MinorVersion,
    size: u64,
    chunk: Option<u32>,
) -> Result<BitmapGeometry, BitmapRefusal> {
    let mut room = choose_bm_space(size);
    if chunk.is_none() && room > 256 {
        room = 256;
    }
    if room <= 1 {
        return Err(BitmapRefusal::NoRoom);
    }
    let max_bits = (room * 512 - BITMAP_HEADER_BYTES) * 8;
    let mut min_chunk: u64 = 4096;
    let mut bits = size / 8 + 1; // size * 512 / 4096, plus mdadm's spare bit
    while bits > max_bits {
        min_chunk *= 2;
        bits = bits.div_ceil(2);
    }
    let chunk = match chunk {
        None if min_chunk < MDADM_DEFAULT_BITMAP_CHUNK as u64 => MDADM_DEFAULT_BITMAP_CHUNK as u64,
        None => min_chunk,
        Some(c) if (c as u64) < min_chunk => {
            return Err(BitmapRefusal::ChunkTooSmall { min_chunk });
        }
        Some(c) => c as u64,
    };
    if chunk > u32::MAX as u64 {
        return Err(BitmapRefusal::ChunkTooLarge);
    }
    let chunks = bitmap_chunks(size, chunk as u32);
    let sectors = bitmap_region_bytes(chunks, 4096) / 512;
    let offset = match minor {
        MinorVersion::V1_0 => {
            // mdadm sizes the 1.0 gap with one spare bit.
            let room =
                bitmap_region_bytes((size as u128 * 512 / chunk as u128) as u64 + 1, 4096) / 512;
            -(room as i64) - MDADM_BBLOG_SECTORS as i64
        }
        MinorVersion::V1_1 | MinorVersion::V1_2 => 8,
    };
    if offset < i32::MIN as i64 {
        return Err(BitmapRefusal::ChunkTooLarge);
    }
    Ok(BitmapGeometry {
        offset: offset as i32,
        chunk_bytes: chunk as u32,
        chunks,
        sectors,
    })
}

impl CreateGeometry {
    /// mdadm's default geometry for a RAID1 whose members all have `dev_sectors` sectors,
    /// with or without an internal bitmap (default 64 MiB chunk, grown if needed): the data
    /// offset of [`mdadm_data_offset`], the usable space of [`mdadm_usable`] rounded down to
    /// 64 KiB, the bitmap of [`mdadm_bitmap`], placed by [`CreateGeometry::mdadm_member`].
    ///
    /// Errors: device smaller than 24 sectors, no room for data, or (with `internal_bitmap`) no
    /// room for a bitmap.
    pub const fn mdadm_default(
        minor: MinorVersion,
        dev_sectors: u64,
        internal_bitmap: bool,
    ) -> Result<Self, Error> {
        if let Err(e) = minor.superblock_sector(dev_sectors) {
            return Err(e);
        }
        let data_offset = mdadm_data_offset(minor, dev_sectors);
        let size = match mdadm_usable(minor, dev_sectors, data_offset) {
            Some(f) if f >= 128 => f & !127,
            _ => return Err(err_small(dev_sectors, "data area")),
        };
        let bitmap = if internal_bitmap {
            match mdadm_bitmap(minor, size, None) {
                Ok(b) => Some(b),
                Err(BitmapRefusal::ChunkTooLarge) => {
                    return Err(err_small(dev_sectors, "bitmap chunk"));
                }
                Err(_) => return Err(err_small(dev_sectors, "bitmap space")),
            }
        } else {
            None
        };
        Self::mdadm_member(minor, dev_sectors, data_offset, size, bitmap)
    }

    /// One member of `dev_sectors` in an array of `size` sectors whose data starts at
    /// `data_offset` (1.1/1.2; 1.0 keeps it at 0) with `bitmap` (mdadm write_init_super1):
    /// its superblock, its data area (1.0: up to the bitmap and bad-block log below the
    /// superblock, shortened to what the device has; 1.1/1.2: the rest of the device) and its
    /// 4 KiB bad-block log (after the bitmap or its room; squeezed in front of the data, or
    /// left out, when a data offset asked for leaves less). The caller checked that the member
    /// holds `size` sectors from `data_offset`.
    pub const fn mdadm_member(
        minor: MinorVersion,
        dev_sectors: u64,
        data_offset: u64,
        size: u64,
        bitmap: Option<BitmapGeometry>,
    ) -> Result<Self, Error> {
        let super_offset = match minor.superblock_sector(dev_sectors) {
            Ok(s) => s,
            Err(e) => return Err(e),
        };
        let (bm_offset, bm_space) = match bitmap {
            Some(b) => (b.offset as i64, b.sectors),
            None => (8, choose_bm_space(size)),
        };
        let (data_offset, data_size, bblog_offset, bblog_size) = match minor {
            MinorVersion::V1_0 => {
                let mut space = bm_space + 8;
                if super_offset < size + space {
                    space = super_offset.saturating_sub(size);
                }
                let log = if space >= 8 {
                    (-8, MDADM_BBLOG_SECTORS)
                } else {
                    (0, 0)
                };
                (0, super_offset - space, log.0, log.1)
            }
            MinorVersion::V1_1 | MinorVersion::V1_2 => {
                let so = super_offset as i64;
                let dof = data_offset as i64;
                let log = if dof >= so + bm_offset + bm_space as i64 + 8 {
                    (bm_offset + bm_space as i64, MDADM_BBLOG_SECTORS)
                } else if dof >= so + 16 {
                    (dof - 8 - so, MDADM_BBLOG_SECTORS)
                } else {
                    (0, 0)
                };
                (
                    data_offset,
                    dev_sectors.saturating_sub(data_offset),
                    log.0,
                    log.1,
                )
            }
        };
        Ok(CreateGeometry {
            minor,
            super_offset,
            data_offset,
            data_size,
            size,
            bblog_offset: bblog_offset as i32,
            bblog_size,
            bitmap,
        })
    }

    /// Writes the geometry into a superblock: `super_offset`, `data_offset`, `data_size`,
    /// `size`, `bblog_offset`, `bblog_size`, and with a bitmap `bitmap_offset` plus the
    /// BITMAP_OFFSET feature (cleared without one). Other fields are untouched.
    pub fn apply_to<const ROLES: usize>(&self, sb: &mut Superblock<ROLES>) {
        sb.super_offset = self.super_offset;
        sb.data_offset = self.data_offset;
        sb.data_size = self.data_size;
        sb.size = self.size;
        sb.bblog_offset = self.bblog_offset;
        sb.bblog_size = self.bblog_size;
        match self.bitmap {
            Some(b) => {
                sb.bitmap_offset = b.offset;
                sb.feature_map.insert(FeatureMap::BITMAP_OFFSET);
            }
            None => {
                sb.bitmap_offset = 0;
                sb.feature_map.remove(FeatureMap::BITMAP_OFFSET);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::format;

    const MIB: u64 = 2048;
    const GIB: u64 = 1024 * MIB;

    /// One row of the worked table of md-format.md §1.10: member size, format, data_offset,
    /// super_offset, data_size without / with bitmap, size, bblog_offset without / with bitmap,
    /// bitmap offset, bitmap chunks.
    struct Row {
        dev: u64,
        minor: MinorVersion,
        data_offset: u64,
        super_offset: u64,
        data_size: (u64, u64),
        size: u64,
        bblog: (i32, i32),
        bitmap_offset: i32,
        bits: u64,
    }

    #[allow(clippy::too_many_arguments)]
    const fn row(
        dev: u64,
        minor: MinorVersion,
        data_offset: u64,
        super_offset: u64,
        data_size: (u64, u64),
        size: u64,
        bblog: (i32, i32),
        bitmap_offset: i32,
        bits: u64,
    ) -> Row {
        Row {
            dev,
            minor,
            data_offset,
            super_offset,
            data_size,
            size,
            bblog,
            bitmap_offset,
            bits,
        }
    }

    #[test]
    fn worked_table_of_md_format_1_10() {
        use MinorVersion::*;
        let rows = [
            row(
                64 * MIB,
                V1_2,
                2048,
                8,
                (129_024, 129_024),
                129_024,
                (16, 16),
                8,
                1,
            ),
            row(
                64 * MIB,
                V1_0,
                0,
                131_056,
                (131_040, 131_040),
                130_944,
                (-8, -8),
                -16,
                1,
            ),
            row(
                1000 * MIB,
                V1_2,
                2048,
                8,
                (2_045_952, 2_045_952),
                2_045_952,
                (16, 16),
                8,
                16,
            ),
            row(
                GIB,
                V1_2,
                4096,
                8,
                (2_093_056, 2_093_056),
                2_093_056,
                (16, 16),
                8,
                16,
            ),
            row(
                GIB,
                V1_0,
                0,
                2_097_136,
                (2_097_120, 2_097_120),
                2_097_024,
                (-8, -8),
                -16,
                16,
            ),
            row(
                8 * GIB,
                V1_2,
                18_432,
                8,
                (16_758_784, 16_758_784),
                16_758_784,
                (16, 16),
                8,
                128,
            ),
            row(
                10 * GIB,
                V1_2,
                18_432,
                8,
                (20_953_088, 20_953_088),
                20_953_088,
                (136, 16),
                8,
                160,
            ),
            row(
                100 * GIB,
                V1_2,
                133_120,
                8,
                (209_582_080, 209_582_080),
                209_582_080,
                (136, 16),
                8,
                1599,
            ),
            row(
                128 * GIB,
                V1_2,
                264_192,
                8,
                (268_171_264, 268_171_264),
                268_171_264,
                (136, 16),
                8,
                2046,
            ),
            row(
                250 * GIB,
                V1_2,
                264_192,
                8,
                (524_023_808, 524_023_808),
                524_023_808,
                (264, 16),
                8,
                3998,
            ),
            row(
                1024 * GIB,
                V1_2,
                264_192,
                8,
                (2_147_219_456, 2_147_219_456),
                2_147_219_456,
                (264, 16),
                8,
                16_382,
            ),
            row(
                4096 * GIB,
                V1_2,
                264_192,
                8,
                (8_589_670_400, 8_589_670_400),
                8_589_670_400,
                (264, 32),
                8,
                65_534,
            ),
            row(
                1024 * GIB,
                V1_0,
                0,
                2_147_483_632,
                (2_147_483_368, 2_147_483_616),
                2_147_483_264,
                (-8, -8),
                -16,
                16_384,
            ),
        ];
        for r in &rows {
            let what = format!("{} {}", r.dev, r.minor);
            let plain = CreateGeometry::mdadm_default(r.minor, r.dev, false).unwrap();
            let bm = CreateGeometry::mdadm_default(r.minor, r.dev, true).unwrap();
            for (g, data_size, bblog) in [
                (plain, r.data_size.0, r.bblog.0),
                (bm, r.data_size.1, r.bblog.1),
            ] {
                assert_eq!(g.data_offset, r.data_offset, "data_offset {what}");
                assert_eq!(g.super_offset, r.super_offset, "super_offset {what}");
                assert_eq!(g.data_size, data_size, "data_size {what}");
                assert_eq!(g.size, r.size, "size {what}");
                assert_eq!(g.bblog_offset, bblog, "bblog_offset {what}");
                assert_eq!(g.bblog_size, 8, "bblog_size {what}");
            }
            assert_eq!(plain.bitmap, None);
            let b = bm.bitmap.unwrap();
            assert_eq!(b.offset, r.bitmap_offset, "bitmap offset {what}");
            assert_eq!(b.chunk_bytes, 64 << 20, "bitmap chunk {what}");
            assert_eq!(b.chunks, r.bits, "bitmap bits {what}");
            // 1.1 equals 1.2 except for the superblock position.
            if r.minor == V1_2 {
                let g11 = CreateGeometry::mdadm_default(V1_1, r.dev, true).unwrap();
                assert_eq!(g11.super_offset, 0);
                assert_eq!(
                    (g11.data_offset, g11.data_size, g11.size),
                    (bm.data_offset, bm.data_size, bm.size)
                );
                assert_eq!(g11.bblog_offset, bm.bblog_offset);
            }
        }
        let four_tib = CreateGeometry::mdadm_default(MinorVersion::V1_2, 4096 * GIB, true).unwrap();
        assert_eq!(four_tib.bitmap.unwrap().sectors, 24);
    }

    #[test]
    fn superblock_placement() {
        assert_eq!(
            MinorVersion::V1_0.superblock_sector(131_072).unwrap(),
            131_056
        );
        assert_eq!(
            MinorVersion::V1_0.superblock_sector(131_079).unwrap(),
            131_056
        );
        assert_eq!(
            MinorVersion::V1_0.superblock_sector(131_080).unwrap(),
            131_064
        );
        assert_eq!(MinorVersion::V1_0.superblock_sector(24).unwrap(), 8);
        assert_eq!(MinorVersion::V1_1.superblock_sector(24).unwrap(), 0);
        assert_eq!(MinorVersion::V1_2.superblock_sector(24).unwrap(), 8);
        assert!(MinorVersion::V1_0.superblock_sector(23).is_err());
        assert_eq!(MinorVersion::from_super_offset(0), MinorVersion::V1_1);
        assert_eq!(MinorVersion::from_super_offset(8), MinorVersion::V1_2);
        assert_eq!(MinorVersion::from_super_offset(131_056), MinorVersion::V1_0);
        for m in MinorVersion::ALL {
            let s = format!("{m}");
            assert_eq!(MinorVersion::parse(&s).unwrap(), m);
            assert_eq!(MinorVersion::from_minor(u32::from(m.minor())).unwrap(), m);
            let at = m.superblock_sector(1 << 20).unwrap();
            assert_eq!(MinorVersion::from_super_offset(at), m);
        }
        assert_eq!(MinorVersion::parse("default").unwrap(), MinorVersion::V1_2);
        assert!(MinorVersion::parse("0.90").is_err());
    }

    #[test]
    fn choose_bm_space_thresholds() {
        assert_eq!(choose_bm_space(127), 0);
        assert_eq!(choose_bm_space(128), 8);
        assert_eq!(choose_bm_space(8 * GIB + 8), 8);
        assert_eq!(choose_bm_space(8 * GIB + 9), 128);
        assert_eq!(choose_bm_space(200 * GIB + 127), 128);
        assert_eq!(choose_bm_space(200 * GIB + 128), 256);
    }

    #[test]
    fn tiny_and_huge_devices_do_not_panic() {
        for dev in [
            0,
            1,
            23,
            24,
            100,
            160,
            2047,
            2048,
            4096,
            u64::MAX / 2,
            u64::MAX - 7,
            u64::MAX,
        ] {
            for m in MinorVersion::ALL {
                for bm in [false, true] {
                    let _ = CreateGeometry::mdadm_default(m, dev, bm);
                }
            }
        }
        assert!(CreateGeometry::mdadm_default(MinorVersion::V1_2, 2048, false).is_err());
    }

    /// mdadm's write_init_super1 when the room before the data is short (a small
    /// `--data-offset`) or the room below a 1.0 superblock is (a `--size` close to the whole
    /// device): the bad-block log is squeezed in front of the data, or left out.
    #[test]
    fn a_member_with_little_room_gets_its_log_where_mdadm_puts_it() {
        use MinorVersion::*;
        let m = |minor, dev, dof, size| CreateGeometry::mdadm_member(minor, dev, dof, size, None);
        // 1.2, 16 MiB, no bitmap: the room kept for a bitmap is 8 sectors (choose_bm_space).
        // From sector 32 on the log follows that room (8 + 8 = 16 from the superblock) ...
        let g = m(V1_2, 32 * MIB / 2, 32, 16_000).unwrap();
        assert_eq!((g.bblog_offset, g.bblog_size), (16, 8));
        // ... before that it ends where the data starts (24 - 8 - 8 = 8) ...
        let g = m(V1_2, 32 * MIB / 2, 24, 16_000).unwrap();
        assert_eq!((g.bblog_offset, g.bblog_size), (8, 8));
        assert_eq!((g.data_offset, g.data_size), (24, 32 * MIB / 2 - 24));
        // ... and with less than 16 sectors after the superblock there is none.
        let g = m(V1_2, 32 * MIB / 2, 23, 16_000).unwrap();
        assert_eq!((g.bblog_offset, g.bblog_size), (0, 0));
        // 1.1: the superblock at 0, the same rule from there.
        let g = m(V1_1, 32 * MIB / 2, 16, 16_000).unwrap();
        assert_eq!((g.bblog_offset, g.bblog_size), (8, 8));
        // 1.0, 16 MiB: superblock at 32752; bitmap room 8 plus the log's 8 below it.
        let dev = 32 * MIB / 2;
        let g = m(V1_0, dev, 0, 32_000).unwrap();
        assert_eq!((g.super_offset, g.data_size), (32_752, 32_752 - 16));
        assert_eq!((g.bblog_offset, g.bblog_size), (-8, 8));
        // A size that leaves 10 sectors below the superblock: the data area ends at the size
        // and the log still fits ...
        let g = m(V1_0, dev, 0, 32_742).unwrap();
        assert_eq!((g.data_size, g.bblog_offset, g.bblog_size), (32_742, -8, 8));
        // ... one that leaves 7 has no log.
        let g = m(V1_0, dev, 0, 32_745).unwrap();
        assert_eq!((g.data_size, g.bblog_offset, g.bblog_size), (32_745, 0, 0));
    }
}
