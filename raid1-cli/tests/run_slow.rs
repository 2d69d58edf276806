//! fio's NBD engine as the client of `raid1 run`, one member slowed down by nbdkit's delay
//! filter (10 ms per read and per write, attached as a file through nbdfuse): fio's own
//! verification (crc32c in every block) must pass, the slow member must stay in the array,
//! and after a stop and a restart the data fio wrote verifies again; the members' data areas
//! are identical. Every tool must be installed: a missing one fails the test.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[path = "run_common.rs"]
mod common;

use common::{FuseMember, RAID1, Server, data_areas_equal, examine_state, ok, sparse_images};

/// nbdkit serving an image file with the delay filter, and nbdfuse presenting it as a file.
fn slow_member(image: &Path, dir: &Path, delay: &str) -> FuseMember {
    let params = [format!("rdelay={delay}"), format!("wdelay={delay}")];
    FuseMember::start(image, dir, "slow.sock", "delay", &params)
}

/// Runs fio's NBD engine against `uri`; fails the test on any fio error (verification
/// included). Returns fio's JSON report.
fn fio(uri: &str, args: &[&str]) -> serde_json::Value {
    let out = ok(Command::new("fio")
        // No verify state file: fio would leave it in the working directory.
        .args([
            "--name=raid1",
            "--ioengine=nbd",
            "--output-format=json",
            "--verify_state_save=0",
        ])
        .arg(format!("--uri={uri}"))
        .args(args));
    let start = out.find('{').expect("fio JSON");
    let v: serde_json::Value = serde_json::from_str(&out[start..]).unwrap();
    let job = &v["jobs"][0];
    assert_eq!(job["error"], 0, "fio: {job}");
    v
}

#[test]
fn fio_verifies_through_raid1_with_a_delayed_member() {
    let t_all = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "m", 2, 128 << 20);
    ok(Command::new(RAID1)
        .args(["create", "-l1", "-n2", "--assume-clean", "-N", "slow"])
        .args(&imgs));
    let slow = slow_member(&imgs[1], dir.path(), "10ms");
    let devs = vec![imgs[0].clone(), slow.disk()];
    let s = Server::start(dir.path(), "slow", &[], &devs);
    let bytes = s.detail()["array_size_kib"].as_u64().unwrap() * 1024;

    // Mixed random reads and writes, every written block verified by fio.
    let t0 = Instant::now();
    let v = fio(
        &s.uri(),
        &[
            "--rw=randrw",
            "--bs=4k",
            "--size=8M",
            "--iodepth=16",
            "--verify=crc32c",
            "--verify_fatal=1",
            "--randseed=7",
        ],
    );
    let job = &v["jobs"][0];
    eprintln!(
        "randrw+verify with a 10 ms member: {:.1} s, write {} IOPS, read {} IOPS",
        t0.elapsed().as_secs_f64(),
        job["write"]["iops"].as_f64().unwrap_or(0.0) as u64,
        job["read"]["iops"].as_f64().unwrap_or(0.0) as u64
    );
    // Larger random writes across the array, verified after the write phase, with a
    // pattern that can be verified again after a restart.
    let writes = [
        "--rw=randwrite",
        "--bs=64k",
        "--size=48M",
        "--offset=16M",
        "--iodepth=8",
        "--verify=crc32c",
        "--verify_fatal=1",
        "--randseed=11",
    ];
    let t0 = Instant::now();
    fio(&s.uri(), &writes);
    eprintln!(
        "48 MiB of 64 KiB random writes + verify: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // The slow member is slow, not failed.
    let d = s.detail();
    assert_eq!(d["active_devices"], 2, "{d}");
    assert_eq!(d["failed_devices"], 0, "{d}");
    assert!(
        d["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["state"] == "active sync"),
        "{d}"
    );
    s.stop();
    for d in &imgs {
        assert_eq!(examine_state(d), "clean", "{}", d.display());
    }
    assert!(
        data_areas_equal(&imgs[0], &imgs[1], bytes),
        "members differ after fio through the slow member"
    );
    // Restart through the slow member again: what fio wrote verifies (reads may come from
    // either member).
    let s = Server::start(dir.path(), "slow", &[], &devs);
    let mut again = writes.to_vec();
    again.push("--verify_only");
    fio(&s.uri(), &again);
    s.stop();
    drop(slow);
    eprintln!("whole test: {:.1} s", t_all.elapsed().as_secs_f64());
}
