//! How far `raid1 run` trusts on-disk metadata, against the real kernel (issue 9 item 2).
//!
//! Member images made by `raid1 create` are edited on purpose with raid1-superblock's parse +
//! serialize (checksums stay right): a stale bitmap, bitmap events behind the superblock's, a
//! member whose bitmap cannot be loaded (bad magic on a non-fresh or on the fresh member, a
//! `bitmap_offset` pointing into the data area), `max_dev` not covering a member's
//! `dev_number`, an absurd bitmap `sync_size`. Before the edits the two mirrors' data areas are
//! made to differ at one place, so "was there a resync" can be read off the images afterwards.
//!
//! Every case is run by `raid1 run` on one copy (run, wait, one write, stop) and by Linux on
//! another copy (one linux-md guest boot for every case: `mdadm --assemble`, `/proc/mdstat`,
//! `sync_action`, wait, the same write, stop). Then the outcome is compared: started or
//! refused, active devices, whether the mirrors were resynced (identical data areas), and what
//! lands on disk (the bitmap header every member holds: magic, state, `sync_size`; every
//! member's `max_dev` and the roles it records; `bitmap_offset`). Cells print
//! `CELL trust <case> <ok|FAIL> <seconds>`; docs/INTEROP.md's table comes from them.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use raid1_superblock::{BitmapState, BitmapSuperblock, DevRole, Superblock};

#[path = "run_common.rs"]
mod common;

use common::{RAID1, ok, text, tool, vd_name};

const MIB: u64 = 1 << 20;
/// Where the mirrors are made to differ (array byte offset) and how much.
const DIFF_AT: u64 = MIB;
const DIFF_LEN: usize = 65536;
/// Where both runs write once (to make Linux write its superblocks and bitmap).
const WRITE_AT: u64 = 8 * MIB;

fn oracle() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/linux-md/run");
    assert!(
        p.exists(),
        "the linux-md oracle is missing at {}",
        p.display()
    );
    p
}

/// The superblock of an image (byte offset, parsed), probing 1.2, 1.1, 1.0 placements.
fn find_superblock(dev: &Path) -> (u64, Superblock) {
    let f = std::fs::File::open(dev).unwrap();
    let len = f.metadata().unwrap().len();
    let end10 = ((len / 512 - 16) & !7) * 512;
    for off in [4096u64, 0, end10] {
        let mut page = vec![0u8; 4096];
        f.read_exact_at(&mut page, off).unwrap();
        if let Ok(sb) = Superblock::parse_for_examine(&page) {
            if sb.super_offset * 512 == off {
                return (off, sb);
            }
        }
    }
    panic!("{}: no superblock", dev.display())
}

/// Rewrites the superblock of `dev` after `edit` (checksum recomputed).
fn edit_sb(dev: &Path, edit: impl FnOnce(&mut Superblock)) {
    let (off, mut sb) = find_superblock(dev);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .unwrap();
    let mut page = vec![0u8; 4096];
    f.read_exact_at(&mut page, off).unwrap();
    edit(&mut sb);
    sb.update_checksum().unwrap();
    sb.serialize(&mut page).unwrap();
    f.write_all_at(&page, off).unwrap();
}

/// Byte offset of the bitmap of `dev` (by its own superblock).
fn bitmap_at(dev: &Path) -> u64 {
    find_superblock(dev).1.bitmap_sector().unwrap() * 512
}

/// Rewrites the bitmap header of `dev` after `edit`.
fn edit_bitmap(dev: &Path, edit: impl FnOnce(&mut BitmapSuperblock)) {
    let at = bitmap_at(dev);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .unwrap();
    let mut head = vec![0u8; 256];
    f.read_exact_at(&mut head, at).unwrap();
    let mut bm = BitmapSuperblock::parse_for_examine(&head).unwrap();
    edit(&mut bm);
    bm.serialize(&mut head).unwrap();
    f.write_all_at(&head, at).unwrap();
}

