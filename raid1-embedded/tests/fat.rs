//! embedded-sdmmc's FAT `VolumeManager` mounts on the mirrored volume unchanged. A seeded
//! random file workload (create, overwrite, append, delete) runs on it, with the SD card
//! pulled and reinserted in the middle; then the files are read back through a fresh
//! `VolumeManager` and compared with a model, and the FAT structure is checked (both FATs
//! equal, every chain in range, no cluster shared, chain lengths match sizes, no lost
//! clusters) on the volume and on each member's raw data area.

use std::collections::BTreeMap;

use embedded_sdmmc::{
    Block, BlockDevice, BlockIdx, Mode, TimeSource, Timestamp, VolumeIdx, VolumeManager,
};
use raid1_embedded::nor::NorBlockStore;
use raid1_embedded::sim::{NorSim, Rng, SdSim};
use raid1_embedded::volume::{
    DATA_OFFSET, Member, Mirror, MirrorStorage, SdMember, VolumeIdentity,
};

const E: usize = 4096;
const NOR_SECTORS: usize = 700;
const NOR_BLOCKS: usize = 4600; // < (700 - 2) * 7
const SD_BLOCKS: usize = 5000;
const PART_START: u32 = 1;

type Nor<'a> = NorBlockStore<NorSim<'a, 4, E>, NOR_BLOCKS, NOR_SECTORS>;

struct Clock;
impl TimeSource for Clock {
    fn get_timestamp(&self) -> Timestamp {
        Timestamp {
            year_since_1970: 56,
            zero_indexed_month: 10,
            zero_indexed_day: 22,
            hours: 20,
            minutes: 0,
            seconds: 0,
        }
    }
}

/// FAT16 geometry of our own minimal formatter: 1 sector per cluster, 2 FATs, 512 root entries.
struct Geometry {
    fat_sectors: u32,
    root_sectors: u32,
    clusters: u32,
}

