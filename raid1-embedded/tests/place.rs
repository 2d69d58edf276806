//! The volume built in a place the caller owns (`Mirror::open_in`, `assemble_in`, `close_in`)
//! and `Mirror::clean`: the same volume as the by-value calls give, and the members come back
//! on every path.

use embedded_sdmmc::Block;
use raid1_embedded::nor::NorBlockStore;
use raid1_embedded::sim::{NorSim, SdSim};
use raid1_embedded::volume::{
    Mirror, MirrorStorage, Options, SdMember, VolumeError, VolumeIdentity,
};

const SECTOR: usize = 4096;
const SECTORS: usize = 40;
const BLOCKS: usize = 256;
const SD_BLOCKS: usize = 512;

type Nor<'a> = NorBlockStore<NorSim<'a, 4, SECTOR>, BLOCKS, SECTORS>;
type Sd<'a> = SdMember<SdSim<'a>>;

const ID: VolumeIdentity = VolumeIdentity {
    uuid: *b"raid1-in-place!!",
    name: "place",
    ctime: 1_700_000_000,
};

fn block(v: u8) -> Block {
    let mut b = Block::new();
    b.contents.fill(v);
    b
}

struct Chips {
    sd: Vec<Block>,
    nor: Vec<u8>,
    wear: Vec<u32>,
}

impl Chips {
    fn blank() -> Self {
        Chips {
            sd: vec![Block::new(); SD_BLOCKS],
            nor: vec![0xFF; SECTOR * SECTORS],
            wear: vec![0; SECTORS],
        }
    }

    fn members(&mut self) -> (Sd<'_>, Nor<'_>) {
        let sd = SdMember::new(SdSim::new(&mut self.sd, 1));
        let nor = Nor::mount(NorSim::new(&mut self.nor, &mut self.wear, 2)).expect("NOR mount");
        (sd, nor)
    }

    fn formatted() -> Self {
        let mut chips = Chips::blank();
        let (sd, nor) = chips.members();
        let mut storage: MirrorStorage = MirrorStorage::new();
        Mirror::format(sd, nor, &mut storage, ID).expect("format");
        chips
    }
}

/// Mount in place, write, and stop without a close (a power cut): with `clean` called
/// first, the next mount finds the volume clean and copies nothing; without it, the chunks
/// written are resynced.
fn cut_after_writes(clean: bool) -> u64 {
    let mut chips = Chips::formatted();
    {
        let (sd, nor) = chips.members();
        let mut storage: MirrorStorage = MirrorStorage::new();
        let mut place = None;
        let vol = Mirror::open_in(&mut place, sd, nor, &mut storage).expect("open_in");
        for s in 0..16 {
            vol.write_sectors(s, &[block(s as u8 + 1)]).expect("write");
        }
        if clean {
            vol.clean().expect("clean");
        }
        // The power goes: the volume is dropped where it is, without a close.
    }
    let (sd, nor) = chips.members();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).expect("open after the cut");
    let mut b = [Block::new()];
    for s in 0..16 {
        vol.read_sectors(s, &mut b).expect("read");
        assert_eq!(b[0].contents, block(s as u8 + 1).contents, "sector {s}");
    }
    assert!(!vol.health().degraded);
    vol.health().synced_sectors
}

#[test]
fn clean_leaves_nothing_to_resync_after_a_cut() {
    assert_eq!(cut_after_writes(true), 0);
    assert!(
        cut_after_writes(false) > 0,
        "without clean the cut leaves dirty chunks"
    );
}

#[test]
fn open_in_and_close_in_round_trip() {
    let mut chips = Chips::formatted();
    let (sd, nor) = chips.members();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut place = None;
    let vol = Mirror::open_in(&mut place, sd, nor, &mut storage).expect("open_in");
    let size = vol.sectors();
    vol.write_sectors(3, &[block(0xA5)]).expect("write");
    let (sd, nor) = Mirror::close_in(&mut place)
        .expect("a volume in the place")
        .expect("close");
    assert!(place.is_none(), "close_in empties the place");
    assert!(
        Mirror::close_in(&mut place).is_none(),
        "nothing left to close"
    );
    // What open_in built is what open builds: the same volume, clean after close_in.
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).expect("open");
    assert_eq!(vol.sectors(), size);
    let h = vol.health();
    assert!(
        !h.degraded && h.synced_sectors == 0 && h.dirty_chunks == 0,
        "{h:?}"
    );
    let mut b = [Block::new()];
    vol.read_sectors(3, &mut b).expect("read");
    assert_eq!(b[0].contents, block(0xA5).contents);
}

#[test]
fn assemble_in_recovers_a_new_flash_in_steps() {
    let mut chips = Chips::formatted();
    chips.nor.fill(0xFF);
    chips.wear.fill(0);
    let (sd, nor) = chips.members();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut place = None;
    let vol =
        Mirror::assemble_in(&mut place, sd, nor, &mut storage, Options::MD).expect("assemble_in");
    assert!(vol.health().degraded, "the blank flash is rebuilt");
    let mut steps = 0;
    while vol.step(4).expect("step").busy {
        steps += 1;
        assert!(steps < 10_000, "the recovery does not end");
    }
    assert!(steps > 1, "the recovery ran in bounded steps");
    let h = vol.health();
    assert!(!h.degraded && h.synced_sectors >= vol.sectors(), "{h:?}");
}

#[test]
fn a_refused_mount_leaves_the_members_in_the_place() {
    let mut chips = Chips::blank();
    let (sd, nor) = chips.members();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut place = None;
    let err = Mirror::open_in(&mut place, sd, nor, &mut storage).map(|_| ());
    assert_eq!(err, Err(VolumeError::NoVolume));
    // The unmounted volume serves nothing and writes nothing, without panicking.
    let vol = place.as_ref().expect("the volume stays in the place");
    let mut b = [Block::new()];
    assert!(vol.read_sectors(0, &mut b).is_err());
    assert!(vol.write_sectors(0, &[block(1)]).is_err());
    assert!(!vol.step(8).expect("step").busy);
    let (sd, _nor) = place.take().expect("volume").into_members();
    assert!(
        sd.dev.stats().blocks_written == 0,
        "nothing was written to the blank card"
    );
}
