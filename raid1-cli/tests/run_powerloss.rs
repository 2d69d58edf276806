//! Power loss under `raid1 run`, as disks with a volatile write cache see it. Both members are
//! NBD exports served by this test: each keeps a write in its cache until a flush, or the
//! write's own FUA flag, makes it durable, and takes up to 300 µs to answer a write or a flush,
//! so the two disks answer the same request at different moments. At a moment drawn while a
//! client writes, the power goes for the disks and the host at once: the disks stop answering,
//! each keeps its durable content and any subset of what its cache held (4 KiB pieces, each
//! kept or lost, applied in the order they arrived), and the array process is killed
//! (SIGKILL). One to three such rounds, each starting the array on what the last cut left
//! (its resync running while the client writes). A last `raid1 run` on the images must then
//! read every write it acknowledged as durable (a FUA write, or a write acknowledged before a
//! flush it acknowledged), and any other block as one of the versions written to it since its
//! last durable one. A block read back (at the start of a round, at random) must read the same
//! after every later cut, and the same once the last resync has finished; the members' data
//! areas must end equal.
//!
//! This checks what the simulator cannot: that the frontend asks its members for the flushes
//! and FUA writes the engine's ordering relies on, over real NBD connections, through crashes
//! that fall during resyncs. No kernel device here has a cache that can be made to lose
//! unflushed writes, so the disks are modelled.

#[path = "run_common.rs"]
mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raid1_testkit::Rng;

use common::{
    CMD_FLUSH, CMD_READ, CMD_WRITE, FLAG_FUA, IHAVEOPT, NBDMAGIC, NbdClient, OPT_REPLY_MAGIC,
    REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, Server, create_mirror, data_areas_equal, data_offset,
    small_chunk_bitmap, sparse_images,
};

const MIB: u64 = 1 << 20;
/// The unit a disk keeps or loses at a power cut, and the client's block.
const PIECE: usize = 4096;
/// The client writes blocks below this many.
const BLOCKS: u64 = 2048;

/// A disk with a volatile write cache.
struct Disk {
    /// What survives a power cut for sure.
    durable: Vec<u8>,
    /// What reads see.
    current: Vec<u8>,
    /// Writes since the last flush, in arrival order: (offset, data, FUA).
    cache: Vec<(u64, Vec<u8>, bool)>,
    /// Requests counted: (writes, FUA writes, flushes).
    counts: (u64, u64, u64),
}

impl Disk {
    fn flush(&mut self) {
        for (off, data, _) in self.cache.drain(..) {
            let o = off as usize;
            self.durable[o..o + data.len()].copy_from_slice(&data);
        }
    }

    /// What the medium holds after a power cut: the durable content, then every FUA write
    /// and each other 4 KiB piece of the cache with a coin toss, in arrival order.
    fn power_cut(&self, rng: &mut Rng) -> Vec<u8> {
        let mut out = self.durable.clone();
        for (off, data, fua) in &self.cache {
            for (i, piece) in data.chunks(PIECE).enumerate() {
                if *fua || rng.below(2) == 0 {
                    let o = *off as usize + i * PIECE;
                    out[o..o + piece.len()].copy_from_slice(piece);
                }
            }
        }
        out
    }
}

/// A cut timed by the disks, at the `n`-th write into the metadata (below the data offset:
/// superblock, bitmap, bad-block log) of either disk. `before`: the power goes as that write
/// is about to land, so that it does not; the window between a bitmap write and the data
/// writes it must precede is a few hundred microseconds wide, and a cut drawn on a clock
/// rarely falls into it. Otherwise the power goes right after that write lands, counting only
/// the metadata writes that land while a data write is out: the moment a bitmap page that
/// clears a bit is on a disk and the data of its chunk is not yet on both. From the trigger on
/// nothing lands on either disk.
struct MetaCut {
    /// Metadata writes still to land before the cut (the cut takes the one that reaches 0).
    left: AtomicI64,
    /// Whether the cut takes its write before it lands.
    before: AtomicBool,
    /// Where the data area starts, in bytes.
    meta_end: u64,
    /// Data writes received by either disk and not yet landed.
    data_out: AtomicI64,
    /// The power went: nothing lands any more.
    frozen: AtomicBool,
    /// Tells the cutter.
    fire: Mutex<Sender<()>>,
}

