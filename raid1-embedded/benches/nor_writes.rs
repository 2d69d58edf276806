//! CPU cost of a NOR store write as the part grows: ns per `write_block` of random blocks
//! (garbage collection and wear leveling included) on simulated parts of 32, 512 and 4096
//! erase sectors of 4 KiB (128 KiB to 16 MiB), with the same share of the part in use. The
//! simulated flash works at memory speed, so this is the store's own work: CRCs, read-backs,
//! copies, and its bookkeeping. Printed beside it, measured in the same run: the bare
//! simulator doing what a write asks of the flash at the least (program an entry, 512 bytes of
//! data and a commit unit, read them back), the floor any store on this flash pays.
//!
//! `cargo bench -p raid1-embedded --bench nor_writes`; `NOR_BENCH_WRITES=N` sets the writes per
//! size (default 200 000). Figures are recorded in docs/EMBEDDED.md.

use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use raid1_embedded::nor::{BLOCK_LEN, NorBlockStore};
use raid1_embedded::sim::{NorSim, Rng};
use std::hint::black_box;
use std::time::Instant;

const E: usize = 4096;
/// Blocks in use: 4 of every sector's 7 slots, less the two spare sectors (a collection
/// copies at most 4 blocks to free 3 slots).
const fn blocks(sectors: usize) -> usize {
    (sectors - 2) * 4
}

fn writes() -> u32 {
    std::env::var("NOR_BENCH_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// ns per write of random blocks, after every block has been written once, and the blocks
/// garbage collection moved per write.
fn store<const S: usize, const B: usize>(n: u32) -> (f64, f64) {
    let mut mem = vec![0xFFu8; E * S];
    let mut wear = vec![0u32; S];
    let flash = NorSim::<4, E>::new(&mut mem, &mut wear, 7);
    let mut store = Box::new(NorBlockStore::<_, B, S>::mount(flash).expect("mount"));
    let mut data = [0u8; BLOCK_LEN];
    let mut rng = Rng::new(11);
    for b in 0..B as u32 {
        data[..4].copy_from_slice(&b.to_le_bytes());
        store.write_block(b, &data).expect("fill");
    }
    let moved = store.stats().relocations;
    let start = Instant::now();
    for i in 0..n {
        let b = rng.below(B as u64) as u32;
        data[..4].copy_from_slice(&i.to_le_bytes());
        store.write_block(b, black_box(&data)).expect("write");
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    let moved = f64::from(store.stats().relocations - moved) / f64::from(n);
    let mut back = [0u8; BLOCK_LEN];
    store.read_block(0, &mut back).expect("read");
    (ns, moved)
}

/// ns per bare program-and-read-back of one slot's entry, data and commit unit.
fn floor(n: u32) -> f64 {
    const S: usize = 32;
    let mut mem = vec![0xFFu8; E * S];
    let mut wear = vec![0u32; S];
    let mut flash = NorSim::<4, E>::new(&mut mem, &mut wear, 7);
    let data = [0x5Au8; BLOCK_LEN];
    let entry = [0x11u8; 16];
    let commit = [0u8; 16];
    let mut back = [0u8; BLOCK_LEN];
    let mut slot = 0u32;
    let start = Instant::now();
    for _ in 0..n {
        let sector = slot / 7;
        let base = sector * E as u32;
        let i = slot % 7;
        if i == 0 {
            flash.erase(base, base + E as u32).expect("erase");
        }
        let e = base + 48 + 32 * i;
        let d = base + 512 + 512 * i;
        flash.write(e, &entry).expect("entry");
        flash.write(d, black_box(&data)).expect("data");
        flash.read(e, &mut back[..16]).expect("read entry");
        flash.read(d, &mut back).expect("read data");
        flash.write(e + 16, &commit).expect("commit");
        flash.read(e + 16, &mut back[..16]).expect("read commit");
        black_box(&back);
        slot = (slot + 1) % (7 * S as u32);
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    // `cargo test --benches` runs this as a test: a few writes are enough there.
    let n = if std::env::args().any(|a| a == "--bench") {
        writes()
    } else {
        200
    };
    let floor = floor(n);
    let rows = [
        (32, blocks(32), store::<32, { blocks(32) }>(n)),
        (512, blocks(512), store::<512, { blocks(512) }>(n)),
        (4096, blocks(4096), store::<4096, { blocks(4096) }>(n)),
    ];
    println!("NOR store writes, {n} random writes per size, 4 KiB sectors");
    println!("bare flash work per write (the floor): {floor:.0} ns");
    println!(
        "| sectors | part | blocks | blocks moved per write | ns per write | vs 32 sectors | vs the floor |"
    );
    println!("|---|---|---|---|---|---|---|");
    let base = rows[0].2.0;
    for (sectors, blocks, (ns, moved)) in rows {
        println!(
            "| {sectors} | {} KiB | {blocks} | {moved:.2} | {ns:.0} | {:.2} | {:.2} |",
            sectors * E / 1024,
            ns / base,
            ns / floor
        );
    }
}