/// Clears every bit of the bitmap of `dev` (its first 4 KiB after the header).
fn clear_bits(dev: &Path) {
    let at = bitmap_at(dev) + 256;
    let f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    f.write_all_at(&[0u8; 4096 - 256], at).unwrap();
}

/// Marks both superblocks of an array unclean from sector 0 (a crash) at `events`.
fn dirty(devs: &[PathBuf], events: u64) {
    for d in devs {
        edit_sb(d, |sb| {
            sb.resync_offset = 0;
            sb.events = events;
        });
        edit_bitmap(d, |bm| bm.events = events);
    }
}

fn data_offset(dev: &Path) -> u64 {
    find_superblock(dev).1.data_offset * 512
}

fn read_data(dev: &Path, at: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(dev).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, data_offset(dev) + at).unwrap();
    b
}

fn mirrors_equal(devs: &[PathBuf]) -> bool {
    read_data(&devs[0], DIFF_AT, DIFF_LEN) == read_data(&devs[1], DIFF_AT, DIFF_LEN)
}

/// An edit of a fresh array's member images.
type Edit = fn(&[PathBuf]);

/// One hostile case: a name, what it does to a fresh 2-member 1.2 array with a bitmap.
struct Case {
    name: &'static str,
    what: &'static str,
    edit: Edit,
    /// Start even if degraded (`raid1 run --degraded-ok`, `mdadm --assemble --run`).
    run: bool,
    /// Metadata version of the array.
    metadata: &'static str,
    /// Where raid1 deliberately leaves other metadata than Linux 6.1: why, and what raid1
    /// must leave on every member instead (a substring of [`on_disk`]'s words).
    differs: Option<(&'static str, &'static str)>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "control-dirty",
            what: "unclean (resync_offset 0), bitmap clean and current: bitmap-guided, nothing to do",
            edit: |d| {
                dirty(d, 4);
                d.iter().for_each(|p| clear_bits(p));
            },
            run: false,
            metadata: "1.2",
            differs: None,
        },
        Case {
            name: "stale-dirty",
            what: "metadata 1.0, unclean, bitmap clean but marked BITMAP_STALE",
            edit: |d| {
                dirty(d, 4);
                for p in d {
                    clear_bits(p);
                    edit_bitmap(p, |bm| bm.state.insert(BitmapState::STALE));
                }
            },
            run: false,
            metadata: "1.0",
            differs: None,
        },
        Case {
            name: "stale-clean",
            what: "clean, bitmap marked BITMAP_STALE",
            edit: |d| {
                for p in d {
                    clear_bits(p);
                    edit_bitmap(p, |bm| bm.state.insert(BitmapState::STALE));
                }
            },
            run: false,
            metadata: "1.2",
            differs: None,
        },
        Case {
            name: "behind-dirty",
            what: "unclean, bitmap events (2) behind the superblocks' (4)",
            edit: |d| {
                dirty(d, 4);
                for p in d {
                    clear_bits(p);
                    edit_bitmap(p, |bm| bm.events = 2);
                }
            },
            run: false,
            metadata: "1.2",
            differs: None,
        },
        Case {
            name: "badmagic-other",
            what: "member 1 (one event behind, in sync) has a bitmap with a bad magic",
            edit: |d| {
                edit_sb(&d[0], |sb| sb.events = 5);
                edit_bitmap(&d[0], |bm| bm.events = 5);
                edit_sb(&d[1], |sb| sb.events = 4);
                let at = bitmap_at(&d[1]);
                let f = std::fs::OpenOptions::new().write(true).open(&d[1]).unwrap();
                f.write_all_at(b"garbage!", at).unwrap();
            },
            run: false,
            metadata: "1.2",
            differs: None,
        },
        Case {
            name: "badmagic-fresh",
            what: "member 0 (the freshest) has a bitmap with a bad magic",
            edit: |d| {
                edit_sb(&d[0], |sb| sb.events = 5);
                edit_sb(&d[1], |sb| sb.events = 4);
                edit_bitmap(&d[1], |bm| bm.events = 4);
                let at = bitmap_at(&d[0]);
                let f = std::fs::OpenOptions::new().write(true).open(&d[0]).unwrap();
                f.write_all_at(b"garbage!", at).unwrap();
            },
            run: false,
            metadata: "1.2",
            differs: None,
        },
        Case {
            name: "offset-other",
            what: "member 1 (one event behind) has bitmap_offset pointing into the data area",
            edit: |d| {
                edit_sb(&d[0], |sb| sb.events = 5);
                edit_bitmap(&d[0], |bm| bm.events = 5);
                edit_sb(&d[1], |sb| {
                    sb.events = 4;
                    sb.bitmap_offset = 4096;
                });
            },
            run: false,
            metadata: "1.2",
            differs: None,
        },
        Case {
            name: "maxdev-fresh",
            what: "member 0's max_dev is 1: its role table does not cover member 1",
            edit: |d| edit_sb(&d[0], |sb| sb.set_max_dev(1).unwrap()),
            run: false,
            metadata: "1.2",
            differs: None,
        },
        Case {
            name: "maxdev-fresh-behind",
            what: "the same, member 1 one event behind (its role must come from member 0's \
                   table, which misses it), started with --degraded-ok / --run",
            edit: fresh_table_misses_member_1_behind,
            run: true,
            metadata: "1.2",
            differs: None,
        },
        Case {
            name: "maxdev-fresh-norun",
            what: "the same, started without --degraded-ok / --run: member 0's table records \
                   no member 1, so the array was degraded at its last update and starts so",
            edit: fresh_table_misses_member_1_behind,
            run: false,
            metadata: "1.2",
            differs: None,
        },
        Case {
            name: "maxdev-own",
            what: "member 1's max_dev is 1: its own dev_number is not covered",
            edit: |d| edit_sb(&d[1], |sb| sb.set_max_dev(1).unwrap()),
            run: false,
            metadata: "1.2",
            differs: None,
        },
        Case {
            name: "maxdev-own-run",
            what: "the same, started degraded (--degraded-ok, mdadm --run)",
            edit: |d| edit_sb(&d[1], |sb| sb.set_max_dev(1).unwrap()),
            run: true,
            metadata: "1.2",
            differs: Some((
                "Linux recovers the spare into slot 1 but records that nowhere (md dropped its \
                 desc_nr): member 0 still says spare for it, member 1's max_dev still misses it, \
                 so the next assembly recovers it again; raid1 grows max_dev and records slot 1",
                "max_dev>=2:true roles=0,1 ",
            )),
        },
        Case {
            name: "syncsize-huge",
            what: "bitmap sync_size 2^40 sectors on both members",
            edit: |d| {
                for p in d {
                    edit_bitmap(p, |bm| bm.sync_size = 1 << 40);
                }
            },
            run: false,
            metadata: "1.2",
            differs: None,
        },
        Case {
            name: "syncsize-small",
            what: "metadata 1.0, bitmap sync_size 8 sectors on both members",
            edit: |d| {
                for p in d {
                    edit_bitmap(p, |bm| bm.sync_size = 8);
                }
            },
            run: false,
            metadata: "1.0",
            differs: None,
        },
    ]
}

