//! The running array of `raid1 run`: assemble it from its members and serve it over NBD.
//!
//! Two threads per array (one process): the array loop (`event_loop.rs`) owns the engine, the
//! member ring and the control socket; the NBD server runs on a thread of its own and hands
//! requests over through the link (`link.rs`). See `docs/CLI.md`.

mod adaptor;
pub mod assemble;
pub mod control;
mod discard;
pub mod engine;
pub mod event_loop;
mod grow_bitmap;
pub mod grow_size;
pub mod link;
mod metadata;
pub mod remote;
pub mod trust;
pub mod update;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use raid1_core::{
    Array, AssembleError, BadBlockError, BadBlocks, BadRange, Config, MemberId, MemberState,
    StartPolicy,
};

use crate::nbd::{ListenAddress, ServerConfig};
use crate::text::uuid_text;
use engine::{Dev, MAX_REQUEST_BYTES, RaidEngine};

/// Member positions (`dev_number` 0..MEMBERS) a running array handles.
pub const MEMBERS: usize = 16;
/// Logical requests in the core's table.
pub const REQUESTS: usize = 256;
/// Sync windows.
pub const SYNC_WINDOWS: usize = 8;
/// The core instantiation of the host tool.
pub type RaidArray = Array<'static, MEMBERS, REQUESTS, SYNC_WINDOWS>;

/// Default sync speed limit, KiB/s (md's `speed_limit_max` default is 200000).
pub const DEFAULT_SYNC_SPEED_MAX: u64 = 200_000;

/// What `raid1 run` starts an array with (its command-line arguments but `--daemon`).
#[derive(Debug, Clone, clap::Args)]
pub struct StartOptions {
    /// Where to serve NBD: `unix:PATH` or `tcp:127.0.0.1:PORT` (default:
    /// unix:$RAID1_RUN_DIR/NAME.nbd).
    #[arg(long, value_name = "ADDRESS")]
    pub nbd: Option<String>,
    /// Name of the array (control socket, NBD export); default: the name part of the set
    /// name, else the UUID.
    #[arg(long)]
    pub name: Option<String>,
    /// Start even with fewer working mirrors than the array had when last updated (mdadm's
    /// `--run`); an array that was already degraded then starts without it.
    #[arg(long)]
    pub degraded_ok: bool,
    /// Take back members that are out of date (mdadm's `--assemble --force`): their events
    /// lag, the array lists them as failed or removed, or they ran without the others (split
    /// brain). They are rebuilt from the array (in full after a split brain, else as the
    /// bitmap allows), never trusted as in sync; their own writes since they left are lost.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Resync / recovery speed limit in KiB/s (0: unlimited).
    #[arg(long, value_name = "KIB_PER_SEC", default_value_t = DEFAULT_SYNC_SPEED_MAX)]
    pub sync_speed_max: u64,
    /// md's sync_speed_min in KiB/s: while requests are in flight the resync / recovery / check
    /// slows down to it (0: it does not slow down for them).
    #[arg(long, value_name = "KIB_PER_SEC", default_value_t = 0)]
    pub sync_speed_min: u64,
    /// Limits of the NBD server.
    #[command(flatten)]
    pub nbd_limits: crate::nbd::NbdLimitArgs,
    /// Members that are NBD exports.
    #[command(flatten)]
    pub remote: remote::RemoteArgs,
    /// The block device beside NBD (`--ublk`).
    #[command(flatten)]
    pub ublk: crate::ublk::UblkArgs,
    /// Change one aspect of every member's superblock before the array starts (mdadm's
    /// `--assemble --update=`): name (to `--name`), homehost (to `--homehost`), uuid (to
    /// `--uuid`, else random), resync, devicesize, no-bitmap, bbl, no-bbl, force-no-bbl.
    #[arg(long, value_enum, value_name = "WHAT")]
    pub update: Option<update::Update>,
    /// The home host `--update=name` / `--update=homehost` write (default: HOMEHOST of the
    /// configuration file, else this host's name; `<none>`: no home host).
    #[arg(long, value_name = "HOST", requires = "update")]
    pub homehost: Option<String>,
    /// The new UUID for `--update=uuid` (taken from `--uuid`).
    #[arg(skip)]
    pub new_uuid: Option<String>,
    /// Start read-only (mdadm's `--readonly`): nothing is written to any member, not even a
    /// resync or the superblocks, until `raid1 readwrite NAME`.
    #[arg(long, conflicts_with = "update")]
    pub readonly: bool,
    /// Member devices or image files (with `--scan`: found through the configuration file).
    #[arg(required_unless_present = "scan", value_name = "DEV")]
    pub devices: Vec<PathBuf>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// The directory of control sockets: `$RAID1_RUN_DIR`, default `/run/raid1`.
pub fn run_dir() -> PathBuf {
    std::env::var_os("RAID1_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/raid1"))
}

