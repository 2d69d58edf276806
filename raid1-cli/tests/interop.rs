//! Interoperability with Linux md, both ways, proven against the real kernel (the linux-md
//! oracle, `../shared/linux-md/run` beside the repository: Debian's kernel and mdadm 4.2 under
//! qemu, KVM when usable, TCG otherwise).
//!
//! * `linux_to_raid1`: the 15 kernel-made fixtures (fixtures/) are served by `raid1 run` and by
//!   the kernel (one boot, every fixture assembled at once as md0, md1, ...): same members,
//!   roles, state and events (`raid1 detail --json` against `mdadm --detail`), same bytes
//!   (sha256 through NBD against `sha256sum /dev/mdN` in the guest and the fixture's
//!   manifest); recovery and resync resume and end with identical data areas.
//! * `raid1_to_linux`: arrays created and driven by raid1 (writes, fail/remove, add, re-add,
//!   grow, clean stop, `kill -9`) are assembled by the kernel in one boot: the state Linux
//!   reports matches what raid1 reported, the data is what raid1 served, a check finds 0
//!   mismatches (after the kernel's resync for the killed ones).
//! * `round_trip`: Linux creates and writes, raid1 writes and fails a member, Linux assembles,
//!   re-adds, recovers and writes, raid1 assembles: the data is intact at every step.
//! * `refuses_unsupported_features`: JOURNAL, CLUSTERED, PPL and RESHAPE_ACTIVE members (a
//!   fixture with the bit set and a correct checksum) are refused by name, nothing written.
//!
//! Every cell prints `CELL <test> <cell> <ok|FAIL> <seconds>` on stderr (`--nocapture` shows
//! them: docs/INTEROP.md's matrix comes from them). A difference fails the test with the
//! guest's whole output. A missing oracle or tool is a failure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use raid1_superblock::{FeatureMap, Superblock};

#[path = "run_common.rs"]
mod common;

use common::{
    ArmedMember, RAID1, Server, fixtures, manifest, ok, sha256_file, small_chunk_bitmap, text,
    tool, unpack, vd_name,
};

const MIB: u64 = 1 << 20;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn oracle() -> PathBuf {
    let p = repo().join("../shared/linux-md/run");
    assert!(
        p.exists(),
        "the linux-md oracle is missing at {}",
        p.display()
    );
    p
}

/// Every fixture case (the directories with a manifest).
fn fixture_cases() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("manifest").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// What interop adds to the shared `raid1 run` guard.
impl Server {
    /// `raid1 VERB NAME ARGS...`, which must succeed.
    fn verb(&self, verb: &str, args: &[&str]) -> String {
        let mut all = vec![verb, self.name.as_str()];
        all.extend_from_slice(args);
        let out = self.ctl(&all);
        assert!(
            out.status.success(),
            "raid1 {all:?}: {}\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn detail_json(&self) -> serde_json::Value {
        let out = self.ctl(&["detail", &self.name, "--json"]);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("detail --json: {e}: {}", text(&out.stdout)))
    }

    /// `detail --json` once the array is no longer "active": md marks an array clean
    /// `safe_mode_delay` (0.2 s) after the last write, and so does raid1.
    fn settled_detail(&self) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            let json = self.detail_json();
            if !json["state"].as_str().unwrap().starts_with("active") {
                return json;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "never clean: {json}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The running resync/recovery/check position in sectors (from `status`'s progress line
    /// `(DONE/TOTAL)` in KiB), if one runs.
    fn sync_position(&self) -> Option<u64> {
        let out = self.ctl(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let arrays = v["arrays"].as_array().unwrap();
        let me = arrays
            .iter()
            .find(|a| a["array"] == self.name.as_str())
            .unwrap_or_else(|| panic!("status has no {}: {v}", self.name));
        let mdstat = me["mdstat"].as_str().unwrap();
        let line = mdstat.lines().find(|l| l.contains(" = "))?;
        let done = line.split('(').nth(1)?.split('/').next()?;
        Some(done.parse::<u64>().unwrap() * 2)
    }

    fn qemu_io(&self, cmd: &str) {
        let out = ok(Command::new("qemu-io").args(["-f", "raw", &self.uri(), "-c", cmd]));
        assert!(!out.contains("failed"), "qemu-io {cmd}: {out}");
    }
}

/// What both `mdadm --detail` and `raid1 detail --json` say about an array, normalised:
/// members are named by image index.
#[derive(Debug, Clone, PartialEq)]
struct Detail {
    version: String,
    name: String,
    uuid: String,
    policy: String,
    level: String,
    raid_devices: u64,
    total: u64,
    active: u64,
    working: u64,
    failed: u64,
    spare: u64,
    state: String,
    events: u64,
    /// image index -> (raid device or "-", state words)
    members: BTreeMap<usize, (String, String)>,
}

impl Detail {
    /// `mdadm --detail` text; `index` maps a guest device (`/dev/vdX`) to an image index.
    fn from_mdadm(t: &str, index: &dyn Fn(&str) -> usize) -> Detail {
        let field = |k: &str| -> String {
            t.lines()
                .find_map(|l| {
                    let (a, b) = l.split_once(" : ")?;
                    (a.trim() == k).then(|| b.trim().to_string())
                })
                .unwrap_or_else(|| panic!("mdadm --detail has no {k}:\n{t}"))
        };
        let num = |k: &str| field(k).parse::<u64>().unwrap();
        let mut members = BTreeMap::new();
        let mut table = false;
        for l in t.lines() {
            if l.trim_start().starts_with("Number") {
                table = true;
                continue;
            }
            if !table || l.trim().is_empty() {
                continue;
            }
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.last() == Some(&"removed") {
                continue;
            }
            let dev = w[w.len() - 1];
            members.insert(index(dev), (w[3].to_string(), w[4..w.len() - 1].join(" ")));
        }
        // "mdoracle:0  (local to host mdoracle)": the remark is mdadm's, not the array's.
        let name = field("Name");
        let name = name.split("  (").next().unwrap().to_string();
        Detail {
            version: field("Version"),
            name,
            uuid: field("UUID"),
            policy: field("Consistency Policy"),
            level: field("Raid Level"),
            raid_devices: num("Raid Devices"),
            total: num("Total Devices"),
            active: num("Active Devices"),
            working: num("Working Devices"),
            failed: num("Failed Devices"),
            spare: num("Spare Devices"),
            state: field("State"),
            events: num("Events"),
            members,
        }
    }

    /// `raid1 detail --json`; `index` maps a member path to an image index.
    fn from_json(v: &serde_json::Value, index: &dyn Fn(&str) -> usize) -> Detail {
        let num = |k: &str| {
            v[k].as_u64()
                .unwrap_or_else(|| panic!("detail --json has no {k}: {v}"))
        };
        let members = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let rd = match &m["raid_device"] {
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => "-".to_string(),
                };
                // mdadm prints write-mostly as a word of the state; the JSON as a flag.
                let mut state = m["state"].as_str().unwrap().to_string();
                if m["write_mostly"].as_bool() == Some(true) && !state.contains("writemostly") {
                    state += " writemostly";
                }
                if m["failfast"].as_bool() == Some(true) && !state.contains("failfast") {
                    state += " failfast";
                }
                (index(m["device"].as_str().unwrap()), (rd, state))
            })
            .collect();
        let str_of = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("no {k}: {v}"))
                .to_string()
        };
        Detail {
            version: str_of("version"),
            name: str_of("name"),
            uuid: str_of("uuid"),
            policy: str_of("consistency_policy"),
            level: v["raid_level"].as_str().unwrap().to_string(),
            raid_devices: num("raid_devices"),
            total: num("total_devices"),
            active: num("active_devices"),
            working: num("working_devices"),
            failed: num("failed_devices"),
            spare: num("spare_devices"),
            state: v["state"].as_str().unwrap().trim().to_string(),
            events: num("events"),
            members,
        }
    }

    /// The differences with `other`, one line each (empty: they agree). `events` only when
    /// asked: a clean stop writes the superblocks once more, so the counts of a stopped and
    /// re-assembled array legitimately move.
    fn diff(&self, other: &Detail, events: bool) -> Vec<String> {
        let mut d = Vec::new();
        macro_rules! cmp {
            ($f:ident) => {
                if self.$f != other.$f {
                    d.push(format!(
                        "{}: raid1 {:?}, linux {:?}",
                        stringify!($f),
                        self.$f,
                        other.$f
                    ));
                }
            };
        }
        cmp!(version);
        cmp!(name);
        cmp!(uuid);
        cmp!(policy);
        cmp!(level);
        cmp!(raid_devices);
        cmp!(total);
        cmp!(active);
        cmp!(working);
        cmp!(failed);
        cmp!(spare);
        cmp!(state);
        cmp!(members);
        if events {
            cmp!(events);
        }
        d
    }
}

/// The device index of `/dev/vdX` (vda = 0, vdz = 25, vdaa = 26, ...).
fn vd_index(dev: &str) -> usize {
    let s = dev.trim_start_matches("/dev/vd");
    s.bytes()
        .fold(0usize, |acc, c| acc * 26 + (c - b'a') as usize + 1)
        - 1
}

/// What the guest printed: `R mdN key=value...` facts and `BEGIN detail mdN` ... `END` blocks.
struct Guest {
    log: String,
    facts: BTreeMap<(String, String), String>,
    details: BTreeMap<String, String>,
    secs: f64,
}

impl Guest {
    fn fact(&self, md: &str, k: &str) -> String {
        self.facts
            .get(&(md.to_string(), k.to_string()))
            .cloned()
            .unwrap_or_else(|| panic!("guest did not report {md} {k}; guest output:\n{}", self.log))
    }

