//! A lenient, field-by-field view of the bytes `mdadm --examine` shows.
//!
//! `examine` must print whatever a member carries, including values the kernel would refuse (bad
//! checksum, unknown feature bits, impossible offsets), so it reads the fields straight from the
//! 4 KiB superblock block instead of going through the validating parser of `raid1-superblock`.
//! Every accessor reads a fixed offset inside a fixed-size array: no input can make it panic.

/// Bytes mdadm reads at a superblock location (the largest possible v1 superblock).
pub const SB_BLOCK: usize = 4096;
/// Bytes mdadm reads at a bitmap location to check the bitmap superblock.
pub const BITMAP_BLOCK: usize = 512;
/// Largest `max_dev` whose `dev_roles` table fits in [`SB_BLOCK`].
pub const MAX_DEVS: u32 = raid1_superblock::MAX_DEV as u32;

/// The md superblock magic.
pub const SB_MAGIC: u32 = raid1_superblock::SB_MAGIC;
/// The bitmap superblock magic ("bitm").
pub const BITMAP_MAGIC: u32 = raid1_superblock::bitmap::BITMAP_MAGIC;

/// Feature bits mdadm's examine looks at, as the raw `u32` the lenient view reads: each is
/// raid1-superblock's `FeatureMap` bit (one definition of the format).
pub mod feature {
    use raid1_superblock::FeatureMap;

    /// Internal bitmap present at `bitmap_offset`.
    pub const BITMAP_OFFSET: u32 = FeatureMap::BITMAP_OFFSET.bits();
    /// `recovery_offset` is valid.
    pub const RECOVERY_OFFSET: u32 = FeatureMap::RECOVERY_OFFSET.bits();
    /// A reshape is in progress.
    pub const RESHAPE_ACTIVE: u32 = FeatureMap::RESHAPE_ACTIVE.bits();
    /// The bad-block log holds entries.
    pub const BAD_BLOCKS: u32 = FeatureMap::BAD_BLOCKS.bits();
    /// This device replaces the active device with the same role.
    pub const REPLACEMENT: u32 = FeatureMap::REPLACEMENT.bits();
    /// `new_offset` is valid.
    pub const NEW_OFFSET: u32 = FeatureMap::NEW_OFFSET.bits();
    /// Partial parity log (RAID5).
    pub const PPL: u32 = FeatureMap::PPL.bits();
    /// Multiple partial parity logs (RAID5).
    pub const MULTIPLE_PPLS: u32 = FeatureMap::MULTIPLE_PPLS.bits();
    /// RAID0 layout is meaningful.
    pub const RAID0_LAYOUT: u32 = FeatureMap::RAID0_LAYOUT.bits();
}

/// Role values with a special meaning in `dev_roles`.
pub mod role {
    /// Spare or unused entry.
    pub const SPARE: u16 = 0xffff;
    /// Faulty device.
    pub const FAULTY: u16 = 0xfffe;
    /// Journal device.
    pub const JOURNAL: u16 = 0xfffd;
    /// Largest value that still counts as a slot number in mdadm's consistency check.
    pub const MAX: u16 = 0xff00;
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]),
        None => 0,
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    match b.get(at..at + 8) {
        Some(s) => {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        }
        None => 0,
    }
}

fn array16(b: &[u8], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    if let Some(s) = b.get(at..at + 16) {
        a.copy_from_slice(s);
    }
    a
}

/// The 4 KiB block read at a v1 superblock location, with `feature_map` as mdadm holds it in
/// memory (it drops the bitmap bit when the bitmap superblock does not match).
#[derive(Clone)]
pub struct RawSuperblock {
    bytes: Box<[u8; SB_BLOCK]>,
}

