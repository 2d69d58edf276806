//! Hostile NBD clients and stuck servers against real `raid1 run` processes (small sparse image
//! files, unix sockets only): idle connections, clients that never read their replies, a
//! handshake that never ends, one client too many; and the control verbs against a server
//! stopped with SIGSTOP or killed. Every loop is bounded in count and time.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "run_common.rs"]
mod common;

use common::{RAID1, Server, ok, sparse_images, text};

/// NBD protocol numbers (the NBD protocol document).
const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const OPT_EXPORT_NAME: u32 = 1;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_ERR_POLICY: u32 = 0x8000_0002;
const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;

const MIB: u64 = 1 << 20;

/// The bound `docs/CLI.md` gives for the resident memory of `raid1 run`, whatever its NBD
/// clients do, in KiB: 150 MiB (the engine, every handshake slot full) plus, per client
/// served, its buffer (`--client-buffer-mib`, default 8) and 2 MiB (receive buffer, slack).
fn documented_rss_bound_kib(max_clients: u64, client_buffer_mib: u64) -> u64 {
    150 * 1024 + max_clients * (client_buffer_mib * 1024 + 2048)
}

/// Two sparse members of `mib` MiB made into an array by `raid1 create`, served by `raid1 run`
/// with `extra` options; the server's stderr is collected.
fn array(dir: &Path, name: &str, mib: u64, extra: &[&str]) -> (Server, Vec<PathBuf>, Log) {
    let devs = sparse_images(dir, name, 2, mib * MIB);
    ok(Command::new(RAID1)
        .args([
            "create",
            "-l1",
            "-n2",
            "--assume-clean",
            "-b",
            "none",
            "-N",
            name,
        ])
        .args(&devs));
    let mut s = Server::start(dir, name, extra, &devs);
    let log = Log::collect(s.child.as_mut().unwrap().stderr.take().unwrap());
    (s, devs, log)
}

/// The lines a server writes on stderr (read all along, so that it never blocks on a full pipe).
#[derive(Clone)]
struct Log(Arc<Mutex<String>>);

impl Log {
    fn collect(err: ChildStderr) -> Log {
        let log = Log(Arc::new(Mutex::new(String::new())));
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut t = l.0.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
        });
        log
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Lines containing `what`.
    fn count(&self, what: &str) -> usize {
        self.text().lines().filter(|l| l.contains(what)).count()
    }

    /// Waits up to `limit` for a line containing `what`.
    fn wait_for(&self, what: &str, limit: Duration) -> bool {
        wait_until(limit, || self.count(what) > 0)
    }
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// (VmRSS, VmHWM) of process `pid`, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

fn request_bytes(kind: u16, handle: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut r = REQUEST_MAGIC.to_be_bytes().to_vec();
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(&kind.to_be_bytes());
    r.extend_from_slice(&handle.to_be_bytes());
    r.extend_from_slice(&offset.to_be_bytes());
    r.extend_from_slice(&len.to_be_bytes());
    r
}

/// Connects and reads the greeting.
fn greeted(sock: &Path) -> UnixStream {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut g = [0u8; 18];
    s.read_exact(&mut g).unwrap();
    assert_eq!(be64(&g), NBDMAGIC);
    assert_eq!(be64(&g[8..]), IHAVEOPT);
    s
}

/// Sends client flags (fixed newstyle, no zeroes) and `NBD_OPT_GO` for the default export;
/// returns the final reply type (`REP_ACK` when the export is granted).
fn go(s: &mut UnixStream) -> u32 {
    s.write_all(&3u32.to_be_bytes()).unwrap();
    let mut o = IHAVEOPT.to_be_bytes().to_vec();
    o.extend_from_slice(&OPT_GO.to_be_bytes());
    o.extend_from_slice(&6u32.to_be_bytes());
    o.extend_from_slice(&0u32.to_be_bytes());
    o.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&o).unwrap();
    loop {
        let mut h = [0u8; 20];
        s.read_exact(&mut h).unwrap();
        assert_eq!(be64(&h), OPT_REPLY_MAGIC);
        let kind = be32(&h[12..]);
        let mut data = vec![0u8; be32(&h[16..]) as usize];
        s.read_exact(&mut data).unwrap();
        if kind != REP_INFO {
            return kind;
        }
    }
}

