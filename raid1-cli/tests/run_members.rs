//! Members under hostile changes while the array runs (real image files and loop devices): a
//! member's path deleted or replaced, a loop device detached, non-UTF-8 paths, devices `add`
//! must refuse; names, the degraded start rules, `detail --test` and the `/proc/mdstat` format.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[path = "run_common.rs"]
mod common;

use common::{RAID1, Server, fixtures, ok, sparse_images, text, tool, unpack};

const MIB: u64 = 1 << 20;

/// `raid1 create` of a RAID1 over `devs` (clean, with or without an internal bitmap).
fn create(name: &str, devs: &[PathBuf], bitmap: bool) {
    ok(Command::new(RAID1)
        .args(["create", "-l1", "--assume-clean", "-N", name])
        .arg(format!("-n{}", devs.len()))
        .args(["-b", if bitmap { "internal" } else { "none" }])
        .args(devs));
}

fn qemu_io(s: &Server, cmd: &str) -> String {
    ok(Command::new("qemu-io").args(["-f", "raw", &s.uri(), "-c", cmd]))
}

/// Reads `len` bytes at `at` through NBD and checks every byte is `pattern` (several times, so
/// that reads reach every in-sync mirror).
fn reads_back(s: &Server, pattern: u8, at: u64, len: u64) {
    for _ in 0..4 {
        let out = qemu_io(s, &format!("read -P {pattern} {at} {len}"));
        assert!(
            !out.contains("verification failed") && out.contains("read"),
            "{out}"
        );
    }
}

fn fails(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit 2: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stderr)
}

/// Nothing missing, nothing failed, nothing running (`clean` or `active` while writes settle).
fn healthy(d: &serde_json::Value) {
    let state = d["state"].as_str().unwrap();
    assert!(state == "clean" || state == "active", "{d}");
    assert_eq!(d["degraded"], false, "{d}");
}

