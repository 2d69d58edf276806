//! `raid1 run --update=WHAT` (mdadm's `--assemble --update=`): each aspect changes every
//! member's superblock as mdadm's update_super1 does, `mdadm --examine` then reads the change,
//! the array starts and serves the same bytes, and a refused update writes nothing. (What
//! Linux makes of the updated members: `tests/interop.rs`, `updated_superblocks_assemble_in_linux`.)

#[path = "run_common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    RAID1, Server, create_mirror, examine, hashes, ok, sparse_images, text, tool, unpack,
};

const MIB: u64 = 1 << 20;

/// A 2-member array `name` on fresh images with a pattern written; returns the images and
/// the array's sha256.
fn array(dir: &Path, name: &str, create: &[&str]) -> (Vec<PathBuf>, String) {
    let imgs = sparse_images(dir, name, 2, 32 * MIB);
    let mut extra = vec!["--homehost", "first"];
    extra.extend_from_slice(create);
    create_mirror(name, &imgs, &extra);
    let s = Server::start(dir, name, &[], &imgs);
    ok(Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            "write -P 0x5a 0 3M",
            "-c",
            "write -P 0xa5 5M 1M",
        ])
        .arg(s.uri()));
    let sha = s.read_all(&dir.join(format!("{name}.raw")));
    s.stop();
    (imgs, sha)
}

/// Runs the array with `extra` (an update) and stops it; returns its sha256 as served.
fn run_with(dir: &Path, name: &str, extra: &[&str], imgs: &[PathBuf]) -> String {
    let s = Server::start(dir, name, extra, imgs);
    let sha = s.read_all(&dir.join(format!("{name}-after.raw")));
    s.stop();
    sha
}

fn field(dev: &Path, key: &str) -> Option<String> {
    examine(dev).get(key).cloned()
}

