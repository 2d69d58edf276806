//! The array as a real block device on a real kernel: `raid1 run --ublk` (`/dev/ublkbN`) and the
//! kernel's NBD client (`nbd-client` on a `raid1 run` export, `/dev/nbdN`), in one boot of the
//! linux-md oracle (`../shared/linux-md` beside the repository) built with a Debian 12 6.12
//! kernel by `scripts/linux-guest.sh` (Debian 12's own 6.1 kernel has no ublk).
//!
//! In the guest (busybox, with raid1 built static for it, and the host's mkfs.ext4, e2fsck and
//! nbd-client copied in with their libraries):
//!
//! * ublk: create, `run --ublk --ublk-id 3`, mkfs.ext4, mount, a writer that syncs each file and
//!   logs it as acknowledged; a member failed, removed and replaced by a spare; `kill -9` of
//!   raid1 under the writer and `run --ublk --ublk-id 3` again on the same members: the writer
//!   sees no error (its I/O waited), the rebuild ends, the file system unmounts, `e2fsck -fn` is
//!   clean and every acknowledged file is there; `raid1 stop` removes `/dev/ublkb3`. While the
//!   device waits for its server, another array (of another size) is refused it.
//! * nbd-client: the same array shape over `/dev/nbd0`, with the settings docs/CLI.md gives
//!   (`-b 4096 -t 30`). The kernel's NBD client does not ride out a killed server (nbd-client
//!   3.24 leaves no process to reconnect with netlink, and the kernel fails the I/O in flight):
//!   what runs instead is a clean restart under the mounted file system's owner: unmount,
//!   disconnect, `kill -9` raid1, run again, reconnect, and the data and `e2fsck -fn` are checked.
//!
//! A missing oracle, tool or package is a failure, as in the other oracle tests.

#[path = "run_common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{ok, text};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn guest_script() -> Command {
    let p = repo().join("scripts/linux-guest.sh");
    let oracle = repo().join("../shared/linux-md/run");
    assert!(
        oracle.exists(),
        "the linux-md oracle is missing at {}",
        oracle.display()
    );
    let mut c = Command::new("bash");
    c.arg(p);
    c
}

/// raid1 built static (glibc, `crt-static`) for the busybox guest, in this build's target
/// directory.
fn static_raid1() -> PathBuf {
    let host_bin = Path::new(env!("CARGO_BIN_EXE_raid1"));
    let target_dir = host_bin
        .parent()
        .and_then(Path::parent)
        .expect("the target directory");
    let triple = "x86_64-unknown-linux-gnu";
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    ok(Command::new(cargo)
        .current_dir(repo())
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "raid1-cli",
            "--target",
            triple,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("RUSTFLAGS")
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        ));
    target_dir.join(triple).join("release/raid1")
}

const SCRIPT: &str = r#"
export PATH=/mnt/host/tools/bin:/mnt/host:$PATH RAID1_RUN_DIR=/run/raid1
modprobe -a ublk_drv nbd ext4 || { echo "FAIL modprobe"; exit 1; }
fail() { echo "FAIL $*"; dmesg | tail -20; exit 1; }
mkdir -p /m

# writer: files, each synced, then logged as acknowledged, until /tmp/stop; errors counted
writer() {
  : > /tmp/acked; rm -f /tmp/stop /tmp/writer_errors; errs=0; i=0
  while [ ! -e /tmp/stop ]; do
    if echo "file $i" > /m/f$i && sync /m/f$i; then echo $i >> /tmp/acked; else errs=$((errs+1)); fi
    i=$((i+1))
  done
  echo $errs > /tmp/writer_errors
}
stop_writer() { sleep $2; touch /tmp/stop; wait $1; }
# every acknowledged file present with its contents
check_acked() {
  n=0; bad=0
  for i in $(cat /tmp/acked); do n=$((n+1)); [ "$(cat /m/f$i)" = "file $i" ] || bad=$((bad+1)); done
  echo "RESULT $1 acked=$n missing=$bad writer_errors=$(cat /tmp/writer_errors)"
}
fsck_clean() {
  e2fsck -fn $1 > /tmp/fsck 2>&1 || { cat /tmp/fsck; fail "e2fsck -fn $1"; }
  echo "RESULT $2 fsck=clean"
}
kill_raid1() {
  p=$(cat /tmp/pid.$1); kill -9 $p
  while kill -0 $p 2>/dev/null; do sleep 0.1; done
}
pid_of() { raid1 detail --json $1 | sed 's/.*"pid":\([0-9]*\).*/\1/' > /tmp/pid.$1; }