/// Whether the server closes `s` within `limit` (reads see end of stream or a reset).
fn closed_within(s: &mut UnixStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 4096];
    let t0 = Instant::now();
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if t0.elapsed() > limit {
            return false;
        }
    }
}

/// A well-behaved client: one request at a time, every reply read.
struct Client {
    s: UnixStream,
    handle: u64,
}

impl Client {
    fn connect(sock: &Path) -> Client {
        let mut s = greeted(sock);
        assert_eq!(go(&mut s), REP_ACK, "NBD_OPT_GO refused");
        Client { s, handle: 0 }
    }

    fn request(&mut self, kind: u16, offset: u64, payload: &[u8], len: u32) -> Vec<u8> {
        self.handle += 1;
        let mut r = request_bytes(kind, self.handle, offset, len);
        r.extend_from_slice(payload);
        self.s.write_all(&r).unwrap();
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(be32(&h), SIMPLE_REPLY_MAGIC);
        assert_eq!(be32(&h[4..]), 0, "NBD error");
        assert_eq!(be64(&h[8..]), self.handle);
        let mut data = Vec::new();
        if kind == CMD_READ {
            data = vec![0u8; len as usize];
            self.s.read_exact(&mut data).unwrap();
        }
        data
    }

    /// Writes a pattern at `offset` and reads it back; returns how long that took.
    fn write_read(&mut self, offset: u64, seed: u8) -> Duration {
        let t0 = Instant::now();
        let data: Vec<u8> = (0..65536u32)
            .map(|i| (i as u8).wrapping_mul(7) ^ seed)
            .collect();
        self.request(CMD_WRITE, offset, &data, data.len() as u32);
        let back = self.request(CMD_READ, offset, &[], data.len() as u32);
        assert!(back == data, "read back differs at {offset}");
        t0.elapsed()
    }
}

/// `qemu-io` on the server (bounded by `timeout`); returns its output, which must be a success.
fn qemu_io(s: &Server, cmds: &[&str]) -> String {
    let mut c = Command::new("timeout");
    c.args(["30", "qemu-io", "-f", "raw"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    ok(c.arg(s.uri()))
}

#[test]
fn idle_connections_do_not_lock_other_clients_out_and_are_dropped_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _devs, log) = array(dir.path(), "idle", 40, &["--handshake-timeout", "6"]);
    // A client in the transmission phase before the flood.
    let mut early = Client::connect(&s.socket);
    // 80 connections that never send a byte: 32 take the handshake slots, the rest wait in the
    // listen queue and each takes the slot of one idle for 2 s.
    let t0 = Instant::now();
    let mut idle: Vec<UnixStream> = (0..80)
        .map(|_| UnixStream::connect(&s.socket).unwrap())
        .collect();
    // The early client is served meanwhile.
    early.write_read(0, 1);
    // New clients queue behind the idle connections and are served in a few seconds, before
    // the idle ones' handshake deadline.
    qemu_io(&s, &["write -P 0x5a 1M 64k", "read -P 0x5a 1M 64k"]);
    let mut late = Client::connect(&s.socket);
    late.write_read(2 * MIB, 2);
    let waited = t0.elapsed();
    assert!(
        waited < Duration::from_secs(6),
        "the new clients were served only after {waited:?}"
    );
    // Every idle connection is closed: when its slot was wanted after 2 s, or at the 6 s
    // handshake deadline.
    for (i, c) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(c, Duration::from_secs(10)),
            "idle connection {i} still open {:?} after the flood",
            t0.elapsed()
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(12));
    assert!(log.wait_for(
        "dropped: handshake not finished within 6 s",
        Duration::from_secs(2)
    ));
    let me = format!("unix pid {}", std::process::id());
    let t = log.text();
    assert!(
        t.lines()
            .any(|l| l.contains("raid1 run: array idle: NBD client") && l.contains(&me)),
        "log lines name the peer: {t}"
    );
    assert!(
        t.contains("handshake slots are taken and another connection waits"),
        "{t}"
    );
    // The clients in transmission were never dropped.
    early.write_read(3 * MIB, 3);
    late.write_read(4 * MIB, 4);
    drop((early, late));
    s.stop();
}

