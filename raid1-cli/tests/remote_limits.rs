//! Members whose block sizes differ from the array's requests. A remote member whose server
//! takes smaller commands than the array sends (nbdkit's blocksize-policy filter advertises a
//! 64 KiB maximum block and answers longer commands with an error, as a server configured that
//! way does): the array's requests (up to 1 MiB) reach it in pieces it accepts, both ways, and
//! the member is never failed for it. A member that takes nothing below 4096 bytes (a 4Kn loop
//! device, a server with a 4096-byte minimum block): refused in words by `create`, `run` and
//! `add`, before anything is written, rather than failing sector by sector at run time.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "run_common.rs"]
mod common;

use common::{
    RAID1, Server, data_areas_equal, ok, raid1_in, sha256_file, sparse_images, text, tool,
};

const MIB: u64 = 1 << 20;

/// nbdkit serving `image` on a unix socket, at most `max` bytes per command.
struct Kit {
    child: Child,
    sock: PathBuf,
}

impl Kit {
    fn start(image: &PathBuf, max: u32) -> Kit {
        Kit::limited(image, &format!("blocksize-maximum={max}"))
    }

    /// nbdkit serving `image` with the blocksize-policy `limit` (`blocksize-NAME=VALUE`).
    fn limited(image: &PathBuf, limit: &str) -> Kit {
        let sock = image.with_extension("sock");
        let child = Command::new("nbdkit")
            .args(["-f", "--exit-with-parent", "-U"])
            .arg(&sock)
            .arg("--filter=blocksize-policy")
            .arg("file")
            .arg(image)
            .arg(limit)
            .arg("blocksize-error-policy=error")
            .stdout(Stdio::null())
            .spawn()
            .expect("nbdkit (Debian package nbdkit)");
        let t0 = Instant::now();
        while !sock.exists() {
            assert!(t0.elapsed() < Duration::from_secs(10), "nbdkit socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Kit { child, sock }
    }

    fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.sock.display())
    }
}

impl Drop for Kit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn qemu_io(uri: &str, command: &str) -> String {
    ok(Command::new("qemu-io").args(["-f", "raw", uri, "-c", command]))
}

#[test]
fn commands_longer_than_the_servers_maximum_block_go_in_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "m", 2, 16 * MIB);
    let kit = Kit::start(&imgs[1], 64 << 10);
    let devs = [imgs[0].clone(), PathBuf::from(kit.uri())];
    ok(Command::new(RAID1)
        .args(["create", "-l1", "-n2", "--assume-clean", "-N", "lim"])
        .args(&devs));
    let server = Server::start(dir.path(), "lim", &[], &devs);
    // 1 MiB writes (the export's maximum), unaligned to the server's 64 KiB too.
    let w = qemu_io(&server.uri(), "write -P 0x5a 1M 1M");
    assert!(!w.contains("failed"), "{w}");
    let w = qemu_io(&server.uri(), "write -P 0xa5 2M 3M");
    assert!(!w.contains("failed"), "{w}");
    let w = qemu_io(&server.uri(), "write -P 0x3c 6292992 1000k");
    assert!(!w.contains("failed"), "{w}");
    let in_sync = |what: &str| {
        let d = server.detail();
        let members = d["members"].as_array().unwrap();
        let n = members
            .iter()
            .filter(|m| m["state"].as_str().is_some_and(|s| s.contains("sync")))
            .count();
        assert_eq!(n, 2, "{what}: a member was failed: {d}");
    };
    in_sync("after the writes");
    // Reads from the remote member alone: the local one failed and removed.
    let local = imgs[0].to_str().unwrap();
    server.ctl_ok(&["fail", "lim", local]);
    server.ctl_ok(&["remove", "lim", local]);
    for (pattern, at, len) in [("0x5a", "1M", "1M"), ("0xa5", "2M", "3M")] {
        let r = qemu_io(&server.uri(), &format!("read -P {pattern} {at} {len}"));
        assert!(
            !r.contains("failed") && !r.contains("Pattern verification"),
            "read {len} at {at} from the remote member alone: {r}"
        );
    }
    let r = qemu_io(&server.uri(), "read -P 0x3c 6292992 1000k");
    assert!(
        !r.contains("failed") && !r.contains("Pattern verification"),
        "{r}"
    );
    let d = server.detail();
    assert!(
        d.to_string().contains("sync"),
        "the remote member must serve: {d}"
    );
    // Back to two members: the recovery reads the remote member in pieces as well.
    server.ctl_ok(&["add", "lim", local]);
    server.ctl_ok(&["wait", "lim"]);
    in_sync("after the recovery");
    server.stop();
    assert!(data_areas_equal(&imgs[0], &imgs[1], 14 * MIB));
}

