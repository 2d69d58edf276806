//! The geometry `mdadm --create` (4.2) gives a RAID1 whose members may differ in size.
//!
//! mdadm computes the data offset from the *first* listed device and uses it for every member
//! (1.1/1.2); each member's usable space is its size minus the metadata; the array size is the
//! smallest usable space rounded down to 64 KiB; the internal bitmap is sized for the array; and
//! each member's `data_size` and bad-block log follow from its own size (mdadm super1.c
//! validate_geometry1, add_internal_bitmap1, write_init_super1; Create.c). The formulas live in
//! raid1-superblock's geometry (the data offset, the usable space, the bitmap, a member's
//! placement); this module applies mdadm's rules across a device list and names the device
//! each refusal is about. For members of equal size the result equals
//! [`raid1_superblock::CreateGeometry::mdadm_default`] (checked by the tests below).

use std::fmt;

use raid1_superblock::geometry::{
    BitmapRefusal, MIN_DEVICE_SECTORS, mdadm_bitmap, mdadm_data_offset, mdadm_usable,
};
use raid1_superblock::{BitmapGeometry, CreateGeometry, MinorVersion};

/// Smallest array size: 64 KiB (mdadm rounds the size down to 64 KiB for RAID1).
pub const MIN_ARRAY_SECTORS: u64 = 128;

/// One member's placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberLayout {
    /// Device size in sectors.
    pub dev_sectors: u64,
    /// Sector of the superblock.
    pub super_offset: u64,
    /// First data sector.
    pub data_offset: u64,
    /// Sectors available for data from `data_offset`.
    pub data_size: u64,
    /// Signed sector offset of the bad-block log from the superblock (0: none).
    pub bblog_offset: i32,
    /// Sectors of the bad-block log (0: none).
    pub bblog_size: u16,
}

impl MemberLayout {
    /// Sectors `[start, end)` of the metadata area that create writes completely: for 1.1/1.2
    /// everything before the data, for 1.0 everything after it (bitmap, bad-block log,
    /// superblock and the tail of the device).
    pub fn metadata_area(&self, bitmap: Option<&BitmapGeometry>) -> (u64, u64) {
        if self.data_offset > 0 {
            (0, self.data_offset)
        } else {
            let so = self.super_offset as i64;
            let mut start = (self.data_size as i64).min(so);
            if self.bblog_size > 0 {
                start = start.min(so + self.bblog_offset as i64);
            }
            if let Some(b) = bitmap {
                start = start.min(so + b.offset as i64);
            }
            (start.max(0) as u64, self.dev_sectors)
        }
    }
}

/// The whole array's geometry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayLayout {
    /// Metadata minor version.
    pub minor: MinorVersion,
    /// Used sectors per member = array size.
    pub size: u64,
    /// The internal bitmap, if any.
    pub bitmap: Option<BitmapGeometry>,
    /// One entry per listed device, `None` for `missing`.
    pub members: Vec<Option<MemberLayout>>,
    /// Usable sectors of each present member before rounding (for the size-difference rule).
    pub usable: Vec<Option<u64>>,
}