/// A fresh array of two 16 MiB members whose mirrors differ at DIFF_AT.
fn make(dir: &Path, tag: &str) -> Vec<PathBuf> {
    make_with(dir, tag, "1.2")
}

/// [`make`] with metadata `version` (1.0, 1.1, 1.2).
fn make_with(dir: &Path, tag: &str, version: &str) -> Vec<PathBuf> {
    let devs: Vec<PathBuf> = (0..2)
        .map(|i| {
            let p = dir.join(format!("{tag}-{i}.img"));
            std::fs::File::create(&p)
                .unwrap()
                .set_len(16 * MIB)
                .unwrap();
            p
        })
        .collect();
    ok(Command::new(RAID1)
        .args([
            "create",
            "-l",
            "1",
            "-n",
            "2",
            "--assume-clean",
            "-e",
            version,
        ])
        .args(["--homehost", "mdoracle", "--name", tag])
        .args(&devs));
    for (d, fill) in devs.iter().zip([0xa1u8, 0xb2]) {
        let at = data_offset(d) + DIFF_AT;
        let f = std::fs::OpenOptions::new().write(true).open(d).unwrap();
        f.write_all_at(&vec![fill; DIFF_LEN], at).unwrap();
    }
    devs
}

/// The outcome of one run, raid1's or Linux's.
#[derive(Debug, Default, Clone, PartialEq)]
struct Outcome {
    started: bool,
    /// The stop exited 0 (Linux: `mdadm --stop` after a start).
    stopped: bool,
    active: u64,
    resynced: bool,
    /// Per member: what its metadata says after the stop.
    disk: Vec<String>,
}

