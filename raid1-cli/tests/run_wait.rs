//! `raid1 wait` shows the running resync: plain lines (percent, KiB, speed, time left) when
//! stdout is not a terminal, an indicatif progress bar on a terminal (a pseudo-terminal from
//! `script`); it returns 0 once the resync is done.

use std::process::Command;

#[path = "run_common.rs"]
mod common;

use common::{RAID1, Server, ok, sparse_images, tool};

/// An array made by `raid1 create` without --assume-clean (its first start resyncs),
/// served with the resync limited to `kib_per_sec`.
fn resyncing(dir: &std::path::Path, name: &str, kib_per_sec: &str) -> Server {
    let imgs = sparse_images(dir, name, 2, 128 << 20);
    ok(Command::new(RAID1)
        .args(["create", "-l1", "-n2", "-b", "none", "-N", name])
        .args(&imgs));
    Server::start(dir, name, &["--sync-speed-max", kib_per_sec], &imgs)
}

#[test]
fn wait_prints_progress_lines_when_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let s = resyncing(dir.path(), "wl", "25000");
    assert_eq!(s.detail()["sync_action"], "resync");
    let out = tool(
        Command::new(RAID1)
            .env("RAID1_RUN_DIR", &s.run_dir)
            .args(["wait", "wl"]),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(out.status.success(), "{text}");
    let percents: Vec<u64> = text
        .lines()
        .map(|l| {
            assert!(l.starts_with("wl: resync "), "{l}");
            l["wl: resync ".len()..]
                .split('%')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(percents.len() >= 3, "a 5 s resync gives lines: {text}");
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{text}");
    assert!(
        text.lines().skip(1).any(|l| l.contains("MiB/s")),
        "speed: {text}"
    );
    assert!(s.detail()["sync_action"].is_null());
    s.stop();
}

#[test]
fn wait_draws_a_progress_bar_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let s = resyncing(dir.path(), "wt", "40000");
    let cmd = format!(
        "RAID1_RUN_DIR={} {RAID1} wait wt",
        s.run_dir.to_str().unwrap()
    );
    // `script` runs the command on a pseudo-terminal and copies what it draws.
    let out = tool(Command::new("script").args(["-qec", &cmd, "/dev/null"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("wt: resync [") && text.contains("ETA") && text.contains("%"),
        "no progress bar drawn: {text:?}"
    );
    assert!(s.detail()["sync_action"].is_null());
    s.stop();
}
