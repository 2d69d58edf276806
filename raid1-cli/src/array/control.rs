//! The control socket of a running array: line-delimited JSON requests, one JSON line per
//! answer (monitors get one line per event). Nonblocking, served from the array's event loop
//! through an epoll set that also holds the member engine's ring.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use raid1_core::{AddMember, Event, MemberId, MemberState, ReconfigError, Role, SyncAction};
use raid1_superblock::{FeatureMap, MinorVersion};
use serde::Deserialize;
use serde_json::{Value, json};

use super::MEMBERS;
use super::assemble;
use super::engine::{Dev, RaidEngine, unix_now};
use super::grow_size::SizeArg;
use crate::member::Identity;
use crate::member::strict::{self, MemberMeta};
use crate::report::mdstat::{self, Mdstat, MdstatBitmap, MdstatMember, MdstatSync};
use crate::text::{random_uuid, uuid_text};

/// One request on the control socket.
#[derive(Debug, Deserialize)]
pub struct CtlRequest {
    /// `detail`, `status`, `stop`, `fail`, `remove`, `add`, `re-add`, `add-spare`,
    /// `write-mostly`, `replace`, `grow`, `check`, `repair`, `sync-action`, `wait`, `monitor`.
    pub verb: String,
    /// Member device path (fail, remove, add, re-add): a string, or an array of byte values for
    /// a path that is not UTF-8.
    #[serde(default)]
    pub device: Option<PathArg>,
    /// A member by its number (`Number` in `detail`, `[N]` in `status`) (fail, remove).
    #[serde(default)]
    pub member: Option<u32>,
    /// mdadm's keywords for fail and remove: `failed` (every faulty member) or `detached`
    /// (every member whose device is gone).
    #[serde(default)]
    pub keyword: Option<String>,
    /// add: write over another array's superblock or a file system signature.
    #[serde(default)]
    pub force: bool,
    /// New number of mirrors (grow).
    #[serde(default)]
    pub raid_devices: Option<u16>,
    /// grow: `internal` adds a bitmap to the running array, `none` drops it.
    #[serde(default)]
    pub bitmap: Option<String>,
    /// grow --bitmap internal: the chunk in bytes (mdadm's `--bitmap-chunk`; default 64 MiB).
    #[serde(default)]
    pub bitmap_chunk: Option<u32>,
    /// grow: the bitmap daemon's period, ns (mdadm's `--delay`, md's `bitmap/time_base`).
    #[serde(default)]
    pub delay_ns: Option<u64>,
    /// grow: the new size, in sectors, or `"max"` (mdadm's `--grow --size`).
    #[serde(default)]
    pub size: Option<Value>,
    /// grow --size: the grown region is taken as in sync (no resync).
    #[serde(default)]
    pub assume_clean: bool,
    /// add, re-add: the new member is WriteMostly; `write-mostly`: set (true) or clear it.
    #[serde(default)]
    pub write_mostly: Option<bool>,
    /// add, re-add: the new member is FailFast; `failfast`: set (true) or clear it.
    #[serde(default)]
    pub failfast: Option<bool>,
    /// `sync-action`: `idle`, `frozen`, `check` or `repair` (md's `sync_action`).
    #[serde(default)]
    pub action: Option<String>,
    /// `monitor`: the percentage step of RebuildNN events (mdadm's `--increment`, default 20).
    #[serde(default)]
    pub increment: Option<u64>,
    /// `sync-speed`: md's `sync_speed_min` and `sync_speed_max` in KiB/s (0: none).
    #[serde(default)]
    pub speed_min: Option<u64>,
    /// `sync-speed`: md's `sync_speed_max` in KiB/s (0: unlimited).
    #[serde(default)]
    pub speed_max: Option<u64>,
    /// `sync-range`: md's `sync_min` (sectors).
    #[serde(default)]
    pub min: Option<u64>,
    /// `sync-range`: md's `sync_max` (sectors; absent: the end of the array).
    #[serde(default)]
    pub max: Option<u64>,
    /// `replace`: the spare to rebuild onto (mdadm's `--with`).
    #[serde(default)]
    pub with: Option<PathArg>,
    /// grow: md's write-behind limit (0: off).
    #[serde(default)]
    pub write_behind: Option<u16>,
}

/// A path in a request: text, or the raw bytes of a path that is not UTF-8.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PathArg {
    /// A UTF-8 path.
    Text(String),
    /// Any other path, byte for byte.
    Bytes(Vec<u8>),
}

impl PathArg {
    /// The path.
    pub fn path(&self) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        match self {
            PathArg::Text(t) => PathBuf::from(t),
            PathArg::Bytes(b) => PathBuf::from(std::ffi::OsStr::from_bytes(b)),
        }
    }
}

/// A path as it travels in a request: a JSON string when it is UTF-8, else its bytes.
pub fn path_json(p: &Path) -> Value {
    use std::os::unix::ffi::OsStrExt;
    match p.to_str() {
        Some(t) => json!(t),
        None => json!(p.as_os_str().as_bytes()),
    }
}

/// Creates the run directory (mode 0700) if missing.
pub fn prepare_run_dir(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// Bytes a control connection may have unanswered (requests without a newline) or unread
/// (answers, events); past it the connection is closed.
const MAX_CONTROL_BYTES: usize = 1 << 20;

struct Conn {
    stream: UnixStream,
    rx: Vec<u8>,
    tx: Vec<u8>,
    close_after_flush: bool,
    dead: bool,
}

enum Reconfig {
    Remove(Vec<MemberId>),
    Add {
        path: PathBuf,
        readd: bool,
        spare: bool,
        force: bool,
        write_mostly: bool,
        failfast: bool,
    },
    Grow(u16),
    /// A failed NBD member whose server is back, untouched: removed and re-added over this
    /// connection (no one to answer).
    ReAddRemote(usize, Box<crate::nbd::client::Connection>),
    /// md's `--readonly`: set while quiesced; answered once it is in effect.
    ReadOnly,
    /// `--grow --bitmap=internal` (with the requested chunk, bytes, and daemon period, ns).
    AddBitmap(Option<u32>, Option<u64>),
    /// `--grow --bitmap=none`.
    RemoveBitmap,
    /// `--grow --size`: the new size, `--assume-clean`, `--force` (to shrink).
    Size {
        want: SizeArg,
        assume_clean: bool,
        force: bool,
    },
}

/// Sets or clears a member's WriteMostly (`write-mostly`) or FailFast (`failfast`).
fn set_flag(engine: &mut RaidEngine, id: MemberId, flag: &str, on: bool) -> Result<(), String> {
    let r = if flag == "write-mostly" {
        engine.array.set_write_mostly(id, on)
    } else {
        engine.array.set_failfast(id, on)
    };
    r.map_err(|e| format!("{}: {e}", engine.member_name(id)))
}

/// How many changes a `grow` request asks for: the number of mirrors, the size, the
/// write-behind limit, the bitmap (with its chunk and delay), the delay alone.
fn grow_changes(req: &CtlRequest) -> usize {
    [
        req.raid_devices.is_some(),
        req.size.is_some(),
        req.write_behind.is_some(),
        req.bitmap.is_some(),
        req.delay_ns.is_some() && req.bitmap.is_none(),
    ]
    .into_iter()
    .filter(|&b| b)
    .count()
}

/// md's `sync_max` as sysfs shows it: a number, or "max".
fn sync_max_json(max: u64) -> Value {
    if max == u64::MAX {
        json!("max")
    } else {
        json!(max)
    }
}

/// The control socket server of one array.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    name: String,
    /// The NBD address, for `detail`.
    pub nbd: String,
    /// The block device (`--ublk`), for `detail` and `status`; empty without one.
    pub ublk: String,
    epoll: OwnedFd,
    ring: RawFd,
    conns: HashMap<RawFd, Conn>,
    /// A client asked to stop the array.
    pub stop_requested: bool,
    reconfig: VecDeque<(RawFd, Reconfig)>,
    froze: bool,
    /// A size change stopped the running sync (md refuses while one runs; mdadm freezes
    /// `sync_action` first): whether sync actions were frozen before, to put back after.
    sync_was_frozen: Option<bool>,
    waiters: Vec<RawFd>,
    /// `readonly` requests answered once the array is read-only (clean on disk).
    ro_waiters: Vec<RawFd>,
    /// `grow --write-behind N` requests that turn it on, answered once it is in effect (the
    /// superblock round that writes N into every bitmap header is on disk), with what they did.
    wb_waiters: Vec<(RawFd, u16, String)>,
    monitors: Vec<Subscriber>,
    stoppers: Vec<RawFd>,
    /// Running sync action, last 20 % step announced, start time and position.
    progress: Option<(SyncAction, u64, std::time::Instant, u64)>,
}

