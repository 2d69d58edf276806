//! Over-provisioning: a NOR store configured at the edge of the capacity rule mounts with a
//! typed warning, and the worst case that the warning states bounds what garbage collection
//! copies (and is close to what it does).

use raid1_embedded::nor::{BLOCK_LEN, NorBlockStore, NorWarning, provisioning};
use raid1_embedded::sim::{NorSim, Rng};

/// 4 KiB sectors: 7 slots each.
const E: usize = 4096;
const S: usize = 16;

#[test]
fn the_figures_follow_the_capacity_rule() {
    // 14 sectors are full when a collection is due: 98 slots, the rule accepts 97 blocks.
    let p = provisioning(90, S, E);
    assert_eq!(
        (p.slots_per_sector, p.max_blocks, p.worst_copies),
        (7, 97, 6)
    );
    assert!(p.tight());
    // 84 = 6 * 14 blocks still let a collection copy 6 of its 7 slots; 83 do not.
    assert!(provisioning(84, S, E).tight());
    let loose = provisioning(83, S, E);
    assert_eq!(loose.worst_copies, 5);
    assert!(!loose.tight());
    // 8 KiB sectors have 14 slots.
    let p = provisioning(60, 8, 8192);
    assert_eq!(
        (p.slots_per_sector, p.max_blocks, p.worst_copies),
        (14, 83, 10)
    );
    assert!(!p.tight());
}

#[test]
fn a_tight_store_mounts_with_a_warning_a_loose_one_without() {
    let mut mem = vec![0xFFu8; E * S];
    let mut wear = vec![0u32; S];
    let flash = NorSim::<4, E>::new(&mut mem, &mut wear, 1);
    let tight = NorBlockStore::<_, 90, S>::mount(flash).unwrap();
    assert_eq!(
        tight.warning(),
        Some(NorWarning::TightProvisioning(provisioning(90, S, E)))
    );
    let flash = tight.into_inner();
    let loose = NorBlockStore::<_, 60, S>::mount(flash).unwrap();
    assert_eq!(loose.warning(), None);
}

/// Write every block once, in order, then rewrite 20 times as many: random blocks (`stride`
/// 0), or every `stride`-th block in turn, which takes live slots from the full sectors
/// evenly. Wear leveling is off, so that every collection is a garbage collection. Returns the
/// most blocks one write relocated per sector it erased.
fn worst_copies_seen<const B: usize>(stride: usize, seed: u64) -> u32 {
    let mut mem = vec![0xFFu8; E * S];
    let mut wear = vec![0u32; S];
    let flash = NorSim::<4, E>::new(&mut mem, &mut wear, seed);
    let mut store = NorBlockStore::<_, B, S>::mount(flash).unwrap();
    store.set_wear_spread(u32::MAX);
    let mut rng = Rng::new(seed);
    let strides = (0..stride).flat_map(|k| (k..B).step_by(stride));
    let rewrites: Vec<usize> = if stride > 0 {
        strides.cycle().take(20 * B).collect()
    } else {
        (0..20 * B).map(|_| rng.below(B as u64) as usize).collect()
    };
    let mut worst = 0;
    for (v, block) in (0..B).chain(rewrites).enumerate() {
        let before = store.stats();
        store
            .write_block(block as u32, &[v as u8; BLOCK_LEN])
            .unwrap();
        let after = store.stats();
        let copies = after.relocations - before.relocations;
        let erases = after.erases - before.erases;
        if copies > 0 {
            assert!(
                erases > 0,
                "write {v}: {copies} relocations without an erase"
            );
            worst = worst.max(copies.div_ceil(erases));
        }
    }
    worst
}

#[test]
fn collections_never_copy_more_than_the_worst_case() {
    for (blocks, max_seen) in [
        (90, worst_over_patterns::<90>()),
        (60, worst_over_patterns::<60>()),
    ] {
        let p = provisioning(blocks, S, E);
        println!(
            "{blocks} blocks: at most {max_seen} copies per erase, bound {}",
            p.worst_copies
        );
        assert!(
            max_seen <= p.worst_copies,
            "{blocks} blocks: {max_seen} > {}",
            p.worst_copies
        );
        // The bound is close to what happens, not a formality: within one block of it.
        assert!(
            max_seen + 1 >= p.worst_copies,
            "{blocks} blocks: {max_seen}"
        );
    }
}

fn worst_over_patterns<const B: usize>() -> u32 {
    let mut worst = 0;
    for stride in [0, 4, 7, 11] {
        for seed in 1..4 {
            worst = worst.max(worst_copies_seen::<B>(stride, seed));
        }
    }
    worst
}

/// Every configuration the capacity rule accepts takes writes for good, at the rule's edge and
/// one block short of it, down to one slot per sector (1 KiB pages, as on small parts'
/// internal flash): the reserve never asks for more free slots than there can be. (A reserve
/// of a sector's worth and three, without regard to the configuration, left every write
/// `NoSpace` with one slot per sector at the edge.)
#[test]
fn every_configuration_the_rule_accepts_keeps_taking_writes() {
    fn rewrite<const E: usize, const B: usize, const S: usize>(seed: u64) {
        let mut mem = vec![0xFFu8; E * S];
        let mut wear = vec![0u32; S];
        let flash = NorSim::<4, E>::new(&mut mem, &mut wear, seed);
        let mut store = NorBlockStore::<_, B, S>::mount(flash).expect("mount");
        let mut rng = Rng::new(seed);
        for w in 0..1_500u32 {
            let b = if w < B as u32 {
                w
            } else {
                rng.below(B as u64) as u32
            };
            let data = [(w % 251) as u8; BLOCK_LEN];
            store.write_block(b, &data).unwrap_or_else(|e| {
                panic!("{E}-byte sectors, {B} blocks in {S}: write {w} of block {b}: {e:?}")
            });
        }
        assert!(store.bookkeeping_holds());
    }
    for seed in 1..4 {
        // 1 slot per sector: the rule accepts up to S - 3 blocks.
        rewrite::<1024, 9, 12>(seed);
        rewrite::<1024, 8, 12>(seed);
        // 3 slots: up to 3 * (S - 2) - 1.
        rewrite::<2048, 29, 12>(seed);
        rewrite::<2048, 28, 12>(seed);
        // 7 slots.
        rewrite::<4096, 97, 16>(seed);
        rewrite::<4096, 96, 16>(seed);
    }
}