fn member_paths(d: &serde_json::Value) -> Vec<(u64, String, String)> {
    d["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["number"].as_u64().unwrap(),
                m["device"].as_str().unwrap().to_string(),
                m["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[test]
fn a_recreated_path_is_not_used_when_another_device_is_added() {
    let dir = tempfile::tempdir().unwrap();
    let devs = sparse_images(dir.path(), "rc", 3, 16 * MIB);
    create("rc", &devs[..2], true);
    let s = Server::start(dir.path(), "rc", &[], &devs[..2]);
    qemu_io(&s, "write -P 0x5a 0 4194304");
    // The second member's path now names a blank file of the same size.
    std::fs::remove_file(&devs[1]).unwrap();
    std::fs::File::create(&devs[1])
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    s.ctl_ok(&["add", "rc", devs[2].to_str().unwrap()]);
    let d = s.detail();
    healthy(&d);
    let members = member_paths(&d);
    assert!(
        members.contains(&(1, devs[1].display().to_string(), "active sync".into())),
        "{members:?}"
    );
    assert!(
        members.contains(&(2, devs[2].display().to_string(), "spare".into())),
        "{members:?}"
    );
    reads_back(&s, 0x5a, 0, 4 * MIB);
    qemu_io(&s, "write -P 0x6b 4194304 1048576");
    reads_back(&s, 0x6b, 4 * MIB, MIB);
    s.ctl_ok(&["stop", "rc"]);
    // The recreated file was never opened for the array: still all zeroes.
    let blank = std::fs::read(&devs[1]).unwrap();
    assert!(blank.iter().all(|b| *b == 0), "the blank file was written");
    // The first member holds every write.
    let s = Server::start(dir.path(), "rc2", &["--degraded-ok"], &devs[..1]);
    reads_back(&s, 0x5a, 0, 4 * MIB);
    reads_back(&s, 0x6b, 4 * MIB, MIB);
    s.stop();
}

#[test]
fn members_whose_path_is_gone_are_failed_and_removed_by_former_path_and_by_number() {
    let dir = tempfile::tempdir().unwrap();
    let devs = sparse_images(dir.path(), "gone", 3, 16 * MIB);
    create("gone", &devs, false);
    let s = Server::start(dir.path(), "gone", &[], &devs);
    qemu_io(&s, "write -P 0x3c 0 2097152");
    std::fs::remove_file(&devs[1]).unwrap();
    std::fs::remove_file(&devs[2]).unwrap();
    // By the path the member was opened from (relative, as a user types it).
    let rel = Command::new(RAID1)
        .current_dir(dir.path())
        .env("RAID1_RUN_DIR", &s.run_dir)
        .args(["fail", "gone", "gone1.img"])
        .output()
        .unwrap();
    assert!(rel.status.success(), "{}", text(&rel.stderr));
    assert!(text(&rel.stderr).contains("gone1.img (member 1)"));
    let err = fails(&s.ctl(&["remove", "gone", "2"]));
    assert!(
        err.contains("member 2)") && err.contains("in-sync member: fail it first"),
        "{err}"
    );
    s.ctl_ok(&["remove", "gone", devs[1].to_str().unwrap()]);
    // By member number.
    s.ctl_ok(&["fail", "gone", "2"]);
    s.ctl_ok(&["remove", "gone", "2"]);
    let err = fails(&s.ctl(&["remove", "gone", "7"]));
    assert!(err.contains("member 7: no such member"), "{err}");
    let err = fails(&s.ctl(&["fail", "gone", "/nowhere/else.img"]));
    assert!(
        err.contains("/nowhere/else.img is not a member of this array"),
        "{err}"
    );
    let d = s.detail();
    assert_eq!(member_paths(&d).len(), 1, "{d}");
    let state = d["state"].as_str().unwrap();
    assert!(
        state.ends_with(", degraded") && !state.contains("FAILED"),
        "{d}"
    );
    reads_back(&s, 0x3c, 0, 2 * MIB);
    qemu_io(&s, "write -P 0x3d 2097152 1048576");
    s.ctl_ok(&["stop", "gone"]);
    let s = Server::start(dir.path(), "gone2", &[], &devs[..1]);
    reads_back(&s, 0x3c, 0, 2 * MIB);
    reads_back(&s, 0x3d, 2 * MIB, MIB);
    s.stop();
}

/// Loop devices detached on drop.
struct Loops(Vec<String>);

impl Drop for Loops {
    fn drop(&mut self) {
        for l in &self.0 {
            let _ = Command::new("losetup").arg("-d").arg(l).output();
        }
    }
}

fn losetup(image: &Path) -> String {
    ok(Command::new("losetup").args(["-f", "--show"]).arg(image))
        .trim()
        .to_string()
}

/// Whether loop device `dev` still has a backing file.
fn loop_attached(dev: &str) -> bool {
    let name = Path::new(dev).file_name().unwrap().to_str().unwrap();
    Path::new(&format!("/sys/block/{name}/loop/backing_file")).exists()
}

#[test]
fn a_detached_loop_device_is_failed_and_removed_as_detached() {
    assert!(
        Path::new("/dev/loop-control").exists(),
        "loop devices are needed (modprobe loop)"
    );
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "lp", 2, 16 * MIB);
    create("lp", &imgs, true);
    let mut loops = Loops(Vec::new());
    for i in &imgs {
        loops.0.push(losetup(i));
    }
    // The second member through a device node of its own (as udev's /dev/loopN), which goes
    // away with the device.
    let meta = std::fs::metadata(&loops.0[1]).unwrap();
    let node = dir.path().join("member-b");
    let rdev = std::os::unix::fs::MetadataExt::rdev(&meta);
    let c = std::ffi::CString::new(node.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path and a device number from stat.
    assert_eq!(
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, rdev) },
        0,
        "mknod"
    );
    let devs = vec![PathBuf::from(&loops.0[0]), node.clone()];
    let s = Server::start(dir.path(), "lp", &[], &devs);
    qemu_io(&s, "write -P 0x71 0 3145728");
    // Nothing is detached yet: the keywords find nothing to do.
    s.ctl_ok(&["remove", "lp", "detached"]);
    s.ctl_ok(&["remove", "lp", "failed"]);
    assert_eq!(member_paths(&s.detail()).len(), 2);
    // Detach: the kernel clears the loop device once its last user closes it.
    ok(Command::new("losetup").arg("-d").arg(&loops.0[1]));
    std::fs::remove_file(&node).unwrap();
    assert!(loop_attached(&loops.0[1]), "held by the array");
    let err = fails(&s.ctl(&["remove", "lp", "detached"]));
    assert!(
        err.contains("member-b (member 1) is an in-sync member: fail it first"),
        "{err}"
    );
    let out = s.ctl(&["fail", "lp", "detached"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("set ")
            && text(&out.stderr).contains("member-b (member 1) faulty"),
        "{}",
        text(&out.stderr)
    );
    reads_back(&s, 0x71, 0, 3 * MIB);
    let out = s.ctl(&["remove", "lp", "detached"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("removed"),
        "{}",
        text(&out.stderr)
    );
    // Its handle was the last: the loop device is cleared now.
    assert!(
        wait_until(Duration::from_secs(5), || !loop_attached(&loops.0[1])),
        "the removed member's device is still open"
    );
    let d = s.detail();
    assert_eq!(
        member_paths(&d),
        vec![(0, loops.0[0].clone(), "active sync".to_string())]
    );
    qemu_io(&s, "write -P 0x72 3145728 1048576");
    reads_back(&s, 0x71, 0, 3 * MIB);
    reads_back(&s, 0x72, 3 * MIB, MIB);
    s.ctl_ok(&["stop", "lp"]);
    let s = Server::start(dir.path(), "lp2", &[], &devs[..1]);
    reads_back(&s, 0x71, 0, 3 * MIB);
    reads_back(&s, 0x72, 3 * MIB, MIB);
    s.stop();
}

#[test]
fn non_utf8_member_paths_work_with_every_member_verb() {
    use std::ffi::OsStr;
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &[u8]| dir.path().join(OsStr::from_bytes(name));
    let devs = vec![p(b"m\xff0.img"), p(b"m\xff1.img")];
    let spare = p(b"sp\xfe.img");
    for d in devs.iter().chain([&spare]) {
        std::fs::File::create(d).unwrap().set_len(16 * MIB).unwrap();
    }
    create("nu", &devs, true);
    let s = Server::start(dir.path(), "nu", &[], &devs);
    qemu_io(&s, "write -P 0x44 0 1048576");
    let run = |args: &[&OsStr]| {
        let out = Command::new(RAID1)
            .env("RAID1_RUN_DIR", &s.run_dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    };
    let n = OsStr::new("nu");
    run(&[OsStr::new("fail"), n, devs[1].as_os_str()]);
    run(&[OsStr::new("remove"), n, devs[1].as_os_str()]);
    qemu_io(&s, "write -P 0x45 1048576 1048576");
    run(&[OsStr::new("re-add"), n, devs[1].as_os_str()]);
    run(&[OsStr::new("wait"), n]);
    run(&[OsStr::new("add"), n, spare.as_os_str()]);
    let d = s.detail();
    healthy(&d);
    let names: Vec<String> = member_paths(&d).into_iter().map(|m| m.1).collect();
    assert!(
        names.iter().any(|n| n.ends_with("m\u{fffd}1.img")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with("sp\u{fffd}.img")),
        "{names:?}"
    );
    s.ctl_ok(&["stop", "nu"]);
    // Each member alone holds both writes.
    for (i, d) in devs.iter().enumerate() {
        let s = Server::start(
            dir.path(),
            &format!("nu{i}"),
            &["--degraded-ok"],
            std::slice::from_ref(d),
        );
        reads_back(&s, 0x44, 0, MIB);
        reads_back(&s, 0x45, MIB, MIB);
        s.stop();
    }
}

#[test]
fn array_names_follow_mdadms_rules() {
    let dir = tempfile::tempdir().unwrap();
    let devs = sparse_images(dir.path(), "nm", 2, 16 * MIB);
    create("nm", &devs, false);
    let before: Vec<Vec<u8>> = devs.iter().map(|d| std::fs::read(d).unwrap()).collect();
    let long = "x".repeat(33);
    for (name, rule) in [
        ("", "it is empty"),
        ("a/b", "it contains '/'"),
        ("a\nb", "control character \\n"),
        (".", "starts with '.'"),
        ("..", "starts with '.'"),
        ("-x", "starts with '-'"),
        ("a b", "it contains ' '"),
        (long.as_str(), "33 bytes long, more than the 32"),
    ] {
        let out = tool(
            Command::new(RAID1)
                .env("RAID1_RUN_DIR", dir.path().join("rd"))
                .arg("run")
                .arg(format!("--name={name}"))
                .args(&devs),
        );
        let err = fails(&out);
        assert!(
            err.contains("--name: array name") && err.contains(rule),
            "{name:?}: {err}"
        );
        assert!(
            !err.contains("\"a\nb\""),
            "a raw newline in the message: {err}"
        );
    }
    for (d, b) in devs.iter().zip(&before) {
        assert!(std::fs::read(d).unwrap() == *b, "a refused start wrote");
    }
    // The longest name md stores is fine.
    let s = Server::start(dir.path(), &"n".repeat(32), &[], &devs);
    s.stop();
    // A verb cannot name a socket outside the run directory.
    let out = tool(
        Command::new(RAID1)
            .env("RAID1_RUN_DIR", dir.path().join("rd"))
            .args(["detail", "../x"]),
    );
    assert!(fails(&out).contains("not a name an array can have"));
}

#[test]
fn an_unsafe_name_on_disk_falls_back_to_the_uuid() {
    use raid1_superblock::Superblock;
    let dir = tempfile::tempdir().unwrap();
    let devs = sparse_images(dir.path(), "od", 2, 16 * MIB);
    create("od", &devs, false);
    // Both superblocks (1.2, at 4 KiB) get the name "../evil" (checksum recomputed).
    for d in &devs {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(d)
            .unwrap();
        let mut page = vec![0u8; 4096];
        f.read_exact_at(&mut page, 4096).unwrap();
        let mut sb: Superblock = Superblock::parse(&page).unwrap();
        sb.set_name = raid1_superblock::SetName::build(None, b"../evil");
        sb.serialize(&mut page).unwrap();
        f.write_all_at(&page, 4096).unwrap();
    }
    let socket = dir.path().join("od.nbd.sock");
    let child = Command::new(RAID1)
        .env("RAID1_RUN_DIR", dir.path().join("rd"))
        .args(["run", "--nbd"])
        .arg(format!("unix:{}", socket.display()))
        .args(&devs)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let uuid = ok(Command::new("mdadm").arg("--examine").arg(&devs[0]))
        .lines()
        .find_map(|l| l.trim().strip_prefix("Array UUID : ").map(str::to_string))
        .unwrap();
    let sock = dir.path().join("rd").join(format!("{uuid}.sock"));
    assert!(
        wait_until(Duration::from_secs(20), || sock.exists()),
        "no control socket named by the UUID"
    );
    assert!(!dir.path().join("evil.sock").exists());
    let out = tool(
        Command::new(RAID1)
            .env("RAID1_RUN_DIR", dir.path().join("rd"))
            .args(["stop", &uuid]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("the name in the superblock, \"../evil\", is not used (it contains '/')"),
        "{err}"
    );
}

/// Fails and removes member 1 of a running two-member array, so that member 0's superblock
/// records it as missing (`Array State : A.`), then stops.
#[test]
fn an_array_degraded_at_its_last_update_starts_without_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let devs = sparse_images(dir.path(), "dg", 2, 16 * MIB);
    create("dg", &devs, true);
    // Never degraded: one member alone is fewer than were working, refused without the flag.
    let before = std::fs::read(&devs[0]).unwrap();
    let out = tool(
        Command::new(RAID1)
            .env("RAID1_RUN_DIR", dir.path().join("rd"))
            .args(["run", "--name", "dg"])
            .arg(&devs[0]),
    );
    let err = fails(&out);
    assert!(
        err.contains("would start with 1 of 2 mirrors, fewer than the 2 that were working")
            && err.contains("slot(s) 1 missing")
            && err.contains("--degraded-ok"),
        "{err}"
    );
    assert!(
        std::fs::read(&devs[0]).unwrap() == before,
        "refused, yet written"
    );
    let s = Server::start(dir.path(), "dg", &[], &devs);
    qemu_io(&s, "write -P 0x19 0 2097152");
    s.ctl_ok(&["fail", "dg", devs[1].to_str().unwrap()]);
    s.ctl_ok(&["remove", "dg", devs[1].to_str().unwrap()]);
    qemu_io(&s, "write -P 0x1a 2097152 1048576");
    s.stop();
    let ex = ok(Command::new("mdadm").arg("--examine").arg(&devs[0]));
    assert!(ex.contains("Array State : A."), "{ex}");
    // Degraded when last updated: starts as it was, without --degraded-ok.
    let mut s = Server::start(dir.path(), "dg2", &[], &devs[..1]);
    reads_back(&s, 0x19, 0, 2 * MIB);
    reads_back(&s, 0x1a, 2 * MIB, MIB);
    let child = s.child.take().unwrap();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("started with 1 drive(s) (out of 2): slot(s) 1 missing"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn add_refuses_foreign_superblocks_file_systems_and_former_active_members() {
    let dir = tempfile::tempdir().unwrap();
    let devs = sparse_images(dir.path(), "ad", 3, 16 * MIB);
    let other = sparse_images(dir.path(), "other", 2, 16 * MIB);
    create("ad", &devs[..2], true);
    create("other", &other, false);
    let ext4 = dir.path().join("ext4.img");
    std::fs::File::create(&ext4)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&ext4));
    let xfs = dir.path().join("xfs.img");
    std::fs::File::create(&xfs)
        .unwrap()
        .set_len(320 * MIB)
        .unwrap();
    ok(Command::new("mkfs.xfs").args(["-q", "-f"]).arg(&xfs));
    let s = Server::start(dir.path(), "ad", &[], &devs[..2]);
    qemu_io(&s, "write -P 0x2e 0 1048576");
    for (dev, what) in [
        (&other[0], "holds the md superblock of another array"),
        (&ext4, "holds an ext4 file system"),
        (&xfs, "holds an XFS file system"),
    ] {
        let before = std::fs::read(dev).unwrap();
        let err = fails(&s.ctl(&["add", "ad", dev.to_str().unwrap()]));
        assert!(
            err.contains(&dev.display().to_string())
                && err.contains(what)
                && err.contains("--force"),
            "{err}"
        );
        assert!(
            std::fs::read(dev).unwrap() == before,
            "refused, yet written"
        );
    }
    assert_eq!(member_paths(&s.detail()).len(), 2);
    // With --force the foreign member becomes a spare.
    s.ctl_ok(&["add", "ad", other[0].to_str().unwrap(), "--force"]);
    let ex = ok(Command::new("mdadm").arg("--examine").arg(&other[0]));
    assert!(ex.contains("Device Role : spare"), "{ex}");
    s.ctl_ok(&["remove", "ad", other[0].to_str().unwrap()]);
    // A former active member whose position was taken would become a spare: refused.
    s.ctl_ok(&["fail", "ad", devs[1].to_str().unwrap()]);
    s.ctl_ok(&["remove", "ad", devs[1].to_str().unwrap()]);
    assert_eq!(s.ctl(&["detail", "ad", "--test"]).status.code(), Some(1));
    s.ctl_ok(&["add", "ad", devs[2].to_str().unwrap()]);
    s.ctl_ok(&["wait", "ad"]);
    let before = std::fs::read(&devs[1]).unwrap();
    let err = fails(&s.ctl(&["add", "ad", devs[1].to_str().unwrap()]));
    assert!(
        err.contains("reports being an active member (slot 1, member 1)")
            && err.contains("would turn it into a spare"),
        "{err}"
    );
    assert!(std::fs::read(&devs[1]).unwrap() == before);
    // Recovered: detail's state is the present one, and --test says so.
    healthy(&s.detail());
    let out = s.ctl(&["detail", "ad", "--test"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    reads_back(&s, 0x2e, 0, MIB);
    s.stop();
    // Not running: --test says the information could not be had.
    let out = tool(
        Command::new(RAID1)
            .env("RAID1_RUN_DIR", dir.path().join("rd"))
            .args(["detail", "ad", "--test", "--timeout", "2"]),
    );
    assert_eq!(out.status.code(), Some(4));
    let out = tool(
        Command::new(RAID1)
            .env("RAID1_RUN_DIR", dir.path().join("rd"))
            .args(["detail", "ad", "--timeout", "2"]),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn run_on_something_that_is_no_member_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.img");
    std::fs::File::create(&empty).unwrap();
    let tiny = dir.path().join("tiny.img");
    std::fs::File::create(&tiny).unwrap().set_len(4096).unwrap();
    for (dev, what) in [
        (
            Path::new("/dev/null"),
            "/dev/null: not a block device or a regular file",
        ),
        (empty.as_path(), "empty.img: size 0"),
        (
            tiny.as_path(),
            "tiny.img: 4096 bytes is too small for md metadata",
        ),
        (dir.path(), "not a block device or a regular file"),
    ] {
        let out = tool(
            Command::new(RAID1)
                .env("RAID1_RUN_DIR", dir.path().join("rd"))
                .args(["run", "--name", "x"])
                .arg(dev),
        );
        let err = fails(&out);
        assert!(err.contains(what), "{}: {err}", dev.display());
    }
}

/// The `status` block of one array: the lines from its name up to the next array or the
/// `unused devices` line.
fn status_block(s: &Server) -> String {
    let out = s.ctl_ok(&["status"]);
    let start = out.find(&format!("{} : ", s.name)).unwrap();
    let end = out.find("unused devices: ").unwrap();
    assert!(out.starts_with("Personalities : [raid1] \n"), "{out:?}");
    assert!(out.ends_with("unused devices: <none>\n"), "{out:?}");
    out[start..end].to_string()
}

#[test]
fn status_prints_what_proc_mdstat_prints() {
    let dir = tempfile::tempdir().unwrap();
    let devs = sparse_images(dir.path(), "st", 3, 64 * MIB);
    create("st", &devs[..2], true);
    let s = Server::start(dir.path(), "st", &["--sync-speed-max", "2000"], &devs[..2]);
    let kib = s.detail()["array_size_kib"].as_u64().unwrap();
    // The chunk as examine-bitmap shows it ("64 MB"), in KiB.
    let chunk_kib: u64 = {
        let ex = ok(Command::new(RAID1).arg("examine-bitmap").arg(&devs[0]));
        let v = ex
            .lines()
            .find_map(|l| l.trim().strip_prefix("Chunksize : "))
            .unwrap()
            .to_string();
        let (n, unit) = v.split_once(' ').unwrap();
        let n: u64 = n.parse().unwrap();
        match unit {
            "KB" => n,
            "MB" => n << 10,
            "GB" => n << 20,
            other => panic!("chunk unit {other}"),
        }
    };
    let pages = (kib.div_ceil(chunk_kib)).div_ceil(2048);
    // md_bitmap_status: "bitmap: USED/PAGES pages [USED*4KB], CHUNKKB chunk".
    let bitmap_line = |line: &str| {
        let rest = line
            .strip_prefix("      bitmap: ")
            .unwrap_or_else(|| panic!("{line:?}"));
        let (used, rest) = rest.split_once('/').unwrap();
        let used: u64 = used.parse().unwrap();
        assert!(used <= pages, "{line:?}");
        assert_eq!(
            rest,
            format!("{pages} pages [{}KB], {chunk_kib}KB chunk", used * 4),
            "{line:?}"
        );
    };
    // Clean: md_seq_show's lines, the bitmap line, the empty line.
    let clean = status_block(&s);
    let lines: Vec<&str> = clean.split('\n').collect();
    assert_eq!(lines[0], "st : active raid1 st1.img[1] st0.img[0]");
    assert_eq!(lines[1], format!("      {kib} blocks super 1.2 [2/2] [UU]"));
    bitmap_line(lines[2]);
    assert_eq!(&lines[3..], &["", ""], "{clean:?}");
    // Degraded.
    qemu_io(&s, "write -P 0x11 0 1048576");
    s.ctl_ok(&["fail", "st", devs[1].to_str().unwrap()]);
    s.ctl_ok(&["remove", "st", devs[1].to_str().unwrap()]);
    let degraded = status_block(&s);
    let lines: Vec<&str> = degraded.split('\n').collect();
    assert_eq!(lines[0], "st : active raid1 st0.img[0]");
    assert_eq!(lines[1], format!("      {kib} blocks super 1.2 [2/1] [U_]"));
    bitmap_line(lines[2]);
    assert_eq!(&lines[3..], &["", ""], "{degraded:?}");
    // Recovering (throttled to 2000 KiB/s: 64 MiB take half a minute).
    s.ctl_ok(&["add", "st", devs[2].to_str().unwrap()]);
    let mut seen = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            seen = status_block(&s);
            seen.contains("recovery =")
        }),
        "{seen:?}"
    );
    let lines: Vec<&str> = seen.split('\n').collect();
    assert_eq!(lines[0], "st : active raid1 st2.img[1] st0.img[0]");
    assert_eq!(lines[1], format!("      {kib} blocks super 1.2 [2/1] [U_]"));
    // "      [==>..................]  recovery = 12.9% (x/y) finish=1.2min speed=2000K/sec"
    let p = lines[2];
    assert!(p.starts_with("      ["), "{p:?}");
    let bar = &p[6..p.find(']').unwrap() + 1];
    assert_eq!(bar.len(), 23, "{p:?}");
    assert_eq!(bar.matches('>').count(), 1, "{p:?}");
    let rest = &p[6 + 23..];
    assert!(rest.starts_with("  recovery = "), "{p:?}");
    let pct = &rest["  recovery = ".len() - 1..];
    // md prints the per-mille's integer part in three places: "  4.2%", " 12.9%".
    let (num, tail) = pct.split_once('%').unwrap();
    assert_eq!(num.len(), 5, "{p:?}");
    let (int, frac) = num.trim_start().split_once('.').unwrap();
    let per_milli: u64 = int.parse::<u64>().unwrap() * 10 + frac.parse::<u64>().unwrap();
    assert_eq!(bar.matches('=').count() as u64, per_milli / 50, "{p:?}");
    let (pos, end) = tail
        .trim_start()
        .strip_prefix('(')
        .and_then(|t| t.split_once(')'))
        .map(|(f, _)| f.split_once('/').unwrap())
        .unwrap();
    assert_eq!(end.parse::<u64>().unwrap(), kib, "{p:?}");
    assert!(pos.parse::<u64>().unwrap() <= kib);
    let after = tail.split_once(") ").unwrap().1;
    let (finish, speed) = after.split_once(' ').unwrap();
    let mins = finish
        .strip_prefix("finish=")
        .and_then(|f| f.strip_suffix("min"))
        .unwrap();
    let (m, t) = mins.split_once('.').unwrap();
    assert!(m.parse::<u64>().is_ok() && t.len() == 1, "{p:?}");
    assert!(
        speed
            .strip_prefix("speed=")
            .and_then(|v| v.strip_suffix("K/sec"))
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "{p:?}"
    );
    bitmap_line(lines[3]);
    assert_eq!(&lines[4..], &["", ""], "{seen:?}");
    s.stop();
}

/// `raid1 status` against the `/proc/mdstat` text the kernel printed for the same members (each
/// kernel-made fixture keeps the guest's `cat /proc/mdstat` from when it was made, by the
/// linux-md oracle: fixtures/make-fixtures.sh). Device names are the only thing told apart
/// (`vda` in the guest, `vda.img` here), and the bitmap's in-memory page count (how many counter
/// pages the kernel had allocated then, which depends on the writes it had just served).
#[test]
fn status_matches_the_kernels_proc_mdstat_for_the_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    for case in [
        "bitmap", "degraded", "spare", "three", "v1.0", "v1.1", "named",
    ] {
        let kernel = std::fs::read_to_string(fixtures().join(case).join("mdstat.txt")).unwrap();
        let sub = dir.path().join(case);
        std::fs::create_dir_all(&sub).unwrap();
        let devs = unpack(case, &sub, "");
        let s = Server::start(&sub, "md0", &[], &devs);
        let ours = s.ctl_ok(&["status"]).replace(".img[", "[");
        s.stop();
        let used = |t: &str| -> String {
            t.lines()
                .map(|l| match l.strip_prefix("      bitmap: ") {
                    Some(rest) => format!(
                        "      bitmap: N{}",
                        &rest[rest.find('/').unwrap()..rest.find('[').unwrap()]
                    ),
                    None => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            used(&ours),
            used(&kernel),
            "{case}: raid1 status\n{ours}\nthe kernel's /proc/mdstat\n{kernel}"
        );
        // The bitmap line's other fields, byte for byte.
        if let Some(k) = kernel.lines().find(|l| l.contains("bitmap: ")) {
            let o = ours.lines().find(|l| l.contains("bitmap: ")).unwrap();
            assert_eq!(
                o[o.find(" pages").unwrap()..o.find('[').unwrap()],
                k[k.find(" pages").unwrap()..k.find('[').unwrap()]
            );
            assert_eq!(
                o[o.find("],").unwrap()..],
                k[k.find("],").unwrap()..],
                "{case}"
            );
        }
    }
    // A recovery in progress: the progress line has the kernel's layout (its figures are the
    // moment's).
    let kernel = std::fs::read_to_string(fixtures().join("recovery").join("mdstat.txt")).unwrap();
    let k = kernel.lines().find(|l| l.contains("recovery =")).unwrap();
    let shape = |l: &str| -> String {
        l.chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect::<String>()
    };
    let sub = dir.path().join("recovery");
    std::fs::create_dir_all(&sub).unwrap();
    let devs = unpack("recovery", &sub, "");
    let s = Server::start(&sub, "md0", &["--sync-speed-max", "100"], &devs);
    let ours = s.ctl_ok(&["status"]);
    s.stop();
    let o = ours
        .lines()
        .find(|l| l.contains("recovery ="))
        .unwrap_or_else(|| panic!("no recovery line:\n{ours}"));
    let (ko, oo) = (shape(k), shape(o));
    // The bar and the figures' widths differ with the moment; the fields and their order do not.
    let fields = |l: &str| -> Vec<String> {
        l.split_whitespace()
            .skip(1)
            .map(|w| w.chars().filter(|c| !c.is_ascii_digit()).collect())
            .collect()
    };
    assert_eq!(fields(&oo), fields(&ko), "raid1: {o:?}\nkernel: {k:?}");
    // md's bar: `[`, x `=`, `>`, 20 - x `.`, `]` (status_resync), then two spaces.
    for l in [k, o] {
        assert!(
            l.starts_with("      [") && l[6..].find("]  recovery = ") == Some(22),
            "{l:?}"
        );
    }
    assert_eq!(
        ours.lines().next(),
        kernel.lines().next(),
        "the Personalities line"
    );
}