    fn detail(&self, md: &str) -> &str {
        self.details
            .get(md)
            .unwrap_or_else(|| panic!("guest printed no detail of {md}; output:\n{}", self.log))
    }
}

/// Shell functions every guest script starts with.
const GUEST_PRELUDE: &str = r#"
line() { echo "R $*"; }
detail() { echo "BEGIN detail $1"; mdadm --detail /dev/$1; echo "END detail"; }
idle() { while [ "$(cat /sys/block/$1/md/sync_action)" != idle ]; do sleep 0.2; done; }
sha() { line $1 sha=$(sha256sum /dev/$1 | cut -d' ' -f1); }
check() {
  echo check > /sys/block/$1/md/sync_action; idle $1
  line $1 mismatch=$(cat /sys/block/$1/md/mismatch_cnt)
}
"#;

/// Boots the kernel with `images` attached (`/dev/vda`, ...) and runs `script`.
fn boot(images: &[PathBuf], script: &str, tag: &str) -> Guest {
    let t0 = Instant::now();
    let runner = || {
        let mut c = Command::new(oracle());
        c.args(["--timeout", "400"]);
        c
    };
    let g = raid1_testkit::guest::boot(&runner, images, &format!("{GUEST_PRELUDE}\n{script}"));
    let secs = t0.elapsed().as_secs_f64();
    let out = g.output;
    let log = g.stdout;
    assert!(
        out.status.success(),
        "guest {tag} failed ({}) after {secs:.1} s\n--- guest output ---\n{log}\n--- stderr ---\n{}",
        out.status,
        text(&out.stderr)
    );
    if g.attempts > 1 {
        eprintln!(
            "CELL boot {tag} took {} boots (the loader crashed)",
            g.attempts
        );
    }
    eprintln!("CELL boot {tag} ok {secs:.1}");
    let mut facts = BTreeMap::new();
    let mut details = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for l in log.lines() {
        if let Some((md, mut body)) = current.take() {
            if l == "END detail" {
                details.insert(md, body);
            } else {
                body.push_str(l);
                body.push('\n');
                current = Some((md, body));
            }
            continue;
        }
        if let Some(md) = l.strip_prefix("BEGIN detail ") {
            current = Some((md.to_string(), String::new()));
        } else if let Some(r) = l.strip_prefix("R ") {
            let mut w = r.split_whitespace();
            let md = w.next().unwrap_or("").to_string();
            for kv in w {
                if let Some((k, v)) = kv.split_once('=') {
                    facts.insert((md.clone(), k.to_string()), v.to_string());
                }
            }
        }
    }
    Guest {
        log,
        facts,
        details,
        secs,
    }
}

/// The data area of a member: `bytes` from its data offset (read from its superblock).
fn data_area(dev: &Path, bytes: u64) -> Vec<u8> {
    let all = std::fs::read(dev).unwrap();
    let sb = find_superblock(&all).unwrap_or_else(|| panic!("{}: no superblock", dev.display()));
    let start = (sb.1.data_offset * 512) as usize;
    all[start..start + bytes as usize].to_vec()
}

/// The superblock of an image (byte offset, parsed), probing 1.2, 1.1, 1.0 placements.
fn find_superblock(all: &[u8]) -> Option<(usize, Superblock)> {
    let end10 = ((all.len() as u64 / 512 - 16) & !7) as usize * 512;
    [4096usize, 0, end10].into_iter().find_map(|off| {
        let sb: Superblock = Superblock::parse_for_examine(all.get(off..off + 4096)?).ok()?;
        (sb.super_offset * 512 == off as u64).then_some((off, sb))
    })
}

/// Collects cell results; fails at the end with every failure.
struct Cells {
    test: &'static str,
    failures: Vec<String>,
}

impl Cells {
    fn new(test: &'static str) -> Cells {
        Cells {
            test,
            failures: Vec::new(),
        }
    }

    fn record(&mut self, cell: &str, secs: f64, problems: Vec<String>) {
        let verdict = if problems.is_empty() { "ok" } else { "FAIL" };
        eprintln!("CELL {} {cell} {verdict} {secs:.1}", self.test);
        for p in problems {
            self.failures.push(format!("{cell}: {p}"));
        }
    }

    fn finish(self, log: &str) {
        assert!(
            self.failures.is_empty(),
            "{} failed:\n{}\n--- guest output ---\n{log}",
            self.test,
            self.failures.join("\n")
        );
    }
}

/// Image index of a raid1 detail device path (its file name is `<k>-<member>.img` and the
/// caller knows the images).
fn path_index(images: &[PathBuf]) -> impl Fn(&str) -> usize + '_ {
    move |p: &str| {
        let name = Path::new(p).file_name().unwrap();
        images
            .iter()
            .position(|i| i.file_name().unwrap() == name)
            .unwrap_or_else(|| panic!("{p} is none of the images"))
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Linux -> raid1

#[test]
fn linux_to_raid1() {
    let dir = tempfile::tempdir().unwrap();
    let cases = fixture_cases();
    assert_eq!(cases.len(), 15, "fixtures: {cases:?}");
    // Two copies of every fixture: one for raid1, one for the kernel. The kernel's copies go
    // into boots of at most MAX_IMAGES (qemu runs out of PCI slots near 30 virtio disks).
    const MAX_IMAGES: usize = 20;
    let mut ours: Vec<Vec<PathBuf>> = Vec::new();
    // Per case: (boot number, md number in that boot, first image index in that boot).
    let mut place: Vec<(usize, usize, usize)> = Vec::new();
    let mut boots: Vec<(Vec<PathBuf>, String)> = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        ours.push(unpack(case, dir.path(), &format!("r{n}-")));
        let k = unpack(case, dir.path(), &format!("k{n}-"));
        if boots
            .last()
            .is_none_or(|b| b.0.len() + k.len() > MAX_IMAGES)
        {
            // The kernel: assemble everything (members in attach order, as raid1 gets them),
            // detail at once (recovery/resync throttled so that they are still running),
            // then read every array whole.
            boots.push((
                Vec::new(),
                "echo 1 > /proc/sys/dev/raid/speed_limit_min\n\
                 echo 100 > /proc/sys/dev/raid/speed_limit_max\n"
                    .to_string(),
            ));
        }
        let b = boots.len() - 1;
        let (imgs, script) = boots.last_mut().unwrap();
        let md = place.iter().filter(|p| p.0 == b).count();
        let names: Vec<String> = (imgs.len()..imgs.len() + k.len()).map(vd_name).collect();
        place.push((b, md, imgs.len()));
        imgs.extend(k);
        let _ = writeln!(
            script,
            "mdadm --assemble --run /dev/md{md} {} >asm.out 2>&1; line md{md} assemble=$?; \
             cat asm.out\ndetail md{md}\n\
             line md{md} sync=$(tr -d ' ' < /sys/block/md{md}/md/sync_completed)",
            names.join(" ")
        );
    }
    for (b, (_, script)) in boots.iter_mut().enumerate() {
        *script += "echo 1000 > /proc/sys/dev/raid/speed_limit_min\n\
                    echo 200000 > /proc/sys/dev/raid/speed_limit_max\ncat /proc/mdstat\n";
        for md in 0..place.iter().filter(|p| p.0 == b).count() {
            let _ = writeln!(script, "sha md{md}");
        }
    }
    let guest_thread = std::thread::spawn(move || {
        boots
            .iter()
            .enumerate()
            .map(|(b, (imgs, script))| boot(imgs, script, &format!("linux-to-raid1-{b}")))
            .collect::<Vec<Guest>>()
    });

    // raid1, meanwhile: start (as mdadm --assemble --run: --degraded-ok), detail at once with
    // syncs throttled, read whole; then restart unthrottled and let resync/recovery finish.
    struct Ours {
        detail: Detail,
        sync: Option<u64>,
        sha: String,
        secs: f64,
        problems: Vec<String>,
    }
    let mut results: Vec<Ours> = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let t0 = Instant::now();
        let m = manifest(case);
        let bytes: u64 = m["array_bytes"].parse().unwrap();
        let devs = &ours[n];
        let index = path_index(devs);
        let mut problems = Vec::new();
        let s = Server::start(
            dir.path(),
            &format!("fx{n}"),
            &["--degraded-ok", "--sync-speed-max", "100"],
            devs,
        );
        let detail = Detail::from_json(&s.detail_json(), &index);
        let sync = s.sync_position();
        let sha = s.read_all(&dir.path().join(format!("fx{n}.raw")));
        if sha != m["array_sha256"] {
            problems.push(format!(
                "raid1 served sha256 {sha}, Linux served {}",
                m["array_sha256"]
            ));
        }
        s.stop();
        let s = Server::start(
            dir.path(),
            &format!("fx{n}"),
            &["--degraded-ok", "--sync-speed-max", "0"],
            devs,
        );
        s.verb("wait", &[]);
        let after = s.read_all(&dir.path().join(format!("fx{n}.raw")));
        if after != m["array_sha256"] {
            problems.push(format!("after resync/recovery raid1 serves {after}"));
        }
        let final_detail = s.detail_json();
        s.stop();
        // Every member the array holds in a slot now has the array's bytes in its data area.
        for mem in final_detail["members"].as_array().unwrap() {
            if mem["state"].as_str().unwrap().contains("active sync") {
                let p = &devs[index(mem["device"].as_str().unwrap())];
                let area = data_area(p, bytes);
                let path = dir.path().join("area");
                std::fs::write(&path, &area).unwrap();
                let got = sha256_file(&path);
                if got != m["array_sha256"] {
                    problems.push(format!(
                        "after raid1's resync/recovery {} holds {got}",
                        p.display()
                    ));
                }
            }
        }
        results.push(Ours {
            detail,
            sync,
            sha,
            secs: t0.elapsed().as_secs_f64(),
            problems,
        });
    }

    let guests = guest_thread.join().unwrap();
    let mut cells = Cells::new("linux_to_raid1");
    let per_boot = guests.iter().map(|g| g.secs).sum::<f64>() / cases.len() as f64;
    for (n, case) in cases.iter().enumerate() {
        let (b, md, base) = place[n];
        let guest = &guests[b];
        let md = format!("md{md}");
        let r = &results[n];
        let mut problems = r.problems.clone();
        if guest.fact(&md, "assemble") != "0" {
            problems.push("mdadm --assemble failed".into());
        }
        let linux = Detail::from_mdadm(guest.detail(&md), &|d: &str| vd_index(d) - base);
        for d in r.detail.diff(&linux, false) {
            problems.push(format!("detail differs: {d}"));
        }
        let mut cell = case.to_string();
        // While a resync or recovery runs, md writes its checkpoints into the superblocks
        // (each write moves events), so there the count depends on speed and timing: both
        // must then only be at least the freshest image's.
        let syncing = linux.state.contains("ing");
        let on_disk: u64 = manifest(case)
            .iter()
            .filter(|(k, _)| k.ends_with(".events"))
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .max()
            .unwrap();
        if syncing {
            if r.detail.events < on_disk || linux.events < on_disk {
                problems.push(format!(
                    "events went back: raid1 {}, linux {}, on disk {on_disk}",
                    r.detail.events, linux.events
                ));
            }
        } else if r.detail.events != linux.events {
            // See `assembly_keeps_events_as_linux`.
            problems.push(format!(
                "events right after assembly: raid1 {}, linux {}",
                r.detail.events, linux.events
            ));
        }
        let gsha = guest.fact(&md, "sha");
        if gsha != r.sha {
            problems.push(format!(
                "guest sha256sum /dev/{md} {gsha}, raid1 served {}",
                r.sha
            ));
        }
        // Where the resync or recovery starts: both from the recorded checkpoint (the largest
        // recovery_offset of the fixture, 0 for a resync), within what 100 KiB/s covers
        // before the detail is taken (2 MiB of slack: TCG is slow).
        let linux_sync = match guest.fact(&md, "sync").as_str() {
            "none" => None,
            v => Some(v.split('/').next().unwrap().parse::<u64>().unwrap()),
        };
        let m = manifest(case);
        let from: u64 = m
            .iter()
            .filter(|(k, _)| k.ends_with(".recovery_offset"))
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .max()
            .unwrap_or(0);
        match (r.sync, linux_sync) {
            (None, None) => {}
            (Some(a), Some(b)) => {
                for (who, at) in [("raid1", a), ("linux", b)] {
                    if at < from || at > from + 4096 {
                        problems.push(format!(
                            "{who} sync at sector {at}, expected from {from} (raid1 {a}, linux {b})"
                        ));
                    }
                }
                cell += &format!(" (sync from {from}: raid1 {a}, linux {b})");
            }
            (a, b) => problems.push(format!("sync running: raid1 {a:?}, linux {b:?}")),
        }
        cells.record(&cell, r.secs + per_boot, problems);
    }
    let log: Vec<&str> = guests.iter().map(|g| g.log.as_str()).collect();
    cells.finish(&log.join("\n"));
}

