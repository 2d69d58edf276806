//! `raid1 grow NAME --size SIZE|max` (mdadm's `--grow --size`) on running arrays over real
//! image files and loop devices: members grown with `truncate` (or `losetup -c`) while the
//! array runs give it room, data written beyond the old end reads back, `mdadm --examine`
//! agrees on the new size, the new region is resynced (or not, with `--assume-clean`), and
//! every refusal (shrink without --force, a member too small, metadata 1.0 past its data
//! area, hostile sizes) writes nothing. (What Linux makes of a grown array: `tests/interop.rs`,
//! the `grow-size` cell of `updated_superblocks_assemble_in_linux`.)

#[path = "run_common.rs"]
mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use raid1_superblock::Superblock;

use common::{
    CMD_READ, NbdClient, RAID1, Server, create_mirror, data_areas_equal, data_offset, examine,
    hashes, ok, small_chunk_bitmap, sparse_images, text,
};

const MIB: u64 = 1 << 20;

fn field(dev: &Path, key: &str) -> String {
    examine(dev)
        .get(key)
        .cloned()
        .unwrap_or_else(|| panic!("{}: no {key} in mdadm --examine", dev.display()))
}

/// "Used Dev Size" in sectors (mdadm prints it only where it differs from "Avail Dev Size").
fn used(dev: &Path) -> u64 {
    let e = examine(dev);
    sectors(
        e.get("Used Dev Size")
            .or_else(|| e.get("Avail Dev Size"))
            .unwrap_or_else(|| panic!("{}: no size in mdadm --examine: {e:?}", dev.display())),
    )
}

/// Sectors of an `mdadm --examine` size line ("12345 sectors (...)" or "12345 (...)").
fn sectors(v: &str) -> u64 {
    v.split_whitespace().next().unwrap().parse().unwrap()
}

/// KiB of an `mdadm --examine` "Array Size" line ("6144 KiB (...)").
fn kib(v: &str) -> u64 {
    v.split_whitespace().next().unwrap().parse().unwrap()
}

fn set_len(p: &Path, bytes: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .set_len(bytes)
        .unwrap();
}

/// Fills `len` bytes at data sector `at` of member `p` with `byte` (behind the array's back).
fn scribble(p: &Path, at: u64, len: usize, byte: u8) {
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(&vec![byte; len], data_offset(p) + at * 512)
        .unwrap();
    f.sync_all().unwrap();
}

fn qemu_io(s: &Server, cmd: &str) -> String {
    ok(Command::new("qemu-io")
        .args(["-f", "raw", "-c", cmd])
        .arg(s.uri()))
}

/// An array `name` of two 32 MiB images with a pattern in its first 3 MiB.
fn array(dir: &Path, name: &str, create: &[&str]) -> Vec<PathBuf> {
    let imgs = sparse_images(dir, name, 2, 32 * MIB);
    create_mirror(name, &imgs, create);
    imgs
}

/// A running array `name` with 3 MiB written, whose member files then grew to 48 MiB; the
/// second one's new room holds something else than the first's, which only a resync makes
/// equal. Returns the images, the used size before (sectors) and the server.
fn grown_while_running(dir: &Path, name: &str) -> (Vec<PathBuf>, u64, Server) {
    let imgs = array(dir, name, &[]);
    let old = used(&imgs[0]);
    let s = Server::start(dir, name, &[], &imgs);
    qemu_io(&s, "write -P 0x5a 0 3M");
    for p in &imgs {
        set_len(p, 48 * MIB);
    }
    scribble(&imgs[1], old + 100, 64 << 10, 0xee);
    (imgs, old, s)
}

