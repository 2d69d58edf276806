//! Helpers shared by the `run*` and `interop` test files (included with `#[path]`; as a test
//! target of its own it has no tests).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const RAID1: &str = env!("CARGO_BIN_EXE_raid1");

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `raid1` with `RAID1_RUN_DIR=run`, bounded to 60 s (a verb that hangs fails the test).
pub fn raid1_in(run: &Path) -> Command {
    let mut c = Command::new("timeout");
    c.args(["60", RAID1]).env("RAID1_RUN_DIR", run);
    c
}

/// Runs `cmd` and returns its output, whatever its exit status.
pub fn tool(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed?)"))
}

/// Runs `cmd`, which must succeed; returns its stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = tool(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The kernel-made fixtures (fixtures/ at the top of the repository).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// A fixture's manifest (`key=value` lines, `#` comments).
pub fn manifest(case: &str) -> HashMap<String, String> {
    let t = std::fs::read_to_string(fixtures().join(case).join("manifest")).unwrap();
    t.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Decompresses a fixture's members into `dir` as `<prefix><member>.img`, in manifest order.
pub fn unpack(case: &str, dir: &Path, prefix: &str) -> Vec<PathBuf> {
    manifest(case)["members"]
        .split_whitespace()
        .map(|name| {
            let out = dir.join(format!("{prefix}{name}.img"));
            ok(Command::new("zstd")
                .args(["-q", "-d", "-f", "--long=31"])
                .arg(fixtures().join(case).join(format!("{name}.img.zst")))
                .arg("-o")
                .arg(&out));
            out
        })
        .collect()
}

/// `n` sparse image files of `bytes` each in `dir`, named `<prefix><i>.img`.
pub fn sparse_images(dir: &Path, prefix: &str, n: usize, bytes: u64) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("{prefix}{i}.img"));
            std::fs::File::create(&p).unwrap().set_len(bytes).unwrap();
            p
        })
        .collect()
}

