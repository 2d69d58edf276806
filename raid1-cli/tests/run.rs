//! `raid1 run` on arrays made by the Linux kernel (fixtures/), read and written through NBD
//! with qemu's and libnbd's clients, checked with mdadm; control verbs on the running array.
//! Every tool must be installed: a missing one fails the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "run_common.rs"]
mod common;

use common::{
    FuseMember, RAID1, Server, examine, manifest, ok, sha256_file as sha256, tool, unpack,
};

/// The data area of a member (`array_bytes` from its data offset).
fn data_area(dev: &Path, array_bytes: u64) -> Vec<u8> {
    let ex = examine(dev);
    // 1.0 members have no "Data Offset" line: their data starts at sector 0.
    let off: u64 = ex
        .get("Data Offset")
        .map_or(0, |v| v.split_whitespace().next().unwrap().parse().unwrap());
    let all = std::fs::read(dev).unwrap();
    let start = (off * 512) as usize;
    all[start..start + array_bytes as usize].to_vec()
}

fn serve_and_check(case: &str, extra: &[&str], wait: bool) {
    let m = manifest(case);
    let dir = tempfile::tempdir().unwrap();
    let devs = unpack(case, dir.path(), "");
    let s = Server::start(dir.path(), "fx", extra, &devs);
    let got = s.read_all(&dir.path().join("out.raw"));
    assert_eq!(
        got, m["array_sha256"],
        "{case}: array data differs from Linux's"
    );
    let bytes: u64 = m["array_bytes"].parse().unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join("out.raw")).unwrap().len(),
        bytes
    );
    if wait {
        s.ctl_ok(&["wait", "fx"]);
    }
    s.stop();
    for d in &devs {
        let ex = examine(d);
        assert_eq!(ex["State"], "clean", "{case}: {} not clean", d.display());
    }
    if wait {
        let first = data_area(&devs[0], bytes);
        for d in &devs[1..] {
            assert!(first == data_area(d, bytes), "{case}: members differ");
        }
    }
}

#[test]
fn serves_v1_0() {
    serve_and_check("v1.0", &[], false);
}

#[test]
fn serves_v1_1() {
    serve_and_check("v1.1", &[], false);
}

#[test]
fn serves_v1_2() {
    serve_and_check("v1.2", &[], false);
}

#[test]
fn serves_bitmap() {
    serve_and_check("bitmap", &[], false);
}

#[test]
fn serves_bitmap_v1_0() {
    serve_and_check("bitmap-v1.0", &[], false);
}

#[test]
fn serves_three() {
    serve_and_check("three", &[], false);
}