/// The guest runner's defence against the emulated machine (raid1-testkit's `guest`): a process
/// that dies in the dynamic loader makes it boot again on the images as they were before the
/// first boot, three boots at most, and a crash that comes back every time still reaches the
/// caller. The crash is planted through the kernel log, where the runner reads it; each boot
/// writes a mark onto the image, which must be gone when the next boot starts.
#[test]
fn a_loader_crash_boots_again_on_the_images_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.img");
    std::fs::write(&img, vec![b'a'; 1 << 20]).unwrap();
    let runner = || {
        let mut c = Command::new(oracle());
        c.args(["--timeout", "120"]);
        c
    };
    let g = raid1_testkit::guest::boot(
        &runner,
        std::slice::from_ref(&img),
        "echo \"R vda first=$(dd if=/dev/vda bs=1 count=1 2>/dev/null)\"\n\
         printf X | dd of=/dev/vda conv=notrunc 2>/dev/null; sync\n\
         echo 'mdadm[96]: segfault at 23c3e ip 00007f418ae12355 sp 00007fffe3797e10 error 4 \
         in ld-linux-x86-64.so.2[7f418ae05000+26000]' > /dev/kmsg\n",
    );
    assert!(g.output.status.success(), "{}", g.stdout);
    assert_eq!(g.attempts, 3, "{}", g.stdout);
    assert!(g.stdout.contains("R vda first=a"), "{}", g.stdout);
    assert_eq!(raid1_testkit::guest::loader_crashes(&g.stdout).len(), 1);
    // The last boot's writes stay: the caller sees that boot whole.
    assert_eq!(std::fs::read(&img).unwrap()[0], b'X');
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "the runner's copies are removed: {left:?}");
}