# ---- ublk
raid1 create --level 1 --raid-devices 2 --name u --assume-clean /dev/vda /dev/vdb > /dev/null 2>&1 || fail "create u"
raid1 run --daemon --ublk --ublk-id 3 /dev/vda /dev/vdb || fail "run --ublk"
[ -b /dev/ublkb3 ] || fail "no /dev/ublkb3"
# (output to files: grep -q would close the pipe early)
raid1 detail u > /tmp/detail; grep -q "Block Device : /dev/ublkb3" /tmp/detail || fail "detail does not show /dev/ublkb3"
raid1 status > /tmp/status; grep -q "block device: /dev/ublkb3" /tmp/status || fail "status does not show /dev/ublkb3"
echo "RESULT ublk size=$(cat /sys/block/ublkb3/size) lbs=$(cat /sys/block/ublkb3/queue/logical_block_size) cache=$(cat /sys/block/ublkb3/queue/write_cache | tr ' ' _) fua=$(cat /sys/block/ublkb3/queue/fua) discard=$(cat /sys/block/ublkb3/queue/discard_granularity)"
mkfs.ext4 -q /dev/ublkb3 || fail "mkfs.ext4 /dev/ublkb3"
mount -t ext4 /dev/ublkb3 /m || fail "mount /dev/ublkb3"
pid_of u
writer &
w=$!
sleep 2
raid1 fail u /dev/vdb && raid1 remove u /dev/vdb && raid1 add u /dev/vdc || fail "replace /dev/vdb"
sleep 1
kill_raid1 u
echo "RESULT ublk killed_after=$(wc -l < /tmp/acked)"
# another array (of another size) cannot take the device over
raid1 create --level 1 --raid-devices 2 --name n --assume-clean /dev/vdd /dev/vde > /dev/null 2>&1 || fail "create n"
raid1 run --daemon --ublk --ublk-id 3 /dev/vdd /dev/vde > /tmp/other 2>&1 && fail "array n took /dev/ublkb3 over"
grep -q "serves another array" /tmp/other || { cat /tmp/other; fail "no reason given for refusing n"; }
echo "RESULT ublk other_array=refused"
raid1 run --daemon --ublk --ublk-id 3 /dev/vda /dev/vdc || fail "run --ublk again"
stop_writer $w 2
raid1 wait u || fail "wait u"
raid1 detail u > /tmp/detail
grep -qE "State : (clean|active) $" /tmp/detail || { cat /tmp/detail; fail "u degraded after the rebuild"; }
umount /m || fail "umount /dev/ublkb3"
fsck_clean /dev/ublkb3 ublk
mount -t ext4 -o ro /dev/ublkb3 /m && check_acked ublk && umount /m
raid1 stop u || fail "stop u"
[ -e /dev/ublkb3 ] && fail "/dev/ublkb3 still there after stop"
echo "RESULT ublk removed=yes"

