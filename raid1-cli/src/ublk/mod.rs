//! The array as a local block device, `/dev/ublkbN`, through Linux's ublk driver (userspace
//! block device, Linux 6.0 and later, module `ublk_drv`).
//!
//! The commands are spoken directly, with the `io-uring` crate raid1 already uses for its
//! members: control commands (`ctrl.rs`) on `/dev/ublk-control`, and per queue (`queue.rs`)
//! `FETCH_REQ` / `COMMIT_AND_FETCH_REQ` on `/dev/ublkcN` with the io descriptors mapped from it.
//! Each queue has a thread and a backend of its own (`nbd::Backend`: for `raid1 run`, a link
//! to the array thread, `array/link.rs`, the same kind the NBD thread has), so the NBD export
//! and the block device serve one array at once. This module knows no array type.
//!
//! The device is added with `UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE`: when
//! `raid1 run` dies without stopping it (SIGKILL, a crash), the kernel keeps `/dev/ublkbN`,
//! quiesced: new I/O waits, and the requests the dead process had taken are issued again to
//! the next one. `raid1 run --ublk --ublk-id N` on the same members re-attaches (the kernel's
//! user recovery); the write-intent bitmap covers the writes issued again. A clean stop
//! (`raid1 stop`, SIGTERM) stops and removes the device.

mod ctrl;
mod queue;
mod sys;

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::nbd::Backend;
use ctrl::Control;
use queue::QueueSpec;
use sys::DevInfo;

/// Largest queue depth accepted (each tag holds a buffer of the largest request).
const MAX_DEPTH: u16 = 512;
/// Largest number of queues accepted.
const MAX_QUEUES: u16 = 16;

/// What a queue thread serves requests with.
pub type QueueBackend = Box<dyn Backend + Send>;

/// `raid1 run` options of the block device.
#[derive(Debug, Clone, clap::Args)]
pub struct UblkArgs {
    /// Also serve the array as the block device /dev/ublkbN (Linux ublk: the ublk_drv module).
    #[arg(long)]
    pub ublk: bool,
    /// The device number N of /dev/ublkbN (default: the first free one). A device N left by a
    /// killed `raid1 run` of this array is taken over: its waiting I/O goes on.
    #[arg(long, value_name = "N", requires = "ublk")]
    pub ublk_id: Option<u32>,
    /// Queues of the block device, one thread each (1 to 16).
    #[arg(long, value_name = "Q", requires = "ublk", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=MAX_QUEUES as i64))]
    pub queues: u16,
    /// Requests each queue takes at once (1 to 512).
    #[arg(long, value_name = "D", requires = "ublk", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..=MAX_DEPTH as i64))]
    pub depth: u16,
}

/// A ublk device being served: made before the array loop starts, started, stopped and
/// removed while it runs.
pub struct Ublk {
    dev_id: u32,
    /// Re-attaching to a device a dead server left (user recovery) rather than a new one.
    recovering: bool,
    cdev: Option<Arc<OwnedFd>>,
    specs: Vec<(QueueSpec, QueueBackend)>,
    control: Option<Control>,
    queues: Vec<JoinHandle<std::io::Result<()>>>,
    starter: Option<JoinHandle<Result<(), String>>>,
    stopper: Option<JoinHandle<Result<(), String>>>,
}

impl Ublk {
    /// The block device's path.
    pub fn path(&self) -> String {
        format!("/dev/ublkb{}", self.dev_id)
    }

    /// Adds the device (or finds the one a killed server of the same device number left) for
    /// array `name`, with requests of at most `max_io` bytes; `backend` is called once per
    /// queue for what serves it (all of them the same block device: size and capabilities are
    /// the first one's).
    pub fn prepare(
        args: &UblkArgs,
        name: &str,
        max_io: u32,
        backend: &mut dyn FnMut() -> Result<QueueBackend, String>,
    ) -> Result<Ublk, String> {
        if args.queues == 0 || args.queues > MAX_QUEUES {
            return Err(format!(
                "--queues {}: a ublk device has 1 to {MAX_QUEUES} queues",
                args.queues
            ));
        }
        if args.depth == 0 || args.depth > MAX_DEPTH {
            return Err(format!(
                "--depth {}: a ublk queue takes 1 to {MAX_DEPTH} requests",
                args.depth
            ));
        }
        if args.ublk_id.is_some_and(|id| id >= i32::MAX as u32) {
            return Err(format!(
                "--ublk-id {}: the device number is too large",
                args.ublk_id.unwrap_or(0)
            ));
        }
        let mut control = Control::open()?;
        let mut recovering = false;
        let mut info = None;
        if let Some(id) = args.ublk_id {
            let found = control
                .info(id)
                .map_err(|e| format!("/dev/ublkb{id}: cannot read its state: {e}"))?;
            if let Some(found) = found {
                info = Some(take_over(&mut control, found, name)?);
                recovering = true;
            }
        }
        let info = match info {
            Some(i) => i,
            None => {
                let want = DevInfo {
                    nr_hw_queues: args.queues,
                    queue_depth: args.depth,
                    max_io_buf_bytes: max_io,
                    dev_id: args.ublk_id.unwrap_or(u32::MAX),
                    flags: sys::F_USER_RECOVERY
                        | sys::F_USER_RECOVERY_REISSUE
                        | sys::F_CMD_IOCTL_ENCODE,
                    ..DevInfo::default()
                };
                control.add(want).map_err(|e| match args.ublk_id {
                    Some(id) => format!("cannot add /dev/ublkb{id}: {e}"),
                    None => format!("cannot add a ublk device: {e}"),
                })?
            }
        };
        let dev_id = info.dev_id;
        let mut specs = Vec::new();
        for q_id in 0..info.nr_hw_queues {
            let b = backend()?;
            specs.push((
                QueueSpec {
                    q_id,
                    depth: info.queue_depth,
                    buf_bytes: info.max_io_buf_bytes as usize,
                },
                b,
            ));
        }
        let mut u = Ublk {
            dev_id,
            recovering,
            cdev: None,
            specs,
            control: Some(control),
            queues: Vec::new(),
            starter: None,
            stopper: None,
        };
        if let Err(e) = u.configure() {
            u.remove_unstarted();
            return Err(e);
        }
        Ok(u)
    }