/// The kernel assembles an array without writing its superblocks, whether it is clean and
/// complete or already degraded with a stale member left out: `mdadm --detail` right after
/// `mdadm --assemble --run` shows the events of the freshest image (linux_to_raid1's boot
/// compares it for every fixture). `raid1 run` must report the same count, not one more.
#[test]
fn assembly_keeps_events_as_linux() {
    let mut wrong = Vec::new();
    for case in ["v1.2", "degraded", "bitmap-dirty"] {
        let dir = tempfile::tempdir().unwrap();
        let devs = unpack(case, dir.path(), "");
        let on_disk = manifest(case)["vda.events"].parse::<u64>().unwrap();
        let s = Server::start(dir.path(), "ev", &["--degraded-ok"], &devs);
        let events = s.detail_json()["events"].as_u64().unwrap();
        s.stop();
        if events != on_disk {
            wrong.push(format!("{case}: raid1 {events}, Linux keeps {on_disk}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "raid1 detail events right after assembly differ from Linux's: {wrong:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. raid1 -> Linux

/// How a raid1-made array ends before the kernel sees it.
#[derive(Clone, Copy, PartialEq)]
enum End {
    Stop,
    Kill,
}

struct Made {
    cell: &'static str,
    /// Images attached to the guest for this array (indices into the array's own images).
    attach: Vec<PathBuf>,
    /// All of the array's images (for detail's device names).
    images: Vec<PathBuf>,
    detail: Detail,
    sha: String,
    end: End,
    degraded: bool,
    secs: f64,
}

fn blank(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(16 * MIB).unwrap();
    p
}

fn create(args: &[&str], devs: &[PathBuf]) {
    ok(Command::new(RAID1)
        .args(["create", "-l", "1", "--homehost", "mdoracle"])
        .args(args)
        .args(devs));
}

#[allow(clippy::too_many_arguments)]
/// One raid1-made array: create, run, `script`, read whole, detail, stop or kill.
fn make(
    dir: &Path,
    k: usize,
    cell: &'static str,
    create_args: &[&str],
    members: usize,
    extra: usize,
    end: End,
    script: &dyn Fn(&Server, &[PathBuf]),
) -> Made {
    let t0 = Instant::now();
    let images: Vec<PathBuf> = (0..members + extra)
        .map(|i| blank(dir, &format!("m{k}-{i}.img")))
        .collect();
    create(create_args, &images[..members]);
    let s = Server::start(
        dir,
        &format!("a{k}"),
        &["--sync-speed-max", "0"],
        &images[..members],
    );
    s.verb("wait", &[]);
    script(&s, &images);
    s.verb("wait", &[]);
    let raw = dir.join(format!("a{k}.raw"));
    let mut sha = s.read_all(&raw);
    // The killed arrays are compared on everything but the state (raid1 was killed "active").
    let json = if end == End::Stop {
        s.settled_detail()
    } else {
        s.detail_json()
    };
    let detail = Detail::from_json(&json, &path_index(&images));
    if end == End::Kill {
        // One more acknowledged write right before the kill; the expected bytes follow it.
        let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
        f.write_all_at(&[0xe7; 65536], 3 * MIB).unwrap();
        sha = sha256_file(&raw);
        // The kill must land within the safe-mode delay (0.2 s) after the write, while the
        // superblocks say active; on a loaded machine it may come later, when raid1 has
        // (rightly) marked the array clean: then restart and write + kill again.
        let mut s = s;
        for attempt in 1.. {
            s.qemu_io("write -P 0xe7 3145728 65536");
            s.kill9();
            let dirty = images[..members].iter().all(|p| {
                let all = std::fs::read(p).unwrap();
                !find_superblock(&all).unwrap().1.is_clean()
            });
            if dirty {
                break;
            }
            eprintln!("{cell}: the kill came after the array was marked clean (try {attempt})");
            assert!(attempt < 5, "{cell}: never killed while dirty");
            s = Server::start(
                dir,
                &format!("a{k}"),
                &["--sync-speed-max", "0"],
                &images[..members],
            );
            s.verb("wait", &[]);
        }
    } else {
        s.stop();
    }
    // The guest gets the members raid1 had (in slots or as spares), plus any removed one that
    // still carries an older superblock of the array (Linux must leave it out, as raid1 did).
    let attach = images
        .iter()
        .filter(|p| {
            let all = std::fs::read(p).unwrap();
            find_superblock(&all).is_some()
        })
        .cloned()
        .collect();
    Made {
        cell,
        attach,
        images,
        degraded: json["degraded"].as_bool().unwrap(),
        detail,
        sha,
        end,
        secs: t0.elapsed().as_secs_f64(),
    }
}

#[test]
fn raid1_to_linux() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let write_a = |s: &Server| {
        s.qemu_io("write -P 0x11 0 4194304");
        s.qemu_io("write -P 0x12 8388608 1048576");
    };
    let write_b = |s: &Server| {
        s.qemu_io("write -P 0x21 1048576 2097152");
        s.qemu_io("write -P 0x22 12582912 65536");
    };
    let mut made = [
        make(
            d,
            0,
            "created-written-1.0",
            &["-n", "2", "-e", "1.0"],
            2,
            0,
            End::Stop,
            &|s, _| write_a(s),
        ),
        make(
            d,
            1,
            "created-3-mirrors-spare-1.1-nobitmap",
            &["-n", "3", "-x", "1", "-e", "1.1", "-b", "none"],
            4,
            0,
            End::Stop,
            &|s, _| write_a(s),
        ),
        make(
            d,
            2,
            "failed-removed-written",
            &["-n", "2"],
            2,
            0,
            End::Stop,
            &|s, im| {
                write_a(s);
                s.verb("fail", &[&path(&im[1])]);
                s.verb("remove", &[&path(&im[1])]);
                write_b(s);
            },
        ),
        make(
            d,
            3,
            "new-member-added-recovered",
            &["-n", "2", "-b", "none"],
            2,
            1,
            End::Stop,
            &|s, im| {
                write_a(s);
                s.verb("fail", &[&path(&im[1])]);
                s.verb("remove", &[&path(&im[1])]);
                write_b(s);
                s.verb("add", &[&path(&im[2])]);
                s.verb("wait", &[]);
                // The removed member's old superblock must not be offered to Linux: wipe it.
                ok(Command::new(RAID1).args(["zero-superblock"]).arg(&im[1]));
            },
        ),
        make(
            d,
            4,
            "bitmap-re-add",
            &["-n", "2"],
            2,
            0,
            End::Stop,
            &|s, im| {
                write_a(s);
                s.verb("fail", &[&path(&im[1])]);
                s.verb("remove", &[&path(&im[1])]);
                write_b(s);
                s.verb("re-add", &[&path(&im[1])]);
                s.verb("wait", &[]);
            },
        ),
        make(
            d,
            5,
            "grown-2-to-3",
            &["-n", "2"],
            2,
            1,
            End::Stop,
            &|s, im| {
                write_a(s);
                s.verb("add", &[&path(&im[2])]);
                s.verb("grow", &["--raid-devices", "3"]);
                s.verb("wait", &[]);
                write_b(s);
            },
        ),
        make(
            d,
            6,
            "killed-bitmap",
            &["-n", "2"],
            2,
            0,
            End::Kill,
            &|s, _| write_a(s),
        ),
        make(
            d,
            7,
            "killed-no-bitmap",
            &["-n", "2", "-b", "none"],
            2,
            0,
            End::Kill,
            &|s, _| write_a(s),
        ),
        make(
            d,
            8,
            "write-mostly-toggled",
            &["-n", "2"],
            2,
            0,
            End::Stop,
            &|s, im| {
                write_a(s);
                // Set on both while running, then cleared on the second: Linux must see the
                // first one WriteMostly and the second not.
                s.verb("write-mostly", &[&path(&im[0])]);
                s.verb("write-mostly", &[&path(&im[1])]);
                s.verb("write-mostly", &[&path(&im[1]), "--off"]);
                // FailFast the same way, the other way round.
                s.verb("failfast", &[&path(&im[0])]);
                s.verb("failfast", &[&path(&im[1])]);
                s.verb("failfast", &[&path(&im[0]), "--off"]);
                write_b(s);
            },
        ),
    ];
    // Before the boot: a killed array's superblocks must say active (else the kill proved
    // nothing about resync).
    let mut pre = Vec::new();
    for m in made.iter().filter(|m| m.end == End::Kill) {
        for p in &m.attach {
            let all = std::fs::read(p).unwrap();
            let sb = find_superblock(&all).unwrap().1;
            eprintln!(
                "{}: {} after kill -9: events {} resync_offset {:#x}",
                m.cell,
                p.display(),
                sb.events,
                sb.resync_offset
            );
            if sb.is_clean() {
                pre.push(format!(
                    "{}: {} says clean after kill -9",
                    m.cell,
                    p.display()
                ));
            }
        }
    }

    let mut images = Vec::new();
    let mut script = String::new();
    let mut bases = Vec::new();
    for (n, m) in made.iter().enumerate() {
        bases.push(images.len());
        let names: Vec<String> = (images.len()..images.len() + m.attach.len())
            .map(vd_name)
            .collect();
        images.extend(m.attach.iter().cloned());
        let run = if m.degraded { "--run " } else { "" };
        let _ = writeln!(
            script,
            "mdadm --assemble {run}/dev/md{n} {} >asm.out 2>&1; line md{n} assemble=$?; cat asm.out\n\
             detail md{n}",
            names.join(" ")
        );
    }
    script += "cat /proc/mdstat\n";
    for (n, m) in made.iter().enumerate() {
        let _ = writeln!(
            script,
            "idle md{n}; line md{n} resyncs=$(dmesg | grep -c 'resync of RAID array md{n}$'); sha md{n}\n\
             dmesg | grep 'md{n}[: ]'"
        );
        if !m.degraded {
            let _ = writeln!(script, "check md{n}");
        }
    }
    script += "cat /proc/mdstat\n";
    for n in 0..made.len() {
        let _ = writeln!(script, "detail md{n}");
    }
    let guest = boot(&images, &script, "raid1-to-linux");
    let mut cells = Cells::new("raid1_to_linux");
    let per = guest.secs / made.len() as f64;
    for (n, m) in made.iter_mut().enumerate() {
        let md = format!("md{n}");
        let mut problems: Vec<String> = pre
            .iter()
            .filter(|p| p.starts_with(m.cell))
            .cloned()
            .collect();
        if guest.fact(&md, "assemble") != "0" {
            problems.push("mdadm --assemble failed".into());
        }
        let base = bases[n];
        let attach = m.attach.clone();
        let images = m.images.clone();
        let index = |dev: &str| {
            let p = &attach[vd_index(dev) - base];
            images.iter().position(|i| i == p).unwrap()
        };
        let linux = Detail::from_mdadm(guest.detail(&md), &index);
        if m.cell == "write-mostly-toggled" {
            // What the verbs asked for, as Linux reads it from the superblocks.
            let wm = |i: usize| {
                linux
                    .members
                    .get(&i)
                    .is_some_and(|(_, s)| s.contains("writemostly"))
            };
            if !wm(0) || wm(1) {
                problems.push(format!(
                    "Linux should see image 0 write-mostly and image 1 not: {:?}",
                    linux.members
                ));
            }
            let ff = |i: usize| {
                linux
                    .members
                    .get(&i)
                    .is_some_and(|(_, s)| s.contains("failfast"))
            };
            if ff(0) || !ff(1) {
                problems.push(format!(
                    "Linux should see image 1 failfast and image 0 not: {:?}",
                    linux.members
                ));
            }
        }
        let mut ours = m.detail.clone();
        if m.end == End::Kill {
            // raid1 was killed while "active"; Linux reports its own dirty/resync state.
            ours.state = linux.state.clone();
        }
        for x in ours.diff(&linux, false) {
            problems.push(format!("detail differs: {x}"));
        }
        if linux.events < m.detail.events {
            problems.push(format!(
                "linux events {} behind raid1's {}",
                linux.events, m.detail.events
            ));
        }
        let gsha = guest.fact(&md, "sha");
        if gsha != m.sha {
            problems.push(format!(
                "guest sha256sum /dev/{md} {gsha}, raid1 served {}",
                m.sha
            ));
        }
        if !m.degraded {
            let mm = guest.fact(&md, "mismatch");
            if mm != "0" {
                problems.push(format!("mismatch_cnt {mm}"));
            }
        }
        let resyncs = guest.fact(&md, "resyncs");
        match m.end {
            End::Kill if resyncs == "0" => {
                problems.push("Linux did not resync the killed array".into())
            }
            End::Stop if resyncs != "0" => problems.push(format!(
                "Linux resynced a cleanly stopped array ({resyncs})"
            )),
            _ => {}
        }
        cells.record(m.cell, m.secs + per, problems);
    }
    cells.finish(&guest.log);
}

// ---------------------------------------------------------------------------------------------
// 3. Round trip

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let imgs = vec![blank(d, "rt-a.img"), blank(d, "rt-b.img")];
    let index = path_index(&imgs);
    let mut cells = Cells::new("round_trip");
    let mut log = String::new();

    // Linux creates and writes.
    let t0 = Instant::now();
    let g1 = boot(
        &imgs,
        "mdadm --create /dev/md0 --level=1 --raid-devices=2 --metadata=1.2 --bitmap=internal \
         --bitmap-chunk=64K --run /dev/vda /dev/vdb >create.out 2>&1; line md0 create=$?; cat create.out\n\
         idle md0\n\
         dd if=/dev/urandom of=/dev/md0 bs=1M count=6 conv=fsync 2>/dev/null\n\
         sha md0\n",
        "rt-linux-create",
    );
    log += &g1.log;
    let mut p = Vec::new();
    if g1.fact("md0", "create") != "0" {
        p.push("mdadm --create failed".into());
    }
    let linux1 = g1.fact("md0", "sha");
    cells.record("linux-creates-writes", t0.elapsed().as_secs_f64(), p);

    // raid1 assembles, reads what Linux wrote, writes, fails a member, writes more.
    let t0 = Instant::now();
    let s = Server::start(d, "rt", &[], &imgs);
    let mut p = Vec::new();
    let got = s.read_all(&d.join("rt.raw"));
    if got != linux1 {
        p.push(format!("raid1 serves {got}, Linux served {linux1}"));
    }
    s.qemu_io("write -P 0x31 2097152 1048576");
    s.verb("fail", &[imgs[1].to_str().unwrap()]);
    s.qemu_io("write -P 0x32 9437184 1048576");
    s.verb("remove", &[imgs[1].to_str().unwrap()]);
    let raid1_sha = s.read_all(&d.join("rt.raw"));
    let before = Detail::from_json(&s.settled_detail(), &index);
    s.stop();
    cells.record("raid1-writes-fails-member", t0.elapsed().as_secs_f64(), p);

    // Linux assembles (the failed member stays out), re-adds it, recovers, writes.
    let t0 = Instant::now();
    let g2 = boot(
        &imgs,
        "mdadm --assemble --run /dev/md0 /dev/vda /dev/vdb >asm.out 2>&1; line md0 assemble=$?; \
         cat asm.out\n\
         detail md0\n\
         sha md0\n\
         line md1 sha=$(sha256sum /dev/md0 | cut -d' ' -f1)\n\
         mdadm /dev/md0 --re-add /dev/vdb >readd.out 2>&1; line md0 readd=$?; cat readd.out\n\
         sleep 0.5; idle md0\n\
         dd if=/dev/urandom of=/dev/md0 bs=64k seek=40 count=16 conv=fsync 2>/dev/null\n\
         echo 3 > /proc/sys/vm/drop_caches\n\
         line md2 sha=$(sha256sum /dev/md0 | cut -d' ' -f1)\n\
         check md0\n\
         mdadm --detail /dev/md0\n",
        "rt-linux-recovers",
    );
    log += &g2.log;
    let mut p = Vec::new();
    if g2.fact("md0", "assemble") != "0" {
        p.push("mdadm --assemble failed".into());
    }
    let linux = Detail::from_mdadm(g2.detail("md0"), &|dev: &str| vd_index(dev));
    for x in before.diff(&linux, false) {
        p.push(format!("detail differs: {x}"));
    }
    if g2.fact("md1", "sha") != raid1_sha {
        p.push(format!(
            "Linux serves {}, raid1 served {raid1_sha}",
            g2.fact("md1", "sha")
        ));
    }
    if g2.fact("md0", "readd") != "0" {
        p.push("mdadm --re-add of the member raid1 failed and removed was refused".into());
    }
    if g2.fact("md0", "mismatch") != "0" {
        p.push(format!("mismatch_cnt {}", g2.fact("md0", "mismatch")));
    }
    let linux2 = g2.fact("md2", "sha");
    cells.record(
        "linux-assembles-recovers-writes",
        t0.elapsed().as_secs_f64(),
        p,
    );

    // raid1 assembles both members (no --degraded-ok), serves what Linux wrote.
    let t0 = Instant::now();
    let mut p = Vec::new();
    let s = Server::start(d, "rt", &[], &imgs);
    let det = Detail::from_json(&s.detail_json(), &index);
    if det.active != 2 || det.state != "clean" {
        p.push(format!("raid1 detail after Linux's recovery: {det:?}"));
    }
    let got = s.read_all(&d.join("rt.raw"));
    if got != linux2 {
        p.push(format!("raid1 serves {got}, Linux served {linux2}"));
    }
    s.verb("check", &[]);
    s.verb("wait", &[]);
    let mm = s.detail_json()["mismatch_cnt"].as_u64();
    if mm != Some(0) {
        p.push(format!("raid1 check: mismatch_cnt {mm:?}"));
    }
    s.stop();
    cells.record("raid1-assembles-again", t0.elapsed().as_secs_f64(), p);
    cells.finish(&log);
}

// ---------------------------------------------------------------------------------------------
// 4. Refusals

/// Sets `bits` in the superblock of every member (checksum recomputed).
fn set_feature(dev: &Path, bits: FeatureMap) {
    let all = std::fs::read(dev).unwrap();
    let (off, mut sb) = find_superblock(&all).unwrap();
    sb.feature_map.insert(bits);
    sb.update_checksum().unwrap();
    let mut buf = all[off..off + 4096].to_vec();
    sb.serialize(&mut buf).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    f.write_all_at(&buf, off as u64).unwrap();
}

#[test]
fn refuses_unsupported_features() {
    let mut cells = Cells::new("refusals");
    for (bit, name) in [
        (FeatureMap::JOURNAL, "JOURNAL"),
        (FeatureMap::CLUSTERED, "CLUSTERED"),
        (FeatureMap::PPL, "PPL"),
        (FeatureMap::RESHAPE_ACTIVE, "RESHAPE_ACTIVE"),
    ] {
        let t0 = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let devs = unpack("v1.2", dir.path(), "");
        for p in &devs {
            set_feature(p, bit);
        }
        let before: Vec<Vec<u8>> = devs.iter().map(|p| std::fs::read(p).unwrap()).collect();
        let out = tool(
            Command::new(RAID1)
                .env("RAID1_RUN_DIR", dir.path().join("rd"))
                .args(["run", "--degraded-ok", "--name", "bad", "--nbd"])
                .arg(format!("unix:{}", dir.path().join("bad.nbd").display()))
                .args(&devs),
        );
        let err = text(&out.stderr);
        let mut p = Vec::new();
        if out.status.code() != Some(2) {
            p.push(format!("raid1 run exit {} (want 2): {err}", out.status));
        }
        if !err.contains(name) {
            p.push(format!("the refusal does not name {name}: {err}"));
        }
        for (d, b) in devs.iter().zip(&before) {
            if std::fs::read(d).unwrap() != *b {
                p.push(format!("{} was written", d.display()));
            }
        }
        eprintln!("refusal {name}: {}", err.trim());
        cells.record(&format!("refuse-{name}"), t0.elapsed().as_secs_f64(), p);
    }
    cells.finish("");
}

/// Kernel-made arrays of the given guest script on `n` blank 16 MiB images.
fn linux_made(dir: &Path, n: usize, script: &str, tag: &str) -> (Vec<PathBuf>, Guest) {
    let imgs: Vec<PathBuf> = (0..n)
        .map(|i| blank(dir, &format!("{tag}-{i}.img")))
        .collect();
    let g = boot(&imgs, script, tag);
    (imgs, g)
}

/// Metadata 0.90 (made by the kernel) is not supported: `raid1 run` must refuse it naming
/// the format, and write nothing.
#[test]
fn refuses_metadata_0_90_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (imgs, g) = linux_made(
        dir.path(),
        2,
        "mdadm --create /dev/md0 -e 0.90 -l1 -n2 --run /dev/vda /dev/vdb >create.out 2>&1; \
         line md0 create=$?; cat create.out\nidle md0\n",
        "v090",
    );
    assert_eq!(g.fact("md0", "create"), "0", "{}", g.log);
    let before: Vec<Vec<u8>> = imgs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let out = tool(
        Command::new(RAID1)
            .env("RAID1_RUN_DIR", dir.path().join("rd"))
            .args(["run", "--degraded-ok", "--name", "old", "--nbd"])
            .arg(format!("unix:{}", dir.path().join("old.nbd").display()))
            .args(&imgs),
    );
    let err = text(&out.stderr);
    eprintln!("refusal 0.90: {}", err.trim());
    for (p, b) in imgs.iter().zip(&before) {
        assert!(
            std::fs::read(p).unwrap() == *b,
            "{} was written",
            p.display()
        );
    }
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("0.90"),
        "raid1 run must name metadata 0.90 when it refuses a 0.90 member: {err}"
    );
}

/// A write-behind array (bitmap write_behind 256, one member --write-mostly), made by the
/// kernel: raid1 serves it (writing synchronously to every member is what write-behind
/// relaxes, so it is safe), reports the same members and flags as `mdadm --detail`, and keeps
/// the write-mostly flag and the bitmap's write_behind on disk.
#[test]
fn write_behind_array_served_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (imgs, g) = linux_made(
        dir.path(),
        2,
        "mdadm --create /dev/md0 -l1 -n2 --bitmap=internal --write-behind=256 --run \
         /dev/vda --write-mostly /dev/vdb >create.out 2>&1; line md0 create=$?; cat create.out\n\
         idle md0\n\
         dd if=/dev/urandom of=/dev/md0 bs=1M count=4 conv=fsync 2>/dev/null\n\
         sleep 0.5\n\
         echo 3 > /proc/sys/vm/drop_caches\n\
         sha md0\ndetail md0\n",
        "wb",
    );
    assert_eq!(g.fact("md0", "create"), "0", "{}", g.log);
    let linux = Detail::from_mdadm(g.detail("md0"), &vd_index);
    let s = Server::start(dir.path(), "wb", &[], &imgs);
    let ours = Detail::from_json(&s.settled_detail(), &path_index(&imgs));
    let diff = ours.diff(&linux, false);
    assert!(diff.is_empty(), "{diff:?}\n{}", g.log);
    assert_eq!(s.read_all(&dir.path().join("wb.raw")), g.fact("md0", "sha"));
    s.qemu_io("write -P 0x44 0 1048576");
    s.stop();
    let all = std::fs::read(&imgs[1]).unwrap();
    let (_, sb) = find_superblock(&all).unwrap();
    assert!(
        sb.devflags
            .contains(raid1_superblock::DevFlags::WRITE_MOSTLY),
        "write-mostly flag lost: {:?}",
        sb.devflags
    );
    let bitmap = (sb.super_offset as i64 + sb.bitmap_offset as i64) as usize * 512;
    let write_behind = u32::from_le_bytes(all[bitmap + 60..bitmap + 64].try_into().unwrap());
    assert_eq!(write_behind, 256, "bitmap write_behind");
}

