//! `raid1 run` killed with SIGKILL while a client writes with FUA: the next `raid1 run`
//! resyncs (with a bitmap, only its dirty chunks: the resync must not write the whole array),
//! every write the server acknowledged reads back, and the members' data areas end identical.
//! The client is a small NBD client written here, so that exactly which writes were
//! acknowledged is known. Every tool must be installed: a missing one fails the test.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "run_common.rs"]
mod common;

use common::{
    CMD_FLUSH, CMD_READ, CMD_WRITE, FLAG_FUA, NbdClient, RAID1, Server, create_mirror,
    data_areas_equal, examine_state, ok, sparse_images,
};

/// Bytes per write of the crash writer.
const BLOCK: usize = 65536;

/// The content of block `offset` written in generation `generation`: every 8 bytes hold the
/// offset and the generation, so a block from another place or time is recognised.
fn pattern(offset: u64, generation: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(BLOCK);
    for i in 0..(BLOCK / 16) as u64 {
        v.extend_from_slice(&(offset + i * 16).to_le_bytes());
        v.extend_from_slice(&generation.to_le_bytes());
    }
    v
}

/// What the writer knows when the server dies: per block, the last acknowledged generation
/// and the one in flight (sent, not answered).
#[derive(Default)]
struct Ledger {
    acked: HashMap<u64, u64>,
    in_flight: Option<(u64, u64)>,
    writes_acked: u64,
}

/// `raid1 examine-bitmap --json`: (dirty bits, total bits, chunk bytes).
fn bitmap_dirty(dev: &Path) -> (u64, u64, u64) {
    let v: serde_json::Value = serde_json::from_str(&ok(Command::new(RAID1)
        .args(["examine-bitmap", "--json"])
        .arg(dev)))
    .unwrap();
    let r = &v["devices"][0]["report"];
    (
        r["dirty_bits"].as_u64().unwrap(),
        r["total_bits"].as_u64().unwrap(),
        r["chunksize_bytes"].as_u64().unwrap(),
    )
}

/// Every member's superblock says clean and, with a bitmap, no bit is dirty (`when`: the
/// moment, for the message).
fn assert_clean(devs: &[PathBuf], bitmap: bool, when: &str) {
    for d in devs {
        assert_eq!(examine_state(d), "clean", "{}", d.display());
        if bitmap {
            assert_eq!(bitmap_dirty(d).0, 0, "bitmap of {} {when}", d.display());
        }
    }
}

/// Bytes allocated to a (sparse) image file.
fn allocated(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks() * 512
}