/// Why no geometry exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// Device `index` cannot hold the metadata plus 64 KiB of data.
    TooSmall {
        /// Position in the device list.
        index: usize,
        /// Its size in sectors.
        dev_sectors: u64,
        /// The smallest size that would do, in sectors.
        need_sectors: u64,
    },
    /// Every device is `missing`.
    NoDevice,
    /// Device `index` has less usable space than the requested size (`--size`).
    SmallerThanSize {
        /// Position in the device list.
        index: usize,
        /// Its usable sectors.
        usable: u64,
        /// The requested size, sectors.
        size: u64,
    },
    /// The requested size (`--size`) is below the smallest array.
    SizeTooSmall(u64),
    /// `--data-offset` with metadata 1.0, whose data starts each member.
    DataOffsetWith1_0,
    /// `--data-offset` below the superblock's (and the bitmap's) space.
    DataOffsetTooSmall {
        /// The requested offset, sectors.
        given: u64,
        /// The smallest that holds the metadata, sectors.
        min: u64,
    },
    /// The requested bitmap chunk is too small for the bits to fit the bitmap's room
    /// (mdadm: "Given bitmap chunk size not supported").
    BitmapChunkTooSmall {
        /// The requested chunk, bytes.
        chunk: u32,
        /// The smallest chunk that fits, bytes.
        min_chunk: u64,
        /// The array size, sectors.
        size: u64,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::TooSmall {
                dev_sectors,
                need_sectors,
                ..
            } => write!(
                f,
                "too small: {dev_sectors} sectors ({} KiB); the metadata plus the smallest \
                 array (64 KiB) need {need_sectors} sectors ({} KiB)",
                dev_sectors / 2,
                need_sectors.div_ceil(2)
            ),
            LayoutError::NoDevice => f.write_str("every device is `missing`"),
            LayoutError::SmallerThanSize { usable, size, .. } => write!(
                f,
                "smaller than --size: {} KiB usable after the metadata, {} KiB asked for",
                usable / 2,
                size / 2
            ),
            LayoutError::DataOffsetWith1_0 => f.write_str(
                "--data-offset: metadata 1.0 keeps the data at the start of each member (its \
                 superblock is at the end)",
            ),
            LayoutError::DataOffsetTooSmall { given, min } => write!(
                f,
                "--data-offset {} KiB leaves no room for the metadata before the data (the \
                 superblock, and the bitmap when there is one): at least {} KiB",
                given / 2,
                min.div_ceil(2)
            ),
            LayoutError::SizeTooSmall(size) => write!(
                f,
                "--size {} KiB is below the smallest array ({} KiB)",
                size / 2,
                MIN_ARRAY_SECTORS / 2
            ),
            LayoutError::BitmapChunkTooSmall {
                chunk,
                min_chunk,
                size,
            } => write!(
                f,
                "--bitmap-chunk of {chunk} bytes is too small for an array of {} KiB: its bits \
                 would not fit the space the metadata keeps for the bitmap; the smallest chunk \
                 that fits is {} KiB",
                size / 2,
                min_chunk / 1024
            ),
        }
    }
}

/// Smallest device size that gives [`MIN_ARRAY_SECTORS`] usable sectors.
fn min_device(minor: MinorVersion, data_offset: u64) -> u64 {
    (MIN_DEVICE_SECTORS..)
        .find(|&d| mdadm_usable(minor, d, data_offset).is_some_and(|u| u >= MIN_ARRAY_SECTORS))
        .unwrap_or(u64::MAX)
}

/// The internal bitmap for an array of `size` sectors (raid1-superblock's [`mdadm_bitmap`]):
/// a requested chunk whose bits do not fit is [`LayoutError::BitmapChunkTooSmall`];
/// `Ok(None)`: no room for a bitmap.
pub fn bitmap_for(
    minor: MinorVersion,
    size: u64,
    chunk: Option<u32>,
) -> Result<Option<BitmapGeometry>, LayoutError> {
    match mdadm_bitmap(minor, size, chunk) {
        Ok(b) => Ok(Some(b)),
        Err(BitmapRefusal::ChunkTooSmall { min_chunk }) => Err(LayoutError::BitmapChunkTooSmall {
            chunk: chunk.unwrap_or(0),
            min_chunk,
            size,
        }),
        Err(BitmapRefusal::NoRoom | BitmapRefusal::ChunkTooLarge) => Ok(None),
    }
}