#[test]
fn several_clients_at_once() {
    // nbdcopy opens 4 connections (the export advertises multi-conn) and reads in parallel,
    // while two qemu-io clients write elsewhere.
    let m = manifest("three");
    let dir = tempfile::tempdir().unwrap();
    let devs = unpack("three", dir.path(), "");
    let s = Server::start(dir.path(), "mc", &[], &devs);
    let out = dir.path().join("copy.raw");
    ok(Command::new("nbdcopy")
        .args(["--connections=4", &s.uri()])
        .arg(&out));
    assert_eq!(sha256(&out), m["array_sha256"]);
    let writers: Vec<_> = (0..2u64)
        .map(|i| {
            let uri = s.uri();
            std::thread::spawn(move || {
                for j in 0..10u64 {
                    let off = (i * 10 + j) * 65536;
                    let out = Command::new("qemu-io")
                        .args(["-f", "raw", &uri, "-c"])
                        .arg(format!("write -P {} {off} 65536", 0x60 + i))
                        .output()
                        .expect("qemu-io");
                    assert!(out.status.success());
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let out = qemu_io(&s, "read -P 0x60 0 655360");
    assert!(!out.contains("verification failed"), "{out}");
    let out = qemu_io(&s, "read -P 0x61 655360 655360");
    assert!(!out.contains("verification failed"), "{out}");
    s.stop();
    let bytes: u64 = m["array_bytes"].parse().unwrap();
    let a = data_area(&devs[0], bytes);
    for d in &devs[1..] {
        assert!(a == data_area(d, bytes));
    }
}

#[test]
fn dirty_array_resyncs() {
    serve_and_check("dirty", &["--sync-speed-max", "0"], true);
}

#[test]
fn recovery_resumes() {
    serve_and_check("recovery", &["--sync-speed-max", "0"], true);
}

/// SIGTERMs the server, which must exit 0, and returns its stderr.
fn stop_with_stderr(mut s: Server) -> String {
    let child = s.child.take().unwrap();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

#[test]
fn degraded_at_last_update_starts_and_stale_member_is_left_out() {
    let m = manifest("degraded");
    let dir = tempfile::tempdir().unwrap();
    let devs = unpack("degraded", dir.path(), "");
    let vdb_before = std::fs::read(&devs[1]).unwrap();
    // vda records vdb as failed and removed (`A.`): `mdadm --assemble` starts it with one
    // drive, and so does `raid1 run` without --degraded-ok.
    let s = Server::start(dir.path(), "dg", &[], &devs);
    let d = s.ctl(&["detail", "dg", "--test"]);
    assert_eq!(
        d.status.code(),
        Some(1),
        "detail of a degraded array exits 1"
    );
    let text = String::from_utf8_lossy(&d.stdout);
    assert!(text.contains("degraded"), "{text}");
    assert!(text.contains("removed"), "{text}");
    assert_eq!(s.read_all(&dir.path().join("out.raw")), m["array_sha256"]);
    let err = stop_with_stderr(s);
    assert!(
        err.contains("vdb.img not included: stale"),
        "the stale member is named: {err}"
    );
    assert!(
        err.contains("started with 1 drive(s) (out of 2): slot(s) 1 missing"),
        "{err}"
    );
    assert_eq!(examine(&devs[0])["State"], "clean");
    assert!(
        std::fs::read(&devs[1]).unwrap() == vdb_before,
        "the stale member must not be written"
    );
}

fn qemu_io(s: &Server, cmd: &str) -> String {
    ok(Command::new("qemu-io").args(["-f", "raw", &s.uri(), "-c", cmd]))
}

#[test]
fn writes_read_back_and_stop_marks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let devs = unpack("v1.2", dir.path(), "");
    let events_before: u64 = examine(&devs[0])["Events"].parse().unwrap();
    let s = Server::start(dir.path(), "w", &[], &devs);
    qemu_io(&s, "write -P 0xab 1048576 1048576");
    qemu_io(&s, "write -P 0xcd 0 4096");
    let out = qemu_io(&s, "read -P 0xab 1048576 1048576");
    assert!(!out.contains("Pattern verification failed"), "{out}");
    let out = qemu_io(&s, "read -P 0xcd 0 4096");
    assert!(!out.contains("Pattern verification failed"), "{out}");
    // Write zeroes and trim (3 MiB: split into several core requests) read back as zeroes.
    qemu_io(&s, "write -P 0xee 2097152 4194304");
    qemu_io(&s, "write -z 2097152 1048576");
    qemu_io(&s, "discard 3145728 3145728");
    let out = qemu_io(&s, "read -P 0 2097152 4194304");
    assert!(!out.contains("Pattern verification failed"), "{out}");
    s.stop();
    let bytes = manifest("v1.2")["array_bytes"].parse().unwrap();
    for d in &devs {
        let ex = examine(d);
        assert_eq!(ex["State"], "clean");
        let ev: u64 = ex["Events"].parse().unwrap();
        // Dirty then clean, nothing else changed: md's dirty->clean roll-back brings events
        // back to where they were (docs/CORE.md), as Linux does.
        assert_eq!(ev, events_before, "events {ev} after {events_before}");
        let area = data_area(d, bytes);
        assert!(area[1 << 20..2 << 20].iter().all(|b| *b == 0xab));
        assert!(area[..4096].iter().all(|b| *b == 0xcd));
        assert!(area[2 << 20..6 << 20].iter().all(|b| *b == 0));
    }
    // Both members carry the same events and data.
    assert_eq!(examine(&devs[0])["Events"], examine(&devs[1])["Events"]);
    assert!(data_area(&devs[0], bytes) == data_area(&devs[1], bytes));
}

#[test]
fn fail_remove_add_while_writing_then_wait() {
    let dir = tempfile::tempdir().unwrap();
    let devs = unpack("bitmap-v1.0", dir.path(), "");
    let bytes: u64 = manifest("bitmap-v1.0")["array_bytes"].parse().unwrap();
    let s = Server::start(dir.path(), "fra", &["--sync-speed-max", "0"], &devs);
    let uri = s.uri();
    let writer = std::thread::spawn(move || {
        for i in 0..40u64 {
            let off = (i * 262_144) % (8 << 20);
            let out = Command::new("qemu-io")
                .args(["-f", "raw", &uri, "-c"])
                .arg(format!("write -P {} {off} 262144", 0x10 + i))
                .output()
                .expect("qemu-io");
            assert!(out.status.success());
        }
    });
    let vdb = devs[1].to_str().unwrap();
    s.ctl_ok(&["fail", "fra", vdb]);
    let d = s.ctl(&["detail", "fra", "--json", "--test"]);
    assert_eq!(d.status.code(), Some(1));
    let out = s.ctl(&["remove", "fra", devs[0].to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an in-sync member cannot be removed"
    );
    s.ctl_ok(&["remove", "fra", vdb]);
    s.ctl_ok(&["add", "fra", vdb]);
    writer.join().unwrap();
    s.ctl_ok(&["wait", "fra"]);
    let d = s.ctl(&["detail", "fra", "--test"]);
    assert_eq!(
        d.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&d.stdout)
    );
    let status = s.ctl_ok(&["status"]);
    assert!(status.contains("[2/2] [UU]"), "{status}");
    let before = s.read_all(&dir.path().join("out.raw"));
    s.stop();
    let a = data_area(&devs[0], bytes);
    let b = data_area(&devs[1], bytes);
    assert!(a == b, "members differ after the rebuild");
    assert_eq!(sha256(&dir.path().join("out.raw")), before);
    for d in &devs {
        assert_eq!(examine(d)["State"], "clean");
    }
}

/// A `raid1 run --daemon`: the command returns once the array serves; on drop the daemon is
/// killed (its pid comes from `detail --json`) if it still runs.
struct Daemon {
    run_dir: PathBuf,
    name: String,
}

impl Daemon {
    fn ctl(&self, args: &[&str]) -> Output {
        tool(
            Command::new(RAID1)
                .env("RAID1_RUN_DIR", &self.run_dir)
                .args(args),
        )
    }

    fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "raid1 {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn detail(&self) -> serde_json::Value {
        let out = self.ctl(&["detail", &self.name, "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.run_dir.join(format!("{}.sock", self.name)).exists() {
            if let Some(pid) = self.detail()["pid"].as_u64() {
                // SAFETY: killing the daemon this test started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn check_repair_grow_fail_by_other_path_monitor_daemon_stop() {
    let dir = tempfile::tempdir().unwrap();
    let devs = unpack("spare", dir.path(), "");
    let bytes: u64 = manifest("spare")["array_bytes"].parse().unwrap();
    // A mismatch between the mirrors: 8 sectors of vdb's data area at 1 MiB.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&devs[1])
            .unwrap();
        f.write_all_at(&[0x5a; 4096], 2048 * 512 + (1 << 20))
            .unwrap();
    }
    let run_dir = dir.path().join("rd");
    let out = tool(
        Command::new(RAID1)
            .env("RAID1_RUN_DIR", &run_dir)
            .args(["run", "--daemon", "--name", "sp", "--sync-speed-max", "0"])
            .args(&devs),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = Daemon {
        run_dir: run_dir.clone(),
        name: "sp".into(),
    };
    assert!(
        run_dir.join("sp.sock").exists(),
        "serving when --daemon returns"
    );
    let monitor = Command::new(RAID1)
        .env("RAID1_RUN_DIR", &run_dir)
        .args(["monitor", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    d.ctl_ok(&["check", "sp"]);
    d.ctl_ok(&["wait", "sp"]);
    // As md, mismatches count whole sync blocks (128 sectors), not the 8 that differ.
    assert_eq!(d.detail()["mismatch_cnt"].as_u64(), Some(128));
    d.ctl_ok(&["repair", "sp"]);
    d.ctl_ok(&["wait", "sp"]);
    d.ctl_ok(&["check", "sp"]);
    d.ctl_ok(&["wait", "sp"]);
    assert_eq!(d.detail()["mismatch_cnt"].as_u64(), Some(0));
    // The spare recovers into the third slot.
    d.ctl_ok(&["grow", "sp", "--raid-devices", "3"]);
    d.ctl_ok(&["wait", "sp"]);
    let st = d.ctl_ok(&["status"]);
    assert!(st.contains("[3/3] [UUU]"), "{st}");
    assert_eq!(d.ctl(&["detail", "sp", "--test"]).status.code(), Some(0));
    // Fail vdc through another path to the same file.
    let link = dir.path().join("link-to-vdc");
    std::os::unix::fs::symlink(&devs[2], &link).unwrap();
    d.ctl_ok(&["fail", "sp", link.to_str().unwrap()]);
    // Degraded: `detail` exits 0 as mdadm's does; `--test` says 1.
    assert_eq!(d.ctl(&["detail", "sp"]).status.code(), Some(0));
    assert_eq!(d.ctl(&["detail", "sp", "--test"]).status.code(), Some(1));
    let st = d.ctl_ok(&["status"]);
    assert!(
        st.contains("vdc.img[2](F)") && st.contains("[3/2] [UU_]"),
        "{st}"
    );
    // Unknown array, unknown member: exit 2.
    assert_eq!(d.ctl(&["detail", "nosuch"]).status.code(), Some(2));
    let other = dir.path().join("other.img");
    std::fs::write(&other, vec![0u8; 1 << 20]).unwrap();
    assert_eq!(
        d.ctl(&["fail", "sp", other.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    d.ctl_ok(&["stop", "sp"]);
    assert!(!run_dir.join("sp.sock").exists());
    let out = monitor.wait_with_output_timeout();
    let events: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["event"].as_str().unwrap().to_string()
        })
        .collect();
    for want in [
        "CheckStarted",
        "MismatchesFound",
        "CheckFinished",
        "RebuildStarted",
        "SpareActive",
        "RebuildFinished",
        "Fail",
        "DegradedArray",
        "Stopped",
    ] {
        assert!(
            events.iter().any(|e| e == want),
            "{want} missing: {events:?}"
        );
    }
    // vda and vdb agree after the repair; vdc was rebuilt before it failed.
    let a = data_area(&devs[0], bytes);
    assert!(a == data_area(&devs[1], bytes));
    assert!(a == data_area(&devs[2], bytes));
    assert_eq!(examine(&devs[0])["State"], "clean");
    assert_eq!(
        examine(&devs[0])["Array State"].split_whitespace().next(),
        Some("AA.")
    );
}

trait WaitTimeout {
    fn wait_with_output_timeout(self) -> String;
}

impl WaitTimeout for Child {
    fn wait_with_output_timeout(mut self) -> String {
        let t0 = Instant::now();
        while self.try_wait().unwrap().is_none() {
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = self.kill();
                panic!("monitor did not end when the array stopped");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = self.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn recovery_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let devs = unpack("recovery", dir.path(), "");
    let checkpoint: u64 = manifest("recovery")["vdb.recovery_offset"].parse().unwrap();
    let s = Server::start(dir.path(), "rc", &["--sync-speed-max", "64"], &devs);
    let st = s.ctl_ok(&["status"]);
    let line = st
        .lines()
        .find(|l| l.contains("recovery ="))
        .unwrap_or_else(|| panic!("no recovery line: {st}"));
    let done: u64 = line
        .split('(')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        done * 2 >= checkpoint,
        "recovery restarted below its checkpoint: {line}"
    );
    s.stop();
    let ex = examine(&devs[1]);
    let off: u64 = ex["Recovery Offset"]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        off >= checkpoint,
        "checkpoint went back: {off} < {checkpoint}"
    );
}

/// Loop devices attached for a test; detached on drop.
struct Loops(Vec<String>);

impl Drop for Loops {
    fn drop(&mut self) {
        for l in &self.0 {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
    }
}

#[test]
fn block_devices_exclusive_and_named_by_another_path() {
    let m = manifest("v1.2");
    let dir = tempfile::tempdir().unwrap();
    let imgs = unpack("v1.2", dir.path(), "");
    let mut loops = Loops(Vec::new());
    for i in &imgs {
        let dev = ok(Command::new("losetup").args(["-f", "--show"]).arg(i))
            .trim()
            .to_string();
        loops.0.push(dev);
    }
    let devs: Vec<PathBuf> = loops.0.iter().map(PathBuf::from).collect();
    let s = Server::start(dir.path(), "blk", &["--sync-speed-max", "0"], &devs);
    // A second server on the same devices is refused (O_EXCL), before anything is written.
    let out = tool(
        Command::new(RAID1)
            .env("RAID1_RUN_DIR", dir.path().join("rd"))
            .args(["run", "--name", "blk2"])
            .args(&devs),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    qemu_io(&s, "write -P 0x77 65536 131072");
    // Zeroes on block devices: the range is zeroed (fallocate), not just discarded.
    qemu_io(&s, "write -P 0x99 1048576 1048576");
    qemu_io(&s, "write -z 1048576 1048576");
    let out = qemu_io(&s, "read -P 0 1048576 1048576");
    assert!(!out.contains("verification failed"), "{out}");
    let link = dir.path().join("second-member");
    std::os::unix::fs::symlink(&devs[1], &link).unwrap();
    let l = link.to_str().unwrap();
    s.ctl_ok(&["fail", "blk", l]);
    s.ctl_ok(&["remove", "blk", l]);
    qemu_io(&s, "write -P 0x78 0 65536");
    s.ctl_ok(&["re-add", "blk", l]);
    s.ctl_ok(&["wait", "blk"]);
    assert_eq!(s.ctl(&["detail", "blk", "--test"]).status.code(), Some(0));
    let out = qemu_io(&s, "read -P 0x78 0 65536");
    assert!(!out.contains("verification failed"), "{out}");
    let out = qemu_io(&s, "read -P 0x77 65536 131072");
    assert!(!out.contains("verification failed"), "{out}");
    s.stop();
    let bytes: u64 = m["array_bytes"].parse().unwrap();
    drop(loops);
    let a = data_area(&imgs[0], bytes);
    assert!(
        a == data_area(&imgs[1], bytes),
        "members differ after the re-add"
    );
    assert!(a[..65536].iter().all(|b| *b == 0x78));
    assert!(a[1 << 20..2 << 20].iter().all(|b| *b == 0));
}

/// The linux-md oracle (beside the repository): boots the real kernel on the images.
fn linux_md(images: &[PathBuf], script: &str) -> String {
    let run = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/linux-md/run");
    assert!(
        run.exists(),
        "the linux-md oracle is missing: {}",
        run.display()
    );
    let g = raid1_testkit::guest::boot(&|| Command::new(&run), images, script);
    let out = g.output;
    let text = g.stdout;
    assert!(
        out.status.success(),
        "linux-md: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn linux_assembles_what_raid1_run_left() {
    // bitmap-dirty: vdb is stale; re-add it (bitmap-guided), write while degraded and after,
    // stop; then the real kernel must assemble both members in sync, serve the same bytes,
    // and find no mismatch between them.
    let dir = tempfile::tempdir().unwrap();
    let devs = unpack("bitmap-dirty", dir.path(), "");
    let s = Server::start(dir.path(), "ox", &["--degraded-ok"], &devs);
    qemu_io(&s, "write -P 0x31 8192 4096");
    s.ctl_ok(&["re-add", "ox", devs[1].to_str().unwrap()]);
    qemu_io(&s, "write -P 0x32 5242880 1048576");
    s.ctl_ok(&["wait", "ox"]);
    assert_eq!(s.ctl(&["detail", "ox", "--test"]).status.code(), Some(0));
    let ours = s.read_all(&dir.path().join("ours.raw"));
    s.stop();
    let out = linux_md(
        &devs,
        "mdadm --assemble /dev/md0 /dev/vda /dev/vdb || exit 1\n\
         cat /proc/mdstat\n\
         sha256sum /dev/md0\n\
         echo check > /sys/block/md0/md/sync_action\n\
         sleep 1\n\
         mdadm --wait /dev/md0\n\
         echo mismatch_cnt=$(cat /sys/block/md0/md/mismatch_cnt)\n",
    );
    assert!(out.contains("[2/2] [UU]"), "{out}");
    assert!(!out.contains("resync ="), "Linux resyncs: {out}");
    assert!(!out.contains("recovery ="), "Linux recovers: {out}");
    assert!(out.contains(&format!("{ours}  /dev/md0")), "{out}");
    assert!(out.contains("mismatch_cnt=0"), "{out}");
}

/// A member image behind nbdkit's error filter, exported as a file by nbdfuse: its reads and
/// writes fail with a real EIO while the trigger files exist.
struct FaultyMember {
    fuse: FuseMember,
    triggers: PathBuf,
}

impl FaultyMember {
    fn start(image: &Path, dir: &Path) -> FaultyMember {
        let triggers = dir.join("triggers");
        std::fs::create_dir_all(&triggers).unwrap();
        let params = [
            "error-rate=100%".to_string(),
            "error=EIO".to_string(),
            format!("error-pread-file={}", triggers.join("pread").display()),
            format!("error-pwrite-file={}", triggers.join("pwrite").display()),
        ];
        let fuse = FuseMember::start(image, dir, "kit.sock", "error", &params);
        FaultyMember { fuse, triggers }
    }

    fn disk(&self) -> PathBuf {
        self.fuse.disk()
    }

    fn fail(&self, what: &str, on: bool) {
        let t = self.triggers.join(what);
        if on {
            std::fs::write(t, b"").unwrap();
        } else {
            std::fs::remove_file(t).unwrap();
        }
    }
}

#[test]
fn read_errors_are_served_from_the_mirror_and_write_errors_fail_the_member() {
    let m = manifest("v1.2");
    let bytes: u64 = m["array_bytes"].parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let imgs = unpack("v1.2", dir.path(), "");
    let faulty = FaultyMember::start(&imgs[1], dir.path());
    let devs = vec![imgs[0].clone(), faulty.disk()];
    let s = Server::start(dir.path(), "eio", &["--sync-speed-max", "0"], &devs);
    // Reads of vdb fail: every block comes from vda (and is rewritten on vdb).
    faulty.fail("pread", true);
    assert_eq!(s.read_all(&dir.path().join("a.raw")), m["array_sha256"]);
    faulty.fail("pread", false);
    // Writes to vdb fail: the write still succeeds on vda, vdb becomes faulty.
    faulty.fail("pwrite", true);
    qemu_io(&s, "write -P 0x44 0 131072");
    let d = s.ctl(&["detail", "eio", "--test"]);
    assert_eq!(d.status.code(), Some(1));
    let text = String::from_utf8_lossy(&d.stdout);
    assert!(text.contains("faulty"), "{text}");
    let out = qemu_io(&s, "read -P 0x44 0 131072");
    assert!(!out.contains("verification failed"), "{out}");
    faulty.fail("pwrite", false);
    let disk = faulty.disk();
    let disk = disk.to_str().unwrap();
    s.ctl_ok(&["remove", "eio", disk]);
    s.ctl_ok(&["add", "eio", disk]);
    s.ctl_ok(&["wait", "eio"]);
    assert_eq!(s.ctl(&["detail", "eio", "--test"]).status.code(), Some(0));
    s.stop();
    drop(faulty);
    let a = data_area(&imgs[0], bytes);
    assert!(
        a == data_area(&imgs[1], bytes),
        "members differ after the rebuild"
    );
    assert!(a[..131072].iter().all(|b| *b == 0x44));
}

#[test]
fn stop_with_a_failed_member_then_it_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = unpack("v1.2", dir.path(), "");
    let faulty = FaultyMember::start(&imgs[1], dir.path());
    let devs = vec![imgs[0].clone(), faulty.disk()];
    let s = Server::start(dir.path(), "sf", &[], &devs);
    faulty.fail("pwrite", true);
    qemu_io(&s, "write -P 0x55 0 65536");
    assert_eq!(s.ctl(&["detail", "sf", "--test"]).status.code(), Some(1));
    // The failed member is not written at stop: the stop still succeeds.
    s.stop();
    faulty.fail("pwrite", false);
    let ex = examine(&imgs[0]);
    assert_eq!(ex["State"], "clean");
    assert!(ex["Array State"].starts_with("A."), "{ex:?}");
    // Degraded when stopped: it starts again as it was (mdadm --assemble does), the failed
    // member left out as stale and never written.
    let before = std::fs::read(&imgs[1]).unwrap();
    let s = Server::start(dir.path(), "sf", &[], &devs);
    let out = qemu_io(&s, "read -P 0x55 0 65536");
    assert!(!out.contains("verification failed"), "{out}");
    let err = stop_with_stderr(s);
    assert!(
        err.contains("not included: stale") && err.contains("started with 1 drive(s)"),
        "{err}"
    );
    assert!(std::fs::read(&imgs[1]).unwrap() == before);
}

#[test]
fn killed_while_writing_resyncs_from_the_bitmap() {
    let dir = tempfile::tempdir().unwrap();
    let devs = unpack("bitmap-v1.0", dir.path(), "");
    let bytes: u64 = manifest("bitmap-v1.0")["array_bytes"].parse().unwrap();
    let mut s = Server::start(dir.path(), "kx", &[], &devs);
    let uri = s.uri();
    let writer = std::thread::spawn(move || {
        for i in 0..200u64 {
            let off = (i * 131_072) % (12 << 20);
            let ok = Command::new("qemu-io")
                .args(["-f", "raw", &uri, "-c"])
                .arg(format!("write -P {} {off} 131072", i % 251))
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                break; // the server is gone
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    // Pull the plug: no clean stop.
    let mut child = s.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    writer.join().unwrap();
    drop(s);
    for d in &devs {
        assert_eq!(
            examine(d)["State"],
            "active",
            "{} must be dirty",
            d.display()
        );
    }
    // The real kernel on a copy of the crashed members: its bitmap-guided resync must leave
    // no mismatch, so every chunk written before the crash was marked in the bitmap on disk.
    let copies: Vec<PathBuf> = devs
        .iter()
        .map(|d| {
            let c = d.with_extension("copy");
            std::fs::copy(d, &c).unwrap();
            c
        })
        .collect();
    let out = linux_md(
        &copies,
        "mdadm --assemble /dev/md0 /dev/vda /dev/vdb || exit 1\n\
         mdadm --wait /dev/md0\n\
         echo check > /sys/block/md0/md/sync_action\n\
         sleep 1\n\
         mdadm --wait /dev/md0\n\
         echo mismatch_cnt=$(cat /sys/block/md0/md/mismatch_cnt)\n",
    );
    assert!(out.contains("mismatch_cnt=0"), "{out}");
    let s = Server::start(dir.path(), "kx", &["--sync-speed-max", "0"], &devs);
    s.ctl_ok(&["wait", "kx"]);
    s.stop();
    for d in &devs {
        assert_eq!(examine(d)["State"], "clean");
    }
    assert!(
        data_area(&devs[0], bytes) == data_area(&devs[1], bytes),
        "members differ after the resync"
    );
}

#[test]
fn ext4_through_the_kernel_then_fsck_on_each_member() {
    // raid1 run -> NBD -> nbdfuse (file) -> loop device -> ext4, files written and read back;
    // after the stop, each member's data area alone holds a clean filesystem.
    let dir = tempfile::tempdir().unwrap();
    let devs = unpack("bitmap", dir.path(), "");
    let bytes: u64 = manifest("bitmap")["array_bytes"].parse().unwrap();
    let s = Server::start(dir.path(), "fs", &[], &devs);
    let fuse = dir.path().join("fuse");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&fuse).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let mut nbdfuse = Command::new("nbdfuse")
        .arg(fuse.join("disk"))
        .arg(s.uri())
        .stderr(Stdio::null())
        .spawn()
        .expect("nbdfuse runs");
    let t0 = Instant::now();
    while !std::fs::metadata(fuse.join("disk")).is_ok_and(|m| m.len() == bytes) {
        assert!(t0.elapsed() < Duration::from_secs(10), "nbdfuse file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let loopdev = ok(Command::new("losetup")
        .args(["-f", "--show"])
        .arg(fuse.join("disk")))
    .trim()
    .to_string();
    let loops = Loops(vec![loopdev.clone()]);
    ok(Command::new("mkfs.ext4").args(["-q", "-F", &loopdev]));
    ok(Command::new("mount").arg(&loopdev).arg(&mnt));
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    for i in 0..4 {
        std::fs::write(mnt.join(format!("f{i}")), &data).unwrap();
    }
    ok(&mut Command::new("sync"));
    ok(Command::new("fstrim").arg(&mnt));
    ok(Command::new("umount").arg(&mnt));
    ok(Command::new("mount").arg(&loopdev).arg(&mnt));
    for i in 0..4 {
        assert!(std::fs::read(mnt.join(format!("f{i}"))).unwrap() == data);
    }
    ok(Command::new("umount").arg(&mnt));
    drop(loops);
    let _ = Command::new("fusermount3").arg("-u").arg(&fuse).status();
    let _ = nbdfuse.wait();
    s.stop();
    for d in &devs {
        let area = dir.path().join("area.img");
        std::fs::write(&area, data_area(d, bytes)).unwrap();
        ok(Command::new("e2fsck").args(["-f", "-n"]).arg(&area));
        assert_eq!(examine(d)["State"], "clean");
    }
}