#[test]
fn a_handshake_past_the_deadline_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _devs, log) = array(dir.path(), "slow", 40, &["--handshake-timeout", "1.5"]);
    // Greeting read, client flags sent, then nothing: dropped at 1.5 s.
    let mut c = greeted(&s.socket);
    c.write_all(&3u32.to_be_bytes()).unwrap();
    let t0 = Instant::now();
    assert!(closed_within(&mut c, Duration::from_secs(6)));
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1300) && waited < Duration::from_secs(4),
        "dropped after {waited:?}"
    );
    assert!(log.wait_for(
        "dropped: handshake not finished within 1.5 s",
        Duration::from_secs(2)
    ));
    // A client that finishes its handshake in time is not affected, even when idle longer.
    let mut fine = Client::connect(&s.socket);
    std::thread::sleep(Duration::from_millis(2000));
    fine.write_read(0, 9);
    drop(fine);
    s.stop();
}

#[test]
fn one_client_more_than_max_clients_is_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _devs, log) = array(dir.path(), "few", 40, &["--max-clients", "2"]);
    let mut a = Client::connect(&s.socket);
    let mut b = Client::connect(&s.socket);
    // A third: NBD_OPT_GO gets NBD_REP_ERR_POLICY, then the server closes.
    let mut c = greeted(&s.socket);
    assert_eq!(go(&mut c), REP_ERR_POLICY);
    assert!(closed_within(&mut c, Duration::from_secs(5)));
    // An old-style client (NBD_OPT_EXPORT_NAME has no error reply): closed.
    let mut d = greeted(&s.socket);
    d.write_all(&3u32.to_be_bytes()).unwrap();
    let mut o = IHAVEOPT.to_be_bytes().to_vec();
    o.extend_from_slice(&OPT_EXPORT_NAME.to_be_bytes());
    o.extend_from_slice(&0u32.to_be_bytes());
    d.write_all(&o).unwrap();
    assert!(closed_within(&mut d, Duration::from_secs(5)));
    // qemu-io is refused too, and says so.
    let out = common::tool(Command::new("timeout").args([
        "30",
        "qemu-io",
        "-f",
        "raw",
        "-c",
        "read 0 4k",
        &s.uri(),
    ]));
    assert!(!out.status.success(), "qemu-io served past --max-clients");
    assert!(
        log.wait_for(
            "refused: the server serves its maximum of 2 clients",
            Duration::from_secs(2)
        ),
        "{}",
        log.text()
    );
    // One line per refused client (GO, EXPORT_NAME, qemu-io), read from the pipe as they come.
    assert!(
        wait_until(Duration::from_secs(5), || log
            .count("refused: the server serves its maximum of 2 clients")
            >= 3),
        "{}",
        log.text()
    );
    // The two served clients go on; once one leaves, a new one is served.
    a.write_read(0, 1);
    b.write_read(MIB, 2);
    drop(a);
    assert!(wait_until(Duration::from_secs(5), || {
        let mut c = greeted(&s.socket);
        go(&mut c) == REP_ACK
    }));
    qemu_io(&s, &["write -P 0x11 0 4k", "read -P 0x11 0 4k"]);
    drop(b);
    s.stop();
}

