//! `/dev/ublk-control`: the control commands that add, start, stop, remove and recover a ublk
//! device, each one `IORING_OP_URING_CMD` (128-byte entry) on a small ring of its own, waited
//! for before the next.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::sys::{self, DevInfo, Params};

/// The control device.
pub struct Control {
    file: File,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
}

impl Control {
    /// Opens `/dev/ublk-control`.
    pub fn open() -> Result<Control, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/ublk-control")
            .map_err(|e| {
                format!(
                    "/dev/ublk-control: {e} (this kernel has no ublk, or the ublk_drv module is not \
                     loaded: modprobe ublk_drv)"
                )
            })?;
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .build(4)
            .map_err(|e| format!("io_uring for /dev/ublk-control: {e}"))?;
        Ok(Control { file, ring })
    }

    /// Sends one command and waits for its result (>= 0), or its errno.
    fn command(
        &mut self,
        op: u32,
        dev_id: u32,
        buf: Option<&mut [u8]>,
        data0: u64,
    ) -> io::Result<i32> {
        let (addr, len) = match buf {
            Some(b) => (b.as_mut_ptr() as u64, b.len() as u16),
            None => (0, 0),
        };
        let cmd = sys::ctrl_cmd(dev_id, u16::MAX, addr, len, data0);
        let sqe = opcode::UringCmd80::new(types::Fd(self.file.as_raw_fd()), op)
            .cmd(cmd)
            .build()
            .user_data(1);
        // SAFETY: the command's buffer (if any) lives until the completion is reaped below,
        // before this function returns.
        unsafe {
            self.ring
                .submission()
                .push(&sqe)
                .map_err(|_| io::Error::other("control ring full"))?;
        }
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            if let Some(cqe) = self.ring.completion().next() {
                let r = cqe.result();
                return if r < 0 {
                    Err(io::Error::from_raw_os_error(-r))
                } else {
                    Ok(r)
                };
            }
        }
    }

    /// Adds a device (`info.dev_id` u32::MAX: the kernel chooses); returns it as the kernel
    /// made it.
    pub fn add(&mut self, info: DevInfo) -> io::Result<DevInfo> {
        let mut b = info.to_bytes();
        self.command(sys::CMD_ADD_DEV, info.dev_id, Some(&mut b), 0)?;
        Ok(DevInfo::from_bytes(&b))
    }

    /// The device's information, `None` when no device has this id.
    pub fn info(&mut self, dev_id: u32) -> io::Result<Option<DevInfo>> {
        let mut b = [0u8; sys::DEV_INFO_LEN];
        match self.command(sys::CMD_GET_DEV_INFO, dev_id, Some(&mut b), 0) {
            Ok(_) => Ok(Some(DevInfo::from_bytes(&b))),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn set_params(&mut self, dev_id: u32, params: &Params) -> io::Result<()> {
        let mut b = params.to_bytes();
        self.command(sys::CMD_SET_PARAMS, dev_id, Some(&mut b), 0)
            .map(drop)
    }

    /// The device's size in sectors, as its parameters say.
    pub fn dev_sectors(&mut self, dev_id: u32) -> io::Result<u64> {
        let mut b = [0u8; sys::PARAMS_LEN];
        b[0..4].copy_from_slice(&(sys::PARAMS_LEN as u32).to_ne_bytes());
        self.command(sys::CMD_GET_PARAMS, dev_id, Some(&mut b), 0)?;
        Ok(sys::params_dev_sectors(&b))
    }

    /// Starts the device: returns once the kernel added `/dev/ublkbN` (which reads its
    /// partition table through the queues, so they must be serving).
    pub fn start(&mut self, dev_id: u32) -> io::Result<()> {
        self.command(
            sys::CMD_START_DEV,
            dev_id,
            None,
            u64::from(std::process::id()),
        )
        .map(drop)
    }

    pub fn stop(&mut self, dev_id: u32) -> io::Result<()> {
        self.command(sys::CMD_STOP_DEV, dev_id, None, 0).map(drop)
    }

    /// Removes the device (once no queue holds `/dev/ublkcN` open).
    pub fn delete(&mut self, dev_id: u32) -> io::Result<()> {
        self.command(sys::CMD_DEL_DEV, dev_id, None, 0).map(drop)
    }

    pub fn start_recovery(&mut self, dev_id: u32) -> io::Result<()> {
        self.command(sys::CMD_START_USER_RECOVERY, dev_id, None, 0)
            .map(drop)
    }

    /// Ends a recovery: returns once every queue fetches again; the requests that waited go to
    /// the new server.
    pub fn end_recovery(&mut self, dev_id: u32) -> io::Result<()> {
        self.command(
            sys::CMD_END_USER_RECOVERY,
            dev_id,
            None,
            u64::from(std::process::id()),
        )
        .map(drop)
    }
}