impl MetaCut {
    /// Whether the power goes at a write at `off`, `landed` or about to land.
    fn takes(&self, off: u64, landed: bool) -> bool {
        off < self.meta_end
            && landed != self.before.load(Ordering::SeqCst)
            && (!landed || self.data_out.load(Ordering::SeqCst) > 0)
            && self.left.fetch_sub(1, Ordering::SeqCst) == 1
    }

    /// The power goes now.
    fn fire(&self) {
        self.frozen.store(true, Ordering::SeqCst);
        let _ = self.fire.lock().unwrap().send(());
    }
}

/// Serves a [`Disk`] over NBD on a Unix socket until `dead`.
struct DiskServer {
    disk: Arc<Mutex<Disk>>,
    dead: Arc<AtomicBool>,
    socket: PathBuf,
}

impl DiskServer {
    fn start(image: &Path, socket: PathBuf, meta_cut: Arc<MetaCut>) -> DiskServer {
        let content = std::fs::read(image).unwrap();
        let disk = Arc::new(Mutex::new(Disk {
            durable: content.clone(),
            current: content,
            cache: Vec::new(),
            counts: (0, 0, 0),
        }));
        let dead = Arc::new(AtomicBool::new(false));
        let listener = UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let (d, stop) = (disk.clone(), dead.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (d, stop, cut) = (d.clone(), stop.clone(), meta_cut.clone());
                        std::thread::spawn(move || {
                            let _ = serve(s, &d, &stop, &cut);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        DiskServer { disk, dead, socket }
    }

    fn uri(&self) -> PathBuf {
        PathBuf::from(format!("nbd+unix:///?socket={}", self.socket.display()))
    }
}

/// The power goes for every disk at the same instant (each disk's lock is taken first, so no
/// request lands on one while the other is already dark): no request is answered any more,
/// and each image gets what its medium kept. Returns each disk's counts.
fn power_cut(disks: &[DiskServer], rng: &mut Rng, images: &[PathBuf]) -> Vec<(u64, u64, u64)> {
    let held: Vec<_> = disks.iter().map(|d| d.disk.lock().unwrap()).collect();
    for d in disks {
        d.dead.store(true, Ordering::SeqCst);
    }
    held.iter()
        .zip(images)
        .map(|(disk, image)| {
            std::fs::write(image, disk.power_cut(rng)).unwrap();
            disk.counts
        })
        .collect()
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes(b.try_into().unwrap())
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().unwrap())
}
fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().unwrap())
}