/// A `monitor` client: its connection, its RebuildNN increment (mdadm's `--increment`) and
/// the last step of the running sync it was told of.
#[derive(Clone, Copy)]
struct Subscriber {
    fd: RawFd,
    increment: u64,
    step: u64,
}

fn epoll_ctl(ep: RawFd, op: libc::c_int, fd: RawFd, events: u32) {
    let mut ev = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    // SAFETY: ev is a valid epoll_event.
    unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) };
}

impl ControlServer {
    /// Binds the control socket at `path` (refused if a server answers there).
    pub fn bind(path: &Path, name: &str) -> Result<ControlServer, String> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "array {name} is already running (control socket {})",
                    path.display()
                ));
            }
            std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let listener =
            UnixListener::bind(path).map_err(|e| format!("{}: bind: {e}", path.display()))?;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        // SAFETY: plain syscall.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(format!("epoll_create1: {}", io::Error::last_os_error()));
        }
        // SAFETY: ep is a new descriptor we own.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        epoll_ctl(
            ep,
            libc::EPOLL_CTL_ADD,
            listener.as_raw_fd(),
            libc::EPOLLIN as u32,
        );
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            name: name.to_string(),
            nbd: String::new(),
            ublk: String::new(),
            epoll,
            ring: -1,
            conns: HashMap::new(),
            stop_requested: false,
            reconfig: VecDeque::new(),
            froze: false,
            sync_was_frozen: None,
            waiters: Vec::new(),
            ro_waiters: Vec::new(),
            wb_waiters: Vec::new(),
            monitors: Vec::new(),
            stoppers: Vec::new(),
            progress: None,
        })
    }

    /// The epoll descriptor the event loop polls.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Adds `fd` (readable when the event loop has work) to the epoll set.
    pub fn watch(&mut self, fd: RawFd) {
        epoll_ctl(
            self.epoll_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            libc::EPOLLIN as u32,
        );
    }

    /// Blocks until a watched descriptor is readable or `timeout` passed.
    pub fn wait(&self, timeout: std::time::Duration) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: events is a valid array of its length; EINTR simply ends the wait.
        unsafe { libc::epoll_wait(self.epoll_fd(), events.as_mut_ptr(), 8, ms) };
    }

    /// Keeps the member engine's ring in the epoll set (it changes when members change).
    pub fn register_ring(&mut self, engine: &RaidEngine) {
        let fd = engine.ring_fd();
        if fd != self.ring {
            if self.ring >= 0 {
                epoll_ctl(self.epoll_fd(), libc::EPOLL_CTL_DEL, self.ring, 0);
            }
            epoll_ctl(
                self.epoll_fd(),
                libc::EPOLL_CTL_ADD,
                fd,
                libc::EPOLLIN as u32,
            );
            self.ring = fd;
        }
    }

    /// One turn: accept, read requests, act, announce events, write answers.
    pub fn turn(&mut self, engine: &mut RaidEngine) {
        while let Ok((s, _)) = self.listener.accept() {
            let _ = s.set_nonblocking(true);
            let fd = s.as_raw_fd();
            epoll_ctl(
                self.epoll_fd(),
                libc::EPOLL_CTL_ADD,
                fd,
                libc::EPOLLIN as u32,
            );
            self.conns.insert(
                fd,
                Conn {
                    stream: s,
                    rx: Vec::new(),
                    tx: Vec::new(),
                    close_after_flush: false,
                    dead: false,
                },
            );
        }
        let fds: Vec<RawFd> = self.conns.keys().copied().collect();
        for fd in fds {
            let mut lines = Vec::new();
            if let Some(c) = self.conns.get_mut(&fd) {
                let mut buf = [0u8; 4096];
                loop {
                    match c.stream.read(&mut buf) {
                        Ok(0) => {
                            c.dead = true;
                            break;
                        }
                        Ok(n) => c.rx.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                    if c.rx.len() > MAX_CONTROL_BYTES {
                        // No request is that long: a client that sends no newline is dropped.
                        c.dead = true;
                        break;
                    }
                }
                while let Some(pos) = c.rx.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = c.rx.drain(..=pos).collect();
                    lines.push(line);
                }
                if c.dead {
                    // The client hung up before its request was read: it gave up waiting (its
                    // timeout passed while this server was stopped or busy), so the request is
                    // not carried out behind its back.
                    lines.clear();
                }
            }
            for line in lines {
                self.request(fd, &line, engine);
            }
        }
        for (i, conn) in std::mem::take(&mut engine.readds) {
            self.reconfig
                .push_back((-1, Reconfig::ReAddRemote(i, conn)));
        }
        self.reconfigure(engine);
        self.announce(engine);
        if !self.ro_waiters.is_empty() && engine.array.status().read_only {
            for fd in std::mem::take(&mut self.ro_waiters) {
                self.reply(fd, json!({"ok": true, "done": ["read-only"]}), true);
            }
        }
        if !self.wb_waiters.is_empty() {
            let now = engine.array.config().write_behind;
            let (due, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.wb_waiters)
                .into_iter()
                .partition(|w| w.1 == now);
            self.wb_waiters = wait;
            for (fd, _, done) in due {
                self.reply(fd, json!({"ok": true, "done": [done]}), true);
            }
        }
        if !self.waiters.is_empty() && sync_idle(engine) && self.reconfig.is_empty() {
            for fd in std::mem::take(&mut self.waiters) {
                self.reply(fd, json!({"ok": true}), true);
            }
        }
        self.flush();
    }

    fn reply(&mut self, fd: RawFd, v: Value, close: bool) {
        if let Some(c) = self.conns.get_mut(&fd) {
            if c.tx.len() > MAX_CONTROL_BYTES {
                // A monitor that does not read its events: dropped rather than buffered.
                c.dead = true;
                return;
            }
            c.tx.extend_from_slice(v.to_string().as_bytes());
            c.tx.push(b'\n');
            c.close_after_flush |= close;
        }
    }

    fn flush(&mut self) {
        let ep = self.epoll_fd();
        let mut gone = Vec::new();
        for (fd, c) in self.conns.iter_mut() {
            while !c.tx.is_empty() {
                match c.stream.write(&c.tx) {
                    Ok(n) => {
                        c.tx.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        c.dead = true;
                        break;
                    }
                }
            }
            let want_out = if c.tx.is_empty() {
                0
            } else {
                libc::EPOLLOUT as u32
            };
            epoll_ctl(
                ep,
                libc::EPOLL_CTL_MOD,
                *fd,
                libc::EPOLLIN as u32 | want_out,
            );
            if c.dead || (c.close_after_flush && c.tx.is_empty()) {
                gone.push(*fd);
            }
        }
        for fd in gone {
            epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, 0);
            self.conns.remove(&fd);
            self.monitors.retain(|m| m.fd != fd);
            self.waiters.retain(|m| *m != fd);
            self.ro_waiters.retain(|m| *m != fd);
            self.wb_waiters.retain(|m| m.0 != fd);
        }
    }

    fn request(&mut self, fd: RawFd, line: &[u8], engine: &mut RaidEngine) {
        let req: CtlRequest = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => {
                self.reply(
                    fd,
                    json!({"ok": false, "error": format!("bad request: {e}")}),
                    true,
                );
                return;
            }
        };
        let device = req.device.as_ref().map(PathArg::path);
        let result: Result<Option<Value>, String> = match req.verb.as_str() {
            "detail" => Ok(Some(detail(engine, &self.name, &self.nbd, &self.ublk))),
            "status" => Ok(Some(
                json!({"mdstat": mdstat(engine, &self.name, self.progress.as_ref()), "ublk": self.ublk}),
            )),
            "stop" => {
                self.stop_requested = true;
                self.stoppers.push(fd);
                Ok(None)
            }
            "fail" => targets(engine, &req, device.as_deref()).and_then(|ids| {
                let mut done = Vec::new();
                let mut errors = Vec::new();
                for id in ids {
                    let name = engine.member_name(id);
                    let now = engine.now();
                    match engine.array.fail_member(now, id) {
                        Ok(_) => done.push(format!("set {name} faulty")),
                        Err(e) => errors.push(format!("cannot fail {name}: {e}")),
                    }
                }
                engine.drive();
                if errors.is_empty() {
                    Ok(Some(json!({"ok": true, "done": done})))
                } else {
                    Err(done
                        .into_iter()
                        .chain(errors)
                        .collect::<Vec<_>>()
                        .join("; "))
                }
            }),
            "remove" => targets(engine, &req, device.as_deref()).and_then(|ids| {
                // Every target is checked before any is removed.
                for id in &ids {
                    if matches!(engine.role(*id), Some((MemberState::InSync, _))) {
                        return Err(format!(
                            "{} is an in-sync member: fail it first",
                            engine.member_name(*id)
                        ));
                    }
                }
                if ids.is_empty() {
                    return Ok(Some(json!({"ok": true, "done": []})));
                }
                self.reconfig.push_back((fd, Reconfig::Remove(ids)));
                Ok(None)
            }),
            "add" | "re-add" | "add-spare" => {
                if req.member.is_some() || req.keyword.is_some() {
                    Err(format!("{} takes a device path", req.verb))
                } else {
                    device
                        .ok_or_else(|| format!("{} needs a device", req.verb))
                        .and_then(|p| {
                            if let Some(id) = engine.holds(&p) {
                                return Err(format!(
                                    "{} is already a member of this array ({})",
                                    p.display(),
                                    engine.member_name(id)
                                ));
                            }
                            let path = std::fs::canonicalize(&p).unwrap_or(p);
                            self.reconfig.push_back((
                                fd,
                                Reconfig::Add {
                                    path,
                                    readd: req.verb == "re-add",
                                    spare: req.verb == "add-spare",
                                    force: req.force,
                                    write_mostly: req.write_mostly == Some(true),
                                    failfast: req.failfast == Some(true),
                                },
                            ));
                            Ok(None)
                        })
                }
            }
            // md's per-member flags (echo [-]writemostly / [-]failfast > dev-X/state).
            "write-mostly" | "failfast" => {
                let wm = req.verb == "write-mostly";
                let on = if wm { req.write_mostly } else { req.failfast }.unwrap_or(true);
                targets(engine, &req, device.as_deref()).and_then(|ids| {
                    let mut done = Vec::new();
                    for id in ids {
                        set_flag(engine, id, &req.verb, on)?;
                        let name = engine.member_name(id);
                        done.push(if on {
                            format!("set {name} {}", req.verb)
                        } else {
                            format!("cleared {} on {name}", req.verb)
                        });
                    }
                    engine.drive();
                    Ok(Some(json!({"ok": true, "done": done})))
                })
            }
            // mdadm --replace DEV [--with SPARE]: md's want_replacement; a spare is rebuilt
            // beside the member, which is marked faulty when the rebuild ends.
            "replace" => targets(engine, &req, device.as_deref()).and_then(|ids| {
                let with = match req.with.as_ref().map(PathArg::path) {
                    None => None,
                    Some(p) => Some(engine.holds(&p).ok_or_else(|| {
                        format!(
                            "{} is not a member of this array: add it as a spare first",
                            p.display()
                        )
                    })?),
                };
                let mut done = Vec::new();
                for id in ids {
                    let name = engine.member_name(id);
                    engine.array.replace(id, with).map_err(|e| match e {
                        ReconfigError::NotSpare(w) => format!(
                            "cannot replace {name} with {}: it is not a spare",
                            engine.member_name(w)
                        ),
                        ReconfigError::Replacing(_) => {
                            format!("cannot replace {name}: a replacement is already being rebuilt for it")
                        }
                        ReconfigError::WrongState(_) => {
                            format!("cannot replace {name}: only an in-sync member can be replaced")
                        }
                        other => format!("cannot replace {name}: {other}"),
                    })?;
                    let slot = match engine.role(id) {
                        Some((_, Role::Active(s))) => s.to_string(),
                        _ => "?".into(),
                    };
                    done.push(format!("marked {name} (device {slot}) for replacement"));
                    if let Some(w) = with {
                        done.push(format!(
                            "marked {} as replacement for device {slot}",
                            engine.member_name(w)
                        ));
                    }
                }
                engine.drive();
                Ok(Some(json!({"ok": true, "done": done})))
            }),
            // md's --readonly: writes are refused from now on; the answer comes once the array
            // is clean on disk and nothing more is written.
            "readonly" if engine.array.status().read_only => {
                Ok(Some(json!({"ok": true, "done": []})))
            }
            "readonly" => {
                self.reconfig.push_back((fd, Reconfig::ReadOnly));
                Ok(None)
            }
            // md's --readwrite: at once.
            "readwrite" => {
                let now = engine.now();
                let was = engine.array.status().read_only_asked;
                match engine.array.set_read_only(now, false) {
                    Ok(()) => {
                        engine.publish_read_only();
                        engine.drive();
                        let done: Vec<&str> = if was { vec!["read-write"] } else { vec![] };
                        Ok(Some(json!({"ok": true, "done": done})))
                    }
                    Err(e) => Err(format!("cannot make it read-write: {e}")),
                }
            }
            // One change per request, as the verb's options allow: a field sent beside
            // another would otherwise be dropped without a word.
            "grow" if grow_changes(&req) > 1 => Err(
                "grow takes one change at a time: raid_devices, size, write_behind, bitmap \
                 (with bitmap_chunk and delay_ns) or delay_ns"
                    .into(),
            ),
            "grow" if req.bitmap_chunk.is_some() && req.bitmap.is_none() => {
                Err("a bitmap chunk goes with bitmap internal".into())
            }
            // mdadm --grow --write-behind=N: the bitmap headers record it with the next
            // superblock round (turning it on waits for that round).
            "grow" if req.write_behind.is_some() => {
                let n = req.write_behind.unwrap_or(0);
                let max = raid1_superblock::bitmap::MAX_WRITE_BEHIND;
                if u32::from(n) > max {
                    Err(format!("write-behind {n}: at most {max} writes (md's limit)"))
                } else {
                    match engine.array.set_write_behind(n) {
                        Ok(()) => {
                            engine.drive();
                            let done = if n == 0 {
                                "write-behind off".to_string()
                            } else {
                                format!("write-behind up to {n} writes")
                            };
                            if engine.array.config().write_behind == n {
                                Ok(Some(json!({"ok": true, "done": [done]})))
                            } else {
                                // Turning it on takes effect with the superblock round that
                                // records it: answered then, so that `detail` says so.
                                self.wb_waiters.push((fd, n, done));
                                Ok(None)
                            }
                        }
                        Err(ReconfigError::Bitmap { present: false }) => Err(
                            "write-behind needs the bitmap (raid1 grow NAME --bitmap internal first)"
                                .into(),
                        ),
                        Err(e) => Err(format!("cannot set write-behind: {e}")),
                    }
                }
            }
            "grow" if req.size.is_some() => {
                let want = match req.size.as_ref() {
                    Some(Value::String(m)) if m == "max" => Ok(SizeArg::Max),
                    Some(v) => v.as_u64().map(SizeArg::Sectors).ok_or_else(|| {
                        format!("size {v}: expected a number of sectors or \"max\"")
                    }),
                    None => Err("grow needs a size".to_string()),
                };
                let old = engine.array.config().data_sectors;
                want.and_then(|want| {
                    match super::grow_size::answer_at_once(old, &self.name, want, req.force) {
                        Some(r) => r.map(|done| Some(json!({"ok": true, "done": done}))),
                        None => {
                            self.reconfig.push_back((
                                fd,
                                Reconfig::Size {
                                    want,
                                    assume_clean: req.assume_clean,
                                    force: req.force,
                                },
                            ));
                            Ok(None)
                        }
                    }
                })
            }
            "grow" if req.bitmap.is_some() => match req.bitmap.as_deref() {
                Some("internal") => {
                    self.reconfig
                        .push_back((fd, Reconfig::AddBitmap(req.bitmap_chunk, req.delay_ns)));
                    Ok(None)
                }
                Some("none") if req.bitmap_chunk.is_some() => {
                    Err("a bitmap chunk goes with --bitmap internal, not none".into())
                }
                Some("none") if req.delay_ns.is_some() => {
                    Err("a delay goes with --bitmap internal, not none".into())
                }
                Some("none") => {
                    self.reconfig.push_back((fd, Reconfig::RemoveBitmap));
                    Ok(None)
                }
                other => Err(format!(
                    "bitmap \"{}\": expected internal or none",
                    other.unwrap_or("").escape_default()
                )),
            },
            // md's bitmap/time_base: at once, no freeze (nothing on disk changes now).
            "grow" if req.delay_ns.is_some() => {
                super::grow_bitmap::set_delay(engine, req.delay_ns.unwrap_or(0))
                    .map(|done| Some(json!({"ok": true, "done": done})))
            }
            "grow" => match req.raid_devices {
                Some(n) if n >= 1 && usize::from(n) <= MEMBERS => {
                    self.reconfig.push_back((fd, Reconfig::Grow(n)));
                    Ok(None)
                }
                Some(n) => Err(format!("raid_devices = {n}: must be 1..={MEMBERS}")),
                None => Err("grow needs raid_devices".into()),
            },
            "check" | "repair" => engine
                .array
                .start_check(req.verb == "repair")
                .map(|_| {
                    engine.drive();
                    Some(json!({"ok": true}))
                })
                .map_err(|e| format!("cannot start {}: {e}", req.verb)),
            "sync-action" => match req.action.as_deref() {
                // md: frozen stops the running action and starts none; idle clears frozen and
                // stops the running action (a resync or recovery starts again from its
                // checkpoint, a check ends).
                Some("frozen") => {
                    engine.array.set_sync_frozen(true);
                    engine.drive();
                    Ok(Some(json!({"ok": true})))
                }
                Some("idle") => {
                    engine.array.set_sync_frozen(false);
                    engine.array.stop_sync();
                    engine.drive();
                    Ok(Some(json!({"ok": true})))
                }
                Some(a @ ("check" | "repair")) => engine
                    .array
                    .start_check(a == "repair")
                    .map(|_| {
                        engine.drive();
                        Some(json!({"ok": true}))
                    })
                    .map_err(|e| format!("cannot start {a}: {e}")),
                Some(other) => Err(format!(
                    "sync action \"{}\": expected idle, frozen, check or repair",
                    other.escape_default()
                )),
                None => Err("sync-action needs an action".into()),
            },
            // md's sync_speed_min / sync_speed_max (KiB/s; 0: none).
            "sync-speed" => {
                let rate = |k: u64| (k > 0).then_some(k.saturating_mul(2));
                if let Some(k) = req.speed_min {
                    engine.array.set_sync_rate_min(rate(k));
                }
                if let Some(k) = req.speed_max {
                    engine.array.set_sync_rate(rate(k));
                }
                engine.drive();
                Ok(Some(json!({"ok": true})))
            }
            // md's sync_min / sync_max for the next check or repair.
            "sync-range" => {
                let min = req.min.unwrap_or(0);
                let max = req.max.unwrap_or(u64::MAX);
                engine
                    .array
                    .set_sync_range(min, max)
                    .map(|()| {
                        let st = engine.array.status();
                        Some(json!({"ok": true, "sync_min": st.sync_min, "sync_max": sync_max_json(st.sync_max)}))
                    })
                    .map_err(|e| format!("cannot set the sync range: {e}"))
            }
            "wait" => {
                self.waiters.push(fd);
                Ok(None)
            }
            "monitor" => match req.increment.unwrap_or(20) {
                increment @ 1..=99 => {
                    // The first line says the subscription is taken (a client can tell a live
                    // server from a stopped one); events follow. A sync already running counts
                    // from where it is.
                    self.reply(fd, json!({"ok": true, "monitor": self.name}), false);
                    let step = engine.array.status().sync.map_or(0, |(_, pos, end)| {
                        (pos * 100).checked_div(end).unwrap_or(0) / increment * increment
                    });
                    self.monitors.push(Subscriber {
                        fd,
                        increment,
                        step,
                    });
                    Ok(None)
                }
                other => Err(format!(
                    "increment {other}: the RebuildNN step is 1 to 99 percent"
                )),
            },
            other => Err(format!("unknown verb \"{}\"", other.escape_default())),
        };
        match result {
            Ok(Some(v)) => self.reply(fd, v, true),
            Ok(None) => {}
            Err(e) => self.reply(fd, json!({"ok": false, "error": e}), true),
        }
    }

    fn reconfigure(&mut self, engine: &mut RaidEngine) {
        if self.reconfig.is_empty() {
            return;
        }
        // A size change needs the sync job gone (md refuses with EBUSY while one runs): it is
        // stopped at its checkpoint, as mdadm freezes sync_action, and goes on afterwards.
        let sizing = self
            .reconfig
            .iter()
            .any(|(_, op)| matches!(op, Reconfig::Size { .. }));
        if sizing && self.sync_was_frozen.is_none() && engine.array.status().sync.is_some() {
            self.sync_was_frozen = Some(engine.array.status().sync_frozen);
            engine.array.set_sync_frozen(true);
            engine.drive();
        }
        if !self.froze {
            if engine.array.freeze().is_err() {
                return;
            }
            self.froze = true;
            engine.drive();
        }
        if !engine.array.is_quiesced()
            || engine.io_busy()
            || (sizing && engine.array.status().sync.is_some())
            || (sizing
                && engine.array.status().metadata_pending
                && !engine.array.status().read_only_asked)
        {
            return;
        }
        while let Some((fd, op)) = self.reconfig.pop_front() {
            let r = match op {
                Reconfig::Remove(ids) => {
                    let mut done = Vec::new();
                    let mut error = None;
                    for id in ids {
                        let name = engine.member_name(id);
                        match engine.detach(id) {
                            Ok(_) => done.push(format!("removed {name}")),
                            Err(e) => {
                                error = Some(e);
                                break;
                            }
                        }
                    }
                    match error {
                        None => Ok(done),
                        Some(e) => Err(done.into_iter().chain([e]).collect::<Vec<_>>().join("; ")),
                    }
                }
                Reconfig::Grow(n) => engine
                    .array
                    .set_raid_disks(n)
                    .map(|_| Vec::new())
                    .map_err(|e| format!("cannot grow to {n} mirrors: {e}")),
                Reconfig::Size {
                    want,
                    assume_clean,
                    force,
                } => super::grow_size::resize(engine, &self.name, want, assume_clean, force),
                Reconfig::AddBitmap(chunk, delay) => super::grow_bitmap::add(engine, chunk, delay),
                Reconfig::RemoveBitmap => super::grow_bitmap::remove(engine),
                Reconfig::ReadOnly => {
                    let now = engine.now();
                    match engine.array.set_read_only(now, true) {
                        Ok(()) => {
                            engine.publish_read_only();
                            // Answered once in effect (the clean mark on disk).
                            self.ro_waiters.push(fd);
                            continue;
                        }
                        Err(e) => Err(format!("cannot make it read-only: {e}")),
                    }
                }
                Reconfig::ReAddRemote(i, conn) => {
                    let r = readd_remote(engine, i, *conn);
                    match &r {
                        Ok(done) => eprintln!("raid1: {}", done.join("; ")),
                        Err(e) => eprintln!("raid1: automatic re-add failed: {e}"),
                    }
                    r
                }
                Reconfig::Add {
                    path,
                    readd,
                    spare,
                    force,
                    write_mostly,
                    failfast,
                } => add_device(engine, &path, (readd, spare), force, None).and_then(|d| {
                    let mut done = vec![d];
                    for (on, flag) in [(write_mostly, "write-mostly"), (failfast, "failfast")] {
                        if !on {
                            continue;
                        }
                        let id = engine
                            .holds(&path)
                            .ok_or_else(|| format!("{} was added but not found", path.display()))?;
                        set_flag(engine, id, flag, true)?;
                        done.push(format!("set {} {flag}", engine.member_name(id)));
                    }
                    Ok(done)
                }),
            };
            let v = match r {
                Ok(done) => json!({"ok": true, "done": done}),
                Err(e) => json!({"ok": false, "error": e}),
            };
            self.reply(fd, v, true);
        }
        let _ = engine.array.unfreeze();
        self.froze = false;
        if let Some(was) = self.sync_was_frozen.take() {
            engine.array.set_sync_frozen(was);
        }
        engine.drive();
    }

    fn announce(&mut self, engine: &mut RaidEngine) {
        let mut lines = Vec::new();
        let path_of = |engine: &RaidEngine, id: MemberId| {
            engine
                .devs
                .get(usize::from(id.0))
                .and_then(|d| d.as_ref())
                .map(|d| d.meta.path.display().to_string())
        };
        for (event, device, extra) in std::mem::take(&mut engine.link_events) {
            lines.push((event, device, extra));
        }
        for ev in std::mem::take(&mut engine.events) {
            let (event, device, extra): (&str, Option<String>, Value) = match ev {
                Event::MemberFailed(id) => ("Fail", path_of(engine, id), Value::Null),
                Event::Degraded {
                    in_sync,
                    raid_disks,
                } => (
                    "DegradedArray",
                    None,
                    json!({"in_sync": in_sync, "raid_disks": raid_disks}),
                ),
                Event::LastMemberError(id) => ("FailSpare", path_of(engine, id), Value::Null),
                Event::SpareActive(id) => ("SpareActive", path_of(engine, id), Value::Null),
                // md marks the replaced member faulty: mdadm's monitor sees a Fail.
                Event::Replaced { old, new } => (
                    "Fail",
                    path_of(engine, old),
                    json!({"replaced_by": path_of(engine, new)}),
                ),
                // Not one of mdadm's events (md records bad blocks without one).
                Event::BadBlocksRecorded {
                    member,
                    sector,
                    sectors,
                } => (
                    "BadBlocksRecorded",
                    path_of(engine, member),
                    json!({"sector": sector, "sectors": sectors}),
                ),
                Event::SyncStarted(a) => {
                    self.progress = Some((a, 0, std::time::Instant::now(), u64::MAX));
                    for m in &mut self.monitors {
                        m.step = 0;
                    }
                    (sync_started(a), None, json!({"action": action_name(a)}))
                }
                Event::SyncFinished { action, mismatches } => {
                    self.progress = None;
                    lines.push((
                        sync_finished(action),
                        None,
                        json!({"action": action_name(action), "mismatches": mismatches}),
                    ));
                    if mismatches > 0 {
                        ("MismatchesFound", None, json!({"mismatches": mismatches}))
                    } else {
                        continue;
                    }
                }
                Event::SyncInterrupted(a) => {
                    self.progress = None;
                    ("SyncInterrupted", None, json!({"action": action_name(a)}))
                }
                Event::SyncProgress { .. } | Event::Quiesced | Event::MarkedClean => continue,
            };
            lines.push((event, device, extra));
        }
        // Steps of the running sync (mdadm's RebuildNN): 20 % in the log, each monitor's own
        // increment on its connection.
        let mut steps: Vec<(usize, String, u64)> = Vec::new();
        if let (Some((a, step, t0, p0)), Some((_, pos, end))) =
            (self.progress.as_mut(), engine.array.status().sync)
        {
            let pct = (pos * 100).checked_div(end).unwrap_or(100);
            let name = |a: SyncAction, s: u64| match a {
                SyncAction::Check | SyncAction::Repair => "CheckProgress".to_string(),
                _ => format!("Rebuild{s:02}"),
            };
            let now_step = pct / 20 * 20;
            if now_step > *step && now_step < 100 {
                *step = now_step;
                eprintln!(
                    "raid1: {}",
                    json!({"event": name(*a, now_step), "array": self.name,
                           "time": unix_now(), "detail": {"percent": now_step}})
                );
            }
            for (k, m) in self.monitors.iter_mut().enumerate() {
                let s = pct / m.increment * m.increment;
                if s > m.step && s < 100 {
                    m.step = s;
                    steps.push((k, name(*a, s), s));
                }
            }
            if *p0 == u64::MAX {
                // Speed is measured from the first position seen (a resumed sync starts late).
                *p0 = pos;
                *t0 = std::time::Instant::now();
            }
        }
        for (k, event, percent) in steps {
            let v = json!({"event": event, "array": self.name, "time": unix_now(),
                           "detail": {"percent": percent}});
            if let Some(fd) = self.monitors.get(k).map(|m| m.fd) {
                self.reply(fd, v, false);
            }
        }
        for (event, device, extra) in lines {
            let mut v = json!({"event": event, "array": self.name, "time": unix_now()});
            if let Some(d) = device {
                v["device"] = json!(d);
            }
            if !extra.is_null() {
                v["detail"] = extra;
            }
            eprintln!("raid1: {}", v);
            for fd in self.monitors.iter().map(|m| m.fd).collect::<Vec<_>>() {
                self.reply(fd, v.clone(), false);
            }
        }
    }

    /// Answers the clients that asked for the stop, once the array is stopped.
    pub fn finish(&mut self, result: &Result<(), String>) {
        // Gone before anyone hears of the stop (the drop removes it again, harmlessly).
        let _ = std::fs::remove_file(&self.path);
        let v = match result {
            Ok(()) => json!({"ok": true}),
            Err(e) => json!({"ok": false, "error": e}),
        };
        for fd in std::mem::take(&mut self.stoppers) {
            self.reply(fd, v.clone(), true);
        }
        for fd in std::mem::take(&mut self.waiters) {
            self.reply(
                fd,
                json!({"ok": false, "error": "the array was stopped"}),
                true,
            );
        }
        for fd in self.monitors.iter().map(|m| m.fd).collect::<Vec<_>>() {
            self.reply(
                fd,
                json!({"event": "Stopped", "array": self.name, "time": unix_now()}),
                true,
            );
        }
        for c in self.conns.values_mut() {
            let _ = c.stream.set_nonblocking(false);
            let _ = c.stream.write_all(&c.tx);
            c.tx.clear();
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The members a `fail` or `remove` request names: by keyword (`failed`: every faulty member;
/// `detached`: every member whose device is gone, see [`Dev::detached`]), by member number, or
/// by path (the same file or device as a member, or the path a member was opened from).
fn targets(
    engine: &RaidEngine,
    req: &CtlRequest,
    device: Option<&Path>,
) -> Result<Vec<MemberId>, String> {
    let present = |i: usize| engine.devs.get(i).and_then(|d| d.as_ref());
    match (&req.keyword, req.member, device) {
        (Some(k), None, None) => match k.as_str() {
            "failed" => Ok((0..MEMBERS)
                .filter(|i| present(*i).is_some())
                .filter(|i| {
                    matches!(
                        engine.role(MemberId(*i as u8)),
                        Some((MemberState::Faulty, _))
                    )
                })
                .map(|i| MemberId(i as u8))
                .collect()),
            "detached" => Ok((0..MEMBERS)
                .filter(|i| present(*i).is_some_and(|d| d.detached().is_some()))
                .map(|i| MemberId(i as u8))
                .collect()),
            other => Err(format!(
                "unknown keyword \"{other}\" (mdadm's keywords: failed, detached)"
            )),
        },
        (None, Some(n), None) => usize::try_from(n)
            .ok()
            .filter(|i| present(*i).is_some())
            .map(|i| vec![MemberId(i as u8)])
            .ok_or_else(|| format!("member {n}: no such member in this array")),
        (None, None, Some(p)) => engine.find_member(p).map(|id| vec![id]),
        (None, None, None) => Err(format!(
            "{} needs a device, a member number or a keyword (failed, detached)",
            req.verb
        )),
        _ => Err(format!(
            "{}: give one of a device, a member number or a keyword",
            req.verb
        )),
    }
}

fn sync_idle(engine: &RaidEngine) -> bool {
    let st = engine.array.status();
    st.sync.is_none()
        && !(0..MEMBERS).any(|i| {
            matches!(
                engine.array.member(MemberId(i as u8)).map(|m| m.state),
                Some(MemberState::Recovering { .. })
            )
        })
        && (st.resync_offset == raid1_core::MAX_SECTOR || st.in_sync <= 1)
}

fn action_name(a: SyncAction) -> &'static str {
    match a {
        SyncAction::Resync => "resync",
        SyncAction::Recovery => "recovery",
        SyncAction::Check => "check",
        SyncAction::Repair => "repair",
    }
}

fn sync_started(a: SyncAction) -> &'static str {
    match a {
        SyncAction::Resync | SyncAction::Recovery => "RebuildStarted",
        SyncAction::Check | SyncAction::Repair => "CheckStarted",
    }
}

fn sync_finished(a: SyncAction) -> &'static str {
    match a {
        SyncAction::Resync | SyncAction::Recovery => "RebuildFinished",
        SyncAction::Check | SyncAction::Repair => "CheckFinished",
    }
}