/// Path of the control socket of array `name`.
pub fn control_path(name: &str) -> PathBuf {
    run_dir().join(format!("{name}.sock"))
}

fn install_signals() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = 0;
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Assembles the array from `args.devices` (nothing is written before every device is read
/// and checked) and builds the engine.
pub fn assemble_engine(args: &StartOptions) -> Result<(RaidEngine, String), String> {
    if let Some(n) = &args.name {
        assemble::check_name(n).map_err(|e| format!("--name: {e}"))?;
    }
    let mut sel = assemble::select(&args.devices, args.force)?;
    for (p, why) in &sel.refused {
        let hint = if args.force {
            ""
        } else {
            " (--force takes it back, rebuilt from the array)"
        };
        eprintln!("raid1 run: {} not included: {why}{hint}", p.display());
    }
    for (p, why) in &sel.forced {
        eprintln!(
            "raid1 run: {} taken back with --force and rebuilt from the array: {why}",
            p.display()
        );
    }
    if let Some(what) = args.update {
        if what == update::Update::Name && args.name.is_none() {
            return Err("--update=name needs --name NAME (the new name)".into());
        }
        let notes = update::apply(
            &update::UpdateArgs {
                what,
                name: args.name.as_deref(),
                homehost: args.homehost.as_deref(),
                uuid: args.new_uuid.as_deref(),
            },
            &mut sel.members,
        )?;
        for n in notes {
            eprintln!("raid1 run: --update={}: {n}", what.word());
        }
    }
    let verdict = trust::adopt_array_bitmap(&mut sel.members, sel.fresh)?;
    for (p, why) in &verdict.replaced {
        eprintln!("raid1 run: {p}: its bitmap is not used ({why}); it gets the array's bitmap");
    }
    // A member whose superblock is a round behind a grow (a crash between the members'
    // writes) records a smaller data area: it takes the room its device has, as at the grow.
    let array_size = sel.members[sel.fresh].meta.sb.size;
    for m in sel.members.iter_mut() {
        if let Some(note) = grow_size::fit_data_size(&mut m.meta, array_size)? {
            eprintln!("raid1 run: {note} (the array's size is {array_size} sectors)");
        }
    }
    let fresh = &sel.members[sel.fresh];
    let (name, note) = assemble::array_name(&fresh.meta.sb, args.name.as_deref());
    if let Some(note) = note {
        eprintln!("raid1 run: {}: {note}", fresh.meta.path.display());
    }
    let mut cfg = Config::new(fresh.meta.sb.size);
    cfg.read_only = args.readonly;
    cfg.max_request_sectors = MAX_REQUEST_BYTES / 512;
    cfg.sync_checkpoint_sectors = 8192;
    let bitmap_chunk = match &fresh.meta.bitmap {
        Some((b, _)) if fresh.state::<MEMBERS>()?.bitmap => Some(b.chunk_sectors()),
        _ => None,
    };
    if let Some(c) = bitmap_chunk {
        cfg.bitmap_chunk_sectors = c;
        // md's write-behind and the daemon's period come with the bitmap (its header's
        // `write_behind` and `daemon_sleep`, at least 1 s: a header saying 0 is refused).
        if let Some((b, _)) = &fresh.meta.bitmap {
            cfg.write_behind = u16::try_from(b.write_behind).unwrap_or(u16::MAX);
            cfg.bitmap_daemon_ns = u64::from(b.daemon_sleep.max(1)) * 1_000_000_000;
        }
    }
    let bytes = RaidArray::bitmap_bytes(&cfg);
    let bitmap = if bytes > 0 {
        let bits: &'static mut [u8] = Box::leak(vec![0u8; bytes].into_boxed_slice());
        let hot: &'static mut [u8] = Box::leak(vec![0u8; bytes].into_boxed_slice());
        // The OR of every included member's bitmap.
        for m in &sel.members {
            if let Some((_, image)) = &m.meta.bitmap {
                for (b, d) in bits.iter_mut().zip(image.iter().skip(256)) {
                    *b |= *d;
                }
            }
        }
        if verdict.out_of_date {
            eprintln!(
                "raid1 run: array {name}: the bitmap is out of date (marked stale, or events \
                 behind the superblock's): every chunk is marked dirty"
            );
            trust::set_all(bits, cfg.data_sectors.div_ceil(cfg.bitmap_chunk_sectors));
        }
        // Bits past the last chunk stay as on disk (the image), not in the core.
        Some((bits, hot))
    } else {
        None
    };
    let mut found = [None; MEMBERS];
    // Each member's bad-block log, lent to the core for the life of the process (as the
    // bitmap): reads and sync never use a listed sector of that member.
    let mut bad: [BadBlocks<'static>; MEMBERS] = std::array::from_fn(|_| BadBlocks::empty());
    // Slots whose member's own superblock claims them: a spare recovered into a free slot does
    // not count towards starting (mdadm counts in-sync and rebuilding members only).
    let mut claimed = Vec::new();
    for m in &sel.members {
        let i = m.meta.sb.dev_number as usize;
        let st = m.state::<MEMBERS>()?;
        found[i] = Some(st);
        if let raid1_core::Role::Active(s) = st.own_role() {
            claimed.push(s);
        }
        let ranges = m.bad_ranges(cfg.data_sectors);
        if !ranges.is_empty() {
            eprintln!(
                "raid1 run: {}: {} bad-block range(s) in its log: never read from there",
                m.meta.path.display(),
                ranges.len()
            );
        }
        // A member with a log gets room in it: write errors are recorded there (md).
        if !ranges.is_empty() || m.meta.has_log() {
            bad[i] = lend_bad_blocks(ranges);
        }
    }
    let array =
        RaidArray::assemble_with_bad_blocks(cfg, bitmap, &found, StartPolicy::AllowDegraded, bad)
            .map_err(|e| match e {
            AssembleError::BadBlocks(b) => {
                let path = |id: MemberId| {
                    sel.members
                        .iter()
                        .find(|m| m.meta.sb.dev_number == u32::from(id.0))
                        .map_or_else(
                            || format!("member {}", id.0),
                            |m| m.meta.path.display().to_string(),
                        )
                };
                format!(
                    "array {name}: cannot assemble: {}",
                    bad_block_text(&b, &path)
                )
            }
            e => format!("array {name}: cannot assemble: {e}"),
        })?;
    let st = array.status();
    let mut covered = vec![false; usize::from(st.raid_disks)];
    for i in 0..MEMBERS {
        if let Some(m) = array.member(MemberId(i as u8)) {
            if let (
                raid1_core::Role::Active(s),
                MemberState::InSync | MemberState::Recovering { .. },
            ) = (m.role, m.state)
            {
                if let Some(c) = covered
                    .get_mut(usize::from(s))
                    .filter(|_| claimed.contains(&s))
                {
                    *c = true;
                }
            }
        }
    }
    let missing: Vec<String> = covered
        .iter()
        .enumerate()
        .filter(|(_, c)| !**c)
        .map(|(i, _)| i.to_string())
        .collect();
    // The slots the freshest superblock records as working (an active role in its table): an
    // array that was already degraded when last updated (`Array State : A.`) starts as it
    // was, as `mdadm --assemble` starts it; one that would start with fewer working mirrors
    // than that needs --degraded-ok (mdadm's --run).
    let recorded: std::collections::BTreeSet<u16> = (0..fresh.meta.sb.max_dev)
        .filter_map(|i| fresh.meta.sb.role(i))
        .map(|r| r.to_raw())
        .filter(|s| *s < st.raid_disks)
        .collect();
    let lost: Vec<String> = recorded
        .iter()
        .filter(|s| !covered.get(usize::from(**s)).copied().unwrap_or(false))
        .map(|s| s.to_string())
        .collect();
    let present = usize::from(st.raid_disks) - missing.len();
    if !lost.is_empty() && !args.degraded_ok {
        return Err(format!(
            "array {name} ({}) would start with {present} of {} mirrors, fewer than the {} that \
             were working when it was last updated: slot(s) {} missing; give the missing \
             member(s) or use --degraded-ok to start it degraded",
            uuid_text(&fresh.meta.sb.set_uuid.0),
            st.raid_disks,
            recorded.len(),
            lost.join(", ")
        ));
    }
    if !missing.is_empty() {
        eprintln!(
            "raid1 run: array {name} started with {present} drive(s) (out of {}): slot(s) {} \
             missing",
            st.raid_disks,
            missing.join(", ")
        );
    }
    if let Some(what) = args.update {
        // The engine accepted the changed superblocks: now they go to disk, before any I/O.
        update::write(&mut sel.members)?;
        eprintln!(
            "raid1 run: --update={}: written to {} member(s)",
            what.word(),
            sel.members.len()
        );
    }
    let mut devs: Vec<Option<Dev>> = (0..MEMBERS).map(|_| None).collect();
    let mut array = Box::new(array);
    let rate = (args.sync_speed_max > 0).then_some(args.sync_speed_max * 2);
    array.set_sync_rate(rate);
    array.set_sync_rate_min((args.sync_speed_min > 0).then_some(args.sync_speed_min * 2));
    for m in sel.members {
        let i = m.meta.sb.dev_number as usize;
        devs[i] = Some(Dev::new(m.meta));
    }
    let engine = RaidEngine::new(array, devs, args.remote.clone())
        .map_err(|e| format!("array {name}: {e}"))?;
    Ok((engine, name))
}

/// Storage for a member's bad-block list that lives as long as the process (the core keeps
/// it), with room for md's 512 entries so that writes clearing part of an entry can split it.
pub fn lend_bad_blocks(mut ranges: Vec<BadRange>) -> BadBlocks<'static> {
    let len = ranges.len();
    ranges.resize(
        len.max(raid1_core::MAX_BAD_BLOCKS),
        BadRange {
            start: 0,
            sectors: 0,
        },
    );
    BadBlocks::new(Box::leak(ranges.into_boxed_slice()), len)
}

/// A refused bad-block list in words, naming the device (`path` of a member id).
pub fn bad_block_text(e: &BadBlockError, path: &dyn Fn(MemberId) -> String) -> String {
    match *e {
        BadBlockError::NoSuchMember(id) => format!("member position {} does not exist", id.0),
        BadBlockError::TooMany { member, entries } => format!(
            "{}: its bad-block log lists {entries} ranges inside the data area, more than the {} \
             md keeps",
            path(member),
            raid1_core::MAX_BAD_BLOCKS
        ),
        BadBlockError::ZeroLength { member, index } => {
            format!("{}: bad-block range {index} is empty", path(member))
        }
        BadBlockError::OutOfRange { member, index, end } => format!(
            "{}: bad-block range {index} ends at data sector {end}, beyond the data area",
            path(member)
        ),
        BadBlockError::Unsorted { member, index } => format!(
            "{}: bad-block range {index} starts before the previous one ends",
            path(member)
        ),
        BadBlockError::Storage {
            member,
            len,
            capacity,
        } => format!(
            "{}: {len} bad-block ranges do not fit the {capacity} entries lent for them",
            path(member)
        ),
        BadBlockError::NotQuiesced(member) => format!(
            "{}: its bad-block list can change only while the array is quiesced",
            path(member)
        ),
    }
}

/// Assembles and serves the array until a signal or a `stop` request, then stops it cleanly.
/// `serving` is called once with the line that says where the array serves.
pub fn run_array(args: &StartOptions, serving: &mut dyn FnMut(&str)) -> Result<(), String> {
    install_signals();
    let (engine, name) = assemble_engine(args)?;
    let dir = run_dir();
    control::prepare_run_dir(&dir)?;
    let nbd_addr: ListenAddress = match &args.nbd {
        Some(a) => a.parse()?,
        None => ListenAddress::Unix(dir.join(format!("{name}.nbd"))),
    };
    let mut control = control::ControlServer::bind(&control_path(&name), &name)?;
    if let ListenAddress::Unix(p) = &nbd_addr {
        remove_stale_socket(p)?;
    }
    let mut config = ServerConfig {
        export_name: name.clone(),
        description: format!("raid1 array {name}"),
        max_payload: MAX_REQUEST_BYTES,
        log_prefix: format!("raid1 run: array {name}"),
        ..ServerConfig::default()
    };
    args.nbd_limits.apply(&mut config);
    let mut engine = engine;
    let mut frontend = event_loop::Frontend::listen(&engine, config, &nbd_addr)
        .map_err(|e| format!("array {name}: {e}"))?;
    let bound = frontend.bound.clone();
    let mut shown = bound.to_string();
    control.nbd = shown.clone();
    if args.ublk.ublk {
        let mut links = Vec::new();
        let u = crate::ublk::Ublk::prepare(&args.ublk, &name, MAX_REQUEST_BYTES, &mut || {
            // A small stock per queue: the pool's 96 buffers are shared with NBD's 32.
            let (l, b) = link::link_with_stock(&engine, 8).map_err(|e| format!("eventfd: {e}"))?;
            links.push(l);
            Ok(Box::new(b))
        })
        .map_err(|e| format!("array {name}: {e}"))?;
        frontend.ublk_links = links;
        control.ublk = u.path();
        shown = format!("{} and {shown}", u.path());
        frontend.ublk = Some(u);
    }
    let msg = format!(
        "raid1: array {name} serving on {shown} (control {})\n",
        control_path(&name).display()
    );
    let result = event_loop::run_ready(
        &mut engine,
        frontend,
        &mut control,
        &STOP,
        || {},
        &mut || serving(&msg),
    );
    let stop = stop_array(&mut engine);
    control.finish(&stop);
    drop(control);
    if let ListenAddress::Unix(p) = &bound {
        let _ = std::fs::remove_file(p);
    }
    result?;
    stop
}

fn remove_stale_socket(p: &Path) -> Result<(), String> {
    if p.exists() {
        if std::os::unix::net::UnixStream::connect(p).is_ok() {
            return Err(format!("{} is in use by a running server", p.display()));
        }
        std::fs::remove_file(p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

/// Clean stop: drain, mark the array clean, write the superblocks.
fn stop_array(engine: &mut RaidEngine) -> Result<(), String> {
    engine.release_held_io();
    let _ = engine.array.freeze();
    if engine.array.status().read_only_asked {
        // md writes nothing when it stops a read-only array: drain the reads, let a clean mark
        // that is on its way land, and write no final metadata.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            engine.service();
            let st = engine.array.status();
            if (st.read_only && engine.array.is_quiesced() && !engine.io_busy())
                || std::time::Instant::now() > deadline
            {
                return Ok(());
            }
            if engine.io_busy() {
                engine.wait_io().map_err(|e| e.to_string())?;
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    let now = engine.now();
    engine.array.request_clean(now);
    engine.drive();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        engine.service();
        let st = engine.array.status();
        // Settled: drained, marked clean, and the engine's own stop metadata (the clean
        // superblocks, then the cleared bitmap pages) on disk.
        let settled =
            engine.array.is_quiesced() && !st.dirty && !st.metadata_pending && !engine.io_busy();
        // With no in-sync member reachable nothing can settle: once the requests are answered
        // (with errors), the final writes below say what could not be written.
        let stuck = engine.none_reachable() && !engine.io_busy();
        if settled || stuck || std::time::Instant::now() > deadline {
            break;
        }
        if engine.io_busy() {
            engine.wait_io().map_err(|e| e.to_string())?;
        } else {
            let t = engine
                .next_timeout()
                .unwrap_or(Duration::from_millis(10))
                .min(Duration::from_millis(50));
            std::thread::sleep(t);
            let now = engine.now();
            engine.array.request_clean(now);
        }
    }
    let failed = engine.write_final_metadata().map_err(|e| e.to_string())?;
    if failed != 0 {
        let names: Vec<String> = (0..MEMBERS)
            .filter(|i| failed & 1 << i != 0)
            .map(|i| engine.member_name(MemberId(i as u8)))
            .collect();
        return Err(format!(
            "the final superblock could not be written to {}: it keeps the state last \
             written there (if not clean, the next start resyncs, by the bitmap if there is one)",
            names.join(" and ")
        ));
    }
    Ok(())
}
