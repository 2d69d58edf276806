//! The real Linux md driver assembles the two members the embedded mirror wrote: the SD card
//! image and the NOR member's logical blocks (what a host would get by dumping the flash through
//! the block layer). The oracle in ../shared/linux-md boots Debian's kernel under qemu with the
//! images as virtio disks; the guest assembles the array, checks that it is clean with both
//! members active, reads the whole array device, and runs md's own `check` (mismatch_cnt).

use std::path::{Path, PathBuf};
use std::process::Command;

use embedded_sdmmc::{Block, BlockDevice, BlockIdx};
use raid1_embedded::nor::NorBlockStore;
use raid1_embedded::sim::{NorSim, Rng, SdSim};
use raid1_embedded::volume::{Member, Mirror, MirrorStorage, SdMember, VolumeIdentity};

const SECTOR: usize = 4096;
const SECTORS: usize = 40;
const BLOCKS: usize = 256;
const SD_BLOCKS: usize = 512;

type Nor<'a> = NorBlockStore<NorSim<'a, 4, SECTOR>, BLOCKS, SECTORS>;

fn oracle(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/linux-md")
        .join(script)
}

fn pattern(sector: u64, version: u32) -> Block {
    let mut b = Block::new();
    let mut rng = Rng::new(sector << 32 | u64::from(version));
    for c in b.contents.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    b
}

/// MD5 of a file (the guest prints busybox `md5sum` of the array device; compare likewise).
fn md5_of(path: &Path) -> String {
    let out = Command::new("md5sum")
        .arg(path)
        .output()
        .expect("md5sum runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn linux_md_assembles_the_members() {
    let mut sd_mem = vec![Block::new(); SD_BLOCKS];
    let mut nor_mem = vec![0xFFu8; SECTOR * SECTORS];
    let mut wear = vec![0u32; SECTORS];
    let sd = SdMember::new(SdSim::new(&mut sd_mem, 1));
    let nor = Nor::mount(NorSim::new(&mut nor_mem, &mut wear, 2)).unwrap();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let id = VolumeIdentity {
        uuid: *b"linux-md-oracle!",
        name: "emb",
        ctime: 1_763_000_000,
    };
    let (sd, nor) = Mirror::format(sd, nor, &mut storage, id).unwrap();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let size = vol.sectors();
    for s in 0..size {
        vol.write(&[pattern(s, 1)], BlockIdx(s as u32)).unwrap();
    }
    // A degraded phase and a bitmap recovery, then idle long enough to be marked clean.
    vol.with_members(|sd, _| sd.dev.remove());
    for s in [7u64, 8, 120] {
        vol.write(&[pattern(s, 2)], BlockIdx(s as u32)).unwrap();
    }
    vol.with_members(|sd, _| sd.dev.insert());
    vol.sd_inserted().unwrap();
    vol.tick(60_000_000_000).unwrap();
    vol.tick(120_000_000_000).unwrap();
    assert!(!vol.health().degraded);

    // The array content as the mirror presents it, and both member images.
    let dir = std::env::temp_dir().join(format!("raid1-embedded-linux-md-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut content = Vec::new();
    for s in 0..size {
        let mut b = [Block::new()];
        vol.read(&mut b, BlockIdx(s as u32)).unwrap();
        content.extend_from_slice(&b[0].contents);
    }
    std::fs::write(dir.join("content"), &content).unwrap();
    let (sd, mut nor) = vol.into_members();
    let sd_image: Vec<u8> = sd
        .dev
        .with_blocks(|blocks| blocks.iter().flat_map(|b| b.contents).collect());
    std::fs::write(dir.join("sd.img"), sd_image).unwrap();
    let mut nor_image = Vec::new();
    for s in 0..BLOCKS as u64 {
        let mut b = [Block::new()];
        Member::read(&mut nor, s, &mut b).unwrap();
        nor_image.extend_from_slice(&b[0].contents);
    }
    std::fs::write(dir.join("nor.img"), nor_image).unwrap();

    let setup = Command::new(oracle("setup"))
        .output()
        .expect("linux-md setup runs");
    assert!(
        setup.status.success(),
        "linux-md setup failed: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let script = "\
mdadm --assemble /dev/md0 /dev/vda /dev/vdb 2>&1
cat /proc/mdstat
mdadm --detail /dev/md0 | grep -E 'State :|Active Devices|Working Devices|Failed Devices'
echo \"array-md5 $(dd if=/dev/md0 bs=512 2>/dev/null | md5sum | cut -d' ' -f1)\"
echo check > /sys/block/md0/md/sync_action
mdadm --wait /dev/md0
echo \"mismatch_cnt $(cat /sys/block/md0/md/mismatch_cnt)\"
";
    let runner = || {
        let mut c = Command::new(oracle("run"));
        c.args(["--timeout", "240"]);
        c
    };
    let images = [dir.join("sd.img"), dir.join("nor.img")];
    let g = raid1_testkit::guest::boot(&runner, &images, script);
    let out = g.output;
    let text = g.stdout;
    println!("{text}");
    let want_md5 = md5_of(&dir.join("content"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "guest script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("[2/2] [UU]"),
        "both members active in /proc/mdstat"
    );
    assert!(text.contains("State : clean"), "array clean");
    assert!(text.contains("Failed Devices : 0"));
    assert!(
        text.contains(&format!("array-md5 {want_md5}")),
        "the array reads what the mirror holds"
    );
    assert!(
        text.contains("mismatch_cnt 0"),
        "md's check finds the members identical"
    );
}