# ---- nbd-client
raid1 run --daemon /dev/vdd /dev/vde || fail "run n"
raid1 wait n || fail "wait n"
nbd-client -unix /run/raid1/n.nbd /dev/nbd0 -N n -b 4096 -t 30 > /dev/null || fail "nbd-client"
mkfs.ext4 -q /dev/nbd0 || fail "mkfs.ext4 /dev/nbd0"
mount -t ext4 /dev/nbd0 /m || fail "mount /dev/nbd0"
pid_of n
writer &
w=$!
sleep 2
raid1 fail n /dev/vde && raid1 remove n /dev/vde && raid1 add n /dev/vdf || fail "replace /dev/vde"
stop_writer $w 2
umount /m || fail "umount /dev/nbd0"
nbd-client -d /dev/nbd0 > /dev/null
kill_raid1 n
raid1 run --daemon /dev/vdd /dev/vdf || fail "run n again"
raid1 wait n || fail "wait n"
nbd-client -unix /run/raid1/n.nbd /dev/nbd0 -N n -b 4096 -t 30 > /dev/null || fail "nbd-client again"
fsck_clean /dev/nbd0 nbd
mount -t ext4 -o ro /dev/nbd0 /m && check_acked nbd && umount /m
nbd-client -d /dev/nbd0 > /dev/null
raid1 stop n || fail "stop n"
echo "RESULT done"
"#;

#[test]
fn ublk_and_nbd_client_on_a_real_kernel() {
    let t0 = Instant::now();
    ok(guest_script().arg("setup"));
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::copy(static_raid1(), share.join("raid1")).unwrap();
    ok(guest_script().arg("tools").arg(share.join("tools")).args([
        "mkfs.ext4",
        "e2fsck",
        "nbd-client",
    ]));
    let mut images = Vec::new();
    for i in 0..6 {
        let p = dir.path().join(format!("m{i}.img"));
        std::fs::File::create(&p)
            .unwrap()
            .set_len(if i < 3 { 96 << 20 } else { 80 << 20 })
            .unwrap();
        images.push(p);
    }
    let t1 = Instant::now();
    let runner = || {
        let mut c = guest_script();
        c.arg("run")
            .args(["--timeout", "400", "--share"])
            .arg(&share);
        c
    };
    let g = raid1_testkit::guest::boot(&runner, &images, SCRIPT);
    let out = g.output;
    let log = g.stdout;
    eprintln!(
        "guest: {:.1} s (with set-up and the static build: {:.1} s)\n{log}",
        t1.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "the guest failed ({})\n--- guest output ---\n{log}\n--- stderr ---\n{}",
        out.status,
        text(&out.stderr)
    );
    let result = |prefix: &str| -> String {
        log.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line `{prefix}` in the guest output:\n{log}"))
            .to_string()
    };
    // 96 MiB images, data from sector 2048 less the bitmap: the size the array reports.
    let ublk = result("RESULT ublk size=");
    assert!(
        ublk.contains("lbs=512")
            && ublk.contains("cache=write_back")
            && ublk.contains("fua=1")
            && ublk.contains("discard=4096"),
        "{ublk}"
    );
    for kind in ["ublk", "nbd"] {
        assert_eq!(
            result(&format!("RESULT {kind} fsck=")),
            format!("RESULT {kind} fsck=clean")
        );
        let acked = result(&format!("RESULT {kind} acked="));
        assert!(
            acked.ends_with("missing=0 writer_errors=0"),
            "{kind}: {acked}"
        );
        assert!(
            !acked.contains("acked=0 "),
            "{kind}: nothing was written: {acked}"
        );
    }
    // Files were acknowledged before the kill and after the restart.
    let number = |line: &str, key: &str| -> u64 {
        let v = line.split(key).nth(1).unwrap_or("");
        let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or(0)
    };
    let killed = number(&result("RESULT ublk killed_after="), "killed_after=");
    let acked = number(&result("RESULT ublk acked="), "acked=");
    assert!(
        killed > 0 && acked > killed,
        "ublk: {killed} files acknowledged before the kill, {acked} in all: the writer did not          write on both sides of the restart"
    );
    result("RESULT ublk removed=yes");
    result("RESULT ublk other_array=refused");
    result("RESULT done");
}
