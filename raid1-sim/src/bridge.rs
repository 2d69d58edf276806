//! The simulator's superblock bytes: what it writes when the engine hands out an
//! `IoCmd::Superblock`, and what it gives `Array::assemble` from the bytes it reads back.
//!
//! The conversion between the engine's [`SuperblockState`] and md's v1.x superblock and bitmap
//! header is raid1-core's (`raid1_core::bridge`, shared by every frontend); the simulator only
//! supplies the static fields, a v1.2 template as mdadm --create would have written it.
//!
//! The simulator writes every superblock through [`render`] into bytes on the simulated disk and
//! reads them back with [`parse`], so a field the bridge or the serializer loses shows up as a
//! violation (`(bytes)`) or as a wrong assembly.

use raid1_core::{MemberId, SuperblockState, bridge};
use raid1_superblock::{BitmapSuperblock, FeatureMap, SetName, Superblock, Uuid};

/// Bytes of the bitmap superblock (header) in front of the bits.
pub const BITMAP_HEADER: usize = 256;

/// The static fields of one member's superblock, as mdadm --create would have written them: a
/// v1.2 superblock at sector 8, data from sector 2048, the bitmap 8 sectors after the
/// superblock when there is one, `max_dev` = `M`.
pub fn template<const M: usize>(
    data_sectors: u64,
    bitmap_chunk_sectors: u64,
    member: MemberId,
) -> (Superblock<M>, Option<BitmapSuperblock>) {
    let uuid = Uuid(*b"raid1-sim-array!");
    let mut sb = Superblock::<M>::new();
    sb.set_uuid = uuid;
    let mut name = [0u8; 32];
    name[..9].copy_from_slice(b"sim:array");
    sb.set_name = SetName(name);
    sb.level = 1;
    sb.size = data_sectors;
    sb.data_offset = 2048;
    sb.data_size = data_sectors;
    sb.super_offset = 8;
    sb.max_dev = M as u32;
    sb.dev_number = u32::from(member.0);
    sb.device_uuid = Uuid([member.0.wrapping_add(1); 16]);
    let bitmap = (bitmap_chunk_sectors > 0).then(|| {
        sb.bitmap_offset = 8;
        sb.feature_map.insert(FeatureMap::BITMAP_OFFSET);
        let mut b = BitmapSuperblock::new(uuid, data_sectors);
        b.chunksize = (bitmap_chunk_sectors * 512) as u32;
        b
    });
    (sb, bitmap)
}

/// The bytes a superblock write of `st` puts on a member: the md v1.x superblock and, with a
/// bitmap, the bitmap header.
pub fn render<const M: usize>(
    data_sectors: u64,
    bitmap_chunk_sectors: u64,
    st: &SuperblockState<M>,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let (mut sb, mut bm) = template::<M>(data_sectors, bitmap_chunk_sectors, st.this_member);
    bridge::apply_state(st, &mut sb, bm.as_mut())
        .map_err(|e| format!("(bytes) superblock state does not fit: {e}"))?;
    let mut bytes = vec![0u8; sb.padded_len()];
    sb.serialize_padded(&mut bytes)
        .map_err(|e| format!("(bytes) superblock does not serialize: {e:?}"))?;
    let mut header = Vec::new();
    if let Some(bm) = bm {
        header = vec![0u8; BITMAP_HEADER];
        bm.serialize(&mut header)
            .map_err(|e| format!("(bytes) bitmap header does not serialize: {e:?}"))?;
    }
    Ok((bytes, header))
}

/// What assembly reads from a member's superblock bytes (and bitmap header, empty if none).
pub fn parse<const M: usize>(bytes: &[u8], header: &[u8]) -> Result<SuperblockState<M>, String> {
    let sb = Superblock::<M>::parse(bytes)
        .map_err(|e| format!("(bytes) superblock does not parse: {e:?}"))?;
    let bm = if header.is_empty() {
        None
    } else {
        Some(
            BitmapSuperblock::parse(header)
                .map_err(|e| format!("(bytes) bitmap header does not parse: {e:?}"))?,
        )
    };
    bridge::read_state::<M, M>(&sb, bm.as_ref())
        .map_err(|e| format!("(bytes) superblock does not convert: {e}"))
}
