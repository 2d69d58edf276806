//! What the volume's fuzz targets share (`volume_model`, `volume_faults`, `volume_zones`): the
//! board (a card of 128 blocks, a NOR flash holding 90 blocks: the target's root names the NOR
//! member, `Nor`, and its erase sectors, `NOR_SECTORS`), the content of each version of a
//! sector, the model of what each sector must read, and the formatted images.

use std::sync::OnceLock;

use embedded_sdmmc::Block;
use raid1_embedded::sim::{NorSim, Powered, Rng, SdSim};
use raid1_embedded::volume::{DATA_OFFSET, Mirror, MirrorStorage, SdMember, VolumeIdentity};

use super::{NOR_SECTORS, Nor};

pub const SECTOR: usize = 4096;
pub const NOR_BLOCKS: usize = 90;
pub const SD_BLOCKS: usize = 128;
/// Sectors of the volume.
pub const SIZE: u64 = NOR_BLOCKS as u64 - DATA_OFFSET;

pub type Sd<'a> = SdMember<SdSim<'a>>;
pub type Vol<'s, 'a> = Mirror<'s, Powered<'a, Sd<'a>>, Powered<'a, Nor<'a>>>;

/// The content of version `version` of sector `sector` (version 0: zeros, as formatted).
pub fn pattern(sector: u64, version: u32) -> Block {
    let mut b = Block::new();
    if version == 0 {
        return b;
    }
    let mut rng = Rng::new(sector << 32 | u64::from(version));
    for c in b.contents.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    b
}

/// What every sector must read: its last acknowledged content, and the write in flight.
pub struct Model {
    pub cur: Vec<Block>,
    /// (first sector, sectors, version) of the write in flight.
    pub in_flight: Option<(u64, u64, u32)>,
}

impl Model {
    /// Every sector as formatted, nothing in flight.
    pub fn new() -> Self {
        Model {
            cur: vec![Block::new(); SIZE as usize],
            in_flight: None,
        }
    }

    /// Whether `got` is what sector `s` may hold: its acknowledged content, or for the write
    /// in flight what an SD card's tear may leave when the power goes (`SdSim::torn_may_read`).
    pub fn allows(&self, s: u64, got: &Block) -> bool {
        let old = &self.cur[s as usize];
        got.contents == old.contents
            || matches!(self.in_flight, Some((fs, len, v)) if (fs..fs + len).contains(&s)
                && SdSim::torn_may_read(got, old, &pattern(s, v)))
    }
}

/// The images `format` writes for volume `id`, made once per target (formatting copies the
/// whole volume).
pub fn formatted(id: VolumeIdentity) -> &'static (Vec<Block>, Vec<u8>) {
    static IMAGES: OnceLock<(Vec<Block>, Vec<u8>)> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let mut sd_mem = vec![Block::new(); SD_BLOCKS];
        let mut nor_mem = vec![0xFFu8; SECTOR * NOR_SECTORS];
        let mut wear = vec![0u32; NOR_SECTORS];
        {
            let sd = SdMember::new(SdSim::new(&mut sd_mem, 1));
            let nor = Nor::mount(NorSim::new(&mut nor_mem, &mut wear, 2)).unwrap();
            let mut storage: MirrorStorage = MirrorStorage::new();
            Mirror::format(sd, nor, &mut storage, id).unwrap();
        }
        (sd_mem, nor_mem)
    })
}
