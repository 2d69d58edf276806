//! Mirrors across a real network boundary: the array runs in one network namespace, its second
//! member is an NBD export served by nbdkit in another, the two joined by a veth pair (only
//! addresses inside the namespaces this test creates). Faults are real: the link taken down,
//! the server stopped (SIGSTOP), killed and restarted, a second assembler writing the member
//! meanwhile. Checked each time: no acknowledged write lost, no request stuck much past the
//! failfast timeout, the re-add copies only what the bitmap marks, a split brain refused, and
//! with `--no-member-policy suspend` I/O held and then completed when the server is back.
//!
//! Needs root (network namespaces), `ip` (iproute2) and nbdkit; a missing one fails the test.

#[path = "run_common.rs"]
mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{CMD_READ, CMD_WRITE, NbdClient, RAID1, ok, raid1_in, small_chunk_bitmap, text};

const MIB: u64 = 1 << 20;
const FAILFAST_MS: u64 = 1000;

/// Two namespaces joined by a veth pair; deleted on drop.
struct Net {
    a: String,
    b: String,
    ip_b: String,
    veth_b: String,
}

impl Net {
    fn new(tag: u8) -> Net {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the remote-member tests need root (network namespaces)"
        );
        let id = std::process::id();
        let (a, b) = (format!("r1a{tag}-{id}"), format!("r1b{tag}-{id}"));
        let (va, vb) = (
            format!("r1va{tag}{}", id % 10000),
            format!("r1vb{tag}{}", id % 10000),
        );
        let net = Net {
            a: a.clone(),
            b: b.clone(),
            ip_b: format!("10.213.{tag}.2"),
            veth_b: vb.clone(),
        };
        for args in [
            vec!["netns", "add", &a],
            vec!["netns", "add", &b],
            vec!["link", "add", &va, "type", "veth", "peer", "name", &vb],
            vec!["link", "set", &va, "netns", &a],
            vec!["link", "set", &vb, "netns", &b],
        ] {
            ok(Command::new("ip").args(&args));
        }
        let ip_a = format!("10.213.{tag}.1/24");
        let ip_b = format!("{}/24", net.ip_b);
        for (ns, dev, ip) in [(&a, &va, &ip_a), (&b, &vb, &ip_b)] {
            ok(Command::new("ip").args(["-n", ns, "addr", "add", ip, "dev", dev]));
            ok(Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]));
            ok(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]));
        }
        net
    }

    fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ok(Command::new("ip").args(["-n", &self.b, "link", "set", &self.veth_b, state]));
    }

    fn uri(&self) -> String {
        format!("nbd://{}:10809/", self.ip_b)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// nbdkit serving `image` in the server namespace, every request logged to `log`.
struct Kit(Child);

impl Kit {
    fn start(net: &Net, image: &Path, log: &Path) -> Kit {
        Kit::start_delayed(net, image, log, 0)
    }

    /// As [`Kit::start`], each request delayed `ms` milliseconds by nbdkit's delay filter
    /// (this host's kernel has no `sch_netem` for `tc netem`).
    fn start_delayed(net: &Net, image: &Path, log: &Path, ms: u32) -> Kit {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.b,
                "nbdkit",
                "-f",
                "--exit-with-parent",
            ])
            .args([
                "-i",
                &net.ip_b,
                "-p",
                "10809",
                "--filter=log",
                "--filter=delay",
            ])
            .arg("file")
            .arg(image)
            .arg(format!("logfile={}", log.display()))
            .arg(format!("delay-read={ms}ms"))
            .arg(format!("delay-write={ms}ms"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nbdkit (Debian package nbdkit)");
        let t0 = Instant::now();
        let probe = || {
            Command::new("ip")
                .args(["netns", "exec", &net.b, "nbdinfo", "--size", &net.uri()])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        while !probe() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "nbdkit did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Kit(child)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.0.id() as i32, sig) };
    }
}

impl Drop for Kit {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Bytes written by the client through an nbdkit log filter's log.
fn logged_write_bytes(log: &Path) -> u64 {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    s.lines()
        .filter(|l| l.contains(" Write ") && !l.contains("return"))
        .filter_map(|l| {
            let c = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("count="))?;
            u64::from_str_radix(c.trim_start_matches("0x"), 16).ok()
        })
        .sum()
}

/// `raid1 run` inside the array's namespace.
struct Array {
    child: Child,
    run: PathBuf,
    sock: PathBuf,
    stderr: PathBuf,
}

impl Array {
    fn start(net: &Net, dir: &Path, extra: &[&str], devs: &[String]) -> Array {
        let run = dir.join("rd");
        let sock = dir.join("t.nbd");
        let stderr = dir.join("raid1.log");
        let _ = std::fs::remove_file(&sock);
        let child = Command::new("ip")
            .args(["netns", "exec", &net.a, RAID1, "run", "--name", "t"])
            .arg("--nbd")
            .arg(format!("unix:{}", sock.display()))
            .args(["--failfast-timeout", &FAILFAST_MS.to_string()])
            .args(extra)
            .args(devs)
            .env("RAID1_RUN_DIR", &run)
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut a = Array {
            child,
            run,
            sock,
            stderr,
        };
        let t0 = Instant::now();
        while NbdClient::connect(&a.sock).is_err() {
            if let Ok(Some(st)) = a.child.try_wait() {
                panic!("raid1 run exited ({st}): {}", a.log());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "raid1 run not ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn detail(&self) -> String {
        text(
            &raid1_in(&self.run)
                .args(["detail", "t"])
                .output()
                .unwrap()
                .stdout,
        )
    }

    /// Waits until `pred(detail)` holds (at most `secs`).
    fn wait_for(&self, secs: u64, what: &str, pred: impl Fn(&str) -> bool) {
        let t0 = Instant::now();
        loop {
            let d = self.detail();
            if pred(&d) {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "waited {secs} s for {what}:\n{d}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn in_sync(&self) -> usize {
        self.detail().matches("active sync").count()
    }

    fn stop(mut self) {
        ok(raid1_in(&self.run).args(["stop", "t"]));
        let st = self.child.wait().unwrap();
        assert!(st.success(), "raid1 run: {st}\n{}", self.log());
    }
}

impl Drop for Array {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The array as the test wrote it: every acknowledged write.
struct Model(Vec<u8>);

impl Model {
    /// Writes `len` bytes of a pattern at `off`; returns the request's latency.
    fn write(&mut self, c: &mut NbdClient, off: u64, len: usize, seed: u8) -> Duration {
        let data: Vec<u8> = (0..len)
            .map(|i| seed ^ (i as u8).wrapping_mul(31))
            .collect();
        let t0 = Instant::now();
        c.request(CMD_WRITE, 0, off, len as u32, &data)
            .expect("a write must succeed while one member is in sync");
        self.0[off as usize..off as usize + len].copy_from_slice(&data);
        t0.elapsed()
    }

    fn check(&self, c: &mut NbdClient, what: &str) {
        let mut at = 0;
        while at < self.0.len() {
            let n = (self.0.len() - at).min(MIB as usize);
            let got = c.request(CMD_READ, 0, at as u64, n as u32, &[]).unwrap();
            assert!(
                got == self.0[at..at + n],
                "{what}: an acknowledged write is lost near byte {at}"
            );
            at += n;
        }
    }
}

fn images(dir: &Path) -> (PathBuf, PathBuf) {
    let (a, b) = (dir.join("a.img"), dir.join("b.img"));
    for p in [&a, &b] {
        File::create(p).unwrap().set_len(16 * MIB).unwrap();
    }
    (a, b)
}

/// Namespaces `tag`, a local image and a remote one served by nbdkit, and the mirror of the
/// two created: (net, dir, (local, remote image), nbdkit's log, nbdkit, the member names).
type Mirror = (
    Net,
    tempfile::TempDir,
    (PathBuf, PathBuf),
    PathBuf,
    Kit,
    [String; 2],
);

fn mirror(tag: u8) -> Mirror {
    let net = Net::new(tag);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = images(dir.path());
    let log = dir.path().join("nbdkit.log");
    let kit = Kit::start(&net, &b, &log);
    let devs = [a.display().to_string(), net.uri()];
    ok(Command::new("ip")
        .args(["netns", "exec", &net.a, RAID1, "create", "-l1", "-n2"])
        .args(["--assume-clean", "-N", "t"])
        .args(&devs));
    (net, dir, (a, b), log, kit, devs)
}

/// Failfast on a link taken down and on a stopped server, automatic re-add with a bitmap
/// recovery after each, split brain refused after a second assembler wrote the member.
#[test]
fn failfast_readd_and_split_brain_across_namespaces() {
    let (net, dir, (a, b), log, kit, devs) = mirror(1);
    small_chunk_bitmap(&[a.clone(), b.clone()]);
    let arr = Array::start(&net, dir.path(), &[], &devs);
    assert_eq!(arr.in_sync(), 2, "{}", arr.detail());
    let size = 16 * MIB as usize - 2 * MIB as usize;
    let mut model = Model(vec![0u8; size]);
    let mut c = NbdClient::connect(&arr.sock).unwrap();
    for i in 0..16u64 {
        model.write(&mut c, i * 256 * 1024, 256 * 1024, i as u8);
    }

    // The bitmap daemon clears the bits of these writes (both members have them) before the
    // fault, so that what the re-add copies is what the member missed.
    let t0 = Instant::now();
    while !ok(Command::new(RAID1).arg("examine-bitmap").arg(&a)).contains(" 0 dirty") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the bitmap never became clean"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // 1. The link goes down: requests fail over within the failfast timeout.
    net.link(false);
    let mut worst = Duration::ZERO;
    for i in 0..8u64 {
        worst = worst.max(model.write(&mut c, 5 * MIB + i * 65536, 65536, 0x40 + i as u8));
    }
    assert!(
        worst < Duration::from_millis(FAILFAST_MS + 1500),
        "a write waited {worst:?} with a failfast timeout of {FAILFAST_MS} ms"
    );
    arr.wait_for(10, "the remote member to be failed", |d| {
        d.contains("faulty")
    });
    assert!(arr.log().contains("LinkDown"), "{}", arr.log());
    model.check(&mut c, "degraded, after the link went down");
    let before = logged_write_bytes(&log);

    // 2. The link comes back: the member is re-added and only the dirty chunks are copied.
    net.link(true);
    arr.wait_for(30, "the re-add and its recovery", |d| {
        d.matches("active sync").count() == 2 && !d.contains("recovering")
    });
    let copied = logged_write_bytes(&log) - before;
    assert!(
        copied < 2 * MIB,
        "the re-add wrote {copied} bytes to the member: more than the 512 KiB written while it \
         was away (and its metadata), so not bitmap-guided"
    );
    assert!(arr.log().contains("re-added"), "{}", arr.log());
    model.check(&mut c, "after the re-add");

    // 3. The server stops answering (SIGSTOP): failfast again; SIGCONT: re-added again.
    kit.signal(libc::SIGSTOP);
    let t0 = Instant::now();
    model.write(&mut c, 9 * MIB, 65536, 0x77);
    assert!(
        t0.elapsed() < Duration::from_millis(FAILFAST_MS + 1500),
        "a write waited {:?} on a stopped server",
        t0.elapsed()
    );
    arr.wait_for(10, "the member failed on a stopped server", |d| {
        d.contains("faulty")
    });
    kit.signal(libc::SIGCONT);
    arr.wait_for(30, "the re-add after SIGCONT", |d| {
        d.matches("active sync").count() == 2 && !d.contains("recovering")
    });
    model.check(&mut c, "after the stopped server came back");

    // 4. Split brain: the server dies; another assembler runs the member alone and writes it;
    //    the server comes back. The array must refuse it and leave its data alone.
    drop(kit);
    model.write(&mut c, 10 * MIB, 65536, 0x99);
    arr.wait_for(10, "the member failed when its server died", |d| {
        d.contains("faulty")
    });
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let sock2 = other.join("o.nbd");
    let mut second = Command::new(RAID1)
        .args(["run", "--name", "o", "--degraded-ok", "--nbd"])
        .arg(format!("unix:{}", sock2.display()))
        .arg(&b)
        .env("RAID1_RUN_DIR", other.join("rd"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut c2 = loop {
        if let Ok(c2) = NbdClient::connect(&sock2) {
            break c2;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "second assembler not ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let theirs = vec![0xeeu8; 65536];
    c2.request(CMD_WRITE, 0, 12 * MIB, 65536, &theirs).unwrap();
    drop(c2);
    ok(raid1_in(&other.join("rd")).args(["stop", "o"]));
    second.wait().unwrap();
    let kit = Kit::start(&net, &b, &log);
    let t0 = Instant::now();
    while !arr.log().contains("split brain") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the returning member was not refused as split brain:\n{}",
            arr.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(arr.in_sync(), 1, "{}", arr.detail());
    // Its own write is still there: nothing of this array overwrote it.
    let data_off = common::data_offset(&b);
    let mut got = vec![0u8; 65536];
    std::os::unix::fs::FileExt::read_exact_at(
        &File::open(&b).unwrap(),
        &mut got,
        data_off + 12 * MIB,
    )
    .unwrap();
    assert!(got == theirs, "the refused member was written");
    model.check(&mut c, "after the split brain was refused");
    drop(c);
    arr.stop();
    drop(kit);
}

/// `--no-member-policy suspend`: with the remote member the only one in sync, its server's
/// death holds I/O (nothing fails), and the held write completes once the server is back.
#[test]
fn suspend_holds_io_until_the_last_member_returns() {
    let (net, dir, (a, b), log, kit, devs) = mirror(2);
    let arr = Array::start(&net, dir.path(), &["--no-member-policy", "suspend"], &devs);
    ok(raid1_in(&arr.run).args(["fail", "t"]).arg(&a));
    arr.wait_for(5, "the local member failed", |d| d.contains("faulty"));
    let size = 14 * MIB as usize;
    let mut model = Model(vec![0u8; size]);
    let mut c = NbdClient::connect(&arr.sock).unwrap();
    model.write(&mut c, 0, 65536, 1);
    drop(kit);
    // A write now is held, not failed: it is still unanswered after twice the timeout.
    let data = vec![0x5au8; 65536];
    let h = c.send(CMD_WRITE, 0, MIB, 65536, &data).unwrap();
    c.s.set_read_timeout(Some(Duration::from_millis(2 * FAILFAST_MS)))
        .unwrap();
    let mut none = [0u8; 0];
    let early = c.receive(h, &mut none);
    assert!(
        early.is_err(),
        "the write was answered while no member was reachable"
    );
    assert!(arr.log().contains("suspended"), "{}", arr.log());
    // The server comes back: the held write completes, without error.
    let _kit = Kit::start(&net, &b, &log);
    c.s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.receive(h, &mut none)
        .expect("the held write completes once its member is back");
    model.0[MIB as usize..MIB as usize + 65536].copy_from_slice(&data);
    model.check(&mut c, "after the held write completed");
    assert!(arr.log().contains("requests resume"), "{}", arr.log());
    drop(c);
    arr.stop();
}

/// A stop while I/O is suspended (the last in-sync member's server gone) ends at once rather
/// than waiting for the server for ever: the held write fails (it was never acknowledged), and
/// the stop names the member whose final superblock it could not write. The next assembly,
/// with the server back, has every acknowledged write.
#[test]
fn a_stop_while_io_is_suspended_ends_and_names_what_it_could_not_write() {
    let (net, dir, (a, b), log, kit, devs) = mirror(4);
    let mut arr = Array::start(&net, dir.path(), &["--no-member-policy", "suspend"], &devs);
    ok(raid1_in(&arr.run).args(["fail", "t"]).arg(&a));
    arr.wait_for(5, "the local member failed", |d| d.contains("faulty"));
    let mut model = Model(vec![0u8; 14 * MIB as usize]);
    let mut c = NbdClient::connect(&arr.sock).unwrap();
    model.write(&mut c, 0, 65536, 1);
    drop(kit);
    let h = c.send(CMD_WRITE, 0, MIB, 65536, &[0x5a; 65536]).unwrap();
    arr.wait_for(10, "I/O suspended", |_| arr.log().contains("suspended"));
    let t0 = Instant::now();
    let stop = raid1_in(&arr.run).args(["stop", "t"]).output().unwrap();
    let st = loop {
        if let Some(st) = arr.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the stop waits for a server that is gone: {}\n{}",
            text(&stop.stderr),
            arr.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !st.success(),
        "the stop could not write everything: {}",
        arr.log()
    );
    let said = arr.log();
    assert!(
        said.contains("the final superblock could not be written to") && said.contains(&net.uri()),
        "the stop must name the member it could not write: {said}"
    );
    c.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(
        c.receive(h, &mut []).is_err(),
        "the held write must fail, not be acknowledged"
    );
    drop(c);
    // The server back, the array assembles from the remote member: the acknowledged write is
    // there.
    let _kit = Kit::start(&net, &b, &log);
    let arr = Array::start(&net, dir.path(), &["--degraded-ok"], &[net.uri()]);
    let mut c = NbdClient::connect(&arr.sock).unwrap();
    let got = c.request(CMD_READ, 0, 0, 65536, &[]).unwrap();
    assert!(got == model.0[..65536], "an acknowledged write is lost");
    drop(c);
    arr.stop();
}

/// Throughput and latency with the remote member 0, 1 and 10 ms away (nbdkit's delay filter on
/// each request), with and without write-behind: figures, not assertions
/// (`scripts/bench/remote.sh` prints them). Requests go one at a time (queue depth 1), so the
/// figures show what a member's latency costs a writer that waits for each write.
#[test]
#[ignore = "a benchmark: scripts/bench/remote.sh runs it"]
fn bench_remote_delay() {
    let net = Net::new(3);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = images(dir.path());
    let c_img = dir.path().join("c.img");
    File::create(&c_img).unwrap().set_len(16 * MIB).unwrap();
    let log = dir.path().join("nbdkit.log");
    // One writer at queue depth 1: 200 writes of 64 KiB, then 200 reads.
    let measure = |devs: &[String], behind: Option<&str>| -> (f64, f64, f64) {
        let mut create = Command::new("ip");
        create
            .args(["netns", "exec", &net.a, RAID1, "create", "-l1", "-n2"])
            .args(["--assume-clean", "-N", "t", "--force"]);
        if let Some(w) = behind {
            create.args(["--write-behind", "256", "-W", w]);
        }
        ok(create.args(devs));
        let arr = Array::start(&net, dir.path(), &[], devs);
        let mut c = NbdClient::connect(&arr.sock).unwrap();
        let data = vec![7u8; 65536];
        let n = 200u64;
        let t0 = Instant::now();
        for i in 0..n {
            c.request(CMD_WRITE, 0, i * 65536, 65536, &data).unwrap();
        }
        let w = t0.elapsed();
        let t0 = Instant::now();
        for i in 0..n {
            c.request(CMD_READ, 0, i * 65536, 65536, &[]).unwrap();
        }
        let r = t0.elapsed();
        drop(c);
        arr.stop();
        (
            n as f64 / w.as_secs_f64(),
            w.as_secs_f64() * 1000.0 / n as f64,
            n as f64 / r.as_secs_f64(),
        )
    };
    let local = [a.display().to_string(), c_img.display().to_string()];
    let (lw, ll, lr) = measure(&local, None);
    println!(
        "| second member | write-behind | 64 KiB writes/s | mean write latency | 64 KiB reads/s | writes vs two local members |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    println!("| local image (the baseline) | no | {lw:.0} | {ll:.2} ms | {lr:.0} | 1.00 |");
    for behind in [false, true] {
        for ms in [0u32, 1, 10] {
            let kit = Kit::start_delayed(&net, &b, &log, ms);
            let devs = [a.display().to_string(), net.uri()];
            let uri = net.uri();
            let (w, l, r) = measure(&devs, behind.then_some(uri.as_str()));
            println!(
                "| NBD, {ms} ms per request | {} | {w:.0} | {l:.2} ms | {r:.0} | {:.2} |",
                if behind { "256 (write-mostly)" } else { "no" },
                w / lw
            );
            drop(kit);
        }
    }
}