/// `raid1 detail` (text) shows a write-mostly member as mdadm does: `active sync writemostly`.
#[test]
fn detail_text_names_write_mostly() {
    let dir = tempfile::tempdir().unwrap();
    let devs = unpack("v1.2", dir.path(), "");
    {
        let all = std::fs::read(&devs[1]).unwrap();
        let (off, mut sb) = find_superblock(&all).unwrap();
        sb.devflags.insert(raid1_superblock::DevFlags::WRITE_MOSTLY);
        let mut buf = all[off..off + 4096].to_vec();
        sb.serialize(&mut buf).unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&devs[1])
            .unwrap();
        f.write_all_at(&buf, off as u64).unwrap();
    }
    let s = Server::start(dir.path(), "wm", &[], &devs);
    let json = s.detail_json();
    let text = s.verb("detail", &[]);
    s.stop();
    assert_eq!(json["members"][1]["write_mostly"], true, "{json}");
    let row = text
        .lines()
        .find(|l| l.ends_with("vdb.img"))
        .unwrap_or_else(|| panic!("no vdb row:\n{text}"));
    assert!(
        row.contains("active sync writemostly"),
        "mdadm --detail prints `active sync writemostly` for this member; raid1 detail: {row}"
    );
}

/// Sets the WriteMostly flag in the superblock of `dev` (as `mdadm --write-mostly` records it):
/// read balancing then prefers the other members.
fn set_write_mostly(dev: &Path) {
    let all = std::fs::read(dev).unwrap();
    let (off, mut sb) = find_superblock(&all).unwrap();
    sb.devflags.insert(raid1_superblock::DevFlags::WRITE_MOSTLY);
    let mut buf = all[off..off + 4096].to_vec();
    sb.serialize(&mut buf).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    f.write_all_at(&buf, off as u64).unwrap();
}