/// One crash round: `MiB`-sized members created by `raid1 create` (with or without bitmap),
/// a clean first run, a FUA writer over the first `span` bytes, SIGKILL of the server while it
/// writes, a restart that resyncs, and the checks. Returns (resync seconds, bytes the resync
/// allocated on the members).
fn crash_round(bitmap: bool, mib: u64, span: u64) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let devs = sparse_images(dir.path(), "m", 2, mib << 20);
    ok(Command::new(RAID1)
        .args([
            "create",
            "-l1",
            "-n2",
            "--assume-clean",
            "-N",
            "crash",
            "-b",
        ])
        .arg(if bitmap { "internal" } else { "none" })
        .args(&devs));
    // A first clean run and stop: the array and its bitmap are clean before the crash.
    let s = Server::start(dir.path(), "crash", &[], &devs);
    s.ctl_ok(&["wait", "crash"]);
    let bytes = s.detail()["array_size_kib"].as_u64().unwrap() * 1024;
    s.stop();
    assert_clean(&devs, bitmap, "after a clean stop");

    let s = Server::start(dir.path(), "crash", &[], &devs);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let writer = {
        let ledger = ledger.clone();
        let sock = s.socket.clone();
        std::thread::spawn(move || {
            let mut c = NbdClient::connect(&sock).expect("writer connects");
            let blocks = span / BLOCK as u64;
            let mut generation = 0u64;
            loop {
                generation += 1;
                // A scattered order that revisits every block of the span.
                let off = (generation * 7919 % blocks) * BLOCK as u64;
                ledger.lock().unwrap().in_flight = Some((off, generation));
                let r = c.request(
                    CMD_WRITE,
                    FLAG_FUA,
                    off,
                    BLOCK as u32,
                    &pattern(off, generation),
                );
                let mut l = ledger.lock().unwrap();
                match r {
                    Ok(_) => {
                        l.acked.insert(off, generation);
                        l.in_flight = None;
                        l.writes_acked += 1;
                    }
                    Err(e) => {
                        // The server is gone: this write is in doubt.
                        eprintln!("writer stops at generation {generation}: {e}");
                        return;
                    }
                }
                drop(l);
                if generation.is_multiple_of(64) && c.request(CMD_FLUSH, 0, 0, 0, &[]).is_err() {
                    return;
                }
            }
        })
    };
    // Kill once the writer has had 200 writes acknowledged (FUA writes are slow on a busy
    // disk: a fixed delay would sometimes kill before anything happened) and is still going.
    let t0 = Instant::now();
    while ledger.lock().unwrap().writes_acked < 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(60) && !writer.is_finished(),
            "the writer did not get 200 writes acknowledged"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    // Pull the plug on the server while the writer is in the middle of its loop.
    s.kill9();
    writer.join().unwrap();
    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    assert!(
        ledger.writes_acked >= 200,
        "only {} writes acknowledged",
        ledger.writes_acked
    );
    eprintln!(
        "bitmap={bitmap}: {} writes acknowledged before SIGKILL, in flight: {:?}",
        ledger.writes_acked, ledger.in_flight
    );
    for d in &devs {
        assert_eq!(
            examine_state(d),
            "active",
            "{} must be left dirty",
            d.display()
        );
    }
    let mut dirty_chunks = None;
    if bitmap {
        let (dirty, total, chunk) = bitmap_dirty(&devs[0]);
        eprintln!("bitmap after the crash: {dirty} of {total} chunks of {chunk} bytes dirty");
        assert!(
            dirty >= 1,
            "a write was acknowledged, its chunk must be dirty"
        );
        assert!(dirty < total, "the writes touched {span} bytes only");
        dirty_chunks = Some((dirty, chunk));
    }

    // Restart: the resync runs and ends.
    let before: u64 = devs.iter().map(|d| allocated(d)).sum();
    let t0 = Instant::now();
    let s = Server::start(dir.path(), "crash", &["--sync-speed-max", "0"], &devs);
    s.ctl_ok(&["wait", "crash"]);
    let secs = t0.elapsed().as_secs_f64();
    let d = s.detail();
    assert_eq!(d["state"], "clean", "{d}");
    assert_eq!(d["active_devices"], 2, "{d}");
    let grown = devs.iter().map(|d| allocated(d)).sum::<u64>() - before;
    eprintln!(
        "bitmap={bitmap}: resync took {secs:.2} s and allocated {} MiB on the members",
        grown >> 20
    );
    match dirty_chunks {
        // Only the dirty chunks were resynced: what the resync wrote fits in them (plus a
        // little metadata), far below the array's size.
        Some((dirty, chunk)) => assert!(
            grown <= dirty * chunk + (1 << 20),
            "the resync wrote {grown} bytes; the bitmap had {dirty} dirty chunks of {chunk}"
        ),
        // Without a bitmap the whole array is resynced (the holes outside the written span
        // are written on the target member).
        None => assert!(
            grown >= (bytes - span) / 2,
            "a resync without bitmap must walk the whole array: {grown} bytes written"
        ),
    }

    // Every acknowledged write reads back (or the write in flight at the crash, for its block).
    let mut c = NbdClient::connect(&s.socket).unwrap();
    for (&off, &generation) in &ledger.acked {
        let got = c.request(CMD_READ, 0, off, BLOCK as u32, &[]).unwrap();
        let newer = ledger
            .in_flight
            .is_some_and(|(o, g)| o == off && got == pattern(off, g));
        assert!(
            got == pattern(off, generation) || newer,
            "block at {off}: acknowledged generation {generation} does not read back"
        );
    }
    drop(c);
    s.stop();
    assert_clean(&devs, bitmap, "after the resync");
    assert!(
        data_areas_equal(&devs[0], &devs[1], bytes),
        "members differ after the resync"
    );
    (secs, grown)
}

#[test]
fn sigkill_while_writing_with_bitmap_resyncs_only_dirty_chunks() {
    // 1 GiB members: 16 bitmap chunks of 64 MiB; the writes stay in the first 8 MiB.
    crash_round(true, 1024, 8 << 20);
}

#[test]
fn sigkill_while_writing_without_bitmap_resyncs_everything() {
    crash_round(false, 256, 8 << 20);
}

/// Writes one block with FUA through `c`: its bit is then on every member of `devs`.
fn write_a_dirty_chunk(c: &mut NbdClient, devs: &[PathBuf]) {
    c.request(
        CMD_WRITE,
        FLAG_FUA,
        1 << 20,
        BLOCK as u32,
        &pattern(1 << 20, 1),
    )
    .unwrap();
    for d in devs {
        assert!(bitmap_dirty(d).0 > 0, "{}: no dirty bit", d.display());
    }
}