/// A loop device over `image` with 4096-byte logical blocks; detached on drop.
struct Loop4k(String);

impl Loop4k {
    fn attach(image: &PathBuf) -> Loop4k {
        let dev = ok(Command::new("losetup")
            .args(["--find", "--show", "--sector-size", "4096"])
            .arg(image));
        Loop4k(dev.trim().to_string())
    }
}

impl Drop for Loop4k {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).output();
    }
}

/// Exit status 2, and a message that names `device` and says why.
fn refused(out: &std::process::Output, device: &str, what: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(
        err.contains(device) && err.contains("no request smaller than 4096 bytes"),
        "{what}: the message must name {device} and its sector size: {err}"
    );
}

#[test]
fn members_that_take_nothing_below_4096_bytes_are_refused_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "s", 3, 16 * MIB);
    let run = dir.path().join("rd");
    // create: a 4Kn loop device, and a server whose minimum block is 4096.
    let lo = Loop4k::attach(&imgs[1]);
    let kit = Kit::limited(&imgs[2], "blocksize-minimum=4096");
    let before: Vec<String> = imgs.iter().map(|i| sha256_file(i)).collect();
    for dev in [lo.0.clone(), kit.uri()] {
        let out = tool(
            Command::new(RAID1)
                .args(["create", "-l1", "-n2", "--assume-clean", "-N", "b"])
                .arg(&imgs[0])
                .arg(&dev),
        );
        refused(&out, &dev, "create");
        assert!(text(&out.stderr).contains("nothing was written"));
    }
    drop(kit);
    let after: Vec<String> = imgs.iter().map(|i| sha256_file(i)).collect();
    assert_eq!(before, after, "a refused create wrote a member");
    // run: an array made over image files whose second member now shows 4096-byte sectors.
    drop(lo);
    ok(Command::new(RAID1)
        .args(["create", "-l1", "-n2", "--assume-clean", "-N", "b"])
        .args(&imgs[..2]));
    let lo = Loop4k::attach(&imgs[1]);
    let out = tool(
        raid1_in(&run)
            .args(["run", "--name", "b", "--nbd"])
            .arg(format!("unix:{}", dir.path().join("b.sock").display()))
            .arg(&imgs[0])
            .arg(&lo.0),
    );
    refused(&out, &lo.0, "run");
    drop(lo);
    let kit = Kit::limited(&imgs[1], "blocksize-minimum=4096");
    let out = tool(
        raid1_in(&run)
            .args(["run", "--name", "b", "--nbd"])
            .arg(format!("unix:{}", dir.path().join("b.sock").display()))
            .arg(&imgs[0])
            .arg(kit.uri()),
    );
    refused(&out, &kit.uri(), "run");
    drop(kit);
    // add: to the array running on its image files, after the second member was removed.
    let server = Server::start(dir.path(), "b", &[], &imgs[..2]);
    let second = imgs[1].to_str().unwrap();
    server.ctl_ok(&["fail", "b", second]);
    server.ctl_ok(&["remove", "b", second]);
    let lo = Loop4k::attach(&imgs[2]);
    let out = server.ctl(&["add", "b", &lo.0]);
    refused(&out, &lo.0, "add");
    let d = server.detail();
    assert_eq!(d["working_devices"], 1, "{d}");
    server.stop();
}