/// The junk written into member `mi`'s listed sectors by `bad_blocks_are_never_read`.
fn junk(mi: usize) -> u8 {
    0xA5 ^ (mi as u8 * 0x11)
}

/// Bad blocks are never read. The two kernel-made bad-block fixtures (1.2 and 1.0: vda lists
/// one range, vdb two, device-absolute) get different bytes written into each member's listed
/// sectors on the host, so the members differ exactly there. Linux (one boot, both arrays)
/// serves them with no preference and with each member preferred (the other one
/// write-mostly through sysfs); raid1 serves copies with no preference and with each member
/// preferred (the other one's WriteMostly flag set in its superblock), three full reads each.
/// raid1 must serve the fixture's pattern every time (a read served from a bad block shows up
/// as the junk), and so must Linux, with one exception the test pins exactly: Linux 6.1's
/// read_balance, with the first member preferred and the second write-mostly, reads the first
/// member's listed sectors (its write-mostly branch resets the good-sector count that the bad
/// block had cut), so its bytes must then be the pattern with exactly those sectors holding the
/// first member's junk. A third copy of the 1.2 pair gets, in the same boot, a bad block on
/// its first member where the second lists one too: Linux and raid1 (on the images the kernel
/// left, its log on disk) must both fail a read of those sectors with EIO and serve around them.
#[test]
fn bad_blocks_are_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let cases = ["badblocks", "badblocks-v1.0"];
    let prefs = ["none", "vda", "vdb"];
    let mut linux_imgs = Vec::new();
    // raid1's copies: (case, preference) -> images.
    let mut ours: Vec<(usize, &str, Vec<PathBuf>)> = Vec::new();
    for (ci, case) in cases.iter().enumerate() {
        let man = manifest(case);
        let imgs = unpack(case, dir.path(), &format!("linux-{ci}-"));
        for (mi, name) in man["members"].split_whitespace().enumerate() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&imgs[mi])
                .unwrap();
            for range in man[&format!("{name}.badblocks")].split_whitespace() {
                let (s, n) = range.split_once('+').unwrap();
                let (s, n): (u64, u64) = (s.parse().unwrap(), n.parse().unwrap());
                f.write_all_at(&vec![junk(mi); (n * 512) as usize], s * 512)
                    .unwrap();
            }
        }
        for p in prefs {
            let copies: Vec<PathBuf> = imgs
                .iter()
                .enumerate()
                .map(|(mi, src)| {
                    let dst = dir
                        .path()
                        .join(format!("ours-{ci}-{p}-vd{}.img", (b'a' + mi as u8) as char));
                    std::fs::copy(src, &dst).unwrap();
                    dst
                })
                .collect();
            match p {
                "vda" => set_write_mostly(&copies[1]),
                "vdb" => set_write_mostly(&copies[0]),
                _ => {}
            }
            ours.push((ci, p, copies));
        }
        linux_imgs.extend(imgs);
    }
    // md2: one more copy of the scribbled 1.2 pair, on which the kernel adds vda's 4096+8 so
    // that those sectors are bad on both members; raid1 serves the images the kernel left.
    let hole: Vec<PathBuf> = ["vda", "vdb"]
        .iter()
        .enumerate()
        .map(|(mi, name)| {
            let dst = dir.path().join(format!("hole-{name}.img"));
            std::fs::copy(&linux_imgs[mi], &dst).unwrap();
            dst
        })
        .collect();
    linux_imgs.extend(hole.iter().cloned());
    // md3: a bad block raid1 recorded at run time (a write error on its second member, behind
    // nbdkit and nbdfuse): Linux must read the log raid1 wrote and keep reads off the range.
    let recorded = record_a_bad_block(dir.path());
    linux_imgs.extend(recorded.images.iter().cloned());
    let script = r#"
for md in md0 md1; do
  case $md in md0) a=vda; b=vdb;; md1) a=vdc; b=vdd;; esac
  mdadm --assemble /dev/$md /dev/$a /dev/$b >asm.out 2>&1; line $md assemble=$?; cat asm.out
  s=/sys/block/$md/md
  line $md bb_first="$(cat $s/dev-$a/bad_blocks | tr ' \n' '+,')" bb_second="$(cat $s/dev-$b/bad_blocks | tr ' \n' '+,')"
  echo 3 > /proc/sys/vm/drop_caches; line $md sha_none=$(sha256sum /dev/$md | cut -d' ' -f1)
  echo writemostly > $s/dev-$b/state
  echo 3 > /proc/sys/vm/drop_caches; line $md sha_vda=$(sha256sum /dev/$md | cut -d' ' -f1)
  echo -writemostly > $s/dev-$b/state; echo writemostly > $s/dev-$a/state
  echo 3 > /proc/sys/vm/drop_caches; line $md sha_vdb=$(sha256sum /dev/$md | cut -d' ' -f1)
  echo -writemostly > $s/dev-$a/state
  line $md states="$(cat $s/dev-$a/state),$(cat $s/dev-$b/state)"
