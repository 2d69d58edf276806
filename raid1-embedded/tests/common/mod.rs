//! What the async binding's tests share: a card whose commands wait, the chips of a volume,
//! and the data written.
#![allow(dead_code)]

use embedded_sdmmc::{Block, BlockDevice, BlockIdx};
use raid1_embedded::nor::{NorBlockStore, asynch};
use raid1_embedded::sim::{BusyFlash, NorSim, Rng, SdSim, Wait};
use raid1_embedded::volume::asynch::{AsyncMember, Blocking};
use raid1_embedded::volume::{
    DATA_OFFSET, Member, MemberFault, Mirror, MirrorStorage, SdMember, VolumeIdentity,
};

pub const E: usize = 4096;
pub const SECTORS: usize = 40;
pub const BLOCKS: usize = 256;
pub type Nor<'a> = NorBlockStore<NorSim<'a, 4, E>, BLOCKS, SECTORS>;
/// The async NOR store over a flash whose programs and erases wait a poll.
pub type AsyncNor<'a> = asynch::NorBlockStore<BusyFlash<NorSim<'a, 4, E>>, BLOCKS, SECTORS>;

/// A card whose every command waits two polls (returns `Pending`) before it completes.
pub struct SlowCard<'a>(pub SdMember<SdSim<'a>>);

impl AsyncMember for SlowCard<'_> {
    async fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        Wait(2).await;
        self.0.read(sector, blocks)
    }
    async fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        Wait(2).await;
        self.0.write(sector, blocks)
    }
    async fn sectors(&mut self) -> Result<u64, MemberFault> {
        self.0.sectors()
    }
    fn reinit(&mut self) {
        self.0.reinit();
    }
}

/// The card slot: the card the volume was made with, or another one put in its place
/// (`other`).
pub struct Slot<'a> {
    pub cards: [SdMember<SdSim<'a>>; 2],
    pub other: bool,
}

impl Member for Slot<'_> {
    fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        self.cards[usize::from(self.other)].read(sector, blocks)
    }
    fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        self.cards[usize::from(self.other)].write(sector, blocks)
    }
    fn sectors(&mut self) -> Result<u64, MemberFault> {
        self.cards[usize::from(self.other)].sectors()
    }
    fn reinit(&mut self) {
        self.cards[usize::from(self.other)].reinit()
    }
}

/// Version `version` of `sector`'s contents.
pub fn pattern(sector: u64, version: u32) -> Block {
    let mut b = Block::new();
    let mut rng = Rng::new(sector << 32 | u64::from(version) | 1 << 63);
    for c in b.contents.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    b
}

/// The chips of a volume: the card's blocks, the flash and its wear counters.
pub struct Chips {
    pub sd: Vec<Block>,
    pub nor: Vec<u8>,
    pub wear: Vec<u32>,
}

impl Chips {
    pub fn blank() -> Self {
        Chips {
            sd: vec![Block::new(); 512],
            nor: vec![0xFFu8; E * SECTORS],
            wear: vec![0u32; SECTORS],
        }
    }

    /// Chips holding a formatted volume.
    pub fn formatted() -> Self {
        let mut chips = Self::blank();
        let (sd, nor) = chips.blocking();
        let id = VolumeIdentity {
            uuid: *b"raid1-emb-async!",
            name: "as",
            ctime: 1,
        };
        let mut storage: MirrorStorage = MirrorStorage::new();
        Mirror::format(sd, nor, &mut storage, id).unwrap();
        chips
    }

    /// The members for the blocking binding.
    pub fn blocking(&mut self) -> (SdMember<SdSim<'_>>, Nor<'_>) {
        let sd = SdMember::new(SdSim::new(&mut self.sd, 1));
        let nor = Nor::mount(NorSim::new(&mut self.nor, &mut self.wear, 2)).unwrap();
        (sd, nor)
    }

    /// The slow card and the blocking NOR store, for the async binding.
    pub fn slow_card(&mut self) -> (SlowCard<'_>, Blocking<Nor<'_>>) {
        let (sd, nor) = self.blocking();
        (SlowCard(sd), Blocking(nor))
    }

    /// The slow card and the async NOR store over a flash that waits.
    pub fn slow_both(&mut self) -> (SlowCard<'_>, BusyFlash<NorSim<'_, 4, E>>) {
        let sd = SlowCard(SdMember::new(SdSim::new(&mut self.sd, 1)));
        let flash = BusyFlash::new(NorSim::new(&mut self.nor, &mut self.wear, 2), 1);
        (sd, flash)
    }
}

/// Data sector `s` as each member holds it, read past the volume: (the card's, the flash's).
pub fn member_copies(sd: &SdMember<SdSim<'_>>, nor: &mut Nor<'_>, s: u64) -> (Block, Block) {
    let mut a = [Block::new()];
    let mut b = [Block::new()];
    sd.dev
        .read(&mut a, BlockIdx((DATA_OFFSET + s) as u32))
        .expect("the card's copy reads");
    nor.read(DATA_OFFSET + s, &mut b)
        .expect("the flash's copy reads");
    let [a] = a;
    let [b] = b;
    (a, b)
}
