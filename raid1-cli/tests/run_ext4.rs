//! ext4 on a `raid1 run` mirror (NBD -> nbdfuse -> loop device -> ext4) through a member
//! failure and the recovery of a new member, all while mounted and written: a member is failed
//! while a writer is writing files, removed, writes continue, a new member is added and
//! recovered; every file reads back after a remount, `e2fsck -fn` is clean, and `mdadm
//! --examine` on the members agrees with what create/fail/add/recovery left. Mounts, loop
//! devices, the FUSE mount and the server are cleaned up by guards. Every tool must be
//! installed: a missing one fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "run_common.rs"]
mod common;

use common::{RAID1, Server, data_areas_equal, examine, fusermount_u, ok, sparse_images, tool};

/// The chain NBD -> nbdfuse file -> loop device -> mount point, torn down in reverse order.
struct Mounted {
    fuse_dir: PathBuf,
    nbdfuse: Child,
    loopdev: String,
    mnt: PathBuf,
    mounted: bool,
}

impl Mounted {
    fn new(uri: &str, dir: &Path, bytes: u64) -> Mounted {
        let fuse_dir = dir.join("fuse");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&fuse_dir).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        let nbdfuse = Command::new("nbdfuse")
            .arg(fuse_dir.join("disk"))
            .arg(uri)
            .stderr(Stdio::null())
            .spawn()
            .expect("nbdfuse runs (needs /dev/fuse)");
        let mut m = Mounted {
            fuse_dir,
            nbdfuse,
            loopdev: String::new(),
            mnt,
            mounted: false,
        };
        let t0 = Instant::now();
        while !std::fs::metadata(m.disk()).is_ok_and(|x| x.len() == bytes) {
            assert!(t0.elapsed() < Duration::from_secs(10), "nbdfuse file");
            std::thread::sleep(Duration::from_millis(20));
        }
        m.loopdev = ok(Command::new("losetup").args(["-f", "--show"]).arg(m.disk()))
            .trim()
            .to_string();
        m
    }

    fn disk(&self) -> PathBuf {
        self.fuse_dir.join("disk")
    }

    fn mount(&mut self) {
        ok(Command::new("mount").arg(&self.loopdev).arg(&self.mnt));
        self.mounted = true;
    }

    fn umount(&mut self) {
        ok(Command::new("umount").arg(&self.mnt));
        self.mounted = false;
        // Nothing of the file system may be served from the loop device's cache afterwards.
        ok(Command::new("blockdev").args(["--flushbufs", &self.loopdev]));
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted
            && !Command::new("umount")
                .arg(&self.mnt)
                .status()
                .is_ok_and(|s| s.success())
        {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        if !self.loopdev.is_empty() {
            let _ = Command::new("losetup").args(["-d", &self.loopdev]).status();
        }
        fusermount_u(&self.fuse_dir);
        let _ = self.nbdfuse.kill();
        let _ = self.nbdfuse.wait();
    }
}