/// mdadm's geometry for devices of the given sizes (`None` = `missing`), in list order: the
/// data offset from the first device (or as asked), the size from the smallest (or as asked),
/// each member placed by raid1-superblock's [`CreateGeometry::mdadm_member`].
pub fn plan(
    minor: MinorVersion,
    internal_bitmap: bool,
    bitmap_chunk: Option<u32>,
    size: Option<u64>,
    data_offset: Option<u64>,
    devices: &[Option<u64>],
) -> Result<ArrayLayout, Vec<LayoutError>> {
    let Some(first) = devices.iter().flatten().next().copied() else {
        return Err(vec![LayoutError::NoDevice]);
    };
    let asked_offset = data_offset;
    if asked_offset.is_some() && minor == MinorVersion::V1_0 {
        return Err(vec![LayoutError::DataOffsetWith1_0]);
    }
    let data_offset = data_offset.unwrap_or_else(|| mdadm_data_offset(minor, first));
    let mut errors = Vec::new();
    let usable_all: Vec<Option<u64>> = devices
        .iter()
        .map(|d| d.and_then(|d| mdadm_usable(minor, d, data_offset)))
        .collect();
    for (index, d) in devices.iter().enumerate() {
        if let Some(dev) = *d {
            if usable_all[index].is_none_or(|u| u < MIN_ARRAY_SECTORS) {
                errors.push(LayoutError::TooSmall {
                    index,
                    dev_sectors: dev,
                    need_sectors: min_device(minor, data_offset),
                });
            }
        }
    }
    if let Some(want) = size {
        if want < MIN_ARRAY_SECTORS {
            errors.push(LayoutError::SizeTooSmall(want));
        }
        for (index, u) in usable_all.iter().enumerate() {
            if let Some(&u) = u.as_ref().filter(|&&u| u >= MIN_ARRAY_SECTORS && u < want) {
                errors.push(LayoutError::SmallerThanSize {
                    index,
                    usable: u,
                    size: want,
                });
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // mdadm's --size is taken as given; without it, the smallest member's usable space
    // rounded down to 64 KiB.
    let size =
        size.unwrap_or_else(|| usable_all.iter().flatten().min().copied().unwrap_or(0) & !127);
    let bitmap = if internal_bitmap {
        bitmap_for(minor, size, bitmap_chunk).map_err(|e| vec![e])?
    } else {
        None
    };
    // A data offset asked for must leave the superblock its 4 KiB (mdadm reserves them from
    // its offset) and the bitmap its region, 8 sectors after the superblock, with the 4 KiB
    // bad-block log after it (mdadm would put the log inside the bitmap's region otherwise).
    if let Some(given) = asked_offset {
        let so = minor.superblock_sector(first).unwrap_or(0);
        let min = so
            + bitmap
                .as_ref()
                .map_or(8, |b| (b.offset as u64).max(8) + b.sectors + 8);
        if given < min {
            return Err(vec![LayoutError::DataOffsetTooSmall { given, min }]);
        }
    }
    let members = devices
        .iter()
        .map(|d| {
            d.and_then(|dev| {
                // Devices below md's minimum were refused above.
                let g = CreateGeometry::mdadm_member(minor, dev, data_offset, size, bitmap).ok()?;
                Some(MemberLayout {
                    dev_sectors: dev,
                    super_offset: g.super_offset,
                    data_offset: g.data_offset,
                    data_size: g.data_size,
                    bblog_offset: g.bblog_offset,
                    bblog_size: g.bblog_size,
                })
            })
        })
        .collect();
    Ok(ArrayLayout {
        minor,
        size,
        bitmap,
        members,
        usable: usable_all,
    })
}

impl ArrayLayout {
    /// Largest and smallest usable space of the present members, in sectors.
    pub fn usable_range(&self) -> (u64, u64) {
        let present = self.usable.iter().flatten();
        let max = present.clone().max().copied().unwrap_or(0);
        let min = present.min().copied().unwrap_or(0);
        (min, max)
    }

    /// The size-difference rule: the largest member's usable space exceeds the smallest's by
    /// more than 1 % (mdadm warns at the same ratio, measured against the rounded array size).
    pub fn sizes_differ(&self) -> bool {
        let (min, max) = self.usable_range();
        (max - min).saturating_mul(100) > max
    }

    /// mdadm's rule for a requested size: the largest member's usable space exceeds the
    /// array's size by more than 1 % (most of a member would go unused).
    pub fn size_leaves_room(&self) -> bool {
        let (_, max) = self.usable_range();
        max.saturating_sub(self.size).saturating_mul(100) > max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raid1_superblock::geometry::choose_bm_space;

    /// [`plan`] with every option at mdadm's default.
    fn defaults(
        minor: MinorVersion,
        bitmap: bool,
        devices: &[Option<u64>],
    ) -> Result<ArrayLayout, Vec<LayoutError>> {
        plan(minor, bitmap, None, None, None, devices)
    }

    #[test]
    fn equal_members_match_the_superblock_crate() {
        const MIB: u64 = 2048;
        let sizes = [
            200,
            2200,
            4096,
            16 * MIB,
            64 * MIB,
            1000 * MIB,
            1024 * MIB,
            1024 * MIB - 8,
            8 * 1024 * MIB,
            8 * 1024 * MIB + 9,
            10 * 1024 * MIB + 3,
            100 * 1024 * MIB,
            250 * 1024 * MIB,
            1024 * 1024 * MIB,
            4 * 1024 * 1024 * MIB + 12345,
        ];
        for minor in MinorVersion::ALL {
            for bitmap in [false, true] {
                for &dev in &sizes {
                    let want = CreateGeometry::mdadm_default(minor, dev, bitmap);
                    let got = defaults(minor, bitmap, &[Some(dev), None, Some(dev)]);
                    match (want, got) {
                        (Ok(w), Ok(g)) => {
                            assert_eq!(g.size, w.size, "{minor} {dev} {bitmap}");
                            assert_eq!(g.bitmap, w.bitmap, "{minor} {dev} {bitmap}");
                            let m = g.members[0].unwrap();
                            assert_eq!(m.super_offset, w.super_offset);
                            assert_eq!(m.data_offset, w.data_offset);
                            assert_eq!(m.data_size, w.data_size, "{minor} {dev} {bitmap}");
                            assert_eq!(m.bblog_offset, w.bblog_offset, "{minor} {dev} {bitmap}");
                            assert_eq!(m.bblog_size, w.bblog_size);
                            assert_eq!(g.members[2], g.members[0]);
                            assert_eq!(g.members[1], None);
                        }
                        (Err(_), Err(_)) => {}
                        (w, g) => panic!("{minor} {dev} {bitmap}: crate {w:?}, plan {g:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn first_device_sets_the_data_offset_and_smallest_sets_the_size() {
        const GIB: u64 = 2 * 1024 * 1024;
        // 1 GiB first: data offset 4096 for all; a 2 GiB second member keeps it.
        let l = defaults(MinorVersion::V1_2, true, &[Some(GIB), Some(2 * GIB)]).unwrap();
        assert_eq!(l.members[0].unwrap().data_offset, 4096);
        assert_eq!(l.members[1].unwrap().data_offset, 4096);
        assert_eq!(l.size, GIB - 4096);
        assert_eq!(l.members[1].unwrap().data_size, 2 * GIB - 4096);
        assert!(l.sizes_differ());
        let l = defaults(MinorVersion::V1_2, true, &[Some(GIB), Some(GIB + 2048)]).unwrap();
        assert!(!l.sizes_differ());
    }

    #[test]
    fn too_small_devices_are_named_with_the_minimum() {
        let e = defaults(MinorVersion::V1_2, true, &[Some(32768), Some(2000)]).unwrap_err();
        assert_eq!(
            e,
            vec![LayoutError::TooSmall {
                index: 1,
                dev_sectors: 2000,
                need_sectors: 2048 + 128
            }]
        );
        let l = defaults(MinorVersion::V1_2, true, &[Some(2176), Some(2176)]).unwrap();
        assert_eq!(l.size, 128);
        assert!(defaults(MinorVersion::V1_0, false, &[Some(100)]).is_err());
        assert_eq!(
            defaults(MinorVersion::V1_0, false, &[None]).unwrap_err(),
            vec![LayoutError::NoDevice]
        );
    }

    #[test]
    fn metadata_area_covers_all_metadata() {
        let l = defaults(MinorVersion::V1_0, true, &[Some(32768)]).unwrap();
        let m = l.members[0].unwrap();
        let (s, e) = m.metadata_area(l.bitmap.as_ref());
        assert_eq!((s, e), (32752 - 16, 32768));
        let l = defaults(MinorVersion::V1_2, false, &[Some(32768)]).unwrap();
        assert_eq!(l.members[0].unwrap().metadata_area(None), (0, 2048));
    }

    /// A requested size (mdadm's `--size`) is the array's size as given, not rounded; a member
    /// without that much usable space is named; the 1 % rule is then the largest member's
    /// room over the size.
    #[test]
    fn a_requested_size_is_kept_or_refused() {
        const MIB: u64 = 2048;
        let l = plan(
            MinorVersion::V1_2,
            true,
            None,
            Some(10_000),
            None,
            &[Some(16 * MIB), Some(20 * MIB)],
        )
        .unwrap();
        assert_eq!(l.size, 10_000);
        assert_eq!(l.bitmap.unwrap().chunks, 1);
        assert!(l.size_leaves_room());
        let full = defaults(MinorVersion::V1_2, true, &[Some(16 * MIB), Some(16 * MIB)]).unwrap();
        assert!(!full.size_leaves_room());
        let e = plan(
            MinorVersion::V1_0,
            false,
            None,
            Some(16 * MIB),
            None,
            &[Some(16 * MIB), None],
        )
        .unwrap_err();
        assert!(
            matches!(e[..], [LayoutError::SmallerThanSize { index: 0, size, .. }] if size == 16 * MIB),
            "{e:?}"
        );
        let e = plan(
            MinorVersion::V1_2,
            false,
            None,
            Some(64),
            None,
            &[Some(16 * MIB)],
        )
        .unwrap_err();
        assert_eq!(e, vec![LayoutError::SizeTooSmall(64)]);
    }

    /// A requested chunk (mdadm's `--bitmap-chunk`): taken as given when its bits fit the
    /// space kept for the bitmap; refused, naming the smallest that fits, when they do not.
    #[test]
    fn a_requested_bitmap_chunk_is_kept_or_refused() {
        const GIB: u64 = 2 * 1024 * 1024;
        let dev = 200 * GIB;
        let size = defaults(MinorVersion::V1_2, false, &[Some(dev)])
            .unwrap()
            .size;
        let room = choose_bm_space(size);
        let default = bitmap_for(MinorVersion::V1_2, size, None).unwrap().unwrap();
        assert_eq!(default.chunk_bytes, 64 << 20);
        // The smallest power of two whose bits fit the whole room.
        let fits = |c: u64| size * 512 / c < (room * 512 - 256) * 8;
        let smallest = (12..32).map(|k| 1u64 << k).find(|&c| fits(c)).unwrap();
        let got = bitmap_for(MinorVersion::V1_2, size, Some(smallest as u32))
            .unwrap()
            .unwrap();
        assert_eq!(u64::from(got.chunk_bytes), smallest);
        assert!(got.chunks > default.chunks);
        let half = (smallest / 2) as u32;
        assert_eq!(
            bitmap_for(MinorVersion::V1_2, size, Some(half)).unwrap_err(),
            LayoutError::BitmapChunkTooSmall {
                chunk: half,
                min_chunk: smallest,
                size
            }
        );
        // Below 4 KiB mdadm refuses any array.
        assert!(bitmap_for(MinorVersion::V1_2, 8192, Some(2048)).is_err());
        assert!(bitmap_for(MinorVersion::V1_0, 8192, Some(4096)).is_ok());
    }
}