/// One hostile client: after the handshake it sends 1 MiB writes and 1 MiB reads, back to back,
/// and never reads a reply; counts what it manages to send in `sent`.
fn flood(mut s: UnixStream, stop: Arc<AtomicBool>, seed: u64, sent: &AtomicU64) {
    s.set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut wire = Vec::new();
    for i in 0..4u64 {
        let off = ((seed * 4 + i) % 32) * MIB;
        wire.extend_from_slice(&request_bytes(CMD_WRITE, i, off, MIB as u32));
        wire.extend(std::iter::repeat_n(seed as u8, MIB as usize));
        wire.extend_from_slice(&request_bytes(CMD_READ, 100 + i, off, MIB as u32));
    }
    let mut pos = 0;
    while !stop.load(Ordering::Relaxed) {
        match s.write(&wire[pos..]) {
            Ok(n) => {
                sent.fetch_add(n as u64, Ordering::Relaxed);
                pos = (pos + n) % wire.len();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
}

#[test]
fn clients_that_never_read_replies_keep_the_server_within_its_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    // 40 hostile clients and a good one: the bound for 41 clients and the default buffer.
    let (s, _devs, log) = array(dir.path(), "hog", 80, &["--max-clients", "41"]);
    let pid = s.child.as_ref().unwrap().id();
    let mut good = Client::connect(&s.socket);
    good.write_read(64 * MIB, 0);
    // Reset VmHWM, which holds the start-up peak (assembly), to measure the flood alone.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let (base, _) = rss_kib(pid);
    let bound = documented_rss_bound_kib(41, 8);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    // 40 clients through their handshake, one after the other; then they flood at once.
    let conns: Vec<UnixStream> = (0..40)
        .map(|_| {
            let mut c = greeted(&s.socket);
            assert_eq!(go(&mut c), REP_ACK);
            c
        })
        .collect();
    let hogs: Vec<_> = conns
        .into_iter()
        .zip(0u64..)
        .map(|(conn, i)| {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || flood(conn, stop, i, &sent))
        })
        .collect();
    // The flood goes on until the hostile clients are held back (nothing more gets in for 2 s)
    // and the well-behaved client has been served at least 10 times meanwhile, or 60 s; the
    // well-behaved client writes and reads 64 KiB all along.
    let t0 = Instant::now();
    let mut peak = 0;
    let mut served = 0;
    let mut slowest = Duration::ZERO;
    let mut times = Vec::new();
    let mut last = (0, Instant::now());
    let mut held_back = false;
    while t0.elapsed() < Duration::from_secs(60) {
        let (rss, hwm) = rss_kib(pid);
        peak = peak.max(hwm).max(rss);
        if peak > bound {
            break; // stop at once: the server is past its bound
        }
        let now_sent = sent.load(Ordering::Relaxed);
        if now_sent != last.0 {
            last = (now_sent, Instant::now());
        }
        held_back = now_sent > 0 && last.1.elapsed() > Duration::from_secs(2);
        if held_back && served >= 10 {
            break;
        }
        let took = good.write_read(64 * MIB + (served % 64) * 65536, served as u8);
        slowest = slowest.max(took);
        times.push(took);
        served += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, hwm) = rss_kib(pid);
    peak = peak.max(hwm);
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    let sent = sent.load(Ordering::Relaxed);
    let flood_time = t0.elapsed();
    times.sort();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    eprintln!(
        "hostile clients sent {} MiB in {flood_time:?} (held back: {held_back}); server RSS {} MiB before, peak {} MiB (bound {} MiB); \
         the good client was served {served} times, median {median:?}, slowest {slowest:?}",
        sent / MIB,
        base / 1024,
        peak / 1024,
        bound / 1024
    );
    assert!(
        peak <= bound,
        "server peak RSS {} MiB exceeds the documented bound {} MiB",
        peak / 1024,
        bound / 1024
    );
    // Each hostile client got its budget in, then backpressure held it.
    assert!(
        sent > 40 * 8 * MIB,
        "the hostile clients sent only {} MiB",
        sent / MIB
    );
    assert!(held_back, "the hostile clients were never held back");
    // The good client waits behind the hostile I/O already admitted, but is served throughout.
    assert!(served >= 10, "the good client was served {served} times");
    assert!(
        slowest < Duration::from_secs(15),
        "round trips: median {median:?}, slowest {slowest:?}"
    );
    // The hostile clients are gone (their sockets closed): the memory goes back.
    let mut after = 0;
    let dropped = wait_until(Duration::from_secs(10), || {
        after = rss_kib(pid).0;
        after <= base + 16 * 1024
    });
    eprintln!(
        "server RSS {} MiB after the hostile clients left",
        after / 1024
    );
    assert!(
        dropped,
        "RSS stayed at {} MiB after the clients left (before: {} MiB)",
        after / 1024,
        base / 1024
    );
    good.write_read(64 * MIB, 0xee);
    drop(good);
    assert!(!log.text().contains("panicked"));
    s.stop();
}

/// Runs `raid1 ARGS` against `run_dir`; returns (exit code, stdout, stderr, seconds taken).
fn verb(run_dir: &Path, args: &[&str]) -> (i32, String, String, f64) {
    let t0 = Instant::now();
    let out = Command::new("timeout")
        .arg("60")
        .arg(RAID1)
        .args(args)
        .env("RAID1_RUN_DIR", run_dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
        t0.elapsed().as_secs_f64(),
    )
}

#[test]
fn every_verb_answers_within_its_timeout_against_a_stopped_server() {
    let dir = tempfile::tempdir().unwrap();
    let (frozen, devs, _log_a) = array(dir.path(), "frozen", 40, &[]);
    let (live, _devs_b, _log_b) = array(dir.path(), "live", 40, &[]);
    let run_dir = frozen.run_dir.clone();
    assert_eq!(run_dir, live.run_dir);
    let pid = frozen.child.as_ref().unwrap().id() as i32;
    // SAFETY: signals to our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // The default timeout, 10 s, in the background.
    let default_run = {
        let run_dir = run_dir.clone();
        std::thread::spawn(move || verb(&run_dir, &["detail", "frozen"]))
    };
    let dev = devs[0].display().to_string();
    for args in [
        vec!["detail", "frozen"],
        vec!["detail", "frozen", "--json"],
        vec!["stop", "frozen"],
        vec!["fail", "frozen", &dev],
        vec!["remove", "frozen", &dev],
        vec!["add", "frozen", &dev],
        vec!["re-add", "frozen", &dev],
        vec!["grow", "frozen", "--raid-devices", "3"],
        vec!["check", "frozen"],
        vec!["repair", "frozen"],
        vec!["wait", "frozen"],
        vec!["wait", "frozen", "--json"],
        vec!["monitor", "frozen"],
    ] {
        let mut args = args.clone();
        args.extend(["--timeout", "1.5"]);
        let (code, _, err, secs) = verb(&run_dir, &args);
        assert_eq!(code, 2, "{args:?}: exit {code}, {err}");
        assert!(
            err.contains("array frozen did not answer within 1.5 s"),
            "{args:?}: {err}"
        );
        assert!(secs < 5.0, "{args:?} took {secs} s");
    }
    // status: the stopped array is skipped and named, the live one printed.
    let (code, out, err, secs) = verb(&run_dir, &["status", "--timeout", "1.5"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(secs < 5.0, "status took {secs} s");
    assert!(
        err.contains("array frozen did not answer within 1.5 s") && err.contains("skipped"),
        "{err}"
    );
    assert!(out.contains("live : active raid1"), "{out}");
    assert!(!out.contains("frozen : active"), "{out}");
    let (code, out, _, _) = verb(&run_dir, &["status", "--json", "--timeout", "1.5"]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["arrays"][0]["array"], "live", "{v}");
    assert_eq!(v["arrays"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["skipped"][0]["array"], "frozen", "{v}");
    let (code, _, err, secs) = default_run.join().unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("array frozen did not answer within 10 s"),
        "{err}"
    );
    assert!((9.0..20.0).contains(&secs), "default timeout took {secs} s");
    // Nothing was done to the stopped array; once continued, it answers and stops cleanly.
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // The requests of the verbs that gave up are not carried out afterwards: no stop, no
    // failed or removed member, no grow, no check.
    std::thread::sleep(Duration::from_millis(500));
    let d = frozen.detail();
    assert_eq!(d["raid_devices"], 2, "{d}");
    let states: Vec<String> = d["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {d}"))
        .iter()
        .map(|m| m["state"].to_string())
        .collect();
    assert_eq!(states.len(), 2, "{d}");
    assert!(
        states
            .iter()
            .all(|s| s.contains("active") && s.contains("sync")),
        "{states:?}"
    );
    assert!(d["sync_action"].is_null(), "a check runs: {d}");
    live.stop();
    frozen.stop();
}

/// A child process killed (if still running) when dropped, also when a test fails.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a running `raid1 monitor --json`, read in a thread.
fn monitor_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<serde_json::Value> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next event named `name` within `limit` (other events are skipped).
fn next_event(
    rx: &std::sync::mpsc::Receiver<serde_json::Value>,
    name: &str,
    limit: Duration,
) -> Option<serde_json::Value> {
    let t0 = Instant::now();
    while let Some(left) = limit.checked_sub(t0.elapsed()) {
        match rx.recv_timeout(left) {
            Ok(v) if v["event"] == name => return Some(v),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[test]
fn monitor_reports_a_killed_server_as_device_disappeared_and_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let (s, devs, _log) = array(dir.path(), "gone", 40, &[]);
    let run_dir = s.run_dir.clone();
    // One monitor of the array by name, one of every array.
    let mut mons: Vec<_> = [true, false]
        .into_iter()
        .map(|named| {
            let mut args = vec!["monitor", "--json"];
            if named {
                args.insert(1, "gone");
            }
            let mut mon = Command::new(RAID1)
                .args(&args)
                .env("RAID1_RUN_DIR", &run_dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let rx = monitor_lines(&mut mon);
            (Killed(mon), rx, named)
        })
        .collect();
    // An event seen by both proves they are subscribed before the kill.
    std::thread::sleep(Duration::from_secs(2));
    s.ctl_ok(&["check", "gone"]);
    for (_, rx, named) in &mons {
        assert!(
            next_event(rx, "CheckStarted", Duration::from_secs(10)).is_some(),
            "no CheckStarted (named {named})"
        );
    }
    // SIGKILL: no Stopped event; every monitor reports DeviceDisappeared and keeps running.
    s.kill9();
    for (_, rx, named) in &mons {
        let v = next_event(rx, "DeviceDisappeared", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no DeviceDisappeared (named {named})"));
        assert_eq!(v["array"], "gone");
        assert!(v["time"].as_u64().is_some(), "{v}");
    }
    std::thread::sleep(Duration::from_millis(1500));
    for (mon, _, named) in &mut mons {
        assert!(
            mon.0.try_wait().unwrap().is_none(),
            "monitor (named {named}) exited after the server was killed"
        );
    }
    // The array comes back: NewArray; a clean stop then ends the monitors (exit 0).
    let s = Server::start(dir.path(), "gone", &[], &devs);
    for (_, rx, named) in &mons {
        let v = next_event(rx, "NewArray", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no NewArray (named {named})"));
        assert_eq!(v["array"], "gone");
    }
    s.stop();
    for (mon, rx, named) in &mut mons {
        assert!(
            next_event(rx, "Stopped", Duration::from_secs(10)).is_some(),
            "no Stopped (named {named})"
        );
        assert!(
            wait_until(Duration::from_secs(10), || mon
                .0
                .try_wait()
                .unwrap()
                .is_some()),
            "monitor (named {named}) did not end after the clean stop"
        );
        assert!(mon.0.wait().unwrap().success());
    }
}

/// A report whose reader has gone away (`raid1 detail md0 | grep -q clean` once grep has
/// matched): the verb must not panic, and its work is done; a report that cannot be written
/// for another reason (a full disk) fails the verb with a message.
#[test]
fn reports_survive_a_reader_that_went_away() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _devs, _log) = array(dir.path(), "piped", 8, &[]);
    let gone_reader = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Stdio::from(writer)
    };
    for args in [
        vec!["detail", "piped"],
        vec!["detail", "piped", "--json"],
        vec!["status"],
        vec!["write-mostly", "piped", "--help"],
    ] {
        let out = Command::new(RAID1)
            .env("RAID1_RUN_DIR", &s.run_dir)
            .args(&args)
            .stdout(gone_reader())
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        if args[0] != "write-mostly" {
            assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        }
    }
    // A verb that changes the array still does it.
    let out = Command::new(RAID1)
        .env("RAID1_RUN_DIR", &s.run_dir)
        .args(["readonly", "piped"])
        .stdout(gone_reader())
        .output()
        .unwrap();
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(s.detail()["read_only"], true, "{}", s.detail());
    s.ctl_ok(&["readwrite", "piped"]);
    // Standard output on a full device: exit 1, said in words.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(RAID1)
        .env("RAID1_RUN_DIR", &s.run_dir)
        .args(["detail", "piped"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot write to standard output"),
        "{}",
        text(&out.stderr)
    );
    s.stop();
}

/// One raw line to the control socket of `s`, and the JSON answer.
fn control_line(s: &Server, line: &[u8]) -> serde_json::Value {
    let mut c = UnixStream::connect(s.run_dir.join(format!("{}.sock", s.name))).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(line).unwrap();
    c.write_all(b"\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&c).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"))
}

/// The control socket takes any line a client sends: malformed JSON, wrong types, unknown
/// verbs, fields that do not go together, values out of range. Each is refused in words (no
/// Rust `Debug` value), nothing changes, and the array goes on serving.
#[test]
fn hostile_control_requests_are_refused_in_words_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (s, devs, _log) = array(dir.path(), "hc", 16, &[]);
    let before = s.detail();
    let refused: &[(&[u8], &str)] = &[
        (b"hello", "bad request"),
        (b"[]", "bad request"),
        (b"{}", "missing field `verb`"),
        (b"{\"verb\": 7}", "bad request"),
        (b"{\"verb\": \"explode\"}", "unknown verb \"explode\""),
        (b"{\"verb\": \"grow\"}", "grow needs raid_devices"),
        (b"{\"verb\": \"grow\", \"raid_devices\": 0}", "must be 1..="),
        (
            b"{\"verb\": \"grow\", \"raid_devices\": 70000}",
            "bad request",
        ),
        (b"{\"verb\": \"grow\", \"delay_ns\": -1}", "bad request"),
        (b"{\"verb\": \"grow\", \"delay_ns\": 1.5}", "bad request"),
        (b"{\"verb\": \"grow\", \"delay_ns\": 0}", "a delay of 0"),
        (
            b"{\"verb\": \"grow\", \"delay_ns\": 18446744073709551615}",
            "more than the 4294967295 s a bitmap header records",
        ),
        (
            b"{\"verb\": \"grow\", \"delay_ns\": 1000000000}",
            "the array has no bitmap",
        ),
        (
            b"{\"verb\": \"grow\", \"delay_ns\": 1000000000, \"raid_devices\": 3}",
            "grow takes one change at a time",
        ),
        (
            b"{\"verb\": \"grow\", \"size\": \"max\", \"raid_devices\": 3}",
            "grow takes one change at a time",
        ),
        (
            b"{\"verb\": \"grow\", \"write_behind\": 2, \"bitmap\": \"none\"}",
            "grow takes one change at a time",
        ),
        (
            b"{\"verb\": \"grow\", \"bitmap_chunk\": 65536, \"raid_devices\": 3}",
            "a bitmap chunk goes with bitmap internal",
        ),
        (
            b"{\"verb\": \"grow\", \"delay_ns\": 1000000000, \"bitmap\": \"none\"}",
            "a delay goes with --bitmap internal, not none",
        ),
        (
            b"{\"verb\": \"grow\", \"bitmap\": \"internal\", \"delay_ns\": 0}",
            "a delay of 0",
        ),
        (
            b"{\"verb\": \"grow\", \"bitmap\": \"sideways\"}",
            "expected internal or none",
        ),
        (
            b"{\"verb\": \"fail\", \"device\": \"/no/such/member\"}",
            "/no/such/member",
        ),
        (
            b"{\"verb\": \"sync-action\", \"action\": \"dance\"}",
            "dance",
        ),
        (b"\xff\xfe", "bad request"),
    ];
    for (line, says) in refused {
        let shown = String::from_utf8_lossy(line);
        let a = control_line(&s, line);
        assert_eq!(a["ok"], false, "{shown}: {a}");
        let e = a["error"].as_str().unwrap_or_default();
        assert!(e.contains(says), "{shown}: {e}");
        assert!(
            !e.contains("Some(") && !e.contains(" { ") && !e.contains("Err("),
            "{shown}: a Debug value in {e}"
        );
    }
    let after = s.detail();
    for key in [
        "state",
        "raid_devices",
        "events",
        "consistency_policy",
        "members",
    ] {
        assert_eq!(after[key], before[key], "{key} changed");
    }
    // Still serving: a write and its read through NBD.
    let out = qemu_io(&s, &["write -P 0x5c 0 64k", "read -P 0x5c 0 64k"]);
    assert!(!out.contains("failed"), "{out}");
    s.stop();
    assert!(devs.iter().all(|d| d.exists()));
}