#[test]
fn name_and_homehost() {
    let dir = tempfile::tempdir().unwrap();
    let (imgs, sha) = array(dir.path(), "nm", &[]);
    assert_eq!(field(&imgs[0], "Name").unwrap(), "first:nm");
    // (The server is started with `--name renamed`: the new name.)
    let extra = ["--update", "name", "--homehost", "second"];
    assert_eq!(run_with(dir.path(), "renamed", &extra[..], &imgs), sha);
    for p in &imgs {
        assert_eq!(
            field(p, "Name").unwrap(),
            "second:renamed",
            "{}",
            p.display()
        );
    }
    // The home host alone; the name part stays.
    let extra = ["--update", "homehost", "--homehost", "third"];
    assert_eq!(run_with(dir.path(), "renamed", &extra[..], &imgs), sha);
    for p in &imgs {
        assert_eq!(field(p, "Name").unwrap(), "third:renamed");
    }
    // Without --name: refused before anything is written.
    let before = hashes(&imgs);
    let out = tool(
        Command::new(RAID1)
            .env("RAID1_RUN_DIR", dir.path().join("rd"))
            .args(["run", "--update", "name"])
            .args(&imgs),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--update=name needs --name"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(hashes(&imgs), before);
}

#[test]
fn uuid_given_and_random_also_in_the_bitmap() {
    let dir = tempfile::tempdir().unwrap();
    let (imgs, sha) = array(dir.path(), "uu", &["--bitmap", "internal"]);
    let old = field(&imgs[0], "Array UUID").unwrap();
    let new = "01234567:89abcdef:fedcba98:76543210";
    let extra = ["--update", "uuid"];
    assert_eq!(run_with(dir.path(), "uu", &extra[..], &imgs), sha);
    let random = field(&imgs[0], "Array UUID").unwrap();
    assert_ne!(random, old);
    assert_eq!(field(&imgs[1], "Array UUID").unwrap(), random);
    let out = tool(
        Command::new(RAID1)
            .env("RAID1_RUN_DIR", dir.path().join("rd"))
            .args(["run", "--daemon", "--update", "uuid", "--uuid", new])
            .args(&imgs),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    ok(Command::new(RAID1)
        .env("RAID1_RUN_DIR", dir.path().join("rd"))
        .args(["stop", "uu"]));
    for p in &imgs {
        assert_eq!(field(p, "Array UUID").unwrap(), new);
        // The bitmap header carries the array's UUID too (mdadm checks them against each
        // other). mdadm reads a member's bitmap from a block device only: a loop device.
        let dev = ok(Command::new("losetup").args(["-f", "--show"]).arg(p));
        let dev = dev.trim();
        let bm = tool(Command::new("mdadm").arg("--examine-bitmap").arg(dev));
        ok(Command::new("losetup").args(["-d", dev]));
        let bm = text(&bm.stdout);
        let line = bm
            .lines()
            .find(|l| l.trim_start().starts_with("UUID"))
            .unwrap_or_else(|| panic!("{bm}"));
        assert!(line.contains(new), "{line}");
    }
    assert_eq!(run_with(dir.path(), "uu", &[], &imgs), sha);
    // --uuid without --scan or --update=uuid means nothing here: refused.
    let out = tool(
        Command::new(RAID1)
            .env("RAID1_RUN_DIR", dir.path().join("rd"))
            .args(["run", "--uuid", new])
            .args(&imgs),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn resync_marks_the_array_dirty_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    // Without a bitmap: with one, md (and raid1) resync only the chunks it marks dirty.
    let (imgs, sha) = array(dir.path(), "rs", &["--bitmap", "none"]);
    assert_eq!(field(&imgs[0], "State").unwrap(), "clean");
    // Slow enough that the resync is seen running.
    let s = Server::start(
        dir.path(),
        "rs",
        &["--update", "resync", "--sync-speed-max", "64"],
        &imgs,
    );
    let d = s.detail();
    assert_eq!(d["sync_action"], "resync", "{d}");
    s.stop();
    // Stopped before the end: the next start goes on with it (md's resync_offset).
    for p in &imgs {
        assert_eq!(field(p, "State").unwrap(), "active", "{:?}", examine(p));
    }
    assert_eq!(run_with(dir.path(), "rs", &[], &imgs), sha);
}

/// `Avail Dev Size` in sectors.
fn avail(dev: &Path) -> u64 {
    field(dev, "Avail Dev Size")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn devicesize_takes_a_grown_device() {
    let dir = tempfile::tempdir().unwrap();
    let (imgs, sha) = array(dir.path(), "ds", &[]);
    let before = avail(&imgs[0]);
    for p in &imgs {
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(48 * MIB)
            .unwrap();
    }
    let extra = ["--update", "devicesize"];
    assert_eq!(run_with(dir.path(), "ds", &extra[..], &imgs), sha);
    let data_offset: u64 = common::data_offset(&imgs[0]) / 512;
    for p in &imgs {
        let after = avail(p);
        assert_eq!(after, 48 * MIB / 512 - data_offset);
        assert!(after > before);
    }
}

#[test]
fn no_bitmap() {
    let dir = tempfile::tempdir().unwrap();
    let (imgs, sha) = array(dir.path(), "nb", &["--bitmap", "internal"]);
    assert!(field(&imgs[0], "Internal Bitmap").is_some());
    let extra = ["--update", "no-bitmap"];
    assert_eq!(run_with(dir.path(), "nb", &extra[..], &imgs), sha);
    for p in &imgs {
        assert!(field(p, "Internal Bitmap").is_none(), "{:?}", examine(p));
    }
    assert_eq!(run_with(dir.path(), "nb", &[], &imgs), sha);
}

#[test]
fn bbl_and_no_bbl() {
    let dir = tempfile::tempdir().unwrap();
    let (imgs, sha) = array(dir.path(), "bl", &[]);
    let log = field(&imgs[0], "Bad Block Log").unwrap();
    assert!(log.starts_with("512 entries available"), "{log}");
    assert!(field(&imgs[0], "Internal Bitmap").is_some());
    let extra = ["--update", "no-bbl"];
    assert_eq!(run_with(dir.path(), "bl", &extra[..], &imgs), sha);
    for p in &imgs {
        assert!(field(p, "Bad Block Log").is_none(), "{:?}", examine(p));
    }
    // Back where mdadm puts it at create.
    let extra = ["--update", "bbl"];
    assert_eq!(run_with(dir.path(), "bl", &extra[..], &imgs), sha);
    for p in &imgs {
        // Where mdadm's --update=bbl puts it (its arithmetic; the guest's mdadm agrees in
        // tests/interop.rs), not where create put it.
        assert_eq!(
            field(p, "Bad Block Log").unwrap(),
            "512 entries available at offset 80 sectors"
        );
    }
}

#[test]
fn no_bbl_is_refused_while_the_log_lists_entries_and_force_no_bbl_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = unpack("badblocks", dir.path(), "kb-");
    let before = hashes(&imgs);
    let out = tool(
        Command::new(RAID1)
            .env("RAID1_RUN_DIR", dir.path().join("rd"))
            .args(["run", "--update", "no-bbl"])
            .args(&imgs),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("kb-vda.img")
            && err.contains("--update=no-bbl")
            && err.contains("force-no-bbl"),
        "{err}"
    );
    assert_eq!(hashes(&imgs), before, "a refused update writes nothing");
    let s = Server::start(dir.path(), "fb", &["--update", "force-no-bbl"], &imgs);
    s.stop();
    for p in &imgs {
        assert!(field(p, "Bad Block Log").is_none(), "{:?}", examine(p));
        let bb = tool(Command::new("mdadm").arg("--examine-badblocks").arg(p));
        assert!(!text(&bb.stdout).contains(" for "), "{}", text(&bb.stdout));
    }
}

/// `raid1 grow NAME --bitmap internal|none` (mdadm's `--grow --bitmap=`) on a running array:
/// the bitmap appears where md keeps it, the array serves the same bytes, and it goes again.
#[test]
fn grow_bitmap_internal_then_none() {
    let dir = tempfile::tempdir().unwrap();
    let (imgs, sha) = array(dir.path(), "gb", &["--bitmap", "none"]);
    assert!(field(&imgs[0], "Internal Bitmap").is_none());
    let s = Server::start(dir.path(), "gb", &[], &imgs);
    let out = s.ctl(&["grow", "gb", "--bitmap", "internal"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("bitmap at 8 sectors"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(s.detail()["consistency_policy"], "bitmap");
    // Again: refused by name.
    let out = s.ctl(&["grow", "gb", "--bitmap", "internal"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("has a bitmap already"),
        "{}",
        text(&out.stderr)
    );
    ok(Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x5a 0 3M"])
        .arg(s.uri()));
    let sha = {
        let _ = sha;
        s.read_all(&dir.path().join("gb-mid.raw"))
    };
    s.stop();
    for p in &imgs {
        assert_eq!(
            field(p, "Internal Bitmap").as_deref(),
            Some("8 sectors from superblock"),
            "{:?}",
            examine(p)
        );
        let dev = ok(Command::new("losetup").args(["-f", "--show"]).arg(p));
        let dev = dev.trim();
        let bm = tool(Command::new("mdadm").arg("--examine-bitmap").arg(dev));
        ok(Command::new("losetup").args(["-d", dev]));
        let bm = text(&bm.stdout);
        assert!(bm.contains("Chunksize : 64 MB"), "{bm}");
        assert!(bm.contains(&field(p, "Array UUID").unwrap()), "{bm}");
    }
    // Restarted: it runs with the bitmap, then drops it.
    let s = Server::start(dir.path(), "gb", &[], &imgs);
    assert_eq!(s.detail()["consistency_policy"], "bitmap");
    let out = s.ctl(&["grow", "gb", "--bitmap", "none"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(s.detail()["consistency_policy"], "resync");
    assert_eq!(s.read_all(&dir.path().join("gb-end.raw")), sha);
    s.stop();
    for p in &imgs {
        assert!(field(p, "Internal Bitmap").is_none(), "{:?}", examine(p));
    }
    assert_eq!(run_with(dir.path(), "gb", &[], &imgs), sha);
}