done
# md2 has md0's UUID: stop md0 first.
mdadm --stop /dev/md0 >/dev/null 2>&1
mdadm --assemble /dev/md2 /dev/vde /dev/vdf >asm.out 2>&1; line md2 assemble=$?; cat asm.out
echo "4096 8" > /sys/block/md2/md/dev-vde/bad_blocks
# Rewrite block 0 with what it holds so that the kernel writes the superblocks and logs.
dd if=/dev/md2 of=b0 bs=4096 count=1 iflag=direct 2>/dev/null
dd if=b0 of=/dev/md2 bs=4096 count=1 oflag=direct conv=notrunc,fsync 2>/dev/null
rd() { dd if=/dev/md2 of=/dev/null bs=512 skip=$1 count=$2 iflag=direct 2>/dev/null; echo $?; }
line md2 hole=$(rd 2048 8) straddle=$(rd 2040 16) before=$(rd 2040 8) after=$(rd 2056 8)
line md2 bb_first="$(cat /sys/block/md2/md/dev-vde/bad_blocks | tr ' \n' '+,')" bb_second="$(cat /sys/block/md2/md/dev-vdf/bad_blocks | tr ' \n' '+,')"
mdadm --assemble /dev/md3 /dev/vdg /dev/vdh >asm.out 2>&1; line md3 assemble=$?; cat asm.out
s=/sys/block/md3/md
line md3 bb_first="$(cat $s/dev-vdg/bad_blocks | tr ' \n' '+,')" bb_second="$(cat $s/dev-vdh/bad_blocks | tr ' \n' '+,')"
echo 3 > /proc/sys/vm/drop_caches; line md3 sha_none=$(sha256sum /dev/md3 | cut -d' ' -f1)
echo writemostly > $s/dev-vdg/state
echo 3 > /proc/sys/vm/drop_caches; line md3 sha_vdh=$(sha256sum /dev/md3 | cut -d' ' -f1)
line md3 states="$(cat $s/dev-vdg/state),$(cat $s/dev-vdh/state)"
"#;
    let g = boot(&linux_imgs, script, "badblocks");
    let mut cells = Cells::new("bad_blocks_are_never_read");
    for (ci, case) in cases.iter().enumerate() {
        let md = format!("md{ci}");
        assert_eq!(g.fact(&md, "assemble"), "0", "{}", g.log);
        eprintln!(
            "linux {case}: bad_blocks {} / {}",
            g.fact(&md, "bb_first"),
            g.fact(&md, "bb_second")
        );
        let man = manifest(case);
        let pattern = man["array_sha256"].clone();
        for p in prefs {
            let linux = g.fact(&md, &format!("sha_{p}"));
            let mut problems = Vec::new();
            let t0 = Instant::now();
            let (_, _, devs) = ours.iter().find(|(c, q, _)| *c == ci && *q == p).unwrap();
            let s = Server::start(dir.path(), &format!("bb{ci}{p}"), &[], devs);
            let raw0 = dir.path().join(format!("bb{ci}{p}-0.raw"));
            for round in 0..3 {
                let sha = s.read_all(&dir.path().join(format!("bb{ci}{p}-{round}.raw")));
                if sha != pattern {
                    problems.push(format!(
                        "raid1 read {round} with preference {p}: {sha}, not the pattern {pattern} \
                         (Linux: {linux})"
                    ));
                }
            }
            s.stop();
            if linux == pattern {
                eprintln!("COMPARE {case} prefer-{p}: raid1 = Linux = pattern {pattern}");
            } else {
                // Linux's bytes as its 6.1 read_balance serves them when the preferred member
                // comes first: the pattern, except the preferred member's listed sectors.
                let mut bytes = std::fs::read(&raw0).unwrap();
                let mi = if p == "vda" { 0 } else { 1 };
                let name = ["vda", "vdb"][mi];
                let off: u64 = man[&format!("{name}.data_offset")].parse().unwrap();
                for range in man[&format!("{name}.badblocks")].split_whitespace() {
                    let (a, n) = range.split_once('+').unwrap();
                    let (a, n): (u64, u64) = (a.parse().unwrap(), n.parse().unwrap());
                    let from = ((a - off) * 512) as usize;
                    bytes[from..from + (n * 512) as usize].fill(junk(mi));
                }
                let f = dir.path().join(format!("bb{ci}{p}-linux-model.raw"));
                std::fs::write(&f, &bytes).unwrap();
                let model = sha256_file(&f);
                if p == "vda" && linux == model {
                    eprintln!(
                        "COMPARE {case} prefer-{p}: Linux {linux} = the pattern with {name}'s \
                         listed sectors ({}) read from {name} (its bad blocks); raid1 = pattern \
                         {pattern}",
                        man[&format!("{name}.badblocks")]
                    );
                } else {
                    problems.push(format!(
                        "Linux served {linux} with preference {p}: neither the pattern \
                         {pattern} nor the pattern with {name}'s listed sectors ({model})"
                    ));
                }
            }
            cells.record(
                &format!("{case}/prefer-{p}"),
                t0.elapsed().as_secs_f64(),
                problems,
            );
        }
    }
    // Sectors bad on every member: both fail the read with EIO, and serve around them.
    let t0 = Instant::now();
    let mut problems = Vec::new();
    let md2 = |k: &str| g.fact("md2", k);
    assert_eq!(md2("assemble"), "0", "{}", g.log);
    eprintln!(
        "linux md2: bad_blocks {} / {}",
        md2("bb_first"),
        md2("bb_second")
    );
    let s = Server::start(dir.path(), "bbhole", &[], &hole);
    for (cell, sector, sectors, want_ok) in [
        ("hole", 2048u64, 8u64, false),
        ("straddle", 2040, 16, false),
        ("before", 2040, 8, true),
        ("after", 2056, 8, true),
    ] {
        let linux_ok = md2(cell) == "0";
        let out = tool(Command::new("qemu-io").args([
            "-f",
            "raw",
            &s.uri(),
            "-c",
            &format!("read {} {}", sector * 512, sectors * 512),
        ]));
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        let ours_ok = !all.contains("failed");
        eprintln!(
            "COMPARE hole {cell} {sector}+{sectors}: Linux {} raid1 {} ({})",
            if linux_ok { "ok" } else { "EIO" },
            if ours_ok { "ok" } else { "EIO" },
            all.trim().replace('\n', " / ")
        );
        if linux_ok != want_ok || ours_ok != linux_ok {
            problems.push(format!(
                "read {sector}+{sectors}: Linux {}, raid1 {}, expected {}",
                if linux_ok { "ok" } else { "EIO" },
                if ours_ok { "ok" } else { "EIO" },
                if want_ok { "ok" } else { "EIO" }
            ));
        }
    }
    s.stop();
    cells.record(
        "badblocks/bad-on-both-members",
        t0.elapsed().as_secs_f64(),
        problems,
    );
    // The log raid1 recorded: Linux lists the range on the second member and never serves
    // the stale bytes still there, even with that member preferred.
    let t0 = Instant::now();
    let mut problems = Vec::new();
    let md3 = |k: &str| g.fact("md3", k);
    assert_eq!(md3("assemble"), "0", "{}", g.log);
    let want = format!("{}+{},", recorded.sector, recorded.sectors);
    eprintln!(
        "linux md3: bad_blocks {} / {} (raid1 recorded {want})",
        md3("bb_first"),
        md3("bb_second")
    );
    if md3("bb_second") != want || !md3("bb_first").is_empty() {
        problems.push(format!(
            "Linux lists {:?} / {:?}, raid1 recorded {want} on the second member",
            md3("bb_first"),
            md3("bb_second")
        ));
    }
    for k in ["sha_none", "sha_vdh"] {
        if md3(k) != recorded.sha {
            problems.push(format!(
                "Linux served {} ({k}), raid1 served {}",
                md3(k),
                recorded.sha
            ));
        }
    }
    if md3("states").contains("faulty") {
        problems.push(format!("member states {}", md3("states")));
    }
    cells.record(
        "badblocks/recorded-at-run-time",
        t0.elapsed().as_secs_f64(),
        problems,
    );
    cells.finish(&g.log);
}

/// A pair raid1 made and ran, with a bad block it recorded on the second member after a write
/// error there, stopped cleanly.
struct Recorded {
    images: Vec<PathBuf>,
    /// The recorded range, device-absolute.
    sector: u64,
    sectors: u64,
    /// sha256 of the array as raid1 served it.
    sha: String,
}

fn record_a_bad_block(dir: &Path) -> Recorded {
    let images: Vec<PathBuf> = (0..2)
        .map(|i| blank(dir, &format!("rec-{i}.img")))
        .collect();
    create(&["-n", "2", "--assume-clean"], &images);
    let all = std::fs::read(&images[1]).unwrap();
    let off = find_superblock(&all).unwrap().1.data_offset;
    let sub = dir.join("rec");
    std::fs::create_dir_all(&sub).unwrap();
    let fuse = ArmedMember::start(&images[1], &sub);
    let s = Server::start(&sub, "rec", &[], &[images[0].clone(), fuse.disk()]);
    let io = |cmd: &str| {
        ok(Command::new("qemu-io")
            .args(["-f", "raw", "-c", cmd])
            .arg(s.uri()))
    };
    io("write -P 0x11 0 4M");
    fuse.arm((off + 2048) * 512, (off + 2048) * 512 + 65536);
    let out = io("write -P 0x22 1M 64K");
    assert!(!out.contains("fail"), "{out}");
    fuse.disarm();
    let sha = s.read_all(&sub.join("rec.raw"));
    s.stop();
    drop(fuse);
    Recorded {
        images,
        sector: off + 2048,
        sectors: 128,
        sha,
    }
}