/// What lands on disk, in words: bitmap header (magic, stale, sync_size), max_dev covering
/// both members and their roles, bitmap_offset.
fn on_disk(devs: &[PathBuf]) -> Vec<String> {
    devs.iter()
        .map(|d| {
            let (_, sb) = find_superblock(d);
            let roles: Vec<String> = (0..2)
                .map(|i| match sb.role(i) {
                    None => "-".into(),
                    Some(DevRole::Active(n)) => n.to_string(),
                    Some(r) => format!("{:x}", r.to_raw()),
                })
                .collect();
            let bm = match sb.bitmap_sector() {
                None => "no bitmap".to_string(),
                Some(s) => {
                    let f = std::fs::File::open(d).unwrap();
                    let mut h = vec![0u8; 256];
                    f.read_exact_at(&mut h, s * 512).unwrap();
                    match BitmapSuperblock::parse_for_examine(&h) {
                        Err(e) => format!("bitmap unreadable ({e})"),
                        Ok(b) => format!(
                            "bitmap ok, stale={}, sync_size={}",
                            b.state.contains(BitmapState::STALE),
                            b.sync_size
                        ),
                    }
                }
            };
            format!(
                "dev={} max_dev>=2:{} roles={} bitmap_offset={} {bm}",
                sb.dev_number,
                sb.max_dev >= 2,
                roles.join(","),
                sb.bitmap_offset
            )
        })
        .collect()
}

fn qemu_io(socket: &Path, cmd: &str) {
    let uri = format!("nbd+unix:///?socket={}", socket.display());
    let out = ok(Command::new("qemu-io").args(["-f", "raw", &uri, "-c", cmd]));
    assert!(!out.contains("failed"), "qemu-io {cmd}: {out}");
}