macro_rules! field {
    ($(#[$doc:meta])* $name:ident, $ty:ident, $reader:ident, $off:expr) => {
        $(#[$doc])*
        pub fn $name(&self) -> $ty {
            $reader(&self.bytes[..], $off)
        }
    };
}

impl RawSuperblock {
    /// Wraps a block read from a device.
    pub fn new(bytes: Box<[u8; SB_BLOCK]>) -> Self {
        RawSuperblock { bytes }
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8; SB_BLOCK] {
        &self.bytes
    }

    field!(/// `magic` (offset 0).
        magic, u32, le_u32, 0);
    field!(/// `major_version` (offset 4).
        major_version, u32, le_u32, 4);
    field!(/// `feature_map` (offset 8).
        feature_map, u32, le_u32, 8);
    field!(/// `ctime` (offset 64), raw including the microsecond bits.
        ctime, u64, le_u64, 64);
    field!(/// `level` (offset 72), as the unsigned value on disk.
        level, u32, le_u32, 72);
    field!(/// `layout` (offset 76).
        layout, u32, le_u32, 76);
    field!(/// `size` (offset 80): used sectors per member.
        size, u64, le_u64, 80);
    field!(/// `chunksize` (offset 88), sectors.
        chunksize, u32, le_u32, 88);
    field!(/// `raid_disks` (offset 92).
        raid_disks, u32, le_u32, 92);
    field!(/// `bitmap_offset` (offset 96), unsigned view of a signed value.
        bitmap_offset, u32, le_u32, 96);
    field!(/// `ppl.offset` (offset 96).
        ppl_offset, u16, le_u16, 96);
    field!(/// `ppl.size` (offset 98).
        ppl_size, u16, le_u16, 98);
    field!(/// `new_level` (offset 100).
        new_level, u32, le_u32, 100);
    field!(/// `reshape_position` (offset 104).
        reshape_position, u64, le_u64, 104);
    field!(/// `delta_disks` (offset 112).
        delta_disks, u32, le_u32, 112);
    field!(/// `new_layout` (offset 116).
        new_layout, u32, le_u32, 116);
    field!(/// `new_chunk` (offset 120).
        new_chunk, u32, le_u32, 120);
    field!(/// `new_offset` (offset 124).
        new_offset, u32, le_u32, 124);
    field!(/// `data_offset` (offset 128).
        data_offset, u64, le_u64, 128);
    field!(/// `data_size` (offset 136).
        data_size, u64, le_u64, 136);
    field!(/// `super_offset` (offset 144).
        super_offset, u64, le_u64, 144);
    field!(/// `recovery_offset` (offset 152).
        recovery_offset, u64, le_u64, 152);
    field!(/// `dev_number` (offset 160).
        dev_number, u32, le_u32, 160);
    field!(/// `cnt_corrected_read` (offset 164).
        cnt_corrected_read, u32, le_u32, 164);
    field!(/// `bblog_size` (offset 186), sectors.
        bblog_size, u16, le_u16, 186);
    field!(/// `bblog_offset` (offset 188), unsigned view of a signed value.
        bblog_offset, u32, le_u32, 188);
    field!(/// `utime` (offset 192), raw.
        utime, u64, le_u64, 192);
    field!(/// `events` (offset 200).
        events, u64, le_u64, 200);
    field!(/// `resync_offset` (offset 208).
        resync_offset, u64, le_u64, 208);
    field!(/// `sb_csum` (offset 216).
        sb_csum, u32, le_u32, 216);
    field!(/// `max_dev` (offset 220).
        max_dev, u32, le_u32, 220);

    /// `set_uuid` (offset 16).
    pub fn set_uuid(&self) -> [u8; 16] {
        array16(&self.bytes[..], 16)
    }

    /// `set_name` (offset 32), all 32 bytes.
    pub fn set_name_raw(&self) -> &[u8] {
        &self.bytes[32..64]
    }

    /// `set_name` as C prints it with `%.32s`: up to the first NUL, at most 32 bytes.
    pub fn set_name(&self) -> &[u8] {
        let raw = self.set_name_raw();
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        &raw[..end]
    }

    /// `device_uuid` (offset 168).
    pub fn device_uuid(&self) -> [u8; 16] {
        array16(&self.bytes[..], 168)
    }

    /// `devflags` (offset 184).
    pub fn devflags(&self) -> u8 {
        self.bytes[184]
    }

    /// `bblog_shift` (offset 185).
    pub fn bblog_shift(&self) -> u8 {
        self.bytes[185]
    }

    /// `dev_roles[index]`; 0 outside the block (never reached for `max_dev <= 1920`).
    pub fn dev_role(&self, index: u32) -> u16 {
        match usize::try_from(index) {
            Ok(i) => le_u16(
                &self.bytes[..],
                256usize.saturating_add(i.saturating_mul(2)),
            ),
            Err(_) => 0,
        }
    }

    /// The roles table, `max_dev` entries (capped at [`MAX_DEVS`]).
    pub fn dev_roles(&self) -> Vec<u16> {
        (0..self.max_dev().min(MAX_DEVS))
            .map(|i| self.dev_role(i))
            .collect()
    }

    /// This device's role as mdadm's examine computes it (spare when `dev_number >= max_dev`).
    pub fn own_role(&self) -> u16 {
        let d = self.dev_number();
        if d < self.max_dev() {
            self.dev_role(d)
        } else {
            role::SPARE
        }
    }

    /// The role mdadm's getinfo uses (faulty when `dev_number` is outside the table).
    pub fn own_role_for_info(&self) -> u16 {
        let d = self.dev_number();
        if d >= self.max_dev() || d >= MAX_DEVS {
            role::FAULTY
        } else {
            self.dev_role(d)
        }
    }

    /// Clears the bitmap feature bit in memory (mdadm does this when the bitmap is not valid).
    pub fn drop_bitmap_feature(&mut self) {
        let f = self.feature_map() & !feature::BITMAP_OFFSET;
        self.bytes[8..12].copy_from_slice(&f.to_le_bytes());
    }

    /// The checksum of the first `256 + 2 * max_dev` bytes with `sb_csum` taken as 0, as the
    /// kernel and mdadm compute it; `None` when `max_dev` exceeds 1920.
    pub fn expected_checksum(&self) -> Option<u32> {
        raid1_superblock::checksum(&self.bytes[..]).ok()
    }
}

/// The 512 bytes read at the bitmap location (zero when there is no bitmap).
#[derive(Clone)]
pub struct RawBitmapSuper {
    bytes: [u8; BITMAP_BLOCK],
}

impl Default for RawBitmapSuper {
    fn default() -> Self {
        RawBitmapSuper {
            bytes: [0; BITMAP_BLOCK],
        }
    }
}

impl RawBitmapSuper {
    /// Wraps bytes read from a device; shorter input is zero-padded.
    pub fn from_slice(b: &[u8]) -> Self {
        let mut bytes = [0u8; BITMAP_BLOCK];
        let n = b.len().min(BITMAP_BLOCK);
        bytes[..n].copy_from_slice(&b[..n]);
        RawBitmapSuper { bytes }
    }

    /// `magic` (offset 0).
    pub fn magic(&self) -> u32 {
        le_u32(&self.bytes, 0)
    }
    /// `version` (offset 4).
    pub fn version(&self) -> u32 {
        le_u32(&self.bytes, 4)
    }
    /// `uuid` (offset 8).
    pub fn uuid(&self) -> [u8; 16] {
        array16(&self.bytes, 8)
    }
    /// `events` (offset 24).
    pub fn events(&self) -> u64 {
        le_u64(&self.bytes, 24)
    }
    /// `events_cleared` (offset 32).
    pub fn events_cleared(&self) -> u64 {
        le_u64(&self.bytes, 32)
    }
    /// `sync_size` (offset 40), sectors.
    pub fn sync_size(&self) -> u64 {
        le_u64(&self.bytes, 40)
    }
    /// `state` (offset 48).
    pub fn state(&self) -> u32 {
        le_u32(&self.bytes, 48)
    }
    /// `chunksize` (offset 52), bytes.
    pub fn chunksize(&self) -> u32 {
        le_u32(&self.bytes, 52)
    }
    /// `daemon_sleep` (offset 56), seconds.
    pub fn daemon_sleep(&self) -> u32 {
        le_u32(&self.bytes, 56)
    }
    /// `write_behind` (offset 60).
    pub fn write_behind(&self) -> u32 {
        le_u32(&self.bytes, 60)
    }
    /// `sectors_reserved` (offset 64).
    pub fn sectors_reserved(&self) -> u32 {
        le_u32(&self.bytes, 64)
    }
    /// `nodes` (offset 68).
    pub fn nodes(&self) -> u32 {
        le_u32(&self.bytes, 68)
    }
    /// `cluster_name` (offset 72) as a C string: up to the first NUL inside the block.
    pub fn cluster_name(&self) -> &[u8] {
        let tail = &self.bytes[72..];
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        &tail[..end]
    }

    /// Number of bits for `sync_size` sectors at `chunksize` bytes per bit, with mdadm's
    /// unsigned wrap-around; `None` when `chunksize` is 0 (mdadm divides by zero).
    pub fn bits(&self) -> Option<u64> {
        bitmap_bits(self.sync_size(), self.chunksize())
    }

    /// The bytes the bitmap occupies (header + bits) rounded up to `boundary`, truncated to 32
    /// bits as mdadm's helper returns them; `None` when `chunksize` is 0.
    pub fn on_disk_bytes(&self, boundary: u64) -> Option<u64> {
        let bits = self.bits()?;
        let bytes = (bits.wrapping_add(7) >> 3).wrapping_add(256);
        let rounded = bytes.wrapping_add(boundary - 1) & !(boundary - 1);
        Some(u64::from(rounded as u32))
    }
}

/// `ceil(sync_size * 512 / chunksize)` with mdadm's unsigned wrap-around.
pub fn bitmap_bits(sync_size: u64, chunksize: u32) -> Option<u64> {
    if chunksize == 0 {
        return None;
    }
    let c = u64::from(chunksize);
    Some(sync_size.wrapping_mul(512).wrapping_add(c - 1) / c)
}