/// One NBD connection: the fixed-newstyle handshake (`NBD_OPT_GO`, `NBD_OPT_INFO`; anything
/// else unsupported, so replies stay simple), then reads, writes (FUA honoured) and flushes.
fn serve(
    mut s: UnixStream,
    disk: &Mutex<Disk>,
    dead: &AtomicBool,
    meta_cut: &MetaCut,
) -> std::io::Result<()> {
    const REP_ACK: u32 = 1;
    const REP_INFO: u32 = 3;
    const REP_ERR_UNSUP: u32 = (1 << 31) | 1;
    // Transmission flags: HAS_FLAGS, SEND_FLUSH, SEND_FUA.
    const TFLAGS: u16 = 1 | 4 | 8;
    s.set_nonblocking(false)?;
    static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let mut latency = Rng::new(CONNECTIONS.fetch_add(1, Ordering::Relaxed));
    let size = disk.lock().unwrap().current.len() as u64;
    let mut hello = NBDMAGIC.to_be_bytes().to_vec();
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&3u16.to_be_bytes()); // fixed newstyle, no zeroes
    s.write_all(&hello)?;
    let mut flags = [0u8; 4];
    s.read_exact(&mut flags)?;
    let reply = |s: &mut UnixStream, opt: u32, kind: u32, data: &[u8]| {
        let mut r = OPT_REPLY_MAGIC.to_be_bytes().to_vec();
        r.extend_from_slice(&opt.to_be_bytes());
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&(data.len() as u32).to_be_bytes());
        r.extend_from_slice(data);
        s.write_all(&r)
    };
    loop {
        let mut h = [0u8; 16];
        s.read_exact(&mut h)?;
        assert_eq!(be64(&h[..8]), IHAVEOPT);
        let (opt, len) = (be32(&h[8..12]), be32(&h[12..16]));
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data)?;
        match opt {
            // NBD_OPT_INFO (6), NBD_OPT_GO (7): NBD_INFO_EXPORT, then ACK.
            6 | 7 => {
                let mut info = 0u16.to_be_bytes().to_vec();
                info.extend_from_slice(&size.to_be_bytes());
                info.extend_from_slice(&TFLAGS.to_be_bytes());
                reply(&mut s, opt, REP_INFO, &info)?;
                reply(&mut s, opt, REP_ACK, &[])?;
                if opt == 7 {
                    break;
                }
            }
            // NBD_OPT_ABORT.
            2 => {
                reply(&mut s, opt, REP_ACK, &[])?;
                return Ok(());
            }
            _ => reply(&mut s, opt, REP_ERR_UNSUP, &[])?,
        }
    }
    // Requests are served concurrently, each after its own latency, and answered in the order
    // they finish, as a disk with a queue does: a request sent after another may land first,
    // so nothing but the array's own waiting orders a write after the one it depends on.
    let replies = Mutex::new(s.try_clone()?);
    std::thread::scope(|scope| {
        loop {
            let mut r = [0u8; 28];
            s.read_exact(&mut r)?;
            assert_eq!(be32(&r[..4]), REQUEST_MAGIC);
            let (flags, kind, handle) = (be16(&r[4..6]), be16(&r[6..8]), be64(&r[8..16]));
            let (off, len) = (be64(&r[16..24]), be32(&r[24..28]) as usize);
            let mut payload = vec![0u8; if kind == CMD_WRITE { len } else { 0 }];
            s.read_exact(&mut payload)?;
            // NBD_CMD_DISC.
            if kind == 2 {
                return Ok(());
            }
            // A write or a flush takes its time (up to 300 µs, one in 20 from 1 to 3 ms): the
            // two disks answer the same request at different moments, as real ones do, and a
            // slow write is still out while the array's metadata rounds go on around it.
            let wait = match kind {
                CMD_WRITE | CMD_FLUSH if latency.below(20) == 0 => 1000 + latency.below(2000),
                CMD_WRITE | CMD_FLUSH => latency.below(300),
                _ => 0,
            };
            let data = kind == CMD_WRITE && off >= meta_cut.meta_end;
            if data {
                meta_cut.data_out.fetch_add(1, Ordering::SeqCst);
            }
            let replies = &replies;
            scope.spawn(move || {
                std::thread::sleep(Duration::from_micros(wait));
                let mut out = Vec::new();
                let mut error = 0u32;
                {
                    let mut d = disk.lock().unwrap();
                    if data {
                        meta_cut.data_out.fetch_sub(1, Ordering::SeqCst);
                    }
                    // Checked under the lock the power cut takes: nothing lands after it.
                    if dead.load(Ordering::SeqCst) || meta_cut.frozen.load(Ordering::SeqCst) {
                        return;
                    }
                    let o = off as usize;
                    let inside = off.checked_add(len as u64).is_some_and(|e| e <= size);
                    match kind {
                        _ if !inside && kind != CMD_FLUSH => error = 22,
                        CMD_READ => out = d.current[o..o + len].to_vec(),
                        CMD_WRITE if meta_cut.takes(off, false) => {
                            // The power goes now: this write never lands and is never answered.
                            meta_cut.fire();
                            return;
                        }
                        CMD_WRITE => {
                            let fua = flags & FLAG_FUA != 0;
                            d.current[o..o + len].copy_from_slice(&payload);
                            d.counts.0 += 1;
                            if fua {
                                d.counts.1 += 1;
                            }
                            d.cache.push((off, payload, fua));
                            if meta_cut.takes(off, true) {
                                // The power goes as it lands: it is in the cache (or, with
                                // FUA, on the medium), and never answered.
                                meta_cut.fire();
                                return;
                            }
                        }
                        CMD_FLUSH => {
                            d.counts.2 += 1;
                            d.flush();
                        }
                        _ => error = 22,
                    }
                }
                if dead.load(Ordering::SeqCst) {
                    return;
                }
                let mut rep = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
                rep.extend_from_slice(&error.to_be_bytes());
                rep.extend_from_slice(&handle.to_be_bytes());
                rep.extend_from_slice(&out);
                let _ = replies.lock().unwrap().write_all(&rep);
            });
        }
    })
}