/// Re-adds failed member `i`, an NBD export whose server is back with its superblock
/// untouched (`array/remote.rs` checked it), over the connection it came back on: removed,
/// then re-added as any `re-add` (the bitmap guides the recovery).
fn readd_remote(
    engine: &mut RaidEngine,
    i: usize,
    conn: crate::nbd::client::Connection,
) -> Result<Vec<String>, String> {
    let id = MemberId(i as u8);
    let name = engine.member_name(id);
    if matches!(engine.role(id), Some((MemberState::InSync, _))) {
        return Err(format!("{name} is in sync again: nothing to re-add"));
    }
    let path = engine.devs[i]
        .as_ref()
        .map(|d| d.meta.path.clone())
        .ok_or_else(|| format!("{name}: no device"))?;
    let member = crate::member_io::Member::from_connection(conn, engine.remote.timeout())?;
    engine.detach(id)?;
    let done = add_device(engine, &path, (true, false), false, Some(member))?;
    Ok(vec![format!("removed {name}"), done])
}

/// Adds (or re-adds) the device at `path`. Runs with the array quiesced. The device is opened
/// once, for the life of the member, and everything is checked through that handle before
/// anything is written: a device that is already a member, another array's md superblock or a
/// file system (unless `force`), a former active member of this array that `add` would turn
/// into a spare. Returns what was done, in words.
fn add_device(
    engine: &mut RaidEngine,
    path: &Path,
    (readd_only, spare_only): (bool, bool),
    force: bool,
    opened: Option<crate::member_io::Member>,
) -> Result<String, String> {
    let p = path.display().to_string();
    let Some(template) = engine.devs.iter().flatten().next() else {
        return Err("the array has no member left to copy metadata from".into());
    };
    let set_uuid = template.meta.sb.set_uuid;
    let array_bitmap = engine
        .current_bitmap(template)
        .map(|(bm, image)| (bm, image, template.meta.sb.bitmap_offset));
    // The member's own handle (its link, for an NBD export) and a second one that reads and
    // writes its metadata before it joins.
    let (member, probe) = if crate::nbd::client::is_uri(path.as_os_str()) {
        let member = match opened {
            Some(m) => m,
            None => {
                let uri = crate::nbd::client::Uri::parse(&p)?;
                crate::member_io::Member::open_remote(&uri, engine.remote.timeout())?
            }
        };
        let probe = crate::member::Device::open(path, crate::member::Access::Exclusive)
            .map_err(|e| format!("{p}: {e}"))?;
        (member, probe)
    } else {
        let member = crate::member_io::Member::open_no_wait(path).map_err(|e| e.to_string())?;
        let file = member
            .reopen_buffered()
            .map_err(|e| format!("{p}: cannot read it: {e}"))?;
        let probe = crate::member::Device::from_open(path, file)
            .map_err(|e| format!("{p}: cannot read it: {e}"))?;
        (member, probe)
    };
    let id = probe.identity();
    if let Some(i) = engine
        .devs
        .iter()
        .position(|d| d.as_ref().is_some_and(|d| d.meta.id == id))
    {
        return Err(format!(
            "{p} is already a member of this array ({})",
            engine.member_name(MemberId(i as u8))
        ));
    }
    let found = strict::read_member_on::<MEMBERS>(&probe, path, id, probe.size());
    let free_pos = |engine: &RaidEngine, pos: usize| {
        engine.devs.get(pos).is_none_or(|d| d.is_none())
            && engine
                .array
                .member(MemberId(pos as u8))
                .is_some_and(|i| i.state == MemberState::Absent)
    };
    match found {
        // add-spare: a former member too becomes a new spare (mdadm's --add-spare).
        Ok(mut m) if m.meta.sb.set_uuid == set_uuid && !spare_only => {
            let pos = m.meta.sb.dev_number as usize;
            let st = m.state::<MEMBERS>()?;
            if let (true, Role::Active(slot)) = (free_pos(engine, pos), st.own_role()) {
                // The member gets the array's bitmap header (and offset), as at assembly.
                if let Some((bm, image, offset)) = &array_bitmap {
                    super::trust::adopt(&mut m, bm, image, *offset)
                        .map_err(|e| format!("cannot re-add: {e}"))?;
                }
                // Its own table records a member that is in sync now as failed: it may have
                // run without it (a split brain) and hold writes no bitmap here knows of, so
                // it is rebuilt in full (conservative: a member that merely left after that
                // one failed is rebuilt in full too).
                let ran_alone = st.roles.iter().enumerate().any(|(j, r)| {
                    j != pos
                        && *r == Role::Faulty
                        && engine
                            .array
                            .member(MemberId(j as u8))
                            .is_some_and(|i| i.state == MemberState::InSync)
                });
                let how = AddMember::ReAdd {
                    slot,
                    events: st.events,
                    write_mostly: st.write_mostly,
                    was_in_sync: st.recovery_offset.is_none() && !ran_alone,
                };
                // A member that left before the array grew: its data area must hold the size.
                let size = engine.array.config().data_sectors;
                super::grow_size::fit_data_size(&mut m.meta, size)
                    .map_err(|e| format!("cannot re-add: {e}"))?;
                let bad = m.bad_ranges(engine.array.config().data_sectors);
                m.meta.id = id;
                engine.attach(MemberId(pos as u8), Dev::new(m.meta), member, how, bad)?;
                // Its FailFast comes back with it, as md reads it from the superblock.
                if st.failfast {
                    set_flag(engine, MemberId(pos as u8), "failfast", true)?;
                }
                return Ok(format!("re-added {p} as member {pos} (slot {slot})"));
            }
            if let Role::Active(slot) = st.own_role() {
                // mdadm: "not performing --add as that would convert it in to a spare".
                return Err(format!(
                    "{p} reports being an active member (slot {slot}, member {pos}) of this \
                     array, but it cannot be re-added: its member position {pos} is taken; \
                     adding it would turn it into a spare, so it is not done (to make it a \
                     spare, clear it first with `raid1 zero-superblock {p}`)"
                ));
            }
            if readd_only {
                return Err(format!(
                    "{p}: cannot re-add: it was not an active member of this array (its \
                     superblock says {})",
                    assemble::role_text(st.own_role())
                ));
            }
        }
        // add-spare of a former member of this array: it becomes a new spare below.
        Ok(m) if m.meta.sb.set_uuid == set_uuid => {}
        Ok(m) => {
            if readd_only {
                return Err(format!(
                    "{p}: cannot re-add: it holds the superblock of another array ({})",
                    uuid_text(&m.meta.sb.set_uuid.0)
                ));
            }
            if !force {
                return Err(format!(
                    "{p}: holds the md superblock of another array (UUID {}, name \"{}\"); not \
                     adding it (use --force to overwrite it)",
                    uuid_text(&m.meta.sb.set_uuid.0),
                    String::from_utf8_lossy(m.meta.sb.set_name.as_bytes()).trim_end_matches('\0')
                ));
            }
        }
        Err(why) => {
            if readd_only {
                return Err(format!(
                    "{p}: cannot re-add: it holds no superblock of this array ({why})"
                ));
            }
            let signatures = crate::member::signatures::scan(&probe)
                .map_err(|e| format!("{p}: cannot read it: {e}"))?;
            if !signatures.is_empty() && !force {
                let list: Vec<String> = signatures.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "{p}: holds {}; not adding it (use --force to write over it)",
                    list.join(", ")
                ));
            }
        }
    }
    // A new member: a fresh superblock copied from the array's, as a spare.
    let Some(pos) = (0..MEMBERS).find(|i| free_pos(engine, *i)) else {
        return Err(format!("{p}: no free member position (at most {MEMBERS})"));
    };
    let Some(template) = engine.devs.iter().flatten().next() else {
        return Err("the array has no member left to copy metadata from".into());
    };
    let size = member.size();
    let sectors = size / 512;
    let mut sb = template.meta.sb.clone();
    let tsb = &template.meta.sb;
    match tsb.minor_version() {
        MinorVersion::V1_0 => {
            let gap = tsb
                .super_offset
                .saturating_sub(tsb.data_offset + tsb.data_size);
            sb.super_offset = sectors.saturating_sub(16) & !7;
            sb.data_size = sb.super_offset.saturating_sub(gap + sb.data_offset);
        }
        _ => {
            sb.data_size = sectors.saturating_sub(sb.data_offset);
        }
    }
    if sb.data_size < tsb.size {
        return Err(format!(
            "{p}: too small: {} data sectors, the array needs {}",
            sb.data_size, tsb.size
        ));
    }
    sb.dev_number = pos as u32;
    sb.device_uuid = random_uuid().map_err(|e| format!("{p}: a new device UUID: {e}"))?;
    sb.recovery_offset = 0;
    let mut f = sb.feature_map;
    f.remove(FeatureMap::BAD_BLOCKS | FeatureMap::RECOVERY_OFFSET | FeatureMap::RECOVERY_BITMAP);
    sb.feature_map = f;
    sb.cnt_corrected_read = 0;
    let _ = sb.set_role(pos as u32, raid1_superblock::DevRole::Spare);
    sb.utime = raid1_superblock::MdTime::from_seconds(unix_now());
    let mut page = vec![0u8; strict::SB_PAGE];
    sb.serialize(&mut page)
        .map_err(|e| format!("{p}: new superblock: {e}"))?;
    let bitmap = engine.current_bitmap(template);
    probe
        .write_all_at(sb.super_offset * 512, &page)
        .map_err(|e| format!("{p}: write superblock: {e}"))?;
    if let (Some(bs), Some((_, image))) = (sb.bitmap_sector(), bitmap.as_ref()) {
        probe
            .write_all_at(bs * 512, image)
            .map_err(|e| format!("{p}: write bitmap: {e}"))?;
    }
    probe.sync().map_err(|e| format!("{p}: flush: {e}"))?;
    drop(probe);
    let dev = Dev::new(MemberMeta {
        path: path.to_path_buf(),
        id,
        size,
        sb,
        sb_page: page,
        bitmap,
        // BAD_BLOCKS was cleared above: whatever its log area holds is no list.
        bad_blocks: Vec::new(),
    });
    engine.attach(MemberId(pos as u8), dev, member, AddMember::New, Vec::new())?;
    Ok(format!("added {p} as member {pos} (spare)"))
}