/// The sha256 of a file, from `sha256sum`.
pub fn sha256_file(path: &Path) -> String {
    ok(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The `Key : value` lines of `mdadm --examine`.
pub fn examine(dev: &Path) -> BTreeMap<String, String> {
    ok(Command::new("mdadm").arg("--examine").arg(dev))
        .lines()
        .filter_map(|l| l.split_once(" : "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Unmounts a FUSE mount point, retrying for up to 5 s while it is busy.
pub fn fusermount_u(mnt: &Path) {
    let t0 = Instant::now();
    while !Command::new("fusermount3")
        .arg("-u")
        .arg(mnt)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && t0.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An image file served by nbdkit (with one filter) and presented again as a file by nbdfuse
/// (`disk()`); both are stopped on drop.
pub struct FuseMember {
    pub mnt: PathBuf,
    nbdkit: Child,
    nbdfuse: Child,
}

impl FuseMember {
    /// nbdkit's `file` plugin on `image` behind `--filter=FILTER` with `params`, on the socket
    /// `dir/SOCK`; nbdfuse's file under `dir/fuse`.
    pub fn start(image: &Path, dir: &Path, sock: &str, filter: &str, params: &[String]) -> Self {
        let sock = dir.join(sock);
        let mut kit = Command::new("nbdkit");
        kit.args(["-f", "--exit-with-parent", "-U"])
            .arg(&sock)
            .arg(format!("--filter={filter}"))
            .arg("file")
            .arg(image)
            .args(params);
        let size = std::fs::metadata(image).unwrap().len();
        FuseMember::serve(kit, &sock, dir, size)
    }

    /// Runs `kit` (an nbdkit serving `size` bytes on the unix socket `sock`) and presents its
    /// export as the file `dir/fuse/disk` through nbdfuse.
    pub fn serve(mut kit: Command, sock: &Path, dir: &Path, size: u64) -> Self {
        let nbdkit = kit.stdout(Stdio::null()).spawn().expect("nbdkit runs");
        let t0 = Instant::now();
        while !sock.exists() {
            assert!(t0.elapsed() < Duration::from_secs(10), "nbdkit socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mnt = dir.join("fuse");
        std::fs::create_dir_all(&mnt).unwrap();
        let nbdfuse = Command::new("nbdfuse")
            .arg(mnt.join("disk"))
            .arg(format!("nbd+unix:///?socket={}", sock.display()))
            .stderr(Stdio::null())
            .spawn()
            .expect("nbdfuse runs (needs /dev/fuse)");
        while !std::fs::metadata(mnt.join("disk")).is_ok_and(|m| m.len() == size) {
            assert!(t0.elapsed() < Duration::from_secs(10), "nbdfuse file");
            std::thread::sleep(Duration::from_millis(20));
        }
        FuseMember {
            mnt,
            nbdkit,
            nbdfuse,
        }
    }

    pub fn disk(&self) -> PathBuf {
        self.mnt.join("disk")
    }
}

impl Drop for FuseMember {
    fn drop(&mut self) {
        fusermount_u(&self.mnt);
        let _ = self.nbdfuse.kill();
        let _ = self.nbdfuse.wait();
        let _ = self.nbdkit.kill();
        let _ = self.nbdkit.wait();
    }
}

/// `image` behind nbdkit's eval plugin (writes fail with EIO where they meet the byte range
/// written in `dir/armed` as "START END", while that file exists) and nbdfuse.
pub struct ArmedMember {
    fuse: FuseMember,
    armed: PathBuf,
    armed_reads: PathBuf,
}

impl ArmedMember {
    pub fn start(image: &Path, dir: &Path) -> ArmedMember {
        let sock = dir.join("armed.sock");
        let armed = dir.join("armed");
        let armed_reads = dir.join("armed-reads");
        let img = image.display().to_string();
        let size = std::fs::metadata(image).unwrap().len();
        let pwrite = format!(
            "if [ -e {a} ]; then read s e < {a}; \
             if [ \"$4\" -lt \"$e\" ] && [ $(($4 + $3)) -gt \"$s\" ]; then \
             echo 'EIO armed range' >&2; exit 1; fi; fi; \
             exec dd of={img} oflag=seek_bytes conv=notrunc seek=$4 status=none",
            a = armed.display()
        );
        let pread = format!(
            "if [ -e {a} ]; then read s e < {a}; \
             if [ \"$4\" -lt \"$e\" ] && [ $(($4 + $3)) -gt \"$s\" ]; then \
             echo 'EIO armed range' >&2; exit 1; fi; fi; \
             exec dd if={img} iflag=skip_bytes,count_bytes skip=$4 count=$3 status=none",
            a = armed_reads.display()
        );
        let mut kit = Command::new("nbdkit");
        kit.args(["-f", "--exit-with-parent", "-U"])
            .arg(&sock)
            .arg("eval")
            .arg(format!("get_size=echo {size}"))
            .arg(format!("pread={pread}"))
            .arg(format!("pwrite={pwrite}"))
            .arg("flush=sync")
            .arg("can_flush=exit 0");
        ArmedMember {
            fuse: FuseMember::serve(kit, &sock, dir, size),
            armed,
            armed_reads,
        }
    }

    pub fn disk(&self) -> PathBuf {
        self.fuse.disk()
    }

    /// Writes meeting bytes `[start, end)` of the image fail from now on.
    pub fn arm(&self, start: u64, end: u64) {
        std::fs::write(&self.armed, format!("{start} {end}\n")).unwrap();
    }

    pub fn disarm(&self) {
        std::fs::remove_file(&self.armed).unwrap();
    }

    /// Reads meeting bytes `[start, end)` of the image fail from now on (a media error).
    pub fn arm_reads(&self, start: u64, end: u64) {
        std::fs::write(&self.armed_reads, format!("{start} {end}\n")).unwrap();
    }
}

/// A 2-mirror array `name` made by `raid1 create --assume-clean` on `devs`, with `extra`
/// arguments.
pub fn create_mirror(name: &str, devs: &[PathBuf], extra: &[&str]) {
    ok(Command::new(RAID1)
        .args(["create", "-l1", "-n2", "--assume-clean", "-N", name])
        .args(extra)
        .args(devs));
}

/// The sha256 of each file.
pub fn hashes(files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|p| sha256_file(p)).collect()
}

/// A running `raid1 run`; killed on drop if still running.
pub struct Server {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub run_dir: PathBuf,
    pub name: String,
    /// The members it was started on.
    pub devs: Vec<PathBuf>,
}

impl Server {
    pub fn start(dir: &Path, name: &str, extra: &[&str], devs: &[PathBuf]) -> Server {
        let socket = dir.join(format!("{name}.nbd.sock"));
        let run_dir = dir.join("rd");
        let child = Command::new(RAID1)
            .env("RAID1_RUN_DIR", &run_dir)
            .arg("run")
            .arg("--nbd")
            .arg(format!("unix:{}", socket.display()))
            .args(["--name", name])
            .args(extra)
            .args(devs)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn raid1 run");
        let mut s = Server {
            child: Some(child),
            socket,
            run_dir,
            name: name.to_string(),
            devs: devs.to_vec(),
        };
        let t0 = Instant::now();
        let live = |p: &Path| UnixStream::connect(p).is_ok();
        while !live(&s.socket) || !live(&s.run_dir.join(format!("{name}.sock"))) {
            if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
                let out = s.child.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "raid1 run exited early ({st}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "server not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        tool(
            Command::new(RAID1)
                .env("RAID1_RUN_DIR", &self.run_dir)
                .args(args),
        )
    }

    /// `raid1 ARGS...` against this server's run directory, which must succeed.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        ok(Command::new(RAID1)
            .env("RAID1_RUN_DIR", &self.run_dir)
            .args(args))
    }

    /// `raid1 detail --json` (exit 0, or 1 when degraded).
    pub fn detail(&self) -> serde_json::Value {
        let out = self.ctl(&["detail", &self.name, "--json"]);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "raid1 detail: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Reads the whole array through NBD into `out`; returns its sha256.
    pub fn read_all(&self, out: &Path) -> String {
        let _ = std::fs::remove_file(out);
        ok(Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw", &self.uri()])
            .arg(out));
        sha256_file(out)
    }

    /// SIGTERM; the exit status must be 0.
    pub fn stop(mut self) {
        let child = self.child.take().unwrap();
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "raid1 run {} exit {}: {}",
            self.name,
            out.status,
            text(&out.stderr)
        );
    }

    /// SIGKILL: no clean stop.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        // The killed process's io_uring is torn down after it is reaped: its members stay
        // locked a moment longer.
        wait_unlocked(&self.devs);
    }
}

/// Waits (at most 10 s) until no process holds the flock of any of `files` (a killed
/// `raid1 run`'s ring lets go of its members a moment after the process is reaped).
pub fn wait_unlocked(files: &[PathBuf]) {
    use std::os::fd::AsRawFd;
    let t0 = Instant::now();
    for p in files {
        let Ok(f) = std::fs::File::open(p) else {
            continue;
        };
        // SAFETY: flock on a descriptor owned here; released when `f` is dropped.
        while unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{} stays locked",
                p.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn examine_state(dev: &Path) -> String {
    ok(Command::new("mdadm").arg("--examine").arg(dev))
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(" : ")?;
            (k.trim() == "State").then(|| v.trim().to_string())
        })
        .unwrap()
}

/// Data offset of member `dev` in bytes (from `mdadm --examine`).
pub fn data_offset(dev: &Path) -> u64 {
    let ex = ok(Command::new("mdadm").arg("--examine").arg(dev));
    let sectors: u64 = ex
        .lines()
        .find_map(|l| l.trim().strip_prefix("Data Offset : "))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    sectors * 512
}

/// Whether the data areas (`bytes` long) of two members are identical, compared piecewise.
pub fn data_areas_equal(a: &Path, b: &Path, bytes: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let (fa, fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (oa, ob) = (data_offset(a), data_offset(b));
    let mut x = vec![0u8; 4 << 20];
    let mut y = vec![0u8; 4 << 20];
    let mut at = 0;
    while at < bytes {
        let n = (bytes - at).min(x.len() as u64) as usize;
        fa.read_exact_at(&mut x[..n], oa + at).unwrap();
        fb.read_exact_at(&mut y[..n], ob + at).unwrap();
        if x[..n] != y[..n] {
            return false;
        }
        at += n as u64;
    }
    true
}

/// The guest's name of the `i`-th image attached to the linux-md oracle, as Linux names virtio
/// disks: `/dev/vda`..`/dev/vdz`, then `/dev/vdaa`, `/dev/vdab`, ...
pub fn vd_name(i: usize) -> String {
    let mut n = i + 1;
    let mut s = Vec::new();
    while n > 0 {
        n -= 1;
        s.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    s.reverse();
    format!("/dev/vd{}", String::from_utf8(s).unwrap())
}

/// NBD protocol numbers (the NBD protocol document).
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const OPT_GO: u32 = 7;
pub const REP_ACK: u32 = 1;
pub const REP_INFO: u32 = 3;
pub const CMD_WRITE: u16 = 1;
pub const CMD_READ: u16 = 0;
pub const CMD_FLUSH: u16 = 3;
pub const FLAG_FUA: u16 = 1;

/// A minimal NBD client: fixed newstyle handshake, NBD_OPT_GO; one request at a time
/// ([`NbdClient::request`]) or several in flight ([`NbdClient::send`], [`NbdClient::receive`]).
pub struct NbdClient {
    pub s: UnixStream,
    /// The transmission flags the server announced (NBD_INFO_EXPORT).
    pub flags: u16,
    handle: u64,
}

impl NbdClient {
    pub fn connect(sock: &Path) -> std::io::Result<NbdClient> {
        let mut s = UnixStream::connect(sock)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut g = [0u8; 18];
        s.read_exact(&mut g)?;
        assert_eq!(u64::from_be_bytes(g[..8].try_into().unwrap()), NBDMAGIC);
        assert_eq!(u64::from_be_bytes(g[8..16].try_into().unwrap()), IHAVEOPT);
        // Client flags: fixed newstyle, no zeroes.
        s.write_all(&3u32.to_be_bytes())?;
        let mut opt = IHAVEOPT.to_be_bytes().to_vec();
        opt.extend_from_slice(&OPT_GO.to_be_bytes());
        opt.extend_from_slice(&6u32.to_be_bytes());
        opt.extend_from_slice(&0u32.to_be_bytes()); // empty export name
        opt.extend_from_slice(&0u16.to_be_bytes()); // no info requests
        s.write_all(&opt)?;
        let mut flags = 0;
        loop {
            let mut h = [0u8; 20];
            s.read_exact(&mut h)?;
            assert_eq!(
                u64::from_be_bytes(h[..8].try_into().unwrap()),
                OPT_REPLY_MAGIC
            );
            let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
            let mut data = vec![0u8; len as usize];
            s.read_exact(&mut data)?;
            match kind {
                REP_ACK => break,
                // NBD_INFO_EXPORT: type 0, size, transmission flags.
                REP_INFO if data.len() == 12 && data[..2] == [0, 0] => {
                    flags = u16::from_be_bytes([data[10], data[11]]);
                }
                REP_INFO => continue,
                other => panic!("NBD_OPT_GO refused: reply {other:#x}"),
            }
        }
        Ok(NbdClient {
            s,
            flags,
            handle: 1,
        })
    }

    /// One request; Ok(data) when the server answered without error.
    pub fn request(
        &mut self,
        kind: u16,
        flags: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) -> std::io::Result<Vec<u8>> {
        let handle = self.send(kind, flags, offset, len, payload)?;
        let mut data = Vec::new();
        if kind == CMD_READ {
            data = vec![0u8; len as usize];
        }
        self.receive(handle, &mut data)?;
        Ok(data)
    }

    /// Sends one request without waiting for its reply; returns its handle.
    pub fn send(
        &mut self,
        kind: u16,
        flags: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) -> std::io::Result<u64> {
        self.handle += 1;
        let mut r = [0u8; 28];
        r[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        r[4..6].copy_from_slice(&flags.to_be_bytes());
        r[6..8].copy_from_slice(&kind.to_be_bytes());
        r[8..16].copy_from_slice(&self.handle.to_be_bytes());
        r[16..24].copy_from_slice(&offset.to_be_bytes());
        r[24..28].copy_from_slice(&len.to_be_bytes());
        self.s.write_all(&r)?;
        self.s.write_all(payload)?;
        Ok(self.handle)
    }

    /// Reads the next reply, which must be the one for `handle` (the only request in
    /// flight); a read's data goes into `data` (its length is the request's). Ok when the
    /// server answered without error.
    pub fn receive(&mut self, handle: u64, data: &mut [u8]) -> std::io::Result<()> {
        let got = self.receive_any(|h| {
            assert_eq!(h, handle, "a reply for another request");
            &mut *data
        })?;
        assert_eq!(got, handle);
        Ok(())
    }

    /// Reads the next reply, whichever request in flight it answers (a server may answer them
    /// in any order): returns its handle; a read's data goes into the buffer `data_for` gives
    /// for that handle (empty for a write). Ok when the server answered without error.
    pub fn receive_any<'d>(
        &mut self,
        data_for: impl FnOnce(u64) -> &'d mut [u8],
    ) -> std::io::Result<u64> {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h)?;
        assert_eq!(
            u32::from_be_bytes(h[..4].try_into().unwrap()),
            SIMPLE_REPLY_MAGIC
        );
        let handle = u64::from_be_bytes(h[8..].try_into().unwrap());
        let error = u32::from_be_bytes(h[4..8].try_into().unwrap());
        if error != 0 {
            return Err(std::io::Error::other(format!("NBD error {error}")));
        }
        self.s.read_exact(data_for(handle))?;
        Ok(handle)
    }
}

/// Gives the array on `imgs` (16 MiB images, the bitmap 8 sectors after a 1.2 superblock,
/// 8 sectors of room) a bitmap of 512-byte chunks, as `mdadm --create --bitmap-chunk=512`
/// would: its 30720 bits fill the room.
pub fn small_chunk_bitmap(imgs: &[PathBuf]) {
    for p in imgs {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .unwrap();
        let mut area = vec![0u8; 4096];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut area, 16 * 512).unwrap();
        let mut bm = raid1_superblock::BitmapSuperblock::parse(&area[..256]).unwrap();
        bm.chunksize = 512;
        area.fill(0);
        bm.serialize(&mut area[..256]).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &area, 16 * 512).unwrap();
    }
}