fn geometry(total: u32) -> Geometry {
    let root_sectors = 32;
    let mut fat_sectors = 1;
    loop {
        let clusters = total - 1 - 2 * fat_sectors - root_sectors;
        if (clusters + 2) * 2 <= fat_sectors * 512 {
            return Geometry {
                fat_sectors,
                root_sectors,
                clusters,
            };
        }
        fat_sectors += 1;
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Write an MBR with one FAT16 partition and an empty FAT16 filesystem in it.
fn mkfs(dev: &impl BlockDevice, sectors: u32) {
    let total = sectors - PART_START;
    let g = geometry(total);
    assert!(
        g.clusters >= 4085 && g.clusters < 65525,
        "FAT16 needs 4085..65525 clusters, got {}",
        g.clusters
    );
    let mut mbr = Block::new();
    let p = 446;
    mbr.contents[p + 4] = 0x06;
    put32(&mut mbr.contents, p + 8, PART_START);
    put32(&mut mbr.contents, p + 12, total);
    mbr.contents[510] = 0x55;
    mbr.contents[511] = 0xAA;
    dev.write(&[mbr], BlockIdx(0)).unwrap();
    let mut bs = Block::new();
    let b = &mut bs.contents;
    b[0..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
    b[3..11].copy_from_slice(b"RAID1EMB");
    put16(b, 11, 512);
    b[13] = 1;
    put16(b, 14, 1);
    b[16] = 2;
    put16(b, 17, (g.root_sectors * 16) as u16);
    if total < 0x10000 {
        put16(b, 19, total as u16);
    } else {
        put32(b, 32, total);
    }
    b[21] = 0xF8;
    put16(b, 22, g.fat_sectors as u16);
    put16(b, 24, 32);
    put16(b, 26, 2);
    put32(b, 28, PART_START);
    b[36] = 0x80;
    b[38] = 0x29;
    put32(b, 39, 0x1234_5678);
    b[43..54].copy_from_slice(b"RAID1 EMB  ");
    b[54..62].copy_from_slice(b"FAT16   ");
    b[510] = 0x55;
    b[511] = 0xAA;
    dev.write(&[bs], BlockIdx(PART_START)).unwrap();
    let zero = Block::new();
    for s in 1..1 + 2 * g.fat_sectors + g.root_sectors {
        dev.write(std::slice::from_ref(&zero), BlockIdx(PART_START + s))
            .unwrap();
    }
    for fat in 0..2 {
        let mut first = Block::new();
        put16(&mut first.contents, 0, 0xFFF8);
        put16(&mut first.contents, 2, 0xFFFF);
        dev.write(&[first], BlockIdx(PART_START + 1 + fat * g.fat_sectors))
            .unwrap();
    }
}

/// Check the FAT16 structure of the filesystem readable through `read`; returns the files.
fn fsck(read: &mut dyn FnMut(u32) -> Block, sectors: u32) -> (BTreeMap<String, u32>, u32) {
    let g = geometry(sectors - PART_START);
    let bs = read(PART_START);
    assert_eq!(get16(&bs.contents, 22) as u32, g.fat_sectors);
    let fat_start = PART_START + 1;
    let mut fats = [Vec::new(), Vec::new()];
    for (i, fat) in fats.iter_mut().enumerate() {
        for s in 0..g.fat_sectors {
            fat.extend_from_slice(&read(fat_start + i as u32 * g.fat_sectors + s).contents);
        }
    }
    assert!(fats[0] == fats[1], "the two FATs differ");
    let entry = |c: u32| get16(&fats[0], c as usize * 2);
    let root_start = fat_start + 2 * g.fat_sectors;
    let mut used = vec![false; g.clusters as usize + 2];
    let mut files = BTreeMap::new();
    for s in 0..g.root_sectors {
        let blk = read(root_start + s);
        for e in blk.contents.chunks(32) {
            if e[0] == 0 || e[0] == 0xE5 || e[11] & 0x08 != 0 {
                continue;
            }
            let name = String::from_utf8_lossy(&e[0..8]).trim_end().to_string()
                + "."
                + String::from_utf8_lossy(&e[8..11]).trim_end();
            let size = get32(e, 28);
            let mut cluster = u32::from(get16(e, 26));
            let mut chain = 0;
            while (2..0xFFF8).contains(&cluster) {
                assert!(
                    cluster < g.clusters + 2,
                    "{name}: cluster {cluster} out of range"
                );
                assert!(!used[cluster as usize], "{name}: cluster {cluster} shared");
                used[cluster as usize] = true;
                chain += 1;
                cluster = u32::from(entry(cluster));
            }
            assert!(
                cluster == 0 && chain == 0 || cluster >= 0xFFF8,
                "{name}: chain ends in {cluster:#x}"
            );
            assert_eq!(
                chain,
                size.div_ceil(512),
                "{name}: {chain} clusters for {size} bytes"
            );
            files.insert(name, size);
        }
    }
    // Allocated clusters that belong to no file (embedded-sdmmc leaks the old chain when it
    // truncates a file): counted, and compared with the same workload on a plain card.
    let lost = (2..g.clusters + 2)
        .filter(|&c| entry(c) != 0 && !used[c as usize])
        .count() as u32;
    (files, lost)
}

/// The partition (from `PART_START`) as one image.
fn image(read: &mut dyn FnMut(u32) -> Block, sectors: u32) -> Vec<u8> {
    (PART_START..sectors)
        .flat_map(|s| read(s).contents)
        .collect()
}

/// `fsck.fat -n -v -l` on `img`: every file the model expects must be listed, and nothing but
/// the clusters embedded-sdmmc leaks may be reported. Returns what it said, the image's path
/// taken out, for a comparison with the plain card.
fn fsck_fat(what: &str, img: &[u8], expect: &BTreeMap<String, u32>) -> String {
    let dir = std::env::temp_dir().join(format!("raid1-fat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(what.replace(' ', "-"));
    std::fs::write(&path, img).unwrap();
    let out = std::process::Command::new("fsck.fat")
        .args(["-n", "-v", "-l"])
        .arg(&path)
        .output()
        .expect("fsck.fat (dosfstools) is needed: scripts/setup.sh installs it");
    std::fs::remove_file(&path).unwrap();
    let said = String::from_utf8_lossy(&out.stdout).replace(path.to_str().unwrap(), "IMAGE")
        + &String::from_utf8_lossy(&out.stderr);
    for name in expect.keys() {
        let (base, ext) = name.split_once('.').unwrap();
        let listed = format!("/{base}.{ext}");
        assert!(
            said.lines().any(|l| l.contains(&listed)),
            "{what}: fsck.fat does not list {name}:\n{said}"
        );
    }
    for line in said.lines() {
        let l = line.to_ascii_lowercase();
        assert!(
            !(l.contains("differ")
                || l.contains("shared")
                || l.contains("bad cluster")
                || l.contains("truncat")
                || l.contains("invalid")
                || l.contains("beyond")),
            "{what}: fsck.fat found damage: {line}\n{said}"
        );
    }
    let files = format!("IMAGE: {} files,", expect.len());
    assert!(
        said.lines().any(|l| l.starts_with(&files)),
        "{what}: fsck.fat does not count {} files:\n{said}",
        expect.len()
    );
    said
}

fn content(name: &str, len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(
        seed ^ name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
    );
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

#[test]
fn fat_volume_manager_on_the_mirror() {
    let mut sd_mem = vec![Block::new(); SD_BLOCKS];
    let mut nor_mem = vec![0xFFu8; E * NOR_SECTORS];
    let mut wear = vec![0u32; NOR_SECTORS];
    let sd = SdMember::new(SdSim::new(&mut sd_mem, 1));
    let nor = Nor::mount(NorSim::new(&mut nor_mem, &mut wear, 2)).unwrap();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let id = VolumeIdentity {
        uuid: *b"fat-on-the-mirro",
        name: "fat",
        ctime: 1_700_000_000,
    };
    let (sd, nor) = Mirror::format(sd, nor, &mut storage, id).unwrap();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mirror = Mirror::open(sd, nor, &mut storage).unwrap();
    let sectors = mirror.sectors() as u32;
    mkfs(&mirror, sectors);

    let (mirror, model) = workload(mirror, true);
    // The same workload on a plain RAM card without the mirror, for reference.
    let mut plain_mem = vec![Block::new(); sectors as usize];
    let plain = SdSim::new(&mut plain_mem, 3);
    mkfs(&plain, sectors);
    let (plain, plain_model) = workload(plain, false);
    assert_eq!(model, plain_model);
    let plain_lost = fsck(
        &mut |s| {
            let mut b = [Block::new()];
            plain.read(&mut b, BlockIdx(s)).unwrap();
            b[0].clone()
        },
        sectors,
    )
    .1;

    // The FAT structure, through the volume and on each member alone.
    let expect: BTreeMap<String, u32> = model
        .iter()
        .map(|(k, v)| (k.clone(), v.len() as u32))
        .collect();
    let through_volume = fsck(
        &mut |s| {
            let mut b = [Block::new()];
            mirror.read(&mut b, BlockIdx(s)).unwrap();
            b[0].clone()
        },
        sectors,
    );
    assert_eq!(through_volume, (expect.clone(), plain_lost));
    assert!(!mirror.health().degraded);
    // dosfstools' fsck.fat, a second opinion from outside this project, on the partition as
    // the plain card and each member's data area hold it: the same verdict on all.
    let plain_image = image(
        &mut |s| {
            let mut b = [Block::new()];
            plain.read(&mut b, BlockIdx(s)).unwrap();
            b[0].clone()
        },
        sectors,
    );
    let plain_verdict = fsck_fat("plain card", &plain_image, &expect);
    let reclaimed = format!("Reclaimed {plain_lost} unused clusters");
    assert!(
        plain_lost == 0 || plain_verdict.contains(&reclaimed),
        "fsck.fat and this test count the leaked clusters differently:\n{plain_verdict}"
    );
    let (mut sd, mut nor) = mirror.into_members();
    for (what, dev) in [
        ("SD card", &mut sd as &mut dyn Member),
        ("NOR flash", &mut nor as &mut dyn Member),
    ] {
        let mut read = |s| {
            let mut b = [Block::new()];
            dev.read(DATA_OFFSET + u64::from(s), &mut b).unwrap();
            b[0].clone()
        };
        let files = fsck(&mut read, sectors);
        assert_eq!(files, (expect.clone(), plain_lost), "{what}");
        let img = image(&mut read, sectors);
        assert_eq!(fsck_fat(what, &img, &expect), plain_verdict, "{what}");
    }
    // Byte for byte, the mirror's filesystem is what the plain card holds.
    for s in 0..sectors {
        let mut a = [Block::new()];
        let mut b = [Block::new()];
        sd.read(DATA_OFFSET + u64::from(s), &mut a).unwrap();
        plain.read(&mut b, BlockIdx(s)).unwrap();
        assert!(
            a[0].contents == b[0].contents,
            "sector {s} differs from the plain card"
        );
    }
    println!(
        "FAT16 on the mirror: {} files after 120 random operations (SD card pulled and reinserted midway), \
         checked on the volume, the SD card and the NOR flash; {} clusters leaked by embedded-sdmmc, as on a plain card",
        expect.len(),
        plain_lost
    );
}

/// The random file workload; with `mirror_faults`, the SD card is pulled at step 40 and
/// reinserted at step 80. Returns the device and the expected files.
fn workload<D: BlockDevice + Pullable>(
    dev: D,
    mirror_faults: bool,
) -> (D, BTreeMap<String, Vec<u8>>) {
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut rng = Rng::new(77);
    let vm = VolumeManager::<_, _, 4, 4, 1>::new(dev, Clock);
    let vol = vm.open_raw_volume(VolumeIdx(0)).unwrap();
    let root = vm.open_root_dir(vol).unwrap();
    for step in 0..120u64 {
        if mirror_faults && step == 40 {
            vm.device(|m| m.pull());
        }
        if mirror_faults && step == 80 {
            vm.device(|m| m.reinsert());
        }
        let name = format!("F{}.DAT", rng.below(12));
        match rng.below(4) {
            0 | 1 => {
                let data = content(&name, rng.below(3000) as usize, step);
                let f = vm
                    .open_file_in_dir(root, name.as_str(), Mode::ReadWriteCreateOrTruncate)
                    .unwrap();
                vm.write(f, &data).unwrap();
                vm.close_file(f).unwrap();
                model.insert(name, data);
            }
            2 => {
                let more = content(&name, rng.below(1500) as usize, step + 1000);
                let f = vm
                    .open_file_in_dir(root, name.as_str(), Mode::ReadWriteCreateOrAppend)
                    .unwrap();
                vm.write(f, &more).unwrap();
                vm.close_file(f).unwrap();
                model.entry(name).or_default().extend_from_slice(&more);
            }
            _ => {
                if model.remove(&name).is_some() {
                    vm.delete_entry_in_dir(root, name.as_str()).unwrap();
                }
            }
        }
    }
    vm.close_dir(root).unwrap();
    vm.close_volume(vol).unwrap();
    let (dev, _) = vm.free();

    // A fresh VolumeManager reads every file back.
    let vm = VolumeManager::<_, _, 4, 4, 1>::new(dev, Clock);
    let vol = vm.open_raw_volume(VolumeIdx(0)).unwrap();
    let root = vm.open_root_dir(vol).unwrap();
    for (name, data) in &model {
        let f = vm
            .open_file_in_dir(root, name.as_str(), Mode::ReadOnly)
            .unwrap();
        let mut got = vec![0u8; data.len() + 10];
        let mut n = 0;
        while !vm.file_eof(f).unwrap() {
            n += vm.read(f, &mut got[n..]).unwrap();
        }
        assert_eq!(&got[..n], &data[..], "{name}");
        vm.close_file(f).unwrap();
    }
    vm.close_dir(root).unwrap();
    vm.close_volume(vol).unwrap();
    let (dev, _) = vm.free();
    (dev, model)
}

trait Pullable {
    fn pull(&self);
    fn reinsert(&self);
}

impl Pullable for SdSim<'_> {
    fn pull(&self) {}
    fn reinsert(&self) {}
}

impl Pullable for Mirror<'_, SdMember<SdSim<'_>>, Nor<'_>> {
    fn pull(&self) {
        self.with_members(|sd, _| sd.dev.remove());
    }
    fn reinsert(&self) {
        self.with_members(|sd, _| sd.dev.insert());
        self.sd_inserted().unwrap();
        assert!(!self.health().degraded);
    }
}
