//! Power loss under `raid1 run`, as disks with a volatile write cache see it. Both members are
//! NBD exports served by this test: each keeps a write in its cache until a flush, or the
//! write's own FUA flag, makes it durable. Partway through a workload the array process is
//! killed (SIGKILL) and the disks lose power: each keeps its durable content and any subset of
//! what its cache held (4 KiB pieces, each kept or lost, applied in the order they arrived).
//! A new `raid1 run` on what the disks kept must then read every write it acknowledged as
//! durable (a FUA write, or a write acknowledged before a flush it acknowledged), and any
//! other block as one of the versions written to it since its last durable one. Its reads must
//! not change once the resync it starts has finished, and the members' data areas must end
//! equal.
//!
//! This checks what the simulator cannot: that the frontend asks its members for the flushes
//! and FUA writes the engine's ordering relies on (superblocks, bitmap pages, acknowledged
//! client writes), over real NBD connections. No kernel device has a cache that can be made
//! to lose unflushed writes here, so the disks are modelled.

#[path = "run_common.rs"]
mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    CMD_FLUSH, CMD_READ, CMD_WRITE, FLAG_FUA, IHAVEOPT, NBDMAGIC, NbdClient, OPT_REPLY_MAGIC,
    REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, Server, create_mirror, data_areas_equal, small_chunk_bitmap,
    sparse_images,
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

/// Serves a [`Disk`] over NBD on a Unix socket until `dead`.
struct DiskServer {
    disk: Arc<Mutex<Disk>>,
    dead: Arc<AtomicBool>,
    socket: PathBuf,
}