/// Block `block` as written in generation `generation` (generation 0: zeros).
fn pattern(block: u64, generation: u64) -> Vec<u8> {
    if generation == 0 {
        return vec![0; PIECE];
    }
    let mut v = Vec::with_capacity(PIECE);
    for _ in 0..PIECE / 16 {
        v.extend_from_slice(&block.to_le_bytes());
        v.extend_from_slice(&generation.to_le_bytes());
    }
    v
}

/// What the client may read back from each block: the durable generation, or one written
/// after it (acknowledged without a flush, or in flight at a cut).
#[derive(Clone, Default)]
struct Possible {
    durable: u64,
    /// Written since, before the last cut: kept or lost by it, and no later flush changes
    /// that (a flush covers the writes of the array that answers it).
    before_cut: Vec<u64>,
    /// Written since, after the last cut: a flush makes the last of them durable.
    since: Vec<u64>,
}

impl Possible {
    fn durable(g: u64) -> Possible {
        Possible {
            durable: g,
            ..Possible::default()
        }
    }

    fn may_be(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.durable)
            .chain(self.before_cut.iter().copied())
            .chain(self.since.iter().copied())
    }
}

/// What the client wrote and may read back, block by block.
struct Ledger {
    blocks: Vec<Possible>,
    generation: u64,
}

impl Ledger {
    /// Reads every block through `c` and checks it against what may be there. A block read
    /// back is what it holds from then on: its possible versions narrow to that one (the
    /// array must not serve another after a later cut, whatever its resync did meanwhile).
    fn check(&mut self, c: &mut NbdClient, what: &str, problems: &mut Vec<String>) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        for b in 0..BLOCKS {
            let got = c
                .request(CMD_READ, 0, b * PIECE as u64, PIECE as u32, &[])
                .unwrap();
            let p = &mut self.blocks[b as usize];
            let found = p.may_be().find(|&g| got == pattern(b, g));
            match found {
                Some(g) => *p = Possible::durable(g),
                None => {
                    let seen = (
                        u64::from_le_bytes(got[..8].try_into().unwrap()),
                        u64::from_le_bytes(got[8..16].try_into().unwrap()),
                    );
                    problems.push(format!(
                        "{what}: block {b} reads (block, generation) {seen:?}; durable \
                         generation {}, later ones {:?} before the last cut, {:?} after",
                        p.durable, p.before_cut, p.since
                    ));
                }
            }
            all.push(got);
        }
        all
    }

    /// Writes and flushes through `c` until the array stops answering (the power went): a
    /// request without its answer may or may not have landed.
    fn workload(&mut self, c: &mut NbdClient, rng: &mut Rng) -> u64 {
        let mut ops = 0;
        loop {
            ops += 1;
            if rng.below(10) == 0 {
                if c.request(CMD_FLUSH, 0, 0, 0, &[]).is_err() {
                    return ops;
                }
                for p in &mut self.blocks {
                    if let Some(&g) = p.since.last() {
                        *p = Possible::durable(g);
                    }
                }
                continue;
            }
            self.generation += 1;
            let g = self.generation;
            let n = 1 + rng.below(4);
            let first = rng.below(BLOCKS - n);
            let fua = rng.below(3) == 0;
            let data: Vec<u8> = (first..first + n).flat_map(|b| pattern(b, g)).collect();
            let flags = if fua { FLAG_FUA } else { 0 };
            let offset = first * PIECE as u64;
            let acked = c
                .request(CMD_WRITE, flags, offset, data.len() as u32, &data)
                .is_ok();
            for b in first..first + n {
                let p = &mut self.blocks[b as usize];
                if fua && acked {
                    *p = Possible::durable(g);
                } else {
                    p.since.push(g);
                }
            }
            if !acked {
                return ops;
            }
        }
    }

    /// The power went: what was written since a block's durable version stays possible, but
    /// no later flush makes it durable.
    fn cut(&mut self) {
        for p in &mut self.blocks {
            let since = std::mem::take(&mut p.since);
            p.before_cut.extend(since);
        }
    }
}