    /// Sets the device's parameters from the array (a new device), opens `/dev/ublkcN`.
    fn configure(&mut self) -> Result<(), String> {
        let dev_id = self.dev_id;
        let Some(control) = self.control.as_mut() else {
            return Ok(());
        };
        let (size, caps, max_io) = match self.specs.first() {
            Some((q, b)) => (b.size(), b.capabilities(), q.buf_bytes as u32),
            None => return Err("a ublk device needs a queue".into()),
        };
        if self.recovering {
            // The device must be this array's: a file system on it expects its size.
            let sectors = control
                .dev_sectors(dev_id)
                .map_err(|e| format!("/dev/ublkb{dev_id}: cannot read its parameters: {e}"))?;
            if sectors != size >> 9 {
                return Err(format!(
                    "/dev/ublkb{dev_id}: its size ({sectors} sectors) is not the array's ({} \
                     sectors): it serves another array; choose another --ublk-id",
                    size >> 9
                ));
            }
            start_recovery(control, dev_id)?;
        } else {
            let mut attrs = 0;
            if caps.flush {
                attrs |= sys::ATTR_VOLATILE_CACHE;
            }
            if caps.fua {
                attrs |= sys::ATTR_FUA;
            }
            // Not ATTR_READ_ONLY, even for an array that is read-only now: a device's
            // attributes are fixed at its creation and `raid1 readwrite` can make the array
            // writable while the device lives; meanwhile its writes fail with EPERM.
            let params = sys::Params {
                attrs,
                logical_bs_shift: caps.min_block_size.max(512).trailing_zeros() as u8,
                physical_bs_shift: caps.preferred_block_size.max(512).trailing_zeros() as u8,
                io_opt_shift: caps.preferred_block_size.max(512).trailing_zeros() as u8,
                io_min_shift: caps.preferred_block_size.max(512).trailing_zeros() as u8,
                max_sectors: max_io >> 9,
                dev_sectors: size >> 9,
                discard_granularity: if caps.trim {
                    caps.preferred_block_size.max(512)
                } else {
                    0
                },
                max_discard_sectors: 1 << 21,
                max_write_zeroes_sectors: if caps.write_zeroes { 1 << 21 } else { 0 },
            };
            control
                .set_params(dev_id, &params)
                .map_err(|e| format!("/dev/ublkb{dev_id}: cannot set its parameters: {e}"))?;
        }
        let path = format!("/dev/ublkc{dev_id}");
        // The character device appears with the device; without udev devtmpfs makes it at
        // once, with udev it may take a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let file = loop {
            match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => break f,
                Err(e) if Instant::now() < deadline && e.kind() == std::io::ErrorKind::NotFound => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("{path}: {e}")),
            }
        };
        self.cdev = Some(Arc::new(OwnedFd::from(file)));
        Ok(())
    }

    /// A device this process added and could not configure is removed again.
    fn remove_unstarted(&mut self) {
        self.cdev = None;
        if !self.recovering
            && let Some(c) = self.control.as_mut()
        {
            let _ = c.delete(self.dev_id);
        }
    }

    /// Starts a thread per queue, then one that starts the device (or ends the recovery),
    /// which the kernel completes once every queue fetches; the array loop must run meanwhile.
    pub fn start(&mut self) -> Result<(), String> {
        let Some(cdev) = self.cdev.clone() else {
            return Err("the ublk device is not open".into());
        };
        for (spec, backend) in self.specs.drain(..) {
            let cdev = cdev.clone();
            let h = std::thread::Builder::new()
                .name(format!("raid1-ublk-q{}", spec.q_id))
                .spawn(move || queue::serve(&spec, cdev, backend))
                .map_err(|e| format!("cannot start a ublk queue thread: {e}"))?;
            self.queues.push(h);
        }
        let Some(mut control) = self.control.take() else {
            return Ok(());
        };
        let (dev_id, recovering) = (self.dev_id, self.recovering);
        let h = std::thread::Builder::new()
            .name("raid1-ublk-ctl".into())
            .spawn(move || {
                let r = if recovering {
                    control.end_recovery(dev_id)
                } else {
                    control.start(dev_id)
                };
                r.map_err(|e| format!("/dev/ublkb{dev_id}: cannot start it: {e}"))
            })
            .map_err(|e| format!("cannot start the ublk control thread: {e}"))?;
        self.starter = Some(h);
        Ok(())
    }

    /// The device is started (or the start failed: see [`Ublk::start_result`]).
    pub fn start_done(&self) -> bool {
        self.starter.as_ref().is_none_or(|h| h.is_finished())
    }

    /// The start's outcome (an error if it has not ended: the array is stopping or a queue
    /// ended first).
    pub fn start_result(&mut self) -> Result<(), String> {
        if !self.start_done() {
            return Err(format!("{} did not start", self.path()));
        }
        match self.starter.take().map(|h| h.join()) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err("the ublk control thread panicked".into()),
        }
    }

    /// Whether a queue thread ended (before a stop: the device is unusable).
    pub fn queue_ended(&self) -> bool {
        self.queues.iter().any(|h| h.is_finished())
    }

    /// Stops the device: its queues end once the kernel has drained it (the array loop must
    /// run meanwhile, see [`Ublk::stopped`]).
    pub fn begin_stop(&mut self) {
        if self.stopper.is_some() {
            return;
        }
        let dev_id = self.dev_id;
        self.stopper = std::thread::Builder::new()
            .name("raid1-ublk-stop".into())
            .spawn(move || {
                let mut c = Control::open()?;
                c.stop(dev_id)
                    .map_err(|e| format!("/dev/ublkb{dev_id}: cannot stop it: {e}"))
            })
            .ok();
    }

    /// Every queue thread ended (after [`Ublk::begin_stop`]).
    pub fn stopped(&self) -> bool {
        self.queues.iter().all(|h| h.is_finished())
            && self.stopper.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Joins the threads and removes the device. Returns what went wrong, if anything.
    pub fn finish(mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        if let Some(h) = self.starter.take() {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push("the ublk control thread panicked".into()),
            }
        }
        if let Some(h) = self.stopper.take() {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push("the ublk stop thread panicked".into()),
            }
        }
        for (q, h) in self.queues.drain(..).enumerate() {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(format!("ublk queue {q}: {e}")),
                Err(_) => errors.push(format!("ublk queue {q}: its thread panicked")),
            }
        }
        self.cdev = None;
        let dev_id = self.dev_id;
        match Control::open().and_then(|mut c| {
            c.delete(dev_id)
                .map_err(|e| format!("/dev/ublkb{dev_id}: cannot remove it: {e}"))
        }) {
            Ok(()) => {}
            Err(e) => errors.push(e),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// A device `found` with the number asked for exists: it is taken over if a killed server left
/// it (quiesced, waiting for a new one), else refused.
fn take_over(control: &mut Control, found: DevInfo, name: &str) -> Result<DevInfo, String> {
    let id = found.dev_id;
    let alive = found.ublksrv_pid > 0
        // SAFETY: signal 0 only checks that the process exists.
        && unsafe { libc::kill(found.ublksrv_pid, 0) } == 0
        && found.ublksrv_pid != std::process::id() as i32;
    if found.flags & sys::F_USER_RECOVERY == 0 {
        return Err(format!(
            "/dev/ublkb{id} exists and cannot be taken over (it was made without user \
             recovery); choose another --ublk-id"
        ));
    }
    match found.state {
        sys::S_DEV_LIVE if alive => Err(format!(
            "/dev/ublkb{id} is served by process {} (array {name} can take it over only after \
             that process died)",
            found.ublksrv_pid
        )),
        sys::S_DEV_DEAD => {
            // Added but never started (its server died first): nothing waits on it.
            control
                .delete(id)
                .map_err(|e| format!("/dev/ublkb{id}: cannot remove the unstarted device: {e}"))?;
            Err(format!(
                "/dev/ublkb{id} was left unstarted by a server that died; it is removed now, \
                 run again"
            ))
        }
        sys::S_DEV_LIVE | sys::S_DEV_QUIESCED => Ok(found),
        other => Err(format!(
            "/dev/ublkb{id} is in a state this raid1 does not know ({other})"
        )),
    }
}

/// Asks the kernel to hand the device over; it refuses (EBUSY) until the dead server's
/// descriptors are released and the device is quiesced, which may take a moment after the
/// kill.
fn start_recovery(control: &mut Control, dev_id: u32) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match control.start_recovery(dev_id) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(format!(
                    "/dev/ublkb{dev_id}: cannot take it over (is its server still running?): {e}"
                ));
            }
        }
    }
}