/// The background writer: told to stop and joined on drop, so that a failing test does not
/// leave it holding the mount.
struct Writer {
    done: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl Writer {
    /// Stops the writer; the number of files it wrote.
    fn finish(mut self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn sha256(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// File contents: generation `g` of file `i`, about 1.5 MiB, distinct for every (i, g).
fn content(i: u64, g: u64) -> Vec<u8> {
    let mut v = vec![0u8; 1_500_000 + (i as usize % 7) * 4096];
    raid1_testkit::Rng::new(i << 32 | g).fill(&mut v);
    v
}

#[test]
fn ext4_survives_a_member_failure_and_a_new_member_recovered_while_mounted() {
    let t_all = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "m", 3, 192 << 20);
    ok(Command::new(RAID1)
        .args(["create", "-l1", "-n2", "--assume-clean", "-N", "fs4"])
        .args(&imgs[..2]));
    let uuid = examine(&imgs[0])["Array UUID"].clone();
    // Recovery throttled to 30 MB/s so that it runs while the writer writes.
    let s = Server::start(
        dir.path(),
        "fs4",
        &["--sync-speed-max", "30000"],
        &imgs[..2],
    );
    let bytes = s.detail()["array_size_kib"].as_u64().unwrap() * 1024;
    let mut m = Mounted::new(&s.uri(), dir.path(), bytes);
    ok(Command::new("mkfs.ext4").args(["-q", "-F", &m.loopdev]));
    m.mount();
    let mnt = m.mnt.clone();

    // Files written before anything happens.
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..6 {
        let data = content(i, 0);
        std::fs::write(mnt.join(format!("before{i}")), &data).unwrap();
        expected.insert(format!("before{i}"), sha256(&data));
    }
    ok(&mut Command::new("sync"));

    // A writer that keeps writing (and fsyncing) files, recording each completed one.
    let done = Arc::new(AtomicBool::new(false));
    let written: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let completed = Arc::new(AtomicU64::new(0));
    let writer = Writer {
        done: done.clone(),
        handle: Some({
            let (done, written, mnt) = (done.clone(), written.clone(), mnt.clone());
            let completed = completed.clone();
            std::thread::spawn(move || {
                let mut g = 0u64;
                while !done.load(Ordering::Relaxed) {
                    g += 1;
                    let i = g % 24;
                    let name = format!("w{i}");
                    let data = content(100 + i, g);
                    let f = mnt.join(&name);
                    std::fs::write(&f, &data).unwrap();
                    std::fs::File::open(&f).unwrap().sync_all().unwrap();
                    written.lock().unwrap().insert(name, sha256(&data));
                    completed.fetch_add(1, Ordering::Relaxed);
                }
                g
            })
        }),
    };
    let files_done = || completed.load(Ordering::Relaxed);
    let wait_files = |n: u64, what: &str| {
        let t0 = Instant::now();
        let start = files_done();
        while files_done() < start + n {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "writer stalled {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_files(3, "before the failure");

    // Fail member 1 while the writer is writing; remove it; writes continue.
    let m1 = imgs[1].to_str().unwrap();
    s.ctl_ok(&["fail", "fs4", m1]);
    let d = s.detail();
    assert_eq!(d["failed_devices"], 1, "{d}");
    assert!(d["state"].as_str().unwrap().contains("degraded"), "{d}");
    wait_files(3, "after the failure");
    s.ctl_ok(&["remove", "fs4", m1]);
    wait_files(3, "after the removal");

    // A new member, recovered while mounted and written.
    let m2 = imgs[2].to_str().unwrap();
    s.ctl_ok(&["add", "fs4", m2]);
    let mut saw_rebuilding = false;
    let t0 = Instant::now();
    loop {
        let d = s.detail();
        let rebuilding = d["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["device"] == m2 && m["state"] == "spare rebuilding");
        saw_rebuilding |= rebuilding;
        if d["sync_action"].is_null() && saw_rebuilding {
            break;
        }
        if rebuilding && files_done() >= 24 {
            // The recovery runs while files are being written: enough seen.
            wait_files(2, "during the recovery");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no recovery seen: {d}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        saw_rebuilding,
        "the new member never showed as spare rebuilding"
    );
    s.ctl_ok(&["wait", "fs4"]);
    let generations = writer.finish();
    let d = s.detail();
    // "active" or "clean" (the file system may still be writing): neither degraded nor syncing.
    assert!(
        matches!(d["state"].as_str(), Some("active" | "clean")),
        "{d}"
    );
    assert_eq!(d["active_devices"], 2, "{d}");
    expected.extend(written.lock().unwrap().clone());

    // Every file reads back after a remount (from the array, not the page cache).
    m.umount();
    m.mount();
    for (name, sum) in &expected {
        let data = std::fs::read(mnt.join(name)).unwrap();
        assert_eq!(&sha256(&data), sum, "{name} differs");
    }
    m.umount();
    ok(Command::new("e2fsck").args(["-f", "-n", &m.loopdev]));
    drop(m);
    s.stop();

    // What mdadm reads on the members: m0 and m2 in slots 0 and 1, in sync, same events,
    // clean; m1 (failed, removed, never written again) is behind them.
    let e0 = examine(&imgs[0]);
    let e1 = examine(&imgs[1]);
    let e2 = examine(&imgs[2]);
    for (e, role) in [(&e0, "Active device 0"), (&e2, "Active device 1")] {
        assert_eq!(e["Array UUID"], uuid, "{e:?}");
        assert_eq!(e["Device Role"], role, "{e:?}");
        assert_eq!(e["State"], "clean", "{e:?}");
        assert!(e["Array State"].starts_with("AA"), "{e:?}");
        assert!(!e.contains_key("Recovery Offset"), "{e:?}");
    }
    assert_eq!(e0["Events"], e2["Events"], "in-sync members' events");
    let ev = |e: &BTreeMap<String, String>| e["Events"].parse::<u64>().unwrap();
    assert!(
        ev(&e1) < ev(&e0),
        "the failed member is stale: {e1:?} vs {e0:?}"
    );
    assert_eq!(e1["Array UUID"], uuid);
    assert!(
        data_areas_equal(&imgs[0], &imgs[2], bytes),
        "the recovered member differs from member 0"
    );
    // Each in-sync member alone holds a clean file system.
    for d in [&imgs[0], &imgs[2]] {
        let off = common::data_offset(d);
        let area = dir.path().join("area.img");
        let f = std::fs::File::open(d).unwrap();
        let mut v = vec![0u8; bytes as usize];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut v, off).unwrap();
        std::fs::write(&area, &v).unwrap();
        let out = tool(Command::new("e2fsck").args(["-f", "-n"]).arg(&area));
        assert!(
            out.status.success(),
            "{}: {}",
            d.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    eprintln!(
        "{} files verified ({generations} writer generations), {:.1} s",
        expected.len(),
        t_all.elapsed().as_secs_f64()
    );
}