/// md's promise about what a power cut leaves, checked on the images right after the cut: two
/// in-sync members hold the same data wherever a restart will not resync. A clean array (the
/// freshest superblock's `resync_offset` is MaxSector) resyncs nothing, so everything must be
/// equal; a dirty one resyncs the chunks whose bit is set in either member's bitmap (raid1
/// ORs them), or everything when the bitmap is out of date (marked stale or its events behind
/// the array's). A write that reaches a member before its bit is on a disk, or a bit cleared
/// while a write is still out, breaks it, and is caught here even when a later round
/// overwrites the evidence. Returns the problem, or how many chunks the restart will trust
/// (None when the members are not both in sync, where md promises nothing of the kind).
fn bitmap_promise(imgs: &[PathBuf], data_bytes: u64) -> Result<Option<u64>, String> {
    use raid1_superblock::{BitmapState, BitmapSuperblock, DevRole, FeatureMap, Superblock};
    let mut members = Vec::new();
    for p in imgs {
        let all = std::fs::read(p).unwrap();
        let sb: Superblock =
            Superblock::parse(&all[4096..5120]).map_err(|e| format!("{}: {e}", p.display()))?;
        let at = 4096 + i64::from(sb.bitmap_offset) * 512;
        let bm = BitmapSuperblock::parse(&all[at as usize..at as usize + 256])
            .map_err(|e| format!("{}: bitmap: {e}", p.display()))?;
        let own = sb.role(sb.dev_number);
        if !matches!(own, Some(DevRole::Active(_)))
            || sb.feature_map.contains(FeatureMap::RECOVERY_OFFSET)
        {
            return Ok(None);
        }
        members.push((all, sb, bm, at as usize + 256));
    }
    let fresh = members.iter().max_by_key(|m| m.1.events).unwrap();
    let least = members.iter().map(|m| m.1.events).min().unwrap();
    if least + 1 < fresh.1.events {
        return Ok(None);
    }
    let chunk = fresh.2.chunk_sectors() * 512;
    let clean = fresh.1.resync_offset == u64::MAX;
    let out_of_date = fresh.2.state.contains(BitmapState::STALE) || fresh.2.events < fresh.1.events;
    if !clean && out_of_date {
        return Ok(Some(0));
    }
    let chunks = data_bytes / chunk;
    let mut trusted = 0;
    for c in 0..chunks {
        let dirty = !clean
            && members
                .iter()
                .any(|m| m.0[m.3 + (c / 8) as usize] & (1 << (c % 8)) != 0);
        if dirty {
            continue;
        }
        trusted += 1;
        let [a, b] = [&members[0], &members[1]].map(|m| {
            let o = (m.1.data_offset * 512 + c * chunk) as usize;
            &m.0[o..o + chunk as usize]
        });
        if a != b {
            return Err(format!(
                "chunk {c} (bytes {} of the data area) differs between the members, yet a \
                 restart will not resync it: the array is {}, events {} and {}",
                c * chunk,
                if clean {
                    "clean"
                } else {
                    "dirty and its bit is clear on both members"
                },
                members[0].1.events,
                members[1].1.events
            ));
        }
    }
    Ok(Some(trusted))
}