fn kib(sectors: u64) -> u64 {
    sectors / 2
}

/// The state words of `mdadm --detail`, from the array's present state: `clean` or `active`,
/// `degraded` while fewer mirrors are in sync than the array has, `FAILED` while none is
/// (nothing left to serve from), and the running sync action. Returns the words, whether the
/// array is degraded and whether it is unusable.
fn state_words(engine: &RaidEngine) -> (String, bool, bool) {
    let st = engine.array.status();
    let mut w = vec![if st.dirty { "active" } else { "clean" }.to_string()];
    let degraded = st.in_sync < st.raid_disks;
    let unusable = st.in_sync == 0;
    if degraded {
        w.push("degraded".into());
    }
    if unusable {
        w.push("FAILED".into());
    }
    match st.sync {
        Some((SyncAction::Recovery, _, _)) => w.push("recovering".into()),
        Some((SyncAction::Resync, _, _)) => w.push("resyncing".into()),
        Some((SyncAction::Check | SyncAction::Repair, _, _)) => w.push("checking".into()),
        None => {}
    }
    (w.join(", "), degraded, unusable)
}

/// `mdadm --detail` as JSON (the client renders the text).
pub fn detail(engine: &RaidEngine, name: &str, nbd: &str, ublk: &str) -> Value {
    let st = engine.array.status();
    let template = engine.devs.iter().flatten().next();
    let (state, degraded, unusable) = state_words(engine);
    let mut members = Vec::new();
    let (mut active, mut working, mut failed, mut spare) = (0, 0, 0, 0);
    for i in 0..MEMBERS {
        let id = MemberId(i as u8);
        let Some(m) = engine.array.member(id) else {
            continue;
        };
        let Some(dev) = engine.devs.get(i).and_then(|d| d.as_ref()) else {
            continue;
        };
        let (state, slot) = match (m.state, m.role) {
            (MemberState::InSync, Role::Active(s)) => {
                active += 1;
                working += 1;
                ("active sync", Some(s))
            }
            (MemberState::Recovering { .. }, Role::Active(s)) => {
                working += 1;
                spare += 1;
                ("spare rebuilding", Some(s))
            }
            (MemberState::Spare, _) | (MemberState::Recovering { .. }, _) => {
                working += 1;
                spare += 1;
                ("spare", None)
            }
            (MemberState::Faulty, _) => {
                failed += 1;
                ("faulty", None)
            }
            _ => continue,
        };
        let (major, minor) = match dev.meta.id {
            Identity::Block(rdev) => (libc::major(rdev), libc::minor(rdev)),
            Identity::File(..) | Identity::Remote(_) => (0, 0),
        };
        members.push(json!({
            "number": i,
            "major": major,
            "minor": minor,
            "raid_device": slot,
            "state": state,
            "write_mostly": m.write_mostly,
            "failfast": m.failfast,
            "replacement": m.replacement,
            "want_replacement": m.want_replacement,
            // The sectors its bad-block list names now (what the engine never reads there).
            "bad_block_sectors": engine
                .array
                .bad_blocks(id)
                .iter()
                .map(|b| u64::from(b.sectors))
                .sum::<u64>(),
            "device": dev.meta.path.display().to_string(),
        }));
    }
    let mut removed = Vec::new();
    for slot in 0..st.raid_disks {
        let taken = (0..MEMBERS).any(|i| {
            engine.array.member(MemberId(i as u8)).is_some_and(|m| {
                m.role == Role::Active(slot)
                    && matches!(
                        m.state,
                        MemberState::InSync | MemberState::Recovering { .. }
                    )
            })
        });
        if !taken {
            removed.push(slot);
        }
    }
    let rebuild = st
        .sync
        .map(|(_, pos, end)| (pos * 100).checked_div(end).unwrap_or(100));
    let (version, ctime, set_name, uuid, consistency) = match template {
        Some(d) => (
            match d.meta.sb.minor_version() {
                MinorVersion::V1_0 => "1.0",
                MinorVersion::V1_1 => "1.1",
                _ => "1.2",
            },
            d.meta.sb.ctime.seconds(),
            String::from_utf8_lossy(d.meta.sb.set_name.as_bytes()).into_owned(),
            uuid_text(&d.meta.sb.set_uuid.0),
            if d.meta.bitmap.is_some() {
                "bitmap"
            } else {
                "resync"
            },
        ),
        None => ("1.2", 0, String::new(), String::new(), "resync"),
    };
    let size = kib(engine.array.config().data_sectors);
    json!({
        "ok": true,
        "array": name,
        "pid": std::process::id(),
        "nbd": nbd,
        "ublk": ublk,
        "version": version,
        "creation_time": ctime,
        "raid_level": "raid1",
        "array_size_kib": size,
        "used_dev_size_kib": size,
        "raid_devices": st.raid_disks,
        "total_devices": members.len(),
        "update_time": engine.update_time,
        "state": state,
        "degraded": degraded,
        "unusable": unusable,
        "active_devices": active,
        "working_devices": working,
        "failed_devices": failed,
        "spare_devices": spare,
        "consistency_policy": consistency,
        "sync_action": st.sync.map(|(a, _, _)| action_name(a)),
        "sync_frozen": st.sync_frozen,
        "read_only": st.read_only_asked,
        "sync_min": st.sync_min,
        "sync_max": sync_max_json(st.sync_max),
        "rebuild_percent": rebuild,
        "sync_position_sectors": st.sync.map(|(_, pos, _)| pos),
        "sync_end_sectors": st.sync.map(|(_, _, end)| end),
        "mismatch_cnt": engine.array.mismatch_cnt(),
        "write_behind": engine.array.config().write_behind,
        "bitmap_delay_seconds": template
            .and_then(|d| d.meta.bitmap.as_ref())
            .map(|_| engine.array.config().bitmap_daemon_ns as f64 / 1e9),
        "behind_writes": st.behind_writes,
        "name": set_name,
        "uuid": uuid,
        "events": st.events,
        "members": members,
        "removed_slots": removed,
    })
}