/// `raid1 run --update=...` on arrays raid1 made, then Linux: each updated pair assembles in
/// the kernel and shows the change (the new name and UUID, which the kernel also checks
/// against the bitmap header; no bitmap; the grown data_size; the log re-reserved; a resync
/// pending), and the guest's own mdadm, asked for `--update=bbl` on a copy without a log,
/// puts the log where raid1 put it.
#[test]
fn updated_superblocks_assemble_in_linux() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cells = Cells::new("updated_superblocks_assemble_in_linux");
    let uuid = "0a1b2c3d:4e5f6071:8293a4b5:c6d7e8f9";
    let pair = |k: &str, create_args: &[&str]| -> Vec<PathBuf> {
        let imgs: Vec<PathBuf> = (0..2).map(|i| blank(d, &format!("u{k}-{i}.img"))).collect();
        let mut args = vec!["-n", "2", "--assume-clean", "-N", k];
        args.extend_from_slice(create_args);
        create(&args, &imgs);
        imgs
    };
    let run = |name: &str, extra: &[&str], imgs: &[PathBuf]| {
        let s = Server::start(d, name, extra, imgs);
        s.stop();
    };
    let t0 = Instant::now();
    let name = pair("nm", &[]);
    run(
        "renamed",
        &["--update", "name", "--homehost", "mdoracle"],
        &name,
    );
    let id = pair("id", &["--bitmap", "internal"]);
    run("id", &["--update", "uuid"], &id);
    // --uuid goes through the command line the way mdadm takes it.
    ok(Command::new(RAID1)
        .env("RAID1_RUN_DIR", d.join("rd"))
        .args(["run", "--daemon", "--update", "uuid", "--uuid", uuid])
        .args(&id));
    ok(Command::new(RAID1)
        .env("RAID1_RUN_DIR", d.join("rd"))
        .args(["stop", "id"]));
    let nb = pair("nb", &["--bitmap", "internal"]);
    run("nb", &["--update", "no-bitmap"], &nb);
    let ds = pair("ds", &[]);
    for p in &ds {
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(24 * MIB)
            .unwrap();
    }
    run("ds", &["--update", "devicesize"], &ds);
    let bb = pair("bb", &[]);
    run("bb", &["--update", "no-bbl"], &bb);
    // A copy without a log, for the guest's mdadm to re-reserve it.
    let theirs: Vec<PathBuf> = bb
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let q = d.join(format!("theirs-{i}.img"));
            std::fs::copy(p, &q).unwrap();
            q
        })
        .collect();
    run("bb", &["--update", "bbl"], &bb);
    let rs = pair("rs", &["--bitmap", "none"]);
    run("rs", &["--update", "resync", "--sync-speed-max", "16"], &rs);
    // A bitmap added to the running array (raid1 grow --bitmap internal, with a 64 KiB chunk
    // as mdadm's --bitmap-chunk), then written to.
    let gb = pair("gb", &["--bitmap", "none"]);
    let s = Server::start(d, "gb", &[], &gb);
    let refused = s.ctl(&["grow", "gb", "--bitmap", "internal", "--bitmap-chunk", "2K"]);
    assert!(
        !refused.status.success() && text(&refused.stderr).contains("below 4 KiB"),
        "{}",
        text(&refused.stderr)
    );
    s.ctl_ok(&[
        "grow",
        "gb",
        "--bitmap",
        "internal",
        "--bitmap-chunk",
        "64K",
    ]);
    ok(Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x3c 1M 2M"])
        .arg(s.uri()));
    let gb_sha = s.read_all(&d.join("gb.raw"));
    s.stop();
    let x = ok(Command::new(RAID1).arg("examine-bitmap").arg(&gb[0]));
    assert!(x.contains("Chunksize : 64 KB"), "{x}");
    // An array grown by raid1 grow --size while running: both files grow from 16 to 24 MiB,
    // the bitmap (512-byte chunks, its room full) doubles its chunk, data goes beyond the old
    // end, the new region is resynced.
    let gz = pair("gz", &["--bitmap", "internal"]);
    small_chunk_bitmap(&gz);
    let s = Server::start(d, "gz", &[], &gz);
    ok(Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x5a 0 1M"])
        .arg(s.uri()));
    for p in &gz {
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(24 * MIB)
            .unwrap();
    }
    s.ctl_ok(&["grow", "gz", "--size", "max"]);
    s.ctl_ok(&["wait", "gz"]);
    ok(Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0xc3 21M 1M"])
        .arg(s.uri()));
    let gz_sha = s.read_all(&d.join("gz.raw"));
    let gz_kib = s.detail()["array_size_kib"].as_u64().unwrap_or(0);
    s.stop();
    // A replacement stopped mid-way (raid1 replace, then stop): Linux resumes it and hands
    // the slot over.
    let rp = pair("rp", &[]);
    let spare = blank(d, "urp-2.img");
    let s = Server::start(d, "rp", &["--sync-speed-max", "64"], &rp);
    ok(Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x5e 0 3M"])
        .arg(s.uri()));
    let rp_sha = s.read_all(&d.join("rp.raw"));
    s.ctl_ok(&["add", "rp", spare.to_str().unwrap()]);
    s.ctl_ok(&["replace", "rp", rp[0].to_str().unwrap()]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    s.stop();
    let rp_role = examine_field(&spare, "Device Role");
    let host_secs = t0.elapsed().as_secs_f64();
    let ours_log = examine_field(&bb[0], "Bad Block Log");
    let ds_avail = examine_field(&ds[0], "Avail Dev Size");

    let mut images = Vec::new();
    for set in [&name, &id, &nb, &ds, &bb, &theirs, &rs, &gb, &gz] {
        images.extend(set.iter().cloned());
    }
    images.extend(rp.iter().cloned());
    images.push(spare.clone());
    let script = r#"
asm() { md=$1; shift; mdadm --assemble /dev/$md "$@" >asm.out 2>&1; line $md assemble=$?; cat asm.out; }
asm md10 /dev/vda /dev/vdb; detail md10
asm md11 /dev/vdc /dev/vdd; detail md11
line md11 bitmap=$(cat /sys/block/md11/md/bitmap/location)
asm md12 /dev/vde /dev/vdf; detail md12
line md12 bitmap=$(cat /sys/block/md12/md/bitmap/location)
asm md13 /dev/vdg /dev/vdh; detail md13
line md13 avail="$(mdadm --examine /dev/vdg | sed -n 's/^ *Avail Dev Size : //p' | tr ' ' '_')"
asm md14 /dev/vdi /dev/vdj; detail md14
line md14 log="$(mdadm --examine /dev/vdi | sed -n 's/^ *Bad Block Log : //p' | tr ' ' '_')"
mdadm --stop /dev/md14 >/dev/null 2>&1
asm md15 --update=bbl /dev/vdk /dev/vdl
line md15 log="$(mdadm --examine /dev/vdk | sed -n 's/^ *Bad Block Log : //p' | tr ' ' '_')"
asm md16 --readonly /dev/vdm /dev/vdn
line md16 resync_start=$(cat /sys/block/md16/md/resync_start)
asm md17 /dev/vdo /dev/vdp; detail md17
line md17 bitmap=$(cat /sys/block/md17/md/bitmap/location) chunk=$(cat /sys/block/md17/md/bitmap/chunksize)
sha md17
asm md18 /dev/vdq /dev/vdr; detail md18
line md18 size=$(cat /sys/block/md18/md/component_size) chunk=$(cat /sys/block/md18/md/bitmap/chunksize)
sha md18
check md18
asm md19 /dev/vds /dev/vdt /dev/vdu; idle md19; sleep 1; detail md19
line md19 vdu=$(cat /sys/block/md19/md/dev-vdu/state | tr , _) vds=$(cat /sys/block/md19/md/dev-vds/state 2>/dev/null | tr , _)
sha md19
"#;
    let g = boot(&images, script, "update");
    let detail_has = |md: &str, key: &str, want: &str| -> Option<String> {
        let v = g
            .detail(md)
            .lines()
            .find_map(|l| l.split_once(" : ").filter(|(k, _)| k.trim() == key))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        (!v.starts_with(want)).then(|| format!("{md}: {key} is {v:?}, expected {want:?}"))
    };
    let secs = host_secs / 10.0;
    let mut cell = |name: &str, problems: Vec<Option<String>>| {
        cells.record(name, secs, problems.into_iter().flatten().collect());
    };
    for md in [
        "md10", "md11", "md12", "md13", "md14", "md15", "md16", "md17", "md18", "md19",
    ] {
        assert_eq!(g.fact(md, "assemble"), "0", "{md}: {}", g.log);
    }
    cell("name", vec![detail_has("md10", "Name", "mdoracle:renamed")]);
    cell(
        "uuid",
        vec![
            detail_has("md11", "UUID", uuid),
            (g.fact("md11", "bitmap") != "+8")
                .then(|| format!("md11: bitmap {}", g.fact("md11", "bitmap"))),
        ],
    );
    cell(
        "no-bitmap",
        vec![
            detail_has("md12", "Consistency Policy", "resync"),
            (g.fact("md12", "bitmap") != "none")
                .then(|| format!("md12: bitmap {}", g.fact("md12", "bitmap"))),
        ],
    );
    cell(
        "devicesize",
        vec![
            (g.fact("md13", "avail").replace('_', " ") != ds_avail).then(|| {
                format!(
                    "md13: Linux's mdadm reads Avail Dev Size {}, ours {ds_avail}",
                    g.fact("md13", "avail")
                )
            }),
        ],
    );
    cell(
        "bbl",
        vec![
            (g.fact("md14", "log").replace('_', " ") != ours_log)
                .then(|| format!("md14: log {} / ours {ours_log}", g.fact("md14", "log"))),
            (g.fact("md15", "log").replace('_', " ") != ours_log).then(|| {
                format!(
                    "mdadm --update=bbl puts the log at {}, raid1 at {ours_log}",
                    g.fact("md15", "log")
                )
            }),
        ],
    );
    cell(
        "grow-bitmap",
        vec![
            detail_has("md17", "Consistency Policy", "bitmap"),
            (g.fact("md17", "bitmap") != "+8")
                .then(|| format!("md17: bitmap {}", g.fact("md17", "bitmap"))),
            (g.fact("md17", "sha") != gb_sha).then(|| {
                format!(
                    "md17: Linux read {}, raid1 served {gb_sha}",
                    g.fact("md17", "sha")
                )
            }),
        ],
    );
    cell(
        "grow-size",
        vec![
            (gz_kib != 23 * 1024).then(|| format!("raid1 detail: array size {gz_kib} KiB")),
            detail_has("md18", "Array Size", &gz_kib.to_string()),
            detail_has("md18", "Used Dev Size", &gz_kib.to_string()),
            (g.fact("md18", "size") != gz_kib.to_string())
                .then(|| format!("md18: component_size {}", g.fact("md18", "size"))),
            (g.fact("md18", "chunk") != "1024")
                .then(|| format!("md18: bitmap chunk {}", g.fact("md18", "chunk"))),
            (g.fact("md18", "sha") != gz_sha).then(|| {
                format!(
                    "md18: Linux read {}, raid1 served {gz_sha}",
                    g.fact("md18", "sha")
                )
            }),
            (g.fact("md18", "mismatch") != "0")
                .then(|| format!("md18: mismatch_cnt {}", g.fact("md18", "mismatch"))),
        ],
    );
    cell(
        "resync",
        vec![
            (g.fact("md16", "resync_start") == "none")
                .then(|| "md16: Linux sees no resync pending".to_string()),
        ],
    );
    cell(
        "replace",
        vec![
            (rp_role != "Replacement device 0")
                .then(|| format!("raid1 left the spare as {rp_role:?}, not mid-way")),
            detail_has("md19", "Active Devices", "2"),
            (g.fact("md19", "vdu") != "in_sync").then(|| {
                format!(
                    "md19: the replacement is {:?} after Linux's rebuild",
                    g.fact("md19", "vdu")
                )
            }),
            (!matches!(g.fact("md19", "vds").as_str(), "" | "faulty")).then(|| {
                format!(
                    "md19: the replaced member is {:?}, not faulty or removed",
                    g.fact("md19", "vds")
                )
            }),
            (g.fact("md19", "sha") != rp_sha).then(|| {
                format!(
                    "md19: Linux read {}, raid1 served {rp_sha}",
                    g.fact("md19", "sha")
                )
            }),
        ],
    );
    cells.finish(&g.log);
}

/// A field of `mdadm --examine DEV` on the host.
fn examine_field(dev: &Path, key: &str) -> String {
    ok(Command::new("mdadm").arg("--examine").arg(dev))
        .lines()
        .find_map(|l| l.split_once(" : ").filter(|(k, _)| k.trim() == key))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("{}: no {key}", dev.display()))
}