/// One seed: a fresh array over two cached disks, then one to three rounds of a workload and a
/// cut (from the second round on, the array starts on what the last cut left, its resync
/// running while the workload writes), then a `raid1 run` on the images; every problem found
/// is returned.
fn cuts(seed: u64, dir: &Path) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let imgs = sparse_images(dir, "m", 2, 16 * MIB);
    create_mirror("pl", &imgs, &[]);
    // A bitmap of 512-byte chunks: most writes dirty a chunk whose bit must be on the disks
    // before the data.
    small_chunk_bitmap(&imgs);
    let mut ledger = Ledger {
        blocks: vec![Possible::default(); BLOCKS as usize],
        generation: 0,
    };
    let mut problems = Vec::new();
    let rounds = 1 + rng.below(3);
    let mut seen = Vec::new();
    let mut promised = Vec::new();
    let meta_end = data_offset(&imgs[0]).min(data_offset(&imgs[1]));
    for round in 0..rounds {
        // Half the rounds cut at a metadata write, the others (and these, if the workload
        // ends first) on a clock: of those, half before the 1st to 40th metadata write lands,
        // half after the 1st to 12th that lands while data is out.
        let (fire, fired): (Sender<()>, Receiver<()>) = channel();
        let before = rng.below(2) == 0;
        let at_meta = match rng.below(2) {
            0 if before => 1 + rng.below(40) as i64,
            0 => 1 + rng.below(12) as i64,
            _ => i64::MAX,
        };
        let meta_cut = Arc::new(MetaCut {
            // Armed once the round's reads are done.
            left: AtomicI64::new(i64::MAX),
            before: AtomicBool::new(before),
            data_out: AtomicI64::new(0),
            frozen: AtomicBool::new(false),
            meta_end,
            fire: Mutex::new(fire),
        });
        let disks: Vec<DiskServer> = (0..2)
            .map(|i| {
                let sock = dir.join(format!("disk{round}-{i}.sock"));
                DiskServer::start(&imgs[i], sock, meta_cut.clone())
            })
            .collect();
        let uris: Vec<PathBuf> = disks.iter().map(|d| d.uri()).collect();
        let name = format!("pl{round}");
        let mut server = Server::start(dir, &name, &[], &uris);
        // Half the rounds run the bitmap daemon every 20 to 200 ms (md's bitmap/time_base),
        // so that bits are cleared while writes are in flight and a cut falls between a
        // clearing and the data it must not cover.
        if rng.below(2) == 0 {
            let ms = 20 + rng.below(181);
            server.ctl_ok(&["grow", &name, "--delay", &format!("0.{ms:03}")]);
        }
        let mut c = NbdClient::connect(&server.socket).unwrap();
        if round > 0 && rng.below(2) == 0 {
            let what = format!("seed {seed}, after cut {round}");
            ledger.check(&mut c, &what, &mut problems);
        }
        // The power goes for the disks and the host at once, at a moment drawn here: the disks
        // stop answering (what each kept is written to its image), then the array process is
        // killed. Whatever the client was told before that holds.
        meta_cut.left.store(at_meta, Ordering::SeqCst);
        let disks = Arc::new(disks);
        let cutter = {
            let (disks, imgs) = (disks.clone(), imgs.clone());
            let mut child = server.child.take().unwrap();
            let (after, mut cut_rng) = (20 + rng.below(600), Rng::new(rng.next_u64()));
            std::thread::spawn(move || {
                let _ = fired.recv_timeout(Duration::from_millis(after));
                let seen = power_cut(&disks, &mut cut_rng, &imgs);
                child.kill().unwrap();
                child.wait().unwrap();
                seen
            })
        };
        let ops = ledger.workload(&mut c, &mut rng);
        seen.push((ops, cutter.join().unwrap()));
        drop(c);
        drop(server);
        ledger.cut();
        match bitmap_promise(&imgs, BLOCKS * PIECE as u64) {
            Ok(trusted) => promised.push(trusted),
            Err(e) => problems.push(format!("seed {seed}, after cut {}: {e}", round + 1)),
        }
    }

    let server = Server::start(dir, "last", &[], &imgs);
    let mut c = NbdClient::connect(&server.socket).unwrap();
    let what = format!("seed {seed}, after {rounds} cuts");
    let first = ledger.check(&mut c, &what, &mut problems);
    server.ctl_ok(&["wait", "last"]);
    let second = ledger.check(&mut c, &format!("{what}, resynced"), &mut problems);
    for b in 0..BLOCKS as usize {
        if first[b] != second[b] {
            problems.push(format!("{what}: block {b} changed once the resync ended"));
        }
    }
    let detail = server.detail();
    drop(c);
    server.stop();
    if detail["state"]
        .as_str()
        .is_some_and(|s| s.contains("degraded"))
    {
        problems.push(format!("{what}: the array came up degraded: {detail}"));
    } else if !data_areas_equal(&imgs[0], &imgs[1], 8 * MIB) {
        problems.push(format!(
            "{what}: the members' data areas differ after the resync"
        ));
    }
    if problems.is_empty() {
        println!(
            "{what}: the disks saw (writes, FUA, flushes) {seen:?}; chunks a restart trusts \
             after each cut {promised:?}"
        );
    }
    problems
}

/// Cuts at many points of many workloads; `POWERLOSS_SEEDS=n` runs more (default 24),
/// `POWERLOSS_FROM=s` from another first seed (default 1), and `POWERLOSS_SEED=s` one.
#[test]
fn acknowledged_writes_survive_a_power_cut_of_disks_with_volatile_caches() {
    let seeds: Vec<u64> = match std::env::var("POWERLOSS_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => {
            let n: u64 = std::env::var("POWERLOSS_SEEDS").map_or(24, |s| s.parse().unwrap());
            let from: u64 = std::env::var("POWERLOSS_FROM").map_or(1, |s| s.parse().unwrap());
            (from..from + n).collect()
        }
    };
    let mut problems = Vec::new();
    for seed in seeds {
        let dir = tempfile::tempdir().unwrap();
        problems.extend(cuts(seed, dir.path()));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