/// The `/proc/mdstat` block of this array (the facts; `report::mdstat` renders them).
pub fn mdstat(
    engine: &RaidEngine,
    name: &str,
    progress: Option<&(SyncAction, u64, std::time::Instant, u64)>,
) -> String {
    let st = engine.array.status();
    let mut members = Vec::new();
    for i in (0..MEMBERS).rev() {
        let Some(m) = engine.array.member(MemberId(i as u8)) else {
            continue;
        };
        let Some(dev) = engine.devs.get(i).and_then(|d| d.as_ref()) else {
            continue;
        };
        members.push(MdstatMember {
            name: dev.meta.path.file_name().map_or_else(
                || dev.meta.path.display().to_string(),
                |f| f.to_string_lossy().into_owned(),
            ),
            number: i,
            write_mostly: m.write_mostly,
            faulty: m.state == MemberState::Faulty,
            spare: matches!(
                (m.state, m.role),
                (MemberState::Spare, _) | (MemberState::Recovering { .. }, Role::Spare)
            ),
            replacement: m.replacement,
        });
    }
    let slots_up = (0..st.raid_disks)
        .map(|slot| {
            (0..MEMBERS).any(|i| {
                engine
                    .array
                    .member(MemberId(i as u8))
                    .is_some_and(|m| m.role == Role::Active(slot) && m.state == MemberState::InSync)
            })
        })
        .collect();
    let first = engine.devs.iter().flatten().next();
    let version = first.map_or("1.2", |d| match d.meta.sb.minor_version() {
        MinorVersion::V1_0 => "1.0",
        MinorVersion::V1_1 => "1.1",
        _ => "1.2",
    });
    let sync = st.sync.map(|(action, pos, end)| {
        let (dt, db) = match progress {
            Some((_, _, t0, p0)) => {
                let from = if *p0 == u64::MAX { pos } else { *p0 };
                (t0.elapsed().as_secs(), pos.saturating_sub(from))
            }
            None => (0, 0),
        };
        MdstatSync {
            action,
            pos,
            end,
            dt,
            db,
        }
    });
    let data_sectors = engine.array.config().data_sectors;
    let dirty = |c: u64| engine.array.bitmap_bit(c);
    let bitmap = first.and_then(|d| d.meta.bitmap.as_ref()).map(|(bm, _)| {
        let chunk = bm.chunk_sectors().max(1);
        MdstatBitmap {
            chunks: data_sectors.div_ceil(chunk),
            chunk_sectors: chunk,
            dirty: &dirty,
        }
    });
    mdstat::render(&Mdstat {
        name,
        members,
        slots_up,
        in_sync: st.in_sync,
        version,
        blocks_kib: kib(data_sectors),
        sync,
        bitmap,
        read_only: st.read_only_asked,
    })
}
