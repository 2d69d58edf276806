//! Members whose block sizes differ from the array's requests. A remote member whose server
//! takes smaller commands than the array sends (nbdkit's blocksize-policy filter advertises a
//! 64 KiB maximum block and answers longer commands with an error, as a server configured that
//! way does): the array's requests (up to 1 MiB) reach it in pieces it accepts, both ways, and
//! the member is never failed for it. A member that takes nothing below 4096 bytes (a 4Kn loop
//! device, a server with a 4096-byte minimum block): refused in words by `run` and `add` (and
//! by `create` for the server, which cannot be read in sectors; a 4Kn device makes an array
//! that Linux md runs, and `create` says so), rather than failing sector by sector at run time.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "run_common.rs"]
mod common;

use common::{
    RAID1, Server, create_mirror, data_areas_equal, hashes, ok, raid1_in, sparse_images, text, tool,
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
        Kit::serve(
            image,
            &["--filter=blocksize-policy"],
            &[limit, "blocksize-error-policy=error"],
        )
    }

    /// nbdkit's file plugin on `image`, with `options` before the plugin and `params` after,
    /// on the socket beside `image` (the same one each time, as a restarted server would).
    fn serve(image: &PathBuf, options: &[&str], params: &[&str]) -> Kit {
        let sock = image.with_extension("sock");
        let _ = std::fs::remove_file(&sock);
        let child = Command::new("nbdkit")
            .args(["-f", "--exit-with-parent", "-U"])
            .arg(&sock)
            .args(options)
            .arg("file")
            .arg(image)
            .args(params)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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

/// qemu-io's `command` on `uri`, which must succeed within 30 s (a request held for ever
/// fails the test rather than hanging it).
fn qemu_io(uri: &str, command: &str) -> String {
    ok(Command::new("timeout").args(["30", "qemu-io", "-f", "raw", uri, "-c", command]))
}

#[test]
fn commands_longer_than_the_servers_maximum_block_go_in_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "m", 2, 16 * MIB);
    let kit = Kit::start(&imgs[1], 64 << 10);
    let devs = [imgs[0].clone(), PathBuf::from(kit.uri())];
    create_mirror("lim", &devs, &[]);
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
    // create: a server whose minimum block is 4096 is refused (it cannot be read in sectors);
    // a 4Kn loop device makes an array Linux md runs, and `create` says `raid1 run` will not.
    let lo = Loop4k::attach(&imgs[1]);
    let kit = Kit::limited(&imgs[2], "blocksize-minimum=4096");
    // `raid1 create` of a mirror of the first image and `second`, as it ends.
    let create_with = |second: &str, extra: &[&str]| {
        tool(
            Command::new(RAID1)
                .args(["create", "-l1", "-n2", "--assume-clean", "-N", "b"])
                .args(extra)
                .arg(&imgs[0])
                .arg(second),
        )
    };
    let before = hashes(&imgs);
    let out = create_with(&kit.uri(), &[]);
    refused(&out, &kit.uri(), "create");
    assert!(text(&out.stderr).contains("nothing was written"));
    drop(kit);
    assert_eq!(before, hashes(&imgs), "a refused create wrote a member");
    let out = create_with(&lo.0, &["--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("`raid1 run` will refuse it"),
        "{}",
        text(&out.stderr)
    );
    // run: an array made over image files whose second member now shows 4096-byte sectors.
    drop(lo);
    create_mirror("b", &imgs[..2], &["--force"]);
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

/// A write held for the last member's return (`--no-member-policy suspend`), whose server
/// comes back otherwise configured: without structured replies (`--no-sr`), the link reads
/// the replies as the server now sends them and the write completes; with a minimum block the
/// array's sectors do not fit, the return is refused (the write stays held, not failed) until
/// the server is back as it was.
#[test]
fn a_server_that_returns_otherwise_configured_is_spoken_to_as_it_now_is() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "r", 2, 16 * MIB);
    let kit = Kit::serve(&imgs[1], &[], &[]);
    let devs = [imgs[0].clone(), PathBuf::from(kit.uri())];
    create_mirror("ret", &devs, &[]);
    let policy = [
        "--no-member-policy",
        "suspend",
        "--failfast-timeout",
        "1000",
    ];
    let server = Server::start(dir.path(), "ret", &policy, &devs);
    server.ctl_ok(&["fail", "ret", imgs[0].to_str().unwrap()]);
    qemu_io(&server.uri(), "write -P 0x11 0 64k");
    // A write of `len` bytes, held while the server is gone.
    let held_len = |kit: Kit, pattern: u8, at: u64, len: u64| {
        drop(kit);
        std::thread::sleep(Duration::from_millis(300));
        Command::new("qemu-io")
            .args(["-f", "raw", &server.uri(), "-c"])
            .arg(format!("write -P {pattern} {at} {len}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let held = |kit: Kit, pattern: u8, at: u64| held_len(kit, pattern, at, 512);
    let finished = |w: &mut Child, secs: u64| {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(secs) {
            if let Some(st) = w.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    };
    // Back without structured replies.
    let mut w = held(kit, 0x22, MIB + 512);
    assert!(
        finished(&mut w, 2).is_none(),
        "the write was answered while no member was there"
    );
    let kit = Kit::serve(&imgs[1], &["--no-sr"], &[]);
    let st = finished(&mut w, 20).expect("the held write completes once the server is back");
    let out = w.wait_with_output().unwrap();
    assert!(
        st.success() && !String::from_utf8_lossy(&out.stdout).contains("failed"),
        "the held write failed after the server came back without structured replies: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r = qemu_io(&server.uri(), "read -P 0x22 1049088 512");
    assert!(
        !r.contains("failed") && !r.contains("Pattern verification"),
        "{r}"
    );
    // Back with a 4096-byte minimum block: refused, the write stays held.
    let mut w = held(kit, 0x33, 2 * MIB + 512);
    let kit = Kit::limited(&imgs[1], "blocksize-minimum=4096");
    assert!(
        finished(&mut w, 4).is_none(),
        "a server that takes no 512-byte request was taken back"
    );
    drop(kit);
    let kit = Kit::serve(&imgs[1], &[], &[]);
    let st = finished(&mut w, 20).expect("the held write completes once the server is as it was");
    assert!(st.success());
    // A 1 MiB write held (cut for the server's 32 MiB maximum block: sent whole), and the
    // server back taking at most 64 KiB a command: the held write goes in pieces it takes.
    let mut w = held_len(kit, 0x44, 4 * MIB + 512, MIB);
    let _kit = Kit::start(&imgs[1], 64 << 10);
    let st = finished(&mut w, 20).expect("the held 1 MiB write completes");
    let out = w.wait_with_output().unwrap();
    assert!(
        st.success() && !String::from_utf8_lossy(&out.stdout).contains("failed"),
        "the held write failed after the server came back with a smaller maximum block: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let d = server.detail();
    assert_eq!(d["working_devices"], 1, "the remote member was failed: {d}");
    for (pattern, at, len) in [
        ("0x11", 0, 65536),
        ("0x22", MIB + 512, 512),
        ("0x33", 2 * MIB + 512, 512),
        ("0x44", 4 * MIB + 512, MIB),
    ] {
        let r = qemu_io(&server.uri(), &format!("read -P {pattern} {at} {len}"));
        assert!(
            !r.contains("failed") && !r.contains("Pattern verification"),
            "{r}"
        );
    }
    server.stop();
}