impl DiskServer {
    fn start(image: &Path, socket: PathBuf) -> DiskServer {
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
                        let (d, stop) = (d.clone(), stop.clone());
                        std::thread::spawn(move || {
                            let _ = serve(s, &d, &stop);
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

    /// The power goes: no request is answered any more; `image` gets what the medium kept.
    fn power_cut(&self, rng: &mut Rng, image: &Path) -> (u64, u64, u64) {
        self.dead.store(true, Ordering::SeqCst);
        let disk = self.disk.lock().unwrap();
        std::fs::write(image, disk.power_cut(rng)).unwrap();
        disk.counts
    }
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
fn serve(mut s: UnixStream, disk: &Mutex<Disk>, dead: &AtomicBool) -> std::io::Result<()> {
    const REP_ACK: u32 = 1;
    const REP_INFO: u32 = 3;
    const REP_ERR_UNSUP: u32 = (1 << 31) | 1;
    // Transmission flags: HAS_FLAGS, SEND_FLUSH, SEND_FUA.
    const TFLAGS: u16 = 1 | 4 | 8;
    s.set_nonblocking(false)?;
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
    loop {
        let mut r = [0u8; 28];
        s.read_exact(&mut r)?;
        assert_eq!(be32(&r[..4]), REQUEST_MAGIC);
        let (flags, kind, handle) = (be16(&r[4..6]), be16(&r[6..8]), be64(&r[8..16]));
        let (off, len) = (be64(&r[16..24]), be32(&r[24..28]) as usize);
        let mut payload = vec![0u8; if kind == CMD_WRITE { len } else { 0 }];
        s.read_exact(&mut payload)?;
        if dead.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut out = Vec::new();
        let mut error = 0u32;
        {
            let mut d = disk.lock().unwrap();
            let o = off as usize;
            let inside = off.checked_add(len as u64).is_some_and(|e| e <= size);
            match kind {
                _ if !inside && kind != CMD_FLUSH && kind != 2 => error = 22,
                CMD_READ => out = d.current[o..o + len].to_vec(),
                CMD_WRITE => {
                    let fua = flags & FLAG_FUA != 0;
                    d.current[o..o + len].copy_from_slice(&payload);
                    d.counts.0 += 1;
                    if fua {
                        d.counts.1 += 1;
                    }
                    d.cache.push((off, payload, fua));
                }
                CMD_FLUSH => {
                    d.counts.2 += 1;
                    d.flush();
                }
                // NBD_CMD_DISC.
                2 => return Ok(()),
                _ => error = 22,
            }
        }
        let mut rep = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
        rep.extend_from_slice(&error.to_be_bytes());
        rep.extend_from_slice(&handle.to_be_bytes());
        rep.extend_from_slice(&out);
        s.write_all(&rep)?;
    }
}

/// A small deterministic generator (xorshift64*), so that a failing seed replays.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
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
/// after it (acknowledged without a flush, or in flight at the cut).
#[derive(Clone, Default)]
struct Possible {
    durable: u64,
    since: Vec<u64>,
}

/// One run: a workload on a fresh array over two cached disks, a cut, a new `raid1 run` on
/// what the disks kept; every problem found is returned.
fn one_cut(seed: u64, dir: &Path) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let imgs = sparse_images(dir, "m", 2, 16 * MIB);
    create_mirror("pl", &imgs, &[]);
    // A bitmap of 512-byte chunks: most writes dirty a chunk whose bit must be on the disks
    // before the data.
    small_chunk_bitmap(&imgs);
    let disks: Vec<DiskServer> = (0..2)
        .map(|i| DiskServer::start(&imgs[i], dir.join(format!("disk{i}.sock"))))
        .collect();
    let uris: Vec<PathBuf> = disks.iter().map(|d| d.uri()).collect();
    let server = Server::start(dir, "pl", &[], &uris);
    let mut c = NbdClient::connect(&server.socket).unwrap();
    let mut ledger = vec![Possible::default(); BLOCKS as usize];
    let mut generation = 0;
    let ops = 20 + rng.below(200);
    for _ in 0..ops {
        if rng.below(10) == 0 {
            c.request(CMD_FLUSH, 0, 0, 0, &[]).unwrap();
            for p in &mut ledger {
                if let Some(&g) = p.since.last() {
                    *p = Possible {
                        durable: g,
                        since: Vec::new(),
                    };
                }
            }
            continue;
        }
        generation += 1;
        let n = 1 + rng.below(4);
        let first = rng.below(BLOCKS - n);
        let fua = rng.below(3) == 0;
        let data: Vec<u8> = (first..first + n)
            .flat_map(|b| pattern(b, generation))
            .collect();
        let flags = if fua { FLAG_FUA } else { 0 };
        c.request(
            CMD_WRITE,
            flags,
            first * PIECE as u64,
            data.len() as u32,
            &data,
        )
        .unwrap();
        for b in first..first + n {
            let p = &mut ledger[b as usize];
            if fua {
                *p = Possible {
                    durable: generation,
                    since: Vec::new(),
                };
            } else {
                p.since.push(generation);
            }
        }
    }
    // Writes in flight at the cut: sent, never answered.
    for _ in 0..rng.below(4) {
        generation += 1;
        let b = rng.below(BLOCKS);
        let flags = if rng.below(2) == 0 { FLAG_FUA } else { 0 };
        c.send(
            CMD_WRITE,
            flags,
            b * PIECE as u64,
            PIECE as u32,
            &pattern(b, generation),
        )
        .unwrap();
        ledger[b as usize].since.push(generation);
    }
    // Sometimes the cut falls later: after the array marked itself clean (or while it does).
    if rng.below(3) == 0 {
        std::thread::sleep(Duration::from_millis(rng.below(400)));
    }
    server.kill9();
    let counts: Vec<_> = disks
        .iter()
        .zip(&imgs)
        .map(|(d, img)| d.power_cut(&mut rng, img))
        .collect();
    drop(c);

    let mut problems = Vec::new();
    let server = Server::start(dir, "pl2", &[], &imgs);
    let mut c = NbdClient::connect(&server.socket).unwrap();
    let read_all = |c: &mut NbdClient| -> Vec<Vec<u8>> {
        (0..BLOCKS)
            .map(|b| {
                c.request(CMD_READ, 0, b * PIECE as u64, PIECE as u32, &[])
                    .unwrap()
            })
            .collect()
    };
    let first = read_all(&mut c);
    for (b, (got, p)) in first.iter().zip(&ledger).enumerate() {
        let b = b as u64;
        let ok = std::iter::once(p.durable)
            .chain(p.since.iter().copied())
            .any(|g| *got == pattern(b, g));
        if !ok {
            let seen = (
                u64::from_le_bytes(got[..8].try_into().unwrap()),
                u64::from_le_bytes(got[8..16].try_into().unwrap()),
            );
            problems.push(format!(
                "seed {seed}: block {b} reads (block, generation) {seen:?}; durable generation {}, \
                 later ones {:?}",
                p.durable, p.since
            ));
        }
    }
    server.ctl_ok(&["wait", "pl2"]);
    let second = read_all(&mut c);
    for b in 0..BLOCKS as usize {
        if first[b] != second[b] {
            problems.push(format!(
                "seed {seed}: block {b} changed once the resync ended"
            ));
        }
    }
    let detail = server.detail();
    drop(c);
    server.stop();
    if detail["state"]
        .as_str()
        .is_some_and(|s| s.contains("degraded"))
    {
        problems.push(format!("seed {seed}: the array came up degraded: {detail}"));
    } else if !data_areas_equal(&imgs[0], &imgs[1], 8 * MIB) {
        problems.push(format!(
            "seed {seed}: the members' data areas differ after the resync"
        ));
    }
    if problems.is_empty() {
        println!("seed {seed}: {ops} operations, disks saw (writes, FUA, flushes) {counts:?}");
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
        problems.extend(one_cut(seed, dir.path()));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