#[test]
fn grow_to_max_resyncs_the_new_region_and_mdadm_reads_the_size() {
    let dir = tempfile::tempdir().unwrap();
    // Both files grow by 16 MiB while the array runs.
    let (imgs, old, s) = grown_while_running(dir.path(), "gs");
    // An NBD client connected now keeps the old size.
    let mut before = NbdClient::connect(&s.socket).unwrap();
    let out = s.ctl(&["grow", "gs", "--size", "max"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(said.contains("has been set to"), "{said}");
    assert!(said.contains("are resynced"), "{said}");
    s.ctl_ok(&["wait", "gs"]);
    let new = 48 * 2048 - data_offset(&imgs[0]) / 512;
    let d = s.detail();
    assert_eq!(d["array_size_kib"], new / 2, "{d}");
    assert_eq!(d["used_dev_size_kib"], new / 2, "{d}");
    // Data beyond the old end, through a new connection.
    let at = old * 512 + MIB;
    qemu_io(&s, &format!("write -P 0xc3 {at} 1M"));
    qemu_io(&s, &format!("read -P 0xc3 {at} 1M"));
    qemu_io(&s, "read -P 0x5a 0 3M");
    assert!(
        before.request(CMD_READ, 0, old * 512, 4096, &[]).is_err(),
        "a client connected before the grow keeps the old size"
    );
    assert!(before.request(CMD_READ, 0, 0, 4096, &[]).is_ok());
    let mut after = NbdClient::connect(&s.socket).unwrap();
    let data = after.request(CMD_READ, 0, at, 4096, &[]).unwrap();
    assert!(data.iter().all(|b| *b == 0xc3));
    drop((before, after));
    let sha = s.read_all(&dir.path().join("gs.raw"));
    s.stop();
    for p in &imgs {
        assert_eq!(used(p), new, "{:?}", examine(p));
        assert_eq!(
            sectors(&field(p, "Avail Dev Size")),
            new,
            "{:?}",
            examine(p)
        );
        assert_eq!(kib(&field(p, "Array Size")), new / 2, "{:?}", examine(p));
        assert_eq!(field(p, "State"), "clean");
    }
    assert!(
        data_areas_equal(&imgs[0], &imgs[1], new * 512),
        "the new region was resynced"
    );
    // `raid1 examine` agrees with mdadm.
    let ours = ok(Command::new(RAID1).arg("examine").arg(&imgs[0]));
    assert!(
        ours.contains(&format!("Used Dev Size : {new} sectors"))
            || ours.contains(&format!("Avail Dev Size : {new} sectors")),
        "{ours}"
    );
    assert!(
        ours.contains(&format!("Array Size : {} KiB", new / 2)),
        "{ours}"
    );
    // Restarted: the same bytes, the new size.
    let s = Server::start(dir.path(), "gs", &[], &imgs);
    assert_eq!(s.read_all(&dir.path().join("gs2.raw")), sha);
    qemu_io(&s, &format!("read -P 0xc3 {at} 1M"));
    s.stop();
}

#[test]
fn assume_clean_leaves_the_new_region_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = array(dir.path(), "ac", &["--bitmap", "none"]);
    let old = used(&imgs[0]);
    let s = Server::start(dir.path(), "ac", &[], &imgs);
    for p in &imgs {
        set_len(p, 40 * MIB);
    }
    scribble(&imgs[1], old + 8, 4096, 0xee);
    let out = s.ctl(&["grow", "ac", "--size", "36M", "--assume-clean"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no resync"),
        "{}",
        text(&out.stderr)
    );
    s.ctl_ok(&["wait", "ac"]);
    assert_eq!(s.detail()["array_size_kib"], 36 * 1024);
    s.stop();
    for p in &imgs {
        assert_eq!(used(p), 36 * 2048);
    }
    // Nothing copied the second member's bytes over: the mirrors still differ there.
    assert!(!data_areas_equal(&imgs[0], &imgs[1], 36 * MIB));
    assert!(data_areas_equal(&imgs[0], &imgs[1], old * 512));
}

#[test]
fn refusals_write_nothing_and_name_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = array(dir.path(), "rf", &[]);
    let old = used(&imgs[0]);
    let s = Server::start(dir.path(), "rf", &[], &imgs);
    qemu_io(&s, "write -P 0x5a 0 3M");
    s.ctl_ok(&["wait", "rf"]);
    // Let the clean mark and the bitmap daemon settle before taking the bytes.
    std::thread::sleep(std::time::Duration::from_secs(7));
    let before = hashes(&imgs);
    // Only the first member grows.
    set_len(&imgs[0], 48 * MIB);
    let before0 = hashes(&imgs[..1]);
    let refuse = |args: &[&str], words: &[&str]| {
        let out = s.ctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?} accepted");
        let err = text(&out.stderr);
        for w in words {
            assert!(err.contains(w), "{args:?}: {err}");
        }
        assert!(!err.contains("Some(") && !err.contains("Err("), "{err}");
    };
    let second = imgs[1].display().to_string();
    refuse(&["grow", "rf", "--size", "40M"], &[&second, "too small"]);
    refuse(&["grow", "rf", "--size", "8M"], &["--force", "lose"]);
    for bad in [
        "0",
        "7s",
        "1025s",
        "12MB",
        "-5",
        "99999999999999999999",
        "1e3",
        "",
    ] {
        refuse(&["grow", "rf", &format!("--size={bad}")], &["size"]);
    }
    refuse(&["grow", "rf", "--assume-clean"], &[]);
    // max: the second member holds no more than now.
    let out = s.ctl(&["grow", "rf", "--size", "max"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("unchanged"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(hashes(&imgs[..1]), before0);
    assert_eq!(hashes(&imgs[1..]), before[1..]);
    assert_eq!(s.detail()["array_size_kib"], old / 2);
    // Shrinking with --force: the data below the new end stays.
    let out = s.ctl(&["grow", "rf", "--size", "16M", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no longer part of the array"),
        "{}",
        text(&out.stderr)
    );
    qemu_io(&s, "read -P 0x5a 0 3M");
    s.stop();
    for p in &imgs {
        assert_eq!(used(p), 16 * 2048);
    }
}

#[test]
fn metadata_1_0_grows_only_inside_its_data_area() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = array(dir.path(), "m0", &["--metadata", "1.0"]);
    let used = used(&imgs[0]);
    let avail = sectors(&field(&imgs[0], "Avail Dev Size"));
    let s = Server::start(dir.path(), "m0", &[], &imgs);
    qemu_io(&s, "write -P 0x5a 0 3M");
    // Shrink, then grow back to the whole data area: no metadata moves.
    s.ctl_ok(&["grow", "m0", "--size", "20M", "--force"]);
    let out = s.ctl(&["grow", "m0", "--size", "max"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    s.ctl_ok(&["wait", "m0"]);
    assert_eq!(s.detail()["used_dev_size_kib"], avail / 2);
    // The devices grow, but the superblock sits at the old end: past it is refused by name.
    for p in &imgs {
        set_len(p, 48 * MIB);
    }
    std::thread::sleep(std::time::Duration::from_secs(7));
    let before = hashes(&imgs);
    let out = s.ctl(&["grow", "m0", "--size", "40M"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("metadata 1.0") && err.contains(&imgs[0].display().to_string()),
        "{err}"
    );
    assert_eq!(hashes(&imgs), before);
    qemu_io(&s, "read -P 0x5a 0 3M");
    s.stop();
    // The stopped array still has its superblocks at the old place: Linux's placement rule
    // for 1.0 looks at the (now larger) device's end, so mdadm no longer finds them there,
    // which is exactly why growing a 1.0 device means moving them.
    let _ = used;
}

#[test]
fn grow_onto_grown_loop_devices() {
    let dir = tempfile::tempdir().unwrap();
    let files = sparse_images(dir.path(), "lp", 2, 32 * MIB);
    let loops: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            let d = ok(Command::new("losetup").args(["-f", "--show"]).arg(f));
            PathBuf::from(d.trim())
        })
        .collect();
    struct Detach(Vec<PathBuf>);
    impl Drop for Detach {
        fn drop(&mut self) {
            for l in &self.0 {
                let _ = Command::new("losetup").arg("-d").arg(l).status();
            }
        }
    }
    let _detach = Detach(loops.clone());
    create_mirror("lp", &loops, &[]);
    let old = used(&loops[0]);
    let s = Server::start(dir.path(), "lp", &[], &loops);
    qemu_io(&s, "write -P 0x5a 0 3M");
    for (f, l) in files.iter().zip(&loops) {
        set_len(f, 40 * MIB);
        ok(Command::new("losetup").arg("-c").arg(l));
    }
    let out = s.ctl(&["grow", "lp", "--size", "max"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    s.ctl_ok(&["wait", "lp"]);
    let at = old * 512 + 64 * 1024;
    qemu_io(&s, &format!("write -P 0x77 {at} 1M"));
    qemu_io(&s, &format!("read -P 0x77 {at} 1M"));
    s.stop();
    let new = 40 * 2048 - data_offset(&loops[0]) / 512;
    for l in &loops {
        assert_eq!(used(l), new);
    }
    assert!(data_areas_equal(&loops[0], &loops[1], new * 512));
}

#[test]
fn a_member_left_behind_by_a_grow_is_brought_up_to_the_new_size() {
    // A crash between the members' superblock writes of a grow leaves one member a round
    // behind with the old size and data_size: made here by hand on the second member.
    let dir = tempfile::tempdir().unwrap();
    let imgs = array(dir.path(), "lb", &[]);
    let old = used(&imgs[0]);
    for p in &imgs {
        set_len(p, 48 * MIB);
    }
    let s = Server::start(dir.path(), "lb", &[], &imgs);
    qemu_io(&s, "write -P 0x5a 0 3M");
    s.ctl_ok(&["grow", "lb", "--size", "max"]);
    s.ctl_ok(&["wait", "lb"]);
    qemu_io(&s, &format!("write -P 0xc3 {} 1M", 40 * MIB));
    s.stop();
    let new = used(&imgs[0]);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&imgs[1])
        .unwrap();
    let mut page = vec![0u8; 4096];
    f.read_exact_at(&mut page, 4096).unwrap();
    let mut sb: Superblock = Superblock::parse(&page).unwrap();
    sb.size = old;
    sb.data_size = old;
    sb.events -= 1;
    sb.serialize(&mut page).unwrap();
    f.write_all_at(&page, 4096).unwrap();
    drop(f);
    assert_eq!(used(&imgs[1]), old);
    let s = Server::start(dir.path(), "lb", &[], &imgs);
    s.ctl_ok(&["wait", "lb"]);
    qemu_io(&s, &format!("read -P 0xc3 {} 1M", 40 * MIB));
    s.stop();
    for p in &imgs {
        assert_eq!(used(p), new, "{:?}", examine(p));
        assert_eq!(
            sectors(&field(p, "Avail Dev Size")),
            new,
            "{:?}",
            examine(p)
        );
    }
    assert!(data_areas_equal(&imgs[0], &imgs[1], new * 512));
}

/// `mdadm --examine-bitmap` of an image, through a loop device.
fn examine_bitmap(p: &Path) -> String {
    let dev = ok(Command::new("losetup").args(["-f", "--show"]).arg(p));
    let dev = dev.trim();
    let out = common::tool(Command::new("mdadm").arg("--examine-bitmap").arg(dev));
    ok(Command::new("losetup").args(["-d", dev]));
    text(&out.stdout)
}

#[test]
fn a_bitmap_that_outgrows_its_room_doubles_its_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "bc", 2, 16 * MIB);
    create_mirror("bc", &imgs, &["--bitmap", "internal"]);
    small_chunk_bitmap(&imgs);
    assert!(examine_bitmap(&imgs[0]).contains("Chunksize : 512 B"));
    let s = Server::start(dir.path(), "bc", &[], &imgs);
    qemu_io(&s, "write -P 0x5a 0 3M");
    for p in &imgs {
        set_len(p, 24 * MIB);
    }
    scribble(&imgs[1], 20 * 2048, 4096, 0xee);
    let out = s.ctl(&["grow", "bc", "--size", "max"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("bitmap chunk 512 B -> 1 KiB"),
        "{}",
        text(&out.stderr)
    );
    s.ctl_ok(&["wait", "bc"]);
    qemu_io(&s, &format!("write -P 0xc3 {} 1M", 21 * MIB));
    let sha = s.read_all(&dir.path().join("bc.raw"));
    s.stop();
    let new = used(&imgs[0]);
    assert_eq!(new, 23 * 2048);
    for p in &imgs {
        let x = examine_bitmap(p);
        assert!(x.contains("Chunksize : 1 KB"), "{x}");
        assert!(x.contains(&format!("Sync Size : {}", new / 2)), "{x}");
        assert!(x.contains("Bitmap : 23552 bits (chunks), 0 dirty"), "{x}");
    }
    assert!(data_areas_equal(&imgs[0], &imgs[1], new * 512));
    let s = Server::start(dir.path(), "bc", &[], &imgs);
    assert_eq!(s.read_all(&dir.path().join("bc2.raw")), sha);
    s.stop();
}

#[test]
fn killed_right_after_a_grow_comes_back_whole() {
    // SIGKILL as soon as the grow is answered: the superblock round that gives the size, the
    // new region's bitmap pages and its resync may all be cut anywhere. The restart must
    // agree on one size on both members and resync whatever is not known to be in sync.
    let dir = tempfile::tempdir().unwrap();
    let (imgs, old, s) = grown_while_running(dir.path(), "kg");
    s.ctl_ok(&["grow", "kg", "--size", "max"]);
    s.kill9();
    let s = Server::start(dir.path(), "kg", &[], &imgs);
    s.ctl_ok(&["wait", "kg"]);
    qemu_io(&s, "read -P 0x5a 0 3M");
    let size = s.detail()["array_size_kib"].as_u64().unwrap() * 2;
    s.stop();
    assert!(
        size == old || size == 48 * 2048 - data_offset(&imgs[0]) / 512,
        "{size}"
    );
    for p in &imgs {
        assert_eq!(used(p), size, "{:?}", examine(p));
        assert_eq!(field(p, "State"), "clean");
    }
    assert!(data_areas_equal(&imgs[0], &imgs[1], size * 512));
}

/// `grow --bitmap internal --bitmap-chunk` on a 1.0 array, whose bitmap must fit the 4 KiB kept
/// below the superblock: a 4 KiB chunk over 200 MiB needs 51 200 bits, more than fit, and is
/// refused naming 8 KiB, with nothing written; 8 KiB is then taken, and mdadm reads it back.
#[test]
fn a_bitmap_chunk_asked_of_grow_must_fit_the_room() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "gc", 2, 200 * MIB);
    create_mirror("gc", &imgs, &["--bitmap", "none", "-e", "1.0"]);
    let s = Server::start(dir.path(), "gc", &[], &imgs);
    let before = hashes(&imgs);
    let out = s.ctl(&["grow", "gc", "--bitmap", "internal", "--bitmap-chunk", "4K"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("the smallest chunk that fits is 8 KiB"),
        "{err}"
    );
    assert_eq!(hashes(&imgs), before, "a refused grow wrote something");
    s.ctl_ok(&["grow", "gc", "--bitmap", "internal", "--bitmap-chunk", "8K"]);
    s.stop();
    let x = examine_bitmap(&imgs[0]);
    assert!(x.contains("Chunksize : 8 KB"), "{x}");
}