/// raid1's run of a case: start (or its refusal), wait, one write, stop.
fn raid1_run(dir: &Path, name: &str, devs: &[PathBuf], run: bool, log: &mut String) -> Outcome {
    let before: Vec<Vec<u8>> = devs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let run_dir = dir.join("rd");
    let socket = dir.join(format!("{name}.nbd"));
    let mut child = Command::new(RAID1)
        .env("RAID1_RUN_DIR", &run_dir)
        .args(["run", "--sync-speed-max", "0", "--name", name, "--nbd"])
        .arg(format!("unix:{}", socket.display()))
        .args(run.then_some("--degraded-ok"))
        .args(devs)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ctl = run_dir.join(format!("{name}.sock"));
    let t0 = Instant::now();
    while UnixStream::connect(&ctl).is_err() || UnixStream::connect(&socket).is_err() {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let err = text(&out.stderr);
            log.push_str(&format!("{name}: raid1 run exited {st}: {err}"));
            assert_eq!(st.code(), Some(2), "{name}: refusal exit status: {err}");
            for (d, b) in devs.iter().zip(&before) {
                assert!(
                    std::fs::read(d).unwrap() == *b,
                    "{name}: {} was written by a refused start",
                    d.display()
                );
            }
            return Outcome {
                disk: on_disk(devs),
                ..Outcome::default()
            };
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{name}: not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let raid1 = |args: &[&str]| {
        tool(
            Command::new(RAID1)
                .env("RAID1_RUN_DIR", &run_dir)
                .args(args),
        )
    };
    let w = raid1(&["wait", name]);
    assert!(w.status.success(), "{name}: wait: {}", text(&w.stderr));
    qemu_io(&socket, &format!("write -P 0 {WRITE_AT} 65536"));
    let d = raid1(&["detail", name, "--json"]);
    let detail: serde_json::Value = serde_json::from_slice(&d.stdout).unwrap();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    log.push_str(&format!("{name}: raid1 run ({}): {err}", out.status));
    Outcome {
        started: true,
        stopped: out.status.success(),
        active: detail["active_devices"].as_u64().unwrap(),
        resynced: mirrors_equal(devs),
        disk: on_disk(devs),
    }
}

/// The guest script for every case: md0 is case 0 on vda/vdb, md1 case 1 on vdc/vdd, ...
/// `maxdev-fresh-behind`'s edit: member 0's role table (`max_dev` 1) misses member 1, which
/// is one event behind.
fn fresh_table_misses_member_1_behind(d: &[PathBuf]) {
    edit_sb(&d[0], |sb| {
        sb.set_max_dev(1).unwrap();
        sb.events = 5;
    });
    edit_bitmap(&d[0], |bm| bm.events = 5);
    edit_sb(&d[1], |sb| sb.events = 4);
}

fn guest_script(runs: &[bool]) -> String {
    let mut s = String::from(
        "line() { echo \"R $*\"; }\n\
         echo 100000 > /proc/sys/dev/raid/speed_limit_max\n",
    );
    for (i, run) in runs.iter().enumerate() {
        let run = if *run { " --run" } else { "" };
        let a = vd_name(2 * i);
        let b = vd_name(2 * i + 1);
        s.push_str(&format!(
            "echo \"== md{i}\"\n\
             mdadm --assemble{run} /dev/md{i} {a} {b} 2>&1; line md{i} rc=$?\n\
             if [ -e /sys/block/md{i}/md/sync_action ] && grep -q '^md{i} : active' /proc/mdstat; then\n\
               grep -A3 '^md{i}' /proc/mdstat\n\
               line md{i} started=1 action=$(cat /sys/block/md{i}/md/sync_action)\n\
               mdadm --wait /dev/md{i}\n\
               dd if=/dev/zero of=/dev/md{i} bs=65536 count=1 seek={seek} conv=fsync 2>/dev/null\n\
               line md{i} active=$(mdadm --detail /dev/md{i} | sed -n 's/.*Active Devices : //p')\n\
               mdadm --examine {a} {b} | grep -E 'Events|State|Role|Internal'\n\
               mdadm --stop /dev/md{i}\n\
             else\n\
               line md{i} started=0\n\
               mdadm --stop /dev/md{i} 2>/dev/null\n\
             fi\n",
            seek = WRITE_AT / 65536,
        ));
    }
    s.push_str("dmesg | grep -E 'md[0-9]+|bitmap' | grep -v 'md: bind'\n");
    s
}

#[test]
fn trusts_metadata_as_linux() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = cases();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut log = String::new();
    let mut secs = BTreeMap::new();
    for c in &cases {
        let t0 = Instant::now();
        let a = make_with(d, &format!("{}-r", c.name), c.metadata);
        (c.edit)(&a);
        let b: Vec<PathBuf> = a
            .iter()
            .map(|p| {
                let q = p.with_file_name(
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .replace("-r-", "-l-"),
                );
                ok(Command::new("cp").arg("--sparse=always").arg(p).arg(&q));
                q
            })
            .collect();
        let out = raid1_run(d, &c.name.replace('-', ""), &a, c.run, &mut log);
        secs.insert(c.name, t0.elapsed().as_secs_f64());
        ours.push(out);
        theirs.push(b);
    }
    let images: Vec<PathBuf> = theirs.iter().flatten().cloned().collect();
    let script = guest_script(&cases.iter().map(|c| c.run).collect::<Vec<_>>());
    let t0 = Instant::now();
    let oracle = oracle();
    let runner = || {
        let mut c = Command::new(&oracle);
        c.args(["--timeout", "600"]);
        c
    };
    let g = raid1_testkit::guest::boot(&runner, &images, &script);
    let out = g.output;
    let boot = t0.elapsed().as_secs_f64();
    let glog = g.stdout;
    assert!(
        out.status.success(),
        "guest failed ({}) after {boot:.1} s\n{glog}\n{}",
        out.status,
        text(&out.stderr)
    );
    eprintln!("CELL boot trust ok {boot:.1}");
    let mut facts: BTreeMap<(String, String), String> = BTreeMap::new();
    for l in glog.lines() {
        if let Some(r) = l.strip_prefix("R ") {
            let mut w = r.split_whitespace();
            let md = w.next().unwrap_or("").to_string();
            for kv in w {
                if let Some((k, v)) = kv.split_once('=') {
                    facts.insert((md.clone(), k.to_string()), v.to_string());
                }
            }
        }
    }
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let md = format!("md{i}");
        let fact = |k: &str| facts.get(&(md.clone(), k.to_string())).cloned();
        let started = fact("started").as_deref() == Some("1");
        let linux = Outcome {
            started,
            stopped: started,
            active: if started {
                fact("active").and_then(|v| v.parse().ok()).unwrap_or(0)
            } else {
                0
            },
            resynced: started && mirrors_equal(&theirs[i]),
            disk: on_disk(&theirs[i]),
        };
        let mine = &ours[i];
        let same = match c.differs {
            None => *mine == linux,
            Some((why, want)) => {
                eprintln!("  on disk, raid1 differs from Linux on purpose: {why}");
                mine.disk.iter().all(|d| d.contains(want))
                    && Outcome {
                        disk: Vec::new(),
                        ..mine.clone()
                    } == Outcome {
                        disk: Vec::new(),
                        ..linux.clone()
                    }
            }
        };
        let verdict = if same { "ok" } else { "FAIL" };
        eprintln!(
            "CELL trust {} {verdict} {:.1}\n  {}\n  raid1: {mine:?}\n  linux: {linux:?}",
            c.name, secs[c.name], c.what
        );
        if !same {
            failures.push(format!("{}: raid1 {mine:?}\n   linux {linux:?}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "raid1 and Linux differ:\n{}\n--- raid1 ---\n{log}\n--- guest ---\n{glog}",
        failures.join("\n")
    );
}

/// Starts `raid1 run` on `devs`; `Err(stderr)` if it exits instead of serving.
fn start(
    dir: &Path,
    name: &str,
    devs: &[PathBuf],
    extra: &[&str],
) -> Result<std::process::Child, String> {
    let run_dir = dir.join("rd");
    let socket = dir.join(format!("{name}.nbd"));
    let mut child = Command::new(RAID1)
        .env("RAID1_RUN_DIR", &run_dir)
        .args(["run", "--name", name, "--nbd"])
        .arg(format!("unix:{}", socket.display()))
        .args(extra)
        .args(devs)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ctl = run_dir.join(format!("{name}.sock"));
    let t0 = Instant::now();
    while UnixStream::connect(&ctl).is_err() || UnixStream::connect(&socket).is_err() {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert_eq!(st.code(), Some(2), "{name}: {}", text(&out.stderr));
            return Err(text(&out.stderr));
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{name}: not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

fn ctl(dir: &Path, args: &[&str]) -> String {
    ok(Command::new(RAID1)
        .env("RAID1_RUN_DIR", dir.join("rd"))
        .args(args))
}

/// raid1 alone: a bitmap that cannot be loaded on the freshest member refuses the array with
/// a message that names the device and the field in words; nothing is written.
#[test]
fn bitmap_refusals_name_device_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: [(&str, Edit, &[&str]); 3] = [
        (
            "magic",
            |d| {
                edit_sb(&d[0], |sb| sb.events = 5);
                edit_sb(&d[1], |sb| sb.events = 4);
                let f = std::fs::OpenOptions::new().write(true).open(&d[0]).unwrap();
                f.write_all_at(b"garbage!", bitmap_at(&d[0])).unwrap();
            },
            &["bitmap.magic: bad magic", "freshest"],
        ),
        (
            "offset",
            |d| {
                edit_sb(&d[0], |sb| {
                    sb.events = 5;
                    sb.bitmap_offset = 4096;
                });
                edit_sb(&d[1], |sb| sb.events = 4);
            },
            &["bitmap_offset = 4096 sectors", "inside the data area"],
        ),
        (
            "chunk",
            |d| {
                edit_sb(&d[0], |sb| sb.events = 5);
                edit_sb(&d[1], |sb| sb.events = 4);
                edit_bitmap(&d[0], |bm| bm.chunksize = 3000);
            },
            &["bitmap.chunksize"],
        ),
    ];
    for (tag, edit, want) in cases {
        let devs = make(d, &format!("refuse-{tag}"));
        edit(&devs);
        let before: Vec<Vec<u8>> = devs.iter().map(|p| std::fs::read(p).unwrap()).collect();
        let err = start(d, tag, &devs, &[]).expect_err("refused");
        eprintln!("{tag}: {}", err.trim());
        assert!(err.contains(&devs[0].display().to_string()), "{tag}: {err}");
        for w in want {
            assert!(err.contains(w), "{tag}: want {w:?} in {err}");
        }
        assert!(
            !err.contains("Some(") && !err.contains(" {"),
            "{tag}: Debug text: {err}"
        );
        for (p, b) in devs.iter().zip(&before) {
            assert!(
                std::fs::read(p).unwrap() == *b,
                "{tag}: {} written",
                p.display()
            );
        }
    }
}

/// raid1 alone: the stale mark stays on disk until the clean stop (md clears it at start,
/// having written every page first); a crash before then repeats the full resync, and after
/// the clean stop the next start does not resync again.
#[test]
fn stale_mark_kept_until_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let devs = make(d, "stale");
    dirty(&devs, 4);
    for p in &devs {
        clear_bits(p);
        edit_bitmap(p, |bm| bm.state.insert(BitmapState::STALE));
    }
    // Throttled (200 KiB/s), killed while it resyncs, before the difference at 1 MiB.
    let mut child = start(d, "stale", &devs, &["--sync-speed-max", "200"]).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(err.contains("the bitmap is out of date"), "{err}");
    assert!(
        !mirrors_equal(&devs),
        "the resync reached the difference within 1 s"
    );
    for s in on_disk(&devs) {
        assert!(s.contains("stale=true"), "after the kill: {s}");
    }
    // Again, to the end: the whole array is resynced, the mark goes at the stop.
    let child = start(d, "stale", &devs, &["--sync-speed-max", "0"]).unwrap();
    ctl(d, &["wait", "stale"]);
    ctl(d, &["stop", "stale"]);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("the bitmap is out of date"));
    assert!(mirrors_equal(&devs), "no full resync");
    for s in on_disk(&devs) {
        assert!(s.contains("stale=false"), "after the clean stop: {s}");
    }
    // The next start trusts the bitmap again.
    let child = start(d, "stale", &devs, &[]).unwrap();
    ctl(d, &["stop", "stale"]);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        !text(&out.stderr).contains("out of date"),
        "{}",
        text(&out.stderr)
    );
}
