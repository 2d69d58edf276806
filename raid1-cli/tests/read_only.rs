//! Read-only arrays, as mdadm's `--readonly` / `--readwrite` and `--assemble --readonly` make
//! them: writes fail (EPERM), reads are served, and nothing at all is written to the members
//! (their files stay byte for byte the same, timers and stop included) until read-write.

#[path = "run_common.rs"]
mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    NbdClient, RAID1, Server, create_mirror, examine, hashes, ok, sparse_images, text, tool,
};
use raid1_cli::nbd::proto::{cmd, tflags};

/// qemu-io running `cmd`, opening the export read-only for a read (as a client of a
/// read-only export must: one that asks for writes is refused at open).
fn qemu_io(s: &Server, cmd: &str) -> std::process::Output {
    let mode: &[&str] = if cmd.starts_with("read") {
        &["-r"]
    } else {
        &[]
    };
    tool(
        Command::new("qemu-io")
            .args(mode)
            .args(["-f", "raw", "-c", cmd])
            .arg(s.uri()),
    )
}

/// A client that would write cannot: told at connection that the export is read-only, qemu
/// refuses to open it for writing.
fn refused(s: &Server, cmd: &str) {
    let out = qemu_io(s, cmd);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        all.contains("Could not open image: Permission denied"),
        "{cmd} on a read-only array: {all}"
    );
}

/// What a client that connects now is told: NBD_FLAG_READ_ONLY, and whether it may trim.
fn told_read_only(s: &Server) -> (bool, bool) {
    let out = tool(Command::new("nbdinfo").arg("--json").arg(s.uri()));
    assert!(out.status.success(), "nbdinfo: {}", text(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nbdinfo's JSON");
    let export = &info["exports"][0];
    (
        export["is_read_only"].as_bool().expect("is_read_only"),
        export["can_trim"].as_bool().expect("can_trim"),
    )
}

fn reads(s: &Server, cmd: &str) {
    let out = qemu_io(s, cmd);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && !all.contains("fail") && !all.contains("not permitted"),
        "{cmd}: {all}"
    );
}

#[test]
fn readonly_and_readwrite_on_a_running_array() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "ro", 2, 32 << 20);
    create_mirror("ro", &imgs, &[]);
    let s = Server::start(dir.path(), "ro", &[], &imgs);
    reads(&s, "write -P 0x11 0 3M");
    assert_eq!(told_read_only(&s), (false, true));
    s.ctl_ok(&["readonly", "ro"]);
    assert_eq!(s.detail()["read_only"], true);
    // A client that connects now is told the export is read-only (a kernel client then
    // makes its device read-only), and is not offered trim.
    assert_eq!(told_read_only(&s), (true, false));
    let status = s.ctl_ok(&["status"]);
    assert!(status.contains("ro : active (read-only) raid1"), "{status}");
    // Marked clean before it became read-only.
    for p in &imgs {
        assert_eq!(examine(p)["State"], "clean");
    }
    let before = hashes(&imgs);
    refused(&s, "write -P 0x22 0 4k");
    refused(&s, "discard 0 1M");
    reads(&s, "read -P 0x11 0 3M");
    // The safe-mode and bitmap timers come and go: still nothing written.
    std::thread::sleep(Duration::from_millis(1200));
    reads(&s, "read -P 0x11 1M 64k");
    assert_eq!(
        hashes(&imgs),
        before,
        "a member was written while read-only"
    );
    // Asking again is fine.
    s.ctl_ok(&["readonly", "ro"]);
    s.ctl_ok(&["readwrite", "ro"]);
    assert_eq!(s.detail()["read_only"], false);
    assert_eq!(told_read_only(&s), (false, true));
    reads(&s, "write -P 0x33 0 4k");
    reads(&s, "read -P 0x33 0 4k");
    s.stop();
    assert_eq!(examine(&imgs[0])["State"], "clean");
}

#[test]
fn assembled_read_only_a_dirty_array_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "dr", 2, 32 << 20);
    create_mirror("dr", &imgs, &[]);
    let s = Server::start(dir.path(), "dr", &[], &imgs);
    // Killed while dirty (a write, then SIGKILL before the safe-mode delay).
    reads(&s, "write -P 0x44 0 1M");
    let mut dirty = false;
    for _ in 0..5 {
        reads(&s, "write -P 0x44 0 64k");
        s.child
            .as_ref()
            .map(|c| unsafe { libc::kill(c.id() as i32, libc::SIGKILL) });
        std::thread::sleep(Duration::from_millis(200));
        if examine(&imgs[0])["State"] == "active" {
            dirty = true;
            break;
        }
    }
    assert!(dirty, "never killed while dirty");
    drop(s);
    let before = hashes(&imgs);
    let s = Server::start(dir.path(), "dr", &["--readonly"], &imgs);
    assert_eq!(s.detail()["read_only"], true);
    assert!(
        s.detail()["sync_action"].is_null(),
        "no resync while read-only"
    );
    reads(&s, "read -P 0x44 0 1M");
    refused(&s, "write -P 0x55 0 4k");
    s.stop();
    assert_eq!(
        hashes(&imgs),
        before,
        "assembled read-only, a member was written (superblock, bitmap or resync)"
    );
    assert_eq!(examine(&imgs[0])["State"], "active");
    // Started normally, it resyncs and is clean after the stop.
    let s = Server::start(dir.path(), "dr", &[], &imgs);
    ok(Command::new(RAID1)
        .env("RAID1_RUN_DIR", &s.run_dir)
        .args(["wait", "dr"]));
    reads(&s, "read -P 0x44 0 1M");
    s.stop();
    assert_eq!(examine(&imgs[0])["State"], "clean");
}

/// Each client keeps the flags it was told when it connected, and the server holds it to
/// them: one that connected while the array was read-only gets EPERM for a write even after
/// the array is writable again (it was told not to write), one that connects afterwards is
/// offered writes and trims; an array assembled read-only offers trim once it is writable.
#[test]
fn each_client_is_held_to_the_flags_it_was_told() {
    let eperm = |r: std::io::Result<Vec<u8>>| {
        let e = r.expect_err("a write the client was told it may not do");
        assert_eq!(e.to_string(), "NBD error 1", "EPERM expected");
    };
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "fl", 2, 32 << 20);
    create_mirror("fl", &imgs, &[]);
    let s = Server::start(dir.path(), "fl", &["--readonly"], &imgs);
    let mut early = NbdClient::connect(&s.socket).unwrap();
    assert_ne!(early.flags & tflags::READ_ONLY, 0, "{:#x}", early.flags);
    assert_eq!(
        early.flags & (tflags::SEND_TRIM | tflags::SEND_WRITE_ZEROES),
        0
    );
    let block = [0x5Au8; 4096];
    eperm(early.request(cmd::WRITE, 0, 0, 4096, &block));
    s.ctl_ok(&["readwrite", "fl"]);
    // Told read-only: still refused, though the array is writable now.
    eperm(early.request(cmd::WRITE, 0, 0, 4096, &block));
    let mut late = NbdClient::connect(&s.socket).unwrap();
    assert_eq!(late.flags & tflags::READ_ONLY, 0, "{:#x}", late.flags);
    assert_ne!(late.flags & tflags::SEND_TRIM, 0, "{:#x}", late.flags);
    late.request(cmd::WRITE, 0, 0, 4096, &block).unwrap();
    late.request(cmd::TRIM, 0, 1 << 20, 1 << 20, &[]).unwrap();
    assert_eq!(late.request(cmd::READ, 0, 0, 4096, &[]).unwrap(), block);
    drop((early, late));
    s.stop();
}