/// Waits until no member's bitmap has a dirty bit, at most 4.5 s (a bound on a timer, not on
/// speed); `period` names the daemon's period in the message. Returns how long it took.
fn bits_cleared_within_bound(devs: &[PathBuf], period: &str) -> Duration {
    let t0 = Instant::now();
    while devs.iter().any(|d| bitmap_dirty(d).0 > 0) {
        assert!(
            t0.elapsed() < Duration::from_millis(4500),
            "the bits are still set {:.1} s after the last write with a {period} daemon period",
            t0.elapsed().as_secs_f64()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

/// The bitmap daemon's period is the bitmap header's `daemon_sleep` (`raid1 create --delay`,
/// mdadm's `--delay`), as in md: with 1 s, a chunk's bit is cleared on disk one or two periods
/// after its last write (1.0 s here). With the 5 s default it is not cleared before 5 s, so a
/// run that ignored the header fails the 4.5 s limit.
#[test]
fn the_bitmap_daemon_sweeps_at_the_period_in_the_bitmap_header() {
    let dir = tempfile::tempdir().unwrap();
    let devs = sparse_images(dir.path(), "m", 2, 64 << 20);
    create_mirror("sweep", &devs, &["-b", "internal", "--delay=1"]);
    let s = Server::start(dir.path(), "sweep", &[], &devs);
    let mut c = NbdClient::connect(&s.socket).unwrap();
    write_a_dirty_chunk(&mut c, &devs);
    let took = bits_cleared_within_bound(&devs, "1 s");
    eprintln!(
        "bits cleared {:.1} s after the write (daemon period 1 s)",
        took.as_secs_f64()
    );
    drop(c);
    s.stop();
}

/// The text of `mdadm --examine-bitmap` for image `p` (the oracle's reading of its bitmap
/// header; mdadm reads an internal bitmap through a block device, here a loop device).
fn mdadm_x(p: &Path) -> String {
    let dev = ok(Command::new("losetup").args(["-f", "--show"]).arg(p));
    let dev = dev.trim();
    let out = Command::new("mdadm")
        .arg("--examine-bitmap")
        .arg(dev)
        .output();
    ok(Command::new("losetup").args(["-d", dev]));
    String::from_utf8_lossy(&out.expect("mdadm runs").stdout).into_owned()
}

/// `raid1 grow NAME --delay SECONDS` on a running array (md's `bitmap/time_base`): a pass the
/// old 30 s period armed is brought forward, so a bit is cleared well before 30 s (4.5 s
/// here, a bound on a timer); the headers record whole seconds, at least 1, as mdadm reads
/// them. Refused, with nothing changed: a period of 0, a delay with `--bitmap none`, and a
/// delay for an array without a bitmap.
#[test]
fn a_delay_set_on_the_running_array_takes_effect_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let devs = sparse_images(dir.path(), "m", 2, 64 << 20);
    create_mirror("tb", &devs, &["-b", "internal", "--delay=30"]);
    let s = Server::start(dir.path(), "tb", &[], &devs);
    assert_eq!(s.detail()["bitmap_delay_seconds"], 30.0);
    let mut c = NbdClient::connect(&s.socket).unwrap();
    write_a_dirty_chunk(&mut c, &devs);
    for (args, says) in [
        (&["--delay", "0"][..], "delay \"0\": must be more than 0"),
        (
            &["--delay", "soon"],
            "delay \"soon\": expected a number of seconds",
        ),
        (
            &["--bitmap", "none", "--delay", "3"],
            "a delay goes with --bitmap internal, not none",
        ),
    ] {
        let out = s.ctl(&[&["grow", "tb"][..], args].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
    assert_eq!(s.detail()["bitmap_delay_seconds"], 30.0);
    assert_eq!(s.detail()["consistency_policy"], "bitmap");
    let out = s.ctl(&["grow", "tb", "--delay", "0.1"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("tb: bitmap daemon every 0.1 s"),
        "{said}"
    );
    assert_eq!(s.detail()["bitmap_delay_seconds"], 0.1);
    bits_cleared_within_bound(&devs, "0.1 s");
    drop(c);
    s.stop();
    for d in &devs {
        let x = mdadm_x(d);
        assert!(x.contains("Daemon : 1s flush period"), "{x}");
    }
    let s = Server::start(dir.path(), "tb", &[], &devs);
    assert_eq!(s.detail()["bitmap_delay_seconds"], 1.0);
    s.ctl_ok(&["grow", "tb", "--delay", "7"]);
    s.stop();
    for d in &devs {
        let x = mdadm_x(d);
        assert!(x.contains("Daemon : 7s flush period"), "{x}");
    }

    let plain = sparse_images(dir.path(), "p", 2, 16 << 20);
    create_mirror("nb", &plain, &["-b", "none"]);
    let s = Server::start(dir.path(), "nb", &[], &plain);
    let out = s.ctl(&["grow", "nb", "--delay", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("the array has no bitmap"),
        "{err}"
    );
    assert!(s.detail()["bitmap_delay_seconds"].is_null());
    // Added with a delay (mdadm's --grow --bitmap=internal --delay=N).
    s.ctl_ok(&["grow", "nb", "--bitmap", "internal", "--delay", "9"]);
    assert_eq!(s.detail()["bitmap_delay_seconds"], 9.0);
    s.stop();
    let x = mdadm_x(&plain[0]);
    assert!(x.contains("Daemon : 9s flush period"), "{x}");
}
